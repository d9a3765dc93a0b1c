//! `mqgate-load`: a load generator for the RPC endpoint (and, with `mqtt`,
//! for an MQTT listener).
//!
//! It holds N keep-alive connections, signs every request itself (V1 or V3,
//! a fresh nonce and timestamp each time, as an SDK would), runs for a set
//! time or number of requests, shows a progress line, and prints requests/s,
//! latency percentiles and the count of each answer. Closed loop (each
//! connection sends its next request when the last is answered), or open
//! loop at `--rate` requests/s in all. `presign` writes signed request
//! targets to files for another load generator (wrk, `bench/wrk/replay.lua`)
//! to replay.
//!
//! ```sh
//! mqgate-load run --url http://127.0.0.1:8080 --connections 32 --duration 10 \
//!     --action QuerySessionByClientId --param InstanceId=mqtt-demo-0001 --param ClientId=dev-1 \
//!     --access-key-id mqgate-demo-key --access-key-secret mqgate-demo-secret
//! mqgate-load run --url http://127.0.0.1:8080 --connections 100 --rate 20000 ...  # open loop
//! mqgate-load presign --url http://127.0.0.1:8080 --count 1000000 --files 2 --out /dev/shm/req ...
//! mqgate-load baseline --listen 127.0.0.1:9000     # a plain axum handler, the floor to compare with
//! mqgate-load baseline --durable-bill /var/tmp/b   # the same, billing each call durably first
//! mqgate-load mqtt --addr 127.0.0.1:1883 --clients 100 --qos 1 --duration 5
//! mqgate-load idle --addr 127.0.0.1:1883         # then type 1000: holds 1,000 idle devices
//! mqgate-load connect --addr 127.0.0.1:1883 --connectors 50 --duration 5 \
//!     --signature mqgate-demo-key:mqgate-demo-secret:mqtt-demo-0001
//! mqgate-load rumqttd --listen 127.0.0.1:0        # a plain rumqttd, the baseline
//! ```

mod connect;
mod idle;
mod mqtt;
mod presign;
mod rumqttd;
mod wire;

use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Full};
use mqgate::client::{encode_form, sign_v1, sign_v3};
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

// The same allocator as mqgate's, so that the floor (the baseline server)
// and the client are not handicapped against the gateway.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "mqgate-load",
    about = "Load generator for mqgate's RPC endpoint and MQTT port"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send signed calls and report throughput, latency and answers.
    Run(RunArgs),
    /// Write signed V1 GET request targets (`/?Action=...&Signature=...`),
    /// one a line, into files for another load generator to replay.
    Presign(presign::PresignArgs),
    /// Serve a fixed JSON answer at / with a plain axum handler (the floor).
    Baseline {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
        /// The durable floor: before each answer, bill the call with
        /// mqgate's own metering store in this directory (its journal, made
        /// durable before the answer, as mqgate does), and nothing else.
        #[arg(long, value_name = "DIR")]
        durable_bill: Option<std::path::PathBuf>,
    },
    /// Publish/subscribe load on an MQTT listener; report messages/s and
    /// end-to-end latency.
    Mqtt(mqtt::MqttArgs),
    /// Hold idle MQTT 3.1.1 devices: read a number N on standard input to
    /// open N more, `check` to count those still open; end of input closes
    /// them. One JSON line answers each command.
    Idle(idle::IdleArgs),
    /// Devices that connect, authenticate and leave, over and over (flat out
    /// or at --rate): report the cycles per second.
    Connect(connect::ConnectArgs),
    /// Run a plain rumqttd broker with one MQTT 3.1.1 listener and one
    /// login (the baseline for connection rates); prints its address.
    Rumqttd(rumqttd::RumqttdArgs),
}

