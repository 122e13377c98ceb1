//! The fan-out: which live subscriber gets which committed event.
//!
//! Subscribers with exact-topic selectors are indexed by topic, so an event costs a hash lookup
//! per topic plus work for the subscribers it matches. Pattern selectors (`*`, templates, URL
//! patterns) are grouped by what they select ([`PatternKey`]): each distinct pattern is evaluated
//! once per event, however many subscribers hold it, and only the subscribers of a group that
//! matched are visited. An event is encoded to its SSE frame once, on the first match, and the
//! same bytes are queued in every matching subscriber's bounded [`Mailbox`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use indexmap::{IndexMap, IndexSet};
use slab::Slab;

use crate::budget::QueueBudget;
use crate::event::{Event, EventId, EventType, Seq};
use crate::mailbox::{Closed, Mailbox, Pushed};
use crate::selector::{PatternKey, Selector};
use crate::sse::{self, Frame};

/// What one subscriber wants: its selectors, an optional type filter and, for private events,
/// the selectors it is authorized for.
#[derive(Debug, Clone)]
pub struct Interest {
    pub selectors: Vec<Selector>,
    /// When set, only events whose type is one of these.
    pub types: Option<Vec<EventType>>,
    /// Selectors whose private events this subscriber may receive; empty: public events only.
    pub private_selectors: Vec<Selector>,
    /// Who subscribes, for the presence API; `None` keeps the subscription out of listings.
    pub presence: Option<Presence>,
    /// When set, the subscription ends right after delivering an event of one of these types
    /// (a job's `completed` or `failed`, say).
    pub until: Option<Vec<EventType>>,
}

/// How a subscription shows in Mercure's active-subscriptions API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    /// The subscriber's id: its token's `sub`, or one the hub made.
    pub subscriber: Arc<str>,
    /// The token's `mercure.payload`, as JSON text.
    pub payload: Option<Arc<str>>,
    /// For a subscriber that used the 1.0 draft's `match` parameters, the matcher type of each
    /// of its selectors (`exact`, `urlpattern`), in order: its subscriptions are then named and
    /// described the draft's way. `None`: the stable line's `topic` form.
    pub match_types: Option<Arc<[&'static str]>>,
}

/// One active subscription, as listed by [`Fanout::subscriptions`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveSubscription {
    pub presence: Presence,
    /// The selectors as the subscriber wrote them.
    pub selectors: Vec<String>,
}

impl Interest {
    /// Public events on `selectors`, of any type.
    pub fn new(selectors: Vec<Selector>) -> Self {
        Self {
            selectors,
            types: None,
            private_selectors: Vec::new(),
            presence: None,
            until: None,
        }
    }

    /// Whether delivering `event` ends the subscription.
    pub fn ends_on(&self, event: &Event) -> bool {
        match (&self.until, &event.kind) {
            (Some(until), Some(kind)) => until.contains(kind),
            _ => false,
        }
    }

    /// Whether one of the selectors matches one of the event's topics.
    pub fn matches_topics(&self, event: &Event) -> bool {
        event
            .topics
            .iter()
            .any(|t| self.selectors.iter().any(|s| s.matches(t.as_str())))
    }

    /// Whether the event passes the type filter and the private-event rule.
    pub fn admits(&self, event: &Event) -> bool {
        if let Some(types) = &self.types {
            match &event.kind {
                Some(k) if types.contains(k) => {}
                _ => return false,
            }
        }
        self.may_see(event)
    }

    /// Whether the event is public or private to a topic this subscriber's token covers.
    pub fn may_see(&self, event: &Event) -> bool {
        !event.private
            || event
                .topics
                .iter()
                .any(|t| self.private_selectors.iter().any(|s| s.matches(t.as_str())))
    }

    /// The full rule: topic match, type filter and privacy.
    pub fn wants(&self, event: &Event) -> bool {
        self.admits(event) && self.matches_topics(event)
    }

    /// The store prefilter for history reads: exact topics when every selector is exact.
    pub fn scope(&self) -> crate::log::Scope {
        let exact: Option<Vec<String>> = self
            .selectors
            .iter()
            .map(|s| s.as_exact().map(str::to_owned))
            .collect();
        match exact {
            Some(topics) => crate::log::Scope::Topics(topics),
            None => crate::log::Scope::All,
        }
    }
}

