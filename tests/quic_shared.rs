//! One UDP port for everything: QUIC passed through by SNI to two real QUIC servers with
//! their own certificates, HTTP/3 terminated by the router for a third name, and plain
//! datagrams relayed to a UDP router — on the UDP side of a TCP entrypoint with `http3`, and
//! on a UDP entrypoint with `http3`. Real quinn clients and servers, the real binary.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use http::StatusCode;
use support::quic::{
    H3Client, QuicNamed, padded_alpn, quic_ask, quic_client, quic_client_with, quic_connect,
};
use support::udp::{UdpEcho, UdpNat, free_udp_port, udp_ask, udp_backend, udp_client};
use support::web::HttpBackend;
use support::*;

/// The backends behind one shared port, and the router.
struct Shared {
    router: Router,
    port: u16,
    site: TestCert,
    alpha: TestCert,
    beta: TestCert,
    backend: HttpBackend,
    /// The dynamic configuration written at start.
    dynamic: String,
    _quic: (QuicNamed, QuicNamed),
    _echo: UdpEcho,
}

impl Shared {
    /// `entrypoint_yaml` is the static definition of the entrypoint `edge` on `port`.
    async fn start(tag: &str, port: u16, entrypoint_yaml: &str) -> Shared {
        let dir = temp_dir(tag);
        let site = TestCert::new(&["site.test"]);
        let alpha = TestCert::new(&["alpha.test"]);
        let beta = TestCert::new(&["beta.test"]);
        let quic = (
            QuicNamed::start("alpha", &alpha),
            QuicNamed::start("beta", &beta),
        );
        let echo = UdpEcho::start("plain").await;
        let backend = HttpBackend::start("app").await;
        let (crt, key) = site.write(&dir, "site");
        let static_yaml = format!(
            "entryPoints:\n  edge:\n{entrypoint_yaml}providers:\n  providersThrottleDuration: 100ms\n  file:\n    filename: \"{}\"\nlog:\n  level: DEBUG\n",
            dir.join("dynamic.yml").display()
        );
        let dynamic = format!(
            r#"http:
  routers:
    site:
      rule: "Host(`site.test`)"
      entryPoints: [edge]
      service: app
      tls: {{}}
  services:
    app:
      loadBalancer:
        servers:
          - url: "{backend}"
udp:
  routers:
    alpha:
      entryPoints: [edge]
      rule: "HostSNI(`alpha.test`)"
      tls: {{passthrough: true}}
      service: alpha
    beta:
      entryPoints: [edge]
      rule: "HostSNI(`beta.test`)"
      tls: {{passthrough: true}}
      service: beta
    plain:
      entryPoints: [edge]
      service: plain
  services:
    alpha:
      loadBalancer:
        servers: [{{address: "{alpha}"}}]
    beta:
      loadBalancer:
        servers: [{{address: "{beta}"}}]
    plain:
      loadBalancer:
        servers: [{{address: "{plain}"}}]
tls:
  certificates:
    - certFile: "{crt}"
      keyFile: "{key}"
"#,
            backend = backend.url(),
            alpha = quic.0.addr,
            beta = quic.1.addr,
            plain = echo.addr,
            crt = crt.display(),
            key = key.display(),
        );
        let router = Router::start(&dir, &static_yaml, &dynamic, &[]);
        let dynamic = dynamic.clone();
        router.wait_log("listening (HTTP/3)");
        router.wait_log("listening (UDP)");
        Shared {
            router,
            port,
            site,
            alpha,
            beta,
            backend,
            dynamic,
            _quic: quic,
            _echo: echo,
        }
    }

