//! The API's snapshot: every object Traefik's API shows, computed once per configuration.
//!
//! Objects carry their configuration (Traefik's camelCase fields, `omitempty` applied),
//! `status`, `error`, `using` (a router's entrypoints) or `usedBy` (the routers of a
//! service or middleware), and `serverStatus` for load balancers. Requests only pick,
//! filter and concatenate the bytes stored here, and read the health of the servers that
//! health checks watch (see [`super::live`]), so `serverStatus` is current at each request.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::json::{omit_empty, to_bytes};
use super::live::{LiveJson, LiveJsonBuilder, LiveServers, ServerUp};
use crate::config::DynamicConfig;
use crate::config::de::Located;
use crate::config::static_cfg::{EntryPoint, Protocol, StaticConfig};
use crate::config::validate::{ObjectStatus, Report, Status};

/// The servers whose health a check watches, by qualified service name, then server URL
/// (HTTP) or address (TCP): the flag the API reads each time it shows the server. A service
/// or server missing here is reported `UP`, as Traefik does for servers without health
/// checks.
pub type ServerHealth = BTreeMap<String, BTreeMap<String, ServerUp>>;

/// The codename `/api/version` reports.
const CODENAME: &str = "sallyport";

/// One object as lists and single-object requests serve it.
pub(super) struct Entry {
    pub name: String,
    /// `enabled`, `warning` or `disabled`.
    pub status: &'static str,
    /// What `search` looks in, lower-cased: the name, and a router's rule.
    pub searchable: Vec<String>,
    /// A router's service (qualified).
    pub service: Option<String>,
    /// A router's middlewares (qualified).
    pub middlewares: Vec<String>,
    /// The object's JSON representation, with `name` and `provider`.
    pub json: LiveJson,
}

/// Objects of one kind, sorted by name.
#[derive(Default)]
pub(super) struct Objects(Vec<Entry>);

impl Objects {
    fn new(mut entries: Vec<Entry>) -> Objects {
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Objects(entries)
    }

    pub fn all(&self) -> &[Entry] {
        &self.0
    }

    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.0
            .binary_search_by(|e| e.name.as_str().cmp(name))
            .ok()
            .and_then(|i| self.0.get(i))
    }
}

/// The kinds of objects the API lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    EntryPoints,
    HttpRouters,
    HttpServices,
    HttpMiddlewares,
    TcpRouters,
    TcpServices,
    TcpMiddlewares,
    UdpRouters,
    UdpServices,
}

impl Kind {
    /// The word Traefik's "not found" messages use.
    pub fn singular(self) -> &'static str {
        match self {
            Kind::EntryPoints => "entry point",
            Kind::HttpRouters | Kind::TcpRouters | Kind::UdpRouters => "router",
            Kind::HttpServices | Kind::TcpServices | Kind::UdpServices => "service",
            Kind::HttpMiddlewares | Kind::TcpMiddlewares => "middleware",
        }
    }
}

/// An immutable snapshot of what Traefik's API shows for one configuration.
pub struct ApiState {
    entry_points: Objects,
    http_routers: Objects,
    http_services: Objects,
    http_middlewares: Objects,
    tcp_routers: Objects,
    tcp_services: Objects,
    tcp_middlewares: Objects,
    udp_routers: Objects,
    udp_services: Objects,
    pub(super) overview: Bytes,
    pub(super) rawdata: LiveJson,
    pub(super) version: Bytes,
}

/// Objects of one kind as they go into `/api/rawdata` (keyed by name) and into lists.
#[derive(Default)]
struct Built {
    raw: BTreeMap<String, LiveJson>,
    entries: Vec<Entry>,
    counts: Counts,
}

/// A load balancer's `serverStatus`: stored when no health check watches its servers.
enum ServerStatus {
    Stored(Map<String, Value>),
    Live(Arc<LiveServers>),
}

#[derive(Default, Serialize)]
struct Counts {
    total: usize,
    warnings: usize,
    errors: usize,
}

