//! `sallyport explain`: which router a connection (and its request) would reach on one
//! entrypoint, and why, from the configuration alone.
//!
//! The walk follows the TCP dispatch (`l4::tcp::dispatch`, reference §4.1): the fast path of
//! an entrypoint with only non-TLS TCP routers, then for a plaintext connection the non-TLS
//! TCP routers and the HTTP server; for a TLS one an HTTPS router for its server name, a TLS
//! TCP router that is not a catch-all, the HTTPS catch-all, a TCP catch-all, and HTTPS with
//! the default TLS option. Connections that land on HTTP go through the HTTP routers in
//! match order. Every rule is the real compiled one, evaluated by the real matchers: this
//! module only records which matchers were evaluated and what they looked at. It opens no
//! socket; the ACME TLS-ALPN-01 answer, PROXY headers and STARTTLS (the Postgres SSLRequest,
//! `tls.starttls` routers) are not modelled.

pub mod tables;

use std::fmt;
use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue};
use l4::rule::{Call, Expr};
use l4::tcp::rule::{ConnInfo, TcpMatcher};
use l4::tcp::sni::{SniMatch, SniTable};
use l7::request::RequestView;
use l7::rule::HttpMatcher;

use crate::config::dynamic::DEFAULT_TLS_NAME;
use crate::config::static_cfg::Protocol;
use crate::config::{DynamicConfig, Report, StaticConfig};
use tables::{EntrypointTables, HttpEntry, TcpEntry, entrypoint_tables};

/// What is asked: a connection on an entrypoint, and the request it would carry.
#[derive(Debug, Clone)]
pub struct Question {
    pub entrypoint: String,
    /// The ClientHello server name; with `alpn`, makes the connection a TLS one.
    pub sni: Option<String>,
    pub alpn: Vec<String>,
    pub client_ip: IpAddr,
    pub method: String,
    /// The request host; the SNI when not given.
    pub host: Option<String>,
    /// Path, with an optional `?query`.
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl Question {
    fn is_tls(&self) -> bool {
        self.sni.is_some() || !self.alpn.is_empty()
    }
}

/// Why a question cannot be answered.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("entrypoint \"{name}\" does not exist (entrypoints: {known})")]
    UnknownEntrypoint { name: String, known: String },
    #[error("entrypoint \"{0}\" is a UDP entrypoint; explain answers for TCP entrypoints")]
    UdpEntrypoint(String),
    #[error("header {name:?}: {reason}")]
    BadHeader { name: String, reason: String },
}

/// The answer: the router reached, if any, and the steps that led there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// `None`: no router takes the connection or the request.
    pub router: Option<String>,
    pub lines: Vec<String>,
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.router {
            Some(name) => writeln!(f, "router: {name}")?,
            None => writeln!(f, "no match")?,
        }
        for line in &self.lines {
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}

/// Reads a `--header` argument, `Name=Value` (or `Name: Value`).
pub fn parse_header_arg(arg: &str) -> Result<(String, String), String> {
    let (name, value) = arg
        .split_once('=')
        .or_else(|| arg.split_once(':'))
        .ok_or_else(|| format!("{arg:?} is not NAME=VALUE"))?;
    Ok((name.trim().to_owned(), value.trim().to_owned()))
}

/// Answers `q` for a validated configuration.
pub fn explain(
    st: &StaticConfig,
    dy: &DynamicConfig,
    report: &Report,
    q: &Question,
) -> Result<Explanation, ExplainError> {
    let Some(ep) = st.entry_points.get(&q.entrypoint) else {
        return Err(ExplainError::UnknownEntrypoint {
            name: q.entrypoint.clone(),
            known: st
                .entry_points
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
        });
    };
    if ep.address.protocol != Protocol::Tcp {
        return Err(ExplainError::UdpEntrypoint(q.entrypoint.clone()));
    }
    let headers = header_map(&q.headers)?;
    let t = entrypoint_tables(st, dy, report, &q.entrypoint);
    let mut w = Walk {
        q,
        t: &t,
        headers: &headers,
        lines: Vec::new(),
    };
    let router = w.dispatch();
    if !t.skipped.is_empty() {
        w.lines.push("skipped (not served):".to_owned());
        for s in &t.skipped {
            w.lines.push(format!(
                "  {} router {}: {}",
                s.kind,
                s.name,
                s.reasons.join("; ")
            ));
        }
    }
    Ok(Explanation {
        router,
        lines: w.lines,
    })
}

