//! Device traces against a live mqgate with real MQTT clients: each way a
//! connection ends reads as Alibaba's trace values say (disconnected by
//! client, closed by client, clientId conflict, no heart, kicked), refused
//! logins are traced, and QueryMqttTraceDevice pages through a device's
//! events exactly once each, in either order.

mod common;

use common::{TWO_ACCOUNTS, TestServer, connect_v4, connect_v5, signature_login};

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// (Action, ActionInfo) of a client's events, oldest first, once there are
/// at least `count` of them (within 10 s).
async fn events(t: &TestServer, client_id: &str, count: usize) -> Vec<(String, String)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = chrono::Utc::now().timestamp_millis().to_string();
        let (status, body) = t
            .call(
                "QueryMqttTraceDevice",
                &[
                    ("InstanceId", "inst-a1"),
                    ("MqttRegionId", "cn-shanghai"),
                    ("ClientId", client_id),
                    (
                        "BeginTime",
                        &(chrono::Utc::now().timestamp_millis() - 600_000).to_string(),
                    ),
                    ("EndTime", &now),
                    ("CurrentPage", "1"),
                    ("PageSize", "100"),
                ],
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let list: Vec<(String, String)> = body["DeviceInfoList"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                assert_eq!(
                    e["ActionCode"].as_str().unwrap(),
                    format!("mqtt.trace.action.{}", e["Action"].as_str().unwrap())
                );
                (
                    e["Action"].as_str().unwrap().to_string(),
                    e["ActionInfo"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        if list.len() >= count {
            assert_eq!(body["Total"].as_u64(), Some(list.len() as u64), "{body}");
            return list;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{client_id}: {list:?}, not {count} events"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A raw MQTT 3.1.1 client (anonymous, clean session) with this keepalive
/// in seconds, once its CONNACK arrived; it sends nothing more.
async fn raw_connect(t: &TestServer, client_id: &[u8], keep_alive: u8) -> tokio::net::TcpStream {
    let mut raw = tokio::net::TcpStream::connect(t.mqtt).await.unwrap();
    let mut connect = vec![0x10, (10 + 2 + client_id.len()) as u8];
    connect.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, keep_alive]);
    connect.extend_from_slice(&[0, client_id.len() as u8]);
    connect.extend_from_slice(client_id);
    raw.write_all(&connect).await.unwrap();
    let mut connack = [0u8; 4];
    raw.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0]);
    raw
}

fn pair(action: &str, info: &str) -> (String, String) {
    (action.to_string(), info.to_string())
}

#[tokio::test]
async fn every_way_a_connection_ends_is_traced_with_its_reason() {
    let t = TestServer::start(TWO_ACCOUNTS).await;

    // DISCONNECT (rumqttc sends it), then a bare close of the socket.
    let device = connect_v4(t.mqtt, "GID_t@@@polite", None).await.unwrap();
    device.v4.as_ref().unwrap().disconnect().await.unwrap();
    assert_eq!(
        events(&t, "GID_t@@@polite", 2).await,
        [
            pair("connect", "accepted"),
            pair("disconnect", "disconnected by client")
        ]
    );
    let raw = raw_connect(&t, b"GID_t@@@abrupt", 60).await;
    drop(raw);
    assert_eq!(
        events(&t, "GID_t@@@abrupt", 2).await,
        [
            pair("connect", "accepted"),
            pair("close", "closed by client")
        ]
    );

    // Taken over by a second connection with the same client id.
    let _first = connect_v5(t.mqtt, "GID_t@@@twice", None).await.unwrap();
    let _second = connect_v5(t.mqtt, "GID_t@@@twice", None).await.unwrap();
    assert_eq!(
        events(&t, "GID_t@@@twice", 3).await,
        [
            pair("connect", "accepted"),
            pair("close", "clientId conflict"),
            pair("connect", "accepted")
        ]
    );

    // Kicked by CloseConnection.
    let _kicked = connect_v4(t.mqtt, "GID_t@@@kicked", None).await.unwrap();
    let (status, _) = t
        .call(
            "CloseConnection",
            &[("InstanceId", "inst-a1"), ("ClientId", "GID_t@@@kicked")],
        )
        .await;
    assert_eq!(status, 200);
    let kicked = events(&t, "GID_t@@@kicked", 2).await;
    assert_eq!(kicked[1].0, "close");
    assert!(
        kicked[1].1.starts_with("kicked: ") && kicked[1].1.contains("CloseConnection"),
        "{kicked:?}"
    );

    // Silent past its keepalive (1 s): a raw client that sends CONNECT and
    // nothing more.
    let mut raw = raw_connect(&t, b"GID_t@@@silent", 1).await;
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), raw.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the silent client was not disconnected");
    assert_eq!(
        events(&t, "GID_t@@@silent", 2).await,
        [pair("connect", "accepted"), pair("close", "no heart")]
    );

    // A login refused for its credentials, on the instance it named.
    let mut login = signature_login("testid", "wrong-secret", "inst-a1", "GID_t@@@refused");
    login.1 = "bad".into();
    assert!(
        connect_v4(t.mqtt, "GID_t@@@refused", Some(login))
            .await
            .is_err()
    );
    assert_eq!(
        events(&t, "GID_t@@@refused", 1).await,
        [pair("connect", "not authorized")]
    );
    t.server.shutdown().await;
}

