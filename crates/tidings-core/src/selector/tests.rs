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
    assert!(matches!(Selector::parse_topic("jobs/42"), Ok(Selector::Exact(t)) if t == "jobs/42"));
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
    for s in ["jobs/{id}", "https://example.com/:id", "**", " *"] {
        let sel = Selector::parse_exact(s).unwrap();
        assert_eq!(sel.as_exact(), Some(s));
        assert_matches(&sel, &[s], &["jobs/1", "x"]);
    }
}

/// The Mercure draft's reserved wildcard: `*` is recognised before the matcher type, so it
/// matches every topic as `match`, `match_urlpattern` (with or without a base) and `topic`.
#[test]
fn the_wildcard_matches_every_topic_whatever_the_matcher_type() {
    let topics = [
        "*",
        "x",
        "https://example.com/books/1",
        "/.well-known/mercure/subscriptions",
    ];
    for sel in [
        Selector::parse_exact("*").unwrap(),
        Selector::parse_url_pattern("*").unwrap(),
        Selector::parse_url_pattern_with_base("*", "https://hub.example/.well-known/mercure")
            .unwrap(),
        Selector::parse_topic("*").unwrap(),
        SelectorCache::default().parse_url_pattern("*").unwrap(),
    ] {
        assert!(matches!(sel, Selector::Any), "{sel:?}");
        assert_matches(&sel, &topics, &[]);
    }
}

/// The draft's matcher table: `exact` compares byte for byte (no normalisation, no relative
/// resolution), `urlpattern` follows the URL Pattern standard, case-sensitively.
#[test]
fn the_drafts_matcher_table() {
    let exact = Selector::parse_exact("https://example.com/books/1").unwrap();
    assert_matches(
        &exact,
        &["https://example.com/books/1"],
        &[
            "https://example.com/books/1/",
            "https://EXAMPLE.com/books/1",
            "/books/1",
        ],
    );
    let pattern = Selector::parse_url_pattern("https://example.com/books/:id").unwrap();
    assert_matches(
        &pattern,
        &["https://example.com/books/1", "https://EXAMPLE.com/books/2"],
        &[
            "https://example.com/Books/1",
            "https://example.com/books/1/x",
            "books/1",
        ],
    );
    let relative = Selector::parse_url_pattern_with_base(
        "/.well-known/mercure/subscriptions/exact/:topic/:subscriber",
        "https://hub.example.com/.well-known/mercure",
    )
    .unwrap();
    assert_matches(
        &relative,
        &[
            "/.well-known/mercure/subscriptions/exact/a/b",
            "https://hub.example.com/.well-known/mercure/subscriptions/exact/a/b",
        ],
        &["https://other.example/.well-known/mercure/subscriptions/exact/a/b"],
    );
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
    let abs = Selector::parse_url_pattern_with_base("https://example.com/books/:id", hub).unwrap();
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
