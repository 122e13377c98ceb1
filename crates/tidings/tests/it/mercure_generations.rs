//! Issue 12: Mercure as it ships today. Both token generations against ONE hub configuration
//! (an HS256 key, the resource identifier `AUDIENCE`, subscription events on): the 1.0 draft's
//! tokens as Mercure's tools mint them (`typ: at+jwt`, `aud`, authorization details of type
//! `https://mercure.rocks/authorization-detail` with `match_type`), the stable line's `mercure`
//! claim, the draft's examples (its subscriber example, its subscriptions API examples), the
//! reserved wildcard, RFC 6750 error responses, RFC 9728 metadata, idempotent retries and `/`.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tidings::auth::KeyConfig;

const KEY: &str = "!ChangeThisMercureHubJWTSecretKey!";
const AUDIENCE: &str = "https://hub.example.com/.well-known/mercure";
const DETAIL: &str = "https://mercure.rocks/authorization-detail";
const SUBSCRIPTIONS: &str = "/.well-known/mercure/subscriptions";
/// The subscriber of the draft's examples.
const BB3: &str = "urn:uuid:bb3de268-05b0-4c65-b44e-8f9acefc29d6";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sign(typ: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.typ = typ.map(str::to_owned);
    encode(&header, claims, &EncodingKey::from_secret(KEY.as_bytes())).unwrap()
}

/// A 1.0-draft access token for this hub carrying `details`.
fn access(details: Value) -> String {
    sign(
        Some("at+jwt"),
        &json!({"aud": AUDIENCE, "exp": now() + 600, "authorization_details": details}),
    )
}

/// A stable-line token: the `mercure` claim, no `typ`, no `aud`, no `exp`.
fn stable(publish: &[&str], subscribe: &[&str]) -> String {
    sign(
        None,
        &json!({"mercure": {"publish": publish, "subscribe": subscribe}}),
    )
}

/// The one hub configuration every test here uses (`legacy`: stable-line tokens accepted).
async fn hub(legacy: bool) -> TestHub {
    spawn_hub_with(move |c| {
        let key = KeyConfig {
            algorithm: Algorithm::HS256,
            key: KEY.into(),
            jwks: None,
        };
        c.auth.publisher = Some(key.clone());
        c.auth.subscriber = Some(key);
        c.auth.audience = Some(AUDIENCE.into());
        c.auth.legacy_tokens = legacy;
        c.subscription_events = true;
    })
    .await
}

async fn publish_with(hub: &TestHub, token: &str, fields: &[(&str, &str)]) -> Reply {
    hub.send(
        hub.client
            .post(hub.url("/.well-known/mercure"))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(fields)),
    )
    .await
}

async fn get_with(hub: &TestHub, path: &str, token: &str) -> Reply {
    hub.send(
        hub.client
            .get(hub.url(path))
            .header("authorization", format!("Bearer {token}")),
    )
    .await
}

async fn sse_with(hub: &TestHub, query: &str, token: &str) -> Sse {
    let value = format!("Bearer {token}");
    hub.sse(
        &format!("/.well-known/mercure?{query}"),
        &[("authorization", &value)],
    )
    .await
}

