//! The event-log behavioural suite, run against `SqliteLog` on a temporary directory, plus the
//! checks only a file-backed store has: reopening the same file.

mod log_suite;

use std::path::Path;
use std::sync::Arc;

use log_suite::{all_events, append_ok, ev, ev_id};
use tempfile::TempDir;
use tidings_core::event::Seq;
use tidings_core::log::{EventLog, LogStats, Retention, Scope};
use tidings_core::store::sqlite::{SqliteLog, SqliteOptions, INDEX_BATCH};

fn open(path: &Path) -> SqliteLog {
    open_indexing_every(path, INDEX_BATCH)
}

/// A log whose topic index is written every `batch` events.
fn open_indexing_every(path: &Path, batch: usize) -> SqliteLog {
    let mut options = SqliteOptions::new(path);
    options.index_batch = batch;
    SqliteLog::open(options).expect("open the SQLite log")
}

/// A fresh log in its own temporary directory, which lives as long as the returned guard.
async fn fresh() -> (Arc<dyn EventLog>, TempDir) {
    fresh_indexing_every(INDEX_BATCH).await
}

log_suite::log_suite!(fresh);

async fn fresh_indexing_every(batch: usize) -> (Arc<dyn EventLog>, TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open_indexing_every(&dir.path().join("events.db"), batch);
    (Arc::new(log), dir)
}

async fn fresh_indexing_every_event() -> (Arc<dyn EventLog>, TempDir) {
    fresh_indexing_every(1).await
}

async fn fresh_indexing_every_third() -> (Arc<dyn EventLog>, TempDir) {
    fresh_indexing_every(3).await
}

/// The suite again with the topic index written after every commit (the default batch leaves
/// most of the suite's few events in the unindexed tail): reads by topic through the index.
mod indexing_every_event {
    crate::log_suite::log_suite!(super::fresh_indexing_every_event);
}

/// And with a batch of three: reads by topic that span the index and the tail after it.
mod indexing_every_third {
    crate::log_suite::log_suite!(super::fresh_indexing_every_third);
}

// ---------------------------------------------------------------------------------------------
// SQLite only: reopening the file.
// ---------------------------------------------------------------------------------------------

/// Drops the log and gives its writer thread a moment to close its connection.
async fn close(log: SqliteLog) {
    drop(log);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
}

/// Every event survives a reopen unchanged; seqs continue after the newest; ids stay taken;
/// commit notices work on the reopened log.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reopen_keeps_events_and_continues_seq() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let log = open(&path);
    let mut big = ev_id("big", &["b", "a"], &"\u{2713}\r\n".repeat(100_000));
    big.retry = Some(1234);
    big.private = true;
    let mut stored = append_ok(
        &log,
        vec![ev(&["a"], "1"), ev_id("p1", &["a", "b"], "2\n3")],
    )
    .await;
    stored.extend(append_ok(&log, vec![big, ev(&["c"], "")]).await);
    let stats_before = log.stats().await.unwrap();
    close(log).await;

    let log = open(&path);
    assert_eq!(
        all_events(&log).await,
        stored,
        "events changed across a reopen"
    );
    assert_eq!(log.stats().await.unwrap(), stats_before);
    for e in &stored {
        assert_eq!(log.locate(e.id.as_str()).await.unwrap(), Some(e.seq));
    }
    let latest = log.latest(&Scope::All, Seq::MAX).await.unwrap();
    assert_eq!(
        latest.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![stored[2].seq, stored[3].seq]
    );
    match log.append(vec![ev_id("p1", &["a"], "dup")]).await {
        Err(tidings_core::log::LogError::DuplicateId(id)) => assert_eq!(id, "p1"),
        other => panic!("a reopened log accepted a stored id again: {other:?}"),
    }
    let mut rx = log.commits();
    let next = append_ok(&log, vec![ev(&["a"], "after reopen")]).await;
    assert_eq!(
        next[0].seq,
        stored.last().unwrap().seq + 1,
        "seq does not continue after a reopen"
    );
    let commit = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
        .await
        .expect("notice after reopen")
        .expect("notice");
    assert_eq!(commit.upto, next[0].seq);
    stored.extend(next);
    close(log).await;

    // And once more, to be sure the second session's writes were durable too.
    let log = open(&path);
    assert_eq!(all_events(&log).await, stored);
}

