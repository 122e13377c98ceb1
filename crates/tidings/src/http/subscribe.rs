//! Subscribing over SSE: `GET /.well-known/mercure` (Mercure's `topic`, and the newer draft's
//! `match` / `match_urlpattern`) and `GET /events/{topic}`. The query parameters are shared with
//! the polling fallback.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use axum::Extension;
use bytes::Bytes;
use tidings_core::event::{EventId, EventType};
use tidings_core::fanout::{Interest, Presence};
use tidings_core::hub::Start;
use tidings_core::log::LogError;
use tidings_core::selector::{PatternKey, Selector, SelectorCache};

use super::error::ApiError;
use super::rate::Publisher;
use super::Limits;
use super::{form, link_header, presence, AppState};
use crate::net::{client_key, LiveStream, SelectorGuard, Takeover};

/// Most `type` and `until` parameters in one request.
const MAX_TYPE_FILTERS: usize = 64;

/// Everything a subscribe or poll request asks for.
pub struct Request {
    pub interest: Interest,
    pub start: Start,
    /// Parameters this parser does not own (`after`, `wait`, `limit` for polling).
    pub rest: Vec<(String, String)>,
    /// The `authorization` query parameter (a token, for clients that cannot set headers).
    pub token: Option<String>,
    /// When the subscriber's token expires, seconds since the Unix epoch.
    pub expires_at: Option<u64>,
    /// Whether the subscriber used the 1.0 draft's `match` parameters.
    pub draft: bool,
}

/// The client address of a request served by our accept loop (unspecified otherwise).
pub fn peer_ip(connect: Option<Extension<ConnectInfo<SocketAddr>>>) -> IpAddr {
    connect.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0 .0.ip())
}

/// Counts the pattern selectors a subscribe or poll request names against what `peer`'s live
/// subscriptions may hold, for as long as the guard lives: 429 past `--max-patterns-per-ip` or
/// `--max-pattern-bytes-per-ip`. It runs, with the per-request checks, before any selector is
/// compiled, so a refused request costs the hub no compiling.
pub fn hold_patterns(
    state: &AppState,
    query: Option<&str>,
    path_topic: Option<&str>,
    peer: IpAddr,
) -> Result<SelectorGuard, ApiError> {
    let pairs = form::pairs(query.unwrap_or("").as_bytes())?;
    check_selectors(&pairs, path_topic, &state.limits)?;
    let mut patterns = Vec::new();
    if path_topic.is_none() {
        // What `SelectorCache::parse_topic` and `parse_url_pattern` would make of them.
        for (name, value) in pairs {
            match name.as_str() {
                "topic" | "match" | "match_exact" | "match_urlpattern" | "matchURLPattern"
                    if value == "*" =>
                {
                    patterns.push(PatternKey::Any)
                }
                "topic" if value.contains('{') => patterns.push(PatternKey::Template(value.into())),
                "match_urlpattern" | "matchURLPattern" => {
                    patterns.push(PatternKey::UrlPattern(value.into(), None))
                }
                _ => {}
            }
        }
    }
    state.selector_budget.try_hold(peer, patterns)
}

impl Request {
    /// Applies the subscriber's token: its `mercure.subscribe` selectors decide which private
    /// events it may receive.
    pub async fn authorize(
        &mut self,
        state: &AppState,
        headers: &HeaderMap,
    ) -> Result<(), ApiError> {
        let token = state.auth.token(headers, self.token.as_deref());
        let grant = state.auth.subscriber(token).await?;
        let sources: Vec<&str> = self.interest.selectors.iter().map(|s| s.source()).collect();
        let payload = grant.payload_for(&sources);
        self.interest.private_selectors = grant.subscribe;
        self.expires_at = grant.expires_at;
        // Mercure: the subscriber id comes only from what the hub verified (the token's `sub`),
        // or the hub makes one.
        let subscriber = grant
            .subject
            .unwrap_or_else(|| EventId::generate().to_string());
        let match_types = self.draft.then(|| {
            let kinds: Vec<&'static str> = self
                .interest
                .selectors
                .iter()
                .map(presence::match_type)
                .collect();
            kinds.into()
        });
        self.interest.presence = Some(Presence {
            subscriber: subscriber.into(),
            payload: payload.map(Into::into),
            match_types,
        });
        Ok(())
    }
}

fn flag(value: &str) -> Result<bool, ApiError> {
    match value {
        "" | "1" | "true" | "on" | "yes" => Ok(true),
        "0" | "false" | "off" | "no" => Ok(false),
        other => Err(ApiError::bad(format!(
            "expected true or false, got {other:?}"
        ))),
    }
}

