//! Feeds arbitrary text to the rule parser and to the TCP and HTTP rule compilers: none may
//! panic, errors point into the rule text, and a compiled TCP rule evaluates against a few
//! connections (one of them showing the input itself as SNI) without panicking.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use l4::rule::RuleError;
use l4::tcp::rule::{ConnInfo, TcpRule};
use l7::rule::{HttpMatcher, HttpRule};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let columns = text.chars().count() + 1;
    let located = |e: &RuleError| (1..=columns).contains(&e.column);

    let parsed = l4::rule::parse(&text);
    if let Err(e) = &parsed {
        assert!(located(e), "{e} outside {columns} columns");
    }

    let alpn = [b"h2".to_vec(), b"http/1.1".to_vec(), data.to_vec()];
    let v4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
    let v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
    let conns = [
        ConnInfo {
            sni: None,
            alpn: &[],
            client_ip: v4,
        },
        ConnInfo {
            sni: Some("a.test"),
            alpn: &alpn[..1],
            client_ip: v6,
        },
        ConnInfo {
            sni: Some("WWW.A.Test."),
            alpn: &alpn,
            client_ip: v4,
        },
        ConnInfo {
            sni: Some(""),
            alpn: &alpn[2..],
            client_ip: v6,
        },
        ConnInfo {
            sni: Some(&text),
            alpn: &alpn,
            client_ip: v4,
        },
    ];

    let mut compiled_without_tls = false;
    for tls in [false, true] {
        match TcpRule::compile(&text, tls) {
            Ok(rule) => {
                assert!(parsed.is_ok(), "compiled a rule that does not parse");
                compiled_without_tls |= !tls;
                for conn in &conns {
                    let matched = rule.matches(conn);
                    assert!(
                        matched || !rule.is_catch_all(),
                        "a catch-all missed {conn:?}"
                    );
                }
            }
            Err(e) => {
                assert!(located(&e), "{e} outside {columns} columns");
                // TLS only adds matchers: what compiles without it compiles with it.
                assert!(!compiled_without_tls, "compiles without TLS only: {e}");
            }
        }
    }

    match HttpRule::compile(&text) {
        Ok(rule) => {
            assert!(parsed.is_ok(), "compiled a rule that does not parse");
            let _ = rule.hosts();
            for matcher in rule.expr().leaves() {
                if let HttpMatcher::Host(pattern) = matcher {
                    for host in ["", "a.test", "x.a.test.", &text] {
                        let _ = pattern.matches(host);
                    }
                }
            }
        }
        Err(e) => assert!(located(&e), "{e} outside {columns} columns"),
    }
});