/// The draft's subscriber example: routing selects every book, the token reads books 1 and 7
/// only; private updates are published with a token minted the way Mercure's tools mint it, and
/// a stable-line publisher token works on the same hub.
#[tokio::test]
async fn both_generations_publish_and_subscribe_on_one_hub() {
    let hub = hub(true).await;
    let publisher = access(json!([
        {"type": DETAIL, "actions": ["publish"], "topics": [{"match": "*"}]}
    ]));
    let reader = access(
        json!([{"type": DETAIL, "actions": ["subscribe"], "topics": [
        {"match": "https://example.com/books/1", "match_type": "exact"},
        {"match": "https://example.com/books/7", "match_type": "exact"}]}]),
    );
    let mut stream = sse_with(
        &hub,
        "match_urlpattern=https%3A%2F%2Fexample.com%2Fbooks%2F%3Aid",
        &reader,
    )
    .await;
    let stable_publisher = stable(&["*"], &[]);
    for (token, book) in [
        (&publisher, "2"),
        (&stable_publisher, "1"),
        (&publisher, "7"),
    ] {
        let topic = format!("https://example.com/books/{book}");
        let reply = publish_with(
            &hub,
            token,
            &[("topic", &topic), ("data", book), ("private", "on")],
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "book {book}: {}", reply.body);
    }
    let public = publish_with(
        &hub,
        &publisher,
        &[("topic", "https://example.com/books/3"), ("data", "3")],
    )
    .await;
    assert_eq!(public.status, StatusCode::OK);
    let got: Vec<String> = stream.take(3).await.into_iter().map(|e| e.data).collect();
    assert_eq!(got, ["1", "7", "3"], "private book 2 is not for this token");

    // A stable-line subscriber on the same hub reads private events by its `mercure` claim.
    let mut old = sse_with(
        &hub,
        "topic=https://example.com/books/{id}&lastEventID=earliest",
        &stable(&[], &["https://example.com/books/2"]),
    )
    .await;
    let got: Vec<String> = old.take(2).await.into_iter().map(|e| e.data).collect();
    assert_eq!(got, ["2", "3"]);
}

/// Token failures answer 401 with the RFC 6750 challenge `error="invalid_token"` (and the RFC
/// 9728 `resource_metadata`), change nothing; a valid token without the scope is 403
/// `insufficient_scope`; no token is a bare `Bearer` challenge.
#[tokio::test]
async fn bad_tokens_are_invalid_token_and_change_nothing() {
    let hub = hub(true).await;
    let detail =
        |topic: Value| json!([{"type": DETAIL, "actions": ["publish"], "topics": [topic]}]);
    let refused = [
        (
            access(detail(json!({"match": "a", "match_type": "uritemplate"}))),
            "unsupported match_type",
        ),
        (
            access(detail(json!({"match": "*", "match_type": "regex"}))),
            "unsupported match_type with *",
        ),
        (
            access(detail(json!({"match": "a", "match_type": "URLPattern"}))),
            "match_type is case-sensitive",
        ),
        (
            access(detail(json!({"nope": "a"}))),
            "a matcher without match",
        ),
        (
            access(detail(json!("a"))),
            "a matcher that is not an object",
        ),
        (
            sign(
                None,
                &json!({"aud": AUDIENCE, "exp": now() + 60, "authorization_details": detail(json!({"match": "*"}))}),
            ),
            "details without typ at+jwt",
        ),
        (
            sign(
                Some("at+jwt"),
                &json!({"exp": now() + 60, "authorization_details": detail(json!({"match": "*"}))}),
            ),
            "no aud",
        ),
        (
            sign(
                Some("at+jwt"),
                &json!({"aud": "https://other.example/.well-known/mercure", "exp": now() + 60, "authorization_details": detail(json!({"match": "*"}))}),
            ),
            "another hub's aud",
        ),
        (
            sign(
                Some("at+jwt"),
                &json!({"aud": AUDIENCE, "authorization_details": detail(json!({"match": "*"}))}),
            ),
            "no exp",
        ),
        (
            sign(
                None,
                &json!({"aud": "https://other.example", "mercure": {"publish": ["*"]}}),
            ),
            "a stable token for another hub",
        ),
    ];
    for (token, why) in &refused {
        let reply = publish_with(&hub, token, &[("topic", "a"), ("data", "x")]).await;
        let reason = reply.assert_refused(401, why);
        assert!(!reason.is_empty(), "{why}");
        let challenge = reply.header("www-authenticate");
        assert!(
            challenge.starts_with("Bearer error=\"invalid_token\""),
            "{why}: {challenge}"
        );
        assert!(
            challenge.contains("resource_metadata=\"https://hub.example.com/.well-known/oauth-protected-resource/.well-known/mercure\""),
            "{why}: {challenge}"
        );
    }
    let none = hub.post_form(&[("topic", "a"), ("data", "x")]).await;
    none.assert_refused(401, "no token");
    assert!(
        none.header("www-authenticate")
            .starts_with("Bearer resource_metadata="),
        "{}",
        none.header("www-authenticate")
    );
    let narrow =
        access(json!([{"type": DETAIL, "actions": ["publish"], "topics": [{"match": "b"}]}]));
    let reply = publish_with(&hub, &narrow, &[("topic", "a"), ("data", "x")]).await;
    reply.assert_refused(403, "outside the token's topics");
    assert!(reply
        .header("www-authenticate")
        .starts_with("Bearer error=\"insufficient_scope\""));
    assert!(
        hub.history("topic=*").await.is_empty(),
        "nothing was stored"
    );
}

