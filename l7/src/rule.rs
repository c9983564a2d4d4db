//! HTTP router rules: Traefik's `Host`, `HostRegexp`, `Path`, `PathPrefix`, `PathRegexp`,
//! `Method`, `Header`, `HeaderRegexp`, `Query`, `QueryRegexp` and `ClientIP` matchers,
//! compiled from the shared rule language ([`l4::rule`]) into the form the HTTP router
//! evaluates, and their evaluation against a [`RequestView`]. Extracting the host, routing
//! path, headers and query from a request is [`crate::request`]'s job.

use std::fmt;

use ipnet::IpNet;
use l4::rule::{self, Call, Expr, RuleError};
use regex::Regex;

use crate::request::RequestView;

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

impl HttpMatcher {
    /// Whether this one matcher accepts the request, with Traefik's semantics.
    pub fn matches(&self, r: &RequestView<'_>) -> bool {
        match self {
            HttpMatcher::Host(pattern) => pattern.matches(r.host()),
            HttpMatcher::HostRegexp(re) => re.is_match(r.host()),
            HttpMatcher::Path(path) => r.path() == path,
            HttpMatcher::PathPrefix(prefix) => r.path().starts_with(prefix.as_str()),
            HttpMatcher::PathRegexp(re) => re.is_match(r.path()),
            HttpMatcher::Method(method) => r.method() == method,
            HttpMatcher::Header(name, value) => r
                .headers()
                .get_all(name.as_str())
                .iter()
                .any(|v| v.as_bytes() == value.as_bytes()),
            // Go matches header values as raw bytes; bytes that are not UTF-8 cannot matter to
            // a pattern written in UTF-8 except through `.`, so a lossy view is close enough.
            HttpMatcher::HeaderRegexp(name, re) => r
                .headers()
                .get_all(name.as_str())
                .iter()
                .any(|v| re.is_match(&String::from_utf8_lossy(v.as_bytes()))),
            HttpMatcher::Query(key, value) => r.query_values(key).any(|v| v == value),
            HttpMatcher::QueryRegexp(key, re) => r.query_values(key).any(|v| re.is_match(v)),
            HttpMatcher::ClientIP(net) => rule::ip_in(net, r.client_ip()),
        }
    }
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

    /// Whether the request matches the whole rule; `&&` and `||` stop at the first side that
    /// decides.
    pub fn matches(&self, r: &RequestView<'_>) -> bool {
        self.expr.eval(&mut |m| m.matches(r))
    }

    /// Names of which the request host must be one for the rule to match, when the rule says
    /// so at its top: `Host(a)`, `Host(a) || Host(b)`, `Host(a) && X`, `X && (Host(a) ||
    /// Host(*.b))`. `None` when some request without such a host could match (a negated
    /// `Host`, `Host(`*`)`, an alternative without `Host`). The router indexes by these.
    pub fn required_hosts(&self) -> Option<Vec<&HostPattern>> {
        fn walk<'a>(e: &'a Expr<HttpMatcher>, out: &mut Vec<&'a HostPattern>) -> bool {
            match e {
                Expr::Leaf(HttpMatcher::Host(
                    p @ (HostPattern::Exact(_) | HostPattern::Wildcard(_)),
                )) => {
                    out.push(p);
                    true
                }
                Expr::Or(a, b) => walk(a, out) && walk(b, out),
                // Either side alone is a necessary condition; take the first that is one.
                Expr::And(a, b) => {
                    let len = out.len();
                    walk(a, out) || {
                        out.truncate(len);
                        walk(b, out)
                    }
                }
                _ => false,
            }
        }
        let mut out = Vec::new();
        walk(&self.expr, &mut out).then_some(out)
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

    fn matches_with(src: &str, req: http::Request<()>, client: &str) -> bool {
        let (parts, ()) = req.into_parts();
        let view = RequestView::from_parts(&parts, client.parse().unwrap());
        HttpRule::compile(src).unwrap().matches(&view)
    }

    fn matches(src: &str, uri: &str) -> bool {
        matches_with(src, http::Request::get(uri).body(()).unwrap(), "192.0.2.1")
    }

    fn with_host(src: &str, host: &str) -> bool {
        matches_with(
            src,
            http::Request::get("/")
                .header("host", host)
                .body(())
                .unwrap(),
            "192.0.2.1",
        )
    }

