//! The RPC endpoint at `/`: Alibaba's `Action=...&Signature=...` protocol.
//!
//! A call flows one way through small stages, each in the module named for
//! it and testable alone, called in order by `pipeline` (below):
//!
//! ```text
//! parse (rpc::parse) -> verify (rpc::verify, signature_v1, signature_v3)
//!   -> replay (replay) -> principal (principal) -> throttle (throttle)
//!   -> authorize (access) -> action (actions) -> meter (metering)
//!   -> respond (rpc::respond)
//! ```
//!
//! Every answer, success or error, carries a `RequestId`. This module and
//! its stages know HTTP, JSON and XML; the actions know none of them.

pub mod parse;
pub mod respond;
pub mod signature_v1;
pub mod signature_v3;
pub mod verify;

use crate::access::{self, LazyConditions, Resource};
use crate::actions::{self, Call};
use crate::api::{Action, Limit};
use crate::cluster::Nonce;
use crate::error::{ApiError, ErrorCode};
use crate::principal::Principal;
use crate::state::{Admitted, AppState};
use crate::throttle::Throttled;
use axum::extract::{Request, State};
use axum::http::header;
use axum::response::Response;
use parse::Format;
use std::net::IpAddr;
use std::sync::Arc;

/// What the endpoint learns about a call as the pipeline goes, for the
/// answer (its format), the log and the metrics.
struct CallRecord {
    request_id: respond::RequestId,
    /// The format errors are answered in: a guess from the raw request
    /// until the parse stage reads `Format`.
    format: Format,
    action: Option<Action>,
    peer: Option<IpAddr>,
    forwarded_for: Option<String>,
}

/// The axum handler for `/`, for the router driven without a socket
/// (tests): the peer's address from `ConnectInfo`, when there is one.
pub async fn endpoint(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0);
    answer(&state, request, peer).await
}

/// A call at `/` from `peer`, answered: what the HTTP listeners call for
/// every request at `/` (`crate::server`), and [`endpoint`] for the router.
pub async fn answer(
    state: &AppState,
    request: Request,
    peer: Option<std::net::SocketAddr>,
) -> Response {
    let started = std::time::Instant::now();
    // Only an error's answer reads it (as its HostId): copied to the stack.
    // A DNS name and a port fit; a longer Host is no host of this service.
    let host: Option<arrayvec::ArrayString<264>> = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| arrayvec::ArrayString::from(h).ok());
    let mut call = CallRecord {
        request_id: respond::RequestId::new(),
        format: parse::fallback_format(request.headers(), request.uri().query()),
        action: None,
        peer: peer.map(|p| p.ip()),
        forwarded_for: request
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    };
    let action_name = |call: &CallRecord| call.action.map_or("-", Action::name);
    match pipeline(state, request, &mut call).await {
        Ok(response) => {
            // A success has read its action.
            match call.action {
                Some(action) => state.metrics.record_ok(action, started.elapsed()),
                None => state.metrics.record("-", "OK", started.elapsed(), false),
            }
            response
        }
        Err(error) => {
            let request_id = &call.request_id;
            if let Some(cause) = &error.internal {
                tracing::error!(%request_id, %cause, "rpc call failed inside mqgate");
            }
            tracing::info!(%request_id, code = %error.code(), message = %error.loggable_message(), "rpc call refused");
            let throttled = matches!(
                error.kind,
                ErrorCode::SystemOverFlow | ErrorCode::SystemOverFlowServer
            );
            state.metrics.record(
                action_name(&call),
                &error.code(),
                started.elapsed(),
                throttled,
            );
            let host = host.as_ref().map_or("mqgate", |h| h.as_str());
            respond::error(&error, call.format, request_id, host)
        }
    }
}

