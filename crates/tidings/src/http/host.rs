//! The Host-header allow-list (`--allowed-hosts`), and the domain patterns it shares with CORS
//! origins: an exact name, or `*.example.com` for any subdomain of `example.com`. A request for a
//! host not on the list is answered `421 Misdirected Request` before any handler runs, which also
//! defeats DNS rebinding against a hub reachable from a browser.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// A domain name pattern: `example.com` (that name only) or `*.example.com` (any name ending in
/// `.example.com`, at any depth; not `example.com` itself). Names compare case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainPattern {
    Exact(String),
    /// The suffix, with its leading dot: `.example.com`.
    Subdomains(String),
}

impl DomainPattern {
    /// Parses `example.com`, `*.example.com`, `127.0.0.1` or `[::1]`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim().trim_end_matches('.').to_ascii_lowercase();
        if let Some(rest) = s.strip_prefix("*.") {
            check_name(rest)?;
            return Ok(Self::Subdomains(format!(".{rest}")));
        }
        check_name(&s)?;
        Ok(Self::Exact(s))
    }

    /// Whether `name` (already lower-case, without a trailing dot) matches.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Self::Exact(exact) => name == exact,
            Self::Subdomains(suffix) => {
                name.len() > suffix.len() && name.ends_with(suffix.as_str())
            }
        }
    }
}

fn check_name(name: &str) -> Result<(), String> {
    let bracketed = name.starts_with('[') && name.ends_with(']') && name.len() > 2;
    let valid = bracketed
        || (!name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a host name (e.g. example.com or *.example.com)"
        ))
    }
}

/// Splits `host[:port]` (the host may be a bracketed IPv6 literal) into the lower-case name,
/// without a trailing dot, and the port. `None` when the port is not a number.
pub fn split_authority(authority: &str) -> Option<(String, Option<u16>)> {
    let (name, port) = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let (name, rest) = authority.split_at(end + 1);
        match rest.strip_prefix(':') {
            Some(port) => (name, Some(port)),
            None if rest.is_empty() => (name, None),
            None => return None,
        }
    } else {
        match authority.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok()?),
        None => None,
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    Some((name, port))
}

/// One entry of the allow-list: a domain pattern, and a port when one is given
/// (`example.com:8443`); without a port any port matches. `*` alone admits every host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    domain: Option<DomainPattern>,
    port: Option<u16>,
}

impl HostPattern {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s == "*" {
            return Ok(Self {
                domain: None,
                port: None,
            });
        }
        let (name, port) = split_authority(s).ok_or_else(|| format!("{s:?}: bad port"))?;
        let domain = DomainPattern::parse(&name).map_err(|e| format!("allowed host {e}"))?;
        Ok(Self {
            domain: Some(domain),
            port,
        })
    }

    fn matches(&self, name: &str, port: Option<u16>) -> bool {
        self.domain.as_ref().is_none_or(|d| d.matches(name))
            && (self.port.is_none() || self.port == port)
    }
}

/// The allow-list: a request is served when its host matches one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHosts(Vec<HostPattern>);

impl AllowedHosts {
    /// Parses a list separated by commas or white space; an empty list is refused.
    pub fn parse(list: &str) -> Result<Self, String> {
        let patterns = split_list(list)
            .map(HostPattern::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if patterns.is_empty() {
            return Err("the list of allowed hosts is empty".into());
        }
        Ok(Self(patterns))
    }

    /// Whether `authority` (`host[:port]`, as in a Host header) is on the list.
    pub fn admits(&self, authority: &str) -> bool {
        split_authority(authority).is_some_and(|(name, port)| {
            !name.is_empty() && self.0.iter().any(|p| p.matches(&name, port))
        })
    }
}

/// Items of a list separated by commas or white space.
pub fn split_list(list: &str) -> impl Iterator<Item = &str> {
    list.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
}

/// Middleware on every request: refuses one with more than one Host header (400, as RFC 9112
/// asks: proxies and the hub could each pick a different one), then, with an allow-list, one
/// whose host is not on it (421). The host is the request target's authority when it has one
/// (absolute form), else the Host header.
pub async fn check_host(
    State(hosts): State<Option<Arc<AllowedHosts>>>,
    request: Request,
    next: Next,
) -> Response {
    let mut given = request.headers().get_all(header::HOST).iter();
    if given.next().is_some() && given.next().is_some() {
        return ApiError::bad("the request has more than one Host header").into_response();
    }
    let Some(hosts) = hosts else {
        return next.run(request).await;
    };
    let authority = match request.uri().authority() {
        Some(authority) => Some(authority.as_str()),
        None => request
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok()),
    };
    match authority {
        Some(authority) if hosts.admits(authority) => next.run(request).await,
        Some(authority) => ApiError::MisdirectedHost(authority.to_owned()).into_response(),
        None => ApiError::bad("the request names no host (send a Host header)").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_wildcard_and_port_entries() {
        let hosts = AllowedHosts::parse("hub.example.com, *.example.org  localhost:8080").unwrap();
        assert!(hosts.admits("hub.example.com"));
        assert!(hosts.admits("HUB.Example.com:443"));
        assert!(hosts.admits("hub.example.com."));
        assert!(!hosts.admits("evil.com"));
        assert!(!hosts.admits("hub.example.com.evil.com"));
        assert!(!hosts.admits("xhub.example.com"));
        assert!(hosts.admits("a.example.org"));
        assert!(hosts.admits("a.b.example.org:9000"));
        assert!(!hosts.admits("example.org"), "the apex is not a subdomain");
        assert!(!hosts.admits("badexample.org"));
        assert!(hosts.admits("localhost:8080"));
        assert!(!hosts.admits("localhost:8081"));
        assert!(!hosts.admits("localhost"));
        assert!(!hosts.admits(""));
        assert!(!hosts.admits("hub.example.com:http"));
    }

    #[test]
    fn ip_literals_and_star() {
        let hosts = AllowedHosts::parse("127.0.0.1,[::1]").unwrap();
        assert!(hosts.admits("127.0.0.1:8080"));
        assert!(hosts.admits("[::1]:8080"));
        assert!(hosts.admits("[::1]"));
        assert!(!hosts.admits("[::2]"));
        assert!(AllowedHosts::parse("*").unwrap().admits("anything:1"));
    }

    #[test]
    fn bad_lists_are_refused() {
        assert!(AllowedHosts::parse("").is_err());
        assert!(AllowedHosts::parse("exa mple.com/").is_err());
        assert!(AllowedHosts::parse("example.com:99999").is_err());
        assert!(AllowedHosts::parse("https://example.com").is_err());
        assert!(AllowedHosts::parse("*.").is_err());
    }
}
