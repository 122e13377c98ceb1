//! The write-stall timeout (`--write-stall-timeout`): an I/O wrapper that fails a write, flush or
//! shutdown once it has stayed blocked for the limit, so a peer that accepts no bytes at all is
//! cut even while the hub still has data for it. Progress of any size restarts the clock, and an
//! idle connection (nothing to write) is never timed.
//!
//! Without it, a subscriber that stops reading holds its socket buffers and its place in the
//! fan-out until its mailbox overflows, which, with large bounds, may be never.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// See the module documentation.
#[derive(Debug)]
pub struct WriteStall<T> {
    io: T,
    limit: Duration,
    /// Armed while a write is blocked; a blocked write's task is woken by this timer too.
    timer: Pin<Box<Sleep>>,
    armed: bool,
}

impl<T> WriteStall<T> {
    /// Wraps `io`. Must be called inside a tokio runtime.
    pub fn new(io: T, limit: Duration) -> Self {
        Self {
            io,
            limit,
            timer: Box::pin(tokio::time::sleep(limit)),
            armed: false,
        }
    }

    /// The wrapped I/O object.
    pub fn into_inner(self) -> T {
        self.io
    }

    fn watch<R>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if poll.is_ready() {
            self.armed = false;
            return poll;
        }
        if !self.armed {
            self.armed = true;
            self.timer.as_mut().reset(Instant::now() + self.limit);
        }
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the peer accepted no bytes for {:?}", self.limit),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteStall<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteStall<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.io).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.io).poll_shutdown(cx);
        self.watch(cx, poll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_write_blocked_past_the_limit_fails() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut near = WriteStall::new(near, Duration::from_secs(30));
        near.write_all(&[1; 64]).await.unwrap();
        let started = Instant::now();
        let err = near.write_all(&[2; 10]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        let mut buf = [0; 64];
        far.read_exact(&mut buf).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn slow_progress_and_idleness_are_not_stalls() {
        let (near, mut far) = tokio::io::duplex(8);
        let mut near = WriteStall::new(near, Duration::from_secs(30));
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut buf = [0; 8];
            loop {
                // Drains 8 bytes every 20 s: slow, but never stalled for 30 s.
                tokio::time::sleep(Duration::from_secs(20)).await;
                let n = far.read(&mut buf).await.unwrap();
                if n == 0 {
                    return got;
                }
                got.extend_from_slice(&buf[..n]);
            }
        });
        tokio::time::sleep(Duration::from_secs(3600)).await;
        near.write_all(&[7; 40]).await.unwrap();
        near.shutdown().await.unwrap();
        drop(near);
        assert_eq!(reader.await.unwrap(), vec![7; 40]);
    }
}
