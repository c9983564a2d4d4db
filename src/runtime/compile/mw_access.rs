//! Access-control middlewares of a snapshot: `ipAllowList` / `ipWhiteList`, translated from
//! their validated configuration into `l7::middleware` specs.

use std::sync::Arc;

use ::http::StatusCode;
use ipnet::IpNet;
use l7::middleware::Middleware;
use l7::middleware::ip_allow_list::IpAllowList;
use l7::middleware::ip_strategy::IpStrategy;

use crate::config::dynamic::{self, HttpMiddleware};
use crate::config::static_cfg::IpOrNet;

/// The access middleware `m` is, built; `None` when it is of another type.
pub(super) fn build(m: &HttpMiddleware) -> Option<Result<Arc<dyn Middleware>, String>> {
    if let Some(list) = &m.ip_allow_list {
        return Some(ip_allow_list(
            &list.source_range,
            list.ip_strategy.as_ref(),
            list.reject_status_code,
        ));
    }
    if let Some(list) = &m.ip_white_list {
        return Some(ip_allow_list(
            &list.source_range,
            list.ip_strategy.as_ref(),
            0,
        ));
    }
    None
}

fn ip_allow_list(
    ranges: &[crate::config::Located<String>],
    strategy: Option<&dynamic::IpStrategy>,
    reject_status_code: i64,
) -> Result<Arc<dyn Middleware>, String> {
    let source_range = ranges
        .iter()
        .map(|r| ip_or_net(&r.value))
        .collect::<Result<Vec<_>, _>>()?;
    let reject_status = match reject_status_code {
        0 => StatusCode::FORBIDDEN,
        code => u16::try_from(code)
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .ok_or_else(|| format!("rejectStatusCode {code} is not an HTTP status code"))?,
    };
    Ok(Arc::new(IpAllowList {
        source_range,
        ip_strategy: ip_strategy(strategy)?,
        reject_status,
    }))
}

/// `ipStrategy`; absent is the peer's address, as an empty one.
pub(super) fn ip_strategy(strategy: Option<&dynamic::IpStrategy>) -> Result<IpStrategy, String> {
    let Some(s) = strategy else {
        return Ok(IpStrategy::default());
    };
    let depth = usize::try_from(s.depth)
        .map_err(|_| format!("ipStrategy.depth {} must not be negative", s.depth))?;
    let excluded = s
        .excluded_ips
        .iter()
        .map(|e| ip_or_net(e))
        .collect::<Result<Vec<_>, _>>()?;
    let ipv6_subnet =
        match s.ipv6_subnet {
            None => None,
            Some(n) => Some(u8::try_from(n).ok().filter(|n| *n <= 128).ok_or_else(|| {
                format!("ipStrategy.ipv6Subnet {n} is not a prefix length (0-128)")
            })?),
        };
    Ok(IpStrategy {
        depth,
        excluded,
        ipv6_subnet,
    })
}

fn ip_or_net(text: &str) -> Result<IpNet, String> {
    IpOrNet::parse(text).map(|n| n.0)
}
