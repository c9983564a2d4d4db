//! `http.serversTransports`: how requests reach servers. A [`Transport`] owns the connection
//! pools of one servers transport, so servers reached with different TLS settings never share
//! a connection; [`Transport::server`] makes the leaf handler that forwards to one server
//! URL, and [`Transport::send`] sends a request with an absolute URI as-is (health checks).
//!
//! Schemes: `http` (HTTP/1.1), `https` (HTTP/2 or HTTP/1.1 by ALPN, HTTP/1.1 only with
//! `disableHTTP2` and for protocol upgrades) and `h2c` (HTTP/2 with prior knowledge).
//! Adding `X-Forwarded-*` headers, routing and load balancing are the callers' business.

mod connector;
mod deadline;
mod server;
mod settings;
mod tls;

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use http::header::HOST;
use http::uri::{Authority, Parts as UriParts, Scheme};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::ServerName;

use crate::error::{ProxyError, ProxyErrorKind};
use crate::handler::{Body, boxed};
use connector::Connector;
use deadline::RequestBody;

pub use connector::ConnectError;
pub use server::{ServerHandler, ServerOptions, ServerUrlError};
pub use settings::{TransportError, TransportSettings};

/// How a server is spoken to, from its URL's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// `http://`: HTTP/1.1 over TCP.
    Http,
    /// `https://`: TLS, then HTTP/2 or HTTP/1.1 as ALPN decides.
    Https,
    /// `h2c://`: HTTP/2 over TCP with prior knowledge.
    H2c,
}

impl Protocol {
    /// The protocol of a URL scheme (case-insensitive), if it is one a server can have.
    pub fn from_scheme(scheme: &str) -> Option<Self> {
        [
            ("http", Self::Http),
            ("https", Self::Https),
            ("h2c", Self::H2c),
        ]
        .into_iter()
        .find(|(name, _)| scheme.eq_ignore_ascii_case(name))
        .map(|(_, protocol)| protocol)
    }

    /// The scheme on the wire: h2c is HTTP/2 over plain `http`.
    fn wire_scheme(self) -> Scheme {
        match self {
            Self::Http | Self::H2c => Scheme::HTTP,
            Self::Https => Scheme::HTTPS,
        }
    }

    /// The version a request is given for the client: HTTP/2 for h2c; for `https` ALPN
    /// decides, which hyper-util only lets it do for an HTTP/1.1 request.
    fn request_version(self) -> Version {
        match self {
            Self::Http | Self::Https => Version::HTTP_11,
            Self::H2c => Version::HTTP_2,
        }
    }
}

type Pool = Client<Connector, RequestBody>;

/// The connection pools and timeouts of one servers transport.
///
/// hyper-util names the connection target and the HTTP/2 `:authority` with the same URI
/// authority, but a proxy passing the client's Host must announce that Host to an HTTP/2
/// server while connecting to the server's address. So servers that may speak HTTP/2 get a
/// pool of their own whose connector always dials them ([`Transport::pinned_pool`]), and
/// requests through it carry the Host to announce in their URI.
pub struct Transport {
    /// `http`, `https` with `disableHTTP2`, and absolute URIs without a Host to announce.
    default: Pool,
    /// `https` with ALPN http/1.1 only: protocol upgrades cannot be made over HTTP/2.
    http1: Pool,
    /// `h2c` URIs sent as they are.
    h2c: Pool,
    /// Per-server pools for servers that may speak HTTP/2, kept while a handler uses them.
    pinned: Mutex<HashMap<(Protocol, Authority), Weak<Pool>>>,
    configs: tls::ClientConfigs,
    server_name: Option<ServerName<'static>>,
    settings: TransportSettings,
}

/// Transports by servers-transport name, kept across reloads while their settings do not
/// change: a reload then keeps the pooled connections to servers, instead of making every
/// busy client connection dial (and, for HTTPS, handshake) again.
#[derive(Default)]
pub struct TransportCache {
    kept: Mutex<HashMap<String, CachedTransport>>,
}

struct CachedTransport {
    fingerprint: u64,
    transport: Arc<Transport>,
    used: bool,
}

impl TransportCache {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, CachedTransport>> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The transport `name` had when its settings were the same, else a new one.
    pub fn reuse_or_create(
        &self,
        name: &str,
        settings: TransportSettings,
    ) -> Result<Arc<Transport>, TransportError> {
        let fingerprint = settings.fingerprint();
        let mut kept = self.lock();
        if let Some(cached) = kept.get_mut(name)
            && cached.fingerprint == fingerprint
        {
            cached.used = true;
            return Ok(cached.transport.clone());
        }
        let transport = Transport::new(settings)?;
        kept.insert(
            name.to_owned(),
            CachedTransport {
                fingerprint,
                transport: transport.clone(),
                used: true,
            },
        );
        Ok(transport)
    }

