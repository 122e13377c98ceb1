//! The operator's view: `/metrics` (values that move with publishes, deliveries, resumes,
//! resets, slow-subscriber cuts and a store outage; output that parses as Prometheus text),
//! `/readyz` (unready while delivery is stalled, ready again after), the metrics token, and the
//! answers every client sees (the `Link` header on refusals, the unknown-field message,
//! `/stats` with template subscribers, presence in the open development mode).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{client, enc, spawn_hub, spawn_hub_with, within, HubClient, WAIT};
use reqwest::StatusCode;
use serde_json::json;
use tidings_core::hub::Hub;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A served hub whose [`Hub`] the test can reach (to stall its delivery).
struct Node {
    http: HubClient,
    hub: Arc<Hub>,
    _dir: tempfile::TempDir,
    _stop: oneshot::Sender<()>,
}

async fn node_with(tweak: impl FnOnce(&mut tidings::Config)) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let mut config = tidings::Config::with_store_path(dir.path().join("t.db"));
    tweak(&mut config);
    let app = within(WAIT, "building the hub", tidings::App::build(config))
        .await
        .unwrap();
    let hub = app.hub().clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(app.serve(listener, async move {
        let _ = stopped.await;
    }));
    Node {
        http: HubClient::new(format!("http://{addr}")),
        hub,
        _dir: dir,
        _stop: stop,
    }
}

/// One scrape: every sample by `name{label="value",...}` (labels sorted), after checking the
/// exposition strictly and with the `prometheus-parse` crate.
struct Metrics {
    samples: HashMap<String, f64>,
}

impl Metrics {
    fn get(&self, key: &str) -> f64 {
        *self
            .samples
            .get(key)
            .unwrap_or_else(|| panic!("no sample {key}; have {:?}", self.samples.keys()))
    }
}

async fn scrape(http: &HubClient) -> Metrics {
    let reply = http.get("/metrics").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        reply.header("content-type"),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    parse_strictly(&reply.body)
}

