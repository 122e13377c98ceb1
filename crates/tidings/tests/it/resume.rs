//! Resuming a stream: Last-Event-ID (header and query forms) with no gap and no duplicate while
//! publishers keep publishing, `earliest`, the unknown-id notice, and the late-joiner option.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::{enc, spawn_hub, spawn_hub_with, within, Next, TestHub, WAIT};
use reqwest::StatusCode;
use tokio::sync::watch;

/// How a resuming client passes its last id.
#[derive(Debug, Clone, Copy)]
enum Via {
    Header,
    LastEventIdQuery,
    SnakeCaseQuery,
}

/// Opens `base` (a path, with or without a query) resuming after `last` (from `earliest` when
/// there is none yet), and checks the stream says where it starts.
async fn open(hub: &TestHub, base: &str, last: Option<&str>, via: Via) -> crate::common::Sse {
    let sep = if base.contains('?') { "&" } else { "?" };
    let sse = match (last, via) {
        (None, _) => {
            hub.sse(&format!("{base}{sep}lastEventID=earliest"), &[])
                .await
        }
        (Some(id), Via::Header) => hub.sse(base, &[("last-event-id", id)]).await,
        (Some(id), Via::LastEventIdQuery) => {
            hub.sse(&format!("{base}{sep}lastEventID={}", enc(id)), &[])
                .await
        }
        (Some(id), Via::SnakeCaseQuery) => {
            hub.sse(&format!("{base}{sep}last_event_id={}", enc(id)), &[])
                .await
        }
    };
    let start = last.unwrap_or("earliest");
    assert_eq!(sse.header("last-event-id"), start, "{via:?}");
    assert_eq!(sse.header("mercure-last-event-id"), start, "{via:?}");
    sse
}

struct Resumed {
    ids: Vec<String>,
    reconnects: usize,
    /// Reconnects made while the publishers were still publishing.
    during_publishing: usize,
}

