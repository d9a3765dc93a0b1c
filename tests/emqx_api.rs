//! EMQX's client-management API against a live mqgate with real MQTT
//! clients (rumqttc, 3.1.1 and 5): the checklist of EMQX's own suite
//! (`emqx_mgmt_api_clients_SUITE`: paging, filters, fields, kick,
//! subscriptions, unknown clients), authentication and RAM, and isolation
//! between instances.

mod common;

use common::{TWO_ACCOUNTS, TestServer, connect_v4, connect_v5, signature_login};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use std::time::Duration;

struct Api<'a> {
    t: &'a TestServer,
    instance: &'a str,
    key: (&'a str, &'a str),
}

impl Api<'_> {
    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let (status, _, value) = self.send_full(method, path, body).await;
        (status, value)
    }

    /// Status, headers and body.
    async fn send_full(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, hyper::HeaderMap, Value) {
        let url = format!(
            "{}/instances/{}/api/v5{path}",
            self.t.endpoint, self.instance
        );
        let auth = base64_basic(self.key.0, self.key.1);
        let mut builder = hyper::Request::builder()
            .method(method)
            .uri(url)
            .header("authorization", auth);
        let body = match body {
            Some(b) => {
                builder = builder.header("content-type", "application/json");
                b.to_string()
            }
            None => String::new(),
        };
        let request = builder.body(Full::new(bytes::Bytes::from(body))).unwrap();
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<bytes::Bytes>>();
        let response = client.request(request).await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
        };
        (status, headers, value)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send("GET", path, None).await
    }
}

fn base64_basic(id: &str, secret: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    )
}

fn enc(id: &str) -> String {
    mqgate::rpc::signature_v1::percent_encode(id)
}

async fn eventually<F: std::future::Future<Output = bool>>(mut check: impl FnMut() -> F) {
    for _ in 0..50 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("condition not reached within 5 s");
}