/// After a partial prune, a reopened log continues from its newest retained event.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reopen_after_partial_prune_continues_seq() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let log = open(&path);
    let stored = append_ok(&log, (0..10).map(|i| ev(&["a"], &i.to_string())).collect()).await;
    let pruned = log
        .prune(Retention {
            max_events: Some(3),
            max_age: None,
        })
        .await
        .unwrap();
    assert_eq!(pruned, 7);
    close(log).await;

    let log = open(&path);
    assert_eq!(all_events(&log).await, stored[7..]);
    let next = append_ok(&log, vec![ev(&["a"], "next")]).await;
    assert_eq!(next[0].seq, stored[9].seq + 1);
}

/// Pruning every event and reopening must not restart seqs: a seq, once given out, is never
/// given to another event.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reopen_after_pruning_everything_does_not_reuse_seq() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let log = open(&path);
    let stored = append_ok(&log, (0..5).map(|i| ev(&["a"], &i.to_string())).collect()).await;
    let pruned = log
        .prune(Retention {
            max_events: Some(0),
            max_age: None,
        })
        .await
        .unwrap();
    assert_eq!(pruned, 5);
    assert_eq!(log.stats().await.unwrap(), LogStats::default());
    close(log).await;

    let log = open(&path);
    let next = append_ok(&log, vec![ev(&["a"], "after")]).await;
    assert!(
        next[0].seq > stored[4].seq,
        "seq {} was reused after pruning everything and reopening (the newest was {})",
        next[0].seq,
        stored[4].seq
    );
}

// ---------------------------------------------------------------------------------------------
// SQLite only: the topic index, which lags the events.
// ---------------------------------------------------------------------------------------------

/// `meta.indexed_through`, read from the file.
fn indexed_through(path: &Path) -> i64 {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row(
            "SELECT value FROM meta WHERE key = 'indexed_through'",
            [],
            |r| r.get(0),
        )
        .unwrap()
}

/// Waits (the writer indexes right after answering an append) until `meta.indexed_through`
/// is `seq`, and fails with `why` when it is not within 10 s.
async fn assert_indexed_through(path: &Path, seq: Seq, why: &str) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let now = indexed_through(path);
        if now == seq as i64 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{why}: indexed through {now}, not {seq}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// What reads by topic must give, from the events themselves.
fn on_topic(events: &[Arc<tidings_core::event::Event>], topic: &str) -> Vec<Seq> {
    events
        .iter()
        .filter(|e| e.topics.iter().any(|t| t.as_str() == topic))
        .map(|e| e.seq)
        .collect()
}

async fn assert_topic_reads(
    log: &SqliteLog,
    events: &[Arc<tidings_core::event::Event>],
    when: &str,
) {
    for topic in ["a", "b", "c"] {
        let read = log
            .read(0, Seq::MAX, &log_suite::scope(&[topic]), 1_000)
            .await
            .unwrap();
        assert_eq!(
            read.iter().map(|e| e.seq).collect::<Vec<_>>(),
            on_topic(events, topic),
            "reading topic {topic} {when}"
        );
        // Every window of two, so that pages start and end on both sides of the index's end.
        let all = on_topic(events, topic);
        for (i, after) in std::iter::once(0).chain(all.iter().copied()).enumerate() {
            let page = log
                .read(after, Seq::MAX, &log_suite::scope(&[topic]), 2)
                .await
                .unwrap();
            assert_eq!(
                page.iter().map(|e| e.seq).collect::<Vec<_>>(),
                all[i..].iter().copied().take(2).collect::<Vec<_>>(),
                "a page of topic {topic} after {after} {when}"
            );
        }
        let latest = log
            .latest(&log_suite::scope(&[topic]), Seq::MAX)
            .await
            .unwrap();
        assert_eq!(
            latest.iter().map(|e| e.seq).collect::<Vec<_>>(),
            all.last().copied().into_iter().collect::<Vec<_>>(),
            "the latest event of topic {topic} {when}"
        );
    }
    let latest_all: Vec<Seq> = log
        .latest(&Scope::All, Seq::MAX)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    let mut expected: Vec<Seq> = ["a", "b", "c"]
        .iter()
        .filter_map(|t| on_topic(events, t).last().copied())
        .collect();
    expected.sort_unstable();
    expected.dedup();
    assert_eq!(
        latest_all, expected,
        "the latest event of every topic {when}"
    );
}

