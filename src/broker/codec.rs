//! The few MQTT bytes the front layer reads or writes itself: frame
//! boundaries, the protocol level of a CONNECT, and the CONNACK and
//! DISCONNECT packets it sends on its own. Everything else is decoded and
//! encoded with `rumqttd::protocol`.
//!
//! CONNACK and DISCONNECT are written by hand on purpose: rumqttd 0.20's v5
//! encoder wrote `DISCONNECT(0x98)` without properties as `E0 01 98 00`,
//! which clients such as rumqttc reject (fixed in the vendored copy since,
//! PATCHES.md 5, for the router's own DISCONNECTs), and its CONNACK
//! encoders panic on a return code of the other protocol version.

use rumqttd::protocol::v4;

/// MQTT control packet types (the high nibble of the first byte).
pub mod packet_type {
    pub const CONNECT: u8 = 1;
    pub const CONNACK: u8 = 2;
    pub const PUBLISH: u8 = 3;
    pub const PUBACK: u8 = 4;
    pub const PUBREL: u8 = 6;
    pub const PUBCOMP: u8 = 7;
    pub const SUBSCRIBE: u8 = 8;
    pub const SUBACK: u8 = 9;
    pub const UNSUBSCRIBE: u8 = 10;
    pub const UNSUBACK: u8 = 11;
    pub const DISCONNECT: u8 = 14;
}

/// Why a byte stream cannot be framed as MQTT.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("packet of {0} bytes is larger than the {1}-byte limit")]
    TooLarge(usize, usize),
    #[error("malformed remaining length")]
    Malformed,
    #[error("a client may not send packet type {0} after CONNECT")]
    Forbidden(u8),
}

/// The length of the first complete frame in `buf`, `None` if more bytes are
/// needed.
pub fn frame_len(buf: &[u8], max_packet_size: usize) -> Result<Option<usize>, FrameError> {
    use rumqttd::protocol::Error;
    match v4::check(buf.iter(), max_packet_size) {
        Ok(header) => Ok(Some(header.frame_length())),
        Err(Error::InsufficientBytes(_)) => Ok(None),
        Err(Error::PayloadSizeLimitExceeded(n)) => Err(FrameError::TooLarge(n, max_packet_size)),
        Err(_) => Err(FrameError::Malformed),
    }
}

/// The length of the prefix of `buf` made of complete frames, and how many
/// frames it holds.
pub fn whole_frames(buf: &[u8], max_packet_size: usize) -> Result<(usize, u64), FrameError> {
    let mut at = 0;
    let mut count = 0;
    while let Some(len) = frame_len(&buf[at..], max_packet_size)? {
        at += len;
        count += 1;
    }
    Ok((at, count))
}

/// Whether a client may send packets of this type once connected. The
/// others (a second CONNECT, CONNACK, SUBACK, UNSUBACK, PINGRESP, AUTH and
/// the reserved 0) are protocol errors, and some of them crash rumqttd's
/// decoder, so they never reach it.
pub fn client_may_send(packet_type: u8) -> bool {
    matches!(packet_type, 3..=8 | 10 | 12 | 14)
}

/// The QoS of a PUBLISH frame (bits 1-2 of its first byte).
pub fn publish_qos(frame: &[u8]) -> u8 {
    frame.first().map_or(0, |b| (b >> 1) & 0x03)
}

/// The packet type of a frame.
pub fn frame_type(frame: &[u8]) -> u8 {
    frame.first().map_or(0, |b| b >> 4)
}

/// The protocol level of a complete CONNECT frame: 3 (MQTT 3.1, `MQIsdp`),
/// 4 (3.1.1) or 5. `None` if the frame is too short to say.
pub fn connect_protocol_level(frame: &[u8]) -> Option<u8> {
    // fixed header: 1 byte + 1..4 bytes of remaining length
    let mut at = 1;
    while *frame.get(at)? & 0x80 != 0 {
        at += 1;
    }
    at += 1;
    let name_len = u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]) as usize;
    frame.get(at + 2 + name_len).copied()
}

