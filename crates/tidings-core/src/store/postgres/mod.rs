//! `PostgresLog`: the event log in PostgreSQL, shareable by several hub nodes.
//!
//! Layout: every table lives in the log's own schema ([`PostgresOptions::schema`]), created and
//! migrated at start-up by the versioned migrations embedded in the binary ([`MIGRATIONS`]).
//! Migration runs in one transaction holding a transaction-scoped advisory lock keyed by the
//! schema, so nodes starting at the same moment apply each migration exactly once.
//!
//! Appends: one writer task owns a connection. Appends queue up while it commits; it takes all
//! that waited (up to [`MAX_GROUP`]) into one transaction, each request in its own savepoint so a
//! duplicate id fails only its own request, and commits once (group commit). Only after the commit
//! are the publishers answered and the commit notice sent.
//!
//! Sequence numbers: the append transaction first takes `pg_advisory_xact_lock(APPEND_LOCK_CLASS,
//! hashtext(schema))`, then reads the counter row `log_state.last_seq` (`FOR UPDATE`), numbers its
//! events from there and writes the counter back before committing. Every node's appends are thus
//! serialized until commit: seqs have no holes (a failed request rolls its savepoint back and
//! consumes none) and are strictly increasing in *commit* order, so a reader that has read seq 12
//! can never miss seq 11 committing later. The lock is released only after the commit is visible.
//!
//! Commit notices: after a local commit the writer broadcasts `Commit { upto, events: Some(..) }`.
//! The append transaction also sends `NOTIFY` on the schema's channel with `"<upto> <node>"`; a
//! dedicated LISTEN connection turns other nodes' notifications into `Commit { upto, events: None }`
//! (its own are skipped: they were already announced with their events).
//!
//! Reads go through a small set of connections used concurrently (tokio-postgres pipelines
//! queries on one connection); each query is one statement, so it sees one snapshot.
//!
//! The LISTEN connection reconnects with backoff and then sends a catch-up notice; meanwhile
//! `health()` reports it down. The outbox (`0002_outbox.sql`) lets applications publish from SQL
//! in their own transactions; the writer moves committed rows into the log under the append lock.
//! TLS follows libpq's `sslmode` (`tls.rs`).
//!
//! TODO: prepared-statement caching on the read connections.

mod tls;
pub mod watch;

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{broadcast, mpsc, oneshot, Mutex, Notify};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, Client, Config, Row, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{clamp, duplicate_within, storage};
use crate::event::{now_ms, Event, EventId, EventType, NewEvent, Seq, Topic};
use crate::log::{Commit, EventLog, LogError, LogStats, Retention, Scope};

/// Most append requests committed together.
pub const MAX_GROUP: usize = 1024;
/// Most events deleted by one pruning transaction, so appends are never held up for long.
const PRUNE_CHUNK: i64 = 5_000;
/// First key of the advisory lock serializing appends (the second is `hashtext(schema)`).
pub const APPEND_LOCK_CLASS: i32 = 0x7469_6401; // "tid\x01"
/// First key of the advisory lock serializing migrations (the second is `hashtext(schema)`).
pub const MIGRATE_LOCK_CLASS: i32 = 0x7469_6402;
/// Longest accepted schema name (the NOTIFY channel adds a prefix and must stay under 64 bytes).
pub const MAX_SCHEMA_LEN: usize = 47;
/// Most outbox rows moved into the log by one transaction.
const OUTBOX_CHUNK: i64 = 1_000;
/// How often a node looks into the outbox without being notified (a safety net: notifications
/// are lost while the LISTEN connection is down, and a move can fail half-way).
const OUTBOX_SWEEP: Duration = Duration::from_secs(5);
/// Longest wait between two attempts to reconnect the LISTEN connection.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The embedded migrations, `(version, sql)`, applied in order. Never edit one that has shipped;
/// add the next version instead.
pub const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("0001_init.sql")),
    (2, include_str!("0002_outbox.sql")),
];

/// How to open a [`PostgresLog`].
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// A libpq-style connection string, as a URL (`postgres://user@host/db`) or as key=value pairs.
    pub url: String,
    /// The schema holding the log's tables: lower-case letters, digits and `_`, not starting with
    /// a digit, at most [`MAX_SCHEMA_LEN`] bytes.
    pub schema: String,
    /// Read connections.
    pub readers: usize,
}

