//! The HTTP listener's accept loop and connections: what `axum::serve` leaves out.
//!
//! - A cap on open connections. Past it a new connection gets a 503 and is closed at once (not left in the kernel's
//!   backlog, where the client would hang): the ones already open keep being served.
//! - Timeouts: a connection waiting for a request is closed after `idle_timeout` without a byte, and one that started
//!   sending a request head must finish it within `header_read_timeout` (slowloris). A request being served has no
//!   deadline here (a consumer fetch long-polls on purpose).
//! - Accept failures (EMFILE when the process is out of file descriptors, ENFILE, ENOMEM) back off from 10 ms to 1 s
//!   instead of spinning. Each condition, the cap and the failures, is logged once when it starts and once when it
//!   clears, with how many connections it cost: one line, not one per connection.
//! - A graceful stop: accepting ends, idle connections close, requests in flight finish.
//! - TLS, when configured: each connection's handshake runs on its own task (a slow client never holds up
//!   accepting), within the header-read timeout. A failed one (a certificate the other side refuses, a plaintext
//!   client) is logged once, with the peer and rustls's reason, and the connection closed. The client certificate's
//!   principal, with the peer's address, goes into each request of the connection for the authentication layer.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::auth::Peer;
use crate::error::{ErrorBody, ErrorCode};

/// Connection limits and timeouts, from [`crate::HttpConfig`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub max_connections: usize,
    pub idle_timeout: Duration,
    pub header_read_timeout: Duration,
}

/// Serves `app` on `listener` (over TLS with `tls`) until `stop` turns true, then lets the open connections finish.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let refusal = refusal();
    let mut connections = JoinSet::new();
    // Connections refused at the cap since it was reached, and accepts failed in a row.
    let (mut refused, mut failures) = (0u64, 0u32);
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            accepted = listener.accept() => accepted,
        };
        while connections.try_join_next().is_some() {}
        let (stream, addr) = match accepted {
            Ok(accepted) => accepted,
            // The peer gave up between its connect and our accept: nothing wrong here.
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                failures += 1;
                if failures == 1 {
                    tracing::warn!(
                        error = %e,
                        "cannot accept HTTP connections (out of file descriptors?); retrying with backoff until it clears"
                    );
                }
                let backoff = Duration::from_millis(10 << failures.min(7)).min(Duration::from_secs(1));
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    _ = tokio::time::sleep(backoff) => continue,
                }
            }
        };
        if failures > 0 {
            tracing::info!(failed_accepts = failures, "accepting HTTP connections again");
            failures = 0;
        }
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                if refused > 0 {
                    tracing::info!(refused, "HTTP connections are below the limit again");
                    refused = 0;
                }
                let tls = tls.clone();
                connections.spawn(connection(stream, addr, tls, app.clone(), permit, limits, stop.clone()));
            }
            Err(_) => {
                if refused == 0 {
                    tracing::warn!(
                        limit = limits.max_connections,
                        "HTTP connections at the limit; refusing new ones with 503 until some close"
                    );
                }
                refused += 1;
                // Never waits: a fresh socket's send buffer is empty. A client that cannot take it just sees the close.
                // A TLS client could not read a plaintext answer, and a handshake is what an overloaded server
                // cannot afford: it only sees the close.
                if tls.is_none() {
                    let _ = stream.try_write(refusal.as_bytes());
                }
            }
        }
    }
    drop(listener);
    // Each connection saw `stop` too: idle ones close now, busy ones after their response. `HttpServer::stop`
    // bounds this wait and aborts the rest.
    while connections.join_next().await.is_some() {}
}

/// What a connection past the cap is told before it is closed: a whole HTTP response, written by hand since hyper
/// never sees the connection.
fn refusal() -> String {
    let code = ErrorCode::TooManyConnections;
    let body =
        ErrorBody { error_code: code.code(), message: "too many open HTTP connections; retry in a moment".into() };
    let body = serde_json::to_string(&body).unwrap_or_default();
    format!(
        "HTTP/1.1 {}\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\
         retry-after: 1\r\n\r\n{body}",
        code.status(),
        body.len()
    )
}

/// Errors of one incoming connection rather than of the listener (as hyper-util and axum classify them).
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

/// One connection: the TLS handshake if `tls`, then HTTP. `_permit` holds its place under the cap.
async fn connection(
    stream: TcpStream,
    addr: SocketAddr,
    tls: Option<TlsAcceptor>,
    app: Router,
    _permit: OwnedSemaphorePermit,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::new());
    // Under TLS, so the bytes of the handshake count: the request's head is due within the header-read timeout of
    // the handshake's first byte.
    let watched = Watched { inner: stream, activity: activity.clone() };
    let Some(acceptor) = tls else {
        let peer = Peer { addr, cert_principal: None };
        return http(watched, peer, activity, app, limits, stop).await;
    };
    let handshake = tokio::time::timeout(limits.header_read_timeout, acceptor.accept(watched));
    let stream = tokio::select! {
        done = handshake => match done {
            Ok(Ok(stream)) => stream,
            // A peer that connected and left without a byte is a TCP probe (a load balancer's), not a TLS client.
            Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof && !activity.received_any() => {
                tracing::debug!(peer = %addr, "a client closed its connection before starting the TLS handshake");
                return;
            }
            Ok(Err(e)) => {
                tracing::warn!(peer = %addr, error = %e, "TLS handshake failed; closing the connection");
                return;
            }
            Err(_) => {
                tracing::warn!(
                    peer = %addr,
                    timeout_ms = limits.header_read_timeout.as_millis() as u64,
                    "TLS handshake not finished within the header-read timeout; closing the connection"
                );
                return;
            }
        },
        // Nothing was asked yet: nothing to finish.
        _ = stop.wait_for(|s| *s) => return,
    };
    // The verifier accepted it (or none was asked for): the first is the client's own certificate.
    let certificate = stream.get_ref().1.peer_certificates().and_then(|c| c.first());
    let cert_principal = certificate.and_then(|c| {
        let principal = weir_security::tls::principal_of(c.as_ref());
        if principal.is_none() {
            tracing::warn!(peer = %addr, "the client certificate's subject cannot be read; the client is anonymous");
        }
        principal
    });
    let peer = Peer { addr, cert_principal: cert_principal.map(Arc::from) };
    http(stream, peer, activity, app, limits, stop).await
}

