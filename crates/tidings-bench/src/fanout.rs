//! The fan-out run: connect N subscribers, publish M events at R/s, measure every delivery.
//!
//! Subscribers run on `--threads` OS threads (default 1), each a single-threaded tokio runtime
//! with its own latency histogram, so the hot path takes no lock. The publisher runs on the
//! main thread in its own runtime, so its timer is not stuck behind subscriber reads. The send
//! time in each payload is `CLOCK_MONOTONIC`, compared with the same clock on receipt.

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{oneshot, watch, Semaphore};

use crate::http::{self, Dechunker, Framing, Url};
use crate::payload::{self, PublishTemplate};
use crate::report::{self, *};
use crate::sys::{self, Server};
use crate::{CommonArgs, PublishArgs};

#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    /// Number of subscribers N.
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub subscribers: usize,
    /// Subscribe URL template: `{i}` is the subscriber index, `{topic}` its topic (i % K).
    #[arg(
        long,
        default_value = "http://127.0.0.1:8080/.well-known/mercure?topic=bench/{topic}"
    )]
    pub subscribe_url: String,
    /// Extra header on subscribe requests, `Name: value` (repeatable).
    #[arg(long = "subscribe-header")]
    pub subscribe_headers: Vec<String>,
    /// Number of events M (0: connect, measure memory, hold, and stop).
    #[arg(long, short = 'm', default_value_t = 1000)]
    pub events: u64,
    /// Publish rate R, events per second, paced on a timer.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Concurrent publish connections, so one slow acknowledgment does not hold up the schedule.
    /// With P connections, events in flight together may be stored in any order: a delivery
    /// counts as out of order only when it is P or more behind the highest sequence seen.
    #[arg(long, default_value_t = 4)]
    pub publish_connections: usize,
    /// Subscribers bind to 127.0.0.1 ..= 127.0.0.S (loopback servers only).
    #[arg(long, default_value_t = 16)]
    pub source_addrs: u8,
    /// Subscriber threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Connection attempts in flight at once.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Give up on connecting after this many seconds.
    #[arg(long, default_value_t = 120.0)]
    pub connect_timeout: f64,
    /// Seconds to wait after all subscribers connected before measuring memory and publishing.
    #[arg(long, default_value_t = 1.0)]
    pub settle: f64,
    /// Extra seconds to hold the idle subscribers before publishing.
    #[arg(long, default_value_t = 0.0)]
    pub hold: f64,
    /// After the last publish, wait at most this many seconds for the deliveries.
    #[arg(long, default_value_t = 10.0)]
    pub drain_timeout: f64,
    /// Reconnect storm: seconds after publishing starts at which every subscriber drops its
    /// connection at once and reconnects right away, sending `Last-Event-ID` (the last id it
    /// saw) as an `EventSource` does; loss and duplicates are counted across the reconnection.
    /// Comma-separated.
    #[arg(long = "drop-at", value_delimiter = ',')]
    pub drop_at: Vec<f64>,
    /// Subscribe over HTTP/2 (cleartext with prior knowledge for http://, ALPN h2 for
    /// https://): the N streams spread over this many connections. 0: HTTP/1.1, one connection
    /// per subscriber.
    #[arg(long, default_value_t = 0)]
    pub http2_connections: usize,
    /// PEM certificate(s) to trust for https:// URLs (the server's CA).
    #[arg(long)]
    pub tls_ca: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub publish: PublishArgs,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// What the threads share, updated with relaxed atomics on the hot path.
struct Shared {
    /// Connected subscribers of each topic (what the drain waits for).
    connected_per_topic: Vec<AtomicU64>,
    connected: AtomicU64,
    failed: AtomicU64,
    delivered: AtomicU64,
    ended: AtomicU64,
    last_connect_ns: AtomicU64,
    last_delivery_ns: AtomicU64,
    connect_errors: Mutex<Vec<String>>,
    stream_errors: Mutex<Vec<String>>,
    /// Bumped at each `--drop-at` time: every subscriber drops its connection and reconnects.
    drops: watch::Sender<u64>,
    dropped: AtomicU64,
    reconnected: AtomicU64,
    reconnected_with_id: AtomicU64,
    reconnect_failed: AtomicU64,
    reconnect_errors: Mutex<Vec<String>>,
}

impl Shared {
    fn new(topics: usize) -> Self {
        Self {
            connected_per_topic: (0..topics).map(|_| AtomicU64::new(0)).collect(),
            connected: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            ended: AtomicU64::new(0),
            last_connect_ns: AtomicU64::new(0),
            last_delivery_ns: AtomicU64::new(0),
            connect_errors: Mutex::default(),
            stream_errors: Mutex::default(),
            drops: watch::Sender::new(0),
            dropped: AtomicU64::new(0),
            reconnected: AtomicU64::new(0),
            reconnected_with_id: AtomicU64::new(0),
            reconnect_failed: AtomicU64::new(0),
            reconnect_errors: Mutex::default(),
        }
    }
}

fn keep_first(list: &Mutex<Vec<String>>, e: String) {
    let mut l = list.lock().expect("not poisoned");
    if l.len() < 5 {
        l.push(e);
    }
}

