//! Presence: Mercure's active-subscriptions API and subscription events, in both generations.
//!
//! `GET /.well-known/mercure/subscriptions[/{topic}[/{subscriber}]]` (stable line) and
//! `.../subscriptions/{match_type}/{match}[/{subscriber}]` (1.0 draft) answer JSON-LD. A
//! subscriber that used the draft's `match` parameters is described and announced the draft's
//! way (`match_type`, `match`, ids under `{match_type}/{match}`), one that used `topic` the
//! stable line's way (`topic`, ids under `{topic}`). The caller
//! needs a subscriber token whose `mercure.subscribe` selectors match the requested path, and
//! sees only the subscriptions whose ids its selectors match. When subscription events are
//! enabled, the hub publishes a private event on each subscription's id when it starts
//! (`active: true`) and ends (`active: false`).

use std::sync::Arc;

use axum::extract::{OriginalUri, Path, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{json, Value};
use tidings_core::event::{NewEvent, Topic};
use tidings_core::fanout::{ActiveSubscription, Presence};
use tidings_core::hub::Hub;
use tidings_core::selector::Selector;

use super::error::ApiError;
use super::{link_header, AppState};

/// The prefix of every subscription id and API path.
pub const PREFIX: &str = "/.well-known/mercure/subscriptions";

/// RFC 3986 unreserved characters stay; everything else is percent-encoded, exactly once.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The id (and topic of its events) of one subscriber's subscription to `selector`, the stable
/// line's way: `{PREFIX}/{topic}/{subscriber}`.
pub fn subscription_id(selector: &str, subscriber: &str) -> String {
    format!(
        "{PREFIX}/{}/{}",
        utf8_percent_encode(selector, COMPONENT),
        utf8_percent_encode(subscriber, COMPONENT)
    )
}

/// The 1.0 draft's id of a subscription: `{PREFIX}/{match_type}/{match}/{subscriber}`, each
/// variable percent-encoded exactly once.
pub fn draft_subscription_id(match_type: &str, matcher: &str, subscriber: &str) -> String {
    format!(
        "{PREFIX}/{match_type}/{}/{}",
        utf8_percent_encode(matcher, COMPONENT),
        utf8_percent_encode(subscriber, COMPONENT)
    )
}

/// The draft's matcher type name of a selector (`uritemplate` for the stable line's templates,
/// which the draft leaves to extensions; `*` is an exact matcher's wildcard).
pub fn match_type(selector: &Selector) -> &'static str {
    match selector {
        Selector::UrlPattern { .. } => "urlpattern",
        Selector::Template { .. } => "uritemplate",
        Selector::Any | Selector::Exact(_) => "exact",
    }
}

/// Each selector of a subscriber with its draft matcher type (`None`: the stable line's form).
fn matchers<'a>(
    selectors: &'a [String],
    presence: &'a Presence,
) -> impl Iterator<Item = (&'a str, Option<&'static str>)> {
    selectors.iter().enumerate().map(|(i, s)| {
        let kind = presence
            .match_types
            .as_ref()
            .and_then(|m| m.get(i).copied());
        (s.as_str(), kind)
    })
}

fn document(selector: &str, kind: Option<&str>, presence: &Presence, active: bool) -> Value {
    let payload = presence
        .payload
        .as_deref()
        .and_then(|p| serde_json::from_str::<Value>(p).ok());
    let mut doc = match kind {
        None => json!({
            "id": subscription_id(selector, &presence.subscriber),
            "type": "Subscription",
            "topic": selector,
            "subscriber": &*presence.subscriber,
            "active": active,
        }),
        Some(kind) => json!({
            "id": draft_subscription_id(kind, selector, &presence.subscriber),
            "type": "Subscription",
            "match_type": kind,
            "match": selector,
            "subscriber": &*presence.subscriber,
            "active": active,
        }),
    };
    if let Some(payload) = payload {
        doc["payload"] = payload;
    }
    doc
}

/// The private events announcing that `presence` started (or stopped) watching `selectors`;
/// each event's topic is the subscription's id.
pub fn events(selectors: &[String], presence: &Presence, active: bool) -> Vec<NewEvent> {
    matchers(selectors, presence)
        .filter_map(|(selector, kind)| {
            let mut doc = document(selector, kind, presence, active);
            doc["@context"] = json!("https://mercure.rocks/");
            let topic = Topic::parse(doc["id"].as_str()?).ok()?;
            let mut event = NewEvent::new(vec![topic], doc.to_string()).ok()?;
            event.private = true;
            Some(event)
        })
        .collect()
}

/// Publishes the `active: false` events when dropped (the subscriber's stream ended).
pub struct Departure {
    pub hub: Arc<Hub>,
    pub selectors: Vec<String>,
    pub presence: Presence,
}

impl Drop for Departure {
    fn drop(&mut self) {
        let events = events(&self.selectors, &self.presence, false);
        let hub = self.hub.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = hub.publish(events).await {
                    tracing::debug!(error = %e, "could not publish a subscription's end");
                }
            });
        }
    }
}

/// The draft's matcher type names, which make a two-segment path the draft's
/// `{match_type}/{match}` collection rather than the stable line's `{topic}/{subscriber}`.
const MATCH_TYPES: [&str; 2] = ["exact", "urlpattern"];

/// `GET /.well-known/mercure/subscriptions`: every subscription, each in the form its
/// subscriber used.
pub async fn all(
    State(state): State<Arc<AppState>>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    list(&state, uri.path(), &headers, |_, _| true).await
}

