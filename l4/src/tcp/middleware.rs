//! TCP middlewares: the checks a connection passes before a backend is dialled.
//!
//! Traefik has two: `ipAllowList` (close connections from outside the allowed
//! ranges) and `inFlightConn` (at most `amount` simultaneous connections per client
//! IP). Both decide on the client address alone, so they are plain data plus an
//! RAII guard that gives the in-flight slot back when the connection ends. The
//! `inFlightConn` counts live in [`InFlightConnStates`], so a reload that leaves the
//! middleware as it was keeps them: connections opened before it still count, and give
//! their slot back to the same counter when they close.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use ipnet::IpNet;

use crate::kept::Kept;

/// The counts of every `inFlightConn`, by (middleware name, router and entrypoint using it),
/// with the amount they were created for.
pub type InFlightConnStates = Kept<(String, String), u64, InFlightConn>;

/// One configured TCP middleware, built once per snapshot.
#[derive(Debug)]
pub enum TcpMiddleware {
    IpAllowList(IpAllowList),
    InFlightConn(Arc<InFlightConn>),
}

/// Why a middleware refused a connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("client {0} is not in the allowed source ranges")]
    NotAllowed(IpAddr),
    #[error("client {0} already has {1} connections in flight")]
    TooManyInFlight(IpAddr, u64),
}

/// Holds whatever a middleware must release when the connection ends.
#[derive(Debug, Default)]
pub struct Admission {
    _slots: Vec<InFlightGuard>,
}

impl TcpMiddleware {
    /// The instance of middleware `name` that `owner` (one router on one entrypoint) uses:
    /// `inFlightConn` counts per router and entrypoint (as Traefik builds it), so each gets
    /// its own counters, those `states` kept for it while the amount is unchanged.
    pub fn for_router(
        self: &Arc<Self>,
        name: &str,
        owner: &str,
        states: &InFlightConnStates,
    ) -> Arc<TcpMiddleware> {
        match self.as_ref() {
            TcpMiddleware::InFlightConn(limit) => {
                let key = (name.to_owned(), owner.to_owned());
                let amount = limit.amount;
                let counts = states.get_or_make(key, amount, || InFlightConn::empty(amount));
                Arc::new(TcpMiddleware::InFlightConn(counts))
            }
            TcpMiddleware::IpAllowList(_) => self.clone(),
        }
    }

    /// Runs the chain in order; the returned [`Admission`] must live as long as the
    /// connection.
    pub fn admit_all(chain: &[Arc<TcpMiddleware>], ip: IpAddr) -> Result<Admission, Refused> {
        let mut admission = Admission::default();
        for m in chain {
            match m.as_ref() {
                TcpMiddleware::IpAllowList(list) => {
                    if !list.allows(ip) {
                        return Err(Refused::NotAllowed(ip));
                    }
                }
                TcpMiddleware::InFlightConn(limit) => admission._slots.push(limit.acquire(ip)?),
            }
        }
        Ok(admission)
    }
}

/// `ipAllowList{sourceRange}`: IPs or CIDRs, v4 and v6.
#[derive(Debug, Clone)]
pub struct IpAllowList {
    ranges: Vec<IpNet>,
}

impl IpAllowList {
    pub fn new(ranges: Vec<IpNet>) -> Self {
        IpAllowList { ranges }
    }

    /// Same comparison as `ClientIP`: IPv4-mapped addresses and ranges match their
    /// IPv4 form.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.ranges.iter().any(|r| crate::rule::ip_in(r, ip))
    }
}

/// `inFlightConn{amount}`: simultaneous connections per client IP.
///
/// The table only holds IPs with at least one open connection, so its size is
/// bounded by the number of open connections.
#[derive(Debug)]
pub struct InFlightConn {
    amount: u64,
    open: Mutex<HashMap<IpAddr, u64>>,
}

impl InFlightConn {
    pub fn new(amount: u64) -> Arc<Self> {
        Arc::new(Self::empty(amount))
    }

    fn empty(amount: u64) -> Self {
        InFlightConn {
            amount,
            open: Mutex::new(HashMap::new()),
        }
    }

    fn acquire(self: &Arc<Self>, ip: IpAddr) -> Result<InFlightGuard, Refused> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= self.amount {
            return Err(Refused::TooManyInFlight(ip, *n));
        }
        *n += 1;
        Ok(InFlightGuard {
            limit: self.clone(),
            ip,
        })
    }

    /// Connections currently counted for `ip`.
    pub fn in_flight(&self, ip: IpAddr) -> u64 {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(&ip).copied().unwrap_or(0)
    }
}