/// Per-subscriber bookkeeping.
#[derive(Debug, Default, Clone)]
struct SubStats {
    topic: usize,
    connected: bool,
    received: u64,
    unique: u64,
    duplicated: u64,
    out_of_order: u64,
    unparsed: u64,
    wrong_topic: u64,
    ended: bool,
    max_seq: Option<u64>,
    /// Bit set of the sequence numbers seen.
    seen: Vec<u64>,
}

/// Sequence numbers beyond this are not tracked (a sign of a foreign payload).
const MAX_TRACKED_SEQ: u64 = 1 << 28;

impl SubStats {
    /// Records a sequence number; `window` is how far behind the highest seen a delivery may
    /// legitimately be (the number of publishes in flight at once).
    fn on_seq(&mut self, seq: u64, window: u64) {
        self.received += 1;
        if seq >= MAX_TRACKED_SEQ {
            self.unparsed += 1;
            return;
        }
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if self.seen.len() <= word {
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & (1 << bit) != 0 {
            self.duplicated += 1;
            return;
        }
        self.seen[word] |= 1 << bit;
        self.unique += 1;
        match self.max_seq {
            Some(m) if seq < m => {
                if m - seq >= window.max(1) {
                    self.out_of_order += 1;
                }
            }
            _ => self.max_seq = Some(seq),
        }
    }
}

struct WorkerConfig {
    n: usize,
    threads: usize,
    topics: usize,
    addr: SocketAddr,
    url: Url,
    template: String,
    headers: Vec<String>,
    source_addrs: u8,
    connect_concurrency: usize,
    connect_timeout: Duration,
    reorder_window: u64,
    /// Subscribers watch `Shared::drops` (a reconnect storm is scheduled).
    drops: bool,
    /// TLS for https:// subscribe URLs.
    tls: Option<crate::transport::Tls>,
    /// HTTP/2 connections in all (0: HTTP/1.1).
    h2_connections: usize,
    /// `headers` as name/value pairs (for hyper's requests).
    header_pairs: Vec<(String, String)>,
}

struct WorkerResult {
    stats: Vec<SubStats>,
    hist: Histogram<u64>,
    /// From dropping a connection to the response head of the new one.
    reconnect_hist: Histogram<u64>,
}

fn worker(
    w: usize,
    cfg: Arc<WorkerConfig>,
    shared: Arc<Shared>,
    stop: oneshot::Receiver<()>,
) -> anyhow::Result<WorkerResult> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let indices: Vec<usize> = (w..cfg.n).step_by(cfg.threads).collect();
    let stats = Rc::new(RefCell::new(vec![SubStats::default(); indices.len()]));
    let hist = Rc::new(RefCell::new(report::histogram()));
    let reconnect_hist = Rc::new(RefCell::new(report::histogram()));
    let sem = Rc::new(Semaphore::new(
        (cfg.connect_concurrency / cfg.threads).max(1),
    ));
    local.block_on(&rt, async {
        // HTTP/2: this thread's share of the connections, opened before any stream.
        let mut h2 = Vec::new();
        if cfg.h2_connections > 0 {
            let mine = cfg.h2_connections.div_ceil(cfg.threads).max(1);
            for _ in 0..mine {
                let tcp = TcpStream::connect(cfg.addr).await?;
                h2.push(crate::transport::h2_connect(tcp, cfg.tls.as_ref()).await?);
            }
        }
        let h2 = Rc::new(h2);
        for (li, &i) in indices.iter().enumerate() {
            let topic = i % cfg.topics;
            stats.borrow_mut()[li].topic = topic;
            let sub = Sub {
                i,
                li,
                topic,
                cfg: cfg.clone(),
                shared: shared.clone(),
                stats: stats.clone(),
                hist: hist.clone(),
                reconnect_hist: reconnect_hist.clone(),
                sem: sem.clone(),
            };
            if cfg.h2_connections > 0 || cfg.tls.is_some() {
                tokio::task::spawn_local(sub.run_hyper(h2.clone()));
            } else {
                tokio::task::spawn_local(sub.run());
            }
        }
        let _ = stop.await;
        Ok::<(), anyhow::Error>(())
    })?;
    drop(local);
    let stats = std::mem::take(&mut *stats.borrow_mut());
    let hist = hist.borrow().clone();
    let reconnect_hist = reconnect_hist.borrow().clone();
    Ok(WorkerResult {
        stats,
        hist,
        reconnect_hist,
    })
}

