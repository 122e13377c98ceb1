//! WHATWG URL Patterns, compiled with the regex crate under the selector size limits.

use super::template::one_line;
use super::*;

/// A compiled WHATWG URL Pattern, with the base URL relative topics resolve against, if any.
///
/// Matching follows the Mercure draft: `ignoreCase` stays off, and a topic that does not parse
/// as a URL (against the base, when there is one) never matches.
#[derive(Clone)]
pub struct UrlPatternMatcher {
    pattern: Arc<urlpattern::UrlPattern<BoundedRegex>>,
    base: Option<Url>,
}

impl UrlPatternMatcher {
    pub(super) fn new(source: &str, base: Option<Url>) -> Result<Self, SelectorError> {
        let err = |e: urlpattern::Error| {
            SelectorError::UrlPattern(match e {
                urlpattern::Error::BaseUrlRequired => {
                    "a relative pattern needs a base URL".to_owned()
                }
                urlpattern::Error::RegExp(()) => "invalid or too complex regexp group".to_owned(),
                other => one_line(&other.to_string()),
            })
        };
        // urlpattern 0.6 can panic on some malformed patterns (`http://]` underflows its IPv6
        // bracket depth), so a panic while compiling is one more way of being invalid.
        let compiled = panic::catch_unwind(AssertUnwindSafe(|| {
            let init = urlpattern::UrlPatternInit::parse_constructor_string::<BoundedRegex>(
                source,
                base.clone(),
            )?;
            urlpattern::UrlPattern::parse(init, urlpattern::UrlPatternOptions::default())
        }));
        let pattern = match compiled {
            Ok(result) => result.map_err(err)?,
            Err(_) => return Err(SelectorError::UrlPattern("malformed pattern".into())),
        };
        Ok(Self {
            pattern: Arc::new(pattern),
            base,
        })
    }

    /// The base URL relative topics resolve against, if any.
    pub fn base(&self) -> Option<&Url> {
        self.base.as_ref()
    }

    /// The compiled pattern, held weakly (by [`super::SelectorCache`]).
    pub(super) fn downgrade(&self) -> std::sync::Weak<urlpattern::UrlPattern<BoundedRegex>> {
        Arc::downgrade(&self.pattern)
    }

    /// A matcher over a pattern compiled before, without a base URL.
    pub(super) fn from_shared(pattern: Arc<urlpattern::UrlPattern<BoundedRegex>>) -> Self {
        Self {
            pattern,
            base: None,
        }
    }

    /// Whether `topic`, parsed as a URL, matches the pattern.
    pub fn matches(&self, topic: &str) -> bool {
        let url = match &self.base {
            Some(base) => base.join(topic),
            None => Url::parse(topic),
        };
        let Ok(url) = url else { return false };
        // Same guard as when compiling: a panic inside urlpattern is a non-match.
        panic::catch_unwind(AssertUnwindSafe(|| {
            self.pattern
                .test(urlpattern::UrlPatternMatchInput::Url(url))
                .unwrap_or(false)
        }))
        .unwrap_or(false)
    }
}

impl fmt::Debug for UrlPatternMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UrlPatternMatcher")
            .field("protocol", &self.pattern.protocol())
            .field("hostname", &self.pattern.hostname())
            .field("port", &self.pattern.port())
            .field("pathname", &self.pattern.pathname())
            .field("search", &self.pattern.search())
            .field("hash", &self.pattern.hash())
            .field("base", &self.base.as_ref().map(Url::as_str))
            .finish()
    }
}

/// The regex engine handed to `urlpattern`: the regex crate (linear time), held to the same
/// size limits as template regexes.
#[derive(Debug)]
pub(super) struct BoundedRegex(Regex);

impl urlpattern::regexp::RegExp for BoundedRegex {
    fn syntax() -> urlpattern::RegexSyntax {
        urlpattern::RegexSyntax::Rust
    }

    fn parse(pattern: &str, _flags: &str, _force_eval: bool) -> Result<Self, ()> {
        build_regex(pattern).map(Self).map_err(|_| ())
    }

    fn matches<'a>(&self, text: &'a str) -> Option<Vec<Option<&'a str>>> {
        let captures = self.0.captures(text)?;
        Some(
            captures
                .iter()
                .skip(1)
                .map(|m| m.map(|m| m.as_str()))
                .collect(),
        )
    }

    fn pattern_string(&self) -> &str {
        self.0.as_str()
    }
}
