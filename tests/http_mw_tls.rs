//! TLS client authentication and `passTLSClientCert` end to end: the real binary on
//! loopback, rustls clients presenting certificates from test CAs (or none), and backends
//! that report what they received.

mod support;

use ::http::StatusCode;
use support::mtls::{CertHeadersBackend, PRESENTED, Pki, Presented, connect, fetch};
use support::*;

/// A certificate's PEM body on one line: what `pem: true` forwards.
fn pem_body(cert: &TestCert) -> String {
    cert.cert_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_client_auth_type_admits_the_clients_traefik_admits() {
    let backend = CertHeadersBackend::start().await;
    let pki = Pki::new();
    let dir = temp_dir("mw-tls-client-auth");
    let port = free_port();
    let dynamic = pki.client_auth_site(
        &dir,
        "      middlewares: [pem]\n",
        &format!(
            "  middlewares:\n    pem:\n      passTLSClientCert: {{ pem: true }}\n  services:\n    s: {{ loadBalancer: {{ servers: [{{ url: \"{}\" }}] }} }}\n",
            backend.url()
        ),
    );
    let _router = Router::start(
        &dir,
        &static_config(&dir, &[("websecure", port)], ""),
        &dynamic,
        &[port],
    );

    // (type, [no certificate, wrong CA's, trusted CA's]): served, and the certificate the
    // server was told about.
    let good_b64 = pem_body(&pki.good);
    let wrong_b64 = pem_body(&pki.wrong);
    let expected: [(&str, [Option<&str>; 3]); 6] = [
        ("none", [Some("-"), Some("-"), Some("-")]),
        ("request", [Some("-"), Some(&wrong_b64), Some(&good_b64)]),
        ("requireany", [None, Some(&wrong_b64), Some(&good_b64)]),
        ("ifgiven", [Some("-"), None, Some(&good_b64)]),
        ("verify", [None, None, Some(&good_b64)]),
        ("cafilesonly", [None, None, Some(&good_b64)]),
    ];
    for (kind, outcomes) in expected {
        for (presented, want) in PRESENTED.into_iter().zip(outcomes) {
            let host = format!("{kind}.test");
            let got = fetch(port, &host, pki.client(presented), "/", &[]).await;
            match (want, got) {
                (Some(cert), Ok(answer)) => {
                    assert_eq!(answer.status, StatusCode::OK, "{kind} {presented:?}");
                    assert_eq!(
                        answer.header("x-seen-tls-client-cert"),
                        cert,
                        "{kind} {presented:?}"
                    );
                }
                (None, Err(_)) => {}
                (want, got) => {
                    panic!("{kind} with {presented:?}: wanted {want:?}, got {got:?}")
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_router_terminating_tls_requires_a_verified_client_certificate() {
    let echo = Backend::echo(None).await;
    let pki = Pki::new();
    let dir = temp_dir("mw-tls-tcp");
    let port = free_port();
    let dynamic = format!(
        r#"
tcp:
  routers:
    db:
      rule: "HostSNI(`db.test`)"
      service: db
      tls: {{ options: mtls }}
  services:
    db: {{ loadBalancer: {{ servers: [{{ address: "{addr}" }}] }} }}
tls:
{certificates}  options:
    mtls:
      clientAuth: {{ caFiles: ["{ca}"], clientAuthType: RequireAndVerifyClientCert }}
"#,
        addr = echo.addr,
        certificates = pki.certificates(&dir, &["db.test"]),
        ca = pki.good_ca_file(&dir),
    );
    let _router = Router::start(
        &dir,
        &static_config(&dir, &[("tcp", port)], ""),
        &dynamic,
        &[port],
    );

    for presented in PRESENTED {
        let relayed = async {
            let mut tls = connect(port, "db.test", pki.client(presented)).await?;
            echo_roundtrip(&mut tls, "ping").await
        }
        .await;
        match presented {
            Presented::GoodCa => assert_eq!(relayed.unwrap(), "ping"),
            other => assert!(
                relayed.is_err() || relayed.as_deref().is_ok_and(str::is_empty),
                "{other:?}: {relayed:?}"
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_ca_file_refuses_the_handshake_for_its_hosts_only() {
    let backend = CertHeadersBackend::start().await;
    let pki = Pki::new();
    let dir = temp_dir("mw-tls-missing-ca");
    let port = free_port();
    let missing = dir.join("gone-ca.pem");
    let dynamic = format!(
        r#"
http:
  routers:
    guarded:
      rule: "Host(`guarded.test`)"
      service: s
      tls: {{ options: mtls }}
    open:
      rule: "PathPrefix(`/`)"
      service: s
      tls: {{}}
  services:
    s: {{ loadBalancer: {{ servers: [{{ url: "{url}" }}] }} }}
tls:
{certificates}  options:
    mtls:
      clientAuth: {{ caFiles: ["{missing}"], clientAuthType: RequireAndVerifyClientCert }}
"#,
        url = backend.url(),
        certificates = pki.certificates(&dir, &["guarded.test", "open.test"]),
        missing = missing.display(),
    );
    let router = Router::start(
        &dir,
        &static_config(&dir, &[("websecure", port)], ""),
        &dynamic,
        &[port],
    );

    // Not even a trusted certificate gets through, and the catch-all router (default
    // option, no client authentication) never answers for the guarded name.
    for presented in [Presented::Nothing, Presented::GoodCa] {
        let got = fetch(port, "guarded.test", pki.client(presented), "/", &[]).await;
        assert!(got.is_err(), "{presented:?}: {got:?}");
    }
    let open = fetch(port, "open.test", pki.client(Presented::Nothing), "/", &[])
        .await
        .unwrap();
    assert_eq!(open.status, StatusCode::OK);
    router.wait_log("gone-ca.pem");
    router.wait_log("refusing TLS handshake");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_router_with_a_missing_ca_file_refuses_what_a_catch_all_would_take() {
    let guarded = Backend::echo(Some("guarded")).await;
    let catch_all = Backend::echo(Some("catch-all")).await;
    let pki = Pki::new();
    let dir = temp_dir("mw-tls-tcp-missing-ca");
    let port = free_port();
    let dynamic = format!(
        r#"
tcp:
  routers:
    db:
      rule: "HostSNI(`db.test`)"
      service: db
      tls: {{ options: mtls }}
    rest:
      rule: "HostSNI(`*`)"
      service: rest
      tls: {{}}
  services:
    db: {{ loadBalancer: {{ servers: [{{ address: "{guarded}" }}] }} }}
    rest: {{ loadBalancer: {{ servers: [{{ address: "{catch_all}" }}] }} }}
tls:
{certificates}  options:
    mtls:
      clientAuth: {{ caFiles: ["{missing}"] }}
"#,
        guarded = guarded.addr,
        catch_all = catch_all.addr,
        certificates = pki.certificates(&dir, &["db.test", "other.test"]),
        missing = dir.join("gone-ca.pem").display(),
    );
    let router = Router::start(
        &dir,
        &static_config(&dir, &[("tcp", port)], ""),
        &dynamic,
        &[port],
    );

    let refused = async {
        let mut tls = connect(port, "db.test", pki.client(Presented::GoodCa)).await?;
        read_line(&mut tls).await
    }
    .await;
    assert!(
        refused.is_err() || refused.as_deref().is_ok_and(str::is_empty),
        "{refused:?}"
    );
    assert_eq!((guarded.accepted(), catch_all.accepted()), (0, 0));
    let mut other = connect(port, "other.test", pki.client(Presented::Nothing))
        .await
        .unwrap();
    assert_eq!(read_line(&mut other).await.unwrap(), "catch-all");
    router.wait_log("refusing TLS handshake");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_tls_client_cert_forwards_the_handshake_certificate_and_drops_forged_values() {
    let backend = CertHeadersBackend::start().await;
    let pki = Pki::new();
    let dir = temp_dir("mw-tls-pass");
    let port = free_port();
    let dynamic = format!(
        r#"
http:
  routers:
    both:
      rule: "Host(`app.test`)"
      service: s
      middlewares: [pass]
      tls: {{ options: mtls }}
    info:
      rule: "Host(`app.test`) && Path(`/info`)"
      service: s
      middlewares: [info-only]
      tls: {{ options: mtls }}
  middlewares:
    pass:
      passTLSClientCert:
        pem: true
        info:
          sans: true
          subject: {{ commonName: true }}
          issuer: {{ commonName: true }}
    info-only:
      passTLSClientCert:
        info: {{ subject: {{ commonName: true }} }}
  services:
    s: {{ loadBalancer: {{ servers: [{{ url: "{url}" }}] }} }}
tls:
{certificates}  options:
    mtls:
      clientAuth: {{ caFiles: ["{ca}"], clientAuthType: VerifyClientCertIfGiven }}
"#,
        url = backend.url(),
        certificates = pki.certificates(&dir, &["app.test"]),
        ca = pki.good_ca_file(&dir),
    );
    // The entrypoint trusts every peer's forwarded headers: what removes a forged
    // certificate header is the middleware itself.
    let static_yaml = static_config(&dir, &[("websecure", port)], "").replace(
        &format!("    address: \"127.0.0.1:{port}\"\n"),
        &format!(
            "    address: \"127.0.0.1:{port}\"\n    forwardedHeaders:\n      insecure: true\n"
        ),
    );
    let _router = Router::start(&dir, &static_yaml, &dynamic, &[port]);
    let forged = [
        ("x-forwarded-tls-client-cert", "forged"),
        ("x-forwarded-tls-client-cert-info", "forged"),
    ];

    let answer = fetch(
        port,
        "app.test",
        pki.client(Presented::GoodCa),
        "/",
        &forged,
    )
    .await
    .unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("x-seen-tls-client-cert"), pem_body(&pki.good));
    assert_eq!(
        answer.header("x-seen-tls-client-cert-info"),
        "Subject%3D%22CN%3Dclient.test%22%3BIssuer%3D%22CN%3DClient+CA%22%3BSAN%3D%22client.test%22"
    );

    let info_only = fetch(
        port,
        "app.test",
        pki.client(Presented::GoodCa),
        "/info",
        &forged,
    )
    .await
    .unwrap();
    assert_eq!(info_only.header("x-seen-tls-client-cert"), "-");
    assert_eq!(
        info_only.header("x-seen-tls-client-cert-info"),
        "Subject%3D%22CN%3Dclient.test%22"
    );

    let anonymous = fetch(
        port,
        "app.test",
        pki.client(Presented::Nothing),
        "/",
        &forged,
    )
    .await
    .unwrap();
    assert_eq!(anonymous.status, StatusCode::OK);
    assert_eq!(anonymous.header("x-seen-tls-client-cert"), "-");
    assert_eq!(anonymous.header("x-seen-tls-client-cert-info"), "-");
}
