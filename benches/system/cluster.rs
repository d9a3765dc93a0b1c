//! Several nodes sharing one redis-server (issue 18), measured in one run:
//!
//! - Throughput of 1, 2 and 3 clustered nodes, against one node alone (no
//!   `[cluster]`): the same signed QuerySessionByClientId, the same number
//!   of connections in all, split evenly over the nodes that take load, one
//!   `mqgate-load` per node at once; interleaved rounds, the median. The
//!   nodes, redis-server and the load generators share this machine's
//!   cores, so more nodes cannot mean more throughput here: the rows say
//!   what spreading the load costs, not what more machines would give.
//! - What the Redis round trips cost per call: the CPU time mqgate (all
//!   its nodes) and redis-server spent over each run (`/proc/PID/stat`),
//!   divided by the calls answered.
//! - The take-over time: the node serving the instance is SIGKILLed; a
//!   device reconnects through another node every 50 ms until it is
//!   served, and a second device, connected the same way through a third
//!   node, publishes until the first hears it.

use super::{INSTANCE, LoadResult, MQGATE, Setting, config_text, cpu_seconds, load, spawn_server};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const QUERY: &str = "QuerySessionByClientId";
/// The setups of the throughput rows: clustered nodes taking load (0: one
/// node alone, without `[cluster]`).
const SETUPS: [usize; 4] = [0, 1, 2, 3];
/// How often the reconnecting device tries.
const RECONNECT_EVERY: Duration = Duration::from_millis(50);

/// A redis-server on a loopback port, nothing persisted; killed on drop.
struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Redis {
        Redis::start_with(&["--save", "", "--appendonly", "no"])
    }

    /// As the README recommends for the device-side state: every write
    /// appended and synced before Redis answers.
    fn start_durable() -> Redis {
        Redis::start_with(&[
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ])
    }

    fn start_with(persistence: &[&str]) -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(persistence)
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian's redis-server; bench/run.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An mqgate process of the section; killed on drop.
struct Node {
    child: Child,
    http: String,
    mqtt: SocketAddr,
    _storage: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    /// The benchmark's configuration, with `[cluster]` when `cluster` is
    /// `(redis port, node id, key prefix)`.
    fn start(cluster: Option<(u16, &str, &str)>) -> Node {
        let storage = tempfile::tempdir().unwrap();
        let mut text = config_text(&storage.path().join("data"));
        // The propagation rows call ApplyToken and poll QueryToken.
        text = text.replacen(
            "[limits]\n",
            "[limits]\nApplyToken = 1000000\nQueryToken = 1000000\n",
            1,
        );
        if let Some((port, node, prefix)) = cluster {
            // The nodes of a cluster share one device key.
            static KEYS: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
            let key = KEYS
                .get_or_init(|| tempfile::tempdir().unwrap())
                .path()
                .join(format!("{prefix}.key"));
            text = text.replacen(
                "[storage]\n",
                &format!(
                    "[storage]\ndevice_key_file = {:?}\n",
                    key.display().to_string()
                ),
                1,
            );
            let _ = write!(
                text,
                "\n[cluster]\nredis_url = \"redis://127.0.0.1:{port}\"\nnode_id = \"{node}\"\nkey_prefix = \"{prefix}\"\n"
            );
        }
        let path = storage.path().join("mqgate.toml");
        std::fs::write(&path, text).unwrap();
        let (child, first) =
            spawn_server(MQGATE, &["serve", "--config", path.to_str().unwrap()], "");
        let word = |key: &str| {
            first
                .split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .unwrap_or_else(|| panic!("mqgate did not start: {first:?}"))
                .to_string()
        };
        Node {
            http: format!("http://{}", word("http=")),
            mqtt: word("mqtt=").parse().unwrap(),
            child,
            _storage: storage,
        }
    }

    fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.child.id())
    }
}

