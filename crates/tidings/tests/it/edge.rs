//! The browser and network edges, against the real server: CORS preflights and origins, the
//! Host allow-list, connection limits (total and per client address, SSE streams included), the
//! publish rate, the header-read timeout and the write-stall timeout.
//!
//! Every client here is 127.0.0.1, so the per-address limit is shown with N streams and an
//! N+1st connection; the total limit separately. Limit tests use clients without a connection
//! pool, so no idle pooled connection holds a slot.

use std::time::{Duration, Instant};

use crate::common::{spawn_hub_with, sse_from, within, Next, Reply, Sse, TestHub, WAIT};
use jsonwebtoken::{EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::json;
use tidings::config::ServeArgs;
use tidings::http::cors::CorsOrigins;
use tidings::http::host::AllowedHosts;
use tidings::http::rate::PublishRate;
use tidings_core::store::sqlite::Durability;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A client that opens a new connection for every request and closes it after the answer.
fn unpooled() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .expect("build the HTTP client")
}

async fn send(request: reqwest::RequestBuilder) -> Reply {
    let response = within(WAIT, "sending a request", request.send())
        .await
        .expect("send the request");
    let status = response.status();
    let headers = response.headers().clone();
    let body = within(WAIT, "reading the body", response.text())
        .await
        .expect("read the body");
    Reply {
        status,
        headers,
        body,
    }
}

/// Opens an SSE stream on its own connection.
async fn open_stream(hub: &TestHub, client: &reqwest::Client, topic: &str) -> Sse {
    let response = within(
        WAIT,
        "opening a stream",
        client
            .get(hub.url(&format!("/.well-known/mercure?topic={topic}")))
            .send(),
    )
    .await
    .expect("open the stream");
    assert_eq!(response.status(), StatusCode::OK, "the stream was refused");
    sse_from(response)
}

/// Asserts a refusal with a whole number of seconds in Retry-After.
fn assert_retry_after(reply: &Reply, status: u16, context: &str) -> u64 {
    reply.assert_refused(status, context);
    let retry: u64 = reply.header("retry-after").parse().unwrap_or_else(|_| {
        panic!(
            "{context}: Retry-After is {:?}",
            reply.header("retry-after")
        )
    });
    assert!(retry >= 1, "{context}: Retry-After {retry}");
    retry
}

