//! The leaf of the HTTP path: [`ServerHandler`] forwards a request to one server URL
//! (`services.<n>.loadBalancer.servers[].url`) through its [`Transport`].
//!
//! It rewrites the request for the server (URI, Host, version, hop-by-hop headers), streams
//! both bodies, turns failures into Traefik's error responses, and joins the two connections
//! of a protocol upgrade (WebSocket). `X-Forwarded-*` headers are the entrypoint's job.

use std::sync::Arc;
use std::time::Instant;

use http::header::{HOST, HeaderValue, TRAILER, UPGRADE};
use http::request::Parts;
use http::uri::{Authority, PathAndQuery, Uri};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use l4::retire::Retirement;

use super::{Pool, Protocol, Transport};
use crate::error::ProxyErrorKind;
use crate::forwarded::{is_upgrade_request, strip_hop_by_hop_request, strip_hop_by_hop_response};
use crate::handler::{Body, BoxFuture, Handler, boxed, error_response};

/// Per-server options of a load-balancer service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerOptions {
    /// `passHostHeader`: the server sees the client's Host rather than its own authority.
    pub pass_host_header: bool,
    /// `servers[].preservePath`: the URL's path is prepended to the request's.
    pub preserve_path: bool,
}

impl Default for ServerOptions {
    /// Traefik's defaults.
    fn default() -> Self {
        Self {
            pass_host_header: true,
            preserve_path: false,
        }
    }
}

/// A server URL that cannot be forwarded to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerUrlError {
    #[error("server url {url:?} is not a valid URL")]
    InvalidUrl { url: String },
    #[error("server url {url:?}: scheme {scheme:?} is not supported (use http, https or h2c)")]
    UnsupportedScheme { url: String, scheme: String },
    #[error("server url {url:?} has no host")]
    MissingHost { url: String },
}

/// Where one server is, read from its URL once.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    protocol: Protocol,
    authority: Authority,
    /// The URL's path, used only with `preservePath`.
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Self, ServerUrlError> {
        let uri: Uri = url.parse().map_err(|_| ServerUrlError::InvalidUrl {
            url: url.to_owned(),
        })?;
        let scheme = uri.scheme_str().unwrap_or("");
        let protocol =
            Protocol::from_scheme(scheme).ok_or_else(|| ServerUrlError::UnsupportedScheme {
                url: url.to_owned(),
                scheme: scheme.to_owned(),
            })?;
        let authority = uri
            .authority()
            .filter(|a| !a.host().is_empty())
            .cloned()
            .ok_or_else(|| ServerUrlError::MissingHost {
                url: url.to_owned(),
            })?;
        Ok(Self {
            protocol,
            authority,
            path: uri.path().to_owned(),
        })
    }
}

/// Forwards requests to one server.
pub struct ServerHandler {
    transport: Arc<Transport>,
    url: String,
    target: Target,
    options: ServerOptions,
    /// The server's own pool when it may speak HTTP/2 (see [`Transport`]).
    pinned: Option<Arc<Pool>>,
}

impl std::fmt::Debug for ServerHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandler")
            .field("url", &self.url)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// The handler forwarding to the server at `url` through this transport's pools.
    pub fn server(
        self: &Arc<Self>,
        url: &str,
        options: ServerOptions,
    ) -> Result<ServerHandler, ServerUrlError> {
        let target = Target::parse(url)?;
        let pinned = self
            .may_use_http2(target.protocol)
            .then(|| self.pinned_pool(target.protocol, &target.authority));
        Ok(ServerHandler {
            transport: Arc::clone(self),
            url: url.to_owned(),
            target,
            options,
            pinned,
        })
    }
}

impl ServerHandler {
    /// The server URL as configured.
    pub fn url(&self) -> &str {
        &self.url
    }

