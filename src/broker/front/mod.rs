//! The MQTT front layer: the public port, in front of every instance's
//! embedded rumqttd.
//!
//! For each TCP connection:
//! 1. read the CONNECT (within `mqtt.connect_timeout_secs`), tell MQTT 3.1.1
//!    from 5 by its protocol level;
//! 2. authenticate it and find its instance ([`device_auth`]); refuse with a
//!    CONNACK that says why (MQTT 5 adds a reason string);
//! 3. give an empty client id one of ours, take over an older connection
//!    with the same client id (MQTT 5: DISCONNECT 0x8E);
//! 4. link the connection to the instance's rumqttd router, in process
//!    (`link.rs`), and send the client the router's CONNACK;
//! 5. register the session and relay both ways until either side closes,
//!    the keepalive runs out, or the API kicks it (MQTT 5: DISCONNECT 0x98
//!    first); then tell the router the connection is gone and, unless the
//!    client said a clean goodbye, have its will published.
//!
//! Frames are relayed whole: the relay only writes complete MQTT packets to
//! the client, so a DISCONNECT it injects never lands inside another packet.
//!
//! The relay's two halves: `to_broker.rs` reads the client (and checks a
//! token-mode client's PUBLISH and SUBSCRIBE), `to_client.rs` writes what
//! the router sends; beside them, `rights_watch.rs` tells a token-mode
//! client about its tokens and removes the subscriptions a bound client's
//! rights no longer allow. `client_io.rs` reads and writes the client's
//! transport (TCP, or a TLS or WebSocket stream).
//!
//! In a cluster, a CONNECT that names an instance another node serves is
//! not admitted here: the connection is relayed to that node (`relay.rs`).
//!
//! An idle connection holds no read or write buffer: they are taken when
//! bytes arrive and given back once the frames in them are handled.

mod client_io;
mod link;
mod relay;
mod rights_watch;
mod to_broker;
mod to_client;
mod transports;

pub use client_io::{ClientConnection, ClientStream};
pub use link::PendingWills;

use client_io::{ClientRead, ClientWrite};
use rights_watch::watch_rights;
use to_broker::ToBroker;
use to_client::ToClient;

use super::codec::{self, FrameError, packet_type};
use super::device_auth::Bounds;
use super::device_auth::{self, Refusal};
use super::registry::{ProtocolVersion, SessionInfo};
use super::rights::{CustomRights, TopicRights};
use super::tokens::TokenRights;
use super::{Brokers, Place, Placement, reason};
use crate::devices::DeviceStore;
use crate::directory::DirectoryHandle;
use crate::trace::Tracer;
use crate::trace::events::{self, DeviceAction, DeviceEvent};
use bytes::BytesMut;
use chrono::Utc;
use rumqttd::protocol::{Packet, Protocol, v4::V4, v5::V5};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Frames the router's packets are encoded into are trusted; their size is
/// bounded by rumqttd itself.
const BROKER_MAX_FRAME: usize = 268_435_455;
/// How long the front layer waits for the router to take a connection.
const LINK_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a goodbye packet may take to write before the socket is dropped.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(1);

pub struct FrontLayer {
    brokers: Arc<Brokers>,
    directory: Arc<DirectoryHandle>,
    devices: Arc<DeviceStore>,
    tracer: Arc<Tracer>,
    max_packet_size: usize,
    connect_timeout: Duration,
    /// How long a client may leave what mqgate sends it unread before it
    /// is disconnected (a subscriber that stopped reading).
    send_timeout: Duration,
    /// In a cluster: which node serves each instance (devices of an
    /// instance served elsewhere are relayed there, `relay.rs`).
    placement: std::sync::OnceLock<Arc<dyn Placement>>,
}

/// How a relayed connection ended, for the log (read through `Debug`).
#[derive(Debug)]
#[allow(dead_code)]
enum End {
    ClientClosed,
    /// The client sent DISCONNECT.
    ClientDisconnected,
    /// The client sent an MQTT 5 DISCONNECT with a reason other than 0x00:
    /// its will is published.
    ClientDisconnectedWithWill,
    ClientError(std::io::Error),
    ClientProtocol(FrameError),
    BrokerClosed,
    BrokerProtocol(FrameError),
    /// No packet from the client within 1.5 times its keepalive.
    KeepAliveTimeout,
    /// The client left what mqgate sent it unread past `send_timeout`.
    SendTimeout,
    /// Ended by the API or the server: the reason code and why.
    Disconnected(u8, String),
    HardStop,
    /// A token-mode client published where its tokens do not allow it.
    Refused(String),
}

