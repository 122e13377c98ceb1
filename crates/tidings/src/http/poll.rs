//! The polling fallback for clients that cannot hold a stream:
//! `GET /events?topic=S&after=ID&wait=SECONDS&limit=N` answers a JSON page of events. It uses the
//! stream's matching, ordering and resume rules; `after` plays the part of Last-Event-ID.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Serialize;
use tidings_core::event::Event;
use tidings_core::hub::Start;

use super::error::ApiError;
use super::subscribe::{hold_patterns, parse_request, peer_ip};
use super::{link_header, AppState};

/// Events per page when the client does not say.
const DEFAULT_LIMIT: usize = 100;
/// Most events per page.
const MAX_LIMIT: usize = 1000;

/// An event as JSON.
#[derive(Serialize)]
pub struct EventJson<'a> {
    pub id: &'a str,
    pub topics: Vec<&'a str>,
    #[serde(rename = "type")]
    pub kind: Option<&'a str>,
    pub data: &'a str,
    pub retry: Option<u64>,
    pub private: bool,
    /// RFC 3339, UTC, milliseconds.
    pub stored_at: String,
}

impl<'a> From<&'a Event> for EventJson<'a> {
    fn from(e: &'a Event) -> Self {
        let at = std::time::UNIX_EPOCH + Duration::from_millis(e.stored_at_ms.max(0) as u64);
        Self {
            id: e.id.as_str(),
            topics: e.topics.iter().map(|t| t.as_str()).collect(),
            kind: e.kind.as_ref().map(|k| k.as_str()),
            data: &e.data,
            retry: e.retry,
            private: e.private,
            stored_at: humantime::format_rfc3339_millis(at).to_string(),
        }
    }
}

#[derive(Serialize)]
struct Page<'a> {
    events: Vec<EventJson<'a>>,
    /// Pass as `after` in the next poll.
    last_event_id: &'a str,
    /// More matching events are waiting: poll again at once.
    more: bool,
    /// Present when events after `after` are no longer retained (an unknown or pruned id, or
    /// pruning overtook the cursor): nothing from there was replayed.
    #[serde(skip_serializing_if = "Option::is_none")]
    reset: Option<Reset<'a>>,
}

#[derive(Serialize)]
struct Reset<'a> {
    reason: &'static str,
    last_event_id: &'a str,
}

/// `GET /events`.
pub async fn poll(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // A waiting poll holds its selectors in the fan-out like a stream.
    let _held = hold_patterns(&state, query.as_deref(), None, peer_ip(connect))?;
    let (limits, cache) = (&state.limits, &state.selectors);
    let mut request = parse_request(query.as_deref(), &headers, None, limits, cache)?;
    request.authorize(&state, &headers).await?;
    // A poll is not a standing subscription: keep it out of the presence API.
    request.interest.presence = None;
    let mut limit = DEFAULT_LIMIT;
    let mut wait = Duration::ZERO;
    for (name, value) in std::mem::take(&mut request.rest) {
        match name.as_str() {
            "after" => request.start = Start::from_last_event_id(&value),
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad(format!("limit must be an integer from 1 to {MAX_LIMIT}"))
                    })?
            }
            "wait" => {
                let max = state.limits.max_wait;
                wait = value
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s >= 0.0 && *s <= max.as_secs_f64())
                    .map(Duration::from_secs_f64)
                    .ok_or_else(|| {
                        ApiError::bad(format!(
                            "wait must be a number of seconds from 0 to {}",
                            max.as_secs()
                        ))
                    })?
            }
            _ => {}
        }
    }
    if let Some(exp) = request.expires_at {
        // As a stream ends at its token's exp, a long poll stops waiting there: the leeway that
        // admitted the token does not extend what it receives.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        wait = wait.min(Duration::from_secs(exp).saturating_sub(now));
    }
    let page = state
        .hub
        .poll(request.interest, request.start, limit, wait)
        .await?;
    let body = Page {
        events: page.events.iter().map(|e| EventJson::from(&**e)).collect(),
        last_event_id: &page.last_event_id,
        more: page.more,
        reset: page.reset.as_deref().map(|id| Reset {
            reason: "events after this id are no longer retained; nothing from there was replayed",
            last_event_id: id,
        }),
    };
    Ok(([link_header()], Json(body)).into_response())
}
