//! ACME certificates end to end: the real binary obtains certificates from a real ACME CA
//! on loopback (Debian's `pebble`), answering HTTP-01 and TLS-ALPN-01 on its own
//! entrypoints, serves them at once, keeps them in its storage file, reuses them after a
//! restart, renews one that is due, and keeps serving when the CA fails.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, ServerName};
use support::pebble::Pebble;
use support::web::HttpBackend;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Ordering and validating take a few seconds with pebble; a generous bound for CI.
const ISSUE_WAIT: Duration = Duration::from_secs(60);

fn wait_log_within(router: &Router, needle: &str, within: Duration) {
    let start = Instant::now();
    while start.elapsed() < within {
        if router.log().contains(needle) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("log never contained {needle:?}:\n{}", router.log());
}

/// The static configuration: `web` (HTTP-01) and `websecure` (TLS-ALPN-01) entrypoints and
/// one resolver `pebble` with the challenges and keys in `settings` (YAML under `acme`),
/// trusting pebble's HTTPS certificate through `caCertificates`.
fn static_yaml(dir: &Path, web: u16, websecure: u16, pebble: &Pebble, settings: &str) -> String {
    let trust = format!(
        "      caCertificates: [\"{}\"]\n",
        pebble.tls_ca_file.display()
    );
    static_without_trust(dir, web, websecure, pebble, &format!("{trust}{settings}"))
}

/// [`static_yaml`] without `caCertificates` (for `LEGO_CA_CERTIFICATES`).
fn static_without_trust(
    dir: &Path,
    web: u16,
    websecure: u16,
    pebble: &Pebble,
    settings: &str,
) -> String {
    static_config(
        dir,
        &[("web", web), ("websecure", websecure)],
        &format!(
            r#"certificatesResolvers:
  pebble:
    acme:
      email: ops@sallyport.test
      caServer: "{}"
      storage: "{}"
{settings}"#,
            pebble.directory,
            dir.join("acme.json").display(),
        ),
    )
}

/// A TLS handshake with `sni` verified against `config`; the leaf certificate and stream.
async fn handshake(
    port: u16,
    sni: &str,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<(
    CertificateDer<'static>,
    tokio_rustls::client::TlsStream<TcpStream>,
)> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let name = ServerName::try_from(sni.to_owned()).map_err(std::io::Error::other)?;
    let tls = tokio::time::timeout(
        WAIT,
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
    )
    .await??;
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first().cloned())
        .ok_or_else(|| std::io::Error::other("no certificate"))?;
    Ok((leaf, tls))
}