impl PostgresOptions {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: "tidings".into(),
            readers: 2,
        }
    }

    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
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
pub struct PostgresLog {
    jobs: mpsc::Sender<Job>,
    readers: Readers,
    commits: broadcast::Sender<Commit>,
    /// Why the LISTEN connection is down, while it is.
    link: Arc<std::sync::Mutex<Option<String>>>,
    /// The LISTEN supervisor; aborted when the log is dropped.
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for PostgresLog {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// A request to move committed outbox rows into the log: a flag (so requests made while the
/// writer is busy are not lost) and a wake-up.
#[derive(Default)]
struct DrainSignal {
    requested: AtomicBool,
    wake: Notify,
}

impl DrainSignal {
    fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    fn take(&self) -> bool {
        self.requested.swap(false, Ordering::SeqCst)
    }
}

/// A PostgreSQL error with the server's message when there is one, else with its causes (a
/// TLS handshake failure says why).
fn pg(e: tokio_postgres::Error) -> LogError {
    if let Some(db) = e.as_db_error() {
        return LogError::Storage(format!("{db}"));
    }
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        let c_text = c.to_string();
        if !text.contains(&c_text) {
            text = format!("{text}: {c_text}");
        }
        cause = c.source();
    }
    LogError::Storage(text)
}

fn check_schema(schema: &str) -> Result<(), LogError> {
    let ok = !schema.is_empty()
        && schema.len() <= MAX_SCHEMA_LEN
        && !schema.starts_with(|c: char| c.is_ascii_digit())
        && schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(LogError::Storage(format!(
            "invalid schema name {schema:?}: use at most {MAX_SCHEMA_LEN} lower-case letters, \
             digits and '_', not starting with a digit"
        )))
    }
}

/// The NOTIFY channel of a schema's log.
fn channel(schema: &str) -> String {
    format!("tidings_commits_{schema}")
}

/// The NOTIFY channel of a schema's outbox (the name is also built by `outbox_notify()` in
/// 0002_outbox.sql).
fn outbox_channel(schema: &str) -> String {
    format!("tidings_outbox_{schema}")
}

/// Opens a connection whose `search_path` is the log's schema, driving it on a task.
async fn connect(target: &Target) -> Result<Client, LogError> {
    let (client, connection) = target
        .config
        .connect(target.tls.clone())
        .await
        .map_err(pg)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// Applies the embedded migrations not yet applied, under the schema's migration lock.
async fn migrate(client: &mut Client, schema: &str) -> Result<(), LogError> {
    let tx = client.transaction().await.map_err(pg)?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&MIGRATE_LOCK_CLASS, &schema],
    )
    .await
    .map_err(pg)?;
    // `schema` was checked to be a plain lower-case identifier, so it needs no quoting.
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
             version integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         );
         SET LOCAL search_path TO {schema};"
    ))
    .await
    .map_err(pg)?;
    let newest: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await
        .map_err(pg)?
        .get(0);
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    if newest > known {
        return Err(LogError::Storage(format!(
            "schema {schema} has version {newest}, newer than this binary's {known}"
        )));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > newest) {
        tracing::info!(schema, version, "applying PostgreSQL migration");
        tx.batch_execute(sql).await.map_err(pg)?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[version],
        )
        .await
        .map_err(pg)?;
    }
    tx.commit().await.map_err(pg)
}

/// The connection settings for a log in `schema`: its tables first on the search path.
fn log_config(url: &str, schema: &str) -> Result<Target, LogError> {
    check_schema(schema)?;
    let (url, tls) = tls::split(url)?;
    let mut config = Config::from_str(&url).map_err(pg)?;
    config.options(format!("-c search_path={schema}"));
    config.application_name("tidings");
    config.ssl_mode(tls.ssl_mode());
    Ok(Target {
        config,
        tls: tls.connector()?,
    })
}

/// Where and how to connect: the settings, and the TLS connector `sslmode` asks for.
#[derive(Clone)]
struct Target {
    config: Config,
    tls: MakeRustlsConnect,
}

/// Connects to the log described by `options` and applies the migrations it lacks, without
/// starting a hub: for tools (`tidings pg watch`) that need the schema and a connection whose
/// search path is the log's schema.
pub async fn connect_migrated(options: &PostgresOptions) -> Result<Client, LogError> {
    let config = log_config(&options.url, &options.schema)?;
    let mut client = connect(&config).await?;
    migrate(&mut client, &options.schema).await?;
    Ok(client)
}