/// Checks a request's selectors against `--max-selectors`, `--max-selector-bytes` and
/// `--max-patterns` before any is compiled.
fn check_selectors(
    pairs: &[(String, String)],
    path_topic: Option<&str>,
    limits: &Limits,
) -> Result<(), ApiError> {
    let (mut given, mut bytes, mut patterns) = (0usize, 0usize, 0usize);
    if let Some(topic) = path_topic {
        given += 1;
        bytes += topic.len();
    }
    for (name, value) in pairs {
        let pattern = match name.as_str() {
            "topic" => value == "*" || value.contains('{'),
            "match_urlpattern" | "matchURLPattern" => true,
            "match" | "match_exact" => value == "*",
            _ => continue,
        };
        given += 1;
        bytes += value.len();
        patterns += usize::from(pattern);
    }
    if given > limits.max_selectors {
        return Err(ApiError::bad(format!(
            "too many topic selectors: {given}, more than --max-selectors ({})",
            limits.max_selectors
        )));
    }
    if bytes > limits.max_selector_bytes {
        return Err(ApiError::bad(format!(
            "topic selectors take {bytes} bytes, more than --max-selector-bytes ({})",
            limits.max_selector_bytes
        )));
    }
    if patterns > limits.max_patterns {
        return Err(ApiError::bad(format!(
            "too many pattern selectors (*, templates, URL patterns): {patterns}, more than \
             --max-patterns ({})",
            limits.max_patterns
        )));
    }
    Ok(())
}

/// Parses the query (and the `Last-Event-ID` header) of a subscribe or poll request.
/// `path_topic` is the topic named by `/events/{topic}`, if any. Templates and URL patterns
/// are compiled through `cache`, so identical ones share their compiled form.
pub fn parse_request(
    query: Option<&str>,
    headers: &HeaderMap,
    path_topic: Option<&str>,
    limits: &Limits,
    cache: &SelectorCache,
) -> Result<Request, ApiError> {
    let mut selectors = Vec::new();
    if let Some(topic) = path_topic {
        // The path names one topic. `*` would be the wildcard (every topic), which is a
        // selector of the query, counted among the patterns there.
        if topic == tidings_core::selector::WILDCARD {
            return Err(ApiError::bad(
                "the path names one topic; subscribe to every topic with ?topic=*",
            ));
        }
        selectors.push(Selector::parse_exact(topic)?);
    }
    let mut types = Vec::new();
    let mut until = Vec::new();
    let mut last_event_id: Option<String> = None;
    let mut latest = false;
    let mut token = None;
    let mut rest = Vec::new();
    let pairs = form::pairs(query.unwrap_or("").as_bytes())?;
    // Count before parsing: each selector may compile a regex.
    let is_selector = |n: &str| {
        matches!(
            n,
            "topic" | "match" | "match_exact" | "match_urlpattern" | "matchURLPattern"
        )
    };
    check_selectors(&pairs, path_topic, limits)?;
    let filters = pairs
        .iter()
        .filter(|(n, _)| n == "type" || n == "until")
        .count();
    if filters > MAX_TYPE_FILTERS {
        return Err(ApiError::bad(format!(
            "too many type and until parameters: {filters} (at most {MAX_TYPE_FILTERS})"
        )));
    }
    let draft = pairs
        .iter()
        .any(|(n, _)| n.starts_with("match") && path_topic.is_none());
    for (name, value) in pairs {
        match name.as_str() {
            "topic" if path_topic.is_none() => selectors.push(cache.parse_topic(&value)?),
            "match" | "match_exact" if path_topic.is_none() => {
                selectors.push(Selector::parse_exact(&value)?)
            }
            "match_urlpattern" | "matchURLPattern" if path_topic.is_none() => {
                // A relative pattern (the draft's `/.well-known/mercure/subscriptions/...`)
                // resolves against a base URL, and so do the relative topics it is matched with.
                let selector = match cache.parse_url_pattern(&value) {
                    Err(_) if value.starts_with('/') => {
                        Selector::parse_url_pattern_with_base(&value, crate::auth::DEFAULT_BASE)?
                    }
                    other => other?,
                };
                selectors.push(selector)
            }
            n if is_selector(n) => {
                return Err(ApiError::bad(
                    "this endpoint's topic is its path; topic and match parameters are not allowed",
                ))
            }
            n if n.to_ascii_lowercase().starts_with("match") => {
                return Err(ApiError::bad(format!(
                    "unsupported matcher parameter {n:?}"
                )))
            }
            "type" => types.push(EventType::parse(&value)?),
            "until" => until.push(EventType::parse(&value)?),
            "lastEventID" | "last_event_id" | "Last-Event-ID" => {
                last_event_id.get_or_insert(value);
            }
            "latest" => latest = flag(&value)?,
            // `access_token` is RFC 6750's (and the 1.0 draft's) name for it.
            "authorization" | "access_token" => token = Some(value),
            _ => rest.push((name, value)),
        }
    }
    if selectors.is_empty() {
        return Err(ApiError::bad(
            "missing topic: give at least one topic, match or match_urlpattern parameter",
        ));
    }
    // The header takes precedence over the query parameters, as Mercure asks.
    let header_id = headers
        .get("last-event-id")
        .map(|v| {
            // Browsers send the id back as UTF-8, which `to_str` (visible ASCII only) refuses.
            std::str::from_utf8(v.as_bytes())
                .map(str::to_owned)
                .map_err(|_| ApiError::bad("Last-Event-ID header is not valid UTF-8"))
        })
        .transpose()?
        .filter(|v| !v.is_empty());
    let start = match header_id.or(last_event_id) {
        Some(id) => Start::from_last_event_id(&id),
        None if latest => Start::Latest,
        None => Start::Live,
    };
    Ok(Request {
        interest: Interest {
            selectors,
            types: (!types.is_empty()).then_some(types),
            private_selectors: Vec::new(),
            presence: None,
            until: (!until.is_empty()).then_some(until),
        },
        start,
        rest,
        token,
        expires_at: None,
        draft,
    })
}

