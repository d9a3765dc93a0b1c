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
//! 4. open a loopback connection to the instance's rumqttd listener for that
//!    version, forward the CONNECT with the internal login, and relay the
//!    CONNACK back;
//! 5. register the session and relay frames both ways until either side
//!    closes or the API kicks it (MQTT 5: DISCONNECT 0x98 first).
//!
//! Frames are relayed whole: the relay only writes complete MQTT packets to
//! the client, so a DISCONNECT it injects never lands inside another packet.

use super::codec::{self, FrameError, packet_type};
use super::device_auth::{self, Refusal};
use super::registry::{
    ACK_TIMEOUT, Awaited, Control, Injected, ProtocolVersion, Session, SessionInfo,
    SubscriptionOptions,
};
use super::tokens::{self as token_rules, TokenRights};
use super::{Brokers, InstanceBroker, reason};
use crate::devices::DeviceStore;
use crate::directory::DirectoryHandle;
use bytes::BytesMut;
use chrono::Utc;
use rumqttd::protocol::{Packet, Protocol, v4::V4, v5::V5};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Frames from rumqttd are trusted; their size is bounded by rumqttd itself.
const BROKER_MAX_FRAME: usize = 268_435_455;
/// How long the front layer waits for rumqttd to connect and answer.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(10);
/// How long rumqttd may take to close its side of an ended connection.
const UPSTREAM_CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a goodbye packet may take to write before the socket is dropped.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(1);

pub struct FrontLayer {
    brokers: Arc<Brokers>,
    directory: Arc<DirectoryHandle>,
    devices: Arc<DeviceStore>,
    max_packet_size: usize,
    connect_timeout: Duration,
}

/// How a relayed connection ended, for the log (read through `Debug`).
#[derive(Debug)]
#[allow(dead_code)]
enum End {
    ClientClosed,
    /// The client sent DISCONNECT.
    ClientDisconnected,
    ClientError(std::io::Error),
    ClientProtocol(FrameError),
    BrokerClosed,
    BrokerProtocol(FrameError),
    Disconnected(u8),
    HardStop,
    /// A token-mode client published where its tokens do not allow it.
    Refused(String),
}

impl FrontLayer {
    pub fn new(
        brokers: Arc<Brokers>,
        directory: Arc<DirectoryHandle>,
        devices: Arc<DeviceStore>,
        max_packet_size: usize,
        connect_timeout: Duration,
    ) -> Arc<FrontLayer> {
        Arc::new(FrontLayer {
            brokers,
            directory,
            devices,
            max_packet_size,
            connect_timeout,
        })
    }

    /// Accepts connections until `shutdown` is cancelled.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let front = self.clone();
                        tokio::spawn(async move { front.handle(stream, peer).await });
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