fn header_map(pairs: &[(String, String)]) -> Result<HeaderMap, ExplainError> {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        let bad = |reason: String| ExplainError::BadHeader {
            name: name.clone(),
            reason,
        };
        let n = HeaderName::from_bytes(name.as_bytes()).map_err(|e| bad(e.to_string()))?;
        let v = HeaderValue::from_str(value).map_err(|e| bad(e.to_string()))?;
        map.append(n, v);
    }
    Ok(map)
}

/// Where the HTTPS server-name table sends a TLS connection.
#[derive(Clone)]
struct HttpsName {
    option: String,
    /// The router whose `Host` (or lack of one) put the name in the table.
    router: String,
}

struct Walk<'a> {
    q: &'a Question,
    t: &'a EntrypointTables,
    headers: &'a HeaderMap,
    lines: Vec<String>,
}

impl Walk<'_> {
    /// The dispatch of reference §4.1; returns the router reached.
    fn dispatch(&mut self) -> Option<String> {
        let q = self.q;
        let t = self.t;
        let https = self.https_names();
        let https_default = !t.http_tls.is_empty();
        let alpn: Vec<Vec<u8>> = q.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        if q.is_tls() {
            self.lines.push(format!(
                "entrypoint {}: TLS connection from {}, SNI {}, ALPN {}",
                q.entrypoint,
                q.client_ip,
                q.sni.as_deref().unwrap_or("(none)"),
                if q.alpn.is_empty() {
                    "(none)".to_owned()
                } else {
                    q.alpn.join(",")
                }
            ));
        } else {
            self.lines.push(format!(
                "entrypoint {}: plaintext connection from {}",
                q.entrypoint, q.client_ip
            ));
        }
        let plain_info = ConnInfo {
            sni: None,
            alpn: &[],
            client_ip: q.client_ip,
        };

        // Only non-TLS TCP routers: they are tried before the client sends anything.
        let fast_path =
            t.tcp_tls.is_empty() && https.is_empty() && !https_default && !t.tcp_plain.is_empty();
        if fast_path {
            self.lines.push(
                "TCP routers without TLS (tried before the client speaks, the entrypoint has no TLS router):"
                    .to_owned(),
            );
            if let Some(found) = self.tcp_table(&t.tcp_plain, &plain_info) {
                return Some(found.name.clone());
            }
        }
        if !q.is_tls() {
            if !fast_path {
                self.lines.push("TCP routers without TLS:".to_owned());
                if let Some(found) = self.tcp_table(&t.tcp_plain, &plain_info) {
                    return Some(found.name.clone());
                }
            }
            self.lines.push(
                "HTTP routers (plaintext), the connection goes to the HTTP server:".to_owned(),
            );
            return self.http_table(&t.http_plain, None);
        }

        let info = ConnInfo {
            sni: q.sni.as_deref(),
            alpn: &alpn,
            client_ip: q.client_ip,
        };
        let sni = q.sni.as_deref();
        let found = https.find(sni);
        if let Some((name, SniMatch::Specific)) = found {
            self.lines.push(format!(
                "1. HTTPS router for SNI {}: {} (TLS option {})",
                sni.unwrap_or(""),
                name.router,
                name.option
            ));
            return self.https(&name.option.clone());
        }
        self.lines.push(format!(
            "1. HTTPS router for SNI {}: none",
            sni.unwrap_or("(none)")
        ));
        self.lines.push("2. TLS TCP routers:".to_owned());
        let tcp = self.tcp_table(&t.tcp_tls, &info);
        if let Some(route) = tcp.filter(|r| !r.rule.is_catch_all()) {
            return Some(route.name.clone());
        }
        if let Some(route) = tcp {
            self.lines.push(format!(
                "   {} is a catch-all: HTTPS routers without a host come first",
                route.name
            ));
        }
        if let Some((name, SniMatch::CatchAll)) = found {
            self.lines.push(format!(
                "3. HTTPS catch-all (a TLS HTTP router without Host: {}), TLS option {}",
                name.router, name.option
            ));
            return self.https(&name.option.clone());
        }
        self.lines
            .push("3. HTTPS catch-all: none (every TLS HTTP router names a host)".to_owned());
        if let Some(route) = tcp {
            self.lines
                .push(format!("4. TLS TCP catch-all: {}", route.name));
            return Some(route.name.clone());
        }
        self.lines.push("4. TLS TCP catch-all: none".to_owned());
        if https_default {
            self.lines.push(format!(
                "5. HTTPS with the {DEFAULT_TLS_NAME} TLS option (the entrypoint has TLS HTTP routers)"
            ));
            return self.https(DEFAULT_TLS_NAME);
        }
        self.lines
            .push("5. no TLS HTTP router on the entrypoint: the connection is closed".to_owned());
        None
    }

    /// The server names of the TLS HTTP routers, as the runtime's HTTPS table holds them:
    /// the first router (in configuration order) to claim a name keeps it.
    fn https_names(&self) -> SniTable<HttpsName> {
        let mut table = SniTable::new();
        let mut routers: Vec<&HttpEntry> = self.t.http_tls.iter().collect();
        routers.sort_by(|a, b| a.name.cmp(&b.name));
        for r in routers {
            let option = r
                .tls_option
                .clone()
                .filter(|o| !o.is_empty())
                .unwrap_or_else(|| DEFAULT_TLS_NAME.to_owned());
            let domains = r.rule.hosts();
            if domains.is_empty() {
                let target = HttpsName {
                    option: DEFAULT_TLS_NAME.to_owned(),
                    router: r.name.clone(),
                };
                let _ = table.insert("*", target);
            }
            for d in domains {
                let target = HttpsName {
                    option: option.clone(),
                    router: r.name.clone(),
                };
                let _ = table.insert(&d, target);
            }
        }
        table
    }

    /// TLS terminated with `option`; the request goes through the TLS HTTP routers, and a
    /// router served with another option answers 421.
    fn https(&mut self, option: &str) -> Option<String> {
        self.lines.push(format!(
            "HTTP routers (TLS), handshake with TLS option {option}:"
        ));
        let t = self.t;
        self.http_table(&t.http_tls, Some(option))
    }

    fn tcp_table<'t>(&mut self, table: &'t [TcpEntry], info: &ConnInfo) -> Option<&'t TcpEntry> {
        if table.is_empty() {
            self.lines.push("   (none)".to_owned());
        }
        for (i, r) in table.iter().enumerate() {
            let trace = trace(
                r.rule.source(),
                r.rule.expr(),
                |m| m.matches(info),
                |m| tcp_subject(m, info),
            );
            // The verdict is the real rule's; the trace only says why.
            let matched = r.rule.matches(info);
            self.candidate(i, &r.name, r.priority, r.rule.source(), matched, &trace);
            if matched {
                return Some(r);
            }
        }
        None
    }

    /// Walks an HTTP table; `option` is the handshake's TLS option (`None`: plaintext).
    fn http_table(&mut self, table: &[HttpEntry], option: Option<&str>) -> Option<String> {
        let q = self.q;
        let (raw_path, query) = q.path.split_once('?').unwrap_or((&q.path, ""));
        let host = q.host.as_deref().or(q.sni.as_deref()).unwrap_or("");
        let view = RequestView::new(&q.method, host, raw_path, query, self.headers, q.client_ip);
        self.lines.push(format!(
            "   request: {} host {} path {}{}",
            view.method(),
            if view.host().is_empty() {
                "(none)"
            } else {
                view.host()
            },
            view.path(),
            if query.is_empty() {
                String::new()
            } else {
                format!(" query {query}")
            }
        ));
        if table.is_empty() {
            self.lines.push("   (none)".to_owned());
        }
        for (i, r) in table.iter().enumerate() {
            let trace = trace(
                r.rule.source(),
                r.rule.expr(),
                |m| m.matches(&view),
                |m| http_subject(m, &view),
            );
            let matched = r.rule.matches(&view);
            self.candidate(i, &r.name, r.priority, r.rule.source(), matched, &trace);
            if !matched {
                continue;
            }
            if let Some(option) = option {
                let own = r.tls_option.as_deref().unwrap_or(DEFAULT_TLS_NAME);
                if own != option {
                    self.lines.push(format!(
                        "   {} is served with TLS option {own}, not the handshake's {option}: 421 Misdirected Request",
                        r.name
                    ));
                    return None;
                }
            }
            return Some(r.name.clone());
        }
        self.lines.push("   no HTTP router matches: 404".to_owned());
        None
    }

    fn candidate(
        &mut self,
        index: usize,
        name: &str,
        priority: i64,
        rule: &str,
        matched: bool,
        trace: &[String],
    ) {
        self.lines.push(format!(
            "   {}. {name} (priority {priority}): {rule}",
            index + 1
        ));
        self.lines.push(format!(
            "      {}: {}",
            if matched { "match" } else { "no match" },
            trace.join("; ")
        ));
    }
}

