//! The link's encoding of router notifications for a client
//! (src/broker/front/link.rs, `encode`): a packet the router hands the
//! front layer, written for an MQTT 5 client and for a 3.1.1 one (which
//! gets no properties and no DISCONNECT), then read back as `ToClient`
//! reads the router's frames (framing, the ack codes, the CONNACK).
//!
//! The packets: what a client sent that the router relays as is (a
//! PUBLISH with all its properties, decoded from the input with the
//! front layer's decoder, both versions), and the router's own packets
//! (CONNACK, SUBACK, UNSUBACK, the PUBLISH acks, PINGRESP, DISCONNECT),
//! built from the input with the codes the router uses and arbitrary
//! properties. Never panics; an encoded packet is whole frames.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use mqgate::broker::codec::{self, packet_type};
use mqgate::broker::front::fuzzing::{self, Packet};
use mqgate::broker::registry::ProtocolVersion;
use rumqttd::protocol::*;

const BROKER_MAX_FRAME: usize = 268_435_455;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut packets = Vec::new();
    if mode & 0x80 == 0 {
        // A client's frames, as the front layer decodes them.
        for protocol in [ProtocolVersion::V5, ProtocolVersion::V311] {
            let mut frames = BytesMut::from(rest);
            while let Ok(Some(len)) = codec::frame_len(&frames, 256 * 1024) {
                if !codec::client_may_send(codec::frame_type(&frames)) {
                    break;
                }
                let mut frame = frames.split_to(len);
                let Some(packet) = fuzzing::decode_next(protocol, &mut frame) else {
                    break;
                };
                packets.extend(relayed(packet));
            }
        }
    } else {
        let mut u = Unstructured::new(rest);
        while !u.is_empty() {
            match router_packet(&mut u) {
                Ok(p) => packets.push(p),
                Err(_) => break,
            }
        }
    }
    for packet in packets {
        for protocol in [ProtocolVersion::V5, ProtocolVersion::V311] {
            let mut out = BytesMut::new();
            if fuzzing::encode_for_client(protocol, packet.clone(), &mut out).is_err() {
                continue;
            }
            check_frames(&out, protocol == ProtocolVersion::V5);
        }
    }
});

/// What `ToClient` reads of the frames: each frame whole, then its codes.
fn check_frames(out: &[u8], v5: bool) {
    let mut at = 0;
    while at < out.len() {
        let len = match codec::frame_len(&out[at..], BROKER_MAX_FRAME) {
            Ok(Some(len)) => len,
            other => panic!("an encoded packet is not a whole frame: {other:?} {out:?}"),
        };
        let frame = &out[at..at + len];
        match codec::frame_type(frame) {
            packet_type::SUBACK | packet_type::UNSUBACK => {
                let _ = codec::ack_codes(frame, v5);
            }
            packet_type::CONNACK => {
                let _ = codec::connack_code(frame);
                if v5 {
                    let _ = codec::connack_v5_with_assigned_id(frame, "GID_x@@@dev");
                }
            }
            packet_type::PUBLISH => {
                let _ = codec::publish_parts(frame, v5);
                let _ = codec::publish_topic(frame);
            }
            _ => {
                let _ = codec::packet_id(frame);
            }
        }
        at += len;
    }
}

/// The packet of a client's that the router hands other clients: a
/// PUBLISH as sent; the acks the router writes itself (success).
fn relayed(packet: Packet) -> Option<Packet> {
    Some(match packet {
        Packet::Publish(p, props) => Packet::Publish(p, props),
        Packet::PubAck(mut p, props) => {
            p.reason = PubAckReason::Success;
            Packet::PubAck(p, props)
        }
        Packet::PubRec(mut p, props) => {
            p.reason = PubRecReason::Success;
            Packet::PubRec(p, props)
        }
        Packet::PubRel(mut p, props) => {
            p.reason = PubRelReason::Success;
            Packet::PubRel(p, props)
        }
        Packet::PubComp(mut p, props) => {
            p.reason = PubCompReason::Success;
            Packet::PubComp(p, props)
        }
        _ => return None,
    })
}

fn string(u: &mut Unstructured) -> Result<String> {
    u.arbitrary()
}

fn opt_string(u: &mut Unstructured) -> Result<Option<String>> {
    u.arbitrary()
}

fn user_properties(u: &mut Unstructured) -> Result<Vec<(String, String)>> {
    let n = u.int_in_range(0..=3)?;
    (0..n).map(|_| Ok((string(u)?, string(u)?))).collect()
}

fn qos(u: &mut Unstructured) -> Result<QoS> {
    Ok(match u.int_in_range(0..=2)? {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    })
}

