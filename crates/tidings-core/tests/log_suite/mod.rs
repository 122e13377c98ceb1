//! The behavioural suite every [`EventLog`] backend must pass.
//!
//! Each check is a `pub async fn name(log: Arc<dyn EventLog>)` that receives a fresh, empty log
//! and panics when the backend misbehaves. A backend's test file instantiates the whole suite with
//! [`log_suite!`], giving a factory that makes a fresh log (plus a guard that keeps its storage
//! alive); the macro holds the one list of checks, so every backend runs all of them.
//!
//! ```ignore
//! mod log_suite;
//!
//! async fn fresh() -> (Arc<dyn EventLog>, TempDir) { ... }
//!
//! log_suite::log_suite!(fresh);
//! ```
//!
//! The checks assume nothing about where a fresh log's seqs start, only that they increase.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tidings_core::event::{now_ms, Event, EventId, EventType, NewEvent, Seq, Topic};
use tidings_core::log::{Commit, EventLog, LogError, LogStats, Retention, Scope};
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};

/// Longest a single check may run before it counts as hung.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(180);
/// Longest to wait for one commit notice.
const NOTICE_TIMEOUT: Duration = Duration::from_secs(10);

/// Instantiates the suite for a backend: one `#[tokio::test]` per check, each on a fresh log from
/// `$factory` (an `async fn() -> (Arc<dyn EventLog>, Guard)`; the guard lives as long as the
/// check). This list is the suite: a new check goes here, and every backend runs it.
macro_rules! log_suite {
    ($factory:path) => {
        $crate::log_suite::log_suite!(@each $factory;
            append_assigns_increasing_seqs,
            append_keeps_publisher_ids_and_makes_unique_ids,
            empty_batch_is_a_no_op,
            duplicate_of_stored_id_fails_whole_batch,
            duplicate_within_batch_fails_whole_batch,
            failed_batches_leave_no_seq_hole_and_no_notice,
            concurrent_duplicate_ids_admit_exactly_one,
            a_duplicate_among_concurrent_appends_fails_only_its_own,
            read_returns_exactly_the_range_in_order,
            read_honours_limit,
            read_by_topics_matches_exact_topics_including_alternates,
            read_by_topics_never_duplicates_an_event,
            read_with_extreme_bounds,
            read_and_latest_with_many_topics_in_scope,
            locate_finds_retained_ids_only,
            latest_by_topics,
            latest_for_all_topics,
            prune_by_max_events,
            prune_by_max_age_zero_and_large,
            prune_by_max_age_splits_old_from_young,
            prune_with_both_limits_applies_the_stricter,
            prune_many_events,
            prune_with_huge_max_age_keeps_everything,
            prune_everything_then_append_continues_seq,
            empty_log,
            stats_track_appends,
            commit_notice_covers_appended_events,
            commit_notice_follows_durable_commit,
            concurrent_appends_all_succeed_in_task_order,
            tailing_reader_misses_nothing_under_concurrent_appends,
            data_round_trips_byte_identical,
            data_with_nul_round_trips,
            fields_round_trip,
            retry_round_trips_full_u64_range,
        );
    };
    (@each $factory:path; $( $check:ident ),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $check() {
                let (log, _guard) = $factory().await;
                tokio::time::timeout(
                    $crate::log_suite::CHECK_TIMEOUT,
                    $crate::log_suite::$check(log),
                )
                .await
                .expect(concat!("check ", stringify!($check), " hung"));
            }
        )+
    };
}
pub(crate) use log_suite;

/// Whether this is a CI run (`CI=true`), where an unreachable test server is a failure.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// For a backend whose server is unreachable outside CI: reports the skip on the real stderr
/// (libtest captures only the print macros) and ends the whole test binary successfully, since
/// the suite's macro gives a check no way to skip itself. `env` names the variable that points
/// the tests at another server.
pub fn skip(server: &str, binary: &str, env: &str) -> ! {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "\n\n*** SKIPPED: {server} not reachable; the {binary} tests did NOT run ***\n\
         *** (set {env}, or CI=true to make this a failure) ***\n"
    );
    std::process::exit(0)
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

pub fn topic(s: &str) -> Topic {
    Topic::parse(s).unwrap_or_else(|e| panic!("bad test topic {s:?}: {e}"))
}

/// An event on `topics` with a hub-made id.
pub fn ev(topics: &[&str], data: &str) -> NewEvent {
    NewEvent::new(topics.iter().map(|t| topic(t)).collect(), data).expect("test event")
}

/// An event on `topics` with the publisher id `id`.
pub fn ev_id(id: &str, topics: &[&str], data: &str) -> NewEvent {
    let mut e = ev(topics, data);
    e.id = Some(EventId::parse(id).unwrap_or_else(|e| panic!("bad test id {id:?}: {e}")));
    e
}

pub fn scope(topics: &[&str]) -> Scope {
    Scope::Topics(topics.iter().map(|t| t.to_string()).collect())
}

pub fn seqs(events: &[Arc<Event>]) -> Vec<Seq> {
    events.iter().map(|e| e.seq).collect()
}

pub fn ids(events: &[Arc<Event>]) -> Vec<String> {
    events.iter().map(|e| e.id.as_str().to_owned()).collect()
}

/// Appends `batch`, panicking on failure, and checks the shape of the answer.
pub async fn append_ok(log: &dyn EventLog, batch: Vec<NewEvent>) -> Vec<Arc<Event>> {
    let n = batch.len();
    let stored = log
        .append(batch)
        .await
        .unwrap_or_else(|e| panic!("append of {n} events failed: {e}"));
    assert_eq!(
        stored.len(),
        n,
        "append returned a different number of events"
    );
    stored
}

/// The whole retained log, read in pages of 100 from the start.
pub async fn all_events(log: &dyn EventLog) -> Vec<Arc<Event>> {
    let mut out: Vec<Arc<Event>> = Vec::new();
    let mut after = 0;
    loop {
        let page = log
            .read(after, Seq::MAX, &Scope::All, 100)
            .await
            .expect("read");
        let Some(last) = page.last() else {
            return out;
        };
        assert!(
            last.seq > after,
            "read(after = {after}) returned seq {}",
            last.seq
        );
        after = last.seq;
        out.extend(page);
    }
}

fn in_scope(e: &Event, scope: &Scope) -> bool {
    match scope {
        Scope::All => true,
        Scope::Topics(ts) => e.topics.iter().any(|t| ts.iter().any(|s| s == t.as_str())),
    }
}

/// What `read` must return over the known log `events` (in log order).
fn model_read(
    events: &[Arc<Event>],
    after: Seq,
    upto: Seq,
    scope: &Scope,
    limit: usize,
) -> Vec<Seq> {
    events
        .iter()
        .filter(|e| e.seq > after && e.seq <= upto && in_scope(e, scope))
        .take(limit)
        .map(|e| e.seq)
        .collect()
}

/// What `latest` must return over the known log `events` (in log order).
fn model_latest(events: &[Arc<Event>], scope: &Scope, upto: Seq) -> Vec<Seq> {
    let mut newest: BTreeMap<&str, Seq> = BTreeMap::new();
    for e in events.iter().filter(|e| e.seq <= upto) {
        for t in e.topics.iter() {
            let wanted = match scope {
                Scope::All => true,
                Scope::Topics(ts) => ts.iter().any(|s| s == t.as_str()),
            };
            if wanted {
                newest.insert(t.as_str(), e.seq);
            }
        }
    }
    let set: BTreeSet<Seq> = newest.into_values().collect();
    set.into_iter().collect()
}

/// Interesting `after`/`upto` positions over a log: 0, each seq and the one before it, one past
/// the end, and `Seq::MAX`.
fn positions(events: &[Arc<Event>]) -> Vec<Seq> {
    let mut p = BTreeSet::from([0, Seq::MAX]);
    for e in events {
        p.insert(e.seq);
        p.insert(e.seq - 1);
        p.insert(e.seq + 1);
    }
    p.into_iter().collect()
}

