//! The in-process link between one client's connection and its instance's
//! rumqttd router: the frames the front layer has read and checked go to
//! the router as packets ([`ToRouter`]), and the router's notifications come
//! back as frames in the client's protocol ([`FromRouter`]).
//!
//! This is what rumqttd's own network link does behind a listener, without
//! the loopback socket the front layer used to reach it through: a client
//! costs one file descriptor, and no second pair of socket buffers. The
//! link API (building a link without blocking a thread, waking the router,
//! leaving it) comes from the vendored rumqttd (`src/vendor/rumqttd`,
//! PATCHES.md).

use super::End;
use crate::broker::codec::FrameError;
use crate::broker::registry::ProtocolVersion;
use bytes::BytesMut;
use rumqttd::Notification;
use rumqttd::local::{LinkBuilder, LinkRx, LinkTx};
use rumqttd::protocol::{LastWill, LastWillProperties, Packet, Protocol, v4::V4, v5::V5};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

/// The most notifications a drained batch buffer keeps while the
/// connection is idle (a larger one is dropped and grows again): none, as
/// the smallest a VecDeque allocates is 4 notifications of hundreds of
/// bytes each.
const IDLE_BATCH_CAPACITY: usize = 0;

/// How long the front layer waits for the router to drop a connection that
/// sent DISCONNECT before telling it the connection is gone itself.
const ROUTER_DROP_TIMEOUT: Duration = Duration::from_secs(2);

/// What the router needs to know of a new connection.
pub(super) struct LinkRequest<'a> {
    /// The client id as the router knows it ([`super::broker_client_id`]).
    pub(super) router_client_id: &'a str,
    pub(super) clean_session: bool,
    pub(super) will: Option<LastWill>,
    pub(super) will_properties: Option<LastWillProperties>,
}

/// Why the router did not take a connection.
#[derive(Debug, thiserror::Error)]
#[error("the embedded broker did not accept the connection: {0}")]
pub(super) struct LinkRefused(String);

/// Registers a connection with the router. Returns the two halves and the
/// CONNACK the router answered with (in the client's protocol).
pub(super) async fn open(
    router: &rumqttd::RouterTx,
    protocol: ProtocolVersion,
    request: LinkRequest<'_>,
) -> Result<(ToRouter, FromRouter, BytesMut), LinkRefused> {
    // The client's Topic Alias Maximum is not passed on: with it, rumqttd
    // gives one alias per subscription filter, so under a wildcard filter
    // the second topic would arrive under the first one's alias (the
    // client sees the wrong topic), and the trace could not name it.
    let (tx, rx, connack) = LinkBuilder::new(request.router_client_id, router.clone())
        .clean_session(request.clean_session)
        .last_will(request.will)
        .last_will_properties(request.will_properties)
        .dynamic_filters(true)
        .topic_alias_max(0)
        .build_async()
        .await
        .map_err(|e| LinkRefused(e.to_string()))?;
    let mut frame = BytesMut::new();
    let Some(packet) = Option::<Packet>::from(connack) else {
        return Err(LinkRefused("no CONNACK".into()));
    };
    encode(protocol, packet, &mut frame).map_err(|e| LinkRefused(e.to_string()))?;
    Ok((
        ToRouter { tx, protocol },
        FromRouter {
            rx,
            batch: VecDeque::new(),
            protocol,
            unscheduled: false,
        },
        frame,
    ))
}

/// Client to router: whole frames in, packets to the router.
pub(super) struct ToRouter {
    tx: LinkTx,
    protocol: ProtocolVersion,
}

impl ToRouter {
    /// Hands whole frames (already read, checked and counted) to the
    /// router, and waits for room in its queue (the client's reads wait
    /// meanwhile: backpressure, as with a socket).
    pub(super) async fn send(&mut self, mut frames: BytesMut) -> Result<(), End> {
        if frames.is_empty() {
            return Ok(());
        }
        {
            let mut buffer = self.tx.buffer();
            while !frames.is_empty() {
                match decode_next(self.protocol, &mut frames) {
                    Ok(packet) => buffer.push_back(packet),
                    // The front layer frames before it decodes: a frame
                    // rumqttd's codec refuses is malformed inside.
                    Err(_) => return Err(End::ClientProtocol(FrameError::Malformed)),
                }
            }
        }
        // The awaited send holds a router event (about a kilobyte): boxed,
        // and only when the router's queue is full, so that it is not part
        // of every idle connection's task.
        match self.tx.try_notify() {
            Ok(true) => Ok(()),
            Ok(false) => Box::pin(self.tx.notify())
                .await
                .map_err(|_| End::BrokerClosed),
            Err(_) => Err(End::BrokerClosed),
        }
    }