/// The text format, checked line by line: `# HELP name text`, `# TYPE name kind` before the
/// samples of a family, samples `name{l="v",...} number` whose name belongs to the family last
/// typed (histograms: `_bucket` with `le`, `_sum`, `_count`), cumulative buckets ending at
/// `+Inf` equal to `_count`. Then the `prometheus-parse` crate must read the same samples.
fn parse_strictly(body: &str) -> Metrics {
    assert!(body.ends_with('\n'), "the exposition ends with a newline");
    let mut family: Option<(String, String)> = None;
    let mut helped = std::collections::HashSet::new();
    let mut samples = HashMap::new();
    let mut last_bucket = (String::new(), -1.0f64);
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').expect("HELP name text");
            assert!(!text.is_empty(), "{line}");
            assert!(helped.insert(name.to_owned()), "HELP twice for {name}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(helped.contains(name), "TYPE before HELP: {line}");
            family = Some((name.to_owned(), kind.to_owned()));
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.is_empty(),
            "stray line {line:?}"
        );
        let (series, value) = line.rsplit_once(' ').expect("a sample: series value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("not a number: {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (name, labels.strip_suffix('}').expect("closing brace")),
            None => (series, ""),
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "metric name {name:?}"
        );
        let mut pairs: Vec<(String, String)> = Vec::new();
        for pair in labels.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').expect("label=value");
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or_else(|| panic!("unquoted label value in {line}"));
            pairs.push((k.to_owned(), v.to_owned()));
        }
        let (fam, kind) = family.as_ref().expect("a sample before any TYPE");
        let base = match kind.as_str() {
            "histogram" => {
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or_else(|| panic!("histogram sample {name}"));
                if name.ends_with("_bucket") {
                    let le = pairs.iter().find(|(k, _)| k == "le").expect("le label");
                    if last_bucket.0 == base {
                        assert!(value >= last_bucket.1, "buckets are cumulative: {line}");
                    }
                    last_bucket = (base.to_owned(), value);
                    if le.1 == "+Inf" {
                        samples.insert(format!("{base}_inf"), value);
                    }
                }
                if name.ends_with("_count") {
                    assert_eq!(samples.get(&format!("{base}_inf")), Some(&value), "{line}");
                }
                base
            }
            _ => name,
        };
        assert_eq!(base, fam, "sample {name} outside its family {fam}");
        pairs.sort();
        let key = if pairs.is_empty() {
            name.to_owned()
        } else {
            let inner: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            format!("{name}{{{}}}", inner.join(","))
        };
        assert!(samples.insert(key, value).is_none(), "sample twice: {line}");
    }
    let parsed = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
        .expect("prometheus-parse reads the exposition");
    let mut plain = 0;
    let mut histograms = 0;
    for sample in &parsed.samples {
        let value = match &sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(_) => {
                histograms += 1;
                continue;
            }
            other => panic!("unexpected {other:?}"),
        };
        let mut labels: Vec<String> = sample
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{v}\""))
            .collect();
        labels.sort();
        let key = if labels.is_empty() {
            sample.metric.clone()
        } else {
            format!("{}{{{}}}", sample.metric, labels.join(","))
        };
        assert_eq!(samples.get(&key), Some(&value), "the crate read {key}");
        plain += 1;
    }
    let ours = samples
        .keys()
        // It reads a histogram's `_sum` and `_count` as plain samples, its buckets as one.
        .filter(|k| {
            let name = k.split('{').next().unwrap_or(k);
            !name.ends_with("_bucket") && !name.ends_with("_inf")
        })
        .count();
    assert_eq!(
        plain, ours,
        "the crate's parser read every counter and gauge"
    );
    assert_eq!(histograms, 2, "the crate's parser read both histograms");
    Metrics { samples }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_publishes_deliveries_resumes_and_resets() {
    let hub = spawn_hub().await;
    let before = scrape(&hub).await;
    assert_eq!(
        before.get("tidings_publishes_total{outcome=\"stored\"}"),
        0.0
    );
    assert_eq!(before.get("tidings_subscribers{transport=\"stream\"}"), 0.0);
    assert_eq!(before.get("tidings_store_up"), 1.0);

    let mut stream = hub.subscribe("topic=jobs/{id}").await;
    let first = hub.publish("jobs/1", "a").await;
    hub.publish("jobs/2", "b").await;
    hub.publish("jobs/1", "c").await;
    assert_eq!(stream.take_ids(3).await.len(), 3);
    let stats = hub.stats().await;
    assert_eq!(
        stats["subscribed_topics"], 1,
        "a jobs/{{id}} subscriber: {stats}"
    );

    let m = scrape(&hub).await;
    assert_eq!(m.get("tidings_publishes_total{outcome=\"stored\"}"), 3.0);
    assert_eq!(m.get("tidings_deliveries_total{outcome=\"queued\"}"), 3.0);
    assert_eq!(m.get("tidings_subscribers{transport=\"stream\"}"), 1.0);
    assert!(m.get("tidings_connections") >= 1.0);
    assert_eq!(m.get("tidings_publish_durable_seconds_count"), 3.0);
    assert!(m.get("tidings_durable_to_dispatch_seconds_count") >= 1.0);
    assert_eq!(m.get("tidings_lag_events"), 0.0);

    // A resume after the first event replays the two after it; an unknown id is a reset.
    let mut resumed = hub
        .sse(
            "/.well-known/mercure?topic=jobs/{id}",
            &[("last-event-id", &first)],
        )
        .await;
    assert_eq!(resumed.take_ids(2).await.len(), 2);
    let mut reset = hub
        .sse(
            "/.well-known/mercure?topic=jobs/1",
            &[("last-event-id", "no-such-id")],
        )
        .await;
    assert_eq!(reset.next().await.event, "tidings.reset");
    // A duplicate id with other content is refused and counted as a duplicate.
    hub.publish_fields(&[("topic", "jobs/1"), ("id", "dup")])
        .await;
    let refused = hub
        .post_form(&[("topic", "jobs/1"), ("id", "dup"), ("data", "other")])
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT);

    let m = scrape(&hub).await;
    assert_eq!(m.get("tidings_resumes_total"), 1.0);
    assert_eq!(m.get("tidings_resets_total"), 1.0);
    assert_eq!(m.get("tidings_replayed_events_total"), 2.0);
    assert_eq!(m.get("tidings_subscribers{transport=\"stream\"}"), 3.0);
    assert_eq!(m.get("tidings_publishes_total{outcome=\"duplicate\"}"), 1.0);
    assert_eq!(m.get("tidings_publishes_total{outcome=\"stored\"}"), 4.0);

    drop((stream, resumed, reset));
    let deadline = Instant::now() + WAIT;
    loop {
        let m = scrape(&hub).await;
        if m.get("tidings_subscribers{transport=\"stream\"}") == 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "closed streams are still counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_poll_is_counted_as_a_poll_subscriber() {
    let hub = spawn_hub().await;
    let poller = {
        let http = HubClient::new(hub.base.clone());
        tokio::spawn(async move { http.poll("topic=p&wait=30").await })
    };
    let deadline = Instant::now() + WAIT;
    while scrape(&hub)
        .await
        .get("tidings_subscribers{transport=\"poll\"}")
        != 1.0
    {
        assert!(Instant::now() < deadline, "the waiting poll is not counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    hub.publish("p", "x").await;
    let page = within(WAIT, "the poll", poller).await.unwrap();
    assert_eq!(page["events"].as_array().unwrap().len(), 1);
    assert_eq!(
        scrape(&hub)
            .await
            .get("tidings_subscribers{transport=\"poll\"}"),
        0.0
    );
}

/// A subscriber that never reads is cut once its queue overflows: the cut is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_cut_is_counted() {
    let hub = spawn_hub_with(|c| {
        c.hub.mailbox.frames = 8;
        c.edge.send_buffer = Some(4096);
    })
    .await;
    // Connect and send the request, then never read.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(hub.addr).await.unwrap();
    use tokio::io::AsyncWriteExt;
    let request = format!(
        "GET /.well-known/mercure?topic=slow HTTP/1.1\r\nHost: {}\r\n\r\n",
        hub.addr
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let deadline = Instant::now() + WAIT;
    while scrape(&hub)
        .await
        .get("tidings_subscribers{transport=\"stream\"}")
        != 1.0
    {
        assert!(Instant::now() < deadline, "the stream never opened");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let data = "x".repeat(16 * 1024);
    let mut published = 0;
    loop {
        hub.publish("slow", &data).await;
        published += 1;
        let m = scrape(&hub).await;
        if m.get("tidings_slow_cuts_total{reason=\"queue\"}") == 1.0 {
            assert_eq!(m.get("tidings_deliveries_total{outcome=\"cut\"}"), 1.0);
            break;
        }
        assert!(published < 500, "no cut after {published} events");
    }
    drop(stream);
}

/// A store outage: the hub's own Redis server stops. Publishes fail (nothing acknowledged) and
/// the store errors, the failed publishes and the link state say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_moves_the_error_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    /// Stops the test's own Redis server however the test ends.
    struct Redis(std::process::Child);
    impl Drop for Redis {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut redis = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "no", "--dir"])
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(Redis)
        .expect("start redis-server");
    let url = format!("redis://127.0.0.1:{port}/0");
    // Ready when it answers PING (bounded, not a blind sleep).
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::{Read, Write};
            c.write_all(b"PING\r\n").unwrap();
            let mut buf = [0u8; 7];
            if c.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n" {
                break;
            }
        }
        assert!(Instant::now() < deadline, "redis-server did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let store =
        tidings::config::StoreConfig::parse(&url, tidings_core::store::sqlite::Durability::Full)
            .unwrap();
    let node = node_with(|c| c.store = store).await;
    node.http.publish("up", "stored").await;
    let m = scrape(&node.http).await;
    assert_eq!(m.get("tidings_store_errors_total"), 0.0);
    assert_eq!(m.get("tidings_store_up"), 1.0);

    redis.0.kill().unwrap();
    redis.0.wait().unwrap();
    let reply = node
        .http
        .post_form(&[("topic", "down"), ("data", "lost")])
        .await;
    assert!(reply.status.is_server_error(), "{reply:?}");
    let m = scrape(&node.http).await;
    assert!(m.get("tidings_store_errors_total") >= 1.0);
    assert_eq!(m.get("tidings_publishes_total{outcome=\"failed\"}"), 1.0);
    assert_eq!(m.get("tidings_publishes_total{outcome=\"stored\"}"), 1.0);
    assert_eq!(m.get("tidings_store_up"), 0.0);
}

