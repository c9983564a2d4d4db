//! Test support for the TCP modules: certificates and loopback backends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// Every wait in the tests is bounded by this.
pub(crate) const LIMIT: Duration = Duration::from_secs(10);

pub(crate) struct TestCert {
    pub cert: CertificateDer<'static>,
    pub key: PrivateKeyDer<'static>,
}

/// A self-signed certificate for `names`.
pub(crate) fn self_signed(names: &[&str]) -> TestCert {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let generated = rcgen::generate_simple_self_signed(names).unwrap();
    TestCert {
        cert: generated.cert.der().clone(),
        key: PrivatePkcs8KeyDer::from(generated.signing_key.serialize_der()).into(),
    }
}

pub(crate) fn server_config(cert: &TestCert) -> Arc<ServerConfig> {
    let config = ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.clone()], cert.key.clone_key())
    .unwrap();
    Arc::new(config)
}

/// A TLS server and a client that trusts it, for `name`.
pub(crate) fn tls_pair(name: &str) -> (TlsAcceptor, tokio_rustls::TlsConnector) {
    let cert = self_signed(&[name]);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    (
        TlsAcceptor::from(server_config(&cert)),
        tokio_rustls::TlsConnector::from(Arc::new(client)),
    )
}

/// A loopback server that stops when dropped.
pub(crate) struct Backend {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Echoes every connection back until the peer closes, over TLS when `tls` is given.
pub(crate) async fn echo_backend(tls: Option<Arc<ServerConfig>>) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    echo_on(listener, tls)
}

/// [`echo_backend`] on a given listener (to reopen a port that was closed).
pub(crate) fn echo_on(listener: TcpListener, tls: Option<Arc<ServerConfig>>) -> Backend {
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    Some(config) => {
                        if let Ok(stream) = TlsAcceptor::from(config).accept(stream).await {
                            echo(stream).await;
                        }
                    }
                    None => echo(stream).await,
                }
            });
        }
    });
    Backend { addr, task }
}

async fn echo<S: tokio::io::AsyncRead + tokio::io::AsyncWrite>(stream: S) {
    let (mut r, mut w) = tokio::io::split(stream);
    if tokio::io::copy(&mut r, &mut w).await.is_ok() {
        let _ = w.shutdown().await;
    }
}

/// A loopback server that accepts and then never says anything, holding its connections.
pub(crate) async fn silent_backend() -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held: Vec<TcpStream> = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    Backend { addr, task }
}

/// An address on which nothing listens.
pub(crate) async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}
