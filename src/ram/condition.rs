//! Condition operators: a table from operator name to how its values are
//! read and compared. An unknown operator, a key RAM does not define, or a
//! value the operator cannot read (a malformed CIDR, date or number) is
//! refused when the policy is loaded, never at evaluation.

use super::pattern::Pattern;
use chrono::{DateTime, NaiveDate, Utc};
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::IpAddr;

/// The request's condition keys and their values (keys in lower case: RAM,
/// like IAM, reads condition key names case-insensitively).
#[derive(Debug, Clone, Default)]
pub struct Context {
    values: HashMap<String, String>,
}

impl Context {
    pub fn new() -> Context {
        Context::default()
    }

    pub fn set(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        self.values.insert(key.to_ascii_lowercase(), value.into());
        self
    }

    pub fn get(&self, key_lowercase: &str) -> Option<&str> {
        self.values.get(key_lowercase).map(String::as_str)
    }
}

/// What a comparison reads its values as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    String,
    StringIgnoreCase,
    StringLike,
    Numeric,
    Date,
    Bool,
    Ip,
}

/// How two values compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Comparison {
    Equals,
    LessThan,
    LessThanEquals,
    GreaterThan,
    GreaterThanEquals,
}

/// Every operator RAM defines: (name, family, comparison, negated).
const OPERATORS: &[(&str, Family, Comparison, bool)] = &[
    ("StringEquals", Family::String, Comparison::Equals, false),
    ("StringNotEquals", Family::String, Comparison::Equals, true),
    (
        "StringEqualsIgnoreCase",
        Family::StringIgnoreCase,
        Comparison::Equals,
        false,
    ),
    (
        "StringNotEqualsIgnoreCase",
        Family::StringIgnoreCase,
        Comparison::Equals,
        true,
    ),
    ("StringLike", Family::StringLike, Comparison::Equals, false),
    (
        "StringNotLike",
        Family::StringLike,
        Comparison::Equals,
        true,
    ),
    ("NumericEquals", Family::Numeric, Comparison::Equals, false),
    (
        "NumericNotEquals",
        Family::Numeric,
        Comparison::Equals,
        true,
    ),
    (
        "NumericLessThan",
        Family::Numeric,
        Comparison::LessThan,
        false,
    ),
    (
        "NumericLessThanEquals",
        Family::Numeric,
        Comparison::LessThanEquals,
        false,
    ),
    (
        "NumericGreaterThan",
        Family::Numeric,
        Comparison::GreaterThan,
        false,
    ),
    (
        "NumericGreaterThanEquals",
        Family::Numeric,
        Comparison::GreaterThanEquals,
        false,
    ),
    ("DateEquals", Family::Date, Comparison::Equals, false),
    ("DateNotEquals", Family::Date, Comparison::Equals, true),
    ("DateLessThan", Family::Date, Comparison::LessThan, false),
    (
        "DateLessThanEquals",
        Family::Date,
        Comparison::LessThanEquals,
        false,
    ),
    (
        "DateGreaterThan",
        Family::Date,
        Comparison::GreaterThan,
        false,
    ),
    (
        "DateGreaterThanEquals",
        Family::Date,
        Comparison::GreaterThanEquals,
        false,
    ),
    ("Bool", Family::Bool, Comparison::Equals, false),
    ("IpAddress", Family::Ip, Comparison::Equals, false),
    ("NotIpAddress", Family::Ip, Comparison::Equals, true),
];

/// The global condition keys (`acs:RequestTag/` and `acs:ResourceTag/` take
/// a tag name after the slash).
const GLOBAL_KEYS: &[&str] = &[
    "acs:sourceip",
    "acs:securetransport",
    "acs:currenttime",
    "acs:mfapresent",
    "acs:sourcevpc",
    "acs:accessid",
];

#[derive(Debug, Clone)]
enum Values {
    Strings(Vec<String>),
    Patterns(Vec<Pattern>),
    Numbers(Vec<f64>),
    Dates(Vec<DateTime<Utc>>),
    Bools(Vec<bool>),
    Nets(Vec<IpNet>),
}

