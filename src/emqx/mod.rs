//! EMQX's client-management REST API (v5 conventions), per instance, under
//! `/instances/{InstanceId}/api/v5`: an EMQX tool pointed at
//! `http://host:port/instances/{InstanceId}` finds `/api/v5/clients`.
//!
//! Authentication is HTTP Basic with an AccessKeyId and its secret (`curl -u
//! id:secret`); each endpoint states the RAM action it needs in its
//! signature ([`auth::Authorized`]): listing and reading clients
//! `mq:MqttInstanceAccess`, kicking `mq:CloseConnection`, subscribing and
//! unsubscribing for a client `mq:ManageClientSubscriptions`. Calls are
//! throttled per account (`[limits] EmqxApi`, default 100 per second; 429
//! with `Retry-After` past it). They are not billed: they are mqgate's
//! management API, not ApsaraMQ transactions.
//!
//! - [`auth`]: Basic credentials, the throttle and RAM, in one extractor;
//! - [`calls`]: the calls on an instance's devices and their handlers (in a
//!   cluster, relayed to the node that serves the instance);
//! - [`clients`]: list, get and kick clients;
//! - [`subscriptions`]: a client's subscriptions, and subscribing or
//!   unsubscribing on its behalf;
//! - [`query`]: the list query (filters, pages, fields).

pub mod auth;
pub mod calls;
pub mod clients;
pub mod query;
pub mod subscriptions;

use crate::state::AppState;
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use std::sync::Arc;

/// The node name shown in client objects of a node alone (in a cluster:
/// `mqgate@{node_id}`, [`calls::node_name`]).
pub const NODE: &str = "mqgate@local";
/// Fields a client object can have, in the order they are shown.
pub const FIELDS: &[&str] = &[
    "clientid",
    "username",
    "proto_name",
    "proto_ver",
    "ip_address",
    "port",
    "is_bridge",
    "connected",
    "connected_at",
    "disconnected_at",
    "created_at",
    "keepalive",
    "clean_start",
    "expiry_interval",
    "subscriptions_cnt",
    "inflight_cnt",
    "recv_oct",
    "recv_cnt",
    "recv_pkt",
    "recv_msg",
    "send_oct",
    "send_cnt",
    "send_pkt",
    "send_msg",
    "node",
];

/// The routes, mounted under `/instances/{instance_id}/api/v5`.
pub fn routes() -> axum::Router<Arc<AppState>> {
    const BASE: &str = "/instances/{instance_id}/api/v5";
    let route = |path: &str| format!("{BASE}{path}");
    axum::Router::new()
        .route(&route("/clients"), get(calls::list))
        .route(&route("/clients/kickout/bulk"), post(clients::kick_bulk))
        .route(
            &route("/clients/{clientid}"),
            get(calls::get).delete(clients::kick),
        )
        .route(
            &route("/clients/{clientid}/subscriptions"),
            get(calls::subscriptions),
        )
        .route(
            &route("/clients/{clientid}/subscribe"),
            post(calls::subscribe),
        )
        .route(
            &route("/clients/{clientid}/subscribe/bulk"),
            post(calls::subscribe_bulk),
        )
        .route(
            &route("/clients/{clientid}/unsubscribe"),
            post(calls::unsubscribe),
        )
        .route(
            &route("/clients/{clientid}/unsubscribe/bulk"),
            post(calls::unsubscribe_bulk),
        )
}

/// An EMQX-style error: `{"code": "...", "message": "..."}`.
#[derive(Debug)]
pub struct EmqxError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// For 429: seconds until a call can succeed (`Retry-After`).
    pub retry_after_secs: Option<u64>,
}

impl EmqxError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        EmqxError {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        EmqxError::new(StatusCode::BAD_REQUEST, "INVALID_PARAMETER", message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        EmqxError::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", message)
    }

    pub fn client_not_found() -> Self {
        EmqxError::new(
            StatusCode::NOT_FOUND,
            "CLIENTID_NOT_FOUND",
            "Client ID not found",
        )
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        EmqxError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
            message,
        )
    }
}

impl IntoResponse for EmqxError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(json!({"code": self.code, "message": self.message})),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"mqgate\""),
            );
        }
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// A JSON request body, or 400 saying what is wrong with it.
pub fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, EmqxError> {
    serde_json::from_slice(body)
        .map_err(|e| EmqxError::bad_request(format!("malformed JSON body: {e}")))
}