/// What an object's representation says besides its configuration.
struct Facts<'a> {
    outcome: Option<&'a ObjectStatus>,
    /// `using` (routers) or `usedBy` (services, middlewares), and its entries.
    links: (&'static str, Vec<String>),
    /// Services and middlewares: their type, lower-cased, as Traefik's `type`.
    kind: Option<String>,
    server_status: Option<ServerStatus>,
    service: Option<String>,
    middlewares: Vec<String>,
    rule: Option<&'a str>,
}

impl<'a> Facts<'a> {
    fn new(outcome: Option<&'a ObjectStatus>, link_key: &'static str) -> Facts<'a> {
        Facts {
            outcome,
            links: (link_key, Vec::new()),
            kind: None,
            server_status: None,
            service: None,
            middlewares: Vec::new(),
            rule: None,
        }
    }
}

impl Built {
    fn add(&mut self, name: &str, mut config: Value, facts: Facts<'_>) {
        let status = facts.outcome.map_or("enabled", |o| status_name(&o.status));
        self.counts.total += 1;
        match status {
            "warning" => self.counts.warnings += 1,
            "disabled" => self.counts.errors += 1,
            _ => {}
        }
        omit_empty(&mut config);
        let mut info = match config {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        info.insert("status".to_owned(), status.into());
        let errors: Vec<Value> = facts
            .outcome
            .map(|o| o.errors.iter().map(|e| e.message.clone().into()).collect())
            .unwrap_or_default();
        if !errors.is_empty() {
            info.insert("error".to_owned(), Value::Array(errors));
        }
        let (link_key, links) = facts.links;
        if !links.is_empty() {
            info.insert(link_key.to_owned(), links.into());
        }
        let live = match facts.server_status {
            Some(ServerStatus::Stored(servers)) => {
                info.insert("serverStatus".to_owned(), Value::Object(servers));
                None
            }
            Some(ServerStatus::Live(servers)) => Some(servers),
            None => None,
        };
        let with_servers = |object: Map<String, Value>| {
            let bytes = to_bytes(&Value::Object(object));
            match &live {
                Some(servers) => LiveJson::object_with_servers(&bytes, servers.clone()),
                None => LiveJson::stored(bytes),
            }
        };
        let mut shown = info.clone();
        self.raw.insert(name.to_owned(), with_servers(info));
        shown.insert("name".to_owned(), name.into());
        shown.insert("provider".to_owned(), provider(name).into());
        if let Some(kind) = facts.kind {
            shown.insert("type".to_owned(), kind.into());
        }
        let mut searchable = vec![name.to_lowercase()];
        searchable.extend(facts.rule.map(str::to_lowercase));
        self.entries.push(Entry {
            name: name.to_owned(),
            status,
            searchable,
            service: facts.service,
            middlewares: facts.middlewares,
            json: with_servers(shown),
        });
    }
}

impl ApiState {
    /// The snapshot for static configuration `st`, dynamic configuration `dy` (qualified
    /// names), its validation `report` and the `servers` whose health is read at each
    /// request.
    pub fn build(
        st: &StaticConfig,
        dy: &DynamicConfig,
        report: &Report,
        servers: &ServerHealth,
    ) -> ApiState {
        let mut used_by = UsedBy::default();

        let mut http_routers = Built::default();
        for (name, outcome) in &report.http_routers {
            let resolved = report.resolved_http_routers.get(name);
            let origin = resolved.map_or(name.as_str(), |r| r.origin.as_str());
            let Some(router) = dy.http.routers.get(origin) else {
                continue;
            };
            let r = &router.value;
            note(&mut used_by.http_services, &r.service, name);
            for m in &r.middlewares {
                note(&mut used_by.http_middlewares, m, name);
            }
            let mut config = to_value(r);
            // Traefik shows the option a TLS router gets when it names none.
            if let Some(tls) = config.get_mut("tls").and_then(Value::as_object_mut) {
                let option = resolved
                    .and_then(|r| r.tls_options.clone())
                    .unwrap_or_else(|| "default".to_owned());
                tls.insert("options".to_owned(), option.into());
            }
            let mut facts = Facts::new(Some(outcome), "using");
            facts.links.1 = resolved
                .map(|r| sorted(&r.entry_points))
                .unwrap_or_default();
            facts.service = Some(r.service.value.clone());
            facts.middlewares = values(&r.middlewares);
            facts.rule = Some(&r.rule.value);
            http_routers.add(name, config, facts);
        }

        let tcp_eps = entry_points_where(st, |ep| ep.address.protocol == Protocol::Tcp);
        let default_eps = st.default_entry_points();
        let mut tcp_routers = Built::default();
        for (name, router) in &dy.tcp.routers {
            let r = &router.value;
            note(&mut used_by.tcp_services, &r.service, name);
            for m in &r.middlewares {
                note(&mut used_by.tcp_middlewares, m, name);
            }
            let configured = if r.entry_points.is_empty() {
                &default_eps
            } else {
                &r.entry_points
            };
            let mut facts = Facts::new(report.tcp_routers.get(name), "using");
            facts.links.1 = existing(configured, &tcp_eps);
            facts.service = Some(r.service.value.clone());
            facts.middlewares = values(&r.middlewares);
            facts.rule = Some(&r.rule.value);
            tcp_routers.add(name, to_value(r), facts);
        }

        let udp_capable: BTreeSet<String> =
            st.udp_capable_entry_points().map(str::to_owned).collect();
        let all_udp = entry_points_where(st, |ep| ep.address.protocol == Protocol::Udp);
        let mut udp_routers = Built::default();
        for (name, router) in &dy.udp.routers {
            let r = &router.value;
            note(&mut used_by.udp_services, &r.service, name);
            let configured: Vec<String> = if r.entry_points.is_empty() {
                all_udp.iter().cloned().collect()
            } else {
                r.entry_points.clone()
            };
            let mut facts = Facts::new(report.udp_routers.get(name), "using");
            facts.links.1 = existing(&configured, &udp_capable);
            facts.service = Some(r.service.value.clone());
            facts.rule = Some(&r.rule.value);
            udp_routers.add(name, to_value(r), facts);
        }

        let mut http_services = Built::default();
        for (name, service) in &dy.http.services {
            let s = &service.value;
            let mut config = to_value(s);
            let mut server_status = None;
            if let Some(lb) = &s.load_balancer {
                // Traefik defaults `passHostHeader` to true and shows it.
                if let Some(map) = config
                    .get_mut("loadBalancer")
                    .and_then(Value::as_object_mut)
                {
                    map.insert("passHostHeader".to_owned(), lb.pass_host_header().into());
                }
                let urls = lb.servers.iter().map(|s| s.url.value.as_str());
                server_status = Some(server_status_of(servers.get(name), urls));
            }
            let mut facts = Facts::new(report.http_services.get(name), "usedBy");
            facts.links.1 = used_by
                .http_services
                .get(name)
                .map(list)
                .unwrap_or_default();
            facts.kind = s.kinds().first().map(|k| k.to_lowercase());
            facts.server_status = server_status;
            http_services.add(name, config, facts);
        }

        let mut tcp_services = Built::default();
        for (name, service) in &dy.tcp.services {
            let s = &service.value;
            let mut facts = Facts::new(report.tcp_services.get(name), "usedBy");
            facts.links.1 = used_by.tcp_services.get(name).map(list).unwrap_or_default();
            facts.kind = tcp_service_kind(s.load_balancer.is_some(), s.weighted.is_some());
            if let Some(lb) = &s.load_balancer {
                let addresses = lb.servers.iter().map(|s| s.address.value.as_str());
                facts.server_status = Some(server_status_of(servers.get(name), addresses));
            }
            tcp_services.add(name, to_value(s), facts);
        }

        let mut udp_services = Built::default();
        for (name, service) in &dy.udp.services {
            let s = &service.value;
            let mut facts = Facts::new(report.udp_services.get(name), "usedBy");
            facts.links.1 = used_by.udp_services.get(name).map(list).unwrap_or_default();
            facts.kind = tcp_service_kind(s.load_balancer.is_some(), s.weighted.is_some());
            udp_services.add(name, to_value(s), facts);
        }

        let mut http_middlewares = Built::default();
        for (name, middleware) in &dy.http.middlewares {
            let m = &middleware.value;
            let mut facts = Facts::new(report.http_middlewares.get(name), "usedBy");
            facts.links.1 = used_by
                .http_middlewares
                .get(name)
                .map(list)
                .unwrap_or_default();
            // A plugin's type is its name, as in Traefik.
            facts.kind = match &m.plugin {
                Some(plugins) if m.kinds() == ["plugin"] && plugins.len() == 1 => {
                    plugins.keys().next().map(|k| k.to_lowercase())
                }
                _ => m.kinds().first().map(|k| k.to_lowercase()),
            };
            http_middlewares.add(name, to_value(m), facts);
        }

        let mut tcp_middlewares = Built::default();
        for (name, middleware) in &dy.tcp.middlewares {
            let m = &middleware.value;
            let mut facts = Facts::new(report.tcp_middlewares.get(name), "usedBy");
            facts.links.1 = used_by
                .tcp_middlewares
                .get(name)
                .map(list)
                .unwrap_or_default();
            facts.kind = m.kinds().first().map(|k| k.to_lowercase());
            tcp_middlewares.add(name, to_value(m), facts);
        }

        let entry_points = st
            .entry_points
            .iter()
            .map(|(name, ep)| {
                let mut shown = entry_point_json(ep);
                if let Value::Object(map) = &mut shown {
                    map.insert("name".to_owned(), name.as_str().into());
                }
                Entry {
                    name: name.clone(),
                    status: "enabled",
                    searchable: vec![name.to_lowercase()],
                    service: None,
                    middlewares: Vec::new(),
                    json: LiveJson::stored(to_bytes(&shown)),
                }
            })
            .collect();

        let overview = json!({
            "http": {
                "routers": http_routers.counts,
                "services": http_services.counts,
                "middlewares": http_middlewares.counts,
            },
            "tcp": {
                "routers": tcp_routers.counts,
                "services": tcp_services.counts,
                "middlewares": tcp_middlewares.counts,
            },
            "udp": {
                "routers": udp_routers.counts,
                "services": udp_services.counts,
            },
            "features": {
                "tracing": tracing_feature(st),
                "metrics": metrics_feature(st),
                "accessLog": st.access_log.is_some(),
            },
            "providers": providers(st),
        });

        let mut rawdata = LiveJsonBuilder::default();
        let mut rawdata_kinds = 0;
        rawdata.push(b"{");
        for (key, built) in [
            ("routers", &mut http_routers),
            ("middlewares", &mut http_middlewares),
            ("services", &mut http_services),
            ("tcpRouters", &mut tcp_routers),
            ("tcpMiddlewares", &mut tcp_middlewares),
            ("tcpServices", &mut tcp_services),
            ("udpRouters", &mut udp_routers),
            ("udpServices", &mut udp_services),
        ] {
            // As Traefik's `omitempty` maps: a kind with no object is left out.
            if built.raw.is_empty() {
                continue;
            }
            if rawdata_kinds > 0 {
                rawdata.push(b",");
            }
            rawdata_kinds += 1;
            rawdata.push_str(key);
            rawdata.push(b":{");
            for (i, (name, object)) in built.raw.iter().enumerate() {
                if i > 0 {
                    rawdata.push(b",");
                }
                rawdata.push_str(name);
                rawdata.push(b":");
                rawdata.push_json(object);
            }
            rawdata.push(b"}");
        }
        rawdata.push(b"}");

        let version = json!({
            "Version": env!("CARGO_PKG_VERSION"),
            "Codename": CODENAME,
            "startDate": rfc3339(start_date()),
        });

        ApiState {
            entry_points: Objects::new(entry_points),
            http_routers: Objects::new(http_routers.entries),
            http_services: Objects::new(http_services.entries),
            http_middlewares: Objects::new(http_middlewares.entries),
            tcp_routers: Objects::new(tcp_routers.entries),
            tcp_services: Objects::new(tcp_services.entries),
            tcp_middlewares: Objects::new(tcp_middlewares.entries),
            udp_routers: Objects::new(udp_routers.entries),
            udp_services: Objects::new(udp_services.entries),
            overview: to_bytes(&overview),
            rawdata: rawdata.finish(),
            version: to_bytes(&version),
        }
    }