impl FrontLayer {
    pub fn new(
        brokers: Arc<Brokers>,
        directory: Arc<DirectoryHandle>,
        devices: Arc<DeviceStore>,
        tracer: Arc<Tracer>,
        max_packet_size: usize,
        connect_timeout: Duration,
        send_timeout: Duration,
    ) -> Arc<FrontLayer> {
        Arc::new(FrontLayer {
            brokers,
            directory,
            devices,
            tracer,
            max_packet_size,
            connect_timeout,
            send_timeout,
            placement: std::sync::OnceLock::new(),
        })
    }

    /// In a cluster: from now on, a device whose instance another node
    /// serves is relayed there. Set once, before the listeners serve.
    pub fn place_with(&self, placement: Arc<dyn Placement>) {
        let _ = self.placement.set(placement);
    }

    /// Accepts connections until `shutdown` is cancelled. `endpoint`: the
    /// instance this listener belongs to (`[[accounts.instances]]
    /// mqtt_listen`), `None` for the shared port.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        endpoint: Option<String>,
        shutdown: CancellationToken,
    ) {
        let endpoint: Option<Arc<str>> = endpoint.map(Arc::from);
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let front = self.clone();
                        let endpoint = endpoint.clone();
                        let _ = stream.set_nodelay(true);
                        tokio::spawn(async move {
                            front.handle(ClientConnection::Tcp(stream), peer, endpoint.as_deref()).await
                        });
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: say so, back
                        // off a little, keep serving the connections we have.
                        warn!(error = %e, "mqtt accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// Serves one client connection, of any transport, to its end.
    pub async fn handle(
        &self,
        connection: ClientConnection,
        peer: SocketAddr,
        endpoint: Option<&str>,
    ) {
        self.serve_connection(connection, peer, endpoint, false)
            .await
    }

    /// Serves one connection to its end; `relayed`: another node relayed it
    /// here (`relay.rs`), so it is not relayed again.
    async fn serve_connection(
        &self,
        connection: ClientConnection,
        peer: SocketAddr,
        endpoint: Option<&str>,
        relayed: bool,
    ) {
        let (mut client_rd, mut client) = connection.split();
        let mut client_buf = BytesMut::new();
        let frame = match tokio::time::timeout(
            self.connect_timeout,
            read_frame(&mut client_rd, &mut client_buf, self.max_packet_size),
        )
        .await
        {
            Ok(Ok(Some(frame))) => frame,
            Ok(Ok(None)) => return debug!(%peer, "closed before CONNECT"),
            Ok(Err(e)) => return info!(%peer, error = %e, "unreadable first packet; closing"),
            Err(_) => return info!(%peer, "no CONNECT in time; closing"),
        };
        if let Some(placement) = self.placement.get() {
            match self.route(placement.as_ref(), &frame, endpoint, relayed) {
                Route::Serve => {}
                Route::Forward { node, relay } => {
                    let protocol = protocol_of(&frame);
                    let mut first = frame;
                    first.unsplit(client_buf);
                    let refused = self
                        .forward(&relay, peer, endpoint, first, client_rd, client)
                        .await;
                    if let Err((mut client, why)) = refused {
                        warn!(%peer, %node, %relay, %why, "the node serving the device's instance did not take the relayed connection");
                        let refusal = Refusal {
                            v4_code: 0x03,
                            v5_code: 0x88,
                            reason: format!(
                                "node {node}, which serves this instance, cannot be reached just now; connect again"
                            ),
                        };
                        refuse(&mut client, protocol, &refusal).await;
                    }
                    return;
                }
                Route::Refuse(reason) => {
                    info!(%peer, %reason, "CONNECT refused: instance not served here");
                    let refusal = Refusal {
                        v4_code: 0x03,
                        v5_code: 0x88,
                        reason,
                    };
                    refuse(&mut client, protocol_of(&frame), &refusal).await;
                    return;
                }
            }
        }
        // Boxed: a connection waiting for its CONNECT holds only the small
        // future above, not the state of everything that follows.
        let admitted = Box::pin(self.admit(frame, client_rd, client, client_buf, peer, endpoint));
        if let Some(admitted) = admitted.await {
            // Boxed apart: the relay holds none of what admitting took.
            Box::pin(self.relay(admitted)).await;
        }
    }

    /// From the CONNECT to the CONNACK: authenticates, takes over an older
    /// connection, links to the router, registers the session. `None`: the
    /// client was refused or left (and has been told, where it can be).
    async fn admit(
        &self,
        frame: BytesMut,
        client_rd: ClientRead,
        mut client: ClientWrite,
        client_buf: BytesMut,
        peer: SocketAddr,
        endpoint: Option<&str>,
    ) -> Option<Admitted> {
        if codec::frame_type(&frame) != packet_type::CONNECT {
            info!(%peer, "first packet is not CONNECT; closing");
            return None;
        }
        let protocol = match codec::connect_protocol_level(&frame) {
            Some(4) => ProtocolVersion::V311,
            Some(5) => ProtocolVersion::V5,
            // Too short to hold a protocol level: malformed, in any version.
            None => {
                info!(%peer, "CONNECT too short to name its protocol; closing");
                return None;
            }
            level => {
                info!(%peer, ?level, "unsupported MQTT protocol level; refusing");
                // Return code 1 (unacceptable protocol version) in the 3.1.1
                // format, which clients of every version can read.
                let _ = write_goodbye(&mut client, &codec::connack_v4(0x01)).await;
                return None;
            }
        };
        // What rumqttd's decoder would accept but MQTT requires the server
        // to close the connection for (reserved flags, a property given
        // twice): MQTT 5 hears why in its CONNACK.
        if let Some(problem) = codec::connect_problem(&frame, protocol == ProtocolVersion::V5) {
            info!(%peer, %problem, "malformed CONNECT; refusing");
            if protocol == ProtocolVersion::V5 {
                let reason = format!("malformed CONNECT packet: {problem}");
                let packet = codec::connack_v5(problem.reason_code(), Some(&reason));
                let _ = write_goodbye(&mut client, &packet).await;
            }
            return None;
        }
        let connect_len = frame.len() as u64;
        let decoded = decode_connect(protocol, frame, self.max_packet_size);
        let (connect, properties, will, will_properties, login) = match decoded {
            Ok(Packet::Connect(c, p, w, wp, l)) => (c, p, w, wp, l),
            other => {
                info!(%peer, error = ?other.err(), "malformed CONNECT; refusing");
                if protocol == ProtocolVersion::V5 {
                    let packet = codec::connack_v5(0x81, Some("malformed CONNECT packet"));
                    let _ = write_goodbye(&mut client, &packet).await;
                }
                return None;
            }
        };

        let directory = self.directory.current();
        let (username, password) = match &login {
            Some(l) => (Some(l.username.as_str()), Some(l.password.as_str())),
            None => (None, None),
        };
        let admitted = match device_auth::authenticate(
            &directory,
            &self.devices,
            endpoint,
            &connect.client_id,
            username,
            password,
        ) {
            Ok(admitted) => admitted,
            Err(refusal) => {
                info!(%peer, client_id = %connect.client_id, reason = %refusal.reason, "CONNECT refused");
                if let Some(instance) = self.instance_named(&directory, endpoint, username) {
                    self.trace(
                        &instance,
                        &connect.client_id,
                        0,
                        DeviceAction::Connect,
                        events::NOT_AUTHORIZED,
                    );
                }
                {
                    refuse(&mut client, protocol, &refusal).await;
                    return None;
                }
            }
        };
        let instance = admitted.instance;
        let bound_by = admitted.bound_by;
        let Some(broker) = self.brokers.instance(&instance.id) else {
            let refusal = Refusal {
                v4_code: 0x03,
                v5_code: 0x88,
                reason: format!("instance {} has no running broker", instance.id),
            };
            warn!(instance = %instance.id, "CONNECT for an instance without a broker");
            {
                refuse(&mut client, protocol, &refusal).await;
                return None;
            }
        };

        let mut client_id = connect.client_id.clone();
        let assigned_client_id = client_id.is_empty();
        if assigned_client_id {
            if !connect.clean_session {
                let refusal = Refusal {
                    v4_code: 0x02,
                    v5_code: 0x85,
                    reason: "an empty client id needs clean start (clean session) set".into(),
                };
                self.trace(
                    &instance.id,
                    "",
                    0,
                    DeviceAction::Connect,
                    events::INVALID_PARAM,
                );
                {
                    refuse(&mut client, protocol, &refusal).await;
                    return None;
                }
            }
            client_id = format!("mqgate-{}", uuid::Uuid::new_v4().simple());
        }
        let rights = match bound_by {
            Bounds::Open => None,
            Bounds::Tokens(grants) => Some(TopicRights::Tokens(Arc::new(TokenRights::new(
                &instance.account_id,
                &instance.id,
                grants,
            )))),
            Bounds::CustomAuth { username } => Some(TopicRights::Custom(Arc::new(CustomRights {
                username,
                client_id: client_id.clone(),
                rules: self.devices.custom_rules(&instance.id),
            }))),
        };

        // MQTT: a new connection with the same client id takes over the old
        // one. Do it before rumqttd sees the new CONNECT, so the old client
        // hears why (0x8E) instead of a bare close. CONNECTs with one
        // client id take turns from here to their registration.
        let turn = broker.sessions.admission_turn(&client_id).await;
        if let Some(old) = broker.sessions.get(&client_id) {
            info!(instance = %instance.id, %client_id, "session taken over");
            old.end(
                reason::SESSION_TAKEN_OVER,
                "another connection with the same client id took over the session",
            )
            .await;
        }

        let router_client_id = broker_client_id(&client_id);
        // A will still waiting for its delay from an earlier connection of
        // this client is settled before the router sees the new one.
        broker
            .wills
            .settle(&broker.router, &router_client_id, connect.clean_session)
            .await;
        let will_delay = will_delay(protocol, properties.as_ref(), will_properties.as_ref());
        let linked = tokio::time::timeout(
            LINK_TIMEOUT,
            link::open(
                &broker.router,
                protocol,
                link::LinkRequest {
                    router_client_id: &router_client_id,
                    clean_session: connect.clean_session,
                    will,
                    will_properties,
                },
            ),
        )
        .await;
        let (to_router, from_router, connack) = match linked {
            Ok(Ok(linked)) => linked,
            outcome => {
                let why = match outcome {
                    Ok(Err(e)) => e.to_string(),
                    _ => "no answer in time".to_string(),
                };
                warn!(instance = %instance.id, %client_id, %why, "embedded broker did not take the connection");
                let refusal = Refusal {
                    v4_code: 0x03,
                    v5_code: 0x88,
                    reason: "the broker did not accept the connection; try again".into(),
                };
                {
                    refuse(&mut client, protocol, &refusal).await;
                    return None;
                }
            }
        };
        let (connack, accepted) = match patch_connack(
            connack,
            protocol,
            assigned_client_id.then_some(client_id.as_str()),
        ) {
            Ok(patched) => patched,
            Err(e) => {
                warn!(error = %e, "unreadable CONNACK from the embedded broker");
                to_router.disconnect().await;
                let refusal = Refusal {
                    v4_code: 0x03,
                    v5_code: 0x88,
                    reason: "the broker answered with an unreadable CONNACK".into(),
                };
                {
                    refuse(&mut client, protocol, &refusal).await;
                    return None;
                }
            }
        };
        if !accepted {
            info!(instance = %instance.id, %client_id, "embedded broker refused CONNECT");
            to_router.disconnect().await;
            let _ = write_goodbye(&mut client, &connack).await;
            return None;
        }

        // Registered before the client hears CONNACK, so that a status query
        // made right after the client connected already sees it.
        let info = SessionInfo {
            client_id: client_id.clone(),
            username: login.map(|l| l.username),
            ip: peer.ip(),
            port: peer.port(),
            protocol,
            keepalive: connect.keep_alive,
            clean_start: connect.clean_session,
            session_expiry_interval: properties.and_then(|p| p.session_expiry_interval),
            connected_at: Utc::now(),
            created_at: Utc::now(),
        };
        let (session, handle) = broker.sessions.register(info);
        // Registered: the next CONNECT with this client id finds this one.
        drop(turn);
        if let Some(rights) = &rights {
            let _ = session.rights.set(rights.clone());
        }
        broker.meter.connections_now(broker.sessions.len() as u64);
        if client_io::write_flushed(&mut client, &connack)
            .await
            .is_err()
        {
            debug!(%client_id, "client left before CONNACK");
            to_router.disconnect().await;
            return None;
        }
        // The CONNECT and CONNACK count as traffic of the connection.
        for (counter, value) in [
            (&session.stats.recv_pkt, 1),
            (&session.stats.recv_cnt, 1),
            (&session.stats.recv_oct, connect_len),
            (&session.stats.send_pkt, 1),
            (&session.stats.send_cnt, 1),
            (&session.stats.send_oct, connack.len() as u64),
        ] {
            counter.fetch_add(value, Ordering::Relaxed);
        }
        info!(instance = %instance.id, %client_id, %peer, ?protocol, "client connected");
        let channel_id = session.connection_id;
        session
            .stats
            .last_recv_ms
            .store(crate::trace::now_ms(), Ordering::Relaxed);
        self.trace(
            &instance.id,
            &client_id,
            channel_id,
            DeviceAction::Connect,
            events::ACCEPTED,
        );
        Some(Admitted {
            broker,
            session,
            handle,
            to_router,
            from_router,
            client_rd,
            client,
            client_buf,
            rights,
            keep_alive: connect.keep_alive,
            client_id,
            router_client_id,
            will_delay,
        })
    }

    /// Relays an admitted connection until it ends, then tells the router
    /// and the trace.
    async fn relay(&self, admitted: Admitted) {
        let Admitted {
            broker,
            session,
            handle,
            mut to_router,
            mut from_router,
            client_rd,
            client,
            client_buf,
            rights,
            keep_alive,
            client_id,
            router_client_id,
            will_delay,
        } = admitted;
        let instance_id = &broker.instance_id;
        let channel_id = session.connection_id;
        // Whatever the client sent right behind its CONNECT stays in
        // `client_buf` for the relay.
        let to_broker = ToBroker {
            client: client_rd,
            upstream: &mut to_router,
            buf: client_buf,
            max_packet_size: self.max_packet_size,
            keep_alive: keepalive_limit(keep_alive),
            injected: handle.upstream,
            own_qos2: Vec::new(),
            awaiting_pubrel: Vec::new(),
            aliases: Default::default(),
        };
        let to_client = ToClient {
            upstream: &mut from_router,
            client,
            buf: BytesMut::new(),
            control: handle.control,
            send_timeout: self.send_timeout,
        };
        // Only logins bound by tokens or rules watch their rights (and hold
        // the future that does).
        let rights_watch = async {
            match &rights {
                Some(rights) => Box::pin(watch_rights(&broker, &session, rights)).await,
                None => std::future::pending().await,
            }
        };
        let end = tokio::select! {
            end = to_broker.run(&broker, &session, &self.devices, &self.tracer) => end,
            end = to_client.run(&broker, &session, &self.tracer) => end,
            end = rights_watch => end,
            _ = handle.hard_stop.cancelled() => End::HardStop,
        };
        // Tell the router, unless it dropped the connection itself: then
        // its id may already be another connection's.
        match end {
            End::ClientDisconnected => {
                if !from_router.await_router_drop().await {
                    to_router.disconnect().await;
                }
            }
            End::BrokerClosed | End::BrokerProtocol(_) => {}
            _ => to_router.disconnect().await,
        }
        // Every end but a clean goodbye publishes the will (the router
        // holds it, if there is one), after its delay.
        if !matches!(end, End::ClientDisconnected) {
            broker
                .wills
                .schedule(&broker.router, router_client_id, will_delay);
        }
        let (action, why) = ended_as(&end);
        self.trace(instance_id, &client_id, channel_id, action, &why);
        // Deliveries the client never acknowledged.
        let unacknowledged: Vec<u128> = session
            .deliveries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, msg_id)| msg_id)
            .collect();
        if !unacknowledged.is_empty() {
            let names = crate::trace::EventNames::new(instance_id, &client_id, "");
            for msg_id in unacknowledged {
                self.tracer.message(names.event(
                    msg_id,
                    crate::trace::MessageAction::Drop,
                    crate::trace::now_ms(),
                    0,
                    0,
                ));
            }
        }
        // Only now is the session gone for the registry, and for a takeover
        // waiting to connect the same client id upstream.
        drop(handle.guard);
        info!(instance = %instance_id, %client_id, ?end, "client disconnected");
    }

    /// Records a device event (nothing when tracing is off).
    fn trace(
        &self,
        instance_id: &str,
        client_id: &str,
        channel_id: u64,
        action: DeviceAction,
        info: &str,
    ) {
        if !self.tracer.enabled() {
            return;
        }
        self.tracer.device(DeviceEvent {
            instance_id: instance_id.to_string(),
            client_id: client_id.to_string(),
            time_ms: crate::trace::now_ms(),
            channel_id,
            action,
            info: info.to_string(),
        });
    }

    /// The instance a refused CONNECT was meant for, where its listener or
    /// username says so: its trace belongs there.
    /// In a cluster: whether this node serves the device whose CONNECT is
    /// `frame`, relays it, or refuses it for now. A CONNECT that names no
    /// instance (or cannot be read) is served here, where authentication
    /// refuses it with the reason.
    fn route(
        &self,
        placement: &dyn Placement,
        frame: &BytesMut,
        endpoint: Option<&str>,
        relayed: bool,
    ) -> Route {
        let login = match codec::connect_protocol_level(frame) {
            Some(4) => decode_connect(ProtocolVersion::V311, frame.clone(), self.max_packet_size),
            Some(5) => decode_connect(ProtocolVersion::V5, frame.clone(), self.max_packet_size),
            _ => return Route::Serve,
        };
        let username = match &login {
            Ok(Packet::Connect(_, _, _, _, login)) => login.as_ref().map(|l| l.username.as_str()),
            _ => return Route::Serve,
        };
        let directory = self.directory.current();
        let named = match username.filter(|u| !u.is_empty()) {
            Some(_) => self.instance_named(&directory, endpoint, username),
            // No login: the listener's instance, or the anonymous one.
            None => endpoint
                .map(str::to_string)
                .or_else(|| directory.anonymous_instance().map(|i| i.id.clone())),
        };
        let Some(instance) = named else {
            return Route::Serve;
        };
        match placement.place(&instance) {
            Place::Here => Route::Serve,
            Place::There { node, relay } if !relayed => Route::Forward { node, relay },
            Place::There { node, .. } => Route::Refuse(format!(
                "instance {instance} moved to node {node} while this connection was relayed; connect again"
            )),
            Place::Unplaced => Route::Refuse(format!(
                "instance {instance} is being taken over by another node; connect again in a few seconds"
            )),
        }
    }

    fn instance_named(
        &self,
        directory: &crate::directory::Directory,
        endpoint: Option<&str>,
        username: Option<&str>,
    ) -> Option<String> {
        if let Some(endpoint) = endpoint {
            return Some(endpoint.to_string());
        }
        let username = username.filter(|u| !u.is_empty())?;
        let named = match username.split('|').nth(2) {
            Some(instance) => Some(instance.to_string()),
            None => match self.devices.custom_username_instances(username).as_slice() {
                [one] => Some(one.clone()),
                _ => None,
            },
        };
        named.filter(|instance| directory.instance(instance).is_some())
    }
}

