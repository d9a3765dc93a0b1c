//! What a connection may publish and subscribe to, by login mode: the one
//! check the front layer makes on every PUBLISH and SUBSCRIBE of a client
//! whose login bounds its topics.
//!
//! - Token mode: the tokens it holds ([`TokenRights`]).
//! - Custom auth: the permission rules of its username and client id
//!   ([`CustomRights`], compiled per instance and replaced whole on every
//!   change, so each check reads the current rules without a lock).
//! - Signature and DeviceCredential logins have no [`TopicRights`]: every
//!   topic of their instance is open to them, as in ApsaraMQ, where RAM
//!   decides what an AccessKey may do.
//!
//! A refused SUBSCRIBE gets a failure code in its SUBACK (0x80 in 3.1.1,
//! 0x87 in 5); a refused PUBLISH closes a 3.1.1 connection and gets 0x87 in
//! MQTT 5 (see `front/to_broker.rs`).

use super::tokens::TokenRights;
use crate::devices::{Decision, SharedRules};
use std::sync::Arc;

/// The rules a custom-auth login is bound by.
#[derive(Debug)]
pub struct CustomRights {
    pub username: String,
    pub client_id: String,
    pub rules: SharedRules,
}

impl CustomRights {
    pub fn publish(&self, topic: &str) -> Decision {
        self.rules
            .load()
            .publish(&self.username, &self.client_id, topic)
    }

    pub fn subscribe(&self, filter: &str) -> Decision {
        self.rules
            .load()
            .subscribe(&self.username, &self.client_id, filter)
    }
}

/// The topics a connection is bound to, by how it logged in.
#[derive(Debug, Clone)]
pub enum TopicRights {
    Tokens(Arc<TokenRights>),
    Custom(Arc<CustomRights>),
}

impl TopicRights {
    /// May the client publish to `topic` now? `Err` says why not.
    pub fn may_publish(&self, topic: &str) -> Result<(), String> {
        match self {
            TopicRights::Tokens(tokens) if tokens.may_publish(topic) => Ok(()),
            TopicRights::Tokens(_) => Err(format!(
                "not authorized to publish to {topic:?}: no valid W or RW token covers it"
            )),
            TopicRights::Custom(custom) => match custom.publish(topic) {
                Decision::Allowed => Ok(()),
                Decision::Denied => Err(format!(
                    "not authorized to publish to {topic:?}: a DENY permission matches it"
                )),
                Decision::NotAllowed => Err(format!(
                    "not authorized to publish to {topic:?}: no ALLOW permission (PUB or PUB_SUB) matches it"
                )),
            },
        }
    }

    /// May the client subscribe to `filter` now? `Err` says why not.
    pub fn may_subscribe(&self, filter: &str) -> Result<(), String> {
        match self {
            TopicRights::Tokens(tokens) if tokens.may_subscribe(filter) => Ok(()),
            TopicRights::Tokens(_) => Err(format!(
                "not authorized to subscribe to {filter:?}: no valid R or RW token covers it"
            )),
            TopicRights::Custom(custom) => match custom.subscribe(filter) {
                Decision::Allowed => Ok(()),
                Decision::Denied => Err(format!(
                    "not authorized to subscribe to {filter:?}: it could match a topic a DENY permission matches; subscribe to narrower filters"
                )),
                Decision::NotAllowed => Err(format!(
                    "not authorized to subscribe to {filter:?}: no ALLOW permission (SUB or PUB_SUB) covers it"
                )),
            },
        }
    }

    /// The tokens, for a token-mode login.
    pub fn tokens(&self) -> Option<&Arc<TokenRights>> {
        match self {
            TopicRights::Tokens(tokens) => Some(tokens),
            TopicRights::Custom(_) => None,
        }
    }
}
