//! The session registry of one instance: which clients are connected, what
//! they said in their CONNECT, what they have done since (counters,
//! subscriptions), handles to end or steer each connection, and the
//! persistent sessions of clients that have gone.
//!
//! The front layer registers a session after rumqttd accepted its CONNECT,
//! updates its counters as frames pass, and removes it when the connection
//! ends; the APIs read it. A std `RwLock` guards the map because every
//! critical section is a hash-map operation with no `.await` inside, and
//! reads (status queries) far outnumber writes.

use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

/// MQTT protocol version of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolVersion {
    V311,
    V5,
}

impl ProtocolVersion {
    /// The protocol level byte of CONNECT (`proto_ver` in EMQX's API).
    pub fn level(self) -> u8 {
        match self {
            ProtocolVersion::V311 => 4,
            ProtocolVersion::V5 => 5,
        }
    }
}

/// What a client told us when it connected, and when.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub client_id: String,
    pub username: Option<String>,
    pub ip: IpAddr,
    pub port: u16,
    pub protocol: ProtocolVersion,
    pub keepalive: u16,
    pub clean_start: bool,
    /// MQTT 5 Session Expiry Interval, seconds; `None` for 3.1.1 or absent.
    pub session_expiry_interval: Option<u32>,
    pub connected_at: DateTime<Utc>,
    /// When the session began: the first connection, for a session resumed
    /// with clean start false.
    pub created_at: DateTime<Utc>,
}

impl SessionInfo {
    /// Whether the session outlives the connection, and for how long (None:
    /// it does not).
    pub fn persists_for(&self, default_expiry: Duration) -> Option<Duration> {
        match self.protocol {
            ProtocolVersion::V5 => match self.session_expiry_interval {
                Some(0) | None => None,
                Some(u32::MAX) => Some(Duration::from_secs(u64::MAX / 4)),
                Some(secs) => Some(Duration::from_secs(secs as u64)),
            },
            ProtocolVersion::V311 => (!self.clean_start).then_some(default_expiry),
        }
    }
}

/// Counters of one connection, bumped by the relay as frames pass.
/// `cnt` counts socket reads and writes, `pkt` MQTT packets, `msg` PUBLISH
/// packets, `oct` bytes (EMQX's meanings).
#[derive(Debug, Default)]
pub struct ConnectionStats {
    pub recv_oct: AtomicU64,
    pub recv_cnt: AtomicU64,
    pub recv_pkt: AtomicU64,
    pub recv_msg: AtomicU64,
    pub send_oct: AtomicU64,
    pub send_cnt: AtomicU64,
    pub send_pkt: AtomicU64,
    pub send_msg: AtomicU64,
    /// QoS 1 and 2 messages sent to the client and not yet acknowledged.
    pub inflight: AtomicI64,
    /// When the client last sent anything (ms since the epoch): tells a
    /// keepalive timeout from other ends.
    pub last_recv_ms: AtomicI64,
}

/// A copy of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    pub recv_oct: u64,
    pub recv_cnt: u64,
    pub recv_pkt: u64,
    pub recv_msg: u64,
    pub send_oct: u64,
    pub send_cnt: u64,
    pub send_pkt: u64,
    pub send_msg: u64,
    pub inflight_cnt: u64,
}

impl ConnectionStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            recv_oct: get(&self.recv_oct),
            recv_cnt: get(&self.recv_cnt),
            recv_pkt: get(&self.recv_pkt),
            recv_msg: get(&self.recv_msg),
            send_oct: get(&self.send_oct),
            send_cnt: get(&self.send_cnt),
            send_pkt: get(&self.send_pkt),
            send_msg: get(&self.send_msg),
            inflight_cnt: self.inflight.load(Ordering::Relaxed).max(0) as u64,
        }
    }
}

/// Options of one subscription (MQTT 5 semantics; a 3.1.1 subscription has
/// only its QoS, the rest at their defaults).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SubscriptionOptions {
    pub qos: u8,
    /// No Local.
    pub nl: u8,
    /// Retain As Published.
    pub rap: u8,
    /// Retain Handling (0, 1, 2).
    pub rh: u8,
}

/// A command from the API to the task relaying a connection to the client.
#[derive(Debug)]
pub enum Control {
    /// End the connection: MQTT 5 clients get DISCONNECT with this reason
    /// code first.
    Disconnect { reason_code: u8, reason: String },
    /// Write this complete packet to the client (an acknowledgement the
    /// front layer gives itself).
    Frame(Vec<u8>),
}

