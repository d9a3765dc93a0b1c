//! The device-side state (group ids, device credentials, tokens, the
//! connection blacklist) is durable:
//! written before the call is answered, it survives SIGKILL and a restart
//! of the `mqgate` binary; and a device credential logs real MQTT clients
//! (rumqttc, 3.1.1 and 5) in after the restart.

mod common;

use std::process::{Child, Stdio};

struct Gate {
    child: Child,
    endpoint: String,
    mqtt: std::net::SocketAddr,
}

impl Gate {
    fn start(config: &std::path::Path) -> Gate {
        let (child, first_line) = common::spawn_mqgate_line(
            &["serve", "--config", config.to_str().unwrap()],
            Stdio::null(),
        );
        let address = |name: &str| {
            first_line
                .split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .unwrap_or_else(|| panic!("no {name} in {first_line:?}"))
                .to_string()
        };
        Gate {
            child,
            endpoint: format!("http://{}", address("http=")),
            mqtt: address("mqtt=").parse().unwrap(),
        }
    }

    async fn call(&self, action: &str, params: &[(&str, &str)]) -> serde_json::Value {
        let params: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (status, body) = mqgate::client::call(
            &self.endpoint,
            "POST",
            mqgate::client::Signing::V1,
            action,
            &params,
            "testid",
            "testsecret",
        )
        .await
        .unwrap();
        assert_eq!(status, 200, "{action}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// (group id, create time) of the instance's groups.
    async fn groups(&self) -> Vec<(String, i64)> {
        let body = self
            .call("ListGroupId", &[("InstanceId", "post-cn-durable")])
            .await;
        body["Data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| {
                (
                    g["GroupId"].as_str().unwrap().to_string(),
                    g["CreateTime"].as_i64().unwrap(),
                )
            })
            .collect()
    }

    fn sigkill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn sigterm(mut self) {
        let pid = self.child.id().to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(status.success());
        assert!(self.child.wait().unwrap().success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_ids_survive_sigkill_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("durable.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[http]
listen = "127.0.0.1:0"
[mqtt]
listen = "127.0.0.1:0"
[storage]
dir = {:?}
[[accounts]]
id = "1234567890"
  [accounts.limits]
  CreateGroupId = 1000
  DeleteGroupId = 1000
  ListGroupId = 1000
  RegisterDeviceCredential = 1000
  GetDeviceCredential = 1000
  ApplyToken = 1000
  QueryToken = 1000
  RevokeToken = 1000
  AddCustomAuthConnectBlack = 1000
  [[accounts.instances]]
  id = "post-cn-durable"
  [[accounts.users]]
  name = "root"
  access_key_id = "testid"
  access_key_secret = "testsecret"
  root = true
"#,
            dir.path().join("data").display().to_string()
        ),
    )
    .unwrap();

    let gate = Gate::start(&config);
    for group in ["GID_one", "GID_two", "GID_three"] {
        gate.call(
            "CreateGroupId",
            &[("InstanceId", "post-cn-durable"), ("GroupId", group)],
        )
        .await;
    }
    gate.call(
        "DeleteGroupId",
        &[("InstanceId", "post-cn-durable"), ("GroupId", "GID_two")],
    )
    .await;
    let credential = &[
        ("InstanceId", "post-cn-durable"),
        ("ClientId", "GID_one@@@dev"),
    ];
    let registered =
        gate.call("RegisterDeviceCredential", credential).await["DeviceCredential"].clone();
    let expire = (chrono::Utc::now().timestamp_millis() + 3_600_000).to_string();
    let mut tokens = Vec::new();
    for _ in 0..2 {
        let token = gate
            .call(
                "ApplyToken",
                &[
                    ("InstanceId", "post-cn-durable"),
                    ("Actions", "R,W"),
                    ("Resources", "durable/#"),
                    ("ExpireTime", &expire),
                ],
            )
            .await["Token"]
            .as_str()
            .unwrap()
            .to_string();
        tokens.push(token);
    }
    gate.call(
        "AddCustomAuthConnectBlack",
        &[
            ("InstanceId", "post-cn-durable"),
            ("ClientId", "GID_one@@@banned"),
        ],
    )
    .await;
    gate.call(
        "RevokeToken",
        &[("InstanceId", "post-cn-durable"), ("Token", &tokens[1])],
    )
    .await;
    let before = gate.groups().await;
    assert_eq!(
        before.iter().map(|(g, _)| g.as_str()).collect::<Vec<_>>(),
        ["GID_one", "GID_three"]
    );
    // Answered, therefore durable: SIGKILL right after the last answer.
    gate.sigkill();

    let gate = Gate::start(&config);
    assert_eq!(gate.groups().await, before, "after SIGKILL");
    let fetched = gate.call("GetDeviceCredential", credential).await["DeviceCredential"].clone();
    assert_eq!(fetched, registered, "after SIGKILL");
    // The credential logs real clients in, MQTT 3.1.1 and 5.
    let login = (
        format!(
            "DeviceCredential|{}|post-cn-durable",
            fetched["DeviceAccessKeyId"].as_str().unwrap()
        ),
        mqgate::broker::device_auth::signature_password(
            fetched["DeviceAccessKeySecret"].as_str().unwrap(),
            "GID_one@@@dev",
        ),
    );
    let v4 = common::connect_v4(gate.mqtt, "GID_one@@@dev", Some(login.clone())).await;
    assert!(v4.is_ok(), "{v4:?}");
    let v5 = common::connect_v5(gate.mqtt, "GID_one@@@dev", Some(login)).await;
    assert!(v5.is_ok(), "{v5:?}");
    // The token still works, the revoked one does not, and neither is in
    // the database file in clear.
    for (token, valid) in [(&tokens[0], true), (&tokens[1], false)] {
        let params = [("InstanceId", "post-cn-durable"), ("Token", token.as_str())];
        let body = gate.call("QueryToken", &params).await;
        assert_eq!(body["TokenStatus"], valid, "after SIGKILL");
    }
    let token_login = |token: &str| {
        (
            "Token|testid|post-cn-durable".to_string(),
            format!("RW|{token}"),
        )
    };
    let v4 = common::connect_v4(gate.mqtt, "GID_one@@@tok", Some(token_login(&tokens[0]))).await;
    assert!(v4.is_ok(), "{v4:?}");
    let revoked =
        common::connect_v5(gate.mqtt, "GID_one@@@tok5", Some(token_login(&tokens[1]))).await;
    assert!(revoked.is_err(), "a revoked token logged in after SIGKILL");
    let login = common::signature_login(
        "testid",
        "testsecret",
        "post-cn-durable",
        "GID_one@@@banned",
    );
    let banned = common::connect_v5(gate.mqtt, "GID_one@@@banned", Some(login)).await;
    assert!(
        banned.as_ref().is_err_and(|e| e.contains("Banned")),
        "a blacklisted client id connected after SIGKILL: {banned:?}"
    );
    let database = std::fs::read(dir.path().join("data/devices.sqlite3")).unwrap();
    let wal = std::fs::read(dir.path().join("data/devices.sqlite3-wal")).unwrap_or_default();
    for token in &tokens {
        for file in [&database, &wal] {
            assert!(
                !file.windows(token.len()).any(|w| w == token.as_bytes()),
                "a token is stored in clear"
            );
        }
    }
    gate.sigterm();
    let gate = Gate::start(&config);
    assert_eq!(gate.groups().await, before, "after a clean restart");
    gate.sigterm();
}

/// Custom-auth identities and permission rules, answered, survive SIGKILL;
/// after the restart the identity logs real clients in and its rules bind
/// them; the secrets are not in the database files in clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_auth_survives_sigkill_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("durable.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[http]
listen = "127.0.0.1:0"
[mqtt]
listen = "127.0.0.1:0"
[storage]
dir = {:?}
[[accounts]]
id = "1234567890"
  [[accounts.instances]]
  id = "post-cn-durable"
  [[accounts.users]]
  name = "root"
  access_key_id = "testid"
  access_key_secret = "testsecret"
  root = true
"#,
            dir.path().join("data").display().to_string()
        ),
    )
    .unwrap();
    let instance = ("InstanceId", "post-cn-durable");
    let secrets = ["durable-secret-signed", "durable-secret-origin"];
    let gate = Gate::start(&config);
    gate.call(
        "AddCustomAuthIdentity",
        &[
            instance,
            ("IdentityType", "USER"),
            ("Username", "fleet"),
            ("Secret", secrets[0]),
            ("SignMode", "SIGNED"),
        ],
    )
    .await;
    gate.call(
        "AddCustomAuthIdentity",
        &[
            instance,
            ("IdentityType", "CLIENT"),
            ("Username", "fleet"),
            ("ClientId", "GID_f@@@pinned"),
            ("Secret", secrets[1]),
            ("SignMode", "ORIGIN"),
        ],
    )
    .await;
    for (topic, effect, action) in [
        ("fleet/+/telemetry", "ALLOW", "PUB"),
        ("fleet/cmd/#", "ALLOW", "SUB"),
        ("fleet/cmd/secret", "DENY", "SUB"),
    ] {
        gate.call(
            "AddCustomAuthPermission",
            &[
                instance,
                ("IdentityType", "USER"),
                ("Identity", "fleet"),
                ("Topic", topic),
                ("Effect", effect),
                ("PermitAction", action),
            ],
        )
        .await;
    }
    let identities = query(&gate, "QueryCustomAuthIdentity", instance).await;
    let rules = query(&gate, "QueryCustomAuthPermission", instance).await;
    assert_eq!(rules.as_array().unwrap().len(), 3, "{rules}");
    gate.sigkill();

    let gate = Gate::start(&config);
    assert_eq!(
        query(&gate, "QueryCustomAuthIdentity", instance).await,
        identities,
        "after SIGKILL"
    );
    assert_eq!(
        query(&gate, "QueryCustomAuthPermission", instance).await,
        rules,
        "after SIGKILL"
    );
    let signed = (
        "fleet".to_string(),
        mqgate::broker::device_auth::signature_password(secrets[0], "GID_f@@@any"),
    );
    let mut device = common::connect_v5(gate.mqtt, "GID_f@@@any", Some(signed))
        .await
        .unwrap();
    device.send_subscribe("fleet/cmd/+").await;
    assert_eq!(device.next_ack().await.unwrap().1, ["NotAuthorized"]);
    device.send_subscribe("fleet/cmd/open/#").await;
    assert_eq!(device.next_ack().await.unwrap().1, ["Success(AtLeastOnce)"]);
    let pinned = ("fleet".to_string(), secrets[1].to_string());
    let v4 = common::connect_v4(gate.mqtt, "GID_f@@@pinned", Some(pinned)).await;
    assert!(v4.is_ok(), "{v4:?}");
    let database = std::fs::read(dir.path().join("data/devices.sqlite3")).unwrap();
    let wal = std::fs::read(dir.path().join("data/devices.sqlite3-wal")).unwrap_or_default();
    for secret in secrets {
        for file in [&database, &wal] {
            assert!(
                !file.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "a custom-auth secret is stored in clear"
            );
        }
    }
    gate.sigterm();
    let gate = Gate::start(&config);
    assert_eq!(
        query(&gate, "QueryCustomAuthPermission", instance).await,
        rules,
        "after a clean restart"
    );
    gate.sigterm();
}

/// The `Results` of a custom-auth query's first page (Size 100).
async fn query(gate: &Gate, action: &str, instance: (&str, &str)) -> serde_json::Value {
    gate.call(action, &[instance, ("Size", "100")]).await["Data"]["Results"].clone()
}
