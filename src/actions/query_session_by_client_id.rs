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

pub struct Request {
    pub instance_id: String,
    pub client_id: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Answer {
    pub online_status: bool,
}

impl Handler for QuerySessionByClientId {
    type Params = Request;
    type Answer = Answer;

    // Alibaba's page lists OnlineStatus, then RequestId.
    const REQUEST_ID_AT: RequestIdAt = RequestIdAt::Last;

    fn parse(params: &Params) -> Result<Request, ApiError> {
        Ok(Request {
            instance_id: params.required("InstanceId")?.to_string(),
            client_id: params.client_id("ClientId")?.to_string(),
        })
    }

    fn resource(request: &Request) -> Resource<'_> {
        Resource::Instance(&request.instance_id)
    }

    async fn handle(ctx: &Context<'_>, request: Request) -> Result<Answer, ApiError> {
        Ok(Answer {
            online_status: ctx.broker()?.is_online(&request.client_id),
        })
    }
}
