//! Adapters that turn outside input into events. Webhooks: `POST /webhooks/{name}` verifies a
//! delivery against its configured scheme ([`verify`]), maps its JSON payload to an event
//! ([`mapping`]) with an id derived from the delivery id, and publishes it through the hub like
//! any other event. The sender is answered `2xx` only once the event is durable; a retried
//! delivery finds its id already stored and is answered `2xx` again without a second event.

pub mod mapping;
pub mod verify;
pub mod webhook;

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use tidings_core::hub::HubError;
use tidings_core::log::LogError;

pub use webhook::{IngestError, Webhook, WebhookConfig, Webhooks};

use crate::http::error::ApiError;
use crate::http::AppState;

/// `POST /webhooks/{name}`: answers `{"id": ..., "duplicate": false}` once the event is stored,
/// or `"duplicate": true` when a delivery with the same id was stored before.
pub async fn receive(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let webhook = state
        .webhooks
        .get(&name)
        .ok_or_else(|| ApiError::NotFound(format!("no webhook named {name:?}")))?;
    let body = crate::http::publish::read_body(body, &state.limits).await?;
    let event = webhook
        .event(&headers, &body, SystemTime::now())
        .inspect_err(
            |e| tracing::info!(webhook = %name, reason = %e, "webhook delivery refused"),
        )?;
    crate::http::publish::refuse_reserved_topics(std::slice::from_ref(&event))?;
    let answer = |id: &str, duplicate: bool| {
        axum::Json(serde_json::json!({ "id": id, "duplicate": duplicate })).into_response()
    };
    match state.hub.publish(vec![event]).await {
        Ok(events) => {
            let id = events.first().map(|e| e.id.as_str()).unwrap_or_default();
            tracing::debug!(webhook = %name, id, "webhook delivery stored");
            Ok(answer(id, false))
        }
        // The log's unique ids make a retried delivery a no-op: it is already stored.
        Err(HubError::Log(LogError::DuplicateId(id))) => {
            tracing::debug!(webhook = %name, id, "webhook delivery already stored");
            Ok(answer(&id, true))
        }
        Err(e) => Err(e.into()),
    }
}
