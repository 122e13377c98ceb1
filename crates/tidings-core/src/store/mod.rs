//! Event log backends, one file each. Every backend passes the behavioural suite in
//! `tests/log_suite/`.

#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;
pub mod sqlite;

use tokio::sync::{mpsc, oneshot};

use crate::log::LogError;

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
