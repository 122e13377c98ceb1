//! The hub's reserved topic namespace (Mercure 1.0 draft): topics whose path, once resolved
//! against the hub's URL, is the hub's own path or under it (`/.well-known/mercure/...`) belong to
//! events the hub makes itself (subscription events), so a publisher may not forge them.

use url::Url;

/// Whether `topic`, resolved against `hub` (the hub's URL), addresses the hub's namespace. Dot
/// segments are removed and percent-encoded unreserved characters decoded first, so
/// `/.well-known/%6Dercure/x` and `/.well-known/mercure/../mercure/x` are caught; a topic that
/// is no URL reference (or `hub` that is no URL) addresses nothing.
pub fn in_hub_namespace(topic: &str, hub: &str) -> bool {
    let (Ok(hub), Some(_)) = (Url::parse(hub), topic.chars().next()) else {
        return false;
    };
    let Ok(resolved) = hub.join(topic) else {
        return false;
    };
    let Ok(resolved) = Url::parse(&decode_unreserved(resolved.as_str())) else {
        return false;
    };
    let base = hub.path().trim_end_matches('/');
    let path = resolved.path();
    path == base
        || path
            .strip_prefix(base)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// `s` with every percent-encoded RFC 3986 unreserved character decoded.
fn decode_unreserved(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(c) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
                    out.push(char::from(c));
                    i += 3;
                    continue;
                }
            }
        }
        // Safe to slice: `%` is ASCII, so `i` is always on a character boundary here.
        let ch = s[i..].chars().next().unwrap_or('\u{fffd}');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HUB: &str = "https://hub.example.com/.well-known/mercure";

    #[test]
    fn the_hubs_namespace_is_found_however_it_is_spelled() {
        for topic in [
            "/.well-known/mercure",
            "/.well-known/mercure/subscriptions/exact/a/b",
            "https://hub.example.com/.well-known/mercure/subscriptions/x",
            "https://elsewhere.example/.well-known/mercure/x",
            "/.well-known/%6Dercure/x",
            "/.well-known/mercure/../mercure/x",
            "/a/../.well-known/mercure/x",
            "mercure/x",
        ] {
            assert!(in_hub_namespace(topic, HUB), "{topic}");
        }
        for topic in [
            "jobs/1",
            "https://example.com/books/1",
            "/.well-known/mercurey",
            "/.well-known/mercure%2Fx",
            "urn:uuid:1",
            "*x",
            "",
            "%",
        ] {
            assert!(!in_hub_namespace(topic, HUB), "{topic}");
        }
    }
}
