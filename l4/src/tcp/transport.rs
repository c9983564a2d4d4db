//! How the TCP router reaches a backend (Traefik's `tcp.serversTransports`): resolve and dial
//! within a deadline, tune the socket, announce the real client with a PROXY protocol header,
//! and speak TLS to the backend when the server asks for it.
//!
//! The TLS client configuration is built once, when the transport is built, so a bad key or
//! CA is a configuration error rather than a failure on every connection. This module does
//! not parse PROXY headers (that is `l4::proxy_protocol`) and does not pick servers.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use socket2::{SockRef, TcpKeepalive};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Which PROXY protocol header to send to backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyVersion {
    /// The text header (`PROXY TCP4 ...\r\n`).
    V1,
    /// The binary header.
    V2,
}

/// The TLS settings of a serversTransport, as configured.
#[derive(Debug, Default)]
pub struct BackendTls {
    /// SNI and the name the certificate must carry; the server's host when `None`.
    pub server_name: Option<String>,
    /// Accept any backend certificate.
    pub insecure_skip_verify: bool,
    /// Trusted CAs; the system's bundle when empty.
    pub root_cas: Vec<CertificateDer<'static>>,
    /// Certificate chain and key presented to backends that ask for one (mTLS).
    pub client_certificate: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
}

/// A serversTransport: how connections to backends are made.
#[derive(Debug, Clone)]
pub struct Transport {
    /// Deadline for the whole dial: resolution, connect, PROXY header and TLS handshake.
    pub dial_timeout: Duration,
    /// TCP keep-alive idle time and probe interval; `None` disables keep-alive.
    pub dial_keepalive: Option<Duration>,
    /// See [`crate::tcp::proxy::RelayOptions::termination_delay`]; `None` = never.
    pub termination_delay: Option<Duration>,
    pub proxy_protocol: Option<ProxyVersion>,
    /// Built by [`Transport::with_tls`]; servers with `tls: true` use the default otherwise.
    tls: Option<ClientTls>,
}

impl Default for Transport {
    /// Traefik's defaults: dial 30 s, keep-alive 15 s, termination delay 100 ms.
    fn default() -> Self {
        Self {
            dial_timeout: Duration::from_secs(30),
            dial_keepalive: Some(Duration::from_secs(15)),
            termination_delay: Some(Duration::from_millis(100)),
            proxy_protocol: None,
            tls: None,
        }
    }
}

/// A TLS client setup ready to use.
#[derive(Debug, Clone)]
struct ClientTls {
    server_name: Option<ServerName<'static>>,
    config: Arc<ClientConfig>,
}

/// Why a serversTransport's TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("invalid serverName {0:?}")]
    ServerName(String),
    #[error("rootCAs: certificate #{index} is not usable as a CA: {source}")]
    RootCa { index: usize, source: rustls::Error },
    #[error("client certificate or key rejected: {0}")]
    ClientCertificate(rustls::Error),
    #[error("TLS protocol versions: {0}")]
    Protocol(rustls::Error),
}

/// Why a backend could not be reached. Every variant names the address dialed.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("backend {address}: cannot resolve: {source}")]
    Resolve { address: String, source: io::Error },
    #[error("backend {address}: cannot connect: {source}")]
    Connect { address: String, source: io::Error },
    #[error("backend {address}: not connected within {timeout:?}")]
    Timeout { address: String, timeout: Duration },
    #[error("backend {address}: cannot send the PROXY protocol header: {source}")]
    ProxyHeader { address: String, source: io::Error },
    #[error("backend {address}: {name:?} is not a valid TLS server name")]
    ServerName { address: String, name: String },
    #[error("backend {address}: TLS handshake failed: {source}")]
    Tls { address: String, source: io::Error },
}

impl Transport {
    /// Sets the TLS settings, building the client configuration now.
    pub fn with_tls(mut self, tls: BackendTls) -> Result<Self, TlsConfigError> {
        self.tls = Some(ClientTls::new(tls)?);
        Ok(self)
    }