    async fn handle(&self, mut client: TcpStream, peer: SocketAddr) {
        let _ = client.set_nodelay(true);
        let mut client_buf = BytesMut::with_capacity(1024);
        let frame = match tokio::time::timeout(
            self.connect_timeout,
            read_frame(&mut client, &mut client_buf, self.max_packet_size),
        )
        .await
        {
            Ok(Ok(Some(frame))) => frame,
            Ok(Ok(None)) => return debug!(%peer, "closed before CONNECT"),
            Ok(Err(e)) => return info!(%peer, error = %e, "unreadable first packet; closing"),
            Err(_) => return info!(%peer, "no CONNECT in time; closing"),
        };
        if codec::frame_type(&frame) != packet_type::CONNECT {
            return info!(%peer, "first packet is not CONNECT; closing");
        }
        let protocol = match codec::connect_protocol_level(&frame) {
            Some(4) => ProtocolVersion::V311,
            Some(5) => ProtocolVersion::V5,
            level => {
                info!(%peer, ?level, "unsupported MQTT protocol level; refusing");
                // Return code 1 (unacceptable protocol version) in the 3.1.1
                // format, which clients of every version can read.
                let _ = write_goodbye(&mut client, &codec::connack_v4(0x01)).await;
                return;
            }
        };
        let connect_len = frame.len() as u64;
        let mut frame = frame;
        let decoded = match protocol {
            ProtocolVersion::V311 => V4.read_mut(&mut frame, self.max_packet_size),
            ProtocolVersion::V5 => V5.read_mut(&mut frame, self.max_packet_size),
        };
        let (connect, properties, will, will_properties, login) = match decoded {
            Ok(Packet::Connect(c, p, w, wp, l)) => (c, p, w, wp, l),
            other => {
                info!(%peer, error = ?other.err(), "malformed CONNECT; refusing");
                if protocol == ProtocolVersion::V5 {
                    let packet = codec::connack_v5(0x81, Some("malformed CONNECT packet"));
                    let _ = write_goodbye(&mut client, &packet).await;
                }
                return;
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
            &connect.client_id,
            username,
            password,
        ) {
            Ok(admitted) => admitted,
            Err(refusal) => {
                info!(%peer, client_id = %connect.client_id, reason = %refusal.reason, "CONNECT refused");
                return refuse(&mut client, protocol, &refusal).await;
            }
        };
        let instance = admitted.instance;
        let token_rights = admitted
            .tokens
            .map(|grants| Arc::new(TokenRights::new(&instance.account_id, &instance.id, grants)));
        let Some(broker) = self.brokers.instance(&instance.id) else {
            let refusal = Refusal {
                v4_code: 0x03,
                v5_code: 0x88,
                reason: format!("instance {} has no running broker", instance.id),
            };
            warn!(instance = %instance.id, "CONNECT for an instance without a broker");
            return refuse(&mut client, protocol, &refusal).await;
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
                return refuse(&mut client, protocol, &refusal).await;
            }
            client_id = format!("mqgate-{}", uuid::Uuid::new_v4().simple());
        }

        // MQTT: a new connection with the same client id takes over the old
        // one. Do it before rumqttd sees the new CONNECT, so the old client
        // hears why (0x8E) instead of a bare close.
        if let Some(old) = broker.sessions.get(&client_id) {
            info!(instance = %instance.id, %client_id, "session taken over");
            old.end(
                reason::SESSION_TAKEN_OVER,
                "another connection with the same client id took over the session",
            )
            .await;
        }

        let mut upstream = match self
            .connect_upstream(
                broker.upstream(protocol),
                protocol,
                &client_id,
                &connect,
                properties.clone(),
                will,
                will_properties,
            )
            .await
        {
            Ok(upstream) => upstream,
            Err(e) => {
                warn!(instance = %instance.id, error = %e, "embedded broker unreachable");
                let refusal = Refusal {
                    v4_code: 0x03,
                    v5_code: 0x88,
                    reason: "the broker is unavailable; try again".into(),
                };
                return refuse(&mut client, protocol, &refusal).await;
            }
        };
        let mut upstream_buf = BytesMut::with_capacity(1024);
        let connack = match tokio::time::timeout(
            UPSTREAM_TIMEOUT,
            read_frame(&mut upstream, &mut upstream_buf, BROKER_MAX_FRAME),
        )
        .await
        {
            Ok(Ok(Some(frame))) if codec::frame_type(&frame) == packet_type::CONNACK => frame,
            other => {
                warn!(instance = %instance.id, %client_id, outcome = ?other.map(|r| r.map(|f| f.map(|f| f.len()))), "embedded broker did not answer CONNECT");
                let refusal = Refusal {
                    v4_code: 0x03,
                    v5_code: 0x88,
                    reason: "the broker did not accept the connection; try again".into(),
                };
                return refuse(&mut client, protocol, &refusal).await;
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
                let refusal = Refusal {
                    v4_code: 0x03,
                    v5_code: 0x88,
                    reason: "the broker answered with an unreadable CONNACK".into(),
                };
                return refuse(&mut client, protocol, &refusal).await;
            }
        };
        if !accepted {
            info!(instance = %instance.id, %client_id, "embedded broker refused CONNECT");
            let _ = write_goodbye(&mut client, &connack).await;
            return;
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
        if let Some(rights) = &token_rights {
            let _ = session.tokens.set(rights.clone());
        }
        broker.meter.connections_now(broker.sessions.len() as u64);
        if client.write_all(&connack).await.is_err() {
            return debug!(%client_id, "client left before CONNACK");
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

        let (client_rd, client_wr) = client.into_split();
        let (mut upstream_rd, mut upstream_wr) = upstream.into_split();
        let to_broker = ToBroker {
            client: client_rd,
            upstream: &mut upstream_wr,
            buf: client_buf,
            max_packet_size: self.max_packet_size,
            injected: handle.upstream,
            own_qos2: Vec::new(),
        };
        let to_client = ToClient {
            upstream: &mut upstream_rd,
            client: client_wr,
            buf: upstream_buf,
            control: handle.control,
        };
        let token_watch = async {
            match &token_rights {
                Some(rights) => watch_tokens(&broker, &session, rights).await,
                None => std::future::pending().await,
            }
        };
        let end = tokio::select! {
            end = to_broker.run(&broker, &session, &self.devices) => end,
            end = to_client.run(&broker, &session) => end,
            end = token_watch => end,
            _ = handle.hard_stop.cancelled() => End::HardStop,
        };
        match end {
            End::ClientDisconnected => {
                await_upstream_close(&mut upstream_rd, &mut upstream_wr).await
            }
            _ => close_upstream(&mut upstream_rd, &mut upstream_wr).await,
        }
        // Only now is the session gone for the registry, and for a takeover
        // waiting to connect the same client id upstream.
        drop(handle.guard);
        info!(instance = %instance.id, %client_id, ?end, "client disconnected");
    }

    #[allow(clippy::too_many_arguments)]
    async fn connect_upstream(
        &self,
        addr: SocketAddr,
        protocol: ProtocolVersion,
        client_id: &str,
        connect: &rumqttd::protocol::Connect,
        properties: Option<rumqttd::protocol::ConnectProperties>,
        will: Option<rumqttd::protocol::LastWill>,
        will_properties: Option<rumqttd::protocol::LastWillProperties>,
    ) -> std::io::Result<TcpStream> {
        let mut upstream = tokio::time::timeout(UPSTREAM_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
            })??;
        let _ = upstream.set_nodelay(true);
        let forwarded = Packet::Connect(
            rumqttd::protocol::Connect {
                // rumqttd refuses keepalive 0 (MQTT's "no keepalive"); the
                // longest keepalive it accepts is the nearest it can do.
                keep_alive: if connect.keep_alive == 0 {
                    u16::MAX
                } else {
                    connect.keep_alive
                },
                client_id: broker_client_id(client_id),
                clean_session: connect.clean_session,
            },
            properties,
            will,
            will_properties,
            Some(self.brokers.internal_login().clone()),
        );
        let mut out = BytesMut::new();
        let encoded = match protocol {
            ProtocolVersion::V311 => V4.write(forwarded, &mut out),
            ProtocolVersion::V5 => V5.write(forwarded, &mut out),
        };
        encoded.map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
        upstream.write_all(&out).await?;
        Ok(upstream)
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
async fn read_frame<R: AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut BytesMut,
    max_packet_size: usize,
) -> Result<Option<BytesMut>, FrameError> {
    loop {
        if let Some(len) = codec::frame_len(buf, max_packet_size)? {
            return Ok(Some(buf.split_to(len)));
        }
        buf.reserve(1024);
        match stream.read_buf(buf).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => {}
        }
    }
}

/// Decides whether rumqttd accepted the connection and, for an MQTT 5 client
/// whose client id we assigned, adds the Assigned Client Identifier property
/// to the CONNACK (MQTT 5 requires it; 3.1.1 has no way to say it).
fn patch_connack(
    frame: BytesMut,
    protocol: ProtocolVersion,
    assigned_client_id: Option<&str>,
) -> Result<(BytesMut, bool), &'static str> {
    let (_, code) = codec::connack_code(&frame).ok_or("not a CONNACK")?;
    let accepted = code == 0;
    match (protocol, assigned_client_id) {
        (ProtocolVersion::V5, Some(id)) if accepted => {
            let patched =
                codec::connack_v5_with_assigned_id(&frame, id).ok_or("malformed CONNACK")?;
            Ok((BytesMut::from(&patched[..]), accepted))
        }
        _ => Ok((frame, accepted)),
    }
}

