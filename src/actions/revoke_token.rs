//! `RevokeToken`: ends a token at once. Connected devices holding it are
//! told on `$SYS/tokenInvalidNotice` and lose its rights (their
//! subscriptions it allowed are removed); new logins with it are refused.
//!
//! ```text
//! Action=RevokeToken&InstanceId=post-cn-demo&Token=LzMT...
//! -> {"RequestId": "..."}
//! ```
//!
//! Revoking a token that is unknown, expired or already revoked succeeds:
//! what the caller asked for holds (Alibaba's page lists no error for it).

use super::{Context, Handler};
use crate::access::Resource;
use crate::error::ApiError;
use crate::params::Params;
use serde::Serialize;

pub struct RevokeToken;

pub struct Request {
    pub instance_id: String,
    pub token: String,
}

#[derive(Debug, Serialize)]
pub struct Answer {}

impl<'a> Handler<'a> for RevokeToken {
    type Params = Request;
    type Answer = Answer;

    fn parse(params: &Params) -> Result<Request, ApiError> {
        Ok(Request {
            instance_id: params.required("InstanceId")?.to_string(),
            token: params.required("Token")?.to_string(),
        })
    }

    fn resource(request: &Request) -> Resource<'_> {
        Resource::Instance(&request.instance_id)
    }

    async fn handle(ctx: &Context<'_>, request: Request) -> Result<Answer, ApiError> {
        let revoked = ctx
            .devices
            .revoke_token(&request.instance_id, &request.token)
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        if revoked.is_some() {
            ctx.broker()?.rights_changed();
        }
        Ok(Answer {})
    }
}
