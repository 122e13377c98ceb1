//! Compiled pattern selectors shared by source: 10,000 subscribers that send `jobs/{id}` hold
//! one compiled regex between them, not 10,000.

use std::collections::HashMap;
use std::sync::{Mutex, Weak};

use super::url_pattern::BoundedRegex;
use super::*;

/// Entries kept at least before the cache sweeps out those nobody holds any more.
const MIN_SWEEP: usize = 64;

/// Parses selectors like [`Selector::parse_topic`] and [`Selector::parse_url_pattern`], but
/// hands out the compiled form of a template or URL pattern it has compiled before, as long as
/// some selector still holds it. The cache holds compiled forms only weakly: the memory goes
/// with the last subscriber that used it.
#[derive(Debug, Default)]
pub struct SelectorCache {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    templates: HashMap<Arc<str>, Weak<Regex>>,
    url_patterns: HashMap<Arc<str>, Weak<urlpattern::UrlPattern<BoundedRegex>>>,
    /// Entries after the last sweep; the next one runs when the maps hold twice as many.
    swept: usize,
}

impl Inner {
    fn sweep_if_due(&mut self) {
        let len = self.templates.len() + self.url_patterns.len();
        if len < (2 * self.swept).max(MIN_SWEEP) {
            return;
        }
        self.templates.retain(|_, w| w.strong_count() > 0);
        self.url_patterns.retain(|_, w| w.strong_count() > 0);
        self.swept = self.templates.len() + self.url_patterns.len();
    }
}

impl SelectorCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every update is a single map operation, so a poisoned lock still guards valid maps.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// [`Selector::parse_topic`], sharing compiled templates.
    pub fn parse_topic(&self, s: &str) -> Result<Selector, SelectorError> {
        check_len(s)?;
        if s == "*" || !s.contains('{') {
            return Selector::parse_topic(s);
        }
        let found = self
            .lock()
            .templates
            .get_key_value(s)
            .and_then(|(source, regex)| {
                Some(Selector::Template {
                    source: source.clone(),
                    regex: regex.upgrade()?,
                })
            });
        if let Some(selector) = found {
            return Ok(selector);
        }
        // Compiled outside the lock: a large template takes a while.
        let selector = Selector::parse_template(s)?;
        if let Selector::Template { source, regex } = &selector {
            let mut inner = self.lock();
            inner.sweep_if_due();
            inner
                .templates
                .insert(source.clone(), Arc::downgrade(regex));
        }
        Ok(selector)
    }

    /// [`Selector::parse_url_pattern`], sharing compiled patterns.
    pub fn parse_url_pattern(&self, s: &str) -> Result<Selector, SelectorError> {
        check_len(s)?;
        let found = self
            .lock()
            .url_patterns
            .get_key_value(s)
            .and_then(|(source, pattern)| {
                Some(Selector::UrlPattern {
                    source: source.clone(),
                    matcher: UrlPatternMatcher::from_shared(pattern.upgrade()?),
                })
            });
        if let Some(selector) = found {
            return Ok(selector);
        }
        let selector = Selector::parse_url_pattern(s)?;
        if let Selector::UrlPattern { source, matcher } = &selector {
            let mut inner = self.lock();
            inner.sweep_if_due();
            inner
                .url_patterns
                .insert(source.clone(), matcher.downgrade());
        }
        Ok(selector)
    }

    /// Compiled forms in the cache, live or not yet swept.
    pub fn len(&self) -> usize {
        let inner = self.lock();
        inner.templates.len() + inner.url_patterns.len()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_template_is_compiled_once_while_held() {
        let cache = SelectorCache::default();
        let a = cache.parse_topic("jobs/{id}").unwrap();
        let b = cache.parse_topic("jobs/{id}").unwrap();
        let (Selector::Template { regex: ra, .. }, Selector::Template { regex: rb, .. }) = (&a, &b)
        else {
            panic!("templates expected");
        };
        assert!(Arc::ptr_eq(ra, rb));
        assert!(b.matches("jobs/1") && !b.matches("other/1"));
        let weak = Arc::downgrade(ra);
        drop((a, b));
        assert_eq!(weak.strong_count(), 0, "the cache holds it only weakly");
        let c = cache.parse_topic("jobs/{id}").unwrap();
        assert!(c.matches("jobs/2"));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn url_patterns_are_shared_and_other_forms_pass_through() {
        let cache = SelectorCache::default();
        let a = cache.parse_url_pattern("https://ex.com/jobs/:id").unwrap();
        let b = cache.parse_url_pattern("https://ex.com/jobs/:id").unwrap();
        let (Selector::UrlPattern { matcher: ma, .. }, Selector::UrlPattern { matcher: mb, .. }) =
            (&a, &b)
        else {
            panic!("URL patterns expected");
        };
        assert!(ma.downgrade().ptr_eq(&mb.downgrade()));
        assert!(b.matches("https://ex.com/jobs/7"));
        assert!(matches!(cache.parse_topic("*"), Ok(Selector::Any)));
        assert!(matches!(cache.parse_topic("a/b"), Ok(Selector::Exact(_))));
        assert!(cache.parse_topic("jobs/{id").is_err());
        assert!(cache
            .parse_topic(&"x".repeat(MAX_SELECTOR_LEN + 1))
            .is_err());
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn dead_entries_are_swept() {
        let cache = SelectorCache::default();
        for i in 0..10 * MIN_SWEEP {
            cache.parse_topic(&format!("t{i}/{{id}}")).unwrap();
        }
        assert!(cache.len() <= MIN_SWEEP, "{} entries left", cache.len());
    }
}
