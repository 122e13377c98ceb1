//! The event-log behavioural suite, run against `RedisLog` under a fresh key prefix per test,
//! plus the checks only a shared store has: several nodes on one log, duplicate ids across
//! nodes, one order under concurrent appends from several nodes, and a Redis restart.
//!
//! The server is `TIDINGS_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`). When it is
//! unreachable the tests print "SKIPPED: Redis not reachable" and pass, unless `CI=true`, where
//! they fail. The restart test runs its own `redis-server` (from `PATH`) on a free port.

#![cfg(feature = "redis")]

mod log_suite;

use std::sync::Arc;
use std::time::Duration;

use log_suite::{all_events, append_ok, ev, ev_id};
use tidings_core::event::Seq;
use tidings_core::log::{EventLog, LogError, Scope};
use tidings_core::store::redis::{RedisLog, RedisOptions};

/// The test server's URL, or `None` (after panicking under CI) when it does not answer.
fn server_url() -> Option<String> {
    let url = std::env::var("TIDINGS_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let reachable = redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
    match reachable {
        Ok(_) => Some(url),
        Err(e) if log_suite::under_ci() => {
            panic!("Redis not reachable at {url} under CI=true: {e}")
        }
        Err(_) => None,
    }
}

/// A key prefix of its own; its keys are deleted when the test ends.
struct Prefix {
    url: String,
    name: String,
}

impl Drop for Prefix {
    fn drop(&mut self) {
        delete_keys(&self.url, &self.name);
    }
}

/// Deletes every key of the log with this prefix (synchronously: this may run in a destructor).
fn delete_keys(url: &str, prefix: &str) {
    let Ok(mut conn) = redis::Client::open(url)
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
    else {
        return;
    };
    let pattern = format!("{{{prefix}}}:*");
    let keys: Vec<String> = match redis::cmd("SCAN")
        .cursor_arg(0)
        .arg("MATCH")
        .arg(&pattern)
        .arg("COUNT")
        .arg(1000)
        .clone()
        .iter::<String>(&mut conn)
    {
        Ok(iter) => iter.filter_map(Result::ok).collect(),
        Err(_) => return,
    };
    for chunk in keys.chunks(500) {
        let _ = redis::cmd("UNLINK").arg(chunk).query::<i64>(&mut conn);
    }
}

fn fresh_prefix() -> Prefix {
    let Some(url) = server_url() else {
        log_suite::skip("Redis", "redis_log", "TIDINGS_TEST_REDIS_URL")
    };
    let name = format!("tidings_test_{}", uuid::Uuid::now_v7().simple());
    Prefix { url, name }
}

async fn open(prefix: &Prefix) -> RedisLog {
    RedisLog::connect(RedisOptions::new(&prefix.url).prefix(&prefix.name))
        .await
        .expect("open the Redis log")
}

/// A fresh log under its own prefix, deleted with the returned guard.
async fn fresh() -> (Arc<dyn EventLog>, Prefix) {
    let prefix = fresh_prefix();
    let log = open(&prefix).await;
    (Arc::new(log), prefix)
}

log_suite::log_suite!(fresh);

// ---------------------------------------------------------------------------------------------
// Redis only: several nodes on one log.
// ---------------------------------------------------------------------------------------------

const NOTICE: Duration = Duration::from_secs(10);

/// Two nodes on one prefix: each hears the other's commits as wake-ups (`events: None`), reads
/// the other's events, and seqs continue across nodes without holes. A node hears its own
/// commit once, with its events.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_share_one_log_and_hear_each_other() {
    let prefix = fresh_prefix();
    let (a, b) = (open(&prefix).await, open(&prefix).await);
    let mut heard_by_b = b.commits();
    let from_a = append_ok(&a, vec![ev(&["x"], "1"), ev(&["y"], "2")]).await;
    let notice = tokio::time::timeout(NOTICE, heard_by_b.recv())
        .await
        .expect("node B heard nothing of A's commit")
        .unwrap();
    assert_eq!(notice.upto, from_a[1].seq);
    assert!(notice.events.is_none(), "a foreign commit carries events");
    assert_eq!(
        b.read(0, notice.upto, &Scope::All, 100).await.unwrap(),
        from_a
    );
    let from_b = append_ok(&b, vec![ev(&["x"], "3")]).await;
    assert_eq!(
        from_b[0].seq,
        from_a[1].seq + 1,
        "seq does not continue across nodes"
    );
    let own = tokio::time::timeout(NOTICE, heard_by_b.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(own.events.as_deref(), Some(&from_b[..]));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        heard_by_b.try_recv().is_err(),
        "node B heard its own commit twice"
    );
    assert_eq!(
        a.locate(from_b[0].id.as_str()).await.unwrap(),
        Some(from_b[0].seq)
    );
    assert_eq!(
        a.latest(&Scope::All, Seq::MAX).await.unwrap(),
        vec![from_a[1].clone(), from_b[0].clone()]
    );
    assert!(a.health().is_ok() && b.health().is_ok());
}

