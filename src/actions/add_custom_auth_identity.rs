//! `AddCustomAuthIdentity`: a username (and, for `CLIENT`, the one client
//! id it is bound to) with the secret its devices log in with.
//!
//! ```text
//! Action=AddCustomAuthIdentity&InstanceId=post-cn-demo&IdentityType=USER&Username=dev
//!     &Secret=...&SignMode=SIGNED
//! -> {"RequestId": "...", "Code": 200, "Message": "operation success.", "Success": true}
//! ```
//!
//! A device then connects with that username and, as password, the secret
//! itself (`ORIGIN`) or Base64(HMAC-SHA1(secret, ClientId)) (`SIGNED`). On
//! the shared MQTT port, the username finds its instance: one username
//! held by two instances is refused there (give such instances their own
//! `mqtt_listen`). Adding an identity that exists answers
//! `InvalidParameter.Username` (change it with UpdateCustomAuthIdentity);
//! past `max_custom_auth_identities` (default 10,000),
//! `Customauth.over.capacity`.

use super::custom_auth_params as p;
use super::{Context, Handler, OperationSuccess};
use crate::access::Resource;
use crate::devices::{Added, Identity};
use crate::error::{ApiError, ErrorCode};
use crate::params::Params;

pub struct AddCustomAuthIdentity;

pub struct Request {
    pub instance_id: String,
    pub identity: Identity,
}

impl<'a> Handler<'a> for AddCustomAuthIdentity {
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
        let limit = ctx.instance()?.max_custom_auth_identities;
        let (kind, username) = (request.identity.kind, request.identity.username.clone());
        let outcome = ctx
            .devices
            .add_custom_identity(
                &request.instance_id,
                request.identity,
                ctx.now.timestamp_millis(),
                limit,
            )
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        match outcome {
            Added::Added => Ok(OperationSuccess::new()),
            Added::Exists => Err(ApiError::invalid(
                "Username",
                format!(
                    "instance {} already has the {} identity {username:?}; change it with UpdateCustomAuthIdentity",
                    request.instance_id,
                    kind.label()
                ),
            )),
            Added::LimitReached => Err(ApiError::new(
                ErrorCode::CustomauthOverCapacity,
                format!(
                    "Over custom auth capacity: instance {} holds {limit} identities (max_custom_auth_identities); delete some (DeleteCustomAuthIdentity).",
                    request.instance_id
                ),
            )),
        }
    }
}
