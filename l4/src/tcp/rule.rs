//! TCP router rules: Traefik's `HostSNI`, `HostSNIRegexp`, `ClientIP` and `ALPN` matchers
//! compiled from the shared rule language ([`crate::rule`]) and evaluated against what the
//! connection showed ([`ConnInfo`]). Reading the ClientHello is not done here.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use regex::Regex;

use crate::rule::{self, Call, Expr, RuleError};

/// The ALPN protocol of ACME TLS-ALPN-01 challenges, which Traefik keeps for itself.
const ACME_TLS_ALPN: &str = "acme-tls/1";

/// What a connection showed before routing.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo<'a> {
    /// The ClientHello server name; `None` without TLS or without the extension.
    pub sni: Option<&'a str>,
    /// Protocols the client offered in ALPN, in its order.
    pub alpn: &'a [Vec<u8>],
    pub client_ip: IpAddr,
}

/// The server names one `HostSNI` accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SniPattern {
    /// `HostSNI(`*`)`: every connection, with or without SNI.
    Any,
    /// A lower-case name without trailing dot.
    Exact(String),
    /// `*.example.com`, kept as `.example.com`: exactly one more label in front.
    Wildcard(String),
}

impl SniPattern {
    fn matches(&self, sni: Option<&str>) -> bool {
        let sni = sni.map(|s| s.strip_suffix('.').unwrap_or(s));
        match (self, sni) {
            (SniPattern::Any, _) => true,
            (_, None | Some("")) => false,
            (SniPattern::Exact(name), Some(sni)) => sni.eq_ignore_ascii_case(name),
            (SniPattern::Wildcard(suffix), Some(sni)) => {
                sni.len() > suffix.len()
                    && sni.is_char_boundary(sni.len() - suffix.len())
                    && sni[sni.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                    && !sni[..sni.len() - suffix.len()].contains('.')
            }
        }
    }
}

/// One compiled TCP matcher.
#[derive(Debug, Clone)]
pub enum TcpMatcher {
    HostSni(SniPattern),
    /// Unanchored, on the lower-cased SNI ("" when there is none).
    HostSniRegexp(Regex),
    /// A single address is kept as a /32 or /128 network.
    ClientIp(IpNet),
    Alpn(String),
}

impl TcpMatcher {
    pub fn matches(&self, c: &ConnInfo) -> bool {
        match self {
            TcpMatcher::HostSni(pattern) => pattern.matches(c.sni),
            TcpMatcher::HostSniRegexp(re) => {
                let sni = c.sni.unwrap_or("");
                if sni.bytes().any(|b| b.is_ascii_uppercase()) {
                    re.is_match(&sni.to_ascii_lowercase())
                } else {
                    re.is_match(sni)
                }
            }
            TcpMatcher::ClientIp(net) => rule::ip_in(net, c.client_ip),
            TcpMatcher::Alpn(proto) => c.alpn.iter().any(|p| p == proto.as_bytes()),
        }
    }
}

/// A compiled TCP router rule.
#[derive(Debug, Clone)]
pub struct TcpRule {
    source: String,
    expr: Expr<TcpMatcher>,
}

impl TcpRule {
    /// Compiles `src` for a router with (`tls`) or without a `tls` section.
    ///
    /// Without TLS there is no ClientHello to look at, so, as in Traefik, only
    /// ``HostSNI(`*`)`` and `ClientIP` may be used.
    pub fn compile(src: &str, tls: bool) -> Result<TcpRule, RuleError> {
        let expr = rule::parse(src)?.try_map(&mut |call: Call| compile_call(&call, tls))?;
        Ok(TcpRule {
            source: src.to_owned(),
            expr,
        })
    }

    pub fn matches(&self, c: &ConnInfo) -> bool {
        self.expr.eval(&mut |m: &TcpMatcher| m.matches(c))
    }

    /// The rule is exactly ``HostSNI(`*`)``: Traefik tries such routes after all others.
    pub fn is_catch_all(&self) -> bool {
        matches!(self.expr, Expr::Leaf(TcpMatcher::HostSni(SniPattern::Any)))
    }

