//! What a client may send: the request limits every handler enforces. The configuration fills
//! them in (`crate::config`); the HTTP layer only reads them.

use std::time::Duration;

/// Limits on what clients may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body, in bytes.
    pub max_body: usize,
    /// Most topics on one event.
    pub max_topics: usize,
    /// Most events in one JSON batch.
    pub max_batch: usize,
    /// Most selectors in one subscription.
    pub max_selectors: usize,
    /// Most bytes of selectors (their decoded text, summed) in one subscription.
    pub max_selector_bytes: usize,
    /// Most pattern selectors (`*`, URI templates, URL patterns) in one subscription.
    pub max_patterns: usize,
    /// Most bytes of distinct pattern selectors held by the live subscriptions of one client
    /// address (a pattern held by several counts once).
    pub max_pattern_bytes_per_ip: usize,
    /// Most distinct pattern selectors held by the live subscriptions of one client address.
    pub max_patterns_per_ip: usize,
    /// Longest long-poll wait.
    pub max_wait: Duration,
    /// Longest pause between two pieces of a request body (408 after it); the server sets it
    /// to the header-read timeout.
    pub body_idle: Duration,
    /// Longest time a whole request body may take, however it trickles (408 after it); the
    /// server sets it to the body-read timeout.
    pub body_deadline: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body: 1 << 20,
            max_topics: 64,
            max_batch: 1000,
            max_selectors: 100,
            max_selector_bytes: 16 << 10,
            max_patterns: 20,
            max_pattern_bytes_per_ip: 64 << 10,
            max_patterns_per_ip: 100,
            max_wait: Duration::from_secs(60),
            body_idle: Duration::from_secs(10),
            body_deadline: Duration::from_secs(60),
        }
    }
}
