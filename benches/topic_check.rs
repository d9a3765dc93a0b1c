//! What a topic check costs per message, alone:
//!
//! - a token's: a PUBLISH topic and a SUBSCRIBE filter against a token of
//!   100 resources (the most Alibaba allows), compiled once into a trie,
//!   against the naive way (matching every resource in turn) as the
//!   baseline of the same run;
//! - a custom-auth decision: one connection's PUBLISH or SUBSCRIBE in an
//!   instance holding 10,000 permission rules over 1,000 identities (10
//!   each, ALLOW and DENY), through the path the front layer takes (load
//!   the instance's rule snapshot, find the username's and the client id's
//!   rules, walk their tries), against a scan of all the instance's rules
//!   as the baseline.
//!
//! Run: cargo bench --bench topic_check

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use mqgate::broker::rights::CustomRights;
use mqgate::devices::permissions::{IdentityRules, InstanceRules};
use mqgate::devices::{Effect, IdentityType, PermitAction, Rule, TopicSet};
use std::sync::Arc;
use std::time::Duration;

/// 100 resources: literal, `+` and `#` filters over a few parent topics.
fn resources() -> Vec<String> {
    (0..100)
        .map(|i| match i % 3 {
            0 => format!("plant{}/line{}/status", i % 7, i),
            1 => format!("plant{}/+/alarm{}", i % 7, i),
            _ => format!("plant{}/cmd{}/#", i % 7, i),
        })
        .collect()
}

/// MQTT matching of one filter against one topic name, level by level.
fn naive_match(filter: &str, topic: &str) -> bool {
    let mut topic_levels = topic.split('/');
    for level in filter.split('/') {
        match level {
            "#" => return true,
            "+" => {
                if topic_levels.next().is_none() {
                    return false;
                }
            }
            literal => {
                if topic_levels.next() != Some(literal) {
                    return false;
                }
            }
        }
    }
    topic_levels.next().is_none()
}

fn bench(c: &mut Criterion) {
    let resources = resources();
    let set = TopicSet::new(resources.clone()).unwrap();
    // Allowed near the end of the list, and refused (the worst case for the
    // naive way: every resource is tried).
    let allowed = "plant0/cmd98/a/b";
    let refused = "plant9/line1/status";
    assert!(set.allows_topic(allowed) && !set.allows_topic(refused));
    c.bench_function("trie: PUBLISH allowed", |b| {
        b.iter(|| set.allows_topic(black_box(allowed)))
    });
    c.bench_function("trie: PUBLISH refused", |b| {
        b.iter(|| set.allows_topic(black_box(refused)))
    });
    c.bench_function("naive: PUBLISH allowed", |b| {
        b.iter(|| resources.iter().any(|r| naive_match(r, black_box(allowed))))
    });
    c.bench_function("naive: PUBLISH refused", |b| {
        b.iter(|| resources.iter().any(|r| naive_match(r, black_box(refused))))
    });
    c.bench_function("trie: SUBSCRIBE filter covered", |b| {
        b.iter(|| set.covers_filter(black_box("plant1/+/alarm1")))
    });
}

/// 1,000 identities (every other one a USER, the others CLIENT ids), 10
/// rules each: 6 ALLOW (literal, `+`, `#`) and 4 DENY.
fn instance_rules() -> Vec<(IdentityType, String, Vec<Rule>)> {
    (0..1000)
        .map(|i| {
            let kind = if i % 2 == 0 {
                IdentityType::User
            } else {
                IdentityType::Client
            };
            let name = match kind {
                IdentityType::User => format!("user-{i}"),
                IdentityType::Client => format!("GID_fleet@@@dev-{i}"),
            };
            let rules = (0..10)
                .map(|j| {
                    let (topic, effect, action) = match j {
                        0 => (
                            format!("fleet/{i}/telemetry"),
                            Effect::Allow,
                            PermitAction::Pub,
                        ),
                        1 => (format!("fleet/{i}/cmd/#"), Effect::Allow, PermitAction::Sub),
                        2 => (
                            format!("fleet/{i}/+/status"),
                            Effect::Allow,
                            PermitAction::PubSub,
                        ),
                        3 => (
                            format!("shared/{}/+", i % 10),
                            Effect::Allow,
                            PermitAction::Sub,
                        ),
                        4 => (format!("alerts/{i}/#"), Effect::Allow, PermitAction::Pub),
                        5 => (format!("fleet/{i}/log/+"), Effect::Allow, PermitAction::Pub),
                        6 => (
                            format!("fleet/{i}/cmd/secret"),
                            Effect::Deny,
                            PermitAction::Sub,
                        ),
                        7 => (
                            format!("alerts/{i}/internal/#"),
                            Effect::Deny,
                            PermitAction::Pub,
                        ),
                        8 => (
                            format!("fleet/{i}/admin/+"),
                            Effect::Deny,
                            PermitAction::PubSub,
                        ),
                        _ => (
                            format!("shared/{}/private", i % 10),
                            Effect::Deny,
                            PermitAction::Sub,
                        ),
                    };
                    Rule {
                        topic,
                        effect,
                        action,
                    }
                })
                .collect();
            (kind, name, rules)
        })
        .collect()
}

