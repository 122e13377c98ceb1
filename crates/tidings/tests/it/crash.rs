//! The real binary under `kill -9`: every publish the hub acknowledged is replayed after a
//! restart, in order; and SIGTERM ends the streams and exits cleanly.

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::served::Served;
use crate::common::{client, within, Next, WAIT};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::sync::Notify;

/// One acknowledged publish: which publisher sent it, and the ids (one, or a whole JSON batch)
/// with their data, in publishing order.
#[derive(Debug, Clone)]
struct Ack {
    publisher: usize,
    ids: Vec<(String, String)>,
}

/// Publishes until the hub stops answering; returns what it acknowledged.
async fn publisher(
    base: String,
    p: usize,
    acked: Arc<AtomicUsize>,
    enough: usize,
    reached: Arc<Notify>,
) -> Vec<Ack> {
    let client = client();
    let mut acks = Vec::new();
    for i in 0..100_000 {
        // Two of the publishers send JSON batches of four; the rest single form events.
        let sent = if p >= 6 {
            let batch: Vec<Value> = (0..4)
                .map(|k| json!({"topic": format!("crash/{p}"), "data": format!("{p}-{i}-{k}")}))
                .collect();
            client
                .post(format!("{base}/.well-known/mercure"))
                .header("content-type", "application/json")
                .body(Value::Array(batch).to_string())
                .send()
                .await
        } else {
            client
                .post(format!("{base}/.well-known/mercure"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("topic=crash/{p}&data={p}-{i}"))
                .send()
                .await
        };
        let Ok(response) = sent else { break };
        if response.status() != StatusCode::OK {
            break;
        }
        let Ok(text) = response.text().await else {
            break;
        };
        let ids = if p >= 6 {
            let Ok(body) = serde_json::from_str::<Value>(&text) else {
                break;
            };
            body["ids"]
                .as_array()
                .expect("ids")
                .iter()
                .enumerate()
                .map(|(k, id)| (id.as_str().unwrap().to_owned(), format!("{p}-{i}-{k}")))
                .collect()
        } else {
            vec![(text, format!("{p}-{i}"))]
        };
        let n = ids.len();
        acks.push(Ack { publisher: p, ids });
        if acked.fetch_add(n, Ordering::SeqCst) + n >= enough {
            reached.notify_one();
        }
    }
    acks
}

async fn poll_all(base: &str) -> Vec<Value> {
    let client = client();
    let mut events = Vec::new();
    let mut after = "earliest".to_owned();
    loop {
        let url = format!(
            "{base}/events?topic=*&limit=1000&after={}",
            crate::common::enc(&after)
        );
        let page: Value = within(WAIT, "a poll", async {
            client.get(&url).send().await.unwrap().json().await.unwrap()
        })
        .await;
        events.extend(page["events"].as_array().unwrap().iter().cloned());
        after = page["last_event_id"].as_str().unwrap().to_owned();
        if page["more"] != true {
            return events;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_kill_9_in_order() {
    const ENOUGH: usize = 500;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let mut hub = Served::start(&db, &[]);
    let base = hub.base();

    let acked = Arc::new(AtomicUsize::new(0));
    let reached = Arc::new(Notify::new());
    let mut tasks = Vec::new();
    for p in 0..8 {
        tasks.push(tokio::spawn(publisher(
            base.clone(),
            p,
            acked.clone(),
            ENOUGH,
            reached.clone(),
        )));
    }
    within(
        Duration::from_secs(60),
        "500 acknowledged publishes",
        reached.notified(),
    )
    .await;
    // The next instant, with publishes still in flight.
    hub.kill9();
    let mut acks = Vec::new();
    for t in tasks {
        acks.extend(within(WAIT, "publishers stopping", t).await.unwrap());
    }
    let acked_ids: usize = acks.iter().map(|a| a.ids.len()).sum();
    assert!(acked_ids >= ENOUGH, "only {acked_ids} acknowledged");

    let restarted = Served::start(&db, &[]);
    let base = restarted.base();
    let log = poll_all(&base).await;
    let position: HashMap<String, usize> = log
        .iter()
        .enumerate()
        .map(|(i, e)| (e["id"].as_str().unwrap().to_owned(), i))
        .collect();
    assert_eq!(position.len(), log.len(), "an id is stored twice");

    // Every acknowledged event is there, with its data; each publisher's in the order it
    // published them; a batch contiguous.
    let mut last_of: HashMap<usize, usize> = HashMap::new();
    for ack in &acks {
        let mut previous: Option<usize> = None;
        for (id, data) in &ack.ids {
            let at = *position
                .get(id)
                .unwrap_or_else(|| panic!("acknowledged event {id} ({data}) was lost"));
            assert_eq!(log[at]["data"], data.as_str(), "{id}");
            if let Some(prev) = previous {
                assert_eq!(at, prev + 1, "batch of publisher {} split", ack.publisher);
            }
            previous = Some(at);
            if let Some(before) = last_of.insert(ack.publisher, at) {
                assert!(before < at, "publisher {} out of order", ack.publisher);
            }
        }
    }
    // At most the publishes in flight at the kill were stored without an answer.
    assert!(
        log.len() <= acked_ids + 8 * 4,
        "{} stored, {acked_ids} acknowledged",
        log.len()
    );

    // A real SSE client replaying `earliest` gets exactly the log, in order.
    let client = client();
    let response = within(
        WAIT,
        "subscribing",
        client
            .get(format!(
                "{base}/.well-known/mercure?topic=*&lastEventID=earliest"
            ))
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut sse = crate::common::sse_from(response);
    let replayed = sse.take_ids(log.len()).await;
    let want: Vec<String> = log
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(replayed, want, "earliest replay differs from the log order");
    sse.expect_silence(Duration::from_millis(200)).await;

    // The restarted hub goes on: a new event comes after all of them, and reaches the stream.
    let new_id = within(WAIT, "publishing after restart", async {
        client
            .post(format!("{base}/.well-known/mercure"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("topic=crash/after&data=restart")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    })
    .await;
    assert!(!position.contains_key(&new_id));
    assert_eq!(sse.next().await.id, new_id);
    let after = poll_all(&base).await;
    assert_eq!(after.len(), log.len() + 1);
    assert_eq!(after.last().unwrap()["id"], new_id.as_str());
    drop(restarted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_streams_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Served::start(dir.path().join("term.db"), &[]);
    let base = hub.base();
    let client = client();
    let response = within(
        WAIT,
        "subscribing",
        client
            .get(format!("{base}/.well-known/mercure?topic=t"))
            .send(),
    )
    .await
    .unwrap();
    let mut sse = crate::common::sse_from(response);
    let id = within(WAIT, "publishing", async {
        client
            .post(format!("{base}/.well-known/mercure"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("topic=t&data=bye")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    })
    .await;
    assert_eq!(sse.next().await.id, id);

    let status = Command::new("kill")
        .args(["-TERM", &hub.child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    match sse.recv(WAIT).await {
        Next::End | Next::Error(_) => {}
        other => panic!("the stream should end on SIGTERM, got {other:?}"),
    }
    let exit = within(WAIT, "the hub exiting", async {
        loop {
            if let Some(status) = hub.child.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        exit.success(),
        "exit {exit:?}; stderr:\n{}",
        hub.log.lock().unwrap()
    );
    // The event is still there for the next start.
    let again = Served::start(dir.path().join("term.db"), &[]);
    let log = poll_all(&again.base()).await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["id"], id.as_str());
}