/// What the front layer does with a device, in a cluster.
enum Route {
    Serve,
    Forward { node: String, relay: String },
    Refuse(String),
}

/// The protocol a CONNECT speaks, for a refusal (3.1.1 unless it says 5).
fn protocol_of(frame: &[u8]) -> ProtocolVersion {
    match codec::connect_protocol_level(frame) {
        Some(5) => ProtocolVersion::V5,
        _ => ProtocolVersion::V311,
    }
}

/// The client id rumqttd sees. rumqttd refuses client ids containing `+`,
/// `$`, `#` or `/` (it reserves them for its tenant prefixes), which MQTT and
/// ApsaraMQ allow; percent-escaping them (and `%` itself) keeps every client
/// id distinct and acceptable. Only rumqttd sees the escaped form.
pub fn broker_client_id(client_id: &str) -> String {
    let mut out = String::with_capacity(client_id.len());
    for c in client_id.chars() {
        match c {
            '%' => out.push_str("%25"),
            '+' => out.push_str("%2B"),
            '$' => out.push_str("%24"),
            '#' => out.push_str("%23"),
            '/' => out.push_str("%2F"),
            c => out.push(c),
        }
    }
    out
}

/// Reads until `buf` holds one complete frame and splits it off; `None` if
/// the peer closed first.
async fn read_frame(
    client: &mut ClientRead,
    buf: &mut BytesMut,
    max_packet_size: usize,
) -> Result<Option<BytesMut>, FrameError> {
    loop {
        if let Some(len) = codec::frame_len(buf, max_packet_size)? {
            return Ok(Some(buf.split_to(len)));
        }
        match client.read_into(buf).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => {}
        }
    }
}

