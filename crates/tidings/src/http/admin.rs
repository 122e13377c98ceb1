//! Operations endpoints: `GET /healthz` (alive), `GET /readyz` (ready for traffic), `GET /stats`
//! (and `GET /metrics`, in [`super::metrics`]), with the optional token that guards the last two.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::error::ApiError;
use super::AppState;

/// How the hub serves its operators.
#[derive(Clone, PartialEq, Eq)]
pub struct OpsConfig {
    /// When set, `/metrics` and `/stats` answer only requests bearing this token.
    pub metrics_token: Option<String>,
    /// `/readyz` answers 503 once this node's fan-out has stayed behind the log's head, without
    /// moving, for longer than this.
    pub ready_stall: Duration,
}

impl std::fmt::Debug for OpsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpsConfig")
            .field("metrics_token", &self.metrics_token.as_ref().map(|_| "***"))
            .field("ready_stall", &self.ready_stall)
            .finish()
    }
}

impl Default for OpsConfig {
    fn default() -> Self {
        Self {
            metrics_token: None,
            ready_stall: Duration::from_secs(10),
        }
    }
}

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
        Some(reason) => unavailable("degraded", &reason),
    }
}

fn unavailable(status: &str, reason: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({ "status": status, "reason": reason })),
    )
        .into_response()
}

/// `GET /readyz`: 200 `{"status":"ready","lag":N}` when this node can serve subscribers: the
/// store answers, its links are up, and its delivery follows the log (it may lag, but it moves).
/// 503 `{"status":"unready","reason":...}` when not, in particular when the log's head moved on
/// and this node's fan-out has not followed for longer than `--ready-stall`: a node that stopped
/// delivering (after a failover, say) while its health stays green.
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let (lag, stalled) = match state.hub.lag().await {
        Ok(lag) => lag,
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            return unavailable("unready", "the event store does not answer");
        }
    };
    if let Err(reason) = state.hub.store_health() {
        return unavailable("unready", &reason);
    }
    if lag > 0 && stalled > state.ops.ready_stall {
        let reason = format!(
            "delivery is stalled: {lag} committed events not delivered by this node for {}s",
            stalled.as_secs()
        );
        tracing::warn!(
            lag,
            stalled_secs = stalled.as_secs(),
            "not ready: delivery stalled"
        );
        return unavailable("unready", &reason);
    }
    Json(json!({ "status": "ready", "lag": lag })).into_response()
}

/// `GET /stats`: subscribers, topics, stored events and counters.
pub async fn stats(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let s = state.hub.stats().await?;
    let m = state.hub.metrics();
    use tidings_core::metrics::Transport;
    Ok(Json(json!({
        "subscribers": s.subscribers,
        "subscribed_topics": s.subscribed_topics,
        "events_stored": s.log.events,
        "oldest_event_id": s.log.oldest.map(|(_, id)| id),
        "newest_event_id": s.log.newest.map(|(_, id)| id),
        "published": s.published,
        "delivered": s.delivered,
        "slow_disconnects": s.slow_disconnects,
        "streams": m.subscribers(Transport::Stream),
        "polls": m.subscribers(Transport::Poll),
        "connections": state.connections.open(),
    }))
    .into_response())
}

/// Guards `/metrics` and `/stats` with `--metrics-token` when one is set: the request must carry
/// `Authorization: Bearer TOKEN` ([`crate::ingest::verify::bearer_matches`]).
pub async fn require_ops_token(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if let Some(token) = &state.ops.metrics_token {
        if !crate::ingest::verify::bearer_matches(request.headers(), token.as_bytes()) {
            return Err(ApiError::OpsToken);
        }
    }
    Ok(next.run(request).await)
}
