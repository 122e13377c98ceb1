//! URI templates (RFC 6570) as anchored regexes, following `yosida95/uritemplate/v3`.

use super::*;

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

    /// The operator an expression body's first character names, or `None` when it names none
    /// (a simple expression: the character starts the first varname).
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
                let _ = write!(out, "{{0,{}}}", vars - 1);
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
pub(super) fn template_regex(s: &str) -> Result<Regex, SelectorError> {
    let pattern = template_pattern(s).map_err(SelectorError::Template)?;
    build_regex(&pattern).map_err(|e| {
        SelectorError::Template(match e {
            regex::Error::CompiledTooBig(_) => "template is too complex".into(),
            other => one_line(&other.to_string()),
        })
    })
}

/// The regex source for a template; the error is a short reason.
pub(super) fn template_pattern(s: &str) -> Result<String, String> {
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

pub(super) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
