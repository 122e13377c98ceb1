//! The hub's reserved topic namespace (Mercure 1.0 draft): topics whose path, once resolved
//! against the hub's URL, is the hub's own path or under it (`/.well-known/mercure/...`) belong to
//! events the hub makes itself (subscription events), so a publisher may not forge them.

use url::Url;

/// Whether `topic`, resolved against `hub` (the hub's URL), addresses the hub's namespace. Dot
/// segments are removed and percent-encoded unreserved characters decoded first, so
/// `/.well-known/%6Dercure/x` and `/.well-known/mercure/../mercure/x` are caught; a topic that
/// is no URL reference (or `hub` that is no URL) addresses nothing.
pub fn in_hub_namespace(topic: &str, hub: &str) -> bool {
    !cannot_reach(topic, hub) && resolves_into(topic, hub)
}

/// Whether `topic`, resolved against `hub` and normalized, is `hub`'s path or under it.
fn resolves_into(topic: &str, hub: &str) -> bool {
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

/// Whether `topic` surely resolves outside the namespace, told without parsing either URL (most
/// topics, on every publish). A resolved path under the hub's path `…/dir/last` must hold the
/// segment `last` at the depth of the hub's own: resolution merges the topic's path with the
/// hub's directory (`…/dir/`), and removing dot segments only shortens that directory, so
/// `last` can come only from the topic itself. It cannot come from an escape when the topic
/// holds no `%`, nor from characters the URL parser drops (tabs and line breaks). A topic of
/// only a query or a fragment keeps the hub's whole path, so it is never answered here.
fn cannot_reach(topic: &str, hub: &str) -> bool {
    let Some((_, rest)) = hub.split_once("://") else {
        return false;
    };
    let Some(slash) = rest.find('/') else {
        return false;
    };
    let path = rest[slash..].split(['?', '#']).next().unwrap_or("");
    let last = path.rsplit('/').next().unwrap_or("");
    !last.is_empty()
        && !last.contains('%')
        && !topic.starts_with(['?', '#'])
        && !topic.contains(['%', '\t', '\n', '\r'])
        && !topic.contains(last)
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
            "?x",
            "#x",
            "/.well-known/mer\tcure/x",
            "/.well-known/mer\ncure",
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
            "/.well-known/x/../mercur",
        ] {
            assert!(!in_hub_namespace(topic, HUB), "{topic}");
        }
    }

    /// The quick answer never differs from resolving the URLs, whatever the topic and hub.
    #[test]
    fn the_quick_answer_agrees_with_resolution() {
        let hubs = [
            HUB,
            "https://hub.example.com/",
            "https://hub.example.com",
            "https://hub.example.com/a/mercure/mercure",
            "http://h/hub?x=1",
        ];
        let parts = [
            "", "/", ".", "..", "mercure", "mercur", "e", "a", "?", "#", "hub", "x",
        ];
        for hub in hubs {
            for a in parts {
                for b in parts {
                    for c in parts {
                        let topic = format!("{a}{b}/{c}");
                        let resolved = resolves_into(&topic, hub);
                        if cannot_reach(&topic, hub) {
                            assert!(!resolved, "{topic} on {hub}");
                        }
                        assert_eq!(in_hub_namespace(&topic, hub), resolved, "{topic} on {hub}");
                    }
                }
            }
        }
    }
}
