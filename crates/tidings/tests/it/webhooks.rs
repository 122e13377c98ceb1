//! Webhook ingestion end to end: real signed HTTP deliveries (Standard Webhooks, Stripe, GitHub,
//! generic HMAC, bearer token) against the real server, checked through what is stored and what
//! SSE subscribers receive; and the job flow the issue describes, from webhook to a progress
//! stream that ends at the terminal event, including the page that subscribes after completion.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common::{spawn_hub_with, Reply, TestHub};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::Sha256;
use tidings::ingest::Webhooks;

/// The Standard Webhooks secret of the examples (key bytes in base64 after `whsec_`).
const STANDARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const STRIPE_SECRET: &str = "whsec_stripe_test_secret";
const GITHUB_SECRET: &str = "It's a Secret to Everybody";
const HMAC_SECRET: &str = "generic-secret";
const BEARER_TOKEN: &str = "bearer-token-0123456789";

const CONFIG: &str = r#"
[webhooks.jobs]
scheme = "standard"
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
topic = "jobs/{/id}"
type_from = "/status"
type_map = { QUEUED = "queued", PROCESSING = "processing", IN_PROGRESS = "progress", COMPLETED = "completed", FAILED = "failed" }
type_map_strict = true

[webhooks.stripe]
scheme = "stripe"
secret = "whsec_stripe_test_secret"
topic = "payments/{/data/object/id}"
type_from = "/type"

[webhooks.github]
scheme = "github"
secret = "It's a Secret to Everybody"
topic = "repos/{/repository/full_name}"
type = "push"

[webhooks.generic]
scheme = "hmac"
secret = "generic-secret"
signature_header = "X-Signature"
signature_prefix = "sha256="
signature_encoding = "base64"
timestamp_header = "X-Timestamp"
delivery_id_header = "X-Delivery"
topic = "builds/{/build}"
type = "finished"

[webhooks.bearer]
scheme = "bearer"
token = "bearer-token-0123456789"
topic = "alerts/{/alert/id}"
type_from = "/state"
delivery_id_from = "/alert/event"
private = true

[webhooks.slim]
scheme = "bearer"
token = "bearer-token-0123456789"
topic = "jobs/{/id}"
type_from = "/status"
type_map = { IN_PROGRESS = "progress" }
delivery_id_header = "X-Delivery"

[webhooks.slim.data]
percent = "/progress"
url = "/output/url"
"#;

async fn hub() -> TestHub {
    hub_with_max_body(1 << 20).await
}

