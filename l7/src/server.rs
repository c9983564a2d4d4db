//! The HTTP server of one entrypoint: hyper serves HTTP/1.1 and HTTP/2 (h2c prior knowledge on
//! plaintext, ALPN or preface on TLS) on the connections the layer-4 dispatch hands over, and
//! every request goes through the entrypoint's front door before it reaches a router:
//! path sanitization, the forwarded headers (trusted or regenerated), routing by the rule
//! table current *at that request* (so a keep-alive connection follows reloads), the
//! domain-fronting check (421), and the router's handler chain.
//!
//! Owns the server side only: the handlers behind a route (middlewares, services, the leaf
//! that talks to a server) are built elsewhere, once per configuration snapshot.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use http::header::{ALT_SVC, CONNECTION, HOST, HeaderValue, UPGRADE};
use http::uri::{PathAndQuery, Uri};
use http::{Method, Request, Response, Version};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use l4::io::PrefixedIo;
use l4::retire::Retirement;
use l4::tcp::dispatch::{HandoffFuture, HttpConn, HttpHandoff};
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument;
use tracing::field::Empty;

use crate::error::ProxyErrorKind;
use crate::forwarded::{ForwardContext, ForwardedPolicy, rewrite_request_headers};
use crate::handler::{Body, ClientInfo, SharedHandler, boxed, error_response};
use crate::observe::{Installed, Observing, RequestObserver, TlsParams, WatchedBody};
use crate::request::{RequestView, sanitize_path};
use crate::router::Table;
use crate::trace_context::{RequestTrace, TracePolicy};

mod h3;
mod head;

/// hyper refuses an HTTP/1 read buffer smaller than this (it panics).
const MIN_H1_BUFFER: usize = 8192;

/// HTTP/2 streams a client may reset before we have answered them, per connection, before the
/// connection is closed (the rapid-reset attack, CVE-2023-44487).
const MAX_PENDING_RESETS: usize = 20;

/// How long an idle connection told to close has to do so before it is dropped: HTTP/2's
/// graceful close waits for the client to acknowledge a PING, which a hostile client never
/// does (Go's HTTP/2 server gives a GOAWAY one second too).
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What a route leads to.
#[derive(Clone)]
pub struct RouteTarget {
    pub router: Arc<str>,
    /// The router's service, qualified (`api@file`), for what observes requests; `None` for
    /// an internal route that has no service.
    pub service: Option<Arc<str>>,
    /// Entrypoint and router middlewares, then the service.
    pub handler: SharedHandler,
    /// The TLS option of a TLS router (`None` for a plaintext one): a request whose
    /// handshake used another option gets 421.
    pub tls_option: Option<Arc<str>>,
    /// Ends the router's upgraded connections (WebSockets) when a reload removes or changes
    /// the router; requests are routed afresh each time and never need it.
    pub retirement: Retirement,
}

impl std::fmt::Debug for RouteTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteTarget")
            .field("router", &self.router)
            .field("service", &self.service)
            .field("tls_option", &self.tls_option)
            .finish_non_exhaustive()
    }
}

/// The HTTP routes of one entrypoint in one configuration snapshot.
#[derive(Debug)]
pub struct HttpRoutes {
    /// Routers without `tls`: plaintext connections.
    pub plain: Table<RouteTarget>,
    /// Routers with `tls`: connections the dispatch terminated for HTTPS.
    pub tls: Table<RouteTarget>,
}

impl HttpRoutes {
    pub fn empty() -> Self {
        HttpRoutes {
            plain: Table::new(Vec::new()),
            tls: Table::new(Vec::new()),
        }
    }
}

