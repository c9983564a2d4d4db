//! TCP routing end to end: the real binary on loopback, real TLS clients and backends.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream as StdStream};
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn ep(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Passthrough to two TLS backends chosen by SNI: each client sees its backend's
/// own certificate (the handshake only succeeds against that backend's root).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_routes_by_sni_to_each_backends_certificate() {
    let a_cert = TestCert::new(&["a.test"]);
    let b_cert = TestCert::new(&["b.test"]);
    let a = Backend::tls("a", &a_cert).await;
    let b = Backend::tls("b", &b_cert).await;
    let port = free_port();
    let dir = temp_dir("passthrough");
    let dynamic = format!(
        r#"
tcp:
  routers:
    to-a:
      rule: "HostSNI(`a.test`)"
      service: a
      tls: {{passthrough: true}}
    to-b:
      rule: "HostSNI(`b.test`)"
      service: b
      tls:
        passthrough: true
  services:
    a: {{loadBalancer: {{servers: [{{address: "{}"}}]}}}}
    b: {{loadBalancer: {{servers: [{{address: "{}"}}]}}}}
"#,
        a.addr, b.addr
    );
    let _r = Router::start(
        &dir,
        &static_config(&dir, &[("tls", port)], ""),
        &dynamic,
        &[port],
    );

    let mut s = tls_connect(ep(port), "a.test", &[&a_cert], &["h2"])
        .await
        .expect("a");
    assert_eq!(read_line(&mut s).await.unwrap(), "hello from a alpn=h2");
    assert_eq!(echo_roundtrip(&mut s, "ping-a").await.unwrap(), "ping-a");

    let mut s = tls_connect(ep(port), "b.test", &[&b_cert], &[])
        .await
        .expect("b");
    assert_eq!(read_line(&mut s).await.unwrap(), "hello from b alpn=-");

    // a.test's root does not validate b.test's backend: proves the certificate came from b.
    assert!(
        tls_connect(ep(port), "b.test", &[&a_cert], &[])
            .await
            .is_err()
    );
    // An SNI no router knows is closed before any certificate is sent.
    let err = tls_connect(ep(port), "c.test", &[&a_cert], &[]).await;
    assert!(err.is_err());
    assert_eq!(a.accepted() + b.accepted(), 3);
}

/// Exact beats wildcard beats catch-all, whatever the declaration order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_and_catch_all_precedence() {
    let cert = TestCert::new(&["x.example.com", "y.example.com", "other.test"]);
    let exact = Backend::tls("exact", &cert).await;
    let wild = Backend::tls("wildcard", &cert).await;
    let all = Backend::tls("catchall", &cert).await;
    let port = free_port();
    let dir = temp_dir("precedence");
    let dynamic = format!(
        r#"
tcp:
  routers:
    all:
      rule: "HostSNI(`*`)"
      service: all
      tls: {{passthrough: true}}
    wild:
      rule: "HostSNI(`*.example.com`)"
      service: wild
      tls: {{passthrough: true}}
    exact:
      rule: "HostSNI(`x.example.com`)"
      service: exact
      tls: {{passthrough: true}}
  services:
    exact: {{loadBalancer: {{servers: [{{address: "{}"}}]}}}}
    wild: {{loadBalancer: {{servers: [{{address: "{}"}}]}}}}
    all: {{loadBalancer: {{servers: [{{address: "{}"}}]}}}}
"#,
        exact.addr, wild.addr, all.addr
    );
    let _r = Router::start(
        &dir,
        &static_config(&dir, &[("tls", port)], ""),
        &dynamic,
        &[port],
    );
    for (sni, want) in [
        ("x.example.com", "hello from exact alpn=-"),
        ("y.example.com", "hello from wildcard alpn=-"),
        ("other.test", "hello from catchall alpn=-"),
    ] {
        let mut s = tls_connect(ep(port), sni, &[&cert], &[]).await.expect(sni);
        assert_eq!(read_line(&mut s).await.unwrap(), want, "sni {sni}");
    }
}

