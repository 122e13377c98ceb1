//! OAuth 2.0 Protected Resource Metadata (RFC 9728), as the Mercure 1.0 draft asks of a hub:
//! the document at the path derived from the hub's resource identifier (for
//! `https://hub.example.com/.well-known/mercure`,
//! `/.well-known/oauth-protected-resource/.well-known/mercure`), and the `resource_metadata`
//! parameter added to every `WWW-Authenticate: Bearer` challenge, so a client can discover the
//! audience its tokens need. Both exist only when `--jwt-audience` is set.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::ApiError;
use super::AppState;
use crate::auth::DRAFT_COOKIE;

/// The well-known prefix of RFC 9728.
pub const PREFIX: &str = "/.well-known/oauth-protected-resource";

/// Where the metadata of `resource` lives: the well-known prefix inserted between its origin and
/// its path (RFC 9728 section 3.1). `None` when `resource` is not an absolute http(s) URL.
pub fn metadata_url(resource: &str) -> Option<String> {
    let (scheme, rest) = resource.split_once("://")?;
    if scheme != "https" && scheme != "http" {
        return None;
    }
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = path
        .split(['?', '#'])
        .next()
        .unwrap_or("")
        .trim_end_matches('/');
    Some(format!("{scheme}://{authority}{PREFIX}{path}"))
}

/// The path part of [`metadata_url`] after the prefix, e.g. `/.well-known/mercure`.
fn resource_path(resource: &str) -> Option<String> {
    let url = metadata_url(resource)?;
    let at = url.find(PREFIX)? + PREFIX.len();
    Some(url[at..].to_owned())
}

/// `GET /.well-known/oauth-protected-resource/{*path}`.
pub async fn document(
    State(state): State<Arc<AppState>>,
    Path(path): Path<String>,
) -> Result<Response, ApiError> {
    let resource = state.auth.audience().filter(|resource| {
        resource_path(resource).is_some_and(|p| p.trim_start_matches('/') == path)
    });
    let Some(resource) = resource else {
        return Err(ApiError::NotFound(
            "no protected-resource metadata here (see --jwt-audience)".into(),
        ));
    };
    let mut doc = json!({
        "resource": resource,
        "authorization_details_types_supported": crate::auth::DETAIL_TYPES,
        "bearer_methods_supported": ["header", "query"],
        "mercure_cookie": true,
        "mercure_cookie_name": DRAFT_COOKIE,
    });
    if state.subscription_events {
        doc["mercure_subscriptions"] = true.into();
    }
    Ok(axum::Json(doc).into_response())
}

/// Adds `resource_metadata` (`url`: the hub's [`metadata_url`]) to a response's
/// `WWW-Authenticate: Bearer` challenge.
pub async fn challenge(State(url): State<Arc<str>>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let Some(current) = response
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.starts_with("Bearer"))
    else {
        return response;
    };
    let param = format!("resource_metadata=\"{url}\"");
    let value = match current.strip_prefix("Bearer").map(str::trim) {
        Some("") | None => format!("Bearer {param}"),
        Some(params) => format!("Bearer {params}, {param}"),
    };
    if let Ok(value) = HeaderValue::from_str(&value) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metadata_url_inserts_the_well_known_prefix() {
        assert_eq!(
            metadata_url("https://hub.example.com/.well-known/mercure").as_deref(),
            Some(
                "https://hub.example.com/.well-known/oauth-protected-resource/.well-known/mercure"
            )
        );
        assert_eq!(
            metadata_url("https://hub.example.com").as_deref(),
            Some("https://hub.example.com/.well-known/oauth-protected-resource")
        );
        assert_eq!(metadata_url("urn:hub"), None);
    }
}
