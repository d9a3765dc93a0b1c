//! Custom authentication with real MQTT clients (rumqttc, 3.1.1 and 5)
//! against a live mqgate: an identity logs in with its own username and
//! secret; its permission rules allow what they say and nothing else (DENY
//! over ALLOW; SUBACK failures, PUBACK 0x87, a closed 3.1.1 connection);
//! rules changed while it is connected take effect at once, and a removed
//! rule takes its subscriptions away; two instances' rules never mix, each
//! instance's own listener tells them apart; the capacity is enforced.

mod common;

use common::{Device, TestServer, connect_v4, connect_v5, delivered, nothing_on};
use mqgate::broker::device_auth::signature_password;
use std::time::Duration;

/// One account, two instances, each with an MQTT listener of its own;
/// small capacities for the capacity test.
const CONFIG: &str = r#"
[http]
listen = "127.0.0.1:0"
[mqtt]
listen = "127.0.0.1:0"
[[accounts]]
id = "111"
  [accounts.limits]
  AddCustomAuthPermission = 10000
  [[accounts.instances]]
  id = "inst-a1"
  mqtt_listen = "127.0.0.1:0"
  max_custom_auth_identities = 3
  max_custom_auth_permissions = 1000
  [[accounts.instances]]
  id = "inst-a2"
  mqtt_listen = "127.0.0.1:0"
  [[accounts.users]]
  name = "root"
  access_key_id = "testid"
  access_key_secret = "testsecret"
  root = true
"#;

async fn ok(t: &TestServer, action: &str, params: &[(&str, &str)]) {
    let (status, body) = t.call(action, params).await;
    assert_eq!(status, 200, "{action} {params:?}: {body}");
    assert_eq!(body["Success"], true, "{body}");
}

async fn add_identity(t: &TestServer, instance: &str, username: &str, mode: &str, secret: &str) {
    ok(
        t,
        "AddCustomAuthIdentity",
        &[
            ("InstanceId", instance),
            ("IdentityType", "USER"),
            ("Username", username),
            ("Secret", secret),
            ("SignMode", mode),
        ],
    )
    .await;
}

async fn permit(
    t: &TestServer,
    instance: &str,
    identity: &str,
    topic: &str,
    effect: &str,
    action: &str,
) {
    ok(
        t,
        "AddCustomAuthPermission",
        &[
            ("InstanceId", instance),
            ("IdentityType", "USER"),
            ("Identity", identity),
            ("Topic", topic),
            ("Effect", effect),
            ("PermitAction", action),
        ],
    )
    .await;
}

async fn connect(
    addr: std::net::SocketAddr,
    v5: bool,
    client_id: &str,
    username: &str,
    password: &str,
) -> Result<Device, String> {
    let login = Some((username.to_string(), password.to_string()));
    match v5 {
        false => connect_v4(addr, client_id, login).await,
        true => connect_v5(addr, client_id, login).await,
    }
}

/// A Signature-mode client of the instance: every topic is open to it.
async fn watcher(t: &TestServer, instance: &str, client_id: &str) -> Device {
    let login = common::signature_login("testid", "testsecret", instance, client_id);
    connect_v4(t.mqtt, client_id, Some(login)).await.unwrap()
}