async fn refuse(client: &mut TcpStream, protocol: ProtocolVersion, refusal: &Refusal) {
    let packet = match protocol {
        ProtocolVersion::V311 => codec::connack_v4(refusal.v4_code),
        ProtocolVersion::V5 => codec::connack_v5(refusal.v5_code, Some(&refusal.reason)),
    };
    let _ = write_goodbye(client, &packet).await;
}

async fn write_goodbye(client: &mut TcpStream, packet: &[u8]) -> std::io::Result<()> {
    tokio::time::timeout(GOODBYE_TIMEOUT, async {
        client.write_all(packet).await?;
        client.shutdown().await
    })
    .await
    .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

/// Ends a connection to rumqttd cleanly: FIN, then read (and discard) until
/// rumqttd closes its side, which its link does right after telling the
/// router that the connection is gone.
///
/// Why: rumqttd reuses connection ids. A connection dropped abruptly can be
/// reported gone by its link after the router has already dropped it (say,
/// for a new connection with the same client id) and given its id to a new
/// connection, which that late report then ends. Once rumqttd has closed
/// its side, the report is queued before anything this process sends next.
async fn close_upstream(upstream_rd: &mut OwnedReadHalf, upstream_wr: &mut OwnedWriteHalf) {
    let _ = tokio::time::timeout(UPSTREAM_CLOSE_TIMEOUT, async {
        let _ = upstream_wr.shutdown().await;
        let mut sink = [0u8; 4096];
        while upstream_rd.read(&mut sink).await.is_ok_and(|n| n > 0) {}
    })
    .await;
}

/// After a client's DISCONNECT: lets rumqttd close the connection itself,
/// sending no FIN first.
///
/// Why: rumqttd's router removes a connection when it reads DISCONNECT, and
/// its link reports the connection gone a second time if it sees the socket
/// close before it sees the router's drop. By then the router may have given
/// the connection id to a new connection (of any client), which that second
/// report ends right after its CONNACK. Left open, the socket stays quiet
/// and the link ends on the router's drop, which it does not report.
async fn await_upstream_close(upstream_rd: &mut OwnedReadHalf, upstream_wr: &mut OwnedWriteHalf) {
    let closed = tokio::time::timeout(UPSTREAM_CLOSE_TIMEOUT, async {
        let mut sink = [0u8; 4096];
        while upstream_rd.read(&mut sink).await.is_ok_and(|n| n > 0) {}
    })
    .await;
    if closed.is_err() {
        close_upstream(upstream_rd, upstream_wr).await;
    }
}

/// Client to broker: forwards whole frames, starting with whatever the
/// client sent right behind its CONNECT, and sends the packets the API
/// injects between them.
struct ToBroker<'a> {
    client: OwnedReadHalf,
    upstream: &'a mut OwnedWriteHalf,
    buf: BytesMut,
    max_packet_size: usize,
    injected: mpsc::Receiver<Injected>,
    /// Packet ids of QoS 2 token uploads the relay answered with PUBREC.
    own_qos2: Vec<u16>,
}

