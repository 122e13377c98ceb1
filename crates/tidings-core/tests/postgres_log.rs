//! The event-log behavioural suite, run against `PostgresLog` in a fresh schema per test, plus
//! the checks only a shared store has: concurrent start-up, several nodes on one log, and commits
//! that finish out of order.
//!
//! The server is `TIDINGS_TEST_PG_URL` (default: 127.0.0.1:5432, database `test`, user `postgres`,
//! then `root`). When it is unreachable the tests print "SKIPPED: PostgreSQL not reachable" and
//! pass, unless `CI=true`, where they fail.

#![cfg(feature = "postgres")]

mod log_suite;

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use log_suite::{all_events, append_ok, ev};
use tidings_core::event::Seq;
use tidings_core::log::{EventLog, Scope};
use tidings_core::store::postgres::watch::{self, WatchSpec};
use tidings_core::store::postgres::{
    connect_migrated, PostgresLog, PostgresOptions, APPEND_LOCK_CLASS, MIGRATIONS,
};
use tokio_postgres::NoTls;

const DEFAULT_URLS: &[&str] = &[
    "host=127.0.0.1 port=5432 dbname=test user=postgres connect_timeout=5",
    "host=127.0.0.1 port=5432 dbname=test user=root connect_timeout=5",
];

/// The first connection string that reaches the server, or `None` (after reporting the skip, or
/// panicking under CI).
async fn server_url() -> Option<String> {
    let candidates: Vec<String> = match std::env::var("TIDINGS_TEST_PG_URL") {
        Ok(url) => vec![url],
        Err(_) => DEFAULT_URLS.iter().map(|s| s.to_string()).collect(),
    };
    let mut errors = Vec::new();
    for url in candidates {
        match tokio_postgres::connect(&url, NoTls).await {
            Ok(_) => return Some(url),
            Err(e) => errors.push(format!("{url}: {e}")),
        }
    }
    if log_suite::under_ci() {
        panic!("PostgreSQL not reachable under CI=true: {errors:?}");
    }
    None
}

/// Drops its schema when the test ends.
struct Schema {
    url: String,
    name: String,
}

impl Drop for Schema {
    fn drop(&mut self) {
        let (url, name) = (self.url.clone(), self.name.clone());
        // A runtime of its own: this runs inside the test's runtime, which cannot block_on.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok((client, conn)) = tokio_postgres::connect(&url, NoTls).await {
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// A fresh, uniquely named schema on the test server.
async fn fresh_schema() -> Schema {
    let Some(url) = server_url().await else {
        log_suite::skip("PostgreSQL", "postgres_log", "TIDINGS_TEST_PG_URL")
    };
    let name = format!("tidings_test_{}", uuid::Uuid::now_v7().simple());
    Schema { url, name }
}

async fn open(schema: &Schema) -> PostgresLog {
    PostgresLog::connect(PostgresOptions::new(&schema.url).schema(&schema.name))
        .await
        .expect("open the PostgreSQL log")
}

/// A fresh log in its own schema, dropped with the returned guard.
async fn fresh() -> (Arc<dyn EventLog>, Schema) {
    let schema = fresh_schema().await;
    let log = open(&schema).await;
    (Arc::new(log), schema)
}

log_suite::log_suite!(fresh);

// ---------------------------------------------------------------------------------------------
// PostgreSQL only.
// ---------------------------------------------------------------------------------------------

/// Eight nodes starting at the same moment on a new schema all come up (the migration runs once,
/// under its advisory lock) and share one log.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_starting_at_once_migrate_safely() {
    let schema = fresh_schema().await;
    let opens = (0..8).map(|_| open(&schema));
    let logs = futures_util::future::join_all(opens).await;
    let stored = append_ok(&logs[3], vec![ev(&["a"], "x")]).await;
    for log in &logs {
        assert_eq!(all_events(log).await, stored);
    }
    let (client, conn) = tokio_postgres::connect(&schema.url, NoTls).await.unwrap();
    tokio::spawn(conn);
    let applied: i64 = client
        .query_one(
            &format!("SELECT count(*) FROM {}.schema_migrations", schema.name),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        applied,
        MIGRATIONS.len() as i64,
        "a migration was applied more than once, or not at all"
    );
}

/// Two nodes on one log: each hears the other's commits as wake-ups (`events: None`), reads the
/// other's events, and seqs stay gap-free and unique across nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_share_one_log_and_hear_each_other() {
    let schema = fresh_schema().await;
    let (a, b) = (open(&schema).await, open(&schema).await);
    let mut heard_by_b = b.commits();
    let from_a = append_ok(&a, vec![ev(&["x"], "1"), ev(&["y"], "2")]).await;
    let notice = tokio::time::timeout(Duration::from_secs(10), heard_by_b.recv())
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
    // B hears its own commit once, with its events (its NOTIFY echo is skipped).
    let own = tokio::time::timeout(Duration::from_secs(10), heard_by_b.recv())
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
}