#[tokio::test]
async fn an_identity_may_do_exactly_what_its_rules_allow_and_changes_apply_live() {
    let t = TestServer::start(CONFIG).await;
    let instance = "inst-a1";
    add_identity(&t, instance, "sensor", "SIGNED", "sensor-secret").await;
    permit(&t, instance, "sensor", "a/+", "ALLOW", "PUB").await;
    permit(&t, instance, "sensor", "a/secret", "DENY", "PUB_SUB").await;
    permit(&t, instance, "sensor", "b/#", "ALLOW", "SUB").await;
    let mut observer = watcher(&t, instance, "GID_w@@@observer").await;
    observer.subscribe("#").await;
    let sender = watcher(&t, instance, "GID_w@@@sender").await;

    for v5 in [false, true] {
        let client_id = format!("GID_s@@@dev-{v5}");
        let password = signature_password("sensor-secret", &client_id);
        let mut device = connect(t.mqtt, v5, &client_id, "sensor", &password)
            .await
            .unwrap();

        // Allowed: publish on a/+, subscribe on b/#.
        device.publish("a/1", b"reading").await;
        assert_eq!(device.next_ack().await.unwrap().0, "PubAck");
        loop {
            let (topic, body) = observer.next_message().await;
            if topic == "a/1" && body == b"reading" {
                break;
            }
        }
        device.send_subscribe("b/#").await;
        let (_, codes) = device.next_ack().await.unwrap();
        assert_eq!(codes, ["Success(AtLeastOnce)"]);
        delivered(&sender, &mut device, "b/x/y").await;

        // Not allowed, or denied: one SUBACK code per filter.
        let refused = if v5 { "NotAuthorized" } else { "Failure" };
        for filter in ["a/1", "c/#", "#"] {
            device.send_subscribe(filter).await;
            let (_, codes) = device.next_ack().await.unwrap();
            assert_eq!(codes, [refused], "{filter}");
        }

        // A rule added while connected takes effect at once.
        permit(
            &t,
            instance,
            "sensor",
            &format!("live/{v5}"),
            "ALLOW",
            "PUB",
        )
        .await;
        device.publish(&format!("live/{v5}"), b"now allowed").await;
        let (kind, codes) = device.next_ack().await.unwrap();
        assert_eq!(kind, "PubAck");
        if v5 {
            assert_eq!(codes, ["Success"]);
        }

        // DENY wins over the ALLOW of a/+; MQTT 5 hears 0x87 and stays,
        // 3.1.1 has no refusal code and is disconnected.
        device.publish("a/secret", b"leak").await;
        match v5 {
            true => {
                let (kind, codes) = device.next_ack().await.unwrap();
                assert_eq!(
                    (kind.as_str(), codes),
                    ("PubAck", vec!["NotAuthorized".to_string()])
                );
                device.publish("c/x", b"nowhere").await;
                let (kind, codes) = device.next_ack().await.unwrap();
                assert_eq!(
                    (kind.as_str(), codes),
                    ("PubAck", vec!["NotAuthorized".to_string()])
                );
            }
            false => assert_eq!(device.next_ack().await, None, "the connection stayed open"),
        }
        nothing_on(&mut observer, "a/secret", b"leak").await;
        ok(
            &t,
            "DeleteCustomAuthPermission",
            &[
                ("InstanceId", instance),
                ("IdentityType", "USER"),
                ("Identity", "sensor"),
                ("Topic", &format!("live/{v5}")),
            ],
        )
        .await;
        if !v5 {
            continue;
        }

        // A rule removed while subscribed takes the subscription away.
        ok(
            &t,
            "DeleteCustomAuthPermission",
            &[
                ("InstanceId", instance),
                ("IdentityType", "USER"),
                ("Identity", "sensor"),
                ("Topic", "b/#"),
            ],
        )
        .await;
        let broker = t.server.brokers.instance(instance).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while broker
            .sessions
            .get(&client_id)
            .is_some_and(|s| s.subscriptions().contains_key("b/#"))
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "b/# was not removed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sender.publish("b/after", b"gone").await;
        nothing_on(&mut device, "b/after", b"gone").await;
        // The QoS 0 PUBLISH MQTT 5 cannot acknowledge: DISCONNECT 0x87.
        if let Some(c) = &device.v5 {
            c.publish(
                "c/qos0",
                rumqttc::v5::mqttbytes::QoS::AtMostOnce,
                false,
                "x",
            )
            .await
            .unwrap();
        }
        let ended = device.ended().await;
        assert!(ended.contains("NotAuthorized"), "{ended}");
    }
    t.server.shutdown().await;
}