async fn hub_with_max_body(max_body: usize) -> TestHub {
    spawn_hub_with(move |config| {
        config.webhooks = Webhooks::from_toml(CONFIG).expect("the test webhooks are valid");
        config.limits.max_body = max_body;
    })
    .await
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// A delivery: headers and body, sent as a sender would.
struct Delivery {
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Delivery {
    fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    async fn send(&self, hub: &TestHub) -> Reply {
        let mut request = hub
            .client
            .post(hub.url(&self.path))
            .header("content-type", "application/json")
            .body(self.body.clone());
        for (name, value) in &self.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        hub.send(request).await
    }

    /// Sends it and asserts it was stored (or found stored); returns `(id, duplicate)`.
    async fn accepted(&self, hub: &TestHub) -> (String, bool) {
        let reply = self.send(hub).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "delivery to {} refused: {}",
            self.path,
            reply.body
        );
        let answer = reply.json();
        (
            answer["id"].as_str().expect("an id").to_owned(),
            answer["duplicate"].as_bool().expect("a duplicate flag"),
        )
    }
}

/// A Standard Webhooks delivery to `/webhooks/jobs` signed at `timestamp`.
fn standard(id: &str, timestamp: u64, body: &str) -> Delivery {
    let key = BASE64
        .decode(STANDARD_SECRET.trim_start_matches("whsec_"))
        .expect("base64 secret");
    let ts = timestamp.to_string();
    let sig = hmac_sha256(
        &key,
        &[id.as_bytes(), b".", ts.as_bytes(), b".", body.as_bytes()],
    );
    Delivery {
        path: "/webhooks/jobs".into(),
        headers: vec![
            ("webhook-id".into(), id.into()),
            ("webhook-timestamp".into(), ts),
            (
                "webhook-signature".into(),
                format!("v1,{}", BASE64.encode(sig)),
            ),
        ],
        body: body.into(),
    }
}

fn stripe(timestamp: u64, body: &str, secret: &str) -> Delivery {
    let sig = hmac_sha256(
        secret.as_bytes(),
        &[timestamp.to_string().as_bytes(), b".", body.as_bytes()],
    );
    Delivery {
        path: "/webhooks/stripe".into(),
        headers: vec![(
            "Stripe-Signature".into(),
            format!("t={timestamp},v1={}", hex::encode(sig)),
        )],
        body: body.into(),
    }
}

fn github(delivery: &str, body: &str, secret: &str) -> Delivery {
    let sig = hmac_sha256(secret.as_bytes(), &[body.as_bytes()]);
    Delivery {
        path: "/webhooks/github".into(),
        headers: vec![
            ("X-GitHub-Event".into(), "push".into()),
            ("X-GitHub-Delivery".into(), delivery.into()),
            (
                "X-Hub-Signature-256".into(),
                format!("sha256={}", hex::encode(sig)),
            ),
        ],
        body: body.into(),
    }
}

fn generic(delivery: &str, timestamp: u64, body: &str, secret: &str) -> Delivery {
    let ts = timestamp.to_string();
    let sig = hmac_sha256(secret.as_bytes(), &[ts.as_bytes(), b".", body.as_bytes()]);
    Delivery {
        path: "/webhooks/generic".into(),
        headers: vec![
            ("X-Delivery".into(), delivery.into()),
            ("X-Timestamp".into(), ts),
            (
                "X-Signature".into(),
                format!("sha256={}", BASE64.encode(sig)),
            ),
        ],
        body: body.into(),
    }
}

fn bearer(path: &str, token: &str, body: &str) -> Delivery {
    Delivery {
        path: path.into(),
        headers: vec![("Authorization".into(), format!("Bearer {token}"))],
        body: body.into(),
    }
}

/// Every stored event, public and private (as `/stats` counts them).
async fn stored(hub: &TestHub) -> u64 {
    hub.stats().await["events_stored"]
        .as_u64()
        .expect("events_stored")
}

#[tokio::test]
async fn a_standard_webhook_delivery_becomes_an_event() {
    let hub = hub().await;
    let body = r#"{"id":"42","status":"IN_PROGRESS","progress":50}"#;
    let (id, duplicate) = standard("msg_1", now(), body).accepted(&hub).await;
    assert_eq!(
        id, "webhook:jobs:msg_1",
        "the id derives from the delivery id"
    );
    assert!(!duplicate);
    let events = hub.history("topic=jobs/42").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["id"], id);
    assert_eq!(events[0]["type"], "progress", "IN_PROGRESS is mapped");
    assert_eq!(events[0]["data"], body, "data is the payload as sent");
    assert_eq!(events[0]["private"], false);
}

#[tokio::test]
async fn every_scheme_verifies_its_own_signatures() {
    let hub = hub().await;
    let t = now();

    let body =
        r#"{"id":"evt_1","type":"payment_intent.succeeded","data":{"object":{"id":"pi_9"}}}"#;
    let (id, _) = stripe(t, body, STRIPE_SECRET).accepted(&hub).await;
    assert_eq!(
        id, "webhook:stripe:evt_1",
        "Stripe's event id names the delivery"
    );
    stripe(t, body, "whsec_other")
        .send(&hub)
        .await
        .assert_refused(401, "stripe, wrong secret");

    let body = r#"{"ref":"refs/heads/main","repository":{"full_name":"acme/app"}}"#;
    let (id, _) = github("d-1", body, GITHUB_SECRET).accepted(&hub).await;
    assert_eq!(id, "webhook:github:d-1");
    github("d-2", body, "other")
        .send(&hub)
        .await
        .assert_refused(401, "github, wrong secret");

    let body = r#"{"build":"b7","ok":true}"#;
    let (id, _) = generic("g-1", t, body, HMAC_SECRET).accepted(&hub).await;
    assert_eq!(id, "webhook:generic:g-1");
    generic("g-2", t, body, "other")
        .send(&hub)
        .await
        .assert_refused(401, "hmac, wrong secret");

    let body = r#"{"alert":{"id":"cpu","event":"e-1"},"state":"firing"}"#;
    let (id, _) = bearer("/webhooks/bearer", BEARER_TOKEN, body)
        .accepted(&hub)
        .await;
    assert_eq!(id, "webhook:bearer:e-1");
    bearer("/webhooks/bearer", "guess", body)
        .send(&hub)
        .await
        .assert_refused(401, "wrong token");

    let topics: Vec<String> = hub
        .history("topic=*")
        .await
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["topics"][0].as_str().unwrap(),
                e["type"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        topics,
        [
            "payments/pi_9 payment_intent.succeeded",
            "repos/acme/app push",
            "builds/b7 finished",
        ],
        "the bearer webhook is private: not in an anonymous history"
    );
    assert_eq!(stored(&hub).await, 4, "refused deliveries stored nothing");
}

