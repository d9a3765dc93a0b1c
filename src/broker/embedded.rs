//! The embedded rumqttd brokers: one router per instance, its loopback
//! listeners (MQTT 3.1.1 and 5), and an in-process link mqgate publishes
//! through, all on a runtime of their own.
//!
//! Why a runtime of their own: rumqttd's connection setup blocks the thread
//! it runs on (`LinkBuilder::build` sends to the router's bounded channel and
//! waits for its answer synchronously). On mqgate's main runtime a storm of
//! MQTT CONNECTs could hold every worker there and stall the HTTP API; here
//! it can only slow other MQTT connections down. rumqttd cannot stop a
//! router (its thread runs until the process ends), so at shutdown this
//! runtime is let go without waiting for tasks that may sit in such a call
//! ([`BrokerRuntime::shutdown`]); the main runtime then holds nothing of
//! rumqttd's and stops at once.

use super::registry::ProtocolVersion;
use rumqttd::local::{LinkBuilder, LinkRx, LinkTx};
use rumqttd::protocol::{Login, Protocol, v4::V4, v5::V5};
use rumqttd::{ConnectionSettings, LinkType, Router, RouterConfig, Server, ServerSettings};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener};
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Why an instance's embedded broker did not start.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error("no free loopback port: {0}")]
    NoPort(std::io::Error),
    #[error("rumqttd listener on {addr} did not start")]
    ListenerStopped { addr: SocketAddr },
    #[error("rumqttd listener on {addr} is not answering: {why}")]
    NotAnswering { addr: SocketAddr, why: ProbeError },
    #[error("the router refused mqgate's publisher link: {0}")]
    Publisher(String),
}

/// Why a listener did not answer a probe CONNECT.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the CONNECT could not be encoded: {0}")]
    Encode(String),
    #[error("no CONNACK within a second")]
    NoConnack,
    #[error("the answer is not a CONNACK")]
    NotConnack,
}

/// Worker threads of the brokers' runtime: twice the cores (at least 4).
/// rumqttd's connection setup blocks the worker it runs on until the router
/// answers; with only as many workers as cores, a burst of connections can
/// block them all, and then nothing accepts the next connections (they wait
/// in the kernel's backlog, then retry after backoffs of seconds).
fn worker_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get() * 2)
        .max(4)
}

/// The runtime rumqttd's listeners and connections run on.
pub struct BrokerRuntime {
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    handle: tokio::runtime::Handle,
}

impl std::fmt::Debug for BrokerRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BrokerRuntime")
    }
}

impl BrokerRuntime {
    pub fn start() -> std::io::Result<BrokerRuntime> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(worker_threads())
            .thread_name("mqgate-rumqttd")
            .enable_all()
            .build()?;
        Ok(BrokerRuntime {
            handle: runtime.handle().clone(),
            runtime: Mutex::new(Some(runtime)),
        })
    }

    pub fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }

    /// Stops the runtime without waiting for its tasks (safe from async
    /// code, and the only stop possible for a task inside rumqttd's
    /// blocking link setup). Idempotent.
    pub fn shutdown(&self) {
        let runtime = self
            .runtime
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(runtime) = runtime {
            runtime.shutdown_background();
        }
    }
}

