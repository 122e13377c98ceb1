//! JWT authorization as Mercure defines it. A publisher's token lists in `mercure.publish` the
//! topic selectors it may publish to; a subscriber's lists in `mercure.subscribe` the selectors
//! whose private events it may receive. Every path that hands out events (live stream, history
//! replay, late-joiner replay, polling) goes through the same `Interest::private_selectors`, so
//! the rule cannot be bypassed by choosing a different endpoint.
//!
//! Keys are pinned to one algorithm each: a token signed with another algorithm (`none`, or HMAC
//! against an RSA/EC key) is refused before its signature is looked at.

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use anyhow::{bail, Context};
use axum::http::{header, HeaderMap};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tidings_core::selector::Selector;

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
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            publisher: None,
            subscriber: None,
            anonymous: true,
            leeway: Duration::from_secs(5),
            cookie: DEFAULT_COOKIE.to_owned(),
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

/// What a valid token grants.
#[derive(Debug, Clone, Default)]
pub struct Grant {
    pub publish: Vec<Selector>,
    pub subscribe: Vec<Selector>,
    /// `exp`, seconds since the Unix epoch.
    pub expires_at: Option<u64>,
    /// `sub`: names the subscriber in the active-subscriptions API.
    pub subject: Option<String>,
    /// `mercure.payload`, as JSON text: shown with the subscriber's subscriptions.
    pub payload: Option<String>,
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    mercure: Option<MercureClaim>,
    exp: Option<u64>,
    sub: Option<String>,
}

#[derive(Deserialize, Default)]
struct MercureClaim {
    #[serde(default)]
    publish: Option<Vec<String>>,
    #[serde(default)]
    subscribe: Option<Vec<String>>,
    #[serde(default)]
    payload: Option<serde_json::Value>,
}

struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl Verifier {
    fn new(config: &KeyConfig, leeway: Duration) -> anyhow::Result<Self> {
        use jsonwebtoken::Algorithm::*;
        let pem = config.key.as_bytes();
        let key = match config.algorithm {
            HS256 | HS384 | HS512 => {
                if config.key.len() < 32 {
                    bail!("an HMAC JWT secret must be at least 32 bytes long");
                }
                DecodingKey::from_secret(pem)
            }
            RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => {
                DecodingKey::from_rsa_pem(pem).context("reading the RSA public key (PEM)")?
            }
            ES256 | ES384 => {
                DecodingKey::from_ec_pem(pem).context("reading the EC public key (PEM)")?
            }
            EdDSA => {
                DecodingKey::from_ed_pem(pem).context("reading the Ed25519 public key (PEM)")?
            }
            other => bail!("the JWT algorithm {other:?} is not supported"),
        };
        let mut validation = Validation::new(config.algorithm);
        validation.leeway = leeway.as_secs();
        validation.validate_nbf = true;
        validation.validate_aud = false;
        // Mercure tokens need not expire; when they carry `exp` it is enforced.
        validation.required_spec_claims = HashSet::new();
        Ok(Self { key, validation })
    }

    fn verify(&self, token: &str) -> Result<Grant, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|e| {
                AuthError::Invalid(match e.kind() {
                    ErrorKind::ExpiredSignature => "the token has expired",
                    ErrorKind::ImmatureSignature => "the token is not valid yet",
                    ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                        "the token's algorithm is not the one configured"
                    }
                    ErrorKind::InvalidSignature => "bad signature",
                    _ => "malformed token",
                })
            })?;
        let mercure = data.claims.mercure.unwrap_or_default();
        let selectors = |list: Option<Vec<String>>| -> Result<Vec<Selector>, AuthError> {
            list.unwrap_or_default()
                .iter()
                .map(|s| Selector::parse_topic(s))
                .collect::<Result<_, _>>()
                .map_err(|_| AuthError::Invalid("a selector in the mercure claim is invalid"))
        };
        Ok(Grant {
            publish: selectors(mercure.publish)?,
            subscribe: selectors(mercure.subscribe)?,
            expires_at: data.claims.exp,
            subject: data.claims.sub,
            payload: mercure.payload.map(|p| p.to_string()),
        })
    }
}

/// The authorization of one hub.
pub struct Auth {
    publisher: Option<Verifier>,
    subscriber: Option<Verifier>,
    anonymous: bool,
    cookie: String,
}

impl Auth {
    /// Builds the verifiers; fails on an unreadable key or a weak HMAC secret.
    pub fn new(config: &AuthConfig) -> anyhow::Result<Self> {
        Ok(Self {
            publisher: config
                .publisher
                .as_ref()
                .map(|k| Verifier::new(k, config.leeway))
                .transpose()
                .context("publisher JWT key")?,
            subscriber: config
                .subscriber
                .as_ref()
                .map(|k| Verifier::new(k, config.leeway))
                .transpose()
                .context("subscriber JWT key")?,
            anonymous: config.anonymous,
            cookie: config.cookie.clone(),
        })
    }

    /// Whether publishing is open to anyone (no publisher key configured).
    pub fn publishing_is_open(&self) -> bool {
        self.publisher.is_none()
    }

    /// The token of a request. Sources, first found wins: the `Authorization: Bearer` header,
    /// the `authorization` query parameter (browsers' `EventSource` cannot set headers), then the
    /// cookie (the configured name, then the newer draft's name).
    pub fn token<'a>(
        &self,
        headers: &'a HeaderMap,
        query_token: Option<&'a str>,
    ) -> Option<&'a str> {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        bearer.or(query_token).or_else(|| {
            headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|pair| pair.trim().split_once('='))
                .find(|(name, _)| *name == self.cookie || *name == DRAFT_COOKIE)
                .map(|(_, value)| value)
        })
    }

    /// Checks a publisher: `Ok(None)` in the open development mode, the grant otherwise.
    pub fn publisher(&self, token: Option<&str>) -> Result<Option<Grant>, AuthError> {
        let Some(verifier) = &self.publisher else {
            return Ok(None);
        };
        verifier.verify(token.ok_or(AuthError::Missing)?).map(Some)
    }

    /// Checks a subscriber: the grant of its token, or an empty grant when it has none and
    /// anonymous subscribers are allowed.
    pub fn subscriber(&self, token: Option<&str>) -> Result<Grant, AuthError> {
        match (&self.subscriber, token) {
            (Some(verifier), Some(token)) => verifier.verify(token),
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