#[tokio::test]
async fn the_emqx_checklist() {
    let t = TestServer::start(TWO_ACCOUNTS).await;
    let api = Api {
        t: &t,
        instance: "inst-a1",
        key: ("testid", "testsecret"),
    };
    let id4 = "GID_e@@@dev 1+/é";
    let id5 = "GID_e@@@dev-5";
    let mut d4 = connect_v4(
        t.mqtt,
        id4,
        Some(signature_login("testid", "testsecret", "inst-a1", id4)),
    )
    .await
    .unwrap();
    let mut d5 = connect_v5(t.mqtt, id5, None).await.unwrap();
    d5.subscribe("own/#").await;

    // List: meta page/limit/count, both clients, the fields of the seed.
    let (status, body) = api.get("/clients?page=1&limit=10").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["meta"],
        json!({"page": 1, "limit": 10, "hasnext": false, "count": 2})
    );
    let (_, body) = api.get("/clients?_page=1&_limit=1").await;
    assert_eq!(
        body["meta"],
        json!({"page": 1, "limit": 1, "hasnext": true, "count": 2})
    );
    assert_eq!(body["data"].as_array().unwrap().len(), 1);

    // Get by id (URL-encoded), with truthful fields.
    let (status, client) = api.get(&format!("/clients/{}", enc(id4))).await;
    assert_eq!(status, 200, "{client}");
    assert_eq!(client["clientid"], id4);
    assert_eq!(client["username"], format!("Signature|testid|inst-a1"));
    assert_eq!(
        (client["proto_name"].as_str(), client["proto_ver"].as_u64()),
        (Some("MQTT"), Some(4))
    );
    assert_eq!(client["ip_address"], "127.0.0.1");
    assert_eq!(
        (
            client["connected"].as_bool(),
            client["clean_start"].as_bool()
        ),
        (Some(true), Some(true))
    );
    assert_eq!(client["keepalive"], 30);
    assert!(client["recv_pkt"].as_u64().unwrap() >= 1 && client["send_oct"].as_u64().unwrap() >= 4);
    for field in [
        "connected_at",
        "created_at",
        "node",
        "recv_oct",
        "send_msg",
        "inflight_cnt",
        "expiry_interval",
    ] {
        assert!(client.get(field).is_some(), "{field} missing: {client}");
    }
    let (_, five) = api.get(&format!("/clients/{id5}")).await;
    assert_eq!(
        (
            five["proto_ver"].as_u64(),
            five["subscriptions_cnt"].as_u64()
        ),
        (Some(5), Some(1))
    );

    // Field selection; an unknown field is 400.
    let (_, selected) = api
        .get(&format!("/clients/{id5}?fields=clientid,connected"))
        .await;
    assert_eq!(selected, json!({"clientid": id5, "connected": true}));
    let (status, body) = api.get("/clients?fields=clientid,nope").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("INVALID_PARAMETER"))
    );

    // Exact filters (repeatable, OR-ed) override like_; like_ drops count.
    let (_, body) = api
        .get(&format!(
            "/clients?clientid={}&clientid={id5}&like_clientid=zzz",
            enc(id4)
        ))
        .await;
    assert_eq!(body["meta"]["count"], 2);
    let (_, body) = api.get("/clients?like_clientid=dev-5").await;
    assert_eq!(body["data"].as_array().unwrap().len(), 1);
    assert!(body["meta"].get("count").is_none(), "{body}");
    let (_, body) = api.get("/clients?proto_ver=5&conn_state=connected").await;
    assert_eq!(body["meta"]["count"], 1);

    // Time filters, RFC 3339 and epoch milliseconds, and the seed's spelling.
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).timestamp_millis();
    let (_, body) = api.get(&format!("/clients?gte_created_at={future}")).await;
    assert_eq!(body["meta"]["count"], 0);
    let (_, body) = api
        .get(&format!("/clients?_lte_connected_at={future}"))
        .await;
    assert_eq!(body["meta"]["count"], 2);
    let (_, body) = api
        .get("/clients?gte_connected_at=2020-01-01T00:00:00Z")
        .await;
    assert_eq!(body["meta"]["count"], 2);

    // Bad value types: 400 with EMQX's message.
    let (status, body) = api.get("/clients?ip_address=127.0.0.1:8080").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("INVALID_PARAMETER"))
    );
    assert_eq!(
        body["message"],
        "the ip_address parameter expected type is ip, but the value is 127.0.0.1:8080"
    );
    for bad in ["limit=0", "page=0", "proto_ver=five", "clean_start=maybe"] {
        let (status, _) = api.get(&format!("/clients?{bad}")).await;
        assert_eq!(status, 400, "{bad}");
    }

    // Subscribe on the client's behalf: 200, visible with nl/rap/rh, counted,
    // and effective: a message published to the topic reaches the client.
    let (status, sub) = api
        .send(
            "POST",
            &format!("/clients/{id5}/subscribe"),
            Some(json!({"topic": "api/+", "qos": 1, "nl": 1, "rap": 1, "rh": 2})),
        )
        .await;
    assert_eq!(status, 200, "{sub}");
    assert_eq!(
        sub,
        json!({"topic": "api/+", "qos": 1, "nl": 1, "rap": 1, "rh": 2, "node": "mqgate@local", "clientid": id5})
    );
    let (_, subs) = api.get(&format!("/clients/{id5}/subscriptions")).await;
    assert_eq!(subs.as_array().unwrap().len(), 2, "{subs}");
    assert!(subs.as_array().unwrap().contains(&sub));
    let (_, five) = api.get(&format!("/clients/{id5}")).await;
    assert_eq!(five["subscriptions_cnt"], 2);
    d4.publish("api/x", b"hello").await;
    assert_eq!(
        d5.next_message().await,
        ("api/x".to_string(), b"hello".to_vec())
    );

    // Bulk subscribe, shared topics, and nl=1 on a shared topic refused.
    let (status, subs) = api
        .send(
            "POST",
            &format!("/clients/{}/subscribe/bulk", enc(id4)),
            Some(json!([{"topic": "bulk/a"}, {"topic": "$share/g/bulk/b", "qos": 1}])),
        )
        .await;
    assert_eq!(status, 200, "{subs}");
    assert_eq!(subs.as_array().unwrap().len(), 2);
    let (status, body) = api
        .send(
            "POST",
            &format!("/clients/{id5}/subscribe"),
            Some(json!({"topic": "$share/g/x", "nl": 1})),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("INVALID_PARAMETER"))
    );
    let (status, _) = api
        .send(
            "POST",
            &format!("/clients/{}/subscribe", enc(id4)),
            Some(json!({"topic": "v5only", "rh": 1})),
        )
        .await;
    assert_eq!(status, 400, "MQTT 3.1.1 has no rh");
    d5.publish("bulk/b", b"shared").await;
    assert_eq!(
        d4.next_message().await,
        ("bulk/b".to_string(), b"shared".to_vec())
    );

    // Unsubscribe: 204, and the subscription is gone.
    let (status, _) = api
        .send(
            "POST",
            &format!("/clients/{id5}/unsubscribe"),
            Some(json!({"topic": "api/+"})),
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = api
        .send(
            "POST",
            &format!("/clients/{}/unsubscribe/bulk", enc(id4)),
            Some(json!([{"topic": "bulk/a"}, {"topic": "$share/g/bulk/b"}])),
        )
        .await;
    assert_eq!(status, 204);
    let (_, subs) = api.get(&format!("/clients/{id5}/subscriptions")).await;
    assert_eq!(
        subs,
        json!([{"topic": "own/#", "qos": 1, "nl": 0, "rap": 0, "rh": 0, "node": "mqgate@local", "clientid": id5}])
    );

    // Every sub-path of an unknown client: 404 with the exact body.
    let not_found = json!({"code": "CLIENTID_NOT_FOUND", "message": "Client ID not found"});
    for (method, path, body) in [
        ("GET", "/clients/nobody", None),
        ("DELETE", "/clients/nobody", None),
        ("GET", "/clients/nobody/subscriptions", None),
        (
            "POST",
            "/clients/nobody/subscribe",
            Some(json!({"topic": "a"})),
        ),
        (
            "POST",
            "/clients/nobody/subscribe/bulk",
            Some(json!([{"topic": "a"}])),
        ),
        (
            "POST",
            "/clients/nobody/unsubscribe",
            Some(json!({"topic": "a"})),
        ),
        (
            "POST",
            "/clients/nobody/unsubscribe/bulk",
            Some(json!([{"topic": "a"}])),
        ),
    ] {
        assert_eq!(
            api.send(method, path, body).await,
            (404, not_found.clone()),
            "{method} {path}"
        );
    }

    // Kick: 204, the client sees its connection end, then 404.
    let (status, _) = api.send("DELETE", &format!("/clients/{id5}"), None).await;
    assert_eq!(status, 204);
    assert!(d5.ended().await.contains("AdministrativeAction"));
    assert_eq!(api.get(&format!("/clients/{id5}")).await.0, 404);

    // Bulk kick: 204 and the count drops to 0.
    let _again = connect_v5(t.mqtt, "GID_e@@@third", None).await.unwrap();
    let (status, _) = api
        .send(
            "POST",
            "/clients/kickout/bulk",
            Some(json!([id4, "GID_e@@@third", "nobody"])),
        )
        .await;
    assert_eq!(status, 204);
    d4.ended().await;
    let (_, body) = api.get("/clients").await;
    assert_eq!(body["meta"]["count"], 0, "{body}");
    t.server.shutdown().await;
}

