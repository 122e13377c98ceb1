//! A subscriber's bounded queue of encoded frames, filled by the fan-out and drained by the
//! subscriber's connection.
//!
//! Bounded in frames and in bytes. When a push would pass either bound the subscriber is too slow:
//! the mailbox drops what it holds (freeing the memory at once, whether or not the connection is
//! ever polled again) and closes, so the stream ends and the client resumes from history. A drain
//! takes every waiting frame at once, so frames that piled up leave in one write.
//!
//! A mailbox can also be *attached* to its subscriber's socket (a [`Wire`]) once everything
//! before the live frames is on it: a push then writes the frame's chunk straight to the socket
//! when nothing is waiting before it, so a delivery costs one non-blocking write and no task
//! wake-up. Only what the socket does not take right away is queued (within the same bounds),
//! and the connection's task writes it ([`Mailbox::poll_wire`]) when the socket has room. Every
//! write happens under the mailbox's lock, so the two writers never interleave, and a frame
//! written in part is always finished before anything else.
//!
//! A mailbox registered with the fan-out is also enrolled in the hub-wide [`QueueBudget`]: the
//! bytes it queues are charged there too, and past the budget the largest backlogs are cut.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use tokio::time::Instant;

use crate::budget::{Charge, QueueBudget};
use crate::event::Seq;
use crate::sse::{self, Frame};

/// Why a mailbox closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// The subscriber fell behind its bounds.
    Slow,
    /// The hub is shutting down.
    Shutdown,
    /// The subscriber got the event it was waiting for (`until`), or its stream ended (its
    /// token expired).
    Finished,
    /// Writing to the attached socket failed: the connection is gone.
    Broken,
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
    /// Queued, or written to the attached socket.
    Queued,
    /// The push overflowed the bounds; the mailbox is now closed as [`Closed::Slow`].
    Overflowed,
    /// The mailbox was already closed (or its socket just failed); nothing was queued.
    AlreadyClosed,
}

/// A batch of frames drained at once, with the newest frame's position.
#[derive(Debug)]
pub struct Drained {
    pub bytes: Bytes,
    pub last_seq: Seq,
}

/// What waits for an attached socket, for a write-stall timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WireBacklog {
    /// Bytes waiting: queued frames and the rest of a chunk begun.
    pub waiting: u64,
    /// Bytes that left the backlog since attaching: written to the socket, or dropped when the
    /// stream was cut or ended. The backlog present when this read `p` with `w` waiting is
    /// gone once it reads `p + w` or more.
    pub passed: u64,
}

/// A subscriber's socket, written without blocking.
pub trait Wire: Send + Sync {
    /// Writes what the socket takes now; `WouldBlock` when it takes nothing.
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
    /// Ready when the socket may take more bytes; registers `cx` otherwise.
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

/// Most buffers per vectored write.
const MAX_IOVS: usize = 64;

/// The state of an attached mailbox.
struct Direct {
    wire: Arc<dyn Wire>,
    /// The rest of a chunk the socket took only in part: written before anything else.
    partial: Bytes,
    /// Position of the newest frame written (in full or in part).
    sent: Seq,
    /// When bytes last went to the socket.
    last_write: Instant,
    /// Bytes that left the backlog since attaching (see [`WireBacklog::passed`]).
    passed: u64,
    /// The last chunk is in `partial` or written: the stream is over.
    ended: bool,
}

impl Direct {
    fn wrote(&mut self, n: usize, now: Instant) {
        self.passed += n as u64;
        self.last_write = now;
    }
}

#[derive(Default)]
struct Inner {
    frames: VecDeque<(Seq, Frame)>,
    bytes: usize,
    closed: Option<Closed>,
    waker: Option<Waker>,
    direct: Option<Box<Direct>>,
    /// Frames were held ([`Mailbox::hold`]) and not released yet.
    held: bool,
    /// The hub-wide budget this mailbox is enrolled in, and its place in the member list.
    budget: Option<(Arc<QueueBudget>, usize)>,
    /// Bytes other paths hold for this subscriber ([`Mailbox::charge`]).
    charged: usize,
    /// `bytes + charged` as the budget last heard it ([`Inner::sync`]).
    reported: usize,
}

impl Inner {
    fn wake(&mut self) -> Option<Waker> {
        self.waker.take()
    }

    /// Counts a frame of `len` bytes queued.
    fn queued(&mut self, len: usize) {
        self.bytes += len;
    }

