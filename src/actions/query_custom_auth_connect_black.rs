//! `QueryCustomAuthConnectBlack`: the instance's connection blacklist, a
//! page at a time, or whether one client id is on it.
//!
//! ```text
//! Action=QueryCustomAuthConnectBlack&InstanceId=post-cn-demo&Size=100
//! -> {"RequestId": "...", "Code": 200, "Message": "operation success.", "Success": true,
//!     "Data": {"Results": [{"ClientId": "GID_test@@@test", "Effect": "DENY", "PermitAction": "CONNECT"}],
//!              "NextToken": "..."}}
//! ```
//!
//! Client ids come sorted; `Size` is 1 to 100 (required, as the SDK sends
//! it); `NextToken` (as the previous page gave it) continues the walk, and
//! is left out on the last page. With `ClientId`, the page holds that
//! client id or nothing. Each entry says what it does: `Effect` DENY of
//! `PermitAction` CONNECT (Alibaba's page shows the two fields without
//! saying what a blacklist entry holds in them).

use super::{Context, Handler, OperationSuccess};
use crate::access::Resource;
use crate::error::ApiError;
use crate::params::{Params, next_token_after};
use serde::Serialize;

pub struct QueryCustomAuthConnectBlack;

pub struct Request {
    pub instance_id: String,
    pub client_id: Option<String>,
    pub size: usize,
    /// Continue after this client id (a NextToken).
    pub after: Option<String>,
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
    pub client_id: String,
    pub effect: &'static str,
    pub permit_action: &'static str,
}

impl<'a> Handler<'a> for QueryCustomAuthConnectBlack {
    type Params = Request;
    type Answer = Answer;

    fn parse(params: &Params) -> Result<Request, ApiError> {
        let instance_id = params.required("InstanceId")?.to_string();
        params.required("Size")?;
        let size = params.integer("Size", 1..=100)?.unwrap_or(100) as usize;
        let after = params.next_token("NextToken")?;
        let client_id = match params.get("ClientId").filter(|c| !c.is_empty()) {
            Some(_) => Some(params.client_id("ClientId")?.to_string()),
            None => None,
        };
        Ok(Request {
            instance_id,
            client_id,
            size,
            after,
        })
    }

    fn resource(request: &Request) -> Resource<'_> {
        Resource::Instance(&request.instance_id)
    }

    async fn handle(ctx: &Context<'_>, request: Request) -> Result<Answer, ApiError> {
        let (client_ids, more) = match &request.client_id {
            Some(client_id) => {
                let listed = ctx.devices.is_blacklisted(&request.instance_id, client_id);
                (listed.then(|| client_id.clone()).into_iter().collect(), false)
            }
            None => ctx.devices.blacklisted(
                &request.instance_id,
                request.after.as_deref(),
                request.size,
            ),
        };
        let next_token = more
            .then(|| client_ids.last().map(|last| next_token_after(last)))
            .flatten();
        Ok(Answer {
            status: OperationSuccess::new(),
            data: Data {
                results: client_ids
                    .into_iter()
                    .map(|client_id| Entry {
                        client_id,
                        effect: "DENY",
                        permit_action: "CONNECT",
                    })
                    .collect(),
                next_token,
            },
        })
    }
}
