//! The SUBSCRIBE connection on the commit channel: other nodes' commit messages become
//! wake-ups; it pings to notice a dead link, re-subscribes with backoff, reports the link down
//! through `health()` meanwhile, and after re-subscribing sends a catch-up wake-up.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use redis::{Client, Value};
use tokio::sync::broadcast;

use super::{storage, Keys};
use crate::event::Seq;
use crate::log::{Commit, LogError};

/// How often the listener pings its connection, and how long a ping may take.
const PING_EVERY: Duration = Duration::from_secs(5);
const PING_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait between two reconnection attempts of the listener.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Whether the listener's link is up; `Some(reason)` while it is down.
#[derive(Default)]
pub(super) struct Link(Mutex<Option<String>>);

impl Link {
    pub(super) fn set(&self, down: Option<String>) {
        // A poisoned lock only means a panic elsewhere mid-assignment; the value is still usable.
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = down;
    }

    pub(super) fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A connection subscribed to `channel`.
pub(super) async fn subscribe(
    client: &Client,
    channel: &str,
) -> Result<redis::aio::PubSub, LogError> {
    let mut pubsub = tokio::time::timeout(PING_TIMEOUT, client.get_async_pubsub())
        .await
        .map_err(|_| storage("timed out connecting"))?
        .map_err(storage)?;
    pubsub.subscribe(channel).await.map_err(storage)?;
    Ok(pubsub)
}

/// Turns other nodes' commit messages into wake-ups, for as long as the log lives: re-subscribes
/// with backoff when the link drops, and then sends a catch-up wake-up.
pub(super) async fn listen(
    client: Client,
    first: redis::aio::PubSub,
    mut conn: ConnectionManager,
    keys: Arc<Keys>,
    node: String,
    commits: broadcast::Sender<Commit>,
    link: Arc<Link>,
) {
    let mut next = Some(first);
    let mut backoff = Duration::from_millis(100);
    loop {
        let pubsub = match next.take() {
            Some(p) => p,
            None => match subscribe(&client, &keys.channel).await {
                Ok(p) => p,
                Err(e) => {
                    link.set(Some(format!("Redis is unreachable, reconnecting: {e}")));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            },
        };
        if link.get().is_some() {
            // Messages published while the link was down are lost: wake the pump to read the
            // log up to the counter, which covers every commit so far.
            match redis::cmd("GET")
                .arg(&keys.seq)
                .query_async::<Option<Seq>>(&mut conn)
                .await
            {
                Ok(upto) => {
                    tracing::info!("the Redis link is back");
                    link.set(None);
                    let _ = commits.send(Commit {
                        upto: upto.unwrap_or(0),
                        events: None,
                    });
                }
                Err(e) => {
                    link.set(Some(format!("Redis does not answer, reconnecting: {e}")));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
        }
        backoff = Duration::from_millis(100);
        let reason = follow(pubsub, &node, &commits).await;
        tracing::warn!(reason, "the Redis subscription was lost; reconnecting");
        link.set(Some(format!(
            "the Redis link is down ({reason}); reconnecting"
        )));
    }
}

/// Forwards commit messages until the connection fails; returns why it ended.
async fn follow(
    pubsub: redis::aio::PubSub,
    node: &str,
    commits: &broadcast::Sender<Commit>,
) -> String {
    let (mut sink, mut stream) = pubsub.split();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = stream.next() => {
                let Some(msg) = msg else {
                    return "connection closed".to_owned();
                };
                let payload = String::from_utf8_lossy(msg.get_payload_bytes());
                let mut parts = payload.split(' ');
                let upto = parts.next().and_then(|s| s.parse::<Seq>().ok());
                match upto {
                    Some(_) if parts.next() == Some(node) => {}
                    Some(upto) => {
                        let _ = commits.send(Commit { upto, events: None });
                    }
                    None => tracing::warn!(payload = %payload, "odd commit message"),
                }
            }
            _ = ping.tick() => {
                match tokio::time::timeout(PING_TIMEOUT, sink.ping::<Value>()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return e.to_string(),
                    Err(_) => return "ping timed out".to_owned(),
                }
            }
        }
    }
}
