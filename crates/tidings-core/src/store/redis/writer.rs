//! The writer task: takes every waiting append (up to [`MAX_GROUP`] requests or
//! `MAX_GROUP_BYTES`) and commits them as one call of the append script, then answers each.

use std::sync::Arc;

use redis::aio::ConnectionManager;
use redis::{Script, Value};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::decode::text;
use super::{storage, Keys, MAX_GROUP};
use crate::event::{Event, EventId, EventType, NewEvent, Seq, Topic};
use crate::log::{Commit, LogError};

/// Most bytes of event data and topics in one group (a single larger request still goes alone).
const MAX_GROUP_BYTES: usize = 4 << 20;

type Reply<T> = oneshot::Sender<Result<T, LogError>>;

/// An append waiting for the next group commit.
pub(super) struct Pending {
    pub(super) batch: Vec<NewEvent>,
    pub(super) reply: Reply<Vec<Arc<Event>>>,
}

pub(super) struct Writer {
    pub(super) conn: ConnectionManager,
    pub(super) keys: Arc<Keys>,
    /// This process's id in commit messages, so the listener can skip its own.
    pub(super) node: String,
    pub(super) script: Script,
}

impl Writer {
    pub(super) async fn run(
        mut self,
        mut rx: mpsc::Receiver<Pending>,
        commits: broadcast::Sender<Commit>,
    ) {
        let mut group: Vec<Pending> = Vec::with_capacity(MAX_GROUP);
        let mut carry: Option<Pending> = None;
        loop {
            let first = match carry.take() {
                Some(p) => p,
                None => match rx.recv().await {
                    Some(p) => p,
                    None => return,
                },
            };
            let mut bytes = weight(&first.batch);
            group.push(first);
            while group.len() < MAX_GROUP {
                let Ok(next) = rx.try_recv() else { break };
                let w = weight(&next.batch);
                if bytes + w > MAX_GROUP_BYTES {
                    carry = Some(next);
                    break;
                }
                bytes += w;
                group.push(next);
            }
            self.commit_group(&mut group, &commits).await;
        }
    }

    /// Runs the group's script and answers each request.
    async fn commit_group(
        &mut self,
        group: &mut Vec<Pending>,
        commits: &broadcast::Sender<Commit>,
    ) {
        let mut batches: Vec<Vec<NewEvent>> = group
            .iter_mut()
            .map(|p| std::mem::take(&mut p.batch))
            .collect();
        // Hub-made ids are chosen here, so the script can check and index every id alike.
        for e in batches.iter_mut().flatten() {
            if e.id.is_none() {
                e.id = Some(EventId::generate());
            }
        }
        let result = self.run_script(&batches).await;
        let replies = group.drain(..).map(|p| p.reply);
        let result = result.map(|(stored_at, outcomes)| {
            let answers = batches
                .into_iter()
                .zip(outcomes)
                .map(|(batch, outcome)| match outcome {
                    Outcome::Stored(first) => Ok(batch
                        .into_iter()
                        .enumerate()
                        .map(|(i, new)| Arc::new(Event::stored(first + i as Seq, new, stored_at)))
                        .collect()),
                    Outcome::Duplicate(id) => Err(LogError::DuplicateId(id)),
                })
                .collect();
            (Vec::new(), answers)
        });
        crate::store::answer_group(replies, result, commits);
    }

    /// Invokes the append script; answers the stored_at and each request's outcome.
    async fn run_script(
        &mut self,
        batches: &[Vec<NewEvent>],
    ) -> Result<(i64, Vec<Outcome>), LogError> {
        let mut call = self.script.prepare_invoke();
        call.key(&self.keys.seq)
            .key(&self.keys.log)
            .key(&self.keys.ids)
            .key(&self.keys.topics)
            .arg(&self.keys.topic_prefix)
            .arg(&self.keys.channel)
            .arg(&self.node)
            .arg(batches.len());
        for batch in batches {
            call.arg(batch.len());
            for e in batch {
                let topics: Vec<&str> = e.topics.iter().map(Topic::as_str).collect();
                call.arg(e.id.as_ref().map_or("", EventId::as_str))
                    .arg(topics.join("\n"))
                    .arg(e.kind.as_ref().map_or("", EventType::as_str))
                    .arg(e.data.as_str())
                    .arg(e.retry.map(|r| r.to_string()).unwrap_or_default())
                    .arg(if e.private { "1" } else { "0" });
            }
        }
        let reply: Value = call.invoke_async(&mut self.conn).await.map_err(storage)?;
        let Value::Array(items) = reply else {
            return Err(storage(format!("unexpected append answer {reply:?}")));
        };
        let mut items = items.into_iter();
        let Some(Value::Int(stored_at)) = items.next() else {
            return Err(storage("the append answer has no time"));
        };
        let outcomes = items
            .map(|v| match v {
                Value::Int(first) if first > 0 => Ok(Outcome::Stored(first as Seq)),
                Value::BulkString(_) | Value::SimpleString(_) => Ok(Outcome::Duplicate(text(v)?)),
                other => Err(storage(format!("unexpected append outcome {other:?}"))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if outcomes.len() != batches.len() {
            return Err(storage("the append answer does not match the requests"));
        }
        Ok((stored_at, outcomes))
    }
}

enum Outcome {
    /// Stored from this seq on.
    Stored(Seq),
    /// Refused: this id is already in the log.
    Duplicate(String),
}

/// The bytes a batch adds to a group's script call, roughly.
fn weight(batch: &[NewEvent]) -> usize {
    batch
        .iter()
        .map(|e| e.data.len() + e.topics.iter().map(|t| t.as_str().len() + 1).sum::<usize>() + 64)
        .sum()
}
