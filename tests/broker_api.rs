//! The broker API that actions and the EMQX API drive
//! (`mqgate::broker::InstanceBroker`), against a live mqgate with real MQTT
//! clients (rumqttc, 3.1.1 and 5): `publish` reaches the instance's
//! subscribers with the payload's bytes unchanged and nobody else;
//! `subscribe_for` and `unsubscribe_for` act on the client's own
//! connection; `kick` ends the connection and the batch view forgets the
//! client at once.

mod common;

use common::{Device, Seen, TWO_ACCOUNTS, TestServer, connect_v4, connect_v5, signature_login};
use mqgate::broker::BrokerError;
use mqgate::broker::registry::SubscriptionOptions;
use std::time::Duration;

/// The next PUBLISH a device receives: topic, payload, QoS.
async fn delivery(device: &mut Device) -> (String, Vec<u8>, u8) {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), device.events.recv()).await {
            Ok(Some(Seen::V4(Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)))))) => {
                return (p.topic, p.payload.to_vec(), p.qos as u8);
            }
            Ok(Some(Seen::V5(Ok(rumqttc::v5::Event::Incoming(
                rumqttc::v5::mqttbytes::v5::Packet::Publish(p),
            ))))) => {
                let topic = String::from_utf8(p.topic.to_vec()).unwrap();
                return (topic, p.payload.to_vec(), p.qos as u8);
            }
            Ok(Some(Seen::V4(Err(e)))) => panic!("connection ended: {e:?}"),
            Ok(Some(Seen::V5(Err(e)))) => panic!("connection ended: {e:?}"),
            Ok(Some(_)) => continue,
            Ok(None) => panic!("event loop gone"),
            Err(_) => panic!("no message within 5 s"),
        }
    }
}

/// No PUBLISH arrives within half a second.
async fn nothing_arrives(device: &mut Device) {
    let got = tokio::time::timeout(Duration::from_millis(500), delivery(device)).await;
    assert!(got.is_err(), "unexpected delivery: {got:?}");
}

#[tokio::test]
async fn publish_reaches_the_instances_subscribers_with_the_bytes_unchanged() {
    let t = TestServer::start(TWO_ACCOUNTS).await;
    let broker = t.server.brokers.instance("inst-a1").unwrap();
    let mut v4 = connect_v4(t.mqtt, "GID_p@@@v4", None).await.unwrap();
    let mut v5 = connect_v5(t.mqtt, "GID_p@@@v5", None).await.unwrap();
    v4.subscribe("cmd/#").await; // QoS 1 (the helper's)
    v5.subscribe("cmd/+/reboot").await;
    // A subscriber of the same topic in another instance (inst-b1).
    let login = signature_login("key-b", "secret-b", "inst-b1", "GID_p@@@other");
    let mut other = connect_v4(t.mqtt, "GID_p@@@other", Some(login))
        .await
        .unwrap();
    other.subscribe("cmd/#").await;

    // Not UTF-8, NUL bytes: delivered as is (4 KiB: rumqttc's clients take
    // 10 KiB packets by default).
    let mut payload: Vec<u8> = (0..=255u8).cycle().take(4 * 1024).collect();
    payload[0] = 0xFF;
    broker
        .publish("cmd/dev-1/reboot", bytes::Bytes::from(payload.clone()))
        .await
        .unwrap();
    for device in [&mut v4, &mut v5] {
        let (topic, body, qos) = delivery(device).await;
        assert_eq!(topic, "cmd/dev-1/reboot");
        assert_eq!(body, payload);
        assert_eq!(qos, 1, "delivered at the subscription's QoS");
    }
    nothing_arrives(&mut other).await;

    for bad in ["cmd/#", "cmd/+/x", ""] {
        let e = broker
            .publish(bad, bytes::Bytes::from_static(b"x"))
            .await
            .unwrap_err();
        assert_eq!(e, BrokerError::InvalidTopic(bad.to_string()));
    }
    t.server.shutdown().await;
}

