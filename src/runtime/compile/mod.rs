//! Compiles a validated dynamic configuration into a [`Snapshot`]: per-entrypoint TCP
//! routing tables whose targets hold ready services, middlewares and TLS acceptors, and
//! per-entrypoint HTTP routes ([`http`]).
//!
//! Only routers that validation left enabled are compiled. Anything that can still fail
//! here (a certificate file that cannot be read, a TLS option that cannot be built) is
//! reported as a problem; a router whose TLS option is broken is compiled to refuse its
//! handshakes (fail closed) rather than dropped silently.

mod http;
mod mw_access;
mod mw_auth;
mod mw_grpc;
mod mw_headers;
mod mw_path;
mod mw_responses;
mod mw_tls;
mod mw_traffic;
mod retire;
mod udp;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use l4::balance::Wrr;
use l4::tcp::dispatch::{EntrypointRoutes, HttpHandoff, TcpTarget, TlsMode};
use l4::tcp::health::{self, HealthCheckSpec, HealthHandle};
use l4::tcp::middleware::{InFlightConn, InFlightConnStates, IpAllowList, TcpMiddleware};
use l4::tcp::router::{Route, RouteTable};
use l4::tcp::rule::TcpRule;
use l4::tcp::service::{LoadBalancer, Server, Service, Weighted};
use l4::tcp::starttls::Protocol as StarttlsProtocol;
use l4::tcp::transport::{BackendTls, ProxyVersion, Transport};
use l4::tls::{CertStore, ClientAuth, ClientAuthType, ServerOptions, TlsVersion, TlsVersions};
use l4::udp::UdpRoutes;
use l7::server::{HttpEntrypoint, HttpRoutes};
use l7::service::ServiceStates;
use l7::transport::TransportCache;
pub use retire::RouteRetirements;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use rustls::sign::CertifiedKey;

use super::internal::{ECHO_SERVICE, Internal};
use super::server_health::ServerUpMetric;
use crate::config::dynamic::{
    DEFAULT_TLS_NAME, DynamicConfig, Starttls, TcpRouter, TcpServersTransport, TlsOptions,
};
use crate::config::static_cfg::{Protocol, StaticConfig};
use crate::config::validate::Report;
use crate::config::{ConfigError, Located};

/// The static `tcpServersTransport`, as routers may name it.
const DEFAULT_TRANSPORT: &str = "default@internal";

/// Weighted services may nest; a cycle or absurd depth stops here.
const MAX_SERVICE_DEPTH: usize = 16;

/// ALPN offered by terminating TCP routers when the TLS option names none
/// (Traefik's default minus `acme-tls/1`, which needs ACME).
const DEFAULT_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// The HTTP servers of the TCP entrypoints, by name; they live as long as the listeners.
pub type HttpEntrypoints = BTreeMap<String, HttpEntrypoint>;

/// One compiled, immutable routing configuration.
pub struct Snapshot {
    entrypoints: HashMap<String, Arc<EntrypointRoutes>>,
    /// The HTTP routes to install in each entrypoint's HTTP server.
    http: HashMap<String, Arc<HttpRoutes>>,
    /// The UDP routes of each UDP entrypoint.
    udp: HashMap<String, Arc<UdpRoutes>>,
    empty: Arc<EntrypointRoutes>,
    empty_udp: Arc<UdpRoutes>,
    /// The TLS server configuration of HTTP/3 endpoints (`None` when no entrypoint has
    /// `http3`, or the `default` TLS option is broken: then QUIC handshakes are refused).
    quic_tls: Option<Arc<rustls::ServerConfig>>,
}

impl Snapshot {
    pub fn empty() -> Snapshot {
        Snapshot {
            entrypoints: HashMap::new(),
            http: HashMap::new(),
            udp: HashMap::new(),
            empty: Arc::new(EntrypointRoutes::empty(None)),
            empty_udp: Arc::new(UdpRoutes::default()),
            quic_tls: None,
        }
    }

    /// The TLS configuration HTTP/3 endpoints serve with in this snapshot.
    pub fn quic_tls(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.quic_tls.clone()
    }

    /// Gives each entrypoint's HTTP server this snapshot's routes (none: 404 for all).
    pub fn install_http(&self, servers: &HttpEntrypoints) {
        for (name, server) in servers {
            let routes = self
                .http
                .get(name)
                .cloned()
                .unwrap_or_else(|| Arc::new(HttpRoutes::empty()));
            server.set_routes(routes);
        }
    }

    /// The UDP routing of entrypoint `name` (empty when it has no UDP routers).
    pub fn udp_entrypoint(&self, name: &str) -> Arc<UdpRoutes> {
        self.udp
            .get(name)
            .cloned()
            .unwrap_or_else(|| self.empty_udp.clone())
    }

    /// The routing of entrypoint `name` (empty when it has no routers).
    pub fn entrypoint(&self, name: &str) -> Arc<EntrypointRoutes> {
        self.entrypoints
            .get(name)
            .cloned()
            .unwrap_or_else(|| self.empty.clone())
    }
}

/// The result of compiling: the snapshot, the health checks that belong to it (they
/// stop when this is dropped), the servers it uses (to carry their health into the next
/// compile) and problems found while building.
pub struct Compiled {
    pub snapshot: Snapshot,
    /// The TCP routers of the snapshot, for the next reload to tell which it keeps.
    pub retirements: RouteRetirements,
    pub health: Vec<Arc<HealthHandle>>,
    pub servers: Servers,
    pub problems: Vec<ConfigError>,
    /// The certificates of the default store (configured, then ACME), for their expiry metric.
    pub certificates: Vec<Arc<CertifiedKey>>,
}