    #[test]
    fn host_matches_case_insensitively_without_port() {
        assert!(with_host("Host(`example.com`)", "EXAMPLE.com:8080"));
        assert!(with_host("Host(`example.com`)", "example.com."));
        assert!(!with_host("Host(`example.com`)", "www.example.com"));
        assert!(matches("Host(`example.com`)", "http://Example.COM/x"));
        assert!(with_host("Host(`::1`)", "[::1]:443"));
    }

    #[test]
    fn host_wildcard_takes_one_label_and_star_takes_empty_hosts() {
        assert!(with_host("Host(`*.example.com`)", "a.example.com"));
        assert!(!with_host("Host(`*.example.com`)", "a.b.example.com"));
        assert!(matches("Host(`*`)", "/"));
        assert!(!matches("Host(`example.com`)", "/"));
        assert!(!matches("Host(`*.example.com`)", "/"));
    }

    #[test]
    fn host_regexp_sees_the_canonical_host() {
        assert!(with_host("HostRegexp(`^api\\.`)", "API.example.com:80"));
        assert!(!with_host("HostRegexp(`:80$`)", "example.com:80"));
    }

    #[test]
    fn path_is_exact_on_the_routing_path() {
        assert!(matches("Path(`/a/b`)", "/a/b"));
        assert!(!matches("Path(`/a/b`)", "/a/b/"));
        assert!(matches("Path(`/b`)", "/a/../b"));
        assert!(matches("Path(`/A`)", "/%41"));
        assert!(matches("Path(`/a%2Fb`)", "/a%2fb"));
        assert!(!matches("Path(`/a/b`)", "/a%2Fb"));
    }

    #[test]
    fn path_prefix_is_a_plain_string_prefix() {
        assert!(matches("PathPrefix(`/products`)", "/products-for-sale"));
        assert!(matches("PathPrefix(`/products`)", "/products/1"));
        assert!(!matches("PathPrefix(`/products`)", "/product"));
        assert!(!matches(
            "PathPrefix(`/admin`)",
            "/x/%2E%2E/%61dmin/../../public"
        ));
        assert!(matches("PathPrefix(`/admin`)", "/x/%2E%2E/%61dmin"));
    }

    #[test]
    fn path_regexp_is_unanchored_on_the_routing_path() {
        assert!(matches("PathRegexp(`\\.css$`)", "/s/site.css?v=1"));
        assert!(matches("PathRegexp(`^/a%2Fb$`)", "/a%2Fb"));
        assert!(!matches("PathRegexp(`^/x$`)", "/y/x"));
    }

    #[test]
    fn method_compares_upper_cased() {
        let post = || http::Request::post("/").body(()).unwrap();
        assert!(matches_with("Method(`post`)", post(), "192.0.2.1"));
        assert!(!matches_with("Method(`GET`)", post(), "192.0.2.1"));
    }

    fn with_headers(src: &str, headers: &[(&str, &[u8])]) -> bool {
        let mut req = http::Request::get("/");
        for (k, v) in headers {
            req = req.header(*k, http::HeaderValue::from_bytes(v).unwrap());
        }
        matches_with(src, req.body(()).unwrap(), "192.0.2.1")
    }

    #[test]
    fn header_needs_one_value_exactly_equal() {
        let rule = "Header(`x-forwarded-proto`, `https`)";
        assert!(with_headers(rule, &[("X-Forwarded-Proto", b"https")]));
        assert!(with_headers(
            rule,
            &[
                ("x-forwarded-proto", b"http"),
                ("x-forwarded-proto", b"https")
            ]
        ));
        assert!(!with_headers(rule, &[("x-forwarded-proto", b"HTTPS")]));
        assert!(!with_headers(
            rule,
            &[("x-forwarded-proto", b"http, https")]
        ));
        assert!(!with_headers(rule, &[]));
    }

    #[test]
    fn header_regexp_needs_one_matching_value() {
        let rule = "HeaderRegexp(`Content-Type`, `^text/`)";
        assert!(with_headers(
            rule,
            &[
                ("content-type", b"application/json"),
                ("content-type", b"text/html")
            ]
        ));
        assert!(!with_headers(
            rule,
            &[("content-type", b"application/json")]
        ));
        assert!(with_headers(
            "HeaderRegexp(`X-A`, `^caf`)",
            &[("x-a", b"caf\xe9")]
        ));
    }

