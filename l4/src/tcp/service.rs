//! The runtime tree of TCP services: load balancers over servers, and weighted services over
//! other services. Picking walks the tree with Traefik's TCP weighted round robin and returns
//! a healthy server together with the transport to dial it with.
//!
//! The tree is built from typed specifications (addresses are `host:port`, not parsed here)
//! and is immutable apart from each server's health flag, which health checks flip. Servers
//! are shared `Arc`s so a reload can carry their health over, and so are the round robins
//! ([`crate::balance::wrr::WrrPositions`]), so a reload can carry their positions over.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::transport::Transport;
use crate::balance::Wrr;

/// One backend of a load balancer.
#[derive(Debug)]
pub struct Server {
    /// `host:port`.
    pub address: String,
    /// Speak TLS to this server (with the transport's TLS settings).
    pub tls: bool,
    healthy: AtomicBool,
}

impl Server {
    /// A server, healthy until a health check says otherwise (as in Traefik).
    pub fn new(address: impl Into<String>, tls: bool) -> Self {
        Self {
            address: address.into(),
            tls,
            healthy: AtomicBool::new(true),
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Sets the health flag and returns the previous value.
    pub fn set_healthy(&self, healthy: bool) -> bool {
        self.healthy.swap(healthy, Ordering::Relaxed)
    }
}

/// `loadBalancer`: round robin over its healthy servers (every server weighs 1 in Traefik's
/// TCP load balancer).
#[derive(Debug)]
pub struct LoadBalancer {
    servers: Vec<Arc<Server>>,
    wrr: Arc<Wrr>,
    transport: Arc<Transport>,
}

impl LoadBalancer {
    pub fn new(servers: Vec<Arc<Server>>, transport: Arc<Transport>) -> Self {
        let wrr = Arc::new(Wrr::new(&vec![1; servers.len()]));
        Self::with_wrr(servers, transport, wrr)
    }

    /// A load balancer whose round robin is `wrr` (one kept across reloads): one entry of
    /// weight 1 per server. A `wrr` of another length is replaced by a new one.
    pub fn with_wrr(servers: Vec<Arc<Server>>, transport: Arc<Transport>, wrr: Arc<Wrr>) -> Self {
        let wrr = if wrr.len() == servers.len() {
            wrr
        } else {
            Arc::new(Wrr::new(&vec![1; servers.len()]))
        };
        Self {
            servers,
            wrr,
            transport,
        }
    }

    /// The round-robin entries of `servers`, as [`Wrr::kept`] takes them.
    pub fn wrr_entries(servers: &[Arc<Server>]) -> Vec<(String, u32)> {
        servers
            .iter()
            .map(|s| {
                (
                    format!("{}{}", if s.tls { "tls " } else { "" }, s.address),
                    1,
                )
            })
            .collect()
    }

    pub fn servers(&self) -> &[Arc<Server>] {
        &self.servers
    }

    pub fn transport(&self) -> &Arc<Transport> {
        &self.transport
    }

    /// The next healthy server, or `None` when none is.
    pub fn pick(&self) -> Option<Arc<Server>> {
        let index = self.wrr.next(|i| self.servers[i].is_healthy())?;
        Some(self.servers[index].clone())
    }

    fn has_healthy_server(&self) -> bool {
        self.servers.iter().any(|s| s.is_healthy())
    }
}

/// `weighted`: weighted round robin over child services.
#[derive(Debug)]
pub struct Weighted {
    children: Vec<(Service, u32)>,
    wrr: Arc<Wrr>,
}

impl Weighted {
    pub fn new(children: Vec<(Service, u32)>) -> Self {
        let weights: Vec<u32> = children.iter().map(|(_, weight)| *weight).collect();
        Self::with_wrr(children, Arc::new(Wrr::new(&weights)))
    }

    /// A weighted service whose round robin is `wrr` (one kept across reloads, over the
    /// children's weights). A `wrr` of another length is replaced by a new one.
    pub fn with_wrr(children: Vec<(Service, u32)>, wrr: Arc<Wrr>) -> Self {
        let wrr = if wrr.len() == children.len() {
            wrr
        } else {
            let weights: Vec<u32> = children.iter().map(|(_, weight)| *weight).collect();
            Arc::new(Wrr::new(&weights))
        };
        Self { children, wrr }
    }

    pub fn children(&self) -> &[(Service, u32)] {
        &self.children
    }
}

/// A node of the service tree.
#[derive(Debug, Clone)]
pub enum Service {
    LoadBalancer(Arc<LoadBalancer>),
    Weighted(Arc<Weighted>),
}

impl Service {
    /// A healthy server and the transport to reach it, or `None` when no server below this
    /// node is healthy. Weighted children with no healthy server are skipped.
    pub fn pick(&self) -> Option<(Arc<Server>, Arc<Transport>)> {
        match self {
            Service::LoadBalancer(lb) => Some((lb.pick()?, lb.transport.clone())),
            Service::Weighted(weighted) => {
                // A child can lose its last healthy server between the check and its pick;
                // then try the next child, at most once per child.
                for _ in 0..weighted.children.len() {
                    let index = weighted.wrr.next(|i| {
                        let (child, _) = &weighted.children[i];
                        child.has_healthy_server()
                    })?;
                    if let Some(picked) = weighted.children[index].0.pick() {
                        return Some(picked);
                    }
                }
                None
            }
        }
    }

    /// Whether any server below this node (reachable through a non-zero weight) is healthy.
    pub fn has_healthy_server(&self) -> bool {
        match self {
            Service::LoadBalancer(lb) => lb.has_healthy_server(),
            Service::Weighted(weighted) => weighted
                .children
                .iter()
                .any(|(child, weight)| *weight > 0 && child.has_healthy_server()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(addresses: &[&str]) -> Vec<Arc<Server>> {
        addresses
            .iter()
            .map(|a| Arc::new(Server::new(*a, false)))
            .collect()
    }

    fn lb(addresses: &[&str]) -> Arc<LoadBalancer> {
        Arc::new(LoadBalancer::new(
            servers(addresses),
            Arc::new(Transport::default()),
        ))
    }

    fn picks(service: &Service, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| match service.pick() {
                Some((server, _)) => server.address.clone(),
                None => "-".to_owned(),
            })
            .collect()
    }

    #[test]
    fn load_balancer_takes_turns() {
        let service = Service::LoadBalancer(lb(&["a:1", "b:1", "c:1"]));
        assert_eq!(
            picks(&service, 4),
            ["a:1", "b:1", "c:1", "a:1"].map(String::from)
        );
    }

    #[test]
    fn load_balancer_skips_unhealthy_servers_and_returns_their_transport() {
        let transport = Arc::new(Transport::default());
        let balancer = Arc::new(LoadBalancer::new(
            servers(&["a:1", "b:1"]),
            transport.clone(),
        ));
        assert!(balancer.servers()[0].set_healthy(false));
        let service = Service::LoadBalancer(balancer.clone());
        assert_eq!(picks(&service, 2), ["b:1", "b:1"].map(String::from));
        let (_, picked_transport) = service.pick().unwrap();
        assert!(Arc::ptr_eq(&picked_transport, &transport));

        balancer.servers()[1].set_healthy(false);
        assert!(service.pick().is_none());
        assert!(!service.has_healthy_server());
        balancer.servers()[0].set_healthy(true);
        assert_eq!(picks(&service, 1), ["a:1"].map(String::from));
    }

    #[test]
    fn empty_load_balancer_picks_nothing() {
        assert!(Service::LoadBalancer(lb(&[])).pick().is_none());
    }

    #[test]
    fn weighted_follows_the_weights() {
        let service = Service::Weighted(Arc::new(Weighted::new(vec![
            (Service::LoadBalancer(lb(&["a:1"])), 3),
            (Service::LoadBalancer(lb(&["b:1"])), 1),
        ])));
        assert_eq!(
            picks(&service, 8),
            ["a:1", "a:1", "a:1", "b:1", "a:1", "a:1", "a:1", "b:1"].map(String::from)
        );
    }

    #[test]
    fn weighted_skips_a_child_with_nothing_healthy() {
        let down = lb(&["a:1"]);
        down.servers()[0].set_healthy(false);
        let service = Service::Weighted(Arc::new(Weighted::new(vec![
            (Service::LoadBalancer(down.clone()), 3),
            (Service::LoadBalancer(lb(&["b:1", "c:1"])), 1),
        ])));
        assert_eq!(picks(&service, 3), ["b:1", "c:1", "b:1"].map(String::from));
        down.servers()[0].set_healthy(true);
        assert!(picks(&service, 4).contains(&"a:1".to_owned()));
    }

    #[test]
    fn nested_weighted_reaches_leaves_and_reports_all_down() {
        let inner_lb = lb(&["a:1"]);
        let inner = Service::Weighted(Arc::new(Weighted::new(vec![(
            Service::LoadBalancer(inner_lb.clone()),
            1,
        )])));
        let outer = Service::Weighted(Arc::new(Weighted::new(vec![(inner, 2)])));
        assert_eq!(picks(&outer, 2), ["a:1", "a:1"].map(String::from));
        inner_lb.servers()[0].set_healthy(false);
        assert!(outer.pick().is_none());
        assert!(!outer.has_healthy_server());
    }

    #[test]
    fn zero_weight_child_is_never_used() {
        let service = Service::Weighted(Arc::new(Weighted::new(vec![
            (Service::LoadBalancer(lb(&["a:1"])), 0),
            (Service::LoadBalancer(lb(&["b:1"])), 1),
        ])));
        assert_eq!(picks(&service, 3), ["b:1", "b:1", "b:1"].map(String::from));
    }
}
