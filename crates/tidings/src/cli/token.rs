//! `tidings token`: mints development tokens for either Mercure generation, as Mercure ships
//! `mercure-token`. The key comes from the same flag and environment variable the hub reads
//! (`--jwt-key` / `TIDINGS_JWT_KEY`, `@PATH` reads a file); for RS/ES/EdDSA it must be the
//! private key matching the hub's public one.
//!
//! - the stable line (default): `{"mercure": {"publish": [...], "subscribe": [...], "payload"}}`;
//! - `--draft`: a 1.0-draft access token, header `typ: at+jwt`, `aud` (`--jwt-audience` /
//!   `TIDINGS_JWT_AUDIENCE`), `exp`, and `authorization_details` of type
//!   `https://mercure.rocks/authorization-detail` with `match_type` `exact` or `urlpattern`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::auth::{parse_algorithm, DETAIL_TYPES};

#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// Topic selector the token may publish to (repeatable; `*` for all). Stable line: exact
    /// topics, `*` or URI templates; --draft: exact topics or `*`.
    #[arg(long)]
    pub publish: Vec<String>,
    /// Topic selector whose private events the token may receive (repeatable).
    #[arg(long)]
    pub subscribe: Vec<String>,
    /// --draft: a URL pattern the token may publish to (`match_type: urlpattern`; repeatable).
    #[arg(long, requires = "draft")]
    pub publish_urlpattern: Vec<String>,
    /// --draft: a URL pattern whose private events the token may receive (repeatable).
    #[arg(long, requires = "draft")]
    pub subscribe_urlpattern: Vec<String>,
    /// Mint a 1.0-draft access token (typ at+jwt, aud, authorization_details) instead of a
    /// stable-line `mercure` claim.
    #[arg(long)]
    pub draft: bool,
    /// Lifetime of the token (`exp`), e.g. 1h, 30m, 7d; `0` for none (stable line only).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub expires: Duration,
    /// The `sub` claim: names the subscriber in the subscriptions API.
    #[arg(long)]
    pub subject: Option<String>,
    /// A JSON object shown with the token's subscriptions (the `payload`).
    #[arg(long)]
    pub payload: Option<String>,
    /// The signing key: an HMAC secret, or a PEM private key; `@PATH` reads it from a file.
    /// Required (here or in the environment).
    #[arg(long, env = "TIDINGS_JWT_KEY", hide_env_values = true)]
    pub jwt_key: Option<String>,
    /// Algorithm of --jwt-key [default: HS256].
    #[arg(long, env = "TIDINGS_JWT_ALG", default_value = "HS256")]
    pub jwt_alg: String,
    /// The hub's resource identifier (`aud`); required with --draft.
    #[arg(long, env = "TIDINGS_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// The `iss` claim, when the hub checks one (--jwt-issuer).
    #[arg(long, env = "TIDINGS_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
}

/// `tidings token`: prints the token.
pub fn run(args: TokenArgs) -> anyhow::Result<()> {
    println!("{}", mint(&args, now())?);
    Ok(())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The signed token `args` describe, issued at `now` (seconds since the Unix epoch).
pub fn mint(args: &TokenArgs, now: u64) -> anyhow::Result<String> {
    let algorithm = parse_algorithm(&args.jwt_alg)?;
    let Some(jwt_key) = args.jwt_key.as_deref() else {
        anyhow::bail!("tidings token needs the hub's key: pass --jwt-key or set TIDINGS_JWT_KEY");
    };
    let key = encoding_key(algorithm, &crate::ingest::webhook::read_secret(jwt_key)?)?;
    let payload = args
        .payload
        .as_deref()
        .map(|p| serde_json::from_str::<Value>(p).context("--payload is not JSON"))
        .transpose()?;
    if payload.as_ref().is_some_and(|p| !p.is_object()) {
        bail!("--payload must be a JSON object");
    }
    let mut claims = json!({});
    if args.expires > Duration::ZERO {
        claims["exp"] = json!(now.saturating_add(args.expires.as_secs()));
    }
    if let Some(sub) = &args.subject {
        claims["sub"] = json!(sub);
    }
    if let Some(iss) = &args.jwt_issuer {
        claims["iss"] = json!(iss);
    }
    let mut header = Header::new(algorithm);
    if args.draft {
        let Some(aud) = &args.jwt_audience else {
            bail!("--draft needs the hub's resource identifier: --jwt-audience (TIDINGS_JWT_AUDIENCE)");
        };
        if args.expires == Duration::ZERO {
            bail!("a 1.0-draft access token must expire: give --expires");
        }
        header.typ = Some("at+jwt".into());
        claims["aud"] = json!(aud);
        claims["authorization_details"] = json!(details(args, payload));
    } else {
        if let Some(aud) = &args.jwt_audience {
            claims["aud"] = json!(aud);
        }
        let mut mercure = json!({"publish": args.publish, "subscribe": args.subscribe});
        if let Some(payload) = payload {
            mercure["payload"] = payload;
        }
        claims["mercure"] = mercure;
    }
    jsonwebtoken::encode(&header, &claims, &key).context("signing the token")
}

/// One authorization detail per action, with its topic matchers.
fn details(args: &TokenArgs, payload: Option<Value>) -> Vec<Value> {
    let matchers = |exact: &[String], patterns: &[String]| -> Vec<Value> {
        let exact = exact.iter().map(|m| json!({"match": m}));
        let patterns = patterns
            .iter()
            .map(|m| json!({"match": m, "match_type": "urlpattern"}));
        exact.chain(patterns).collect()
    };
    let mut details = Vec::new();
    let publish = matchers(&args.publish, &args.publish_urlpattern);
    if !publish.is_empty() {
        details.push(json!({"type": DETAIL_TYPES[0], "actions": ["publish"], "topics": publish}));
    }
    let subscribe = matchers(&args.subscribe, &args.subscribe_urlpattern);
    if !subscribe.is_empty() {
        let mut detail =
            json!({"type": DETAIL_TYPES[0], "actions": ["subscribe"], "topics": subscribe});
        if let Some(payload) = payload {
            detail["payload"] = payload;
        }
        details.push(detail);
    }
    details
}

fn encoding_key(algorithm: Algorithm, key: &str) -> anyhow::Result<EncodingKey> {
    use Algorithm::*;
    let pem = key.as_bytes();
    Ok(match algorithm {
        HS256 | HS384 | HS512 => {
            crate::auth::check_hmac_secret(key)?;
            EncodingKey::from_secret(pem)
        }
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => {
            EncodingKey::from_rsa_pem(pem).context("reading the RSA private key (PEM)")?
        }
        ES256 | ES384 => {
            EncodingKey::from_ec_pem(pem).context("reading the EC private key (PEM)")?
        }
        EdDSA => EncodingKey::from_ed_pem(pem).context("reading the Ed25519 private key (PEM)")?,
        other => bail!("the JWT algorithm {other:?} is not supported"),
    })
}
