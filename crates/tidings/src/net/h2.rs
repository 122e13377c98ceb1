//! HTTP/2 connections (ALPN `h2` over TLS, or cleartext with prior knowledge) and HTTP/1.1 over
//! TLS: served by hyper with the router, every response body through hyper (the raw-socket
//! hand-over of `live.rs` is for cleartext HTTP/1.1 only). An SSE stream is then the
//! subscription's own `Stream`: each event's SSE bytes are the `Bytes` encoded once by the
//! fan-out, sent as a DATA frame without a copy; heartbeats, the slow cut and token expiry are
//! the subscription's, as on HTTP/1.1.
//!
//! What HTTP/2 adds:
//! - each stream is counted in the connection limits (with its connection), since a stream is
//!   what an HTTP/1.1 connection was: one subscriber's socket-sized share of the hub; streams
//!   per connection are capped by `SETTINGS_MAX_CONCURRENT_STREAMS`;
//! - the write-stall timeout per stream: hyper stops polling a body while its stream's (or the
//!   connection's) flow-control window is closed. A healthy SSE body is polled at least once per
//!   heartbeat interval (an event or a heartbeat), so a stream whose body has not been polled
//!   for the heartbeat interval plus the write-stall timeout is stalled, and is reset
//!   (`RST_STREAM`), freeing its subscription. The stream task is wrapped by our executor, which
//!   keeps one timer per stream, re-armed at most once per period;
//! - graceful shutdown sends `GOAWAY`; the hub ends the streams, clients resume.

use std::cell::RefCell;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

use super::{ConnectionLimits, Refusal, ServeOptions};

/// Most bytes of one request's header block (HPACK-decoded) a client may send.
pub const MAX_HEADER_LIST: u32 = 64 * 1024;

/// What a connection served through hyper's body path needs.
pub(super) struct Served {
    pub router: Router,
    pub limits: Arc<ConnectionLimits>,
    pub peer: SocketAddr,
    pub options: ServeOptions,
    pub refusal: Option<Refusal>,
    pub close: watch::Receiver<bool>,
}

/// Serves HTTP/2 on `io` until the connection ends or shutdown has drained it.
pub(super) async fn serve_h2<I>(io: I, served: Served)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let stall = served.options.heartbeat + served.options.write_stall_timeout;
    let mut builder = hyper::server::conn::http2::Builder::new(StreamExecutor { stall });
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(served.options.max_concurrent_streams)
        .max_header_list_size(MAX_HEADER_LIST)
        // A peer that vanished without closing (no stream open to notice it) is found by a
        // PING unanswered within the write-stall timeout.
        .keep_alive_interval(Some(served.options.heartbeat))
        .keep_alive_timeout(served.options.write_stall_timeout)
        // A stream's unsent data beyond its window: one event batch, not megabytes.
        .max_send_buf_size(64 * 1024);
    let service = service(&served, true);
    let conn = std::pin::pin!(builder.serve_connection(TokioIo::new(io), service));
    drive(conn, |c| c.graceful_shutdown(), served.close, served.peer).await;
}

/// Serves HTTP/1.1 through hyper's body path (over TLS) until the connection ends.
pub(super) async fn serve_h1<I>(io: I, served: Served)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(served.options.header_read_timeout)
        .keep_alive(served.refusal.is_none());
    let service = service(&served, false);
    let conn = std::pin::pin!(builder.serve_connection(TokioIo::new(io), service));
    drive(conn, |c| c.graceful_shutdown(), served.close, served.peer).await;
}

