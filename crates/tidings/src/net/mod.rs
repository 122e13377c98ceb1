//! The accept loop: TCP connections in, HTTP/1.1 served by hyper with the router, plus what
//! `axum::serve` does not offer: the connection limits (counted from accept to close, so SSE
//! streams count), the header-read timeout, and the write-stall timeout. Shutdown stops
//! accepting, lets every connection finish its request in flight (streams are ended by the hub),
//! and cuts whatever is still open after the grace period.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use axum::http::{header, Method, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tower::ServiceExt;

pub mod h2;
pub mod limits;
pub mod live;
pub mod stall;
pub mod tls;

pub use limits::{ConnectionGuard, ConnectionLimits, Refusal, SelectorBudget, SelectorGuard};
pub use live::{LiveStream, Takeover};

/// Connections being refused at once; past this, a refused connection is closed unanswered.
const MAX_REFUSING: usize = 1024;

/// How connections are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeOptions {
    /// A connection must send a request's whole header within this, counted from when the hub
    /// starts waiting for it (at accept, and after each response on a kept-alive connection).
    pub header_read_timeout: Duration,
    /// A connection whose peer accepts no bytes for this long while the hub has some to send
    /// is cut.
    pub write_stall_timeout: Duration,
    /// `SO_SNDBUF` of every accepted socket (Linux doubles it); `None`: the kernel's default
    /// (autotuned, up to `net.ipv4.tcp_wmem`'s maximum). Capped, a stalled subscriber fills its
    /// socket soon and the rest waits in its bounded queue, where the hub sees and cuts it,
    /// instead of hiding megabytes of kernel memory per socket.
    pub send_buffer: Option<usize>,
    /// How long shutdown waits for connections to finish before cutting them.
    pub grace: Duration,
    /// Cleartext HTTP/2 with prior knowledge (h2c) on a listener without TLS.
    pub h2c: bool,
    /// `SETTINGS_MAX_CONCURRENT_STREAMS` of HTTP/2 connections.
    pub max_concurrent_streams: u32,
    /// The streams' heartbeat interval: an HTTP/2 SSE body not polled for this plus the
    /// write-stall timeout is stalled (see [`h2`]).
    pub heartbeat: Duration,
}

/// The key a client is counted and rate-limited under: its IPv4 address (an IPv4-mapped IPv6
/// address counts as the IPv4 one), or the /64 prefix of its IPv6 address, since one IPv6 host
/// commonly holds a whole /64.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then shuts down as the module
/// documentation says. Requests carry the peer's address as `ConnectInfo<SocketAddr>`. With
/// `tls`, every connection is TLS (ALPN `h2` or `http/1.1`); without, cleartext HTTP/1.1, and
/// HTTP/2 with prior knowledge when [`ServeOptions::h2c`] is set.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Arc<ConnectionLimits>,
    options: ServeOptions,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let (close_tx, close_rx) = watch::channel(false);
    let admission = Admission::new(router, limits, options, tls, close_rx);
    let mut connections = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(done) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = done {
                    if e.is_panic() {
                        tracing::error!(error = %e, "a connection task panicked");
                    }
                }
                continue;
            }
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => admission.admit(tcp, peer, &mut connections),
            Err(e) if is_connection_error(&e) => {}
            Err(e) => {
                // Out of file descriptors and the like: wait, rather than spin on the error.
                tracing::error!(error = %e, "accepting a connection failed; retrying in 1 s");
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
    drop(listener);
    let _ = close_tx.send(true);
    let drained = tokio::time::timeout(options.grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            grace = ?options.grace,
            open = connections.len(),
            "connections still open after the grace period; closing"
        );
        connections.shutdown().await;
    }
}

/// What deciding on and serving a new connection needs.
struct Admission {
    router: Router,
    limits: Arc<ConnectionLimits>,
    /// Bounds the connections being answered a refusal at once.
    refusals: Arc<Semaphore>,
    /// For admitted connections, and for refused ones (not kept alive).
    builders: Arc<(http1::Builder, http1::Builder)>,
    options: ServeOptions,
    tls: Option<tokio_rustls::TlsAcceptor>,
    close: watch::Receiver<bool>,
}

impl Admission {
    fn new(
        router: Router,
        limits: Arc<ConnectionLimits>,
        options: ServeOptions,
        tls: Option<tokio_rustls::TlsAcceptor>,
        close: watch::Receiver<bool>,
    ) -> Self {
        let mut admitted = http1::Builder::new();
        admitted
            .timer(TokioTimer::new())
            .header_read_timeout(options.header_read_timeout);
        let mut refusing = admitted.clone();
        refusing.keep_alive(false);
        Self {
            router,
            limits,
            refusals: Arc::new(Semaphore::new(MAX_REFUSING)),
            builders: Arc::new((admitted, refusing)),
            options,
            tls,
            close,
        }
    }

