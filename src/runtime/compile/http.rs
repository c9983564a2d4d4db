//! The HTTP half of a snapshot: each enabled HTTP router becomes a route in its entrypoints'
//! tables (plaintext or TLS) whose handler is the router's middleware chain around its
//! service, and TLS routers add their `Host()` domains, with their TLS option, to the
//! entrypoint's HTTPS server-name table.
//!
//! Middlewares and services are built once per snapshot and shared by every router that
//! names them. A router whose middleware or service cannot be built is not served (an
//! error names it): serving it without, say, its authentication would be worse.

use std::collections::HashMap;
use std::sync::Arc;

use l4::tcp::dispatch::{HttpsTarget, TlsMode};
use l4::tcp::sni::SniTable;
use std::time::Duration;

use ::http::{Request, Response};
use l7::handler::{Body, BoxError, BoxFuture, Noop, SharedHandler};
use l7::middleware::redirect_scheme::RedirectScheme;
use l7::middleware::{Middleware, apply_chain, apply_chain_for};
use l7::router::{Route, Table};
use l7::rule::HttpRule;
use l7::server::{HttpRoutes, RouteTarget};
use l7::service::{
    Child, CookieSpec, Failover, FailoverErrors, FailoverSpec, HealthCheckMode, HealthCheckSpec,
    HighestRandomWeight, LoadBalancer, LoadBalancerSpec, Mirror, Mirroring, MirroringSpec,
    PassiveHealthCheckSpec, Prober, SameSite, ServerSpec, SharedHealth, StatusRanges, Strategy,
    Weighted, WeightedSpec, cookie_name,
};
use l7::transport::{ServerOptions, Transport, TransportSettings};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::{
    Compiler, DEFAULT_TRANSPORT, MAX_SERVICE_DEPTH, load_roots, located, positive, read_pem_or_path,
};
use super::{mw_access, mw_auth, mw_grpc, mw_headers, mw_path, mw_responses, mw_tls, mw_traffic};
use crate::config::Location;
use crate::config::dynamic::{
    Cookie, DEFAULT_TLS_NAME, HttpMiddleware, ServerHealthCheck, ServersLoadBalancer,
    WeightedService,
};
use crate::config::validate::{Report, ResolvedRouter};

/// An entrypoint's (plaintext routes, TLS routes).
type RouteLists = (Vec<Route<RouteTarget>>, Vec<Route<RouteTarget>>);

/// Built middlewares, services and routes of the HTTP routers.
#[derive(Default)]
pub(super) struct HttpParts {
    middlewares: HashMap<String, Option<Arc<dyn Middleware>>>,
    services: HashMap<String, Option<Child>>,
    transports: HashMap<String, Option<Arc<Transport>>>,
    /// entrypoint → (plaintext routes, TLS routes)
    routes: HashMap<String, RouteLists>,
    /// entrypoint → HTTPS server names
    https: HashMap<String, SniTable<HttpsTarget>>,
}

/// What the HTTP routers contribute to one entrypoint.
pub(super) struct EntrypointHttp {
    pub routes: Arc<HttpRoutes>,
    pub https: SniTable<HttpsTarget>,
    /// Set when the entrypoint has TLS HTTP routers.
    pub https_default: Option<HttpsTarget>,
}

