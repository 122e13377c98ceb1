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

use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;

use regex::{Regex, RegexBuilder};
use thiserror::Error;
use url::Url;

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
        source: String,
        /// The anchored regex the template compiles to.
        regex: Regex,
    },
    /// A WHATWG URL Pattern, matched against topics that parse as URLs.
    UrlPattern {
        /// The pattern as the subscriber sent it.
        source: String,
        /// The compiled pattern.
        matcher: UrlPatternMatcher,
    },
}

impl Selector {
    /// Parses a stable-line Mercure `topic=` selector: `*`, a URI template (it has a `{`), or an
    /// exact topic.
    pub fn parse_topic(s: &str) -> Result<Self, SelectorError> {
        check_len(s)?;
        if s == "*" {
            return Ok(Self::Any);
        }
        if s.contains('{') {
            return Self::parse_template(s);
        }
        Ok(Self::Exact(s.to_owned()))
    }

    /// Parses the newer draft's `match=`: always an exact topic.
    pub fn parse_exact(s: &str) -> Result<Self, SelectorError> {
        check_len(s)?;
        Ok(Self::Exact(s.to_owned()))
    }

    /// Parses a URI template selector.
    pub fn parse_template(s: &str) -> Result<Self, SelectorError> {
        check_len(s)?;
        let regex = template_regex(s)?;
        Ok(Self::Template {
            source: s.to_owned(),
            regex,
        })
    }

    /// Parses the newer draft's `match_urlpattern=` without a base URL: the pattern must be
    /// absolute, and only topics that are absolute URLs can match it.
    pub fn parse_url_pattern(s: &str) -> Result<Self, SelectorError> {
        check_len(s)?;
        Ok(Self::UrlPattern {
            source: s.to_owned(),
            matcher: UrlPatternMatcher::new(s, None)?,
        })
    }

