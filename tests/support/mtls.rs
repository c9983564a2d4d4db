//! Client certificates for the end-to-end tests: the PKI of a client-authentication test
//! (server CA, trusted and untrusted client CAs), a rustls client that presents one (or
//! none), one-shot HTTP/1.1 requests over it whose failure is a value rather than a panic
//! (a refused client certificate shows up there with TLS 1.3), and a backend that answers
//! with the `X-Forwarded-Tls-Client-Cert*` headers it received.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};

use super::{TestCa, TestCert, WAIT, provider};

/// The PKI of a test: a CA for the router's certificate, a CA the router trusts for client
/// certificates and one it does not, and a client certificate from each.
pub struct Pki {
    pub server_ca: TestCa,
    pub good_ca: TestCa,
    pub good: TestCert,
    pub wrong: TestCert,
}

/// Which client certificate a client presents when the server asks.
#[derive(Debug, Clone, Copy)]
pub enum Presented {
    Nothing,
    WrongCa,
    GoodCa,
}

/// The TLS options of [`Pki::client_auth_site`], by name.
pub const CLIENT_AUTH_KINDS: [&str; 6] = [
    "none",
    "request",
    "requireany",
    "ifgiven",
    "verify",
    "cafilesonly",
];

pub const PRESENTED: [Presented; 3] = [Presented::Nothing, Presented::WrongCa, Presented::GoodCa];

impl Pki {
    pub fn new() -> Pki {
        let good_ca = TestCa::new("Client CA");
        let wrong_ca = TestCa::new("Other CA");
        Pki {
            server_ca: TestCa::new("Server CA"),
            good: good_ca.issue(&["client.test"]),
            wrong: wrong_ca.issue(&["client.test"]),
            good_ca,
        }
    }

    /// `tls.certificates` with one certificate for `names`, written into `dir`.
    pub fn certificates(&self, dir: &Path, names: &[&str]) -> String {
        let (crt, key) = self.server_ca.issue(names).write(dir, "server");
        format!(
            "  certificates:\n    - certFile: \"{}\"\n      keyFile: \"{}\"\n",
            crt.display(),
            key.display()
        )
    }

    /// The trusted client CA written into `dir`: its path.
    pub fn good_ca_file(&self, dir: &Path) -> String {
        let (crt, _) = self.good_ca.cert.write(dir, "client-ca");
        crt.display().to_string()
    }

    /// The trusted client CA as an inline PEM YAML block, indented for a list item at
    /// `indent` spaces.
    pub fn good_ca_inline(&self, indent: usize) -> String {
        let pad = " ".repeat(indent + 2);
        let body: String = self
            .good_ca
            .cert
            .cert_pem
            .lines()
            .map(|l| format!("{pad}{l}\n"))
            .collect();
        format!("{}- |\n{body}", " ".repeat(indent))
    }

    /// The dynamic configuration of a site with one HTTP router `<kind>.test` (service `s`,
    /// plus `router_extra` lines) for each of [`CLIENT_AUTH_KINDS`], each with the TLS option
    /// of that name: the five `clientAuthType`s and `caFiles` alone, trusting the good CA (by
    /// file, or inline for `verify`). `sections` holds the `http` sections after `routers`
    /// (at least `services: s`).
    pub fn client_auth_site(&self, dir: &Path, router_extra: &str, sections: &str) -> String {
        let mut routers = String::new();
        for kind in CLIENT_AUTH_KINDS {
            routers.push_str(&format!(
                "    {kind}:\n      rule: \"Host(`{kind}.test`)\"\n      service: s\n{router_extra}      tls: {{ options: {kind} }}\n"
            ));
        }
        let names: Vec<String> = CLIENT_AUTH_KINDS
            .iter()
            .map(|k| format!("{k}.test"))
            .collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        format!(
            r#"
http:
  routers:
{routers}{sections}tls:
{certificates}  options:
    none:
      clientAuth: {{ caFiles: ["{ca_file}"], clientAuthType: NoClientCert }}
    request:
      clientAuth: {{ clientAuthType: RequestClientCert }}
    requireany:
      clientAuth: {{ clientAuthType: RequireAnyClientCert }}
    ifgiven:
      clientAuth: {{ caFiles: ["{ca_file}"], clientAuthType: VerifyClientCertIfGiven }}
    verify:
      clientAuth:
        clientAuthType: RequireAndVerifyClientCert
        caFiles:
{inline}    cafilesonly:
      clientAuth: {{ caFiles: ["{ca_file}"] }}
"#,
            ca_file = self.good_ca_file(dir),
            certificates = self.certificates(dir, &names),
            inline = self.good_ca_inline(10),
        )
    }

