//! The HTTP reverse proxy for one accepted connection: hyper serves HTTP/1.1 and h2c
//! (prior knowledge) on it, each request is routed through the current routing table,
//! rewritten for the upstream and forwarded with a shared connection pool, and the response is
//! streamed back.
//!
//! Owns the server and client settings (timers, limits, pools) and the mapping of transport
//! failures to Traefik's answers. It does not accept connections, terminate TLS, run
//! middlewares or build the table from configuration.

mod upstream;

use std::convert::Infallible;
use std::error::Error as StdError;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, HeaderValue};
use http::request::Parts;
use http::uri::{PathAndQuery, Scheme, Uri};
use http::{Request, Response, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::{ProxyErrorKind, error_response_body};
use crate::forwarded::{
    ForwardContext, ForwardedPolicy, rewrite_request_headers, strip_hop_by_hop_response,
};
use crate::request::RequestView;
use crate::router::Table;

pub use upstream::{HttpService, Upstream, UpstreamError, UpstreamProtocol};

/// The routing snapshot the proxy reads for every request.
pub type RoutingTable = Table<Arc<HttpService>>;

/// A response body: the upstream's, streamed, or a short error text.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// hyper refuses an HTTP/1 read buffer smaller than this (it panics).
const MIN_H1_BUFFER: usize = 8192;

/// Server and client settings of one entrypoint's proxy.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// HTTP/2 streams a client may have open at once (`http2.maxConcurrentStreams`).
    pub max_concurrent_streams: u32,
    /// Largest request header section accepted, in bytes (Go's `MaxHeaderBytes`).
    pub max_header_bytes: usize,
    /// Time an HTTP/1 client has to send a request's headers (`respondingTimeouts.readTimeout`).
    pub request_header_timeout: Duration,
    /// Time an upstream has to send response headers (`responseHeaderTimeout`); `None` waits.
    pub response_header_timeout: Option<Duration>,
    /// How long an idle upstream connection stays pooled (`idleConnTimeout`).
    pub upstream_idle_timeout: Duration,
    /// The client connection is TLS, for `X-Forwarded-Proto`.
    pub tls: bool,
    /// `X-Forwarded-Server`; empty leaves it out.
    pub server_name: String,
    pub forwarded: ForwardedPolicy,
}

impl Default for ProxyConfig {
    /// Traefik's defaults.
    fn default() -> Self {
        Self {
            max_concurrent_streams: 250,
            max_header_bytes: 1 << 20,
            request_header_timeout: Duration::from_secs(60),
            response_header_timeout: None,
            upstream_idle_timeout: Duration::from_secs(90),
            tls: false,
            server_name: String::new(),
            forwarded: ForwardedPolicy::default(),
        }
    }
}

/// A client connection ended with an error (protocol violation, I/O error, timeout).
#[derive(Debug, thiserror::Error)]
#[error("HTTP connection from {peer} failed")]
pub struct ServeError {
    peer: IpAddr,
    #[source]
    cause: Box<dyn StdError + Send + Sync>,
}

/// The proxy of one entrypoint; cheap to clone, one clone per accepted connection.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

struct Inner {
    table: Arc<ArcSwap<RoutingTable>>,
    config: ProxyConfig,
    server: auto::Builder<TokioExecutor>,
    /// Shared by every connection so upstream connections are pooled across clients.
    http1: Client<HttpConnector, Incoming>,
    h2c: Client<HttpConnector, Incoming>,
}

