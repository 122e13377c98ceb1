//! Property tests of the publish-body parsers (form fields and JSON, on `/.well-known/mercure`
//! and on `/events/{topic}`), driven through the public HTTP surface of a real hub:
//!
//! - any bytes, as a form or JSON body, are answered (within the suite's timeout) with a status
//!   below 500, and change the log only when the answer is 2xx: `/stats` `events_stored` grows
//!   by exactly the number of ids answered, and by nothing otherwise;
//! - any valid events (random topics, ids, types, retry, and data with CR, LF, CRLF, NUL,
//!   empty lines and non-ASCII text) published as form fields and as JSON read back from
//!   `GET /events?topic=*&after=earliest` byte-identical: form data exactly as given, JSON
//!   string data exactly as given, any other JSON data as its serialization.
//!
//! The cases of a property run one after another, against one hub of the property's own (the
//! round trip: a fresh hub per case, so that its log holds exactly what the case published).
//! Case counts are modest so CI stays fast; `PROPTEST_CASES` overrides them.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::common::{enc, spawn_hub, TestHub};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Map, Value};

// --- running properties against a hub --------------------------------------------------------

/// `PROPTEST_CASES` when set, else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Checks `property` on `cases` inputs drawn from `strategy`, one after another, on a runtime of
/// their own; each gets the same hub, started for this property (a property may start more).
/// Panics with the smallest failing input.
fn check<S, F, Fut>(default_cases: u32, strategy: S, property: F)
where
    S: Strategy,
    S::Value: Clone,
    F: Fn(&'static TestHub, S::Value) -> Fut,
    Fut: std::future::Future<Output = Result<(), TestCaseError>>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    // Leaked so that the property's futures may borrow it; one per test, so a few per process.
    let hub: &'static TestHub = Box::leak(Box::new(runtime.block_on(spawn_hub())));
    let mut runner = TestRunner::new(Config {
        cases: cases(default_cases),
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&strategy, |input| runtime.block_on(property(hub, input)));
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Stored events, as `/stats` counts them.
async fn events_stored(hub: &TestHub) -> u64 {
    hub.stats().await["events_stored"]
        .as_u64()
        .expect("events_stored is a count")
}

/// Where a body is posted, and with which Content-Type.
#[derive(Debug, Clone)]
struct Target {
    /// `None`: `/.well-known/mercure`; else the (raw) topic of `/events/{topic}`.
    path_topic: Option<String>,
    content_type: Option<&'static str>,
}

impl Target {
    fn path(&self) -> String {
        match &self.path_topic {
            None => "/.well-known/mercure".to_owned(),
            Some(topic) => format!("/events/{}", enc(topic)),
        }
    }
}

/// Posts `body` to `target` and checks the answer: below 500, and the log grows by exactly the
/// number of events the answer reports (none unless 2xx).
async fn post_anything(hub: &TestHub, target: Target, body: Vec<u8>) -> Result<(), TestCaseError> {
    let before = events_stored(hub).await;
    let request = hub.client.post(hub.url(&target.path())).body(body);
    let request = match target.content_type {
        Some(ct) => request.header("content-type", ct),
        None => request,
    };
    // `send` fails the case (with a panic, which the runner catches and reports) when no answer
    // comes within `crate::common::WAIT`: a hang is a failure, not a stuck CI job.
    let reply = hub.send(request).await;
    let status = reply.status.as_u16();
    prop_assert!(
        status < 500,
        "{target:?} answered {status}: {:?}",
        reply.body
    );
    let after = events_stored(hub).await;
    if !reply.status.is_success() {
        prop_assert_eq!(after, before, "a {} answer stored something", status);
        return Ok(());
    }
    let stored = if reply.header("content-type").starts_with("application/json") {
        let answer = reply.json();
        match (&answer["id"], &answer["ids"]) {
            (Value::String(_), Value::Null) => 1,
            (Value::Null, Value::Array(ids)) => ids.len() as u64,
            _ => return Err(TestCaseError::fail(format!("odd answer {answer}"))),
        }
    } else {
        // The form publish answers the id as text.
        prop_assert!(!reply.body.is_empty(), "an empty id");
        1
    };
    prop_assert_eq!(
        after,
        before + stored,
        "stored count vs answer {:?}",
        reply.body
    );
    Ok(())
}

// --- strategies: arbitrary bodies -------------------------------------------------------------

fn raw_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..256)
}

