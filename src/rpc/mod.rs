//! The RPC endpoint at `/`: Alibaba's `Action=...&Signature=...` protocol.
//!
//! A request flows one way through small stages, each its own module:
//!
//! ```text
//! parse (params) -> verify signature (verify, signature_v1) -> replay check (replay)
//!   -> version and action -> authorize (access) -> the action (actions) -> respond (response)
//! ```
//!
//! Every answer, success or error, carries a `RequestId`.

pub mod params;
pub mod replay;
pub mod response;
pub mod signature_v1;
pub mod signature_v3;
pub mod verify;

use crate::actions::batch_query_session_by_client_ids::StatusCache;
use crate::actions::{API_VERSION, Action, ActionContext};
use crate::broker::Brokers;
use crate::directory::DirectoryHandle;
use crate::error::{ApiError, ErrorCode};
use crate::metering::Meter;
use crate::metrics::Metrics;
use crate::throttle::Throttle;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header;
use axum::response::Response;
use params::Params;
use replay::ReplayGuard;
use response::Answer;
use std::sync::Arc;
use verify::{Format, IncomingRequest};

/// Largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest query string accepted, in bytes.
pub const MAX_QUERY_BYTES: usize = 32 * 1024;
/// Most headers a request may carry (the HTTP layer itself stops at
/// [`crate::server::HTTP_MAX_HEADERS`]).
pub const MAX_HEADERS: usize = 100;

/// What the RPC endpoint needs to answer calls.
pub struct RpcState {
    pub directory: Arc<DirectoryHandle>,
    pub brokers: Arc<Brokers>,
    pub replay: ReplayGuard,
    pub status_cache: StatusCache,
    /// Rebuilt when a reload changes the limits.
    pub throttle: std::sync::RwLock<Arc<Throttle>>,
    pub meter: Arc<Meter>,
    pub metrics: Metrics,
    /// `mqtt.session_expiry_secs`, shown as a 3.1.1 session's expiry.
    pub session_expiry_secs: u64,
}

