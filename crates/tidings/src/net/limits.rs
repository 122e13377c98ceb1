//! Open-connection accounting for `--max-connections` and `--max-connections-per-ip`. A
//! connection is counted from accept to close, whatever it carries: an SSE stream lives in its
//! connection's response body, so it counts for as long as the stream is open, and an idle
//! keep-alive connection counts until the header-read timeout closes it.
//!
//! Also what the live subscriptions of one client address hold, for
//! `--max-selector-bytes-per-ip` and `--max-patterns-per-ip` ([`SelectorBudget`]): selectors cost
//! memory for as long as a subscription lives, and each distinct pattern costs CPU per event.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

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

/// Selector bytes and pattern selectors held by the live subscriptions of each client address
/// (keyed by [`client_key`]), with their limits.
#[derive(Debug)]
pub struct SelectorBudget {
    max_bytes: usize,
    max_patterns: usize,
    held: Mutex<HashMap<IpAddr, Held>>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Held {
    bytes: usize,
    patterns: usize,
}

impl SelectorBudget {
    /// At most `max_bytes` of selectors and `max_patterns` pattern selectors per address.
    pub fn new(max_bytes: usize, max_patterns: usize) -> Arc<Self> {
        Arc::new(Self {
            max_bytes,
            max_patterns,
            held: Mutex::default(),
        })
    }

    fn held(&self) -> MutexGuard<'_, HashMap<IpAddr, Held>> {
        // Updated in single statements, so a poisoned lock still holds valid counts.
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a subscription from `peer` holding `bytes` of selectors, `patterns` of them
    /// patterns, until the guard drops; or refuses it (429) with the limit it would pass.
    pub fn try_hold(
        self: &Arc<Self>,
        peer: IpAddr,
        bytes: usize,
        patterns: usize,
    ) -> Result<SelectorGuard, ApiError> {
        let client = client_key(peer);
        let mut held = self.held();
        let now = held.get(&client).copied().unwrap_or_default();
        if now.patterns + patterns > self.max_patterns {
            return Err(ApiError::ClientSelectorLimit(format!(
                "your address's live subscriptions would hold {} pattern selectors, more than \
                 --max-patterns-per-ip ({}); close one first",
                now.patterns + patterns,
                self.max_patterns
            )));
        }
        if now.bytes + bytes > self.max_bytes {
            return Err(ApiError::ClientSelectorLimit(format!(
                "your address's live subscriptions would hold {} bytes of selectors, more than \
                 --max-selector-bytes-per-ip ({}); close one first",
                now.bytes + bytes,
                self.max_bytes
            )));
        }
        let entry = held.entry(client).or_default();
        entry.bytes += bytes;
        entry.patterns += patterns;
        Ok(SelectorGuard {
            budget: self.clone(),
            client,
            held: Held { bytes, patterns },
        })
    }

    /// Addresses holding selectors now.
    pub fn clients(&self) -> usize {
        self.held().len()
    }
}

/// One subscription's selectors, counted against its address until dropped.
#[derive(Debug)]
pub struct SelectorGuard {
    budget: Arc<SelectorBudget>,
    client: IpAddr,
    held: Held,
}

impl Drop for SelectorGuard {
    fn drop(&mut self) {
        let mut held = self.budget.held();
        if let Some(now) = held.get_mut(&self.client) {
            now.bytes = now.bytes.saturating_sub(self.held.bytes);
            now.patterns = now.patterns.saturating_sub(self.held.patterns);
            if *now == Held::default() {
                held.remove(&self.client);
            }
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
    fn selector_budget_per_address() {
        let budget = SelectorBudget::new(100, 3);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let a1 = budget.try_hold(a, 40, 2).unwrap();
        let err = budget.try_hold(a, 10, 2).unwrap_err().to_string();
        assert!(
            err.contains("4 pattern selectors") && err.contains("-ip (3)"),
            "{err}"
        );
        let err = budget.try_hold(a, 61, 0).unwrap_err().to_string();
        assert!(
            err.contains("101 bytes") && err.contains("-ip (100)"),
            "{err}"
        );
        let _a2 = budget.try_hold(a, 60, 1).unwrap();
        let _b1 = budget.try_hold(b, 100, 3).unwrap();
        assert!(budget
            .try_hold("2001:db8::2".parse().unwrap(), 1, 0)
            .is_err());
        drop(a1);
        let _a3 = budget.try_hold(a, 40, 2).unwrap();
        drop((_a2, _a3, _b1));
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
