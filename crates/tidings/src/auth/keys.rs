//! Token verification: one pinned algorithm per role, a static key or a JWKS document.
//!
//! The algorithm comes from configuration, never from the token: a token whose header names
//! another algorithm (`none`, or HMAC against an RSA/EC key) is refused before any key is used.
//! JWKS keys are chosen by `kid`; an unknown `kid` fetches the document again (the first time at
//! once, then at most once per [`JWKS_REFRESH`], so forged `kid`s cannot hammer the issuer).

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;

use super::claims::{Claims, Grant};
use super::{AuthConfig, AuthError, KeyConfig};

/// Shortest interval between two fetches of a JWKS document.
pub const JWKS_REFRESH: Duration = Duration::from_secs(30);

enum Keys {
    Static(DecodingKey),
    Jwks(Jwks),
}

struct Jwks {
    source: String,
    keys: RwLock<HashMap<String, DecodingKey>>,
    /// When an unknown `kid` last made us fetch the document (`None`: never).
    fetched: tokio::sync::Mutex<Option<Instant>>,
}

impl Jwks {
    async fn load(source: &str) -> anyhow::Result<HashMap<String, DecodingKey>> {
        let text = if source.starts_with("http://") || source.starts_with("https://") {
            reqwest::Client::new()
                .get(source)
                .timeout(Duration::from_secs(10))
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .with_context(|| format!("fetching the JWKS at {source}"))?
                .text()
                .await?
        } else {
            tokio::fs::read_to_string(source)
                .await
                .with_context(|| format!("reading the JWKS file {source}"))?
        };
        let set: JwkSet = serde_json::from_str(&text).context("parsing the JWKS document")?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = &jwk.common.key_id else {
                continue;
            };
            if let Ok(key) = DecodingKey::from_jwk(jwk) {
                keys.insert(kid.clone(), key);
            }
        }
        if keys.is_empty() {
            bail!("the JWKS at {source} has no usable key with a kid");
        }
        Ok(keys)
    }

    fn get(&self, kid: &str) -> Option<DecodingKey> {
        self.keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(kid)
            .cloned()
    }

    async fn key(&self, kid: &str) -> Option<DecodingKey> {
        if let Some(key) = self.get(kid) {
            return Some(key);
        }
        let mut fetched = self.fetched.lock().await;
        if fetched.is_none_or(|at| at.elapsed() >= JWKS_REFRESH) {
            *fetched = Some(Instant::now());
            match Self::load(&self.source).await {
                Ok(keys) => *self.keys.write().unwrap_or_else(|p| p.into_inner()) = keys,
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "JWKS refresh failed"),
            }
        }
        drop(fetched);
        self.get(kid)
    }
}

/// Verifies one role's tokens.
pub(super) struct Verifier {
    keys: Keys,
    algorithm: Algorithm,
    validation: Validation,
    audience: Option<String>,
    issuer: Option<String>,
    /// Whether stable-line (`mercure` claim) tokens are accepted.
    legacy_tokens: bool,
    /// What relative URL patterns in tokens resolve against: the resource identifier when it
    /// is a URL.
    base: String,
}

impl Verifier {
    pub(super) async fn new(key: &KeyConfig, config: &AuthConfig) -> anyhow::Result<Self> {
        let keys = match &key.jwks {
            Some(source) => Keys::Jwks(Jwks {
                keys: RwLock::new(Jwks::load(source).await?),
                source: source.clone(),
                fetched: tokio::sync::Mutex::new(None),
            }),
            None => Keys::Static(static_key(key)?),
        };
        let mut validation = Validation::new(key.algorithm);
        validation.leeway = config.leeway.as_secs();
        validation.validate_nbf = true;
        // Audience and issuer are checked below, with the rules of each token generation.
        validation.validate_aud = false;
        // Stable-line tokens need not expire; when they carry `exp` it is enforced.
        validation.required_spec_claims = HashSet::new();
        Ok(Self {
            keys,
            algorithm: key.algorithm,
            validation,
            audience: config.audience.clone(),
            issuer: config.issuer.clone(),
            legacy_tokens: config.legacy_tokens,
            base: config
                .audience
                .as_deref()
                .filter(|a| a.starts_with("https://") || a.starts_with("http://"))
                .unwrap_or(super::claims::DEFAULT_BASE)
                .to_owned(),
        })
    }