/// `ALPN` and `ClientIP` rules route on what the client offers and where it comes from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_and_client_ip_rules() {
    let cert = TestCert::new(&["svc.test"]);
    let h2 = Backend::tls("h2", &cert).await;
    let local = Backend::tls("local", &cert).await;
    let rest = Backend::tls("rest", &cert).await;
    let port = free_port();
    let dir = temp_dir("alpn");
    let dynamic = format!(
        r#"
tcp:
  routers:
    grpc:
      rule: "HostSNI(`svc.test`) && ALPN(`h2`)"
      priority: 1000
      service: h2
      tls: {{passthrough: true}}
    from-far:
      rule: "HostSNI(`svc.test`) && !ClientIP(`127.0.0.0/8`, `::1`)"
      service: rest
      tls: {{passthrough: true}}
    from-loopback:
      rule: "HostSNI(`svc.test`) && ClientIP(`127.0.0.1/32`)"
      service: local
      tls: {{passthrough: true}}
  services:
    h2: {{loadBalancer: {{servers: [{{address: "{}"}}]}}}}
    local: {{loadBalancer: {{servers: [{{address: "{}"}}]}}}}
    rest: {{loadBalancer: {{servers: [{{address: "{}"}}]}}}}
"#,
        h2.addr, local.addr, rest.addr
    );
    let _r = Router::start(
        &dir,
        &static_config(&dir, &[("tls", port)], ""),
        &dynamic,
        &[port],
    );
    let mut s = tls_connect(ep(port), "svc.test", &[&cert], &["h2"])
        .await
        .unwrap();
    assert_eq!(read_line(&mut s).await.unwrap(), "hello from h2 alpn=h2");
    let mut s = tls_connect(ep(port), "svc.test", &[&cert], &["http/1.1"])
        .await
        .unwrap();
    assert_eq!(
        read_line(&mut s).await.unwrap(),
        "hello from local alpn=http/1.1"
    );
    assert_eq!(rest.accepted(), 0);
}

/// A terminating TCP router decrypts with the certificate from `tls.certificates`
/// and forwards plaintext.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_termination_to_plaintext_backend() {
    let cert = TestCert::new(&["secure.test"]);
    let backend = Backend::echo(Some("plain backend")).await;
    let port = free_port();
    let dir = temp_dir("terminate");
    let (c, k) = cert.write(&dir, "secure");
    let dynamic = format!(
        r#"
tcp:
  routers:
    secure:
      rule: "HostSNI(`secure.test`)"
      service: plain
      tls: {{}}
  services:
    plain: {{loadBalancer: {{servers: [{{address: "{}"}}]}}}}
tls:
  certificates:
    - certFile: "{}"
      keyFile: "{}"
"#,
        backend.addr,
        c.display(),
        k.display()
    );
    let _r = Router::start(
        &dir,
        &static_config(&dir, &[("tls", port)], ""),
        &dynamic,
        &[port],
    );
    let mut s = tls_connect(ep(port), "secure.test", &[&cert], &[])
        .await
        .expect("handshake");
    assert_eq!(read_line(&mut s).await.unwrap(), "plain backend");
    assert_eq!(
        echo_roundtrip(&mut s, "over tls").await.unwrap(),
        "over tls"
    );
}

/// Without a configured certificate the router terminates with a generated
/// self-signed default certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn termination_without_certificates_uses_generated_default() {
    let backend = Backend::echo(Some("plain")).await;
    let port = free_port();
    let dir = temp_dir("defaultcert");
    let dynamic = format!(
        r#"
tcp:
  routers:
    secure:
      rule: "HostSNI(`secure.test`)"
      service: plain
      tls: {{}}
  services:
    plain: {{loadBalancer: {{servers: [{{address: "{}"}}]}}}}
"#,
        backend.addr
    );
    let _r = Router::start(
        &dir,
        &static_config(&dir, &[("tls", port)], ""),
        &dynamic,
        &[port],
    );
    let out = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-servername",
            "secure.test",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl s_client");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("SALLYPORT DEFAULT CERT"), "{text}");
}