    /// Counts `len` bytes of frames gone from the queue.
    fn unqueued(&mut self, len: usize) {
        self.bytes -= len;
    }

    /// Brings the budget up to date with this mailbox's bytes: one atomic operation, and only
    /// when they changed since the last sync. Every method that changes them syncs before it
    /// returns, but [`Mailbox::hold`], whose caller always releases next: so a subscriber that
    /// keeps up (its frames leave in the release that follows the hold) costs the budget
    /// nothing.
    fn sync(&mut self) {
        let now = self.bytes + self.charged;
        if now == self.reported {
            return;
        }
        if let Some((budget, _)) = &self.budget {
            if now > self.reported {
                budget.charge(now - self.reported);
            } else {
                budget.release(self.reported - now);
            }
        }
        self.reported = now;
    }

    /// Pops the oldest frame, counting its bytes gone.
    fn pop(&mut self) -> Option<(Seq, Frame)> {
        let (seq, frame) = self.frames.pop_front()?;
        self.unqueued(frame.wire().len());
        Some((seq, frame))
    }

    /// Drops every queued frame (they count as gone from an attached socket's backlog).
    fn clear(&mut self) {
        self.frames = VecDeque::new();
        if let Some(direct) = self.direct.as_deref_mut() {
            direct.passed += self.bytes as u64;
        }
        self.bytes = 0;
    }

    /// Forgets what other paths charged to this mailbox.
    fn release_charged(&mut self) {
        self.charged = 0;
    }

    /// One non-blocking vectored write of what waits for the attached socket (the rest of a
    /// chunk begun, then queued frames); advances past what the socket took. `Ok(0)` when
    /// nothing waits or nothing is attached.
    fn write_backlog(&mut self, now: Instant) -> io::Result<usize> {
        let Some(direct) = self.direct.as_deref_mut() else {
            return Ok(0);
        };
        let written = match (direct.partial.is_empty(), self.frames.len()) {
            (true, 0) => return Ok(0),
            // The common case, one frame: no array of buffers to set up.
            (true, 1) => {
                let (_, frame) = self.frames.front().expect("one frame");
                direct
                    .wire
                    .try_write_vectored(&[IoSlice::new(frame.wire())])?
            }
            _ => {
                let mut iovs = [IoSlice::new(&[]); MAX_IOVS];
                let mut count = 0;
                if !direct.partial.is_empty() {
                    iovs[0] = IoSlice::new(&direct.partial);
                    count = 1;
                }
                for (slot, (_, frame)) in iovs[count..].iter_mut().zip(self.frames.iter()) {
                    *slot = IoSlice::new(frame.wire());
                    count += 1;
                }
                direct.wire.try_write_vectored(&iovs[..count])?
            }
        };
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        direct.wrote(written, now);
        let mut n = written;
        let from_partial = n.min(direct.partial.len());
        direct.partial.advance(from_partial);
        n -= from_partial;
        let mut gone = 0;
        while n > 0 {
            let (seq, frame) = self.frames.pop_front().expect("written frame");
            gone += frame.wire().len();
            direct.sent = seq;
            if n < frame.wire().len() {
                direct.partial = frame.wire().slice(n..);
                n = 0;
            } else {
                n -= frame.wire().len();
            }
        }
        self.unqueued(gone);
        Ok(written)
    }
}

/// See the module documentation.
pub struct Mailbox {
    bounds: Bounds,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox")
            .field("bounds", &self.bounds)
            .finish_non_exhaustive()
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        let inner = self.inner.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some((budget, slot)) = inner.budget.take() {
            budget.release(inner.reported);
            budget.leave(slot);
        }
    }
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

    /// Joins `budget` (see [`QueueBudget::enroll`]): what is queued from now on is charged there.
    pub(crate) fn join_budget(&self, budget: Arc<QueueBudget>, slot: usize) {
        let mut inner = self.lock();
        if let Some((old, slot)) = inner.budget.replace((budget, slot)) {
            old.release(inner.reported);
            old.leave(slot);
        }
        inner.reported = 0;
        inner.sync();
    }

    /// Bytes this mailbox holds against its bounds and the budget: queued frames and charges.
    pub fn charged_bytes(&self) -> usize {
        let inner = self.lock();
        inner.bytes + inner.charged
    }

