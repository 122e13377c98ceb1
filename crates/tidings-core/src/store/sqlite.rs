//! `SqliteLog`: the embedded default store, one SQLite file in WAL mode.
//!
//! One writer thread owns the write connection. Appends queue up while it commits; it takes all
//! that waited (up to [`MAX_GROUP`]) into one transaction, each request in its own savepoint so a
//! duplicate id fails only its own request, and commits once: one fsync for the whole group
//! (group commit). Only after the commit are the publishers answered and the commit notice sent.
//! Reads go through a small pool of read connections on the blocking thread pool; WAL lets them
//! run beside the writer.
//!
//! Sequence numbers are assigned by the writer and have no holes (a failed request consumes none;
//! pruning deletes a prefix), so the count of retained events is `newest - oldest + 1`.
//!
//! The topic index (`event_topics`) lags the events: a commit writes only the event rows, and the
//! writer adds the index rows of [`SqliteOptions::index_batch`] events at a time, sorted by
//! topic, in a transaction of their own that also advances `meta.indexed_through`. A commit thus
//! writes the pages of two B-trees (the events and their ids), not four, and a batch writes each
//! topic's page of the index once, where a commit per event wrote it again and again: the topic
//! index, spread over every topic's latest page, was most of the WAL written under load. Reads by
//! topic take the events up to `indexed_through` from the index and scan the few rows after it,
//! both in one snapshot. A crash loses no index row: the writer rebuilds the batch from the events
//! after `indexed_through` when it opens the file.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params, params_from_iter, Connection, ErrorCode, OptionalExtension, Row};
use tokio::sync::{broadcast, mpsc, oneshot, Semaphore};

use super::{clamp, storage};
use crate::event::{now_ms, Event, EventId, EventType, NewEvent, Seq, Topic};
use crate::log::{Commit, EventLog, LogError, LogStats, Retention, Scope};

/// Most append requests committed together.
pub const MAX_GROUP: usize = 1024;
/// Most topics read with one index range each (SQLite caps a compound SELECT at 500 terms).
const MAX_UNION: usize = 400;
/// Most events deleted by one pruning transaction, so appends are never held up for long.
const PRUNE_CHUNK: u64 = 5_000;
/// Events indexed by topic together, by default.
pub const INDEX_BATCH: usize = 1024;

/// How hard SQLite works to make a commit durable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// fsync at every commit: an acknowledged event survives a power cut (the default).
    #[default]
    Full,
    /// fsync at checkpoints only: survives a crash of the hub, not of the machine.
    Normal,
}

/// How to open a [`SqliteLog`].
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    pub path: PathBuf,
    pub durability: Durability,
    /// Read connections in the pool.
    pub readers: usize,
    /// Events whose topic-index rows are written together (see the module documentation); 1
    /// indexes every event right after its commit. Reads by topic scan at most this many
    /// unindexed events.
    pub index_batch: usize,
}

impl SqliteOptions {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            durability: Durability::Full,
            readers: 4,
            index_batch: INDEX_BATCH,
        }
    }
}

type Reply<T> = oneshot::Sender<Result<T, LogError>>;
/// An append waiting for the next group commit.
type PendingAppend = (Vec<NewEvent>, Reply<Vec<Arc<Event>>>);

enum Job {
    Append(Vec<NewEvent>, Reply<Vec<Arc<Event>>>),
    Prune(Seq, Reply<u64>),
}

/// See the module documentation.
pub struct SqliteLog {
    jobs: mpsc::Sender<Job>,
    readers: Readers,
    commits: broadcast::Sender<Commit>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    topics TEXT NOT NULL,
    type TEXT,
    data TEXT NOT NULL,
    retry INTEGER,
    private INTEGER NOT NULL,
    stored_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS event_topics (
    seq INTEGER NOT NULL,
    topic TEXT NOT NULL,
    PRIMARY KEY (seq, topic)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS event_topics_by_topic ON event_topics (topic, seq);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
";
/// 2: the topic index may lag the events, up to `meta.indexed_through`.
const SCHEMA_VERSION: i64 = 2;

fn open_connection(path: &Path, durability: Durability) -> Result<Connection, LogError> {
    let conn = Connection::open(path).map_err(storage)?;
    let sync = match durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; PRAGMA busy_timeout = 5000;"
    ))
    .map_err(storage)?;
    Ok(conn)
}