/// Bytes built from the pieces a form parser meets: field names (known, repeated, unknown),
/// separators, escapes (valid, truncated, of invalid UTF-8 and of control characters), numbers
/// out of range and stray bytes.
fn form_junk() -> impl Strategy<Value = Vec<u8>> {
    const PIECES: &[&[u8]] = &[
        b"topic=",
        b"topic=a",
        b"data=",
        b"id=",
        b"type=",
        b"retry=",
        b"private",
        b"unknown=x",
        b"&",
        b"=",
        b"+",
        b"%",
        b"%2",
        b"%41",
        b"%FF",
        b"%C3%28",
        b"%E2%82%AC",
        b"%0A",
        b"%0D",
        b"%00",
        b"%7F",
        b"earliest",
        b"*",
        b"{x}",
        b"18446744073709551615",
        b"18446744073709551616",
        b"-1",
        b"jobs/42",
        "\u{e9}\u{1F600}".as_bytes(),
    ];
    let piece = prop::sample::select(PIECES).prop_map(<[u8]>::to_vec);
    prop::collection::vec(
        prop_oneof![4 => piece, 1 => prop::collection::vec(any::<u8>(), 1..4)],
        0..24,
    )
    .prop_map(|pieces| pieces.concat())
}

/// Form fields, each `name=value` or a bare `name`: mostly the known names with encoded values
/// (valid or not), sometimes junk. Often a valid publish, often almost one.
fn form_fields() -> impl Strategy<Value = Vec<u8>> {
    let name = prop::sample::select(
        &[
            "topic", "topic", "topic", "data", "data", "id", "type", "retry", "private", "other",
            "",
        ][..],
    );
    let value = prop_oneof![
        3 => topic().prop_map(|t| enc(&t).into_bytes()),
        3 => data().prop_map(|d| enc(&d).into_bytes()),
        1 => any::<u64>().prop_map(|n| n.to_string().into_bytes()),
        1 => form_junk(),
    ];
    let field = (name, prop::option::weighted(0.9, value)).prop_map(|(name, value)| {
        let mut field = name.as_bytes().to_vec();
        if let Some(value) = value {
            field.push(b'=');
            field.extend_from_slice(&value);
        }
        field
    });
    // Most bodies name a valid topic first, so that many are accepted.
    let first =
        prop::option::weighted(0.7, topic()).prop_map(|t| t.map(|t| format!("topic={}", enc(&t))));
    (first, prop::collection::vec(field, 0..6)).prop_map(|(first, mut fields)| {
        if let Some(first) = first {
            fields.insert(0, first.into_bytes());
        }
        fields.join(&b'&')
    })
}

fn form_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![6 => form_fields(), 1 => form_junk(), 1 => raw_bytes()]
}

fn form_target() -> impl Strategy<Value = Target> {
    let content_type = prop_oneof![
        2 => Just(None),
        3 => Just(Some("application/x-www-form-urlencoded")),
        1 => Just(Some("application/x-www-form-urlencoded; charset=UTF-8")),
        1 => Just(Some("APPLICATION/X-WWW-FORM-URLENCODED")),
        1 => Just(Some("text/plain")),
        1 => Just(Some("multipart/form-data; boundary=x")),
    ];
    (prop::option::weighted(0.25, path_topic()), content_type).prop_map(
        |(path_topic, content_type)| Target {
            path_topic,
            content_type,
        },
    )
}

/// Topics for `/events/{topic}`, valid or not (empty, control characters, slashes).
fn path_topic() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z/]{1,12}",
        "\\PC{0,12}",
        prop::collection::vec(any::<char>(), 0..8).prop_map(String::from_iter),
    ]
}

