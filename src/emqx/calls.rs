//! The calls of this API that act on an instance's devices: the client
//! list, one client, its subscriptions, subscribing and unsubscribing for
//! it ([`ClientCall`]), and their HTTP handlers.
//!
//! Alone, a node answers them from its brokers ([`super::clients`],
//! [`super::subscriptions`]). In a cluster they are answered by the node
//! that serves the instance, which has every device of it: a node that
//! does not serve it relays the call to that node over the cluster's
//! command channel (after its own authentication, RAM check and QPS step),
//! and relays its status and body back.

use super::auth::{Authorized, ManageSubscriptions, ReadClients};
use super::clients::{client_object, list_body};
use super::json_body;
use super::query::parse_list_query;
use super::subscriptions::{
    SubscribeBody, UnsubscribeBody, subscribe_all, subscriptions_body, unsubscribe_all,
};
use super::{EmqxError, NODE};
use crate::broker::{Brokers, InstanceBroker};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::Arc;

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
            ClientCall::Subscriptions { clientid } => {
                ok(subscriptions_body(broker, clientid, node)?)
            }
            ClientCall::Subscribe {
                clientid,
                bodies,
                bulk,
            } => {
                let mut granted = subscribe_all(broker, clientid, bodies.clone(), node).await?;
                if *bulk {
                    ok(Value::Array(granted))
                } else {
                    ok(granted.remove(0))
                }
            }
            ClientCall::Unsubscribe { clientid, topics } => {
                unsubscribe_all(broker, clientid, topics.clone()).await?;
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

/// `GET /clients/{clientid}/subscriptions`.
pub async fn subscriptions(
    ok: Authorized<ReadClients>,
    State(state): State<Arc<AppState>>,
    Path((_, clientid)): Path<(String, String)>,
) -> Result<Response, EmqxError> {
    call(&state, &ok.broker, ClientCall::Subscriptions { clientid }).await
}

/// `POST /clients/{clientid}/subscribe`: 200 with the subscription.
pub async fn subscribe(
    ok: Authorized<ManageSubscriptions>,
    State(state): State<Arc<AppState>>,
    Path((_, clientid)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response, EmqxError> {
    let body: SubscribeBody = json_body(&body)?;
    let subscribe = ClientCall::Subscribe {
        clientid,
        bodies: vec![body],
        bulk: false,
    };
    call(&state, &ok.broker, subscribe).await
}

/// `POST /clients/{clientid}/subscribe/bulk`: 200 with the subscriptions.
pub async fn subscribe_bulk(
    ok: Authorized<ManageSubscriptions>,
    State(state): State<Arc<AppState>>,
    Path((_, clientid)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response, EmqxError> {
    let bodies: Vec<SubscribeBody> = json_body(&body)?;
    let subscribe = ClientCall::Subscribe {
        clientid,
        bodies,
        bulk: true,
    };
    call(&state, &ok.broker, subscribe).await
}

/// `POST /clients/{clientid}/unsubscribe`: 204.
pub async fn unsubscribe(
    ok: Authorized<ManageSubscriptions>,
    State(state): State<Arc<AppState>>,
    Path((_, clientid)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response, EmqxError> {
    let body: UnsubscribeBody = json_body(&body)?;
    let unsubscribe = ClientCall::Unsubscribe {
        clientid,
        topics: vec![body.topic],
    };
    call(&state, &ok.broker, unsubscribe).await
}

/// `POST /clients/{clientid}/unsubscribe/bulk`: 204.
pub async fn unsubscribe_bulk(
    ok: Authorized<ManageSubscriptions>,
    State(state): State<Arc<AppState>>,
    Path((_, clientid)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response, EmqxError> {
    let bodies: Vec<UnsubscribeBody> = json_body(&body)?;
    let unsubscribe = ClientCall::Unsubscribe {
        clientid,
        topics: bodies.into_iter().map(|b| b.topic).collect(),
    };
    call(&state, &ok.broker, unsubscribe).await
}