fn migrate(conn: &Connection) -> Result<(), LogError> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(storage)?;
    if version > SCHEMA_VERSION {
        return Err(LogError::Storage(format!(
            "the database has schema version {version}, newer than this binary's {SCHEMA_VERSION}"
        )));
    }
    if version < SCHEMA_VERSION {
        // Version 1 indexed every event in its own commit: all of them are indexed.
        conn.execute_batch(&format!(
            "BEGIN; {SCHEMA} \
             INSERT OR IGNORE INTO meta (key, value) \
               SELECT 'indexed_through', coalesce(max(seq), 0) FROM events; \
             PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
        ))
        .map_err(storage)?;
    }
    Ok(())
}

impl SqliteLog {
    /// Opens (creating if needed) the log at `options.path` and starts its writer thread.
    pub fn open(options: SqliteOptions) -> Result<Self, LogError> {
        let conn = open_connection(&options.path, options.durability)?;
        migrate(&conn)?;
        // Pruning records how far it went, so a log pruned empty never reuses a seq.
        let next_seq: Seq = conn
            .query_row(
                "SELECT max(coalesce((SELECT max(seq) FROM events), 0), \
                            coalesce((SELECT value FROM meta WHERE key = 'pruned_through'), 0)) + 1",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map_err(storage)? as Seq;
        let indexed_through = indexed_through(&conn).map_err(storage)? as Seq;
        let mut writer = Writer {
            conn,
            next_seq,
            indexed_through,
            unindexed: Vec::new(),
            index_batch: options.index_batch.max(1),
        };
        writer.load_unindexed()?;
        let (jobs, rx) = mpsc::channel(MAX_GROUP * 4);
        let (commits, _) = broadcast::channel(1024);
        let notices = commits.clone();
        std::thread::Builder::new()
            .name("tidings-sqlite-writer".into())
            .spawn(move || writer.run(rx, notices))
            .map_err(storage)?;
        Ok(Self {
            jobs,
            readers: Readers::new(options.path, options.durability, options.readers.max(1)),
            commits,
        })
    }

    async fn submit<T>(&self, job: impl FnOnce(Reply<T>) -> Job) -> Result<T, LogError> {
        super::request(&self.jobs, job).await
    }

    /// The highest seq pruning must delete to satisfy `retention`, if any.
    async fn prune_cutoff(&self, retention: Retention) -> Result<Option<Seq>, LogError> {
        let age_cutoff = retention.age_cutoff_ms();
        if retention.max_events.is_none() && age_cutoff.is_none() {
            return Ok(None);
        }
        let max_events = retention.max_events;
        self.readers
            .run(move |conn| {
                let mut cutoff: Option<i64> = None;
                if let Some(keep) = max_events {
                    let seq: Option<i64> = conn
                        .query_row(
                            "SELECT seq FROM events ORDER BY seq DESC LIMIT 1 OFFSET ?1",
                            [keep as i64],
                            |r| r.get(0),
                        )
                        .optional()?;
                    cutoff = cutoff.max(seq);
                }
                if let Some(before) = age_cutoff {
                    // Events are stored in time order (up to clock steps), so age retention
                    // deletes the prefix of events older than the cutoff.
                    let first_young: Option<i64> = conn
                        .query_row(
                            "SELECT min(seq) FROM events WHERE stored_at >= ?1",
                            [before],
                            |r| r.get(0),
                        )
                        .optional()?
                        .flatten();
                    let seq = match first_young {
                        Some(s) => Some(s - 1),
                        None => conn.query_row("SELECT max(seq) FROM events", [], |r| r.get(0))?,
                    };
                    cutoff = cutoff.max(seq);
                }
                Ok(cutoff.filter(|s| *s > 0).map(|s| s as Seq))
            })
            .await
    }
}

#[async_trait]
impl EventLog for SqliteLog {
    async fn append(&self, batch: Vec<NewEvent>) -> Result<Vec<Arc<Event>>, LogError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        self.submit(|reply| Job::Append(batch, reply)).await
    }