/// A JSON value of any shape (integers and short binary fractions only, so that parsing and
/// serializing again gives back the same text).
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-4096i32..4096).prop_map(|n| Value::from(f64::from(n) / 8.0)),
        data().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((data(), inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// An object shaped like an event: mostly the known keys with values of the right type
/// (valid or not), sometimes a value of the wrong type or an unknown key.
fn eventish_object() -> impl Strategy<Value = Value> {
    let field = prop_oneof![
        2 => topic().prop_map(|t| ("topic".to_owned(), json!(t))),
        1 => prop::collection::vec(topic(), 0..3).prop_map(|t| ("topics".to_owned(), json!(t))),
        3 => json_value().prop_map(|v| ("data".to_owned(), v)),
        1 => id_prefix().prop_map(|id| ("id".to_owned(), json!(id))),
        1 => event_type().prop_map(|t| ("type".to_owned(), json!(t))),
        1 => any::<u64>().prop_map(|r| ("retry".to_owned(), json!(r))),
        1 => any::<bool>().prop_map(|p| ("private".to_owned(), json!(p))),
        1 => (
            prop::sample::select(&["topic", "topics", "id", "type", "retry", "private"][..]),
            json_value(),
        )
            .prop_map(|(k, v)| (k.to_owned(), v)),
        1 => ("[a-z]{1,6}", json_value()),
    ];
    // Most objects have a valid topic, so that many are accepted.
    let topic = prop::option::weighted(0.7, topic());
    (topic, prop::collection::vec(field, 0..5)).prop_map(|(topic, fields)| {
        let mut object: Map<_, _> = topic
            .map(|t| ("topic".to_owned(), json!(t)))
            .into_iter()
            .collect();
        object.extend(fields);
        Value::Object(object)
    })
}

/// JSON bodies: well-formed events and batches, any JSON value, or those damaged (cut short,
/// a byte changed or inserted), or bytes that are not JSON at all.
fn jsonish_body() -> impl Strategy<Value = Vec<u8>> {
    let document = prop_oneof![
        3 => eventish_object(),
        2 => prop::collection::vec(eventish_object(), 0..4).prop_map(Value::Array),
        1 => json_value(),
    ]
    .prop_map(|v| v.to_string().into_bytes());
    let damaged = (
        document.clone(),
        any::<prop::sample::Index>(),
        any::<u8>(),
        0u8..3,
    )
        .prop_map(|(mut bytes, at, byte, how)| {
            let i = at.index(bytes.len() + 1);
            match how {
                0 => bytes.truncate(i),
                1 if i < bytes.len() => bytes[i] = byte,
                _ => bytes.insert(i, byte),
            }
            bytes
        });
    prop_oneof![4 => document, 2 => damaged, 1 => raw_bytes()]
}

fn json_target() -> impl Strategy<Value = Target> {
    let content_type = prop_oneof![
        4 => Just(Some("application/json")),
        1 => Just(Some("application/json; charset=utf-8")),
        1 => Just(Some("Application/JSON")),
        1 => Just(None),
    ];
    (prop::option::weighted(0.25, path_topic()), content_type).prop_map(
        |(path_topic, content_type)| Target {
            path_topic,
            content_type,
        },
    )
}

// --- strategies: valid events --------------------------------------------------------------------

/// Data with every kind of line end, empty lines, NUL and other control characters, text that
/// looks like form or SSE syntax, and non-ASCII text; or any characters at all.
fn data() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("\n"),
        Just("\r"),
        Just("\r\n"),
        Just("\n\n"),
        Just("\r\r"),
        Just("\0"),
        Just("\t\x0b\x0c\x7f"),
        Just(" "),
        Just("+"),
        Just("%41"),
        Just("&data=forged&"),
        Just("\ndata: forged\n\n"),
        Just("\"\\\u{1}"),
        Just("\u{FEFF}"),
        Just("\u{2028}\u{85}"),
        Just("é€😀"),
        Just("plain text"),
    ]
    .prop_map(str::to_owned);
    prop_oneof![
        2 => prop::collection::vec(prop_oneof![piece, any::<char>().prop_map(String::from)], 0..16)
            .prop_map(|p| p.concat()),
        1 => prop::collection::vec(any::<char>(), 0..32).prop_map(String::from_iter),
    ]
}

