//! What a run reports, for people and for machines.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// A new latency histogram, in microseconds, 1 µs to 1 hour, 3 significant figures.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Records a latency in nanoseconds (clamped into the histogram's range).
pub fn record_ns(h: &mut Histogram<u64>, ns: u64) {
    let us = (ns / 1000).clamp(1, 3_600_000_000);
    h.record(us).expect("clamped into range");
}

/// Percentiles of a latency distribution, in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1000.0,
        }
    }

    pub fn line(&self) -> String {
        format!(
            "p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms  (n = {})",
            self.p50_ms, self.p90_ms, self.p99_ms, self.p999_ms, self.max_ms, self.count
        )
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConnectReport {
    /// From the first connection attempt until every subscriber had its response head.
    pub seconds: f64,
    pub connected: u64,
    pub failed: u64,
    /// The first few connection errors.
    pub errors: Vec<String>,
    pub server_cpu_ms: Option<f64>,
    pub server_cpu_us_per_subscriber: Option<f64>,
    pub generator_cpu_ms: f64,
    /// SYNs dropped machine-wide because a listen backlog was full while connecting (each
    /// costs its client a 1 s retransmission timeout).
    pub listen_overflows: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MemoryReport {
    pub server_rss_before_kib: u64,
    pub server_rss_connected_kib: u64,
    pub server_rss_end_kib: u64,
    /// (connected - before) / connected subscribers.
    pub kib_per_subscriber: f64,
    pub server_processes: usize,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PublishReport {
    pub requested: u64,
    pub sent: u64,
    pub acked: u64,
    pub failed: u64,
    pub errors: Vec<String>,
    pub target_rate: f64,
    /// Sent events / (last send - first send).
    pub actual_rate: f64,
    pub seconds: f64,
    /// Worst delay of a send behind its schedule.
    pub max_schedule_lag_ms: f64,
    pub ack_latency: Latency,
    pub connections: usize,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeliveryReport {
    /// Sum over subscribers of the events acknowledged on their topic.
    pub expected: u64,
    /// Events received (duplicates included).
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    /// Events received whose data carried no sequence number and send time.
    pub unparsed: u64,
    /// Events for another topic than the subscriber's.
    pub wrong_topic: u64,
    pub subscribers_with_loss: u64,
    /// Streams the server ended (or broke) before the run was over.
    pub streams_ended: u64,
    pub stream_errors: Vec<String>,
    /// From the first publish to the last delivery.
    pub seconds: f64,
    pub per_second: f64,
    /// The drain timed out before every expected event arrived.
    pub drain_timed_out: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CpuReport {
    /// Server CPU time over the publish window (first publish to last delivery).
    pub server_cpu_ms: Option<f64>,
    pub server_cpu_us_per_delivery: Option<f64>,
    /// Server CPU per acknowledged event (publish, store and fan-out).
    pub server_cpu_us_per_event: Option<f64>,
    /// Server CPU as a share of one core over the window.
    pub server_core_percent: Option<f64>,
    pub generator_cpu_ms: f64,
    pub generator_core_percent: f64,
    pub generator_threads: usize,
    /// The generator used at least 90 % of its cores: the figures may be the generator's.
    pub generator_saturated: bool,
}

/// A reconnect storm (`--drop-at`): every subscriber dropped its connection and reconnected.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReconnectReport {
    /// Seconds after the start of publishing.
    pub drop_at_s: Vec<f64>,
    /// Connections dropped.
    pub dropped: u64,
    pub reconnected: u64,
    /// Reconnections that sent `Last-Event-ID`.
    pub with_last_event_id: u64,
    /// Subscribers that could not reconnect within the connect timeout.
    pub failed: u64,
    /// From the drop to the response head of the new connection.
    pub latency: Latency,
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FanoutReport {
    pub kind: String,
    pub label: String,
    pub subscribers: u64,
    pub topics: u64,
    pub topic_mode: String,
    pub subscribe_url: String,
    pub connect: ConnectReport,
    pub memory: Option<MemoryReport>,
    pub publish: PublishReport,
    pub delivery: DeliveryReport,
    pub latency: Latency,
    pub cpu: CpuReport,
    #[serde(default)]
    pub reconnect: Option<ReconnectReport>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ThroughputReport {
    pub kind: String,
    pub label: String,
    pub publishers: usize,
    pub topics: u64,
    pub seconds: f64,
    pub warmup_seconds: f64,
    pub acked: u64,
    pub failed: u64,
    pub errors: Vec<String>,
    pub acked_per_second: f64,
    pub ack_latency: Latency,
    pub server_cpu_ms: Option<f64>,
    pub server_cpu_us_per_publish: Option<f64>,
    pub server_core_percent: Option<f64>,
    pub server_rss_end_kib: Option<u64>,
    pub generator_cpu_ms: f64,
    pub generator_core_percent: f64,
    pub generator_saturated: bool,
    pub reconnects: u64,
    pub warnings: Vec<String>,
}

fn opt(v: Option<f64>, unit: &str, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$} {unit}"))
        .unwrap_or_else(|| "n/a".into())
}

impl FanoutReport {
    pub fn human(&self) -> String {
        let mut s = String::new();
        let c = &self.connect;
        s += &format!(
            "== fanout {}: {} subscribers on {} topic(s), {} events requested at {}/s ({})\n",
            self.label,
            self.subscribers,
            self.topics,
            self.publish.requested,
            self.publish.target_rate,
            self.topic_mode
        );
        s += &format!(
            "connect     {} connected, {} failed in {:.3} s; server CPU {} ({} per subscriber)\n",
            c.connected,
            c.failed,
            c.seconds,
            opt(c.server_cpu_ms, "ms", 1),
            opt(c.server_cpu_us_per_subscriber, "µs", 1)
        );
        if c.listen_overflows > 0 {
            s += &format!(
                "            {} SYNs dropped on a full listen backlog (each waits a 1 s retransmission)\n",
                c.listen_overflows
            );
        }
        for e in &c.errors {
            s += &format!("            error: {e}\n");
        }
        if let Some(m) = &self.memory {
            s += &format!(
                "memory      server RSS {} KiB before, {} KiB connected, {} KiB at the end: {:.2} KiB per subscriber\n",
                m.server_rss_before_kib, m.server_rss_connected_kib, m.server_rss_end_kib, m.kib_per_subscriber
            );
        }
        let p = &self.publish;
        s += &format!(
            "publish     {} sent, {} acked, {} failed, {:.1} events/s over {:.3} s (max lag behind schedule {:.2} ms, {} connection(s))\n",
            p.sent, p.acked, p.failed, p.actual_rate, p.seconds, p.max_schedule_lag_ms, p.connections
        );
        s += &format!("            ack latency {}\n", p.ack_latency.line());
        for e in &p.errors {
            s += &format!("            error: {e}\n");
        }
        let d = &self.delivery;
        s += &format!(
            "delivery    {} of {} expected in {:.3} s: {:.0} deliveries/s{}\n",
            d.delivered,
            d.expected,
            d.seconds,
            d.per_second,
            if d.drain_timed_out {
                " (drain timed out)"
            } else {
                ""
            }
        );
        s += &format!(
            "            lost {} ({} subscribers), duplicated {}, out of order {}, unparsed {}, wrong topic {}, streams ended {}\n",
            d.lost, d.subscribers_with_loss, d.duplicated, d.out_of_order, d.unparsed, d.wrong_topic, d.streams_ended
        );
        for e in &d.stream_errors {
            s += &format!("            stream: {e}\n");
        }
        s += &format!("latency     {}\n", self.latency.line());
        if let Some(r) = &self.reconnect {
            s += &format!(
                "reconnect   storms at {:?} s: {} dropped, {} reconnected ({} with Last-Event-ID), {} failed\n",
                r.drop_at_s, r.dropped, r.reconnected, r.with_last_event_id, r.failed
            );
            s += &format!("            reconnect time {}\n", r.latency.line());
            for e in &r.errors {
                s += &format!("            error: {e}\n");
            }
        }
        let u = &self.cpu;
        s += &format!(
            "server CPU  {} = {} per delivery, {} per event, {} of a core\n",
            opt(u.server_cpu_ms, "ms", 1),
            opt(u.server_cpu_us_per_delivery, "µs", 2),
            opt(u.server_cpu_us_per_event, "µs", 1),
            opt(u.server_core_percent, "%", 1)
        );
        s += &format!(
            "generator   {:.1} ms CPU, {:.1} % of {} core(s){}\n",
            u.generator_cpu_ms,
            u.generator_core_percent,
            u.generator_threads,
            if u.generator_saturated {
                "  ** SATURATED: figures may be the generator's **"
            } else {
                ""
            }
        );
        for w in &self.warnings {
            s += &format!("warning     {w}\n");
        }
        s
    }
}

impl ThroughputReport {
    pub fn human(&self) -> String {
        let mut s = format!(
            "== throughput {}: {} concurrent publishers for {:.1} s (after {:.1} s warm-up), {} topic(s)\n",
            self.label, self.publishers, self.seconds, self.warmup_seconds, self.topics
        );
        s += &format!(
            "acked       {} ({:.0}/s), {} failed, {} reconnects\n",
            self.acked, self.acked_per_second, self.failed, self.reconnects
        );
        s += &format!("ack latency {}\n", self.ack_latency.line());
        for e in &self.errors {
            s += &format!("            error: {e}\n");
        }
        s += &format!(
            "server CPU  {} = {} per publish, {} of a core\n",
            opt(self.server_cpu_ms, "ms", 1),
            opt(self.server_cpu_us_per_publish, "µs", 2),
            opt(self.server_core_percent, "%", 1)
        );
        s += &format!(
            "generator   {:.1} ms CPU, {:.1} % of a core{}\n",
            self.generator_cpu_ms,
            self.generator_core_percent,
            if self.generator_saturated {
                "  ** SATURATED **"
            } else {
                ""
            }
        );
        for w in &self.warnings {
            s += &format!("warning     {w}\n");
        }
        s
    }
}

/// A markdown table of result files (the `summary` subcommand).
pub fn summary(files: &[std::path::PathBuf]) -> anyhow::Result<String> {
    let mut fan = String::from(
        "| run | subs | topics | events/s | connect s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | deliveries/s | lost | dup | ooo | hub µs/delivery | hub µs/event | hub KiB/sub | gen CPU % |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut thr = String::from(
        "| run | publishers | seconds | acked/s | ack p50 ms | ack p99 ms | failed | hub µs/publish | hub core % | gen CPU % |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut disk = String::from(
        "| probe | fdatasync p50 ms | p90 ms | p99 ms | p99.9 ms | max ms |\n|---|---:|---:|---:|---:|---:|\n",
    );
    let (mut nf, mut nt, mut nd) = (0, 0, 0);
    let f2 = |v: Option<f64>| v.map(|x| format!("{x:.2}")).unwrap_or_else(|| "n/a".into());
    for path in files {
        let text = std::fs::read_to_string(path)?;
        let value: serde_json::Value = serde_json::from_str(&text)?;
        match value.get("kind").and_then(|k| k.as_str()) {
            Some("fanout") => {
                let r: FanoutReport = serde_json::from_value(value)?;
                nf += 1;
                fan += &format!(
                    "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} | {} | {} | {} | {} | {} | {} | {:.0}{} |\n",
                    r.label,
                    r.connect.connected,
                    r.topics,
                    r.publish.actual_rate,
                    r.connect.seconds,
                    r.latency.p50_ms,
                    r.latency.p90_ms,
                    r.latency.p99_ms,
                    r.latency.p999_ms,
                    r.latency.max_ms,
                    r.delivery.per_second,
                    r.delivery.lost,
                    r.delivery.duplicated,
                    r.delivery.out_of_order,
                    f2(r.cpu.server_cpu_us_per_delivery),
                    f2(r.cpu.server_cpu_us_per_event),
                    f2(r.memory.as_ref().map(|m| m.kib_per_subscriber)),
                    r.cpu.generator_core_percent,
                    if r.cpu.generator_saturated { " (saturated)" } else { "" },
                );
            }
            Some("throughput") => {
                let r: ThroughputReport = serde_json::from_value(value)?;
                nt += 1;
                thr += &format!(
                    "| {} | {} | {:.1} | {:.0} | {:.2} | {:.2} | {} | {} | {} | {:.0}{} |\n",
                    r.label,
                    r.publishers,
                    r.seconds,
                    r.acked_per_second,
                    r.ack_latency.p50_ms,
                    r.ack_latency.p99_ms,
                    r.failed,
                    f2(r.server_cpu_us_per_publish),
                    r.server_core_percent
                        .map(|x| format!("{x:.0}"))
                        .unwrap_or_else(|| "n/a".into()),
                    r.generator_core_percent,
                    if r.generator_saturated {
                        " (saturated)"
                    } else {
                        ""
                    },
                );
            }
            Some("fsync") => {
                let r: crate::fsync::FsyncReport = serde_json::from_value(value)?;
                nd += 1;
                let l = &r.fdatasync;
                disk += &format!(
                    "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
                    r.label, l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
                );
            }
            _ => anyhow::bail!("{} is not a tidings-bench report", path.display()),
        }
    }
    let mut out = String::new();
    if nf > 0 {
        out += &fan;
    }
    if nt > 0 {
        if nf > 0 {
            out += "\n";
        }
        out += &thr;
    }
    if nd > 0 {
        if nf + nt > 0 {
            out += "\n";
        }
        out += &disk;
    }
    Ok(out)
}