/// A transaction that takes the append lock and inserts an event, then stays open on purpose:
/// a later append (from another node) must not become visible before it, so a reader tailing the
/// log never sees seq N+1 while seq N is still to come.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_commit_is_never_skipped() {
    let schema = fresh_schema().await;
    let log = Arc::new(open(&schema).await);
    let first = append_ok(&*log, vec![ev(&["a"], "before")]).await;

    // A slow writer on another node: it holds the append lock and seq first+1, uncommitted.
    let (mut raw, conn) = tokio_postgres::connect(&schema.url, NoTls).await.unwrap();
    tokio::spawn(conn);
    raw.batch_execute(&format!("SET search_path TO {}", schema.name))
        .await
        .unwrap();
    let tx = raw.transaction().await.unwrap();
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&APPEND_LOCK_CLASS, &schema.name],
    )
    .await
    .unwrap();
    let slow_seq: i64 = tx
        .query_one(
            "UPDATE log_state SET last_seq = last_seq + 1 RETURNING last_seq",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    tx.execute(
        "INSERT INTO events (seq, id, topics, type, data, retry, private, stored_at) \
         VALUES ($1, 'slow', 'a', NULL, 'slow'::bytea, NULL, false, 0)",
        &[&slow_seq],
    )
    .await
    .unwrap();
    tx.execute(
        "INSERT INTO event_topics (seq, topic) VALUES ($1, 'a')",
        &[&slow_seq],
    )
    .await
    .unwrap();

    // A reader tailing the log the whole time, recording every seq in the order it saw them.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (log, stop) = (log.clone(), stop.clone());
        tokio::spawn(async move {
            let mut head = first[0].seq;
            let mut seen = Vec::new();
            loop {
                let done = stop.load(std::sync::atomic::Ordering::SeqCst);
                let page = log.read(head, Seq::MAX, &Scope::All, 1000).await.unwrap();
                for e in page {
                    seen.push(e.seq);
                    head = e.seq;
                }
                if done {
                    return seen;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    // A fast append meanwhile: it must wait for the slow transaction.
    let fast = {
        let log = log.clone();
        tokio::spawn(async move { append_ok(&*log, vec![ev(&["a"], "fast")]).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !fast.is_finished(),
        "an append committed while an earlier seq was still uncommitted"
    );
    assert_eq!(
        all_events(&*log).await.len(),
        1,
        "uncommitted or later events are visible"
    );

    tx.commit().await.unwrap();
    let fast = tokio::time::timeout(Duration::from_secs(10), fast)
        .await
        .expect("the fast append never finished")
        .unwrap();
    assert_eq!(
        fast[0].seq,
        slow_seq as Seq + 1,
        "seq order is not commit order"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = reader.await.unwrap();
    assert_eq!(
        seen,
        vec![slow_seq as Seq, fast[0].seq],
        "the tailing reader skipped or reordered events"
    );
}

/// Two nodes appending concurrently while a third follows the log: the follower sees every
/// event exactly once, in seq order, with no holes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_never_misses_events_from_concurrent_nodes() {
    const EACH: usize = 200;
    let schema = fresh_schema().await;
    let nodes = [Arc::new(open(&schema).await), Arc::new(open(&schema).await)];
    let follower = open(&schema).await;
    let mut writers = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for w in 0..4 {
            let node = node.clone();
            writers.push(tokio::spawn(async move {
                for i in 0..EACH / 4 {
                    append_ok(&*node, vec![ev(&["a"], &format!("{n}.{w}.{i}"))]).await;
                }
            }));
        }
    }
    let mut head: Seq = 0;
    let mut seen: Vec<Seq> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < 2 * EACH {
        assert!(tokio::time::Instant::now() < deadline, "follower stalled");
        for e in follower
            .read(head, Seq::MAX, &Scope::All, 50)
            .await
            .unwrap()
        {
            if let Some(&last) = seen.last() {
                assert_eq!(e.seq, last + 1, "follower saw a hole after seq {last}");
            }
            seen.push(e.seq);
            head = e.seq;
        }
    }
    for w in writers {
        w.await.unwrap();
    }
    assert_eq!(all_events(&follower).await.len(), 2 * EACH);
}

// ---------------------------------------------------------------------------------------------
// The outbox and table-change streams.
// ---------------------------------------------------------------------------------------------

/// An application's connection: its own search path (`public`), not the log's.
async fn app_client(schema: &Schema) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&schema.url, NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

/// Waits until the log holds `n` events (the outbox is moved asynchronously).
async fn wait_for_events(log: &dyn EventLog, n: usize) -> Vec<Arc<tidings_core::event::Event>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let events = all_events(log).await;
        if events.len() >= n {
            return events;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {n} events arrived from the outbox",
            events.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `tidings.publish()` inside an application transaction: the event exists if and only if the
/// transaction commits, and a committed one reaches the log (and its commit notice) promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_publishes_on_commit_and_never_on_rollback() {
    let schema = fresh_schema().await;
    let log = open(&schema).await;
    let mut commits = log.commits();
    let mut app = app_client(&schema).await;
    let s = &schema.name;

    let tx = app.transaction().await.unwrap();
    tx.execute(
        &format!("SELECT {s}.publish('jobs/1', 'job', 'rolled back')"),
        &[],
    )
    .await
    .unwrap();
    tx.rollback().await.unwrap();

    let tx = app.transaction().await.unwrap();
    tx.execute(
        &format!("SELECT {s}.publish('jobs/1', 'job', '{{\"state\":\"done\"}}'::jsonb)"),
        &[],
    )
    .await
    .unwrap();
    tx.execute(
        &format!("SELECT {s}.publish_to(ARRAY['jobs/2', 'alt/2'], data => 'two', private => true, id => 'app-2')"),
        &[],
    )
    .await
    .unwrap();
    // Not visible before the commit.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        all_events(&log).await.is_empty(),
        "an uncommitted outbox row was published"
    );
    tx.commit().await.unwrap();

    let events = wait_for_events(&log, 2).await;
    assert_eq!(events.len(), 2, "the rolled-back event was published");
    assert_eq!(events[0].topics[0].as_str(), "jobs/1");
    assert_eq!(events[0].kind.as_ref().unwrap().as_str(), "job");
    assert_eq!(&*events[0].data, r#"{"state": "done"}"#);
    assert_eq!(events[1].id.as_str(), "app-2");
    assert_eq!(
        events[1]
            .topics
            .iter()
            .map(|t| t.as_str())
            .collect::<Vec<_>>(),
        ["jobs/2", "alt/2"]
    );
    assert!(events[1].private);
    let notice = tokio::time::timeout(Duration::from_secs(5), commits.recv())
        .await
        .expect("no commit notice for the outbox events")
        .unwrap();
    assert_eq!(notice.upto, events[1].seq);
    let left: i64 = app
        .query_one(&format!("SELECT count(*) FROM {s}.outbox"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "published rows stay in the outbox");
}

/// Bad calls fail in the application's transaction with the hub's one-line reason.
#[tokio::test]
async fn outbox_publish_refuses_bad_fields_in_the_callers_transaction() {
    let schema = fresh_schema().await;
    let _log = open(&schema).await;
    let app = app_client(&schema).await;
    let s = &schema.name;
    for (call, reason) in [
        ("publish('')", "topic is empty"),
        ("publish(E'a\\nb')", "topic contains a control character"),
        (
            "publish('a', type => E'x\\ny')",
            "type contains CR, LF or NUL",
        ),
        ("publish('a', id => 'earliest')", "reserved"),
        (
            "publish('a', id => 'webhook:gh:1')",
            "reserved for webhook deliveries",
        ),
        ("publish('a', retry => -1)", "retry must not be negative"),
        ("publish_to(ARRAY[]::text[])", "at least one topic"),
    ] {
        let err = app
            .execute(&format!("SELECT {s}.{call}"), &[])
            .await
            .expect_err(call);
        let message = err
            .as_db_error()
            .map(|e| e.message().to_owned())
            .unwrap_or_default();
        assert!(message.contains(reason), "{call}: {message:?}");
    }
}

/// Rows committed while no hub runs wait in the outbox and go out, in order, when one starts;
/// rows the hub cannot publish (written straight into the table) are set aside with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_rows_committed_while_the_hub_is_down_go_out_at_start() {
    let schema = fresh_schema().await;
    // Create the schema, then "stop the hub".
    drop(
        connect_migrated(&PostgresOptions::new(&schema.url).schema(&schema.name))
            .await
            .unwrap(),
    );
    let app = app_client(&schema).await;
    let s = &schema.name;
    app.execute(
        &format!("SELECT {s}.publish('a', data => 'one', id => 'dup')"),
        &[],
    )
    .await
    .unwrap();
    app.batch_execute(&format!(
        "INSERT INTO {s}.outbox (topics, data) VALUES (ARRAY[E'bad\\ntopic'], 'x');
         INSERT INTO {s}.outbox (topics, data, event_id) VALUES (ARRAY['a'], 'again', 'dup');
         INSERT INTO {s}.outbox (topics, data) VALUES (ARRAY['a'], 'two');"
    ))
    .await
    .unwrap();

    let log = open(&schema).await;
    let events = wait_for_events(&log, 2).await;
    let data: Vec<&str> = events.iter().map(|e| &*e.data).collect();
    assert_eq!(data, ["one", "two"]);
    let rejected: Vec<(String, String)> = app
        .query(
            &format!("SELECT data, reason FROM {s}.outbox_rejected ORDER BY id"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    assert!(rejected[0].1.contains("control character"), "{rejected:?}");
    // The duplicate is refused whether the first was already in the log or in the same move.
    assert!(
        rejected[1].1.contains("\"dup\" is given twice")
            || rejected[1].1.contains("already exists"),
        "{rejected:?}"
    );
}

/// Applications on several connections publishing through the outbox while the hub appends:
/// every committed row arrives exactly once, and each connection's events keep their order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outbox_under_concurrent_applications_loses_nothing() {
    const EACH: usize = 100;
    let schema = fresh_schema().await;
    let log = Arc::new(open(&schema).await);
    let mut tasks = Vec::new();
    for app in 0..4 {
        let client = app_client(&schema).await;
        let s = schema.name.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..EACH {
                client
                    .execute(
                        &format!("SELECT {s}.publish('app/{app}', data => '{i}')"),
                        &[],
                    )
                    .await
                    .unwrap();
            }
        }));
    }
    let direct = {
        let log = log.clone();
        tokio::spawn(async move {
            for i in 0..EACH {
                append_ok(&*log, vec![ev(&["direct"], &i.to_string())]).await;
            }
        })
    };
    for t in tasks {
        t.await.unwrap();
    }
    direct.await.unwrap();
    let events = wait_for_events(&*log, 5 * EACH).await;
    assert_eq!(events.len(), 5 * EACH);
    for topic in ["app/0", "app/1", "app/2", "app/3", "direct"] {
        let data: Vec<usize> = events
            .iter()
            .filter(|e| e.topics[0].as_str() == topic)
            .map(|e| e.data.parse().unwrap())
            .collect();
        assert_eq!(data, (0..EACH).collect::<Vec<_>>(), "{topic}");
    }
}

/// `watch` publishes inserts and qualifying updates of a real table with the named columns as
/// data, far beyond NOTIFY's 8,000-byte payload; `unwatch` stops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_and_unwatch_a_real_table() {
    let schema = fresh_schema().await;
    let log = open(&schema).await;
    let s = &schema.name;
    let table = format!("{s}_sessions");
    let app = app_client(&schema).await;
    app.batch_execute(&format!(
        "CREATE TABLE public.{table} (session_id text PRIMARY KEY, status text, response text,          error text, touched int NOT NULL DEFAULT 0)"
    ))
    .await
    .unwrap();
    let mut tool = connect_migrated(&PostgresOptions::new(&schema.url).schema(s))
        .await
        .unwrap();
    let spec = WatchSpec {
        table: format!("public.{table}"),
        topic: "sessions/{session_id}".into(),
        columns: vec!["status".into(), "response".into(), "error".into()],
        when_changed: vec!["status".into(), "response".into(), "error".into()],
        kind: Some("session".into()),
        private: true,
    };
    assert_eq!(
        watch::watch(&mut tool, s, &spec).await.unwrap(),
        format!("public.{table}")
    );
    // Installing again replaces, not duplicates.
    watch::watch(&mut tool, s, &spec).await.unwrap();
    let listed = watch::watches(&tool, s).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].topic, "sessions/{session_id}");

    let big = "x".repeat(100_000);
    app.execute(
        &format!("INSERT INTO public.{table} (session_id, status) VALUES ('s1', 'queued')"),
        &[],
    )
    .await
    .unwrap();
    // Not a watched column: no event.
    app.execute(&format!("UPDATE public.{table} SET touched = 1"), &[])
        .await
        .unwrap();
    app.execute(
        &format!("UPDATE public.{table} SET status = 'done', response = $1"),
        &[&big],
    )
    .await
    .unwrap();
    let events = wait_for_events(&log, 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events_now = all_events(&log).await;
    assert_eq!(events_now.len(), 2, "an unqualified update published");
    assert!(events
        .iter()
        .all(|e| e.topics[0].as_str() == "sessions/s1" && e.private));
    assert_eq!(events[0].kind.as_ref().unwrap().as_str(), "session");
    let first: serde_json::Value = serde_json::from_str(&events[0].data).unwrap();
    assert_eq!(
        first,
        serde_json::json!({"status": "queued", "response": null, "error": null})
    );
    let second: serde_json::Value = serde_json::from_str(&events[1].data).unwrap();
    assert_eq!(second["response"].as_str().unwrap().len(), 100_000);
    assert_eq!(second["status"], "done");

    // A bad column is refused with the table's columns named, and installs nothing.
    let mut bad = spec.clone();
    bad.columns.push("nope".into());
    let err = watch::watch(&mut tool, s, &bad)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("no column \"nope\""), "{err}");

    assert!(watch::unwatch(&mut tool, s, &format!("public.{table}"))
        .await
        .unwrap());
    assert!(!watch::unwatch(&mut tool, s, &format!("public.{table}"))
        .await
        .unwrap());
    app.execute(&format!("UPDATE public.{table} SET status = 'again'"), &[])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        all_events(&log).await.len(),
        2,
        "an unwatched table still publishes"
    );
    app.batch_execute(&format!("DROP TABLE public.{table}"))
        .await
        .unwrap();
}