struct Entry {
    mailbox: Arc<Mailbox>,
    interest: Arc<Interest>,
    /// The last event offered to this entry, so an event reaching it by two topics goes once.
    stamp: Seq,
}

/// The subscribers holding one pattern selector.
struct Group {
    /// The pattern, evaluated once per event for the whole group.
    selector: Selector,
    /// The subscribers holding it. A subscriber that lists the pattern twice is here once; the
    /// group's size is its reference count, and the group goes when it falls to zero.
    members: IndexSet<usize>,
}

#[derive(Default)]
struct Registry {
    subs: Slab<Entry>,
    exact: HashMap<Box<str>, IndexSet<usize>>,
    patterns: IndexMap<PatternKey, Group>,
    /// The newest event dispatched, its id, the event itself when private, and the newest
    /// public event's id (see [`Head`]).
    head: Seq,
    head_id: Option<EventId>,
    head_private: Option<Arc<Event>>,
    public: Option<(Seq, EventId)>,
    closed: bool,
}

impl Registry {
    fn head(&self) -> Head {
        Head {
            seq: self.head,
            id: self.head_id.clone(),
            private: self.head_private.clone(),
            public: self.public.clone(),
        }
    }
}

/// Counters the fan-out keeps.
#[derive(Debug, Default)]
pub struct FanoutCounters {
    pub delivered: AtomicU64,
    pub slow_disconnects: AtomicU64,
}

/// A registered subscriber's handle; unregister with [`Fanout::unregister`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubKey(usize);

/// Where the live stream of a newly registered subscriber starts.
#[derive(Debug, Clone, Default)]
pub struct Head {
    pub seq: Seq,
    pub id: Option<EventId>,
    /// The head event, when it is private.
    pub private: Option<Arc<Event>>,
    /// The newest public event at or before the head, when known: its position and id.
    pub public: Option<(Seq, EventId)>,
}

impl Head {
    /// The cursor to hand `interest` at the head, and its position: the head's own id, unless
    /// the head is a private event `interest` may not see (its id would reveal it, and a
    /// resume after it is answered like an unknown id); then the newest public event's, which
    /// lies before it, so resuming from it skips nothing. `(0, None)` when there is none.
    pub fn cursor_for(&self, interest: &Interest) -> (Seq, Option<&EventId>) {
        match (&self.private, &self.public) {
            (Some(event), Some((seq, id))) if !interest.may_see(event) => (*seq, Some(id)),
            (Some(event), None) if !interest.may_see(event) => (0, None),
            _ => (self.seq, self.id.as_ref()),
        }
    }
}

/// See the module documentation.
pub struct Fanout {
    registry: Mutex<Registry>,
    /// The head after each dispatch, for publishers that wait until their events are visible.
    dispatched: tokio::sync::watch::Sender<Seq>,
    pub counters: FanoutCounters,
    flush: Arc<Flush>,
    /// The hub-wide budget every registered mailbox is enrolled in.
    budget: Arc<QueueBudget>,
}

/// Mailboxes holding frames the fan-out queued but did not write yet.
///
/// A dispatch only queues each frame ([`Mailbox::hold`]) and hands the mailboxes it touched to
/// the flusher tasks, which write each one's frames in one go ([`Mailbox::release`]: straight
/// to the socket when attached, else a wake-up of the reader). When the hub keeps up, that is
/// one write per delivery right after the dispatch; when it falls behind (events arrive while
/// a flusher still writes), the frames of several events pile up and leave in one write per
/// subscriber, so the cost per delivery falls as the load rises instead of the backlog growing.
///
/// There is one flusher per worker thread of the runtime (a shard), and a mailbox always goes
/// to the same shard (by its address), so a large fan-out's writes run on every core while
/// each subscriber's frames still leave in order from one writer.
#[derive(Default)]
struct Flush {
    /// Created by the first hand-over inside a runtime, sized by its worker count.
    shards: std::sync::OnceLock<Box<[Arc<Shard>]>>,
    /// A spare list, so dispatches reuse their allocations.
    spare: Mutex<Vec<Arc<Mailbox>>>,
    /// Enforced after each round of writes, when the writes left it over its limit.
    budget: Option<Arc<QueueBudget>>,
}

