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

/// The `Action` of a device event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
