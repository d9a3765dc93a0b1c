//! What a token's topic check costs per message, alone: a PUBLISH topic
//! and a SUBSCRIBE filter against a token of 100 resources (the most
//! Alibaba allows), compiled once into a trie, against the naive way
//! (matching every resource in turn) as the baseline of the same run.
//! Run: cargo bench --bench topic_check

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use mqgate::devices::TopicSet;
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

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
