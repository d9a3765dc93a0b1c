//! Flow control and the bill, end to end: a burst against the limit, two
//! accounts that do not share one, throttled calls that are not billed,
//! broker messages by QoS, reports that match the calls made, and the live
//! metrics.

mod common;

use common::{TWO_ACCOUNTS, TestServer, connect_v4, connect_v5};
use mqgate::client::Signing;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The flood tests measure rates: they run one at a time, so that they do
/// not take each other's CPU.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The calls billed for `action`, as a report reads them: the tables and
/// the bill journal's blocks not folded into them yet.
fn billed(t: &TestServer, action: &str) -> i64 {
    use mqgate::metering::report;
    let query = report::Query {
        kind: report::Kind::Transactions,
        from: chrono::DateTime::from_timestamp(0, 0).unwrap(),
        to: chrono::Utc::now() + chrono::Duration::days(1),
        account_id: None,
        instance_id: None,
        group_by: report::GroupBy {
            instance: false,
            action: true,
            bucket: report::Bucket::Whole,
        },
    };
    let db = report::open_read_only(&t.storage.path().join(mqgate::metering::DATABASE)).unwrap();
    report::run(&db, &query)
        .unwrap()
        .iter()
        .filter(|row| row.item == action)
        .map(|row| row.count as i64)
        .sum()
}

/// Sends `count` signed calls from `concurrency` tasks, call `i` not before
/// `i * spacing` after the start; returns (admitted, throttled, elapsed).
async fn flood(
    t: &Arc<TestServer>,
    key: (&'static str, &'static str),
    count: usize,
    concurrency: usize,
) -> (usize, usize, Duration) {
    paced(t, key, count, concurrency, Duration::ZERO).await
}

async fn paced(
    t: &Arc<TestServer>,
    key: (&'static str, &'static str),
    count: usize,
    concurrency: usize,
    spacing: Duration,
) -> (usize, usize, Duration) {
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (t, next) = (t.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut throttled) = (0, 0);
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= count {
                    break;
                }
                tokio::time::sleep_until((started + spacing * i as u32).into()).await;
                let (status, body) = t
                    .call_signed(
                        key,
                        "POST",
                        Signing::V1,
                        "QuerySessionByClientId",
                        &[
                            (
                                "InstanceId",
                                if key.0 == "testid" {
                                    "inst-a1"
                                } else {
                                    "inst-b1"
                                },
                            ),
                            ("ClientId", "c"),
                        ],
                    )
                    .await;
                match (status, body["Code"].as_str()) {
                    (200, _) => ok += 1,
                    (403, Some("SystemOverFlow")) => throttled += 1,
                    other => panic!("unexpected answer {other:?}: {body}"),
                }
            }
            (ok, throttled)
        }));
    }
    let (mut ok, mut throttled) = (0, 0);
    for task in tasks {
        let (o, th) = task.await.unwrap();
        ok += o;
        throttled += th;
    }
    (ok, throttled, started.elapsed())
}

/// 1,000 QuerySessionByClientId calls spread over one second: 500 per
/// second plus the burst of 50 are admitted, the rest refused with
/// SystemOverFlow, and only the admitted are billed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_admits_the_limit_plus_the_burst() {
    let _serial = SERIAL.lock().await;
    let t = Arc::new(TestServer::start(TWO_ACCOUNTS).await);
    let (admitted, throttled, elapsed) = paced(
        &t,
        ("testid", "testsecret"),
        1000,
        32,
        Duration::from_millis(1),
    )
    .await;
    // GCRA: over any t seconds at most 500 t + 50 calls get through.
    let ceiling = 50.0 + 500.0 * elapsed.as_secs_f64();
    eprintln!("admitted {admitted}, throttled {throttled} in {elapsed:?} (ceiling {ceiling:.0})");
    assert_eq!(admitted + throttled, 1000);
    assert!(
        admitted as f64 <= ceiling + 1.0,
        "over-admitted: {admitted} > {ceiling}"
    );
    assert!(throttled > 0, "nothing throttled in {elapsed:?}");
    // Not starved either. The calls are meant to arrive at 1,000/s, twice
    // the rate, so the whole rate plus the burst should be used; on a busy
    // machine they arrive late and unevenly, so only a clear shortfall
    // (under 60% of it) fails: that would mean calls refused under the limit.
    let floor = 0.6 * (50.0 + 500.0 * elapsed.as_secs_f64().min(1.0));
    assert!(admitted as f64 >= floor, "starved: {admitted} < {floor}");
    assert_eq!(
        billed(&t, "QuerySessionByClientId"),
        admitted as i64,
        "throttled calls must not be billed"
    );
}