impl Proxy {
    pub fn new(table: Arc<ArcSwap<RoutingTable>>, config: ProxyConfig) -> Self {
        let mut server = auto::Builder::new(TokioExecutor::new());
        // Without a timer hyper panics when a timeout is due (header read timeout on h1).
        server
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(config.request_header_timeout)
            .max_buf_size(config.max_header_bytes.max(MIN_H1_BUFFER));
        server
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(config.max_concurrent_streams)
            .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX))
            .adaptive_window(true);
        let http1 = upstream_client(false, config.upstream_idle_timeout);
        let h2c = upstream_client(true, config.upstream_idle_timeout);
        Self {
            inner: Arc::new(Inner {
                table,
                config,
                server,
                http1,
                h2c,
            }),
        }
    }

    /// Serves HTTP on one accepted connection until the client closes it. `peer` is the
    /// client's address (after a trusted PROXY header), used by `ClientIP` rules and
    /// `X-Forwarded-For`.
    pub async fn serve_connection<I>(&self, io: I, peer: IpAddr) -> Result<(), ServeError>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let proxy = self.clone();
        let service = service_fn(move |request| {
            let proxy = proxy.clone();
            async move { Ok::<_, Infallible>(proxy.handle(request, peer).await) }
        });
        self.inner
            .server
            .serve_connection(TokioIo::new(io), service)
            .await
            .map_err(|cause| ServeError { peer, cause })
    }

    /// Routes and forwards one request; every failure becomes Traefik's error response.
    pub async fn handle(&self, request: Request<Incoming>, peer: IpAddr) -> Response<ProxyBody> {
        let (mut parts, body) = request.into_parts();
        // The table is loaded per request so a keep-alive connection follows reloads.
        let service = {
            let table = self.inner.table.load();
            let view = RequestView::from_parts(&parts, peer);
            table.find(&view).map(|route| Arc::clone(&route.target))
        };
        let Some(service) = service else {
            return error_response(ProxyErrorKind::NoRoute);
        };
        let Some(upstream) = service.pick() else {
            tracing::warn!(?service, "no server in the rotation");
            return error_response(ProxyErrorKind::NoHealthyServer);
        };
        if let Err(kind) = self.prepare_upstream_request(&mut parts, &service, upstream, peer) {
            return error_response(kind);
        }

        let client = match upstream.protocol() {
            UpstreamProtocol::Http1 => &self.inner.http1,
            UpstreamProtocol::H2c => &self.inner.h2c,
        };
        let sent = client.request(Request::from_parts(parts, body));
        let result = match self.inner.config.response_header_timeout {
            Some(limit) => match tokio::time::timeout(limit, sent).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::warn!(
                        upstream = upstream.url(),
                        timeout = ?limit,
                        "upstream sent no response headers in time"
                    );
                    return error_response(ProxyErrorKind::UpstreamTimeout);
                }
            },
            None => sent.await,
        };
        match result {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop_response(&mut parts.headers);
                // The client's connection decides the wire version, not the upstream's.
                parts.version = Version::HTTP_11;
                Response::from_parts(parts, body.boxed())
            }
            Err(error) => {
                let kind = if error.is_connect() {
                    ProxyErrorKind::UpstreamConnect
                } else {
                    ProxyErrorKind::UpstreamClosed
                };
                tracing::warn!(
                    upstream = upstream.url(),
                    error = %error_chain(&error),
                    "{kind}"
                );
                error_response(kind)
            }
        }
    }

    /// Turns the client's request head into the upstream's: forwarded headers, the server's
    /// scheme and authority with the request's own path and query, and the Host to send.
    fn prepare_upstream_request(
        &self,
        parts: &mut Parts,
        service: &HttpService,
        upstream: &Upstream,
        peer: IpAddr,
    ) -> Result<(), ProxyErrorKind> {
        let config = &self.inner.config;
        // HTTP/2 clients send `:authority`, which `http` keeps in the URI, not a Host header.
        let client_host = match parts.headers.get(HOST) {
            Some(host) => Some(host.clone()),
            None => parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
        };
        let host_text = client_host
            .as_ref()
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
            .to_owned();
        rewrite_request_headers(
            &mut parts.headers,
            &ForwardContext {
                peer,
                tls: config.tls,
                host: &host_text,
                upgrade: false,
                server_name: &config.server_name,
                policy: &config.forwarded,
            },
        );

        let path_and_query = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        // h2c is HTTP/2 over plain `http`; the HTTP/2-only client is what makes it h2c.
        parts.uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(upstream.authority().clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|error| {
                tracing::warn!(upstream = upstream.url(), %error, "cannot build upstream URI");
                ProxyErrorKind::Internal
            })?;
        parts.version = match upstream.protocol() {
            UpstreamProtocol::Http1 => Version::HTTP_11,
            UpstreamProtocol::H2c => Version::HTTP_2,
        };
        match client_host {
            Some(host) if service.pass_host_header() => {
                parts.headers.insert(HOST, host);
            }
            // Without a Host header the client sends the upstream's authority.
            _ => {
                parts.headers.remove(HOST);
            }
        }
        Ok(())
    }
}

fn upstream_client(http2_only: bool, idle_timeout: Duration) -> Client<HttpConnector, Incoming> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(idle_timeout)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .http2_only(http2_only)
        .build(connector)
}

fn error_response(kind: ProxyErrorKind) -> Response<ProxyBody> {
    let body = Full::new(Bytes::from_static(error_response_body(kind).as_bytes()))
        .map_err(|never| match never {})
        .boxed();
    let mut response = Response::new(body);
    *response.status_mut() = kind.status();
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// hyper-util's errors say little at the top ("client error (Connect)"); the cause is below.
fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}