/// Evaluates `expr` with the real evaluator and matchers, recording each matcher evaluated
/// (in order, after short-circuits) as `<matcher as written> matched|did not match <what
/// it looked at>`. The matchers as written come from parsing `source` again: compiling keeps
/// the shape of the parsed expression, so leaves pair up by position.
fn trace<M>(
    source: &str,
    expr: &Expr<M>,
    matches: impl Fn(&M) -> bool,
    subject: impl Fn(&M) -> String,
) -> Vec<String> {
    let written: Vec<String> = match l4::rule::parse(source) {
        Ok(calls) => calls.leaves().into_iter().map(call_text).collect(),
        Err(_) => Vec::new(),
    };
    let leaves = expr.leaves();
    let mut out = Vec::new();
    expr.eval(&mut |m| {
        let ok = matches(m);
        let text = leaves
            .iter()
            .position(|l| std::ptr::eq(*l, m))
            .and_then(|i| written.get(i).cloned())
            .unwrap_or_else(|| "matcher".to_owned());
        let verdict = if ok { "matched" } else { "did not match" };
        out.push(format!("{text} {verdict} {}", subject(m)));
        ok
    });
    out
}

fn call_text(call: &Call) -> String {
    let args: Vec<String> = call.args.iter().map(|a| format!("`{a}`")).collect();
    format!("{}({})", call.name, args.join(", "))
}