#[tokio::test]
async fn authentication_and_ram() {
    let t = TestServer::start(TWO_ACCOUNTS).await;
    let _d = connect_v4(t.mqtt, "GID_e@@@x", None).await.unwrap();
    for key in [
        ("testid", "wrong"),
        ("nobody", "x"),
        ("old-key", "old-secret"),
    ] {
        let api = Api {
            t: &t,
            instance: "inst-a1",
            key,
        };
        let (status, body) = api.get("/clients").await;
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some("BAD_API_KEY_OR_SECRET")),
            "{key:?}"
        );
    }
    // No credentials at all.
    let url = format!("{}/instances/inst-a1/api/v5/clients", t.endpoint);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let response = client.get(url.parse().unwrap()).await.unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.headers().contains_key("www-authenticate"));
    // A user without policies: 403 with an EMQX-style body.
    let ops = Api {
        t: &t,
        instance: "inst-a1",
        key: ("ops-key", "ops-secret"),
    };
    let (status, body) = ops.get("/clients").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("FORBIDDEN")),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("mq:MqttInstanceAccess")
    );
    // Account B's root key cannot see account A's instance.
    let other = Api {
        t: &t,
        instance: "inst-a1",
        key: ("key-b", "secret-b"),
    };
    assert_eq!(other.get("/clients").await.0, 404);
    let none = Api {
        t: &t,
        instance: "no-such-instance",
        key: ("testid", "testsecret"),
    };
    assert_eq!(none.get("/clients").await.0, 404);
    t.server.shutdown().await;
}

