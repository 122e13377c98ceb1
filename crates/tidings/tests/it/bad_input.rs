//! Bad input: every malformed publish or subscription gets a 4xx with a one-line reason, nothing
//! is stored, and the hub keeps serving.

use std::time::Duration;

use crate::common::{enc, spawn_hub_with, TestHub};
use reqwest::StatusCode;
use serde_json::json;

const MAX_BODY: usize = 4096;

async fn hub() -> TestHub {
    spawn_hub_with(|c| {
        c.limits.max_body = MAX_BODY;
        c.limits.max_topics = 3;
        c.limits.max_selectors = 3;
    })
    .await
}

const FORM: Option<&str> = Some("application/x-www-form-urlencoded");
const JSON: Option<&str> = Some("application/json");

/// Asserts that only the event with id `only` (if any) is stored, and the hub still answers.
async fn assert_nothing_else_stored(hub: &TestHub, only: &[&str]) {
    let stored = crate::common::ids_of(&hub.history("topic=*").await);
    assert_eq!(stored, only, "refused input was stored");
    let stats = hub.stats().await;
    assert_eq!(stats["events_stored"], only.len(), "{stats}");
    assert_eq!(stats["published"], only.len(), "{stats}");
    let health = hub.get("/healthz").await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_form_publishes_are_refused() {
    let hub = hub().await;
    let cases: &[(&str, &[u8], &str)] = &[
        ("missing topic", b"data=x", "topic"),
        ("empty topic", b"topic=&data=x", "topic"),
        ("control character in topic", b"topic=a%01b", "topic"),
        ("invalid UTF-8, escaped", b"topic=a&data=%FF%FE", "UTF-8"),
        ("invalid UTF-8, raw", b"topic=a&data=\xff\xfe", "UTF-8"),
        ("invalid UTF-8 in topic", b"topic=%C3%28", "UTF-8"),
        ("LF in id", b"topic=a&id=x%0Ay", "id"),
        ("CR in id", b"topic=a&id=x%0Dy", "id"),
        ("CRLF in id", b"topic=a&id=x%0D%0Aid:%20forged", "id"),
        ("NUL in id", b"topic=a&id=x%00y", "id"),
        ("empty id", b"topic=a&id=", "id"),
        ("reserved id", b"topic=a&id=earliest", "earliest"),
        ("LF in type", b"topic=a&type=x%0Ay", "type"),
        ("CR in type", b"topic=a&type=x%0Dy", "type"),
        ("retry not a number", b"topic=a&retry=soon", "retry"),
        ("negative retry", b"topic=a&retry=-5", "retry"),
        ("fractional retry", b"topic=a&retry=1.5", "retry"),
        (
            "too many topics",
            b"topic=a&topic=b&topic=c&topic=d",
            "topics",
        ),
        ("data twice", b"topic=a&data=1&data=2", "data"),
    ];
    for (what, body, hint) in cases {
        let reply = hub.post("/.well-known/mercure", FORM, body.to_vec()).await;
        let reason = reply.assert_refused(400, what);
        assert!(
            reason.to_lowercase().contains(&hint.to_lowercase()),
            "{what}: the reason {reason:?} does not mention {hint:?}"
        );
    }
    // The limit is on topics: three are fine.
    let ok = hub
        .post_form(&[
            ("topic", "a"),
            ("topic", "b"),
            ("topic", "c"),
            ("id", "three-topics"),
        ])
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert_nothing_else_stored(&hub, &["three-topics"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_publishes_are_refused() {
    let hub = hub().await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("missing topic", br#"{"data":"x"}"#.to_vec()),
        ("null topic", br#"{"topic":null,"data":"x"}"#.to_vec()),
        ("empty topic list", br#"{"topics":[]}"#.to_vec()),
        ("topic not a string", br#"{"topic":5}"#.to_vec()),
        (
            "topic and topics",
            br#"{"topic":"a","topics":["b"]}"#.to_vec(),
        ),
        (
            "invalid UTF-8",
            b"{\"topic\":\"a\",\"data\":\"\xff\xfe\"}".to_vec(),
        ),
        (
            "lone surrogate",
            br#"{"topic":"a","data":"\ud800"}"#.to_vec(),
        ),
        ("LF in id", br#"{"topic":"a","id":"x\ny"}"#.to_vec()),
        ("CR in id", br#"{"topic":"a","id":"x\ry"}"#.to_vec()),
        ("LF in type", br#"{"topic":"a","type":"x\ny"}"#.to_vec()),
        ("CR in type", br#"{"topic":"a","type":"x\ry"}"#.to_vec()),
        (
            "retry not a number",
            br#"{"topic":"a","retry":"soon"}"#.to_vec(),
        ),
        ("negative retry", br#"{"topic":"a","retry":-1}"#.to_vec()),
        ("fractional retry", br#"{"topic":"a","retry":1.5}"#.to_vec()),
        (
            "too many topics",
            br#"{"topics":["a","b","c","d"]}"#.to_vec(),
        ),
        ("unknown field", br#"{"topic":"a","colour":"red"}"#.to_vec()),
        ("not an object", br#""just a string""#.to_vec()),
        ("not JSON", b"topic=a&data=x".to_vec()),
        ("truncated", br#"{"topic":"a","#.to_vec()),
        ("empty body", Vec::new()),
        ("empty batch", b"[]".to_vec()),
        (
            "batch with one bad event",
            br#"[{"topic":"a","id":"batch-ok"},{"topic":"a","retry":"x"}]"#.to_vec(),
        ),
        (
            "private not a boolean",
            br#"{"topic":"a","private":"yes please"}"#.to_vec(),
        ),
    ];
    for (what, body) in cases {
        let reply = hub.post("/.well-known/mercure", JSON, body).await;
        reply.assert_refused(400, what);
    }
    // The path form refuses the same.
    for (what, body) in [
        ("path: unknown field", br#"{"colour":"red"}"#.to_vec()),
        ("path: topic field", br#"{"topic":"b"}"#.to_vec()),
        ("path: LF in id", br#"{"id":"a\nb"}"#.to_vec()),
        ("path: invalid UTF-8", b"{\"data\":\"\xff\"}".to_vec()),
        ("path: retry not a number", br#"{"retry":"soon"}"#.to_vec()),
    ] {
        hub.post("/events/jobs/1", JSON, body)
            .await
            .assert_refused(400, what);
    }
    hub.post("/events/jobs/1", FORM, "topic=other&data=x")
        .await
        .assert_refused(400, "path: a topic form field");
    hub.post("/events/jobs/1", FORM, "data=%FF")
        .await
        .assert_refused(400, "path: invalid UTF-8 form");
    assert_nothing_else_stored(&hub, &[]).await;
}

/// serde_json keeps the last of two equal keys; a publish must not mean one thing to a proxy or
/// log that keeps the first and another to the hub, nor lose part of its data silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_json_keys_are_refused_at_any_depth() {
    let hub = hub().await;
    for (path, what, body) in [
        (
            "/.well-known/mercure",
            "topic twice",
            r#"{"topic":"a","topic":"b"}"#,
        ),
        (
            "/.well-known/mercure",
            "private twice",
            r#"{"topic":"a","private":true,"private":false}"#,
        ),
        (
            "/.well-known/mercure",
            "escaped twin",
            r#"{"topic":"a","\u0074opic":"b"}"#,
        ),
        (
            "/.well-known/mercure",
            "in data",
            r#"{"topic":"a","data":{"k":1,"k":2}}"#,
        ),
        (
            "/.well-known/mercure",
            "in a batch",
            r#"[{"topic":"a"},{"topic":"b","id":"x","id":"y"}]"#,
        ),
        (
            "/events/a",
            "path: data twice",
            r#"{"data":"x","data":"y"}"#,
        ),
        ("/events/a", "path: in data", r#"{"data":[{"k":1,"k":1}]}"#),
    ] {
        let reason = hub.post(path, JSON, body).await.assert_refused(400, what);
        assert!(reason.contains("duplicate key"), "{what}: {reason}");
    }
    assert_nothing_else_stored(&hub, &[]).await;
}

/// 404 and 405 answer a one-line reason like every other refusal (405 with `Allow`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_and_methods_get_a_one_line_reason() {
    let hub = hub().await;
    let reason = hub
        .get("/nowhere")
        .await
        .assert_refused(404, "unknown path");
    assert!(reason.contains("/nowhere"), "{reason}");
    hub.post("/.well-known/mercurey", FORM, "topic=a")
        .await
        .assert_refused(404, "unknown publish path");
    for (method, path, allow) in [
        (
            reqwest::Method::DELETE,
            "/.well-known/mercure",
            "GET,HEAD,POST",
        ),
        (reqwest::Method::PUT, "/events/a", "GET,HEAD,POST"),
        (reqwest::Method::POST, "/healthz", "GET,HEAD"),
    ] {
        let reply = hub
            .send(hub.client.request(method.clone(), hub.url(path)))
            .await;
        let reason = reply.assert_refused(405, &format!("{method} {path}"));
        assert!(reason.contains(method.as_str()), "{reason}");
        assert_eq!(reply.header("allow"), allow, "{method} {path}");
    }
    assert_nothing_else_stored(&hub, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_id_is_a_conflict_and_changes_nothing() {
    let hub = hub().await;
    hub.publish_fields(&[("topic", "a"), ("id", "once"), ("data", "original")])
        .await;
    hub.post_form(&[("topic", "b"), ("id", "once"), ("data", "second")])
        .await
        .assert_refused(409, "form duplicate");
    hub.post_json("/.well-known/mercure", &json!({"topic": "b", "id": "once"}))
        .await
        .assert_refused(409, "JSON duplicate");
    hub.post_json(
        "/.well-known/mercure",
        &json!([{"topic": "b", "id": "fresh"}, {"topic": "b", "id": "once"}]),
    )
    .await
    .assert_refused(409, "batch duplicate");
    hub.post_json("/events/b", &json!({"id": "once"}))
        .await
        .assert_refused(409, "path duplicate");
    assert_nothing_else_stored(&hub, &["once"]).await;
    let stored = hub.history("topic=*").await;
    assert_eq!(stored[0]["data"], "original");
    assert_eq!(stored[0]["topics"], json!(["a"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_are_413() {
    let hub = hub().await;
    let big = "x".repeat(MAX_BODY + 1);
    hub.post("/.well-known/mercure", FORM, format!("topic=a&data={big}"))
        .await
        .assert_refused(413, "form over the limit");
    hub.post(
        "/.well-known/mercure",
        JSON,
        json!({"topic": "a", "data": big}).to_string(),
    )
    .await
    .assert_refused(413, "JSON over the limit");
    hub.post("/events/a", JSON, json!({ "data": big }).to_string())
        .await
        .assert_refused(413, "path over the limit");
    // Without Content-Length (chunked), the limit still holds.
    let chunks: Vec<Result<String, std::io::Error>> = vec![
        Ok("topic=a&data=".to_owned()),
        Ok("y".repeat(MAX_BODY)),
        Ok("y".repeat(MAX_BODY)),
    ];
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    hub.post("/.well-known/mercure", FORM, body)
        .await
        .assert_refused(413, "chunked body over the limit");
    // Just under the limit is fine.
    let fits = format!("topic=a&id=fits&data={}", "z".repeat(MAX_BODY - 40));
    let ok = hub.post("/.well-known/mercure", FORM, fits).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert_nothing_else_stored(&hub, &["fits"]).await;
}

/// A client that sends a body far over the limit in one go (no `Expect: 100-continue`) reads its
/// 413, not a reset connection: the hub answers before reading the body, then drains what keeps
/// arriving before it closes (closing on unread bytes makes the kernel send a reset, which can
/// destroy the answer before the client reads it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_far_over_the_limit_still_gets_its_413() {
    let hub = hub().await;
    for i in 0..16 {
        let response = hub
            .client
            .post(hub.url("/.well-known/mercure"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(vec![b'x'; 8 << 20])
            .send()
            .await;
        match response {
            Ok(r) => assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE, "attempt {i}"),
            Err(e) => panic!("attempt {i}: no answer: {e:?}"),
        }
    }
    assert_nothing_else_stored(&hub, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_content_types_are_415() {
    let hub = hub().await;
    for ct in [
        "text/plain",
        "multipart/form-data; boundary=x",
        "application/xml",
    ] {
        hub.post("/.well-known/mercure", Some(ct), "topic=a&data=x")
            .await
            .assert_refused(415, ct);
        hub.post("/events/a", Some(ct), "data=x")
            .await
            .assert_refused(415, ct);
    }
    assert_nothing_else_stored(&hub, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_subscriptions_are_refused() {
    let hub = hub().await;
    let cases = [
        ("no topic", "/.well-known/mercure".to_owned()),
        ("only a type", "/.well-known/mercure?type=x".to_owned()),
        (
            "unclosed template",
            format!("/.well-known/mercure?topic={}", enc("jobs/{id")),
        ),
        (
            "bad template operator",
            format!("/.well-known/mercure?topic={}", enc("jobs/{!id}")),
        ),
        ("empty selector", "/.well-known/mercure?topic=".to_owned()),
        (
            "control character in an exact selector",
            "/.well-known/mercure?topic=a%00b".to_owned(),
        ),
        (
            "control character in match=",
            "/.well-known/mercure?match=a%01b".to_owned(),
        ),
        (
            "invalid UTF-8 selector",
            "/.well-known/mercure?topic=%FF".to_owned(),
        ),
        (
            "too many selectors",
            "/.well-known/mercure?topic=a&topic=b&topic=c&topic=d".to_owned(),
        ),
        (
            "selector over the length limit",
            format!(
                "/.well-known/mercure?topic={}",
                "x".repeat(tidings_core::selector::MAX_SELECTOR_LEN + 1)
            ),
        ),
        (
            "LF in type filter",
            "/.well-known/mercure?topic=a&type=x%0Ay".to_owned(),
        ),
        (
            "bad latest flag",
            "/.well-known/mercure?topic=a&latest=maybe".to_owned(),
        ),
        (
            "unknown matcher",
            "/.well-known/mercure?topic=a&matchRegex=.*".to_owned(),
        ),
        ("topic on the path form", "/events/a?topic=b".to_owned()),
        (
            "unclosed template, polling",
            format!("/events?topic={}&after=earliest", enc("jobs/{id")),
        ),
    ];
    for (what, path) in &cases {
        match hub.try_sse(path, &[]).await {
            Ok(sse) => panic!("{what}: {path} was accepted ({:?})", sse.headers),
            Err(reply) => {
                reply.assert_refused(400, what);
            }
        }
    }
    // A Last-Event-ID header that is not text.
    let reply = hub
        .send(
            hub.client
                .get(hub.url("/.well-known/mercure?topic=a"))
                .header(
                    "last-event-id",
                    reqwest::header::HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
                ),
        )
        .await;
    reply.assert_refused(400, "binary Last-Event-ID");
    // None of them registered a subscriber.
    let stats = hub.stats().await;
    assert_eq!(stats["subscribers"], 0, "{stats}");
    assert_nothing_else_stored(&hub, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_never_breaks_the_hub() {
    let hub = hub().await;
    let mut sub = hub.subscribe("topic=*").await;
    let bodies: Vec<Vec<u8>> = vec![
        vec![0xff; 100],
        b"%".to_vec(),
        b"&&&&===&&".to_vec(),
        b"topic".to_vec(),
        b"\0\0\0".to_vec(),
    ];
    for body in &bodies {
        for ct in [FORM, JSON, None] {
            let reply = hub.post("/.well-known/mercure", ct, body.clone()).await;
            assert!(
                reply.status.is_client_error(),
                "{body:?} as {ct:?}: {} {}",
                reply.status,
                reply.body
            );
        }
    }
    sub.expect_silence(Duration::from_millis(100)).await;
    assert_nothing_else_stored(&hub, &[]).await;
}

/// `/events/{topic}` names one topic: `*` there is refused (the wildcard belongs to the query,
/// where it counts among the subscriber's patterns), and nothing is streamed.
#[tokio::test]
async fn the_wildcard_is_no_path_topic() {
    let hub = spawn_hub_with(|_| {}).await;
    let reason = hub
        .get("/events/*")
        .await
        .assert_refused(400, "GET /events/*");
    assert!(reason.contains("?topic=*"), "{reason}");
}