fn or_none(s: &str) -> &str {
    if s.is_empty() { "(none)" } else { s }
}

/// What an HTTP matcher looked at in the request.
fn http_subject(m: &HttpMatcher, r: &RequestView<'_>) -> String {
    match m {
        HttpMatcher::Host(_) | HttpMatcher::HostRegexp(_) => format!("host {}", or_none(r.host())),
        HttpMatcher::Path(_) | HttpMatcher::PathPrefix(_) | HttpMatcher::PathRegexp(_) => {
            format!("path {}", r.path())
        }
        HttpMatcher::Method(_) => format!("method {}", r.method()),
        HttpMatcher::Header(name, _) | HttpMatcher::HeaderRegexp(name, _) => {
            let values: Vec<String> = r
                .headers()
                .get_all(name.as_str())
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect();
            if values.is_empty() {
                format!("header {name} (absent)")
            } else {
                format!("header {name}: {}", values.join(", "))
            }
        }
        HttpMatcher::Query(_, _) | HttpMatcher::QueryRegexp(_, _) => {
            format!("query {}", or_none(r.query()))
        }
        HttpMatcher::ClientIP(_) => format!("client IP {}", r.client_ip()),
    }
}

/// What a TCP matcher looked at in the connection.
fn tcp_subject(m: &TcpMatcher, c: &ConnInfo) -> String {
    match m {
        TcpMatcher::HostSni(_) | TcpMatcher::HostSniRegexp(_) => {
            format!("SNI {}", or_none(c.sni.unwrap_or("")))
        }
        TcpMatcher::ClientIp(_) => format!("client IP {}", c.client_ip),
        TcpMatcher::Alpn(_) => {
            let offered: Vec<String> = c
                .alpn
                .iter()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect();
            format!("ALPN {}", or_none(&offered.join(",")))
        }
    }
}
