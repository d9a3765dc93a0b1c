//! Broker to client: the relay's half that writes the client.

use super::transports::{ClientWriter, write_flushed};
use super::{BROKER_MAX_FRAME, End, GOODBYE_TIMEOUT};
use crate::broker::InstanceBroker;
use crate::broker::codec::{self, packet_type};
use crate::broker::registry::{Awaited, Control, ProtocolVersion, Session, SubscriptionOptions};
use crate::trace::{EventNames, MessageAction, Tracer};
use bytes::BytesMut;
use std::sync::atomic::Ordering;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::mpsc;

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
pub(super) struct ToClient<'a> {
    pub(super) upstream: &'a mut OwnedReadHalf,
    pub(super) client: ClientWriter,
    pub(super) buf: BytesMut,
    pub(super) control: mpsc::Receiver<Control>,
}

impl ToClient<'_> {
    pub(super) async fn run(
        mut self,
        broker: &InstanceBroker,
        session: &Session,
        tracer: &Tracer,
    ) -> End {
        let protocol_v5 = session.info.protocol == ProtocolVersion::V5;
        let stats = &session.stats;
        let tracing = tracer.enabled();
        let names = EventNames::new(&broker.instance_id, &session.info.client_id, "");
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
                                if tracing
                                    && tracer.has_room()
                                    && let Some(parts) =
                                        codec::publish_parts(&frame_at[..len], protocol_v5)
                                {
                                    let msg_id = tracer.msg_id_of(
                                        &broker.instance_id,
                                        parts.topic,
                                        parts.payload,
                                    );
                                    if let Some(id) = parts.packet_id {
                                        session
                                            .deliveries
                                            .lock()
                                            .unwrap_or_else(|e| e.into_inner())
                                            .insert(id, msg_id);
                                    }
                                    // Queued before the frame is written:
                                    // its acknowledgement, read by the
                                    // other half, cannot be traced first.
                                    // (A write that fails ends the
                                    // connection; the unacknowledged
                                    // deliveries are then traced as
                                    // dropped.)
                                    // (The publish holds the topic.)
                                    tracer.message(names.event(
                                        msg_id,
                                        MessageAction::Sub,
                                        crate::trace::now_ms(),
                                        parts.payload.len(),
                                        qos,
                                    ));
                                }
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
                    write_flushed(&mut self.client, &chunk)
                        .await
                        .map(|_| chunk.len())
                } else {
                    let mut kept = Vec::with_capacity(chunk.len());
                    let mut at = 0;
                    for range in &swallowed {
                        kept.extend_from_slice(&chunk[at..range.start]);
                        at = range.end;
                    }
                    kept.extend_from_slice(&chunk[at..]);
                    write_flushed(&mut self.client, &kept)
                        .await
                        .map(|_| kept.len())
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
                        return End::Disconnected(reason_code, reason);
                    }
                    Control::Frame(frame) => {
                        if write_flushed(&mut self.client, &frame).await.is_err() {
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
