//! What happens to one accepted TCP connection on an entrypoint.
//!
//! The order follows Traefik's shared-entrypoint dispatch (reference §4.1, §4.2):
//! PROXY protocol header (trusted peers only), the server-first fast path, the
//! first-bytes deadline (`serverFirstTimeout`, an extension), the Postgres SSLRequest,
//! then the ClientHello (SNI, ALPN) and the router tables. Entrypoints with server-first
//! STARTTLS routers (SMTP, IMAP, POP3, MySQL) greet clients that stay silent and hold
//! the dialogue up to the ClientHello ([`super::starttls`]).
//! Connections that belong to HTTP routers (plaintext ones no TCP router takes, TLS
//! ones whose SNI leads to an HTTPS router) are terminated here if need be and handed
//! to the entrypoint's [`HttpHandoff`]; this crate knows nothing of HTTP itself.
//! Bytes are *read* into a bounded buffer and replayed to whoever gets the
//! connection (never a peek loop: pitfall 1). This module owns no sockets of its
//! own beyond the connection it is handed; the accept loop lives in the binary.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use ipnet::IpNet;
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use super::handshake::{HandshakeError, HandshakeGate};
use super::middleware::TcpMiddleware;
use super::proxy::{RelayOptions, Transfer, relay, relay_tcp};
use super::router::{Route, RouteTable};
use super::rule::ConnInfo;
use super::service::Service;
use super::sni::{SniMatch, SniTable};
use super::starttls::{self, DialogueError, Front, Handoff, Mode, Protocol};
use super::transport::BackendStream;
use crate::io::PrefixedIo;
use crate::observe::{CloseReason, ConnObserver, ConnRecord, Observer, Transport};
use crate::retire::Retirement;
use crate::sniff::{self, Probe};

/// Bytes read before giving up on a ClientHello: the hello limit plus room for
/// the TLS record headers it may be split into.
const MAX_SNIFF_BYTES: usize = sniff::MAX_CLIENT_HELLO + 1024;

/// The ALPN protocol of ACME TLS-ALPN-01 validations (RFC 8737).
const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// How long a passthrough Postgres backend may take to answer the replayed SSLRequest.
const PG_BACKEND_ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Numbers the synthesized MySQL greetings, as a server numbers its connections.
static NEXT_CONNECTION_ID: AtomicU32 = AtomicU32::new(1);

/// The longest a STARTTLS client may take, from accept to its ClientHello, when the
/// entrypoint's `readTimeout` is off: a dialogue held open by the router itself is
/// always bounded.
const STARTTLS_DIALOGUE_TIMEOUT: Duration = Duration::from_secs(60);

/// Entrypoint settings that shape the dispatch (from the static configuration).
#[derive(Debug, Clone)]
pub struct EntrypointSettings {
    pub name: Arc<str>,
    /// `proxyProtocol`: `Some` when the entrypoint accepts PROXY headers.
    pub proxy_protocol: Option<ProxyProtocolPolicy>,
    /// `transport.respondingTimeouts.readTimeout`: bounds the wait for the first
    /// bytes (PROXY header, SSLRequest, ClientHello). `None` waits forever.
    pub read_timeout: Option<Duration>,
    /// `tcp.serverFirstTimeout` (an extension): a connection that has sent nothing for
    /// this long is taken for a server-first protocol even when TLS or HTTP routers
    /// share the entrypoint. `None`: wait for the client's bytes (Traefik's behaviour).
    pub server_first_timeout: Option<Duration>,
    /// Told about every TCP connection routed here (or closed for want of a router).
    pub observer: Option<Observer>,
    /// The turns of the TLS handshakes terminated here.
    pub handshakes: Arc<HandshakeGate>,
}

/// Whose PROXY headers are believed.
#[derive(Debug, Clone)]
pub struct ProxyProtocolPolicy {
    pub trusted: Vec<IpNet>,
    /// `insecure`: trust every peer.
    pub insecure: bool,
}

impl ProxyProtocolPolicy {
    pub fn trusts(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.insecure || self.trusted.iter().any(|n| n.contains(&peer))
    }
}

/// How a TCP router treats TLS.
#[derive(Clone)]
pub enum TlsMode {
    /// A non-TLS router (`HostSNI(\`*\`)`, `ClientIP`).
    Plain,
    /// `tls.passthrough`: forward the raw TLS bytes.
    Passthrough,
    /// Terminate TLS here and forward plaintext.
    Terminate(tokio_rustls::TlsAcceptor),
    /// The router's TLS option could not be built: refuse the handshake (fail closed).
    Broken(Arc<str>),
}