/// One `operator: {key: values}` test of a statement.
#[derive(Debug, Clone)]
pub struct Condition {
    pub operator: &'static str,
    pub key: String,
    key_lowercase: String,
    comparison: Comparison,
    negated: bool,
    values: Values,
}

impl Condition {
    /// Compiles one operator/key/values triple, or says why it cannot.
    pub fn new(operator: &str, key: &str, values: &[String]) -> Result<Condition, String> {
        let Some(&(name, family, comparison, negated)) =
            OPERATORS.iter().find(|(name, ..)| *name == operator)
        else {
            return Err(unknown_operator(operator));
        };
        check_key(key)?;
        if values.is_empty() {
            return Err(format!("{operator} {key}: no values given"));
        }
        let values = match family {
            Family::String => Values::Strings(values.to_vec()),
            Family::StringIgnoreCase => {
                Values::Strings(values.iter().map(|v| v.to_lowercase()).collect())
            }
            Family::StringLike => {
                Values::Patterns(values.iter().map(|v| Pattern::new(v, false)).collect())
            }
            Family::Numeric => Values::Numbers(
                values
                    .iter()
                    .map(|v| {
                        v.trim().parse::<f64>().ok().filter(|n| n.is_finite()).ok_or_else(|| {
                            format!("{operator} {key}: \"{v}\" is not a number")
                        })
                    })
                    .collect::<Result<_, _>>()?,
            ),
            Family::Date => Values::Dates(
                values
                    .iter()
                    .map(|v| {
                        parse_date(v).ok_or_else(|| {
                            format!(
                                "{operator} {key}: \"{v}\" is not a date; use ISO 8601 with an offset, e.g. 2019-08-12T17:00:00+08:00"
                            )
                        })
                    })
                    .collect::<Result<_, _>>()?,
            ),
            Family::Bool => Values::Bools(
                values
                    .iter()
                    .map(|v| match v.as_str() {
                        "true" => Ok(true),
                        "false" => Ok(false),
                        other => Err(format!("{operator} {key}: \"{other}\" is not true or false")),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            Family::Ip => Values::Nets(
                values
                    .iter()
                    .map(|v| {
                        parse_net(v).ok_or_else(|| {
                            format!(
                                "{operator} {key}: \"{v}\" is not an IP address or CIDR block (e.g. 192.168.0.0/16, 2001:db8::/32, 203.0.113.7)"
                            )
                        })
                    })
                    .collect::<Result<_, _>>()?,
            ),
        };
        Ok(Condition {
            operator: name,
            key: key.to_string(),
            key_lowercase: key.to_ascii_lowercase(),
            comparison,
            negated,
            values,
        })
    }

    /// Several values: OR. A key the request does not have: a positive
    /// operator is false, a negated one true (IAM's rule; RAM is silent).
    pub fn matches(&self, context: &Context) -> bool {
        let Some(actual) = context.get(&self.key_lowercase) else {
            return self.negated;
        };
        let any = match &self.values {
            Values::Strings(expected) if self.is_ignore_case() => {
                let actual = actual.to_lowercase();
                expected.contains(&actual)
            }
            Values::Strings(expected) => expected.iter().any(|e| e == actual),
            Values::Patterns(patterns) => patterns.iter().any(|p| p.matches(actual)),
            Values::Numbers(expected) => match actual.trim().parse::<f64>() {
                Ok(n) => expected.iter().any(|e| compare(self.comparison, n, *e)),
                Err(_) => false,
            },
            Values::Dates(expected) => match parse_date(actual) {
                Some(t) => expected.iter().any(|e| compare(self.comparison, t, *e)),
                None => false,
            },
            Values::Bools(expected) => match actual.to_ascii_lowercase().as_str() {
                "true" => expected.contains(&true),
                "false" => expected.contains(&false),
                _ => false,
            },
            Values::Nets(nets) => match actual.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    let ip = ip.to_canonical();
                    nets.iter().any(|n| n.contains(&ip))
                }
                Err(_) => false,
            },
        };
        any != self.negated
    }

    fn is_ignore_case(&self) -> bool {
        self.operator.ends_with("IgnoreCase")
    }
}

fn compare<T: PartialOrd>(comparison: Comparison, actual: T, expected: T) -> bool {
    match comparison {
        Comparison::Equals => actual == expected,
        Comparison::LessThan => actual < expected,
        Comparison::LessThanEquals => actual <= expected,
        Comparison::GreaterThan => actual > expected,
        Comparison::GreaterThanEquals => actual >= expected,
    }
}

fn unknown_operator(operator: &str) -> String {
    if operator.ends_with("IfExists") {
        format!("unknown condition operator \"{operator}\": RAM has no ...IfExists operators")
    } else if operator == "Null" {
        "unknown condition operator \"Null\": RAM has no Null operator".to_string()
    } else if operator.starts_with("ForAnyValue:") || operator.starts_with("ForAllValues:") {
        format!(
            "unknown condition operator \"{operator}\": RAM has no ForAnyValue/ForAllValues qualifiers"
        )
    } else {
        let names: Vec<&str> = OPERATORS.iter().map(|(n, ..)| *n).collect();
        format!(
            "unknown condition operator \"{operator}\"; RAM's are {}",
            names.join(", ")
        )
    }
}

/// `acs:` keys must be RAM's global keys; `mq` defines no condition keys;
/// keys of other services are accepted as written (a request to mqgate never
/// carries them, so the absent-key rule decides).
fn check_key(key: &str) -> Result<(), String> {
    let lower = key.to_ascii_lowercase();
    let Some((service, name)) = lower.split_once(':') else {
        return Err(format!(
            "condition key \"{key}\" is not of the form service:Name, e.g. acs:SourceIp"
        ));
    };
    if service.is_empty() || name.is_empty() {
        return Err(format!(
            "condition key \"{key}\" is not of the form service:Name, e.g. acs:SourceIp"
        ));
    }
    match service {
        "acs" => {
            let tag = ["acs:requesttag/", "acs:resourcetag/"]
                .iter()
                .any(|p| lower.strip_prefix(p).is_some_and(|t| !t.is_empty()));
            if GLOBAL_KEYS.contains(&lower.as_str()) || tag {
                Ok(())
            } else {
                Err(format!(
                    "unknown condition key \"{key}\"; RAM's global keys are acs:SourceIp, acs:SecureTransport, acs:CurrentTime, acs:MFAPresent, acs:SourceVpc, acs:AccessId, acs:RequestTag/<tag>, acs:ResourceTag/<tag>"
                ))
            }
        }
        "mq" => Err(format!(
            "unknown condition key \"{key}\": ApsaraMQ for MQTT defines no condition keys; use RAM's global acs: keys"
        )),
        _ => Ok(()),
    }
}

/// ISO 8601 with an offset (`2019-08-12T17:00:00+08:00`, `...Z`), or a
/// plain date (midnight UTC).
pub fn parse_date(value: &str) -> Option<DateTime<Utc>> {
    let value = value.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        return Some(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

fn parse_net(value: &str) -> Option<IpNet> {
    let value = value.trim();
    if value.contains('/') {
        // A host part with bits set below the prefix (192.168.1.1/16) is
        // almost always a typo: refuse it rather than guess.
        let net: IpNet = value.parse().ok()?;
        (net.trunc() == net).then_some(net)
    } else {
        value
            .parse::<IpAddr>()
            .ok()
            .map(|ip| IpNet::from(ip.to_canonical()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(op: &str, key: &str, values: &[&str]) -> Condition {
        Condition::new(
            op,
            key,
            &values.iter().map(|v| v.to_string()).collect::<Vec<_>>(),
        )
        .unwrap()
    }

    fn ctx(pairs: &[(&str, &str)]) -> Context {
        let mut context = Context::new();
        for (k, v) in pairs {
            context.set(k, *v);
        }
        context
    }

    #[test]
    fn operators_table() {
        // (operator, key, values, request context, expected)
        type Case<'a> = (
            &'a str,
            &'a str,
            &'a [&'a str],
            &'a [(&'a str, &'a str)],
            bool,
        );
        let cases: &[Case] = &[
            (
                "StringEquals",
                "acs:AccessId",
                &["a", "b"],
                &[("acs:AccessId", "b")],
                true,
            ),
            (
                "StringEquals",
                "acs:AccessId",
                &["a"],
                &[("acs:AccessId", "A")],
                false,
            ),
            (
                "StringNotEquals",
                "acs:AccessId",
                &["a", "b"],
                &[("acs:AccessId", "c")],
                true,
            ),
            (
                "StringNotEquals",
                "acs:AccessId",
                &["a", "b"],
                &[("acs:AccessId", "a")],
                false,
            ),
            (
                "StringEqualsIgnoreCase",
                "acs:AccessId",
                &["ABC"],
                &[("acs:AccessId", "abc")],
                true,
            ),
            (
                "StringNotEqualsIgnoreCase",
                "acs:AccessId",
                &["ABC"],
                &[("acs:AccessId", "abc")],
                false,
            ),
            (
                "StringLike",
                "acs:AccessId",
                &["LTAI*"],
                &[("acs:AccessId", "LTAIxyz")],
                true,
            ),
            (
                "StringNotLike",
                "acs:AccessId",
                &["LTAI*"],
                &[("acs:AccessId", "LTAIxyz")],
                false,
            ),
            (
                "NumericLessThan",
                "oss:MaxKeys",
                &["10"],
                &[("oss:MaxKeys", "9")],
                true,
            ),
            (
                "NumericLessThanEquals",
                "oss:MaxKeys",
                &["10"],
                &[("oss:MaxKeys", "10")],
                true,
            ),
            (
                "NumericGreaterThan",
                "oss:MaxKeys",
                &["10"],
                &[("oss:MaxKeys", "10")],
                false,
            ),
            (
                "NumericGreaterThanEquals",
                "oss:MaxKeys",
                &["10"],
                &[("oss:MaxKeys", "10.0")],
                true,
            ),
            (
                "NumericEquals",
                "oss:MaxKeys",
                &["10"],
                &[("oss:MaxKeys", "ten")],
                false,
            ),
            (
                "NumericNotEquals",
                "oss:MaxKeys",
                &["10"],
                &[("oss:MaxKeys", "11")],
                true,
            ),
            (
                "DateLessThan",
                "acs:CurrentTime",
                &["2019-08-12T17:00:00+08:00"],
                &[("acs:CurrentTime", "2019-08-12T08:59:59Z")],
                true,
            ),
            (
                "DateLessThan",
                "acs:CurrentTime",
                &["2019-08-12T17:00:00+08:00"],
                &[("acs:CurrentTime", "2019-08-12T09:00:00Z")],
                false,
            ),
            (
                "DateGreaterThanEquals",
                "acs:CurrentTime",
                &["2019-08-12"],
                &[("acs:CurrentTime", "2019-08-12T00:00:00Z")],
                true,
            ),
            (
                "DateEquals",
                "acs:CurrentTime",
                &["2019-08-12T00:00:00Z"],
                &[("acs:CurrentTime", "2019-08-12T08:00:00+08:00")],
                true,
            ),
            (
                "DateNotEquals",
                "acs:CurrentTime",
                &["2019-08-12T00:00:00Z"],
                &[("acs:CurrentTime", "2019-08-13T00:00:00Z")],
                true,
            ),
            (
                "DateGreaterThan",
                "acs:CurrentTime",
                &["2019-08-12T00:00:00Z"],
                &[("acs:CurrentTime", "soon")],
                false,
            ),
            (
                "Bool",
                "acs:SecureTransport",
                &["true"],
                &[("acs:SecureTransport", "false")],
                false,
            ),
            (
                "Bool",
                "acs:SecureTransport",
                &["false"],
                &[("acs:SecureTransport", "false")],
                true,
            ),
            (
                "IpAddress",
                "acs:SourceIp",
                &["192.0.2.0/24", "203.0.113.2"],
                &[("acs:SourceIp", "203.0.113.2")],
                true,
            ),
            (
                "IpAddress",
                "acs:SourceIp",
                &["192.0.2.0/24"],
                &[("acs:SourceIp", "::ffff:192.0.2.9")],
                true,
            ),
            (
                "IpAddress",
                "acs:SourceIp",
                &["2001:db8::/32"],
                &[("acs:SourceIp", "2001:db8::1")],
                true,
            ),
            (
                "NotIpAddress",
                "acs:SourceIp",
                &["192.0.2.0/24"],
                &[("acs:SourceIp", "198.51.100.7")],
                true,
            ),
            (
                "NotIpAddress",
                "acs:SourceIp",
                &["192.0.2.0/24"],
                &[("acs:SourceIp", "192.0.2.7")],
                false,
            ),
            // Absent keys: positive false, negated true.
            ("IpAddress", "acs:SourceIp", &["0.0.0.0/0"], &[], false),
            ("StringNotEquals", "acs:SourceVpc", &["vpc-a"], &[], true),
            ("NotIpAddress", "acs:SourceIp", &["192.0.2.0/24"], &[], true),
            // Key names are read case-insensitively.
            (
                "StringEquals",
                "ACS:accessid",
                &["k"],
                &[("acs:AccessId", "k")],
                true,
            ),
        ];
        for (op, key, values, context, expected) in cases {
            assert_eq!(
                c(op, key, values).matches(&ctx(context)),
                *expected,
                "{op} {key} {values:?} {context:?}"
            );
        }
    }

    #[test]
    fn bad_conditions_are_refused_with_a_reason() {
        let cases: &[(&str, &str, &[&str], &str)] = &[
            ("StringEqualsIfExists", "acs:AccessId", &["a"], "IfExists"),
            ("Null", "acs:AccessId", &["true"], "Null"),
            (
                "ForAnyValue:StringEquals",
                "acs:AccessId",
                &["a"],
                "ForAnyValue",
            ),
            (
                "StringEqual",
                "acs:AccessId",
                &["a"],
                "unknown condition operator",
            ),
            (
                "StringEquals",
                "acs:SourceIP2",
                &["a"],
                "unknown condition key",
            ),
            (
                "StringEquals",
                "mq:Topic",
                &["a"],
                "defines no condition keys",
            ),
            ("StringEquals", "AccessId", &["a"], "service:Name"),
            ("IpAddress", "acs:SourceIp", &["192.168.1.300/24"], "CIDR"),
            ("IpAddress", "acs:SourceIp", &["192.168.1.1/16"], "CIDR"),
            ("IpAddress", "acs:SourceIp", &["10.0.0.0/33"], "CIDR"),
            (
                "DateLessThan",
                "acs:CurrentTime",
                &["2019-13-01"],
                "not a date",
            ),
            (
                "DateLessThan",
                "acs:CurrentTime",
                &["2019-08-12 17:00"],
                "not a date",
            ),
            ("NumericEquals", "oss:MaxKeys", &["ten"], "not a number"),
            ("Bool", "acs:SecureTransport", &["yes"], "not true or false"),
            ("StringEquals", "acs:AccessId", &[], "no values"),
        ];
        for (op, key, values, reason) in cases {
            let values: Vec<String> = values.iter().map(|v| v.to_string()).collect();
            let e = Condition::new(op, key, &values).unwrap_err();
            assert!(e.contains(reason), "{op} {key}: {e}");
        }
        assert!(Condition::new("StringEquals", "acs:ResourceTag/team", &["dev".into()]).is_ok());
        assert!(Condition::new("StringEquals", "acs:ResourceTag/", &["dev".into()]).is_err());
    }
}
