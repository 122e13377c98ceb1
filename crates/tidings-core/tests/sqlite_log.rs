//! The event-log behavioural suite, run against `SqliteLog` on a temporary directory, plus the
//! checks only a file-backed store has: reopening the same file.

mod log_suite;

use std::path::Path;
use std::sync::Arc;

use log_suite::{all_events, append_ok, ev, ev_id};
use tempfile::TempDir;
use tidings_core::event::Seq;
use tidings_core::log::{EventLog, LogStats, Retention, Scope};
use tidings_core::store::sqlite::{SqliteLog, SqliteOptions};

fn open(path: &Path) -> SqliteLog {
    SqliteLog::open(SqliteOptions::new(path)).expect("open the SQLite log")
}

/// A fresh log in its own temporary directory, which lives as long as the returned guard.
async fn fresh() -> (Arc<dyn EventLog>, TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(&dir.path().join("events.db"));
    (Arc::new(log), dir)
}

log_suite::log_suite!(fresh);

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
