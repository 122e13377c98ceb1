//! A resume never skips events silently, even while pruning races it: with a tiny retention
//! and fast pruning, one publisher numbers its events and many streaming and polling clients
//! keep disconnecting and resuming by Last-Event-ID. Every jump in the numbers a client sees
//! must come right after a `tidings.reset` event (stream) or a `reset` key (poll). Run against
//! SQLite, PostgreSQL and Redis.
//!
//! Locally the PostgreSQL and Redis runs skip loudly when their server is unreachable; under
//! CI=true they fail.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use serde_json::{json, Value};
use tidings::config::StoreConfig;
use tidings_core::log::Retention;

/// Events the publisher numbers (each followed by one event on another topic).
const NUMBERED: u64 = 1600;
const STREAMERS: usize = 24;
const POLLERS: usize = 6;
const TOPIC: &str = "race/n";

fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// A tiny deterministic generator, so each client's pattern of reads and pauses varies.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// A client's pause between reads: mostly short, sometimes long enough to fall behind the
/// retention whatever the store's publish rate.
fn pause(rng: &mut Lcg) -> Duration {
    let ms = if rng.below(6) == 0 {
        100 + rng.below(400)
    } else {
        rng.below(40)
    };
    Duration::from_millis(ms)
}

/// What the clients saw, over all of them.
#[derive(Default)]
struct Seen {
    resumes: AtomicU64,
    resets: AtomicU64,
    /// Silent jumps: "client: a -> b".
    silent: std::sync::Mutex<Vec<String>>,
}

impl Seen {
    /// Checks the next number `n` after `last`; `reset` says a reset came in between.
    fn check(&self, who: &str, last: u64, n: u64, reset: bool) {
        if n != last + 1 && !reset {
            let mut silent = self.silent.lock().unwrap();
            if silent.len() < 20 {
                silent.push(format!("{who}: {last} -> {n}"));
            }
        }
    }
}

async fn publisher(hub: Arc<TestHub>, done: Arc<AtomicBool>) {
    let mut n = 1;
    while n <= NUMBERED {
        let mut batch = Vec::new();
        for k in n..n + 4 {
            batch.push(json!({"topic": TOPIC, "data": k.to_string()}));
            batch.push(json!({"topic": "race/noise", "data": "x"}));
        }
        let reply = hub
            .post_json("/.well-known/mercure", &Value::Array(batch))
            .await;
        assert!(reply.status.is_success(), "publish: {reply:?}");
        n += 4;
    }
    done.store(true, Ordering::SeqCst);
}

async fn streamer(hub: Arc<TestHub>, seed: u64, done: Arc<AtomicBool>, seen: Arc<Seen>) {
    let who = format!("stream {seed}");
    let mut rng = Lcg(seed);
    let (mut last_id, mut last) = (String::from("earliest"), 0);
    let (mut quiet_after_done, mut reset) = (0, false);
    while quiet_after_done < 2 {
        if done.load(Ordering::SeqCst) {
            quiet_after_done += 1;
        }
        let path = format!("/.well-known/mercure?topic={}", enc(TOPIC));
        let mut sse = hub.sse(&path, &[("last-event-id", &last_id)]).await;
        seen.resumes.fetch_add(1, Ordering::Relaxed);
        for _ in 0..1 + rng.below(30) {
            match sse.recv(Duration::from_millis(300)).await {
                Next::Event(e) if e.event == "tidings.reset" => {
                    seen.resets.fetch_add(1, Ordering::Relaxed);
                    reset = true;
                }
                Next::Event(e) => {
                    let n: u64 = e.data.parse().expect("numbered data");
                    if last != 0 {
                        seen.check(&who, last, n, reset);
                    }
                    (last_id, last, reset) = (e.id, n, false);
                }
                _ => break,
            }
        }
        drop(sse);
        // Fall behind a little, so the cursor sits near the pruning edge.
        tokio::time::sleep(pause(&mut rng)).await;
    }
}