    pub(super) fn objects(&self, kind: Kind) -> &Objects {
        match kind {
            Kind::EntryPoints => &self.entry_points,
            Kind::HttpRouters => &self.http_routers,
            Kind::HttpServices => &self.http_services,
            Kind::HttpMiddlewares => &self.http_middlewares,
            Kind::TcpRouters => &self.tcp_routers,
            Kind::TcpServices => &self.tcp_services,
            Kind::TcpMiddlewares => &self.tcp_middlewares,
            Kind::UdpRouters => &self.udp_routers,
            Kind::UdpServices => &self.udp_services,
        }
    }
}

/// The routers that name each service and middleware directly (Traefik's `usedBy`).
#[derive(Default)]
struct UsedBy {
    http_services: BTreeMap<String, BTreeSet<String>>,
    http_middlewares: BTreeMap<String, BTreeSet<String>>,
    tcp_services: BTreeMap<String, BTreeSet<String>>,
    tcp_middlewares: BTreeMap<String, BTreeSet<String>>,
    udp_services: BTreeMap<String, BTreeSet<String>>,
}

/// Notes that `router` names `object` directly.
fn note(uses: &mut BTreeMap<String, BTreeSet<String>>, object: &str, router: &str) {
    uses.entry(object.to_owned())
        .or_default()
        .insert(router.to_owned());
}

fn status_name(status: &Status) -> &'static str {
    match status {
        Status::Enabled => "enabled",
        Status::Warning(_) => "warning",
        Status::Disabled(_) => "disabled",
    }
}

