//! Broker to client: the relay's half that writes the client.

use super::client_io::{ClientWrite, write_flushed};
use super::link::FromRouter;
use super::{BROKER_MAX_FRAME, End, GOODBYE_TIMEOUT};
use crate::broker::InstanceBroker;
use crate::broker::codec::{self, packet_type};
use crate::broker::registry::{Awaited, Control, ProtocolVersion, Session, SubscriptionOptions};
use crate::trace::{EventNames, MessageAction, Tracer};
use bytes::BytesMut;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// Whose request a broker acknowledgement answers.
enum Settled {
    /// The API's (or the relay's own): the codes go to this channel, the
    /// frame is not forwarded.
    Injected(tokio::sync::oneshot::Sender<Vec<u8>>, Vec<u8>),
    /// The client's, which it sent with this packet id: forwarded.
    Own(u16),
}

/// Applies a broker acknowledgement to the session's subscriptions and says
/// whose request it answers (`None`: nobody's that is waiting).
fn settle_ack(session: &Session, packet_id: u16, codes: &[u8]) -> Option<Settled> {
    let (awaited, settled) = {
        let mut pending = session.pending.lock().unwrap_or_else(|e| e.into_inner());
        match pending.injected.remove(&packet_id) {
            Some((awaited, reply)) => (awaited, Settled::Injected(reply, codes.to_vec())),
            None => {
                let (awaited, client_id) = pending.own.remove(&packet_id)?;
                (awaited, Settled::Own(client_id))
            }
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
    Some(settled)
}

/// Broker to client: forwards whole frames, keeps the counters, answers the
/// API's own acknowledgements instead of forwarding them, and obeys
/// commands between frames.
pub(super) struct ToClient<'a> {
    pub(super) upstream: &'a mut FromRouter,
    pub(super) client: ClientWrite,
    pub(super) buf: BytesMut,
    pub(super) control: mpsc::Receiver<Control>,
    /// How long one batch may take to write (a client that stopped reading
    /// is disconnected after it, instead of holding its queue forever).
    pub(super) send_timeout: Duration,
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
                                let settled = codec::ack_codes(&frame_at[..len], protocol_v5)
                                    .and_then(|(packet_id, codes)| {
                                        settle_ack(session, packet_id, &codes)
                                            .map(|settled| (packet_id, settled))
                                    });
                                match settled {
                                    Some((_, Settled::Injected(reply, codes))) => {
                                        let _ = reply.send(codes);
                                        swallowed.push(whole..whole + len);
                                    }
                                    // Sent to the broker under another id
                                    // (see `PendingAcks`): given back the
                                    // client's own.
                                    Some((broker_id, Settled::Own(client_id)))
                                        if broker_id != client_id =>
                                    {
                                        codec::set_packet_id(
                                            &mut self.buf[whole..whole + len],
                                            client_id,
                                        );
                                    }
                                    _ => {}
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
                let kept;
                let bytes: &[u8] = if swallowed.is_empty() {
                    &chunk
                } else {
                    let mut without = Vec::with_capacity(chunk.len());
                    let mut at = 0;
                    for range in &swallowed {
                        without.extend_from_slice(&chunk[at..range.start]);
                        at = range.end;
                    }
                    without.extend_from_slice(&chunk[at..]);
                    kept = without;
                    &kept
                };
                let written =
                    tokio::time::timeout(self.send_timeout, write_flushed(&mut self.client, bytes))
                        .await;
                match written {
                    Ok(Ok(())) if bytes.is_empty() => {}
                    Ok(Ok(())) => {
                        stats.send_cnt.fetch_add(1, Ordering::Relaxed);
                        stats
                            .send_oct
                            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    }
                    Ok(Err(_)) => return End::ClientClosed,
                    Err(_) => return End::SendTimeout,
                }
            }
            // Written: a router that stopped sending (this connection's
            // queue was full) may go on.
            if let Err(end) = self.upstream.ready().await {
                return end;
            }
            // Nothing left over: give the buffer back while waiting.
            if self.buf.is_empty() && self.buf.capacity() > 0 {
                self.buf = BytesMut::new();
            }
            tokio::select! {
                biased;
                Some(command) = self.control.recv() => match command {
                    Control::Disconnect { reason_code, reason } => {
                        if protocol_v5 {
                            let packet = codec::disconnect_v5(reason_code, Some(&reason));
                            let _ = tokio::time::timeout(GOODBYE_TIMEOUT, write_flushed(&mut self.client, &packet)).await;
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
                read = self.upstream.read_into(&mut self.buf) => {
                    if let Err(end) = read {
                        return end;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::registry::{SessionInfo, SessionRegistry};
    use std::sync::Arc;

    fn session() -> (Arc<Session>, crate::broker::registry::SessionHandle) {
        SessionRegistry::new().register(SessionInfo {
            client_id: "c".into(),
            username: None,
            ip: "127.0.0.1".parse().unwrap(),
            port: 1,
            protocol: ProtocolVersion::V311,
            keepalive: 60,
            clean_start: true,
            session_expiry_interval: None,
            connected_at: chrono::Utc::now(),
            created_at: chrono::Utc::now(),
        })
    }

    fn subscribe(filter: &str) -> Awaited {
        Awaited::Subscribe(vec![(filter.to_string(), SubscriptionOptions::default())])
    }

    /// The API subscribes on a client's behalf while the client sends its
    /// own SUBSCRIBE with the same packet id (65535, legal for a client):
    /// each SUBACK reaches the one who asked. Before, the client's packet
    /// went to the broker under the API's id and the first SUBACK was taken
    /// by the API, the client's own swallowed.
    #[test]
    fn a_client_packet_id_the_api_is_using_goes_to_the_broker_under_another() {
        let (session, _handle) = session();
        let (api_id, mut api_answer) = session.expect_ack(subscribe("api/topic")).unwrap();
        assert_eq!(api_id, 65535);
        let broker_id = session
            .pending
            .lock()
            .unwrap()
            .track_own(65535, subscribe("own/topic"))
            .unwrap();
        assert_ne!(broker_id, 65535);
        // The broker acknowledges the client's packet first.
        match settle_ack(&session, broker_id, &[1]) {
            Some(Settled::Own(client_id)) => assert_eq!(client_id, 65535),
            _ => panic!("the client's SUBACK was not the client's"),
        }
        assert!(
            api_answer.try_recv().is_err(),
            "the API got the client's SUBACK"
        );
        match settle_ack(&session, api_id, &[0]) {
            Some(Settled::Injected(reply, codes)) => {
                assert_eq!(codes, vec![0]);
                reply.send(codes).unwrap();
            }
            _ => panic!("the API's SUBACK was not the API's"),
        }
        assert_eq!(api_answer.try_recv().unwrap(), vec![0]);
        let subscriptions = session.subscriptions.lock().unwrap();
        assert_eq!(subscriptions["own/topic"].qos, 1);
        assert_eq!(subscriptions["api/topic"].qos, 0);
    }

    /// And the other way round: the API never picks an id a packet of the
    /// client's is waiting under.
    #[test]
    fn the_api_skips_ids_the_client_is_waiting_on() {
        let (session, _handle) = session();
        for id in [65535, 65534] {
            let tracked = session
                .pending
                .lock()
                .unwrap()
                .track_own(id, subscribe("own"));
            assert_eq!(tracked, Some(id));
        }
        let (api_id, _answer) = session.expect_ack(subscribe("api")).unwrap();
        assert_eq!(api_id, 65533);
    }

    /// A SUBACK rewritten back to the client's id keeps its codes.
    #[test]
    fn a_packet_id_is_rewritten_in_place() {
        let mut frame = codec::suback(true, 7, &[0, 1, 0x87]);
        assert!(codec::set_packet_id(&mut frame, 65535));
        assert_eq!(codec::packet_id(&frame), Some(65535));
        assert_eq!(
            codec::ack_codes(&frame, true),
            Some((65535, vec![0, 1, 0x87]))
        );
        assert!(!codec::set_packet_id(&mut [0x90, 0x01, 0x00], 1));
    }
}
