//! Device events and the words the trace answers use for them.
//!
//! `Action`, `ActionCode` and `ActionInfo` are the Tea SDK's documented
//! values (`QueryMqttTraceDeviceResponseBodyDeviceInfoList`):
//!
//! | what happened | Action | ActionInfo |
//! |---|---|---|
//! | a CONNECT accepted | `connect` | `accepted` |
//! | a CONNECT refused: credentials, blacklist, group id | `connect` | `not authorized` |
//! | a CONNECT refused: malformed, unsupported version, empty id without clean start | `connect` | `invalid param` |
//! | the client sent DISCONNECT | `disconnect` | `disconnected by client` |
//! | the client closed the TCP connection | `close` | `closed by client` |
//! | the client's socket failed | `close` | `Socket IOException` |
//! | another connection took the client id | `close` | `clientId conflict` |
//! | no packet within the keepalive | `close` | `no heart` |
//! | a PUBLISH its rights refuse (3.1.1) | `close` | `resource auth failed` |
//!
//! Events the SDK lists no value for, named in the same style (mqgate's
//! choice): a kick by the API is `close` / `kicked: <why>` (why: "a
//! CloseConnection call", "the EMQX API", "the connection blacklist");
//! the broker going away is `close` / `closed by server`; a shutdown is
//! `close` / `server shutdown`.
//!
//! `ActionCode` is `mqtt.trace.action.` followed by the Action.

use std::sync::Arc;

/// The names a connection's message events carry, built once per
/// connection.
#[derive(Debug, Clone)]
pub struct EventNames {
    pub instance_id: Arc<str>,
    pub client_id: Arc<str>,
    pub ip: Arc<str>,
}

impl EventNames {
    pub fn new(instance_id: &str, client_id: &str, ip: &str) -> EventNames {
        EventNames {
            instance_id: Arc::from(instance_id),
            client_id: Arc::from(client_id),
            ip: Arc::from(ip),
        }
    }

    /// An event of this connection's.
    pub fn event(
        &self,
        msg_id: u128,
        action: MessageAction,
        time_ms: i64,
        size: usize,
        qos: u8,
    ) -> MessageEvent {
        MessageEvent {
            instance_id: self.instance_id.clone(),
            msg_id,
            action,
            client_id: self.client_id.clone(),
            time_ms,
            ip: self.ip.clone(),
            topic: String::new(),
            size: u32::try_from(size).unwrap_or(u32::MAX),
            qos,
        }
    }
}

/// The `Action` of a device event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DeviceAction {
    Connect,
    Close,
    Disconnect,
}

impl DeviceAction {
    pub fn label(self) -> &'static str {
        match self {
            DeviceAction::Connect => "connect",
            DeviceAction::Close => "close",
            DeviceAction::Disconnect => "disconnect",
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            DeviceAction::Connect => "mqtt.trace.action.connect",
            DeviceAction::Close => "mqtt.trace.action.close",
            DeviceAction::Disconnect => "mqtt.trace.action.disconnect",
        }
    }

    pub fn from_label(label: &str) -> Option<DeviceAction> {
        match label {
            "connect" => Some(DeviceAction::Connect),
            "close" => Some(DeviceAction::Close),
            "disconnect" => Some(DeviceAction::Disconnect),
            _ => None,
        }
    }
}

pub const ACCEPTED: &str = "accepted";
pub const NOT_AUTHORIZED: &str = "not authorized";
pub const INVALID_PARAM: &str = "invalid param";
pub const DISCONNECTED_BY_CLIENT: &str = "disconnected by client";
pub const CLOSED_BY_CLIENT: &str = "closed by client";
pub const SOCKET_IO_EXCEPTION: &str = "Socket IOException";
pub const CLIENT_ID_CONFLICT: &str = "clientId conflict";
pub const NO_HEART: &str = "no heart";
pub const RESOURCE_AUTH_FAILED: &str = "resource auth failed";
pub const CLOSED_BY_SERVER: &str = "closed by server";
pub const SERVER_SHUTDOWN: &str = "server shutdown";