    async fn forward(&self, mut request: Request<Body>) -> Response<Body> {
        let client_version = request.version();
        // HTTP/2 has no `Upgrade`: an h2c server gets the request without it.
        let upgrade = match self.target.protocol {
            Protocol::H2c => None,
            Protocol::Http | Protocol::Https => ClientUpgrade::take(&mut request),
        };
        let pinned = self.pinned.as_deref().filter(|_| upgrade.is_none());
        let (mut parts, body) = request.into_parts();
        let head = RequestHead {
            target: &self.target,
            options: self.options,
            upgrade: upgrade.is_some(),
            host_in_uri: pinned.is_some(),
        };
        if let Err(error) = head.rewrite(&mut parts) {
            tracing::warn!(server = self.url, %error, "cannot build the request for the server");
            return error_response(ProxyErrorKind::BadRequest);
        }
        let pool = match pinned {
            Some(pool) => pool,
            None => self
                .transport
                .shared_pool(self.target.protocol, upgrade.is_some()),
        };
        let sent = self
            .transport
            .dispatch(pool, Request::from_parts(parts, body))
            .await;
        let mut response = match sent {
            Ok(response) => response,
            Err(error) => {
                // The cause is already the whole chain of the client's error.
                tracing::warn!(server = self.url, %error, "the request to the server failed");
                return error_response(error.kind());
            }
        };
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            return self.switch_protocols(upgrade, response, client_version);
        }
        // `Trailer` is in Go's hop-by-hop list, but Go re-announces the trailers; hyper only
        // sends HTTP/1.1 trailers that `Trailer` announces, so it is kept.
        let trailer: Vec<HeaderValue> = response
            .headers()
            .get_all(TRAILER)
            .iter()
            .cloned()
            .collect();
        strip_hop_by_hop_response(response.headers_mut());
        for value in trailer {
            response.headers_mut().append(TRAILER, value);
        }
        *response.version_mut() = client_version;
        response.map(boxed)
    }

    /// A 101 answer: checked against what the client asked for, returned to the client, and
    /// the two upgraded connections joined once both sides have switched.
    fn switch_protocols(
        &self,
        upgrade: Option<ClientUpgrade>,
        mut response: Response<Incoming>,
        client_version: Version,
    ) -> Response<Body> {
        let Some(client) = upgrade else {
            tracing::warn!(
                server = self.url,
                "the server switched protocols but the client did not ask for an upgrade"
            );
            return error_response(ProxyErrorKind::UpstreamProtocol);
        };
        let granted = response.headers().get(UPGRADE);
        if !granted.is_some_and(|g| {
            g.as_bytes()
                .eq_ignore_ascii_case(client.protocol.as_bytes())
        }) {
            tracing::warn!(
                server = self.url,
                requested = ?client.protocol,
                granted = ?granted,
                "the server switched to another protocol than the one requested"
            );
            return error_response(ProxyErrorKind::UpstreamProtocol);
        }
        let server = hyper::upgrade::on(&mut response);
        let url = self.url.clone();
        let retirement = client.retirement;
        tokio::spawn(async move {
            let (client, server) = match tokio::try_join!(client.on_upgrade, server) {
                Ok(both) => both,
                Err(error) => {
                    tracing::debug!(server = url, %error, "protocol upgrade abandoned");
                    return;
                }
            };
            let (mut client, mut server) = (TokioIo::new(client), TokioIo::new(server));
            let relay = tokio::io::copy_bidirectional(&mut client, &mut server);
            tokio::select! {
                relayed = relay => {
                    if let Err(error) = relayed {
                        tracing::debug!(server = url, %error, "upgraded connection ended with an error");
                    }
                }
                () = retirement.closing() => {
                    tracing::info!(
                        server = url,
                        "upgraded connection closed: its router was changed or removed by a reload and the drain time is over"
                    );
                }
            }
        });
        *response.version_mut() = client_version;
        response.map(boxed)
    }
}

impl Handler for ServerHandler {
    fn call(&self, request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
        Box::pin(async move {
            let mut pending = Pending::new(&self.url);
            let response = self.forward(request).await;
            pending.answered = true;
            response
        })
    }
}

/// Notes a request whose client went away before the response (Traefik's 499): the handler
/// future is dropped while this is still pending.
struct Pending<'a> {
    server: &'a str,
    started: Instant,
    answered: bool,
}

impl<'a> Pending<'a> {
    fn new(server: &'a str) -> Self {
        Self {
            server,
            started: Instant::now(),
            answered: false,
        }
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.answered {
            tracing::info!(
                server = self.server,
                elapsed = ?self.started.elapsed(),
                "499 the client closed the request before the response"
            );
        }
    }
}

/// What the client asked to switch to, and its side of the switch.
struct ClientUpgrade {
    protocol: HeaderValue,
    on_upgrade: OnUpgrade,
    /// The router's, from the request (a request that did not come through a router, from a
    /// test or an internal handler, gets one that never retires).
    retirement: Retirement,
}

impl ClientUpgrade {
    /// Takes the upgrade out of a request that asks for one on a connection that can make
    /// it (HTTP/1.1 served with upgrades). Other requests lose their `Upgrade` header with
    /// the hop-by-hop headers.
    fn take(request: &mut Request<Body>) -> Option<Self> {
        if !is_upgrade_request(request.headers())
            || request.extensions().get::<OnUpgrade>().is_none()
        {
            return None;
        }
        let protocol = request.headers().get(UPGRADE)?.clone();
        let retirement = request
            .extensions()
            .get::<Retirement>()
            .cloned()
            .unwrap_or_default();
        Some(Self {
            protocol,
            on_upgrade: hyper::upgrade::on(request),
            retirement,
        })
    }
}