    /// Parses the newer draft's `match_urlpattern=` the way the draft asks: relative patterns,
    /// and relative topics when matching, are resolved against `base`, the hub's own URL.
    pub fn parse_url_pattern_with_base(s: &str, base: &str) -> Result<Self, SelectorError> {
        check_len(s)?;
        let base = Url::parse(base)
            .map_err(|e| SelectorError::UrlPattern(format!("invalid base URL: {e}")))?;
        Ok(Self::UrlPattern {
            source: s.to_owned(),
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
            Self::Template { source, regex } => source == topic || regex.is_match(topic),
            Self::UrlPattern { matcher, .. } => matcher.matches(topic),
        }
    }
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

// ---------------------------------------------------------------------------------------------
// URI templates
// ---------------------------------------------------------------------------------------------

/// RFC 3986 `unreserved`, as a regex class body: ALPHA / DIGIT / `-` / `.` / `_` / `~`.
const RE_UNRESERVED: &str = r"\x2d\x2e\x30-\x39\x41-\x5a\x5f\x61-\x7a\x7e";
/// RFC 3986 `reserved`, as a regex class body: gen-delims and sub-delims.
const RE_RESERVED: &str = r"\x21\x23\x24\x26-\x2c\x2f\x3a\x3b\x3d\x3f\x40\x5b\x5d";

/// An RFC 6570 expression operator and what it expands to.
#[derive(Debug, Clone, Copy)]
struct Operator {
    /// Written before the first value.
    first: &'static str,
    /// Written between values.
    sep: &'static str,
    /// Values are `name=value` pairs.
    named: bool,
    /// Reserved characters pass unescaped (`+` and `#`).
    allow_reserved: bool,
}

impl Operator {
    const fn new(first: &'static str, sep: &'static str, named: bool, reserved: bool) -> Self {
        Self {
            first,
            sep,
            named,
            allow_reserved: reserved,
        }
    }

    /// The operator starting an expression body, and whether it took up that character.
    fn from_char(c: char) -> Result<Option<Self>, String> {
        Ok(Some(match c {
            '+' => Self::new("", ",", false, true),
            '#' => Self::new("#", ",", false, true),
            '.' => Self::new(".", ".", false, false),
            '/' => Self::new("/", "/", false, false),
            ';' => Self::new(";", ";", true, false),
            '?' => Self::new("?", "&", true, false),
            '&' => Self::new("&", "&", true, false),
            '=' | ',' | '!' | '@' | '|' => return Err(format!("unsupported operator '{c}'")),
            _ => return Ok(None),
        }))
    }

    const SIMPLE: Self = Self::new("", ",", false, false);

    /// Appends the regex of one value: allowed characters or percent-encoded triplets.
    fn push_value_class(&self, out: &mut String, named: bool) {
        out.push_str("(?:[");
        if self.allow_reserved {
            // `,` and `=` are reserved characters already.
            out.push_str(RE_UNRESERVED);
            out.push_str(RE_RESERVED);
        } else {
            out.push_str(r"\x2c");
            if named {
                out.push_str(r"\x3d");
            }
            out.push_str(RE_UNRESERVED);
        }
        out.push_str("]|%[[:xdigit:]][[:xdigit:]])*");
    }

    /// Appends the regex of a whole expression, as yosida95/uritemplate's `expression.regexp`.
    fn push_expression(&self, out: &mut String, vars: usize, first_explode: bool, explode: bool) {
        out.push_str("(?:");
        out.push_str(&regex::escape(self.first));
        out.push_str("(?:");
        self.push_value_class(out, self.named || first_explode);
        if vars > 1 || first_explode {
            out.push_str("(?:");
            out.push_str(&regex::escape(self.sep));
            self.push_value_class(out, self.named || explode);
            out.push(')');
            // Any exploded variable lifts the bound on the number of values.
            if explode {
                out.push('*');
            } else {
                out.push_str(&format!("{{0,{}}}", vars - 1));
            }
        }
        out.push_str("))?");
    }
}

/// Turns a URI template into an anchored regex, following yosida95/uritemplate v3: literals
/// match themselves; an expression is optional as a whole and matches its operator's first
/// character, then values (unreserved characters and `%XX`, plus reserved ones for `+` and `#`,
/// plus `,` and `=` where they may appear) joined by the operator's separator, at most one per
/// variable unless one is exploded. Prefix lengths (`:3`) are checked but do not constrain.
fn template_regex(s: &str) -> Result<Regex, SelectorError> {
    let pattern = template_pattern(s).map_err(SelectorError::Template)?;
    build_regex(&pattern).map_err(|e| {
        SelectorError::Template(match e {
            regex::Error::CompiledTooBig(_) => "template is too complex".into(),
            other => one_line(&other.to_string()),
        })
    })
}

/// The regex source for a template; the error is a short reason.
fn template_pattern(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len() * 2 + 2);
    out.push('^');
    let mut literal_start = 0;
    let mut i = 0;
    while let Some(c) = s[i..].chars().next() {
        match c {
            '{' => {
                out.push_str(&regex::escape(&s[literal_start..i]));
                i = parse_expression(s, i + 1, &mut out)?;
                literal_start = i;
            }
            '%' => i = pct_triplet(s, i)?,
            c if is_literal(c) => i += c.len_utf8(),
            '}' => return Err(format!("unmatched '}}' at byte {i}")),
            c => return Err(format!("invalid literal {c:?} at byte {i}")),
        }
    }
    out.push_str(&regex::escape(&s[literal_start..]));
    out.push('$');
    Ok(out)
}

/// Parses the expression whose body starts at `start` (just past `{`), appends its regex, and
/// returns the index just past its `}`.
fn parse_expression(s: &str, start: usize, out: &mut String) -> Result<usize, String> {
    const INCOMPLETE: &str = "incomplete template: unclosed '{'";
    let bytes = s.as_bytes();
    let mut i = start;
    let first = s[i..].chars().next().ok_or(INCOMPLETE)?;
    let op = match Operator::from_char(first)? {
        Some(op) => {
            i += 1;
            op
        }
        None => Operator::SIMPLE,
    };

    let (mut vars, mut first_explode, mut explode) = (0usize, false, false);
    loop {
        // varname: varchar *( ["."] varchar ), varchar = ALPHA / DIGIT / "_" / pct-encoded
        let name_start = i;
        loop {
            match bytes.get(i) {
                None => return Err(INCOMPLETE.into()),
                Some(b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_') => i += 1,
                Some(b'.') if i > name_start && bytes[i - 1] != b'.' => i += 1,
                Some(b'%') => i = pct_triplet(s, i)?,
                Some(b':' | b'*' | b',' | b'}') => break,
                Some(_) => return Err(format!("invalid varname at byte {i}")),
            }
        }
        if i == name_start || bytes[i - 1] == b'.' {
            return Err(format!("invalid varname at byte {i}"));
        }
        vars += 1;
        if vars > MAX_EXPRESSION_VARS {
            return Err("too many variables in one expression".into());
        }
        match bytes[i] {
            b'*' => {
                i += 1;
                explode = true;
                if vars == 1 {
                    first_explode = true;
                }
            }
            b':' => {
                i += 1;
                let digits_start = i;
                let mut max_len = 0u32;
                while let Some(d @ b'0'..=b'9') = bytes.get(i).copied() {
                    max_len = max_len * 10 + u32::from(d - b'0');
                    if max_len == 0 || max_len > 9999 {
                        return Err("max-length must be in 1..=9999".into());
                    }
                    i += 1;
                }
                if i == bytes.len() {
                    return Err(INCOMPLETE.into());
                }
                if i == digits_start {
                    return Err("max-length must be in 1..=9999".into());
                }
            }
            _ => {}
        }
        match bytes.get(i) {
            None => return Err(INCOMPLETE.into()),
            Some(b',') => i += 1,
            Some(b'}') => {
                op.push_expression(out, vars, first_explode, explode);
                return Ok(i + 1);
            }
            Some(_) => return Err(format!("invalid variable-list at byte {i}")),
        }
    }
}

/// Checks the `%XX` triplet at `i` and returns the index past it.
fn pct_triplet(s: &str, i: usize) -> Result<usize, String> {
    match s.as_bytes().get(i..i + 3) {
        Some([b'%', h, l]) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => Ok(i + 3),
        _ => Err(format!("invalid percent-encoding at byte {i}")),
    }
}

/// RFC 6570 `literals`, less `%` (percent-encoded triplets are checked apart).
fn is_literal(c: char) -> bool {
    matches!(c,
        '!' | '#' | '$' | '&' | '('..=';' | '=' | '?'..='[' | ']' | '_' | 'a'..='z' | '~'
        | '\u{A0}'..='\u{D7FF}'
        | '\u{E000}'..='\u{F8FF}'
        | '\u{F900}'..='\u{FDCF}'
        | '\u{FDF0}'..='\u{FFEF}'
        | '\u{10000}'..='\u{1FFFD}'
        | '\u{20000}'..='\u{2FFFD}'
        | '\u{30000}'..='\u{3FFFD}'
        | '\u{40000}'..='\u{4FFFD}'
        | '\u{50000}'..='\u{5FFFD}'
        | '\u{60000}'..='\u{6FFFD}'
        | '\u{70000}'..='\u{7FFFD}'
        | '\u{80000}'..='\u{8FFFD}'
        | '\u{90000}'..='\u{9FFFD}'
        | '\u{A0000}'..='\u{AFFFD}'
        | '\u{B0000}'..='\u{BFFFD}'
        | '\u{C0000}'..='\u{CFFFD}'
        | '\u{D0000}'..='\u{DFFFD}'
        | '\u{E1000}'..='\u{EFFFD}'
        | '\u{F0000}'..='\u{FFFFD}'
        | '\u{100000}'..='\u{10FFFD}')
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

// ---------------------------------------------------------------------------------------------
// URL patterns
// ---------------------------------------------------------------------------------------------

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
    fn new(source: &str, base: Option<Url>) -> Result<Self, SelectorError> {
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
struct BoundedRegex(Regex);

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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn template(s: &str) -> Selector {
        Selector::parse_template(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    fn template_err(s: &str) -> String {
        match Selector::parse_template(s) {
            Err(SelectorError::Template(reason)) => reason,
            other => panic!("{s:?}: expected a template error, got {other:?}"),
        }
    }

    fn url_pattern(s: &str) -> Selector {
        Selector::parse_url_pattern(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    fn assert_matches(sel: &Selector, yes: &[&str], no: &[&str]) {
        for t in yes {
            assert!(sel.matches(t), "{:?} should match {t:?}", sel.source());
        }
        for t in no {
            assert!(!sel.matches(t), "{:?} should not match {t:?}", sel.source());
        }
    }

    // --- detection -----------------------------------------------------------------------

    #[test]
    fn parse_topic_detects_the_form() {
        assert!(matches!(Selector::parse_topic("*"), Ok(Selector::Any)));
        assert!(
            matches!(Selector::parse_topic("jobs/42"), Ok(Selector::Exact(t)) if t == "jobs/42")
        );
        assert!(matches!(
            Selector::parse_topic("jobs/{id}"),
            Ok(Selector::Template { .. })
        ));
        // A lone `}` is no template: exact.
        assert!(matches!(
            Selector::parse_topic("a}b"),
            Ok(Selector::Exact(_))
        ));
        assert!(matches!(
            Selector::parse_topic("jobs/{id"),
            Err(SelectorError::Template(_))
        ));
        assert!(matches!(
            Selector::parse_topic(""),
            Err(SelectorError::Empty)
        ));
    }

    #[test]
    fn parse_exact_never_interprets() {
        for s in ["*", "jobs/{id}", "https://example.com/:id"] {
            let sel = Selector::parse_exact(s).unwrap();
            assert_eq!(sel.as_exact(), Some(s));
            assert_matches(&sel, &[s], &["jobs/1", "x"]);
        }
    }

    #[test]
    fn length_limits() {
        assert!(matches!(
            Selector::parse_topic(""),
            Err(SelectorError::Empty)
        ));
        assert!(matches!(
            Selector::parse_exact(""),
            Err(SelectorError::Empty)
        ));
        assert!(matches!(
            Selector::parse_template(""),
            Err(SelectorError::Empty)
        ));
        assert!(matches!(
            Selector::parse_url_pattern(""),
            Err(SelectorError::Empty)
        ));
        let long = "a".repeat(MAX_SELECTOR_LEN + 1);
        for r in [
            Selector::parse_topic(&long),
            Selector::parse_exact(&long),
            Selector::parse_template(&long),
            Selector::parse_url_pattern(&long),
        ] {
            assert!(matches!(r, Err(SelectorError::TooLong(MAX_SELECTOR_LEN))));
        }
        assert!(Selector::parse_exact(&"a".repeat(MAX_SELECTOR_LEN)).is_ok());
    }

    #[test]
    fn any_and_source() {
        assert_matches(&Selector::Any, &["", "x", "https://example.com/a/b"], &[]);
        assert_eq!(Selector::Any.source(), "*");
        assert_eq!(Selector::Any.as_exact(), None);
        assert_eq!(template("a/{b}").source(), "a/{b}");
        assert_eq!(template("a/{b}").as_exact(), None);
        assert_eq!(url_pattern("https://e.com/:b").source(), "https://e.com/:b");
    }

    // --- URI templates: operators ----------------------------------------------------------

    #[test]
    fn simple_expression() {
        let sel = template("https://example.com/books/{id}");
        assert_matches(
            &sel,
            &[
                "https://example.com/books/1",
                "https://example.com/books/abc-DEF_1.2~3",
                "https://example.com/books/a,b",
                "https://example.com/books/50%25",
                "https://example.com/books/",
                "https://example.com/books/{id}",
            ],
            &[
                "https://example.com/books/1/reviews",
                "https://example.com/books/1/",
                "https://example.com/books/a=b",
                "https://example.com/books/a b",
                "https://example.com/books/é",
                "https://example.com/books/50%2",
                "https://example.com/books/1?x",
                "https://example.com/books",
                "https://example.com/books/1#x",
                "xhttps://example.com/books/1",
            ],
        );
        assert_matches(
            &template("jobs/{id}"),
            &["jobs/42"],
            &["jobs/42/x", "job/42"],
        );
    }

    #[test]
    fn simple_expression_variable_count() {
        // Without explode, one value per variable: `{x,y}` takes at most one comma-joined
        // repetition beyond the first, yet `,` is itself allowed inside values.
        assert_matches(&template("{x,y}"), &["1024,768", "", "a,b,c"], &["a/b"]);
        assert_matches(&template("{x}"), &["1024,768"], &["a=b"]);
    }

    #[test]
    fn reserved_expression() {
        let sel = template("{+path}/here");
        assert_matches(
            &sel,
            &[
                "/foo/bar/here",
                "/here",
                "a:b@c!$&'()*+,;=?#[]/here",
                "%41/here",
            ],
            &["/foo bar/here", "/foo/bar/her", "é/here"],
        );
        assert_matches(&template("x/{+rest}"), &["x/a/b/c", "x/"], &["y/a"]);
    }

    #[test]
    fn fragment_expression() {
        let sel = template("foo{#frag}");
        assert_matches(
            &sel,
            &["foo", "foo#", "foo#a/b?c", "foo#a,b"],
            &["foo#a b", "foo/a"],
        );
    }

    #[test]
    fn label_expression() {
        assert_matches(
            &template("X{.var}"),
            &["X", "X.", "X.value", "X.a.b"],
            &["X.a/b", "Xa"],
        );
        // The exploded form repeats `.value`.
        assert_matches(
            &template("www{.dom*}"),
            &["www.example.com"],
            &["www/example"],
        );
    }

    #[test]
    fn path_expression() {
        let sel = template("/users{/id}");
        assert_matches(
            &sel,
            &["/users", "/users/", "/users/42"],
            &["/users/42/x", "/users42"],
        );
        let two = template("{/a,b}");
        assert_matches(&two, &["/x/y", "/x", "/x,y"], &["/x/y/z"]);
        let exploded = template("{/list*}");
        assert_matches(&exploded, &["/a/b/c/d/e", "/a", ""], &["a/b", "/a b"]);
        let tail = template("https://{host}/users{/user}{/media}");
        assert_matches(
            &tail,
            &[
                "https://example.com/users/kevin/pics",
                "https://example.com/users",
            ],
            &["https://example.com/users/kevin/pics/x"],
        );
    }

    #[test]
    fn path_parameter_expression() {
        let sel = template("/m{;who}");
        assert_matches(
            &sel,
            &["/m;who=fred", "/m;who", "/m"],
            &["/m;who=a;b=c", "/m;a/b"],
        );
        assert_matches(&template("{;list*}"), &[";list=red;list=green"], &[";a/b"]);
        assert_matches(&template("{;x,y}"), &[";x=1024;y=768"], &[";x=1;y=2;z=3"]);
    }

    #[test]
    fn query_expressions() {
        let sel = template("/search{?q,lang}");
        assert_matches(
            &sel,
            &[
                "/search",
                "/search?q=cat",
                "/search?q=cat&lang=en",
                "/search?",
            ],
            &[
                "/search?q=cat&lang=en&x=1",
                "/search?q=a/b",
                "/search&q=cat",
            ],
        );
        assert_matches(&template("{?list*}"), &["?a=1&b=2&c=3"], &["?a=1?b=2"]);
        let cont = template("?fixed=yes{&x}");
        assert_matches(
            &cont,
            &["?fixed=yes&x=1024", "?fixed=yes"],
            &["?fixed=yes&x=1&y=2"],
        );
    }

    #[test]
    fn prefix_modifier_does_not_constrain() {
        // yosida95/uritemplate ignores max-length when building its regexp.
        let sel = template("https://example.com/dictionary/{term:1}/{term}");
        assert_matches(
            &sel,
            &[
                "https://example.com/dictionary/c/cat",
                "https://example.com/dictionary/cat/cat",
            ],
            &["https://example.com/dictionary/c/a/cat"],
        );
    }

    #[test]
    fn literals_are_escaped() {
        assert_matches(
            &template("a.b+c(d)*{x}"),
            &["a.b+c(d)*1"],
            &["aXb+c(d)*1", "a.bbc(d)*1"],
        );
        assert_matches(&template("caf\u{e9}/{id}"), &["caf\u{e9}/1"], &["cafe/1"]);
        assert_matches(&template("a%20b/{x}"), &["a%20b/1"], &["a b/1"]);
        assert_matches(&template("{a}{b}"), &["xy"], &["x/y"]);
    }

    #[test]
    fn varnames() {
        for ok in [
            "{a.b}",
            "{a_b9}",
            "{%41}",
            "{a%2Eb.c}",
            "{A,b*,c:12}",
            "{a:9999}",
        ] {
            template(ok);
        }
    }

    /// Every expansion in yosida95/uritemplate's own test table (RFC 6570's examples) matches
    /// its template, as its `TestTemplateRegexp` requires.
    #[test]
    fn rfc6570_expansions_match_their_template() {
        let cases = [
            ("{count}", "one,two,three"),
            ("{count*}", "one,two,three"),
            ("{/count}", "/one,two,three"),
            ("{/count*}", "/one/two/three"),
            ("{;count}", ";count=one,two,three"),
            ("{;count*}", ";count=one;count=two;count=three"),
            ("{?count}", "?count=one,two,three"),
            ("{?count*}", "?count=one&count=two&count=three"),
            ("{&count*}", "&count=one&count=two&count=three"),
            ("{var}", "value"),
            ("{hello}", "Hello%20World%21"),
            ("{half}", "50%25"),
            ("O{empty}X", "OX"),
            ("O{undef}X", "OX"),
            ("{x,y}", "1024,768"),
            ("{x,hello,y}", "1024,Hello%20World%21,768"),
            ("?{x,empty}", "?1024,"),
            ("?{x,undef}", "?1024"),
            ("?{undef,y}", "?768"),
            ("{var:3}", "val"),
            ("{var:30}", "value"),
            ("{list}", "red,green,blue"),
            ("{list*}", "red,green,blue"),
            ("{keys}", "semi,%3B,dot,.,comma,%2C"),
            ("{keys*}", "semi=%3B,dot=.,comma=%2C"),
            ("{+var}", "value"),
            ("{+hello}", "Hello%20World!"),
            ("{+half}", "50%25"),
            ("{base}index", "http%3A%2F%2Fexample.com%2Fhome%2Findex"),
            ("{+base}index", "http://example.com/home/index"),
            ("O{+empty}X", "OX"),
            ("O{+undef}X", "OX"),
            ("{+path}/here", "/foo/bar/here"),
            ("here?ref={+path}", "here?ref=/foo/bar"),
            ("up{+path}{var}/here", "up/foo/barvalue/here"),
            ("{+x,hello,y}", "1024,Hello%20World!,768"),
            ("{+path,x}/here", "/foo/bar,1024/here"),
            ("{+path:6}/here", "/foo/b/here"),
            ("{+list}", "red,green,blue"),
            ("{+list*}", "red,green,blue"),
            ("{+keys}", "semi,;,dot,.,comma,,"),
            ("{+keys*}", "semi=;,dot=.,comma=,"),
            ("{#var}", "#value"),
            ("{#hello}", "#Hello%20World!"),
            ("{#half}", "#50%25"),
            ("foo{#empty}", "foo#"),
            ("foo{#undef}", "foo"),
            ("{#x,hello,y}", "#1024,Hello%20World!,768"),
            ("{#path,x}/here", "#/foo/bar,1024/here"),
            ("{#path:6}/here", "#/foo/b/here"),
            ("{#list}", "#red,green,blue"),
            ("{#list*}", "#red,green,blue"),
            ("{#keys}", "#semi,;,dot,.,comma,,"),
            ("{#keys*}", "#semi=;,dot=.,comma=,"),
            ("{.who}", ".fred"),
            ("{.who,who}", ".fred.fred"),
            ("{.half,who}", ".50%25.fred"),
            ("www{.dom*}", "www.example.com"),
            ("X{.var}", "X.value"),
            ("X{.empty}", "X."),
            ("X{.undef}", "X"),
            ("X{.var:3}", "X.val"),
            ("X{.list}", "X.red,green,blue"),
            ("X{.list*}", "X.red.green.blue"),
            ("X{.keys}", "X.semi,%3B,dot,.,comma,%2C"),
            ("X{.keys*}", "X.semi=%3B.dot=..comma=%2C"),
            ("X{.empty_keys}", "X"),
            ("X{.empty_keys*}", "X"),
            ("{/who}", "/fred"),
            ("{/who,who}", "/fred/fred"),
            ("{/half,who}", "/50%25/fred"),
            ("{/who,dub}", "/fred/me%2Ftoo"),
            ("{/var}", "/value"),
            ("{/var,empty}", "/value/"),
            ("{/var,undef}", "/value"),
            ("{/var,x}/here", "/value/1024/here"),
            ("{/var:1,var}", "/v/value"),
            ("{/list}", "/red,green,blue"),
            ("{/list*}", "/red/green/blue"),
            ("{/list*,path:4}", "/red/green/blue/%2Ffoo"),
            ("{/keys}", "/semi,%3B,dot,.,comma,%2C"),
            ("{/keys*}", "/semi=%3B/dot=./comma=%2C"),
            ("{;who}", ";who=fred"),
            ("{;half}", ";half=50%25"),
            ("{;empty}", ";empty"),
            ("{;v,empty,who}", ";v=6;empty;who=fred"),
            ("{;v,bar,who}", ";v=6;who=fred"),
            ("{;x,y}", ";x=1024;y=768"),
            ("{;x,y,empty}", ";x=1024;y=768;empty"),
            ("{;x,y,undef}", ";x=1024;y=768"),
            ("{;hello:5}", ";hello=Hello"),
            ("{;list}", ";list=red,green,blue"),
            ("{;list*}", ";list=red;list=green;list=blue"),
            ("{;keys}", ";keys=semi,%3B,dot,.,comma,%2C"),
            ("{;keys*}", ";semi=%3B;dot=.;comma=%2C"),
            ("{?who}", "?who=fred"),
            ("{?half}", "?half=50%25"),
            ("{?x,y}", "?x=1024&y=768"),
            ("{?x,y,empty}", "?x=1024&y=768&empty="),
            ("{?x,y,undef}", "?x=1024&y=768"),
            ("{?var:3}", "?var=val"),
            ("{?list}", "?list=red,green,blue"),
            ("{?list*}", "?list=red&list=green&list=blue"),
            ("{?keys}", "?keys=semi,%3B,dot,.,comma,%2C"),
            ("{?keys*}", "?semi=%3B&dot=.&comma=%2C"),
            ("{&who}", "&who=fred"),
            ("{&half}", "&half=50%25"),
            ("?fixed=yes{&x}", "?fixed=yes&x=1024"),
            ("{&x,y,empty}", "&x=1024&y=768&empty="),
            ("{&x,y,undef}", "&x=1024&y=768"),
            ("{&var:3}", "&var=val"),
            ("{&list}", "&list=red,green,blue"),
            ("{&list*}", "&list=red&list=green&list=blue"),
            ("{&keys}", "&keys=semi,%3B,dot,.,comma,%2C"),
            ("{&keys*}", "&semi=%3B&dot=.&comma=%2C"),
            ("{special_chars}", "2001%3Adb8%3A%3A35"),
        ];
        for (raw, expanded) in cases {
            assert!(
                template(raw).matches(expanded),
                "{raw:?} should match {expanded:?}"
            );
        }
    }

    #[test]
    fn regex_shape_follows_yosida95() {
        let Selector::Template { regex, .. } = template("a{/x,y}") else {
            unreachable!()
        };
        assert_eq!(
            regex.as_str(),
            r"^a(?:/(?:(?:[\x2c\x2d\x2e\x30-\x39\x41-\x5a\x5f\x61-\x7a\x7e]|%[[:xdigit:]][[:xdigit:]])*(?:/(?:[\x2c\x2d\x2e\x30-\x39\x41-\x5a\x5f\x61-\x7a\x7e]|%[[:xdigit:]][[:xdigit:]])*){0,1}))?$"
        );
    }

    // --- URI templates: errors -----------------------------------------------------------

    #[test]
    fn template_errors() {
        let cases = [
            ("jobs/{id", "incomplete"),
            ("jobs/{", "incomplete"),
            ("jobs/{id,", "incomplete"),
            ("jobs/{id:3", "incomplete"),
            ("jobs/{id*", "incomplete"),
            ("jobs/{}", "invalid varname"),
            ("jobs/{+}", "invalid varname"),
            ("{a,}", "invalid varname"),
            ("{.a}x{a.}", "invalid varname"),
            ("{.a..b}", "invalid varname"),
            ("{a-b}", "invalid varname"),
            ("{a b}", "invalid varname"),
            ("{$a}", "invalid varname"),
            ("{{a}}", "invalid varname"),
            ("{%4}", "percent-encoding"),
            ("{=a}", "unsupported operator"),
            ("{,a}", "unsupported operator"),
            ("{!a}", "unsupported operator"),
            ("{@a}", "unsupported operator"),
            ("{|a}", "unsupported operator"),
            ("{a:0}", "max-length"),
            ("{a:}", "max-length"),
            ("{a:10000}", "max-length"),
            ("{a:05}", "max-length"),
            ("{a:3*}", "invalid variable-list"),
            ("{a*:3}", "invalid variable-list"),
            ("{a*b}", "invalid variable-list"),
            ("{a:1a}", "invalid variable-list"),
            ("a}{b}", "unmatched '}'"),
            ("{b}}", "unmatched '}'"),
            ("a b/{x}", "invalid literal"),
            ("a<b>/{x}", "invalid literal"),
            ("a\"/{x}", "invalid literal"),
            ("a'/{x}", "invalid literal"),
            ("a\\/{x}", "invalid literal"),
            ("a^`|/{x}", "invalid literal"),
            ("a\n/{x}", "invalid literal"),
            ("a\u{fffd}/{x}", "invalid literal"),
            ("a%zz/{x}", "percent-encoding"),
            ("a%2/{x}", "percent-encoding"),
            ("{x}%", "percent-encoding"),
        ];
        for (raw, want) in cases {
            let reason = template_err(raw);
            assert!(reason.contains(want), "{raw:?}: {reason:?} lacks {want:?}");
            assert!(!reason.contains('\n'), "{raw:?}: {reason:?}");
        }
    }

    #[test]
    fn huge_expressions_are_bounded() {
        // 1001 variables is the most yosida95/uritemplate (RE2 syntax) can compile.
        let max = format!("{{{}}}", vec!["a"; MAX_EXPRESSION_VARS].join(","));
        assert!(template(&max).matches("x,y"));
        let over = format!("{{{}}}", vec!["a"; MAX_EXPRESSION_VARS + 1].join(","));
        assert!(template_err(&over).contains("too many variables"));
        // Many expressions, each small: fine.
        let many = "{a,b}".repeat(MAX_SELECTOR_LEN / 5);
        assert!(template(&many).matches("1,2"));
    }

    // --- URL patterns --------------------------------------------------------------------

    #[test]
    fn url_pattern_named_group() {
        let sel = url_pattern("https://example.com/books/:id");
        assert_matches(
            &sel,
            &[
                "https://example.com/books/1",
                "https://EXAMPLE.com/books/1",
                "https://example.com:443/books/1",
                "https://example.com/books/caf%C3%A9",
                "https://example.com/books/1?x=1#y",
            ],
            &[
                "https://example.com/books/1/reviews",
                "https://example.com/books/",
                "https://example.com/Books/1",
                "http://example.com/books/1",
                "https://example.org/books/1",
                "/books/1",
                "books/1",
                "jobs/1",
                "not a url",
                "",
            ],
        );
    }

    #[test]
    fn url_pattern_wildcards_and_groups() {
        assert_matches(
            &url_pattern("https://example.com/books/*"),
            &[
                "https://example.com/books/1/reviews",
                "https://example.com/books/",
            ],
            &["https://example.com/book"],
        );
        assert_matches(
            &url_pattern("https://*.example.com/:id(\\d+)"),
            &["https://a.example.com/42"],
            &["https://a.example.com/x", "https://example.org/42"],
        );
        assert_matches(
            &url_pattern("urn\\:job\\:*"),
            &["urn:job:42"],
            &["urn:task:42", "jobs/42"],
        );
        // The trailing slash matters.
        assert_matches(
            &url_pattern("https://example.com/books/"),
            &["https://example.com/books/"],
            &["https://example.com/books"],
        );
    }

    #[test]
    fn url_pattern_errors() {
        for bad in [
            "/books/:id",
            "books/:id",
            ":id",
            "https://example.com/(",
            "https://e.com/:",
        ] {
            match Selector::parse_url_pattern(bad) {
                Err(SelectorError::UrlPattern(reason)) => {
                    assert!(
                        !reason.is_empty() && !reason.contains('\n'),
                        "{bad:?}: {reason:?}"
                    )
                }
                other => panic!("{bad:?}: expected an error, got {other:?}"),
            }
        }
        assert!(matches!(
            Selector::parse_url_pattern("/books/:id"),
            Err(SelectorError::UrlPattern(r)) if r.contains("base URL")
        ));
        assert!(matches!(
            Selector::parse_url_pattern_with_base("/books/:id", "not a url"),
            Err(SelectorError::UrlPattern(r)) if r.contains("base URL")
        ));
    }

    #[test]
    fn url_pattern_parser_panics_become_errors() {
        // urlpattern 0.6 underflows on a stray `]` in the hostname.
        for bad in ["http://]", "https://]a/:id"] {
            assert!(matches!(
                Selector::parse_url_pattern(bad),
                Err(SelectorError::UrlPattern(_))
            ));
        }
    }

    #[test]
    fn url_pattern_with_base_resolves_relative() {
        let hub = "https://hub.example.com/.well-known/mercure";
        let sel =
            Selector::parse_url_pattern_with_base("/.well-known/mercure/subscriptions/:t/:s", hub)
                .unwrap();
        assert_matches(
            &sel,
            &[
                "/.well-known/mercure/subscriptions/a/b",
                "https://hub.example.com/.well-known/mercure/subscriptions/a/b",
            ],
            &[
                "/.well-known/mercure/subscriptions/a",
                "https://other.example/.well-known/mercure/subscriptions/a/b",
            ],
        );
        let abs =
            Selector::parse_url_pattern_with_base("https://example.com/books/:id", hub).unwrap();
        assert_matches(&abs, &["https://example.com/books/1"], &["/books/1"]);
    }

    #[test]
    fn url_pattern_regex_is_bounded() {
        // A custom group that compiles to a huge program is refused, not built.
        let hostile = format!("https://example.com/:id({})", "(?:\\w{100}){100}");
        assert!(matches!(
            Selector::parse_url_pattern(&hostile),
            Err(SelectorError::UrlPattern(_))
        ));
    }

    #[test]
    fn selector_is_send_sync() {
        fn check<T: Send + Sync + Clone + fmt::Debug>() {}
        check::<Selector>();
        check::<SelectorError>();
    }

    // --- properties ----------------------------------------------------------------------

    proptest! {
        // Failures are pinned as unit tests here rather than in a regressions file.
        #![proptest_config(ProptestConfig {
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn exact_matches_itself(t in any::<String>()) {
            prop_assert!(Selector::Exact(t.clone()).matches(&t));
            if !t.is_empty() && t.len() <= MAX_SELECTOR_LEN {
                prop_assert!(Selector::parse_exact(&t).unwrap().matches(&t));
            }
        }

        #[test]
        fn template_variable_is_one_segment(
            prefix in "[A-Za-z0-9._~:/-]{0,30}",
            id in "[A-Za-z0-9._~-]{0,40}",
        ) {
            let sel = Selector::parse_topic(&format!("{prefix}/{{id}}")).unwrap();
            let is_template = matches!(sel, Selector::Template { .. });
            prop_assert!(is_template);
            let topic = format!("{prefix}/{id}");
            prop_assert!(sel.matches(&topic), "{} should match {}", sel.source(), topic);
            let deeper = format!("{topic}/x");
            prop_assert!(!sel.matches(&deeper), "{} should not match {}", sel.source(), deeper);
        }

        #[test]
        fn parse_never_panics(s in any::<String>()) {
            let _ = Selector::parse_topic(&s);
            let _ = Selector::parse_exact(&s);
            let _ = Selector::parse_template(&s);
            let _ = Selector::parse_url_pattern(&s);
        }

        #[test]
        fn parse_never_panics_on_templatish(s in "[{}a-z0-9,.*:%+#/;?&=!@|A-F ]{0,40}") {
            if let Ok(sel) = Selector::parse_template(&s) {
                // A template always matches its own spelling.
                prop_assert!(sel.matches(&s));
            }
            let _ = Selector::parse_topic(&s);
        }

        #[test]
        fn parse_never_panics_on_patternish(s in "(https?://|urn:|/)?[a-z:*()\\[\\]{}?#.\\\\/+0-9]{0,40}") {
            let _ = Selector::parse_url_pattern(&s);
            let _ = Selector::parse_url_pattern_with_base(&s, "https://hub.example/.well-known/mercure");
        }

        #[test]
        fn matches_never_panics(t in any::<String>()) {
            let selectors = [
                Selector::Any,
                Selector::parse_exact("jobs/42").unwrap(),
                template("https://example.com/books/{id}{?q*}{#f}"),
                template("{+a}{.b}{/c*}{;d}{&e}"),
                url_pattern("https://example.com/books/:id"),
                url_pattern("*://*/*"),
                Selector::parse_url_pattern_with_base("/a/*", "https://hub.example/").unwrap(),
            ];
            for sel in &selectors {
                let _ = sel.matches(&t);
            }
        }

        #[test]
        fn matches_never_panics_on_urlish(t in "(https?://|urn:|/|//)?[a-zA-Z0-9:@%./?#\\[\\]-]{0,40}") {
            let sel = url_pattern("https://example.com/books/:id");
            let based = Selector::parse_url_pattern_with_base("/books/:id", "https://example.com/").unwrap();
            let _ = (sel.matches(&t), based.matches(&t));
        }
    }
}