/// A non-TLS `HostSNI(*)` router proxies plain TCP; sharing the port with TLS routers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_tls_catch_all_beside_tls_routers() {
    let cert = TestCert::new(&["a.test"]);
    let tls_backend = Backend::tls("a", &cert).await;
    let plain = Backend::echo(None).await;
    let port = free_port();
    let dir = temp_dir("nontls");
    let dynamic = format!(
        r#"
tcp:
  routers:
    plain:
      rule: "HostSNI(`*`)"
      service: plain
    tls-a:
      rule: "HostSNI(`a.test`)"
      service: a
      tls: {{passthrough: true}}
  services:
    plain: {{loadBalancer: {{servers: [{{address: "{}"}}]}}}}
    a: {{loadBalancer: {{servers: [{{address: "{}"}}]}}}}
"#,
        plain.addr, tls_backend.addr
    );
    let _r = Router::start(
        &dir,
        &static_config(&dir, &[("mixed", port)], ""),
        &dynamic,
        &[port],
    );
    let mut s = TcpStream::connect(ep(port)).await.unwrap();
    assert_eq!(
        echo_roundtrip(&mut s, "plain text").await.unwrap(),
        "plain text"
    );
    let mut t = tls_connect(ep(port), "a.test", &[&cert], &[])
        .await
        .unwrap();
    assert_eq!(read_line(&mut t).await.unwrap(), "hello from a alpn=-");
}

/// With only non-TLS TCP routers the router connects at once, so a server-first
/// protocol's banner reaches a client that has sent nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_first_banner_reaches_silent_client() {
    let banner = Backend::echo(Some("220 smtp.test ESMTP ready")).await;
    let port = free_port();
    let dir = temp_dir("banner");
    let dynamic = format!(
        r#"
tcp:
  routers:
    smtp:
      entryPoints: [smtp]
      rule: "HostSNI(`*`)"
      service: smtp
  services:
    smtp: {{loadBalancer: {{servers: [{{address: "{}"}}]}}}}
"#,
        banner.addr
    );
    let _r = Router::start(
        &dir,
        &static_config(&dir, &[("smtp", port)], ""),
        &dynamic,
        &[port],
    );
    let mut s = TcpStream::connect(ep(port)).await.unwrap();
    assert_eq!(
        read_line(&mut s).await.unwrap(),
        "220 smtp.test ESMTP ready"
    );
}

/// PROXY protocol in (trusted: the header's source is the client) and out (v1 and v2
/// headers sent to the backend carry the real client address).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_in_and_out() {
    let recorder = Backend::proxy_recorder().await;
    let (trusted, untrusted) = (free_port(), free_port());
    let dir = temp_dir("proxyproto");
    let stat = format!(
        r#"entryPoints:
  trusted:
    address: "127.0.0.1:{trusted}"
    proxyProtocol:
      trustedIPs: ["127.0.0.1/32"]
  untrusted:
    address: "127.0.0.1:{untrusted}"
    proxyProtocol:
      trustedIPs: ["10.0.0.0/8"]
providers:
  providersThrottleDuration: 100ms
  file: {{filename: "{}"}}
log: {{level: DEBUG}}
"#,
        dir.join("dynamic.yml").display()
    );
    let dynamic = format!(
        r#"
tcp:
  routers:
    v1:
      entryPoints: [trusted]
      rule: "HostSNI(`*`)"
      service: rec-v1
    v2:
      entryPoints: [untrusted]
      rule: "HostSNI(`*`)"
      service: rec-v2
  services:
    rec-v1: {{loadBalancer: {{servers: [{{address: "{a}"}}], serversTransport: pp1}}}}
    rec-v2: {{loadBalancer: {{servers: [{{address: "{a}"}}], serversTransport: pp2}}}}
  serversTransports:
    pp1: {{proxyProtocol: {{version: 1}}}}
    pp2: {{proxyProtocol: {{}}}}
"#,
        a = recorder.addr
    );
    let _r = Router::start(&dir, &stat, &dynamic, &[trusted, untrusted]);

    // Trusted peer, v1 header in: the backend sees 192.0.2.7 as the source.
    let mut s = TcpStream::connect(ep(trusted)).await.unwrap();
    s.write_all(b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 80\r\nhello\n")
        .await
        .unwrap();
    assert_eq!(
        read_line(&mut s).await.unwrap(),
        "source=v1 192.0.2.7:40000"
    );
    assert_eq!(read_line(&mut s).await.unwrap(), "hello");

    // Trusted peer, v2 header in.
    let header = ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | ppp::v2::Command::Proxy,
        ppp::v2::Protocol::Stream,
        (
            SocketAddr::from(([198, 51, 100, 9], 5555)),
            SocketAddr::from(([127, 0, 0, 1], 80)),
        ),
    )
    .build()
    .unwrap();
    let mut s = TcpStream::connect(ep(trusted)).await.unwrap();
    s.write_all(&header).await.unwrap();
    s.write_all(b"hi\n").await.unwrap();
    assert_eq!(
        read_line(&mut s).await.unwrap(),
        "source=v1 198.51.100.9:5555"
    );

    // Untrusted peer: the header is consumed and ignored; v2 out carries 127.0.0.1.
    let mut s = TcpStream::connect(ep(untrusted)).await.unwrap();
    s.write_all(b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 80\r\nx\n")
        .await
        .unwrap();
    let line = read_line(&mut s).await.unwrap();
    assert!(line.starts_with("source=v2 127.0.0.1:"), "{line}");
    assert_eq!(read_line(&mut s).await.unwrap(), "x");

    // No header at all from a trusted peer still works.
    let mut s = TcpStream::connect(ep(trusted)).await.unwrap();
    s.write_all(b"plain\n").await.unwrap();
    let line = read_line(&mut s).await.unwrap();
    assert!(line.starts_with("source=v1 127.0.0.1:"), "{line}");
}

