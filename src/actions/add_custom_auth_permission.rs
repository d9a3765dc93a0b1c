//! `AddCustomAuthPermission`: lets a username (`USER`) or a client id
//! (`CLIENT`) publish, subscribe or both (`PUB`, `SUB`, `PUB_SUB`) on a
//! topic filter (`ALLOW`), or forbids it (`DENY`).
//!
//! ```text
//! Action=AddCustomAuthPermission&InstanceId=post-cn-demo&IdentityType=USER&Identity=dev
//!     &Topic=devices/dev/telemetry&Effect=ALLOW&PermitAction=PUB
//! -> {"RequestId": "...", "Code": 200, "Message": "operation success.", "Success": true}
//! ```
//!
//! The rule binds custom-auth logins only (Signature, Token and
//! DeviceCredential logins have their own rights), takes effect on live
//! connections at their next PUBLISH or SUBSCRIBE, and DENY wins over ALLOW
//! (see [`crate::devices::permissions`]). One identity has one rule per
//! topic: adding it again answers `InvalidParameter.Topic` (change it with
//! UpdateCustomAuthPermission). Past `max_custom_auth_permissions` (default
//! 50,000 per instance), `Customauth.over.capacity`. Alibaba asks for the
//! topic's first level to exist in its console first; mqgate has no topic
//! registry, so any valid filter is accepted.

use super::custom_auth_params as p;
use super::{Context, Handler, OperationSuccess};
use crate::access::Resource;
use crate::devices::{Added, Permission, Rule};
use crate::error::{ApiError, ErrorCode};
use crate::params::Params;

pub struct AddCustomAuthPermission;

pub struct Request {
    pub instance_id: String,
    pub permission: Permission,
}

/// The rule of an Add or Update call.
pub(crate) fn read_permission(params: &Params) -> Result<Permission, ApiError> {
    let kind = p::identity_type(params, "IdentityType")?;
    Ok(Permission {
        kind,
        identity: p::identity(params, kind)?,
        rule: Rule {
            topic: p::topic(params)?,
            effect: p::effect(params)?,
            action: p::permit_action(params)?,
        },
    })
}

impl<'a> Handler<'a> for AddCustomAuthPermission {
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
        let limit = ctx.instance()?.max_custom_auth_permissions;
        let permission = request.permission;
        let what = format!(
            "{} {:?} on topic {:?}",
            permission.kind.label(),
            permission.identity,
            permission.rule.topic
        );
        let outcome = ctx
            .devices
            .add_custom_permission(&request.instance_id, permission, ctx.now.timestamp_millis(), limit)
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        match outcome {
            Added::Added => {
                ctx.broker()?.rights_changed();
                Ok(OperationSuccess::new())
            }
            Added::Exists => Err(ApiError::invalid(
                "Topic",
                format!("instance {} already has a rule for {what}; change it with UpdateCustomAuthPermission", request.instance_id),
            )),
            Added::LimitReached => Err(ApiError::new(
                ErrorCode::CustomauthOverCapacity,
                format!(
                    "Over custom auth capacity: instance {} holds {limit} permission rules (max_custom_auth_permissions); delete some (DeleteCustomAuthPermission).",
                    request.instance_id
                ),
            )),
        }
    }
}
