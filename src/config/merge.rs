//! Several providers' configurations made into one: every provider's names are already
//! qualified (`name@provider`), so merging is a union. The TLS option and store named
//! `default` are the exception: defined by more than one provider, they are dropped (with
//! an error naming the providers) and the built-in defaults apply, as in Traefik.

use std::collections::BTreeMap;

use super::ConfigError;
use super::de::Located;
use super::dynamic::{DEFAULT_TLS_NAME, DynamicConfig};

/// The union of `configs` (provider name, configuration), in the given order.
pub fn merge<'a>(configs: impl IntoIterator<Item = (&'a str, &'a DynamicConfig)>) -> DynamicConfig {
    let mut out = DynamicConfig::default();
    let mut default_option: Vec<&str> = Vec::new();
    let mut default_store: Vec<&str> = Vec::new();
    for (provider, dy) in configs {
        let warnings = &mut out.warnings;
        warnings.extend(dy.warnings.iter().cloned());
        union(&mut out.http.routers, &dy.http.routers, warnings);
        union(&mut out.http.services, &dy.http.services, warnings);
        union(&mut out.http.middlewares, &dy.http.middlewares, warnings);
        union(
            &mut out.http.servers_transports,
            &dy.http.servers_transports,
            warnings,
        );
        union(&mut out.tcp.routers, &dy.tcp.routers, warnings);
        union(&mut out.tcp.services, &dy.tcp.services, warnings);
        union(&mut out.tcp.middlewares, &dy.tcp.middlewares, warnings);
        union(
            &mut out.tcp.servers_transports,
            &dy.tcp.servers_transports,
            warnings,
        );
        union(&mut out.udp.routers, &dy.udp.routers, warnings);
        union(&mut out.udp.services, &dy.udp.services, warnings);
        union(&mut out.tls.options, &dy.tls.options, warnings);
        union(&mut out.tls.stores, &dy.tls.stores, warnings);
        out.tls
            .certificates
            .extend(dy.tls.certificates.iter().cloned());
        if dy.tls.options.contains_key(DEFAULT_TLS_NAME) {
            default_option.push(provider);
        }
        if dy.tls.stores.contains_key(DEFAULT_TLS_NAME) {
            default_store.push(provider);
        }
    }
    if default_option.len() > 1 {
        out.tls.options.remove(DEFAULT_TLS_NAME);
        out.warnings.push(ConfigError::unlocated(format!(
            "TLS option \"default\" is defined by several providers ({}): none of them is used",
            default_option.join(", ")
        )));
    }
    if default_store.len() > 1 {
        out.tls.stores.remove(DEFAULT_TLS_NAME);
        out.warnings.push(ConfigError::unlocated(format!(
            "TLS store \"default\" is defined by several providers ({}): none of them is used",
            default_store.join(", ")
        )));
    }
    out
}

/// Adds `from` to `into`. Qualified names of different providers never collide; the
/// unqualified `default` TLS option and store can, and are dealt with by the caller.
fn union<T: Clone>(
    into: &mut BTreeMap<String, Located<T>>,
    from: &BTreeMap<String, Located<T>>,
    warnings: &mut Vec<ConfigError>,
) {
    for (name, object) in from {
        if into.contains_key(name) {
            if name != DEFAULT_TLS_NAME {
                warnings.push(ConfigError {
                    location: object.location.clone(),
                    message: format!("\"{name}\" is defined twice; the first definition is used"),
                });
            }
            continue;
        }
        into.insert(name.clone(), object.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::file_provider::parse_dynamic_as;
    use crate::config::source::Format;

    fn provider(name: &str, yaml: &str) -> DynamicConfig {
        parse_dynamic_as(yaml, Format::Yaml, "test.yml", name).expect("loads")
    }

    #[test]
    fn providers_are_unioned_and_cross_provider_references_kept() {
        let file = provider(
            "file",
            "http:\n  services:\n    s: {loadBalancer: {servers: [{url: 'http://127.0.0.1:1'}]}}\n",
        );
        let http = provider(
            "http",
            "http:\n  routers:\n    r: {rule: 'Host(`a`)', service: s@file}\n",
        );
        let merged = merge([("file", &file), ("http", &http)]);
        assert_eq!(merged.http.routers["r@http"].service.value, "s@file");
        assert!(merged.http.services.contains_key("s@file"));
        assert!(merged.warnings.is_empty());
    }

    #[test]
    fn a_default_tls_option_of_two_providers_is_dropped() {
        let a = provider("file", "tls:\n  options:\n    default: {sniStrict: true}\n");
        let b = provider(
            "redis",
            "tls:\n  options:\n    default: {sniStrict: true}\n",
        );
        let merged = merge([("file", &a), ("redis", &b)]);
        assert!(!merged.tls.options.contains_key("default"));
        assert!(merged.warnings[0].message.contains("file, redis"));
        let alone = merge([("file", &a)]);
        assert!(alone.tls.options.contains_key("default"));
    }
}
