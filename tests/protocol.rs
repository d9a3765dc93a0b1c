//! The RPC protocol at the HTTP level: every row of the error table, answer
//! formats (JSON and XML), signature V3, and limits on input. Requests are
//! built by hand here, so that each can break exactly one rule.

mod common;

use chrono::{Duration as ChronoDuration, SecondsFormat, Utc};
use common::{TWO_ACCOUNTS, TestServer, connect_v4};
use http_body_util::{BodyExt, Full};
use mqgate::client::{Signing, encode_form, sign_v3};
use mqgate::error::ErrorCode;
use mqgate::rpc::signature_v1;
use std::collections::HashSet;

/// An HTTP answer: status, content type, body.
#[derive(Debug)]
struct Reply {
    status: u16,
    content_type: String,
    body: String,
}

impl Reply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// The `Code` of a JSON or XML error answer.
    fn code(&self) -> String {
        if self.content_type.starts_with("text/xml") {
            let start = self.body.find("<Code>").expect("no <Code>") + 6;
            let end = self.body.find("</Code>").unwrap();
            self.body[start..end].to_string()
        } else {
            self.json()["Code"].as_str().unwrap_or_default().to_string()
        }
    }
}

async fn send(method: &str, url: &str, headers: &[(String, String)], body: Vec<u8>) -> Reply {
    let mut builder = hyper::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        if name != "host" {
            builder = builder.header(name.as_str(), value.as_str());
        }
    }
    let request = builder.body(Full::new(bytes::Bytes::from(body))).unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let response = client.request(request).await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        content_type,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The common V1 parameters of a call, with a fresh nonce.