/// Weighted 3:1 gives exactly 3 and 1 over 4 connections (Traefik's TCP WRR).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_round_robin_three_to_one() {
    let a = Backend::echo(Some("a")).await;
    let b = Backend::echo(Some("b")).await;
    let port = free_port();
    let dir = temp_dir("wrr");
    let dynamic = format!(
        r#"
tcp:
  routers:
    r: {{rule: "HostSNI(`*`)", service: w}}
  services:
    w:
      weighted:
        services:
          - {{name: a, weight: 3}}
          - {{name: b, weight: 1}}
    a: {{loadBalancer: {{servers: [{{address: "{}"}}]}}}}
    b: {{loadBalancer: {{servers: [{{address: "{}"}}]}}}}
"#,
        a.addr, b.addr
    );
    let _r = Router::start(
        &dir,
        &static_config(&dir, &[("tcp", port)], ""),
        &dynamic,
        &[port],
    );
    let mut seen = Vec::new();
    for _ in 0..8 {
        let mut s = TcpStream::connect(ep(port)).await.unwrap();
        seen.push(read_line(&mut s).await.unwrap());
    }
    assert_eq!(seen.iter().filter(|x| *x == "a").count(), 6, "{seen:?}");
    assert_eq!(seen.iter().filter(|x| *x == "b").count(), 2, "{seen:?}");
}

/// An active TCP health check removes a server that stops answering and restores it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_removes_and_restores_server() {
    let good = Backend::echo(Some("good")).await;
    let flaky = Backend::echo(Some("flaky")).await;
    let flaky_addr = flaky.addr;
    let port = free_port();
    let dir = temp_dir("health");
    let dynamic = format!(
        r#"
tcp:
  routers:
    r: {{rule: "HostSNI(`*`)", service: s}}
  services:
    s:
      loadBalancer:
        servers: [{{address: "{}"}}, {{address: "{}"}}]
        healthCheck: {{interval: 200ms, timeout: 200ms}}
"#,
        good.addr, flaky_addr
    );
    let r = Router::start(
        &dir,
        &static_config(&dir, &[("tcp", port)], ""),
        &dynamic,
        &[port],
    );
    drop(flaky);
    r.wait_log("is down");
    for _ in 0..4 {
        let mut s = TcpStream::connect(ep(port)).await.unwrap();
        assert_eq!(read_line(&mut s).await.unwrap(), "good");
    }
    // Bring the flaky server back on the same address.
    let listener = tokio::net::TcpListener::bind(flaky_addr).await.unwrap();
    let revived = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let _ = s.write_all(b"flaky\n").await;
        }
    });
    r.wait_log("is up");
    let mut seen = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(ep(port)).await.unwrap();
        seen.push(read_line(&mut s).await.unwrap());
    }
    assert!(seen.iter().any(|x| x == "flaky"), "{seen:?}");
    revived.abort();
}

