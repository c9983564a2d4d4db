//! HTTP router rules: Traefik's `Host`, `HostRegexp`, `Path`, `PathPrefix`, `PathRegexp`,
//! `Method`, `Header`, `HeaderRegexp`, `Query`, `QueryRegexp` and `ClientIP` matchers,
//! compiled from the shared rule language ([`l4::rule`]) into the form the HTTP router
//! evaluates. Extracting the host, routing path, headers and query from a request is not done
//! here.

use std::fmt;

use ipnet::IpNet;
use l4::rule::{self, Call, Expr, RuleError};
use regex::Regex;

/// The hosts one `Host` matcher accepts; compared with the request host once that is
/// lower-cased and stripped of port and brackets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// `Host(`*`)`: every request, even one without a host.
    Any,
    /// A lower-case name without trailing dot.
    Exact(String),
    /// `*.example.com`, kept as `.example.com`: exactly one more label in front.
    Wildcard(String),
}

impl HostPattern {
    fn parse(arg: &str) -> HostPattern {
        if arg == "*" {
            return HostPattern::Any;
        }
        let lower = arg.to_ascii_lowercase();
        let name = lower.strip_suffix('.').unwrap_or(&lower);
        match name.strip_prefix("*.") {
            Some(rest) => HostPattern::Wildcard(format!(".{rest}")),
            None => HostPattern::Exact(name.to_owned()),
        }
    }

    /// Whether the canonical request host (lower-case, no port) is accepted; a trailing dot
    /// on the request side is tolerated and an empty host only matches `*`.
    pub fn matches(&self, host: &str) -> bool {
        let host = host.strip_suffix('.').unwrap_or(host);
        match self {
            HostPattern::Any => true,
            _ if host.is_empty() => false,
            HostPattern::Exact(name) => host.eq_ignore_ascii_case(name),
            HostPattern::Wildcard(suffix) => {
                let Some(label_len) = host.len().checked_sub(suffix.len()) else {
                    return false;
                };
                label_len > 0
                    && host.is_char_boundary(label_len)
                    && host[label_len..].eq_ignore_ascii_case(suffix)
                    && !host[..label_len].contains('.')
            }
        }
    }

    /// The domain as written, lower-cased (`*`, `*.example.com` or a name).
    pub fn domain(&self) -> String {
        match self {
            HostPattern::Any => "*".to_owned(),
            HostPattern::Exact(name) => name.clone(),
            HostPattern::Wildcard(suffix) => format!("*{suffix}"),
        }
    }
}

/// One compiled HTTP matcher. Regexps are Go-compatible and unanchored
/// ([`l4::rule::go_regex`]).
#[derive(Debug, Clone)]
pub enum HttpMatcher {
    Host(HostPattern),
    /// On the canonical request host.
    HostRegexp(Regex),
    /// Starts with `/`; equal to the routing path.
    Path(String),
    /// Starts with `/`; a plain string prefix of the routing path.
    PathPrefix(String),
    PathRegexp(Regex),
    /// Upper-cased.
    Method(String),
    /// Header name lower-cased (names are case-insensitive), value compared exactly with
    /// each value of the header.
    Header(String, String),
    HeaderRegexp(String, Regex),
    /// Key and value compared exactly; `Query(`k`)` is `Query(`k`, ``)` (`?k` or `?k=`).
    Query(String, String),
    QueryRegexp(String, Regex),
    /// A single address is kept as a /32 or /128 network.
    ClientIP(IpNet),
}

/// A compiled HTTP router rule.
#[derive(Debug, Clone)]
pub struct HttpRule {
    source: String,
    expr: Expr<HttpMatcher>,
}

impl HttpRule {
    pub fn compile(src: &str) -> Result<HttpRule, RuleError> {
        let expr = rule::parse(src)?.try_map(&mut |call: Call| compile_call(&call))?;
        Ok(HttpRule {
            source: src.to_owned(),
            expr,
        })
    }

