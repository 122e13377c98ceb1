//! Event log backends, one file each. Every backend passes the behavioural suite in
//! `tests/log_suite/`.

#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;
pub mod sqlite;

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, oneshot};

use crate::event::{Event, NewEvent, Seq};
use crate::log::{Commit, LogError};

/// What one append request gets: its stored events, or why not.
pub(crate) type AppendResult = Result<Vec<Arc<Event>>, LogError>;
/// Where a writer answers one append request.
pub(crate) type AppendReply = oneshot::Sender<AppendResult>;
/// A group commit's outcome: events committed for no request (outbox rows), then one result
/// per request.
pub(crate) type GroupResult = Result<(Vec<Arc<Event>>, Vec<AppendResult>), LogError>;

/// Sends a job to a backend's writer task and awaits its answer; a closed writer is
/// [`LogError::Closed`].
pub(crate) async fn request<J, T>(
    jobs: &mpsc::Sender<J>,
    job: impl FnOnce(oneshot::Sender<Result<T, LogError>>) -> J,
) -> Result<T, LogError> {
    let (tx, rx) = oneshot::channel();
    jobs.send(job(tx)).await.map_err(|_| LogError::Closed)?;
    rx.await.map_err(|_| LogError::Closed)?
}

/// Ends a group commit: on success, announces everything the group committed (`before`, events
/// committed for no request such as outbox rows, then each request's, in seq order) in one
/// commit notice, then answers each request; on failure, refuses every request with the error
/// (a failed commit may still have happened: the log is the truth, and readers will see it).
pub(crate) fn answer_group(
    replies: impl Iterator<Item = AppendReply>,
    result: GroupResult,
    commits: &broadcast::Sender<Commit>,
) {
    match result {
        Ok((before, outcomes)) => {
            let committed: Vec<Arc<Event>> = before
                .into_iter()
                .chain(
                    outcomes
                        .iter()
                        .filter_map(|o| o.as_ref().ok())
                        .flatten()
                        .cloned(),
                )
                .collect();
            if let Some(last) = committed.last() {
                let _ = commits.send(Commit {
                    upto: last.seq,
                    events: Some(committed.into()),
                });
            }
            for (reply, outcome) in replies.zip(outcomes) {
                let _ = reply.send(outcome);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "the group commit failed; every request in it is refused");
            for reply in replies {
                let _ = reply.send(Err(LogError::Storage(e.to_string())));
            }
        }
    }
}

/// A backend failure, its message kept for logs.
pub(crate) fn storage(e: impl std::fmt::Display) -> LogError {
    LogError::Storage(e.to_string())
}

/// A seq as an SQL `bigint`, saturating (seqs past `i64::MAX` never exist; bounds may).
pub(crate) fn clamp(seq: Seq) -> i64 {
    seq.min(i64::MAX as u64) as i64
}

/// The first publisher id given twice in `batch`, if any.
pub(crate) fn duplicate_within(batch: &[NewEvent]) -> Option<String> {
    let mut seen = std::collections::HashSet::new();
    batch
        .iter()
        .filter_map(|e| e.id.as_ref())
        .find(|id| !seen.insert(id.as_str()))
        .map(|id| id.as_str().to_owned())
}