    async fn read(
        &self,
        after: Seq,
        upto: Seq,
        scope: &Scope,
        limit: usize,
    ) -> Result<Vec<Arc<Event>>, LogError> {
        let scope = scope.clone();
        let (after, upto) = (clamp(after), clamp(upto));
        let limit = limit.min(i64::MAX as usize) as i64;
        self.readers
            .run(move |conn| match &scope {
                Scope::All => {
                    let mut stmt = conn.prepare_cached(&format!(
                        "SELECT {COLUMNS} FROM events WHERE seq > ?1 AND seq <= ?2 \
                         ORDER BY seq LIMIT ?3"
                    ))?;
                    let rows = stmt.query_map(params![after, upto, limit], event_from_row)?;
                    rows.collect()
                }
                Scope::Topics(topics) if topics.is_empty() => Ok(Vec::new()),
                Scope::Topics(topics) => {
                    // The index and the events after it, in one snapshot.
                    let tx = conn.unchecked_transaction()?;
                    let indexed = indexed_through(&tx)?;
                    let mut events = if after < indexed {
                        read_indexed(&tx, topics, after, upto.min(indexed), limit)?
                    } else {
                        Vec::new()
                    };
                    if upto > indexed && (events.len() as i64) < limit {
                        let wanted: HashSet<&str> = topics.iter().map(String::as_str).collect();
                        let mut stmt = tx.prepare_cached(&format!(
                            "SELECT {COLUMNS} FROM events WHERE seq > ?1 AND seq <= ?2 ORDER BY seq"
                        ))?;
                        let mut rows = stmt.query(params![after.max(indexed), upto])?;
                        while (events.len() as i64) < limit {
                            let Some(row) = rows.next()? else { break };
                            if stored_topics(row, 2)?.any(|t| wanted.contains(t)) {
                                events.push(event_from_row(row)?);
                            }
                        }
                    }
                    Ok(events)
                }
            })
            .await
    }

    async fn locate(&self, id: &str) -> Result<Option<Seq>, LogError> {
        let id = id.to_owned();
        self.readers
            .run(move |conn| {
                conn.prepare_cached("SELECT seq FROM events WHERE id = ?1")?
                    .query_row([id], |r| r.get::<_, i64>(0))
                    .optional()
                    .map(|s| s.map(|s| s as Seq))
            })
            .await
    }

    async fn latest_seqs(&self, scope: &Scope, upto: Seq) -> Result<Vec<Seq>, LogError> {
        let scope = scope.clone();
        let upto = clamp(upto);
        self.readers
            .run(move |conn| {
                latest_seqs(conn, &scope, upto).map(|s| s.into_iter().map(|s| s as Seq).collect())
            })
            .await
    }

    async fn prune(&self, retention: Retention) -> Result<u64, LogError> {
        let Some(cutoff) = self.prune_cutoff(retention).await? else {
            return Ok(0);
        };
        let mut total = 0;
        loop {
            let deleted = self.submit(|reply| Job::Prune(cutoff, reply)).await?;
            total += deleted;
            if deleted < PRUNE_CHUNK {
                return Ok(total);
            }
        }
    }

