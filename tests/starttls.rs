//! Server-first protocols on shared entrypoints (`tcp.serverFirstTimeout`) and STARTTLS
//! routing by SNI for SMTP, IMAP, POP3 and MySQL, over real sockets.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::web::HttpBackend;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn ep(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A static configuration with one entrypoint carrying `tcp` settings (YAML, indented
/// under the entrypoint).
fn static_with_tcp(dir: &std::path::Path, name: &str, port: u16, tcp: &str) -> String {
    let base = static_config(dir, &[(name, port)], "");
    base.replacen(
        &format!("    address: \"127.0.0.1:{port}\"\n"),
        &format!("    address: \"127.0.0.1:{port}\"\n    tcp:\n{tcp}"),
        1,
    )
}

/// Whether nothing at all arrives on `s` within `within` (the connection stays open).
async fn silent_for<S: tokio::io::AsyncRead + Unpin>(s: &mut S, within: Duration) -> bool {
    let mut byte = [0u8; 1];
    tokio::time::timeout(within, s.read(&mut byte))
        .await
        .is_err()
}

/// With `tcp.serverFirstTimeout`, a client that stays silent reaches the non-TLS
/// `HostSNI(`*`)` router (and its backend's banner) although TLS TCP routers and HTTPS
/// routers share the entrypoint; clients that speak first are routed as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_client_gets_the_banner_on_a_shared_entrypoint() {
    let banner = Backend::echo(Some("220 smtp.test ESMTP ready")).await;
    let cert = TestCert::new(&["tcp.test"]);
    let tls_backend = Backend::tls("tcp", &cert).await;
    let web = HttpBackend::start("web").await;
    let web_cert = TestCert::new(&["web.test"]);
    let port = free_port();
    let dir = temp_dir("server-first");
    let (c, k) = web_cert.write(&dir, "web");
    let dynamic = format!(
        r#"
tcp:
  routers:
    banner:
      rule: "HostSNI(`*`)"
      service: banner
    tls:
      rule: "HostSNI(`tcp.test`)"
      service: tls
      tls: {{passthrough: true}}
  services:
    banner: {{loadBalancer: {{servers: [{{address: "{}"}}]}}}}
    tls: {{loadBalancer: {{servers: [{{address: "{}"}}]}}}}
http:
  routers:
    web:
      rule: "Host(`web.test`)"
      service: web
      tls: {{}}
  services:
    web: {{loadBalancer: {{servers: [{{url: "{}"}}]}}}}
tls:
  certificates: [{{certFile: "{}", keyFile: "{}"}}]
"#,
        banner.addr,
        tls_backend.addr,
        web.url(),
        c.display(),
        k.display()
    );
    let _r = Router::start(
        &dir,
        &static_with_tcp(&dir, "shared", port, "      serverFirstTimeout: 300ms\n"),
        &dynamic,
        &[port],
    );

    let mut silent = TcpStream::connect(ep(port)).await.unwrap();
    assert_eq!(
        read_line(&mut silent).await.unwrap(),
        "220 smtp.test ESMTP ready"
    );
    assert_eq!(
        echo_roundtrip(&mut silent, "EHLO me").await.unwrap(),
        "EHLO me"
    );

    let mut t = tls_connect(ep(port), "tcp.test", &[&cert], &[])
        .await
        .unwrap();
    assert_eq!(read_line(&mut t).await.unwrap(), "hello from tcp alpn=-");

    let mut h = tls_connect(ep(port), "web.test", &[&web_cert], &["http/1.1"])
        .await
        .unwrap();
    h.write_all(b"GET / HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let status = read_line(&mut h).await.unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(
        banner.accepted(),
        1,
        "only the silent client reached the banner"
    );
}

/// Without `tcp.serverFirstTimeout` a shared entrypoint waits for the client's first
/// bytes, as Traefik does: a silent client gets no banner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_server_first_timeout_a_shared_entrypoint_waits_for_the_client() {
    let banner = Backend::echo(Some("220 smtp.test ESMTP ready")).await;
    let cert = TestCert::new(&["tcp.test"]);
    let tls_backend = Backend::tls("tcp", &cert).await;
    let port = free_port();
    let dir = temp_dir("server-first-unset");
    let dynamic = format!(
        r#"
tcp:
  routers:
    banner:
      rule: "HostSNI(`*`)"
      service: banner
    tls:
      rule: "HostSNI(`tcp.test`)"
      service: tls
      tls: {{passthrough: true}}
  services:
    banner: {{loadBalancer: {{servers: [{{address: "{}"}}]}}}}
    tls: {{loadBalancer: {{servers: [{{address: "{}"}}]}}}}
"#,
        banner.addr, tls_backend.addr,
    );
    let _r = Router::start(
        &dir,
        &static_config(&dir, &[("shared", port)], ""),
        &dynamic,
        &[port],
    );
    let mut silent = TcpStream::connect(ep(port)).await.unwrap();
    assert!(silent_for(&mut silent, Duration::from_millis(800)).await);
    assert_eq!(banner.accepted(), 0);
    // Once it speaks, it reaches the non-TLS router: the banner, then the echo.
    silent.write_all(b"hello\n").await.unwrap();
    assert_eq!(
        read_line(&mut silent).await.unwrap(),
        "220 smtp.test ESMTP ready"
    );
    assert_eq!(read_line(&mut silent).await.unwrap(), "hello");
}
