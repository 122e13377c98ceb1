//! `RedisLog`: the event log in Redis, shareable by several hub nodes (a cluster where teams
//! already run Redis). Needs Redis 6.2 or newer, one primary (Sentinel or a managed failover is
//! fine; Redis Cluster sharding is not supported: every key of a log shares one hash tag).
//!
//! Layout, for the prefix `P` (each hub cluster, or each test, its own), all in hash tag `{P}`:
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `{P}:seq` | string | the last seq given out; only ever incremented |
//! | `{P}:log` | stream | one entry per event, entry id `<seq>-0`, fields `i` id, `t` topics (joined by `\n`), `k` type, `d` data, `r` retry, `p` private, `s` stored_at (ms, Redis clock) |
//! | `{P}:ids` | hash | event id → seq: cluster-wide duplicate refusal and `locate` |
//! | `{P}:t:<topic>` | sorted set | the seqs of a topic's events: topic-scoped reads and `latest` |
//! | `{P}:topics` | sorted set | every topic with events, scored by its newest seq: `latest` of all topics |
//! | `{P}:commits` | pub/sub channel | `"<upto> <node>"` after each commit |
//!
//! Appends: one writer task per node takes every waiting append (up to [`MAX_GROUP`] requests)
//! and runs them as one Lua script (`redis/append.lua`). Redis runs a script alone, so the
//! script's checks and writes are atomic: it refuses a request whose ids are already in
//! `{P}:ids` (publisher ids are unique across the cluster; a refused request consumes no seq),
//! INCRBYs the counter, XADDs each event under its seq, updates the indexes and PUBLISHes the
//! new upper bound. Seqs are thus handed out in commit order across every node, without holes:
//! a reader that has read seq N can never see a smaller seq appear later. Publishers are answered
//! only after Redis answered the script; what that reply guarantees depends on the server's
//! persistence settings (see the README), and [`RedisLog::connect`] warns when the server keeps
//! nothing on disk.
//!
//! Tailing: each node keeps one SUBSCRIBE connection on `{P}:commits` and turns other nodes'
//! messages into `Commit { upto, events: None }` wake-ups; the hub's pump then reads the missing
//! range with XRANGE. (A wake-up channel rather than a blocking XREAD per node: the pump already
//! reads the log on wake-ups, and a notice never carries foreign events, so nothing is read
//! twice.) Pub/sub loses messages while a link is down, so after re-subscribing the listener
//! emits a catch-up `Commit { upto: <the counter> }`; the rows are the truth. Its own echoes are
//! skipped: the writer already announced those commits with their events. The listener pings
//! the server every few seconds, so a silent dead link is noticed too; while it is down,
//! [`EventLog::health`] says so and `/healthz` reports degraded.
//!
//! Reads and index look-ups go through a [`ConnectionManager`] (one multiplexed connection that
//! reconnects by itself with backoff); a read during an outage fails and is retried by its caller.
//!
//! Retention (`redis/prune.lua`) deletes the oldest events in chunks of [`PRUNE_CHUNK`], each
//! chunk atomically with its index entries, then XTRIMs the stream to the first kept seq.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script, Value};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::duplicate_within;
use crate::event::{Event, EventId, EventType, NewEvent, Seq, Topic};
use crate::log::{Commit, EventLog, LogError, LogStats, Retention, Scope};

/// Most append requests committed by one script.
pub const MAX_GROUP: usize = 1024;
/// Most bytes of event data and topics in one group (a single larger request still goes alone).
const MAX_GROUP_BYTES: usize = 4 << 20;
/// Most events deleted by one prune script, so appends are never held up for long.
pub const PRUNE_CHUNK: usize = 1000;
/// Longest accepted key prefix.
pub const MAX_PREFIX_LEN: usize = 100;
/// Most events or seqs asked of Redis in one command.
const PAGE: usize = 1000;
/// How often the listener pings its connection, and how long a ping may take.
const PING_EVERY: Duration = Duration::from_secs(5);
const PING_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait between two reconnection attempts of the listener.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