/// `GET /.well-known/mercure`.
pub async fn subscribe(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
    takeover: Option<Extension<Takeover>>,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let peer = connect.as_ref().map(|c| c.0 .0);
    let held = hold_patterns(&state, query.as_deref(), None, peer_ip(connect))?;
    let limits = &state.limits;
    let mut request = parse_request(query.as_deref(), &headers, None, limits, &state.selectors)?;
    request.authorize(&state, &headers).await?;
    stream(&state, request, held, takeover.map(|t| t.0), peer).await
}

/// `GET /events/{topic}`.
pub async fn subscribe_to_path(
    State(state): State<Arc<AppState>>,
    Path(topic): Path<String>,
    RawQuery(query): RawQuery,
    takeover: Option<Extension<Takeover>>,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let peer = connect.as_ref().map(|c| c.0 .0);
    let held = hold_patterns(&state, query.as_deref(), Some(&topic), peer_ip(connect))?;
    let (limits, cache) = (&state.limits, &state.selectors);
    let mut request = parse_request(query.as_deref(), &headers, Some(&topic), limits, cache)?;
    request.authorize(&state, &headers).await?;
    stream(&state, request, held, takeover.map(|t| t.0), peer).await
}

async fn stream(
    state: &AppState,
    request: Request,
    held: SelectorGuard,
    takeover: Option<Takeover>,
    peer: Option<SocketAddr>,
) -> Result<Response, ApiError> {
    // With subscription events, what the stream's start and end events announce.
    let announce = match (&request.interest.presence, state.subscription_events) {
        (Some(presence), true) => {
            let selectors: Vec<String> = request
                .interest
                .selectors
                .iter()
                .map(|s| s.source().to_owned())
                .collect();
            Some((selectors, presence.clone()))
        }
        _ => None,
    };
    if let (Some(_), Some(limiter)) = (&announce, &state.subscription_rate) {
        // Each stream writes durable events (its start, then its end), so an address may start
        // streams only at the publish rate; anyone may subscribe, so there is no token to key
        // the bucket by. Refused before anything is registered or written.
        let ip = peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.ip());
        limiter
            .take(Publisher::Client(client_key(ip)), Instant::now())
            .map_err(|wait| ApiError::SubscriptionRateLimited { retry_after: wait })?;
    }
    let mut subscription = state.hub.subscribe(request.interest, request.start).await?;
    // The guard that announces the end exists only once the stream does: a refused stream
    // announces nothing.
    let departure = announce.map(|(selectors, presence)| presence::Departure {
        hub: state.hub.clone(),
        selectors,
        presence,
    });
    if let Some(d) = &departure {
        state
            .hub
            .publish(presence::events(&d.selectors, &d.presence, true))
            .await?;
    }
    if let Some(exp) = request.expires_at {
        // The stream ends when the token expires; the client reconnects with a fresh one and
        // resumes by Last-Event-ID without loss. The leeway only let the token in despite clock
        // skew: it does not extend what an expired token receives, so a token accepted within
        // the leeway but already past `exp` gets a stream that ends at once.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let left = std::time::Duration::from_secs(exp).saturating_sub(now);
        subscription.end_after(left);
    }
    // Ids have no control characters, so their UTF-8 bytes are a valid (obs-text) header value.
    let start_id = HeaderValue::from_bytes(subscription.start_id().as_bytes())
        .map_err(|_| ApiError::Internal("stored id is not a valid header value".into()))?;
    let (link_name, link_value) = link_header();
    let body = match takeover {
        // Served by our own accept loop: the live part of the stream is written straight from
        // the fan-out to the socket (see `net::live`).
        Some(takeover) => Body::new(SseBody {
            live: Some(LiveStream {
                subscription,
                guard: Some(Box::new((departure, held))),
            }),
            takeover,
        }),
        None => Body::from_stream(Guarded {
            inner: subscription,
            _guard: (departure, held),
        }),
    };
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    h.insert(HeaderName::from_static("last-event-id"), start_id.clone());
    h.insert(HeaderName::from_static("mercure-last-event-id"), start_id);
    h.insert(link_name, HeaderValue::from_static(link_value));
    Ok(response)
}