/// The client's first frame (a CONNECT of protocol level 4 or 5, framed by
/// [`codec::frame_len`]) decoded with rumqttd's codec for that protocol.
fn decode_connect(
    protocol: ProtocolVersion,
    mut frame: BytesMut,
    max_packet_size: usize,
) -> Result<Packet, rumqttd::protocol::Error> {
    match protocol {
        ProtocolVersion::V311 => V4.read_mut(&mut frame, max_packet_size),
        ProtocolVersion::V5 => V5.read_mut(&mut frame, max_packet_size),
    }
}

/// The front layer's private decoding and encoding, for the fuzz targets in
/// `fuzz/` (they must run the very code a client's bytes reach). Not an
/// API: nothing in mqgate uses it.
#[doc(hidden)]
pub mod fuzzing {
    use super::ProtocolVersion;
    use bytes::BytesMut;
    pub use rumqttd::protocol::Packet;

    /// What [`super::FrontLayer`] does with a client's first frame.
    pub fn decode_connect(
        protocol: ProtocolVersion,
        frame: BytesMut,
        max_packet_size: usize,
    ) -> Option<Packet> {
        super::decode_connect(protocol, frame, max_packet_size).ok()
    }

    /// How the relay decodes one whole frame of a connected client
    /// (SUBSCRIBE, PUBLISH and UNSUBSCRIBE it inspects).
    pub fn decode_frame(protocol: ProtocolVersion, frame: BytesMut) -> Option<Packet> {
        super::to_broker::decode(protocol, frame)
    }