/// An MQTT 5 PUBLISH that names its topic by alias alone is checked
/// against the topic the alias stands for: allowed when that topic is, and
/// an alias set by a refused PUBLISH stands for nothing.
#[tokio::test]
async fn a_topic_alias_is_checked_as_the_topic_it_stands_for() {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::PublishProperties;
    let t = TestServer::start(CONFIG).await;
    let instance = "inst-a1";
    add_identity(&t, instance, "aliaser", "ORIGIN", "aliaser-secret").await;
    permit(&t, instance, "aliaser", "a/+", "ALLOW", "PUB").await;
    permit(&t, instance, "aliaser", "a/secret", "DENY", "PUB").await;
    // An MQTT 5 observer: rumqttd 0.20 panics writing a PUBLISH that
    // carries MQTT 5 properties to a 3.1.1 subscriber.
    let login = common::signature_login("testid", "testsecret", instance, "GID_w@@@alias-observer");
    let mut observer = connect_v5(t.mqtt, "GID_w@@@alias-observer", Some(login))
        .await
        .unwrap();
    observer.subscribe("a/#").await;
    let mut device = connect(t.mqtt, true, "GID_s@@@aliaser", "aliaser", "aliaser-secret")
        .await
        .unwrap();
    let client = device.v5.clone().unwrap();
    let alias = |n| PublishProperties {
        topic_alias: Some(n),
        ..Default::default()
    };
    let mut send = async |topic: &str, n: u16, body: &str| {
        client
            .publish_with_properties(topic, QoS::AtLeastOnce, false, body.to_string(), alias(n))
            .await
            .unwrap();
        let (kind, codes) = device.next_ack().await.unwrap();
        assert_eq!(kind, "PubAck");
        codes
    };
    assert_eq!(send("a/1", 1, "named").await, ["Success"]);
    assert_eq!(send("", 1, "by alias").await, ["Success"]);
    assert_eq!(send("a/secret", 2, "named").await, ["NotAuthorized"]);
    assert_eq!(send("", 2, "by refused alias").await, ["NotAuthorized"]);
    for expected in ["named", "by alias"] {
        assert_eq!(
            observer.next_message().await,
            ("a/1".to_string(), expected.as_bytes().to_vec())
        );
    }
    nothing_on(&mut observer, "a/secret", b"by refused alias").await;
    t.server.shutdown().await;
}

#[tokio::test]
async fn logins_check_the_secret_and_two_instances_never_mix() {
    let t = TestServer::start(CONFIG).await;
    let own = |instance: &str| t.server.instance_mqtt_addrs[instance];
    // The same username on both instances, each with its own secret and
    // its own rules.
    add_identity(&t, "inst-a1", "shared", "ORIGIN", "secret-one").await;
    add_identity(&t, "inst-a2", "shared", "ORIGIN", "secret-two").await;
    permit(&t, "inst-a1", "shared", "one/#", "ALLOW", "PUB_SUB").await;
    permit(&t, "inst-a2", "shared", "two/#", "ALLOW", "PUB_SUB").await;
    add_identity(&t, "inst-a1", "only-here", "ORIGIN", "pw").await;

    for v5 in [false, true] {
        // On the shared port, the username names no single instance.
        let refused = connect(t.mqtt, v5, "c1", "shared", "secret-one")
            .await
            .unwrap_err();
        assert!(refused.contains("NotAuthorized"), "{refused}");
        // ... but a username only one instance holds finds it.
        assert!(connect(t.mqtt, v5, "c1", "only-here", "pw").await.is_ok());
        let wrong = connect(t.mqtt, v5, "c1", "only-here", "nope")
            .await
            .unwrap_err();
        assert!(wrong.contains("BadUserNamePassword"), "{wrong}");
        // Each instance's own listener admits its own identity only.
        let cross = connect(own("inst-a2"), v5, "c1", "shared", "secret-one")
            .await
            .unwrap_err();
        assert!(cross.contains("BadUserNamePassword"), "{cross}");
        for (instance, secret, mine, theirs) in [
            ("inst-a1", "secret-one", "one/x", "two/x"),
            ("inst-a2", "secret-two", "two/x", "one/x"),
        ] {
            let client_id = format!("GID_m@@@{instance}-{v5}");
            let mut device = connect(own(instance), v5, &client_id, "shared", secret)
                .await
                .unwrap();
            let refused = if v5 { "NotAuthorized" } else { "Failure" };
            device.send_subscribe(theirs).await;
            assert_eq!(device.next_ack().await.unwrap().1, [refused], "{instance}");
            device.send_subscribe(mine).await;
            assert_eq!(device.next_ack().await.unwrap().1, ["Success(AtLeastOnce)"]);
            assert!(
                t.server
                    .brokers
                    .instance(instance)
                    .unwrap()
                    .is_online(&client_id)
            );
        }
    }
    t.server.shutdown().await;
}

