//! Custom-auth topic permissions, compiled for the front layer.
//!
//! A rule (AddCustomAuthPermission) belongs to an identity — a username
//! (`USER`) or a client id (`CLIENT`) — and says whether it may (`ALLOW`) or
//! may not (`DENY`) publish (`PUB`), subscribe (`SUB`) or both (`PUB_SUB`)
//! on a topic filter (MQTT wildcards allowed). A custom-auth connection is
//! bound by the rules of its username and of its client id together:
//!
//! - **Nothing is allowed by default**: a PUBLISH needs an ALLOW rule that
//!   matches its topic, a SUBSCRIBE an ALLOW rule whose filter covers the
//!   whole requested filter (`b/#` covers `b/x/+`; `b/+` does not cover
//!   `b/#`).
//! - **DENY wins over ALLOW**: a PUBLISH whose topic a DENY rule matches is
//!   refused; so is a SUBSCRIBE whose filter could match a topic a DENY rule
//!   matches (`a/#` with `a/secret` denied), because a subscription cannot
//!   take back a delivery once granted. The device subscribes to narrower
//!   filters instead.
//!
//! Each identity's rules are compiled into four topic tries (publish and
//! subscribe, allow and deny); an instance's identities form one immutable
//! [`InstanceRules`] that a change replaces whole ([`SharedRules`] is an
//! `ArcSwap`): a check loads the current snapshot without a lock, so
//! publishers never contend with each other or with a change.

use super::topics::{SplitFilter, TopicSet};
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::Arc;

/// Whose rule it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IdentityType {
    /// A username: every connection that logs in with it.
    User,
    /// A client id.
    Client,
}

impl IdentityType {
    pub fn label(self) -> &'static str {
        match self {
            IdentityType::User => "USER",
            IdentityType::Client => "CLIENT",
        }
    }

    pub fn from_label(label: &str) -> Option<IdentityType> {
        match label {
            "USER" => Some(IdentityType::User),
            "CLIENT" => Some(IdentityType::Client),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

impl Effect {
    pub fn label(self) -> &'static str {
        match self {
            Effect::Allow => "ALLOW",
            Effect::Deny => "DENY",
        }
    }

    pub fn from_label(label: &str) -> Option<Effect> {
        match label {
            "ALLOW" => Some(Effect::Allow),
            "DENY" => Some(Effect::Deny),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PermitAction {
    Pub,
    Sub,
    PubSub,
}

impl PermitAction {
    pub fn label(self) -> &'static str {
        match self {
            PermitAction::Pub => "PUB",
            PermitAction::Sub => "SUB",
            PermitAction::PubSub => "PUB_SUB",
        }
    }

    pub fn from_label(label: &str) -> Option<PermitAction> {
        match label {
            "PUB" => Some(PermitAction::Pub),
            "SUB" => Some(PermitAction::Sub),
            "PUB_SUB" => Some(PermitAction::PubSub),
            _ => None,
        }
    }

    fn publishes(self) -> bool {
        matches!(self, PermitAction::Pub | PermitAction::PubSub)
    }

    fn subscribes(self) -> bool {
        matches!(self, PermitAction::Sub | PermitAction::PubSub)
    }
}

/// One permission rule of an identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub topic: String,
    pub effect: Effect,
    pub action: PermitAction,
}

/// One identity's rules, compiled.
#[derive(Debug, Default)]
pub struct IdentityRules {
    publish_allow: TopicSet,
    publish_deny: TopicSet,
    subscribe_allow: TopicSet,
    subscribe_deny: TopicSet,
}

impl IdentityRules {
    /// Compiles rules whose topics are valid filters (the API checks them
    /// before they are stored); an invalid one is left out.
    pub fn compile<'a>(rules: impl IntoIterator<Item = &'a Rule>) -> IdentityRules {
        let mut lists: [Vec<&str>; 4] = Default::default();
        for rule in rules {
            let deny = usize::from(rule.effect == Effect::Deny);
            if rule.action.publishes() {
                lists[deny].push(&rule.topic);
            }
            if rule.action.subscribes() {
                lists[2 + deny].push(&rule.topic);
            }
        }
        let compile = |list: &[&str]| {
            let valid = list
                .iter()
                .filter(|t| super::topics::check_filter(t).is_ok());
            TopicSet::new(valid.copied()).unwrap_or_default()
        };
        IdentityRules {
            publish_allow: compile(&lists[0]),
            publish_deny: compile(&lists[1]),
            subscribe_allow: compile(&lists[2]),
            subscribe_deny: compile(&lists[3]),
        }
    }
}

/// What one check found: allowed, or which kind of rule refused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// A DENY rule of the username or the client id matches.
    Denied,
    /// No ALLOW rule matches (nothing is allowed by default).
    NotAllowed,
}

impl Decision {
    pub fn allowed(self) -> bool {
        self == Decision::Allowed
    }
}

/// Every identity's rules in one instance: one immutable snapshot.
#[derive(Debug, Default, Clone)]
pub struct InstanceRules {
    users: HashMap<String, Arc<IdentityRules>>,
    clients: HashMap<String, Arc<IdentityRules>>,
}

/// An instance's current rules, replaced whole on every change.
pub type SharedRules = Arc<ArcSwap<InstanceRules>>;

