//! `mqgate-load idle`: holds idle MQTT 3.1.1 devices, as many as it is told,
//! in steps, so that a benchmark can find how many one server holds.
//!
//! It reads commands on standard input, one a line:
//! - a number N: open N more devices (CONNECT, CONNACK, then nothing), at
//!   most `--at-once` at a time; stop adding at the first that fails; print
//!   one JSON line `{"open":..,"added":..,"error":..,"seconds":..}`;
//! - `check`: count the devices whose connection the server has not closed
//!   (a non-blocking read on each: nothing to read is open; end of stream or
//!   an error is closed, and dropped); print `{"open":..,"closed":..}`.
//!
//! End of input closes every connection and exits. The process holds one
//! descriptor per device: a benchmark needing more devices than its own
//! descriptor limit runs several.

use crate::wire::{Login, connect_device, connect_packet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;
use tokio::net::TcpStream;

#[derive(clap::Args, Clone)]
pub struct IdleArgs {
    /// The MQTT listener, HOST:PORT.
    #[arg(long)]
    addr: std::net::SocketAddr,
    #[arg(long)]
    username: Option<String>,
    #[arg(long)]
    password: Option<String>,
    /// ApsaraMQ Signature mode, KEYID:SECRET:INSTANCE.
    #[arg(long, conflicts_with_all = ["username", "password"])]
    signature: Option<String>,
    /// Client ids are PREFIX-0, PREFIX-1, ... (default: idle-PID).
    #[arg(long)]
    prefix: Option<String>,
    /// Connections being set up at once.
    #[arg(long, default_value_t = 64)]
    at_once: usize,
    /// Seconds a device has to get its CONNACK.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Keepalive of every device, seconds (they never ping: the run must
    /// end before one and a half times this).
    #[arg(long, default_value_t = 3600)]
    keep_alive: u16,
}

pub async fn run(args: IdleArgs) -> Result<(), String> {
    let login = Login::from_args(
        args.username.as_deref(),
        args.password.as_deref(),
        args.signature.as_deref(),
    )?;
    let prefix = args
        .prefix
        .clone()
        .unwrap_or_else(|| format!("idle-{}", std::process::id()));
    let timeout = Duration::from_secs_f64(args.timeout);
    let mut devices: Vec<TcpStream> = Vec::new();
    let mut next_id = 0usize;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await.map_err(|e| e.to_string())? {
        let line = line.trim();
        if line == "check" {
            let before = devices.len();
            devices.retain(still_open);
            say(serde_json::json!({
                "open": devices.len(),
                "closed": before - devices.len(),
            }));
            continue;
        }
        let Ok(count) = line.parse::<usize>() else {
            return Err(format!("unknown command {line:?}: a number or `check`"));
        };
        let started = Instant::now();
        let failed = Arc::new(AtomicBool::new(false));
        let gate = Arc::new(tokio::sync::Semaphore::new(args.at_once.max(1)));
        let mut tasks = Vec::with_capacity(count);
        for _ in 0..count {
            let permit = gate.clone().acquire_owned().await.expect("never closed");
            if failed.load(Ordering::Relaxed) {
                break;
            }
            let connect = connect_packet(&format!("{prefix}-{next_id}"), &login, args.keep_alive);
            next_id += 1;
            let addr = args.addr;
            let failed = failed.clone();
            tasks.push(tokio::spawn(async move {
                let result = connect_device(addr, &connect, timeout).await;
                if result.is_err() {
                    failed.store(true, Ordering::Relaxed);
                }
                drop(permit);
                result
            }));
        }
        let mut added = 0;
        let mut error = None;
        for task in tasks {
            match task.await.map_err(|e| e.to_string())? {
                Ok(stream) => {
                    devices.push(stream);
                    added += 1;
                }
                Err(e) => {
                    error.get_or_insert(e);
                }
            }
        }
        say(serde_json::json!({
            "open": devices.len(),
            "added": added,
            "error": error,
            "seconds": started.elapsed().as_secs_f64(),
        }));
    }
    Ok(())
}

/// Whether the server has left this connection open (nothing to read yet).
fn still_open(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match stream.try_read(&mut byte) {
        Ok(0) => false,
        // Something the server sent (a DISCONNECT, say): still open.
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
    }
}

fn say(line: serde_json::Value) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