    /// Connects to `address` (`host:port`) for a client connection from `client` accepted on
    /// `local`; those two addresses go into the PROXY header when one is configured. With
    /// `tls`, the result is a TLS stream to the backend.
    pub async fn connect(
        &self,
        address: &str,
        tls: bool,
        client: SocketAddr,
        local: SocketAddr,
    ) -> Result<BackendStream, DialError> {
        self.dial(address, tls, Some((client, local))).await
    }

    /// [`Transport::connect`] for connections of our own (health probes): no PROXY header,
    /// since there is no client to announce.
    pub async fn connect_without_client(
        &self,
        address: &str,
        tls: bool,
    ) -> Result<BackendStream, DialError> {
        self.dial(address, tls, None).await
    }

    async fn dial(
        &self,
        address: &str,
        tls: bool,
        client: Option<(SocketAddr, SocketAddr)>,
    ) -> Result<BackendStream, DialError> {
        tokio::time::timeout(self.dial_timeout, self.dial_now(address, tls, client))
            .await
            .unwrap_or_else(|_| {
                Err(DialError::Timeout {
                    address: address.to_owned(),
                    timeout: self.dial_timeout,
                })
            })
    }

    async fn dial_now(
        &self,
        address: &str,
        tls: bool,
        client: Option<(SocketAddr, SocketAddr)>,
    ) -> Result<BackendStream, DialError> {
        let mut stream = connect_any(address).await?;
        let connect_error = |source| DialError::Connect {
            address: address.to_owned(),
            source,
        };
        stream.set_nodelay(true).map_err(connect_error)?;
        if let Some(idle) = self.dial_keepalive {
            let keepalive = TcpKeepalive::new().with_time(idle).with_interval(idle);
            SockRef::from(&stream)
                .set_tcp_keepalive(&keepalive)
                .map_err(connect_error)?;
        }
        if let (Some(version), Some((client, local))) = (self.proxy_protocol, client) {
            let header_error = |source| DialError::ProxyHeader {
                address: address.to_owned(),
                source,
            };
            let header = proxy_header(version, client, local).map_err(header_error)?;
            stream.write_all(&header).await.map_err(header_error)?;
        }
        if !tls {
            return Ok(BackendStream::Plain(stream));
        }
        let client_tls = match &self.tls {
            Some(client_tls) => client_tls,
            None => default_client_tls().map_err(|error| DialError::Tls {
                address: address.to_owned(),
                source: io::Error::other(error.to_string()),
            })?,
        };
        let name = match &client_tls.server_name {
            Some(name) => name.clone(),
            None => {
                let host = host_of(address);
                ServerName::try_from(host.to_owned()).map_err(|_| DialError::ServerName {
                    address: address.to_owned(),
                    name: host.to_owned(),
                })?
            }
        };
        let tls_stream = TlsConnector::from(client_tls.config.clone())
            .connect(name, stream)
            .await
            .map_err(|source| DialError::Tls {
                address: address.to_owned(),
                source,
            })?;
        Ok(BackendStream::Tls(Box::new(tls_stream)))
    }
}

/// Resolves `address` and connects to the first of its addresses that accepts.
async fn connect_any(address: &str) -> Result<TcpStream, DialError> {
    let candidates =
        tokio::net::lookup_host(address)
            .await
            .map_err(|source| DialError::Resolve {
                address: address.to_owned(),
                source,
            })?;
    let mut last_error = None;
    for candidate in candidates {
        match TcpStream::connect(candidate).await {
            Ok(stream) => return Ok(stream),
            Err(error) => last_error = Some(error),
        }
    }
    Err(match last_error {
        Some(source) => DialError::Connect {
            address: address.to_owned(),
            source,
        },
        None => DialError::Resolve {
            address: address.to_owned(),
            source: io::Error::new(io::ErrorKind::NotFound, "no address found"),
        },
    })
}

/// The host part of `host:port`, without the brackets of an IPv6 literal.
fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// The PROXY header announcing a connection from `client` to `local`.
fn proxy_header(
    version: ProxyVersion,
    client: SocketAddr,
    local: SocketAddr,
) -> io::Result<Vec<u8>> {
    let addresses = same_family(client, local);
    match version {
        ProxyVersion::V1 => Ok(ppp::v1::Addresses::from(addresses).to_string().into_bytes()),
        ProxyVersion::V2 => ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Stream,
            addresses,
        )
        .build(),
    }
}

