//! Presence (Mercure's active-subscriptions API and subscription events), newer-draft access
//! tokens (RFC 9068 + RFC 9396 `authorization_details`) and JWKS keys, against a real hub.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tidings::auth::KeyConfig;

const SECRET: &str = "0123456789abcdef0123456789abcdef-presence";
const SUBSCRIPTIONS: &str = "/.well-known/mercure/subscriptions";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs256(claims: Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn bearer(token: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {token}"))
}

async fn hub_with_keys(subscription_events: bool) -> TestHub {
    hub_with(subscription_events, None).await
}

/// A hub whose publishers and subscribers use the HS256 `SECRET`.
async fn hub_with(subscription_events: bool, audience: Option<&'static str>) -> TestHub {
    spawn_hub_with(move |c| {
        let key = KeyConfig {
            algorithm: Algorithm::HS256,
            key: SECRET.into(),
            jwks: None,
        };
        c.auth.publisher = Some(key.clone());
        c.auth.subscriber = Some(key);
        c.auth.audience = audience.map(Into::into);
        c.subscription_events = subscription_events;
    })
    .await
}

async fn get_with(hub: &TestHub, path: &str, token: Option<&str>) -> Reply {
    let mut request = hub.client.get(hub.url(path));
    if let Some(t) = token {
        let (name, value) = bearer(t);
        request = request.header(name, value);
    }
    hub.send(request).await
}

/// Polls `path` until `done` holds for its JSON, within the usual wait.
async fn eventually(
    hub: &TestHub,
    path: &str,
    token: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    within(WAIT, "the subscription list to settle", async {
        loop {
            let reply = get_with(hub, path, Some(token)).await;
            assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.body);
            let doc = reply.json();
            if done(&doc) {
                return doc;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

#[tokio::test]
async fn the_subscription_api_lists_what_the_caller_may_see() {
    let hub = hub_with_keys(false).await;
    let alice = hs256(
        json!({"sub": "alice", "mercure": {"subscribe": ["users/alice"],
                                                         "payload": {"name": "Alice"}}}),
    );
    let (name, value) = bearer(&alice);
    let _stream = hub
        .sse("/.well-known/mercure?topic=jobs/1", &[(name, &value)])
        .await;
    let _anonymous = hub.subscribe("topic=jobs/2").await;

    let admin = hs256(json!({"mercure": {"subscribe": [
        "/.well-known/mercure/subscriptions{/topic}{/subscriber}"]}}));
    let all = get_with(&hub, SUBSCRIPTIONS, Some(&admin)).await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.body);
    assert_eq!(all.header("content-type"), "application/ld+json");
    let doc = all.json();
    assert_eq!(doc["type"], "Subscriptions");
    assert_eq!(doc["id"], SUBSCRIPTIONS);
    assert!(doc["lastEventID"].is_string());
    let subs = doc["subscriptions"].as_array().unwrap();
    assert_eq!(subs.len(), 2, "{doc}");
    let mine = subs
        .iter()
        .find(|s| s["subscriber"] == "alice")
        .expect("alice is listed");
    assert_eq!(mine["topic"], "jobs/1");
    assert_eq!(mine["active"], true);
    assert_eq!(mine["payload"]["name"], "Alice");
    assert_eq!(mine["id"], format!("{SUBSCRIPTIONS}/jobs%2F1/alice"));
    let anonymous = subs.iter().find(|s| s["subscriber"] != "alice").unwrap();
    assert!(
        anonymous["subscriber"]
            .as_str()
            .unwrap()
            .starts_with("urn:uuid:"),
        "anonymous subscribers get a hub-made id"
    );

    let by_topic = get_with(&hub, &format!("{SUBSCRIPTIONS}/jobs%2F1"), Some(&admin)).await;
    assert_eq!(
        by_topic.json()["subscriptions"].as_array().unwrap().len(),
        1
    );
    let one = get_with(
        &hub,
        &format!("{SUBSCRIPTIONS}/jobs%2F1/alice"),
        Some(&admin),
    )
    .await;
    assert_eq!(one.status, StatusCode::OK, "{}", one.body);
    assert_eq!(one.json()["subscriber"], "alice");
    let missing = get_with(&hub, &format!("{SUBSCRIPTIONS}/jobs%2F1/bob"), Some(&admin)).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    // A narrower token sees only what its selectors cover; no token or no coverage is refused.
    let narrow = hs256(json!({"mercure": {"subscribe": [
        SUBSCRIPTIONS, format!("{SUBSCRIPTIONS}/jobs%2F2{{/subscriber}}")]}}));
    let seen = get_with(&hub, SUBSCRIPTIONS, Some(&narrow)).await.json();
    let seen = seen["subscriptions"].as_array().unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["topic"], "jobs/2");
    assert_eq!(
        get_with(&hub, SUBSCRIPTIONS, None).await.status,
        StatusCode::UNAUTHORIZED
    );
    let other = hs256(json!({"mercure": {"subscribe": ["jobs/{id}"]}}));
    assert_eq!(
        get_with(&hub, SUBSCRIPTIONS, Some(&other)).await.status,
        StatusCode::FORBIDDEN
    );

    drop(_stream);
    eventually(&hub, SUBSCRIPTIONS, &admin, |doc| {
        doc["subscriptions"].as_array().unwrap().len() == 1
    })
    .await;
}

#[tokio::test]
async fn subscription_events_announce_arrivals_and_departures_privately() {
    let hub = hub_with_keys(true).await;
    let watcher = hs256(json!({"mercure": {"subscribe": [
        "/.well-known/mercure/subscriptions{/topic}{/subscriber}"]}}));
    let (name, value) = bearer(&watcher);
    let template = enc("/.well-known/mercure/subscriptions{/topic}{/subscriber}");
    let mut events = hub
        .sse(
            &format!("/.well-known/mercure?topic={template}"),
            &[(name, &value)],
        )
        .await;
    // The watcher's own subscription is announced first.
    let own: Value = serde_json::from_str(&events.next().await.data).unwrap();
    assert_eq!(own["active"], true);
    // An anonymous subscriber to the same template sees nothing: the events are private.
    let mut anonymous = hub.subscribe(&format!("topic={template}")).await;

    let alice = hs256(json!({"sub": "alice", "mercure": {"subscribe": []}}));
    let (name, value) = bearer(&alice);
    let stream = hub
        .sse("/.well-known/mercure?topic=jobs/1", &[(name, &value)])
        .await;
    let arrived: Value = loop {
        let doc: Value = serde_json::from_str(&events.next().await.data).unwrap();
        if doc["subscriber"] == "alice" {
            break doc;
        }
    };
    assert_eq!(arrived["active"], true);
    assert_eq!(arrived["topic"], "jobs/1");
    assert_eq!(arrived["type"], "Subscription");
    drop(stream);
    let departed: Value = loop {
        let doc: Value = serde_json::from_str(&events.next().await.data).unwrap();
        if doc["subscriber"] == "alice" {
            break doc;
        }
    };
    assert_eq!(departed["active"], false);
    anonymous.expect_silence(Duration::from_millis(300)).await;
}

const AUDIENCE: &str = "https://hub.example.com/.well-known/mercure";

fn access_token(details: Value, typ: Option<&str>, aud: Option<&str>) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.typ = typ.map(str::to_owned);
    let mut claims = json!({"exp": now() + 600, "authorization_details": details});
    if let Some(aud) = aud {
        claims["aud"] = json!(aud);
    }
    encode(
        &header,
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn newer_draft_access_tokens_are_accepted_and_checked() {
    let hub = hub_with(false, Some(AUDIENCE)).await;
    let reader = access_token(
        json!([{"type": "mercure", "actions": ["subscribe"],
                "topics": [{"match": "users/alice"}]}]),
        Some("at+jwt"),
        Some(AUDIENCE),
    );
    let writer = access_token(
        json!([{"type": "mercure", "actions": ["publish"],
                "topics": [{"match": "users/alice"}, {"match": "users/bob"}]}]),
        Some("at+jwt"),
        Some(AUDIENCE),
    );
    let (name, value) = bearer(&reader);
    let mut stream = hub
        .sse("/.well-known/mercure?topic=users/{id}", &[(name, &value)])
        .await;

    let publish = |token: String, topic: &'static str| {
        let request = hub
            .client
            .post(hub.url("/.well-known/mercure"))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&[
                ("topic", topic),
                ("data", topic),
                ("private", "on"),
            ]));
        hub.send(request)
    };
    let bob = publish(writer.clone(), "users/bob").await;
    assert_eq!(bob.status, StatusCode::OK, "{}", bob.body);
    let alice = publish(writer.clone(), "users/alice").await;
    assert_eq!(alice.status, StatusCode::OK, "{}", alice.body);
    let got = stream.next().await;
    assert_eq!(
        got.data, "users/alice",
        "only the authorized private event arrives"
    );
    assert_eq!(
        publish(writer.clone(), "users/carol").await.status,
        StatusCode::FORBIDDEN
    );

    let details = json!([{"type": "mercure", "actions": ["subscribe"],
                          "topics": [{"match": "users/alice"}]}]);
    for (token, why) in [
        (
            access_token(details.clone(), None, Some(AUDIENCE)),
            "typ is not at+jwt",
        ),
        (
            access_token(details.clone(), Some("at+jwt"), None),
            "no aud",
        ),
        (
            access_token(
                details.clone(),
                Some("at+jwt"),
                Some("https://other.example"),
            ),
            "another hub's aud",
        ),
        (
            access_token(
                json!([{"type": "mercure", "actions": ["subscribe"], "topics": [{"nope": 1}]}]),
                Some("at+jwt"),
                Some(AUDIENCE),
            ),
            "a malformed detail",
        ),
    ] {
        let (name, value) = bearer(&token);
        let refused = hub
            .try_sse("/.well-known/mercure?topic=users/alice", &[(name, &value)])
            .await
            .err()
            .unwrap_or_else(|| panic!("accepted a token with {why}"));
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{why}");
    }
}

/// A token whose `exp` is the largest possible: the stream's end is far away, not an overflow.
#[tokio::test]
async fn a_token_expiring_at_the_end_of_time_streams() {
    let hub = hub_with_keys(false).await;
    let token = hs256(json!({"exp": u64::MAX, "mercure": {"subscribe": ["*"]}}));
    let (name, value) = bearer(&token);
    let mut sub = hub
        .sse("/.well-known/mercure?topic=forever", &[(name, &value)])
        .await;
    let publisher = hs256(json!({"mercure": {"publish": ["*"]}}));
    let request = hub
        .client
        .post(hub.url("/.well-known/mercure"))
        .bearer_auth(publisher)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("topic=forever&data=x");
    let id = hub.send(request).await.body;
    assert_eq!(sub.next().await.id, id);
}

// ---------------------------------------------------------------------------------------------
// JWKS: keys by `kid`, from a file or a URL.

/// The public JWK of an RSA private key in PEM, under `kid`.
fn jwk(pem: &str, kid: &str) -> jsonwebtoken::jwk::Jwk {
    let key = EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
    let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&key, Algorithm::RS256).unwrap();
    jwk.common.key_id = Some(kid.into());
    jwk
}