/// Backend servers by (service, address, tls): a reload that keeps a server in the same
/// service keeps its health, so a server known to be down is not tried again until a
/// probe says it is back.
pub type Servers = HashMap<(String, String, bool), Arc<Server>>;

/// Certificates as last loaded successfully, by `(certFile, keyFile)` as written: when a
/// file breaks (a half-written renewal, a key that no longer matches), its previous
/// certificate keeps serving, with an error, instead of the default certificate.
#[derive(Default)]
pub struct LastGoodCerts {
    keys: HashMap<(String, String), Arc<CertifiedKey>>,
    used: std::collections::HashSet<(String, String)>,
}

impl LastGoodCerts {
    /// Loads a certificate, or gives the error with the last good one if there is one.
    fn load(
        &mut self,
        cert: &str,
        key: &str,
    ) -> Result<Arc<CertifiedKey>, (String, Option<Arc<CertifiedKey>>)> {
        let id = (cert.to_owned(), key.to_owned());
        self.used.insert(id.clone());
        match l4::tls::load_certified_key(cert, key) {
            Ok(loaded) => {
                self.keys.insert(id, loaded.clone());
                Ok(loaded)
            }
            Err(e) => Err((e.to_string(), self.keys.get(&id).cloned())),
        }
    }

    /// Forgets the certificates the last compilation did not ask for.
    pub fn retain_used(&mut self) {
        let used = std::mem::take(&mut self.used);
        self.keys.retain(|id, _| used.contains(id));
    }
}

/// What a new snapshot takes over from the ones before it.
pub struct Carried<'a> {
    /// The servers of the snapshot being replaced (their health).
    pub servers: &'a Servers,
    /// HTTP load-balancer states, kept while a service is unchanged.
    pub states: &'a ServiceStates,
    /// HTTP servers transports (their connection pools), kept while their settings are.
    pub transports: &'a TransportCache,
    /// Certificates as last loaded successfully.
    pub certs: &'a mut LastGoodCerts,
    /// Told of the changes TCP health checks make, for the metrics.
    pub server_up: Option<&'a Arc<ServerUpMetric>>,
    /// The TCP routers of the snapshot being replaced.
    pub retirements: &'a RouteRetirements,
}

pub fn compile(
    st: &StaticConfig,
    dy: &DynamicConfig,
    report: &Report,
    internal: &Internal,
    http_servers: &HttpEntrypoints,
    carried: Carried<'_>,
) -> Compiled {
    let Carried {
        servers: previous,
        states,
        transports: transport_cache,
        certs: good_certs,
        server_up,
        retirements: previous_retirements,
    } = carried;
    let mut c = Compiler {
        good_certs,
        http: http::HttpParts::default(),
        states,
        transport_cache,
        server_up,
        st,
        dy,
        internal,
        previous,
        previous_retirements,
        retirements: RouteRetirements::default(),
        servers: Servers::new(),
        services: HashMap::new(),
        transports: HashMap::new(),
        middlewares: HashMap::new(),
        tls_modes: HashMap::new(),
        health: Vec::new(),
        problems: Vec::new(),
        certs: None,
        default_cert: None,
        default_transport: None,
    };
    // Certificates are loaded even when no router terminates TLS, so that their
    // problems are reported (and `check` sees them).
    c.certificates();
    // entrypoint → (non-TLS routes, TLS routes)
    type Tables = HashMap<String, (Vec<Route<TcpTarget>>, Vec<Route<TcpTarget>>)>;
    let mut tables = Tables::new();
    for (name, router) in &dy.tcp.routers {
        if !report.tcp_router_enabled(name) && !c.tls_option_broken(&router.value) {
            continue;
        }
        let Some((route_eps, route)) = c.tcp_route(name, &router.value) else {
            continue;
        };
        for ep in route_eps {
            let copy = route.clone_route(&ep, &c.internal.kept.in_flight_conns);
            let entry = tables.entry(ep).or_default();
            if route.target_is_tls() {
                entry.1.push(copy);
            } else {
                entry.0.push(copy);
            }
        }
    }
    c.http_routers(report);
    let mut entrypoints = HashMap::new();
    let mut http_routes = HashMap::new();
    let names: Vec<String> = tables
        .keys()
        .chain(http_servers.keys())
        .cloned()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let acme_tls = c.internal.acme.tls_alpn_acceptor();
    for ep in names {
        let (plain, tls) = tables.remove(&ep).unwrap_or_default();
        let tls = RouteTable::new(tls);
        let (tls, starttls) = c.server_first_starttls(&ep, tls);
        let http = c.take_http(&ep);
        let server = http_servers
            .get(&ep)
            .map(|s| Arc::new(s.clone()) as Arc<dyn HttpHandoff>);
        entrypoints.insert(
            ep.clone(),
            Arc::new(EntrypointRoutes {
                plain: RouteTable::new(plain),
                tls,
                http: server,
                https: http.https,
                https_default: http.https_default,
                acme_tls: acme_tls.clone().filter(|_| {
                    st.entry_points
                        .get(&ep)
                        .is_some_and(|e| !e.allow_acme_by_pass)
                }),
                starttls,
            }),
        );
        if let Some(routes) = entrypoints.get(&ep) {
            c.check_starttls_reachable(&ep, routes);
        }
        http_routes.insert(ep, http.routes);
    }
    let quic_tls = st
        .entry_points
        .values()
        .any(|ep| ep.http3.is_some())
        .then(|| c.quic_tls())
        .flatten();
    let udp = udp::udp_routes(
        st,
        dy,
        report,
        (c.previous_retirements, &mut c.retirements),
        &c.internal.kept.udp_positions,
    );
    Compiled {
        snapshot: Snapshot {
            quic_tls,
            entrypoints,
            http: http_routes,
            udp,
            empty: Arc::new(EntrypointRoutes::empty(None)),
            empty_udp: Arc::new(UdpRoutes::default()),
        },
        retirements: c.retirements,
        health: c.health,
        servers: c.servers,
        problems: c.problems,
        certificates: c.certs.clone().unwrap_or_default(),
    }
}

