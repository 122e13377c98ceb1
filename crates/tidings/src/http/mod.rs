//! The HTTP surface: one route group per file, merged here.

use std::sync::Arc;

use axum::http::{header, HeaderName};
use axum::routing::get;
use axum::Router;
use tidings_core::hub::Hub;

use crate::auth::Auth;
use crate::config::Limits;

pub mod admin;
pub mod error;
pub mod form;
pub mod poll;
pub mod presence;
pub mod publish;
pub mod subscribe;

/// What every handler shares.
pub struct AppState {
    pub hub: Arc<Hub>,
    pub limits: Limits,
    pub auth: Auth,
    /// Publish Mercure subscription events when streams start and end.
    pub subscription_events: bool,
}

/// The Mercure discovery header, relative to the request's origin.
pub fn link_header() -> (HeaderName, &'static str) {
    (header::LINK, "</.well-known/mercure>; rel=\"mercure\"")
}

/// All routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/.well-known/mercure",
            get(subscribe::subscribe).post(publish::publish),
        )
        .route(presence::PREFIX, get(presence::all))
        .route(
            "/.well-known/mercure/subscriptions/{topic}",
            get(presence::by_topic),
        )
        .route(
            "/.well-known/mercure/subscriptions/{topic}/{subscriber}",
            get(presence::one),
        )
        .route("/events", get(poll::poll))
        .route(
            "/events/{*topic}",
            get(subscribe::subscribe_to_path).post(publish::publish_to_path),
        )
        .route("/healthz", get(admin::healthz))
        .route("/stats", get(admin::stats))
        .with_state(state)
}
