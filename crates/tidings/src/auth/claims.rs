//! What a verified token grants, from either generation of Mercure tokens: the stable line's
//! `mercure` claim (`publish`/`subscribe` selector lists, `payload`), or the 1.0 draft's RFC 9068
//! access token with RFC 9396 `authorization_details` of type
//! `https://mercure.rocks/authorization-detail` (or `mercure`). A detail that does not parse
//! invalidates the whole token: partial acceptance would silently change what it grants.

use serde::Deserialize;
use serde_json::Value;
use tidings_core::selector::Selector;

use super::AuthError;

/// The `type` of a Mercure authorization detail: the 1.0 draft's as Mercure ships it, and the
/// spec text's short form.
pub const DETAIL_TYPES: [&str; 2] = ["https://mercure.rocks/authorization-detail", "mercure"];

/// Relative URL patterns in a token resolve against this when the hub has no resource
/// identifier (`--jwt-audience`) that is a URL; relative topics resolve against it too, so a
/// relative pattern still selects the hub's own relative topics (subscription events).
pub const DEFAULT_BASE: &str = "https://hub.invalid/.well-known/mercure";

/// Most `mercure` authorization details, and topics in each, a token may carry.
const MAX_DETAILS: usize = 100;
const MAX_TOPICS: usize = 100;

/// What a valid token grants.
#[derive(Debug, Clone, Default)]
pub struct Grant {
    pub publish: Vec<Selector>,
    pub subscribe: Vec<Selector>,
    /// `exp`, seconds since the Unix epoch.
    pub expires_at: Option<u64>,
    /// `sub`: names the subscriber in the active-subscriptions API.
    pub subject: Option<String>,
    /// Payloads (JSON text) for the subscription API, each with the selectors it applies to;
    /// the first whose selectors match a subscription's own selector wins.
    pub payloads: Vec<(Vec<Selector>, String)>,
}

impl Grant {
    /// The payload shown with a subscription to `selectors` (their source strings).
    pub fn payload_for(&self, selectors: &[&str]) -> Option<String> {
        self.payloads
            .iter()
            .find(|(scope, _)| {
                scope
                    .iter()
                    .any(|s| selectors.iter().any(|sel| s.matches(sel)))
            })
            .map(|(_, p)| p.clone())
    }
}

/// The claims Tidings reads; everything else is ignored.
#[derive(Deserialize)]
pub(super) struct Claims {
    #[serde(default)]
    mercure: Option<MercureClaim>,
    exp: Option<u64>,
    sub: Option<String>,
    #[serde(default)]
    authorization_details: Option<Vec<Value>>,
}

#[derive(Deserialize, Default)]
struct MercureClaim {
    #[serde(default)]
    publish: Option<Vec<String>>,
    #[serde(default)]
    subscribe: Option<Vec<String>>,
    #[serde(default)]
    payload: Option<Value>,
}

impl Claims {
    /// Whether this is a newer-draft access token (it carries `authorization_details`).
    pub(super) fn is_access_token(&self) -> bool {
        self.authorization_details.is_some()
    }

    /// What the token grants; `base` is the URL relative URL patterns resolve against.
    pub(super) fn into_grant(self, base: &str) -> Result<Grant, AuthError> {
        let mut grant = Grant {
            expires_at: self.exp,
            subject: self.sub,
            ..Grant::default()
        };
        if let Some(details) = self.authorization_details {
            read_details(details, base, &mut grant)?;
            return Ok(grant);
        }
        let mercure = self.mercure.unwrap_or_default();
        let selectors = |list: Option<Vec<String>>| -> Result<Vec<Selector>, AuthError> {
            list.unwrap_or_default()
                .iter()
                .map(|s| Selector::parse_topic(s))
                .collect::<Result<_, _>>()
                .map_err(|_| AuthError::Invalid("a selector in the mercure claim is invalid"))
        };
        grant.publish = selectors(mercure.publish)?;
        grant.subscribe = selectors(mercure.subscribe)?;
        if let Some(payload) = mercure.payload {
            grant
                .payloads
                .push((vec![Selector::Any], payload.to_string()));
        }
        Ok(grant)
    }
}

