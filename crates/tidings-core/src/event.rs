//! Events: what a publisher hands to the hub ([`NewEvent`]) and what the log stores and every
//! subscriber receives ([`Event`]). Raw strings are validated here, once, at the edge; everything
//! downstream works with the newtypes.

use std::fmt;
use std::sync::Arc;

use thiserror::Error;

/// Position of an event in the hub's totally ordered log. `0` means "before the first event".
pub type Seq = u64;

/// Why a field of an event was refused. Each message is one line, fit for an HTTP 400 body.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EventError {
    #[error("an event needs at least one topic")]
    NoTopic,
    #[error("topic is empty")]
    EmptyTopic,
    #[error("topic is longer than {0} bytes")]
    TopicTooLong(usize),
    #[error("topic contains a control character")]
    TopicControlChar,
    #[error("id is empty")]
    EmptyId,
    #[error("id is longer than {0} bytes")]
    IdTooLong(usize),
    #[error("id contains a control character")]
    IdControlChar,
    #[error("id \"earliest\" is reserved")]
    IdReserved,
    #[error("type is empty")]
    EmptyType,
    #[error("type is longer than {0} bytes")]
    TypeTooLong(usize),
    #[error("type contains CR, LF or NUL")]
    TypeLineBreak,
}

/// Longest accepted topic, in bytes.
pub const MAX_TOPIC_LEN: usize = 2048;
/// Longest accepted event id, in bytes.
pub const MAX_ID_LEN: usize = 512;
/// Longest accepted event type, in bytes.
pub const MAX_TYPE_LEN: usize = 256;

fn has_line_break(s: &str) -> bool {
    s.bytes().any(|b| matches!(b, b'\r' | b'\n' | b'\0'))
}

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// The validated string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

string_newtype!(
    /// A topic: any non-empty string without control characters (usually an IRI such as
    /// `https://example.com/jobs/42`, or a path such as `jobs/42`).
    Topic
);
string_newtype!(
    /// An event id: opaque, unique in the log, without control characters (they would break the
    /// SSE `id:` field and the Last-Event-ID header).
    EventId
);
string_newtype!(
    /// An event type, sent as the SSE `event:` field.
    EventType
);

impl Topic {
    /// Validates a topic.
    pub fn parse(s: &str) -> Result<Self, EventError> {
        if s.is_empty() {
            return Err(EventError::EmptyTopic);
        }
        if s.len() > MAX_TOPIC_LEN {
            return Err(EventError::TopicTooLong(MAX_TOPIC_LEN));
        }
        if s.chars().any(char::is_control) {
            return Err(EventError::TopicControlChar);
        }
        Ok(Self(s.into()))
    }
}

impl EventId {
    /// Validates a publisher-supplied id.
    pub fn parse(s: &str) -> Result<Self, EventError> {
        if s.is_empty() {
            return Err(EventError::EmptyId);
        }
        if s.len() > MAX_ID_LEN {
            return Err(EventError::IdTooLong(MAX_ID_LEN));
        }
        // Control characters would break the SSE `id:` line or the Last-Event-ID header.
        if s.chars().any(char::is_control) {
            return Err(EventError::IdControlChar);
        }
        if s == crate::EARLIEST {
            return Err(EventError::IdReserved);
        }
        Ok(Self(s.into()))
    }

    /// A fresh hub-made id: a UUID URN (as Mercure recommends) of a time-ordered UUIDv7, so the
    /// store's unique index grows at its right edge.
    pub fn generate() -> Self {
        Self(format!("urn:uuid:{}", uuid::Uuid::now_v7()).into())
    }

    /// Wraps an id read back from a store, which validated it on the way in.
    pub fn from_stored(s: &str) -> Self {
        Self(s.into())
    }
}