/// A valid topic: not empty, no control characters, not the reserved wildcard `*`, not in the
/// hub's reserved namespace (`/.well-known/mercure/...`).
fn topic() -> impl Strategy<Value = String> {
    prop_oneof![
        "[^\\p{Cc}]{1,16}",
        "https://example\\.com/[a-z0-9{}:*/?#=&%+ ]{0,16}",
        Just("**".to_owned()),
    ]
    .prop_filter("a publishable topic", |t| {
        t != "*" && !tidings_core::selector::in_hub_namespace(t, tidings::auth::DEFAULT_BASE)
    })
}

/// A valid id prefix (no control characters); a unique suffix is added when publishing.
fn id_prefix() -> impl Strategy<Value = String> {
    prop_oneof!["[^\\p{Cc}]{1,16}", "[ :a-z&=+%]{1,8}"]
}

/// A valid type: no CR, LF or NUL (other control characters are allowed).
fn event_type() -> impl Strategy<Value = String> {
    prop_oneof!["[^\\r\\n\\x00]{1,16}", "[ :a-z.\\t\\x0b\\x7f&=+%]{1,8}"]
}

/// The `data` of a JSON publish.
#[derive(Debug, Clone)]
enum JsonData {
    Absent,
    Value(Value),
}

#[derive(Debug, Clone)]
struct ValidEvent {
    topics: Vec<String>,
    id: Option<String>,
    kind: Option<String>,
    retry: Option<u64>,
    /// The form's data (absent: empty).
    data: Option<String>,
    /// The JSON publish's data.
    json_data: JsonData,
}

fn valid_event() -> impl Strategy<Value = ValidEvent> {
    let json_data = prop_oneof![
        1 => Just(JsonData::Absent),
        1 => Just(JsonData::Value(Value::Null)),
        4 => data().prop_map(|d| JsonData::Value(Value::String(d))),
        2 => json_value().prop_map(JsonData::Value),
    ];
    (
        prop::collection::vec(topic(), 1..4),
        prop::option::of(id_prefix()),
        prop::option::of(event_type()),
        prop::option::of(prop_oneof![0u64..100_000, any::<u64>()]),
        prop::option::weighted(0.9, data()),
        json_data,
    )
        .prop_map(|(topics, id, kind, retry, data, json_data)| ValidEvent {
            topics,
            id,
            kind,
            retry,
            data,
            json_data,
        })
}

/// Makes every publisher-chosen id unique in the log (a repeated id is a 409 conflict).
fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{prefix}#{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// What the poll must answer for one published event.
fn expected_json(e: &ValidEvent, id: &str, data: &str) -> Value {
    json!({
        "id": id,
        "topics": e.topics,
        "type": e.kind,
        "data": data,
        "retry": e.retry,
        "private": false,
    })
}

