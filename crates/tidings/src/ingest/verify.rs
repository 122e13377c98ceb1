//! Proof that a webhook delivery comes from its sender, checked over the raw body before anything
//! is parsed: HMAC-SHA256 in the Standard Webhooks, Stripe, GitHub or a configurable generic
//! layout, or a static bearer token. Every comparison is constant-time, and a timestamped scheme
//! refuses a delivery signed too far from the hub's clock (a replay).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{header, HeaderMap, HeaderName};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Key bytes or a token; never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    /// A Standard Webhooks secret: `whsec_` and the key in base64 (the prefix is optional).
    pub fn standard(text: &str) -> Result<Self, String> {
        let key = text.strip_prefix("whsec_").unwrap_or(text);
        let bytes = BASE64
            .decode(key)
            .map_err(|e| format!("a Standard Webhooks secret is whsec_ and base64 ({e})"))?;
        if bytes.is_empty() {
            return Err("the secret is empty".into());
        }
        Ok(Self(bytes))
    }

    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

/// How a generic HMAC signature is written in its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    #[default]
    Hex,
    Base64,
}

/// A piece of what a generic HMAC signs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signed {
    Text(String),
    Body,
    Timestamp,
}

/// Parses `signed_content`: literal text around `{body}` (required) and `{timestamp}`.
pub fn parse_signed_content(template: &str, timestamped: bool) -> Result<Vec<Signed>, String> {
    let mut parts = Vec::new();
    let mut rest = template;
    while !rest.is_empty() {
        let next = [("{body}", Signed::Body), ("{timestamp}", Signed::Timestamp)]
            .into_iter()
            .filter_map(|(mark, part)| rest.find(mark).map(|at| (at, mark, part)))
            .min_by_key(|(at, _, _)| *at);
        match next {
            Some((at, mark, part)) => {
                if at > 0 {
                    parts.push(Signed::Text(rest[..at].to_owned()));
                }
                parts.push(part);
                rest = &rest[at + mark.len()..];
            }
            None => {
                parts.push(Signed::Text(rest.to_owned()));
                rest = "";
            }
        }
    }
    if !parts.contains(&Signed::Body) {
        return Err("signed_content must contain {body}".into());
    }
    if parts.contains(&Signed::Timestamp) && !timestamped {
        return Err("signed_content uses {timestamp} but no timestamp_header is set".into());
    }
    Ok(parts)
}

/// The generic HMAC-SHA256 layout (`scheme = "hmac"`).
#[derive(Debug, Clone)]
pub struct GenericHmac {
    pub secret: Secret,
    /// The header holding the signature.
    pub header: HeaderName,
    pub encoding: Encoding,
    /// Text before the signature in its header, such as `sha256=`.
    pub prefix: String,
    /// A header holding the Unix time of the signature, and how far from now it may be.
    pub timestamp: Option<(HeaderName, Duration)>,
    /// What is signed; by default the body, or `{timestamp}.{body}` with a timestamp header.
    pub content: Vec<Signed>,
}

/// How one webhook proves its deliveries.
#[derive(Debug, Clone)]
pub enum Verifier {
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp` and `webhook-signature: v1,<base64>`
    /// (several, space-separated) over `{id}.{timestamp}.{body}`.
    Standard {
        secret: Secret,
        tolerance: Duration,
    },
    /// Stripe: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=...]` over `{t}.{body}`.
    Stripe {
        secret: Secret,
        tolerance: Duration,
    },
    /// GitHub: `X-Hub-Signature-256: sha256=<hex>` over the body.
    Github {
        secret: Secret,
    },
    Hmac(GenericHmac),
    /// `Authorization: Bearer <token>`.
    Bearer {
        token: Secret,
    },
}

/// Why a delivery was not accepted as the sender's; each message is one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing header {0}")]
    MissingHeader(String),
    #[error("header {header}: {reason}")]
    Malformed { header: String, reason: String },
    #[error("the signature does not match the body")]
    Mismatch,
    #[error(
        "the signature's timestamp is {off} s away from the hub's clock, more than the \
         tolerance of {tolerance} s (a replayed delivery, or a clock out of sync)"
    )]
    Stale { off: u64, tolerance: u64 },
    #[error("missing or wrong bearer token")]
    BadToken,
}