/// What a call is and who signs it: shared by `run` and `presign`, so that
/// a presigned request is signed exactly as `run` signs.
#[derive(clap::Args, Clone)]
struct SignArgs {
    /// The server, `http://HOST:PORT` (the Host header).
    #[arg(long)]
    url: String,
    #[arg(long, default_value = "QuerySessionByClientId")]
    action: String,
    /// An action parameter, NAME=VALUE. Repeatable.
    #[arg(long = "param", value_name = "NAME=VALUE")]
    params: Vec<String>,
    #[arg(long, default_value = "testid")]
    access_key_id: String,
    #[arg(long, default_value = "testsecret")]
    access_key_secret: String,
    /// v1 (HMAC-SHA1) or v3 (ACS3-HMAC-SHA256).
    #[arg(long, default_value = "v1", value_parser = ["v1", "v3"])]
    signature: String,
}

impl SignArgs {
    /// The `host:port` of `--url`.
    fn authority(&self) -> Result<String, String> {
        let uri: hyper::Uri = self.url.parse().map_err(|e| format!("--url: {e}"))?;
        Ok(uri
            .authority()
            .ok_or("--url needs a host and port")?
            .to_string())
    }

    /// The `--param` pairs.
    fn params(&self) -> Result<Vec<(String, String)>, String> {
        self.params
            .iter()
            .map(|p| {
                p.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .ok_or_else(|| format!("--param {p} is not NAME=VALUE"))
            })
            .collect()
    }

    /// The V1-signed form (`k=v&...&Signature=...`), with a fresh nonce and
    /// the current time, as an SDK signs each call.
    fn v1_form(&self, method: &str, params: &[(String, String)]) -> String {
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        encode_form(&sign_v1(
            method,
            &self.action,
            params,
            &self.access_key_id,
            &self.access_key_secret,
            chrono::Utc::now(),
            &nonce,
        ))
    }
}

#[derive(clap::Args, Clone)]
struct RunArgs {
    #[command(flatten)]
    sign: SignArgs,
    #[arg(long, default_value = "GET", value_parser = ["GET", "POST"])]
    method: String,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Seconds to run (ignored when --requests is given).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Stop after this many requests.
    #[arg(long)]
    requests: Option<u64>,
    /// Open loop: this many requests per second in all, each connection
    /// holding its share on a fixed schedule; a request's latency counts
    /// from the time it was due, so a stalled server is charged for the
    /// requests it held up. Absent: closed loop (each connection sends its
    /// next request when the last is answered).
    #[arg(long)]
    rate: Option<f64>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        // A runtime of its own, shaped like mqgate's brokers' runtime.
        Command::Rumqttd(args) => return exit(rumqttd::run(args)),
        // Signing is CPU work on threads of its own: no runtime.
        Command::Presign(args) => return exit(presign::run(&args)),
        _ => {}
    }
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    match cli.command {
        Command::Baseline {
            listen,
            durable_bill,
        } => runtime.block_on(baseline(listen, durable_bill)),
        Command::Run(args) => exit(runtime.block_on(run(args))),
        Command::Mqtt(args) => exit(runtime.block_on(mqtt::run(args))),
        Command::Idle(args) => exit(runtime.block_on(idle::run(args))),
        Command::Connect(args) => exit(runtime.block_on(connect::run(args))),
        Command::Rumqttd(_) | Command::Presign(_) => unreachable!("handled above"),
    }
}