/// Where a matched TCP router sends the connection.
#[derive(Clone)]
pub struct TcpTarget {
    pub router: Arc<str>,
    pub service_name: Arc<str>,
    pub service: Service,
    pub tls: TlsMode,
    pub middlewares: Vec<Arc<TcpMiddleware>>,
    /// `tls.starttls` (an extension): the router takes only connections that asked for
    /// TLS this way. `None`: direct TLS, and (as in Traefik) Postgres SSLRequests.
    pub starttls: Option<Protocol>,
    /// Shared by every snapshot in which this router is unchanged; a reload that removes or
    /// changes it retires it, which ends its open connections after a drain time.
    pub retirement: Retirement,
}

impl TcpTarget {
    /// Whether a connection that reached TLS through `via` (`None`: direct TLS) may be
    /// routed here.
    fn takes(&self, via: Option<Protocol>) -> bool {
        match (self.starttls, via) {
            (None, None | Some(Protocol::Postgres)) => true,
            (declared, via) => declared == via,
        }
    }
}

/// The compiled routing of one entrypoint (one snapshot's view of it).
pub struct EntrypointRoutes {
    /// Non-TLS TCP routers.
    pub plain: RouteTable<TcpTarget>,
    /// TLS TCP routers (passthrough or terminating).
    pub tls: RouteTable<TcpTarget>,
    /// The entrypoint's HTTP server: plaintext connections no TCP router takes, and TLS
    /// connections terminated for HTTPS routers. `None`: such connections are closed.
    pub http: Option<Arc<dyn HttpHandoff>>,
    /// Server names of the HTTPS routers, with the TLS option each asked for.
    pub https: SniTable<HttpsTarget>,
    /// The `default` TLS option, for TLS connections nothing else takes when the
    /// entrypoint has HTTPS routers (they are then routed by Host, or get a 404).
    pub https_default: Option<HttpsTarget>,
    /// Answers ACME TLS-ALPN-01 challenges: handshakes offering ALPN `acme-tls/1` are
    /// completed with the challenge certificate of their server name and closed, ahead of
    /// every router (`None`: no resolver uses that challenge, or `allowACMEByPass`).
    pub acme_tls: Option<tokio_rustls::TlsAcceptor>,
    /// The server-first STARTTLS protocol of the entrypoint's TLS routers, if any: the
    /// router greets silent clients with it (at once, or after `serverFirstTimeout`).
    pub starttls: Option<Protocol>,
}

impl EntrypointRoutes {
    /// No routers at all: plaintext connections still reach `http`, if any.
    pub fn empty(http: Option<Arc<dyn HttpHandoff>>) -> Self {
        EntrypointRoutes {
            plain: RouteTable::new(Vec::new()),
            tls: RouteTable::new(Vec::new()),
            http,
            https: SniTable::new(),
            https_default: None,
            acme_tls: None,
            starttls: None,
        }
    }

    /// Only STARTTLS routers of one server-first protocol (HTTP routers without TLS are
    /// shadowed, as by the fast path): greet every client at once.
    pub fn greets_at_once(&self) -> bool {
        self.starttls.is_some()
            && self.plain.is_empty()
            && self.https.is_empty()
            && self.https_default.is_none()
            && self.tls.iter().all(|r| r.target.starttls == self.starttls)
    }

    /// The first TLS router that takes a connection with `info` that reached TLS `via`.
    fn find_tls(&self, info: &ConnInfo, via: Option<Protocol>) -> Option<&Route<TcpTarget>> {
        self.tls
            .iter()
            .find(|r| r.target.takes(via) && r.rule.matches(info))
    }

    /// Only non-TLS TCP routers: the entrypoint routes before the client speaks.
    fn tcp_only_plain(&self) -> bool {
        self.tls.is_empty()
            && self.https.is_empty()
            && self.https_default.is_none()
            && !self.plain.is_empty()
    }
}

/// How an HTTPS connection is terminated: the TLS option its server name maps to.
#[derive(Clone)]
pub struct HttpsTarget {
    pub option: Arc<str>,
    /// `Terminate` or `Broken` (never passthrough).
    pub tls: TlsMode,
}

/// A connection handed to HTTP.
#[derive(Debug, Clone)]
pub struct HttpConn {
    /// The client (after a trusted PROXY header).
    pub client: SocketAddr,
    pub local: SocketAddr,
    pub sni: Option<Arc<str>>,
    /// The TLS option of the handshake; `None` for plaintext.
    pub tls_option: Option<Arc<str>>,
    /// The certificate chain the client presented in the handshake (leaf first), as the TLS
    /// option's client authentication accepted it; `None` when it presented none.
    pub peer_certificates: Option<Arc<[CertificateDer<'static>]>>,
}

pub type HandoffFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// An entrypoint's HTTP server, as the dispatch sees it.
pub trait HttpHandoff: Send + Sync + 'static {
    /// Serves a plaintext connection whose first bytes are replayed by `io`.
    fn serve_plain(&self, io: PrefixedIo<TcpStream>, conn: HttpConn) -> HandoffFuture;
    /// Serves a TLS connection terminated with `conn.tls_option`.
    fn serve_tls(
        &self,
        io: tokio_rustls::server::TlsStream<PrefixedIo<TcpStream>>,
        conn: HttpConn,
    ) -> HandoffFuture;
}

