//! The hub: ties the durable log to the live fan-out.
//!
//! Publish: `EventLog::append` (durable on return). A pump task follows the log's commit notices
//! and dispatches committed events to the fan-out in log order. Subscribe: a [`Subscription`]
//! replays history from the log, registers with the fan-out, and then streams live frames; any
//! event it could see twice at that seam is dropped by position, so there is no gap and no
//! duplicate. Polling uses the same pieces and answers a page of events.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_core::Stream;
use thiserror::Error;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::{Instant, Sleep};

use crate::event::{Event, EventId, NewEvent, Seq};
use crate::fanout::{Fanout, Head, Interest, SubKey};
use crate::log::{EventLog, LogError, LogStats, Retention, Scope};
use crate::mailbox::{Bounds, Closed, Mailbox};
use crate::metrics::{Metrics, Transport};
use crate::recent::Recent;
use crate::sse;

/// The reserved value of Last-Event-ID that asks for all retained history.
pub const EARLIEST: &str = "earliest";

/// The SSE event type of the notice sent when a Last-Event-ID is unknown or already pruned.
pub const RESET_EVENT: &str = "tidings.reset";

/// How long a publish waits for its events to reach the fan-out before answering anyway.
const VISIBILITY_WAIT: Duration = Duration::from_secs(2);

/// Most topics a late-joiner replay (`latest`) covers: the most recently active ones.
const LATEST_MAX: usize = 1000;
/// How far back `latest` looks for a topic whose newest event the subscriber may not see.
const LATEST_SCAN: usize = 10_000;

/// About how many bytes of event data one poll answer holds (at least one event): a poll with
/// `limit=1000` over 1 MiB events answers a few of them and `more`, not a gigabyte.
const POLL_BYTES: usize = 4 << 20;

/// Events read from the log per history page.
const PAGE: usize = 512;
/// About how many bytes of event data one history read may bring into memory: events may each be
/// as large as the body limit, so reads are sized by the events seen so far (see [`Pager`]).
const PAGE_BYTES: usize = 4 << 20;
/// Events in a history read before any size is known (each may be as large as the body limit).
const FIRST_PAGE: usize = 4;

/// Sizes successive history reads so a page holds about [`PAGE_BYTES`] of data: a replay of
/// 1 MiB events reads 4 at a time, one of 100-byte events [`PAGE`] at a time. `short` tells
/// whether a read returned less than it asked for (the end of the range).
#[derive(Debug, Clone, Copy)]
struct Pager {
    limit: usize,
    /// About how many bytes of event data a page may hold.
    bytes: usize,
}

impl Pager {
    fn new() -> Self {
        Self {
            limit: FIRST_PAGE,
            bytes: PAGE_BYTES,
        }
    }

    /// Pages of about `bytes` (never less than one event). The first page is one event: its
    /// size is unknown, and a subscriber's page must not hold several body-limit events.
    fn with_bytes(bytes: usize) -> Self {
        Self {
            limit: 1,
            bytes: bytes.max(1),
        }
    }

    fn limit(&self) -> usize {
        self.limit
    }

    /// Records a page just read; returns whether it was short (the range is exhausted).
    fn saw(&mut self, batch: &[Arc<Event>]) -> bool {
        let short = batch.len() < self.limit;
        if !batch.is_empty() {
            let bytes: usize = batch.iter().map(|e| e.approx_size()).sum();
            let each = (bytes / batch.len()).max(1);
            self.limit = (self.bytes / each).clamp(1, PAGE);
        }
        short
    }
}

/// Tunables of a hub.
#[derive(Debug, Clone)]
pub struct HubOptions {
    pub heartbeat: Duration,
    pub mailbox: Bounds,
    /// Hub-wide bound on bytes queued to subscribers ([`crate::budget`]); `usize::MAX`: none.
    pub queue_budget: usize,
    pub retention: Retention,
    pub prune_every: Duration,
}

impl Default for HubOptions {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(15),
            mailbox: Bounds {
                frames: 4096,
                bytes: 2 << 20,
            },
            queue_budget: usize::MAX,
            retention: Retention::default(),
            prune_every: Duration::from_secs(60),
        }
    }
}

/// Where a subscription or poll starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Live events only, from now.
    Live,
    /// Everything retained.
    Earliest,
    /// Everything after this event id.
    After(String),
    /// The newest retained event of each matching topic, then live.
    Latest,
}

impl Start {
    /// `earliest` or an event id.
    pub fn from_last_event_id(id: &str) -> Self {
        if id == EARLIEST {
            Self::Earliest
        } else {
            Self::After(id.to_owned())
        }
    }
}

/// Errors of hub operations.
#[derive(Debug, Error)]
pub enum HubError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("the hub is shutting down")]
    ShuttingDown,
}

/// Counters for `/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HubStats {
    pub subscribers: usize,
    pub subscribed_topics: usize,
    pub published: u64,
    pub delivered: u64,
    pub slow_disconnects: u64,
    pub log: LogStats,
}

/// A resolved starting point: the position to read after, and what to tell the client.
struct Cursor {
    after: Seq,
    /// The id just before the first event that will be sent (`earliest` when none).
    start_id: String,
    /// The position of `start_id` (0 for `earliest`).
    start_pos: Seq,
    /// Set when the requested id is unknown or pruned.
    unknown: Option<String>,
}

/// See the module documentation.
pub struct Hub {
    log: Arc<dyn EventLog>,
    fanout: Arc<Fanout>,
    /// The newest dispatched events, for resumes that need not read the store.
    recent: Arc<Mutex<Recent>>,
    options: HubOptions,
    metrics: Arc<Metrics>,
    shutdown: tokio::sync::watch::Sender<bool>,
    /// While true the pump dispatches nothing (see [`Hub::pause_dispatch`]).
    paused: tokio::sync::watch::Sender<bool>,
    /// Where the fan-out stood when a readiness check first found it behind the log.
    behind: Mutex<Option<(Seq, Instant)>>,
}

