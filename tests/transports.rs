//! MQTT over TLS, WebSocket and secure WebSocket, and the API over HTTPS,
//! with certificates made at run time: real clients (rumqttc over TLS,
//! tokio-tungstenite over WebSocket) connect, subscribe, receive, are seen
//! online by QuerySessionByClientId and kicked by CloseConnection; what is
//! not TLS on a TLS port, a silent connection, and bad certificate files
//! are refused with a line that says why.

mod common;

use common::{
    Device, TWO_ACCOUNTS, TestCerts, TestServer, connect_v4, connect_v4_with, connect_v5,
    connect_v5_with, delivered, raw_http_on, signature_login, test_certs, tls_client_config,
    tls_connect, v4_options, v5_options, with_transports,
};
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest, http::header};

async fn start() -> (TestServer, TestCerts) {
    let certs = test_certs();
    let t = TestServer::start(&with_transports(TWO_ACCOUNTS, &certs)).await;
    (t, certs)
}

fn login(client_id: &str) -> (String, String) {
    signature_login("testid", "testsecret", "inst-a1", client_id)
}

/// Connect, subscribe, receive, online, kicked, offline: for one device
/// already connected over some transport.
async fn lives_and_is_kicked(t: &TestServer, device: &mut Device, client_id: &str, topic: &str) {
    device.subscribe(&format!("{topic}/+")).await;
    let sender_id = format!("{client_id}-sender");
    let sender = connect_v4(t.mqtt, &sender_id, Some(login(&sender_id)))
        .await
        .unwrap();
    delivered(&sender, device, &format!("{topic}/x")).await;
    assert!(t.online("inst-a1", client_id).await);
    let (status, body) = t
        .call(
            "CloseConnection",
            &[("InstanceId", "inst-a1"), ("ClientId", client_id)],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let ended = device.ended().await;
    assert!(!ended.is_empty());
    assert!(!t.online("inst-a1", client_id).await);
}

/// rumqttc over TLS, MQTT 3.1.1 and 5, checking the certificate against
/// the CA for the names `localhost` and `127.0.0.1`.
#[tokio::test]
async fn rumqttc_over_tls_connects_receives_and_is_kicked() {
    let (t, certs) = start().await;
    let addr = t.server.mqtt_tls_addr.unwrap();
    let tls = || {
        rumqttc::Transport::Tls(rumqttc::TlsConfiguration::Rustls(tls_client_config(
            &certs.files.ca,
        )))
    };
    let localhost = SocketAddr::from(([127, 0, 0, 1], addr.port()));

    let id = "GID_tls@@@v4";
    let mut options = rumqttc::MqttOptions::new(id, "localhost", addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    options.set_transport(tls());
    let (user, pass) = login(id);
    options.set_credentials(user, pass);
    let mut v4 = connect_v4_with(options).await.unwrap();
    lives_and_is_kicked(&t, &mut v4, id, "tls4").await;

    let id = "GID_tls@@@v5";
    let mut options = v5_options(localhost, id);
    options.set_transport(tls());
    let (user, pass) = login(id);
    options.set_credentials(user, pass);
    let mut v5 = connect_v5_with(options).await.unwrap();
    lives_and_is_kicked(&t, &mut v5, id, "tls5").await;

    // A client that does not trust the CA does not get in.
    let mut options = v4_options(localhost, "GID_tls@@@untrusting");
    let other = test_certs();
    options.set_transport(rumqttc::Transport::Tls(rumqttc::TlsConfiguration::Rustls(
        tls_client_config(&other.files.ca),
    )));
    assert!(connect_v4_with(options).await.is_err());
    t.server.shutdown().await;
}

/// An MQTT 3.1.1 CONNECT of `client_id` with its signature login.
fn connect_packet(client_id: &str) -> Vec<u8> {
    let (user, pass) = login(client_id);
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0b1100_0010, 0, 60];
    for field in [client_id, &user, &pass] {
        body.extend_from_slice(&(field.len() as u16).to_be_bytes());
        body.extend_from_slice(field.as_bytes());
    }
    assert!(body.len() < 128);
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend(body);
    packet
}

/// A WebSocket client on `path`, offering the `mqtt` subprotocol.
async fn ws_client<S>(
    stream: S,
    host: &str,
    path: &str,
) -> Result<
    (
        tokio_tungstenite::WebSocketStream<S>,
        tungstenite::handshake::client::Response,
    ),
    tungstenite::Error,
>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut request = format!("ws://{host}{path}").into_client_request().unwrap();
    request
        .headers_mut()
        .insert(header::SEC_WEBSOCKET_PROTOCOL, "mqtt".parse().unwrap());
    tokio_tungstenite::client_async(request, stream).await
}