const CHROMIUM_HELLO: &[u8] = include_bytes!("../l4/testdata/tls/chromium-156-tcp-clienthello.bin");
const TWO_RECORDS_HELLO: &[u8] =
    include_bytes!("../l4/testdata/tls/openssl-3.0.22-s_client-tcp-clienthello-2records.bin");

/// Starts a router passing `a.test` through to an echo backend; other SNIs go nowhere.
async fn echo_passthrough(tag: &str) -> (Router, Backend, u16) {
    let echo = Backend::echo(None).await;
    let port = free_port();
    let dir = temp_dir(tag);
    let dynamic = format!(
        r#"
tcp:
  routers:
    a: {{rule: "HostSNI(`a.test`)", service: echo, tls: {{passthrough: true}}}}
  services:
    echo: {{loadBalancer: {{servers: [{{address: "{}"}}]}}}}
"#,
        echo.addr
    );
    let r = Router::start(
        &dir,
        &static_config(&dir, &[("tls", port)], ""),
        &dynamic,
        &[port],
    );
    (r, echo, port)
}

fn send_and_read_back(port: u16, hello: &[u8], byte_at_a_time: bool) -> Vec<u8> {
    let mut s = StdStream::connect(ep(port)).unwrap();
    if byte_at_a_time {
        write_slowly(&mut s, hello, Duration::from_millis(1));
    } else {
        s.write_all(hello).unwrap();
    }
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut back = vec![0u8; hello.len()];
    s.read_exact(&mut back).unwrap();
    back
}

/// A post-quantum-sized ClientHello (Chromium, X25519MLKEM768 key share, ~2 KB) is
/// routed by its SNI and passed through byte for byte, even written one byte at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_client_hello_fragmented_into_single_bytes() {
    let (_r, echo, port) = echo_passthrough("pq").await;
    let back = tokio::task::spawn_blocking(move || send_and_read_back(port, CHROMIUM_HELLO, false))
        .await
        .unwrap();
    assert_eq!(back, CHROMIUM_HELLO);
    let back = tokio::task::spawn_blocking(move || send_and_read_back(port, CHROMIUM_HELLO, true))
        .await
        .unwrap();
    assert_eq!(back, CHROMIUM_HELLO);
    assert_eq!(echo.accepted(), 2);
}

/// A ClientHello split over two TLS records (the cut inside the host name) is
/// reassembled and routed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_hello_split_over_two_records() {
    let (_r, echo, port) = echo_passthrough("tworecords").await;
    let back =
        tokio::task::spawn_blocking(move || send_and_read_back(port, TWO_RECORDS_HELLO, false))
            .await
            .unwrap();
    assert_eq!(back, TWO_RECORDS_HELLO);
    assert_eq!(echo.accepted(), 1);
}

/// Malformed and unrouted hellos are closed, never forwarded, never hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_client_hello_is_closed() {
    let (r, echo, port) = echo_passthrough("malformed").await;
    let garbage: Vec<u8> = [0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0xff, 0xff, 0xff, 0xff].to_vec();
    let closed = tokio::task::spawn_blocking(move || {
        let mut s = StdStream::connect(ep(port)).unwrap();
        s.write_all(&garbage).unwrap();
        std_closed_within(&mut s, WAIT)
    })
    .await
    .unwrap();
    assert!(closed);
    // A record header claiming more than the hello limit is refused at once.
    let closed = tokio::task::spawn_blocking(move || {
        let mut s = StdStream::connect(ep(port)).unwrap();
        s.write_all(&[0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x00, 0xff, 0xff])
            .unwrap();
        let _ = s.write_all(&vec![0u8; 16 * 1024]);
        let _ = s.write_all(&vec![0u8; 8 * 1024]);
        std_closed_within(&mut s, WAIT)
    })
    .await
    .unwrap();
    assert!(closed);
    assert_eq!(echo.accepted(), 0);
    drop(r);
}

