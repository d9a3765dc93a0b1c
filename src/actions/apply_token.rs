//! `ApplyToken`: a token that lets devices subscribe to (`R`), publish to
//! (`W`) or both (`R,W`) a set of topics of one instance until `ExpireTime`.
//!
//! ```text
//! Action=ApplyToken&InstanceId=post-cn-demo&Actions=R,W&Resources=cmd/+,status/#&ExpireTime=1609434121000
//! -> {"RequestId": "...", "Token": "LzMT..."}
//! ```
//!
//! As Alibaba documents: at most 100 topics, MQTT wildcards allowed, sorted
//! alphabetically; `ExpireTime` in Unix milliseconds, at least 60 s ahead;
//! more than 30 days ahead is accepted and cut to 30 days. The token belongs
//! to the instance's account: a device logs in with it as
//! `Token|{AccessKeyId of that account}|{InstanceId}`. Durable before the
//! answer; only its SHA-256 is stored. An instance holds at most
//! `max_tokens` unexpired tokens (default 100,000): ApplyToken in a loop
//! cannot grow the store without bound.

use super::{Context, Handler};
use crate::access::Resource;
use crate::devices::topics::check_filter;
use crate::devices::{Applied, TokenRequest, TokenType};
use crate::error::{ApiError, ErrorCode};
use crate::params::Params;
use serde::Serialize;

pub struct ApplyToken;

/// Most topics in one token (Alibaba's limit).
pub const MAX_RESOURCES: usize = 100;
/// Shortest validity Alibaba allows.
pub const MIN_VALIDITY_MS: i64 = 60_000;
/// Longest validity: longer requests are cut to it.
pub const MAX_VALIDITY_MS: i64 = 30 * 24 * 3600 * 1000;

pub struct Request {
    pub instance_id: String,
    pub kind: TokenType,
    pub resources: Vec<String>,
    /// As asked; checked against the clock in the handler.
    pub expire_time: i64,
}

/// `{Token}` (no `Debug`: it is a credential).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Answer {
    pub token: String,
}

/// `Resources`: comma-separated topic filters, 1 to 100, each valid, sorted
/// and without duplicates.
fn resources(params: &Params) -> Result<Vec<String>, ApiError> {
    let text = params.required("Resources")?;
    let mut topics: Vec<String> = Vec::new();
    for topic in text.split(',') {
        let topic = topic.trim();
        if let Err(e) = check_filter(topic) {
            return Err(ApiError::invalid("Resources", format!("{e}")));
        }
        if topic.len() > 1024 {
            return Err(ApiError::invalid(
                "Resources",
                format!("a topic is longer than 1024 bytes: {:?}...", &topic[..64]),
            ));
        }
        topics.push(topic.to_string());
    }
    topics.sort();
    topics.dedup();
    if topics.len() > MAX_RESOURCES {
        return Err(ApiError::invalid(
            "Resources",
            format!(
                "it names {} topics; a token covers at most {MAX_RESOURCES}",
                topics.len()
            ),
        ));
    }
    Ok(topics)
}

impl<'a> Handler<'a> for ApplyToken {
    type Params = Request;
    type Answer = Answer;

    fn parse(params: &Params) -> Result<Request, ApiError> {
        let actions = params.required("Actions")?;
        let kind = TokenType::from_actions(actions).ok_or_else(|| {
            ApiError::invalid(
                "Actions",
                format!("{actions:?} is not one of R, W, R,W"),
            )
        })?;
        params.required("ExpireTime")?;
        let expire_time = params
            .integer("ExpireTime", 0..=i64::MAX)?
            .unwrap_or_default();
        Ok(Request {
            instance_id: params.required("InstanceId")?.to_string(),
            kind,
            resources: resources(params)?,
            expire_time,
        })
    }

    fn resource(request: &Request) -> Resource<'_> {
        Resource::Instance(&request.instance_id)
    }

    async fn handle(ctx: &Context<'_>, request: Request) -> Result<Answer, ApiError> {
        let now = ctx.now.timestamp_millis();
        if request.expire_time < now + MIN_VALIDITY_MS {
            return Err(ApiError::invalid(
                "ExpireTime",
                format!(
                    "{} is less than 60 s from now ({now} ms since the epoch); a token must be valid for at least 60 s",
                    request.expire_time
                ),
            ));
        }
        let expire_time = request.expire_time.min(now + MAX_VALIDITY_MS);
        let limit = ctx.instance()?.max_tokens;
        let applied = ctx
            .devices
            .apply_token(
                TokenRequest {
                    account_id: ctx.instance()?.account_id.clone(),
                    instance_id: request.instance_id.clone(),
                    kind: request.kind,
                    resources: request.resources,
                    expire_time,
                },
                now,
                limit,
            )
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        match applied {
            Applied::New(token, _) => Ok(Answer { token }),
            Applied::LimitReached => Err(ApiError::new(
                ErrorCode::TokenNumExceed,
                format!(
                    "The number of tokens exceeds the limit: instance {} holds {limit} unexpired tokens (max_tokens); revoke unused ones (RevokeToken) or let them expire.",
                    request.instance_id
                ),
            )),
        }
    }
}
