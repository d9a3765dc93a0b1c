//! What carries MQTT and HTTP besides plain TCP: TLS ([`tls`], rustls),
//! MQTT over WebSocket and secure WebSocket ([`ws`]), and the self-signed
//! certificates of the demo and of `mqgate cert` ([`certs`]).
//!
//! Each listener's accept step ([`Upgrade::accept`]) turns a new TCP
//! connection into a byte stream ([`Accepted`]) that the MQTT front layer
//! reads and writes as it does a socket (`FrontLayer::handle`), or
//! says why it refused it ([`Refused`], one log line). The caller bounds
//! the time it takes with `mqtt.connect_timeout_secs`.
//!
//! Nothing here knows about MQTT sessions or the API: the accept loops that
//! hand the streams on are in `broker::front::transports` and
//! `server::http`.

pub mod certs;
pub mod tls;
pub mod ws;

use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// Why a connection was closed before it carried MQTT or HTTP.
#[derive(Debug)]
pub enum Refused {
    /// Closed or reset before it sent anything (a port probe): not worth
    /// more than a debug line.
    Silent,
    /// It spoke something other than the port does: what it looked like.
    WrongProtocol(String),
    /// The TLS handshake failed: rustls' reason (or the client's alert,
    /// such as an unknown CA: the client does not trust the certificate).
    Tls(std::io::Error),
    /// The WebSocket upgrade failed or was refused: why.
    WebSocket(String),
    /// The handshake was not done within this time.
    TimedOut(Duration),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Silent => f.write_str("closed before sending anything"),
            Refused::WrongProtocol(what) => f.write_str(what),
            Refused::Tls(e) => write!(f, "TLS handshake failed: {e}"),
            Refused::WebSocket(why) => f.write_str(why),
            Refused::TimedOut(after) => {
                write!(f, "handshake not done within {}s", after.as_secs_f32())
            }
        }
    }
}

impl Refused {
    /// Whether it is worth only a debug line.
    pub fn is_quiet(&self) -> bool {
        matches!(self, Refused::Silent)
    }

    /// What a connection to a TLS port that does not start with a TLS
    /// handshake record sent instead, by its first byte.
    fn not_tls(first: u8) -> Refused {
        Refused::WrongProtocol(match first {
            // CONNECT's fixed header.
            0x10 => {
                "plain MQTT (a CONNECT packet) sent to a TLS port: the client must use TLS".into()
            }
            b'A'..=b'Z' => {
                "plain HTTP sent to a TLS port: use https:// (or wss:// for MQTT over WebSocket)"
                    .into()
            }
            b => format!("not a TLS handshake (first byte 0x{b:02x})"),
        })
    }

    /// The same for a plain WebSocket port, which expects an HTTP request.
    fn not_http(first: u8) -> Option<Refused> {
        let what = match first {
            0x16 => "a TLS handshake sent to a plain WebSocket port: use ws:// there (wss:// is served on mqtt.wss_listen)".into(),
            0x10 => "plain MQTT (a CONNECT packet) sent to a WebSocket port: the client must use MQTT over WebSocket (ws://host:port/mqtt)".into(),
            b'A'..=b'Z' => return None,
            b => format!("not an HTTP request (first byte 0x{b:02x})"),
        };
        Some(Refused::WrongProtocol(what))
    }
}

/// The first byte a new connection sent, left unread.
async fn first_byte(tcp: &TcpStream) -> Result<u8, Refused> {
    let mut first = [0u8; 1];
    match tcp.peek(&mut first).await {
        Ok(0) | Err(_) => Err(Refused::Silent),
        Ok(_) => Ok(first[0]),
    }
}

/// How one listener turns a TCP connection into an MQTT byte stream.
#[derive(Clone)]
pub enum Upgrade {
    /// MQTT over TLS.
    Tls(tls::TlsAcceptor),
    /// MQTT over WebSocket.
    Ws(ws::Settings),
    /// MQTT over WebSocket over TLS.
    Wss(tls::TlsAcceptor, ws::Settings),
}

/// A connection after its handshake. (Moved once, into the box the front
/// layer keeps it in: the variants' sizes do not matter.)
#[allow(clippy::large_enum_variant)]
pub enum Accepted {
    Tls(TlsStream<TcpStream>),
    Ws(ws::WsStream<TcpStream>),
    Wss(ws::WsStream<TlsStream<TcpStream>>),
}

impl Upgrade {
    /// The transport's name, for logs: `tls`, `ws` or `wss`.
    pub fn name(&self) -> &'static str {
        match self {
            Upgrade::Tls(_) => "tls",
            Upgrade::Ws(_) => "ws",
            Upgrade::Wss(..) => "wss",
        }
    }

    /// The handshake (TLS, then the WebSocket upgrade, as the listener
    /// needs). Not bounded in time: the caller bounds it.
    pub async fn accept(&self, tcp: TcpStream) -> Result<Accepted, Refused> {
        match self {
            Upgrade::Tls(acceptor) => Ok(Accepted::Tls(tls::accept(acceptor, tcp).await?)),
            Upgrade::Ws(settings) => {
                if let Some(refused) = Refused::not_http(first_byte(&tcp).await?) {
                    return Err(refused);
                }
                Ok(Accepted::Ws(ws::accept(tcp, *settings).await?))
            }
            Upgrade::Wss(acceptor, settings) => {
                let secure = tls::accept(acceptor, tcp).await?;
                Ok(Accepted::Wss(ws::accept(secure, *settings).await?))
            }
        }
    }
}
