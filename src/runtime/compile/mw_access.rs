//! Access-control middlewares of a snapshot: `ipAllowList` / `ipWhiteList`, `inFlightReq`,
//! `rateLimit`, `basicAuth` and `digestAuth`, translated from their validated configuration into `l7::middleware` specs.

use std::collections::HashMap;
use std::sync::Arc;

use ::http::StatusCode;
use ::http::header::HeaderName;
use ipnet::IpNet;
use l7::middleware::Middleware;
use l7::middleware::basic_auth::BasicAuth;
use l7::middleware::digest_auth::DigestAuth;
use l7::middleware::htpasswd;
use l7::middleware::in_flight_req::{InFlightReq, InFlightReqStates, KeptInFlightReq};
use l7::middleware::ip_allow_list::IpAllowList;
use l7::middleware::ip_strategy::IpStrategy;
use l7::middleware::rate_limit::{KeptRateLimit, RateLimit, RateLimitStates, SharedRateLimit};
use l7::middleware::source_criterion::SourceCriterion;

use crate::config::dynamic::{self, HttpMiddleware};
use crate::config::static_cfg::IpOrNet;
use crate::runtime::redis_buckets::{RedisLimitStores, unused_options};

/// The access middleware `m` is, built; `None` when it is of another type. (`rateLimit`
/// and `inFlightReq` keep state across reloads: the compiler builds them with
/// [`kept_rate_limit`] or [`shared_rate_limit`], and [`kept_in_flight_req`].)
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
    if let Some(auth) = &m.basic_auth {
        return Some(basic_auth(auth));
    }
    if let Some(auth) = &m.digest_auth {
        return Some(digest_auth(auth));
    }
    None
}

/// The non-blank, non-comment lines of `users_file` (when set) then `users`: later lines
/// win for the same user, as Traefik.
fn user_lines(kind: &str, users_file: &str, users: &[String]) -> Result<Vec<String>, String> {
    let mut lines = Vec::new();
    if !users_file.is_empty() {
        let text = std::fs::read_to_string(users_file)
            .map_err(|e| format!("{kind}.usersFile {users_file}: {e}"))?;
        lines.extend(text.lines().map(str::to_owned));
    }
    lines.extend(users.iter().cloned());
    Ok(lines
        .into_iter()
        .map(|line| line.trim().to_owned())
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect())
}

fn header_field(kind: &str, name: &str) -> Result<Option<HeaderName>, String> {
    if name.is_empty() {
        return Ok(None);
    }
    HeaderName::from_bytes(name.as_bytes())
        .map(Some)
        .map_err(|_| format!("{kind}.headerField \"{name}\" is not a header name"))
}

fn digest_auth(auth: &dynamic::DigestAuth) -> Result<Arc<dyn Middleware>, String> {
    let mut users = HashMap::new();
    for line in user_lines("digestAuth", &auth.users_file.value, &auth.users)? {
        let mut parts = line.split(':');
        let (Some(user), Some(realm), Some(ha1), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            let user = line.split(':').next().unwrap_or("");
            return Err(format!(
                "digestAuth: user \"{user}\" is not a user:realm:hash line"
            ));
        };
        if ha1.len() != 32 || !ha1.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "digestAuth: user \"{user}\": the hash is not an MD5 digest in hex"
            ));
        }
        users.insert(format!("{user}:{realm}"), ha1.to_ascii_lowercase());
    }
    let realm = if auth.realm.is_empty() {
        "traefik"
    } else {
        &auth.realm
    };
    if !DigestAuth::valid_realm(realm) {
        return Err(format!(
            "digestAuth.realm {realm:?} cannot be quoted in a header"
        ));
    }
    Ok(Arc::new(DigestAuth {
        users: Arc::new(users),
        realm: realm.to_owned(),
        remove_header: auth.remove_header,
        header_field: header_field("digestAuth", &auth.header_field)?,
    }))
}

