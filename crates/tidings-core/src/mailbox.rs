//! A subscriber's bounded queue of encoded frames, filled by the fan-out and drained by the
//! subscriber's connection.
//!
//! Bounded in frames and in bytes. When a push would pass either bound the subscriber is too slow:
//! the mailbox drops what it holds (freeing the memory at once, whether or not the connection is
//! ever polled again) and closes, so the stream ends and the client resumes from history. A drain
//! takes every waiting frame at once, so frames that piled up leave in one write.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};

use crate::event::Seq;

/// Why a mailbox closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// The subscriber fell behind its bounds.
    Slow,
    /// The hub is shutting down.
    Shutdown,
    /// The subscriber got the event it was waiting for (`until`).
    Finished,
}

/// Bounds of one mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub frames: usize,
    pub bytes: usize,
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// The push overflowed the bounds; the mailbox is now closed as [`Closed::Slow`].
    Overflowed,
    /// The mailbox was already closed; nothing was queued.
    AlreadyClosed,
}

/// A batch of frames drained at once, with the newest frame's position.
#[derive(Debug)]
pub struct Drained {
    pub bytes: Bytes,
    pub last_seq: Seq,
}

#[derive(Debug, Default)]
struct Inner {
    frames: VecDeque<(Seq, Bytes)>,
    bytes: usize,
    closed: Option<Closed>,
    waker: Option<Waker>,
}

/// See the module documentation.
#[derive(Debug)]
pub struct Mailbox {
    bounds: Bounds,
    inner: Mutex<Inner>,
}

impl Mailbox {
    pub fn new(bounds: Bounds) -> Self {
        Self {
            bounds,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave `Inner` inconsistent (every update is a
        // single push/clear), so a poisoned lock is still safe to use.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `frame` (the encoding of the event at `seq`).
    pub fn push(&self, seq: Seq, frame: &Bytes) -> Pushed {
        let mut inner = self.lock();
        if inner.closed.is_some() {
            return Pushed::AlreadyClosed;
        }
        let result = if inner.frames.len() >= self.bounds.frames
            || inner.bytes + frame.len() > self.bounds.bytes
        {
            inner.frames = VecDeque::new();
            inner.bytes = 0;
            inner.closed = Some(Closed::Slow);
            Pushed::Overflowed
        } else {
            inner.bytes += frame.len();
            inner.frames.push_back((seq, frame.clone()));
            Pushed::Queued
        };
        let waker = inner.waker.take();
        drop(inner);
        if let Some(w) = waker {
            w.wake();
        }
        result
    }

    /// Closes the mailbox; queued frames are still drained unless the reason is `Slow`.
    pub fn close(&self, reason: Closed) {
        let mut inner = self.lock();
        if inner.closed.is_none() {
            inner.closed = Some(reason);
        }
        let waker = inner.waker.take();
        drop(inner);
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Whether anything is queued.
    pub fn is_empty(&self) -> bool {
        self.lock().frames.is_empty()
    }

    /// Takes every queued frame with `seq > after`, concatenated; `Ready(Err)` once closed and
    /// empty; `Pending` (waker stored) when nothing is queued.
    pub fn poll_drain(&self, cx: &mut Context<'_>, after: Seq) -> Poll<Result<Drained, Closed>> {
        let mut inner = self.lock();
        while let Some((seq, _)) = inner.frames.front() {
            if *seq > after {
                break;
            }
            let (_, frame) = inner.frames.pop_front().expect("front exists");
            inner.bytes -= frame.len();
        }
        if inner.frames.is_empty() {
            if let Some(reason) = inner.closed {
                return Poll::Ready(Err(reason));
            }
            if !inner
                .waker
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
            {
                inner.waker = Some(cx.waker().clone());
            }
            return Poll::Pending;
        }
        let total = inner.bytes;
        inner.bytes = 0;
        let mut frames = std::mem::take(&mut inner.frames);
        drop(inner);
        let last_seq = frames.back().map_or(after, |(s, _)| *s);
        let bytes = if frames.len() == 1 {
            frames.pop_front().map(|(_, f)| f).unwrap_or_default()
        } else {
            let mut buf = BytesMut::with_capacity(total);
            for (_, f) in frames {
                buf.extend_from_slice(&f);
            }
            buf.freeze()
        };
        Poll::Ready(Ok(Drained { bytes, last_seq }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    fn drain(m: &Mailbox, after: Seq) -> Poll<Result<Drained, Closed>> {
        m.poll_drain(&mut Context::from_waker(Waker::noop()), after)
    }

    #[test]
    fn drains_everything_queued_as_one_chunk() {
        let m = Mailbox::new(Bounds {
            frames: 8,
            bytes: 1024,
        });
        m.push(1, &Bytes::from_static(b"a"));
        m.push(2, &Bytes::from_static(b"b"));
        let Poll::Ready(Ok(d)) = drain(&m, 0) else {
            panic!("expected frames")
        };
        assert_eq!(&d.bytes[..], b"ab");
        assert_eq!(d.last_seq, 2);
        assert!(drain(&m, 2).is_pending());
    }

    #[test]
    fn skips_frames_already_sent() {
        let m = Mailbox::new(Bounds {
            frames: 8,
            bytes: 1024,
        });
        m.push(1, &Bytes::from_static(b"a"));
        m.push(2, &Bytes::from_static(b"b"));
        let Poll::Ready(Ok(d)) = drain(&m, 1) else {
            panic!("expected frames")
        };
        assert_eq!(&d.bytes[..], b"b");
    }

    #[test]
    fn overflow_frees_the_queue_and_closes() {
        let m = Mailbox::new(Bounds {
            frames: 2,
            bytes: 1024,
        });
        assert_eq!(m.push(1, &Bytes::from_static(b"a")), Pushed::Queued);
        assert_eq!(m.push(2, &Bytes::from_static(b"b")), Pushed::Queued);
        assert_eq!(m.push(3, &Bytes::from_static(b"c")), Pushed::Overflowed);
        assert!(m.is_empty());
        assert_eq!(m.push(4, &Bytes::from_static(b"d")), Pushed::AlreadyClosed);
        assert!(matches!(drain(&m, 0), Poll::Ready(Err(Closed::Slow))));
    }

    #[test]
    fn byte_bound_counts_too() {
        let m = Mailbox::new(Bounds {
            frames: 100,
            bytes: 3,
        });
        assert_eq!(m.push(1, &Bytes::from_static(b"ab")), Pushed::Queued);
        assert_eq!(m.push(2, &Bytes::from_static(b"cd")), Pushed::Overflowed);
    }

    #[test]
    fn shutdown_drains_before_ending() {
        let m = Mailbox::new(Bounds {
            frames: 8,
            bytes: 1024,
        });
        m.push(1, &Bytes::from_static(b"a"));
        m.close(Closed::Shutdown);
        assert!(matches!(drain(&m, 0), Poll::Ready(Ok(_))));
        assert!(matches!(drain(&m, 1), Poll::Ready(Err(Closed::Shutdown))));
    }
}