/// Gives an in-flight slot back on drop.
#[derive(Debug)]
pub struct InFlightGuard {
    limit: Arc<InFlightConn>,
    ip: IpAddr,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let mut open = self.limit.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn allow_list_matches_ips_and_cidrs_v4_and_v6() {
        let list = IpAllowList::new(vec![
            "10.0.0.0/8".parse().unwrap(),
            "::1/128".parse().unwrap(),
        ]);
        assert!(list.allows(ip("10.1.2.3")));
        assert!(list.allows(ip("::1")));
        assert!(
            list.allows(ip("::ffff:10.0.0.1")),
            "v4-mapped is compared as v4"
        );
        assert!(!list.allows(ip("192.168.0.1")));
    }

    #[test]
    fn in_flight_limit_is_per_ip_and_released_on_drop() {
        let chain = vec![Arc::new(TcpMiddleware::InFlightConn(InFlightConn::new(2)))];
        let a1 = TcpMiddleware::admit_all(&chain, ip("1.1.1.1")).unwrap();
        let a2 = TcpMiddleware::admit_all(&chain, ip("1.1.1.1")).unwrap();
        assert_eq!(
            TcpMiddleware::admit_all(&chain, ip("1.1.1.1")).unwrap_err(),
            Refused::TooManyInFlight(ip("1.1.1.1"), 2)
        );
        let _other = TcpMiddleware::admit_all(&chain, ip("2.2.2.2")).unwrap();
        drop(a1);
        let _a3 = TcpMiddleware::admit_all(&chain, ip("1.1.1.1")).unwrap();
        drop(a2);
        let TcpMiddleware::InFlightConn(limit) = chain[0].as_ref() else {
            unreachable!()
        };
        assert_eq!(limit.in_flight(ip("1.1.1.1")), 1);
    }

    #[test]
    fn each_router_gets_its_own_in_flight_counters() {
        let states = InFlightConnStates::new();
        let shared = Arc::new(TcpMiddleware::InFlightConn(InFlightConn::new(1)));
        let a = vec![shared.for_router("limit", "a on tcp", &states)];
        let b = vec![shared.for_router("limit", "b on tcp", &states)];
        let _held = TcpMiddleware::admit_all(&a, ip("1.1.1.1")).unwrap();
        assert!(TcpMiddleware::admit_all(&a, ip("1.1.1.1")).is_err());
        assert!(TcpMiddleware::admit_all(&b, ip("1.1.1.1")).is_ok());
    }

    #[test]
    fn a_rebuilt_router_keeps_the_counters_of_an_unchanged_limit() {
        let states = InFlightConnStates::new();
        let limit = |amount| Arc::new(TcpMiddleware::InFlightConn(InFlightConn::new(amount)));
        let old = vec![limit(1).for_router("limit", "a on tcp", &states)];
        let held = TcpMiddleware::admit_all(&old, ip("1.1.1.1")).unwrap();
        states.retain_used();
        let rebuilt = vec![limit(1).for_router("limit", "a on tcp", &states)];
        assert!(TcpMiddleware::admit_all(&rebuilt, ip("1.1.1.1")).is_err());
        // The old connection's slot goes back to the shared counter.
        drop(held);
        let _again = TcpMiddleware::admit_all(&rebuilt, ip("1.1.1.1")).unwrap();
        // A new amount starts afresh.
        let changed = vec![limit(2).for_router("limit", "a on tcp", &states)];
        let _one = TcpMiddleware::admit_all(&changed, ip("1.1.1.1")).unwrap();
        assert!(TcpMiddleware::admit_all(&changed, ip("1.1.1.1")).is_ok());
    }

    #[test]
    fn allow_list_matches_v4_mapped_ranges_like_client_ip() {
        let list = IpAllowList::new(vec!["::ffff:10.0.0.0/104".parse().unwrap()]);
        assert!(list.allows(ip("10.1.2.3")));
    }

    #[test]
    fn chain_stops_at_first_refusal() {
        let limit = InFlightConn::new(1);
        let chain = vec![
            Arc::new(TcpMiddleware::IpAllowList(IpAllowList::new(vec![
                "10.0.0.0/8".parse().unwrap(),
            ]))),
            Arc::new(TcpMiddleware::InFlightConn(limit.clone())),
        ];
        assert!(matches!(
            TcpMiddleware::admit_all(&chain, ip("8.8.8.8")),
            Err(Refused::NotAllowed(_))
        ));
        assert_eq!(limit.in_flight(ip("8.8.8.8")), 0);
    }
}
