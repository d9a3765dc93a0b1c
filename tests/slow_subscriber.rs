//! A subscriber that never reads its socket (the device-edge issue): a
//! normal publisher/subscriber pair on the same instance still receives
//! every message, exactly and in order, and mqgate's memory stays bounded.
//!
//! mqgate runs as a process of its own (the binary), so that the resident
//! memory read from `/proc` is mqgate's alone, not the test's clients'. The
//! pair's throughput beside the never-reading subscribers and alone is
//! printed, never asserted (`bench/run.sh`'s `slow_subscriber` section
//! measures it on a release build).
//!
//! The sizes: 100,000 messages of 1 KiB is 100 MB that each never-reading
//! subscriber misses, so a queue per connection without a bound would pass
//! the memory bound below twice over, while the pair alone grows mqgate by
//! 34-47 MiB on this machine (the router keeps up to 16 MiB of the topic's
//! messages in its commit log; buffers and the allocator's pages the rest).
//! Tracing is off: its queue is bounded on its own (65,536 events, shed when
//! full) and would add up to 30 MiB of noise at this rate.

mod common;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MESSAGES: u32 = 100_000;
const PAYLOAD: usize = 1024;
const TOPIC: &str = "edge/slow";
/// How much mqgate's resident memory may grow over its start while the
/// pair runs beside the never-reading subscribers (see above).
const RSS_BOUND_KIB: u64 = 96 * 1024;
/// No message for this long and the pair has stalled.
const STALL: Duration = Duration::from_secs(30);

/// The mqgate binary on loopback; killed when dropped.
struct Mqgate {
    child: std::process::Child,
    mqtt: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Mqgate {
    fn start() -> Mqgate {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("mqgate.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[http]
listen = "127.0.0.1:0"
[mqtt]
listen = "127.0.0.1:0"
anonymous_instance = "post-cn-edge"
[trace]
enabled = false
[storage]
dir = {:?}
[[accounts]]
id = "1234567890"
  [[accounts.instances]]
  id = "post-cn-edge"
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
        let (child, first) = common::spawn_mqgate_line(
            &["serve", "--config", config.to_str().unwrap()],
            std::process::Stdio::null(),
        );
        let mqtt = first
            .split_whitespace()
            .find_map(|w| w.strip_prefix("mqtt="))
            .unwrap_or_else(|| panic!("no mqtt= in {first:?}"))
            .parse()
            .unwrap();
        Mqgate {
            child,
            mqtt,
            _dir: dir,
        }
    }

    fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(0)
    }
}

impl Drop for Mqgate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Message `seq`'s payload: its number, then bytes that depend on it.
fn payload(seq: u32) -> Vec<u8> {
    let mut p = vec![0u8; PAYLOAD];
    p[..4].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in p[4..].iter_mut().enumerate() {
        *b = (seq as usize).wrapping_mul(31).wrapping_add(i) as u8;
    }
    p
}

/// A raw MQTT 3.1.1 subscriber to TOPIC at `qos` that reads its CONNACK
/// and SUBACK, then never reads again (its receive buffer made small, so
/// that it is full soon).
async fn never_reading_subscriber(
    addr: SocketAddr,
    client_id: &str,
    qos: u8,
) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let mut connect = vec![0x10, (12 + client_id.len()) as u8];
    connect.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60]);
    connect.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    connect.extend_from_slice(client_id.as_bytes());
    stream.write_all(&connect).await.unwrap();
    let mut ack = [0u8; 4];
    stream.read_exact(&mut ack).await.unwrap();
    assert_eq!(ack, [0x20, 0x02, 0, 0], "{client_id}'s CONNACK");
    let mut subscribe = vec![0x82, (5 + TOPIC.len()) as u8, 0, 1];
    subscribe.extend_from_slice(&(TOPIC.len() as u16).to_be_bytes());
    subscribe.extend_from_slice(TOPIC.as_bytes());
    subscribe.push(qos);
    stream.write_all(&subscribe).await.unwrap();
    let mut suback = [0u8; 5];
    stream.read_exact(&mut suback).await.unwrap();
    assert_eq!(suback, [0x90, 0x03, 0, 1, qos], "{client_id}'s SUBACK");
    stream
}

fn options(addr: SocketAddr, client_id: &str) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(60));
    options.set_max_packet_size(1 << 20, 1 << 20);
    options
}

/// What one run of the pair measured.
struct PairRun {
    seconds: f64,
    base_rss_kib: u64,
    peak_rss_kib: u64,
}