const APPEND_LUA: &str = include_str!("append.lua");
const PRUNE_LUA: &str = include_str!("prune.lua");

/// How to open a [`RedisLog`].
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://[user:password@]host[:port][/db]`, or `rediss://` for TLS.
    pub url: String,
    /// What every key of the log starts with: printable ASCII without spaces or braces, at most
    /// [`MAX_PREFIX_LEN`] bytes. Hubs with the same prefix share one log.
    pub prefix: String,
}

impl RedisOptions {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: "tidings".into(),
        }
    }

    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }
}

/// Checks a key prefix (see [`RedisOptions::prefix`]).
pub fn check_prefix(prefix: &str) -> Result<(), LogError> {
    let ok = !prefix.is_empty()
        && prefix.len() <= MAX_PREFIX_LEN
        && prefix
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}');
    if ok {
        Ok(())
    } else {
        Err(LogError::Storage(format!(
            "invalid Redis key prefix {prefix:?}: use 1 to {MAX_PREFIX_LEN} printable ASCII \
             characters without spaces or braces"
        )))
    }
}

/// The names of a log's keys.
#[derive(Debug, Clone)]
struct Keys {
    seq: String,
    log: String,
    ids: String,
    topics: String,
    /// Followed by a topic: that topic's sorted set.
    topic_prefix: String,
    channel: String,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        let tag = format!("{{{prefix}}}");
        Self {
            seq: format!("{tag}:seq"),
            log: format!("{tag}:log"),
            ids: format!("{tag}:ids"),
            topics: format!("{tag}:topics"),
            topic_prefix: format!("{tag}:t:"),
            channel: format!("{tag}:commits"),
        }
    }

    fn topic(&self, topic: &str) -> String {
        format!("{}{topic}", self.topic_prefix)
    }
}

type Reply<T> = oneshot::Sender<Result<T, LogError>>;

/// An append waiting for the next group commit.
struct Pending {
    batch: Vec<NewEvent>,
    reply: Reply<Vec<Arc<Event>>>,
}

/// Whether the listener's link is up; `Some(reason)` while it is down.
#[derive(Default)]
struct Link(Mutex<Option<String>>);

impl Link {
    fn set(&self, down: Option<String>) {
        // A poisoned lock only means a panic elsewhere mid-assignment; the value is still usable.
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = down;
    }

    fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// See the module documentation.
pub struct RedisLog {
    conn: ConnectionManager,
    keys: Arc<Keys>,
    jobs: mpsc::Sender<Pending>,
    commits: broadcast::Sender<Commit>,
    link: Arc<Link>,
    prune_script: Script,
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for RedisLog {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

fn storage(e: impl std::fmt::Display) -> LogError {
    LogError::Storage(format!("redis: {e}"))
}

impl RedisLog {
    /// Connects, checks the server, and starts the writer and the listener.
    pub async fn connect(options: RedisOptions) -> Result<Self, LogError> {
        check_prefix(&options.prefix)?;
        let keys = Arc::new(Keys::new(&options.prefix));
        let client = Client::open(options.url.as_str()).map_err(storage)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(30)))
            .set_number_of_retries(5)
            .set_max_delay(Duration::from_secs(2));
        let mut conn = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(storage)?;
        check_server(&mut conn).await?;

        let (commits, _) = broadcast::channel(1024);
        let link = Arc::new(Link::default());
        let node = uuid::Uuid::now_v7().simple().to_string();
        // Subscribed before returning, so no commit after `connect` goes unheard.
        let pubsub = subscribe(&client, &keys.channel).await?;
        let listener = tokio::spawn(listen(
            client,
            pubsub,
            conn.clone(),
            keys.clone(),
            node.clone(),
            commits.clone(),
            link.clone(),
        ));

        let (jobs, rx) = mpsc::channel(MAX_GROUP * 4);
        let writer = Writer {
            conn: conn.clone(),
            keys: keys.clone(),
            node,
            script: Script::new(APPEND_LUA),
        };
        tokio::spawn(writer.run(rx, commits.clone()));
        Ok(Self {
            conn,
            keys,
            jobs,
            commits,
            link,
            prune_script: Script::new(PRUNE_LUA),
            listener,
        })
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// The events at `seqs` (ascending), skipping any pruned meanwhile.
    async fn fetch(&self, seqs: &[Seq]) -> Result<Vec<Arc<Event>>, LogError> {
        let mut out = Vec::with_capacity(seqs.len());
        for chunk in seqs.chunks(PAGE) {
            let mut pipe = redis::pipe();
            for seq in chunk {
                let id = format!("{seq}-0");
                pipe.cmd("XRANGE").arg(&self.keys.log).arg(&id).arg(&id);
            }
            let replies: Vec<Value> = pipe.query_async(&mut self.conn()).await.map_err(storage)?;
            for reply in replies {
                out.extend(decode_entries(reply)?);
            }
        }
        Ok(out)
    }

    /// Up to `limit` seqs in `(after, upto]` of any of `topics`, ascending and distinct.
    async fn topic_seqs(
        &self,
        topics: &[&str],
        after: Seq,
        upto: Seq,
        limit: usize,
    ) -> Result<Vec<Seq>, LogError> {
        let mut merged = BTreeSet::new();
        for chunk in topics.chunks(PAGE) {
            let mut pipe = redis::pipe();
            for topic in chunk {
                pipe.cmd("ZRANGEBYSCORE")
                    .arg(self.keys.topic(topic))
                    .arg(format!("({after}"))
                    .arg(upto)
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit);
            }
            let replies: Vec<Vec<String>> =
                pipe.query_async(&mut self.conn()).await.map_err(storage)?;
            merged.extend(
                replies
                    .iter()
                    .flatten()
                    .filter_map(|s| s.parse::<Seq>().ok()),
            );
        }
        // Each topic gave its first `limit`, so the first `limit` of the union are exact.
        Ok(merged.into_iter().take(limit).collect())
    }

    /// For each of `topics`, the seq of its newest event at or before `upto`.
    async fn newest_of(&self, topics: &[String], upto: Seq) -> Result<Vec<Seq>, LogError> {
        let mut seqs = Vec::new();
        for chunk in topics.chunks(PAGE) {
            let mut pipe = redis::pipe();
            for topic in chunk {
                pipe.cmd("ZREVRANGEBYSCORE")
                    .arg(self.keys.topic(topic))
                    .arg(upto)
                    .arg("-inf")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(1);
            }
            let replies: Vec<Vec<String>> =
                pipe.query_async(&mut self.conn()).await.map_err(storage)?;
            seqs.extend(
                replies
                    .iter()
                    .flatten()
                    .filter_map(|s| s.parse::<Seq>().ok()),
            );
        }
        Ok(seqs)
    }

    /// The newest event of every topic at or before `upto`, as seqs.
    async fn newest_of_all(&self, upto: Seq) -> Result<Vec<Seq>, LogError> {
        // One command, one snapshot: each topic with its newest seq.
        let pairs: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(&self.keys.topics)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut self.conn())
            .await
            .map_err(storage)?;
        let mut seqs = Vec::new();
        let mut newer = Vec::new();
        for (topic, score) in pairs {
            // Scores are seqs, exact below 2^53.
            let newest = score as Seq;
            if newest <= upto {
                seqs.push(newest);
            } else {
                newer.push(topic);
            }
        }
        seqs.extend(self.newest_of(&newer, upto).await?);
        Ok(seqs)
    }
}

