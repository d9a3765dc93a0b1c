//! `QueryCustomAuthIdentity`: the instance's identities, a page at a time,
//! with their secrets.
//!
//! ```text
//! Action=QueryCustomAuthIdentity&InstanceId=post-cn-demo&Size=100
//! -> {"RequestId": "...", "Code": 200, "Message": "operation success.", "Success": true,
//!     "Data": {"Results": [{"IdentityType": "USER", "Username": "dev", "ClientId": "",
//!                           "Secret": "...", "SignMode": "SIGNED"}],
//!              "NextToken": "..."}}
//! ```
//!
//! Sorted by type (USER first), username, client id; `IdentityType`,
//! `Username` and `ClientId` narrow the walk. `Size` is 1 to 100 (required,
//! as the SDK sends it); `NextToken` continues from the previous page and
//! is left out on the last one. The secret is given back as Alibaba's page
//! documents: it is stored sealed with the server key, not hashed.

use super::custom_auth_params as p;
use super::{Context, Handler, OperationSuccess};
use crate::access::Resource;
use crate::devices::IdentityFilter;
use crate::devices::custom_auth::IdentityKey;
use crate::error::ApiError;
use crate::params::Params;
use serde::Serialize;

pub struct QueryCustomAuthIdentity;

pub struct Request {
    pub instance_id: String,
    pub filter: IdentityFilter,
    pub size: usize,
    pub after: Option<IdentityKey>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Answer {
    #[serde(flatten)]
    pub status: OperationSuccess,
    pub data: Data,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Data {
    pub results: Vec<Entry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

/// One identity. `Debug` leaves the secret out: answers are logged by
/// nobody, but a stray `{:?}` must not print it.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Entry {
    pub identity_type: &'static str,
    pub username: String,
    pub client_id: String,
    pub secret: String,
    pub sign_mode: &'static str,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("identity_type", &self.identity_type)
            .field("username", &self.username)
            .field("client_id", &self.client_id)
            .field("secret", &"[REDACTED]")
            .field("sign_mode", &self.sign_mode)
            .finish()
    }
}

impl<'a> Handler<'a> for QueryCustomAuthIdentity {
    type Params = Request;
    type Answer = Answer;

    fn parse(params: &Params) -> Result<Request, ApiError> {
        let instance_id = params.required("InstanceId")?.to_string();
        let size = p::page_size(params)?;
        let after = p::page_after(params)?;
        let username = match params.get("Username").filter(|u| !u.is_empty()) {
            Some(_) => Some(p::username(params)?),
            None => None,
        };
        let client_id = match params.get("ClientId").filter(|c| !c.is_empty()) {
            Some(_) => Some(params.client_id("ClientId")?.to_string()),
            None => None,
        };
        Ok(Request {
            instance_id,
            filter: IdentityFilter {
                kind: p::optional_identity_type(params, "IdentityType")?,
                username,
                client_id,
            },
            size,
            after,
        })
    }

    fn resource(request: &Request) -> Resource<'_> {
        Resource::Instance(&request.instance_id)
    }

    async fn handle(ctx: &Context<'_>, request: Request) -> Result<Answer, ApiError> {
        let (identities, next) = ctx.devices.custom_identities(
            &request.instance_id,
            &request.filter,
            request.after.as_ref(),
            request.size,
        );
        Ok(Answer {
            status: OperationSuccess::new(),
            data: Data {
                results: identities
                    .into_iter()
                    .map(|identity| Entry {
                        identity_type: identity.kind.label(),
                        username: identity.username,
                        client_id: identity.client_id,
                        secret: identity.secret.expose().to_string(),
                        sign_mode: identity.sign_mode.label(),
                    })
                    .collect(),
                next_token: next.as_ref().map(p::next_token),
            },
        })
    }
}
