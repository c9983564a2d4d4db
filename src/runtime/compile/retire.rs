//! Which TCP, UDP and HTTP routers a reload leaves as they were.
//!
//! A router whose definition is unchanged — the router itself, the services it reaches
//! (weighted ones included), and for TCP and HTTP their servers transports, its middlewares and its
//! TLS option — keeps its [`Retirement`] in the new snapshot, so its open connections and
//! sessions never notice the reload. For an HTTP router the connections concerned are the
//! upgraded ones (WebSockets and other `101 Switching Protocols` tunnels): a request is
//! routed afresh each time, but a tunnel lives on the router that switched it. Every other router of the old snapshot is retired once
//! the new one is installed: its connections get the longest `lifeCycle.graceTimeOut` of its
//! entrypoints to finish, then are closed with a log line. A certificate that changes
//! retires nothing: a connection's handshake is done.

use std::collections::HashMap;
use std::time::Duration;

use l4::retire::Retirement;
use tracing::info;

use crate::config::dynamic::{
    DEFAULT_TLS_NAME, DynamicConfig, HttpMiddleware, HttpRouter, HttpService, ServersTransport,
    TcpMiddleware, TcpRouter, TcpServersTransport, TcpService, TlsOptions, UdpRouter, UdpService,
};

/// Nested weighted services are followed this deep (compilation reports cycles).
const MAX_DEPTH: usize = 16;

/// The TCP and UDP routers of one snapshot, by name, with what they were built from.
#[derive(Default)]
pub struct RouteRetirements {
    tcp: HashMap<String, Kept<Definition>>,
    udp: HashMap<String, Kept<UdpDefinition>>,
    http: HashMap<String, Kept<HttpDefinition>>,
}

struct Kept<D> {
    definition: D,
    drain: Duration,
    retirement: Retirement,
}

/// Everything a UDP router's sessions depend on, as configured.
#[derive(PartialEq)]
struct UdpDefinition {
    router: UdpRouter,
    services: Vec<(String, Option<UdpService>)>,
}

impl UdpDefinition {
    fn of(dy: &DynamicConfig, router: &UdpRouter) -> UdpDefinition {
        let mut definition = UdpDefinition {
            router: router.clone(),
            services: Vec::new(),
        };
        let mut pending = vec![(router.service.value.clone(), 0)];
        while let Some((name, depth)) = pending.pop() {
            if depth > MAX_DEPTH || definition.services.iter().any(|(seen, _)| *seen == name) {
                continue;
            }
            let service = dy.udp.services.get(&name).map(|s| s.value.clone());
            if let Some(weighted) = service.as_ref().and_then(|s| s.weighted.as_ref()) {
                pending.extend(
                    weighted
                        .services
                        .iter()
                        .map(|c| (c.name.value.clone(), depth + 1)),
                );
            }
            definition.services.push((name, service));
        }
        definition
    }
}

/// The retirement a router gets in the snapshot being built: the previous snapshot's when
/// its definition is unchanged, else a new one.
fn carry<D: PartialEq>(
    next: &mut HashMap<String, Kept<D>>,
    previous: &HashMap<String, Kept<D>>,
    name: &str,
    definition: D,
    drain: Duration,
) -> Retirement {
    let retirement = match previous.get(name) {
        Some(kept) if kept.definition == definition => kept.retirement.clone(),
        _ => Retirement::new(),
    };
    next.insert(
        name.to_owned(),
        Kept {
            definition,
            drain,
            retirement: retirement.clone(),
        },
    );
    retirement
}

/// Retires the routers of `previous` that `next` does not keep, logging each.
fn retire_replaced<D>(
    kind: &str,
    previous: &HashMap<String, Kept<D>>,
    next: &HashMap<String, Kept<D>>,
) {
    for (name, kept) in previous {
        let stays = next
            .get(name)
            .is_some_and(|n| n.retirement.is(&kept.retirement));
        if stays {
            continue;
        }
        let how = if next.contains_key(name) {
            "changed"
        } else {
            "removed"
        };
        info!(
            router = %name,
            drain = ?kept.drain,
            "{kind} router {how} by a reload: its open connections close when the drain time is over"
        );
        kept.retirement.retire(kept.drain);
    }
}

/// Everything a TCP router's connections depend on, as configured.
#[derive(PartialEq)]
struct Definition {
    router: TcpRouter,
    services: Vec<(String, Option<TcpService>)>,
    transports: Vec<(String, Option<TcpServersTransport>)>,
    middlewares: Vec<(String, Option<TcpMiddleware>)>,
    tls: Option<TlsOptions>,
}

impl Definition {
    fn of(dy: &DynamicConfig, router: &TcpRouter) -> Definition {
        let mut definition = Definition {
            router: router.clone(),
            services: Vec::new(),
            transports: Vec::new(),
            middlewares: router
                .middlewares
                .iter()
                .map(|m| {
                    (
                        m.value.clone(),
                        dy.tcp.middlewares.get(&m.value).map(|d| d.value.clone()),
                    )
                })
                .collect(),
            tls: router
                .tls
                .as_ref()
                .filter(|t| !t.passthrough)
                .and_then(|t| tls_option(dy, &t.options.value)),
        };
        definition.add_service(dy, &router.service.value, 0);
        definition
    }

