//! EMQX's client-management REST API (v5 conventions), per instance, under
//! `/instances/{InstanceId}/api/v5`: an EMQX tool pointed at
//! `http://host:port/instances/{InstanceId}` finds `/api/v5/clients`.
//!
//! Authentication is HTTP Basic with an AccessKeyId and its secret (`curl -u
//! id:secret`); authorization uses the RAM actions of the RPC endpoint:
//! listing and reading clients `mq:MqttInstanceAccess`, kicking
//! `mq:CloseConnection`, subscribing and unsubscribing for a client
//! `mq:ManageClientSubscriptions`. These calls are not billed: they are
//! mqgate's management API, not ApsaraMQ transactions.

use crate::access;
use crate::broker::InstanceBroker;
use crate::broker::front::reason::ADMINISTRATIVE_ACTION;
use crate::broker::registry::{
    Awaited, ClientView, InjectError, ProtocolVersion, Session, SubscriptionOptions,
};
use crate::directory::User;
use crate::error::ErrorCode;
use crate::rpc::RpcState;
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::net::IpAddr;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// The node name shown in client objects (mqgate is a single node).
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
pub fn routes() -> axum::Router<Arc<RpcState>> {
    axum::Router::new()
        .route("/instances/{instance_id}/api/v5/clients", get(list_clients))
        .route(
            "/instances/{instance_id}/api/v5/clients/kickout/bulk",
            post(kickout_bulk),
        )
        .route(
            "/instances/{instance_id}/api/v5/clients/{clientid}",
            get(get_client).delete(kick_client),
        )
        .route(
            "/instances/{instance_id}/api/v5/clients/{clientid}/subscriptions",
            get(client_subscriptions),
        )
        .route(
            "/instances/{instance_id}/api/v5/clients/{clientid}/subscribe",
            post(subscribe),
        )
        .route(
            "/instances/{instance_id}/api/v5/clients/{clientid}/subscribe/bulk",
            post(subscribe_bulk),
        )
        .route(
            "/instances/{instance_id}/api/v5/clients/{clientid}/unsubscribe",
            post(unsubscribe),
        )
        .route(
            "/instances/{instance_id}/api/v5/clients/{clientid}/unsubscribe/bulk",
            post(unsubscribe_bulk),
        )
}

/// An EMQX-style error: `{"code": "...", "message": "..."}`.
#[derive(Debug)]
pub struct EmqxError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl EmqxError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        EmqxError {
            status,
            code,
            message: message.into(),
        }
    }

    fn invalid(message: impl Into<String>) -> Self {
        EmqxError::new(StatusCode::BAD_REQUEST, "INVALID_PARAMETER", message)
    }

    fn bad_request(message: impl Into<String>) -> Self {
        EmqxError::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", message)
    }

    fn client_not_found() -> Self {
        EmqxError::new(
            StatusCode::NOT_FOUND,
            "CLIENTID_NOT_FOUND",
            "Client ID not found",
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
                header::HeaderValue::from_static("Basic realm=\"mqgate\""),
            );
        }
        response
    }
}

/// A caller allowed to perform `ram_action` on the instance, and its broker.
struct Authorized {
    broker: Arc<InstanceBroker>,
}

fn authenticate(state: &RpcState, headers: &HeaderMap) -> Result<Arc<User>, EmqxError> {
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
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|d| String::from_utf8(d).ok())
        .ok_or_else(|| unauthorized("malformed Basic credentials"))?;
    let Some((key, secret)) = decoded.split_once(':') else {
        return Err(unauthorized("malformed Basic credentials"));
    };
    let directory = state.directory.current();
    let user = directory.user(key).cloned();
    // Compare a secret even for an unknown key, so that timing does not
    // tell which keys exist.
    let expected = user
        .as_ref()
        .map(|u| u.access_key_secret.expose().to_string())
        .unwrap_or_default();
    let matches: bool = expected.as_bytes().ct_eq(secret.as_bytes()).into();
    match user {
        Some(user) if matches && !user.disabled => Ok(user),
        Some(user) if user.disabled => Err(unauthorized("the AccessKey is disabled")),
        _ => Err(unauthorized("unknown AccessKeyId or wrong secret")),
    }
}