/// How a client's request head becomes the server's.
struct RequestHead<'a> {
    target: &'a Target,
    options: ServerOptions,
    /// The request is a protocol upgrade: `Connection: Upgrade` and `Upgrade` are kept.
    upgrade: bool,
    /// The request goes through a pool pinned to the server, so its URI carries the Host to
    /// announce (HTTP/2 `:authority`, HTTP/1.1 `Host`) instead of the server's address.
    host_in_uri: bool,
}

impl RequestHead<'_> {
    /// The server's scheme and authority, the request's path and query (after the URL's
    /// path with `preservePath`), the Host to send, the version of the server's protocol,
    /// and no hop-by-hop headers.
    fn rewrite(&self, parts: &mut Parts) -> Result<(), http::Error> {
        // HTTP/2 clients send `:authority`, which `http` keeps in the URI, not a Host header.
        let client_host = match parts.headers.get(HOST) {
            Some(host) => Some(host.clone()),
            None => parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
        };
        let passed_host = client_host.filter(|_| self.options.pass_host_header);
        strip_hop_by_hop_request(&mut parts.headers, self.upgrade);

        let announced_authority = passed_host
            .as_ref()
            .filter(|_| self.host_in_uri)
            .and_then(|host| Authority::try_from(host.as_bytes()).ok());
        let authority = match announced_authority {
            Some(announced) => {
                // hyper-util writes it as Host on HTTP/1.1 and `:authority` on HTTP/2.
                parts.headers.remove(HOST);
                announced
            }
            None => {
                let host = match passed_host {
                    Some(host) => host,
                    None => HeaderValue::from_str(self.target.authority.as_str())?,
                };
                parts.headers.insert(HOST, host);
                self.target.authority.clone()
            }
        };
        parts.uri = Uri::builder()
            .scheme(self.target.protocol.wire_scheme())
            .authority(authority)
            .path_and_query(upstream_path_and_query(
                &parts.uri,
                &self.target.path,
                self.options.preserve_path,
            )?)
            .build()?;
        parts.version = self.target.protocol.request_version();
        Ok(())
    }
}

/// The request's path (prefixed by the URL's with `preservePath`, joined by one slash as
/// Go's reverse proxy does) and its query, where `;` separators become `&` as in Traefik.
fn upstream_path_and_query(
    request: &Uri,
    url_path: &str,
    preserve_path: bool,
) -> Result<PathAndQuery, http::Error> {
    let request_path = match request.path() {
        "" => "/",
        path => path,
    };
    let mut out = if preserve_path {
        join_paths(url_path, request_path)
    } else {
        request_path.to_owned()
    };
    if let Some(query) = request.query() {
        out.push('?');
        out.push_str(&query.replace(';', "&"));
    }
    Ok(PathAndQuery::try_from(out)?)
}