    /// On a TCP entrypoint with `http3` (and so its UDP side).
    async fn on_tcp(tag: &str) -> Shared {
        let port = free_udp_port();
        let entrypoint = format!("    address: \"127.0.0.1:{port}\"\n    http3: {{}}\n");
        Shared::start(tag, port, &entrypoint).await
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Proves all three kinds of traffic on the one port.
    async fn check_all(&self) {
        // QUIC passed through: each client reaches the server of its SNI, whose certificate
        // (not the router's) it verifies.
        for (sni, cert, name) in [
            ("alpha.test", &self.alpha, "alpha"),
            ("beta.test", &self.beta, "beta"),
        ] {
            let client = quic_client(cert, &["sp-test"]);
            let connection = quic_connect(&client, self.addr(), sni)
                .await
                .unwrap_or_else(|e| panic!("{sni}: {e}\n{}", self.router.log()));
            let answer = quic_ask(&connection, b"ping").await.expect("answer");
            assert_eq!(answer, format!("{name}:ping").into_bytes());
        }
        // A passed-through connection follows its client through a NAT rebinding: the
        // router recognizes the backend's connection ID from the new address.
        let nat = UdpNat::start(self.addr()).await;
        let client = quic_client(&self.alpha, &["sp-test"]);
        let connection = quic_connect(&client, nat.addr, "alpha.test")
            .await
            .unwrap_or_else(|e| panic!("through the NAT: {e}\n{}", self.router.log()));
        assert_eq!(
            quic_ask(&connection, b"before").await.expect("answer"),
            b"alpha:before"
        );
        nat.rebind().await;
        let answer = quic_ask(&connection, b"after")
            .await
            .unwrap_or_else(|e| panic!("after the NAT rebinding: {e}\n{}", self.router.log()));
        assert_eq!(answer, b"alpha:after");
        assert!(
            self.router
                .log()
                .contains("QUIC session follows its client to a new address")
        );
        // A ClientHello spread over two Initial packets is read whole before the choice.
        let alpn = padded_alpn("sp-test");
        let alpn: Vec<&str> = alpn.iter().map(String::as_str).collect();
        let client = quic_client(&self.beta, &alpn);
        let connection = quic_connect(&client, self.addr(), "beta.test")
            .await
            .unwrap_or_else(|e| panic!("big hello: {e}\n{}", self.router.log()));
        assert_eq!(
            quic_ask(&connection, b"big").await.expect("answer"),
            b"beta:big"
        );

        // HTTP/3 terminated by the router for the name no passthrough router takes.
        let mut h3 = H3Client::connect(self.addr(), "site.test", &self.site, &[])
            .await
            .unwrap_or_else(|e| panic!("HTTP/3: {e}\n{}", self.router.log()));
        let (status, body) = h3.get("site.test", "/over-h3").await.expect("response");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(&body[..], b"app /over-h3");
        // The connection follows its connection IDs, not the client's address: after a
        // rebinding, requests go on.
        h3.rebind();
        let (status, body) = h3
            .get("site.test", "/after-rebind")
            .await
            .unwrap_or_else(|e| panic!("after rebinding: {e}\n{}", self.router.log()));
        assert_eq!(status, StatusCode::OK);
        assert_eq!(&body[..], b"app /after-rebind");
        // A big hello for the router's own name is served as well.
        let alpn = padded_alpn("h3");
        let alpn: Vec<&str> = alpn.iter().map(String::as_str).collect();
        let mut big = H3Client::connect(self.addr(), "site.test", &self.site, &alpn)
            .await
            .unwrap_or_else(|e| panic!("HTTP/3 with a big hello: {e}\n{}", self.router.log()));
        let (status, _) = big.get("site.test", "/big-hello").await.expect("response");
        assert_eq!(status, StatusCode::OK);

        // Plain datagrams go to the UDP router without a rule.
        let plain = udp_client("127.0.0.1", self.port).await;
        assert_eq!(udp_backend(&plain).await, "plain");
        assert_eq!(
            udp_ask(&plain, b"hello").await.as_deref(),
            Some(&b"plain:hello"[..])
        );

        // The backends saw what they should: two HTTP/3 requests and one more.
        assert_eq!(self.backend.seen().len(), 3);
    }
}

#[tokio::test]
async fn one_tcp_entrypoint_with_http3_shares_its_udp_port_with_passthrough_and_udp_routers() {
    let shared = Shared::on_tcp("quic-shared-tcp").await;
    shared.check_all().await;
}

#[tokio::test]
async fn a_udp_entrypoint_with_http3_terminates_it_beside_passthrough_and_udp_routers() {
    let port = free_udp_port();
    let shared = Shared::start(
        "quic-shared-udp",
        port,
        &format!("    address: \"127.0.0.1:{port}/udp\"\n    http3: {{}}\n"),
    )
    .await;
    shared.check_all().await;
}

#[tokio::test]
async fn quic_for_an_unknown_name_with_no_http3_router_for_it_fails_its_handshake_cleanly() {
    let shared = Shared::on_tcp("quic-shared-unknown").await;
    // No passthrough router takes `other.test`: the router's own endpoint answers with its
    // certificate, which this client (trusting only alpha's CA) refuses.
    let client = quic_client(&shared.alpha, &["sp-test"]);
    let refused = quic_connect(&client, shared.addr(), "other.test").await;
    assert!(refused.is_err(), "the handshake must fail");
    // The port still serves everyone else.
    shared.check_all().await;
}

#[tokio::test]
async fn past_64_handshakes_in_progress_new_clients_must_answer_a_retry_first() {
    let shared = Shared::on_tcp("quic-shared-retry").await;
    // 80 clients send their first Initial (each a real quinn client's, with its own
    // connection ID) and never go on: each leaves a handshake in progress on the router.
    let mut clients = Vec::new();
    for _ in 0..80 {
        let initial = first_initial(&shared.site).await;
        let client = udp_client("127.0.0.1", shared.port).await;
        client.send(&initial).await.expect("send");
        clients.push(client);
        // In order, so the router sees the handshakes pile up one by one.
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let (mut handshakes, mut retries) = (0, 0);
    for (i, client) in clients.iter().enumerate() {
        let mut buf = vec![0u8; 2048];
        let len = tokio::time::timeout(WAIT, client.recv(&mut buf))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no answer for client {i} ({handshakes} handshakes, {retries} retries)\n{}",
                    shared.router.log()
                )
            })
            .expect("receive");
        // Long header, version 1; the type bits tell Initial (0) from Retry (3).
        assert!(len > 5 && buf[0] & 0x80 != 0 && buf[1..5] == [0, 0, 0, 1]);
        match (buf[0] >> 4) & 0x3 {
            0 => handshakes += 1,
            3 => retries += 1,
            other => panic!("unexpected packet type {other}"),
        }
    }
    assert_eq!((handshakes, retries), (64, 16), "{}", shared.router.log());
    // Clients that complete their handshakes are not affected: quinn answers the Retry.
    shared.check_all().await;
}