/// Both addresses in one family, as the header requires: IPv4-mapped IPv6 addresses become
/// IPv4, and if the families still differ the IPv4 one is mapped into IPv6.
fn same_family(client: SocketAddr, local: SocketAddr) -> (SocketAddr, SocketAddr) {
    let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    let (client, local) = (canonical(client), canonical(local));
    let as_v6 = |a: SocketAddr| match a {
        SocketAddr::V4(v4) => SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port()),
        v6 => v6,
    };
    if client.is_ipv4() == local.is_ipv4() {
        (client, local)
    } else {
        (as_v6(client), as_v6(local))
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

impl ClientTls {
    fn new(spec: BackendTls) -> Result<Self, TlsConfigError> {
        let server_name = spec
            .server_name
            .map(|name| {
                ServerName::try_from(name.clone()).map_err(|_| TlsConfigError::ServerName(name))
            })
            .transpose()?;
        let provider = provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(TlsConfigError::Protocol)?;
        let builder = if spec.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCertificate {
                    algorithms: provider.signature_verification_algorithms,
                }))
        } else if spec.root_cas.is_empty() {
            builder.with_root_certificates(system_roots().clone())
        } else {
            let mut roots = RootCertStore::empty();
            for (index, ca) in spec.root_cas.into_iter().enumerate() {
                roots
                    .add(ca)
                    .map_err(|source| TlsConfigError::RootCa { index, source })?;
            }
            builder.with_root_certificates(roots)
        };
        let config = match spec.client_certificate {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, key)
                .map_err(TlsConfigError::ClientCertificate)?,
            None => builder.with_no_client_auth(),
        };
        Ok(Self {
            server_name,
            config: Arc::new(config),
        })
    }
}

/// The TLS setup for `tls: true` servers of a transport without TLS settings: verify against
/// the system's CAs, no client certificate. Built on first use.
fn default_client_tls() -> Result<&'static ClientTls, &'static TlsConfigError> {
    static DEFAULT: OnceLock<Result<ClientTls, TlsConfigError>> = OnceLock::new();
    DEFAULT
        .get_or_init(|| ClientTls::new(BackendTls::default()))
        .as_ref()
}

/// Where Linux distributions keep their CA bundle (the list Go reads too), after the
/// `SSL_CERT_FILE` override.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The system's trusted CAs, read once from the first bundle found. Unreadable or invalid
/// entries are skipped; with no bundle the store is empty and verified backends fail.
fn system_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let from_env = std::env::var_os("SSL_CERT_FILE");
        let paths = from_env
            .as_deref()
            .map(Path::new)
            .into_iter()
            .chain(SYSTEM_BUNDLES.iter().map(Path::new));
        for path in paths {
            let Ok(certs) = CertificateDer::pem_file_iter(path) else {
                continue;
            };
            let mut roots = RootCertStore::empty();
            let (added, ignored) = roots.add_parsable_certificates(certs.filter_map(Result::ok));
            tracing::debug!(path = %path.display(), added, ignored, "loaded system CA bundle");
            return roots;
        }
        tracing::warn!(
            "no system CA bundle found: backends with TLS need rootCAs or insecureSkipVerify"
        );
        RootCertStore::empty()
    })
}

/// `insecureSkipVerify`: accepts any certificate for any name, so the connection is
/// encrypted but the backend is not authenticated. The handshake signatures are still
/// checked, as Go does, so the peer at least holds the key of the certificate it sent.
#[derive(Debug)]
struct AcceptAnyServerCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyServerCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A connection to a backend, plain or TLS.
#[derive(Debug)]
pub enum BackendStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl BackendStream {
    /// The raw socket, for [`crate::tcp::proxy::relay_tcp`]; a TLS stream is given back.
    pub fn into_plain(self) -> Result<TcpStream, Self> {
        match self {
            BackendStream::Plain(stream) => Ok(stream),
            tls => Err(tls),
        }
    }
}

