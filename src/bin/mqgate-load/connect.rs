//! `mqgate-load connect`: devices that connect, authenticate and leave, over
//! and over: each of `--connectors` loops opens a TCP connection, sends
//! CONNECT (a new client id each time), reads the CONNACK, sends DISCONNECT
//! and waits for the server to close. Flat out (the connection rate a
//! server sustains), or at `--rate` connections per second in all (a CONNECT
//! flood of a known size). Reports the completed cycles per second, the
//! time from opening the socket to the CONNACK, and what failed.

use crate::wire::{Login, connect_device, connect_packet, disconnect};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args, Clone)]
pub struct ConnectArgs {
    /// The MQTT listener, HOST:PORT.
    #[arg(long)]
    addr: std::net::SocketAddr,
    #[arg(long)]
    username: Option<String>,
    #[arg(long)]
    password: Option<String>,
    /// ApsaraMQ Signature mode, KEYID:SECRET:INSTANCE (each client id
    /// signed).
    #[arg(long, conflicts_with_all = ["username", "password"])]
    signature: Option<String>,
    /// Client ids are PREFIX-CONNECTOR-N (default: connect-PID).
    #[arg(long)]
    prefix: Option<String>,
    /// Concurrent connecting loops.
    #[arg(long, default_value_t = 50)]
    connectors: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Connections per second in all, spread evenly over the connectors;
    /// absent: flat out. A connector that falls behind skips the missed
    /// starts (the rate reached is reported).
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds a device has to get its CONNACK, and the server to close
    /// after DISCONNECT.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Default)]
struct Tally {
    cycles: u64,
    /// Socket opened to CONNACK read, microseconds.
    connack_us: Vec<u32>,
    failures: BTreeMap<String, u64>,
}

pub async fn run(args: ConnectArgs) -> Result<(), String> {
    let login = Login::from_args(
        args.username.as_deref(),
        args.password.as_deref(),
        args.signature.as_deref(),
    )?;
    if args.connectors == 0 {
        return Err("--connectors must be at least 1".into());
    }
    let prefix: Arc<str> = args
        .prefix
        .clone()
        .unwrap_or_else(|| format!("connect-{}", std::process::id()))
        .into();
    let timeout = Duration::from_secs_f64(args.timeout);
    let started = Instant::now();
    let stop_at = started + Duration::from_secs_f64(args.duration);
    let every = args
        .rate
        .filter(|r| *r > 0.0)
        .map(|rate| Duration::from_secs_f64(args.connectors as f64 / rate));
    let connectors = args.connectors;
    let mut tasks = Vec::with_capacity(connectors);
    for connector in 0..connectors {
        let (login, prefix, addr) = (login.clone(), prefix.clone(), args.addr);
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut ticks = every.map(|every| {
                // Connectors start spread over one period, not all at once.
                let offset = every.mul_f64(connector as f64 / connectors as f64);
                let mut ticks =
                    tokio::time::interval_at(tokio::time::Instant::now() + offset, every);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                ticks
            });
            let mut n = 0u64;
            loop {
                if let Some(ticks) = &mut ticks {
                    ticks.tick().await;
                }
                if Instant::now() >= stop_at {
                    break;
                }
                let connect = connect_packet(&format!("{prefix}-{connector}-{n}"), &login, 60);
                n += 1;
                let began = Instant::now();
                let outcome = match connect_device(addr, &connect, timeout).await {
                    Ok(stream) => {
                        let us = began.elapsed().as_micros().min(u32::MAX as u128) as u32;
                        tally.connack_us.push(us);
                        disconnect(stream, timeout).await
                    }
                    Err(e) => Err(e),
                };
                match outcome {
                    Ok(()) => tally.cycles += 1,
                    Err(e) => {
                        *tally.failures.entry(kind_of(&e)).or_default() += 1;
                        // No hot loop on a refused connection.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            tally
        }));
    }
    let mut total = Tally::default();
    for task in tasks {
        let tally = task.await.map_err(|e| e.to_string())?;
        total.cycles += tally.cycles;
        total.connack_us.extend(tally.connack_us);
        for (k, v) in tally.failures {
            *total.failures.entry(k).or_default() += v;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    total.connack_us.sort_unstable();
    let pct = |p: f64| -> f64 {
        let l = &total.connack_us;
        if l.is_empty() {
            return 0.0;
        }
        let i = ((p / 100.0) * l.len() as f64).ceil() as usize;
        l[i.clamp(1, l.len()) - 1] as f64 / 1000.0
    };
    let failed: u64 = total.failures.values().sum();
    let rate = total.cycles as f64 / elapsed.max(1e-9);
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "connectors": args.connectors,
                "target_rate": args.rate,
                "cycles": total.cycles,
                "failed": failed,
                "failures": total.failures,
                "seconds": elapsed,
                "cycles_per_second": rate,
                "connack_p50_ms": pct(50.0),
                "connack_p99_ms": pct(99.0),
            })
        );
    } else {
        println!(
            "{} connections connected, authenticated and left in {elapsed:.2} s over {} connectors = {rate:.0}/s; socket to CONNACK p50 {:.3} ms, p99 {:.3} ms; {failed} failed",
            total.cycles,
            args.connectors,
            pct(50.0),
            pct(99.0)
        );
        for (kind, count) in &total.failures {
            println!("  {kind}: {count}");
        }
    }
    Ok(())
}

/// A failure's kind for the tally: its text without what varies from one
/// connection to the next.
fn kind_of(error: &str) -> String {
    error
        .split(" (os error")
        .next()
        .unwrap_or(error)
        .to_string()
}
