//! The priority-ordered table of HTTP routes of one entrypoint and the first-match lookup over
//! it, indexed by host so that the cost of a lookup does not grow with the number of routers
//! that name other hosts. Building routes from configuration is not done here.

use std::collections::HashMap;

use crate::request::RequestView;
use crate::rule::{HostPattern, HttpRule};

/// A router as the table sees it: what to match and where matching requests go.
#[derive(Debug, Clone)]
pub struct Route<T> {
    pub name: String,
    /// Already resolved: a configured priority of 0 is replaced by
    /// [`HttpRule::default_priority`] before the route gets here.
    pub priority: i64,
    pub rule: HttpRule,
    pub target: T,
}

/// Routes in match order: priority descending, then name ascending.
///
/// Traefik leaves the order of equal priorities undefined; ordering them by name makes our
/// choice repeatable across reloads and runs (as `l4::tcp::router` does).
///
/// Lookup gives exactly the route a scan in that order would. Routes whose rule requires one
/// of some hosts ([`HttpRule::required_hosts`]) are listed under each exact name or wildcard
/// suffix; the others are in `fallback`. A request only needs the lists for its own host and
/// its parent domain plus `fallback`, walked together by position.
#[derive(Debug, Clone)]
pub struct Table<T> {
    routes: Vec<Route<T>>,
    /// Exact lower-case name to positions in `routes`, ascending.
    exact: HashMap<String, Vec<usize>>,
    /// `example.com` for `*.example.com`, to positions, ascending.
    wildcard: HashMap<String, Vec<usize>>,
    /// Positions of the routes no host rules out, ascending.
    fallback: Vec<usize>,
}

impl<T> Table<T> {
    pub fn new(mut routes: Vec<Route<T>>) -> Self {
        routes.sort_by(|a, b| {
            b.priority
                .cmp(&a.priority)
                .then_with(|| a.name.cmp(&b.name))
        });
        let mut exact: HashMap<String, Vec<usize>> = HashMap::new();
        let mut wildcard: HashMap<String, Vec<usize>> = HashMap::new();
        let mut fallback = Vec::new();
        for (i, route) in routes.iter().enumerate() {
            // `(is_wildcard, key)`; `required_hosts` never lists `*`, but if it did the route
            // would belong in `fallback`.
            let keys: Option<Vec<(bool, &str)>> = route.rule.required_hosts().and_then(|hosts| {
                hosts
                    .into_iter()
                    .map(|host| match host {
                        HostPattern::Exact(name) => Some((false, name.as_str())),
                        HostPattern::Wildcard(suffix) => {
                            Some((true, suffix.strip_prefix('.').unwrap_or(suffix)))
                        }
                        HostPattern::Any => None,
                    })
                    .collect()
            });
            let Some(keys) = keys else {
                fallback.push(i);
                continue;
            };
            for (is_wildcard, key) in keys {
                let map = if is_wildcard {
                    &mut wildcard
                } else {
                    &mut exact
                };
                let list = map.entry(key.to_owned()).or_default();
                // `Host(a) || Host(a)` names the same host twice.
                if list.last() != Some(&i) {
                    list.push(i);
                }
            }
        }
        Table {
            routes,
            exact,
            wildcard,
            fallback,
        }
    }

    /// The first route, in match order, whose rule matches the request.
    pub fn find(&self, r: &RequestView<'_>) -> Option<&Route<T>> {
        let host = r.host();
        let none: &[usize] = &[];
        let exact = self.exact.get(host).map_or(none, Vec::as_slice);
        // The wildcard `*.example.com` covers `a.example.com`: one non-empty label in front.
        let wildcard = match host.split_once('.') {
            Some((label, parent)) if !label.is_empty() => {
                self.wildcard.get(parent).map_or(none, Vec::as_slice)
            }
            _ => none,
        };
        let mut lists = [exact, wildcard, self.fallback.as_slice()];
        loop {
            // The smallest head among the three lists is the next route in match order.
            let (which, next) = lists
                .iter()
                .enumerate()
                .filter_map(|(n, list)| list.first().map(|&head| (n, head)))
                .min_by_key(|&(_, head)| head)?;
            lists[which] = &lists[which][1..];
            let route = &self.routes[next];
            if route.rule.matches(r) {
                return Some(route);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// The routes in match order.
    pub fn iter(&self) -> std::slice::Iter<'_, Route<T>> {
        self.routes.iter()
    }
}

impl<'a, T> IntoIterator for &'a Table<T> {
    type Item = &'a Route<T>;
    type IntoIter = std::slice::Iter<'a, Route<T>>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}
