//! `until=TYPE`: a stream (or poll page) that ends right after an event of a terminal type, on
//! every path: live, history replay and the late-joiner replay.

use std::time::Duration;

use crate::common::*;

async fn job(hub: &TestHub, n: u32, kind: &str) -> String {
    let topic = format!("jobs/{n}");
    hub.publish_fields(&[("topic", &topic), ("type", kind), ("data", kind)])
        .await
}

#[tokio::test]
async fn a_live_stream_ends_after_the_terminal_event() {
    let hub = spawn_hub().await;
    let mut sub = hub
        .subscribe("topic=jobs/1&until=completed&until=failed")
        .await;
    job(&hub, 1, "progress").await;
    job(&hub, 2, "completed").await; // another job: does not end this stream
    let done = job(&hub, 1, "completed").await;
    job(&hub, 1, "progress").await;
    let kinds: Vec<String> = sub
        .expect_end()
        .await
        .iter()
        .map(|e| e.event.clone())
        .collect();
    assert_eq!(kinds, ["progress", "completed"]);
    assert_eq!(sub.last_id.as_deref(), Some(done.as_str()));
}

#[tokio::test]
async fn replay_and_late_joiners_end_at_the_terminal_event_too() {
    let hub = spawn_hub().await;
    job(&hub, 1, "queued").await;
    job(&hub, 1, "failed").await;
    job(&hub, 1, "progress").await; // after the terminal event: never sent

    let mut replay = hub
        .subscribe("topic=jobs/1&until=failed&lastEventID=earliest")
        .await;
    let kinds: Vec<String> = replay
        .expect_end()
        .await
        .iter()
        .map(|e| e.event.clone())
        .collect();
    assert_eq!(kinds, ["queued", "failed"]);

    // The late joiner's newest event is `progress`, not terminal: it stays open.
    let mut late = hub.subscribe("topic=jobs/1&until=failed&latest=1").await;
    assert_eq!(late.next().await.event, "progress");
    late.expect_silence(Duration::from_millis(200)).await;
    job(&hub, 1, "failed").await;
    let rest: Vec<String> = late
        .expect_end()
        .await
        .iter()
        .map(|e| e.event.clone())
        .collect();
    assert_eq!(rest, ["failed"]);

    // A joiner after the terminal event gets it at once, and the stream ends.
    let mut after = hub.subscribe("topic=jobs/1&until=failed&latest=1").await;
    let got: Vec<String> = after
        .expect_end()
        .await
        .iter()
        .map(|e| e.event.clone())
        .collect();
    assert_eq!(got, ["failed"]);

    // Polling: the page stops at the first terminal event.
    let page = hub.poll("topic=jobs/1&until=failed&after=earliest").await;
    let kinds: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["queued", "failed"]);
}