    fn add_service(&mut self, dy: &DynamicConfig, name: &str, depth: usize) {
        if depth > MAX_DEPTH || self.services.iter().any(|(seen, _)| seen == name) {
            return;
        }
        let service = dy.tcp.services.get(name).map(|s| s.value.clone());
        self.services.push((name.to_owned(), service.clone()));
        let Some(service) = service else { return };
        if let Some(lb) = &service.load_balancer {
            let transport = &lb.servers_transport.value;
            if !transport.is_empty() && !self.transports.iter().any(|(t, _)| t == transport) {
                let defined = dy
                    .tcp
                    .servers_transports
                    .get(transport)
                    .map(|t| t.value.clone());
                self.transports.push((transport.clone(), defined));
            }
        }
        if let Some(weighted) = &service.weighted {
            for child in &weighted.services {
                self.add_service(dy, &child.name, depth + 1);
            }
        }
    }
}

/// Everything an HTTP router's upgraded connections depend on, as configured: the router,
/// every middleware it reaches (chains followed), every service (through weighted,
/// mirroring, failover and highestRandomWeight services, service middlewares and `errors`
/// pages), their servers transports, and its TLS option.
#[derive(PartialEq)]
struct HttpDefinition {
    router: HttpRouter,
    middlewares: Vec<(String, Option<HttpMiddleware>)>,
    services: Vec<(String, Option<HttpService>)>,
    transports: Vec<(String, Option<ServersTransport>)>,
    tls: Option<TlsOptions>,
}

impl HttpDefinition {
    fn of(dy: &DynamicConfig, router: &HttpRouter) -> HttpDefinition {
        let mut definition = HttpDefinition {
            router: router.clone(),
            middlewares: Vec::new(),
            services: Vec::new(),
            transports: Vec::new(),
            tls: router
                .tls
                .as_ref()
                .and_then(|t| tls_option(dy, &t.options.value)),
        };
        for middleware in &router.middlewares {
            definition.add_middleware(dy, &middleware.value, 0);
        }
        definition.add_service(dy, &router.service.value, 0);
        definition
    }

    fn add_middleware(&mut self, dy: &DynamicConfig, name: &str, depth: usize) {
        if depth > MAX_DEPTH || self.middlewares.iter().any(|(seen, _)| seen == name) {
            return;
        }
        let middleware = dy.http.middlewares.get(name).map(|m| m.value.clone());
        self.middlewares.push((name.to_owned(), middleware.clone()));
        let Some(middleware) = middleware else { return };
        if let Some(chain) = &middleware.chain {
            for link in &chain.middlewares {
                self.add_middleware(dy, &link.value, depth + 1);
            }
        }
        if let Some(errors) = &middleware.errors {
            self.add_service(dy, &errors.service.value, depth + 1);
        }
    }

    fn add_service(&mut self, dy: &DynamicConfig, name: &str, depth: usize) {
        if depth > MAX_DEPTH || self.services.iter().any(|(seen, _)| seen == name) {
            return;
        }
        let service = dy.http.services.get(name).map(|s| s.value.clone());
        self.services.push((name.to_owned(), service.clone()));
        let Some(service) = service else { return };
        for middleware in &service.middlewares {
            self.add_middleware(dy, &middleware.value, depth + 1);
        }
        if let Some(lb) = &service.load_balancer {
            let transport = &lb.servers_transport.value;
            if !transport.is_empty() && !self.transports.iter().any(|(t, _)| t == transport) {
                let defined = dy
                    .http
                    .servers_transports
                    .get(transport)
                    .map(|t| t.value.clone());
                self.transports.push((transport.clone(), defined));
            }
        }
        let mut children: Vec<&str> = Vec::new();
        if let Some(weighted) = &service.weighted {
            children.extend(weighted.services.iter().map(|c| c.name.value.as_str()));
        }
        if let Some(hrw) = &service.highest_random_weight {
            children.extend(hrw.services.iter().map(|c| c.name.value.as_str()));
        }
        if let Some(mirroring) = &service.mirroring {
            children.push(&mirroring.service.value);
            children.extend(mirroring.mirrors.iter().map(|m| m.name.value.as_str()));
        }
        if let Some(failover) = &service.failover {
            children.push(&failover.service.value);
            children.push(&failover.fallback.value);
        }
        for child in children {
            self.add_service(dy, child, depth + 1);
        }
    }
}

/// The TLS option a router's `tls.options` names (`default` when empty).
fn tls_option(dy: &DynamicConfig, name: &str) -> Option<TlsOptions> {
    let name = if name.is_empty() {
        DEFAULT_TLS_NAME
    } else {
        name
    };
    dy.tls.options.get(name).map(|o| o.value.clone())
}

