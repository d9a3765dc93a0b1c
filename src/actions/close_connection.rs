//! `CloseConnection`: ends a client's connection now. The device may
//! reconnect afterwards, as with ApsaraMQ.
//!
//! ```text
//! Action=CloseConnection&InstanceId=post-cn-demo&ClientId=GID_test@@@test
//! -> {"RequestId": "...", "Code": 200, "Message": "operation success.", "Success": true}
//! ```
//!
//! An MQTT 5 client gets DISCONNECT with reason 0x98 (administrative action)
//! before the socket closes; the answer is sent once the connection is gone.
//! Closing a client that is not connected succeeds too: the caller's goal,
//! that the client is not connected, holds (Alibaba's documentation lists
//! no error for it).

use super::{ActionContext, ApiAction, check_client_id, required_param};
use crate::broker::InstanceBroker;
use crate::broker::front::reason::ADMINISTRATIVE_ACTION;
use crate::error::ApiError;
use crate::rpc::params::Params;
use serde::Serialize;

pub struct CloseConnection;

pub struct Request {
    pub instance_id: String,
    pub client_id: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Response {
    pub request_id: String,
    pub code: u16,
    pub message: &'static str,
    pub success: bool,
}

impl ApiAction for CloseConnection {
    const NAME: &'static str = "CloseConnection";
    const RAM_ACTION: &'static str = "mq:CloseConnection";
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
        ctx: &ActionContext<'_>,
        instance: &InstanceBroker,
        request: Request,
        request_id: &str,
    ) -> Result<Response, ApiError> {
        instance
            .sessions
            .disconnect(
                &request.client_id,
                ADMINISTRATIVE_ACTION,
                "connection closed by a CloseConnection call",
            )
            .await;
        // The batch view should not go on reporting a client we just closed.
        ctx.status_cache
            .forget(&instance.instance_id, &request.client_id);
        Ok(Response {
            request_id: request_id.to_string(),
            code: 200,
            message: "operation success.",
            success: true,
        })
    }
}
