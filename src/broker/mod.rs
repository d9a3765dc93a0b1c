//! The MQTT side: one embedded rumqttd broker per instance, on loopback only,
//! behind a front layer that owns the public port.
//!
//! rumqttd alone cannot list or kick clients, serves MQTT 3.1.1 and 5 on
//! separate ports, and has no notion of tenants (its router keeps those
//! facts private). So every instance gets its own rumqttd
//! router, which isolates its client ids, topics and messages from every
//! other instance, with a 3.1.1 and a 5 listener on loopback ports; and the
//! front layer ([`front`]) accepts every client, authenticates it, picks its
//! instance and protocol, and relays its frames, keeping the live session
//! registry ([`registry`]) as connections come and go.
//!
//! rumqttd's listeners require a username and password that only this
//! process knows (random per start), and the front layer puts them in every
//! CONNECT it forwards: nothing else on the machine can reach a broker
//! around the front layer.

pub mod codec;
pub mod device_auth;
pub mod front;
pub mod registry;

use crate::config::MqttConfig;
use crate::directory::Directory;
use registry::{ProtocolVersion, SessionRegistry};
use rumqttd::protocol::{Login, Protocol, v4::V4, v5::V5};
use rumqttd::{ConnectionSettings, LinkType, Router, RouterConfig, Server, ServerSettings};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The embedded broker of one instance.
#[derive(Debug)]
pub struct InstanceBroker {
    pub instance_id: String,
    pub account_id: String,
    /// Messages and connections, for the bill.
    pub meter: crate::metering::BrokerMeter,
    /// rumqttd's MQTT 3.1.1 listener (loopback).
    pub v4_addr: SocketAddr,
    /// rumqttd's MQTT 5 listener (loopback).
    pub v5_addr: SocketAddr,
    pub sessions: Arc<SessionRegistry>,
}

impl InstanceBroker {
    /// rumqttd's listener for a protocol version.
    pub fn upstream(&self, protocol: ProtocolVersion) -> SocketAddr {
        match protocol {
            ProtocolVersion::V311 => self.v4_addr,
            ProtocolVersion::V5 => self.v5_addr,
        }
    }
}

/// All instances' brokers, and the credentials the front layer uses to
/// reach them. Instances added by a configuration reload get brokers of
/// their own; rumqttd cannot stop a router, so a removed instance's broker
/// stays, emptied of clients and unreachable (its instance is gone from the
/// directory).
#[derive(Debug)]
pub struct Brokers {
    instances: RwLock<HashMap<String, Arc<InstanceBroker>>>,
    next_router_id: AtomicUsize,
    internal_login: Login,
    mqtt: MqttConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot start the embedded broker of instance {instance}: {reason}")]
    Broker { instance: String, reason: String },
}

impl Brokers {
    /// Starts a rumqttd router and its two loopback listeners for every
    /// instance of the directory, and waits until each answers a CONNECT.
    pub async fn start(directory: &Directory, mqtt: &MqttConfig) -> Result<Brokers, StartError> {
        let brokers = Brokers {
            instances: RwLock::new(HashMap::new()),
            next_router_id: AtomicUsize::new(0),
            internal_login: Login {
                username: "mqgate-front".to_string(),
                password: uuid::Uuid::new_v4().simple().to_string(),
            },
            mqtt: mqtt.clone(),
        };
        brokers.ensure_started(directory).await?;
        Ok(brokers)
    }

    /// Starts brokers for the directory's instances that have none yet;
    /// returns their ids.
    pub async fn ensure_started(&self, directory: &Directory) -> Result<Vec<String>, StartError> {
        let mut missing: Vec<(String, String)> = directory
            .instances()
            .filter(|i| self.instance(&i.id).is_none())
            .map(|i| (i.id.clone(), i.account_id.clone()))
            .collect();
        missing.sort_unstable();
        for (instance_id, account_id) in &missing {
            let router_id = self.next_router_id.fetch_add(1, Ordering::Relaxed);
            let broker = start_instance(
                router_id,
                instance_id,
                account_id,
                &self.mqtt,
                &self.internal_login,
            )
            .await
            .map_err(|reason| StartError::Broker {
                instance: instance_id.clone(),
                reason,
            })?;
            self.write().insert(instance_id.clone(), Arc::new(broker));
        }
        Ok(missing.into_iter().map(|(id, _)| id).collect())
    }

