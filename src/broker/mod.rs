//! The MQTT side: one embedded rumqttd router per instance, behind a front
//! layer that owns the public ports, and the API the rest of mqgate drives
//! them with ([`InstanceBroker`]: `kick`, `subscribe_for`,
//! `unsubscribe_for`, `publish`, online status).
//!
//! rumqttd alone cannot list or kick clients, serves MQTT 3.1.1 and 5 on
//! separate ports, and has no notion of tenants (its router keeps those
//! facts private). So every instance gets its own rumqttd router, which
//! isolates its client ids, topics and messages from every other instance
//! ([`embedded`], on a runtime of their own); and the front layer
//! ([`front`]) accepts every client, authenticates it, picks its instance
//! and protocol, and links it to that instance's router in process (no
//! socket between them: one descriptor per client), keeping the live
//! session registry ([`registry`]) as connections come and go. Nothing
//! reaches a router but through the front layer.

pub mod codec;
pub mod device_auth;
pub mod embedded;
pub mod front;
pub mod registry;
pub mod rights;
pub mod status_cache;
pub mod tokens;

use crate::config::MqttConfig;
use crate::directory::Directory;
use embedded::BrokerRuntime;
use registry::{Awaited, InjectError, ProtocolVersion, SessionRegistry, SubscriptionOptions};
use rumqttd::local::{LinkRx, LinkTx};
use status_cache::StatusCache;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// MQTT 5 DISCONNECT reason codes mqgate sends.
pub mod reason {
    pub const SERVER_SHUTTING_DOWN: u8 = 0x8B;
    pub const SESSION_TAKEN_OVER: u8 = 0x8E;
    pub const ADMINISTRATIVE_ACTION: u8 = 0x98;
    /// The instance moved to another node: connect again.
    pub const USE_ANOTHER_SERVER: u8 = 0x9C;
}

/// Where an instance's broker runs, in a cluster: each instance is served
/// by one node at a time, and the others relay its devices there
/// (`crate::cluster::placement` decides; the front layer asks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// This node serves the instance.
    Here,
    /// Node `node` does; it takes relayed connections at `relay`
    /// (`host:port`).
    There { node: String, relay: String },
    /// No node holds the instance just now (its node died and no other has
    /// taken it over yet): a device should connect again shortly.
    Unplaced,
}

/// What the front layer asks of a cluster: where an instance is served.
/// Answered from memory, without a round trip.
pub trait Placement: Send + Sync + 'static {
    fn place(&self, instance_id: &str) -> Place;
}

/// Why a broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot start the embedded brokers' runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot start the embedded broker of instance {instance}: {reason}")]
    Broker {
        instance: String,
        reason: embedded::EmbeddedError,
    },
}

/// Why the broker could not do what an API asked of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    #[error("the client is not connected")]
    NotConnected,
    #[error("the broker did not acknowledge in time")]
    NoAcknowledgement,
    #[error("\"{0}\" is not a topic a message can be published to")]
    InvalidTopic(String),
    #[error("the packet could not be encoded: {0}")]
    Encode(String),
    #[error("the embedded broker is not available: {0}")]
    Unavailable(String),
}

impl From<InjectError> for BrokerError {
    fn from(e: InjectError) -> BrokerError {
        match e {
            InjectError::Disconnected => BrokerError::NotConnected,
            InjectError::NoAcknowledgement => BrokerError::NoAcknowledgement,
            InjectError::NoPacketId => BrokerError::Unavailable(e.to_string()),
        }
    }
}