fn basic_auth(auth: &dynamic::BasicAuth) -> Result<Arc<dyn Middleware>, String> {
    let mut users = HashMap::new();
    for line in user_lines("basicAuth", &auth.users_file.value, &auth.users)? {
        let (user, hash) = htpasswd::parse_line(&line).map_err(|e| format!("basicAuth: {e}"))?;
        users.insert(user, hash);
    }
    let realm = if auth.realm.is_empty() {
        "traefik"
    } else {
        &auth.realm
    };
    let challenge = BasicAuth::challenge_for(realm)
        .ok_or_else(|| format!("basicAuth.realm {realm:?} cannot be quoted in a header"))?;
    Ok(Arc::new(BasicAuth {
        users: Arc::new(users),
        challenge,
        remove_header: auth.remove_header,
        header_field: header_field("basicAuth", &auth.header_field)?,
    }))
}

/// `rateLimit` with `redis`: the same limit, its buckets in the Redis store of `stores`
/// that its settings name, shared by every router using that Redis.
pub(super) fn shared_rate_limit(
    name: &str,
    limit: &dynamic::RateLimit,
    stores: &RedisLimitStores,
) -> Result<Arc<dyn Middleware>, String> {
    let spec = rate_limit_spec(limit)?;
    let Some(redis) = &limit.redis else {
        return Ok(Arc::new(spec));
    };
    let unused = unused_options(redis);
    if !unused.is_empty() {
        tracing::warn!(
            middleware = name,
            "rateLimit.redis: {} ignored (one multiplexed connection is used)",
            unused.join(", ")
        );
    }
    let store = stores.store(redis).map_err(|e| e.to_string())?;
    Ok(Arc::new(SharedRateLimit {
        name: name.to_owned(),
        limit: spec,
        store,
    }))
}

/// An in-memory `rateLimit` named `name`, whose buckets `states` keeps across reloads.
pub(super) fn kept_rate_limit(
    name: &str,
    limit: &dynamic::RateLimit,
    states: &Arc<RateLimitStates>,
) -> Result<Arc<dyn Middleware>, String> {
    Ok(Arc::new(KeptRateLimit {
        name: name.to_owned(),
        limit: rate_limit_spec(limit)?,
        states: states.clone(),
    }))
}

fn rate_limit_spec(limit: &dynamic::RateLimit) -> Result<RateLimit, String> {
    if limit.average < 0 {
        return Err(format!(
            "rateLimit.average {} must not be negative",
            limit.average
        ));
    }
    if limit.period.is_negative() {
        return Err("rateLimit.period must not be negative".to_owned());
    }
    // As Traefik: no period is one second.
    let period_nanos = match limit.period.as_nanos() {
        0 => 1_000_000_000,
        nanos => nanos,
    };
    let burst = u32::try_from(limit.burst.max(1)).unwrap_or(u32::MAX);
    Ok(RateLimit {
        // `average` is exact in f64 up to 2^53, far above any sensible limit.
        rate: limit.average as f64 * 1e9 / period_nanos as f64,
        burst,
        source: source_criterion(
            limit.source_criterion.as_ref(),
            SourceCriterion::Ip(IpStrategy::default()),
        )?,
    })
}

/// An `inFlightReq` named `name`, whose counts `states` keeps across reloads.
pub(super) fn kept_in_flight_req(
    name: &str,
    limit: &dynamic::InFlightReq,
    states: &Arc<InFlightReqStates>,
) -> Result<Arc<dyn Middleware>, String> {
    let amount = usize::try_from(limit.amount)
        .ok()
        .filter(|a| *a > 0)
        .ok_or_else(|| format!("inFlightReq.amount {} must be positive", limit.amount))?;
    Ok(Arc::new(KeptInFlightReq {
        name: name.to_owned(),
        limit: InFlightReq {
            amount,
            source: source_criterion(
                limit.source_criterion.as_ref(),
                SourceCriterion::RequestHost,
            )?,
        },
        states: states.clone(),
    }))
}

