//! A RAM policy document, read strictly and compiled once at load: every
//! element, operator, key and value is checked here, so evaluation cannot
//! meet anything it does not understand.

use super::condition::{Condition, Context};
use super::pattern::Pattern;
use serde_json::Value;
use std::fmt;

/// RAM's limit on a policy document.
pub const MAX_POLICY_BYTES: usize = 6144;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

/// `Action`/`NotAction` or `Resource`/`NotResource`: patterns, and whether
/// the element lists what matches or what does not.
#[derive(Debug, Clone)]
pub struct PatternSet {
    pub negated: bool,
    pub patterns: Vec<Pattern>,
}

impl PatternSet {
    fn matches(&self, value: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(value)) != self.negated
    }

    fn describe(&self, element: &str) -> String {
        let list: Vec<&str> = self.patterns.iter().map(|p| p.source.as_str()).collect();
        format!(
            "{}{element} {}",
            if self.negated { "Not" } else { "" },
            list.join(",")
        )
    }
}

#[derive(Debug, Clone)]
pub struct Statement {
    pub effect: Effect,
    pub actions: PatternSet,
    pub resources: PatternSet,
    /// All must hold.
    pub conditions: Vec<Condition>,
}

impl Statement {
    /// Whether the statement applies: its actions, its resources and all its
    /// conditions match.
    pub fn matches(&self, action: &str, resource: &str, context: &Context) -> bool {
        self.actions.matches(action)
            && self.resources.matches(resource)
            && self.conditions.iter().all(|c| c.matches(context))
    }

    /// One line for explanations: `Deny Action mq:CloseConnection on Resource *`.
    pub fn describe(&self) -> String {
        let mut text = format!(
            "{:?} {} on {}",
            self.effect,
            self.actions.describe("Action"),
            self.resources.describe("Resource")
        );
        for c in &self.conditions {
            text.push_str(&format!(" if {} {}", c.operator, c.key));
        }
        text
    }
}

/// A compiled policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// How the policy is named in explanations (a system policy's name or a
    /// file's name).
    pub name: String,
    pub statements: Vec<Statement>,
}

