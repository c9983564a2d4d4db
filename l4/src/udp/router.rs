//! Which UDP router takes a new session. Traefik has no rule on UDP routers and uses one
//! router per entrypoint; Sallyport keeps that as the *fallback* (a router without a rule)
//! and adds routers with a rule, tried first in priority order, so that several UDP routers
//! can share an entrypoint: `ClientIP` for any datagram, and for QUIC passthrough routers
//! `HostSNI`, `HostSNIRegexp` and `ALPN` on the ClientHello of the flow's Initials.

use std::net::IpAddr;
use std::sync::Arc;

use super::service::UdpService;
use crate::quic::InitialHello;
use crate::rule::match_order;
use crate::tcp::rule::{ConnInfo, TcpRule};

/// One UDP router, compiled.
pub struct UdpRoute {
    pub name: Arc<str>,
    /// `None`: the fallback router.
    pub rule: Option<TcpRule>,
    pub priority: i64,
    /// Tie-break among equal priorities, lower first ([`match_order`]).
    pub precedence: u32,
    pub service: Arc<UdpService>,
    /// The service's name as configured (for logs and metrics).
    pub service_name: Arc<str>,
    /// A QUIC passthrough router: it only takes QUIC flows, by their ClientHello.
    pub quic: bool,
    /// Shared by every snapshot in which this router is unchanged; a reload that removes or
    /// changes it retires it, which ends its sessions after a drain time.
    pub retirement: crate::retire::Retirement,
}

/// The UDP routers of one entrypoint, in the order they are tried.
#[derive(Default)]
pub struct UdpRoutes {
    routes: Vec<UdpRoute>,
}

impl UdpRoutes {
    /// Routers with a rule, tried by priority (then name), then the `fallback`.
    pub fn new(mut with_rules: Vec<UdpRoute>, fallback: Option<UdpRoute>) -> Self {
        with_rules.sort_by(|a, b| {
            match_order(
                (a.priority, a.precedence, &a.name),
                (b.priority, b.precedence, &b.name),
            )
        });
        with_rules.extend(fallback);
        Self { routes: with_rules }
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Whether some router passes QUIC through: only then are new flows' first datagrams
    /// looked at as QUIC.
    pub fn has_quic(&self) -> bool {
        self.routes.iter().any(|route| route.quic)
    }

    /// The router for a new session from `client`; `hello` is the ClientHello of a QUIC
    /// flow (QUIC passthrough routers take nothing else).
    pub fn select(&self, client: IpAddr, hello: Option<&InitialHello>) -> Option<&UdpRoute> {
        let info = ConnInfo {
            sni: hello.and_then(|h| h.sni.as_deref()),
            alpn: hello.map_or(&[], |h| h.alpn.as_slice()),
            client_ip: client,
        };
        self.routes.iter().find(|route| {
            (!route.quic || hello.is_some())
                && route.rule.as_ref().is_none_or(|rule| rule.matches(&info))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::udp::service::{LoadBalancer, Strategy};

    fn route(name: &str, rule: Option<&str>, priority: i64) -> UdpRoute {
        UdpRoute {
            name: Arc::from(name),
            rule: rule.map(|r| TcpRule::compile(r, false).unwrap()),
            priority,
            precedence: 0,
            service: Arc::new(UdpService::LoadBalancer(LoadBalancer::new(
                vec![Arc::from(name)],
                Strategy::Wrr,
            ))),
            service_name: Arc::from(name),
            quic: false,
            retirement: Default::default(),
        }
    }

    fn chosen(routes: &UdpRoutes, ip: &str) -> Option<String> {
        routes
            .select(ip.parse().unwrap(), None)
            .map(|r| r.name.to_string())
    }

    #[test]
    fn rules_are_tried_by_priority_and_the_fallback_last() {
        let routes = UdpRoutes::new(
            vec![
                route("lan", Some("ClientIP(`10.0.0.0/8`)"), 10),
                route("one", Some("ClientIP(`10.1.2.3`)"), 20),
            ],
            Some(route("rest", None, 0)),
        );
        assert_eq!(chosen(&routes, "10.1.2.3").as_deref(), Some("one"));
        assert_eq!(chosen(&routes, "10.9.9.9").as_deref(), Some("lan"));
        assert_eq!(chosen(&routes, "192.0.2.1").as_deref(), Some("rest"));
    }

    #[test]
    fn without_a_fallback_an_unmatched_client_has_no_router() {
        let routes = UdpRoutes::new(vec![route("lan", Some("ClientIP(`10.0.0.0/8`)"), 0)], None);
        assert_eq!(chosen(&routes, "192.0.2.1"), None);
        assert!(UdpRoutes::default().is_empty());
    }
}
