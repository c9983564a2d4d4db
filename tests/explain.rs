//! `sallyport explain` (which router a connection and its request reach, and why) and the
//! warnings of `sallyport check` about routers that can never match and objects nothing uses.

mod support;

use std::path::{Path, PathBuf};

use support::*;

/// HTTP routers on `web`, and on `websecure` HTTPS routers next to TLS TCP routers.
const ROUTERS: &str = r#"http:
  routers:
    api:
      rule: "Host(`a.test`) && PathPrefix(`/api`)"
      service: app
      entryPoints: [web]
    site:
      rule: "Host(`a.test`)"
      service: app
      entryPoints: [web]
    admin:
      rule: "Host(`a.test`) && PathPrefix(`/api/admin`)"
      priority: 1000
      service: app
      entryPoints: [web]
    office:
      rule: "Host(`b.test`) && ClientIP(`10.0.0.0/8`)"
      service: app
      entryPoints: [web]
    broken:
      rule: "Host(`b.test`)"
      service: missing
      entryPoints: [web]
    secure:
      rule: "Host(`s.test`)"
      service: app
      entryPoints: [websecure]
      tls: {}
    anyhost:
      rule: "PathPrefix(`/`)"
      priority: 1
      service: app
      entryPoints: [websecure]
      tls: {}
  services:
    app:
      loadBalancer:
        servers: [{url: "http://127.0.0.1:9"}]
tcp:
  routers:
    db:
      rule: "HostSNI(`db.test`)"
      service: pg
      entryPoints: [websecure]
      tls: {passthrough: true}
    sni-over-https:
      rule: "HostSNI(`s.test`)"
      service: pg
      entryPoints: [websecure]
      tls: {passthrough: true}
    rest:
      rule: "HostSNI(`*`)"
      service: pg
      entryPoints: [websecure]
      tls: {passthrough: true}
  services:
    pg:
      loadBalancer:
        servers: [{address: "127.0.0.1:9"}]
"#;

fn setup(tag: &str, dynamic: &str) -> PathBuf {
    let dir = temp_dir(tag);
    std::fs::write(dir.join("dynamic.yml"), dynamic).unwrap();
    std::fs::write(
        dir.join("static.yml"),
        static_config(&dir, &[("web", 18080), ("websecure", 18443)], ""),
    )
    .unwrap();
    dir
}

fn explain(dir: &Path, args: &[&str]) -> (i32, String) {
    let mut all = vec!["explain", "--config", "static.yml"];
    all.extend_from_slice(args);
    run_cli(&all, dir)
}

fn first_line(out: &str) -> &str {
    out.lines().next().unwrap_or("")
}

#[test]
fn explain_follows_http_priorities_by_host_and_path() {
    let dir = setup("explain-http", ROUTERS);
    let web = ["--entrypoint", "web", "--host", "a.test"];
    let (code, out) = explain(&dir, &[&web[..], &["--path", "/api/admin/users"]].concat());
    assert_eq!((code, first_line(&out)), (0, "router: admin@file"), "{out}");
    let (code, out) = explain(&dir, &[&web[..], &["--path", "/api/v1"]].concat());
    assert_eq!((code, first_line(&out)), (0, "router: api@file"), "{out}");
    // The candidates in order, with their priorities and why they did not match.
    let admin = out.find("admin@file (priority 1000)").expect(&out);
    let api = out.find("api@file (priority 36)").expect(&out);
    assert!(admin < api, "{out}");
    assert!(
        out.contains("PathPrefix(`/api/admin`) did not match path /api/v1"),
        "{out}"
    );
    let (code, out) = explain(&dir, &[&web[..], &["--path", "/about"]].concat());
    assert_eq!((code, first_line(&out)), (0, "router: site@file"), "{out}");
}