    async fn stats(&self) -> Result<LogStats, LogError> {
        self.readers
            .run(|conn| {
                let bounds: (Option<i64>, Option<i64>) =
                    conn.query_row("SELECT min(seq), max(seq) FROM events", [], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })?;
                let (Some(lo), Some(hi)) = bounds else {
                    return Ok(LogStats::default());
                };
                let mut id_of = conn.prepare_cached("SELECT id FROM events WHERE seq = ?1")?;
                let lo_id: String = id_of.query_row([lo], |r| r.get(0))?;
                let hi_id: String = id_of.query_row([hi], |r| r.get(0))?;
                Ok(LogStats {
                    events: (hi - lo + 1) as u64,
                    oldest: Some((lo as Seq, lo_id)),
                    newest: Some((hi as Seq, hi_id)),
                })
            })
            .await
    }

    async fn oldest(&self) -> Result<Option<Seq>, LogError> {
        self.readers
            .run(|conn| {
                conn.prepare_cached("SELECT min(seq) FROM events")?
                    .query_row([], |r| r.get::<_, Option<i64>>(0))
                    .map(|s| s.map(|s| s as Seq))
            })
            .await
    }

    fn commits(&self) -> broadcast::Receiver<Commit> {
        self.commits.subscribe()
    }
}

const COLUMNS: &str = "seq, id, topics, type, data, retry, private, stored_at";

/// The highest seq whose topic-index rows are written.
fn indexed_through(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT value FROM meta WHERE key = 'indexed_through'")?
        .query_row([], |r| r.get(0))
}

/// The topics in column `col` of an events row (its `topics`), without copying them.
fn stored_topics<'r>(row: &'r Row<'_>, col: usize) -> rusqlite::Result<std::str::Split<'r, char>> {
    let topics = row.get_ref(col)?.as_str().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(col, rusqlite::types::Type::Text, e.into())
    })?;
    Ok(topics.split('\n'))
}

/// The first `limit` events on any of `topics` in `(after, upto]`, through the topic index
/// (`upto` must not pass `indexed_through`).
fn read_indexed(
    conn: &Connection,
    topics: &[String],
    after: i64,
    upto: i64,
    limit: i64,
) -> rusqlite::Result<Vec<Arc<Event>>> {
    // One index range per topic, each cut at `limit`, merged: a page costs O(topics × limit),
    // however long the history (a single `topic IN (...)` would sort every remaining match for
    // each page).
    let n = topics.len();
    let (a, b, c) = (n + 1, n + 2, n + 3);
    // SQLite allows 500 terms in a compound SELECT; past that, one IN list.
    let merged = if n <= MAX_UNION {
        let per_topic: Vec<String> = (1..=n)
            .map(|i| {
                format!(
                    "SELECT seq FROM (SELECT seq FROM event_topics WHERE topic = ?{i} \
                     AND seq > ?{a} AND seq <= ?{b} ORDER BY seq LIMIT ?{c})"
                )
            })
            .collect();
        per_topic.join(" UNION ")
    } else {
        let marks = (1..=n).map(|i| format!("?{i}")).collect::<Vec<_>>();
        format!(
            "SELECT DISTINCT seq FROM event_topics WHERE topic IN ({}) \
             AND seq > ?{a} AND seq <= ?{b}",
            marks.join(",")
        )
    };
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM events WHERE seq IN (\
           SELECT seq FROM ({merged}) ORDER BY seq LIMIT ?{c}) ORDER BY seq"
    ))?;
    let mut values: Vec<rusqlite::types::Value> = topics.iter().map(|t| t.clone().into()).collect();
    values.extend([after.into(), upto.into(), limit.into()]);
    let rows = stmt.query_map(params_from_iter(values), event_from_row)?;
    rows.collect()
}