/// A client that connects and never sends is closed after the entrypoint's
/// read timeout, not kept forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_client_is_closed_after_read_timeout() {
    let cert = TestCert::new(&["a.test"]);
    let tls_backend = Backend::tls("a", &cert).await;
    let port = free_port();
    let dir = temp_dir("silent");
    let stat = format!(
        r#"entryPoints:
  tls:
    address: "127.0.0.1:{port}"
    transport:
      respondingTimeouts:
        readTimeout: 300ms
providers:
  file: {{filename: "{}"}}
log: {{level: DEBUG}}
"#,
        dir.join("dynamic.yml").display()
    );
    let dynamic = format!(
        r#"
tcp:
  routers:
    a: {{rule: "HostSNI(`a.test`)", service: a, tls: {{passthrough: true}}}}
  services:
    a: {{loadBalancer: {{servers: [{{address: "{}"}}]}}}}
"#,
        tls_backend.addr
    );
    let _r = Router::start(&dir, &stat, &dynamic, &[port]);
    let closed = tokio::task::spawn_blocking(move || {
        let mut s = StdStream::connect(ep(port)).unwrap();
        std_closed_within(&mut s, Duration::from_secs(5))
    })
    .await
    .unwrap();
    assert!(closed);
}

/// A backend that refuses connections closes the client's connection with a log line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_backend_closes_client() {
    let dead = free_port();
    let port = free_port();
    let dir = temp_dir("refused");
    let dynamic = format!(
        r#"
tcp:
  routers:
    r: {{rule: "HostSNI(`*`)", service: s}}
  services:
    s: {{loadBalancer: {{servers: [{{address: "127.0.0.1:{dead}"}}]}}}}
"#
    );
    let r = Router::start(
        &dir,
        &static_config(&dir, &[("tcp", port)], ""),
        &dynamic,
        &[port],
    );
    let mut s = TcpStream::connect(ep(port)).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(WAIT, s.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0);
    r.wait_log("127.0.0.1:");
}

/// An IPv4 client on a dual-stack listener is plain IPv4 everywhere: here in the
/// PROXY header sent to the backend (never `::ffff:127.0.0.1`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv4_client_on_dual_stack_listener_is_plain_ipv4() {
    let recorder = Backend::proxy_recorder().await;
    let port = free_port();
    let dir = temp_dir("dualstack");
    let stat = format!(
        "entryPoints:\n  any:\n    address: \":{port}\"\nproviders:\n  file: {{filename: \"{}\"}}\nlog: {{level: DEBUG}}\n",
        dir.join("dynamic.yml").display()
    );
    let dynamic = format!(
        r#"
tcp:
  routers:
    r: {{rule: "HostSNI(`*`) && ClientIP(`127.0.0.0/8`)", service: rec}}
  services:
    rec: {{loadBalancer: {{servers: [{{address: "{}"}}], serversTransport: v1}}}}
  serversTransports:
    v1: {{proxyProtocol: {{version: 1}}}}
"#,
        recorder.addr
    );
    let _r = Router::start(&dir, &stat, &dynamic, &[port]);
    let mut s = TcpStream::connect(ep(port)).await.unwrap();
    s.write_all(b"x\n").await.unwrap();
    let line = read_line(&mut s).await.unwrap();
    assert!(line.starts_with("source=v1 127.0.0.1:"), "{line}");
}

/// A header that starts like PROXY but is broken, from a trusted peer, closes the
/// connection with a log line; nothing reaches the backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_proxy_header_from_trusted_peer_is_closed() {
    let echo = Backend::echo(None).await;
    let port = free_port();
    let dir = temp_dir("badproxy");
    let stat = format!(
        "entryPoints:\n  pp:\n    address: \"127.0.0.1:{port}\"\n    proxyProtocol:\n      insecure: true\nproviders:\n  file: {{filename: \"{}\"}}\nlog: {{level: DEBUG}}\n",
        dir.join("dynamic.yml").display()
    );
    let dynamic = format!(
        "tcp:\n  routers:\n    r: {{rule: \"HostSNI(`*`)\", service: e}}\n  services:\n    e: {{loadBalancer: {{servers: [{{address: \"{}\"}}]}}}}\n",
        echo.addr
    );
    let r = Router::start(&dir, &stat, &dynamic, &[port]);
    let closed = tokio::task::spawn_blocking(move || {
        let mut s = StdStream::connect(ep(port)).unwrap();
        s.write_all(b"PROXY TCP4 not-an-ip 127.0.0.1 1 2\r\nhello\n")
            .unwrap();
        std_closed_within(&mut s, WAIT)
    })
    .await
    .unwrap();
    assert!(closed);
    r.wait_log("bad PROXY protocol header");
    assert_eq!(echo.accepted(), 0);
}