/// A packet the API wants sent to the broker on the client's behalf, with
/// the packet id whose acknowledgement answers it.
#[derive(Debug)]
pub struct Injected {
    pub packet_id: u16,
    pub frame: Vec<u8>,
}

/// Why a packet sent on a client's behalf got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    #[error("the client disconnected")]
    Disconnected,
    #[error("the broker did not acknowledge in time")]
    NoAcknowledgement,
    #[error("every packet id of the connection is waiting for an acknowledgement")]
    NoPacketId,
}

/// What an acknowledgement from the broker settles.
#[derive(Debug)]
pub enum Awaited {
    Subscribe(Vec<(String, SubscriptionOptions)>),
    Unsubscribe(Vec<String>),
}

/// Packets waiting for the broker's SUBACK or UNSUBACK, by the packet id
/// the broker sees: the client's own (forwarded to it, under the client's
/// id) and the API's (answered here, never shown to the client).
///
/// The broker sees one packet id space for both, so no two packets waiting
/// may share an id: the API's take ids no waiting packet uses, and a
/// client's packet whose id is taken goes to the broker under a free one,
/// its SUBACK given back the client's id.
#[derive(Debug, Default)]
pub struct PendingAcks {
    /// Broker-side id -> what is awaited, and the id the client used.
    pub own: HashMap<u16, (Awaited, u16)>,
    pub injected: HashMap<u16, (Awaited, oneshot::Sender<Vec<u8>>)>,
    /// Where the search for a free id starts: ids for the API count down
    /// from 65535, away from the ids clients count up from 1.
    next_free: u16,
}

impl PendingAcks {
    fn in_use(&self, packet_id: u16) -> bool {
        self.own.contains_key(&packet_id) || self.injected.contains_key(&packet_id)
    }

    /// A packet id no waiting packet uses; None if all 65,535 are taken.
    pub fn free_id(&mut self) -> Option<u16> {
        for _ in 0..u16::MAX {
            let id = if self.next_free == 0 {
                u16::MAX
            } else {
                self.next_free
            };
            self.next_free = id - 1;
            if !self.in_use(id) {
                return Some(id);
            }
        }
        None
    }

    /// Records a client's SUBSCRIBE sent with `client_id`; returns the id to
    /// send it to the broker under (another one if `client_id` is taken).
    pub fn track_own(&mut self, client_id: u16, awaited: Awaited) -> Option<u16> {
        let broker_id = if self.in_use(client_id) {
            self.free_id()?
        } else {
            client_id
        };
        self.own.insert(broker_id, (awaited, client_id));
        Some(broker_id)
    }
}

/// A live connection in the registry.
#[derive(Debug)]
pub struct Session {
    pub info: SessionInfo,
    /// Unique per connection, so that a connection that was taken over does
    /// not remove its successor when it ends.
    pub connection_id: u64,
    pub stats: ConnectionStats,
    /// Current subscriptions, made by the client or on its behalf.
    pub subscriptions: Mutex<BTreeMap<String, SubscriptionOptions>>,
    pub pending: Mutex<PendingAcks>,
    /// Traced QoS 1 and 2 deliveries the client has not acknowledged yet:
    /// packet id -> MsgId (used only while tracing).
    pub deliveries: Mutex<std::collections::HashMap<u16, u128>>,
    /// What a Token-mode or custom-auth login may publish and subscribe to
    /// (set once, before the relay starts); unset for every other login.
    pub rights: std::sync::OnceLock<super::rights::TopicRights>,
    control: mpsc::Sender<Control>,
    upstream: mpsc::Sender<Injected>,
    /// Set when the connection is ended by the API: the session ends with
    /// it (it is not kept as a disconnected persistent session).
    discard: AtomicBool,
    /// Cancelled to drop the connection at once, without a goodbye.
    hard_stop: CancellationToken,
    /// Closed (sender dropped) when the relay task has ended.
    ended: watch::Receiver<()>,
}

/// How long a kicked connection may take to write its DISCONNECT before its
/// sockets are dropped regardless.
const KICK_GRACE: Duration = Duration::from_secs(2);
/// How long the API waits for the broker to acknowledge a subscription.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(5);

impl Session {
    /// Ends the connection and its session: asks the relay to say goodbye
    /// (MQTT 5 DISCONNECT with `reason_code`), and drops it outright if that
    /// takes longer than `KICK_GRACE` (2 s). Returns once the connection is gone.
    pub async fn disconnect(&self, reason_code: u8, reason: &str) {
        self.discard.store(true, Ordering::Relaxed);
        self.end(reason_code, reason).await;
    }