/// The newest seq (at or before `upto`) of each topic in `scope`, deduplicated, ascending:
/// from the topic index up to `indexed_through`, then from the events after it.
fn latest_seqs(conn: &Connection, scope: &Scope, upto: i64) -> rusqlite::Result<Vec<i64>> {
    let tx = conn.unchecked_transaction()?;
    let indexed = indexed_through(&tx)?;
    let upto_indexed = upto.min(indexed);
    let mut latest: HashMap<String, i64> = HashMap::new();
    let wanted: Option<HashSet<&str>> = match scope {
        Scope::All => {
            let mut stmt = tx.prepare_cached(
                "SELECT topic, max(seq) FROM event_topics WHERE seq <= ?1 GROUP BY topic",
            )?;
            let rows = stmt.query_map([upto_indexed], |r| Ok((r.get(0)?, r.get(1)?)))?;
            for row in rows {
                let (topic, seq) = row?;
                latest.insert(topic, seq);
            }
            None
        }
        Scope::Topics(topics) => {
            let mut stmt = tx.prepare_cached(
                "SELECT max(seq) FROM event_topics WHERE topic = ?1 AND seq <= ?2",
            )?;
            for t in topics {
                let seq =
                    stmt.query_row(params![t, upto_indexed], |r| r.get::<_, Option<i64>>(0))?;
                if let Some(seq) = seq {
                    latest.insert(t.clone(), seq);
                }
            }
            Some(topics.iter().map(String::as_str).collect())
        }
    };
    if upto > indexed {
        let mut stmt = tx.prepare_cached(
            "SELECT seq, topics FROM events WHERE seq > ?1 AND seq <= ?2 ORDER BY seq",
        )?;
        let mut rows = stmt.query(params![indexed, upto])?;
        while let Some(row) = rows.next()? {
            let seq: i64 = row.get(0)?;
            for topic in stored_topics(row, 1)? {
                if wanted.as_ref().is_none_or(|w| w.contains(topic)) {
                    latest.insert(topic.to_owned(), seq);
                }
            }
        }
    }
    let mut seqs: Vec<i64> = latest.into_values().collect();
    seqs.sort_unstable();
    seqs.dedup();
    Ok(seqs)
}

fn event_from_row(row: &Row<'_>) -> rusqlite::Result<Arc<Event>> {
    let topics: String = row.get(2)?;
    let kind: Option<String> = row.get(3)?;
    Ok(Arc::new(Event {
        seq: row.get::<_, i64>(0)? as Seq,
        id: EventId::from_stored(&row.get::<_, String>(1)?),
        topics: topics.split('\n').map(Topic::from_stored).collect(),
        kind: kind.as_deref().map(EventType::from_stored),
        data: row.get::<_, String>(4)?.into_boxed_str(),
        retry: row.get::<_, Option<i64>>(5)?.map(|r| r as u64),
        private: row.get(6)?,
        stored_at_ms: row.get(7)?,
    }))
}

