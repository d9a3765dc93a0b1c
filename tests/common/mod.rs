//! Helpers shared by the integration tests: a real mqgate on loopback ports
//! chosen by the OS, real MQTT clients (rumqttc, 3.1.1 and 5), and signed
//! calls made with mqgate's own client.
#![allow(dead_code)]

use mqgate::config::Config;
use mqgate::server::Server;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc;

/// The test data kept in the repository (`tests/data`): requests captured
/// from the official SDKs and the documented RAM cases.
pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// Two accounts: A (111) with two instances, its root key and a user with no
/// policies; B (222) with one instance and its root key. Anonymous MQTT
/// clients land in a1.
pub const TWO_ACCOUNTS: &str = r#"
[http]
listen = "127.0.0.1:0"
[mqtt]
listen = "127.0.0.1:0"
anonymous_instance = "inst-a1"
[[accounts]]
id = "111"
  [[accounts.instances]]
  id = "inst-a1"
  region = "cn-shanghai"
  [[accounts.instances]]
  id = "inst-a2"
  [[accounts.users]]
  name = "root"
  access_key_id = "testid"
  access_key_secret = "testsecret"
  root = true
  [[accounts.users]]
  name = "ops"
  access_key_id = "ops-key"
  access_key_secret = "ops-secret"
  [[accounts.users]]
  name = "retired"
  access_key_id = "old-key"
  access_key_secret = "old-secret"
  root = true
  disabled = true
[[accounts]]
id = "222"
  [[accounts.instances]]
  id = "inst-b1"
  [[accounts.users]]
  name = "root"
  access_key_id = "key-b"
  access_key_secret = "secret-b"
  root = true
"#;

pub struct TestServer {
    pub server: Server,
    pub endpoint: String,
    pub mqtt: SocketAddr,
    pub storage: tempfile::TempDir,
}

impl TestServer {
    pub async fn start(config_text: &str) -> TestServer {
        let storage = tempfile::tempdir().unwrap();
        let text = format!(
            "{config_text}\n[storage]\ndir = {:?}\n",
            storage.path().display().to_string()
        );
        let config = Config::parse(&text, "test.toml").unwrap();
        let server = Server::start(config).await.unwrap();
        TestServer {
            endpoint: format!("http://{}", server.http_addr),
            mqtt: server.mqtt_addr,
            server,
            storage,
        }
    }

    /// A signed call with mqgate's client (V1, as the SDKs sign): status and
    /// parsed JSON body.
    pub async fn call_as(
        &self,
        key: (&str, &str),
        method: &str,
        action: &str,
        params: &[(&str, &str)],
    ) -> (u16, serde_json::Value) {
        self.call_signed(key, method, mqgate::client::Signing::V1, action, params)
            .await
    }

    /// A signed call; the body parsed as JSON (mqgate's client asks V1
    /// calls for JSON, as the SDKs do; V3 answers JSON by default).
    pub async fn call_signed(
        &self,
        key: (&str, &str),
        method: &str,
        signing: mqgate::client::Signing,
        action: &str,
        params: &[(&str, &str)],
    ) -> (u16, serde_json::Value) {
        let (status, body) = self.call_raw(key, method, signing, action, params).await;
        let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
        (status, json)
    }

    /// A signed call: status and body text.
    pub async fn call_raw(
        &self,
        key: (&str, &str),
        method: &str,
        signing: mqgate::client::Signing,
        action: &str,
        params: &[(&str, &str)],
    ) -> (u16, String) {
        let params: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        mqgate::client::call(
            &self.endpoint,
            method,
            signing,
            action,
            &params,
            key.0,
            key.1,
        )
        .await
        .unwrap()
    }

    pub async fn call(&self, action: &str, params: &[(&str, &str)]) -> (u16, serde_json::Value) {
        self.call_as(("testid", "testsecret"), "POST", action, params)
            .await
    }