fn exit(result: Result<(), String>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mqgate-load: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

/// The floor: what a plain axum handler with a fixed body costs.
fn baseline_app() -> axum::Router {
    axum::Router::new().route(
        "/",
        axum::routing::any(|| async {
            (
                [(
                    axum::http::header::CONTENT_TYPE,
                    "application/json;charset=utf-8",
                )],
                FLOOR_BODY,
            )
        }),
    )
}

/// The floor's answer: what QuerySessionByClientId answers, with a fixed
/// RequestId.
const FLOOR_BODY: &str =
    r#"{"OnlineStatus":true,"RequestId":"00000000-0000-0000-0000-000000000000"}"#;

/// The durable floor: the floor's handler, but each call is first billed
/// with mqgate's metering store (admitted, journaled, durable) before its
/// answer. What a server that makes every answer durable on this disk can
/// reach when nothing else in it costs anything: mqgate's RPC path is this
/// plus parsing, the signature, the replay check, RAM and the action.
fn durable_baseline_app(dir: &std::path::Path) -> Result<axum::Router, String> {
    use mqgate::directory::Instance;
    use mqgate::metering::Meter;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let meter = Arc::new(Meter::open(dir).map_err(|e| e.to_string())?);
    let instance = Arc::new(Instance {
        id: "post-cn-floor".into(),
        region: "cn-hangzhou".into(),
        account_id: "1234567890".into(),
        monthly_transaction_quota: None,
        require_group_ids: false,
        max_group_ids: 0,
        max_device_credentials: 0,
        max_tokens: 0,
        max_blacklisted_clients: 0,
        max_custom_auth_identities: 0,
        max_custom_auth_permissions: 0,
    });
    Ok(axum::Router::new().route(
        "/",
        axum::routing::any(move || {
            let (meter, instance) = (meter.clone(), instance.clone());
            async move {
                let billed = match meter.admit(&instance) {
                    Ok(admission) => meter
                        .commit(admission, "QuerySessionByClientId")
                        .await
                        .map_err(|e| e.message),
                    Err(e) => Err(e.message),
                };
                let status = match &billed {
                    Ok(()) => axum::http::StatusCode::OK,
                    Err(_) => axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                };
                // The floor's body, not copied, so that the two differ only
                // by the bill.
                let body = match billed {
                    Ok(()) => axum::body::Body::from(FLOOR_BODY),
                    Err(message) => format!("the bill was not written: {message}").into(),
                };
                (
                    status,
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/json;charset=utf-8",
                    )],
                    body,
                )
            }
        }),
    ))
}

async fn baseline(
    listen: std::net::SocketAddr,
    durable_bill: Option<std::path::PathBuf>,
) -> std::process::ExitCode {
    let app = match durable_bill {
        None => baseline_app(),
        Some(dir) => match durable_baseline_app(&dir) {
            Ok(app) => app,
            Err(e) => {
                eprintln!("mqgate-load baseline: cannot open the metering store: {e}");
                return std::process::ExitCode::from(2);
            }
        },
    };
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("mqgate-load baseline: cannot listen on {listen}: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    println!(
        "baseline listening http={}",
        listener.local_addr().expect("bound")
    );
    let _ = std::io::stdout().flush();
    let _ = axum::serve(listener, app).await;
    std::process::ExitCode::SUCCESS
}

/// What one connection saw.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    answers: BTreeMap<String, u64>,
}

/// When a connection's requests are due under `--rate`: the k-th at
/// `start + offset + k * every` seconds, whatever became of the earlier
/// ones (a fixed schedule, not one that slips when the server is slow).
#[derive(Clone, Copy, Debug)]
struct Pacing {
    start: Instant,
    offset: f64,
    every: f64,
}

impl Pacing {
    /// Connection `i` of `connections` sharing `rate` requests/s: each
    /// holds rate/connections a second, and connection i starts i/rate
    /// after `start`, so that the sends of all interleave one 1/rate apart
    /// instead of arriving in bursts of `connections`.
    fn new(start: Instant, rate: f64, i: usize, connections: usize) -> Pacing {
        Pacing {
            start,
            offset: i as f64 / rate,
            every: connections as f64 / rate,
        }
    }

    /// When this connection's request `k` (from 0) is due.
    fn due(&self, k: u64) -> Instant {
        self.start + Duration::from_secs_f64(self.offset + k as f64 * self.every)
    }
}

/// The open loop's shared start: every connection waits until all are
/// connected, and the first through sets the clock, so that the time spent
/// connecting is not counted as lateness.
struct OpenLoop {
    rate: f64,
    connected: tokio::sync::Barrier,
    start: OnceLock<Instant>,
}

/// A run's requests and the seconds they took.
struct Measured {
    tally: Tally,
    seconds: f64,
}

/// What every connection of a run shares.
struct Shared {
    args: RunArgs,
    params: Vec<(String, String)>,
    authority: String,
    /// Requests sent so far: the progress line's count, and `--requests`'.
    sent: AtomicU64,
    /// Set once every connection has ended, to end the progress line.
    stop: AtomicBool,
    started: Instant,
    /// With `--rate`.
    open: Option<OpenLoop>,
}

async fn run(args: RunArgs) -> Result<(), String> {
    let mut measured = measure(args.clone()).await?;
    report(&args, &mut measured);
    Ok(())
}

