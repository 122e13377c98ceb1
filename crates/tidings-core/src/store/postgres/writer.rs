//! The writer task: group commit of appends under the cluster-wide append lock, moving committed
//! outbox rows into the log inside the same transactions, and pruning.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, oneshot, Notify};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Statement};

use super::decode::outbox_event;
use super::{connect, pg, Target, APPEND_LOCK_CLASS, MAX_GROUP, PRUNE_CHUNK};
use crate::event::{now_ms, Event, EventId, EventType, NewEvent, Seq, Topic};
use crate::log::{Commit, LogError};
use crate::store::{clamp, duplicate_within};

/// Most outbox rows moved into the log by one transaction.
const OUTBOX_CHUNK: i64 = 1_000;

pub(super) type Reply<T> = oneshot::Sender<Result<T, LogError>>;
/// An append waiting for the next group commit.
type PendingAppend = (Vec<NewEvent>, Reply<Vec<Arc<Event>>>);

pub(super) enum Job {
    Append(Vec<NewEvent>, Reply<Vec<Arc<Event>>>),
    Prune(Seq, Reply<u64>),
}

/// A request to move committed outbox rows into the log: a flag (so requests made while the
/// writer is busy are not lost) and a wake-up.
#[derive(Default)]
pub(super) struct DrainSignal {
    requested: AtomicBool,
    wake: Notify,
}

impl DrainSignal {
    pub(super) fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    pub(super) fn take(&self) -> bool {
        self.requested.swap(false, Ordering::SeqCst)
    }
}

/// The writer's statements, prepared once per connection: each then costs one round trip, and
/// the ones sent together are pipelined.
pub(super) struct Statements {
    lock: Statement,
    counter: Statement,
    taken: Statement,
    insert_events: Statement,
    insert_topics: Statement,
    advance: Statement,
    outbox_waiting: Statement,
    take_outbox: Statement,
    reject: Statement,
}

impl Statements {
    pub(super) async fn prepare(client: &Client) -> Result<Self, LogError> {
        let (
            lock,
            counter,
            taken,
            insert_events,
            insert_topics,
            advance,
            outbox_waiting,
            take_outbox,
            reject,
        ) = tokio::try_join!(
            client.prepare("SELECT pg_advisory_xact_lock($1, hashtext($2))"),
            client.prepare("SELECT last_seq FROM log_state FOR UPDATE"),
            client.prepare("SELECT id FROM events WHERE id = ANY($1)"),
            client.prepare(
                "INSERT INTO events (seq, id, topics, type, data, retry, private, stored_at) \
                     SELECT s, i, t, k, d, r, p, $8 FROM unnest($1::bigint[], $2::text[], \
                       $3::text[], $4::text[], $5::bytea[], $6::bigint[], $7::boolean[]) \
                       AS x(s, i, t, k, d, r, p)"
            ),
            client.prepare(
                "INSERT INTO event_topics (seq, topic) \
                     SELECT * FROM unnest($1::bigint[], $2::text[])"
            ),
            client.prepare(
                "WITH advanced AS (UPDATE log_state SET last_seq = $1) SELECT pg_notify($2, $3)"
            ),
            client.prepare("SELECT EXISTS (SELECT 1 FROM outbox)"),
            client.prepare(
                "DELETE FROM outbox WHERE id IN (\
                       SELECT id FROM outbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) \
                     RETURNING id, topics, type, data, event_id, retry, private"
            ),
            client.prepare(
                "INSERT INTO outbox_rejected \
                       (id, topics, type, data, event_id, retry, private, reason) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            ),
        )
        .map_err(pg)?;
        Ok(Self {
            lock,
            counter,
            taken,
            insert_events,
            insert_topics,
            advance,
            outbox_waiting,
            take_outbox,
            reject,
        })
    }
}

pub(super) struct Writer {
    pub(super) client: Client,
    pub(super) statements: Statements,
    pub(super) config: Target,
    pub(super) schema: String,
    pub(super) channel: String,
    /// This process's id in NOTIFY payloads, so the listener can skip its own.
    pub(super) node: String,
    pub(super) drain: Arc<DrainSignal>,
}

/// What one group transaction did, for its commit notice and its answers.
#[derive(Default)]
struct GroupOutcome {
    /// The outbox rows moved, as events, in seq order (before the appends').
    drained: Vec<Arc<Event>>,
    /// Whether the outbox may hold more rows than one transaction moves.
    more: bool,
    /// One outcome per append request, in order.
    appends: Vec<Result<Vec<Arc<Event>>, LogError>>,
    upto: Seq,
}

impl Writer {
    pub(super) async fn run(
        mut self,
        mut rx: mpsc::Receiver<Job>,
        commits: broadcast::Sender<Commit>,
    ) {
        let mut appends = Vec::with_capacity(MAX_GROUP);
        loop {
            let drain = self.drain.clone();
            let mut next = tokio::select! {
                job = rx.recv() => match job {
                    Some(job) => Some(job),
                    None => return,
                },
                _ = drain.wake.notified() => None,
            };
            while let Some(job) = next.take() {
                match job {
                    Job::Append(batch, reply) => appends.push((batch, reply)),
                    Job::Prune(cutoff, reply) => {
                        let result = match self.ensure_connected().await {
                            Ok(()) => self.prune(cutoff).await,
                            Err(e) => Err(e),
                        };
                        let _ = reply.send(result);
                    }
                }
                if appends.len() < MAX_GROUP {
                    next = rx.try_recv().ok();
                }
            }
            let drain = self.drain.take();
            if !appends.is_empty() || drain {
                self.commit_group(&mut appends, drain, &commits).await;
            }
        }
    }