    /// Ends the connection; a persistent session stays (takeover, shutdown).
    pub async fn end(&self, reason_code: u8, reason: &str) {
        let _ = self.control.try_send(Control::Disconnect {
            reason_code,
            reason: reason.to_string(),
        });
        let mut ended = self.ended.clone();
        if tokio::time::timeout(KICK_GRACE, ended.changed())
            .await
            .is_err()
        {
            self.hard_stop.cancel();
            let _ = ended.changed().await;
        }
    }

    /// Asks the relay to end the connection (MQTT 5: DISCONNECT with
    /// `reason_code` first) without waiting for it: for the relay itself.
    /// False if the request could not be queued (the relay's command queue
    /// is full, or the connection is gone).
    pub fn request_disconnect(&self, reason_code: u8, reason: &str) -> bool {
        self.control
            .try_send(Control::Disconnect {
                reason_code,
                reason: reason.to_string(),
            })
            .is_ok()
    }

    /// Writes a complete packet to the client, between the frames the relay
    /// forwards. False if the connection is gone.
    pub async fn tell_client(&self, frame: Vec<u8>) -> bool {
        self.control.send(Control::Frame(frame)).await.is_ok()
    }

    /// Registers a packet the relay or the API sends to the broker on the
    /// client's behalf (its acknowledgement is then not forwarded to the
    /// client): returns the packet id to send it with, free of every packet
    /// waiting for an acknowledgement, and where the acknowledgement's
    /// codes arrive.
    pub fn expect_ack(
        &self,
        awaited: Awaited,
    ) -> Result<(u16, oneshot::Receiver<Vec<u8>>), InjectError> {
        let (reply, answer) = oneshot::channel();
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let packet_id = pending.free_id().ok_or(InjectError::NoPacketId)?;
        pending.injected.insert(packet_id, (awaited, reply));
        Ok((packet_id, answer))
    }

    /// Sends a frame the API built (with the packet id [`Session::expect_ack`]
    /// gave) to the broker, and waits for the acknowledgement's return codes.
    pub async fn inject(
        &self,
        packet_id: u16,
        frame: Vec<u8>,
        answer: oneshot::Receiver<Vec<u8>>,
    ) -> Result<Vec<u8>, InjectError> {
        if self
            .upstream
            .send(Injected { packet_id, frame })
            .await
            .is_err()
        {
            self.forget_injected(packet_id);
            return Err(InjectError::Disconnected);
        }
        match tokio::time::timeout(ACK_TIMEOUT, answer).await {
            Ok(Ok(codes)) => Ok(codes),
            Ok(Err(_)) => Err(InjectError::Disconnected),
            Err(_) => {
                self.forget_injected(packet_id);
                Err(InjectError::NoAcknowledgement)
            }
        }
    }

    pub fn forget_injected(&self, packet_id: u16) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .injected
            .remove(&packet_id);
    }

    /// The filters among `filters` this session is subscribed to, each once,
    /// in the order given.
    pub fn subscribed_among(&self, filters: &[String]) -> Vec<String> {
        let subscriptions = self.subscriptions.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<String> = Vec::new();
        for filter in filters {
            if subscriptions.contains_key(filter) && !out.contains(filter) {
                out.push(filter.clone());
            }
        }
        out
    }

    /// The current subscriptions (a copy).
    pub fn subscriptions(&self) -> BTreeMap<String, SubscriptionOptions> {
        self.subscriptions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The relay task's side of a session: commands to obey, packets to
/// inject, a stop signal, and a guard that tells waiters and the registry
/// when the task is gone.
pub struct SessionHandle {
    pub control: mpsc::Receiver<Control>,
    pub upstream: mpsc::Receiver<Injected>,
    pub hard_stop: CancellationToken,
    pub guard: SessionGuard,
}

/// Dropped when the relay task ends (normally, by error, or aborted):
/// removes the session from the registry (keeping it as disconnected if it
/// persists) and wakes whoever waits for it.
pub struct SessionGuard {
    registry: Arc<SessionRegistry>,
    session: Arc<Session>,
    _ended: watch::Sender<()>,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.registry.remove(&self.session);
    }
}

