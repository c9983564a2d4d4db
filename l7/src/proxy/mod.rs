//! Forwarding a request to the servers of a load-balanced service: the server is picked in
//! Traefik's EDF order, the request is rewritten for it (scheme, authority, version, Host per
//! `passHostHeader`) and sent with a shared connection pool (HTTP/1.1 or h2c), and transport
//! failures become Traefik's answers (502, 504).
//!
//! Owns the client side of plain-HTTP upstreams; the server side is [`crate::server`].

mod upstream;

use std::error::Error as StdError;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use http::header::HOST;
use http::uri::{PathAndQuery, Scheme, Uri};
use http::{Request, Response, Version};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::error::ProxyErrorKind;
use crate::forwarded::strip_hop_by_hop_response;
use crate::handler::{Body, BoxFuture, Handler, boxed, error_response};

pub use upstream::{HttpService, Upstream, UpstreamError, UpstreamProtocol};

/// Client settings shared by the services of a snapshot.
#[derive(Debug, Clone)]
pub struct ForwardConfig {
    /// Time an upstream has to send response headers (`responseHeaderTimeout`); `None` waits.
    pub response_header_timeout: Option<Duration>,
    /// How long an idle upstream connection stays pooled (`idleConnTimeout`).
    pub upstream_idle_timeout: Duration,
}

impl Default for ForwardConfig {
    /// Traefik's defaults.
    fn default() -> Self {
        Self {
            response_header_timeout: None,
            upstream_idle_timeout: Duration::from_secs(90),
        }
    }
}

/// Pooled upstream connections; one per set of client settings.
pub struct Forwarder {
    config: ForwardConfig,
    http1: Client<HttpConnector, Body>,
    h2c: Client<HttpConnector, Body>,
}

impl Forwarder {
    pub fn new(config: ForwardConfig) -> Arc<Self> {
        Arc::new(Forwarder {
            http1: upstream_client(false, config.upstream_idle_timeout),
            h2c: upstream_client(true, config.upstream_idle_timeout),
            config,
        })
    }
}

/// A load-balancer service as a handler.
pub struct ServiceHandler {
    service: HttpService,
    forwarder: Arc<Forwarder>,
}

impl ServiceHandler {
    pub fn new(service: HttpService, forwarder: Arc<Forwarder>) -> Self {
        ServiceHandler { service, forwarder }
    }
}

impl Handler for ServiceHandler {
    fn call(&self, request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
        Box::pin(self.forward(request))
    }
}

impl ServiceHandler {
    async fn forward(&self, request: Request<Body>) -> Response<Body> {
        let Some(upstream) = self.service.pick() else {
            tracing::warn!(service = ?self.service, "no server in the rotation");
            return error_response(ProxyErrorKind::NoHealthyServer);
        };
        let (mut parts, body) = request.into_parts();
        if let Err(kind) = self.prepare_upstream_request(&mut parts, upstream) {
            return error_response(kind);
        }
        let client = match upstream.protocol() {
            UpstreamProtocol::Http1 => &self.forwarder.http1,
            UpstreamProtocol::H2c => &self.forwarder.h2c,
        };
        let sent = client.request(Request::from_parts(parts, body));
        let result = match self.forwarder.config.response_header_timeout {
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
                Response::from_parts(parts, boxed(body))
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

    /// Turns the client's request head into the upstream's: the server's scheme and
    /// authority with the request's own path and query, and the Host to send.
    fn prepare_upstream_request(
        &self,
        parts: &mut http::request::Parts,
        upstream: &Upstream,
    ) -> Result<(), ProxyErrorKind> {
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
        if !self.service.pass_host_header() {
            // Without a Host header the client sends the upstream's authority.
            parts.headers.remove(HOST);
        }
        Ok(())
    }
}

fn upstream_client(http2_only: bool, idle_timeout: Duration) -> Client<HttpConnector, Body> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(idle_timeout)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .http2_only(http2_only)
        .build(connector)
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
