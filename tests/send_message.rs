//! SendMessage against a live mqgate with real MQTT clients (rumqttc, 3.1.1
//! and 5): the message reaches every subscriber of a matching filter on
//! the instance, its payload bytes unchanged, and no one else; the answer's
//! MsgId is fresh each time; bad topics and payloads name themselves; the
//! largest payload (64 KB) fits in a form body, and in the query string
//! (as the Tea SDK sends it), though its URI is then too long for one.

mod common;

use common::{
    TWO_ACCOUNTS, TestServer, connect_v4, connect_v5, nothing_on, raw_http, signature_login,
};

async fn send(
    t: &TestServer,
    instance: &str,
    topic: &str,
    payload: &str,
) -> (u16, serde_json::Value) {
    t.call(
        "SendMessage",
        &[
            ("InstanceId", instance),
            ("MqttTopic", topic),
            ("Payload", payload),
        ],
    )
    .await
}

#[tokio::test]
async fn a_message_reaches_the_subscribers_of_its_topic_unchanged() {
    let t = TestServer::start(TWO_ACCOUNTS).await;
    let login =
        |id: &str, instance: &str| Some(signature_login("testid", "testsecret", instance, id));
    let mut v4 = connect_v4(t.mqtt, "GID_s@@@v4", login("GID_s@@@v4", "inst-a1"))
        .await
        .unwrap();
    let mut v5 = connect_v5(t.mqtt, "GID_s@@@v5", login("GID_s@@@v5", "inst-a1"))
        .await
        .unwrap();
    let mut elsewhere = connect_v5(t.mqtt, "GID_s@@@a2", login("GID_s@@@a2", "inst-a2"))
        .await
        .unwrap();
    v4.subscribe("devices/+/cmd").await;
    v5.subscribe("devices/#").await;
    elsewhere.subscribe("devices/#").await;

    let payload = "reboot ✓ {\"at\": 1} eyJhIjoxfQ==";
    let (status, first) = send(&t, "inst-a1", "devices/dev-1/cmd", payload).await;
    assert_eq!(status, 200, "{first}");
    let msg_id = first["MsgId"].as_str().unwrap();
    assert_eq!(msg_id.len(), 32);
    assert!(msg_id.chars().all(|c| c.is_ascii_hexdigit()));
    for device in [&mut v4, &mut v5] {
        let (topic, body) = device.next_message().await;
        assert_eq!(
            (topic.as_str(), body.as_slice()),
            ("devices/dev-1/cmd", payload.as_bytes())
        );
    }
    // Another instance's subscriber of the same filter hears nothing.
    nothing_on(&mut elsewhere, "devices/dev-1/cmd", payload.as_bytes()).await;
    // A topic only one filter matches; a fresh MsgId.
    let (_, second) = send(&t, "inst-a1", "devices/dev-1/status", "up").await;
    assert_ne!(second["MsgId"], first["MsgId"]);
    let (topic, _) = v5.next_message().await;
    assert_eq!(topic, "devices/dev-1/status");
    nothing_on(&mut v4, "devices/dev-1/status", b"up").await;
    t.server.shutdown().await;
}

#[tokio::test]
async fn bad_topics_and_payloads_name_themselves() {
    let t = TestServer::start(TWO_ACCOUNTS).await;
    for (topic, payload, parameter) in [
        ("a/+", "x", "InvalidParameter.MqttTopic"),
        ("a/#", "x", "InvalidParameter.MqttTopic"),
        ("$SYS/x", "x", "InvalidParameter.MqttTopic"),
        ("", "x", "InvalidParameter.MqttTopic"),
        ("a/b", "", "InvalidParameter.Payload"),
    ] {
        let (status, body) = send(&t, "inst-a1", topic, payload).await;
        assert_eq!(
            (status, body["Code"].as_str()),
            (400, Some(parameter)),
            "{topic:?}: {body}"
        );
    }
    // Alibaba's limit: 64 KB. mqgate's client sends POST parameters in a
    // form body, where the largest payload fits.
    let login = Some(signature_login(
        "testid",
        "testsecret",
        "inst-a1",
        "GID_big@@@1",
    ));
    let mut device = connect_v5(t.mqtt, "GID_big@@@1", login).await.unwrap();
    device.subscribe("big").await;
    let largest = "x".repeat(64 * 1024);
    let (status, body) = send(&t, "inst-a1", "big", &largest).await;
    assert_eq!(status, 200, "{body}");
    let (_, got) = device.next_message().await;
    assert_eq!(got.len(), 64 * 1024);
    let (status, body) = send(&t, "inst-a1", "big", &format!("{largest}x")).await;
    assert_eq!(
        (status, body["Code"].as_str()),
        (400, Some("InvalidParameter.Payload")),
        "{body}"
    );
    assert!(
        body["Message"].as_str().unwrap().contains("65537 bytes"),
        "{body}"
    );
    t.server.shutdown().await;
}