/// Repeats `attempt` until it gives `want`, for at most [`WAIT`]: the hub notices a closed
/// connection a moment after the client closes it.
async fn until_status(want: StatusCode, mut attempt: impl AsyncFnMut() -> Reply) -> Reply {
    let deadline = Instant::now() + WAIT;
    loop {
        let reply = attempt().await;
        if reply.status == want {
            return reply;
        }
        assert!(
            Instant::now() < deadline,
            "still {} {:?} instead of {want}",
            reply.status,
            reply.body
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// CORS

#[tokio::test]
async fn without_cors_origins_no_cors_headers_are_sent() {
    let hub = spawn_hub_with(|_| {}).await;
    let reply = hub
        .send(
            hub.client
                .get(hub.url("/healthz"))
                .header("origin", "https://app.example.com"),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("access-control-allow-origin"), "");
    let preflight = hub
        .send(
            hub.client
                .request(reqwest::Method::OPTIONS, hub.url("/.well-known/mercure"))
                .header("origin", "https://app.example.com")
                .header("access-control-request-method", "POST"),
        )
        .await;
    assert_eq!(preflight.header("access-control-allow-origin"), "");
    assert_eq!(preflight.header("access-control-allow-methods"), "");
}

fn list_has(reply: &Reply, header: &str, item: &str) -> bool {
    reply
        .header(header)
        .split(',')
        .any(|v| v.trim().eq_ignore_ascii_case(item))
}

async fn preflight(hub: &TestHub, origin: &str) -> Reply {
    hub.send(
        hub.client
            .request(reqwest::Method::OPTIONS, hub.url("/.well-known/mercure"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            ),
    )
    .await
}

#[tokio::test]
async fn cors_preflight_and_listed_origins_get_credentials() {
    let hub = spawn_hub_with(|c| {
        c.edge.cors = CorsOrigins::parse("https://app.example.com, https://*.example.org").unwrap();
    })
    .await;

    // The preflight of a publish with a bearer token and a JSON body.
    let reply = preflight(&hub, "https://app.example.com").await;
    assert!(reply.status.is_success(), "preflight: {}", reply.status);
    assert_eq!(
        reply.header("access-control-allow-origin"),
        "https://app.example.com"
    );
    assert_eq!(reply.header("access-control-allow-credentials"), "true");
    assert!(list_has(&reply, "access-control-allow-methods", "POST"));
    assert!(list_has(
        &reply,
        "access-control-allow-headers",
        "authorization"
    ));
    assert!(list_has(
        &reply,
        "access-control-allow-headers",
        "content-type"
    ));
    assert!(
        reply.headers.get_all("vary").iter().any(|v| v
            .to_str()
            .unwrap_or("")
            .to_ascii_lowercase()
            .contains("origin")),
        "the answer depends on Origin, so it must say Vary: Origin"
    );

    // The publish itself: the id and the discovery Link are readable by the page.
    let reply = hub
        .send(
            hub.client
                .post(hub.url("/.well-known/mercure"))
                .header("origin", "https://app.example.com")
                .header("content-type", "application/x-www-form-urlencoded")
                .body("topic=jobs%2F1&data=hi"),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        reply.header("access-control-allow-origin"),
        "https://app.example.com"
    );
    assert_eq!(reply.header("access-control-allow-credentials"), "true");
    for exposed in ["link", "last-event-id", "mercure-last-event-id"] {
        assert!(
            list_has(&reply, "access-control-expose-headers", exposed),
            "{exposed} not exposed: {:?}",
            reply.header("access-control-expose-headers")
        );
    }

    // A stream from a wildcard subdomain, with its Last-Event-ID headers exposed.
    let sse = hub
        .sse(
            "/.well-known/mercure?topic=jobs/1",
            &[("origin", "https://a.b.example.org")],
        )
        .await;
    assert_eq!(
        sse.header("access-control-allow-origin"),
        "https://a.b.example.org"
    );
    assert_eq!(sse.header("access-control-allow-credentials"), "true");
    assert!(sse
        .header("access-control-expose-headers")
        .to_ascii_lowercase()
        .contains("mercure-last-event-id"));
    drop(sse);

    // Origins not on the list get no permission, on preflights and on requests.
    for refused in [
        "https://evil.com",
        "https://example.org",
        "http://app.example.com",
        "https://app.example.com:8443",
        "https://app.example.com.evil.com",
        "null",
    ] {
        let reply = preflight(&hub, refused).await;
        assert_eq!(
            reply.header("access-control-allow-origin"),
            "",
            "preflight from {refused}"
        );
        assert_eq!(reply.header("access-control-allow-credentials"), "");
        let reply = hub
            .send(
                hub.client
                    .get(hub.url("/healthz"))
                    .header("origin", refused),
            )
            .await;
        assert_eq!(
            reply.header("access-control-allow-origin"),
            "",
            "GET from {refused}"
        );
    }
}

#[tokio::test]
async fn cors_star_allows_any_origin_without_credentials() {
    let hub = spawn_hub_with(|c| c.edge.cors = CorsOrigins::Any).await;
    let reply = preflight(&hub, "https://anywhere.test").await;
    assert!(reply.status.is_success());
    assert_eq!(reply.header("access-control-allow-origin"), "*");
    assert_eq!(reply.header("access-control-allow-credentials"), "");
    assert!(list_has(
        &reply,
        "access-control-allow-headers",
        "authorization"
    ));
    let sse = hub
        .sse(
            "/.well-known/mercure?topic=x",
            &[("origin", "https://anywhere.test")],
        )
        .await;
    assert_eq!(sse.header("access-control-allow-origin"), "*");
    assert_eq!(sse.header("access-control-allow-credentials"), "");
}

// ---------------------------------------------------------------------------------------------
// Allowed hosts

#[tokio::test]
async fn only_allowed_hosts_are_served() {
    let hub = spawn_hub_with(|c| {
        c.edge.allowed_hosts =
            Some(AllowedHosts::parse("hub.example.com, *.example.net, 127.0.0.1").unwrap());
    })
    .await;
    let get_as = |host: &str| {
        hub.client
            .get(hub.url("/healthz"))
            .header("host", host.to_owned())
    };
    for allowed in [
        "hub.example.com",
        "HUB.example.com:8080",
        "a.example.net",
        "a.b.example.net",
        &format!("127.0.0.1:{}", hub.addr.port()),
    ] {
        let reply = hub.send(get_as(allowed)).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "host {allowed}: {}",
            reply.body
        );
    }
    for refused in [
        "evil.com",
        "example.net",
        "hub.example.com.evil.com",
        "localhost",
    ] {
        let reply = hub.send(get_as(refused)).await;
        let reason = reply.assert_refused(421, &format!("host {refused}"));
        assert!(reason.contains(refused), "{reason}");
        // Nothing behind the check runs: a publish to a foreign host stores nothing.
    }
    let reply = hub
        .send(
            hub.client
                .post(hub.url("/.well-known/mercure"))
                .header("host", "evil.com")
                .header("content-type", "application/x-www-form-urlencoded")
                .body("topic=t&data=x"),
        )
        .await;
    reply.assert_refused(421, "publish to a foreign host");
    assert!(hub.history_ids("topic=t").await.is_empty());

    // HTTP/1.0 without a Host header: refused with a reason.
    let mut tcp = TcpStream::connect(hub.addr).await.expect("connect");
    tcp.write_all(b"GET /healthz HTTP/1.0\r\n\r\n")
        .await
        .expect("write");
    let mut answer = String::new();
    within(WAIT, "the answer", tcp.read_to_string(&mut answer))
        .await
        .expect("read");
    assert!(answer.starts_with("HTTP/1.0 400"), "{answer}");
}

/// Sends `request` (raw bytes) on a new connection and returns the answer's head and what
/// follows of it, read until the blank line after the header.
async fn raw_exchange(hub: &TestHub, request: &[u8]) -> String {
    let mut conn = TcpStream::connect(hub.addr).await.expect("connect");
    conn.write_all(request).await.expect("write");
    read_head(&mut conn).await
}

/// Reads an answer's head (up to its blank line) from `conn`.
async fn read_head(conn: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = within(WAIT, "the answer", conn.read(&mut buf))
            .await
            .expect("read");
        assert!(n > 0, "closed without an answer");
        answer.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// RFC 9112: a request with two Host headers is a 400, with or without an allow-list (the
/// allow-list would otherwise check the first, and a proxy might route by the second).
#[tokio::test]
async fn two_host_headers_are_400() {
    let listed = spawn_hub_with(|c| {
        c.edge.allowed_hosts = Some(AllowedHosts::parse("hub.example.com, 127.0.0.1").unwrap());
    })
    .await;
    let open = spawn_hub_with(|_| {}).await;
    for hub in [&listed, &open] {
        let answer = raw_exchange(
            hub,
            b"POST /.well-known/mercure HTTP/1.1\r\nhost: hub.example.com\r\nhost: evil.com\r\n\
              content-type: application/x-www-form-urlencoded\r\ncontent-length: 14\r\n\r\n\
              topic=t&data=x",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(hub.history_ids("topic=t").await.is_empty());
    }
    // One Host header on the list is still served.
    let answer = raw_exchange(
        &listed,
        b"GET /healthz HTTP/1.1\r\nhost: hub.example.com\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

// ---------------------------------------------------------------------------------------------
// Connection limits

#[tokio::test]
async fn connections_per_client_address_are_limited_streams_included() {
    let hub = spawn_hub_with(|c| c.edge.max_connections_per_ip = Some(3)).await;
    let client = unpooled();
    let mut streams = Vec::new();
    for i in 0..3 {
        streams.push(open_stream(&hub, &client, &format!("t{i}")).await);
    }
    // A fourth connection from the same address: 429, whatever it asks for.
    let reply = send(client.get(hub.url("/healthz"))).await;
    assert_retry_after(&reply, 429, "the 4th connection");
    assert_eq!(reply.header("connection"), "close");
    let reply = send(client.get(hub.url("/.well-known/mercure?topic=t9"))).await;
    assert_retry_after(&reply, 429, "a 4th stream");

    // Closing a stream frees its slot.
    streams.pop();
    until_status(StatusCode::OK, async || {
        send(client.get(hub.url("/healthz"))).await
    })
    .await;

    // The other streams are unharmed: a publish (once the slot is free again) reaches them.
    let reply = until_status(StatusCode::OK, async || {
        send(
            client
                .post(hub.url("/.well-known/mercure"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body("topic=t0&data=still+here"),
        )
        .await
    })
    .await;
    assert_eq!(streams[0].next().await.id, reply.body);
}

#[tokio::test]
async fn connections_in_total_are_limited_streams_included() {
    let hub = spawn_hub_with(|c| c.edge.max_connections = Some(2)).await;
    let client = unpooled();
    let first = open_stream(&hub, &client, "a").await;
    let _second = open_stream(&hub, &client, "b").await;
    let reply = send(client.get(hub.url("/healthz"))).await;
    assert_retry_after(&reply, 503, "the 3rd connection");
    drop(first);
    until_status(StatusCode::OK, async || {
        send(client.get(hub.url("/healthz"))).await
    })
    .await;
}

#[tokio::test]
async fn idle_connections_are_closed_by_the_header_timeout_and_free_their_slot() {
    let hub = spawn_hub_with(|c| {
        c.edge.max_connections = Some(1);
        c.edge.header_read_timeout = Duration::from_millis(300);
    })
    .await;
    // A connection that says nothing holds the only slot, until the header timeout closes it.
    let mut idle = TcpStream::connect(hub.addr).await.expect("connect");
    let client = unpooled();
    let started = Instant::now();
    let reply = until_status(StatusCode::OK, async || {
        send(client.get(hub.url("/healthz"))).await
    })
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(250));
    let mut buf = [0u8; 16];
    let n = within(WAIT, "the idle connection closing", idle.read(&mut buf))
        .await
        .unwrap_or(0);
    assert_eq!(n, 0, "the idle connection got an answer");
}

/// A publisher that sends its headers and then trickles (or stops sending) its body gets 408
/// once the body pauses longer than the header-read timeout, and nothing is stored.
#[tokio::test]
async fn a_stalled_publish_body_is_answered_408_and_stores_nothing() {
    let hub = spawn_hub_with(|c| c.edge.header_read_timeout = Duration::from_millis(300)).await;
    let mut conn = TcpStream::connect(hub.addr).await.expect("connect");
    let body = "topic=stalled&data=never-complete";
    let head = format!(
        "POST /.well-known/mercure HTTP/1.1\r\nhost: {}\r\n\
         content-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n\r\n",
        hub.addr,
        body.len() + 100
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(body.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = within(WAIT, "the 408", conn.read(&mut buf)).await.unwrap();
        assert!(n > 0, "closed without an answer");
        answer.extend_from_slice(&buf[..n]);
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert!(hub.history_ids("topic=stalled").await.is_empty());
}

/// A body whose declared length is over `--max-body` is refused at once, before any of it is
/// sent: the hub does not wait for (or read) a body it will refuse.
#[tokio::test]
async fn a_declared_length_over_the_limit_is_413_before_the_body() {
    let hub = spawn_hub_with(|c| {
        c.limits.max_body = 1024;
        // Long enough that a hub waiting for the body would answer 408 only much later.
        c.edge.header_read_timeout = Duration::from_secs(30);
    })
    .await;
    for (path, expect) in [
        ("/.well-known/mercure", ""),
        ("/events/t", ""),
        ("/.well-known/mercure", "expect: 100-continue\r\n"),
    ] {
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: {}\r\n{expect}\
             content-type: application/x-www-form-urlencoded\r\ncontent-length: 5000000\r\n\r\n",
            hub.addr
        );
        let answer = raw_exchange(&hub, head.as_bytes()).await;
        assert!(
            answer.starts_with("HTTP/1.1 413"),
            "{path} {expect}: {answer}"
        );
        assert!(answer.contains("larger than 1024 bytes"), "{answer}");
    }
    assert!(hub.history_ids("topic=t").await.is_empty());
}

/// A publisher trickling its body (a byte at a time, never pausing long enough for the idle
/// timeout) is cut by the whole-body deadline (`--body-read-timeout`), and nothing is stored.
#[tokio::test]
async fn a_trickled_publish_body_is_cut_at_the_body_deadline() {
    let hub = spawn_hub_with(|c| {
        c.edge.header_read_timeout = Duration::from_secs(5);
        c.edge.body_read_timeout = Duration::from_secs(1);
    })
    .await;
    let mut conn = TcpStream::connect(hub.addr).await.expect("connect");
    // 40 bytes at 4 a second: 10 s to finish, far past the deadline, each pause far below the
    // idle timeout.
    let body = format!("topic=trickled&data={}", "x".repeat(20));
    let head = format!(
        "POST /.well-known/mercure HTTP/1.1\r\nhost: {}\r\n\
         content-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n\r\n",
        hub.addr,
        body.len()
    );
    conn.write_all(head.as_bytes()).await.expect("write");
    let (mut read, mut write) = conn.into_split();
    let trickle = tokio::spawn(async move {
        for byte in body.bytes() {
            if write.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = within(Duration::from_secs(20), "the answer", read.read(&mut buf))
            .await
            .expect("read");
        assert!(n > 0, "closed without an answer");
        answer.extend_from_slice(&buf[..n]);
    }
    trickle.abort();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(hub.history_ids("topic=trickled").await.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Publish rate

fn publisher_token(secret: &str, name: &str) -> String {
    jsonwebtoken::encode(
        &Header::default(),
        &json!({ "sub": name, "mercure": { "publish": ["*"] } }),
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign")
}

/// A publish on topic `rated`, with a bearer token when given.
async fn publish_as(hub: &TestHub, token: Option<&str>, data: &str) -> Reply {
    hub.post_form_as(token, &[("topic", "rated"), ("data", data)])
        .await
}

#[tokio::test]
async fn publish_rate_is_per_token() {
    const SECRET: &str = "0123456789abcdef0123456789abcdef-edge";
    let hub = spawn_hub_with(|c| {
        c.auth = ServeArgs {
            jwt_key: Some(SECRET.into()),
            ..ServeArgs::default()
        }
        .resolve()
        .expect("auth settings")
        .auth;
        c.edge.publish_rate = Some(PublishRate::parse("1/min", Some(2)).unwrap());
    })
    .await;
    let alice = publisher_token(SECRET, "alice");
    let bob = publisher_token(SECRET, "bob");
    for i in 0..2 {
        let reply = publish_as(&hub, Some(&alice), &format!("a{i}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    let reply = publish_as(&hub, Some(&alice), "a2").await;
    let retry = assert_retry_after(&reply, 429, "alice's 3rd publish");
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    // Bob's token has its own bucket.
    for i in 0..2 {
        let reply = publish_as(&hub, Some(&bob), &format!("b{i}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    assert_retry_after(&publish_as(&hub, Some(&bob), "b2").await, 429, "bob's 3rd");
    // Refused publishes stored nothing.
    assert_eq!(hub.history_ids("topic=rated").await.len(), 4);
    // Requests without a valid token draw from their address's bucket: after two 401s, 429.
    publish_as(&hub, None, "x")
        .await
        .assert_refused(401, "no token");
    publish_as(&hub, Some("forged"), "x")
        .await
        .assert_refused(401, "a forged token");
    assert_retry_after(&publish_as(&hub, None, "x").await, 429, "the address's 3rd");
    // A token in the `authorization` query parameter is the same publisher as in the header:
    // carol's own bucket, not the (now empty) address's.
    let carol = publisher_token(SECRET, "carol");
    for i in 0..2 {
        let reply = hub
            .send(
                hub.client
                    .post(hub.url(&format!("/.well-known/mercure?authorization={carol}")))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(format!("topic=rated&data=c{i}")),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    assert_retry_after(
        &publish_as(&hub, Some(&carol), "c2").await,
        429,
        "carol's 3rd",
    );
    // Subscribing and polling are not publishes.
    hub.poll("topic=rated").await;
}

#[tokio::test]
async fn open_publishing_is_rated_per_client_address() {
    let hub = spawn_hub_with(|c| {
        c.edge.publish_rate = Some(PublishRate::parse("2/s", Some(3)).unwrap());
    })
    .await;
    for i in 0..3 {
        hub.publish("rated", &format!("{i}")).await;
    }
    let reply = publish_as(&hub, None, "over").await;
    assert_retry_after(&reply, 429, "the 4th publish");
    // The path form is rated too.
    hub.post("/events/rated", Some("application/json"), "{}")
        .await
        .assert_refused(429, "the path form");
    // Tokens come back at the rate: 2/s.
    until_status(StatusCode::OK, async || {
        publish_as(&hub, None, "later").await
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Timeouts

#[tokio::test]
async fn a_client_that_never_finishes_its_header_is_cut_after_the_timeout() {
    let timeout = Duration::from_millis(400);
    let hub = spawn_hub_with(|c| {
        c.edge.header_read_timeout = timeout;
        c.edge.write_stall_timeout = Duration::from_millis(300);
    })
    .await;
    let mut slow = TcpStream::connect(hub.addr).await.expect("connect");
    let started = Instant::now();
    slow.write_all(b"GET /healthz HT").await.expect("write");
    let mut buf = Vec::new();
    let read = within(
        WAIT,
        "the hub cutting the connection",
        slow.read_to_end(&mut buf),
    )
    .await;
    let elapsed = started.elapsed();
    // A reset is as good as a close; what matters is that the hub hung up, without an answer.
    if let Ok(n) = read {
        assert_eq!(n, 0, "answered {:?}", String::from_utf8_lossy(&buf));
    }
    assert!(
        elapsed >= timeout - Duration::from_millis(50),
        "cut after {elapsed:?}, before the timeout"
    );
    assert!(elapsed < timeout * 5, "cut only after {elapsed:?}");

    // The timeout covers the header only: a stream idle for longer than both timeouts (nothing
    // to write is not a stall) still delivers.
    let mut sse = hub.subscribe("topic=quiet").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let id = hub.publish("quiet", "late").await;
    match sse.recv(WAIT).await {
        Next::Event(e) => assert_eq!(e.id, id),
        other => panic!("the idle stream was cut: {other:?}"),
    }
}

#[tokio::test]
async fn a_peer_that_accepts_no_bytes_is_cut_even_with_room_in_its_mailbox() {
    let stall = Duration::from_millis(500);
    let hub = spawn_hub_with(|c| {
        c.edge.write_stall_timeout = stall;
        c.hub.mailbox.frames = 1 << 20;
        c.hub.mailbox.bytes = 1 << 30;
        #[allow(irrefutable_let_patterns)]
        if let tidings::config::StoreConfig::Sqlite { durability, .. } = &mut c.store {
            *durability = Durability::Normal;
        }
    })
    .await;

    // A raw subscriber with a small receive buffer that reads the response head, then nothing.
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let mut stalled = socket.connect(hub.addr).await.expect("connect");
    stalled
        .write_all(
            format!(
                "GET /.well-known/mercure?topic=big HTTP/1.1\r\nHost: {}\r\n\r\n",
                hub.addr
            )
            .as_bytes(),
        )
        .await
        .expect("write the request");
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = within(WAIT, "the response head", stalled.read(&mut buf))
            .await
            .expect("read");
        assert!(n > 0, "closed before the response head");
        head.extend_from_slice(&buf[..n]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    assert_eq!(hub.stats().await["subscribers"], 1);

    // Big events until the hub drops the subscriber.
    let data = "x".repeat(256 * 1024);
    let started = Instant::now();
    let mut published = 0usize;
    loop {
        assert!(
            started.elapsed() < WAIT * 2,
            "the stalled subscriber was never cut ({published} events of 256 KiB published)"
        );
        if published < 400 {
            hub.publish("big", &data).await;
            published += 1;
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if hub.stats().await["subscribers"] == 0 {
            break;
        }
    }
    let stats = hub.stats().await;
    assert_eq!(
        stats["slow_disconnects"], 0,
        "cut by its mailbox bound, not by the stall timeout"
    );

    // The connection is closed: reading now finds what was in flight, then the end.
    let mut rest = Vec::new();
    let read = within(WAIT, "reading to the end", stalled.read_to_end(&mut rest)).await;
    let total = published * data.len();
    assert!(
        read.is_err() || rest.len() < total,
        "everything arrived, so nothing stalled"
    );

    // A subscriber that reads is not affected.
    let mut reader = hub.subscribe("topic=big").await;
    let id = hub.publish("big", &data).await;
    let event = reader.next().await;
    assert_eq!(event.id, id);
    assert_eq!(event.data.len(), data.len());
}
