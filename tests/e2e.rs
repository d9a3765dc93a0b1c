//! End to end: a real mqgate on loopback, real MQTT clients (rumqttc, 3.1.1
//! and 5), signed calls over HTTP.

mod common;

use common::{TWO_ACCOUNTS, TestServer, connect_v4, connect_v5, signature_login};
use std::time::Duration;

/// The walkthrough, for both protocol versions: connect -> query
/// true -> batch with online and offline ids -> CloseConnection -> the client
/// sees its connection end -> query false.
#[tokio::test]
async fn connect_query_batch_close_query_for_mqtt_311_and_5() {
    let t = TestServer::start(TWO_ACCOUNTS).await;
    for (version, client_id) in [("3.1.1", "GID_x@@@dev 1+*~/é"), ("5", "GID_x@@@dev-5")] {
        let login = Some(signature_login(
            "testid",
            "testsecret",
            "inst-a1",
            client_id,
        ));
        let mut device = if version == "5" {
            connect_v5(t.mqtt, client_id, login).await.unwrap()
        } else {
            connect_v4(t.mqtt, client_id, login).await.unwrap()
        };
        assert!(t.online("inst-a1", client_id).await, "{version}");

        let (status, body) = t
            .call(
                "BatchQuerySessionByClientIds",
                &[
                    ("InstanceId", "inst-a1"),
                    ("ClientIdList.1", "GID_x@@@offline"),
                    ("ClientIdList.2", client_id),
                ],
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["OnlineStatusList"],
            serde_json::json!([
                {"ClientId": "GID_x@@@offline", "OnlineStatus": false},
                {"ClientId": client_id, "OnlineStatus": true},
            ])
        );
        let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["RequestId", "OnlineStatusList"]);

        let (status, body) = t
            .call(
                "CloseConnection",
                &[("InstanceId", "inst-a1"), ("ClientId", client_id)],
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["Code"], 200);
        assert_eq!(body["Message"], "operation success.");
        assert_eq!(body["Success"], true);
        let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["RequestId", "Code", "Message", "Success"]);

        let ended = device.ended().await;
        if version == "5" {
            assert!(
                ended.contains("AdministrativeAction"),
                "MQTT 5 client saw: {ended}"
            );
        }
        assert!(!t.online("inst-a1", client_id).await, "{version}");
    }
    t.server.shutdown().await;
}

#[tokio::test]
async fn messages_flow_through_the_front_layer_both_versions() {
    let t = TestServer::start(TWO_ACCOUNTS).await;
    let mut sub4 = connect_v4(t.mqtt, "sub4", None).await.unwrap();
    let mut sub5 = connect_v5(t.mqtt, "sub5", None).await.unwrap();
    sub4.subscribe("sensors/#").await;
    sub5.subscribe("sensors/#").await;
    let publisher = connect_v5(t.mqtt, "pub", None).await.unwrap();
    publisher.publish("sensors/t1", b"21.5").await;
    assert_eq!(
        sub4.next_message().await,
        ("sensors/t1".to_string(), b"21.5".to_vec())
    );
    assert_eq!(
        sub5.next_message().await,
        ("sensors/t1".to_string(), b"21.5".to_vec())
    );
    t.server.shutdown().await;
}

/// A second connection with the same client id takes over the first; an
/// MQTT 5 client hears why (0x8E, session taken over).
#[tokio::test]
async fn a_second_connection_takes_over_the_client_id() {
    let t = TestServer::start(TWO_ACCOUNTS).await;
    let mut first = connect_v5(t.mqtt, "GID_x@@@twin", None).await.unwrap();
    let mut second = connect_v4(t.mqtt, "GID_x@@@twin", None).await.unwrap();
    let ended = first.ended().await;
    assert!(ended.contains("SessionTakenOver"), "{ended}");
    assert!(t.online("inst-a1", "GID_x@@@twin").await);
    // The registry follows the new connection, and kicking it ends it.
    let (status, _) = t
        .call(
            "CloseConnection",
            &[("InstanceId", "inst-a1"), ("ClientId", "GID_x@@@twin")],
        )
        .await;
    assert_eq!(status, 200);
    second.ended().await;
    assert!(!t.online("inst-a1", "GID_x@@@twin").await);
    t.server.shutdown().await;
}

