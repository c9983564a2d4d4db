//! The file provider's loading step: one dynamic configuration file, or a directory of them,
//! read into a [`DynamicConfig`] whose names are qualified `name@file`. The other providers
//! read their trees through the same steps ([`parse_dynamic_as`], [`read_tree_lenient`])
//! with their own provider name.
//!
//! Every named object is deserialized on its own so that one bad router does not hide
//! another's error; any error rejects the whole file (and a directory with a bad file), as
//! Traefik's file provider does. Go templates (`{{ }}`), which Traefik expands in these
//! files, are not supported: the text is read as it is.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::ConfigError;
use super::de::{Located, from_node};
use super::dynamic::{
    CertAndStores, DEFAULT_TLS_NAME, DynamicConfig, HttpMiddleware, HttpRouter, HttpService,
    ServersTransport, TcpMiddleware, TcpRouter, TcpServersTransport, TcpService, TlsOptions,
    TlsStore, UdpRouter, UdpService, WeightedService,
};
use super::source::{self, Format, Node, NodeKind};

/// The provider name appended to every name this provider defines.
pub const PROVIDER: &str = "file";

/// Loads one dynamic configuration file (`.toml`, `.yaml` or `.yml`).
pub fn load_dynamic_file(path: &Path) -> Result<DynamicConfig, Vec<ConfigError>> {
    let mut config = DynamicConfig::default();
    let content = read_file(path)?;
    content.merge_into(&mut config, PROVIDER);
    Ok(config)
}

/// Loads every `.toml`, `.yaml` and `.yml` file under `dir` (recursively, in lexical
/// order of paths). When two files define the same name, the first one wins and a warning
/// is recorded. Any file error fails the whole directory, with all errors reported.
pub fn load_dynamic_dir(dir: &Path) -> Result<DynamicConfig, Vec<ConfigError>> {
    let mut files = Vec::new();
    collect_files(dir, &mut files)?;
    files.sort();
    let mut config = DynamicConfig::default();
    let mut errors = Vec::new();
    for file in files {
        match read_file(&file) {
            Ok(content) => content.merge_into(&mut config, PROVIDER),
            Err(mut e) => errors.append(&mut e),
        }
    }
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(errors)
    }
}

/// Parses dynamic configuration text; `file` names it in locations.
pub fn parse_dynamic(
    text: &str,
    format: Format,
    file: &str,
) -> Result<DynamicConfig, Vec<ConfigError>> {
    parse_dynamic_as(text, format, file, PROVIDER)
}

/// Parses dynamic configuration text for `provider`, whose name qualifies every name in
/// it; any error rejects the whole text. `file` names the text in locations.
pub fn parse_dynamic_as(
    text: &str,
    format: Format,
    file: &str,
    provider: &str,
) -> Result<DynamicConfig, Vec<ConfigError>> {
    let file: Arc<str> = Arc::from(file);
    let node = source::parse(text, format, &file).map_err(|e| vec![e])?;
    let content = FileContent::from_node(&node)?;
    let mut config = DynamicConfig::default();
    content.merge_into(&mut config, provider);
    Ok(config)
}

/// Reads a configuration tree for `provider`; any error rejects the whole tree.
pub fn read_tree(node: &Node, provider: &str) -> Result<DynamicConfig, Vec<ConfigError>> {
    let content = FileContent::from_node(node)?;
    let mut config = DynamicConfig::default();
    content.merge_into(&mut config, provider);
    Ok(config)
}

/// Reads a configuration tree for `provider`, keeping every object that reads and
/// returning the errors of the others: one bad key in a key-value store must not take
/// the other routers down with it.
pub fn read_tree_lenient(node: &Node, provider: &str) -> (DynamicConfig, Vec<ConfigError>) {
    let (content, errors) = FileContent::read(node);
    let mut config = DynamicConfig::default();
    content.merge_into(&mut config, provider);
    (config, errors)
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), Vec<ConfigError>> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        vec![ConfigError::unlocated(format!(
            "cannot read directory {}: {e}",
            dir.display()
        ))]
    })?;
    for entry in entries {
        let path = entry
            .map_err(|e| {
                vec![ConfigError::unlocated(format!(
                    "cannot read directory {}: {e}",
                    dir.display()
                ))]
            })?
            .path();
        if path.is_dir() {
            collect_files(&path, out)?;
        } else if Format::from_path(&path).is_some() {
            out.push(path);
        }
    }
    Ok(())
}

