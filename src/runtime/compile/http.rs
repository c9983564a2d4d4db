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

use l4::tcp::dispatch::HttpsTarget;
use l4::tcp::sni::SniTable;
use l7::handler::{Noop, SharedHandler};
use l7::middleware::redirect_scheme::RedirectScheme;
use l7::middleware::{Middleware, apply_chain};
use l7::proxy::{ForwardConfig, Forwarder, HttpService, ServiceHandler, Upstream};
use l7::router::{Route, Table};
use l7::rule::HttpRule;
use l7::server::{HttpRoutes, RouteTarget};

use super::{Compiler, MAX_SERVICE_DEPTH};
use crate::config::Location;
use crate::config::dynamic::DEFAULT_TLS_NAME;
use crate::config::validate::Report;

/// An entrypoint's (plaintext routes, TLS routes).
type RouteLists = (Vec<Route<RouteTarget>>, Vec<Route<RouteTarget>>);

/// Built middlewares, services and routes of the HTTP routers.
#[derive(Default)]
pub(super) struct HttpParts {
    middlewares: HashMap<String, Option<Arc<dyn Middleware>>>,
    services: HashMap<String, Option<SharedHandler>>,
    forwarder: Option<Arc<Forwarder>>,
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
            let handler = apply_chain(&chain, service);
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
            let domains = rule.hosts();
            for ep in &resolved.entry_points {
                let route = Route {
                    name: name.clone(),
                    priority,
                    rule: rule.clone(),
                    target: RouteTarget {
                        router: Arc::from(name.as_str()),
                        handler: handler.clone(),
                        tls_option: tls_option.clone(),
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
        let (plain, tls) = self.http.routes.remove(ep).unwrap_or_default();
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
    ) -> Option<SharedHandler> {
        if name == "noop@internal" {
            return Some(Arc::new(Noop));
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
        let Some(lb) = &s.load_balancer else {
            self.problem(
                at,
                format!(
                    "service {name}: type {} is not supported yet",
                    s.kinds().join(", ")
                ),
            );
            return None;
        };
        let mut servers = Vec::new();
        for server in &lb.servers {
            match Upstream::parse(&server.url.value) {
                Ok(upstream) => servers.push((upstream, server.weight())),
                Err(e) => {
                    self.problem(
                        server.url.location.as_ref().or(at),
                        format!("service {name}: {e}"),
                    );
                    return None;
                }
            }
        }
        let forwarder = self
            .http
            .forwarder
            .get_or_insert_with(|| Forwarder::new(ForwardConfig::default()))
            .clone();
        let service: SharedHandler = Arc::new(ServiceHandler::new(
            HttpService::new(servers, lb.pass_host_header.unwrap_or(true)),
            forwarder,
        ));
        let mut chain = Vec::new();
        for m in &s.middlewares {
            chain.push(self.http_middleware(&m.value, m.location.as_ref(), 0)?);
        }
        Some(apply_chain(&chain, service))
    }
}

/// `chain{middlewares}`: several middlewares as one.
struct Chain(Vec<Arc<dyn Middleware>>);

impl Middleware for Chain {
    fn wrap(&self, next: SharedHandler) -> SharedHandler {
        apply_chain(&self.0, next)
    }
}
