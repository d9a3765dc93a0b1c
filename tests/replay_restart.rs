//! Replays across restarts, with the real binary: a request accepted by one
//! run is refused by the next, whether the first was killed (SIGKILL) and
//! restarted within the same second, stopped cleanly, or the request was
//! signed ahead of the server's clock.

mod common;

use chrono::{Duration as ChronoDuration, Utc};
use std::time::{Duration, Instant};

const CONFIG: &str = r#"
[http]
listen = "127.0.0.1:0"
[mqtt]
listen = "127.0.0.1:0"
[[accounts]]
id = "1234567890"
  [[accounts.instances]]
  id = "post-cn-replay"
  [[accounts.users]]
  name = "root"
  access_key_id = "testid"
  access_key_secret = "testsecret"
  root = true
"#;

/// A GET request signed once (V1), to be sent as many times as wanted.
fn signed_request(signed_at: chrono::DateTime<Utc>, nonce: &str) -> String {
    let params = vec![
        ("InstanceId".to_string(), "post-cn-replay".to_string()),
        ("ClientId".to_string(), "c".to_string()),
    ];
    let all = mqgate::client::sign_v1(
        "GET",
        "QuerySessionByClientId",
        &params,
        "testid",
        "testsecret",
        signed_at,
        nonce,
    );
    format!(
        "GET /?{} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        mqgate::client::encode_form(&all)
    )
}

async fn send(addr: std::net::SocketAddr, request: &str) -> (u16, String) {
    let answer = common::raw_http(addr, &[request.to_string()]).await;
    (answer[0].status, answer[0].body.clone())
}

fn code_of(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body).unwrap()["Code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Waits until just after a second begins, so that a kill and a restart
/// that follow quickly fall in the same second as the signature.
fn at_the_start_of_a_second() -> chrono::DateTime<Utc> {
    let now = Utc::now();
    let into = now.timestamp_subsec_millis() as u64;
    std::thread::sleep(Duration::from_millis(1000 - into + 5));
    Utc::now()
}

#[tokio::test]
async fn a_request_accepted_before_a_kill_is_refused_after_a_quick_restart() {
    let gate = common::Process::start(CONFIG);
    let addr = gate.http;
    // Signed now, and signed two minutes ahead of the server's clock.
    let signed_at = at_the_start_of_a_second();
    let now = signed_request(signed_at, "replay-now");
    let ahead = signed_request(signed_at + ChronoDuration::minutes(2), "replay-ahead");
    assert_eq!(send(addr, &now).await.0, 200);
    assert_eq!(send(addr, &ahead).await.0, 200);

    let killed_at = Instant::now();
    let same_second = Utc::now().timestamp() == signed_at.timestamp();
    let (gate, _) = gate.restart("KILL");
    let addr = gate.http;
    let restart = killed_at.elapsed();
    // The restart waits for the next second: the run before may have
    // accepted requests signed in this one.
    println!(
        "restart after SIGKILL: {} ms, serving from the next second (restarted in the second of the signature: {})",
        restart.as_millis(),
        same_second
    );
    let (status, body) = send(addr, &now).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(code_of(&body), "InvalidTimeStamp.Expired", "{body}");
    let (status, body) = send(addr, &ahead).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(code_of(&body), "SignatureNonceUsed", "{body}");
    // A request signed after the restart is served.
    let fresh = signed_request(Utc::now(), "fresh-after-kill");
    assert_eq!(send(addr, &fresh).await.0, 200);
}

#[tokio::test]
async fn a_request_accepted_before_a_clean_stop_is_refused_after_it() {
    let gate = common::Process::start(CONFIG);
    let addr = gate.http;
    let signed_at = at_the_start_of_a_second();
    let now = signed_request(signed_at, "stop-now");
    let ahead = signed_request(signed_at + ChronoDuration::minutes(2), "stop-ahead");
    assert_eq!(send(addr, &now).await.0, 200);
    assert_eq!(send(addr, &ahead).await.0, 200);
    let (gate, stopped) = gate.restart("TERM");
    assert!(stopped.success(), "SIGTERM: {stopped:?}");
    let addr = gate.http;
    for (request, code) in [
        (&now, "InvalidTimeStamp.Expired"),
        (&ahead, "SignatureNonceUsed"),
    ] {
        let (status, body) = send(addr, request).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(code_of(&body), code, "{body}");
    }
}