    pub async fn online(&self, instance: &str, client_id: &str) -> bool {
        let (status, body) = self
            .call(
                "QuerySessionByClientId",
                &[("InstanceId", instance), ("ClientId", client_id)],
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["OnlineStatus"].as_bool().unwrap()
    }
}

/// MQTT device credentials, Signature mode.
pub fn signature_login(
    access_key_id: &str,
    secret: &str,
    instance: &str,
    client_id: &str,
) -> (String, String) {
    (
        format!("Signature|{access_key_id}|{instance}"),
        mqgate::broker::device_auth::signature_password(secret, client_id),
    )
}

/// What a test client saw: its events, then how its connection ended.
// Test-only values moved through a channel a handful of times: size is no concern.
#[allow(clippy::large_enum_variant)]
pub enum Seen {
    V4(Result<rumqttc::Event, rumqttc::ConnectionError>),
    V5(Result<rumqttc::v5::Event, rumqttc::v5::ConnectionError>),
}

/// A real MQTT client (3.1.1 or 5) driven by its own event loop task, which
/// stops at the first connection error so tests can see how it ended.
pub struct Device {
    pub v4: Option<rumqttc::AsyncClient>,
    pub v5: Option<rumqttc::v5::AsyncClient>,
    pub events: mpsc::UnboundedReceiver<Seen>,
    /// The error that ended the connection, once `next_ack` saw it.
    pub last_error: Option<String>,
}

pub async fn connect_v4(
    addr: SocketAddr,
    client_id: &str,
    login: Option<(String, String)>,
) -> Result<Device, String> {
    let mut options = v4_options(addr, client_id);
    if let Some((user, pass)) = login {
        options.set_credentials(user, pass);
    }
    connect_v4_with(options).await
}

/// The MQTT 3.1.1 options [`connect_v4`] uses, to change before
/// [`connect_v4_with`].
pub fn v4_options(addr: SocketAddr, client_id: &str) -> rumqttc::MqttOptions {
    let mut options = rumqttc::MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    options
}

/// An MQTT 3.1.1 client with these options, once its CONNACK arrived.
pub async fn connect_v4_with(options: rumqttc::MqttOptions) -> Result<Device, String> {
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 64);
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let event = eventloop.poll().await;
            let stop = event.is_err();
            if tx.send(Seen::V4(event)).is_err() || stop {
                break;
            }
        }
    });
    loop {
        match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            Ok(Some(Seen::V4(Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_)))))) => break,
            Ok(Some(Seen::V4(Ok(_)))) => continue,
            Ok(Some(Seen::V4(Err(e)))) => return Err(format!("{e:?}")),
            other => return Err(format!("no CONNACK: {}", other.is_ok())),
        }
    }
    Ok(Device {
        v4: Some(client),
        v5: None,
        events: rx,
        last_error: None,
    })
}

pub async fn connect_v5(
    addr: SocketAddr,
    client_id: &str,
    login: Option<(String, String)>,
) -> Result<Device, String> {
    let mut options = v5_options(addr, client_id);
    if let Some((user, pass)) = login {
        options.set_credentials(user, pass);
    }
    connect_v5_with(options).await
}

/// The MQTT 5 options [`connect_v5`] uses, to change before
/// [`connect_v5_with`].
pub fn v5_options(addr: SocketAddr, client_id: &str) -> rumqttc::v5::MqttOptions {
    let mut options = rumqttc::v5::MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    // Room for the largest SendMessage payload (64 KB); rumqttc's default
    // is 10 KiB.
    options.set_max_packet_size(Some(1024 * 1024));
    options
}

/// An MQTT 5 client with these options, once its CONNACK arrived.
pub async fn connect_v5_with(options: rumqttc::v5::MqttOptions) -> Result<Device, String> {
    let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(options, 64);
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let event = eventloop.poll().await;
            let stop = event.is_err();
            if tx.send(Seen::V5(event)).is_err() || stop {
                break;
            }
        }
    });
    loop {
        match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            Ok(Some(Seen::V5(Ok(rumqttc::v5::Event::Incoming(
                rumqttc::v5::mqttbytes::v5::Packet::ConnAck(_),
            ))))) => break,
            Ok(Some(Seen::V5(Ok(_)))) => continue,
            Ok(Some(Seen::V5(Err(e)))) => return Err(format!("{e:?}")),
            other => return Err(format!("no CONNACK: {}", other.is_ok())),
        }
    }
    Ok(Device {
        v4: None,
        v5: Some(client),
        events: rx,
        last_error: None,
    })
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.v5.is_some() {
            "Device(MQTT 5)"
        } else {
            "Device(MQTT 3.1.1)"
        })
    }
}

