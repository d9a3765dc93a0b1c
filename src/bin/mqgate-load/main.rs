//! `mqgate-load`: a load generator for the RPC endpoint (and, with `mqtt`,
//! for an MQTT listener).
//!
//! It holds N keep-alive connections, signs every request itself (V1 or V3,
//! a fresh nonce and timestamp each time, as an SDK would), runs for a set
//! time or number of requests, shows a progress line, and prints requests/s,
//! latency percentiles and the count of each answer.
//!
//! ```sh
//! mqgate-load run --url http://127.0.0.1:8080 --connections 32 --duration 10 \
//!     --action QuerySessionByClientId --param InstanceId=mqtt-demo-0001 --param ClientId=dev-1 \
//!     --access-key-id mqgate-demo-key --access-key-secret mqgate-demo-secret
//! mqgate-load baseline --listen 127.0.0.1:9000     # a plain axum handler, the floor to compare with
//! mqgate-load mqtt --addr 127.0.0.1:1883 --clients 100 --qos 1 --duration 5
//! mqgate-load idle --addr 127.0.0.1:1883         # then type 1000: holds 1,000 idle devices
//! mqgate-load connect --addr 127.0.0.1:1883 --connectors 50 --duration 5 \
//!     --signature mqgate-demo-key:mqgate-demo-secret:mqtt-demo-0001
//! mqgate-load rumqttd --listen 127.0.0.1:0        # a plain rumqttd, the baseline
//! ```

mod connect;
mod idle;
mod mqtt;
mod rumqttd;
mod wire;

use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Full};
use mqgate::client::{encode_form, sign_v1, sign_v3};
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    /// Serve a fixed JSON answer at / with a plain axum handler (the floor).
    Baseline {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
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

#[derive(clap::Args, Clone)]
struct RunArgs {
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
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Command::Rumqttd(args) = cli.command {
        // A runtime of its own, shaped like mqgate's brokers' runtime.
        return exit(rumqttd::run(args));
    }
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    match cli.command {
        Command::Baseline { listen } => runtime.block_on(baseline(listen)),
        Command::Run(args) => exit(runtime.block_on(run(args))),
        Command::Mqtt(args) => exit(runtime.block_on(mqtt::run(args))),
        Command::Idle(args) => exit(runtime.block_on(idle::run(args))),
        Command::Connect(args) => exit(runtime.block_on(connect::run(args))),
        Command::Rumqttd(_) => unreachable!("handled above"),
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

async fn baseline(listen: std::net::SocketAddr) -> std::process::ExitCode {
    let app = axum::Router::new().route(
        "/",
        axum::routing::any(|| async {
            (
                [(
                    axum::http::header::CONTENT_TYPE,
                    "application/json;charset=utf-8",
                )],
                r#"{"OnlineStatus":true,"RequestId":"00000000-0000-0000-0000-000000000000"}"#,
            )
        }),
    );
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

async fn run(args: RunArgs) -> Result<(), String> {
    let uri: hyper::Uri = args.url.parse().map_err(|e| format!("--url: {e}"))?;
    let authority = uri
        .authority()
        .ok_or("--url needs a host and port")?
        .to_string();
    let mut params = Vec::new();
    for p in &args.params {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| format!("--param {p} is not NAME=VALUE"))?;
        params.push((k.to_string(), v.to_string()));
    }
    let args = Arc::new(args);
    let params = Arc::new(params);
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.duration);

    let progress = {
        let (sent, stop, quiet) = (sent.clone(), stop.clone(), args.quiet);
        tokio::spawn(async move {
            let mut last = 0;
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let now = sent.load(Ordering::Relaxed);
                if !quiet {
                    eprint!(
                        "\r[{:>5.1}s] {now} requests, {} req/s   ",
                        started.elapsed().as_secs_f64(),
                        now - last
                    );
                }
                last = now;
            }
        })
    };

    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        let (args, params, sent, stop, authority) = (
            args.clone(),
            params.clone(),
            sent.clone(),
            stop.clone(),
            authority.clone(),
        );
        tasks.push(tokio::spawn(async move {
            connection(&args, &params, &authority, &sent, &stop, deadline).await
        }));
    }
    let mut total = Tally::default();
    for task in tasks {
        let tally = task.await.map_err(|e| e.to_string())??;
        total.latencies_us.extend(tally.latencies_us);
        for (k, v) in tally.answers {
            *total.answers.entry(k).or_default() += v;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    progress.abort();
    if !args.quiet {
        eprintln!();
    }
    report(&args, &mut total, elapsed);
    Ok(())
}

async fn connection(
    args: &RunArgs,
    params: &[(String, String)],
    authority: &str,
    sent: &AtomicU64,
    stop: &AtomicBool,
    deadline: Instant,
) -> Result<Tally, String> {
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut tally = Tally::default();
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        match args.requests {
            Some(limit) => {
                if sent.fetch_add(1, Ordering::Relaxed) >= limit {
                    break;
                }
            }
            None => {
                if Instant::now() >= deadline {
                    break;
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }
        let request = build_request(args, params, authority)?;
        let began = Instant::now();
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
        let answer = if status == 200 {
            "200".to_string()
        } else {
            let code = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["Code"].as_str().map(str::to_string))
                .unwrap_or_default();
            format!("{status} {code}")
        };
        *tally.answers.entry(answer).or_default() += 1;
    }
    Ok(tally)
}

fn build_request(
    args: &RunArgs,
    params: &[(String, String)],
    authority: &str,
) -> Result<hyper::Request<Full<Bytes>>, String> {
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let now = chrono::Utc::now();
    let builder = hyper::Request::builder().header("host", authority);
    let request = if args.signature == "v3" {
        let signed = sign_v3(
            &args.method,
            authority,
            &args.action,
            params,
            &args.access_key_id,
            &args.access_key_secret,
            now,
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
    } else {
        let form = encode_form(&sign_v1(
            &args.method,
            &args.action,
            params,
            &args.access_key_id,
            &args.access_key_secret,
            now,
            &nonce,
        ));
        if args.method == "POST" {
            builder
                .method("POST")
                .uri("/")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Full::new(Bytes::from(form)))
        } else {
            builder
                .method("GET")
                .uri(format!("/?{form}"))
                .body(Full::new(Bytes::new()))
        }
    };
    request.map_err(|e| e.to_string())
}

fn report(args: &RunArgs, total: &mut Tally, elapsed: f64) {
    total.latencies_us.sort_unstable();
    let n = total.latencies_us.len();
    let pct = |p: f64| -> f64 {
        if n == 0 {
            return 0.0;
        }
        let i = ((p / 100.0) * n as f64).ceil() as usize;
        total.latencies_us[i.clamp(1, n) - 1] as f64 / 1000.0
    };
    let rps = n as f64 / elapsed.max(1e-9);
    if args.json {
        let summary = serde_json::json!({
            "requests": n,
            "seconds": elapsed,
            "requests_per_second": rps,
            "p50_ms": pct(50.0),
            "p90_ms": pct(90.0),
            "p99_ms": pct(99.0),
            "max_ms": pct(100.0),
            "connections": args.connections,
            "answers": total.answers,
        });
        println!("{summary}");
    } else {
        println!(
            "{n} requests in {elapsed:.2} s over {} connections: {rps:.0} req/s",
            args.connections
        );
        println!(
            "latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}",
            pct(50.0),
            pct(90.0),
            pct(99.0),
            pct(100.0)
        );
        for (answer, count) in &total.answers {
            println!("  {answer}: {count}");
        }
    }
}
