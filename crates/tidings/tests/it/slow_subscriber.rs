//! A subscriber that stops reading: the hub cuts it off once its bounded queue overflows, keeps
//! serving the other subscribers promptly, holds only a bounded amount for it meanwhile, and the
//! slow one, once it reads again, gets what reached its socket, sees the stream end, and resumes
//! with nothing lost.

use std::time::{Duration, Instant};

use crate::common::{spawn_hub_with, within, TestHub, WAIT};
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const EVENT_BYTES: usize = 64 * 1024;
const QUEUE_FRAMES: usize = 64;
const QUEUE_BYTES: usize = 1 << 20;
/// Past this many 64 KiB events without a cut, the hub is buffering without bound.
const CAP: usize = 400;

/// Opens a raw subscription, reads only the response head, and returns the socket and any
/// body bytes that came with the head.
async fn raw_subscriber(hub: &TestHub, path: &str) -> (TcpStream, Vec<u8>) {
    let socket = TcpSocket::new_v4().unwrap();
    // A small receive window, so the kernel holds little on the client side.
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    let mut stream = socket.connect(hub.addr).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n",
        hub.addr
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let head_end = within(WAIT, "the response head", async {
        loop {
            let mut chunk = [0u8; 1024];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed before the head");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                return i + 4;
            }
        }
    })
    .await;
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    let rest = buf[head_end..].to_vec();
    (stream, rest)
}

/// Decodes an HTTP/1.1 chunked body; returns the payload and whether the final chunk came.
fn dechunk(raw: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        let Some(eol) = raw[i..].windows(2).position(|w| w == b"\r\n") else {
            return (out, false);
        };
        let line = std::str::from_utf8(&raw[i..i + eol]).expect("chunk size line");
        let size = usize::from_str_radix(line.split(';').next().unwrap().trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size {line:?}"));
        let start = i + eol + 2;
        if size == 0 {
            return (out, true);
        }
        if start + size + 2 > raw.len() {
            out.extend_from_slice(&raw[start..raw.len().min(start + size)]);
            return (out, false);
        }
        out.extend_from_slice(&raw[start..start + size]);
        i = start + size + 2;
    }
}

