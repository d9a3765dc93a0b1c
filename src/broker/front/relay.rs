//! Relaying a device to the node that serves its instance (in a cluster,
//! `crate::cluster::placement`).
//!
//! A device may connect to any node. Once its CONNECT names an instance
//! another node holds, this node opens a TCP connection to that node's
//! relay listener (`cluster.relay_listen`, advertised through Redis),
//! sends a short preamble (where the device connected from, and which
//! instance listener it came in on), then the CONNECT and whatever
//! followed it, and from then on copies bytes both ways until either side
//! closes. The holding node authenticates the device and serves it as if it
//! had connected there: its registry, the directory, kicks, traces and the
//! bill all see the device on the holding node. TLS and WebSocket end on
//! the node the device reached; the relay carries plain MQTT.
//!
//! A relayed connection is never relayed again: a node that no longer
//! holds the instance when it arrives (the lease just moved) refuses it
//! with "server unavailable", and the device connects again.
//!
//! The preamble: `MQGR`, a 2-byte big-endian length, then
//! `"{peer} {endpoint}"` (`-` for the shared port). The relay listener is
//! for the cluster's own network: what it trusts from the preamble is only
//! the peer address it shows (logs, traces, the session's `ip`), and the
//! listener it names, which is as open as that listener itself.

use super::client_io::{self, ClientRead, ClientWrite};
use super::{ClientConnection, FrontLayer};
use bytes::BytesMut;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

const MAGIC: &[u8; 4] = b"MQGR";
/// The longest preamble text: an address and an instance id.
const MAX_PREAMBLE: usize = 512;
/// How long a relayed device waits for the holding node to take its
/// connection before it is told to connect again.
pub(super) const RELAY_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// After the device closed its side, how long the holding node's last
/// bytes are still relayed (so a DISCONNECT it sent is read, not reset).
const DRAIN_AFTER_CLIENT_CLOSED: Duration = Duration::from_secs(1);

