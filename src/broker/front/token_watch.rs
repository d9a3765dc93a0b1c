//! The token events of a token-mode connection, told to its client.

use super::End;
use crate::broker::InstanceBroker;
use crate::broker::codec;
use crate::broker::registry::{ProtocolVersion, Session};
use crate::broker::tokens::{self as token_rules, TokenRights};
use std::time::Duration;
use tracing::{info, warn};

/// Tells a token-mode client about its tokens as they near expiry, expire
/// or are revoked, and removes the subscriptions its rights no longer
/// cover. Runs beside the relay for the connection's life.
pub(super) async fn watch_tokens(
    broker: &InstanceBroker,
    session: &Session,
    rights: &TokenRights,
) -> End {
    let mut revocations = broker.token_events();
    let v5 = session.info.protocol == ProtocolVersion::V5;
    loop {
        let now = token_rules::now_ms();
        let (notices, next) = rights.due(now);
        // The rights go first, then the client is told: once it reads the
        // notice, nothing more arrives on what the token allowed.
        let lost_reading = notices
            .iter()
            .any(|n| matches!(n, token_rules::Notice::Invalid { kind, .. } if kind.reads()));
        if lost_reading {
            let uncovered: Vec<String> = session
                .subscriptions()
                .into_keys()
                .filter(|f| !rights.may_subscribe(f))
                .collect();
            if !uncovered.is_empty()
                && let Err(e) = broker
                    .unsubscribe_for(&session.info.client_id, uncovered)
                    .await
            {
                warn!(client_id = %session.info.client_id, error = %e, "could not remove subscriptions of an ended token");
            }
        }
        for notice in &notices {
            info!(client_id = %session.info.client_id, ?notice, "token notice");
            let (topic, payload) = notice.message();
            session
                .tell_client(codec::publish_qos0(v5, topic, payload.as_bytes()))
                .await;
        }
        let wait = match next {
            Some(at) => Duration::from_millis((at - now).clamp(0, i64::MAX) as u64),
            None => Duration::from_secs(3600),
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = rights.uploaded.notified() => {}
            changed = revocations.changed() => {
                if changed.is_err() {
                    // The broker is gone: so is this connection, soon.
                    return std::future::pending().await;
                }
            }
        }
    }
}