/// A JWKS document holding `keys`.
fn jwk_set(keys: Vec<jsonwebtoken::jwk::Jwk>) -> String {
    serde_json::to_string(&jsonwebtoken::jwk::JwkSet { keys }).unwrap()
}

/// A publisher token for every topic, signed RS256 with `pem` under `kid`.
fn rs256_publisher(pem: &str, kid: &str) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.into());
    let claims = json!({"mercure": {"publish": ["*"]}});
    encode(
        &header,
        &claims,
        &EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

/// A hub whose publishers are verified against the JWKS at `jwks` (a path or a URL).
async fn jwks_hub(jwks: String) -> TestHub {
    spawn_hub_with(move |c| {
        c.auth.publisher = Some(KeyConfig {
            algorithm: Algorithm::RS256,
            key: String::new(),
            jwks: Some(jwks),
        });
    })
    .await
}

/// Publishes `topic=a` with `token` as a bearer; the status.
async fn publish_with(hub: &TestHub, token: String) -> StatusCode {
    let request = hub
        .client
        .post(hub.url("/.well-known/mercure"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("topic=a&data=x");
    hub.send(request).await.status
}

#[tokio::test]
async fn jwks_keys_are_chosen_by_kid() {
    let private = include_str!("fixtures/rsa_private.pem");
    let other = include_str!("fixtures/rsa_other_private.pem");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwk_set(vec![jwk(private, "k1")])).unwrap();
    let jwks = path.to_str().unwrap().to_owned();
    let hub = jwks_hub(jwks).await;
    assert_eq!(
        publish_with(&hub, rs256_publisher(private, "k1")).await,
        StatusCode::OK
    );
    // The right kid but another key's signature, and an unknown kid, are refused.
    assert_eq!(
        publish_with(&hub, rs256_publisher(other, "k1")).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        publish_with(&hub, rs256_publisher(other, "k2")).await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_cookie_authorized_publish_must_come_from_an_allowed_origin() {
    let hub = hub_with_keys(false).await;
    let token = hs256(json!({"mercure": {"publish": ["*"]}}));
    let own_origin = hub.base.clone();
    let publish = |origin: Option<String>, referer: Option<String>, bearer: bool| {
        let mut request = hub
            .client
            .post(hub.url("/.well-known/mercure"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("topic=csrf&data=x");
        request = if bearer {
            request.header("authorization", format!("Bearer {token}"))
        } else {
            request.header("cookie", format!("mercureAuthorization={token}"))
        };
        if let Some(o) = origin {
            request = request.header("origin", o);
        }
        if let Some(r) = referer {
            request = request.header("referer", r);
        }
        hub.send(request)
    };
    let foreign = Some("https://evil.example".to_owned());
    assert_eq!(
        publish(foreign.clone(), None, false).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        publish(None, None, false).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        publish(None, Some("https://evil.example/page".into()), false)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(hub.stats().await["events_stored"], 0, "nothing was stored");
    assert_eq!(
        publish(Some(own_origin.clone()), None, false).await.status,
        StatusCode::OK
    );
    assert_eq!(
        publish(None, Some(format!("{own_origin}/app")), false)
            .await
            .status,
        StatusCode::OK
    );
    // A bearer token is not sent by browsers on their own: no Origin needed.
    assert_eq!(publish(foreign, None, true).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_jwks_url_is_fetched_again_for_an_unknown_kid() {
    use std::sync::{Arc, Mutex};
    let private = include_str!("fixtures/rsa_private.pem");
    let other = include_str!("fixtures/rsa_other_private.pem");
    // The issuer's JWKS endpoint: a real HTTP server whose document the test rotates.
    let served = Arc::new(Mutex::new(jwk_set(vec![jwk(private, "k1")])));
    let fetches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (doc, count) = (served.clone(), fetches.clone());
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let body = doc.lock().unwrap().clone();
            async move { body }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let hub = jwks_hub(url).await;
    assert_eq!(
        publish_with(&hub, rs256_publisher(private, "k1")).await,
        StatusCode::OK
    );
    assert_eq!(
        fetches.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "fetched at start"
    );

    // The issuer rotates in a new key: the first token signed with it makes the hub refetch.
    *served.lock().unwrap() = jwk_set(vec![jwk(private, "k1"), jwk(other, "k2")]);
    assert_eq!(
        publish_with(&hub, rs256_publisher(other, "k2")).await,
        StatusCode::OK
    );
    assert_eq!(fetches.load(std::sync::atomic::Ordering::SeqCst), 2);
    // Another unknown kid right after is refused without hammering the issuer.
    assert_eq!(
        publish_with(&hub, rs256_publisher(other, "k3")).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(fetches.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// With subscription events, every stream writes durable events (its start, then its end), so
/// anonymous clients could write as fast as they connect: an address starts streams only at the
/// publish rate (buckets of their own), and a stream past it is refused with 429 before anything
/// is registered or written.
#[tokio::test]
async fn subscription_events_are_bounded_by_the_publish_rate_per_address() {
    let hub = spawn_hub_with(|c| {
        c.subscription_events = true;
        // Slow enough that no token comes back during the test.
        c.edge.publish_rate = Some(tidings::http::rate::PublishRate {
            per_second: 0.01,
            burst: 3,
        });
    })
    .await;
    let mut streams = Vec::new();
    for i in 0..3 {
        streams.push(hub.subscribe(&format!("topic=t{i}")).await);
    }
    let stored = |hub: &TestHub| {
        let hub = hub.http.clone();
        async move { hub.stats().await["events_stored"].as_u64().unwrap() }
    };
    let before = stored(&hub).await;
    assert_eq!(before, 3, "one start event per stream");
    let reply = hub.get("/.well-known/mercure?topic=t9").await;
    let reason = reply.assert_refused(429, "a 4th stream");
    assert!(reason.contains("subscription events"), "{reason}");
    assert!(reply.header("retry-after").parse::<u64>().unwrap() >= 1);
    assert_eq!(
        stored(&hub).await,
        before,
        "the refused stream wrote events"
    );
    // Publishing is not charged for the streams: it has its own buckets.
    let reply = hub.post_form(&[("topic", "t0"), ("data", "x")]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
}
