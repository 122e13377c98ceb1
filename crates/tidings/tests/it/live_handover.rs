//! The hand-over of a live SSE stream from hyper to the fan-out (`net::live`): checked on the
//! wire, byte by byte. Every response body must be a well-formed HTTP/1.1 chunked body (each
//! chunk complete, nothing after the last chunk), the seam between the history replay (written
//! by hyper) and the live frames (written by the fan-out) must hold no gap, duplicate or
//! reordering, and the connection must behave like any HTTP/1.1 connection once the stream
//! ends (kept alive, closed on request, pipelined requests answered).

use std::time::Duration;

use crate::common::{spawn_hub_with, within, TestHub, WAIT};
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A raw HTTP/1.1 client connection that keeps unread bytes for the next read.
struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// A chunked body decoded so far.
#[derive(Debug, Default)]
struct Body {
    payload: Vec<u8>,
    /// Bytes of the raw body consumed, through the end of the last chunk (when `ended`).
    used: usize,
    ended: bool,
}

/// Decodes as much of an HTTP/1.1 chunked body as `raw` holds; panics on anything malformed
/// (a bad size line, a chunk not followed by CRLF, trailers).
fn dechunk(raw: &[u8]) -> Body {
    let mut body = Body::default();
    let mut i = 0;
    loop {
        let Some(eol) = raw[i..].windows(2).position(|w| w == b"\r\n") else {
            let rest = raw[i..].strip_suffix(b"\r").unwrap_or(&raw[i..]);
            assert!(
                rest.len() <= 16 && rest.iter().all(u8::is_ascii_hexdigit),
                "bad chunk size line start {:?}",
                String::from_utf8_lossy(&raw[i..])
            );
            return body;
        };
        let line = std::str::from_utf8(&raw[i..i + eol]).expect("chunk size line is text");
        assert!(
            !line.is_empty() && line.bytes().all(|b| b.is_ascii_hexdigit()),
            "bad chunk size line {line:?} at {i} after {:?}",
            String::from_utf8_lossy(&body.payload[body.payload.len().saturating_sub(80)..])
        );
        let size = usize::from_str_radix(line, 16).expect("hex size");
        let start = i + eol + 2;
        if size == 0 {
            if raw.len() < start + 2 {
                return body;
            }
            assert_eq!(&raw[start..start + 2], b"\r\n", "no trailers expected");
            body.used = start + 2;
            body.ended = true;
            return body;
        }
        if start + size + 2 > raw.len() {
            return body;
        }
        assert_eq!(
            &raw[start + size..start + size + 2],
            b"\r\n",
            "a chunk of {size} bytes is not followed by CRLF"
        );
        body.payload.extend_from_slice(&raw[start..start + size]);
        i = start + size + 2;
        body.used = i;
    }
}

impl Raw {
    async fn connect(hub: &TestHub) -> Self {
        Self::connect_with_window(hub, None).await
    }

    async fn connect_with_window(hub: &TestHub, window: Option<u32>) -> Self {
        let socket = TcpSocket::new_v4().unwrap();
        if let Some(w) = window {
            socket.set_recv_buffer_size(w).unwrap();
        }
        let stream = within(WAIT, "connecting", socket.connect(hub.addr))
            .await
            .expect("connect");
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send");
    }

    /// Reads more bytes; false at EOF (or when the connection was reset).
    async fn fill(&mut self, limit: Duration, what: &str) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match within(limit, what, self.stream.read(&mut chunk)).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// The next response head (lower-cased), consumed from the buffer.
    async fn head(&mut self, limit: Duration) -> String {
        loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..i + 4]).to_lowercase();
                self.buf.drain(..i + 4);
                return head;
            }
            assert!(
                self.fill(limit, "a response head").await,
                "connection closed before a response head; got {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        }
    }

    /// Reads the chunked body until its payload satisfies `done`; returns what was decoded.
    async fn body_until(&mut self, what: &str, done: impl Fn(&Body) -> bool) -> Body {
        loop {
            let body = dechunk(&self.buf);
            if done(&body) {
                return body;
            }
            assert!(
                !body.ended,
                "the body ended before {what}: {:?}",
                String::from_utf8_lossy(&body.payload)
            );
            assert!(
                self.fill(WAIT, what).await,
                "connection closed before {what}; body so far {:?}",
                String::from_utf8_lossy(&body.payload)
            );
        }
    }

    /// Reads the chunked body through its last chunk and consumes it; returns the payload.
    async fn body_to_end(&mut self) -> Vec<u8> {
        let body = self.body_until("the last chunk", |b| b.ended).await;
        self.buf.drain(..body.used);
        body.payload
    }

    /// Reads until EOF; returns everything unread.
    async fn read_to_eof(&mut self) -> Vec<u8> {
        while self.fill(WAIT, "EOF").await {}
        std::mem::take(&mut self.buf)
    }
}

fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: hub.test\r\nAccept: text/event-stream\r\n{extra}\r\n")
}

async fn parse_sse(payload: &[u8]) -> Vec<eventsource_stream::Event> {
    futures_util::stream::iter([Ok::<_, std::convert::Infallible>(payload.to_vec())])
        .eventsource()
        .map(|e| e.expect("well-formed SSE"))
        .collect()
        .await
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

async fn publish_done(hub: &TestHub, topic: &str, data: &str) -> String {
    hub.publish_fields(&[("topic", topic), ("data", data), ("type", "done")])
        .await
}

/// Gives the connection task time to take the stream over from hyper.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(150)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_ends_leaves_a_reusable_connection() {
    let hub = spawn_hub_with(|_| {}).await;
    let mut raw = Raw::connect(&hub).await;
    raw.send(get("/.well-known/mercure?topic=k&until=done", "").as_bytes())
        .await;
    let head = raw.head(WAIT).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    let first = hub.publish("k", "one").await;
    raw.body_until("the first event", |b| contains(&b.payload, &first))
        .await;
    settle().await;
    let last = publish_done(&hub, "k", "two").await;
    let payload = raw.body_to_end().await;
    let events = parse_sse(&payload).await;
    let ids: Vec<_> = events.iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids, [first, last]);
    assert!(raw.buf.is_empty(), "nothing after the last chunk");

    raw.send(b"GET /healthz HTTP/1.1\r\nHost: hub.test\r\n\r\n")
        .await;
    let head = raw.head(WAIT).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_close_closes_after_the_last_chunk() {
    let hub = spawn_hub_with(|_| {}).await;
    let mut raw = Raw::connect(&hub).await;
    raw.send(
        get(
            "/.well-known/mercure?topic=c&until=done",
            "Connection: close\r\n",
        )
        .as_bytes(),
    )
    .await;
    let head = raw.head(WAIT).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    settle().await;
    let id = publish_done(&hub, "c", "bye").await;
    let rest = raw.read_to_eof().await;
    let body = dechunk(&rest);
    assert!(body.ended, "the last chunk came before the close");
    assert_eq!(body.used, rest.len(), "nothing after the last chunk");
    assert!(contains(&body.payload, &id));
}

/// A request pipelined behind a stream (sent in the same packet as the subscription) is
/// answered once the stream ends, as hyper does for any response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_pipelined_behind_a_stream_is_answered_after_it() {
    let hub = spawn_hub_with(|_| {}).await;
    let mut raw = Raw::connect(&hub).await;
    let mut both = get("/.well-known/mercure?topic=p&until=done", "");
    both.push_str("GET /healthz HTTP/1.1\r\nHost: hub.test\r\n\r\n");
    raw.send(both.as_bytes()).await;
    let head = raw.head(WAIT).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    settle().await;
    let id = publish_done(&hub, "p", "end").await;
    let payload = raw.body_to_end().await;
    assert!(contains(&payload, &id));
    let head = raw.head(Duration::from_secs(3)).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
}

