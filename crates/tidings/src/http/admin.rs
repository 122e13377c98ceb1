//! Operations endpoints: `GET /healthz` and `GET /stats`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::error::ApiError;
use super::AppState;

/// `GET /healthz`: 200 when the store answers, 503 otherwise.
pub async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    match state.hub.stats().await {
        Ok(_) => Json(json!({ "status": "ok" })).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "health check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "degraded", "reason": "the event store does not answer" })),
            )
                .into_response()
        }
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
