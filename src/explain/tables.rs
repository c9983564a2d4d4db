//! The router tables of one entrypoint as the runtime builds them, without building any
//! service: enabled HTTP and TCP routers with their compiled rules and effective priorities,
//! split as the dispatch splits them (plaintext / TLS) and in match order, plus the routers
//! validation disabled. `explain` walks these tables; `check` looks for shadowed routers in
//! them. Compiling handlers is `runtime::compile`'s job, not this module's.

use l4::tcp::rule::TcpRule;
use l7::rule::HttpRule;

use crate::config::static_cfg::Protocol;
use crate::config::validate::Status;
use crate::config::{DynamicConfig, Location, Report, StaticConfig};

/// An enabled HTTP router on the entrypoint.
#[derive(Debug)]
pub struct HttpEntry {
    pub name: String,
    /// The configured priority, or the rule's default.
    pub priority: i64,
    pub rule: HttpRule,
    /// The TLS option the router asked for (after conflict resolution); `None`: plaintext.
    pub tls_option: Option<String>,
    pub location: Option<Location>,
}

/// An enabled TCP router on the entrypoint.
#[derive(Debug)]
pub struct TcpEntry {
    pub name: String,
    pub priority: i64,
    pub rule: TcpRule,
    pub location: Option<Location>,
}

/// A router on the entrypoint that is not served, with why.
#[derive(Debug)]
pub struct Skipped {
    /// `HTTP` or `TCP`.
    pub kind: &'static str,
    pub name: String,
    pub reasons: Vec<String>,
}

/// One entrypoint's routers, each list in match order (priority descending, then
/// provider precedence, then name).
#[derive(Debug, Default)]
pub struct EntrypointTables {
    pub http_plain: Vec<HttpEntry>,
    pub http_tls: Vec<HttpEntry>,
    pub tcp_plain: Vec<TcpEntry>,
    pub tcp_tls: Vec<TcpEntry>,
    pub skipped: Vec<Skipped>,
}

/// The tables of entrypoint `ep`, from a validated configuration.
pub fn entrypoint_tables(
    st: &StaticConfig,
    dy: &DynamicConfig,
    report: &Report,
    ep: &str,
) -> EntrypointTables {
    let mut t = EntrypointTables::default();
    for (name, resolved) in &report.resolved_http_routers {
        if !resolved.entry_points.iter().any(|e| e == ep) {
            continue;
        }
        let Some(router) = dy.http.routers.get(&resolved.origin) else {
            continue;
        };
        if let Some(status) = report.http_routers.get(name)
            && let Status::Disabled(reasons) = &status.status
        {
            t.skipped.push(skipped("HTTP", name, reasons.clone()));
            continue;
        }
        if !router.value.parent_refs.is_empty() {
            t.skipped.push(skipped(
                "HTTP",
                name,
                vec!["parentRefs (multi-layer routing) are not supported yet".to_owned()],
            ));
            continue;
        }
        let rule = match HttpRule::compile(&router.value.rule.value) {
            Ok(rule) => rule,
            Err(e) => {
                t.skipped.push(skipped("HTTP", name, vec![e.to_string()]));
                continue;
            }
        };
        let entry = HttpEntry {
            name: name.clone(),
            priority: effective(router.value.priority, rule.default_priority()),
            rule,
            tls_option: resolved.tls_options.clone(),
            location: router.location.clone(),
        };
        if entry.tls_option.is_some() {
            t.http_tls.push(entry);
        } else {
            t.http_plain.push(entry);
        }
    }
    let on_tcp_entrypoint = st
        .entry_points
        .get(ep)
        .is_some_and(|e| e.address.protocol == Protocol::Tcp);
    let defaults = st.default_entry_points();
    for (name, router) in &dy.tcp.routers {
        let r = &router.value;
        let eps = if r.entry_points.is_empty() {
            &defaults
        } else {
            &r.entry_points
        };
        if !on_tcp_entrypoint || !eps.iter().any(|e| e == ep) {
            continue;
        }
        if let Some(status) = report.tcp_routers.get(name)
            && let Status::Disabled(reasons) = &status.status
        {
            t.skipped.push(skipped("TCP", name, reasons.clone()));
            continue;
        }
        if let Some(protocol) = r.tls.as_ref().and_then(|t| t.starttls) {
            let protocol = format!("{protocol:?}").to_lowercase();
            let why = format!(
                "takes only connections that ask for TLS with {protocol} STARTTLS (not modelled)"
            );
            t.skipped.push(skipped("TCP", name, vec![why]));
            continue;
        }
        let rule = match TcpRule::compile(&r.rule.value, r.tls.is_some()) {
            Ok(rule) => rule,
            Err(e) => {
                t.skipped.push(skipped("TCP", name, vec![e.to_string()]));
                continue;
            }
        };
        let entry = TcpEntry {
            name: name.clone(),
            priority: effective(r.priority, rule.default_priority()),
            rule,
            location: router.location.clone(),
        };
        if r.tls.is_some() {
            t.tcp_tls.push(entry);
        } else {
            t.tcp_plain.push(entry);
        }
    }
    let precedence = &st.providers.precedence;
    let key =
        |priority: i64, name: &str| (priority, crate::config::precedence::rank(precedence, name));
    for list in [&mut t.http_plain, &mut t.http_tls] {
        list.sort_by(|a, b| {
            let (ka, kb) = (key(a.priority, &a.name), key(b.priority, &b.name));
            l4::rule::match_order((ka.0, ka.1, &a.name), (kb.0, kb.1, &b.name))
        });
    }
    for list in [&mut t.tcp_plain, &mut t.tcp_tls] {
        list.sort_by(|a, b| {
            let (ka, kb) = (key(a.priority, &a.name), key(b.priority, &b.name));
            l4::rule::match_order((ka.0, ka.1, &a.name), (kb.0, kb.1, &b.name))
        });
    }
    t
}

/// A configured priority of 0 means the rule's default.
fn effective(configured: i64, default: i64) -> i64 {
    if configured == 0 { default } else { configured }
}

fn skipped(kind: &'static str, name: &str, reasons: Vec<String>) -> Skipped {
    Skipped {
        kind,
        name: name.to_owned(),
        reasons,
    }
}
