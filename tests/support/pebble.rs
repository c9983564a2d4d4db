//! A real ACME CA on loopback for the ACME tests: Debian's `pebble` (Let's Encrypt's test
//! CA) with `pebble-challtestsrv` as its DNS server, which answers every name with
//! 127.0.0.1, so that pebble validates challenges against the router under test. Both are
//! stopped by PID when dropped.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::programs::{Running, installed};
use super::udp::free_udp_port;
use super::{TestCert, client_config, free_port};

pub struct Pebble {
    /// The directory URL, for `caServer`.
    pub directory: String,
    /// The PEM file of the certificate pebble's HTTPS listener presents, for
    /// `caCertificates`.
    pub tls_ca_file: PathBuf,
    tls_cert: TestCert,
    management: u16,
    _dns: Running,
    _pebble: Running,
}

impl Pebble {
    /// Whether pebble can run here (the tests skip, saying so, when it cannot).
    pub fn available() -> bool {
        let ok = installed(&["pebble", "pebble-challtestsrv"]);
        if !ok {
            eprintln!("skipped: Debian's pebble package is not installed");
        }
        ok
    }

    /// Starts pebble validating HTTP-01 on `http_port` and TLS-ALPN-01 on `tls_port` (the
    /// router's entrypoints), with its files in `dir`.
    pub fn start(dir: &Path, http_port: u16, tls_port: u16) -> Pebble {
        let dns = free_udp_port();
        let dns_management = free_port();
        let dns_server = Running::start(
            Command::new("pebble-challtestsrv")
                .args(["-dns01", &format!("127.0.0.1:{dns}")])
                .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
                .args(["-management", &format!("127.0.0.1:{dns_management}")])
                .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""]),
        );
        let tls_cert = TestCert::new(&["127.0.0.1", "localhost"]);
        let (cert_file, key_file) = tls_cert.write(dir, "pebble-tls");
        let listen = free_port();
        let management = free_port();
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{listen}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": cert_file,
            "privateKey": key_file,
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        let config_path = dir.join("pebble.json");
        std::fs::write(&config_path, config.to_string()).expect("pebble config");
        let pebble = Running::start(
            Command::new("pebble")
                .arg("-config")
                .arg(&config_path)
                .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
                .env("PEBBLE_VA_NOSLEEP", "1")
                .env("PEBBLE_WFE_NONCEREJECT", "0")
                .env("PEBBLE_AUTHZREUSE", "0"),
        );
        let started = Instant::now();
        while !super::programs::port_open_within(listen, Duration::from_millis(100))
            || !super::programs::port_open_within(management, Duration::from_millis(100))
        {
            assert!(
                started.elapsed() < super::WAIT,
                "pebble did not start: {}",
                pebble.stderr()
            );
        }
        Pebble {
            directory: format!("https://127.0.0.1:{listen}/dir"),
            tls_ca_file: cert_file,
            tls_cert,
            management,
            _dns: dns_server,
            _pebble: pebble,
        }
    }

    /// Pebble's issuing root (generated at each start), from its management interface.
    pub async fn root(&self) -> CertificateDer<'static> {
        let pem = https_get(self.management, "/roots/0", &self.tls_cert).await;
        CertificateDer::from_pem_slice(pem.as_bytes()).expect("pebble root PEM")
    }

    /// A TLS client configuration trusting pebble's issuing root only.
    pub async fn client(&self, alpn: &[&str]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.root().await).expect("root");
        let mut config = rustls::ClientConfig::builder_with_provider(super::provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        config.resumption = rustls::client::Resumption::disabled();
        Arc::new(config)
    }
}

/// A GET over HTTPS to pebble's management port; the body.
async fn https_get(port: u16, path: &str, ca: &TestCert) -> String {
    let connector = tokio_rustls::TlsConnector::from(client_config(&[ca], &["http/1.1"]));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to pebble");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let mut tls = connector.connect(name, tcp).await.expect("TLS to pebble");
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("request");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(super::WAIT, tls.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    body.to_owned()
}
