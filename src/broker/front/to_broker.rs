//! Client to broker: the relay's half that reads the client. It forwards
//! whole frames, answers what rumqttd would answer wrongly (UNSUBSCRIBE)
//! and, for a login whose topics are bound (tokens, custom auth), checks
//! every PUBLISH and SUBSCRIBE against the connection's rights.

use super::End;
use super::client_io::ClientRead;
use super::link::ToRouter;
use crate::broker::InstanceBroker;
use crate::broker::codec::{self, FrameError, packet_type};
use crate::broker::registry::{
    ACK_TIMEOUT, Awaited, Injected, ProtocolVersion, Session, SubscriptionOptions,
};
use crate::broker::rights::TopicRights;
use crate::broker::tokens::{self as token_rules, TokenRights};
use crate::devices::DeviceStore;
use crate::trace::{EventNames, MessageAction, Tracer};
use bytes::BytesMut;
use rumqttd::protocol::{Packet, Protocol, v4::V4, v5::V5};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::info;

// The rarely taken paths (a token upload, a refused PUBLISH, a checked
// SUBSCRIBE, an UNSUBSCRIBE) are boxed where they are awaited: inline,
// their state would make every connection's task larger while it idles.

/// Client to broker: forwards whole frames, starting with whatever the
/// client sent right behind its CONNECT, and sends the packets the API
/// injects between them.
pub(super) struct ToBroker<'a> {
    pub(super) client: ClientRead,
    pub(super) upstream: &'a mut ToRouter,
    pub(super) buf: BytesMut,
    pub(super) max_packet_size: usize,
    /// The longest the client may stay silent (`None`: keepalive 0).
    pub(super) keep_alive: Option<Duration>,
    pub(super) injected: mpsc::Receiver<Injected>,
    /// Packet ids of QoS 2 token uploads the relay answered with PUBREC.
    pub(super) own_qos2: Vec<u16>,
    /// Packet ids of the client's QoS 2 PUBLISHes forwarded to rumqttd and
    /// awaiting their PUBREL, at most [`RECEIVE_MAXIMUM`]. rumqttd keeps
    /// each such PUBLISH until its PUBREL, with no limit of its own and
    /// once more for each resend of the same packet id: a client that
    /// never sends PUBREL would grow the router's memory without bound.
    pub(super) awaiting_pubrel: Vec<u16>,
    /// The MQTT 5 topic aliases the client set, as rumqttd holds them.
    pub(super) aliases: TopicAliases,
}

/// The topic aliases an MQTT 5 client set (client to broker), so that an
/// alias-only PUBLISH (empty topic name) is checked against the client's
/// rights and traced under its topic. Kept the way rumqttd keeps them: a
/// PUBLISH with a topic name and an alias (1 to [`TopicAliases::MAX`],
/// what rumqttd's CONNACK offers) sets it; one with an empty name uses
/// it. Only aliases of forwarded PUBLISHes are kept (rumqttd never sees a
/// refused one).
#[derive(Debug, Default)]
pub(super) struct TopicAliases {
    topics: std::collections::HashMap<u16, Vec<u8>>,
    bytes: usize,
}

impl TopicAliases {
    /// rumqttd's Topic Alias Maximum.
    pub(super) const MAX: u16 = 4096;
    /// Topic bytes kept per connection at most: an alias set past it is
    /// not resolved (its PUBLISHes are traced without a topic and, for a
    /// login with bound topics, refused), so that one client cannot make
    /// the front hold 4,096 topics of 64 KiB.
    pub(super) const MAX_BYTES: usize = 256 * 1024;

    fn resolve<'a>(&'a self, named: &'a [u8], alias: Option<u16>) -> Option<&'a [u8]> {
        match alias {
            Some(alias) if named.is_empty() => self.topics.get(&alias).map(Vec::as_slice),
            _ => Some(named),
        }
    }

    fn set(&mut self, named: &[u8], alias: Option<u16>) {
        let Some(alias) = alias.filter(|a| (1..=Self::MAX).contains(a)) else {
            return;
        };
        if named.is_empty() {
            return;
        }
        let old = self.topics.remove(&alias).map_or(0, |t| t.len());
        self.bytes -= old;
        if self.bytes + named.len() <= Self::MAX_BYTES {
            self.bytes += named.len();
            self.topics.insert(alias, named.to_vec());
        }
    }
}

