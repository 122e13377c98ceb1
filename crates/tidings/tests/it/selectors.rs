//! What selectors may cost: one subscription over `--max-selector-bytes` or `--max-patterns` is
//! answered 400, and a client address whose live subscriptions would hold more than
//! `--max-selector-bytes-per-ip` or `--max-patterns-per-ip` is answered 429 until one closes.
//! Each refusal names the limit and its value, and changes nothing. Subscribers that share a
//! pattern all receive what it selects.

use std::time::{Duration, Instant};

use crate::common::{enc, spawn_hub, Reply, WAIT};
use reqwest::StatusCode;

/// `topic=` parameters for `n` distinct URI templates, numbered from `from`.
fn templates(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("topic={}", enc(&format!("t{i}/{{id}}"))))
        .collect::<Vec<_>>()
        .join("&")
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

#[tokio::test]
async fn one_subscription_over_the_selector_limits_is_refused_400() {
    let hub = spawn_hub().await;
    let reply = hub
        .get(&format!("/.well-known/mercure?{}", templates(0, 21)))
        .await;
    let reason = reply.assert_refused(400, "21 templates");
    assert!(reason.contains("--max-patterns (20)"), "{reason}");

    let long: String = (0..9)
        .map(|i| format!("topic={i}{}", "a".repeat(2000)))
        .collect::<Vec<_>>()
        .join("&");
    let reply = hub.get(&format!("/.well-known/mercure?{long}")).await;
    let reason = reply.assert_refused(400, "18 KB of selectors");
    assert!(reason.contains("--max-selector-bytes (16384)"), "{reason}");

    // The same limits apply to polling, and nothing was registered by the refusals.
    let reply = hub.get(&format!("/events?{}", templates(0, 21))).await;
    reply.assert_refused(400, "21 templates in a poll");
    assert_eq!(hub.stats().await["subscribers"], 0);

    // Within the limits: fine, and every subscriber of a shared template gets the event.
    let mut a = hub.subscribe(&templates(0, 20)).await;
    let mut b = hub.subscribe(&templates(5, 1)).await;
    let id = hub.publish("t5/42", "hello").await;
    assert_eq!(a.take_ids(1).await, std::slice::from_ref(&id));
    assert_eq!(b.take_ids(1).await, [id]);
    hub.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_address_past_its_pattern_budget_is_refused_429_until_a_subscription_closes() {
    let hub = spawn_hub().await;
    // Five subscriptions of 20 patterns each: the default budget of 100 per address.
    let mut streams = Vec::new();
    for s in 0..5 {
        streams.push(hub.subscribe(&templates(20 * s, 20)).await);
    }
    let over = format!("/.well-known/mercure?topic=*&{}", templates(100, 1));
    let reply = hub.get(&over).await;
    let reason = reply.assert_refused(429, "the 101st pattern");
    assert!(
        reason.contains("102 distinct pattern selectors")
            && reason.contains("--max-patterns-per-ip (100)"),
        "{reason}"
    );
    // Patterns the address holds already cost nothing more (clients behind one proxy may all
    // hold `jobs/{id}`).
    let mut again = hub.subscribe(&templates(0, 20)).await;
    // A poll that would wait holds its selectors too.
    let reply = hub
        .get(&format!("/events?{}&wait=1", templates(200, 2)))
        .await;
    reply.assert_refused(429, "a waiting poll past the budget");
    // Exact topics are not patterns.
    let mut exact = hub.subscribe("topic=a&topic=b").await;

    // Streams keep working, and once one closes its patterns are free again.
    let id = hub.publish("t3/1", "x").await;
    assert_eq!(streams[0].take_ids(1).await, std::slice::from_ref(&id));
    assert_eq!(again.take_ids(1).await, std::slice::from_ref(&id));
    drop(again);
    drop(streams.remove(0));
    let mut client = None;
    until_status(StatusCode::OK, async || {
        match hub.try_sse(&over, &[]).await {
            Ok(sse) => {
                client = Some(sse);
                Reply {
                    status: StatusCode::OK,
                    headers: Default::default(),
                    body: String::new(),
                }
            }
            Err(reply) => reply,
        }
    })
    .await;
    let id = hub.publish("a", "y").await;
    assert_eq!(
        client.expect("subscribed").take_ids(1).await,
        std::slice::from_ref(&id)
    );
    assert_eq!(exact.take_ids(1).await, [id]);
    hub.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_address_past_its_pattern_bytes_is_refused_429() {
    let hub = crate::common::spawn_hub_with(|c| c.limits.max_pattern_bytes_per_ip = 5000).await;
    // ~2,000-byte templates, and exact topics as long (not counted per address).
    let template = |c: char| {
        format!(
            "topic={}",
            enc(&format!("{}/{{id}}", c.to_string().repeat(1995)))
        )
    };
    let exact = |c: char| format!("topic={}", c.to_string().repeat(2000));
    let _a = hub
        .subscribe(&format!(
            "{}&{}&{}",
            template('a'),
            template('b'),
            exact('x')
        ))
        .await;
    let _b = hub
        .subscribe(&format!("{}&{}&{}", template('a'), exact('y'), exact('z')))
        .await;
    let reply = hub
        .get(&format!("/.well-known/mercure?{}", template('c')))
        .await;
    let reason = reply.assert_refused(429, "6000 bytes of patterns from one address");
    assert!(
        reason.contains("6000 bytes") && reason.contains("--max-pattern-bytes-per-ip (5000)"),
        "{reason}"
    );
    hub.shutdown().await.unwrap();
}