/// The embedded broker of one instance, and what the APIs may ask of it.
pub struct InstanceBroker {
    pub instance_id: String,
    pub account_id: String,
    /// Messages and connections, for the bill.
    pub meter: crate::metering::BrokerMeter,
    pub sessions: Arc<SessionRegistry>,
    status_cache: Arc<StatusCache>,
    /// The router link mqgate publishes through (a blocking send: used on
    /// the brokers' runtime's blocking pool).
    publisher: Arc<Mutex<LinkTx>>,
    _publisher_rx: LinkRx,
    runtime: tokio::runtime::Handle,
    /// The router's input: each client's connection links to it.
    pub(crate) router: rumqttd::RouterTx,
    /// Wills waiting for their delay after their connection ended.
    pub(crate) wills: Arc<front::PendingWills>,
    /// Bumped when a token of the instance is revoked: the connections
    /// holding tokens look at theirs again.
    rights_events: tokio::sync::watch::Sender<()>,
}

impl std::fmt::Debug for InstanceBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceBroker")
            .field("instance_id", &self.instance_id)
            .field("account_id", &self.account_id)
            .finish_non_exhaustive()
    }
}

impl InstanceBroker {
    /// Tells every connection bound by tokens or custom-auth rules to look
    /// at its rights again (a token was revoked, a rule changed).
    pub fn rights_changed(&self) {
        self.rights_events.send_replace(());
    }

    /// Where a connection bound by tokens or rules hears of changes.
    pub fn rights_events(&self) -> tokio::sync::watch::Receiver<()> {
        self.rights_events.subscribe()
    }

    /// Whether a client is connected now (the live registry).
    pub fn is_online(&self, client_id: &str) -> bool {
        self.sessions.is_online(client_id)
    }

    /// Whether a client is connected, as the status cache last saw it (at
    /// most `http.batch_status_ttl_ms` old).
    pub fn is_online_cached(&self, client_id: &str) -> bool {
        self.status_cache
            .online(&self.instance_id, &self.sessions, client_id)
    }

    /// The protocol a connected client speaks, `None` if it is not
    /// connected.
    pub fn client_protocol(&self, client_id: &str) -> Option<ProtocolVersion> {
        self.sessions.get(client_id).map(|s| s.info.protocol)
    }

    /// Ends a client's connection and session (MQTT 5 clients get
    /// DISCONNECT 0x98, administrative action, with `why` as the reason
    /// string), and forgets its cached status so that the batch view does
    /// not go on reporting it. Returns once the connection is gone; `false`
    /// if there was neither a connection nor a kept session.
    pub async fn kick(&self, client_id: &str, why: &str) -> bool {
        let kicked = self
            .sessions
            .disconnect(client_id, reason::ADMINISTRATIVE_ACTION, why)
            .await;
        self.status_cache.forget(&self.instance_id, client_id);
        kicked
    }

    /// Ends every connection of this instance and its session,
    /// concurrently (shutdown, instance removed).
    pub async fn disconnect_all(&self, reason_code: u8, why: &str) {
        let mut waits = Vec::new();
        for session in self.sessions.all() {
            let why = why.to_string();
            let status_cache = self.status_cache.clone();
            let instance_id = self.instance_id.clone();
            waits.push(tokio::spawn(async move {
                session.disconnect(reason_code, &why).await;
                status_cache.forget(&instance_id, &session.info.client_id);
            }));
        }
        for wait in waits {
            let _ = wait.await;
        }
    }

    /// Subscribes a connected client to `filters`, as if it had sent the
    /// SUBSCRIBE itself (on its connection, with a packet id of ours; the
    /// broker's SUBACK is kept from the client). Returns the SUBACK's
    /// return codes, one per filter (below 0x80: granted, with that QoS).
    pub async fn subscribe_for(
        &self,
        client_id: &str,
        filters: Vec<(String, SubscriptionOptions)>,
    ) -> Result<Vec<u8>, BrokerError> {
        use rumqttd::protocol::{Filter, Packet, QoS, RetainForwardRule, Subscribe};
        let session = self
            .sessions
            .get(client_id)
            .ok_or(BrokerError::NotConnected)?;
        let wire_filters: Vec<Filter> = filters
            .iter()
            .map(|(topic, o)| Filter {
                path: topic.clone(),
                qos: rumqttd::protocol::qos(o.qos).unwrap_or(QoS::AtMostOnce),
                nolocal: o.nl == 1,
                preserve_retain: o.rap == 1,
                retain_forward_rule: match o.rh {
                    1 => RetainForwardRule::OnNewSubscribe,
                    2 => RetainForwardRule::Never,
                    _ => RetainForwardRule::OnEverySubscribe,
                },
            })
            .collect();
        let (packet_id, answer) = session.expect_ack(Awaited::Subscribe(filters))?;
        let packet = Packet::Subscribe(
            Subscribe {
                pkid: packet_id,
                filters: wire_filters,
            },
            None,
        );
        let frame = match encode(session.info.protocol, packet) {
            Ok(frame) => frame,
            Err(e) => {
                session.forget_injected(packet_id);
                return Err(e);
            }
        };
        Ok(session.inject(packet_id, frame, answer).await?)
    }