impl Device {
    /// Waits for the connection to end; the error the client saw, as text.
    pub async fn ended(&mut self) -> String {
        loop {
            match tokio::time::timeout(Duration::from_secs(5), self.events.recv()).await {
                Ok(Some(Seen::V4(Err(e)))) => return format!("{e:?}"),
                Ok(Some(Seen::V5(Err(e)))) => return format!("{e:?}"),
                Ok(Some(_)) => continue,
                Ok(None) => return "event loop gone".into(),
                Err(_) => panic!("connection did not end within 5 s"),
            }
        }
    }

    /// Waits for an incoming PUBLISH; its topic and payload.
    pub async fn next_message(&mut self) -> (String, Vec<u8>) {
        loop {
            match tokio::time::timeout(Duration::from_secs(5), self.events.recv()).await {
                Ok(Some(Seen::V4(Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)))))) => {
                    return (p.topic, p.payload.to_vec());
                }
                Ok(Some(Seen::V5(Ok(rumqttc::v5::Event::Incoming(
                    rumqttc::v5::mqttbytes::v5::Packet::Publish(p),
                ))))) => {
                    return (
                        String::from_utf8(p.topic.to_vec()).unwrap(),
                        p.payload.to_vec(),
                    );
                }
                Ok(Some(Seen::V4(Err(e)))) => panic!("connection ended: {e:?}"),
                Ok(Some(Seen::V5(Err(e)))) => panic!("connection ended: {e:?}"),
                Ok(Some(_)) => continue,
                Ok(None) => panic!("event loop gone"),
                Err(_) => panic!("no message within 5 s"),
            }
        }
    }

    /// Waits until the broker acknowledged a SUBSCRIBE.
    pub async fn subscribed(&mut self) {
        loop {
            match tokio::time::timeout(Duration::from_secs(5), self.events.recv()).await {
                Ok(Some(Seen::V4(Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)))))) => {
                    return;
                }
                Ok(Some(Seen::V5(Ok(rumqttc::v5::Event::Incoming(
                    rumqttc::v5::mqttbytes::v5::Packet::SubAck(_),
                ))))) => return,
                Ok(Some(Seen::V4(Err(e)))) => panic!("connection ended: {e:?}"),
                Ok(Some(Seen::V5(Err(e)))) => panic!("connection ended: {e:?}"),
                Ok(Some(_)) => continue,
                Ok(None) => panic!("event loop gone"),
                Err(_) => panic!("no SUBACK within 5 s"),
            }
        }
    }

    /// The next SUBACK, UNSUBACK, PUBACK or PUBREC the client receives, as
    /// (kind, codes by name), e.g. `("UnsubAck", ["NoSubscriptionExisted"])`;
    /// `None` if the connection ended first (the error is kept in `ended`).
    pub async fn next_ack(&mut self) -> Option<(String, Vec<String>)> {
        use rumqttc::v5::mqttbytes::v5::Packet as P5;
        loop {
            let seen = tokio::time::timeout(Duration::from_secs(5), self.events.recv())
                .await
                .expect("no acknowledgement within 5 s");
            match seen {
                Some(Seen::V4(Ok(rumqttc::Event::Incoming(p)))) => match p {
                    rumqttc::Packet::SubAck(a) => {
                        let codes = a.return_codes.iter().map(|c| format!("{c:?}")).collect();
                        return Some(("SubAck".into(), codes));
                    }
                    rumqttc::Packet::UnsubAck(_) => return Some(("UnsubAck".into(), vec![])),
                    rumqttc::Packet::PubAck(_) => return Some(("PubAck".into(), vec![])),
                    rumqttc::Packet::PubRec(_) => return Some(("PubRec".into(), vec![])),
                    rumqttc::Packet::PubComp(_) => return Some(("PubComp".into(), vec![])),
                    _ => continue,
                },
                Some(Seen::V5(Ok(rumqttc::v5::Event::Incoming(p)))) => match p {
                    P5::SubAck(a) => {
                        let codes = a.return_codes.iter().map(|c| format!("{c:?}")).collect();
                        return Some(("SubAck".into(), codes));
                    }
                    P5::UnsubAck(a) => {
                        let codes = a.reasons.iter().map(|c| format!("{c:?}")).collect();
                        return Some(("UnsubAck".into(), codes));
                    }
                    P5::PubAck(a) => {
                        return Some(("PubAck".into(), vec![format!("{:?}", a.reason)]));
                    }
                    P5::PubRec(a) => {
                        return Some(("PubRec".into(), vec![format!("{:?}", a.reason)]));
                    }
                    P5::PubComp(a) => {
                        return Some(("PubComp".into(), vec![format!("{:?}", a.reason)]));
                    }
                    _ => continue,
                },
                Some(Seen::V4(Err(e))) => {
                    self.last_error = Some(format!("{e:?}"));
                    return None;
                }
                Some(Seen::V5(Err(e))) => {
                    self.last_error = Some(format!("{e:?}"));
                    return None;
                }
                Some(_) => continue,
                None => return None,
            }
        }
    }

    /// Sends an UNSUBSCRIBE of one filter.
    pub async fn unsubscribe(&self, filter: &str) {
        if let Some(c) = &self.v4 {
            c.unsubscribe(filter).await.unwrap();
        }
        if let Some(c) = &self.v5 {
            c.unsubscribe(filter).await.unwrap();
        }
    }

    /// Sends a SUBSCRIBE of one filter at QoS 1 (no wait).
    pub async fn send_subscribe(&self, filter: &str) {
        if let Some(c) = &self.v4 {
            c.subscribe(filter, rumqttc::QoS::AtLeastOnce)
                .await
                .unwrap();
        }
        if let Some(c) = &self.v5 {
            c.subscribe(filter, rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
                .await
                .unwrap();
        }
    }

    pub async fn subscribe(&mut self, filter: &str) {
        if let Some(c) = &self.v4 {
            c.subscribe(filter, rumqttc::QoS::AtLeastOnce)
                .await
                .unwrap();
        }
        if let Some(c) = &self.v5 {
            c.subscribe(filter, rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
                .await
                .unwrap();
        }
        self.subscribed().await;
    }

    pub async fn publish(&self, topic: &str, payload: &[u8]) {
        if let Some(c) = &self.v4 {
            c.publish(topic, rumqttc::QoS::AtLeastOnce, false, payload.to_vec())
                .await
                .unwrap();
        }
        if let Some(c) = &self.v5 {
            c.publish(
                topic,
                rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                false,
                payload.to_vec(),
            )
            .await
            .unwrap();
        }
    }
}

/// Starts the `mqgate` binary with `args` and reads the HTTP address from
/// its first line (`mqgate listening http=... mqtt=...`).
pub fn spawn_mqgate(args: &[&str], stderr: std::process::Stdio) -> (std::process::Child, String) {
    let (child, first) = spawn_mqgate_line(args, stderr);
    let http = first
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http="))
        .unwrap_or_else(|| panic!("mqgate did not start: {first:?}"))
        .to_string();
    (child, http)
}

/// Starts the `mqgate` binary with `args`; its first line, which names the
/// bound addresses (`mqgate listening http=... mqtt=...`).
pub fn spawn_mqgate_line(
    args: &[&str],
    stderr: std::process::Stdio,
) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mqgate"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(
        first.contains("listening"),
        "mqgate did not start: {first:?}"
    );
    (child, first)
}