/// A connection as it arrived.
pub struct Accepted {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub local: SocketAddr,
}

/// Serves one connection to its end. Every wait is bounded by the entrypoint's
/// read timeout until a router is chosen; after that the relay runs until one side
/// closes (with the transport's termination delay).
///
/// Each way a connection may go (relay, STARTTLS, HTTPS, HTTP) is boxed apart: a future
/// is as large as its largest branch, and every idle HTTP connection would otherwise carry
/// the state of a TCP relay it never uses.
pub async fn serve(
    conn: Accepted,
    routes: Arc<EntrypointRoutes>,
    settings: Arc<EntrypointSettings>,
) {
    let Accepted {
        stream: mut client,
        peer,
        local,
    } = conn;
    let accepted = (Instant::now(), SystemTime::now());
    let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
    let mut client_addr = peer;
    let deadline = settings.read_timeout.map(|t| Instant::now() + t);
    let mut buf = BytesMut::with_capacity(4096);
    let ep = &settings.name;

    if let Some(policy) = &settings.proxy_protocol {
        match read_proxy_header(&mut client, &mut buf, deadline).await {
            Ok(Some(source)) if policy.trusts(peer.ip()) => {
                if let Some(src) = source {
                    client_addr = SocketAddr::new(src.ip().to_canonical(), src.port());
                }
            }
            Ok(Some(_)) => {
                debug!(entrypoint = %ep, %peer, "PROXY header from an untrusted peer ignored")
            }
            Ok(None) => {}
            Err(e) => {
                info!(entrypoint = %ep, %peer, error = %e, "closing connection: bad PROXY protocol header");
                return;
            }
        }
    }
    let ip = client_addr.ip();

    let observer = settings.observer.as_ref().map(|o| &o.0);
    let plain_ctx = Ctx {
        ep,
        client_addr,
        local,
        sni: None,
        alpn: &[],
        accepted,
        observer,
        handshakes: &settings.handshakes,
    };

    // Fast path: only non-TLS TCP routers here, so route before the client speaks.
    // This is what lets server-first protocols (SMTP, SSH, MySQL banners) work. A
    // connection none of them takes may still be HTTP: wait for its first bytes.
    if routes.tcp_only_plain() {
        let info = ConnInfo {
            sni: None,
            alpn: &[],
            client_ip: ip,
        };
        if let Some(route) = routes.plain.find(&info) {
            return Box::pin(forward(client, buf.freeze(), route, &plain_ctx)).await;
        }
    }

    if buf.is_empty()
        && routes.greets_at_once()
        && let Some(protocol) = routes.starttls
    {
        return Box::pin(serve_starttls(
            client, buf, protocol, &routes, &plain_ctx, deadline,
        ))
        .await;
    }

    // `tcp.serverFirstTimeout`: a client still silent then waits for a banner, so the
    // STARTTLS greeting or the non-TLS routers get it before any TLS or HTTP router could.
    if let Some(wait) = settings.server_first_timeout
        && buf.is_empty()
        && (routes.starttls.is_some() || !routes.plain.is_empty())
    {
        match tokio::time::timeout(wait, fill(&mut client, &mut buf, 1, deadline)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                debug!(entrypoint = %ep, client = %client_addr, error = %e, "closed before sending anything");
                return;
            }
            Err(_) => {
                if let Some(protocol) = routes.starttls {
                    debug!(entrypoint = %ep, client = %client_addr, %protocol, "client silent for serverFirstTimeout: greeting it");
                    return Box::pin(serve_starttls(
                        client, buf, protocol, &routes, &plain_ctx, deadline,
                    ))
                    .await;
                }
                let info = ConnInfo {
                    sni: None,
                    alpn: &[],
                    client_ip: ip,
                };
                if let Some(route) = routes.plain.find(&info) {
                    debug!(entrypoint = %ep, client = %client_addr, router = %route.target.router, "client silent for serverFirstTimeout: routed as server-first");
                    return Box::pin(forward(client, buf.freeze(), route, &plain_ctx)).await;
                }
            }
        }
    }

    if let Err(e) = fill(&mut client, &mut buf, 1, deadline).await {
        debug!(entrypoint = %ep, client = %client_addr, error = %e, "closed before sending anything");
        return;
    }

    // Postgres STARTTLS: the SSLRequest comes before the ClientHello.
    let postgres = loop {
        match sniff::postgres_ssl_request(&buf) {
            Probe::Match => break true,
            Probe::NoMatch => break false,
            Probe::NeedMore => {
                if let Err(e) = more(&mut client, &mut buf, deadline).await {
                    debug!(entrypoint = %ep, client = %client_addr, error = %e, "closed during the first bytes");
                    return;
                }
            }
        }
    };
    if postgres {
        let _ = buf.split_to(sniff::PG_SSL_REQUEST.len());
        if !buf.is_empty() {
            info!(entrypoint = %ep, client = %client_addr, "closing: data sent before the SSLRequest answer");
            return;
        }
        if let Err(e) = client.write_all(b"S").await {
            debug!(entrypoint = %ep, client = %client_addr, error = %e, "client left after SSLRequest");
            return;
        }
        if let Err(e) = fill(&mut client, &mut buf, 1, deadline).await {
            debug!(entrypoint = %ep, client = %client_addr, error = %e, "no ClientHello after SSLRequest");
            return;
        }
    }

    if !sniff::looks_like_tls(buf[0]) {
        if postgres {
            info!(entrypoint = %ep, client = %client_addr, "closing: SSLRequest not followed by TLS");
            return;
        }
        return Box::pin(forward_plain(client, buf, &routes, &plain_ctx)).await;
    }

    let Some(hello) = read_client_hello(&mut client, &mut buf, deadline, ep, client_addr).await
    else {
        return;
    };
    let info = ConnInfo {
        sni: hello.sni.as_deref(),
        alpn: &hello.alpn,
        client_ip: ip,
    };
    let ctx = Ctx {
        ep,
        client_addr,
        local,
        sni: hello.sni.as_deref(),
        alpn: &hello.alpn,
        accepted,
        observer,
        handshakes: &settings.handshakes,
    };
    if postgres {
        // A Postgres client only ever reaches TLS TCP routers.
        return match routes.find_tls(&info, Some(Protocol::Postgres)) {
            Some(route) if matches!(route.target.tls, TlsMode::Passthrough) => {
                let prelude = Prelude::PostgresSsl;
                Box::pin(forward_with(client, buf.freeze(), route, &ctx, prelude)).await
            }
            Some(route) => Box::pin(forward(client, buf.freeze(), route, &ctx)).await,
            None => {
                info!(entrypoint = %ep, client = %client_addr, sni = ctx.sni.unwrap_or(""), "no TLS router matches the Postgres connection; closing");
                ctx.report(None, None, None, CloseReason::NoRoute);
            }
        };
    }

    // Reference §4.1 step 6: an ACME TLS-ALPN-01 validation, answered here.
    if let Some(acceptor) = &routes.acme_tls
        && hello.alpn.iter().any(|p| p.as_slice() == ACME_TLS_ALPN)
    {
        return Box::pin(answer_acme_tls(client, buf.freeze(), acceptor, &ctx)).await;
    }

    // Reference §4.1: an HTTPS router for this very name, then a TLS TCP router that is
    // not a catch-all, then the HTTPS catch-all, the TCP catch-all, and last HTTPS with
    // the default TLS option.
    let https = routes.https.find(hello.sni.as_deref());
    // HTTPS targets count only on an entrypoint that serves HTTP.
    let serves_http = routes.http.is_some();
    let https_with = |wanted: SniMatch| {
        https
            .filter(|(_, found)| serves_http && *found == wanted)
            .map(|(target, _)| target)
    };
    let tcp = routes.find_tls(&info, None);
    let pick = https_with(SniMatch::Specific)
        .map(TlsPick::Https)
        .or_else(|| tcp.filter(|r| !r.rule.is_catch_all()).map(TlsPick::Tcp))
        .or_else(|| https_with(SniMatch::CatchAll).map(TlsPick::Https))
        .or_else(|| tcp.map(TlsPick::Tcp))
        .or_else(|| {
            routes
                .https_default
                .as_ref()
                .filter(|_| serves_http)
                .map(TlsPick::Https)
        });
    match (pick, &routes.http) {
        (Some(TlsPick::Https(target)), Some(http)) => {
            return Box::pin(serve_https(
                client,
                buf.freeze(),
                target,
                http.as_ref(),
                &ctx,
            ))
            .await;
        }
        (Some(TlsPick::Tcp(route)), _) => {
            return Box::pin(forward(client, buf.freeze(), route, &ctx)).await;
        }
        _ => {}
    }
    // Traefik would answer with its default certificate here; an entrypoint without
    // HTTPS routers closes before sending any certificate (docs/compatibility.md).
    info!(entrypoint = %ep, client = %client_addr, sni = ctx.sni.unwrap_or(""), "no TLS router matches; closing");
    ctx.report(None, None, None, CloseReason::NoRoute);
}