/// A client that sends its next request while the stream is live (pipelining) must not have
/// the stream cut off mid-body: hyper keeps such bytes for after the response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_sent_during_a_live_stream_do_not_cut_it() {
    let hub = spawn_hub_with(|_| {}).await;
    let mut raw = Raw::connect(&hub).await;
    raw.send(get("/.well-known/mercure?topic=q&until=done", "").as_bytes())
        .await;
    let head = raw.head(WAIT).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let first = hub.publish("q", "one").await;
    raw.body_until("the first event", |b| contains(&b.payload, &first))
        .await;
    settle().await;
    raw.send(b"GET /healthz HTTP/1.1\r\nHost: hub.test\r\n\r\n")
        .await;
    settle().await;
    let last = publish_done(&hub, "q", "two").await;
    let payload = raw.body_to_end().await;
    assert!(contains(&payload, &last));
    let head = raw.head(Duration::from_secs(3)).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
}

/// Heartbeats interleaved with events of many sizes: every chunk well-formed, every event
/// once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_and_events_interleave_as_whole_chunks() {
    let hub = spawn_hub_with(|c| c.hub.heartbeat = Duration::from_millis(20)).await;
    let mut raw = Raw::connect(&hub).await;
    raw.send(get("/.well-known/mercure?topic=h&until=done", "").as_bytes())
        .await;
    let head = raw.head(WAIT).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let mut want = Vec::new();
    for i in 0..40usize {
        let data = "x".repeat((i * 977) % 20_000);
        want.push(hub.publish("h", &data).await);
        if i % 5 == 0 {
            tokio::time::sleep(Duration::from_millis(45)).await;
        }
    }
    want.push(publish_done(&hub, "h", "end").await);
    let payload = raw.body_to_end().await;
    assert!(
        contains(&payload, ":\n\n"),
        "heartbeats were written while idle"
    );
    let ids: Vec<_> = parse_sse(&payload)
        .await
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids, want);
}

/// Hub shutdown ends a live stream with its last chunk after what was delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_a_live_stream_with_the_last_chunk() {
    let hub = spawn_hub_with(|_| {}).await;
    let mut raw = Raw::connect(&hub).await;
    raw.send(get("/.well-known/mercure?topic=s", "").as_bytes())
        .await;
    let head = raw.head(WAIT).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let id = hub.publish("s", "last words").await;
    raw.body_until("the event", |b| contains(&b.payload, &id))
        .await;
    within(WAIT, "shutdown", hub.shutdown())
        .await
        .expect("serve returns Ok");
    let rest = raw.read_to_eof().await;
    let body = dechunk(&rest);
    assert!(
        body.ended,
        "the stream ended with its last chunk: {:?}",
        String::from_utf8_lossy(&rest)
    );
    assert_eq!(body.used, rest.len(), "nothing after the last chunk");
}

/// A long history replay written by hyper to a client that reads slowly, while events keep
/// being published: the replay and the live frames meet with no gap, duplicate or reordering,
/// and no live frame lands inside hyper's output.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_replay_and_live_frames_meet_without_gap_or_overlap() {
    let hub = spawn_hub_with(|c| {
        c.hub.mailbox.frames = 100_000;
        c.hub.mailbox.bytes = 256 << 20;
    })
    .await;
    let data = "y".repeat(2000);
    let mut want = Vec::new();
    for _ in 0..1200 {
        want.push(hub.publish("r", &data).await);
    }
    let mut raw = Raw::connect_with_window(&hub, Some(8 * 1024)).await;
    raw.send(get("/.well-known/mercure?topic=r&lastEventID=earliest", "").as_bytes())
        .await;
    let head = raw.head(WAIT).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    // Publish live events while the client has not read the replay yet.
    let publisher = {
        let http = crate::common::HubClient::new(format!("http://{}", hub.addr));
        let data = data.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..200 {
                ids.push(http.publish("r", &data).await);
                if i % 20 == 0 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            ids
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let live = within(WAIT, "publishing", publisher).await.unwrap();
    want.extend(live);
    let last = want.last().unwrap().clone();
    let body = raw
        .body_until("the last event", |b| contains(&b.payload, &last))
        .await;
    let ids: Vec<_> = parse_sse(&body.payload)
        .await
        .into_iter()
        .filter(|e| !e.id.is_empty())
        .map(|e| e.id)
        .collect();
    assert_eq!(ids.len(), want.len());
    assert!(ids == want, "ids differ from the log order");
}

/// Subscribers that join (from the start of the log, or from an id) while events are being
/// published each get every event once, in order, whichever side of the hand-over it falls on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn joiners_during_a_publish_burst_see_every_event_once() {
    let hub = spawn_hub_with(|_| {}).await;
    const N: usize = 300;
    let publisher = {
        let http = crate::common::HubClient::new(format!("http://{}", hub.addr));
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for _ in 0..N {
                ids.push(http.publish("b", "z").await);
            }
            ids
        })
    };
    let mut subs = Vec::new();
    for i in 0..24u64 {
        tokio::time::sleep(Duration::from_millis(3 * i)).await;
        let mut raw = Raw::connect(&hub).await;
        raw.send(get("/.well-known/mercure?topic=b&lastEventID=earliest", "").as_bytes())
            .await;
        subs.push(raw);
    }
    let want = within(WAIT, "publishing", publisher).await.unwrap();
    let last = want.last().unwrap().clone();
    for (i, mut raw) in subs.into_iter().enumerate() {
        let head = raw.head(WAIT).await;
        assert!(head.starts_with("http/1.1 200"), "{head}");
        let body = raw
            .body_until("the last event", |b| contains(&b.payload, &last))
            .await;
        let ids: Vec<_> = parse_sse(&body.payload)
            .await
            .into_iter()
            .filter(|e| !e.id.is_empty())
            .map(|e| e.id)
            .collect();
        assert!(ids == want, "subscriber {i}: {} ids, want {}", ids.len(), N);
    }
}