    pub fn instance(&self, instance_id: &str) -> Option<Arc<InstanceBroker>> {
        self.read().get(instance_id).cloned()
    }

    /// Every instance's broker (a snapshot).
    pub fn all(&self) -> Vec<Arc<InstanceBroker>> {
        self.read().values().cloned().collect()
    }

    /// The username and password rumqttd's listeners accept.
    pub fn internal_login(&self) -> &Login {
        &self.internal_login
    }

    /// Ends every live connection (MQTT 5 clients hear why), for shutdown.
    pub async fn disconnect_all(&self, reason_code: u8, reason: &str) {
        for broker in self.all() {
            broker.disconnect_all(reason_code, reason).await;
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<InstanceBroker>>> {
        self.instances.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<InstanceBroker>>> {
        self.instances.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl InstanceBroker {
    /// Ends every connection of this instance, concurrently.
    pub async fn disconnect_all(&self, reason_code: u8, reason: &str) {
        let mut waits = Vec::new();
        for session in self.sessions.all() {
            let reason = reason.to_string();
            waits.push(tokio::spawn(async move {
                session.disconnect(reason_code, &reason).await
            }));
        }
        for wait in waits {
            let _ = wait.await;
        }
    }
}

async fn start_instance(
    router_id: usize,
    instance_id: &str,
    account_id: &str,
    mqtt: &MqttConfig,
    login: &Login,
) -> Result<InstanceBroker, String> {
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
    let mut addrs = [None, None];
    for (slot, protocol) in [ProtocolVersion::V311, ProtocolVersion::V5]
        .into_iter()
        .enumerate()
    {
        let mut last_error = String::new();
        // rumqttd binds its own listener and never reports the port, so
        // pick a free one, hand it over, and try again if something else
        // took it in between.
        for _attempt in 0..10 {
            let addr = free_loopback_port().map_err(|e| e.to_string())?;
            let settings = ServerSettings {
                name: format!("{instance_id}-{protocol:?}"),
                listen: addr,
                tls: None,
                next_connection_delay_ms: 0,
                connections: connections.clone(),
            };
            let server = match protocol {
                ProtocolVersion::V311 => {
                    tokio::spawn(run_server(Server::new(settings, router_tx.clone(), V4)))
                }
                ProtocolVersion::V5 => {
                    tokio::spawn(run_server(Server::new(settings, router_tx.clone(), V5)))
                }
            };
            match wait_until_ready(addr, protocol, login, &server).await {
                Ok(()) => {
                    addrs[slot] = Some(addr);
                    break;
                }
                Err(e) => {
                    server.abort();
                    last_error = e;
                }
            }
        }
        if addrs[slot].is_none() {
            return Err(last_error);
        }
    }
    Ok(InstanceBroker {
        instance_id: instance_id.to_string(),
        account_id: account_id.to_string(),
        meter: crate::metering::BrokerMeter::default(),
        v4_addr: addrs[0].expect("set above"),
        v5_addr: addrs[1].expect("set above"),
        sessions: SessionRegistry::with_default_expiry(std::time::Duration::from_secs(
            mqtt.session_expiry_secs,
        )),
    })
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
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if server.is_finished() {
            return Err(format!("rumqttd listener on {addr} did not start"));
        }
        match probe(addr, protocol, login).await {
            Ok(()) => return Ok(()),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(format!("rumqttd listener on {addr} is not answering: {e}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn probe(addr: SocketAddr, protocol: ProtocolVersion, login: &Login) -> Result<(), String> {
    let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
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
    encoded.map_err(|e| e.to_string())?;
    stream.write_all(&out).await.map_err(|e| e.to_string())?;
    let mut ack = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(1), stream.read_exact(&mut ack[..2]))
        .await
        .map_err(|_| "no CONNACK".to_string())?
        .map_err(|e| e.to_string())?;
    if ack[0] >> 4 != codec::packet_type::CONNACK {
        return Err("not a CONNACK".to_string());
    }
    // Say goodbye properly so that rumqttd does not log an error.
    let _ = stream.write_all(&[0xE0, 0x00]).await;
    Ok(())
}