    /// The certificate a client presenting `which` sends.
    pub fn presented(&self, which: Presented) -> Option<&TestCert> {
        match which {
            Presented::Nothing => None,
            Presented::WrongCa => Some(&self.wrong),
            Presented::GoodCa => Some(&self.good),
        }
    }

    /// A rustls client trusting the server CA and presenting `which`.
    pub fn client(&self, which: Presented) -> Arc<rustls::ClientConfig> {
        client_config(&self.server_ca.cert, self.presented(which), &[])
    }
}

/// A TLS client configuration trusting `server_ca`, offering HTTP/1.1 and presenting
/// `client` (its certificate, then `chain`) when the server asks.
pub fn client_config(
    server_ca: &TestCert,
    client: Option<&TestCert>,
    chain: &[&TestCert],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(server_ca.cert_der.clone()).expect("root");
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some(cert) => {
            let mut certs = vec![cert.cert_der.clone()];
            certs.extend(chain.iter().map(|c| c.cert_der.clone()));
            builder
                .with_client_auth_cert(certs, cert.key_der())
                .expect("client certificate")
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Opens TLS to `127.0.0.1:port` for `sni`. With TLS 1.3 a server that refuses the client's
/// certificate says so only after this returns: use the stream before concluding.
pub async fn connect(
    port: u16,
    sni: &str,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = tokio::time::timeout(WAIT, TcpStream::connect(("127.0.0.1", port))).await??;
    let name = ServerName::try_from(sni.to_owned()).map_err(std::io::Error::other)?;
    let connector = tokio_rustls::TlsConnector::from(config);
    tokio::time::timeout(WAIT, connector.connect(name, tcp)).await?
}

/// What one HTTPS request gave.
#[derive(Debug)]
pub struct Fetched {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Fetched {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
    }
}

/// One GET `path` for `sni` over a new TLS connection, with `headers` added; `Err` says why
/// no answer came (handshake refused, connection closed).
pub async fn fetch(
    port: u16,
    sni: &str,
    config: Arc<rustls::ClientConfig>,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Fetched, String> {
    let tls = connect(port, sni, config)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let (mut sender, conn) = http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| format!("http: {e}"))?;
    tokio::spawn(conn);
    let mut request = Request::get(path).header("host", sni);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(WAIT, sender.send_request(request))
        .await
        .map_err(|_| "no answer in time".to_owned())?
        .map_err(|e| format!("request: {e}"))?;
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok(Fetched {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// A plaintext HTTP backend answering every request with the `X-Forwarded-Tls-Client-Cert`
/// and `-Info` values it received, in `x-seen-tls-client-cert(-info)` (`-` when absent).
pub struct CertHeadersBackend {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CertHeadersBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CertHeadersBackend {
    pub async fn start() -> CertHeadersBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let service = service_fn(|request: Request<hyper::body::Incoming>| async move {
                    let seen = |name: &str| {
                        request
                            .headers()
                            .get_all(name)
                            .iter()
                            .map(|v| v.to_str().unwrap_or("?").to_owned())
                            .collect::<Vec<_>>()
                            .join(" | ")
                    };
                    let (cert, info) = (
                        seen("x-forwarded-tls-client-cert"),
                        seen("x-forwarded-tls-client-cert-info"),
                    );
                    let or_dash = |v: String| if v.is_empty() { "-".to_owned() } else { v };
                    let response = Response::builder()
                        .header("x-seen-tls-client-cert", or_dash(cert))
                        .header("x-seen-tls-client-cert-info", or_dash(info))
                        .body(Full::new(Bytes::from_static(b"ok")))
                        .expect("response");
                    Ok::<_, Infallible>(response)
                });
                tokio::spawn(async move {
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        CertHeadersBackend { addr, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}
