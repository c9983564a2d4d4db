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
    /// Tie-break among equal priorities, lower first ([`l4::rule::match_order`]).
    pub precedence: u32,
    pub rule: HttpRule,
    pub target: T,
}

/// Routes in match order: priority descending, then precedence, then name ascending.
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
            l4::rule::match_order(
                (a.priority, a.precedence, &a.name),
                (b.priority, b.precedence, &b.name),
            )
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

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::time::Instant;

    use http::HeaderMap;

    use super::*;

    fn route(name: &str, rule: &str, priority: i64) -> Route<String> {
        let rule = HttpRule::compile(rule).unwrap();
        let priority = if priority == 0 {
            rule.default_priority()
        } else {
            priority
        };
        Route {
            name: name.to_owned(),
            priority,
            precedence: 0,
            rule,
            target: name.to_owned(),
        }
    }

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

    fn find<'t>(table: &'t Table<String>, host: &str, path: &str) -> Option<&'t str> {
        let headers = HeaderMap::new();
        let r = RequestView::new("GET", host, path, "", &headers, CLIENT);
        table.find(&r).map(|route| route.name.as_str())
    }

    #[test]
    fn longer_rule_wins_by_default() {
        let table = Table::new(vec![
            route("short", "Host(`a.com`)", 0),
            route("long", "Host(`a.com`) && PathPrefix(`/api`)", 0),
        ]);
        assert_eq!(find(&table, "a.com", "/api/x"), Some("long"));
        assert_eq!(find(&table, "a.com", "/other"), Some("short"));
        assert_eq!(find(&table, "b.com", "/api"), None);
    }

    #[test]
    fn explicit_priority_and_then_name_order_routes() {
        let table = Table::new(vec![
            route("b", "PathPrefix(`/`)", 5),
            route("a", "PathPrefix(`/`)", 5),
            route("low", "Host(`a.com`) && PathPrefix(`/`)", 1),
            route("high", "PathPrefix(`/x`)", 9),
        ]);
        let names: Vec<&str> = table.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["high", "a", "b", "low"]);
        assert_eq!(find(&table, "a.com", "/y"), Some("a"));
        assert_eq!(find(&table, "a.com", "/x"), Some("high"));
    }

    #[test]
    fn indexed_and_fallback_routes_interleave_by_priority() {
        let table = Table::new(vec![
            route("host-high", "Host(`a.com`) && Path(`/1`)", 30),
            route("catch-mid", "PathPrefix(`/`)", 20),
            route("host-low", "Host(`a.com`)", 10),
            route("wild", "Host(`*.a.com`)", 25),
        ]);
        assert_eq!(find(&table, "a.com", "/1"), Some("host-high"));
        assert_eq!(find(&table, "a.com", "/2"), Some("catch-mid"));
        assert_eq!(find(&table, "x.a.com", "/2"), Some("wild"));
        assert_eq!(find(&table, "x.y.a.com", "/2"), Some("catch-mid"));
        assert_eq!(find(&table, "", "/2"), Some("catch-mid"));
    }

    #[test]
    fn a_route_listed_under_several_hosts_is_found_through_each() {
        let table = Table::new(vec![route(
            "multi",
            "Host(`a.com`) || Host(`B.com`) || Host(`*.c.com`)",
            0,
        )]);
        assert_eq!(find(&table, "a.com", "/"), Some("multi"));
        assert_eq!(find(&table, "b.com:8080", "/"), Some("multi"));
        assert_eq!(find(&table, "x.c.com", "/"), Some("multi"));
        assert_eq!(find(&table, "c.com", "/"), None);
        assert!(!table.is_empty());
        assert_eq!(table.len(), 1);
    }

    /// xorshift64*: enough to spread generated cases, and repeatable.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
        }

        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[self.below(items.len())]
        }
    }

    const HOSTS: &[&str] = &["a.com", "b.com", "x.a.com", "y.b.com", "c.org", "A.COM", ""];
    const PATHS: &[&str] = &["/", "/api", "/api/v1", "/static/x.css", "/a/../api"];

    fn generated_rule(rng: &mut Rng) -> String {
        let h = |rng: &mut Rng| rng.pick(&["a.com", "b.com", "c.org", "d.net"]);
        let p = |rng: &mut Rng| rng.pick(&["/", "/api", "/static", "/zzz"]);
        match rng.below(10) {
            0 => format!("Host(`{}`)", h(rng)),
            1 => format!("Host(`{}`) || Host(`{}`)", h(rng), h(rng)),
            2 => format!("Host(`{}`) && PathPrefix(`{}`)", h(rng), p(rng)),
            3 => format!("PathPrefix(`{}`) && Host(`{}`)", p(rng), h(rng)),
            4 => format!("Host(`*.{}`)", h(rng)),
            5 => format!("!Host(`{}`)", h(rng)),
            6 => format!("PathPrefix(`{}`)", p(rng)),
            7 => format!("Host(`{}`) || PathPrefix(`{}`)", h(rng), p(rng)),
            8 => "Host(`*`) && Method(`GET`)".to_owned(),
            _ => format!("HostRegexp(`^{}`) && Path(`{}`)", &h(rng)[..1], p(rng)),
        }
    }

    #[test]
    fn find_returns_what_a_linear_scan_in_priority_order_returns() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let headers = HeaderMap::new();
        for _ in 0..200 {
            let routes: Vec<Route<String>> = (0..rng.below(40) + 1)
                .map(|n| {
                    let rule = generated_rule(&mut rng);
                    // Few distinct priorities, so that ties ordered by name are common.
                    route(
                        &format!("r{}", rng.below(1000) + n),
                        &rule,
                        1 + rng.below(4) as i64,
                    )
                })
                .collect();
            let table = Table::new(routes);
            for _ in 0..50 {
                let host = rng.pick(HOSTS);
                let path = rng.pick(PATHS);
                let r = RequestView::new("GET", host, path, "", &headers, CLIENT);
                let expected = table.iter().find(|route| route.rule.matches(&r));
                assert_eq!(
                    table.find(&r).map(|route| &route.name),
                    expected.map(|route| &route.name),
                    "host {host:?} path {path:?} table {:?}",
                    table
                        .iter()
                        .map(|r| (&r.name, r.rule.source()))
                        .collect::<Vec<_>>()
                );
            }
        }
    }

    /// Run with `cargo test -p sallyport-l7 --release -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing, prints ns per lookup"]
    fn lookup_cost_stays_flat_with_exact_host_routers() {
        let headers = HeaderMap::new();
        for n in [10usize, 10_000, 100_000] {
            let table = Table::new(
                (0..n)
                    .map(|i| route(&format!("r{i}"), &format!("Host(`h{i}.example.com`)"), 0))
                    .collect(),
            );
            let hosts: Vec<String> = (0..1024)
                .map(|i| format!("h{}.example.com", i * 7919 % n))
                .collect();
            let views: Vec<RequestView> = hosts
                .iter()
                .map(|h| RequestView::new("GET", h, "/", "", &headers, CLIENT))
                .collect();
            let rounds = 1000;
            let start = Instant::now();
            let mut found = 0;
            for _ in 0..rounds {
                for v in &views {
                    found += usize::from(table.find(v).is_some());
                }
            }
            let ns = start.elapsed().as_nanos() / (rounds * views.len()) as u128;
            assert_eq!(found, rounds * views.len());
            println!("{n} exact-host routers: {ns} ns/lookup");
        }
    }
}