/// MQTT over a WebSocket client: CONNECT in one binary message (in two
/// halves, as a frame may carry part of a packet), CONNACK back, online,
/// then CloseConnection ends it.
async fn mqtt_over<S>(
    t: &TestServer,
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    client_id: &str,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let connect = connect_packet(client_id);
    let (first, second) = connect.split_at(7);
    ws.send(Message::binary(first.to_vec())).await.unwrap();
    ws.send(Message::binary(second.to_vec())).await.unwrap();
    let connack = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(connack, Message::binary(vec![0x20, 0x02, 0x00, 0x00]));
    // SUBSCRIBE t/ws (packet id 1, QoS 0), SUBACK, then a message from a
    // TCP client arrives as a PUBLISH.
    let filter = format!("t/{client_id}");
    let mut subscribe = vec![0x82, (2 + 2 + filter.len() + 1) as u8, 0, 1];
    subscribe.extend_from_slice(&(filter.len() as u16).to_be_bytes());
    subscribe.extend_from_slice(filter.as_bytes());
    subscribe.push(0);
    ws.send(Message::binary(subscribe)).await.unwrap();
    let suback = ws.next().await.unwrap().unwrap();
    assert_eq!(suback, Message::binary(vec![0x90, 0x03, 0, 1, 0]));
    let sender_id = format!("{client_id}-sender");
    let sender = connect_v4(t.mqtt, &sender_id, Some(login(&sender_id)))
        .await
        .unwrap();
    sender.publish(&filter, b"over websocket").await;
    let publish = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .into_data();
    assert_eq!(publish[0] >> 4, 3, "{publish:?}");
    assert!(publish.ends_with(b"over websocket"));

    assert!(t.online("inst-a1", client_id).await);
    let (status, body) = t
        .call(
            "CloseConnection",
            &[("InstanceId", "inst-a1"), ("ClientId", client_id)],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // The server closes: a close frame (or the stream's end).
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "still open after CloseConnection");
    assert!(!t.online("inst-a1", client_id).await);
}

#[tokio::test]
async fn websocket_and_secure_websocket_carry_mqtt_at_path_mqtt() {
    let (t, certs) = start().await;
    let ws_addr = t.server.mqtt_ws_addr.unwrap();
    let tcp = tokio::net::TcpStream::connect(ws_addr).await.unwrap();
    let (mut ws, response) = ws_client(tcp, "127.0.0.1", "/mqtt").await.unwrap();
    assert_eq!(response.headers()[header::SEC_WEBSOCKET_PROTOCOL], "mqtt");
    mqtt_over(&t, &mut ws, "GID_ws@@@1").await;

    let wss_addr = t.server.mqtt_wss_addr.unwrap();
    let secure = tls_connect(wss_addr, &certs.files.ca, "localhost")
        .await
        .unwrap();
    let (mut wss, response) = ws_client(secure, "localhost", "/mqtt").await.unwrap();
    assert_eq!(response.headers()[header::SEC_WEBSOCKET_PROTOCOL], "mqtt");
    mqtt_over(&t, &mut wss, "GID_wss@@@1").await;

    // Another path: 404.
    let tcp = tokio::net::TcpStream::connect(ws_addr).await.unwrap();
    match ws_client(tcp, "127.0.0.1", "/").await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 404),
        other => panic!("{:?}", other.map(|(_, r)| r)),
    }
    t.server.shutdown().await;
}

/// A V1-signed GET with every parameter in the query string, written by
/// hand (as the Tea SDK sends one), closing the connection after it.
fn signed_get(action: &str, params: &[(&str, &str)]) -> String {
    let params: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let signed = mqgate::client::sign_v1(
        "GET",
        action,
        &params,
        "testid",
        "testsecret",
        chrono::Utc::now(),
        &nonce,
    );
    format!(
        "GET /?{} HTTP/1.1\r\nhost: localhost\r\n\r\n",
        mqgate::client::encode_form(&signed)
    )
}