/// One packet of the router's own, with the codes it uses.
fn router_packet(u: &mut Unstructured) -> Result<Packet> {
    Ok(match u.int_in_range(0..=6)? {
        0 => {
            let props = if u.arbitrary()? {
                Some(ConnAckProperties {
                    session_expiry_interval: u.arbitrary()?,
                    receive_max: u.arbitrary()?,
                    max_qos: u.arbitrary()?,
                    retain_available: u.arbitrary()?,
                    max_packet_size: u.arbitrary()?,
                    assigned_client_identifier: opt_string(u)?,
                    topic_alias_max: u.arbitrary()?,
                    reason_string: opt_string(u)?,
                    user_properties: user_properties(u)?,
                    wildcard_subscription_available: u.arbitrary()?,
                    subscription_identifiers_available: u.arbitrary()?,
                    shared_subscription_available: u.arbitrary()?,
                    server_keep_alive: u.arbitrary()?,
                    response_information: opt_string(u)?,
                    server_reference: opt_string(u)?,
                    authentication_method: opt_string(u)?,
                    authentication_data: u.arbitrary::<Option<Vec<u8>>>()?.map(Bytes::from),
                })
            } else {
                None
            };
            Packet::ConnAck(
                ConnAck {
                    session_present: u.arbitrary()?,
                    code: ConnectReturnCode::Success,
                },
                props,
            )
        }
        1 => {
            let n = u.int_in_range(1..=8)?;
            let return_codes = (0..n)
                .map(|_| {
                    Ok(match qos(u)? {
                        QoS::AtMostOnce => SubscribeReasonCode::QoS0,
                        QoS::AtLeastOnce => SubscribeReasonCode::QoS1,
                        QoS::ExactlyOnce => SubscribeReasonCode::QoS2,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let props = if u.arbitrary()? {
                Some(SubAckProperties {
                    reason_string: opt_string(u)?,
                    user_properties: user_properties(u)?,
                })
            } else {
                None
            };
            Packet::SubAck(
                SubAck {
                    pkid: u.arbitrary()?,
                    return_codes,
                },
                props,
            )
        }
        2 => {
            let n = u.int_in_range(1..=8)?;
            let props = if u.arbitrary()? {
                Some(UnsubAckProperties {
                    reason_string: opt_string(u)?,
                    user_properties: user_properties(u)?,
                })
            } else {
                None
            };
            Packet::UnsubAck(
                UnsubAck {
                    pkid: u.arbitrary()?,
                    reasons: vec![UnsubAckReason::Success; n],
                },
                props,
            )
        }
        3 => Packet::PingResp(PingResp),
        4 => {
            let reason_code = match u.int_in_range(0..=2)? {
                0 => DisconnectReasonCode::MalformedPacket,
                1 => DisconnectReasonCode::TopicAliasInvalid,
                _ => DisconnectReasonCode::ProtocolError,
            };
            let props = if u.arbitrary()? {
                Some(DisconnectProperties {
                    session_expiry_interval: u.arbitrary()?,
                    reason_string: opt_string(u)?,
                    user_properties: user_properties(u)?,
                    server_reference: opt_string(u)?,
                })
            } else {
                None
            };
            Packet::Disconnect(Disconnect { reason_code }, props)
        }
        5 => {
            // (QoS, packet id and dup are the crate's own: QoS 0 here;
            // the decoded PUBLISHes above have them all.)
            let publish = Publish::new(
                Bytes::from(string(u)?.into_bytes()),
                Bytes::from(u.arbitrary::<Vec<u8>>()?),
                u.arbitrary()?,
            );
            let props = if u.arbitrary()? {
                Some(PublishProperties {
                    payload_format_indicator: u.arbitrary()?,
                    message_expiry_interval: u.arbitrary()?,
                    topic_alias: u.arbitrary()?,
                    response_topic: opt_string(u)?,
                    correlation_data: u.arbitrary::<Option<Vec<u8>>>()?.map(Bytes::from),
                    user_properties: user_properties(u)?,
                    subscription_identifiers: (0..u.int_in_range(0..=2)?)
                        .map(|_| u.int_in_range(1..=268_435_455usize))
                        .collect::<Result<Vec<_>>>()?,
                    content_type: opt_string(u)?,
                })
            } else {
                None
            };
            Packet::Publish(publish, props)
        }
        _ => {
            let pkid = u.arbitrary()?;
            match u.int_in_range(0..=3)? {
                0 => Packet::PubAck(
                    PubAck {
                        pkid,
                        reason: PubAckReason::Success,
                    },
                    None,
                ),
                1 => Packet::PubRec(
                    PubRec {
                        pkid,
                        reason: PubRecReason::Success,
                    },
                    None,
                ),
                2 => Packet::PubRel(
                    PubRel {
                        pkid,
                        reason: PubRelReason::Success,
                    },
                    None,
                ),
                _ => Packet::PubComp(
                    PubComp {
                        pkid,
                        reason: PubCompReason::Success,
                    },
                    None,
                ),
            }
        }
    })
}