/// Runs the connections to the end and gathers what they saw. Closed loop
/// the time counts from before connecting; open loop from the schedule's
/// start.
async fn measure(args: RunArgs) -> Result<Measured, String> {
    if args.connections == 0 {
        return Err("--connections must be at least 1".into());
    }
    let open = match args.rate {
        Some(rate) if !(rate.is_finite() && rate > 0.0) => {
            return Err(format!(
                "--rate {rate}: a number of requests per second above 0"
            ));
        }
        Some(rate) => Some(OpenLoop {
            rate,
            connected: tokio::sync::Barrier::new(args.connections),
            start: OnceLock::new(),
        }),
        None => None,
    };
    let shared = Arc::new(Shared {
        authority: args.sign.authority()?,
        params: args.sign.params()?,
        args,
        sent: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        started: Instant::now(),
        open,
    });
    let progress = tokio::spawn(progress(shared.clone()));
    let tasks: Vec<_> = (0..shared.args.connections)
        .map(|i| {
            let shared = shared.clone();
            tokio::spawn(async move { connection(&shared, i).await })
        })
        .collect();
    let mut total = Tally::default();
    let mut failed = None;
    for task in tasks {
        match task.await.map_err(|e| e.to_string())? {
            Ok(tally) => {
                total.latencies_us.extend(tally.latencies_us);
                for (k, v) in tally.answers {
                    *total.answers.entry(k).or_default() += v;
                }
            }
            Err(e) => failed = failed.or(Some(e)),
        }
    }
    let ended = Instant::now();
    shared.stop.store(true, Ordering::Relaxed);
    progress.abort();
    if !shared.args.quiet {
        eprintln!();
    }
    if let Some(e) = failed {
        return Err(e);
    }
    let began = shared
        .open
        .as_ref()
        .and_then(|o| o.start.get().copied())
        .unwrap_or(shared.started);
    Ok(Measured {
        tally: total,
        seconds: ended.duration_since(began).as_secs_f64(),
    })
}

/// Prints the requests sent so far once a second, on one line.
async fn progress(shared: Arc<Shared>) {
    let mut last = 0;
    while !shared.stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = shared.sent.load(Ordering::Relaxed);
        if !shared.args.quiet {
            eprint!(
                "\r[{:>5.1}s] {now} requests, {} req/s   ",
                shared.started.elapsed().as_secs_f64(),
                now - last
            );
        }
        last = now;
    }
}

/// Connection `index`'s loop: closed (send when answered) without an open
/// loop, else on its share of the schedule.
async fn connection(shared: &Shared, index: usize) -> Result<Tally, String> {
    let args = &shared.args;
    let connected = handshake(&shared.authority).await;
    let (pacing, start) = match &shared.open {
        Some(open) => {
            // Every connection reaches the barrier, connected or not, so
            // that one refused connection cannot leave the others waiting.
            open.connected.wait().await;
            let start = *open.start.get_or_init(Instant::now);
            let pacing = Pacing::new(start, open.rate, index, args.connections);
            (Some(pacing), start)
        }
        None => (None, shared.started),
    };
    let deadline = start + Duration::from_secs_f64(args.duration);
    let mut sender = connected?;
    let mut tally = Tally::default();
    for k in 0.. {
        let due = pacing.map(|p| p.due(k));
        let at = due.unwrap_or_else(Instant::now);
        if !take_turn(args.requests, &shared.sent, at, deadline) {
            break;
        }
        // Signed before it is due: the signing is the client's work, not
        // lateness of the server's.
        let request = build_request(args, &shared.params, &shared.authority)?;
        let began = match due {
            Some(due) => {
                tokio::time::sleep_until(due.into()).await;
                due
            }
            None => Instant::now(),
        };
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        tally
            .latencies_us
            .push(began.elapsed().as_micros().min(u32::MAX as u128) as u32);
        *tally.answers.entry(answer_of(status, &body)).or_default() += 1;
    }
    Ok(tally)
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// A keep-alive HTTP/1.1 connection to `authority`, Nagle off.
async fn handshake(authority: &str) -> Result<Sender, String> {
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(sender)
}

/// Whether one more request is to be sent, `at` being when it would go:
/// with `--requests`, while the count lasts; otherwise while `at` is before
/// the deadline.
fn take_turn(limit: Option<u64>, sent: &AtomicU64, at: Instant, deadline: Instant) -> bool {
    match limit {
        Some(limit) => sent.fetch_add(1, Ordering::Relaxed) < limit,
        None if at >= deadline => false,
        None => {
            sent.fetch_add(1, Ordering::Relaxed);
            true
        }
    }
}

/// `200`, or the status and the error body's `Code` (`400 InvalidParameter`).
fn answer_of(status: u16, body: &[u8]) -> String {
    if status == 200 {
        return "200".to_string();
    }
    let code = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["Code"].as_str().map(str::to_string))
        .unwrap_or_default();
    format!("{status} {code}")
}