/// TCP middlewares: `ipAllowList` closes connections from outside its ranges and
/// `inFlightConn` caps simultaneous connections per client IP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_middlewares_allow_list_and_in_flight_limit() {
    let echo = Backend::echo(Some("in")).await;
    let (open_port, closed_port) = (free_port(), free_port());
    let dir = temp_dir("tcpmw");
    let dynamic = format!(
        r#"
tcp:
  routers:
    limited:
      entryPoints: [open]
      rule: "HostSNI(`*`)"
      service: e
      middlewares: [loopback-only, two-at-a-time]
    denied:
      entryPoints: [closed]
      rule: "HostSNI(`*`)"
      service: e
      middlewares: [elsewhere-only]
  middlewares:
    loopback-only: {{ipAllowList: {{sourceRange: ["127.0.0.1/32", "::1"]}}}}
    elsewhere-only: {{ipWhiteList: {{sourceRange: ["192.0.2.0/24"]}}}}
    two-at-a-time: {{inFlightConn: {{amount: 2}}}}
  services:
    e: {{loadBalancer: {{servers: [{{address: "{}"}}]}}}}
"#,
        echo.addr
    );
    let stat = static_config(&dir, &[("open", open_port), ("closed", closed_port)], "");
    let r = Router::start(&dir, &stat, &dynamic, &[open_port, closed_port]);
    // `Router::start` probes the ports with a connection of its own from 127.0.0.1, which
    // holds an `inFlightConn` slot until its relay ends: wait for that before counting.
    r.wait_log("connection closed");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut a = TcpStream::connect(ep(open_port)).await.unwrap();
    assert_eq!(read_line(&mut a).await.unwrap(), "in");
    let mut b = TcpStream::connect(ep(open_port)).await.unwrap();
    assert_eq!(read_line(&mut b).await.unwrap(), "in");
    // The third simultaneous connection from 127.0.0.1 is closed.
    let mut c = TcpStream::connect(ep(open_port)).await.unwrap();
    assert!(read_line(&mut c).await.unwrap().is_empty());
    drop(a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut d = TcpStream::connect(ep(open_port)).await.unwrap();
    assert_eq!(read_line(&mut d).await.unwrap(), "in");
    // Outside the allow list: closed without reaching the backend.
    let before = echo.accepted();
    let mut e = TcpStream::connect(ep(closed_port)).await.unwrap();
    assert!(read_line(&mut e).await.unwrap().is_empty());
    assert_eq!(echo.accepted(), before);
    drop(b);
}

/// Routers with `tls.options` naming a TLS option that asks for client certificates from a
/// CA file that cannot be read as certificates refuse the handshake (fail closed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_option_with_unusable_client_ca_fails_closed() {
    let cert = TestCert::new(&["mtls.test"]);
    let backend = Backend::echo(Some("should not see this")).await;
    let port = free_port();
    let dir = temp_dir("failclosed");
    let (c, k) = cert.write(&dir, "mtls");
    let ca = dir.join("corrupt-ca.pem");
    std::fs::write(
        &ca,
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let dynamic = format!(
        r#"
tcp:
  routers:
    mtls:
      rule: "HostSNI(`mtls.test`)"
      service: s
      tls: {{options: strict}}
  services:
    s: {{loadBalancer: {{servers: [{{address: "{}"}}]}}}}
tls:
  certificates: [{{certFile: "{}", keyFile: "{}"}}]
  options:
    strict:
      clientAuth:
        caFiles: ["{}"]
        clientAuthType: RequireAndVerifyClientCert
"#,
        backend.addr,
        c.display(),
        k.display(),
        ca.display()
    );
    let r = Router::start(
        &dir,
        &static_config(&dir, &[("tls", port)], ""),
        &dynamic,
        &[port],
    );
    assert!(
        tls_connect(ep(port), "mtls.test", &[&cert], &[])
            .await
            .is_err()
    );
    assert_eq!(backend.accepted(), 0);
    r.wait_log("refusing TLS handshake");
}

