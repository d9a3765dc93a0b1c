//! `QuerySessionByClientId`: whether a client is connected, in real time
//! (read from the live session registry).
//!
//! ```text
//! Action=QuerySessionByClientId&InstanceId=post-cn-demo&ClientId=GID_test@@@test
//! -> {"OnlineStatus": true, "RequestId": "..."}
//! ```

use super::{Context, Handler, RequestIdAt};
use crate::access::Resource;
use crate::error::ApiError;
use crate::params::Params;
use serde::Serialize;

pub struct QuerySessionByClientId;

/// Borrowed from the call's parameters: this action runs on every device
/// status check, and copies nothing.
pub struct Request<'a> {
    pub instance_id: &'a str,
    pub client_id: &'a str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Answer {
    pub online_status: bool,
}

impl<'a> Handler<'a> for QuerySessionByClientId {
    type Params = Request<'a>;
    type Answer = Answer;

    // Alibaba's page lists OnlineStatus, then RequestId.
    const REQUEST_ID_AT: RequestIdAt = RequestIdAt::Last;

    fn parse(params: &'a Params) -> Result<Request<'a>, ApiError> {
        Ok(Request {
            instance_id: params.required("InstanceId")?,
            client_id: params.client_id("ClientId")?,
        })
    }

    fn resource<'r>(request: &'r Request<'a>) -> Resource<'r> {
        Resource::Instance(request.instance_id)
    }

    async fn handle(ctx: &Context<'_>, request: Request<'a>) -> Result<Answer, ApiError> {
        let mut online_status = ctx.broker()?.is_online(request.client_id);
        // In a cluster, a device not here may be on another node.
        if let (false, Some(cluster)) = (online_status, ctx.cluster) {
            online_status = cluster
                .online_elsewhere(request.instance_id, &[request.client_id])
                .await?
                .first()
                .copied()
                .unwrap_or(false);
        }
        Ok(Answer { online_status })
    }
}
