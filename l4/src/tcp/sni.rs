//! The table of server names an entrypoint terminates TLS for on behalf of its HTTPS routers
//! (Traefik's HTTPS muxer): one entry per `Host()` domain of a TLS HTTP router, carrying the
//! TLS option that router asked for, and a catch-all for TLS HTTP routers without a domain.
//!
//! Lookup is a hash probe for the exact name, then one for the parent domain (`*.x` matches
//! exactly one label), so it costs the same with ten domains or a hundred thousand.

use std::collections::HashMap;

/// Where a server name leads.
#[derive(Debug, Clone)]
pub struct SniTable<T> {
    exact: HashMap<String, T>,
    /// `example.com` for `*.example.com`.
    wildcard: HashMap<String, T>,
    catch_all: Option<T>,
}

/// How a name was matched: catch-all matches rank below TCP routers' specific ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SniMatch {
    Specific,
    CatchAll,
}

impl<T> Default for SniTable<T> {
    fn default() -> Self {
        SniTable {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            catch_all: None,
        }
    }
}

impl<T> SniTable<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `domain` (`api.example.com`, `*.example.com`, or `*` for the catch-all).
    /// Returns the entry already there, if any, leaving it in place: the caller decides
    /// what a conflict means.
    pub fn insert(&mut self, domain: &str, target: T) -> Result<(), (T, &T)> {
        let domain = normalize(domain);
        let slot = if domain == "*" {
            if self.catch_all.is_none() {
                self.catch_all = Some(target);
                return Ok(());
            }
            return match &self.catch_all {
                Some(existing) => Err((target, existing)),
                None => Ok(()),
            };
        } else if let Some(parent) = domain.strip_prefix("*.") {
            self.wildcard.entry(parent.to_owned())
        } else {
            self.exact.entry(domain)
        };
        match slot {
            std::collections::hash_map::Entry::Occupied(e) => Err((target, e.into_mut())),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(target);
                Ok(())
            }
        }
    }

    /// Replaces the entry for `domain`.
    pub fn replace(&mut self, domain: &str, target: T) {
        let domain = normalize(domain);
        if domain == "*" {
            self.catch_all = Some(target);
        } else if let Some(parent) = domain.strip_prefix("*.") {
            self.wildcard.insert(parent.to_owned(), target);
        } else {
            self.exact.insert(domain, target);
        }
    }

    /// The entry for a ClientHello's server name (`None` when it sent none).
    pub fn find(&self, sni: Option<&str>) -> Option<(&T, SniMatch)> {
        if let Some(name) = sni
            .map(|s| s.trim_end_matches('.'))
            .filter(|s| !s.is_empty())
        {
            let lower;
            let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
                lower = name.to_ascii_lowercase();
                lower.as_str()
            } else {
                name
            };
            if let Some(t) = self.exact.get(name) {
                return Some((t, SniMatch::Specific));
            }
            if let Some((_, parent)) = name.split_once('.')
                && let Some(t) = self.wildcard.get(parent)
            {
                return Some((t, SniMatch::Specific));
            }
        }
        self.catch_all.as_ref().map(|t| (t, SniMatch::CatchAll))
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty() && self.catch_all.is_none()
    }

    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len() + usize::from(self.catch_all.is_some())
    }
}

fn normalize(domain: &str) -> String {
    domain.trim().trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_beats_wildcard_beats_catch_all() {
        let mut t = SniTable::new();
        t.insert("API.example.com.", "exact").unwrap();
        t.insert("*.example.com", "wild").unwrap();
        t.insert("*", "all").unwrap();
        assert_eq!(
            t.find(Some("api.EXAMPLE.com")),
            Some((&"exact", SniMatch::Specific))
        );
        assert_eq!(
            t.find(Some("www.example.com")),
            Some((&"wild", SniMatch::Specific))
        );
        // `*.x` is exactly one label.
        assert_eq!(
            t.find(Some("a.b.example.com")),
            Some((&"all", SniMatch::CatchAll))
        );
        assert_eq!(t.find(None), Some((&"all", SniMatch::CatchAll)));
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn no_catch_all_means_no_match_for_unknown_names() {
        let mut t = SniTable::new();
        t.insert("a.test", 1).unwrap();
        assert_eq!(t.find(Some("b.test")), None);
        assert_eq!(t.find(None), None);
        assert_eq!(t.find(Some("")), None);
    }

    #[test]
    fn a_second_entry_for_a_name_is_reported_not_stored() {
        let mut t = SniTable::new();
        t.insert("a.test", "first").unwrap();
        let (rejected, kept) = t.insert("A.test", "second").unwrap_err();
        assert_eq!((rejected, *kept), ("second", "first"));
        t.replace("a.test", "third");
        assert_eq!(t.find(Some("a.test")), Some((&"third", SniMatch::Specific)));
    }
}