/// The provider part of a qualified name (`file` in `web@file`).
fn provider(name: &str) -> &str {
    name.split_once('@').map_or("", |(_, p)| p)
}

fn to_value<T: Serialize>(config: &T) -> Value {
    serde_json::to_value(config).unwrap_or_default()
}

fn values(located: &[Located<String>]) -> Vec<String> {
    located.iter().map(|l| l.value.clone()).collect()
}

fn sorted(names: &[String]) -> Vec<String> {
    let set: BTreeSet<&String> = names.iter().collect();
    set.into_iter().cloned().collect()
}

fn list(names: &BTreeSet<String>) -> Vec<String> {
    names.iter().cloned().collect()
}

fn entry_points_where(st: &StaticConfig, keep: impl Fn(&EntryPoint) -> bool) -> BTreeSet<String> {
    st.entry_points
        .iter()
        .filter(|(_, ep)| keep(ep))
        .map(|(name, _)| name.clone())
        .collect()
}

/// The entrypoints among `configured` that exist, sorted.
fn existing(configured: &[String], known: &BTreeSet<String>) -> Vec<String> {
    let set: BTreeSet<&String> = configured.iter().filter(|ep| known.contains(*ep)).collect();
    set.into_iter().cloned().collect()
}

fn tcp_service_kind(load_balancer: bool, weighted: bool) -> Option<String> {
    if load_balancer {
        Some("loadbalancer".to_owned())
    } else if weighted {
        Some("weighted".to_owned())
    } else {
        None
    }
}

