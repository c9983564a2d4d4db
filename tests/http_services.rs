//! HTTP services end to end: the real binary on loopback between real clients (hyper, tonic,
//! tungstenite) and real backends, for every kind of `http.services` (loadBalancer with its
//! strategies, sticky cookies and health checks, weighted, mirroring, failover,
//! highestRandomWeight), the error statuses of forwarding, serversTransports to HTTPS
//! backends (private CA, serverName, insecureSkipVerify, mTLS), WebSocket and gRPC.

mod support;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use ::http::{Request, StatusCode, Version};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use sha2::{Digest, Sha256};
use support::grpc::{FAIL, GrpcBackend, GrpcClient};
use support::web::{Answer, Conn, HttpBackend, websocket_echo};
use support::*;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;
use tonic::Code;

/// An active health check of `/health` probing often, so a flip is seen within a fraction of
/// a second.
const HEALTH_CHECK: &str = "{ path: /health, interval: 200ms, timeout: 150ms }";

/// The router with one plaintext entrypoint `web` serving `dynamic`; returns it and its port.
fn start(tag: &str, dynamic: &str) -> (Router, u16) {
    let dir = temp_dir(tag);
    let port = free_port();
    let router = Router::start(
        &dir,
        &static_config(&dir, &[("web", port)], ""),
        dynamic,
        &[port],
    );
    (router, port)
}