fn read_details(details: Vec<Value>, base: &str, grant: &mut Grant) -> Result<(), AuthError> {
    let invalid = AuthError::Invalid;
    let mercure: Vec<&Value> = details
        .iter()
        .filter(|d| {
            d.get("type")
                .and_then(Value::as_str)
                .is_some_and(|t| DETAIL_TYPES.contains(&t))
        })
        .collect();
    if mercure.len() > MAX_DETAILS {
        return Err(invalid("too many mercure authorization details"));
    }
    for detail in mercure {
        let actions = detail
            .get("actions")
            .and_then(Value::as_array)
            .filter(|a| !a.is_empty())
            .ok_or(invalid("a mercure authorization detail needs actions"))?;
        let (mut publish, mut subscribe) = (false, false);
        for action in actions {
            // The draft: an action the hub does not know grants nothing and is no error (so
            // issuers can add future actions); a non-string action is.
            match action.as_str() {
                Some("publish") => publish = true,
                Some("subscribe") => subscribe = true,
                Some(_) => {}
                None => {
                    return Err(invalid(
                        "an action in a mercure authorization detail is not a string",
                    ))
                }
            }
        }
        let topics = detail
            .get("topics")
            .and_then(Value::as_array)
            .filter(|t| !t.is_empty() && t.len() <= MAX_TOPICS)
            .ok_or(invalid(
                "a mercure authorization detail needs 1 to 100 topics",
            ))?;
        let selectors = topics
            .iter()
            .map(|t| topic_matcher(t, base))
            .collect::<Result<Vec<_>, _>>()?;
        let payload = match detail.get("payload") {
            None => None,
            Some(p) if p.is_object() => Some(p.to_string()),
            Some(_) => return Err(invalid("a payload must be a JSON object")),
        };
        if publish {
            grant.publish.extend(selectors.iter().cloned());
        }
        if subscribe {
            if let Some(payload) = payload {
                grant.payloads.push((selectors.clone(), payload));
            }
            grant.subscribe.extend(selectors);
        }
    }
    Ok(())
}