    /// Counts the connection against the limits and serves it in its own task: normally, or,
    /// over a limit, with one refusal (503 or 429), unless too many are being refused already.
    fn admit(&self, tcp: TcpStream, peer: SocketAddr, connections: &mut JoinSet<()>) {
        let admitted = match self.limits.try_open(peer.ip()) {
            Ok(guard) => Ok(guard),
            Err(refusal) => match self.refusals.clone().try_acquire_owned() {
                Ok(permit) => {
                    tracing::debug!(%peer, ?refusal, "refusing a connection");
                    Err((refusal, permit))
                }
                Err(_) => {
                    tracing::debug!(%peer, ?refusal, "refused a connection unanswered");
                    return;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        if let Some(size) = self.options.send_buffer {
            if let Err(e) = socket2::SockRef::from(&tcp).set_send_buffer_size(size) {
                tracing::debug!(%peer, error = %e, "setting SO_SNDBUF failed");
            }
        }
        let connection = Connection {
            tcp,
            unread: bytes::Bytes::new(),
            peer,
            router: self.router.clone(),
            builders: self.builders.clone(),
            options: self.options,
            close: self.close.clone(),
        };
        // A refused connection gets one answer and little time to read it.
        let deadline = self.options.header_read_timeout + Duration::from_secs(5);
        let tls = self.tls.clone();
        let limits = self.limits.clone();
        connections.spawn(async move {
            match admitted {
                Ok(guard) => {
                    connection.serve(None, tls, limits).await;
                    drop(guard);
                }
                Err((refusal, permit)) => {
                    let serving = connection.serve(Some(refusal), tls, limits);
                    let _ = tokio::time::timeout(deadline, serving).await;
                    drop(permit);
                }
            }
        });
    }
}

/// A TLS connection: the handshake, then HTTP/2 or HTTP/1.1 as ALPN chose.
async fn serve_tls(
    acceptor: tokio_rustls::TlsAcceptor,
    io: stall::WriteStall<TcpStream>,
    served: h2::Served,
) {
    let peer = served.peer;
    let wait = served.options.header_read_timeout;
    let handshake = tokio::time::timeout(wait, acceptor.accept(io));
    let stream = match handshake.await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
        h2::serve_h2(stream, served).await;
    } else {
        h2::serve_h1(stream, served).await;
    }
}

/// Errors of one connection that `accept` reports; the listener itself is fine.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// One accepted connection and what serving it needs.
struct Connection {
    tcp: TcpStream,
    /// Bytes read from `tcp` before hyper serves it (while looking for an HTTP/2 preface).
    unread: bytes::Bytes,
    peer: SocketAddr,
    router: Router,
    builders: Arc<(http1::Builder, http1::Builder)>,
    options: ServeOptions,
    close: watch::Receiver<bool>,
}

impl Connection {
    /// Serves the connection with the protocol it speaks: TLS (then HTTP/2 or HTTP/1.1, as ALPN
    /// chose), cleartext HTTP/2 with prior knowledge, or cleartext HTTP/1.1 ([`Self::run`]).
    async fn serve(
        mut self,
        refusal: Option<Refusal>,
        tls: Option<tokio_rustls::TlsAcceptor>,
        limits: Arc<ConnectionLimits>,
    ) {
        let options = self.options;
        let served = |tcp_less: &Self| h2::Served {
            router: tcp_less.router.clone(),
            limits: limits.clone(),
            peer: tcp_less.peer,
            options,
            refusal,
            close: tcp_less.close.clone(),
        };
        // The TLS and HTTP/2 paths run boxed: an async fn's state is as large as its largest
        // branch, so every cleartext HTTP/1.1 connection (each live subscriber's task) would
        // otherwise carry room for a TLS session and an HTTP/2 connection.
        if let Some(acceptor) = tls {
            let served = served(&self);
            let io = stall::WriteStall::new(self.tcp, options.write_stall_timeout);
            Box::pin(serve_tls(acceptor, io, served)).await;
            return;
        }
        if options.h2c {
            let sniffed = tokio::time::timeout(options.header_read_timeout, h2::sniff(&self.tcp));
            match sniffed.await {
                Ok(Ok((true, prefix))) => {
                    let served = served(&self);
                    let io = h2::Rewind {
                        prefix,
                        io: stall::WriteStall::new(self.tcp, options.write_stall_timeout),
                    };
                    Box::pin(h2::serve_h2(io, served)).await;
                    return;
                }
                Ok(Ok((false, read))) => self.unread = read,
                Ok(Err(_)) | Err(_) => return,
            }
        }
        self.run(refusal).await;
    }

    /// Serves requests until the connection closes; with a refusal, answers every request with
    /// it (the connection is not kept alive). A live SSE stream offered by its response body is
    /// taken over from hyper (see [`live`]); when it ends cleanly the connection goes back to
    /// hyper for the next request.
    async fn run(self, refusal: Option<Refusal>) {
        let Self {
            mut tcp,
            unread,
            peer,
            router,
            builders,
            options,
            mut close,
        } = self;
        let builder = if refusal.is_some() {
            &builders.1
        } else {
            &builders.0
        };
        // What the peer sent during a live stream (a pipelined request), or before hyper served
        // the connection: hyper reads it first.
        let mut unread = unread;
        // Set when a request was refused before its body was read (413 on its Content-Length).
        let body_refused = Arc::new(AtomicBool::new(false));
        loop {
            let link = live::Link::new(tcp, options.write_stall_timeout, unread);
            let io = TokioIo::new(live::HyperIo(link.clone()));
            let service = {
                let router = router.clone();
                let link = link.clone();
                let body_refused = body_refused.clone();
                hyper::service::service_fn(move |mut request: Request<Incoming>| {
                    let router = router.clone();
                    let body_refused = body_refused.clone();
                    if refusal.is_none()
                        && request.method() == Method::GET
                        && request.version() == Version::HTTP_11
                        // A request with a body (odd for a GET) stays with hyper, which reads
                        // or discards the body before the next request.
                        && hyper::body::Body::is_end_stream(request.body())
                    {
                        let close = request
                            .headers()
                            .get_all(header::CONNECTION)
                            .iter()
                            .any(|v| has_token(v.as_bytes(), b"close"));
                        link.keep_alive.store(!close, Ordering::Relaxed);
                        request
                            .extensions_mut()
                            .insert(live::Takeover(link.clone()));
                    }
                    async move {
                        if let Some(refusal) = refusal {
                            return Ok::<Response, Infallible>(refusal.error().into_response());
                        }
                        request.extensions_mut().insert(ConnectInfo(peer));
                        let response = router.oneshot(request).await;
                        if let Ok(r) = &response {
                            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                                body_refused.store(true, Ordering::Relaxed);
                            }
                        }
                        response
                    }
                })
            };
            let mut conn = Box::pin(builder.serve_connection(io, service));
            let mut closing = *close.borrow();
            if closing {
                conn.as_mut().graceful_shutdown();
            }
            let step = loop {
                let serving = std::future::poll_fn(|cx| {
                    if let Poll::Ready(result) = conn.as_mut().poll(cx) {
                        return Poll::Ready(Step::Finished(result));
                    }
                    match link.take_offered() {
                        Some(live) => Poll::Ready(Step::Live(Box::new(live))),
                        None => Poll::Pending,
                    }
                });
                tokio::select! {
                    step = serving => break step,
                    // An error means the accept loop is gone: shut down gracefully all the same.
                    _ = close.wait_for(|closing| *closing), if !closing => {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            };
            let live = match step {
                Step::Finished(result) => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, cause = ?std::error::Error::source(&e), "connection closed on an error");
                    }
                    if body_refused.load(Ordering::Relaxed) {
                        drop(conn);
                        if let Some((socket, _)) = link.into_tcp() {
                            linger(socket).await;
                        }
                    }
                    return;
                }
                Step::Live(live) => live,
            };
            // hyper has written everything before the live frames: drop its state (and its
            // buffers) and take the socket back, with what hyper read but did not use (a
            // request pipelined behind this one).
            let read_ahead = Pin::into_inner(conn).into_parts().read_buf;
            let keep_alive = link.keep_alive.load(Ordering::Relaxed);
            let Some((socket, rest)) = link.into_tcp() else {
                tracing::warn!(%peer, "socket still shared after the hand-over; closing");
                return;
            };
            let ahead = if rest.is_empty() {
                read_ahead
            } else {
                let mut both = bytes::BytesMut::from(read_ahead);
                both.extend_from_slice(&rest);
                both.freeze()
            };
            match live::run(socket, ahead, *live, options.write_stall_timeout, peer).await {
                live::Ended::Clean(socket, ahead) if keep_alive && !*close.borrow() => {
                    tcp = socket;
                    unread = ahead;
                }
                live::Ended::Clean(mut socket, _) => {
                    let _ = tokio::time::timeout(Duration::from_secs(1), socket.shutdown()).await;
                    return;
                }
                live::Ended::Dropped => return,
            }
        }
    }
}

