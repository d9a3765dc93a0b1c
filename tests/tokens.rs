//! Token-mode logins with real MQTT clients (rumqttc, 3.1.1 and 5) against
//! a live mqgate: tokens from ApplyToken allow their topics and nothing
//! else (SUBACK failures, PUBACK 0x87, a closed 3.1.1 connection, DISCONNECT
//! 0x87 for QoS 0); bad logins are refused at CONNECT; a revoked or expired
//! token is announced on `$SYS/tokenInvalidNotice` and its rights end; an
//! uploaded token restores them without reconnecting.

mod common;

use common::{Device, TWO_ACCOUNTS, TestServer, connect_v4, connect_v5, delivered, nothing_on};
use std::time::Duration;

const INSTANCE: &str = "inst-a1";

async fn apply(t: &TestServer, actions: &str, resources: &str, valid_ms: i64) -> String {
    let expire = (chrono::Utc::now().timestamp_millis() + valid_ms).to_string();
    let (status, body) = t
        .call(
            "ApplyToken",
            &[
                ("InstanceId", INSTANCE),
                ("Actions", actions),
                ("Resources", resources),
                ("ExpireTime", &expire),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["Token"].as_str().unwrap().to_string()
}

fn token_login(password: String) -> Option<(String, String)> {
    Some((format!("Token|testid|{INSTANCE}"), password))
}

async fn connect(t: &TestServer, v5: bool, client_id: &str, password: String) -> Device {
    let login = token_login(password);
    let device = match v5 {
        false => connect_v4(t.mqtt, client_id, login).await,
        true => connect_v5(t.mqtt, client_id, login).await,
    };
    device.unwrap_or_else(|e| panic!("{client_id} could not log in: {e}"))
}

/// The next message on `topic`, skipping others (notices arrive unasked).
async fn message_on(device: &mut Device, topic: &str) -> serde_json::Value {
    loop {
        let (got, payload) = device.next_message().await;
        if got == topic {
            return serde_json::from_slice(&payload).unwrap_or(serde_json::Value::Null);
        }
    }
}

#[tokio::test]
async fn a_token_allows_its_topics_and_refuses_the_others() {
    let t = TestServer::start(TWO_ACCOUNTS).await;
    let read = apply(&t, "R", "cmd/+,alerts/#", 3_600_000).await;
    let write = apply(&t, "W", "status/#", 3_600_000).await;
    // Anonymous clients of the same instance, with every topic.
    let mut watcher = connect_v4(t.mqtt, "GID_t@@@watcher", None).await.unwrap();
    watcher.subscribe("status/#").await;
    watcher.subscribe("forbidden/#").await;
    let sender = connect_v4(t.mqtt, "GID_t@@@sender", None).await.unwrap();

    for v5 in [false, true] {
        let id = format!("GID_t@@@dev-{v5}");
        let mut device = connect(&t, v5, &id, format!("R|{read}|W|{write}")).await;

        device.send_subscribe("cmd/+").await;
        let (kind, codes) = device.next_ack().await.unwrap();
        assert_eq!(kind, "SubAck");
        assert_eq!(codes, ["Success(AtLeastOnce)"]);
        delivered(&sender, &mut device, "cmd/reboot").await;

        // Not covered: "cmd/#" is wider than "cmd/+".
        for filter in ["other/x", "cmd/#", "status/1"] {
            device.send_subscribe(filter).await;
            let (_, codes) = device.next_ack().await.unwrap();
            let refused = if v5 { "NotAuthorized" } else { "Failure" };
            assert_eq!(codes, [refused], "{filter}");
        }
        sender.publish("other/x", b"hidden").await;
        nothing_on(&mut device, "other/x", b"hidden").await;

        device.publish("status/dev/1", b"up").await;
        let (kind, codes) = device.next_ack().await.unwrap();
        assert_eq!(kind, "PubAck");
        if v5 {
            assert_eq!(codes, ["Success"]);
        }
        let (topic, body) = watcher.next_message().await;
        assert_eq!(
            (topic.as_str(), body.as_slice()),
            ("status/dev/1", &b"up"[..])
        );

        // A PUBLISH outside the W token: MQTT 5 gets PUBACK 0x87 and stays
        // connected; 3.1.1 has no refusal code, so the connection ends.
        device.publish("forbidden/x", b"no").await;
        match v5 {
            true => {
                let (kind, codes) = device.next_ack().await.unwrap();
                assert_eq!(
                    (kind.as_str(), codes),
                    ("PubAck", vec!["NotAuthorized".to_string()])
                );
                device.publish("status/dev/2", b"still here").await;
                assert_eq!(device.next_ack().await.unwrap().0, "PubAck");
            }
            false => {
                assert_eq!(device.next_ack().await, None, "the connection stayed open");
            }
        }
        nothing_on(&mut watcher, "forbidden/x", b"no").await;
    }

    // MQTT 5, QoS 0 outside the token: DISCONNECT 0x87.
    let mut device = connect(&t, true, "GID_t@@@qos0", format!("W|{write}")).await;
    if let Some(c) = &device.v5 {
        c.publish(
            "forbidden/y",
            rumqttc::v5::mqttbytes::QoS::AtMostOnce,
            false,
            "x",
        )
        .await
        .unwrap();
    }
    let ended = device.ended().await;
    assert!(ended.contains("NotAuthorized"), "{ended}");
    nothing_on(&mut watcher, "forbidden/y", b"x").await;
    t.server.shutdown().await;
}

/// Alibaba: a validity beyond 30 days is not an error, but the token lives
/// 30 days.
#[tokio::test]
async fn an_expire_time_beyond_30_days_is_cut_to_30_days() {
    let t = TestServer::start(TWO_ACCOUNTS).await;
    let thirty_days: i64 = 30 * 24 * 3600 * 1000;
    let before = chrono::Utc::now().timestamp_millis();
    let token = apply(&t, "R", "a/#", 3 * thirty_days).await;
    let after = chrono::Utc::now().timestamp_millis();
    let grant = t.server.devices().token(&token).unwrap();
    assert!(
        (before + thirty_days..=after + thirty_days).contains(&grant.expire_time),
        "expires at {}, not 30 days after {before}",
        grant.expire_time
    );
    t.server.shutdown().await;
}

#[tokio::test]
async fn bad_token_logins_are_refused_at_connect() {
    let t = TestServer::start(TWO_ACCOUNTS).await;
    let read = apply(&t, "R", "a/#", 3_600_000).await;
    let both = apply(&t, "R,W", "a/#", 3_600_000).await;
    let cases: Vec<(String, String)> = vec![
        (format!("Token|testid|{INSTANCE}"), "R|not-a-token".into()),
        (format!("Token|testid|{INSTANCE}"), format!("W|{read}")),
        (format!("Token|testid|{INSTANCE}"), format!("R|{both}")),
        (
            format!("Token|testid|{INSTANCE}"),
            format!("R|{read}|R|{read}"),
        ),
        (format!("Token|testid|{INSTANCE}"), format!("R|{read}|W")),
        (format!("Token|testid|{INSTANCE}"), format!("X|{read}")),
        (format!("Token|testid|{INSTANCE}"), String::new()),
        // Another instance of the same account; another account's key.
        ("Token|testid|inst-a2".into(), format!("R|{read}")),
        (format!("Token|key-b|{INSTANCE}"), format!("R|{read}")),
        ("Token|key-b|inst-b1".into(), format!("R|{read}")),
        (format!("Token|old-key|{INSTANCE}"), format!("R|{read}")),
    ];
    for (i, (username, password)) in cases.into_iter().enumerate() {
        let id = format!("GID_bad@@@{i}");
        let login = Some((username.clone(), password.clone()));
        let v4 = connect_v4(t.mqtt, &id, login.clone()).await.unwrap_err();
        assert!(
            v4.contains("BadUserNamePassword"),
            "{username} {password}: {v4}"
        );
        let v5 = connect_v5(t.mqtt, &id, login).await.unwrap_err();
        assert!(
            v5.contains("BadUserNamePassword"),
            "{username} {password}: {v5}"
        );
    }
    // And the good ones log in (RW as RW, several types together).
    connect(&t, false, "GID_ok@@@1", format!("RW|{both}")).await;
    connect(&t, true, "GID_ok@@@2", format!("RW|{both}|R|{read}")).await;
    t.server.shutdown().await;
}

#[tokio::test]
async fn a_revoked_token_is_announced_and_an_upload_restores_the_rights() {
    let t = TestServer::start(TWO_ACCOUNTS).await;
    let sender = connect_v4(t.mqtt, "GID_r@@@sender", None).await.unwrap();
    for v5 in [false, true] {
        let read = apply(&t, "R", "r/#", 3_600_000).await;
        let id = format!("GID_r@@@dev-{v5}");
        let mut device = connect(&t, v5, &id, format!("R|{read}")).await;
        device.subscribe("r/1").await;
        delivered(&sender, &mut device, "r/1").await;

        let (_, body) = t
            .call("RevokeToken", &[("InstanceId", INSTANCE), ("Token", &read)])
            .await;
        assert!(body["RequestId"].is_string(), "{body}");
        let notice = message_on(&mut device, "$SYS/tokenInvalidNotice").await;
        assert_eq!(notice["code"], 3, "{notice}");
        assert_eq!(notice["type"], "R", "{notice}");
        let (_, status) = t
            .call("QueryToken", &[("InstanceId", INSTANCE), ("Token", &read)])
            .await;
        assert_eq!(status["TokenStatus"], false);
        // The subscription is gone with the right, and a new one is refused.
        let view = t
            .server
            .brokers
            .instance(INSTANCE)
            .unwrap()
            .sessions
            .view(&id);
        assert!(view.unwrap().subscriptions.is_empty());
        sender.publish("r/1", b"after revoke").await;
        nothing_on(&mut device, "r/1", b"after revoke").await;
        device.send_subscribe("r/1").await;
        let (_, codes) = device.next_ack().await.unwrap();
        assert_ne!(codes, ["Success(AtLeastOnce)"]);

        // A bad upload changes nothing; a fresh token restores the right.
        let fresh = apply(&t, "R", "r/#", 3_600_000).await;
        let bad = serde_json::json!({"token": read, "type": "R"}).to_string();
        device.publish("$SYS/uploadToken", bad.as_bytes()).await;
        let (kind, codes) = device.next_ack().await.unwrap();
        assert_eq!(kind, "PubAck");
        if v5 {
            assert_eq!(codes, ["NotAuthorized"]);
        }
        let upload = serde_json::json!({"token": fresh, "type": "R"}).to_string();
        device.publish("$SYS/uploadToken", upload.as_bytes()).await;
        let (kind, codes) = device.next_ack().await.unwrap();
        assert_eq!(kind, "PubAck");
        if v5 {
            assert_eq!(codes, ["Success"]);
        }
        device.subscribe("r/1").await;
        delivered(&sender, &mut device, "r/1").await;

        // At QoS 2 the relay answers the whole exchange itself.
        match (&device.v4, &device.v5) {
            (Some(c), _) => c
                .publish(
                    "$SYS/uploadToken",
                    rumqttc::QoS::ExactlyOnce,
                    false,
                    upload.clone(),
                )
                .await
                .unwrap(),
            (_, Some(c)) => c
                .publish(
                    "$SYS/uploadToken",
                    rumqttc::v5::mqttbytes::QoS::ExactlyOnce,
                    false,
                    upload.clone(),
                )
                .await
                .unwrap(),
            _ => unreachable!(),
        }
        assert_eq!(device.next_ack().await.unwrap().0, "PubRec");
        assert_eq!(device.next_ack().await.unwrap().0, "PubComp");
        delivered(&sender, &mut device, "r/1").await;
    }
    t.server.shutdown().await;
}

/// A token valid for the shortest time Alibaba allows (60 s): its expiry
/// notice comes at once (it is within 5 minutes of expiring), and at expiry
/// the invalid notice, and its subscriptions end.
#[tokio::test]
async fn an_expiring_token_is_announced_and_its_rights_end() {
    let t = TestServer::start(TWO_ACCOUNTS).await;
    let sender = connect_v4(t.mqtt, "GID_e@@@sender", None).await.unwrap();
    let read = apply(&t, "R", "e/#", 61_000).await;
    let mut v4 = connect(&t, false, "GID_e@@@v4", format!("R|{read}")).await;
    let mut v5 = connect(&t, true, "GID_e@@@v5", format!("R|{read}")).await;
    for device in [&mut v4, &mut v5] {
        let notice = message_on(device, "$SYS/tokenExpireNotice").await;
        assert_eq!(notice["type"], "R", "{notice}");
        assert!(notice["expireTime"].as_i64().unwrap() > chrono::Utc::now().timestamp_millis());
        device.subscribe("e/1").await;
        delivered(&sender, device, "e/1").await;
    }
    tokio::time::sleep(Duration::from_secs(60)).await;
    for device in [&mut v4, &mut v5] {
        let notice = tokio::time::timeout(
            Duration::from_secs(10),
            message_on(device, "$SYS/tokenInvalidNotice"),
        )
        .await
        .expect("no tokenInvalidNotice within 10 s of expiry");
        assert_eq!(notice["code"], 2, "{notice}");
    }
    sender.publish("e/1", b"late").await;
    nothing_on(&mut v4, "e/1", b"late").await;
    nothing_on(&mut v5, "e/1", b"late").await;
    t.server.shutdown().await;
}
