//! `providers.precedence`: which provider's router is tried first when two routers have the
//! same priority. Providers the configuration lists come first, in its order; the others
//! follow in Traefik's default order; names of providers nobody knows (and `internal`) last.

/// Traefik's default order (`pkg/config/static`, `providers.precedence`).
pub const DEFAULT_ORDER: &[&str] = &[
    "gateway",
    "crd",
    "ingress",
    "ingressnginx",
    "swarm",
    "docker",
    "file",
    "redis",
    "knative",
    "consul",
    "consulcatalog",
    "nomad",
    "etcd",
    "ecs",
    "http",
    "zookeeper",
    "rest",
];

/// The rank of a qualified name (`name@provider`): lower is tried first among equal
/// priorities. `configured` is `providers.precedence` as written (case-insensitive).
pub fn rank(configured: &[String], qualified: &str) -> u32 {
    let provider = qualified.rsplit_once('@').map_or("", |(_, p)| p);
    let position = configured
        .iter()
        .position(|p| p.eq_ignore_ascii_case(provider))
        .or_else(|| {
            DEFAULT_ORDER
                .iter()
                .position(|p| p.eq_ignore_ascii_case(provider))
                .map(|i| configured.len() + i)
        })
        .unwrap_or(configured.len() + DEFAULT_ORDER.len());
    u32::try_from(position).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_providers_come_first_then_the_default_order() {
        let configured = vec!["http".to_owned(), "File".to_owned()];
        assert!(rank(&configured, "a@http") < rank(&configured, "a@file"));
        assert!(rank(&configured, "a@file") < rank(&configured, "a@redis"));
        assert!(rank(&configured, "a@redis") < rank(&configured, "a@etcd"));
        assert!(rank(&configured, "a@etcd") < rank(&configured, "a@internal"));
    }

    #[test]
    fn without_configuration_the_file_provider_precedes_redis_etcd_and_http() {
        let none: Vec<String> = Vec::new();
        let order: Vec<u32> = ["a@file", "a@redis", "a@etcd", "a@http"]
            .iter()
            .map(|n| rank(&none, n))
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
    }
}