/// Reads the ClientHello at the start of `buf` (reading more as needed), or logs why
/// there is none.
async fn read_client_hello(
    client: &mut TcpStream,
    buf: &mut BytesMut,
    deadline: Option<Instant>,
    ep: &str,
    client_addr: SocketAddr,
) -> Option<sniff::ClientHello> {
    loop {
        match sniff::client_hello(buf) {
            Ok(Some(hello)) => return Some(hello),
            Ok(None) if buf.len() >= MAX_SNIFF_BYTES => {
                info!(entrypoint = %ep, client = %client_addr, bytes = buf.len(), "closing: ClientHello over the size limit");
                return None;
            }
            Ok(None) => {
                if let Err(e) = more(client, buf, deadline).await {
                    info!(entrypoint = %ep, client = %client_addr, error = %e, "closing: incomplete ClientHello");
                    return None;
                }
            }
            Err(e) => {
                info!(entrypoint = %ep, client = %client_addr, error = %e, "closing: unreadable ClientHello");
                return None;
            }
        }
    }
}

/// A server-first STARTTLS connection: greet it, answer it until it asks for TLS, read
/// its ClientHello and route it among the routers that declared `protocol`.
async fn serve_starttls(
    mut client: TcpStream,
    mut buf: BytesMut,
    protocol: Protocol,
    routes: &EntrypointRoutes,
    plain_ctx: &Ctx<'_>,
    deadline: Option<Instant>,
) {
    let (ep, client_addr) = (plain_ctx.ep, plain_ctx.client_addr);
    let mut scramble = [0u8; 20];
    if protocol == Protocol::Mysql
        && let Err(e) = getrandom::fill(&mut scramble)
    {
        warn!(entrypoint = %ep, client = %client_addr, error = %e, "closing: no randomness for the MySQL greeting");
        return;
    }
    let connection_id = NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed);
    let Some(mut front) = Front::new(protocol, plain_ctx.local.ip(), connection_id, scramble)
    else {
        return;
    };
    let deadline = deadline.unwrap_or_else(|| Instant::now() + STARTTLS_DIALOGUE_TIMEOUT);
    let handoff = match starttls::greet(&mut client, &mut buf, &mut front, deadline.into()).await {
        Ok(handoff) => handoff,
        // A client that goes away is not news; one that misbehaves is.
        Err(e @ (DialogueError::Closed | DialogueError::Io(_))) => {
            debug!(entrypoint = %ep, client = %client_addr, %protocol, error = %e, "client left before STARTTLS");
            return;
        }
        Err(e) => {
            info!(entrypoint = %ep, client = %client_addr, %protocol, error = %e, "closing: no STARTTLS");
            return;
        }
    };
    if let Err(e) = fill(&mut client, &mut buf, 1, Some(deadline)).await {
        info!(entrypoint = %ep, client = %client_addr, %protocol, error = %e, "closing: no ClientHello after STARTTLS");
        return;
    }
    if !sniff::looks_like_tls(buf[0]) {
        info!(entrypoint = %ep, client = %client_addr, %protocol, "closing: STARTTLS not followed by TLS");
        return;
    }
    let Some(hello) =
        read_client_hello(&mut client, &mut buf, Some(deadline), ep, client_addr).await
    else {
        return;
    };
    let info = ConnInfo {
        sni: hello.sni.as_deref(),
        alpn: &hello.alpn,
        client_ip: client_addr.ip(),
    };
    let ctx = Ctx {
        sni: hello.sni.as_deref(),
        alpn: &hello.alpn,
        ..*plain_ctx
    };
    match routes.find_tls(&info, Some(protocol)) {
        Some(route) => {
            let prelude = Prelude::Starttls(&handoff);
            forward_with(client, buf.freeze(), route, &ctx, prelude).await
        }
        None => {
            info!(entrypoint = %ep, client = %client_addr, %protocol, sni = ctx.sni.unwrap_or(""), "no STARTTLS router matches; closing");
            ctx.report(None, None, None, CloseReason::NoRoute);
        }
    }
}