fn authorize(
    state: &RpcState,
    headers: &HeaderMap,
    peer: Option<IpAddr>,
    instance_id: &str,
    ram_action: &str,
) -> Result<Authorized, EmqxError> {
    let user = authenticate(state, headers)?;
    let directory = state.directory.current();
    let forwarded_for = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
    let source_ip = peer.map(|p| crate::rpc::source_ip(&directory, p, forwarded_for));
    let conditions = access::LazyConditions::new(&user.access_key_id, source_ip, Utc::now());
    let instance = access::authorize(&directory, &user, ram_action, instance_id, &conditions)
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
        EmqxError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
            format!("instance {} has no running broker; try again", instance.id),
        )
    })?;
    Ok(Authorized { broker })
}

fn peer_of(request_extensions: &axum::http::Extensions) -> Option<IpAddr> {
    request_extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, false)
}

/// The client object, all fields.
fn client_object(view: &ClientView, default_expiry: u64) -> Map<String, Value> {
    let info = &view.info;
    let expiry = match info.protocol {
        ProtocolVersion::V5 => info.session_expiry_interval.unwrap_or(0) as u64,
        ProtocolVersion::V311 => {
            if info.clean_start {
                0
            } else {
                default_expiry
            }
        }
    };
    let mut object = Map::new();
    let mut put = |k: &str, v: Value| {
        object.insert(k.to_string(), v);
    };
    put("clientid", json!(info.client_id));
    put("username", json!(info.username));
    put("proto_name", json!("MQTT"));
    put("proto_ver", json!(info.protocol.level()));
    put("ip_address", json!(info.ip.to_canonical().to_string()));
    put("port", json!(info.port));
    put("is_bridge", json!(false));
    put("connected", json!(view.connected));
    put("connected_at", json!(time(info.connected_at)));
    if let Some(at) = view.disconnected_at {
        put("disconnected_at", json!(time(at)));
    }
    put("created_at", json!(time(info.created_at)));
    put("keepalive", json!(info.keepalive));
    put("clean_start", json!(info.clean_start));
    put("expiry_interval", json!(expiry));
    put("subscriptions_cnt", json!(view.subscriptions.len()));
    let s = view.stats;
    put("inflight_cnt", json!(s.inflight_cnt));
    put("recv_oct", json!(s.recv_oct));
    put("recv_cnt", json!(s.recv_cnt));
    put("recv_pkt", json!(s.recv_pkt));
    put("recv_msg", json!(s.recv_msg));
    put("send_oct", json!(s.send_oct));
    put("send_cnt", json!(s.send_cnt));
    put("send_pkt", json!(s.send_pkt));
    put("send_msg", json!(s.send_msg));
    put("node", json!(NODE));
    object
}

/// The list query: exact and fuzzy filters, time filters, pagination,
/// field selection. EMQX 4's `_`-prefixed spellings are read too.
#[derive(Debug, Default)]
struct ListQuery {
    page: usize,
    limit: usize,
    clientids: Vec<String>,
    usernames: Vec<String>,
    ip_address: Option<IpAddr>,
    conn_state: Option<String>,
    clean_start: Option<bool>,
    proto_ver: Option<u8>,
    proto_name: Option<String>,
    node: Option<String>,
    like_clientid: Option<String>,
    like_username: Option<String>,
    gte_created_at: Option<DateTime<Utc>>,
    lte_created_at: Option<DateTime<Utc>>,
    gte_connected_at: Option<DateTime<Utc>>,
    lte_connected_at: Option<DateTime<Utc>>,
    fields: Option<Vec<String>>,
}