impl PostgresLog {
    /// Connects, applies the migrations and starts the writer and the listener.
    pub async fn connect(options: PostgresOptions) -> Result<Self, LogError> {
        let schema = options.schema.clone();
        let config = log_config(&options.url, &schema)?;

        let mut writer = connect(&config).await?;
        migrate(&mut writer, &schema).await?;

        let readers = Readers::connect(config.clone(), options.readers.max(1)).await?;
        let (commits, _) = broadcast::channel(1024);
        let node = uuid::Uuid::now_v7().simple().to_string();
        let drain = Arc::new(DrainSignal::default());
        let link = Arc::new(std::sync::Mutex::new(None));
        let listener = Listener {
            config: config.clone(),
            schema: schema.clone(),
            node: node.clone(),
            commits: commits.clone(),
            drain: drain.clone(),
            link: link.clone(),
        };
        let session = listener.open().await?;
        let listener = tokio::spawn(listener.run(session));

        let (jobs, rx) = mpsc::channel(MAX_GROUP * 4);
        let w = Writer {
            statements: Statements::prepare(&writer).await?,
            client: writer,
            config,
            schema,
            channel: channel(&options.schema),
            node,
            drain: drain.clone(),
        };
        tokio::spawn(w.run(rx, commits.clone()));
        // Rows committed while no hub ran go out now.
        drain.request();
        Ok(Self {
            jobs,
            readers,
            commits,
            link,
            listener,
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
        let client = self.readers.get().await?;
        let mut cutoff: Option<i64> = None;
        if let Some(keep) = retention.max_events {
            let keep = clamp(keep);
            let seq: Option<i64> = client
                .query_opt(
                    "SELECT seq FROM events ORDER BY seq DESC LIMIT 1 OFFSET $1",
                    &[&keep],
                )
                .await
                .map_err(pg)?
                .map(|r| r.get(0));
            cutoff = cutoff.max(seq);
        }
        if let Some(before) = age_cutoff {
            // Events are stored in time order (up to clock steps), so age retention deletes the
            // prefix of events older than the cutoff.
            let seq: Option<i64> = client
                .query_one(
                    "SELECT coalesce((SELECT min(seq) - 1 FROM events WHERE stored_at >= $1), \
                                     (SELECT max(seq) FROM events))",
                    &[&before],
                )
                .await
                .map_err(pg)?
                .get(0);
            cutoff = cutoff.max(seq);
        }
        Ok(cutoff.filter(|s| *s > 0).map(|s| s as Seq))
    }
}

/// Notifications from one LISTEN connection, forwarded by the task driving it; `None` or an
/// error once the connection is gone.
type Messages = mpsc::UnboundedReceiver<Result<AsyncMessage, tokio_postgres::Error>>;

/// Keeps one connection LISTENing to the schema's commit and outbox channels, reconnecting with
/// backoff when it fails: other nodes' commits become commit notices, outbox inserts become
/// drain requests. After a reconnection it sends a catch-up notice up to the log's newest seq
/// (notifications sent meanwhile were lost) and requests a drain.
struct Listener {
    config: Target,
    schema: String,
    node: String,
    commits: broadcast::Sender<Commit>,
    drain: Arc<DrainSignal>,
    link: Arc<std::sync::Mutex<Option<String>>>,
}

impl Listener {
    /// Connects and LISTENs; the connection lives as long as the returned client.
    async fn open(&self) -> Result<(Client, Messages), LogError> {
        let (client, mut connection) = self
            .config
            .config
            .connect(self.config.tls.clone())
            .await
            .map_err(pg)?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                let failed = message.is_err();
                if tx.send(message).is_err() || failed {
                    return;
                }
            }
        });
        client
            .batch_execute(&format!(
                "LISTEN {}; LISTEN {}",
                channel(&self.schema),
                outbox_channel(&self.schema)
            ))
            .await
            .map_err(pg)?;
        Ok((client, rx))
    }

    fn set_link(&self, down: Option<String>) {
        *self.link.lock().unwrap_or_else(|e| e.into_inner()) = down;
    }

    async fn run(self, first: (Client, Messages)) {
        let mut session = Some(first);
        let mut backoff = Duration::from_millis(100);
        loop {
            let (client, mut messages) = match session.take() {
                Some(session) => session,
                None => match self.reopen().await {
                    Ok(session) => {
                        tracing::info!("PostgreSQL LISTEN connection re-established");
                        self.set_link(None);
                        backoff = Duration::from_millis(100);
                        session
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?backoff, "PostgreSQL unreachable");
                        self.set_link(Some(format!(
                            "PostgreSQL is unreachable ({e}); reconnecting"
                        )));
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                },
            };
            let mut sweep = tokio::time::interval(OUTBOX_SWEEP);
            let reason = loop {
                tokio::select! {
                    message = messages.recv() => match message {
                        Some(Ok(AsyncMessage::Notification(n))) => self.notified(&n),
                        Some(Ok(_)) => {}
                        Some(Err(e)) => break e.to_string(),
                        None => break "the connection closed".to_owned(),
                    },
                    _ = sweep.tick() => self.drain.request(),
                }
            };
            tracing::error!(
                reason,
                "the PostgreSQL LISTEN connection failed; reconnecting"
            );
            self.set_link(Some(format!(
                "the PostgreSQL LISTEN connection failed ({reason}); reconnecting"
            )));
            drop(client);
            // Right after a failure the server is most likely still away.
            tokio::time::sleep(backoff).await;
        }
    }

    /// A new session, plus the catch-up for whatever was committed while there was none.
    async fn reopen(&self) -> Result<(Client, Messages), LogError> {
        let session = self.open().await?;
        // Read after LISTEN is in place, so no commit falls between the two.
        let upto: i64 = session
            .0
            .query_one("SELECT last_seq FROM log_state", &[])
            .await
            .map_err(pg)?
            .get(0);
        let _ = self.commits.send(Commit {
            upto: upto.max(0) as Seq,
            events: None,
        });
        self.drain.request();
        Ok(session)
    }

    fn notified(&self, n: &tokio_postgres::Notification) {
        if n.channel() != channel(&self.schema) {
            self.drain.request();
            return;
        }
        let mut parts = n.payload().split(' ');
        let upto = parts.next().and_then(|s| s.parse::<Seq>().ok());
        let from = parts.next();
        match upto {
            Some(_) if from == Some(self.node.as_str()) => {}
            Some(upto) => {
                let _ = self.commits.send(Commit { upto, events: None });
            }
            None => tracing::warn!(payload = n.payload(), "odd commit notification"),
        }
    }
}