/// Completes a TLS-ALPN-01 validation handshake (the certificate is the answer) and closes.
async fn answer_acme_tls(
    client: TcpStream,
    prefix: Bytes,
    acceptor: &tokio_rustls::TlsAcceptor,
    ctx: &Ctx<'_>,
) {
    let io = PrefixedIo::new(prefix, client);
    match ctx.handshakes.accept(acceptor, io).await {
        Ok(mut tls) => {
            let _ = tls.shutdown().await;
        }
        Err(e @ HandshakeError::Tls(_)) => {
            info!(entrypoint = %ctx.ep, client = %ctx.client_addr, sni = ctx.sni.unwrap_or(""), error = %e, "ACME TLS-ALPN-01 handshake failed (no challenge in progress for this name?)")
        }
        Err(e) => {
            info!(entrypoint = %ctx.ep, client = %ctx.client_addr, error = %e, "ACME TLS-ALPN-01 handshake not completed")
        }
    }
}

/// Where a TLS connection goes, in the order of reference §4.1.
enum TlsPick<'r> {
    Https(&'r HttpsTarget),
    Tcp(&'r Route<TcpTarget>),
}

/// Terminates TLS with the HTTPS target's option and hands the connection to HTTP.
async fn serve_https(
    client: TcpStream,
    prefix: Bytes,
    target: &HttpsTarget,
    http: &dyn HttpHandoff,
    ctx: &Ctx<'_>,
) {
    let acceptor = match &target.tls {
        TlsMode::Terminate(acceptor) => acceptor,
        TlsMode::Broken(why) => {
            warn!(entrypoint = ctx.ep, client = %ctx.client_addr, tls_option = %target.option, reason = %why, "refusing TLS handshake: the TLS option is broken");
            return;
        }
        TlsMode::Plain | TlsMode::Passthrough => {
            warn!(entrypoint = ctx.ep, client = %ctx.client_addr, tls_option = %target.option, "HTTPS target without a TLS acceptor; closing");
            return;
        }
    };
    let io = PrefixedIo::new(prefix, client);
    let tls = match ctx.handshakes.accept(acceptor, io).await {
        Ok(tls) => tls,
        Err(e) => {
            info!(entrypoint = ctx.ep, client = %ctx.client_addr, sni = ctx.sni.unwrap_or(""), error = %e, "TLS handshake failed");
            return;
        }
    };
    let conn = HttpConn {
        client: ctx.client_addr,
        local: ctx.local,
        sni: ctx.sni.map(Arc::from),
        tls_option: Some(target.option.clone()),
        peer_certificates: tls.get_ref().1.peer_certificates().map(Arc::from),
    };
    let _open = ctx.http_open();
    http.serve_tls(tls, conn).await;
}

/// What the log lines of one connection share.
struct Ctx<'a> {
    ep: &'a str,
    client_addr: SocketAddr,
    local: SocketAddr,
    sni: Option<&'a str>,
    /// ALPN protocols offered in the ClientHello.
    alpn: &'a [Vec<u8>],
    accepted: (Instant, SystemTime),
    observer: Option<&'a Arc<dyn ConnObserver>>,
    handshakes: &'a HandshakeGate,
}

