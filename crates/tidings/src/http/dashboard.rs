//! The hub's live dashboard at `GET /`: a page of plain ES modules and CSS, embedded in the
//! binary (no CDN, no build step but the client bundle), served under `/dashboard/`. The page
//! holds no data itself: it reads `/stats`, `/healthz` and `/dashboard/info.json`, subscribes
//! with the operator's token through the embedded client (`/dashboard/tidings.js`, which pages
//! without a bundler may import too) and publishes test events with it. See SECURITY.md.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::error::ApiError;
use super::AppState;

/// The page itself.
const INDEX: &str = include_str!("dashboard/index.html");

/// The assets under `/dashboard/`: name, content type, body.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/app.js"),
    ),
    (
        "chart.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/chart.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("dashboard/app.css"),
    ),
    // The client, bundled by `npm run build` in clients/js (a test checks it is fresh).
    (
        "tidings.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/tidings.js"),
    ),
];

/// Scripts and styles only from the hub itself; the page may not be framed.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/// The dashboard's routes: `/`, `/dashboard/info.json` and `/dashboard/{asset}`.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(index))
        .route("/dashboard/info.json", get(info))
        .route("/dashboard/{file}", get(asset))
}

/// `GET /`: the dashboard page.
async fn index() -> Response {
    page("text/html; charset=utf-8", INDEX)
}

/// `GET /dashboard/{file}`: an embedded asset; 404 for any other name.
async fn asset(Path(file): Path<String>) -> Result<Response, ApiError> {
    ASSETS
        .iter()
        .find(|(name, _, _)| *name == file)
        .map(|(_, kind, body)| page(kind, body))
        .ok_or_else(|| ApiError::NotFound(format!("no such dashboard asset: {file}")))
}

/// `GET /dashboard/info.json`: what the page must know before it asks for a token: whether the
/// hub runs in the open development mode (no publisher key), so the page can say so.
async fn info(State(state): State<Arc<AppState>>) -> Response {
    let open = state.auth.publishing_is_open();
    let mut response = Json(json!({
        "open": open,
        "version": env!("CARGO_PKG_VERSION"),
    }))
    .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn page(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}