/// The most QoS 2 PUBLISHes a client may have awaiting their PUBREL (its
/// unacknowledged incoming window): told to MQTT 5 clients as the CONNACK's
/// Receive Maximum; one more ends the connection (MQTT 5: DISCONNECT 0x93
/// "receive maximum exceeded"). QoS 1 PUBLISHes are acknowledged as they
/// reach the router and take no room. Above the default in-flight window
/// of common clients (rumqttc 100, paho and mosquitto 20).
pub(crate) const RECEIVE_MAXIMUM: u16 = 128;

/// How long the reading half waits, after a protocol error of an MQTT 5
/// client, for the writing half to send the DISCONNECT that says why and
/// end the connection (it writes between whole frames, within its send
/// timeout); past it, the connection ends without it.
const PROTOCOL_ERROR_GOODBYE: Duration = Duration::from_secs(5);

impl ToBroker<'_> {
    pub(super) async fn run(
        mut self,
        broker: &InstanceBroker,
        session: &Arc<Session>,
        devices: &DeviceStore,
        tracer: &Tracer,
    ) -> End {
        let end = self.read_client(broker, session, devices, tracer).await;
        match end {
            // MQTT 5 gives a protocol error its reason code (MQTT 5, 4.13:
            // the server should send DISCONNECT with it before closing):
            // the other half writes it between whole frames and ends the
            // connection, as End::Disconnected. 3.1.1 has no DISCONNECT
            // from the server: the connection just closes.
            End::ClientProtocol(error) if session.info.protocol == ProtocolVersion::V5 => {
                if session.request_disconnect(error.reason_code(), &error.to_string()) {
                    tokio::time::sleep(PROTOCOL_ERROR_GOODBYE).await;
                }
                End::ClientProtocol(error)
            }
            end => end,
        }
    }

    async fn read_client(
        &mut self,
        broker: &InstanceBroker,
        session: &Arc<Session>,
        devices: &DeviceStore,
        tracer: &Tracer,
    ) -> End {
        let tracing = tracer.enabled();
        let names = EventNames::new(
            &broker.instance_id,
            &session.info.client_id,
            &session.info.ip.to_string(),
        );
        let protocol = session.info.protocol;
        let stats = &session.stats;
        // Token and custom-auth logins only: every other login may use
        // every topic of its instance, and pays nothing for the checks
        // below.
        let rights = session.rights.get().cloned();
        // When the client was last heard from.
        // The keepalive timer is armed once and re-armed only when it
        // fires early (the client spoke since): re-arming it on every read
        // would cost a timer-wheel update per read.
        let mut heard_at = tokio::time::Instant::now();
        let mut silence = self
            .keep_alive
            .map(|limit| (limit, Box::pin(tokio::time::sleep_until(heard_at + limit))));
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
                // What rumqttd's decoder lets through (or calls malformed)
                // but MQTT requires the server to close the connection for:
                // reserved flags, a PUBLISH's wildcard or non-UTF-8 topic
                // name or repeated property, a SUBSCRIBE without filters.
                let v5 = protocol == ProtocolVersion::V5;
                let problem = codec::fixed_header_problem(frame_at).or_else(|| match kind {
                    packet_type::PUBLISH => codec::publish_problem(&frame_at[..len], v5),
                    packet_type::SUBSCRIBE | packet_type::UNSUBSCRIBE => {
                        codec::subscribe_problem(&frame_at[..len], v5)
                    }
                    _ => None,
                });
                if let Some(problem) = problem {
                    if let Err(end) = self.forward(whole).await {
                        return end;
                    }
                    return End::ClientProtocol(problem);
                }
                stats.recv_pkt.fetch_add(1, Ordering::Relaxed);
                match kind {
                    packet_type::PUBLISH => {
                        stats.recv_msg.fetch_add(1, Ordering::Relaxed);
                        let v5 = protocol == ProtocolVersion::V5;
                        // The topic and its alias matter to the rights and
                        // the trace only: a connection with neither reads
                        // neither.
                        let reads_topic = rights.is_some() || tracing;
                        let alias = match v5 && reads_topic {
                            true => codec::publish_topic_alias(&frame_at[..len]),
                            false => None,
                        };
                        let named = match reads_topic {
                            true => codec::publish_topic(&frame_at[..len]).map(|(t, _)| t),
                            false => None,
                        };
                        if let Some(rights) = &rights
                            && let Some(special) = publish_verdict(
                                rights,
                                named.and_then(|named| self.aliases.resolve(named, alias)),
                            )
                        {
                            if let Err(end) = self.forward(whole).await {
                                return end;
                            }
                            let frame = self.buf.split_to(len);
                            let outcome = match special {
                                Special::Upload(tokens) => {
                                    Box::pin(self.upload_token(session, &tokens, devices, frame))
                                        .await
                                }
                                Special::Refused(reason) => {
                                    Box::pin(refuse_publish(session, &frame, reason)).await
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
                        if let Some(named) = named
                            && alias.is_some()
                        {
                            self.aliases.set(named, alias);
                        }
                        let qos = codec::publish_qos(frame_at);
                        if qos == 2
                            && let Some((_, Some(id))) = codec::publish_topic(&frame_at[..len])
                        {
                            if self.awaiting_pubrel.contains(&id) {
                                // A resend of a PUBLISH rumqttd holds
                                // already: acknowledged again, not
                                // forwarded (rumqttd would keep, and
                                // later deliver, a second copy).
                                if let Err(end) = self.forward(whole).await {
                                    return end;
                                }
                                let _ = self.buf.split_to(len);
                                session.tell_client(codec::publish_ack(2, id)).await;
                                whole = 0;
                                continue;
                            }
                            if self.awaiting_pubrel.len() >= usize::from(RECEIVE_MAXIMUM) {
                                if let Err(end) = self.forward(whole).await {
                                    return end;
                                }
                                return End::ClientProtocol(FrameError::ReceiveMaximumExceeded(
                                    RECEIVE_MAXIMUM,
                                ));
                            }
                            self.awaiting_pubrel.push(id);
                        }
                        broker.meter.published(qos);
                        if tracing && let Some(parts) = codec::publish_parts(&frame_at[..len], v5) {
                            let topic =
                                self.aliases.resolve(parts.topic, alias).unwrap_or_default();
                            tracer.published(
                                &names,
                                MessageAction::PubMqtt,
                                topic,
                                parts.payload,
                                qos,
                            );
                        }
                    }
                    // The client's PUBREL of a QoS 2 token upload, which
                    // the relay acknowledged itself, or of a PUBLISH
                    // rumqttd holds.
                    packet_type::PUBREL => {
                        let id = codec::packet_id(&frame_at[..len]);
                        if let Some(at) = self.awaiting_pubrel.iter().position(|p| Some(*p) == id) {
                            self.awaiting_pubrel.swap_remove(at);
                            // An empty window holds no memory.
                            if self.awaiting_pubrel.is_empty() {
                                self.awaiting_pubrel = Vec::new();
                            }
                        }
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
                        if tracing && let Some(id) = codec::packet_id(&frame_at[..len]) {
                            trace_ack(tracer, &names, session, id);
                        }
                    }
                    // The client's goodbye: forward it (it tells rumqttd to
                    // drop the will) and nothing after it.
                    packet_type::DISCONNECT => {
                        // MQTT 5: a DISCONNECT with any reason but 0x00
                        // keeps the will (it is published once the
                        // connection closes); rumqttd 0.20 drops it on
                        // every DISCONNECT, and waits forever on one that
                        // carries its reason code alone (remaining length
                        // 1) for a property length that never comes.
                        let body = codec::frame_body(&frame_at[..len]);
                        let reason = (protocol == ProtocolVersion::V5)
                            .then(|| body.first().copied())
                            .flatten();
                        if reason.is_some_and(|code| code != 0x00) {
                            // Not forwarded: the connection ends as if
                            // dropped, so rumqttd publishes the will.
                            if let Err(end) = self.forward(whole).await {
                                return end;
                            }
                            return End::ClientDisconnectedWithWill;
                        }
                        if let Err(end) = self.forward(whole).await {
                            return end;
                        }
                        let frame = self.buf.split_to(len);
                        let frame = if frame.len() == 3 {
                            // The same DISCONNECT, with its (empty)
                            // property length written out.
                            BytesMut::from(&[frame[0], 0x02, frame[2], 0x00][..])
                        } else {
                            frame
                        };
                        if let Err(end) = self.upstream.send(frame).await {
                            return end;
                        }
                        return End::ClientDisconnected;
                    }
                    packet_type::SUBSCRIBE => match &rights {
                        None => {
                            let frame = &mut self.buf[whole..whole + len];
                            if !track_request(session, protocol, frame) {
                                return End::ClientProtocol(FrameError::NoPacketId);
                            }
                        }
                        Some(rights) => {
                            if let Err(end) = self.forward(whole).await {
                                return end;
                            }
                            let frame = self.buf.split_to(len);
                            if let Err(end) =
                                Box::pin(self.subscribe_checked(session, rights, frame)).await
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
                        if let Err(end) = Box::pin(self.unsubscribe(session, frame)).await {
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
            // (An empty buffer is given back while the read waits: see
            // `ClientRead::read_into`.)
            let silent = async {
                match &mut silence {
                    Some((limit, timer)) => {
                        timer.as_mut().await;
                        let due = heard_at + *limit;
                        if tokio::time::Instant::now() >= due {
                            true
                        } else {
                            timer.as_mut().reset(due);
                            false
                        }
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                read = self.client.read_into(&mut self.buf) => match read {
                    Ok(0) => return End::ClientClosed,
                    Ok(n) => {
                        stats.recv_cnt.fetch_add(1, Ordering::Relaxed);
                        stats.recv_oct.fetch_add(n as u64, Ordering::Relaxed);
                        stats.last_recv_ms.store(crate::trace::now_ms(), Ordering::Relaxed);
                        heard_at = tokio::time::Instant::now();
                    }
                    Err(e) => return End::ClientError(e),
                },
                // Only whole frames have been handed over: an injected
                // packet starts on a frame boundary.
                Some(injected) = self.injected.recv() => {
                    let frame = BytesMut::from(&injected.frame[..]);
                    if let Err(end) = self.upstream.send(frame).await {
                        return end;
                    }
                }
                silent = silent => if silent {
                    return End::KeepAliveTimeout;
                },
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
        self.upstream.send(chunk).await
    }

    /// The SUBSCRIBE of a client whose topics are bound: filters its rights
    /// allow go to rumqttd, the others get a failure code (0x80 in 3.1.1,
    /// 0x87 "not authorized" in 5), and the client one SUBACK with a code
    /// per filter in its order. For a token-mode client, the notice topics
    /// (`$SYS/token...`) are granted here at QoS 0: the relay sends those
    /// notices itself.
    async fn subscribe_checked(
        &mut self,
        session: &Arc<Session>,
        rights: &TopicRights,
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
                if rights.tokens().is_some() && token_rules::is_notice_topic(&f.path) {
                    return Some(0x00);
                }
                match rights.may_subscribe(&f.path) {
                    Ok(()) => None,
                    Err(reason) => {
                        info!(client_id = %session.info.client_id, %reason, "SUBSCRIBE refused");
                        Some(refused_code)
                    }
                }
            })
            .collect();
        if decided.iter().all(Option::is_none) {
            let mut original = original;
            if !track_request(session, protocol, &mut original) {
                return Err(End::ClientProtocol(FrameError::NoPacketId));
            }
            return self.upstream.send(original).await;
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
            let awaited = Awaited::Subscribe(
                allowed
                    .iter()
                    .map(|f| (f.path.clone(), options_of(f)))
                    .collect(),
            );
            let Ok((packet_id, ack)) = session.expect_ack(awaited) else {
                return Err(End::ClientProtocol(FrameError::NoPacketId));
            };
            let packet = Packet::Subscribe(
                rumqttd::protocol::Subscribe {
                    pkid: packet_id,
                    filters: allowed,
                },
                properties,
            );
            let Ok(frame) = crate::broker::encode(protocol, packet) else {
                session.forget_injected(packet_id);
                return Err(End::ClientProtocol(FrameError::Malformed));
            };
            answer = Some((packet_id, ack));
            self.upstream.send(BytesMut::from(&frame[..])).await?;
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
            let Ok((packet_id, ack)) =
                session.expect_ack(Awaited::Unsubscribe(vec![filter.clone()]))
            else {
                return Err(End::ClientProtocol(FrameError::NoPacketId));
            };
            let packet = crate::broker::unsubscribe_packet(packet_id, filter);
            let Ok(frame) = crate::broker::encode(protocol, packet) else {
                session.forget_injected(packet_id);
                return Err(End::ClientProtocol(FrameError::Malformed));
            };
            answers.push((packet_id, ack));
            self.upstream.send(BytesMut::from(&frame[..])).await?;
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

/// The client acknowledged a traced delivery.
fn trace_ack(tracer: &Tracer, names: &EventNames, session: &Session, packet_id: u16) {
    let msg_id = session
        .deliveries
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&packet_id);
    if let Some(msg_id) = msg_id {
        tracer.message(names.event(msg_id, MessageAction::Ack, crate::trace::now_ms(), 0, 0));
    }
}

/// A PUBLISH of a bound client that is not simply forwarded.
enum Special {
    /// A token upload (token mode only).
    Upload(Arc<TokenRights>),
    /// Refused, and why.
    Refused(String),
}

/// What the relay does after a PUBLISH it handled itself.
enum Outcome {
    Continue,
    End(End),
    /// A DISCONNECT is on its way to the client (MQTT 5).
    AwaitDisconnect,
}

/// `None`: the rights allow the PUBLISH to `topic` (its name, or what
/// its alias stands for; `None`: malformed or an alias not known) and it
/// is forwarded.
fn publish_verdict(rights: &TopicRights, topic: Option<&[u8]>) -> Option<Special> {
    let topic = topic.and_then(|t| std::str::from_utf8(t).ok());
    match (topic, rights.tokens()) {
        (Some(token_rules::UPLOAD_TOPIC), Some(tokens)) => Some(Special::Upload(tokens.clone())),
        // A malformed PUBLISH or an alias the relay does not know: rights
        // name topics, so it is refused.
        (None | Some(""), _) => Some(Special::Refused(
            "not authorized to publish without a topic name (an unknown topic alias is not checked)"
                .into(),
        )),
        (Some(topic), _) => rights.may_publish(topic).err().map(Special::Refused),
    }
}

/// A PUBLISH the client's rights do not allow: MQTT 3.1.1 has no refusal
/// code, so the connection is closed (Alibaba: "resource auth failed");
/// MQTT 5 gets PUBACK (QoS 1) or PUBREC (QoS 2) 0x87, or DISCONNECT 0x87
/// for QoS 0, which has no acknowledgement.
async fn refuse_publish(session: &Session, frame: &[u8], reason: String) -> Outcome {
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
            let _ = session.request_disconnect(0x87, &reason);
            Outcome::AwaitDisconnect
        }
    }
}

/// One complete frame, decoded with rumqttd's codec for the connection's
/// protocol; `None` if it is malformed.
pub(super) fn decode(protocol: ProtocolVersion, mut frame: BytesMut) -> Option<Packet> {
    let len = frame.len();
    match protocol {
        ProtocolVersion::V311 => V4.read_mut(&mut frame, len),
        ProtocolVersion::V5 => V5.read_mut(&mut frame, len),
    }
    .ok()
}

/// Remembers what a client's own SUBSCRIBE or UNSUBSCRIBE asks, so that the
/// broker's acknowledgement can settle the session's subscriptions.
/// Records a client's SUBSCRIBE going to the broker, so that its SUBACK
/// settles the session's subscriptions. If a packet of the API's waits under
/// the same id, the frame's id is rewritten to a free one (its SUBACK gets
/// the client's id back in `to_client`). False if no id is free.
fn track_request(session: &Session, protocol: ProtocolVersion, frame: &mut [u8]) -> bool {
    let (client_id, awaited) = match decode(protocol, BytesMut::from(&frame[..])) {
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
        // rumqttd will refuse it itself; nothing to track.
        _ => return true,
    };
    let broker_id = session
        .pending
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .track_own(client_id, awaited);
    match broker_id {
        Some(id) if id == client_id => true,
        Some(id) => codec::set_packet_id(frame, id),
        None => false,
    }
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
