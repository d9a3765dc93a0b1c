//! Inputs the fuzz targets (`fuzz/`, see fuzz/README.md) found to break
//! mqgate, kept as tests of the normal `cargo test`: each calls the entry
//! point its target calls, with the input the target was given. The raw
//! inputs are in `fuzz/regressions/<target>/`, which the fuzz runs read
//! too.

use bytes::BytesMut;
use mqgate::broker::codec;
use mqgate::broker::front::fuzzing::{self, Packet};
use mqgate::broker::registry::ProtocolVersion;
use rumqttd::protocol::{Disconnect, DisconnectProperties, DisconnectReasonCode};

/// `mqtt_link`, fuzz/regressions/mqtt_link/router-disconnect-v5-without-properties
/// (`88 66`: a router DISCONNECT, reason Malformed Packet, no properties).
/// The router's DISCONNECT for an MQTT 5 client (a client's malformed
/// packet, protocol error, invalid topic alias) was encoded as
/// `E0 01 81 00`: the frame said one byte and carried two, so the front
/// layer's framing left the `00` behind and the client got a DISCONNECT
/// without its property length. Fixed in the vendored rumqttd (PATCHES.md
/// 5).
#[test]
fn a_router_disconnect_for_an_mqtt5_client_is_one_whole_frame() {
    // The reasons the router disconnects a client with.
    let reasons = [
        DisconnectReasonCode::MalformedPacket,
        DisconnectReasonCode::ProtocolError,
        DisconnectReasonCode::TopicAliasInvalid,
    ];
    for reason_code in reasons {
        for properties in [
            None,
            Some(DisconnectProperties {
                session_expiry_interval: None,
                reason_string: Some("why".into()),
                user_properties: Vec::new(),
                server_reference: None,
            }),
        ] {
            let packet = Packet::Disconnect(Disconnect { reason_code }, properties.clone());
            let mut out = BytesMut::new();
            fuzzing::encode_for_client(ProtocolVersion::V5, packet, &mut out).unwrap();
            // What the front layer does with the router's bytes: whole
            // frames, nothing left over.
            assert_eq!(
                codec::frame_len(&out, usize::MAX),
                Ok(Some(out.len())),
                "{reason_code:?} {properties:?}: {out:02X?}"
            );
            // And a strict MQTT 5 client (rumqttc) reads it, with its reason.
            let mut stream = out.clone();
            match rumqttc::v5::mqttbytes::v5::Packet::read(&mut stream, None) {
                Ok(rumqttc::v5::mqttbytes::v5::Packet::Disconnect(d)) => {
                    assert_eq!(
                        format!("{:?}", d.reason_code),
                        format!("{reason_code:?}"),
                        "{out:02X?}"
                    );
                }
                other => panic!("{reason_code:?}: rumqttc read {other:?} from {out:02X?}"),
            }
            assert!(stream.is_empty(), "{out:02X?}: bytes left over");
            // An MQTT 3.1.1 client gets no DISCONNECT at all.
            let packet = Packet::Disconnect(Disconnect { reason_code }, properties);
            let mut out = BytesMut::new();
            fuzzing::encode_for_client(ProtocolVersion::V311, packet, &mut out).unwrap();
            assert!(out.is_empty());
        }
    }
}

/// The raw input is kept where the fuzz runs read it.
#[test]
fn the_mqtt_link_input_is_kept() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fuzz/regressions/mqtt_link/router-disconnect-v5-without-properties"
    );
    assert_eq!(std::fs::read(path).unwrap(), [0x88, 0x66]);
}