impl Hub {
    /// Starts a hub on `log`: spawns the pump (and the pruner, when retention is set).
    pub async fn start(log: Arc<dyn EventLog>, options: HubOptions) -> Result<Arc<Self>, HubError> {
        // Subscribe to commits before reading the head, so no commit falls between the two.
        let commits = log.commits();
        let stats = log.stats().await?;
        let head = match &stats.newest {
            Some((seq, id)) => start_head(&*log, *seq, id).await?,
            None => Head::default(),
        };
        let (shutdown, _) = tokio::sync::watch::channel(false);
        let (paused, _) = tokio::sync::watch::channel(false);
        let hub = Arc::new(Self {
            log,
            fanout: Arc::new(Fanout::with_budget(
                head,
                crate::budget::QueueBudget::new(options.queue_budget),
            )),
            recent: Arc::new(Mutex::new(Recent::new(options.retention))),
            options,
            metrics: Arc::default(),
            shutdown,
            paused,
            behind: Mutex::new(None),
        });
        tokio::spawn(pump(
            Pump {
                log: hub.log.clone(),
                fanout: hub.fanout.clone(),
                recent: hub.recent.clone(),
                metrics: hub.metrics.clone(),
                paused: hub.paused.subscribe(),
            },
            commits,
            hub.shutdown.subscribe(),
        ));
        if hub.options.retention != Retention::default() {
            tokio::spawn(prune_loop(
                hub.log.clone(),
                hub.options.retention,
                hub.options.prune_every,
                hub.shutdown.subscribe(),
            ));
        }
        Ok(hub)
    }

    /// Appends `batch` atomically; answers once it is durable.
    pub async fn publish(&self, batch: Vec<NewEvent>) -> Result<Vec<Arc<Event>>, HubError> {
        if *self.shutdown.borrow() {
            return Err(HubError::ShuttingDown);
        }
        let started = Instant::now();
        let events = match self.log.append(batch).await {
            Ok(events) => events,
            Err(e) => {
                if let LogError::DuplicateId(_) = e {
                    Metrics::add(&self.metrics.publish_duplicates, 1);
                } else {
                    Metrics::add(&self.metrics.publish_failures, 1);
                    Metrics::add(&self.metrics.store_errors, 1);
                }
                return Err(e.into());
            }
        };
        self.metrics.publish_durable.observe(started.elapsed());
        Metrics::add(&self.metrics.published, events.len() as u64);
        // Read-your-writes: answer once the events are visible to new subscriptions and polls
        // too. They are durable already, so a stalled pump delays the answer only so long.
        if let Some(last) = events.last() {
            let visible = self.fanout.dispatched(last.seq);
            // A hub shutting down dispatches nothing more: answer at once (the events are
            // durable; subscribers get them when they resume).
            let mut shutdown = self.shutdown.subscribe();
            let stopping = shutdown.wait_for(|stop| *stop);
            let waited = tokio::select! {
                r = tokio::time::timeout(VISIBILITY_WAIT, visible) => r.is_ok(),
                _ = stopping => true,
            };
            if !waited {
                tracing::warn!(seq = last.seq, "published events not dispatched in time");
            }
        }
        Ok(events)
    }