/// A publisher id stored through one node is refused through another, and a contested id sent
/// through both at once is stored exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicate_ids_are_refused_across_nodes() {
    let prefix = fresh_prefix();
    let nodes = [Arc::new(open(&prefix).await), Arc::new(open(&prefix).await)];
    append_ok(&*nodes[0], vec![ev_id("once", &["a"], "first")]).await;
    match nodes[1].append(vec![ev_id("once", &["a"], "again")]).await {
        Err(LogError::DuplicateId(id)) => assert_eq!(id, "once"),
        other => panic!("a duplicate through another node: {other:?}"),
    }

    let barrier = Arc::new(tokio::sync::Barrier::new(16));
    let mut tasks = Vec::new();
    for t in 0..16 {
        let (node, barrier) = (nodes[t % 2].clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            node.append(vec![
                ev_id(&format!("side-{t}"), &["a"], ""),
                ev_id("contested", &["a"], &t.to_string()),
            ])
            .await
        }));
    }
    let mut stored = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => stored += 1,
            Err(LogError::DuplicateId(id)) => assert_eq!(id, "contested"),
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    assert_eq!(stored, 1, "a contested id was stored {stored} times");
    assert_eq!(all_events(&*nodes[1]).await.len(), 3);
}

/// Two nodes appending concurrently while a third follows the log: everyone sees one order,
/// the follower sees every event exactly once with no holes, and each node's answers agree
/// with the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_from_two_nodes_form_one_order() {
    const EACH: usize = 200;
    let prefix = fresh_prefix();
    let nodes = [Arc::new(open(&prefix).await), Arc::new(open(&prefix).await)];
    let follower = open(&prefix).await;
    let mut writers = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for w in 0..4 {
            let node = node.clone();
            writers.push(tokio::spawn(async move {
                let mut answers = Vec::new();
                for i in 0..EACH / 4 {
                    answers
                        .extend(append_ok(&*node, vec![ev(&["a"], &format!("{n}.{w}.{i}"))]).await);
                }
                answers
            }));
        }
    }
    let mut head: Seq = 0;
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < 2 * EACH {
        assert!(tokio::time::Instant::now() < deadline, "follower stalled");
        for e in follower
            .read(head, Seq::MAX, &Scope::All, 50)
            .await
            .unwrap()
        {
            if let Some(last) = seen.last().map(|e: &Arc<tidings_core::event::Event>| e.seq) {
                assert_eq!(e.seq, last + 1, "follower saw a hole after seq {last}");
            }
            head = e.seq;
            seen.push(e);
        }
    }
    let mut answered = Vec::new();
    for w in writers {
        answered.extend(w.await.unwrap());
    }
    answered.sort_by_key(|e| e.seq);
    assert_eq!(answered, seen, "the answers and the log disagree");
    for node in &nodes {
        assert_eq!(all_events(&**node).await, seen, "nodes see different logs");
    }
}

// ---------------------------------------------------------------------------------------------
// Redis only: a restart of the server.
// ---------------------------------------------------------------------------------------------

/// A `redis-server` of the test's own, on a free port, keeping an append-only file in a
/// temporary directory (fsync always): it can be killed and restarted with its data.
struct OwnRedis {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<std::process::Child>,
}

impl OwnRedis {
    /// `None` when `redis-server` is not installed (a failure under CI).
    fn start() -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut me = Self {
            dir: tempfile::tempdir().expect("a temporary directory"),
            port,
            child: None,
        };
        if let Err(e) = me.spawn() {
            assert!(
                !log_suite::under_ci(),
                "cannot run redis-server under CI=true: {e}"
            );
            eprintln!(
                "\n*** SKIPPED: cannot run redis-server ({e}); the restart test did NOT run ***\n"
            );
            return None;
        }
        Some(me)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        self.child = Some(child);
        // Ready when it answers PING.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let ping = redis::Client::open(self.url().as_str())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            if ping.is_ok() {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(std::io::Error::other("redis-server did not answer PING"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: Redis gets no chance to flush anything more.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `cond` every 20 ms for up to `limit`.
async fn eventually(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Redis killed and restarted: health says degraded in between, appends fail meanwhile rather
/// than hang, every acknowledged event is still there afterwards (appendfsync always), appends
/// resume, and a commit another node made while this node's link was down reaches it through
/// the catch-up wake-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_restart_degrades_health_then_recovers_without_loss() {
    let Some(mut server) = OwnRedis::start() else {
        return;
    };
    let options = RedisOptions::new(server.url()).prefix("restart");
    let log = RedisLog::connect(options.clone()).await.expect("connect");
    let before = append_ok(&log, (0..50).map(|i| ev(&["a"], &i.to_string())).collect()).await;
    assert!(log.health().is_ok());

    server.kill();
    eventually(Duration::from_secs(15), "health turns degraded", || {
        log.health().is_err()
    })
    .await;
    let reason = log.health().unwrap_err();
    assert!(reason.contains("Redis"), "reason: {reason}");
    let failed = tokio::time::timeout(Duration::from_secs(30), log.append(vec![ev(&["a"], "x")]))
        .await
        .expect("an append while Redis is down hung");
    assert!(failed.is_err(), "an append succeeded without Redis");

    server.spawn().expect("restart redis-server");
    // Another node commits while this one may still be reconnecting.
    let other = RedisLog::connect(options)
        .await
        .expect("connect a second node");
    let mut heard = log.commits();
    let during = append_ok(&other, vec![ev(&["a"], "while reconnecting")]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, heard.recv()).await {
            Ok(Ok(c)) if c.upto >= during[0].seq => break,
            Ok(Ok(_)) => {}
            other => panic!("no wake-up for a commit made while the link was down: {other:?}"),
        }
    }
    eventually(Duration::from_secs(15), "health recovers", || {
        log.health().is_ok()
    })
    .await;

