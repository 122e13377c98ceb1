//! JWT authorization as Mercure defines it. A publisher's token lists in `mercure.publish` the
//! topic selectors it may publish to; a subscriber's lists in `mercure.subscribe` the selectors
//! whose private events it may receive. Every path that hands out events (live stream, history
//! replay, late-joiner replay, polling) goes through the same `Interest::private_selectors`, so
//! the rule cannot be bypassed by choosing a different endpoint.
//!
//! Keys are pinned to one algorithm each: a token signed with another algorithm (`none`, or HMAC
//! against an RSA/EC key) is refused before its signature is looked at.

use std::fmt;
use std::time::Duration;

use anyhow::{bail, Context};
use axum::http::{header, HeaderMap};
use jsonwebtoken::Algorithm;

mod claims;
mod keys;

pub use claims::{Grant, DEFAULT_BASE, DETAIL_TYPES};
pub(crate) use keys::check_hmac_secret;
use keys::Verifier;

/// The stable Mercure line's cookie name.
pub const DEFAULT_COOKIE: &str = "mercureAuthorization";
/// The newer Mercure draft's cookie name, accepted too.
pub const DRAFT_COOKIE: &str = "__Secure-mercure_access_token";

/// A verification key and its pinned algorithm. The key material never appears in Debug output.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyConfig {
    pub algorithm: Algorithm,
    /// An HMAC secret, or a PEM public key (RSA, EC or Ed25519, to match `algorithm`).
    pub key: String,
    /// When set, keys come from this JWKS document (a file path or an http(s) URL), chosen by
    /// the token's `kid` and fetched again when a `kid` is unknown; `key` is then unused.
    pub jwks: Option<String>,
}

impl fmt::Debug for KeyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyConfig")
            .field("algorithm", &self.algorithm)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Authorization settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// Verifies publishers' tokens; `None` is the unauthenticated development mode.
    pub publisher: Option<KeyConfig>,
    /// Verifies subscribers' tokens; `None`: every subscriber is anonymous.
    pub subscriber: Option<KeyConfig>,
    /// Whether subscribers without a token may receive public events.
    pub anonymous: bool,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// The cookie a token may come in (the draft's `__Secure-mercure_access_token` is read too).
    pub cookie: String,
    /// The hub's resource identifier: required in the `aud` of 1.0-draft access tokens (which
    /// are refused without it), and checked in a stable-line token that carries `aud`.
    pub audience: Option<String>,
    /// When set, an access token's `iss` must be this (and a stable-line token's, if it has one).
    pub issuer: Option<String>,
    /// Whether stable-line tokens (the `mercure` claim, no `typ: at+jwt`) are accepted beside
    /// access tokens.
    pub legacy_tokens: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            publisher: None,
            subscriber: None,
            anonymous: true,
            leeway: Duration::from_secs(5),
            cookie: DEFAULT_COOKIE.to_owned(),
            audience: None,
            issuer: None,
            legacy_tokens: true,
        }
    }
}

/// Parses an algorithm name such as `HS256` or `RS256`; `none` is refused.
pub fn parse_algorithm(s: &str) -> anyhow::Result<Algorithm> {
    if s.eq_ignore_ascii_case("none") {
        bail!("the JWT algorithm \"none\" is not allowed");
    }
    s.parse::<Algorithm>().map_err(|_| {
        anyhow::anyhow!("unknown JWT algorithm {s:?} (e.g. HS256, RS256, ES256, EdDSA)")
    })
}

/// Why a request's token was refused (answered 401); the reason is safe to show.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("authorization required: send a bearer token")]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(&'static str),
}

/// The authorization of one hub.
pub struct Auth {
    publisher: Option<Verifier>,
    subscriber: Option<Verifier>,
    anonymous: bool,
    cookie: String,
    audience: Option<String>,
}

impl Auth {
    /// Builds the verifiers (loading JWKS documents); fails on an unreadable key or a weak
    /// HMAC secret.
    pub async fn new(config: &AuthConfig) -> anyhow::Result<Self> {
        let verifier = |key: &Option<KeyConfig>| {
            let key = key.clone();
            async move {
                match key {
                    Some(k) => Verifier::new(&k, config).await.map(Some),
                    None => Ok(None),
                }
            }
        };
        Ok(Self {
            publisher: verifier(&config.publisher)
                .await
                .context("publisher JWT key")?,
            subscriber: verifier(&config.subscriber)
                .await
                .context("subscriber JWT key")?,
            anonymous: config.anonymous,
            cookie: config.cookie.clone(),
            audience: config.audience.clone(),
        })
    }

    /// The hub's resource identifier (`--jwt-audience`), when configured.
    pub fn audience(&self) -> Option<&str> {
        self.audience.as_deref()
    }

    /// Whether publishing is open to anyone (no publisher key configured).
    pub fn publishing_is_open(&self) -> bool {
        self.publisher.is_none()
    }

    /// Whether no subscriber key is configured, so no subscriber token can be verified (the
    /// open development mode's presence API is then open too).
    pub fn subscribing_is_open(&self) -> bool {
        self.subscriber.is_none()
    }

    /// The token of a request. Sources, first found wins: the `Authorization: Bearer` header,
    /// the `authorization` query parameter (browsers' `EventSource` cannot set headers), then the
    /// cookie (the configured name, then the newer draft's name).
    pub fn token<'a>(
        &self,
        headers: &'a HeaderMap,
        query_token: Option<&'a str>,
    ) -> Option<&'a str> {
        // Any Authorization header counts: one that is not a bearer token is passed on whole and
        // fails verification, rather than falling back to anonymous.
        let bearer = headers.get(header::AUTHORIZATION).map(|v| {
            let v = v.to_str().unwrap_or("\u{0}");
            match v.get(..7) {
                Some(scheme) if scheme.eq_ignore_ascii_case("bearer ") => v[7..].trim(),
                _ => v,
            }
        });
        let cookie = |wanted: &str| {
            headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|pair| pair.trim().split_once('='))
                .find(|(name, _)| *name == wanted)
                .map(|(_, value)| value)
        };
        bearer
            .or(query_token)
            .or_else(|| cookie(&self.cookie))
            .or_else(|| cookie(DRAFT_COOKIE))
    }

    /// Checks a publisher: `Ok(None)` in the open development mode, the grant otherwise.
    pub async fn publisher(&self, token: Option<&str>) -> Result<Option<Grant>, AuthError> {
        let Some(verifier) = &self.publisher else {
            return Ok(None);
        };
        verifier
            .verify(token.ok_or(AuthError::Missing)?)
            .await
            .map(Some)
    }

    /// Checks a subscriber: the grant of its token, or an empty grant when it has none and
    /// anonymous subscribers are allowed.
    pub async fn subscriber(&self, token: Option<&str>) -> Result<Grant, AuthError> {
        match (&self.subscriber, token) {
            (Some(verifier), Some(token)) => verifier.verify(token).await,
            (_, None) if self.anonymous => Ok(Grant::default()),
            (_, None) => Err(AuthError::Missing),
            // A token the hub cannot verify is refused rather than ignored.
            (None, Some(_)) => Err(AuthError::Invalid(
                "this hub does not accept subscriber tokens",
            )),
        }
    }
}

/// Whether `grant` covers every topic: each must match one of its publish selectors.
pub fn may_publish(grant: &Grant, topics: &[tidings_core::event::Topic]) -> bool {
    topics
        .iter()
        .all(|t| grant.publish.iter().any(|s| s.matches(t.as_str())))
}