/// Parses SSE bytes with the same WHATWG parser the other tests use.
async fn parse_sse(body: Vec<u8>) -> Vec<eventsource_stream::Event> {
    futures_util::stream::iter([Ok::<_, std::convert::Infallible>(body)])
        .eventsource()
        .map(|e| e.expect("well-formed SSE"))
        .collect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_is_cut_off_without_hurting_others_and_loses_nothing() {
    let hub = spawn_hub_with(|c| {
        c.hub.mailbox.frames = QUEUE_FRAMES;
        c.hub.mailbox.bytes = QUEUE_BYTES;
    })
    .await;
    let mut fast = hub.subscribe("topic=big").await;
    let (mut slow, mut slow_raw) = raw_subscriber(&hub, "/.well-known/mercure?topic=big").await;
    assert_eq!(hub.stats().await["subscribers"], 2);

    let payload = "x".repeat(EVENT_BYTES - 8);
    let mut acked: Vec<(String, Instant)> = Vec::new();
    let mut cut_after: Option<usize> = None;
    let mut worst_latency = Duration::ZERO;
    let mut fast_ids = Vec::new();
    // Publish until the hub cuts the slow one off, then some more.
    while acked.len() < CAP && cut_after.is_none_or(|n| acked.len() < n + 20) {
        let i = acked.len();
        let id = hub.publish("big", &format!("{i:07} {payload}")).await;
        acked.push((id, Instant::now()));
        // The fast subscriber has it promptly.
        let event = fast.next().await;
        let arrived = fast.last_arrival.unwrap();
        assert_eq!(
            event.id, acked[i].0,
            "the fast subscriber missed or reordered"
        );
        assert!(event.data.starts_with(&format!("{i:07} ")));
        assert_eq!(event.data.len(), EVENT_BYTES);
        worst_latency = worst_latency.max(arrived.saturating_duration_since(acked[i].1));
        fast_ids.push(event.id);
        if cut_after.is_none() && hub.stats().await["slow_disconnects"].as_u64() >= Some(1) {
            cut_after = Some(acked.len());
        }
    }
    let cut_after = cut_after.unwrap_or_else(|| {
        panic!("{CAP} events of 64 KiB and the subscriber that never reads was not cut off")
    });
    assert!(
        worst_latency < Duration::from_secs(2),
        "the fast subscriber waited {worst_latency:?} for an event"
    );
    let stats = hub.stats().await;
    assert_eq!(
        stats["slow_disconnects"], 1,
        "only the slow subscriber is cut: {stats}"
    );

    // Now the slow one reads: what reached its socket, then the end of the stream.
    within(WAIT, "the slow stream to end", async {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = slow.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            slow_raw.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    let (body, finished) = dechunk(&slow_raw);
    assert!(finished, "the cut stream should end with the last chunk");
    let got = parse_sse(body).await;
    let got_ids: Vec<String> = got.iter().map(|e| e.id.clone()).collect();
    let published: Vec<String> = acked.iter().map(|(id, _)| id.clone()).collect();
    let k = got_ids.len();
    assert_eq!(
        got_ids,
        published[..k],
        "the slow subscriber got a gap or disorder"
    );
    assert!(
        k < cut_after,
        "the slow subscriber got everything ({k}); it was never cut"
    );
    // What the hub held for it and dropped is bounded by its queue (plus the frames the HTTP
    // layer had in hand): not everything published since it stopped reading.
    let held = cut_after - k;
    let bound = QUEUE_BYTES / EVENT_BYTES + 1 + 16;
    assert!(
        held <= bound,
        "the hub held {held} events (~{} KiB) for a stalled subscriber; expected at most {bound}",
        held * EVENT_BYTES / 1024
    );
    eprintln!(
        "published {} events; cut after ~{cut_after}; the slow client had {k} in its socket",
        published.len()
    );

    // It resumes from the last id it parsed and gets the rest, nothing twice.
    let last = got_ids.last().cloned().unwrap_or_else(|| "earliest".into());
    let mut resumed = hub
        .sse(
            "/.well-known/mercure?topic=big",
            &[("last-event-id", &last)],
        )
        .await;
    let rest = resumed.take_ids(published.len() - k).await;
    let mut all = got_ids.clone();
    all.extend(rest);
    assert_eq!(all, published, "after resuming, something is missing");
    crate::common::assert_no_duplicates(&all, "slow subscriber");
    resumed.expect_silence(Duration::from_millis(100)).await;

    // Both go on receiving live events; the fast one was never interrupted.
    let id = hub.publish("big", "small").await;
    assert_eq!(resumed.next().await.id, id);
    assert_eq!(fast.next().await.id, id);
    assert_eq!(fast_ids, published);
}

/// Reads `stream` (whose body so far is `raw`) until the SSE body holds an event with `id`,
/// or the stream ends; returns the body bytes read and whether the last chunk came.
async fn read_until_id(stream: &mut TcpStream, raw: &mut Vec<u8>, id: &str) -> bool {
    let needle = format!("id: {id}\n");
    within(WAIT, "the awaited event", async {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let (body, finished) = dechunk(raw);
            if finished || body.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                return finished;
            }
            let n = stream.read(&mut chunk).await.unwrap();
            if n == 0 {
                return false;
            }
            raw.extend_from_slice(&chunk[..n]);
        }
    })
    .await
}

/// The hub-wide queue budget cuts the subscriber with the largest backlog, and only it: a
/// smaller non-reading subscriber within its bounds keeps its stream, and a reading one never
/// notices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_queue_budget_the_largest_backlog_is_cut_first() {
    let hub = spawn_hub_with(|c| {
        c.hub.mailbox.frames = 4096;
        c.hub.mailbox.bytes = 8 << 20;
        c.hub.queue_budget = 1 << 20;
        c.edge.send_buffer = Some(8 * 1024);
        c.edge.write_stall_timeout = Duration::from_secs(600);
    })
    .await;
    let mut healthy = hub.subscribe("topic=a").await;
    let (mut large, mut large_raw) =
        raw_subscriber(&hub, "/.well-known/mercure?topic=a&topic=b").await;
    let (mut small, mut small_raw) = raw_subscriber(&hub, "/.well-known/mercure?topic=a").await;
    assert_eq!(hub.stats().await["subscribers"], 3);

    let payload = "x".repeat(EVENT_BYTES);
    let mut on_a = Vec::new();
    for _ in 0..4 {
        let id = hub.publish("a", &payload).await;
        assert_eq!(healthy.next().await.id, id);
        on_a.push(id);
    }
    // Only the large one gets these: its backlog grows past the budget, the small one's
    // (about 4 × 64 KiB) does not.
    let mut on_b = 0;
    while hub.stats().await["slow_disconnects"] == 0 {
        assert!(
            on_b < 64,
            "{on_b} events of 64 KiB queued for a subscriber that does not read, past a 1 MiB \
             budget, and nobody was cut"
        );
        hub.publish("b", &payload).await;
        on_b += 1;
    }
    let marker = hub.publish("a", "after the cut").await;
    assert_eq!(
        healthy.next().await.id,
        marker,
        "the reader keeps its stream"
    );
    on_a.push(marker.clone());
    assert_eq!(hub.stats().await["slow_disconnects"], 1, "only one is cut");

    // The small one, reading now, has every event of `a` and an open stream.
    let ended = read_until_id(&mut small, &mut small_raw, &marker).await;
    assert!(!ended, "the small backlog was cut too");
    let got: Vec<String> = parse_sse(dechunk(&small_raw).0)
        .await
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(got, on_a);

    // The large one gets what reached its socket, then the end of its stream.
    let ended = read_until_id(&mut large, &mut large_raw, &marker).await;
    assert!(ended, "the largest backlog should have been cut");
    let got = parse_sse(dechunk(&large_raw).0).await;
    assert!(
        got.len() < on_a.len() - 1 + on_b,
        "the cut subscriber got everything"
    );
}

