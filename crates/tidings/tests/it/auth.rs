//! JWT authorization (issue 3: "Tokens", "Rules" and "Must show"), against a real hub served on
//! 127.0.0.1:0 and real HTTP / SSE clients: 401 for a missing, forged, expired, not-yet-valid,
//! `alg: none` or algorithm-confused token; 403 for publishing outside one's selectors (nothing
//! of the request is stored); the token sources and their precedence; private events in the live
//! stream, the history replay, the late-joiner replay and polling; a stream closed at its token's
//! `exp` and resumed without loss; and 1,000 subscribers with per-session tokens that never see
//! another session's events.
//!
//! The RSA keys are throwaway fixtures (see `tests/it/fixtures/README.md`).

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Extra request headers of a test case.
type Headers = Vec<(&'static str, String)>;
/// A subscriber's claim (`None`: no token), what it selects, and what it must receive.
type Rule = (
    Option<&'static [&'static str]>,
    &'static [&'static str],
    &'static [&'static str],
);

use crate::common::{enc, form, spawn_hub_with, within, Next, Reply, Sse, TestHub, WAIT};
use futures_util::StreamExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tidings::auth::KeyConfig;
use tidings::config::StoreConfig;
use tidings_core::store::sqlite::Durability;

const PUB_SECRET: &str = "publisher secret, 0123456789abcdef0123456789abcdef";
const SUB_SECRET: &str = "subscriber secret, fedcba9876543210fedcba9876543210";
const ROGUE_SECRET: &str = "an attacker's secret, 0123456789abcdef0123456789";
const RSA_PRIVATE: &str = include_str!("fixtures/rsa_private.pem");
const RSA_PUBLIC: &str = include_str!("fixtures/rsa_public.pem");
const RSA_OTHER_PRIVATE: &str = include_str!("fixtures/rsa_other_private.pem");
const FORM: &str = "application/x-www-form-urlencoded";
/// The data of the public event that closes every scenario: a stream has seen everything
/// published before it once this arrives (a stream is in log order).
const END: &str = "END";

// ---------------------------------------------------------------------------------------------
// Tokens

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).expect("sign a test token")
}

fn hs256(secret: &[u8], claims: &Value) -> String {
    sign(Algorithm::HS256, &EncodingKey::from_secret(secret), claims)
}

fn rs256(private_pem: &str, claims: &Value) -> String {
    let key = EncodingKey::from_rsa_pem(private_pem.as_bytes()).expect("read the RSA private key");
    sign(Algorithm::RS256, &key, claims)
}

/// A publisher token (signed with the hub's publisher secret) for these selectors.
fn publisher(selectors: &[&str]) -> String {
    hs256(
        PUB_SECRET.as_bytes(),
        &json!({ "mercure": { "publish": selectors } }),
    )
}

/// A subscriber token (signed with the hub's subscriber secret) for these selectors.
fn subscriber(selectors: &[&str]) -> String {
    hs256(
        SUB_SECRET.as_bytes(),
        &json!({ "mercure": { "subscribe": selectors } }),
    )
}

/// A subscriber token for these selectors signed with a key the hub does not know.
fn forged_subscriber(selectors: &[&str]) -> String {
    hs256(
        ROGUE_SECRET.as_bytes(),
        &json!({ "mercure": { "subscribe": selectors } }),
    )
}