    /// Unsubscribes a connected client from `topics`, as if it had sent the
    /// UNSUBSCRIBE itself.
    pub async fn unsubscribe_for(
        &self,
        client_id: &str,
        topics: Vec<String>,
    ) -> Result<(), BrokerError> {
        let session = self
            .sessions
            .get(client_id)
            .ok_or(BrokerError::NotConnected)?;
        // One UNSUBSCRIBE per subscribed filter: rumqttd answers nothing for
        // a filter that is not subscribed, and one UNSUBACK per filter
        // removed, all with the same packet id. A filter that is not
        // subscribed is already what the caller wants.
        for filter in session.subscribed_among(&topics) {
            let (packet_id, answer) =
                session.expect_ack(Awaited::Unsubscribe(vec![filter.clone()]))?;
            let frame = match encode(session.info.protocol, unsubscribe_packet(packet_id, filter)) {
                Ok(frame) => frame,
                Err(e) => {
                    session.forget_injected(packet_id);
                    return Err(e);
                }
            };
            session.inject(packet_id, frame, answer).await?;
        }
        Ok(())
    }

    /// Publishes a message to the instance's subscribers, through the
    /// router's in-process link. The payload's bytes are delivered as they
    /// are; each subscriber gets it at its subscription's QoS (rumqttd
    /// delivers at the subscription's QoS). Returns once the router has the
    /// message.
    pub async fn publish(&self, topic: &str, payload: bytes::Bytes) -> Result<(), BrokerError> {
        // MQTT: a topic name has at least one character and no wildcard.
        if topic.is_empty() || !rumqttd::protocol::valid_topic(topic) {
            return Err(BrokerError::InvalidTopic(topic.to_string()));
        }
        let publisher = self.publisher.clone();
        let topic = bytes::Bytes::copy_from_slice(topic.as_bytes());
        // The send blocks while the router's queue is full: that wait is
        // the broker's backpressure, taken on the brokers' blocking pool.
        self.runtime
            .spawn_blocking(move || {
                publisher
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .publish(topic, payload)
                    .map(drop)
                    .map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| BrokerError::Unavailable(e.to_string()))?
            .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        Ok(())
    }
}

/// An UNSUBSCRIBE of one filter.
pub(super) fn unsubscribe_packet(packet_id: u16, filter: String) -> rumqttd::protocol::Packet {
    rumqttd::protocol::Packet::Unsubscribe(
        rumqttd::protocol::Unsubscribe {
            pkid: packet_id,
            filters: vec![filter],
        },
        None,
    )
}

/// A packet in the wire format of `protocol`.
pub(super) fn encode(
    protocol: ProtocolVersion,
    packet: rumqttd::protocol::Packet,
) -> Result<Vec<u8>, BrokerError> {
    use rumqttd::protocol::{Protocol, v4::V4, v5::V5};
    let mut frame = bytes::BytesMut::new();
    let encoded = match protocol {
        ProtocolVersion::V311 => V4.write(packet, &mut frame),
        ProtocolVersion::V5 => V5.write(packet, &mut frame),
    };
    encoded.map_err(|e| BrokerError::Encode(e.to_string()))?;
    Ok(frame.to_vec())
}

/// All instances' brokers, the runtime they run on, and the credentials the
/// front layer uses to reach them. Instances added by a configuration
/// reload get brokers of their own; rumqttd cannot stop a router, so a
/// removed instance's broker stays, emptied of clients and unreachable (its
/// instance is gone from the directory).
#[derive(Debug)]
pub struct Brokers {
    instances: RwLock<HashMap<String, Arc<InstanceBroker>>>,
    next_router_id: AtomicUsize,
    mqtt: MqttConfig,
    status_cache: Arc<StatusCache>,
    runtime: BrokerRuntime,
    /// In a cluster: where each instance's registry tells of sessions.
    presence: Option<registry::PresenceSink>,
}

/// Most entries the status cache holds, across instances.
const STATUS_CACHE_CAPACITY: u64 = 1_000_000;

impl Brokers {
    /// Starts a rumqttd router and its publisher link for every instance of
    /// the directory.
    /// `status_ttl` is how long the batch view may keep a status (zero:
    /// never).
    /// `presence`: in a cluster, where sessions that begin and end are told.
    pub async fn start(
        directory: &Directory,
        mqtt: &MqttConfig,
        status_ttl: std::time::Duration,
        presence: Option<registry::PresenceSink>,
    ) -> Result<Brokers, StartError> {
        let brokers = Brokers {
            presence,
            instances: RwLock::new(HashMap::new()),
            next_router_id: AtomicUsize::new(0),
            mqtt: mqtt.clone(),
            status_cache: Arc::new(StatusCache::new(status_ttl, STATUS_CACHE_CAPACITY)),
            runtime: BrokerRuntime::start().map_err(StartError::Runtime)?,
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
            // On the brokers' runtime: the router's answer comes back there.
            let mqtt = self.mqtt.clone();
            let started = self
                .runtime
                .handle()
                .spawn(async move { embedded::start(router_id, &mqtt).await })
                .await
                .map_err(|e| embedded::EmbeddedError::Publisher(e.to_string()))
                .and_then(|started| started)
                .map_err(|reason| StartError::Broker {
                    instance: instance_id.clone(),
                    reason,
                })?;
            let broker = InstanceBroker {
                instance_id: instance_id.clone(),
                account_id: account_id.clone(),
                meter: crate::metering::BrokerMeter::default(),
                sessions: SessionRegistry::for_instance(
                    instance_id,
                    std::time::Duration::from_secs(self.mqtt.session_expiry_secs),
                    self.presence.clone(),
                ),
                status_cache: self.status_cache.clone(),
                publisher: Arc::new(Mutex::new(started.publisher)),
                _publisher_rx: started.publisher_rx,
                runtime: self.runtime.handle().clone(),
                router: started.router,
                wills: Arc::default(),
                rights_events: tokio::sync::watch::channel(()).0,
            };
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

    /// (hits, misses) of the batch view's status cache since start.
    pub fn status_cache_hits(&self) -> (u64, u64) {
        self.status_cache.hit_counts()
    }

    /// Ends every live connection (MQTT 5 clients hear why), for shutdown.
    pub async fn disconnect_all(&self, reason_code: u8, why: &str) {
        for broker in self.all() {
            broker.disconnect_all(reason_code, why).await;
        }
    }

    /// Runs `task` on the MQTT side's runtime (the front layer's accept
    /// loop, so that it and every connection's relay run beside rumqttd).
    pub fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.runtime.handle().spawn(task)
    }

    /// Makes the MQTT side's runtime the current one until the guard drops
    /// (to register a socket with it).
    pub fn enter(&self) -> tokio::runtime::EnterGuard<'_> {
        self.runtime.handle().enter()
    }

    /// Stops the MQTT side's runtime (see [`embedded`]); call once every
    /// connection is closed.
    pub fn shutdown(&self) {
        self.runtime.shutdown();
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<InstanceBroker>>> {
        self.instances.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<InstanceBroker>>> {
        self.instances.write().unwrap_or_else(|e| e.into_inner())
    }
}