    /// Forgets the transports not asked for since the previous call; call it once the new
    /// snapshot is installed (the old snapshot's handlers keep theirs while they live).
    pub fn retain_used(&self) {
        self.lock()
            .retain(|_, cached| std::mem::take(&mut cached.used));
    }
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("server_name", &self.settings.server_name)
            .field("insecure_skip_verify", &self.settings.insecure_skip_verify)
            .field("disable_http2", &self.settings.disable_http2)
            .finish_non_exhaustive()
    }
}

impl Transport {
    pub fn new(settings: TransportSettings) -> Result<Arc<Self>, TransportError> {
        let configs = tls::client_configs(&settings)?;
        let server_name = match &settings.server_name {
            Some(name) => Some(
                ServerName::try_from(name.clone())
                    .map_err(|_| TransportError::InvalidServerName { name: name.clone() })?,
            ),
            None => None,
        };
        let connector = |tls: &Arc<_>| {
            Connector::new(settings.dial_timeout, Arc::clone(tls), server_name.clone())
        };
        let default = pool(&settings, false).build(connector(&configs.default));
        let http1 = pool(&settings, false).build(connector(&configs.http1));
        let h2c = pool(&settings, true).build(connector(&configs.default));
        Ok(Arc::new(Self {
            default,
            http1,
            h2c,
            pinned: Mutex::new(HashMap::new()),
            configs,
            server_name,
            settings,
        }))
    }

    /// Whether requests to a server of `protocol` may go over HTTP/2.
    fn may_use_http2(&self, protocol: Protocol) -> bool {
        match protocol {
            Protocol::Http => false,
            Protocol::Https => !self.settings.disable_http2,
            Protocol::H2c => true,
        }
    }

    /// The shared pool for a request whose URI names its server.
    fn shared_pool(&self, protocol: Protocol, upgrade: bool) -> &Pool {
        match protocol {
            Protocol::H2c => &self.h2c,
            Protocol::Https if upgrade => &self.http1,
            Protocol::Http | Protocol::Https => &self.default,
        }
    }

    /// The pool dialling only `server`, shared by every handler of that server while one
    /// holds it.
    fn pinned_pool(&self, protocol: Protocol, server: &Authority) -> Arc<Pool> {
        let key = (protocol, server.clone());
        // Nothing can panic while the lock is held; a poisoned map is still consistent.
        let mut pools = self.pinned.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(pool) = pools.get(&key).and_then(Weak::upgrade) {
            return pool;
        }
        pools.retain(|_, pool| pool.strong_count() > 0);
        let connector = Connector::new(
            self.settings.dial_timeout,
            Arc::clone(&self.configs.default),
            self.server_name.clone(),
        )
        .pinned_to(server.clone());
        let pool = Arc::new(pool(&self.settings, protocol == Protocol::H2c).build(connector));
        pools.insert(key, Arc::downgrade(&pool));
        pool
    }

    pub fn settings(&self) -> &TransportSettings {
        &self.settings
    }

    /// Sends a request whose URI is absolute (`http://`, `https://` or `h2c://`) as it is,
    /// with this transport's timeouts. Health checks use it.
    pub async fn send(&self, request: Request<Body>) -> Result<Response<Body>, ProxyError> {
        let uri = request.uri().to_string();
        let invalid = |cause: String| {
            ProxyError::new(ProxyErrorKind::Internal)
                .with_context(uri.clone())
                .with_cause(cause)
        };
        let not_absolute =
            || invalid("the URI is not absolute with scheme http, https or h2c".into());
        let (mut parts, body) = request.into_parts();
        let mut target = UriParts::from(std::mem::take(&mut parts.uri));
        let protocol = target
            .scheme
            .as_ref()
            .and_then(|scheme| Protocol::from_scheme(scheme.as_str()))
            .ok_or_else(not_absolute)?;
        let server = target.authority.clone().ok_or_else(not_absolute)?;
        target.scheme = Some(protocol.wire_scheme());
        // A Host for a server that may speak HTTP/2 (a health check's `hostname`) is announced
        // as the URI's authority through the server's pinned pool, as handlers do.
        let announced = parts
            .headers
            .get(HOST)
            .and_then(|host| Authority::try_from(host.as_bytes()).ok())
            .filter(|_| self.may_use_http2(protocol));
        let pinned = announced.map(|host| {
            parts.headers.remove(HOST);
            target.authority = Some(host);
            self.pinned_pool(protocol, &server)
        });
        parts.uri = Uri::from_parts(target).map_err(|error| invalid(error.to_string()))?;
        parts.version = protocol.request_version();
        let pool = match &pinned {
            Some(pool) => pool,
            None => self.shared_pool(protocol, false),
        };
        let response = self
            .dispatch(pool, Request::from_parts(parts, body))
            .await
            .map_err(|error| error.with_context(uri))?;
        Ok(response.map(boxed))
    }