/// How long a connection whose request body was refused unread is drained before it closes.
const LINGER: Duration = Duration::from_secs(2);

/// Closes a connection whose peer may still be sending a body the hub refused (413 before
/// reading it): stops writing, then reads and drops what arrives until the peer closes or
/// [`LINGER`] passes. Closing with unread bytes would make the kernel reset the connection, and
/// a reset can destroy the 413 before the client reads it (the "lingering close" of HTTP
/// servers).
async fn linger(mut socket: TcpStream) {
    let _ = socket.shutdown().await;
    let mut buf = [0u8; 8192];
    let drain = async { while let Ok(1..) = socket.read(&mut buf).await {} };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// What serving a connection with hyper came to.
enum Step {
    Finished(hyper::Result<()>),
    /// A response body offered its live stream, and hyper has flushed everything before it.
    Live(Box<LiveStream>),
}

/// Whether a comma-separated header value lists `token` (case-insensitively).
fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|item| item.trim_ascii().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_keys() {
        let key = |s: &str| client_key(s.parse().unwrap()).to_string();
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(key("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::");
        assert_eq!(key("::1"), "::");
    }

    #[test]
    fn connection_tokens() {
        assert!(has_token(b"close", b"close"));
        assert!(has_token(b"keep-alive, Close", b"close"));
        assert!(!has_token(b"keep-alive", b"close"));
        assert!(!has_token(b"closed", b"close"));
    }
}