#[tokio::test]
async fn the_blacklist_kicks_and_refuses_a_custom_auth_client() {
    let t = TestServer::start(CONFIG).await;
    add_identity(&t, "inst-a1", "banned-user", "ORIGIN", "pw").await;
    for v5 in [false, true] {
        let client_id = format!("GID_b@@@{v5}");
        let mut device = connect(t.mqtt, v5, &client_id, "banned-user", "pw")
            .await
            .unwrap();
        ok(
            &t,
            "AddCustomAuthConnectBlack",
            &[("InstanceId", "inst-a1"), ("ClientId", &client_id)],
        )
        .await;
        device.ended().await;
        let refused = connect(t.mqtt, v5, &client_id, "banned-user", "pw")
            .await
            .unwrap_err();
        let expected = if v5 { "Banned" } else { "NotAuthorized" };
        assert!(refused.contains(expected), "{refused}");
    }
    t.server.shutdown().await;
}

/// Rules added in a loop stop at the instance's capacity
/// (`max_custom_auth_permissions`, 1,000 here) with Alibaba's code; so do
/// identities (`max_custom_auth_identities`, 3 here).
#[tokio::test]
async fn rules_and_identities_stop_at_the_capacity() {
    let t = TestServer::start(CONFIG).await;
    let mut added = 0;
    let refusal = loop {
        let topic = format!("t/{added}");
        let (status, body) = t
            .call(
                "AddCustomAuthPermission",
                &[
                    ("InstanceId", "inst-a1"),
                    ("IdentityType", "CLIENT"),
                    ("Identity", "GID_cap@@@1"),
                    ("Topic", &topic),
                    ("Effect", "ALLOW"),
                    ("PermitAction", "PUB"),
                ],
            )
            .await;
        if status != 200 {
            break (status, body);
        }
        added += 1;
        assert!(added <= 1000, "more rules than the capacity were accepted");
    };
    assert_eq!(added, 1000);
    assert_eq!(refusal.0, 400);
    assert_eq!(refusal.1["Code"], "Customauth.over.capacity");
    assert!(
        refusal.1["Message"]
            .as_str()
            .unwrap()
            .contains("max_custom_auth_permissions")
    );
    // The other instance has its own capacity.
    permit(&t, "inst-a2", "x", "t/1", "ALLOW", "PUB").await;

    for i in 0..3 {
        add_identity(&t, "inst-a1", &format!("user-{i}"), "ORIGIN", "pw").await;
    }
    let (status, body) = t
        .call(
            "AddCustomAuthIdentity",
            &[
                ("InstanceId", "inst-a1"),
                ("IdentityType", "USER"),
                ("Username", "one-too-many"),
                ("Secret", "pw"),
                ("SignMode", "ORIGIN"),
            ],
        )
        .await;
    assert_eq!(
        (status, body["Code"].as_str()),
        (400, Some("Customauth.over.capacity")),
        "{body}"
    );
    t.server.shutdown().await;
}