/// A persistent session whose client has disconnected.
#[derive(Debug, Clone)]
pub struct Disconnected {
    pub info: SessionInfo,
    pub stats: StatsSnapshot,
    pub subscriptions: BTreeMap<String, SubscriptionOptions>,
    pub disconnected_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// What the APIs show of a client, connected or not.
#[derive(Debug, Clone)]
pub struct ClientView {
    pub info: SessionInfo,
    pub connected: bool,
    pub disconnected_at: Option<DateTime<Utc>>,
    pub stats: StatsSnapshot,
    pub subscriptions: BTreeMap<String, SubscriptionOptions>,
}

/// A device's session began or ended on this node: what a cluster's
/// session directory is kept from ([`crate::cluster`]), in the order the
/// registry saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceEvent {
    pub instance_id: Arc<str>,
    pub client_id: String,
    /// Which of the client's connections: a late end of an older one must
    /// not remove a newer one.
    pub connection_id: u64,
    pub online: bool,
}

/// Where a registry tells its sessions' beginnings and ends.
pub type PresenceSink = mpsc::UnboundedSender<PresenceEvent>;

/// The sessions of one instance, by client id.
#[derive(Debug)]
pub struct SessionRegistry {
    /// In a cluster: this instance's id and where presence is told.
    presence: Option<(Arc<str>, PresenceSink)>,
    sessions: RwLock<HashMap<String, Arc<Session>>>,
    disconnected: Mutex<HashMap<String, Disconnected>>,
    /// From 1: a trace's ChannelId 0 is a connection that was refused.
    next_connection_id: AtomicU64,
    /// How long a 3.1.1 session with clean session false outlives its
    /// connection (3.1.1 has no expiry of its own).
    default_expiry: Duration,
    /// Client ids whose CONNECT is being admitted, each with the lock its
    /// admissions take turns on ([`SessionRegistry::admission_turn`]).
    admitting: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// The turn of one CONNECT to be admitted under its client id: from the
/// takeover of an older connection to the registration of the new one, no
/// other CONNECT with the same client id gets in between.
pub struct AdmissionTurn {
    registry: Arc<SessionRegistry>,
    client_id: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for AdmissionTurn {
    fn drop(&mut self) {
        let Some(guard) = self.guard.take() else {
            return;
        };
        let lock = tokio::sync::OwnedMutexGuard::mutex(&guard).clone();
        drop(guard);
        let mut admitting = self
            .registry
            .admitting
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // The map's and ours: nobody else waits for a turn.
        if Arc::strong_count(&lock) == 2 {
            admitting.remove(&self.client_id);
        }
    }
}

impl Default for SessionRegistry {
    fn default() -> Self {
        SessionRegistry {
            presence: None,
            admitting: Mutex::default(),
            sessions: RwLock::default(),
            disconnected: Mutex::default(),
            next_connection_id: AtomicU64::new(1),
            default_expiry: Duration::from_secs(7200),
        }
    }
}

impl SessionRegistry {
    pub fn new() -> Arc<SessionRegistry> {
        Arc::new(SessionRegistry::default())
    }

    pub fn with_default_expiry(default_expiry: Duration) -> Arc<SessionRegistry> {
        Arc::new(SessionRegistry {
            default_expiry,
            ..SessionRegistry::default()
        })
    }

    /// An instance's registry that tells `presence`, if given, of every
    /// session that begins or ends (a cluster's session directory).
    pub fn for_instance(
        instance_id: &str,
        default_expiry: Duration,
        presence: Option<PresenceSink>,
    ) -> Arc<SessionRegistry> {
        Arc::new(SessionRegistry {
            default_expiry,
            presence: presence.map(|sink| (Arc::from(instance_id), sink)),
            ..SessionRegistry::default()
        })
    }

    fn tell_presence(&self, client_id: &str, connection_id: u64, online: bool) {
        if let Some((instance_id, sink)) = &self.presence {
            // Ends only with the cluster's task, at shutdown.
            let _ = sink.send(PresenceEvent {
                instance_id: instance_id.clone(),
                client_id: client_id.to_string(),
                connection_id,
                online,
            });
        }
    }

    /// Waits for this CONNECT's turn under `client_id`: two CONNECTs with
    /// the same client id at the same moment would otherwise both find no
    /// session to take over, and the second registration would replace the
    /// first without ending it (a connection no API could see or kick).
    /// Hold it from the takeover check to [`SessionRegistry::register`].
    pub async fn admission_turn(self: &Arc<Self>, client_id: &str) -> AdmissionTurn {
        let lock = self
            .admitting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(client_id.to_string())
            .or_default()
            .clone();
        AdmissionTurn {
            registry: self.clone(),
            client_id: client_id.to_string(),
            guard: Some(lock.lock_owned().await),
        }
    }