/// The TLS facts of an HTTPS request, in its extensions next to [`ClientInfo`].
#[derive(Debug, Clone)]
pub struct TlsInfo {
    pub sni: Option<Arc<str>>,
    /// The TLS option the handshake was made with.
    pub option: Arc<str>,
    /// The client's certificate chain (leaf first), as the option's client authentication
    /// accepted it; `None` when the client presented none.
    pub peer_certificates: Option<Arc<[CertificateDer<'static>]>>,
    /// The negotiated version and cipher suite, when the connection reported them.
    pub params: Option<TlsParams>,
}

/// Entrypoint settings of the HTTP server (static configuration).
#[derive(Debug, Clone)]
pub struct EntrypointConfig {
    pub name: Arc<str>,
    /// `http2.maxConcurrentStreams`.
    pub max_concurrent_streams: u32,
    /// `http.maxHeaderBytes`.
    pub max_header_bytes: usize,
    /// `transport.respondingTimeouts.readTimeout`: time to send a request's headers.
    pub read_timeout: Option<Duration>,
    /// `transport.respondingTimeouts.writeTimeout`: time from a request to the end of its
    /// response.
    pub write_timeout: Option<Duration>,
    /// `transport.respondingTimeouts.idleTimeout`: a keep-alive connection with no request
    /// in flight (its response included) for this long is closed.
    pub idle_timeout: Option<Duration>,
    /// `forwardedHeaders`.
    pub forwarded: ForwardedPolicy,
    /// `http.sanitizePath`: `/./`, `/../` and `//` are resolved before routing and forwarding.
    pub sanitize_path: bool,
    /// `X-Forwarded-Server`; `None` leaves it out.
    pub server_name: Option<HeaderValue>,
}

impl EntrypointConfig {
    /// Traefik's defaults for an entrypoint called `name`.
    pub fn new(name: &str) -> Self {
        EntrypointConfig {
            name: Arc::from(name),
            max_concurrent_streams: 250,
            max_header_bytes: 1 << 20,
            read_timeout: Some(Duration::from_secs(60)),
            write_timeout: None,
            idle_timeout: Some(Duration::from_secs(180)),
            forwarded: ForwardedPolicy::default(),
            sanitize_path: true,
            server_name: None,
        }
    }
}

/// The HTTP server of one entrypoint. Lives as long as the listener; the routes are swapped
/// at every reload. Cheap to clone.
#[derive(Clone)]
pub struct HttpEntrypoint {
    inner: Arc<Inner>,
}

struct Inner {
    config: EntrypointConfig,
    routes: ArcSwap<HttpRoutes>,
    server: auto::Builder<TokioExecutor>,
    /// Flips to `true` when the process stops: connections finish their requests and close.
    shutdown: watch::Sender<bool>,
    /// Set with `shutdown` when another process took the listening sockets over
    /// ([`HttpEntrypoint::hand_over`]): connections close without racing a request.
    handed_over: AtomicBool,
    /// The `Alt-Svc` value responses on TLS connections carry once the entrypoint also
    /// serves HTTP/3 (set when its UDP side is bound, so the port is the real one).
    alt_svc: OnceLock<HeaderValue>,
    /// Sees every request (metrics, access logs). Empty, it costs one atomic load a request.
    observer: ArcSwapOption<Installed>,
    /// W3C trace context propagation, when tracing is configured.
    trace: ArcSwapOption<TracePolicy>,
}

impl HttpEntrypoint {
    pub fn new(config: EntrypointConfig) -> Self {
        let mut server = auto::Builder::new(TokioExecutor::new());
        {
            let mut h1 = server.http1();
            // Without a timer hyper panics when a timeout is due.
            h1.timer(TokioTimer::new())
                .max_buf_size(config.max_header_bytes.max(MIN_H1_BUFFER));
            if let Some(limit) = config.read_timeout {
                h1.header_read_timeout(limit);
            }
        }
        server
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(config.max_concurrent_streams)
            .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX))
            .max_pending_accept_reset_streams(MAX_PENDING_RESETS)
            .adaptive_window(true);
        HttpEntrypoint {
            inner: Arc::new(Inner {
                config,
                routes: ArcSwap::from_pointee(HttpRoutes::empty()),
                server,
                shutdown: watch::channel(false).0,
                handed_over: AtomicBool::new(false),
                alt_svc: OnceLock::new(),
                observer: ArcSwapOption::empty(),
                trace: ArcSwapOption::empty(),
            }),
        }
    }

    pub fn name(&self) -> &str {
        &self.inner.config.name
    }

    /// Installs the routes of a new snapshot; the next request on every connection uses them.
    pub fn set_routes(&self, routes: Arc<HttpRoutes>) {
        self.inner.routes.store(routes);
    }

    /// Installs (or, with `None`, removes) what observes every request from now on.
    pub fn set_observer(&self, observer: Option<Arc<dyn RequestObserver>>) {
        self.inner
            .observer
            .store(observer.map(|observer| Arc::new(Installed::new(observer))));
    }

    /// Installs (or, with `None`, removes) trace context propagation: from now on every
    /// request gets a span id, sent to its backend in `traceparent` and carried by its
    /// [record](crate::observe::RequestRecord::trace).
    pub fn set_tracing(&self, policy: Option<TracePolicy>) {
        self.inner.trace.store(policy.map(Arc::new));
    }

    /// Advertises HTTP/3 on UDP `port` to clients of TLS connections:
    /// `Alt-Svc: h3=":<port>"; ma=2592000` on every response from now on (the first call
    /// wins; HTTP/3 is bound once).
    pub fn advertise_http3(&self, port: u16) {
        let value = format!("h3=\":{port}\"; ma=2592000");
        if let Ok(value) = HeaderValue::from_str(&value) {
            let _ = self.inner.alt_svc.set(value);
        }
    }

    /// Asks every connection to finish the request in flight and close (HTTP/2 GOAWAY,
    /// HTTP/1.1 `Connection: close`).
    pub fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }

    /// Closes every connection without racing a client's next request, for when a new
    /// process serves the same listening sockets (a binary upgrade): an HTTP/1.1 connection
    /// answers its next request with `Connection: close` and then closes (the client opens
    /// a new connection, which the new process accepts); an HTTP/2 one gets a GOAWAY; one
    /// that sends nothing for a second is dropped. [`Self::shutdown`] instead closes idle
    /// HTTP/1.1 connections at once, which a request already on its way would hit.
    pub fn hand_over(&self) {
        self.inner.handed_over.store(true, Ordering::SeqCst);
        self.inner.shutdown.send_replace(true);
    }

    /// Serves HTTP on one connection until the client closes it, the idle timeout passes or
    /// the process stops. Errors (protocol violations, resets, timeouts) end the connection
    /// with a debug log line: they are the client's.
    pub async fn serve<I>(&self, io: I, conn: HttpConn)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.serve_connection(io, conn, None).await;
    }

    /// [`Self::serve`], with the TLS parameters of a TLS connection for its requests' records.
    async fn serve_connection<I>(&self, io: I, conn: HttpConn, tls_params: Option<TlsParams>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let config = &self.inner.config;
        let tls = conn.tls_option.as_ref().map(|option| TlsInfo {
            sni: conn.sni.clone(),
            option: option.clone(),
            peer_certificates: conn.peer_certificates.clone(),
            params: tls_params,
        });
        let client = ClientInfo {
            peer: conn.client,
            local: conn.local,
            tls: tls.is_some(),
            entrypoint: config.name.clone(),
            notes: None,
        };
        let activity = Arc::new(Activity::new());
        let alt_svc = tls.as_ref().and(self.inner.alt_svc.get().cloned());
        let service = {
            let entrypoint = self.clone();
            let activity = activity.clone();
            service_fn(move |request| {
                let entrypoint = entrypoint.clone();
                let client = client.clone();
                let tls = tls.clone();
                let in_flight = InFlight::enter(&activity);
                let alt_svc = alt_svc.clone();
                let version = request.version();
                if version == Version::HTTP_2 {
                    activity.http2.store(true, Ordering::Relaxed);
                }
                async move {
                    let (mut response, observing) =
                        entrypoint.handle_observed(request, client, tls).await;
                    // Read when the response is ready: a hand-over during the request counts.
                    if version < Version::HTTP_2
                        && response.status() != http::StatusCode::SWITCHING_PROTOCOLS
                        && entrypoint.inner.handed_over.load(Ordering::Relaxed)
                    {
                        response
                            .headers_mut()
                            .insert(CONNECTION, HeaderValue::from_static("close"));
                    }
                    if let Some(alt_svc) = alt_svc {
                        // A backend that advertises its own alternatives keeps them.
                        response.headers_mut().entry(ALT_SVC).or_insert(alt_svc);
                    }
                    Ok::<_, Infallible>(
                        response.map(|body| WatchedBody::new(body, Some(in_flight), observing)),
                    )
                }
            })
        };
        let connection = self
            .inner
            .server
            .serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::pin!(connection);
        let mut shutdown = self.inner.shutdown.subscribe();
        let mut closing = *shutdown.borrow();
        let mut goaway = false;
        let idle_limit = config.idle_timeout;
        let mut idle_close_deadline = None;
        if closing {
            if self.inner.handed_over.load(Ordering::SeqCst) {
                // Accepted just before the hand-over: its request still gets an answer.
                idle_close_deadline = Some(Instant::now() + IDLE_CLOSE_GRACE);
            } else {
                connection.as_mut().graceful_shutdown();
                goaway = true;
            }
        }
        let result = loop {
            let idle_check = async {
                match idle_limit {
                    Some(limit) => tokio::time::sleep(activity.time_left(limit)).await,
                    None => std::future::pending().await,
                }
            };
            let idle_close_overdue = async {
                match idle_close_deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                result = connection.as_mut() => break result,
                changed = shutdown.changed(), if !closing => {
                    if changed.is_err() || *shutdown.borrow() {
                        closing = true;
                        if self.inner.handed_over.load(Ordering::SeqCst) {
                            // HTTP/1.1 closes after its next response (`Connection: close`).
                            idle_close_deadline = Some(Instant::now() + IDLE_CLOSE_GRACE);
                            if activity.http2.load(Ordering::Relaxed) {
                                connection.as_mut().graceful_shutdown();
                                goaway = true;
                            }
                        } else {
                            connection.as_mut().graceful_shutdown();
                            goaway = true;
                        }
                    }
                }
                () = idle_check, if !closing => {
                    if let Some(limit) = idle_limit
                        && activity.idle_for() >= limit
                    {
                        tracing::debug!(entrypoint = %config.name, client = %conn.client, "closing an idle HTTP connection");
                        closing = true;
                        idle_close_deadline = Some(Instant::now() + IDLE_CLOSE_GRACE);
                        connection.as_mut().graceful_shutdown();
                        goaway = true;
                    }
                }
                () = idle_close_overdue => {
                    // A connection handed over before its first request turned out HTTP/2.
                    if !goaway && activity.http2.load(Ordering::Relaxed) {
                        connection.as_mut().graceful_shutdown();
                        goaway = true;
                    }
                    // A request the client slipped in before the GOAWAY still gets its answer.
                    if activity.idle_for().is_zero() {
                        idle_close_deadline = Some(Instant::now() + IDLE_CLOSE_GRACE);
                    } else {
                        tracing::debug!(entrypoint = %config.name, client = %conn.client, "dropping an idle HTTP connection that did not close");
                        break Ok(());
                    }
                }
            }
        };
        if let Err(error) = result {
            tracing::debug!(entrypoint = %config.name, client = %conn.client, error = %error, "HTTP connection ended with an error");
        }
    }

    /// One request through the front door: sanitize, forwarded headers, route, 421, handler;
    /// traced and observed when tracing and an observer are installed.
    ///
    /// Runs inside a `request` span (entrypoint, method, host, path, version, then router,
    /// service and status once known), so every log line of the request carries them.
    pub async fn handle<B>(
        &self,
        request: Request<B>,
        client: ClientInfo,
        tls: Option<TlsInfo>,
    ) -> Response<Body>
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<crate::handler::BoxError>,
    {
        let (mut response, observing) = self.handle_observed(request, client, tls).await;
        if let Some(observing) = observing {
            observing.attach(&mut response);
        }
        response
    }

    /// [`Self::handle`], with the request's observation (when it is observed) handed back
    /// beside the response instead of attached to its body: for a caller whose own response
    /// body carries it (a [`WatchedBody`]), which saves a box and a layer of polling.
    async fn handle_observed<B>(
        &self,
        mut request: Request<B>,
        client: ClientInfo,
        tls: Option<TlsInfo>,
    ) -> (Response<Body>, Option<Observing>)
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<crate::handler::BoxError>,
    {
        // Field values are only computed when a subscriber wants the span.
        let span = tracing::info_span!(
            "request",
            entrypoint = %self.inner.config.name,
            method = %request.method(),
            host = Empty,
            path = request.uri().path(),
            version = ?request.version(),
            router = Empty,
            service = Empty,
            status = Empty,
            trace_id = Empty,
        );
        if !span.is_disabled()
            && let Some(host) = request_host(request.uri(), request.headers())
        {
            span.record("host", String::from_utf8_lossy(host.as_bytes()).as_ref());
        }
        let trace = match self.inner.trace.load().as_deref() {
            Some(policy) => policy.propagate(request.headers_mut()),
            None => None,
        };
        if let Some(trace) = &trace {
            span.record("trace_id", tracing::field::display(trace.trace_id));
        }
        self.observe_and_route(request, client, tls, trace, &span)
            .instrument(span.clone())
            .await
    }

    /// [`Self::handle`] inside its span: the observation around the routing.
    async fn observe_and_route<B>(
        &self,
        request: Request<B>,
        mut client: ClientInfo,
        tls: Option<TlsInfo>,
        trace: Option<RequestTrace>,
        span: &tracing::Span,
    ) -> (Response<Body>, Option<Observing>)
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<crate::handler::BoxError>,
    {
        let observer = self.inner.observer.load_full();
        let host = request_host(request.uri(), request.headers());
        let Some(observer) = observer else {
            let (response, routed) = self.route(request.map(boxed), client, tls, host).await;
            record_outcome(span, &response, routed.as_ref());
            return (response, None);
        };
        let params = tls.as_ref().and_then(|tls| tls.params);
        let mut observing = Observing::begin(
            observer,
            &request,
            &mut client,
            params,
            host.as_ref(),
            trace,
        );
        let request = request.map(|body| observing.count(body));
        let (response, routed) = self.route(request, client, tls, host).await;
        record_outcome(span, &response, routed.as_ref());
        let router = routed.map(|target| (target.router, target.service));
        observing.respond(&response, router);
        (response, Some(observing))
    }

    /// [`Self::handle`] without the observation: the response, and the route that made it.
    /// The body comes boxed once, by the caller (counted, when the request is observed), and
    /// with its [`request_host`].
    async fn route(
        &self,
        request: Request<Body>,
        client: ClientInfo,
        tls: Option<TlsInfo>,
        host: Option<HeaderValue>,
    ) -> (Response<Body>, Option<RouteTarget>) {
        let config = &self.inner.config;
        let (mut parts, body) = request.into_parts();
        if let Err(kind) = check_host_header(&parts) {
            tracing::debug!(entrypoint = %config.name, client = %client.peer, "400: missing, repeated or malformed Host header");
            // As Go does: the rest of the connection is not trusted either.
            let mut response = error_response(kind);
            response
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
            return (response, None);
        }
        if config.sanitize_path
            && let Err(kind) = sanitize_request_path(&mut parts.uri)
        {
            return (error_response(kind), None);
        }
        let upgrade = is_upgrade(&parts.headers);
        rewrite_request_headers(
            &mut parts.headers,
            &ForwardContext {
                peer: client.peer.ip(),
                tls: client.tls,
                host: host.as_ref(),
                upgrade,
                server_name: config.server_name.as_ref(),
                policy: &config.forwarded,
            },
        );
        let target = {
            let routes = self.inner.routes.load();
            let table = if client.tls {
                &routes.tls
            } else {
                &routes.plain
            };
            let view = RequestView::from_parts(&parts, client.peer.ip());
            table.find(&view).map(|route| route.target.clone())
        };
        let Some(target) = target else {
            return (error_response(ProxyErrorKind::NoRoute), None);
        };
        if let Some(tls) = &tls
            && target.tls_option.as_deref() != Some(&*tls.option)
        {
            tracing::debug!(
                entrypoint = %config.name,
                router = %target.router,
                sni = tls.sni.as_deref().unwrap_or(""),
                "421: the request's host is served with other TLS options than the handshake's"
            );
            // Not the router's request: it never reached it.
            return (error_response(ProxyErrorKind::MisdirectedRequest), None);
        }
        // Handlers and servers see the host the request was routed by: HTTP/2's `:authority`,
        // or an absolute-form target's host, which wins over the Host header as in Go.
        if let Some(host) = host {
            parts.headers.insert(HOST, host);
        }
        parts.extensions.insert(client);
        if upgrade {
            // The tunnel, if the server switches protocols, lives as long as the router.
            parts.extensions.insert(target.retirement.clone());
        }
        if let Some(tls) = tls {
            parts.extensions.insert(tls);
        }
        let request = Request::from_parts(parts, body);
        let response = target.handler.call(request);
        let response = match config.write_timeout {
            Some(limit) => match tokio::time::timeout(limit, response).await {
                Ok(response) => response,
                Err(_) => {
                    tracing::warn!(entrypoint = %config.name, router = %target.router, timeout = ?limit, "no response within the entrypoint's writeTimeout");
                    error_response(ProxyErrorKind::UpstreamTimeout)
                }
            },
            None => response.await,
        };
        (response, Some(target))
    }
}