/// One account at its limit does not slow another down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_accounts_do_not_share_a_limit() {
    let _serial = SERIAL.lock().await;
    let config = TWO_ACCOUNTS.replace(
        "[[accounts]]\nid = \"111\"",
        "[[accounts]]\nid = \"111\"\n[accounts.limits]\nQuerySessionByClientId = 20",
    );
    let t = Arc::new(TestServer::start(&config).await);
    let a = flood(&t, ("testid", "testsecret"), 200, 8);
    // 40 calls fit in the default burst of 50: only a shared limit could refuse one.
    let b = flood(&t, ("key-b", "secret-b"), 40, 8);
    let ((a_ok, a_throttled, a_elapsed), (b_ok, b_throttled, _)) = tokio::join!(a, b);
    let a_burst = mqgate::throttle::burst(
        mqgate::api::Limit::Action(mqgate::api::Action::QuerySessionByClientId),
        20,
    ) as f64;
    assert!(
        a_throttled > 0 && a_ok as f64 <= a_burst + 20.0 * a_elapsed.as_secs_f64() + 1.0,
        "A: {a_ok} ok, {a_throttled} throttled in {a_elapsed:?} (burst {a_burst})"
    );
    assert_eq!((b_ok, b_throttled), (40, 0), "B must not be throttled by A");
}

