//! `UpdateCustomAuthPermission`: a new effect and action for the rule of
//! an identity on a topic.
//!
//! ```text
//! Action=UpdateCustomAuthPermission&InstanceId=post-cn-demo&IdentityType=USER&Identity=dev
//!     &Topic=devices/dev/telemetry&Effect=DENY&PermitAction=PUB_SUB
//! -> {"RequestId": "...", "Code": 200, "Message": "operation success.", "Success": true}
//! ```
//!
//! Takes effect on live connections as AddCustomAuthPermission does; a
//! subscription the changed rules no longer allow is removed from the live
//! connections it binds. A rule that does not exist answers
//! `InvalidParameter.Topic` (add it with AddCustomAuthPermission).

use super::add_custom_auth_permission::read_permission;
use super::{Context, Handler, OperationSuccess};
use crate::access::Resource;
use crate::devices::Permission;
use crate::error::ApiError;
use crate::params::Params;

pub struct UpdateCustomAuthPermission;

pub struct Request {
    pub instance_id: String,
    pub permission: Permission,
}

impl<'a> Handler<'a> for UpdateCustomAuthPermission {
    type Params = Request;
    type Answer = OperationSuccess;

    fn parse(params: &Params) -> Result<Request, ApiError> {
        Ok(Request {
            instance_id: params.required("InstanceId")?.to_string(),
            permission: read_permission(params)?,
        })
    }

    fn resource(request: &Request) -> Resource<'_> {
        Resource::Instance(&request.instance_id)
    }

    async fn handle(ctx: &Context<'_>, request: Request) -> Result<OperationSuccess, ApiError> {
        let permission = request.permission;
        let what = format!(
            "{} {:?} on topic {:?}",
            permission.kind.label(),
            permission.identity,
            permission.rule.topic
        );
        let updated = ctx
            .devices
            .update_custom_permission(&request.instance_id, permission, ctx.now.timestamp_millis())
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        if !updated {
            return Err(ApiError::invalid(
                "Topic",
                format!("instance {} has no rule for {what}; add it with AddCustomAuthPermission", request.instance_id),
            ));
        }
        ctx.broker()?.rights_changed();
        Ok(OperationSuccess::new())
    }
}