/// The pipeline: every stage of a call, in order. `call` is filled in as
/// stages learn things, so that even an early error is answered in the
/// format the caller asked for.
async fn pipeline(
    state: &AppState,
    request: Request,
    call: &mut CallRecord,
) -> Result<Response, ApiError> {
    // Parse: parameters from the query and a form body, headers, limits.
    let incoming = parse::read_request(request).await?;
    call.format = incoming.format()?;

    // Verify: the signature (V1 or V3) against the key's secret.
    let directory = state.directory.current();
    let verified = verify::verify(incoming, &directory)?;

    // Replay: the timestamp within the window, the nonce never seen. The
    // call's one reading of the clock: its conditions and its action use
    // the same instant.
    let now = chrono::Utc::now();
    let ahead_of_the_clock = state.replay.check(
        &verified.user.access_key_id,
        verified.timestamp(),
        verified.nonce(),
        now,
    )?;
    if let Some(nonce) = ahead_of_the_clock {
        state.replay.persist(nonce).await?;
    }

    // Principal: who is calling (account, root key or RAM user), and what
    // they ask for.
    let principal = Principal::of(&verified.user);
    let action = Action::route(verified.version(), verified.action())?;
    call.action = Some(action);

    // Throttle: the account's calls per second for this action. In a
    // cluster, the cluster's bucket, and in the same round trip to Redis
    // the nonce is claimed for every node (`cluster`).
    let nonce = state.cluster.as_ref().map(|_| Nonce {
        access_key_id: &verified.user.access_key_id,
        nonce: verified.nonce(),
        remember: state.replay.remember_for(verified.timestamp(), now),
    });
    match state
        .admit(principal.account_id, Limit::Action(action), nonce)
        .await?
    {
        Admitted::Yes => {}
        Admitted::Throttled(refused) => {
            return Err(throttled(&refused, principal.account_id, action));
        }
        Admitted::Replayed => return Err(state.replay.nonce_used(verified.nonce())),
    }

    // Authorize: the action's own parameters name the resource; the
    // instance must be the caller's and RAM must allow the action on it.
    let request = Call::parse(action, &verified.params)?;
    let source_ip = call
        .peer
        .map(|peer| access::source_ip(&directory, peer, call.forwarded_for.as_deref()));
    let conditions = LazyConditions::new(principal.access_key_id, source_ip, now);
    // An account-scoped call (ListInstances, tags) is authorized on the
    // account as a whole and billed to no instance: the bill is per
    // instance, and Alibaba bills these calls to none.
    let (instance, broker, account_instances) = match request.resource() {
        Resource::Account => {
            let instances = access::authorize_account(
                &directory,
                &principal,
                action.ram_action(),
                &conditions,
            )?;
            (None, None, instances)
        }
        resource => {
            let instance = access::authorize(
                &directory,
                &principal,
                action.ram_action(),
                resource,
                &conditions,
            )?;
            let broker = state.brokers.instance(&instance.id).ok_or_else(|| {
                ApiError::internal(format!("instance {} has no running broker", instance.id))
            })?;
            (Some(instance), Some(broker), Vec::new())
        }
    };

    // Meter (quota): a billed call must fit in the instance's monthly
    // quota, counting the calls in flight.
    let admission = match (&instance, action.billed()) {
        (Some(instance), true) => Some(state.meter.admit(instance)?),
        _ => None,
    };

    // Action.
    let scope = match (&instance, &broker) {
        (Some(instance), Some(broker)) => actions::Scope::Instance { instance, broker },
        _ => actions::Scope::Account {
            instances: account_instances,
        },
    };
    let context = actions::Context {
        scope,
        meter: &state.meter,
        devices: &state.devices,
        traces: &state.traces,
        tracer: &state.tracer,
        principal: &principal,
        now: conditions.now(),
        cluster: state.cluster.as_deref(),
    };
    let reply = request.handle(&context).await?;

    // Meter (bill): the call is answered only once its transaction is
    // durable; a refused or failed call is not billed.
    if let Some(admission) = admission {
        state.meter.commit(admission, action.name()).await?;
    }

    // Respond: the answer in the caller's format, with its RequestId.
    respond::success(action, &reply, call.format, &call.request_id)
}

/// A call refused by flow control: `SystemOverFlow` (403, or 500 where the
/// action's row says so) with how long to wait, which the respond stage
/// sends as `x-acs-retry-after` (the Tea SDK then raises its
/// ThrottlingException) and `Retry-After`.
fn throttled(refused: &Throttled, account_id: &str, action: Action) -> ApiError {
    let mut error = ApiError::new(
        action.throttled(),
        format!(
            "An error occurred while processing your request. Please try again: account {account_id} is over its limit of {} {} calls per second (burst {}); retry after {} ms.",
            refused.rate,
            action.name(),
            refused.burst,
            refused.wait_ms()
        ),
    );
    error.retry_after_ms = Some(refused.wait_ms());
    error
}

/// Answer for paths other than `/` (and the EMQX API's).
pub async fn not_found() -> Response {
    let request_id = respond::new_request_id();
    respond::error(
        &ApiError::new(
            ErrorCode::InvalidActionNotFound,
            "Specified api is not found, please check your url and method: the RPC endpoint is at path /.",
        ),
        Format::Json,
        &request_id,
        "mqgate",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_throttled_call_answers_its_rows_status_with_the_wait() {
        let refused = Throttled {
            limit: Limit::Action(Action::BatchQuerySessionByClientIds),
            rate: 1,
            burst: 1,
            wait: Duration::from_micros(300),
        };
        let e = throttled(&refused, "a", Action::BatchQuerySessionByClientIds);
        assert_eq!((e.code().as_str(), e.status()), ("SystemOverFlow", 500));
        assert_eq!(e.retry_after_ms, Some(1));
        let e = throttled(&refused, "a", Action::QuerySessionByClientId);
        assert_eq!((e.code().as_str(), e.status()), ("SystemOverFlow", 403));
        assert!(e.message.contains("account a"), "{}", e.message);
    }
}