impl ToBroker<'_> {
    async fn run(
        mut self,
        broker: &InstanceBroker,
        session: &Arc<Session>,
        devices: &DeviceStore,
    ) -> End {
        let protocol = session.info.protocol;
        let stats = &session.stats;
        // Token-mode logins only: every other login may use every topic of
        // its instance, and pays nothing for the checks below.
        let tokens = session.tokens.get().cloned();
        loop {
            // Every complete frame in the buffer, checked and counted; the
            // ones the relay answers itself are taken out of the stream.
            let mut whole = 0;
            loop {
                let frame_at = &self.buf[whole..];
                let len = match codec::frame_len(frame_at, self.max_packet_size) {
                    Ok(Some(len)) => len,
                    Ok(None) => break,
                    Err(e) => return End::ClientProtocol(e),
                };
                let kind = codec::frame_type(frame_at);
                if !codec::client_may_send(kind) {
                    return End::ClientProtocol(FrameError::Forbidden(kind));
                }
                stats.recv_pkt.fetch_add(1, Ordering::Relaxed);
                match kind {
                    packet_type::PUBLISH => {
                        stats.recv_msg.fetch_add(1, Ordering::Relaxed);
                        if let Some(rights) = &tokens
                            && let Some(special) = publish_verdict(rights, &frame_at[..len])
                        {
                            if let Err(end) = self.forward(whole).await {
                                return end;
                            }
                            let frame = self.buf.split_to(len);
                            let outcome = match special {
                                Special::Upload => {
                                    self.upload_token(session, rights, devices, frame).await
                                }
                                Special::Refused(topic) => {
                                    refuse_publish(session, &frame, &topic).await
                                }
                            };
                            match outcome {
                                Outcome::Continue => {}
                                Outcome::End(end) => return end,
                                // The other half writes the DISCONNECT and ends
                                // the connection; forward nothing more.
                                Outcome::AwaitDisconnect => return std::future::pending().await,
                            }
                            whole = 0;
                            continue;
                        }
                        broker.meter.published(codec::publish_qos(frame_at));
                    }
                    // The client's PUBREL of a QoS 2 token upload, which
                    // the relay acknowledged itself.
                    packet_type::PUBREL if !self.own_qos2.is_empty() => {
                        let id = codec::packet_id(&frame_at[..len]);
                        if let Some(at) = self.own_qos2.iter().position(|p| Some(*p) == id) {
                            self.own_qos2.swap_remove(at);
                            if let Err(end) = self.forward(whole).await {
                                return end;
                            }
                            let _ = self.buf.split_to(len);
                            session.tell_client(codec::pubcomp(id.unwrap_or(0))).await;
                            whole = 0;
                            continue;
                        }
                    }
                    // The client acknowledges a QoS 1 or 2 delivery.
                    packet_type::PUBACK | packet_type::PUBCOMP => {
                        stats.inflight.fetch_sub(1, Ordering::Relaxed);
                    }
                    // The client's goodbye: forward it (it tells rumqttd to
                    // drop the will) and nothing after it.
                    packet_type::DISCONNECT => {
                        let end = whole + len;
                        if let Err(end) = self.forward(end).await {
                            return end;
                        }
                        return End::ClientDisconnected;
                    }
                    packet_type::SUBSCRIBE => match &tokens {
                        None => track_request(session, protocol, &frame_at[..len]),
                        Some(rights) => {
                            if let Err(end) = self.forward(whole).await {
                                return end;
                            }
                            let frame = self.buf.split_to(len);
                            if let Err(end) =
                                self.subscribe_with_tokens(session, rights, frame).await
                            {
                                return end;
                            }
                            whole = 0;
                            continue;
                        }
                    },
                    packet_type::UNSUBSCRIBE => {
                        if let Err(end) = self.forward(whole).await {
                            return end;
                        }
                        let frame = self.buf.split_to(len);
                        if let Err(end) = self.unsubscribe(session, frame).await {
                            return end;
                        }
                        whole = 0;
                        continue;
                    }
                    _ => {}
                }
                whole += len;
            }
            if let Err(end) = self.forward(whole).await {
                return end;
            }
            self.buf.reserve(4096);
            tokio::select! {
                read = self.client.read_buf(&mut self.buf) => match read {
                    Ok(0) => return End::ClientClosed,
                    Ok(n) => {
                        stats.recv_cnt.fetch_add(1, Ordering::Relaxed);
                        stats.recv_oct.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(e) => return End::ClientError(e),
                },
                // Only whole frames have been written: an injected packet
                // starts on a frame boundary.
                Some(injected) = self.injected.recv() => {
                    if self.upstream.write_all(&injected.frame).await.is_err() {
                        return End::BrokerClosed;
                    }
                }
            }
        }
    }

    /// Forwards the first `len` bytes of the buffer (whole frames) to the
    /// broker.
    async fn forward(&mut self, len: usize) -> Result<(), End> {
        if len == 0 {
            return Ok(());
        }
        let chunk = self.buf.split_to(len);
        self.upstream
            .write_all(&chunk)
            .await
            .map_err(|_| End::BrokerClosed)
    }

    /// A token-mode client's SUBSCRIBE: filters its R tokens cover go to
    /// rumqttd, the others get a failure code (0x80 in 3.1.1, 0x87 "not
    /// authorized" in 5), and the client one SUBACK with a code per filter
    /// in its order. The notice topics (`$SYS/token...`) are granted here
    /// at QoS 0: the relay sends those notices itself.
    async fn subscribe_with_tokens(
        &mut self,
        session: &Arc<Session>,
        rights: &TokenRights,
        frame: BytesMut,
    ) -> Result<(), End> {
        let protocol = session.info.protocol;
        let original = frame.clone();
        let Some(Packet::Subscribe(subscribe, properties)) = decode(protocol, frame) else {
            return Err(End::ClientProtocol(FrameError::Malformed));
        };
        let refused_code = match protocol {
            ProtocolVersion::V311 => 0x80,
            ProtocolVersion::V5 => 0x87,
        };
        // Per filter: Some(code) decided here, None: rumqttd decides.
        let decided: Vec<Option<u8>> = subscribe
            .filters
            .iter()
            .map(|f| {
                if token_rules::is_notice_topic(&f.path) {
                    Some(0x00)
                } else if rights.may_subscribe(&f.path) {
                    None
                } else {
                    info!(client_id = %session.info.client_id, filter = %f.path, "SUBSCRIBE refused: no valid R or RW token covers the filter");
                    Some(refused_code)
                }
            })
            .collect();
        if decided.iter().all(Option::is_none) {
            track_request(session, protocol, &original);
            return self
                .upstream
                .write_all(&original)
                .await
                .map_err(|_| End::BrokerClosed);
        }
        let allowed: Vec<rumqttd::protocol::Filter> = subscribe
            .filters
            .iter()
            .zip(&decided)
            .filter(|(_, d)| d.is_none())
            .map(|(f, _)| f.clone())
            .collect();
        let mut answer = None;
        if !allowed.is_empty() {
            let packet_id = session.next_packet_id();
            let awaited = Awaited::Subscribe(
                allowed
                    .iter()
                    .map(|f| (f.path.clone(), options_of(f)))
                    .collect(),
            );
            let packet = Packet::Subscribe(
                rumqttd::protocol::Subscribe {
                    pkid: packet_id,
                    filters: allowed,
                },
                properties,
            );
            let Ok(frame) = super::encode(protocol, packet) else {
                return Err(End::ClientProtocol(FrameError::Malformed));
            };
            answer = Some((packet_id, session.expect_ack(packet_id, awaited)));
            if self.upstream.write_all(&frame).await.is_err() {
                return Err(End::BrokerClosed);
            }
        }
        let session = session.clone();
        let client_packet_id = subscribe.pkid;
        tokio::spawn(async move {
            let mut granted = Vec::new();
            if let Some((packet_id, answer)) = answer {
                match tokio::time::timeout(ACK_TIMEOUT, answer).await {
                    Ok(Ok(codes)) => granted = codes,
                    _ => session.forget_injected(packet_id),
                }
            }
            let mut granted = granted.into_iter();
            let codes: Vec<u8> = decided
                .into_iter()
                .map(|d| d.unwrap_or_else(|| granted.next().unwrap_or(refused_code)))
                .collect();
            let v5 = protocol == ProtocolVersion::V5;
            session
                .tell_client(codec::suback(v5, client_packet_id, &codes))
                .await;
        });
        Ok(())
    }

    /// A token-mode client's PUBLISH to `$SYS/uploadToken`: the payload
    /// `{"token": "...", "type": "R" | "W" | "RW"}` names a token applied for
    /// on the connection's instance by its account; it replaces the
    /// connection's token of that type. Never forwarded to rumqttd.
    async fn upload_token(
        &mut self,
        session: &Arc<Session>,
        rights: &TokenRights,
        devices: &DeviceStore,
        frame: BytesMut,
    ) -> Outcome {
        let qos = codec::publish_qos(&frame);
        let packet_id = codec::publish_topic(&frame).and_then(|(_, id)| id);
        let protocol = session.info.protocol;
        let Some(Packet::Publish(publish, _)) = decode(protocol, frame) else {
            return Outcome::End(End::ClientProtocol(FrameError::Malformed));
        };
        let client_id = &session.info.client_id;
        match token_rules::uploaded_grant(rights, devices, &publish.payload) {
            Ok(grant) => {
                info!(%client_id, kind = grant.kind.label(), "token uploaded");
                rights.upload(grant);
                if let Some(id) = packet_id {
                    if qos == 2 {
                        self.own_qos2.push(id);
                    }
                    session.tell_client(codec::publish_ack(qos, id)).await;
                }
            }
            Err(reason) => {
                info!(%client_id, %reason, "token upload refused");
                match (protocol, packet_id) {
                    (ProtocolVersion::V5, Some(id)) => {
                        let refusal = codec::publish_refusal_v5(qos, id, 0x87, &reason);
                        session.tell_client(refusal).await;
                    }
                    // 3.1.1 has no refusal code: the upload is acknowledged
                    // and ignored (the log says why).
                    (ProtocolVersion::V311, Some(id)) => {
                        if qos == 2 {
                            self.own_qos2.push(id);
                        }
                        session.tell_client(codec::publish_ack(qos, id)).await;
                    }
                    (_, None) => {}
                }
            }
        }
        Outcome::Continue
    }

    /// A client's UNSUBSCRIBE, answered the way MQTT requires: rumqttd sends
    /// nothing back for a filter that is not subscribed (the client would
    /// wait forever) and one UNSUBACK per removed filter, all with the same
    /// packet id. So each subscribed filter goes to rumqttd alone under a
    /// packet id of ours, and the client gets one UNSUBACK once rumqttd has
    /// acknowledged them all (MQTT 5: 0x00 per removed filter, 0x11 "no
    /// subscription existed" for the others).
    async fn unsubscribe(&mut self, session: &Arc<Session>, frame: BytesMut) -> Result<(), End> {
        let protocol = session.info.protocol;
        let Some(Packet::Unsubscribe(unsubscribe, _)) = decode(protocol, frame) else {
            return Err(End::ClientProtocol(FrameError::Malformed));
        };
        let subscribed = session.subscribed_among(&unsubscribe.filters);
        let codes: Vec<u8> = unsubscribe
            .filters
            .iter()
            .map(|f| if subscribed.contains(f) { 0x00 } else { 0x11 })
            .collect();
        let mut answers = Vec::with_capacity(subscribed.len());
        for filter in subscribed {
            let packet_id = session.next_packet_id();
            let packet = super::unsubscribe_packet(packet_id, filter.clone());
            let Ok(frame) = super::encode(protocol, packet) else {
                return Err(End::ClientProtocol(FrameError::Malformed));
            };
            answers.push((
                packet_id,
                session.expect_ack(packet_id, Awaited::Unsubscribe(vec![filter])),
            ));
            if self.upstream.write_all(&frame).await.is_err() {
                return Err(End::BrokerClosed);
            }
        }
        let unsuback = codec::unsuback(protocol == ProtocolVersion::V5, unsubscribe.pkid, &codes);
        let session = session.clone();
        tokio::spawn(async move {
            for (packet_id, answer) in answers {
                if tokio::time::timeout(ACK_TIMEOUT, answer).await.is_err() {
                    session.forget_injected(packet_id);
                }
            }
            session.tell_client(unsuback).await;
        });
        Ok(())
    }
}