/// HTTPS serves the same API, and a 64 KB payload in the query string (a
/// request head of about 200 KiB) still arrives whole through it.
#[tokio::test]
async fn https_serves_the_api_with_long_query_strings() {
    let (t, certs) = start().await;
    let https = t.server.https_addr.unwrap();
    let id = "GID_https@@@1";
    // MQTT 5 options with room for a 64 KB payload.
    let mut device = connect_v5(t.mqtt, id, Some(login(id))).await.unwrap();
    device.subscribe("https/+").await;
    let payload = "€".repeat(64 * 1024 / 3);
    let requests = [
        signed_get(
            "QuerySessionByClientId",
            &[("InstanceId", "inst-a1"), ("ClientId", id)],
        ),
        signed_get(
            "SendMessage",
            &[
                ("InstanceId", "inst-a1"),
                ("MqttTopic", "https/long"),
                ("Payload", &payload),
            ],
        ),
    ];
    assert!(requests[1].len() > 150 * 1024, "{}", requests[1].len());
    let secure = tls_connect(https, &certs.files.ca, "127.0.0.1")
        .await
        .unwrap();
    assert_eq!(secure.get_ref().1.alpn_protocol(), None);
    let answers = raw_http_on(secure, &requests).await;
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert_eq!(answers[0].status, 200, "{}", answers[0].body);
    assert!(
        answers[0].body.contains("\"OnlineStatus\":true"),
        "{}",
        answers[0].body
    );
    assert_eq!(answers[1].status, 200, "{}", answers[1].body);
    let (topic, body) = device.next_message().await;
    assert_eq!((topic.as_str(), body.len()), ("https/long", payload.len()));
    assert!(body == payload.as_bytes());
    t.server.shutdown().await;
}

/// The mqgate binary with a configuration serving every transport and
/// `connect_timeout_secs = 1`; its first line's words and where its log
/// goes.
fn spawn_with_transports(
    dir: &tempfile::TempDir,
    certs: &TestCerts,
) -> (std::process::Child, String, std::path::PathBuf) {
    let text = with_transports(TWO_ACCOUNTS, certs).replacen(
        "[mqtt]\n",
        "[mqtt]\nconnect_timeout_secs = 1\n",
        1,
    );
    let config = dir.path().join("mqgate.toml");
    std::fs::write(
        &config,
        format!(
            "{text}\n[storage]\ndir = {:?}\n",
            dir.path().display().to_string()
        ),
    )
    .unwrap();
    let log = dir.path().join("stderr.log");
    let (child, first) = common::spawn_mqgate_line(
        &["serve", "--config", config.to_str().unwrap()],
        Stdio::from(std::fs::File::create(&log).unwrap()),
    );
    (child, first, log)
}

fn word(first: &str, name: &str) -> SocketAddr {
    first
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name}= in {first:?}"))
        .parse()
        .unwrap()
}

/// Reads until the server closes; true if it did within `within`.
async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
    let mut sink = [0u8; 256];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await
    .is_ok()
}