/// Fails on a server too old for the commands the log uses; warns when it keeps nothing on disk
/// or may evict keys. Tolerates INFO and CONFIG being disabled.
async fn check_server(conn: &mut ConnectionManager) -> Result<(), LogError> {
    if let Ok(info) = redis::cmd("INFO")
        .arg("server")
        .query_async::<String>(conn)
        .await
    {
        let version = info
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .map(str::trim)
            .unwrap_or("");
        let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        if !version.is_empty() && (major, minor) < (6, 2) {
            return Err(LogError::Storage(format!(
                "Redis {version} is too old: the Redis store needs 6.2 or newer"
            )));
        }
    }
    let mut settings = std::collections::HashMap::new();
    for name in [
        "appendonly",
        "appendfsync",
        "save",
        "maxmemory",
        "maxmemory-policy",
    ] {
        match redis::cmd("CONFIG")
            .arg("GET")
            .arg(name)
            .query_async::<Vec<String>>(conn)
            .await
        {
            Ok(pair) if pair.len() == 2 => {
                settings.insert(name, pair[1].clone());
            }
            Ok(_) => {}
            Err(e) => {
                tracing::info!(
                    error = %e,
                    "cannot read the Redis persistence settings (CONFIG GET refused); make sure \
                     the server keeps its data on disk (appendonly yes)"
                );
                return Ok(());
            }
        }
    }
    let get = |name: &str| settings.get(name).map(String::as_str).unwrap_or("");
    let aof = get("appendonly") == "yes";
    let rdb = !get("save").trim().is_empty();
    match (aof, get("appendfsync")) {
        (true, "always") => tracing::info!("Redis persistence: AOF, fsync always"),
        (true, fsync) => tracing::warn!(
            appendfsync = fsync,
            "Redis persistence: AOF without fsync per write; acknowledged events survive a crash \
             of Redis but the last second or so may be lost if the machine fails"
        ),
        (false, _) if rdb => tracing::warn!(
            save = get("save"),
            "Redis persistence: RDB snapshots only; acknowledged events since the last snapshot \
             are LOST when Redis restarts (set appendonly yes)"
        ),
        (false, _) => tracing::warn!(
            "the Redis server keeps NOTHING on disk (appendonly no, no save points): every event \
             is lost when it restarts; set appendonly yes (and appendfsync always or everysec)"
        ),
    }
    let policy = get("maxmemory-policy");
    if get("maxmemory") != "0" && !policy.is_empty() && policy != "noeviction" {
        tracing::warn!(
            maxmemory_policy = policy,
            "Redis may evict keys under memory pressure, which would corrupt the log; use \
             maxmemory-policy noeviction"
        );
    }
    Ok(())
}

/// A connection subscribed to `channel`.
async fn subscribe(client: &Client, channel: &str) -> Result<redis::aio::PubSub, LogError> {
    let mut pubsub = tokio::time::timeout(PING_TIMEOUT, client.get_async_pubsub())
        .await
        .map_err(|_| storage("timed out connecting"))?
        .map_err(storage)?;
    pubsub.subscribe(channel).await.map_err(storage)?;
    Ok(pubsub)
}