/// A PUBLISH of a token-mode client that is not simply forwarded.
enum Special {
    Upload,
    Refused(String),
}

/// What the relay does after a PUBLISH it handled itself.
enum Outcome {
    Continue,
    End(End),
    /// A DISCONNECT is on its way to the client (MQTT 5).
    AwaitDisconnect,
}

/// `None`: the tokens allow the PUBLISH (forward it).
fn publish_verdict(rights: &TokenRights, frame: &[u8]) -> Option<Special> {
    let topic = codec::publish_topic(frame).and_then(|(t, _)| std::str::from_utf8(t).ok());
    match topic {
        Some(token_rules::UPLOAD_TOPIC) => Some(Special::Upload),
        Some(topic) if rights.may_publish(topic) => None,
        Some(topic) => Some(Special::Refused(topic.to_string())),
        // An alias-only MQTT 5 PUBLISH (empty topic) or a malformed one:
        // tokens name topics, so it is refused.
        None => Some(Special::Refused(String::new())),
    }
}

/// A PUBLISH the client's tokens do not allow: MQTT 3.1.1 has no refusal
/// code, so the connection is closed (Alibaba: "resource auth failed");
/// MQTT 5 gets PUBACK (QoS 1) or PUBREC (QoS 2) 0x87, or DISCONNECT 0x87
/// for QoS 0, which has no acknowledgement.
async fn refuse_publish(session: &Session, frame: &[u8], topic: &str) -> Outcome {
    let reason =
        format!("not authorized to publish to {topic:?}: no valid W or RW token covers it");
    info!(client_id = %session.info.client_id, %reason, "PUBLISH refused");
    let qos = codec::publish_qos(frame);
    let packet_id = codec::publish_topic(frame).and_then(|(_, id)| id);
    match (session.info.protocol, packet_id) {
        (ProtocolVersion::V311, _) => Outcome::End(End::Refused(reason)),
        (ProtocolVersion::V5, Some(id)) => {
            session
                .tell_client(codec::publish_refusal_v5(qos, id, 0x87, &reason))
                .await;
            Outcome::Continue
        }
        (ProtocolVersion::V5, None) => {
            session.request_disconnect(0x87, &reason);
            Outcome::AwaitDisconnect
        }
    }
}

