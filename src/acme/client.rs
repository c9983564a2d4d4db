//! The HTTP client that talks to the ACME server: one HTTP/1.1 connection per request
//! (ACME traffic is a handful of requests a day), TLS with the roots the resolver trusts,
//! and every request bounded by `clientTimeout` and its answer's headers by
//! `clientResponseHeaderTimeout`, so a CA that never answers costs a timeout and a retry,
//! never a stuck resolver.
//!
//! Trusted roots: the system's, unless `caCertificates` (or lego's `LEGO_CA_CERTIFICATES`)
//! names others; then those only, plus the system's when `caSystemCertPool` (or
//! `LEGO_CA_SYSTEM_CERT_POOL`) is set — the rules Traefik's users already follow.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

/// Bounds an ACME server's answer: directories, orders and certificate chains are small.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("ACME server URL {0}: only http and https URLs with a host are supported")]
    Url(String),
    #[error("connecting to the ACME server {authority}: {source}")]
    Connect {
        authority: String,
        source: std::io::Error,
    },
    #[error("TLS with the ACME server {authority}: {source}")]
    Tls {
        authority: String,
        source: std::io::Error,
    },
    #[error("ACME server {authority}: {source}")]
    Http {
        authority: String,
        source: hyper::Error,
    },
    #[error("ACME server {authority} answered {status}: {detail}")]
    Status {
        authority: String,
        status: http::StatusCode,
        detail: String,
    },
    #[error("ACME server {authority} did not answer within {after:?}")]
    Timeout { authority: String, after: Duration },
    #[error("ACME server {authority}: answer larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge { authority: String },
    #[error("ACME client TLS configuration: {0}")]
    Config(String),
    #[error("ACME CA certificates {path}: {reason}")]
    Roots { path: String, reason: String },
}

/// Timeouts of one resolver's requests.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// The whole request, connection included (`clientTimeout`, Traefik's default 2 min).
    pub total: Duration,
    /// From sending the request to the answer's headers (`clientResponseHeaderTimeout`,
    /// 30 s by default).
    pub response_header: Duration,
}

/// What the client trusts, as configured.
pub struct Trust<'a> {
    pub ca_certificates: &'a [String],
    pub system_pool: bool,
}

/// The roots for a resolver: its `caCertificates`, else `LEGO_CA_CERTIFICATES`, else the
/// system's.
pub fn roots(trust: &Trust<'_>) -> Result<rustls::RootCertStore, ClientError> {
    let mut files: Vec<String> = trust.ca_certificates.to_vec();
    let mut system_pool = trust.system_pool;
    if files.is_empty()
        && let Ok(env) = std::env::var("LEGO_CA_CERTIFICATES")
    {
        files = env
            .split([',', ':'])
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect();
        system_pool |= std::env::var("LEGO_CA_SYSTEM_CERT_POOL")
            .is_ok_and(|v| matches!(v.as_str(), "1" | "true" | "TRUE" | "True"));
    }
    let mut store = rustls::RootCertStore::empty();
    if files.is_empty() || system_pool {
        let found = rustls_native_certs::load_native_certs();
        for cert in found.certs {
            let _ = store.add(cert);
        }
    }
    for path in &files {
        let certs = l4::tls::load_ca_certificates(path).map_err(|e| ClientError::Roots {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        for cert in certs {
            store.add(cert).map_err(|e| ClientError::Roots {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        }
    }
    Ok(store)
}

/// An [`HttpClient`] for instant-acme.
#[derive(Clone)]
pub struct AcmeHttp {
    tls: tokio_rustls::TlsConnector,
    timeouts: Timeouts,
}

impl AcmeHttp {
    pub fn new(roots: rustls::RootCertStore, timeouts: Timeouts) -> Result<Self, ClientError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Config(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(AcmeHttp {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            timeouts,
        })
    }

    async fn send(
        &self,
        request: Request<BodyWrapper<Bytes>>,
    ) -> Result<BytesResponse, ClientError> {
        let uri = request.uri().clone();
        let authority = uri.authority().map(|a| a.to_string()).unwrap_or_default();
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(ClientError::Url(uri.to_string())),
        };
        let Some(host) = uri
            .host()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
        else {
            return Err(ClientError::Url(uri.to_string()));
        };
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let connect_err = |source| ClientError::Connect {
            authority: authority.clone(),
            source,
        };
        let tcp = TcpStream::connect((host, port))
            .await
            .map_err(connect_err)?;
        let _ = tcp.set_nodelay(true);
        // Requests go in origin form, with the Host header hyper's client does not add.
        let (mut parts, body) = request.into_parts();
        parts.uri = uri
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or("/")
            .parse()
            .map_err(|_| ClientError::Url(uri.to_string()))?;
        if let Ok(value) = http::HeaderValue::from_str(&authority) {
            parts.headers.insert(http::header::HOST, value);
        }
        let body = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let request = Request::from_parts(parts, Full::new(body));
        if https {
            let name = ServerName::try_from(host.to_owned())
                .map_err(|_| ClientError::Url(uri.to_string()))?;
            let tls = self
                .tls
                .connect(name, tcp)
                .await
                .map_err(|source| ClientError::Tls {
                    authority: authority.clone(),
                    source,
                })?;
            self.exchange(tls, request, &authority).await
        } else {
            self.exchange(tcp, request, &authority).await
        }
    }

    async fn exchange<IO>(
        &self,
        io: IO,
        request: Request<Full<Bytes>>,
        authority: &str,
    ) -> Result<BytesResponse, ClientError>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let http_err = |source| ClientError::Http {
            authority: authority.to_owned(),
            source,
        };
        let is_get = request.method() == http::Method::GET;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
                .await
                .map_err(http_err)?;
        let driver = tokio::spawn(connection);
        let response =
            tokio::time::timeout(self.timeouts.response_header, sender.send_request(request))
                .await
                .map_err(|_| ClientError::Timeout {
                    authority: authority.to_owned(),
                    after: self.timeouts.response_header,
                })?
                .map_err(http_err)?;
        let (parts, body) = response.into_parts();
        let limited = http_body_util::Limited::new(body, MAX_RESPONSE_BYTES);
        let bytes = limited
            .collect()
            .await
            .map_err(|_| ClientError::TooLarge {
                authority: authority.to_owned(),
            })?
            .to_bytes();
        driver.abort();
        // The directory is the only plain GET: instant-acme parses whatever it gets, so an
        // error page would read as "missing field"; say what the server answered instead.
        if is_get && !parts.status.is_success() {
            return Err(ClientError::Status {
                authority: authority.to_owned(),
                status: parts.status,
                detail: String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned(),
            });
        }
        Ok(BytesResponse::from(http::Response::from_parts(
            parts,
            Full::new(bytes),
        )))
    }
}

impl HttpClient for AcmeHttp {
    fn request(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let this = self.clone();
        let total = self.timeouts.total;
        Box::pin(async move {
            let authority = req
                .uri()
                .authority()
                .map(|a| a.to_string())
                .unwrap_or_default();
            match tokio::time::timeout(total, this.send(req)).await {
                Ok(result) => result,
                Err(_) => Err(ClientError::Timeout {
                    authority,
                    after: total,
                }),
            }
            .map_err(|e| instant_acme::Error::Other(Box::new(e)))
        })
    }
}
