//! Open-connection accounting for `--max-connections` and `--max-connections-per-ip`. A
//! connection is counted from accept to close, whatever it carries: an SSE stream lives in its
//! connection's response body, so it counts for as long as the stream is open, and an idle
//! keep-alive connection counts until the header-read timeout closes it.
//!
//! Also the distinct pattern selectors the live subscriptions of one client address hold, for
//! `--max-patterns-per-ip` and `--max-pattern-bytes-per-ip` ([`SelectorBudget`]): each costs
//! the fan-out a match per event, and its compiled form memory, for as long as it is held.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tidings_core::selector::PatternKey;

use crate::http::error::ApiError;

use super::client_key;

/// What a refused client is told to wait before retrying.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The hub holds `--max-connections` already: answered 503.
    Total,
    /// The client's address holds `--max-connections-per-ip` already: answered 429.
    PerClient,
}

impl Refusal {
    /// The answer a refused connection gets to its first request.
    pub fn error(self) -> ApiError {
        match self {
            Self::Total => ApiError::TooManyConnections {
                retry_after: RETRY_AFTER,
            },
            Self::PerClient => ApiError::TooManyClientConnections {
                retry_after: RETRY_AFTER,
            },
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    open: usize,
    /// Only kept when there is a per-client limit.
    per_client: HashMap<IpAddr, usize>,
}

/// The limits and the current counts. Clients are keyed by [`client_key`]: an IPv4 address, or
/// the /64 prefix of an IPv6 address.
#[derive(Debug)]
pub struct ConnectionLimits {
    total: Option<usize>,
    per_client: Option<usize>,
    counts: Mutex<Counts>,
}

impl ConnectionLimits {
    /// `None` means unlimited.
    pub fn new(total: Option<usize>, per_client: Option<usize>) -> Arc<Self> {
        Arc::new(Self {
            total,
            per_client,
            counts: Mutex::new(Counts::default()),
        })
    }

    fn counts(&self) -> MutexGuard<'_, Counts> {
        // The counts are updated in single statements, so a poisoned lock still holds valid ones.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a new connection from `peer`, or says why it may not open.
    pub fn try_open(self: &Arc<Self>, peer: IpAddr) -> Result<ConnectionGuard, Refusal> {
        let client = client_key(peer);
        let mut counts = self.counts();
        if self.total.is_some_and(|max| counts.open >= max) {
            return Err(Refusal::Total);
        }
        if let Some(max) = self.per_client {
            let open = counts.per_client.entry(client).or_insert(0);
            if *open >= max {
                return Err(Refusal::PerClient);
            }
            *open += 1;
        }
        counts.open += 1;
        Ok(ConnectionGuard {
            limits: self.clone(),
            client,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.counts().open
    }
}

/// One counted connection; dropping it (when the connection closes) uncounts it.
#[derive(Debug)]
pub struct ConnectionGuard {
    limits: Arc<ConnectionLimits>,
    client: IpAddr,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let mut counts = self.limits.counts();
        counts.open = counts.open.saturating_sub(1);
        if let Some(open) = counts.per_client.get_mut(&self.client) {
            *open -= 1;
            if *open == 0 {
                counts.per_client.remove(&self.client);
            }
        }
    }
}

/// The distinct pattern selectors held by the live subscriptions of each client address (keyed
/// by [`client_key`]), with their limits. A pattern held by several subscriptions counts once:
/// the fan-out evaluates it once per event and keeps one compiled copy, so duplicates cost the
/// hub next to nothing, and many clients behind one proxy may all hold `jobs/{id}`. Exact topics
/// are not counted: the fan-out looks them up by hash.
#[derive(Debug)]
pub struct SelectorBudget {
    max_bytes: usize,
    max_patterns: usize,
    held: Mutex<HashMap<IpAddr, Held>>,
}

#[derive(Debug, Default)]
struct Held {
    /// Each distinct pattern, with how many live subscriptions hold it.
    patterns: HashMap<PatternKey, usize>,
    /// Their source bytes, summed.
    bytes: usize,
}

fn source_len(key: &PatternKey) -> usize {
    match key {
        PatternKey::Any => 1,
        PatternKey::Template(source) | PatternKey::UrlPattern(source, _) => source.len(),
    }
}

impl SelectorBudget {
    /// At most `max_patterns` distinct patterns of `max_bytes` in all per address.
    pub fn new(max_bytes: usize, max_patterns: usize) -> Arc<Self> {
        Arc::new(Self {
            max_bytes,
            max_patterns,
            held: Mutex::default(),
        })
    }

    fn held(&self) -> MutexGuard<'_, HashMap<IpAddr, Held>> {
        // Every update completes before anything can panic, so a poisoned lock is consistent.
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts the patterns of a subscription from `peer` until the guard drops; or refuses it
    /// (429) with the limit it would pass.
    pub fn try_hold(
        self: &Arc<Self>,
        peer: IpAddr,
        mut patterns: Vec<PatternKey>,
    ) -> Result<SelectorGuard, ApiError> {
        let mut seen = std::collections::HashSet::new();
        patterns.retain(|p| seen.insert(p.clone()));
        let client = client_key(peer);
        let mut all = self.held();
        let held = all.entry(client).or_default();
        let new: Vec<&PatternKey> = patterns
            .iter()
            .filter(|p| !held.patterns.contains_key(*p))
            .collect();
        let count = held.patterns.len() + new.len();
        let bytes = held.bytes + new.iter().map(|p| source_len(p)).sum::<usize>();
        let refusal = if count > self.max_patterns {
            Some(format!(
                "your address's live subscriptions would hold {count} distinct pattern \
                 selectors, more than --max-patterns-per-ip ({}); close one first",
                self.max_patterns
            ))
        } else if bytes > self.max_bytes {
            Some(format!(
                "your address's live subscriptions would hold {bytes} bytes of distinct pattern \
                 selectors, more than --max-pattern-bytes-per-ip ({}); close one first",
                self.max_bytes
            ))
        } else {
            None
        };
        if let Some(reason) = refusal {
            if held.patterns.is_empty() {
                all.remove(&client);
            }
            return Err(ApiError::ClientSelectorLimit(reason));
        }
        held.bytes = bytes;
        for p in &patterns {
            *held.patterns.entry(p.clone()).or_insert(0) += 1;
        }
        Ok(SelectorGuard {
            budget: self.clone(),
            client,
            patterns,
        })
    }

    /// Addresses holding patterns now.
    pub fn clients(&self) -> usize {
        self.held().len()
    }
}

/// One subscription's patterns, counted against its address until dropped.
#[derive(Debug)]
pub struct SelectorGuard {
    budget: Arc<SelectorBudget>,
    client: IpAddr,
    /// Distinct.
    patterns: Vec<PatternKey>,
}

impl Drop for SelectorGuard {
    fn drop(&mut self) {
        let mut all = self.budget.held();
        let Some(held) = all.get_mut(&self.client) else {
            return;
        };
        for p in &self.patterns {
            if let Some(n) = held.patterns.get_mut(p) {
                *n -= 1;
                if *n == 0 {
                    held.patterns.remove(p);
                    held.bytes = held.bytes.saturating_sub(source_len(p));
                }
            }
        }
        if held.patterns.is_empty() {
            all.remove(&self.client);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn total_and_per_client_limits() {
        let limits = ConnectionLimits::new(Some(3), Some(2));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = limits.try_open(a).unwrap();
        let _a2 = limits.try_open(a).unwrap();
        assert_eq!(limits.try_open(a).unwrap_err(), Refusal::PerClient);
        let _b1 = limits.try_open(b).unwrap();
        assert_eq!(limits.try_open(b).unwrap_err(), Refusal::Total);
        assert_eq!(limits.open(), 3);
        drop(a1);
        assert_eq!(limits.open(), 2);
        let _a3 = limits.try_open(a).unwrap();
        assert_eq!(limits.try_open(a).unwrap_err(), Refusal::Total);
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64_prefix() {
        let limits = ConnectionLimits::new(None, Some(1));
        let _x = limits.try_open("2001:db8::1".parse().unwrap()).unwrap();
        assert_eq!(
            limits.try_open("2001:db8::2".parse().unwrap()).unwrap_err(),
            Refusal::PerClient
        );
        let _y = limits.try_open("2001:db8:0:1::1".parse().unwrap()).unwrap();
        let _v4 = limits.try_open("192.0.2.1".parse().unwrap()).unwrap();
        assert_eq!(
            limits
                .try_open("::ffff:192.0.2.1".parse().unwrap())
                .unwrap_err(),
            Refusal::PerClient,
            "an IPv4-mapped address is the IPv4 client"
        );
    }

    #[test]
    fn selector_budget_counts_distinct_patterns_per_address() {
        let budget = SelectorBudget::new(20, 3);
        let t = |s: &str| PatternKey::Template(s.into());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let a1 = budget
            .try_hold(a, vec![t("a/{x}"), t("b/{x}"), t("a/{x}")])
            .unwrap();
        let err = budget.try_hold(a, vec![t("cccccccccc/{x}")]).unwrap_err();
        let err = err.to_string();
        assert!(
            err.contains("24 bytes") && err.contains("-ip (20)"),
            "{err}"
        );
        // The same patterns again cost nothing more.
        let a2 = budget
            .try_hold(a, vec![t("a/{x}"), PatternKey::Any])
            .unwrap();
        let err = budget.try_hold(a, vec![t("c/{x}"), t("d/{x}")]);
        let err = err.unwrap_err().to_string();
        assert!(
            err.contains("5 distinct pattern") && err.contains("-ip (3)"),
            "{err}"
        );
        let _b1 = budget
            .try_hold(b, vec![t("c/{x}"), t("d/{x}"), t("e/{x}")])
            .unwrap();
        assert!(budget
            .try_hold("2001:db8::2".parse().unwrap(), vec![t("f/{x}")])
            .is_err());
        drop(a1);
        // a/{x} is still held by a2; b/{x} is free again.
        let _a3 = budget.try_hold(a, vec![t("f/{x}")]).unwrap();
        assert!(budget.try_hold(a, vec![t("g/{x}")]).is_err());
        drop((a2, _a3, _b1));
        assert_eq!(budget.clients(), 0);
    }

    #[test]
    fn unlimited_keeps_no_per_client_map() {
        let limits = ConnectionLimits::new(None, None);
        let guards: Vec<_> = (0..100)
            .map(|_| limits.try_open("10.0.0.1".parse().unwrap()).unwrap())
            .collect();
        assert_eq!(limits.open(), 100);
        assert!(limits.counts().per_client.is_empty());
        drop(guards);
        assert_eq!(limits.open(), 0);
    }
}