impl HttpEntrypoint {
    /// Waits for the first request head of a connection (see [`head`]); `None` when the
    /// client left or the process stops first (a head already on its way gets
    /// [`IDLE_CLOSE_GRACE`] to arrive).
    async fn first_head<I>(
        &self,
        io: &mut I,
        prefix: bytes::Bytes,
        client: &HttpConn,
    ) -> Option<bytes::Bytes>
    where
        I: AsyncRead + Unpin,
    {
        let config = &self.inner.config;
        let mut shutdown = self.inner.shutdown.subscribe();
        let stopped = async {
            let _ = shutdown.wait_for(|stopping| *stopping).await;
            tokio::time::sleep(IDLE_CLOSE_GRACE).await;
        };
        let limit = config.max_header_bytes.max(MIN_H1_BUFFER);
        let head = tokio::select! {
            head = head::wait_for_head(io, prefix, limit, config.read_timeout) => head,
            () = stopped => Ok(head::Head::Gone),
        };
        match head {
            Ok(head::Head::Ready(bytes)) => Some(bytes),
            Ok(head::Head::Gone) => {
                tracing::debug!(entrypoint = %config.name, client = %client.client, "connection closed before its first request");
                None
            }
            Err(error) => {
                tracing::debug!(entrypoint = %config.name, client = %client.client, error = %error, "connection failed before its first request");
                None
            }
        }
    }
}