    /// Appends `batch` idempotently: an event whose publisher id is already in the log with the
    /// same content (topics, type, data, retry, private) is not stored again and comes back as
    /// the stored event marked `true` (a duplicate); the same id with other content fails with
    /// [`LogError::DuplicateId`], as does an id given twice in the batch. The rest of the batch
    /// is appended atomically as by [`Hub::publish`]. The store's unique id is the arbiter, so
    /// this holds on every store and between hub nodes racing on one id: with an id,
    /// publishing is exactly-once.
    pub async fn publish_idempotent(
        &self,
        batch: Vec<NewEvent>,
    ) -> Result<Vec<(Arc<Event>, bool)>, HubError> {
        if batch.iter().all(|e| e.id.is_none()) {
            let events = self.publish(batch).await?;
            return Ok(events.into_iter().map(|e| (e, false)).collect());
        }
        let mut answers: Vec<Option<(Arc<Event>, bool)>> = vec![None; batch.len()];
        let mut pending: Vec<(usize, NewEvent)> = batch.into_iter().enumerate().collect();
        // Each round settles at least one duplicate or ends; a batch is bounded in size.
        loop {
            if pending.is_empty() {
                break;
            }
            let attempt: Vec<NewEvent> = pending.iter().map(|(_, e)| e.clone()).collect();
            match self.publish(attempt).await {
                Ok(events) => {
                    for ((slot, _), event) in pending.drain(..).zip(events) {
                        answers[slot] = Some((event, false));
                    }
                    break;
                }
                Err(HubError::Log(LogError::DuplicateId(id))) => {
                    // The one event of the batch carrying the id (an id given twice conflicts).
                    let mut carrying = (0..pending.len())
                        .filter(|&i| pending[i].1.id.as_ref().is_some_and(|e| e.as_str() == id));
                    let (Some(at), None) = (carrying.next(), carrying.next()) else {
                        return Err(LogError::DuplicateId(id).into());
                    };
                    match self.stored_event(&id).await? {
                        Some(stored) if same_event(&stored, &pending[at].1) => {
                            let (slot, _) = pending.remove(at);
                            answers[slot] = Some((stored, true));
                        }
                        _ => return Err(LogError::DuplicateId(id).into()),
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(answers.into_iter().flatten().collect())
    }

    /// The retained event with this publisher id, private or not.
    async fn stored_event(&self, id: &str) -> Result<Option<Arc<Event>>, LogError> {
        match self.locate(id).await? {
            Some(seq) => Ok(self.event_at(seq).await?.filter(|e| e.id.as_str() == id)),
            None => Ok(None),
        }
    }

    /// Ends every stream (after what is queued) and stops the background tasks.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
        self.fanout.close();
    }

    /// Every active subscription with a presence record (see [`Interest::presence`]).
    pub fn subscriptions(&self) -> Vec<crate::fanout::ActiveSubscription> {
        self.fanout.subscriptions()
    }

    /// The id of the newest dispatched event, or `earliest`.
    pub fn head_id(&self) -> String {
        self.fanout
            .head()
            .id
            .map_or_else(|| EARLIEST.to_owned(), |id| id.to_string())
    }

    /// The store's own view of its links (see [`EventLog::health`]).
    pub fn store_health(&self) -> Result<(), String> {
        self.log.health()
    }

    /// The hub's metrics (see [`crate::metrics`]).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Bytes queued to all subscribers now, and the hub-wide bound on them.
    pub fn queued_bytes(&self) -> (usize, usize) {
        let budget = self.fanout.budget();
        (budget.used(), budget.limit())
    }

    /// Deliveries to this node's subscribers since it started (a counter: no store involved).
    pub fn delivered(&self) -> u64 {
        self.fanout.counters.delivered.load(Ordering::Relaxed)
    }

    /// Subscribers cut for being slow: by their own queue bound, and by the hub-wide budget.
    pub fn slow_cuts(&self) -> (u64, u64) {
        (
            self.fanout
                .counters
                .slow_disconnects
                .load(Ordering::Relaxed),
            self.fanout.budget().cuts(),
        )
    }

    /// The position of the newest event dispatched to this node's subscribers.
    pub fn dispatched_seq(&self) -> Seq {
        self.fanout.head().seq
    }

    /// The position of the newest event in the log (every node's commits), read from the store.
    pub async fn log_head(&self) -> Result<Seq, HubError> {
        match self.log.stats().await {
            Ok(stats) => Ok(stats.newest.map_or(0, |(seq, _)| seq)),
            Err(e) => {
                Metrics::add(&self.metrics.store_errors, 1);
                Err(e.into())
            }
        }
    }

    /// How far this node's fan-out lags the log: `(events behind, for how long it has not
    /// moved while behind)`. The duration is measured across calls (readiness probes): the
    /// first call that finds the fan-out behind starts the clock, any progress restarts it, and
    /// catching up clears it.
    pub async fn lag(&self) -> Result<(u64, Duration), HubError> {
        let head = self.log_head().await?;
        let dispatched = self.dispatched_seq();
        let mut behind = self.behind.lock().unwrap_or_else(|p| p.into_inner());
        if head <= dispatched {
            *behind = None;
            return Ok((0, Duration::ZERO));
        }
        let now = Instant::now();
        let since = match *behind {
            Some((at, since)) if at == dispatched => since,
            _ => {
                *behind = Some((dispatched, now));
                now
            }
        };
        Ok((head - dispatched, now - since))
    }

    /// Stops (`true`) or restarts (`false`) the dispatch of committed events to this node's
    /// subscribers; publishes still commit. What a silent stall looks like from outside, for
    /// tests of readiness and for an operator draining a node.
    pub fn pause_dispatch(&self, paused: bool) {
        self.paused.send_replace(paused);
    }

    /// Counters and log bounds.
    pub async fn stats(&self) -> Result<HubStats, HubError> {
        let (subscribers, exact_topics) = self.fanout.sizes();
        Ok(HubStats {
            subscribers,
            // Exact topics and distinct patterns (`jobs/{id}`): what subscribers watch.
            subscribed_topics: exact_topics + self.fanout.pattern_groups(),
            published: Metrics::get(&self.metrics.published),
            delivered: self.delivered(),
            slow_disconnects: self
                .fanout
                .counters
                .slow_disconnects
                .load(Ordering::Relaxed)
                + self.fanout.budget().cuts(),
            log: self.log.stats().await?,
        })
    }

    async fn resolve(
        &self,
        start: &Start,
        head: &Head,
        interest: &Interest,
    ) -> Result<Cursor, HubError> {
        let (start_pos, start_id) = head.cursor_for(interest);
        let live = || Cursor {
            after: head.seq,
            start_id: start_id.map_or_else(|| EARLIEST.to_owned(), ToString::to_string),
            start_pos,
            unknown: None,
        };
        Ok(match start {
            Start::Live | Start::Latest => live(),
            Start::Earliest => Cursor {
                after: 0,
                start_id: EARLIEST.to_owned(),
                start_pos: 0,
                unknown: None,
            },
            Start::After(id) => match self.locate_visible(id, interest).await? {
                Some(seq) => {
                    Metrics::add(&self.metrics.resumes, 1);
                    Cursor {
                        after: seq,
                        start_id: id.clone(),
                        start_pos: seq,
                        unknown: None,
                    }
                }
                // As the Mercure spec asks: replay nothing, report `earliest`; and tell the
                // client, which the spec leaves implicit.
                None => {
                    Metrics::add(&self.metrics.resets, 1);
                    Cursor {
                        start_id: EARLIEST.to_owned(),
                        unknown: Some(id.clone()),
                        ..live()
                    }
                }
            },
        })
    }

    /// Where the event with this id is, when `interest` may see it: a private event the caller
    /// may not receive is answered exactly like an unknown id, so a resume cannot probe for
    /// private ids.
    async fn locate_visible(&self, id: &str, interest: &Interest) -> Result<Option<Seq>, LogError> {
        let Some(seq) = self.locate(id).await? else {
            return Ok(None);
        };
        // Pruned between the two reads: as unknown as it gets.
        let event = self.event_at(seq).await?;
        Ok(event.filter(|e| interest.may_see(e)).map(|_| seq))
    }

    /// Where the event with this id is: in the recent window, else in the store.
    async fn locate(&self, id: &str) -> Result<Option<Seq>, LogError> {
        // An id no publisher could have given (a control character, say) is unknown without
        // asking the store (PostgreSQL refuses a NUL in a query parameter outright).
        if id != EARLIEST && crate::event::EventId::parse(id).is_err() {
            return Ok(None);
        }
        if let Some(seq) = lock(&self.recent).locate(id) {
            return Ok(Some(seq));
        }
        self.log.locate(id).await
    }

    /// For `latest`: the seqs of the newest event, at or before `upto`, of each topic `interest`
    /// selects, among the events it may receive (type filter and private rule applied), in log
    /// order. Only seqs are kept: each candidate is loaded, judged and dropped, so a pattern over
    /// many topics with large events costs one event of memory here, and the events are loaded
    /// again a page at a time as they are sent.
    async fn latest_seqs_visible(
        &self,
        interest: &Interest,
        upto: Seq,
    ) -> Result<Vec<Seq>, LogError> {
        let mut newest = self.log.latest_seqs(&interest.scope(), upto).await?;
        // The store gives the newest seq of each topic; walking them newest first, the first
        // event carrying a topic is that topic's newest. Only the most recent topics are kept,
        // so `topic=*&latest=1` on a huge log stays bounded.
        newest.sort_unstable_by_key(|s| std::cmp::Reverse(*s));
        newest.truncate(LATEST_MAX);
        let mut resolved = std::collections::HashSet::new();
        let mut found = std::collections::BTreeSet::new();
        for seq in newest {
            // Pruned since the index was read: that topic has nothing left to show.
            let Some(event) = self.event_at(seq).await? else {
                continue;
            };
            for topic in event.topics.iter() {
                let selected = interest.selectors.iter().any(|s| s.matches(topic.as_str()));
                if !selected || !resolved.insert(topic.clone()) {
                    continue;
                }
                if interest.admits(&event) {
                    found.insert(event.seq);
                } else if let Some(older) = self.newest_admitted(interest, topic, event.seq).await?
                {
                    found.insert(older.seq);
                }
            }
        }
        Ok(found.into_iter().collect())
    }

    /// The retained event at `seq`, from the recent window or the store.
    async fn event_at(&self, seq: Seq) -> Result<Option<Arc<Event>>, LogError> {
        event_at(&*self.log, &self.recent, seq).await
    }

    /// How many bytes a replay page (history or `latest`) may bring into memory: a quarter of
    /// a subscriber's queue bound, so what a stream holds before its client reads stays within
    /// what its live queue may hold.
    fn page_bytes(&self) -> usize {
        (self.options.mailbox.bytes / 4).clamp(1, PAGE_BYTES)
    }

    /// The newest event on `topic` before `before` that `interest` admits.
    async fn newest_admitted(
        &self,
        interest: &Interest,
        topic: &crate::event::Topic,
        before: Seq,
    ) -> Result<Option<Arc<Event>>, LogError> {
        let scope = Scope::Topics(vec![topic.to_string()]);
        // Scan at most LATEST_SCAN events back (from the oldest end of that window, since the
        // log is read forward), so a rare type cannot make one request read the whole log.
        let (mut after, mut best) = (before.saturating_sub(LATEST_SCAN as Seq + 1), None);
        let mut pager = Pager::new();
        loop {
            let batch = self
                .log
                .read(after, before - 1, &scope, pager.limit())
                .await?;
            let short = pager.saw(&batch);
            let Some(last) = batch.last() else {
                return Ok(best);
            };
            after = last.seq;
            if let Some(e) = batch.into_iter().rev().find(|e| interest.admits(e)) {
                best = Some(e);
            }
            if short {
                return Ok(best);
            }
        }
    }

    /// Opens a stream of SSE frames for `interest`, starting at `start`.
    pub async fn subscribe(
        self: &Arc<Self>,
        interest: Interest,
        start: Start,
    ) -> Result<Subscription, HubError> {
        let interest = Arc::new(interest);
        let mailbox = Arc::new(Mailbox::new(self.options.mailbox));
        let (key, head) = self.fanout.register(interest.clone(), mailbox.clone());
        let registration = Registration {
            fanout: self.fanout.clone(),
            key,
        };
        let cursor = self.resolve(&start, &head, &interest).await?;
        let mut preamble = BytesMut::from(&b":\n"[..]);
        if let Some(id) = &cursor.unknown {
            preamble.extend_from_slice(&sse::notice(
                RESET_EVENT,
                &reset_notice(id, head.cursor_for(&interest).1),
            ));
        }
        let page_bytes = self.page_bytes();
        let latest = if start == Start::Latest {
            let seqs = self.latest_seqs_visible(&interest, head.seq).await?;
            (!seqs.is_empty()).then(|| Latest {
                seqs: seqs.into(),
                pending: None,
                pager: Pager::with_bytes(page_bytes),
            })
        } else {
            None
        };
        let replay = (cursor.after < head.seq).then(|| Replay {
            upto: head.seq,
            upto_id: head.cursor_for(&interest).1.map(ToString::to_string),
            last_id: cursor.start_id.clone(),
            pending: None,
            pager: Pager::with_bytes(page_bytes),
            scope: Arc::new(interest.scope()),
        });
        Ok(Subscription {
            metrics: self.metrics.clone(),
            _active: self.metrics.active(Transport::Stream),
            log: self.log.clone(),
            recent: self.recent.clone(),
            interest,
            mailbox,
            _registration: registration,
            start_id: cursor.start_id,
            sent: cursor.after,
            preamble: Some(preamble.freeze()),
            in_flight: None,
            latest,
            replay,
            heartbeat_every: self.options.heartbeat,
            heartbeat: Box::pin(tokio::time::sleep(self.options.heartbeat)),
            last_write: Instant::now(),
            end: None,
            done: false,
        })
    }

    /// A page of events for a poller: events after `start` (at most `limit`), waiting up to
    /// `wait` for the first one when there are none yet.
    pub async fn poll(
        &self,
        interest: Interest,
        start: Start,
        limit: usize,
        wait: Duration,
    ) -> Result<PollPage, HubError> {
        let _active = self.metrics.active(Transport::Poll);
        let interest = Arc::new(interest);
        let head = self.fanout.head();
        let cursor = self.resolve(&start, &head, &interest).await?;
        let scope = interest.scope();
        // Where the next poll continues when nothing is returned: the requested position, or
        // for an unknown id the head, since nothing was replayed.
        let (head_pos, head_id) = head.cursor_for(&interest);
        let (resume_id, mut last_pos) = match (&cursor.unknown, head_id) {
            (Some(_), Some(id)) => (id.to_string(), head_pos),
            _ => (cursor.start_id.clone(), cursor.start_pos),
        };
        let mut page = PollPage {
            events: Vec::new(),
            last_event_id: resume_id,
            more: false,
            reset: cursor.unknown.clone(),
        };
        if start == Start::Latest {
            let mut bytes = 0;
            for seq in self.latest_seqs_visible(&interest, head.seq).await? {
                if page.events.len() >= limit || bytes >= POLL_BYTES {
                    // The rest are retained events after the last one answered: a poll from
                    // there gets them (with whatever else followed).
                    page.more = true;
                    break;
                }
                let Some(event) = self.event_at(seq).await? else {
                    continue;
                };
                bytes += event.approx_size();
                let end = interest.ends_on(&event);
                page.events.push(event);
                if end {
                    break;
                }
            }
            if let Some(last) = page.events.last() {
                page.last_event_id = last.id.to_string();
            }
            return Ok(page);
        }
        let deadline = Instant::now() + wait;
        let mut after = cursor.after;
        // Registered before each read, so an event committed after the read still wakes us.
        let mut waiter: Option<(Arc<Mailbox>, Registration)> = None;
        loop {
            if !wait.is_zero() && waiter.is_none() {
                let mailbox = Arc::new(Mailbox::new(Bounds {
                    frames: 256,
                    bytes: usize::MAX,
                }));
                let (key, _) = self.fanout.register(interest.clone(), mailbox.clone());
                let registration = Registration {
                    fanout: self.fanout.clone(),
                    key,
                };
                waiter = Some((mailbox, registration));
            }
            let head = self.fanout.head();
            let mut read_to = after;
            let mut pager = Pager::new();
            let mut bytes = 0;
            while read_to < head.seq && page.events.len() <= limit {
                if bytes >= POLL_BYTES {
                    // A page of large events: answer what is read, the client polls again.
                    page.more = true;
                    break;
                }
                let Checked { events: batch, gap } =
                    read_checked(&*self.log, read_to, head.seq, &scope, pager.limit()).await?;
                if gap {
                    if page.events.is_empty() {
                        // Pruning overtook the cursor: reset, as for an unknown id, and
                        // continue from the head.
                        Metrics::add(&self.metrics.resets, 1);
                        page.reset = Some(page.last_event_id.clone());
                        page.more = false;
                        // Past the hole: the head, or when this caller may not be handed the
                        // head's id, `earliest` (all that is retained lies after the hole, so
                        // nothing repeats).
                        page.last_event_id = match head.cursor_for(&interest) {
                            (pos, Some(id)) if pos == head.seq => id.to_string(),
                            _ => EARLIEST.to_owned(),
                        };
                        return Ok(page);
                    }
                    // Answer what came before the hole; the next poll reports it.
                    page.more = true;
                    break;
                }
                let short = pager.saw(&batch);
                let Some(last) = batch.last() else { break };
                read_to = last.seq;
                for event in batch.into_iter().filter(|e| interest.wants(e)) {
                    if bytes >= POLL_BYTES {
                        page.more = true;
                        break;
                    }
                    bytes += event.approx_size();
                    page.events.push(event);
                }
                if short {
                    break;
                }
            }
            if page.events.len() > limit {
                page.events.truncate(limit);
                page.more = true;
            }
            // With `until`, the page ends at the first terminal event, as a stream would.
            if let Some(end) = page.events.iter().position(|e| interest.ends_on(e)) {
                page.events.truncate(end + 1);
                page.more = false;
            }
            if let Some(last) = page.events.last() {
                page.last_event_id = last.id.to_string();
                return Ok(page);
            }
            // Nothing wanted up to the head: the next poll may continue from there.
            if head.seq > after {
                after = head.seq;
                // Never move the cursor back (a private head's public cursor may lie behind it).
                if let (pos, Some(id)) = head.cursor_for(&interest) {
                    if pos > last_pos {
                        page.last_event_id = id.to_string();
                        last_pos = pos;
                    }
                }
            }
            let Some((mailbox, _)) = &waiter else {
                return Ok(page);
            };
            let mut shutdown = self.shutdown.subscribe();
            if *shutdown.borrow_and_update() {
                return Ok(page);
            }
            let woken = std::future::poll_fn(|cx| mailbox.poll_drain(cx, after));
            let closed = tokio::select! {
                woke = woken => woke.is_err(),
                _ = tokio::time::sleep_until(deadline) => return Ok(page),
                _ = shutdown.changed() => return Ok(page),
            };
            if closed {
                // The wake-up mailbox overflowed (a burst of events at or before the cursor, say)
                // or closed: register a fresh one, or it would answer "ready" forever.
                waiter = None;
                tokio::task::yield_now().await;
            }
        }
    }
}

fn reset_notice(requested: &str, resumed_after: Option<&EventId>) -> String {
    serde_json::json!({
        "reason": "unknown or expired Last-Event-ID; nothing was replayed",
        "last_event_id": requested,
        "resumed_after": resumed_after.map(|id| id.as_str()),
    })
    .to_string()
}

/// The head a hub starts from: the newest event, whether it is private, and the newest public
/// event among the last [`PAGE`] before it (none known past that: callers who may not see the
/// head are then handed `earliest`).
async fn start_head(log: &dyn EventLog, seq: Seq, id: &str) -> Result<Head, LogError> {
    let recent = log
        .read(seq.saturating_sub(PAGE as Seq), seq, &Scope::All, PAGE)
        .await?;
    let newest = recent.last().filter(|e| e.seq == seq);
    Ok(Head {
        seq,
        id: Some(EventId::from_stored(id)),
        private: newest.filter(|e| e.private).cloned(),
        public: recent
            .iter()
            .rev()
            .find(|e| !e.private)
            .map(|e| (e.seq, e.id.clone())),
    })
}

/// The notice sent when events after `last` were pruned before they could be replayed.
fn gap_notice(last: &str, upto: Option<&str>) -> String {
    serde_json::json!({
        "reason": "events after Last-Event-ID expired before they were replayed; \
                   the rest of the history was skipped",
        "last_event_id": last,
        "resumed_after": upto,
    })
    .to_string()
}

/// A page of history and whether retained history has a hole in front of it.
struct Checked {
    events: Vec<Arc<Event>>,
    /// Some event in `(after, first event read]` (or `(after, upto]` when none was read) was
    /// pruned before the read: the reader would skip it silently.
    gap: bool,
}

/// Reads a page of history after `after` and checks it against pruning. Pruning removes a
/// prefix of the log, so if an event the reader should have got was gone when the read ran,
/// the oldest retained event (asked *after* the read) lies beyond the bound: `after + 1`, or
/// for a reader from the start (`after == 0`, whatever is retained) the first event read. A
/// read may span several store queries (Redis pipelines its fetches, and pages through its
/// topic indexes), so pruning can also open a hole *inside* the page while it is read; that
/// too leaves the oldest retained event past the first one read, so the check runs even when
/// the page starts right at `after + 1`. It can err only towards reporting a gap, when pruning
/// passes the bound between the read and the check.
async fn read_checked(
    log: &dyn EventLog,
    after: Seq,
    upto: Seq,
    scope: &Scope,
    limit: usize,
) -> Result<Checked, LogError> {
    let events = log.read(after, upto, scope, limit).await?;
    if after >= upto {
        return Ok(Checked { events, gap: false });
    }
    let bound = match (after, events.first()) {
        (0, Some(first)) => first.seq,
        // Nothing read from the start: nothing retained was skipped.
        (0, None) => return Ok(Checked { events, gap: false }),
        _ => after + 1,
    };
    let gap = match log.oldest().await? {
        Some(oldest) => oldest > bound,
        // Everything up to `upto` existed (it was dispatched) and is gone.
        None => true,
    };
    Ok(Checked { events, gap })
}

/// One page of a poll.
#[derive(Debug)]
pub struct PollPage {
    pub events: Vec<Arc<Event>>,
    /// Where the next poll should continue (`after=`).
    pub last_event_id: String,
    /// More matching events are already waiting.
    pub more: bool,
    /// Set when events after this id are no longer retained (the id was unknown or pruned, or
    /// pruning overtook the cursor): nothing from there was replayed, and `last_event_id` is
    /// the head.
    pub reset: Option<String>,
}

/// Unregisters from the fan-out when dropped.
struct Registration {
    fanout: Arc<Fanout>,
    key: SubKey,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.fanout.unregister(self.key);
    }
}

type ReadFuture = Pin<Box<dyn Future<Output = Result<Checked, LogError>> + Send>>;

struct Replay {
    upto: Seq,
    /// The id of the event at `upto`, for the gap notice.
    upto_id: Option<String>,
    /// The id of the last event this stream sent (or its starting id), for the gap notice.
    last_id: String,
    pending: Option<ReadFuture>,
    pager: Pager,
    /// What the store may narrow the reads to, computed once.
    scope: Arc<Scope>,
}

/// The late-joiner replay's state: the seqs still to send, in log order.
struct Latest {
    seqs: std::collections::VecDeque<Seq>,
    pending: Option<ReadFuture>,
    pager: Pager,
}

/// The retained event at `seq`, from the recent window or the store; `None` once pruned.
async fn event_at(
    log: &dyn EventLog,
    recent: &Mutex<Recent>,
    seq: Seq,
) -> Result<Option<Arc<Event>>, LogError> {
    let cached = lock(recent).get(seq);
    if cached.is_some() {
        return Ok(cached);
    }
    Ok(log
        .read(seq.saturating_sub(1), seq, &Scope::All, 1)
        .await?
        .into_iter()
        .next())
}

/// A live subscription: a stream of SSE bytes (history first, then live frames, heartbeats
/// between). Ends when the hub shuts down, when the subscriber falls too far behind, or when the
/// log fails; the client then reconnects with its Last-Event-ID.
pub struct Subscription {
    metrics: Arc<Metrics>,
    /// Counts this stream among the open ones while it lives.
    _active: crate::metrics::Active,
    log: Arc<dyn EventLog>,
    recent: Arc<Mutex<Recent>>,
    interest: Arc<Interest>,
    mailbox: Arc<Mailbox>,
    _registration: Registration,
    start_id: String,
    /// Position of the last event sent (or skipped as not wanted).
    sent: Seq,
    preamble: Option<Bytes>,
    /// The replay page last handed to the connection, counted against this subscriber's queue
    /// bound and the hub's budget until the connection asks for the next one.
    in_flight: Option<crate::budget::Charge>,
    /// The late-joiner replay (`latest`), sent a page at a time after the preamble.
    latest: Option<Latest>,
    replay: Option<Replay>,
    heartbeat_every: Duration,
    heartbeat: Pin<Box<Sleep>>,
    last_write: Instant,
    /// When set, the stream ends at this instant (the subscriber's token expires).
    end: Option<Pin<Box<Sleep>>>,
    done: bool,
}

impl Subscription {
    /// Ends the stream after `left` (at once when zero), e.g. when the subscriber's token expires.
    pub fn end_after(&mut self, left: Duration) {
        self.end = Some(Box::pin(tokio::time::sleep(left)));
    }

    /// The id just before the first event this stream sends, or `earliest`: the value of the
    /// `Last-Event-ID` / `Mercure-Last-Event-ID` response headers.
    pub fn start_id(&self) -> &str {
        &self.start_id
    }

    /// Whether the preamble and the history replay are out: from here on every frame comes from
    /// the mailbox, so the stream may be [attached](Subscription::attach) to its socket.
    pub fn is_live(&self) -> bool {
        self.preamble.is_none() && self.latest.is_none() && self.replay.is_none() && !self.done
    }

    /// Hands the stream its socket, once everything this stream yielded is written on it (as
    /// HTTP/1.1 chunks) and nothing else will be: from now on the fan-out writes each frame
    /// straight to it, and [`Subscription::poll_wire`] writes what the socket could not take at
    /// once, the heartbeats and the last chunk. The stream is not polled as a `Stream` again.
    pub fn attach(&mut self, wire: Arc<dyn crate::mailbox::Wire>) {
        debug_assert!(self.is_live());
        self.mailbox.attach(wire, self.sent, self.last_write);
        self.start_id = String::new();
    }

    /// Drives an attached stream. `Ready(Ok)`: the stream ended cleanly and its last chunk is
    /// written (the connection may serve another request); `Ready(Err)`: the socket failed and
    /// the connection must be dropped; `Pending`: waiting for frames, for room in the socket or
    /// for the next heartbeat.
    pub fn poll_wire(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if let Some(end) = &mut self.end {
            if end.as_mut().poll(cx).is_ready() {
                self.end = None;
                self.mailbox.finish();
            }
        }
        while self.heartbeat.as_mut().poll(cx).is_ready() {
            let last = self.mailbox.last_write().unwrap_or(self.last_write);
            let due = last + self.heartbeat_every;
            let now = Instant::now();
            if due <= now {
                self.mailbox.heartbeat();
                self.heartbeat.as_mut().reset(now + self.heartbeat_every);
            } else {
                self.heartbeat.as_mut().reset(due);
            }
        }
        match ready!(self.mailbox.poll_wire(cx)) {
            Ok(reason) => {
                if reason == Closed::Slow {
                    tracing::debug!("subscriber fell behind; stream cut");
                }
                self.done = true;
                Poll::Ready(Ok(()))
            }
            Err(e) => {
                self.done = true;
                Poll::Ready(Err(e))
            }
        }
    }

    /// For a write-stall timeout on an attached stream: what waits for the socket, and how
    /// much left the backlog so far.
    pub fn wire_backlog(&self) -> crate::mailbox::WireBacklog {
        self.mailbox.wire_backlog()
    }

    /// Takes the socket back from an attached stream that ended.
    pub fn detach(&mut self) -> Option<Arc<dyn crate::mailbox::Wire>> {
        self.mailbox.detach()
    }

    /// The next page of the late-joiner replay: events loaded by seq, about a page of bytes at
    /// a time, only when the connection asks for more (so a client that does not read holds
    /// one page, not the whole answer).
    fn poll_latest(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, LogError>>> {
        while let Some(latest) = &mut self.latest {
            let pending = latest.pending.get_or_insert_with(|| {
                let n = latest.pager.limit().min(latest.seqs.len());
                let seqs: Vec<Seq> = latest.seqs.drain(..n).collect();
                let (log, recent) = (self.log.clone(), self.recent.clone());
                Box::pin(async move {
                    let mut events = Vec::with_capacity(seqs.len());
                    for seq in seqs {
                        events.extend(event_at(&*log, &recent, seq).await?);
                    }
                    Ok(Checked { events, gap: false })
                })
            });
            let batch = match ready!(pending.as_mut().poll(cx)) {
                Ok(page) => page.events,
                Err(e) => return Poll::Ready(Some(Err(e))),
            };
            latest.pending = None;
            latest.pager.saw(&batch);
            if latest.seqs.is_empty() {
                self.latest = None;
            }
            if let Some(page) = self.encode_page(&batch, batch.iter()) {
                return Poll::Ready(Some(Ok(page)));
            }
        }
        Poll::Pending
    }

    /// Encodes a replay page (the late joiner's or history's events this stream wants) into one
    /// buffer, ending the stream after an `until` event. The bytes are charged to the mailbox
    /// while the connection holds them; `None` when nothing was encoded. `batch` sizes the
    /// buffer (the events are a selection of it).
    fn encode_page<'a>(
        &mut self,
        batch: &[Arc<Event>],
        events: impl Iterator<Item = &'a Arc<Event>>,
    ) -> Option<Bytes> {
        let mut buf = BytesMut::with_capacity(batch.iter().map(|e| sse::encoded_len(e)).sum());
        let mut replayed = 0;
        for event in events {
            sse::encode_into(&mut buf, event);
            replayed += 1;
            if let Some(replay) = &mut self.replay {
                replay.last_id.clear();
                replay.last_id.push_str(event.id.as_str());
            }
            if self.interest.ends_on(event) {
                self.latest = None;
                self.replay = None;
                self.done = true;
                break;
            }
        }
        Metrics::add(&self.metrics.replayed, replayed);
        if buf.is_empty() {
            return None;
        }
        self.in_flight = Some(self.mailbox.charge(buf.len()));
        Some(buf.freeze())
    }

    fn poll_replay(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, LogError>>> {
        while let Some(replay) = &mut self.replay {
            if replay.pending.is_none() {
                let cached = lock(&self.recent).read(self.sent, replay.upto, replay.pager.limit());
                if let Some(events) = cached {
                    let page = Checked { events, gap: false };
                    replay.pending = Some(Box::pin(std::future::ready(Ok(page))));
                }
            }
            let pending = replay.pending.get_or_insert_with(|| {
                let (log, scope, after, upto, limit) = (
                    self.log.clone(),
                    replay.scope.clone(),
                    self.sent,
                    replay.upto,
                    replay.pager.limit(),
                );
                Box::pin(async move { read_checked(&*log, after, upto, &scope, limit).await })
            });
            let batch = match ready!(pending.as_mut().poll(cx)) {
                Ok(Checked { gap: true, .. }) => {
                    // Pruning overtook the cursor: say so, and go on live from the head, as
                    // for an unknown id (the client refetches its state).
                    let notice = gap_notice(&replay.last_id, replay.upto_id.as_deref());
                    Metrics::add(&self.metrics.resets, 1);
                    self.sent = replay.upto;
                    self.replay = None;
                    return Poll::Ready(Some(Ok(sse::notice(RESET_EVENT, &notice))));
                }
                Ok(page) => page.events,
                Err(e) => return Poll::Ready(Some(Err(e))),
            };
            replay.pending = None;
            let short = replay.pager.saw(&batch);
            let Some(last) = batch.last() else {
                self.replay = None;
                break;
            };
            self.sent = last.seq;
            if short || self.sent >= replay.upto {
                self.replay = None;
            }
            let interest = self.interest.clone();
            if let Some(page) = self.encode_page(&batch, batch.iter().filter(|e| interest.wants(e)))
            {
                return Poll::Ready(Some(Ok(page)));
            }
        }
        Poll::Pending
    }
}

impl Stream for Subscription {
    type Item = Result<Bytes, LogError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(preamble) = this.preamble.take() {
            return Poll::Ready(Some(Ok(preamble)));
        }
        // Asked for more: the connection has taken the last page.
        this.in_flight = None;
        if (this.latest.is_some() || this.replay.is_some())
            && this.mailbox.is_closed() == Some(Closed::Slow)
        {
            // The hub's queue budget cut this subscriber while it replayed.
            this.done = true;
            return Poll::Ready(None);
        }
        if let Some(end) = &mut this.end {
            if end.as_mut().poll(cx).is_ready() {
                this.done = true;
                return Poll::Ready(None);
            }
        }
        // The late-joiner replay, then the history replay, each a page at a time.
        while this.latest.is_some() || this.replay.is_some() {
            let latest = this.latest.is_some();
            let polled = if latest {
                this.poll_latest(cx)
            } else {
                this.poll_replay(cx)
            };
            match polled {
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    tracing::warn!(error = %e, latest, "replay failed; ending the stream");
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(other) => {
                    this.last_write = Instant::now();
                    return Poll::Ready(other);
                }
                Poll::Pending if latest && this.latest.is_some() => return Poll::Pending,
                Poll::Pending if !latest && this.replay.is_some() => return Poll::Pending,
                Poll::Pending => {}
            }
        }
        match this.mailbox.poll_drain(cx, this.sent) {
            Poll::Ready(Ok(drained)) => {
                this.sent = drained.last_seq;
                this.last_write = Instant::now();
                return Poll::Ready(Some(Ok(drained.bytes)));
            }
            Poll::Ready(Err(reason)) => {
                if reason == Closed::Slow {
                    tracing::debug!("subscriber fell behind; stream cut");
                }
                this.done = true;
                return Poll::Ready(None);
            }
            Poll::Pending => {}
        }
        while this.heartbeat.as_mut().poll(cx).is_ready() {
            let due = this.last_write + this.heartbeat_every;
            let now = Instant::now();
            if due <= now {
                this.last_write = now;
                this.heartbeat.as_mut().reset(now + this.heartbeat_every);
                return Poll::Ready(Some(Ok(Bytes::from_static(sse::HEARTBEAT))));
            }
            this.heartbeat.as_mut().reset(due);
        }
        Poll::Pending
    }
}

/// Follows commit notices and dispatches committed events in log order; reads the log whenever
/// a notice does not carry the events or does not join the head (lag, another node's commit).
/// The recent window, whatever a panicking holder left (it only ever holds whole pushes).
fn lock(recent: &Mutex<Recent>) -> std::sync::MutexGuard<'_, Recent> {
    recent.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the pump works with.
struct Pump {
    log: Arc<dyn EventLog>,
    fanout: Arc<Fanout>,
    recent: Arc<Mutex<Recent>>,
    metrics: Arc<Metrics>,
    paused: tokio::sync::watch::Receiver<bool>,
}

impl Pump {
    /// Hands committed events to the fan-out (after waiting out a pause); false when the hub
    /// shut down meanwhile.
    async fn dispatch(
        &mut self,
        events: &[Arc<Event>],
        shutdown: &mut tokio::sync::watch::Receiver<bool>,
    ) -> bool {
        if *self.paused.borrow() {
            tokio::select! {
                _ = shutdown.changed() => return false,
                _ = self.paused.wait_for(|p| !*p) => {}
            }
        }
        lock(&self.recent).push(events);
        // A batch that does not join the head (pruned meanwhile) cuts every subscriber first
        // (see `Fanout::dispatch`).
        self.fanout.dispatch(events);
        if let Some(last) = events.last() {
            let delay = u64::try_from(crate::event::now_ms() - last.stored_at_ms).unwrap_or(0);
            self.metrics
                .durable_to_dispatch
                .observe(Duration::from_millis(delay));
        }
        true
    }
}

async fn pump(
    mut pump: Pump,
    mut commits: tokio::sync::broadcast::Receiver<crate::log::Commit>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let upto = tokio::select! {
            _ = shutdown.changed() => return,
            notice = commits.recv() => match notice {
                Ok(commit) => {
                    let head = pump.fanout.head().seq;
                    if let Some(events) = &commit.events {
                        if events.first().is_some_and(|e| e.seq <= head + 1) {
                            if !pump.dispatch(events, &mut shutdown).await {
                                return;
                            }
                            continue;
                        }
                    }
                    commit.upto
                }
                Err(RecvError::Lagged(_)) => Seq::MAX,
                Err(RecvError::Closed) => return,
            },
        };
        // Catch up from the log.
        let mut pager = Pager::new();
        loop {
            let head = pump.fanout.head().seq;
            if head >= upto {
                break;
            }
            match pump.log.read(head, upto, &Scope::All, pager.limit()).await {
                Ok(batch) if batch.is_empty() => break,
                Ok(batch) => {
                    pager.saw(&batch);
                    if !pump.dispatch(&batch, &mut shutdown).await {
                        return;
                    }
                    backoff = Duration::from_millis(50);
                }
                Err(e) => {
                    Metrics::add(&pump.metrics.store_errors, 1);
                    tracing::error!(error = %e, "pump could not read the log; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

async fn prune_loop(
    log: Arc<dyn EventLog>,
    retention: Retention,
    every: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
        }
        match log.prune(retention).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(events = n, "pruned history"),
            Err(e) => tracing::warn!(error = %e, "pruning failed"),
        }
    }
}

/// Whether a retried publish is the event already stored under its id: same topics (in order),
/// type, data, retry and privacy.
fn same_event(stored: &Event, new: &NewEvent) -> bool {
    *stored.topics == *new.topics
        && stored.kind == new.kind
        && *stored.data == *new.data
        && stored.retry == new.retry
        && stored.private == new.private
}

#[cfg(test)]
mod pager_tests {
    use super::*;
    use crate::event::{NewEvent, Topic};

    fn events(n: usize, data: usize) -> Vec<Arc<Event>> {
        (0..n)
            .map(|i| {
                let new =
                    NewEvent::new(vec![Topic::parse("t").unwrap()], "x".repeat(data)).unwrap();
                Arc::new(Event::stored(i as Seq + 1, new, 0))
            })
            .collect()
    }

    #[test]
    fn pages_shrink_for_large_events_and_grow_for_small_ones() {
        let mut pager = Pager::new();
        assert_eq!(pager.limit(), FIRST_PAGE);
        assert!(
            !pager.saw(&events(FIRST_PAGE, 1 << 20)),
            "a full page is not short"
        );
        assert_eq!(pager.limit(), 3, "1 MiB events: about 4 MiB a page");
        assert!(pager.saw(&events(1, 1 << 20)), "fewer than asked is short");
        pager.saw(&events(3, 100));
        assert_eq!(pager.limit(), PAGE, "small events: full pages");
        assert!(pager.saw(&[]), "an empty page is short");
        pager.saw(&events(1, 64 << 20));
        assert_eq!(pager.limit(), 1, "never less than one event");
    }
}
