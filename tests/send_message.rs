//! SendMessage against a live mqgate with real MQTT clients (rumqttc, 3.1.1
//! and 5): the message reaches every subscriber of a matching filter on
//! the instance, its payload bytes unchanged, and no one else; the answer's
//! MsgId is fresh each time; bad topics and payloads name themselves; the
//! largest payload (64 KB) fits in a form body.

mod common;

use common::{TWO_ACCOUNTS, TestServer, connect_v4, connect_v5, nothing_on, signature_login};

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