/// The `serverStatus` of a load balancer with these `servers`: live when a health check
/// watches one of them.
fn server_status_of<'a>(
    health: Option<&BTreeMap<String, ServerUp>>,
    servers: impl Iterator<Item = &'a str>,
) -> ServerStatus {
    let flags: BTreeMap<&str, Option<ServerUp>> = servers
        .map(|server| (server, health.and_then(|h| h.get(server)).cloned()))
        .collect();
    if flags.values().all(Option::is_none) {
        let up = flags
            .into_keys()
            .map(|server| (server.to_owned(), "UP".into()));
        return ServerStatus::Stored(up.collect());
    }
    ServerStatus::Live(Arc::new(LiveServers::new(flags)))
}

/// An entrypoint as Traefik serializes its static configuration (`omitempty` applied).
fn entry_point_json(ep: &EntryPoint) -> Value {
    let t = &ep.transport;
    let h = &ep.http;
    let mut shown = json!({
        "address": ep.address.to_string(),
        "asDefault": ep.as_default,
        "reusePort": ep.reuse_port,
        "allowACMEByPass": ep.allow_acme_by_pass,
        "transport": {
            "lifeCycle": {
                "requestAcceptGraceTimeout": t.life_cycle.request_accept_grace_timeout,
                "graceTimeOut": t.life_cycle.grace_time_out,
            },
            "respondingTimeouts": {
                "readTimeout": t.responding_timeouts.read_timeout,
                "writeTimeout": t.responding_timeouts.write_timeout,
                "idleTimeout": t.responding_timeouts.idle_timeout,
            },
            "keepAliveMaxRequests": t.keep_alive_max_requests,
            "keepAliveMaxTime": t.keep_alive_max_time,
        },
        "proxyProtocol": ep.proxy_protocol.as_ref().map(|p| json!({
            "insecure": p.insecure,
            "trustedIPs": p.trusted_ips.iter().map(|ip| ip.0.to_string()).collect::<Vec<_>>(),
        })),
        "forwardedHeaders": {
            "insecure": ep.forwarded_headers.insecure,
            "trustedIPs": ep.forwarded_headers.trusted_ips.iter().map(|ip| ip.0.to_string()).collect::<Vec<_>>(),
            "connection": ep.forwarded_headers.connection,
            "notAppendXForwardedFor": ep.forwarded_headers.not_append_x_forwarded_for,
        },
        "http": {
            "redirections": h.redirections.as_ref().and_then(|r| r.entry_point.as_ref()).map(|r| json!({
                "entryPoint": {
                    "to": r.to,
                    "scheme": r.scheme,
                    "permanent": r.permanent,
                    "priority": r.priority,
                },
            })),
            "middlewares": h.middlewares,
            "tls": h.tls.as_ref().map(|tls| json!({
                "options": tls.options,
                "certResolver": tls.cert_resolver,
                "domains": tls.domains,
            })),
            "encodeQuerySemicolons": h.encode_query_semicolons,
            "sanitizePath": h.sanitize_path.unwrap_or(true),
            "maxHeaderBytes": h.max_header_bytes,
        },
        "http2": {"maxConcurrentStreams": ep.http2.max_concurrent_streams},
        "http3": ep.http3.as_ref().map(|h3| json!({"advertisedPort": h3.advertised_port})),
        "udp": {"timeout": ep.udp.timeout},
    });
    omit_empty(&mut shown);
    shown
}

