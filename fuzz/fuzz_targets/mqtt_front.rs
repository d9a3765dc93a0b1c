//! The MQTT front layer on a client's bytes (src/broker/front/,
//! src/broker/codec.rs): framing, then the first frame as a CONNECT
//! (3.1.1 or 5, with all its properties, will and login) decoded as
//! `FrontLayer::admit` does, then every later frame as the relay
//! (`ToBroker`) reads it: the checks on its type, the PUBLISH topic, alias,
//! QoS and parts, packet ids, the DISCONNECT reason, the SUBSCRIBE /
//! UNSUBSCRIBE / PUBLISH decoding, and the link's decoding of the frames it
//! forwards to the router. Never panics and never loops.
//!
//! The first byte of the input chooses the packet size limit (the config's
//! default 256 KiB, or a small one) and the protocol of the later frames
//! when the CONNECT does not decode; the rest is the byte stream.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use mqgate::broker::codec::{self, packet_type};
use mqgate::broker::front::fuzzing::{self, Packet};
use mqgate::broker::registry::ProtocolVersion;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, stream)) = data.split_first() else {
        return;
    };
    let max_packet_size = if mode & 1 == 0 { 256 * 1024 } else { 64 };
    let mut buf = BytesMut::from(stream);

    // The first frame (`read_frame`) must be a CONNECT of level 4 or 5.
    let Ok(Some(len)) = codec::frame_len(&buf, max_packet_size) else {
        return;
    };
    let first = buf.split_to(len);
    let mut protocol = if mode & 2 == 0 {
        ProtocolVersion::V311
    } else {
        ProtocolVersion::V5
    };
    if codec::frame_type(&first) == packet_type::CONNECT {
        let level = codec::connect_protocol_level(&first);
        if let Some(p) = match level {
            Some(4) => Some(ProtocolVersion::V311),
            Some(5) => Some(ProtocolVersion::V5),
            _ => None,
        } {
            if let Some(Packet::Connect(connect, properties, will, will_properties, login)) =
                fuzzing::decode_connect(p, first, max_packet_size)
            {
                protocol = p;
                // What admit reads of it.
                let _ = (
                    connect.client_id.len(),
                    connect.keep_alive,
                    connect.clean_session,
                );
                let _ = properties.map(|p| p.session_expiry_interval);
                let _ = (
                    will.map(|w| w.topic.len()),
                    will_properties.map(|w| w.delay_interval),
                );
                let _ = login.map(|l| (l.username.len(), l.password.len()));
            }
        }
    }
    let v5 = protocol == ProtocolVersion::V5;

    // The relay: every whole frame, checked, then forwarded in a batch.
    let mut at = 0;
    loop {
        let frame_at = &buf[at..];
        let len = match codec::frame_len(frame_at, max_packet_size) {
            Ok(Some(len)) => len,
            Ok(None) | Err(_) => break,
        };
        let kind = codec::frame_type(frame_at);
        if !codec::client_may_send(kind) {
            break;
        }
        let frame = &frame_at[..len];
        match kind {
            packet_type::PUBLISH => {
                if v5 {
                    let _ = codec::publish_topic_alias(frame);
                }
                let _ = codec::publish_topic(frame);
                let _ = codec::publish_qos(frame);
                let _ = codec::publish_parts(frame, v5);
                let _ = fuzzing::decode_frame(protocol, BytesMut::from(frame));
            }
            packet_type::PUBREL | packet_type::PUBACK | packet_type::PUBCOMP => {
                let _ = codec::packet_id(frame);
            }
            packet_type::DISCONNECT => {
                let _ = codec::frame_body(frame).first();
            }
            packet_type::SUBSCRIBE | packet_type::UNSUBSCRIBE => {
                let _ = fuzzing::decode_frame(protocol, BytesMut::from(frame));
            }
            _ => {}
        }
        at += len;
    }
    let _ = codec::whole_frames(&buf, max_packet_size);

    // The link (`ToRouter::send`): decodes the whole frames it was handed
    // one after the other until none is left or one is malformed.
    let mut frames = buf.split_to(at);
    while !frames.is_empty() {
        let before = frames.len();
        if fuzzing::decode_next(protocol, &mut frames).is_none() {
            break;
        }
        assert!(frames.len() < before, "a decoded packet took no bytes");
    }
});
