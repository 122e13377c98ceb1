//! Topic selectors: which topics a subscriber asked for. Parsed once when a subscription starts,
//! matched for every candidate event, so matching must be cheap and never fail.
//!
//! Forms: an exact topic, `*` (every topic), an RFC 6570 URI template (`jobs/{id}`), and a
//! WHATWG URL Pattern (the newer Mercure draft's `match_urlpattern`).
//!
//! URI templates are matched the way the Mercure reference hub does it: the template is turned
//! into one anchored regular expression with the rules of `github.com/yosida95/uritemplate/v3`
//! (`Template.Regexp()`), and the topic must match it as a whole. The regex crate runs in linear
//! time, and each compiled selector is held to a small size limit.

use std::fmt::{self, Write as _};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;

use regex::{Regex, RegexBuilder};
use thiserror::Error;
use url::Url;

/// The reserved wildcard: as a selector of any kind it matches every topic; as a topic it cannot
/// be published to.
pub const WILDCARD: &str = "*";

/// Longest accepted selector, in bytes.
pub const MAX_SELECTOR_LEN: usize = 2048;

/// Heap budget of one compiled selector regex (the regex crate's `size_limit`). A
/// [`MAX_SELECTOR_LEN`] template needs far less; this only stops hostile selectors.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Budget of the lazy DFA cache of one selector regex (the regex crate's `dfa_size_limit`); past
/// it the regex crate falls back to its other linear-time engines.
const REGEX_DFA_SIZE_LIMIT: usize = 256 << 10;

/// Most variables one template expression may hold. Go's RE2 syntax refuses counted
/// repetitions above 1000, so yosida95/uritemplate cannot compile larger expressions either.
const MAX_EXPRESSION_VARS: usize = 1001;

/// Why a selector was refused; one line, fit for an HTTP 400 body.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SelectorError {
    /// The selector is the empty string.
    #[error("selector is empty")]
    Empty,
    /// The selector is longer than [`MAX_SELECTOR_LEN`].
    #[error("selector is longer than {0} bytes")]
    TooLong(usize),
    /// The selector is not a valid RFC 6570 URI template.
    #[error("invalid URI template: {0}")]
    Template(String),
    /// The selector is not a valid URL pattern.
    #[error("invalid URL pattern: {0}")]
    UrlPattern(String),
    /// An exact selector with a control character: no topic has one, so it could never match.
    #[error("topic selector contains a control character")]
    ControlChar,
}

/// A parsed topic selector.
#[derive(Debug, Clone)]
pub enum Selector {
    /// `*`: every topic.
    Any,
    /// One topic, compared byte for byte.
    Exact(String),
    /// A URI template, matched as a whole against the topic.
    Template {
        /// The template as the subscriber sent it.
        source: Arc<str>,
        /// The anchored regex the template compiles to, shared by every copy of the selector
        /// (and, through a [`SelectorCache`], by every subscriber that sent the same template).
        regex: Arc<Regex>,
    },
    /// A WHATWG URL Pattern, matched against topics that parse as URLs.
    UrlPattern {
        /// The pattern as the subscriber sent it.
        source: Arc<str>,
        /// The compiled pattern.
        matcher: UrlPatternMatcher,
    },
}

impl Selector {
    /// Parses a stable-line Mercure `topic=` selector: `*`, a URI template (it has a `{`), or an
    /// exact topic.
    pub fn parse_topic(s: &str) -> Result<Self, SelectorError> {
        check_len(s)?;
        if s == WILDCARD {
            return Ok(Self::Any);
        }
        if s.contains('{') {
            return Self::parse_template(s);
        }
        Self::parse_exact(s)
    }

    /// Parses the newer draft's `match=`: an exact topic, or the reserved wildcard `*`, which
    /// matches every topic whatever the matcher type (so the topic `*` itself is not
    /// addressable, and publishing to it is refused).
    pub fn parse_exact(s: &str) -> Result<Self, SelectorError> {
        check_len(s)?;
        if s == WILDCARD {
            return Ok(Self::Any);
        }
        if s.chars().any(char::is_control) {
            return Err(SelectorError::ControlChar);
        }
        Ok(Self::Exact(s.to_owned()))
    }

