//! The newest dispatched events, kept in memory so that a subscriber resuming from a recent id
//! (a browser reconnecting, a reconnect storm after a deploy) is served without the store: its
//! id is found here and its missed events are read from here.
//!
//! The window is contiguous in seq and bounded in events and bytes. It never serves what the
//! retention would have pruned: it keeps at most `retention.max_events` events, and an event
//! older than `retention.max_age` counts as absent. Anything outside the window falls back to
//! the store, which stays the truth.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::event::{Event, EventId, Seq};
use crate::log::Retention;

/// Most events kept.
pub const RECENT_EVENTS: usize = 8192;
/// Most bytes of event data kept.
pub const RECENT_BYTES: usize = 32 << 20;

/// See the module documentation.
pub struct Recent {
    events: VecDeque<Arc<Event>>,
    ids: HashMap<EventId, Seq>,
    bytes: usize,
    max_events: usize,
    retention: Retention,
}

impl Recent {
    pub fn new(retention: Retention) -> Self {
        let max_events = retention
            .max_events
            .map_or(RECENT_EVENTS, |n| (n.min(RECENT_EVENTS as u64)) as usize);
        Self {
            events: VecDeque::new(),
            ids: HashMap::new(),
            bytes: 0,
            max_events,
            retention,
        }
    }

    /// Appends dispatched events (contiguous, in order; those already held are skipped). A batch
    /// that leaves a gap after the window starts a new one.
    pub fn push(&mut self, batch: &[Arc<Event>]) {
        let Some(first) = batch.first() else { return };
        if self.events.back().is_some_and(|b| first.seq > b.seq + 1) {
            self.events.clear();
            self.ids.clear();
            self.bytes = 0;
        }
        for e in batch {
            if self.events.back().is_some_and(|b| b.seq >= e.seq) {
                continue;
            }
            self.bytes += e.approx_size();
            self.ids.insert(e.id.clone(), e.seq);
            self.events.push_back(e.clone());
        }
        while self.events.len() > self.max_events
            || (self.bytes > RECENT_BYTES && self.events.len() > 1)
        {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some(e) = self.events.pop_front() {
            self.bytes -= e.approx_size();
            self.ids.remove(&e.id);
        }
    }

    /// The stored_at before which retention drops events, if it drops by age.
    fn too_old(&self) -> Option<i64> {
        self.retention.max_age.and(self.retention.age_cutoff_ms())
    }

    fn at(&self, seq: Seq) -> Option<&Arc<Event>> {
        let front = self.events.front()?.seq;
        self.events
            .get(usize::try_from(seq.checked_sub(front)?).ok()?)
    }

    /// The event at `seq`, when it is in the window.
    pub fn get(&self, seq: Seq) -> Option<Arc<Event>> {
        self.at(seq).cloned()
    }

    /// The seq of the event with this id, when it is in the window (and not past its age).
    pub fn locate(&self, id: &str) -> Option<Seq> {
        let seq = *self.ids.get(id)?;
        match (self.too_old(), self.at(seq)) {
            (Some(cutoff), Some(e)) if e.stored_at_ms < cutoff => None,
            (_, Some(_)) => Some(seq),
            (_, None) => None,
        }
    }

    /// Events with `after < seq <= upto`, at most `limit`, when the window holds that whole
    /// range (else `None`: read the store). Not narrowed by topic: callers filter.
    pub fn read(&self, after: Seq, upto: Seq, limit: usize) -> Option<Vec<Arc<Event>>> {
        if after >= upto || limit == 0 {
            return Some(Vec::new());
        }
        let front = self.events.front()?.seq;
        let back = self.events.back()?.seq;
        if after.checked_add(1)? < front || upto > back {
            return None;
        }
        let start = usize::try_from(after + 1 - front).ok()?;
        let end = usize::try_from(upto - front + 1).ok()?;
        let end = end.min(start.saturating_add(limit));
        let cutoff = self.too_old();
        let page: Vec<Arc<Event>> = self.events.range(start..end).cloned().collect();
        // An expired event may be pruned from the store already: let the store answer.
        if let (Some(cutoff), Some(first)) = (cutoff, page.first()) {
            if first.stored_at_ms < cutoff {
                return None;
            }
        }
        Some(page)
    }

    /// How many events the window holds.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::event::{now_ms, NewEvent, Topic};

    fn ev(seq: Seq, data: &str, stored_at: i64) -> Arc<Event> {
        let new = NewEvent::new(vec![Topic::parse("t").unwrap()], data).unwrap();
        Arc::new(Event::stored(seq, new, stored_at))
    }

    fn run(from: Seq, to: Seq) -> Vec<Arc<Event>> {
        (from..=to).map(|s| ev(s, "x", now_ms())).collect()
    }

    #[test]
    fn serves_only_ranges_it_holds_whole() {
        let mut r = Recent::new(Retention::default());
        r.push(&run(10, 20));
        let seqs =
            |v: Option<Vec<Arc<Event>>>| v.map(|v| v.iter().map(|e| e.seq).collect::<Vec<_>>());
        assert_eq!(seqs(r.read(9, 12, 100)), Some(vec![10, 11, 12]));
        assert_eq!(seqs(r.read(15, 20, 2)), Some(vec![16, 17]));
        assert_eq!(seqs(r.read(8, 12, 100)), None, "seq 9 is not held");
        assert_eq!(seqs(r.read(15, 21, 100)), None, "seq 21 is not held");
        assert_eq!(seqs(r.read(20, 20, 100)), Some(vec![]));
        let id = r.events[3].id.to_string();
        assert_eq!(r.locate(&id), Some(13));
        assert_eq!(r.locate("nope"), None);
    }

    #[test]
    fn a_gap_restarts_the_window_and_bounds_hold() {
        let mut r = Recent::new(Retention {
            max_events: Some(5),
            max_age: None,
        });
        r.push(&run(1, 3));
        let old = r.events[0].id.to_string();
        r.push(&run(7, 9));
        assert_eq!(r.len(), 3, "a batch that does not follow starts over");
        assert_eq!(r.locate(&old), None);
        r.push(&run(8, 10));
        assert_eq!(r.len(), 4, "an overlapping batch adds only what is new");
        r.push(&run(11, 14));
        assert_eq!(r.len(), 5, "retention's count bounds the window");
        assert_eq!(r.events.front().unwrap().seq, 10);
        assert_eq!(r.ids.len(), 5);
    }

    #[test]
    fn events_past_the_retention_age_count_as_absent() {
        let mut r = Recent::new(Retention {
            max_events: None,
            max_age: Some(Duration::from_secs(60)),
        });
        let old = ev(1, "old", now_ms() - 120_000);
        r.push(&[old.clone(), ev(2, "new", now_ms())]);
        assert_eq!(r.locate(old.id.as_str()), None);
        assert!(
            r.read(0, 2, 10).is_none(),
            "an expired event must come from the store"
        );
        assert_eq!(r.read(1, 2, 10).map(|v| v.len()), Some(1));
    }

    #[test]
    fn large_events_are_bounded_by_bytes() {
        let mut r = Recent::new(Retention::default());
        let big = "x".repeat(1 << 20);
        let batch: Vec<_> = (1..=40).map(|s| ev(s, &big, now_ms())).collect();
        r.push(&batch);
        assert!(r.bytes <= RECENT_BYTES, "{} bytes held", r.bytes);
        assert_eq!(r.events.back().unwrap().seq, 40);
    }
}