/// One run of a setup: calls answered per second in all, and CPU µs per
/// call of mqgate's nodes and of redis-server.
#[derive(Clone, Copy, Debug)]
struct Run {
    rps: f64,
    mqgate_us: f64,
    redis_us: f64,
}

fn params() -> Vec<String> {
    vec![
        format!("InstanceId={INSTANCE}"),
        "ClientId=GID_bench@@@nobody".to_string(),
    ]
}

/// `connections` split over `nodes`, one mqgate-load each, at once.
fn run_setup(nodes: &[&Node], redis_pid: Option<u32>, connections: usize, seconds: f64) -> Run {
    let per_node = (connections / nodes.len()).max(1);
    let mqgate_before: f64 = nodes.iter().map(|n| n.cpu_seconds()).sum();
    let redis_before = redis_pid.map_or(0.0, cpu_seconds);
    let results: Vec<LoadResult> = std::thread::scope(|scope| {
        let runs: Vec<_> = nodes
            .iter()
            .map(|node| {
                let url = node.http.clone();
                scope.spawn(move || load(&url, QUERY, &params(), per_node, seconds))
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let mqgate_after: f64 = nodes.iter().map(|n| n.cpu_seconds()).sum();
    let redis_after = redis_pid.map_or(0.0, cpu_seconds);
    assert!(
        results.iter().all(|r| r.ok),
        "a node answered other than 200: {results:?}"
    );
    let rps: f64 = results.iter().map(|r| r.rps).sum();
    let calls = rps * seconds;
    let us_per_call = |seconds: f64| seconds / calls * 1e6;
    Run {
        rps,
        mqgate_us: us_per_call(mqgate_after - mqgate_before),
        redis_us: us_per_call(redis_after - redis_before),
    }
}

fn median_by<T: Copy>(runs: &[T], key: impl Fn(&T) -> f64) -> (f64, f64, f64) {
    let mut values: Vec<f64> = runs.iter().map(key).collect();
    values.sort_by(f64::total_cmp);
    (
        values[values.len() / 2],
        values[0],
        values[values.len() - 1],
    )
}

/// The section: throughput rows, then the take-over rounds.
pub fn cluster(setting: &Setting, results: &mut String) {
    let redis = Redis::start();
    let alone = Node::start(None);
    let nodes: Vec<Node> = ["n1", "n2", "n3"]
        .iter()
        .map(|id| Node::start(Some((redis.port, id, "bench"))))
        .collect();
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); SETUPS.len()];
    for round in 0..setting.cluster_rounds {
        // Interleaved: each round starts with another setup.
        for k in 0..SETUPS.len() {
            let setup = (k + round) % SETUPS.len();
            let (loaded, redis_pid): (Vec<&Node>, _) = match SETUPS[setup] {
                0 => (vec![&alone], None),
                n => (nodes.iter().take(n).collect(), Some(redis.child.id())),
            };
            runs[setup].push(run_setup(
                &loaded,
                redis_pid,
                setting.cluster_connections,
                setting.seconds,
            ));
        }
    }
    drop(nodes);
    drop(alone);
    let takeovers: Vec<(f64, f64)> = (0..setting.takeover_rounds)
        .map(|round| takeover(redis.port, round))
        .collect();
    let durable = Redis::start_durable();
    let propagation = propagation(durable.port, setting.propagation_samples);
    write(results, setting, &runs, &takeovers);
    write_propagation(results, &propagation);
}

/// A device-state change made through one node, timed until the others
/// hold it: ApplyToken through n2, then QueryToken polled on n1 (the
/// serving node) and n3 at once, without pause, until both answer true;
/// ms from ApplyToken's answer to the later of the two, per sample.
fn propagation(redis_port: u16, samples: usize) -> Vec<f64> {
    let nodes: Vec<Node> = ["n1", "n2", "n3"]
        .iter()
        .map(|id| Node::start(Some((redis_port, id, "propagation"))))
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let call = |endpoint: String, action: &'static str, params: Vec<(&'static str, String)>| async move {
            let params: Vec<(String, String)> =
                params.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            let (status, body) = mqgate::client::call(
                &endpoint,
                "GET",
                mqgate::client::Signing::V1,
                action,
                &params,
                "testid",
                "testsecret",
            )
            .await
            .unwrap();
            assert_eq!(status, 200, "{action}: {body}");
            serde_json::from_str::<serde_json::Value>(&body).unwrap()
        };
        let valid_on = |endpoint: String, token: String| async move {
            let since = Instant::now();
            loop {
                let body = call(
                    endpoint.clone(),
                    "QueryToken",
                    vec![("InstanceId", INSTANCE.to_string()), ("Token", token.clone())],
                )
                .await;
                if body["TokenStatus"] == true {
                    return;
                }
                assert!(
                    since.elapsed() < Duration::from_secs(10),
                    "a token applied through n2 not valid on {endpoint} within 10 s"
                );
            }
        };
        let mut times = Vec::with_capacity(samples);
        for _ in 0..samples {
            let expire = (chrono::Utc::now().timestamp_millis() + 3_600_000).to_string();
            let body = call(
                nodes[1].http.clone(),
                "ApplyToken",
                vec![
                    ("InstanceId", INSTANCE.to_string()),
                    ("Actions", "R".to_string()),
                    ("Resources", "bench/#".to_string()),
                    ("ExpireTime", expire),
                ],
            )
            .await;
            let answered = Instant::now();
            let token = body["Token"].as_str().unwrap().to_string();
            tokio::join!(
                valid_on(nodes[0].http.clone(), token.clone()),
                valid_on(nodes[2].http.clone(), token)
            );
            times.push(answered.elapsed().as_secs_f64() * 1e3);
        }
        times
    })
}

