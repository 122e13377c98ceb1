//! The one error type of the HTTP layer, and the only place status codes are chosen. Client
//! errors answer a one-line reason; internal causes are logged and never leaked.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use tidings_core::event::EventError;
use tidings_core::hub::HubError;
use tidings_core::log::LogError;
use tidings_core::selector::SelectorError;

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
    #[error("the hub is shutting down")]
    ShuttingDown,
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
            Self::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
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
        let mut response = (
            self.status(),
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            reason,
        )
            .into_response();
        let challenge = match &self {
            Self::Unauthorized(_) => Some("Bearer error=\"invalid_token\""),
            Self::Forbidden(_) => Some("Bearer error=\"insufficient_scope\""),
            _ => None,
        };
        if let Some(challenge) = challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static(challenge),
            );
        }
        response
    }
}