/// hyper's HTTP/1 with keep-alive on `io`, watched for the timeouts through `activity`; every request gets `peer` in
/// its extensions.
async fn http<I>(
    io: I,
    peer: Peer,
    activity: Arc<Activity>,
    app: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    let serving = activity.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let busy = serving.begin();
        let app = app.clone();
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(peer.clone());
        async move {
            let response = app.oneshot(req).await;
            drop(busy);
            response
        }
    });
    // No hyper timer: its header-read timeout also starts whenever the connection goes idle, which would make it the
    // idle timeout too. `Activity` keeps the two apart.
    let conn = hyper::server::conn::http1::Builder::new().keep_alive(true).serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    // The connection is looked at only when a timeout could have passed, never per request: a request costs no
    // wake-up or timer here. While one is served (or before its head begins) the next look is at most the shorter
    // timeout away, so a head that starts meanwhile is still held to its own deadline.
    let check = tokio::time::sleep(limits.idle_timeout.min(limits.header_read_timeout));
    let mut check = std::pin::pin!(check);
    let mut stopping = false;
    loop {
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(error = %e, "HTTP connection ended with an error");
                }
                return;
            }
            _ = check.as_mut() => match activity.next_check(&limits, Instant::now()) {
                Some(at) => check.as_mut().reset(at),
                None => {
                    tracing::debug!("closing an HTTP connection past its idle or header-read timeout");
                    return;
                }
            },
            _ = stop.wait_for(|s| *s), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Where a connection stands, for its timeouts.
#[derive(Debug)]
struct Activity {
    phase: Mutex<Phase>,
}

#[derive(Clone, Copy, Debug)]
enum Phase {
    /// No request in progress: since when, and when the first byte of the next request's head arrived.
    Waiting { since: Instant, head_from: Option<Instant> },
    /// This many requests are being served.
    Serving(usize),
}

impl Activity {
    fn new() -> Self {
        Activity { phase: Mutex::new(Phase::Waiting { since: Instant::now(), head_from: None }) }
    }

    /// When to look at the connection again, or `None` if it is past its idle or header-read timeout.
    fn next_check(&self, limits: &Limits, now: Instant) -> Option<Instant> {
        // A head may begin at any moment: look again within the header-read timeout at the latest.
        let head_could_expire = now + limits.header_read_timeout;
        let deadline = match *self.phase.lock() {
            Phase::Serving(_) => return Some(now + limits.idle_timeout.min(limits.header_read_timeout)),
            Phase::Waiting { since, head_from: None } => since + limits.idle_timeout,
            Phase::Waiting { head_from: Some(from), .. } => from + limits.header_read_timeout,
        };
        (deadline > now).then(|| deadline.min(head_could_expire))
    }

    /// Whether a byte arrived since the last request (or since the connection opened).
    fn received_any(&self) -> bool {
        !matches!(*self.phase.lock(), Phase::Waiting { head_from: None, .. })
    }

    /// Bytes arrived: while waiting, the next request's head has begun.
    fn received(&self) {
        if let Phase::Waiting { head_from: head_from @ None, .. } = &mut *self.phase.lock() {
            *head_from = Some(Instant::now());
        }
    }

    /// A request's head is complete and it is being served, until the guard is dropped.
    fn begin(self: &Arc<Self>) -> Busy {
        let mut phase = self.phase.lock();
        *phase = match *phase {
            Phase::Serving(n) => Phase::Serving(n + 1),
            Phase::Waiting { .. } => Phase::Serving(1),
        };
        drop(phase);
        Busy(self.clone())
    }
}

/// A request in progress on a connection.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let mut phase = self.0.phase.lock();
        *phase = match *phase {
            Phase::Serving(n) if n > 1 => Phase::Serving(n - 1),
            _ => Phase::Waiting { since: Instant::now(), head_from: None },
        };
    }
}

/// The socket, telling its connection's [`Activity`] when bytes arrive.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.received();
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The soft limit on open file descriptors (`RLIMIT_NOFILE`), read from `/proc/self/limits` (reading it through
/// `getrlimit` needs `unsafe`, which the workspace forbids): `u64::MAX` when unlimited, `None` when unknown.
pub(crate) fn open_files_soft_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    match line["Max open files".len()..].split_whitespace().next()? {
        "unlimited" => Some(u64::MAX),
        soft => soft.parse().ok(),
    }
}

/// The default cap on HTTP connections: 1,024, but at most a quarter of the file-descriptor limit, since the same
/// process also holds the log's segment files (three per segment), Kafka connections and database handles.
pub(crate) fn default_max_connections() -> usize {
    // Unknown (not Linux): assume the common default of 1,024 descriptors.
    let soft = open_files_soft_limit().unwrap_or(1024);
    usize::try_from(soft / 4).unwrap_or(usize::MAX).clamp(1, 1024)
}