/// One flusher's queue of mailboxes to write.
struct Shard {
    pending: Mutex<Vec<Arc<Mailbox>>>,
    /// A spare list, so the flusher reuses its allocation.
    spare: Mutex<Vec<Arc<Mailbox>>>,
    /// Shared with the flusher task, which holds the shard only weakly: when the fan-out goes,
    /// the shard's drop wakes the task and it ends.
    notify: Arc<tokio::sync::Notify>,
    budget: Option<Arc<QueueBudget>>,
}

impl Drop for Shard {
    fn drop(&mut self) {
        self.notify.notify_one();
    }
}

/// Mailboxes written between two yields of a flusher, so publishes and new subscribers are
/// served while a large fan-out is written.
const FLUSH_SLICE: usize = 128;

/// The most flushers one fan-out starts, whatever the runtime's worker count.
const MAX_SHARDS: usize = 64;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The shard of a mailbox, among `n`: a hash of its (stable) address.
fn shard_of(mailbox: &Arc<Mailbox>, n: usize) -> usize {
    let addr = Arc::as_ptr(mailbox) as usize as u64;
    ((addr.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % n as u64) as usize
}

impl Flush {
    fn take_list(&self) -> Vec<Arc<Mailbox>> {
        std::mem::take(&mut *lock(&self.spare))
    }

    /// The flushers, started on the current runtime the first time; `None` outside a runtime.
    fn shards(&self) -> Option<&[Arc<Shard>]> {
        if let Some(shards) = self.shards.get() {
            return Some(shards);
        }
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let shards = self.shards.get_or_init(|| {
            let n = runtime.metrics().num_workers().clamp(1, MAX_SHARDS);
            (0..n)
                .map(|_| {
                    let shard = Arc::new(Shard {
                        pending: Mutex::default(),
                        spare: Mutex::default(),
                        notify: Arc::default(),
                        budget: self.budget.clone(),
                    });
                    runtime.spawn(Shard::run(Arc::downgrade(&shard), shard.notify.clone()));
                    shard
                })
                .collect()
        });
        Some(shards)
    }

    /// Takes `held` (mailboxes to release) to the flushers, or, outside a tokio runtime,
    /// releases them at once.
    fn hand_over(&self, mut held: Vec<Arc<Mailbox>>, now: tokio::time::Instant) {
        if held.is_empty() {
            self.put_spare(held);
            return;
        }
        let Some(shards) = self.shards() else {
            for mailbox in held.drain(..) {
                mailbox.release(now);
            }
            self.put_spare(held);
            if let Some(budget) = &self.budget {
                enforce(budget);
            }
            return;
        };
        if let [shard] = shards {
            shard.take(&mut held);
            shard.notify.notify_one();
        } else {
            // Every shard's queue locked once, in a fixed order (a flusher holds one at a time).
            let mut queues: Vec<_> = shards.iter().map(|s| lock(&s.pending)).collect();
            let mut touched = 0u64;
            for mailbox in held.drain(..) {
                let i = shard_of(&mailbox, shards.len());
                queues[i].push(mailbox);
                touched |= 1 << i;
            }
            drop(queues);
            for (i, shard) in shards.iter().enumerate() {
                if touched & (1 << i) != 0 {
                    shard.notify.notify_one();
                }
            }
        }
        self.put_spare(held);
    }

    fn put_spare(&self, list: Vec<Arc<Mailbox>>) {
        put_spare(&self.spare, list);
    }
}

fn put_spare(spare: &Mutex<Vec<Arc<Mailbox>>>, mut list: Vec<Arc<Mailbox>>) {
    list.clear();
    let mut spare = lock(spare);
    if spare.capacity() < list.capacity() {
        *spare = list;
    }
}

/// Over the budget once the writes are done (what the sockets took is no longer counted), cuts
/// the largest backlogs.
fn enforce(budget: &QueueBudget) {
    if budget.is_over() {
        budget.enforce();
    }
}

impl Shard {
    /// Appends `held` to this shard's queue, leaving `held` empty.
    fn take(&self, held: &mut Vec<Arc<Mailbox>>) {
        let mut pending = lock(&self.pending);
        if pending.is_empty() {
            std::mem::swap(&mut *pending, held);
        } else {
            pending.append(held);
        }
    }

    /// A flusher task. It holds its shard only weakly and never the fan-out, so it ends when
    /// the fan-out is dropped (or with the runtime).
    async fn run(shard: std::sync::Weak<Self>, notify: Arc<tokio::sync::Notify>) {
        loop {
            let Some(this) = shard.upgrade() else { return };
            let mut list = {
                let mut pending = lock(&this.pending);
                let spare = std::mem::take(&mut *lock(&this.spare));
                std::mem::replace(&mut *pending, spare)
            };
            if list.is_empty() {
                put_spare(&this.spare, list);
                drop(this);
                notify.notified().await;
                continue;
            }
            let now = tokio::time::Instant::now();
            for (i, mailbox) in list.drain(..).enumerate() {
                if i > 0 && i % FLUSH_SLICE == 0 {
                    tokio::task::yield_now().await;
                }
                mailbox.release(now);
            }
            put_spare(&this.spare, list);
            if let Some(budget) = &this.budget {
                enforce(budget);
            }
        }
    }
}

impl Fanout {
    /// A fan-out whose live stream starts after `head`, without a hub-wide queue budget.
    pub fn new(head: Head) -> Self {
        Self::with_budget(head, QueueBudget::new(usize::MAX))
    }

    /// A fan-out whose live stream starts after `head`, whose subscribers' queues share `budget`.
    pub fn with_budget(head: Head, budget: Arc<QueueBudget>) -> Self {
        let registry = Registry {
            head: head.seq,
            head_id: head.id,
            head_private: head.private,
            public: head.public,
            ..Registry::default()
        };
        Self {
            dispatched: tokio::sync::watch::Sender::new(head.seq),
            registry: Mutex::new(registry),
            counters: FanoutCounters::default(),
            flush: Arc::new(Flush {
                shards: Default::default(),
                spare: Mutex::default(),
                budget: Some(budget.clone()),
            }),
            budget,
        }
    }

    /// The hub-wide budget of bytes queued to subscribers.
    pub fn budget(&self) -> &Arc<QueueBudget> {
        &self.budget
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // Every mutation of the registry completes before anything can panic, so a poisoned lock
        // still guards a consistent registry.
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a subscriber. It receives every event dispatched after the returned head.
    pub fn register(&self, interest: Arc<Interest>, mailbox: Arc<Mailbox>) -> (SubKey, Head) {
        let mut reg = self.lock();
        if reg.closed {
            mailbox.close(Closed::Shutdown);
        }
        self.budget.enroll(&mailbox);
        let key = reg.subs.vacant_key();
        for s in &interest.selectors {
            match s.pattern_key() {
                None => {
                    let topic = s.source();
                    match reg.exact.get_mut(topic) {
                        Some(set) => set.insert(key),
                        None => reg.exact.entry(topic.into()).or_default().insert(key),
                    };
                }
                Some(pattern) => {
                    reg.patterns
                        .entry(pattern)
                        .or_insert_with(|| Group {
                            selector: s.clone(),
                            members: IndexSet::new(),
                        })
                        .members
                        .insert(key);
                }
            }
        }
        reg.subs.insert(Entry {
            mailbox,
            interest,
            stamp: 0,
        });
        (SubKey(key), reg.head())
    }

    /// Removes a subscriber.
    pub fn unregister(&self, key: SubKey) {
        let mut reg = self.lock();
        let Some(entry) = reg.subs.try_remove(key.0) else {
            return;
        };
        for s in &entry.interest.selectors {
            match s.pattern_key() {
                None => {
                    let topic = s.source();
                    if let Some(set) = reg.exact.get_mut(topic) {
                        set.swap_remove(&key.0);
                        if set.is_empty() {
                            reg.exact.remove(topic);
                        }
                    }
                }
                Some(pattern) => {
                    if let Some(group) = reg.patterns.get_mut(&pattern) {
                        group.members.swap_remove(&key.0);
                        if group.members.is_empty() {
                            reg.patterns.swap_remove(&pattern);
                        }
                    }
                }
            }
        }
    }

    /// Hands committed events, in log order, to every matching subscriber. Events at or before
    /// the head are skipped, so a notice seen twice does nothing.
    pub fn dispatch(&self, events: &[Arc<Event>]) {
        let mut guard = self.lock();
        let reg = &mut *guard;
        let mut delivered = 0u64;
        let mut slow = 0u64;
        let now = tokio::time::Instant::now();
        let mut held = self.flush.take_list();
        if let Some(first) = events.iter().find(|e| e.seq > reg.head) {
            if reg.head > 0 && first.seq > reg.head + 1 {
                // The events between the head and this batch were pruned before they could be
                // dispatched (a pump far behind a tiny retention): every subscriber would skip
                // them silently. Cut them all before offering anything; each resumes by
                // Last-Event-ID, and its replay's gap check sends `tidings.reset`.
                let cut = reg
                    .subs
                    .iter()
                    .filter(|(_, entry)| entry.mailbox.cut_slow())
                    .count();
                slow += cut as u64;
                tracing::warn!(
                    after = reg.head,
                    next = first.seq,
                    cut,
                    "events were pruned before they were dispatched; subscribers cut"
                );
            }
        }
        for event in events {
            if event.seq <= reg.head {
                continue;
            }
            reg.head = event.seq;
            reg.head_id = Some(event.id.clone());
            if event.private {
                reg.head_private = Some(event.clone());
            } else {
                reg.head_private = None;
                reg.public = Some((event.seq, event.id.clone()));
            }
            let mut frame: Option<Frame> = None;
            // Called only for subscribers one of whose selectors matched one of the topics.
            let mut offer = |entry: &mut Entry| {
                if entry.stamp == event.seq {
                    return;
                }
                entry.stamp = event.seq;
                if !entry.interest.admits(event) {
                    return;
                }
                let frame = frame.get_or_insert_with(|| sse::encode_frame(event));
                let (pushed, first) = entry.mailbox.hold(event.seq, frame);
                if first {
                    held.push(entry.mailbox.clone());
                }
                match pushed {
                    Pushed::Queued if entry.interest.ends_on(event) => {
                        delivered += 1;
                        entry.mailbox.close(Closed::Finished);
                    }
                    Pushed::Queued => delivered += 1,
                    Pushed::Overflowed => slow += 1,
                    Pushed::AlreadyClosed => {}
                }
            };
            for topic in event.topics.iter() {
                if let Some(keys) = reg.exact.get(topic.as_str()) {
                    for &key in keys {
                        if let Some(entry) = reg.subs.get_mut(key) {
                            offer(entry);
                        }
                    }
                }
            }
            for group in reg.patterns.values() {
                let selector = &group.selector;
                if !event.topics.iter().any(|t| selector.matches(t.as_str())) {
                    continue;
                }
                for &key in &group.members {
                    if let Some(entry) = reg.subs.get_mut(key) {
                        offer(entry);
                    }
                }
            }
        }
        let head = reg.head;
        drop(guard);
        self.flush.hand_over(held, now);
        self.dispatched.send_if_modified(|h| {
            let moved = *h < head;
            *h = head;
            moved
        });
        self.counters
            .delivered
            .fetch_add(delivered, Ordering::Relaxed);
        if slow > 0 {
            self.counters
                .slow_disconnects
                .fetch_add(slow, Ordering::Relaxed);
            tracing::info!(count = slow, "cut off subscribers that fell behind");
        }
    }

    /// Completes once every event up to `seq` has been dispatched.
    pub async fn dispatched(&self, seq: Seq) {
        let mut rx = self.dispatched.subscribe();
        // The sender lives as long as `self`, so this cannot fail while we borrow it.
        let _ = rx.wait_for(|h| *h >= seq).await;
    }

    /// The newest dispatched position.
    pub fn head(&self) -> Head {
        self.lock().head()
    }

    /// Every subscription that has a presence record.
    pub fn subscriptions(&self) -> Vec<ActiveSubscription> {
        let reg = self.lock();
        reg.subs
            .iter()
            .filter_map(|(_, e)| {
                let presence = e.interest.presence.clone()?;
                Some(ActiveSubscription {
                    presence,
                    selectors: e
                        .interest
                        .selectors
                        .iter()
                        .map(|s| s.source().to_owned())
                        .collect(),
                })
            })
            .collect()
    }

    /// How many subscribers, and how many distinct exact topics they watch.
    pub fn sizes(&self) -> (usize, usize) {
        let reg = self.lock();
        (reg.subs.len(), reg.exact.len())
    }

    /// How many distinct pattern selectors the subscribers hold: what each event is matched
    /// against besides the exact-topic index.
    pub fn pattern_groups(&self) -> usize {
        self.lock().patterns.len()
    }

    /// Ends every stream (they drain what is queued first) and refuses new ones.
    pub fn close(&self) {
        let mut reg = self.lock();
        reg.closed = true;
        for (_, entry) in reg.subs.iter() {
            entry.mailbox.close(Closed::Shutdown);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventId, EventType, Topic};
    use crate::mailbox::Bounds;
    use std::task::{Context, Poll, Waker};

    fn ev(seq: Seq, topics: &[&str], private: bool) -> Arc<Event> {
        Arc::new(Event {
            seq,
            id: EventId::parse(&format!("e{seq}")).unwrap(),
            topics: topics.iter().map(|t| Topic::parse(t).unwrap()).collect(),
            kind: None,
            data: "x".into(),
            retry: None,
            private,
            stored_at_ms: 0,
        })
    }

    fn sub(f: &Fanout, selectors: &[&str]) -> Arc<Mailbox> {
        let interest = Interest::new(
            selectors
                .iter()
                .map(|s| Selector::parse_topic(s).unwrap())
                .collect(),
        );
        let mb = Arc::new(Mailbox::new(Bounds {
            frames: 4,
            bytes: 1 << 20,
        }));
        f.register(Arc::new(interest), mb.clone());
        mb
    }

    fn seqs(mb: &Mailbox) -> Vec<String> {
        match mb.poll_drain(&mut Context::from_waker(Waker::noop()), 0) {
            Poll::Ready(Ok(d)) => String::from_utf8(d.bytes.to_vec())
                .unwrap()
                .lines()
                .filter_map(|l| l.strip_prefix("id: ").map(str::to_owned))
                .collect(),
            _ => vec![],
        }
    }

    #[test]
    fn routes_by_exact_topic_and_pattern_once_each() {
        let f = Fanout::new(Head::default());
        let a = sub(&f, &["a"]);
        let both = sub(&f, &["a", "b", "*"]);
        let tpl = sub(&f, &["jobs/{id}"]);
        f.dispatch(&[
            ev(1, &["a", "b"], false),
            ev(2, &["jobs/1"], false),
            ev(3, &["c"], false),
        ]);
        assert_eq!(seqs(&a), ["e1"]);
        assert_eq!(seqs(&both), ["e1", "e2", "e3"]);
        assert_eq!(seqs(&tpl), ["e2"]);
    }

    #[test]
    fn private_events_need_authorization() {
        let f = Fanout::new(Head::default());
        let anon = sub(&f, &["a"]);
        f.dispatch(&[ev(1, &["a"], true), ev(2, &["a"], false)]);
        assert_eq!(seqs(&anon), ["e2"]);
    }

    #[test]
    fn replayed_notices_are_ignored_and_unregister_stops_delivery() {
        let f = Fanout::new(Head::default());
        let mb = Arc::new(Mailbox::new(Bounds {
            frames: 4,
            bytes: 1 << 20,
        }));
        let interest = Arc::new(Interest::new(vec![Selector::parse_topic("a").unwrap()]));
        let (key, head) = f.register(interest, mb.clone());
        assert_eq!(head.seq, 0);
        f.dispatch(&[ev(1, &["a"], false)]);
        f.dispatch(&[ev(1, &["a"], false)]);
        assert_eq!(seqs(&mb), ["e1"]);
        f.unregister(key);
        f.dispatch(&[ev(2, &["a"], false)]);
        assert!(seqs(&mb).is_empty());
        assert_eq!(f.sizes(), (0, 0));
        assert_eq!(f.head().seq, 2);
    }

    fn sub_with(f: &Fanout, interest: Interest) -> (SubKey, Arc<Mailbox>) {
        let mb = Arc::new(Mailbox::new(Bounds {
            frames: 16,
            bytes: 1 << 20,
        }));
        let (key, _) = f.register(Arc::new(interest), mb.clone());
        (key, mb)
    }

    fn interest(selectors: &[&str]) -> Interest {
        Interest::new(
            selectors
                .iter()
                .map(|s| Selector::parse_topic(s).unwrap())
                .collect(),
        )
    }

    #[test]
    fn one_pattern_group_serves_subscribers_with_different_interests() {
        let f = Fanout::new(Head::default());
        let (_, public) = sub_with(&f, interest(&["jobs/{id}"]));
        let mut private = interest(&["jobs/{id}"]);
        private.private_selectors = vec![Selector::parse_topic("jobs/{id}").unwrap()];
        let (_, private) = sub_with(&f, private);
        let mut done = interest(&["jobs/{id}"]);
        done.types = Some(vec![EventType::parse("done").unwrap()]);
        let (_, done) = sub_with(&f, done);
        // Reaches the group by two selectors and by an exact topic too: still once.
        let (_, twice) = sub_with(&f, interest(&["jobs/{id}", "jobs/{id}", "jobs/1", "*"]));
        assert_eq!(f.pattern_groups(), 2, "jobs/{{id}} and *");

        let mut typed = (*ev(3, &["jobs/3"], false)).clone();
        typed.kind = Some(EventType::parse("done").unwrap());
        f.dispatch(&[
            ev(1, &["jobs/1", "jobs/2"], false),
            ev(2, &["jobs/2"], true),
            Arc::new(typed),
            ev(4, &["other"], false),
        ]);
        assert_eq!(seqs(&public), ["e1", "e3"]);
        assert_eq!(seqs(&private), ["e1", "e2", "e3"]);
        assert_eq!(seqs(&done), ["e3"]);
        assert_eq!(seqs(&twice), ["e1", "e3", "e4"]);
    }

    #[test]
    fn unregistering_leaves_a_group_when_its_last_holder_goes() {
        let f = Fanout::new(Head::default());
        let (a, mb_a) = sub_with(&f, interest(&["jobs/{id}", "jobs/{id}"]));
        let (b, mb_b) = sub_with(&f, interest(&["jobs/{id}", "*"]));
        let (c, mb_c) = sub_with(&f, interest(&["*"]));
        assert_eq!(f.pattern_groups(), 2);
        f.unregister(a);
        assert_eq!(f.pattern_groups(), 2, "b still holds jobs/{{id}}");
        f.dispatch(&[ev(1, &["jobs/1"], false)]);
        assert!(seqs(&mb_a).is_empty());
        assert_eq!(seqs(&mb_b), ["e1"]);
        assert_eq!(seqs(&mb_c), ["e1"]);
        f.unregister(b);
        assert_eq!(f.pattern_groups(), 1, "only * is left");
        f.dispatch(&[ev(2, &["jobs/2"], false)]);
        assert!(seqs(&mb_b).is_empty());
        assert_eq!(seqs(&mb_c), ["e2"]);
        f.unregister(c);
        f.unregister(c);
        assert_eq!(f.pattern_groups(), 0);
        assert_eq!(f.sizes(), (0, 0));
    }

    #[test]
    fn a_pattern_is_evaluated_once_per_event_for_its_whole_group() {
        let f = Fanout::new(Head::default());
        let subs: Vec<_> = (0..1000)
            .map(|_| sub_with(&f, interest(&["jobs/{id}"])).1)
            .collect();
        let (_, other) = sub_with(&f, interest(&["orders/{id}"]));
        assert_eq!(f.pattern_groups(), 2);
        f.dispatch(&[ev(1, &["jobs/1"], false), ev(2, &["orders/1"], false)]);
        assert!(subs.iter().all(|mb| seqs(mb) == ["e1"]));
        assert_eq!(seqs(&other), ["e2"]);
        assert_eq!(f.counters.delivered.load(Ordering::Relaxed), 1001);
    }

    #[test]
    fn a_batch_that_skips_pruned_events_cuts_every_subscriber_first() {
        let f = Fanout::new(Head::default());
        let a = sub(&f, &["a"]);
        let b = sub(&f, &["b"]);
        f.dispatch(&[ev(1, &["a"], false)]);
        assert_eq!(a.is_closed(), None);
        // 2..=4 were pruned before the pump read them: nobody may go on as if they never were.
        f.dispatch(&[ev(5, &["a"], false)]);
        assert_eq!(a.is_closed(), Some(Closed::Slow));
        assert_eq!(b.is_closed(), Some(Closed::Slow));
        // One that registers after the jump is not cut.
        let c = sub(&f, &["a"]);
        f.dispatch(&[ev(6, &["a"], false)]);
        assert_eq!(c.is_closed(), None);
        assert_eq!(seqs(&c), ["e6"]);
    }

    #[test]
    fn a_private_head_hands_others_the_newest_public_cursor() {
        let f = Fanout::new(Head::default());
        f.dispatch(&[ev(1, &["news"], false), ev(2, &["user/42"], true)]);
        let head = f.head();
        let anonymous = interest(&["news"]);
        assert_eq!(head.cursor_for(&anonymous).0, 1);
        assert_eq!(head.cursor_for(&anonymous).1.unwrap().as_str(), "e1");
        let mut owner = interest(&["user/42"]);
        owner.private_selectors = vec![Selector::parse_topic("user/42").unwrap()];
        assert_eq!(head.cursor_for(&owner).1.unwrap().as_str(), "e2");
        f.dispatch(&[ev(3, &["news"], false)]);
        assert_eq!(f.head().cursor_for(&anonymous).1.unwrap().as_str(), "e3");
    }

    /// A socket that takes everything and counts its writes.
    #[derive(Default)]
    struct CountingWire(std::sync::Mutex<(usize, Vec<u8>)>);

    impl crate::mailbox::Wire for CountingWire {
        fn try_write_vectored(&self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
            let mut s = self.0.lock().unwrap();
            s.0 += 1;
            let mut n = 0;
            for b in bufs {
                s.1.extend_from_slice(b);
                n += b.len();
            }
            Ok(n)
        }
        fn poll_write_ready(&self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn attached_subscribers_get_one_write_per_event_or_per_batch() {
        let f = Fanout::new(Head::default());
        let mb = sub(&f, &["a"]);
        let wire = Arc::new(CountingWire::default());
        mb.attach(wire.clone(), 0, tokio::time::Instant::now());
        f.dispatch(&[ev(1, &["a"], false)]);
        f.dispatch(&[ev(2, &["b"], false)]);
        f.dispatch(&[
            ev(3, &["a"], false),
            ev(4, &["a"], false),
            ev(5, &["a"], false),
        ]);
        let (writes, bytes) = std::mem::take(&mut *wire.0.lock().unwrap());
        assert_eq!(writes, 2, "one write for the event, one for the batch");
        let mut want = Vec::new();
        for s in [1, 3, 4, 5] {
            want.extend_from_slice(sse::encode_frame(&ev(s, &["a"], false)).wire());
        }
        assert_eq!(bytes, want);
        assert!(mb.is_empty());
        assert_eq!(f.counters.delivered.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn a_slow_subscriber_is_cut_without_touching_others() {
        let f = Fanout::new(Head::default());
        let slow = sub(&f, &["a"]);
        let fast = sub(&f, &["a"]);
        let mut got = Vec::new();
        for s in 1..=10 {
            f.dispatch(&[ev(s, &["a"], false)]);
            got.extend(seqs(&fast));
        }
        assert_eq!(got.len(), 10);
        assert_eq!(f.counters.slow_disconnects.load(Ordering::Relaxed), 1);
        assert!(slow.is_empty(), "a cut mailbox frees its frames");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn flushers_per_worker_keep_each_subscribers_order() {
        let f = Fanout::new(Head::default());
        let wires: Vec<_> = (0..400)
            .map(|_| {
                let mb = sub(&f, &["a"]);
                let wire = Arc::new(CountingWire::default());
                mb.attach(wire.clone(), 0, tokio::time::Instant::now());
                (mb, wire)
            })
            .collect();
        let mut want = Vec::new();
        for s in 1..=3 {
            f.dispatch(&[ev(s, &["a"], false)]);
            want.extend_from_slice(sse::encode_frame(&ev(s, &["a"], false)).wire());
        }
        let shards = f.flush.shards.get().expect("started in a runtime");
        assert_eq!(shards.len(), 4, "one flusher per worker");
        let mut per_shard = [0usize; 4];
        for (mb, _) in &wires {
            per_shard[shard_of(mb, 4)] += 1;
        }
        assert!(per_shard.iter().all(|&n| n > 0), "{per_shard:?}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        for (i, (_, wire)) in wires.iter().enumerate() {
            loop {
                let got = wire.0.lock().unwrap().1.clone();
                if got.len() >= want.len() || std::time::Instant::now() > deadline {
                    assert_eq!(got, want, "subscriber {i}: every frame, in order");
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
    }
}