fn v1_params(action: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut params: Vec<(String, String)> = [
        ("AccessKeyId", "testid"),
        ("Action", action),
        ("Format", "JSON"),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureVersion", "1.0"),
        ("Version", "2020-04-20"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    params.push(("SignatureNonce".into(), uuid::Uuid::new_v4().to_string()));
    params.push(("Timestamp".into(), now()));
    for (k, v) in extra {
        params.retain(|(name, _)| name != k);
        params.push((k.to_string(), v.to_string()));
    }
    params
}

/// Signs `params` (V1, for `method`) with `secret` and returns the query.
fn v1_signed(method: &str, mut params: Vec<(String, String)>, secret: &str) -> String {
    params.sort();
    let canonical =
        signature_v1::canonical_query(params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let signature = signature_v1::sign(secret, &signature_v1::string_to_sign(method, &canonical));
    params.push(("Signature".into(), signature));
    encode_form(&params)
}

async fn v1_get(t: &TestServer, params: Vec<(String, String)>, secret: &str) -> Reply {
    let query = v1_signed("GET", params, secret);
    send("GET", &format!("{}/?{query}", t.endpoint), &[], Vec::new()).await
}

fn with(action: &str, business: &[(&str, &str)]) -> Vec<(String, String)> {
    v1_params(action, business)
}

/// Walks the error table: each row is produced by a real request, with the
/// row's status; a row added without a case here fails this test.
#[tokio::test]
async fn every_row_of_the_error_table_is_produced() {
    let t = TestServer::start(TWO_ACCOUNTS).await;
    let mut seen: HashSet<ErrorCode> = HashSet::new();
    let mut expect = |reply: Reply, row: ErrorCode| {
        assert_eq!(reply.status, row.status(), "{row:?}: {reply:?}");
        let code = reply.code();
        match row {
            ErrorCode::InvalidParameter => {
                assert!(code.starts_with("InvalidParameter."), "{reply:?}")
            }
            _ => assert_eq!(code, row.code(), "{reply:?}"),
        }
        seen.insert(row);
    };
    let qs = [("InstanceId", "inst-a1"), ("ClientId", "c")];

    let mut no_nonce = with("QuerySessionByClientId", &qs);
    no_nonce.retain(|(k, _)| k != "SignatureNonce");
    expect(
        v1_get(&t, no_nonce, "testsecret").await,
        ErrorCode::MissingParameter,
    );
    expect(
        v1_get(
            &t,
            with("QuerySessionByClientId", &[("InstanceId", "inst-a1")]),
            "testsecret",
        )
        .await,
        ErrorCode::InvalidParameter,
    );
    expect(
        send(
            "GET",
            &format!("{}/?ClientId=%FF%FE", t.endpoint),
            &[],
            Vec::new(),
        )
        .await,
        ErrorCode::MalformedRequest,
    );
    expect(
        send(
            "GET",
            &format!("{}/?Action=QuerySessionByClientId&Format=JSON", t.endpoint),
            &[],
            Vec::new(),
        )
        .await,
        ErrorCode::IncompleteSignature,
    );
    expect(
        v1_get(&t, with("QuerySessionByClientId", &qs), "wrong").await,
        ErrorCode::SignatureDoesNotMatch,
    );
    let mut sha256 = with("QuerySessionByClientId", &qs);
    sha256.push(("SignatureMethod".into(), "HMAC-SHA256".into()));
    sha256.retain(|(k, v)| k != "SignatureMethod" || v == "HMAC-SHA256");
    expect(
        v1_get(&t, sha256, "testsecret").await,
        ErrorCode::InvalidSignatureMethod,
    );
    let mut unknown = with("QuerySessionByClientId", &qs);
    unknown.retain(|(k, _)| k != "AccessKeyId");
    unknown.push(("AccessKeyId".into(), "nobody".into()));
    expect(
        v1_get(&t, unknown, "x").await,
        ErrorCode::InvalidAccessKeyIdNotFound,
    );
    let mut disabled = with("QuerySessionByClientId", &qs);
    disabled.retain(|(k, _)| k != "AccessKeyId");
    disabled.push(("AccessKeyId".into(), "old-key".into()));
    expect(
        v1_get(&t, disabled, "old-secret").await,
        ErrorCode::InvalidAccessKeyIdInactive,
    );
    expect(
        v1_get(
            &t,
            with(
                "QuerySessionByClientId",
                &[
                    ("InstanceId", "inst-a1"),
                    ("ClientId", "c"),
                    ("SecurityToken", "CAIS..."),
                ],
            ),
            "testsecret",
        )
        .await,
        ErrorCode::InvalidSecurityToken,
    );
    expect(
        v1_get(
            &t,
            with(
                "QuerySessionByClientId",
                &[
                    ("InstanceId", "inst-a1"),
                    ("ClientId", "c"),
                    ("Timestamp", "yesterday"),
                ],
            ),
            "testsecret",
        )
        .await,
        ErrorCode::InvalidTimeStampFormat,
    );
    let old = (Utc::now() - ChronoDuration::minutes(30)).to_rfc3339_opts(SecondsFormat::Secs, true);
    expect(
        v1_get(
            &t,
            with(
                "QuerySessionByClientId",
                &[
                    ("InstanceId", "inst-a1"),
                    ("ClientId", "c"),
                    ("Timestamp", &old),
                ],
            ),
            "testsecret",
        )
        .await,
        ErrorCode::InvalidTimeStampExpired,
    );
    let once = v1_signed("GET", with("QuerySessionByClientId", &qs), "testsecret");
    assert_eq!(
        send("GET", &format!("{}/?{once}", t.endpoint), &[], Vec::new())
            .await
            .status,
        200
    );
    expect(
        send("GET", &format!("{}/?{once}", t.endpoint), &[], Vec::new()).await,
        ErrorCode::SignatureNonceUsed,
    );
    expect(
        v1_get(&t, with("DescribeEverything", &qs), "testsecret").await,
        ErrorCode::InvalidActionNotFound,
    );
    expect(
        v1_get(
            &t,
            with(
                "QuerySessionByClientId",
                &[
                    ("InstanceId", "inst-a1"),
                    ("ClientId", "c"),
                    ("Version", "2019-01-01"),
                ],
            ),
            "testsecret",
        )
        .await,
        ErrorCode::InvalidVersion,
    );
    expect(
        v1_get(
            &t,
            with(
                "QuerySessionByClientId",
                &[("InstanceId", "inst-b1"), ("ClientId", "c")],
            ),
            "testsecret",
        )
        .await,
        ErrorCode::InstancePermissionCheckFailed,
    );
    let mut ops = with("CloseConnection", &qs);
    ops.retain(|(k, _)| k != "AccessKeyId");
    ops.push(("AccessKeyId".into(), "ops-key".into()));
    expect(v1_get(&t, ops, "ops-secret").await, ErrorCode::ForbiddenRam);

    // Replay memory full of live nonces: refuse rather than forget one.
    let small =
        TestServer::start(&TWO_ACCOUNTS.replace("[mqtt]", "max_remembered_nonces = 1\n[mqtt]"))
            .await;
    assert_eq!(
        v1_get(&small, with("QuerySessionByClientId", &qs), "testsecret")
            .await
            .status,
        200
    );
    expect(
        v1_get(&small, with("QuerySessionByClientId", &qs), "testsecret").await,
        ErrorCode::ServiceUnavailable,
    );
    small.server.shutdown().await;

    // Flow control (403 for most actions, 500 for the batch query, as the
    // seeds list them) and the monthly quota.
    let limited = TestServer::start(&format!(
        "[limits]\nQuerySessionByClientId = 1\nBatchQuerySessionByClientIds = 1\n{}",
        TWO_ACCOUNTS.replace(
            "  id = \"inst-a2\"\n",
            "  id = \"inst-a2\"\n  monthly_transaction_quota = 1\n"
        )
    ))
    .await;
    assert_eq!(
        v1_get(&limited, with("QuerySessionByClientId", &qs), "testsecret")
            .await
            .status,
        200
    );
    expect(
        v1_get(&limited, with("QuerySessionByClientId", &qs), "testsecret").await,
        ErrorCode::SystemOverFlow,
    );
    let batch = [("InstanceId", "inst-a1"), ("ClientIdList.1", "c")];
    assert_eq!(
        v1_get(
            &limited,
            with("BatchQuerySessionByClientIds", &batch),
            "testsecret"
        )
        .await
        .status,
        200
    );
    expect(
        v1_get(
            &limited,
            with("BatchQuerySessionByClientIds", &batch),
            "testsecret",
        )
        .await,
        ErrorCode::SystemOverFlowServer,
    );
    let close_a2 = [("InstanceId", "inst-a2"), ("ClientId", "c")];
    assert_eq!(
        v1_get(&limited, with("CloseConnection", &close_a2), "testsecret")
            .await
            .status,
        200
    );
    expect(
        v1_get(&limited, with("CloseConnection", &close_a2), "testsecret").await,
        ErrorCode::InstanceQuotaExceeded,
    );
    limited.server.shutdown().await;

    // Device-side state: a group id created twice, and an instance's limit
    // of group ids.
    let groups = TestServer::start(&TWO_ACCOUNTS.replace(
        "  id = \"inst-a2\"\n",
        "  id = \"inst-a2\"\n  max_group_ids = 1\n  max_device_credentials = 1\n  max_tokens = 2\n  max_blacklisted_clients = 1\n",
    ))
    .await;
    let create = |group: &'static str| {
        with(
            "CreateGroupId",
            &[("InstanceId", "inst-a2"), ("GroupId", group)],
        )
    };
    assert_eq!(
        v1_get(&groups, create("GID_first"), "testsecret")
            .await
            .status,
        200
    );
    expect(
        v1_get(&groups, create("GID_first"), "testsecret").await,
        ErrorCode::GroupIdAlreadyExsited,
    );
    expect(
        v1_get(&groups, create("GID_second"), "testsecret").await,
        ErrorCode::GroupIdNumExceed,
    );
    // A device credential that does not exist; an instance's limit of them.
    expect(
        v1_get(
            &groups,
            with(
                "GetDeviceCredential",
                &[("InstanceId", "inst-a2"), ("ClientId", "GID_x@@@none")],
            ),
            "testsecret",
        )
        .await,
        ErrorCode::DeviceCredentialNotFound,
    );
    let register = |client: &'static str| {
        with(
            "RegisterDeviceCredential",
            &[("InstanceId", "inst-a2"), ("ClientId", client)],
        )
    };
    assert_eq!(
        v1_get(&groups, register("GID_test@@@first"), "testsecret")
            .await
            .status,
        200
    );
    expect(
        v1_get(&groups, register("GID_test@@@second"), "testsecret").await,
        ErrorCode::DeviceCredentialNumExceed,
    );
    // An instance's limit of unexpired tokens (max_tokens = 2): a third
    // is refused until one is revoked.
    let expire = (chrono::Utc::now().timestamp_millis() + 3_600_000).to_string();
    let apply = [
        ("InstanceId", "inst-a2"),
        ("Actions", "R"),
        ("Resources", "a/#"),
        ("ExpireTime", expire.as_str()),
    ];
    let mut tokens = Vec::new();
    for _ in 0..2 {
        let reply = v1_get(&groups, with("ApplyToken", &apply), "testsecret").await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        tokens.push(body["Token"].as_str().unwrap().to_string());
    }
    expect(
        v1_get(&groups, with("ApplyToken", &apply), "testsecret").await,
        ErrorCode::TokenNumExceed,
    );
    let revoke = [("InstanceId", "inst-a2"), ("Token", tokens[0].as_str())];
    assert_eq!(
        v1_get(&groups, with("RevokeToken", &revoke), "testsecret")
            .await
            .status,
        200
    );
    assert_eq!(
        v1_get(&groups, with("ApplyToken", &apply), "testsecret")
            .await
            .status,
        200
    );
    // The connection blacklist's capacity (max_blacklisted_clients = 1).
    let black = |client: &'static str| {
        with(
            "AddCustomAuthConnectBlack",
            &[("InstanceId", "inst-a2"), ("ClientId", client)],
        )
    };
    assert_eq!(
        v1_get(&groups, black("GID_b@@@one"), "testsecret")
            .await
            .status,
        200
    );
    expect(
        v1_get(&groups, black("GID_b@@@two"), "testsecret").await,
        ErrorCode::CustomauthOverCapacity,
    );
    // Tags on an instance of another account: MqttOwnerCheckError.
    expect(
        v1_get(
            &groups,
            with(
                "TagResources",
                &[
                    ("ResourceType", "instance"),
                    ("ResourceId.1", "inst-b1"),
                    ("Tag.1.Key", "env"),
                    ("Tag.1.Value", "prod"),
                ],
            ),
            "testsecret",
        )
        .await,
        ErrorCode::MqttOwnerCheckError,
    );
    groups.server.shutdown().await;

    // An instance in the directory whose broker is not running (as after a
    // configuration reload that added it): InternalError, not a panic.
    expect(internal_error_reply().await, ErrorCode::InternalError);

    let missing: Vec<_> = ErrorCode::ALL
        .iter()
        .filter(|row| !seen.contains(row))
        .collect();
    assert!(missing.is_empty(), "rows no test produced: {missing:?}");
    t.server.shutdown().await;
}

