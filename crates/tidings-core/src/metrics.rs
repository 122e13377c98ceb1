//! The hub's own counters, gauges and latency histograms: plain atomics, so the hot path pays
//! one relaxed add per publish, per dispatch batch or per stream start, and nothing per
//! subscriber write. The server reads them at scrape time and encodes them for Prometheus
//! (`tidings::http::metrics`); nothing here knows any exposition format.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds, in seconds, of the latency histograms' buckets (the last one is `+Inf`).
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// A latency histogram over [`LATENCY_BUCKETS`]: one bucket count and the sum (in nanoseconds)
/// per sample, both atomic; the sample count is the buckets' sum.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Per bucket (not cumulative); the last counts the samples above every bound.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

/// What a [`Histogram`] held when read.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound in seconds, samples in that bucket)`, not cumulative; the last bound is
    /// `f64::INFINITY`.
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum_seconds: f64,
}

impl Histogram {
    /// Records one sample.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|bound| secs <= *bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The current values (each read on its own: a scrape racing a sample may see it in one
    /// field and not yet in another, as with any lock-free exporter).
    pub fn snapshot(&self) -> HistogramSnapshot {
        let buckets = LATENCY_BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.buckets.iter().map(|b| b.load(Ordering::Relaxed)))
            .collect::<Vec<_>>();
        HistogramSnapshot {
            count: buckets.iter().map(|(_, n)| n).sum(),
            buckets,
            sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

/// How a subscriber receives events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A live SSE stream.
    Stream,
    /// A (long) poll in progress.
    Poll,
}

/// The hub's metrics. Counters only grow; gauges go up and down.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Events stored by publishes (a batch counts each event).
    pub published: AtomicU64,
    /// Publish requests refused because an event id was already used.
    pub publish_duplicates: AtomicU64,
    /// Publish requests that failed in the store (nothing acknowledged).
    pub publish_failures: AtomicU64,
    /// Failed store operations: publishes, the pump's reads, stats.
    pub store_errors: AtomicU64,
    /// Streams and polls that resumed after a known id.
    pub resumes: AtomicU64,
    /// `tidings.reset` notices: an unknown or pruned Last-Event-ID, or history pruned under a
    /// replay.
    pub resets: AtomicU64,
    /// Events sent from history (replays after an id, `latest`), not from the live fan-out.
    pub replayed: AtomicU64,
    /// Live SSE streams open now.
    pub streams: AtomicI64,
    /// Polls waiting or reading now.
    pub polls: AtomicI64,
    /// Time from a publish reaching the store to its answer from the store (durable).
    pub publish_durable: Histogram,
    /// Time from an event being stored to its dispatch into the subscribers' queues (the
    /// flusher writes them to the sockets right after), one sample per dispatch batch, from the
    /// batch's newest event's `stored_at` (so across nodes it includes their clock skew).
    pub durable_to_dispatch: Histogram,
}

impl Metrics {
    /// Counts a subscriber of `transport` until the guard is dropped.
    pub fn active(self: &std::sync::Arc<Self>, transport: Transport) -> Active {
        self.gauge(transport).fetch_add(1, Ordering::Relaxed);
        Active {
            metrics: self.clone(),
            transport,
        }
    }

    fn gauge(&self, transport: Transport) -> &AtomicI64 {
        match transport {
            Transport::Stream => &self.streams,
            Transport::Poll => &self.polls,
        }
    }

    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a counter or gauge.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Subscribers of `transport` now.
    pub fn subscribers(&self, transport: Transport) -> u64 {
        self.gauge(transport).load(Ordering::Relaxed).max(0) as u64
    }
}

/// A subscriber counted in [`Metrics`] while it lives.
#[derive(Debug)]
pub struct Active {
    metrics: std::sync::Arc<Metrics>,
    transport: Transport,
}

impl Drop for Active {
    fn drop(&mut self) {
        self.metrics
            .gauge(self.transport)
            .fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn samples_land_in_the_first_bucket_that_holds_them() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(100));
        h.observe(Duration::from_millis(1));
        h.observe(Duration::from_secs(60));
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.buckets[0], (0.0005, 1));
        assert_eq!(s.buckets[1], (0.001, 1), "a bound is inclusive");
        assert_eq!(s.buckets.last(), Some(&(f64::INFINITY, 1)));
        assert!((s.sum_seconds - 60.0011).abs() < 1e-9, "{}", s.sum_seconds);
    }

    #[test]
    fn active_subscribers_are_counted_while_their_guard_lives() {
        let m = Arc::new(Metrics::default());
        let a = m.active(Transport::Stream);
        let b = m.active(Transport::Poll);
        assert_eq!(
            (
                m.subscribers(Transport::Stream),
                m.subscribers(Transport::Poll)
            ),
            (1, 1)
        );
        drop(a);
        drop(b);
        assert_eq!(m.subscribers(Transport::Stream), 0);
    }
}