#[async_trait]
impl EventLog for PostgresLog {
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
        let (after, upto) = (clamp(after), clamp(upto));
        let limit = limit.min(i64::MAX as usize) as i64;
        if after >= upto || limit == 0 {
            return Ok(Vec::new());
        }
        let client = self.readers.get().await?;
        let rows = match scope {
            Scope::All => client
                .query(
                    &format!(
                        "SELECT {COLUMNS} FROM events WHERE seq > $1 AND seq <= $2 \
                         ORDER BY seq LIMIT $3"
                    ),
                    &[&after, &upto, &limit],
                )
                .await
                .map_err(pg)?,
            Scope::Topics(topics) if topics.is_empty() => return Ok(Vec::new()),
            Scope::Topics(topics) => client
                .query(
                    &format!(
                        "SELECT {COLUMNS} FROM events WHERE seq IN (\
                           SELECT DISTINCT seq FROM event_topics WHERE topic = ANY($1) \
                           AND seq > $2 AND seq <= $3 ORDER BY seq LIMIT $4) ORDER BY seq"
                    ),
                    &[topics, &after, &upto, &limit],
                )
                .await
                .map_err(pg)?,
        };
        rows.iter().map(event_from_row).collect()
    }

    async fn locate(&self, id: &str) -> Result<Option<Seq>, LogError> {
        let client = self.readers.get().await?;
        let row = client
            .query_opt("SELECT seq FROM events WHERE id = $1", &[&id])
            .await
            .map_err(pg)?;
        Ok(row.map(|r| r.get::<_, i64>(0) as Seq))
    }

    async fn latest(&self, scope: &Scope, upto: Seq) -> Result<Vec<Arc<Event>>, LogError> {
        let upto = clamp(upto);
        let client = self.readers.get().await?;
        let rows = match scope {
            Scope::All => client
                .query(
                    &format!(
                        "SELECT {COLUMNS} FROM events WHERE seq IN (\
                           SELECT max(seq) FROM event_topics WHERE seq <= $1 GROUP BY topic) \
                         ORDER BY seq"
                    ),
                    &[&upto],
                )
                .await
                .map_err(pg)?,
            Scope::Topics(topics) if topics.is_empty() => return Ok(Vec::new()),
            Scope::Topics(topics) => client
                .query(
                    &format!(
                        "SELECT {COLUMNS} FROM events WHERE seq IN (\
                           SELECT (SELECT max(et.seq) FROM event_topics et \
                                   WHERE et.topic = t.topic AND et.seq <= $2) \
                           FROM unnest($1::text[]) AS t(topic)) \
                         ORDER BY seq"
                    ),
                    &[topics, &upto],
                )
                .await
                .map_err(pg)?,
        };
        rows.iter().map(event_from_row).collect()
    }

    async fn prune(&self, retention: Retention) -> Result<u64, LogError> {
        let Some(cutoff) = self.prune_cutoff(retention).await? else {
            return Ok(0);
        };
        let mut total = 0;
        loop {
            let deleted = self.submit(|reply| Job::Prune(cutoff, reply)).await?;
            total += deleted;
            if deleted < PRUNE_CHUNK as u64 {
                return Ok(total);
            }
        }
    }

    async fn stats(&self) -> Result<LogStats, LogError> {
        let client = self.readers.get().await?;
        // One statement, one snapshot: the bounds and their ids agree.
        let Some(row) = client
            .query_opt(
                "SELECT lo.seq, lo.id, hi.seq, hi.id FROM \
                   (SELECT seq, id FROM events ORDER BY seq LIMIT 1) lo, \
                   (SELECT seq, id FROM events ORDER BY seq DESC LIMIT 1) hi",
                &[],
            )
            .await
            .map_err(pg)?
        else {
            return Ok(LogStats::default());
        };
        let (lo, hi): (i64, i64) = (row.get(0), row.get(2));
        // Seqs have no holes (pruning deletes a prefix), so the count is the span.
        Ok(LogStats {
            events: (hi - lo + 1) as u64,
            oldest: Some((lo as Seq, row.get(1))),
            newest: Some((hi as Seq, row.get(3))),
        })
    }

    fn commits(&self) -> broadcast::Receiver<Commit> {
        self.commits.subscribe()
    }

    fn health(&self) -> Result<(), String> {
        match &*self.link.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(reason) => Err(reason.clone()),
            None => Ok(()),
        }
    }
}