/// Each accepted socket's kernel send buffer is capped (`--send-buffer`, 256 KiB by default),
/// so a stalled subscriber fills its socket soon instead of holding megabytes of kernel memory.
#[tokio::test]
async fn accepted_sockets_get_the_capped_send_buffer() {
    use std::os::fd::{AsRawFd, BorrowedFd};

    let hub = crate::common::spawn_hub().await;
    let (client, _) = raw_subscriber(&hub, "/.well-known/mercure?topic=a").await;
    let client_addr = client.local_addr().unwrap();
    // Find the hub's end of this connection among this process's descriptors.
    let mut found = None;
    for entry in std::fs::read_dir("/proc/self/fd").unwrap() {
        let Some(fd) = entry
            .unwrap()
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if fd == client.as_raw_fd() {
            continue;
        }
        // SAFETY: the descriptor is only borrowed for two getsockopt-style calls; if it was
        // closed meanwhile, they fail (or describe another socket, which does not match).
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let sock = socket2::SockRef::from(&fd);
        let (Ok(local), Ok(peer)) = (sock.local_addr(), sock.peer_addr()) else {
            continue;
        };
        if local.as_socket() == Some(hub.addr) && peer.as_socket() == Some(client_addr) {
            found = Some(sock.send_buffer_size().unwrap());
        }
    }
    let size = found.expect("the hub's side of the connection");
    // Linux doubles the value set, for its bookkeeping.
    let want = if cfg!(target_os = "linux") {
        2 * 256 * 1024
    } else {
        256 * 1024
    };
    assert_eq!(size, want, "SO_SNDBUF of the accepted socket");
    drop(client);
}

/// A subscriber that reads a trickle (2 KiB every 100 ms) to look alive is cut once the
/// backlog waiting for it is not written within the write-stall timeout, long before it could
/// have read its backlog at that pace; a reading subscriber on the same topic is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickle_reader_is_cut_within_the_stall_timeout() {
    const EVENTS: usize = 64;
    let hub = spawn_hub_with(|c| {
        c.hub.mailbox.frames = 4096;
        c.hub.mailbox.bytes = 16 << 20;
        c.edge.send_buffer = Some(16 * 1024);
        c.edge.write_stall_timeout = Duration::from_secs(2);
    })
    .await;
    let mut healthy = hub.subscribe("topic=t").await;
    let (mut trickle, mut raw) = raw_subscriber(&hub, "/.well-known/mercure?topic=t").await;
    let payload = "x".repeat(EVENT_BYTES);
    for _ in 0..EVENTS {
        let id = hub.publish("t", &payload).await;
        assert_eq!(healthy.next().await.id, id);
    }
    let published = EVENTS * EVENT_BYTES;
    // At 20 KiB/s, the 4 MiB backlog would take over three minutes to read.
    let eof = within(
        Duration::from_secs(60),
        "the hub to cut a subscriber reading a trickle",
        async {
            let mut chunk = [0u8; 2048];
            loop {
                match trickle.read(&mut chunk).await {
                    Ok(0) | Err(_) => return raw.len(),
                    Ok(n) => raw.extend_from_slice(&chunk[..n]),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        },
    )
    .await;
    assert!(
        eof < published / 2,
        "the trickle reader got {eof} of {published} bytes before the cut"
    );
    let (_, finished) = dechunk(&raw);
    assert!(!finished, "a stalled stream is dropped, not ended cleanly");
    // The reading subscriber is untouched.
    let id = hub.publish("t", "still here").await;
    assert_eq!(healthy.next().await.id, id);
}
