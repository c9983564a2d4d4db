//! Which address a request comes from, as Traefik's `ipStrategy` decides it for `ipAllowList`,
//! `rateLimit` and `inFlightReq`: the connection's peer, or an entry of `X-Forwarded-For`.
//!
//! By the time a middleware runs, the entrypoint has already appended the connection's peer
//! to `X-Forwarded-For` ([`crate::forwarded`]); Traefik's strategies read the header as it was
//! before that (its reverse proxy appends later), so the last entry is left out here. An
//! untrusted peer's header was dropped by the entrypoint, so only trusted chains are read.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use http::HeaderMap;
use ipnet::{IpNet, Ipv6Net};

use crate::forwarded::X_FORWARDED_FOR;

/// A configured `ipStrategy`. The default (depth 0, nothing excluded) is the peer's address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpStrategy {
    /// Use the N-th `X-Forwarded-For` entry from the right; 0 = not used.
    pub depth: usize,
    /// Use the first `X-Forwarded-For` entry from the right outside these (when depth is 0).
    pub excluded: Vec<IpNet>,
    /// IPv6 addresses are reduced to their network of this prefix length.
    pub ipv6_subnet: Option<u8>,
}

impl IpStrategy {
    /// The source address of a request from `peer` with `headers`; `None` when the strategy
    /// finds no usable entry (too short a chain, everything excluded, not an address).
    pub fn client_ip(&self, headers: &HeaderMap, peer: IpAddr) -> Option<IpAddr> {
        let ip = if self.depth > 0 {
            let chain = client_chain(headers);
            let index = chain.len().checked_sub(self.depth)?;
            parse_entry(chain[index])?
        } else if !self.excluded.is_empty() {
            client_chain(headers)
                .into_iter()
                .rev()
                .filter(|entry| !entry.is_empty())
                .find_map(|entry| {
                    let ip = parse_entry(entry);
                    // Traefik returns an entry it cannot parse as it is; it never matches a
                    // range, so it ends the search too.
                    match ip {
                        Some(ip) if self.is_excluded(ip) => None,
                        other => Some(other),
                    }
                })??
        } else {
            peer.to_canonical()
        };
        Some(self.mask(ip))
    }

    fn is_excluded(&self, ip: IpAddr) -> bool {
        self.excluded.iter().any(|net| net.contains(&ip))
    }

    fn mask(&self, ip: IpAddr) -> IpAddr {
        match (ip, self.ipv6_subnet) {
            (IpAddr::V6(v6), Some(prefix)) => Ipv6Net::new(v6, prefix.min(128))
                .map(|net| IpAddr::V6(net.network()))
                .unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
            _ => ip,
        }
    }
}

/// The `X-Forwarded-For` entries the client side sent (trimmed), without the entrypoint's own.
fn client_chain(headers: &HeaderMap) -> Vec<&str> {
    let mut chain: Vec<&str> = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect();
    chain.pop();
    chain
}

/// An address as proxies write it: `ip`, `ip:port` or `[v6]:port`.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 9));

    /// Headers as a middleware sees them: what the client sent, then the peer appended.
    fn forwarded(sent: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let value = if sent.is_empty() {
            PEER.to_string()
        } else {
            format!("{sent}, {PEER}")
        };
        headers.insert(X_FORWARDED_FOR, value.parse().unwrap());
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn default_strategy_is_the_peer() {
        let strategy = IpStrategy::default();
        assert_eq!(strategy.client_ip(&forwarded("10.0.0.1"), PEER), Some(PEER));
        // A dual-stack listener reports IPv4 clients as mapped addresses.
        assert_eq!(
            strategy.client_ip(&HeaderMap::new(), ip("::ffff:10.1.2.3")),
            Some(ip("10.1.2.3"))
        );
    }

    #[test]
    fn depth_counts_from_the_right_of_what_the_client_sent() {
        let headers = forwarded("10.0.0.1,11.0.0.1, 12.0.0.1,13.0.0.1");
        let at = |depth| {
            IpStrategy {
                depth,
                ..IpStrategy::default()
            }
            .client_ip(&headers, PEER)
        };
        assert_eq!(at(1), Some(ip("13.0.0.1")));
        assert_eq!(at(3), Some(ip("11.0.0.1")));
        assert_eq!(at(4), Some(ip("10.0.0.1")));
        assert_eq!(at(5), None);
    }

    #[test]
    fn excluded_ips_pick_the_first_outsider_from_the_right() {
        let strategy = IpStrategy {
            excluded: vec![
                "12.0.0.0/8".parse().unwrap(),
                "13.0.0.1/32".parse().unwrap(),
            ],
            ..IpStrategy::default()
        };
        let headers = forwarded("10.0.0.1,11.0.0.1,12.0.0.1,13.0.0.1");
        assert_eq!(strategy.client_ip(&headers, PEER), Some(ip("11.0.0.1")));
        assert_eq!(strategy.client_ip(&forwarded("12.0.0.1"), PEER), None);
        assert_eq!(strategy.client_ip(&forwarded("junk,12.0.0.1"), PEER), None);
    }

    #[test]
    fn entries_may_carry_ports() {
        let strategy = IpStrategy {
            depth: 1,
            ..IpStrategy::default()
        };
        assert_eq!(
            strategy.client_ip(&forwarded("[2001:db8::1]:443"), PEER),
            Some(ip("2001:db8::1"))
        );
        assert_eq!(
            strategy.client_ip(&forwarded("10.0.0.1:80"), PEER),
            Some(ip("10.0.0.1"))
        );
    }

    #[test]
    fn ipv6_subnet_reduces_v6_addresses_only() {
        let strategy = IpStrategy {
            depth: 1,
            ipv6_subnet: Some(64),
            ..IpStrategy::default()
        };
        assert_eq!(
            strategy.client_ip(&forwarded("2001:db8:1:2:3:4:5:6"), PEER),
            Some(ip("2001:db8:1:2::"))
        );
        assert_eq!(
            strategy.client_ip(&forwarded("10.0.0.1"), PEER),
            Some(ip("10.0.0.1"))
        );
    }
}