    /// Counts `bytes` another path holds for this subscriber (a history page in flight, say)
    /// against the mailbox's byte bound and the hub-wide budget, until the returned [`Charge`]
    /// is dropped. A charge never closes the mailbox by itself, but the budget may cut it for
    /// the bytes it holds: the caller should stop when [`Mailbox::is_closed`] says `Slow`. A cut
    /// releases every charge at once.
    pub fn charge(self: &Arc<Self>, bytes: usize) -> Charge {
        let mut inner = self.lock();
        inner.charged += bytes;
        inner.sync();
        drop(inner);
        Charge {
            mailbox: self.clone(),
            bytes,
        }
    }

    /// Ends a [`Charge`].
    pub(crate) fn uncharge(&self, bytes: usize) {
        let mut inner = self.lock();
        let bytes = bytes.min(inner.charged);
        inner.charged -= bytes;
        inner.sync();
    }

    /// Why the mailbox closed, if it did.
    pub fn is_closed(&self) -> Option<Closed> {
        self.lock().closed
    }

    /// Cuts the subscriber as too slow: frees its queue and its charges and closes the mailbox
    /// (an attached stream still finishes the chunk it began). Whether it was open.
    pub fn cut_slow(&self) -> bool {
        let mut inner = self.lock();
        if inner.closed.is_some() {
            return false;
        }
        inner.clear();
        inner.release_charged();
        inner.sync();
        inner.closed = Some(Closed::Slow);
        let waker = inner.wake();
        drop(inner);
        if let Some(w) = waker {
            w.wake();
        }
        true
    }

    /// Queues `frame` (the encoding of the event at `seq`) and writes it at once, as far as the
    /// socket takes it: [`Mailbox::hold`] then [`Mailbox::release`]. The fan-out holds and
    /// releases itself, so that frames dispatched together leave in one write.
    #[cfg(test)]
    pub fn push(&self, seq: Seq, frame: &Frame, now: Instant) -> Pushed {
        let (pushed, _) = self.hold(seq, frame);
        self.release(now);
        match self.lock().closed {
            Some(Closed::Broken) if pushed == Pushed::Queued => Pushed::AlreadyClosed,
            _ => pushed,
        }
    }

