//! Redis replies into events: stream entries (XRANGE answers, as the append script writes
//! them) into [`Event`]s.

use std::sync::Arc;

use redis::Value;

use super::storage;
use crate::event::{Event, EventId, EventType, Seq, Topic};
use crate::log::LogError;

/// Stream entries (an XRANGE answer) as events.
pub(super) fn decode_entries(reply: Value) -> Result<Vec<Arc<Event>>, LogError> {
    let entries = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(entries) => entries,
        other => return Err(storage(format!("unexpected XRANGE answer {other:?}"))),
    };
    entries.into_iter().map(decode_entry).collect()
}

pub(super) fn text(v: Value) -> Result<String, LogError> {
    match v {
        Value::BulkString(b) => String::from_utf8(b).map_err(storage),
        Value::SimpleString(s) => Ok(s),
        other => Err(storage(format!("expected a string, got {other:?}"))),
    }
}

/// One `[id, [field, value, ...]]` stream entry as an event.
fn decode_entry(entry: Value) -> Result<Arc<Event>, LogError> {
    let bad = || storage("malformed stream entry");
    let Value::Array(parts) = entry else {
        return Err(bad());
    };
    let mut parts = parts.into_iter();
    let (Some(id), Some(fields)) = (parts.next(), parts.next()) else {
        return Err(bad());
    };
    let entry_id = text(id)?;
    let seq: Seq = entry_id
        .split('-')
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    let pairs: Vec<(Value, Value)> = match fields {
        Value::Array(flat) => {
            let mut flat = flat.into_iter();
            let mut pairs = Vec::new();
            while let (Some(k), Some(v)) = (flat.next(), flat.next()) {
                pairs.push((k, v));
            }
            pairs
        }
        Value::Map(pairs) => pairs,
        _ => return Err(bad()),
    };
    let (mut id, mut topics, mut kind, mut data, mut retry, mut private, mut stored) =
        (None, None, None, None, None, false, None);
    for (k, v) in pairs {
        match text(k)?.as_str() {
            "i" => id = Some(text(v)?),
            "t" => topics = Some(text(v)?),
            "k" => kind = Some(text(v)?).filter(|k| !k.is_empty()),
            "d" => data = Some(text(v)?),
            "r" => {
                let r = text(v)?;
                retry = if r.is_empty() {
                    None
                } else {
                    Some(r.parse::<u64>().map_err(storage)?)
                };
            }
            "p" => private = text(v)? == "1",
            "s" => stored = Some(text(v)?.parse::<i64>().map_err(storage)?),
            _ => {}
        }
    }
    let (Some(id), Some(topics), Some(data), Some(stored)) = (id, topics, data, stored) else {
        return Err(bad());
    };
    Ok(Arc::new(Event {
        seq,
        id: EventId::from_stored(&id),
        topics: topics.split('\n').map(Topic::from_stored).collect(),
        kind: kind.as_deref().map(EventType::from_stored),
        data: data.into_boxed_str(),
        retry,
        private,
        stored_at_ms: stored,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_decode_and_malformed_ones_are_errors() {
        let s = |x: &str| Value::BulkString(x.as_bytes().to_vec());
        let entry = Value::Array(vec![
            s("42-0"),
            Value::Array(vec![
                s("i"),
                s("id-1"),
                s("t"),
                s("a\nb"),
                s("k"),
                s(""),
                s("d"),
                s("x\ny"),
                s("r"),
                s("18446744073709551615"),
                s("p"),
                s("1"),
                s("s"),
                s("1700000000000"),
            ]),
        ]);
        let e = decode_entry(entry).unwrap();
        assert_eq!(e.seq, 42);
        assert_eq!(e.id.as_str(), "id-1");
        assert_eq!(e.topics.len(), 2);
        assert_eq!(e.kind, None);
        assert_eq!(&*e.data, "x\ny");
        assert_eq!(e.retry, Some(u64::MAX));
        assert!(e.private);
        for bad in [
            Value::Nil,
            Value::Array(vec![s("x-0"), Value::Array(vec![])]),
            Value::Array(vec![s("1-0"), Value::Array(vec![s("i"), s("x")])]),
            Value::Array(vec![s("1-0")]),
            Value::Int(3),
        ] {
            assert!(decode_entry(bad).is_err());
        }
        assert!(decode_entries(Value::Int(1)).is_err());
        assert!(decode_entries(Value::Nil).unwrap().is_empty());
    }
}