#[tokio::test]
async fn a_bad_signature_is_refused_with_its_reason_and_stores_nothing() {
    let hub = hub().await;
    let body = r#"{"id":"42","status":"COMPLETED"}"#;
    let good = standard("msg_1", now(), body);

    let mut tampered = standard("msg_1", now(), body);
    tampered.body = r#"{"id":"43","status":"COMPLETED"}"#.into();
    let reason = tampered
        .send(&hub)
        .await
        .assert_refused(401, "tampered body");
    assert!(reason.contains("signature does not match"), "{reason}");

    let other_id = standard("msg_1", now(), body).header("webhook-id", "msg_2");
    other_id
        .send(&hub)
        .await
        .assert_refused(401, "the id is signed");

    let garbage = standard("msg_1", now(), body).header("webhook-signature", "v1,!!!");
    garbage
        .send(&hub)
        .await
        .assert_refused(401, "undecodable signature");

    let mut unsigned = standard("msg_1", now(), body);
    unsigned.headers.retain(|(n, _)| n != "webhook-signature");
    let reason = unsigned
        .send(&hub)
        .await
        .assert_refused(401, "no signature");
    assert!(
        reason.contains("missing header webhook-signature"),
        "{reason}"
    );

    assert_eq!(stored(&hub).await, 0);
    good.accepted(&hub).await;
    assert_eq!(
        stored(&hub).await,
        1,
        "the genuine delivery still goes through"
    );
}