/// One thing that happened to a device.
#[derive(Debug, Clone)]
pub struct DeviceEvent {
    pub instance_id: String,
    pub client_id: String,
    pub time_ms: i64,
    /// The connection's id (`ChannelId` in the answer).
    pub channel_id: u64,
    pub action: DeviceAction,
    pub info: String,
}

/// The `Action` of a message event. The SDK's values: `pub_mqtt` (a
/// client published it) and `sub` (it was pushed to a subscriber); the
/// others are mqgate's, in the same style: `pub_api` (SendMessage
/// published it; `ClientId` is the caller's AccessKeyId), `ack` (the
/// subscriber acknowledged a QoS 1 or 2 delivery) and `drop` (a delivery
/// the subscriber never acknowledged: it left first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MessageAction {
    PubMqtt,
    PubApi,
    Sub,
    Ack,
    Drop,
}

impl MessageAction {
    pub fn label(self) -> &'static str {
        match self {
            MessageAction::PubMqtt => "pub_mqtt",
            MessageAction::PubApi => "pub_api",
            MessageAction::Sub => "sub",
            MessageAction::Ack => "ack",
            MessageAction::Drop => "drop",
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            MessageAction::PubMqtt => "mqtt.trace.action.msg.pub.mqtt",
            MessageAction::PubApi => "mqtt.trace.action.msg.pub.api",
            MessageAction::Sub => "mqtt.trace.action.msg.sub",
            MessageAction::Ack => "mqtt.trace.action.msg.ack",
            MessageAction::Drop => "mqtt.trace.action.msg.drop",
        }
    }

    pub fn info(self) -> &'static str {
        match self {
            MessageAction::PubMqtt => "Pub From Mqtt Client",
            MessageAction::PubApi => "Pub From OpenAPI",
            MessageAction::Sub => "Push To Mqtt Client",
            MessageAction::Ack => "Acked By Mqtt Client",
            MessageAction::Drop => "Dropped: the client left before acknowledging",
        }
    }

    /// The byte a stored event carries (never reused: stored rows keep
    /// them).
    pub fn code_byte(self) -> u8 {
        match self {
            MessageAction::PubMqtt => 1,
            MessageAction::PubApi => 2,
            MessageAction::Sub => 3,
            MessageAction::Ack => 4,
            MessageAction::Drop => 5,
        }
    }

    pub fn from_code_byte(byte: u8) -> Option<MessageAction> {
        [
            MessageAction::PubMqtt,
            MessageAction::PubApi,
            MessageAction::Sub,
            MessageAction::Ack,
            MessageAction::Drop,
        ]
        .into_iter()
        .find(|a| a.code_byte() == byte)
    }

    /// A publish (as opposed to a delivery).
    pub fn publishes(self) -> bool {
        matches!(self, MessageAction::PubMqtt | MessageAction::PubApi)
    }
}

/// One thing that happened to a message. The names are shared (a
/// connection builds them once), so that an event costs no allocation but
/// its topic's.
#[derive(Debug, Clone)]
pub struct MessageEvent {
    pub instance_id: Arc<str>,
    pub msg_id: u128,
    pub action: MessageAction,
    /// The publisher (pub_*) or the subscriber.
    pub client_id: Arc<str>,
    pub time_ms: i64,
    pub ip: Arc<str>,
    pub topic: String,
    pub size: u32,
    pub qos: u8,
}

/// A MsgId as the API shows it: 32 lowercase hex digits.
pub fn msg_id_text(msg_id: u128) -> String {
    format!("{msg_id:032x}")
}

/// Reads a MsgId back.
pub fn parse_msg_id(text: &str) -> Option<u128> {
    if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u128::from_str_radix(text, 16).ok()
}