impl RouteRetirements {
    /// The retirement of TCP router `name` in the snapshot being built (`self`): the one it
    /// had in `previous` when its definition in `dy` is unchanged, else a new one. `drain`
    /// is what its connections will get when a later reload retires it.
    pub fn tcp(
        &mut self,
        previous: &RouteRetirements,
        dy: &DynamicConfig,
        name: &str,
        router: &TcpRouter,
        drain: Duration,
    ) -> Retirement {
        let definition = Definition::of(dy, router);
        carry(&mut self.tcp, &previous.tcp, name, definition, drain)
    }

    /// [`RouteRetirements::tcp`] for UDP router `name`, whose sessions it ends.
    pub fn udp(
        &mut self,
        previous: &RouteRetirements,
        dy: &DynamicConfig,
        name: &str,
        router: &UdpRouter,
        drain: Duration,
    ) -> Retirement {
        let definition = UdpDefinition::of(dy, router);
        carry(&mut self.udp, &previous.udp, name, definition, drain)
    }

    /// [`RouteRetirements::tcp`] for HTTP router `name`, whose upgraded connections it ends.
    pub fn http(
        &mut self,
        previous: &RouteRetirements,
        dy: &DynamicConfig,
        name: &str,
        router: &HttpRouter,
        drain: Duration,
    ) -> Retirement {
        let definition = HttpDefinition::of(dy, router);
        carry(&mut self.http, &previous.http, name, definition, drain)
    }

    /// Retires the routers of `self` (the snapshot just replaced) that `next` does not keep.
    pub fn retire_replaced(&self, next: &RouteRetirements) {
        retire_replaced("tcp", &self.tcp, &next.tcp);
        retire_replaced("udp", &self.udp, &next.udp);
        retire_replaced("http", &self.http, &next.http);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::file_provider::parse_dynamic;
    use crate::config::source::Format;

    const BASE: &str = r#"
http:
  routers:
    ws: {rule: "Host(`ws.test`)", service: front, middlewares: [guard]}
    other: {rule: "Host(`other.test`)", service: lone}
  middlewares:
    guard: {chain: {middlewares: [auth, pages]}}
    auth: {basicAuth: {users: ["u:$apr1$x$y"]}}
    pages: {errors: {status: ["500"], service: error-pages}}
  services:
    front: {weighted: {services: [{name: main}, {name: spare}]}}
    main: {loadBalancer: {servers: [{url: "http://127.0.0.1:1"}], serversTransport: fast}}
    spare: {failover: {service: a, fallback: b}}
    a: {loadBalancer: {servers: [{url: "http://127.0.0.1:2"}]}}
    b: {loadBalancer: {servers: [{url: "http://127.0.0.1:3"}]}}
    error-pages: {loadBalancer: {servers: [{url: "http://127.0.0.1:4"}]}}
    lone: {loadBalancer: {servers: [{url: "http://127.0.0.1:5"}]}}
  serversTransports:
    fast: {maxIdleConnsPerHost: 4}
"#;

    /// Whether router `ws` keeps its retirement from `BASE` to `BASE` with `from` replaced
    /// by `to`.
    fn ws_kept(from: &str, to: &str) -> bool {
        assert!(BASE.contains(from), "{from}");
        let before = parse_dynamic(BASE, Format::Yaml, "a.yml").unwrap();
        let after = parse_dynamic(&BASE.replace(from, to), Format::Yaml, "a.yml").unwrap();
        let retirement = |dy: &DynamicConfig, previous: &RouteRetirements| {
            let mut next = RouteRetirements::default();
            let router = &dy.http.routers["ws@file"].value;
            let r = next.http(previous, dy, "ws@file", router, Duration::from_secs(1));
            (r, next)
        };
        let (first, previous) = retirement(&before, &RouteRetirements::default());
        let (second, _) = retirement(&after, &previous);
        second.is(&first)
    }

    #[test]
    fn an_http_router_is_kept_through_changes_to_what_it_does_not_reach() {
        assert!(ws_kept("", ""));
        assert!(ws_kept("http://127.0.0.1:5", "http://127.0.0.1:6"));
        assert!(ws_kept("Host(`other.test`)", "Host(`else.test`)"));
    }

    #[test]
    fn an_http_router_is_changed_by_anything_it_reaches() {
        for (from, to) in [
            ("Host(`ws.test`)", "Host(`ws2.test`)"),
            // A middleware inside a chain.
            ("u:$apr1$x$y", "v:$apr1$x$y"),
            // The service of an `errors` middleware.
            ("http://127.0.0.1:4", "http://127.0.0.1:7"),
            // A weighted child's servers transport.
            ("maxIdleConnsPerHost: 4", "maxIdleConnsPerHost: 5"),
            // A failover's fallback, two services down.
            ("http://127.0.0.1:3", "http://127.0.0.1:8"),
        ] {
            assert!(!ws_kept(from, to), "{from} → {to}");
        }
    }
}