/// Tells a token-mode client about its tokens as they near expiry, expire
/// or are revoked, and removes the subscriptions its rights no longer
/// cover. Runs beside the relay for the connection's life.
async fn watch_tokens(broker: &InstanceBroker, session: &Session, rights: &TokenRights) -> End {
    let mut revocations = broker.token_events();
    let v5 = session.info.protocol == ProtocolVersion::V5;
    loop {
        let now = token_rules::now_ms();
        let (notices, next) = rights.due(now);
        // The rights go first, then the client is told: once it reads the
        // notice, nothing more arrives on what the token allowed.
        let lost_reading = notices
            .iter()
            .any(|n| matches!(n, token_rules::Notice::Invalid { kind, .. } if kind.reads()));
        if lost_reading {
            let uncovered: Vec<String> = session
                .subscriptions()
                .into_keys()
                .filter(|f| !rights.may_subscribe(f))
                .collect();
            if !uncovered.is_empty()
                && let Err(e) = broker
                    .unsubscribe_for(&session.info.client_id, uncovered)
                    .await
            {
                warn!(client_id = %session.info.client_id, error = %e, "could not remove subscriptions of an ended token");
            }
        }
        for notice in &notices {
            info!(client_id = %session.info.client_id, ?notice, "token notice");
            let (topic, payload) = notice.message();
            session
                .tell_client(codec::publish_qos0(v5, topic, payload.as_bytes()))
                .await;
        }
        let wait = match next {
            Some(at) => Duration::from_millis((at - now).clamp(0, i64::MAX) as u64),
            None => Duration::from_secs(3600),
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = rights.uploaded.notified() => {}
            changed = revocations.changed() => {
                if changed.is_err() {
                    // The broker is gone: so is this connection, soon.
                    return std::future::pending().await;
                }
            }
        }
    }
}

