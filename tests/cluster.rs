//! Several mqgate nodes sharing one Redis (`[cluster]`), with the real
//! binary and a real `redis-server` on a loopback port: what the nodes
//! share so far (replay nonces, QPS limits, where devices are connected)
//! and how they behave when Redis is missing at start or goes away under
//! them.
//!
//! `redis-server` must be on PATH (the test command installs Debian's
//! `redis-server`: tests/run_all.sh).

mod common;

use chrono::Utc;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const INSTANCE: &str = "post-cn-cluster";

/// A node's configuration: the same accounts on every node, its own name,
/// the cluster's Redis on `port`.
fn node_config(node: &str, redis_port: u16, limits: &str) -> String {
    node_config_with(node, redis_port, limits, "")
}

/// [`node_config`] with `instance_extra` (lines of the instance's table).
fn node_config_with(node: &str, redis_port: u16, limits: &str, instance_extra: &str) -> String {
    format!(
        r#"
{limits}
[http]
listen = "127.0.0.1:0"
[mqtt]
listen = "127.0.0.1:0"
anonymous_instance = "{INSTANCE}"
[cluster]
redis_url = "redis://127.0.0.1:{redis_port}"
node_id = "{node}"
timeout_ms = 300
[[accounts]]
id = "1234567890"
  [[accounts.instances]]
  id = "{INSTANCE}"
  {instance_extra}
  [[accounts.users]]
  name = "root"
  access_key_id = "testid"
  access_key_secret = "testsecret"
  root = true
"#
    )
}

/// A node on `config_text`, with the device key every node of this test
/// binary shares (a cluster's nodes must: credential secrets are derived
/// from it, and a node with another key does not start).
fn cluster_node(config_text: &str) -> common::Process {
    static KEYS: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let key = KEYS
        .get_or_init(|| tempfile::tempdir().unwrap())
        .path()
        .join("devices.key");
    common::Process::start_with_storage(
        config_text,
        &format!("device_key_file = {:?}", key.display().to_string()),
    )
}

/// A `redis-server` of this test, on a loopback port, nothing persisted;
/// killed when dropped.
struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

/// A loopback port nothing listens on (just now).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Three nodes n1, n2, n3 sharing the Redis on `redis_port`.
fn three_nodes(redis_port: u16, limits: &str) -> Vec<common::Process> {
    ["n1", "n2", "n3"]
        .iter()
        .map(|node| cluster_node(&node_config(node, redis_port, limits)))
        .collect()
}

/// The test key's EMQX API credentials, as an `Authorization` value.
fn basic_auth() -> String {
    use base64::Engine;
    let credentials = base64::engine::general_purpose::STANDARD.encode("testid:testsecret");
    format!("Basic {credentials}")
}

impl Redis {
    fn start() -> Redis {
        Redis::start_on(free_port())
    }

