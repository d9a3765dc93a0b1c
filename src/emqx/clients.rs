//! Clients: list (with the EMQX list query), get one, kick one or many.
//!
//! In a cluster the calls on an instance's devices (the list, one client,
//! its subscriptions, subscribing and unsubscribing for it) are answered by
//! the node that serves the instance, which has every device of it
//! ([`ClientCall`]): a node that does not serve it relays the call to that
//! node over the cluster's command channel, and its answer back.

use super::auth::{Authorized, KickClients, ReadClients};
use super::query::parse_list_query;
use super::subscriptions::SubscribeBody;
use super::{EmqxError, NODE};
use crate::broker::registry::{ClientView, ProtocolVersion};
use crate::broker::{Brokers, InstanceBroker};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// Why a kick through this API ended a connection (the MQTT 5 reason
/// string).
const KICKED: &str = "kicked out through the client management API";

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, false)
}

/// The client object, all fields.
pub fn client_object(view: &ClientView, default_expiry: u64, node: &str) -> Map<String, Value> {
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
    put("node", json!(node));
    object
}

/// A call of this API that acts on an instance's devices, as the node that
/// serves the instance answers it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "call", rename_all = "snake_case")]
pub enum ClientCall {
    /// `GET /clients` with its raw query.
    List { query: Option<String> },
    /// `GET /clients/{clientid}`.
    Client {
        clientid: String,
        query: Option<String>,
    },
    /// `GET /clients/{clientid}/subscriptions`.
    Subscriptions { clientid: String },
    /// `POST /clients/{clientid}/subscribe` (`bulk`: `/subscribe/bulk`).
    Subscribe {
        clientid: String,
        bodies: Vec<SubscribeBody>,
        bulk: bool,
    },
    /// `POST /clients/{clientid}/unsubscribe` and `/unsubscribe/bulk`.
    Unsubscribe {
        clientid: String,
        topics: Vec<String>,
    },
}

impl ClientCall {
    /// The answer from `broker`'s own sessions, on node `node` (the name
    /// client objects show): a status and a body (`Null` for 204).
    pub async fn answer(
        &self,
        broker: &InstanceBroker,
        session_expiry: u64,
        node: &str,
    ) -> Result<(StatusCode, Value), EmqxError> {
        let ok = |body| Ok((StatusCode::OK, body));
        match self {
            ClientCall::List { query } => {
                ok(list_body(broker, session_expiry, query.as_deref(), node)?)
            }
            ClientCall::Client { clientid, query } => {
                let q = parse_list_query(query.as_deref())?;
                let view = broker
                    .sessions
                    .view(clientid)
                    .ok_or_else(EmqxError::client_not_found)?;
                ok(q.select(client_object(&view, session_expiry, node)))
            }
            ClientCall::Subscriptions { clientid } => ok(super::subscriptions::subscriptions_body(
                broker, clientid, node,
            )?),
            ClientCall::Subscribe {
                clientid,
                bodies,
                bulk,
            } => {
                let mut granted =
                    super::subscriptions::subscribe_all(broker, clientid, bodies.clone(), node)
                        .await?;
                if *bulk {
                    ok(Value::Array(granted))
                } else {
                    ok(granted.remove(0))
                }
            }
            ClientCall::Unsubscribe { clientid, topics } => {
                super::subscriptions::unsubscribe_all(broker, clientid, topics.clone()).await?;
                Ok((StatusCode::NO_CONTENT, Value::Null))
            }
        }
    }
}

/// Answers a call another node of the cluster relayed (`{instance_id,
/// call}`): its status and body.
pub async fn answer_relayed(
    brokers: &Brokers,
    session_expiry: u64,
    node: &str,
    request: Value,
) -> (u16, Value) {
    #[derive(serde::Deserialize)]
    struct Relayed {
        instance_id: String,
        call: ClientCall,
    }
    let relayed = match serde_json::from_value::<Relayed>(request) {
        Ok(relayed) => relayed,
        Err(e) => {
            let e = EmqxError::bad_request(format!("a call this node does not understand: {e}"));
            return (
                e.status.as_u16(),
                json!({"code": e.code, "message": e.message}),
            );
        }
    };
    let answered = match brokers.instance(&relayed.instance_id) {
        Some(broker) => relayed.call.answer(&broker, session_expiry, node).await,
        None => Err(EmqxError::unavailable(
            "the instance has no broker on the node asked",
        )),
    };
    match answered {
        Ok((status, body)) => (status.as_u16(), body),
        Err(e) => (
            e.status.as_u16(),
            json!({"code": e.code, "message": e.message}),
        ),
    }
}

