//! The RAM policy parser (src/ram/policy.rs, conditions in
//! src/ram/condition.rs, patterns in src/ram/pattern.rs) and evaluation
//! (src/ram/mod.rs) of the parsed policy against a request.
//!
//! Input: a policy document, optionally followed by a NUL byte and a
//! request: its action on the first line, its resource on the second, then
//! `key=value` context lines. Without a request, a few fixed ones are
//! evaluated. Never panics, and evaluation is consistent: a Deny statement
//! that matches always wins, an Allow wins only when no Deny matches.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mqgate::ram::condition::Context;
use mqgate::ram::policy::{Effect, Policy};
use mqgate::ram::{DecisionKind, evaluate, system_policy};
use std::sync::Arc;

const FIXED: &[(&str, &str)] = &[
    (
        "mq:CloseConnection",
        "acs:mq:cn-hangzhou:1234567890:post-cn-0pp12gl0001",
    ),
    ("mq:QuerySessionByClientId", "acs:mq:*:*:*"),
    ("mq:SendMessage", ""),
];

fuzz_target!(|data: &[u8]| {
    let (document, request) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    let Ok(text) = std::str::from_utf8(document) else {
        return;
    };
    // A shipped policy's name is looked up too (config `policies = [..]`).
    if text.len() < 64 {
        let _ = system_policy(text);
    }
    let policy = match Policy::parse("fuzz", text) {
        Ok(policy) => Arc::new(policy),
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    for statement in &policy.statements {
        let _ = statement.describe();
    }
    let policies = [policy];

    let request = request.map(String::from_utf8_lossy);
    let mut requests: Vec<(String, String, Context)> = Vec::new();
    match &request {
        Some(request) => {
            let mut lines = request.lines();
            let action = lines.next().unwrap_or_default().to_string();
            let resource = lines.next().unwrap_or_default().to_string();
            let mut context = Context::new();
            for line in lines {
                if let Some((k, v)) = line.split_once('=') {
                    context.set(k, v);
                }
            }
            requests.push((action, resource, context));
        }
        None => {
            for (action, resource) in FIXED {
                let mut context = Context::new();
                context
                    .set("acs:SourceIp", "10.0.0.1")
                    .set("acs:CurrentTime", "2026-11-22T02:48:57Z")
                    .set("acs:SecureTransport", "true")
                    .set("acs:AccessId", "testid");
                requests.push((action.to_string(), resource.to_string(), context));
            }
        }
    }
    for (action, resource, context) in &requests {
        let decision = evaluate(&policies, action, resource, context);
        let _ = decision.explain();
        let matching: Vec<Effect> = policies[0]
            .statements
            .iter()
            .filter(|s| s.matches(action, resource, context))
            .map(|s| s.effect)
            .collect();
        let expected = if matching.contains(&Effect::Deny) {
            DecisionKind::ExplicitDeny
        } else if matching.contains(&Effect::Allow) {
            DecisionKind::Allow
        } else {
            DecisionKind::ImplicitDeny
        };
        assert_eq!(decision.kind, expected);
    }
});