/// `GET /.well-known/mercure/subscriptions/{topic}` (stable line).
pub async fn by_topic(
    State(state): State<Arc<AppState>>,
    OriginalUri(uri): OriginalUri,
    Path(topic): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    list(&state, uri.path(), &headers, |selector, _| {
        selector == topic
    })
    .await
}

/// `GET /.well-known/mercure/subscriptions/{a}/{b}`: the draft's collection
/// `{match_type}/{match}` when `a` is `exact` or `urlpattern`, else the stable line's single
/// subscription `{topic}/{subscriber}`.
pub async fn pair(
    State(state): State<Arc<AppState>>,
    OriginalUri(uri): OriginalUri,
    Path((a, b)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if MATCH_TYPES.contains(&a.as_str()) {
        return list(&state, uri.path(), &headers, |selector, kind| {
            kind == Some(a.as_str()) && selector == b
        })
        .await;
    }
    one(&state, uri.path(), &headers, |s, selector, kind| {
        kind.is_none() && selector == a && *s.presence.subscriber == *b
    })
    .await
}

/// `GET /.well-known/mercure/subscriptions/{match_type}/{match}/{subscriber}` (1.0 draft).
pub async fn draft_one(
    State(state): State<Arc<AppState>>,
    OriginalUri(uri): OriginalUri,
    Path((kind, matcher, subscriber)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    one(&state, uri.path(), &headers, |s, selector, k| {
        k == Some(kind.as_str()) && selector == matcher && *s.presence.subscriber == *subscriber
    })
    .await
}

/// One subscription: the first active one `wanted` picks, if the caller may see it.
async fn one(
    state: &AppState,
    path: &str,
    headers: &HeaderMap,
    wanted: impl Fn(&ActiveSubscription, &str, Option<&str>) -> bool,
) -> Result<Response, ApiError> {
    let selectors = authorize(state, path, headers).await?;
    let found = state.hub.subscriptions().into_iter().find_map(|s| {
        matchers(&s.selectors, &s.presence)
            .find(|(selector, kind)| wanted(&s, selector, *kind))
            .map(|(selector, kind)| document(selector, kind, &s.presence, true))
    });
    let Some(mut doc) = found.filter(|doc| visible(&selectors, doc)) else {
        return Err(ApiError::NotFound("no such active subscription".into()));
    };
    doc["@context"] = json!("https://mercure.rocks/");
    let head = state.hub.head_id();
    doc["lastEventID"] = json!(head);
    doc["last_event_id"] = json!(head);
    Ok(ld_json(doc))
}

/// The caller's subscribe selectors, when they cover `path`; 401 without a token, 403 otherwise.
async fn authorize(
    state: &AppState,
    path: &str,
    headers: &HeaderMap,
) -> Result<Vec<Selector>, ApiError> {
    let token = state.auth.token(headers, None);
    if token.is_none() && state.auth.subscribing_is_open() {
        // No subscriber key: no token could be verified, so the development mode's presence is
        // open to all, like its publishing.
        return Ok(vec![Selector::parse_topic("*")?]);
    }
    if token.is_none() {
        return Err(crate::auth::AuthError::Missing.into());
    }
    let grant = state.auth.subscriber(token).await?;
    if !grant.subscribe.iter().any(|s| s.matches(path)) {
        return Err(ApiError::Forbidden(
            "the token's subscribe selectors do not cover this path".into(),
        ));
    }
    Ok(grant.subscribe)
}

fn visible(selectors: &[Selector], doc: &Value) -> bool {
    doc["id"]
        .as_str()
        .is_some_and(|id| selectors.iter().any(|s| s.matches(id)))
}

async fn list(
    state: &AppState,
    path: &str,
    headers: &HeaderMap,
    keep: impl Fn(&str, Option<&str>) -> bool,
) -> Result<Response, ApiError> {
    let selectors = authorize(state, path, headers).await?;
    let subscriptions: Vec<Value> = state
        .hub
        .subscriptions()
        .iter()
        .flat_map(|s| {
            matchers(&s.selectors, &s.presence)
                .filter(|(sel, kind)| keep(sel, *kind))
                .map(|(sel, kind)| document(sel, kind, &s.presence, true))
                .collect::<Vec<_>>()
        })
        .filter(|doc| visible(&selectors, doc))
        .collect();
    let head = state.hub.head_id();
    // The stable line names the cursor `lastEventID`, the 1.0 draft `last_event_id`.
    Ok(ld_json(json!({
        "@context": "https://mercure.rocks/",
        "id": path,
        "type": "Subscriptions",
        "lastEventID": head,
        "last_event_id": head,
        "subscriptions": subscriptions,
    })))
}

fn ld_json(doc: Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/ld+json"), link_header()],
        doc.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_encode_each_component_once() {
        assert_eq!(
            subscription_id("https://example.com/books/{id}", "urn:uuid:1"),
            "/.well-known/mercure/subscriptions/https%3A%2F%2Fexample.com%2Fbooks%2F%7Bid%7D/urn%3Auuid%3A1"
        );
        assert_eq!(subscription_id("a%2F", "s"), format!("{PREFIX}/a%252F/s"));
    }

    #[test]
    fn events_are_private_json_ld() {
        let presence = Presence {
            subscriber: "alice".into(),
            payload: Some(r#"{"name":"Alice"}"#.into()),
            match_types: None,
        };
        let events = events(&["jobs/1".into()], &presence, true);
        assert_eq!(events.len(), 1);
        assert!(events[0].private);
        let doc: Value = serde_json::from_str(&events[0].data).unwrap();
        assert_eq!(doc["type"], "Subscription");
        assert_eq!(doc["active"], true);
        assert_eq!(doc["payload"]["name"], "Alice");
        assert_eq!(doc["id"], events[0].topics[0].as_str());
    }
}