/// Device authentication: Signature mode lands in the named instance; a
/// wrong signature or an unknown key is refused with "bad username or
/// password", never a silent close.
#[tokio::test]
async fn devices_authenticate_the_apsaramq_way() {
    let t = TestServer::start(TWO_ACCOUNTS).await;
    // Same client id, two instances of two accounts: two different sessions.
    let _a = connect_v4(
        t.mqtt,
        "GID_x@@@same",
        Some(signature_login(
            "testid",
            "testsecret",
            "inst-a2",
            "GID_x@@@same",
        )),
    )
    .await
    .unwrap();
    let _b = connect_v5(
        t.mqtt,
        "GID_x@@@same",
        Some(signature_login(
            "key-b",
            "secret-b",
            "inst-b1",
            "GID_x@@@same",
        )),
    )
    .await
    .unwrap();
    assert!(t.online("inst-a2", "GID_x@@@same").await);
    assert!(!t.online("inst-a1", "GID_x@@@same").await);
    let (status, body) = t
        .call_as(
            ("key-b", "secret-b"),
            "POST",
            "QuerySessionByClientId",
            &[("InstanceId", "inst-b1"), ("ClientId", "GID_x@@@same")],
        )
        .await;
    assert_eq!((status, body["OnlineStatus"].as_bool()), (200, Some(true)));

    let wrong = signature_login("testid", "not-the-secret", "inst-a1", "GID_x@@@bad");
    let e = connect_v4(t.mqtt, "GID_x@@@bad", Some(wrong.clone()))
        .await
        .unwrap_err();
    assert!(e.contains("BadUserNamePassword"), "3.1.1: {e}");
    let e = connect_v5(t.mqtt, "GID_x@@@bad", Some(wrong))
        .await
        .unwrap_err();
    assert!(e.contains("BadUserNamePassword"), "5: {e}");
    let unknown = signature_login("nobody", "x", "inst-a1", "GID_x@@@bad");
    let e = connect_v5(t.mqtt, "GID_x@@@bad", Some(unknown))
        .await
        .unwrap_err();
    assert!(e.contains("BadUserNamePassword"), "{e}");
    // A key of account B cannot open a session in account A's instance.
    let cross = signature_login("key-b", "secret-b", "inst-a1", "GID_x@@@bad");
    let e = connect_v4(t.mqtt, "GID_x@@@bad", Some(cross))
        .await
        .unwrap_err();
    assert!(e.contains("BadUserNamePassword"), "{e}");
    t.server.shutdown().await;
}

#[tokio::test]
async fn anonymous_clients_are_refused_without_an_anonymous_instance() {
    let config = TWO_ACCOUNTS.replace("anonymous_instance = \"inst-a1\"", "");
    let t = TestServer::start(&config).await;
    let e = connect_v4(t.mqtt, "anon", None).await.unwrap_err();
    assert!(e.contains("NotAuthorized"), "{e}");
    let e = connect_v5(t.mqtt, "anon", None).await.unwrap_err();
    assert!(e.contains("NotAuthorized"), "{e}");
    t.server.shutdown().await;
}

