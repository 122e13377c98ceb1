//! Live SSE streams written straight from the fan-out to their sockets.
//!
//! hyper serves the request and writes the response head, the preamble and any history replay
//! (as HTTP/1.1 chunks). Once the subscription is live (every later frame comes from its
//! mailbox) and hyper has flushed all it had, the connection task takes the socket back from
//! hyper, drops hyper's connection state (its read and write buffers among it), and attaches
//! the socket to the subscriber's mailbox: from then on the fan-out writes each event's chunk
//! to the socket itself, without waking this task, and the task only wakes for what the socket
//! could not take at once, heartbeats, the end of the stream, or the peer hanging up. When the
//! stream ends cleanly its last chunk is written and the connection goes back to hyper for the
//! next request (or is closed, when the request asked for that).

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tidings_core::hub::Subscription;
use tidings_core::mailbox::Wire;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::stall::WriteStall;

/// A live stream offered to its connection: the subscription, and whatever must live as long
/// as it does (a presence departure notice, say).
pub struct LiveStream {
    pub subscription: Subscription,
    pub guard: Option<Box<dyn Send>>,
}

/// The request extension through which a response body hands its live stream to the
/// connection. Present only on requests whose response may be taken over (HTTP/1.1 `GET`).
#[derive(Clone)]
pub struct Takeover(pub(super) Arc<Link>);

impl Takeover {
    /// Offers `live`; the body must yield nothing more (it is dropped with hyper's state).
    pub fn offer(&self, live: LiveStream) {
        *lock(&self.0.offered) = Some(live);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What hyper's I/O and the connection task share.
pub(super) struct Link {
    io: Mutex<WriteStall<TcpStream>>,
    /// Bytes the peer sent that were read before hyper served this connection (a request it
    /// pipelined behind a live stream): hyper reads them before the socket.
    unread: Mutex<Bytes>,
    /// hyper has flushed everything it wrote (`poll_flush` done, no write since).
    flushed: AtomicBool,
    offered: Mutex<Option<LiveStream>>,
    /// The request being served allows the connection to be kept alive.
    pub(super) keep_alive: AtomicBool,
}

impl Link {
    pub(super) fn new(tcp: TcpStream, stall: Duration, unread: Bytes) -> Arc<Self> {
        Arc::new(Self {
            io: Mutex::new(WriteStall::new(tcp, stall)),
            unread: Mutex::new(unread),
            flushed: AtomicBool::new(true),
            offered: Mutex::new(None),
            keep_alive: AtomicBool::new(true),
        })
    }

    /// The offered stream, once hyper has flushed everything before it.
    pub(super) fn take_offered(&self) -> Option<LiveStream> {
        if !self.flushed.load(Ordering::Acquire) {
            return None;
        }
        lock(&self.offered).take()
    }

    /// The socket back, once hyper's state (which shares this link) is dropped, with the
    /// bytes read ahead of it that hyper did not read yet.
    pub(super) fn into_tcp(self: Arc<Self>) -> Option<(TcpStream, Bytes)> {
        let link = Arc::into_inner(self)?;
        let unread = link.unread.into_inner().unwrap_or_else(|p| p.into_inner());
        let tcp = link
            .io
            .into_inner()
            .unwrap_or_else(|p| p.into_inner())
            .into_inner();
        Some((tcp, unread))
    }
}

/// hyper's view of the socket.
pub(super) struct HyperIo(pub(super) Arc<Link>);

impl AsyncRead for HyperIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        {
            let mut unread = lock(&self.0.unread);
            if !unread.is_empty() {
                let n = unread.len().min(buf.remaining());
                buf.put_slice(&unread[..n]);
                unread.advance(n);
                return Poll::Ready(Ok(()));
            }
        }
        Pin::new(&mut *lock(&self.0.io)).poll_read(cx, buf)
    }
}

impl AsyncWrite for HyperIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.0.flushed.store(false, Ordering::Release);
        Pin::new(&mut *lock(&self.0.io)).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.0.flushed.store(false, Ordering::Release);
        Pin::new(&mut *lock(&self.0.io)).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // hyper flushes its socket only once its own buffer is empty.
        let poll = Pin::new(&mut *lock(&self.0.io)).poll_flush(cx);
        if matches!(poll, Poll::Ready(Ok(()))) {
            self.0.flushed.store(true, Ordering::Release);
        }
        poll
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *lock(&self.0.io)).poll_shutdown(cx)
    }
}

/// The socket as the fan-out writes it.
struct TcpWire(TcpStream);

impl TcpWire {
    /// One `send(2)` (or `sendmsg(2)` for several buffers); the socket is non-blocking. (No
    /// `MSG_NOSIGNAL`, as with tokio's own writes: a Rust binary ignores `SIGPIPE`.)
    fn send(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let socket = socket2::SockRef::from(&self.0);
        match bufs {
            [one] => socket.send(one),
            _ => socket.send_vectored(bufs),
        }
    }
}

