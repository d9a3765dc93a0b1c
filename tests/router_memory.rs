//! The embedded router forgets what no one holds any more: the log of a
//! topic filter nobody subscribes to (and no saved session will come back
//! for), and every trace of a clean session that left. Before, each
//! distinct filter ever subscribed kept its log (and the messages in it)
//! and each distinct client id its metrics until the router stopped: a
//! client subscribing to fresh filters, or connecting under fresh client
//! ids, grew mqgate's memory without bound.
//!
//! Seen from outside, as an operator would: mqgate's resident memory (the
//! binary, a process of its own) over rounds of 10,000 fresh filters
//! subscribed and dropped.

mod common;

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const FILTERS_PER_ROUND: usize = 10_000;
const ROUNDS: usize = 8;

use common::raw_mqtt::{packet, string};

/// A 3.1.1 client (clean session) that subscribes to `filters` in one
/// SUBSCRIBE, reads its SUBACK, publishes one message to each of the
/// first 100 (so their logs hold something), and leaves.
async fn subscribe_and_leave(addr: SocketAddr, client_id: &str, filters: &[String]) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut connect = Vec::new();
    string(&mut connect, b"MQTT");
    connect.extend_from_slice(&[4, 0x02, 0, 60]);
    string(&mut connect, client_id.as_bytes());
    stream.write_all(&packet(0x10, &connect)).await.unwrap();
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0], "CONNECT refused");
    let mut subscribe = vec![0, 1];
    for filter in filters {
        string(&mut subscribe, filter.as_bytes());
        subscribe.push(0);
    }
    stream.write_all(&packet(0x82, &subscribe)).await.unwrap();
    // SUBACK: its type, its remaining length, then the packet id and one
    // code per filter.
    let read_suback = async {
        let mut first = [0u8; 1];
        stream.read_exact(&mut first).await.unwrap();
        let (mut len, mut shift) = (0usize, 0);
        loop {
            let mut byte = [0u8; 1];
            stream.read_exact(&mut byte).await.unwrap();
            len |= usize::from(byte[0] & 0x7F) << shift;
            shift += 7;
            if byte[0] & 0x80 == 0 {
                break;
            }
        }
        let mut body = vec![0u8; len];
        stream.read_exact(&mut body).await.unwrap();
        (first[0], body)
    };
    let (kind, body) = tokio::time::timeout(Duration::from_secs(60), read_suback)
        .await
        .expect("no SUBACK within 60 s");
    assert_eq!(kind, 0x90);
    assert_eq!(body.len(), 2 + filters.len());
    assert!(
        body[2..].iter().all(|code| *code == 0),
        "a filter was refused"
    );
    for filter in filters.iter().take(100) {
        let mut publish = Vec::new();
        string(&mut publish, filter.as_bytes());
        publish.extend_from_slice(&[0x42; 512]);
        stream.write_all(&packet(0x30, &publish)).await.unwrap();
    }
    stream.write_all(&[0xE0, 0x00]).await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut rest)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_filters_and_client_ids_do_not_grow_memory_round_after_round() {
    let gate = common::Process::start(
        r#"
[http]
listen = "127.0.0.1:0"
[mqtt]
listen = "127.0.0.1:0"
anonymous_instance = "post-cn-memory"
max_packet_size = 1048576
[trace]
enabled = false
[[accounts]]
id = "1234567890"
  [[accounts.instances]]
  id = "post-cn-memory"
  [[accounts.users]]
  name = "root"
  access_key_id = "testid"
  access_key_secret = "testsecret"
  root = true
"#,
    );
    let mqtt = gate.mqtt;
    let mut rss = vec![gate.rss_kib()];
    for round in 0..ROUNDS {
        let filters: Vec<String> = (0..FILTERS_PER_ROUND)
            .map(|i| format!("round-{round}/filter-{i}"))
            .collect();
        subscribe_and_leave(mqtt, &format!("fresh-{round}"), &filters).await;
        // The router handles the departure on its own thread.
        tokio::time::sleep(Duration::from_millis(300)).await;
        rss.push(gate.rss_kib());
    }
    drop(gate);
    let first_round = rss[1].saturating_sub(rss[0]);
    let later_rounds = rss[ROUNDS].saturating_sub(rss[1]);
    {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "router_memory: RSS KiB by round {rss:?}: the first round of {FILTERS_PER_ROUND} filters added {first_round} KiB, the {} rounds after it {later_rounds} KiB",
            ROUNDS - 1
        );
    }
    // Were each round's filters kept, the rounds after the first would
    // add about 7 times what the first did; forgotten, their memory is
    // reused and they add a fraction of one round.
    assert!(
        later_rounds < first_round.max(4096) * 2,
        "memory grows round after round: {rss:?} KiB"
    );
}