    #[test]
    fn query_needs_key_with_an_equal_value() {
        assert!(matches("Query(`debug`)", "/?debug"));
        assert!(matches("Query(`debug`)", "/?debug="));
        assert!(!matches("Query(`debug`)", "/?debug=1"));
        assert!(matches("Query(`a`, `2`)", "/?a=1&a=2"));
        assert!(matches("Query(`q`, `a b`)", "/?q=a+b"));
        assert!(matches("Query(`q`, `a/b`)", "/?q=a%2Fb"));
        assert!(!matches("Query(`A`, `1`)", "/?a=1"));
        assert!(!matches("Query(`a`, `1`)", "/?a=1;b=2"));
        assert!(!matches("Query(`a`)", "/"));
    }

    #[test]
    fn query_regexp_needs_one_matching_value() {
        assert!(matches("QueryRegexp(`id`, `^[0-9]+$`)", "/?id=x&id=42"));
        assert!(!matches("QueryRegexp(`id`, `^[0-9]+$`)", "/?id=x"));
        assert!(!matches("QueryRegexp(`id`, `.*`)", "/?other=1"));
    }

    #[test]
    fn client_ip_uses_the_connection_address_not_forwarded_headers() {
        let req = || {
            http::Request::get("/")
                .header("x-forwarded-for", "10.0.0.1")
                .header("x-real-ip", "10.0.0.1")
                .body(())
                .unwrap()
        };
        assert!(!matches_with("ClientIP(`10.0.0.0/8`)", req(), "192.0.2.1"));
        assert!(matches_with("ClientIP(`10.0.0.0/8`)", req(), "10.9.8.7"));
        assert!(matches_with(
            "ClientIP(`10.9.8.7`)",
            req(),
            "::ffff:10.9.8.7"
        ));
        assert!(matches_with(
            "ClientIP(`2001:db8::/32`)",
            req(),
            "2001:db8::5"
        ));
    }

    #[test]
    fn operators_combine_matchers() {
        let rule = "Host(`a.com`) && (PathPrefix(`/api`) || Query(`x`)) && !Method(`DELETE`)";
        let req = |method: &str, uri: &str| {
            http::Request::builder()
                .method(method)
                .uri(uri)
                .header("host", "a.com")
                .body(())
                .unwrap()
        };
        assert!(matches_with(rule, req("GET", "/api/1"), "192.0.2.1"));
        assert!(matches_with(rule, req("GET", "/?x"), "192.0.2.1"));
        assert!(!matches_with(rule, req("GET", "/"), "192.0.2.1"));
        assert!(!matches_with(rule, req("DELETE", "/api"), "192.0.2.1"));
    }

    fn required(src: &str) -> Option<Vec<String>> {
        HttpRule::compile(src)
            .unwrap()
            .required_hosts()
            .map(|hosts| hosts.iter().map(|h| h.domain()).collect())
    }

    #[test]
    fn required_hosts_are_those_the_rule_cannot_do_without() {
        assert_eq!(required("Host(`A.com`)").unwrap(), ["a.com"]);
        assert_eq!(
            required("Host(`a.com`) || Host(`*.b.com`)").unwrap(),
            ["a.com", "*.b.com"]
        );
        assert_eq!(
            required("PathPrefix(`/x`) && (Host(`a.com`) || Host(`c.com`))").unwrap(),
            ["a.com", "c.com"]
        );
        assert_eq!(
            required("Host(`a.com`) && (Host(`c.com`) || Path(`/`))").unwrap(),
            ["a.com"]
        );
        assert_eq!(required("Host(`*`)"), None);
        assert_eq!(required("!Host(`a.com`)"), None);
        assert_eq!(required("Host(`a.com`) || PathPrefix(`/`)"), None);
        assert_eq!(required("Host(`a.com`) || Host(`*`)"), None);
        assert_eq!(required("HostRegexp(`a`)"), None);
        assert_eq!(required("PathPrefix(`/`) && Method(`GET`)"), None);
    }
}