/// One complete frame, decoded with rumqttd's codec for the connection's
/// protocol; `None` if it is malformed.
fn decode(protocol: ProtocolVersion, mut frame: BytesMut) -> Option<Packet> {
    let len = frame.len();
    match protocol {
        ProtocolVersion::V311 => V4.read_mut(&mut frame, len),
        ProtocolVersion::V5 => V5.read_mut(&mut frame, len),
    }
    .ok()
}

/// Remembers what a client's own SUBSCRIBE or UNSUBSCRIBE asks, so that the
/// broker's acknowledgement can settle the session's subscriptions.
fn track_request(session: &Session, protocol: ProtocolVersion, frame: &[u8]) {
    let (packet_id, awaited) = match decode(protocol, BytesMut::from(frame)) {
        Some(Packet::Subscribe(subscribe, _)) => (
            subscribe.pkid,
            Awaited::Subscribe(
                subscribe
                    .filters
                    .into_iter()
                    .map(|f| (f.path.clone(), options_of(&f)))
                    .collect(),
            ),
        ),
        Some(Packet::Unsubscribe(unsubscribe, _)) => {
            (unsubscribe.pkid, Awaited::Unsubscribe(unsubscribe.filters))
        }
        // rumqttd will refuse it itself; nothing to track.
        _ => return,
    };
    session
        .pending
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .own
        .insert(packet_id, awaited);
}

fn options_of(filter: &rumqttd::protocol::Filter) -> SubscriptionOptions {
    use rumqttd::protocol::RetainForwardRule;
    SubscriptionOptions {
        qos: filter.qos as u8,
        nl: filter.nolocal as u8,
        rap: filter.preserve_retain as u8,
        rh: match filter.retain_forward_rule {
            RetainForwardRule::OnEverySubscribe => 0,
            RetainForwardRule::OnNewSubscribe => 1,
            RetainForwardRule::Never => 2,
        },
    }
}

