//! The HTTP provider against a real configuration server on loopback: routes follow the
//! endpoint, `ETag`s save the body, a hanging or garbage endpoint keeps the last good
//! configuration, and `providers.precedence` breaks ties with the file provider.

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use support::config_server::{Answer, ConfigServer};
use support::web::{Conn, HttpBackend};
use support::*;

/// The JSON an endpoint serves: router `r` on `Host(host)` to a service on `url`.
fn json_route(host: &str, url: &str) -> String {
    format!(
        r#"{{"http": {{"routers": {{"r": {{"rule": "Host(`{host}`)", "service": "s"}}}},
           "services": {{"s": {{"loadBalancer": {{"servers": [{{"url": "{url}"}}]}}}}}}}}}}"#
    )
}

/// A router with one entrypoint, the file provider on `dynamic` and the HTTP provider on
/// `endpoint` polled every 200ms; `extra_providers` goes under `providers:`.
fn start(tag: &str, endpoint: &str, dynamic: &str, extra_providers: &str) -> (Router, u16) {
    start_with(temp_dir(tag), endpoint, dynamic, extra_providers, "")
}

/// [`start`] in `dir`, with `http_extra` under `providers.http`.
fn start_with(
    dir: std::path::PathBuf,
    endpoint: &str,
    dynamic: &str,
    extra_providers: &str,
    http_extra: &str,
) -> (Router, u16) {
    let port = free_port();
    let st = format!(
        "entryPoints:\n  web:\n    address: \"127.0.0.1:{port}\"\nproviders:\n  providersThrottleDuration: 100ms\n{extra_providers}  file:\n    filename: \"{}\"\n  http:\n    endpoint: \"{endpoint}\"\n    pollInterval: 200ms\n    pollTimeout: 500ms\n{http_extra}log:\n  level: DEBUG\n",
        dir.join("dynamic.yml").display()
    );
    (Router::start(&dir, &st, dynamic, &[port]), port)
}

/// Waits until `host` on the router answers a body starting with `want`.
async fn served(port: u16, host: &str, want: &str, router: &Router) {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < WAIT {
        let mut conn = Conn::h1(port).await;
        let answer = conn.get(host, "/").await;
        if answer.body.starts_with(want) {
            return;
        }
        last = format!("{} {}", answer.status, answer.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{host} never answered {want:?} (last: {last}):\n{}",
        router.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_follow_the_endpoint_and_unchanged_bodies_are_not_sent_again() {
    let (a, b) = (HttpBackend::start("a").await, HttpBackend::start("b").await);
    let server = ConfigServer::start(&json_route("h.test", &a.url())).await;
    let (router, port) = start("http-provider", &server.url(), "", "");
    served(port, "h.test", "a /", &router).await;
    // Later polls carry the ETag and are answered 304.
    let start = Instant::now();
    while server.not_modified.load(Ordering::SeqCst) < 2 {
        assert!(start.elapsed() < WAIT, "no conditional poll");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Once at startup (the file provider), once for the endpoint's body; never for a 304.
    assert_eq!(router.count_log("dynamic configuration applied"), 2);
    server.set_json(&json_route("h.test", &b.url()));
    served(port, "h.test", "b /", &router).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_or_garbage_endpoint_keeps_the_last_good_configuration() {
    let a = HttpBackend::start("a").await;
    let server = ConfigServer::start(&json_route("h.test", &a.url())).await;
    let (router, port) = start("http-provider-bad", &server.url(), "", "");
    served(port, "h.test", "a /", &router).await;
    server.set(Answer::Garbage);
    router.wait_log("JSON syntax error");
    router.wait_log("keeping its last good configuration");
    served(port, "h.test", "a /", &router).await;
    // The file provider keeps updating meanwhile.
    router.rewrite_dynamic(&format!(
        "http:\n  routers:\n    f: {{rule: \"Host(`file.test`)\", service: s}}\n  services:\n    s: {{loadBalancer: {{servers: [{{url: \"{}\"}}]}}}}\n",
        a.url()
    ));
    served(port, "file.test", "a /", &router).await;
    served(port, "h.test", "a /", &router).await;
    server.set(Answer::Hang);
    router.wait_log("no complete answer within 500ms");
    served(port, "h.test", "a /", &router).await;
    // The endpoint comes back with a new configuration: it is applied.
    server.set_json(&json_route("new.test", &a.url()));
    served(port, "new.test", "a /", &router).await;
}

/// The file provider's service, referenced from the HTTP provider's router as `s@file`,
/// and two routers with one rule and one priority: the file provider's wins by default,
/// the HTTP provider's when `providers.precedence` puts it first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn precedence_breaks_equal_priorities_and_references_cross_providers() {
    let (a, b) = (HttpBackend::start("a").await, HttpBackend::start("b").await);
    let dynamic = format!(
        "http:\n  routers:\n    tie:\n      rule: \"Host(`tie.test`)\"\n      priority: 5\n      service: a\n  services:\n    a:\n      loadBalancer:\n        servers: [{{url: \"{}\"}}]\n    shared:\n      loadBalancer:\n        servers: [{{url: \"{}\"}}]\n",
        a.url(),
        b.url()
    );
    let json = format!(
        r#"{{"http": {{"routers": {{
              "tie": {{"rule": "Host(`tie.test`)", "priority": 5, "service": "b"}},
              "cross": {{"rule": "Host(`cross.test`)", "service": "shared@file"}}}},
           "services": {{"b": {{"loadBalancer": {{"servers": [{{"url": "{}"}}]}}}}}}}}}}"#,
        b.url()
    );
    let server = ConfigServer::start(&json).await;
    let (router, port) = start("precedence-default", &server.url(), &dynamic, "");
    served(port, "cross.test", "b /", &router).await;
    served(port, "tie.test", "a /", &router).await;
    let (router, port) = start(
        "precedence-http",
        &server.url(),
        &dynamic,
        "  precedence: [http]\n",
    );
    served(port, "cross.test", "b /", &router).await;
    served(port, "tie.test", "b /", &router).await;
}

/// An `https://` endpoint that requires a client certificate: polled with the configured
/// CA, certificate, key and headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_endpoints_are_verified_with_the_configured_ca_and_client_certificate() {
    let a = HttpBackend::start("a").await;
    let ca = TestCa::new("config CA");
    let server_cert = ca.issue(&["127.0.0.1"]);
    let client_cert = ca.issue(&["router"]);
    let tls = support::web::tls_server_config(&server_cert, Some(&ca.cert), &["http/1.1"]);
    let server = ConfigServer::start_tls(&json_route("tls.test", &a.url()), tls).await;
    let dir = temp_dir("http-provider-tls");
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, &ca.cert.cert_pem).expect("write CA");
    let (cert, key) = client_cert.write(&dir, "client");
    let http_extra = format!(
        "    headers:\n      Authorization: \"Bearer t\"\n    tls:\n      ca: \"{}\"\n      cert: \"{}\"\n      key: \"{}\"\n",
        ca_path.display(),
        cert.display(),
        key.display()
    );
    let (router, port) = start_with(dir, &server.url(), "", "", &http_extra);
    served(port, "tls.test", "a /", &router).await;
}

/// The endpoint's configuration is applied before the entrypoint accepts: the very first
/// request is routed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_configuration_is_served_from_the_first_request() {
    let a = HttpBackend::start("a").await;
    let server = ConfigServer::start(&json_route("first.test", &a.url())).await;
    let (_router, port) = start("http-provider-first", &server.url(), "", "");
    let mut conn = Conn::h1(port).await;
    assert_eq!(conn.get("first.test", "/").await.body, "a /");
}
