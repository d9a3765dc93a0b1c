//! The front layer's side of the transports (`crate::transport`): the
//! stream type the relay reads and writes, whatever carries it, and the
//! accept loops of the TLS, WebSocket and secure WebSocket listeners.
//!
//! Kept apart from the relay: the relay sees a [`ClientConnection`] (a TCP
//! socket, or a TLS stream or WebSocket byte stream, boxed) through
//! [`FrontLayer::handle`], and flushes after writing (TLS and WebSocket may
//! hold back what the socket did not take yet).

use super::{ClientConnection, FrontLayer};
use crate::transport::{Accepted, Refused, Upgrade};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

impl FrontLayer {
    /// Accepts connections on a TLS, WebSocket or secure WebSocket listener
    /// until `shutdown` is cancelled; each one's handshake is bounded by
    /// `mqtt.connect_timeout_secs` (then the CONNECT is, as on TCP).
    /// `endpoint`: as for [`FrontLayer::serve`].
    pub async fn serve_upgraded(
        self: Arc<Self>,
        listener: TcpListener,
        upgrade: Upgrade,
        endpoint: Option<String>,
        shutdown: CancellationToken,
    ) {
        let endpoint: Option<Arc<str>> = endpoint.map(Arc::from);
        let upgrade = Arc::new(upgrade);
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        let front = self.clone();
                        let endpoint = endpoint.clone();
                        let upgrade = upgrade.clone();
                        let shutdown = shutdown.clone();
                        tokio::spawn(async move {
                            let accepted = tokio::select! {
                                accepted = tokio::time::timeout(front.connect_timeout, upgrade.accept(stream)) => {
                                    accepted.unwrap_or(Err(Refused::TimedOut(front.connect_timeout)))
                                }
                                _ = shutdown.cancelled() => return,
                            };
                            front.handle_upgraded(accepted, upgrade.name(), peer, endpoint.as_deref()).await
                        });
                    }
                    Err(e) => {
                        warn!(error = %e, transport = upgrade.name(), "mqtt accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = shutdown.cancelled() => return,
            }
        }
    }

    async fn handle_upgraded(
        &self,
        accepted: Result<Accepted, Refused>,
        transport: &'static str,
        peer: SocketAddr,
        endpoint: Option<&str>,
    ) {
        // Every line the connection logs says which transport carries it.
        let span = tracing::info_span!("mqtt", transport);
        match accepted {
            Ok(Accepted::Tls(s)) => {
                let connection = ClientConnection::Stream(Box::new(s));
                self.handle(connection, peer, endpoint)
                    .instrument(span)
                    .await
            }
            Ok(Accepted::Ws(s)) => {
                let connection = ClientConnection::Stream(Box::new(s));
                self.handle(connection, peer, endpoint)
                    .instrument(span)
                    .await
            }
            Ok(Accepted::Wss(s)) => {
                let connection = ClientConnection::Stream(Box::new(s));
                self.handle(connection, peer, endpoint)
                    .instrument(span)
                    .await
            }
            Err(refused) if refused.is_quiet() => {
                debug!(%peer, transport, reason = %refused, "connection closed before its handshake")
            }
            Err(refused) => {
                info!(%peer, transport, reason = %refused, "handshake refused; closing")
            }
        }
    }
}