/// HTTP/1.0 and HEAD requests are served by hyper as before (no hand-over).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_and_head_requests_are_not_taken_over() {
    let hub = spawn_hub_with(|_| {}).await;
    let mut old = Raw::connect(&hub).await;
    old.send(b"GET /.well-known/mercure?topic=o&until=done HTTP/1.0\r\nHost: hub.test\r\n\r\n")
        .await;
    let head = old.head(WAIT).await;
    assert!(head.starts_with("http/1.0 200"), "{head}");
    assert!(!head.contains("chunked"), "{head}");
    settle().await;
    let id = publish_done(&hub, "o", "old").await;
    let rest = old.read_to_eof().await;
    assert!(contains(&rest, &id));
    assert!(!contains(&rest, "\r\n"), "no chunk framing: {rest:?}");

    let mut head_req = Raw::connect(&hub).await;
    head_req
        .send(b"HEAD /.well-known/mercure?topic=o HTTP/1.1\r\nHost: hub.test\r\n\r\n")
        .await;
    let head = head_req.head(WAIT).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    hub.publish("o", "unseen").await;
    head_req
        .send(b"GET /healthz HTTP/1.1\r\nHost: hub.test\r\n\r\n")
        .await;
    let next = head_req.head(WAIT).await;
    assert!(
        next.starts_with("http/1.1 200"),
        "no body after HEAD: {next}"
    );
}

/// A GET with a body (odd, but allowed) still gets its stream, and the connection still serves
/// the next request after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_with_a_body_keeps_the_connection_usable() {
    let hub = spawn_hub_with(|_| {}).await;
    let mut raw = Raw::connect(&hub).await;
    raw.send(
        get(
            "/.well-known/mercure?topic=g&until=done",
            "Content-Length: 5\r\n",
        )
        .as_bytes(),
    )
    .await;
    raw.send(b"hello").await;
    let head = raw.head(WAIT).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    settle().await;
    let id = publish_done(&hub, "g", "end").await;
    let payload = raw.body_to_end().await;
    assert!(contains(&payload, &id));
    // hyper keeps the connection when it had read the whole body, and closes it when part of the
    // body was still unread at the end of the response (which depends on how the bytes arrived).
    // Either is fine; what must never happen is the body being taken for the next request.
    if raw
        .stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: hub.test\r\n\r\n")
        .await
        .is_err()
    {
        return;
    }
    if !raw.fill(Duration::from_secs(3), "the next answer").await {
        return;
    }
    let head = raw.head(Duration::from_secs(3)).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
}
