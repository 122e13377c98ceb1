//! Cross-origin access for browsers (`--cors-origins`), built on tower-http's `CorsLayer`.
//!
//! - Not configured (the default): no CORS headers at all, so only pages of the hub's own origin
//!   may read its answers.
//! - `*`: any origin, without credentials (the CORS spec forbids `*` with credentials), so cookie
//!   authorization does not work cross-origin; bearer tokens in a header or the query do.
//! - A list of origins, exact (`https://app.example.com`) or wildcard subdomains
//!   (`https://*.example.com`): a listed origin is echoed back with
//!   `Access-Control-Allow-Credentials: true`, so `EventSource(url, {withCredentials: true})` and
//!   `fetch(url, {credentials: "include"})` send the authorization cookie.
//!
//! Preflights allow `GET` and `POST` with `Authorization`, `Content-Type`, `Last-Event-ID` and
//! `Cache-Control`; the answers expose `Link`, `Last-Event-ID`, `Mercure-Last-Event-ID` and
//! `Retry-After`.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowCredentials, AllowOrigin, CorsLayer};

use super::host::{split_authority, split_list, DomainPattern};

/// Which origins may read the hub's answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CorsOrigins {
    /// No CORS headers: same origin only.
    #[default]
    SameOrigin,
    /// `*`: any origin, without credentials.
    Any,
    /// These origins, with credentials.
    List(Vec<OriginPattern>),
}

impl CorsOrigins {
    /// Parses a list separated by commas or white space: `*` alone, or origin patterns.
    pub fn parse(list: &str) -> Result<Self, String> {
        let items: Vec<&str> = split_list(list).collect();
        if items.is_empty() {
            return Err("the list of CORS origins is empty".into());
        }
        if items.contains(&"*") {
            if items.len() > 1 {
                return Err("the CORS origin * cannot be combined with other origins".into());
            }
            return Ok(Self::Any);
        }
        items
            .into_iter()
            .map(OriginPattern::parse)
            .collect::<Result<_, _>>()
            .map(Self::List)
    }

    /// The layer to apply, or `None` for same-origin only.
    pub fn layer(&self) -> Option<CorsLayer> {
        let base = CorsLayer::new()
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::CACHE_CONTROL,
                HeaderName::from_static("last-event-id"),
            ])
            .expose_headers([
                header::LINK,
                header::RETRY_AFTER,
                HeaderName::from_static("last-event-id"),
                HeaderName::from_static("mercure-last-event-id"),
            ])
            .max_age(Duration::from_secs(3600));
        match self {
            Self::SameOrigin => None,
            Self::Any => Some(base.allow_origin(AllowOrigin::any())),
            Self::List(patterns) => {
                let patterns: Arc<[OriginPattern]> = patterns.clone().into();
                let allowed = move |origin: &HeaderValue| {
                    origin
                        .to_str()
                        .is_ok_and(|o| patterns.iter().any(|p| p.matches(o)))
                };
                let for_credentials = allowed.clone();
                Some(
                    base.allow_origin(AllowOrigin::predicate(move |origin, _| allowed(origin)))
                        .allow_credentials(AllowCredentials::predicate(move |origin, _| {
                            for_credentials(origin)
                        })),
                )
            }
        }
    }
}

/// An allowed origin: `scheme://host[:port]`, where the host may be `*.example.com`. A port
/// must match exactly (browsers omit the scheme's default port from `Origin`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginPattern {
    scheme: String,
    domain: DomainPattern,
    port: Option<u16>,
}

impl OriginPattern {
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!(
                "CORS origin {s:?}: {why} (e.g. https://app.example.com or https://*.example.com)"
            )
        };
        if s.eq_ignore_ascii_case("null") {
            return Err(bad("the opaque origin null cannot be allowed"));
        }
        let (scheme, rest) = s.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return Err(bad("an origin has no path, query or user"));
        }
        let valid_scheme = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if !valid_scheme {
            return Err(bad("bad scheme"));
        }
        let (name, port) = split_authority(rest).ok_or_else(|| bad("bad port"))?;
        let domain = DomainPattern::parse(&name).map_err(|e| bad(&e))?;
        Ok(Self {
            scheme: scheme.to_ascii_lowercase(),
            domain,
            port,
        })
    }

    /// Whether the value of an `Origin` header matches.
    pub fn matches(&self, origin: &str) -> bool {
        let Some((scheme, rest)) = origin.split_once("://") else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case(&self.scheme) || rest.contains(['/', '?', '#', '@']) {
            return false;
        }
        split_authority(rest)
            .is_some_and(|(name, port)| port == self.port && self.domain.matches(&name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_wildcard_origins() {
        let CorsOrigins::List(list) = CorsOrigins::parse(
            "https://app.example.com, https://*.example.org http://localhost:3000",
        )
        .unwrap() else {
            panic!("a list");
        };
        let admits = |o: &str| list.iter().any(|p| p.matches(o));
        assert!(admits("https://app.example.com"));
        assert!(admits("HTTPS://APP.example.com"));
        assert!(!admits("http://app.example.com"), "the scheme must match");
        assert!(
            !admits("https://app.example.com:8443"),
            "the port must match"
        );
        assert!(!admits("https://app.example.com.evil.com"));
        assert!(admits("https://a.example.org"));
        assert!(admits("https://a.b.example.org"));
        assert!(
            !admits("https://example.org"),
            "the apex is not a subdomain"
        );
        assert!(!admits("https://evilexample.org"));
        assert!(admits("http://localhost:3000"));
        assert!(!admits("http://localhost"));
        assert!(!admits("null"));
        assert!(!admits("https://a.example.org/path"));
    }

    #[test]
    fn star_is_alone_and_bad_origins_are_refused() {
        assert_eq!(CorsOrigins::parse("*").unwrap(), CorsOrigins::Any);
        assert!(CorsOrigins::parse("*, https://a.com").is_err());
        assert!(CorsOrigins::parse("").is_err());
        assert!(CorsOrigins::parse("example.com").is_err());
        assert!(CorsOrigins::parse("null").is_err());
        assert!(CorsOrigins::parse("https://example.com/app").is_err());
        assert!(CorsOrigins::parse("https://example.com/").is_ok());
        assert!(CorsOrigins::SameOrigin.layer().is_none());
        assert!(CorsOrigins::Any.layer().is_some());
    }
}
