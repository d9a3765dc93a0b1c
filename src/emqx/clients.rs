//! Clients: the client object and the list (with the EMQX list query),
//! built from an instance broker's sessions ([`super::calls`] serves them);
//! kicking one or many.

use super::EmqxError;
use super::auth::{Authorized, KickClients};
use super::query::parse_list_query;
use crate::broker::InstanceBroker;
use crate::broker::registry::{ClientView, ProtocolVersion};
use crate::state::AppState;
use axum::extract::{Path, State};
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

/// `GET /clients` from `broker`'s sessions: `{data, meta: {page, limit,
/// hasnext, count}}`.
pub(super) fn list_body(
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
