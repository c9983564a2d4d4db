//! The priority-ordered table of TCP routes of one entrypoint (or one of its muxers) and the
//! first-match lookup over it. Building routes from configuration is not done here.

use crate::tcp::rule::{ConnInfo, TcpRule};

/// A router as the table sees it: what to match and where matching connections go.
#[derive(Debug, Clone)]
pub struct Route<T> {
    pub name: String,
    /// Already resolved: a configured priority of 0 is replaced by
    /// [`TcpRule::default_priority`] before the route gets here.
    pub priority: i64,
    /// Tie-break among equal priorities, lower first ([`crate::rule::match_order`]).
    pub precedence: u32,
    pub rule: TcpRule,
    pub target: T,
}

impl<T> Route<T> {
    fn order_key(&self) -> (i64, u32, &str) {
        (self.priority, self.precedence, &self.name)
    }
}

/// Routes in match order ([`crate::rule::match_order`]).
#[derive(Debug, Clone)]
pub struct RouteTable<T> {
    routes: Vec<Route<T>>,
}

impl<T> RouteTable<T> {
    pub fn new(mut routes: Vec<Route<T>>) -> Self {
        routes.sort_by(|a, b| crate::rule::match_order(a.order_key(), b.order_key()));
        RouteTable { routes }
    }

    /// The first route whose rule matches the connection.
    pub fn find(&self, c: &ConnInfo) -> Option<&Route<T>> {
        self.routes.iter().find(|r| r.rule.matches(c))
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

impl<'a, T> IntoIterator for &'a RouteTable<T> {
    type Item = &'a Route<T>;
    type IntoIter = std::slice::Iter<'a, Route<T>>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, rule: &str, priority: i64) -> Route<&'static str> {
        let rule = TcpRule::compile(rule, true).unwrap();
        let priority = if priority == 0 {
            rule.default_priority()
        } else {
            priority
        };
        Route {
            name: name.into(),
            priority,
            precedence: 0,
            rule,
            target: "",
        }
    }

    fn find<'a>(table: &'a RouteTable<&'static str>, c: &ConnInfo) -> Option<&'a str> {
        table.find(c).map(|r| r.name.as_str())
    }

    fn conn<'a>(sni: Option<&'a str>, alpn: &'a [Vec<u8>], ip: &str) -> ConnInfo<'a> {
        ConnInfo {
            sni,
            alpn,
            client_ip: ip.parse().unwrap(),
        }
    }

    fn sni(name: &str) -> ConnInfo<'_> {
        conn(Some(name), &[], "192.0.2.1")
    }

    #[test]
    fn longer_rules_win_and_catch_all_comes_last() {
        let table = RouteTable::new(vec![
            route("catch-all", "HostSNI(`*`)", 0),
            route("wildcard", "HostSNI(`*.example.com`)", 0),
            route("exact", "HostSNI(`api.example.com`)", 0),
        ]);
        let order: Vec<&str> = table.iter().map(|r| r.name.as_str()).collect();
        // "exact" and "wildcard" are both 26 bytes long: the name breaks the tie.
        assert_eq!(order, ["exact", "wildcard", "catch-all"]);
        assert_eq!(find(&table, &sni("api.example.com")), Some("exact"));
        assert_eq!(find(&table, &sni("www.example.com")), Some("wildcard"));
        assert_eq!(find(&table, &sni("other.org")), Some("catch-all"));
        assert_eq!(
            find(&table, &conn(None, &[], "192.0.2.1")),
            Some("catch-all")
        );
    }

    #[test]
    fn explicit_priority_beats_rule_length() {
        let table = RouteTable::new(vec![
            route("exact", "HostSNI(`api.example.com`)", 0),
            route("wildcard", "HostSNI(`*.example.com`)", 100),
            route("catch-all", "HostSNI(`*`)", 1000),
        ]);
        assert_eq!(find(&table, &sni("api.example.com")), Some("catch-all"));
        let table = RouteTable::new(vec![
            route("exact", "HostSNI(`api.example.com`)", 0),
            route("wildcard", "HostSNI(`*.example.com`)", 100),
        ]);
        assert_eq!(find(&table, &sni("api.example.com")), Some("wildcard"));
    }

    #[test]
    fn equal_priorities_are_ordered_by_name() {
        let routes = || {
            vec![
                route("b", "HostSNI(`*`)", 5),
                route("c", "HostSNI(`*`)", 5),
                route("a", "HostSNI(`*`)", 5),
            ]
        };
        let table = RouteTable::new(routes());
        assert_eq!(find(&table, &sni("x")), Some("a"));
        let mut reversed = routes();
        reversed.reverse();
        assert_eq!(find(&RouteTable::new(reversed), &sni("x")), Some("a"));
    }

    #[test]
    fn client_ip_routes_v4_v6_and_networks() {
        let table = RouteTable::new(vec![
            route("v4-host", "ClientIP(`10.0.0.1`)", 3),
            route("v4-net", "ClientIP(`10.0.0.0/8`)", 2),
            route("v6-net", "ClientIP(`fd00::/8`)", 1),
        ]);
        assert_eq!(find(&table, &conn(None, &[], "10.0.0.1")), Some("v4-host"));
        assert_eq!(
            find(&table, &conn(None, &[], "::ffff:10.0.0.1")),
            Some("v4-host")
        );
        assert_eq!(find(&table, &conn(None, &[], "10.9.9.9")), Some("v4-net"));
        assert_eq!(find(&table, &conn(None, &[], "fd12::1")), Some("v6-net"));
        assert_eq!(find(&table, &conn(None, &[], "192.0.2.1")), None);
    }

    #[test]
    fn alpn_selects_among_routes_for_one_name() {
        let table = RouteTable::new(vec![
            route("h2", "HostSNI(`a.com`) && ALPN(`h2`)", 0),
            route("any", "HostSNI(`a.com`)", 0),
        ]);
        let h2 = [b"h2".to_vec()];
        let h1 = [b"http/1.1".to_vec()];
        assert_eq!(
            find(&table, &conn(Some("a.com"), &h2, "192.0.2.1")),
            Some("h2")
        );
        assert_eq!(
            find(&table, &conn(Some("a.com"), &h1, "192.0.2.1")),
            Some("any")
        );
    }

    #[test]
    fn negation_excludes_clients() {
        let table = RouteTable::new(vec![route(
            "not-internal",
            "HostSNI(`a.com`) && !ClientIP(`10.0.0.0/8`)",
            0,
        )]);
        assert_eq!(
            find(&table, &conn(Some("a.com"), &[], "192.0.2.1")),
            Some("not-internal")
        );
        assert_eq!(find(&table, &conn(Some("a.com"), &[], "10.1.1.1")), None);
    }

    #[test]
    fn empty_table_finds_nothing() {
        let table: RouteTable<&str> = RouteTable::new(Vec::new());
        assert!(table.is_empty());
        assert_eq!(table.len(), 0);
        assert!(table.find(&sni("a.com")).is_none());
    }
}
