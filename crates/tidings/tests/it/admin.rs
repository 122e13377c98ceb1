//! Operations endpoints: `/healthz` and the `/stats` counters, including that subscribers
//! which go away are forgotten.

use std::time::Duration;

use crate::common::{spawn_hub, within, WAIT};
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn wait_for_subscribers(hub: &crate::common::TestHub, n: u64) -> Value {
    within(WAIT, "the subscriber count", async {
        loop {
            let stats = hub.stats().await;
            if stats["subscribers"] == n {
                return stats;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_stats_follow_the_hub() {
    let hub = spawn_hub().await;
    let health = hub.get("/healthz").await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.json()["status"], "ok");

    let stats = hub.stats().await;
    assert_eq!(stats["subscribers"], 0, "{stats}");
    assert_eq!(stats["events_stored"], 0, "{stats}");
    assert_eq!(stats["published"], 0, "{stats}");
    assert_eq!(stats["oldest_event_id"], Value::Null, "{stats}");

    let first = hub.publish("a", "1").await;
    hub.publish("b", "2").await;
    let third = hub.publish("a", "3").await;

    let mut one = hub.subscribe("topic=a").await;
    let mut two = hub.subscribe("topic=a&topic=b").await;
    let mut all = hub
        .subscribe(&format!("topic=*&topic={}", crate::common::enc("x/{y}")))
        .await;
    let stats = hub.stats().await;
    assert_eq!(stats["subscribers"], 3, "{stats}");
    assert_eq!(
        stats["subscribed_topics"], 4,
        "exact topics a and b, patterns * and x/{{y}}: {stats}"
    );
    assert_eq!(stats["events_stored"], 3, "{stats}");
    assert_eq!(stats["published"], 3, "{stats}");
    assert_eq!(stats["oldest_event_id"], first.as_str(), "{stats}");
    assert_eq!(stats["newest_event_id"], third.as_str(), "{stats}");
    let delivered_before = stats["delivered"].as_u64().unwrap();

    let fourth = hub.publish("a", "4").await;
    for sub in [&mut one, &mut two, &mut all] {
        assert_eq!(sub.next().await.id, fourth);
    }
    let stats = hub.stats().await;
    assert_eq!(
        stats["delivered"].as_u64().unwrap() - delivered_before,
        3,
        "one event to three subscribers: {stats}"
    );
    assert_eq!(stats["published"], 4);

    // Subscribers that hang up are forgotten promptly (well before the 15 s heartbeat).
    drop(one);
    drop(two);
    let stats = wait_for_subscribers(&hub, 1).await;
    assert_eq!(
        stats["subscribed_topics"], 2,
        "the patterns * and x/{{y}}: {stats}"
    );
    drop(all);
    let stats = wait_for_subscribers(&hub, 0).await;
    assert_eq!(stats["subscribed_topics"], 0, "{stats}");
    assert_eq!(hub.stats().await["slow_disconnects"], json!(0));
}
