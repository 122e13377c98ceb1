//! Rows into events: a row of `events` (selected as [`COLUMNS`]) into an [`Event`], and a row
//! taken from the outbox into the [`NewEvent`] it asks for, or why it cannot be published.

use std::sync::Arc;

use tokio_postgres::Row;

use super::pg;
use crate::event::{Event, EventId, EventType, NewEvent, Seq, Topic};
use crate::log::LogError;
use crate::store::storage;

pub(super) const COLUMNS: &str = "seq, id, topics, type, data, retry, private, stored_at";

pub(super) fn event_from_row(row: &Row) -> Result<Arc<Event>, LogError> {
    let topics: &str = row.try_get(2).map_err(pg)?;
    let kind: Option<&str> = row.try_get(3).map_err(pg)?;
    let data: Vec<u8> = row.try_get(4).map_err(pg)?;
    let data = String::from_utf8(data).map_err(storage)?;
    Ok(Arc::new(Event {
        seq: row.try_get::<_, i64>(0).map_err(pg)? as Seq,
        id: EventId::from_stored(row.try_get(1).map_err(pg)?),
        topics: topics.split('\n').map(Topic::from_stored).collect(),
        kind: kind.map(EventType::from_stored),
        data: data.into_boxed_str(),
        // Bit-cast: the full u64 range round-trips through bigint.
        retry: row
            .try_get::<_, Option<i64>>(5)
            .map_err(pg)?
            .map(|r| r as u64),
        private: row.try_get(6).map_err(pg)?,
        stored_at_ms: row.try_get(7).map_err(pg)?,
    }))
}

/// The event an outbox row asks for, or why it cannot be published.
pub(super) fn outbox_event(row: &Row) -> Result<NewEvent, String> {
    let text = |e: tokio_postgres::Error| e.to_string();
    let topics: Option<Vec<Option<String>>> = row.try_get(1).map_err(text)?;
    let topics = topics
        .unwrap_or_default()
        .into_iter()
        .map(|t| Topic::parse(t.as_deref().unwrap_or("")))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let data: Option<String> = row.try_get(3).map_err(text)?;
    let mut new = NewEvent::new(topics, data.unwrap_or_default()).map_err(|e| e.to_string())?;
    if let Some(kind) = row.try_get::<_, Option<&str>>(2).map_err(text)? {
        new.kind = Some(EventType::parse(kind).map_err(|e| e.to_string())?);
    }
    if let Some(id) = row.try_get::<_, Option<&str>>(4).map_err(text)? {
        // As over HTTP: webhook deliveries' ids are theirs, so a retried delivery stays a
        // duplicate and an application cannot claim a future one.
        if id.starts_with("webhook:") {
            return Err(
                "ids starting with \"webhook:\" are reserved for webhook deliveries".into(),
            );
        }
        new.id = Some(EventId::parse(id).map_err(|e| e.to_string())?);
    }
    if let Some(retry) = row.try_get::<_, Option<i64>>(5).map_err(text)? {
        new.retry = Some(u64::try_from(retry).map_err(|_| "retry is negative".to_owned())?);
    }
    new.private = row
        .try_get::<_, Option<bool>>(6)
        .map_err(text)?
        .unwrap_or(false);
    Ok(new)
}