struct Writer {
    conn: Connection,
    next_seq: Seq,
    /// Every event up to here has its topic-index rows.
    indexed_through: Seq,
    /// The (topic, seq) index rows of the committed events after `indexed_through`.
    unindexed: Vec<(Topic, Seq)>,
    index_batch: usize,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Job>, commits: broadcast::Sender<Commit>) {
        let mut appends = Vec::with_capacity(MAX_GROUP);
        let mut overlapping = false;
        while let Some(first) = rx.blocking_recv() {
            if overlapping {
                // Publishers overlap (the last group had several appends): let the runtime's
                // threads run before the group is taken. On a core shared with them, requests
                // already read then reach the queue, and the group grows. A commit's cost is
                // mostly per group (its locks, the pages it writes, its sync), so a bigger group
                // costs less per publish. A lone publisher never waits here.
                std::thread::yield_now();
            }
            let mut next = Some(first);
            while let Some(job) = next.take() {
                match job {
                    Job::Append(batch, reply) => appends.push((batch, reply)),
                    Job::Prune(cutoff, reply) => {
                        let _ = reply.send(self.prune(cutoff));
                    }
                }
                if appends.len() < MAX_GROUP {
                    next = rx.try_recv().ok();
                }
            }
            overlapping = appends.len() > 1;
            if !appends.is_empty() {
                self.commit_group(&mut appends, &commits);
            }
            let lag = self.next_seq - 1 - self.indexed_through;
            if lag >= self.index_batch as Seq || self.unindexed.len() >= 4 * self.index_batch {
                self.index_or_warn();
            }
        }
        self.index_or_warn();
    }

    /// Reads the index rows of the events committed after `indexed_through` (a crash, or a
    /// close before their batch was due).
    fn load_unindexed(&mut self) -> Result<(), LogError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT seq, topics FROM events WHERE seq > ?1 ORDER BY seq")
            .map_err(storage)?;
        let mut rows = stmt.query([clamp(self.indexed_through)]).map_err(storage)?;
        while let Some(row) = rows.next().map_err(storage)? {
            let seq = row.get::<_, i64>(0).map_err(storage)? as Seq;
            for topic in stored_topics(row, 1).map_err(storage)? {
                self.unindexed.push((Topic::from_stored(topic), seq));
            }
        }
        Ok(())
    }

    fn index_or_warn(&mut self) {
        if let Err(e) = self.index() {
            tracing::warn!(error = %e, "indexing events by topic failed; will retry");
        }
    }

    /// Writes the index rows of every committed event not yet indexed, in topic order (each
    /// page of the index is then written once), and advances `indexed_through`, in one
    /// transaction.
    fn index(&mut self) -> Result<(), LogError> {
        let through = self.next_seq - 1;
        if through == self.indexed_through {
            return Ok(());
        }
        self.unindexed.sort_unstable();
        let written = write_index(&self.conn, &self.unindexed, through);
        if written.is_err() && !self.conn.is_autocommit() {
            let _ = exec(&self.conn, "ROLLBACK");
        }
        written?;
        self.unindexed.clear();
        self.indexed_through = through;
        Ok(())
    }

    /// Notes the index rows of newly committed events.
    fn committed(&mut self, events: &[Arc<Event>]) {
        for event in events {
            for topic in event.topics.iter() {
                self.unindexed.push((topic.clone(), event.seq));
            }
        }
    }

    /// Commits every waiting append in one transaction and answers each.
    ///
    /// The first attempt inserts the whole group without savepoints, each event row with
    /// `INSERT OR IGNORE`: no statement can then fail half-way, so SQLite keeps no statement
    /// journal, where a savepoint per append copied every page already touched by the group
    /// before changing it (a tenth of the writer's instructions under 64 publishers). An
    /// ignored row is a duplicate id: the attempt is rolled back and the group runs again with
    /// a savepoint per append, so that only the append carrying it fails.
    fn commit_group(
        &mut self,
        appends: &mut Vec<PendingAppend>,
        commits: &broadcast::Sender<Commit>,
    ) {
        let now = now_ms();
        for (batch, _) in appends.iter_mut() {
            for new in batch.iter_mut() {
                new.id.get_or_insert_with(EventId::generate);
            }
        }
        let result = match self.commit_at_once(appends, now) {
            Ok(true) => {
                let mut seq = self.next_seq;
                let outcomes = appends
                    .iter_mut()
                    .map(|(batch, _)| Ok(stored(std::mem::take(batch), &mut seq, now)))
                    .collect();
                self.next_seq = seq;
                Ok(outcomes)
            }
            Ok(false) => self.commit_one_by_one(appends, now),
            Err(e) => Err(e),
        };
        if result.is_err() && !self.conn.is_autocommit() {
            // Whatever failed, the transaction must not stay open for the next group.
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        if let Ok(outcomes) = &result {
            for events in outcomes.iter().flatten() {
                self.committed(events);
            }
        }
        let replies = appends.drain(..).map(|(_, reply)| reply);
        super::answer_group(
            replies,
            result.map(|outcomes| (Vec::new(), outcomes)),
            commits,
        );
    }

    /// The whole group in one transaction without savepoints: `Ok(false)`, rolled back, when
    /// an event's id is taken.
    fn commit_at_once(&self, appends: &[PendingAppend], now: i64) -> Result<bool, LogError> {
        let conn = &self.conn;
        exec(conn, "BEGIN")?;
        let mut seq = self.next_seq;
        for (batch, _) in appends {
            match insert_rows(conn, batch, &mut seq, now, Insert::IgnoringDuplicates) {
                Ok(()) => {}
                Err(LogError::DuplicateId(_)) => {
                    exec(conn, "ROLLBACK")?;
                    return Ok(false);
                }
                Err(e) => return Err(e),
            }
        }
        exec(conn, "COMMIT")?;
        Ok(true)
    }

    /// The group in one transaction, each append inside its own savepoint, so a duplicate id
    /// fails only its append, atomically. A group of one needs no savepoint: when it fails, the
    /// whole transaction is rolled back. BEGIN, SAVEPOINT, RELEASE and COMMIT run as cached
    /// statements (rusqlite's `transaction()`/`savepoint()` parse and prepare their SQL text on
    /// every use).
    fn commit_one_by_one(
        &mut self,
        appends: &mut [PendingAppend],
        now: i64,
    ) -> Result<Vec<super::AppendResult>, LogError> {
        let conn = &self.conn;
        let single = appends.len() == 1;
        let mut seq = self.next_seq;
        let mut outcomes = Vec::with_capacity(appends.len());
        exec(conn, "BEGIN")?;
        for (batch, _) in appends.iter_mut() {
            if !single {
                exec(conn, "SAVEPOINT one_append")?;
            }
            let mut next = seq;
            match insert_rows(conn, batch, &mut next, now, Insert::Plain) {
                Ok(()) => {
                    if !single {
                        exec(conn, "RELEASE one_append")?;
                    }
                    outcomes.push(Ok(stored(std::mem::take(batch), &mut seq, now)));
                }
                Err(e) if single => {
                    exec(conn, "ROLLBACK")?;
                    outcomes.push(Err(e));
                    return Ok(outcomes);
                }
                Err(e) => {
                    exec(conn, "ROLLBACK TO one_append")?;
                    exec(conn, "RELEASE one_append")?;
                    outcomes.push(Err(e));
                }
            }
        }
        exec(conn, "COMMIT")?;
        self.next_seq = seq;
        Ok(outcomes)
    }

    fn prune(&mut self, cutoff: Seq) -> Result<u64, LogError> {
        // The events deleted leave the index with their rows.
        self.index()?;
        let tx = self.conn.transaction().map_err(storage)?;
        let last: Option<i64> = tx
            .query_row(
                "SELECT seq FROM events WHERE seq <= ?1 ORDER BY seq LIMIT 1 OFFSET ?2",
                params![clamp(cutoff), PRUNE_CHUNK as i64 - 1],
                |r| r.get(0),
            )
            .optional()
            .map_err(storage)?;
        let upto = last.unwrap_or(clamp(cutoff));
        tx.execute("DELETE FROM event_topics WHERE seq <= ?1", [upto])
            .map_err(storage)?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('pruned_through', ?1) \
             ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)",
            [upto],
        )
        .map_err(storage)?;
        let deleted = tx
            .execute("DELETE FROM events WHERE seq <= ?1", [upto])
            .map_err(storage)?;
        tx.commit().map_err(storage)?;
        Ok(deleted as u64)
    }
}

