//! Turning a webhook's JSON payload into an event: the topic from a template over JSON pointers
//! (`jobs/{/id}`), the type from a field through an optional value map, the data as the whole
//! payload or selected fields. A payload the mapping cannot place is refused with the reason.

use std::collections::BTreeMap;

use serde_json::Value;
use tidings_core::event::{EventError, EventType, NewEvent, Topic};

/// Why a payload could not become an event; each message is one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    #[error("the payload has no field at {0}")]
    Missing(String),
    #[error("the field at {pointer} is {found}, not a string or a number")]
    NotText {
        pointer: String,
        found: &'static str,
    },
    #[error("the field at {0} is an empty string")]
    Empty(String),
    #[error("the type {0:?} is not in the webhook's type_map")]
    UnmappedType(String),
    #[error("the mapped {what} is not valid: {error}")]
    Invalid {
        what: &'static str,
        error: EventError,
    },
}

/// A JSON pointer (RFC 6901): empty (the whole document) or starting with `/`.
pub fn check_pointer(pointer: &str) -> Result<(), String> {
    if pointer.is_empty() || pointer.starts_with('/') {
        Ok(())
    } else {
        Err(format!(
            "{pointer:?} is not a JSON pointer (they start with /)"
        ))
    }
}

/// The value at `pointer` as text: a string as is, a number in its JSON form.
pub fn text_at(payload: &Value, pointer: &str) -> Result<String, MappingError> {
    let found = match payload.pointer(pointer) {
        None => return Err(MappingError::Missing(pointer.to_owned())),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => {
            return Err(MappingError::NotText {
                pointer: pointer.to_owned(),
                found: kind_of(other),
            })
        }
    };
    if found.is_empty() {
        return Err(MappingError::Empty(pointer.to_owned()));
    }
    Ok(found)
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Pointer(String),
}

/// A topic template: literal text and `{/json/pointer}` placeholders, each replaced by the
/// string or number at that pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicTemplate(Vec<Part>);

impl TopicTemplate {
    /// Parses `jobs/{/id}`; braces must pair and hold a JSON pointer.
    pub fn parse(template: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find(['{', '}']) {
            if rest[open..].starts_with('}') {
                return Err(format!("topic template {template:?}: a }} without its {{"));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("topic template {template:?}: a {{ without its }}"))?;
            let pointer = &rest[open + 1..open + close];
            if pointer.is_empty() || pointer.contains('{') {
                return Err(format!(
                    "topic template {template:?}: put a JSON pointer inside the braces, as in {{/id}}"
                ));
            }
            check_pointer(pointer).map_err(|e| format!("topic template {template:?}: {e}"))?;
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            parts.push(Part::Pointer(pointer.to_owned()));
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        if parts.is_empty() {
            return Err("the topic template is empty".into());
        }
        Ok(Self(parts))
    }

    /// The topic for `payload`.
    pub fn expand(&self, payload: &Value) -> Result<Topic, MappingError> {
        let mut topic = String::new();
        for part in &self.0 {
            match part {
                Part::Text(t) => topic.push_str(t),
                Part::Pointer(p) => topic.push_str(&text_at(payload, p)?),
            }
        }
        Topic::parse(&topic).map_err(|error| MappingError::Invalid {
            what: "topic",
            error,
        })
    }
}

/// Where the event's type comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TypeRule {
    /// No type: the SSE default `message`.
    #[default]
    None,
    /// The same type for every delivery.
    Fixed(EventType),
    /// The string at `pointer`, renamed by `map`; a value missing from the map is refused when
    /// `strict`, else kept as it is.
    From {
        pointer: String,
        map: BTreeMap<String, EventType>,
        strict: bool,
    },
}

/// What the event carries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DataRule {
    /// The body exactly as received, unknown fields and all.
    #[default]
    Whole,
    /// A JSON object of the named fields (key → JSON pointer); a field absent from the payload
    /// is left out.
    Fields(BTreeMap<String, String>),
}

/// How a payload becomes an event (without its id, which comes from the delivery).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// Never empty: the first is the canonical topic, the rest alternates.
    pub topics: Vec<TopicTemplate>,
    pub kind: TypeRule,
    pub data: DataRule,
    pub private: bool,
}