#[test]
fn explain_matches_client_ip_and_answers_no_match_with_exit_1() {
    let dir = setup("explain-ip", ROUTERS);
    let b = ["--entrypoint", "web", "--host", "b.test"];
    let (code, out) = explain(&dir, &[&b[..], &["--client-ip", "10.2.3.4"]].concat());
    assert_eq!(
        (code, first_line(&out)),
        (0, "router: office@file"),
        "{out}"
    );
    let (code, out) = explain(&dir, &[&b[..], &["--client-ip", "192.0.2.7"]].concat());
    assert_eq!((code, first_line(&out)), (1, "no match"), "{out}");
    assert!(
        out.contains("ClientIP(`10.0.0.0/8`) did not match client IP 192.0.2.7"),
        "{out}"
    );
    assert!(
        out.contains("Host(`a.test`) did not match host b.test"),
        "{out}"
    );
}

#[test]
fn explain_notes_disabled_routers_as_skipped_with_their_error() {
    let dir = setup("explain-skipped", ROUTERS);
    let (code, out) = explain(&dir, &["--entrypoint", "web", "--host", "b.test"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("HTTP router broken@file: the service \"missing@file\" does not exist"),
        "{out}"
    );
    assert!(!out.contains("1. broken@file"), "never a candidate: {out}");
}

/// Reference §4.1: an HTTPS router for the very name, then a TLS TCP router that is not a
/// catch-all, then the HTTPS catch-all, then the TCP catch-all.
#[test]
fn explain_applies_the_tls_dispatch_order() {
    let dir = setup("explain-tls", ROUTERS);
    let ep = ["--entrypoint", "websecure"];
    let (code, out) = explain(&dir, &[&ep[..], &["--sni", "s.test"]].concat());
    assert_eq!(
        (code, first_line(&out)),
        (0, "router: secure@file"),
        "{out}"
    );
    assert!(!out.contains("sni-over-https@file"), "not tried: {out}");
    let (code, out) = explain(
        &dir,
        &[&ep[..], &["--sni", "db.test", "--alpn", "h2"]].concat(),
    );
    assert_eq!((code, first_line(&out)), (0, "router: db@file"), "{out}");
    // No TCP router names it: the HTTPS catch-all (a TLS router without Host) comes before
    // the TCP catch-all, and the request is routed by its host.
    let (code, out) = explain(&dir, &[&ep[..], &["--sni", "x.test"]].concat());
    assert_eq!(
        (code, first_line(&out)),
        (0, "router: anyhost@file"),
        "{out}"
    );
    assert!(out.contains("rest@file is a catch-all"), "{out}");
}

#[test]
fn explain_takes_a_plain_tcp_catch_all_before_http() {
    let dir = setup(
        "explain-plain",
        r#"tcp:
  routers:
    all:
      rule: "HostSNI(`*`)"
      service: s
      entryPoints: [web]
  services:
    s: {loadBalancer: {servers: [{address: "127.0.0.1:9"}]}}
http:
  routers:
    web:
      rule: "Host(`a.test`)"
      service: app
      entryPoints: [web]
  services:
    app: {loadBalancer: {servers: [{url: "http://127.0.0.1:9"}]}}
"#,
    );
    let (code, out) = explain(&dir, &["--entrypoint", "web", "--host", "a.test"]);
    assert_eq!((code, first_line(&out)), (0, "router: all@file"), "{out}");
    assert!(out.contains("before the client speaks"), "{out}");
}

#[test]
fn explain_refuses_an_unknown_entrypoint() {
    let dir = setup("explain-unknown", ROUTERS);
    let (code, out) = explain(&dir, &["--entrypoint", "nowhere"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("entrypoint \"nowhere\" does not exist"),
        "{out}"
    );
}

#[test]
fn check_warns_about_a_router_that_can_never_match() {
    let dir = setup(
        "check-shadow",
        r#"http:
  routers:
    broad:
      rule: "Host(`a.test`) && PathPrefix(`/api`)"
      priority: 100
      service: app
    narrow:
      rule: "Host(`a.test`) && PathPrefix(`/api/v1`)"
      priority: 10
      service: app
    other-host:
      rule: "Host(`b.test`) && PathPrefix(`/api/v1`)"
      priority: 10
      service: app
  services:
    app: {loadBalancer: {servers: [{url: "http://127.0.0.1:9"}]}}
"#,
    );
    let (code, out) = run_cli(&["check", "--config", "static.yml"], &dir);
    assert_eq!(code, 0, "warnings only: {out}");
    assert!(
        out.lines().any(|l| l.starts_with("warning: ") && l.contains(
            "dynamic.yml:8:7: HTTP router \"narrow@file\" (priority 10) can never match: on entrypoints web, websecure, HTTP router \"broad@file\" (priority 100) is tried first"
        )),
        "{out}"
    );
    assert_eq!(out.matches("can never match").count(), 1, "{out}");
}

#[test]
fn check_warns_about_unused_services_and_middlewares_but_not_weighted_children() {
    let dir = setup(
        "check-unused",
        r#"http:
  routers:
    r:
      rule: "Host(`a.test`)"
      service: split
      middlewares: [both]
  middlewares:
    both:
      chain: {middlewares: [inner]}
    inner:
      headers: {customRequestHeaders: {X-A: b}}
    lonely:
      headers: {customRequestHeaders: {X-A: b}}
  services:
    split:
      weighted: {services: [{name: blue, weight: 1}]}
    blue: {loadBalancer: {servers: [{url: "http://127.0.0.1:9"}]}}
    orphan: {loadBalancer: {servers: [{url: "http://127.0.0.1:9"}]}}
tcp:
  services:
    tcp-orphan: {loadBalancer: {servers: [{address: "127.0.0.1:9"}]}}
"#,
    );
    let (code, out) = run_cli(&["check", "--config", "static.yml"], &dir);
    assert_eq!(code, 0, "warnings only: {out}");
    for expected in [
        "dynamic.yml:13:7: HTTP middleware \"lonely@file\" is not used by any enabled router",
        "dynamic.yml:18:13: HTTP service \"orphan@file\" is not used by any enabled router",
        "TCP service \"tcp-orphan@file\" is not used by any enabled router",
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with("warning: ") && l.contains(expected)),
            "{expected}: {out}"
        );
    }
    for used in ["blue@file", "split@file", "inner@file", "both@file"] {
        assert!(!out.contains(used), "{used} is used: {out}");
    }
}

