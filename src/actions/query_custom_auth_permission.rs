//! `QueryCustomAuthPermission`: the instance's permission rules, a page at
//! a time.
//!
//! ```text
//! Action=QueryCustomAuthPermission&InstanceId=post-cn-demo&Size=100&Identity=dev
//! -> {"RequestId": "...", "Code": 200, "Message": "operation success.", "Success": true,
//!     "Data": {"Results": [{"IdentityType": "USER", "Identity": "dev", "Topic": "a/+",
//!                           "Effect": "ALLOW", "PermitAction": "PUB"}],
//!              "NextToken": "..."}}
//! ```
//!
//! Sorted by type (USER first), identity, topic; `IdentityType`, `Identity`
//! and `Topic` (the rule's filter, compared as text) narrow the walk.
//! `Size` is 1 to 100 (required, as the SDK sends it); `NextToken`
//! continues from the previous page and is left out on the last one.

use super::custom_auth_params as p;
use super::{Context, Handler, OperationSuccess};
use crate::access::Resource;
use crate::devices::PermissionFilter;
use crate::devices::custom_auth::PermissionKey;
use crate::error::ApiError;
use crate::params::Params;
use serde::Serialize;

pub struct QueryCustomAuthPermission;

pub struct Request {
    pub instance_id: String,
    pub filter: PermissionFilter,
    pub size: usize,
    pub after: Option<PermissionKey>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Answer {
    #[serde(flatten)]
    pub status: OperationSuccess,
    pub data: Data,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Data {
    pub results: Vec<Entry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Entry {
    pub identity_type: &'static str,
    pub identity: String,
    pub topic: String,
    pub effect: &'static str,
    pub permit_action: &'static str,
}

impl<'a> Handler<'a> for QueryCustomAuthPermission {
    type Params = Request;
    type Answer = Answer;

    fn parse(params: &Params) -> Result<Request, ApiError> {
        let instance_id = params.required("InstanceId")?.to_string();
        let size = p::page_size(params)?;
        let after = p::page_after(params)?;
        let kind = p::optional_identity_type(params, "IdentityType")?;
        let identity = params
            .get("Identity")
            .filter(|i| !i.is_empty())
            .map(str::to_string);
        let topic = match params.get("Topic").filter(|t| !t.is_empty()) {
            Some(_) => Some(p::topic(params)?),
            None => None,
        };
        Ok(Request {
            instance_id,
            filter: PermissionFilter {
                kind,
                identity,
                topic,
            },
            size,
            after,
        })
    }

    fn resource(request: &Request) -> Resource<'_> {
        Resource::Instance(&request.instance_id)
    }

    async fn handle(ctx: &Context<'_>, request: Request) -> Result<Answer, ApiError> {
        let (permissions, next) = ctx.devices.custom_permissions(
            &request.instance_id,
            &request.filter,
            request.after.as_ref(),
            request.size,
        );
        Ok(Answer {
            status: OperationSuccess::new(),
            data: Data {
                results: permissions
                    .into_iter()
                    .map(|permission| Entry {
                        identity_type: permission.kind.label(),
                        identity: permission.identity,
                        topic: permission.rule.topic,
                        effect: permission.rule.effect.label(),
                        permit_action: permission.rule.action.label(),
                    })
                    .collect(),
                next_token: next.as_ref().map(p::next_token),
            },
        })
    }
}