/// Every refusal of the RPC endpoint, with its status and code.
#[tokio::test]
async fn bad_calls_get_the_documented_codes() {
    let t = TestServer::start(TWO_ACCOUNTS).await;
    let eleven: Vec<(String, String)> = (1..=11)
        .map(|i| (format!("ClientIdList.{i}"), format!("c{i}")))
        .collect();
    let mut eleven: Vec<(&str, &str)> = eleven
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    eleven.push(("InstanceId", "inst-a1"));
    let root = ("testid", "testsecret");
    // (case, key, action, parameters, expected status, expected code)
    type Case<'a> = (
        &'a str,
        (&'a str, &'a str),
        &'a str,
        Vec<(&'a str, &'a str)>,
        u16,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "no ClientId",
            root,
            "QuerySessionByClientId",
            vec![("InstanceId", "inst-a1")],
            400,
            "InvalidParameter.ClientId",
        ),
        (
            "empty ClientId",
            root,
            "CloseConnection",
            vec![("InstanceId", "inst-a1"), ("ClientId", "")],
            400,
            "InvalidParameter.ClientId",
        ),
        (
            "no InstanceId",
            root,
            "CloseConnection",
            vec![("ClientId", "c")],
            400,
            "InvalidParameter.InstanceId",
        ),
        (
            "11 ids",
            root,
            "BatchQuerySessionByClientIds",
            eleven,
            400,
            "InvalidParameter.ClientIdList",
        ),
        (
            "no ids",
            root,
            "BatchQuerySessionByClientIds",
            vec![("InstanceId", "inst-a1")],
            400,
            "InvalidParameter.ClientIdList",
        ),
        (
            "empty id",
            root,
            "BatchQuerySessionByClientIds",
            vec![("InstanceId", "inst-a1"), ("ClientIdList.1", "")],
            400,
            "InvalidParameter.ClientIdList.1",
        ),
        (
            "other account's instance",
            root,
            "QuerySessionByClientId",
            vec![("InstanceId", "inst-b1"), ("ClientId", "c")],
            400,
            "InstancePermissionCheckFailed",
        ),
        (
            "no such instance",
            root,
            "CloseConnection",
            vec![("InstanceId", "nope"), ("ClientId", "c")],
            400,
            "InstancePermissionCheckFailed",
        ),
        (
            "unknown key",
            ("nobody", "x"),
            "QuerySessionByClientId",
            vec![("InstanceId", "inst-a1"), ("ClientId", "c")],
            404,
            "InvalidAccessKeyId.NotFound",
        ),
        (
            "disabled key",
            ("old-key", "old-secret"),
            "QuerySessionByClientId",
            vec![("InstanceId", "inst-a1"), ("ClientId", "c")],
            400,
            "InvalidAccessKeyId.Inactive",
        ),
        (
            "wrong secret",
            ("testid", "wrong"),
            "QuerySessionByClientId",
            vec![("InstanceId", "inst-a1"), ("ClientId", "c")],
            400,
            "SignatureDoesNotMatch",
        ),
        (
            "unknown action",
            root,
            "DescribeEverything",
            vec![("InstanceId", "inst-a1")],
            404,
            "InvalidAction.NotFound",
        ),
        (
            "user without policies",
            ("ops-key", "ops-secret"),
            "CloseConnection",
            vec![("InstanceId", "inst-a1"), ("ClientId", "c")],
            403,
            "Forbidden.RAM",
        ),
    ];
    for (name, key, action, params, status, code) in cases {
        for method in ["GET", "POST"] {
            let (got_status, body) = t.call_as(key, method, action, &params).await;
            assert_eq!(
                (got_status, body["Code"].as_str().unwrap_or_default()),
                (status, code),
                "{name} ({method}): {body}"
            );
            assert!(
                body["RequestId"].as_str().is_some_and(|id| id.len() == 36),
                "{name}: {body}"
            );
            assert!(!body["Message"].as_str().unwrap().is_empty(), "{name}");
            assert!(
                !body.to_string().contains("testsecret"),
                "{name}: secret in answer"
            );
        }
    }
    t.server.shutdown().await;
}

