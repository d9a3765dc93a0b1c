//! `QuerySessionByClientId`: whether a client is connected, in real time
//! (read from the live session registry).
//!
//! ```text
//! Action=QuerySessionByClientId&InstanceId=post-cn-demo&ClientId=GID_test@@@test
//! -> {"OnlineStatus": true, "RequestId": "..."}
//! ```

use super::{ActionContext, ApiAction, check_client_id, required_param};
use crate::broker::InstanceBroker;
use crate::error::ApiError;
use crate::rpc::params::Params;
use serde::Serialize;

pub struct QuerySessionByClientId;

pub struct Request {
    pub instance_id: String,
    pub client_id: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Response {
    pub online_status: bool,
    pub request_id: String,
}

impl ApiAction for QuerySessionByClientId {
    const NAME: &'static str = "QuerySessionByClientId";
    const RAM_ACTION: &'static str = "mq:MqttInstanceAccess";
    type Request = Request;
    type Response = Response;

    fn parse(params: &Params) -> Result<Request, ApiError> {
        let instance_id = required_param(params, "InstanceId")?.to_string();
        let client_id = required_param(params, "ClientId")?.to_string();
        check_client_id("ClientId", &client_id)?;
        Ok(Request {
            instance_id,
            client_id,
        })
    }

    fn instance_id(request: &Request) -> &str {
        &request.instance_id
    }

    async fn handle(
        _ctx: &ActionContext<'_>,
        instance: &InstanceBroker,
        request: Request,
        request_id: &str,
    ) -> Result<Response, ApiError> {
        Ok(Response {
            online_status: instance.sessions.is_online(&request.client_id),
            request_id: request_id.to_string(),
        })
    }
}