impl HttpHandoff for HttpEntrypoint {
    fn serve_plain(&self, io: PrefixedIo<TcpStream>, conn: HttpConn) -> HandoffFuture {
        let entrypoint = self.clone();
        Box::pin(async move {
            let prefix = io.prefix().clone();
            let mut stream = io.into_inner();
            let Some(head) = entrypoint.first_head(&mut stream, prefix, &conn).await else {
                return;
            };
            // Boxed apart, so that a connection still waiting for its head holds only it.
            Box::pin(entrypoint.serve(PrefixedIo::new(head, stream), conn)).await
        })
    }

    fn serve_tls(
        &self,
        mut io: tokio_rustls::server::TlsStream<PrefixedIo<TcpStream>>,
        conn: HttpConn,
    ) -> HandoffFuture {
        let entrypoint = self.clone();
        let params = TlsParams::of(io.get_ref().1);
        Box::pin(async move {
            let Some(head) = entrypoint
                .first_head(&mut io, bytes::Bytes::new(), &conn)
                .await
            else {
                return;
            };
            let io = PrefixedIo::new(head, io);
            Box::pin(entrypoint.serve_connection(io, conn, params)).await
        })
    }
}

/// The request's authority: the absolute-form target's (or HTTP/2 `:authority`) over `Host`,
/// as Go's `net/http` decides.
/// Router, service and status on the request's span.
fn record_outcome(span: &tracing::Span, response: &Response<Body>, routed: Option<&RouteTarget>) {
    if span.is_disabled() {
        return;
    }
    span.record("status", response.status().as_u16());
    if let Some(target) = routed {
        span.record("router", &*target.router);
        if let Some(service) = &target.service {
            span.record("service", &**service);
        }
    }
}

