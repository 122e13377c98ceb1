//! Hubs on one Redis log form a cluster: three nodes with publishers and subscribers on each
//! deliver every event once, in one order, everywhere; the subscribers of a node killed with
//! SIGKILL resume on another node by Last-Event-ID without loss or duplicates; and a Redis
//! restart under load degrades /healthz, then heals, losing no acknowledged event.
//!
//! The shared server is `TIDINGS_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`), each test
//! under its own key prefix. Locally the tests skip loudly when it is unreachable; under
//! CI=true they fail. The restart test runs its own `redis-server` on a free port.

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use crate::common::served::Served;
use crate::common::*;
use reqwest::StatusCode;
use tidings::config::StoreConfig;

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn redis_answers(url: &str) -> Result<(), String> {
    redis::Client::open(url)
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The shared Redis server's URL, or `None` after reporting the skip (a failure under CI).
fn server() -> Option<String> {
    let url = std::env::var("TIDINGS_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    match redis_answers(&url) {
        Ok(()) => Some(url),
        Err(e) => {
            assert!(!ci(), "Redis is not reachable at {url} under CI=true: {e}");
            eprintln!("\n*** SKIPPED: Redis not reachable ({e}); the Redis cluster test did NOT run ***\n");
            None
        }
    }
}

/// A key prefix of its own, whose keys are deleted when the test ends.
struct Prefix {
    url: String,
    name: String,
}

impl Prefix {
    fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            name: format!("tidings_cluster_{}", uuid_like()),
        }
    }

    fn store(&self) -> StoreConfig {
        StoreConfig::Redis {
            url: self.url.clone(),
            prefix: self.name.clone(),
        }
    }

    /// The `--store` argument for the binary.
    fn store_arg(&self) -> String {
        format!("{}?prefix={}", self.url, self.name)
    }
}

impl Drop for Prefix {
    fn drop(&mut self) {
        let Ok(mut conn) = redis::Client::open(self.url.as_str())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
        else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{{{}}}:*", self.name))
            .query(&mut conn)
            .unwrap_or_default();
        for chunk in keys.chunks(500) {
            let _ = redis::cmd("UNLINK").arg(chunk).query::<i64>(&mut conn);
        }
    }
}

/// A name no other test run uses: the process id and the time.
fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}_{nanos}", std::process::id())
}

async fn node(prefix: &Prefix) -> TestHub {
    let store = prefix.store();
    spawn_hub_with(move |c| c.store = store).await
}