const STANDARD_ID: &str = "webhook-id";
const STANDARD_TIMESTAMP: &str = "webhook-timestamp";
const STANDARD_SIGNATURE: &str = "webhook-signature";
const STRIPE_SIGNATURE: &str = "stripe-signature";
const GITHUB_SIGNATURE: &str = "x-hub-signature-256";

impl Verifier {
    /// Checks one delivery at `now`.
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), VerifyError> {
        match self {
            Self::Standard { secret, tolerance } => {
                let id = text(headers, STANDARD_ID)?;
                let timestamp = text(headers, STANDARD_TIMESTAMP)?;
                let expected = mac(
                    secret,
                    &[id.as_bytes(), b".", timestamp.as_bytes(), b".", body],
                );
                let signatures = text(headers, STANDARD_SIGNATURE)?;
                let candidates = signatures
                    .split(' ')
                    .filter_map(|s| s.strip_prefix("v1,"))
                    .filter_map(|s| BASE64.decode(s).ok());
                any_matches(&expected, candidates)?;
                fresh(STANDARD_TIMESTAMP, timestamp, *tolerance, now)
            }
            Self::Stripe { secret, tolerance } => {
                let header = text(headers, STRIPE_SIGNATURE)?;
                let mut timestamp = None;
                let mut candidates = Vec::new();
                for item in header.split(',') {
                    match item.trim().split_once('=') {
                        Some(("t", t)) => timestamp = Some(t),
                        Some(("v1", sig)) => candidates.extend(hex::decode(sig).ok()),
                        _ => {}
                    }
                }
                let timestamp = timestamp.ok_or_else(|| VerifyError::Malformed {
                    header: STRIPE_SIGNATURE.into(),
                    reason: "no t= timestamp".into(),
                })?;
                let expected = mac(secret, &[timestamp.as_bytes(), b".", body]);
                any_matches(&expected, candidates)?;
                fresh(STRIPE_SIGNATURE, timestamp, *tolerance, now)
            }
            Self::Github { secret } => {
                let header = text(headers, GITHUB_SIGNATURE)?;
                let sig = header
                    .strip_prefix("sha256=")
                    .ok_or_else(|| VerifyError::Malformed {
                        header: GITHUB_SIGNATURE.into(),
                        reason: "expected sha256=<hex>".into(),
                    })?;
                any_matches(&mac(secret, &[body]), hex::decode(sig).ok())
            }
            Self::Hmac(generic) => generic.verify(headers, body, now),
            Self::Bearer { token } => {
                if bearer_matches(headers, token.bytes()) {
                    Ok(())
                } else {
                    Err(VerifyError::BadToken)
                }
            }
        }
    }
}

impl Verifier {
    /// For the HMAC schemes whose signature covers neither a timestamp nor a delivery id
    /// (`github`, `hmac`), a digest of the signature of a delivery `verify` accepted: the same
    /// for a replay of it, whatever delivery id the replay carries, and useless to forge one
    /// (it is a hash of the MAC, not the MAC). `None` for the other schemes.
    pub fn signature_digest(&self, headers: &HeaderMap, body: &[u8]) -> Option<String> {
        let mac = match self {
            Self::Github { secret } => mac(secret, &[body]),
            Self::Hmac(generic) => generic.expected(headers, body).ok()?,
            Self::Standard { .. } | Self::Stripe { .. } | Self::Bearer { .. } => return None,
        };
        Some(hex::encode(&Sha256::digest(&mac)[..16]))
    }
}

impl GenericHmac {
    /// The MAC this delivery must carry.
    fn expected(&self, headers: &HeaderMap, body: &[u8]) -> Result<Vec<u8>, VerifyError> {
        let timestamp = match &self.timestamp {
            Some((name, _)) => Some(text(headers, name.as_str())?),
            None => None,
        };
        let parts: Vec<&[u8]> = self
            .content
            .iter()
            .map(|part| match part {
                Signed::Text(t) => t.as_bytes(),
                Signed::Body => body,
                Signed::Timestamp => timestamp.unwrap_or("").as_bytes(),
            })
            .collect();
        Ok(mac(&self.secret, &parts))
    }

