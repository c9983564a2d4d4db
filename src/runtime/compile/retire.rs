//! Which TCP and UDP routers a reload leaves as they were.
//!
//! A router whose definition is unchanged — the router itself, the services it reaches
//! (weighted ones included), and for TCP their servers transports, its middlewares and its
//! TLS option — keeps its [`Retirement`] in the new snapshot, so its open connections and
//! sessions never notice the reload. Every other router of the old snapshot is retired once
//! the new one is installed: its connections get the longest `lifeCycle.graceTimeOut` of its
//! entrypoints to finish, then are closed with a log line. A certificate that changes
//! retires nothing: a connection's handshake is done.

use std::collections::HashMap;
use std::time::Duration;

use l4::retire::Retirement;
use tracing::info;

use crate::config::dynamic::{
    DEFAULT_TLS_NAME, DynamicConfig, TcpMiddleware, TcpRouter, TcpServersTransport, TcpService,
    TlsOptions, UdpRouter, UdpService,
};

/// Nested weighted services are followed this deep (compilation reports cycles).
const MAX_DEPTH: usize = 16;

/// The TCP and UDP routers of one snapshot, by name, with what they were built from.
#[derive(Default)]
pub struct RouteRetirements {
    tcp: HashMap<String, Kept<Definition>>,
    udp: HashMap<String, Kept<UdpDefinition>>,
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
                .and_then(|t| {
                    let name = if t.options.value.is_empty() {
                        DEFAULT_TLS_NAME
                    } else {
                        &t.options.value
                    };
                    dy.tls.options.get(name).map(|o| o.value.clone())
                }),
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

    /// Retires the routers of `self` (the snapshot just replaced) that `next` does not keep.
    pub fn retire_replaced(&self, next: &RouteRetirements) {
        retire_replaced("tcp", &self.tcp, &next.tcp);
        retire_replaced("udp", &self.udp, &next.udp);
    }
}