/// `--legacy-tokens false`: the same hub accepts access tokens only.
#[tokio::test]
async fn stable_tokens_can_be_turned_off() {
    let hub = hub(false).await;
    let reply = publish_with(&hub, &stable(&["*"], &[]), &[("topic", "a")]).await;
    let reason = reply.assert_refused(401, "a stable-line token");
    assert!(reason.contains("legacy-tokens"), "{reason}");
    let token =
        access(json!([{"type": DETAIL, "actions": ["publish"], "topics": [{"match": "*"}]}]));
    assert_eq!(
        publish_with(&hub, &token, &[("topic", "a")]).await.status,
        StatusCode::OK
    );
}

/// `match=*` (and `*` in a token) selects every topic; the topic `*` itself cannot be published.
#[tokio::test]
async fn the_wildcard_selects_everything_and_cannot_be_published_to() {
    let hub = hub(true).await;
    let publisher =
        access(json!([{"type": DETAIL, "actions": ["publish"], "topics": [{"match": "*"}]}]));
    let mut all = hub.subscribe("match=*").await;
    for topic in ["a", "https://example.com/x", "jobs/1"] {
        let reply = publish_with(&hub, &publisher, &[("topic", topic), ("data", topic)]).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    let got: Vec<String> = all.take(3).await.into_iter().map(|e| e.data).collect();
    assert_eq!(got, ["a", "https://example.com/x", "jobs/1"]);
    let reply = publish_with(&hub, &publisher, &[("topic", "*"), ("data", "no")]).await;
    let reason = reply.assert_refused(400, "the topic *");
    assert!(reason.contains("wildcard"), "{reason}");
    // The hub's namespace is reserved for the events it makes (subscription events).
    for topic in [
        "/.well-known/mercure/subscriptions/exact/a/b",
        "https://hub.example.com/.well-known/%6Dercure/subscriptions/x",
    ] {
        publish_with(&hub, &publisher, &[("topic", topic), ("data", "forged")])
            .await
            .assert_refused(403, topic);
    }
    let reply = hub.post_json("/events/*", &json!({"data": "no"})).await;
    assert!(reply.status.is_client_error());
    assert_eq!(
        hub.history("topic=*").await.len(),
        3,
        "nothing more was stored"
    );
}

/// The draft's subscriptions API examples: a subscriber with the draft's `match_urlpattern` and
/// a payload is listed, found by `{match_type}/{match}` and by its own id, and announced with a
/// private subscription event; a stable-line subscriber on the same hub keeps the stable shape.
#[tokio::test]
async fn the_drafts_subscriptions_api_examples() {
    let hub = hub(true).await;
    let watcher = access(
        json!([{"type": DETAIL, "actions": ["subscribe"], "topics": [
        {"match": "/.well-known/mercure/subscriptions{/:match_type}?{/:match}?{/:subscriber}?",
         "match_type": "urlpattern"}]}]),
    );
    // Subscription events of draft subscribers are private, on relative topics.
    let mut events = sse_with(
        &hub,
        "match_urlpattern=%2F.well-known%2Fmercure%2Fsubscriptions%2F%3Atype%2F%3Amatch%2F%3Asubscriber",
        &watcher,
    )
    .await;

    let subscriber = sign(
        Some("at+jwt"),
        &json!({"aud": AUDIENCE, "exp": now() + 600, "sub": BB3, "authorization_details": [
            {"type": DETAIL, "actions": ["subscribe"],
             "topics": [{"match": "https://example.com/:selector", "match_type": "urlpattern"}],
             "payload": {"foo": "bar"}}]}),
    );
    let _stream = sse_with(
        &hub,
        "match_urlpattern=https%3A%2F%2Fexample.com%2F%3Aselector",
        &subscriber,
    )
    .await;
    // The draft's example id, verbatim: each variable percent-encoded exactly once.
    let id = "/.well-known/mercure/subscriptions/urlpattern/https%3A%2F%2Fexample.com%2F%3Aselector/urn%3Auuid%3Abb3de268-05b0-4c65-b44e-8f9acefc29d6";
    let expected = json!({
        "id": id,
        "type": "Subscription",
        "match_type": "urlpattern",
        "match": "https://example.com/:selector",
        "subscriber": BB3,
        "active": true,
        "payload": {"foo": "bar"},
    });
    // The watcher's own subscription is announced first (it may see it too).
    let mut doc: Value = loop {
        let announced = events.next().await;
        let doc: Value = serde_json::from_str(&announced.data).unwrap();
        if doc["subscriber"] == BB3 {
            break doc;
        }
    };
    assert_eq!(doc["@context"], "https://mercure.rocks/");
    doc.as_object_mut().unwrap().remove("@context");
    assert_eq!(doc, expected);

    let all = get_with(&hub, SUBSCRIPTIONS, &watcher).await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.body);
    assert_eq!(all.header("content-type"), "application/ld+json");
    let all = all.json();
    assert_eq!(all["type"], "Subscriptions");
    assert_eq!(all["id"], SUBSCRIPTIONS);
    assert!(all["last_event_id"].is_string());
    assert!(
        all["subscriptions"].as_array().unwrap().contains(&expected),
        "{all}"
    );

    let by_match = format!("{SUBSCRIPTIONS}/urlpattern/https%3A%2F%2Fexample.com%2F%3Aselector");
    let collection = get_with(&hub, &by_match, &watcher).await.json();
    assert_eq!(collection["id"], by_match);
    assert_eq!(collection["subscriptions"], json!([expected.clone()]));
    let exact = get_with(
        &hub,
        &format!("{SUBSCRIPTIONS}/exact/https%3A%2F%2Fexample.com%2F%3Aselector"),
        &watcher,
    )
    .await
    .json();
    assert_eq!(
        exact["subscriptions"],
        json!([]),
        "the matcher type is part of the key"
    );

    let one = get_with(&hub, id, &watcher).await;
    assert_eq!(one.status, StatusCode::OK, "{}", one.body);
    let one = one.json();
    assert_eq!(one["match"], "https://example.com/:selector");
    assert_eq!(one["payload"], json!({"foo": "bar"}));
    assert!(one["last_event_id"].is_string());
    get_with(
        &hub,
        &format!("{SUBSCRIPTIONS}/urlpattern/https%3A%2F%2Fexample.com%2F%3Aselector/nobody"),
        &watcher,
    )
    .await
    .assert_refused(404, "an unknown subscriber");

    // A token without subscribe rights on the API path: 403.
    let outsider =
        access(json!([{"type": DETAIL, "actions": ["subscribe"], "topics": [{"match": "x"}]}]));
    get_with(&hub, SUBSCRIPTIONS, &outsider)
        .await
        .assert_refused(403, "no scope on the API");

    // The stable line's subscriber and API, on the same hub.
    let old = sign(
        None,
        &json!({"sub": "alice", "mercure": {"subscribe": ["/.well-known/mercure/subscriptions/{topic}/{subscriber}"]}}),
    );
    let _old_stream = sse_with(&hub, "topic=jobs/1", &old).await;
    let old_api = stable(&[], &["*"]);
    let found = get_with(&hub, &format!("{SUBSCRIPTIONS}/jobs%2F1/alice"), &old_api).await;
    assert_eq!(found.status, StatusCode::OK, "{}", found.body);
    let found = found.json();
    assert_eq!(found["topic"], "jobs/1");
    assert_eq!(found["id"], format!("{SUBSCRIPTIONS}/jobs%2F1/alice"));
    assert!(found["lastEventID"].is_string());
}

