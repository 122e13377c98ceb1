//! The polling fallback: `GET /events?topic=..&after=..&limit=..&wait=..` pages, long polls and
//! the unknown-id notice.

use std::time::{Duration, Instant};

use crate::common::{enc, ids_of, spawn_hub, within, WAIT};
use reqwest::StatusCode;
use serde_json::{json, Value};

fn events(page: &Value) -> Vec<Value> {
    page["events"].as_array().expect("events is a list").clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_answers_the_events_after_the_cursor_as_json() {
    let hub = spawn_hub().await;
    let a1 = hub
        .publish_fields(&[
            ("topic", "a"),
            ("data", "one"),
            ("type", "t"),
            ("retry", "5"),
        ])
        .await;
    hub.publish("b", "not a").await;
    let a2 = hub.publish("a", "two").await;

    let reply = hub.get("/events?topic=a&after=earliest").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.header("content-type").starts_with("application/json"));
    assert!(reply.header("link").contains("rel=\"mercure\""));
    let page = reply.json();
    assert_eq!(ids_of(&events(&page)), [a1.clone(), a2.clone()]);
    assert_eq!(page["last_event_id"], a2.as_str());
    assert_eq!(page["more"], false);
    assert!(page.get("reset").is_none(), "{page}");
    let first = &events(&page)[0];
    assert_eq!(first["topics"], json!(["a"]));
    assert_eq!(first["type"], "t");
    assert_eq!(first["data"], "one");
    assert_eq!(first["retry"], 5);
    assert_eq!(first["private"], false);

    // After a given id: only what follows it, by log position.
    let page = hub.poll(&format!("topic=a&after={}", enc(&a1))).await;
    assert_eq!(ids_of(&events(&page)), std::slice::from_ref(&a2));
    // Caught up: nothing, and the cursor stays where it was.
    let page = hub.poll(&format!("topic=a&after={}", enc(&a2))).await;
    assert!(events(&page).is_empty());
    assert_eq!(page["last_event_id"], a2.as_str());
    assert_eq!(page["more"], false);
    // Selectors and the type filter work as on the stream.
    let page = hub
        .poll(&format!("topic={}&type=t&after=earliest", enc("{x}")))
        .await;
    assert_eq!(ids_of(&events(&page)), [a1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_with_limit_sets_more_until_the_end() {
    let hub = spawn_hub().await;
    let mut published = Vec::new();
    for i in 0..25 {
        published.push(hub.publish("paged", &i.to_string()).await);
        hub.publish("noise", "x").await;
    }
    let mut got = Vec::new();
    let mut after = "earliest".to_owned();
    let mut pages = Vec::new();
    for _ in 0..10 {
        let page = hub
            .poll(&format!("topic=paged&after={}&limit=10", enc(&after)))
            .await;
        let ids = ids_of(&events(&page));
        assert!(ids.len() <= 10, "limit exceeded: {}", ids.len());
        pages.push((ids.len(), page["more"].clone()));
        got.extend(ids);
        after = page["last_event_id"].as_str().unwrap().to_owned();
        if page["more"] != true {
            break;
        }
    }
    assert_eq!(
        pages,
        [(10, json!(true)), (10, json!(true)), (5, json!(false))]
    );
    assert_eq!(got, published);
    assert_eq!(after, published[24]);
    // The default page size, and a page exactly at the end, say no more.
    let page = hub.poll("topic=paged&after=earliest&limit=25").await;
    assert_eq!(events(&page).len(), 25);
    assert_eq!(page["more"], false);
    let page = hub.poll("topic=paged&after=earliest").await;
    assert_eq!(events(&page).len(), 25);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_without_cursor_starts_at_the_head() {
    let hub = spawn_hub().await;
    let empty = hub.poll("topic=h").await;
    assert!(events(&empty).is_empty());
    assert_eq!(empty["last_event_id"], "earliest");
    hub.publish("h", "old").await;
    let head = hub.publish("elsewhere", "newest").await;
    let page = hub.poll("topic=h").await;
    assert!(events(&page).is_empty(), "no history without after: {page}");
    assert_eq!(page["last_event_id"], head.as_str());
    let next = hub.publish("h", "new").await;
    let page = hub.poll(&format!("topic=h&after={}", enc(&head))).await;
    assert_eq!(ids_of(&events(&page)), [next]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_returns_as_soon_as_a_matching_event_is_published() {
    let hub = std::sync::Arc::new(spawn_hub().await);
    let start = hub.publish("lp", "before").await;
    let poller = {
        let hub = hub.clone();
        let start = start.clone();
        tokio::spawn(async move {
            let began = Instant::now();
            let page = hub
                .poll(&format!("topic=lp&after={}&wait=20", enc(&start)))
                .await;
            (page, began.elapsed())
        })
    };
    let mut poller = poller;
    // Not before: nothing matching has been published yet.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut poller)
            .await
            .is_err(),
        "the long poll returned with nothing to say"
    );
    // An event on another topic does not end it either.
    hub.publish("not-lp", "x").await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut poller)
            .await
            .is_err(),
        "a non-matching event ended the long poll"
    );
    let published_at = Instant::now();
    let id = hub.publish("lp", "wake up").await;
    let (page, elapsed) = within(WAIT, "the long poll", poller).await.unwrap();
    let latency = published_at.elapsed();
    assert_eq!(ids_of(&events(&page)), std::slice::from_ref(&id));
    assert_eq!(page["last_event_id"], id.as_str());
    assert!(
        elapsed < Duration::from_secs(10),
        "took {elapsed:?} of 20 s"
    );
    assert!(
        latency < Duration::from_secs(2),
        "answered {latency:?} after the publish"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_times_out_empty() {
    let hub = spawn_hub().await;
    let start = hub.publish("quiet", "x").await;
    hub.publish("noisy", "y").await;
    let began = Instant::now();
    let page = hub
        .poll(&format!("topic=quiet&after={}&wait=0.5", enc(&start)))
        .await;
    let elapsed = began.elapsed();
    assert!(events(&page).is_empty(), "{page}");
    assert!(
        elapsed >= Duration::from_millis(450),
        "returned after {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "returned after {elapsed:?}"
    );
    // The cursor may move past the non-matching event, never before the start.
    let cursor = page["last_event_id"].as_str().unwrap().to_owned();
    let later = hub.publish("quiet", "z").await;
    let page = hub
        .poll(&format!("topic=quiet&after={}", enc(&cursor)))
        .await;
    assert_eq!(ids_of(&events(&page)), [later]);
    // A wait when events are already there answers at once.
    let began = Instant::now();
    let page = hub
        .poll(&format!("topic=quiet&after={}&wait=20", enc(&start)))
        .await;
    assert_eq!(events(&page).len(), 1);
    assert!(began.elapsed() < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_after_is_reported_and_nothing_is_replayed() {
    let hub = spawn_hub().await;
    hub.publish("r", "1").await;
    let head = hub.publish("r", "2").await;
    let page = hub.poll("topic=r&after=never-published").await;
    assert!(events(&page).is_empty(), "{page}");
    assert_eq!(page["reset"]["last_event_id"], "never-published", "{page}");
    assert!(page["reset"]["reason"]
        .as_str()
        .is_some_and(|r| !r.is_empty()));
    assert_eq!(
        page["last_event_id"],
        head.as_str(),
        "continue from the head"
    );
    let next = hub.publish("r", "3").await;
    let page = hub
        .poll(&format!(
            "topic=r&after={}",
            enc(page["last_event_id"].as_str().unwrap())
        ))
        .await;
    assert_eq!(ids_of(&events(&page)), [next]);
    assert!(page.get("reset").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_in_a_poll_gives_the_newest_event_per_topic() {
    let hub = spawn_hub().await;
    hub.publish("jobs/1", "queued").await;
    let j2 = hub.publish("jobs/2", "done").await;
    let j1 = hub.publish("jobs/1", "done").await;
    let page = hub
        .poll(&format!("topic={}&latest=1", enc("jobs/{id}")))
        .await;
    assert_eq!(ids_of(&events(&page)), [j2, j1.clone()]);
    assert_eq!(page["last_event_id"], j1.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_poll_parameters_are_refused() {
    let hub = spawn_hub().await;
    for query in [
        "topic=a&limit=0",
        "topic=a&limit=1001",
        "topic=a&limit=ten",
        "topic=a&wait=-1",
        "topic=a&wait=soon",
        "topic=a&wait=NaN",
        "topic=a&wait=100000",
        "after=earliest",
        "topic=a&latest=perhaps",
    ] {
        hub.get(&format!("/events?{query}"))
            .await
            .assert_refused(400, query);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_right_after_an_acknowledged_publish_includes_it() {
    let hub = std::sync::Arc::new(spawn_hub().await);
    let mut previous = hub.publish("ryw", "0").await;
    // Other publishers and subscribers keep the hub busy, as in production.
    let mut streams = Vec::new();
    for _ in 0..4 {
        streams.push(hub.subscribe("topic=*").await);
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut background = Vec::new();
    for p in 0..2 {
        let (hub, stop) = (hub.clone(), stop.clone());
        background.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                hub.publish(&format!("noise/{p}"), "x").await;
            }
        }));
    }
    for i in 1..=300 {
        let id = hub.publish("ryw", &i.to_string()).await;
        // A raw poll: no settling first.
        let reply = hub
            .get(&format!("/events?topic=ryw&after={}", enc(&previous)))
            .await;
        assert_eq!(reply.status, StatusCode::OK);
        let page = reply.json();
        assert_eq!(
            ids_of(&events(&page)),
            std::slice::from_ref(&id),
            "publish #{i} was acknowledged but the next poll does not show it: {page}"
        );
        previous = id;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in background {
        within(WAIT, "background publishers", task).await.unwrap();
    }
    drop(streams);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_over_large_events_is_cut_by_bytes_and_pages_on() {
    let hub = spawn_hub().await;
    let big = "x".repeat(900 << 10);
    let mut published = Vec::new();
    for i in 0..12 {
        published.push(hub.publish(&format!("big/{i}"), &big).await);
    }
    // History: a few events a page (about 4 MiB), `more`, and every event exactly once.
    let first = hub
        .poll(&format!(
            "topic={}&after=earliest&limit=1000",
            enc("big/{i}")
        ))
        .await;
    let n = events(&first).len();
    assert!(
        (1..12).contains(&n),
        "one page holds {n} of 12 large events"
    );
    assert_eq!(first["more"], json!(true));
    let all = hub.history(&format!("topic={}", enc("big/{i}"))).await;
    assert_eq!(ids_of(&all), published, "every event once, in order");
    // Late joiner: the newest event of each of the 12 topics is cut by bytes too.
    let latest = hub
        .poll(&format!("topic={}&latest=1&limit=1000", enc("big/{i}")))
        .await;
    let n = events(&latest).len();
    assert!(
        (1..12).contains(&n),
        "latest page holds {n} of 12 large events"
    );
    assert_eq!(ids_of(&events(&latest)), published[..n].to_vec());
    assert_eq!(latest["more"], json!(true), "the rest wait");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_joiner_stream_over_large_events_sends_them_all_in_order() {
    let hub = spawn_hub().await;
    let big = "y".repeat(900 << 10);
    let mut published = Vec::new();
    for i in 0..8 {
        published.push(hub.publish(&format!("big/{i}"), &big).await);
    }
    let mut sse = hub
        .subscribe(&format!("topic={}&latest=1", enc("big/{i}")))
        .await;
    assert_eq!(sse.take_ids(8).await, published);
    let live = hub.publish("big/0", "small").await;
    assert_eq!(sse.take_ids(1).await, vec![live]);
}