/// Turns other nodes' commit messages into wake-ups, for as long as the log lives: re-subscribes
/// with backoff when the link drops, and then sends a catch-up wake-up.
async fn listen(
    client: Client,
    first: redis::aio::PubSub,
    mut conn: ConnectionManager,
    keys: Arc<Keys>,
    node: String,
    commits: broadcast::Sender<Commit>,
    link: Arc<Link>,
) {
    let mut next = Some(first);
    let mut backoff = Duration::from_millis(100);
    loop {
        let pubsub = match next.take() {
            Some(p) => p,
            None => match subscribe(&client, &keys.channel).await {
                Ok(p) => p,
                Err(e) => {
                    link.set(Some(format!("Redis is unreachable, reconnecting: {e}")));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            },
        };
        if link.get().is_some() {
            // Messages published while the link was down are lost: wake the pump to read the
            // log up to the counter, which covers every commit so far.
            match redis::cmd("GET")
                .arg(&keys.seq)
                .query_async::<Option<Seq>>(&mut conn)
                .await
            {
                Ok(upto) => {
                    tracing::info!("the Redis link is back");
                    link.set(None);
                    let _ = commits.send(Commit {
                        upto: upto.unwrap_or(0),
                        events: None,
                    });
                }
                Err(e) => {
                    link.set(Some(format!("Redis does not answer, reconnecting: {e}")));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
        }
        backoff = Duration::from_millis(100);
        let reason = follow(pubsub, &node, &commits).await;
        tracing::warn!(reason, "the Redis subscription was lost; reconnecting");
        link.set(Some(format!(
            "the Redis link is down ({reason}); reconnecting"
        )));
    }
}

/// Forwards commit messages until the connection fails; returns why it ended.
async fn follow(
    pubsub: redis::aio::PubSub,
    node: &str,
    commits: &broadcast::Sender<Commit>,
) -> String {
    let (mut sink, mut stream) = pubsub.split();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = stream.next() => {
                let Some(msg) = msg else {
                    return "connection closed".to_owned();
                };
                let payload = String::from_utf8_lossy(msg.get_payload_bytes());
                let mut parts = payload.split(' ');
                let upto = parts.next().and_then(|s| s.parse::<Seq>().ok());
                match upto {
                    Some(_) if parts.next() == Some(node) => {}
                    Some(upto) => {
                        let _ = commits.send(Commit { upto, events: None });
                    }
                    None => tracing::warn!(payload = %payload, "odd commit message"),
                }
            }
            _ = ping.tick() => {
                match tokio::time::timeout(PING_TIMEOUT, sink.ping::<Value>()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return e.to_string(),
                    Err(_) => return "ping timed out".to_owned(),
                }
            }
        }
    }
}

#[async_trait]
impl EventLog for RedisLog {
    async fn append(&self, batch: Vec<NewEvent>) -> Result<Vec<Arc<Event>>, LogError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(dup) = duplicate_within(&batch) {
            return Err(LogError::DuplicateId(dup));
        }
        super::request(&self.jobs, |reply| Pending { batch, reply }).await
    }

    async fn read(
        &self,
        after: Seq,
        upto: Seq,
        scope: &Scope,
        limit: usize,
    ) -> Result<Vec<Arc<Event>>, LogError> {
        let mut out: Vec<Arc<Event>> = Vec::new();
        let mut cursor = after;
        match scope {
            Scope::All => {
                while out.len() < limit && cursor < upto {
                    let page = (limit - out.len()).min(PAGE);
                    let reply: Value = redis::cmd("XRANGE")
                        .arg(&self.keys.log)
                        .arg(format!("{}-0", cursor + 1))
                        .arg(format!("{upto}-0"))
                        .arg("COUNT")
                        .arg(page)
                        .query_async(&mut self.conn())
                        .await
                        .map_err(storage)?;
                    let events = decode_entries(reply)?;
                    let Some(last) = events.last() else { break };
                    cursor = last.seq;
                    let full = events.len() == page;
                    out.extend(events);
                    if !full {
                        break;
                    }
                }
            }
            Scope::Topics(topics) => {
                let mut distinct = HashSet::new();
                let topics: Vec<&str> = topics
                    .iter()
                    .map(String::as_str)
                    .filter(|t| distinct.insert(*t))
                    .collect();
                while out.len() < limit && cursor < upto && !topics.is_empty() {
                    let page = (limit - out.len()).min(PAGE);
                    let seqs = self.topic_seqs(&topics, cursor, upto, page).await?;
                    let Some(&last) = seqs.last() else { break };
                    cursor = last;
                    out.extend(self.fetch(&seqs).await?);
                    if seqs.len() < page {
                        break;
                    }
                }
            }
        }
        Ok(out)
    }

    async fn locate(&self, id: &str) -> Result<Option<Seq>, LogError> {
        redis::cmd("HGET")
            .arg(&self.keys.ids)
            .arg(id)
            .query_async::<Option<Seq>>(&mut self.conn())
            .await
            .map_err(storage)
    }

    async fn latest(&self, scope: &Scope, upto: Seq) -> Result<Vec<Arc<Event>>, LogError> {
        let seqs = match scope {
            Scope::All => self.newest_of_all(upto).await?,
            Scope::Topics(topics) => {
                let mut distinct = HashSet::new();
                let topics: Vec<String> = topics
                    .iter()
                    .filter(|t| distinct.insert(t.as_str()))
                    .cloned()
                    .collect();
                self.newest_of(&topics, upto).await?
            }
        };
        let seqs: BTreeSet<Seq> = seqs.into_iter().filter(|s| *s <= upto).collect();
        let seqs: Vec<Seq> = seqs.into_iter().collect();
        self.fetch(&seqs).await
    }

    async fn prune(&self, retention: Retention) -> Result<u64, LogError> {
        let keep = retention
            .max_events
            .map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
        // An age too large for milliseconds in an i64 keeps everything, like no limit.
        let max_age = retention
            .max_age
            .and_then(|a| i64::try_from(a.as_millis()).ok());
        if keep < 0 && max_age.is_none() {
            return Ok(0);
        }
        let mut total = 0;
        loop {
            let deleted: u64 = self
                .prune_script
                .key(&self.keys.log)
                .key(&self.keys.ids)
                .key(&self.keys.topics)
                .arg(&self.keys.topic_prefix)
                .arg(keep)
                .arg(max_age.unwrap_or(-1))
                .arg(PRUNE_CHUNK)
                .invoke_async(&mut self.conn())
                .await
                .map_err(storage)?;
            total += deleted;
            if deleted < PRUNE_CHUNK as u64 {
                return Ok(total);
            }
        }
    }

    async fn stats(&self) -> Result<LogStats, LogError> {
        // MULTI/EXEC: one snapshot, so the count and both ends agree.
        let (count, oldest, newest): (u64, Value, Value) = redis::pipe()
            .atomic()
            .cmd("XLEN")
            .arg(&self.keys.log)
            .cmd("XRANGE")
            .arg(&self.keys.log)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .cmd("XREVRANGE")
            .arg(&self.keys.log)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut self.conn())
            .await
            .map_err(storage)?;
        let end = |v: Value| -> Result<Option<(Seq, String)>, LogError> {
            Ok(decode_entries(v)?
                .first()
                .map(|e| (e.seq, e.id.as_str().to_owned())))
        };
        Ok(LogStats {
            events: count,
            oldest: end(oldest)?,
            newest: end(newest)?,
        })
    }

    fn commits(&self) -> broadcast::Receiver<Commit> {
        self.commits.subscribe()
    }

    fn health(&self) -> Result<(), String> {
        match self.link.get() {
            Some(reason) => Err(reason),
            None => Ok(()),
        }
    }
}

