//! `TagResources`: sets tags on instances of the caller's account.
//!
//! ```text
//! Action=TagResources&ResourceType=instance&ResourceId.1=post-cn-demo
//!     &Tag.1.Key=env&Tag.1.Value=prod
//! -> {"RequestId": "...", "Code": "200", "Data": true, "Message": "operation success."}
//! ```
//!
//! A key the instance has already gets the new value. At most 20 tags per
//! call and per instance (Alibaba's limits; past them
//! `InvalidParameter.Tag`, and nothing changes). An instance that is not
//! the caller's answers `MqttOwnerCheckError`. Tags are durable (the
//! device database). RAM: `mq:TagResources` on `*` (Alibaba: "All
//! Resources"); not billed (the bill is per instance and Alibaba bills
//! tags to none).

use super::tag_params::{self as p, TagAnswer};
use super::{Context, Handler};
use crate::access::Resource;
use crate::devices::{MAX_TAGS_PER_INSTANCE, Tagged};
use crate::error::ApiError;
use crate::params::Params;

pub struct TagResources;

pub struct Request {
    pub instance_ids: Vec<String>,
    pub tags: Vec<(String, String)>,
}

impl<'a> Handler<'a> for TagResources {
    type Params = Request;
    type Answer = TagAnswer;

    fn parse(params: &Params) -> Result<Request, ApiError> {
        p::resource_type(params)?;
        let instance_ids = p::resource_ids(params, false)?;
        let tags = p::tags(params, false)?
            .into_iter()
            .map(|(key, value)| (key, value.unwrap_or_default()))
            .collect();
        Ok(Request { instance_ids, tags })
    }

    fn resource(_: &Request) -> Resource<'_> {
        Resource::Account
    }

    async fn handle(ctx: &Context<'_>, request: Request) -> Result<TagAnswer, ApiError> {
        p::check_owned(ctx, &request.instance_ids)?;
        let outcome = ctx
            .devices
            .tag_instances(request.instance_ids, request.tags)
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        match outcome {
            Tagged::Tagged => Ok(TagAnswer::done()),
            Tagged::TooMany { instance_id } => Err(ApiError::invalid(
                "Tag",
                format!(
                    "instance {instance_id} would hold more than {MAX_TAGS_PER_INSTANCE} tags; remove some with UntagResources"
                ),
            )),
        }
    }
}
