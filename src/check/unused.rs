//! Services and middlewares (HTTP, TCP, and UDP services) that no enabled router uses,
//! directly or through a parent: a weighted, highest-random-weight, mirroring or failover
//! service, a service's own middlewares, a `chain` middleware, or an `errors` middleware's
//! service. Routers validation disabled do not count: what they name is not served.

use std::collections::BTreeSet;

use crate::config::dynamic::HttpService;
use crate::config::{ConfigError, DynamicConfig, Report};

/// A warning for every service and middleware nothing enabled reaches.
pub fn unused_objects(dy: &DynamicConfig, report: &Report) -> Vec<ConfigError> {
    let mut http = Reach::default();
    let enabled_http = report
        .resolved_http_routers
        .iter()
        .filter(|(name, _)| report.http_router_enabled(name))
        .filter_map(|(_, resolved)| dy.http.routers.get(&resolved.origin));
    for router in enabled_http {
        http.service(dy, &router.value.service.value);
        for m in &router.value.middlewares {
            http.middleware(dy, &m.value);
        }
    }

    let mut tcp_services = BTreeSet::new();
    let mut tcp_middlewares = BTreeSet::new();
    for (name, router) in &dy.tcp.routers {
        if !report.tcp_router_enabled(name) {
            continue;
        }
        reach(&router.value.service.value, &mut tcp_services, |s| {
            dy.tcp
                .services
                .get(s)
                .and_then(|s| s.value.weighted.as_ref())
                .map(|w| w.services.iter().map(|c| c.name.value.clone()).collect())
                .unwrap_or_default()
        });
        tcp_middlewares.extend(router.value.middlewares.iter().map(|m| m.value.clone()));
    }

    let mut udp_services = BTreeSet::new();
    for (name, router) in &dy.udp.routers {
        if !report.udp_router_enabled(name) {
            continue;
        }
        reach(&router.value.service.value, &mut udp_services, |s| {
            dy.udp
                .services
                .get(s)
                .and_then(|s| s.value.weighted.as_ref())
                .map(|w| w.services.iter().map(|c| c.name.value.clone()).collect())
                .unwrap_or_default()
        });
    }

    let mut out = Vec::new();
    let mut warn = |what: &str, name: &str, location: &Option<crate::config::Location>| {
        out.push(ConfigError {
            location: location.clone(),
            message: format!("{what} \"{name}\" is not used by any enabled router"),
        });
    };
    for (name, s) in &dy.http.services {
        if !http.services.contains(name) {
            warn("HTTP service", name, &s.location);
        }
    }
    for (name, m) in &dy.http.middlewares {
        if !http.middlewares.contains(name) {
            warn("HTTP middleware", name, &m.location);
        }
    }
    for (name, s) in &dy.tcp.services {
        if !tcp_services.contains(name) {
            warn("TCP service", name, &s.location);
        }
    }
    for (name, m) in &dy.tcp.middlewares {
        if !tcp_middlewares.contains(name) {
            warn("TCP middleware", name, &m.location);
        }
    }
    for (name, s) in &dy.udp.services {
        if !udp_services.contains(name) {
            warn("UDP service", name, &s.location);
        }
    }
    out
}

/// The HTTP services and middlewares reached so far.
#[derive(Default)]
struct Reach {
    services: BTreeSet<String>,
    middlewares: BTreeSet<String>,
}

impl Reach {
    fn service(&mut self, dy: &DynamicConfig, name: &str) {
        if !self.services.insert(name.to_owned()) {
            return;
        }
        let Some(s) = dy.http.services.get(name) else {
            return;
        };
        for child in children(&s.value) {
            self.service(dy, child);
        }
        for m in &s.value.middlewares {
            self.middleware(dy, &m.value);
        }
    }

    fn middleware(&mut self, dy: &DynamicConfig, name: &str) {
        if !self.middlewares.insert(name.to_owned()) {
            return;
        }
        let Some(m) = dy.http.middlewares.get(name) else {
            return;
        };
        if let Some(chain) = &m.value.chain {
            for child in &chain.middlewares {
                self.middleware(dy, &child.value);
            }
        }
        if let Some(errors) = &m.value.errors {
            self.service(dy, &errors.service.value);
        }
    }
}

/// The services an HTTP service sends requests to.
fn children(s: &HttpService) -> Vec<&str> {
    let mut out = Vec::new();
    if let Some(w) = &s.weighted {
        out.extend(w.services.iter().map(|c| c.name.value.as_str()));
    }
    if let Some(h) = &s.highest_random_weight {
        out.extend(h.services.iter().map(|c| c.name.value.as_str()));
    }
    if let Some(m) = &s.mirroring {
        out.push(m.service.value.as_str());
        out.extend(m.mirrors.iter().map(|c| c.name.value.as_str()));
    }
    if let Some(f) = &s.failover {
        out.push(f.service.value.as_str());
        if !f.fallback.value.is_empty() {
            out.push(f.fallback.value.as_str());
        }
    }
    out
}

/// Adds `service` and every service reachable from it through `children` (a weighted
/// service's) to `used`; each is visited once, so cycles end.
fn reach(service: &str, used: &mut BTreeSet<String>, children: impl Fn(&str) -> Vec<String>) {
    let mut pending = vec![service.to_owned()];
    while let Some(s) = pending.pop() {
        if used.insert(s.clone()) {
            pending.extend(children(&s));
        }
    }
}