/// base64url without padding (RFC 7515), for hand-crafted tokens.
fn b64url(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// An unsigned token: `{"alg": <alg>}` header, these claims, and the given signature part.
fn unsigned(alg: &str, claims: &Value, signature: &str) -> String {
    let header = json!({ "alg": alg, "typ": "JWT" });
    format!(
        "{}.{}.{signature}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    )
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[test]
fn b64url_matches_rfc_4648_vectors() {
    for (plain, encoded) in [
        ("", ""),
        ("f", "Zg"),
        ("fo", "Zm8"),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg"),
        ("fooba", "Zm9vYmE"),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(b64url(plain.as_bytes()), encoded);
    }
    assert_eq!(b64url(&[0xfb, 0xff]), "-_8");
}

// ---------------------------------------------------------------------------------------------
// Hubs and requests

/// A static key pinned to `algorithm` (no JWKS).
fn key_config(algorithm: Algorithm, key: &str) -> KeyConfig {
    KeyConfig {
        algorithm,
        key: key.to_owned(),
        jwks: None,
    }
}

fn hmac(key: &str) -> Option<KeyConfig> {
    Some(key_config(Algorithm::HS256, key))
}

/// Publisher and subscriber keys: two different HS256 secrets.
fn hmac_keys(config: &mut tidings::Config) {
    config.auth.publisher = hmac(PUB_SECRET);
    config.auth.subscriber = hmac(SUB_SECRET);
}

async fn hmac_hub() -> TestHub {
    spawn_hub_with(hmac_keys).await
}

/// `POST path_and_query` with a form body and extra headers.
async fn post_form_with(
    hub: &TestHub,
    path_and_query: &str,
    headers: &[(&str, &str)],
    fields: &[(&str, &str)],
) -> Reply {
    let mut request = hub
        .client
        .post(hub.url(path_and_query))
        .header("content-type", FORM)
        .body(form(fields));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    hub.send(request).await
}

/// `POST path` with a JSON body and, when given, a bearer token.
async fn post_json_as(hub: &TestHub, path: &str, token: Option<&str>, body: &Value) -> Reply {
    let mut request = hub
        .client
        .post(hub.url(path))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(token) = token {
        request = request.header("authorization", bearer(token));
    }
    hub.send(request).await
}

/// `GET path_and_query` with extra headers.
async fn get_with(hub: &TestHub, path_and_query: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = hub.client.get(hub.url(path_and_query));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    hub.send(request).await
}

/// Publishes with an all-topics publisher token; asserts success and returns the event id.
async fn publish_ok(hub: &TestHub, fields: &[(&str, &str)]) -> String {
    let token = publisher(&["*"]);
    let reply = hub.post_form_as(Some(&token), fields).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "publish {fields:?}: {}",
        reply.body
    );
    reply.body
}

/// A private event with this data on these topics.
async fn publish_private(hub: &TestHub, topics: &[&str], data: &str) -> String {
    let mut fields: Vec<(&str, &str)> = topics.iter().map(|t| ("topic", *t)).collect();
    fields.push(("data", data));
    fields.push(("private", "on"));
    publish_ok(hub, &fields).await
}

/// A public event with this data on these topics.
async fn publish_public(hub: &TestHub, topics: &[&str], data: &str) -> String {
    let mut fields: Vec<(&str, &str)> = topics.iter().map(|t| ("topic", *t)).collect();
    fields.push(("data", data));
    publish_ok(hub, &fields).await
}

/// Asserts a 401 with a Bearer challenge; returns the reason.
fn assert_unauthorized(reply: &Reply, context: &str) -> String {
    let reason = reply.assert_refused(401, context);
    assert!(
        reply.header("www-authenticate").starts_with("Bearer"),
        "{context}: a 401 needs a Bearer WWW-Authenticate challenge, got {:?}",
        reply.header("www-authenticate")
    );
    reason
}

/// Asserts a 403 (valid token, topics not covered); returns the reason.
fn assert_forbidden(reply: &Reply, context: &str) -> String {
    let reason = reply.assert_refused(403, context);
    assert!(
        reply
            .header("www-authenticate")
            .contains("insufficient_scope"),
        "{context}: a 403 should say insufficient_scope, got {:?}",
        reply.header("www-authenticate")
    );
    reason
}

/// The data of the events of `sse` up to (without) the [`END`] event; fails on anything else.
async fn until_end(sse: &mut Sse, what: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        match sse.recv(WAIT).await {
            Next::Event(e) if e.data == END => return seen,
            Next::Event(e) => seen.push(e.data),
            other => panic!("{what}: expected events up to {END:?}, got {other:?} after {seen:?}"),
        }
    }
}

/// Every stored event id, read by an anonymous poll (the events of these tests that are checked
/// this way are public).
async fn stored_ids(hub: &TestHub) -> Vec<String> {
    hub.history_ids("topic=*").await
}

// ---------------------------------------------------------------------------------------------
// Publishing: 401

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_without_a_token_is_401_with_a_challenge() {
    let hub = hmac_hub().await;
    let reply = hub
        .post_form_as(None, &[("topic", "books/1"), ("data", "x")])
        .await;
    let reason = assert_unauthorized(&reply, "form publish without a token");
    assert!(reason.contains("token"), "{reason}");
    let reply = post_json_as(
        &hub,
        "/.well-known/mercure",
        None,
        &json!({ "topic": "books/1" }),
    )
    .await;
    assert_unauthorized(&reply, "JSON publish without a token");
    let reply = post_json_as(&hub, "/events/books/1", None, &json!({ "data": "x" })).await;
    assert_unauthorized(&reply, "path publish without a token");
    // A non-Bearer Authorization header is no token either.
    let reply = post_form_with(
        &hub,
        "/.well-known/mercure",
        &[("authorization", "Basic dXNlcjpwYXNz")],
        &[("topic", "books/1")],
    )
    .await;
    assert_unauthorized(&reply, "publish with Basic credentials");
    assert!(
        stored_ids(&hub).await.is_empty(),
        "a refused publish stored an event"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_with_a_forged_or_malformed_token_is_401() {
    let hub = hmac_hub().await;
    let claims = json!({ "mercure": { "publish": ["*"] } });
    let valid = publisher(&["books/1"]);
    // The payload of a valid token swapped for one granting everything: the signature breaks.
    let mut parts: Vec<&str> = valid.split('.').collect();
    let wider = b64url(claims.to_string().as_bytes());
    parts[1] = &wider;
    let tampered = parts.join(".");
    let cases = [
        (
            "signed with an unknown secret",
            hs256(ROGUE_SECRET.as_bytes(), &claims),
        ),
        // The hub's own subscriber key does not make a publisher.
        (
            "signed with the subscriber key",
            hs256(SUB_SECRET.as_bytes(), &claims),
        ),
        ("tampered payload", tampered),
        ("signature stripped", format!("{}.{}.", parts[0], parts[1])),
        ("not a JWT", "not-a-jwt".to_owned()),
        ("three empty parts", "..".to_owned()),
        ("empty bearer", String::new()),
    ];
    for (what, token) in &cases {
        let reply = hub
            .post_form_as(Some(token), &[("topic", "books/1"), ("data", "x")])
            .await;
        assert_unauthorized(&reply, what);
    }
    assert!(
        stored_ids(&hub).await.is_empty(),
        "a refused publish stored an event"
    );
    // And the genuine token still works.
    let reply = hub
        .post_form_as(Some(&valid), &[("topic", "books/1"), ("data", "x")])
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_not_yet_valid_tokens_are_401_outside_the_leeway() {
    // The default leeway is 5 s.
    let hub = hmac_hub().await;
    let t = now();
    let token = |extra: Value| {
        let mut claims = json!({ "mercure": { "publish": ["*"] } });
        for (k, v) in extra.as_object().unwrap() {
            claims[k] = v.clone();
        }
        hs256(PUB_SECRET.as_bytes(), &claims)
    };
    for (what, claims) in [
        ("expired a minute ago", json!({ "exp": t - 60 })),
        ("expired an hour ago", json!({ "exp": t - 3600 })),
        ("valid only in a minute", json!({ "nbf": t + 60 })),
        (
            "valid only in an hour",
            json!({ "nbf": t + 3600, "exp": t + 7200 }),
        ),
    ] {
        let reply = hub
            .post_form_as(Some(&token(claims)), &[("topic", "a")])
            .await;
        let reason = assert_unauthorized(&reply, what);
        assert!(
            reason.contains("expired") || reason.contains("not valid yet"),
            "{what}: {reason}"
        );
    }
    assert!(stored_ids(&hub).await.is_empty());
    // Inside the leeway, and within the validity window, the token is accepted.
    for (what, claims) in [
        (
            "expired 1 s ago (within the leeway)",
            json!({ "exp": t - 1 }),
        ),
        ("valid in 1 s (within the leeway)", json!({ "nbf": t + 1 })),
        ("valid now", json!({ "nbf": t - 10, "exp": t + 60 })),
    ] {
        let reply = hub
            .post_form_as(Some(&token(claims)), &[("topic", "a")])
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{what}: {}", reply.body);
    }
    // The same checks hold for subscribers.
    let sub = |extra: Value| {
        let mut claims = json!({ "mercure": { "subscribe": ["*"] } });
        for (k, v) in extra.as_object().unwrap() {
            claims[k] = v.clone();
        }
        hs256(SUB_SECRET.as_bytes(), &claims)
    };
    for (what, claims) in [
        (
            "subscriber token expired a minute ago",
            json!({ "exp": t - 60 }),
        ),
        (
            "subscriber token valid only in a minute",
            json!({ "nbf": t + 60 }),
        ),
    ] {
        let auth = bearer(&sub(claims));
        let reply = hub
            .try_sse("/.well-known/mercure?topic=a", &[("authorization", &auth)])
            .await
            .err()
            .unwrap_or_else(|| panic!("{what}: the stream was accepted"));
        assert_unauthorized(&reply, what);
        let reply = get_with(&hub, "/events?topic=a", &[("authorization", &auth)]).await;
        assert_unauthorized(&reply, what);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alg_none_tokens_are_401_and_none_cannot_be_configured() {
    assert!(tidings::auth::parse_algorithm("none").is_err());
    assert!(tidings::auth::parse_algorithm("NONE").is_err());
    let hub = hmac_hub().await;
    let publish_all = json!({ "mercure": { "publish": ["*"] }, "exp": now() + 600 });
    let subscribe_all = json!({ "mercure": { "subscribe": ["*"] }, "exp": now() + 600 });
    let valid_sig = publisher(&["*"]).rsplit('.').next().unwrap().to_owned();
    for alg in ["none", "None", "NONE", "nOnE"] {
        for signature in ["", valid_sig.as_str()] {
            let token = unsigned(alg, &publish_all, signature);
            let reply = hub
                .post_form_as(Some(&token), &[("topic", "a"), ("data", "x")])
                .await;
            assert_unauthorized(&reply, &format!("publish with alg {alg}"));
            let token = unsigned(alg, &subscribe_all, signature);
            let auth = bearer(&token);
            let reply = hub
                .try_sse(
                    "/.well-known/mercure?topic=a&lastEventID=earliest",
                    &[("authorization", &auth)],
                )
                .await
                .err()
                .unwrap_or_else(|| panic!("alg {alg}: the stream was accepted"));
            assert_unauthorized(&reply, &format!("subscribe with alg {alg}"));
        }
    }
    // A header naming the configured algorithm but carrying no signature is no better.
    let token = unsigned("HS256", &publish_all, "");
    let reply = hub.post_form_as(Some(&token), &[("topic", "a")]).await;
    assert_unauthorized(&reply, "HS256 header with an empty signature");
    assert!(
        stored_ids(&hub).await.is_empty(),
        "an unsigned token published"
    );
}

// ---------------------------------------------------------------------------------------------
// RSA, and HMAC/RSA algorithm confusion

fn rsa_keys(config: &mut tidings::Config) {
    let key = Some(key_config(Algorithm::RS256, RSA_PUBLIC));
    config.auth.publisher = key.clone();
    config.auth.subscriber = key;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_tokens_work_and_hmac_rsa_confusion_fails() {
    let hub = spawn_hub_with(rsa_keys).await;
    let publish_all = json!({ "mercure": { "publish": ["*"] } });
    let subscribe_alice = json!({ "mercure": { "subscribe": ["users/alice"] } });

    // The attacker knows the public key (it is public) and signs HS256 with its PEM bytes as
    // the HMAC secret: exactly the bytes configured, and the usual variations of them.
    let trimmed = RSA_PUBLIC.trim_end();
    let crlf = RSA_PUBLIC.replace('\n', "\r\n");
    let secrets: [&[u8]; 3] = [RSA_PUBLIC.as_bytes(), trimmed.as_bytes(), crlf.as_bytes()];
    for (i, secret) in secrets.iter().enumerate() {
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let key = EncodingKey::from_secret(secret);
            let token = sign(alg, &key, &publish_all);
            let reply = hub
                .post_form_as(Some(&token), &[("topic", "a"), ("data", "x")])
                .await;
            assert_unauthorized(
                &reply,
                &format!("publish: {alg:?} keyed by public PEM #{i}"),
            );
            let token = sign(alg, &key, &subscribe_alice);
            let auth = bearer(&token);
            let reply = hub
                .try_sse(
                    "/.well-known/mercure?topic=users/alice",
                    &[("authorization", &auth)],
                )
                .await
                .err()
                .unwrap_or_else(|| panic!("{alg:?} confusion: the stream was accepted"));
            assert_unauthorized(
                &reply,
                &format!("subscribe: {alg:?} keyed by public PEM #{i}"),
            );
        }
    }
    // An RS256 token signed by another RSA key, and an RS256 header over an HMAC signature.
    let other = rs256(RSA_OTHER_PRIVATE, &publish_all);
    let reply = hub.post_form_as(Some(&other), &[("topic", "a")]).await;
    assert_unauthorized(&reply, "RS256 signed by the wrong RSA key");
    let hmac_sig = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(RSA_PUBLIC.as_bytes()),
        &publish_all,
    );
    let sig = hmac_sig.rsplit('.').next().unwrap();
    let relabelled = unsigned("RS256", &publish_all, sig);
    let reply = hub.post_form_as(Some(&relabelled), &[("topic", "a")]).await;
    assert_unauthorized(&reply, "RS256 header over an HMAC signature");
    assert!(
        stored_ids(&hub).await.is_empty(),
        "a forged token published"
    );

    // A genuine RS256 token publishes, and a genuine RS256 subscriber token unlocks its
    // private events (and only those).
    let alice = bearer(&rs256(RSA_PRIVATE, &subscribe_alice));
    let mut sub = hub
        .sse(
            &format!("/.well-known/mercure?topic={}", enc("users/{id}")),
            &[("authorization", &alice)],
        )
        .await;
    let good = rs256(RSA_PRIVATE, &publish_all);
    for (topic, data) in [("users/bob", "for bob"), ("users/alice", "for alice")] {
        let reply = hub
            .post_form_as(
                Some(&good),
                &[("topic", topic), ("data", data), ("private", "on")],
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "RS256 publish: {}",
            reply.body
        );
    }
    let reply = hub
        .post_form_as(Some(&good), &[("topic", "users/alice"), ("data", END)])
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(until_end(&mut sub, "RS256 subscriber").await, ["for alice"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hmac_hub_refuses_rs256_tokens_and_a_short_secret_refuses_to_start() {
    let hub = hmac_hub().await;
    let token = rs256(RSA_PRIVATE, &json!({ "mercure": { "publish": ["*"] } }));
    let reply = hub.post_form_as(Some(&token), &[("topic", "a")]).await;
    assert_unauthorized(&reply, "RS256 token at an HS256 hub");

    // An HMAC secret under 32 bytes is a start-up error, not a weak hub, found before the
    // store is created.
    let dir = tempfile::tempdir().unwrap();
    let mut config = tidings::Config::with_store_path(dir.path().join("t.db"));
    config.auth.publisher = hmac("only 31 bytes long, 0123456789x");
    let Err(err) = tidings::App::build(config).await else {
        panic!("a hub with a 31-byte HMAC secret started");
    };
    assert!(format!("{err:#}").contains("32 bytes"), "{err:#}");
    assert!(
        !dir.path().join("t.db").exists(),
        "the store was created first"
    );
}

// ---------------------------------------------------------------------------------------------
// Publishing: 403 and 200

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_outside_ones_selectors_is_403_and_stores_nothing() {
    let hub = hmac_hub().await;
    let books = publisher(&["books/{id}", "news"]);
    let ok = |r: &Reply, what: &str| assert_eq!(r.status, StatusCode::OK, "{what}: {}", r.body);

    let r = hub
        .post_form_as(Some(&books), &[("topic", "books/1"), ("data", "ok")])
        .await;
    ok(&r, "covered by a template");
    let first = r.body.clone();
    let r = hub
        .post_form_as(Some(&books), &[("topic", "news"), ("topic", "books/2")])
        .await;
    ok(&r, "two covered topics");
    let second = r.body.clone();

    let r = hub
        .post_form_as(Some(&books), &[("topic", "users/1"), ("data", "no")])
        .await;
    assert_forbidden(&r, "an uncovered topic");
    let r = hub
        .post_form_as(
            Some(&books),
            &[("topic", "books/3"), ("topic", "users/1"), ("data", "no")],
        )
        .await;
    assert_forbidden(&r, "one of two topics uncovered");
    let r = hub
        .post_form_as(
            Some(&books),
            &[
                ("topic", "books/3"),
                ("topic", "users/1"),
                ("private", "on"),
            ],
        )
        .await;
    assert_forbidden(&r, "a private event with one topic uncovered");
    // `books/{id}` matches one path segment only.
    let r = hub
        .post_form_as(Some(&books), &[("topic", "books/1/secret")])
        .await;
    assert_forbidden(&r, "a topic one segment deeper than the template");
    let r = post_json_as(
        &hub,
        "/.well-known/mercure",
        Some(&books),
        &json!({ "topics": ["books/4", "users/1"], "data": "no" }),
    )
    .await;
    assert_forbidden(&r, "JSON event with one topic uncovered");
    let r = post_json_as(
        &hub,
        "/.well-known/mercure",
        Some(&books),
        &json!([
            { "topic": "books/5", "data": "would be first" },
            { "topic": "users/1", "data": "not covered" },
            { "topic": "books/6", "data": "would be last" },
        ]),
    )
    .await;
    assert_forbidden(&r, "JSON batch with one event uncovered");
    let r = post_json_as(
        &hub,
        "/events/users/1",
        Some(&books),
        &json!({ "data": "no" }),
    )
    .await;
    assert_forbidden(&r, "path publish to an uncovered topic");

    // Valid tokens that grant no publishing at all.
    for (what, claims) in [
        ("no mercure claim", json!({ "sub": "someone" })),
        (
            "subscribe only",
            json!({ "mercure": { "subscribe": ["*"] } }),
        ),
        (
            "empty publish list",
            json!({ "mercure": { "publish": [] } }),
        ),
    ] {
        let token = hs256(PUB_SECRET.as_bytes(), &claims);
        let r = hub
            .post_form_as(Some(&token), &[("topic", "books/1")])
            .await;
        assert_forbidden(&r, what);
    }

    assert_eq!(
        stored_ids(&hub).await,
        [first, second],
        "only the two authorized publishes may be stored"
    );
    // A batch that is fully covered is published whole.
    let r = post_json_as(
        &hub,
        "/.well-known/mercure",
        Some(&books),
        &json!([{ "topic": "books/5" }, { "topics": ["news", "books/6"] }]),
    )
    .await;
    ok(&r, "covered batch");
    assert_eq!(r.json()["ids"].as_array().map(Vec::len), Some(2));
    assert_eq!(stored_ids(&hub).await.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_publish_is_200_and_delivered() {
    let hub = hmac_hub().await;
    let mut sub = hub.subscribe("topic=books/1").await;
    let token = publisher(&["books/1"]);
    let reply = hub
        .post_form_as(Some(&token), &[("topic", "books/1"), ("data", "hello")])
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let id = reply.body.clone();
    let e = sub.next().await;
    assert_eq!((e.id.as_str(), e.data.as_str()), (id.as_str(), "hello"));
    let r = post_json_as(
        &hub,
        "/events/books/1",
        Some(&token),
        &json!({ "data": "path" }),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(sub.next().await.data, "path");
}

// ---------------------------------------------------------------------------------------------
// Token sources and precedence

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_token_sources_and_precedence() {
    let hub = hmac_hub().await;
    let good = publisher(&["*"]);
    let narrow = publisher(&["elsewhere"]);
    let forged = hs256(
        ROGUE_SECRET.as_bytes(),
        &json!({ "mercure": { "publish": ["*"] } }),
    );
    let fields = [("topic", "a"), ("data", "x")];
    let path = "/.well-known/mercure";

    let cases: Vec<(&str, Headers, u16)> = vec![
        ("bearer header", vec![("authorization", bearer(&good))], 200),
        (
            "lower-case bearer scheme",
            vec![("authorization", format!("bearer {good}"))],
            200,
        ),
        (
            "mercureAuthorization cookie",
            vec![("cookie", format!("mercureAuthorization={good}"))],
            200,
        ),
        (
            "draft cookie",
            vec![("cookie", format!("__Secure-mercure_access_token={good}"))],
            200,
        ),
        (
            "cookie among others",
            vec![(
                "cookie",
                format!("theme=dark; mercureAuthorization={good}; lang=en"),
            )],
            200,
        ),
        (
            "an unrelated cookie only",
            vec![("cookie", format!("session={good}"))],
            401,
        ),
        // The first source found is used, even when a later one would pass.
        (
            "forged header, good cookie",
            vec![
                ("authorization", bearer(&forged)),
                ("cookie", format!("mercureAuthorization={good}")),
            ],
            401,
        ),
        (
            "good header, forged cookie",
            vec![
                ("authorization", bearer(&good)),
                ("cookie", format!("mercureAuthorization={forged}")),
            ],
            200,
        ),
        (
            "narrow header, wide cookie",
            vec![
                ("authorization", bearer(&narrow)),
                ("cookie", format!("mercureAuthorization={good}")),
            ],
            403,
        ),
    ];
    for (what, headers, status) in &cases {
        // Sent like a same-origin browser form would (cookie-authenticated publishing is where
        // Origin checks belong once CORS is built).
        let mut headers: Vec<(&str, &str)> =
            headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        headers.push(("origin", &hub.base));
        let reply = post_form_with(&hub, path, &headers, &fields).await;
        assert_eq!(reply.status.as_u16(), *status, "{what}: {}", reply.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_token_in_the_query_parameter() {
    let hub = hmac_hub().await;
    let good = publisher(&["*"]);
    let forged = hs256(
        ROGUE_SECRET.as_bytes(),
        &json!({ "mercure": { "publish": ["*"] } }),
    );
    let fields = [("topic", "a"), ("data", "x")];
    let reply = post_form_with(
        &hub,
        &format!("/.well-known/mercure?authorization={good}"),
        &[],
        &fields,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "query token: {}", reply.body);
    // Query beats cookie: a forged query token is not rescued by a good cookie.
    let cookie = format!("mercureAuthorization={good}");
    let reply = post_form_with(
        &hub,
        &format!("/.well-known/mercure?authorization={forged}"),
        &[("cookie", &cookie)],
        &fields,
    )
    .await;
    assert_unauthorized(&reply, "forged query token, good cookie");
}

/// Publishes one private event for each of alice, bob and carol (data `priv-<name>`), then
/// [`END`] publicly on all three topics.
async fn publish_one_private_each(hub: &TestHub) {
    for name in ["alice", "bob", "carol"] {
        publish_private(hub, &[&format!("users/{name}")], &format!("priv-{name}")).await;
    }
    publish_public(hub, &["users/alice", "users/bob", "users/carol"], END).await;
}

/// Whose private events a subscription opened this way replays: `Err` when refused.
async fn whose(
    hub: &TestHub,
    path_and_query: &str,
    headers: &[(&str, String)],
) -> Result<Vec<String>, Reply> {
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let mut sse = hub.try_sse(path_and_query, &headers).await?;
    Ok(until_end(&mut sse, path_and_query).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_token_sources_and_precedence() {
    let hub = hmac_hub().await;
    publish_one_private_each(&hub).await;
    let [alice, bob, carol] =
        ["alice", "bob", "carol"].map(|n| subscriber(&[&format!("users/{n}")]));
    let forged = forged_subscriber(&["*"]);
    let base = format!(
        "/.well-known/mercure?topic={}&lastEventID=earliest",
        enc("users/{id}")
    );
    let with_query = |t: &str| format!("{base}&authorization={}", enc(t));
    let cookie = |t: &str| format!("mercureAuthorization={t}");
    let draft = |t: &str| format!("__Secure-mercure_access_token={t}");

    let cases: Vec<(&str, String, Headers, Result<&str, u16>)> = vec![
        ("no token", base.clone(), vec![], Ok("")),
        (
            "bearer header",
            base.clone(),
            vec![("authorization", bearer(&alice))],
            Ok("priv-alice"),
        ),
        ("query parameter", with_query(&bob), vec![], Ok("priv-bob")),
        (
            "mercureAuthorization cookie",
            base.clone(),
            vec![("cookie", cookie(&carol))],
            Ok("priv-carol"),
        ),
        (
            "draft cookie",
            base.clone(),
            vec![("cookie", draft(&carol))],
            Ok("priv-carol"),
        ),
        (
            "cookie among others",
            base.clone(),
            vec![("cookie", format!("a=1; {}; b=2", cookie(&bob)))],
            Ok("priv-bob"),
        ),
        (
            "header beats query and cookie",
            with_query(&bob),
            vec![
                ("authorization", bearer(&alice)),
                ("cookie", cookie(&carol)),
            ],
            Ok("priv-alice"),
        ),
        (
            "query beats cookie",
            with_query(&bob),
            vec![("cookie", cookie(&carol))],
            Ok("priv-bob"),
        ),
        (
            "query beats draft cookie",
            with_query(&bob),
            vec![("cookie", draft(&carol))],
            Ok("priv-bob"),
        ),
        // The first token found decides: a bad one is not rescued by a good one further down.
        (
            "forged header, good query",
            with_query(&bob),
            vec![("authorization", bearer(&forged))],
            Err(401),
        ),
        (
            "forged header, good cookie",
            base.clone(),
            vec![
                ("authorization", bearer(&forged)),
                ("cookie", cookie(&carol)),
            ],
            Err(401),
        ),
        (
            "forged query, good cookie",
            with_query(&forged),
            vec![("cookie", cookie(&carol))],
            Err(401),
        ),
        (
            "forged cookie",
            base.clone(),
            vec![("cookie", cookie(&forged))],
            Err(401),
        ),
    ];
    for (what, url, headers, expected) in cases {
        let got = whose(&hub, &url, &headers).await;
        match (expected, got) {
            (Ok(expected), Ok(seen)) => {
                let expected: Vec<&str> = Some(expected)
                    .filter(|e| !e.is_empty())
                    .into_iter()
                    .collect();
                assert_eq!(seen, expected, "{what}");
            }
            (Err(status), Err(reply)) => {
                assert_eq!(reply.status.as_u16(), status, "{what}: {}", reply.body);
                assert_unauthorized(&reply, what);
            }
            (expected, got) => panic!("{what}: expected {expected:?}, got {got:?}"),
        }
    }

    // The path form and polling read the same sources.
    let path = "/events/users/alice?lastEventID=earliest";
    assert_eq!(
        whose(&hub, path, &[("authorization", bearer(&alice))])
            .await
            .unwrap(),
        ["priv-alice"]
    );
    let q = format!("{path}&authorization={bob}");
    assert_eq!(whose(&hub, &q, &[]).await.unwrap(), Vec::<String>::new());
    let poll = format!("/events?topic={}&after=earliest", enc("users/{id}"));
    for (what, url, headers) in [
        (
            "poll with header",
            poll.clone(),
            vec![("authorization", bearer(&alice))],
        ),
        (
            "poll with query",
            format!("{poll}&authorization={bob}"),
            vec![],
        ),
        (
            "poll with cookie",
            poll.clone(),
            vec![("cookie", cookie(&carol))],
        ),
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let reply = get_with(&hub, &url, &headers).await;
        assert_eq!(reply.status, StatusCode::OK, "{what}: {}", reply.body);
        let private: Vec<Value> = reply.json()["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["private"] == json!(true))
            .map(|e| e["data"].clone())
            .collect();
        assert_eq!(private.len(), 1, "{what}: {private:?}");
    }
    let reply = get_with(
        &hub,
        &format!("{poll}&authorization={bob}"),
        &[("authorization", &bearer(&forged))],
    )
    .await;
    assert_unauthorized(&reply, "poll with a forged header and a good query token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_cookie_name_is_read() {
    let hub = spawn_hub_with(|c| {
        hmac_keys(c);
        c.auth.cookie = "hubToken".to_owned();
    })
    .await;
    publish_one_private_each(&hub).await;
    let alice = subscriber(&["users/alice"]);
    let url = format!(
        "/.well-known/mercure?topic={}&lastEventID=earliest",
        enc("users/{id}")
    );
    let seen = whose(&hub, &url, &[("cookie", format!("hubToken={alice}"))])
        .await
        .unwrap();
    assert_eq!(seen, ["priv-alice"]);
    // The draft's cookie name is read too.
    let seen = whose(
        &hub,
        &url,
        &[("cookie", format!("__Secure-mercure_access_token={alice}"))],
    )
    .await
    .unwrap();
    assert_eq!(seen, ["priv-alice"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_cookie_beats_the_draft_cookie() {
    let hub = hmac_hub().await;
    publish_one_private_each(&hub).await;
    let [alice, bob] = ["alice", "bob"].map(|n| subscriber(&[&format!("users/{n}")]));
    let url = format!(
        "/.well-known/mercure?topic={}&lastEventID=earliest",
        enc("users/{id}")
    );
    for cookies in [
        format!("mercureAuthorization={alice}; __Secure-mercure_access_token={bob}"),
        format!("__Secure-mercure_access_token={bob}; mercureAuthorization={alice}"),
    ] {
        let seen = whose(&hub, &url, &[("cookie", cookies.clone())]).await;
        assert_eq!(seen.unwrap(), ["priv-alice"], "{cookies}");
    }
}

// ---------------------------------------------------------------------------------------------
// Subscribers: 401

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_with_an_invalid_token_is_401_not_anonymous() {
    let hub = hmac_hub().await;
    publish_public(&hub, &["a"], "public").await;
    let forged = bearer(&forged_subscriber(&["a"]));
    let junk = "Bearer junk".to_owned();
    let publisher_token = bearer(&publisher(&["*"]));
    for (what, auth) in [
        ("forged", &forged),
        ("junk", &junk),
        ("signed with the publisher key", &publisher_token),
    ] {
        let headers = [("authorization", auth.as_str())];
        for url in [
            "/.well-known/mercure?topic=a",
            "/.well-known/mercure?topic=a&lastEventID=earliest",
            "/.well-known/mercure?topic=a&latest=1",
            "/events/a",
        ] {
            let reply = hub
                .try_sse(url, &headers)
                .await
                .err()
                .unwrap_or_else(|| panic!("{what} at {url}: the stream was accepted"));
            assert_unauthorized(&reply, &format!("{what} at {url}"));
        }
        let reply = get_with(&hub, "/events?topic=a&after=earliest", &headers).await;
        assert_unauthorized(&reply, &format!("{what} polling"));
    }
    // Without any token the same subscriber is anonymous, and gets the public event.
    let mut sub = hub.subscribe("topic=a&lastEventID=earliest").await;
    assert_eq!(sub.next().await.data, "public");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_refused_by_a_hub_without_a_subscriber_key() {
    let hub = spawn_hub_with(|c| c.auth.publisher = hmac(PUB_SECRET)).await;
    let auth = bearer(&subscriber(&["*"]));
    let reply = hub
        .try_sse("/.well-known/mercure?topic=a", &[("authorization", &auth)])
        .await
        .err()
        .expect("a token the hub cannot verify was accepted");
    assert_unauthorized(&reply, "token without a subscriber key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_anonymous_access_a_subscriber_needs_a_token() {
    let hub = spawn_hub_with(|c| {
        hmac_keys(c);
        c.auth.anonymous = false;
    })
    .await;
    publish_public(&hub, &["a"], "public").await;
    for url in [
        "/.well-known/mercure?topic=a",
        "/.well-known/mercure?topic=a&lastEventID=earliest",
        "/.well-known/mercure?topic=a&latest=1",
        "/events/a",
    ] {
        let reply = hub
            .try_sse(url, &[])
            .await
            .err()
            .unwrap_or_else(|| panic!("{url}: accepted"));
        let reason = assert_unauthorized(&reply, url);
        assert!(reason.contains("token"), "{url}: {reason}");
    }
    let reply = hub.get("/events?topic=a&after=earliest").await;
    assert_unauthorized(&reply, "anonymous poll");
    // A valid token, even one without private selectors, gets the public events.
    let auth = bearer(&subscriber(&[]));
    let mut sub = hub
        .sse(
            "/.well-known/mercure?topic=a&lastEventID=earliest",
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(sub.next().await.data, "public");
    let reply = get_with(
        &hub,
        "/events?topic=a&after=earliest",
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.json()["events"][0]["data"], "public");
}

// ---------------------------------------------------------------------------------------------
// Private events: live, history replay, late-joiner replay, polling

/// One subscriber of the private-event scenarios: its token's subscribe selectors (`None`:
/// anonymous), its subscription's topic selector, and the data it must see, in order.
struct Case {
    name: &'static str,
    grants: Option<&'static [&'static str]>,
    topic: &'static str,
    expect: &'static [&'static str],
}

impl Case {
    fn headers(&self) -> Vec<(&'static str, String)> {
        self.grants
            .map(|g| vec![("authorization", bearer(&subscriber(g)))])
            .unwrap_or_default()
    }
}

/// What the scenario publishes ([`publish_scenario`]) and who must see what of it.
const CASES: &[Case] = &[
    Case {
        name: "anonymous",
        grants: None,
        topic: "users/{id}",
        expect: &["pub-a"],
    },
    Case {
        name: "token without subscribe claims",
        grants: Some(&[]),
        topic: "users/{id}",
        expect: &["pub-a"],
    },
    Case {
        name: "alice",
        grants: Some(&["users/alice"]),
        topic: "users/{id}",
        expect: &["pub-a", "priv-a", "priv-ab", "priv-a2"],
    },
    Case {
        name: "alice on her exact topic",
        grants: Some(&["users/alice"]),
        topic: "users/alice",
        expect: &["pub-a", "priv-a", "priv-ab", "priv-a2"],
    },
    Case {
        name: "template users/{id}",
        grants: Some(&["users/{id}"]),
        topic: "users/{id}",
        expect: &["pub-a", "priv-a", "priv-b", "priv-ab", "priv-a2"],
    },
    Case {
        name: "bob",
        grants: Some(&["users/bob"]),
        topic: "users/{id}",
        expect: &["pub-a", "priv-b", "priv-ab"],
    },
    Case {
        name: "bob on alice's topic",
        grants: Some(&["users/bob"]),
        topic: "users/alice",
        // priv-ab is on both topics: the subscription matches users/alice, the token users/bob.
        expect: &["pub-a", "priv-ab"],
    },
    Case {
        name: "anonymous on alice's topic",
        grants: None,
        topic: "users/alice",
        expect: &["pub-a"],
    },
    Case {
        name: "a grant for another tree",
        grants: Some(&["groups/{id}", "users/alice/inbox"]),
        topic: "users/{id}",
        expect: &["pub-a"],
    },
];

/// The events of the scenario, then [`END`] publicly on alice's and bob's topics.
async fn publish_scenario(hub: &TestHub) {
    publish_public(hub, &["users/alice"], "pub-a").await;
    publish_private(hub, &["users/alice"], "priv-a").await;
    publish_private(hub, &["users/bob"], "priv-b").await;
    publish_private(hub, &["users/alice", "users/bob"], "priv-ab").await;
    // The path form, with JSON.
    let token = publisher(&["users/alice"]);
    let r = post_json_as(
        hub,
        "/events/users/alice",
        Some(&token),
        &json!({ "data": "priv-a2", "private": true }),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    publish_public(hub, &["users/alice", "users/bob"], END).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_events_in_the_live_stream() {
    let hub = hmac_hub().await;
    let mut subs = Vec::new();
    for case in CASES {
        let headers = case.headers();
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let url = format!("/.well-known/mercure?topic={}", enc(case.topic));
        subs.push((case, hub.sse(&url, &headers).await));
        // The path form subscribes to one exact topic.
        let url = format!("/events/{}", case.topic);
        if !case.topic.contains('{') {
            subs.push((case, hub.sse(&url, &headers).await));
        }
    }
    publish_scenario(&hub).await;
    for (case, sub) in &mut subs {
        assert_eq!(
            until_end(sub, case.name).await,
            case.expect,
            "live: {}",
            case.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_events_in_the_history_replay() {
    let hub = hmac_hub().await;
    publish_scenario(&hub).await;
    let first = hub.history_ids("topic=*").await[0].clone();
    for case in CASES {
        let headers = case.headers();
        for (how, url, extra) in [
            (
                "earliest",
                format!(
                    "/.well-known/mercure?topic={}&lastEventID=earliest",
                    enc(case.topic)
                ),
                None,
            ),
            (
                "Last-Event-ID header",
                format!("/.well-known/mercure?topic={}", enc(case.topic)),
                Some(("last-event-id", first.clone())),
            ),
        ] {
            let mut headers = headers.clone();
            headers.extend(extra);
            let mut seen = whose(&hub, &url, &headers).await.expect("subscribe");
            if how != "earliest" {
                // Resuming after the first event (pub-a) replays the rest.
                seen.insert(0, "pub-a".to_owned());
            }
            assert_eq!(seen, case.expect, "history replay ({how}): {}", case.name);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_events_in_polling() {
    let hub = hmac_hub().await;
    publish_scenario(&hub).await;
    for case in CASES {
        let headers = case.headers();
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        // One event per page, so every page boundary is crossed.
        let mut after = "earliest".to_owned();
        let mut seen = Vec::new();
        for _ in 0..100 {
            let url = format!(
                "/events?topic={}&after={}&limit=1",
                enc(case.topic),
                enc(&after)
            );
            let reply = get_with(&hub, &url, &headers).await;
            assert_eq!(
                reply.status,
                StatusCode::OK,
                "{}: {}",
                case.name,
                reply.body
            );
            let page = reply.json();
            for e in page["events"].as_array().unwrap() {
                seen.push(e["data"].as_str().unwrap().to_owned());
            }
            after = page["last_event_id"].as_str().unwrap().to_owned();
            if page["events"].as_array().unwrap().is_empty() {
                break;
            }
        }
        assert_eq!(seen.pop().as_deref(), Some(END), "polling: {}", case.name);
        assert_eq!(seen, case.expect, "polling: {}", case.name);
    }

    // A long poll: a private event it may not see does not end it early nor show up; one it
    // may see ends it at once.
    let head = hub.history_ids("topic=*").await.pop().unwrap();
    let alice = bearer(&subscriber(&["users/alice"]));
    let bob = bearer(&subscriber(&["users/bob"]));
    let wait_url = format!(
        "/events?topic={}&after={}&wait=1.5",
        enc("users/{id}"),
        enc(&head)
    );
    let polls = async {
        tokio::join!(
            async {
                let t = Instant::now();
                (get_with(&hub, &wait_url, &[]).await, t.elapsed())
            },
            async {
                let t = Instant::now();
                (
                    get_with(&hub, &wait_url, &[("authorization", &bob)]).await,
                    t.elapsed(),
                )
            },
            async {
                let t = Instant::now();
                (
                    get_with(&hub, &wait_url, &[("authorization", &alice)]).await,
                    t.elapsed(),
                )
            },
            async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                publish_private(&hub, &["users/alice"], "late secret").await
            },
        )
    };
    let ((anon, anon_t), (bob_r, bob_t), (alice_r, alice_t), id) =
        within(WAIT, "three long polls", polls).await;
    for (who, reply, took) in [("anonymous", &anon, anon_t), ("bob", &bob_r, bob_t)] {
        assert_eq!(reply.status, StatusCode::OK, "{who}: {}", reply.body);
        assert_eq!(reply.json()["events"], json!([]), "{who} long poll");
        assert!(
            took >= Duration::from_millis(1400),
            "{who}'s long poll ended early: {took:?}"
        );
    }
    assert_eq!(alice_r.status, StatusCode::OK, "{}", alice_r.body);
    let page = alice_r.json();
    assert_eq!(page["events"][0]["id"], json!(id));
    assert_eq!(page["events"][0]["data"], "late secret");
    assert!(
        alice_t < Duration::from_millis(1400),
        "alice's long poll waited {alice_t:?}"
    );
}

/// Late joiners: what `latest=1` (stream and poll) gives each subscriber. The newest event of
/// alice's topic is private, of bob's private, of carol's public.
async fn publish_late_joiner_scenario(hub: &TestHub) {
    publish_public(hub, &["users/alice"], "pub-a").await;
    publish_private(hub, &["users/alice"], "priv-a").await;
    publish_public(hub, &["users/bob"], "pub-b").await;
    publish_private(hub, &["users/bob"], "priv-b").await;
    publish_public(hub, &["users/carol"], "pub-c").await;
}

/// The topic each datum of the late-joiner scenario was published on.
fn late_topic(data: &str) -> &'static str {
    match data.chars().last() {
        Some('a') => "users/alice",
        Some('b') => "users/bob",
        _ => "users/carol",
    }
}

/// The late-joiner replay of a stream. Its [`END`] goes to a topic of its own (added to the
/// subscription), so that it never becomes the newest event of a scenario topic.
async fn late_join_stream(hub: &TestHub, topic: &str, grants: Option<&[&str]>) -> Vec<String> {
    static SENTINELS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let sentinel = format!(
        "sentinel/{}",
        SENTINELS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let headers: Vec<(&str, String)> = grants
        .map(|g| vec![("authorization", bearer(&subscriber(g)))])
        .unwrap_or_default();
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let url = format!(
        "/.well-known/mercure?topic={}&topic={}&latest=1",
        enc(topic),
        enc(&sentinel)
    );
    let mut sub = hub.sse(&url, &headers).await;
    publish_public(hub, &[&sentinel], END).await;
    until_end(&mut sub, &url).await
}

/// The late-joiner page of a poll.
async fn late_join_poll(hub: &TestHub, topic: &str, grants: Option<&[&str]>) -> Vec<String> {
    let headers: Vec<(&str, String)> = grants
        .map(|g| vec![("authorization", bearer(&subscriber(g)))])
        .unwrap_or_default();
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let url = format!("/events?topic={}&latest=1", enc(topic));
    let reply = get_with(hub, &url, &headers).await;
    assert_eq!(reply.status, StatusCode::OK, "{url}: {}", reply.body);
    reply.json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_events_in_the_late_joiner_replay() {
    let hub = hmac_hub().await;
    publish_late_joiner_scenario(&hub).await;
    // (grants, what the replay must hold, what it must never hold), for a subscription to all
    // three topics; a subscription to one topic must hold the part on that topic.
    let rules: [Rule; 5] = [
        (None, &["pub-c"], &["priv-a", "priv-b"]),
        (Some(&[]), &["pub-c"], &["priv-a", "priv-b"]),
        (
            Some(&["users/alice"]),
            &["priv-a", "pub-c"],
            &["priv-b", "pub-a"],
        ),
        (
            Some(&["users/bob"]),
            &["priv-b", "pub-c"],
            &["priv-a", "pub-b"],
        ),
        (
            Some(&["users/{id}"]),
            &["priv-a", "priv-b", "pub-c"],
            &["pub-a", "pub-b"],
        ),
    ];
    for (grants, must, never) in rules {
        for topic in ["users/{id}", "users/alice", "users/bob", "users/carol"] {
            let got = [
                ("poll", late_join_poll(&hub, topic, grants).await),
                ("stream", late_join_stream(&hub, topic, grants).await),
            ];
            for (how, seen) in got {
                let what = format!("late joiner ({how}) on {topic} with {grants:?}: {seen:?}");
                for m in must {
                    if topic.contains('{') || late_topic(m) == topic {
                        assert!(seen.iter().any(|s| s == m), "{what} lacks {m}");
                    }
                }
                for n in never {
                    assert!(!seen.iter().any(|s| s == n), "{what} holds {n}");
                }
                crate::common::assert_no_duplicates(&seen, &what);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_joiner_gets_the_newest_event_it_may_see() {
    let hub = hmac_hub().await;
    publish_late_joiner_scenario(&hub).await;
    let anonymous = late_join_poll(&hub, "users/{id}", None).await;
    assert_eq!(
        anonymous,
        ["pub-a", "pub-b", "pub-c"],
        "anonymous late-joiner poll"
    );
    let alice = late_join_poll(&hub, "users/{id}", Some(&["users/alice"])).await;
    assert_eq!(
        alice,
        ["priv-a", "pub-b", "pub-c"],
        "alice's late-joiner poll"
    );
    let stream = late_join_stream(&hub, "users/{id}", None).await;
    assert_eq!(
        stream,
        ["pub-a", "pub-b", "pub-c"],
        "anonymous late-joiner stream"
    );
}

// ---------------------------------------------------------------------------------------------
// A stream ends when its token expires, and resumes without loss

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_closes_at_its_tokens_exp_and_resumes_without_loss() {
    let hub = spawn_hub_with(|c| {
        hmac_keys(c);
        c.auth.leeway = Duration::ZERO;
    })
    .await;
    let exp = now() + 2;
    let exp_at = UNIX_EPOCH + Duration::from_secs(exp);
    let claims = |exp: u64| json!({ "exp": exp, "mercure": { "subscribe": ["users/alice"] } });
    let short = bearer(&hs256(SUB_SECRET.as_bytes(), &claims(exp)));
    let url = "/.well-known/mercure?topic=users/alice";
    let mut sub = hub.sse(url, &[("authorization", &short)]).await;

    // A publisher runs across the expiry and the reconnection.
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (client, publish_url, token) = (
        hub.client.clone(),
        hub.url("/.well-known/mercure"),
        publisher(&["users/alice"]),
    );
    let publishing = tokio::spawn(async move {
        let mut ids = Vec::new();
        for i in 0.. {
            let reply = client
                .post(&publish_url)
                .header("authorization", bearer(&token))
                .header("content-type", FORM)
                .body(form(&[
                    ("topic", "users/alice"),
                    ("data", &format!("e{i}")),
                    ("private", "on"),
                ]))
                .send()
                .await
                .expect("publish");
            assert_eq!(reply.status(), StatusCode::OK);
            ids.push(reply.text().await.expect("id"));
            tokio::select! {
                _ = &mut stop_rx => break,
                _ = tokio::time::sleep(Duration::from_millis(25)) => {}
            }
        }
        ids
    });

    let mut received = Vec::new();
    // Events keep arriving, so the whole wait is bounded, not each read.
    let ended = within(Duration::from_secs(6), "the stream ending at exp", async {
        loop {
            match sub.recv(WAIT).await {
                Next::Event(e) => received.push(e.id),
                Next::End => break SystemTime::now(),
                other => panic!("expected events, then the end at exp; got {other:?}"),
            }
        }
    })
    .await;
    assert!(
        ended + Duration::from_millis(50) >= exp_at,
        "the stream ended {:?} before exp",
        exp_at.duration_since(ended).unwrap_or_default()
    );
    let late = ended.duration_since(exp_at).unwrap_or_default();
    assert!(
        late < Duration::from_secs(1),
        "the stream ended {late:?} after exp"
    );
    assert!(!received.is_empty(), "nothing arrived before exp");

    // Once exp is past (tokens count in whole seconds), the expired token opens nothing
    // (leeway 0). Events keep being published meanwhile.
    let past_exp = exp_at + Duration::from_millis(1100);
    if let Ok(wait) = past_exp.duration_since(SystemTime::now()) {
        tokio::time::sleep(wait).await;
    }
    let reply = hub
        .try_sse(url, &[("authorization", &short)])
        .await
        .err()
        .expect("an expired token opened a stream");
    assert_unauthorized(&reply, "reconnecting with the expired token");

    // Resume with a fresh token.
    let fresh = bearer(&hs256(SUB_SECRET.as_bytes(), &claims(now() + 60)));
    let last = sub.last_id.clone().expect("a last id");
    let mut resumed = hub
        .sse(url, &[("authorization", &fresh), ("last-event-id", &last)])
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop_tx.send(()).expect("the publisher is running");
    let published = within(WAIT, "the publisher stopping", publishing)
        .await
        .expect("the publisher did not panic");
    publish_private(&hub, &["users/alice"], END).await;
    loop {
        let e = resumed.next().await;
        if e.data == END {
            break;
        }
        received.push(e.id);
    }
    crate::common::assert_no_duplicates(&received, "across the expiry");
    assert_eq!(
        received, published,
        "events were lost or reordered across the expiry"
    );
    let before_end = published
        .iter()
        .position(|id| Some(id) == sub.last_id.as_ref())
        .unwrap();
    assert!(
        before_end + 1 < published.len(),
        "nothing was published while disconnected, so the resume proved nothing"
    );
}

/// The leeway lets a token in despite clock skew; it does not stretch how long an expired token
/// keeps receiving private events: the stream ends at `exp` itself, and a token already past
/// `exp` (accepted within the leeway) gets a stream that ends at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leeway_admits_a_token_but_the_stream_still_ends_at_exp() {
    let hub = spawn_hub_with(|c| {
        hmac_keys(c);
        c.auth.leeway = Duration::from_secs(60);
    })
    .await;
    let url = "/.well-known/mercure?topic=users/alice";
    let token = |exp: u64| {
        bearer(&hs256(
            SUB_SECRET.as_bytes(),
            &json!({ "exp": exp, "mercure": { "subscribe": ["users/alice"] } }),
        ))
    };
    // Already expired, within the leeway: admitted, and the stream ends before any event.
    let mut stale = hub.sse(url, &[("authorization", &token(now() - 1))]).await;
    assert!(
        stale.expect_end().await.is_empty(),
        "an expired token received events"
    );

    let exp = now() + 2;
    let exp_at = UNIX_EPOCH + Duration::from_secs(exp);
    let mut sub = hub.sse(url, &[("authorization", &token(exp))]).await;
    let first = publish_private(&hub, &["users/alice"], "before exp").await;
    assert_eq!(sub.next().await.id, first);
    // The end comes at exp (a few seconds from now), not 60 s later.
    let rest = within(
        Duration::from_secs(8),
        "the stream ending at exp",
        sub.expect_end(),
    )
    .await;
    assert!(rest.is_empty(), "{rest:?}");
    assert!(
        SystemTime::now() + Duration::from_millis(50) >= exp_at,
        "the stream ended before exp"
    );
}

/// A long poll stops waiting at its token's `exp`, however long the leeway: what arrives after
/// `exp` is not handed to the expired token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_stops_waiting_at_its_tokens_exp() {
    let hub = spawn_hub_with(|c| {
        hmac_keys(c);
        c.auth.leeway = Duration::from_secs(60);
    })
    .await;
    let token = hs256(
        SUB_SECRET.as_bytes(),
        &json!({ "exp": now() + 2, "mercure": { "subscribe": ["users/alice"] } }),
    );
    let poll = hub.client.get(hub.url(&format!(
        "/events?topic=users/alice&wait=30&authorization={}",
        enc(&token)
    )));
    let reply = within(
        Duration::from_secs(8),
        "the poll ending at exp",
        hub.send(poll),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.json()["events"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_refused_from_its_exp_on() {
    let hub = spawn_hub_with(|c| {
        hmac_keys(c);
        c.auth.leeway = Duration::ZERO;
    })
    .await;
    let exp = now() + 1;
    let sub = bearer(&hs256(
        SUB_SECRET.as_bytes(),
        &json!({ "exp": exp, "mercure": { "subscribe": ["*"] } }),
    ));
    let publish = hs256(
        PUB_SECRET.as_bytes(),
        &json!({ "exp": exp, "mercure": { "publish": ["*"] } }),
    );
    // Just after exp, within the same second.
    let at = UNIX_EPOCH + Duration::from_secs(exp) + Duration::from_millis(50);
    if let Ok(wait) = at.duration_since(SystemTime::now()) {
        tokio::time::sleep(wait).await;
    }
    let subscribed = hub
        .try_sse("/.well-known/mercure?topic=a", &[("authorization", &sub)])
        .await;
    let published = hub.post_form_as(Some(&publish), &[("topic", "a")]).await;
    match subscribed {
        Err(reply) => assert_unauthorized(&reply, "subscribing at exp"),
        Ok(_) => panic!("a stream was opened with a token at its exp"),
    };
    assert_unauthorized(&published, "publishing at exp");
}

// ---------------------------------------------------------------------------------------------
// Isolation: 1,000 subscribers, one session each

/// xorshift64*: a small deterministic generator (the seed is printed on failure).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_1000_subscribers_with_per_session_tokens() {
    const SUBSCRIBERS: usize = 1000;
    const PUBLISHERS: usize = 8;
    const PER_PUBLISHER: usize = 250;
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("isolation seed: {seed:#x}");
    let hub = spawn_hub_with(|c| {
        hmac_keys(c);
        // Durability is not under test here; keep the 2,000 commits cheap.
        if let StoreConfig::Sqlite { durability, .. } = &mut c.store {
            *durability = Durability::Normal;
        }
    })
    .await;
    let started = Instant::now();

    // Every subscriber's selector is the template, which matches every session's topic: only
    // its token decides what it gets.
    let url = format!("/.well-known/mercure?topic={}", enc("sessions/{id}"));
    let hub_ref = &hub;
    let url_ref = &url;
    let mut subs: Vec<(usize, Sse)> = within(
        Duration::from_secs(60),
        "opening 1,000 streams",
        futures_util::stream::iter(0..SUBSCRIBERS)
            .map(|i| async move {
                let auth = bearer(&subscriber(&[&format!("sessions/{i}")]));
                (i, hub_ref.sse(url_ref, &[("authorization", &auth)]).await)
            })
            .buffer_unordered(64)
            .collect(),
    )
    .await;
    subs.sort_by_key(|(i, _)| *i);
    let opened = started.elapsed();

    let token = publisher(&["sessions/{id}"]);
    let tasks: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let (client, url, token) = (
                hub.client.clone(),
                hub.url("/.well-known/mercure"),
                token.clone(),
            );
            let mut rng =
                Rng(seed.wrapping_add(0x9e37_79b9_7f4a_7c15u64.wrapping_mul(p as u64 + 1)) | 1);
            tokio::spawn(async move {
                let mut sent = Vec::with_capacity(PER_PUBLISHER);
                for k in 0..PER_PUBLISHER {
                    let session = rng.below(SUBSCRIBERS);
                    let topic = format!("sessions/{session}");
                    let data = format!("s={session};p={p};k={k}");
                    let reply = client
                        .post(&url)
                        .header("authorization", bearer(&token))
                        .header("content-type", FORM)
                        .body(form(&[
                            ("topic", &topic),
                            ("data", &data),
                            ("private", "on"),
                        ]))
                        .send()
                        .await
                        .expect("publish");
                    assert_eq!(reply.status(), StatusCode::OK, "publish {data}");
                    sent.push((session, data));
                }
                sent
            })
        })
        .collect();
    let mut expected: HashMap<usize, Vec<String>> = HashMap::new();
    let mut total = 0;
    for task in tasks {
        let sent = within(Duration::from_secs(60), "a publisher finishing", task)
            .await
            .expect("a publisher panicked");
        for (session, data) in sent {
            expected.entry(session).or_default().push(data);
            total += 1;
        }
    }
    let published = started.elapsed();
    // The public END reaches everyone after all of the above (streams are in log order).
    publish_public(&hub, &["sessions/end"], END).await;

    let mut wrong = Vec::new();
    let mut missing = Vec::new();
    let mut delivered = 0;
    for (i, sub) in &mut subs {
        let seen = until_end(sub, &format!("subscriber {i}")).await;
        delivered += seen.len();
        let prefix = format!("s={i};");
        wrong.extend(
            seen.iter()
                .filter(|d| !d.starts_with(&prefix))
                .map(|d| format!("subscriber {i} got {d}")),
        );
        let mut got = seen.clone();
        crate::common::assert_no_duplicates(&got, &format!("subscriber {i}"));
        got.sort();
        let mut want = expected.remove(i).unwrap_or_default();
        want.sort();
        if got != want {
            missing.push(format!("subscriber {i}: expected {want:?}, got {got:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "seed {seed:#x}: {} events reached a wrong subscriber, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    assert!(
        missing.is_empty(),
        "seed {seed:#x}: {} subscribers did not get exactly their events, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert_eq!(delivered, total, "every event reaches exactly its owner");
    assert_eq!(total, PUBLISHERS * PER_PUBLISHER);
    eprintln!(
        "isolation: {SUBSCRIBERS} streams opened in {opened:?}, {total} private events published \
         by {PUBLISHERS} tasks by {published:?}, all checked by {:?}",
        started.elapsed()
    );
}

/// The first event of a stream, skipping the comment-only preamble.
async fn first_event(hub: &TestHub, url: &str, headers: &[(&str, &str)]) -> (String, String) {
    let mut sse = hub.sse(url, headers).await;
    let start = sse.header("last-event-id");
    match sse.recv(Duration::from_secs(2)).await {
        Next::Event(e) => (start, e.event),
        other => (start, format!("{other:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_after_a_private_id_one_may_not_see_looks_like_an_unknown_id() {
    let hub = hmac_hub().await;
    publish_ok(
        &hub,
        &[
            ("topic", "invoices/42"),
            ("id", "invoice-2026-0042"),
            ("data", "secret"),
            ("private", "on"),
        ],
    )
    .await;
    publish_public(&hub, &["invoices/42"], "public").await;
    let url = format!("/.well-known/mercure?topic={}", enc("invoices/{id}"));
    let unknown = first_event(&hub, &url, &[("last-event-id", "no-such-invoice")]).await;
    assert_eq!(unknown, ("earliest".into(), "tidings.reset".into()));
    let private = first_event(&hub, &url, &[("last-event-id", "invoice-2026-0042")]).await;
    assert_eq!(private, unknown, "an anonymous resume learns nothing");
    let polled = hub
        .poll(&format!(
            "topic={}&after=invoice-2026-0042",
            enc("invoices/{id}")
        ))
        .await;
    assert!(polled["reset"].is_object(), "poll: {polled}");
    assert_eq!(polled["events"], json!([]), "poll: {polled}");
    // A subscriber whose token covers the topic resumes after it as usual.
    let auth = bearer(&subscriber(&["invoices/{id}"]));
    let entitled = first_event(
        &hub,
        &url,
        &[
            ("last-event-id", "invoice-2026-0042"),
            ("authorization", &auth),
        ],
    )
    .await;
    assert_eq!(entitled, ("invoice-2026-0042".into(), "message".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_head_is_never_handed_to_those_who_may_not_see_it() {
    let hub = hmac_hub().await;
    let news = publish_public(&hub, &["news"], "public").await;
    let secret = publish_private(&hub, &["user/42"], "secret").await;
    // A stream from now says where it starts: not at the private event.
    let sse = hub.sse("/.well-known/mercure?topic=news", &[]).await;
    assert_eq!(sse.header("last-event-id"), news);
    drop(sse);
    // A poller on a quiet topic keeps a cursor it may resume from: no reset, no private id.
    let mut after = news.clone();
    for _ in 0..3 {
        let page = hub
            .poll(&format!("topic=news&after={}&wait=0.2", enc(&after)))
            .await;
        assert!(page.get("reset").is_none(), "spurious reset: {page}");
        assert_eq!(page["events"], json!([]), "{page}");
        after = page["last_event_id"].as_str().expect("cursor").to_owned();
        assert_ne!(after, secret, "a private id handed to an anonymous poller");
        publish_private(&hub, &["user/42"], "more").await;
    }
    // The owner is handed the head itself.
    let auth = bearer(&subscriber(&["user/42", "news"]));
    let sse = hub
        .sse(
            &format!("/.well-known/mercure?topic=news&topic={}", enc("user/42")),
            &[("authorization", &auth)],
        )
        .await;
    assert_ne!(sse.header("last-event-id"), news);
}