fn request_host(uri: &Uri, headers: &http::HeaderMap) -> Option<HeaderValue> {
    match uri.authority() {
        Some(authority) => {
            // `user@` is no part of a Host (RFC 9110 §7.2).
            let host = authority
                .as_str()
                .rsplit_once('@')
                .map_or(authority.as_str(), |(_, host)| host);
            HeaderValue::from_str(host).ok()
        }
        None => headers.get(HOST).cloned(),
    }
}

/// The Host header rules of Go's HTTP/1 server, which Traefik inherits: HTTP/1.1 needs one
/// (CONNECT aside), no version may carry two, and the value holds only the characters of
/// RFC 3986's `host [":" port]`. A request that two parsers could read as addressed to two
/// different hosts is refused rather than routed. HTTP/2 names its host in `:authority`.
fn check_host_header(parts: &http::request::Parts) -> Result<(), ProxyErrorKind> {
    if parts.version >= Version::HTTP_2 {
        return Ok(());
    }
    let mut hosts = parts.headers.get_all(HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => Err(ProxyErrorKind::BadRequest),
        (Some(host), None) if !host.as_bytes().iter().copied().all(is_host_byte) => {
            Err(ProxyErrorKind::BadRequest)
        }
        (None, _) if parts.version == Version::HTTP_11 && parts.method != Method::CONNECT => {
            Err(ProxyErrorKind::BadRequest)
        }
        _ => Ok(()),
    }
}