/// RFC 9728: the protected-resource metadata at the path derived from the hub's URL.
#[tokio::test]
async fn protected_resource_metadata_is_discoverable() {
    let hub = hub(true).await;
    let reply = hub
        .get("/.well-known/oauth-protected-resource/.well-known/mercure")
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let doc = reply.json();
    assert_eq!(doc["resource"], AUDIENCE);
    assert_eq!(
        doc["authorization_details_types_supported"],
        json!([DETAIL, "mercure"])
    );
    assert_eq!(doc["bearer_methods_supported"], json!(["header", "query"]));
    assert_eq!(doc["mercure_cookie"], true);
    assert_eq!(doc["mercure_subscriptions"], true);
}

/// A publish retried with the same id and the same event answers the original id (200,
/// `"duplicate": true` in JSON) and stores nothing more; the same id with other content is 409.
#[tokio::test]
async fn a_retried_publish_is_answered_not_stored_twice() {
    let hub = hub(true).await;
    let token = stable(&["*"], &["*"]);
    let fields = [
        ("topic", "orders/1"),
        ("topic", "orders"),
        ("id", "order-1"),
        ("data", "paid"),
        ("type", "order"),
        ("retry", "500"),
        ("private", "on"),
    ];
    let first = publish_with(&hub, &token, &fields).await;
    assert_eq!(
        (first.status, first.body.as_str()),
        (StatusCode::OK, "order-1")
    );
    let again = publish_with(&hub, &token, &fields).await;
    assert_eq!(
        (again.status, again.body.as_str()),
        (StatusCode::OK, "order-1"),
        "a retry"
    );
    for (i, changed) in [
        ("data", "refunded"),
        ("type", "other"),
        ("retry", "501"),
        ("topic", "orders/2"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut different: Vec<(&str, &str)> = fields
            .iter()
            .filter(|(n, _)| *n != changed.0)
            .copied()
            .collect();
        different.push(changed);
        publish_with(&hub, &token, &different)
            .await
            .assert_refused(409, &format!("change {i}: {changed:?}"));
    }
    let public: Vec<_> = fields
        .iter()
        .filter(|(n, _)| *n != "private")
        .copied()
        .collect();
    publish_with(&hub, &token, &public)
        .await
        .assert_refused(409, "public, not private");

    // JSON: one event, then a batch holding a retry and a new event.
    let json_publish = |body: Value| {
        hub.send(
            hub.client
                .post(hub.url("/.well-known/mercure"))
                .header("authorization", format!("Bearer {token}"))
                .json(&body),
        )
    };
    let event = json!({"topic": "orders/2", "id": "order-2", "data": {"total": 3}});
    let reply = json_publish(event.clone()).await;
    assert_eq!(reply.json(), json!({"id": "order-2"}));
    let reply = json_publish(event.clone()).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json(), json!({"id": "order-2", "duplicate": true}));
    let reply = json_publish(json!([event, {"topic": "orders/3", "id": "order-3"}])).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        reply.json(),
        json!({"ids": ["order-2", "order-3"], "duplicates": ["order-2"]})
    );
    let ids = hub
        .history_ids(&format!("topic=*&authorization={token}"))
        .await;
    assert_eq!(ids, ["order-1", "order-2", "order-3"], "each stored once");
}

/// `GET /` is a page (the dashboard) that names the hub and holds no secret: Mercure's
/// conformance suite opens the hub's origin there.
#[tokio::test]
async fn the_root_is_a_small_page() {
    let hub = hub(true).await;
    let reply = hub.get("/").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.header("content-type").starts_with("text/html"));
    assert!(reply.body.contains("Tidings"));
    assert!(!reply.body.contains(KEY));
}

/// The reserved namespace is the hub's path, whatever `--jwt-audience` names: with a bare
/// origin as the audience, ordinary topics still publish and the hub's own still do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_as_audience_leaves_ordinary_topics_publishable() {
    let hub = spawn_hub_with(|c| c.auth.audience = Some("https://hub.example.com".into())).await;
    for topic in ["jobs/1", "https://example.com/books/1", "/a/b"] {
        let reply = hub.post_form(&[("topic", topic), ("data", "x")]).await;
        assert_eq!(reply.status, StatusCode::OK, "{topic}: {}", reply.body);
    }
    let reply = hub
        .post_form(&[
            ("topic", "/.well-known/mercure/subscriptions/x"),
            ("data", "x"),
        ])
        .await;
    reply.assert_refused(403, "the hub's namespace");
}