async fn internal_error_reply() -> Reply {
    use mqgate::config::Config;
    use mqgate::directory::{Directory, DirectoryHandle};
    use mqgate::replay::ReplayGuard;
    use mqgate::state::AppState;
    use tower::ServiceExt;

    let with_instance = Config::parse(TWO_ACCOUNTS, "t.toml").unwrap();
    let without = Config::parse(
        &TWO_ACCOUNTS.replace("  [[accounts.instances]]\n  id = \"inst-a2\"\n", ""),
        "t.toml",
    )
    .unwrap();
    let brokers = mqgate::broker::Brokers::start(
        &Directory::from_config(&without),
        &without.mqtt,
        std::time::Duration::from_secs(1),
        None,
    )
    .await
    .unwrap();
    let storage = tempfile::tempdir().unwrap();
    let (traces, tracer, _) = mqgate::trace::TraceStore::open(
        storage.path(),
        mqgate::trace::store::Retention {
            max_age: std::time::Duration::from_secs(3600),
            max_bytes: u64::MAX,
        },
    )
    .unwrap();
    let state = std::sync::Arc::new(AppState {
        directory: DirectoryHandle::new(Directory::from_config(&with_instance)),
        brokers: std::sync::Arc::new(brokers),
        replay: ReplayGuard::new(900, Utc::now() - ChronoDuration::minutes(1), 100),
        throttle: std::sync::RwLock::new(std::sync::Arc::new(mqgate::throttle::Throttle::new([]))),
        meter: std::sync::Arc::new(mqgate::metering::Meter::open(storage.path()).unwrap()),
        devices: std::sync::Arc::new(
            mqgate::devices::DeviceStore::open(storage.path(), None).unwrap(),
        ),
        traces,
        tracer,
        metrics: mqgate::metrics::Metrics::default(),
        session_expiry_secs: 7200,
        metrics_token: None,
        cluster: None,
    });
    let query = v1_signed(
        "GET",
        with(
            "QuerySessionByClientId",
            &[("InstanceId", "inst-a2"), ("ClientId", "c")],
        ),
        "testsecret",
    );
    let request = axum::http::Request::get(format!("/?{query}"))
        .body(axum::body::Body::empty())
        .unwrap();
    let response = mqgate::server::app(state).oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        content_type,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Without `Format`, a V1 call is answered in XML, as Alibaba's gateway
/// does; `Format` is read case-insensitively; errors come in the request's
/// format.
#[tokio::test]
async fn formats_json_and_xml() {
    let t = TestServer::start(TWO_ACCOUNTS).await;
    let _device = connect_v4(t.mqtt, "GID_x@@@xml", None).await.unwrap();
    let mut no_format = with(
        "QuerySessionByClientId",
        &[("InstanceId", "inst-a1"), ("ClientId", "GID_x@@@xml")],
    );
    no_format.retain(|(k, _)| k != "Format");
    let reply = v1_get(&t, no_format, "testsecret").await;
    assert_eq!(
        (reply.status, reply.content_type.as_str()),
        (200, "text/xml;charset=utf-8")
    );
    assert!(reply.body.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?><QuerySessionByClientIdResponse><OnlineStatus>true</OnlineStatus><RequestId>"), "{}", reply.body);

    let reply = v1_get(
        &t,
        with(
            "BatchQuerySessionByClientIds",
            &[
                ("InstanceId", "inst-a1"),
                ("ClientIdList.1", "GID_x@@@xml"),
                ("ClientIdList.2", "a<b"),
                ("Format", "xml"),
            ],
        ),
        "testsecret",
    )
    .await;
    assert_eq!(reply.content_type, "text/xml;charset=utf-8");
    assert!(reply.body.contains("<OnlineStatusList><ClientId>GID_x@@@xml</ClientId><OnlineStatus>true</OnlineStatus></OnlineStatusList><OnlineStatusList><ClientId>a&lt;b</ClientId><OnlineStatus>false</OnlineStatus></OnlineStatusList>"), "{}", reply.body);

    let reply = v1_get(
        &t,
        with(
            "QuerySessionByClientId",
            &[
                ("InstanceId", "inst-a1"),
                ("ClientId", "c"),
                ("Format", "jSoN"),
            ],
        ),
        "testsecret",
    )
    .await;
    assert_eq!(reply.content_type, "application/json;charset=utf-8");
    assert_eq!(reply.json()["OnlineStatus"], false);

    let reply = v1_get(
        &t,
        with(
            "QuerySessionByClientId",
            &[
                ("InstanceId", "inst-a1"),
                ("ClientId", "c"),
                ("Format", "XML"),
            ],
        ),
        "wrong",
    )
    .await;
    assert_eq!(
        (reply.status, reply.content_type.as_str()),
        (400, "text/xml;charset=utf-8")
    );
    assert!(
        reply
            .body
            .starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><RequestId>"),
        "{}",
        reply.body
    );
    for field in [
        "<HostId>",
        "<Code>SignatureDoesNotMatch</Code>",
        "<Message>",
        "<Recommend>",
    ] {
        assert!(reply.body.contains(field), "{field}: {}", reply.body);
    }
    let reply = v1_get(
        &t,
        with("QuerySessionByClientId", &[("Format", "yaml")]),
        "testsecret",
    )
    .await;
    assert_eq!(
        (reply.status, reply.code().as_str()),
        (400, "InvalidParameter.Format")
    );
    t.server.shutdown().await;
}

/// Signature V3 works for the three actions by GET and POST, answers JSON
/// by default, and refuses what it must.
#[tokio::test]
async fn signature_v3_end_to_end() {
    let t = TestServer::start(TWO_ACCOUNTS).await;
    let client_id = "GID_x@@@dev 1+*~/é";
    let mut device = connect_v4(t.mqtt, client_id, None).await.unwrap();
    for method in ["GET", "POST"] {
        let (status, body) = t
            .call_signed(
                ("testid", "testsecret"),
                method,
                Signing::V3,
                "QuerySessionByClientId",
                &[("InstanceId", "inst-a1"), ("ClientId", client_id)],
            )
            .await;
        assert_eq!(
            (status, body["OnlineStatus"].as_bool()),
            (200, Some(true)),
            "{method}: {body}"
        );
        let (status, body) = t
            .call_signed(
                ("testid", "testsecret"),
                method,
                Signing::V3,
                "BatchQuerySessionByClientIds",
                &[("InstanceId", "inst-a1"), ("ClientIdList.1", client_id)],
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["OnlineStatusList"][0]["OnlineStatus"], true);
        let (status, body) = t
            .call_signed(
                ("testid", "wrong"),
                method,
                Signing::V3,
                "QuerySessionByClientId",
                &[("InstanceId", "inst-a1"), ("ClientId", "c")],
            )
            .await;
        assert_eq!(
            (status, body["Code"].as_str()),
            (400, Some("SignatureDoesNotMatch"))
        );
        assert!(
            body["Message"]
                .as_str()
                .unwrap()
                .contains("server string to sign is:ACS3-HMAC-SHA256\n")
        );
    }
    let (status, body) = t
        .call_signed(
            ("testid", "testsecret"),
            "POST",
            Signing::V3,
            "CloseConnection",
            &[("InstanceId", "inst-a1"), ("ClientId", client_id)],
        )
        .await;
    assert_eq!(
        (status, body["Success"].as_bool()),
        (200, Some(true)),
        "{body}"
    );
    device.ended().await;

    // Breaking one rule at a time.
    let params = vec![
        ("InstanceId".to_string(), "inst-a1".to_string()),
        ("ClientId".to_string(), "c".to_string()),
    ];
    let host = t.endpoint.trim_start_matches("http://").to_string();
    let fresh = || {
        sign_v3(
            "POST",
            &host,
            "QuerySessionByClientId",
            &params,
            "testid",
            "testsecret",
            Utc::now(),
            &uuid::Uuid::new_v4().to_string(),
        )
    };
    let post = |signed: mqgate::client::SignedV3| {
        let url = format!("{}/", t.endpoint);
        async move { send("POST", &url, &signed.headers, signed.body).await }
    };
    let set = |signed: &mut mqgate::client::SignedV3, name: &str, value: Option<&str>| {
        signed.headers.retain(|(n, _)| n != name);
        if let Some(v) = value {
            signed.headers.push((name.to_string(), v.to_string()));
        }
    };
    let auth = |signed: &mqgate::client::SignedV3| {
        signed
            .headers
            .iter()
            .find(|(n, _)| n == "authorization")
            .unwrap()
            .1
            .clone()
    };

    assert_eq!(post(fresh()).await.status, 200);
    let mut body_changed = fresh();
    body_changed.body = b"ClientId=other&InstanceId=inst-a1".to_vec();
    let reply = post(body_changed).await;
    assert_eq!(
        (reply.status, reply.code().as_str()),
        (400, "SignatureDoesNotMatch"),
        "{reply:?}"
    );
    assert!(reply.body.contains("x-acs-content-sha256"));
    let mut unsigned_header = fresh();
    unsigned_header
        .headers
        .push(("x-acs-extra".into(), "1".into()));
    let reply = post(unsigned_header).await;
    assert_eq!(
        (reply.status, reply.code().as_str()),
        (400, "IncompleteSignature"),
        "{reply:?}"
    );
    let mut no_host = fresh();
    let a = auth(&no_host).replace(
        "SignedHeaders=content-type;host;",
        "SignedHeaders=content-type;",
    );
    set(&mut no_host, "authorization", Some(&a));
    assert_eq!(post(no_host).await.code(), "IncompleteSignature");
    let mut sm3 = fresh();
    let a = auth(&sm3).replace("ACS3-HMAC-SHA256", "ACS3-HMAC-SM3");
    set(&mut sm3, "authorization", Some(&a));
    assert_eq!(post(sm3).await.code(), "InvalidSignatureMethod");
    let mut garbled = fresh();
    set(
        &mut garbled,
        "authorization",
        Some("ACS3-HMAC-SHA256 Credential=testid"),
    );
    let reply = post(garbled).await;
    assert_eq!(
        (reply.status, reply.code().as_str()),
        (400, "IncompleteSignature")
    );
    assert!(reply.body.contains("SignedHeaders"), "{}", reply.body);
    let mut no_nonce = fresh();
    set(&mut no_nonce, "x-acs-signature-nonce", None);
    let reply = post(no_nonce).await;
    assert_eq!(reply.code(), "MissingParameter");
    assert!(reply.body.contains("x-acs-signature-nonce"));
    let mut twice = fresh();
    twice.headers.push(("x-acs-date".into(), now()));
    assert_eq!(post(twice).await.code(), "MalformedRequest");
    let replayed = fresh();
    let copy = mqgate::client::SignedV3 {
        query: replayed.query.clone(),
        headers: replayed.headers.clone(),
        body: replayed.body.clone(),
    };
    assert_eq!(post(replayed).await.status, 200);
    assert_eq!(post(copy).await.code(), "SignatureNonceUsed");
    t.server.shutdown().await;
}

/// Oversized, malformed or flooding input: a 400 with a code and a message,
/// never a panic or a hang.
#[tokio::test]
async fn limits_on_input() {
    let t = TestServer::start(TWO_ACCOUNTS).await;
    let url = format!("{}/", t.endpoint);
    let form = || {
        vec![(
            "content-type".to_string(),
            "application/x-www-form-urlencoded".to_string(),
        )]
    };
    let check = |reply: Reply, code: &str, needle: &str| {
        assert_eq!(
            (reply.status, reply.code().as_str()),
            (400, code),
            "{reply:?}"
        );
        assert!(
            reply.body.contains(needle),
            "expected {needle:?} in {}",
            reply.body
        );
    };
    check(
        send("POST", &url, &form(), vec![b'a'; 300 * 1024]).await,
        "MalformedRequest",
        "larger than 262144 bytes",
    );
    // A query string too long for a URI is read all the same (the Tea SDK
    // sends SendMessage's payload in it), up to 256 KiB; hand-written
    // requests, since mqgate's client cannot send such a URI.
    let raw = |target: String, headers: &str| {
        format!("GET {target} HTTP/1.1\r\nhost: mqgate\r\n{headers}\r\n")
    };
    let answers = common::raw_http(
        t.server.http_addr,
        &[
            raw(format!("/?Format=JSON&a={}", "x".repeat(262_144)), ""),
            raw("/?a=1".into(), "x-mqgate-query: b=2\r\n"),
            raw(format!("/favicon.ico?a={}", "x".repeat(70_000)), ""),
        ],
    )
    .await;
    let reply = |i: usize| Reply {
        status: answers[i].status,
        content_type: answers[i].content_type.clone(),
        body: answers[i].body.clone(),
    };
    check(reply(0), "MalformedRequest", "longer than 262144 bytes");
    // A query in the URI and one moved into the header: which is it?
    check(reply(1), "MalformedRequest", "both");
    // Only the RPC endpoint reads a moved query; elsewhere the HTTP stack
    // refuses a URI that long, as before (and closes the connection).
    assert_eq!((answers.len(), answers[2].status), (3, 414), "{answers:?}");
    let many: Vec<String> = (0..300).map(|i| format!("k{i}=v")).collect();
    check(
        send("POST", &url, &form(), many.join("&").into_bytes()).await,
        "MalformedRequest",
        "more than 256 parameters",
    );
    check(
        send("GET", &format!("{url}?ClientId=%C3%28"), &[], Vec::new()).await,
        "MalformedRequest",
        "UTF-8",
    );
    check(
        send(
            "POST",
            &format!("{url}?ClientId=a"),
            &form(),
            b"ClientId=b".to_vec(),
        )
        .await,
        "InvalidParameter.ClientId",
        "more than once",
    );
    check(
        send(
            "POST",
            &url,
            &[("content-type".into(), "application/json".into())],
            b"{}".to_vec(),
        )
        .await,
        "MalformedRequest",
        "application/x-www-form-urlencoded",
    );
    check(
        send("PUT", &url, &[], Vec::new()).await,
        "MalformedRequest",
        "use GET or POST",
    );
    let flood: Vec<(String, String)> = (0..80)
        .map(|i| (format!("x-flood-{i}"), "1".to_string()))
        .collect();
    check(
        send("GET", &format!("{url}?Format=JSON"), &flood, Vec::new()).await,
        "MalformedRequest",
        "headers",
    );
    // Past the HTTP layer's own limit (100), hyper refuses before mqgate
    // sees the request: 431, no body.
    let deluge: Vec<(String, String)> = (0..200)
        .map(|i| (format!("x-flood-{i}"), "1".to_string()))
        .collect();
    let reply = send("GET", &format!("{url}?Format=JSON"), &deluge, Vec::new()).await;
    assert_eq!(reply.status, 431);
    let reply = send(
        "GET",
        &format!("{}/favicon.ico", t.endpoint),
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(
        (reply.status, reply.code().as_str()),
        (404, "InvalidAction.NotFound")
    );
    // The server is still answering.
    let (status, _) = t
        .call(
            "QuerySessionByClientId",
            &[("InstanceId", "inst-a1"), ("ClientId", "c")],
        )
        .await;
    assert_eq!(status, 200);
    t.server.shutdown().await;
}
