//! `mqgate-load rumqttd`: a plain rumqttd broker (the version mqgate
//! embeds), one MQTT 3.1.1 listener with a username and password, in a
//! process of its own: the baseline a benchmark compares mqgate's device
//! edge with, independent of how mqgate connects devices to its own
//! routers. Router settings as mqgate's; the runtime, like mqgate's
//! brokers' runtime, has twice as many workers as cores (at least 4):
//! rumqttd's connection setup blocks the worker it runs on until its
//! router answers.
//!
//! Prints `rumqttd listening mqtt=ADDR` once the listener answers a
//! CONNECT, then serves until killed.

use crate::wire::{Login, connect_device, connect_packet, disconnect};
use rumqttd::protocol::v4::V4;
use rumqttd::{ConnectionSettings, LinkType, Router, RouterConfig, Server, ServerSettings};
use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(clap::Args, Clone)]
pub struct RumqttdArgs {
    /// Where to listen; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The one login the listener takes.
    #[arg(long, default_value = "bench")]
    username: String,
    #[arg(long, default_value = "bench-secret")]
    password: String,
    /// The router's connection limit.
    #[arg(long, default_value_t = 20_000)]
    max_connections: usize,
}

pub fn run(args: RumqttdArgs) -> Result<(), String> {
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get() * 2)
        .max(4);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(serve(args))
}

async fn serve(args: RumqttdArgs) -> Result<(), String> {
    // rumqttd binds its listener itself and never says the port: pick a
    // free one when asked for port 0.
    let listen = if args.listen.port() == 0 {
        std::net::TcpListener::bind(args.listen)
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port on {}: {e}", args.listen))?
    } else {
        args.listen
    };
    let router = Router::new(
        0,
        RouterConfig {
            max_connections: args.max_connections,
            max_outgoing_packet_count: 200,
            max_segment_size: 4 * 1024 * 1024,
            max_segment_count: 4,
            ..RouterConfig::default()
        },
    );
    let router_tx = router.spawn();
    let settings = ServerSettings {
        name: "baseline-v4".into(),
        listen,
        tls: None,
        next_connection_delay_ms: 0,
        connections: ConnectionSettings {
            connection_timeout_ms: 10_000,
            max_payload_size: 1 << 20,
            max_inflight_count: 100,
            auth: Some(HashMap::from([(
                args.username.clone(),
                args.password.clone(),
            )])),
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let mut server = Server::new(settings, router_tx, V4);
    let listener = tokio::spawn(async move { server.start(LinkType::Remote).await });
    let login = Login::Fixed(args.username, args.password);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if listener.is_finished() {
            return Err(format!("rumqttd's listener on {listen} stopped"));
        }
        let probe = connect_packet("baseline-probe", &login, 10);
        match connect_device(listen, &probe, Duration::from_secs(1)).await {
            Ok(stream) => {
                let _ = disconnect(stream, Duration::from_secs(1)).await;
                break;
            }
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(format!("rumqttd on {listen} is not answering: {e}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "rumqttd listening mqtt={listen}");
        let _ = out.flush();
    }
    match listener.await {
        Ok(Ok(())) => Err("rumqttd's listener stopped".into()),
        Ok(Err(e)) => Err(format!("rumqttd's listener failed: {e}")),
        Err(e) => Err(e.to_string()),
    }
}