fn assert_strictly_increasing(events: &[Arc<Event>], what: &str) {
    for w in events.windows(2) {
        assert!(
            w[0].seq < w[1].seq,
            "{what}: seq {} is followed by seq {}",
            w[0].seq,
            w[1].seq
        );
    }
}

async fn stats(log: &dyn EventLog) -> LogStats {
    log.stats().await.expect("stats")
}

fn expected_stats(retained: &[Arc<Event>]) -> LogStats {
    LogStats {
        events: retained.len() as u64,
        oldest: retained.first().map(|e| (e.seq, e.id.as_str().to_owned())),
        newest: retained.last().map(|e| (e.seq, e.id.as_str().to_owned())),
    }
}

/// Receives notices until one has `upto >= seq`; returns all received.
async fn notices_until(rx: &mut broadcast::Receiver<Commit>, seq: Seq) -> Vec<Commit> {
    let mut out: Vec<Commit> = Vec::new();
    loop {
        match tokio::time::timeout(NOTICE_TIMEOUT, rx.recv()).await {
            Err(_) => panic!(
                "no commit notice covering seq {seq} within {NOTICE_TIMEOUT:?}; got uptos {:?}",
                out.iter().map(|c| c.upto).collect::<Vec<_>>()
            ),
            Ok(Err(RecvError::Lagged(n))) => panic!("receiver lagged by {n} in a quiet test"),
            Ok(Err(RecvError::Closed)) => panic!("commit channel closed"),
            Ok(Ok(commit)) => {
                let done = commit.upto >= seq;
                out.push(commit);
                if done {
                    return out;
                }
            }
        }
    }
}

/// Checks the shape of one notice: `events`, when present, are non-empty, contiguous in log order
/// and end at `upto`.
fn assert_notice_shape(commit: &Commit, log: &[Arc<Event>]) {
    let Some(events) = &commit.events else {
        return;
    };
    assert!(!events.is_empty(), "a notice carries Some(empty) events");
    assert_eq!(
        events.last().unwrap().seq,
        commit.upto,
        "a notice's events do not end at its upto"
    );
    let first = log
        .iter()
        .position(|e| e.seq == events[0].seq)
        .unwrap_or_else(|| panic!("notice event seq {} is not in the log", events[0].seq));
    let span = &log[first..(first + events.len()).min(log.len())];
    assert_eq!(
        seqs(span),
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        "a notice's events are not contiguous in the log"
    );
}

