//! What the front layer does now that each client is linked to its
//! instance's router in process (no rumqttd listener in between): wills,
//! keepalive, a client that stops reading, MQTT 5 messages to MQTT 3.1.1
//! subscribers, and the router forgetting every kind of departure.
//!
//! Raw sockets stand in for clients where a test needs what a client
//! library will not do (drop the connection without DISCONNECT, stay
//! silent, never read); rumqttc is the well-behaved side.

mod common;

use common::{TestServer, connect_v4, connect_v5, nothing_on};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const INSTANCE: &str = "inst-a1";

fn string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

fn remaining_length(mut n: usize) -> Vec<u8> {
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

fn packet(first: u8, body: Vec<u8>) -> Vec<u8> {
    let mut out = vec![first];
    out.extend(remaining_length(body.len()));
    out.extend(body);
    out
}

/// An MQTT CONNECT (3.1.1, or 5 with a Session Expiry Interval and a Will
/// Delay Interval), clean start, with an optional will (QoS 0).
struct Connect<'a> {
    v5: bool,
    client_id: &'a str,
    keep_alive: u16,
    clean: bool,
    will: Option<(&'a str, &'a [u8])>,
    session_expiry: u32,
    will_delay: u32,
}

impl Connect<'_> {
    fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        string(&mut body, b"MQTT");
        body.push(if self.v5 { 5 } else { 4 });
        let mut flags = 0u8;
        if self.clean {
            flags |= 0x02;
        }
        if self.will.is_some() {
            flags |= 0x04;
        }
        body.push(flags);
        body.extend_from_slice(&self.keep_alive.to_be_bytes());
        if self.v5 {
            let mut properties = vec![0x11];
            properties.extend_from_slice(&self.session_expiry.to_be_bytes());
            body.extend(remaining_length(properties.len()));
            body.extend(properties);
        }
        string(&mut body, self.client_id.as_bytes());
        if let Some((topic, message)) = self.will {
            if self.v5 {
                let mut properties = vec![0x18];
                properties.extend_from_slice(&self.will_delay.to_be_bytes());
                body.extend(remaining_length(properties.len()));
                body.extend(properties);
            }
            string(&mut body, topic.as_bytes());
            string(&mut body, message);
        }
        packet(0x10, body)
    }
}

fn v4(client_id: &str) -> Connect<'_> {
    Connect {
        v5: false,
        client_id,
        keep_alive: 60,
        clean: true,
        will: None,
        session_expiry: 0,
        will_delay: 0,
    }
}

/// Connects a raw client and reads its CONNACK (asserting success).
async fn raw_connect(addr: SocketAddr, connect: &Connect<'_>) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&connect.encode()).await.unwrap();
    let mut head = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut head))
        .await
        .expect("no CONNACK within 5 s")
        .unwrap();
    assert_eq!(head[0], 0x20, "not a CONNACK");
    let mut rest = vec![0u8; usize::from(head[1])];
    stream.read_exact(&mut rest).await.unwrap();
    // Both versions: acknowledge flags, then the return (reason) code.
    assert_eq!(rest[1], 0, "CONNECT of {} refused", connect.client_id);
    stream
}

