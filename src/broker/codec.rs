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
    #[error("packet type {0} with reserved fixed-header flags {1:#06b}")]
    BadFlags(u8, u8),
    #[error("a PUBLISH topic name with a wildcard (+ or #)")]
    WildcardTopic,
    #[error("a PUBLISH topic name that is not UTF-8 or holds U+0000")]
    TopicNotUtf8,
    #[error("property {0:#04x} given more than once")]
    DuplicateProperty(u8),
    #[error("a SUBSCRIBE or UNSUBSCRIBE without a topic filter")]
    NoTopicFilter,
    #[error("more than {0} QoS 2 PUBLISHes awaiting their PUBREL (receive maximum)")]
    ReceiveMaximumExceeded(u16),
    #[error("every packet id of the connection is waiting for an acknowledgement")]
    NoPacketId,
}

impl FrameError {
    /// The MQTT 5 reason code a DISCONNECT for this error carries: 0x95
    /// packet too large, 0x82 protocol error (a packet the client may not
    /// send, a property given twice), 0x90 topic name invalid, 0x93
    /// receive maximum exceeded, 0x81
    /// malformed packet otherwise.
    pub fn reason_code(&self) -> u8 {
        match self {
            FrameError::TooLarge(..) => 0x95,
            FrameError::Forbidden(_)
            | FrameError::DuplicateProperty(_)
            | FrameError::NoTopicFilter => 0x82,
            FrameError::WildcardTopic => 0x90,
            FrameError::ReceiveMaximumExceeded(_) | FrameError::NoPacketId => 0x93,
            FrameError::Malformed | FrameError::BadFlags(..) | FrameError::TopicNotUtf8 => 0x81,
        }
    }
}

/// What is wrong, if anything, with the fixed header's flags (the low
/// nibble of the first byte) of a complete frame a connected client sent.
/// MQTT requires the receiver to close the connection on reserved flags
/// that are not as specified (3.1.1 and 5, section 2.2.2): PUBREL,
/// SUBSCRIBE and UNSUBSCRIBE carry 0b0010, every other packet but PUBLISH
/// 0b0000; a PUBLISH may not have QoS 3. rumqttd's decoder does not look.
pub fn fixed_header_problem(frame: &[u8]) -> Option<FrameError> {
    let first = *frame.first()?;
    let (kind, flags) = (first >> 4, first & 0x0F);
    let valid = match kind {
        packet_type::PUBLISH => (flags >> 1) & 0x03 != 3,
        packet_type::PUBREL | packet_type::SUBSCRIBE | packet_type::UNSUBSCRIBE => flags == 0b0010,
        _ => flags == 0,
    };
    (!valid).then_some(FrameError::BadFlags(kind, flags))
}

/// What is wrong, if anything, with a complete PUBLISH frame's topic name
/// and (MQTT 5) properties, where rumqttd would not refuse it: a topic
/// name with a wildcard would reach every subscriber whose filter matches
/// the literal `+` or `#` (MQTT forbids wildcards in a topic name), one
/// that is not UTF-8 would be acknowledged before the router drops the
/// connection, and a property given twice is a protocol error that
/// rumqttd's decoder lets the last one win.
pub fn publish_problem(frame: &[u8], protocol_v5: bool) -> Option<FrameError> {
    let (topic, _) = publish_topic(frame)?;
    if topic.iter().any(|b| matches!(b, b'+' | b'#')) {
        return Some(FrameError::WildcardTopic);
    }
    if topic.contains(&0) || std::str::from_utf8(topic).is_err() {
        return Some(FrameError::TopicNotUtf8);
    }
    if protocol_v5 {
        let (_, len_len) = read_variable_int(frame.get(1..)?)?;
        let mut at = 1 + len_len + 2 + topic.len();
        if publish_qos(frame) > 0 {
            at += 2;
        }
        return properties_problem(frame.get(at..)?);
    }
    None
}

/// A complete SUBSCRIBE or UNSUBSCRIBE frame without a single topic filter
/// (MQTT 5 calls it a protocol error, 3.1.1 a protocol violation); `None`
/// also where the frame is malformed (the decoder refuses it itself).
pub fn subscribe_problem(frame: &[u8], protocol_v5: bool) -> Option<FrameError> {
    let body = frame_body(frame);
    let mut at = 2; // the packet id
    if protocol_v5 {
        let (len, len_len) = read_variable_int(body.get(at..)?)?;
        at += len_len + len;
    }
    (body.len() == at).then_some(FrameError::NoTopicFilter)
}

