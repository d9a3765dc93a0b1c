//! Every documented RAM case of tests/data/ram-vectors.json, through
//! the library and through `mqgate policy simulate`.

mod common;

use mqgate::ram::{Context, Policy, evaluate};
use serde_json::Value;
use std::process::Command;
use std::sync::Arc;

fn vectors() -> Vec<Value> {
    let path = common::data_dir().join("ram-vectors.json");
    let vectors: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(
        vectors.len(),
        30,
        "expected the 30 cases of ram-vectors.json"
    );
    vectors
}

fn context_pairs(case: &Value) -> Vec<(String, String)> {
    case["request"]["context"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn every_vector_through_the_library() {
    for case in vectors() {
        let id = case["id"].as_str().unwrap();
        let policies: Vec<Arc<Policy>> = case["policies"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(i, p)| {
                Arc::new(
                    Policy::from_value(&format!("policy{i}"), p)
                        .unwrap_or_else(|e| panic!("{id}: {e}")),
                )
            })
            .collect();
        let mut context = Context::new();
        for (k, v) in context_pairs(&case) {
            context.set(&k, v);
        }
        let request = &case["request"];
        let decision = evaluate(
            &policies,
            request["action"].as_str().unwrap(),
            request["resource"].as_str().unwrap(),
            &context,
        );
        assert_eq!(
            decision.kind.as_str(),
            case["expected"].as_str().unwrap(),
            "{id}: {}",
            case["name"]
        );
    }
}

#[test]
fn every_vector_through_the_simulator() {
    let dir = tempfile::tempdir().unwrap();
    for case in vectors() {
        let id = case["id"].as_str().unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_mqgate"));
        command.args(["policy", "simulate"]);
        for (i, policy) in case["policies"].as_array().unwrap().iter().enumerate() {
            let path = dir.path().join(format!("{id}-{i}.json"));
            std::fs::write(&path, serde_json::to_string_pretty(policy).unwrap()).unwrap();
            command.arg("--policy").arg(&path);
        }
        let request = &case["request"];
        command
            .args(["--action", request["action"].as_str().unwrap()])
            .args(["--resource", request["resource"].as_str().unwrap()]);
        for (k, v) in context_pairs(&case) {
            command.args(["--context", &format!("{k}={v}")]);
        }
        let output = command.output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{id}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let first = stdout.lines().next().unwrap_or_default();
        assert_eq!(first, case["expected"].as_str().unwrap(), "{id}: {stdout}");
        let second = stdout.lines().nth(1).unwrap_or_default();
        if first == "ImplicitDeny" {
            assert!(second.contains("denied by default"), "{id}: {stdout}");
        } else {
            assert!(
                second.contains(&format!("{id}-")),
                "{id}: the deciding file is named: {stdout}"
            );
        }
    }
}

#[test]
fn the_simulator_refuses_bad_input_with_a_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"Version": "1", "Statement": [{"Effect": "Allow", "Action": "mq:*", "Resource": "*", "Condition": {"DateLessThan": {"acs:CurrentTime": "soon"}}}]}"#).unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_mqgate"))
            .args(args)
            .output()
            .unwrap()
    };
    let bad_path = bad.to_str().unwrap();
    let output = run(&[
        "policy",
        "simulate",
        "--policy",
        bad_path,
        "--action",
        "mq:X",
        "--resource",
        "*",
    ]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("bad.json")
            && stderr.contains("Statement[0]")
            && stderr.contains("not a date"),
        "{stderr}"
    );
    let output = run(&[
        "policy",
        "simulate",
        "--policy",
        "AliyunMQFullAccess",
        "--action",
        "mq:X",
        "--resource",
        "*",
        "--context",
        "novalue",
    ]);
    assert_eq!(output.status.code(), Some(2));
    let output = run(&[
        "policy",
        "simulate",
        "--policy",
        "/nonexistent.json",
        "--action",
        "mq:X",
        "--resource",
        "*",
    ]);
    assert_eq!(output.status.code(), Some(2));
    let output = run(&["policy", "validate", bad_path, "AliyunMQReadOnlyAccess"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stdout).contains("AliyunMQReadOnlyAccess: valid"));
    let json = run(&[
        "policy",
        "simulate",
        "--policy",
        "AliyunMQReadOnlyAccess",
        "--action",
        "mq:CloseConnection",
        "--resource",
        "acs:mq:cn-hangzhou:1:i",
        "--json",
    ]);
    let value: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(value["Decision"], "ImplicitDeny");
}
