//! Routers that can never match: on every entrypoint they are on, a router tried before them
//! (higher priority, or equal priority and a name sorting first) in the same table matches
//! every connection or request they would.
//!
//! The proof is deliberately narrow so that a warning is always right: both rules are read
//! as alternatives of conjunctions of matchers (no negation), and the earlier rule covers the
//! later one when each alternative of the later one contains, for every matcher of some
//! alternative of the earlier one, a matcher that implies it (`Host(a)` implies `Host(a)`
//! and `Host(*.b)` when `a` is one label under `b`; `Path(p)` and `PathPrefix(p)` imply
//! `PathPrefix(q)` when `p` starts with `q`; any other matcher only implies an identical
//! one). `Host(*)` and `HostSNI(*)` hold for everything.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};

use l4::rule::Expr;
use l4::tcp::rule::{ConnInfo, SniPattern, TcpMatcher};
use l7::rule::{HostPattern, HttpMatcher};

use crate::config::{ConfigError, DynamicConfig, Location, Report, StaticConfig};
use crate::explain::tables::entrypoint_tables;

/// More alternatives than this after expanding `&&` over `||`: no proof is attempted.
const MAX_ALTERNATIVES: usize = 64;

/// Where one router stands on one entrypoint.
struct Standing {
    kind: &'static str,
    priority: i64,
    location: Option<Location>,
    /// entrypoint → the router that shadows it there (with its priority), if any.
    per_entrypoint: BTreeMap<String, Option<(String, i64)>>,
}