/// What is wrong, if anything, with a complete CONNECT frame before it is
/// decoded, where rumqttd's decoder would accept it: fixed-header flags
/// other than 0, the reserved connect flag (bit 0) set, a will QoS of 3,
/// will QoS or retain without a will (3.1.1 and 5, section 3.1.2.3: the
/// server must close the connection), and (MQTT 5) a CONNECT property given
/// twice.
pub fn connect_problem(frame: &[u8], protocol_v5: bool) -> Option<FrameError> {
    let first = *frame.first()?;
    if first & 0x0F != 0 {
        return Some(FrameError::BadFlags(packet_type::CONNECT, first & 0x0F));
    }
    let (_, len_len) = read_variable_int(frame.get(1..)?)?;
    let at = 1 + len_len;
    let name_len = u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]) as usize;
    // protocol name, level, then the connect flags and the keepalive
    let flags_at = at + 2 + name_len + 1;
    let flags = *frame.get(flags_at)?;
    let will = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0x03;
    let will_retain = flags & 0x20 != 0;
    if flags & 0x01 != 0 || will_qos == 3 || (!will && (will_qos != 0 || will_retain)) {
        return Some(FrameError::BadFlags(packet_type::CONNECT, flags));
    }
    if protocol_v5 {
        return properties_problem(frame.get(flags_at + 3..)?);
    }
    None
}

/// A property given twice in an MQTT 5 property block (its length, then
/// the properties), other than User Property, which may repeat. `None`
/// also where the block is malformed: the decoder refuses that itself.
fn properties_problem(block: &[u8]) -> Option<FrameError> {
    let (len, len_len) = read_variable_int(block)?;
    let mut properties = block.get(len_len..len_len + len)?;
    let mut seen = [false; 0x30];
    while let Some((&id, tail)) = properties.split_first() {
        let u16_at = |at: usize| -> Option<usize> {
            Some(u16::from_be_bytes([*tail.get(at)?, *tail.get(at + 1)?]) as usize)
        };
        let skip = match id {
            // bytes
            0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => 1,
            // two-byte integers
            0x13 | 0x21 | 0x22 | 0x23 => 2,
            // four-byte integers
            0x02 | 0x11 | 0x18 | 0x27 => 4,
            // variable byte integer (subscription identifier)
            0x0B => read_variable_int(tail)?.1,
            // UTF-8 strings and binary data
            0x03 | 0x08 | 0x09 | 0x12 | 0x15 | 0x16 | 0x1A | 0x1C | 0x1F => 2 + u16_at(0)?,
            // user property: a string pair, and it may repeat
            0x26 => {
                let key = 2 + u16_at(0)?;
                key + 2 + u16_at(key)?
            }
            // an unknown property: the decoder refuses it
            _ => return None,
        };
        if id != 0x26 {
            if seen[usize::from(id)] {
                return Some(FrameError::DuplicateProperty(id));
            }
            seen[usize::from(id)] = true;
        }
        properties = tail.get(skip..)?;
    }
    None
}

/// Rewrites the packet id of a whole SUBSCRIBE, SUBACK, UNSUBSCRIBE or
/// UNSUBACK frame (the first two bytes after the fixed header); false if
/// the frame is too short to hold one.
pub fn set_packet_id(frame: &mut [u8], packet_id: u16) -> bool {
    let Some((_, len_len)) = frame.get(1..).and_then(read_variable_int) else {
        return false;
    };
    let at = 1 + len_len;
    match frame.get_mut(at..at + 2) {
        Some(id) => {
            id.copy_from_slice(&packet_id.to_be_bytes());
            true
        }
        None => false,
    }
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
    let id = client_id.as_bytes();
    let id_len = u16::try_from(id.len()).ok()?;
    let mut property = vec![0x12];
    property.extend_from_slice(&id_len.to_be_bytes());
    property.extend_from_slice(id);
    connack_v5_with_properties(frame, &property)
}

/// An MQTT 5 CONNACK with the Receive Maximum property (0x21) added: the
/// most QoS 2 PUBLISHes the client may have awaiting their PUBREL (the
/// front layer enforces it; rumqttd's CONNACK does not say, which tells a
/// client 65,535).
pub fn connack_v5_with_receive_maximum(frame: &[u8], receive_maximum: u16) -> Option<Vec<u8>> {
    let mut property = vec![0x21];
    property.extend_from_slice(&receive_maximum.to_be_bytes());
    connack_v5_with_properties(frame, &property)
}