impl RpcState {
    pub fn throttle(&self) -> Arc<Throttle> {
        self.throttle
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The axum handler for `/`.
pub async fn endpoint(State(state): State<Arc<RpcState>>, request: Request) -> Response {
    let request_id = new_request_id();
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("mqgate")
        .to_string();
    let mut format = fallback_format(request.headers(), request.uri().query());
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let started = std::time::Instant::now();
    let mut action_name = "-";
    let outcome = handle(
        &state,
        request,
        peer,
        &request_id,
        &mut format,
        &mut action_name,
    )
    .await;
    let answer = match outcome {
        Ok((action, body)) => {
            state
                .metrics
                .record(action.name(), "OK", started.elapsed(), false);
            Answer::Success { action, body }
        }
        Err(error) => {
            tracing::info!(%request_id, code = %error.code(), message = %error.message, "rpc call refused");
            let throttled = matches!(
                error.kind,
                ErrorCode::SystemOverFlow | ErrorCode::SystemOverFlowServer
            );
            state
                .metrics
                .record(action_name, &error.code(), started.elapsed(), throttled);
            Answer::Error(error)
        }
    };
    answer.render(format, &request_id, &host)
}

/// The pipeline. `format` is set as soon as the request says which format it
/// wants, so that even early errors are answered in it.
async fn handle(
    state: &RpcState,
    request: Request,
    peer: Option<std::net::IpAddr>,
    request_id: &str,
    format: &mut Format,
    action_name: &mut &'static str,
) -> Result<(Action, response::SuccessBody), ApiError> {
    let forwarded_for = request
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let incoming = read_request(request).await?;
    *format = incoming.format()?;

    let directory = state.directory.current();
    let verified = verify::verify(incoming, &directory)?;
    state.replay.check(
        &verified.user.access_key_id,
        &verified.timestamp,
        &verified.nonce,
        chrono::Utc::now(),
    )?;
    if verified.version != API_VERSION {
        return Err(ApiError::new(
            ErrorCode::InvalidVersion,
            format!(
                "Specified parameter Version is not valid: \"{}\"; mqgate serves OnsMqtt {API_VERSION}.",
                verified.version
            ),
        ));
    }
    let Some(action) = Action::from_name(&verified.action) else {
        return Err(ApiError::new(
            ErrorCode::InvalidActionNotFound,
            format!(
                "Specified api is not found, please check your url and method: \"{}\" is not an action of OnsMqtt {API_VERSION} that mqgate serves.",
                verified.action
            ),
        ));
    };
    *action_name = action.name();
    state.throttle().check(&verified.user.account_id, action)?;
    let source_ip = peer.map(|peer| source_ip(&directory, peer, forwarded_for.as_deref()));
    let conditions = crate::access::LazyConditions::new(
        &verified.user.access_key_id,
        source_ip,
        chrono::Utc::now(),
    );
    let ctx = ActionContext {
        directory: &directory,
        brokers: &state.brokers,
        status_cache: &state.status_cache,
        ram_context: &conditions,
        meter: &state.meter,
        format: *format,
    };
    let body = action.perform(&verified, &ctx, request_id).await?;
    Ok((action, body))
}

/// The RAM condition keys of a call by `access_key_id` (the RPC endpoint
/// and the EMQX API alike). mqgate serves plain HTTP, so
/// `acs:SecureTransport` is false; an AccessKey call has no MFA, so
/// `acs:MFAPresent` is absent.
pub fn ram_context(
    access_key_id: &str,
    source_ip: Option<std::net::IpAddr>,
    now: chrono::DateTime<chrono::Utc>,
) -> crate::ram::Context {
    let mut context = crate::ram::Context::new();
    context
        .set("acs:SecureTransport", "false")
        .set(
            "acs:CurrentTime",
            now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        )
        .set("acs:AccessId", access_key_id);
    if let Some(ip) = source_ip {
        context.set("acs:SourceIp", ip.to_canonical().to_string());
    }
    context
}

/// The caller's address for `acs:SourceIp`: the TCP peer, unless the peer
/// is a trusted proxy, in which case the nearest untrusted address of
/// `X-Forwarded-For` (read from the right, as each proxy appends).
pub fn source_ip(
    directory: &crate::directory::Directory,
    peer: std::net::IpAddr,
    forwarded_for: Option<&str>,
) -> std::net::IpAddr {
    if !directory.is_trusted_proxy(peer) {
        return peer;
    }
    let Some(header) = forwarded_for else {
        return peer;
    };
    let mut hops = Vec::new();
    for hop in header.split(',') {
        match hop.trim().parse::<std::net::IpAddr>() {
            Ok(ip) => hops.push(ip),
            // A header we cannot read is not believed.
            Err(_) => return peer,
        }
    }
    hops.iter()
        .rev()
        .find(|ip| !directory.is_trusted_proxy(**ip))
        .or(hops.first())
        .copied()
        .unwrap_or(peer)
}

/// The format for answers given before the parameters are parsed (or when
/// they cannot be): JSON for V3, else what a `Format=` in the query says,
/// else XML (Alibaba's V1 default).
fn fallback_format(headers: &axum::http::HeaderMap, query: Option<&str>) -> Format {
    let v3 = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("ACS3-"));
    let json_asked = query
        .unwrap_or_default()
        .split('&')
        .any(|pair| pair.eq_ignore_ascii_case("Format=JSON"));
    if v3 || json_asked {
        Format::Json
    } else {
        Format::Xml
    }
}

/// Parse stage over the HTTP request.
async fn read_request(request: Request) -> Result<IncomingRequest, ApiError> {
    let (parts, body) = request.into_parts();
    if parts.headers.len() > MAX_HEADERS {
        return Err(ApiError::new(
            ErrorCode::MalformedRequest,
            format!(
                "The request has {} headers; at most {MAX_HEADERS} are accepted.",
                parts.headers.len()
            ),
        ));
    }
    let headers = parts
        .headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_string(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = read_body(body).await?;
    parse_request(parts.method.as_str(), parts.uri.query(), headers, &body)
}

/// Parse stage, as a pure function: the parameters of a call from its
/// method, query string, headers (names in lower case) and body.
pub fn parse_request(
    method: &str,
    query: Option<&str>,
    headers: Vec<(String, String)>,
    body: &[u8],
) -> Result<IncomingRequest, ApiError> {
    if method != "GET" && method != "POST" {
        return Err(ApiError::new(
            ErrorCode::MalformedRequest,
            format!("HTTP method {method} is not supported; use GET or POST."),
        ));
    }
    let mut query_params = Params::default();
    if let Some(query) = query {
        if query.len() > MAX_QUERY_BYTES {
            return Err(ApiError::new(
                ErrorCode::MalformedRequest,
                format!("The query string is longer than {MAX_QUERY_BYTES} bytes."),
            ));
        }
        query_params.add_form(query.as_bytes(), "query")?;
    }
    let mut query = None;
    let mut params = query_params;
    if !body.is_empty() {
        let content_type = headers
            .iter()
            .find(|(n, _)| n == "content-type")
            .map(|(_, v)| v.as_str());
        if !content_type.is_some_and(is_form) {
            return Err(ApiError::new(
                ErrorCode::MalformedRequest,
                "The request has a body that is not application/x-www-form-urlencoded; send parameters in the query or in a form body.",
            ));
        }
        query = Some(params.clone());
        params.add_form(body, "body")?;
    }
    Ok(IncomingRequest {
        method: method.to_string(),
        params,
        query,
        headers,
        body: bytes::Bytes::copy_from_slice(body),
    })
}

async fn read_body(body: Body) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            ApiError::new(
                ErrorCode::MalformedRequest,
                format!(
                    "The request body is larger than {MAX_BODY_BYTES} bytes or could not be read."
                ),
            )
        })
}

fn is_form(content_type: &str) -> bool {
    content_type.split(';').next().is_some_and(|v| {
        v.trim()
            .eq_ignore_ascii_case("application/x-www-form-urlencoded")
    })
}

/// `GET /metrics`: Prometheus text.
pub async fn metrics(State(state): State<Arc<RpcState>>) -> Response {
    use axum::response::IntoResponse;
    let text = state
        .metrics
        .render(&state.brokers, state.status_cache.hit_counts());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// A fresh `RequestId`: an upper-case UUID, as Alibaba's.
pub fn new_request_id() -> String {
    uuid::Uuid::new_v4()
        .hyphenated()
        .encode_upper(&mut uuid::Uuid::encode_buffer())
        .to_string()
}

/// Answer for paths other than `/`.
pub async fn not_found() -> Response {
    let request_id = new_request_id();
    Answer::Error(ApiError::new(
        ErrorCode::InvalidActionNotFound,
        "Specified api is not found, please check your url and method: the RPC endpoint is at path /.",
    ))
    .render(Format::Json, &request_id, "mqgate")
}