/// The topic-index rows `rows` and `indexed_through = through`, in one transaction.
fn write_index(conn: &Connection, rows: &[(Topic, Seq)], through: Seq) -> Result<(), LogError> {
    exec(conn, "BEGIN")?;
    let mut insert = conn
        .prepare_cached("INSERT OR IGNORE INTO event_topics (seq, topic) VALUES (?1, ?2)")
        .map_err(storage)?;
    for (topic, seq) in rows {
        insert
            .execute(params![clamp(*seq), topic.as_str()])
            .map_err(storage)?;
    }
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES ('indexed_through', ?1) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )
    .and_then(|mut stmt| stmt.execute([clamp(through)]))
    .map_err(storage)?;
    exec(conn, "COMMIT")
}

/// Runs one statement without parameters or rows (transaction control), prepared once.
fn exec(conn: &Connection, sql: &str) -> Result<(), LogError> {
    conn.prepare_cached(sql)
        .and_then(|mut stmt| stmt.execute([]))
        .map(drop)
        .map_err(storage)
}

/// How an event's row goes in.
#[derive(Clone, Copy)]
enum Insert {
    /// A taken id fails the statement (a constraint error): inside a savepoint.
    Plain,
    /// A taken id leaves the row out and is reported as [`LogError::DuplicateId`]; nothing
    /// else of the event has been written then.
    IgnoringDuplicates,
}

