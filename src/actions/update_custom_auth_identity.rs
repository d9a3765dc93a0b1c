//! `UpdateCustomAuthIdentity`: a new secret and sign mode for an identity.
//!
//! ```text
//! Action=UpdateCustomAuthIdentity&InstanceId=post-cn-demo&IdentityType=USER&Username=dev
//!     &Secret=...&SignMode=ORIGIN
//! -> {"RequestId": "...", "Code": 200, "Message": "operation success.", "Success": true}
//! ```
//!
//! The next CONNECT checks the new secret; connections already open stay
//! open (they logged in with what was valid then; CloseConnection ends
//! them). An identity that does not exist answers
//! `InvalidParameter.Username` (add it with AddCustomAuthIdentity).

use super::custom_auth_params as p;
use super::{Context, Handler, OperationSuccess};
use crate::access::Resource;
use crate::devices::Identity;
use crate::error::ApiError;
use crate::params::Params;

pub struct UpdateCustomAuthIdentity;

pub struct Request {
    pub instance_id: String,
    pub identity: Identity,
}

impl<'a> Handler<'a> for UpdateCustomAuthIdentity {
    type Params = Request;
    type Answer = OperationSuccess;

    fn parse(params: &Params) -> Result<Request, ApiError> {
        let instance_id = params.required("InstanceId")?.to_string();
        let kind = p::identity_type(params, "IdentityType")?;
        Ok(Request {
            instance_id,
            identity: Identity {
                kind,
                username: p::username(params)?,
                client_id: p::identity_client_id(params, kind)?,
                sign_mode: p::sign_mode(params)?,
                secret: p::secret(params)?,
            },
        })
    }

    fn resource(request: &Request) -> Resource<'_> {
        Resource::Instance(&request.instance_id)
    }

    async fn handle(ctx: &Context<'_>, request: Request) -> Result<OperationSuccess, ApiError> {
        let (kind, username) = (request.identity.kind, request.identity.username.clone());
        let updated = ctx
            .devices
            .update_custom_identity(&request.instance_id, request.identity, ctx.now.timestamp_millis())
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        if !updated {
            return Err(ApiError::invalid(
                "Username",
                format!(
                    "instance {} has no {} identity {username:?} (with this ClientId); add it with AddCustomAuthIdentity",
                    request.instance_id,
                    kind.label()
                ),
            ));
        }
        Ok(OperationSuccess::new())
    }
}