#[tokio::test]
async fn read_only_users_list_but_cannot_kick_or_subscribe() {
    let config = TWO_ACCOUNTS.replace(
        "  name = \"ops\"\n  access_key_id = \"ops-key\"\n  access_key_secret = \"ops-secret\"\n",
        "  name = \"ops\"\n  access_key_id = \"ops-key\"\n  access_key_secret = \"ops-secret\"\n  policies = [\"AliyunMQReadOnlyAccess\"]\n",
    );
    let t = TestServer::start(&config).await;
    let _d = connect_v4(t.mqtt, "GID_e@@@ro", None).await.unwrap();
    let ops = Api {
        t: &t,
        instance: "inst-a1",
        key: ("ops-key", "ops-secret"),
    };
    assert_eq!(ops.get("/clients").await.0, 200);
    let (status, body) = ops.send("DELETE", "/clients/GID_e@@@ro", None).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("FORBIDDEN")));
    let (status, _) = ops
        .send(
            "POST",
            "/clients/GID_e@@@ro/subscribe",
            Some(json!({"topic": "a"})),
        )
        .await;
    assert_eq!(status, 403);
    t.server.shutdown().await;
}

/// Two instances, the same client id and topic in both: neither sees the
/// other's client or messages, through MQTT or either API.
#[tokio::test]
async fn instances_are_isolated() {
    let t = TestServer::start(TWO_ACCOUNTS).await;
    let id = "GID_same@@@dev";
    let login_a = signature_login("testid", "testsecret", "inst-a2", id);
    let login_b = signature_login("key-b", "secret-b", "inst-b1", id);
    let mut in_a = connect_v5(t.mqtt, id, Some(login_a)).await.unwrap();
    let mut in_b = connect_v5(t.mqtt, id, Some(login_b)).await.unwrap();
    in_a.subscribe("shared/topic").await;
    in_b.subscribe("shared/topic").await;
    let pub_a = connect_v4(
        t.mqtt,
        "GID_same@@@pub",
        Some(signature_login(
            "testid",
            "testsecret",
            "inst-a2",
            "GID_same@@@pub",
        )),
    )
    .await
    .unwrap();
    pub_a.publish("shared/topic", b"for A only").await;
    assert_eq!(in_a.next_message().await.1, b"for A only".to_vec());
    // B must not receive it: give it time to arrive if it were going to.
    let leaked = tokio::time::timeout(Duration::from_millis(500), in_b.next_message()).await;
    assert!(leaked.is_err(), "a message crossed instances: {leaked:?}");

    let api_a = Api {
        t: &t,
        instance: "inst-a2",
        key: ("testid", "testsecret"),
    };
    let api_b = Api {
        t: &t,
        instance: "inst-b1",
        key: ("key-b", "secret-b"),
    };
    let (_, a) = api_a.get("/clients").await;
    let (_, b) = api_b.get("/clients").await;
    assert_eq!(
        (a["meta"]["count"].as_u64(), b["meta"]["count"].as_u64()),
        (Some(2), Some(1))
    );
    // Kicking in A leaves B's client with the same id connected.
    assert_eq!(
        api_a
            .send("DELETE", &format!("/clients/{}", enc(id)), None)
            .await
            .0,
        204
    );
    in_a.ended().await;
    let (_, b_client) = api_b.get(&format!("/clients/{}", enc(id))).await;
    assert_eq!(b_client["connected"], true);
    let (status, body) = t
        .call_as(
            ("key-b", "secret-b"),
            "POST",
            "QuerySessionByClientId",
            &[("InstanceId", "inst-b1"), ("ClientId", id)],
        )
        .await;
    assert_eq!((status, body["OnlineStatus"].as_bool()), (200, Some(true)));
    t.server.shutdown().await;
}