/// CONNACK for MQTT 3.1.1 with a return code (0 accepted, 1 bad protocol
/// version, 2 identifier rejected, 3 server unavailable, 4 bad username or
/// password, 5 not authorized).
pub fn connack_v4(return_code: u8) -> Vec<u8> {
    vec![0x20, 0x02, 0x00, return_code]
}

/// CONNACK for MQTT 5 with a reason code and, if given, a reason string that
/// tells the client what to fix.
pub fn connack_v5(reason_code: u8, reason: Option<&str>) -> Vec<u8> {
    let properties = reason_string_property(reason);
    let mut body = vec![0x00, reason_code];
    push_variable_int(&mut body, properties.len());
    body.extend_from_slice(&properties);
    with_fixed_header(0x20, body)
}

/// DISCONNECT for MQTT 5 with a reason code (0x98 administrative action,
/// 0x8E session taken over, 0x8B server shutting down, ...) and a property
/// length, so that strict clients accept it.
pub fn disconnect_v5(reason_code: u8, reason: Option<&str>) -> Vec<u8> {
    let properties = reason_string_property(reason);
    let mut body = vec![reason_code];
    push_variable_int(&mut body, properties.len());
    body.extend_from_slice(&properties);
    with_fixed_header(0xE0, body)
}

/// SUBACK with one return (3.1.1) or reason (5) code per filter, for a
/// SUBSCRIBE the front layer answers itself.
pub fn suback(protocol_v5: bool, packet_id: u16, codes: &[u8]) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    if protocol_v5 {
        body.push(0); // no properties
    }
    body.extend_from_slice(codes);
    with_fixed_header(0x90, body)
}

/// UNSUBACK: 3.1.1 carries only the packet id, 5 one reason code per filter
/// (0x00 success, 0x11 no subscription existed).
pub fn unsuback(protocol_v5: bool, packet_id: u16, codes: &[u8]) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    if protocol_v5 {
        body.push(0);
        body.extend_from_slice(codes);
    }
    with_fixed_header(0xB0, body)
}

/// An MQTT 5 PUBACK (QoS 1) or PUBREC (QoS 2) with a reason code and string:
/// how a refused PUBLISH is answered.
pub fn publish_refusal_v5(qos: u8, packet_id: u16, reason_code: u8, reason: &str) -> Vec<u8> {
    let properties = reason_string_property(Some(reason));
    let mut body = packet_id.to_be_bytes().to_vec();
    body.push(reason_code);
    push_variable_int(&mut body, properties.len());
    body.extend_from_slice(&properties);
    with_fixed_header(if qos == 2 { 0x50 } else { 0x40 }, body)
}

/// A QoS 0 PUBLISH the front layer sends itself (the `$SYS/token...`
/// notices).
pub fn publish_qos0(protocol_v5: bool, topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = (topic.len() as u16).to_be_bytes().to_vec();
    body.extend_from_slice(topic.as_bytes());
    if protocol_v5 {
        body.push(0); // no properties
    }
    body.extend_from_slice(payload);
    with_fixed_header(0x30, body)
}

/// PUBACK (QoS 1) or PUBREC (QoS 2) of success, for a PUBLISH the front
/// layer consumes itself (`$SYS/uploadToken`). The 3.1.1 form is valid MQTT
/// 5 too (reason code 0 may be left out).
pub fn publish_ack(qos: u8, packet_id: u16) -> Vec<u8> {
    let first = if qos == 2 { 0x50 } else { 0x40 };
    let [hi, lo] = packet_id.to_be_bytes();
    vec![first, 0x02, hi, lo]
}

/// PUBCOMP, closing a QoS 2 exchange the front layer answered itself.
pub fn pubcomp(packet_id: u16) -> Vec<u8> {
    let [hi, lo] = packet_id.to_be_bytes();
    vec![0x70, 0x02, hi, lo]
}