#[test]
fn explain_reads_headers_and_the_query() {
    let dir = setup(
        "explain-headers",
        r#"http:
  routers:
    beta:
      rule: "Header(`X-Beta`, `1`) && Query(`v`, `2`)"
      service: app
      entryPoints: [web]
  services:
    app: {loadBalancer: {servers: [{url: "http://127.0.0.1:9"}]}}
"#,
    );
    let web = ["--entrypoint", "web"];
    let (code, out) = explain(
        &dir,
        &[&web[..], &["--header", "X-Beta=1", "--path", "/x?v=2"]].concat(),
    );
    assert_eq!((code, first_line(&out)), (0, "router: beta@file"), "{out}");
    let (code, out) = explain(&dir, &[&web[..], &["--path", "/x?v=2"]].concat());
    assert_eq!((code, first_line(&out)), (1, "no match"), "{out}");
    assert!(
        out.contains("Header(`X-Beta`, `1`) did not match header x-beta (absent)"),
        "{out}"
    );
}

/// A router served with another TLS option than the handshake's answers 421.
#[test]
fn explain_reports_a_misdirected_request() {
    let dir = setup(
        "explain-421",
        r#"http:
  routers:
    strict:
      rule: "Host(`x.test`)"
      service: app
      entryPoints: [websecure]
      tls: {options: modern}
    greedy:
      rule: "HostRegexp(`^x`)"
      priority: 1000
      service: app
      entryPoints: [websecure]
      tls: {}
  services:
    app: {loadBalancer: {servers: [{url: "http://127.0.0.1:9"}]}}
tls:
  options:
    modern: {minVersion: VersionTLS12}
"#,
    );
    let (code, out) = explain(&dir, &["--entrypoint", "websecure", "--sni", "x.test"]);
    assert_eq!((code, first_line(&out)), (1, "no match"), "{out}");
    assert!(
        out.contains(
            "greedy@file is served with TLS option default, not the handshake's modern@file: 421"
        ),
        "{out}"
    );
}