/// Inserts the event rows of `batch` (whose ids are set), stored at `now`, from `seq` on,
/// advancing it. Their topic-index rows come later, with `Writer::index`.
fn insert_rows(
    conn: &Connection,
    batch: &[NewEvent],
    seq: &mut Seq,
    now: i64,
    how: Insert,
) -> Result<(), LogError> {
    let mut insert_event = conn
        .prepare_cached(match how {
            Insert::Plain => {
                "INSERT INTO events (seq, id, topics, type, data, retry, private, stored_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
            }
            Insert::IgnoringDuplicates => {
                "INSERT OR IGNORE INTO events \
                 (seq, id, topics, type, data, retry, private, stored_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
            }
        })
        .map_err(storage)?;
    let mut topics = String::new();
    for new in batch {
        let Some(id) = &new.id else {
            return Err(LogError::Storage(
                "an event reached the store without an id".into(),
            ));
        };
        topics.clear();
        for (i, topic) in new.topics.iter().enumerate() {
            if i > 0 {
                topics.push('\n');
            }
            topics.push_str(topic.as_str());
        }
        let duplicate = || LogError::DuplicateId(id.as_str().to_owned());
        let inserted = insert_event
            .execute(params![
                clamp(*seq),
                id.as_str(),
                topics,
                new.kind.as_ref().map(EventType::as_str),
                new.data,
                // Bit-cast: the full u64 range round-trips through SQLite's i64.
                new.retry.map(|r| r as i64),
                new.private,
                now,
            ])
            .map_err(|e| match e.sqlite_error_code() {
                Some(ErrorCode::ConstraintViolation) => duplicate(),
                _ => storage(e),
            })?;
        if inserted == 0 {
            return Err(duplicate());
        }
        *seq += 1;
    }
    Ok(())
}

/// The stored events of `batch`, numbered from `seq` on (advancing it).
fn stored(batch: Vec<NewEvent>, seq: &mut Seq, now: i64) -> Vec<Arc<Event>> {
    batch
        .into_iter()
        .map(|new| {
            let event = Event::stored(*seq, new, now);
            *seq += 1;
            Arc::new(event)
        })
        .collect()
}

/// A small pool of read connections used from the blocking thread pool.
struct Readers {
    shared: Arc<ReaderShared>,
    permits: Arc<Semaphore>,
}

struct ReaderShared {
    path: PathBuf,
    durability: Durability,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    fn new(path: PathBuf, durability: Durability, size: usize) -> Self {
        Self {
            shared: Arc::new(ReaderShared {
                path,
                durability,
                idle: Mutex::new(Vec::new()),
            }),
            permits: Arc::new(Semaphore::new(size)),
        }
    }

    /// Runs `f` on a pooled connection on the blocking pool. The permit, the connection and its
    /// return to the pool all live inside the blocking task, so a request cancelled mid-query
    /// still counts against the pool until its query ends.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, LogError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| LogError::Closed)?;
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let idle = shared.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let conn = match idle {
                Some(c) => c,
                None => open_connection(&shared.path, shared.durability)?,
            };
            let result = f(&conn);
            shared
                .idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(conn);
            result.map_err(storage)
        })
        .await
        .map_err(storage)?
    }
}
