//! `QueryToken`: whether a token is valid (issued for this instance, not
//! expired, not revoked).
//!
//! ```text
//! Action=QueryToken&InstanceId=post-cn-demo&Token=LzMT...
//! -> {"RequestId": "...", "TokenStatus": true}
//! ```
//!
//! A token that was never issued, was revoked or has expired answers
//! `false`, not an error, as Alibaba's page describes the field.

use super::{Context, Handler};
use crate::access::Resource;
use crate::error::ApiError;
use crate::params::Params;
use serde::Serialize;

pub struct QueryToken;

pub struct Request {
    pub instance_id: String,
    pub token: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Answer {
    pub token_status: bool,
}

impl<'a> Handler<'a> for QueryToken {
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
        Ok(Answer {
            token_status: ctx.devices.token_status(
                &request.instance_id,
                &request.token,
                ctx.now.timestamp_millis(),
            ),
        })
    }
}