fn parse_time_filter(name: &str, value: &str) -> Result<DateTime<Utc>, EmqxError> {
    if let Ok(millis) = value.parse::<i64>()
        && let Some(t) = DateTime::from_timestamp_millis(millis)
    {
        return Ok(t);
    }
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            EmqxError::invalid(format!(
                "the {name} parameter expected type is timestamp (RFC 3339 or epoch milliseconds), but the value is {value}"
            ))
        })
}

fn parse_list_query(raw: Option<&str>) -> Result<ListQuery, EmqxError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|e| EmqxError::bad_request(format!("malformed query string: {e}")))?;
    let mut q = ListQuery {
        page: 1,
        limit: 100,
        ..ListQuery::default()
    };
    for (key, value) in pairs {
        let name = key.strip_prefix('_').unwrap_or(&key);
        let number = |value: &str| {
            value.parse::<usize>().map_err(|_| {
                EmqxError::invalid(format!(
                    "the {name} parameter expected type is integer, but the value is {value}"
                ))
            })
        };
        match name {
            "page" => {
                q.page = number(&value)?;
                if q.page < 1 {
                    return Err(EmqxError::invalid("page must be at least 1"));
                }
            }
            "limit" => {
                q.limit = number(&value)?;
                if !(1..=10_000).contains(&q.limit) {
                    return Err(EmqxError::invalid("limit must be between 1 and 10000"));
                }
            }
            "clientid" => q.clientids.push(value),
            "username" => q.usernames.push(value),
            "ip_address" => {
                q.ip_address = Some(value.parse().map_err(|_| {
                    EmqxError::invalid(format!(
                        "the ip_address parameter expected type is ip, but the value is {value}"
                    ))
                })?);
            }
            "conn_state" => match value.as_str() {
                "connected" | "idle" | "disconnected" => q.conn_state = Some(value),
                _ => {
                    return Err(EmqxError::invalid(format!(
                        "conn_state must be connected, idle or disconnected, not {value}"
                    )));
                }
            },
            "clean_start" => {
                q.clean_start = Some(value.parse().map_err(|_| {
                    EmqxError::invalid(format!(
                        "the clean_start parameter expected type is boolean, but the value is {value}"
                    ))
                })?);
            }
            "proto_ver" => {
                q.proto_ver = Some(value.parse().map_err(|_| {
                    EmqxError::invalid(format!(
                        "the proto_ver parameter expected type is integer, but the value is {value}"
                    ))
                })?);
            }
            "proto_name" => q.proto_name = Some(value),
            "node" => q.node = Some(value),
            "like_clientid" => q.like_clientid = Some(value),
            "like_username" => q.like_username = Some(value),
            "gte_created_at" => q.gte_created_at = Some(parse_time_filter(name, &value)?),
            "lte_created_at" => q.lte_created_at = Some(parse_time_filter(name, &value)?),
            "gte_connected_at" => q.gte_connected_at = Some(parse_time_filter(name, &value)?),
            "lte_connected_at" => q.lte_connected_at = Some(parse_time_filter(name, &value)?),
            "fields" if value == "all" => q.fields = None,
            "fields" => {
                let fields: Vec<String> = value.split(',').map(|f| f.trim().to_string()).collect();
                if let Some(bad) = fields.iter().find(|f| !FIELDS.contains(&f.as_str())) {
                    return Err(EmqxError::invalid(format!(
                        "fields: unknown field {bad}; known fields are {}",
                        FIELDS.join(", ")
                    )));
                }
                q.fields = Some(fields);
            }
            // Other parameters are not EMQX's: ignored, as EMQX does.
            _ => {}
        }
    }
    Ok(q)
}

impl ListQuery {
    fn fuzzy(&self) -> bool {
        (self.like_clientid.is_some() && self.clientids.is_empty())
            || (self.like_username.is_some() && self.usernames.is_empty())
    }