    /// Sends a request already rewritten for its server through `pool`, with the
    /// response-header timeout.
    async fn dispatch(
        &self,
        pool: &Pool,
        request: Request<Body>,
    ) -> Result<Response<Incoming>, ProxyError> {
        let (parts, body) = request.into_parts();
        let (body, mut sent) = RequestBody::new(body);
        let response = pool.request(Request::from_parts(parts, body));
        let result = match self.settings.response_header_timeout {
            None => response.await,
            Some(limit) => {
                let expired = async {
                    sent.wait().await;
                    tokio::time::sleep(limit).await;
                };
                tokio::select! {
                    result = response => result,
                    () = expired => {
                        return Err(ProxyError::new(ProxyErrorKind::UpstreamTimeout).with_cause(
                            format!("no response headers within {limit:?} of the request"),
                        ));
                    }
                }
            }
        };
        result.map_err(|error| {
            // A body the client broke fails the exchange too; that is the client's doing.
            let kind = sent.client_failure().unwrap_or_else(|| classify(&error));
            ProxyError::new(kind).with_cause(error_chain(&error))
        })
    }
}

fn pool(settings: &TransportSettings, http2_only: bool) -> hyper_util::client::legacy::Builder {
    let mut builder = Client::builder(TokioExecutor::new());
    // Without timers hyper panics when a timeout is due.
    builder
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(settings.idle_conn_timeout)
        .pool_max_idle_per_host(settings.idle_per_host())
        .http2_only(http2_only)
        .http2_adaptive_window(true);
    if let Some(interval) = settings.read_idle_timeout {
        builder
            .http2_keep_alive_interval(interval)
            .http2_keep_alive_timeout(settings.ping_timeout)
            .http2_keep_alive_while_idle(true);
    }
    builder
}

/// The proxy error a failed exchange stands for: a connection that could not be opened is
/// 502 (504 when it timed out); a response that did not come or made no sense is 502.
fn classify(error: &(dyn StdError + 'static)) -> ProxyErrorKind {
    let mut connect = false;
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(error) = error.downcast_ref::<ConnectError>() {
            return if error.is_timeout() {
                ProxyErrorKind::UpstreamConnectTimeout
            } else {
                ProxyErrorKind::UpstreamConnect
            };
        }
        if let Some(error) = error.downcast_ref::<hyper_util::client::legacy::Error>() {
            connect |= error.is_connect();
        }
        if let Some(error) = error.downcast_ref::<hyper::Error>() {
            if error.is_parse() || error.is_parse_status() {
                return ProxyErrorKind::UpstreamProtocol;
            }
            if error.is_timeout() {
                return ProxyErrorKind::UpstreamTimeout;
            }
        }
        cause = error.source();
    }
    if connect {
        ProxyErrorKind::UpstreamConnect
    } else {
        ProxyErrorKind::UpstreamClosed
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::time::Duration;

    #[derive(Debug, thiserror::Error)]
    #[error("client error")]
    struct Outer(#[source] ConnectError);

    #[test]
    fn connect_failures_are_502_and_their_timeouts_504() {
        let refused = Outer(ConnectError::Dial(Box::new(io::Error::from(
            io::ErrorKind::ConnectionRefused,
        ))));
        assert_eq!(classify(&refused), ProxyErrorKind::UpstreamConnect);
        let handshake = Outer(ConnectError::Handshake(io::Error::other("bad certificate")));
        assert_eq!(classify(&handshake), ProxyErrorKind::UpstreamConnect);
        for timeout in [
            ConnectError::DialTimeout(Duration::from_secs(30)),
            ConnectError::HandshakeTimeout(Duration::from_secs(10)),
        ] {
            assert_eq!(
                classify(&Outer(timeout)),
                ProxyErrorKind::UpstreamConnectTimeout
            );
        }
    }

    #[test]
    fn other_failures_are_a_closed_upstream() {
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(classify(&reset), ProxyErrorKind::UpstreamClosed);
    }

    #[test]
    fn error_chain_names_every_cause() {
        let refused = Outer(ConnectError::Dial(Box::new(io::Error::other("refused"))));
        assert_eq!(
            error_chain(&refused),
            "client error: cannot connect: refused"
        );
    }

    #[test]
    fn schemes_name_protocols_case_insensitively() {
        assert_eq!(Protocol::from_scheme("HTTPS"), Some(Protocol::Https));
        assert_eq!(Protocol::from_scheme("h2c"), Some(Protocol::H2c));
        assert_eq!(Protocol::from_scheme("ws"), None);
    }
}
