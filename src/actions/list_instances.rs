//! `ListInstances`: the caller's instances, with their tags.
//!
//! ```text
//! Action=ListInstances&Tags=[{"key":"env","value":"prod"}]
//! -> {"RequestId": "...", "Code": "200", "Message": "operation success.", "Success": "true",
//!     "Instances": [{"InstanceId": "post-cn-demo", "InstanceName": "post-cn-demo",
//!                    "RegionId": "cn-hangzhou", "InstanceStatus": 5, "InstanceType": 2,
//!                    "CreateTime": 1763900000000, "KernelVersion": "mqgate-0.1.0",
//!                    "MqttTags": [{"TagKey": "env", "TagValue": "prod"}]}]}
//! ```
//!
//! Only instances of the caller's account, sorted by id. `Tags` (JSON, as
//! Alibaba's page shows it: `[{"key": "...", "value": "..."}]`) keeps the
//! instances holding every tag listed (any value where `value` is left
//! out). What a configured instance has no counterpart for: the name is
//! its id; the status is 5 (in service) and the type 2 (pay-as-you-go, as
//! nothing is bought); `CreateTime` is when mqgate first served the
//! instance (kept in the device database); the kernel version is mqgate's;
//! `ExpireTime`, `OrderId` and `Specific` are left out.
//!
//! RAM: Alibaba's page lists no authorization for ListInstances; mqgate
//! checks `mq:ListInstances` on `*` for a RAM user, so that an account can
//! keep its instance list from a user it gave only some instances. Not
//! billed.

use super::{Context, Handler};
use crate::access::Resource;
use crate::error::ApiError;
use crate::params::Params;
use serde::Serialize;

pub struct ListInstances;

pub struct Request {
    /// (key, value): instances with every one of these tags.
    pub tags: Vec<(String, Option<String>)>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Answer {
    pub code: &'static str,
    pub message: &'static str,
    pub success: &'static str,
    pub instances: Vec<InstanceEntry>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InstanceEntry {
    pub instance_id: String,
    pub instance_name: String,
    pub region_id: String,
    pub instance_status: u8,
    pub instance_type: u8,
    pub create_time: i64,
    pub kernel_version: String,
    pub mqtt_tags: Vec<Tag>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Tag {
    pub tag_key: String,
    pub tag_value: String,
}

/// One tag filter of `Tags`.
#[derive(serde::Deserialize)]
struct TagFilter {
    key: String,
    #[serde(default)]
    value: Option<String>,
}

impl<'a> Handler<'a> for ListInstances {
    type Params = Request;
    type Answer = Answer;

    fn parse(params: &Params) -> Result<Request, ApiError> {
        let tags = match params.get("Tags").filter(|t| !t.trim().is_empty()) {
            None => Vec::new(),
            Some(text) => serde_json::from_str::<Vec<TagFilter>>(text)
                .map_err(|e| {
                    ApiError::invalid(
                        "Tags",
                        format!("it is not a JSON list of {{\"key\": ..., \"value\": ...}}: {e}"),
                    )
                })?
                .into_iter()
                .map(|t| (t.key, t.value))
                .collect(),
        };
        Ok(Request { tags })
    }

    fn resource(_: &Request) -> Resource<'_> {
        Resource::Account
    }

    async fn handle(ctx: &Context<'_>, request: Request) -> Result<Answer, ApiError> {
        let ids: Vec<String> = ctx.account_instances().iter().map(|i| i.id.clone()).collect();
        let created = ctx
            .devices
            .record_instances(ids, ctx.now.timestamp_millis())
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let mut instances = Vec::new();
        for instance in ctx.account_instances() {
            let tags = ctx.devices.instance_tags(&instance.id);
            let holds_all = request.tags.iter().all(|(key, value)| {
                tags.iter().any(|(k, v)| k == key && value.as_ref().is_none_or(|value| value == v))
            });
            if !holds_all {
                continue;
            }
            instances.push(InstanceEntry {
                instance_id: instance.id.clone(),
                instance_name: instance.id.clone(),
                region_id: instance.region.clone(),
                instance_status: 5,
                instance_type: 2,
                create_time: created.get(&instance.id).copied().unwrap_or_default(),
                kernel_version: format!("mqgate-{}", env!("CARGO_PKG_VERSION")),
                mqtt_tags: tags
                    .into_iter()
                    .map(|(tag_key, tag_value)| Tag { tag_key, tag_value })
                    .collect(),
            });
        }
        Ok(Answer {
            code: "200",
            message: "operation success.",
            success: "true",
            instances,
        })
    }
}
