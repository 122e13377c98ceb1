//! The generator against a tiny SSE server written here: a Mercure-like form publish and a
//! chunked `text/event-stream` per subscriber. Checks that every event is counted once, that
//! loss is seen, and that the throughput mode counts acknowledgments.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use clap::Parser;
use tidings_bench::report::{FanoutReport, ThroughputReport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

type Subscribers = Arc<Mutex<HashMap<String, Vec<mpsc::UnboundedSender<Vec<u8>>>>>>;

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

/// Serves until the process ends. `drop_every`: silently skip every n-th event (to see loss).
fn start_server(drop_every: Option<u64>) -> SocketAddr {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let addr = std_listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = TcpListener::from_std(std_listener).unwrap();
            let subs: Subscribers = Arc::default();
            let counter = Arc::new(Mutex::new(0u64));
            loop {
                let (mut sock, _) = listener.accept().await.unwrap();
                let (subs, counter) = (subs.clone(), counter.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        // One request head (and body) at a time.
                        let head_end = loop {
                            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break i + 4;
                            }
                            let mut chunk = [0u8; 4096];
                            match sock.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                        let target = head.split(' ').nth(1).unwrap().to_owned();
                        if head.starts_with("GET") {
                            let topic = target.split("topic=").nth(1).unwrap().to_owned();
                            let (tx, mut rx) = mpsc::unbounded_channel();
                            subs.lock().unwrap().entry(topic).or_default().push(tx);
                            sock.write_all(
                                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
                            )
                            .await
                            .unwrap();
                            // A comment first, split oddly across chunks.
                            sock.write_all(b"3\r\n: h\r\n3\r\ni\n\n\r\n").await.unwrap();
                            while let Some(frame) = rx.recv().await {
                                if sock.write_all(&frame).await.is_err() {
                                    return;
                                }
                            }
                            return;
                        }
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("Content-Length: "))
                            .unwrap()
                            .trim()
                            .parse()
                            .unwrap();
                        while buf.len() < head_end + len {
                            let mut chunk = [0u8; 4096];
                            let n = sock.read(&mut chunk).await.unwrap();
                            buf.extend_from_slice(&chunk[..n]);
                        }
                        let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string();
                        buf.drain(..head_end + len);
                        let mut topic = String::new();
                        let mut data = String::new();
                        for pair in body.split('&') {
                            let (k, v) = pair.split_once('=').unwrap();
                            match k {
                                "topic" => topic = percent_decode(v),
                                "data" => data = percent_decode(v),
                                _ => {}
                            }
                        }
                        let n = {
                            let mut c = counter.lock().unwrap();
                            *c += 1;
                            *c
                        };
                        if drop_every.is_none_or(|d| n % d != 0) {
                            // CRLF line ends and the data split over two chunks.
                            let frame = format!("id: {n}\r\ndata: {data}\r\n\r\n");
                            let (a, b) = frame.split_at(frame.len() / 2);
                            let mut out = Vec::new();
                            for part in [a, b] {
                                out.extend_from_slice(format!("{:x}\r\n{part}\r\n", part.len()).as_bytes());
                            }
                            for tx in subs.lock().unwrap().get(&topic).into_iter().flatten() {
                                let _ = tx.send(out.clone());
                            }
                        }
                        let reply = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{n}", n.to_string().len());
                        if sock.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
    });
    addr
}

#[derive(Parser)]
enum Cmd {
    Fanout(tidings_bench::fanout::FanoutArgs),
    Throughput(tidings_bench::throughput::ThroughputArgs),
}

fn fanout(addr: SocketAddr, extra: &[&str]) -> FanoutReport {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.json");
    let sub = format!("http://{addr}/sub?topic={{topic}}");
    let publ = format!("http://{addr}/pub");
    let mut argv = vec![
        "x",
        "fanout",
        "--subscribe-url",
        &sub,
        "--publish-url",
        &publ,
        "--publish-body",
        "topic={topic}&data={data}",
        "--settle",
        "0.1",
        "--drain-timeout",
        "2",
        "--json",
        "--out",
        out.to_str().unwrap(),
        "--server-pid",
    ];
    let me = std::process::id().to_string();
    argv.push(&me);
    argv.extend_from_slice(extra);
    let Cmd::Fanout(args) = Cmd::parse_from(argv) else {
        unreachable!()
    };
    tidings_bench::fanout::run(args).unwrap();
    serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap()
}

#[test]
fn every_event_reaches_every_subscriber_once() {
    let addr = start_server(None);
    let r = fanout(
        addr,
        &[
            "-n",
            "20",
            "--topics",
            "4",
            "--topic-mode",
            "round-robin",
            "-m",
            "40",
            "--rate",
            "400",
        ],
    );
    assert_eq!(r.connect.connected, 20);
    assert_eq!(r.publish.acked, 40);
    // 5 subscribers per topic, 10 events per topic.
    assert_eq!(r.delivery.expected, 200);
    assert_eq!(r.delivery.delivered, 200);
    assert_eq!(
        (
            r.delivery.lost,
            r.delivery.duplicated,
            r.delivery.out_of_order,
            r.delivery.unparsed
        ),
        (0, 0, 0, 0)
    );
    assert_eq!(r.latency.count, 200);
    assert!(r.latency.max_ms < 1000.0);
    assert!(!r.delivery.drain_timed_out);
    assert!(r.memory.is_some());
}

#[test]
fn loss_is_counted() {
    let addr = start_server(Some(5));
    let r = fanout(
        addr,
        &[
            "-n",
            "3",
            "-m",
            "20",
            "--rate",
            "500",
            "--publish-connections",
            "1",
        ],
    );
    assert_eq!(r.delivery.expected, 60);
    assert_eq!(r.delivery.lost, 12);
    assert_eq!(r.delivery.subscribers_with_loss, 3);
    assert!(r.delivery.drain_timed_out);
}

#[test]
fn throughput_counts_acknowledgments() {
    let addr = start_server(None);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.json");
    let publ = format!("http://{addr}/pub");
    let Cmd::Throughput(args) = Cmd::parse_from([
        "x",
        "throughput",
        "-c",
        "4",
        "-d",
        "0.5",
        "--warmup",
        "0.1",
        "--publish-url",
        &publ,
        "--publish-body",
        "topic={topic}&data={data}",
        "--json",
        "--out",
        out.to_str().unwrap(),
    ]) else {
        unreachable!()
    };
    tidings_bench::throughput::run(args).unwrap();
    let r: ThroughputReport = serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap();
    assert!(r.acked > 10, "{r:?}");
    assert_eq!(r.failed, 0);
    assert!(r.ack_latency.count == r.acked);
}