impl EventType {
    /// Validates an event type.
    pub fn parse(s: &str) -> Result<Self, EventError> {
        if s.is_empty() {
            return Err(EventError::EmptyType);
        }
        if s.len() > MAX_TYPE_LEN {
            return Err(EventError::TypeTooLong(MAX_TYPE_LEN));
        }
        if has_line_break(s) {
            return Err(EventError::TypeLineBreak);
        }
        Ok(Self(s.into()))
    }

    /// Wraps a type read back from a store.
    pub fn from_stored(s: &str) -> Self {
        Self(s.into())
    }
}

impl Topic {
    /// Wraps a topic read back from a store.
    pub fn from_stored(s: &str) -> Self {
        Self(s.into())
    }
}

/// An event as a publisher submits it, validated but not yet stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// The publisher's id; the store makes one when absent.
    pub id: Option<EventId>,
    /// Never empty: the first is the canonical topic, the rest Mercure's alternate topics.
    pub topics: Vec<Topic>,
    /// The SSE `event:` field.
    pub kind: Option<EventType>,
    /// The payload, UTF-8 text.
    pub data: String,
    /// The SSE `retry:` field, in milliseconds.
    pub retry: Option<u64>,
    /// Delivered only to subscribers authorized for one of its topics.
    pub private: bool,
}

impl NewEvent {
    /// An event on `topics` carrying `data`; refuses an empty topic list.
    pub fn new(topics: Vec<Topic>, data: impl Into<String>) -> Result<Self, EventError> {
        if topics.is_empty() {
            return Err(EventError::NoTopic);
        }
        Ok(Self {
            id: None,
            topics,
            kind: None,
            data: data.into(),
            retry: None,
            private: false,
        })
    }
}

/// A stored event: immutable, shared by every subscriber through an `Arc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Position in the log; strictly increasing in commit order.
    pub seq: Seq,
    pub id: EventId,
    /// Never empty; the first is canonical.
    pub topics: Box<[Topic]>,
    pub kind: Option<EventType>,
    pub data: Box<str>,
    pub retry: Option<u64>,
    pub private: bool,
    /// When the store committed it, in milliseconds since the Unix epoch.
    pub stored_at_ms: i64,
}

impl Event {
    /// About how much memory the event holds: its data and id, plus a fixed allowance for the
    /// rest (topics, type, the `Arc`). For bounding windows and pages of events.
    pub fn approx_size(&self) -> usize {
        self.data.len() + self.id.as_str().len() + 64
    }

    /// Builds the stored form of `new` at position `seq`, making an id when the publisher gave none.
    pub fn stored(seq: Seq, new: NewEvent, stored_at_ms: i64) -> Self {
        Self {
            seq,
            id: new.id.unwrap_or_else(EventId::generate),
            topics: new.topics.into_boxed_slice(),
            kind: new.kind,
            data: new.data.into_boxed_str(),
            retry: new.retry,
            private: new.private,
            stored_at_ms,
        }
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_refuse_control_characters_and_empty() {
        assert_eq!(Topic::parse(""), Err(EventError::EmptyTopic));
        assert_eq!(Topic::parse("a\nb"), Err(EventError::TopicControlChar));
        assert_eq!(Topic::parse("a\u{7f}b"), Err(EventError::TopicControlChar));
        assert!(Topic::parse("https://example.com/jobs/42").is_ok());
        assert!(Topic::parse(&"x".repeat(MAX_TOPIC_LEN + 1)).is_err());
    }

    #[test]
    fn ids_and_types_refuse_line_breaks() {
        for bad in ["a\rb", "a\nb", "a\0b"] {
            assert_eq!(EventId::parse(bad), Err(EventError::IdControlChar));
            assert_eq!(EventType::parse(bad), Err(EventError::TypeLineBreak));
        }
        assert_eq!(EventId::parse("earliest"), Err(EventError::IdReserved));
        assert!(EventId::parse("job-42:done").is_ok());
    }

    #[test]
    fn generated_ids_are_unique_urns() {
        let a = EventId::generate();
        let b = EventId::generate();
        assert_ne!(a, b);
        assert!(a.as_str().starts_with("urn:uuid:"));
    }
}