/// Reads by topic give the same events whether they come from the index, from the events after
/// it, or from both. A closing log indexes what it holds; a log reopened after a crash finds the
/// events its writer had not indexed yet, and indexes them with its next batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_by_topic_span_the_index_and_the_events_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let log = open_indexing_every(&path, 4);
    let topics: [&[&str]; 3] = [&["a"], &["b", "a"], &["c"]];
    let mut events = Vec::new();
    for i in 0..10 {
        events.extend(append_ok(&log, vec![ev(topics[i % 3], &i.to_string())]).await);
    }
    // Two batches of four indexed; two events after them.
    assert_indexed_through(&path, events[7].seq, "two batches").await;
    assert_topic_reads(&log, &events, "with two events unindexed").await;
    close(log).await;
    assert_indexed_through(
        &path,
        events[9].seq,
        "a closing log did not index its last events",
    )
    .await;

    // What a crash before the last batch leaves: four events committed, not indexed.
    let through = events[5].seq as i64;
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(&format!(
            "DELETE FROM event_topics WHERE seq > {through}; \
             UPDATE meta SET value = {through} WHERE key = 'indexed_through';"
        ))
        .unwrap();
    let log = open_indexing_every(&path, 4);
    assert_topic_reads(&log, &events, "after a crash").await;
    events.extend(append_ok(&log, vec![ev(&["a"], "10")]).await);
    assert_indexed_through(
        &path,
        events[10].seq,
        "the reopened log did not index the events left from before the crash",
    )
    .await;
    assert_topic_reads(&log, &events, "once all are indexed").await;
}

/// A file of schema version 1 indexed every event as it was committed: opening it marks them all
/// indexed, and reads by topic find them through the index.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_version_1_file_is_fully_indexed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE events (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, \
               topics TEXT NOT NULL, type TEXT, data TEXT NOT NULL, retry INTEGER, \
               private INTEGER NOT NULL, stored_at INTEGER NOT NULL);
             CREATE TABLE event_topics (seq INTEGER NOT NULL, topic TEXT NOT NULL, \
               PRIMARY KEY (seq, topic)) WITHOUT ROWID;
             CREATE INDEX event_topics_by_topic ON event_topics (topic, seq);
             CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
             INSERT INTO events VALUES (1, 'one', 'a', NULL, 'x', NULL, 0, 0);
             INSERT INTO events VALUES (2, 'two', 'b
a', NULL, 'y', NULL, 0, 0);
             INSERT INTO event_topics VALUES (1, 'a'), (2, 'b'), (2, 'a');
             PRAGMA user_version = 1;",
        )
        .unwrap();
    }
    let log = open(&path);
    let version: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 2);
    assert_eq!(
        indexed_through(&path),
        2,
        "version 1's events count as indexed"
    );
    let read = log
        .read(0, Seq::MAX, &log_suite::scope(&["a"]), 10)
        .await
        .unwrap();
    assert_eq!(log_suite::ids(&read), ["one", "two"]);
    let next = append_ok(&log, vec![ev(&["a"], "3")]).await;
    let read = log
        .read(0, Seq::MAX, &log_suite::scope(&["a"]), 10)
        .await
        .unwrap();
    assert_eq!(log_suite::seqs(&read), [1, 2, next[0].seq]);
}