impl Ctx<'_> {
    /// Tells the observer how the connection ended.
    fn report(
        &self,
        route: Option<&Route<TcpTarget>>,
        backend: Option<&str>,
        transfer: Option<&Transfer>,
        reason: CloseReason,
    ) {
        let Some(observer) = self.observer else {
            return;
        };
        let alpn = (!self.alpn.is_empty()).then(|| {
            self.alpn
                .iter()
                .map(|p| String::from_utf8_lossy(p))
                .collect::<Vec<_>>()
                .join(",")
        });
        observer.closed(&ConnRecord {
            transport: Transport::Tcp,
            entrypoint: Arc::from(self.ep),
            client: self.client_addr,
            sni: self.sni.map(Arc::from),
            alpn,
            router: route.map(|r| r.target.router.clone()),
            service: route.map(|r| r.target.service_name.clone()),
            backend: backend.map(str::to_owned),
            bytes_in: transfer.map_or(0, |t| t.client_to_backend),
            bytes_out: transfer.map_or(0, |t| t.backend_to_client),
            datagrams_in: 0,
            datagrams_out: 0,
            started: self.accepted.1,
            duration: self.accepted.0.elapsed(),
            reason,
        });
    }

    /// Tells the observer an HTTP connection is open until the guard drops.
    fn http_open(&self) -> Option<HttpOpen<'_>> {
        let observer = self.observer?;
        observer.http_connection(self.ep, true);
        Some(HttpOpen {
            observer: observer.as_ref(),
            ep: self.ep,
        })
    }

    /// Tells the observer a connection reached its backend.
    fn opened(&self, route: &Route<TcpTarget>) {
        if let Some(observer) = self.observer {
            observer.opened(
                Transport::Tcp,
                self.ep,
                &route.target.router,
                &route.target.service_name,
            );
        }
    }
}

/// An HTTP connection counted as open; its end is told when dropped (however the serving
/// future ends).
struct HttpOpen<'a> {
    observer: &'a dyn ConnObserver,
    ep: &'a str,
}

impl Drop for HttpOpen<'_> {
    fn drop(&mut self) {
        self.observer.http_connection(self.ep, false);
    }
}

/// Routes a connection that shows no TLS through the non-TLS routers, which only see
/// the client address, and then to the entrypoint's HTTP server.
async fn forward_plain(client: TcpStream, buf: BytesMut, routes: &EntrypointRoutes, ctx: &Ctx<'_>) {
    let info = ConnInfo {
        sni: None,
        alpn: &[],
        client_ip: ctx.client_addr.ip(),
    };
    if let Some(route) = routes.plain.find(&info) {
        return Box::pin(forward(client, buf.freeze(), route, ctx)).await;
    }
    match &routes.http {
        Some(http) => {
            let conn = HttpConn {
                client: ctx.client_addr,
                local: ctx.local,
                sni: None,
                tls_option: None,
                peer_certificates: None,
            };
            let _open = ctx.http_open();
            http.serve_plain(PrefixedIo::new(buf.freeze(), client), conn)
                .await
        }
        None => {
            debug!(entrypoint = ctx.ep, client = %ctx.client_addr, "no non-TLS TCP router matches; closing");
            ctx.report(None, None, None, CloseReason::NoRoute);
        }
    }
}