/// The LISTEN connection is cut (as when PostgreSQL restarts): the log says so in `health`,
/// reconnects, and sends a catch-up notice covering what another node committed meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_reconnects_and_catches_up() {
    let schema = fresh_schema().await;
    let a = open(&schema).await;
    let b = open(&schema).await;
    assert!(a.health().is_ok());
    let mut heard = a.commits();
    let admin = app_client(&schema).await;
    // Cut every connection of node A's listener: those LISTENing on the schema's channel.
    let cut = admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = 'tidings' AND query LIKE $1 AND pid <> pg_backend_pid()",
            &[&format!("LISTEN tidings_commits_{}%", schema.name)],
        )
        .await
        .unwrap();
    assert!(
        cut >= 2,
        "found {cut} listener connections, expected both nodes'"
    );
    // Meanwhile another node commits; the notification is lost to the cut listeners.
    let from_b = append_ok(&b, vec![ev(&["x"], "during the cut")]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut saw_degraded = false;
    let upto = loop {
        saw_degraded |= a.health().is_err();
        if let Ok(Ok(notice)) = tokio::time::timeout(Duration::from_millis(20), heard.recv()).await
        {
            if notice.upto >= from_b[0].seq {
                break notice.upto;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no catch-up notice after the cut"
        );
    };
    assert_eq!(upto, from_b[0].seq);
    assert!(saw_degraded, "health never reported the cut");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while a.health().is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "health stayed degraded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `sslmode=require` encrypts every connection of the log; `verify-full` refuses a server whose
/// certificate no trusted root vouches for (Debian's self-signed "snakeoil" one).
#[tokio::test]
async fn tls_follows_sslmode() {
    let schema = fresh_schema().await;
    let admin = app_client(&schema).await;
    let ssl: String = admin.query_one("SHOW ssl", &[]).await.unwrap().get(0);
    if ssl != "on" {
        assert!(
            !log_suite::under_ci(),
            "the PostgreSQL server has ssl={ssl} under CI=true: the TLS test cannot run"
        );
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED tls_follows_sslmode: the server has ssl={ssl} ***\n"
        );
        return;
    }
    let with = |mode: &str| {
        let sep = if !schema.url.starts_with("postgres") {
            ' '
        } else if schema.url.contains('?') {
            '&'
        } else {
            '?'
        };
        format!("{}{sep}sslmode={mode}", schema.url)
    };
    let url = with("require");
    let log = PostgresLog::connect(PostgresOptions::new(&url).schema(&schema.name))
        .await
        .expect("sslmode=require");
    append_ok(&log, vec![ev(&["tls"], "secret")]).await;
    let plain: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.application_name = 'tidings' AND NOT s.ssl AND a.query LIKE $1",
            &[&format!("%{}%", schema.name)],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(plain, 0, "a connection of the log is not encrypted");
    let encrypted: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.application_name = 'tidings' AND s.ssl",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(encrypted >= 3, "only {encrypted} encrypted connections");

    let strict = with("verify-full");
    let err = PostgresLog::connect(PostgresOptions::new(&strict).schema(&schema.name))
        .await
        .err()
        .expect("verify-full accepted a self-signed certificate");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
}

/// An application role with rights on its own table only: a watched table's trigger still
/// publishes (it runs as the role that installed it), and `GRANT USAGE ON SCHEMA` is all the
/// role needs to call `publish`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_roles_need_no_rights_on_the_log() {
    let schema = fresh_schema().await;
    let log = open(&schema).await;
    let s = &schema.name;
    let role = format!("{s}_app");
    let table = format!("public.{s}_orders");
    let admin = app_client(&schema).await;
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} NOLOGIN;
             CREATE TABLE {table} (id int PRIMARY KEY, state text);
             GRANT INSERT, UPDATE, SELECT ON {table} TO {role};"
        ))
        .await
        .unwrap();
    let mut tool = connect_migrated(&PostgresOptions::new(&schema.url).schema(s))
        .await
        .unwrap();
    let spec = WatchSpec {
        table: table.clone(),
        topic: "orders/{id}".into(),
        columns: vec!["state".into()],
        when_changed: vec![],
        kind: None,
        private: false,
    };
    watch::watch(&mut tool, s, &spec).await.unwrap();

    let app = app_client(&schema).await;
    app.batch_execute(&format!("SET ROLE {role}"))
        .await
        .unwrap();
    app.execute(&format!("INSERT INTO {table} VALUES (1, 'new')"), &[])
        .await
        .expect("a watched table refused its application role's insert");
    let refused = app
        .execute(
            &format!("SELECT {s}.publish('orders/1', data => 'direct')"),
            &[],
        )
        .await
        .expect_err("a role without USAGE on the schema published");
    assert!(refused.to_string().contains("permission denied") || refused.as_db_error().is_some());
    admin
        .batch_execute(&format!("GRANT USAGE ON SCHEMA {s} TO {role}"))
        .await
        .unwrap();
    app.execute(
        &format!("SELECT {s}.publish('orders/1', data => 'direct')"),
        &[],
    )
    .await
    .expect("USAGE on the schema is not enough to publish");
    let events = wait_for_events(&log, 2).await;
    assert_eq!(&*events[0].data, r#"{"state" : "new"}"#);
    assert_eq!(&*events[1].data, "direct");
    app.batch_execute("RESET ROLE").await.unwrap();
    admin
        .batch_execute(&format!(
            "DROP TABLE {table}; REVOKE ALL ON SCHEMA {s} FROM {role}; DROP ROLE {role};"
        ))
        .await
        .unwrap();
}