/// `sourceCriterion`, or `default` when it names nothing. As Traefik, an `ipStrategy`
/// wins over `requestHeaderName`, which wins over `requestHost`.
fn source_criterion(
    criterion: Option<&dynamic::SourceCriterion>,
    default: SourceCriterion,
) -> Result<SourceCriterion, String> {
    let Some(c) = criterion else {
        return Ok(default);
    };
    if c.ip_strategy.is_some() {
        return Ok(SourceCriterion::Ip(ip_strategy(c.ip_strategy.as_ref())?));
    }
    if !c.request_header_name.is_empty() {
        let name = HeaderName::from_bytes(c.request_header_name.as_bytes()).map_err(|_| {
            format!(
                "sourceCriterion.requestHeaderName \"{}\" is not a header name",
                c.request_header_name
            )
        })?;
        return Ok(SourceCriterion::RequestHeader(name));
    }
    if c.request_host {
        return Ok(SourceCriterion::RequestHost);
    }
    Ok(default)
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
fn ip_strategy(strategy: Option<&dynamic::IpStrategy>) -> Result<IpStrategy, String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Located;

    fn error(m: HttpMiddleware) -> String {
        match build(&m) {
            Some(Err(e)) => e,
            Some(Ok(_)) => panic!("built"),
            None => panic!("not an access middleware"),
        }
    }

    #[test]
    fn other_types_are_left_to_others() {
        assert!(build(&HttpMiddleware::default()).is_none());
    }

    #[test]
    fn bad_options_are_errors_that_name_them() {
        let allow = |strategy: dynamic::IpStrategy, status| HttpMiddleware {
            ip_allow_list: Some(dynamic::IpAllowList {
                source_range: vec![Located::new("10.0.0.0/8".to_owned())],
                ip_strategy: Some(strategy),
                reject_status_code: status,
            }),
            ..HttpMiddleware::default()
        };
        let negative = dynamic::IpStrategy {
            depth: -1,
            ..Default::default()
        };
        assert!(error(allow(negative, 0)).contains("ipStrategy.depth -1"));
        assert!(error(allow(Default::default(), 1000)).contains("rejectStatusCode 1000"));
        let subnet = dynamic::IpStrategy {
            ipv6_subnet: Some(129),
            ..Default::default()
        };
        assert!(error(allow(subnet, 0)).contains("ipv6Subnet 129"));

        let in_flight = kept_in_flight_req(
            "limit@file",
            &dynamic::InFlightReq::default(),
            &Default::default(),
        );
        assert!(in_flight.is_err_and(|e| e.contains("inFlightReq.amount 0")));

        let redis = HttpMiddleware {
            rate_limit: Some(dynamic::RateLimit {
                average: 10,
                redis: Some(Default::default()),
                ..Default::default()
            }),
            ..HttpMiddleware::default()
        };
        let shared = match shared_rate_limit(
            "limit@file",
            redis.rate_limit.as_ref().unwrap(),
            &RedisLimitStores::default(),
        ) {
            Err(e) => e,
            Ok(_) => panic!("built"),
        };
        assert_eq!(shared, "rateLimit.redis.endpoints is empty");

        let plain = HttpMiddleware {
            basic_auth: Some(dynamic::BasicAuth {
                users: vec!["u:plaintext".to_owned()],
                ..Default::default()
            }),
            ..HttpMiddleware::default()
        };
        assert!(error(plain).contains("user \"u\": unsupported password hash"));

        let missing = HttpMiddleware {
            basic_auth: Some(dynamic::BasicAuth {
                users_file: Located::new("/nonexistent/sallyport-users".to_owned()),
                ..Default::default()
            }),
            ..HttpMiddleware::default()
        };
        assert!(error(missing).contains("usersFile /nonexistent/sallyport-users"));

        let digest = HttpMiddleware {
            digest_auth: Some(dynamic::DigestAuth {
                users: vec!["u:realm:nothex".to_owned()],
                ..Default::default()
            }),
            ..HttpMiddleware::default()
        };
        assert!(error(digest).contains("not an MD5 digest"));
    }

    #[test]
    fn source_criterion_prefers_ip_strategy_then_header_then_host() {
        let both = dynamic::SourceCriterion {
            ip_strategy: Some(Default::default()),
            request_header_name: "X-Id".to_owned(),
            request_host: true,
        };
        assert_eq!(
            source_criterion(Some(&both), SourceCriterion::RequestHost),
            Ok(SourceCriterion::Ip(IpStrategy::default()))
        );
        let header = dynamic::SourceCriterion {
            request_header_name: "X-Id".to_owned(),
            request_host: true,
            ..Default::default()
        };
        assert_eq!(
            source_criterion(Some(&header), SourceCriterion::RequestHost),
            Ok(SourceCriterion::RequestHeader(HeaderName::from_static(
                "x-id"
            )))
        );
        assert_eq!(
            source_criterion(
                Some(&Default::default()),
                SourceCriterion::Ip(IpStrategy::default())
            ),
            Ok(SourceCriterion::Ip(IpStrategy::default()))
        );
    }
}