    /// How the link to the router decodes the frames it forwards, one at a
    /// time off the front of `frames`.
    pub fn decode_next(protocol: ProtocolVersion, frames: &mut BytesMut) -> Option<Packet> {
        super::link::decode_next(protocol, frames).ok()
    }

    /// How a router notification is encoded for a client of `protocol`.
    pub fn encode_for_client(
        protocol: ProtocolVersion,
        packet: Packet,
        out: &mut BytesMut,
    ) -> Result<(), String> {
        super::link::encode(protocol, packet, out)
    }
}

/// The longest silence a client's keepalive allows (MQTT: one and a half
/// times it); `None` for keepalive 0 (no limit).
fn keepalive_limit(keep_alive: u16) -> Option<Duration> {
    (keep_alive > 0).then(|| Duration::from_millis(u64::from(keep_alive) * 1500))
}

/// How long after its connection ended a will is published: MQTT 5's Will
/// Delay Interval, bounded by the Session Expiry Interval (the session
/// ending publishes it); at once in 3.1.1.
fn will_delay(
    protocol: ProtocolVersion,
    properties: Option<&rumqttd::protocol::ConnectProperties>,
    will_properties: Option<&rumqttd::protocol::LastWillProperties>,
) -> Duration {
    if protocol == ProtocolVersion::V311 {
        return Duration::ZERO;
    }
    let session_expiry = properties
        .and_then(|p| p.session_expiry_interval)
        .unwrap_or(0);
    let delay = will_properties.and_then(|p| p.delay_interval).unwrap_or(0);
    Duration::from_secs(u64::from(session_expiry.min(delay)))
}