/// What the SDKs see when the signature is wrong: the server's string to
/// sign, after "server string to sign is:".
#[tokio::test]
async fn a_signature_mismatch_shows_the_servers_string_to_sign() {
    let t = TestServer::start(TWO_ACCOUNTS).await;
    let (status, body) = t
        .call_as(
            ("testid", "wrong"),
            "GET",
            "QuerySessionByClientId",
            &[("InstanceId", "inst-a1"), ("ClientId", "a b")],
        )
        .await;
    assert_eq!(status, 400);
    let message = body["Message"].as_str().unwrap();
    let (_, sts) = message.split_once("server string to sign is:").unwrap();
    assert!(
        sts.starts_with(
            "GET&%2F&AccessKeyId%3Dtestid%26Action%3DQuerySessionByClientId%26ClientId%3Da%2520b"
        ),
        "{sts}"
    );
    assert_eq!(body["HostId"], t.endpoint.trim_start_matches("http://"));
    assert!(
        body["Recommend"]
            .as_str()
            .unwrap()
            .contains("SignatureDoesNotMatch")
    );
    t.server.shutdown().await;
}

/// A captured request replayed: refused the second time.
#[tokio::test]
async fn a_replayed_request_is_refused() {
    let t = TestServer::start(TWO_ACCOUNTS).await;
    let params = vec![
        ("InstanceId".to_string(), "inst-a1".to_string()),
        ("ClientId".to_string(), "c".to_string()),
    ];
    let signed = mqgate::client::sign_v1(
        "GET",
        "QuerySessionByClientId",
        &params,
        "testid",
        "testsecret",
        chrono::Utc::now(),
        "nonce-1",
    );
    let url = format!("{}/?{}", t.endpoint, mqgate::client::encode_form(&signed));
    let first = http_get(&url).await;
    assert!(first.0 == 200, "{first:?}");
    let second = http_get(&url).await;
    assert_eq!(second.0, 400);
    assert!(second.1.contains("\"SignatureNonceUsed\""), "{}", second.1);
    t.server.shutdown().await;
}

async fn http_get(url: &str) -> (u16, String) {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let response = client.get(url.parse().unwrap()).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Batch answers come from a cache: a client that connects is seen by the
/// batch view within the TTL, and the real-time query sees it at once.
#[tokio::test]
async fn the_batch_view_lags_by_at_most_its_ttl() {
    let config = TWO_ACCOUNTS.replace("[mqtt]", "batch_status_ttl_ms = 300\n[mqtt]");
    let t = TestServer::start(&config).await;
    let batch = || async {
        let (_, body) = t
            .call(
                "BatchQuerySessionByClientIds",
                &[("InstanceId", "inst-a1"), ("ClientIdList.1", "late")],
            )
            .await;
        body["OnlineStatusList"][0]["OnlineStatus"]
            .as_bool()
            .unwrap()
    };
    assert!(!batch().await);
    let _device = connect_v4(t.mqtt, "late", None).await.unwrap();
    assert!(t.online("inst-a1", "late").await);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(batch().await);
    t.server.shutdown().await;
}

/// Shutdown tells MQTT 5 clients why they are being disconnected.
#[tokio::test]
async fn shutdown_disconnects_clients_with_a_reason() {
    let t = TestServer::start(TWO_ACCOUNTS).await;
    let mut device = connect_v5(t.mqtt, "bye", None).await.unwrap();
    t.server.shutdown().await;
    let ended = device.ended().await;
    assert!(ended.contains("ServerShuttingDown"), "{ended}");
}

/// Takeovers in a row, several clients at once: each new connection is
/// accepted and the one before it ends. (rumqttd reuses connection ids:
/// before the front layer closed its upstream connections cleanly, the late
/// report of an old connection's end could end the new connection that took
/// its id, and a takeover was refused with "server unavailable" now and
/// then.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeovers_in_a_row_are_each_accepted() {
    let t = TestServer::start(TWO_ACCOUNTS).await;
    let mut seats = Vec::new();
    for seat in 0..6 {
        let mqtt = t.mqtt;
        seats.push(tokio::spawn(async move {
            let client_id = format!("GID_x@@@hot-seat-{seat}");
            let mut previous = connect_v5(mqtt, &client_id, None).await.unwrap();
            for round in 0..25 {
                let next = if round % 2 == 0 {
                    connect_v4(mqtt, &client_id, None).await
                } else {
                    connect_v5(mqtt, &client_id, None).await
                };
                let next =
                    next.unwrap_or_else(|e| panic!("{client_id}: takeover {round} refused: {e}"));
                previous.ended().await;
                previous = next;
            }
            (client_id, previous)
        }));
    }
    for seat in seats {
        let (client_id, _last) = seat.await.unwrap();
        assert!(t.online("inst-a1", &client_id).await, "{client_id}");
    }
    t.server.shutdown().await;
}