const COLUMNS: &str = "seq, id, topics, type, data, retry, private, stored_at";

fn event_from_row(row: &Row) -> Result<Arc<Event>, LogError> {
    let topics: &str = row.try_get(2).map_err(pg)?;
    let kind: Option<&str> = row.try_get(3).map_err(pg)?;
    let data: Vec<u8> = row.try_get(4).map_err(pg)?;
    let data = String::from_utf8(data).map_err(storage)?;
    Ok(Arc::new(Event {
        seq: row.try_get::<_, i64>(0).map_err(pg)? as Seq,
        id: EventId::from_stored(row.try_get(1).map_err(pg)?),
        topics: topics.split('\n').map(Topic::from_stored).collect(),
        kind: kind.map(EventType::from_stored),
        data: data.into_boxed_str(),
        // Bit-cast: the full u64 range round-trips through bigint.
        retry: row
            .try_get::<_, Option<i64>>(5)
            .map_err(pg)?
            .map(|r| r as u64),
        private: row.try_get(6).map_err(pg)?,
        stored_at_ms: row.try_get(7).map_err(pg)?,
    }))
}

/// The writer's statements, prepared once per connection: each then costs one round trip, and
/// the ones sent together are pipelined.
struct Statements {
    lock: Statement,
    counter: Statement,
    taken: Statement,
    insert_events: Statement,
    insert_topics: Statement,
    advance: Statement,
    outbox_waiting: Statement,
    take_outbox: Statement,
    reject: Statement,
}

impl Statements {
    async fn prepare(client: &Client) -> Result<Self, LogError> {
        let (
            lock,
            counter,
            taken,
            insert_events,
            insert_topics,
            advance,
            outbox_waiting,
            take_outbox,
            reject,
        ) = tokio::try_join!(
            client.prepare("SELECT pg_advisory_xact_lock($1, hashtext($2))"),
            client.prepare("SELECT last_seq FROM log_state FOR UPDATE"),
            client.prepare("SELECT id FROM events WHERE id = ANY($1)"),
            client.prepare(
                "INSERT INTO events (seq, id, topics, type, data, retry, private, stored_at) \
                     SELECT s, i, t, k, d, r, p, $8 FROM unnest($1::bigint[], $2::text[], \
                       $3::text[], $4::text[], $5::bytea[], $6::bigint[], $7::boolean[]) \
                       AS x(s, i, t, k, d, r, p)"
            ),
            client.prepare(
                "INSERT INTO event_topics (seq, topic) \
                     SELECT * FROM unnest($1::bigint[], $2::text[])"
            ),
            client.prepare(
                "WITH advanced AS (UPDATE log_state SET last_seq = $1) SELECT pg_notify($2, $3)"
            ),
            client.prepare("SELECT EXISTS (SELECT 1 FROM outbox)"),
            client.prepare(
                "DELETE FROM outbox WHERE id IN (\
                       SELECT id FROM outbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) \
                     RETURNING id, topics, type, data, event_id, retry, private"
            ),
            client.prepare(
                "INSERT INTO outbox_rejected \
                       (id, topics, type, data, event_id, retry, private, reason) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            ),
        )
        .map_err(pg)?;
        Ok(Self {
            lock,
            counter,
            taken,
            insert_events,
            insert_topics,
            advance,
            outbox_waiting,
            take_outbox,
            reject,
        })
    }
}

struct Writer {
    client: Client,
    statements: Statements,
    config: Target,
    schema: String,
    channel: String,
    /// This process's id in NOTIFY payloads, so the listener can skip its own.
    node: String,
    drain: Arc<DrainSignal>,
}

/// What one group transaction did, for its commit notice and its answers.
#[derive(Default)]
struct GroupOutcome {
    /// The outbox rows moved, as events, in seq order (before the appends').
    drained: Vec<Arc<Event>>,
    /// Whether the outbox may hold more rows than one transaction moves.
    more: bool,
    /// One outcome per append request, in order.
    appends: Vec<Result<Vec<Arc<Event>>, LogError>>,
    upto: Seq,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Job>, commits: broadcast::Sender<Commit>) {
        let mut appends = Vec::with_capacity(MAX_GROUP);
        loop {
            let drain = self.drain.clone();
            let mut next = tokio::select! {
                job = rx.recv() => match job {
                    Some(job) => Some(job),
                    None => return,
                },
                _ = drain.wake.notified() => None,
            };
            while let Some(job) = next.take() {
                match job {
                    Job::Append(batch, reply) => appends.push((batch, reply)),
                    Job::Prune(cutoff, reply) => {
                        let result = match self.ensure_connected().await {
                            Ok(()) => self.prune(cutoff).await,
                            Err(e) => Err(e),
                        };
                        let _ = reply.send(result);
                    }
                }
                if appends.len() < MAX_GROUP {
                    next = rx.try_recv().ok();
                }
            }
            let drain = self.drain.take();
            if !appends.is_empty() || drain {
                self.commit_group(&mut appends, drain, &commits).await;
            }
        }
    }