/// Publishes until `device` receives the payload on `topic` (the
/// subscription may still be on its way), within 5 s.
pub async fn delivered(sender: &Device, device: &mut Device, topic: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        sender.publish(topic, b"ping").await;
        if let Ok((got, _)) =
            tokio::time::timeout(Duration::from_millis(300), device.next_message()).await
            && got == topic
        {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "nothing on {topic}");
    }
}

/// `payload` does not arrive on `topic` within half a second.
pub async fn nothing_on(device: &mut Device, topic: &str, payload: &[u8]) {
    let got = tokio::time::timeout(Duration::from_millis(500), async {
        loop {
            let (got, body) = device.next_message().await;
            if got == topic && body == payload {
                return got;
            }
        }
    })
    .await;
    assert!(got.is_err(), "unexpected delivery on {topic}");
}

/// An HTTP answer read off a raw connection.
#[derive(Debug)]
pub struct RawAnswer {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// Requests written by hand on one connection, all at once (pipelined),
/// and their answers, read in turn until the server closes the connection
/// (it then answers no more). For what mqgate's client (hyper) cannot
/// send: a request-target over 65,534 bytes, as the Tea SDK sends one.
pub async fn raw_http(addr: SocketAddr, requests: &[String]) -> Vec<RawAnswer> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    raw_http_on(stream, requests).await
}

