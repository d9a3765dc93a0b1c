//! `UntagResources`: removes tags from instances of the caller's account.
//!
//! ```text
//! Action=UntagResources&ResourceType=instance&ResourceId.1=post-cn-demo&TagKey.1=env
//! -> {"RequestId": "...", "Code": "200", "Data": true, "Message": "operation success."}
//! ```
//!
//! `TagKey.N` names the keys (N from 1 to 20); `All=true` removes every
//! tag instead. One of the two is required (removing nothing would be a
//! mistake worth hearing about). A key an instance does not have is
//! ignored. An instance that is not the caller's answers
//! `MqttOwnerCheckError`. RAM: `mq:UntagResources` on `*`; not billed.

use super::tag_params::{self as p, TagAnswer};
use super::{Context, Handler};
use crate::access::Resource;
use crate::error::ApiError;
use crate::params::Params;

pub struct UntagResources;

pub struct Request {
    pub instance_ids: Vec<String>,
    /// `None`: every tag.
    pub keys: Option<Vec<String>>,
}

impl<'a> Handler<'a> for UntagResources {
    type Params = Request;
    type Answer = TagAnswer;

    fn parse(params: &Params) -> Result<Request, ApiError> {
        p::resource_type(params)?;
        let instance_ids = p::resource_ids(params, false)?;
        let all = match params.get("All").filter(|a| !a.is_empty()) {
            None => false,
            Some(a) if a.eq_ignore_ascii_case("true") => true,
            Some(a) if a.eq_ignore_ascii_case("false") => false,
            Some(a) => {
                return Err(ApiError::invalid(
                    "All",
                    format!("\"{a}\" is not true or false"),
                ));
            }
        };
        let named = params.iter().any(|(k, _)| k.starts_with("TagKey"));
        let keys = match (all, named) {
            (true, _) => None,
            (false, true) => {
                let mut keys = Vec::new();
                for (key, value) in params.list("TagKey", p::MAX_TAGS_PER_CALL)? {
                    if value.is_empty() {
                        return Err(ApiError::invalid(key, "it is empty"));
                    }
                    keys.push(value.to_string());
                }
                Some(keys)
            }
            (false, false) => {
                return Err(ApiError::invalid(
                    "TagKey",
                    "it is missing; name the keys (TagKey.1=...) or send All=true",
                ));
            }
        };
        Ok(Request { instance_ids, keys })
    }

    fn resource(_: &Request) -> Resource<'_> {
        Resource::Account
    }

    async fn handle(ctx: &Context<'_>, request: Request) -> Result<TagAnswer, ApiError> {
        p::check_owned(ctx, &request.instance_ids)?;
        ctx.devices
            .untag_instances(request.instance_ids, request.keys)
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        Ok(TagAnswer::done())
    }
}