    /// Parses a URI template selector.
    pub fn parse_template(s: &str) -> Result<Self, SelectorError> {
        check_len(s)?;
        let regex = template_regex(s)?;
        Ok(Self::Template {
            source: s.into(),
            regex: Arc::new(regex),
        })
    }

    /// Parses the newer draft's `match_urlpattern=` without a base URL: the pattern must be
    /// absolute, and only topics that are absolute URLs can match it.
    pub fn parse_url_pattern(s: &str) -> Result<Self, SelectorError> {
        check_len(s)?;
        if s == WILDCARD {
            return Ok(Self::Any);
        }
        Ok(Self::UrlPattern {
            source: s.into(),
            matcher: UrlPatternMatcher::new(s, None)?,
        })
    }

    /// Parses the newer draft's `match_urlpattern=` the way the draft asks: relative patterns,
    /// and relative topics when matching, are resolved against `base`, the hub's own URL.
    pub fn parse_url_pattern_with_base(s: &str, base: &str) -> Result<Self, SelectorError> {
        check_len(s)?;
        if s == WILDCARD {
            return Ok(Self::Any);
        }
        let base = Url::parse(base)
            .map_err(|e| SelectorError::UrlPattern(format!("invalid base URL: {e}")))?;
        Ok(Self::UrlPattern {
            source: s.into(),
            matcher: UrlPatternMatcher::new(s, Some(base))?,
        })
    }

    /// The topic when this is an exact selector, so the fan-out can index it.
    pub fn as_exact(&self) -> Option<&str> {
        match self {
            Self::Exact(t) => Some(t),
            _ => None,
        }
    }

    /// Whether this is a pattern (`*`, a template or a URL pattern): a selector the fan-out
    /// cannot index by topic, so it is evaluated for every event.
    pub fn is_pattern(&self) -> bool {
        !matches!(self, Self::Exact(_))
    }

    /// For a pattern, what it selects by: two patterns with equal keys select the same topics,
    /// so the fan-out evaluates them once per event. `None` for an exact selector.
    pub fn pattern_key(&self) -> Option<PatternKey> {
        match self {
            Self::Any => Some(PatternKey::Any),
            Self::Exact(_) => None,
            Self::Template { source, .. } => Some(PatternKey::Template(source.clone())),
            Self::UrlPattern { source, matcher } => Some(PatternKey::UrlPattern(
                source.clone(),
                matcher.base().map(|b| b.as_str().into()),
            )),
        }
    }

    /// The selector as the subscriber wrote it (`*` for [`Selector::Any`]).
    pub fn source(&self) -> &str {
        match self {
            Self::Any => "*",
            Self::Exact(t) => t,
            Self::Template { source, .. } | Self::UrlPattern { source, .. } => source,
        }
    }

    /// Whether `topic` is selected. Never fails; allocation-free except for URL patterns, which
    /// parse the topic as a URL.
    pub fn matches(&self, topic: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(t) => t == topic,
            // The Mercure hub compares the raw selector first, so a template also selects the
            // topic spelled exactly like it.
            Self::Template { source, regex } => &**source == topic || regex.is_match(topic),
            Self::UrlPattern { matcher, .. } => matcher.matches(topic),
        }
    }
}

/// What a pattern selector selects by; see [`Selector::pattern_key`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PatternKey {
    /// `*`.
    Any,
    /// A URI template, by its source.
    Template(Arc<str>),
    /// A URL pattern, by its source and base URL.
    UrlPattern(Arc<str>, Option<Box<str>>),
}

fn check_len(s: &str) -> Result<(), SelectorError> {
    if s.is_empty() {
        return Err(SelectorError::Empty);
    }
    if s.len() > MAX_SELECTOR_LEN {
        return Err(SelectorError::TooLong(MAX_SELECTOR_LEN));
    }
    Ok(())
}

fn build_regex(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_DFA_SIZE_LIMIT)
        .build()
}

mod cache;
mod reserved;
mod template;
#[cfg(test)]
mod tests;
mod url_pattern;

pub use cache::SelectorCache;
pub use reserved::in_hub_namespace;
use template::template_regex;
pub use url_pattern::UrlPatternMatcher;
