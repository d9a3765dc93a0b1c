//! `DeleteCustomAuthPermission`: removes the rule of an identity on a
//! topic.
//!
//! ```text
//! Action=DeleteCustomAuthPermission&InstanceId=post-cn-demo&IdentityType=USER&Identity=dev
//!     &Topic=devices/dev/telemetry
//! -> {"RequestId": "...", "Code": 200, "Message": "operation success.", "Success": true}
//! ```
//!
//! Takes effect on live connections at once: their next PUBLISH and
//! SUBSCRIBE are checked without it, and a subscription the remaining rules
//! no longer allow is removed (the device stops receiving on it; MQTT has
//! no packet to tell it so). Deleting a rule that does not exist succeeds.

use super::custom_auth_params as p;
use super::{Context, Handler, OperationSuccess};
use crate::access::Resource;
use crate::devices::IdentityType;
use crate::error::ApiError;
use crate::params::Params;

pub struct DeleteCustomAuthPermission;

pub struct Request {
    pub instance_id: String,
    pub kind: IdentityType,
    pub identity: String,
    pub topic: String,
}

impl<'a> Handler<'a> for DeleteCustomAuthPermission {
    type Params = Request;
    type Answer = OperationSuccess;

    fn parse(params: &Params) -> Result<Request, ApiError> {
        let instance_id = params.required("InstanceId")?.to_string();
        let kind = p::identity_type(params, "IdentityType")?;
        Ok(Request {
            instance_id,
            kind,
            identity: p::identity(params, kind)?,
            topic: p::topic(params)?,
        })
    }

    fn resource(request: &Request) -> Resource<'_> {
        Resource::Instance(&request.instance_id)
    }

    async fn handle(ctx: &Context<'_>, request: Request) -> Result<OperationSuccess, ApiError> {
        let deleted = ctx
            .devices
            .delete_custom_permission(&request.instance_id, request.kind, &request.identity, &request.topic)
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        if deleted {
            ctx.broker()?.rights_changed();
        }
        Ok(OperationSuccess::new())
    }
}
