//! UDP services: which backend a new session goes to. A `loadBalancer` picks among its
//! servers by Traefik's weighted round robin (`wrr`, the default) or, as an extension, by
//! rendezvous hashing on the client IP (`hrw`), so that a client (a game client, a VoIP
//! call) lands on the same server for every session. A `weighted` service picks among child
//! services by weighted round robin. The choice is made once per session. Round robins can
//! be kept across reloads ([`crate::balance::wrr::WrrPositions`]).

use std::net::IpAddr;
use std::sync::Arc;

use crate::balance::hrw::Hashing;
use crate::balance::{Hrw, Wrr};

/// How a load balancer chooses among its servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Weighted round robin (all weights 1): Traefik's behaviour.
    #[default]
    Wrr,
    /// Highest random weight on the client IP: a client keeps its server across sessions.
    Hrw,
}

/// A UDP service, ready to pick backends.
pub enum UdpService {
    LoadBalancer(LoadBalancer),
    Weighted(Weighted),
}

/// `loadBalancer{servers[{address}]}`: backend addresses as written (`host:port`).
pub struct LoadBalancer {
    servers: Vec<Arc<str>>,
    choice: Choice,
}

enum Choice {
    Wrr(Arc<Wrr>),
    Hrw(Hrw<usize>),
}

impl LoadBalancer {
    pub fn new(servers: Vec<Arc<str>>, strategy: Strategy) -> Self {
        let choice = match strategy {
            Strategy::Wrr => Choice::Wrr(Arc::new(Wrr::new(&vec![1; servers.len()]))),
            Strategy::Hrw => {
                // Server addresses often differ only in their last digit, which
                // Traefik's unmixed hash would split about 2:1:1.
                let mut hrw = Hrw::with_hashing(Hashing::Mixed);
                for (i, server) in servers.iter().enumerate() {
                    hrw.add(i, server.to_string(), 1);
                }
                Choice::Hrw(hrw)
            }
        };
        Self { servers, choice }
    }

    /// A `wrr` load balancer whose round robin is `wrr` (one kept across reloads): one entry
    /// of weight 1 per server. A `wrr` of another length is replaced by a new one.
    pub fn with_wrr(servers: Vec<Arc<str>>, wrr: Arc<Wrr>) -> Self {
        if wrr.len() != servers.len() {
            return Self::new(servers, Strategy::Wrr);
        }
        Self {
            servers,
            choice: Choice::Wrr(wrr),
        }
    }

    pub fn servers(&self) -> &[Arc<str>] {
        &self.servers
    }

    fn pick(&self, client: IpAddr) -> Option<Arc<str>> {
        let index = match &self.choice {
            Choice::Wrr(wrr) => wrr.next(|_| true)?,
            Choice::Hrw(hrw) => *hrw.pick(&client.to_string())?,
        };
        self.servers.get(index).cloned()
    }
}

/// `weighted{services[{name, weight}]}`: child services by weighted round robin.
pub struct Weighted {
    children: Vec<Arc<UdpService>>,
    wrr: Arc<Wrr>,
}

impl Weighted {
    /// Children with their weights; a weight of 0 is never picked.
    pub fn new(children: Vec<(Arc<UdpService>, u32)>) -> Self {
        let weights: Vec<u32> = children.iter().map(|(_, w)| *w).collect();
        Self::with_wrr(children, Arc::new(Wrr::new(&weights)))
    }

    /// As [`Weighted::new`], with `wrr` (one kept across reloads, over the children's
    /// weights) as its round robin. A `wrr` of another length is replaced by a new one.
    pub fn with_wrr(children: Vec<(Arc<UdpService>, u32)>, wrr: Arc<Wrr>) -> Self {
        let wrr = if wrr.len() == children.len() {
            wrr
        } else {
            let weights: Vec<u32> = children.iter().map(|(_, w)| *w).collect();
            Arc::new(Wrr::new(&weights))
        };
        Self {
            children: children.into_iter().map(|(c, _)| c).collect(),
            wrr,
        }
    }
}

impl UdpService {
    /// The backend address for a new session of `client`; `None` when the service has no
    /// server to offer.
    pub fn pick(&self, client: IpAddr) -> Option<Arc<str>> {
        match self {
            UdpService::LoadBalancer(lb) => lb.pick(client),
            UdpService::Weighted(w) => {
                // A child with no server is skipped: try each child at most once.
                for _ in 0..w.children.len() {
                    let index = w.wrr.next(|_| true)?;
                    if let Some(server) = w.children.get(index).and_then(|c| c.pick(client)) {
                        return Some(server);
                    }
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lb(names: &[&str], strategy: Strategy) -> Arc<UdpService> {
        Arc::new(UdpService::LoadBalancer(LoadBalancer::new(
            names.iter().map(|n| Arc::from(*n)).collect(),
            strategy,
        )))
    }

    fn picks(service: &UdpService, client: &str, n: usize) -> String {
        let ip: IpAddr = client.parse().unwrap();
        (0..n)
            .map(|_| {
                service
                    .pick(ip)
                    .map(|s| s.to_string())
                    .unwrap_or("-".into())
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    #[test]
    fn round_robin_takes_each_server_in_turn() {
        let service = lb(&["a", "b", "c"], Strategy::Wrr);
        assert_eq!(picks(&service, "10.0.0.1", 6), "a,b,c,a,b,c");
    }

    #[test]
    fn weighted_children_share_by_weight() {
        let service = UdpService::Weighted(Weighted::new(vec![
            (lb(&["a", "b"], Strategy::Wrr), 3),
            (lb(&["c"], Strategy::Wrr), 1),
        ]));
        // Interleaved GCD WRR over 3:1 gives the first child 3 picks of every 4, and that
        // child alternates its servers.
        assert_eq!(picks(&service, "10.0.0.1", 8), "a,b,a,c,b,a,b,c");
    }

    #[test]
    fn hrw_keeps_a_client_on_one_server_and_spreads_clients() {
        let service = lb(&["s1:1", "s2:1", "s3:1"], Strategy::Hrw);
        let mut used = std::collections::HashSet::new();
        for n in 1..=60 {
            let client = format!("10.0.0.{n}");
            let first = picks(&service, &client, 1);
            assert_eq!(picks(&service, &client, 5), [first.as_str(); 5].join(","));
            used.insert(first);
        }
        assert_eq!(used.len(), 3, "60 clients reach all three servers");
    }

    #[test]
    fn hrw_spreads_clients_evenly_over_consecutive_ports() {
        let service = lb(
            &["127.0.0.1:27016", "127.0.0.1:27017", "127.0.0.1:27018"],
            Strategy::Hrw,
        );
        let mut counts = std::collections::HashMap::new();
        for n in 0..3000 {
            let client = format!("10.{}.{}.{}", n / 65536, (n / 256) % 256, n % 256);
            *counts.entry(picks(&service, &client, 1)).or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 3);
        assert!(
            counts.values().all(|n| (900..=1100).contains(n)),
            "{counts:?}"
        );
    }

    #[test]
    fn an_empty_service_offers_nothing() {
        let empty = lb(&[], Strategy::Wrr);
        assert_eq!(picks(&empty, "10.0.0.1", 2), "-,-");
        let weighted = UdpService::Weighted(Weighted::new(vec![
            (empty, 1),
            (lb(&["x"], Strategy::Hrw), 1),
        ]));
        assert_eq!(picks(&weighted, "10.0.0.1", 3), "x,x,x");
    }
}