/// Stream entries (an XRANGE answer) as events.
fn decode_entries(reply: Value) -> Result<Vec<Arc<Event>>, LogError> {
    let entries = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(entries) => entries,
        other => return Err(storage(format!("unexpected XRANGE answer {other:?}"))),
    };
    entries.into_iter().map(decode_entry).collect()
}

fn text(v: Value) -> Result<String, LogError> {
    match v {
        Value::BulkString(b) => String::from_utf8(b).map_err(storage),
        Value::SimpleString(s) => Ok(s),
        other => Err(storage(format!("expected a string, got {other:?}"))),
    }
}

/// One `[id, [field, value, ...]]` stream entry as an event.
fn decode_entry(entry: Value) -> Result<Arc<Event>, LogError> {
    let bad = || storage("malformed stream entry");
    let Value::Array(parts) = entry else {
        return Err(bad());
    };
    let mut parts = parts.into_iter();
    let (Some(id), Some(fields)) = (parts.next(), parts.next()) else {
        return Err(bad());
    };
    let entry_id = text(id)?;
    let seq: Seq = entry_id
        .split('-')
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    let pairs: Vec<(Value, Value)> = match fields {
        Value::Array(flat) => {
            let mut flat = flat.into_iter();
            let mut pairs = Vec::new();
            while let (Some(k), Some(v)) = (flat.next(), flat.next()) {
                pairs.push((k, v));
            }
            pairs
        }
        Value::Map(pairs) => pairs,
        _ => return Err(bad()),
    };
    let (mut id, mut topics, mut kind, mut data, mut retry, mut private, mut stored) =
        (None, None, None, None, None, false, None);
    for (k, v) in pairs {
        match text(k)?.as_str() {
            "i" => id = Some(text(v)?),
            "t" => topics = Some(text(v)?),
            "k" => kind = Some(text(v)?).filter(|k| !k.is_empty()),
            "d" => data = Some(text(v)?),
            "r" => {
                let r = text(v)?;
                retry = if r.is_empty() {
                    None
                } else {
                    Some(r.parse::<u64>().map_err(storage)?)
                };
            }
            "p" => private = text(v)? == "1",
            "s" => stored = Some(text(v)?.parse::<i64>().map_err(storage)?),
            _ => {}
        }
    }
    let (Some(id), Some(topics), Some(data), Some(stored)) = (id, topics, data, stored) else {
        return Err(bad());
    };
    Ok(Arc::new(Event {
        seq,
        id: EventId::from_stored(&id),
        topics: topics.split('\n').map(Topic::from_stored).collect(),
        kind: kind.as_deref().map(EventType::from_stored),
        data: data.into_boxed_str(),
        retry,
        private,
        stored_at_ms: stored,
    }))
}

