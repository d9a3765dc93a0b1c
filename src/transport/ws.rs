//! MQTT over WebSocket: the HTTP upgrade (path `/mqtt`, subprotocol
//! `mqtt`) with tokio-tungstenite, and [`WsStream`], which carries the
//! binary frames as a byte stream, so that the MQTT layer reads and writes
//! it like a socket.
//!
//! MQTT over WebSocket (MQTT 3.1.1 and 5, section 6): MQTT packets travel
//! in binary frames; a frame may hold part of a packet or several; any
//! other data frame closes the connection.

use super::Refused;
use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode, header};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

/// The one path MQTT over WebSocket is served at (as ApsaraMQ does).
pub const PATH: &str = "/mqtt";
/// The subprotocol MQTT 3.1.1 and 5 clients ask for.
pub const SUBPROTOCOL: &str = "mqtt";

/// The WebSocket layer's limits.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Largest WebSocket message (and frame) accepted, in bytes.
    pub max_message_size: usize,
}

impl Settings {
    /// Room for the largest MQTT packet the gateway accepts, and for a few
    /// small packets sent together in one message.
    pub fn for_max_packet_size(max_packet_size: usize) -> Settings {
        Settings {
            max_message_size: max_packet_size.saturating_add(64 * 1024),
        }
    }

    fn config(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            // tungstenite allocates its read buffer up front (128 KiB by
            // default): an idle device should cost little.
            .read_buffer_size(4096)
            // Each write goes out at once (the MQTT layer writes whole
            // packets and flushes); nothing waits for 128 KiB to gather.
            .write_buffer_size(0)
            .max_message_size(Some(self.max_message_size))
            .max_frame_size(Some(self.max_message_size))
    }
}

/// The upgrade of a new connection: a GET of [`PATH`] (404 for any other
/// path), answering with the `mqtt` subprotocol when the client offers it.
/// The caller bounds the time it takes.
pub async fn accept<S>(stream: S, settings: Settings) -> Result<WsStream<S>, Refused>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // tungstenite's callback type: its error is the HTTP answer itself.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, mut response: Response| {
        if request.uri().path() != PATH {
            let mut refusal = ErrorResponse::new(Some(format!(
                "MQTT over WebSocket is served at {PATH}, not {}\n",
                request.uri().path()
            )));
            *refusal.status_mut() = StatusCode::NOT_FOUND;
            return Err(refusal);
        }
        let offered = request
            .headers()
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim().eq_ignore_ascii_case(SUBPROTOCOL));
        if offered {
            response.headers_mut().insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(SUBPROTOCOL),
            );
        }
        Ok(response)
    };
    match tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(settings.config()))
        .await
    {
        Ok(ws) => Ok(WsStream::new(ws)),
        Err(tungstenite::Error::Http(response)) => {
            let why = response
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).trim().to_string())
                .unwrap_or_default();
            Err(Refused::WebSocket(format!(
                "WebSocket upgrade refused with {}: {why}",
                response.status()
            )))
        }
        Err(tungstenite::Error::Io(e))
            if matches!(
                e.kind(),
                io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
            ) =>
        {
            Err(Refused::Silent)
        }
        Err(e) => Err(Refused::WebSocket(format!(
            "not a WebSocket upgrade request ({e})"
        ))),
    }
}

/// A WebSocket connection as a byte stream: reads give the bytes of the
/// binary messages received, in order; each write is sent as one binary
/// message. Pings are answered by tungstenite while reading; a close
/// frame reads as the end of the stream; a text frame is an error.
///
/// Writes go out at once when the socket takes them; what it could not
/// take yet is sent by the next write or by `flush`, so a writer that
/// stops writing must flush (as with TLS).
pub struct WsStream<S> {
    ws: WebSocketStream<S>,
    /// What is left of the last binary message received.
    unread: Bytes,
    /// A close frame was received: reads end.
    closed: bool,
}

impl<S> WsStream<S> {
    pub fn new(ws: WebSocketStream<S>) -> WsStream<S> {
        WsStream {
            ws,
            unread: Bytes::new(),
            closed: false,
        }
    }
}