fn read_file(path: &Path) -> Result<FileContent, Vec<ConfigError>> {
    let name = path.display().to_string();
    let format = Format::from_path(path).ok_or_else(|| {
        vec![ConfigError::unlocated(format!(
            "{name}: unsupported file extension (use .toml, .yaml or .yml)"
        ))]
    })?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![ConfigError::unlocated(format!("cannot read {name}: {e}"))])?;
    let file: Arc<str> = Arc::from(name);
    let node = source::parse(&text, format, &file).map_err(|e| vec![e])?;
    FileContent::from_node(&node)
}

/// One file's objects, with the names as written (not yet qualified).
#[derive(Default)]
struct FileContent {
    http_routers: Vec<(String, Located<HttpRouter>)>,
    http_services: Vec<(String, Located<HttpService>)>,
    http_middlewares: Vec<(String, Located<HttpMiddleware>)>,
    http_transports: Vec<(String, Located<ServersTransport>)>,
    tcp_routers: Vec<(String, Located<TcpRouter>)>,
    tcp_services: Vec<(String, Located<TcpService>)>,
    tcp_middlewares: Vec<(String, Located<TcpMiddleware>)>,
    tcp_transports: Vec<(String, Located<TcpServersTransport>)>,
    udp_routers: Vec<(String, Located<UdpRouter>)>,
    udp_services: Vec<(String, Located<UdpService>)>,
    tls_certificates: Vec<Located<CertAndStores>>,
    tls_options: Vec<(String, Located<TlsOptions>)>,
    tls_stores: Vec<(String, Located<TlsStore>)>,
    warnings: Vec<ConfigError>,
}