/// Waits until the server closes `stream` (read returns 0 or fails),
/// discarding what it sends; how long that took.
async fn closed_by_server(stream: &mut TcpStream, within: Duration) -> Duration {
    let started = Instant::now();
    let mut sink = [0u8; 4096];
    tokio::time::timeout(within, async {
        while stream.read(&mut sink).await.is_ok_and(|n| n > 0) {}
    })
    .await
    .unwrap_or_else(|_| panic!("the server did not close the connection within {within:?}"));
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wills_are_published_when_a_client_drops_or_is_kicked_but_not_after_a_goodbye() {
    let t = TestServer::start(common::TWO_ACCOUNTS).await;
    let mut watcher = connect_v4(t.mqtt, "will-watcher", None).await.unwrap();
    watcher.subscribe("w/#").await;

    // Dropped without DISCONNECT: its will is published.
    let mut dropper = v4("will-dropper");
    dropper.will = Some(("w/dropped", b"gone"));
    let dropped = raw_connect(t.mqtt, &dropper).await;
    drop(dropped);
    assert_eq!(
        watcher.next_message().await,
        ("w/dropped".to_string(), b"gone".to_vec())
    );

    // A clean DISCONNECT discards the will.
    let mut leaver = v4("will-leaver");
    leaver.will = Some(("w/left", b"gone"));
    let mut left = raw_connect(t.mqtt, &leaver).await;
    left.write_all(&[0xE0, 0x00]).await.unwrap();
    closed_by_server(&mut left, Duration::from_secs(5)).await;
    nothing_on(&mut watcher, "w/left", b"gone").await;

    // Kicked through the API: the server ended it, the will is published.
    let mut kicked = v4("will-kicked");
    kicked.will = Some(("w/kicked", b"kicked"));
    let mut kicked_stream = raw_connect(t.mqtt, &kicked).await;
    let (status, body) = t
        .call(
            "CloseConnection",
            &[("InstanceId", INSTANCE), ("ClientId", "will-kicked")],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    closed_by_server(&mut kicked_stream, Duration::from_secs(5)).await;
    assert_eq!(
        watcher.next_message().await,
        ("w/kicked".to_string(), b"kicked".to_vec())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mqtt5_will_waits_for_its_delay_and_a_resumed_session_cancels_it() {
    let t = TestServer::start(common::TWO_ACCOUNTS).await;
    let mut watcher = connect_v4(t.mqtt, "delay-watcher", None).await.unwrap();
    watcher.subscribe("d/#").await;

    // Will Delay Interval 2 s, Session Expiry 60 s: published 2 s after
    // the connection dropped, not before.
    let delayed = Connect {
        v5: true,
        client_id: "delay-dropper",
        keep_alive: 60,
        clean: true,
        will: Some(("d/delayed", b"late")),
        session_expiry: 60,
        will_delay: 2,
    };
    let stream = raw_connect(t.mqtt, &delayed).await;
    let dropped_at = Instant::now();
    drop(stream);
    nothing_on(&mut watcher, "d/delayed", b"late").await;
    assert_eq!(
        watcher.next_message().await,
        ("d/delayed".to_string(), b"late".to_vec())
    );
    assert!(
        dropped_at.elapsed() >= Duration::from_secs(2),
        "the will came {:?} after the drop, before its 2 s delay",
        dropped_at.elapsed()
    );

    // The same client comes back within the delay, resuming its session
    // (clean start off): the waiting will is dropped.
    let resumable = Connect {
        client_id: "delay-resumer",
        will: Some(("d/resumed", b"late")),
        will_delay: 2,
        ..delayed
    };
    drop(raw_connect(t.mqtt, &resumable).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let resumed = Connect {
        clean: false,
        will: None,
        ..resumable
    };
    let _back = raw_connect(t.mqtt, &resumed).await;
    let nothing = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            let (topic, _) = watcher.next_message().await;
            if topic == "d/resumed" {
                return;
            }
        }
    })
    .await;
    assert!(nothing.is_err(), "a cancelled will was published");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_closed_after_one_and_a_half_keepalives() {
    let t = TestServer::start(common::TWO_ACCOUNTS).await;
    // Keepalive 1 s and pings every 500 ms: still connected after 3 s.
    let mut pinger = v4("keepalive-pinger");
    pinger.keep_alive = 1;
    let mut pinging = raw_connect(t.mqtt, &pinger).await;
    for _ in 0..6 {
        pinging.write_all(&[0xC0, 0x00]).await.unwrap();
        let mut pong = [0u8; 2];
        tokio::time::timeout(Duration::from_secs(2), pinging.read_exact(&mut pong))
            .await
            .expect("no PINGRESP")
            .unwrap();
        assert_eq!(pong, [0xD0, 0x00]);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(t.online(INSTANCE, "keepalive-pinger").await);

    // Keepalive 1 s and silence: closed after 1.5 s, not before.
    let mut silent = v4("keepalive-silent");
    silent.keep_alive = 1;
    let mut stream = raw_connect(t.mqtt, &silent).await;
    let after = closed_by_server(&mut stream, Duration::from_secs(10)).await;
    assert!(
        after >= Duration::from_millis(1400),
        "closed {after:?} after CONNACK, before 1.5 keepalives"
    );
    assert!(!t.online(INSTANCE, "keepalive-silent").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_is_disconnected_after_the_send_timeout() {
    let config = common::TWO_ACCOUNTS.replace(
        "anonymous_instance = \"inst-a1\"",
        "anonymous_instance = \"inst-a1\"\nsend_timeout_secs = 1\nmax_packet_size = 1048576",
    );
    let t = TestServer::start(&config).await;
    // A raw subscriber with a small receive buffer, which never reads
    // after its SUBACK.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut slow = socket.connect(t.mqtt).await.unwrap();
    slow.write_all(&v4("never-reads").encode()).await.unwrap();
    let mut connack = [0u8; 4];
    slow.read_exact(&mut connack).await.unwrap();
    let mut subscribe = vec![0x00, 0x01];
    string(&mut subscribe, b"slow/t");
    subscribe.push(0x00);
    slow.write_all(&packet(0x82, subscribe)).await.unwrap();
    let mut suback = [0u8; 5];
    slow.read_exact(&mut suback).await.unwrap();
    assert_eq!(suback[0], 0x90);
    assert!(t.online(INSTANCE, "never-reads").await);

    // 64 MB of messages: far more than the kernel buffers between them.
    let publisher = connect_v4(t.mqtt, "fast-publisher", None).await.unwrap();
    let client = publisher.v4.clone().unwrap();
    let flood = tokio::spawn(async move {
        let payload = vec![b'x'; 8 * 1024];
        for _ in 0..8192 {
            if client
                .publish("slow/t", rumqttc::QoS::AtMostOnce, false, payload.clone())
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while t.online(INSTANCE, "never-reads").await {
        assert!(
            Instant::now() < deadline,
            "a subscriber that stopped reading is still connected after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    flood.abort();
    // The publisher was not held up by it.
    assert!(t.online(INSTANCE, "fast-publisher").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mqtt5_message_with_properties_reaches_an_mqtt311_subscriber() {
    let t = TestServer::start(common::TWO_ACCOUNTS).await;
    let mut subscriber = connect_v4(t.mqtt, "old-subscriber", None).await.unwrap();
    subscriber.subscribe("props/#").await;
    let publisher = connect_v5(t.mqtt, "new-publisher", None).await.unwrap();
    let properties = rumqttc::v5::mqttbytes::v5::PublishProperties {
        content_type: Some("text/plain".into()),
        user_properties: vec![("origin".into(), "mqtt5".into())],
        ..Default::default()
    };
    for payload in [&b"first"[..], b"second"] {
        publisher
            .v5
            .as_ref()
            .unwrap()
            .publish_with_properties(
                "props/t",
                rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                false,
                payload.to_vec(),
                properties.clone(),
            )
            .await
            .unwrap();
        assert_eq!(
            subscriber.next_message().await,
            ("props/t".to_string(), payload.to_vec())
        );
    }
    assert!(t.online(INSTANCE, "old-subscriber").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_forgets_every_kind_of_departure() {
    // Room in the router for one watcher and one more client: a departure
    // the router did not hear of would leave no room for the next client.
    let config = common::TWO_ACCOUNTS.replace(
        "anonymous_instance = \"inst-a1\"",
        "anonymous_instance = \"inst-a1\"\nmax_connections_per_instance = 2",
    );
    let t = TestServer::start(&config).await;
    let _watcher = connect_v4(t.mqtt, "departures-watcher", None)
        .await
        .unwrap();
    // Distinct client ids: the router itself drops an older connection
    // with the same client id, which would hide a departure it missed.
    for round in 0..3 {
        let id = |kind: &str| format!("departing-{round}-{kind}");
        // A goodbye.
        let goodbye = id("goodbye");
        let mut stream = raw_connect(t.mqtt, &v4(&goodbye)).await;
        stream.write_all(&[0xE0, 0x00]).await.unwrap();
        closed_by_server(&mut stream, Duration::from_secs(5)).await;
        // A dropped socket (then wait until mqgate has seen it go).
        let dropped = id("dropped");
        drop(raw_connect(t.mqtt, &v4(&dropped)).await);
        while t.online(INSTANCE, &dropped).await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // A kick.
        let kicked = id("kicked");
        let mut stream = raw_connect(t.mqtt, &v4(&kicked)).await;
        let (status, body) = t
            .call(
                "CloseConnection",
                &[("InstanceId", INSTANCE), ("ClientId", kicked.as_str())],
            )
            .await;
        assert_eq!(status, 200, "round {round}: {body}");
        closed_by_server(&mut stream, Duration::from_secs(5)).await;
        // A takeover by the same client id, then a goodbye.
        let taken = id("taken-over");
        let mut first = raw_connect(t.mqtt, &v4(&taken)).await;
        let mut second = raw_connect(t.mqtt, &v4(&taken)).await;
        closed_by_server(&mut first, Duration::from_secs(5)).await;
        second.write_all(&[0xE0, 0x00]).await.unwrap();
        closed_by_server(&mut second, Duration::from_secs(5)).await;
    }
    // Still room for one more.
    let last = raw_connect(t.mqtt, &v4("departures-last")).await;
    drop(last);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_send_connect_are_closed_at_the_timeout_and_hold_up_no_one() {
    let config = common::TWO_ACCOUNTS.replace(
        "anonymous_instance = \"inst-a1\"",
        "anonymous_instance = \"inst-a1\"\nconnect_timeout_secs = 2",
    );
    let t = TestServer::start(&config).await;
    // 300: the server runs in this process, so both ends of each
    // connection count against this process's descriptor limit (1,024 by
    // default on many systems); the benchmark holds thousands.
    let mut silent = Vec::new();
    for _ in 0..300 {
        silent.push(TcpStream::connect(t.mqtt).await.unwrap());
    }
    // Meanwhile a device connects, subscribes and receives.
    let mut device = connect_v4(t.mqtt, "beside-the-silent", None).await.unwrap();
    device.subscribe("silent/t").await;
    let sender = connect_v4(t.mqtt, "sender-beside-the-silent", None)
        .await
        .unwrap();
    common::delivered(&sender, &mut device, "silent/t").await;
    // Every silent connection is closed by the server at the timeout.
    let started = Instant::now();
    for stream in &mut silent {
        closed_by_server(stream, Duration::from_secs(10)).await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "300 silent connections took {:?} to be closed",
        started.elapsed()
    );
    assert!(t.online(INSTANCE, "beside-the-silent").await);
}

/// The packet types (and a DISCONNECT's reason code) in what a server sent.
fn packets_in(mut bytes: &[u8]) -> Vec<(u8, Option<u8>)> {
    let mut out = Vec::new();
    while bytes.len() >= 2 {
        let (mut len, mut at, mut shift) = (0usize, 1usize, 0);
        loop {
            let Some(b) = bytes.get(at) else { return out };
            len |= usize::from(b & 0x7F) << shift;
            at += 1;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        let Some(body) = bytes.get(at..at + len) else {
            return out;
        };
        out.push((bytes[0] >> 4, body.first().copied()));
        bytes = &bytes[at + len..];
    }
    out
}

/// Many MQTT 5 CONNECTs with one client id at the same moment: they take
/// turns, each taking over the one before it, so every connection but the
/// last hears DISCONNECT 0x8E "session taken over" after its CONNACK; the
/// last one is the one the API sees and kicks. (Before, two CONNECTs could
/// both pass the takeover check; the second registration replaced the
/// first without ending it, and the first was left to the router, which
/// closed it without a word, or to nobody.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_connects_with_one_client_id_take_turns() {
    let t = TestServer::start(common::TWO_ACCOUNTS).await;
    const RACERS: usize = 16;
    for round in 0..4 {
        let client_id = format!("racer-{round}");
        let connect = Connect {
            v5: true,
            ..v4(&client_id)
        }
        .encode();
        let mut streams = Vec::new();
        for _ in 0..RACERS {
            streams.push(TcpStream::connect(t.mqtt).await.unwrap());
        }
        // Every CONNECT written at once.
        let written =
            futures_util::future::join_all(streams.iter_mut().map(|s| s.write_all(&connect))).await;
        assert!(written.iter().all(Result::is_ok));
        // Each connection read to its end, whenever that comes.
        let (ended_tx, mut ended) = tokio::sync::mpsc::unbounded_channel();
        for mut stream in streams {
            let ended_tx = ended_tx.clone();
            tokio::spawn(async move {
                let mut heard = Vec::new();
                let mut chunk = [0u8; 256];
                loop {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => heard.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = ended_tx.send(packets_in(&heard));
            });
        }
        // All but one are taken over, each after its CONNACK.
        for _ in 1..RACERS {
            let packets = tokio::time::timeout(Duration::from_secs(30), ended.recv())
                .await
                .expect("takeovers did not finish within 30 s")
                .unwrap();
            assert_eq!(
                packets.first(),
                Some(&(2, Some(0))),
                "round {round}: {packets:?}"
            );
            assert_eq!(
                packets.get(1),
                Some(&(14, Some(0x8E))),
                "round {round}: closed without \"session taken over\": {packets:?}"
            );
        }
        // The last one stays, and it is the one the API sees and kicks.
        assert!(
            tokio::time::timeout(Duration::from_millis(500), ended.recv())
                .await
                .is_err(),
            "round {round}: no connection is left open"
        );
        assert!(t.online(INSTANCE, &client_id).await, "round {round}");
        let (status, body) = t
            .call(
                "CloseConnection",
                &[("InstanceId", INSTANCE), ("ClientId", client_id.as_str())],
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let last = tokio::time::timeout(Duration::from_secs(5), ended.recv())
            .await
            .expect("the kicked connection was not closed")
            .unwrap();
        assert_eq!(last.first(), Some(&(2, Some(0))), "round {round}: {last:?}");
        assert!(!t.online(INSTANCE, &client_id).await, "round {round}");
    }
}