/// A warning for every router that can never match.
pub fn shadowed_routers(
    st: &StaticConfig,
    dy: &DynamicConfig,
    report: &Report,
) -> Vec<ConfigError> {
    let mut routers: BTreeMap<(&'static str, String), Standing> = BTreeMap::new();
    let mut note = |kind: &'static str,
                    name: &str,
                    priority: i64,
                    location: &Option<Location>,
                    ep: &str,
                    by: Option<(String, i64)>| {
        routers
            .entry((kind, name.to_owned()))
            .or_insert_with(|| Standing {
                kind,
                priority,
                location: location.clone(),
                per_entrypoint: BTreeMap::new(),
            })
            .per_entrypoint
            .insert(ep.to_owned(), by);
    };
    for ep in st.entry_points.keys() {
        let t = entrypoint_tables(st, dy, report, ep);
        for table in [&t.http_plain, &t.http_tls] {
            let rules: Vec<_> = table.iter().map(|r| r.rule.expr()).collect();
            for (r, by) in table.iter().zip(first_coverers(&rules, &HTTP)) {
                let by = by.map(|j| (table[j].name.clone(), table[j].priority));
                note("HTTP", &r.name, r.priority, &r.location, ep, by);
            }
        }
        for table in [&t.tcp_plain, &t.tcp_tls] {
            let rules: Vec<_> = table.iter().map(|r| r.rule.expr()).collect();
            for (r, by) in table.iter().zip(first_coverers(&rules, &TCP)) {
                let by = by.map(|j| (table[j].name.clone(), table[j].priority));
                note("TCP", &r.name, r.priority, &r.location, ep, by);
            }
        }
    }
    let mut out = Vec::new();
    for ((_, name), s) in routers {
        if s.per_entrypoint.values().any(Option::is_none) {
            continue;
        }
        // Entrypoints grouped by the router that shadows there, in entrypoint order.
        let mut by: Vec<(&(String, i64), Vec<&str>)> = Vec::new();
        for (ep, shadower) in &s.per_entrypoint {
            let Some(shadower) = shadower else { continue };
            match by.iter_mut().find(|(b, _)| *b == shadower) {
                Some((_, eps)) => eps.push(ep),
                None => by.push((shadower, vec![ep])),
            }
        }
        let reasons: Vec<String> = by
            .iter()
            .map(|((name, priority), eps)| {
                format!(
                    "on entrypoint{} {}, {} router \"{name}\" (priority {priority}) is tried first and matches everything this one would",
                    if eps.len() > 1 { "s" } else { "" },
                    eps.join(", "),
                    s.kind
                )
            })
            .collect();
        out.push(ConfigError {
            location: s.location,
            message: format!(
                "{} router \"{name}\" (priority {}) can never match: {}",
                s.kind,
                s.priority,
                reasons.join("; ")
            ),
        });
    }
    out
}

/// How matchers of one kind relate, for the proof.
struct Logic<M> {
    /// Whether an input `have` accepts is always accepted by `needed`.
    implies: fn(&M, &M) -> bool,
    /// Whether the matcher accepts every input.
    always: fn(&M) -> bool,
    /// The name a host matcher requires (exact, or `.suffix` for a wildcard).
    name: fn(&M) -> Option<Name<'_>>,
}

#[derive(Clone, Copy)]
enum Name<'a> {
    Exact(&'a str),
    /// `.example.com` for `*.example.com`.
    Wildcard(&'a str),
}

const HTTP: Logic<HttpMatcher> = Logic {
    implies: http_implies,
    always: http_always,
    name: |m| match m {
        HttpMatcher::Host(HostPattern::Exact(n)) => Some(Name::Exact(n)),
        HttpMatcher::Host(HostPattern::Wildcard(w)) => Some(Name::Wildcard(w)),
        _ => None,
    },
};

const TCP: Logic<TcpMatcher> = Logic {
    implies: tcp_implies,
    always: tcp_always,
    name: |m| match m {
        TcpMatcher::HostSni(SniPattern::Exact(n)) => Some(Name::Exact(n)),
        TcpMatcher::HostSni(SniPattern::Wildcard(w)) => Some(Name::Wildcard(w)),
        _ => None,
    },
};

/// For each rule of a table in match order, the position of the first earlier rule that
/// covers it.
///
/// Comparing every pair would be quadratic in tables of many thousand routers. An earlier
/// rule each of whose alternatives requires a host name can only cover a rule that names a
/// host that name accepts (a name matcher is only implied by a name matcher), so such rules
/// are indexed by one required name per alternative and looked up by every name the later
/// rule has; the others are tried for every rule.
fn first_coverers<M>(rules: &[&Expr<M>], logic: &Logic<M>) -> Vec<Option<usize>> {
    let mut exact: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut wildcard: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut fallback: Vec<usize> = Vec::new();
    let mut all: Vec<Option<Vec<Vec<&M>>>> = Vec::with_capacity(rules.len());
    let mut out = Vec::with_capacity(rules.len());
    for (i, rule) in rules.iter().enumerate() {
        let alts = alternatives(rule);
        let found = alts.as_ref().and_then(|later| {
            let mut candidates = fallback.clone();
            for m in later.iter().flatten() {
                match (logic.name)(m) {
                    Some(Name::Exact(n)) => {
                        candidates.extend(exact.get(n).into_iter().flatten());
                        if let Some(dot) = n.find('.') {
                            candidates.extend(wildcard.get(&n[dot..]).into_iter().flatten());
                        }
                    }
                    Some(Name::Wildcard(w)) => {
                        candidates.extend(wildcard.get(w).into_iter().flatten())
                    }
                    None => {}
                }
            }
            candidates.sort_unstable();
            candidates.dedup();
            candidates.into_iter().find(|&j| {
                all[j]
                    .as_ref()
                    .is_some_and(|earlier| covers(earlier, later, logic))
            })
        });
        out.push(found);
        if let Some(alts) = &alts {
            // One required name per alternative, or none when an alternative has none.
            let names: Option<Vec<Name<'_>>> = alts
                .iter()
                .map(|alt| alt.iter().find_map(|m| (logic.name)(m)))
                .collect();
            match names {
                Some(names) => {
                    for name in names {
                        let list = match name {
                            Name::Exact(n) => exact.entry(n).or_default(),
                            Name::Wildcard(w) => wildcard.entry(w).or_default(),
                        };
                        if list.last() != Some(&i) {
                            list.push(i);
                        }
                    }
                }
                None => fallback.push(i),
            }
        }
        all.push(alts);
    }
    out
}

/// Whether every input `later` matches is matched by `earlier` (see the module docs), both
/// given as [`alternatives`].
fn covers<M>(earlier: &[Vec<&M>], later: &[Vec<&M>], logic: &Logic<M>) -> bool {
    later.iter().all(|l| {
        earlier.iter().any(|e| {
            e.iter().all(|needed| {
                (logic.always)(needed) || l.iter().any(|have| (logic.implies)(have, needed))
            })
        })
    })
}

/// `expr` as alternatives of conjunctions of matchers; `None` with a negation or too many.
fn alternatives<M>(expr: &Expr<M>) -> Option<Vec<Vec<&M>>> {
    match expr {
        Expr::Leaf(m) => Some(vec![vec![m]]),
        Expr::Not(_) => None,
        Expr::Or(a, b) => {
            let mut out = alternatives(a)?;
            out.extend(alternatives(b)?);
            (out.len() <= MAX_ALTERNATIVES).then_some(out)
        }
        Expr::And(a, b) => {
            let (a, b) = (alternatives(a)?, alternatives(b)?);
            if a.len() * b.len() > MAX_ALTERNATIVES {
                return None;
            }
            let mut out = Vec::new();
            for x in &a {
                for y in &b {
                    out.push(x.iter().chain(y).copied().collect());
                }
            }
            Some(out)
        }
    }
}

fn http_always(m: &HttpMatcher) -> bool {
    matches!(m, HttpMatcher::Host(HostPattern::Any))
}

/// Whether a request `have` accepts is always accepted by `needed`.
fn http_implies(have: &HttpMatcher, needed: &HttpMatcher) -> bool {
    use HttpMatcher as M;
    match (have, needed) {
        (M::Host(HostPattern::Exact(a)), M::Host(w @ HostPattern::Wildcard(_))) => w.matches(a),
        (M::Host(a), M::Host(b)) => a == b,
        (M::Path(p) | M::PathPrefix(p), M::PathPrefix(q)) => p.starts_with(q.as_str()),
        (M::Path(p), M::Path(q)) => p == q,
        (M::Method(a), M::Method(b)) => a == b,
        (M::Header(k, v), M::Header(k2, v2)) | (M::Query(k, v), M::Query(k2, v2)) => {
            k == k2 && v == v2
        }
        (M::ClientIP(a), M::ClientIP(b)) => a == b,
        (M::HostRegexp(a), M::HostRegexp(b)) | (M::PathRegexp(a), M::PathRegexp(b)) => {
            a.as_str() == b.as_str()
        }
        (M::HeaderRegexp(k, a), M::HeaderRegexp(k2, b))
        | (M::QueryRegexp(k, a), M::QueryRegexp(k2, b)) => k == k2 && a.as_str() == b.as_str(),
        _ => false,
    }
}

fn tcp_always(m: &TcpMatcher) -> bool {
    matches!(m, TcpMatcher::HostSni(SniPattern::Any))
}

/// Whether a connection `have` accepts is always accepted by `needed`.
fn tcp_implies(have: &TcpMatcher, needed: &TcpMatcher) -> bool {
    use TcpMatcher as M;
    match (have, needed) {
        (M::HostSni(SniPattern::Exact(name)), w @ M::HostSni(SniPattern::Wildcard(_))) => {
            // Only the server name matters to a HostSNI matcher.
            w.matches(&ConnInfo {
                sni: Some(name),
                alpn: &[],
                client_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            })
        }
        (M::HostSni(a), M::HostSni(b)) => a == b,
        (M::HostSniRegexp(a), M::HostSniRegexp(b)) => a.as_str() == b.as_str(),
        (M::ClientIp(a), M::ClientIp(b)) => a == b,
        (M::Alpn(a), M::Alpn(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use l4::tcp::rule::TcpRule;
    use l7::rule::HttpRule;

    /// Whether `earlier`, tried first, covers `later`, through the indexed lookup.
    fn http_covers(earlier: &str, later: &str) -> bool {
        let (e, l) = (
            HttpRule::compile(earlier).unwrap(),
            HttpRule::compile(later).unwrap(),
        );
        first_coverers(&[e.expr(), l.expr()], &HTTP)[1] == Some(0)
    }

    fn tcp_covers(earlier: &str, later: &str) -> bool {
        let (e, l) = (
            TcpRule::compile(earlier, true).unwrap(),
            TcpRule::compile(later, true).unwrap(),
        );
        first_coverers(&[e.expr(), l.expr()], &TCP)[1] == Some(0)
    }

    #[test]
    fn identical_rules_cover_each_other() {
        assert!(http_covers("Host(`a.test`)", "Host(`A.test`)"));
        assert!(http_covers("HostRegexp(`^a`)", "HostRegexp(`^a`)"));
        assert!(tcp_covers("HostSNI(`a.test`)", "HostSNI(`a.test`)"));
    }

    #[test]
    fn a_shorter_path_prefix_on_the_same_host_covers_a_longer_one() {
        assert!(http_covers(
            "Host(`a.test`) && PathPrefix(`/api`)",
            "Host(`a.test`) && PathPrefix(`/api/v1`)"
        ));
        assert!(http_covers(
            "PathPrefix(`/`)",
            "Host(`a.test`) && Path(`/x`)"
        ));
        assert!(!http_covers(
            "Host(`a.test`) && PathPrefix(`/api/v1`)",
            "Host(`a.test`) && PathPrefix(`/api`)"
        ));
        assert!(!http_covers(
            "Host(`a.test`) && PathPrefix(`/api`)",
            "Host(`b.test`) && PathPrefix(`/api/v1`)"
        ));
    }

    #[test]
    fn wildcards_and_catch_alls_cover_names() {
        assert!(http_covers("Host(`*.a.test`)", "Host(`x.a.test`)"));
        assert!(!http_covers("Host(`*.a.test`)", "Host(`x.y.a.test`)"));
        assert!(http_covers("Host(`*`)", "Method(`GET`)"));
        assert!(tcp_covers(
            "HostSNI(`*.a.test`)",
            "HostSNI(`x.a.test`) && ALPN(`h2`)"
        ));
        assert!(tcp_covers("HostSNI(`*`)", "ClientIP(`10.0.0.0/8`)"));
    }

    #[test]
    fn alternatives_must_each_be_covered() {
        assert!(http_covers(
            "Host(`a.test`) || Host(`b.test`)",
            "Host(`b.test`) && Method(`GET`)"
        ));
        assert!(!http_covers(
            "Host(`a.test`)",
            "Host(`a.test`) || Host(`b.test`)"
        ));
        assert!(http_covers(
            "Host(`a.test`)",
            "Host(`a.test`) && (Path(`/x`) || Path(`/y`))"
        ));
    }

    #[test]
    fn negations_and_regexps_prove_nothing() {
        assert!(!http_covers("!Host(`a.test`)", "Host(`b.test`)"));
        assert!(!http_covers(
            "Host(`a.test`)",
            "Host(`a.test`) && !Path(`/x`)"
        ));
        assert!(!http_covers("HostRegexp(`a`)", "Host(`a.test`)"));
        assert!(!http_covers(
            "ClientIP(`10.0.0.0/8`)",
            "ClientIP(`10.1.0.0/16`)"
        ));
    }

    #[test]
    fn the_first_covering_router_is_named_among_many() {
        let mut sources: Vec<String> = (0..2000)
            .map(|i| format!("Host(`h{i}.test`) && Path(`/x`)"))
            .collect();
        sources.push("Host(`*.test`)".to_owned());
        sources.push("Host(`h7.test`) && Path(`/x`) && Method(`GET`)".to_owned());
        sources.push("Method(`GET`)".to_owned());
        let rules: Vec<HttpRule> = sources
            .iter()
            .map(|s| HttpRule::compile(s).unwrap())
            .collect();
        let exprs: Vec<_> = rules.iter().map(|r| r.expr()).collect();
        let found = first_coverers(&exprs, &HTTP);
        assert_eq!(found[..2000].iter().flatten().count(), 0);
        assert_eq!(found[2000], None);
        assert_eq!(found[2001], Some(7));
        assert_eq!(found[2002], None);
    }
}