/// How long a router's connections may go on once a reload retires it: the longest
/// `lifeCycle.graceTimeOut` of its entrypoints.
fn drain_of(st: &StaticConfig, entrypoints: &[String]) -> Duration {
    entrypoints
        .iter()
        .filter_map(|ep| st.entry_points.get(ep))
        .filter_map(|ep| ep.transport.life_cycle.grace_time_out.to_std())
        .max()
        .unwrap_or_default()
}

/// A route before it is copied into each of its entrypoints' tables.
struct PendingRoute {
    name: String,
    priority: i64,
    precedence: u32,
    rule: TcpRule,
    target: TcpTarget,
    /// The names of `target.middlewares`, in the same order.
    middleware_names: Vec<String>,
}

impl PendingRoute {
    fn target_is_tls(&self) -> bool {
        !matches!(self.target.tls, TlsMode::Plain)
    }

    /// The copy for entrypoint `ep`, with its own per-router middleware state (kept in
    /// `states` across reloads while unchanged).
    fn clone_route(&self, ep: &str, states: &InFlightConnStates) -> Route<TcpTarget> {
        let mut target = self.target.clone();
        let owner = format!("router {} on {ep}", self.name);
        target.middlewares = (target.middlewares.iter().zip(&self.middleware_names))
            .map(|(m, name)| m.for_router(name, &owner, states))
            .collect();
        Route {
            name: self.name.clone(),
            priority: self.priority,
            precedence: self.precedence,
            rule: self.rule.clone(),
            target,
        }
    }
}

struct Compiler<'a> {
    http: http::HttpParts,
    /// HTTP load-balancer states, kept across reloads while a service is unchanged.
    states: &'a ServiceStates,
    /// HTTP servers transports, kept across reloads while their settings are unchanged.
    transport_cache: &'a TransportCache,
    /// Told of the changes TCP health checks make.
    server_up: Option<&'a Arc<ServerUpMetric>>,
    st: &'a StaticConfig,
    dy: &'a DynamicConfig,
    internal: &'a Internal,
    /// The servers of the snapshot being replaced, and those of this one.
    previous: &'a Servers,
    /// The TCP routers of the snapshot being replaced, and those of this one.
    previous_retirements: &'a RouteRetirements,
    retirements: RouteRetirements,
    servers: Servers,
    /// Services built so far: routers sharing a service share its state.
    services: HashMap<String, Option<Service>>,
    transports: HashMap<String, Option<Arc<Transport>>>,
    middlewares: HashMap<String, Option<Arc<TcpMiddleware>>>,
    tls_modes: HashMap<String, TlsMode>,
    /// The TCP health checks this snapshot runs (some kept from the previous one).
    health: Vec<Arc<HealthHandle>>,
    problems: Vec<ConfigError>,
    certs: Option<Vec<Arc<CertifiedKey>>>,
    default_cert: Option<Arc<CertifiedKey>>,
    /// Certificates of earlier snapshots, served on when their files break.
    good_certs: &'a mut LastGoodCerts,
    default_transport: Option<Option<Arc<Transport>>>,
}

/// The l4 protocol of a router's `tls.starttls`.
fn starttls_protocol(p: Starttls) -> StarttlsProtocol {
    match p {
        Starttls::Postgres => StarttlsProtocol::Postgres,
        Starttls::Smtp => StarttlsProtocol::Smtp,
        Starttls::Imap => StarttlsProtocol::Imap,
        Starttls::Pop3 => StarttlsProtocol::Pop3,
        Starttls::Mysql => StarttlsProtocol::Mysql,
    }
}