    fn verify(&self, headers: &HeaderMap, body: &[u8], now: SystemTime) -> Result<(), VerifyError> {
        let timestamp = match &self.timestamp {
            Some((name, _)) => Some(text(headers, name.as_str())?),
            None => None,
        };
        let header = text(headers, self.header.as_str())?;
        let sig = header
            .trim()
            .strip_prefix(self.prefix.as_str())
            .ok_or_else(|| VerifyError::Malformed {
                header: self.header.to_string(),
                reason: format!("expected {}<signature>", self.prefix),
            })?;
        let decoded = match self.encoding {
            Encoding::Hex => hex::decode(sig).ok(),
            Encoding::Base64 => BASE64.decode(sig).ok(),
        };
        any_matches(&self.expected(headers, body)?, decoded)?;
        match (&self.timestamp, timestamp) {
            (Some((name, tolerance)), Some(t)) => fresh(name.as_str(), t, *tolerance, now),
            _ => Ok(()),
        }
    }
}

/// A header's value as text; missing or not text is refused.
fn text<'h>(headers: &'h HeaderMap, name: &str) -> Result<&'h str, VerifyError> {
    let value = headers
        .get(name)
        .ok_or_else(|| VerifyError::MissingHeader(name.to_owned()))?;
    value.to_str().map_err(|_| VerifyError::Malformed {
        header: name.to_owned(),
        reason: "not visible ASCII".into(),
    })
}