/// What follows a complete frame's fixed header (type byte and remaining
/// length); empty if the header is malformed.
pub fn frame_body(frame: &[u8]) -> &[u8] {
    match frame.get(1..).and_then(read_variable_int) {
        Some((_, len_len)) => frame.get(1 + len_len..).unwrap_or_default(),
        None => &[],
    }
}

/// A PUBLISH frame's parts a trace needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishParts<'a> {
    pub topic: &'a [u8],
    pub packet_id: Option<u16>,
    pub payload: &'a [u8],
}

/// The topic, packet id and payload of a complete PUBLISH frame (MQTT 5:
/// past its properties); `None` if it is malformed.
pub fn publish_parts(frame: &[u8], protocol_v5: bool) -> Option<PublishParts<'_>> {
    let (_, len_len) = read_variable_int(frame.get(1..)?)?;
    let at = 1 + len_len;
    let topic_len = u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]) as usize;
    let topic = frame.get(at + 2..at + 2 + topic_len)?;
    let mut rest = at + 2 + topic_len;
    let packet_id = match publish_qos(frame) {
        0 => None,
        _ => {
            let id = u16::from_be_bytes([*frame.get(rest)?, *frame.get(rest + 1)?]);
            rest += 2;
            Some(id)
        }
    };
    if protocol_v5 {
        let (properties_len, len_len) = read_variable_int(frame.get(rest..)?)?;
        rest += len_len + properties_len;
    }
    Some(PublishParts {
        topic,
        packet_id,
        payload: frame.get(rest..)?,
    })
}

/// The Topic Alias property (0x23) of a complete MQTT 5 PUBLISH frame;
/// `None` if it has none or is malformed.
pub fn publish_topic_alias(frame: &[u8]) -> Option<u16> {
    let (_, len_len) = read_variable_int(frame.get(1..)?)?;
    let at = 1 + len_len;
    let topic_len = u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]) as usize;
    let mut rest = at + 2 + topic_len;
    if publish_qos(frame) > 0 {
        rest += 2;
    }
    let (properties_len, len_len) = read_variable_int(frame.get(rest..)?)?;
    rest += len_len;
    let mut properties = frame.get(rest..rest + properties_len)?;
    // Walk the properties a PUBLISH may carry, each by its own shape.
    while let Some((&id, tail)) = properties.split_first() {
        let skip = match id {
            0x01 => 1, // payload format
            0x02 => 4, // message expiry
            0x23 => return Some(u16::from_be_bytes([*tail.first()?, *tail.get(1)?])),
            0x03 | 0x08 | 0x09 => 2 + u16::from_be_bytes([*tail.first()?, *tail.get(1)?]) as usize, // content type, response topic, correlation data
            0x26 => {
                // A user property: two strings.
                let key = 2 + u16::from_be_bytes([*tail.first()?, *tail.get(1)?]) as usize;
                let value = u16::from_be_bytes([*tail.get(key)?, *tail.get(key + 1)?]) as usize;
                key + 2 + value
            }
            0x0B => read_variable_int(tail)?.1, // subscription identifier
            _ => return None,
        };
        properties = tail.get(skip..)?;
    }
    None
}

/// The topic name and packet id (QoS > 0) of a complete PUBLISH frame.
pub fn publish_topic(frame: &[u8]) -> Option<(&[u8], Option<u16>)> {
    let (_, len_len) = read_variable_int(frame.get(1..)?)?;
    let at = 1 + len_len;
    let topic_len = u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]) as usize;
    let topic = frame.get(at + 2..at + 2 + topic_len)?;
    let packet_id = match publish_qos(frame) {
        0 => None,
        _ => {
            let id_at = at + 2 + topic_len;
            Some(u16::from_be_bytes([
                *frame.get(id_at)?,
                *frame.get(id_at + 1)?,
            ]))
        }
    };
    Some((topic, packet_id))
}