impl Drop for BrokerRuntime {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// One instance's running rumqttd: its listeners and its publisher link.
pub struct EmbeddedBroker {
    /// rumqttd's MQTT 3.1.1 listener (loopback).
    pub v4_addr: SocketAddr,
    /// rumqttd's MQTT 5 listener (loopback).
    pub v5_addr: SocketAddr,
    /// An in-process client of the router, for messages mqgate publishes.
    pub publisher: LinkTx,
    /// The publisher's receiving half: kept so that the router keeps the
    /// link (it receives nothing, having no subscriptions).
    pub publisher_rx: LinkRx,
    /// The router's input: the front layer links each client through it.
    pub router: rumqttd::RouterTx,
}

/// Starts a router for one instance, its two loopback listeners and its
/// publisher link, and waits until each listener answers a CONNECT.
pub async fn start(
    runtime: &BrokerRuntime,
    router_id: usize,
    instance_id: &str,
    mqtt: &crate::config::MqttConfig,
    login: &Login,
) -> Result<EmbeddedBroker, EmbeddedError> {
    let router = Router::new(
        router_id,
        RouterConfig {
            max_connections: mqtt.max_connections_per_instance,
            max_outgoing_packet_count: 200,
            max_segment_size: 4 * 1024 * 1024,
            max_segment_count: 4,
            ..RouterConfig::default()
        },
    );
    let router_tx = router.spawn();
    // The publisher link first, before any connection has come and gone.
    // Building it blocks until the router answers: on the brokers'
    // runtime's blocking pool, not on a worker of either runtime.
    let publisher_id = format!("mqgate-publisher-{}", uuid::Uuid::new_v4().simple());
    let link_router_tx = router_tx.clone();
    let (publisher, publisher_rx, _) = runtime
        .handle()
        .spawn_blocking(move || {
            LinkBuilder::new(&publisher_id, link_router_tx)
                .build()
                .map_err(|e| EmbeddedError::Publisher(e.to_string()))
        })
        .await
        .map_err(|e| EmbeddedError::Publisher(e.to_string()))??;
    let connections = ConnectionSettings {
        // rumqttd's field is a u16 of milliseconds.
        connection_timeout_ms: 10_000,
        max_payload_size: mqtt.max_packet_size,
        max_inflight_count: 100,
        auth: Some(HashMap::from([(
            login.username.clone(),
            login.password.clone(),
        )])),
        external_auth: None,
        dynamic_filters: true,
    };
    let spawn_server = |settings: ServerSettings, protocol| match protocol {
        ProtocolVersion::V311 => {
            runtime
                .handle()
                .spawn(run_server(Server::new(settings, router_tx.clone(), V4)))
        }
        ProtocolVersion::V5 => {
            runtime
                .handle()
                .spawn(run_server(Server::new(settings, router_tx.clone(), V5)))
        }
    };
    let listen =
        |protocol| start_listener(instance_id, protocol, &connections, &spawn_server, login);
    Ok(EmbeddedBroker {
        v4_addr: listen(ProtocolVersion::V311).await?,
        v5_addr: listen(ProtocolVersion::V5).await?,
        publisher,
        publisher_rx,
        router: router_tx,
    })
}

/// Starts one rumqttd listener on a free loopback port and returns its
/// address once it answers. rumqttd binds its own listener and never
/// reports the port, so this picks a free one, hands it over, and tries
/// again (ten times) if something else took it in between.
async fn start_listener(
    instance_id: &str,
    protocol: ProtocolVersion,
    connections: &ConnectionSettings,
    spawn_server: &impl Fn(ServerSettings, ProtocolVersion) -> tokio::task::JoinHandle<String>,
    login: &Login,
) -> Result<SocketAddr, EmbeddedError> {
    let mut attempts_left = 10;
    loop {
        let addr = free_loopback_port().map_err(EmbeddedError::NoPort)?;
        let settings = ServerSettings {
            name: format!("{instance_id}-{protocol:?}"),
            listen: addr,
            tls: None,
            next_connection_delay_ms: 0,
            connections: connections.clone(),
        };
        let server = spawn_server(settings, protocol);
        match wait_until_ready(addr, protocol, login, &server).await {
            Ok(()) => return Ok(addr),
            Err(e) => {
                server.abort();
                attempts_left -= 1;
                if attempts_left == 0 {
                    return Err(e);
                }
            }
        }
    }
}

async fn run_server<P: Protocol + Clone + Send + 'static>(mut server: Server<P>) -> String {
    match server.start(LinkType::Remote).await {
        Ok(()) => "listener stopped".to_string(),
        Err(e) => e.to_string(),
    }
}

fn free_loopback_port() -> std::io::Result<SocketAddr> {
    let listener = StdTcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    listener.local_addr()
}

/// Connects to a fresh rumqttd listener with the internal login until it
/// answers CONNACK (it binds asynchronously), or its task has failed.
async fn wait_until_ready(
    addr: SocketAddr,
    protocol: ProtocolVersion,
    login: &Login,
    server: &tokio::task::JoinHandle<String>,
) -> Result<(), EmbeddedError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if server.is_finished() {
            return Err(EmbeddedError::ListenerStopped { addr });
        }
        match probe(addr, protocol, login).await {
            Ok(()) => return Ok(()),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(EmbeddedError::NotAnswering { addr, why: e });
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn probe(
    addr: SocketAddr,
    protocol: ProtocolVersion,
    login: &Login,
) -> Result<(), ProbeError> {
    let mut stream = TcpStream::connect(addr).await?;
    let connect = rumqttd::protocol::Packet::Connect(
        rumqttd::protocol::Connect {
            keep_alive: 10,
            client_id: format!("mqgate-probe-{}", uuid::Uuid::new_v4().simple()),
            clean_session: true,
        },
        None,
        None,
        None,
        Some(login.clone()),
    );
    let mut out = bytes::BytesMut::new();
    let encoded = match protocol {
        ProtocolVersion::V311 => V4.write(connect, &mut out),
        ProtocolVersion::V5 => V5.write(connect, &mut out),
    };
    encoded.map_err(|e| ProbeError::Encode(e.to_string()))?;
    stream.write_all(&out).await?;
    let answer = async {
        let mut head = [0u8; 2];
        stream.read_exact(&mut head).await?;
        // CONNACK's remaining length fits in one byte (no properties of
        // ours make it longer than 127).
        let mut rest = vec![0u8; usize::from(head[1] & 0x7F)];
        stream.read_exact(&mut rest).await?;
        Ok::<u8, std::io::Error>(head[0])
    };
    let first = tokio::time::timeout(Duration::from_secs(1), answer)
        .await
        .map_err(|_| ProbeError::NoConnack)??;
    if first >> 4 != super::codec::packet_type::CONNACK {
        return Err(ProbeError::NotConnack);
    }
    // Say goodbye properly and wait for rumqttd to close: its link has then
    // told the router, and the router forgets this connection before it
    // sees the next one. (Closing with unread bytes instead makes rumqttd
    // report the connection gone twice; the second report can end a new
    // connection that reused its id.)
    let _ = stream.write_all(&[0xE0, 0x00]).await;
    let mut sink = [0u8; 64];
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while stream.read(&mut sink).await.is_ok_and(|n| n > 0) {}
    })
    .await;
    Ok(())
}
