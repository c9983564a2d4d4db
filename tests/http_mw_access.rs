//! Access-control middlewares end to end: the real binary on loopback, hyper clients and
//! backends (`ipAllowList`/`ipWhiteList`).

mod support;

use ::http::StatusCode;
use support::web::{Conn, HttpBackend, get};
use support::*;

/// Static configuration with an entrypoint `open` and one `trusting` loopback's
/// forwarded headers.
fn trusting_static(dir: &std::path::Path, open: u16, trusting: u16) -> String {
    format!(
        "entryPoints:\n  open:\n    address: \"127.0.0.1:{open}\"\n  trusting:\n    address: \"127.0.0.1:{trusting}\"\n    forwardedHeaders:\n      trustedIPs: [\"127.0.0.1/32\"]\nproviders:\n  file:\n    filename: \"{}\"\n",
        dir.join("dynamic.yml").display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_allow_list_checks_the_peer_or_a_trusted_forwarded_for_entry() {
    let backend = HttpBackend::start("a").await;
    let dir = temp_dir("mw-ip-allow");
    let (open, trusting) = (free_port(), free_port());
    let dynamic = format!(
        r#"
http:
  routers:
    peer:
      rule: "PathPrefix(`/peer`)"
      service: s
      middlewares: [loopback-only]
    depth:
      rule: "PathPrefix(`/depth`)"
      service: s
      middlewares: [office]
    legacy:
      rule: "PathPrefix(`/legacy`)"
      service: s
      middlewares: [old]
  middlewares:
    loopback-only:
      ipAllowList:
        sourceRange: ["127.0.0.2/32"]
        rejectStatusCode: 404
    office:
      ipAllowList:
        sourceRange: ["10.0.0.0/8"]
        ipStrategy: {{ depth: 2 }}
    old:
      ipWhiteList:
        sourceRange: ["192.0.2.0/24"]
        ipStrategy: {{ excludedIPs: ["203.0.113.0/24"] }}
  services:
    s: {{ loadBalancer: {{ servers: [{{ url: "{}" }}] }} }}
"#,
        backend.url()
    );
    let _router = Router::start(
        &dir,
        &trusting_static(&dir, open, trusting),
        &dynamic,
        &[open, trusting],
    );

    let allowed = Conn::h1_from([127, 0, 0, 2].into(), open)
        .await
        .get("site.test", "/peer")
        .await;
    assert_eq!(allowed.status, StatusCode::OK);
    assert_eq!(allowed.body, "a /peer");
    let denied = Conn::h1(open).await.get("site.test", "/peer").await;
    assert_eq!(denied.status, StatusCode::NOT_FOUND);
    assert_eq!(denied.body, "Not Found");

    let with_xff = |path: &str, xff: &str| {
        let mut req = get("site.test", path, false);
        req.headers_mut()
            .insert("x-forwarded-for", xff.parse().unwrap());
        req
    };
    // Depth 2 counts from the right of what the trusted proxy sent.
    let mut trusted = Conn::h1(trusting).await;
    let answer = trusted
        .send(with_xff("/depth", "10.1.1.1, 172.16.0.1"))
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    let answer = trusted
        .send(with_xff("/depth", "172.16.0.1, 10.1.1.1"))
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(answer.body, "Forbidden");
    // An untrusted peer's header is dropped, so it cannot claim an allowed address.
    let answer = Conn::h1(open)
        .await
        .send(with_xff("/depth", "10.1.1.1, 172.16.0.1"))
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);

    // excludedIPs skip the listed proxies from the right.
    let answer = trusted
        .send(with_xff("/legacy", "192.0.2.5, 203.0.113.7"))
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    let answer = trusted
        .send(with_xff("/legacy", "192.0.2.5, 198.51.100.1, 203.0.113.7"))
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_req_refuses_a_host_over_its_amount_until_a_response_ends() {
    let backend = HttpBackend::start("a").await;
    let dir = temp_dir("mw-in-flight");
    let port = free_port();
    let dynamic = format!(
        r#"
http:
  routers:
    r:
      rule: "PathPrefix(`/`)"
      service: s
      middlewares: [one-per-host]
  middlewares:
    one-per-host:
      inFlightReq: {{ amount: 1 }}
  services:
    s: {{ loadBalancer: {{ servers: [{{ url: "{}" }}] }} }}
"#,
        backend.url()
    );
    let _router = Router::start(
        &dir,
        &static_config(&dir, &[("web", port)], ""),
        &dynamic,
        &[port],
    );
    let mut slow_conn = Conn::h1(port).await;
    let slow = tokio::spawn(async move { slow_conn.get("a.test", "/slow/800").await });
    // Until the slow request reaches the backend, it is not in flight for sure.
    let started = std::time::Instant::now();
    while backend.requests() == 0 {
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let mut conn = Conn::h1(port).await;
    let refused = conn.get("a.test", "/x").await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.body, "max connections reached: 1");
    // The default criterion is the request's host: another host has its own count.
    assert_eq!(conn.get("b.test", "/x").await.status, StatusCode::OK);

    let finished = slow.await.unwrap();
    assert_eq!(finished.status, StatusCode::OK);
    assert_eq!(conn.get("a.test", "/x").await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_allows_the_burst_per_source_then_answers_429_with_retry_after() {
    let backend = HttpBackend::start("a").await;
    let dir = temp_dir("mw-rate-limit");
    let port = free_port();
    let dynamic = format!(
        r#"
http:
  routers:
    by-client:
      rule: "PathPrefix(`/`)"
      service: s
      middlewares: [per-client]
    by-ip:
      rule: "PathPrefix(`/ip`)"
      service: s
      middlewares: [per-ip]
    unlimited:
      rule: "PathPrefix(`/free`)"
      service: s
      middlewares: [off]
  middlewares:
    per-client:
      rateLimit:
        average: 2
        period: 1m
        burst: 3
        sourceCriterion: {{ requestHeaderName: X-Client }}
    per-ip:
      rateLimit: {{ average: 1, period: 10s }}
    off:
      rateLimit: {{ average: 0 }}
  services:
    s: {{ loadBalancer: {{ servers: [{{ url: "{}" }}] }} }}
"#,
        backend.url()
    );
    let _router = Router::start(
        &dir,
        &static_config(&dir, &[("web", port)], ""),
        &dynamic,
        &[port],
    );
    let mut conn = Conn::h1(port).await;
    let as_client = |client: &str| {
        let mut req = get("site.test", "/x", false);
        req.headers_mut()
            .insert("x-client", client.parse().unwrap());
        req
    };
    for _ in 0..3 {
        assert_eq!(conn.send(as_client("alice")).await.status, StatusCode::OK);
    }
    let refused = conn.send(as_client("alice")).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.body, "Too Many Requests");
    // Two tokens a minute: the next one is 30 s away.
    assert_eq!(refused.header("retry-after"), "30");
    assert_eq!(conn.send(as_client("bob")).await.status, StatusCode::OK);

    // By default the source is the client address; burst 1.
    assert_eq!(conn.get("site.test", "/ip").await.status, StatusCode::OK);
    let refused = conn.get("site.test", "/ip").await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.header("retry-after"), "10");
    let mut other = Conn::h1_from([127, 0, 0, 3].into(), port).await;
    assert_eq!(other.get("site.test", "/ip").await.status, StatusCode::OK);

    for _ in 0..20 {
        assert_eq!(conn.get("site.test", "/free").await.status, StatusCode::OK);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_checks_each_hash_kind_and_passes_the_user_on() {
    let backend = HttpBackend::start("a").await;
    let dir = temp_dir("mw-basic-auth");
    let port = free_port();
    // apr1 from `openssl passwd -apr1`, bcrypt from crypt(3), SHA-1 from `openssl dgst`.
    let users_file = dir.join("users");
    std::fs::write(
        &users_file,
        "# htpasswd\napr:$apr1$H6uskkkW$IgXLP6ewTrSuBkTrqE8wj/\n\nbc:$2y$05$abcdefghijklmnopqrstuufhXdHJtkiUiNQ6n8/s9Kw6bfnPI6Ytq\n",
    )
    .unwrap();
    let dynamic = format!(
        r#"
http:
  routers:
    guarded:
      rule: "Host(`site.test`)"
      service: s
      middlewares: [auth]
    broken:
      rule: "Host(`broken.test`)"
      service: s
      middlewares: [no-file]
  middlewares:
    auth:
      basicAuth:
        usersFile: "{}"
        users: ["sha:{{SHA}}5en6G6MezRroT3XKqkdPOmY/BfQ="]
        realm: "staff only"
        headerField: X-WebAuth-User
        removeHeader: true
    no-file:
      basicAuth:
        usersFile: "{}"
  services:
    s: {{ loadBalancer: {{ servers: [{{ url: "{}" }}] }} }}
"#,
        users_file.display(),
        dir.join("missing").display(),
        backend.url()
    );
    let _router = Router::start(
        &dir,
        &static_config(&dir, &[("web", port)], ""),
        &dynamic,
        &[port],
    );
    let mut conn = Conn::h1(port).await;
    // `Basic` credentials, base64 written out (`printf user:password | base64`).
    let with_basic = |host: &str, path: &str, encoded: &str| {
        let mut req = get(host, path, false);
        req.headers_mut()
            .insert("authorization", format!("Basic {encoded}").parse().unwrap());
        req
    };

    let denied = conn.get("site.test", "/x").await;
    assert_eq!(denied.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        denied.header("www-authenticate"),
        "Basic realm=\"staff only\""
    );
    assert_eq!(denied.body, "401 Unauthorized\n");
    for (user, right, wrong) in [
        ("apr", "YXByOnRlc3Q=", "YXByOndyb25n"),
        ("bc", "YmM6YmNyeXB0LXB3", "YmM6d3Jvbmc="),
        ("sha", "c2hhOnNlY3JldA==", "c2hhOndyb25n"),
    ] {
        let answer = conn.send(with_basic("site.test", "/health", right)).await;
        assert_eq!(answer.status, StatusCode::OK, "{user}");
        let probes = backend.probes();
        let seen = &probes.last().unwrap().headers;
        assert_eq!(seen["x-webauth-user"], user);
        assert!(seen.get("authorization").is_none());
        let answer = conn.send(with_basic("site.test", "/x", wrong)).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{user}:wrong");
    }
    // A users file that cannot be read leaves its router unserved; the others are served.
    let answer = conn
        .send(with_basic("broken.test", "/", "YXByOnRlc3Q="))
        .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
}

/// The hex MD5 of `text`, as Digest authentication computes it.
fn md5_hex(text: &str) -> String {
    use md5::{Digest, Md5};
    Md5::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The value of `key="..."` in a `WWW-Authenticate` header.
fn quoted_param<'a>(header: &'a str, key: &str) -> &'a str {
    let start = header.find(&format!("{key}=\"")).expect("param") + key.len() + 2;
    let len = header[start..].find('"').expect("closing quote");
    &header[start..start + len]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_auth_accepts_a_response_to_its_challenge_once() {
    let backend = HttpBackend::start("a").await;
    let dir = temp_dir("mw-digest-auth");
    let port = free_port();
    let ha1 = md5_hex("alice:traefik:wonderland");
    let dynamic = format!(
        r#"
http:
  routers:
    r:
      rule: "PathPrefix(`/`)"
      service: s
      middlewares: [digest]
  middlewares:
    digest:
      digestAuth:
        users: ["alice:traefik:{ha1}"]
  services:
    s: {{ loadBalancer: {{ servers: [{{ url: "{}" }}] }} }}
"#,
        backend.url()
    );
    let _router = Router::start(
        &dir,
        &static_config(&dir, &[("web", port)], ""),
        &dynamic,
        &[port],
    );
    let mut conn = Conn::h1(port).await;
    let challenge = conn.get("site.test", "/private").await;
    assert_eq!(challenge.status, StatusCode::UNAUTHORIZED);
    assert_eq!(challenge.body, "401 Unauthorized\n");
    let header = challenge.header("www-authenticate").to_owned();
    assert!(header.starts_with("Digest realm=\"traefik\""), "{header}");
    let (nonce, opaque) = (
        quoted_param(&header, "nonce"),
        quoted_param(&header, "opaque"),
    );
    let authorized = |nc: &str, password: &str| {
        let ha1 = md5_hex(&format!("alice:traefik:{password}"));
        let ha2 = md5_hex("GET:/private");
        let response = md5_hex(&format!("{ha1}:{nonce}:{nc}:c0ffee:auth:{ha2}"));
        let mut req = get("site.test", "/private", false);
        let value = format!(
            "Digest username=\"alice\", realm=\"traefik\", nonce=\"{nonce}\", uri=\"/private\", algorithm=MD5, qop=auth, nc={nc}, cnonce=\"c0ffee\", response=\"{response}\", opaque=\"{opaque}\""
        );
        req.headers_mut()
            .insert("authorization", value.parse().unwrap());
        req
    };
    let ok = conn.send(authorized("00000001", "wonderland")).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.body, "a /private");
    // The same nonce count again is a replay.
    let replay = conn.send(authorized("00000001", "wonderland")).await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        conn.send(authorized("00000002", "wonderland")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        conn.send(authorized("00000003", "looking-glass"))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
}