    /// Replaces a closed connection (PostgreSQL restarted, network cut) with a new one.
    async fn ensure_connected(&mut self) -> Result<(), LogError> {
        if self.client.is_closed() {
            tracing::warn!("reconnecting the PostgreSQL writer");
            let client = connect(&self.config).await?;
            self.statements = Statements::prepare(&client).await?;
            self.client = client;
        }
        Ok(())
    }

    /// Commits every waiting append in one transaction, after the outbox rows waiting (when
    /// `drain`), and answers each.
    async fn commit_group(
        &mut self,
        appends: &mut Vec<PendingAppend>,
        drain: bool,
        commits: &broadcast::Sender<Commit>,
    ) {
        let batches: Vec<Vec<NewEvent>> =
            appends.iter_mut().map(|(b, _)| std::mem::take(b)).collect();
        let result = self.try_commit_group(batches, drain).await;
        let replies = appends.drain(..).map(|(_, reply)| reply);
        if result.as_ref().is_ok_and(|o| o.more) {
            self.drain.request();
        }
        let result = result.map(|o| (o.drained, o.appends));
        crate::store::answer_group(replies, result, commits);
    }

    /// Runs the group's transaction: takes the append lock, moves outbox rows (when `drain`),
    /// admits each append request whose ids are all new, inserts everything admitted with the
    /// next seqs in two statements, advances the counter and notifies, then commits.
    async fn try_commit_group(
        &mut self,
        batches: Vec<Vec<NewEvent>>,
        drain: bool,
    ) -> Result<GroupOutcome, LogError> {
        self.ensure_connected().await?;
        let st = &self.statements;
        if batches.is_empty() {
            // A drain alone: take the append lock only when there is something to move.
            let waiting: bool = self
                .client
                .query_one(&st.outbox_waiting, &[])
                .await
                .map_err(pg)?
                .get(0);
            if !waiting {
                return Ok(GroupOutcome::default());
            }
        }
        let tx = self.client.transaction().await.map_err(pg)?;
        // Serializes appends from every node until this transaction commits: seqs are handed
        // out in commit order. The statements below are pipelined behind the lock.
        let outbox_limit = if drain { OUTBOX_CHUNK } else { 0 };
        let lock_key: [&(dyn ToSql + Sync); 2] = [&APPEND_LOCK_CLASS, &self.schema];
        let limit: [&(dyn ToSql + Sync); 1] = [&outbox_limit];
        let (_, counter, rows) = tokio::try_join!(
            tx.execute(&st.lock, &lock_key),
            tx.query_one(&st.counter, &[]),
            tx.query(&st.take_outbox, &limit),
        )
        .map_err(pg)?;
        let last: i64 = counter.get(0);
        let mut rows = rows;
        rows.sort_by_key(|r| r.get::<_, i64>(0));
        let from_outbox: Vec<Result<NewEvent, String>> = rows.iter().map(outbox_event).collect();

        // Publisher ids already in the log: exact, under the lock.
        let given: Vec<&str> = from_outbox
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .chain(batches.iter().flatten())
            .filter_map(|e| e.id.as_ref().map(EventId::as_str))
            .collect();
        let mut claimed: HashSet<String> = if given.is_empty() {
            HashSet::new()
        } else {
            tx.query(&st.taken, &[&given])
                .await
                .map_err(pg)?
                .iter()
                .map(|r| r.get(0))
                .collect()
        };

        let now = now_ms();
        let mut seq = last as Seq + 1;
        let mut stored: Vec<Arc<Event>> = Vec::new();
        let mut number = |batch: Vec<NewEvent>, stored: &mut Vec<Arc<Event>>| {
            let events: Vec<Arc<Event>> = batch
                .into_iter()
                .map(|new| {
                    seq += 1;
                    Arc::new(Event::stored(seq - 1, new, now))
                })
                .collect();
            stored.extend(events.iter().cloned());
            events
        };
        let mut outcome = GroupOutcome {
            more: rows.len() as i64 == OUTBOX_CHUNK,
            ..GroupOutcome::default()
        };
        let mut rejected: Vec<(&Row, String)> = Vec::new();
        for (row, parsed) in rows.iter().zip(from_outbox) {
            match parsed.and_then(|new| admit(vec![new], &mut claimed).map_err(|e| e.to_string())) {
                Ok(batch) => outcome.drained.extend(number(batch, &mut stored)),
                Err(reason) => rejected.push((row, reason)),
            }
        }
        for batch in batches {
            outcome
                .appends
                .push(admit(batch, &mut claimed).map(|batch| number(batch, &mut stored)));
        }

        outcome.upto = last as Seq + stored.len() as Seq;
        if !stored.is_empty() || !rejected.is_empty() {
            let rows = EventRows::of(&stored);
            let upto = clamp(outcome.upto);
            let payload = format!("{} {}", outcome.upto, self.node);
            let insert_events = async {
                if stored.is_empty() {
                    return Ok(0);
                }
                tx.execute(
                    &st.insert_events,
                    &[
                        &rows.seqs,
                        &rows.ids,
                        &rows.topics,
                        &rows.kinds,
                        &rows.datas,
                        &rows.retries,
                        &rows.privates,
                        &now,
                    ],
                )
                .await
            };
            let insert_topics = async {
                if stored.is_empty() {
                    return Ok(0);
                }
                tx.execute(&st.insert_topics, &[&rows.topic_seqs, &rows.topic_names])
                    .await
            };
            let advance = async {
                if stored.is_empty() {
                    return Ok(Vec::new());
                }
                tx.query(&st.advance, &[&upto, &self.channel, &payload])
                    .await
            };
            let reject = async {
                // Rare: one statement per row.
                for (r, reason) in &rejected {
                    let id: i64 = r.get(0);
                    tracing::warn!(
                        outbox_id = id,
                        reason,
                        "outbox row refused; moved to outbox_rejected"
                    );
                    tx.execute(
                        &st.reject,
                        &[
                            &id,
                            &r.get::<_, Option<Vec<Option<String>>>>(1),
                            &r.get::<_, Option<String>>(2),
                            &r.get::<_, Option<String>>(3),
                            &r.get::<_, Option<String>>(4),
                            &r.get::<_, Option<i64>>(5),
                            &r.get::<_, Option<bool>>(6),
                            reason,
                        ],
                    )
                    .await?;
                }
                Ok(0)
            };
            tokio::try_join!(insert_events, insert_topics, advance, reject).map_err(|e| {
                match e.code() {
                    // Publisher ids were checked under the lock; only a hub-made id can collide.
                    Some(&SqlState::UNIQUE_VIOLATION) => {
                        LogError::Storage(format!("an event id collided: {e}"))
                    }
                    _ => pg(e),
                }
            })?;
        }
        tx.commit().await.map_err(pg)?;
        Ok(outcome)
    }