/// `features.tracing`: the tracing backend's name, as Traefik's field name.
fn tracing_feature(st: &StaticConfig) -> String {
    match &st.tracing {
        Some(tracing) if tracing.otlp.is_some() => "OTLP".to_owned(),
        _ => String::new(),
    }
}

/// `features.metrics`: the first configured metrics backend, in Traefik's field order.
fn metrics_feature(st: &StaticConfig) -> &'static str {
    let Some(m) = &st.metrics else {
        return "";
    };
    [
        ("Prometheus", m.prometheus.is_some()),
        ("Datadog", m.datadog.is_some()),
        ("StatsD", m.statsd.is_some()),
        ("InfluxDB2", m.influxdb2.is_some()),
        ("OTLP", m.otlp.is_some()),
    ]
    .into_iter()
    .find(|(_, on)| *on)
    .map_or("", |(name, _)| name)
}

/// The providers that feed the runtime, named as Traefik's overview names them.
fn providers(st: &StaticConfig) -> Vec<&'static str> {
    let p = &st.providers;
    [
        ("File", p.file.is_some()),
        ("Redis", p.redis.is_some()),
        ("Etcd", p.etcd.is_some()),
        ("HTTP", p.http.is_some()),
    ]
    .into_iter()
    .filter(|(_, on)| *on)
    .map(|(name, _)| name)
    .collect()
}

/// When the process started serving the API: the first snapshot's build time, kept across
/// reloads.
fn start_date() -> SystemTime {
    static START: OnceLock<SystemTime> = OnceLock::new();
    *START.get_or_init(SystemTime::now)
}

/// `time` as RFC 3339 in UTC, to the second (`2026-11-28T10:26:32Z`).
fn rfc3339(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_formats_utc_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_857_992);
        assert_eq!(rfc3339(t), "2026-11-28T09:26:32Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00Z");
    }
}