impl Compiler<'_> {
    /// The server-first STARTTLS protocol an entrypoint greets silent clients with: that
    /// of its first such router in match order. Routers declaring another one cannot be
    /// served there (the greeting is one protocol's) and are left out, with an error.
    fn server_first_starttls(
        &mut self,
        ep: &str,
        tls: RouteTable<TcpTarget>,
    ) -> (RouteTable<TcpTarget>, Option<StarttlsProtocol>) {
        let chosen = tls.iter().find_map(|r| {
            let protocol = r.target.starttls.filter(|p| p.server_first())?;
            Some((protocol, r.name.clone()))
        });
        let Some((protocol, first)) = chosen else {
            return (tls, None);
        };
        let mut kept = Vec::new();
        for route in tls.iter() {
            match route.target.starttls {
                Some(other) if other.server_first() && other != protocol => self.problem(
                    None,
                    format!(
                        "tcp router {}: starttls {other} on entryPoint \"{ep}\", which already greets STARTTLS clients with {protocol} (router {first}); the router is not served there",
                        route.name
                    ),
                ),
                _ => kept.push(route.clone()),
            }
        }
        (RouteTable::new(kept), Some(protocol))
    }

    /// A server-first STARTTLS router on an entrypoint that also serves clients that
    /// speak first is reached only through `serverFirstTimeout`.
    fn check_starttls_reachable(&mut self, ep: &str, routes: &EntrypointRoutes) {
        let Some(protocol) = routes.starttls else {
            return;
        };
        let timeout = self
            .st
            .entry_points
            .get(ep)
            .and_then(|e| e.tcp.server_first_timeout);
        if routes.greets_at_once() || timeout.is_some() {
            return;
        }
        self.problem(
            None,
            format!(
                "entryPoint \"{ep}\": its {protocol} STARTTLS routers are never reached: the entrypoint also has routers for clients that speak first, so it waits for them; set entryPoints.{ep}.tcp.serverFirstTimeout to greet clients that stay silent"
            ),
        );
    }

    fn problem(&mut self, at: Option<&crate::config::Location>, message: String) {
        tracing::error!("{}", located(at, &message));
        self.problems.push(ConfigError {
            location: at.cloned(),
            message,
        });
    }

    fn tcp_route(&mut self, name: &str, r: &TcpRouter) -> Option<(Vec<String>, PendingRoute)> {
        let tls = r.tls.as_ref();
        let rule = match TcpRule::compile(&r.rule.value, tls.is_some()) {
            Ok(rule) => rule,
            Err(e) => {
                self.problem(
                    r.rule.location.as_ref(),
                    format!("tcp router {name}: invalid rule: {e}"),
                );
                return None;
            }
        };
        let entrypoints: Vec<String> = if r.entry_points.is_empty() {
            self.st.default_entry_points()
        } else {
            r.entry_points.clone()
        }
        .into_iter()
        .filter(|ep| {
            self.st
                .entry_points
                .get(ep)
                .is_some_and(|e| e.address.protocol == Protocol::Tcp)
        })
        .collect();
        let service = self.service(&r.service.value, r.service.location.as_ref(), 0)?;
        let mut middlewares = Vec::new();
        for m in &r.middlewares {
            middlewares.push(self.middleware(&m.value, m.location.as_ref())?);
        }
        let middleware_names = r.middlewares.iter().map(|m| m.value.clone()).collect();
        let tls_mode = match tls {
            None => TlsMode::Plain,
            Some(t) if t.passthrough => TlsMode::Passthrough,
            Some(t) => {
                let option = if t.options.value.is_empty() {
                    DEFAULT_TLS_NAME.to_string()
                } else {
                    t.options.value.clone()
                };
                self.tls_mode(&option, t.options.location.as_ref())
            }
        };
        let priority = if r.priority == 0 {
            rule.default_priority()
        } else {
            r.priority
        };
        let drain = drain_of(self.st, &entrypoints);
        let retirement = self
            .retirements
            .tcp(self.previous_retirements, self.dy, name, r, drain);
        Some((
            entrypoints,
            PendingRoute {
                name: name.to_string(),
                priority,
                precedence: crate::config::precedence::rank(&self.st.providers.precedence, name),
                rule,
                target: TcpTarget {
                    router: Arc::from(name),
                    service_name: Arc::from(r.service.value.as_str()),
                    service,
                    tls: tls_mode,
                    middlewares,
                    starttls: tls.and_then(|t| t.starttls).map(starttls_protocol),
                    retirement,
                },
                middleware_names,
            },
        ))
    }

    fn service(
        &mut self,
        name: &str,
        at: Option<&crate::config::Location>,
        depth: usize,
    ) -> Option<Service> {
        if let Some(s) = self.services.get(name) {
            return s.clone();
        }
        let built = self.build_service(name, at, depth);
        self.services.insert(name.to_string(), built.clone());
        built
    }

    fn build_service(
        &mut self,
        name: &str,
        at: Option<&crate::config::Location>,
        depth: usize,
    ) -> Option<Service> {
        if depth > MAX_SERVICE_DEPTH {
            self.problem(
                at,
                format!("tcp service {name}: weighted services nest too deep (a cycle?)"),
            );
            return None;
        }
        if name == ECHO_SERVICE {
            let server = Arc::new(Server::new(self.internal.echo_addr.to_string(), false));
            let lb = LoadBalancer::new(vec![server], Arc::new(Transport::default()));
            return Some(Service::LoadBalancer(Arc::new(lb)));
        }
        let Some(def) = self.dy.tcp.services.get(name) else {
            self.problem(at, format!("the service \"{name}\" does not exist"));
            return None;
        };
        let def_loc = def.location.clone();
        if let Some(lb) = &def.value.load_balancer {
            let transport = match lb.servers_transport.value.as_str() {
                "" => self.legacy_transport(name, lb, def_loc.as_ref())?,
                DEFAULT_TRANSPORT => self.default_transport()?,
                t => self.transport(t, lb.servers_transport.location.as_ref())?,
            };
            let servers: Vec<Arc<Server>> = lb
                .servers
                .iter()
                .map(|s| self.server(name, &s.address.value, s.tls, lb.health_check.is_some()))
                .collect();
            let entries = LoadBalancer::wrr_entries(&servers);
            let wrr = Wrr::kept(&self.internal.kept.tcp_positions, name, entries);
            let lb_rt = Arc::new(LoadBalancer::with_wrr(servers, transport, wrr));
            if let Some(hc) = &lb.health_check {
                let defaults = HealthCheckSpec::default();
                let spec = HealthCheckSpec {
                    port: u16::try_from(hc.port).ok().filter(|p| *p != 0),
                    send: Some(hc.send.clone()).filter(|s| !s.is_empty()),
                    expect: Some(hc.expect.clone()).filter(|s| !s.is_empty()),
                    // Like Traefik, values <= 0 mean the defaults.
                    interval: positive(hc.interval).unwrap_or(defaults.interval),
                    unhealthy_interval: hc.unhealthy_interval.and_then(positive),
                    timeout: positive(hc.timeout).unwrap_or(defaults.timeout),
                };
                let on_change = self.server_up.map(|metric| metric.tcp_hook(name));
                // An unchanged service (same servers, hence the same `Server`s, and same
                // transport) keeps its probe loops: restarting them at every reload would
                // put the first probe one `interval` after the last reload, never if reloads
                // come more often than that.
                let named = &lb.servers_transport.value;
                let transport_def = self.dy.tcp.servers_transports.get(named);
                let definition = (def.value.clone(), transport_def.map(|t| t.value.clone()));
                let checks =
                    self.internal
                        .kept
                        .tcp_health
                        .get_or_make(name.to_owned(), definition, || {
                            health::spawn(lb_rt.clone(), spec, on_change)
                        });
                self.health.push(checks);
            }
            return Some(Service::LoadBalancer(lb_rt));
        }
        if let Some(w) = &def.value.weighted {
            let mut children = Vec::new();
            let mut entries = Vec::new();
            for child in &w.services {
                let svc =
                    self.service(&child.name.value, child.name.location.as_ref(), depth + 1)?;
                let weight = u32::try_from(child.weight.unwrap_or(1)).unwrap_or(0);
                children.push((svc, weight));
                entries.push((child.name.value.clone(), weight));
            }
            let wrr = Wrr::kept(&self.internal.kept.tcp_positions, name, entries);
            return Some(Service::Weighted(Arc::new(Weighted::with_wrr(
                children, wrr,
            ))));
        }
        self.problem(
            def_loc.as_ref(),
            format!("the service \"{name}\" does not have any type defined"),
        );
        None
    }

    /// The static `tcpServersTransport`, with the deprecated per-service
    /// `proxyProtocol` / `terminationDelay` applied when the service names no transport
    /// (Traefik ignores them when it does).
    fn legacy_transport(
        &mut self,
        service: &str,
        lb: &crate::config::dynamic::TcpLoadBalancer,
        at: Option<&crate::config::Location>,
    ) -> Option<Arc<Transport>> {
        let base = self.default_transport()?;
        if lb.proxy_protocol.is_none() && lb.termination_delay.is_none() {
            return Some(base);
        }
        let mut t = (*base).clone();
        if let Some(pp) = &lb.proxy_protocol {
            t.proxy_protocol =
                Some(self.proxy_version(&format!("tcp service {service}"), pp.version, at)?);
        }
        if let Some(ms) = lb.termination_delay {
            t.termination_delay = u64::try_from(ms).ok().map(Duration::from_millis);
        }
        Some(Arc::new(t))
    }

    /// PROXY protocol `version`: 1 or 2; anything else is reported against `what`.
    fn proxy_version(
        &mut self,
        what: &str,
        version: i64,
        at: Option<&crate::config::Location>,
    ) -> Option<ProxyVersion> {
        match version {
            1 => Some(ProxyVersion::V1),
            2 => Some(ProxyVersion::V2),
            v => {
                self.problem(
                    at,
                    format!("{what}: unsupported PROXY protocol version {v}"),
                );
                None
            }
        }
    }

    /// The static `tcpServersTransport` (`default@internal`), built once per snapshot.
    /// The server of this snapshot for `(service, address, tls)`: the previous
    /// snapshot's when it had one (keeping its health), else a new, healthy one.
    fn server(&mut self, service: &str, address: &str, tls: bool, checked: bool) -> Arc<Server> {
        let key = (service.to_string(), address.to_string(), tls);
        let server = match self.previous.get(&key) {
            Some(s) => {
                // Without a health check nothing would ever mark it up again.
                if !checked {
                    s.set_healthy(true);
                }
                s.clone()
            }
            None => Arc::new(Server::new(address, tls)),
        };
        self.servers.insert(key, server.clone());
        server
    }

    fn default_transport(&mut self) -> Option<Arc<Transport>> {
        if let Some(t) = &self.default_transport {
            return t.clone();
        }
        let built = self.build_default_transport();
        self.default_transport = Some(built.clone());
        built
    }

    fn build_default_transport(&mut self) -> Option<Arc<Transport>> {
        let d = &self.st.tcp_servers_transport;
        let mut t = Transport::default();
        if let Some(v) = positive(d.dial_timeout) {
            t.dial_timeout = v;
        }
        t.dial_keepalive = keepalive(d.dial_keep_alive, t.dial_keepalive);
        t.termination_delay = d.termination_delay.to_std();
        let Some(tls) = d.tls.clone() else {
            return Some(Arc::new(t));
        };
        let what = "static tcpServersTransport";
        if tls.spiffe.is_some() {
            self.problem(
                None,
                format!("{what}: spiffe is not supported yet; services using it are not served"),
            );
            return None;
        }
        let root_cas = match load_roots(&tls.root_cas) {
            Ok(r) => r,
            Err(e) => {
                self.problem(None, format!("{what}: {e}"));
                return None;
            }
        };
        let backend = BackendTls {
            insecure_skip_verify: tls.insecure_skip_verify,
            root_cas,
            ..BackendTls::default()
        };
        match t.with_tls(backend) {
            Ok(t) => Some(Arc::new(t)),
            Err(e) => {
                self.problem(None, format!("{what}: {e}"));
                None
            }
        }
    }

    fn transport(
        &mut self,
        name: &str,
        at: Option<&crate::config::Location>,
    ) -> Option<Arc<Transport>> {
        if let Some(t) = self.transports.get(name) {
            return t.clone();
        }
        let built = match self.dy.tcp.servers_transports.get(name) {
            None => {
                self.problem(at, format!("tcp servers transport not found: {name}"));
                None
            }
            Some(def) => self.build_transport(name, &def.value, def.location.as_ref()),
        };
        self.transports.insert(name.to_string(), built.clone());
        built
    }

    fn build_transport(
        &mut self,
        name: &str,
        def: &TcpServersTransport,
        at: Option<&crate::config::Location>,
    ) -> Option<Arc<Transport>> {
        let mut t = Transport::default();
        if let Some(v) = positive(def.dial_timeout) {
            t.dial_timeout = v;
        }
        t.dial_keepalive = keepalive(def.dial_keep_alive, t.dial_keepalive);
        t.termination_delay = def.termination_delay.to_std();
        if let Some(pp) = &def.proxy_protocol {
            t.proxy_protocol = Some(self.proxy_version(
                &format!("tcp servers transport {name}"),
                pp.version,
                at,
            )?);
        }
        if let Some(tls) = &def.tls {
            if !tls.peer_cert_uri.is_empty()
                || !tls.peer_cert_sans.is_empty()
                || tls.spiffe.is_some()
            {
                // Checking the backend less strictly than asked would be silent; refuse.
                self.problem(at, format!("tcp servers transport {name}: peerCertURI, peerCertSANs and spiffe are not supported yet; its services are not served"));
                return None;
            }
            if tls.certificates.len() > 1 {
                tracing::warn!(
                    transport = name,
                    "only the first client certificate of a servers transport is used"
                );
            }
            let mut backend = BackendTls {
                server_name: Some(tls.server_name.clone()).filter(|s| !s.is_empty()),
                insecure_skip_verify: tls.insecure_skip_verify,
                ..BackendTls::default()
            };
            match load_roots(&tls.root_cas) {
                Ok(roots) => backend.root_cas = roots,
                Err(e) => {
                    self.problem(at, format!("tcp servers transport {name}: {e}"));
                    return None;
                }
            }
            if let Some(cert) = tls.certificates.first() {
                let pair = read_pem_or_path(&cert.cert_file).and_then(|c| {
                    let chain = CertificateDer::pem_slice_iter(&c)
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| format!("certFile: {e}"))?;
                    let key_pem = read_pem_or_path(&cert.key_file)?;
                    let key = PrivateKeyDer::from_pem_slice(&key_pem)
                        .map_err(|e| format!("keyFile: {e}"))?;
                    Ok((chain, key))
                });
                match pair {
                    Ok(p) => backend.client_certificate = Some(p),
                    Err(e) => {
                        self.problem(at, format!("tcp servers transport {name}: {e}"));
                        return None;
                    }
                }
            }
            t = match t.with_tls(backend) {
                Ok(t) => t,
                Err(e) => {
                    self.problem(at, format!("tcp servers transport {name}: {e}"));
                    return None;
                }
            };
        }
        Some(Arc::new(t))
    }

    fn middleware(
        &mut self,
        name: &str,
        at: Option<&crate::config::Location>,
    ) -> Option<Arc<TcpMiddleware>> {
        if let Some(m) = self.middlewares.get(name) {
            return m.clone();
        }
        let built = match self.dy.tcp.middlewares.get(name) {
            None => {
                self.problem(at, format!("middleware \"{name}\" does not exist"));
                None
            }
            Some(def) => {
                let m = &def.value;
                if let Some(list) = m.ip_allow_list.as_ref().or(m.ip_white_list.as_ref()) {
                    let mut ranges = Vec::new();
                    let mut ok = true;
                    for r in &list.source_range {
                        match l4::rule::parse_client_ip(r.value.trim()) {
                            Ok(net) => ranges.push(net),
                            Err(e) => {
                                self.problem(
                                    r.location.as_ref(),
                                    format!("middleware {name}: {e}"),
                                );
                                ok = false;
                            }
                        }
                    }
                    ok.then(|| Arc::new(TcpMiddleware::IpAllowList(IpAllowList::new(ranges))))
                } else if let Some(f) = &m.in_flight_conn {
                    let amount = u64::try_from(f.amount).unwrap_or(0);
                    Some(Arc::new(TcpMiddleware::InFlightConn(InFlightConn::new(
                        amount,
                    ))))
                } else {
                    self.problem(
                        def.location.as_ref(),
                        format!("middleware {name} has no type"),
                    );
                    None
                }
            }
        };
        self.middlewares.insert(name.to_string(), built.clone());
        built
    }

    /// Whether a TCP router terminates TLS with an option that cannot be built. Such a
    /// router is compiled even when validation disabled it, so that the connections it
    /// would match are refused rather than taken by another router without the client
    /// authentication it asked for.
    fn tls_option_broken(&mut self, r: &TcpRouter) -> bool {
        let Some(tls) = r.tls.as_ref().filter(|t| !t.passthrough) else {
            return false;
        };
        let option = if tls.options.value.is_empty() {
            DEFAULT_TLS_NAME
        } else {
            tls.options.value.as_str()
        };
        matches!(
            self.tls_mode(option, tls.options.location.as_ref()),
            TlsMode::Broken(_)
        )
    }

    /// The TLS acceptor for a TLS option, or a fail-closed mode when it cannot be built.
    fn tls_mode(&mut self, option: &str, at: Option<&crate::config::Location>) -> TlsMode {
        if let Some(m) = self.tls_modes.get(option) {
            return m.clone();
        }
        let default_opts = Located::new(TlsOptions::default());
        let def = match self.dy.tls.options.get(option) {
            Some(d) => d.clone(),
            None if option == DEFAULT_TLS_NAME => default_opts,
            None => {
                let why = format!("unknown TLS options: {option}");
                self.problem(at, why.clone());
                let m = TlsMode::Broken(Arc::from(why));
                self.tls_modes.insert(option.to_string(), m.clone());
                return m;
            }
        };
        let mode = match self.build_tls(&def.value) {
            Ok(acceptor) => TlsMode::Terminate(acceptor),
            Err(why) => {
                let why = format!("TLS option {option}: {why}");
                self.problem(def.location.as_ref().or(at), why.clone());
                TlsMode::Broken(Arc::from(why))
            }
        };
        self.tls_modes.insert(option.to_string(), mode.clone());
        mode
    }

    fn build_tls(&mut self, o: &TlsOptions) -> Result<tokio_rustls::TlsAcceptor, String> {
        let client_auth = client_auth(&o.client_auth)?;
        let crypto = option_crypto(o)?;
        let mut versions = TlsVersions::default();
        if !o.min_version.value.is_empty() {
            versions.min = o
                .min_version
                .value
                .parse::<TlsVersion>()
                .map_err(|e| e.to_string())?;
        }
        if !o.max_version.value.is_empty() {
            versions.max = o
                .max_version
                .value
                .parse::<TlsVersion>()
                .map_err(|e| e.to_string())?;
        }
        let alpn: Vec<Vec<u8>> = if o.alpn_protocols.is_empty() {
            DEFAULT_ALPN.iter().map(|p| p.to_vec()).collect()
        } else {
            o.alpn_protocols
                .iter()
                .filter(|p| p.as_str() != "acme-tls/1")
                .map(|p| p.as_bytes().to_vec())
                .collect()
        };
        let (certs, default) = self.certificates();
        let store = Arc::new(CertStore::new(certs, default).with_sni_strict(o.sni_strict));
        let options = ServerOptions {
            versions,
            alpn,
            client_auth: &client_auth,
            crypto: &crypto,
            disable_session_tickets: o.disable_session_tickets,
        };
        let config = l4::tls::server_config(store, options).map_err(|e| e.to_string())?;
        Ok(tokio_rustls::TlsAcceptor::from(config))
    }

    /// The TLS configuration of HTTP/3: the certificate store and client authentication of
    /// the `default` TLS option, TLS 1.3 only (QUIC has no other), ALPN `h3`, and no
    /// early data (0-RTT requests could be replayed).
    fn quic_tls(&mut self) -> Option<Arc<rustls::ServerConfig>> {
        let option = self
            .dy
            .tls
            .options
            .get(DEFAULT_TLS_NAME)
            .map(|o| o.value.clone())
            .unwrap_or_default();
        let built = client_auth(&option.client_auth).and_then(|client_auth| {
            let crypto = option_crypto(&option)?;
            let (certs, default) = self.certificates();
            let store = Arc::new(CertStore::new(certs, default).with_sni_strict(option.sni_strict));
            let versions = TlsVersions {
                min: TlsVersion::Tls13,
                max: TlsVersion::Tls13,
            };
            let options = ServerOptions {
                versions,
                alpn: vec![b"h3".to_vec()],
                client_auth: &client_auth,
                crypto: &crypto,
                disable_session_tickets: option.disable_session_tickets,
            };
            l4::tls::server_config(store, options).map_err(|e| e.to_string())
        });
        match built {
            Ok(config) => {
                let mut config = Arc::unwrap_or_clone(config);
                config.max_early_data_size = 0;
                Some(Arc::new(config))
            }
            Err(why) => {
                self.problem(None, format!("HTTP/3 TLS (option default): {why}"));
                None
            }
        }
    }

    /// The certificates of the default store (loaded once per snapshot) and the
    /// default certificate.
    fn certificates(&mut self) -> (Vec<Arc<CertifiedKey>>, Arc<CertifiedKey>) {
        if self.certs.is_none() {
            let mut loaded = Vec::new();
            for c in &self.dy.tls.certificates {
                let c_val = &c.value;
                if !c_val.stores.is_empty() && !c_val.stores.iter().any(|s| s == DEFAULT_TLS_NAME) {
                    continue;
                }
                match self
                    .good_certs
                    .load(&c_val.cert_file.value, &c_val.key_file.value)
                {
                    Ok(k) => {
                        // Served anyway, as Traefik does (a client may not check dates), but
                        // said out loud: most clients will refuse it.
                        if let Some(why) = l4::tls::validity_problem(&k) {
                            let at = c_val.cert_file.location.as_ref().or(c.location.as_ref());
                            tracing::warn!(
                                "{}",
                                located(
                                    at,
                                    &format!(
                                        "certificate {}: {why}; clients will refuse it",
                                        short_pem(&c_val.cert_file.value)
                                    )
                                )
                            );
                        }
                        loaded.push(k)
                    }
                    Err((e, previous)) => {
                        let at = c_val.cert_file.location.clone().or(c.location.clone());
                        let kept = if previous.is_some() {
                            "; the previous certificate keeps serving"
                        } else {
                            ""
                        };
                        self.problem(
                            at.as_ref(),
                            format!("unable to load certificate: {e}{kept}"),
                        );
                        loaded.extend(previous);
                    }
                }
            }
            // ACME certificates come after the configured ones, which keep their names.
            loaded.extend(self.internal.acme.certificates());
            self.certs = Some(loaded);
        }
        let default = self.default_certificate();
        (self.certs.clone().unwrap_or_default(), default)
    }

    fn default_certificate(&mut self) -> Arc<CertifiedKey> {
        if let Some(c) = &self.default_cert {
            return c.clone();
        }
        let chosen = self.load_default_certificate();
        self.default_cert = Some(chosen.clone());
        chosen
    }

    fn load_default_certificate(&mut self) -> Arc<CertifiedKey> {
        let configured = self
            .dy
            .tls
            .stores
            .get(DEFAULT_TLS_NAME)
            .and_then(|s| s.value.default_certificate.clone());
        if let Some(c) = configured {
            match self.good_certs.load(&c.cert_file, &c.key_file) {
                Ok(k) => return k,
                Err((e, Some(previous))) => {
                    self.problem(
                        None,
                        format!("unable to load the default certificate: {e}; the previous one keeps serving"),
                    );
                    return previous;
                }
                Err((e, None)) => {
                    self.problem(None, format!("unable to load the default certificate: {e}"))
                }
            }
        }
        self.internal.default_cert.clone()
    }
}

