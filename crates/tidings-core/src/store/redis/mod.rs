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
//!
//! Files: this one holds [`RedisLog`] itself (keys, opening and the server check, reads, the
//! [`EventLog`] impl); `writer.rs` the group-commit writer task; `listener.rs` the SUBSCRIBE
//! connection; `decode.rs` stream entries into events; `append.lua` and `prune.lua` the scripts.

mod decode;
mod listener;
mod writer;

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script, Value};
use tokio::sync::{broadcast, mpsc};

use self::decode::decode_entries;
use self::listener::{listen, subscribe, Link};
use self::writer::{Pending, Writer};
use super::duplicate_within;
use crate::event::{Event, NewEvent, Seq};
use crate::log::{Commit, EventLog, LogError, LogStats, Retention, Scope};

/// Most append requests committed by one script.
pub const MAX_GROUP: usize = 1024;
/// Most events deleted by one prune script, so appends are never held up for long.
pub const PRUNE_CHUNK: usize = 1000;
/// Longest accepted key prefix.
pub const MAX_PREFIX_LEN: usize = 100;
/// Most events or seqs asked of Redis in one command.
const PAGE: usize = 1000;

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
        let seqs = self.latest_seqs(scope, upto).await?;
        self.fetch(&seqs).await
    }

    async fn latest_seqs(&self, scope: &Scope, upto: Seq) -> Result<Vec<Seq>, LogError> {
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
        Ok(seqs.into_iter().collect())
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
}