    /// Registers a connected session, replacing an older one with the same
    /// client id (which the caller has already taken over). A session
    /// resumed with clean start false keeps its creation time and
    /// subscriptions.
    pub fn register(self: &Arc<Self>, mut info: SessionInfo) -> (Arc<Session>, SessionHandle) {
        let connection_id = self.next_connection_id.fetch_add(1, Ordering::Relaxed);
        let (control_tx, control_rx) = mpsc::channel(16);
        let (upstream_tx, upstream_rx) = mpsc::channel(16);
        let (ended_tx, ended_rx) = watch::channel(());
        let hard_stop = CancellationToken::new();
        let previous = self.disconnected_lock().remove(&info.client_id);
        let mut subscriptions = BTreeMap::new();
        if let Some(previous) = previous.filter(|p| !info.clean_start && p.expires_at > Utc::now())
        {
            info.created_at = previous.info.created_at;
            subscriptions = previous.subscriptions;
        }
        let client_id = info.client_id.clone();
        let session = Arc::new(Session {
            info,
            connection_id,
            stats: ConnectionStats::default(),
            subscriptions: Mutex::new(subscriptions),
            pending: Mutex::default(),
            deliveries: Mutex::default(),
            rights: std::sync::OnceLock::new(),
            control: control_tx,
            upstream: upstream_tx,
            discard: AtomicBool::new(false),
            hard_stop: hard_stop.clone(),
            ended: ended_rx,
        });
        self.write().insert(client_id.clone(), session.clone());
        self.tell_presence(&client_id, connection_id, true);
        let handle = SessionHandle {
            control: control_rx,
            upstream: upstream_rx,
            hard_stop,
            guard: SessionGuard {
                registry: self.clone(),
                session: session.clone(),
                _ended: ended_tx,
            },
        };
        (session, handle)
    }

    /// The live session of `client_id`, if connected.
    pub fn get(&self, client_id: &str) -> Option<Arc<Session>> {
        self.read().get(client_id).cloned()
    }

    pub fn is_online(&self, client_id: &str) -> bool {
        self.read().contains_key(client_id)
    }

    /// Connected clients.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every live session (a snapshot).
    pub fn all(&self) -> Vec<Arc<Session>> {
        self.read().values().cloned().collect()
    }

    /// Every client the APIs can show: connected ones, and disconnected
    /// persistent sessions that have not expired.
    pub fn views(&self) -> Vec<ClientView> {
        let mut views: Vec<ClientView> = self.all().iter().map(|s| view_of(s)).collect();
        let now = Utc::now();
        let mut disconnected = self.disconnected_lock();
        disconnected.retain(|_, d| d.expires_at > now);
        views.extend(disconnected.values().map(|d| ClientView {
            info: d.info.clone(),
            connected: false,
            disconnected_at: Some(d.disconnected_at),
            stats: d.stats,
            subscriptions: d.subscriptions.clone(),
        }));
        views
    }

    /// One client, connected or a disconnected persistent session.
    pub fn view(&self, client_id: &str) -> Option<ClientView> {
        if let Some(session) = self.get(client_id) {
            return Some(view_of(&session));
        }
        let now = Utc::now();
        let mut disconnected = self.disconnected_lock();
        match disconnected.get(client_id) {
            Some(d) if d.expires_at > now => Some(ClientView {
                info: d.info.clone(),
                connected: false,
                disconnected_at: Some(d.disconnected_at),
                stats: d.stats,
                subscriptions: d.subscriptions.clone(),
            }),
            Some(_) => {
                disconnected.remove(client_id);
                None
            }
            None => None,
        }
    }

    /// Ends the connection and session of `client_id` (a disconnected
    /// persistent session is discarded too); `false` if there was neither.
    pub async fn disconnect(&self, client_id: &str, reason_code: u8, reason: &str) -> bool {
        let discarded = self.disconnected_lock().remove(client_id).is_some();
        match self.get(client_id) {
            Some(session) => {
                session.disconnect(reason_code, reason).await;
                true
            }
            None => discarded,
        }
    }