impl Compiler<'_> {
    /// Compiles every enabled HTTP router; the result is taken with [`Self::take_http`].
    pub(super) fn http_routers(&mut self, report: &Report) {
        for (name, resolved) in &report.resolved_http_routers {
            if !report.http_router_enabled(name) {
                self.close_broken_https_names(name, resolved);
                continue;
            }
            let Some(router) = self.dy.http.routers.get(&resolved.origin) else {
                continue;
            };
            let router = &router.value;
            if !router.parent_refs.is_empty() {
                self.problem(
                    router.rule.location.as_ref(),
                    format!("http router {name}: parentRefs (multi-layer routing) are not supported yet; not serving it"),
                );
                continue;
            }
            let rule = match HttpRule::compile(&router.rule.value) {
                Ok(rule) => rule,
                Err(e) => {
                    self.problem(
                        router.rule.location.as_ref(),
                        format!("http router {name}: invalid rule: {e}"),
                    );
                    continue;
                }
            };
            let Some(service) =
                self.http_service(&router.service.value, router.service.location.as_ref(), 0)
            else {
                continue;
            };
            let mut chain = Vec::new();
            let mut broken = false;
            for m in &router.middlewares {
                match self.http_middleware(&m.value, m.location.as_ref(), 0) {
                    Some(built) => chain.push(built),
                    None => broken = true,
                }
            }
            if broken {
                tracing::error!(router = %name, "http router not served: a middleware cannot be built");
                continue;
            }
            let handler = apply_chain_for(&format!("router {name}"), &chain, service);
            let priority = if router.priority == 0 {
                rule.default_priority()
            } else {
                router.priority
            };
            let tls_option: Option<Arc<str>> = resolved.tls_options.as_deref().map(|o| {
                if o.is_empty() {
                    Arc::from(DEFAULT_TLS_NAME)
                } else {
                    Arc::from(o)
                }
            });
            let precedence = crate::config::precedence::rank(&self.st.providers.precedence, name);
            let domains = rule.hosts();
            let service_name: Arc<str> = Arc::from(router.service.value.as_str());
            let drain = super::drain_of(self.st, &resolved.entry_points);
            let retirement =
                self.retirements
                    .http(self.previous_retirements, self.dy, name, router, drain);
            for ep in &resolved.entry_points {
                let route = Route {
                    name: name.clone(),
                    priority,
                    precedence,
                    rule: rule.clone(),
                    target: RouteTarget {
                        router: Arc::from(name.as_str()),
                        service: Some(service_name.clone()),
                        handler: handler.clone(),
                        tls_option: tls_option.clone(),
                        retirement: retirement.clone(),
                    },
                };
                let tables = self.http.routes.entry(ep.clone()).or_default();
                match &tls_option {
                    None => tables.0.push(route),
                    Some(option) => {
                        tables.1.push(route);
                        self.https_names(ep, name, option, &domains);
                    }
                }
            }
        }
    }

    /// A disabled TLS router whose TLS option is broken still claims its domains, with
    /// handshakes refused, as Traefik's closing route does: a client asking for that name
    /// never gets TLS without the client authentication the option asked for.
    fn close_broken_https_names(&mut self, name: &str, resolved: &ResolvedRouter) {
        let Some(option) = resolved.tls_options.as_deref() else {
            return;
        };
        let Some(router) = self.dy.http.routers.get(&resolved.origin) else {
            return;
        };
        let Ok(rule) = HttpRule::compile(&router.value.rule.value) else {
            return;
        };
        let domains = rule.hosts();
        let option: Arc<str> = Arc::from(if option.is_empty() {
            DEFAULT_TLS_NAME
        } else {
            option
        });
        if domains.is_empty() || !matches!(self.tls_mode(&option, None), TlsMode::Broken(_)) {
            return;
        }
        for ep in &resolved.entry_points {
            self.https_names(ep, name, &option, &domains);
        }
    }

    /// Adds a TLS router's domains (or the catch-all, for a router without `Host`) to the
    /// entrypoint's server-name table.
    fn https_names(&mut self, ep: &str, router: &str, option: &Arc<str>, domains: &[String]) {
        let mut wanted: Vec<(String, Arc<str>)> = domains
            .iter()
            .map(|d| (d.clone(), option.clone()))
            .collect();
        if wanted.is_empty() {
            // Traefik: TLS routers without a domain are reached through `HostSNI(*)` with
            // the default option.
            wanted.push(("*".to_owned(), Arc::from(DEFAULT_TLS_NAME)));
        }
        for (domain, option) in wanted {
            let tls = self.tls_mode(&option, None);
            let table = self.http.https.entry(ep.to_owned()).or_default();
            let target = HttpsTarget {
                option: option.clone(),
                tls,
            };
            if let Err((_, existing)) = table.insert(&domain, target)
                && existing.option != option
            {
                tracing::warn!(
                    entrypoint = ep,
                    router,
                    domain,
                    kept = %existing.option,
                    ignored = %option,
                    "two TLS options for one server name on one entrypoint; keeping the first"
                );
            }
        }
    }

    /// The HTTP parts of entrypoint `ep`.
    pub(super) fn take_http(&mut self, ep: &str) -> EntrypointHttp {
        let (mut plain, tls) = self.http.routes.remove(ep).unwrap_or_default();
        if self
            .internal
            .acme
            .http01_entrypoints()
            .iter()
            .any(|e| e == ep)
        {
            plain.extend(self.acme_http_route());
        }
        plain.extend(self.internal_routes(ep));
        let https = self.http.https.remove(ep).unwrap_or_default();
        let https_default = if tls.is_empty() {
            None
        } else {
            Some(HttpsTarget {
                option: Arc::from(DEFAULT_TLS_NAME),
                tls: self.tls_mode(DEFAULT_TLS_NAME, None),
            })
        };
        EntrypointHttp {
            routes: Arc::new(HttpRoutes {
                plain: Table::new(plain),
                tls: Table::new(tls),
            }),
            https,
            https_default,
        }
    }

    /// `acme-http@internal`: HTTP-01 answers on the challenge entrypoint, ahead of every user
    /// router (Traefik gives it the highest priority).
    fn acme_http_route(&self) -> Option<Route<RouteTarget>> {
        let rule = format!("PathPrefix(`{}`)", crate::acme::HTTP01_PREFIX);
        let name = "acme-http@internal";
        Some(Route {
            name: name.to_owned(),
            priority: i64::MAX,
            precedence: 0,
            rule: HttpRule::compile(&rule).ok()?,
            target: RouteTarget {
                router: Arc::from(name),
                // Traefik's name for the service of its ACME challenge router.
                service: Some(Arc::from("acme-http@internal")),
                handler: Arc::new(self.internal.acme.http01_handler()),
                tls_option: None,
                retirement: Default::default(),
            },
        })
    }

    /// The internal routers of entrypoint `ep` (`ping@internal`…), on plaintext.
    fn internal_routes(&self, ep: &str) -> Vec<Route<RouteTarget>> {
        let mut out = Vec::new();
        for r in &self.internal.http_routes {
            if r.entrypoint != ep {
                continue;
            }
            let (Ok(rule), Some(handler)) = (
                HttpRule::compile(&r.rule),
                self.internal.http_services.get(r.service),
            ) else {
                continue;
            };
            out.push(Route {
                name: r.name.to_owned(),
                priority: r.priority,
                precedence: 0,
                rule,
                target: RouteTarget {
                    router: Arc::from(r.name),
                    service: Some(Arc::from(r.service)),
                    handler: handler.clone(),
                    tls_option: None,
                    retirement: Default::default(),
                },
            });
        }
        out
    }

    fn http_middleware(
        &mut self,
        name: &str,
        at: Option<&Location>,
        depth: usize,
    ) -> Option<Arc<dyn Middleware>> {
        if let Some(built) = self.http.middlewares.get(name) {
            return built.clone();
        }
        let built = self.build_http_middleware(name, at, depth);
        self.http.middlewares.insert(name.to_owned(), built.clone());
        built
    }

    fn build_http_middleware(
        &mut self,
        name: &str,
        at: Option<&Location>,
        depth: usize,
    ) -> Option<Arc<dyn Middleware>> {
        if depth > MAX_SERVICE_DEPTH {
            self.problem(
                at,
                format!("middleware {name}: chains nest too deep (a cycle?)"),
            );
            return None;
        }
        let Some(def) = self.dy.http.middlewares.get(name) else {
            self.problem(at, format!("middleware \"{name}\" does not exist"));
            return None;
        };
        let at = def.location.as_ref().or(at);
        let m = &def.value;
        if let Some(r) = &m.redirect_scheme {
            return Some(Arc::new(RedirectScheme {
                scheme: if r.scheme.is_empty() {
                    "https".to_owned()
                } else {
                    r.scheme.clone()
                },
                port: r.port.clone(),
                permanent: r.permanent,
            }));
        }
        if let Some(chain) = &m.chain {
            let mut parts = Vec::new();
            for inner in &chain.middlewares {
                parts.push(self.http_middleware(
                    &inner.value,
                    inner.location.as_ref().or(at),
                    depth + 1,
                )?);
            }
            return Some(Arc::new(Chain(parts)));
        }
        if let Some(e) = &m.errors {
            if e.service.value.is_empty() {
                self.problem(at, format!("middleware {name}: errors.service is required"));
                return None;
            }
            let service_at = e.service.location.as_ref().or(at);
            let service = self.http_service(&e.service.value, service_at, depth + 1)?;
            return match mw_responses::build_errors(e, service) {
                Ok(mw) => Some(mw),
                Err(err) => {
                    self.problem(at, format!("middleware {name}: {err}"));
                    None
                }
            };
        }
        if let Some(limit) = m.rate_limit.as_ref().filter(|l| l.redis.is_none()) {
            return match mw_access::kept_rate_limit(name, limit, &self.internal.rate_limits) {
                Ok(mw) => Some(mw),
                Err(err) => {
                    self.problem(at, format!("middleware {name}: {err}"));
                    None
                }
            };
        }
        if let Some(limit) = &m.in_flight_req {
            let states = &self.internal.kept.in_flight_reqs;
            return match mw_access::kept_in_flight_req(name, limit, states) {
                Ok(mw) => Some(mw),
                Err(err) => {
                    self.problem(at, format!("middleware {name}: {err}"));
                    None
                }
            };
        }
        if let Some(breaker) = &m.circuit_breaker {
            let states = &self.internal.kept.circuit_breakers;
            return match mw_traffic::kept_circuit_breaker(name, breaker, states) {
                Ok(mw) => Some(mw),
                Err(err) => {
                    self.problem(at, format!("middleware {name}: {err}"));
                    None
                }
            };
        }
        if let Some(limit) = m.rate_limit.as_ref().filter(|l| l.redis.is_some()) {
            return match mw_access::shared_rate_limit(name, limit, &self.internal.redis_limits) {
                Ok(mw) => Some(mw),
                Err(err) => {
                    self.problem(at, format!("middleware {name}: {err}"));
                    None
                }
            };
        }
        for build in MIDDLEWARE_BUILDERS {
            if let Some(built) = build(name, m) {
                return match built {
                    Ok(mw) => Some(mw),
                    Err(e) => {
                        self.problem(at, format!("middleware {name}: {e}"));
                        None
                    }
                };
            }
        }
        let kinds = m.kinds().join(", ");
        self.problem(
            at,
            format!("middleware {name}: type {kinds} is not supported yet; routers using it are not served"),
        );
        None
    }

    pub(super) fn http_service(
        &mut self,
        name: &str,
        at: Option<&Location>,
        depth: usize,
    ) -> Option<SharedHandler> {
        self.http_child(name, at, depth).map(|child| child.handler)
    }

    /// A service as its parents see it: its handler (service middlewares included) and, if
    /// it reports one, its health. Built once per snapshot.
    fn http_child(&mut self, name: &str, at: Option<&Location>, depth: usize) -> Option<Child> {
        if let Some(built) = self.http.services.get(name) {
            return built.clone();
        }
        let built = self.build_http_service(name, at, depth);
        self.http.services.insert(name.to_owned(), built.clone());
        built
    }

    fn build_http_service(
        &mut self,
        name: &str,
        at: Option<&Location>,
        depth: usize,
    ) -> Option<Child> {
        if name == "noop@internal" {
            return Some(Child::new(name, Arc::new(Noop), None));
        }
        if let Some(handler) = self.internal.http_services.get(name) {
            return Some(Child::new(name, handler.clone(), None));
        }
        if depth > MAX_SERVICE_DEPTH {
            self.problem(
                at,
                format!("service {name}: services nest too deep (a cycle?)"),
            );
            return None;
        }
        let Some(def) = self.dy.http.services.get(name) else {
            self.problem(at, format!("service \"{name}\" does not exist"));
            return None;
        };
        let at = def.location.as_ref().or(at);
        let s = &def.value;
        let built: Result<(SharedHandler, Option<SharedHealth>), String> =
            if let Some(lb) = &s.load_balancer {
                self.load_balancer(name, lb, at)
            } else if let Some(w) = &s.weighted {
                let children = self.weighted_children(name, &w.services, at, depth)?;
                let spec = WeightedSpec {
                    sticky: w
                        .sticky
                        .as_ref()
                        .and_then(|st| st.cookie.as_ref())
                        .map(|c| cookie_spec(name, c)),
                    health_check: w.health_check.is_some(),
                };
                Weighted::new(name, spec, children, &self.internal.kept.http_weighted)
                    .map(|w| {
                        let health = w.health();
                        (Arc::new(w) as SharedHandler, health)
                    })
                    .map_err(|e| e.to_string())
            } else if let Some(h) = &s.highest_random_weight {
                let children = self.weighted_children(name, &h.services, at, depth)?;
                HighestRandomWeight::new(name, h.health_check.is_some(), children)
                    .map(|h| {
                        let health = h.health();
                        (Arc::new(h) as SharedHandler, health)
                    })
                    .map_err(|e| e.to_string())
            } else if let Some(m) = &s.mirroring {
                let main = self.http_child(
                    &m.service.value,
                    m.service.location.as_ref().or(at),
                    depth + 1,
                )?;
                let mut mirrors = Vec::new();
                for mirror in &m.mirrors {
                    let c = self.http_child(
                        &mirror.name.value,
                        mirror.name.location.as_ref().or(at),
                        depth + 1,
                    )?;
                    mirrors.push(Mirror {
                        name: c.name,
                        handler: c.handler,
                        percent: mirror.percent,
                    });
                }
                let spec = MirroringSpec {
                    mirror_body: m.mirror_body.unwrap_or(true),
                    max_body_size: m.max_body_size.and_then(|n| u64::try_from(n).ok()),
                    health_check: m.health_check.is_some(),
                };
                Mirroring::new(name, spec, main, mirrors)
                    .map(|m| {
                        let health = m.health();
                        (Arc::new(m) as SharedHandler, health)
                    })
                    .map_err(|e| e.to_string())
            } else if let Some(f) = &s.failover {
                let main = self.http_child(
                    &f.service.value,
                    f.service.location.as_ref().or(at),
                    depth + 1,
                )?;
                let fallback = self.http_child(
                    &f.fallback.value,
                    f.fallback.location.as_ref().or(at),
                    depth + 1,
                )?;
                let errors = match &f.errors {
                    Some(e) if !e.status.is_empty() => match StatusRanges::parse(&e.status) {
                        Ok(status) => Some(FailoverErrors {
                            status,
                            max_request_body_bytes: e
                                .max_request_body_bytes
                                .and_then(|n| u64::try_from(n).ok()),
                        }),
                        Err(e) => {
                            self.problem(at, format!("service {name}: {e}"));
                            return None;
                        }
                    },
                    _ => None,
                };
                let spec = FailoverSpec {
                    health_check: f.health_check.is_some(),
                    errors,
                };
                Failover::new(name, spec, main, fallback)
                    .map(|f| {
                        let health = f.health();
                        (Arc::new(f) as SharedHandler, health)
                    })
                    .map_err(|e| e.to_string())
            } else {
                Err(format!("type {} is not supported", s.kinds().join(", ")))
            };
        let (handler, health) = match built {
            Ok(built) => built,
            Err(e) => {
                self.problem(at, format!("service {name}: {e}"));
                return None;
            }
        };
        let mut chain = Vec::new();
        for m in &s.middlewares {
            chain.push(self.http_middleware(&m.value, m.location.as_ref(), 0)?);
        }
        let handler = apply_chain_for(&format!("service {name}"), &chain, handler);
        Some(Child::new(name, handler, health))
    }

    /// The children of a `weighted` or `highestRandomWeight` service, named as written in it
    /// (Traefik hashes those names for sticky cookies and rendezvous hashing).
    fn weighted_children(
        &mut self,
        parent: &str,
        services: &[WeightedService],
        at: Option<&Location>,
        depth: usize,
    ) -> Option<Vec<(Child, i64)>> {
        let mut children = Vec::new();
        for child in services {
            let mut c = self.http_child(
                &child.name.value,
                child.name.location.as_ref().or(at),
                depth + 1,
            )?;
            c.name = as_written(&child.name.value, parent);
            children.push((c, child.weight()));
        }
        Some(children)
    }

    /// A `loadBalancer`: its state from the registry (kept across reloads while its
    /// definition is unchanged) and one leaf per server through its serversTransport.
    fn load_balancer(
        &mut self,
        name: &str,
        lb: &ServersLoadBalancer,
        at: Option<&Location>,
    ) -> Result<(SharedHandler, Option<SharedHealth>), String> {
        let transport_name = if lb.servers_transport.value.is_empty() {
            DEFAULT_TRANSPORT.to_owned()
        } else {
            lb.servers_transport.value.clone()
        };
        let transport = self
            .http_transport(&transport_name)
            .ok_or_else(|| format!("serversTransport {transport_name} cannot be used"))?;
        let options = |preserve_path| ServerOptions {
            pass_host_header: lb.pass_host_header.unwrap_or(true),
            preserve_path,
        };
        let mut leaves: Vec<SharedHandler> = Vec::new();
        let mut servers = Vec::new();
        for server in &lb.servers {
            let leaf = transport
                .server(&server.url.value, options(server.preserve_path))
                .map_err(|e| located(server.url.location.as_ref().or(at), &e.to_string()))?;
            leaves.push(Arc::new(leaf));
            servers.push(ServerSpec {
                url: Arc::from(server.url.value.as_str()),
                weight: server.weight(),
                fenced: server.fenced,
            });
        }
        let strategy = match lb.strategy.value.to_ascii_lowercase().as_str() {
            "" | "wrr" => Strategy::Wrr,
            "p2c" => Strategy::P2c,
            "hrw" => Strategy::Hrw,
            other => {
                return Err(format!(
                    "strategy {other:?} is not supported (wrr, p2c, hrw)"
                ));
            }
        };
        let health_check = match &lb.health_check {
            Some(hc) => Some(health_check_spec(hc)?),
            None => None,
        };
        let spec = LoadBalancerSpec {
            servers,
            strategy,
            sticky: lb
                .sticky
                .as_ref()
                .and_then(|st| st.cookie.as_ref())
                .map(|c| cookie_spec(name, c)),
            health_check,
            passive_health_check: lb.passive_health_check.as_ref().map(|p| {
                PassiveHealthCheckSpec {
                    failure_window: p
                        .failure_window
                        .to_std()
                        .filter(|d| !d.is_zero())
                        .unwrap_or(Duration::from_secs(10)),
                    max_failed_attempts: u32::try_from(p.max_failed_attempts.max(1)).unwrap_or(1),
                }
            }),
        };
        let prober: Option<Arc<dyn Prober>> = spec
            .health_check
            .as_ref()
            .map(|_| Arc::new(TransportProber(transport.clone())) as Arc<dyn Prober>);
        let state = self
            .states
            .reuse_or_create(name, &spec, prober)
            .map_err(|e| e.to_string())?;
        let lb = LoadBalancer::new(state, leaves).map_err(|e| e.to_string())?;
        let health = lb.health();
        Ok((Arc::new(lb), health))
    }

    /// An HTTP serversTransport by name; `default@internal` is the static `serversTransport`.
    fn http_transport(&mut self, name: &str) -> Option<Arc<Transport>> {
        if let Some(built) = self.http.transports.get(name) {
            return built.clone();
        }
        let built = match self.http_transport_settings(name) {
            Ok(settings) => match self.transport_cache.reuse_or_create(name, settings) {
                Ok(t) => Some(t),
                Err(e) => {
                    let at = self
                        .dy
                        .http
                        .servers_transports
                        .get(name)
                        .and_then(|t| t.location.clone());
                    self.problem(at.as_ref(), format!("serversTransport {name}: {e}"));
                    None
                }
            },
            Err(e) => {
                let at = self
                    .dy
                    .http
                    .servers_transports
                    .get(name)
                    .and_then(|t| t.location.clone());
                self.problem(at.as_ref(), format!("serversTransport {name}: {e}"));
                None
            }
        };
        self.http.transports.insert(name.to_owned(), built.clone());
        built
    }

    fn http_transport_settings(&mut self, name: &str) -> Result<TransportSettings, String> {
        let mut settings = TransportSettings::default();
        if name == DEFAULT_TRANSPORT {
            let st = &self.st.servers_transport;
            if st.spiffe.is_some() {
                return Err("spiffe is not supported yet".into());
            }
            settings.insecure_skip_verify = st.insecure_skip_verify;
            settings.root_cas = load_roots(&st.root_cas)?;
            settings.max_idle_conns_per_host = st.max_idle_conns_per_host;
            let t = &st.forwarding_timeouts;
            settings.dial_timeout = positive(t.dial_timeout).unwrap_or(settings.dial_timeout);
            settings.response_header_timeout = positive(t.response_header_timeout);
            settings.idle_conn_timeout =
                positive(t.idle_conn_timeout).unwrap_or(settings.idle_conn_timeout);
            return Ok(settings);
        }
        let Some(def) = self.dy.http.servers_transports.get(name) else {
            return Err("does not exist".into());
        };
        let t = &def.value;
        if !t.peer_cert_uri.is_empty() || !t.peer_cert_sans.is_empty() || t.spiffe.is_some() {
            return Err("peerCertURI, peerCertSANs and spiffe are not supported yet; its services are not served".into());
        }
        if !t.cipher_suites.is_empty() {
            tracing::warn!(
                transport = name,
                "serversTransport cipherSuites are not applied; rustls' secure defaults are used"
            );
        }
        settings.server_name = Some(t.server_name.clone()).filter(|n| !n.is_empty());
        settings.insecure_skip_verify = t.insecure_skip_verify;
        settings.root_cas = load_roots(&t.root_cas)?;
        for c in &t.certificates {
            let cert_pem = read_pem_or_path(&c.cert_file)?;
            let key_pem = read_pem_or_path(&c.key_file)?;
            let certs = CertificateDer::pem_slice_iter(&cert_pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("certificate {}: {e}", c.cert_file))?;
            let key = PrivateKeyDer::from_pem_slice(&key_pem)
                .map_err(|e| format!("key {}: {e}", c.key_file))?;
            settings.client_certificates.push((certs, key));
        }
        settings.min_version = tls_version(&t.min_version)?;
        settings.max_version = tls_version(&t.max_version)?;
        // Go's default for a transport that sets none is 2 idle connections per host.
        settings.max_idle_conns_per_host = if t.max_idle_conns_per_host == 0 {
            2
        } else {
            t.max_idle_conns_per_host
        };
        settings.disable_http2 = t.disable_http2;
        let ft = t.forwarding_timeouts.clone().unwrap_or_default();
        settings.dial_timeout = positive(ft.dial_timeout).unwrap_or(settings.dial_timeout);
        settings.response_header_timeout = positive(ft.response_header_timeout);
        settings.idle_conn_timeout =
            positive(ft.idle_conn_timeout).unwrap_or(settings.idle_conn_timeout);
        settings.read_idle_timeout = positive(ft.read_idle_timeout);
        settings.ping_timeout = positive(ft.ping_timeout).unwrap_or(settings.ping_timeout);
        Ok(settings)
    }
}