fn bench_custom_auth(c: &mut Criterion) {
    let all = instance_rules();
    assert_eq!(all.iter().map(|(_, _, r)| r.len()).sum::<usize>(), 10_000);
    let mut snapshot = InstanceRules::default();
    for (kind, name, rules) in &all {
        snapshot.insert(*kind, name, IdentityRules::compile(rules));
    }
    // A connection whose username has rules (user-500) and whose client id
    // has too (dev-501).
    let rights = CustomRights {
        username: "user-500".into(),
        client_id: "GID_fleet@@@dev-501".into(),
        rules: Arc::new(arc_swap::ArcSwap::from_pointee(snapshot)),
    };
    let allowed = "alerts/500/disk/full";
    let denied = "alerts/500/internal/x";
    let unmatched = "fleet/7/telemetry";
    assert!(rights.publish(allowed).allowed());
    assert!(!rights.publish(denied).allowed() && !rights.publish(unmatched).allowed());
    assert!(rights.subscribe("fleet/501/cmd/open/+").allowed());
    assert!(!rights.subscribe("fleet/501/cmd/#").allowed());
    c.bench_function("custom auth 10k rules: PUBLISH allowed", |b| {
        b.iter(|| rights.publish(black_box(allowed)))
    });
    c.bench_function("custom auth 10k rules: PUBLISH denied", |b| {
        b.iter(|| rights.publish(black_box(denied)))
    });
    c.bench_function("custom auth 10k rules: PUBLISH matching no rule", |b| {
        b.iter(|| rights.publish(black_box(unmatched)))
    });
    c.bench_function("custom auth 10k rules: SUBSCRIBE allowed", |b| {
        b.iter(|| rights.subscribe(black_box("fleet/501/cmd/open/+")))
    });
    // What one change to an identity of 1,000 rules costs (its rules are
    // compiled again; the instance's other identities are shared).
    let thousand: Vec<Rule> = (0..1000)
        .map(|i| Rule {
            topic: format!("fleet/{i}/+/telemetry"),
            effect: if i % 2 == 0 {
                Effect::Allow
            } else {
                Effect::Deny
            },
            action: PermitAction::PubSub,
        })
        .collect();
    c.bench_function("custom auth: compile one identity's 1,000 rules", |b| {
        b.iter(|| IdentityRules::compile(black_box(&thousand)))
    });
    // The baseline: every rule of the instance tried in turn (what a rule
    // list without per-identity tries would do).
    c.bench_function("naive scan of 10k rules: PUBLISH allowed", |b| {
        b.iter(|| {
            let mut allow = false;
            for (kind, name, rules) in &all {
                let mine = match kind {
                    IdentityType::User => name == &rights.username,
                    IdentityType::Client => name == &rights.client_id,
                };
                if !mine {
                    continue;
                }
                for rule in rules {
                    let publishes = matches!(rule.action, PermitAction::Pub | PermitAction::PubSub);
                    if publishes && naive_match(&rule.topic, black_box(allowed)) {
                        if rule.effect == Effect::Deny {
                            return false;
                        }
                        allow = true;
                    }
                }
            }
            allow
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
    targets = bench, bench_custom_auth
}
criterion_main!(benches);