/// A certificate value for messages: the path, or `inline PEM`.
fn short_pem(value: &str) -> &str {
    if value.trim_start().starts_with("-----BEGIN") {
        "inline PEM"
    } else {
        value
    }
}

/// `clientAuth` as Traefik reads it. Every CA file must load: an option that cannot
/// authenticate clients as asked is broken, never lenient.
/// The cipher suites and curves of a TLS option. Names Go knows but this build cannot
/// provide are left out with a warning (Traefik serves such options, so they are served
/// here with what remains); an option left with nothing to negotiate is an error.
fn option_crypto(o: &TlsOptions) -> Result<l4::tls::Crypto, String> {
    let suites: Vec<String> = o.cipher_suites.iter().map(|s| s.value.clone()).collect();
    let curves: Vec<String> = o
        .curve_preferences
        .iter()
        .map(|c| c.value.clone())
        .collect();
    let crypto = l4::tls::crypto(&suites, &curves).map_err(|e| e.to_string())?;
    if !crypto.unavailable.is_empty() {
        tracing::warn!(
            unavailable = %crypto.unavailable.join(", "),
            "TLS option names cipher suites or curves this build cannot provide; they are left out"
        );
    }
    Ok(crypto)
}

fn client_auth(c: &crate::config::dynamic::ClientAuth) -> Result<ClientAuth, String> {
    let kind = match c.client_auth_type.value.as_str() {
        "" => None,
        name => Some(name.parse::<ClientAuthType>().map_err(|e| e.to_string())?),
    };
    let mut cas = Vec::new();
    for ca in &c.ca_files {
        cas.extend(
            l4::tls::load_ca_certificates(&ca.value).map_err(|e| format!("clientAuth: {e}"))?,
        );
    }
    // A verifying type without CAs is refused when the verifier is built.
    Ok(ClientAuth::new(kind, cas))
}