/// Answers `call` here, or in a cluster on the node that serves the
/// instance (relaying its status and body).
pub async fn call(
    state: &AppState,
    broker: &InstanceBroker,
    call: ClientCall,
) -> Result<Response, EmqxError> {
    use crate::broker::{Place, Placement};
    let (status, body) = match state
        .cluster
        .as_ref()
        .map(|c| (c, c.place(&broker.instance_id)))
    {
        None | Some((_, Place::Here)) => {
            call.answer(broker, state.session_expiry_secs, &node_name(state))
                .await?
        }
        Some((cluster, Place::There { node, .. })) => {
            let request = json!({"instance_id": broker.instance_id, "call": call});
            let (status, body) = cluster.call_on(&node, request).await.map_err(|cause| {
                tracing::warn!(error = %cause, %node, "EMQX API: the instance's node did not answer");
                EmqxError::unavailable(format!(
                    "node {node}, which serves the instance, did not answer in time; try again later"
                ))
            })?;
            (
                StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
                body,
            )
        }
        Some((_, Place::Unplaced)) => {
            return Err(EmqxError::unavailable(
                "the instance is being taken over by another node of the cluster; try again in a few seconds",
            ));
        }
    };
    Ok(if status == StatusCode::NO_CONTENT {
        status.into_response()
    } else {
        (status, Json(body)).into_response()
    })
}

/// The name client objects show for this node: `mqgate@local` alone,
/// `mqgate@{node_id}` in a cluster.
pub fn node_name(state: &AppState) -> String {
    match &state.cluster {
        Some(cluster) => cluster_node_name(cluster.node_id()),
        None => NODE.to_string(),
    }
}

/// The name client objects show for cluster node `node_id`.
pub fn cluster_node_name(node_id: &str) -> String {
    format!("mqgate@{node_id}")
}

/// `GET /clients` from `broker`'s sessions: `{data, meta: {page, limit,
/// hasnext, count}}`.
fn list_body(
    broker: &InstanceBroker,
    session_expiry: u64,
    query: Option<&str>,
    node: &str,
) -> Result<Value, EmqxError> {
    let q = parse_list_query(query)?;
    let mut views: Vec<ClientView> = broker
        .sessions
        .views()
        .into_iter()
        .filter(|v| q.matches(v, node))
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
        .map(|v| q.select(client_object(v, session_expiry, node)))
        .collect();
    let hasnext = start.saturating_add(q.limit) < count;
    let mut meta = json!({"page": q.page, "limit": q.limit, "hasnext": hasnext});
    if !q.fuzzy() {
        meta["count"] = json!(count);
    }
    Ok(json!({"data": data, "meta": meta}))
}

/// `GET /clients`: `{data, meta: {page, limit, hasnext, count}}`.
pub async fn list(
    ok: Authorized<ReadClients>,
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
) -> Result<Response, EmqxError> {
    call(&state, &ok.broker, ClientCall::List { query }).await
}

/// `GET /clients/{clientid}`: the client object (`fields` selects).
pub async fn get(
    ok: Authorized<ReadClients>,
    State(state): State<Arc<AppState>>,
    Path((_, clientid)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, EmqxError> {
    call(&state, &ok.broker, ClientCall::Client { clientid, query }).await
}

/// `DELETE /clients/{clientid}`: 204 once the connection is gone (in a
/// cluster, once the node that holds it took the request).
pub async fn kick(
    ok: Authorized<KickClients>,
    State(state): State<Arc<AppState>>,
    Path((_, clientid)): Path<(String, String)>,
) -> Result<Response, EmqxError> {
    let connected_here = ok.broker.is_online(&clientid);
    let kicked_here = ok.broker.kick(&clientid, KICKED).await;
    let kicked_elsewhere = !connected_here && kick_elsewhere(&state, &ok, &clientid).await?;
    if !kicked_here && !kicked_elsewhere {
        return Err(EmqxError::client_not_found());
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// In a cluster: closes `clientid`'s connection on the other node that
/// holds it; false if none does (or there is no cluster).
async fn kick_elsewhere(
    state: &AppState,
    ok: &Authorized<KickClients>,
    clientid: &str,
) -> Result<bool, EmqxError> {
    let Some(cluster) = &state.cluster else {
        return Ok(false);
    };
    cluster
        .kick_elsewhere(&ok.broker.instance_id, clientid, KICKED)
        .await
        .map_err(|cause| {
            tracing::warn!(error = %cause, "EMQX kick: the cluster did not answer");
            EmqxError::unavailable(
                "the cluster's other nodes, or the store this node shares with them, did not answer in time; try again later",
            )
        })
}

/// `POST /clients/kickout/bulk` with a JSON array of client ids: 204.
pub async fn kick_bulk(
    ok: Authorized<KickClients>,
    State(state): State<Arc<AppState>>,
    body: axum::body::Bytes,
) -> Result<Response, EmqxError> {
    let clientids: Vec<String> = serde_json::from_slice(&body).map_err(|e| {
        EmqxError::bad_request(format!("the body must be a JSON array of client ids: {e}"))
    })?;
    // Each kick is bounded by the kick grace period; unknown ids are
    // skipped, as EMQX does.
    for id in &clientids {
        let connected_here = ok.broker.is_online(id);
        ok.broker.kick(id, KICKED).await;
        if !connected_here {
            kick_elsewhere(&state, &ok, id).await?;
        }
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
