//! Traefik's key-value layout, shared by the Redis and etcd providers: a configuration
//! written as one key per value under a root key (`traefik` by default),
//!
//! ```text
//! traefik/http/routers/api/rule                               Host(`api.example.com`)
//! traefik/http/routers/api/entryPoints/0                      websecure
//! traefik/http/services/api/loadBalancer/servers/0/url        http://10.0.0.1:8080
//! ```
//!
//! read into the same tree a file gives, then into the configuration structs. A path
//! segment made of digits is a list index. Every value and map remembers its key, so an
//! error names it; a malformed key or a bad value costs its own router (or service…), never
//! the others.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::ConfigError;
use crate::config::dynamic::DynamicConfig;
use crate::config::file_provider::read_tree_lenient;
use crate::config::source::{Key, Location, MAX_DEPTH, Node, NodeKind, ScalarKind};

/// The largest value read; a bigger one is an error naming its key (no configuration
/// value comes near it; a certificate in PEM is a few KiB).
pub const MAX_VALUE_BYTES: usize = 1 << 20;

/// The most bytes of keys and values read from a store in one pass; past it the pass fails
/// and the last good configuration stays.
pub const MAX_TOTAL_BYTES: usize = 64 << 20;

/// The subtree of the root key where resolvers with `acme.sharedStorage` keep their
/// account, certificates and locks (see `crate::acme`); not configuration.
pub const ACME_SEGMENT: &str = "acme/";

/// Reads the `pairs` (full key → value) under `root` into a configuration whose names are
/// qualified `@provider`. `store` names the store in locations (`redis`, `etcd`). Keys
/// outside `root`, and those under `<root>/acme/`, are ignored.
pub fn read(
    pairs: &BTreeMap<String, Vec<u8>>,
    root: &str,
    provider: &str,
    store: &str,
) -> (DynamicConfig, Vec<ConfigError>) {
    let mut errors = Vec::new();
    let mut tree = Tree::Branch(BTreeMap::new());
    let prefix = format!("{}/", root.trim_end_matches('/'));
    for (key, value) in pairs {
        let Some(path) = key.strip_prefix(&prefix) else {
            continue;
        };
        if path.starts_with(ACME_SEGMENT) {
            continue;
        }
        let at = || Location::whole(format!("{store} key {key}"));
        if value.len() > MAX_VALUE_BYTES {
            errors.push(ConfigError::at(
                at(),
                format!("value larger than {MAX_VALUE_BYTES} bytes"),
            ));
            continue;
        }
        let Ok(text) = std::str::from_utf8(value) else {
            errors.push(ConfigError::at(at(), "value is not UTF-8 text"));
            continue;
        };
        let segments: Vec<&str> = path.split('/').collect();
        if segments.iter().any(|s| s.is_empty()) {
            errors.push(ConfigError::at(at(), "empty path segment in the key"));
            continue;
        }
        if segments.len() > MAX_DEPTH {
            errors.push(ConfigError::at(
                at(),
                format!("the key nests more than {MAX_DEPTH} levels deep"),
            ));
            continue;
        }
        if let Err(message) = tree.insert(&segments, text) {
            errors.push(ConfigError::at(at(), message));
        }
    }
    let root_location = Location::whole(format!("{store} key {}", root.trim_end_matches('/')));
    let node = tree.into_node(&prefix, store, root_location);
    let (config, mut read_errors) = read_tree_lenient(&node, provider);
    errors.append(&mut read_errors);
    (config, errors)
}

/// The keys as a tree of path segments.
enum Tree {
    Leaf(String),
    Branch(BTreeMap<String, Tree>),
}

impl Tree {
    fn insert(&mut self, segments: &[&str], value: &str) -> Result<(), &'static str> {
        let Tree::Branch(children) = self else {
            return Err("a key above this one holds a value, so this one cannot hold another");
        };
        match segments {
            [] => Err("empty key"),
            [last] => match children.get(*last) {
                Some(Tree::Branch(_)) => {
                    Err("keys below this one hold values, so this one cannot hold another")
                }
                _ => {
                    children.insert((*last).to_owned(), Tree::Leaf(value.to_owned()));
                    Ok(())
                }
            },
            [first, rest @ ..] => children
                .entry((*first).to_owned())
                .or_insert_with(|| Tree::Branch(BTreeMap::new()))
                .insert(rest, value),
        }
    }

    /// The tree as a configuration node; `path` is this node's key with a trailing `/`.
    fn into_node(self, path: &str, store: &str, location: Location) -> Node {
        let file: Arc<str> = location.file.clone();
        let kind = match self {
            Tree::Leaf(value) => NodeKind::Scalar(value, ScalarKind::Plain),
            Tree::Branch(children) => {
                let child_location =
                    |name: &str| Location::whole(format!("{store} key {path}{name}"));
                let is_list = !children.is_empty()
                    && children
                        .keys()
                        .all(|k| k.bytes().all(|b| b.is_ascii_digit()));
                if is_list {
                    let mut items: Vec<(u64, Node)> = children
                        .into_iter()
                        .map(|(name, child)| {
                            let index = name.parse().unwrap_or(u64::MAX);
                            let location = child_location(&name);
                            (
                                index,
                                child.into_node(&format!("{path}{name}/"), store, location),
                            )
                        })
                        .collect();
                    items.sort_by_key(|(index, _)| *index);
                    NodeKind::Seq(items.into_iter().map(|(_, node)| node).collect())
                } else {
                    NodeKind::Map(
                        children
                            .into_iter()
                            .map(|(name, child)| {
                                let location = child_location(&name);
                                let node = child.into_node(
                                    &format!("{path}{name}/"),
                                    store,
                                    location.clone(),
                                );
                                (Key { name, location }, node)
                            })
                            .collect(),
                    )
                }
            }
        };
        Node::new(kind, Location::whole(file))
    }
}

