//! The optional publish rate (`--publish-rate`, `--publish-burst`): a token bucket per publisher
//! token, or per client address for requests without a valid token (and for every request when
//! publishing is open). A publish request that finds its bucket empty is answered `429` with
//! `Retry-After` before its body is read.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::AppState;
use crate::net::client_key;

/// How many publish requests a publisher may make: `per_second` on average, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PublishRate {
    pub per_second: f64,
    pub burst: u32,
}

impl PublishRate {
    /// Parses a rate, `N` or `N/s` (per second), `N/m` or `N/min`, `N/h` (e.g. `10`, `600/min`,
    /// `0.5/s`), and a burst (by default one second's worth, at least 1).
    pub fn parse(rate: &str, burst: Option<u32>) -> Result<Self, String> {
        let (count, unit) = rate.trim().split_once('/').unwrap_or((rate.trim(), "s"));
        let seconds = match unit.trim() {
            "s" | "sec" | "second" => 1.0,
            "m" | "min" | "minute" => 60.0,
            "h" | "hour" => 3600.0,
            other => return Err(format!("unknown unit {other:?}; use N/s, N/min or N/h")),
        };
        let count: f64 = count
            .trim()
            .parse()
            .map_err(|_| format!("{rate:?} is not a rate (e.g. 10/s, 600/min)"))?;
        let per_second = count / seconds;
        if !per_second.is_finite() || per_second <= 0.0 {
            return Err(format!("the publish rate {rate:?} must be above zero"));
        }
        let burst =
            burst.unwrap_or_else(|| per_second.ceil().clamp(1.0, f64::from(u32::MAX)) as u32);
        if burst == 0 {
            return Err("the publish burst must be at least 1".into());
        }
        Ok(Self { per_second, burst })
    }
}

/// Whose bucket a request draws from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Publisher {
    Token(Box<str>),
    Client(IpAddr),
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Buckets older than this many keys are swept when a new key arrives.
const SWEEP_AT: usize = 4096;

/// Token buckets keyed by publisher. Memory stays bounded: a bucket that has refilled completely
/// is indistinguishable from a new one and is dropped by the next sweep.
#[derive(Debug)]
pub struct RateLimiter {
    rate: PublishRate,
    buckets: Mutex<HashMap<Publisher, Bucket>>,
}

impl RateLimiter {
    pub fn new(rate: PublishRate) -> Self {
        Self {
            rate,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token from `who`'s bucket at `now`; when it is empty, how long until one is back.
    pub fn take(&self, who: Publisher, now: Instant) -> Result<(), Duration> {
        let PublishRate { per_second, burst } = self.rate;
        let burst = f64::from(burst);
        // A poisoned lock only means another request panicked mid-update; the counts stay usable.
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= SWEEP_AT && !buckets.contains_key(&who) {
            buckets.retain(|_, b| refilled(b, now, per_second) < burst);
        }
        let bucket = buckets.entry(who).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        bucket.tokens = refilled(bucket, now, per_second).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            // A rate so small that the wait overflows a Duration: wait "forever".
            Err(
                Duration::try_from_secs_f64((1.0 - bucket.tokens) / per_second)
                    .unwrap_or(Duration::MAX),
            )
        }
    }
}

fn refilled(bucket: &Bucket, now: Instant, per_second: f64) -> f64 {
    bucket.tokens + now.saturating_duration_since(bucket.at).as_secs_f64() * per_second
}

/// Middleware on the publish routes: draws from the publisher's bucket when a rate is set.
pub async fn limit_publish(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(limiter) = &state.publish_rate else {
        return next.run(request).await;
    };
    // The same token the handler will use; a malformed query is the handler's to refuse.
    let token = super::publish::publisher_token(&state, request.uri().query(), request.headers())
        .ok()
        .and_then(|(token, _)| token);
    let grant = match &token {
        Some(token) => state.auth.publisher(Some(token)).await.ok().flatten(),
        None => None,
    };
    let who = match (token, grant) {
        // Only a token that verifies gets its own bucket, so made-up tokens cannot dodge the
        // limit; the handler reuses the verification.
        (Some(token), Some(grant)) => {
            request
                .extensions_mut()
                .insert(super::publish::VerifiedPublisher {
                    token: token.clone(),
                    grant: Some(grant),
                });
            Publisher::Token(token.into())
        }
        _ => {
            let peer = request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
            Publisher::Client(client_key(peer))
        }
    };
    match limiter.take(who, Instant::now()) {
        Ok(()) => next.run(request).await,
        Err(wait) => ApiError::RateLimited { retry_after: wait }.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        let per_second = |s: &str| PublishRate::parse(s, None).map(|r| r.per_second);
        assert_eq!(per_second("10"), Ok(10.0));
        assert_eq!(per_second("10/s"), Ok(10.0));
        assert_eq!(per_second("600/min"), Ok(10.0));
        assert_eq!(per_second("36/h"), Ok(0.01));
        assert!(per_second("0").is_err());
        assert!(per_second("-1/s").is_err());
        assert!(per_second("ten").is_err());
        assert!(per_second("5/day").is_err());
        assert_eq!(PublishRate::parse("0.5/s", None).unwrap().burst, 1);
        assert_eq!(PublishRate::parse("2.5/s", None).unwrap().burst, 3);
        assert_eq!(PublishRate::parse("1/s", Some(7)).unwrap().burst, 7);
        assert!(PublishRate::parse("1/s", Some(0)).is_err());
    }

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_the_rate() {
        let limiter = RateLimiter::new(PublishRate {
            per_second: 2.0,
            burst: 3,
        });
        let t0 = Instant::now();
        let alice = || Publisher::Token("alice".into());
        for _ in 0..3 {
            assert_eq!(limiter.take(alice(), t0), Ok(()));
        }
        let wait = limiter.take(alice(), t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        // Another publisher has its own bucket.
        assert_eq!(limiter.take(Publisher::Token("bob".into()), t0), Ok(()));
        // Half a second later one token is back, and only one.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(limiter.take(alice(), t1), Ok(()));
        assert!(limiter.take(alice(), t1).is_err());
        // A long pause refills to the burst, not beyond.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(limiter.take(alice(), t2), Ok(()));
        }
        assert!(limiter.take(alice(), t2).is_err());
    }

    #[test]
    fn full_buckets_are_swept() {
        let limiter = RateLimiter::new(PublishRate {
            per_second: 1.0,
            burst: 1,
        });
        let t0 = Instant::now();
        for i in 0..SWEEP_AT as u32 {
            let ip = IpAddr::from(i.to_be_bytes());
            limiter.take(Publisher::Client(ip), t0).unwrap();
        }
        let later = t0 + Duration::from_secs(5);
        limiter.take(Publisher::Token("new".into()), later).unwrap();
        assert_eq!(limiter.buckets.lock().unwrap().len(), 1);
    }
}