/// Opens one subscription: connect (from the subscriber's source address), send the GET,
/// read the response head. Returns the stream, the head and any body bytes read with it.
async fn open(
    cfg: &WorkerConfig,
    i: usize,
    topic: usize,
    last_event_id: Option<&[u8]>,
) -> anyhow::Result<(TcpStream, http::Head, Vec<u8>)> {
    let socket = match cfg.addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let SocketAddr::V4(a) = cfg.addr {
        if a.ip().is_loopback() && cfg.source_addrs > 1 {
            let last = 1 + (i % cfg.source_addrs as usize) as u8;
            use std::os::fd::AsRawFd;
            sys::bind_no_port(socket.as_raw_fd());
            socket.bind(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)),
                0,
            ))?;
        }
    }
    let mut stream = socket.connect(cfg.addr).await?;
    let url = payload::subscribe_url(&cfg.template, i, topic);
    let target = Url::parse(&url)?.target;
    let mut req = format!(
        "GET {target} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n",
        cfg.url.authority
    );
    for h in &cfg.headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    if let Some(id) = last_event_id {
        req.push_str("Last-Event-ID: ");
        req.push_str(&String::from_utf8_lossy(id));
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await?;
    let mut buf = Vec::with_capacity(1024);
    loop {
        if let Some(head) = http::parse_head(&buf, false)? {
            if head.status != 200 {
                let body = String::from_utf8_lossy(&buf[head.len..]);
                bail!("status {}: {}", head.status, body.trim());
            }
            let rest = buf[head.len..].to_vec();
            return Ok((stream, head, rest));
        }
        if stream.read_buf(&mut buf).await? == 0 {
            bail!("connection closed before the response head");
        }
        if buf.len() > 64 * 1024 {
            bail!("response head too large");
        }
    }
}

/// How one connection of a subscriber ended.
enum StreamEnd {
    /// Dropped on purpose by a reconnect storm.
    Dropped,
    Failed(anyhow::Error),
}

/// One subscriber: its connection(s) and where it records what it reads.
struct Sub {
    i: usize,
    li: usize,
    topic: usize,
    cfg: Arc<WorkerConfig>,
    shared: Arc<Shared>,
    stats: Rc<RefCell<Vec<SubStats>>>,
    hist: Rc<RefCell<Histogram<u64>>>,
    reconnect_hist: Rc<RefCell<Histogram<u64>>>,
    sem: Rc<Semaphore>,
}

impl Sub {
    /// One connection attempt, within the connect concurrency and timeout.
    async fn connect(
        &self,
        last_event_id: Option<&[u8]>,
    ) -> anyhow::Result<(TcpStream, http::Head, Vec<u8>)> {
        let _permit = self.sem.acquire().await.expect("never closed");
        let opened = tokio::time::timeout(
            self.cfg.connect_timeout,
            open(&self.cfg, self.i, self.topic, last_event_id),
        )
        .await;
        match opened {
            Ok(r) => r,
            Err(_) => Err(anyhow::anyhow!("timed out")),
        }
    }

    async fn run(self) {
        let (i, topic, shared) = (self.i, self.topic, self.shared.clone());
        let mut drops = self.cfg.drops.then(|| shared.drops.subscribe());
        let (mut stream, mut head, mut first) = match self.connect(None).await {
            Ok(x) => x,
            Err(e) => {
                shared.failed.fetch_add(1, Relaxed);
                keep_first(&shared.connect_errors, format!("subscriber {i}: {e:#}"));
                return;
            }
        };
        self.stats.borrow_mut()[self.li].connected = true;
        shared.connected.fetch_add(1, Relaxed);
        shared.connected_per_topic[topic].fetch_add(1, Relaxed);
        shared.last_connect_ns.fetch_max(sys::now_ns(), Relaxed);

        // One parser for the life of the subscriber: it keeps the last event id across
        // reconnections, as an EventSource does.
        let mut parser = crate::sse::Parser::new();
        loop {
            let error = match self
                .read_stream(stream, &head, first, &mut parser, drops.as_mut())
                .await
            {
                StreamEnd::Failed(e) => e,
                StreamEnd::Dropped => {
                    shared.dropped.fetch_add(1, Relaxed);
                    let t0 = sys::now_ns();
                    parser.reconnect();
                    let id = parser.last_event_id().to_vec();
                    let id = (!id.is_empty()).then_some(id);
                    match self.reconnect(id.as_deref(), t0).await {
                        Ok(x) => {
                            (stream, head, first) = x;
                            report::record_ns(
                                &mut self.reconnect_hist.borrow_mut(),
                                sys::now_ns() - t0,
                            );
                            shared.reconnected.fetch_add(1, Relaxed);
                            if id.is_some() {
                                shared.reconnected_with_id.fetch_add(1, Relaxed);
                            }
                            // A storm that came while reconnecting is skipped, not repeated.
                            if let Some(d) = drops.as_mut() {
                                d.borrow_and_update();
                            }
                            continue;
                        }
                        Err(e) => {
                            shared.reconnect_failed.fetch_add(1, Relaxed);
                            keep_first(&shared.reconnect_errors, format!("subscriber {i}: {e:#}"));
                            e.context("reconnecting")
                        }
                    }
                }
            };
            self.stats.borrow_mut()[self.li].ended = true;
            shared.ended.fetch_add(1, Relaxed);
            keep_first(&shared.stream_errors, format!("subscriber {i}: {error:#}"));
            return;
        }
    }