#[tokio::test]
async fn throttled_answers_tell_the_sdk_when_to_retry() {
    let t = TestServer::start(&format!(
        "[limits]\nQuerySessionByClientId = 1\n{TWO_ACCOUNTS}"
    ))
    .await;
    let params = vec![
        ("InstanceId".to_string(), "inst-a1".to_string()),
        ("ClientId".to_string(), "c".to_string()),
    ];
    let mut last = None;
    for _ in 0..3 {
        let signed = mqgate::client::sign_v1(
            "GET",
            "QuerySessionByClientId",
            &params,
            "testid",
            "testsecret",
            chrono::Utc::now(),
            &uuid::Uuid::new_v4().to_string(),
        );
        let url = format!("{}/?{}", t.endpoint, mqgate::client::encode_form(&signed));
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Empty<bytes::Bytes>>();
        last = Some(client.get(url.parse().unwrap()).await.unwrap());
    }
    let response = last.unwrap();
    assert_eq!(response.status(), 403);
    let retry: u64 = response.headers()["x-acs-retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=1000).contains(&retry), "{retry}");
    assert!(response.headers().contains_key("retry-after"));
}

/// Reports count exactly the calls made, over HTTP and from the command
/// line, and the broker side counts messages by QoS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_match_the_calls_and_messages() {
    let t = TestServer::start(TWO_ACCOUNTS).await;
    let mut subscriber = connect_v5(t.mqtt, "GID_m@@@sub", None).await.unwrap();
    subscriber.subscribe("meter/#").await;
    let publisher = connect_v4(t.mqtt, "GID_m@@@pub", None).await.unwrap();
    for i in 0..3 {
        publisher
            .publish("meter/a", format!("{i}").as_bytes())
            .await;
        subscriber.next_message().await;
    }
    publisher
        .v4
        .as_ref()
        .unwrap()
        .publish("meter/b", rumqttc::QoS::AtMostOnce, false, "q0")
        .await
        .unwrap();
    subscriber.next_message().await;
    for _ in 0..4 {
        assert!(!t.online("inst-a2", "nobody").await);
    }
    let (status, _) = t
        .call(
            "CloseConnection",
            &[("InstanceId", "inst-a1"), ("ClientId", "nobody")],
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = t
        .call(
            "DescribeMeteringReport",
            &[
                ("InstanceId", "inst-a2"),
                ("StartTime", "today"),
                ("EndTime", "tomorrow"),
                ("GroupBy", "action"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["Rows"],
        serde_json::json!([{
            "WindowStart": body["StartTime"], "WindowEnd": body["EndTime"],
            "Action": "QuerySessionByClientId", "Transactions": 4
        }])
    );
    // Account B cannot read account A's report.
    let (status, body) = t
        .call_as(
            ("key-b", "secret-b"),
            "POST",
            "DescribeMeteringReport",
            &[
                ("InstanceId", "inst-a2"),
                ("StartTime", "today"),
                ("EndTime", "tomorrow"),
            ],
        )
        .await;
    assert_eq!(
        (status, body["Code"].as_str()),
        (400, Some("InstancePermissionCheckFailed"))
    );

    let metrics = reqwest_text(&format!("{}/metrics", t.endpoint)).await;
    assert!(
        metrics
            .contains("mqgate_rpc_calls_total{action=\"QuerySessionByClientId\",outcome=\"OK\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mqgate_mqtt_connected_clients{instance=\"inst-a1\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "mqgate_mqtt_messages_total{instance=\"inst-a1\",direction=\"published\",qos=\"1\"} 3"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("mqgate_rpc_call_duration_seconds_count"));

    let storage = t.storage.path().to_path_buf();
    let config_path = storage.join("report.toml");
    std::fs::write(
        &config_path,
        format!(
            "{TWO_ACCOUNTS}\n[storage]\ndir = {:?}\n",
            storage.display().to_string()
        ),
    )
    .unwrap();
    drop(subscriber);
    drop(publisher);
    t.server.shutdown().await;

    let report = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_mqgate"))
            .arg("report")
            .arg("--config")
            .arg(&config_path)
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let csv = report(&["--format", "csv", "--group-by", "instance,action"]);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "window_start,window_end,account_id,instance_id,action,transactions"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with(",111,inst-a1,CloseConnection,1")),
        "{csv}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with(",111,inst-a2,DescribeMeteringReport,1")),
        "{csv}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with(",111,inst-a2,QuerySessionByClientId,4")),
        "{csv}"
    );
    let messages = report(&[
        "--kind",
        "messages",
        "--format",
        "json",
        "--group-by",
        "instance",
        "--instance",
        "inst-a1",
    ]);
    let rows: serde_json::Value = serde_json::from_str(&messages).unwrap();
    let count = |item: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["direction_qos"] == item)
            .map(|r| r["messages"].as_u64().unwrap())
    };
    assert_eq!(count("published/qos1"), Some(3), "{messages}");
    assert_eq!(count("published/qos0"), Some(1), "{messages}");
    // Delivered as they really went out: rumqttd sends every message at the
    // subscription's QoS (1 here), so the QoS 0 publish arrives as QoS 1.
    let delivered = count("delivered/qos0").unwrap_or(0) + count("delivered/qos1").unwrap_or(0);
    assert_eq!(delivered, 4, "{messages}");
    let peaks = report(&[
        "--kind",
        "connections",
        "--format",
        "csv",
        "--group-by",
        "instance",
    ]);
    assert!(
        peaks.lines().any(|l| l.ends_with(",111,inst-a1,,2")),
        "{peaks}"
    );
    let none = report(&["--from", "2020-01-01", "--to", "2020-01-02"]);
    assert!(none.contains("(no rows in this window)"), "{none}");
}

async fn reqwest_text(url: &str) -> String {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let response = client.get(url.parse().unwrap()).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

/// An internal failure (here, the metering database replaced by a file
/// that is not one) answers the error table's InternalError and nothing of
/// the cause: no path of the server, no SQLite message. The cause goes to
/// the log, with the request id.
#[tokio::test]
async fn an_internal_failure_answers_the_table_message_only() {
    let t = TestServer::start(&format!(
        "{TWO_ACCOUNTS}\n[limits]\nDescribeMeteringReport = 1000\n"
    ))
    .await;
    let path = t.storage.path().join(mqgate::metering::DATABASE);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    std::fs::write(
        &path,
        b"this is not a database, and the answer must not say so",
    )
    .unwrap();
    let params = [
        ("InstanceId", "inst-a1"),
        ("StartTime", "today"),
        ("EndTime", "tomorrow"),
    ];
    let (status, body) = t.call("DescribeMeteringReport", &params).await;
    assert_eq!(
        (status, body["Code"].as_str()),
        (500, Some("InternalError")),
        "{body}"
    );
    assert_eq!(
        body["Message"],
        "An error occurred while processing your request. Try again later."
    );
    let storage = t.storage.path().display().to_string();
    let text = body.to_string();
    for leak in [storage.as_str(), "sqlite", "database", "metering"] {
        assert!(!text.contains(leak), "{leak} in {text}");
    }
    // Gone too: the database file entirely.
    std::fs::remove_file(&path).unwrap();
    let (status, body) = t.call("DescribeMeteringReport", &params).await;
    assert_eq!(status, 500, "{body}");
    assert!(!body.to_string().contains(&storage), "{body}");
    t.server.shutdown().await;
}