impl Mapping {
    /// The event for `payload`, whose raw text is `raw`.
    pub fn apply(&self, payload: &Value, raw: &str) -> Result<NewEvent, MappingError> {
        let topics = self
            .topics
            .iter()
            .map(|t| t.expand(payload))
            .collect::<Result<Vec<_>, _>>()?;
        let kind = match &self.kind {
            TypeRule::None => None,
            TypeRule::Fixed(kind) => Some(kind.clone()),
            TypeRule::From {
                pointer,
                map,
                strict,
            } => {
                let value = text_at(payload, pointer)?;
                Some(match map.get(&value) {
                    Some(kind) => kind.clone(),
                    None if *strict => return Err(MappingError::UnmappedType(value)),
                    None => EventType::parse(&value).map_err(|error| MappingError::Invalid {
                        what: "type",
                        error,
                    })?,
                })
            }
        };
        let data = match &self.data {
            DataRule::Whole => raw.to_owned(),
            DataRule::Fields(fields) => {
                let object: serde_json::Map<String, Value> = fields
                    .iter()
                    .filter_map(|(key, pointer)| {
                        payload.pointer(pointer).map(|v| (key.clone(), v.clone()))
                    })
                    .collect();
                Value::Object(object).to_string()
            }
        };
        let mut event = NewEvent::new(topics, data).map_err(|error| MappingError::Invalid {
            what: "topic",
            error,
        })?;
        event.kind = kind;
        event.private = self.private;
        Ok(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template(s: &str) -> TopicTemplate {
        TopicTemplate::parse(s).unwrap()
    }

    fn job_mapping(strict: bool) -> Mapping {
        let map = [
            ("COMPLETED", "completed"),
            ("FAILED", "failed"),
            ("IN_PROGRESS", "progress"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), EventType::parse(v).unwrap()))
        .collect();
        Mapping {
            topics: vec![template("jobs/{/id}")],
            kind: TypeRule::From {
                pointer: "/status".into(),
                map,
                strict,
            },
            data: DataRule::Whole,
            private: false,
        }
    }

    #[test]
    fn templates_expand_strings_and_numbers() {
        let payload = json!({"id": "j-1", "n": 42, "user": {"name": "ann"}, "a/b": "x"});
        let t = template("users/{/user/name}/jobs/{/id}/{/n}");
        assert_eq!(
            t.expand(&payload).unwrap().as_str(),
            "users/ann/jobs/j-1/42"
        );
        assert_eq!(template("{/a~1b}").expand(&payload).unwrap().as_str(), "x");
        assert_eq!(
            template("fixed").expand(&payload).unwrap().as_str(),
            "fixed"
        );
    }

    #[test]
    fn templates_refuse_what_they_cannot_place() {
        let payload = json!({"id": {"deep": 1}, "flag": true, "empty": "", "bad": "a\nb"});
        let err = |t: &str| template(t).expand(&payload).unwrap_err();
        assert_eq!(
            err("jobs/{/missing}"),
            MappingError::Missing("/missing".into())
        );
        assert!(matches!(
            err("jobs/{/id}"),
            MappingError::NotText {
                found: "an object",
                ..
            }
        ));
        assert!(matches!(
            err("jobs/{/flag}"),
            MappingError::NotText {
                found: "a boolean",
                ..
            }
        ));
        assert_eq!(err("jobs/{/empty}"), MappingError::Empty("/empty".into()));
        assert!(matches!(
            err("jobs/{/bad}"),
            MappingError::Invalid { what: "topic", .. }
        ));
    }

    #[test]
    fn bad_templates_are_refused_at_start_up() {
        for bad in ["jobs/{id}", "jobs/{/id", "jobs/}", "jobs/{}", "", "{{/id}}"] {
            assert!(TopicTemplate::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn types_map_or_pass_through() {
        let payload = |status: &str| json!({"id": "7", "status": status});
        let loose = job_mapping(false);
        let kind = |m: &Mapping, s: &str| {
            m.apply(&payload(s), "{}")
                .map(|e| e.kind.map(|k| k.to_string()))
        };
        assert_eq!(kind(&loose, "IN_PROGRESS"), Ok(Some("progress".into())));
        assert_eq!(kind(&loose, "IN_QUEUE"), Ok(Some("IN_QUEUE".into())));
        let strict = job_mapping(true);
        assert_eq!(kind(&strict, "COMPLETED"), Ok(Some("completed".into())));
        assert_eq!(
            kind(&strict, "IN_QUEUE"),
            Err(MappingError::UnmappedType("IN_QUEUE".into()))
        );
        assert_eq!(
            strict.apply(&json!({"id": "7"}), "{}").unwrap_err(),
            MappingError::Missing("/status".into())
        );
    }

    #[test]
    fn data_is_the_raw_body_or_selected_fields() {
        let raw = "{\"id\": \"7\", \"status\": \"COMPLETED\", \"extra\": {\"kept\": true}}";
        let payload: Value = serde_json::from_str(raw).unwrap();
        let whole = job_mapping(false).apply(&payload, raw).unwrap();
        assert_eq!(whole.data, raw, "byte for byte, unknown fields kept");
        assert_eq!(whole.topics[0].as_str(), "jobs/7");

        let mut fields = job_mapping(false);
        fields.data = DataRule::Fields(
            [("kept", "/extra/kept"), ("job", "/id"), ("absent", "/nope")]
                .into_iter()
                .map(|(k, p)| (k.to_owned(), p.to_owned()))
                .collect(),
        );
        fields.private = true;
        let event = fields.apply(&payload, raw).unwrap();
        let data: Value = serde_json::from_str(&event.data).unwrap();
        assert_eq!(data, json!({"kept": true, "job": "7"}));
        assert!(event.private);
    }
}