/// A byte of RFC 3986 §3.2.2 `host` (unreserved, sub-delims, `%` escapes, IPv6 brackets)
/// or of the `:port` after it.
fn is_host_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%:[]".contains(&byte)
}

fn is_upgrade(headers: &http::HeaderMap) -> bool {
    headers.contains_key(UPGRADE)
        && headers.get_all(CONNECTION).iter().any(|value| {
            value.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
        })
}

/// Rewrites the request path to its sanitized form when it differs.
fn sanitize_request_path(uri: &mut Uri) -> Result<(), ProxyErrorKind> {
    let Some(path_and_query) = uri.path_and_query() else {
        return Ok(());
    };
    let clean = sanitize_path(path_and_query.path());
    if clean == path_and_query.path() {
        return Ok(());
    }
    let rebuilt = match path_and_query.query() {
        Some(query) => format!("{clean}?{query}"),
        None => clean.into_owned(),
    };
    let mut parts = std::mem::take(uri).into_parts();
    parts.path_and_query =
        Some(PathAndQuery::try_from(rebuilt).map_err(|_| ProxyErrorKind::BadRequest)?);
    *uri = Uri::from_parts(parts).map_err(|_| ProxyErrorKind::BadRequest)?;
    Ok(())
}

/// How many requests are in flight on a connection and when the last one ended, for the idle
/// timeout. Bytes alone are no activity: HTTP/2 PINGs, SETTINGS or a header block trickled
/// in would otherwise keep a connection that serves nothing open forever (Go's HTTP/2 server
/// also counts only open streams).
struct Activity {
    started: Instant,
    /// Milliseconds after `started`.
    last: AtomicU64,
    in_flight: AtomicUsize,
    /// Whether the connection carried an HTTP/2 request (it then closes by GOAWAY).
    http2: AtomicBool,
}

