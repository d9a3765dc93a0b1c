//! Who may call an endpoint: one extractor, [`Authorized`], that each
//! handler takes with the permission it needs as its type parameter, so
//! that a handler's signature states its RAM action:
//!
//! ```text
//! async fn kick(ok: Authorized<KickClients>, ...)   // mq:CloseConnection
//! ```
//!
//! It checks, on one snapshot of the directory: the Basic credentials (an
//! AccessKeyId and its secret, compared in constant time), the account's
//! `EmqxApi` limit, then RAM on the instance of the path, and hands the
//! handler the instance's broker.

use super::EmqxError;
use crate::access::{self, LazyConditions, Resource};
use crate::api::Limit;
use crate::broker::InstanceBroker;
use crate::directory::{Directory, User};
use crate::error::ErrorCode;
use crate::principal::Principal;
use crate::state::{Admitted, AppState};
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use base64::Engine;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// A permission an endpoint needs: the RAM action a policy must allow on
/// the instance.
pub trait Permission {
    const RAM_ACTION: &'static str;
}

/// Listing and reading clients and their subscriptions.
pub struct ReadClients;
impl Permission for ReadClients {
    const RAM_ACTION: &'static str = "mq:MqttInstanceAccess";
}

/// Kicking clients.
pub struct KickClients;
impl Permission for KickClients {
    const RAM_ACTION: &'static str = "mq:CloseConnection";
}

/// Subscribing and unsubscribing on a client's behalf.
pub struct ManageSubscriptions;
impl Permission for ManageSubscriptions {
    const RAM_ACTION: &'static str = "mq:ManageClientSubscriptions";
}

/// A caller allowed `P` on the instance of the path, and its broker.
pub struct Authorized<P> {
    pub broker: Arc<InstanceBroker>,
    _permission: PhantomData<P>,
}

impl<P: Permission> FromRequestParts<Arc<AppState>> for Authorized<P> {
    type Rejection = EmqxError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, EmqxError> {
        let Path(path) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|e| EmqxError::bad_request(format!("malformed path: {e}")))?;
        let instance_id = path.get("instance_id").map(String::as_str).unwrap_or("");
        let directory = state.directory.current();
        let key = authenticate(&directory, &parts.headers)?;
        let principal = Principal::of(&key);
        // The EMQX API is not signed: no nonce to claim, so never a replay.
        let admitted = state
            .admit(principal.account_id, Limit::EmqxApi, None)
            .await
            .map_err(|cause| {
                tracing::warn!(error = %cause, "EMQX API call refused: the cluster's store did not answer");
                EmqxError::unavailable(
                    "the store this node shares with the cluster's other nodes did not answer in time; try again later",
                )
            })?;
        match admitted {
            Admitted::Throttled(refused) => Err(refused),
            Admitted::Yes | Admitted::Replayed => Ok(()),
        }
        .map_err(|refused| {
                let mut error = EmqxError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "TOO_MANY_REQUESTS",
                    format!(
                        "account {} is over its limit of {} EMQX API calls per second (burst {}); retry after {} ms",
                        principal.account_id,
                        refused.rate,
                        refused.burst,
                        refused.wait_ms()
                    ),
                );
                error.retry_after_secs = Some(refused.wait_ms().div_ceil(1000).max(1));
                error
            })?;
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip());
        let forwarded_for = parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok());
        let source_ip = peer.map(|p| access::source_ip(&directory, p, forwarded_for));
        let conditions =
            LazyConditions::new(principal.access_key_id, source_ip, chrono::Utc::now());
        let instance = access::authorize(
            &directory,
            &principal,
            P::RAM_ACTION,
            Resource::Instance(instance_id),
            &conditions,
        )
        .map_err(|e| match e.kind {
            ErrorCode::ForbiddenRam => {
                EmqxError::new(StatusCode::FORBIDDEN, "FORBIDDEN", e.message)
            }
            _ => EmqxError::new(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                format!("Instance {instance_id} not found in the account of this AccessKey"),
            ),
        })?;
        let broker = state.brokers.instance(&instance.id).ok_or_else(|| {
            EmqxError::unavailable(format!(
                "instance {} has no running broker; try again",
                instance.id
            ))
        })?;
        Ok(Authorized {
            broker,
            _permission: PhantomData,
        })
    }
}

/// The key of valid Basic credentials.
fn authenticate(directory: &Directory, headers: &HeaderMap) -> Result<Arc<User>, EmqxError> {
    let unauthorized = |why: &str| {
        EmqxError::new(
            StatusCode::UNAUTHORIZED,
            "BAD_API_KEY_OR_SECRET",
            format!(
                "Check api_key/api_secret: {why}; send HTTP Basic AccessKeyId:AccessKeySecret (curl -u id:secret)"
            ),
        )
    };
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Err(unauthorized("no credentials"));
    };
    let Some(encoded) = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))
    else {
        return Err(unauthorized("not HTTP Basic authentication"));
    };
    // The decoded credentials hold the caller's secret: wiped when dropped.
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|d| String::from_utf8(d).ok())
        .map(zeroize::Zeroizing::new)
        .ok_or_else(|| unauthorized("malformed Basic credentials"))?;
    let Some((key, secret)) = decoded.split_once(':') else {
        return Err(unauthorized("malformed Basic credentials"));
    };
    let user = directory.user(key).cloned();
    // Compare a secret even for an unknown key, so that timing does not
    // tell which keys exist. (Borrowed: no copy of the secret is made.)
    let expected = user
        .as_ref()
        .map(|u| u.access_key_secret.expose())
        .unwrap_or_default();
    let matches: bool = expected.as_bytes().ct_eq(secret.as_bytes()).into();
    match user {
        Some(user) if matches && !user.disabled => Ok(user),
        Some(user) if user.disabled => Err(unauthorized("the AccessKey is disabled")),
        _ => Err(unauthorized("unknown AccessKeyId or wrong secret")),
    }
}