/// An MQTT 5 CONNACK with `extra` (encoded properties) appended to its
/// properties.
fn connack_v5_with_properties(frame: &[u8], extra: &[u8]) -> Option<Vec<u8>> {
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
    let mut new_properties = properties.to_vec();
    new_properties.extend_from_slice(extra);
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

    #[test]
    fn what_rumqttd_lets_through_is_found() {
        // Reserved flags.
        assert_eq!(fixed_header_problem(&[0x82, 0]), None);
        assert_eq!(
            fixed_header_problem(&[0x80, 0]),
            Some(FrameError::BadFlags(8, 0))
        );
        assert_eq!(fixed_header_problem(&[0x62, 0]), None);
        assert!(fixed_header_problem(&[0x60, 0]).is_some());
        assert!(fixed_header_problem(&[0xC1, 0]).is_some());
        assert!(fixed_header_problem(&[0x36, 0]).is_some());
        assert_eq!(fixed_header_problem(&[0x3D, 0]), None);
        // A PUBLISH's topic name and properties.
        let publish = |topic: &[u8], properties: Option<&[u8]>| {
            let mut body = (topic.len() as u16).to_be_bytes().to_vec();
            body.extend_from_slice(topic);
            if let Some(p) = properties {
                body.push(p.len() as u8);
                body.extend_from_slice(p);
            }
            body.extend_from_slice(b"payload");
            with_fixed_header(0x30, body)
        };
        assert_eq!(publish_problem(&publish(b"a/b", None), false), None);
        assert_eq!(
            publish_problem(&publish(b"a/+", None), false),
            Some(FrameError::WildcardTopic)
        );
        assert_eq!(
            publish_problem(&publish(b"a/\xC3\x28", None), false),
            Some(FrameError::TopicNotUtf8)
        );
        assert_eq!(
            publish_problem(
                &publish(
                    b"a",
                    Some(&[0x26, 0, 1, b'k', 0, 1, b'v', 0x26, 0, 1, b'k', 0, 0])
                ),
                true
            ),
            None
        );
        assert_eq!(
            publish_problem(&publish(b"a", Some(&[0x01, 1, 0x23, 0, 1, 0x01, 0])), true),
            Some(FrameError::DuplicateProperty(0x01))
        );
        // A SUBSCRIBE without a filter.
        assert_eq!(
            subscribe_problem(&[0x82, 2, 0, 1], false),
            Some(FrameError::NoTopicFilter)
        );
        assert_eq!(
            subscribe_problem(&[0x82, 3, 0, 1, 0], true),
            Some(FrameError::NoTopicFilter)
        );
        assert_eq!(
            subscribe_problem(&[0x82, 6, 0, 1, 0, 1, b'a', 0], false),
            None
        );
        // CONNECT flags.
        let connect = |first: u8, flags: u8| {
            let mut frame = vec![first, 10, 0, 4, b'M', b'Q', b'T', b'T', 4, flags, 0, 60];
            frame.extend_from_slice(&[0, 0]);
            frame[1] = (frame.len() - 2) as u8;
            frame
        };
        assert_eq!(connect_problem(&connect(0x10, 0x02), false), None);
        assert!(connect_problem(&connect(0x11, 0x02), false).is_some());
        assert!(connect_problem(&connect(0x10, 0x03), false).is_some());
        assert!(connect_problem(&connect(0x10, 0x1E), false).is_some());
        assert!(connect_problem(&connect(0x10, 0x22), false).is_some());
        assert_eq!(connect_problem(&connect(0x10, 0x36), false), None);
        // The receive maximum in a CONNACK.
        let connack = connack_v5_with_receive_maximum(&connack_v5(0, None), 128).unwrap();
        assert_eq!(
            connack,
            vec![0x20, 0x06, 0x00, 0x00, 0x03, 0x21, 0x00, 0x80]
        );
    }

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
            let _ = connack_v5_with_receive_maximum(&raw, 128);
            for v5 in [false, true] {
                let _ = connect_problem(&raw, v5);
                let _ = publish_problem(&raw, v5);
                let _ = subscribe_problem(&raw, v5);
            }
            let _ = fixed_header_problem(&raw);
            let _ = ack_codes(&raw, true);
            let _ = ack_codes(&raw, false);
            let _ = packet_id(&raw);
        }
    }
}