/// The body of an SSE response served by our accept loop: the preamble and the history replay
/// as data frames, then, once live, the subscription is handed to the connection, and the body
/// yields nothing more (hyper drops it with the rest of its state). The connection then writes
/// HTTP/1.1 chunks itself, so no layer may re-encode this body (compression, say).
struct SseBody {
    live: Option<LiveStream>,
    takeover: Takeover,
}

impl hyper::body::Body for SseBody {
    type Data = Bytes;
    type Error = LogError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, LogError>>> {
        use std::task::Poll;
        let this = self.get_mut();
        let Some(live) = &mut this.live else {
            return Poll::Pending;
        };
        if live.subscription.is_live() {
            if let Some(live) = this.live.take() {
                this.takeover.offer(live);
            }
            return Poll::Pending;
        }
        match futures_util::ready!(futures_util::Stream::poll_next(
            std::pin::Pin::new(&mut live.subscription),
            cx
        )) {
            Some(Ok(bytes)) => Poll::Ready(Some(Ok(hyper::body::Frame::data(bytes)))),
            Some(Err(e)) => Poll::Ready(Some(Err(e))),
            None => Poll::Ready(None),
        }
    }
}

/// A stream that holds `_guard` for as long as the response body lives.
struct Guarded<S, G> {
    inner: S,
    _guard: G,
}

impl<S: futures_util::Stream + Unpin, G: Unpin> futures_util::Stream for Guarded<S, G> {
    type Item = S::Item;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::pin::Pin::new(&mut self.inner).poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(query: &str) -> Result<Request, ApiError> {
        let cache = SelectorCache::default();
        parse_request(
            Some(query),
            &HeaderMap::new(),
            None,
            &Limits::default(),
            &cache,
        )
    }

    #[test]
    fn selectors_of_both_generations() {
        let r = parse("topic=a&topic=jobs/{id}&match=b&type=done").unwrap();
        assert_eq!(r.interest.selectors.len(), 3);
        assert_eq!(r.interest.types.as_ref().unwrap().len(), 1);
        assert_eq!(r.start, Start::Live);
    }

    #[test]
    fn last_event_id_sources_and_precedence() {
        assert_eq!(
            parse("topic=a&lastEventID=x").unwrap().start,
            Start::After("x".into())
        );
        assert_eq!(
            parse("topic=a&last_event_id=earliest").unwrap().start,
            Start::Earliest
        );
        assert_eq!(parse("topic=a&latest=1").unwrap().start, Start::Latest);
        let mut headers = HeaderMap::new();
        headers.insert("last-event-id", HeaderValue::from_static("h"));
        let r = parse_request(
            Some("topic=a&lastEventID=q"),
            &headers,
            None,
            &Limits::default(),
            &SelectorCache::default(),
        );
        assert_eq!(r.unwrap().start, Start::After("h".into()));
    }

    #[test]
    fn bad_requests() {
        for (q, reason) in [
            ("", "missing topic"),
            ("type=x", "missing topic"),
            ("topic=jobs/{id", "URI template"),
            ("topic=a&matchFoo=b", "unsupported matcher"),
            ("topic=a&latest=maybe", "true or false"),
        ] {
            let err = parse(q).err().expect(q).to_string();
            assert!(err.contains(reason), "{q}: {err}");
        }
        let many = "topic=a&".repeat(101);
        assert!(parse(&many).is_err());
    }

    #[test]
    fn selector_limits_per_request_name_the_limit() {
        let err = |q: &str| parse(q).err().expect(q).to_string();
        let patterns: String = (0..21).map(|i| format!("topic=t{i}/{{id}}&")).collect();
        assert!(err(&patterns).contains("21, more than --max-patterns (20)"));
        let big = format!("topic={}&topic={}", "a".repeat(9000), "b".repeat(9000));
        assert!(err(&big).contains("18000 bytes, more than --max-selector-bytes (16384)"));
        let exact: String = (0..100).map(|i| format!("topic=t{i}&")).collect();
        assert!(parse(&exact).is_ok(), "exact topics are not patterns");
    }
}
