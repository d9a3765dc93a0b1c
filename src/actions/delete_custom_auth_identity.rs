//! `DeleteCustomAuthIdentity`: removes an identity; its username (with
//! that client id, for `CLIENT`) can no longer log in.
//!
//! ```text
//! Action=DeleteCustomAuthIdentity&InstanceId=post-cn-demo&IdentityType=USER&Username=dev
//! -> {"RequestId": "...", "Code": 200, "Message": "operation success.", "Success": true}
//! ```
//!
//! Deleting an identity that does not exist succeeds (what the caller asked
//! for holds). Its permission rules stay (they name a username or client
//! id, not the identity row): DeleteCustomAuthPermission removes them.
//! Connections already open stay open; CloseConnection ends them.

use super::custom_auth_params as p;
use super::{Context, Handler, OperationSuccess};
use crate::access::Resource;
use crate::devices::IdentityType;
use crate::error::ApiError;
use crate::params::Params;

pub struct DeleteCustomAuthIdentity;

pub struct Request {
    pub instance_id: String,
    pub kind: IdentityType,
    pub username: String,
    pub client_id: String,
}

impl<'a> Handler<'a> for DeleteCustomAuthIdentity {
    type Params = Request;
    type Answer = OperationSuccess;

    fn parse(params: &Params) -> Result<Request, ApiError> {
        let instance_id = params.required("InstanceId")?.to_string();
        let kind = p::identity_type(params, "IdentityType")?;
        Ok(Request {
            instance_id,
            kind,
            username: p::username(params)?,
            client_id: p::identity_client_id(params, kind)?,
        })
    }

    fn resource(request: &Request) -> Resource<'_> {
        Resource::Instance(&request.instance_id)
    }

    async fn handle(ctx: &Context<'_>, request: Request) -> Result<OperationSuccess, ApiError> {
        ctx.devices
            .delete_custom_identity(
                &request.instance_id,
                request.kind,
                &request.username,
                &request.client_id,
            )
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        Ok(OperationSuccess::new())
    }
}