/// Decides whether rumqttd accepted the connection and, for an MQTT 5
/// client, adds the Receive Maximum property and, where we assigned the
/// client id, the Assigned Client Identifier property to the CONNACK (MQTT
/// 5 requires it; 3.1.1 has no way to say either).
fn patch_connack(
    frame: BytesMut,
    protocol: ProtocolVersion,
    assigned_client_id: Option<&str>,
) -> Result<(BytesMut, bool), &'static str> {
    let (_, code) = codec::connack_code(&frame).ok_or("not a CONNACK")?;
    let accepted = code == 0;
    if protocol != ProtocolVersion::V5 || !accepted {
        return Ok((frame, accepted));
    }
    // MQTT 5: the receive maximum the relay enforces (see ToBroker), and
    // the client id assigned, if any.
    let mut patched = codec::connack_v5_with_receive_maximum(&frame, to_broker::RECEIVE_MAXIMUM)
        .ok_or("malformed CONNACK")?;
    if let Some(id) = assigned_client_id {
        patched = codec::connack_v5_with_assigned_id(&patched, id).ok_or("malformed CONNACK")?;
    }
    Ok((BytesMut::from(&patched[..]), accepted))
}

async fn refuse(client: &mut ClientWrite, protocol: ProtocolVersion, refusal: &Refusal) {
    let packet = match protocol {
        ProtocolVersion::V311 => codec::connack_v4(refusal.v4_code),
        ProtocolVersion::V5 => codec::connack_v5(refusal.v5_code, Some(&refusal.reason)),
    };
    let _ = write_goodbye(client, &packet).await;
}