/// The entries of a section map, keys matched case-insensitively against `allowed`;
/// unknown keys are errors at the key, like Traefik's strict decoder.
fn sections<'a>(
    node: &'a Node,
    allowed: &[&'static str],
    errors: &mut Vec<ConfigError>,
) -> Vec<(&'static str, &'a Node)> {
    let entries = match &node.kind {
        NodeKind::Map(entries) => entries,
        NodeKind::Null => return Vec::new(),
        _ => {
            errors.push(ConfigError::at(
                node.location.clone(),
                "expected a map of configuration sections",
            ));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (key, value) in entries {
        match allowed.iter().find(|a| a.eq_ignore_ascii_case(&key.name)) {
            Some(name) => out.push((*name, value)),
            None => errors.push(ConfigError::at(
                key.location.clone(),
                format!(
                    "unknown field `{}`, expected one of {}",
                    key.name,
                    allowed
                        .iter()
                        .map(|a| format!("`{a}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    }
    out
}

/// Deserializes each entry of a name → object map separately, collecting every error.
fn named<T: for<'de> Deserialize<'de>>(
    node: &Node,
    errors: &mut Vec<ConfigError>,
) -> Vec<(String, Located<T>)> {
    let entries = match &node.kind {
        NodeKind::Map(entries) => entries,
        NodeKind::Null => return Vec::new(),
        _ => {
            errors.push(ConfigError::at(
                node.location.clone(),
                "expected a map of names to definitions",
            ));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (key, value) in entries {
        if key.name.contains('@') {
            errors.push(ConfigError::at(
                key.location.clone(),
                format!("the name \"{}\" must not contain '@'", key.name),
            ));
            continue;
        }
        match from_node::<Located<T>>(value) {
            Ok(object) => out.push((key.name.clone(), object)),
            Err(e) => errors.push(e),
        }
    }
    out
}

impl FileContent {
    /// Every object of the tree, rejecting the whole tree on any error.
    fn from_node(node: &Node) -> Result<FileContent, Vec<ConfigError>> {
        let (content, errors) = FileContent::read(node);
        if errors.is_empty() {
            Ok(content)
        } else {
            Err(errors)
        }
    }

    /// The objects that read without error, and the errors of the others.
    fn read(node: &Node) -> (FileContent, Vec<ConfigError>) {
        let mut errors = Vec::new();
        let mut content = FileContent::default();
        // Traefik's decoder only looks at the root keys it knows and ignores the others
        // (files often mix in anchors-only keys such as `x-common:`); we warn about them.
        let roots = ["http", "tcp", "udp", "tls"];
        let mut known = Vec::new();
        if let NodeKind::Map(entries) = &node.kind {
            for (key, value) in entries {
                match roots.iter().find(|r| r.eq_ignore_ascii_case(&key.name)) {
                    Some(root) => known.push((*root, value)),
                    None => content.warnings.push(ConfigError::at(
                        key.location.clone(),
                        format!("unknown top-level key `{}` ignored", key.name),
                    )),
                }
            }
        } else if !matches!(node.kind, NodeKind::Null) {
            errors.push(ConfigError::at(
                node.location.clone(),
                "expected a map of configuration sections",
            ));
        }
        for (section, value) in known {
            match section {
                "http" => content.read_http(value, &mut errors),
                "tcp" => content.read_tcp(value, &mut errors),
                "udp" => content.read_udp(value, &mut errors),
                _ => content.read_tls(value, &mut errors),
            }
        }
        (content, errors)
    }

    fn read_http(&mut self, node: &Node, errors: &mut Vec<ConfigError>) {
        let allowed = ["routers", "services", "middlewares", "serversTransports"];
        for (kind, value) in sections(node, &allowed, errors) {
            match kind {
                "routers" => self.http_routers = named(value, errors),
                "services" => self.http_services = named(value, errors),
                "middlewares" => self.http_middlewares = named(value, errors),
                _ => self.http_transports = named(value, errors),
            }
        }
    }

    fn read_tcp(&mut self, node: &Node, errors: &mut Vec<ConfigError>) {
        let allowed = ["routers", "services", "middlewares", "serversTransports"];
        for (kind, value) in sections(node, &allowed, errors) {
            match kind {
                "routers" => self.tcp_routers = named(value, errors),
                "services" => self.tcp_services = named(value, errors),
                "middlewares" => self.tcp_middlewares = named(value, errors),
                _ => self.tcp_transports = named(value, errors),
            }
        }
    }

    fn read_udp(&mut self, node: &Node, errors: &mut Vec<ConfigError>) {
        for (kind, value) in sections(node, &["routers", "services"], errors) {
            match kind {
                "routers" => self.udp_routers = named(value, errors),
                _ => self.udp_services = named(value, errors),
            }
        }
    }

    fn read_tls(&mut self, node: &Node, errors: &mut Vec<ConfigError>) {
        for (kind, value) in sections(node, &["certificates", "options", "stores"], errors) {
            match kind {
                "certificates" => match from_node::<Vec<Located<CertAndStores>>>(value) {
                    Ok(certs) => self.tls_certificates = certs,
                    Err(e) => errors.push(e),
                },
                "options" => self.tls_options = named(value, errors),
                _ => self.tls_stores = named(value, errors),
            }
        }
    }

    /// Qualifies names and references and adds the objects to `config`; a name already
    /// present (from an earlier file) is kept and a warning recorded.
    fn merge_into(self, config: &mut DynamicConfig, provider: &str) {
        let warnings = &mut config.warnings;
        warnings.extend(self.warnings);
        insert_all(
            &mut config.http.routers,
            self.http_routers,
            ("HTTP router", provider),
            warnings,
            |r| {
                qualify_all(&mut r.middlewares, provider);
                qualify(&mut r.service, provider);
                qualify_all(&mut r.parent_refs, provider);
                if let Some(tls) = &mut r.tls {
                    qualify_tls_option(&mut tls.options, provider);
                }
            },
        );
        insert_all(
            &mut config.http.services,
            self.http_services,
            ("HTTP service", provider),
            warnings,
            |s| {
                qualify_all(&mut s.middlewares, provider);
                if let Some(lb) = &mut s.load_balancer {
                    qualify(&mut lb.servers_transport, provider);
                }
                if let Some(w) = &mut s.weighted {
                    qualify_weighted(&mut w.services, provider);
                }
                if let Some(m) = &mut s.mirroring {
                    qualify(&mut m.service, provider);
                    for mirror in &mut m.mirrors {
                        qualify(&mut mirror.name, provider);
                    }
                }
                if let Some(f) = &mut s.failover {
                    qualify(&mut f.service, provider);
                    qualify(&mut f.fallback, provider);
                }
                if let Some(h) = &mut s.highest_random_weight {
                    qualify_weighted(&mut h.services, provider);
                }
            },
        );
        insert_all(
            &mut config.http.middlewares,
            self.http_middlewares,
            ("HTTP middleware", provider),
            warnings,
            |m| {
                if let Some(chain) = &mut m.chain {
                    qualify_all(&mut chain.middlewares, provider);
                }
                if let Some(errors) = &mut m.errors {
                    qualify(&mut errors.service, provider);
                }
            },
        );
        insert_all(
            &mut config.http.servers_transports,
            self.http_transports,
            ("HTTP serversTransport", provider),
            warnings,
            |_| {},
        );
        insert_all(
            &mut config.tcp.routers,
            self.tcp_routers,
            ("TCP router", provider),
            warnings,
            |r| {
                qualify_all(&mut r.middlewares, provider);
                qualify(&mut r.service, provider);
                if let Some(tls) = &mut r.tls {
                    qualify_tls_option(&mut tls.options, provider);
                }
            },
        );
        insert_all(
            &mut config.tcp.services,
            self.tcp_services,
            ("TCP service", provider),
            warnings,
            |s| {
                if let Some(lb) = &mut s.load_balancer {
                    qualify(&mut lb.servers_transport, provider);
                }
                if let Some(w) = &mut s.weighted {
                    qualify_weighted(&mut w.services, provider);
                }
            },
        );
        insert_all(
            &mut config.tcp.middlewares,
            self.tcp_middlewares,
            ("TCP middleware", provider),
            warnings,
            |_| {},
        );
        insert_all(
            &mut config.tcp.servers_transports,
            self.tcp_transports,
            ("TCP serversTransport", provider),
            warnings,
            |_| {},
        );
        insert_all(
            &mut config.udp.routers,
            self.udp_routers,
            ("UDP router", provider),
            warnings,
            |r| qualify(&mut r.service, provider),
        );
        insert_all(
            &mut config.udp.services,
            self.udp_services,
            ("UDP service", provider),
            warnings,
            |s| {
                if let Some(w) = &mut s.weighted {
                    qualify_weighted(&mut w.services, provider);
                }
            },
        );
        config.tls.certificates.extend(self.tls_certificates);
        insert_tls(
            &mut config.tls.options,
            self.tls_options,
            ("TLS options", provider),
            warnings,
        );
        insert_tls(
            &mut config.tls.stores,
            self.tls_stores,
            ("TLS store", provider),
            warnings,
        );
    }
}

fn insert_all<T>(
    into: &mut BTreeMap<String, Located<T>>,
    objects: Vec<(String, Located<T>)>,
    (what, provider): (&str, &str),
    warnings: &mut Vec<ConfigError>,
    mut qualify_refs: impl FnMut(&mut T),
) {
    for (name, mut object) in objects {
        let qualified = qualified_name(&name, provider);
        if into.contains_key(&qualified) {
            warnings.push(already_configured(what, &name, &object));
            continue;
        }
        qualify_refs(&mut object.value);
        into.insert(qualified, object);
    }
}

/// TLS options and stores: `default` keeps its name, others are qualified.
fn insert_tls<T>(
    into: &mut BTreeMap<String, Located<T>>,
    objects: Vec<(String, Located<T>)>,
    (what, provider): (&str, &str),
    warnings: &mut Vec<ConfigError>,
) {
    for (name, object) in objects {
        let key = if name == DEFAULT_TLS_NAME {
            name.clone()
        } else {
            qualified_name(&name, provider)
        };
        if into.contains_key(&key) {
            warnings.push(already_configured(what, &name, &object));
            continue;
        }
        into.insert(key, object);
    }
}

fn already_configured<T>(what: &str, name: &str, object: &Located<T>) -> ConfigError {
    ConfigError {
        location: object.location.clone(),
        message: format!("{what} \"{name}\" already configured in another file, skipping"),
    }
}

fn qualified_name(name: &str, provider: &str) -> String {
    format!("{name}@{provider}")
}

/// A reference without a provider refers to the provider that defines it.
fn qualify(reference: &mut Located<String>, provider: &str) {
    if !reference.value.is_empty() && !reference.value.contains('@') {
        reference.value = qualified_name(&reference.value, provider);
    }
}

fn qualify_all(references: &mut [Located<String>], provider: &str) {
    for reference in references {
        qualify(reference, provider);
    }
}

fn qualify_weighted(services: &mut [WeightedService], provider: &str) {
    for service in services {
        qualify(&mut service.name, provider);
    }
}

fn qualify_tls_option(option: &mut Located<String>, provider: &str) {
    if option.value != DEFAULT_TLS_NAME {
        qualify(option, provider);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Result<DynamicConfig, Vec<ConfigError>> {
        parse_dynamic(text, Format::Yaml, "dyn.yml")
    }

    #[test]
    fn names_and_references_are_qualified_with_the_provider() {
        let config = yaml(
            "http:\n  routers:\n    r:\n      rule: Host(`a`)\n      service: s\n      middlewares: [m, auth@docker]\n      tls:\n        options: default\n  services:\n    s:\n      weighted:\n        services: [{name: a}, {name: api@internal}]\n",
        )
        .expect("loads");
        let r = &config.http.routers["r@file"];
        assert_eq!(r.service.value, "s@file");
        let mws: Vec<_> = r.middlewares.iter().map(|m| m.value.as_str()).collect();
        assert_eq!(mws, ["m@file", "auth@docker"]);
        assert_eq!(
            r.tls.as_ref().map(|t| t.options.value.as_str()),
            Some("default")
        );
        let w = config.http.services["s@file"]
            .weighted
            .as_ref()
            .expect("weighted");
        assert_eq!(w.services[0].name.value, "a@file");
        assert_eq!(w.services[1].name.value, "api@internal");
    }

    #[test]
    fn every_bad_object_is_reported() {
        let errors = yaml(
            "http:\n  routers:\n    a:\n      rule: x\n      bogus: 1\n    b:\n      rule: y\n      other: 2\n",
        )
        .expect_err("two unknown fields");
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(errors[0].location.as_ref().map(|l| l.line), Some(5));
        assert_eq!(errors[1].location.as_ref().map(|l| l.line), Some(8));
    }

    #[test]
    fn unknown_section_keys_are_rejected_and_unknown_root_keys_ignored() {
        let errors = yaml("http:\n  tls: {}\n  bogus: {}\n").expect_err("unknown keys");
        assert_eq!(errors.len(), 2);
        assert!(errors.iter().all(|e| e.message.contains("unknown field")));
        let config = yaml("x-common: &c {a: 1}\nhttp: {}\n").expect("unknown root key ignored");
        assert_eq!(config.warnings.len(), 1);
    }

    #[test]
    fn an_empty_file_is_an_empty_configuration() {
        let config = yaml("").expect("loads");
        assert!(config.http.routers.is_empty());
        let config = parse_dynamic("", Format::Toml, "dyn.toml").expect("loads");
        assert!(config.tcp.routers.is_empty());
    }

    #[test]
    fn tls_default_option_is_not_qualified() {
        let config = yaml("tls:\n  options:\n    default: {sniStrict: true}\n    modern: {minVersion: VersionTLS13}\n")
            .expect("loads");
        let names: Vec<_> = config.tls.options.keys().map(String::as_str).collect();
        assert_eq!(names, ["default", "modern@file"]);
    }

    #[test]
    fn plugin_settings_nested_to_the_depth_limit_load_on_a_tokio_sized_stack() {
        // Plugin settings are free-form, so deserializing them recurses as deep as the file
        // nests; at the limit this must fit the 2 MiB stack of a tokio worker.
        let levels = source::MAX_DEPTH - 5;
        let text = format!(
            "http:\n  middlewares:\n    m:\n      plugin:\n        demo: {}x{}\n",
            "[".repeat(levels),
            "]".repeat(levels)
        );
        let loaded = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || yaml(&text).map(|c| c.http.middlewares.len()))
            .expect("spawn")
            .join()
            .expect("no stack overflow");
        assert_eq!(loaded, Ok(1));
    }

    #[test]
    fn directory_loads_recursively_and_first_definition_wins() {
        let dir = std::env::temp_dir().join(format!("sallyport-dyn-{}", std::process::id()));
        let sub = dir.join("b");
        std::fs::create_dir_all(&sub).expect("mkdir");
        std::fs::write(
            dir.join("a.yml"),
            "http:\n  routers:\n    r: {rule: 'Host(`a`)', service: s}\n",
        )
        .expect("write");
        std::fs::write(
            sub.join("c.toml"),
            "[http.routers.r]\nrule = \"Host(`c`)\"\nservice = \"s\"\n[http.routers.other]\nrule = \"Host(`o`)\"\nservice = \"s\"\n",
        )
        .expect("write");
        std::fs::write(dir.join("notes.txt"), "ignored").expect("write");
        let config = load_dynamic_dir(&dir).expect("loads");
        std::fs::remove_dir_all(&dir).expect("cleanup");
        assert_eq!(config.http.routers["r@file"].rule.value, "Host(`a`)");
        assert!(config.http.routers.contains_key("other@file"));
        assert_eq!(config.warnings.len(), 1);
        assert!(config.warnings[0].message.contains("already configured"));
    }
}