    /// Tells the router the connection is gone (not after the router
    /// dropped it itself: its id may already belong to a new connection).
    pub(super) async fn disconnect(&self) {
        let _ = Box::pin(self.tx.disconnect()).await;
    }
}

/// Router to client: notifications in, frames out.
pub(super) struct FromRouter {
    rx: LinkRx,
    batch: VecDeque<Notification>,
    protocol: ProtocolVersion,
    /// The router stopped sending because this connection's queue was
    /// full: it waits for [`FromRouter::ready`].
    unscheduled: bool,
}

impl FromRouter {
    /// Waits for the router's next batch and appends it to `out` as frames.
    /// `End::BrokerClosed` once the router has dropped the connection.
    pub(super) async fn read_into(&mut self, out: &mut BytesMut) -> Result<(), End> {
        self.rx
            .exchange(&mut self.batch)
            .await
            .map_err(|_| End::BrokerClosed)?;
        for notification in self.batch.drain(..) {
            match notification {
                Notification::Unschedule => self.unscheduled = true,
                notification => {
                    if let Some(packet) = Option::<Packet>::from(notification) {
                        encode(self.protocol, packet, out)
                            .map_err(|_| End::BrokerProtocol(FrameError::Malformed))?;
                    }
                }
            }
        }
        // The drained buffer goes to the router as its next queue for this
        // connection: an idle connection keeps no large one.
        if self.batch.capacity() > IDLE_BATCH_CAPACITY {
            self.batch = VecDeque::new();
        }
        Ok(())
    }

    /// Once what the last batch brought has been written to the client:
    /// tells a router that stopped sending (this connection's queue was
    /// full) to go on.
    pub(super) async fn ready(&mut self) -> Result<(), End> {
        if std::mem::take(&mut self.unscheduled) {
            match self.rx.try_wake() {
                Ok(true) => {}
                Ok(false) => Box::pin(self.rx.wake())
                    .await
                    .map_err(|_| End::BrokerClosed)?,
                Err(_) => return Err(End::BrokerClosed),
            }
        }
        Ok(())
    }

    /// After the client's DISCONNECT went to the router: waits (bounded)
    /// until the router has dropped the connection. `false`: it did not, and
    /// the caller must tell it.
    pub(super) async fn await_router_drop(&mut self) -> bool {
        let drained = tokio::time::timeout(ROUTER_DROP_TIMEOUT, async {
            while self.rx.exchange(&mut self.batch).await.is_ok() {
                self.batch.clear();
            }
        });
        drained.await.is_ok()
    }
}

/// Decodes the first of whole frames (already read and checked) with
/// rumqttd's codec for the client's protocol, and takes it off `frames`.
pub(super) fn decode_next(
    protocol: ProtocolVersion,
    frames: &mut BytesMut,
) -> Result<Packet, rumqttd::protocol::Error> {
    let max = frames.len();
    match protocol {
        ProtocolVersion::V311 => V4.read_mut(frames, max),
        ProtocolVersion::V5 => V5.read_mut(frames, max),
    }
}

/// Encodes a packet from the router in the client's protocol. MQTT 3.1.1
/// has no properties (rumqttd's 3.1.1 encoder panics on a packet that has
/// them, e.g. a message an MQTT 5 client published with properties) and no
/// DISCONNECT from the server (the connection just closes).
pub(super) fn encode(
    protocol: ProtocolVersion,
    packet: Packet,
    out: &mut BytesMut,
) -> Result<(), String> {
    let written = match protocol {
        ProtocolVersion::V5 => V5.write(packet, out),
        ProtocolVersion::V311 => match without_properties(packet) {
            Some(packet) => V4.write(packet, out),
            None => return Ok(()),
        },
    };
    written.map(|_| ()).map_err(|e| e.to_string())
}

/// The MQTT 3.1.1 form of a packet from the router; `None` if 3.1.1 has
/// no such packet from a server.
fn without_properties(packet: Packet) -> Option<Packet> {
    Some(match packet {
        Packet::Publish(p, _) => Packet::Publish(p, None),
        Packet::PubAck(p, _) => Packet::PubAck(p, None),
        Packet::PubRec(p, _) => Packet::PubRec(p, None),
        Packet::PubRel(p, _) => Packet::PubRel(p, None),
        Packet::PubComp(p, _) => Packet::PubComp(p, None),
        Packet::SubAck(p, _) => Packet::SubAck(p, None),
        Packet::UnsubAck(p, _) => Packet::UnsubAck(p, None),
        Packet::ConnAck(p, _) => Packet::ConnAck(p, None),
        Packet::Disconnect(..) => return None,
        other => other,
    })
}