/// The first datagram a quinn client (SNI `site.test`, ALPN h3) sends, caught on a plain
/// socket; the client is dropped before it could go on. The client offers X25519 only, so
/// that its whole ClientHello fits in this one datagram (a post-quantum key share would
/// spill into a second one, and the server would wait for it before answering).
async fn first_initial(ca: &TestCert) -> Vec<u8> {
    let catcher = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let classic = rustls::crypto::CryptoProvider {
        kx_groups: vec![rustls::crypto::aws_lc_rs::kx_group::X25519],
        ..rustls::crypto::aws_lc_rs::default_provider()
    };
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der.clone()).expect("root");
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(classic))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let client = quic_client_with(Arc::new(tls));
    let _connecting = client
        .connect(catcher.local_addr().expect("address"), "site.test")
        .expect("connect");
    let mut buf = vec![0u8; 2048];
    let len = tokio::time::timeout(WAIT, catcher.recv(&mut buf))
        .await
        .expect("the client's Initial")
        .expect("receive");
    buf.truncate(len);
    buf
}

#[tokio::test]
async fn a_quiet_passed_through_connection_outlives_the_udp_timeout() {
    let port = free_udp_port();
    let shared = Shared::start(
        "quic-shared-quiet",
        port,
        &format!(
            "    address: \"127.0.0.1:{port}\"\n    http3: {{}}\n    udp:\n      timeout: 200ms\n"
        ),
    )
    .await;
    let client = quic_client(&shared.alpha, &["sp-test"]);
    let connection = quic_connect(&client, shared.addr(), "alpha.test")
        .await
        .expect("handshake");
    assert_eq!(
        quic_ask(&connection, b"one").await.expect("answer"),
        b"alpha:one"
    );
    // Quiet for three udp.timeouts: a plain session would be gone, a QUIC one is kept.
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let answer = quic_ask(&connection, b"two")
        .await
        .unwrap_or_else(|e| panic!("after a quiet spell: {e}\n{}", shared.router.log()));
    assert_eq!(answer, b"alpha:two");
    assert_eq!(
        shared.router.count_log("UDP session opened"),
        1,
        "the first session carried both exchanges"
    );
}

#[tokio::test]
async fn a_reload_changes_where_new_quic_flows_go_and_leaves_open_ones_alone() {
    let shared = Shared::on_tcp("quic-shared-reload").await;
    let to_alpha = quic_client(&shared.alpha, &["sp-test"]);
    let open = quic_connect(&to_alpha, shared.addr(), "alpha.test")
        .await
        .expect("handshake");
    assert_eq!(quic_ask(&open, b"one").await.expect("answer"), b"alpha:one");
    // alpha.test is no longer passed through: new flows for it reach the router's own
    // HTTP/3 endpoint, which refuses the client's ALPN.
    shared.router.rewrite_dynamic(
        &shared
            .dynamic
            .replace("HostSNI(`alpha.test`)", "HostSNI(`gone.test`)"),
    );
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let fresh = quic_client(&shared.alpha, &["sp-test"]);
        if let Err(e) = quic_connect(&fresh, shared.addr(), "alpha.test").await {
            assert!(
                e.contains("known protocol"),
                "refused by the HTTP/3 endpoint: {e}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the reload never applied:\n{}",
            shared.router.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // The session opened before the reload keeps its backend.
    assert_eq!(quic_ask(&open, b"two").await.expect("answer"), b"alpha:two");
}