fn write_propagation(results: &mut String, times: &[f64]) {
    let mut sorted = times.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    let _ = writeln!(
        results,
        "Device-state change across nodes (redis-server with `appendonly yes`, `appendfsync always`, as the README recommends): ApplyToken through n2, then QueryToken polled without pause on n1 and n3 until both say valid, {} samples: from ApplyToken's answer to the token valid on both, **p50 {:.2} ms**, p99 {:.2} ms, max {:.2} ms (a poll is itself a signed call, about 0.3-0.5 ms, so these include up to one poll's time).\n",
        sorted.len(),
        at(0.5),
        at(0.99),
        sorted[sorted.len() - 1]
    );
}

/// Kills the serving node of a fresh three-node cluster (its own key
/// prefix in the same Redis): ms until a device reconnecting through
/// another node is served, and until a message from a device on the third
/// node reaches it.
fn takeover(redis_port: u16, round: usize) -> (f64, f64) {
    let prefix = format!("takeover{round}");
    let mut nodes: Vec<Node> = ["n1", "n2", "n3"]
        .iter()
        .map(|id| Node::start(Some((redis_port, id, &prefix))))
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // n1 started first and alone: it serves the instance.
    let (through_n2, through_n3) = (nodes[1].mqtt, nodes[2].mqtt);
    let killed = Instant::now();
    let _ = nodes[0].child.kill();
    let _ = nodes[0].child.wait();
    runtime.block_on(async {
        let mut listener = reconnect(through_n2, "GID_bench@@@listener", killed).await;
        let served = killed.elapsed().as_secs_f64() * 1e3;
        listener
            .0
            .subscribe("takeover/t", rumqttc::QoS::AtLeastOnce)
            .await
            .unwrap();
        let talker = reconnect(through_n3, "GID_bench@@@talker", killed).await;
        let (tx, mut heard) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(event) = listener.1.poll().await {
                if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(_)) = event {
                    let _ = tx.send(());
                }
            }
        });
        let mut talker_loop = talker.1;
        tokio::spawn(async move { while talker_loop.poll().await.is_ok() {} });
        loop {
            talker
                .0
                .publish("takeover/t", rumqttc::QoS::AtMostOnce, false, "x")
                .await
                .unwrap();
            if tokio::time::timeout(Duration::from_millis(100), heard.recv())
                .await
                .is_ok()
            {
                break;
            }
            assert!(
                killed.elapsed() < Duration::from_secs(30),
                "no message across nodes 30 s after the take-over began"
            );
        }
        (served, killed.elapsed().as_secs_f64() * 1e3)
    })
}