/// Wills waiting for their delay (MQTT 5 Will Delay Interval), per router
/// client id, as rumqttd's listener keeps them: a new connection with the
/// same client id settles the waiting will at once (published if the new
/// connection starts clean, dropped if it resumes the session).
#[derive(Debug, Default)]
pub struct PendingWills {
    waiting: Mutex<HashMap<String, (u64, tokio::sync::oneshot::Sender<()>)>>,
    next: std::sync::atomic::AtomicU64,
}

impl PendingWills {
    /// The connection of `router_client_id` ended without a clean
    /// DISCONNECT (or with one that keeps the will): its will (the router
    /// holds it, if any) is published after `delay`.
    pub(super) fn schedule(
        self: &std::sync::Arc<Self>,
        router: &rumqttd::RouterTx,
        router_client_id: String,
        delay: Duration,
    ) {
        let router = router.clone();
        if delay.is_zero() {
            tokio::spawn(async move {
                let _ = rumqttd::local::publish_will(&router, router_client_id).await;
            });
            return;
        }
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (settled_tx, settled_rx) = tokio::sync::oneshot::channel();
        self.lock()
            .insert(router_client_id.clone(), (id, settled_tx));
        let wills = self.clone();
        tokio::spawn(async move {
            // Settled early by a new connection: it decided.
            if tokio::time::timeout(delay, settled_rx).await.is_ok() {
                return;
            }
            let mine = {
                let mut waiting = wills.lock();
                match waiting.get(&router_client_id) {
                    Some((current, _)) if *current == id => {
                        waiting.remove(&router_client_id);
                        true
                    }
                    _ => false,
                }
            };
            if mine {
                let _ = rumqttd::local::publish_will(&router, router_client_id).await;
            }
        });
    }

    /// A new connection of `router_client_id`: a will still waiting is
    /// published now if the connection starts clean, dropped otherwise.
    /// Returns once the router has it, before the new connection's own.
    pub(super) async fn settle(
        &self,
        router: &rumqttd::RouterTx,
        router_client_id: &str,
        clean_start: bool,
    ) {
        let waiting = self.lock().remove(router_client_id);
        if let Some((_, settled)) = waiting {
            let _ = settled.send(());
            if clean_start {
                let _ = rumqttd::local::publish_will(router, router_client_id.to_string()).await;
            }
        }
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, (u64, tokio::sync::oneshot::Sender<()>)>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttd::protocol::{Publish, PublishProperties};

    fn publish_with_properties() -> Packet {
        Packet::Publish(
            Publish::new("t/1", "hi", false),
            Some(PublishProperties {
                content_type: Some("text/plain".into()),
                ..Default::default()
            }),
        )
    }

    #[test]
    fn an_mqtt5_publish_reaches_a_311_client_without_its_properties() {
        let mut out = BytesMut::new();
        encode(ProtocolVersion::V311, publish_with_properties(), &mut out).unwrap();
        let mut frame = out.clone();
        let len = frame.len();
        match V4.read_mut(&mut frame, len) {
            Ok(Packet::Publish(p, None)) => {
                assert_eq!(&p.topic[..], b"t/1");
                assert_eq!(&p.payload[..], b"hi");
            }
            other => panic!("not a 3.1.1 PUBLISH: {other:?}"),
        }
        // An MQTT 5 client gets the properties.
        let mut out5 = BytesMut::new();
        encode(ProtocolVersion::V5, publish_with_properties(), &mut out5).unwrap();
        assert!(out5.len() > out.len());
    }

    #[test]
    fn a_311_client_gets_no_disconnect_from_the_server() {
        let mut out = BytesMut::new();
        let disconnect = Packet::Disconnect(
            rumqttd::protocol::Disconnect {
                reason_code: rumqttd::protocol::DisconnectReasonCode::SessionTakenOver,
            },
            None,
        );
        encode(ProtocolVersion::V311, disconnect.clone(), &mut out).unwrap();
        assert!(out.is_empty());
        encode(ProtocolVersion::V5, disconnect, &mut out).unwrap();
        assert_eq!(out[0], 0xE0);
    }
}
