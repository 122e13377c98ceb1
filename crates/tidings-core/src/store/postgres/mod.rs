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
//! Files: this one holds [`PostgresLog`] itself (opening, migrations, reads, the [`EventLog`]
//! impl); `writer.rs` the group-commit writer task and the outbox drain; `listener.rs` the LISTEN
//! connection; `decode.rs` rows into events; `tls.rs` the `sslmode` connector; `watch.rs` the
//! triggers of `tidings pg watch`.
//!
//! TODO: prepared-statement caching on the read connections.

mod decode;
mod listener;
mod tls;
pub mod watch;
mod writer;

use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{broadcast, mpsc, Mutex};
use tokio_postgres::{Client, Config};
use tokio_postgres_rustls::MakeRustlsConnect;

use self::decode::{event_from_row, COLUMNS};
use self::listener::Listener;
use self::writer::{DrainSignal, Job, Reply, Statements, Writer};
use super::clamp;
use crate::event::{Event, NewEvent, Seq};
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

/// A PostgreSQL error with the server's message when there is one, else with its causes (a
/// TLS handshake failure says why).
fn pg(e: tokio_postgres::Error) -> LogError {
    LogError::Storage(pg_reason(&e))
}

/// A PostgreSQL error in one line with the server's own reason (`db error` alone says nothing):
/// the server's message when it sent one, else the chain of causes.
pub(crate) fn pg_reason(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{db}");
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
    text
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

    async fn latest_seqs(&self, scope: &Scope, upto: Seq) -> Result<Vec<Seq>, LogError> {
        let upto = clamp(upto);
        let client = self.readers.get().await?;
        let rows = match scope {
            Scope::All => client
                .query(
                    "SELECT max(seq) FROM event_topics WHERE seq <= $1 GROUP BY topic",
                    &[&upto],
                )
                .await
                .map_err(pg)?,
            Scope::Topics(topics) if topics.is_empty() => return Ok(Vec::new()),
            Scope::Topics(topics) => client
                .query(
                    "SELECT (SELECT max(et.seq) FROM event_topics et \
                             WHERE et.topic = t.topic AND et.seq <= $2) \
                     FROM unnest($1::text[]) AS t(topic)",
                    &[topics, &upto],
                )
                .await
                .map_err(pg)?,
        };
        let mut seqs: Vec<Seq> = rows
            .iter()
            .filter_map(|r| r.get::<_, Option<i64>>(0))
            .map(|s| s as Seq)
            .collect();
        seqs.sort_unstable();
        seqs.dedup();
        Ok(seqs)
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