    /// Replaces a closed connection (PostgreSQL restarted, network cut) with a new one.
    async fn ensure_connected(&mut self) -> Result<(), LogError> {
        if self.client.is_closed() {
            tracing::warn!("reconnecting the PostgreSQL writer");
            let client = connect(&self.config).await?;
            self.statements = Statements::prepare(&client).await?;
            self.client = client;
        }
        Ok(())
    }

    /// Commits every waiting append in one transaction, after the outbox rows waiting (when
    /// `drain`), and answers each.
    async fn commit_group(
        &mut self,
        appends: &mut Vec<PendingAppend>,
        drain: bool,
        commits: &broadcast::Sender<Commit>,
    ) {
        let batches: Vec<Vec<NewEvent>> =
            appends.iter_mut().map(|(b, _)| std::mem::take(b)).collect();
        let result = self.try_commit_group(batches, drain).await;
        let replies = appends.drain(..).map(|(_, reply)| reply);
        if result.as_ref().is_ok_and(|o| o.more) {
            self.drain.request();
        }
        let result = result.map(|o| (o.drained, o.appends));
        super::answer_group(replies, result, commits);
    }

    /// Runs the group's transaction: takes the append lock, moves outbox rows (when `drain`),
    /// admits each append request whose ids are all new, inserts everything admitted with the
    /// next seqs in two statements, advances the counter and notifies, then commits.
    async fn try_commit_group(
        &mut self,
        batches: Vec<Vec<NewEvent>>,
        drain: bool,
    ) -> Result<GroupOutcome, LogError> {
        self.ensure_connected().await?;
        let st = &self.statements;
        if batches.is_empty() {
            // A drain alone: take the append lock only when there is something to move.
            let waiting: bool = self
                .client
                .query_one(&st.outbox_waiting, &[])
                .await
                .map_err(pg)?
                .get(0);
            if !waiting {
                return Ok(GroupOutcome::default());
            }
        }
        let tx = self.client.transaction().await.map_err(pg)?;
        // Serializes appends from every node until this transaction commits: seqs are handed
        // out in commit order. The statements below are pipelined behind the lock.
        let outbox_limit = if drain { OUTBOX_CHUNK } else { 0 };
        let lock_key: [&(dyn ToSql + Sync); 2] = [&APPEND_LOCK_CLASS, &self.schema];
        let limit: [&(dyn ToSql + Sync); 1] = [&outbox_limit];
        let (_, counter, rows) = tokio::try_join!(
            tx.execute(&st.lock, &lock_key),
            tx.query_one(&st.counter, &[]),
            tx.query(&st.take_outbox, &limit),
        )
        .map_err(pg)?;
        let last: i64 = counter.get(0);
        let mut rows = rows;
        rows.sort_by_key(|r| r.get::<_, i64>(0));
        let from_outbox: Vec<Result<NewEvent, String>> = rows.iter().map(outbox_event).collect();

        // Publisher ids already in the log: exact, under the lock.
        let given: Vec<&str> = from_outbox
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .chain(batches.iter().flatten())
            .filter_map(|e| e.id.as_ref().map(EventId::as_str))
            .collect();
        let mut claimed: HashSet<String> = if given.is_empty() {
            HashSet::new()
        } else {
            tx.query(&st.taken, &[&given])
                .await
                .map_err(pg)?
                .iter()
                .map(|r| r.get(0))
                .collect()
        };

        let now = now_ms();
        let mut seq = last as Seq + 1;
        let mut stored: Vec<Arc<Event>> = Vec::new();
        let mut number = |batch: Vec<NewEvent>, stored: &mut Vec<Arc<Event>>| {
            let events: Vec<Arc<Event>> = batch
                .into_iter()
                .map(|new| {
                    seq += 1;
                    Arc::new(Event::stored(seq - 1, new, now))
                })
                .collect();
            stored.extend(events.iter().cloned());
            events
        };
        let mut outcome = GroupOutcome {
            more: rows.len() as i64 == OUTBOX_CHUNK,
            ..GroupOutcome::default()
        };
        let mut rejected: Vec<(&Row, String)> = Vec::new();
        for (row, parsed) in rows.iter().zip(from_outbox) {
            match parsed.and_then(|new| admit(vec![new], &mut claimed).map_err(|e| e.to_string())) {
                Ok(batch) => outcome.drained.extend(number(batch, &mut stored)),
                Err(reason) => rejected.push((row, reason)),
            }
        }
        for batch in batches {
            outcome
                .appends
                .push(admit(batch, &mut claimed).map(|batch| number(batch, &mut stored)));
        }

        outcome.upto = last as Seq + stored.len() as Seq;
        if !stored.is_empty() || !rejected.is_empty() {
            let rows = EventRows::of(&stored);
            let upto = clamp(outcome.upto);
            let payload = format!("{} {}", outcome.upto, self.node);
            let insert_events = async {
                if stored.is_empty() {
                    return Ok(0);
                }
                tx.execute(
                    &st.insert_events,
                    &[
                        &rows.seqs,
                        &rows.ids,
                        &rows.topics,
                        &rows.kinds,
                        &rows.datas,
                        &rows.retries,
                        &rows.privates,
                        &now,
                    ],
                )
                .await
            };
            let insert_topics = async {
                if stored.is_empty() {
                    return Ok(0);
                }
                tx.execute(&st.insert_topics, &[&rows.topic_seqs, &rows.topic_names])
                    .await
            };
            let advance = async {
                if stored.is_empty() {
                    return Ok(Vec::new());
                }
                tx.query(&st.advance, &[&upto, &self.channel, &payload])
                    .await
            };
            let reject = async {
                // Rare: one statement per row.
                for (r, reason) in &rejected {
                    let id: i64 = r.get(0);
                    tracing::warn!(
                        outbox_id = id,
                        reason,
                        "outbox row refused; moved to outbox_rejected"
                    );
                    tx.execute(
                        &st.reject,
                        &[
                            &id,
                            &r.get::<_, Option<Vec<Option<String>>>>(1),
                            &r.get::<_, Option<String>>(2),
                            &r.get::<_, Option<String>>(3),
                            &r.get::<_, Option<String>>(4),
                            &r.get::<_, Option<i64>>(5),
                            &r.get::<_, Option<bool>>(6),
                            reason,
                        ],
                    )
                    .await?;
                }
                Ok(0)
            };
            tokio::try_join!(insert_events, insert_topics, advance, reject).map_err(|e| {
                match e.code() {
                    // Publisher ids were checked under the lock; only a hub-made id can collide.
                    Some(&SqlState::UNIQUE_VIOLATION) => {
                        LogError::Storage(format!("an event id collided: {e}"))
                    }
                    _ => pg(e),
                }
            })?;
        }
        tx.commit().await.map_err(pg)?;
        Ok(outcome)
    }

