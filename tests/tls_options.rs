//! TLS options that shape the handshake, through the real binary with rustls clients that
//! offer exactly what each test needs: `cipherSuites` (TLS 1.2), `curvePreferences`,
//! `disableSessionTickets`, and session resumption across a configuration reload.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::client::Resumption;
use rustls::crypto::{CryptoProvider, aws_lc_rs};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, HandshakeKind, NamedGroup, ProtocolVersion};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Routers `<name>.test` for each TLS option of `options` (YAML under `tls.options`, 4-space
/// indent), all to an echo backend; the router answers on one TLS entrypoint.
struct Site {
    router: Router,
    port: u16,
    cert: TestCert,
    _echo: Backend,
    dynamic: String,
    dir: std::path::PathBuf,
}

impl Site {
    async fn start(tag: &str, options: &[(&str, &str)]) -> Site {
        let names: Vec<String> = options.iter().map(|(n, _)| format!("{n}.test")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let cert = TestCert::new(&names);
        let echo = Backend::echo(None).await;
        let port = free_port();
        let dir = temp_dir(tag);
        // Certificates in a directory of their own, which only the TLS file watch covers.
        let certs = dir.join("certs");
        std::fs::create_dir_all(&certs).expect("certs dir");
        let (c, k) = cert.write(&certs, "site");
        let mut routers = String::new();
        let mut option_yaml = String::new();
        for (name, yaml) in options {
            routers.push_str(&format!(
                "    {name}:\n      rule: \"HostSNI(`{name}.test`)\"\n      service: echo\n      tls: {{options: {name}}}\n"
            ));
            option_yaml.push_str(&format!("    {name}:\n{yaml}"));
        }
        let dynamic = format!(
            "tcp:\n  routers:\n{routers}  services:\n    echo: {{loadBalancer: {{servers: [{{address: \"{}\"}}]}}}}\ntls:\n  certificates: [{{certFile: \"{}\", keyFile: \"{}\"}}]\n  options:\n{option_yaml}",
            echo.addr,
            c.display(),
            k.display()
        );
        let router = Router::start(
            &dir,
            &static_config(&dir, &[("tls", port)], ""),
            &dynamic,
            &[port],
        );
        Site {
            router,
            port,
            cert,
            _echo: echo,
            dynamic,
            dir,
        }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Waits until `count` configurations have been applied (the start counts as one).
    async fn wait_reloads(&self, count: usize) {
        let deadline = std::time::Instant::now() + WAIT;
        while self.router.count_log("dynamic configuration applied") < count {
            assert!(
                std::time::Instant::now() < deadline,
                "the reload never applied"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

/// A TLS 1.3 client trusting the site that keeps its sessions from one connection to the
/// next, to resume.
fn resuming_client(site: &Site) -> Arc<ClientConfig> {
    let mut config = Arc::unwrap_or_clone(client(
        site,
        aws_lc_rs::default_provider(),
        &[&rustls::version::TLS13],
    ));
    config.resumption = Resumption::in_memory_sessions(64);
    Arc::new(config)
}

/// A client trusting the site's certificate, with `provider`'s suites and groups, TLS 1.2
/// and 1.3 (or `versions`).
fn client(
    site: &Site,
    provider: CryptoProvider,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(site.cert.cert_der.clone()).expect("root");
    let config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// What a handshake agreed on.
struct Agreed {
    /// The certificate the server presented.
    served: Option<rustls::pki_types::CertificateDer<'static>>,
    version: Option<ProtocolVersion>,
    suite: Option<&'static str>,
    group: Option<NamedGroup>,
    kind: Option<HandshakeKind>,
}

/// Handshakes with `sni`, proves the connection carries data, and says what was agreed.
async fn handshake(site: &Site, sni: &str, config: Arc<ClientConfig>) -> Result<Agreed, String> {
    let tcp = TcpStream::connect(site.addr())
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(sni.to_owned()).map_err(|e| e.to_string())?;
    let connecting = tokio_rustls::TlsConnector::from(config).connect(name, tcp);
    let mut tls = tokio::time::timeout(WAIT, connecting)
        .await
        .map_err(|_| "handshake timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    tls.write_all(b"ping\n").await.map_err(|e| e.to_string())?;
    let mut answer = [0u8; 5];
    tokio::time::timeout(WAIT, tls.read_exact(&mut answer))
        .await
        .map_err(|_| "no echo in time".to_owned())?
        .map_err(|e| e.to_string())?;
    let (_, connection) = tls.get_ref();
    Ok(Agreed {
        served: connection
            .peer_certificates()
            .and_then(|chain| chain.first().cloned()),
        version: connection.protocol_version(),
        suite: connection
            .negotiated_cipher_suite()
            .and_then(|s| s.suite().as_str()),
        group: connection.negotiated_key_exchange_group().map(|g| g.name()),
        kind: connection.handshake_kind(),
    })
}

fn suites(list: &[rustls::SupportedCipherSuite]) -> CryptoProvider {
    CryptoProvider {
        cipher_suites: list.to_vec(),
        ..aws_lc_rs::default_provider()
    }
}

fn groups(list: &[&'static dyn rustls::crypto::SupportedKxGroup]) -> CryptoProvider {
    CryptoProvider {
        kx_groups: list.to_vec(),
        ..aws_lc_rs::default_provider()
    }
}

const TLS12: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];

#[tokio::test]
async fn cipher_suites_limit_tls12_and_leave_tls13_alone() {
    let site = Site::start(
        "tls-ciphers",
        &[(
            "chacha",
            "      cipherSuites: [TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305, TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA]\n",
        )],
    )
    .await;
    use aws_lc_rs::cipher_suite as cs;
    // A TLS 1.2 client with only AES-GCM finds no common suite.
    let aes_only = client(
        &site,
        suites(&[cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]),
        TLS12,
    );
    assert!(handshake(&site, "chacha.test", aes_only).await.is_err());
    // With ChaCha20 it agrees on the configured suite.
    let chacha = client(
        &site,
        suites(&[
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ]),
        TLS12,
    );
    let agreed = handshake(&site, "chacha.test", chacha)
        .await
        .expect("handshake");
    assert_eq!(agreed.version, Some(ProtocolVersion::TLSv1_2));
    assert_eq!(
        agreed.suite,
        Some("TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256")
    );
    // TLS 1.3 keeps all its suites, as in Go.
    let tls13 = client(
        &site,
        suites(&[cs::TLS13_AES_256_GCM_SHA384]),
        &[&rustls::version::TLS13],
    );
    let agreed = handshake(&site, "chacha.test", tls13)
        .await
        .expect("handshake");
    assert_eq!(agreed.suite, Some("TLS13_AES_256_GCM_SHA384"));
    // The CBC suite this build cannot provide is reported, not fatal.
    site.router.wait_log("TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA");
}

#[tokio::test]
async fn curve_preferences_choose_the_key_exchange_and_unavailable_curves_are_skipped() {
    let site = Site::start(
        "tls-curves",
        &[
            ("p384", "      curvePreferences: [CurveP521, CurveP384]\n"),
            ("onlyp521", "      curvePreferences: [CurveP521]\n"),
            ("pq", "      curvePreferences: [X25519MLKEM768, X25519]\n"),
        ],
    )
    .await;
    use aws_lc_rs::kx_group;
    // Traefik serves [CurveP521, CurveP384] (a common configuration): so does Sallyport,
    // with P-384, even for a client that would rather use X25519.
    let both = client(
        &site,
        groups(&[kx_group::X25519, kx_group::SECP384R1]),
        &[&rustls::version::TLS13],
    );
    let agreed = handshake(&site, "p384.test", both)
        .await
        .expect("handshake");
    assert_eq!(agreed.group, Some(NamedGroup::secp384r1));
    // A client without P-384 finds no common group.
    let x25519 = client(
        &site,
        groups(&[kx_group::X25519]),
        &[&rustls::version::TLS13],
    );
    assert!(handshake(&site, "p384.test", x25519).await.is_err());
    // The post-quantum hybrid is agreed when both sides prefer it, as browsers do.
    let pq = client(
        &site,
        aws_lc_rs::default_provider(),
        &[&rustls::version::TLS13],
    );
    let agreed = handshake(&site, "pq.test", pq).await.expect("handshake");
    assert_eq!(agreed.group, Some(NamedGroup::X25519MLKEM768));
    let classic = client(
        &site,
        groups(&[kx_group::X25519]),
        &[&rustls::version::TLS13],
    );
    let agreed = handshake(&site, "pq.test", classic)
        .await
        .expect("handshake");
    assert_eq!(agreed.group, Some(NamedGroup::X25519));
    // An option left with no curve it can offer fails closed.
    let any = client(
        &site,
        aws_lc_rs::default_provider(),
        &[&rustls::version::TLS13],
    );
    assert!(handshake(&site, "onlyp521.test", any).await.is_err());
    site.router
        .wait_log("none of the curvePreferences is available");
}

#[tokio::test]
async fn sessions_resume_across_a_reload_unless_tickets_are_disabled() {
    let site = Site::start(
        "tls-resume",
        &[
            ("resume", "      minVersion: VersionTLS12\n"),
            ("noticket", "      disableSessionTickets: true\n"),
        ],
    )
    .await;
    // One client configuration keeps its session cache from one connection to the next.
    let config = resuming_client(&site);
    let first = handshake(&site, "resume.test", config.clone())
        .await
        .expect("handshake");
    assert_eq!(first.kind, Some(HandshakeKind::Full));
    let second = handshake(&site, "resume.test", config.clone())
        .await
        .expect("handshake");
    assert_eq!(second.kind, Some(HandshakeKind::Resumed));
    // A reload builds new server configurations; tickets issued before it still resume.
    site.router.rewrite_dynamic(&site.dynamic.replace(
        "minVersion: VersionTLS12",
        "minVersion: VersionTLS12\n      sniStrict: false",
    ));
    site.wait_reloads(2).await;
    let after = handshake(&site, "resume.test", config.clone())
        .await
        .expect("handshake");
    assert_eq!(
        after.kind,
        Some(HandshakeKind::Resumed),
        "{}",
        site.router.log()
    );
    // With disableSessionTickets, every handshake is a full one.
    for _ in 0..2 {
        let agreed = handshake(&site, "noticket.test", config.clone())
            .await
            .expect("handshake");
        assert_eq!(agreed.kind, Some(HandshakeKind::Full));
    }
}

#[tokio::test]
async fn a_session_from_before_client_auth_was_required_cannot_resume_past_it() {
    let site = Site::start(
        "tls-resume-mtls",
        &[("gate", "      minVersion: VersionTLS12\n")],
    )
    .await;
    let config = resuming_client(&site);
    let first = handshake(&site, "gate.test", config.clone())
        .await
        .expect("handshake");
    assert_eq!(first.kind, Some(HandshakeKind::Full));
    // The option now requires a client certificate from a CA this client has no
    // certificate of.
    let ca = TestCa::new("gate CA");
    let ca_file = site.dir.join("gate-ca.pem");
    std::fs::write(&ca_file, &ca.cert.cert_pem).expect("write CA");
    site.router.rewrite_dynamic(&site.dynamic.replace(
        "minVersion: VersionTLS12",
        &format!(
            "minVersion: VersionTLS12\n      clientAuth: {{caFiles: [\"{}\"], clientAuthType: RequireAndVerifyClientCert}}",
            ca_file.display()
        ),
    ));
    site.wait_reloads(2).await;
    // The client still holds a ticket from before: it must not get in with it.
    let refused = handshake(&site, "gate.test", config).await;
    assert!(
        refused.is_err(),
        "a session from before the reload resumed past RequireAndVerifyClientCert"
    );
}

#[tokio::test]
async fn a_certificate_replaced_on_disk_is_served_next_and_a_broken_one_keeps_the_last_good() {
    let site = Site::start(
        "tls-cert-watch",
        &[("site", "      minVersion: VersionTLS12\n")],
    )
    .await;
    let renewed = TestCert::new(&["site.test"]);
    let trusting_both = {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(site.cert.cert_der.clone()).expect("root");
        roots.add(renewed.cert_der.clone()).expect("root");
        let mut config =
            ClientConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
        // Full handshakes only: a resumed one shows the certificate of the first session.
        config.resumption = Resumption::disabled();
        Arc::new(config)
    };
    let first = handshake(&site, "site.test", trusting_both.clone())
        .await
        .expect("handshake");
    assert_eq!(first.served.as_ref(), Some(&site.cert.cert_der));
    // A connection open across the change.
    let tcp = TcpStream::connect(site.addr()).await.expect("connect");
    let mut open = tokio_rustls::TlsConnector::from(trusting_both.clone())
        .connect(ServerName::try_from("site.test").expect("name"), tcp)
        .await
        .expect("handshake");
    // The files are replaced in place (a renewal): nothing in the configuration changes.
    renewed.write(&site.dir.join("certs"), "site");
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let agreed = handshake(&site, "site.test", trusting_both.clone())
            .await
            .expect("handshake");
        if agreed.served.as_ref() == Some(&renewed.cert_der) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the renewed certificate was never served:\n{}",
            site.router.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    open.write_all(b"still\n").await.expect("write");
    let mut echoed = [0u8; 6];
    tokio::time::timeout(WAIT, open.read_exact(&mut echoed))
        .await
        .expect("echo in time")
        .expect("the open connection lives on");
    assert_eq!(&echoed, b"still\n");
    // A broken file: an error names it, and the last good certificate keeps serving
    // (not the default one).
    std::fs::write(
        site.dir.join("certs/site.crt"),
        "-----BEGIN CERTIFICATE-----\ngarbage\n",
    )
    .expect("write");
    let deadline = std::time::Instant::now() + WAIT;
    while !site
        .router
        .log()
        .contains("the previous certificate keeps serving")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no error for the broken file:\n{}",
            site.router.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let agreed = handshake(&site, "site.test", trusting_both.clone())
        .await
        .expect("handshake");
    assert_eq!(agreed.served.as_ref(), Some(&renewed.cert_der));

    // A key that does not belong to the certificate: the same, with the reason.
    let stranger = TestCert::new(&["site.test"]);
    std::fs::write(site.dir.join("certs/site.crt"), &renewed.cert_pem).expect("write");
    std::fs::write(site.dir.join("certs/site.key"), &stranger.key_pem).expect("write");
    site.router.wait_log("does not belong to certificate");
    let agreed = handshake(&site, "site.test", trusting_both)
        .await
        .expect("handshake");
    assert_eq!(agreed.served.as_ref(), Some(&renewed.cert_der));

    // An expired certificate loads and is served (as Traefik does), with a warning that
    // clients will refuse it; a client that trusts it indeed refuses it for its date.
    let expired = {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(vec!["site.test".to_owned()]).expect("params");
        let now = std::time::SystemTime::now();
        params.not_before = (now - std::time::Duration::from_secs(3 * 86400)).into();
        params.not_after = (now - std::time::Duration::from_secs(86400)).into();
        let cert = params.self_signed(&key).expect("certificate");
        (cert.pem(), key.serialize_pem(), cert.der().clone())
    };
    std::fs::write(site.dir.join("certs/site.key"), &expired.1).expect("write");
    std::fs::write(site.dir.join("certs/site.crt"), &expired.0).expect("write");
    site.router.wait_log("clients will refuse it");
    // The warning is written while the configuration compiles; it serves once applied.
    site.router
        .wait_log_after("clients will refuse it", "dynamic configuration applied");
    assert!(
        site.router.log().contains("expired on"),
        "{}",
        site.router.log()
    );
    let trusting_expired = {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(expired.2).expect("root");
        let mut config =
            ClientConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.resumption = Resumption::disabled();
        Arc::new(config)
    };
    let Err(refused) = handshake(&site, "site.test", trusting_expired).await else {
        panic!("an expired certificate must be refused by the client");
    };
    assert!(refused.to_lowercase().contains("expired"), "{refused}");
}