/// Waits until `done` holds, failing with `what` after [`WAIT`].
async fn eventually<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !done().await {
        assert!(start.elapsed() < WAIT, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the router has logged `needle` `count` times in all.
async fn logged(router: &Router, needle: &str, count: usize) {
    eventually(&format!("{count} × {needle:?} in the log"), || async {
        router.count_log(needle) >= count
    })
    .await;
}

/// The `x-backend` of `n` sequential GETs of `host` on one connection, concatenated.
async fn sequence(conn: &mut Conn, host: &str, n: usize) -> String {
    let mut out = String::new();
    for _ in 0..n {
        let answer = conn.get(host, "/").await;
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
        out.push_str(answer.header("x-backend"));
    }
    out
}

fn lb(urls: &[&str]) -> String {
    let servers: Vec<String> = urls.iter().map(|u| format!("{{ url: \"{u}\" }}")).collect();
    format!(
        "{{ loadBalancer: {{ servers: [{}] }} }}",
        servers.join(", ")
    )
}

fn post(host: &str, path: &str, body: &str) -> Request<Full<Bytes>> {
    Request::post(path)
        .header("host", host)
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_round_robin_and_weighted_services_follow_traefiks_order() {
    let (a, b) = tokio::join!(HttpBackend::start("A"), HttpBackend::start("B"));
    let dynamic = format!(
        r#"
http:
  routers:
    lb:
      rule: "Host(`lb.test`)"
      service: lb
    weighted:
      rule: "Host(`weighted.test`)"
      service: split
  services:
    lb:
      loadBalancer:
        servers:
          - {{ url: "{a}", weight: 3 }}
          - {{ url: "{b}", weight: 1 }}
    a: {sa}
    b: {sb}
    split:
      weighted:
        services:
          - {{ name: a, weight: 3 }}
          - {{ name: b, weight: 1 }}
"#,
        a = a.url(),
        b = b.url(),
        sa = lb(&[&a.url()]),
        sb = lb(&[&b.url()]),
    );
    let (_router, port) = start("svc-wrr", &dynamic);
    // Observed with Traefik 3.7.15 for both (see l7::balance::edf).
    let mut conn = Conn::h1(port).await;
    assert_eq!(sequence(&mut conn, "lb.test", 12).await, "AABAAAABAABA");
    assert_eq!(
        sequence(&mut conn, "weighted.test", 12).await,
        "AABAAAABAABA"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sticky_cookie_pins_a_client_to_its_server() {
    let (a, b) = tokio::join!(HttpBackend::start("A"), HttpBackend::start("B"));
    let dynamic = format!(
        r#"
http:
  routers:
    plain:
      rule: "Host(`plain.test`)"
      service: lb
    options:
      rule: "Host(`options.test`)"
      service: tuned
    weighted:
      rule: "Host(`weighted.test`)"
      service: split
  services:
    a: {sa}
    b: {sb}
    split:
      weighted:
        services: [{{ name: a, weight: 1 }}, {{ name: b, weight: 1 }}]
        sticky: {{ cookie: {{}} }}
    lb:
      loadBalancer:
        servers: [{{ url: "{a}" }}, {{ url: "{b}" }}]
        sticky: {{ cookie: {{}} }}
    tuned:
      loadBalancer:
        servers: [{{ url: "{a}" }}, {{ url: "{b}" }}]
        sticky:
          cookie: {{ name: "my session", httpOnly: true, secure: true, sameSite: strict, maxAge: 60 }}
"#,
        a = a.url(),
        b = b.url(),
        sa = lb(&[&a.url()]),
        sb = lb(&[&b.url()]),
    );
    let (_router, port) = start("svc-sticky", &dynamic);
    let mut conn = Conn::h1(port).await;

    // Traefik's default name for service `lb@file` is `_05410`; the value is the first 16
    // hex digits of sha256(server URL).
    let first = conn.get("plain.test", "/").await;
    let set_cookie = first.header("set-cookie").to_owned();
    let url = match first.header("x-backend") {
        "A" => a.url(),
        _ => b.url(),
    };
    let value = &hex(&Sha256::digest(url.as_bytes()))[..16];
    assert_eq!(set_cookie, format!("_05410={value}; Path=/"));

    // Without the cookie the servers alternate; with it, every request goes to one server
    // and no new cookie is set.
    let unpinned = sequence(&mut conn, "plain.test", 4).await;
    assert!(
        unpinned.contains('A') && unpinned.contains('B'),
        "{unpinned}"
    );
    for _ in 0..6 {
        let mut req = support::web::get("plain.test", "/", false);
        req.headers_mut()
            .insert("cookie", format!("_05410={value}").parse().expect("cookie"));
        let answer = conn.send(req).await;
        assert_eq!(answer.header("x-backend"), first.header("x-backend"));
        assert_eq!(answer.header("set-cookie"), "-");
    }

    let tuned = conn.get("options.test", "/").await;
    let set_cookie = tuned.header("set-cookie");
    assert!(
        set_cookie.starts_with("my_session=")
            && set_cookie.ends_with("; Path=/; Max-Age=60; HttpOnly; Secure; SameSite=Strict"),
        "{set_cookie}"
    );

    // A weighted service pins to a child service, whose name makes the value.
    let first = conn.get("weighted.test", "/").await;
    let child = first.header("x-backend").to_lowercase();
    let value = &hex(&Sha256::digest(child.as_bytes()))[..16];
    let set_cookie = first.header("set-cookie");
    let (name, rest) = set_cookie.split_once('=').expect("a cookie");
    assert_eq!(rest, format!("{value}; Path=/"));
    for _ in 0..4 {
        let mut req = support::web::get("weighted.test", "/", false);
        req.headers_mut()
            .insert("cookie", format!("{name}={value}").parse().expect("cookie"));
        assert_eq!(
            conn.send(req).await.header("x-backend"),
            first.header("x-backend")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sticky_client_of_a_server_gone_down_is_pinned_anew() {
    let (a, b) = tokio::join!(HttpBackend::start("A"), HttpBackend::start("B"));
    let dynamic = format!(
        r#"
http:
  routers:
    r:
      rule: "Host(`site.test`)"
      service: lb
  services:
    lb:
      loadBalancer:
        servers: [{{ url: "{}" }}, {{ url: "{}" }}]
        sticky: {{ cookie: {{ name: pin }} }}
        healthCheck: {HEALTH_CHECK}
"#,
        a.url(),
        b.url(),
    );
    let (router, port) = start("svc-sticky-down", &dynamic);
    let mut conn = Conn::h1(port).await;
    let pinned_to = |answer: &Answer| answer.header("set-cookie").to_owned();
    let to_a = pinned_to(&conn.get("site.test", "/").await);
    let to_b = pinned_to(&conn.get("site.test", "/").await);
    let with_cookie = |set_cookie: &str| {
        let mut req = support::web::get("site.test", "/", false);
        let pair = set_cookie.split(';').next().unwrap_or_default().to_owned();
        req.headers_mut()
            .insert("cookie", pair.parse().expect("cookie"));
        req
    };
    assert_eq!(conn.send(with_cookie(&to_b)).await.header("x-backend"), "B");
    b.set_health(503);
    logged(&router, "server is down", 1).await;
    let moved = conn.send(with_cookie(&to_b)).await;
    assert_eq!(moved.header("x-backend"), "A");
    assert_eq!(moved.header("set-cookie"), to_a, "pinned anew to A");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_health_check_takes_a_server_out_of_rotation_and_back() {
    let (a, b) = tokio::join!(HttpBackend::start("A"), HttpBackend::start("B"));
    let dynamic = format!(
        r#"
http:
  services:
    lb:
      loadBalancer:
        servers: [{{ url: "{}" }}, {{ url: "{}" }}]
        healthCheck: {HEALTH_CHECK}
  routers:
    r:
      rule: "Host(`site.test`)"
      service: lb
"#,
        a.url(),
        b.url(),
    );
    let (router, port) = start("svc-active", &dynamic);
    let mut conn = Conn::h1(port).await;
    assert_eq!(sequence(&mut conn, "site.test", 4).await, "ABAB");
    eventually("probes reach B", || async { b.seen().len() >= 2 }).await;

    b.set_health(503);
    logged(&router, "server is down", 1).await;
    let served = b.traffic().len();
    assert_eq!(sequence(&mut conn, "site.test", 6).await, "AAAAAA");
    assert_eq!(b.traffic().len(), served, "B got traffic while down");

    // A reload that leaves the service as it was keeps its health: a new state would start
    // with every server up until its first probe.
    let applied = router.count_log("dynamic configuration applied");
    router.rewrite_dynamic(&format!(
        "{dynamic}    other:\n      rule: \"Host(`other.test`)\"\n      service: lb\n"
    ));
    logged(&router, "dynamic configuration applied", applied + 1).await;
    assert_eq!(conn.get("other.test", "/").await.header("x-backend"), "A");
    assert_eq!(sequence(&mut conn, "site.test", 4).await, "AAAA");

    b.set_health(200);
    logged(&router, "server is up", 1).await;
    let back = sequence(&mut conn, "site.test", 4).await;
    assert_eq!(back.matches('B').count(), 2, "{back}");
    let log = router.log();
    assert!(
        log.lines()
            .any(|l| l.contains("server is down") && l.contains(&b.url())),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passive_health_check_rests_a_failing_server_for_the_failure_window() {
    let (a, b) = tokio::join!(HttpBackend::start("A"), HttpBackend::start("B"));
    b.force_status(Some(500));
    let dynamic = format!(
        r#"
http:
  routers:
    r:
      rule: "Host(`site.test`)"
      service: lb
  services:
    lb:
      loadBalancer:
        servers: [{{ url: "{}" }}, {{ url: "{}" }}]
        passiveHealthCheck: {{ failureWindow: 1s, maxFailedAttempts: 1 }}
"#,
        a.url(),
        b.url(),
    );
    let (router, port) = start("svc-passive", &dynamic);
    let mut conn = Conn::h1(port).await;
    let statuses = |answers: &[Answer]| {
        answers
            .iter()
            .map(|a| a.status.as_u16().to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut answers = Vec::new();
    for _ in 0..2 {
        answers.push(conn.get("site.test", "/").await);
    }
    // The failure is the client's answer: passive checks judge, they do not retry.
    assert_eq!(statuses(&answers), "200,500");
    logged(&router, "server is down", 1).await;
    let rested = Instant::now();
    assert_eq!(sequence(&mut conn, "site.test", 6).await, "AAAAAA");
    assert_eq!(b.traffic().len(), 1);

    logged(&router, "server is up", 1).await;
    assert!(
        rested.elapsed() > Duration::from_millis(500),
        "back up after {:?}, before its failure window",
        rested.elapsed()
    );
    let mut answers = Vec::new();
    for _ in 0..2 {
        answers.push(conn.get("site.test", "/").await);
    }
    assert!(statuses(&answers).contains("500"), "{}", statuses(&answers));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirroring_copies_one_request_in_ten_with_its_body() {
    let (main, mirror) = tokio::join!(HttpBackend::start("main"), HttpBackend::start("mirror"));
    let dynamic = format!(
        r#"
http:
  routers:
    r:
      rule: "Host(`site.test`)"
      service: mirrored
    small:
      rule: "Host(`small.test`)"
      service: small-only
  services:
    main: {}
    shadow: {}
    mirrored:
      mirroring:
        service: main
        mirrors: [{{ name: shadow, percent: 10 }}]
    small-only:
      mirroring:
        service: main
        maxBodySize: 16
        mirrors: [{{ name: shadow, percent: 100 }}]
"#,
        lb(&[&main.url()]),
        lb(&[&mirror.url()]),
    );
    let (_router, port) = start("svc-mirror", &dynamic);
    let mut conn = Conn::h1(port).await;
    for i in 1..=10 {
        let answer = conn
            .send(post("site.test", "/orders", &format!("order {i}")))
            .await;
        assert_eq!(answer.body, "main /orders");
    }
    assert_eq!(main.seen().len(), 10);
    eventually("the mirror gets its copy", || async {
        !mirror.seen().is_empty()
    })
    .await;
    // Let a wrong second copy arrive, if there were one.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(mirror.seen(), ["POST /orders order 1"]);

    // A body over maxBodySize goes to the main service only.
    let big = "x".repeat(100);
    assert_eq!(
        conn.send(post("small.test", "/big", &big)).await.body,
        "main /big"
    );
    assert_eq!(
        conn.send(post("small.test", "/small", "tiny")).await.body,
        "main /small"
    );
    eventually("the small body is mirrored", || async {
        mirror.seen().len() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(mirror.seen()[1..], ["POST /small tiny"]);
    assert!(main.seen().contains(&format!("POST /big {big}")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_serves_the_fallback_while_main_is_down() {
    let (main, fallback) = tokio::join!(HttpBackend::start("main"), HttpBackend::start("fallback"));
    let dynamic = format!(
        r#"
http:
  routers:
    r:
      rule: "Host(`site.test`)"
      service: failover
  services:
    main:
      loadBalancer:
        servers: [{{ url: "{}" }}]
        healthCheck: {HEALTH_CHECK}
    fallback: {}
    failover:
      failover: {{ service: main, fallback: fallback }}
"#,
        main.url(),
        lb(&[&fallback.url()]),
    );
    let (router, port) = start("svc-failover", &dynamic);
    let mut conn = Conn::h1(port).await;
    assert_eq!(sequence(&mut conn, "site.test", 2).await, "mainmain");
    main.set_health(503);
    logged(&router, "server is down", 1).await;
    assert_eq!(
        sequence(&mut conn, "site.test", 2).await,
        "fallbackfallback"
    );
    main.set_health(200);
    logged(&router, "server is up", 1).await;
    assert_eq!(sequence(&mut conn, "site.test", 2).await, "mainmain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_replays_a_listed_error_status_to_the_fallback() {
    let (main, fallback) = tokio::join!(HttpBackend::start("main"), HttpBackend::start("fallback"));
    let dynamic = format!(
        r#"
http:
  routers:
    r:
      rule: "Host(`site.test`)"
      service: failover
    bounded:
      rule: "Host(`bounded.test`)"
      service: bounded
  services:
    main: {}
    fallback: {}
    failover:
      failover:
        service: main
        fallback: fallback
        errors: {{ status: ["500-504"] }}
    bounded:
      failover:
        service: main
        fallback: fallback
        errors: {{ status: ["500-504"], maxRequestBodyBytes: 8 }}
"#,
        lb(&[&main.url()]),
        lb(&[&fallback.url()]),
    );
    let (_router, port) = start("svc-failover-errors", &dynamic);
    let mut conn = Conn::h1(port).await;
    main.force_status(Some(503));
    let answer = conn.send(post("site.test", "/echo", "the payload")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.body, "the payload",
        "the fallback echoes the same body"
    );
    assert_eq!(main.seen(), ["POST /echo the payload"]);
    assert_eq!(fallback.seen(), ["POST /echo"]);
    // A status outside the ranges is the client's answer.
    main.force_status(Some(404));
    let answer = conn.get("site.test", "/x").await;
    assert_eq!(
        (answer.status, answer.header("x-backend")),
        (StatusCode::NOT_FOUND, "main")
    );
    assert_eq!(fallback.seen().len(), 1);
    // The body is kept for a replay only up to maxRequestBodyBytes.
    let answer = conn
        .send(post("bounded.test", "/echo", "more than eight"))
        .await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(main.seen().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn highest_random_weight_keeps_each_client_ip_on_one_service() {
    let (a, b) = tokio::join!(HttpBackend::start("A"), HttpBackend::start("B"));
    let dynamic = format!(
        r#"
http:
  routers:
    r:
      rule: "Host(`site.test`)"
      service: hrw
    servers:
      rule: "Host(`servers.test`)"
      service: servers
  services:
    a: {}
    b: {}
    hrw:
      highestRandomWeight:
        services: [{{ name: a, weight: 1 }}, {{ name: b, weight: 1 }}]
    servers:
      loadBalancer:
        strategy: hrw
        servers: [{{ url: "{}" }}, {{ url: "{}" }}]
"#,
        lb(&[&a.url()]),
        lb(&[&b.url()]),
        a.url(),
        b.url(),
    );
    let (_router, port) = start("svc-hrw", &dynamic);
    // A service of services hashes the children's names as written; a load balancer's `hrw`
    // strategy hashes the server URLs.
    let (url_a, url_b) = (a.url(), b.url());
    for (host, name_a, name_b) in [
        ("site.test", "a", "b"),
        ("servers.test", url_a.as_str(), url_b.as_str()),
    ] {
        let mut chosen = String::new();
        for last in 1..=8u8 {
            let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, last));
            let mut seen = String::new();
            // New connections each time: the choice follows the IP, not the connection.
            for _ in 0..3 {
                let mut conn = Conn::h1_from(ip, port).await;
                seen.push_str(conn.get(host, "/").await.header("x-backend"));
            }
            let ip = ip.to_string();
            let expected = if hrw_score(&ip, name_a) >= hrw_score(&ip, name_b) {
                "A"
            } else {
                "B"
            };
            assert_eq!(seen, expected.repeat(3), "{host}: client {ip}");
            chosen.push_str(expected);
        }
        assert!(
            chosen.contains('A') && chosen.contains('B'),
            "{host}: 8 client IPs all on one side: {chosen}"
        );
    }
}

/// Traefik's rendezvous score of `name` (weight 1) for `client_ip`: 1 / -ln(h / 2^64), where
/// h is FNV-1a 64 of the IP followed by the name.
fn hrw_score(client_ip: &str, name: &str) -> f64 {
    let hash = format!("{client_ip}{name}")
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    1.0 / -(hash as f64 / 2f64.powi(64)).ln()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_failures_answer_502_504_and_503() {
    let cert = TestCert::new(&["slow.internal"]);
    let (slow, slow_tls, sick) = tokio::join!(
        HttpBackend::start("slow"),
        HttpBackend::tls("slow-tls", &cert, None),
        HttpBackend::start("sick")
    );
    sick.set_health(503);
    let nobody = free_port();
    // HTTP/1.1, h2c and HTTPS (HTTP/2 by ALPN) servers: refused, and too slow to answer.
    let protocols = [
        ("http", slow.url()),
        ("h2c", format!("h2c://{}", slow.addr)),
        ("https", slow_tls.url()),
    ];
    let mut routers = String::new();
    let mut services = String::new();
    for (protocol, url) in &protocols {
        let scheme = url.split("://").next().unwrap_or_default();
        for (kind, url) in [
            ("refused", format!("{scheme}://127.0.0.1:{nobody}")),
            ("slow", url.clone()),
        ] {
            routers.push_str(&format!(
                "    {kind}-{protocol}:\n      rule: \"Host(`{kind}.{protocol}.test`)\"\n      service: {kind}-{protocol}\n"
            ));
            services.push_str(&format!(
                "    {kind}-{protocol}:\n      loadBalancer:\n        servers: [{{ url: \"{url}\" }}]\n        serversTransport: impatient\n"
            ));
        }
    }
    let dynamic = format!(
        r#"
http:
  routers:
{routers}    down:
      rule: "Host(`down.test`)"
      service: down
  services:
{services}    down:
      loadBalancer:
        servers: [{{ url: "{}" }}]
        healthCheck: {HEALTH_CHECK}
  serversTransports:
    impatient:
      insecureSkipVerify: true
      forwardingTimeouts: {{ responseHeaderTimeout: 300ms }}
"#,
        sick.url(),
    );
    let (router, port) = start("svc-errors", &dynamic);
    let mut conn = Conn::h1(port).await;
    for (protocol, _) in &protocols {
        let answer = conn.get(&format!("refused.{protocol}.test"), "/").await;
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (StatusCode::BAD_GATEWAY, "Bad Gateway"),
            "{protocol}"
        );

        let asked = Instant::now();
        let answer = conn
            .get(&format!("slow.{protocol}.test"), "/slow/2000")
            .await;
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (StatusCode::GATEWAY_TIMEOUT, "Gateway Timeout"),
            "{protocol}"
        );
        assert!(
            asked.elapsed() < Duration::from_millis(1500),
            "{protocol}: {:?}",
            asked.elapsed()
        );
    }

    logged(&router, "server is down", 1).await;
    let answer = conn.get("down.test", "/").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(sick.traffic().len(), 0);
}

/// A serversTransport named `name` with `body` (YAML lines at its indentation).
fn transport(name: &str, body: &[String]) -> String {
    let mut out = format!("    {name}:\n");
    for line in body {
        out.push_str(&format!("      {line}\n"));
    }
    out
}

fn write_pem(dir: &Path, file: &str, pem: &str) -> String {
    let path = dir.join(file);
    std::fs::write(&path, pem).expect("write pem");
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_backends_are_verified_by_root_cas_and_server_name_or_skipped() {
    let ca = TestCa::new("Backend CA");
    let other_ca = TestCa::new("Another CA");
    let cert = ca.issue(&["backend.internal"]);
    let by_ip_cert = ca.issue(&["127.0.0.1"]);
    let (backend, by_ip) = tokio::join!(
        HttpBackend::tls("secure", &cert, None),
        HttpBackend::tls("by-ip", &by_ip_cert, None)
    );
    let dir = temp_dir("svc-https-files");
    let ca_file = write_pem(&dir, "ca.crt", &ca.cert.cert_pem);
    let other_file = write_pem(&dir, "other.crt", &other_ca.cert.cert_pem);
    let mut transports = String::new();
    for (name, body) in [
        (
            "trusted",
            vec![
                format!("rootCAs: [\"{ca_file}\"]"),
                "serverName: backend.internal".to_owned(),
            ],
        ),
        // The URL's host is 127.0.0.1, which the certificate does not name.
        ("no-name", vec![format!("rootCAs: [\"{ca_file}\"]")]),
        (
            "wrong-ca",
            vec![
                format!("rootCAs: [\"{other_file}\"]"),
                "serverName: backend.internal".to_owned(),
            ],
        ),
        ("skip", vec!["insecureSkipVerify: true".to_owned()]),
    ] {
        transports.push_str(&transport(name, &body));
    }
    let mut routers = String::from(
        "    checked:\n      rule: \"Host(`checked.test`)\"\n      service: checked\n    static:\n      rule: \"Host(`static.test`)\"\n      service: static\n",
    );
    // Probes go through the service's transport, with its CAs and server name.
    let mut services = format!(
        "    checked:\n      loadBalancer:\n        servers: [{{ url: \"{}\" }}]\n        serversTransport: trusted\n        healthCheck: {HEALTH_CHECK}\n",
        backend.url()
    );
    // A service without serversTransport uses the static configuration's.
    services.push_str(&format!(
        "    static:\n      loadBalancer:\n        servers: [{{ url: \"{}\" }}]\n",
        by_ip.url()
    ));
    for name in ["trusted", "no-name", "wrong-ca", "skip"] {
        routers.push_str(&format!(
            "    {name}:\n      rule: \"Host(`{name}.test`)\"\n      service: {name}\n"
        ));
        services.push_str(&format!(
            "    {name}:\n      loadBalancer:\n        servers: [{{ url: \"{}\" }}]\n        serversTransport: {name}\n",
            backend.url()
        ));
    }
    let dynamic = format!(
        "http:\n  routers:\n{routers}  services:\n{services}  serversTransports:\n{transports}"
    );
    let dir = temp_dir("svc-https");
    let port = free_port();
    let static_yaml = static_config(
        &dir,
        &[("web", port)],
        &format!("serversTransport:\n  rootCAs: [\"{ca_file}\"]\n"),
    );
    let router = Router::start(&dir, &static_yaml, &dynamic, &[port]);
    let mut conn = Conn::h1(port).await;
    let answer = conn.get("trusted.test", "/").await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::OK, "secure /")
    );
    // An https server is spoken to in HTTP/2 when ALPN allows it.
    assert_eq!(answer.header("x-seen-version"), "HTTP/2.0");
    for refused in ["no-name", "wrong-ca"] {
        let answer = conn.get(&format!("{refused}.test"), "/").await;
        assert_eq!(answer.status, StatusCode::BAD_GATEWAY, "{refused}");
    }
    let answer = conn.get("skip.test", "/").await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::OK, "secure /")
    );
    assert_eq!(backend.traffic().len(), 2);
    let answer = conn.get("static.test", "/").await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::OK, "by-ip /")
    );

    eventually("two probes pass", || async {
        backend.seen().len() - backend.traffic().len() >= 2
    })
    .await;
    assert_eq!(router.count_log("server is down"), 0, "{}", router.log());
    assert_eq!(conn.get("checked.test", "/").await.status, StatusCode::OK);
    backend.set_health(503);
    logged(&router, "server is down", 1).await;
    assert_eq!(
        conn.get("checked.test", "/").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mtls_backend_gets_the_transports_client_certificate() {
    let ca = TestCa::new("Backend CA");
    let clients = TestCa::new("Client CA");
    let backend = HttpBackend::tls(
        "mtls",
        &ca.issue(&["backend.internal"]),
        Some(&clients.cert),
    )
    .await;
    let client_cert = clients.issue(&["sallyport.client"]);
    let dir = temp_dir("svc-mtls-files");
    let ca_file = write_pem(&dir, "ca.crt", &ca.cert.cert_pem);
    let (crt, key) = client_cert.write(&dir, "client");
    let stranger = TestCa::new("Stranger CA").issue(&["stranger.client"]);
    let (stranger_crt, stranger_key) = stranger.write(&dir, "stranger");
    let base = [
        format!("rootCAs: [\"{ca_file}\"]"),
        "serverName: backend.internal".to_owned(),
    ];
    let with_cert = |crt: &Path, key: &Path| {
        let mut body = base.to_vec();
        body.push(format!(
            "certificates: [{{ certFile: \"{}\", keyFile: \"{}\" }}]",
            crt.display(),
            key.display()
        ));
        body
    };
    let transports = [
        transport("identified", &with_cert(&crt, &key)),
        transport("stranger", &with_cert(&stranger_crt, &stranger_key)),
        transport("anonymous", &base),
    ]
    .concat();
    let mut routers = String::new();
    let mut services = String::new();
    for name in ["identified", "stranger", "anonymous"] {
        routers.push_str(&format!(
            "    {name}:\n      rule: \"Host(`{name}.test`)\"\n      service: {name}\n"
        ));
        services.push_str(&format!(
            "    {name}:\n      loadBalancer:\n        servers: [{{ url: \"{}\" }}]\n        serversTransport: {name}\n",
            backend.url()
        ));
    }
    let dynamic = format!(
        "http:\n  routers:\n{routers}  services:\n{services}  serversTransports:\n{transports}"
    );
    let (_router, port) = start("svc-mtls", &dynamic);
    let mut conn = Conn::h1(port).await;
    let answer = conn.get("identified.test", "/").await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::OK, "mtls /")
    );
    assert_eq!(answer.header("x-seen-client-cert"), "present");
    for refused in ["stranger", "anonymous"] {
        let answer = conn.get(&format!("{refused}.test"), "/").await;
        assert_eq!(answer.status, StatusCode::BAD_GATEWAY, "{refused}");
    }
    assert_eq!(backend.traffic().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_are_tunneled_over_plain_and_tls_both_sides() {
    let backend_ca = TestCa::new("Backend CA");
    let backend_cert = backend_ca.issue(&["ws.internal"]);
    let (plain, secure) = tokio::join!(
        websocket_echo("plain-backend", None),
        websocket_echo("tls-backend", Some(&backend_cert))
    );
    let front = TestCert::new(&["ws.test", "wss.test"]);
    let dir = temp_dir("svc-ws");
    let (front_crt, front_key) = front.write(&dir, "front");
    let ca_file = write_pem(&dir, "backend-ca.crt", &backend_ca.cert.cert_pem);
    let (web, websecure) = (free_port(), free_port());
    let dynamic = format!(
        r#"
http:
  routers:
    ws:
      rule: "Host(`ws.test`) && Path(`/chat`)"
      entryPoints: [web]
      service: ws
    wss:
      rule: "Host(`wss.test`) && Path(`/chat`)"
      entryPoints: [web]
      service: wss
    ws-secure:
      rule: "Host(`ws.test`) && Path(`/chat`)"
      entryPoints: [websecure]
      service: ws
      tls: {{}}
    wss-secure:
      rule: "Host(`wss.test`) && Path(`/chat`)"
      entryPoints: [websecure]
      service: wss
      tls: {{}}
  services:
    ws: {}
    wss:
      loadBalancer:
        servers: [{{ url: "https://{}" }}]
        serversTransport: backend-tls
  serversTransports:
    backend-tls:
      rootCAs: ["{ca_file}"]
      serverName: ws.internal
tls:
  certificates:
    - {{ certFile: "{}", keyFile: "{}" }}
"#,
        lb(&[&format!("http://{}", plain.addr)]),
        secure.addr,
        front_crt.display(),
        front_key.display(),
    );
    let _router = Router::start(
        &dir,
        &static_config(&dir, &[("web", web), ("websecure", websecure)], ""),
        &dynamic,
        &[web, websecure],
    );
    for (host, backend) in [("ws.test", "plain-backend"), ("wss.test", "tls-backend")] {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", web))
            .await
            .expect("connect");
        let url = format!("ws://{host}/chat");
        let (mut ws, response) =
            tokio::time::timeout(WAIT, tokio_tungstenite::client_async(url, tcp))
                .await
                .expect("handshake in time")
                .expect("handshake");
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        websocket_roundtrips(&mut ws, backend).await;

        let tls = tls_connect(
            ([127, 0, 0, 1], websecure).into(),
            host,
            &[&front],
            &["http/1.1"],
        )
        .await
        .expect("TLS to the router");
        let url = format!("wss://{host}/chat");
        let (mut ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(url, tls))
            .await
            .expect("handshake in time")
            .expect("handshake");
        websocket_roundtrips(&mut ws, backend).await;
    }
    assert_eq!((plain.accepted(), secure.accepted()), (2, 2));
}

/// Text, binary and a large message each come back from `backend`; then a clean close.
async fn websocket_roundtrips<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>, backend: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let big = "x".repeat(200_000);
    let mut binary = format!("{backend}: ").into_bytes();
    binary.extend_from_slice(&[0, 1, 255]);
    for (sent, expected) in [
        (
            Message::text("hello"),
            Message::text(format!("{backend}: hello")),
        ),
        (Message::binary(vec![0u8, 1, 255]), Message::binary(binary)),
        // A large message crosses the tunnel in many segments.
        (
            Message::text(big.clone()),
            Message::text(format!("{backend}: {big}")),
        ),
    ] {
        ws.send(sent).await.expect("send");
        let reply = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("reply in time")
            .expect("a reply")
            .expect("a frame");
        assert_eq!(reply, expected);
    }
    ws.close(None).await.expect("close");
    // The backend's close frame comes back through the tunnel too.
    let end = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("close in time");
    assert!(matches!(end, Some(Ok(Message::Close(_))) | None), "{end:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unary_and_streaming_calls_with_trailers_through_h2c_and_tls() {
    let backend_ca = TestCa::new("Backend CA");
    let backend_cert = backend_ca.issue(&["grpc.internal"]);
    let (h2c, tls) = tokio::join!(
        GrpcBackend::h2c("h2c-backend"),
        GrpcBackend::tls("tls-backend", &backend_cert)
    );
    let front = TestCert::new(&["h2c.grpc.test", "tls.grpc.test"]);
    let dir = temp_dir("svc-grpc");
    let (front_crt, front_key) = front.write(&dir, "front");
    let ca_file = write_pem(&dir, "backend-ca.crt", &backend_ca.cert.cert_pem);
    let (web, secure) = (free_port(), free_port());
    let dynamic = format!(
        r#"
http:
  routers:
    to-h2c:
      rule: "Host(`h2c.grpc.test`)"
      entryPoints: [web]
      service: h2c
    to-tls:
      rule: "Host(`tls.grpc.test`)"
      entryPoints: [web]
      service: tls
    to-h2c-secure:
      rule: "Host(`h2c.grpc.test`)"
      entryPoints: [websecure]
      service: h2c
      tls: {{}}
    to-tls-secure:
      rule: "Host(`tls.grpc.test`)"
      entryPoints: [websecure]
      service: tls
      tls: {{}}
  services:
    h2c: {}
    tls:
      loadBalancer:
        servers: [{{ url: "https://{}" }}]
        serversTransport: grpc-tls
  serversTransports:
    grpc-tls:
      rootCAs: ["{ca_file}"]
      serverName: grpc.internal
tls:
  certificates:
    - {{ certFile: "{}", keyFile: "{}" }}
"#,
        lb(&[&format!("h2c://{}", h2c.addr)]),
        tls.addr,
        front_crt.display(),
        front_key.display(),
    );
    let _router = Router::start(
        &dir,
        &static_config(&dir, &[("web", web), ("websecure", secure)], ""),
        &dynamic,
        &[web, secure],
    );
    for (backend, host) in [
        ("h2c-backend", "h2c.grpc.test"),
        ("tls-backend", "tls.grpc.test"),
    ] {
        for secure_client in [false, true] {
            let mut client = if secure_client {
                GrpcClient::tls(secure, host, &front).await
            } else {
                GrpcClient::h2c(web, host).await
            };
            let case = format!("{host} over {}", if secure_client { "TLS" } else { "h2c" });

            let hello = client.say("alice").await.expect(&case);
            assert_eq!(hello.text, format!("{backend} greets alice"), "{case}");

            let status = client.say(FAIL).await.expect_err(&case);
            assert_eq!(status.code(), Code::NotFound, "{case}: {status:?}");
            assert_eq!(
                status.message(),
                format!("{backend} has no greeting for fail")
            );

            let (greetings, end) = client.count("bob", 3).await;
            assert_eq!(
                end.map_err(|s| (s.code(), s.message().to_owned())),
                Ok(()),
                "{case}"
            );
            let counted: Vec<u32> = greetings.iter().map(|g| g.count).collect();
            assert_eq!(counted, [1, 2, 3], "{case}");
            assert_eq!(greetings[2].text, format!("{backend} counts 3 for bob"));

            // Full duplex: each message goes out only after the answer to the one before.
            let (answers, end) = client.chat(&["one", "two", "three"]).await;
            assert_eq!(
                end.map_err(|s| (s.code(), s.message().to_owned())),
                Ok(()),
                "{case}"
            );
            let expected: Vec<String> = ["one", "two", "three"]
                .iter()
                .map(|t| format!("{backend} answers {t}"))
                .collect();
            assert_eq!(answers, expected, "{case}");

            // The error comes after the messages, in the trailers.
            let (greetings, end) = client.count(FAIL, 2).await;
            assert_eq!(greetings.len(), 2, "{case}");
            let status = end.expect_err(&case);
            assert_eq!(status.code(), Code::ResourceExhausted, "{case}: {status:?}");
            assert_eq!(status.message(), format!("{backend} counted enough"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_clients_reach_http1_backends_through_the_same_services() {
    // A service does not care how the client came: h2c in, HTTP/1.1 out, same EDF order.
    let (a, b) = tokio::join!(HttpBackend::start("A"), HttpBackend::start("B"));
    let dynamic = format!(
        r#"
http:
  routers:
    r:
      rule: "Host(`site.test`)"
      service: lb
  services:
    lb:
      loadBalancer:
        servers: [{{ url: "{}", weight: 3 }}, {{ url: "{}", weight: 1 }}]
"#,
        a.url(),
        b.url()
    );
    let (_router, port) = start("svc-h2c", &dynamic);
    let mut conn = Conn::h2c(port).await;
    let answer = conn.get("site.test", "/").await;
    assert_eq!(answer.version, Version::HTTP_2);
    assert_eq!(answer.header("x-seen-version"), "HTTP/1.1");
    assert_eq!(sequence(&mut conn, "site.test", 7).await, "ABAAAAB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_checks_follow_the_standard_health_service() {
    let backend_ca = TestCa::new("Backend CA");
    let backend_cert = backend_ca.issue(&["grpc.internal"]);
    let (h2c, tls) = tokio::join!(
        GrpcBackend::h2c("h2c-backend"),
        GrpcBackend::tls("tls-backend", &backend_cert)
    );
    let dir = temp_dir("svc-grpc-health-files");
    let ca_file = write_pem(&dir, "backend-ca.crt", &backend_ca.cert.cert_pem);
    let dynamic = format!(
        r#"
http:
  routers:
    r:
      rule: "Host(`grpc.test`)"
      service: grpc
  services:
    grpc:
      loadBalancer:
        servers: [{{ url: "h2c://{}" }}, {{ url: "https://{}" }}]
        serversTransport: grpc-tls
        healthCheck: {{ mode: grpc, interval: 200ms, timeout: 150ms }}
  serversTransports:
    grpc-tls:
      rootCAs: ["{ca_file}"]
      serverName: grpc.internal
"#,
        h2c.addr, tls.addr,
    );
    let (router, port) = start("svc-grpc-health", &dynamic);
    eventually("both backends are probed", || async {
        h2c.health_checks() >= 2 && tls.health_checks() >= 2
    })
    .await;
    assert_eq!(router.count_log("server is down"), 0, "{}", router.log());
    let mut client = GrpcClient::h2c(port, "grpc.test").await;
    let mut greeters = Vec::new();
    for _ in 0..4 {
        greeters.push(client.say("carol").await.expect("served").text);
    }
    assert!(
        greeters.iter().any(|g| g.starts_with("tls-backend")),
        "{greeters:?}"
    );
    assert!(
        greeters.iter().any(|g| g.starts_with("h2c-backend")),
        "{greeters:?}"
    );

    tls.set_serving(false);
    logged(&router, "server is down", 1).await;
    for _ in 0..4 {
        let greeting = client.say("dave").await.expect("served");
        assert_eq!(greeting.text, "h2c-backend greets dave");
    }
    h2c.set_serving(false);
    logged(&router, "server is down", 2).await;
    // No server up: Traefik's plain-text 503 (tonic reports a non-gRPC answer as INTERNAL,
    // with the HTTP status in its message).
    let status = client.say("erin").await.expect_err("no server");
    assert!(
        status.message().contains("503 Service Unavailable"),
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_sticky_cookies_pin_both_the_child_service_and_its_server() {
    let (a1, a2, b1) = tokio::join!(
        HttpBackend::start("a1"),
        HttpBackend::start("a2"),
        HttpBackend::start("b1")
    );
    let dynamic = format!(
        r#"
http:
  routers:
    r:
      rule: "Host(`site.test`)"
      service: split
  services:
    split:
      weighted:
        services: [{{ name: a, weight: 1 }}, {{ name: b, weight: 1 }}]
        sticky: {{ cookie: {{ name: outer }} }}
    a:
      loadBalancer:
        servers: [{{ url: "{}" }}, {{ url: "{}" }}]
        sticky: {{ cookie: {{ name: inner }} }}
    b: {}
"#,
        a1.url(),
        a2.url(),
        lb(&[&b1.url()]),
    );
    let (_router, port) = start("svc-sticky-nested", &dynamic);
    let mut conn = Conn::h1(port).await;
    // The first request lands on a child of `a` and gets one cookie per level.
    let first = conn.get("site.test", "/").await;
    assert!(first.header("x-backend").starts_with('a'), "{first:?}");
    let cookies: Vec<String> = first
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .map(str::to_owned)
        .collect();
    let names: Vec<&str> = cookies.iter().filter_map(|c| c.split('=').next()).collect();
    assert_eq!(names.len(), 2, "{cookies:?}");
    assert!(
        names.contains(&"outer") && names.contains(&"inner"),
        "{cookies:?}"
    );
    for _ in 0..6 {
        let mut req = support::web::get("site.test", "/", false);
        req.headers_mut()
            .insert("cookie", cookies.join("; ").parse().expect("cookie"));
        let answer = conn.send(req).await;
        assert_eq!(answer.header("x-backend"), first.header("x-backend"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_both_ways_between_every_client_and_server_protocol() {
    let cert = TestCert::new(&["big.internal"]);
    let (plain, secure) = tokio::join!(
        HttpBackend::start("plain"),
        HttpBackend::tls("secure", &cert, None)
    );
    let front = TestCert::new(&["http.test", "h2c.test", "https.test"]);
    let dir = temp_dir("svc-big");
    let (crt, key) = front.write(&dir, "front");
    let (web, websecure) = (free_port(), free_port());
    let dynamic = format!(
        r#"
http:
  routers:
    http:
      rule: "Host(`http.test`)"
      service: http
    h2c:
      rule: "Host(`h2c.test`)"
      service: h2c
    https:
      rule: "Host(`https.test`)"
      service: https
    http-tls:
      rule: "Host(`http.test`)"
      service: http
      tls: {{}}
    h2c-tls:
      rule: "Host(`h2c.test`)"
      service: h2c
      tls: {{}}
    https-tls:
      rule: "Host(`https.test`)"
      service: https
      tls: {{}}
  services:
    http: {}
    h2c: {}
    https:
      loadBalancer:
        servers: [{{ url: "{}" }}]
        serversTransport: skip
  serversTransports:
    skip:
      insecureSkipVerify: true
tls:
  certificates:
    - {{ certFile: "{}", keyFile: "{}" }}
"#,
        lb(&[&plain.url()]),
        lb(&[&format!("h2c://{}", plain.addr)]),
        secure.url(),
        crt.display(),
        key.display(),
    );
    let _router = Router::start(
        &dir,
        &static_config(&dir, &[("web", web), ("websecure", websecure)], ""),
        &dynamic,
        &[web, websecure],
    );
    // Larger than every HTTP/2 window and hyper buffer on the way.
    let body: String = (0..4 * 1024 * 1024)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    for host in ["http.test", "h2c.test", "https.test"] {
        let clients = [
            ("h1", Conn::h1(web).await),
            ("h2c", Conn::h2c(web).await),
            ("h2", Conn::tls(websecure, host, &front, &["h2"]).await),
            (
                "h1 over TLS",
                Conn::tls(websecure, host, &front, &["http/1.1"]).await,
            ),
        ];
        for (client, mut conn) in clients {
            let mut req = post(host, "/echo", &body);
            if conn.is_h2() {
                *req.uri_mut() = format!("https://{host}/echo").parse().expect("uri");
            }
            let answer = conn.send(req).await;
            assert_eq!(answer.status, StatusCode::OK, "{client} to {host}");
            assert!(
                answer.body == body,
                "{client} to {host}: {} bytes back",
                answer.body.len()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_to_servers_are_reused_unless_the_transport_says_not_to() {
    let (pooled, unpooled) =
        tokio::join!(HttpBackend::start("pooled"), HttpBackend::start("unpooled"));
    let dynamic = format!(
        r#"
http:
  routers:
    pooled:
      rule: "Host(`pooled.test`)"
      service: pooled
    unpooled:
      rule: "Host(`unpooled.test`)"
      service: unpooled
  services:
    pooled: {}
    unpooled:
      loadBalancer:
        servers: [{{ url: "{}" }}]
        serversTransport: no-reuse
        passHostHeader: false
  serversTransports:
    no-reuse:
      maxIdleConnsPerHost: -1
"#,
        lb(&[&pooled.url()]),
        unpooled.url(),
    );
    let (_router, port) = start("svc-pool", &dynamic);
    let mut conn = Conn::h1(port).await;
    for _ in 0..5 {
        let answer = conn.get("pooled.test", "/").await;
        assert_eq!(answer.header("x-seen-host"), "pooled.test");
        let answer = conn.get("unpooled.test", "/").await;
        // passHostHeader: false sends the server's own address.
        assert_eq!(answer.header("x-seen-host"), unpooled.addr.to_string());
    }
    assert_eq!(
        pooled.connections.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    assert_eq!(
        unpooled
            .connections
            .load(std::sync::atomic::Ordering::SeqCst),
        5
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_pass_through_weighted_mirroring_and_failover() {
    let (echo, shadow, spare) = tokio::join!(
        websocket_echo("ws-backend", None),
        HttpBackend::start("shadow"),
        HttpBackend::start("spare")
    );
    let dynamic = format!(
        r#"
http:
  routers:
    weighted:
      rule: "Host(`weighted.test`)"
      service: weighted
    mirrored:
      rule: "Host(`mirrored.test`)"
      service: mirrored
    failover:
      rule: "Host(`failover.test`)"
      service: failover
  services:
    ws: {}
    shadow: {}
    spare: {}
    weighted:
      weighted:
        services: [{{ name: ws, weight: 1 }}]
        sticky: {{ cookie: {{}} }}
    mirrored:
      mirroring:
        service: ws
        mirrors: [{{ name: shadow, percent: 100 }}]
    failover:
      failover:
        service: ws
        fallback: spare
        errors: {{ status: ["500-504"] }}
"#,
        lb(&[&format!("http://{}", echo.addr)]),
        lb(&[&shadow.url()]),
        lb(&[&spare.url()]),
    );
    let (_router, port) = start("svc-ws-composed", &dynamic);
    for host in ["weighted.test", "mirrored.test", "failover.test"] {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let handshake = tokio_tungstenite::client_async(format!("ws://{host}/chat"), tcp);
        let (mut ws, response) = tokio::time::timeout(WAIT, handshake)
            .await
            .expect("handshake in time")
            .unwrap_or_else(|e| panic!("{host}: {e}"));
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS, "{host}");
        websocket_roundtrips(&mut ws, "ws-backend").await;
    }
    assert_eq!(echo.accepted(), 3);
    assert_eq!(spare.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_probes_use_the_configured_scheme_port_method_host_and_headers() {
    let cert = TestCert::new(&["health.internal"]);
    let (server, prober_target) = tokio::join!(
        HttpBackend::start("server"),
        HttpBackend::tls("health-endpoint", &cert, None)
    );
    let dynamic = format!(
        r#"
http:
  routers:
    r:
      rule: "Host(`site.test`)"
      service: lb
  services:
    lb:
      loadBalancer:
        servers: [{{ url: "{}" }}]
        serversTransport: skip
        healthCheck:
          scheme: https
          port: {}
          path: /health
          method: HEAD
          hostname: health.internal
          headers: {{ X-Probe: sallyport }}
          interval: 200ms
          timeout: 150ms
  serversTransports:
    skip:
      insecureSkipVerify: true
"#,
        server.url(),
        prober_target.addr.port(),
    );
    let (router, port) = start("svc-probe-options", &dynamic);
    eventually("a probe arrives", || async {
        !prober_target.probes().is_empty()
    })
    .await;
    let probe = &prober_target.probes()[0];
    assert_eq!(probe.method, ::http::Method::HEAD);
    assert_eq!(probe.uri.path(), "/health");
    let header = |name: &str| {
        probe
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let host = header("host").or_else(|| probe.uri.host().map(str::to_owned));
    assert_eq!(host.as_deref(), Some("health.internal"));
    assert_eq!(header("x-probe").as_deref(), Some("sallyport"));
    assert!(
        server.probes().is_empty(),
        "the server's own port is not probed"
    );

    let mut conn = Conn::h1(port).await;
    assert_eq!(
        conn.get("site.test", "/").await.header("x-backend"),
        "server"
    );
    prober_target.set_health(500);
    logged(&router, "server is down", 1).await;
    assert_eq!(
        conn.get("site.test", "/").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_propagates_up_through_failover_and_weighted_services() {
    let (main, fallback, other) = tokio::join!(
        HttpBackend::start("main"),
        HttpBackend::start("fallback"),
        HttpBackend::start("other")
    );
    let dynamic = format!(
        r#"
http:
  routers:
    r:
      rule: "Host(`site.test`)"
      service: top
  services:
    main:
      loadBalancer:
        servers: [{{ url: "{}" }}]
        healthCheck: {HEALTH_CHECK}
    fallback:
      loadBalancer:
        servers: [{{ url: "{}" }}]
        healthCheck: {HEALTH_CHECK}
    other:
      loadBalancer:
        servers: [{{ url: "{}" }}]
        healthCheck: {HEALTH_CHECK}
    pair:
      failover: {{ service: main, fallback: fallback, healthCheck: {{}} }}
    top:
      weighted:
        services: [{{ name: pair, weight: 1 }}, {{ name: other, weight: 1 }}]
        healthCheck: {{}}
"#,
        main.url(),
        fallback.url(),
        other.url(),
    );
    let (router, port) = start("svc-propagation", &dynamic);
    let mut conn = Conn::h1(port).await;
    assert_eq!(sequence(&mut conn, "site.test", 2).await, "mainother");
    main.set_health(503);
    logged(&router, "server is down", 1).await;
    assert_eq!(sequence(&mut conn, "site.test", 2).await, "fallbackother");
    fallback.set_health(503);
    logged(&router, "server is down", 2).await;
    // The failover is down as a whole: the weighted service skips it.
    assert_eq!(sequence(&mut conn, "site.test", 3).await, "otherotherother");
    other.set_health(503);
    logged(&router, "server is down", 3).await;
    assert_eq!(
        conn.get("site.test", "/").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    main.set_health(200);
    logged(&router, "server is up", 1).await;
    assert_eq!(sequence(&mut conn, "site.test", 2).await, "mainmain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_before_the_answer_is_logged_as_499() {
    let slow = HttpBackend::start("slow").await;
    let dynamic = format!(
        "http:\n  routers:\n    r:\n      rule: \"Host(`site.test`)\"\n      service: s\n  services:\n    s: {}\n",
        lb(&[&slow.url()])
    );
    let (router, port) = start("svc-499", &dynamic);
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stream
        .write_all(b"GET /slow/3000 HTTP/1.1\r\nHost: site.test\r\n\r\n")
        .await
        .expect("send");
    eventually("the request reaches the server", || async {
        slow.requests() == 1
    })
    .await;
    drop(stream);
    logged(&router, "499 the client closed the request", 1).await;
}