/// Publishes `events` as form fields, one request each, then as JSON (a single object when there
/// is one event, else one array), and reads them all back from the start of the log, which must
/// hold nothing else.
async fn round_trip(hub: &TestHub, events: Vec<ValidEvent>) -> Result<(), TestCaseError> {
    let mut want = Vec::new();

    for e in &events {
        let id = e.id.as_deref().map(unique);
        let mut fields: Vec<(&str, &str)> = e.topics.iter().map(|t| ("topic", &t[..])).collect();
        if let Some(id) = &id {
            fields.push(("id", id));
        }
        if let Some(kind) = &e.kind {
            fields.push(("type", kind));
        }
        let retry = e.retry.map(|r| r.to_string());
        if let Some(retry) = &retry {
            fields.push(("retry", retry));
        }
        if let Some(data) = &e.data {
            fields.push(("data", data));
        }
        let reply = hub.post_form(&fields).await;
        prop_assert_eq!(
            reply.status.as_u16(),
            200,
            "form {:?}: {:?}",
            fields,
            reply.body
        );
        if let Some(id) = &id {
            prop_assert_eq!(&reply.body, id);
        }
        want.push(expected_json(
            e,
            &reply.body,
            e.data.as_deref().unwrap_or(""),
        ));
    }

    let mut objects = Vec::new();
    let mut ids = Vec::new();
    for e in &events {
        let id = e.id.as_deref().map(unique);
        let mut object = Map::new();
        // One topic goes as `topic` (a string), several as `topics`.
        match &e.topics[..] {
            [one] => object.insert("topic".into(), json!(one)),
            many => object.insert("topics".into(), json!(many)),
        };
        if let Some(id) = &id {
            object.insert("id".into(), json!(id));
        }
        if let Some(kind) = &e.kind {
            object.insert("type".into(), json!(kind));
        }
        if let Some(retry) = e.retry {
            object.insert("retry".into(), json!(retry));
        }
        if let JsonData::Value(v) = &e.json_data {
            object.insert("data".into(), v.clone());
        }
        objects.push(Value::Object(object));
        ids.push(id);
    }
    let body = match &objects[..] {
        [one] => one.clone(),
        _ => Value::Array(objects),
    };
    let reply = hub.post_json("/.well-known/mercure", &body).await;
    prop_assert_eq!(
        reply.status.as_u16(),
        200,
        "JSON {}: {:?}",
        body,
        reply.body
    );
    let answer = reply.json();
    let answered: Vec<String> = match (&answer["id"], &answer["ids"]) {
        (Value::String(id), _) if events.len() == 1 => vec![id.clone()],
        (_, Value::Array(list)) if events.len() > 1 => list
            .iter()
            .map(|v| v.as_str().unwrap_or_default().to_owned())
            .collect(),
        _ => return Err(TestCaseError::fail(format!("odd answer {answer}"))),
    };
    prop_assert_eq!(answered.len(), events.len());
    for ((e, given), id) in events.iter().zip(&ids).zip(&answered) {
        if let Some(given) = given {
            prop_assert_eq!(given, id);
        }
        let data = match &e.json_data {
            JsonData::Absent | JsonData::Value(Value::Null) => String::new(),
            JsonData::Value(Value::String(s)) => s.clone(),
            JsonData::Value(other) => other.to_string(),
        };
        want.push(expected_json(e, id, &data));
    }

    // GET /events?topic=*&after=earliest, page by page: the whole log of this case's own hub,
    // in order, is exactly what was published, and what /stats counts.
    let log = hub.history("topic=*").await;
    prop_assert_eq!(log.len(), want.len());
    prop_assert_eq!(log.len() as u64, events_stored(hub).await);
    for (got, want) in log.iter().zip(&want) {
        let mut got = got.clone();
        let stored_at = got.as_object_mut().and_then(|o| o.remove("stored_at"));
        prop_assert!(
            stored_at.is_some_and(|s| s.is_string()),
            "stored_at missing"
        );
        prop_assert_eq!(&got, want);
    }
    Ok(())
}

// --- the properties ---------------------------------------------------------------------------

#[test]
fn any_form_body_is_answered_below_500_and_stores_only_on_success() {
    check(192, (form_target(), form_body()), |hub, (target, body)| {
        post_anything(hub, target, body)
    });
}

#[test]
fn any_json_body_is_answered_below_500_and_stores_only_on_success() {
    check(
        192,
        (json_target(), jsonish_body()),
        |hub, (target, body)| post_anything(hub, target, body),
    );
}

#[test]
fn valid_events_round_trip_byte_identical_through_form_and_json() {
    // A fresh hub for every case, so that its log holds exactly the case's events.
    check(
        96,
        prop::collection::vec(valid_event(), 1..4),
        |_, events| async move {
            let hub = spawn_hub().await;
            let result = round_trip(&hub, events).await;
            hub.shutdown().await.expect("the hub shuts down cleanly");
            result
        },
    );
}