/// Connects through `addr` every [`RECONNECT_EVERY`] until a CONNACK
/// accepts the device.
async fn reconnect(
    addr: SocketAddr,
    client_id: &str,
    since: Instant,
) -> (rumqttc::AsyncClient, rumqttc::EventLoop) {
    loop {
        let mut options = rumqttc::MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
        options.set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 16);
        let accepted = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => return true,
                    Ok(_) => continue,
                    Err(_) => return false,
                }
            }
        })
        .await
        .unwrap_or(false);
        if accepted {
            return (client, eventloop);
        }
        assert!(
            since.elapsed() < Duration::from_secs(30),
            "{client_id} not served through {addr} 30 s after the serving node was killed"
        );
        tokio::time::sleep(RECONNECT_EVERY).await;
    }
}

fn write(results: &mut String, setting: &Setting, runs: &[Vec<Run>], takeovers: &[(f64, f64)]) {
    let _ = writeln!(results, "## Several nodes (issue 18)\n");
    let _ = writeln!(
        results,
        "Signed QuerySessionByClientId (an offline client id, so every node but the instance's own asks Redis's directory as well as claiming the nonce and stepping the QPS bucket there), {} connections in all split evenly over the nodes that take load, one `mqgate-load` per node at once, {} s runs, {} interleaved rounds, the median (lowest-highest). The nodes, redis-server and the load generators share this machine's 2 cores: the rows say what spreading the load over nodes costs here, not what more machines would give. CPU per call: user + system time (`/proc/PID/stat`) of mqgate's loaded nodes and of redis-server over the run, divided by the calls answered.\n",
        setting.cluster_connections, setting.seconds, setting.cluster_rounds
    );
    let _ = writeln!(
        results,
        "| setup | req/s | / one node alone | / one clustered node | mqgate CPU µs/call | redis-server CPU µs/call |"
    );
    let _ = writeln!(results, "|---|---|---|---|---|---|");
    let alone = median_by(&runs[0], |r| r.rps).0;
    let one = median_by(&runs[1], |r| r.rps).0;
    for (setup, runs) in SETUPS.iter().zip(runs) {
        let (rps, low, high) = median_by(runs, |r| r.rps);
        let name = match setup {
            0 => "1 node alone (no `[cluster]`)".to_string(),
            1 => "1 node with `[cluster]`".to_string(),
            n => format!("{n} nodes with `[cluster]`"),
        };
        let (mqgate_us, ..) = median_by(runs, |r| r.mqgate_us);
        let redis = if *setup == 0 {
            "-".to_string()
        } else {
            format!("{:.1}", median_by(runs, |r| r.redis_us).0)
        };
        let _ = writeln!(
            results,
            "| {name} | {rps:.0} ({low:.0}-{high:.0}) | {:.2} | {:.2} | {mqgate_us:.1} | {redis} |",
            rps / alone,
            rps / one
        );
    }
    let (served, served_low, served_high) = median_by(takeovers, |t| t.0);
    let (working, working_low, working_high) = median_by(takeovers, |t| t.1);
    let _ = writeln!(
        results,
        "\nTake-over after the instance's node is killed (SIGKILL; lease 3 s, rounds every 500 ms), {} rounds, each a fresh three-node cluster, the median (lowest-highest): a device reconnecting every {} ms through another node is served again after **{served:.0} ms** ({served_low:.0}-{served_high:.0}); a message from a second device, connected through the third node, reaches it after {working:.0} ms ({working_low:.0}-{working_high:.0}).\n",
        takeovers.len(),
        RECONNECT_EVERY.as_millis()
    );
}