    /// The domains of every `Host` matcher, lower-cased, in rule order and without
    /// duplicates. As in Traefik, negated `Host` matchers count too: these feed the TLS
    /// routing by SNI, which can only narrow by name.
    pub fn hosts(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for m in self.expr.leaves() {
            if let HttpMatcher::Host(pattern) = m {
                let domain = pattern.domain();
                if !out.contains(&domain) {
                    out.push(domain);
                }
            }
        }
        out
    }

    /// The priority a router gets when its configuration says 0 or nothing: the length of the
    /// rule text in bytes.
    pub fn default_priority(&self) -> i64 {
        i64::try_from(self.source.len()).unwrap_or(i64::MAX)
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The compiled expression the router evaluates leaf by leaf.
    pub fn expr(&self) -> &Expr<HttpMatcher> {
        &self.expr
    }
}

impl fmt::Display for HttpRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn compile_call(call: &Call) -> Result<HttpMatcher, RuleError> {
    let is = |canonical| rule::matcher_name_is(&call.name, canonical);
    let args = &call.args;
    let regex = |pattern: &str| rule::go_regex(pattern).map_err(|m| call.error(m));
    let matcher = if is("Host") {
        call.expect_args(&[1])?;
        ascii_only(call, "Host")?;
        HttpMatcher::Host(HostPattern::parse(&args[0]))
    } else if is("HostRegexp") {
        call.expect_args(&[1])?;
        ascii_only(call, "HostRegexp")?;
        HttpMatcher::HostRegexp(regex(&args[0])?)
    } else if is("Path") {
        call.expect_args(&[1])?;
        HttpMatcher::Path(absolute_path(call)?)
    } else if is("PathPrefix") {
        call.expect_args(&[1])?;
        HttpMatcher::PathPrefix(absolute_path(call)?)
    } else if is("PathRegexp") {
        call.expect_args(&[1])?;
        HttpMatcher::PathRegexp(regex(&args[0])?)
    } else if is("Method") {
        call.expect_args(&[1])?;
        let method = args[0].to_ascii_uppercase();
        if !is_token(&method) {
            return Err(call.error(format!("{:?} is not a valid HTTP method", args[0])));
        }
        HttpMatcher::Method(method)
    } else if is("Header") {
        call.expect_args(&[2])?;
        HttpMatcher::Header(header_name(call)?, args[1].clone())
    } else if is("HeaderRegexp") {
        call.expect_args(&[2])?;
        HttpMatcher::HeaderRegexp(header_name(call)?, regex(&args[1])?)
    } else if is("Query") {
        call.expect_args(&[1, 2])?;
        HttpMatcher::Query(args[0].clone(), args.get(1).cloned().unwrap_or_default())
    } else if is("QueryRegexp") {
        call.expect_args(&[1, 2])?;
        match args.get(1) {
            Some(pattern) => HttpMatcher::QueryRegexp(args[0].clone(), regex(pattern)?),
            // Traefik reads the one-argument form as `Query(key)`.
            None => HttpMatcher::Query(args[0].clone(), String::new()),
        }
    } else if is("ClientIP") {
        call.expect_args(&[1])?;
        HttpMatcher::ClientIP(rule::parse_client_ip(&args[0]).map_err(|m| call.error(m))?)
    } else {
        return Err(call.not_defined());
    };
    Ok(matcher)
}

fn ascii_only(call: &Call, matcher: &str) -> Result<(), RuleError> {
    let value = &call.args[0];
    if value.is_ascii() {
        return Ok(());
    }
    Err(call.error(format!(
        "invalid value {value:?} for {matcher} matcher, non-ASCII characters are not allowed (write internationalised names in punycode, xn--…)"
    )))
}

fn absolute_path(call: &Call) -> Result<String, RuleError> {
    let path = &call.args[0];
    if !path.starts_with('/') {
        return Err(call.error(format!("path {path:?} does not start with a '/'")));
    }
    Ok(path.clone())
}

fn header_name(call: &Call) -> Result<String, RuleError> {
    let name = &call.args[0];
    if !is_token(name) {
        return Err(call.error(format!("{name:?} is not a valid header name")));
    }
    Ok(name.to_ascii_lowercase())
}

/// RFC 9110 §5.6.2 token, the syntax of header names and methods.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only(src: &str) -> HttpMatcher {
        match HttpRule::compile(src).unwrap().expr {
            Expr::Leaf(m) => m,
            other => panic!("{src}: not a single matcher: {other:?}"),
        }
    }

    fn error(src: &str) -> String {
        HttpRule::compile(src).unwrap_err().to_string()
    }

    fn host(src: &str) -> HostPattern {
        match only(src) {
            HttpMatcher::Host(p) => p,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn host_is_lower_cased_and_trailing_dot_tolerated() {
        let p = host("Host(`API.Example.com.`)");
        assert_eq!(p, HostPattern::Exact("api.example.com".into()));
        assert!(p.matches("api.example.com"));
        assert!(p.matches("api.example.com."));
        assert!(!p.matches("example.com"));
        assert!(!p.matches(""));
    }

    #[test]
    fn host_wildcard_covers_one_label_and_star_everything() {
        let p = host("Host(`*.example.com`)");
        assert!(p.matches("a.example.com"));
        assert!(!p.matches("a.b.example.com"));
        assert!(!p.matches("example.com"));
        assert!(!p.matches(".example.com"));
        let any = host("Host(`*`)");
        assert!(any.matches(""));
        assert!(any.matches("whatever"));
    }

    #[test]
    fn host_must_be_ascii() {
        assert!(error("Host(`bücher.de`)").starts_with(
            "column 1: Host: invalid value \"bücher.de\" for Host matcher, non-ASCII"
        ));
        assert!(error("HostRegexp(`^bücher`)").contains("non-ASCII"));
        assert!(matches!(
            only("Host(`xn--bcher-kva.de`)"),
            HttpMatcher::Host(_)
        ));
    }

    #[test]
    fn host_regexp_is_go_compatible_and_unanchored() {
        let HttpMatcher::HostRegexp(re) = only("HostRegexp(`example\\.com`)") else {
            panic!()
        };
        assert!(re.is_match("www.example.com"));
        let HttpMatcher::HostRegexp(re) = only("HostRegexp(`{sub:[a-z]+}.example.com`)") else {
            panic!()
        };
        assert!(re.is_match("{sub:x}.example.com"));
        assert!(!re.is_match("api.example.com"));
        assert!(error("HostRegexp(`(`)").starts_with("column 1: HostRegexp: error parsing regexp"));
    }

    #[test]
    fn paths_must_start_with_a_slash() {
        assert!(matches!(only("Path(`/a`)"), HttpMatcher::Path(p) if p == "/a"));
        assert!(matches!(only("PathPrefix(`/api`)"), HttpMatcher::PathPrefix(p) if p == "/api"));
        assert_eq!(
            error("Path(`a`)"),
            "column 1: Path: path \"a\" does not start with a '/'"
        );
        assert_eq!(
            error("Host(`a`) && PathPrefix(`api`)"),
            "column 14: PathPrefix: path \"api\" does not start with a '/'"
        );
    }

    #[test]
    fn path_regexp_need_not_start_with_a_slash() {
        let HttpMatcher::PathRegexp(re) = only("PathRegexp(`\\.css$`)") else {
            panic!()
        };
        assert!(re.is_match("/static/site.css"));
        assert!(!re.is_match("/static/site.cssx"));
    }

    #[test]
    fn method_is_upper_cased() {
        assert!(matches!(only("Method(`get`)"), HttpMatcher::Method(m) if m == "GET"));
        assert!(error("Method(`GE T`)").contains("is not a valid HTTP method"));
    }

    #[test]
    fn header_takes_a_name_and_a_value() {
        assert!(matches!(
            only("Header(`X-Forwarded-Proto`, `https`)"),
            HttpMatcher::Header(k, v) if k == "x-forwarded-proto" && v == "https"
        ));
        let HttpMatcher::HeaderRegexp(k, re) = only("HeaderRegexp(`Content-Type`, `^text/`)")
        else {
            panic!()
        };
        assert_eq!(k, "content-type");
        assert!(re.is_match("text/html"));
        assert!(error("Header(`Bad Name`, `x`)").contains("is not a valid header name"));
        assert_eq!(
            error("Header(`X-A`)"),
            "column 1: Header: unexpected number of parameters; got 1, expected one of [2]"
        );
    }

    #[test]
    fn query_value_defaults_to_empty() {
        assert!(
            matches!(only("Query(`debug`)"), HttpMatcher::Query(k, v) if k == "debug" && v.is_empty())
        );
        assert!(
            matches!(only("Query(`a`, `B`)"), HttpMatcher::Query(k, v) if k == "a" && v == "B")
        );
        assert!(
            matches!(only("QueryRegexp(`a`)"), HttpMatcher::Query(k, v) if k == "a" && v.is_empty())
        );
        let HttpMatcher::QueryRegexp(k, re) = only("QueryRegexp(`id`, `^[0-9]+$`)") else {
            panic!()
        };
        assert_eq!(k, "id");
        assert!(re.is_match("42"));
        assert!(error("Query(`a`, `b`, `c`)").ends_with("got 3, expected one of [1 2]"));
    }

    #[test]
    fn client_ip_takes_addresses_and_networks() {
        assert!(matches!(
            only("ClientIP(`10.0.0.0/8`)"),
            HttpMatcher::ClientIP(n) if n.to_string() == "10.0.0.0/8"
        ));
        assert!(matches!(
            only("ClientIP(`::1`)"),
            HttpMatcher::ClientIP(n) if n.to_string() == "::1/128"
        ));
        assert!(error("ClientIP(`nope`)").contains("neither an IP address nor a CIDR network"));
    }

    #[test]
    fn arity_is_checked_like_traefik() {
        assert_eq!(
            error("Host(`a.com`, `b.com`)"),
            "column 1: Host: unexpected number of parameters; got 2, expected one of [1]"
        );
    }

    #[test]
    fn unknown_matchers_are_not_defined() {
        assert_eq!(error("foobar"), "column 1: foobar is not defined");
        assert_eq!(error("Foo(`a`)"), "column 1: Foo is not defined");
        assert_eq!(
            error("Path(`/`) || HostSNI(`a.com`)"),
            "column 14: HostSNI is not defined"
        );
        assert_eq!(
            error("pathPrefix(`/`)"),
            "column 1: pathPrefix is not defined"
        );
    }

    #[test]
    fn matcher_names_accept_traefik_casings() {
        for src in [
            "PathPrefix(`/`)",
            "pathprefix(`/`)",
            "PATHPREFIX(`/`)",
            "Pathprefix(`/`)",
        ] {
            assert!(matches!(only(src), HttpMatcher::PathPrefix(_)), "{src}");
        }
    }

    #[test]
    fn hosts_lists_literal_host_domains() {
        let r = HttpRule::compile(
            "(Host(`A.com`) || Host(`*.b.com`)) && PathPrefix(`/x`) || !Host(`c.com`) || Host(`a.com`) || HostRegexp(`d`)",
        )
        .unwrap();
        assert_eq!(r.hosts(), ["a.com", "*.b.com", "c.com"]);
        assert!(
            HttpRule::compile("PathPrefix(`/`)")
                .unwrap()
                .hosts()
                .is_empty()
        );
        assert_eq!(HttpRule::compile("Host(`*`)").unwrap().hosts(), ["*"]);
    }

    #[test]
    fn priority_defaults_to_rule_length_in_bytes() {
        let r = HttpRule::compile("Host(`a.com`) && Path(`/é`)").unwrap();
        assert_eq!(r.default_priority(), 28);
        assert_eq!(r.source(), "Host(`a.com`) && Path(`/é`)");
    }

    #[test]
    fn compiled_expression_keeps_operators() {
        let r = HttpRule::compile("Method(`GET`) && !PathPrefix(`/admin`)").unwrap();
        let eval = |method: &str, path: &str| {
            r.expr().eval(&mut |m: &HttpMatcher| match m {
                HttpMatcher::Method(x) => x == method,
                HttpMatcher::PathPrefix(p) => path.starts_with(p.as_str()),
                _ => false,
            })
        };
        assert!(eval("GET", "/"));
        assert!(!eval("GET", "/admin/x"));
        assert!(!eval("POST", "/"));
    }
}