/// The first wait before reconnecting to a store that failed; it doubles after each failure.
pub const MIN_BACKOFF: std::time::Duration = std::time::Duration::from_millis(250);
/// The longest wait between reconnections.
pub const MAX_BACKOFF: std::time::Duration = std::time::Duration::from_secs(30);

/// One connection to a key-value store, from its first full read to its failure.
pub(crate) trait Session {
    type Error: std::fmt::Display;
    /// The store's name in log lines.
    const STORE: &'static str;

    /// Reads, publishes and watches until `stop` (`Ok`) or a failure; sets `synced` once a
    /// full read was published, so that the next failure starts its backoff afresh.
    fn session(
        &self,
        publisher: &mut super::Publisher<BTreeMap<String, Vec<u8>>>,
        stop: &mut tokio::sync::watch::Receiver<bool>,
        synced: &mut bool,
    ) -> impl std::future::Future<Output = Result<(), Self::Error>> + Send;
}

/// Runs sessions until `stop`, waiting [`MIN_BACKOFF`] after a failure, twice as long after
/// each further one (up to [`MAX_BACKOFF`]); the last configuration published stays in
/// force meanwhile.
pub(crate) async fn reconnecting<S: Session>(
    store: S,
    mut publisher: super::Publisher<BTreeMap<String, Vec<u8>>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let mut synced = false;
        match store.session(&mut publisher, &mut stop, &mut synced).await {
            Ok(()) => return,
            Err(e) => {
                if synced {
                    backoff = MIN_BACKOFF;
                }
                tracing::warn!(error = %e, retry_in = ?backoff, "{store} provider: keeping the last configuration until {store} answers again", store = S::STORE);
            }
        }
        tokio::select! {
            () = super::stopped(&mut stop) => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn traefik_layout_reads_into_routers_and_services_with_lists_by_index() {
        let (config, errors) = read(
            &pairs(&[
                ("traefik/http/routers/api/rule", "Host(`api.test`)"),
                ("traefik/http/routers/api/service", "api"),
                ("traefik/http/routers/api/priority", "42"),
                ("traefik/http/routers/api/entryPoints/0", "web"),
                ("traefik/http/routers/api/entryPoints/1", "websecure"),
                (
                    "traefik/http/services/api/loadBalancer/servers/1/url",
                    "http://b",
                ),
                (
                    "traefik/http/services/api/loadBalancer/servers/0/url",
                    "http://a",
                ),
                ("traefik/tcp/routers/db/rule", "HostSNI(`*`)"),
                ("traefik/tcp/routers/db/service", "db@file"),
                ("other/http/routers/x/rule", "ignored"),
                ("traefik/acme/le/account", "{}"),
            ]),
            "traefik",
            "redis",
            "redis",
        );
        assert!(errors.is_empty(), "{errors:?}");
        let api = &config.http.routers["api@redis"];
        assert_eq!(api.rule.value, "Host(`api.test`)");
        assert_eq!(api.service.value, "api@redis");
        assert_eq!(api.priority, 42);
        assert_eq!(api.entry_points, ["web", "websecure"]);
        let lb = config.http.services["api@redis"]
            .load_balancer
            .as_ref()
            .expect("loadBalancer");
        let urls: Vec<&str> = lb.servers.iter().map(|s| s.url.as_str()).collect();
        assert_eq!(urls, ["http://a", "http://b"]);
        assert_eq!(config.tcp.routers["db@redis"].service.value, "db@file");
        assert_eq!(config.http.routers.len(), 1);
    }

    #[test]
    fn a_bad_value_or_key_is_an_error_naming_the_key_and_spares_the_other_routers() {
        let (config, errors) = read(
            &pairs(&[
                ("traefik/http/routers/bad/rule", "Host(`b`)"),
                ("traefik/http/routers/bad/priority", "high"),
                ("traefik/http/routers/good/rule", "Host(`g`)"),
                ("traefik/http/routers/good/service", "s"),
                ("traefik/http/routers/odd//rule", "Host(`o`)"),
                ("traefik/http/routers/conflict", "x"),
                ("traefik/http/routers/conflict/rule", "Host(`c`)"),
            ]),
            "traefik",
            "redis",
            "redis",
        );
        assert!(config.http.routers.contains_key("good@redis"));
        assert!(!config.http.routers.contains_key("bad@redis"));
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(
            text.iter()
                .any(|e| e.starts_with("redis key traefik/http/routers/bad/priority")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|e| e.starts_with("redis key traefik/http/routers/odd//rule")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|e| e.starts_with("redis key traefik/http/routers/conflict/rule")),
            "{text:?}"
        );
    }

    #[test]
    fn huge_and_binary_values_are_refused_by_key() {
        let mut all = pairs(&[("traefik/http/routers/r/rule", "Host(`r`)")]);
        all.insert(
            "traefik/http/routers/big/rule".to_owned(),
            vec![b'a'; MAX_VALUE_BYTES + 1],
        );
        all.insert("traefik/http/routers/bin/rule".to_owned(), vec![0xff, 0xfe]);
        let (config, errors) = read(&all, "traefik", "etcd", "etcd");
        assert!(config.http.routers.contains_key("r@etcd"));
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors.iter().any(|e| e.to_string().contains("big/rule")));
        assert!(errors.iter().any(|e| e.to_string().contains("bin/rule")));
    }
}