fn join_paths(base: &str, path: &str) -> String {
    match (base.ends_with('/'), path.starts_with('/')) {
        (true, true) => format!("{base}{}", &path[1..]),
        (false, false) => format!("{base}/{path}"),
        _ => format!("{base}{path}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::empty_body;

    fn target(url: &str) -> Target {
        Target::parse(url).unwrap()
    }

    fn rewritten(request: Request<Body>, url: &str, options: ServerOptions) -> Parts {
        rewritten_with(request, url, options, false)
    }

    fn rewritten_with(
        request: Request<Body>,
        url: &str,
        options: ServerOptions,
        host_in_uri: bool,
    ) -> Parts {
        let (mut parts, _) = request.into_parts();
        let target = target(url);
        let head = RequestHead {
            target: &target,
            options,
            upgrade: false,
            host_in_uri,
        };
        head.rewrite(&mut parts).unwrap();
        parts
    }

    fn pass_host(pass_host_header: bool) -> ServerOptions {
        ServerOptions {
            pass_host_header,
            preserve_path: false,
        }
    }

    #[test]
    fn urls_give_protocol_authority_and_path() {
        let t = target("h2c://10.0.0.1:8080/base?ignored=1");
        assert_eq!(t.protocol, Protocol::H2c);
        assert_eq!(t.authority.as_str(), "10.0.0.1:8080");
        assert_eq!(t.path, "/base");
        assert_eq!(target("HTTPS://[::1]:8443").protocol, Protocol::Https);
    }

    #[test]
    fn bad_urls_are_refused_with_the_reason() {
        assert!(matches!(
            Target::parse("ftp://a:1"),
            Err(ServerUrlError::UnsupportedScheme { scheme, .. }) if scheme == "ftp"
        ));
        assert!(matches!(
            Target::parse("/path"),
            Err(ServerUrlError::UnsupportedScheme { .. })
        ));
        assert!(matches!(
            Target::parse("http://a b"),
            Err(ServerUrlError::InvalidUrl { .. })
        ));
    }

    #[test]
    fn the_request_keeps_its_path_and_query_and_gets_the_server_authority() {
        let request = Request::builder()
            .uri("/api/items?id=1")
            .header("host", "app.example.com")
            .body(empty_body())
            .unwrap();
        let parts = rewritten(request, "http://10.0.0.1:8080/ignored", pass_host(true));
        assert_eq!(parts.uri, "http://10.0.0.1:8080/api/items?id=1");
        assert_eq!(parts.version, Version::HTTP_11);
        assert_eq!(parts.headers["host"], "app.example.com");
    }

    #[test]
    fn without_pass_host_header_the_host_is_the_server_authority() {
        let request = Request::builder()
            .uri("/")
            .header("host", "app.example.com")
            .body(empty_body())
            .unwrap();
        let parts = rewritten(request, "https://backend.internal:8443", pass_host(false));
        assert_eq!(parts.headers["host"], "backend.internal:8443");
        assert_eq!(parts.uri.scheme_str(), Some("https"));
    }

    #[test]
    fn an_http2_clients_authority_is_its_host() {
        let request = Request::builder()
            .uri("https://app.example.com/x")
            .version(Version::HTTP_2)
            .body(empty_body())
            .unwrap();
        let parts = rewritten(request, "h2c://10.0.0.1:9000", pass_host(true));
        assert_eq!(parts.headers["host"], "app.example.com");
        assert_eq!(parts.uri, "http://10.0.0.1:9000/x");
        assert_eq!(parts.version, Version::HTTP_2);
    }

    #[test]
    fn a_pinned_pool_gets_the_host_to_announce_in_the_uri() {
        let request = || {
            Request::builder()
                .uri("/x?y=1")
                .header("host", "app.example.com")
                .body(empty_body())
                .unwrap()
        };
        let parts = rewritten_with(request(), "h2c://10.0.0.1:9000", pass_host(true), true);
        assert_eq!(parts.uri, "http://app.example.com/x?y=1");
        assert!(parts.headers.get("host").is_none());

        let parts = rewritten_with(request(), "https://10.0.0.1:9443", pass_host(false), true);
        assert_eq!(parts.uri, "https://10.0.0.1:9443/x?y=1");
        assert_eq!(parts.headers["host"], "10.0.0.1:9443");
    }

    #[test]
    fn preserve_path_joins_url_and_request_paths_with_one_slash() {
        for (url, request, expected) in [
            ("http://a:1/base", "/items?x=1", "/base/items?x=1"),
            ("http://a:1/base/", "/items", "/base/items"),
            ("http://a:1", "/items", "/items"),
            ("http://a:1/base", "/", "/base/"),
        ] {
            let request = Request::builder().uri(request).body(empty_body()).unwrap();
            let options = ServerOptions {
                pass_host_header: true,
                preserve_path: true,
            };
            let parts = rewritten(request, url, options);
            assert_eq!(parts.uri.path_and_query().unwrap(), expected, "{url}");
        }
    }

    #[test]
    fn query_semicolons_become_ampersands() {
        let request = Request::builder()
            .uri("/q?a=1;b=2")
            .body(empty_body())
            .unwrap();
        let parts = rewritten(request, "http://a:1", pass_host(true));
        assert_eq!(parts.uri.query(), Some("a=1&b=2"));
    }

    #[test]
    fn hop_by_hop_headers_go_but_te_trailers_stays() {
        let request = Request::builder()
            .uri("/")
            .header("connection", "keep-alive, x-private")
            .header("x-private", "1")
            .header("te", "trailers")
            .header("upgrade", "websocket")
            .header("x-end-to-end", "1")
            .body(empty_body())
            .unwrap();
        let parts = rewritten(request, "http://a:1", pass_host(true));
        assert_eq!(parts.headers.get("te").unwrap(), "trailers");
        assert_eq!(parts.headers.get("x-end-to-end").unwrap(), "1");
        for gone in ["connection", "x-private", "upgrade"] {
            assert!(parts.headers.get(gone).is_none(), "{gone}");
        }
    }

    #[test]
    fn an_upgrade_keeps_connection_upgrade() {
        let (mut parts, _) = Request::builder()
            .uri("/ws")
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .body(empty_body())
            .unwrap()
            .into_parts();
        let target = target("http://a:1");
        let head = RequestHead {
            target: &target,
            options: ServerOptions::default(),
            upgrade: true,
            host_in_uri: false,
        };
        head.rewrite(&mut parts).unwrap();
        assert_eq!(parts.headers["connection"], "Upgrade");
        assert_eq!(parts.headers["upgrade"], "websocket");
    }
}