    fn remove(&self, session: &Session) {
        let mut sessions = self.write();
        if sessions
            .get(&session.info.client_id)
            .is_some_and(|s| s.connection_id == session.connection_id)
        {
            sessions.remove(&session.info.client_id);
            drop(sessions);
            self.tell_presence(&session.info.client_id, session.connection_id, false);
            if session.discard.load(Ordering::Relaxed) {
                return;
            }
            if let Some(lifetime) = session.info.persists_for(self.default_expiry) {
                let now = Utc::now();
                let expires_at = now
                    .checked_add_signed(
                        chrono::Duration::from_std(lifetime).unwrap_or(chrono::Duration::MAX),
                    )
                    .unwrap_or(DateTime::<Utc>::MAX_UTC);
                self.disconnected_lock().insert(
                    session.info.client_id.clone(),
                    Disconnected {
                        info: session.info.clone(),
                        stats: session.stats.snapshot(),
                        subscriptions: session.subscriptions(),
                        disconnected_at: now,
                        expires_at,
                    },
                );
            }
        }
    }

    // A panic while holding a lock cannot leave the map half-updated (every
    // critical section is a single map operation), so a poisoned lock is
    // still safe to use.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Session>>> {
        self.sessions.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Session>>> {
        self.sessions.write().unwrap_or_else(|e| e.into_inner())
    }

    fn disconnected_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Disconnected>> {
        self.disconnected.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn view_of(session: &Session) -> ClientView {
    ClientView {
        info: session.info.clone(),
        connected: true,
        disconnected_at: None,
        stats: session.stats.snapshot(),
        subscriptions: session.subscriptions(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(client_id: &str, clean_start: bool) -> SessionInfo {
        SessionInfo {
            client_id: client_id.into(),
            username: None,
            ip: "127.0.0.1".parse().unwrap(),
            port: 1,
            protocol: ProtocolVersion::V311,
            keepalive: 60,
            clean_start,
            session_expiry_interval: None,
            connected_at: Utc::now(),
            created_at: Utc::now(),
        }
    }

    #[tokio::test]
    async fn a_session_leaves_when_its_guard_drops() {
        let registry = SessionRegistry::new();
        let (_, handle) = registry.register(info("a", true));
        assert!(registry.is_online("a"));
        drop(handle);
        assert!(!registry.is_online("a"));
        assert!(registry.view("a").is_none());
    }

    #[tokio::test]
    async fn a_persistent_session_stays_visible_as_disconnected() {
        let registry = SessionRegistry::new();
        let (session, handle) = registry.register(info("p", false));
        session.subscriptions.lock().unwrap().insert(
            "t/#".into(),
            SubscriptionOptions {
                qos: 1,
                nl: 0,
                rap: 0,
                rh: 0,
            },
        );
        let created = session.info.created_at;
        drop(handle);
        let view = registry.view("p").unwrap();
        assert!(!view.connected && view.disconnected_at.is_some());
        assert_eq!(view.subscriptions.len(), 1);
        assert!(!registry.is_online("p"));
        // Resumed: same creation time and subscriptions.
        let (resumed, _handle) = registry.register(info("p", false));
        assert_eq!(resumed.info.created_at, created);
        assert_eq!(resumed.subscriptions().len(), 1);
        assert!(registry.view("p").unwrap().connected);
    }

    #[tokio::test]
    async fn an_old_connection_does_not_remove_its_successor() {
        let registry = SessionRegistry::new();
        let (_, old) = registry.register(info("a", true));
        let (new_session, _new) = registry.register(info("a", true));
        drop(old);
        assert_eq!(
            registry.get("a").unwrap().connection_id,
            new_session.connection_id
        );
    }

    #[tokio::test]
    async fn disconnect_asks_first_then_waits_for_the_end_and_discards_the_session() {
        let registry = SessionRegistry::new();
        let (_, mut handle) = registry.register(info("a", false));
        let relay = tokio::spawn(async move {
            let Some(Control::Disconnect { reason_code, .. }) = handle.control.recv().await else {
                panic!("no command")
            };
            drop(handle);
            reason_code
        });
        assert!(registry.disconnect("a", 0x98, "test").await);
        assert_eq!(relay.await.unwrap(), 0x98);
        assert!(!registry.is_online("a"));
        assert!(registry.view("a").is_none(), "a kicked session is not kept");
        assert!(!registry.disconnect("a", 0x98, "test").await);
    }

    #[tokio::test(start_paused = true)]
    async fn disconnect_stops_a_relay_that_does_not_answer() {
        let registry = SessionRegistry::new();
        let (_, handle) = registry.register(info("a", true));
        let stuck = tokio::spawn(async move {
            // Ignores commands, like a relay blocked writing to a client
            // that does not read; only the hard stop ends it.
            handle.hard_stop.cancelled().await;
            drop(handle);
        });
        registry.disconnect("a", 0x98, "test").await;
        stuck.await.unwrap();
        assert!(!registry.is_online("a"));
    }
}