    async fn prune(&mut self, cutoff: Seq) -> Result<u64, LogError> {
        let tx = self.client.transaction().await.map_err(pg)?;
        let last: Option<i64> = tx
            .query_opt(
                "SELECT seq FROM events WHERE seq <= $1 ORDER BY seq LIMIT 1 OFFSET $2",
                &[&clamp(cutoff), &(PRUNE_CHUNK - 1)],
            )
            .await
            .map_err(pg)?
            .map(|r| r.get(0));
        let upto = last.unwrap_or(clamp(cutoff));
        tx.execute("DELETE FROM event_topics WHERE seq <= $1", &[&upto])
            .await
            .map_err(pg)?;
        let deleted = tx
            .execute("DELETE FROM events WHERE seq <= $1", &[&upto])
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(deleted)
    }
}

/// `batch` if none of its publisher ids is in `claimed` (the log's, and those admitted earlier
/// in the group) or given twice in it; its ids are then claimed.
fn admit(batch: Vec<NewEvent>, claimed: &mut HashSet<String>) -> Result<Vec<NewEvent>, LogError> {
    if let Some(dup) = duplicate_within(&batch) {
        return Err(LogError::DuplicateId(dup));
    }
    let ids = || {
        batch
            .iter()
            .filter_map(|e| e.id.as_ref().map(EventId::as_str))
    };
    if let Some(taken) = ids().find(|id| claimed.contains(*id)) {
        return Err(LogError::DuplicateId(taken.to_owned()));
    }
    claimed.extend(ids().map(str::to_owned));
    Ok(batch)
}

