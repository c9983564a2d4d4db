//! HTTP routing end to end: the real binary on loopback, real hyper clients (HTTP/1.1, h2c,
//! HTTP/2 and HTTP/1.1 over rustls) and real hyper backends.

mod support;

use std::time::Duration;

use ::http::{Request, StatusCode, Version};
use support::web::{Conn, HttpBackend, get};
use support::*;

/// TLS files of a certificate for `names`, written into `dir`, as the dynamic
/// configuration's `tls.certificates` entry.
fn tls_section(dir: &std::path::Path, cert: &TestCert, stem: &str) -> String {
    let (crt, key) = cert.write(dir, stem);
    format!(
        "tls:\n  certificates:\n    - certFile: \"{}\"\n      keyFile: \"{}\"\n",
        crt.display(),
        key.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_host_path_header_and_query_in_priority_order() {
    let (a, b, c, d) = tokio::join!(
        HttpBackend::start("a"),
        HttpBackend::start("b"),
        HttpBackend::start("c"),
        HttpBackend::start("d")
    );
    let dir = temp_dir("http-routing");
    let port = free_port();
    let dynamic = format!(
        r#"
http:
  routers:
    by-host:
      rule: "Host(`site.test`)"
      service: a
    by-path:
      rule: "Host(`site.test`) && PathPrefix(`/api`)"
      service: b
    by-header:
      rule: "Host(`site.test`) && PathPrefix(`/api`) && Header(`X-Canary`, `1`)"
      service: c
    by-query:
      rule: "Query(`debug`, `yes`)"
      service: d
      priority: 1000
    wildcard:
      rule: "Host(`*.site.test`)"
      service: b
  services:
    a: {{ loadBalancer: {{ servers: [{{ url: "{}" }}] }} }}
    b: {{ loadBalancer: {{ servers: [{{ url: "{}" }}] }} }}
    c: {{ loadBalancer: {{ servers: [{{ url: "{}" }}] }} }}
    d: {{ loadBalancer: {{ servers: [{{ url: "{}" }}] }} }}
"#,
        a.url(),
        b.url(),
        c.url(),
        d.url()
    );
    let _router = Router::start(
        &dir,
        &static_config(&dir, &[("web", port)], ""),
        &dynamic,
        &[port],
    );
    let mut conn = Conn::h1(port).await;
    assert_eq!(conn.get("site.test", "/").await.body, "a /");
    assert_eq!(conn.get("SITE.test:80", "/x").await.body, "a /x");
    assert_eq!(conn.get("site.test", "/api/v1").await.body, "b /api/v1");
    let mut canary = get("site.test", "/api/v1", false);
    canary
        .headers_mut()
        .insert("x-canary", "1".parse().unwrap());
    assert_eq!(conn.send(canary).await.body, "c /api/v1");
    // An explicit priority beats the longer rules.
    assert_eq!(
        conn.get("site.test", "/api?debug=yes").await.body,
        "d /api?debug=yes"
    );
    assert_eq!(conn.get("www.site.test", "/").await.body, "b /");
    // `*.site.test` is one label only.
    let deep = conn.get("a.b.site.test", "/").await;
    assert_eq!(deep.status, StatusCode::NOT_FOUND);
    assert_eq!(deep.body, "404 page not found\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_h2c_and_http2_over_tls_by_alpn_with_sni_routing() {
    let backend = HttpBackend::start("a").await;
    let dir = temp_dir("http-h2");
    let cert = TestCert::new(&["a.test", "b.test"]);
    let (web, secure) = (free_port(), free_port());
    let dynamic = format!(
        r#"
http:
  routers:
    plain:
      rule: "Host(`a.test`)"
      entryPoints: [web]
      service: s
    secure:
      rule: "Host(`a.test`) || Host(`b.test`)"
      entryPoints: [websecure]
      service: s
      tls: {{}}
  services:
    s: {{ loadBalancer: {{ servers: [{{ url: "{}" }}] }} }}
{}"#,
        backend.url(),
        tls_section(&dir, &cert, "ab")
    );
    let _router = Router::start(
        &dir,
        &static_config(&dir, &[("web", web), ("websecure", secure)], ""),
        &dynamic,
        &[web, secure],
    );

    let mut h2c = Conn::h2c(web).await;
    let answer = h2c.get("a.test", "/h2c").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.version, Version::HTTP_2);
    assert_eq!(answer.header("x-seen-proto"), "http");

    let mut h2 = Conn::tls(secure, "a.test", &cert, &["h2", "http/1.1"]).await;
    assert!(h2.is_h2(), "ALPN must choose h2");
    let answer = h2.get("a.test", "/tls").await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::OK, "a /tls")
    );
    assert_eq!(answer.header("x-seen-proto"), "https");
    // HTTP/1.1 backends get HTTP/1.1 whatever the client spoke.
    assert_eq!(answer.header("x-seen-version"), "HTTP/1.1");

    let mut h1 = Conn::tls(secure, "b.test", &cert, &["http/1.1"]).await;
    assert!(!h1.is_h2());
    assert_eq!(h1.get("b.test", "/").await.body, "a /");
    // A TLS router does not serve plaintext, nor a plain router TLS.
    assert_eq!(
        Conn::h1(secure).await.get("a.test", "/").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_with_other_tls_options_than_the_handshake_gets_421() {
    let backend = HttpBackend::start("a").await;
    let dir = temp_dir("http-421");
    let cert = TestCert::new(&["a.test", "strict.test"]);
    let port = free_port();
    let dynamic = format!(
        r#"
http:
  routers:
    relaxed:
      rule: "Host(`a.test`)"
      service: s
      tls: {{}}
    strict:
      rule: "Host(`strict.test`)"
      service: s
      tls: {{ options: modern }}
  services:
    s: {{ loadBalancer: {{ servers: [{{ url: "{}" }}] }} }}
{}
  options:
    modern:
      minVersion: VersionTLS13
"#,
        backend.url(),
        tls_section(&dir, &cert, "cert")
    );
    let _router = Router::start(
        &dir,
        &static_config(&dir, &[("websecure", port)], ""),
        &dynamic,
        &[port],
    );
    let mut conn = Conn::tls(port, "a.test", &cert, &["http/1.1"]).await;
    assert_eq!(conn.get("a.test", "/").await.status, StatusCode::OK);
    // Domain fronting: the handshake used `default`, the host wants `modern`.
    let fronted = conn.get("strict.test", "/").await;
    assert_eq!(fronted.status, StatusCode::MISDIRECTED_REQUEST);
    let mut strict = Conn::tls(port, "strict.test", &cert, &["http/1.1"]).await;
    assert_eq!(strict.get("strict.test", "/").await.status, StatusCode::OK);
    assert_eq!(
        strict.get("a.test", "/").await.status,
        StatusCode::MISDIRECTED_REQUEST
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entrypoint_redirection_sends_plain_http_to_https() {
    let dir = temp_dir("http-redirect");
    let (web, secure) = (free_port(), free_port());
    let static_yaml = format!(
        "entryPoints:\n  web:\n    address: \"127.0.0.1:{web}\"\n    http:\n      redirections:\n        entryPoint:\n          to: websecure\n  websecure:\n    address: \"127.0.0.1:{secure}\"\nproviders:\n  file:\n    filename: \"{}\"\n",
        dir.join("dynamic.yml").display()
    );
    let _router = Router::start(&dir, &static_yaml, "{}\n", &[web, secure]);
    let mut conn = Conn::h1(web).await;
    let answer = conn.get("example.test:8080", "/a/b?c=d").await;
    assert_eq!(answer.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        answer.header("location"),
        format!("https://example.test:{secure}/a/b?c=d")
    );
    let post = Request::post("/form")
        .header("host", "example.test")
        .body(Default::default())
        .unwrap();
    let answer = conn.send(post).await;
    assert_eq!(answer.status, StatusCode::PERMANENT_REDIRECT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_are_trusted_only_from_trusted_ips() {
    let backend = HttpBackend::start("a").await;
    let dir = temp_dir("http-xff");
    let (untrusted, trusted) = (free_port(), free_port());
    let static_yaml = format!(
        "entryPoints:\n  open:\n    address: \"127.0.0.1:{untrusted}\"\n  trusting:\n    address: \"127.0.0.1:{trusted}\"\n    forwardedHeaders:\n      trustedIPs: [\"127.0.0.1/32\"]\nproviders:\n  file:\n    filename: \"{}\"\n",
        dir.join("dynamic.yml").display()
    );
    let dynamic = format!(
        "http:\n  routers:\n    r:\n      rule: \"PathPrefix(`/`)\"\n      service: s\n  services:\n    s: {{ loadBalancer: {{ servers: [{{ url: \"{}\" }}] }} }}\n",
        backend.url()
    );
    let _router = Router::start(&dir, &static_yaml, &dynamic, &[untrusted, trusted]);
    let spoofed = || {
        let mut req = get("site.test", "/", false);
        let h = req.headers_mut();
        h.insert("x-forwarded-for", "203.0.113.9".parse().unwrap());
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        h.insert("x-forwarded-host", "evil.test".parse().unwrap());
        h.insert("x-real-ip", "203.0.113.9".parse().unwrap());
        req
    };
    let answer = Conn::h1(untrusted).await.send(spoofed()).await;
    assert_eq!(answer.header("x-seen-xff"), "127.0.0.1");
    assert_eq!(answer.header("x-seen-proto"), "http");
    assert_eq!(answer.header("x-seen-xfhost"), "site.test");
    assert_eq!(answer.header("x-seen-real-ip"), "127.0.0.1");
    // As Traefik: the Host header's port, else the scheme's.
    assert_eq!(answer.header("x-seen-port"), "80");
    assert_eq!(answer.header("x-seen-host"), "site.test");

    let answer = Conn::h1(trusted).await.send(spoofed()).await;
    assert_eq!(answer.header("x-seen-xff"), "203.0.113.9, 127.0.0.1");
    assert_eq!(answer.header("x-seen-proto"), "https");
    assert_eq!(answer.header("x-seen-xfhost"), "evil.test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_is_seen_by_the_next_request_on_a_keep_alive_connection() {
    let (a, b) = tokio::join!(HttpBackend::start("a"), HttpBackend::start("b"));
    let dir = temp_dir("http-reload");
    let port = free_port();
    let dynamic = |url: &str| {
        format!(
            "http:\n  routers:\n    r:\n      rule: \"Host(`site.test`)\"\n      service: s\n  services:\n    s: {{ loadBalancer: {{ servers: [{{ url: \"{url}\" }}] }} }}\n"
        )
    };
    let router = Router::start(
        &dir,
        &static_config(&dir, &[("web", port)], ""),
        &dynamic(&a.url()),
        &[port],
    );
    let mut h1 = Conn::h1(port).await;
    let mut h2 = Conn::h2c(port).await;
    assert_eq!(h1.get("site.test", "/").await.body, "a /");
    assert_eq!(h2.get("site.test", "/").await.body, "a /");
    let applied = router.count_log("dynamic configuration applied");
    router.rewrite_dynamic(&dynamic(&b.url()));
    let start = std::time::Instant::now();
    while router.count_log("dynamic configuration applied") == applied {
        assert!(start.elapsed() < Duration::from_secs(10), "no reload");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(h1.get("site.test", "/").await.body, "b /");
    assert_eq!(h2.get("site.test", "/").await.body, "b /");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_tcp_routers_share_an_entrypoint_in_traefiks_order() {
    let http_backend = HttpBackend::start("http").await;
    let cert = TestCert::new(&["web.test", "db.test", "other.test"]);
    let (db_cert, other_cert) = (TestCert::new(&["db.test"]), TestCert::new(&["other.test"]));
    let (db, catch_all) = tokio::join!(
        Backend::tls("db", &db_cert),
        Backend::tls("tcp-catch-all", &other_cert)
    );
    let dir = temp_dir("http-shared");
    let port = free_port();
    let dynamic = format!(
        r#"
http:
  routers:
    web:
      rule: "Host(`web.test`)"
      service: s
      tls: {{}}
  services:
    s: {{ loadBalancer: {{ servers: [{{ url: "{}" }}] }} }}
tcp:
  routers:
    db:
      rule: "HostSNI(`db.test`)"
      service: db
      tls: {{ passthrough: true }}
    rest:
      rule: "HostSNI(`*`)"
      service: rest
      tls: {{ passthrough: true }}
  services:
    db: {{ loadBalancer: {{ servers: [{{ address: "{}" }}] }} }}
    rest: {{ loadBalancer: {{ servers: [{{ address: "{}" }}] }} }}
{}"#,
        http_backend.url(),
        db.addr,
        catch_all.addr,
        tls_section(&dir, &cert, "cert")
    );
    let _router = Router::start(
        &dir,
        &static_config(&dir, &[("shared", port)], ""),
        &dynamic,
        &[port],
    );
    // (a) an HTTPS router for the name beats the TCP catch-all.
    let mut web = Conn::tls(port, "web.test", &cert, &["h2"]).await;
    assert_eq!(web.get("web.test", "/").await.body, "http /");
    // (b) a TCP router for the name is passed through. The passthrough backends present
    // their own certificates: a client that trusts only ours fails the handshake there,
    // which shows the bytes went through untouched.
    assert!(
        Conn::try_tls(port, "db.test", &cert, &["http/1.1"])
            .await
            .is_err()
    );
    // (d) the TCP catch-all takes names nothing else claims.
    assert!(
        Conn::try_tls(port, "other.test", &cert, &["http/1.1"])
            .await
            .is_err()
    );
    assert_eq!((db.accepted(), catch_all.accepted()), (1, 1));
}