    fn matches(&self, v: &ClientView) -> bool {
        let info = &v.info;
        let username = info.username.as_deref().unwrap_or("");
        if !self.clientids.is_empty() && !self.clientids.contains(&info.client_id) {
            return false;
        }
        if !self.usernames.is_empty() && !self.usernames.iter().any(|u| u == username) {
            return false;
        }
        // A fuzzy filter yields to the exact one for the same key.
        if self.clientids.is_empty()
            && let Some(like) = &self.like_clientid
            && !info.client_id.contains(like.as_str())
        {
            return false;
        }
        if self.usernames.is_empty()
            && let Some(like) = &self.like_username
            && !username.contains(like.as_str())
        {
            return false;
        }
        if self
            .ip_address
            .is_some_and(|ip| ip.to_canonical() != info.ip.to_canonical())
        {
            return false;
        }
        match self.conn_state.as_deref() {
            Some("connected") if !v.connected => return false,
            Some("disconnected") if v.connected => return false,
            // mqgate has no idle (connecting) state: nothing is idle.
            Some("idle") => return false,
            _ => {}
        }
        if self.clean_start.is_some_and(|c| c != info.clean_start)
            || self.proto_ver.is_some_and(|p| p != info.protocol.level())
            || self.proto_name.as_ref().is_some_and(|p| p != "MQTT")
            || self.node.as_ref().is_some_and(|n| n != NODE)
        {
            return false;
        }
        let within = |t: DateTime<Utc>, gte: Option<DateTime<Utc>>, lte: Option<DateTime<Utc>>| {
            gte.is_none_or(|g| t >= g) && lte.is_none_or(|l| t <= l)
        };
        within(info.created_at, self.gte_created_at, self.lte_created_at)
            && within(
                info.connected_at,
                self.gte_connected_at,
                self.lte_connected_at,
            )
    }

    fn select(&self, object: Map<String, Value>) -> Value {
        match &self.fields {
            None => Value::Object(object),
            Some(fields) => Value::Object(
                object
                    .into_iter()
                    .filter(|(k, _)| fields.iter().any(|f| f == k))
                    .collect(),
            ),
        }
    }
}

fn default_expiry(state: &RpcState) -> u64 {
    state.session_expiry_secs
}