/// [`raw_http`] on a connection already made (a TLS stream, say).
pub async fn raw_http_on<S>(stream: S, requests: &[String]) -> Vec<RawAnswer>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let (read, mut write) = tokio::io::split(stream);
    let all = requests.concat();
    // Written beside the reading: a server that stops reading (after
    // refusing a request) must not stall the test.
    let writer = tokio::spawn(async move {
        let _ = write.write_all(all.as_bytes()).await;
        let _ = write.flush().await;
        write
    });
    let mut reader = tokio::io::BufReader::new(read);
    let mut answers = Vec::new();
    let read_all = async {
        while answers.len() < requests.len() {
            let mut status_line = String::new();
            if reader.read_line(&mut status_line).await.unwrap_or(0) == 0 {
                break;
            }
            let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
            let (mut length, mut content_type) = (0, String::new());
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).await.unwrap();
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                let (name, value) = line.split_once(':').unwrap();
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap(),
                    "content-type" => content_type = value.trim().to_string(),
                    _ => {}
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).await.unwrap();
            answers.push(RawAnswer {
                status,
                content_type,
                body: String::from_utf8(body).unwrap(),
            });
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read_all)
        .await
        .expect("no answer within 20 s");
    let _ = writer.await;
    answers
}

/// A CA and a server certificate for loopback (`127.0.0.1`, `::1`,
/// `localhost`), made at run time by mqgate's generator (rcgen).
pub struct TestCerts {
    pub dir: tempfile::TempDir,
    pub files: mqgate::transport::certs::Files,
}

pub fn test_certs() -> TestCerts {
    let dir = tempfile::tempdir().unwrap();
    mqgate::transport::certs::ensure(dir.path()).unwrap();
    let files = mqgate::transport::certs::Files::in_dir(dir.path());
    TestCerts { dir, files }
}

/// `config_text` (which has `[http]` and `[mqtt]` tables) serving HTTPS,
/// MQTT over TLS, WebSocket and secure WebSocket too, on free loopback
/// ports, with `certs`.
pub fn with_transports(config_text: &str, certs: &TestCerts) -> String {
    let (cert, key) = (
        certs.files.cert.display().to_string(),
        certs.files.key.display().to_string(),
    );
    let files = format!("tls_cert = {cert:?}\ntls_key = {key:?}\n");
    assert!(config_text.contains("[http]\n") && config_text.contains("[mqtt]\n"));
    config_text
        .replacen(
            "[http]\n",
            &format!("[http]\ntls_listen = \"127.0.0.1:0\"\n{files}"),
            1,
        )
        .replacen(
            "[mqtt]\n",
            &format!(
                "[mqtt]\ntls_listen = \"127.0.0.1:0\"\nws_listen = \"127.0.0.1:0\"\nwss_listen = \"127.0.0.1:0\"\n{files}"
            ),
            1,
        )
}

