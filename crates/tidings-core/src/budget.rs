//! The hub-wide budget of bytes queued to subscribers (`--queue-budget`).
//!
//! Each [`Mailbox`] is bounded on its own, but ten thousand subscribers each a little under their
//! bound still add up. Every mailbox the fan-out registers is enrolled here: the bytes it queues
//! are charged to one atomic total as they are queued and released as they are written, drained
//! or dropped, so the hot path costs one atomic add per frame. When the total passes the limit,
//! [`QueueBudget::enforce`] (run by the fan-out's flusher after each round of writes, off the
//! dispatch path) cuts the mailboxes with the largest backlogs first, as slow, until the total is
//! back under the limit: those subscribers resume by `Last-Event-ID` from history.
//!
//! The total counts a frame once per subscriber that holds it, although the fan-out shares one
//! copy of a frame among all of them: it is an upper bound of the hub's queued memory, and a
//! fair measure of what each subscriber costs (the kernel copies a frame into each socket).
//!
//! Other paths that hold bytes for a subscriber (a history replay's page in flight) charge them
//! with [`Mailbox::charge`], which counts them against both the mailbox's byte bound and this
//! budget until the returned [`Charge`] is dropped.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use slab::Slab;

use crate::mailbox::Mailbox;

/// See the module documentation.
#[derive(Debug)]
pub struct QueueBudget {
    limit: usize,
    used: AtomicUsize,
    members: Mutex<Slab<Weak<Mailbox>>>,
    /// Held while enforcing, so concurrent callers do not cut twice for one excess.
    enforcing: Mutex<()>,
    cuts: AtomicU64,
}

/// The default budget when the machine's memory is unknown: 512 MiB.
pub const FALLBACK: usize = 512 << 20;
/// The smallest default budget: 64 MiB.
pub const FLOOR: usize = 64 << 20;
/// The largest default budget: 4 GiB.
pub const CAP: usize = 4 << 30;

impl QueueBudget {
    /// A budget of `limit` bytes; `usize::MAX` never cuts anyone.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicUsize::new(0),
            members: Mutex::new(Slab::new()),
            enforcing: Mutex::new(()),
            cuts: AtomicU64::new(0),
        })
    }

    /// The limit, in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes charged now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Mailboxes cut by [`QueueBudget::enforce`] so far.
    pub fn cuts(&self) -> u64 {
        self.cuts.load(Ordering::Relaxed)
    }

    /// Whether more than the limit is charged.
    pub fn is_over(&self) -> bool {
        self.used() > self.limit
    }

    /// Counts `n` more bytes; returns whether the total is now over the limit.
    pub(crate) fn charge(&self, n: usize) -> bool {
        self.used.fetch_add(n, Ordering::Relaxed).saturating_add(n) > self.limit
    }

    /// Counts `n` bytes fewer.
    pub(crate) fn release(&self, n: usize) {
        if n > 0 {
            self.used.fetch_sub(n, Ordering::Relaxed);
        }
    }

    /// Enrolls `mailbox`: from now on its queued bytes are charged here, and it may be cut.
    pub fn enroll(self: &Arc<Self>, mailbox: &Arc<Mailbox>) {
        let slot = lock(&self.members).insert(Arc::downgrade(mailbox));
        mailbox.join_budget(self.clone(), slot);
    }

    /// Called by a mailbox that goes away (its bytes are released already).
    pub(crate) fn leave(&self, slot: usize) {
        lock(&self.members).try_remove(slot);
    }

    /// When over the limit, cuts (as slow) the mailboxes holding the most bytes, largest first,
    /// until the total is back under it. Returns how many were cut. Costs a pass over every
    /// enrolled mailbox and a sort, so it runs only when over the limit.
    pub fn enforce(&self) -> usize {
        if !self.is_over() {
            return 0;
        }
        let Ok(_enforcing) = self.enforcing.try_lock() else {
            return 0;
        };
        // Strong references are taken under the lock and dropped after it: a mailbox whose
        // last reference goes here leaves the member list, which takes the lock.
        let members: Vec<Arc<Mailbox>> = lock(&self.members)
            .iter()
            .filter_map(|(_, m)| m.upgrade())
            .collect();
        let mut sized: Vec<(usize, Arc<Mailbox>)> = members
            .into_iter()
            .map(|m| (m.charged_bytes(), m))
            .filter(|(n, _)| *n > 0)
            .collect();
        sized.sort_unstable_by_key(|(n, _)| std::cmp::Reverse(*n));
        let mut cut = 0;
        for (_, mailbox) in &sized {
            if !self.is_over() {
                break;
            }
            if mailbox.cut_slow() {
                cut += 1;
            }
        }
        if cut > 0 {
            self.cuts.fetch_add(cut as u64, Ordering::Relaxed);
            tracing::info!(
                count = cut,
                limit = self.limit,
                "queue budget exceeded; cut the subscribers with the largest backlogs"
            );
        }
        cut
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every update under these locks is a single slab insert or removal.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Bytes counted against a mailbox and the budget until dropped; see [`Mailbox::charge`].
#[derive(Debug)]
pub struct Charge {
    pub(crate) mailbox: Arc<Mailbox>,
    pub(crate) bytes: usize,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.mailbox.uncharge(self.bytes);
    }
}