    /// Reconnects, retrying every 100 ms until the connect timeout has passed since `t0`.
    async fn reconnect(
        &self,
        last_event_id: Option<&[u8]>,
        t0: u64,
    ) -> anyhow::Result<(TcpStream, http::Head, Vec<u8>)> {
        let give_up = t0 + self.cfg.connect_timeout.as_nanos() as u64;
        loop {
            match self.connect(last_event_id).await {
                Ok(x) => return Ok(x),
                Err(e) if sys::now_ns() >= give_up => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Reads one connection's stream until it fails or a storm drops it.
    async fn read_stream(
        &self,
        stream: TcpStream,
        head: &http::Head,
        first: Vec<u8>,
        parser: &mut crate::sse::Parser,
        mut drops: Option<&mut watch::Receiver<u64>>,
    ) -> StreamEnd {
        let (topic, shared, cfg) = (self.topic, &self.shared, &self.cfg);
        let chunked = head.framing == Framing::Chunked;
        let mut dechunker = Dechunker::new();
        let mut process = |bytes: &[u8]| -> anyhow::Result<()> {
            let now = sys::now_ns();
            let mut st = self.stats.borrow_mut();
            let st = &mut st[self.li];
            let mut h = self.hist.borrow_mut();
            let mut n = 0u64;
            let mut on_event = |ev: crate::sse::Event<'_>| match payload::parse_stamp(ev.data) {
                None => st.unparsed += 1,
                Some(s) => {
                    if s.topic.is_some_and(|t| t != topic as u64) {
                        st.wrong_topic += 1;
                    }
                    report::record_ns(&mut h, now.saturating_sub(s.ts));
                    st.on_seq(s.seq, cfg.reorder_window);
                    n += 1;
                }
            };
            if chunked {
                dechunker.decode(bytes, |b| parser.feed(b, &mut on_event))?;
            } else {
                parser.feed(bytes, &mut on_event);
            }
            if n > 0 {
                shared.delivered.fetch_add(n, Relaxed);
                shared.last_delivery_ns.fetch_max(now, Relaxed);
            }
            Ok(())
        };
        if let Err(e) = process(&first) {
            return StreamEnd::Failed(e);
        }
        drop(first);
        let mut buf = vec![0u8; 4096];
        loop {
            let read = match drops.as_deref_mut() {
                None => read_drained(&stream, &mut buf).await,
                Some(d) => tokio::select! {
                    r = read_drained(&stream, &mut buf) => r,
                    _ = d.changed() => return StreamEnd::Dropped,
                },
            };
            let result = match read {
                Ok(0) => Err(anyhow::anyhow!("the server ended the stream")),
                Ok(n) => process(&buf[..n]),
                Err(e) => Err(e.into()),
            };
            if let Err(e) = result {
                return StreamEnd::Failed(e);
            }
        }
    }
}

impl Sub {
    /// One subscriber through hyper: an HTTP/2 stream on one of `h2` (when given), or an
    /// HTTP/1.1 connection over TLS. No reconnect storms on this path.
    async fn run_hyper(self, h2: Rc<Vec<crate::transport::H2>>) {
        use http_body_util::BodyExt;
        let (i, topic, shared) = (self.i, self.topic, self.shared.clone());
        let opened = {
            let _permit = self.sem.acquire().await.expect("never closed");
            tokio::time::timeout(self.cfg.connect_timeout, self.open_hyper(&h2)).await
        };
        let mut body = match opened {
            Ok(Ok(body)) => body,
            Ok(Err(e)) => {
                shared.failed.fetch_add(1, Relaxed);
                keep_first(&shared.connect_errors, format!("subscriber {i}: {e:#}"));
                return;
            }
            Err(_) => {
                shared.failed.fetch_add(1, Relaxed);
                keep_first(&shared.connect_errors, format!("subscriber {i}: timed out"));
                return;
            }
        };
        self.stats.borrow_mut()[self.li].connected = true;
        shared.connected.fetch_add(1, Relaxed);
        shared.connected_per_topic[topic].fetch_add(1, Relaxed);
        shared.last_connect_ns.fetch_max(sys::now_ns(), Relaxed);
        let mut parser = crate::sse::Parser::new();
        let error = loop {
            match body.frame().await {
                None => break anyhow::anyhow!("the server ended the stream"),
                Some(Err(e)) => break e.into(),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.deliver(&mut parser, &data);
                    }
                }
            }
        };
        self.stats.borrow_mut()[self.li].ended = true;
        shared.ended.fetch_add(1, Relaxed);
        keep_first(&shared.stream_errors, format!("subscriber {i}: {error:#}"));
    }

    async fn open_hyper(
        &self,
        h2: &[crate::transport::H2],
    ) -> anyhow::Result<hyper::body::Incoming> {
        let cfg = &self.cfg;
        let url = payload::subscribe_url(&cfg.template, self.i, self.topic);
        let target = Url::parse(&url)?.target;
        let response = if h2.is_empty() {
            let tls = cfg
                .tls
                .as_ref()
                .context("HTTP/1.1 through hyper is for TLS")?;
            let tcp = TcpStream::connect(cfg.addr).await?;
            crate::transport::h1_tls_get(tcp, tls, &cfg.url.authority, &target, &cfg.header_pairs)
                .await?
        } else {
            let scheme = if cfg.tls.is_some() { "https" } else { "http" };
            let send = &h2[self.li % h2.len()];
            crate::transport::h2_get(send, scheme, &cfg.url.authority, &target, &cfg.header_pairs)
                .await?
        };
        if response.status() != 200 {
            bail!("status {}", response.status());
        }
        Ok(response.into_body())
    }