/// Plain MQTT on the TLS port, plain HTTP on the HTTPS port, MQTT on the
/// WebSocket port, a client that does not trust the certificate, and a
/// connection that sends nothing: each is closed, with one log line that
/// says why; the server goes on serving.
#[tokio::test]
async fn what_is_not_a_handshake_is_closed_with_a_line_saying_why() {
    let dir = tempfile::tempdir().unwrap();
    let certs = test_certs();
    let (mut child, first, log) = spawn_with_transports(&dir, &certs);
    let (mqtts, https, ws) = (
        word(&first, "mqtts"),
        word(&first, "https"),
        word(&first, "ws"),
    );

    let mut plain = tokio::net::TcpStream::connect(mqtts).await.unwrap();
    plain
        .write_all(&connect_packet("GID_plain@@@1"))
        .await
        .unwrap();
    assert!(closed_within(&mut plain, Duration::from_secs(5)).await);

    let mut http = tokio::net::TcpStream::connect(https).await.unwrap();
    http.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(closed_within(&mut http, Duration::from_secs(5)).await);

    let mut mqtt_on_ws = tokio::net::TcpStream::connect(ws).await.unwrap();
    mqtt_on_ws
        .write_all(&connect_packet("GID_plain@@@2"))
        .await
        .unwrap();
    assert!(closed_within(&mut mqtt_on_ws, Duration::from_secs(5)).await);

    let other = test_certs();
    let untrusting = tls_connect(mqtts, &other.files.ca, "localhost").await;
    assert!(untrusting.is_err());

    // Opens and sends nothing: closed after connect_timeout_secs (1 s).
    let mut silent = tokio::net::TcpStream::connect(mqtts).await.unwrap();
    let started = std::time::Instant::now();
    assert!(closed_within(&mut silent, Duration::from_secs(5)).await);
    assert!(started.elapsed() >= Duration::from_millis(900));

    // Still serving: a TLS client gets in.
    let tls = tls_connect(mqtts, &certs.files.ca, "localhost").await;
    assert!(tls.is_ok());
    drop(tls);

    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());
    let text = std::fs::read_to_string(&log).unwrap();
    for expected in [
        "plain MQTT (a CONNECT packet) sent to a TLS port",
        "plain HTTP sent to a TLS port",
        "plain MQTT (a CONNECT packet) sent to a WebSocket port",
        "TLS handshake failed: received fatal alert: UnknownCA",
        "handshake not done within 1s",
    ] {
        assert_eq!(
            text.lines().filter(|l| l.contains(expected)).count(),
            1,
            "{expected:?} once in:\n{text}"
        );
    }
    assert!(!text.contains("panicked"), "{text}");
    assert!(!text.contains("PRIVATE KEY"), "{text}");
}

/// A missing or unreadable certificate or key stops start-up with a message
/// that names the field and the file; so does a TLS listener without one.
#[test]
fn bad_certificate_files_stop_start_up_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let certs = test_certs();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "this is not PEM\n").unwrap();
    let missing = dir.path().join("missing.crt");
    let good = with_transports(TWO_ACCOUNTS, &certs);
    let cert = format!("{:?}", certs.files.cert.display().to_string());
    let key = format!("{:?}", certs.files.key.display().to_string());
    let storage = format!(
        "\n[storage]\ndir = {:?}\n",
        dir.path().display().to_string()
    );
    let cases = [
        (
            good.replacen(&cert, &format!("{:?}", missing.display().to_string()), 1),
            1,
            vec!["http.tls_cert", missing.to_str().unwrap(), "cannot read it"],
        ),
        (
            good.replace(&key, &format!("{:?}", garbage.display().to_string())),
            1,
            vec![
                "mqtt.tls_key",
                garbage.to_str().unwrap(),
                "holds no private key",
            ],
        ),
        (
            TWO_ACCOUNTS.replacen("[mqtt]\n", "[mqtt]\nwss_listen = \"127.0.0.1:0\"\n", 1),
            2,
            vec!["mqtt.tls_cert", "mqtt.wss_listen needs a certificate"],
        ),
    ];
    for (i, (text, code, expected)) in cases.into_iter().enumerate() {
        let config = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&config, format!("{text}{storage}")).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mqgate"))
            .args(["serve", "--config", config.to_str().unwrap()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{stderr}");
        for want in expected {
            assert!(stderr.contains(want), "{want:?} in {stderr}");
        }
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// Through [`mqgate::server::Server::start`]: the error says which file.
#[tokio::test]
async fn server_start_names_a_garbage_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let certs = test_certs();
    let garbage = dir.path().join("garbage.crt");
    std::fs::write(&garbage, b"\x00\x01binary garbage").unwrap();
    let text = with_transports(TWO_ACCOUNTS, &certs).replace(
        &format!("{:?}", certs.files.cert.display().to_string()),
        &format!("{:?}", garbage.display().to_string()),
    );
    let text = format!(
        "{text}\n[storage]\ndir = {:?}\n",
        dir.path().display().to_string()
    );
    let config = mqgate::config::Config::parse(&text, "x.toml").unwrap();
    let error = match mqgate::server::Server::start(config).await {
        Ok(_) => panic!("started with a garbage certificate"),
        Err(e) => e.to_string(),
    };
    assert!(error.starts_with("mqtt.tls_cert: "), "{error}");
    assert!(error.contains(garbage.to_str().unwrap()), "{error}");
}