/// Why a document is not a valid policy: where, and what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub statement: Option<usize>,
    pub reason: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.statement {
            Some(i) => write!(f, "Statement[{i}]: {}", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

impl std::error::Error for PolicyError {}

fn document_error(reason: impl Into<String>) -> PolicyError {
    PolicyError {
        statement: None,
        reason: reason.into(),
    }
}

impl Policy {
    /// Reads and compiles a policy document.
    pub fn parse(name: &str, text: &str) -> Result<Policy, PolicyError> {
        if text.len() > MAX_POLICY_BYTES {
            return Err(document_error(format!(
                "the document is {} bytes; RAM allows at most {MAX_POLICY_BYTES}",
                text.len()
            )));
        }
        let value: Value = serde_json::from_str(text)
            .map_err(|e| document_error(format!("not valid JSON: {e}")))?;
        Policy::from_value(name, &value)
    }

    /// Compiles a policy document already parsed as JSON.
    pub fn from_value(name: &str, value: &Value) -> Result<Policy, PolicyError> {
        let Value::Object(document) = value else {
            return Err(document_error(
                "a policy is a JSON object with Version and Statement",
            ));
        };
        for key in document.keys() {
            if key != "Version" && key != "Statement" {
                return Err(document_error(format!(
                    "unknown element \"{key}\"; a policy has only Version and Statement"
                )));
            }
        }
        match document.get("Version") {
            Some(Value::String(v)) if v == "1" => {}
            Some(other) => {
                return Err(document_error(format!(
                    "Version must be \"1\", not {other}"
                )));
            }
            None => {
                return Err(document_error(
                    "Version is missing; RAM policies have \"Version\": \"1\"",
                ));
            }
        }
        let Some(Value::Array(raw_statements)) = document.get("Statement") else {
            return Err(document_error("Statement must be a list of statements"));
        };
        let statements = raw_statements
            .iter()
            .enumerate()
            .map(|(i, s)| {
                compile_statement(s).map_err(|reason| PolicyError {
                    statement: Some(i),
                    reason,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Policy {
            name: name.to_string(),
            statements,
        })
    }
}

fn compile_statement(value: &Value) -> Result<Statement, String> {
    let Value::Object(statement) = value else {
        return Err("a statement is a JSON object".into());
    };
    for key in statement.keys() {
        match key.as_str() {
            "Effect" | "Action" | "NotAction" | "Resource" | "NotResource" | "Condition" => {}
            "Principal" => {
                return Err(
                    "Principal exists only in resource-based policies, not in a user's policy"
                        .into(),
                );
            }
            other => {
                return Err(format!(
                    "unknown element \"{other}\"; a statement has Effect, Action or NotAction, Resource or NotResource, and Condition"
                ));
            }
        }
    }
    let effect = match statement.get("Effect") {
        Some(Value::String(e)) if e == "Allow" => Effect::Allow,
        Some(Value::String(e)) if e == "Deny" => Effect::Deny,
        Some(other) => return Err(format!("Effect must be \"Allow\" or \"Deny\", not {other}")),
        None => return Err("Effect is missing".into()),
    };
    let actions = pattern_set(statement, "Action", true)?;
    for pattern in &actions.patterns {
        let source = pattern.source.as_str();
        if source != "*" && !source.contains(':') {
            return Err(format!(
                "action \"{source}\" is not of the form service:Action (e.g. mq:CloseConnection) or *"
            ));
        }
    }
    let resources = pattern_set(statement, "Resource", false)?;
    let conditions = match statement.get("Condition") {
        None => Vec::new(),
        Some(value) => compile_conditions(value)?,
    };
    Ok(Statement {
        effect,
        actions,
        resources,
        conditions,
    })
}

/// `Action` or `NotAction` (exactly one), a string or a list of strings.
fn pattern_set(
    statement: &serde_json::Map<String, Value>,
    element: &str,
    case_insensitive: bool,
) -> Result<PatternSet, String> {
    let negated_element = format!("Not{element}");
    let (negated, value) = match (statement.get(element), statement.get(&negated_element)) {
        (Some(v), None) => (false, v),
        (None, Some(v)) => (true, v),
        (Some(_), Some(_)) => {
            return Err(format!(
                "{element} and {negated_element} cannot both be given"
            ));
        }
        (None, None) => return Err(format!("{element} (or {negated_element}) is missing")),
    };
    let name = if negated { &negated_element } else { element };
    let strings = string_list(value).map_err(|what| format!("{name}: {what}"))?;
    if strings.is_empty() {
        return Err(format!("{name} is empty"));
    }
    Ok(PatternSet {
        negated,
        patterns: strings
            .iter()
            .map(|s| Pattern::new(s, case_insensitive))
            .collect(),
    })
}

/// A string or a list of strings (a one-element list and a string mean the
/// same).
fn string_list(value: &Value) -> Result<Vec<String>, String> {
    match value {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.clone()),
                other => Err(format!("expected strings, found {other}")),
            })
            .collect(),
        other => Err(format!(
            "expected a string or a list of strings, found {other}"
        )),
    }
}

/// `{operator: {key: value-or-values}}`; condition values may also be
/// numbers or booleans, read as their text.
fn compile_conditions(value: &Value) -> Result<Vec<Condition>, String> {
    let Value::Object(operators) = value else {
        return Err("Condition must be an object of {operator: {key: values}}".into());
    };
    let mut conditions = Vec::new();
    for (operator, keys) in operators {
        let Value::Object(keys) = keys else {
            return Err(format!(
                "Condition {operator}: expected an object of {{key: values}}"
            ));
        };
        if keys.is_empty() {
            return Err(format!("Condition {operator}: no keys given"));
        }
        for (key, values) in keys {
            let values: Vec<String> = match values {
                Value::Array(items) => items.iter().map(scalar).collect::<Result<_, _>>(),
                other => scalar(other).map(|v| vec![v]),
            }
            .map_err(|what| format!("Condition {operator} {key}: {what}"))?;
            conditions.push(Condition::new(operator, key, &values)?);
        }
    }
    Ok(conditions)
}

fn scalar(value: &Value) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(format!(
            "expected a string, number or boolean, found {other}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_well_formed_policy_compiles() {
        let p = Policy::parse(
            "p",
            r#"{"Version": "1", "Statement": [
                {"Effect": "Allow", "Action": ["mq:MqttInstanceAccess", "mq:Batch*"], "Resource": "acs:mq:*:*:post-1",
                 "Condition": {"IpAddress": {"acs:SourceIp": ["127.0.0.0/8"]}, "Bool": {"acs:SecureTransport": false}}},
                {"Effect": "Deny", "NotAction": "mq:MqttInstanceAccess", "NotResource": ["acs:mq:*:*:post-1"]}
            ]}"#,
        )
        .unwrap();
        assert_eq!(p.statements.len(), 2);
        assert_eq!(p.statements[0].conditions.len(), 2);
        assert_eq!(
            p.statements[1].describe(),
            "Deny NotAction mq:MqttInstanceAccess on NotResource acs:mq:*:*:post-1"
        );
    }

    #[test]
    fn every_defect_is_refused_with_where_and_why() {
        let statement = |s: &str| {
            format!(
                r#"{{"Version": "1", "Statement": [{{"Effect": "Allow", "Action": "mq:*", "Resource": "*"}}, {s}]}}"#
            )
        };
        let cases: Vec<(String, Option<usize>, &str)> = vec![
            ("[]".into(), None, "JSON object"),
            ("{".into(), None, "not valid JSON"),
            (
                r#"{"Version": "2", "Statement": []}"#.into(),
                None,
                "Version must be \"1\"",
            ),
            (
                r#"{"Version": 1, "Statement": []}"#.into(),
                None,
                "Version must be \"1\"",
            ),
            (r#"{"Statement": []}"#.into(), None, "Version is missing"),
            (
                r#"{"Version": "1", "Statement": {}}"#.into(),
                None,
                "list of statements",
            ),
            (
                r#"{"Version": "1", "Statement": [], "Id": "x"}"#.into(),
                None,
                "unknown element \"Id\"",
            ),
            (
                statement(r#"{"Effect": "allow", "Action": "mq:*", "Resource": "*"}"#),
                Some(1),
                "Effect must be",
            ),
            (
                statement(r#"{"Action": "mq:*", "Resource": "*"}"#),
                Some(1),
                "Effect is missing",
            ),
            (
                statement(r#"{"Effect": "Allow", "Resource": "*"}"#),
                Some(1),
                "Action (or NotAction) is missing",
            ),
            (
                statement(
                    r#"{"Effect": "Allow", "Action": "mq:*", "NotAction": "x:y", "Resource": "*"}"#,
                ),
                Some(1),
                "cannot both",
            ),
            (
                statement(r#"{"Effect": "Allow", "Action": "mq:*"}"#),
                Some(1),
                "Resource (or NotResource) is missing",
            ),
            (
                statement(r#"{"Effect": "Allow", "Action": [], "Resource": "*"}"#),
                Some(1),
                "Action is empty",
            ),
            (
                statement(r#"{"Effect": "Allow", "Action": "CloseConnection", "Resource": "*"}"#),
                Some(1),
                "service:Action",
            ),
            (
                statement(r#"{"Effect": "Allow", "Action": [1], "Resource": "*"}"#),
                Some(1),
                "expected strings",
            ),
            (
                statement(r#"{"Sid": "x", "Effect": "Allow", "Action": "mq:*", "Resource": "*"}"#),
                Some(1),
                "unknown element \"Sid\"",
            ),
            (
                statement(
                    r#"{"Effect": "Allow", "Principal": "*", "Action": "mq:*", "Resource": "*"}"#,
                ),
                Some(1),
                "resource-based",
            ),
            (
                statement(
                    r#"{"Effect": "Allow", "Action": "mq:*", "Resource": "*", "Condition": {"StringEqualsIfExists": {"acs:AccessId": "a"}}}"#,
                ),
                Some(1),
                "IfExists",
            ),
            (
                statement(
                    r#"{"Effect": "Allow", "Action": "mq:*", "Resource": "*", "Condition": {"IpAddress": {"acs:SourceIp": "10.0.0.0/40"}}}"#,
                ),
                Some(1),
                "CIDR",
            ),
            (
                statement(
                    r#"{"Effect": "Allow", "Action": "mq:*", "Resource": "*", "Condition": {"DateLessThan": {"acs:CurrentTime": "tomorrow"}}}"#,
                ),
                Some(1),
                "not a date",
            ),
            (
                statement(
                    r#"{"Effect": "Allow", "Action": "mq:*", "Resource": "*", "Condition": {"StringEquals": {"acs:Nope": "a"}}}"#,
                ),
                Some(1),
                "unknown condition key",
            ),
            (
                statement(
                    r#"{"Effect": "Allow", "Action": "mq:*", "Resource": "*", "Condition": {"StringEquals": {}}}"#,
                ),
                Some(1),
                "no keys",
            ),
            (
                statement(
                    r#"{"Effect": "Allow", "Action": "mq:*", "Resource": "*", "Condition": {"StringEquals": {"acs:AccessId": {"a": 1}}}}"#,
                ),
                Some(1),
                "expected a string",
            ),
        ];
        for (text, statement, reason) in cases {
            let e = Policy::parse("p", &text).unwrap_err();
            assert_eq!(e.statement, statement, "{text}: {e}");
            assert!(e.reason.contains(reason), "{text}: {e}");
        }
    }

    #[test]
    fn documents_over_6144_bytes_are_refused() {
        let padding = " ".repeat(MAX_POLICY_BYTES);
        let e = Policy::parse(
            "p",
            &format!(r#"{{"Version": "1", "Statement": []}}{padding}"#),
        )
        .unwrap_err();
        assert!(e.reason.contains("6144"), "{e}");
    }
}
