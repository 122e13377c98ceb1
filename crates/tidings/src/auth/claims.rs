//! What a verified token grants, from either generation of Mercure tokens: the stable line's
//! `mercure` claim (`publish`/`subscribe` selector lists, `payload`), or the newer draft's RFC 9068
//! access token with RFC 9396 `authorization_details` of type `mercure`. A detail that does not
//! parse invalidates the whole token: partial acceptance would silently change what it grants.

use serde::Deserialize;
use serde_json::Value;
use tidings_core::selector::Selector;

use super::AuthError;

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

    pub(super) fn into_grant(self) -> Result<Grant, AuthError> {
        let mut grant = Grant {
            expires_at: self.exp,
            subject: self.sub,
            ..Grant::default()
        };
        if let Some(details) = self.authorization_details {
            read_details(details, &mut grant)?;
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

fn read_details(details: Vec<Value>, grant: &mut Grant) -> Result<(), AuthError> {
    let invalid = AuthError::Invalid;
    let mercure: Vec<&Value> = details
        .iter()
        .filter(|d| d.get("type").and_then(Value::as_str) == Some("mercure"))
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
            match action.as_str() {
                Some("publish") => publish = true,
                Some("subscribe") => subscribe = true,
                _ => return Err(invalid("unknown action in a mercure authorization detail")),
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
            .map(topic_matcher)
            .collect::<Result<Vec<_>, _>>()?;
        if publish {
            grant.publish.extend(selectors.iter().cloned());
        }
        if subscribe {
            if let Some(payload) = detail.get("payload") {
                if !payload.is_object() {
                    return Err(invalid("a payload must be a JSON object"));
                }
                grant
                    .payloads
                    .push((selectors.clone(), payload.to_string()));
            }
            grant.subscribe.extend(selectors);
        }
    }
    Ok(())
}

/// `{"match": "...", "matchType": "Exact" | "URLPattern"}`; `*` matches every topic.
fn topic_matcher(value: &Value) -> Result<Selector, AuthError> {
    let invalid = || AuthError::Invalid("a topic matcher in the token is invalid");
    let matcher = value
        .get("match")
        .and_then(Value::as_str)
        .ok_or_else(invalid)?;
    if matcher == "*" {
        return Ok(Selector::Any);
    }
    match value.get("matchType").map(|t| t.as_str()) {
        None | Some(Some("Exact")) => Selector::parse_exact(matcher).map_err(|_| invalid()),
        Some(Some("URLPattern")) => Selector::parse_url_pattern(matcher).map_err(|_| invalid()),
        _ => Err(invalid()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn grant(claims: Value) -> Result<Grant, AuthError> {
        serde_json::from_value::<Claims>(claims)
            .unwrap()
            .into_grant()
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

    #[test]
    fn authorization_details() {
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

    #[test]
    fn a_bad_detail_invalidates_the_token() {
        for details in [
            json!([{"type": "mercure", "actions": [], "topics": [{"match": "a"}]}]),
            json!([{"type": "mercure", "actions": ["read"], "topics": [{"match": "a"}]}]),
            json!([{"type": "mercure", "actions": ["subscribe"], "topics": []}]),
            json!([{"type": "mercure", "actions": ["subscribe"], "topics": ["a"]}]),
            json!([{"type": "mercure", "actions": ["subscribe"],
                    "topics": [{"match": "a", "matchType": "Regex"}]}]),
            json!([{"type": "mercure", "actions": ["subscribe"], "topics": [{"match": "a"}],
                    "payload": 3}]),
        ] {
            assert!(grant(json!({"authorization_details": details})).is_err());
        }
    }
}
