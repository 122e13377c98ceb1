//! The HTTP surface: one route group per file, merged here.

use std::sync::Arc;

use axum::handler::Handler;
use axum::http::{header, HeaderName, Method, Uri};
use axum::routing::{get, post};
use axum::Router;
use tidings_core::hub::Hub;

use crate::auth::Auth;
use error::ApiError;
pub use limits::Limits;

pub mod admin;
pub mod cors;
pub mod dashboard;
pub mod error;
pub mod form;
pub mod host;
pub mod json;
pub mod limits;
pub mod metadata;
pub mod metrics;
pub mod poll;
pub mod presence;
pub mod publish;
pub mod rate;
pub mod subscribe;

/// What every handler shares.
pub struct AppState {
    pub hub: Arc<Hub>,
    pub limits: Limits,
    pub auth: Auth,
    /// Publish Mercure subscription events when streams start and end.
    pub subscription_events: bool,
    /// The publish rate per publisher, when one is set.
    pub publish_rate: Option<rate::RateLimiter>,
    /// With subscription events and a publish rate: how many streams (each writing durable
    /// subscription events) a client address may start, at the publish rate, in buckets of
    /// their own.
    pub subscription_rate: Option<rate::RateLimiter>,
    /// Origins allowed to call the hub from a browser; a publish authorized by a cookie must
    /// come from the hub's own origin or one of these.
    pub cors: cors::CorsOrigins,
    /// The configured webhooks, served at `/webhooks/{name}`.
    pub webhooks: crate::ingest::Webhooks,
    /// Compiled pattern selectors, shared by every subscription that sends the same one.
    pub selectors: tidings_core::selector::SelectorCache,
    /// What the live subscriptions of each client address hold.
    pub selector_budget: Arc<crate::net::SelectorBudget>,
    /// The open connections (counted by the accept loop).
    pub connections: Arc<crate::net::ConnectionLimits>,
    /// Access to `/metrics` and `/stats`, readiness.
    pub ops: admin::OpsConfig,
}

/// The Mercure discovery header, relative to the request's origin.
pub fn link_header() -> (HeaderName, &'static str) {
    (header::LINK, "</.well-known/mercure>; rel=\"mercure\"")
}

/// All routes.
///
/// A middleware that could only pass a request through is left out altogether (the publish
/// rate without `--publish-rate`, the metadata challenge without `--jwt-audience`): every layer
/// costs each request a boxed future and a clone of the service it wraps.
pub fn router(state: Arc<AppState>) -> Router {
    let (mercure, by_path) = (get(subscribe::subscribe), get(subscribe::subscribe_to_path));
    let (mercure, by_path) = if state.publish_rate.is_some() {
        let rate = axum::middleware::from_fn_with_state(state.clone(), rate::limit_publish);
        (
            mercure.post(publish::publish.layer(rate.clone())),
            by_path.post(publish::publish_to_path.layer(rate)),
        )
    } else {
        (
            mercure.post(publish::publish),
            by_path.post(publish::publish_to_path),
        )
    };
    let ops_token = axum::middleware::from_fn_with_state(state.clone(), admin::require_ops_token);
    let mut router = Router::new()
        .route("/.well-known/mercure", mercure)
        .route(presence::PREFIX, get(presence::all))
        .route(
            "/.well-known/mercure/subscriptions/{topic}",
            get(presence::by_topic),
        )
        .route(
            "/.well-known/mercure/subscriptions/{topic}/{subscriber}",
            get(presence::pair),
        )
        .route(
            "/.well-known/mercure/subscriptions/{match_type}/{match}/{subscriber}",
            get(presence::draft_one),
        )
        .route("/events", get(poll::poll))
        .route("/events/{*topic}", by_path)
        .route("/webhooks/{name}", post(crate::ingest::receive))
        .route("/healthz", get(admin::healthz))
        .route("/readyz", get(admin::readyz))
        .route("/stats", get(admin::stats.layer(ops_token.clone())))
        .route("/metrics", get(metrics::metrics.layer(ops_token)))
        .route(
            "/.well-known/oauth-protected-resource/{*path}",
            get(metadata::document),
        )
        .merge(dashboard::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    if let Some(url) = state.auth.audience().and_then(metadata::metadata_url) {
        router = router.layer(axum::middleware::from_fn_with_state(
            Arc::<str>::from(url),
            metadata::challenge,
        ));
    }
    router.with_state(state)
}

/// Wraps `router` in the browser and network edges: CORS, then (outermost) the Host check (one
/// Host header, and on the allow-list when there is one), so a request for a foreign host is
/// refused before anything else looks at it.
pub fn with_edges(
    mut router: Router,
    cors: &cors::CorsOrigins,
    allowed_hosts: Option<host::AllowedHosts>,
) -> Router {
    if let Some(cors) = cors.layer() {
        router = router.layer(cors);
    }
    router.layer(axum::middleware::from_fn_with_state(
        allowed_hosts.map(Arc::new),
        host::check_host,
    ))
}

/// The answer to a path no route serves.
async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no such endpoint: {}", uri.path()))
}

/// The answer to a method a route does not serve (axum adds the `Allow` header).
async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::MethodNotAllowed(method)
}
