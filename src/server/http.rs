//! The HTTP and HTTPS listeners: hyper directly (rather than
//! `axum::serve`) for the knobs a gateway needs, a header count limit, a
//! header read timeout and a body read timeout ([`Timeouts`]), and a
//! graceful drain at shutdown. Each connection (after its TLS handshake,
//! for HTTPS) is read through [`LongQuery`], which moves a query string too
//! long for a URI into a header.

use super::long_query::LongQuery;
use crate::state::AppState;
use crate::transport::Refused;
use crate::transport::tls::{self, TlsAcceptor};
use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// hyper's read buffer, and so the largest request head (431 above it):
/// hyper's default (8 KiB + 400 KiB), set here because [`LongQuery`]
/// gathers heads up to the same size. It holds SendMessage's largest
/// payload percent-encoded in the query string (up to 192 KiB) with room
/// to spare.
pub const HTTP_MAX_BUF_BYTES: usize = 8192 + 4096 * 100;
/// A client has this long to send its request headers (slow-header floods),
/// unless `[http] header_timeout_secs` says otherwise.
pub const HTTP_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection may take over its request's parts, from
/// `[http] header_timeout_secs` and `body_timeout_secs`.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// To send the request head (and, over HTTPS, finish the handshake
    /// first); then the connection is closed without an answer.
    pub header: Duration,
    /// To send the body once the head has arrived: a body declared and
    /// never sent would otherwise hold the connection, its task and the
    /// part already read for ever (a reader of it gets [`BodyTimedOut`]).
    pub body: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            header: HTTP_HEADER_TIMEOUT,
            body: HTTP_HEADER_TIMEOUT,
        }
    }
}

/// The error a request body's reader gets when the body did not arrive
/// within [`Timeouts::body`] (defined beside the parser that reads it).
pub use crate::rpc::parse::BodyTimedOut;
/// How long calls in flight may take to finish at shutdown.
const HTTP_DRAIN: Duration = Duration::from_secs(10);

/// What a listener answers.
#[derive(Clone)]
pub struct App {
    /// Every route of the listener.
    pub router: Router,
    /// On the API's listeners: the state the RPC endpoint at `/` is called
    /// with directly, without the router. Every signed call comes there,
    /// and the router's matching, its boxed service and the extension map
    /// holding the peer's address cost about a tenth of what mqgate spends
    /// on a call (issue 17's profile).
    pub rpc: Option<Arc<AppState>>,
}

/// Serves HTTP/1.1 with hyper directly (rather than `axum::serve`) for the
/// knobs a gateway needs: a header count limit and the header and body
/// read timeouts. Each request to the router carries its peer address
/// (`ConnectInfo`); the RPC endpoint gets it as an argument.
/// With `tls`, it is HTTPS: each connection's TLS handshake, within the
/// header timeout, comes first, and the same [`LongQuery`] reads the
/// decrypted stream.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: App,
    timeouts: Timeouts,
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
                let connection = graceful.watch(connection(stream, peer, app, timeouts));
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
                        tokio::time::timeout(timeouts.header, tls::accept(&acceptor, stream));
                    let secure = tokio::select! {
                        done = handshake => done.unwrap_or(Err(Refused::TimedOut(timeouts.header))),
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
                    if let Err(e) = watcher.watch(connection(secure, peer, app, timeouts)).await {
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

/// One HTTP/1.1 connection of the app, over TCP or TLS, read through
/// [`LongQuery`]; each request's body read within `timeouts.body`.
fn connection<S>(
    stream: S,
    peer: SocketAddr,
    app: App,
    timeouts: Timeouts,
) -> impl hyper_util::server::graceful::GracefulConnection<Error = hyper::Error> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    use hyper::server::conn::http1;
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt;

    let service =
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let (mut parts, body) = request.into_parts();
            let body = axum::body::Body::new(Deadline::new(body, timeouts.body));
            let rpc = app.rpc.clone().filter(|_| parts.uri.path() == "/");
            let router = app.router.clone();
            async move {
                match rpc {
                    Some(state) => {
                        let request = hyper::Request::from_parts(parts, body);
                        Ok(crate::rpc::answer(&state, request, Some(peer)).await)
                    }
                    None => {
                        parts.extensions.insert(axum::extract::ConnectInfo(peer));
                        router
                            .oneshot(hyper::Request::from_parts(parts, body))
                            .await
                    }
                }
            }
        });
    let stream = LongQuery::new(stream, HTTP_MAX_BUF_BYTES);
    http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header)
        .max_buf_size(HTTP_MAX_BUF_BYTES)
        .serve_connection(TokioIo::new(stream), service)
}

/// A request body that must arrive within a time from when its reader
/// first waited for it (as soon as the head was in: handlers read the body
/// first): past it, its reader gets [`BodyTimedOut`] (and the connection, whose
/// body was not read to its end, is closed after the answer). The timer is
/// armed only when the body has kept its reader waiting, so a request
/// without a body, or whose body came with its head, sets none.
struct Deadline<B> {
    body: B,
    limit: Duration,
    timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<B> Deadline<B> {
    fn new(body: B, limit: Duration) -> Self {
        Deadline {
            body,
            limit,
            timer: None,
        }
    }
}

impl<B> hyper::body::Body for Deadline<B>
where
    B: hyper::body::Body + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = B::Data;
    type Error = axum::BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        let this = self.get_mut();
        match std::pin::Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => {
                // From the first wait: the handler reads the body as soon
                // as the head is in, so this is when the head arrived, to
                // within a poll (and a call without a body reads no clock).
                let limit = this.limit;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(BodyTimedOut(this.limit).into()))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}
