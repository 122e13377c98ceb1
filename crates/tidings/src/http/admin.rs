//! Operations endpoints: `GET /healthz` and `GET /stats`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::error::ApiError;
use super::AppState;

/// `GET /healthz`: 200 `{"status":"ok"}` when the store answers and its links are up; 503
/// `{"status":"degraded","reason":...}` otherwise.
pub async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    let reason = match state.hub.stats().await {
        Err(e) => {
            tracing::warn!(error = %e, "health check failed");
            Some("the event store does not answer".to_owned())
        }
        Ok(_) => state.hub.store_health().err(),
    };
    match reason {
        None => Json(json!({ "status": "ok" })).into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "degraded", "reason": reason })),
        )
            .into_response(),
    }
}

/// `GET /stats`: subscribers, topics, stored events and counters.
pub async fn stats(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let s = state.hub.stats().await?;
    Ok(Json(json!({
        "subscribers": s.subscribers,
        "subscribed_topics": s.subscribed_topics,
        "events_stored": s.log.events,
        "oldest_event_id": s.log.oldest.map(|(_, id)| id),
        "newest_event_id": s.log.newest.map(|(_, id)| id),
        "published": s.published,
        "delivered": s.delivered,
        "slow_disconnects": s.slow_disconnects,
    }))
    .into_response())
}