impl Activity {
    fn new() -> Self {
        Activity {
            started: Instant::now(),
            last: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            http2: AtomicBool::new(false),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(now, Ordering::Relaxed);
    }

    /// Idle time; zero while a request is in flight.
    fn idle_for(&self) -> Duration {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }

    /// How long until the connection could be idle for `limit` (at least a little, so a
    /// busy connection is not polled in a tight loop).
    fn time_left(&self, limit: Duration) -> Duration {
        limit
            .saturating_sub(self.idle_for())
            .max(Duration::from_millis(100))
    }
}

/// Counts a request as in flight until dropped (also when the client goes away mid-request).
/// It travels with the response body, so a response still being sent keeps the connection busy.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn enter(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_sanitized_keeping_the_query() {
        let mut uri: Uri = "/a/./b/../c//d?x=/../y".parse().unwrap();
        sanitize_request_path(&mut uri).unwrap();
        assert_eq!(uri, "/a/c/d?x=/../y");
        let mut absolute: Uri = "http://h.test/../x".parse().unwrap();
        sanitize_request_path(&mut absolute).unwrap();
        assert_eq!(absolute, "http://h.test/x");
        let mut star: Uri = "*".parse().unwrap();
        sanitize_request_path(&mut star).unwrap();
        assert_eq!(star, "*");
    }

    fn head(version: Version, method: Method, hosts: &[&str]) -> http::request::Parts {
        let mut builder = Request::builder().method(method).version(version).uri("/");
        for host in hosts {
            builder = builder.header(HOST, *host);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn http1_host_header_must_be_single_and_well_formed() {
        let ok = |version, hosts: &[&str]| check_host_header(&head(version, Method::GET, hosts));
        assert_eq!(ok(Version::HTTP_11, &["a.test"]), Ok(()));
        assert_eq!(ok(Version::HTTP_11, &["[::1]:8080"]), Ok(()));
        assert_eq!(ok(Version::HTTP_11, &["xn--bcher-kva.test:80"]), Ok(()));
        assert_eq!(
            ok(Version::HTTP_11, &["a.test", "b.test"]),
            Err(ProxyErrorKind::BadRequest)
        );
        assert_eq!(
            ok(Version::HTTP_11, &["a.test", "a.test"]),
            Err(ProxyErrorKind::BadRequest)
        );
        assert_eq!(
            ok(Version::HTTP_11, &["a.test b.test"]),
            Err(ProxyErrorKind::BadRequest)
        );
        assert_eq!(
            ok(Version::HTTP_11, &["a.test/x"]),
            Err(ProxyErrorKind::BadRequest)
        );
        assert_eq!(
            ok(Version::HTTP_11, &["a\"b.test"]),
            Err(ProxyErrorKind::BadRequest)
        );
        assert_eq!(
            ok(Version::HTTP_11, &["bücher.test"]),
            Err(ProxyErrorKind::BadRequest)
        );
        assert_eq!(ok(Version::HTTP_11, &[]), Err(ProxyErrorKind::BadRequest));
        // HTTP/1.0 predates Host; CONNECT names its target in the request line.
        assert_eq!(ok(Version::HTTP_10, &[]), Ok(()));
        assert_eq!(
            ok(Version::HTTP_10, &["a.test", "b.test"]),
            Err(ProxyErrorKind::BadRequest)
        );
        let connect = head(Version::HTTP_11, Method::CONNECT, &[]);
        assert_eq!(check_host_header(&connect), Ok(()));
        // HTTP/2 routes by `:authority`.
        assert_eq!(ok(Version::HTTP_2, &[]), Ok(()));
    }

    #[test]
    fn absolute_form_host_wins_over_the_host_header_without_user_info() {
        let parts = |uri: &str| {
            Request::get(uri)
                .header(HOST, "header.test")
                .body(())
                .unwrap()
                .into_parts()
                .0
        };
        let request_host = |parts: http::request::Parts| request_host(&parts.uri, &parts.headers);
        assert_eq!(request_host(parts("/x")).unwrap(), "header.test");
        assert_eq!(
            request_host(parts("http://url.test:8080/x")).unwrap(),
            "url.test:8080"
        );
        assert_eq!(
            request_host(parts("http://user:pw@url.test/x")).unwrap(),
            "url.test"
        );
    }

    #[test]
    fn upgrade_needs_both_headers() {
        let mut headers = http::HeaderMap::new();
        headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
        assert!(!is_upgrade(&headers));
        headers.insert(CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        assert!(is_upgrade(&headers));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_time_counts_only_without_requests_in_flight() {
        let activity = Arc::new(Activity::new());
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(activity.idle_for() >= Duration::from_secs(5));
        assert_eq!(
            activity.time_left(Duration::from_secs(8)),
            Duration::from_secs(3)
        );
        let request = InFlight::enter(&activity);
        assert_eq!(activity.idle_for(), Duration::ZERO);
        drop(request);
        assert!(activity.idle_for() < Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_keeps_its_request_in_flight_until_its_body_is_gone() {
        let activity = Arc::new(Activity::new());
        let body = WatchedBody::new(
            crate::handler::empty_body(),
            Some(InFlight::enter(&activity)),
            None,
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(activity.idle_for(), Duration::ZERO);
        drop(body);
        assert!(activity.idle_for() < Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_read_to_its_end_lets_its_request_go_before_it_is_dropped() {
        use http_body_util::BodyExt;
        let activity = Arc::new(Activity::new());
        let mut body = WatchedBody::new(
            crate::handler::full_body("done"),
            Some(InFlight::enter(&activity)),
            None,
        );
        let frame = body.frame().await.expect("a frame").expect("data");
        assert_eq!(frame.into_data().ok().as_deref(), Some(&b"done"[..]));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(activity.idle_for(), Duration::ZERO, "still sending");
        assert!(body.frame().await.is_none());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(
            activity.idle_for() >= Duration::from_secs(2),
            "sent, still held"
        );
        drop(body);
    }
}