/// A client that reads a few events, drops the connection, and resumes from the last id it
/// took, over and over; after `wanted` reconnects it bumps `done` and reads until it has
/// `total` events (known once the publishers finish).
async fn resumer(
    hub: Arc<TestHub>,
    base: String,
    every: usize,
    wanted: usize,
    done: Arc<AtomicUsize>,
    publishing: Arc<AtomicBool>,
    mut total: watch::Receiver<Option<usize>>,
) -> Resumed {
    let mut ids: Vec<String> = Vec::new();
    let mut reconnects = 0;
    let mut during_publishing = 0;
    let vias = [Via::Header, Via::LastEventIdQuery, Via::SnakeCaseQuery];
    loop {
        let last = ids.last().cloned();
        let via = vias[reconnects % vias.len()];
        let mut sse = open(&hub, &base, last.as_deref(), via).await;
        // Vary the cut point so it falls in history, at the seam and in live events.
        let quota = if reconnects < wanted {
            every + (reconnects * 17) % every
        } else {
            usize::MAX
        };
        let mut taken = 0;
        while taken < quota {
            if total.borrow_and_update().is_some_and(|t| ids.len() >= t) {
                return Resumed {
                    ids,
                    reconnects,
                    during_publishing,
                };
            }
            match sse.recv(Duration::from_millis(100)).await {
                Next::Event(e) => {
                    assert!(!e.id.is_empty(), "{base}: an event without id: {e:?}");
                    ids.push(e.id);
                    taken += 1;
                }
                Next::Timeout => {}
                other => panic!("{base}: the stream broke: {other:?}"),
            }
        }
        drop(sse);
        reconnects += 1;
        if publishing.load(Ordering::SeqCst) {
            during_publishing += 1;
        }
        if reconnects == wanted {
            done.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_has_no_gap_and_no_duplicate_while_others_publish() {
    const PUBLISHERS: usize = 3;
    const AT_LEAST: usize = 200;
    const AT_MOST: usize = 2000;
    const WANTED: usize = 8;
    let hub = Arc::new(spawn_hub().await);
    let done = Arc::new(AtomicUsize::new(0));
    let publishing = Arc::new(AtomicBool::new(true));

    // Three kinds of resuming client: a URI template (history read unfiltered), a list of exact
    // topics (history read by topic), and the path form.
    let clients = [
        (
            format!("/.well-known/mercure?topic={}", enc("r/{p}")),
            40,
            "topic=r/{p}",
        ),
        (
            "/.well-known/mercure?topic=r/0&topic=r/1&match=r/2".to_owned(),
            35,
            "topic=r/0&topic=r/1&topic=r/2",
        ),
        ("/events/r/0".to_owned(), 15, "topic=r/0"),
    ];
    let mut readers = Vec::new();
    for (base, every, _) in &clients {
        let (total_tx, total_rx) = watch::channel(None);
        let reader = tokio::spawn(resumer(
            hub.clone(),
            base.clone(),
            *every,
            WANTED,
            done.clone(),
            publishing.clone(),
            total_rx,
        ));
        readers.push((total_tx, reader));
    }

    // Publishers go on until every client has resumed WANTED times (so every resume races with
    // publishes), and publish at least AT_LEAST events each, some of them noise.
    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let hub = hub.clone();
        let done = done.clone();
        let n_clients = clients.len();
        publishers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut i = 0;
            while i < AT_MOST && (i < AT_LEAST || done.load(Ordering::SeqCst) < n_clients) {
                let topic = format!("r/{p}");
                acked.push(hub.publish(&topic, &format!("{p}-{i}")).await);
                if i % 7 == 0 {
                    hub.publish(&format!("noise/{p}"), "noise").await;
                }
                i += 1;
            }
            acked
        }));
    }
    let mut acked: Vec<Vec<String>> = Vec::new();
    for p in publishers {
        acked.push(
            within(Duration::from_secs(60), "publishers", p)
                .await
                .unwrap(),
        );
    }
    publishing.store(false, Ordering::SeqCst);

    // The log order, read by polling, is what each client must have received.
    for ((_, _, selectors), (total_tx, reader)) in clients.iter().zip(readers) {
        let want = hub.history_ids(selectors).await;
        total_tx.send_replace(Some(want.len()));
        let got = within(Duration::from_secs(30), "a resuming reader", reader)
            .await
            .unwrap();
        assert!(
            got.reconnects >= WANTED && got.during_publishing >= WANTED,
            "{selectors}: resumed {} times, {} while publishing",
            got.reconnects,
            got.during_publishing
        );
        eprintln!(
            "{selectors}: {} events over {} connections",
            got.ids.len(),
            got.reconnects + 1
        );
        crate::common::assert_no_duplicates(&got.ids, selectors);
        assert_eq!(got.ids.len(), want.len(), "{selectors}: a gap");
        assert_eq!(got.ids, want, "{selectors}: not in log order");
    }

    // Every acknowledged event is in the log, each publisher's in publishing order.
    let log = hub.history_ids("topic=r/0&topic=r/1&topic=r/2").await;
    let position: std::collections::HashMap<&String, usize> =
        log.iter().enumerate().map(|(i, id)| (id, i)).collect();
    for (p, ids) in acked.iter().enumerate() {
        assert!(ids.len() >= AT_LEAST);
        let at: Vec<usize> = ids
            .iter()
            .map(|id| {
                *position
                    .get(id)
                    .unwrap_or_else(|| panic!("acked {id} missing"))
            })
            .collect();
        assert!(
            at.windows(2).all(|w| w[0] < w[1]),
            "publisher {p} out of order"
        );
    }
    assert_eq!(log.len(), acked.iter().map(Vec::len).sum::<usize>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn earliest_replays_everything_then_goes_live() {
    let hub = spawn_hub().await;
    let mut published = Vec::new();
    for i in 0..5 {
        published.push(hub.publish("e", &i.to_string()).await);
        hub.publish("not-e", "x").await;
    }
    let mut by_query = hub.subscribe("topic=e&lastEventID=earliest").await;
    let mut by_header = hub
        .sse(
            "/.well-known/mercure?topic=e",
            &[("last-event-id", "earliest")],
        )
        .await;
    let mut by_snake = hub.subscribe("topic=e&last_event_id=earliest").await;
    for sub in [&by_query, &by_header, &by_snake] {
        assert_eq!(sub.header("last-event-id"), "earliest");
        assert_eq!(sub.header("mercure-last-event-id"), "earliest");
    }
    let live = hub.publish("e", "live").await;
    let mut want = published.clone();
    want.push(live);
    for sub in [&mut by_query, &mut by_header, &mut by_snake] {
        let got = sub.take(6).await;
        assert_eq!(got.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), want);
        assert_eq!(got[0].data, "0");
        sub.expect_silence(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_continues_after_the_position_of_any_known_id() {
    let hub = spawn_hub().await;
    let a1 = hub.publish("a", "1").await;
    let b1 = hub.publish("b", "1").await;
    let a2 = hub.publish("a", "2").await;
    let a3 = hub.publish("a", "3").await;
    // The id of an event on another topic is still a position in the one log.
    let mut sub = hub
        .sse("/.well-known/mercure?topic=a", &[("last-event-id", &b1)])
        .await;
    assert_eq!(sub.header("last-event-id"), b1);
    assert_eq!(sub.take_ids(2).await, [a2.clone(), a3.clone()]);
    // Resuming from the newest id replays nothing, then live events flow.
    let mut tail = hub
        .subscribe(&format!("topic=a&lastEventID={}", enc(&a3)))
        .await;
    tail.expect_silence(Duration::from_millis(150)).await;
    let a4 = hub.publish("a", "4").await;
    assert_eq!(tail.next().await.id, a4);
    assert_eq!(sub.next().await.id, a4);
    // The header wins over the query parameter, as Mercure asks.
    let mut both = hub
        .sse(
            &format!("/.well-known/mercure?topic=a&lastEventID={}", enc(&a1)),
            &[("last-event-id", &a3)],
        )
        .await;
    assert_eq!(both.header("last-event-id"), a3);
    assert_eq!(both.next().await.id, a4);
    // The path form resumes too.
    let mut path = hub.sse("/events/a", &[("last-event-id", &a1)]).await;
    assert_eq!(path.take_ids(3).await, [a2, a3, a4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_id_is_announced_then_live_events_follow() {
    let hub = spawn_hub().await;
    hub.publish("u", "old 1").await;
    let mut newest = hub.publish("u", "old 2").await;
    for (path, headers) in [
        (
            "/.well-known/mercure?topic=u&lastEventID=no-such-id",
            vec![],
        ),
        (
            "/.well-known/mercure?topic=u",
            vec![("last-event-id", "no-such-id")],
        ),
        ("/events/u?last_event_id=no-such-id", vec![]),
    ] {
        let mut sub = hub.sse(path, &headers).await;
        assert_eq!(sub.header("last-event-id"), "earliest", "{path}");
        assert_eq!(sub.header("mercure-last-event-id"), "earliest", "{path}");
        let notice = sub.next().await;
        assert_eq!(notice.event, "tidings.reset", "{path}: {notice:?}");
        assert_eq!(
            notice.id, "",
            "the notice must not move the client's Last-Event-ID"
        );
        let body: serde_json::Value = serde_json::from_str(&notice.data).expect("JSON notice");
        assert_eq!(body["last_event_id"], "no-such-id", "{body}");
        assert_eq!(body["resumed_after"], newest.as_str(), "{body}");
        // Nothing is replayed: the next event is a live one.
        let live = hub.publish("u", "live").await;
        assert_eq!(sub.next().await.id, live, "{path}");
        newest = live;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pruned_id_is_announced_like_an_unknown_one() {
    let hub = spawn_hub_with(|c| {
        c.hub.retention.max_events = Some(3);
        c.hub.prune_every = Duration::from_millis(50);
    })
    .await;
    let first = hub.publish("p", "1").await;
    for i in 2..=6 {
        hub.publish("p", &i.to_string()).await;
    }
    // Wait (bounded) for the background pruner to drop the first event.
    within(WAIT, "pruning", async {
        loop {
            if hub.stats().await["events_stored"] == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let mut sub = hub
        .subscribe(&format!("topic=p&lastEventID={}", enc(&first)))
        .await;
    assert_eq!(sub.header("last-event-id"), "earliest");
    let notice = sub.next().await;
    assert_eq!(notice.event, "tidings.reset");
    let live = hub.publish("p", "live").await;
    assert_eq!(sub.next().await.id, live);
    // `earliest` replays only what is retained (the pruner may have taken `4` by now), in order.
    let mut all = hub.subscribe("topic=p&lastEventID=earliest").await;
    let mut got = Vec::new();
    while got.last().map(String::as_str) != Some("live") {
        got.push(all.next().await.data);
    }
    let want = ["4", "5", "6", "live"];
    assert!(
        got.len() >= 3 && want.ends_with(&got.iter().map(String::as_str).collect::<Vec<_>>()),
        "earliest replayed {got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_joiners_get_the_newest_event_of_each_topic_then_live() {
    let hub = spawn_hub().await;
    hub.publish("jobs/1", "queued").await;
    hub.publish("jobs/2", "queued").await;
    hub.publish("jobs/1", "running").await;
    let done1 = hub.publish("jobs/1", "done").await;
    hub.publish("other", "not a job").await;
    let done2 = hub.publish("jobs/2", "done").await;

    let mut exact = hub.subscribe("topic=jobs/1&latest=1").await;
    assert_eq!(exact.next().await.id, done1);
    exact.expect_silence(Duration::from_millis(150)).await;

    let mut template = hub
        .subscribe(&format!("topic={}&latest=true", enc("jobs/{id}")))
        .await;
    let got = template.take(2).await;
    assert_eq!(
        got.iter()
            .map(|e| (e.id.clone(), e.data.clone()))
            .collect::<Vec<_>>(),
        [
            (done1.clone(), "done".to_owned()),
            (done2, "done".to_owned())
        ],
        "one event per topic, in log order"
    );
    let mut nothing_yet = hub.subscribe("topic=jobs/3&latest=1").await;

    let live = hub.publish("jobs/1", "archived").await;
    assert_eq!(exact.next().await.id, live);
    assert_eq!(template.next().await.id, live);
    let first3 = hub.publish("jobs/3", "queued").await;
    assert_eq!(nothing_yet.next().await.id, first3);
    assert_eq!(template.next().await.id, first3);

    // Without `latest`, a live subscription starts empty.
    let mut plain = hub.subscribe("topic=jobs/1").await;
    plain.expect_silence(Duration::from_millis(150)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_stream_starts_with_a_comment_not_an_event() {
    // The first bytes flush at once (a client knows it is connected) and are not an event.
    let hub = spawn_hub().await;
    let mut raw = hub
        .client
        .get(hub.url("/.well-known/mercure?topic=x"))
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::OK);
    let first = within(WAIT, "the first bytes", raw.chunk())
        .await
        .unwrap()
        .expect("bytes");
    assert!(first.starts_with(b":"), "{first:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_with_a_control_character_cannot_break_subscriptions() {
    let hub = spawn_hub().await;
    let reply = hub
        .post(
            "/.well-known/mercure",
            Some("application/x-www-form-urlencoded"),
            "topic=ctl&id=x%01y&data=x",
        )
        .await;
    // Refused at the door: nothing stored, so no stream can ever carry it.
    reply.assert_refused(400, "control character in id");
    assert!(hub.history_ids("topic=ctl").await.is_empty());
    // Resuming from such an id is an unknown id (the notice), never a failure.
    let mut resumed = hub.subscribe("topic=ctl&lastEventID=x%01y").await;
    assert_eq!(resumed.header("last-event-id"), "earliest");
    assert_eq!(resumed.next().await.event, "tidings.reset");
    let next = hub.publish("ctl", "after").await;
    assert_eq!(resumed.next().await.id, next);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_ascii_id_can_be_resumed_with_the_header() {
    let hub = spawn_hub().await;
    let mut sub = hub.subscribe("topic=intl").await;
    let id = hub
        .publish_fields(&[("topic", "intl"), ("id", "événement-1"), ("data", "x")])
        .await;
    assert_eq!(id, "événement-1");
    assert_eq!(sub.next().await.id, "événement-1");
    drop(sub);
    let next = hub.publish("intl", "after").await;
    let request = hub
        .client
        .get(hub.url("/.well-known/mercure?topic=intl"))
        .header(
            "last-event-id",
            reqwest::header::HeaderValue::from_bytes("événement-1".as_bytes()).unwrap(),
        );
    let response = within(WAIT, "resuming", request.send()).await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "resuming after a stored id: {:?}",
        response.text().await
    );
    let mut resumed = crate::common::sse_from(response);
    assert_eq!(resumed.next().await.id, next);
}