    pub(super) async fn verify(&self, token: &str) -> Result<Grant, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| AuthError::Invalid("malformed token"))?;
        if header.alg != self.algorithm {
            return Err(AuthError::Invalid(
                "the token's algorithm is not the one configured",
            ));
        }
        let key = match &self.keys {
            Keys::Static(key) => key.clone(),
            Keys::Jwks(jwks) => {
                let kid = header
                    .kid
                    .as_deref()
                    .ok_or(AuthError::Invalid("the token has no kid"))?;
                jwks.key(kid)
                    .await
                    .ok_or(AuthError::Invalid("unknown kid"))?
            }
        };
        let data = jsonwebtoken::decode::<Value>(token, &key, &self.validation).map_err(|e| {
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
        let raw = data.claims;
        // RFC 7519: a token is expired from its `exp` on (jsonwebtoken accepts the `exp` second).
        if let Some(exp) = raw.get("exp").and_then(Value::as_u64) {
            let now = jsonwebtoken::get_current_timestamp();
            if exp.saturating_add(self.validation.leeway) <= now {
                return Err(AuthError::Invalid("the token has expired"));
            }
        }
        // Read in place: `raw` is still needed for `aud`, `exp` and `iss` below.
        let claims =
            Claims::deserialize(&raw).map_err(|_| AuthError::Invalid("malformed claims"))?;
        let typ = header.typ.as_deref().unwrap_or("");
        let typed_access =
            typ.eq_ignore_ascii_case("at+jwt") || typ.eq_ignore_ascii_case("application/at+jwt");
        if typed_access || claims.is_access_token() {
            // RFC 9068, as the 1.0 draft profiles it: typed as an access token, bound to this
            // hub by `aud`, expiring, and from the configured issuer when there is one.
            if !typed_access {
                return Err(AuthError::Invalid("an access token must have typ at+jwt"));
            }
            let Some(audience) = &self.audience else {
                return Err(AuthError::Invalid(
                    "this hub has no resource identifier (--jwt-audience) for access tokens",
                ));
            };
            if !audience_matches(&raw, audience) {
                return Err(AuthError::Invalid("the token is not for this hub (aud)"));
            }
            if raw.get("exp").is_none() {
                return Err(AuthError::Invalid("an access token must carry exp"));
            }
            if let Some(issuer) = &self.issuer {
                if raw.get("iss").and_then(Value::as_str) != Some(issuer) {
                    return Err(AuthError::Invalid(
                        "the token's issuer is not accepted (iss)",
                    ));
                }
            }
        } else {
            // A stable-line token (the `mercure` claim): accepted beside access tokens unless
            // turned off; its `aud` and `iss`, when it carries them, must still fit this hub.
            if !self.legacy_tokens {
                return Err(AuthError::Invalid(
                    "stable-line tokens (mercure claim) are turned off on this hub (--legacy-tokens)",
                ));
            }
            if let (Some(audience), true) = (&self.audience, raw.get("aud").is_some()) {
                if !audience_matches(&raw, audience) {
                    return Err(AuthError::Invalid("the token is not for this hub (aud)"));
                }
            }
            if let (Some(issuer), Some(iss)) = (&self.issuer, raw.get("iss")) {
                if iss.as_str() != Some(issuer) {
                    return Err(AuthError::Invalid(
                        "the token's issuer is not accepted (iss)",
                    ));
                }
            }
        }
        claims.into_grant(&self.base)
    }
}

/// Whether the token's `aud` (a string or an array of strings) names `audience`.
fn audience_matches(raw: &Value, audience: &str) -> bool {
    match raw.get("aud") {
        Some(Value::String(a)) => a == audience,
        Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(audience)),
        _ => false,
    }
}

/// Refuses an HMAC secret too short to resist guessing (the hub will not verify with it, so
/// `tidings token` will not sign with it either).
pub(crate) fn check_hmac_secret(key: &str) -> anyhow::Result<()> {
    if key.len() < 32 {
        bail!("an HMAC JWT secret must be at least 32 bytes long");
    }
    Ok(())
}

fn static_key(config: &KeyConfig) -> anyhow::Result<DecodingKey> {
    use jsonwebtoken::Algorithm::*;
    let pem = config.key.as_bytes();
    Ok(match config.algorithm {
        HS256 | HS384 | HS512 => {
            check_hmac_secret(&config.key)?;
            DecodingKey::from_secret(pem)
        }
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => {
            DecodingKey::from_rsa_pem(pem).context("reading the RSA public key (PEM)")?
        }
        ES256 | ES384 => {
            DecodingKey::from_ec_pem(pem).context("reading the EC public key (PEM)")?
        }
        EdDSA => DecodingKey::from_ed_pem(pem).context("reading the Ed25519 public key (PEM)")?,
        other => bail!("the JWT algorithm {other:?} is not supported"),
    })
}