/// Health checks send their probes through the service's transport.
struct TransportProber(Arc<Transport>);

impl Prober for TransportProber {
    fn probe(&self, request: Request<Body>) -> BoxFuture<'_, Result<Response<Body>, BoxError>> {
        Box::pin(async move {
            self.0
                .send(request)
                .await
                .map_err(|e| Box::new(e) as BoxError)
        })
    }
}

fn tls_version(name: &str) -> Result<Option<rustls::ProtocolVersion>, String> {
    match name {
        "" => Ok(None),
        "VersionTLS12" => Ok(Some(rustls::ProtocolVersion::TLSv1_2)),
        "VersionTLS13" => Ok(Some(rustls::ProtocolVersion::TLSv1_3)),
        "VersionTLS10" | "VersionTLS11" => {
            Err(format!("{name} is not supported (TLS 1.2 is the minimum)"))
        }
        other => Err(format!("unknown TLS version {other:?}")),
    }
}

/// A child service's name as its parent's configuration writes it, which Traefik uses for the
/// sticky cookie value of a `weighted` service and hashes for `highestRandomWeight`: `a`, not
/// `a@file`, for a child of a service of the same provider. The provider only qualifies bare
/// names, so a reference written `a@file` inside a file reads as `a` here too.
fn as_written(child: &str, parent: &str) -> String {
    match (child.rsplit_once('@'), parent.rsplit_once('@')) {
        (Some((bare, provider)), Some((_, parent_provider))) if provider == parent_provider => {
            bare.to_owned()
        }
        _ => child.to_owned(),
    }
}