    /// Records the events in `bytes` (SSE, already out of any transfer coding).
    fn deliver(&self, parser: &mut crate::sse::Parser, bytes: &[u8]) {
        let now = sys::now_ns();
        let mut st = self.stats.borrow_mut();
        let st = &mut st[self.li];
        let mut h = self.hist.borrow_mut();
        let (topic, window) = (self.topic, self.cfg.reorder_window);
        let mut n = 0u64;
        parser.feed(bytes, |ev| match payload::parse_stamp(ev.data) {
            None => st.unparsed += 1,
            Some(s) => {
                if s.topic.is_some_and(|t| t != topic as u64) {
                    st.wrong_topic += 1;
                }
                report::record_ns(&mut h, now.saturating_sub(s.ts));
                st.on_seq(s.seq, window);
                n += 1;
            }
        });
        if n > 0 {
            self.shared.delivered.fetch_add(n, Relaxed);
            self.shared.last_delivery_ns.fetch_max(now, Relaxed);
        }
    }
}

/// Reads what the socket holds. A read shorter than the buffer drained the socket, so the
/// readiness is cleared right away (as if the read had returned `WouldBlock`): this saves the
/// second `read` syscall per delivery that `AsyncRead` would make only to learn it would block.
/// tokio clears readiness only if no new readiness event arrived meanwhile, so nothing is missed.
async fn read_drained(stream: &TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    let fd = stream.as_raw_fd();
    loop {
        stream.readable().await?;
        let mut got = None;
        let r = stream.try_io(tokio::io::Interest::READABLE, || {
            // SAFETY: reading into a buffer we own, from a socket that stays open meanwhile.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let n = n as usize;
            got = Some(n);
            if n > 0 && n < buf.len() {
                Err(std::io::ErrorKind::WouldBlock.into())
            } else {
                Ok(n)
            }
        });
        match (r, got) {
            (_, Some(n)) => return Ok(n),
            (Err(e), None) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            (Err(e), None) => return Err(e),
            (Ok(n), None) => return Ok(n),
        }
    }
}

/// What the publisher did.
struct PublishOutcome {
    acked_per_topic: Vec<u64>,
    sent: u64,
    acked: u64,
    failed: u64,
    errors: Vec<String>,
    ack_hist: Histogram<u64>,
    first_send_ns: u64,
    last_send_ns: u64,
    max_lag_ns: u64,
}

struct Job {
    topic: usize,
    seq: u64,
    due_ns: u64,
}