fn build_request(
    args: &RunArgs,
    params: &[(String, String)],
    authority: &str,
) -> Result<hyper::Request<Full<Bytes>>, String> {
    let sign = &args.sign;
    let builder = hyper::Request::builder().header("host", authority);
    let request = if sign.signature == "v3" {
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let signed = sign_v3(
            &args.method,
            authority,
            &sign.action,
            params,
            &sign.access_key_id,
            &sign.access_key_secret,
            chrono::Utc::now(),
            &nonce,
        );
        let mut builder = builder
            .method(args.method.as_str())
            .uri(if signed.query.is_empty() {
                "/".to_string()
            } else {
                format!("/?{}", signed.query)
            });
        for (name, value) in &signed.headers {
            if name != "host" {
                builder = builder.header(name.as_str(), value.as_str());
            }
        }
        builder.body(Full::new(Bytes::from(signed.body)))
    } else if args.method == "POST" {
        builder
            .method("POST")
            .uri("/")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(sign.v1_form("POST", params))))
    } else {
        builder
            .method("GET")
            .uri(format!("/?{}", sign.v1_form("GET", params)))
            .body(Full::new(Bytes::new()))
    };
    request.map_err(|e| e.to_string())
}

/// The latency at percentile `p` in ms (nearest rank) of sorted
/// microseconds.
fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    let n = sorted_us.len();
    if n == 0 {
        return 0.0;
    }
    let i = ((p / 100.0) * n as f64).ceil() as usize;
    sorted_us[i.clamp(1, n) - 1] as f64 / 1000.0
}

/// The run's figures as the JSON summary prints them. `offered_rate` is
/// `--rate` (null closed loop); `requests_per_second` is what was achieved.
fn summary(args: &RunArgs, measured: &mut Measured) -> serde_json::Value {
    let latencies = &mut measured.tally.latencies_us;
    latencies.sort_unstable();
    let n = latencies.len();
    serde_json::json!({
        "requests": n,
        "seconds": measured.seconds,
        "requests_per_second": n as f64 / measured.seconds.max(1e-9),
        "offered_rate": args.rate,
        "p50_ms": percentile_ms(latencies, 50.0),
        "p90_ms": percentile_ms(latencies, 90.0),
        "p99_ms": percentile_ms(latencies, 99.0),
        "max_ms": percentile_ms(latencies, 100.0),
        "connections": args.connections,
        "answers": measured.tally.answers,
    })
}

