//! A client's transport, as the relay reads and writes it: a TCP socket, or
//! any other byte stream (TLS, WebSocket) the listeners hand over.
//!
//! Reading a TCP socket holds no buffer space while it waits for bytes, so
//! that an idle client (or one that opened a connection and sent nothing
//! yet) holds none. Other streams keep buffers
//! of their own (a TLS session's records), so they are read the usual way.

use bytes::BytesMut;
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;

/// Bytes taken for one read.
const READ_CHUNK: usize = 4096;

/// A byte stream a client connects over.
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> ClientStream for T {}

/// A client's accepted connection.
pub enum ClientConnection {
    Tcp(TcpStream),
    /// TLS, WebSocket, or anything else that carries MQTT's bytes.
    Stream(Box<dyn ClientStream>),
}

/// What the relay writes the client through.
pub(super) type ClientWrite = Box<dyn AsyncWrite + Unpin + Send>;

/// Writes `bytes` whole and flushes them: over TLS and WebSocket, what the
/// socket did not take at once waits for the next write otherwise (a no-op
/// flush on TCP).
pub(super) async fn write_flushed<W: AsyncWrite + Unpin + ?Sized>(
    writer: &mut W,
    bytes: &[u8],
) -> io::Result<()> {
    writer.write_all(bytes).await?;
    writer.flush().await
}

/// What the relay reads the client through.
pub(super) enum ClientRead {
    Tcp(OwnedReadHalf),
    Stream(ReadHalf<Box<dyn ClientStream>>),
}

impl ClientConnection {
    pub(super) fn split(self) -> (ClientRead, ClientWrite) {
        match self {
            ClientConnection::Tcp(stream) => {
                let (read, write) = stream.into_split();
                (ClientRead::Tcp(read), Box::new(write))
            }
            ClientConnection::Stream(stream) => {
                let (read, write): (_, WriteHalf<_>) = tokio::io::split(stream);
                (ClientRead::Stream(read), Box::new(write))
            }
        }
    }
}

impl ClientRead {
    /// Reads what the client sent, appending it to `buf`; `Ok(0)` once it
    /// closed. On TCP, `buf` grows only after bytes have arrived.
    pub(super) async fn read_into(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            // Try first: under load the bytes are usually there already.
            ClientRead::Tcp(read) => loop {
                buf.reserve(READ_CHUNK);
                match read.try_read_buf(buf) {
                    Ok(n) => return Ok(n),
                    // Nothing to read: give the space back while waiting
                    // (readiness can also be reported with nothing to read,
                    // as for a new socket).
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if buf.is_empty() {
                            *buf = BytesMut::new();
                        }
                        read.readable().await?;
                    }
                    Err(e) => return Err(e),
                }
            },
            ClientRead::Stream(read) => {
                buf.reserve(READ_CHUNK);
                read.read_buf(buf).await
            }
        }
    }
}
