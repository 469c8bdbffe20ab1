//! Serving HTTP to clients we do not trust (the S3 API) or barely trust (the admin
//! endpoint). Every listener gets the same protections:
//!
//! - a bounded number of open connections: past it, a new connection is closed at once
//!   (and counted) rather than left waiting, so file descriptors cannot run out;
//! - a deadline for the first byte of a connection and for a whole request head, so
//!   sockets that never speak (or dribble headers) do not stay open;
//! - an idle deadline: a connection with no request in progress (from its head until its
//!   response's last byte) for that long is closed, whatever protocol it speaks (half an
//!   HTTP/2 preface, HTTP/2 pings: only requests count);
//! - a send deadline: a response write that makes no progress for that long closes the
//!   connection, so a client that stops reading cannot hold the memory behind its response;
//! - accept errors (EMFILE...) back off instead of spinning, and are logged at most once
//!   every few seconds.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::telemetry::metrics;

/// The limits of one listener (see docs/configuration.md for the keys that set them).
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_connections: usize,
    /// Until the first byte of a connection, and until a request's head is complete.
    pub header_timeout: Duration,
    /// A connection with nothing in progress and no byte moving.
    pub idle_timeout: Duration,
    /// A response write that makes no progress.
    pub send_timeout: Duration,
}

/// Serves connections from `listener` with the service `make(peer)` gives, until
/// `shutdown`; then gives open requests 10 s to finish.
pub async fn serve<F, S, B>(listener: TcpListener, limits: Limits, make: F, shutdown: impl Future<Output = ()>)
where
    F: Fn(SocketAddr) -> S,
    S: hyper::service::Service<http::Request<Incoming>, Response = http::Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut backoff = AcceptBackoff::default();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => {
                    backoff.reset();
                    a
                }
                Err(e) => {
                    backoff.wait(&e).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics().connections_refused.inc();
            tracing::debug!(%peer, "connection limit reached; closing a new connection");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let start = Instant::now();
        let activity = Activity { start, in_flight: Arc::new(AtomicUsize::new(0)), last: Arc::new(AtomicU64::new(0)) };
        let svc = Tracked { inner: make(peer), activity: activity.clone() };
        let limits = limits.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            // A connection that never sends its first byte is closed without hyper's help:
            // before the protocol is known there is no header timeout to rely on.
            let mut first = [0u8; 1];
            match tokio::time::timeout(limits.header_timeout, stream.peek(&mut first)).await {
                Ok(Ok(n)) if n > 0 => {}
                Ok(_) => return,
                Err(_) => {
                    metrics().connections_timed_out.inc();
                    return;
                }
            }
            let io = Guarded::new(stream, limits.send_timeout);
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
            // No HTTP/2 keep-alive pings: the idle deadline closes quiet connections, and
            // pings answered by the peer must not count as use.
            builder.http2().timer(TokioTimer::new());
            let conn = watcher.watch(builder.serve_connection(TokioIo::new(io), svc).into_owned());
            let idle = activity.idle(limits.idle_timeout);
            tokio::select! {
                r = conn => if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                },
                _ = idle => {
                    metrics().connections_timed_out.inc();
                    tracing::debug!(%peer, "closing an idle connection");
                }
            }
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await;
}

/// When a connection's requests began and ended.
#[derive(Clone)]
struct Activity {
    start: Instant,
    in_flight: Arc<AtomicUsize>,
    /// When the last request began or ended (ms since `start`).
    last: Arc<AtomicU64>,
}

impl Activity {
    fn touch(&self) {
        self.last.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Resolves once the connection has had no request in progress for `limit`.
    async fn idle(&self, limit: Duration) {
        let tick = (limit / 4).max(Duration::from_millis(100));
        loop {
            tokio::time::sleep(tick).await;
            let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
            if self.in_flight.load(Ordering::Relaxed) == 0 && self.start.elapsed().saturating_sub(last) >= limit {
                return;
            }
        }
    }
}

/// Logs accept failures at most every 10 s and sleeps longer after each one (up to 1 s),
/// so a process out of file descriptors neither spins nor floods its log.
#[derive(Default)]
struct AcceptBackoff {
    delay: Duration,
    last_log: Option<Instant>,
    suppressed: u64,
}

impl AcceptBackoff {
    fn reset(&mut self) {
        self.delay = Duration::ZERO;
    }

    async fn wait(&mut self, e: &std::io::Error) {
        self.delay = (self.delay * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
        if self.last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            tracing::warn!(error = %e, suppressed = self.suppressed, "accept failed; backing off");
            self.last_log = Some(Instant::now());
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
        }
        tokio::time::sleep(self.delay).await;
    }
}

/// Counts requests in progress: from the call until the response's body is done (or
/// dropped), so a response still streaming is never taken for idleness.
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    activity: Activity,
}

impl<S, Req, B> hyper::service::Service<Req> for Tracked<S>
where
    S: hyper::service::Service<Req, Response = http::Response<B>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn call(&self, req: Req) -> Self::Future {
        let guard = InFlight::new(self.activity.clone());
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            Ok(resp.map(|inner| TrackedBody { inner, _guard: guard }))
        })
    }
}

/// A request in progress; ends when dropped.
struct InFlight(Activity);

impl InFlight {
    fn new(a: Activity) -> Self {
        a.in_flight.fetch_add(1, Ordering::Relaxed);
        a.touch();
        Self(a)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request counted until it is done.
pub struct TrackedBody<B> {
    inner: B,
    _guard: InFlight,
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// A socket that fails a write which makes no progress for `send_timeout`.
struct Guarded {
    inner: TcpStream,
    send_timeout: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Guarded {
    fn new(inner: TcpStream, send_timeout: Duration) -> Self {
        Self { inner, send_timeout, stalled: None }
    }

    /// Turns a write that stays pending past the send deadline into an error.
    fn check_stall<T>(&mut self, cx: &mut Context<'_>, r: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        match r {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let timeout = self.send_timeout;
                let sleep = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        metrics().connections_timed_out.inc();
                        Poll::Ready(Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "the client stopped reading the response",
                        )))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        self.check_stall(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.check_stall(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.check_stall(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