fn report(args: &RunArgs, measured: &mut Measured) {
    let v = summary(args, measured);
    if args.json {
        println!("{v}");
        return;
    }
    let offered = args
        .rate
        .map(|r| format!(" (offered {r:.0} req/s, open loop)"))
        .unwrap_or_default();
    println!(
        "{} requests in {:.2} s over {} connections: {:.0} req/s{offered}",
        v["requests"],
        measured.seconds,
        args.connections,
        v["requests_per_second"].as_f64().unwrap_or(0.0)
    );
    println!(
        "latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}",
        v["p50_ms"].as_f64().unwrap_or(0.0),
        v["p90_ms"].as_f64().unwrap_or(0.0),
        v["p99_ms"].as_f64().unwrap_or(0.0),
        v["max_ms"].as_f64().unwrap_or(0.0)
    );
    for (answer, count) in &measured.tally.answers {
        println!("  {answer}: {count}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// `mqgate-load run ARGS` as parsed from a command line.
    fn run_args(url: &str, extra: &[&str]) -> RunArgs {
        let mut line = vec!["mqgate-load", "run", "--url", url, "--quiet"];
        line.extend_from_slice(extra);
        match Cli::parse_from(line).command {
            Command::Run(args) => args,
            _ => unreachable!("run"),
        }
    }

    /// A server on a loopback port answering `app`; its URL.
    async fn serve(app: axum::Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    #[test]
    fn the_schedule_interleaves_connections_evenly() {
        let start = Instant::now();
        let (rate, connections) = (1000.0, 4);
        let mut due: Vec<Duration> = (0..connections)
            .flat_map(|i| {
                let pacing = Pacing::new(start, rate, i, connections);
                (0..250).map(move |k| pacing.due(k) - start)
            })
            .collect();
        due.sort();
        assert_eq!(due[0], Duration::ZERO);
        for pair in due.windows(2) {
            let gap = (pair[1] - pair[0]).as_secs_f64();
            assert!((gap - 0.001).abs() < 1e-6, "gap {gap}");
        }
        // Connection 1's second request is due 4 ms after its first, 1 ms
        // after connection 0's first.
        let one = Pacing::new(start, rate, 1, connections);
        assert_eq!(one.due(0) - start, Duration::from_millis(1));
        assert_eq!(one.due(1) - one.due(0), Duration::from_millis(4));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn open_loop_holds_the_offered_rate() {
        let url = serve(baseline_app()).await;
        let args = run_args(
            &url,
            &["--rate", "400", "--connections", "4", "--duration", "0.5"],
        );
        let mut measured = measure(args.clone()).await.unwrap();
        let v = summary(&args, &mut measured);
        assert_eq!(v["offered_rate"], 400.0);
        // Requests due in [0, 0.5 s): exactly 200.
        assert_eq!(v["requests"], 200);
        let achieved = v["requests_per_second"].as_f64().unwrap();
        assert!((360.0..=410.0).contains(&achieved), "{achieved} req/s");
        assert_eq!(v["answers"]["200"], 200);
    }

    /// A server that stalls once for 200 ms: closed loop, the stall is one
    /// slow request; open loop, every request due during the stall waits
    /// for it, and its latency counts from when it was due.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn open_loop_charges_a_stall_to_every_request_it_held_up() {
        let stalled = Arc::new(AtomicBool::new(false));
        let app = axum::Router::new().route(
            "/",
            axum::routing::get(move || {
                let first = !stalled.swap(true, Ordering::SeqCst);
                async move {
                    if first {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    "{}"
                }
            }),
        );
        let url = serve(app).await;
        let args = run_args(
            &url,
            &["--rate", "100", "--connections", "1", "--duration", "0.6"],
        );
        let measured = measure(args).await.unwrap();
        let slow = |tally: &Tally| {
            tally
                .latencies_us
                .iter()
                .filter(|&&us| us >= 100_000)
                .count()
        };
        // Due every 10 ms: those due at 0, 10, ..., 100 ms are answered
        // after 200 ms, so at least 100 ms after they were due.
        assert!(slow(&measured.tally) >= 10, "{}", slow(&measured.tally));
        assert_eq!(measured.tally.latencies_us.len(), 60);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn closed_loop_is_unchanged() {
        let url = serve(baseline_app()).await;
        let args = run_args(&url, &["--requests", "50", "--connections", "2"]);
        let mut measured = measure(args.clone()).await.unwrap();
        let v = summary(&args, &mut measured);
        assert_eq!(v["requests"], 50);
        assert!(v["offered_rate"].is_null());
        assert_eq!(v["answers"]["200"], 50);
    }

    #[test]
    fn a_rate_must_be_positive() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        for rate in ["0", "-5", "NaN"] {
            let rate = format!("--rate={rate}");
            let args = run_args("http://127.0.0.1:1", &[&rate]);
            let e = runtime.block_on(measure(args)).err().unwrap();
            assert!(e.contains("--rate"), "{e}");
        }
    }
}