    async fn prune(&mut self, cutoff: Seq) -> Result<u64, LogError> {
        let tx = self.client.transaction().await.map_err(pg)?;
        let last: Option<i64> = tx
            .query_opt(
                "SELECT seq FROM events WHERE seq <= $1 ORDER BY seq LIMIT 1 OFFSET $2",
                &[&clamp(cutoff), &(PRUNE_CHUNK - 1)],
            )
            .await
            .map_err(pg)?
            .map(|r| r.get(0));
        let upto = last.unwrap_or(clamp(cutoff));
        tx.execute("DELETE FROM event_topics WHERE seq <= $1", &[&upto])
            .await
            .map_err(pg)?;
        let deleted = tx
            .execute("DELETE FROM events WHERE seq <= $1", &[&upto])
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(deleted)
    }
}

/// `batch` if none of its publisher ids is in `claimed` (the log's, and those admitted earlier
/// in the group) or given twice in it; its ids are then claimed.
fn admit(batch: Vec<NewEvent>, claimed: &mut HashSet<String>) -> Result<Vec<NewEvent>, LogError> {
    if let Some(dup) = duplicate_within(&batch) {
        return Err(LogError::DuplicateId(dup));
    }
    let ids = || {
        batch
            .iter()
            .filter_map(|e| e.id.as_ref().map(EventId::as_str))
    };
    if let Some(taken) = ids().find(|id| claimed.contains(*id)) {
        return Err(LogError::DuplicateId(taken.to_owned()));
    }
    claimed.extend(ids().map(str::to_owned));
    Ok(batch)
}

/// Events as the column arrays of one `unnest` insert.
struct EventRows<'a> {
    seqs: Vec<i64>,
    ids: Vec<&'a str>,
    topics: Vec<String>,
    kinds: Vec<Option<&'a str>>,
    datas: Vec<&'a [u8]>,
    retries: Vec<Option<i64>>,
    privates: Vec<bool>,
    topic_seqs: Vec<i64>,
    topic_names: Vec<&'a str>,
}

