//! What every integration test shares: a hub served by the library on 127.0.0.1:0 in its own
//! temporary directory, HTTP helpers to publish and poll, and a real SSE client (reqwest's byte
//! stream parsed by the WHATWG-conformant `eventsource-stream`).
//!
//! Every wait is bounded by [`WAIT`] (or a shorter, explicit timeout), so a broken hub fails a
//! test instead of hanging it.

#![allow(dead_code)]

pub mod served;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use eventsource_stream::{Event, Eventsource};
use futures_util::StreamExt;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// The longest any single step of a test may take before it is declared failed.
pub const WAIT: Duration = Duration::from_secs(10);

/// Percent-encodes `s` for a query string or form body.
pub fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A form body (`application/x-www-form-urlencoded`) from name/value pairs, in order.
pub fn form(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Awaits `fut`, failing the test with `what` when it takes longer than `limit`.
pub async fn within<T>(
    limit: Duration,
    what: &str,
    fut: impl std::future::Future<Output = T>,
) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

/// A plain HTTP client that never uses a proxy and never times a stream out by itself.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("build the HTTP client")
}

/// A hub served in this process on an ephemeral port.
pub struct TestHub {
    pub addr: SocketAddr,
    /// Holds the SQLite file; removed when the hub is dropped.
    pub dir: tempfile::TempDir,
    /// The HTTP helpers (`base`, `client`, `publish`, `sse`...), reached through `Deref`.
    pub http: HubClient,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

/// A hub with the default configuration.
pub async fn spawn_hub() -> TestHub {
    spawn_hub_with(|_| {}).await
}

/// A hub whose configuration `tweak` adjusts before it is built.
pub async fn spawn_hub_with(tweak: impl FnOnce(&mut tidings::Config)) -> TestHub {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let mut config = tidings::Config::with_store_path(dir.path().join("t.db"));
    config.shutdown_grace = Duration::from_secs(2);
    tweak(&mut config);
    let app = within(WAIT, "building the hub", tidings::App::build(config))
        .await
        .expect("build the hub");
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(app.serve(listener, async move {
        let _ = rx.await;
    }));
    TestHub {
        addr,
        dir,
        http: HubClient::new(format!("http://{addr}")),
        shutdown: Some(tx),
        server: Some(server),
    }
}

/// A finished HTTP exchange: status, headers and the whole body as text.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    async fn read(response: reqwest::Response) -> Self {
        let status = response.status();
        let headers = response.headers().clone();
        let body = within(WAIT, "reading a response body", response.text())
            .await
            .expect("read the response body");
        Self {
            status,
            headers,
            body,
        }
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    /// A header as text ("" when absent).
    pub fn header(&self, name: &str) -> String {
        header_text(&self.headers, name)
    }

    /// Asserts a client error with a one-line plain-text reason, and returns the reason.
    pub fn assert_refused(&self, status: u16, context: &str) -> String {
        assert_eq!(
            self.status.as_u16(),
            status,
            "{context}: expected {status}, got {} with body {:?}",
            self.status,
            self.body
        );
        assert!(
            self.header("content-type").starts_with("text/plain"),
            "{context}: the reason should be text/plain, got {:?}",
            self.header("content-type")
        );
        let reason = self.body.strip_suffix('\n').unwrap_or(&self.body);
        assert!(
            !reason.trim().is_empty(),
            "{context}: the refusal has no reason"
        );
        assert!(
            !reason.contains('\n') && !reason.contains('\r'),
            "{context}: the reason should be one line, got {:?}",
            self.body
        );
        reason.to_owned()
    }
}

/// A header as text ("" when absent).
pub fn header_text(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default()
}

/// Talks to a hub at `base`: one started by [`spawn_hub`], or any other (a `tidings serve`
/// process, one node of a cluster).
#[derive(Clone)]
pub struct HubClient {
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub base: String,
    pub client: reqwest::Client,
}

impl std::ops::Deref for TestHub {
    type Target = HubClient;

    fn deref(&self) -> &HubClient {
        &self.http
    }
}

impl HubClient {
    pub fn new(base: impl Into<String>) -> Self {
        Self {
            base: base.into(),
            client: client(),
        }
    }