/// Applies a broker acknowledgement to the session's subscriptions; returns
/// the injector's reply channel if the API sent the request (the frame is
/// then not forwarded to the client).
fn settle_ack(
    session: &Session,
    packet_id: u16,
    codes: &[u8],
) -> Option<(tokio::sync::oneshot::Sender<Vec<u8>>, Vec<u8>)> {
    let (awaited, reply) = {
        let mut pending = session.pending.lock().unwrap_or_else(|e| e.into_inner());
        match pending.injected.remove(&packet_id) {
            Some((awaited, reply)) => (awaited, Some(reply)),
            None => (pending.own.remove(&packet_id)?, None),
        }
    };
    let mut subscriptions = session
        .subscriptions
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    match awaited {
        Awaited::Subscribe(filters) => {
            for (i, (filter, options)) in filters.into_iter().enumerate() {
                // Granted: a code below 0x80 (the QoS granted).
                if codes.get(i).is_some_and(|c| *c < 0x80) {
                    let granted = SubscriptionOptions {
                        qos: codes[i],
                        ..options
                    };
                    subscriptions.insert(filter, granted);
                }
            }
        }
        Awaited::Unsubscribe(filters) => {
            for (i, filter) in filters.into_iter().enumerate() {
                // 3.1.1 UNSUBACK has no codes: success.
                if codes.get(i).is_none_or(|c| *c < 0x80) {
                    subscriptions.remove(&filter);
                }
            }
        }
    }
    reply.map(|r| (r, codes.to_vec()))
}

/// Broker to client: forwards whole frames, keeps the counters, answers the
/// API's own acknowledgements instead of forwarding them, and obeys
/// commands between frames.
struct ToClient<'a> {
    upstream: &'a mut OwnedReadHalf,
    client: OwnedWriteHalf,
    buf: BytesMut,
    control: mpsc::Receiver<Control>,
}

impl ToClient<'_> {
    async fn run(mut self, broker: &InstanceBroker, session: &Session) -> End {
        let protocol_v5 = session.info.protocol == ProtocolVersion::V5;
        let stats = &session.stats;
        loop {
            let mut whole = 0;
            let mut frames = 0u64;
            // Frames to leave out (acknowledgements of injected packets).
            let mut swallowed: Vec<std::ops::Range<usize>> = Vec::new();
            loop {
                let frame_at = &self.buf[whole..];
                match codec::frame_len(frame_at, BROKER_MAX_FRAME) {
                    Ok(Some(len)) => {
                        match codec::frame_type(frame_at) {
                            packet_type::PUBLISH => {
                                let qos = codec::publish_qos(frame_at);
                                stats.send_msg.fetch_add(1, Ordering::Relaxed);
                                if qos > 0 {
                                    stats.inflight.fetch_add(1, Ordering::Relaxed);
                                }
                                broker.meter.delivered(qos);
                            }
                            packet_type::SUBACK | packet_type::UNSUBACK => {
                                if let Some((packet_id, codes)) =
                                    codec::ack_codes(&frame_at[..len], protocol_v5)
                                    && let Some((reply, codes)) =
                                        settle_ack(session, packet_id, &codes)
                                {
                                    let _ = reply.send(codes);
                                    swallowed.push(whole..whole + len);
                                }
                            }
                            _ => {}
                        }
                        frames += 1;
                        whole += len;
                    }
                    Ok(None) => break,
                    Err(e) => return End::BrokerProtocol(e),
                }
            }
            if whole > 0 {
                let chunk = self.buf.split_to(whole);
                stats
                    .send_pkt
                    .fetch_add(frames - swallowed.len() as u64, Ordering::Relaxed);
                let written = if swallowed.is_empty() {
                    self.client.write_all(&chunk).await.map(|_| chunk.len())
                } else {
                    let mut kept = Vec::with_capacity(chunk.len());
                    let mut at = 0;
                    for range in &swallowed {
                        kept.extend_from_slice(&chunk[at..range.start]);
                        at = range.end;
                    }
                    kept.extend_from_slice(&chunk[at..]);
                    self.client.write_all(&kept).await.map(|_| kept.len())
                };
                match written {
                    Ok(0) => {}
                    Ok(n) => {
                        stats.send_cnt.fetch_add(1, Ordering::Relaxed);
                        stats.send_oct.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(_) => return End::ClientClosed,
                }
            }
            self.buf.reserve(4096);
            tokio::select! {
                biased;
                Some(command) = self.control.recv() => match command {
                    Control::Disconnect { reason_code, reason } => {
                        if protocol_v5 {
                            let packet = codec::disconnect_v5(reason_code, Some(&reason));
                            let _ = tokio::time::timeout(GOODBYE_TIMEOUT, self.client.write_all(&packet)).await;
                        }
                        let _ = tokio::time::timeout(GOODBYE_TIMEOUT, self.client.shutdown()).await;
                        return End::Disconnected(reason_code);
                    }
                    Control::Frame(frame) => {
                        if self.client.write_all(&frame).await.is_err() {
                            return End::ClientClosed;
                        }
                        stats.send_pkt.fetch_add(1, Ordering::Relaxed);
                        stats.send_cnt.fetch_add(1, Ordering::Relaxed);
                        stats.send_oct.fetch_add(frame.len() as u64, Ordering::Relaxed);
                    }
                },
                read = self.upstream.read_buf(&mut self.buf) => match read {
                    Ok(0) | Err(_) => return End::BrokerClosed,
                    Ok(_) => {}
                },
            }
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