async fn list_clients(
    State(state): State<Arc<RpcState>>,
    Path(instance_id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
) -> Result<Response, EmqxError> {
    let ok = authorize(
        &state,
        &headers,
        peer_of(&extensions),
        &instance_id,
        "mq:MqttInstanceAccess",
    )?;
    let q = parse_list_query(query.as_deref())?;
    let mut views: Vec<ClientView> = ok
        .broker
        .sessions
        .views()
        .into_iter()
        .filter(|v| q.matches(v))
        .collect();
    views.sort_by(|a, b| {
        (a.info.created_at, &a.info.client_id).cmp(&(b.info.created_at, &b.info.client_id))
    });
    let count = views.len();
    let start = (q.page - 1).saturating_mul(q.limit);
    let data: Vec<Value> = views
        .iter()
        .skip(start)
        .take(q.limit)
        .map(|v| q.select(client_object(v, default_expiry(&state))))
        .collect();
    let hasnext = start.saturating_add(q.limit) < count;
    let mut meta = json!({"page": q.page, "limit": q.limit, "hasnext": hasnext});
    if !q.fuzzy() {
        meta["count"] = json!(count);
    }
    Ok(Json(json!({"data": data, "meta": meta})).into_response())
}

async fn get_client(
    State(state): State<Arc<RpcState>>,
    Path((instance_id, clientid)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
) -> Result<Response, EmqxError> {
    let ok = authorize(
        &state,
        &headers,
        peer_of(&extensions),
        &instance_id,
        "mq:MqttInstanceAccess",
    )?;
    let q = parse_list_query(query.as_deref())?;
    let view = ok
        .broker
        .sessions
        .view(&clientid)
        .ok_or_else(EmqxError::client_not_found)?;
    Ok(Json(q.select(client_object(&view, default_expiry(&state)))).into_response())
}

async fn kick_client(
    State(state): State<Arc<RpcState>>,
    Path((instance_id, clientid)): Path<(String, String)>,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
) -> Result<Response, EmqxError> {
    let ok = authorize(
        &state,
        &headers,
        peer_of(&extensions),
        &instance_id,
        "mq:CloseConnection",
    )?;
    let kicked = ok
        .broker
        .sessions
        .disconnect(
            &clientid,
            ADMINISTRATIVE_ACTION,
            "kicked out through the client management API",
        )
        .await;
    if !kicked {
        return Err(EmqxError::client_not_found());
    }
    state.status_cache.forget(&instance_id, &clientid);
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn kickout_bulk(
    State(state): State<Arc<RpcState>>,
    Path(instance_id): Path<String>,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
    body: axum::body::Bytes,
) -> Result<Response, EmqxError> {
    let ok = authorize(
        &state,
        &headers,
        peer_of(&extensions),
        &instance_id,
        "mq:CloseConnection",
    )?;
    let clientids: Vec<String> = serde_json::from_slice(&body).map_err(|e| {
        EmqxError::bad_request(format!("the body must be a JSON array of client ids: {e}"))
    })?;
    // Each kick is bounded by the kick grace period; unknown ids are
    // skipped, as EMQX does.
    for id in &clientids {
        ok.broker
            .sessions
            .disconnect(
                id,
                ADMINISTRATIVE_ACTION,
                "kicked out through the client management API",
            )
            .await;
        state.status_cache.forget(&instance_id, id);
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn subscription_object(clientid: &str, topic: &str, o: &SubscriptionOptions) -> Value {
    json!({"topic": topic, "qos": o.qos, "nl": o.nl, "rap": o.rap, "rh": o.rh, "node": NODE, "clientid": clientid})
}

async fn client_subscriptions(
    State(state): State<Arc<RpcState>>,
    Path((instance_id, clientid)): Path<(String, String)>,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
) -> Result<Response, EmqxError> {
    let ok = authorize(
        &state,
        &headers,
        peer_of(&extensions),
        &instance_id,
        "mq:MqttInstanceAccess",
    )?;
    let view = ok
        .broker
        .sessions
        .view(&clientid)
        .ok_or_else(EmqxError::client_not_found)?;
    let list: Vec<Value> = view
        .subscriptions
        .iter()
        .map(|(topic, o)| subscription_object(&clientid, topic, o))
        .collect();
    Ok(Json(list).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscribeBody {
    topic: String,
    #[serde(default)]
    qos: u8,
    #[serde(default)]
    nl: u8,
    #[serde(default)]
    rap: u8,
    #[serde(default)]
    rh: u8,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UnsubscribeBody {
    topic: String,
}

fn check_subscription(
    body: &SubscribeBody,
    protocol: ProtocolVersion,
) -> Result<SubscriptionOptions, EmqxError> {
    if !rumqttd::protocol::valid_filter(&body.topic) {
        return Err(EmqxError::invalid(format!(
            "topic {:?} is not a valid topic filter",
            body.topic
        )));
    }
    if body.qos > 2 {
        return Err(EmqxError::invalid(format!(
            "qos must be 0, 1 or 2, not {}",
            body.qos
        )));
    }
    if body.nl > 1 || body.rap > 1 {
        return Err(EmqxError::invalid("nl and rap must be 0 or 1"));
    }
    if body.rh > 2 {
        return Err(EmqxError::invalid("rh must be 0, 1 or 2"));
    }
    if body.nl == 1 && body.topic.starts_with("$share/") {
        return Err(EmqxError::invalid(
            "nl=1 is not allowed on a shared subscription ($share/...)",
        ));
    }
    if protocol == ProtocolVersion::V311 && (body.nl, body.rap, body.rh) != (0, 0, 0) {
        return Err(EmqxError::invalid(
            "nl, rap and rh are MQTT 5 subscription options; this client speaks MQTT 3.1.1",
        ));
    }
    Ok(SubscriptionOptions {
        qos: body.qos,
        nl: body.nl,
        rap: body.rap,
        rh: body.rh,
    })
}

async fn do_subscribe(
    ok: &Authorized,
    clientid: &str,
    bodies: Vec<SubscribeBody>,
) -> Result<Vec<Value>, EmqxError> {
    use rumqttd::protocol::{Filter, Packet, RetainForwardRule, Subscribe};
    let session = ok
        .broker
        .sessions
        .get(clientid)
        .ok_or_else(EmqxError::client_not_found)?;
    if bodies.is_empty() {
        return Err(EmqxError::bad_request("no subscriptions given"));
    }
    let mut filters = Vec::new();
    for body in &bodies {
        let options = check_subscription(body, session.info.protocol)?;
        filters.push((body.topic.clone(), options));
    }
    let packet_id = session.next_packet_id();
    let packet = Packet::Subscribe(
        Subscribe {
            pkid: packet_id,
            filters: filters
                .iter()
                .map(|(topic, o)| Filter {
                    path: topic.clone(),
                    qos: rumqttd::protocol::qos(o.qos)
                        .unwrap_or(rumqttd::protocol::QoS::AtMostOnce),
                    nolocal: o.nl == 1,
                    preserve_retain: o.rap == 1,
                    retain_forward_rule: match o.rh {
                        1 => RetainForwardRule::OnNewSubscribe,
                        2 => RetainForwardRule::Never,
                        _ => RetainForwardRule::OnEverySubscribe,
                    },
                })
                .collect(),
        },
        None,
    );
    let codes = send_for_client(
        &session,
        packet_id,
        packet,
        Awaited::Subscribe(filters.clone()),
    )
    .await?;
    let mut out = Vec::new();
    for (i, (topic, options)) in filters.iter().enumerate() {
        match codes.get(i) {
            Some(code) if *code < 0x80 => {
                let granted = SubscriptionOptions {
                    qos: *code,
                    ..*options
                };
                out.push(subscription_object(clientid, topic, &granted));
            }
            code => {
                return Err(EmqxError::bad_request(format!(
                    "the broker refused the subscription to {topic} (reason code {})",
                    code.map_or("none".to_string(), |c| format!("0x{c:02X}"))
                )));
            }
        }
    }
    Ok(out)
}

async fn do_unsubscribe(
    ok: &Authorized,
    clientid: &str,
    topics: Vec<String>,
) -> Result<(), EmqxError> {
    use rumqttd::protocol::{Packet, Unsubscribe};
    let session = ok
        .broker
        .sessions
        .get(clientid)
        .ok_or_else(EmqxError::client_not_found)?;
    if topics.is_empty() {
        return Err(EmqxError::bad_request("no topics given"));
    }
    if let Some(bad) = topics.iter().find(|t| !rumqttd::protocol::valid_filter(t)) {
        return Err(EmqxError::invalid(format!(
            "topic {bad:?} is not a valid topic filter"
        )));
    }
    let packet_id = session.next_packet_id();
    let packet = Packet::Unsubscribe(
        Unsubscribe {
            pkid: packet_id,
            filters: topics.clone(),
        },
        None,
    );
    send_for_client(&session, packet_id, packet, Awaited::Unsubscribe(topics)).await?;
    Ok(())
}

/// Encodes `packet` for the client's protocol, sends it to the broker on
/// the client's connection and returns the acknowledgement's codes.
async fn send_for_client(
    session: &Session,
    packet_id: u16,
    packet: rumqttd::protocol::Packet,
    awaited: Awaited,
) -> Result<Vec<u8>, EmqxError> {
    use rumqttd::protocol::{Protocol, v4::V4, v5::V5};
    let mut frame = bytes::BytesMut::new();
    let encoded = match session.info.protocol {
        ProtocolVersion::V311 => V4.write(packet, &mut frame),
        ProtocolVersion::V5 => V5.write(packet, &mut frame),
    };
    encoded.map_err(|e| EmqxError::bad_request(format!("cannot encode the request: {e}")))?;
    session
        .inject(packet_id, frame.to_vec(), awaited)
        .await
        .map_err(|e| match e {
            InjectError::Disconnected => EmqxError::client_not_found(),
            InjectError::NoAcknowledgement => EmqxError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "SERVICE_UNAVAILABLE",
                format!("{e}; try again"),
            ),
        })
}

fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, EmqxError> {
    serde_json::from_slice(body)
        .map_err(|e| EmqxError::bad_request(format!("malformed JSON body: {e}")))
}

async fn subscribe(
    State(state): State<Arc<RpcState>>,
    Path((instance_id, clientid)): Path<(String, String)>,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
    body: axum::body::Bytes,
) -> Result<Response, EmqxError> {
    let ok = authorize(
        &state,
        &headers,
        peer_of(&extensions),
        &instance_id,
        "mq:ManageClientSubscriptions",
    )?;
    let body: SubscribeBody = json_body(&body)?;
    let mut out = do_subscribe(&ok, &clientid, vec![body]).await?;
    Ok(Json(out.remove(0)).into_response())
}

async fn subscribe_bulk(
    State(state): State<Arc<RpcState>>,
    Path((instance_id, clientid)): Path<(String, String)>,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
    body: axum::body::Bytes,
) -> Result<Response, EmqxError> {
    let ok = authorize(
        &state,
        &headers,
        peer_of(&extensions),
        &instance_id,
        "mq:ManageClientSubscriptions",
    )?;
    let bodies: Vec<SubscribeBody> = json_body(&body)?;
    Ok(Json(do_subscribe(&ok, &clientid, bodies).await?).into_response())
}

async fn unsubscribe(
    State(state): State<Arc<RpcState>>,
    Path((instance_id, clientid)): Path<(String, String)>,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
    body: axum::body::Bytes,
) -> Result<Response, EmqxError> {
    let ok = authorize(
        &state,
        &headers,
        peer_of(&extensions),
        &instance_id,
        "mq:ManageClientSubscriptions",
    )?;
    let body: UnsubscribeBody = json_body(&body)?;
    do_unsubscribe(&ok, &clientid, vec![body.topic]).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn unsubscribe_bulk(
    State(state): State<Arc<RpcState>>,
    Path((instance_id, clientid)): Path<(String, String)>,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
    body: axum::body::Bytes,
) -> Result<Response, EmqxError> {
    let ok = authorize(
        &state,
        &headers,
        peer_of(&extensions),
        &instance_id,
        "mq:ManageClientSubscriptions",
    )?;
    let bodies: Vec<UnsubscribeBody> = json_body(&body)?;
    do_unsubscribe(
        &ok,
        &clientid,
        bodies.into_iter().map(|b| b.topic).collect(),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_queries_parse_and_refuse_bad_values() {
        let q = parse_list_query(Some("clientid=a&clientid=b&_page=2&_limit=5&like_username=x&fields=clientid,connected&_gte_created_at=1700000000000")).unwrap();
        assert_eq!((q.page, q.limit, q.clientids.len()), (2, 5, 2));
        assert!(q.fuzzy());
        assert_eq!(q.fields.unwrap(), ["clientid", "connected"]);
        assert!(q.gte_created_at.is_some());
        for (raw, needle) in [
            ("limit=0", "limit"),
            ("page=0", "page"),
            ("page=x", "integer"),
            (
                "ip_address=127.0.0.1:8080",
                "the ip_address parameter expected type is ip, but the value is 127.0.0.1:8080",
            ),
            ("fields=clientid,nope", "unknown field nope"),
            ("conn_state=maybe", "conn_state"),
            ("clean_start=yes", "boolean"),
            ("gte_connected_at=yesterday", "timestamp"),
        ] {
            let e = parse_list_query(Some(raw)).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{raw}");
            assert!(e.message.contains(needle), "{raw}: {}", e.message);
        }
    }
}
