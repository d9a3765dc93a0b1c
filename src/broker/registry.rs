//! The live session registry of one instance: which clients are connected,
//! what they said in their CONNECT, and a handle to end each connection.
//!
//! The front layer registers a session after rumqttd accepted its CONNECT and
//! removes it when the connection ends; the API reads it. A std `RwLock`
//! guards the map because every critical section is a hash-map operation
//! with no `.await` inside, and reads (status queries) far outnumber writes.

use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
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
}

/// A command from the API to the task relaying a connection.
#[derive(Debug)]
pub enum Control {
    /// End the connection: MQTT 5 clients get DISCONNECT with this reason
    /// code first.
    Disconnect { reason_code: u8, reason: String },
}

/// A live connection in the registry.
#[derive(Debug)]
pub struct Session {
    pub info: SessionInfo,
    /// Unique per connection, so that a connection that was taken over does
    /// not remove its successor when it ends.
    pub connection_id: u64,
    control: mpsc::Sender<Control>,
    /// Cancelled to drop the connection at once, without a goodbye.
    hard_stop: CancellationToken,
    /// Closed (sender dropped) when the relay task has ended.
    ended: watch::Receiver<()>,
}

/// How long a kicked connection may take to write its DISCONNECT before its
/// sockets are dropped regardless.
const KICK_GRACE: Duration = Duration::from_secs(2);

impl Session {
    /// Ends the connection: asks the relay to say goodbye (MQTT 5 DISCONNECT
    /// with `reason_code`), and drops it outright if that takes longer than
    /// [`KICK_GRACE`]. Returns once the connection is gone.
    pub async fn disconnect(&self, reason_code: u8, reason: &str) {
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
}

/// The relay task's side of a session: commands to obey, a stop signal, and
/// a guard that tells waiters and the registry when the task is gone.
pub struct SessionHandle {
    pub control: mpsc::Receiver<Control>,
    pub hard_stop: CancellationToken,
    pub guard: SessionGuard,
}

/// Dropped when the relay task ends (normally, by error, or aborted):
/// removes the session from the registry and wakes whoever waits for it.
pub struct SessionGuard {
    registry: Arc<SessionRegistry>,
    client_id: String,
    connection_id: u64,
    _ended: watch::Sender<()>,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.registry.remove(&self.client_id, self.connection_id);
    }
}

/// The sessions of one instance, by client id.
#[derive(Debug, Default)]
pub struct SessionRegistry {
    sessions: RwLock<HashMap<String, Arc<Session>>>,
    next_connection_id: AtomicU64,
}

impl SessionRegistry {
    pub fn new() -> Arc<SessionRegistry> {
        Arc::new(SessionRegistry::default())
    }

    /// Registers a connected session, replacing an older one with the same
    /// client id (which the caller has already taken over).
    pub fn register(self: &Arc<Self>, info: SessionInfo) -> (Arc<Session>, SessionHandle) {
        let connection_id = self.next_connection_id.fetch_add(1, Ordering::Relaxed);
        let (control_tx, control_rx) = mpsc::channel(16);
        let (ended_tx, ended_rx) = watch::channel(());
        let hard_stop = CancellationToken::new();
        let client_id = info.client_id.clone();
        let session = Arc::new(Session {
            info,
            connection_id,
            control: control_tx,
            hard_stop: hard_stop.clone(),
            ended: ended_rx,
        });
        self.write().insert(client_id.clone(), session.clone());
        let handle = SessionHandle {
            control: control_rx,
            hard_stop,
            guard: SessionGuard {
                registry: self.clone(),
                client_id,
                connection_id,
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

    /// Ends the connection of `client_id`; `false` if it was not connected.
    pub async fn disconnect(&self, client_id: &str, reason_code: u8, reason: &str) -> bool {
        match self.get(client_id) {
            Some(session) => {
                session.disconnect(reason_code, reason).await;
                true
            }
            None => false,
        }
    }

    fn remove(&self, client_id: &str, connection_id: u64) {
        let mut sessions = self.write();
        if sessions
            .get(client_id)
            .is_some_and(|s| s.connection_id == connection_id)
        {
            sessions.remove(client_id);
        }
    }

    // A panic while holding the lock cannot leave the map half-updated (every
    // critical section is a single map operation), so a poisoned lock is
    // still safe to use.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Session>>> {
        self.sessions.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Session>>> {
        self.sessions.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(client_id: &str) -> SessionInfo {
        SessionInfo {
            client_id: client_id.into(),
            username: None,
            ip: "127.0.0.1".parse().unwrap(),
            port: 1,
            protocol: ProtocolVersion::V311,
            keepalive: 60,
            clean_start: true,
            session_expiry_interval: None,
            connected_at: Utc::now(),
        }
    }

    #[tokio::test]
    async fn a_session_leaves_when_its_guard_drops() {
        let registry = SessionRegistry::new();
        let (_, handle) = registry.register(info("a"));
        assert!(registry.is_online("a"));
        drop(handle);
        assert!(!registry.is_online("a"));
    }

    #[tokio::test]
    async fn an_old_connection_does_not_remove_its_successor() {
        let registry = SessionRegistry::new();
        let (_, old) = registry.register(info("a"));
        let (new_session, _new) = registry.register(info("a"));
        drop(old);
        assert_eq!(
            registry.get("a").unwrap().connection_id,
            new_session.connection_id
        );
    }

    #[tokio::test]
    async fn disconnect_asks_first_then_waits_for_the_end() {
        let registry = SessionRegistry::new();
        let (_, mut handle) = registry.register(info("a"));
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
        assert!(!registry.disconnect("a", 0x98, "test").await);
    }

    #[tokio::test(start_paused = true)]
    async fn disconnect_stops_a_relay_that_does_not_answer() {
        let registry = SessionRegistry::new();
        let (_, handle) = registry.register(info("a"));
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