/// A client with a persistent session that disconnects stays listed, with
/// connected false and disconnected_at, until its session expires or is
/// resumed.
#[tokio::test]
async fn persistent_sessions_are_listed_after_disconnect() {
    let t = TestServer::start(TWO_ACCOUNTS).await;
    let api = Api {
        t: &t,
        instance: "inst-a1",
        key: ("testid", "testsecret"),
    };
    let mut options =
        rumqttc::MqttOptions::new("GID_p@@@persist", t.mqtt.ip().to_string(), t.mqtt.port());
    options.set_clean_session(false);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 10);
    loop {
        if let rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_)) =
            eventloop.poll().await.unwrap()
        {
            break;
        }
    }
    client
        .subscribe("keep/#", rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    loop {
        if let rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)) =
            eventloop.poll().await.unwrap()
        {
            break;
        }
    }
    client.disconnect().await.unwrap();
    while eventloop.poll().await.is_ok() {}
    eventually(|| async { api.get("/clients/GID_p@@@persist").await.1["connected"] == false })
        .await;
    let (status, gone) = api.get("/clients/GID_p@@@persist").await;
    assert_eq!(status, 200);
    assert!(gone["disconnected_at"].is_string(), "{gone}");
    assert_eq!(
        (
            gone["subscriptions_cnt"].as_u64(),
            gone["expiry_interval"].as_u64()
        ),
        (Some(1), Some(7200))
    );
    let (_, list) = api.get("/clients?conn_state=disconnected").await;
    assert_eq!(list["meta"]["count"], 1);
    // Not online for the RPC API.
    assert!(!t.online("inst-a1", "GID_p@@@persist").await);
    // DELETE discards the session.
    assert_eq!(
        api.send("DELETE", "/clients/GID_p@@@persist", None).await.0,
        204
    );
    assert_eq!(api.get("/clients/GID_p@@@persist").await.0, 404);
    t.server.shutdown().await;
}

/// The EMQX API is throttled per account like the RPC endpoint
/// (`[limits] EmqxApi`): past the limit, 429 in EMQX's error shape with
/// `Retry-After`; other accounts and the RPC endpoint are not affected.
#[tokio::test]
async fn the_emqx_api_is_throttled_per_account() {
    let t = TestServer::start(&format!("{TWO_ACCOUNTS}\n[limits]\nEmqxApi = 1\n")).await;
    let api = Api {
        t: &t,
        instance: "inst-a1",
        key: ("testid", "testsecret"),
    };
    // One call per second, burst 1: of five calls in a row, at least the
    // ones after the first within the same second are refused.
    let mut refused = None;
    for _ in 0..5 {
        let (status, headers, body) = api.send_full("GET", "/clients", None).await;
        match status {
            200 => continue,
            429 => {
                refused = Some((headers, body));
                break;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    let (headers, body) = refused.expect("five calls in a row at 1 per second: none refused");
    assert_eq!(body["code"], "TOO_MANY_REQUESTS", "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("account 111") && message.contains("EMQX API"),
        "{message}"
    );
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=1).contains(&retry_after), "{retry_after}");
    // Another account has a bucket of its own.
    let other = Api {
        t: &t,
        instance: "inst-b1",
        key: ("key-b", "secret-b"),
    };
    assert_eq!(other.get("/clients").await.0, 200);
    // The RPC endpoint has its own limits.
    let (status, body) = t
        .call(
            "QuerySessionByClientId",
            &[("InstanceId", "inst-a1"), ("ClientId", "c")],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    t.server.shutdown().await;
}
