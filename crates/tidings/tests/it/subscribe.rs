//! Subscribing over SSE with a real client: delivery, framing, selectors, the type filter, the
//! path form, alternate topics, response headers, heartbeats and shutdown.

use std::time::{Duration, Instant};

use crate::common::{enc, spawn_hub, spawn_hub_with, within, Next, WAIT};
use reqwest::StatusCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_events_are_delivered_in_log_order() {
    let hub = spawn_hub().await;
    let mut sub = hub.subscribe("topic=news").await;
    let mut published = Vec::new();
    for i in 0..50 {
        published.push(hub.publish("news", &format!("item {i}")).await);
        if i % 10 == 0 {
            // An event on another topic in between is not delivered.
            hub.publish("sports", "not for you").await;
        }
    }
    let got = sub.take(50).await;
    let ids: Vec<String> = got.iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids, published);
    for (i, e) in got.iter().enumerate() {
        assert_eq!(e.data, format!("item {i}"));
        assert_eq!(
            e.event, "message",
            "an event without type is a plain message"
        );
    }
    sub.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishes_arrive_once_each_in_log_order() {
    let hub = spawn_hub().await;
    let mut sub = hub.subscribe("topic=*").await;
    let mut tasks = Vec::new();
    for p in 0..4 {
        let client = hub.client.clone();
        let url = hub.url("/.well-known/mercure");
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..25 {
                let r = client
                    .post(&url)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(format!("topic=p{p}&data={i}"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::OK);
                ids.push(r.text().await.unwrap());
            }
            ids
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(within(WAIT, "publishers", t).await.unwrap());
    }
    let got = sub.take_ids(100).await;
    crate::common::assert_no_duplicates(&got, "stream");
    assert_eq!(
        got,
        hub.history_ids("topic=*").await,
        "the stream follows the log"
    );
    let mut sorted_got = got.clone();
    sorted_got.sort();
    acked.sort();
    assert_eq!(sorted_got, acked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_line_data_arrives_as_the_same_lines() {
    let hub = spawn_hub().await;
    let mut sub = hub.subscribe("topic=lines").await;
    let cases = [
        ("lf", "one\ntwo\nthree", "one\ntwo\nthree"),
        ("crlf", "one\r\ntwo\r\nthree", "one\ntwo\nthree"),
        ("cr", "one\rtwo\rthree", "one\ntwo\nthree"),
        ("mixed", "a\r\n\r\nb\rc\n", "a\n\nb\nc\n"),
        (
            "edges",
            "\nleading and trailing\n",
            "\nleading and trailing\n",
        ),
        ("empty", "", ""),
        (
            "fieldlike",
            "data: x\nid: fake\nevent: fake",
            "data: x\nid: fake\nevent: fake",
        ),
        (
            "spaces",
            "  indented\n:not a comment",
            "  indented\n:not a comment",
        ),
    ];
    let mut ids = Vec::new();
    for (name, data, _) in &cases {
        ids.push(
            hub.publish_fields(&[("topic", "lines"), ("data", data), ("type", name)])
                .await,
        );
    }
    let got = sub.take(cases.len()).await;
    for ((name, _, want), (event, id)) in cases.iter().zip(got.iter().zip(&ids)) {
        assert_eq!(&event.id, id, "{name}");
        assert_eq!(&event.event, name, "{name}");
        assert_eq!(event.data, *want, "{name}: data arrived changed");
    }

    // And on the wire, each line is its own `data:` field.
    let mut raw = hub
        .client
        .get(hub.url("/.well-known/mercure?topic=lines&lastEventID=earliest"))
        .send()
        .await
        .unwrap();
    let mut text = String::new();
    within(WAIT, "raw history", async {
        while !text.contains("event: spaces") || !text.ends_with("\n\n") {
            let chunk = raw.chunk().await.unwrap().expect("stream ended early");
            text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    })
    .await;
    let crlf_frame = format!(
        "id: {}\nevent: crlf\ndata: one\ndata: two\ndata: three\n\n",
        ids[1]
    );
    assert!(text.contains(&crlf_frame), "no {crlf_frame:?} in {text:?}");
    assert!(!text.contains('\r'), "a CR reached the wire: {text:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn type_and_retry_fields_reach_the_client() {
    let hub = spawn_hub().await;
    let mut sub = hub.subscribe("topic=jobs/9").await;
    let typed = hub
        .publish_fields(&[
            ("topic", "jobs/9"),
            ("type", "job.done"),
            ("retry", "2500"),
            ("data", "x"),
        ])
        .await;
    let plain = hub.publish("jobs/9", "y").await;
    let got = sub.take(2).await;
    assert_eq!(got[0].id, typed);
    assert_eq!(got[0].event, "job.done");
    assert_eq!(got[0].retry, Some(Duration::from_millis(2500)));
    assert_eq!(got[1].id, plain);
    assert_eq!(got[1].event, "message");
    assert_eq!(got[1].retry, None);
}

/// Publishes one event per topic, in order, and returns the ids of those in `expected`.
async fn publish_topics(
    hub: &crate::common::TestHub,
    topics: &[&str],
    expected: &[&str],
) -> Vec<String> {
    let mut want = Vec::new();
    for t in topics {
        let id = hub.publish(t, t).await;
        if expected.contains(t) {
            want.push(id);
        }
    }
    want
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uri_template_and_wildcard_selectors() {
    let hub = spawn_hub().await;
    let mut jobs = hub.subscribe(&format!("topic={}", enc("jobs/{id}"))).await;
    let mut books = hub
        .subscribe(&format!("topic={}", enc("https://example.com/books/{id}")))
        .await;
    let mut any = hub.subscribe("topic=*").await;
    let topics = [
        "jobs/1",
        "other/1",
        "jobs/1/logs",
        "https://example.com/books/7",
        "https://example.com/authors/7",
        "jobs/2",
        "jobs",
        "https://example.com/books/",
    ];
    publish_topics(&hub, &topics, &[]).await;
    let all = hub.history("topic=*").await;
    let id_of = |t: &str| {
        all.iter()
            .find(|e| e["topics"][0] == t)
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .unwrap()
    };
    let sentinel = hub.publish("sentinel", "end").await;

    let got_any = any.take_ids(topics.len() + 1).await;
    assert_eq!(
        got_any,
        crate::common::ids_of(&hub.history("topic=*").await)
    );
    assert_eq!(got_any.last(), Some(&sentinel));

    let got_jobs = jobs.take_ids(2).await;
    assert_eq!(got_jobs, [id_of("jobs/1"), id_of("jobs/2")]);
    // As in Mercure's reference hub (yosida95/uritemplate), a variable may expand to nothing,
    // so `books/{id}` also selects `books/`; `jobs/{id}` never selects `jobs` (no slash).
    let got_books = books.take_ids(2).await;
    assert_eq!(
        got_books,
        [
            id_of("https://example.com/books/7"),
            id_of("https://example.com/books/")
        ]
    );

    // Nothing else arrives on the template streams.
    let jobs3 = hub.publish("jobs/3", "x").await;
    assert_eq!(jobs.next().await.id, jobs3);
    books.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn match_parameter_is_exact_even_with_braces() {
    let hub = spawn_hub().await;
    let mut literal = hub.subscribe(&format!("match={}", enc("jobs/{id}"))).await;
    let mut exact = hub.subscribe("match=jobs/1").await;
    let want = publish_topics(&hub, &["jobs/1", "jobs/{id}", "jobs/2"], &["jobs/{id}"]).await;
    assert_eq!(literal.take_ids(1).await, want);
    let first = exact.next().await;
    assert_eq!(first.data, "jobs/1");
    hub.publish("jobs/1", "again").await;
    assert_eq!(
        exact.next().await.data,
        "again",
        "jobs/{{id}} and jobs/2 are skipped"
    );
    literal.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn type_filter_keeps_only_the_named_types() {
    let hub = spawn_hub().await;
    let mut sub = hub.subscribe("topic=build&type=done&type=failed").await;
    let mut want = Vec::new();
    for (kind, wanted) in [
        (None, false),
        (Some("progress"), false),
        (Some("done"), true),
        (Some("DONE"), false),
        (Some("failed"), true),
        (Some("done"), true),
    ] {
        let mut fields = vec![("topic", "build"), ("data", "x")];
        if let Some(k) = kind {
            fields.push(("type", k));
        }
        let id = hub.publish_fields(&fields).await;
        if wanted {
            want.push(id);
        }
    }
    // The same type on another topic is not wanted either.
    hub.publish_fields(&[("topic", "deploy"), ("type", "done")])
        .await;
    let got = sub.take(3).await;
    assert_eq!(got.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), want);
    assert_eq!(
        got.iter().map(|e| e.event.as_str()).collect::<Vec<_>>(),
        ["done", "failed", "done"]
    );
    sub.expect_silence(Duration::from_millis(200)).await;

    // The type filter replays history the same way.
    let mut replay = hub
        .subscribe("topic=build&type=failed&lastEventID=earliest")
        .await;
    assert_eq!(replay.take_ids(1).await, [want[1].clone()]);
    replay.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_subscribe_follows_one_exact_topic() {
    let hub = spawn_hub().await;
    let mut sub = hub.sse("/events/jobs/42", &[]).await;
    assert_eq!(sub.header("content-type"), "text/event-stream");
    let want = publish_topics(
        &hub,
        &["jobs/43", "jobs/42/logs", "jobs/42", "jobs/4", "jobs/42"],
        &["jobs/42"],
    )
    .await;
    assert_eq!(sub.take_ids(2).await, want);
    sub.expect_silence(Duration::from_millis(200)).await;

    let mut typed = hub.sse("/events/jobs/42?type=done", &[]).await;
    hub.publish("jobs/42", "untyped").await;
    let done = hub
        .publish_fields(&[("topic", "jobs/42"), ("type", "done")])
        .await;
    assert_eq!(typed.next().await.id, done);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_on_several_topics_reaches_each_subscriber_once() {
    let hub = spawn_hub().await;
    let mut alt = hub.subscribe("topic=b").await;
    let mut both = hub.subscribe("topic=a&topic=b").await;
    let mut wildcard_and_exact = hub.subscribe("topic=*&topic=a").await;
    let mut template = hub
        .subscribe(&format!("topic={}&match=b", enc("{name}")))
        .await;
    let multi = hub
        .publish_fields(&[("topic", "a"), ("topic", "b"), ("data", "both")])
        .await;
    let sentinel = hub.publish("b", "sentinel").await;
    for (name, sub) in [
        ("alternate", &mut alt),
        ("both", &mut both),
        ("wildcard", &mut wildcard_and_exact),
        ("template", &mut template),
    ] {
        let got = sub.take_ids(2).await;
        assert_eq!(got, [multi.clone(), sentinel.clone()], "{name}");
    }
    // History replays it once too.
    let mut replay = hub.subscribe("topic=a&topic=b&lastEventID=earliest").await;
    assert_eq!(replay.take_ids(2).await, [multi, sentinel]);
    replay.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_response_headers() {
    let hub = spawn_hub().await;
    let check = |sub: &crate::common::Sse, start: &str| {
        assert_eq!(sub.status, StatusCode::OK);
        assert_eq!(sub.header("content-type"), "text/event-stream");
        assert_eq!(sub.header("cache-control"), "no-cache");
        assert_eq!(sub.header("x-accel-buffering"), "no");
        assert_eq!(
            sub.header("content-encoding"),
            "",
            "streams are never compressed"
        );
        assert_eq!(sub.header("last-event-id"), start, "Last-Event-ID");
        assert_eq!(
            sub.header("mercure-last-event-id"),
            start,
            "Mercure-Last-Event-ID"
        );
        let link = sub.header("link");
        assert!(
            link.contains("/.well-known/mercure") && link.contains("rel=\"mercure\""),
            "{link}"
        );
    };
    let empty = hub
        .sse(
            "/.well-known/mercure?topic=h",
            &[("accept-encoding", "gzip, br, deflate")],
        )
        .await;
    check(&empty, "earliest");
    let first = hub.publish("h", "1").await;
    let second = hub.publish("other", "2").await;
    let live = hub.subscribe("topic=h").await;
    check(&live, &second);
    let resumed = hub
        .sse("/.well-known/mercure?topic=h", &[("last-event-id", &first)])
        .await;
    check(&resumed, &first);
    let path = hub.sse("/events/h?lastEventID=earliest", &[]).await;
    check(&path, "earliest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_comments_keep_an_idle_stream_alive() {
    let heartbeat = Duration::from_millis(200);
    let hub = spawn_hub_with(|c| c.hub.heartbeat = heartbeat).await;
    let mut raw = hub
        .client
        .get(hub.url("/.well-known/mercure?topic=quiet"))
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::OK);
    let opened = Instant::now();
    let mut bytes = Vec::new();
    within(WAIT, "three heartbeats", async {
        while bytes.windows(3).filter(|w| w == b":\n\n").count() < 3 {
            let chunk = raw.chunk().await.unwrap().expect("the stream ended");
            bytes.extend_from_slice(&chunk);
        }
    })
    .await;
    let elapsed = opened.elapsed();
    assert!(
        elapsed >= heartbeat * 2,
        "three heartbeats after {elapsed:?}: faster than every {heartbeat:?}"
    );
    let text = String::from_utf8(bytes).unwrap();
    assert!(
        text.lines().all(|l| l.is_empty() || l.starts_with(':')),
        "only comments on an idle stream: {text:?}"
    );

    // The SSE parser sees no event in them, and a real event still gets through.
    let mut sub = hub.subscribe("topic=quiet").await;
    sub.expect_silence(heartbeat * 3).await;
    let id = hub.publish("quiet", "finally").await;
    assert_eq!(sub.next().await.id, id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_the_streams_after_what_was_delivered() {
    let hub = spawn_hub().await;
    let mut sub = hub.subscribe("topic=s").await;
    let id = hub.publish("s", "last words").await;
    assert_eq!(sub.next().await.id, id);
    within(WAIT, "shutdown", hub.shutdown())
        .await
        .expect("serve returns Ok");
    match sub.recv(WAIT).await {
        Next::End | Next::Error(_) => {}
        other => panic!("the stream should end at shutdown, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn match_urlpattern_selects_urls_by_pattern() {
    let hub = spawn_hub().await;
    let mut sub = hub
        .subscribe(&format!(
            "match_urlpattern={}",
            enc("https://example.com/books/:id")
        ))
        .await;
    let want = publish_topics(
        &hub,
        &[
            "https://example.com/books/1",
            "https://example.com/authors/1",
            "books/2",
            "https://example.com/books/1/chapters",
            "https://example.org/books/3",
            "https://example.com/books/4",
        ],
        &["https://example.com/books/1", "https://example.com/books/4"],
    )
    .await;
    assert_eq!(sub.take_ids(2).await, want);
    sub.expect_silence(Duration::from_millis(150)).await;
}