impl<'a> EventRows<'a> {
    fn of(events: &'a [Arc<Event>]) -> Self {
        let mut rows = Self {
            seqs: Vec::with_capacity(events.len()),
            ids: Vec::with_capacity(events.len()),
            topics: Vec::with_capacity(events.len()),
            kinds: Vec::with_capacity(events.len()),
            datas: Vec::with_capacity(events.len()),
            retries: Vec::with_capacity(events.len()),
            privates: Vec::with_capacity(events.len()),
            topic_seqs: Vec::new(),
            topic_names: Vec::new(),
        };
        for e in events {
            let s = clamp(e.seq);
            rows.seqs.push(s);
            rows.ids.push(e.id.as_str());
            let names: Vec<&str> = e.topics.iter().map(Topic::as_str).collect();
            rows.topics.push(names.join("\n"));
            rows.kinds.push(e.kind.as_ref().map(EventType::as_str));
            rows.datas.push(e.data.as_bytes());
            // Bit-cast: the full u64 range round-trips through bigint.
            rows.retries.push(e.retry.map(|r| r as i64));
            rows.privates.push(e.private);
            let mut distinct = HashSet::new();
            for t in names.into_iter().filter(|t| distinct.insert(*t)) {
                rows.topic_seqs.push(s);
                rows.topic_names.push(t);
            }
        }
        rows
    }
}
