//! RAM: Alibaba's policy language, evaluated the way Alibaba does.
//!
//! - [`policy`] reads a document strictly and compiles it once, at load;
//! - [`pattern`] is the `*`/`?` matcher (actions case-insensitive, resources
//!   case-sensitive);
//! - [`condition`] is the table of condition operators and keys;
//! - [`evaluate`] decides: any matching Deny is an **explicit deny**, else
//!   any matching Allow **allows**, else the default **implicit deny**; and
//!   says which statement of which policy decided.
//!
//! The system policies mqgate ships (`policies/*.json`) are built into the
//! binary and named without their `.json`.

pub mod condition;
pub mod pattern;
pub mod policy;

pub use condition::Context;
pub use policy::{Policy, PolicyError};

use serde::Serialize;
use std::sync::Arc;

/// The outcome of an evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum DecisionKind {
    Allow,
    ImplicitDeny,
    ExplicitDeny,
}

impl DecisionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionKind::Allow => "Allow",
            DecisionKind::ImplicitDeny => "ImplicitDeny",
            DecisionKind::ExplicitDeny => "ExplicitDeny",
        }
    }
}

/// A decision and the statement that made it (none for an implicit deny).
#[derive(Debug, Clone, Copy)]
pub struct Decision<'a> {
    pub kind: DecisionKind,
    pub policy: Option<&'a Policy>,
    pub statement: Option<usize>,
}

impl Decision<'_> {
    /// Which statement of which policy decided, in words.
    pub fn explain(&self) -> String {
        match (self.policy, self.statement) {
            (Some(policy), Some(i)) => format!(
                "decided by Statement[{i}] of {}: {}",
                policy.name,
                policy.statements[i].describe()
            ),
            _ => "no statement of any attached policy matched: denied by default".to_string(),
        }
    }
}

/// Evaluates a request against all of a user's policies.
pub fn evaluate<'a>(
    policies: &'a [Arc<Policy>],
    action: &str,
    resource: &str,
    context: &Context,
) -> Decision<'a> {
    let mut allowed: Option<(&'a Policy, usize)> = None;
    for policy in policies {
        for (i, statement) in policy.statements.iter().enumerate() {
            if !statement.matches(action, resource, context) {
                continue;
            }
            match statement.effect {
                policy::Effect::Deny => {
                    return Decision {
                        kind: DecisionKind::ExplicitDeny,
                        policy: Some(policy),
                        statement: Some(i),
                    };
                }
                policy::Effect::Allow => {
                    allowed.get_or_insert((policy, i));
                }
            }
        }
    }
    match allowed {
        Some((policy, i)) => Decision {
            kind: DecisionKind::Allow,
            policy: Some(policy),
            statement: Some(i),
        },
        None => Decision {
            kind: DecisionKind::ImplicitDeny,
            policy: None,
            statement: None,
        },
    }
}

/// The policies shipped in `policies/`, by name.
pub const SYSTEM_POLICIES: &[(&str, &str)] = &[
    (
        "AliyunMQFullAccess",
        include_str!("../../policies/AliyunMQFullAccess.json"),
    ),
    (
        "AliyunMQReadOnlyAccess",
        include_str!("../../policies/AliyunMQReadOnlyAccess.json"),
    ),
    (
        "ExampleAllButCloseConnection",
        include_str!("../../policies/ExampleAllButCloseConnection.json"),
    ),
    (
        "ExampleOfficeNetworkOnly",
        include_str!("../../policies/ExampleOfficeNetworkOnly.json"),
    ),
    (
        "ExampleOneInstanceOnly",
        include_str!("../../policies/ExampleOneInstanceOnly.json"),
    ),
    (
        "ExampleUntilDate",
        include_str!("../../policies/ExampleUntilDate.json"),
    ),
];

/// A shipped policy by name (`AliyunMQReadOnlyAccess` or
/// `AliyunMQReadOnlyAccess.json`).
pub fn system_policy(name: &str) -> Option<Result<Policy, PolicyError>> {
    let name = name.strip_suffix(".json").unwrap_or(name);
    SYSTEM_POLICIES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(n, text)| Policy::parse(n, text))
}

/// Loads a policy: a shipped one by name, else a file (relative paths from
/// `base_dir`, the configuration file's directory). Errors name the file.
pub fn load_policy(reference: &str, base_dir: &std::path::Path) -> Result<Policy, String> {
    if let Some(system) = system_policy(reference) {
        return system.map_err(|e| format!("system policy {reference}: {e}"));
    }
    let path = base_dir.join(reference);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "{}: cannot read the policy ({e}); give a file path or one of the system policies: {}",
            path.display(),
            SYSTEM_POLICIES
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| reference.to_string());
    Policy::parse(&name, &text).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_policy_is_valid_and_embedded() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".json"))
            .map(|n| n.trim_end_matches(".json").to_string())
            .collect();
        on_disk.sort();
        let embedded: Vec<String> = SYSTEM_POLICIES.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(on_disk, embedded, "policies/ and SYSTEM_POLICIES differ");
        for (name, _) in SYSTEM_POLICIES {
            system_policy(name).unwrap().unwrap();
        }
    }

    #[test]
    fn deny_wins_over_allow_across_policies() {
        let allow = Arc::new(system_policy("AliyunMQFullAccess").unwrap().unwrap());
        let deny_close = Arc::new(
            system_policy("ExampleAllButCloseConnection")
                .unwrap()
                .unwrap(),
        );
        let policies = vec![allow, deny_close];
        let ctx = Context::new();
        let arn = "acs:mq:cn-hangzhou:1:i";
        let d = evaluate(&policies, "mq:CloseConnection", arn, &ctx);
        assert_eq!(
            (d.kind, d.policy.unwrap().name.as_str(), d.statement),
            (
                DecisionKind::ExplicitDeny,
                "ExampleAllButCloseConnection",
                Some(1)
            )
        );
        let d = evaluate(&policies, "mq:MqttInstanceAccess", arn, &ctx);
        assert_eq!(
            (d.kind, d.policy.unwrap().name.as_str(), d.statement),
            (DecisionKind::Allow, "AliyunMQFullAccess", Some(0))
        );
        let d = evaluate(&[], "mq:MqttInstanceAccess", arn, &ctx);
        assert_eq!(d.kind, DecisionKind::ImplicitDeny);
        assert!(d.explain().contains("denied by default"));
    }
}