impl AsyncRead for BackendStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for BackendStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_flush(cx),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            BackendStream::Plain(s) => s.is_write_vectored(),
            BackendStream::Tls(s) => s.is_write_vectored(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp::testing::{
        LIMIT, closed_port, echo_backend, self_signed, server_config, silent_backend,
    };
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const CLIENT: &str = "203.0.113.7:40000";
    const LOCAL: &str = "127.0.0.1:443";

    async fn connect(
        transport: &Transport,
        address: &str,
        tls: bool,
    ) -> Result<BackendStream, DialError> {
        tokio::time::timeout(
            LIMIT,
            transport.connect(address, tls, addr(CLIENT), addr(LOCAL)),
        )
        .await
        .unwrap()
    }

    async fn round_trip(stream: &mut BackendStream) -> Vec<u8> {
        stream.write_all(b"ping").await.unwrap();
        let mut buf = [0; 4];
        tokio::time::timeout(LIMIT, stream.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        buf.to_vec()
    }

    #[test]
    fn defaults_are_traefiks() {
        let t = Transport::default();
        assert_eq!(t.dial_timeout, Duration::from_secs(30));
        assert_eq!(t.dial_keepalive, Some(Duration::from_secs(15)));
        assert_eq!(t.termination_delay, Some(Duration::from_millis(100)));
        assert_eq!(t.proxy_protocol, None);
        assert!(t.tls.is_none());
    }

    #[tokio::test]
    async fn plain_connection_has_nodelay_and_keepalive() {
        let backend = echo_backend(None).await;
        let mut stream = connect(&Transport::default(), &backend.addr.to_string(), false)
            .await
            .unwrap();
        assert_eq!(round_trip(&mut stream).await, b"ping");
        let tcp = stream.into_plain().unwrap();
        assert!(tcp.nodelay().unwrap());
        let sock = SockRef::from(&tcp);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(15));
    }

    #[tokio::test]
    async fn keepalive_can_be_disabled() {
        let backend = echo_backend(None).await;
        let transport = Transport {
            dial_keepalive: None,
            ..Transport::default()
        };
        let stream = connect(&transport, &backend.addr.to_string(), false)
            .await
            .unwrap();
        let tcp = stream.into_plain().unwrap();
        assert!(!SockRef::from(&tcp).keepalive().unwrap());
    }

    /// Accepts one connection and returns what it received before the peer closed.
    async fn recording_backend() -> (SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            stream.read_to_end(&mut got).await.unwrap();
            got
        });
        (addr, task)
    }

    async fn header_sent(version: ProxyVersion, client: &str, local: &str) -> Vec<u8> {
        let (backend, received) = recording_backend().await;
        let transport = Transport {
            proxy_protocol: Some(version),
            ..Transport::default()
        };
        let stream = transport
            .connect(&backend.to_string(), false, addr(client), addr(local))
            .await
            .unwrap();
        drop(stream);
        tokio::time::timeout(LIMIT, received)
            .await
            .unwrap()
            .unwrap()
    }

    #[tokio::test]
    async fn proxy_v1_header_announces_the_client() {
        let header = header_sent(ProxyVersion::V1, CLIENT, LOCAL).await;
        assert_eq!(header, b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 443\r\n");
    }

    #[tokio::test]
    async fn proxy_v2_header_announces_the_client() {
        let header = header_sent(ProxyVersion::V2, CLIENT, LOCAL).await;
        let parsed = ppp::v2::Header::try_from(header.as_slice()).unwrap();
        assert_eq!(parsed.command, ppp::v2::Command::Proxy);
        assert_eq!(
            parsed.addresses,
            ppp::v2::Addresses::from((addr(CLIENT), addr(LOCAL)))
        );
        assert_eq!(parsed.len(), header.len());
    }

    #[tokio::test]
    async fn proxy_header_unmaps_ipv4_and_maps_mixed_families() {
        let header = header_sent(ProxyVersion::V1, "[::ffff:10.0.0.1]:1234", LOCAL).await;
        assert_eq!(header, b"PROXY TCP4 10.0.0.1 127.0.0.1 1234 443\r\n");
        let header = header_sent(ProxyVersion::V1, "[2001:db8::1]:1234", LOCAL).await;
        assert_eq!(
            header,
            b"PROXY TCP6 2001:db8::1 ::ffff:127.0.0.1 1234 443\r\n"
        );
    }

    #[tokio::test]
    async fn health_probes_send_no_proxy_header() {
        let (backend, received) = recording_backend().await;
        let transport = Transport {
            proxy_protocol: Some(ProxyVersion::V1),
            ..Transport::default()
        };
        let stream = transport
            .connect_without_client(&backend.to_string(), false)
            .await
            .unwrap();
        drop(stream);
        let got = tokio::time::timeout(LIMIT, received)
            .await
            .unwrap()
            .unwrap();
        assert!(got.is_empty());
    }

    #[tokio::test]
    async fn refused_connection_names_the_address() {
        let address = closed_port().await.to_string();
        let error = connect(&Transport::default(), &address, false)
            .await
            .unwrap_err();
        assert!(
            matches!(&error, DialError::Connect { address: a, source } if *a == address
                && source.kind() == io::ErrorKind::ConnectionRefused),
            "{error}"
        );
        assert!(error.to_string().contains(&address));
    }

    #[tokio::test]
    async fn unresolvable_address_is_a_resolve_error() {
        let error = connect(&Transport::default(), "127.0.0.1", false)
            .await
            .unwrap_err();
        assert!(matches!(error, DialError::Resolve { .. }), "{error}");
    }

    #[tokio::test]
    async fn dial_deadline_covers_the_tls_handshake() {
        let backend = silent_backend().await;
        let transport = Transport {
            dial_timeout: Duration::from_millis(200),
            ..Transport::default()
        }
        .with_tls(BackendTls {
            insecure_skip_verify: true,
            ..BackendTls::default()
        })
        .unwrap();
        let error = connect(&transport, &backend.addr.to_string(), true)
            .await
            .unwrap_err();
        assert!(
            matches!(error, DialError::Timeout { timeout, .. } if timeout == Duration::from_millis(200)),
            "{error}"
        );
    }

    #[tokio::test]
    async fn tls_backend_verified_with_root_cas() {
        let cert = self_signed(&["localhost"]);
        let backend = echo_backend(Some(server_config(&cert))).await;
        let transport = Transport::default()
            .with_tls(BackendTls {
                root_cas: vec![cert.cert.clone()],
                ..BackendTls::default()
            })
            .unwrap();
        let address = format!("localhost:{}", backend.addr.port());
        let mut stream = connect(&transport, &address, true).await.unwrap();
        assert!(matches!(stream, BackendStream::Tls(_)));
        assert_eq!(round_trip(&mut stream).await, b"ping");
        assert!(stream.into_plain().is_err());
    }

    #[tokio::test]
    async fn tls_backend_with_unknown_ca_is_refused() {
        let cert = self_signed(&["localhost"]);
        let other = self_signed(&["localhost"]);
        let backend = echo_backend(Some(server_config(&cert))).await;
        let transport = Transport::default()
            .with_tls(BackendTls {
                root_cas: vec![other.cert],
                ..BackendTls::default()
            })
            .unwrap();
        let address = format!("localhost:{}", backend.addr.port());
        let error = connect(&transport, &address, true).await.unwrap_err();
        assert!(matches!(error, DialError::Tls { .. }), "{error}");
        // Without any TLS settings, the system CAs do not know it either.
        let error = connect(&Transport::default(), &address, true)
            .await
            .unwrap_err();
        assert!(matches!(error, DialError::Tls { .. }), "{error}");
    }

    #[tokio::test]
    async fn server_name_overrides_the_address_host() {
        let cert = self_signed(&["backend.internal"]);
        let backend = echo_backend(Some(server_config(&cert))).await;
        let spec = |server_name: Option<&str>| BackendTls {
            server_name: server_name.map(str::to_owned),
            root_cas: vec![cert.cert.clone()],
            ..BackendTls::default()
        };
        let address = backend.addr.to_string();
        let named = Transport::default()
            .with_tls(spec(Some("backend.internal")))
            .unwrap();
        let mut stream = connect(&named, &address, true).await.unwrap();
        assert_eq!(round_trip(&mut stream).await, b"ping");
        // By default the name is the address host (127.0.0.1), which the certificate lacks.
        let unnamed = Transport::default().with_tls(spec(None)).unwrap();
        let error = connect(&unnamed, &address, true).await.unwrap_err();
        assert!(matches!(error, DialError::Tls { .. }), "{error}");
    }

    #[tokio::test]
    async fn insecure_skip_verify_accepts_any_certificate() {
        let cert = self_signed(&["somewhere.else"]);
        let backend = echo_backend(Some(server_config(&cert))).await;
        let transport = Transport::default()
            .with_tls(BackendTls {
                insecure_skip_verify: true,
                ..BackendTls::default()
            })
            .unwrap();
        let mut stream = connect(&transport, &backend.addr.to_string(), true)
            .await
            .unwrap();
        assert_eq!(round_trip(&mut stream).await, b"ping");
    }

    #[tokio::test]
    async fn client_certificate_is_presented_for_mtls() {
        let server_cert = self_signed(&["localhost"]);
        let client_cert = self_signed(&["client"]);
        let mut client_roots = RootCertStore::empty();
        client_roots.add(client_cert.cert.clone()).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(client_roots),
            provider(),
        )
        .build()
        .unwrap();
        let server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![server_cert.cert.clone()], server_cert.key.clone_key())
            .unwrap();
        let backend = echo_backend(Some(Arc::new(server))).await;
        let address = format!("localhost:{}", backend.addr.port());
        let with_cert = Transport::default()
            .with_tls(BackendTls {
                root_cas: vec![server_cert.cert.clone()],
                client_certificate: Some((vec![client_cert.cert.clone()], client_cert.key)),
                ..BackendTls::default()
            })
            .unwrap();
        let mut stream = connect(&with_cert, &address, true).await.unwrap();
        assert_eq!(round_trip(&mut stream).await, b"ping");
    }

    #[tokio::test]
    async fn relay_to_a_tls_backend_flushes_and_half_closes() {
        use crate::tcp::proxy::{Outcome, RelayOptions, relay};
        let cert = self_signed(&["localhost"]);
        let backend = echo_backend(Some(server_config(&cert))).await;
        let transport = Transport::default()
            .with_tls(BackendTls {
                root_cas: vec![cert.cert.clone()],
                ..BackendTls::default()
            })
            .unwrap();
        let address = format!("localhost:{}", backend.addr.port());
        let stream = connect(&transport, &address, true).await.unwrap();

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (client, accepted) = tokio::join!(
            tokio::net::TcpStream::connect(listener.local_addr().unwrap()),
            listener.accept()
        );
        let (mut client, (proxied, _)) = (client.unwrap(), accepted.unwrap());
        let relayed =
            tokio::spawn(async move { relay(proxied, stream, &RelayOptions::default()).await });
        client.write_all(b"over tls").await.unwrap();
        // The half-close reaches the backend as close_notify; its echo and its own
        // close_notify come back as data and end of stream.
        client.shutdown().await.unwrap();
        let mut echoed = Vec::new();
        tokio::time::timeout(LIMIT, client.read_to_end(&mut echoed))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(echoed, b"over tls");
        let transfer = tokio::time::timeout(LIMIT, relayed).await.unwrap().unwrap();
        assert_eq!(
            (transfer.client_to_backend, transfer.backend_to_client),
            (8, 8)
        );
        assert_eq!(transfer.outcome, Outcome::Closed);
    }

    #[test]
    fn invalid_tls_settings_are_configuration_errors() {
        let error = Transport::default()
            .with_tls(BackendTls {
                server_name: Some("not a name!".into()),
                ..BackendTls::default()
            })
            .unwrap_err();
        assert!(matches!(error, TlsConfigError::ServerName(_)), "{error}");
        let error = Transport::default()
            .with_tls(BackendTls {
                root_cas: vec![CertificateDer::from(vec![1, 2, 3])],
                ..BackendTls::default()
            })
            .unwrap_err();
        assert!(
            matches!(error, TlsConfigError::RootCa { index: 0, .. }),
            "{error}"
        );
    }

    #[test]
    fn host_of_strips_port_and_brackets() {
        assert_eq!(host_of("db.example:5432"), "db.example");
        assert_eq!(host_of("[::1]:443"), "::1");
        assert_eq!(host_of("10.0.0.1:80"), "10.0.0.1");
    }
}