/// Publishes `events` events at `rate`/s on a timer (event k is due at start + k/rate).
async fn publish_paced(
    args: &FanoutArgs,
    template: PublishTemplate,
    addr: SocketAddr,
    tls: Option<crate::transport::Tls>,
) -> PublishOutcome {
    let k = args.publish.topics.max(1);
    let outcome = Rc::new(RefCell::new(PublishOutcome {
        acked_per_topic: vec![0; k],
        sent: 0,
        acked: 0,
        failed: 0,
        errors: Vec::new(),
        ack_hist: report::histogram(),
        first_send_ns: 0,
        last_send_ns: 0,
        max_lag_ns: 0,
    }));
    let template = Rc::new(template);
    let (tx, rx) = tokio::sync::mpsc::channel::<Job>(4096);
    let rx = Rc::new(tokio::sync::Mutex::new(rx));
    let mut tasks = Vec::new();
    for _ in 0..args.publish_connections.max(1) {
        let (rx, outcome, template) = (rx.clone(), outcome.clone(), template.clone());
        let tls = tls.clone();
        tasks.push(tokio::task::spawn_local(async move {
            let mut conn = http::Conn::with_tls(addr, tls);
            loop {
                let job = { rx.lock().await.recv().await };
                let Some(job) = job else { break };
                let ts = sys::now_ns();
                let request = template.request(job.topic, job.seq, ts);
                let result = conn.exchange(&request).await;
                let done = sys::now_ns();
                let mut o = outcome.borrow_mut();
                o.sent += 1;
                if o.first_send_ns == 0 {
                    o.first_send_ns = ts;
                }
                o.last_send_ns = o.last_send_ns.max(ts);
                o.max_lag_ns = o.max_lag_ns.max(ts.saturating_sub(job.due_ns));
                match result {
                    Ok(r) if (200..300).contains(&r.status) => {
                        o.acked += 1;
                        o.acked_per_topic[job.topic] += 1;
                        report::record_ns(&mut o.ack_hist, done - ts);
                    }
                    Ok(r) => {
                        o.failed += 1;
                        if o.errors.len() < 5 {
                            let body = String::from_utf8_lossy(&r.body).trim().to_owned();
                            o.errors.push(format!("status {}: {body}", r.status));
                        }
                    }
                    Err(e) => {
                        o.failed += 1;
                        if o.errors.len() < 5 {
                            o.errors.push(format!("{e:#}"));
                        }
                    }
                }
            }
        }));
    }
    let mut choose = args.publish.chooser();
    let mut next_seq = vec![0u64; k];
    let period_ns = (1e9 / args.rate.max(1e-3)) as u64;
    let start_ns = sys::now_ns() + 1_000_000;
    let start = tokio::time::Instant::now() + Duration::from_millis(1);
    for n in 0..args.events {
        let due_ns = start_ns + n * period_ns;
        tokio::time::sleep_until(start + Duration::from_nanos(n * period_ns)).await;
        let topic = choose(n);
        let seq = next_seq[topic];
        next_seq[topic] += 1;
        if tx.send(Job { topic, seq, due_ns }).await.is_err() {
            break;
        }
    }
    drop(tx);
    for t in tasks {
        let _ = t.await;
    }
    Rc::try_unwrap(outcome)
        .ok()
        .expect("all publisher tasks are done")
        .into_inner()
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

pub fn run(args: FanoutArgs) -> anyhow::Result<()> {
    let n = args.subscribers;
    let threads = args.threads.max(1);
    let mut warnings = Vec::new();
    let nofile = sys::raise_nofile();
    if (nofile as usize) < n + 64 {
        warnings.push(format!(
            "the fd limit is {nofile}, below {n} subscribers + 64: connections will fail"
        ));
    }
    let sub_url = Url::parse(&args.subscribe_url).context("--subscribe-url")?;
    let addr = (sub_url.host.as_str(), sub_url.port)
        .to_socket_addrs()
        .with_context(|| format!("resolving {}", sub_url.host))?
        .next()
        .context("no address")?;
    let (template, pub_url) = args.publish.template()?;
    let pub_addr = (pub_url.host.as_str(), pub_url.port)
        .to_socket_addrs()
        .with_context(|| format!("resolving {}", pub_url.host))?
        .next()
        .context("no address")?;
    let tls = match (&args.tls_ca, sub_url.tls || pub_url.tls) {
        (Some(ca), true) => Some(crate::transport::Tls::new(ca, &sub_url.host)?),
        (None, true) => bail!("https:// URLs need --tls-ca (the server's CA certificate)"),
        (_, false) => None,
    };
    let pub_tls = if pub_url.tls { tls.clone() } else { None };
    let sub_tls = if sub_url.tls { tls } else { None };
    if !args.drop_at.is_empty() && (args.http2_connections > 0 || sub_tls.is_some()) {
        bail!("--drop-at (reconnect storms) works over cleartext HTTP/1.1 only");
    }
    let server = Server::new(args.common.server_pids.clone());
    let sample = || server.as_ref().map(|s| s.sample());
    let cores = sys::allowed_cpus();

    let cfg = Arc::new(WorkerConfig {
        n,
        threads,
        topics: args.publish.topics.max(1),
        addr,
        url: sub_url,
        template: args.subscribe_url.clone(),
        headers: args.subscribe_headers.clone(),
        source_addrs: args.source_addrs.max(1),
        connect_concurrency: args.connect_concurrency.max(1),
        connect_timeout: Duration::from_secs_f64(args.connect_timeout),
        reorder_window: args.publish_connections.max(1) as u64,
        drops: !args.drop_at.is_empty(),
        tls: sub_tls,
        h2_connections: args.http2_connections,
        header_pairs: crate::transport::header_pairs(&args.subscribe_headers)?,
    });
    let shared = Arc::new(Shared::new(cfg.topics));

    // Connect.
    let before = sample();
    let overflows0 = sys::tcp_ext("ListenOverflows").unwrap_or(0);
    let gen0 = sys::self_cpu_us();
    let t0 = sys::now_ns();
    eprintln!("tidings-bench: connecting {n} subscribers ({threads} thread(s))");
    let mut stops = Vec::new();
    let mut handles = Vec::new();
    for w in 0..threads {
        let (tx, rx) = oneshot::channel();
        stops.push(tx);
        let (cfg, shared) = (cfg.clone(), shared.clone());
        handles.push(
            std::thread::Builder::new()
                .name(format!("subscribers-{w}"))
                .spawn(move || worker(w, cfg, shared, rx))?,
        );
    }
    let deadline = t0 + (args.connect_timeout * 1e9) as u64 + 5_000_000_000;
    loop {
        let done = shared.connected.load(Relaxed) + shared.failed.load(Relaxed);
        if done >= n as u64 || sys::now_ns() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let connected = shared.connected.load(Relaxed);
    let failed = shared.failed.load(Relaxed);
    let connect_ns = shared.last_connect_ns.load(Relaxed).saturating_sub(t0);
    let after_connect = sample();
    let gen1 = sys::self_cpu_us();
    let overflows = sys::tcp_ext("ListenOverflows")
        .unwrap_or(0)
        .saturating_sub(overflows0);
    eprintln!(
        "tidings-bench: {connected} connected, {failed} failed in {:.3} s",
        secs(connect_ns)
    );
    std::thread::sleep(Duration::from_secs_f64(args.settle + args.hold));
    let settled = sample();

    // Publish.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let pub0 = sample();
    let gen2 = sys::self_cpu_us();
    let wall0 = sys::now_ns();
    let outcome = if args.events > 0 && connected > 0 {
        eprintln!(
            "tidings-bench: publishing {} events at {}/s ({})",
            args.events,
            args.rate,
            args.publish.mode_name()
        );
        let storms = args.drop_at.clone();
        let storm_shared = shared.clone();
        Some(local.block_on(&rt, async {
            // The storms run beside the publisher, timed from the start of publishing.
            let start = tokio::time::Instant::now();
            let storms = tokio::task::spawn_local(async move {
                let mut at: Vec<f64> = storms.into_iter().filter(|t| *t >= 0.0).collect();
                at.sort_by(f64::total_cmp);
                for t in at {
                    tokio::time::sleep_until(start + Duration::from_secs_f64(t)).await;
                    eprintln!("tidings-bench: reconnect storm at {t} s");
                    storm_shared.drops.send_modify(|g| *g += 1);
                }
            });
            let outcome = publish_paced(&args, template, pub_addr, pub_tls).await;
            storms.abort();
            outcome
        }))
    } else {
        None
    };
    let published_ns = sys::now_ns();

    // Drain: until every connected subscriber has every acknowledged event of its topic, or
    // the timeout.
    let mut drain_timed_out = false;
    if let Some(o) = &outcome {
        let expected: u64 = o
            .acked_per_topic
            .iter()
            .zip(&shared.connected_per_topic)
            .map(|(acked, subs)| acked * subs.load(Relaxed))
            .sum();
        let until = published_ns + (args.drain_timeout * 1e9) as u64;
        loop {
            let ended = shared.ended.load(Relaxed);
            if shared.delivered.load(Relaxed) >= expected
                || sys::now_ns() > until
                || ended >= connected
            {
                drain_timed_out = shared.delivered.load(Relaxed) < expected;
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let end = sample();
    let gen3 = sys::self_cpu_us();
    let wall1 = sys::now_ns();

    // Stop the subscribers and collect.
    for s in stops {
        let _ = s.send(());
    }
    let mut hist = report::histogram();
    let mut reconnect_hist = report::histogram();
    let mut subs: Vec<SubStats> = Vec::with_capacity(n);
    for h in handles {
        let r = h
            .join()
            .map_err(|_| anyhow::anyhow!("a subscriber thread panicked"))??;
        hist.add(&r.hist).expect("same bounds");
        reconnect_hist.add(&r.reconnect_hist).expect("same bounds");
        subs.extend(r.stats);
    }

    // The report.
    let mut delivery = DeliveryReport {
        drain_timed_out,
        stream_errors: shared.stream_errors.lock().expect("not poisoned").clone(),
        ..Default::default()
    };
    let mut publish = PublishReport {
        requested: args.events,
        target_rate: args.rate,
        connections: args.publish_connections.max(1),
        ..Default::default()
    };
    let mut cpu = CpuReport {
        generator_threads: threads,
        ..Default::default()
    };
    if let Some(o) = &outcome {
        for s in &subs {
            if !s.connected {
                continue;
            }
            let expected = o.acked_per_topic[s.topic];
            delivery.expected += expected;
            delivery.delivered += s.received;
            let lost = expected.saturating_sub(s.unique);
            delivery.lost += lost;
            delivery.subscribers_with_loss += (lost > 0) as u64;
            delivery.duplicated += s.duplicated;
            delivery.out_of_order += s.out_of_order;
            delivery.unparsed += s.unparsed;
            delivery.wrong_topic += s.wrong_topic;
            delivery.streams_ended += s.ended as u64;
        }
        let last_delivery = shared.last_delivery_ns.load(Relaxed);
        let window = last_delivery.saturating_sub(o.first_send_ns);
        delivery.seconds = secs(window);
        if window > 0 {
            delivery.per_second = delivery.delivered as f64 / secs(window);
        }
        publish.sent = o.sent;
        publish.acked = o.acked;
        publish.failed = o.failed;
        publish.errors = o.errors.clone();
        let span = o.last_send_ns.saturating_sub(o.first_send_ns);
        publish.seconds = secs(span);
        if span > 0 && o.sent > 1 {
            publish.actual_rate = (o.sent - 1) as f64 / secs(span);
        }
        publish.max_schedule_lag_ms = o.max_lag_ns as f64 / 1e6;
        publish.ack_latency = Latency::of(&o.ack_hist);

        let wall = secs(wall1 - wall0);
        let gen_cpu = gen3.saturating_sub(gen2) as f64;
        cpu.generator_cpu_ms = gen_cpu / 1000.0;
        cpu.generator_core_percent = gen_cpu / 1e6 / wall * 100.0;
        let usable = cores.min(threads + 1) as f64;
        cpu.generator_saturated = cpu.generator_core_percent >= 90.0 * usable;
        if let (Some(a), Some(b)) = (pub0, end) {
            let server_cpu = b.cpu_us.saturating_sub(a.cpu_us) as f64;
            cpu.server_cpu_ms = Some(server_cpu / 1000.0);
            if delivery.delivered > 0 {
                cpu.server_cpu_us_per_delivery = Some(server_cpu / delivery.delivered as f64);
            }
            if o.acked > 0 {
                cpu.server_cpu_us_per_event = Some(server_cpu / o.acked as f64);
            }
            cpu.server_core_percent = Some(server_cpu / 1e6 / wall * 100.0);
        }
        if delivery.lost > 0 || delivery.duplicated > 0 || delivery.out_of_order > 0 {
            warnings.push(format!(
                "events were lost ({}), duplicated ({}) or reordered ({})",
                delivery.lost, delivery.duplicated, delivery.out_of_order
            ));
        }
        if publish.max_schedule_lag_ms > 2.0 * 1000.0 / args.rate.max(1e-3) {
            warnings.push(format!(
                "the publisher fell behind its schedule by up to {:.1} ms: acknowledgments are slower than the rate",
                publish.max_schedule_lag_ms
            ));
        }
    }
    if cpu.generator_saturated {
        warnings.push("the generator was saturated: latency and rates may be its own".into());
    }
    if failed > 0 {
        warnings.push(format!("{failed} subscribers failed to connect"));
    }
    if overflows > 0 {
        warnings.push(format!(
            "{overflows} SYNs were dropped on a full listen backlog while connecting: the connect time includes 1 s retransmissions (a larger listen backlog on the server, or a lower --connect-concurrency, avoids it)"
        ));
    }

    let gen_connect = gen1.saturating_sub(gen0) as f64;
    let mut connect = ConnectReport {
        seconds: secs(connect_ns),
        connected,
        failed,
        errors: shared.connect_errors.lock().expect("not poisoned").clone(),
        generator_cpu_ms: gen_connect / 1000.0,
        listen_overflows: overflows,
        ..Default::default()
    };
    let memory = match (before, after_connect, settled, end) {
        (Some(b), Some(a), Some(s), Some(e)) => {
            let cpu_us = a.cpu_us.saturating_sub(b.cpu_us) as f64;
            connect.server_cpu_ms = Some(cpu_us / 1000.0);
            if connected > 0 {
                connect.server_cpu_us_per_subscriber = Some(cpu_us / connected as f64);
            }
            Some(MemoryReport {
                server_rss_before_kib: b.rss_kib,
                server_rss_connected_kib: s.rss_kib,
                server_rss_end_kib: e.rss_kib,
                kib_per_subscriber: if connected > 0 {
                    s.rss_kib.saturating_sub(b.rss_kib) as f64 / connected as f64
                } else {
                    0.0
                },
                server_processes: s.processes,
            })
        }
        _ => None,
    };
    if server.is_some() && memory.as_ref().is_some_and(|m| m.server_processes == 0) {
        warnings.push("no live process for --server-pid".into());
    }

    let reconnect = (!args.drop_at.is_empty()).then(|| {
        let r = ReconnectReport {
            drop_at_s: args.drop_at.clone(),
            dropped: shared.dropped.load(Relaxed),
            reconnected: shared.reconnected.load(Relaxed),
            with_last_event_id: shared.reconnected_with_id.load(Relaxed),
            failed: shared.reconnect_failed.load(Relaxed),
            latency: Latency::of(&reconnect_hist),
            errors: shared
                .reconnect_errors
                .lock()
                .expect("not poisoned")
                .clone(),
        };
        if r.failed > 0 {
            warnings.push(format!("{} reconnections failed", r.failed));
        }
        if r.reconnected > r.with_last_event_id {
            warnings.push(format!(
                "{} of {} reconnections had no event id to send as Last-Event-ID (the server sends no ids)",
                r.reconnected - r.with_last_event_id,
                r.reconnected
            ));
        }
        r
    });
    let report = FanoutReport {
        kind: "fanout".into(),
        label: args.common.label.clone(),
        subscribers: n as u64,
        topics: cfg.topics as u64,
        topic_mode: args.publish.mode_name(),
        subscribe_url: args.subscribe_url.clone(),
        connect,
        memory,
        publish,
        delivery,
        latency: Latency::of(&hist),
        cpu,
        reconnect,
        warnings,
    };
    args.common.emit(&report, report.human())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_bookkeeping() {
        let mut s = SubStats::default();
        for seq in [0, 1, 3, 2, 3, 5, 200, 199, 150] {
            s.on_seq(seq, 2);
        }
        assert_eq!(s.received, 9);
        assert_eq!(s.unique, 8);
        assert_eq!(s.duplicated, 1);
        // 2 after 3 and 199 after 200 are within the window of 2 publishes in flight.
        assert_eq!(s.out_of_order, 1);
        let mut strict = SubStats::default();
        for seq in [0, 2, 1] {
            strict.on_seq(seq, 1);
        }
        assert_eq!(strict.out_of_order, 1);
        assert_eq!(s.max_seq, Some(200));
    }
}