struct Writer {
    conn: ConnectionManager,
    keys: Arc<Keys>,
    /// This process's id in commit messages, so the listener can skip its own.
    node: String,
    script: Script,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Pending>, commits: broadcast::Sender<Commit>) {
        let mut group: Vec<Pending> = Vec::with_capacity(MAX_GROUP);
        let mut carry: Option<Pending> = None;
        loop {
            let first = match carry.take() {
                Some(p) => p,
                None => match rx.recv().await {
                    Some(p) => p,
                    None => return,
                },
            };
            let mut bytes = weight(&first.batch);
            group.push(first);
            while group.len() < MAX_GROUP {
                let Ok(next) = rx.try_recv() else { break };
                let w = weight(&next.batch);
                if bytes + w > MAX_GROUP_BYTES {
                    carry = Some(next);
                    break;
                }
                bytes += w;
                group.push(next);
            }
            self.commit_group(&mut group, &commits).await;
        }
    }

    /// Runs the group's script and answers each request.
    async fn commit_group(
        &mut self,
        group: &mut Vec<Pending>,
        commits: &broadcast::Sender<Commit>,
    ) {
        let mut batches: Vec<Vec<NewEvent>> = group
            .iter_mut()
            .map(|p| std::mem::take(&mut p.batch))
            .collect();
        // Hub-made ids are chosen here, so the script can check and index every id alike.
        for e in batches.iter_mut().flatten() {
            if e.id.is_none() {
                e.id = Some(EventId::generate());
            }
        }
        let result = self.run_script(&batches).await;
        let replies = group.drain(..).map(|p| p.reply);
        let result = result.map(|(stored_at, outcomes)| {
            let answers = batches
                .into_iter()
                .zip(outcomes)
                .map(|(batch, outcome)| match outcome {
                    Outcome::Stored(first) => Ok(batch
                        .into_iter()
                        .enumerate()
                        .map(|(i, new)| Arc::new(Event::stored(first + i as Seq, new, stored_at)))
                        .collect()),
                    Outcome::Duplicate(id) => Err(LogError::DuplicateId(id)),
                })
                .collect();
            (Vec::new(), answers)
        });
        super::answer_group(replies, result, commits);
    }

    /// Invokes the append script; answers the stored_at and each request's outcome.
    async fn run_script(
        &mut self,
        batches: &[Vec<NewEvent>],
    ) -> Result<(i64, Vec<Outcome>), LogError> {
        let mut call = self.script.prepare_invoke();
        call.key(&self.keys.seq)
            .key(&self.keys.log)
            .key(&self.keys.ids)
            .key(&self.keys.topics)
            .arg(&self.keys.topic_prefix)
            .arg(&self.keys.channel)
            .arg(&self.node)
            .arg(batches.len());
        for batch in batches {
            call.arg(batch.len());
            for e in batch {
                let topics: Vec<&str> = e.topics.iter().map(Topic::as_str).collect();
                call.arg(e.id.as_ref().map_or("", EventId::as_str))
                    .arg(topics.join("\n"))
                    .arg(e.kind.as_ref().map_or("", EventType::as_str))
                    .arg(e.data.as_str())
                    .arg(e.retry.map(|r| r.to_string()).unwrap_or_default())
                    .arg(if e.private { "1" } else { "0" });
            }
        }
        let reply: Value = call.invoke_async(&mut self.conn).await.map_err(storage)?;
        let Value::Array(items) = reply else {
            return Err(storage(format!("unexpected append answer {reply:?}")));
        };
        let mut items = items.into_iter();
        let Some(Value::Int(stored_at)) = items.next() else {
            return Err(storage("the append answer has no time"));
        };
        let outcomes = items
            .map(|v| match v {
                Value::Int(first) if first > 0 => Ok(Outcome::Stored(first as Seq)),
                Value::BulkString(_) | Value::SimpleString(_) => Ok(Outcome::Duplicate(text(v)?)),
                other => Err(storage(format!("unexpected append outcome {other:?}"))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if outcomes.len() != batches.len() {
            return Err(storage("the append answer does not match the requests"));
        }
        Ok((stored_at, outcomes))
    }
}

enum Outcome {
    /// Stored from this seq on.
    Stored(Seq),
    /// Refused: this id is already in the log.
    Duplicate(String),
}

/// The bytes a batch adds to a group's script call, roughly.
fn weight(batch: &[NewEvent]) -> usize {
    batch
        .iter()
        .map(|e| e.data.len() + e.topics.iter().map(|t| t.as_str().len() + 1).sum::<usize>() + 64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_checked() {
        assert!(check_prefix("tidings").is_ok());
        assert!(check_prefix("app:prod-1").is_ok());
        for bad in [
            "",
            "a b",
            "{x}",
            "x}",
            "a\nb",
            &"p".repeat(MAX_PREFIX_LEN + 1),
        ] {
            assert!(check_prefix(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn keys_share_one_hash_tag() {
        let k = Keys::new("app");
        for key in [
            &k.seq,
            &k.log,
            &k.ids,
            &k.topics,
            &k.channel,
            &k.topic("jobs/1"),
        ] {
            assert!(key.starts_with("{app}:"), "{key}");
        }
    }

    #[test]
    fn entries_decode_and_malformed_ones_are_errors() {
        let s = |x: &str| Value::BulkString(x.as_bytes().to_vec());
        let entry = Value::Array(vec![
            s("42-0"),
            Value::Array(vec![
                s("i"),
                s("id-1"),
                s("t"),
                s("a\nb"),
                s("k"),
                s(""),
                s("d"),
                s("x\ny"),
                s("r"),
                s("18446744073709551615"),
                s("p"),
                s("1"),
                s("s"),
                s("1700000000000"),
            ]),
        ]);
        let e = decode_entry(entry).unwrap();
        assert_eq!(e.seq, 42);
        assert_eq!(e.id.as_str(), "id-1");
        assert_eq!(e.topics.len(), 2);
        assert_eq!(e.kind, None);
        assert_eq!(&*e.data, "x\ny");
        assert_eq!(e.retry, Some(u64::MAX));
        assert!(e.private);
        for bad in [
            Value::Nil,
            Value::Array(vec![s("x-0"), Value::Array(vec![])]),
            Value::Array(vec![s("1-0"), Value::Array(vec![s("i"), s("x")])]),
            Value::Array(vec![s("1-0")]),
            Value::Int(3),
        ] {
            assert!(decode_entry(bad).is_err());
        }
        assert!(decode_entries(Value::Int(1)).is_err());
        assert!(decode_entries(Value::Nil).unwrap().is_empty());
    }
}