    /// Queues `frame` (the encoding of the event at `seq`) without writing it or waking the
    /// reader: the caller queues more, then calls [`Mailbox::release`], so frames dispatched
    /// together leave in one write. Also says whether this is the first frame held since the
    /// last release (the caller then owes the mailbox a release). Past either bound the queue
    /// is freed and the mailbox closed (`Slow`).
    pub fn hold(&self, seq: Seq, frame: &Frame) -> (Pushed, bool) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        if inner.closed.is_some() {
            return (Pushed::AlreadyClosed, false);
        }
        if inner.direct.as_deref().is_some_and(|d| seq <= d.sent) {
            // Sent already, by the history replay.
            return (Pushed::Queued, false);
        }
        let len = frame.wire().len();
        if inner.frames.len() >= self.bounds.frames
            || inner.bytes + inner.charged + len > self.bounds.bytes
        {
            inner.clear();
            inner.release_charged();
            inner.sync();
            inner.closed = Some(Closed::Slow);
            let waker = inner.wake();
            drop(guard);
            if let Some(w) = waker {
                w.wake();
            }
            return (Pushed::Overflowed, false);
        }
        inner.queued(len);
        inner.frames.push_back((seq, frame.clone()));
        let first = !inner.held;
        inner.held = true;
        (Pushed::Queued, first)
    }

    /// Writes what [`Mailbox::hold`] queued, as far as the attached socket takes it without
    /// blocking, and wakes the reader for the rest.
    pub fn release(&self, now: Instant) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        inner.held = false;
        if !matches!(inner.closed, Some(Closed::Broken | Closed::Slow)) {
            match inner.write_backlog(now) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => {
                    inner.closed = Some(Closed::Broken);
                    inner.clear();
                }
            }
        }
        inner.sync();
        let waiting = !inner.frames.is_empty()
            || inner.closed.is_some()
            || inner
                .direct
                .as_deref()
                .is_some_and(|d| !d.partial.is_empty());
        let waker = if waiting { inner.wake() } else { None };
        drop(guard);
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Closes the mailbox; queued frames are still drained unless the reason is `Slow`.
    pub fn close(&self, reason: Closed) {
        let mut inner = self.lock();
        if inner.closed.is_none() {
            inner.closed = Some(reason);
        }
        let waker = inner.wake();
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
        while inner.frames.front().is_some_and(|(seq, _)| *seq <= after) {
            inner.pop();
        }
        inner.sync();
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
        let bytes = inner.bytes;
        inner.unqueued(bytes);
        inner.sync();
        let mut frames = std::mem::take(&mut inner.frames);
        drop(inner);
        let last_seq = frames.back().map_or(after, |(s, _)| *s);
        let bytes = if frames.len() == 1 {
            frames
                .pop_front()
                .map(|(_, f)| f.payload())
                .unwrap_or_default()
        } else {
            let total = frames.iter().map(|(_, f)| f.payload_slice().len()).sum();
            let mut buf = BytesMut::with_capacity(total);
            for (_, f) in &frames {
                buf.extend_from_slice(f.payload_slice());
            }
            buf.freeze()
        };
        Poll::Ready(Ok(Drained { bytes, last_seq }))
    }

    /// Attaches the subscriber's socket: everything before the live frames is on it, and the
    /// newest event sent is at `sent`. Queued frames wait for [`Mailbox::poll_wire`].
    pub fn attach(&self, wire: Arc<dyn Wire>, sent: Seq, last_write: Instant) {
        let mut inner = self.lock();
        while inner.frames.front().is_some_and(|(seq, _)| *seq <= sent) {
            inner.pop();
        }
        inner.sync();
        inner.direct = Some(Box::new(Direct {
            wire,
            partial: Bytes::new(),
            sent,
            last_write,
            passed: 0,
            ended: false,
        }));
    }

    /// Detaches the socket (after [`Mailbox::poll_wire`] finished), so whoever owns it can
    /// take it back.
    pub fn detach(&self) -> Option<Arc<dyn Wire>> {
        self.lock().direct.take().map(|d| d.wire)
    }

    /// Ends an attached stream now (its subscriber's token expired, say): nothing more is
    /// written but the rest of a chunk already begun and the last chunk.
    pub fn finish(&self) {
        let mut inner = self.lock();
        inner.clear();
        inner.sync();
        if inner.closed.is_none() {
            inner.closed = Some(Closed::Finished);
        }
    }

    /// Queues a heartbeat on an attached, idle stream; does nothing when bytes are waiting.
    pub fn heartbeat(&self) {
        let mut inner = self.lock();
        let idle = inner.frames.is_empty() && inner.closed.is_none();
        if let Some(direct) = inner.direct.as_deref_mut() {
            if idle && direct.partial.is_empty() {
                direct.partial = Bytes::from_static(sse::HEARTBEAT_CHUNK);
            }
        }
    }

    /// When bytes last went to the attached socket.
    pub fn last_write(&self) -> Option<Instant> {
        self.lock().direct.as_ref().map(|d| d.last_write)
    }

    /// For a write-stall timeout: what waits for the attached socket, and how much left the
    /// backlog so far.
    pub fn wire_backlog(&self) -> WireBacklog {
        let inner = self.lock();
        match inner.direct.as_deref() {
            Some(d) => WireBacklog {
                waiting: (d.partial.len() + inner.bytes) as u64,
                passed: d.passed,
            },
            None => WireBacklog::default(),
        }
    }

    /// Writes what waits for the attached socket. `Ready(Ok(reason))` once the mailbox is
    /// closed and everything, the last chunk included, is written; `Ready(Err)` when the socket
    /// failed (the connection must be dropped); `Pending` when waiting for frames or for room
    /// in the socket.
    pub fn poll_wire(&self, cx: &mut Context<'_>) -> Poll<io::Result<Closed>> {
        let mut inner = self.lock();
        let poll = Self::drive_wire(&mut inner, cx);
        inner.sync();
        poll
    }

    /// [`Mailbox::poll_wire`] under the lock.
    fn drive_wire(inner: &mut Inner, cx: &mut Context<'_>) -> Poll<io::Result<Closed>> {
        loop {
            let Some(direct) = inner.direct.as_deref_mut() else {
                return Poll::Ready(Err(io::Error::other("the mailbox is not attached")));
            };
            // Frames already sent by the replay go nowhere.
            let sent = direct.sent;
            while inner.frames.front().is_some_and(|(seq, _)| *seq <= sent) {
                let (_, frame) = inner.pop().expect("front exists");
                if let Some(direct) = inner.direct.as_deref_mut() {
                    direct.passed += frame.wire().len() as u64;
                }
            }
            let Some(direct) = inner.direct.as_deref_mut() else {
                return Poll::Ready(Err(io::Error::other("the mailbox is not attached")));
            };
            if direct.partial.is_empty() && inner.frames.is_empty() {
                match inner.closed {
                    Some(Closed::Broken) => {
                        return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
                    }
                    Some(reason) if direct.ended => return Poll::Ready(Ok(reason)),
                    Some(_) => {
                        direct.partial = Bytes::from_static(sse::LAST_CHUNK);
                        direct.ended = true;
                    }
                    None => {
                        if !inner
                            .waker
                            .as_ref()
                            .is_some_and(|w| w.will_wake(cx.waker()))
                        {
                            inner.waker = Some(cx.waker().clone());
                        }
                        return Poll::Pending;
                    }
                }
            }
            match inner.write_backlog(Instant::now()) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let ready = match inner.direct.as_deref() {
                        Some(direct) => direct.wire.poll_write_ready(cx),
                        None => Poll::Ready(Ok(())),
                    };
                    match ready {
                        Poll::Ready(Ok(())) => {}
                        Poll::Ready(Err(e)) => {
                            inner.closed = Some(Closed::Broken);
                            return Poll::Ready(Err(e));
                        }
                        Poll::Pending => return Poll::Pending,
                    }
                }
                Err(e) => {
                    inner.closed = Some(Closed::Broken);
                    inner.clear();
                    return Poll::Ready(Err(e));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    /// A socket that takes `room` more bytes, then blocks until given more room.
    #[derive(Default)]
    struct FakeWire {
        state: Mutex<(usize, Vec<u8>, bool)>,
    }

    impl FakeWire {
        fn with_room(room: usize) -> Arc<Self> {
            let w = Self::default();
            w.state.lock().unwrap().0 = room;
            Arc::new(w)
        }
        fn give(&self, room: usize) {
            self.state.lock().unwrap().0 += room;
        }
        fn fail(&self) {
            self.state.lock().unwrap().2 = true;
        }
        fn taken(&self) -> Vec<u8> {
            std::mem::take(&mut self.state.lock().unwrap().1)
        }
    }

    impl Wire for FakeWire {
        fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            let mut s = self.state.lock().unwrap();
            if s.2 {
                return Err(io::ErrorKind::ConnectionReset.into());
            }
            if s.0 == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(s.0);
                s.1.extend_from_slice(&b[..take]);
                s.0 -= take;
                n += take;
            }
            Ok(n)
        }
        fn poll_write_ready(&self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            if self.state.lock().unwrap().0 > 0 {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        }
    }

    fn wire_poll(m: &Mailbox) -> Poll<io::Result<Closed>> {
        m.poll_wire(&mut Context::from_waker(Waker::noop()))
    }

    fn attached(room: usize, frames: usize) -> (Mailbox, Arc<FakeWire>) {
        let m = Mailbox::new(Bounds {
            frames,
            bytes: 1 << 20,
        });
        let wire = FakeWire::with_room(room);
        m.attach(wire.clone(), 0, now());
        (m, wire)
    }

    #[test]
    fn attached_pushes_go_straight_to_the_socket() {
        let (m, wire) = attached(1 << 20, 4);
        for seq in 1..=10 {
            assert_eq!(m.push(seq, &f(b"hello"), now()), Pushed::Queued);
        }
        assert!(m.is_empty(), "nothing queued: the socket took every frame");
        assert_eq!(wire.taken(), b"5\r\nhello\r\n".repeat(10));
        assert!(wire_poll(&m).is_pending());
        m.close(Closed::Finished);
        assert!(matches!(wire_poll(&m), Poll::Ready(Ok(Closed::Finished))));
        assert_eq!(wire.taken(), sse::LAST_CHUNK);
    }

    #[test]
    fn a_chunk_begun_is_finished_before_the_next_and_before_the_end() {
        let (m, wire) = attached(4, 2);
        m.push(1, &f(b"hello"), now()); // 4 of 10 bytes written
        m.push(2, &f(b"world"), now()); // queued behind the rest
        m.push(3, &f(b"again"), now());
        assert_eq!(m.push(4, &f(b"over!"), now()), Pushed::Overflowed);
        assert_eq!(
            m.wire_backlog(),
            WireBacklog {
                waiting: 6,
                passed: 4 + 20
            },
            "the cut dropped two queued frames"
        );
        assert!(wire_poll(&m).is_pending(), "no room");
        wire.give(100);
        assert!(matches!(wire_poll(&m), Poll::Ready(Ok(Closed::Slow))));
        // The cut drops what was queued but completes the chunk it had begun, then ends.
        let mut want = b"5\r\nhello\r\n".to_vec();
        want.extend_from_slice(sse::LAST_CHUNK);
        assert_eq!(wire.taken(), want);
    }

    #[test]
    fn a_backlog_leaves_in_order_once_the_socket_has_room() {
        let (m, wire) = attached(0, 8);
        for (seq, p) in [(1, b"a"), (2, b"b"), (3, b"c")] {
            m.push(seq, &f(p), now());
        }
        assert!(wire_poll(&m).is_pending());
        wire.give(7);
        assert!(wire_poll(&m).is_pending(), "room for one and a half");
        wire.give(100);
        assert!(wire_poll(&m).is_pending(), "all written, waiting for more");
        assert_eq!(wire.taken(), b"1\r\na\r\n1\r\nb\r\n1\r\nc\r\n");
        m.push(4, &f(b"d"), now());
        assert_eq!(wire.taken(), b"1\r\nd\r\n", "straight through again");
        m.heartbeat();
        assert!(wire_poll(&m).is_pending());
        assert_eq!(wire.taken(), sse::HEARTBEAT_CHUNK);
    }

    #[test]
    fn attaching_skips_what_was_sent_and_a_failed_socket_breaks_the_stream() {
        let m = Mailbox::new(Bounds {
            frames: 8,
            bytes: 1024,
        });
        m.push(1, &f(b"a"), now());
        m.push(2, &f(b"b"), now());
        let wire = FakeWire::with_room(100);
        m.attach(wire.clone(), 1, now());
        assert_eq!(m.push(1, &f(b"a"), now()), Pushed::Queued, "already sent");
        assert!(wire_poll(&m).is_pending());
        assert_eq!(wire.taken(), b"1\r\nb\r\n");
        wire.fail();
        assert_eq!(m.push(3, &f(b"c"), now()), Pushed::AlreadyClosed);
        assert!(matches!(wire_poll(&m), Poll::Ready(Err(_))));
        m.finish();
        assert!(m.detach().is_some());
    }

    fn f(payload: &[u8]) -> Frame {
        Frame::from_payload(payload)
    }

    fn now() -> Instant {
        Instant::now()
    }

    fn drain(m: &Mailbox, after: Seq) -> Poll<Result<Drained, Closed>> {
        m.poll_drain(&mut Context::from_waker(Waker::noop()), after)
    }

    #[test]
    fn drains_everything_queued_as_one_chunk() {
        let m = Mailbox::new(Bounds {
            frames: 8,
            bytes: 1024,
        });
        m.push(1, &f(b"a"), now());
        m.push(2, &f(b"b"), now());
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
        m.push(1, &f(b"a"), now());
        m.push(2, &f(b"b"), now());
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
        assert_eq!(m.push(1, &f(b"a"), now()), Pushed::Queued);
        assert_eq!(m.push(2, &f(b"b"), now()), Pushed::Queued);
        assert_eq!(m.push(3, &f(b"c"), now()), Pushed::Overflowed);
        assert!(m.is_empty());
        assert_eq!(m.push(4, &f(b"d"), now()), Pushed::AlreadyClosed);
        assert!(matches!(drain(&m, 0), Poll::Ready(Err(Closed::Slow))));
    }

    #[test]
    fn byte_bound_counts_too() {
        let m = Mailbox::new(Bounds {
            frames: 100,
            bytes: 10,
        });
        assert_eq!(m.push(1, &f(b"ab"), now()), Pushed::Queued);
        assert_eq!(m.push(2, &f(b"cd"), now()), Pushed::Overflowed);
    }

    #[test]
    fn shutdown_drains_before_ending() {
        let m = Mailbox::new(Bounds {
            frames: 8,
            bytes: 1024,
        });
        m.push(1, &f(b"a"), now());
        m.close(Closed::Shutdown);
        assert!(matches!(drain(&m, 0), Poll::Ready(Ok(_))));
        assert!(matches!(drain(&m, 1), Poll::Ready(Err(Closed::Shutdown))));
    }
}