/// Clients that leave with DISCONNECT while others arrive: every arrival
/// stays connected. (rumqttd reports a connection that read DISCONNECT gone
/// twice if its socket closes too early, and the second report can end a
/// newcomer that was given the same connection id; the front layer lets
/// rumqttd close such connections itself.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_leaving_with_disconnect_do_not_end_clients_arriving() {
    let t = TestServer::start(TWO_ACCOUNTS).await;
    let mut lanes = Vec::new();
    for lane in 0..8 {
        let mqtt = t.mqtt;
        lanes.push(tokio::spawn(async move {
            let mut staying = Vec::new();
            for round in 0..15 {
                let leaving = connect_v4(mqtt, &format!("GID_x@@@leave-{lane}-{round}"), None)
                    .await
                    .unwrap();
                let arriving_id = format!("GID_x@@@arrive-{lane}-{round}");
                let (_, arriving) = tokio::join!(
                    async { leaving.v4.as_ref().unwrap().disconnect().await.unwrap() },
                    connect_v4(mqtt, &arriving_id, None)
                );
                staying.push((arriving_id, arriving.unwrap()));
            }
            staying
        }));
    }
    let mut staying = Vec::new();
    for lane in lanes {
        staying.extend(lane.await.unwrap());
    }
    // Every arrival still answers: a SUBACK comes back on its connection.
    for (client_id, device) in &mut staying {
        device.send_subscribe("still/here").await;
        let ack = device.next_ack().await;
        assert!(
            ack.is_some(),
            "{client_id} was disconnected: {:?}",
            device.last_error
        );
    }
    t.server.shutdown().await;
}

/// A client id on the connection blacklist is disconnected at once and
/// refused at CONNECT whatever its login (rumqttc, 3.1.1 and 5), in its
/// instance only; off the list, it connects again.
#[tokio::test]
async fn a_blacklisted_client_id_is_kicked_and_refused_in_its_instance_only() {
    let t = TestServer::start(TWO_ACCOUNTS).await;
    let mut v4 = connect_v4(t.mqtt, "GID_x@@@banned", None).await.unwrap();
    let black = [("InstanceId", "inst-a1"), ("ClientId", "GID_x@@@banned")];
    let (status, body) = t.call("AddCustomAuthConnectBlack", &black).await;
    assert_eq!(status, 200, "{body}");
    assert!(!v4.ended().await.is_empty());
    let refused = connect_v4(t.mqtt, "GID_x@@@banned", None)
        .await
        .unwrap_err();
    assert!(refused.contains("NotAuthorized"), "{refused}");
    let signed = common::signature_login("testid", "testsecret", "inst-a1", "GID_x@@@banned");
    let refused = connect_v5(t.mqtt, "GID_x@@@banned", Some(signed))
        .await
        .unwrap_err();
    assert!(refused.contains("Banned"), "{refused}");
    // The same client id in another instance of the account is not banned.
    let elsewhere = common::signature_login("testid", "testsecret", "inst-a2", "GID_x@@@banned");
    connect_v5(t.mqtt, "GID_x@@@banned", Some(elsewhere))
        .await
        .unwrap();

    let (status, _) = t.call("DeleteCustomAuthConnectBlack", &black).await;
    assert_eq!(status, 200);
    connect_v4(t.mqtt, "GID_x@@@banned", None).await.unwrap();
    t.server.shutdown().await;
}
