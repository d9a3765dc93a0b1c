//! `AddCustomAuthConnectBlack`: puts a client id on the instance's
//! connection blacklist. Its CONNECT is refused from then on, whatever its
//! login mode (3.1.1: 5 not authorized, 5: 0x8A banned), and a live
//! connection of it is ended at once (MQTT 5: DISCONNECT 0x98).
//!
//! ```text
//! Action=AddCustomAuthConnectBlack&InstanceId=post-cn-demo&ClientId=GID_test@@@test
//! -> {"RequestId": "...", "Code": 200, "Message": "operation success.", "Success": true}
//! ```
//!
//! Adding a client id that is on the list already succeeds. Durable before
//! the answer. A list holds at most `max_blacklisted_clients` client ids
//! (default 10,000), then `Customauth.over.capacity` (Alibaba's code).

use super::{Context, Handler, OperationSuccess};
use crate::access::Resource;
use crate::devices::Blacklisted;
use crate::error::{ApiError, ErrorCode};
use crate::params::Params;

pub struct AddCustomAuthConnectBlack;

pub struct Request {
    pub instance_id: String,
    pub client_id: String,
}

impl<'a> Handler<'a> for AddCustomAuthConnectBlack {
    type Params = Request;
    type Answer = OperationSuccess;

    fn parse(params: &Params) -> Result<Request, ApiError> {
        Ok(Request {
            instance_id: params.required("InstanceId")?.to_string(),
            client_id: params.client_id("ClientId")?.to_string(),
        })
    }

    fn resource(request: &Request) -> Resource<'_> {
        Resource::Instance(&request.instance_id)
    }

    async fn handle(ctx: &Context<'_>, request: Request) -> Result<OperationSuccess, ApiError> {
        let limit = ctx.instance()?.max_blacklisted_clients;
        let outcome = ctx
            .devices
            .blacklist(
                &request.instance_id,
                &request.client_id,
                ctx.now.timestamp_millis(),
                limit,
            )
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        if outcome == Blacklisted::LimitReached {
            return Err(ApiError::new(
                ErrorCode::CustomauthOverCapacity,
                format!(
                    "Over custom auth capacity: the connection blacklist of instance {} holds {limit} client ids (max_blacklisted_clients); delete some (DeleteCustomAuthConnectBlack).",
                    request.instance_id
                ),
            ));
        }
        ctx.broker()?
            .kick(&request.client_id, "the client id was put on the connection blacklist")
            .await;
        Ok(OperationSuccess::new())
    }
}