/// The session-present flag and return (3.1.1) or reason (5) code of a
/// complete CONNACK frame. Read by hand: rumqttd's v5 decoder cannot decode
/// CONNACK (it panics), and the layout is the same in both versions.
pub fn connack_code(frame: &[u8]) -> Option<(bool, u8)> {
    if frame_type(frame) != packet_type::CONNACK {
        return None;
    }
    let (_, len_len) = read_variable_int(frame.get(1..)?)?;
    let flags = *frame.get(1 + len_len)?;
    let code = *frame.get(2 + len_len)?;
    Some((flags & 0x01 == 0x01, code))
}

/// An MQTT 5 CONNACK with an Assigned Client Identifier property added (for
/// a client that connected with an empty client id, which MQTT 5 requires
/// the server to tell).
pub fn connack_v5_with_assigned_id(frame: &[u8], client_id: &str) -> Option<Vec<u8>> {
    let (_, len_len) = read_variable_int(frame.get(1..)?)?;
    let body = frame.get(1 + len_len..)?;
    let (flags, code) = (*body.first()?, *body.get(1)?);
    let properties = match body.get(2..) {
        Some(rest) if !rest.is_empty() => {
            let (props_len, props_len_len) = read_variable_int(rest)?;
            let start = 2 + props_len_len;
            body.get(start..start + props_len)?
        }
        // A CONNACK without a property length (3.1.1 layout) has no properties.
        _ => &[][..],
    };
    let id = client_id.as_bytes();
    let id_len = u16::try_from(id.len()).ok()?;
    let mut new_properties = properties.to_vec();
    new_properties.push(0x12);
    new_properties.extend_from_slice(&id_len.to_be_bytes());
    new_properties.extend_from_slice(id);
    let mut new_body = vec![flags, code];
    push_variable_int(&mut new_body, new_properties.len());
    new_body.extend_from_slice(&new_properties);
    Some(with_fixed_header(0x20, new_body))
}

/// The packet id and return (reason) codes of a complete SUBACK or UNSUBACK
/// frame. A 3.1.1 UNSUBACK has no codes (success is implied).
pub fn ack_codes(frame: &[u8], protocol_v5: bool) -> Option<(u16, Vec<u8>)> {
    let (len, len_len) = read_variable_int(frame.get(1..)?)?;
    let body = frame.get(1 + len_len..1 + len_len + len)?;
    let packet_id = u16::from_be_bytes([*body.first()?, *body.get(1)?]);
    let mut rest = body.get(2..)?;
    if protocol_v5 {
        let (props_len, props_len_len) = read_variable_int(rest)?;
        rest = rest.get(props_len_len + props_len..)?;
    }
    Some((packet_id, rest.to_vec()))
}

/// The packet id of a PUBACK, PUBREC, PUBREL or PUBCOMP frame.
pub fn packet_id(frame: &[u8]) -> Option<u16> {
    let (_, len_len) = read_variable_int(frame.get(1..)?)?;
    let at = 1 + len_len;
    Some(u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]))
}

