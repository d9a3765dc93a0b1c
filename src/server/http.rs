//! The HTTP and HTTPS listeners: hyper directly (rather than
//! `axum::serve`) for the knobs a gateway needs, a header count limit and a
//! header read timeout, and a graceful drain at shutdown. Each connection
//! (after its TLS handshake, for HTTPS) is read through [`LongQuery`],
//! which moves a query string too long for a URI into a header.

use super::long_query::LongQuery;
use crate::transport::Refused;
use crate::transport::tls::{self, TlsAcceptor};
use axum::Router;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Most headers hyper will parse before answering 431 by itself; below it,
/// the RPC endpoint's own limit ([`crate::rpc::parse::MAX_HEADERS`]) answers
/// a 400 with a code and message.
pub const HTTP_MAX_HEADERS: usize = 128;
/// hyper's read buffer, and so the largest request head (431 above it):
/// hyper's default (8 KiB + 400 KiB), set here because [`LongQuery`]
/// gathers heads up to the same size. It holds SendMessage's largest
/// payload percent-encoded in the query string (up to 192 KiB) with room
/// to spare.
pub const HTTP_MAX_BUF_BYTES: usize = 8192 + 4096 * 100;
/// A client has this long to send its request headers (slow-header floods).
pub const HTTP_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long calls in flight may take to finish at shutdown.
const HTTP_DRAIN: Duration = Duration::from_secs(10);

/// Serves HTTP/1.1 with hyper directly (rather than `axum::serve`) for the
/// knobs a gateway needs: a header count limit and a header read timeout.
/// Each request carries its peer address (`ConnectInfo`). With `tls`, it is
/// HTTPS: each connection's TLS handshake, within [`HTTP_HEADER_TIMEOUT`],
/// comes first, and the same [`LongQuery`] reads the decrypted stream.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    shutdown: CancellationToken,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "http accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        match &tls {
            None => {
                let connection = graceful.watch(connection(stream, peer, app));
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(%peer, error = %e, "http connection ended with an error");
                    }
                });
            }
            Some(acceptor) => {
                // The handshake runs in the connection's task, so a slow
                // client does not hold up the next accept.
                let acceptor = acceptor.clone();
                let watcher = graceful.watcher();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    let handshake =
                        tokio::time::timeout(HTTP_HEADER_TIMEOUT, tls::accept(&acceptor, stream));
                    let secure = tokio::select! {
                        done = handshake => done.unwrap_or(Err(Refused::TimedOut(HTTP_HEADER_TIMEOUT))),
                        _ = shutdown.cancelled() => return,
                    };
                    let secure = match secure {
                        Ok(secure) => secure,
                        Err(refused) if refused.is_quiet() => {
                            return tracing::debug!(%peer, reason = %refused, "https connection closed before its handshake");
                        }
                        Err(refused) => {
                            return tracing::info!(%peer, reason = %refused, "https handshake refused; closing");
                        }
                    };
                    if let Err(e) = watcher.watch(connection(secure, peer, app)).await {
                        tracing::debug!(%peer, error = %e, "https connection ended with an error");
                    }
                });
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(HTTP_DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("http calls still running after {HTTP_DRAIN:?}; stopping anyway");
    }
}

/// One HTTP/1.1 connection of the router, over TCP or TLS, read through
/// [`LongQuery`].
fn connection<S>(
    stream: S,
    peer: SocketAddr,
    app: Router,
) -> impl hyper_util::server::graceful::GracefulConnection<Error = hyper::Error> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    use hyper::server::conn::http1;
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt;

    let service =
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            app.clone().oneshot(request)
        });
    let stream = LongQuery::new(stream, HTTP_MAX_BUF_BYTES);
    http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HTTP_HEADER_TIMEOUT)
        .max_headers(HTTP_MAX_HEADERS)
        .max_buf_size(HTTP_MAX_BUF_BYTES)
        .serve_connection(TokioIo::new(stream), service)
}