#[tokio::test]
async fn a_devices_events_page_exactly_once_in_either_order() {
    let t = TestServer::start(TWO_ACCOUNTS).await;
    for _ in 0..12 {
        let device = connect_v4(t.mqtt, "GID_t@@@pages", None).await.unwrap();
        device.v4.as_ref().unwrap().disconnect().await.unwrap();
        // The next connection waits for this one's end, so that events
        // alternate connect / disconnect.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while t.online("inst-a1", "GID_t@@@pages").await {
            assert!(tokio::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let all = events(&t, "GID_t@@@pages", 24).await;
    let begin = (chrono::Utc::now().timestamp_millis() - 600_000).to_string();
    let end = chrono::Utc::now().timestamp_millis().to_string();
    for reverse in ["false", "true"] {
        let mut walked = Vec::new();
        for page in 1.. {
            let page = page.to_string();
            let (status, body) = t
                .call(
                    "QueryMqttTraceDevice",
                    &[
                        ("InstanceId", "inst-a1"),
                        ("MqttRegionId", "cn-shanghai"),
                        ("ClientId", "GID_t@@@pages"),
                        ("BeginTime", &begin),
                        ("EndTime", &end),
                        ("CurrentPage", &page),
                        ("PageSize", "5"),
                        ("Reverse", reverse),
                    ],
                )
                .await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["Total"], 24);
            let list = body["DeviceInfoList"].as_array().unwrap();
            if list.is_empty() {
                break;
            }
            walked.extend(list.iter().map(|e| {
                (
                    e["Time"].as_str().unwrap().to_string(),
                    e["Action"].as_str().unwrap().to_string(),
                )
            }));
        }
        assert_eq!(walked.len(), 24);
        let mut sorted = walked.clone();
        sorted.sort();
        if reverse == "true" {
            sorted.reverse();
        }
        assert_eq!(walked, sorted, "Reverse={reverse}: out of order");
        let actions: Vec<&str> = walked.iter().map(|(_, a)| a.as_str()).collect();
        assert_eq!(actions.iter().filter(|a| **a == "connect").count(), 12);
        let _ = &all;
    }
    // Bad ranges and pages name their parameter.
    for (params, code) in [
        (
            vec![("BeginTime", end.as_str()), ("EndTime", begin.as_str())],
            "InvalidParameter.BeginTime",
        ),
        (
            vec![("BeginTime", "0"), ("EndTime", end.as_str())],
            "InvalidParameter.BeginTime",
        ),
        (vec![("PageSize", "101")], "InvalidParameter.PageSize"),
        (vec![("CurrentPage", "0")], "InvalidParameter.CurrentPage"),
    ] {
        let mut all = vec![
            ("InstanceId", "inst-a1"),
            ("MqttRegionId", "cn-shanghai"),
            ("ClientId", "GID_t@@@pages"),
            ("BeginTime", begin.as_str()),
            ("EndTime", end.as_str()),
            ("CurrentPage", "1"),
            ("PageSize", "5"),
        ];
        for (k, v) in &params {
            all.retain(|(key, _)| key != k);
            all.push((k, v));
        }
        let (status, body) = t.call("QueryMqttTraceDevice", &all).await;
        assert_eq!(
            (status, body["Code"].as_str()),
            (400, Some(code)),
            "{params:?}: {body}"
        );
    }
    t.server.shutdown().await;
}

/// A call with the common trace parameters (instance inst-a1, the last ten
/// minutes) and `params`; the answer, 200 expected.
async fn trace_call(t: &TestServer, action: &str, params: &[(&str, &str)]) -> serde_json::Value {
    let begin = (chrono::Utc::now().timestamp_millis() - 600_000).to_string();
    let end = (chrono::Utc::now().timestamp_millis() + 1_000).to_string();
    let mut all = vec![
        ("InstanceId", "inst-a1"),
        ("MqttRegionId", "cn-shanghai"),
        ("BeginTime", begin.as_str()),
        ("EndTime", end.as_str()),
    ];
    all.extend_from_slice(params);
    let (status, body) = t.call(action, &all).await;
    assert_eq!(status, 200, "{action}: {body}");
    body
}

/// (Action, ClientId) of a list of message events.
fn actions(list: &serde_json::Value) -> Vec<(String, String)> {
    let mut seen: Vec<(String, String)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert!(
                e["ActionCode"]
                    .as_str()
                    .unwrap()
                    .starts_with("mqtt.trace.action.msg.")
            );
            (
                e["Action"].as_str().unwrap().to_string(),
                e["ClientId"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    seen.sort();
    seen
}

#[tokio::test]
async fn a_message_is_traced_from_its_publisher_to_each_subscriber() {
    let t = TestServer::start(TWO_ACCOUNTS).await;
    let mut v4 = connect_v4(t.mqtt, "GID_m@@@sub4", None).await.unwrap();
    let mut v5 = connect_v5(t.mqtt, "GID_m@@@sub5", None).await.unwrap();
    v4.subscribe("orders/#").await;
    v5.subscribe("orders/+").await;
    let publisher = connect_v4(t.mqtt, "GID_m@@@pub", None).await.unwrap();

    // From SendMessage: the answer's MsgId is the trace's.
    let (status, body) = t
        .call(
            "SendMessage",
            &[
                ("InstanceId", "inst-a1"),
                ("MqttTopic", "orders/1"),
                ("Payload", "from the API"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let api_msg = body["MsgId"].as_str().unwrap().to_string();
    for device in [&mut v4, &mut v5] {
        assert_eq!(device.next_message().await.1, b"from the API");
    }
    // From a device.
    publisher.publish("orders/2", b"from a device").await;
    for device in [&mut v4, &mut v5] {
        assert_eq!(device.next_message().await.1, b"from a device");
    }

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let expected = |who: &str| {
        vec![
            ("ack".to_string(), who.to_string()),
            ("sub".to_string(), who.to_string()),
        ]
    };
    let mut want = expected("GID_m@@@sub4");
    want.extend(expected("GID_m@@@sub5"));
    want.sort();
    // rumqttc acknowledges QoS 1 deliveries right away; wait for the acks
    // to be committed too.
    let deliveries = loop {
        let body = trace_call(
            &t,
            "QueryMqttTraceMessageSubscribe",
            &[
                ("MsgId", &api_msg),
                ("CurrentPage", "1"),
                ("PageSize", "100"),
            ],
        )
        .await;
        if actions(&body["MessageTraceLists"]) == want {
            break body;
        }
        assert!(tokio::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(deliveries["Total"], 4);
    let published = trace_call(&t, "QueryMqttTraceMessagePublish", &[("MsgId", &api_msg)]).await;
    assert_eq!(
        actions(&published["MessageTraceLists"]),
        [("pub_api".to_string(), "testid".to_string())]
    );
    assert_eq!(
        published["MessageTraceLists"][0]["ActionInfo"],
        "Pub From OpenAPI"
    );

    // The device's message, found through the publisher's own trace. Its
    // event was recorded after the API message's acknowledgements waited
    // for above, and may be committed in a later batch (the trace writer
    // runs at nice 19, later still on a loaded machine): wait for it too.
    let of_client = loop {
        let body = trace_call(
            &t,
            "QueryMqttTraceMessageOfClient",
            &[
                ("ClientId", "GID_m@@@pub"),
                ("CurrentPage", "1"),
                ("PageSize", "10"),
            ],
        )
        .await;
        if body["Total"] != 0 {
            break body;
        }
        assert!(tokio::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(of_client["Total"], 1, "{of_client}");
    let entry = &of_client["MessageOfClientList"][0];
    assert_eq!(
        (entry["Action"].as_str(), entry["ActionInfo"].as_str()),
        (Some("pub_mqtt"), Some("Pub From Mqtt Client"))
    );
    let device_msg = entry["MsgId"].as_str().unwrap().to_string();
    assert_ne!(device_msg, api_msg);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let body = trace_call(
            &t,
            "QueryMqttTraceMessageSubscribe",
            &[
                ("MsgId", &device_msg),
                ("ClientId", "GID_m@@@sub5"),
                ("CurrentPage", "1"),
                ("PageSize", "100"),
            ],
        )
        .await;
        if actions(&body["MessageTraceLists"]) == expected("GID_m@@@sub5") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The subscriber's own trace holds both messages pushed to it.
    let of_subscriber = trace_call(
        &t,
        "QueryMqttTraceMessageOfClient",
        &[
            ("ClientId", "GID_m@@@sub4"),
            ("CurrentPage", "1"),
            ("PageSize", "10"),
        ],
    )
    .await;
    let pushed: Vec<&str> = of_subscriber["MessageOfClientList"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["Action"] == "sub")
        .map(|e| e["MsgId"].as_str().unwrap())
        .collect();
    assert_eq!(pushed, [api_msg.as_str(), device_msg.as_str()]);

    // An unknown MsgId finds nothing; a malformed one names itself.
    let unknown = trace_call(
        &t,
        "QueryMqttTraceMessagePublish",
        &[("MsgId", &"0".repeat(32))],
    )
    .await;
    assert_eq!(unknown["MessageTraceLists"], serde_json::json!([]));
    let (status, body) = t
        .call(
            "QueryMqttTraceMessagePublish",
            &[
                ("InstanceId", "inst-a1"),
                ("MqttRegionId", "x"),
                ("MsgId", "nope"),
                ("BeginTime", "1"),
                ("EndTime", "2"),
            ],
        )
        .await;
    assert_eq!(
        (status, body["Code"].as_str()),
        (400, Some("InvalidParameter.MsgId")),
        "{body}"
    );
    t.server.shutdown().await;
}

/// SIGKILL while devices publish flat out: after the restart the trace
/// store opens and answers, every event committed before the kill is
/// still there, and what was lost is only what had not been committed
/// (the last batch, at most 100 ms of events, and the queue).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_under_load_loses_only_the_uncommitted_batch() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("traces.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"127.0.0.1:0\"\n[mqtt]\nlisten = \"127.0.0.1:0\"\nanonymous_instance = \"inst-a1\"\n\
             [storage]\ndir = {:?}\n[[accounts]]\nid = \"111\"\n  [[accounts.instances]]\n  id = \"inst-a1\"\n\
             [[accounts.users]]\n  name = \"root\"\n  access_key_id = \"testid\"\n  access_key_secret = \"testsecret\"\n  root = true\n",
            dir.path().join("data").display().to_string()
        ),
    )
    .unwrap();
    let start = || {
        let (child, line) = common::spawn_mqgate_line(
            &["serve", "--config", config.to_str().unwrap()],
            std::process::Stdio::null(),
        );
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .unwrap()
                .to_string()
        };
        (
            child,
            format!("http://{}", field("http=")),
            field("mqtt=").parse::<std::net::SocketAddr>().unwrap(),
        )
    };
    let count = |endpoint: String, client_id: &'static str| async move {
        let now = chrono::Utc::now().timestamp_millis();
        let params: Vec<(String, String)> = [
            ("InstanceId", "inst-a1".to_string()),
            ("MqttRegionId", "cn-shanghai".to_string()),
            ("ClientId", client_id.to_string()),
            ("BeginTime", (now - 600_000).to_string()),
            ("EndTime", (now + 1_000).to_string()),
            ("CurrentPage", "1".to_string()),
            ("PageSize", "1".to_string()),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
        let (status, body) = mqgate::client::call(
            &endpoint,
            "POST",
            mqgate::client::Signing::V1,
            "QueryMqttTraceMessageOfClient",
            &params,
            "testid",
            "testsecret",
        )
        .await
        .unwrap();
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["Total"]
            .as_u64()
            .unwrap()
    };
    let (mut child, endpoint, mqtt) = start();
    let publisher = connect_v4(mqtt, "GID_k@@@pub", None).await.unwrap();
    // Load: the publisher sends as fast as the broker takes it.
    let flood = tokio::spawn(async move {
        for i in 0u64.. {
            publisher.publish("load/1", &i.to_be_bytes()).await;
            tokio::task::yield_now().await;
        }
    });
    // Wait until a good number of events are committed, then kill.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let committed = loop {
        let seen = count(endpoint.clone(), "GID_k@@@pub").await;
        if seen >= 500 {
            break seen;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {seen} events committed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    child.kill().unwrap();
    child.wait().unwrap();
    flood.abort();

    let (mut child, endpoint, _) = start();
    let kept = count(endpoint, "GID_k@@@pub").await;
    assert!(
        kept >= committed,
        "{kept} events after the restart, {committed} were committed before"
    );
    eprintln!(
        "trace events committed before SIGKILL (seen by a query): {committed}; kept after restart: {kept}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

/// A raw MQTT 5 client (anonymous, clean start) with a will on
/// `will/{client_id}`, once its CONNACK arrived.
async fn raw_v5_with_will(t: &TestServer, client_id: &str) -> tokio::net::TcpStream {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 0x06, 0, 60, 0];
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    body.push(0); // will properties
    let topic = format!("will/{client_id}");
    body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(&4u16.to_be_bytes());
    body.extend_from_slice(b"gone");
    let mut connect = vec![0x10, body.len() as u8];
    connect.extend_from_slice(&body);
    let mut raw = tokio::net::TcpStream::connect(t.mqtt).await.unwrap();
    raw.write_all(&connect).await.unwrap();
    let mut head = [0u8; 2];
    raw.read_exact(&mut head).await.unwrap();
    let mut rest = vec![0u8; head[1] as usize];
    raw.read_exact(&mut rest).await.unwrap();
    assert_eq!((head[0], rest[1]), (0x20, 0), "CONNACK refused: {rest:?}");
    raw
}

/// MQTT 5: a DISCONNECT with reason 0x00 drops the will, any other keeps
/// it (published once the connection closes), whether or not the packet
/// writes out its (empty) property length. rumqttd alone drops the will
/// on every DISCONNECT and stalls on the short form.
#[tokio::test]
async fn an_mqtt5_disconnect_keeps_the_will_unless_its_reason_is_normal() {
    let t = TestServer::start(TWO_ACCOUNTS).await;
    let mut watcher = connect_v4(t.mqtt, "GID_w@@@watcher", None).await.unwrap();
    watcher.subscribe("will/#").await;
    for (client_id, disconnect, will) in [
        ("GID_w@@@normal-short", vec![0xE0, 0x01, 0x00], false),
        ("GID_w@@@normal-long", vec![0xE0, 0x02, 0x00, 0x00], false),
        ("GID_w@@@with-will", vec![0xE0, 0x01, 0x04], true),
        ("GID_w@@@error", vec![0xE0, 0x02, 0x80, 0x00], true),
    ] {
        let mut raw = raw_v5_with_will(&t, client_id).await;
        raw.write_all(&disconnect).await.unwrap();
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(10), raw.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "{client_id}: the connection was not closed");
        assert_eq!(
            events(&t, client_id, 2).await,
            [
                pair("connect", "accepted"),
                pair("disconnect", "disconnected by client")
            ]
        );
        let topic = format!("will/{client_id}");
        let got = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                let (got, payload) = watcher.next_message().await;
                if got == topic {
                    return payload;
                }
            }
        })
        .await;
        match will {
            true => assert_eq!(
                got.expect("no will published").as_slice(),
                b"gone",
                "{client_id}"
            ),
            false => assert!(got.is_err(), "{client_id}: its will was published"),
        }
    }
    t.server.shutdown().await;
}

/// MQTT 5 topic aliases both ways. A subscriber that offers aliases
/// (Topic Alias Maximum) still gets each topic of a wildcard subscription
/// under its own name; a publisher that names a topic by its alias alone
/// is traced under that topic, so its message's deliveries are found by
/// its MsgId.
#[tokio::test]
async fn topic_aliases_are_resolved_for_subscribers_and_for_the_trace() {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::PublishProperties;
    let t = TestServer::start(TWO_ACCOUNTS).await;
    let mut options = common::v5_options(t.mqtt, "GID_m@@@aliased-sub");
    options.set_topic_alias_max(Some(10));
    let mut subscriber = common::connect_v5_with(options).await.unwrap();
    subscriber.subscribe("alias/+").await;
    let publisher = connect_v5(t.mqtt, "GID_m@@@aliased-pub", None)
        .await
        .unwrap();
    let client = publisher.v5.as_ref().unwrap();
    let alias = |n| {
        Some(PublishProperties {
            topic_alias: Some(n),
            ..Default::default()
        })
    };
    let sends: [(&str, &str, Option<PublishProperties>); 3] = [
        ("alias/1", "one", alias(1)),
        ("", "one again", alias(1)),
        ("alias/2", "two", None),
    ];
    for (topic, payload, properties) in sends {
        match properties {
            Some(p) => client
                .publish_with_properties(topic, QoS::AtLeastOnce, false, payload, p)
                .await
                .unwrap(),
            None => client
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .await
                .unwrap(),
        }
    }
    let mut received = Vec::new();
    for _ in 0..3 {
        let (topic, payload) = subscriber.next_message().await;
        received.push((topic, String::from_utf8(payload).unwrap()));
    }
    assert_eq!(
        received,
        [
            ("alias/1".to_string(), "one".to_string()),
            ("alias/1".to_string(), "one again".to_string()),
            ("alias/2".to_string(), "two".to_string()),
        ]
    );

    // Each of the three MsgIds leads to its push to the subscriber.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let published = loop {
        let body = trace_call(
            &t,
            "QueryMqttTraceMessageOfClient",
            &[
                ("ClientId", "GID_m@@@aliased-pub"),
                ("CurrentPage", "1"),
                ("PageSize", "10"),
            ],
        )
        .await;
        if body["Total"] == 3 {
            break body;
        }
        assert!(tokio::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let ids: Vec<String> = published["MessageOfClientList"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["MsgId"].as_str().unwrap().to_string())
        .collect();
    for id in &ids {
        assert_ne!(id, &"0".repeat(32));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let body = trace_call(
                &t,
                "QueryMqttTraceMessageSubscribe",
                &[
                    ("MsgId", id),
                    ("ClientId", "GID_m@@@aliased-sub"),
                    ("CurrentPage", "1"),
                    ("PageSize", "10"),
                ],
            )
            .await;
            if actions(&body["MessageTraceLists"])
                .contains(&("sub".to_string(), "GID_m@@@aliased-sub".to_string()))
            {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{id}: {body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    t.server.shutdown().await;
}