    /// The absolute URL of `path_and_query`.
    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{}", self.base, path_and_query)
    }

    /// Sends `request` and reads the whole reply.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = within(WAIT, "sending a request", request.send())
            .await
            .expect("send the request");
        Reply::read(response).await
    }

    /// `POST path` with an optional Content-Type and the given body.
    pub async fn post(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> Reply {
        let mut request = self.client.post(self.url(path)).body(body);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        self.send(request).await
    }

    /// `POST /.well-known/mercure` with these form fields.
    pub async fn post_form(&self, fields: &[(&str, &str)]) -> Reply {
        self.post_form_as(None, fields).await
    }

    /// `POST /.well-known/mercure` with these form fields and, when given, a bearer token.
    pub async fn post_form_as(&self, token: Option<&str>, fields: &[(&str, &str)]) -> Reply {
        let mut request = self
            .client
            .post(self.url("/.well-known/mercure"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(fields));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        self.send(request).await
    }

    /// `POST path` with a JSON body.
    pub async fn post_json(&self, path: &str, body: &Value) -> Reply {
        self.post(path, Some("application/json"), body.to_string())
            .await
    }

    /// Publishes form fields, asserts success and returns the event id.
    pub async fn publish_fields(&self, fields: &[(&str, &str)]) -> String {
        let reply = self.post_form(fields).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "publish {fields:?} failed: {}",
            reply.body
        );
        assert!(!reply.body.is_empty(), "publish answered no id");
        reply.body
    }

    /// Publishes `data` on `topic` (form-encoded) and returns the event id.
    pub async fn publish(&self, topic: &str, data: &str) -> String {
        self.publish_fields(&[("topic", topic), ("data", data)])
            .await
    }

    /// Publishes one JSON object to `/.well-known/mercure` and returns the event id.
    pub async fn publish_json(&self, event: &Value) -> String {
        let reply = self.post_json("/.well-known/mercure", event).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "publish {event} failed: {}",
            reply.body
        );
        reply.json()["id"]
            .as_str()
            .expect("the answer has an id")
            .to_owned()
    }

    /// `GET path_and_query`.
    pub async fn get(&self, path_and_query: &str) -> Reply {
        self.send(self.client.get(self.url(path_and_query))).await
    }

    /// `GET /events?query`, asserting 200; the JSON page. (A publish is answered only once its
    /// event is visible to polls, so no waiting is needed.)
    pub async fn poll(&self, query: &str) -> Value {
        let reply = self.get(&format!("/events?{query}")).await;
        assert_eq!(reply.status, StatusCode::OK, "poll {query}: {}", reply.body);
        reply.json()
    }

    /// Every retained event matching `selectors` (a query such as `topic=*`), read page by page
    /// from `after=earliest`: the log order.
    pub async fn history(&self, selectors: &str) -> Vec<Value> {
        let mut events = Vec::new();
        let mut after = "earliest".to_owned();
        for _ in 0..10_000 {
            let page = self
                .poll(&format!("{selectors}&after={}&limit=1000", enc(&after)))
                .await;
            events.extend(page["events"].as_array().expect("events").iter().cloned());
            after = page["last_event_id"]
                .as_str()
                .expect("last_event_id")
                .to_owned();
            if page["more"] != Value::Bool(true) {
                return events;
            }
        }
        panic!("history never ended");
    }

    /// The ids of [`TestHub::history`].
    pub async fn history_ids(&self, selectors: &str) -> Vec<String> {
        self.history(selectors)
            .await
            .iter()
            .map(|e| e["id"].as_str().expect("id").to_owned())
            .collect()
    }

    /// `GET /stats` as JSON.
    pub async fn stats(&self) -> Value {
        let reply = self.get("/stats").await;
        assert_eq!(reply.status, StatusCode::OK, "stats: {}", reply.body);
        reply.json()
    }

    /// Opens an SSE stream at `path_and_query` with extra request headers; `Err` carries the
    /// reply when the hub refuses.
    pub async fn try_sse(
        &self,
        path_and_query: &str,
        headers: &[(&str, &str)],
    ) -> Result<Sse, Reply> {
        let mut request = self
            .client
            .get(self.url(path_and_query))
            .header("accept", "text/event-stream");
        for (name, value) in headers {
            request = request.header(
                HeaderName::from_bytes(name.as_bytes()).expect("header name"),
                HeaderValue::from_str(value).expect("header value"),
            );
        }
        let response = within(WAIT, "opening an SSE stream", request.send())
            .await
            .expect("open the SSE stream");
        if !response.status().is_success() {
            return Err(Reply::read(response).await);
        }
        Ok(Sse::new(response))
    }

    /// Opens an SSE stream, asserting the hub accepts it.
    pub async fn sse(&self, path_and_query: &str, headers: &[(&str, &str)]) -> Sse {
        match self.try_sse(path_and_query, headers).await {
            Ok(sse) => sse,
            Err(reply) => panic!(
                "subscribing to {path_and_query} failed: {} {:?}",
                reply.status, reply.body
            ),
        }
    }

    /// Subscribes on the Mercure endpoint with this query.
    pub async fn subscribe(&self, query: &str) -> Sse {
        self.sse(&format!("/.well-known/mercure?{query}"), &[])
            .await
    }
}