fn cookie_spec(service: &str, c: &Cookie) -> CookieSpec {
    CookieSpec {
        name: cookie_name(Some(&c.name), service),
        secure: c.secure,
        http_only: c.http_only,
        same_site: match c.same_site.to_ascii_lowercase().as_str() {
            "none" => Some(SameSite::None),
            "lax" => Some(SameSite::Lax),
            "strict" => Some(SameSite::Strict),
            _ => None,
        },
        max_age: c.max_age,
        path: c.path.clone().unwrap_or_else(|| "/".to_owned()),
        domain: Some(c.domain.clone()).filter(|d| !d.is_empty()),
    }
}

fn health_check_spec(hc: &ServerHealthCheck) -> Result<HealthCheckSpec, String> {
    let mut spec = HealthCheckSpec {
        mode: match hc.mode.to_ascii_lowercase().as_str() {
            "" | "http" => HealthCheckMode::Http,
            "grpc" => HealthCheckMode::Grpc,
            other => {
                return Err(format!(
                    "healthCheck mode {other:?} is not supported (http, grpc)"
                ));
            }
        },
        scheme: Some(hc.scheme.clone()).filter(|s| !s.is_empty()),
        path: hc.path.clone(),
        interval: hc.interval.to_std().unwrap_or_default(),
        unhealthy_interval: hc
            .unhealthy_interval
            .and_then(|d| d.to_std())
            .filter(|d| !d.is_zero()),
        timeout: hc.timeout.to_std().unwrap_or_default(),
        hostname: Some(hc.hostname.clone()).filter(|h| !h.is_empty()),
        follow_redirects: hc.follow_redirects.unwrap_or(true),
        ..HealthCheckSpec::default()
    };
    if !hc.method.is_empty() {
        spec.method = ::http::Method::from_bytes(hc.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| format!("healthCheck method {:?} is invalid", hc.method))?;
    }
    if hc.status != 0 {
        spec.status = Some(
            u16::try_from(hc.status)
                .ok()
                .and_then(|s| ::http::StatusCode::from_u16(s).ok())
                .ok_or_else(|| format!("healthCheck status {} is invalid", hc.status))?,
        );
    }
    if hc.port != 0 {
        spec.port = Some(
            u16::try_from(hc.port)
                .map_err(|_| format!("healthCheck port {} is invalid", hc.port))?,
        );
    }
    for (k, v) in &hc.headers {
        let name = ::http::HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| format!("healthCheck header name {k:?} is invalid"))?;
        let value = ::http::HeaderValue::from_str(v)
            .map_err(|_| format!("healthCheck header {k} has an invalid value"))?;
        spec.headers.insert(name, value);
    }
    Ok(spec)
}

