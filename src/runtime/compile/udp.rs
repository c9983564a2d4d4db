//! UDP routers and services of a snapshot, compiled into each UDP entrypoint's
//! [`UdpRoutes`]: routers with a rule (extensions: `ClientIP`, and on QUIC passthrough
//! routers the ClientHello's `HostSNI`/`ALPN`) in priority order, then the
//! entrypoint's router without a rule — Traefik's one router per entrypoint, the last by
//! name when several are configured.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use l4::balance::Wrr;
use l4::balance::wrr::WrrPositions;
use l4::tcp::rule::TcpRule;
use l4::udp::{LoadBalancer, Strategy, UdpRoute, UdpRoutes, UdpService, Weighted};

use crate::config::dynamic::{DynamicConfig, UdpService as UdpServiceConfig};
use crate::config::static_cfg::{Protocol, StaticConfig};
use crate::config::validate::Report;

use super::{RouteRetirements, drain_of};

/// Weighted services nest at most this deep (validation already refuses cycles).
const MAX_DEPTH: usize = 32;

/// The UDP routes of every UDP entrypoint that has a router.
/// `retirements` are the previous snapshot's routers and this one's (see [`super::retire`]);
/// `positions` keeps the services' round robins across reloads.
pub(super) fn udp_routes(
    st: &StaticConfig,
    dy: &DynamicConfig,
    report: &Report,
    (previous, retirements): (&RouteRetirements, &mut RouteRetirements),
    positions: &WrrPositions,
) -> HashMap<String, Arc<UdpRoutes>> {
    // Routers without entrypoints are on every UDP entrypoint; the UDP side of a TCP
    // entrypoint with `http3` takes only the routers that name it.
    let udp_eps: Vec<String> = st
        .entry_points
        .iter()
        .filter(|(_, ep)| ep.address.protocol == Protocol::Udp)
        .map(|(name, _)| name.clone())
        .collect();
    let named_eps: Vec<&str> = st.udp_capable_entry_points().collect();
    let mut services = ServiceBuilder {
        dy,
        positions,
        built: HashMap::new(),
    };
    // entrypoint → (routers with a rule, routers without one by name)
    let mut tables: BTreeMap<String, (Vec<UdpRoute>, BTreeMap<String, UdpRoute>)> = BTreeMap::new();
    for (name, router) in &dy.udp.routers {
        if !report.udp_router_enabled(name) {
            continue;
        }
        let r = &router.value;
        let quic = r.tls.as_ref().is_some_and(|t| t.passthrough);
        let Some(service) = services.get(&r.service.value, 0) else {
            continue;
        };
        let rule = if r.rule.value.is_empty() {
            None
        } else {
            // Validation compiled it already; a failure here means it was disabled.
            let Ok(rule) = TcpRule::compile(&r.rule.value, quic) else {
                continue;
            };
            Some(rule)
        };
        let eps = if r.entry_points.is_empty() {
            udp_eps.clone()
        } else {
            r.entry_points
                .iter()
                .filter(|ep| named_eps.contains(&ep.as_str()))
                .cloned()
                .collect()
        };
        let drain = drain_of(st, &eps);
        let retirement = retirements.udp(previous, dy, name, r, drain);
        for ep in eps {
            let route = UdpRoute {
                name: Arc::from(name.as_str()),
                priority: match (&rule, r.priority) {
                    (Some(rule), 0) => rule.default_priority(),
                    (_, priority) => priority,
                },
                precedence: crate::config::precedence::rank(&st.providers.precedence, name),
                rule: rule.clone(),
                service: service.clone(),
                service_name: Arc::from(r.service.value.as_str()),
                quic,
                retirement: retirement.clone(),
            };
            let table = tables.entry(ep).or_default();
            if route.rule.is_some() {
                table.0.push(route);
            } else {
                table.1.insert(name.clone(), route);
            }
        }
    }
    tables
        .into_iter()
        .map(|(ep, (with_rules, mut fallbacks))| {
            // Traefik sorts by name, descending, and keeps the first.
            let fallback = fallbacks.pop_last().map(|(_, route)| route);
            (ep, Arc::new(UdpRoutes::new(with_rules, fallback)))
        })
        .collect()
}

/// UDP services by name, each built once per snapshot.
struct ServiceBuilder<'a> {
    dy: &'a DynamicConfig,
    positions: &'a WrrPositions,
    built: HashMap<String, Option<Arc<UdpService>>>,
}

impl ServiceBuilder<'_> {
    fn get(&mut self, name: &str, depth: usize) -> Option<Arc<UdpService>> {
        if let Some(done) = self.built.get(name) {
            return done.clone();
        }
        let built = self
            .dy
            .udp
            .services
            .get(name)
            .and_then(|s| self.build(name, &s.value, depth));
        self.built.insert(name.to_owned(), built.clone());
        built
    }

    fn build(
        &mut self,
        name: &str,
        service: &UdpServiceConfig,
        depth: usize,
    ) -> Option<Arc<UdpService>> {
        if depth > MAX_DEPTH {
            return None;
        }
        match (&service.load_balancer, &service.weighted) {
            (Some(lb), None) => {
                let strategy = match lb.strategy.value.as_str() {
                    "hrw" => Strategy::Hrw,
                    _ => Strategy::Wrr,
                };
                let servers: Vec<Arc<str>> = lb
                    .servers
                    .iter()
                    .map(|s| Arc::from(s.address.value.as_str()))
                    .collect();
                let lb = match strategy {
                    Strategy::Wrr => {
                        let entries = servers.iter().map(|s| (s.to_string(), 1)).collect();
                        let wrr = Wrr::kept(self.positions, name, entries);
                        LoadBalancer::with_wrr(servers, wrr)
                    }
                    Strategy::Hrw => LoadBalancer::new(servers, strategy),
                };
                Some(Arc::new(UdpService::LoadBalancer(lb)))
            }
            (None, Some(w)) => {
                let mut children = Vec::new();
                let mut entries = Vec::new();
                for child in &w.services {
                    let weight = u32::try_from(child.weight().max(0)).unwrap_or(u32::MAX);
                    children.push((self.get(&child.name.value, depth + 1)?, weight));
                    entries.push((child.name.value.clone(), weight));
                }
                let wrr = Wrr::kept(self.positions, name, entries);
                Some(Arc::new(UdpService::Weighted(Weighted::with_wrr(
                    children, wrr,
                ))))
            }
            _ => None,
        }
    }
}