impl TestHub {
    /// Asks the hub to shut down and waits for `serve` to return.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let server = self.server.take().expect("the server task");
        within(WAIT, "the hub shutting down", server)
            .await
            .expect("the server task did not panic")
    }
}

impl Drop for TestHub {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// Wraps an already opened streaming response (for hubs not started by [`spawn_hub`]).
pub fn sse_from(response: reqwest::Response) -> Sse {
    Sse::new(response)
}

/// What the next read of an SSE stream gave.
#[derive(Debug)]
pub enum Next {
    Event(Event),
    /// The hub ended the stream.
    End,
    /// The transport or the parser failed.
    Error(String),
    /// Nothing arrived in time.
    Timeout,
}

/// A real SSE client: the response's bytes, parsed by `eventsource-stream` in a task and handed
/// over one event at a time. Dropping it closes the connection.
pub struct Sse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    rx: mpsc::UnboundedReceiver<(Instant, Result<Event, String>)>,
    task: JoinHandle<()>,
    /// The id of the last event taken from this stream (what a client would resume from).
    pub last_id: Option<String>,
    /// When the last event taken had been parsed off the wire.
    pub last_arrival: Option<Instant>,
}

impl Sse {
    fn new(response: reqwest::Response) -> Self {
        let status = response.status();
        let headers = response.headers().clone();
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut events = response.bytes_stream().eventsource();
            while let Some(item) = events.next().await {
                let item = item.map_err(|e| e.to_string());
                let failed = item.is_err();
                if tx.send((Instant::now(), item)).is_err() || failed {
                    return;
                }
            }
        });
        Self {
            status,
            headers,
            rx,
            task,
            last_id: None,
            last_arrival: None,
        }
    }

    /// A response header as text ("" when absent).
    pub fn header(&self, name: &str) -> String {
        header_text(&self.headers, name)
    }

    /// The next event, the end of the stream, an error, or a timeout after `limit`.
    pub async fn recv(&mut self, limit: Duration) -> Next {
        match tokio::time::timeout(limit, self.rx.recv()).await {
            Err(_) => Next::Timeout,
            Ok(None) => Next::End,
            Ok(Some((_, Err(e)))) => Next::Error(e),
            Ok(Some((at, Ok(event)))) => {
                self.last_arrival = Some(at);
                if !event.id.is_empty() {
                    self.last_id = Some(event.id.clone());
                }
                Next::Event(event)
            }
        }
    }

    /// The next event; fails the test on anything else within [`WAIT`].
    pub async fn next(&mut self) -> Event {
        match self.recv(WAIT).await {
            Next::Event(e) => e,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    /// The next `n` events, each within [`WAIT`].
    pub async fn take(&mut self, n: usize) -> Vec<Event> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            match self.recv(WAIT).await {
                Next::Event(e) => out.push(e),
                other => panic!(
                    "expected {n} events, got {} and then {other:?}; ids so far: {:?}",
                    out.len(),
                    out.iter().map(|e| &e.id).collect::<Vec<_>>()
                ),
            }
        }
        out
    }

    /// The ids of the next `n` events.
    pub async fn take_ids(&mut self, n: usize) -> Vec<String> {
        self.take(n).await.into_iter().map(|e| e.id).collect()
    }

    /// Asserts that no event arrives within `quiet`.
    pub async fn expect_silence(&mut self, quiet: Duration) {
        match self.recv(quiet).await {
            Next::Timeout => {}
            other => panic!("expected no event for {quiet:?}, got {other:?}"),
        }
    }

    /// Asserts that the stream ends (after any events still buffered, which are returned).
    pub async fn expect_end(&mut self) -> Vec<Event> {
        let mut rest = Vec::new();
        loop {
            match self.recv(WAIT).await {
                Next::Event(e) => rest.push(e),
                Next::End => return rest,
                other => panic!("expected the stream to end, got {other:?}"),
            }
        }
    }
}

impl Drop for Sse {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Ids of a list of JSON events.
pub fn ids_of(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["id"].as_str().expect("id").to_owned())
        .collect()
}

/// Asserts that `ids` holds no id twice.
pub fn assert_no_duplicates(ids: &[String], context: &str) {
    let mut seen = std::collections::HashSet::new();
    for id in ids {
        assert!(seen.insert(id), "{context}: id {id} arrived twice");
    }
}