/// Reads until `buf` holds at least `want` bytes, or fails on EOF, deadline or
/// the sniff limit.
async fn fill(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    want: usize,
    deadline: Option<Instant>,
) -> std::io::Result<()> {
    while buf.len() < want {
        if buf.len() >= MAX_SNIFF_BYTES {
            return Err(std::io::Error::other("first-bytes limit reached"));
        }
        buf.reserve(4096);
        let read = stream.read_buf(buf);
        let n = match deadline {
            Some(d) => tokio::time::timeout_at(d.into(), read)
                .await
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "read timeout"))??,
            None => read.await?,
        };
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(())
}

/// Reads at least one more byte into `buf`.
async fn more(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    deadline: Option<Instant>,
) -> std::io::Result<()> {
    let want = buf.len() + 1;
    fill(stream, buf, want, deadline).await
}

/// Reads a PROXY header if the connection starts with one. `Ok(Some(source))`:
/// a header was consumed (source `None` for LOCAL/UNKNOWN); `Ok(None)`: no header,
/// the bytes read stay in `buf` for the next stage.
async fn read_proxy_header(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    deadline: Option<Instant>,
) -> Result<Option<Option<SocketAddr>>, String> {
    loop {
        if !buf.is_empty() {
            match crate::proxy_protocol::parse(buf) {
                Ok(Some((header, used))) => {
                    let _ = buf.split_to(used);
                    return Ok(Some(header.source));
                }
                Ok(None) => {}
                Err(crate::proxy_protocol::ProxyError::NotProxy) => return Ok(None),
                Err(e) => return Err(e.to_string()),
            }
        }
        more(stream, buf, deadline)
            .await
            .map_err(|e| e.to_string())?;
    }
}

/// Applies the router's middlewares, dials a backend, replays `prefix` and relays.
async fn forward(client: TcpStream, prefix: Bytes, route: &Route<TcpTarget>, ctx: &Ctx<'_>) {
    forward_with(client, prefix, route, ctx, Prelude::None).await
}

/// What a backend must be told before the client's bytes are relayed to it.
enum Prelude<'a> {
    None,
    /// Postgres passthrough: the SSLRequest again, answered `S` (swallowed: the client
    /// already had the router's).
    PostgresSsl,
    /// The backend half of a STARTTLS dialogue.
    Starttls(&'a Handoff),
}

impl Prelude<'_> {
    async fn run(&self, backend: &mut BackendStream, mode: Mode) -> Result<(), DialogueError> {
        match self {
            Prelude::None => Ok(()),
            Prelude::PostgresSsl => {
                let answer = async {
                    backend.write_all(&sniff::PG_SSL_REQUEST).await?;
                    let mut s = [0u8; 1];
                    backend.read_exact(&mut s).await?;
                    Ok::<_, std::io::Error>(s[0])
                };
                match tokio::time::timeout(PG_BACKEND_ANSWER_TIMEOUT, answer).await {
                    Ok(Ok(b'S')) => Ok(()),
                    Ok(Ok(other)) => Err(starttls::BackError::Unexpected {
                        expected: "S to the SSLRequest",
                        got: char::from(other).to_string(),
                    }
                    .into()),
                    Ok(Err(e)) => Err(e.into()),
                    Err(_) => Err(DialogueError::Timeout),
                }
            }
            Prelude::Starttls(handoff) => {
                let mut back = starttls::Back::new(handoff, mode);
                starttls::prepare_backend(backend, &mut back).await
            }
        }
    }

    /// Termination mode, once the client's TLS is up: a MySQL login must be adapted to
    /// the plaintext backend.
    async fn after_handshake<C>(
        &self,
        client: &mut C,
        backend: &mut BackendStream,
    ) -> Result<(), DialogueError>
    where
        C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        match self {
            Prelude::Starttls(Handoff::Mysql(_)) => starttls::mysql_login(client, backend).await,
            _ => Ok(()),
        }
    }
}

