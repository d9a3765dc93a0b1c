//! Nothing billed is lost, nothing is counted twice: mqgate is killed with
//! SIGKILL under load, restarted, and the bill holds at least every call
//! that was answered 200, and at most those plus the calls in flight.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_mqgate");
const CONCURRENCY: usize = 16;

fn start(config: &std::path::Path) -> (Child, String) {
    let (child, http) = common::spawn_mqgate(
        &["serve", "--config", config.to_str().unwrap()],
        Stdio::null(),
    );
    (child, format!("http://{http}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_answered_call() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("crash.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[http]
listen = "127.0.0.1:0"
[mqtt]
listen = "127.0.0.1:0"
[storage]
dir = {:?}
[limits]
QuerySessionByClientId = 1000000
[[accounts]]
id = "1234567890"
  [[accounts.instances]]
  id = "post-cn-crash"
  [[accounts.users]]
  name = "root"
  access_key_id = "testid"
  access_key_secret = "testsecret"
  root = true
"#,
            dir.path().join("data").display().to_string()
        ),
    )
    .unwrap();
    let (mut child, endpoint) = start(&config);

    let answered = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..CONCURRENCY {
        let (endpoint, answered, stop) = (endpoint.clone(), answered.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let params = vec![
                ("InstanceId".to_string(), "post-cn-crash".to_string()),
                ("ClientId".to_string(), "c".to_string()),
            ];
            while !stop.load(Ordering::Relaxed) {
                match mqgate::client::call(
                    &endpoint,
                    "POST",
                    mqgate::client::Signing::V1,
                    "QuerySessionByClientId",
                    &params,
                    "testid",
                    "testsecret",
                )
                .await
                {
                    Ok((200, _)) => {
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok((status, body)) => panic!("unexpected {status}: {body}"),
                    // The server is gone: this call was in flight.
                    Err(_) => break,
                }
            }
        }));
    }
    // Let the load run, then kill without warning.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    // An answer written to its socket before the kill can still be read
    // after it: count what was answered once every client has ended.
    for task in load {
        task.await.unwrap();
    }
    let answered_total = answered.load(Ordering::SeqCst);
    assert!(
        answered_total > 50,
        "too little load to prove anything: {answered_total}"
    );

    // Restart: the database recovers and the report reads it.
    let (mut restarted, _) = start(&config);
    let output = Command::new(BIN)
        .args(["report", "--config"])
        .arg(&config)
        .args(["--format", "json", "--group-by", "instance"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let billed = rows[0]["transactions"].as_u64().unwrap() as usize;
    eprintln!("answered 200: {answered_total}; billed: {billed}; in flight at most {CONCURRENCY}");
    assert!(
        billed >= answered_total,
        "lost: billed {billed} < answered {answered_total}"
    );
    assert!(
        billed <= answered_total + CONCURRENCY,
        "counted twice: billed {billed} > answered {answered_total} + {CONCURRENCY} in flight"
    );
    restarted.kill().unwrap();
    restarted.wait().unwrap();
}