/// A TLS client configuration (ring, as mqgate) trusting only `ca`.
pub fn tls_client_config(
    ca: &std::path::Path,
) -> std::sync::Arc<tokio_rustls::rustls::ClientConfig> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    std::sync::Arc::new(config)
}

/// A TLS connection to `addr`, checking its certificate against `ca` for
/// the name `server_name` (`localhost` or `127.0.0.1`).
pub async fn tls_connect(
    addr: SocketAddr,
    ca: &std::path::Path,
    server_name: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let connector = tokio_rustls::TlsConnector::from(tls_client_config(ca));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls_pki_types::ServerName::try_from(server_name.to_string()).unwrap();
    connector.connect(name, tcp).await
}

/// The mqgate binary, a process of its own (its memory and descriptors are
/// then its alone), with its configuration and storage in a temporary
/// directory; killed when dropped.
pub struct Process {
    pub child: std::process::Child,
    pub http: SocketAddr,
    pub mqtt: SocketAddr,
    pub config: PathBuf,
    /// Taken by [`Process::restart`] for the next process.
    dir: Option<tempfile::TempDir>,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    /// Starts the binary with `config_text` (without `[storage]`: its
    /// directory is added, in a fresh temporary directory).
    pub fn start(config_text: &str) -> Process {
        Process::start_with_storage(config_text, "")
    }

    /// [`Process::start`] with `storage_lines` in its `[storage]` table.
    pub fn start_with_storage(config_text: &str, storage_lines: &str) -> Process {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("mqgate.toml");
        let storage = dir.path().join("data");
        std::fs::write(
            &config,
            format!(
                "{config_text}\n[storage]\ndir = {:?}\n{storage_lines}\n",
                storage.display().to_string()
            ),
        )
        .unwrap();
        Process::spawn(config, dir)
    }

    fn spawn(config: PathBuf, dir: tempfile::TempDir) -> Process {
        let (child, first) = spawn_mqgate_line(
            &["serve", "--config", config.to_str().unwrap()],
            std::process::Stdio::null(),
        );
        let addr = |name: &str| -> SocketAddr {
            first
                .split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .unwrap_or_else(|| panic!("no {name} in {first:?}"))
                .parse()
                .unwrap()
        };
        Process {
            child,
            http: addr("http="),
            mqtt: addr("mqtt="),
            config,
            dir: Some(dir),
        }
    }

    /// `http://` and the API's address.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.http)
    }

    /// Stops the process with `signal` (`KILL` or `TERM`), waits for it, and
    /// starts it again on the same configuration and storage: the new
    /// process, and how the old one exited.
    pub fn restart(mut self, signal: &str) -> (Process, std::process::ExitStatus) {
        let sent = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{signal} failed");
        let status = self.child.wait().unwrap();
        let dir = self.dir.take().expect("a process restarted once");
        (Process::spawn(self.config.clone(), dir), status)
    }

    /// Resident memory (`VmRSS`), KiB.
    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse().ok())
            })
            .expect("VmRSS of mqgate")
    }

    /// Open descriptors.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|d| d.count())
            .expect("/proc/PID/fd of mqgate")
    }
}

/// Raw MQTT encoding, for tests that send what a client library will not.
pub mod raw_mqtt {
    /// A variable byte integer (the remaining length).
    pub fn remaining_length(mut n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let mut byte = (n % 128) as u8;
            n /= 128;
            if n > 0 {
                byte |= 0x80;
            }
            out.push(byte);
            if n == 0 {
                return out;
            }
        }
    }

    /// A UTF-8 string (or any bytes) with its 2-byte length.
    pub fn string(out: &mut Vec<u8>, s: &[u8]) {
        out.extend_from_slice(&(s.len() as u16).to_be_bytes());
        out.extend_from_slice(s);
    }

    /// A whole packet: `first` (type and flags), the remaining length, `body`.
    pub fn packet(first: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![first];
        out.extend(remaining_length(body.len()));
        out.extend_from_slice(body);
        out
    }
}
