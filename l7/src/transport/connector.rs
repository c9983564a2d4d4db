//! Opening one connection to a server for the pools: TCP with the dial timeout, then for
//! `https` a TLS handshake (SNI, verification, client certificate, ALPN) with Traefik's
//! fixed 10 s handshake timeout.
//!
//! Our own connector rather than hyper-rustls: the SNI must be `serverName` when set (also
//! for IP-address URLs), the dial and handshake timeouts must be told apart from refusals so
//! the proxy answers 504 rather than 502, and the workspace already has tokio-rustls.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use http::uri::{Authority, PathAndQuery, Scheme};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Traefik's (Go's) `TLSHandshakeTimeout`, not configurable there either.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Traefik's dialer keep-alive.
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);

/// Why a connection to a server could not be opened. The proxy reads it back from the
/// client's error chain to choose between 502 and 504.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect")]
    Dial(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("connecting timed out after {0:?}")]
    DialTimeout(Duration),
    #[error("server url has no host")]
    MissingHost,
    #[error("{0:?} is not a valid TLS server name")]
    InvalidServerName(String),
    #[error("TLS handshake failed")]
    Handshake(#[source] io::Error),
    #[error("TLS handshake timed out after {0:?}")]
    HandshakeTimeout(Duration),
}

impl ConnectError {
    /// Whether the server did not answer in time, as opposed to refusing.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::DialTimeout(_) | Self::HandshakeTimeout(_))
    }
}

/// Opens plain TCP connections for `http` URIs and TLS ones for `https` URIs.
#[derive(Clone)]
pub(super) struct Connector {
    tcp: HttpConnector,
    dial_timeout: Duration,
    tls: Arc<ClientConfig>,
    /// `serverName`; `None` uses the host dialled.
    server_name: Option<ServerName<'static>>,
    /// The one server this connector dials, whatever authority the URI names: HTTP/2 pools
    /// put the Host to announce in the URI (`:authority`), not the server's address.
    pinned: Option<Authority>,
}

impl Connector {
    pub(super) fn new(
        dial_timeout: Duration,
        tls: Arc<ClientConfig>,
        server_name: Option<ServerName<'static>>,
    ) -> Self {
        let mut tcp = HttpConnector::new();
        // `https` URIs come here too; TLS is layered on below.
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_keepalive(Some(TCP_KEEPALIVE));
        Self {
            tcp,
            dial_timeout,
            tls,
            server_name,
            pinned: None,
        }
    }

    /// This connector, dialling `server` for every URI.
    pub(super) fn pinned_to(self, server: Authority) -> Self {
        Self {
            pinned: Some(server),
            ..self
        }
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = Stream;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Stream, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // `HttpConnector` is always ready; readiness is checked again when it is called.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let connector = self.clone();
        Box::pin(async move { connector.connect(dst).await })
    }
}

impl Connector {
    async fn connect(mut self, dst: Uri) -> Result<Stream, ConnectError> {
        let tls = dst.scheme() == Some(&Scheme::HTTPS);
        let dst = match self.pinned.clone() {
            Some(server) => {
                let mut parts = http::uri::Parts::default();
                parts.scheme = dst.scheme().cloned();
                parts.authority = Some(server);
                parts.path_and_query = Some(PathAndQuery::from_static("/"));
                Uri::from_parts(parts).map_err(|error| ConnectError::Dial(Box::new(error)))?
            }
            None => dst,
        };
        let server_name = if tls {
            Some(self.server_name_for(&dst)?)
        } else {
            None
        };
        let dial = tower_service::Service::call(&mut self.tcp, dst);
        let tcp = match tokio::time::timeout(self.dial_timeout, dial).await {
            Ok(Ok(tcp)) => tcp.into_inner(),
            Ok(Err(error)) => return Err(ConnectError::Dial(Box::new(error))),
            Err(_) => return Err(ConnectError::DialTimeout(self.dial_timeout)),
        };
        let Some(server_name) = server_name else {
            return Ok(Stream {
                io: TokioIo::new(MaybeTls::Plain(tcp)),
                h2: false,
            });
        };
        let handshake = TlsConnector::from(self.tls).connect(server_name, tcp);
        let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, handshake).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(error)) => return Err(ConnectError::Handshake(error)),
            Err(_) => return Err(ConnectError::HandshakeTimeout(TLS_HANDSHAKE_TIMEOUT)),
        };
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        Ok(Stream {
            io: TokioIo::new(MaybeTls::Tls(Box::new(tls))),
            h2,
        })
    }

    fn server_name_for(&self, dst: &Uri) -> Result<ServerName<'static>, ConnectError> {
        if let Some(name) = &self.server_name {
            return Ok(name.clone());
        }
        let host = dst.host().ok_or(ConnectError::MissingHost)?;
        // An IPv6 literal is bracketed in a URI, not in a server name.
        let host = host.trim_start_matches('[').trim_end_matches(']');
        ServerName::try_from(host.to_owned())
            .map_err(|_| ConnectError::InvalidServerName(host.to_owned()))
    }
}

/// One connection to a server, with whether TLS negotiated HTTP/2.
pub(super) struct Stream {
    io: TokioIo<MaybeTls>,
    h2: bool,
}

enum MaybeTls {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        let connected = Connected::new();
        if self.h2 {
            connected.negotiated_h2()
        } else {
            connected
        }
    }
}

impl Read for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl Write for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
}

impl AsyncRead for MaybeTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(tcp) => tcp.is_write_vectored(),
            Self::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
}