/// An MQTT variable byte integer at the start of `buf`: (value, bytes used).
fn read_variable_int(buf: &[u8]) -> Option<(usize, usize)> {
    let mut value = 0usize;
    for (i, byte) in buf.iter().take(4).enumerate() {
        value |= ((byte & 0x7F) as usize) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

fn reason_string_property(reason: Option<&str>) -> Vec<u8> {
    let mut properties = Vec::new();
    if let Some(reason) = reason {
        // Keep the packet small: a reason string is advice, cut at 200 bytes
        // on a character boundary.
        let mut end = reason.len().min(200);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let reason = &reason[..end];
        properties.push(0x1F);
        properties.extend_from_slice(&(reason.len() as u16).to_be_bytes());
        properties.extend_from_slice(reason.as_bytes());
    }
    properties
}

fn with_fixed_header(byte1: u8, body: Vec<u8>) -> Vec<u8> {
    let mut out = vec![byte1];
    push_variable_int(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

fn push_variable_int(out: &mut Vec<u8>, mut value: usize) {
    loop {
        let mut byte = (value % 128) as u8;
        value /= 128;
        if value > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if value == 0 {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use rumqttd::protocol::{Protocol, v5::V5};

    #[test]
    fn frames_are_found_whole_or_not_at_all() {
        // PINGREQ, then half a PUBLISH
        let buf = [0xC0, 0x00, 0x30, 0x05, 0x00, 0x01];
        assert_eq!(frame_len(&buf, 100), Ok(Some(2)));
        assert_eq!(frame_len(&buf[2..], 100), Ok(None));
        assert_eq!(whole_frames(&buf, 100), Ok((2, 1)));
        assert_eq!(
            frame_len(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], 100),
            Err(FrameError::Malformed)
        );
        assert_eq!(
            frame_len(&[0x30, 0x80, 0x01], 100),
            Err(FrameError::TooLarge(128, 100))
        );
    }

    #[test]
    fn protocol_level_of_connect() {
        let v311 = [
            0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x00,
        ];
        assert_eq!(connect_protocol_level(&v311), Some(4));
        let v31 = [
            0x10, 0x0E, 0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03, 0x02, 0x00, 0x3C,
        ];
        assert_eq!(connect_protocol_level(&v31), Some(3));
        assert_eq!(connect_protocol_level(&[0x10, 0x02, 0x00]), None);
    }

    /// The hand-written v5 packets decode with a real client's decoder
    /// (rumqttc's).
    #[test]
    fn v5_packets_decode_in_a_client() {
        use rumqttc::v5::mqttbytes::v5::{
            ConnectReturnCode, DisconnectReasonCode, Packet as ClientPacket,
        };
        let mut buf = BytesMut::from(&disconnect_v5(0x98, Some("kicked"))[..]);
        match ClientPacket::read(&mut buf, None).unwrap() {
            ClientPacket::Disconnect(d) => {
                assert_eq!(d.reason_code, DisconnectReasonCode::AdministrativeAction);
                assert_eq!(
                    d.properties.unwrap().reason_string.as_deref(),
                    Some("kicked")
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(disconnect_v5(0x98, None), vec![0xE0, 0x02, 0x98, 0x00]);
        let mut buf = BytesMut::from(&connack_v5(0x86, Some("bad signature"))[..]);
        match ClientPacket::read(&mut buf, None).unwrap() {
            ClientPacket::ConnAck(ack) => {
                assert_eq!(ack.code, ConnectReturnCode::BadUserNamePassword);
                assert_eq!(
                    ack.properties.unwrap().reason_string.as_deref(),
                    Some("bad signature")
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(connack_v4(4), vec![0x20, 0x02, 0x00, 0x04]);
    }

    #[test]
    fn connack_codes_and_assigned_ids() {
        assert_eq!(connack_code(&[0x20, 0x02, 0x01, 0x00]), Some((true, 0)));
        assert_eq!(
            connack_code(&connack_v5(0x87, Some("no"))),
            Some((false, 0x87))
        );
        assert_eq!(connack_code(&[0x30, 0x02, 0x00, 0x00]), None);
        // rumqttd's v5 CONNACK without and with properties
        for original in [
            vec![0x20, 0x03, 0x00, 0x00, 0x00],
            connack_v5(0x00, Some("hello")),
        ] {
            let patched = connack_v5_with_assigned_id(&original, "mqgate-abc").unwrap();
            let mut buf = BytesMut::from(&patched[..]);
            match rumqttc::v5::mqttbytes::v5::Packet::read(&mut buf, None).unwrap() {
                rumqttc::v5::mqttbytes::v5::Packet::ConnAck(ack) => {
                    let props = ack.properties.unwrap();
                    assert_eq!(
                        props.assigned_client_identifier.as_deref(),
                        Some("mqgate-abc")
                    );
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn ack_codes_of_both_versions() {
        // 3.1.1 SUBACK id 7, codes 1 and 0x80; v5 SUBACK id 7 with an empty
        // property block; 3.1.1 UNSUBACK id 9.
        assert_eq!(
            ack_codes(&[0x90, 0x04, 0x00, 0x07, 0x01, 0x80], false),
            Some((7, vec![1, 0x80]))
        );
        assert_eq!(
            ack_codes(&[0x90, 0x04, 0x00, 0x07, 0x00, 0x02], true),
            Some((7, vec![2]))
        );
        assert_eq!(
            ack_codes(&[0xB0, 0x02, 0x00, 0x09], false),
            Some((9, vec![]))
        );
        assert_eq!(ack_codes(&[0x90, 0x01, 0x00], false), None);
        assert_eq!(packet_id(&[0x40, 0x02, 0x12, 0x34]), Some(0x1234));
    }

    #[test]
    fn the_topic_alias_is_found_past_the_other_properties() {
        use rumqttc::v5::mqttbytes::QoS;
        use rumqttc::v5::mqttbytes::v5::{Publish, PublishProperties};
        let frame = |topic: &str, qos: QoS, properties: Option<PublishProperties>| {
            let mut publish = Publish::new(topic, qos, "payload", properties);
            publish.pkid = 9;
            let mut buf = BytesMut::new();
            publish.write(&mut buf).unwrap();
            buf
        };
        let every = PublishProperties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(60),
            topic_alias: Some(4_000),
            response_topic: Some("reply/to".into()),
            correlation_data: Some(bytes::Bytes::from_static(b"corr")),
            user_properties: vec![("k".into(), "v".into()), ("kk".into(), "".into())],
            subscription_identifiers: vec![],
            content_type: Some("text/plain".into()),
        };
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            assert_eq!(
                publish_topic_alias(&frame("a/b", qos, Some(every.clone()))),
                Some(4_000)
            );
            assert_eq!(
                publish_topic_alias(&frame("", qos, Some(every.clone()))),
                Some(4_000)
            );
            let none = PublishProperties {
                topic_alias: None,
                ..every.clone()
            };
            assert_eq!(publish_topic_alias(&frame("a/b", qos, Some(none))), None);
            assert_eq!(publish_topic_alias(&frame("a/b", qos, None)), None);
        }
        // Cut anywhere: no alias, no panic.
        let whole = frame("a/b", QoS::AtLeastOnce, Some(every));
        for cut in 0..whole.len() - "payload".len() {
            assert_eq!(publish_topic_alias(&whole[..cut]), None, "cut at {cut}");
        }
    }

    #[test]
    fn long_reason_strings_are_cut_on_a_character_boundary() {
        let long = "é".repeat(300);
        let packet = disconnect_v5(0x98, Some(&long));
        let mut buf = BytesMut::from(&packet[..]);
        assert!(V5.read_mut(&mut buf, 4096).is_ok());
        assert!(packet.len() < 220);
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use bytes::BytesMut;
    use proptest::prelude::*;
    use rumqttd::protocol::{Protocol, v4::V4, v5::V5};

    proptest! {
        /// What the front layer reads from a client before authenticating
        /// it: arbitrary bytes get an answer or an error, never a panic.
        #[test]
        fn first_packet_handling_never_panics(body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut frame = vec![0x10];
            let mut len = body.len();
            loop {
                let mut byte = (len % 128) as u8;
                len /= 128;
                if len > 0 { byte |= 0x80; }
                frame.push(byte);
                if len == 0 { break; }
            }
            frame.extend_from_slice(&body);
            let _ = frame_len(&frame, 1024);
            let _ = connect_protocol_level(&frame);
            let _ = V4.read_mut(&mut BytesMut::from(&frame[..]), 1024);
            let _ = V5.read_mut(&mut BytesMut::from(&frame[..]), 1024);
        }

        #[test]
        fn framing_and_connack_helpers_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = whole_frames(&raw, 1024);
            let _ = connack_code(&raw);
            let _ = connack_v5_with_assigned_id(&raw, "id");
            let _ = ack_codes(&raw, true);
            let _ = ack_codes(&raw, false);
            let _ = packet_id(&raw);
        }
    }
}
