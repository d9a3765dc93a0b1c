//! `ListDeviceCredentialClientId`: the client ids of a group that have a
//! device credential, a page at a time.
//!
//! ```text
//! Action=ListDeviceCredentialClientId&InstanceId=post-cn-demo&GroupId=GID_test&PageSize=100
//! -> {"RequestId": "...", "DeviceCredentialClientIdList": {"Total": "10",
//!      "ClientIdList": ["GID_test@@@pub-1", ...], "PageNo": "1", "PageSize": "100", "NextToken": "..."}}
//! ```
//!
//! Client ids come sorted. `PageSize` is 1 to 100 (default 100). A page is
//! chosen by `NextToken` (as the previous page gave it) or else by `PageNo`
//! (from 1, default 1); `NextToken` is in the answer while more pages
//! follow, and left out on the last one. Numbers are strings, as in
//! Alibaba's answer.

use super::{Context, Handler};
use crate::access::Resource;
use crate::error::ApiError;
use crate::params::{Params, next_token_after};
use serde::Serialize;

pub struct ListDeviceCredentialClientId;

/// Where a page starts.
pub enum Start {
    Page(usize),
    /// After this client id (a NextToken).
    After(String),
}

pub struct Request {
    pub instance_id: String,
    pub group_id: String,
    pub page_size: usize,
    pub start: Start,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Answer {
    pub device_credential_client_id_list: Page,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Page {
    pub total: String,
    pub client_id_list: Vec<String>,
    pub page_no: String,
    pub page_size: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

impl<'a> Handler<'a> for ListDeviceCredentialClientId {
    type Params = Request;
    type Answer = Answer;

    fn parse(params: &Params) -> Result<Request, ApiError> {
        let instance_id = params.required("InstanceId")?.to_string();
        let group_id = params.required("GroupId")?.to_string();
        let page_size = params.integer("PageSize", 1..=100)?.unwrap_or(100) as usize;
        let start = match params.next_token("NextToken")? {
            Some(after) => Start::After(after),
            None => Start::Page(params.integer("PageNo", 1..=1_000_000)?.unwrap_or(1) as usize),
        };
        Ok(Request {
            instance_id,
            group_id,
            page_size,
            start,
        })
    }

    fn resource(request: &Request) -> Resource<'_> {
        Resource::Instance(&request.instance_id)
    }

    async fn handle(ctx: &Context<'_>, request: Request) -> Result<Answer, ApiError> {
        let client_ids = ctx
            .devices
            .credential_client_ids(&request.instance_id, &request.group_id);
        let first = match &request.start {
            Start::Page(page) => (page - 1).saturating_mul(request.page_size),
            Start::After(after) => client_ids.partition_point(|id| id <= after),
        };
        let page: Vec<String> = client_ids
            .iter()
            .skip(first)
            .take(request.page_size)
            .cloned()
            .collect();
        let more = first.saturating_add(page.len()) < client_ids.len();
        Ok(Answer {
            device_credential_client_id_list: Page {
                total: client_ids.len().to_string(),
                page_no: (first / request.page_size + 1).to_string(),
                page_size: request.page_size.to_string(),
                next_token: more
                    .then(|| page.last().map(|last| next_token_after(last)))
                    .flatten(),
                client_id_list: page,
            },
        })
    }
}