/// The default budget for a machine with `mem_total` bytes of memory (`None`: unknown): an
/// eighth of it, at least [`FLOOR`] and at most [`CAP`]. An eighth leaves the rest to the
/// kernel's socket buffers (capped per socket by `--send-buffer`), the store's caches and the
/// recent-events window; the total counts shared frames once per subscriber, so the memory
/// really used is usually much less.
pub fn default_for(mem_total: Option<u64>) -> usize {
    match mem_total {
        Some(total) => usize::try_from(total / 8)
            .unwrap_or(usize::MAX)
            .clamp(FLOOR, CAP),
        None => FALLBACK,
    }
}

/// `MemTotal` from the text of `/proc/meminfo`, in bytes.
pub fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line["MemTotal:".len()..].split_whitespace();
    let value: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => value.checked_mul(1024),
        None => Some(value),
        Some(_) => None,
    }
}

/// The default budget for this machine: [`default_for`] its `/proc/meminfo` (Linux), or
/// [`FALLBACK`] where that cannot be read.
pub fn machine_default() -> usize {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| parse_meminfo(&t));
    default_for(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::Bounds;
    use crate::sse::Frame;

    #[test]
    fn defaults_follow_the_machine_within_floor_and_cap() {
        let text = "MemTotal:        8036512 kB\nMemFree:          123 kB\n";
        assert_eq!(parse_meminfo(text), Some(8036512 * 1024));
        assert_eq!(default_for(Some(8 << 30)), 1 << 30);
        assert_eq!(default_for(Some(256 << 20)), FLOOR);
        assert_eq!(default_for(Some(1 << 40)), CAP);
        assert_eq!(default_for(None), FALLBACK);
        assert_eq!(parse_meminfo("MemFree: 1 kB"), None);
        assert_eq!(parse_meminfo("MemTotal: x kB"), None);
    }

    fn mailbox(budget: &Arc<QueueBudget>) -> Arc<Mailbox> {
        let m = Arc::new(Mailbox::new(Bounds {
            frames: 1000,
            bytes: 1 << 20,
        }));
        budget.enroll(&m);
        m
    }

    /// Queues a frame of about 100 bytes as the fan-out does: hold, then release.
    fn queue(m: &Mailbox, seq: u64) {
        m.hold(seq, &Frame::from_payload(&[b'x'; 100]));
        m.release(tokio::time::Instant::now());
    }

    #[test]
    fn a_subscriber_that_keeps_up_costs_the_budget_nothing() {
        let budget = QueueBudget::new(usize::MAX);
        let m = mailbox(&budget);
        m.hold(1, &Frame::from_payload(b"x"));
        assert_eq!(budget.used(), 0, "held, not yet released: not synced");
        m.release(tokio::time::Instant::now());
        assert!(budget.used() > 0, "not written: counted");
        let drained = m.poll_drain(
            &mut std::task::Context::from_waker(std::task::Waker::noop()),
            0,
        );
        assert!(drained.is_ready());
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn the_largest_backlogs_are_cut_first_and_every_byte_is_released() {
        let budget = QueueBudget::new(1000);
        let small = mailbox(&budget);
        let large = mailbox(&budget);
        let middle = mailbox(&budget);
        queue(&small, 1);
        for seq in 1..=6 {
            queue(&large, seq);
        }
        for seq in 1..=4 {
            queue(&middle, seq);
        }
        assert!(budget.is_over());
        assert_eq!(budget.enforce(), 1, "cutting the largest is enough");
        assert!(large.is_empty() && !middle.is_empty() && !small.is_empty());
        assert!(!budget.is_over());
        assert_eq!(budget.cuts(), 1);
        // A charge from another path counts toward the mailbox's backlog too.
        let charge = small.charge(800);
        assert!(budget.is_over());
        assert_eq!(budget.enforce(), 1);
        assert!(small.is_empty() && !middle.is_empty());
        drop(charge);
        drop(middle);
        drop((small, large));
        assert_eq!(budget.used(), 0);
        assert_eq!(lock(&budget.members).len(), 0);
    }
}