/// A signed SendMessage by GET, every parameter in the query string, as the
/// Tea SDK sends one, written by hand (mqgate's client cannot build a URI
/// over 65,534 bytes).
fn get_in_query(signing: mqgate::client::Signing, topic: &str, payload: &str) -> String {
    let params: Vec<(String, String)> = [
        ("InstanceId", "inst-a1"),
        ("MqttTopic", topic),
        ("Payload", payload),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .into();
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let now = chrono::Utc::now();
    let (key, secret) = ("testid", "testsecret");
    let (query, headers) = match signing {
        mqgate::client::Signing::V1 => {
            let signed =
                mqgate::client::sign_v1("GET", "SendMessage", &params, key, secret, now, &nonce);
            (
                mqgate::client::encode_form(&signed),
                vec![("host".to_string(), "mqgate".to_string())],
            )
        }
        mqgate::client::Signing::V3 => {
            let signed = mqgate::client::sign_v3(
                "GET",
                "mqgate",
                "SendMessage",
                &params,
                key,
                secret,
                now,
                &nonce,
            );
            (signed.query, signed.headers)
        }
    };
    let headers: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    format!("GET /?{query} HTTP/1.1\r\n{headers}\r\n")
}

#[tokio::test]
async fn a_64_kb_payload_in_the_query_string_arrives_whole() {
    use mqgate::client::Signing::{V1, V3};
    let t = TestServer::start(TWO_ACCOUNTS).await;
    let login = Some(signature_login(
        "testid",
        "testsecret",
        "inst-a1",
        "GID_query@@@1",
    ));
    let mut device = connect_v5(t.mqtt, "GID_query@@@1", login).await.unwrap();
    device.subscribe("query/+").await;
    const LIMIT: usize = 64 * 1024;
    // Base64's alphabet (+, / and = percent-encoded), and 3-byte
    // characters, nine bytes each percent-encoded: a query of about
    // 192 KiB, three times the longest URI.
    let base64: String = "AZaz09+/=".chars().cycle().take(LIMIT).collect();
    let euros = format!("{}x", "€".repeat(LIMIT / 3));
    assert_eq!((base64.len(), euros.len()), (LIMIT, LIMIT));
    let too_big = "x".repeat(LIMIT + 1);
    let requests = [
        get_in_query(V1, "query/base64", &base64),
        get_in_query(V1, "query/euros", &euros),
        get_in_query(V3, "query/v3", &euros),
        get_in_query(V1, "query/too-big", &too_big),
        get_in_query(V1, "query/short", "after the long ones"),
    ];
    assert!(requests[1].len() > 3 * 65_534, "{}", requests[1].len());
    // One connection, every request written at once: each is found after
    // the one before it.
    let answers = raw_http(t.server.http_addr, &requests).await;
    assert_eq!(answers.len(), requests.len(), "{answers:?}");
    let json = |i: usize| -> serde_json::Value { serde_json::from_str(&answers[i].body).unwrap() };
    for i in [0, 1, 2, 4] {
        assert_eq!(answers[i].status, 200, "{}: {}", i, answers[i].body);
        assert_eq!(
            json(i)["MsgId"].as_str().unwrap().len(),
            32,
            "{}",
            answers[i].body
        );
    }
    // One byte over: the payload's own error, not the URI's 414.
    assert_eq!(
        (answers[3].status, json(3)["Code"].as_str()),
        (400, Some("InvalidParameter.Payload")),
        "{}",
        answers[3].body
    );
    assert!(json(3)["Message"].as_str().unwrap().contains("65537 bytes"));
    for (topic, payload) in [
        ("query/base64", base64.as_str()),
        ("query/euros", euros.as_str()),
        ("query/v3", euros.as_str()),
        ("query/short", "after the long ones"),
    ] {
        let (got, body) = device.next_message().await;
        assert_eq!(got, topic);
        assert!(
            body == payload.as_bytes(),
            "{topic}: {} bytes arrived",
            body.len()
        );
    }
    nothing_on(&mut device, "query/too-big", too_big.as_bytes()).await;
    t.server.shutdown().await;
}
