//! `ListTagResources`: the tags of the caller's instances, a page at a
//! time.
//!
//! ```text
//! Action=ListTagResources&ResourceType=instance&ResourceId.1=post-cn-demo
//! -> {"RequestId": "...", "Code": "200", "Message": "operation success.", "Success": "true",
//!     "TagResources": [{"ResourceId": "post-cn-demo", "ResourceType": "instance",
//!                       "TagKey": "env", "TagValue": "prod"}],
//!     "NextToken": "..."}
//! ```
//!
//! One entry per (instance, tag), sorted by instance id then key, 50 per
//! page; `NextToken` continues from the previous page and is left out on
//! the last one. `ResourceId.N` narrows to those instances (each must be
//! the caller's: `MqttOwnerCheckError`); `Tag.N.Key` (and `Tag.N.Value`,
//! where given, even empty) narrow to those tags. A `NextToken` is a
//! position (instance, key), valid with any filters. Without either, every tag of every instance of
//! the account. RAM: `mq:ListTagResources` on `*`; not billed.

use super::tag_params as p;
use super::{Context, Handler};
use crate::access::Resource;
use crate::error::ApiError;
use crate::params::{Params, next_token_after};
use serde::Serialize;

pub struct ListTagResources;

/// Entries per page.
pub const PAGE: usize = 50;

pub struct Request {
    pub instance_ids: Vec<String>,
    pub tags: Vec<(String, Option<String>)>,
    /// Continue after this (instance id, key).
    pub after: Option<(String, String)>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Answer {
    pub code: &'static str,
    pub message: &'static str,
    pub success: &'static str,
    pub tag_resources: Vec<Entry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Entry {
    pub resource_id: String,
    pub resource_type: &'static str,
    pub tag_key: String,
    pub tag_value: String,
}

impl<'a> Handler<'a> for ListTagResources {
    type Params = Request;
    type Answer = Answer;

    fn parse(params: &Params) -> Result<Request, ApiError> {
        p::resource_type(params)?;
        let after = match params.next_token("NextToken")? {
            None => None,
            Some(text) => Some(
                text.split_once('\0')
                    .map(|(i, k)| (i.to_string(), k.to_string()))
                    .ok_or_else(|| {
                        ApiError::invalid(
                            "NextToken",
                            "it is not a NextToken this API gave; send the one from the previous page",
                        )
                    })?,
            ),
        };
        Ok(Request {
            instance_ids: p::resource_ids(params, true)?,
            tags: p::tags(params, true)?,
            after,
        })
    }

    fn resource(_: &Request) -> Resource<'_> {
        Resource::Account
    }

    async fn handle(ctx: &Context<'_>, request: Request) -> Result<Answer, ApiError> {
        p::check_owned(ctx, &request.instance_ids)?;
        let mut entries = Vec::new();
        for instance in ctx.account_instances() {
            if !request.instance_ids.is_empty() && !request.instance_ids.contains(&instance.id) {
                continue;
            }
            for (key, value) in ctx.devices.instance_tags(&instance.id) {
                let wanted = request.tags.is_empty()
                    || request.tags.iter().any(|(k, v)| {
                        k == &key && v.as_ref().is_none_or(|v| v == &value)
                    });
                let past = request
                    .after
                    .as_ref()
                    .is_none_or(|(i, k)| (&instance.id, &key) > (i, k));
                if wanted && past {
                    entries.push(Entry {
                        resource_id: instance.id.clone(),
                        resource_type: "instance",
                        tag_key: key,
                        tag_value: value,
                    });
                }
            }
        }
        let more = entries.len() > PAGE;
        entries.truncate(PAGE);
        let next_token = more
            .then(|| entries.last())
            .flatten()
            .map(|e| next_token_after(&format!("{}\0{}", e.resource_id, e.tag_key)));
        Ok(Answer {
            code: "200",
            message: "operation success.",
            success: "true",
            tag_resources: entries,
            next_token,
        })
    }
}
