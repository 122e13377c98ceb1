//! The storage seam: the durable, totally ordered event log every hub node reads and writes.
//!
//! A publish appends a batch (durable when `append` returns); the hub's pump learns of commits
//! through [`EventLog::commits`] and hands them to the fan-out in log order; subscribers that resume
//! read history with [`EventLog::read`]. Each backend (SQLite, PostgreSQL, Redis) implements this
//! trait and passes the same behavioural suite.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use thiserror::Error;
use tokio::sync::broadcast;

use crate::event::{Event, NewEvent, Seq};

/// What went wrong in a store.
#[derive(Debug, Error)]
pub enum LogError {
    /// A publisher-supplied id is already in the log (or twice in one batch).
    #[error("an event with id {0:?} already exists")]
    DuplicateId(String),
    /// The store is closed (the hub is shutting down).
    #[error("the event log is closed")]
    Closed,
    /// The backend failed; the message is for logs, not for clients.
    #[error("storage failure: {0}")]
    Storage(String),
    /// A request the store refuses as ill-formed: a user's mistake, said in one line (a watch
    /// on a column the table does not have, say), not a failure of the store.
    #[error("{0}")]
    Invalid(String),
}

/// Which events a read may skip: a prefilter the store can evaluate cheaply. Callers always
/// re-check each event with the full selector match, so `All` is always correct.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every event.
    All,
    /// Only events carrying one of these exact topics.
    Topics(Vec<String>),
}

/// A commit notice: the log now holds every event up to `upto`. `events`, when present, are the
/// events committed by this node in this commit, contiguous and in order, so the pump can hand them
/// on without reading them back.
#[derive(Debug, Clone)]
pub struct Commit {
    pub upto: Seq,
    pub events: Option<Arc<[Arc<Event>]>>,
}

/// The newest and oldest retained events and how many there are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogStats {
    pub events: u64,
    /// `(seq, id)` of the oldest retained event.
    pub oldest: Option<(Seq, String)>,
    /// `(seq, id)` of the newest event.
    pub newest: Option<(Seq, String)>,
}

/// How much history to keep. `None` keeps without limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    pub max_events: Option<u64>,
    pub max_age: Option<Duration>,
}

impl Retention {
    /// The `stored_at` (ms since the Unix epoch) before which `max_age` drops events; `None`
    /// when there is no age limit or it is too large to subtract (which keeps everything).
    pub fn age_cutoff_ms(&self) -> Option<i64> {
        let age = i64::try_from(self.max_age?.as_millis()).ok()?;
        crate::event::now_ms().checked_sub(age)
    }
}

/// The durable event log. All methods are cancel-safe in the sense that dropping the future
/// never corrupts the log; a dropped `append` may still commit.
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Appends `batch` atomically and in order; returns the stored events once they are durable.
    /// A duplicate id fails the whole batch with [`LogError::DuplicateId`] and stores nothing.
    async fn append(&self, batch: Vec<NewEvent>) -> Result<Vec<Arc<Event>>, LogError>;

    /// Events with `after < seq <= upto` in log order, at most `limit`, narrowed by `scope`.
    async fn read(
        &self,
        after: Seq,
        upto: Seq,
        scope: &Scope,
        limit: usize,
    ) -> Result<Vec<Arc<Event>>, LogError>;

    /// The position of the retained event with this id, if any.
    async fn locate(&self, id: &str) -> Result<Option<Seq>, LogError>;

    /// For each topic in `scope` (or every topic, for `Scope::All`), the seq of its newest event
    /// with `seq <= upto`; deduplicated, ascending. An index query: a late-joiner replay loads
    /// only the events it sends, a page at a time.
    async fn latest_seqs(&self, scope: &Scope, upto: Seq) -> Result<Vec<Seq>, LogError>;

    /// The events of [`EventLog::latest_seqs`], in log order (one pruned meanwhile is left
    /// out). Default: one read per seq; a store may fetch them at once.
    async fn latest(&self, scope: &Scope, upto: Seq) -> Result<Vec<Arc<Event>>, LogError> {
        let mut events = Vec::new();
        for seq in self.latest_seqs(scope, upto).await? {
            events.extend(self.read(seq - 1, seq, &Scope::All, 1).await?);
        }
        Ok(events)
    }

    /// Deletes what `retention` no longer keeps; returns how many events went.
    async fn prune(&self, retention: Retention) -> Result<u64, LogError>;

    /// Counts and bounds of the retained log.
    async fn stats(&self) -> Result<LogStats, LogError>;

    /// The seq of the oldest retained event, `None` when the log holds none. Pruning removes
    /// a prefix of the log, so every event from here to the head is still retained: a reader
    /// that read after `after` and asks this *afterwards* knows that no event in
    /// `(after, oldest)` was there to be read when `oldest > after + 1` is false. Default: from
    /// [`EventLog::stats`]; stores override it with a cheaper query.
    async fn oldest(&self) -> Result<Option<Seq>, LogError> {
        Ok(self.stats().await?.oldest.map(|(seq, _)| seq))
    }

    /// A receiver of commit notices. A lagging receiver loses notices (`RecvError::Lagged`) and
    /// must then read the log to catch up; the log rows are the truth, notices only wake-ups.
    fn commits(&self) -> broadcast::Receiver<Commit>;

    /// Whether the store's background links (a cluster listener, a connection being
    /// re-established) are up: `Err(reason)`, one line for operators, while one is down. Reads and
    /// appends may still fail or succeed independently; `/healthz` reports both. Default: up.
    fn health(&self) -> Result<(), String> {
        Ok(())
    }
}