/// [`forward`], telling the backend `prelude` first.
async fn forward_with(
    client: TcpStream,
    prefix: Bytes,
    route: &Route<TcpTarget>,
    ctx: &Ctx<'_>,
    prelude: Prelude<'_>,
) {
    let target = &route.target;
    let Some(admission) = admit(route, ctx) else {
        ctx.report(Some(route), None, None, CloseReason::Refused);
        return;
    };
    match &target.tls {
        TlsMode::Broken(why) => {
            warn!(entrypoint = ctx.ep, router = %target.router, client = %ctx.client_addr, reason = %why, "refusing TLS handshake: the router's TLS option is broken");
            ctx.report(Some(route), None, None, CloseReason::HandshakeFailed);
        }
        TlsMode::Terminate(acceptor) => {
            let io = PrefixedIo::new(prefix, client);
            let tls = match ctx.handshakes.accept(acceptor, io).await {
                Ok(tls) => tls,
                Err(e) => {
                    info!(entrypoint = ctx.ep, router = %target.router, client = %ctx.client_addr, error = %e, "TLS handshake failed");
                    ctx.report(Some(route), None, None, CloseReason::HandshakeFailed);
                    return;
                }
            };
            let Some((mut backend, server, opts)) = dial(route, ctx).await else {
                ctx.report(Some(route), None, None, CloseReason::BackendUnavailable);
                return;
            };
            ctx.opened(route);
            if let Err(e) = prelude.run(&mut backend, Mode::Terminate).await {
                prelude_failed(route, ctx, &server, e);
                return;
            }
            let mut tls = tls;
            if let Err(e) = prelude.after_handshake(&mut tls, &mut backend).await {
                prelude_failed(route, ctx, &server, e);
                return;
            }
            let started = Instant::now();
            let transfer = relay(tls, backend, &opts).await;
            log_end(route, ctx, &server, started, &transfer);
        }
        TlsMode::Plain | TlsMode::Passthrough => {
            let Some((mut backend, server, opts)) = dial(route, ctx).await else {
                ctx.report(Some(route), None, None, CloseReason::BackendUnavailable);
                return;
            };
            ctx.opened(route);
            if let Err(e) = prelude.run(&mut backend, Mode::Passthrough).await {
                prelude_failed(route, ctx, &server, e);
                return;
            }
            if let Err(e) = backend.write_all(&prefix).await {
                info!(entrypoint = ctx.ep, router = %target.router, backend = %server, error = %e, "backend closed before the first bytes were replayed");
                let kind = CloseReason::BackendError(e.kind());
                ctx.report(Some(route), Some(&server), None, kind);
                return;
            }
            // The sniffing buffer, replayed: not held for the connection's lifetime.
            drop(prefix);
            let started = Instant::now();
            let transfer = match backend.into_plain() {
                Ok(plain) => relay_tcp(client, plain, &opts).await,
                Err(tls_backend) => relay(client, tls_backend, &opts).await,
            };
            log_end(route, ctx, &server, started, &transfer);
        }
    }
    drop(admission);
}

/// Logs and reports a backend that failed its prelude.
fn prelude_failed(route: &Route<TcpTarget>, ctx: &Ctx<'_>, server: &str, e: DialogueError) {
    info!(entrypoint = ctx.ep, router = %route.target.router, backend = %server, error = %e, "closing: the backend dialogue failed");
    let reason = match e {
        DialogueError::Io(e) => CloseReason::BackendError(e.kind()),
        DialogueError::Client(_) => CloseReason::ClientError(std::io::ErrorKind::InvalidData),
        _ => CloseReason::BackendUnavailable,
    };
    ctx.report(Some(route), Some(server), None, reason);
}

fn admit(route: &Route<TcpTarget>, ctx: &Ctx<'_>) -> Option<super::middleware::Admission> {
    match TcpMiddleware::admit_all(&route.target.middlewares, ctx.client_addr.ip()) {
        Ok(a) => Some(a),
        Err(refused) => {
            info!(entrypoint = ctx.ep, router = %route.target.router, client = %ctx.client_addr, reason = %refused, "connection refused by middleware");
            None
        }
    }
}

/// Picks a server and connects to it through its transport.
async fn dial(
    route: &Route<TcpTarget>,
    ctx: &Ctx<'_>,
) -> Option<(BackendStream, String, RelayOptions)> {
    let target = &route.target;
    let Some((server, transport)) = target.service.pick() else {
        warn!(entrypoint = ctx.ep, router = %target.router, service = %target.service_name, client = %ctx.client_addr, "closing: no healthy server");
        return None;
    };
    match transport
        .connect(&server.address, server.tls, ctx.client_addr, ctx.local)
        .await
    {
        Ok(stream) => {
            let opts = RelayOptions {
                termination_delay: transport.termination_delay,
                idle_timeout: None,
                retirement: Some(target.retirement.clone()),
            };
            Some((stream, server.address.clone(), opts))
        }
        Err(e) => {
            warn!(entrypoint = ctx.ep, router = %target.router, service = %target.service_name, backend = %server.address, client = %ctx.client_addr, error = %e, "closing: backend unreachable");
            None
        }
    }
}

fn log_end(route: &Route<TcpTarget>, ctx: &Ctx<'_>, server: &str, started: Instant, t: &Transfer) {
    ctx.report(
        Some(route),
        Some(server),
        Some(t),
        CloseReason::from(t.outcome),
    );
    debug!(
        entrypoint = ctx.ep,
        client = %ctx.client_addr,
        sni = ctx.sni.unwrap_or(""),
        router = %route.target.router,
        service = %route.target.service_name,
        backend = server,
        bytes_in = t.client_to_backend,
        bytes_out = t.backend_to_client,
        duration_ms = started.elapsed().as_millis() as u64,
        outcome = ?t.outcome,
        "connection closed"
    );
}
