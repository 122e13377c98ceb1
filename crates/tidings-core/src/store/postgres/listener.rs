//! The LISTEN connection: other nodes' commit notifications become commit notices and outbox
//! notifications become drain requests; it reconnects with backoff, reports the link down
//! through `health()` meanwhile, and after reconnecting sends a catch-up notice.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use tokio_postgres::{AsyncMessage, Client};

use super::writer::DrainSignal;
use super::{channel, outbox_channel, pg, Target};
use crate::event::Seq;
use crate::log::{Commit, LogError};

/// How often a node looks into the outbox without being notified (a safety net: notifications
/// are lost while the LISTEN connection is down, and a move can fail half-way).
const OUTBOX_SWEEP: Duration = Duration::from_secs(5);
/// Longest wait between two attempts to reconnect the LISTEN connection.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Notifications from one LISTEN connection, forwarded by the task driving it; `None` or an
/// error once the connection is gone.
type Messages = mpsc::UnboundedReceiver<Result<AsyncMessage, tokio_postgres::Error>>;

/// Keeps one connection LISTENing to the schema's commit and outbox channels, reconnecting with
/// backoff when it fails: other nodes' commits become commit notices, outbox inserts become
/// drain requests. After a reconnection it sends a catch-up notice up to the log's newest seq
/// (notifications sent meanwhile were lost) and requests a drain.
pub(super) struct Listener {
    pub(super) config: Target,
    pub(super) schema: String,
    pub(super) node: String,
    pub(super) commits: broadcast::Sender<Commit>,
    pub(super) drain: Arc<DrainSignal>,
    pub(super) link: Arc<std::sync::Mutex<Option<String>>>,
}

impl Listener {
    /// Connects and LISTENs; the connection lives as long as the returned client.
    pub(super) async fn open(&self) -> Result<(Client, Messages), LogError> {
        let (client, mut connection) = self
            .config
            .config
            .connect(self.config.tls.clone())
            .await
            .map_err(pg)?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                let failed = message.is_err();
                if tx.send(message).is_err() || failed {
                    return;
                }
            }
        });
        client
            .batch_execute(&format!(
                "LISTEN {}; LISTEN {}",
                channel(&self.schema),
                outbox_channel(&self.schema)
            ))
            .await
            .map_err(pg)?;
        Ok((client, rx))
    }

    fn set_link(&self, down: Option<String>) {
        *self.link.lock().unwrap_or_else(|e| e.into_inner()) = down;
    }

    pub(super) async fn run(self, first: (Client, Messages)) {
        let mut session = Some(first);
        let mut backoff = Duration::from_millis(100);
        loop {
            let (client, mut messages) = match session.take() {
                Some(session) => session,
                None => match self.reopen().await {
                    Ok(session) => {
                        tracing::info!("PostgreSQL LISTEN connection re-established");
                        self.set_link(None);
                        backoff = Duration::from_millis(100);
                        session
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?backoff, "PostgreSQL unreachable");
                        self.set_link(Some(format!(
                            "PostgreSQL is unreachable ({e}); reconnecting"
                        )));
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                },
            };
            let mut sweep = tokio::time::interval(OUTBOX_SWEEP);
            let reason = loop {
                tokio::select! {
                    message = messages.recv() => match message {
                        Some(Ok(AsyncMessage::Notification(n))) => self.notified(&n),
                        Some(Ok(_)) => {}
                        Some(Err(e)) => break super::pg_reason(&e),
                        None => break "the connection closed".to_owned(),
                    },
                    _ = sweep.tick() => self.drain.request(),
                }
            };
            tracing::error!(
                reason,
                "the PostgreSQL LISTEN connection failed; reconnecting"
            );
            self.set_link(Some(format!(
                "the PostgreSQL LISTEN connection failed ({reason}); reconnecting"
            )));
            drop(client);
            // Right after a failure the server is most likely still away.
            tokio::time::sleep(backoff).await;
        }
    }

    /// A new session, plus the catch-up for whatever was committed while there was none.
    async fn reopen(&self) -> Result<(Client, Messages), LogError> {
        let session = self.open().await?;
        // Read after LISTEN is in place, so no commit falls between the two.
        let upto: i64 = session
            .0
            .query_one("SELECT last_seq FROM log_state", &[])
            .await
            .map_err(pg)?
            .get(0);
        let _ = self.commits.send(Commit {
            upto: upto.max(0) as Seq,
            events: None,
        });
        self.drain.request();
        Ok(session)
    }

    fn notified(&self, n: &tokio_postgres::Notification) {
        if n.channel() != channel(&self.schema) {
            self.drain.request();
            return;
        }
        let mut parts = n.payload().split(' ');
        let upto = parts.next().and_then(|s| s.parse::<Seq>().ok());
        let from = parts.next();
        match upto {
            Some(_) if from == Some(self.node.as_str()) => {}
            Some(upto) => {
                let _ = self.commits.send(Commit { upto, events: None });
            }
            None => tracing::warn!(payload = n.payload(), "odd commit notification"),
        }
    }
}