/// Readiness notices a silent stall: the log's head moves on (publishes still commit) while this
/// node delivers nothing; after `--ready-stall` it is unready, and ready again once delivery
/// resumes. Liveness stays green throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_goes_unready_while_delivery_is_stalled() {
    let node = node_with(|c| c.ops.ready_stall = Duration::from_millis(300)).await;
    let ready = node.http.get("/readyz").await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);
    assert_eq!(ready.json()["status"], "ready");

    node.hub.pause_dispatch(true);
    // The publish commits; its answer waits for delivery a bounded time, then comes anyway.
    let publish = {
        let http = HubClient::new(node.http.base.clone());
        tokio::spawn(async move { http.publish("stall", "x").await })
    };
    let deadline = Instant::now() + WAIT;
    let unready = loop {
        let reply = node.http.get("/readyz").await;
        if reply.status == StatusCode::SERVICE_UNAVAILABLE {
            break reply;
        }
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert!(Instant::now() < deadline, "never unready while stalled");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let body = unready.json();
    assert_eq!(body["status"], "unready");
    assert!(
        body["reason"].as_str().unwrap().contains("stalled"),
        "{body}"
    );
    assert_eq!(node.http.get("/healthz").await.status, StatusCode::OK);
    let m = scrape(&node.http).await;
    assert_eq!(m.get("tidings_lag_events"), 1.0);
    assert!(m.get("tidings_stalled_seconds") > 0.0);

    node.hub.pause_dispatch(false);
    within(WAIT, "the stalled publish", publish).await.unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let reply = node.http.get("/readyz").await;
        if reply.status == StatusCode::OK {
            assert_eq!(reply.json()["lag"], 0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still unready after delivery resumed"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_stats_need_the_token_when_one_is_set() {
    let token = "operator-token-0123456789";
    let hub = spawn_hub_with(|c| c.ops.metrics_token = Some(token.into())).await;
    for path in ["/metrics", "/stats"] {
        let reply = hub.get(path).await;
        reply.assert_refused(401, path);
        let wrong = hub
            .send(
                hub.client
                    .get(hub.url(path))
                    .bearer_auth("operator-token-wrong-0000"),
            )
            .await;
        wrong.assert_refused(401, path);
        let ok = hub
            .send(hub.client.get(hub.url(path)).bearer_auth(token))
            .await;
        assert_eq!(ok.status, StatusCode::OK, "{path}: {}", ok.body);
    }
    // Health and readiness stay open to the orchestrator.
    assert_eq!(hub.get("/healthz").await.status, StatusCode::OK);
    assert_eq!(hub.get("/readyz").await.status, StatusCode::OK);
}

/// The README: "All responses carry the Mercure discovery header" — refusals too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_answer_carries_the_discovery_link() {
    let hub = spawn_hub_with(|c| {
        c.auth.publisher = Some(tidings::auth::KeyConfig {
            algorithm: jsonwebtoken::Algorithm::HS256,
            key: "k".repeat(32),
            jwks: None,
        });
    })
    .await;
    let http = client();
    let url = |p: &str| format!("{}{p}", hub.base);
    let answers = [
        (http.get(url("/nowhere")), 404),
        (http.delete(url("/.well-known/mercure")), 405),
        (http.post(url("/.well-known/mercure")).body("topic=a"), 401),
        (
            http.post(url("/.well-known/mercure"))
                .header("content-type", "text/csv")
                .bearer_auth("x"),
            401,
        ),
        (http.get(url("/.well-known/mercure?topic=jobs/{id")), 400),
    ];
    for (request, status) in answers {
        let reply = request.send().await.unwrap();
        assert_eq!(reply.status().as_u16(), status);
        let link = reply
            .headers()
            .get("link")
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(
            link.as_deref(),
            Some("</.well-known/mercure>; rel=\"mercure\""),
            "{status}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_json_field_names_every_allowed_field() {
    let hub = spawn_hub().await;
    let reply = hub
        .post_json(
            "/.well-known/mercure",
            &json!({"topic": "a", "colour": "red"}),
        )
        .await;
    let reason = reply.assert_refused(400, "unknown field");
    for field in [
        "`colour`", "topic", "topics", "type", "data", "id", "private", "retry",
    ] {
        assert!(reason.contains(field), "{field} missing from {reason:?}");
    }
}

/// Without a subscriber key (the open development mode) no token could be verified: the
/// presence API answers without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_answers_in_the_open_development_mode() {
    let hub = spawn_hub().await;
    let mut stream = hub.subscribe("topic=rooms/1").await;
    hub.publish("rooms/1", "hello").await;
    stream.next().await;
    let reply = hub.get("/.well-known/mercure/subscriptions").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let doc = reply.json();
    let topics: Vec<&str> = doc["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["topic"].as_str().unwrap())
        .collect();
    assert_eq!(topics, ["rooms/1"], "{doc}");
    let by_topic = hub
        .get(&format!(
            "/.well-known/mercure/subscriptions/{}",
            enc("rooms/1")
        ))
        .await;
    assert_eq!(by_topic.status, StatusCode::OK, "{}", by_topic.body);
}
