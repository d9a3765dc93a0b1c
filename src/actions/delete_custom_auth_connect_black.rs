//! `DeleteCustomAuthConnectBlack`: takes a client id off the instance's
//! connection blacklist; it may connect again.
//!
//! ```text
//! Action=DeleteCustomAuthConnectBlack&InstanceId=post-cn-demo&ClientId=GID_test@@@test
//! -> {"RequestId": "...", "Code": 200, "Message": "operation success.", "Success": true}
//! ```
//!
//! Deleting a client id that is not on the list succeeds: what the caller
//! asked for holds.

use super::{Context, Handler, OperationSuccess};
use crate::access::Resource;
use crate::error::ApiError;
use crate::params::Params;

pub struct DeleteCustomAuthConnectBlack;

pub struct Request {
    pub instance_id: String,
    pub client_id: String,
}

impl<'a> Handler<'a> for DeleteCustomAuthConnectBlack {
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
        ctx.devices
            .unblacklist(&request.instance_id, &request.client_id)
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        Ok(OperationSuccess::new())
    }
}