/// A rumqttc subscriber and publisher on TOPIC, QoS 1, MESSAGES messages
/// of PAYLOAD bytes, on a fresh mqgate; beside two never-reading
/// subscribers (QoS 0 and 1) to the same topic with `slow`. The subscriber
/// must get every payload, in order; a stall fails the test.
async fn run_pair(slow: bool) -> PairRun {
    let gate = Mqgate::start();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let base_rss_kib = gate.rss_kib();
    let mut _slow = Vec::new();
    if slow {
        for qos in [0, 1] {
            _slow.push(never_reading_subscriber(gate.mqtt, &format!("slow-qos{qos}"), qos).await);
        }
    }

    let received = Arc::new(AtomicU32::new(0));
    let (subscriber, mut events) = AsyncClient::new(options(gate.mqtt, "pair-sub"), 100);
    subscriber.subscribe(TOPIC, QoS::AtLeastOnce).await.unwrap();
    let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
    let receiving = {
        let received = received.clone();
        tokio::spawn(async move {
            let mut subscribed = Some(subscribed_tx);
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(tx) = subscribed.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let seq = received.load(Ordering::SeqCst);
                        if p.payload.as_ref() != payload(seq).as_slice() {
                            let got = p
                                .payload
                                .get(..4)
                                .map(|b| u32::from_be_bytes(b.try_into().unwrap()));
                            return Err(format!(
                                "message {seq} expected; got a payload of {} bytes numbered {got:?}",
                                p.payload.len()
                            ));
                        }
                        if received.fetch_add(1, Ordering::SeqCst) + 1 == MESSAGES {
                            return Ok(());
                        }
                    }
                    Ok(_) => {}
                    Err(e) => return Err(format!("the subscriber's connection failed: {e}")),
                }
            }
        })
    };
    tokio::time::timeout(Duration::from_secs(10), subscribed_rx)
        .await
        .expect("SUBACK within 10 s")
        .expect("the subscriber stopped before its SUBACK");

    let mut publisher_options = options(gate.mqtt, "pair-pub");
    publisher_options.set_inflight(100);
    let (publisher, mut publisher_events) = AsyncClient::new(publisher_options, 100);
    let driving = tokio::spawn(async move {
        loop {
            if let Err(e) = publisher_events.poll().await {
                return format!("the publisher's connection failed: {e}");
            }
        }
    });
    let started = Instant::now();
    let publishing = tokio::spawn(async move {
        for seq in 0..MESSAGES {
            if publisher
                .publish(TOPIC, QoS::AtLeastOnce, false, payload(seq))
                .await
                .is_err()
            {
                return;
            }
        }
    });

    let mut peak_rss_kib = base_rss_kib;
    let mut last = (0, Instant::now());
    while !receiving.is_finished() {
        tokio::time::sleep(Duration::from_millis(50)).await;
        peak_rss_kib = peak_rss_kib.max(gate.rss_kib());
        let now = received.load(Ordering::SeqCst);
        if now != last.0 {
            last = (now, Instant::now());
        }
        if last.1.elapsed() > STALL || driving.is_finished() {
            receiving.abort();
            let why = if driving.is_finished() {
                driving.await.unwrap_or_default()
            } else {
                format!("no message for {} s", STALL.as_secs())
            };
            panic!(
                "the pair stalled (slow subscribers: {slow}): {now} of {MESSAGES} received; {why}; mqgate's RSS {} KiB, {} KiB at its start",
                gate.rss_kib(),
                base_rss_kib
            );
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    if let Err(e) = receiving.await.unwrap() {
        panic!("slow subscribers: {slow}: {e}");
    }
    peak_rss_kib = peak_rss_kib.max(gate.rss_kib());
    publishing.abort();
    driving.abort();
    PairRun {
        seconds,
        base_rss_kib,
        peak_rss_kib,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_never_reading_subscriber_holds_up_no_one_and_memory_stays_bounded() {
    let alone = run_pair(false).await;
    let beside = run_pair(true).await;
    let rate = |run: &PairRun| f64::from(MESSAGES) / run.seconds;
    let growth = |run: &PairRun| run.peak_rss_kib.saturating_sub(run.base_rss_kib);
    eprintln!(
        "pair alone: {:.0} msgs/s, mqgate's RSS {} KiB at start, peak {} KiB (+{} KiB)",
        rate(&alone),
        alone.base_rss_kib,
        alone.peak_rss_kib,
        growth(&alone)
    );
    eprintln!(
        "pair beside two never-reading subscribers: {:.0} msgs/s ({:.2} of alone), mqgate's RSS {} KiB at start, peak {} KiB (+{} KiB)",
        rate(&beside),
        rate(&beside) / rate(&alone),
        beside.base_rss_kib,
        beside.peak_rss_kib,
        growth(&beside)
    );
    assert!(
        growth(&beside) < RSS_BOUND_KIB,
        "mqgate's RSS grew by {} KiB over its start beside the never-reading subscribers (bound {RSS_BOUND_KIB} KiB; alone: +{} KiB)",
        growth(&beside),
        growth(&alone)
    );
}