    /// The priority a router gets when its configuration says 0 or nothing: the length of the
    /// rule text in bytes, or -1 for a catch-all so it comes last.
    pub fn default_priority(&self) -> i64 {
        if self.is_catch_all() {
            return -1;
        }
        i64::try_from(self.source.len()).unwrap_or(i64::MAX)
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The names of every `HostSNI` matcher (wildcards as `*.example.com`), lower-case, in
    /// rule order and without duplicates: the domains a certificate for this router needs.
    pub fn server_names(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for m in self.expr.leaves() {
            let name = match m {
                TcpMatcher::HostSni(SniPattern::Exact(name)) => name.clone(),
                TcpMatcher::HostSni(SniPattern::Wildcard(suffix)) => format!("*{suffix}"),
                _ => continue,
            };
            if !out.contains(&name) {
                out.push(name);
            }
        }
        out
    }

    /// The compiled expression, for callers that inspect matchers (e.g. the SNIs in use).
    pub fn expr(&self) -> &Expr<TcpMatcher> {
        &self.expr
    }
}

impl fmt::Display for TcpRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn compile_call(call: &Call, tls: bool) -> Result<TcpMatcher, RuleError> {
    let is = |canonical| rule::matcher_name_is(&call.name, canonical);
    let needs_tls = || {
        call.error("needs TLS on the router (add a tls section); without TLS only HostSNI(`*`) and ClientIP are allowed")
    };
    let matcher = if is("HostSNI") {
        call.expect_args(&[1])?;
        let pattern = sni_pattern(&call.args[0]).map_err(|m| call.error(m))?;
        if !tls && pattern != SniPattern::Any {
            return Err(needs_tls());
        }
        TcpMatcher::HostSni(pattern)
    } else if is("HostSNIRegexp") {
        call.expect_args(&[1])?;
        let pattern = &call.args[0];
        if !pattern.is_ascii() {
            return Err(call.error(format!(
                "invalid value {pattern:?}, non-ASCII characters are not allowed"
            )));
        }
        if !tls {
            return Err(needs_tls());
        }
        TcpMatcher::HostSniRegexp(rule::go_regex(pattern).map_err(|m| call.error(m))?)
    } else if is("ClientIP") {
        call.expect_args(&[1])?;
        TcpMatcher::ClientIp(rule::parse_client_ip(&call.args[0]).map_err(|m| call.error(m))?)
    } else if is("ALPN") {
        call.expect_args(&[1])?;
        let proto = &call.args[0];
        if proto == ACME_TLS_ALPN {
            return Err(call.error(format!(
                "invalid protocol value {proto:?}: it is reserved for ACME TLS challenges"
            )));
        }
        if !tls {
            return Err(needs_tls());
        }
        TcpMatcher::Alpn(proto.clone())
    } else {
        return Err(call.not_defined());
    };
    Ok(matcher)
}

/// Validates a `HostSNI` argument as Traefik does (`^(\*\.)?[[:word:].\-:]+$`, `:` being
/// there for IPv6 literals) and normalises it.
fn sni_pattern(arg: &str) -> Result<SniPattern, String> {
    if arg == "*" {
        return Ok(SniPattern::Any);
    }
    let (wildcard, name) = match arg.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, arg),
    };
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b':'));
    if !valid {
        let hint = if arg.is_ascii() {
            ""
        } else {
            " (write internationalised names in punycode, xn--…)"
        };
        return Err(format!("{arg:?} is not a valid hostname{hint}"));
    }
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    Ok(if wildcard {
        SniPattern::Wildcard(format!(".{name}"))
    } else {
        SniPattern::Exact(name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn tls(src: &str) -> TcpRule {
        TcpRule::compile(src, true).unwrap()
    }

    fn error(src: &str, tls: bool) -> String {
        TcpRule::compile(src, tls).unwrap_err().to_string()
    }

    #[test]
    fn host_sni_is_exact_and_case_insensitive() {
        let r = tls("HostSNI(`Foo.Example.com`)");
        assert!(r.matches(&sni("foo.example.com")));
        assert!(r.matches(&sni("FOO.EXAMPLE.COM")));
        assert!(r.matches(&sni("foo.example.com.")));
        assert!(!r.matches(&sni("bar.foo.example.com")));
        assert!(!r.matches(&sni("example.com")));
        assert!(!r.matches(&conn(None, &[], "192.0.2.1")));
    }

    #[test]
    fn server_names_are_the_host_sni_names_in_order() {
        let r = tls(
            "HostSNI(`B.test`) || (HostSNI(`*.w.test`) && ClientIP(`10.0.0.0/8`)) || HostSNI(`b.test`)",
        );
        assert_eq!(r.server_names(), ["b.test", "*.w.test"]);
        assert!(tls("HostSNI(`*`)").server_names().is_empty());
    }

    #[test]
    fn host_sni_trailing_dot_is_trimmed() {
        let r = tls("HostSNI(`example.com.`)");
        assert!(r.matches(&sni("example.com")));
    }

    #[test]
    fn host_sni_wildcard_covers_exactly_one_label() {
        let r = tls("HostSNI(`*.example.com`)");
        assert!(r.matches(&sni("a.example.com")));
        assert!(r.matches(&sni("A.Example.COM")));
        assert!(!r.matches(&sni("a.b.example.com")));
        assert!(!r.matches(&sni("example.com")));
        assert!(!r.matches(&sni(".example.com")));
        assert!(!r.matches(&sni("aexample.com")));
    }

    #[test]
    fn host_sni_star_matches_with_or_without_sni() {
        let r = TcpRule::compile("HostSNI(`*`)", false).unwrap();
        assert!(r.matches(&sni("anything")));
        assert!(r.matches(&conn(None, &[], "192.0.2.1")));
        assert!(r.is_catch_all());
        assert_eq!(r.default_priority(), -1);
    }

    #[test]
    fn empty_sni_never_matches_a_named_host_sni() {
        assert!(!tls("HostSNI(`example.com`)").matches(&sni("")));
        assert!(!tls("HostSNI(`*.example.com`)").matches(&sni("")));
    }

    #[test]
    fn host_sni_accepts_ip_literals() {
        assert!(tls("HostSNI(`10.0.0.1`)").matches(&sni("10.0.0.1")));
        assert!(tls("HostSNI(`::1`)").matches(&sni("::1")));
    }

    #[test]
    fn host_sni_rejects_invalid_names() {
        assert_eq!(
            error("HostSNI(`foo bar`)", true),
            "column 1: HostSNI: \"foo bar\" is not a valid hostname"
        );
        assert!(error("HostSNI(`a.*.com`)", true).contains("is not a valid hostname"));
        // `*.` leaves an empty name once the wildcard is stripped.
        assert!(error("HostSNI(`*.`)", true).contains("is not a valid hostname"));
        assert!(error("HostSNI(`bücher.de`)", true).contains("punycode"));
    }

    #[test]
    fn host_sni_takes_one_argument() {
        assert_eq!(
            error("HostSNI(`a.com`, `b.com`)", true),
            "column 1: HostSNI: unexpected number of parameters; got 2, expected one of [1]"
        );
    }

    #[test]
    fn matcher_names_accept_traefik_casings() {
        for src in ["hostsni(`a.com`)", "HOSTSNI(`a.com`)", "Hostsni(`a.com`)"] {
            assert!(tls(src).matches(&sni("a.com")), "{src}");
        }
        assert_eq!(
            error("HostSni(`a.com`)", true),
            "column 1: HostSni is not defined"
        );
        assert_eq!(
            error("ClientIP(`::1`) || Host(`a.com`)", true),
            "column 20: Host is not defined"
        );
    }

    #[test]
    fn non_tls_routers_allow_only_catch_all_and_client_ip() {
        assert!(TcpRule::compile("HostSNI(`*`) && ClientIP(`10.0.0.0/8`)", false).is_ok());
        assert!(TcpRule::compile("ClientIP(`::1`)", false).is_ok());
        for src in [
            "HostSNI(`a.com`)",
            "HostSNIRegexp(`^a`)",
            "ALPN(`h2`)",
            "ClientIP(`::1`) || HostSNI(`a.com`)",
        ] {
            assert!(
                error(src, false).contains("needs TLS on the router"),
                "{src}"
            );
        }
    }

    #[test]
    fn host_sni_regexp_is_unanchored_on_lower_cased_sni() {
        let r = tls("HostSNIRegexp(`^[a-z]+\\.example\\.com$`)");
        assert!(r.matches(&sni("Api.Example.com")));
        assert!(!r.matches(&sni("api.example.org")));
        let r = tls("HostSNIRegexp(`example`)");
        assert!(r.matches(&sni("www.example.org")));
        let r = tls("HostSNIRegexp(`^$`)");
        assert!(r.matches(&conn(None, &[], "192.0.2.1")));
    }

    #[test]
    fn host_sni_regexp_accepts_v2_style_braces_as_literals() {
        let r = tls("HostSNIRegexp(`{subdomain:[a-z]+}.example.com`)");
        assert!(!r.matches(&sni("api.example.com")));
        assert!(r.matches(&sni("{subdomain:x}.example.com")));
    }

    #[test]
    fn host_sni_regexp_reports_bad_patterns() {
        let e = error("HostSNI(`*`) && HostSNIRegexp(`a(`)", true);
        assert!(
            e.starts_with("column 17: HostSNIRegexp: error parsing regexp"),
            "{e}"
        );
        assert!(error("HostSNIRegexp(`é`)", true).contains("non-ASCII"));
    }

    #[test]
    fn client_ip_matches_addresses_and_networks() {
        let v4 = tls("ClientIP(`10.1.2.3`)");
        assert!(v4.matches(&conn(None, &[], "10.1.2.3")));
        assert!(!v4.matches(&conn(None, &[], "10.1.2.4")));
        let net = tls("ClientIP(`10.0.0.0/8`)");
        assert!(net.matches(&conn(None, &[], "10.200.0.1")));
        assert!(!net.matches(&conn(None, &[], "11.0.0.1")));
        let v6 = tls("ClientIP(`2001:db8::/32`)");
        assert!(v6.matches(&conn(None, &[], "2001:db8::1")));
        assert!(!v6.matches(&conn(None, &[], "2001:db9::1")));
        let host_bits = tls("ClientIP(`192.168.1.7/24`)");
        assert!(host_bits.matches(&conn(None, &[], "192.168.1.200")));
    }

    #[test]
    fn client_ip_sees_ipv4_mapped_addresses_as_ipv4() {
        let v4 = tls("ClientIP(`10.0.0.0/8`)");
        assert!(v4.matches(&conn(None, &[], "::ffff:10.1.1.1")));
        let mapped = tls("ClientIP(`::ffff:10.1.1.1`)");
        assert!(mapped.matches(&conn(None, &[], "10.1.1.1")));
        assert!(mapped.matches(&conn(None, &[], "::ffff:10.1.1.1")));
    }

    #[test]
    fn client_ip_rejects_garbage() {
        assert_eq!(
            error("ClientIP(`10.0.0.300`)", false),
            "column 1: ClientIP: \"10.0.0.300\" is neither an IP address nor a CIDR network"
        );
        assert!(error("ClientIP(`10.0.0.0/33`)", false).contains("neither"));
    }

    #[test]
    fn alpn_matches_an_offered_protocol() {
        let offered = [b"h2".to_vec(), b"http/1.1".to_vec()];
        let r = tls("ALPN(`http/1.1`)");
        assert!(r.matches(&conn(Some("a"), &offered, "192.0.2.1")));
        assert!(!tls("ALPN(`h3`)").matches(&conn(Some("a"), &offered, "192.0.2.1")));
        assert!(!r.matches(&conn(Some("a"), &[], "192.0.2.1")));
    }

    #[test]
    fn alpn_refuses_the_acme_protocol() {
        assert!(error("ALPN(`acme-tls/1`)", true).contains("reserved for ACME"));
    }

    #[test]
    fn operators_combine_matchers() {
        let r = tls("HostSNI(`a.com`) && !ClientIP(`10.0.0.0/8`) || ALPN(`x`)");
        let x = [b"x".to_vec()];
        assert!(r.matches(&conn(Some("a.com"), &[], "192.0.2.1")));
        assert!(!r.matches(&conn(Some("a.com"), &[], "10.0.0.1")));
        assert!(r.matches(&conn(Some("b.com"), &x, "10.0.0.1")));
    }

    #[test]
    fn priority_defaults_to_rule_length_in_bytes() {
        let r = tls("ALPN(`é`)");
        assert_eq!(r.default_priority(), 10);
        let r = tls(" HostSNI(`a.com`) ");
        assert_eq!(r.default_priority(), 18);
        assert!(!r.is_catch_all());
        let r = TcpRule::compile(" HostSNI(`*`)", false).unwrap();
        assert!(r.is_catch_all());
        assert_eq!(r.default_priority(), -1);
        let r = TcpRule::compile("HostSNI(`*`) && ClientIP(`::1`)", false).unwrap();
        assert!(!r.is_catch_all());
        assert_eq!(r.default_priority(), 31);
        let r = TcpRule::compile("!HostSNI(`*`)", false).unwrap();
        assert!(!r.is_catch_all());
        assert_eq!(r.source(), "!HostSNI(`*`)");
    }
}
