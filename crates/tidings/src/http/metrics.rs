//! `GET /metrics`: the hub's metrics in the Prometheus text format (0.0.4), encoded by the
//! `prometheus-client` crate. Nothing is recorded here: at each scrape a [`Collector`] reads the
//! core's atomics ([`tidings_core::metrics`]), the fan-out's and the connection counts, and the
//! store's lag and link state.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tidings_core::metrics::{HistogramSnapshot, Metrics, Transport};

use super::error::ApiError;
use super::AppState;

/// What one scrape read, so the collector needs no async and no lock.
#[derive(Debug)]
struct Scrape {
    streams: u64,
    polls: u64,
    connections: u64,
    published: u64,
    publish_duplicates: u64,
    publish_failures: u64,
    delivered: u64,
    cuts_queue: u64,
    cuts_budget: u64,
    resumes: u64,
    resets: u64,
    replayed: u64,
    queued_bytes: u64,
    queue_budget: u64,
    store_errors: u64,
    link_up: bool,
    /// `None` when the store did not answer.
    lag_events: Option<u64>,
    stalled_seconds: f64,
    publish_durable: HistogramSnapshot,
    durable_to_dispatch: HistogramSnapshot,
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let hub = &state.hub;
    let m = hub.metrics();
    let (cuts_queue, cuts_budget) = hub.slow_cuts();
    let (queued, budget) = hub.queued_bytes();
    let lag = hub.lag().await.ok();
    let scrape = Scrape {
        streams: m.subscribers(Transport::Stream),
        polls: m.subscribers(Transport::Poll),
        connections: state.connections.open() as u64,
        published: Metrics::get(&m.published),
        publish_duplicates: Metrics::get(&m.publish_duplicates),
        publish_failures: Metrics::get(&m.publish_failures),
        delivered: hub.delivered(),
        cuts_queue,
        cuts_budget,
        resumes: Metrics::get(&m.resumes),
        resets: Metrics::get(&m.resets),
        replayed: Metrics::get(&m.replayed),
        queued_bytes: queued as u64,
        queue_budget: budget as u64,
        store_errors: Metrics::get(&m.store_errors),
        link_up: hub.store_health().is_ok() && lag.is_some(),
        lag_events: lag.map(|(n, _)| n),
        stalled_seconds: lag.map_or(0.0, |(_, d)| d.as_secs_f64()),
        publish_durable: m.publish_durable.snapshot(),
        durable_to_dispatch: m.durable_to_dispatch.snapshot(),
    };
    let mut registry = Registry::default();
    registry.register_collector(Box::new(scrape));
    let mut body = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut body, &registry)
        .map_err(|_| ApiError::Internal("encoding the metrics failed".into()))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        )],
        body,
    )
        .into_response())
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    labelled: &[(&str, &str, u64)],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (label, value, n) in labelled {
        let labels = [(*label, *value)];
        ConstCounter::new(*n).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn plain_counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn histogram(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    h: &HistogramSnapshot,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    metric.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
        h.sum_seconds,
        h.count,
        &h.buckets,
        None,
    )
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        {
            let mut subscribers = e.encode_descriptor(
                "tidings_subscribers",
                "Subscribers connected now, by transport.",
                None,
                MetricType::Gauge,
            )?;
            for (transport, n) in [("stream", self.streams), ("poll", self.polls)] {
                ConstGauge::new(to_i64(n))
                    .encode(subscribers.encode_family(&[("transport", transport)])?)?;
            }
        }
        gauge(
            &mut e,
            "tidings_connections",
            "Open HTTP connections (SSE streams included).",
            to_i64(self.connections),
        )?;
        counter(
            &mut e,
            "tidings_publishes",
            "Publish outcomes: events stored, requests refused as duplicates, requests failed in the store.",
            &[
                ("outcome", "stored", self.published),
                ("outcome", "duplicate", self.publish_duplicates),
                ("outcome", "failed", self.publish_failures),
            ],
        )?;
        counter(
            &mut e,
            "tidings_deliveries",
            "Live event deliveries: queued to a subscriber, or ended by cutting a slow subscriber.",
            &[
                ("outcome", "queued", self.delivered),
                ("outcome", "cut", self.cuts_queue + self.cuts_budget),
            ],
        )?;
        counter(
            &mut e,
            "tidings_slow_cuts",
            "Slow subscribers cut: past their own queue bound, or by the hub-wide queue budget.",
            &[
                ("reason", "queue", self.cuts_queue),
                ("reason", "budget", self.cuts_budget),
            ],
        )?;
        plain_counter(
            &mut e,
            "tidings_resumes",
            "Streams and polls that resumed after a known Last-Event-ID.",
            self.resumes,
        )?;
        plain_counter(&mut e, "tidings_resets", "tidings.reset notices: unknown or pruned Last-Event-ID, or history pruned under a replay.", self.resets)?;
        plain_counter(
            &mut e,
            "tidings_replayed_events",
            "Events sent from history (resumes, earliest, latest) rather than live.",
            self.replayed,
        )?;
        gauge(
            &mut e,
            "tidings_queued_bytes",
            "Bytes queued to all subscribers now.",
            to_i64(self.queued_bytes),
        )?;
        gauge(
            &mut e,
            "tidings_queue_budget_bytes",
            "The hub-wide bound on queued bytes.",
            to_i64(self.queue_budget),
        )?;
        plain_counter(
            &mut e,
            "tidings_store_errors",
            "Failed store operations (publishes, the fan-out's reads, health reads).",
            self.store_errors,
        )?;
        gauge(
            &mut e,
            "tidings_store_up",
            "1 when the store answers and its cluster link (PostgreSQL LISTEN, Redis) is up, else 0.",
            i64::from(self.link_up),
        )?;
        if let Some(lag) = self.lag_events {
            gauge(
                &mut e,
                "tidings_lag_events",
                "Events committed to the log (by any node) that this node has not yet delivered.",
                to_i64(lag),
            )?;
        }
        let stalled = ConstGauge::new(self.stalled_seconds);
        stalled.encode(e.encode_descriptor(
            "tidings_stalled_seconds",
            "How long this node's delivery has stayed behind the log without moving (as of the last scrape or readiness probe).",
            None,
            stalled.metric_type(),
        )?)?;
        histogram(
            &mut e,
            "tidings_publish_durable_seconds",
            "Time from a publish reaching the store to the store's answer that it is durable.",
            &self.publish_durable,
        )?;
        histogram(
            &mut e,
            "tidings_durable_to_dispatch_seconds",
            "Time from an event being durable to its dispatch into the subscribers' queues (written to their sockets right after), one sample per dispatch batch.",
            &self.durable_to_dispatch,
        )?;
        Ok(())
    }
}