/// Drives `conn` to its end, asking it to shut down gracefully (`graceful`) once the hub closes.
async fn drive<C: Future<Output = hyper::Result<()>>>(
    mut conn: Pin<&mut C>,
    graceful: impl Fn(Pin<&mut C>),
    mut close: watch::Receiver<bool>,
    peer: SocketAddr,
) {
    let mut closing = *close.borrow();
    if closing {
        graceful(conn.as_mut());
    }
    let result = loop {
        tokio::select! {
            result = conn.as_mut() => break result,
            _ = close.wait_for(|closing| *closing), if !closing => {
                closing = true;
                graceful(conn.as_mut());
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection closed on an error");
    }
}

/// The router behind the connection limits (per stream, on HTTP/2) and the stall watch.
fn service(
    served: &Served,
    per_stream: bool,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response,
    Error = Infallible,
    Future = impl Future<Output = Result<Response, Infallible>> + Send,
> + Clone {
    let router = served.router.clone();
    let limits = served.limits.clone();
    let peer = served.peer;
    let refusal = served.refusal;
    hyper::service::service_fn(move |mut request: Request<Incoming>| {
        let router = router.clone();
        let limits = limits.clone();
        // Inside the stream's task (see `StreamExecutor`): its progress record, if any.
        async move {
            if let Some(refusal) = refusal {
                return Ok::<Response, Infallible>(refusal.error().into_response());
            }
            let guard = if per_stream {
                match limits.try_open(peer.ip()) {
                    Ok(guard) => Some(guard),
                    Err(refusal) => return Ok(refusal.error().into_response()),
                }
            } else {
                None
            };
            request.extensions_mut().insert(ConnectInfo(peer));
            let response = match router.oneshot(request).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            let sse = response
                .headers()
                .get(header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
            let progress = if sse { current_progress() } else { None };
            if let Some(p) = &progress {
                p.touch();
                p.watched.store(true, Ordering::Release);
            }
            Ok(response.map(|body| {
                axum::body::Body::new(Watched {
                    body,
                    progress,
                    _guard: guard,
                })
            }))
        }
    })
}

/// When a stream's body was last polled, in milliseconds since `EPOCH`.
#[derive(Debug)]
struct Progress {
    polled: AtomicU64,
    /// An SSE body is watched (other responses are not timed here).
    watched: AtomicBool,
}

fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn millis(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(epoch()).as_millis()).unwrap_or(u64::MAX)
}

impl Progress {
    fn touch(&self) {
        self.polled.store(millis(Instant::now()), Ordering::Relaxed);
    }
}

thread_local! {
    /// The progress record of the stream task being polled on this thread.
    static CURRENT: RefCell<Option<Arc<Progress>>> = const { RefCell::new(None) };
}

fn current_progress() -> Option<Arc<Progress>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// A response body that stamps its progress record when polled and holds the stream's slot in
/// the connection limits.
struct Watched<B> {
    body: B,
    progress: Option<Arc<Progress>>,
    _guard: Option<super::ConnectionGuard>,
}

impl<B: Body<Data = Bytes> + Unpin> Body for Watched<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        if let Some(p) = &self.progress {
            p.touch();
        }
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Spawns hyper's HTTP/2 stream tasks, each wrapped in a [`StreamTask`].
#[derive(Clone, Copy)]
struct StreamExecutor {
    stall: Duration,
}

impl<F: Future<Output = ()> + Send + 'static> hyper::rt::Executor<F> for StreamExecutor {
    fn execute(&self, fut: F) {
        tokio::spawn(StreamTask {
            fut: Box::pin(fut),
            progress: Arc::new(Progress {
                polled: AtomicU64::new(millis(Instant::now())),
                watched: AtomicBool::new(false),
            }),
            stall: self.stall,
            timer: None,
        });
    }
}

/// One HTTP/2 stream's task: polls hyper's stream future with its progress record current, and
/// drops it (resetting the stream) once a watched body has not been polled for `stall`.
struct StreamTask<F> {
    fut: Pin<Box<F>>,
    progress: Arc<Progress>,
    stall: Duration,
    timer: Option<Pin<Box<Sleep>>>,
}

impl<F: Future<Output = ()>> Future for StreamTask<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let watched = this.progress.watched.load(Ordering::Acquire);
        let polled = if watched {
            this.fut.as_mut().poll(cx)
        } else {
            // Until the service has taken its progress record (an SSE body), it is current.
            let previous = CURRENT.with(|c| c.replace(Some(this.progress.clone())));
            let polled = this.fut.as_mut().poll(cx);
            CURRENT.with(|c| *c.borrow_mut() = previous);
            polled
        };
        if polled.is_ready() || !this.progress.watched.load(Ordering::Acquire) {
            return polled;
        }
        // One timer per stream, checked only when it fires: not a clock read or a timer
        // operation per event. Each poll of the body moves the deadline; a fired timer re-arms
        // at the moved deadline, or resets the stream when the body was not polled since.
        let progress = &this.progress;
        let stall = this.stall;
        let due =
            || epoch() + Duration::from_millis(progress.polled.load(Ordering::Relaxed)) + stall;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due())));
        while timer.as_mut().poll(cx).is_ready() {
            let due = due();
            if due <= Instant::now() {
                tracing::debug!(
                    ?stall,
                    "HTTP/2 stream stalled (flow-control window closed); reset"
                );
                return Poll::Ready(());
            }
            timer.as_mut().reset(due);
        }
        Poll::Pending
    }
}

/// The first bytes of an HTTP/2 connection (RFC 9113, section 3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// An I/O object that yields `prefix` before reading from `io` (the bytes read while telling
/// HTTP/2 from HTTP/1.1).
pub(super) struct Rewind<T> {
    pub prefix: Bytes,
    pub io: T,
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Reads the first bytes of a cleartext connection, as far as needed to tell an HTTP/2 preface
/// from anything else: `(true, read)` for HTTP/2, `(false, read)` otherwise (usually after one
/// read: an HTTP/1.1 request differs from the preface at its first byte).
pub(super) async fn sniff(tcp: &tokio::net::TcpStream) -> std::io::Result<(bool, Bytes)> {
    let mut read = Vec::with_capacity(PREFACE.len());
    loop {
        tcp.readable().await?;
        let mut buf = [0u8; 24];
        let want = PREFACE.len() - read.len();
        match tcp.try_read(&mut buf[..want]) {
            Ok(0) => return Ok((false, read.into())),
            Ok(n) => read.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
        if read[..] != PREFACE[..read.len()] {
            return Ok((false, read.into()));
        }
        if read.len() == PREFACE.len() {
            return Ok((true, read.into()));
        }
    }
}