async fn poller(hub: Arc<TestHub>, seed: u64, done: Arc<AtomicBool>, seen: Arc<Seen>) {
    let who = format!("poll {seed}");
    let mut rng = Lcg(seed);
    let (mut after, mut last) = (String::from("earliest"), 0);
    let (mut quiet_after_done, mut reset) = (0, false);
    while quiet_after_done < 3 {
        if done.load(Ordering::SeqCst) {
            quiet_after_done += 1;
        }
        let limit = 1 + rng.below(40);
        let page = hub
            .poll(&format!(
                "topic={}&after={}&limit={limit}",
                enc(TOPIC),
                enc(&after)
            ))
            .await;
        seen.resumes.fetch_add(1, Ordering::Relaxed);
        if page.get("reset").is_some() {
            reset = true;
            seen.resets.fetch_add(1, Ordering::Relaxed);
        }
        for e in page["events"].as_array().expect("events") {
            let n: u64 = e["data"].as_str().and_then(|d| d.parse().ok()).expect("n");
            if last != 0 {
                seen.check(&who, last, n, reset);
            }
            (last, reset) = (n, false);
        }
        after = page["last_event_id"].as_str().expect("cursor").to_owned();
        tokio::time::sleep(pause(&mut rng)).await;
    }
}

async fn race(store: Option<StoreConfig>) {
    let hub = Arc::new(
        spawn_hub_with(|c| {
            if let Some(store) = store {
                c.store = store;
            }
            c.hub.retention = Retention {
                max_events: Some(30),
                max_age: None,
            };
            c.hub.prune_every = Duration::from_millis(15);
        })
        .await,
    );
    let done = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Seen::default());
    let mut tasks = vec![tokio::spawn(publisher(hub.clone(), done.clone()))];
    for i in 0..STREAMERS {
        tasks.push(tokio::spawn(streamer(
            hub.clone(),
            i as u64 + 1,
            done.clone(),
            seen.clone(),
        )));
    }
    for i in 0..POLLERS {
        tasks.push(tokio::spawn(poller(
            hub.clone(),
            i as u64 + 100,
            done.clone(),
            seen.clone(),
        )));
    }
    for task in tasks {
        within(Duration::from_secs(240), "the race", task)
            .await
            .expect("client task");
    }
    eprintln!("stats after the race: {}", hub.stats().await);
    let silent = seen.silent.lock().unwrap().clone();
    let (resumes, resets) = (
        seen.resumes.load(Ordering::Relaxed),
        seen.resets.load(Ordering::Relaxed),
    );
    eprintln!(
        "{resumes} resumes, {resets} resets, {} silent jumps",
        silent.len()
    );
    assert!(
        silent.is_empty(),
        "clients skipped events without a reset ({resumes} resumes, {resets} resets): {silent:?}"
    );
    assert!(
        resets > 0,
        "the test never reached the pruning edge ({resumes} resumes)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_resumes_never_skip_silently() {
    race(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_resumes_never_skip_silently() {
    let urls = [
        "postgres://postgres@127.0.0.1:5432/test?connect_timeout=5",
        "postgres://root@127.0.0.1:5432/test?connect_timeout=5",
    ];
    let mut url = None;
    for u in urls {
        if tokio_postgres::connect(u, tokio_postgres::NoTls)
            .await
            .is_ok()
        {
            url = Some(u);
            break;
        }
    }
    let Some(url) = url else {
        assert!(
            !under_ci(),
            "PostgreSQL is not reachable on 127.0.0.1:5432 under CI=true"
        );
        eprintln!("\n*** SKIPPED: PostgreSQL not reachable; the prune race did NOT run ***\n");
        return;
    };
    let schema = format!("tidings_race_{}", std::process::id());
    let drop_schema = |url: &'static str, schema: String| async move {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .await
            .expect("drop schema");
    };
    drop_schema(url, schema.clone()).await;
    race(Some(StoreConfig::Postgres {
        url: url.to_owned(),
        schema: schema.clone(),
    }))
    .await;
    drop_schema(url, schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_resumes_never_skip_silently() {
    let url = std::env::var("TIDINGS_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let reachable = redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
    if let Err(e) = reachable {
        assert!(
            !under_ci(),
            "Redis is not reachable at {url} under CI=true: {e}"
        );
        eprintln!("\n*** SKIPPED: Redis not reachable ({e}); the prune race did NOT run ***\n");
        return;
    }
    let prefix = format!("tidings_race_{}", std::process::id());
    race(Some(StoreConfig::Redis {
        url: url.clone(),
        prefix: prefix.clone(),
    }))
    .await;
    if let Ok(mut conn) = redis::Client::open(url.as_str()).and_then(|c| c.get_connection()) {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{{{prefix}}}:*"))
            .query(&mut conn)
            .unwrap_or_default();
        for chunk in keys.chunks(500) {
            let _ = redis::cmd("UNLINK").arg(chunk).query::<i64>(&mut conn);
        }
    }
}