/// A middleware type's builder: `None` when the definition is not of its type.
type MiddlewareBuilder = fn(&str, &HttpMiddleware) -> Option<Result<Arc<dyn Middleware>, String>>;

/// The middleware types served besides `redirectScheme` and `chain`, one builder per group.
const MIDDLEWARE_BUILDERS: &[MiddlewareBuilder] = &[
    |_, m| mw_headers::build(m),
    mw_path::build,
    |_, m| mw_access::build(m),
    |_, m| mw_traffic::build(m),
    |_, m| mw_auth::build(m),
    |_, m| mw_responses::build(m),
    |_, m| mw_grpc::build(m),
    mw_tls::build,
];

/// `chain{middlewares}`: several middlewares as one.
struct Chain(Vec<Arc<dyn Middleware>>);

impl Middleware for Chain {
    fn wrap(&self, next: SharedHandler) -> SharedHandler {
        apply_chain(&self.0, next)
    }

    fn wrap_for(&self, owner: &str, next: SharedHandler) -> SharedHandler {
        apply_chain_for(owner, &self.0, next)
    }
}

#[cfg(test)]
mod tests {
    use super::as_written;

    #[test]
    fn children_of_the_same_provider_are_named_as_written() {
        assert_eq!(as_written("a@file", "split@file"), "a");
        assert_eq!(as_written("a@docker", "split@file"), "a@docker");
        assert_eq!(as_written("noop@internal", "split@file"), "noop@internal");
    }
}