#[tokio::test]
async fn a_stale_timestamp_is_refused_even_when_correctly_signed() {
    let hub = hub().await;
    let body = r#"{"id":"42","status":"COMPLETED"}"#;
    let hour_ago = now() - 3600;
    let reason = standard("msg_old", hour_ago, body)
        .send(&hub)
        .await
        .assert_refused(401, "standard, an hour old");
    assert!(reason.contains("tolerance of 300 s"), "{reason}");
    standard("msg_future", now() + 3600, body)
        .send(&hub)
        .await
        .assert_refused(401, "standard, an hour ahead");

    let stripe_body = r#"{"id":"evt_old","type":"x","data":{"object":{"id":"pi_1"}}}"#;
    stripe(hour_ago, stripe_body, STRIPE_SECRET)
        .send(&hub)
        .await
        .assert_refused(401, "stripe, an hour old");
    generic("g-old", hour_ago, r#"{"build":"b1"}"#, HMAC_SECRET)
        .send(&hub)
        .await
        .assert_refused(401, "hmac, an hour old");
    // A signature made with the timestamp the attacker wants is not the sender's.
    let forged =
        standard("msg_old", hour_ago, body).header("webhook-timestamp", &now().to_string());
    forged
        .send(&hub)
        .await
        .assert_refused(401, "re-dated replay");

    assert_eq!(stored(&hub).await, 0);
}

#[tokio::test]
async fn a_replayed_delivery_publishes_once() {
    let hub = hub().await;
    let body = r#"{"id":"42","status":"COMPLETED"}"#;
    let delivery = standard("msg_replayed", now(), body);
    let first = delivery.accepted(&hub).await;
    // The very same request again, within the tolerance window (a sender's retry after a lost
    // answer, or someone replaying a captured request).
    let second = delivery.accepted(&hub).await;
    let third = delivery.accepted(&hub).await;
    assert_eq!(first, ("webhook:jobs:msg_replayed".to_owned(), false));
    assert_eq!(second, ("webhook:jobs:msg_replayed".to_owned(), true));
    assert_eq!(third, second);
    assert_eq!(hub.history_ids("topic=jobs/42").await, [first.0]);
}

#[tokio::test]
async fn a_duplicate_delivery_with_a_fresh_signature_publishes_once() {
    let hub = hub().await;
    let body = r#"{"id":"42","status":"PROCESSING"}"#;
    // Standard Webhooks retries keep webhook-id and sign again with a new timestamp.
    let (id, duplicate) = standard("msg_retry", now() - 60, body).accepted(&hub).await;
    assert!(!duplicate);
    let (again, duplicate) = standard("msg_retry", now(), body).accepted(&hub).await;
    assert_eq!((again.as_str(), duplicate), (id.as_str(), true));

    // Stripe names the delivery by the payload's event id.
    let body = r#"{"id":"evt_dup","type":"charge.succeeded","data":{"object":{"id":"ch_1"}}}"#;
    assert!(
        !stripe(now() - 5, body, STRIPE_SECRET)
            .accepted(&hub)
            .await
            .1
    );
    assert!(stripe(now(), body, STRIPE_SECRET).accepted(&hub).await.1);

    // Several copies at once: one is stored, the others are told it already was.
    let body = r#"{"id":"43","status":"COMPLETED"}"#;
    let copies: Vec<Delivery> = (0..6).map(|_| standard("msg_burst", now(), body)).collect();
    let answers = futures_util::future::join_all(copies.iter().map(|d| d.accepted(&hub))).await;
    let fresh = answers.iter().filter(|(_, duplicate)| !duplicate).count();
    assert_eq!(fresh, 1, "{answers:?}");
    assert!(answers.iter().all(|(id, _)| id == "webhook:jobs:msg_burst"));

    assert_eq!(stored(&hub).await, 3);
    assert_eq!(hub.history_ids("topic=jobs/43").await.len(), 1);
}

#[tokio::test]
async fn unknown_fields_are_accepted_and_kept() {
    let hub = hub().await;
    let body = json!({
        "id": "42",
        "status": "COMPLETED",
        "model": {"name": "restore-v3", "weights": [1, 2, 3]},
        "a brand new field": null,
        "output": {"url": "/photos/42.jpg", "width": 2048},
    })
    .to_string();
    standard("msg_1", now(), &body).accepted(&hub).await;
    let event = &hub.history("topic=jobs/42").await[0];
    let data: Value = serde_json::from_str(event["data"].as_str().unwrap()).unwrap();
    assert_eq!(data, serde_json::from_str::<Value>(&body).unwrap());

    // With selected data fields, the extra fields are accepted but not carried.
    let body = r#"{"id":"7","status":"IN_PROGRESS","progress":30,"eta":{"s":12},"x":[]}"#;
    bearer("/webhooks/slim", BEARER_TOKEN, body)
        .header("X-Delivery", "s-1")
        .accepted(&hub)
        .await;
    let event = &hub.history("topic=jobs/7").await[0];
    assert_eq!(event["type"], "progress");
    let data: Value = serde_json::from_str(event["data"].as_str().unwrap()).unwrap();
    assert_eq!(
        data,
        json!({"percent": 30}),
        "absent fields (url) are left out"
    );
}

#[tokio::test]
async fn a_payload_the_mapping_cannot_place_is_422_and_stores_nothing() {
    let hub = hub().await;
    let cases = [
        (r#"{"status":"COMPLETED"}"#, "no field at /id"),
        (
            r#"{"id":{"nested":1},"status":"COMPLETED"}"#,
            "an object, not a string",
        ),
        (
            r#"{"id":"42","status":"EXPLODED"}"#,
            "\"EXPLODED\" is not in the webhook's type_map",
        ),
        (r#"{"id":"42"}"#, "no field at /status"),
        (r#"{"id":"","status":"COMPLETED"}"#, "empty string"),
        (r#"[1,2,3]"#, "no field at /id"),
    ];
    for (i, (body, expected)) in cases.into_iter().enumerate() {
        let reason = standard(&format!("msg_{i}"), now(), body)
            .send(&hub)
            .await
            .assert_refused(422, body);
        assert!(reason.contains(expected), "{body}: {reason}");
    }
    let reason = standard("msg_x", now(), "{not json")
        .send(&hub)
        .await
        .assert_refused(400, "not JSON");
    assert!(reason.contains("not JSON"), "{reason}");
    let reason = bearer("/webhooks/slim", BEARER_TOKEN, r#"{"id":"1","status":"X"}"#)
        .send(&hub)
        .await
        .assert_refused(400, "no delivery id");
    assert!(reason.contains("x-delivery"), "{reason}");
    assert_eq!(stored(&hub).await, 0);
}

#[tokio::test]
async fn an_oversized_body_is_413_and_stores_nothing() {
    let hub = hub_with_max_body(1024).await;
    let big = json!({"id": "42", "status": "COMPLETED", "log": "x".repeat(2000)}).to_string();
    standard("msg_big", now(), &big)
        .send(&hub)
        .await
        .assert_refused(413, "a body over max_body");
    assert_eq!(stored(&hub).await, 0);
    standard("msg_small", now(), r#"{"id":"42","status":"COMPLETED"}"#)
        .accepted(&hub)
        .await;
}

#[tokio::test]
async fn an_unknown_webhook_is_404() {
    let hub = hub().await;
    let body = r#"{"id":"42","status":"COMPLETED"}"#;
    let mut delivery = standard("msg_1", now(), body);
    delivery.path = "/webhooks/nope".into();
    let reason = delivery
        .send(&hub)
        .await
        .assert_refused(404, "unknown webhook");
    assert!(reason.contains("nope"), "{reason}");
    assert_eq!(
        hub.get("/webhooks/jobs").await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(stored(&hub).await, 0);
}

/// The job service's side of the example: queued, progress 10..100, then completed or failed.
async fn run_job(hub: &TestHub, job: &str, outcome: &str) -> Vec<String> {
    let mut steps = vec![json!({"id": job, "status": "QUEUED"})];
    steps.push(json!({"id": job, "status": "PROCESSING"}));
    for percent in (10..=100).step_by(30) {
        steps.push(json!({"id": job, "status": "IN_PROGRESS", "progress": percent}));
    }
    steps.push(match outcome {
        "completed" => json!({"id": job, "status": "COMPLETED", "output": {"url": format!("/photos/{job}.jpg")}}),
        _ => json!({"id": job, "status": "FAILED", "error": "out of memory"}),
    });
    let mut ids = Vec::new();
    for (n, step) in steps.iter().enumerate() {
        let (id, _) = standard(&format!("msg_{job}_{n}"), now(), &step.to_string())
            .accepted(hub)
            .await;
        ids.push(id);
    }
    ids
}

#[tokio::test]
async fn a_job_streams_from_webhooks_to_the_page_and_the_stream_ends_at_completion() {
    let hub = hub().await;
    let terminal = "until=completed&until=failed";
    let mut page = hub
        .subscribe(&format!("topic=jobs/{{id}}&latest=1&{terminal}"))
        .await;
    let mut other_job = hub.subscribe(&format!("topic=jobs/j-2&{terminal}")).await;

    let ids = run_job(&hub, "j-1", "completed").await;
    let events = page.take(ids.len()).await;
    let types: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(
        types,
        [
            "queued",
            "processing",
            "progress",
            "progress",
            "progress",
            "progress",
            "completed"
        ]
    );
    assert_eq!(events.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), ids);
    let percents: Vec<u64> = events
        .iter()
        .filter(|e| e.event == "progress")
        .map(|e| {
            serde_json::from_str::<Value>(&e.data).unwrap()["progress"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(percents, [10, 40, 70, 100]);
    assert_eq!(
        page.expect_end().await.len(),
        0,
        "the stream ends right after completed"
    );

    // A page that subscribes after the job finished learns it at once, then the stream ends.
    let mut late = hub
        .subscribe(&format!("topic=jobs/j-1&latest=1&{terminal}"))
        .await;
    let first = late.next().await;
    assert_eq!(
        (first.event.as_str(), first.id.as_str()),
        ("completed", ids[6].as_str())
    );
    assert!(first.data.contains("/photos/j-1.jpg"));
    assert_eq!(late.expect_end().await.len(), 0);

    // Without `until` a late joiner also gets completed at once, and the stream stays open.
    let mut open = hub.subscribe("topic=jobs/j-1&latest=1").await;
    assert_eq!(open.next().await.event, "completed");
    open.expect_silence(Duration::from_millis(200)).await;

    // A failed job ends its stream the same way; the other job's subscriber saw only its job.
    let failed = run_job(&hub, "j-2", "failed").await;
    let events = other_job.take(failed.len()).await;
    assert_eq!(events.last().unwrap().event, "failed");
    assert!(events.iter().all(|e| failed.contains(&e.id)));
    assert_eq!(other_job.expect_end().await.len(), 0);

    // A reconnecting page resumes by Last-Event-ID and still stops at the terminal event.
    let mut resumed = hub
        .sse(
            &format!("/events/jobs/j-1?{terminal}"),
            &[("Last-Event-ID", ids[2].as_str())],
        )
        .await;
    assert_eq!(resumed.take_ids(4).await, ids[3..]);
    assert_eq!(resumed.expect_end().await.len(), 0);
}

/// `examples/jobs/`: its `tidings.toml` is a valid config, and `job.py` (run as the README
/// says, with python3) drives a subscriber from queued to completed through signed webhooks.
#[tokio::test]
async fn the_jobs_example_runs_end_to_end() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/jobs");
    let config = tidings::config::ServeArgs {
        config: Some(example.join("tidings.toml")),
        ..Default::default()
    }
    .resolve()
    .expect("examples/jobs/tidings.toml is a valid config");
    let webhooks = config.webhooks.clone();
    let hub = spawn_hub_with(move |c| c.webhooks = webhooks).await;
    let mut page = hub
        .subscribe("topic=jobs/demo&latest=1&until=completed&until=failed")
        .await;

    let run = tokio::process::Command::new("python3")
        .arg(example.join("job.py"))
        .args([
            "--hub", &hub.base, "--job", "demo", "--wait", "0", "--delay", "0",
        ])
        .kill_on_drop(true)
        .output();
    let output = crate::common::within(Duration::from_secs(60), "job.py", run)
        .await
        .expect("python3 runs (the example needs Python 3)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "job.py failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("'duplicate': True"), "{stdout}");

    let mut types = Vec::new();
    for event in page.expect_end().await {
        types.push(event.event);
    }
    assert_eq!(types.first().map(String::as_str), Some("queued"));
    assert_eq!(types.last().map(String::as_str), Some("completed"));
    assert_eq!(types.iter().filter(|t| *t == "progress").count(), 10);
    assert_eq!(
        stored(&hub).await,
        13,
        "the repeated delivery stored nothing"
    );
}

/// `github` and `hmac` without a timestamp sign only the body: a captured delivery replayed with
/// a fresh delivery id verifies, and is a new event. `id_from_signature` makes the event id a
/// digest of the signature, so the replay is a duplicate whatever delivery id it carries.
#[tokio::test]
async fn replays_are_duplicates_with_id_from_signature() {
    const SIGNED: &str = r#"
[webhooks.github]
scheme = "github"
secret = "It's a Secret to Everybody"
topic = "repos/{/repository/full_name}"
type = "push"

[webhooks.gh]
scheme = "github"
secret = "It's a Secret to Everybody"
topic = "repos/{/repository/full_name}"
type = "push"
id_from_signature = true

[webhooks.plain]
scheme = "hmac"
secret = "generic-secret"
signature_header = "X-Signature"
topic = "builds/{/build}"
id_from_signature = true
"#;
    let hub = spawn_hub_with(|config| {
        config.webhooks = Webhooks::from_toml(SIGNED).expect("the test webhooks are valid");
    })
    .await;
    let body = r#"{"repository":{"full_name":"octo/hub"},"after":"abc"}"#;

    // Without the option the replay is a second event: the hole the option closes.
    github("d-1", body, GITHUB_SECRET).accepted(&hub).await;
    let (_, duplicate) = github("d-2", body, GITHUB_SECRET).accepted(&hub).await;
    assert!(!duplicate);
    assert_eq!(stored(&hub).await, 2);

    let to = |mut d: Delivery, path: &str| {
        d.path = path.into();
        d
    };
    let (first, duplicate) = to(github("d-1", body, GITHUB_SECRET), "/webhooks/gh")
        .accepted(&hub)
        .await;
    assert!(!duplicate);
    assert!(first.starts_with("webhook:gh:sig:"), "{first}");
    let signature = hex::encode(hmac_sha256(GITHUB_SECRET.as_bytes(), &[body.as_bytes()]));
    assert!(!first.contains(&signature), "the id shows the signature");
    for replay in ["d-2", "d-3"] {
        let (id, duplicate) = to(github(replay, body, GITHUB_SECRET), "/webhooks/gh")
            .accepted(&hub)
            .await;
        assert_eq!((id.as_str(), duplicate), (first.as_str(), true), "{replay}");
    }
    // A forged delivery id does not get past the signature, and another body is another event.
    to(github("d-4", body, "other"), "/webhooks/gh")
        .send(&hub)
        .await
        .assert_refused(401, "wrong secret");
    let other = r#"{"repository":{"full_name":"octo/hub"},"after":"def"}"#;
    let (second, duplicate) = to(github("d-5", other, GITHUB_SECRET), "/webhooks/gh")
        .accepted(&hub)
        .await;
    assert!(!duplicate && second != first);
    assert_eq!(stored(&hub).await, 4);

    // Generic HMAC over the body only: no delivery id needed, replays are duplicates.
    let build = r#"{"build":"7"}"#;
    let sig = hmac_sha256(HMAC_SECRET.as_bytes(), &[build.as_bytes()]);
    let plain = || Delivery {
        path: "/webhooks/plain".into(),
        headers: vec![("X-Signature".into(), hex::encode(&sig))],
        body: build.into(),
    };
    let (id, duplicate) = plain().accepted(&hub).await;
    assert!(!duplicate && id.starts_with("webhook:plain:sig:"), "{id}");
    let (again, duplicate) = plain().header("X-Delivery", "fresh").accepted(&hub).await;
    assert_eq!((again, duplicate), (id, true));
    assert_eq!(stored(&hub).await, 5);
    assert_eq!(hub.history("topic=builds/7").await.len(), 1);
}

#[test]
fn id_from_signature_applies_to_unsigned_delivery_ids_only() {
    for (config, reason) in [
        (
            "scheme = \"standard\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"",
            "applies to scheme",
        ),
        ("scheme = \"bearer\"\ntoken = \"t\"", "applies to scheme"),
        (
            "scheme = \"github\"\nsecret = \"s\"\ndelivery_id_header = \"X-Id\"",
            "not both",
        ),
    ] {
        let text = format!("[webhooks.w]\n{config}\ntopic = \"t\"\nid_from_signature = true\n");
        let err = format!("{:#}", Webhooks::from_toml(&text).unwrap_err());
        assert!(err.contains(reason), "{config}: {err}");
    }
}

/// A payload cannot steer a delivery into the hub's reserved namespace, where the subscription
/// events live: the topic its fields make is refused as a publisher's would be, and nothing is
/// stored.
#[tokio::test]
async fn a_payload_cannot_place_an_event_in_the_hubs_namespace() {
    let hub = hub().await;
    let body = r#"{"id":"../../.well-known/mercure/subscriptions/forged","status":"COMPLETED"}"#;
    let reason = standard("msg_forged", now(), body)
        .send(&hub)
        .await
        .assert_refused(403, "a topic in the hub's namespace");
    assert!(reason.contains("reserved namespace"), "{reason}");
    assert_eq!(stored(&hub).await, 0);
}