impl Wire for TcpWire {
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        // The fan-out's write goes straight to the kernel: tokio's readiness check would touch
        // each socket's registration (a cache miss per subscriber in a wide fan-out) only to
        // learn what the call itself tells, and `send` skips `writev`'s file-position path.
        match self.send(bufs) {
            // A full socket: once more through tokio, so that it clears the readiness it holds
            // (at the tick it read) and poll_write_ready waits for the next edge.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self
                .0
                .try_io(tokio::io::Interest::WRITABLE, || self.send(bufs)),
            done => done,
        }
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.poll_write_ready(cx)
    }
}

/// How a live stream ended.
pub(super) enum Ended {
    /// Cleanly, its last chunk written: the socket, for the next request, and what the peer
    /// sent meanwhile (the next request, pipelined), to be read before the socket.
    Clean(TcpStream, Bytes),
    /// The peer hung up, the socket failed or stalled: drop the connection.
    Dropped,
}

/// Most bytes read from the peer during a stream; they wait for the next request.
const READ_AHEAD: usize = 16 * 1024;

/// Runs `live` on `tcp` until it ends. `unread` holds what the peer sent that hyper read but
/// did not use yet (a request pipelined behind this one).
pub(super) async fn run(
    tcp: TcpStream,
    unread: Bytes,
    live: LiveStream,
    stall: Duration,
    peer: std::net::SocketAddr,
) -> Ended {
    let LiveStream {
        mut subscription,
        guard,
    } = live;
    let wire = Arc::new(TcpWire(tcp));
    subscription.attach(wire.clone());
    let mut watch = Watch {
        wire: &wire,
        subscription: &mut subscription,
        stall,
        timer: None,
        target: 0,
        // A copy sized to what is there: `unread` may be a view of hyper's read buffer (8 KiB
        // or more), which would otherwise stay allocated for the whole stream.
        unread: if unread.is_empty() {
            BytesMut::new()
        } else {
            BytesMut::from(&unread[..])
        },
    };
    drop(unread);
    let outcome = std::future::poll_fn(|cx| watch.poll(cx)).await;
    let unread = std::mem::take(&mut watch.unread).freeze();
    let detached = subscription.detach();
    drop(subscription);
    drop(guard);
    drop(detached);
    match outcome {
        Ok(()) => match Arc::into_inner(wire) {
            Some(TcpWire(tcp)) => Ended::Clean(tcp, unread),
            None => Ended::Dropped,
        },
        Err(e) => {
            tracing::debug!(%peer, error = %e, "live stream closed on an error");
            Ended::Dropped
        }
    }
}

/// The stream, the peer's side of the socket and the write-stall timeout, polled together.
///
/// The timeout is a watermark, not an idle timer: the bytes waiting for the socket when the
/// timer is armed must all be gone by the time it fires, or the stream is cut. So a peer that
/// reads a trickle (a few bytes now and then, to look alive) is cut as surely as one that reads
/// nothing, while a peer that keeps up, however busy the stream, never is.
struct Watch<'a> {
    wire: &'a Arc<TcpWire>,
    subscription: &'a mut Subscription,
    stall: Duration,
    /// Armed while bytes wait for the socket.
    timer: Option<Pin<Box<Sleep>>>,
    /// What [`WireBacklog::passed`](tidings_core::mailbox::WireBacklog::passed) must reach
    /// before the timer fires: everything waiting when it was armed.
    target: u64,
    /// What the peer sent during the stream (or before it, unread by hyper).
    unread: BytesMut,
}

impl Watch<'_> {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Poll::Ready(result) = self.subscription.poll_wire(cx) {
            return Poll::Ready(result);
        }
        // The peer sends nothing while it reads a stream, but for a request it pipelines
        // behind it: like hyper, keep the first bytes for after the stream, and watch the socket
        // for the peer hanging up only while nothing waits (once bytes wait, a hang-up shows as
        // a failed write).
        while self.unread.is_empty() {
            match self.wire.0.poll_read_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => break,
            }
            let mut buf = [0u8; READ_AHEAD];
            match self.wire.0.try_read(&mut buf) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into())),
                Ok(n) => self.unread.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        let backlog = self.subscription.wire_backlog();
        if backlog.waiting == 0 {
            self.timer = None;
            return Poll::Pending;
        }
        let target = backlog.passed + backlog.waiting;
        match &mut self.timer {
            // The backlog the timer watches is gone: watch what waits now.
            Some(timer) if backlog.passed >= self.target => {
                timer.as_mut().reset(Instant::now() + self.stall);
                let _ = timer.as_mut().poll(cx);
                self.target = target;
            }
            Some(timer) => {
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "the peer did not take within {:?} the {} bytes waiting for it",
                            self.stall,
                            self.target - backlog.passed.min(self.target)
                        ),
                    )));
                }
            }
            None => {
                let mut timer = Box::pin(tokio::time::sleep(self.stall));
                let _ = timer.as_mut().poll(cx);
                self.timer = Some(timer);
                self.target = target;
            }
        }
        Poll::Pending
    }
}