impl InstanceRules {
    /// These rules with one identity's replaced (`None`: it has none left).
    pub fn with_identity(
        &self,
        kind: IdentityType,
        identity: &str,
        rules: Option<IdentityRules>,
    ) -> InstanceRules {
        let mut next = self.clone();
        let map = match kind {
            IdentityType::User => &mut next.users,
            IdentityType::Client => &mut next.clients,
        };
        match rules {
            Some(rules) => {
                map.insert(identity.to_string(), Arc::new(rules));
            }
            None => {
                map.remove(identity);
            }
        }
        next
    }

    /// Adds (or replaces) one identity's rules in place, for building a
    /// snapshot at load.
    pub fn insert(&mut self, kind: IdentityType, identity: &str, rules: IdentityRules) {
        let map = match kind {
            IdentityType::User => &mut self.users,
            IdentityType::Client => &mut self.clients,
        };
        map.insert(identity.to_string(), Arc::new(rules));
    }

    fn of(&self, username: &str, client_id: &str) -> [Option<&IdentityRules>; 2] {
        [
            self.users.get(username).map(Arc::as_ref),
            self.clients.get(client_id).map(Arc::as_ref),
        ]
    }

    /// May a connection with this username and client id publish to
    /// `topic`?
    pub fn publish(&self, username: &str, client_id: &str, topic: &str) -> Decision {
        let holders = self.of(username, client_id);
        let holders = holders.iter().flatten();
        if holders.clone().any(|r| r.publish_deny.allows_topic(topic)) {
            Decision::Denied
        } else if holders.clone().any(|r| r.publish_allow.allows_topic(topic)) {
            Decision::Allowed
        } else {
            Decision::NotAllowed
        }
    }

    /// May a connection with this username and client id subscribe to
    /// `filter`? (A malformed filter is not allowed.)
    pub fn subscribe(&self, username: &str, client_id: &str, filter: &str) -> Decision {
        let Ok(filter) = SplitFilter::new(filter) else {
            return Decision::NotAllowed;
        };
        let holders = self.of(username, client_id);
        let holders = holders.iter().flatten();
        if holders.clone().any(|r| r.subscribe_deny.overlaps(&filter)) {
            Decision::Denied
        } else if holders.clone().any(|r| r.subscribe_allow.covers(&filter)) {
            Decision::Allowed
        } else {
            Decision::NotAllowed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(topic: &str, effect: Effect, action: PermitAction) -> Rule {
        Rule {
            topic: topic.into(),
            effect,
            action,
        }
    }

    fn rules() -> InstanceRules {
        let device = [
            rule("a/+", Effect::Allow, PermitAction::Pub),
            rule("a/secret", Effect::Deny, PermitAction::PubSub),
            rule("b/#", Effect::Allow, PermitAction::Sub),
        ];
        let client = [rule("c/own", Effect::Allow, PermitAction::PubSub)];
        InstanceRules::default()
            .with_identity(
                IdentityType::User,
                "dev",
                Some(IdentityRules::compile(&device)),
            )
            .with_identity(
                IdentityType::Client,
                "GID_x@@@1",
                Some(IdentityRules::compile(&client)),
            )
    }

    #[test]
    fn only_what_a_rule_allows_and_no_rule_denies() {
        let r = rules();
        assert_eq!(r.publish("dev", "other", "a/x"), Decision::Allowed);
        assert_eq!(r.publish("dev", "other", "a/secret"), Decision::Denied);
        assert_eq!(r.publish("dev", "other", "a/x/y"), Decision::NotAllowed);
        assert_eq!(r.publish("dev", "other", "b/x"), Decision::NotAllowed);
        assert_eq!(r.subscribe("dev", "other", "b/#"), Decision::Allowed);
        assert_eq!(r.subscribe("dev", "other", "b/x/+"), Decision::Allowed);
        assert_eq!(r.subscribe("dev", "other", "a/x"), Decision::NotAllowed);
        // A filter that could reach a denied topic is refused whole.
        assert_eq!(r.subscribe("dev", "other", "a/+"), Decision::Denied);
        assert_eq!(r.subscribe("dev", "other", "#"), Decision::Denied);
    }

    #[test]
    fn the_username_and_the_client_id_rules_both_apply() {
        let r = rules();
        assert!(r.publish("dev", "GID_x@@@1", "c/own").allowed());
        assert!(r.publish("dev", "GID_x@@@1", "a/x").allowed());
        assert!(!r.publish("dev", "GID_x@@@2", "c/own").allowed());
        assert!(!r.publish("other", "GID_x@@@2", "a/x").allowed());
        // Nothing is allowed to an identity without rules.
        assert_eq!(r.subscribe("nobody", "none", "x"), Decision::NotAllowed);
    }

    #[test]
    fn replacing_an_identity_leaves_the_old_snapshot_as_it_was() {
        let before = rules();
        let after = before.with_identity(IdentityType::User, "dev", None);
        assert!(before.publish("dev", "c", "a/x").allowed());
        assert!(!after.publish("dev", "c", "a/x").allowed());
    }

    #[test]
    fn labels_read_back() {
        for kind in [IdentityType::User, IdentityType::Client] {
            assert_eq!(IdentityType::from_label(kind.label()), Some(kind));
        }
        for effect in [Effect::Allow, Effect::Deny] {
            assert_eq!(Effect::from_label(effect.label()), Some(effect));
        }
        for action in [PermitAction::Pub, PermitAction::Sub, PermitAction::PubSub] {
            assert_eq!(PermitAction::from_label(action.label()), Some(action));
        }
        assert_eq!(PermitAction::from_label("pub"), None);
    }
}