/// A node's history once `done` says it is complete: a node learns of other nodes' commits a
/// moment after they are acknowledged, so its view may briefly trail the cluster's.
async fn history_once(
    hub: &TestHub,
    selectors: &str,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let events = hub.history(selectors).await;
        if done(&events) {
            return events;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the node's history stayed incomplete: {} events",
            events.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Three nodes, a publisher and two subscribers on each (an exact topic and a template), all
/// publishing at once: every subscriber gets every matching event exactly once, all in the
/// log's one order, whichever node it is on and whichever node took the publish.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_deliver_every_event_once_in_one_order() {
    const EACH: usize = 40;
    let Some(url) = server() else { return };
    let prefix = Prefix::new(&url);
    let nodes = [
        node(&prefix).await,
        node(&prefix).await,
        node(&prefix).await,
    ];
    let mut all_subs = Vec::new();
    let mut one_subs = Vec::new();
    for n in &nodes {
        all_subs.push(n.subscribe("topic=jobs/{id}").await);
        one_subs.push(n.subscribe("topic=jobs/1").await);
    }
    let nodes = Arc::new(nodes);
    let mut publishers = Vec::new();
    for p in 0..3 {
        let nodes = nodes.clone();
        publishers.push(tokio::spawn(async move {
            for i in 0..EACH {
                // Topics jobs/0..2, plus one event in four nobody subscribed to.
                let topic = if i % 4 == 3 {
                    "other/x".to_owned()
                } else {
                    format!("jobs/{}", i % 3)
                };
                nodes[p].publish(&topic, &format!("{p}.{i}")).await;
            }
        }));
    }
    for p in publishers {
        p.await.expect("publisher");
    }
    let log = history_once(&nodes[1], "topic=*", |e| e.len() >= 3 * EACH).await;
    assert_eq!(log.len(), 3 * EACH, "events in the log");
    let ids_where = |want: &dyn Fn(&str) -> bool| -> Vec<String> {
        log.iter()
            .filter(|e| want(e["topics"][0].as_str().unwrap()))
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let jobs = ids_where(&|t| t.starts_with("jobs/"));
    let job1 = ids_where(&|t| t == "jobs/1");
    for (n, sub) in all_subs.iter_mut().enumerate() {
        let got = sub.take_ids(jobs.len()).await;
        assert_no_duplicates(&got, "jobs/{id}");
        assert_eq!(
            got, jobs,
            "node {n}: jobs/{{id}} differs from the log order"
        );
        sub.expect_silence(Duration::from_millis(200)).await;
    }
    for (n, sub) in one_subs.iter_mut().enumerate() {
        assert_eq!(
            sub.take_ids(job1.len()).await,
            job1,
            "node {n}: jobs/1 differs"
        );
        sub.expect_silence(Duration::from_millis(50)).await;
    }
    // Resume and late joiners work on any node.
    let mid = &jobs[jobs.len() / 2];
    let mut resumed = nodes[2]
        .sse(
            "/.well-known/mercure?topic=jobs/{id}",
            &[("last-event-id", mid)],
        )
        .await;
    let rest = &jobs[jobs.len() / 2 + 1..];
    assert_eq!(resumed.take_ids(rest.len()).await, rest);
    let mut late = nodes[0].subscribe("topic=jobs/1&latest=1").await;
    assert_eq!(late.take_ids(1).await, [job1.last().unwrap().clone()]);
    for n in nodes.iter() {
        let health = n.get("/healthz").await;
        assert_eq!(health.status, StatusCode::OK, "{}", health.body);
    }
}

/// Reads a subscriber's stream until it ends or fails (its node died); returns the ids seen.
async fn until_cut(sub: &mut Sse) -> Vec<String> {
    let mut ids = Vec::new();
    loop {
        match sub.recv(Duration::from_secs(20)).await {
            Next::Event(e) => ids.push(e.id),
            Next::End | Next::Error(_) => return ids,
            Next::Timeout => panic!("the stream of a killed node neither ended nor failed"),
        }
    }
}

/// Subscribers attached to a node that is killed with SIGKILL while publishes keep flowing
/// through the other nodes reconnect to another node with their Last-Event-ID: together, what
/// they got before and after is every event exactly once, in the log's order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscribers_of_a_killed_node_resume_on_another_without_loss() {
    const TOTAL: usize = 150;
    let Some(url) = server() else { return };
    let prefix = Prefix::new(&url);
    let mut doomed = Served::start(prefix.store_arg(), &[]);
    let (b, c) = (node(&prefix).await, node(&prefix).await);
    let sse_client = client();
    let mut subs = Vec::new();
    for _ in 0..3 {
        let response = within(
            WAIT,
            "subscribing on the doomed node",
            sse_client
                .get(format!(
                    "{}/.well-known/mercure?topic=jobs/{{id}}",
                    doomed.base()
                ))
                .send(),
        )
        .await
        .expect("subscribe");
        assert_eq!(response.status(), StatusCode::OK);
        subs.push(sse_from(response));
    }

    let publishers = {
        let bases = [b.base.clone(), c.base.clone()];
        tokio::spawn(async move {
            let http = client();
            let mut acked = Vec::new();
            for i in 0..TOTAL {
                let reply = http
                    .post(format!("{}/.well-known/mercure", bases[i % 2]))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(form(&[
                        ("topic", &format!("jobs/{}", i % 5)),
                        ("data", &i.to_string()),
                    ]))
                    .send()
                    .await
                    .expect("publish");
                assert_eq!(reply.status(), StatusCode::OK);
                acked.push(reply.text().await.expect("id"));
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            acked
        })
    };

    // Let the subscribers get some of it, then kill their node mid-stream.
    let mut before: Vec<Vec<String>> = Vec::new();
    for sub in subs.iter_mut() {
        before.push(sub.take_ids(20).await);
    }
    doomed.kill9();
    for (sub, seen) in subs.iter_mut().zip(before.iter_mut()) {
        seen.extend(until_cut(sub).await);
    }
    let acked = within(Duration::from_secs(60), "the publishers", publishers)
        .await
        .expect("publisher task");
    let log = ids_of(&history_once(&c, "topic=jobs/{id}", |e| e.len() >= acked.len()).await);
    assert_eq!(
        log, acked,
        "the log differs from the acknowledged publishes"
    );

    for (s, mut seen) in before.into_iter().enumerate() {
        let last = seen.last().expect("an event before the kill").clone();
        let target = if s % 2 == 0 { &b } else { &c };
        let mut resumed = target
            .sse(
                "/.well-known/mercure?topic=jobs/{id}",
                &[("last-event-id", &last)],
            )
            .await;
        let missing = log.len() - seen.len();
        seen.extend(resumed.take_ids(missing).await);
        assert_no_duplicates(&seen, "a resumed subscriber");
        assert_eq!(
            seen, log,
            "subscriber {s}: lost, duplicated or reordered events"
        );
        resumed.expect_silence(Duration::from_millis(200)).await;
    }
}

/// A `redis-server` of the test's own on a free port, with an fsynced append-only file in a
/// temporary directory, so it can be killed and restarted with its data.
struct OwnRedis {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl OwnRedis {
    /// `None` when `redis-server` cannot run (a failure under CI).
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
            assert!(!ci(), "cannot run redis-server under CI=true: {e}");
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

    fn spawn(&mut self) -> Result<(), String> {
        let child = Command::new("redis-server")
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
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while redis_answers(&self.url()).is_err() {
            if std::time::Instant::now() > deadline {
                return Err("redis-server did not answer PING".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

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

/// Polls `/healthz` until it answers `want`.
async fn health_becomes(hub: &TestHub, want: StatusCode) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let reply = hub.get("/healthz").await;
        if reply.status == want {
            return reply.body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/healthz stayed {} ({}), expected {want}",
            reply.status,
            reply.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Redis killed (SIGKILL) and restarted while a publisher keeps publishing through one node
/// and a subscriber listens on another: /healthz says degraded on both while Redis is gone and
/// ok again after; every acknowledged publish is in the log afterwards, in order; and the
/// subscriber, which stayed connected throughout, receives the log exactly, once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_restart_under_load_loses_no_acknowledged_event() {
    let Some(mut redis) = OwnRedis::start() else {
        return;
    };
    let store = StoreConfig::Redis {
        url: redis.url(),
        prefix: "restart".into(),
    };
    let a = {
        let store = store.clone();
        spawn_hub_with(move |c| c.store = store).await
    };
    let b = spawn_hub_with(move |c| c.store = store).await;
    let mut sub = b.subscribe("topic=*").await;

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let refusals = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let publisher = {
        let (base, stop, refusals) = (a.base.clone(), stop.clone(), refusals.clone());
        tokio::spawn(async move {
            let http = client();
            let (mut acked, mut refused) = (Vec::new(), 0usize);
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let sent = http
                    .post(format!("{base}/.well-known/mercure"))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(form(&[("topic", "load"), ("data", &i.to_string())]))
                    .timeout(Duration::from_secs(40))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == StatusCode::OK => {
                        acked.push(r.text().await.expect("id"));
                    }
                    _ => {
                        refused += 1;
                        refusals.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                i += 1;
            }
            (acked, refused)
        })
    };

    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.kill();
    let reason = health_becomes(&a, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(reason.contains("degraded"), "{reason}");
    health_becomes(&b, StatusCode::SERVICE_UNAVAILABLE).await;
    // Keep Redis down until the publisher has met the outage (a fixed pause raced a loaded
    // machine); the assertion below still demands a refusal.
    let outage = std::time::Instant::now();
    while refusals.load(std::sync::atomic::Ordering::SeqCst) == 0
        && outage.elapsed() < Duration::from_secs(20)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    redis.spawn().expect("restart redis-server");
    health_becomes(&a, StatusCode::OK).await;
    health_becomes(&b, StatusCode::OK).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (acked, refused) = within(Duration::from_secs(60), "the publisher", publisher)
        .await
        .expect("publisher task");
    assert!(refused > 0, "no publish was refused while Redis was down");

    let log = ids_of(
        &history_once(&b, "topic=*", |events| {
            let ids: HashSet<&str> = events.iter().filter_map(|e| e["id"].as_str()).collect();
            acked.iter().all(|id| ids.contains(id.as_str()))
        })
        .await,
    );
    let in_log: HashSet<&String> = log.iter().collect();
    let lost: Vec<&String> = acked.iter().filter(|id| !in_log.contains(id)).collect();
    assert!(lost.is_empty(), "acknowledged events lost: {lost:?}");
    let order: Vec<&String> = log.iter().filter(|id| acked.contains(id)).collect();
    assert_eq!(
        order,
        acked.iter().collect::<Vec<_>>(),
        "acknowledged events out of order"
    );
    let got = sub.take_ids(log.len()).await;
    assert_no_duplicates(&got, "the subscriber across the restart");
    assert_eq!(got, log, "the subscriber missed or reordered events");
    sub.expect_silence(Duration::from_millis(200)).await;
    eprintln!(
        "restart test: {} acknowledged, {refused} refused while Redis was down",
        acked.len()
    );
}
