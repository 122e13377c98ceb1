//! Publishing: `POST /.well-known/mercure` (Mercure form fields, or JSON) and the path form
//! `POST /events/{topic}`. Every event of a request is validated before anything is stored, and
//! the answer comes only after the log has made the events durable.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use tidings_core::event::{Event, EventId, EventType, NewEvent, Topic};
use tidings_core::selector::{in_hub_namespace, WILDCARD};

use super::cors::CorsOrigins;
use super::error::ApiError;
use super::Limits;
use super::{form, json, link_header, AppState};
use crate::auth::{may_publish, Grant};

/// `POST /.well-known/mercure`.
///
/// The handlers take the whole request and read its headers, query and extensions in place:
/// axum's `HeaderMap` and `RawQuery` extractors copy them for every publish.
pub async fn publish(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let limits = &state.limits;
    let grant = publisher_grant(&state, &parts).await?;
    let body = read_body(body, limits).await?;
    match MediaType::of(&parts.headers) {
        MediaType::Json => {
            let (batch, single) = parse_json_publish(&body, limits)?;
            refuse_reserved_topics(&batch)?;
            authorize(grant.as_ref(), &batch)?;
            let events = state.hub.publish_idempotent(batch).await?;
            Ok(json_ids(&events, single))
        }
        MediaType::Form | MediaType::None => {
            let event = parse_form_publish(&body, limits, None)?;
            refuse_reserved_topics(std::slice::from_ref(&event))?;
            authorize(grant.as_ref(), std::slice::from_ref(&event))?;
            // A retry of a stored event (same id, same content) answers its id again.
            let events = state.hub.publish_idempotent(vec![event]).await?;
            let id = events
                .first()
                .map(|(e, _)| e.id.to_string())
                .unwrap_or_default();
            Ok((
                [
                    (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                    link_header(),
                ],
                id,
            )
                .into_response())
        }
        MediaType::Other(other) => Err(ApiError::UnsupportedMediaType(other)),
    }
}

/// `POST /events/{topic}`: one event on the topic named by the path; the body holds the other
/// fields, as JSON or as form fields.
pub async fn publish_to_path(
    State(state): State<Arc<AppState>>,
    Path(topic): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let limits = &state.limits;
    let grant = publisher_grant(&state, &parts).await?;
    let body = read_body(body, limits).await?;
    let topic = Topic::parse(&topic)?;
    let event = match MediaType::of(&parts.headers) {
        MediaType::Json | MediaType::None => {
            let fields: PathEvent = if body.is_empty() {
                PathEvent::default()
            } else {
                json::parse(&body)?
            };
            fields.into_event(topic)?
        }
        MediaType::Form => parse_form_publish(&body, limits, Some(topic))?,
        MediaType::Other(other) => return Err(ApiError::UnsupportedMediaType(other)),
    };
    refuse_reserved_topics(std::slice::from_ref(&event))?;
    authorize(grant.as_ref(), std::slice::from_ref(&event))?;
    let events = state.hub.publish_idempotent(vec![event]).await?;
    Ok(json_ids(&events, true))
}

/// A publisher token the rate limiter has verified already, with what it grants, so the
/// handler does not verify it again.
#[derive(Clone)]
pub struct VerifiedPublisher {
    pub token: String,
    pub grant: Option<Grant>,
}

/// The publisher token a request carries (the header, the `authorization` query parameter or
/// the cookie, in that order), and whether it came from the cookie.
pub(crate) fn publisher_token(
    state: &AppState,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<(Option<String>, bool), ApiError> {
    let pairs = form::pairs(query.unwrap_or("").as_bytes())?;
    let query_token = pairs
        .iter()
        .find(|(name, _)| name == "authorization" || name == "access_token")
        .map(|(_, v)| v.as_str());
    let token = state.auth.token(headers, query_token);
    let from_cookie =
        token.is_some() && query_token.is_none() && !headers.contains_key(header::AUTHORIZATION);
    Ok((token.map(str::to_owned), from_cookie))
}

/// The publisher's grant (`None` in the open development mode).
async fn publisher_grant(state: &AppState, parts: &Parts) -> Result<Option<Grant>, ApiError> {
    let headers = &parts.headers;
    let (token, from_cookie) = publisher_token(state, parts.uri.query(), headers)?;
    if from_cookie && !same_or_allowed_origin(state, headers) {
        // A browser sends cookies with a cross-site form POST: without this check any page
        // could publish with its visitor's cookie (CSRF).
        return Err(ApiError::Forbidden(
            "a publish authorized by a cookie must come from an allowed Origin".into(),
        ));
    }
    match parts.extensions.get::<VerifiedPublisher>() {
        Some(v) if token.as_deref() == Some(v.token.as_str()) => Ok(v.grant.clone()),
        _ => Ok(state.auth.publisher(token.as_deref()).await?),
    }
}

/// Whether the request's `Origin` (or, lacking it, `Referer`) is the hub's own origin or one of
/// the configured CORS origins.
fn same_or_allowed_origin(state: &AppState, headers: &HeaderMap) -> bool {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let origin = match text(header::ORIGIN) {
        Some(o) => o.to_owned(),
        None => match text(header::REFERER).and_then(|r| r.split_once("://")) {
            Some((scheme, rest)) => {
                format!(
                    "{scheme}://{}",
                    rest.split(['/', '?', '#']).next().unwrap_or("")
                )
            }
            None => return false,
        },
    };
    let same = origin
        .split_once("://")
        .is_some_and(|(_, authority)| Some(authority) == text(header::HOST));
    same || matches!(&state.cors, CorsOrigins::List(list) if list.iter().any(|p| p.matches(&origin)))
}

/// Refuses an event no publisher may make, whatever its grant: one on the wildcard topic `*`
/// (every selector form reads it as "every topic"; 400), or one in the hub's own namespace
/// (`/.well-known/mercure/...`), where the Mercure draft reserves topics for the events the hub
/// makes, such as subscription events (403). The namespace is a path, the one the router serves
/// and the hub's subscription events carry, so topics resolve against the hub's path whatever
/// `--jwt-audience` says. HTTP publishes and webhook deliveries both come through here.
pub(crate) fn refuse_reserved_topics(events: &[NewEvent]) -> Result<(), ApiError> {
    for topic in events.iter().flat_map(|e| e.topics.iter()) {
        if topic.as_str() == WILDCARD {
            return Err(ApiError::bad(
                "the topic \"*\" is the reserved wildcard and cannot be published to",
            ));
        }
        if in_hub_namespace(topic.as_str(), crate::auth::DEFAULT_BASE) {
            return Err(ApiError::Forbidden(format!(
                "the topic {:?} is in the hub's reserved namespace (/.well-known/mercure)",
                topic.as_str()
            )));
        }
    }
    Ok(())
}

/// With a publisher grant (`None`: open development mode), every topic of every event must be
/// covered by its `mercure.publish` selectors.
fn authorize(grant: Option<&Grant>, events: &[NewEvent]) -> Result<(), ApiError> {
    let Some(grant) = grant else { return Ok(()) };
    match events.iter().find(|e| !may_publish(grant, &e.topics)) {
        Some(e) => Err(ApiError::Forbidden(format!(
            "the token may not publish to all of the topics {:?}",
            e.topics.iter().map(|t| t.as_str()).collect::<Vec<_>>()
        ))),
        None => Ok(()),
    }
}

/// `{"id": ...}` for one event, `{"ids": [...]}` for a batch; a retry of a stored event is
/// marked: `"duplicate": true` (one event), `"duplicates": [ids]` (a batch).
fn json_ids(events: &[(Arc<Event>, bool)], single: bool) -> Response {
    let ids: Vec<&str> = events.iter().map(|(e, _)| e.id.as_str()).collect();
    let duplicates: Vec<&str> = events
        .iter()
        .filter(|(_, dup)| *dup)
        .map(|(e, _)| e.id.as_str())
        .collect();
    let mut body = if single {
        serde_json::json!({ "id": ids.first() })
    } else {
        serde_json::json!({ "ids": ids })
    };
    match (single, duplicates.is_empty()) {
        (_, true) => {}
        (true, false) => body["duplicate"] = true.into(),
        (false, false) => body["duplicates"] = duplicates.into(),
    }
    ([link_header()], axum::Json(body)).into_response()
}

/// The media type of the request, lower-cased, without parameters.
/// A request's media type, compared without copying the header.
enum MediaType {
    Json,
    Form,
    /// No `Content-Type`.
    None,
    /// Any other, lowercased for the error message.
    Other(String),
}

impl MediaType {
    fn of(headers: &HeaderMap) -> Self {
        let Some(value) = headers.get(header::CONTENT_TYPE) else {
            return Self::None;
        };
        let essence = value
            .to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim();
        if essence.eq_ignore_ascii_case("application/json") {
            Self::Json
        } else if essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            Self::Form
        } else if essence.is_empty() {
            Self::None
        } else {
            Self::Other(essence.to_ascii_lowercase())
        }
    }
}

/// Reads the whole body, refusing one over `limit` (413): at once when its declared
/// `Content-Length` is over it, before any of it is read (a client that sent `Expect:
/// 100-continue` never sends it); otherwise once the limit is passed. Past the limit the rest is
/// still read and dropped, up to [`DRAIN_FACTOR`] times the limit, so the client gets to read the
/// 413 instead of a reset connection; a body larger still is cut off. The whole body must arrive
/// within `limits.body_deadline`, with no pause longer than `limits.body_idle` (408).
pub(crate) async fn read_body(body: Body, limits: &Limits) -> Result<Bytes, ApiError> {
    use http_body_util::BodyExt;
    let limit = limits.max_body;
    if hyper::body::Body::size_hint(&body).lower() > limit as u64 {
        return Err(ApiError::TooLarge(limit));
    }
    let mut body = body;
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    let deadline = tokio::time::Instant::now() + limits.body_deadline;
    loop {
        // A client trickling its body must not hold a connection (and a publish slot) forever.
        let next = tokio::time::timeout_at(
            deadline.min(tokio::time::Instant::now() + limits.body_idle),
            body.frame(),
        );
        let Some(frame) = next.await.map_err(|_| ApiError::BodyTimeout)? else {
            break;
        };
        let frame =
            frame.map_err(|e| ApiError::bad(format!("could not read the request body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen = seen.saturating_add(data.len());
        if seen <= limit {
            buf.extend_from_slice(&data);
        } else if seen > limit.saturating_mul(DRAIN_FACTOR) {
            break;
        }
    }
    if seen > limit {
        return Err(ApiError::TooLarge(limit));
    }
    Ok(buf.freeze())
}

/// How much of an oversized body is read (and dropped) before answering 413, in limits.
const DRAIN_FACTOR: usize = 4;

/// Builds a validated event from Mercure's form fields.
/// `path_topic` is the topic of `/events/{topic}`; a `topic` field is then refused.
fn parse_form_publish(
    body: &[u8],
    limits: &Limits,
    path_topic: Option<Topic>,
) -> Result<NewEvent, ApiError> {
    let mut topics = Vec::new();
    if let Some(topic) = &path_topic {
        topics.push(topic.to_string());
    }
    let mut fields = Fields::default();
    for (name, value) in form::pairs(body)? {
        match name.as_str() {
            "topic" if path_topic.is_some() => {
                return Err(ApiError::bad("the topic of /events/{topic} is its path"))
            }
            "topic" => topics.push(value),
            "data" => set_once(&mut fields.data, value, "data")?,
            "id" => set_once(&mut fields.id, value, "id")?,
            "type" => set_once(&mut fields.kind, value, "type")?,
            "retry" => set_once(&mut fields.retry, value, "retry")?,
            // Mercure: the presence of the field makes the update private, whatever its value.
            "private" => fields.private = true,
            // Mercure: hubs must ignore fields they do not recognize.
            _ => {}
        }
    }
    let retry = fields
        .retry
        .as_deref()
        .map(|r| {
            r.parse::<u64>()
                .map_err(|_| ApiError::bad("retry must be a non-negative integer (milliseconds)"))
        })
        .transpose()?;
    build_event(
        topics,
        fields.data.unwrap_or_default(),
        fields.id,
        fields.kind,
        retry,
        fields.private,
        limits,
    )
}

#[derive(Default)]
struct Fields {
    data: Option<String>,
    id: Option<String>,
    kind: Option<String>,
    retry: Option<String>,
    private: bool,
}

fn set_once(slot: &mut Option<String>, value: String, name: &str) -> Result<(), ApiError> {
    if slot.replace(value).is_some() {
        return Err(ApiError::bad(format!(
            "field {name} is given more than once"
        )));
    }
    Ok(())
}

fn build_event(
    topics: Vec<String>,
    data: String,
    id: Option<String>,
    kind: Option<String>,
    retry: Option<u64>,
    private: bool,
    limits: &Limits,
) -> Result<NewEvent, ApiError> {
    if topics.is_empty() {
        return Err(ApiError::bad("missing topic"));
    }
    if topics.len() > limits.max_topics {
        return Err(ApiError::bad(format!(
            "too many topics: {} (at most {})",
            topics.len(),
            limits.max_topics
        )));
    }
    let topics = topics
        .iter()
        .map(|t| Topic::parse(t))
        .collect::<Result<Vec<_>, _>>()?;
    let mut event = NewEvent::new(topics, data)?;
    event.id = publisher_id(id.as_deref())?;
    event.kind = kind.as_deref().map(EventType::parse).transpose()?;
    event.retry = retry;
    event.private = private;
    Ok(event)
}

/// A publisher-supplied id; the `webhook:` prefix is reserved for webhook deliveries, whose ids
/// make retries idempotent.
fn publisher_id(id: Option<&str>) -> Result<Option<EventId>, ApiError> {
    match id {
        Some(id) if id.starts_with("webhook:") => Err(ApiError::bad(
            "ids starting with \"webhook:\" are reserved for webhook deliveries",
        )),
        other => Ok(other.map(EventId::parse).transpose()?),
    }
}

/// `topic` in JSON: one string or a list.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// The fields of an event other than its topics (the body of `POST /events/{topic}`).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PathEvent {
    #[serde(rename = "type")]
    kind: Option<String>,
    data: Option<serde_json::Value>,
    id: Option<String>,
    #[serde(default)]
    private: bool,
    retry: Option<u64>,
}

impl PathEvent {
    fn into_event(self, topic: Topic) -> Result<NewEvent, ApiError> {
        let mut event = NewEvent::new(vec![topic], data_text(self.data))?;
        event.id = publisher_id(self.id.as_deref())?;
        event.kind = self.kind.as_deref().map(EventType::parse).transpose()?;
        event.retry = self.retry;
        event.private = self.private;
        Ok(event)
    }
}

/// A string is the data as is; any other JSON value is serialized; absent or null is empty.
fn data_text(value: Option<serde_json::Value>) -> String {
    match value {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(s)) => s,
        Some(other) => other.to_string(),
    }
}

/// One event of a JSON publish: `topic` (a string or a list) or `topics`, plus the fields of
/// [`PathEvent`]; anything else is refused.
fn parse_json_event(value: serde_json::Value, limits: &Limits) -> Result<NewEvent, ApiError> {
    let serde_json::Value::Object(mut map) = value else {
        return Err(ApiError::bad("each event must be a JSON object"));
    };
    let topic = map.remove("topic");
    let topics = map.remove("topics");
    let rest: PathEvent = serde_json::from_value(serde_json::Value::Object(map)).map_err(|e| {
        let e = e.to_string();
        // serde lists the fields of `PathEvent` only; an event also has its topics.
        match e
            .strip_prefix("unknown field ")
            .and_then(|r| r.split(',').next())
        {
            Some(field) => ApiError::bad(format!(
                "invalid event: unknown field {field}; the fields are topic (or topics), \
                     type, data, id, private and retry"
            )),
            None => ApiError::bad(format!("invalid event: {e}")),
        }
    })?;
    let topic: Option<OneOrMany> = topic
        .map(serde_json::from_value)
        .transpose()
        .map_err(|_| ApiError::bad("topic must be a string or a list of strings"))?;
    let topics: Option<Vec<String>> = topics
        .map(serde_json::from_value)
        .transpose()
        .map_err(|_| ApiError::bad("topics must be a list of strings"))?;
    let all = match (topic, topics) {
        (Some(_), Some(_)) => return Err(ApiError::bad("give topic or topics, not both")),
        (Some(OneOrMany::One(t)), None) => vec![t],
        (Some(OneOrMany::Many(ts)), None) | (None, Some(ts)) => ts,
        (None, None) => Vec::new(),
    };
    build_event(
        all,
        data_text(rest.data),
        rest.id,
        rest.kind,
        rest.retry,
        rest.private,
        limits,
    )
}

/// Parses a JSON publish: one object, or an array published atomically in order. Returns the
/// events and whether the body was a single object.
fn parse_json_publish(body: &[u8], limits: &Limits) -> Result<(Vec<NewEvent>, bool), ApiError> {
    let value: serde_json::Value = json::parse(body)?;
    match value {
        serde_json::Value::Array(items) => {
            if items.is_empty() {
                return Err(ApiError::bad("the event list is empty"));
            }
            if items.len() > limits.max_batch {
                return Err(ApiError::bad(format!(
                    "too many events in one request: {} (at most {})",
                    items.len(),
                    limits.max_batch
                )));
            }
            let events = items
                .into_iter()
                .enumerate()
                .map(|(i, v)| {
                    parse_json_event(v, limits)
                        .map_err(|e| ApiError::bad(format!("event {i}: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok((events, false))
        }
        other => Ok((vec![parse_json_event(other, limits)?], true)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::default()
    }

    #[test]
    fn form_fields_become_an_event() {
        let e = parse_form_publish(
            b"topic=a&topic=b&data=hi&id=x&type=t&retry=10&private=on",
            &limits(),
            None,
        )
        .unwrap();
        assert_eq!(e.topics.len(), 2);
        assert_eq!(e.data, "hi");
        assert_eq!(e.id.unwrap().as_str(), "x");
        assert_eq!(e.kind.unwrap().as_str(), "t");
        assert_eq!(e.retry, Some(10));
        assert!(e.private);
    }

    #[test]
    fn form_errors_are_one_line_reasons() {
        for (body, reason) in [
            (&b"data=x"[..], "missing topic"),
            (b"topic=a&retry=soon", "retry must be"),
            (b"topic=a&id=a%0Ab", "id contains"),
            (b"topic=a&type=a%0Db", "type contains"),
            (b"topic=a&data=%FF", "UTF-8"),
            (b"topic=a&data=1&data=2", "more than once"),
            (b"topic=", "topic is empty"),
        ] {
            let err = parse_form_publish(body, &limits(), None)
                .unwrap_err()
                .to_string();
            assert!(err.contains(reason), "{err} lacks {reason}");
            assert!(!err.contains('\n'));
        }
    }

    #[test]
    fn json_accepts_objects_arrays_and_any_data() {
        let (events, single) = parse_json_publish(
            br#"{"topic":"a","data":{"k":[1,2]},"private":true}"#,
            &limits(),
        )
        .unwrap();
        assert!(single);
        assert_eq!(events[0].data, r#"{"k":[1,2]}"#);
        assert!(events[0].private);
        let (events, single) = parse_json_publish(
            br#"[{"topics":["a","b"],"data":"x"},{"topic":["c"],"type":"t"}]"#,
            &limits(),
        )
        .unwrap();
        assert!(!single);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].topics.len(), 2);
    }

    #[test]
    fn json_errors() {
        for (body, reason) in [
            (&br#"{"data":"x"}"#[..], "missing topic"),
            (br#"{"topic":"a","topics":["b"]}"#, "not both"),
            (br#"{"topic":"a","colour":"red"}"#, "unknown field"),
            (br#"[]"#, "empty"),
            (br#"[{"topic":"a"},{"data":1}]"#, "event 1"),
            (br#"{"topic":"a","retry":-1}"#, "invalid event"),
            (b"\xff", "invalid JSON"),
            (
                br#"{"topic":"a","data":"x","data":"y"}"#,
                "duplicate key \"data\"",
            ),
        ] {
            let err = parse_json_publish(body, &limits()).unwrap_err().to_string();
            assert!(err.contains(reason), "{err} lacks {reason}");
        }
    }
}
