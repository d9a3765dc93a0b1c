//! What a RAM decision costs for a user with 10 policies of 10 statements
//! each, evaluated against policies compiled once at load, beside the same
//! decision with the policies re-parsed every time (what compiling saves).
//! Run: cargo bench --bench ram_decision

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use mqgate::ram::{Context, Policy, evaluate};
use std::sync::Arc;

/// Ten statements that do not match the request (other actions, other
/// instances, conditions that fail), and in the last policy a final Allow
/// that does: the evaluation walks all 100 statements.
fn policy_text(index: usize, last: bool) -> String {
    let mut statements = Vec::new();
    for s in 0..10 {
        let statement = if last && s == 9 {
            r#"{"Effect": "Allow", "Action": ["mq:MqttInstanceAccess", "mq:Batch*"], "Resource": "acs:mq:*:*:post-cn-bench*", "Condition": {"IpAddress": {"acs:SourceIp": ["10.0.0.0/8", "127.0.0.0/8"]}, "DateLessThan": {"acs:CurrentTime": "2099-01-01T00:00:00+08:00"}}}"#.to_string()
        } else {
            match s % 4 {
                0 => format!(
                    r#"{{"Effect": "Allow", "Action": "mq:CloseConnection", "Resource": "acs:mq:*:*:post-cn-{index}-{s}"}}"#
                ),
                1 => format!(
                    r#"{{"Effect": "Deny", "Action": "ecs:*", "Resource": "acs:ecs:*:*:instance/i-{index}{s}*"}}"#
                ),
                2 => format!(
                    r#"{{"Effect": "Allow", "Action": "mq:*", "Resource": "*", "Condition": {{"StringEquals": {{"acs:AccessId": ["LTAI{index}{s}"]}}}}}}"#
                ),
                _ => format!(
                    r#"{{"Effect": "Deny", "NotAction": ["mq:*"], "Resource": "acs:mq:cn-shanghai:*:post-cn-{index}?{s}"}}"#
                ),
            }
        };
        statements.push(statement);
    }
    format!(
        r#"{{"Version": "1", "Statement": [{}]}}"#,
        statements.join(",")
    )
}

fn bench(c: &mut Criterion) {
    let texts: Vec<String> = (0..10).map(|i| policy_text(i, i == 9)).collect();
    let policies: Vec<Arc<Policy>> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| Arc::new(Policy::parse(&format!("p{i}"), t).unwrap()))
        .collect();
    let mut context = Context::new();
    context
        .set("acs:SourceIp", "127.0.0.1")
        .set("acs:CurrentTime", "2026-11-22T03:00:00Z")
        .set("acs:AccessId", "LTAIbench")
        .set("acs:SecureTransport", "false");
    let action = "mq:MqttInstanceAccess";
    let resource = "acs:mq:cn-hangzhou:1234567890:post-cn-bench0001";
    assert_eq!(
        evaluate(&policies, action, resource, &context)
            .kind
            .as_str(),
        "Allow"
    );

    let mut group = c.benchmark_group("ram_decision_10x10");
    group.bench_function("compiled", |b| {
        b.iter(|| {
            evaluate(
                black_box(&policies),
                black_box(action),
                black_box(resource),
                black_box(&context),
            )
            .kind
        })
    });
    group.bench_function("reparsed_each_time", |b| {
        b.iter(|| {
            let reparsed: Vec<Arc<Policy>> = texts
                .iter()
                .map(|t| Arc::new(Policy::parse("p", black_box(t)).unwrap()))
                .collect();
            evaluate(&reparsed, action, resource, &context).kind
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