#[tokio::test]
async fn subscribe_and_unsubscribe_for_a_client_act_on_its_own_connection() {
    let t = TestServer::start(TWO_ACCOUNTS).await;
    let broker = t.server.brokers.instance("inst-a1").unwrap();
    let mut target = connect_v5(t.mqtt, "GID_s@@@target", None).await.unwrap();
    let sender = connect_v4(t.mqtt, "GID_s@@@sender", None).await.unwrap();
    let options = SubscriptionOptions {
        qos: 1,
        nl: 0,
        rap: 0,
        rh: 0,
    };
    let codes = broker
        .subscribe_for("GID_s@@@target", vec![("alerts/#".to_string(), options)])
        .await
        .unwrap();
    assert_eq!(codes, vec![1]);
    let subscriptions = broker
        .sessions
        .view("GID_s@@@target")
        .unwrap()
        .subscriptions;
    assert_eq!(subscriptions.get("alerts/#"), Some(&options));
    sender.publish("alerts/fire", b"now").await;
    let (topic, body, _) = delivery(&mut target).await;
    assert_eq!(
        (topic.as_str(), body.as_slice()),
        ("alerts/fire", &b"now"[..])
    );

    broker
        .unsubscribe_for("GID_s@@@target", vec!["alerts/#".to_string()])
        .await
        .unwrap();
    assert!(
        broker
            .sessions
            .view("GID_s@@@target")
            .unwrap()
            .subscriptions
            .is_empty()
    );
    sender.publish("alerts/fire", b"again").await;
    nothing_arrives(&mut target).await;

    let e = broker
        .subscribe_for("GID_s@@@nobody", vec![("a".to_string(), options)])
        .await
        .unwrap_err();
    assert_eq!(e, BrokerError::NotConnected);
    let e = broker
        .unsubscribe_for("GID_s@@@nobody", vec!["a".to_string()])
        .await
        .unwrap_err();
    assert_eq!(e, BrokerError::NotConnected);
    t.server.shutdown().await;
}

/// rumqttd answers no UNSUBSCRIBE of a filter that is not subscribed and
/// one UNSUBACK per removed filter; the front layer makes it one answer per
/// UNSUBSCRIBE, as MQTT requires.
#[tokio::test]
async fn every_unsubscribe_gets_exactly_one_answer() {
    let t = TestServer::start(TWO_ACCOUNTS).await;
    let broker = t.server.brokers.instance("inst-a1").unwrap();
    let sender = connect_v4(t.mqtt, "GID_u@@@sender", None).await.unwrap();
    for (client_id, v5) in [("GID_u@@@v4", false), ("GID_u@@@v5", true)] {
        let mut device = match v5 {
            false => connect_v4(t.mqtt, client_id, None).await.unwrap(),
            true => connect_v5(t.mqtt, client_id, None).await.unwrap(),
        };
        device.subscribe("u/1").await;
        device.unsubscribe("never/subscribed").await;
        let (kind, codes) = device.next_ack().await.unwrap();
        assert_eq!(kind, "UnsubAck");
        if v5 {
            assert_eq!(codes, ["NoSubscriptionExisted"]);
        }
        device.unsubscribe("u/1").await;
        let (kind, codes) = device.next_ack().await.unwrap();
        assert_eq!(kind, "UnsubAck");
        if v5 {
            assert_eq!(codes, ["Success"]);
        }
        sender.publish("u/1", b"gone").await;
        nothing_arrives(&mut device).await;

        // The API: two subscribed filters, one not, one repeated; done in
        // one call, and the client sees none of rumqttd's answers.
        device.subscribe("u/2").await;
        device.subscribe("u/3").await;
        let filters = ["u/2", "nope", "u/3", "u/2"].map(String::from).to_vec();
        broker.unsubscribe_for(client_id, filters).await.unwrap();
        let view = broker.sessions.view(client_id).unwrap();
        assert!(view.subscriptions.is_empty(), "{:?}", view.subscriptions);
        let stray = tokio::time::timeout(Duration::from_millis(300), device.next_ack()).await;
        assert!(
            stray.is_err(),
            "the client saw an answer meant for the API: {stray:?}"
        );
    }
    t.server.shutdown().await;
}

#[tokio::test]
async fn a_kick_ends_the_connection_and_the_batch_view_forgets_the_client_at_once() {
    let t = TestServer::start(TWO_ACCOUNTS).await;
    let broker = t.server.brokers.instance("inst-a1").unwrap();
    let mut device = connect_v5(t.mqtt, "GID_k@@@dev", None).await.unwrap();
    // Cached as online for the TTL (1 s by default)...
    assert!(broker.is_online_cached("GID_k@@@dev"));
    assert!(broker.kick("GID_k@@@dev", "kicked by a test").await);
    // ... but a kick made through the API is seen at once.
    assert!(!broker.is_online_cached("GID_k@@@dev"));
    assert!(!broker.is_online("GID_k@@@dev"));
    assert!(device.ended().await.contains("AdministrativeAction"));
    assert!(!broker.kick("GID_k@@@dev", "again").await);
    t.server.shutdown().await;
}