/// The status line of a GET for `host` over `tls`.
async fn get(tls: &mut tokio_rustls::client::TlsStream<TcpStream>, host: &str) -> String {
    tls.write_all(
        format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("request");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, tls.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    answer.lines().next().unwrap_or("").to_owned()
}

fn storage_text(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("acme.json")).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn http01_certificate_is_obtained_served_stored_and_reused_after_a_restart() {
    if !Pebble::available() {
        return;
    }
    let dir = temp_dir("acme-http01");
    let (web, websecure) = (free_port(), free_port());
    let pebble = Pebble::start(&dir, web, websecure);
    let backend = HttpBackend::start("site").await;
    let static_yaml = static_yaml(
        &dir,
        web,
        websecure,
        &pebble,
        "      keyType: EC256\n      httpChallenge:\n        entryPoint: web\n",
    );
    // A catch-all plaintext router with the highest user priority: the challenge answer
    // must still come first.
    let dynamic = format!(
        r#"
http:
  routers:
    site:
      rule: "Host(`site.acme.test`)"
      entryPoints: [websecure]
      service: site
      tls: {{certResolver: pebble}}
    greedy:
      rule: "PathPrefix(`/`)"
      entryPoints: [web]
      priority: 9000000000000000000
      service: site
  services:
    site:
      loadBalancer:
        servers: [{{url: "{}"}}]
"#,
        backend.url()
    );
    let mut router = Router::start(&dir, &static_yaml, &dynamic, &[web, websecure]);
    wait_log_within(&router, "ACME certificate obtained", ISSUE_WAIT);
    assert!(
        router.log().contains("challenge=Http01"),
        "{}",
        router.log()
    );

    let trusting_pebble = pebble.client(&["http/1.1"]).await;
    let (issued, mut tls) = handshake(websecure, "site.acme.test", trusting_pebble.clone())
        .await
        .expect("the ACME certificate verifies against pebble's root");
    assert!(get(&mut tls, "site.acme.test").await.contains("200"));
    // The storage file holds it, private to its owner.
    let stored = storage_text(&dir);
    assert!(
        stored.contains("site.acme.test") && stored.contains("\"Account\""),
        "{stored}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("acme.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // A restart serves the stored certificate at once and orders nothing.
    router.signal("TERM");
    router.wait_exit(WAIT).expect("router stopped");
    drop(router);
    std::fs::write(dir.join("router.log"), "").unwrap();
    let router = Router::start_on(
        Path::new("."),
        &dir.join("static.yml"),
        &dir,
        &[web, websecure],
    );
    router.wait_log("ACME certificates loaded from storage");
    let (again, _) = handshake(websecure, "site.acme.test", trusting_pebble)
        .await
        .expect("the stored certificate is served after a restart");
    assert_eq!(again, issued, "the same certificate, not a new one");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        router.count_log("obtaining an ACME certificate"),
        0,
        "{}",
        router.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_alpn01_serves_tcp_and_http_routers_and_a_new_router_gets_its_certificate_live() {
    if !Pebble::available() {
        return;
    }
    let dir = temp_dir("acme-tlsalpn");
    let (web, websecure) = (free_port(), free_port());
    let pebble = Pebble::start(&dir, web, websecure);
    // Pebble's HTTPS certificate is trusted the way lego users do it, by environment.
    let static_yaml = static_without_trust(
        &dir,
        web,
        websecure,
        &pebble,
        "      keyType: EC384\n      tlsChallenge: {}\n",
    );
    let dynamic = r#"
tcp:
  routers:
    echo:
      rule: "HostSNI(`tcp.acme.test`)"
      entryPoints: [websecure]
      service: echo@internal
      tls: {certResolver: pebble}
"#;
    std::fs::write(dir.join("static.yml"), &static_yaml).unwrap();
    std::fs::write(dir.join("dynamic.yml"), dynamic).unwrap();
    let ca = pebble.tls_ca_file.display().to_string();
    let router = Router::start_with_env(
        Path::new("."),
        &dir.join("static.yml"),
        &dir,
        &[web, websecure],
        &[("LEGO_CA_CERTIFICATES", &ca)],
    );
    wait_log_within(&router, "ACME certificate obtained", ISSUE_WAIT);
    assert!(
        router.log().contains("challenge=TlsAlpn01"),
        "{}",
        router.log()
    );
    let trusting_pebble = pebble.client(&[]).await;
    let (_, mut tls) = handshake(websecure, "tcp.acme.test", trusting_pebble.clone())
        .await
        .expect("the TCP router serves its ACME certificate");
    assert_eq!(
        echo_roundtrip(&mut tls, "ping").await.expect("echo"),
        "ping"
    );

    // A router added by a reload: `tls.domains` names the certificate (main and SAN); it is
    // obtained and served without a restart.
    router.rewrite_dynamic(&format!(
        "{dynamic}    more:\n      rule: \"HostSNI(`x.acme.test`) || HostSNI(`y.acme.test`)\"\n      entryPoints: [websecure]\n      service: echo@internal\n      tls:\n        certResolver: pebble\n        domains: [{{main: x.acme.test, sans: [y.acme.test]}}]\n"
    ));
    let start = Instant::now();
    while router.count_log("ACME certificate obtained") < 2 {
        assert!(start.elapsed() < ISSUE_WAIT, "{}", router.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    router.wait_log("trigger=Certificates");
    let (leaf, mut tls) = handshake(websecure, "y.acme.test", trusting_pebble)
        .await
        .expect("the SAN of the new certificate verifies");
    assert_eq!(
        echo_roundtrip(&mut tls, "pong").await.expect("echo"),
        "pong"
    );
    let (_, parsed) = x509_parser::parse_x509_certificate(&leaf).expect("leaf");
    let names: Vec<String> = parsed
        .subject_alternative_name()
        .expect("SAN")
        .expect("SAN")
        .value
        .general_names
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(names, ["DNSName(x.acme.test)", "DNSName(y.acme.test)"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stored_certificate_due_for_renewal_is_renewed_and_swapped_live() {
    if !Pebble::available() {
        return;
    }
    let dir = temp_dir("acme-renew");
    let (web, websecure) = (free_port(), free_port());
    let pebble = Pebble::start(&dir, web, websecure);
    // A certificate that expires in two days, stored as Traefik would: with the default
    // certificatesDuration (90 days), it is inside the 30-day renewal window.
    let old = {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["renew.acme.test".to_owned()]).unwrap();
        let now = std::time::SystemTime::now();
        params.not_before = (now - Duration::from_secs(3600)).into();
        params.not_after = (now + Duration::from_secs(2 * 86400)).into();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().clone())
    };
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let storage = serde_json::json!({"pebble": {"Account": null, "Certificates": [
        {"domain": {"main": "renew.acme.test"}, "certificate": b64(&old.0), "key": b64(&old.1), "Store": "default"}
    ]}});
    std::fs::write(dir.join("acme.json"), storage.to_string()).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.join("acme.json"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
    }
    let static_yaml = static_yaml(
        &dir,
        web,
        websecure,
        &pebble,
        "      keyType: RSA2048\n      tlsChallenge: {}\n",
    );
    let dynamic = r#"
tcp:
  routers:
    renew:
      rule: "HostSNI(`renew.acme.test`)"
      entryPoints: [websecure]
      service: echo@internal
      tls: {certResolver: pebble}
"#;
    let router = Router::start(&dir, &static_yaml, dynamic, &[web, websecure]);
    router.wait_log("ACME certificates loaded from storage");
    wait_log_within(&router, "ACME certificate obtained", ISSUE_WAIT);
    assert!(router.log().contains("renewing=true"), "{}", router.log());
    router.wait_log("trigger=Certificates");
    let (leaf, _) = handshake(websecure, "renew.acme.test", pebble.client(&[]).await)
        .await
        .expect("the renewed certificate verifies against pebble's root");
    assert_ne!(leaf, old.2);
    let (_, parsed) = x509_parser::parse_x509_certificate(&leaf).expect("leaf");
    assert_eq!(
        parsed.public_key().algorithm.algorithm.to_id_string(),
        "1.2.840.113549.1.1.1",
        "keyType RSA2048 gives an RSA key"
    );
    // The storage file keeps one certificate for the domain: the new one.
    let stored: serde_json::Value = serde_json::from_str(&storage_text(&dir)).unwrap();
    let certs = stored["pebble"]["Certificates"].as_array().unwrap();
    assert_eq!(certs.len(), 1, "{stored}");
    assert_ne!(certs[0]["certificate"].as_str().unwrap(), b64(&old.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ca_that_fails_or_never_answers_is_retried_later_and_serving_goes_on() {
    let dir = temp_dir("acme-failing");
    let (web, websecure) = (free_port(), free_port());
    // One CA accepts connections and never answers; the other answers every request
    // with a 503 problem document.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            open.push(s);
        }
    });
    let failing = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let failing_addr = failing.local_addr().unwrap();
    let answering = tokio::spawn(async move {
        while let Ok((mut s, _)) = failing.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let body = r#"{"type":"urn:ietf:params:acme:error:serverInternal","detail":"CA is down for maintenance","status":503}"#;
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/problem+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
    // A third resolver's storage is not ACME storage: it must be left as it is.
    std::fs::write(dir.join("broken.json"), "{not json").unwrap();
    let site = TestCert::new(&["file.test"]);
    let (cert, key) = site.write(&dir, "file");
    let static_yaml = static_config(
        &dir,
        &[("web", web), ("websecure", websecure)],
        &format!(
            r#"certificatesResolvers:
  silent:
    acme:
      caServer: "http://{silent_addr}/dir"
      storage: "{dir}/silent.json"
      clientTimeout: 1s
      clientResponseHeaderTimeout: 1s
      tlsChallenge: {{}}
  failing:
    acme:
      caServer: "http://{failing_addr}/dir"
      storage: "{dir}/failing.json"
      httpChallenge: {{entryPoint: web}}
  broken:
    acme:
      caServer: "http://{failing_addr}/dir"
      storage: "{dir}/broken.json"
      tlsChallenge: {{}}
"#,
            dir = dir.display()
        ),
    );
    let dynamic = format!(
        r#"
tcp:
  routers:
    a:
      rule: "HostSNI(`a.acme.test`)"
      entryPoints: [websecure]
      service: echo@internal
      tls: {{certResolver: silent}}
    b:
      rule: "HostSNI(`b.acme.test`)"
      entryPoints: [websecure]
      service: echo@internal
      tls: {{certResolver: failing}}
    c:
      rule: "HostSNI(`c.acme.test`)"
      entryPoints: [websecure]
      service: echo@internal
      tls: {{certResolver: broken}}
    d:
      rule: "HostSNI(`d.acme.test`)"
      entryPoints: [websecure]
      service: echo@internal
      tls: {{certResolver: nowhere}}
    wild:
      rule: "HostSNI(`*.wild.acme.test`)"
      entryPoints: [websecure]
      service: echo@internal
      tls: {{certResolver: silent}}
    file:
      rule: "HostSNI(`file.test`)"
      entryPoints: [websecure]
      service: echo@internal
      tls: {{}}
tls:
  certificates: [{{certFile: "{}", keyFile: "{}"}}]
"#,
        cert.display(),
        key.display()
    );
    let router = Router::start(&dir, &static_yaml, &dynamic, &[web, websecure]);
    router.wait_log("certificate resolver not started");
    router.wait_log("router uses a nonexistent certificate resolver");
    router.wait_log("wildcard certificates need the DNS-01 challenge");
    wait_log_within(&router, "did not answer within 1s", Duration::from_secs(15));
    wait_log_within(
        &router,
        "CA is down for maintenance",
        Duration::from_secs(15),
    );
    let log = router.log();
    assert!(log.contains("retry_in=30s"), "{log}");
    assert!(log.contains("broken.json"), "{log}");
    // Meanwhile every router serves: the ACME ones with the default certificate.
    let (_, mut tls) = handshake(websecure, "file.test", client_config(&[&site], &[]))
        .await
        .expect("the file certificate is served");
    assert_eq!(echo_roundtrip(&mut tls, "ok").await.expect("echo"), "ok");
    let insecure = insecure_client();
    for name in ["a.acme.test", "b.acme.test", "c.acme.test", "d.acme.test"] {
        let (leaf, mut tls) = handshake(websecure, name, insecure.clone())
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let (_, parsed) = x509_parser::parse_x509_certificate(&leaf).unwrap();
        assert!(
            parsed
                .subject()
                .to_string()
                .contains("SALLYPORT DEFAULT CERT")
        );
        assert_eq!(echo_roundtrip(&mut tls, name).await.expect("echo"), name);
    }
    // The unreadable storage file was not replaced.
    assert_eq!(
        std::fs::read_to_string(dir.join("broken.json")).unwrap(),
        "{not json"
    );
    // No second attempt before the backoff: one failure each so far.
    assert_eq!(
        router.count_log("unable to obtain ACME certificate"),
        2,
        "{}",
        router.log()
    );
    held.abort();
    answering.abort();
}

/// A client that accepts any certificate, to see which one is served.
fn insecure_client() -> Arc<rustls::ClientConfig> {
    #[derive(Debug)]
    struct AnyCertificate;
    impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate))
            .with_no_client_auth(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn acme_tls_alpn_handshakes_are_answered_before_routing_unless_the_entrypoint_allows_bypass()
{
    let dir = temp_dir("acme-bypass");
    let (guarded, bypass) = (free_port(), free_port());
    let backend_cert = TestCert::new(&["x.test"]);
    let backend = Backend::tls("backend", &backend_cert).await;
    // The resolver's CA is never reached (nothing asks it for a certificate): the resolver is
    // there for its tlsChallenge, which makes entrypoints answer `acme-tls/1` themselves.
    let mut static_yaml = static_config(
        &dir,
        &[("guarded", guarded), ("bypass", bypass)],
        r#"certificatesResolvers:
  r:
    acme:
      caServer: "http://127.0.0.1:9/dir"
      storage: "STORAGE"
      tlsChallenge: {}
"#,
    )
    .replace("STORAGE", &dir.join("acme.json").display().to_string());
    static_yaml = static_yaml.replace(
        &format!("    address: \"127.0.0.1:{bypass}\"\n"),
        &format!("    address: \"127.0.0.1:{bypass}\"\n    allowACMEByPass: true\n"),
    );
    let dynamic = format!(
        r#"
tcp:
  routers:
    pass:
      rule: "HostSNI(`x.test`)"
      service: pass
      tls: {{passthrough: true}}
  services:
    pass:
      loadBalancer:
        servers: [{{address: "{}"}}]
"#,
        backend.addr
    );
    let router = Router::start(&dir, &static_yaml, &dynamic, &[guarded, bypass]);
    let acme_client = {
        let mut config = Arc::unwrap_or_clone(insecure_client());
        config.alpn_protocols = vec![b"acme-tls/1".to_vec()];
        Arc::new(config)
    };
    // Guarded: the router answers, and with no challenge in progress for x.test the
    // handshake fails; the backend never sees the connection.
    assert!(
        handshake(guarded, "x.test", acme_client.clone())
            .await
            .is_err()
    );
    router.wait_log("ACME TLS-ALPN-01 handshake failed");
    assert_eq!(backend.accepted(), 0);
    // Bypass: the connection is routed to the passthrough backend like any other (which
    // then refuses the ALPN it does not speak).
    let _ = handshake(bypass, "x.test", acme_client).await;
    let start = Instant::now();
    while backend.accepted() == 0 {
        assert!(
            start.elapsed() < WAIT,
            "the backend never got the bypassed connection"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Other ALPNs on the guarded entrypoint are routed as usual.
    let (leaf, _) = handshake(guarded, "x.test", client_config(&[&backend_cert], &["h2"]))
        .await
        .expect("routed to the backend");
    assert_eq!(leaf, backend_cert.cert_der);
}