/// The preamble of a relayed connection.
pub(super) fn preamble(peer: SocketAddr, endpoint: Option<&str>) -> Vec<u8> {
    let text = format!("{peer} {}", endpoint.unwrap_or("-"));
    let mut out = Vec::with_capacity(6 + text.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(text.len() as u16).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    out
}

/// What a preamble's text says: the device's address and the instance
/// listener it connected to (`None`: the shared port).
pub(super) fn parse_preamble_text(text: &[u8]) -> Result<(SocketAddr, Option<String>), String> {
    let text = std::str::from_utf8(text).map_err(|_| "the preamble is not UTF-8".to_string())?;
    let (peer, endpoint) = text
        .split_once(' ')
        .ok_or_else(|| format!("the preamble {text:?} has no endpoint"))?;
    let peer = peer
        .parse()
        .map_err(|_| format!("the preamble's peer {peer:?} is not an address"))?;
    let endpoint = match endpoint {
        "-" => None,
        e if e.is_empty() || e.contains(char::is_whitespace) => {
            return Err(format!(
                "the preamble's endpoint {e:?} is not an instance id"
            ));
        }
        e => Some(e.to_string()),
    };
    Ok((peer, endpoint))
}

/// Reads a preamble off a relayed connection (no byte past it).
async fn read_preamble(stream: &mut TcpStream) -> Result<(SocketAddr, Option<String>), String> {
    let mut head = [0u8; 6];
    stream
        .read_exact(&mut head)
        .await
        .map_err(|e| format!("no preamble: {e}"))?;
    if &head[..4] != MAGIC {
        return Err("not a relayed connection (no MQGR preamble)".into());
    }
    let len = usize::from(u16::from_be_bytes([head[4], head[5]]));
    if len > MAX_PREAMBLE {
        return Err(format!("a preamble of {len} bytes; at most {MAX_PREAMBLE}"));
    }
    let mut text = vec![0u8; len];
    stream
        .read_exact(&mut text)
        .await
        .map_err(|e| format!("a cut preamble: {e}"))?;
    parse_preamble_text(&text)
}

impl FrontLayer {
    /// Accepts the connections other nodes relay to this one, until
    /// `shutdown` is cancelled.
    pub async fn serve_relayed(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) {
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((mut stream, from)) => {
                        let _ = stream.set_nodelay(true);
                        let front = self.clone();
                        tokio::spawn(async move {
                            let read = tokio::time::timeout(front.connect_timeout, read_preamble(&mut stream)).await;
                            match read {
                                Ok(Ok((peer, endpoint))) => {
                                    front.serve_connection(ClientConnection::Tcp(stream), peer, endpoint.as_deref(), true).await
                                }
                                Ok(Err(why)) => info!(%from, %why, "relay listener: refused a connection"),
                                Err(_) => info!(%from, "relay listener: no preamble in time"),
                            }
                        });
                    }
                    Err(e) => {
                        warn!(error = %e, "relay accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// Relays a device to the node at `relay` that serves its instance:
    /// the preamble, the CONNECT already read (`first`), then both ways
    /// until either side closes. `Err`: that node could not be reached
    /// (nothing was sent to the device: the caller refuses it).
    pub(super) async fn forward(
        &self,
        relay: &str,
        peer: SocketAddr,
        endpoint: Option<&str>,
        first: BytesMut,
        mut client_rd: ClientRead,
        mut client: ClientWrite,
    ) -> Result<(), (ClientWrite, String)> {
        let upstream =
            match tokio::time::timeout(RELAY_CONNECT_TIMEOUT, TcpStream::connect(relay)).await {
                Ok(Ok(upstream)) => upstream,
                Ok(Err(e)) => return Err((client, e.to_string())),
                Err(_) => return Err((client, "no answer in time".to_string())),
            };
        let _ = upstream.set_nodelay(true);
        let (upstream_rd, mut upstream_wr) = upstream.into_split();
        let mut opening = preamble(peer, endpoint);
        opening.extend_from_slice(&first);
        if let Err(e) = upstream_wr.write_all(&opening).await {
            return Err((client, e.to_string()));
        }
        drop(opening);
        debug!(%peer, %relay, "device relayed");
        let mut upstream_rd = ClientRead::Tcp(upstream_rd);
        let to_node = async {
            let mut buf = BytesMut::new();
            loop {
                match client_rd.read_into(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if upstream_wr.write_all(&buf).await.is_err() {
                            break;
                        }
                        buf.clear();
                    }
                }
            }
            // The node sees the device's end as the device's own.
            let _ = upstream_wr.shutdown().await;
        };
        let to_client = async {
            let mut buf = BytesMut::new();
            loop {
                match upstream_rd.read_into(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if client_io::write_flushed(&mut client, &buf).await.is_err() {
                            break;
                        }
                        buf.clear();
                    }
                }
            }
            let _ = client.shutdown().await;
        };
        tokio::pin!(to_node, to_client);
        tokio::select! {
            () = &mut to_node => {
                // The device closed: let the node answer and close too.
                let _ = tokio::time::timeout(DRAIN_AFTER_CLIENT_CLOSED, to_client).await;
            }
            () = &mut to_client => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_preamble_reads_back_as_written() {
        let peer: SocketAddr = "10.1.2.3:40001".parse().unwrap();
        for endpoint in [None, Some("post-cn-1")] {
            let bytes = preamble(peer, endpoint);
            assert_eq!(&bytes[..4], MAGIC);
            let len = usize::from(u16::from_be_bytes([bytes[4], bytes[5]]));
            assert_eq!(len, bytes.len() - 6);
            assert_eq!(
                parse_preamble_text(&bytes[6..]).unwrap(),
                (peer, endpoint.map(str::to_string))
            );
        }
        let v6: SocketAddr = "[::1]:9".parse().unwrap();
        assert_eq!(parse_preamble_text(&preamble(v6, None)[6..]).unwrap().0, v6);
    }

    #[test]
    fn a_bad_preamble_is_refused_with_a_reason() {
        for (text, says) in [
            (&b"1.2.3.4:5"[..], "no endpoint"),
            (b"nowhere -", "not an address"),
            (b"1.2.3.4:5 ", "not an instance id"),
            (b"1.2.3.4:5 a b", "not an instance id"),
            (b"\xff -", "UTF-8"),
        ] {
            let e = parse_preamble_text(text).unwrap_err();
            assert!(e.contains(says), "{text:?}: {e}");
        }
    }
}