fn mac(secret: &Secret, parts: &[&[u8]]) -> Vec<u8> {
    // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
    let mut mac = HmacSha256::new_from_slice(secret.bytes()).expect("HMAC accepts any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// Whether one of the given signatures is `expected`, each compared in constant time.
fn any_matches(
    expected: &[u8],
    candidates: impl IntoIterator<Item = Vec<u8>>,
) -> Result<(), VerifyError> {
    let mut found = subtle::Choice::from(0);
    for candidate in candidates {
        found |= expected.ct_eq(&candidate);
    }
    if bool::from(found) {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

/// Refuses a Unix timestamp further than `tolerance` from `now`, either way.
fn fresh(
    header: &str,
    timestamp: &str,
    tolerance: Duration,
    now: SystemTime,
) -> Result<(), VerifyError> {
    let at: u64 = timestamp
        .trim()
        .parse()
        .map_err(|_| VerifyError::Malformed {
            header: header.to_owned(),
            reason: "the timestamp is not a Unix time in seconds".into(),
        })?;
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let off = now.abs_diff(at);
    if off > tolerance.as_secs() {
        return Err(VerifyError::Stale {
            off,
            tolerance: tolerance.as_secs(),
        });
    }
    Ok(())
}

/// Whether the request carries `Authorization: Bearer TOKEN` with this token (the scheme in any
/// case). Comparing digests in constant time keeps the token's length out of the timing too.
pub(crate) fn bearer_matches(headers: &HeaderMap, token: &[u8]) -> bool {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, given) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then_some(given.trim())
        });
    given.is_some_and(|given| {
        bool::from(Sha256::digest(given.as_bytes()).ct_eq(&Sha256::digest(token)))
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A header map from name/value pairs (shared with the other ingest tests).
    pub(crate) fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    const FIVE_MIN: Duration = Duration::from_secs(300);

    /// The test vector of the Standard Webhooks reference libraries.
    #[test]
    fn standard_webhooks_reference_vector() {
        let v = Verifier::Standard {
            secret: Secret::standard("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap(),
            tolerance: FIVE_MIN,
        };
        let body = br#"{"test": 2432232314}"#;
        let good = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        let h = |sig: &str| {
            headers(&[
                ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
                ("webhook-timestamp", "1614265330"),
                ("webhook-signature", sig),
            ])
        };
        assert_eq!(v.verify(&h(good), body, at(1614265330)), Ok(()));
        // One of several signatures (a sender rotating keys) is enough.
        let several = format!("v1,bm90IGl0 v2,xyz {good}");
        assert_eq!(v.verify(&h(&several), body, at(1614265400)), Ok(()));
        assert_eq!(
            v.verify(&h(good), b"{\"test\": 2432232315}", at(1614265330)),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            v.verify(&h(good), body, at(1614265330 + 301)),
            Err(VerifyError::Stale {
                off: 301,
                tolerance: 300
            })
        );
        assert_eq!(
            v.verify(&h(good), body, at(1614265330 - 400)).unwrap_err(),
            VerifyError::Stale {
                off: 400,
                tolerance: 300
            },
            "a timestamp from the future is refused too"
        );
        assert_eq!(
            v.verify(&headers(&[]), body, at(0)),
            Err(VerifyError::MissingHeader("webhook-id".into()))
        );
    }

    /// The example of GitHub's documentation.
    #[test]
    fn github_documentation_vector() {
        let v = Verifier::Github {
            secret: Secret::new("It's a Secret to Everybody"),
        };
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        let h = headers(&[("X-Hub-Signature-256", sig)]);
        assert_eq!(v.verify(&h, b"Hello, World!", at(0)), Ok(()));
        assert_eq!(
            v.verify(&h, b"Hello, World?", at(0)),
            Err(VerifyError::Mismatch)
        );
        let bare = headers(&[("X-Hub-Signature-256", &sig[7..])]);
        assert!(matches!(
            v.verify(&bare, b"Hello, World!", at(0)),
            Err(VerifyError::Malformed { .. })
        ));
    }

    #[test]
    fn stripe_signs_timestamp_dot_body() {
        let secret = Secret::new("whsec_test");
        let v = Verifier::Stripe {
            secret: secret.clone(),
            tolerance: FIVE_MIN,
        };
        let body = br#"{"id":"evt_1"}"#;
        let sig = hex::encode(mac(&secret, &[b"1700000000.", body]));
        let value = format!("t=1700000000,v1=00ff,v1={sig},v0=abc");
        let h = headers(&[("Stripe-Signature", &value)]);
        assert_eq!(v.verify(&h, body, at(1700000100)), Ok(()));
        assert!(matches!(
            v.verify(&h, body, at(1700001000)),
            Err(VerifyError::Stale { .. })
        ));
        let no_t = headers(&[("Stripe-Signature", &format!("v1={sig}"))]);
        assert!(matches!(
            v.verify(&no_t, body, at(1700000000)),
            Err(VerifyError::Malformed { .. })
        ));
    }

    #[test]
    fn generic_hmac_with_prefix_base64_and_timestamp() {
        let secret = Secret::new("s3cret");
        let v = Verifier::Hmac(GenericHmac {
            secret: secret.clone(),
            header: HeaderName::from_static("x-signature"),
            encoding: Encoding::Base64,
            prefix: "sha256=".into(),
            timestamp: Some((HeaderName::from_static("x-timestamp"), FIVE_MIN)),
            content: parse_signed_content("{timestamp}:{body}", true).unwrap(),
        });
        let body = b"{}";
        let sig = BASE64.encode(mac(&secret, &[b"1000:", body]));
        let h = headers(&[
            ("x-signature", &format!("sha256={sig}")),
            ("x-timestamp", "1000"),
        ]);
        assert_eq!(v.verify(&h, body, at(1100)), Ok(()));
        assert!(matches!(
            v.verify(&h, body, at(2000)),
            Err(VerifyError::Stale { .. })
        ));
        let other_time = headers(&[
            ("x-signature", &format!("sha256={sig}")),
            ("x-timestamp", "1001"),
        ]);
        assert_eq!(
            v.verify(&other_time, body, at(1001)),
            Err(VerifyError::Mismatch),
            "the timestamp is signed"
        );
    }

    #[test]
    fn signed_content_templates() {
        assert_eq!(
            parse_signed_content("{timestamp}.{body}", true).unwrap(),
            vec![Signed::Timestamp, Signed::Text(".".into()), Signed::Body]
        );
        assert_eq!(
            parse_signed_content("{body}", false).unwrap(),
            vec![Signed::Body]
        );
        assert!(parse_signed_content("{timestamp}", true).is_err());
        assert!(parse_signed_content("{timestamp}.{body}", false).is_err());
    }

    #[test]
    fn bearer_tokens_compare_whole() {
        let v = Verifier::Bearer {
            token: Secret::new("tok-123"),
        };
        let ok = headers(&[("authorization", "Bearer tok-123")]);
        assert_eq!(v.verify(&ok, b"", at(0)), Ok(()));
        for bad in ["Bearer tok-12", "Bearer tok-1234", "Basic tok-123", ""] {
            let h = headers(&[("authorization", bad)]);
            assert_eq!(
                v.verify(&h, b"", at(0)),
                Err(VerifyError::BadToken),
                "{bad:?}"
            );
        }
        assert_eq!(
            v.verify(&headers(&[]), b"", at(0)),
            Err(VerifyError::BadToken)
        );
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let v = Verifier::Github {
            secret: Secret::new("hunter2"),
        };
        assert!(!format!("{v:?}").contains("hunter2"));
    }
}