/// Termination at the router, then TLS again to the backend through a
/// serversTransport that trusts the backend's own CA and names it (`serverName`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_then_tls_to_backend_through_servers_transport() {
    let front = TestCert::new(&["front.test"]);
    let inner = TestCert::new(&["inner.internal"]);
    let backend = Backend::tls("inner", &inner).await;
    let port = free_port();
    let dir = temp_dir("reencrypt");
    let (fc, fk) = front.write(&dir, "front");
    let (ic, _) = inner.write(&dir, "inner");
    let dynamic = format!(
        r#"
tcp:
  routers:
    r:
      rule: "HostSNI(`front.test`)"
      service: s
      tls: {{}}
  services:
    s:
      loadBalancer:
        servers: [{{address: "{}", tls: true}}]
        serversTransport: to-inner
  serversTransports:
    to-inner:
      tls:
        serverName: inner.internal
        rootCAs: ["{}"]
tls:
  certificates: [{{certFile: "{}", keyFile: "{}"}}]
"#,
        backend.addr,
        ic.display(),
        fc.display(),
        fk.display()
    );
    let _r = Router::start(
        &dir,
        &static_config(&dir, &[("tls", port)], ""),
        &dynamic,
        &[port],
    );
    let mut s = tls_connect(ep(port), "front.test", &[&front], &[])
        .await
        .expect("front handshake");
    assert_eq!(read_line(&mut s).await.unwrap(), "hello from inner alpn=-");
    assert_eq!(
        echo_roundtrip(&mut s, "twice encrypted").await.unwrap(),
        "twice encrypted"
    );
}

/// The static `tcpServersTransport.tls.rootCAs` verifies backends of services that name
/// no transport (the server name defaults to the address's host, an IP here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_tcp_servers_transport_tls_verifies_backends() {
    let front = TestCert::new(&["front.test"]);
    let inner = TestCert::new(&["127.0.0.1"]);
    let backend = Backend::tls("inner", &inner).await;
    let port = free_port();
    let dir = temp_dir("static-transport");
    let (fc, fk) = front.write(&dir, "front");
    let (ic, _) = inner.write(&dir, "inner");
    let extra = format!(
        "tcpServersTransport:\n  tls:\n    rootCAs: [\"{}\"]\n",
        ic.display()
    );
    let dynamic = format!(
        r#"
tcp:
  routers:
    r: {{rule: "HostSNI(`front.test`)", service: s, tls: {{}}}}
  services:
    s: {{loadBalancer: {{servers: [{{address: "{}", tls: true}}]}}}}
tls:
  certificates: [{{certFile: "{}", keyFile: "{}"}}]
"#,
        backend.addr,
        fc.display(),
        fk.display()
    );
    let _r = Router::start(
        &dir,
        &static_config(&dir, &[("tls", port)], &extra),
        &dynamic,
        &[port],
    );
    let mut s = tls_connect(ep(port), "front.test", &[&front], &[])
        .await
        .expect("front handshake");
    assert_eq!(read_line(&mut s).await.unwrap(), "hello from inner alpn=-");
}

/// With no healthy server left, a new connection is closed with a log line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_healthy_server_closes_with_a_log_line() {
    let dead = free_port();
    let port = free_port();
    let dir = temp_dir("nohealthy");
    let dynamic = format!(
        r#"
tcp:
  routers:
    r: {{rule: "HostSNI(`*`)", service: s}}
  services:
    s:
      loadBalancer:
        servers: [{{address: "127.0.0.1:{dead}"}}]
        healthCheck: {{interval: 100ms, timeout: 100ms}}
"#
    );
    let r = Router::start(
        &dir,
        &static_config(&dir, &[("tcp", port)], ""),
        &dynamic,
        &[port],
    );
    r.wait_log("is down");
    let mut s = TcpStream::connect(ep(port)).await.unwrap();
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(WAIT, s.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0);
    r.wait_log("no healthy server");
}