    let mut after = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while after.is_empty() {
        match log.append(vec![ev(&["a"], "after")]).await {
            Ok(events) => after = events,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("appends did not resume: {e}"),
        }
    }
    let all = all_events(&log).await;
    assert_eq!(
        &all[..before.len()],
        &before[..],
        "acknowledged events were lost"
    );
    assert_eq!(all.last(), after.last());
    assert!(all.contains(&during[0]));
    let seqs: Vec<Seq> = all.iter().map(|e| e.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seqs out of order after the restart: {seqs:?}"
    );
}

/// A commit made while a node's subscription is down (here: the server refuses it SUBSCRIBE
/// for a while, so the link stays down while appends work) reaches that node through the
/// catch-up wake-up sent after it re-subscribes, though no later commit happens; health says
/// degraded meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_commit_missed_while_the_link_was_down_is_caught_up() {
    let Some(server) = OwnRedis::start() else {
        return;
    };
    let options = RedisOptions::new(server.url()).prefix("catchup");
    let (a, b) = (
        RedisLog::connect(options.clone()).await.expect("connect"),
        RedisLog::connect(options).await.expect("connect"),
    );
    let mut admin = redis::Client::open(server.url().as_str())
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
        .expect("an admin connection");
    let mut run = |args: &[&str]| {
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query::<redis::Value>(&mut admin)
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    };
    run(&["ACL", "SETUSER", "default", "-subscribe"]);
    run(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    eventually(Duration::from_secs(10), "a's link is reported down", || {
        a.health().is_err()
    })
    .await;
    let mut heard = a.commits();
    let missed = append_ok(&b, vec![ev(&["a"], "while a was deaf")]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(heard.try_recv().is_err(), "a heard a commit while deaf");
    run(&["ACL", "SETUSER", "default", "+subscribe"]);
    let notice = tokio::time::timeout(Duration::from_secs(15), heard.recv())
        .await
        .expect("no catch-up wake-up after re-subscribing")
        .unwrap();
    assert!(notice.upto >= missed[0].seq, "the catch-up stops short");
    assert!(notice.events.is_none());
    eventually(Duration::from_secs(5), "a's health recovers", || {
        a.health().is_ok()
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Measurements (not checks): `cargo test --release -p tidings-core --test redis_log -- --ignored
// --nocapture measure`.
// ---------------------------------------------------------------------------------------------

/// Acknowledged appends per second with 64 concurrent single-event appenders on one node, and
/// the latency from an append's acknowledgment on node A to node B's wake-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run it with --ignored --nocapture"]
async fn measure_append_throughput_and_cross_node_wakeup() {
    let prefix = fresh_prefix();
    let (a, b) = (Arc::new(open(&prefix).await), open(&prefix).await);
    let run = Duration::from_secs(5);
    let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let start = tokio::time::Instant::now();
    let tasks: Vec<_> = (0..64)
        .map(|t| {
            let (a, count) = (a.clone(), count.clone());
            tokio::spawn(async move {
                while start.elapsed() < run {
                    append_ok(
                        &*a,
                        vec![ev(&[&format!("bench/{}", t % 8)], "0123456789abcdef")],
                    )
                    .await;
                    count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let n = count.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "64 appenders: {n} appends in {:?}: {:.0}/s",
        start.elapsed(),
        n as f64 / start.elapsed().as_secs_f64()
    );

    let mut heard = b.commits();
    let mut lat = Vec::new();
    for _ in 0..500 {
        let sent = std::time::Instant::now();
        let stored = append_ok(&*a, vec![ev(&["x"], "ping")]).await;
        loop {
            let c = heard.recv().await.unwrap();
            if c.upto >= stored[0].seq {
                break;
            }
        }
        lat.push(sent.elapsed());
    }
    lat.sort();
    eprintln!(
        "append on A -> wake-up on B (500 sequential): p50 {:?}, p99 {:?}, max {:?}",
        lat[250], lat[495], lat[499]
    );
}