async fn write_goodbye<W: AsyncWrite + Unpin + ?Sized>(
    client: &mut W,
    packet: &[u8],
) -> std::io::Result<()> {
    tokio::time::timeout(GOODBYE_TIMEOUT, async {
        client.write_all(packet).await?;
        client.shutdown().await
    })
    .await
    .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

/// An admitted connection, handed from [`FrontLayer::admit`] to
/// [`FrontLayer::relay`].
struct Admitted {
    broker: Arc<super::InstanceBroker>,
    session: Arc<super::registry::Session>,
    handle: super::registry::SessionHandle,
    to_router: link::ToRouter,
    from_router: link::FromRouter,
    client_rd: ClientRead,
    client: ClientWrite,
    /// What the client sent right behind its CONNECT.
    client_buf: BytesMut,
    rights: Option<TopicRights>,
    keep_alive: u16,
    client_id: String,
    router_client_id: String,
    will_delay: Duration,
}

/// How an ended connection reads in the device trace.
fn ended_as(end: &End) -> (DeviceAction, String) {
    let close = |info: &str| (DeviceAction::Close, info.to_string());
    match end {
        End::ClientDisconnected | End::ClientDisconnectedWithWill => (
            DeviceAction::Disconnect,
            events::DISCONNECTED_BY_CLIENT.into(),
        ),
        End::ClientClosed => close(events::CLOSED_BY_CLIENT),
        End::ClientError(_) | End::SendTimeout => close(events::SOCKET_IO_EXCEPTION),
        End::ClientProtocol(_) => close(events::INVALID_PARAM),
        // An MQTT 5 client's protocol error, told with its reason code.
        End::Disconnected(0x81 | 0x82 | 0x90 | 0x95, _) => close(events::INVALID_PARAM),
        End::Refused(_) => close(events::RESOURCE_AUTH_FAILED),
        End::Disconnected(reason::SESSION_TAKEN_OVER, _) => close(events::CLIENT_ID_CONFLICT),
        End::Disconnected(reason::SERVER_SHUTTING_DOWN, _) => close(events::SERVER_SHUTDOWN),
        End::Disconnected(reason::ADMINISTRATIVE_ACTION, why) => close(&format!("kicked: {why}")),
        End::Disconnected(0x87, _) => close(events::RESOURCE_AUTH_FAILED),
        End::KeepAliveTimeout => close(events::NO_HEART),
        End::Disconnected(..) | End::BrokerClosed | End::BrokerProtocol(_) | End::HardStop => {
            close(events::CLOSED_BY_SERVER)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_client_ids_are_escaped_injectively() {
        assert_eq!(
            broker_client_id("GID_x@@@dev 1+*~/é"),
            "GID_x@@@dev 1%2B*~%2Fé"
        );
        assert_eq!(broker_client_id("a$b#c%d"), "a%24b%23c%25d");
        // "%2B" and "+" stay different.
        assert_ne!(broker_client_id("%2B"), broker_client_id("+"));
        assert_eq!(broker_client_id("plain"), "plain");
    }
}