    fn start_on(port: u16) -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run redis-server ({e}): the test command installs Debian's redis-server (tests/run_all.sh); or apt-get install redis-server"
                )
            });
        let redis = Redis {
            child,
            port,
            _dir: dir,
        };
        redis.wait_until_it_answers();
        redis
    }

    /// PING until PONG, at most 10 s.
    fn wait_until_it_answers(&self) {
        use std::io::{Read, Write};
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
                let mut answer = [0u8; 7];
                if stream.write_all(b"PING\r\n").is_ok()
                    && stream.read_exact(&mut answer).is_ok()
                    && &answer == b"+PONG\r\n"
                {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer on port {} within 10 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` (`STOP`, `CONT`) to the server.
    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal}");
    }

    fn stop(mut self) -> u16 {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.port
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A GET request for QuerySessionByClientId, signed once (V1) with
/// `nonce`, as raw HTTP.
fn signed_request(nonce: &str) -> String {
    signed_with(
        "QuerySessionByClientId",
        &[("InstanceId", INSTANCE), ("ClientId", "GID_c@@@dev-1")],
        nonce,
    )
}

/// A GET for `action` with `params`, signed (V1) with `nonce`, as raw HTTP.
fn signed_with(action: &str, params: &[(&str, &str)], nonce: &str) -> String {
    let params: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let all = mqgate::client::sign_v1(
        "GET",
        action,
        &params,
        "testid",
        "testsecret",
        Utc::now(),
        nonce,
    );
    format!(
        "GET /?{} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        mqgate::client::encode_form(&all)
    )
}

/// The status and the error code (empty for a success) of one request.
async fn send(addr: SocketAddr, request: &str) -> (u16, String) {
    let answer = common::raw_http(addr, &[request.to_string()]).await;
    let body: serde_json::Value = serde_json::from_str(&answer[0].body).unwrap();
    let code = body["Code"].as_str().unwrap_or_default().to_string();
    (answer[0].status, code)
}

fn fresh_nonce() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[tokio::test]
async fn a_request_accepted_by_one_node_is_refused_by_every_other() {
    let redis = Redis::start();
    let nodes = three_nodes(redis.port, "");

    for first in 0..nodes.len() {
        let request = signed_request(&fresh_nonce());
        assert_eq!(
            send(nodes[first].http, &request).await,
            (200, String::new()),
            "node {} accepts a fresh request",
            first + 1
        );
        for (other, node) in nodes.iter().enumerate() {
            let (status, code) = send(node.http, &request).await;
            assert_eq!(
                code,
                "SignatureNonceUsed",
                "the same request sent again to node {} (accepted by node {}): status {status}",
                other + 1,
                first + 1
            );
        }
    }
}

#[tokio::test]
async fn a_limit_holds_for_the_whole_cluster() {
    const RATE: f64 = 100.0;
    // The burst that goes with 100 a second (src/throttle.rs): a tenth.
    const BURST: f64 = 10.0;
    const PER_NODE_EVERY: Duration = Duration::from_millis(10);
    const FOR: Duration = Duration::from_secs(3);
    let redis = Redis::start();
    let limits = "[limits]\nQuerySessionByClientId = 100\n";
    let nodes = three_nodes(redis.port, limits);

    // 100 a second to each node: 300 a second offered to the cluster.
    let started = Instant::now();
    let senders: Vec<_> = nodes
        .iter()
        .map(|node| {
            let addr = node.http;
            tokio::spawn(async move {
                let mut answers = Vec::new();
                let mut tick = tokio::time::interval(PER_NODE_EVERY);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while started.elapsed() < FOR {
                    tick.tick().await;
                    answers.push(send(addr, &signed_request(&fresh_nonce())).await);
                }
                answers
            })
        })
        .collect();
    let mut answers = Vec::new();
    for sender in senders {
        answers.extend(sender.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();

    let admitted = answers.iter().filter(|(status, _)| *status == 200).count() as f64;
    let throttled = answers
        .iter()
        .filter(|(_, code)| code == "SystemOverFlow")
        .count() as f64;
    let others: Vec<_> = answers
        .iter()
        .filter(|(status, code)| *status != 200 && code != "SystemOverFlow")
        .collect();
    eprintln!(
        "cluster limit: {} calls offered to 3 nodes in {elapsed:.2} s ({:.0} a second); admitted {admitted}, refused SystemOverFlow {throttled}; at most {:.0} allowed (100 a second + burst 10)",
        answers.len(),
        answers.len() as f64 / elapsed,
        RATE * elapsed + BURST
    );
    assert!(
        others.is_empty(),
        "answers other than 200 and SystemOverFlow: {others:?}"
    );
    assert!(
        admitted <= (RATE * elapsed + BURST).ceil(),
        "the cluster admitted {admitted} calls in {elapsed:.2} s, over 100 a second + a burst of 10"
    );
    // Three nodes each with its own bucket would admit about three times
    // as many; one bucket admits about its rate.
    assert!(
        admitted >= 0.8 * RATE * elapsed,
        "the cluster admitted only {admitted} calls in {elapsed:.2} s at a limit of 100 a second"
    );
    assert!(
        answers.len() as f64 >= 2.0 * RATE * elapsed,
        "the test offered only {} calls in {elapsed:.2} s: it did not offer more than the limit",
        answers.len()
    );
}

#[test]
fn a_node_that_cannot_reach_redis_does_not_start_and_says_why() {
    let port = free_port();
    let started = Instant::now();
    let (status, stderr) = start_refused(&node_config("n1", port, ""), "");
    assert!(
        stderr.contains("cannot reach Redis") && stderr.contains(&format!("127.0.0.1:{port}")),
        "{stderr}"
    );
    eprintln!(
        "without Redis: exited ({status}) after {} ms: {}",
        started.elapsed().as_millis(),
        stderr.trim()
    );
}

/// Runs mqgate on `config_text` (and `storage_lines`), expecting it not
/// to start: its exit status and what it wrote on stderr.
fn start_refused(config_text: &str, storage_lines: &str) -> (std::process::ExitStatus, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mqgate.toml");
    std::fs::write(
        &config,
        format!(
            "{config_text}\n[storage]\ndir = {:?}\n{storage_lines}\n",
            dir.path().join("data").display().to_string()
        ),
    )
    .unwrap();
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mqgate"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("mqgate kept running for 20 s; it should have refused to start");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "exit status {status}");
    (status, stderr)
}

#[tokio::test]
async fn calls_are_refused_while_redis_is_away_and_served_again_when_it_returns() {
    let redis = Redis::start();
    let node = cluster_node(&node_config("n1", redis.port, ""));
    let request = || signed_request(&fresh_nonce());
    assert_eq!(send(node.http, &request()).await, (200, String::new()));

    let port = redis.stop();
    let asked = Instant::now();
    let (status, code) = send(node.http, &request()).await;
    let answered_in = asked.elapsed();
    assert_eq!((status, code.as_str()), (503, "ServiceUnavailable"));
    // timeout_ms is 300: the answer comes within it (and some slack).
    assert!(
        answered_in < Duration::from_secs(2),
        "answered after {answered_in:?}"
    );
    // Still refused, never admitted unchecked, while Redis is away.
    for _ in 0..5 {
        assert_eq!(send(node.http, &request()).await.0, 503);
    }

    let redis = Redis::start_on(port);
    let back = served_again(node.http).await;

    // Redis that accepts and never answers (stopped with SIGSTOP): each
    // call waits timeout_ms (300), then 503.
    redis.signal("STOP");
    let asked = Instant::now();
    let (status, code) = send(node.http, &request()).await;
    let hung_in = asked.elapsed();
    assert_eq!((status, code.as_str()), (503, "ServiceUnavailable"));
    assert!(
        hung_in >= Duration::from_millis(250) && hung_in < Duration::from_secs(2),
        "answered after {hung_in:?} with timeout_ms = 300"
    );
    redis.signal("CONT");
    let resumed = served_again(node.http).await;
    eprintln!(
        "Redis away: refused with 503 in {} ms; served again {} ms after Redis returned, without a restart. Redis hung: 503 after {} ms (timeout_ms 300); served again {} ms after it resumed",
        answered_in.as_millis(),
        back.as_millis(),
        hung_in.as_millis(),
        resumed.as_millis()
    );
}

/// Sends fresh requests until one is answered 200 (each refusal must be
/// ServiceUnavailable), within 15 s; how long that took.
async fn served_again(addr: SocketAddr) -> Duration {
    let since = Instant::now();
    loop {
        let (status, code) = send(addr, &signed_request(&fresh_nonce())).await;
        if status == 200 {
            return since.elapsed();
        }
        assert_eq!(code, "ServiceUnavailable");
        assert!(
            since.elapsed() < Duration::from_secs(15),
            "still refused 15 s after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_emqx_api_limit_holds_for_the_whole_cluster() {
    // The EMQX API's burst is a whole second's worth (src/throttle.rs).
    const RATE: f64 = 10.0;
    let redis = Redis::start();
    let limits = "[limits]\nEmqxApi = 10\n";
    let nodes = three_nodes(redis.port, limits);
    let request = format!(
        "GET /instances/{INSTANCE}/api/v5/clients HTTP/1.1\r\nHost: localhost\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
        basic_auth()
    );
    let started = Instant::now();
    let mut statuses = Vec::new();
    for round in 0..20 {
        for node in &nodes {
            let answer = common::raw_http(node.http, std::slice::from_ref(&request)).await;
            statuses.push((round, answer[0].status));
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let admitted = statuses.iter().filter(|(_, s)| *s == 200).count() as f64;
    let refused = statuses.iter().filter(|(_, s)| *s == 429).count();
    eprintln!(
        "cluster EMQX limit: 60 calls to 3 nodes in {elapsed:.2} s; admitted {admitted}, refused 429 {refused}; at most {:.1} allowed (10 a second + burst 10)",
        RATE * elapsed + RATE
    );
    assert_eq!(admitted as usize + refused, statuses.len(), "{statuses:?}");
    assert!(
        admitted <= (RATE * elapsed + RATE).ceil(),
        "the cluster admitted {admitted} EMQX calls in {elapsed:.2} s: {statuses:?}"
    );
    assert!(admitted >= RATE, "only {admitted} admitted: {statuses:?}");
}

/// A signed GET for `action` with `params` (V1, a fresh nonce), as raw HTTP.
fn signed_call(action: &str, params: &[(&str, &str)]) -> String {
    signed_with(action, params, &fresh_nonce())
}

/// What `node` answers QuerySessionByClientId for `client_id`.
async fn online_on(node: &common::Process, client_id: &str) -> bool {
    let request = signed_call(
        "QuerySessionByClientId",
        &[("InstanceId", INSTANCE), ("ClientId", client_id)],
    );
    let answer = common::raw_http(node.http, &[request]).await;
    assert_eq!(answer[0].status, 200, "{}", answer[0].body);
    let body: serde_json::Value = serde_json::from_str(&answer[0].body).unwrap();
    body["OnlineStatus"].as_bool().unwrap()
}

/// What `node` answers BatchQuerySessionByClientIds for `client_ids`.
async fn batch_on(node: &common::Process, client_ids: &[&str]) -> Vec<(String, bool)> {
    let keys: Vec<String> = (1..=client_ids.len())
        .map(|i| format!("ClientIdList.{i}"))
        .collect();
    let mut params = vec![("InstanceId", INSTANCE)];
    params.extend(
        keys.iter()
            .map(String::as_str)
            .zip(client_ids.iter().copied()),
    );
    let request = signed_call("BatchQuerySessionByClientIds", &params);
    let answer = common::raw_http(node.http, &[request]).await;
    assert_eq!(answer[0].status, 200, "{}", answer[0].body);
    let body: serde_json::Value = serde_json::from_str(&answer[0].body).unwrap();
    body["OnlineStatusList"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["ClientId"].as_str().unwrap().to_string(),
                s["OnlineStatus"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// Asks `node` until it answers `expected` for `client_id`, within `limit`;
/// how long that took.
async fn until_online_is(
    node: &common::Process,
    client_id: &str,
    expected: bool,
    limit: Duration,
) -> Duration {
    let since = Instant::now();
    while online_on(node, client_id).await != expected {
        assert!(
            since.elapsed() < limit,
            "{client_id} still not online={expected} after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    since.elapsed()
}

/// Whether the session directory has an entry (live or stale) for
/// `client_id` (`HEXISTS`, in RESP).
fn directory_has(redis_port: u16, client_id: &str) -> bool {
    use std::io::{Read, Write};
    let key = format!("mqgate:where:{INSTANCE}");
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", redis_port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    write!(
        stream,
        "*3\r\n$7\r\nHEXISTS\r\n${}\r\n{key}\r\n${}\r\n{client_id}\r\n",
        key.len(),
        client_id.len()
    )
    .unwrap();
    let mut answer = [0u8; 4];
    stream.read_exact(&mut answer).unwrap();
    match &answer {
        b":1\r\n" => true,
        b":0\r\n" => false,
        other => panic!("HEXISTS answered {other:?}"),
    }
}

/// Which node holds `INSTANCE`'s lease, read from Redis (`GET`, in RESP).
fn lease_holder(redis_port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let key = format!("mqgate:lease:{INSTANCE}");
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", redis_port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    write!(stream, "*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len()).unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 256];
    loop {
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "Redis closed before answering GET");
        answer.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&answer);
        if text.starts_with("$-1\r\n") {
            return None;
        }
        // "$len\r\nnode|relay\r\n"
        let mut lines = text.split("\r\n");
        if let (Some(_), Some(value), Some(_)) = (lines.next(), lines.next(), lines.next()) {
            return Some(value.split('|').next().unwrap().to_string());
        }
    }
}

/// Waits until `node` holds the instance's lease, within 10 s.
async fn until_holder_is(redis_port: u16, node: &str) {
    let since = Instant::now();
    while lease_holder(redis_port).as_deref() != Some(node) {
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "{node} does not hold the instance 10 s on: {:?}",
            lease_holder(redis_port)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Connects `client_id` through `addr` every 100 ms until it is served,
/// within 10 s (a node refuses a device while its instance is between
/// nodes, or until it learns where the instance went).
async fn connect_retrying(addr: SocketAddr, client_id: &str) -> common::Device {
    let since = Instant::now();
    loop {
        match common::connect_v4(addr, client_id, None).await {
            Ok(device) => return device,
            Err(e) => assert!(
                since.elapsed() < Duration::from_secs(10),
                "{client_id} not served through {addr} within 10 s: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A node of the cluster whose configuration is `node_config`'s.
fn node(name: &str, redis_port: u16) -> common::Process {
    cluster_node(&node_config(name, redis_port, ""))
}

#[tokio::test]
async fn a_device_on_one_node_is_seen_online_through_the_others() {
    let redis = Redis::start();
    // n1 starts first and alone: it takes the instance's lease.
    let n1 = node("n1", redis.port);
    let n2 = node("n2", redis.port);
    assert_eq!(lease_holder(redis.port).as_deref(), Some("n1"));
    let direct = "GID_c@@@on-n1";
    let relayed = "GID_c@@@via-n2";
    let nowhere = "GID_c@@@nowhere";

    // Both are served by n1, the instance's node; n2 relays the second.
    let on_n1 = common::connect_v4(n1.mqtt, direct, None).await.unwrap();
    let via_n2 = common::connect_v4(n2.mqtt, relayed, None).await.unwrap();
    assert!(
        online_on(&n1, relayed).await,
        "n1 serves the relayed device"
    );
    let seen_in = until_online_is(&n2, relayed, true, Duration::from_secs(5)).await;
    assert!(online_on(&n2, direct).await, "n2 sees the device on n1");
    assert!(!online_on(&n2, nowhere).await);
    assert_eq!(
        batch_on(&n2, &[direct, relayed, nowhere]).await,
        vec![
            (direct.to_string(), true),
            (relayed.to_string(), true),
            (nowhere.to_string(), false)
        ]
    );

    // It leaves: offline everywhere.
    via_n2.v4.as_ref().unwrap().disconnect().await.unwrap();
    let gone_in = until_online_is(&n2, relayed, false, Duration::from_secs(5)).await;
    assert!(!online_on(&n1, relayed).await);

    // n1 is killed: its devices count as offline once its key has expired
    // (NODE_TTL, 3 s), with no one to clean up after it.
    let mut n1 = n1;
    let _ = n1.child.kill();
    let _ = n1.child.wait();
    drop(on_n1);
    let dead_in = until_online_is(&n2, direct, false, Duration::from_secs(10)).await;
    assert!(
        dead_in >= Duration::from_millis(1500),
        "offline after {dead_in:?}: before the node's key could have expired"
    );
    eprintln!(
        "session directory: a device served by n1 seen online through n2 after {} ms; offline {} ms after it left; offline {} ms after n1 was killed (node key lives 3 s)",
        seen_in.as_millis(),
        gone_in.as_millis(),
        dead_in.as_millis()
    );
}

#[tokio::test]
async fn the_directory_is_written_again_when_redis_comes_back_empty() {
    let redis = Redis::start();
    let n1 = node("n1", redis.port);
    let n2 = node("n2", redis.port);
    let there = "GID_c@@@stays-on-n1";
    let _device = common::connect_v4(n1.mqtt, there, None).await.unwrap();
    until_online_is(&n2, there, true, Duration::from_secs(5)).await;

    // Redis restarts with nothing in it (no persistence): n1's entry, key
    // and lease are gone; n1 takes its lease back at its next round, and
    // its next heartbeat finds its key missing and writes its sessions
    // again.
    let port = redis.stop();
    let redis = Redis::start_on(port);
    let back = Instant::now();
    let since = Instant::now();
    loop {
        let request = signed_call(
            "QuerySessionByClientId",
            &[("InstanceId", INSTANCE), ("ClientId", there)],
        );
        let answer = common::raw_http(n2.http, &[request]).await;
        if answer[0].status == 200 {
            let body: serde_json::Value = serde_json::from_str(&answer[0].body).unwrap();
            if body["OnlineStatus"].as_bool() == Some(true) {
                break;
            }
        } else {
            assert_eq!(answer[0].status, 503, "{}", answer[0].body);
        }
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "the device on n1 not seen through n2 10 s after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // n1 takes its lease back at its next placement round.
    until_holder_is(redis.port, "n1").await;
    eprintln!(
        "session directory: written again and seen through n2 {} ms after Redis came back empty",
        back.elapsed().as_millis()
    );
}

#[tokio::test]
async fn a_device_on_one_node_is_closed_through_another() {
    let redis = Redis::start();
    // n2 starts first: it serves the instance. The device connects to n3
    // and is closed through n1, neither of which holds it.
    let n2 = node("n2", redis.port);
    let n1 = node("n1", redis.port);
    let n3 = node("n3", redis.port);
    assert_eq!(lease_holder(redis.port).as_deref(), Some("n2"));
    let there = "GID_c@@@kicked-from-n1";
    let mut device = common::connect_v4(n3.mqtt, there, None).await.unwrap();
    until_online_is(&n1, there, true, Duration::from_secs(5)).await;

    let asked = Instant::now();
    let request = signed_call(
        "CloseConnection",
        &[("InstanceId", INSTANCE), ("ClientId", there)],
    );
    let answer = common::raw_http(n1.http, &[request]).await;
    assert_eq!(answer[0].status, 200, "{}", answer[0].body);
    let ended = device.ended().await;
    let closed_in = asked.elapsed();
    until_online_is(&n2, there, false, Duration::from_secs(5)).await;
    until_online_is(&n1, there, false, Duration::from_secs(5)).await;

    // A device on no node: closing it is a success that does nothing, as on
    // one node.
    let request = signed_call(
        "CloseConnection",
        &[("InstanceId", INSTANCE), ("ClientId", "GID_c@@@nowhere")],
    );
    assert_eq!(common::raw_http(n1.http, &[request]).await[0].status, 200);

    // The EMQX API's kick, the same way: 204 for a device served by n2,
    // 404 for one on no node.
    let other = "GID_c@@@emqx-kicked-from-n1";
    let mut device = common::connect_v4(n3.mqtt, other, None).await.unwrap();
    device.subscribe("views/+").await;
    until_online_is(&n1, other, true, Duration::from_secs(5)).await;

    // The EMQX API's reads through n1: answered by n2, which serves the
    // instance and has the device.
    let emqx_get = |path: &str| {
        format!(
            "GET /instances/{INSTANCE}/api/v5{path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
            basic_auth()
        )
    };
    let read = |path: &str| {
        let request = emqx_get(path);
        let addr = n1.http;
        async move {
            let answer = common::raw_http(addr, &[request]).await;
            let body: serde_json::Value = serde_json::from_str(&answer[0].body).unwrap();
            (answer[0].status, body)
        }
    };
    let (status, list) = read("/clients").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["meta"]["count"], 1, "{list}");
    assert_eq!(list["data"][0]["clientid"], other, "{list}");
    let (status, client) = read(&format!("/clients/{other}")).await;
    assert_eq!(
        (status, &client["clientid"]),
        (200, &serde_json::json!(other))
    );
    // Client objects name the node that serves the device; `node=` filters
    // by it.
    assert_eq!(client["node"], "mqgate@n2", "{client}");
    let (_, on_n2) = read("/clients?node=mqgate@n2").await;
    assert_eq!(on_n2["meta"]["count"], 1, "{on_n2}");
    let (_, on_n1) = read("/clients?node=mqgate@n1").await;
    assert_eq!(on_n1["meta"]["count"], 0, "{on_n1}");
    let (status, subscriptions) = read(&format!("/clients/{other}/subscriptions")).await;
    assert_eq!(status, 200, "{subscriptions}");
    assert_eq!(subscriptions[0]["topic"], "views/+", "{subscriptions}");
    // Subscribing and unsubscribing for it through n1: done on its
    // connection, on n2.
    let emqx_post = |path: &str, body: &str| {
        format!(
            "POST /instances/{INSTANCE}/api/v5{path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            basic_auth(),
            body.len()
        )
    };
    let answer = common::raw_http(
        n1.http,
        &[emqx_post(
            &format!("/clients/{other}/subscribe"),
            r#"{"topic": "more/+", "qos": 1}"#,
        )],
    )
    .await;
    assert_eq!(answer[0].status, 200, "{}", answer[0].body);
    let (status, body) = send_message(&n1, "more/x", "subscribed through n1").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(next_payload(&mut device).await, "subscribed through n1");
    let (_, subscriptions) = read(&format!("/clients/{other}/subscriptions")).await;
    assert_eq!(
        subscriptions.as_array().unwrap().len(),
        2,
        "{subscriptions}"
    );
    let answer = common::raw_http(
        n1.http,
        &[emqx_post(
            &format!("/clients/{other}/unsubscribe"),
            r#"{"topic": "more/+"}"#,
        )],
    )
    .await;
    assert_eq!(answer[0].status, 204, "{}", answer[0].body);
    let (_, subscriptions) = read(&format!("/clients/{other}/subscriptions")).await;
    assert_eq!(
        subscriptions.as_array().unwrap().len(),
        1,
        "{subscriptions}"
    );
    let (status, missing) = read("/clients/GID_c@@@nowhere").await;
    assert_eq!(
        (status, &missing["code"]),
        (404, &serde_json::json!("CLIENTID_NOT_FOUND"))
    );
    let delete = |client: &str| {
        format!(
            "DELETE /instances/{INSTANCE}/api/v5/clients/{client} HTTP/1.1\r\nHost: localhost\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
            basic_auth()
        )
    };
    let answer = common::raw_http(n1.http, &[delete(other)]).await;
    assert_eq!(answer[0].status, 204, "{}", answer[0].body);
    device.ended().await;
    until_online_is(&n1, other, false, Duration::from_secs(5)).await;
    let answer = common::raw_http(n1.http, &[delete("GID_c@@@nowhere")]).await;
    assert_eq!(answer[0].status, 404, "{}", answer[0].body);
    eprintln!(
        "cluster kick: a device connected to n3, served by n2, closed through n1 in {} ms ({ended})",
        closed_in.as_millis()
    );
}

/// SendMessage through `node`: its status and body.
async fn send_message(node: &common::Process, topic: &str, payload: &str) -> (u16, String) {
    let request = signed_call(
        "SendMessage",
        &[
            ("InstanceId", INSTANCE),
            ("MqttTopic", topic),
            ("Payload", payload),
        ],
    );
    let answer = common::raw_http(node.http, &[request]).await;
    (answer[0].status, answer[0].body.clone())
}

/// The next message `device` receives: its payload, as text.
async fn next_payload(device: &mut common::Device) -> String {
    String::from_utf8(device.next_message().await.1).unwrap()
}

#[tokio::test]
async fn devices_on_different_nodes_exchange_messages_and_send_message_reaches_them_from_any_node()
{
    let redis = Redis::start();
    let nodes = three_nodes(redis.port, "");
    assert_eq!(lease_holder(redis.port).as_deref(), Some("n1"));
    let mut listener = common::connect_v4(nodes[1].mqtt, "GID_c@@@listens-via-n2", None)
        .await
        .unwrap();
    listener.subscribe("cluster/+").await;
    let from_n3 = common::connect_v4(nodes[2].mqtt, "GID_c@@@talks-via-n3", None)
        .await
        .unwrap();
    let from_n1 = common::connect_v4(nodes[0].mqtt, "GID_c@@@talks-on-n1", None)
        .await
        .unwrap();

    // Device to device: connected to n3 and n1, heard by a device on n2.
    from_n3.publish("cluster/a", b"from a device on n3").await;
    assert_eq!(next_payload(&mut listener).await, "from a device on n3");
    from_n1.publish("cluster/b", b"from a device on n1").await;
    assert_eq!(next_payload(&mut listener).await, "from a device on n1");

    // SendMessage through each node reaches the device, wherever it is.
    for (i, node) in nodes.iter().enumerate() {
        let payload = format!("SendMessage through n{}", i + 1);
        let (status, body) = send_message(node, "cluster/api", &payload).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("MsgId"), "{body}");
        assert_eq!(next_payload(&mut listener).await, payload);
    }
}

#[tokio::test]
async fn when_the_instance_node_is_killed_another_takes_it_over_and_its_bill_survives() {
    let redis = Redis::start();
    let mut nodes = three_nodes(redis.port, "");
    assert_eq!(lease_holder(redis.port).as_deref(), Some("n1"));
    let mut listener = common::connect_v4(nodes[1].mqtt, "GID_c@@@before", None)
        .await
        .unwrap();
    listener.subscribe("takeover/t").await;
    // Calls answered by n1 before it dies: billed there.
    let answered_by_n1 = 5;
    for i in 0..answered_by_n1 {
        let (status, body) = send_message(&nodes[0], "takeover/t", &format!("before {i}")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(next_payload(&mut listener).await, format!("before {i}"));
    }
    // A token applied through n1 before it dies: the node that takes the
    // instance over authenticates with it.
    let token = apply_token_on(&nodes[0], "takeover/#").await;
    let token_login = Some((format!("Token|testid|{INSTANCE}"), format!("R|{token}")));

    // SIGKILL n1 and start it again on its storage, as a supervisor would.
    let n1 = nodes.remove(0);
    let killed = Instant::now();
    let (n1, status) = n1.restart("KILL");
    assert!(!status.success(), "n1 was killed: {status:?}");
    // The device lost its connection with n1 (n2 relayed it there).
    listener.ended().await;

    // A device with that token connects through n3 again and again, as a
    // reconnecting client does, until it is served; then it must hear
    // SendMessage through n2.
    let mut refusals = 0;
    let mut device = loop {
        match common::connect_v4(nodes[1].mqtt, "GID_c@@@after", token_login.clone()).await {
            Ok(device) => break device,
            Err(_) => refusals += 1,
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "no node took the instance over within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let connected_in = killed.elapsed();
    device.subscribe("takeover/t").await;
    let (status, body) = send_message(&nodes[0], "takeover/t", "after").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(next_payload(&mut device).await, "after");
    let working_in = killed.elapsed();
    let holder = lease_holder(redis.port);
    assert!(matches!(holder.as_deref(), Some("n2" | "n3")), "{holder:?}");
    // The killed node's directory entry is swept by the node that took
    // the instance over.
    let since = Instant::now();
    while directory_has(redis.port, "GID_c@@@before") {
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "the killed node's entry is still in the directory"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(directory_has(redis.port, "GID_c@@@after"));

    // n1 billed every call it answered before it was killed, and the
    // cluster's totals hold them with the one n2 answered since.
    assert_eq!(
        reported(&n1, "SendMessage", &["--this-node"]),
        answered_by_n1
    );
    let since = Instant::now();
    while billed_on(&n1, "SendMessage").await != answered_by_n1 + 1 {
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "the cluster's bill does not hold the {} SendMessage calls answered",
            answered_by_n1 + 1
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "take-over: the instance's node (n1) SIGKILLed; a device reconnecting every 100 ms through n3 with a token applied through n1 served after {} ms ({refusals} refusals), SendMessage delivered to it after {} ms; new holder {}",
        connected_in.as_millis(),
        working_in.as_millis(),
        holder.unwrap()
    );
}

/// What `node` answers DescribeMeteringReport for today, by action:
/// `action`'s transactions (0 if it has no row).
async fn billed_on(node: &common::Process, action: &str) -> u64 {
    let request = signed_call(
        "DescribeMeteringReport",
        &[
            ("InstanceId", INSTANCE),
            ("StartTime", "today"),
            ("EndTime", "tomorrow"),
            ("GroupBy", "action"),
        ],
    );
    let answer = common::raw_http(node.http, &[request]).await;
    assert_eq!(answer[0].status, 200, "{}", answer[0].body);
    let report: serde_json::Value = serde_json::from_str(&answer[0].body).unwrap();
    report["Rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["Action"] == action)
        .map_or(0, |row| row["Transactions"].as_u64().unwrap())
}

/// The group ids `node` lists for the instance.
async fn groups_on(node: &common::Process) -> std::collections::BTreeSet<String> {
    let request = signed_call("ListGroupId", &[("InstanceId", INSTANCE)]);
    let answer = common::raw_http(node.http, &[request]).await;
    assert_eq!(answer[0].status, 200, "{}", answer[0].body);
    let body: serde_json::Value = serde_json::from_str(&answer[0].body).unwrap();
    body["Data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["GroupId"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn redis_stopped_and_restarted_under_load_loses_nothing_answered() {
    const EVERY: Duration = Duration::from_millis(20);
    const FOR: Duration = Duration::from_secs(4);
    let redis = Redis::start();
    let limits = "[limits]\nCreateGroupId = 1000\nListGroupId = 1000\n";
    let nodes = three_nodes(redis.port, limits);
    // Two devices connected through n2 and n3, served by n1.
    let sender = common::connect_v4(nodes[1].mqtt, "GID_c@@@sends-via-n2", None)
        .await
        .unwrap();
    let mut receiver = common::connect_v4(nodes[2].mqtt, "GID_c@@@hears-via-n3", None)
        .await
        .unwrap();
    receiver.subscribe("outage/+").await;

    // Each node gets CreateGroupId and QuerySessionByClientId in turn,
    // every 20 ms, for 4 s; Redis stops after 1 s and returns, empty,
    // 1.2 s later.
    let started = Instant::now();
    let loaders: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(n, node)| {
            let addr = node.http;
            tokio::spawn(async move {
                let mut answers = Vec::new();
                let mut tick = tokio::time::interval(EVERY);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut i = 0;
                while started.elapsed() < FOR {
                    tick.tick().await;
                    i += 1;
                    let group = format!("GID_load_n{}_{i}", n + 1);
                    let request = if i % 2 == 0 {
                        signed_call(
                            "CreateGroupId",
                            &[("InstanceId", INSTANCE), ("GroupId", &group)],
                        )
                    } else {
                        signed_request(&fresh_nonce())
                    };
                    let (status, code) = send(addr, &request).await;
                    answers.push((i % 2 == 0, group, status, code, started.elapsed()));
                }
                answers
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let port = redis.stop();
    let stopped_at = started.elapsed();
    // Devices already connected keep working while Redis is away.
    common::delivered(&sender, &mut receiver, "outage/while-away").await;
    tokio::time::sleep(Duration::from_millis(1200).saturating_sub(started.elapsed() - stopped_at))
        .await;
    let _redis = Redis::start_on(port);
    let back_at = started.elapsed();
    let mut answers = Vec::new();
    for loader in loaders {
        answers.push(loader.await.unwrap());
    }
    common::delivered(&sender, &mut receiver, "outage/after").await;

    let mut refused_total = 0;
    let mut served_after_return = 0;
    let mut answered_in_all = 0;
    for (n, (node, answers)) in nodes.iter().zip(&answers).enumerate() {
        let others: Vec<_> = answers
            .iter()
            .filter(|(_, _, status, code, _)| {
                !(*status == 200 || (*status == 503 && code == "ServiceUnavailable"))
            })
            .collect();
        assert!(others.is_empty(), "n{}: {others:?}", n + 1);
        refused_total += answers.iter().filter(|a| a.2 == 503).count();
        served_after_return += answers
            .iter()
            .filter(|a| a.2 == 200 && a.4 > back_at)
            .count();
        // Every call answered 200 is billed on the node that answered it,
        // once; a call refused 503 is neither billed nor applied.
        let answered = |create: bool| {
            answers
                .iter()
                .filter(|a| a.0 == create && a.2 == 200)
                .count() as u64
        };
        assert_eq!(
            reported(node, "CreateGroupId", &["--this-node"]),
            answered(true)
        );
        assert_eq!(
            reported(node, "QuerySessionByClientId", &["--this-node"]),
            answered(false)
        );
        answered_in_all += answered(true) + answered(false);
    }
    // Every group id answered 200, through any node, is listed by every
    // node (the device-side state is shared), and none refused is.
    let created: std::collections::BTreeSet<String> = answers
        .iter()
        .flatten()
        .filter(|a| a.0 && a.2 == 200)
        .map(|a| a.1.clone())
        .collect();
    for (n, node) in nodes.iter().enumerate() {
        let since = Instant::now();
        loop {
            let listed: std::collections::BTreeSet<String> = groups_on(node)
                .await
                .into_iter()
                .filter(|g| g.starts_with("GID_load_"))
                .collect();
            if listed == created {
                break;
            }
            assert!(
                since.elapsed() < Duration::from_secs(10),
                "n{} lists {} group ids, not the {} answered 200: missing {:?}, extra {:?}",
                n + 1,
                listed.len(),
                created.len(),
                created.difference(&listed).collect::<Vec<_>>(),
                listed.difference(&created).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // The cluster's totals: every node's bill, once (copied within about
    // half a second).
    let since = Instant::now();
    loop {
        let billed = billed_on(&nodes[0], "CreateGroupId").await
            + billed_on(&nodes[0], "QuerySessionByClientId").await;
        if billed == answered_in_all {
            break;
        }
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "the cluster's bill holds {billed} calls, not the {answered_in_all} answered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        refused_total > 0,
        "no call was refused while Redis was away"
    );
    assert!(
        served_after_return > 0,
        "no call was served after Redis came back"
    );
    let total: usize = answers.iter().map(Vec::len).sum();
    eprintln!(
        "Redis stopped under load at {} ms and back (empty) at {} ms: {total} calls to 3 nodes, {refused_total} refused 503, {served_after_return} served after it returned; every 200 billed once, by the node that answered it, and in the cluster's totals; every group answered 200 listed, none refused; connected devices exchanged messages throughout",
        stopped_at.as_millis(),
        back_at.as_millis()
    );
}

/// `mqgate report` on `node`'s configuration (the cluster's totals, or
/// with `--this-node` its own): QuerySessionByClientId's calls today.
fn reported_queries(node: &common::Process, extra: &[&str]) -> u64 {
    reported(node, "QuerySessionByClientId", extra)
}

/// `mqgate report` on `node`'s configuration: `action`'s calls today.
fn reported(node: &common::Process, action: &str, extra: &[&str]) -> u64 {
    let output = Command::new(env!("CARGO_BIN_EXE_mqgate"))
        .args(["report", "--config", node.config.to_str().unwrap()])
        .args(["--group-by", "action", "--format", "json"])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    rows.as_array()
        .unwrap()
        .iter()
        .find(|row| row["action"] == action)
        .map_or(0, |row| row["transactions"].as_u64().unwrap())
}

#[tokio::test]
async fn reports_give_the_cluster_totals_and_keep_a_killed_node_s_calls() {
    let redis = Redis::start();
    let mut nodes = three_nodes(redis.port, "");
    for (node, calls) in nodes.iter().zip([3, 4, 5]) {
        for _ in 0..calls {
            assert_eq!(
                send(node.http, &signed_request(&fresh_nonce())).await.0,
                200
            );
        }
    }
    // Each node copies its bill within about half a second.
    let since = Instant::now();
    while billed_on(&nodes[0], "QuerySessionByClientId").await != 12 {
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "n1's report does not add up to 12 calls"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let added_in = since.elapsed();
    assert_eq!(reported_queries(&nodes[2], &[]), 12);
    assert_eq!(reported_queries(&nodes[2], &["--this-node"]), 5);

    // n2 is killed: what it billed stays in the cluster's totals.
    let mut n2 = nodes.remove(1);
    let _ = n2.child.kill();
    let _ = n2.child.wait();
    assert_eq!(billed_on(&nodes[1], "QuerySessionByClientId").await, 12);
    assert_eq!(reported_queries(&nodes[0], &[]), 12);
    eprintln!(
        "cluster bill: 3 + 4 + 5 calls on three nodes added up in n1's report after {} ms; 12 still after n2 was killed",
        added_in.as_millis()
    );
}

#[tokio::test]
async fn a_monthly_quota_holds_for_the_cluster() {
    const QUOTA: u64 = 10;
    let redis = Redis::start();
    let nodes: Vec<common::Process> = ["n1", "n2", "n3"]
        .iter()
        .map(|node| {
            cluster_node(&node_config_with(
                node,
                redis.port,
                "",
                &format!("monthly_transaction_quota = {QUOTA}"),
            ))
        })
        .collect();
    let call = |node: &common::Process| {
        let addr = node.http;
        async move { send(addr, &signed_request(&fresh_nonce())).await }
    };
    let mut answered = 0;
    for _ in 0..QUOTA {
        assert_eq!(call(&nodes[0]).await, (200, String::new()));
        answered += 1;
    }
    assert_eq!(
        call(&nodes[0]).await,
        (403, "InstanceQuotaExceeded".to_string())
    );

    // The other nodes learn of n1's calls within their next copy: until
    // then they may admit a few more (counted, billed, printed).
    let since = Instant::now();
    for node in &nodes[1..] {
        loop {
            match call(node).await {
                (200, _) => answered += 1,
                (403, code) if code == "InstanceQuotaExceeded" => break,
                other => panic!("{other:?}"),
            }
            assert!(
                since.elapsed() < Duration::from_secs(10),
                "the quota not enforced on every node 10 s after it was used up"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let refused_everywhere_in = since.elapsed();
    for node in &nodes {
        assert_eq!(call(node).await.1, "InstanceQuotaExceeded");
    }
    // Every call answered 200 is in the cluster's bill, once.
    let since = Instant::now();
    while reported_queries(&nodes[0], &[]) != answered {
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "the cluster's bill is not {answered} calls"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "cluster quota {QUOTA}: used up on n1; refused on every node {} ms later, {} calls admitted past the quota meanwhile; the cluster's bill holds all {answered}",
        refused_everywhere_in.as_millis(),
        answered - QUOTA
    );
}

/// `action` (a trace query) through `node` with `params` besides the
/// instance, the region and a range from a minute ago to a minute ahead:
/// the answer's body.
async fn trace_on(
    node: &common::Process,
    action: &str,
    params: &[(&str, &str)],
) -> serde_json::Value {
    let now = Utc::now().timestamp_millis();
    let (begin, end) = ((now - 60_000).to_string(), (now + 60_000).to_string());
    let mut all = vec![
        ("InstanceId", INSTANCE),
        ("MqttRegionId", "cn-hangzhou"),
        ("BeginTime", begin.as_str()),
        ("EndTime", end.as_str()),
    ];
    all.extend_from_slice(params);
    let answer = common::raw_http(node.http, &[signed_call(action, &all)]).await;
    assert_eq!(answer[0].status, 200, "{}", answer[0].body);
    serde_json::from_str(&answer[0].body).unwrap()
}

/// Asks until `done` holds for the answer, within 10 s (events reach the
/// trace store in batches).
async fn trace_until(
    node: &common::Process,
    action: &str,
    params: &[(&str, &str)],
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let since = Instant::now();
    loop {
        let body = trace_on(node, action, params).await;
        if done(&body) {
            return body;
        }
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "{action} {params:?}: still {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_trace_query_on_any_node_sees_the_events_of_every_node() {
    let redis = Redis::start();
    let mut nodes = three_nodes(redis.port, "");
    assert_eq!(lease_holder(redis.port).as_deref(), Some("n1"));
    let device = "GID_c@@@traced";

    // Served by n1 (connected through n2); a message sent through n3: its
    // publish is recorded on n3, its delivery on n1.
    let mut first = common::connect_v4(nodes[1].mqtt, device, None)
        .await
        .unwrap();
    first.subscribe("traced/+").await;
    let (status, body) = send_message(&nodes[2], "traced/a", "hello").await;
    assert_eq!(status, 200, "{body}");
    let msg_id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["MsgId"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(next_payload(&mut first).await, "hello");
    let published = trace_until(
        &nodes[1],
        "QueryMqttTraceMessagePublish",
        &[("MsgId", &msg_id)],
        |b| {
            b["MessageTraceLists"]
                .as_array()
                .is_some_and(|l| !l.is_empty())
        },
    )
    .await;
    assert_eq!(
        published["MessageTraceLists"][0]["Action"], "pub_api",
        "{published}"
    );
    let delivered = trace_until(
        &nodes[1],
        "QueryMqttTraceMessageSubscribe",
        &[("MsgId", &msg_id), ("CurrentPage", "1"), ("PageSize", "10")],
        |b| b["Total"].as_u64() >= Some(1),
    )
    .await;
    assert_eq!(
        delivered["MessageTraceLists"][0]["ClientId"], device,
        "{delivered}"
    );
    first.v4.as_ref().unwrap().disconnect().await.unwrap();
    let device_page = |page: &'static str| {
        [
            ("ClientId", device),
            ("CurrentPage", page),
            ("PageSize", "1"),
        ]
    };
    // connect, then disconnect: both on n1, seen through n3.
    trace_until(&nodes[2], "QueryMqttTraceDevice", &device_page("1"), |b| {
        b["Total"] == 2
    })
    .await;

    // n1 stops cleanly: n2 takes the instance over; the device's next
    // connection is served by n2. Its events are now on two nodes.
    let n1 = nodes.remove(0);
    let (n1, status) = n1.restart("TERM");
    assert!(status.success(), "n1 stopped cleanly: {status:?}");
    until_holder_is(redis.port, "n2").await;
    // Through n3, which learns of the move at its next round (until then
    // it refuses the device, which connects again, as a client does).
    let _second = connect_retrying(nodes[1].mqtt, device).await;
    let all = trace_until(&n1, "QueryMqttTraceDevice", &device_page("3"), |b| {
        b["Total"] == 3
    })
    .await;
    let times: Vec<String> = futures_util::future::join_all(["1", "2", "3"].map(|page| {
        let node = &nodes[0];
        async move {
            let body = trace_on(node, "QueryMqttTraceDevice", &device_page(page)).await;
            assert_eq!(body["Total"], 3, "{body}");
            body["DeviceInfoList"][0]["Time"]
                .as_str()
                .unwrap()
                .to_string()
        }
    }))
    .await;
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted, "pages merged out of time order");
    assert_eq!(all["DeviceInfoList"][0]["Action"], "connect", "{all}");
    eprintln!(
        "cluster traces: a message's publish (n3) and delivery (n1) seen through n2; a device's events on n1 and n2 merged in time order through n2 and the restarted n1: {times:?}"
    );
}

#[tokio::test]
async fn a_connect_storm_reaches_the_directory_whole() {
    const DEVICES: usize = 200;
    let redis = Redis::start();
    let limits = "[limits]\nBatchQuerySessionByClientIds = 100000\n";
    let n1 = cluster_node(&node_config("n1", redis.port, limits));
    let n2 = cluster_node(&node_config("n2", redis.port, limits));
    let ids: Vec<String> = (0..DEVICES).map(|i| format!("GID_c@@@storm-{i}")).collect();
    // All at once, on n1 (which serves the instance): their sessions
    // reach the directory in pipelined batches.
    let devices: Vec<common::Device> =
        futures_util::future::join_all(ids.iter().map(|id| common::connect_v4(n1.mqtt, id, None)))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    let seen = |online: bool| {
        let ids = &ids;
        let n2 = &n2;
        async move {
            let since = Instant::now();
            loop {
                let mut all = true;
                // At most 10 client ids a call.
                for chunk in ids.chunks(10) {
                    let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
                    all &= batch_on(n2, &chunk).await.iter().all(|(_, o)| *o == online);
                }
                if all {
                    return since.elapsed();
                }
                assert!(
                    since.elapsed() < Duration::from_secs(10),
                    "not all {DEVICES} devices online={online} through n2 after 10 s"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let online_in = seen(true).await;
    futures_util::future::join_all(devices.iter().map(|d| d.v4.as_ref().unwrap().disconnect()))
        .await;
    let offline_in = seen(false).await;
    eprintln!(
        "connect storm: {DEVICES} devices connected at once to n1, all seen online through n2 {} ms after the last CONNACK, all offline {} ms after they left",
        online_in.as_millis(),
        offline_in.as_millis()
    );
}

/// A node sharing the device key at `key` (every node of a cluster must:
/// credential secrets are derived from it).
fn node_with_key(name: &str, redis_port: u16, key: &std::path::Path) -> common::Process {
    // The tests poll QueryToken (10 a second by default).
    let limits = "[limits]\nQueryToken = 1000\nListGroupId = 1000\n";
    common::Process::start_with_storage(
        &node_config(name, redis_port, limits),
        &format!("device_key_file = {:?}", key.display().to_string()),
    )
}

/// `action` with `params` on `node`: status and JSON body.
async fn call_on(
    node: &common::Process,
    action: &str,
    params: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    let answer = common::raw_http(node.http, &[signed_call(action, params)]).await;
    let body = serde_json::from_str(&answer[0].body)
        .unwrap_or_else(|e| panic!("{action}: {e}: {}", answer[0].body));
    (answer[0].status, body)
}

/// `action` with `params` on `node`, answered 200: its JSON body.
async fn ok_on(node: &common::Process, action: &str, params: &[(&str, &str)]) -> serde_json::Value {
    let (status, body) = call_on(node, action, params).await;
    assert_eq!(status, 200, "{action}: {body}");
    body
}

/// Polls `check` every 5 ms until it holds, within 5 s: how long that took.
async fn until<F, Fut>(what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let since = Instant::now();
    while !check().await {
        assert!(
            since.elapsed() < Duration::from_secs(5),
            "{what}: not within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    since.elapsed()
}

async fn token_valid_on(node: &common::Process, token: &str) -> bool {
    let body = ok_on(
        node,
        "QueryToken",
        &[("InstanceId", INSTANCE), ("Token", token)],
    )
    .await;
    body["TokenStatus"].as_bool().unwrap()
}

async fn apply_token_on(node: &common::Process, resources: &str) -> String {
    let expire = (Utc::now().timestamp_millis() + 3_600_000).to_string();
    let body = ok_on(
        node,
        "ApplyToken",
        &[
            ("InstanceId", INSTANCE),
            ("Actions", "R"),
            ("Resources", resources),
            ("ExpireTime", &expire),
        ],
    )
    .await;
    body["Token"].as_str().unwrap().to_string()
}

async fn register_credential_on(node: &common::Process, client_id: &str) -> (String, String) {
    let body = ok_on(
        node,
        "RegisterDeviceCredential",
        &[("InstanceId", INSTANCE), ("ClientId", client_id)],
    )
    .await;
    let credential = &body["DeviceCredential"];
    (
        format!(
            "DeviceCredential|{}|{INSTANCE}",
            credential["DeviceAccessKeyId"].as_str().unwrap()
        ),
        mqgate::broker::device_auth::signature_password(
            credential["DeviceAccessKeySecret"].as_str().unwrap(),
            client_id,
        ),
    )
}

/// Connects `client_id` with `login` through `addr` every 5 ms until it is
/// served, within 5 s (a change reaches the serving node about a
/// millisecond after its answer).
async fn connect_retrying_with(
    addr: SocketAddr,
    client_id: &str,
    login: (String, String),
) -> common::Device {
    let since = Instant::now();
    loop {
        match common::connect_v4(addr, client_id, Some(login.clone())).await {
            Ok(device) => return device,
            Err(e) => assert!(
                since.elapsed() < Duration::from_secs(5),
                "{client_id} not logged in through {addr} within 5 s: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The next message on `topic`, skipping others.
async fn message_on(device: &mut common::Device, topic: &str) -> serde_json::Value {
    loop {
        let (got, payload) = device.next_message().await;
        if got == topic {
            return serde_json::from_slice(&payload).unwrap_or(serde_json::Value::Null);
        }
    }
}

#[tokio::test]
async fn device_state_changed_through_one_node_takes_effect_on_every_node() {
    let redis = Redis::start();
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("devices.key");
    // n1 starts first: it serves the instance; n2 and n3 relay to it.
    let n1 = node_with_key("n1", redis.port, &key);
    until_holder_is(redis.port, "n1").await;
    let n2 = node_with_key("n2", redis.port, &key);
    let n3 = node_with_key("n3", redis.port, &key);
    let sender = connect_retrying(n1.mqtt, "GID_state@@@sender").await;

    // A token applied through n2 is valid on every node, and a device
    // logs in with it through n3 (served by n1).
    let token = apply_token_on(&n2, "cmd/#").await;
    let on_n3 = until("the token on n3", || token_valid_on(&n3, &token)).await;
    let on_n1 = until("the token on n1", || token_valid_on(&n1, &token)).await;
    let login = Some((format!("Token|testid|{INSTANCE}"), format!("R|{token}")));
    let mut reader = common::connect_v4(n3.mqtt, "GID_state@@@reader", login)
        .await
        .expect("a token applied through n2 logs a device in through n3");
    reader.subscribe("cmd/1").await;
    common::delivered(&sender, &mut reader, "cmd/1").await;

    // Revoked through n3: the device, served by n1, is told at once and
    // loses the right.
    let revoked_at = Instant::now();
    ok_on(
        &n3,
        "RevokeToken",
        &[("InstanceId", INSTANCE), ("Token", &token)],
    )
    .await;
    let notice = message_on(&mut reader, "$SYS/tokenInvalidNotice").await;
    let notice_after = revoked_at.elapsed();
    assert_eq!(notice["code"], 3, "{notice}");
    assert!(!token_valid_on(&n1, &token).await);
    assert!(!token_valid_on(&n2, &token).await);

    // A credential registered through n2 logs a device in through n3.
    let login = register_credential_on(&n2, "GID_state@@@with-credential").await;
    let since = Instant::now();
    let mut with_credential =
        connect_retrying_with(n3.mqtt, "GID_state@@@with-credential", login.clone()).await;
    let credential_after = since.elapsed();
    // Refreshed through n3: the device, logged in with the old secret on
    // n1, is disconnected there, and the new secret logs it in.
    let refreshed_at = Instant::now();
    let body = ok_on(
        &n3,
        "RefreshDeviceCredential",
        &[
            ("InstanceId", INSTANCE),
            ("ClientId", "GID_state@@@with-credential"),
        ],
    )
    .await;
    with_credential.ended().await;
    let refresh_kicked_after = refreshed_at.elapsed();
    let login = (
        login.0,
        mqgate::broker::device_auth::signature_password(
            body["DeviceCredential"]["DeviceAccessKeySecret"]
                .as_str()
                .unwrap(),
            "GID_state@@@with-credential",
        ),
    );
    let mut with_credential =
        connect_retrying_with(n2.mqtt, "GID_state@@@with-credential", login.clone()).await;
    // Put on the blacklist through n2: its connection (served by n1) ends.
    let blacklisted_at = Instant::now();
    ok_on(
        &n2,
        "AddCustomAuthConnectBlack",
        &[
            ("InstanceId", INSTANCE),
            ("ClientId", "GID_state@@@with-credential"),
        ],
    )
    .await;
    let ended = with_credential.ended().await;
    let kicked_after = blacklisted_at.elapsed();
    let again =
        common::connect_v4(n1.mqtt, "GID_state@@@with-credential", Some(login.clone())).await;
    assert!(
        again.is_err(),
        "a blacklisted client id is refused; its connection had ended with {ended} after {} ms",
        kicked_after.as_millis()
    );

    // A group id created through n3 is listed by n1 and n2.
    ok_on(
        &n3,
        "CreateGroupId",
        &[("InstanceId", INSTANCE), ("GroupId", "GID_shared")],
    )
    .await;
    for node in [&n1, &n2] {
        until("the group id", || async {
            groups_on(node).await.contains("GID_shared")
        })
        .await;
    }

    // A node that joins now holds all of it.
    let fresh = apply_token_on(&n1, "cmd/#").await;
    let n4 = node_with_key("n4", redis.port, &key);
    assert!(groups_on(&n4).await.contains("GID_shared"));
    assert!(token_valid_on(&n4, &fresh).await);
    assert!(!token_valid_on(&n4, &token).await);
    let body = ok_on(
        &n4,
        "QueryCustomAuthConnectBlack",
        &[
            ("InstanceId", INSTANCE),
            ("ClientId", "GID_state@@@with-credential"),
            ("Size", "10"),
        ],
    )
    .await;
    assert_eq!(
        body["Data"]["Results"].as_array().map(Vec::len),
        Some(1),
        "{body}"
    );
    eprintln!(
        "device state through other nodes: a token applied through n2 valid on n3 after {} ms, on n1 after {} ms more; revoked through n3, the device served by n1 told after {} ms; a credential registered through n2 logged in through n3 after {} ms; refreshed through n3, the device logged in with it on n1 disconnected after {} ms; blacklisted through n2, its connection on n1 ended after {} ms ({ended}); a node started later holds it all",
        on_n3.as_millis(),
        on_n1.as_millis(),
        notice_after.as_millis(),
        credential_after.as_millis(),
        refresh_kicked_after.as_millis(),
        kicked_after.as_millis()
    );
}

#[tokio::test]
async fn device_state_survives_redis_coming_back_empty() {
    let redis = Redis::start();
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("devices.key");
    let n1 = node_with_key("n1", redis.port, &key);
    until_holder_is(redis.port, "n1").await;
    let n2 = node_with_key("n2", redis.port, &key);
    let before = apply_token_on(&n2, "a/#").await;
    until("the token on n1", || token_valid_on(&n1, &before)).await;

    // Redis restarts with nothing in it: a node seeds it again with its
    // state, and changes flow as before.
    let port = redis.stop();
    let redis = Redis::start_on(port);
    let back = Instant::now();
    let (after, served_after) = loop {
        let expire = (Utc::now().timestamp_millis() + 3_600_000).to_string();
        let (status, body) = call_on(
            &n1,
            "ApplyToken",
            &[
                ("InstanceId", INSTANCE),
                ("Actions", "R"),
                ("Resources", "b/#"),
                ("ExpireTime", &expire),
            ],
        )
        .await;
        if status == 200 {
            break (body["Token"].as_str().unwrap().to_string(), back.elapsed());
        }
        assert_eq!(status, 503, "{body}");
        assert!(back.elapsed() < Duration::from_secs(10), "no call served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let seen = until("the new token on n2", || token_valid_on(&n2, &after)).await;
    for node in [&n1, &n2] {
        assert!(token_valid_on(node, &before).await);
    }
    // A node joining now copies the seeded state.
    let n3 = node_with_key("n3", redis.port, &key);
    assert!(token_valid_on(&n3, &before).await);
    assert!(token_valid_on(&n3, &after).await);
    eprintln!(
        "device state: Redis came back empty; a token applied through n1 {} ms later was valid on n2 {} ms after that; the tokens from before kept on every node",
        served_after.as_millis(),
        seen.as_millis()
    );
}

#[tokio::test]
async fn a_node_with_another_device_key_does_not_start() {
    let redis = Redis::start();
    let keys = tempfile::tempdir().unwrap();
    let _n1 = node_with_key("n1", redis.port, &keys.path().join("one.key"));
    let other = keys.path().join("other.key");
    let (status, stderr) = start_refused(
        &node_config("n2", redis.port, ""),
        &format!("device_key_file = {:?}", other.display().to_string()),
    );
    assert!(
        stderr.contains("device key") && stderr.contains("same key file"),
        "{stderr}"
    );
    eprintln!("another device key: exited ({status}): {}", stderr.trim());
}

/// `CLIENT LIST`'s lines (a bulk string, read whole).
fn redis_clients(redis_port: u16) -> Vec<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", redis_port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    stream
        .write_all(b"*2\r\n$6\r\nCLIENT\r\n$4\r\nLIST\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "Redis closed before answering CLIENT LIST");
        answer.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&answer);
        if let Some((length, rest)) = text.strip_prefix('$').and_then(|t| t.split_once("\r\n"))
            && rest.len() >= length.parse::<usize>().unwrap() + 2
        {
            return rest.lines().map(str::to_string).collect();
        }
    }
}

#[tokio::test]
async fn each_node_waits_for_changes_on_one_lasting_connection() {
    // A follower's XREAD BLOCK outlives the Redis client's default
    // response timeout (500 ms): were it cut short, the follower would
    // reconnect every round and a change made after a quiet spell would
    // wait for its next connection.
    let redis = Redis::start();
    let _nodes = three_nodes(redis.port, "");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let followers: Vec<String> = redis_clients(redis.port)
        .into_iter()
        .filter(|c| c.contains("cmd=xread"))
        .collect();
    let ages: Vec<u64> = followers
        .iter()
        .filter_map(|c| {
            c.split(' ')
                .find_map(|f| f.strip_prefix("age="))
                .and_then(|a| a.parse().ok())
        })
        .collect();
    assert_eq!(ages.len(), 3, "one follower per node: {followers:?}");
    assert!(
        ages.iter().all(|age| *age >= 2),
        "followers reconnected within the last 2 s: {followers:?}"
    );
}