/// A duration that is > 0, or `None` (Traefik treats <= 0 as "use the default").
fn positive(d: crate::config::Duration) -> Option<Duration> {
    d.to_std().filter(|v| !v.is_zero())
}

/// `dialKeepAlive`: negative disables keep-alive probes, 0 keeps the default (as Go's
/// net.Dialer does).
fn keepalive(d: crate::config::Duration, default: Option<Duration>) -> Option<Duration> {
    if d.is_negative() {
        None
    } else {
        positive(d).or(default)
    }
}

/// The certificates of `rootCAs` entries (paths or inline PEM).
fn load_roots(entries: &[String]) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut roots = Vec::new();
    for ca in entries {
        let pem = read_pem_or_path(ca)?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("rootCAs {ca}: {e}"))?;
        if certs.is_empty() {
            return Err(format!("rootCAs {ca}: no certificate found"));
        }
        roots.extend(certs);
    }
    Ok(roots)
}

/// Traefik accepts either a path or the PEM content itself.
pub(crate) fn read_pem_or_path(value: &str) -> Result<Vec<u8>, String> {
    if value.trim_start().starts_with("-----BEGIN") {
        return Ok(value.as_bytes().to_vec());
    }
    std::fs::read(value).map_err(|e| format!("{value}: {e}"))
}

fn located(at: Option<&crate::config::Location>, message: &str) -> String {
    match at {
        Some(l) => format!("{l}: {message}"),
        None => message.to_string(),
    }
}
