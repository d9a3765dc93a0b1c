//! Changes to a bound connection's rights, acted on while it is connected:
//! a token-mode client is told about its tokens; any bound client loses the
//! subscriptions its rights no longer allow.

use super::End;
use crate::broker::InstanceBroker;
use crate::broker::codec;
use crate::broker::registry::{ProtocolVersion, Session};
use crate::broker::rights::TopicRights;
use crate::broker::tokens::{self as token_rules, TokenRights};
use std::time::Duration;
use tracing::{info, warn};

/// Runs beside the relay for the connection's life.
pub(super) async fn watch_rights(
    broker: &InstanceBroker,
    session: &Session,
    rights: &TopicRights,
) -> End {
    match rights {
        TopicRights::Tokens(tokens) => watch_tokens(broker, session, rights, tokens).await,
        TopicRights::Custom(_) => watch_rules(broker, session, rights).await,
    }
}

/// Removes the subscriptions `rights` no longer allow (the client hears
/// nothing: MQTT has no packet for it; it stops receiving there).
async fn drop_disallowed(broker: &InstanceBroker, session: &Session, rights: &TopicRights) {
    let disallowed: Vec<String> = session
        .subscriptions()
        .into_keys()
        .filter(|f| !(token_rules::is_notice_topic(f) && rights.tokens().is_some()))
        .filter(|f| rights.may_subscribe(f).is_err())
        .collect();
    if disallowed.is_empty() {
        return;
    }
    info!(client_id = %session.info.client_id, filters = ?disallowed, "subscriptions removed: the client's rights no longer allow them");
    if let Err(e) = broker
        .unsubscribe_for(&session.info.client_id, disallowed)
        .await
    {
        warn!(client_id = %session.info.client_id, error = %e, "could not remove subscriptions the client's rights no longer allow");
    }
}

/// Custom auth: after every change of the instance's rules. (A change
/// made while this runs is seen: the watch marks it unseen.)
async fn watch_rules(broker: &InstanceBroker, session: &Session, rights: &TopicRights) -> End {
    let mut changes = broker.rights_events();
    loop {
        if changes.changed().await.is_err() {
            // The broker is gone: so is this connection, soon.
            return std::future::pending().await;
        }
        drop_disallowed(broker, session, rights).await;
    }
}

/// Token mode: tells the client about its tokens as they near expiry,
/// expire or are revoked, and removes the subscriptions its rights no
/// longer cover.
async fn watch_tokens(
    broker: &InstanceBroker,
    session: &Session,
    rights: &TopicRights,
    tokens: &TokenRights,
) -> End {
    let mut revocations = broker.rights_events();
    let v5 = session.info.protocol == ProtocolVersion::V5;
    loop {
        let now = token_rules::now_ms();
        let (notices, next) = tokens.due(now);
        // The rights go first, then the client is told: once it reads the
        // notice, nothing more arrives on what the token allowed.
        let lost_reading = notices
            .iter()
            .any(|n| matches!(n, token_rules::Notice::Invalid { kind, .. } if kind.reads()));
        if lost_reading {
            drop_disallowed(broker, session, rights).await;
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
            _ = tokens.uploaded.notified() => {}
            changed = revocations.changed() => {
                if changed.is_err() {
                    // The broker is gone: so is this connection, soon.
                    return std::future::pending().await;
                }
            }
        }
    }
}