/// Events as the column arrays of one `unnest` insert.
struct EventRows<'a> {
    seqs: Vec<i64>,
    ids: Vec<&'a str>,
    topics: Vec<String>,
    kinds: Vec<Option<&'a str>>,
    datas: Vec<&'a [u8]>,
    retries: Vec<Option<i64>>,
    privates: Vec<bool>,
    topic_seqs: Vec<i64>,
    topic_names: Vec<&'a str>,
}

impl<'a> EventRows<'a> {
    fn of(events: &'a [Arc<Event>]) -> Self {
        let mut rows = Self {
            seqs: Vec::with_capacity(events.len()),
            ids: Vec::with_capacity(events.len()),
            topics: Vec::with_capacity(events.len()),
            kinds: Vec::with_capacity(events.len()),
            datas: Vec::with_capacity(events.len()),
            retries: Vec::with_capacity(events.len()),
            privates: Vec::with_capacity(events.len()),
            topic_seqs: Vec::new(),
            topic_names: Vec::new(),
        };
        for e in events {
            let s = clamp(e.seq);
            rows.seqs.push(s);
            rows.ids.push(e.id.as_str());
            let names: Vec<&str> = e.topics.iter().map(Topic::as_str).collect();
            rows.topics.push(names.join("\n"));
            rows.kinds.push(e.kind.as_ref().map(EventType::as_str));
            rows.datas.push(e.data.as_bytes());
            // Bit-cast: the full u64 range round-trips through bigint.
            rows.retries.push(e.retry.map(|r| r as i64));
            rows.privates.push(e.private);
            let mut distinct = HashSet::new();
            for t in names.into_iter().filter(|t| distinct.insert(*t)) {
                rows.topic_seqs.push(s);
                rows.topic_names.push(t);
            }
        }
        rows
    }
}

/// The event an outbox row asks for, or why it cannot be published.
fn outbox_event(row: &Row) -> Result<NewEvent, String> {
    let text = |e: tokio_postgres::Error| e.to_string();
    let topics: Option<Vec<Option<String>>> = row.try_get(1).map_err(text)?;
    let topics = topics
        .unwrap_or_default()
        .into_iter()
        .map(|t| Topic::parse(t.as_deref().unwrap_or("")))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let data: Option<String> = row.try_get(3).map_err(text)?;
    let mut new = NewEvent::new(topics, data.unwrap_or_default()).map_err(|e| e.to_string())?;
    if let Some(kind) = row.try_get::<_, Option<&str>>(2).map_err(text)? {
        new.kind = Some(EventType::parse(kind).map_err(|e| e.to_string())?);
    }
    if let Some(id) = row.try_get::<_, Option<&str>>(4).map_err(text)? {
        // As over HTTP: webhook deliveries' ids are theirs, so a retried delivery stays a
        // duplicate and an application cannot claim a future one.
        if id.starts_with("webhook:") {
            return Err(
                "ids starting with \"webhook:\" are reserved for webhook deliveries".into(),
            );
        }
        new.id = Some(EventId::parse(id).map_err(|e| e.to_string())?);
    }
    if let Some(retry) = row.try_get::<_, Option<i64>>(5).map_err(text)? {
        new.retry = Some(u64::try_from(retry).map_err(|_| "retry is negative".to_owned())?);
    }
    new.private = row
        .try_get::<_, Option<bool>>(6)
        .map_err(text)?
        .unwrap_or(false);
    Ok(new)
}

/// A few connections shared round-robin; each is used concurrently by many reads.
struct Readers {
    config: Target,
    next: AtomicUsize,
    clients: Vec<Mutex<Arc<Client>>>,
}

impl Readers {
    async fn connect(config: Target, size: usize) -> Result<Self, LogError> {
        let mut clients = Vec::with_capacity(size);
        for _ in 0..size {
            clients.push(Mutex::new(Arc::new(connect(&config).await?)));
        }
        Ok(Self {
            config,
            next: AtomicUsize::new(0),
            clients,
        })
    }

    /// The next connection, reconnected first if it was closed.
    async fn get(&self) -> Result<Arc<Client>, LogError> {
        let slot = &self.clients[self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len()];
        let mut client = slot.lock().await;
        if client.is_closed() {
            tracing::warn!("reconnecting a PostgreSQL reader");
            *client = Arc::new(connect(&self.config).await?);
        }
        Ok(client.clone())
    }
}