/// A topic matcher object: `{"match": "...", "match_type": "exact" | "urlpattern"}` (the 1.0
/// draft) or `{"match": "...", "matchType": "Exact" | "URLPattern"}` (an earlier state of it);
/// without either member the matcher is exact. A matcher type the hub does not support
/// invalidates the token, as the draft requires. `*` matches every topic, whatever the type.
/// Relative URL patterns resolve against `base`, the hub's resource identifier.
fn topic_matcher(value: &Value, base: &str) -> Result<Selector, AuthError> {
    let invalid = || AuthError::Invalid("a topic matcher in the token is invalid");
    let matcher = value
        .get("match")
        .and_then(Value::as_str)
        .ok_or_else(invalid)?;
    let kind = |member: &str| -> Result<Option<MatcherType>, AuthError> {
        match value.get(member) {
            None => Ok(None),
            Some(Value::String(t)) => match (member, t.as_str()) {
                ("match_type", "exact") | ("matchType", "Exact") => Ok(Some(MatcherType::Exact)),
                ("match_type", "urlpattern") | ("matchType", "URLPattern") => {
                    Ok(Some(MatcherType::UrlPattern))
                }
                _ => Err(AuthError::Invalid(
                    "unsupported match_type in the token (this hub supports exact and urlpattern)",
                )),
            },
            Some(_) => Err(invalid()),
        }
    };
    let kind = match (kind("match_type")?, kind("matchType")?) {
        (Some(a), Some(b)) if a != b => return Err(invalid()),
        (a, b) => a.or(b).unwrap_or(MatcherType::Exact),
    };
    match kind {
        MatcherType::Exact => Selector::parse_exact(matcher),
        MatcherType::UrlPattern => Selector::parse_url_pattern_with_base(matcher, base),
    }
    .map_err(|_| invalid())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum MatcherType {
    Exact,
    UrlPattern,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn grant(claims: Value) -> Result<Grant, AuthError> {
        serde_json::from_value::<Claims>(claims)
            .unwrap()
            .into_grant("https://hub.example.com/.well-known/mercure")
    }

    #[test]
    fn stable_claims() {
        let g = grant(
            json!({"mercure": {"publish": ["jobs/{id}"], "subscribe": ["*"],
                                           "payload": {"u": 1}}, "sub": "alice"}),
        )
        .unwrap();
        assert!(g.publish[0].matches("jobs/1"));
        assert!(g.subscribe[0].matches("anything"));
        assert_eq!(g.subject.as_deref(), Some("alice"));
        assert_eq!(g.payload_for(&["x"]).as_deref(), Some(r#"{"u":1}"#));
    }

    /// The earlier draft's form Tidings read before: `type: mercure`, `matchType`.
    #[test]
    fn earlier_draft_details() {
        let g = grant(json!({"authorization_details": [
            {"type": "other", "whatever": true},
            {"type": "mercure", "actions": ["subscribe"],
             "topics": [{"match": "https://example.com/books/1"},
                        {"match": "https://example.com/users/:id", "matchType": "URLPattern"}],
             "payload": {"tenant": "a"}},
            {"type": "mercure", "actions": ["publish", "subscribe"], "topics": [{"match": "*"}]}
        ]}))
        .unwrap();
        assert_eq!(g.subscribe.len(), 3);
        assert_eq!(g.publish.len(), 1);
        assert!(g.subscribe[1].matches("https://example.com/users/7"));
        assert_eq!(
            g.payload_for(&["https://example.com/books/1"]).as_deref(),
            Some(r#"{"tenant":"a"}"#)
        );
    }

    /// The 1.0 draft's token as Mercure's own tools mint it (the conformance demo's token).
    #[test]
    fn the_drafts_token() {
        let g = grant(json!({
            "iss": "https://localhost",
            "aud": "https://localhost/.well-known/mercure",
            "exp": 4102444800u64,
            "authorization_details": [
                {"type": "https://mercure.rocks/authorization-detail", "actions": ["publish"],
                 "topics": [{"match": "*"}]},
                {"type": "https://mercure.rocks/authorization-detail", "actions": ["subscribe"],
                 "topics": [
                    {"match": "https://example.com/my-private-topic"},
                    {"match": "https://example.com/demo/books/:id.jsonld", "match_type": "urlpattern"},
                    {"match": "/.well-known/mercure/subscriptions{/:matchType}?{/:match}?{/:subscriber}?",
                     "match_type": "urlpattern"}
                 ],
                 "payload": {"user": "https://example.com/users/dunglas", "remoteAddr": "127.0.0.1"}}
            ]
        }))
        .unwrap();
        assert!(g.publish[0].matches("anything at all"));
        assert!(g.subscribe[0].matches("https://example.com/my-private-topic"));
        assert!(!g.subscribe[0].matches("https://example.com/my-private-topic/2"));
        assert!(g.subscribe[1].matches("https://example.com/demo/books/1.jsonld"));
        assert!(!g.subscribe[1].matches("https://example.com/demo/books/1.json"));
        assert!(g.subscribe[2].matches("/.well-known/mercure/subscriptions"));
        assert!(g.subscribe[2].matches("/.well-known/mercure/subscriptions/exact/a%2Fb/urn%3Ax"));
        assert_eq!(
            g.payload_for(&["https://example.com/demo/books/:id.jsonld"])
                .as_deref(),
            Some(r#"{"remoteAddr":"127.0.0.1","user":"https://example.com/users/dunglas"}"#)
        );
    }

    /// The draft's example: routing may select every book, the token reads only books 1 and 7.
    #[test]
    fn the_drafts_subscriber_example() {
        let g = grant(json!({"authorization_details": [
            {"type": "mercure", "actions": ["subscribe"], "topics": [
                {"match": "https://example.com/books/1", "match_type": "exact"},
                {"match": "https://example.com/books/7", "match_type": "exact"}]}
        ]}))
        .unwrap();
        let may = |t: &str| g.subscribe.iter().any(|s| s.matches(t));
        assert!(may("https://example.com/books/1") && may("https://example.com/books/7"));
        assert!(!may("https://example.com/books/2"));
        assert!(g.publish.is_empty());
    }

    /// The draft's payload example: the first detail whose topics match the subscription's own
    /// matcher gives its payload; `*` is the default.
    #[test]
    fn the_drafts_payload_example() {
        let g = grant(json!({"authorization_details": [
            {"type": "mercure", "actions": ["subscribe"],
             "topics": [{"match": "https://example.com/foo"}],
             "payload": {"custom1": "data only available for this topic"}},
            {"type": "mercure", "actions": ["subscribe"],
             "topics": [{"match": "https://example.com/bar/:id", "match_type": "urlpattern"}],
             "payload": {"custom2": "data available for matching subscriptions"}},
            {"type": "mercure", "actions": ["subscribe"], "topics": [{"match": "*"}],
             "payload": {"custom3": "default data for all other subscriptions"}}
        ]}))
        .unwrap();
        let payload = |m: &str| g.payload_for(&[m]).unwrap();
        assert!(payload("https://example.com/foo").contains("custom1"));
        assert!(payload("https://example.com/bar/:id").contains("custom2"));
        assert!(payload("https://example.com/bar/1").contains("custom2"));
        assert!(payload("https://example.com/other").contains("custom3"));
    }

    #[test]
    fn unknown_actions_grant_nothing_but_do_not_invalidate() {
        let g = grant(json!({"authorization_details": [
            {"type": "mercure", "actions": ["read", "subscribe"], "topics": [{"match": "a"}]},
            {"type": "mercure", "actions": ["future"], "topics": [{"match": "b"}]}
        ]}))
        .unwrap();
        assert_eq!(g.subscribe.len(), 1);
        assert!(g.publish.is_empty());
    }

    #[test]
    fn a_bad_detail_invalidates_the_token() {
        let t = "https://mercure.rocks/authorization-detail";
        for details in [
            json!([{"type": "mercure", "actions": [], "topics": [{"match": "a"}]}]),
            json!([{"type": "mercure", "actions": [3], "topics": [{"match": "a"}]}]),
            json!([{"type": "mercure", "actions": ["subscribe"], "topics": []}]),
            json!([{"type": "mercure", "actions": ["subscribe"], "topics": ["a"]}]),
            json!([{"type": t, "actions": ["subscribe"], "topics": [{"match": null}]}]),
            json!([{"type": "mercure", "actions": ["subscribe"],
                    "topics": [{"match": "a", "matchType": "Regex"}]}]),
            // An unsupported match_type rejects the token, even with the wildcard.
            json!([{"type": t, "actions": ["subscribe"],
                    "topics": [{"match": "a", "match_type": "uritemplate"}]}]),
            json!([{"type": t, "actions": ["subscribe"],
                    "topics": [{"match": "*", "match_type": "regex"}]}]),
            // Case-sensitive: the draft's names are lower-case.
            json!([{"type": t, "actions": ["subscribe"],
                    "topics": [{"match": "a", "match_type": "URLPattern"}]}]),
            json!([{"type": t, "actions": ["subscribe"],
                    "topics": [{"match": "a", "match_type": "exact", "matchType": "URLPattern"}]}]),
            json!([{"type": t, "actions": ["subscribe"],
                    "topics": [{"match": "http://]", "match_type": "urlpattern"}]}]),
            json!([{"type": "mercure", "actions": ["subscribe"], "topics": [{"match": "a"}],
                    "payload": 3}]),
        ] {
            assert!(
                grant(json!({"authorization_details": details.clone()})).is_err(),
                "{details}"
            );
        }
    }
}