fn io_error(e: tungstenite::Error) -> io::Error {
    match e {
        tungstenite::Error::Io(e) => e,
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            io::ErrorKind::BrokenPipe.into()
        }
        e => io::Error::new(io::ErrorKind::InvalidData, e),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.unread.is_empty() {
                let n = this.unread.len().min(buf.remaining());
                buf.put_slice(&this.unread[..n]);
                this.unread.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.closed {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(data))) => this.unread = data,
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a text frame: MQTT over WebSocket travels in binary frames",
                    )));
                }
                // Answered (pings) or ignored; read on.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(_))) | None => this.closed = true,
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let mut ws = Pin::new(&mut self.ws);
        ready!(ws.as_mut().poll_ready(cx)).map_err(io_error)?;
        ws.as_mut()
            .start_send(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(io_error)?;
        // Out now if the socket takes it; if not, by the next write or flush.
        if let Poll::Ready(Err(e)) = ws.poll_flush(cx) {
            return Poll::Ready(Err(io_error(e)));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_flush(cx).map_err(io_error)
    }

    /// Sends a close frame (and whatever was not sent yet).
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_close(cx).map_err(io_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    const SETTINGS: Settings = Settings {
        max_message_size: 1024,
    };

    /// A server stream and a client over an in-memory pipe; the client's
    /// request offers `subprotocol` when given.
    async fn pair(
        path: &str,
        subprotocol: Option<&str>,
    ) -> (
        Result<WsStream<DuplexStream>, Refused>,
        Result<
            (
                WebSocketStream<DuplexStream>,
                tungstenite::handshake::client::Response,
            ),
            tungstenite::Error,
        >,
    ) {
        let (server, client) = tokio::io::duplex(64 * 1024);
        let mut request = format!("ws://localhost{path}")
            .into_client_request()
            .unwrap();
        if let Some(p) = subprotocol {
            request
                .headers_mut()
                .insert(header::SEC_WEBSOCKET_PROTOCOL, p.parse().unwrap());
        }
        tokio::join!(
            accept(server, SETTINGS),
            tokio_tungstenite::client_async(request, client)
        )
    }

    #[tokio::test]
    async fn the_mqtt_subprotocol_is_answered_when_offered() {
        let (server, client) = pair("/mqtt", Some("mqttv3.1, mqtt")).await;
        server.unwrap();
        let (_, response) = client.unwrap();
        assert_eq!(response.headers()[header::SEC_WEBSOCKET_PROTOCOL], "mqtt");

        let (server, client) = pair("/mqtt?x=1", None).await;
        server.unwrap();
        let (_, response) = client.unwrap();
        assert!(
            !response
                .headers()
                .contains_key(header::SEC_WEBSOCKET_PROTOCOL)
        );
    }

    #[tokio::test]
    async fn other_paths_get_404() {
        let (server, client) = pair("/", Some("mqtt")).await;
        let refused = server.err().unwrap().to_string();
        assert!(
            refused.contains("404") && refused.contains("/mqtt"),
            "{refused}"
        );
        match client.err().unwrap() {
            tungstenite::Error::Http(response) => assert_eq!(response.status(), 404),
            e => panic!("{e}"),
        }
    }

    #[tokio::test]
    async fn a_request_that_is_not_an_upgrade_is_refused() {
        let (server, mut client) = tokio::io::duplex(4096);
        let (refused, _) = tokio::join!(accept(server, SETTINGS), async move {
            client
                .write_all(b"GET /mqtt HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            client
        });
        let refused = refused.err().unwrap().to_string();
        assert!(refused.contains("not a WebSocket upgrade"), "{refused}");
    }

    /// Bytes cross message boundaries both ways: a packet split over two
    /// messages, two packets in one; pings are answered; a close ends the
    /// stream.
    #[tokio::test]
    async fn binary_messages_read_as_one_byte_stream() {
        let (server, client) = pair("/mqtt", Some("mqtt")).await;
        let mut server = server.unwrap();
        let (mut client, _) = client.unwrap();

        client
            .send(Message::binary(vec![0x10, 0x02]))
            .await
            .unwrap();
        client
            .send(Message::Ping(Bytes::from_static(b"hi")))
            .await
            .unwrap();
        client
            .send(Message::binary(vec![0x00, 0x04, 0xC0, 0x00]))
            .await
            .unwrap();
        let mut got = [0u8; 6];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(got, [0x10, 0x02, 0x00, 0x04, 0xC0, 0x00]);
        assert_eq!(
            client.next().await.unwrap().unwrap(),
            Message::Pong(Bytes::from_static(b"hi"))
        );

        server.write_all(&[0x20, 0x02, 0x00, 0x00]).await.unwrap();
        server.flush().await.unwrap();
        assert_eq!(
            client.next().await.unwrap().unwrap(),
            Message::binary(vec![0x20, 0x02, 0x00, 0x00])
        );

        client.close(None).await.unwrap();
        let mut rest = Vec::new();
        assert_eq!(server.read_to_end(&mut rest).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_text_frame_is_an_error_and_shutdown_sends_a_close() {
        let (server, client) = pair("/mqtt", None).await;
        let mut server = server.unwrap();
        let (mut client, _) = client.unwrap();
        client.send(Message::text("CONNECT")).await.unwrap();
        let mut byte = [0u8; 1];
        let e = server.read(&mut byte).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);

        server.shutdown().await.unwrap();
        assert!(matches!(client.next().await, Some(Ok(Message::Close(_)))));
    }

    #[tokio::test]
    async fn a_message_over_the_limit_is_an_error() {
        let (server, client) = pair("/mqtt", None).await;
        let mut server = server.unwrap();
        let (mut client, _) = client.unwrap();
        let _ = client.send(Message::binary(vec![0u8; 2048])).await;
        let mut byte = [0u8; 1];
        assert!(server.read(&mut byte).await.is_err());
    }
}