/// A string of exactly `len` bytes mixing ASCII, multi-byte characters, CR, LF and CRLF.
fn big_text(len: usize) -> String {
    let mut s = String::with_capacity(len + 64);
    let mut i = 0u64;
    while s.len() < len {
        s.push_str(&format!(
            "line {i}: \u{e9}t\u{e9} \u{2713} \u{1F389}\r\n\tx\ry\n"
        ));
        i += 1;
    }
    while s.len() > len {
        s.pop();
    }
    while s.len() < len {
        s.push('z');
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Append
// ---------------------------------------------------------------------------------------------

/// Appends return events in the order given, with strictly increasing seqs across appends, the
/// topics and data given, and a plausible commit time; the log reads back the same events.
pub async fn append_assigns_increasing_seqs(log: Arc<dyn EventLog>) {
    let before = now_ms();
    let mut stored = Vec::new();
    for round in 0..5usize {
        let batch: Vec<NewEvent> = (0..=round)
            .map(|i| ev(&["a", "b"], &format!("r{round}e{i}")))
            .collect();
        let out = append_ok(&*log, batch.clone()).await;
        for (new, got) in batch.iter().zip(&out) {
            assert_eq!(&*got.data, new.data, "append returned events out of order");
            assert_eq!(got.topics.to_vec(), new.topics);
        }
        assert_strictly_increasing(&out, "one append");
        if let (Some(prev), Some(first)) = (stored.last(), out.first()) {
            let prev: &Arc<Event> = prev;
            assert!(
                first.seq > prev.seq,
                "append after seq {} returned seq {}",
                prev.seq,
                first.seq
            );
        }
        stored.extend(out);
    }
    let after = now_ms();
    assert!(stored[0].seq > 0, "seq 0 means 'before the first event'");
    for e in &stored {
        assert!(
            e.stored_at_ms >= before - 60_000 && e.stored_at_ms <= after + 60_000,
            "stored_at_ms {} is far from the append time [{before}, {after}]",
            e.stored_at_ms
        );
    }
    assert_eq!(
        all_events(&*log).await,
        stored,
        "the log differs from what append returned"
    );
}

/// Publisher ids are kept verbatim; hub-made ids are all different, from each other and from
/// the publisher ids.
pub async fn append_keeps_publisher_ids_and_makes_unique_ids(log: Arc<dyn EventLog>) {
    let mut stored = Vec::new();
    for round in 0..4 {
        let batch = vec![
            ev(&["a"], "hub-made"),
            ev_id(&format!("pub-{round}"), &["a"], "given"),
            ev(&["a"], "hub-made"),
            ev(&["b"], "hub-made"),
        ];
        let out = append_ok(&*log, batch).await;
        assert_eq!(
            out[1].id.as_str(),
            format!("pub-{round}"),
            "publisher id not kept"
        );
        stored.extend(out);
    }
    let mut burst = Vec::new();
    for _ in 0..200 {
        burst.push(ev(&["c"], ""));
    }
    stored.extend(append_ok(&*log, burst).await);
    let all_ids = ids(&stored);
    let unique: HashSet<&String> = all_ids.iter().collect();
    assert_eq!(
        unique.len(),
        all_ids.len(),
        "ids are not unique: {all_ids:?}"
    );
    for e in &stored {
        assert!(!e.id.as_str().is_empty(), "empty id at seq {}", e.seq);
        assert!(
            EventId::parse(e.id.as_str()).is_ok(),
            "hub-made id {:?} would not pass validation",
            e.id
        );
    }
    assert_eq!(
        ids(&all_events(&*log).await),
        all_ids,
        "stored ids differ from returned"
    );
}

/// Appending nothing succeeds, returns nothing and uses up no seq.
pub async fn empty_batch_is_a_no_op(log: Arc<dyn EventLog>) {
    assert!(log
        .append(Vec::new())
        .await
        .expect("empty append on empty log")
        .is_empty());
    let first = append_ok(&*log, vec![ev(&["a"], "1")]).await;
    assert!(log
        .append(Vec::new())
        .await
        .expect("empty append")
        .is_empty());
    let second = append_ok(&*log, vec![ev(&["a"], "2")]).await;
    assert_eq!(
        second[0].seq,
        first[0].seq + 1,
        "an empty append consumed a seq"
    );
    assert_eq!(stats(&*log).await.events, 2);
}

fn assert_duplicate(result: Result<Vec<Arc<Event>>, LogError>, id: &str) {
    match result {
        Err(LogError::DuplicateId(got)) => assert_eq!(got, id, "DuplicateId names the wrong id"),
        Err(e) => panic!("expected DuplicateId({id:?}), got error {e:?}"),
        Ok(events) => panic!("expected DuplicateId({id:?}), but the batch was stored: {events:?}"),
    }
}

/// A batch repeating an id already in the log fails whole with `DuplicateId`, wherever the
/// duplicate sits in the batch, and stores none of its events.
pub async fn duplicate_of_stored_id_fails_whole_batch(log: Arc<dyn EventLog>) {
    let base = append_ok(
        &*log,
        vec![ev_id("taken", &["a"], "original"), ev(&["a"], "x")],
    )
    .await;
    let before = all_events(&*log).await;

    // Duplicate last, first, and in the middle; with publisher and hub-made neighbours.
    let batches = vec![
        vec![
            ev_id("fresh-1", &["a"], "new"),
            ev(&["b"], "new"),
            ev_id("taken", &["a"], "dup"),
        ],
        vec![
            ev_id("taken", &["a"], "dup"),
            ev_id("fresh-2", &["a"], "new"),
        ],
        vec![
            ev(&["a"], "new"),
            ev_id("taken", &["c"], "dup"),
            ev_id("fresh-3", &["a"], "new"),
        ],
        vec![ev_id(base[1].id.as_str(), &["a"], "dup of a hub-made id")],
    ];
    for (i, batch) in batches.into_iter().enumerate() {
        let dup = if i == 3 { base[1].id.as_str() } else { "taken" };
        assert_duplicate(log.append(batch).await, dup);
        assert_eq!(
            all_events(&*log).await,
            before,
            "a failed batch changed the log"
        );
    }
    for id in ["fresh-1", "fresh-2", "fresh-3"] {
        assert_eq!(
            log.locate(id).await.unwrap(),
            None,
            "{id} of a failed batch was stored"
        );
    }
    assert_eq!(log.locate("taken").await.unwrap(), Some(base[0].seq));
    assert_eq!(stats(&*log).await, expected_stats(&before));
    let orig = &all_events(&*log).await[0];
    assert_eq!(
        &*orig.data, "original",
        "the duplicate overwrote the stored event"
    );
}

/// A batch carrying the same id twice fails whole with `DuplicateId` and stores nothing.
pub async fn duplicate_within_batch_fails_whole_batch(log: Arc<dyn EventLog>) {
    let before = append_ok(&*log, vec![ev(&["a"], "x")]).await;
    assert_duplicate(
        log.append(vec![
            ev_id("twice", &["a"], "1"),
            ev(&["a"], "between"),
            ev_id("twice", &["b"], "2"),
        ])
        .await,
        "twice",
    );
    assert_duplicate(
        log.append(vec![
            ev_id("again", &["a"], "1"),
            ev_id("again", &["a"], "2"),
        ])
        .await,
        "again",
    );
    assert_eq!(
        all_events(&*log).await,
        before,
        "a failed batch changed the log"
    );
    assert_eq!(log.locate("twice").await.unwrap(), None);
    assert_eq!(log.locate("again").await.unwrap(), None);
    // The id is free: a batch using it once succeeds.
    let ok = append_ok(&*log, vec![ev_id("twice", &["a"], "once")]).await;
    assert_eq!(log.locate("twice").await.unwrap(), Some(ok[0].seq));
}

/// Failed batches consume no seq: the next append continues right after the newest event; and
/// their events never show up in commit notices.
pub async fn failed_batches_leave_no_seq_hole_and_no_notice(log: Arc<dyn EventLog>) {
    let mut rx = log.commits();
    let first = append_ok(&*log, vec![ev_id("x", &["a"], "1"), ev(&["a"], "2")]).await;
    for i in 0..5 {
        let failed = vec![
            ev_id(&format!("doomed-{i}"), &["a"], "no"),
            ev(&["a"], "no"),
            ev(&["a"], "no"),
            ev_id("x", &["a"], "no"),
        ];
        assert_duplicate(log.append(failed).await, "x");
    }
    let next = append_ok(&*log, vec![ev(&["a"], "3"), ev(&["b"], "4")]).await;
    assert_eq!(
        next[0].seq,
        first[1].seq + 1,
        "a failed batch left a seq hole: newest was {}, the next append got {}",
        first[1].seq,
        next[0].seq
    );
    assert_eq!(next[1].seq, next[0].seq + 1);
    let notices = notices_until(&mut rx, next[1].seq).await;
    let log_now = all_events(&*log).await;
    for c in &notices {
        assert_notice_shape(c, &log_now);
        for e in c.events.iter().flat_map(|es| es.iter()) {
            assert!(
                !e.id.as_str().starts_with("doomed-") && &*e.data != "no",
                "a notice carries an event of a failed batch: {e:?}"
            );
        }
    }
}

/// Many tasks appending the same id at once: exactly one batch is stored, every other fails
/// with `DuplicateId` and leaves nothing behind.
pub async fn concurrent_duplicate_ids_admit_exactly_one(log: Arc<dyn EventLog>) {
    const TASKS: usize = 16;
    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let (log, barrier) = (log.clone(), barrier.clone());
        handles.push(tokio::spawn(async move {
            barrier.wait().await;
            log.append(vec![
                ev_id(&format!("side-{t}"), &["a"], "side"),
                ev_id("contested", &["a"], &format!("task {t}")),
            ])
            .await
        }));
    }
    let mut winners = Vec::new();
    for (t, h) in handles.into_iter().enumerate() {
        match h.await.expect("task") {
            Ok(events) => winners.push((t, events)),
            Err(LogError::DuplicateId(id)) => assert_eq!(id, "contested"),
            Err(e) => panic!("task {t}: unexpected error {e:?}"),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "{} batches stored the same id",
        winners.len()
    );
    let (t, events) = &winners[0];
    assert_eq!(
        all_events(&*log).await,
        *events,
        "losers left events behind"
    );
    for u in (0..TASKS).filter(|u| u != t) {
        assert_eq!(log.locate(&format!("side-{u}")).await.unwrap(), None);
    }
}

/// Concurrent appends (committed together where the store groups them) where one batch repeats
/// a stored id: only that batch fails, whole, and every other batch is stored with its events
/// contiguous and numbered without holes.
pub async fn a_duplicate_among_concurrent_appends_fails_only_its_own(log: Arc<dyn EventLog>) {
    const TASKS: usize = 32;
    const DOOMED: usize = 13;
    let first = append_ok(&*log, vec![ev_id("taken", &["a"], "first")]).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let (log, barrier) = (log.clone(), barrier.clone());
        handles.push(tokio::spawn(async move {
            let mut batch = vec![ev(&["a"], &format!("{t}.0")), ev(&["b"], &format!("{t}.1"))];
            if t == DOOMED {
                batch.push(ev_id("taken", &["a"], "again"));
            }
            barrier.wait().await;
            log.append(batch).await
        }));
    }
    let mut seqs = Vec::new();
    for (t, h) in handles.into_iter().enumerate() {
        match h.await.expect("task") {
            Err(LogError::DuplicateId(id)) if t == DOOMED => assert_eq!(id, "taken"),
            Ok(events) if t != DOOMED => {
                assert_eq!(events.len(), 2, "task {t}");
                assert_eq!(
                    events[1].seq,
                    events[0].seq + 1,
                    "task {t}'s batch is split"
                );
                assert_eq!(&*events[0].data, format!("{t}.0"));
                seqs.extend(events.iter().map(|e| e.seq));
            }
            other => panic!("task {t}: {other:?}"),
        }
    }
    seqs.sort_unstable();
    let expected: Vec<Seq> = (1..=seqs.len() as Seq).map(|i| first[0].seq + i).collect();
    assert_eq!(
        seqs, expected,
        "the stored batches are not numbered without holes"
    );
    let stored = all_events(&*log).await;
    assert_eq!(
        stored.len(),
        1 + 2 * (TASKS - 1),
        "events of the failed batch were stored"
    );
    assert!(
        !stored
            .iter()
            .any(|e| &*e.data == "again" || *e.data == *format!("{DOOMED}.0")),
        "the failed batch left events behind"
    );
}

// ---------------------------------------------------------------------------------------------
// Read
// ---------------------------------------------------------------------------------------------

/// A log exercising topic matching: alternate topics, events on several requested topics, a
/// repeated topic, near-miss topics (prefix, case), and characters special to SQL LIKE and globs.
async fn topic_log(log: &dyn EventLog) -> Vec<Arc<Event>> {
    let layout: &[&[&str]] = &[
        &["a"],
        &["b"],
        &["a", "b"],
        &["c", "a"],
        &["jobs/10"],
        &["jobs/1"],
        &["jobs/%"],
        &["b", "c", "a"],
        &["\u{e9}/\u{fc}"],
        &["x*"],
        &["c", "c"],
        &["b"],
        &["jobs/_"],
        &["A"],
        &["a"],
        &["d", "e", "f", "b"],
    ];
    let mut stored = Vec::new();
    // In a few batches so the layout spans appends.
    for chunk in layout.chunks(5) {
        let batch = chunk
            .iter()
            .enumerate()
            .map(|(i, ts)| ev(ts, &format!("{i}:{}", ts.join(","))))
            .collect();
        stored.extend(append_ok(log, batch).await);
    }
    stored
}

fn topic_scopes() -> Vec<Scope> {
    vec![
        Scope::All,
        scope(&["a"]),
        scope(&["b"]),
        scope(&["c"]),
        scope(&["a", "b"]),
        scope(&["b", "a", "c"]),
        scope(&["f"]),
        scope(&["e", "b"]),
        scope(&["jobs/1"]),
        scope(&["jobs/1", "jobs/10"]),
        scope(&["jobs/%"]),
        scope(&["jobs/_"]),
        scope(&["jobs/"]),
        scope(&["x*"]),
        scope(&["x"]),
        scope(&["A"]),
        scope(&["\u{e9}/\u{fc}"]),
        scope(&["nope"]),
        scope(&["a", "nope"]),
        scope(&[]),
    ]
}

async fn check_read(
    log: &dyn EventLog,
    model: &[Arc<Event>],
    after: Seq,
    upto: Seq,
    sc: &Scope,
    limit: usize,
) {
    let got = log
        .read(after, upto, sc, limit)
        .await
        .unwrap_or_else(|e| panic!("read({after}, {upto}, {sc:?}, {limit}) failed: {e}"));
    let want = model_read(model, after, upto, sc, limit);
    assert_eq!(
        seqs(&got),
        want,
        "read(after = {after}, upto = {upto}, {sc:?}, limit = {limit})"
    );
    for e in &got {
        let known = model.iter().find(|m| m.seq == e.seq).unwrap();
        assert_eq!(e, known, "read returned a different event at seq {}", e.seq);
    }
}

/// `read(after, upto, All, limit)` returns exactly the events with `after < seq <= upto`, in
/// log order, for every combination of interesting positions.
pub async fn read_returns_exactly_the_range_in_order(log: Arc<dyn EventLog>) {
    let model = topic_log(&*log).await;
    let points = positions(&model);
    for &after in &points {
        for &upto in &points {
            check_read(&*log, &model, after, upto, &Scope::All, 10_000).await;
        }
    }
}

/// `read` returns the first `limit` events of the range, never more.
pub async fn read_honours_limit(log: Arc<dyn EventLog>) {
    let model = topic_log(&*log).await;
    let n = model.len();
    let points = positions(&model);
    for &after in &points {
        for limit in [0, 1, 2, 3, 7, n - 1, n, n + 1] {
            check_read(&*log, &model, after, Seq::MAX, &Scope::All, limit).await;
            check_read(&*log, &model, after, model[n / 2].seq, &Scope::All, limit).await;
            check_read(&*log, &model, after, Seq::MAX, &scope(&["a", "b"]), limit).await;
        }
    }
}

/// `Scope::Topics` keeps exactly the events carrying one of the topics, at any position in the
/// event's topic list, by exact string equality.
pub async fn read_by_topics_matches_exact_topics_including_alternates(log: Arc<dyn EventLog>) {
    let model = topic_log(&*log).await;
    let points = positions(&model);
    for sc in topic_scopes() {
        for &after in &points {
            for &upto in [Seq::MAX, model[7].seq, model[3].seq - 1].iter() {
                check_read(&*log, &model, after, upto, &sc, 10_000).await;
            }
        }
        for &upto in &points {
            check_read(&*log, &model, 0, upto, &sc, 10_000).await;
        }
    }
    // Spot checks, independent of the model: alternate topics match.
    let c = log.read(0, Seq::MAX, &scope(&["c"]), 100).await.unwrap();
    assert_eq!(
        c.iter().map(|e| e.topics[0].as_str()).collect::<Vec<_>>(),
        vec!["c", "b", "c"],
        "Scope::Topics([c]) must find c as first and as alternate topic"
    );
}

/// An event carrying several requested topics (or one topic twice) comes back once, and counts
/// once against the limit.
pub async fn read_by_topics_never_duplicates_an_event(log: Arc<dyn EventLog>) {
    let stored = append_ok(
        &*log,
        vec![
            ev(&["a", "b", "c"], "1"),
            ev(&["c", "b"], "2"),
            ev(&["a", "a"], "3"),
            ev(&["z"], "4"),
            ev(&["b", "a"], "5"),
        ],
    )
    .await;
    let s = |i: usize| stored[i].seq;
    let sc = scope(&["a", "b", "c"]);
    let got = log.read(0, Seq::MAX, &sc, 100).await.unwrap();
    assert_eq!(seqs(&got), vec![s(0), s(1), s(2), s(4)]);
    let got = log.read(0, Seq::MAX, &sc, 2).await.unwrap();
    assert_eq!(
        seqs(&got),
        vec![s(0), s(1)],
        "duplicates counted against the limit"
    );
    let got = log
        .read(0, Seq::MAX, &scope(&["a", "a", "b"]), 3)
        .await
        .unwrap();
    assert_eq!(
        seqs(&got),
        vec![s(0), s(1), s(2)],
        "a repeated scope topic duplicates events"
    );
}

/// Bounds at the edges of the seq range: `Seq::MAX`, `usize::MAX`, empty and inverted ranges.
pub async fn read_with_extreme_bounds(log: Arc<dyn EventLog>) {
    let model = topic_log(&*log).await;
    let newest = model.last().unwrap().seq;
    let all = log
        .read(0, Seq::MAX, &Scope::All, usize::MAX)
        .await
        .unwrap();
    assert_eq!(all, model, "read(0, MAX, All, usize::MAX)");
    let a = log
        .read(0, Seq::MAX, &scope(&["a"]), usize::MAX)
        .await
        .unwrap();
    assert_eq!(
        seqs(&a),
        model_read(&model, 0, Seq::MAX, &scope(&["a"]), usize::MAX)
    );
    for (after, upto) in [
        (newest, Seq::MAX),
        (Seq::MAX, Seq::MAX),
        (Seq::MAX - 1, Seq::MAX),
        (newest, newest),
        (model[5].seq, model[5].seq),
        (model[5].seq, model[2].seq),
        (Seq::MAX, 0),
    ] {
        for sc in [Scope::All, scope(&["a", "b"])] {
            let got = log.read(after, upto, &sc, usize::MAX).await.unwrap();
            assert!(
                got.is_empty(),
                "read({after}, {upto}, {sc:?}) returned {:?}",
                seqs(&got)
            );
        }
    }
    let got = log.read(0, 0, &Scope::All, 10).await.unwrap();
    assert!(got.is_empty(), "read(0, 0) returned {:?}", seqs(&got));
}

/// Scopes of thousands of topics work for `read` and `latest`.
pub async fn read_and_latest_with_many_topics_in_scope(log: Arc<dyn EventLog>) {
    let batch: Vec<NewEvent> = (0..200)
        .map(|i| {
            ev(
                &[format!("t/{}", i % 50).as_str(), format!("u/{i}").as_str()],
                &i.to_string(),
            )
        })
        .collect();
    let model = append_ok(&*log, batch).await;
    let mut topics: Vec<String> = (0..2000).map(|i| format!("other/{i}")).collect();
    for i in (0..50).step_by(3) {
        topics.insert(i * 37, format!("t/{i}"));
    }
    topics.push("u/199".into());
    let sc = Scope::Topics(topics);
    let got = log
        .read(0, Seq::MAX, &sc, 10_000)
        .await
        .expect("read with a big scope");
    assert_eq!(seqs(&got), model_read(&model, 0, Seq::MAX, &sc, 10_000));
    let got = log
        .latest(&sc, Seq::MAX)
        .await
        .expect("latest with a big scope");
    assert_eq!(seqs(&got), model_latest(&model, &sc, Seq::MAX));
}

// ---------------------------------------------------------------------------------------------
// Locate
// ---------------------------------------------------------------------------------------------

/// `locate` finds every retained id (publisher-given and hub-made) at its seq, and nothing for
/// ids never stored, near misses included.
pub async fn locate_finds_retained_ids_only(log: Arc<dyn EventLog>) {
    let mut stored = append_ok(
        &*log,
        vec![
            ev_id("job-42:done", &["a"], ""),
            ev(&["a"], ""),
            ev_id("\u{e9}v\u{e9}nement \u{2713}", &["b"], ""),
            ev_id("urn:uuid:0190a0a0-0000-7000-8000-000000000000", &["b"], ""),
        ],
    )
    .await;
    stored.extend(
        append_ok(
            &*log,
            vec![
                ev(&["c"], ""),
                ev_id("x'); DROP TABLE events;--", &["c"], ""),
            ],
        )
        .await,
    );
    for e in &stored {
        assert_eq!(
            log.locate(e.id.as_str()).await.unwrap(),
            Some(e.seq),
            "locate({:?})",
            e.id
        );
    }
    let hub_made = stored[1].id.as_str().to_owned();
    for unknown in [
        "unknown",
        "",
        "job-42",
        "job-42:done ",
        "JOB-42:DONE",
        "job-42:don",
        "%",
        "job-42%",
        "*",
        "earliest",
        &hub_made[..hub_made.len() - 1],
        &format!("{hub_made}0"),
    ] {
        assert_eq!(
            log.locate(unknown).await.unwrap(),
            None,
            "locate({unknown:?})"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Latest
// ---------------------------------------------------------------------------------------------

/// `latest(Topics, upto)`: per requested topic its newest event at or before `upto` (first or
/// alternate topic), deduplicated, in log order.
pub async fn latest_by_topics(log: Arc<dyn EventLog>) {
    let model = topic_log(&*log).await;
    for sc in topic_scopes().into_iter().filter(|s| *s != Scope::All) {
        for upto in positions(&model) {
            let got = log
                .latest(&sc, upto)
                .await
                .unwrap_or_else(|e| panic!("latest({sc:?}, {upto}): {e}"));
            assert_eq!(
                seqs(&got),
                model_latest(&model, &sc, upto),
                "latest({sc:?}, {upto})"
            );
            for e in &got {
                assert_eq!(e, model.iter().find(|m| m.seq == e.seq).unwrap());
            }
        }
    }
    // Independent spot checks: a and b both last appear in one event, which comes back once.
    let s = |i: usize| model[i].seq;
    let got = log.latest(&scope(&["a", "b"]), s(7)).await.unwrap();
    assert_eq!(
        seqs(&got),
        vec![s(7)],
        "shared newest event must come back once"
    );
    let got = log.latest(&scope(&["c", "a"]), s(10)).await.unwrap();
    assert_eq!(seqs(&got), vec![s(7), s(10)], "log order, not scope order");
}

/// `latest(All, upto)`: the newest event of every topic at or before `upto`, deduplicated, in
/// log order.
pub async fn latest_for_all_topics(log: Arc<dyn EventLog>) {
    let model = topic_log(&*log).await;
    for upto in positions(&model) {
        let got = log.latest(&Scope::All, upto).await.unwrap();
        assert_eq!(
            seqs(&got),
            model_latest(&model, &Scope::All, upto),
            "latest(All, {upto})"
        );
        for e in &got {
            assert_eq!(e, model.iter().find(|m| m.seq == e.seq).unwrap());
        }
    }
    assert!(log.latest(&Scope::All, 0).await.unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Prune and stats
// ---------------------------------------------------------------------------------------------

async fn prune(log: &dyn EventLog, max_events: Option<u64>, max_age: Option<Duration>) -> u64 {
    log.prune(Retention {
        max_events,
        max_age,
    })
    .await
    .unwrap_or_else(|e| panic!("prune(max_events {max_events:?}, max_age {max_age:?}): {e}"))
}

/// After pruning, the log holds exactly `retained`: reads, locate, latest and stats agree.
async fn assert_retained(log: &dyn EventLog, retained: &[Arc<Event>], gone: &[Arc<Event>]) {
    assert_eq!(all_events(log).await, retained, "retained events");
    for e in gone {
        assert_eq!(
            log.locate(e.id.as_str()).await.unwrap(),
            None,
            "pruned {:?} still located",
            e.id
        );
    }
    for e in retained {
        assert_eq!(log.locate(e.id.as_str()).await.unwrap(), Some(e.seq));
    }
    assert_eq!(
        stats(log).await,
        expected_stats(retained),
        "stats after pruning"
    );
    let latest = log.latest(&Scope::All, Seq::MAX).await.unwrap();
    assert_eq!(
        seqs(&latest),
        model_latest(retained, &Scope::All, Seq::MAX),
        "latest after pruning"
    );
    let a = log.read(0, Seq::MAX, &scope(&["a"]), 10_000).await.unwrap();
    assert_eq!(
        seqs(&a),
        model_read(retained, 0, Seq::MAX, &scope(&["a"]), 10_000)
    );
}

/// `max_events` keeps exactly the newest N events.
pub async fn prune_by_max_events(log: Arc<dyn EventLog>) {
    let mut stored = Vec::new();
    for i in 0..10 {
        let e = if i % 2 == 0 {
            ev_id(
                &format!("e{i}"),
                &[if i < 6 { "old" } else { "a" }, "a"],
                "",
            )
        } else {
            ev(&[format!("t{i}").as_str(), "a"], "")
        };
        stored.extend(append_ok(&*log, vec![e]).await);
    }
    assert_eq!(
        prune(&*log, None, None).await,
        0,
        "no limit must prune nothing"
    );
    assert_eq!(prune(&*log, Some(10), None).await, 0);
    assert_eq!(prune(&*log, Some(1000), None).await, 0);
    assert_retained(&*log, &stored, &[]).await;

    assert_eq!(
        prune(&*log, Some(4), None).await,
        6,
        "prune(max_events 4) of 10"
    );
    assert_retained(&*log, &stored[6..], &stored[..6]).await;
    assert!(log
        .read(0, Seq::MAX, &scope(&["old"]), 10)
        .await
        .unwrap()
        .is_empty());
    assert!(log
        .latest(&scope(&["old"]), Seq::MAX)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        prune(&*log, Some(4), None).await,
        0,
        "pruning again must prune nothing"
    );

    assert_eq!(prune(&*log, Some(1), None).await, 3);
    assert_retained(&*log, &stored[9..], &stored[..9]).await;
    assert_eq!(prune(&*log, Some(0), None).await, 1);
    assert_retained(&*log, &[], &stored).await;
    assert_eq!(prune(&*log, Some(0), None).await, 0);
}

/// `max_age` of a day keeps fresh events; `max_age` of zero (once time has moved on) drops all.
pub async fn prune_by_max_age_zero_and_large(log: Arc<dyn EventLog>) {
    let mut stored = append_ok(&*log, vec![ev(&["a"], "1"), ev_id("p", &["b"], "2")]).await;
    stored.extend(append_ok(&*log, vec![ev(&["a"], "3"), ev(&["c"], "4")]).await);
    let day = Duration::from_secs(86_400);
    assert_eq!(prune(&*log, None, Some(day)).await, 0);
    assert_eq!(prune(&*log, None, Some(Duration::from_secs(3600))).await, 0);
    assert_retained(&*log, &stored, &[]).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        prune(&*log, None, Some(Duration::ZERO)).await,
        4,
        "max_age 0"
    );
    assert_retained(&*log, &[], &stored).await;
}

/// A `max_age` that falls between events stored 1.5 s apart: the age of the younger ones plus
/// 750 ms, measured from their own `stored_at`, so a slow machine cannot move the split.
fn split_age(young: &[Arc<Event>]) -> Duration {
    let stored = young.iter().map(|e| e.stored_at_ms).min().unwrap_or(0);
    let age_ms = (now_ms() - stored).max(0) as u64;
    Duration::from_millis(age_ms + 750)
}

/// `max_age` drops exactly the events older than it and keeps the younger ones.
pub async fn prune_by_max_age_splits_old_from_young(log: Arc<dyn EventLog>) {
    let old = append_ok(
        &*log,
        vec![ev(&["a"], "1"), ev(&["b"], "2"), ev(&["a"], "3")],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let young = append_ok(&*log, vec![ev(&["a"], "4"), ev(&["c"], "5")]).await;
    assert_eq!(prune(&*log, None, Some(split_age(&young))).await, 3);
    assert_retained(&*log, &young, &old).await;
}

/// With both `max_events` and `max_age`, an event goes when either says so.
pub async fn prune_with_both_limits_applies_the_stricter(log: Arc<dyn EventLog>) {
    let old = append_ok(
        &*log,
        vec![ev(&["a"], "1"), ev(&["b"], "2"), ev(&["a"], "3")],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let young = append_ok(
        &*log,
        vec![ev(&["a"], "4"), ev(&["c"], "5"), ev(&["c"], "6")],
    )
    .await;
    // Age is stricter.
    assert_eq!(prune(&*log, Some(5), Some(split_age(&young))).await, 3);
    assert_retained(&*log, &young, &old).await;
    // Count is stricter.
    assert_eq!(
        prune(&*log, Some(1), Some(Duration::from_secs(3600))).await,
        2
    );
    assert_retained(&*log, &young[2..], &young[..2]).await;
}

/// Pruning far more events than one backend round would delete still removes them all.
pub async fn prune_many_events(log: Arc<dyn EventLog>) {
    let mut stored = Vec::new();
    for b in 0..24 {
        let batch = (0..500)
            .map(|i| ev(&["a", format!("t{}", i % 7).as_str()], &format!("{b}:{i}")))
            .collect();
        stored.extend(append_ok(&*log, batch).await);
    }
    assert_eq!(stats(&*log).await, expected_stats(&stored));
    assert_eq!(prune(&*log, Some(100), None).await, 11_900);
    let retained = &stored[11_900..];
    assert_eq!(stats(&*log).await, expected_stats(retained));
    assert_eq!(all_events(&*log).await, retained);
    for e in [&stored[0], &stored[4_999], &stored[5_000], &stored[11_899]] {
        assert_eq!(log.locate(e.id.as_str()).await.unwrap(), None);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(prune(&*log, None, Some(Duration::ZERO)).await, 100);
    assert_eq!(stats(&*log).await, LogStats::default());
}

/// A `max_age` too large to subtract from the clock (e.g. `Duration::MAX`, "forever") prunes
/// nothing.
pub async fn prune_with_huge_max_age_keeps_everything(log: Arc<dyn EventLog>) {
    let stored = append_ok(
        &*log,
        vec![ev(&["a"], "1"), ev(&["b"], "2"), ev(&["a"], "3")],
    )
    .await;
    for age in [
        Duration::from_secs(100 * 365 * 86_400),
        Duration::from_secs(i64::MAX as u64 / 1000),
        Duration::from_secs(u64::MAX),
        Duration::MAX,
    ] {
        assert_eq!(
            prune(&*log, None, Some(age)).await,
            0,
            "max_age {age:?} pruned events"
        );
        assert_retained(&*log, &stored, &[]).await;
    }
}

/// After pruning everything, seqs continue above the old newest: they are never reused.
pub async fn prune_everything_then_append_continues_seq(log: Arc<dyn EventLog>) {
    let first = append_ok(&*log, (0..5).map(|i| ev(&["a"], &i.to_string())).collect()).await;
    assert_eq!(prune(&*log, Some(0), None).await, 5);
    assert_eq!(stats(&*log).await, LogStats::default());
    let next = append_ok(&*log, vec![ev(&["a"], "after")]).await;
    assert!(
        next[0].seq > first[4].seq,
        "seq {} reused after pruning everything (newest was {})",
        next[0].seq,
        first[4].seq
    );
    assert_eq!(all_events(&*log).await, next);
    assert_eq!(stats(&*log).await, expected_stats(&next));
    // Reading from the old positions finds only the new event.
    let got = log
        .read(first[2].seq, Seq::MAX, &Scope::All, 10)
        .await
        .unwrap();
    assert_eq!(got, next);
}

/// An empty log: default stats, empty reads and latest, no ids, nothing to prune, no notice of
/// any event.
pub async fn empty_log(log: Arc<dyn EventLog>) {
    let mut rx = log.commits();
    assert_eq!(
        stats(&*log).await,
        LogStats::default(),
        "stats of an empty log"
    );
    assert!(log
        .read(0, Seq::MAX, &Scope::All, 100)
        .await
        .unwrap()
        .is_empty());
    assert!(log
        .read(0, Seq::MAX, &scope(&["a"]), 100)
        .await
        .unwrap()
        .is_empty());
    assert!(log.latest(&Scope::All, Seq::MAX).await.unwrap().is_empty());
    assert!(log
        .latest(&scope(&["a"]), Seq::MAX)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(log.locate("x").await.unwrap(), None);
    assert_eq!(prune(&*log, Some(0), None).await, 0);
    assert_eq!(prune(&*log, None, Some(Duration::ZERO)).await, 0);
    assert_eq!(stats(&*log).await, LogStats::default());
    tokio::time::sleep(Duration::from_millis(20)).await;
    // A wake-up is allowed, but no notice may claim an event.
    loop {
        match rx.try_recv() {
            Err(TryRecvError::Empty) => break,
            Ok(c) if c.upto == 0 && c.events.as_ref().is_none_or(|e| e.is_empty()) => {}
            other => panic!("an empty log sent a commit notice for events: {other:?}"),
        }
    }
}

/// `stats` follows appends: count, oldest and newest `(seq, id)`.
pub async fn stats_track_appends(log: Arc<dyn EventLog>) {
    let mut stored = Vec::new();
    for round in 0..4 {
        let batch = (0..round + 1)
            .map(|i| {
                if i % 2 == 0 {
                    ev(&["a"], "")
                } else {
                    ev_id(&format!("s{round}-{i}"), &["a"], "")
                }
            })
            .collect();
        stored.extend(append_ok(&*log, batch).await);
        assert_eq!(
            stats(&*log).await,
            expected_stats(&stored),
            "stats after round {round}"
        );
    }
    // A failed batch changes nothing.
    let _ = log
        .append(vec![ev(&["a"], ""), ev_id("s1-1", &["a"], "")])
        .await;
    assert_eq!(stats(&*log).await, expected_stats(&stored));
}

// ---------------------------------------------------------------------------------------------
// Commit notices
// ---------------------------------------------------------------------------------------------

/// Receivers subscribed before an append get a notice whose `upto` covers it; events carried by
/// notices are exactly the appended events, in order, contiguous and ending at `upto`.
pub async fn commit_notice_covers_appended_events(log: Arc<dyn EventLog>) {
    let mut receivers = [log.commits(), log.commits()];
    for round in 1..=4usize {
        let batch = (0..round)
            .map(|i| ev(&["a", "b"], &format!("{round}.{i}")))
            .collect();
        let stored = append_ok(&*log, batch).await;
        let last = stored.last().unwrap().seq;
        let log_now = all_events(&*log).await;
        for (r, rx) in receivers.iter_mut().enumerate() {
            let notices = notices_until(rx, last).await;
            let mut carried = Vec::new();
            for c in &notices {
                assert!(
                    c.upto <= last,
                    "notice upto {} is past the newest event {last}",
                    c.upto
                );
                assert_notice_shape(c, &log_now);
                carried.extend(c.events.iter().flat_map(|es| es.iter().cloned()));
            }
            if notices.iter().all(|c| c.events.is_some()) {
                assert_eq!(
                    carried, stored,
                    "receiver {r}, round {round}: notices carry other events than appended"
                );
            } else {
                // Notices without events are wake-ups; any events carried must still be ours.
                assert!(
                    carried.iter().all(|e| stored.contains(e)),
                    "foreign events in notices"
                );
            }
        }
    }
    // A receiver subscribed now hears the next append too.
    let mut late = log.commits();
    let stored = append_ok(&*log, vec![ev(&["c"], "late")]).await;
    let notices = notices_until(&mut late, stored[0].seq).await;
    if let Some(events) = &notices.last().unwrap().events {
        assert_eq!(events.to_vec(), stored);
    }
}

/// When a notice arrives (possibly before `append` has returned), every event up to its `upto`
/// is already readable.
pub async fn commit_notice_follows_durable_commit(log: Arc<dyn EventLog>) {
    for round in 0..20 {
        let mut rx = log.commits();
        let appender = {
            let log = log.clone();
            tokio::spawn(async move {
                let batch = (0..3)
                    .map(|i| ev(&["a"], &format!("{round}.{i}")))
                    .collect();
                append_ok(&*log, batch).await
            })
        };
        let commit = match tokio::time::timeout(NOTICE_TIMEOUT, rx.recv()).await {
            Ok(Ok(c)) => c,
            other => panic!("round {round}: no notice: {other:?}"),
        };
        let visible = log.read(0, commit.upto, &Scope::All, 10_000).await.unwrap();
        assert_eq!(
            visible.last().map(|e| e.seq),
            Some(commit.upto),
            "round {round}: notice says upto {} but the log reads up to {:?}",
            commit.upto,
            visible.last().map(|e| e.seq)
        );
        let stored = appender.await.expect("append task");
        if commit.upto < stored[2].seq {
            notices_until(&mut rx, stored[2].seq).await;
        }
        if let Some(events) = &commit.events {
            for e in events.iter() {
                assert!(visible.contains(e), "notice event {e:?} not readable");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Concurrency
// ---------------------------------------------------------------------------------------------

/// 32 tasks appending 50 events each (in batches of 1 to 5, half with publisher ids) all
/// succeed; every returned event is in the log as returned; each batch is contiguous; each task's
/// events are in the log in the task's order.
pub async fn concurrent_appends_all_succeed_in_task_order(log: Arc<dyn EventLog>) {
    const TASKS: usize = 32;
    const EACH: usize = 50;
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let log = log.clone();
        handles.push(tokio::spawn(async move {
            let mut batches: Vec<Vec<Arc<Event>>> = Vec::new();
            let mut i = 0;
            while i < EACH {
                let n = (t % 5 + 1).min(EACH - i);
                let batch = (i..i + n)
                    .map(|k| {
                        let topics = [format!("task/{t}"), "all".to_owned()];
                        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
                        if t % 2 == 0 {
                            ev_id(&format!("t{t}-{k}"), &topics, &format!("{t}:{k}"))
                        } else {
                            ev(&topics, &format!("{t}:{k}"))
                        }
                    })
                    .collect();
                let out = log
                    .append(batch)
                    .await
                    .unwrap_or_else(|e| panic!("task {t} append at {i} failed: {e}"));
                assert_eq!(out.len(), n);
                batches.push(out);
                i += n;
            }
            batches
        }));
    }
    let mut per_task = Vec::new();
    for h in handles {
        per_task.push(h.await.expect("append task panicked"));
    }
    let log_now = all_events(&*log).await;
    assert_eq!(log_now.len(), TASKS * EACH, "events in the log");
    assert_strictly_increasing(&log_now, "the log");
    let index: BTreeMap<Seq, usize> = log_now
        .iter()
        .enumerate()
        .map(|(i, e)| (e.seq, i))
        .collect();
    let mut all_ids = HashSet::new();
    for (t, batches) in per_task.iter().enumerate() {
        let mut k = 0;
        let mut prev: Option<Seq> = None;
        for batch in batches {
            let first = index[&batch[0].seq];
            for (j, e) in batch.iter().enumerate() {
                assert_eq!(
                    &*e.data,
                    format!("{t}:{k}"),
                    "task {t}: answer out of order"
                );
                let at = *index
                    .get(&e.seq)
                    .unwrap_or_else(|| panic!("task {t}: returned seq {} not in the log", e.seq));
                assert_eq!(&log_now[at], e, "task {t}: the log differs from the answer");
                assert_eq!(
                    at,
                    first + j,
                    "task {t}: a batch is not contiguous in the log"
                );
                if let Some(p) = prev {
                    assert!(
                        e.seq > p,
                        "task {t}: event {k} precedes the task's earlier one"
                    );
                }
                prev = Some(e.seq);
                assert!(
                    all_ids.insert(e.id.as_str().to_owned()),
                    "id {:?} returned twice",
                    e.id
                );
                k += 1;
            }
        }
        assert_eq!(k, EACH);
    }
    for e in log_now.iter().step_by(7) {
        assert_eq!(log.locate(e.id.as_str()).await.unwrap(), Some(e.seq));
    }
    for t in (0..TASKS).step_by(2) {
        assert_eq!(
            log.locate(&format!("t{t}-{}", EACH - 1)).await.unwrap(),
            per_task[t].last().unwrap().last().map(|e| e.seq)
        );
    }
    let task3 = log
        .read(0, Seq::MAX, &scope(&["task/3"]), 10_000)
        .await
        .unwrap();
    assert_eq!(
        task3,
        per_task[3].concat(),
        "read by topic under concurrency"
    );
    assert_eq!(stats(&*log).await, expected_stats(&log_now));
}

/// A reader tailing the log (reading after the last seq it saw) while many tasks append sees
/// every event exactly once: events never become visible behind a position already read past.
pub async fn tailing_reader_misses_nothing_under_concurrent_appends(log: Arc<dyn EventLog>) {
    const TASKS: usize = 16;
    const EACH: usize = 40;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (log, done) = (log.clone(), done.clone());
        tokio::spawn(async move {
            let mut seen: Vec<Seq> = Vec::new();
            let mut head = 0;
            loop {
                let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                let page = log
                    .read(head, Seq::MAX, &Scope::All, 64)
                    .await
                    .expect("tail read");
                if let Some(last) = page.last() {
                    head = last.seq;
                    seen.extend(page.iter().map(|e| e.seq));
                } else if finished {
                    return seen;
                } else {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let log = log.clone();
        handles.push(tokio::spawn(async move {
            for k in 0..EACH {
                let n = 1 + (t + k) % 3;
                let batch = (0..n)
                    .map(|i| ev(&["all"], &format!("{t}:{k}:{i}")))
                    .collect();
                log.append(batch).await.expect("append");
            }
        }));
    }
    for h in handles {
        h.await.expect("append task");
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = reader.await.expect("reader");
    let log_now = seqs(&all_events(&*log).await);
    let missed: Vec<Seq> = {
        let seen: HashSet<Seq> = seen.iter().copied().collect();
        log_now
            .iter()
            .copied()
            .filter(|s| !seen.contains(s))
            .collect()
    };
    assert!(
        missed.is_empty(),
        "the tailing reader never saw seqs {missed:?}"
    );
    assert_eq!(seen, log_now, "the tailing reader saw a different sequence");
}

// ---------------------------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------------------------

/// Data comes back byte for byte from append, read, latest and commit notices.
pub async fn data_round_trips_byte_identical(log: Arc<dyn EventLog>) {
    let cases: Vec<String> = vec![
        String::new(),
        "plain".into(),
        "line one\nline two\n".into(),
        "\n".into(),
        "\n\n\n".into(),
        "crlf\r\nline\r\n".into(),
        "lone\rcr\r".into(),
        "\r".into(),
        "  leading and trailing spaces  ".into(),
        "\ttabs\t".into(),
        "data: not a field\n\nid: nope\nevent: x\n: comment".into(),
        "unicode: \u{e9}\u{e8}\u{ea} \u{65e5}\u{672c}\u{8a9e} \u{1F389}\u{1F468}\u{200D}\u{1F469}"
            .into(),
        "\u{feff}bom and \u{2028} line sep \u{2029} para sep \u{85} nel".into(),
        "quotes ' \" ` and \\ backslash %s %d {} $1 ?".into(),
        "x'); DROP TABLE events;--".into(),
        r#"{"json":[1,2,{"k":"v\n"}]}"#.into(),
        "\u{7f}\u{1}\u{1b}[0m controls".into(),
        big_text(512 * 1024),
        "y".repeat(512 * 1024),
    ];
    let mut rx = log.commits();
    // One event per append, then all in one batch.
    let mut stored = Vec::new();
    for (i, data) in cases.iter().enumerate() {
        let out = append_ok(&*log, vec![ev(&[format!("case/{i}").as_str()], data)]).await;
        stored.extend(out);
    }
    stored.extend(append_ok(&*log, cases.iter().map(|d| ev(&["batch"], d)).collect()).await);
    let expected: Vec<&String> = cases.iter().chain(cases.iter()).collect();
    for (e, want) in stored.iter().zip(&expected) {
        assert!(
            e.data.as_bytes() == want.as_bytes(),
            "append answer altered data at seq {}",
            e.seq
        );
    }
    let back = all_events(&*log).await;
    assert_eq!(back.len(), expected.len());
    for (e, want) in back.iter().zip(&expected) {
        assert!(
            e.data.as_bytes() == want.as_bytes(),
            "read altered data at seq {} ({} bytes stored, {} read)",
            e.seq,
            want.len(),
            e.data.len()
        );
    }
    assert!(back == stored, "read events differ from appended events");
    let latest = log.latest(&Scope::All, Seq::MAX).await.unwrap();
    for e in &latest {
        let orig = stored.iter().find(|s| s.seq == e.seq).unwrap();
        assert!(
            e.data.as_bytes() == orig.data.as_bytes(),
            "latest altered data at seq {}",
            e.seq
        );
    }
    let notices = notices_until(&mut rx, stored.last().unwrap().seq).await;
    for e in notices
        .iter()
        .flat_map(|c| c.events.iter().flat_map(|es| es.iter()))
    {
        let orig = stored.iter().find(|s| s.seq == e.seq).unwrap();
        assert!(
            e.data.as_bytes() == orig.data.as_bytes(),
            "notice altered data at seq {}",
            e.seq
        );
    }
}

/// Data containing NUL characters (valid UTF-8 and valid in SSE) comes back byte for byte.
pub async fn data_with_nul_round_trips(log: Arc<dyn EventLog>) {
    let cases = ["\0", "a\0b", "\0\0\ntrailing\0"];
    let stored = append_ok(&*log, cases.iter().map(|d| ev(&["a"], d)).collect()).await;
    let back = all_events(&*log).await;
    for ((e, s), want) in back.iter().zip(&stored).zip(cases) {
        assert_eq!(e.data.as_bytes(), want.as_bytes(), "read altered NUL data");
        assert_eq!(
            s.data.as_bytes(),
            want.as_bytes(),
            "append altered NUL data"
        );
    }
}

/// Every field of an event survives storage: id, topics (all of them, in order, duplicates
/// included), type, retry and private.
pub async fn fields_round_trip(log: Arc<dyn EventLog>) {
    let long_topic = "t".repeat(tidings_core::event::MAX_TOPIC_LEN);
    let long_id = "i".repeat(tidings_core::event::MAX_ID_LEN);
    let many_topics: Vec<String> = (0..100)
        .map(|i| format!("https://example.com/jobs/{i}"))
        .collect();
    let many: Vec<&str> = many_topics.iter().map(String::as_str).collect();
    let mut news = vec![
        ev(&["a"], "defaults"),
        ev_id(&long_id, &[&long_topic], "longest id and topic"),
        ev_id(
            "\u{e9}v\u{e9}nement \u{2713} \"quoted\" 'x'",
            &["z", "a", "m"],
            "topic order",
        ),
        ev(&["dup", "other", "dup"], "repeated topic"),
        ev(&many, "many topics"),
        ev(
            &[
                "https://example.com/a b?c=d&e#f",
                "\u{65e5}\u{672c}/\u{1F389}",
                " spaced ",
            ],
            "odd topics",
        ),
    ];
    news[0].kind = None;
    news[1].kind = Some(EventType::parse("job.done").unwrap());
    news[1].retry = Some(0);
    news[1].private = true;
    news[2].kind = Some(EventType::parse(&"k".repeat(tidings_core::event::MAX_TYPE_LEN)).unwrap());
    news[2].retry = Some(2500);
    news[3].retry = Some(u32::MAX as u64 + 7);
    news[3].private = true;
    news[4].kind = Some(EventType::parse("\u{e9}v\u{e9}nement type").unwrap());
    news[5].retry = Some(i64::MAX as u64);
    let stored = append_ok(&*log, news.clone()).await;
    for (s, n) in stored.iter().zip(&news) {
        if let Some(id) = &n.id {
            assert_eq!(&s.id, id);
        }
        assert_eq!(s.topics.to_vec(), n.topics, "append altered topics");
        assert_eq!(s.kind, n.kind);
        assert_eq!(s.retry, n.retry);
        assert_eq!(s.private, n.private);
        assert_eq!(&*s.data, n.data);
    }
    let back = all_events(&*log).await;
    for (b, s) in back.iter().zip(&stored) {
        assert_eq!(b, s, "read altered an event");
    }
    assert_eq!(back.len(), stored.len());
    let latest = log.latest(&scope(&["m", "dup"]), Seq::MAX).await.unwrap();
    assert_eq!(latest, vec![stored[2].clone(), stored[3].clone()]);
    let by_last = log
        .read(0, Seq::MAX, &scope(&["https://example.com/jobs/99"]), 10)
        .await
        .unwrap();
    assert_eq!(
        by_last,
        vec![stored[4].clone()],
        "the 100th topic must match"
    );
}

/// `retry` is a `u64` and every value of it survives storage (publishers may send any
/// non-negative integer).
pub async fn retry_round_trips_full_u64_range(log: Arc<dyn EventLog>) {
    let values = [
        0,
        1,
        i64::MAX as u64,
        i64::MAX as u64 + 1,
        u64::MAX - 1,
        u64::MAX,
    ];
    let news: Vec<NewEvent> = values
        .iter()
        .map(|&r| {
            let mut e = ev(&["a"], "");
            e.retry = Some(r);
            e
        })
        .collect();
    let stored = append_ok(&*log, news).await;
    let back = all_events(&*log).await;
    let got: Vec<Option<u64>> = back.iter().map(|e| e.retry).collect();
    let want: Vec<Option<u64>> = values.iter().map(|&r| Some(r)).collect();
    assert_eq!(
        stored.iter().map(|e| e.retry).collect::<Vec<_>>(),
        want,
        "append answer"
    );
    assert_eq!(got, want, "retry values read back");
}
