//! The one error type of the HTTP layer, and the only place status codes are chosen. Client
//! errors answer a one-line reason; internal causes are logged and never leaked.

use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use tidings_core::event::EventError;
use tidings_core::hub::HubError;
use tidings_core::log::LogError;
use tidings_core::selector::SelectorError;

use crate::ingest::IngestError;

/// See the module documentation.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("request body is larger than {0} bytes")]
    TooLarge(usize),
    #[error(
        "unsupported Content-Type {0:?}; use application/x-www-form-urlencoded or application/json"
    )]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Unauthorized(#[from] crate::auth::AuthError),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("this path does not answer {0}; see the Allow header")]
    MethodNotAllowed(axum::http::Method),
    /// A webhook delivery whose signature, timestamp or token does not verify.
    #[error("{0}")]
    Unverified(String),
    /// Well-formed input the hub cannot place (a webhook payload its mapping cannot use).
    #[error("{0}")]
    Unprocessable(String),
    #[error("the request body did not arrive in time")]
    BodyTimeout,
    #[error("the hub is shutting down")]
    ShuttingDown,
    #[error("this hub does not serve the host {0:?}")]
    MisdirectedHost(String),
    #[error("the hub has too many open connections; retry later")]
    TooManyConnections { retry_after: Duration },
    #[error("too many open connections from your address; close one or retry later")]
    TooManyClientConnections { retry_after: Duration },
    /// A subscription whose selectors would take its address past a per-address limit.
    #[error("{0}")]
    ClientSelectorLimit(String),
    #[error("publish rate limit reached; retry after the time in Retry-After")]
    RateLimited { retry_after: Duration },
    /// Each stream writes subscription events, so streams count against the publish rate.
    #[error(
        "too many new streams from your address (each one publishes subscription events); \
         retry after the time in Retry-After"
    )]
    SubscriptionRateLimited { retry_after: Duration },
    /// `/metrics` or `/stats` without the operators' token (`--metrics-token`).
    #[error(
        "this endpoint needs the metrics token: send Authorization: Bearer TOKEN (--metrics-token)"
    )]
    OpsToken,
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn bad(reason: impl Into<String>) -> Self {
        Self::BadRequest(reason.into())
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unverified(_) | Self::OpsToken => StatusCode::UNAUTHORIZED,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Self::MisdirectedHost(_) => StatusCode::MISDIRECTED_REQUEST,
            Self::TooManyConnections { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::TooManyClientConnections { .. }
            | Self::RateLimited { .. }
            | Self::SubscriptionRateLimited { .. }
            | Self::ClientSelectorLimit(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<EventError> for ApiError {
    fn from(e: EventError) -> Self {
        Self::BadRequest(e.to_string())
    }
}

impl From<SelectorError> for ApiError {
    fn from(e: SelectorError) -> Self {
        Self::BadRequest(e.to_string())
    }
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::Unverified(e) => Self::Unverified(e.to_string()),
            IngestError::Unmappable(e) => Self::Unprocessable(e.to_string()),
            IngestError::NotJson(_)
            | IngestError::MissingDeliveryId(_)
            | IngestError::BadDeliveryId(_) => Self::BadRequest(e.to_string()),
        }
    }
}

impl From<HubError> for ApiError {
    fn from(e: HubError) -> Self {
        match e {
            HubError::ShuttingDown | HubError::Log(LogError::Closed) => Self::ShuttingDown,
            HubError::Log(LogError::DuplicateId(id)) => {
                Self::Conflict(format!("an event with id {id:?} already exists"))
            }
            HubError::Log(e) => Self::Internal(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(cause) = &self {
            tracing::error!(%cause, "request failed");
        }
        let mut reason = self.to_string();
        reason.retain(|c| c != '\n' && c != '\r');
        reason.push('\n');
        // Every answer carries the Mercure discovery header, refusals included.
        let mut response = (
            self.status(),
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                super::link_header(),
            ],
            reason,
        )
            .into_response();
        let challenge = match &self {
            // RFC 6750: no error code when the request carried no credentials.
            Self::Unauthorized(crate::auth::AuthError::Missing) => Some("Bearer"),
            Self::Unauthorized(_) => Some("Bearer error=\"invalid_token\""),
            Self::Forbidden(_) => Some("Bearer error=\"insufficient_scope\""),
            Self::OpsToken => Some("Bearer"),
            _ => None,
        };
        if let Self::TooManyConnections { retry_after }
        | Self::TooManyClientConnections { retry_after }
        | Self::RateLimited { retry_after }
        | Self::SubscriptionRateLimited { retry_after } = &self
        {
            // Whole seconds, rounded up: a client that waits that long finds room.
            let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, seconds.max(1).into());
        }
        if let Self::TooLarge(_) = &self {
            // The body may still be on its way, unread: this connection serves no other request
            // (the accept loop drains what arrives before closing it), and the client must not
            // send one on it.
            response.headers_mut().insert(
                header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        if let Some(challenge) = challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static(challenge),
            );
        }
        response
    }
}
