//! The install (static) configuration: entrypoints, providers, API, logs, metrics…, with
//! Traefik's key names and defaults, and where it is read from.
//!
//! Sources, lowest precedence first: a file (`--configFile`, else `sallyport.{toml,yaml,yml}`
//! in `.` then `/etc/sallyport/`), then `SALLYPORT_*` environment variables, then
//! `--section.key=value` flags. Traefik accepts exactly one source; layering them is a
//! Sallyport extension. Every section Traefik knows is accepted strictly; providers and
//! observability backends the runtime does not implement are accepted as free-form values
//! so that existing files load (the runtime decides whether to refuse them).

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::ConfigError;
use super::de::{Duration, Located, from_node};
use super::dynamic::Domain;
use super::source::{self, Format, Key, Location, Node, NodeKind, ScalarKind};

/// Traefik's internal entrypoint name (API, ping, metrics); routers without entrypoints do
/// not attach to it.
pub const INTERNAL_ENTRYPOINT: &str = "traefik";

/// The static configuration and the file it came from.
#[derive(Clone, Debug)]
pub struct LoadedStatic {
    pub config: StaticConfig,
    /// `None` when no file was found (flags and environment only).
    pub file: Option<PathBuf>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct StaticConfig {
    pub global: Global,
    pub servers_transport: StaticServersTransport,
    pub tcp_servers_transport: StaticTcpServersTransport,
    pub entry_points: BTreeMap<String, EntryPoint>,
    pub providers: Providers,
    pub api: Option<Api>,
    pub metrics: Option<Metrics>,
    pub ping: Option<Ping>,
    pub log: Log,
    pub access_log: Option<AccessLog>,
    pub tracing: Option<Tracing>,
    pub host_resolver: Option<HostResolver>,
    pub certificates_resolvers: BTreeMap<String, CertificateResolver>,
    /// Not implemented by the runtime; accepted as written.
    pub experimental: Option<serde_json::Value>,
    pub core: Core,
    pub spiffe: Option<SpiffeClient>,
    /// Not implemented by the runtime; accepted as written.
    pub ocsp: Option<serde_json::Value>,
}

impl StaticConfig {
    /// Entrypoints used by routers that name none: those with `asDefault`, else every
    /// non-UDP entrypoint except `traefik`; sorted by name (Traefik's rule).
    pub fn default_entry_points(&self) -> Vec<String> {
        let any_default = self.entry_points.values().any(|ep| ep.as_default);
        self.entry_points
            .iter()
            .filter(|(name, ep)| {
                (!any_default || ep.as_default)
                    && ep.address.protocol != Protocol::Udp
                    && name.as_str() != INTERNAL_ENTRYPOINT
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Entrypoints UDP routers may name: UDP entrypoints, and TCP entrypoints with `http3`,
    /// whose UDP socket on the same port they share (an extension).
    pub fn udp_capable_entry_points(&self) -> impl Iterator<Item = &str> {
        self.entry_points
            .iter()
            .filter(|(_, ep)| ep.address.protocol == Protocol::Udp || ep.http3.is_some())
            .map(|(name, _)| name.as_str())
    }

    /// Entrypoints HTTP routers may name: TCP entrypoints, and UDP entrypoints with `http3`
    /// (served over HTTP/3 only; an extension).
    pub fn http_capable_entry_points(&self) -> impl Iterator<Item = &str> {
        self.entry_points
            .iter()
            .filter(|(_, ep)| ep.address.protocol == Protocol::Tcp || ep.http3.is_some())
            .map(|(name, _)| name.as_str())
    }

    /// Applies what Traefik derives after loading: the default `http` entrypoint on `:80`
    /// when none is configured, and the internal `traefik` entrypoint on `:8080` when the
    /// API (insecure), ping or Prometheus need it.
    fn set_effective(&mut self) {
        if self.entry_points.is_empty() {
            self.entry_points.insert(
                "http".to_owned(),
                EntryPoint::on(EntryPointAddress::any(80)),
            );
        }
        let api = self.api.as_ref().is_some_and(|a| a.insecure);
        let ping = self
            .ping
            .as_ref()
            .is_some_and(|p| !p.manual_routing && p.entry_point == INTERNAL_ENTRYPOINT);
        let prometheus = self
            .metrics
            .as_ref()
            .and_then(|m| m.prometheus.as_ref())
            .is_some_and(|p| !p.manual_routing && p.entry_point == INTERNAL_ENTRYPOINT);
        if (api || ping || prometheus) && !self.entry_points.contains_key(INTERNAL_ENTRYPOINT) {
            let mut ep = EntryPoint::on(EntryPointAddress::any(8080));
            ep.implicit = true;
            self.entry_points.insert(INTERNAL_ENTRYPOINT.to_owned(), ep);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Entrypoints

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

/// `[host]:port[/tcp|/udp]`. An empty host means every interface.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EntryPointAddress {
    /// Empty for all interfaces; an IP address or a host name otherwise.
    pub host: String,
    pub port: u16,
    pub protocol: Protocol,
}

impl EntryPointAddress {
    pub fn any(port: u16) -> EntryPointAddress {
        EntryPointAddress {
            host: String::new(),
            port,
            protocol: Protocol::Tcp,
        }
    }

    /// The host as an IP address, when it is one (`None` for all interfaces or a name).
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    pub fn parse(text: &str) -> Result<EntryPointAddress, String> {
        let (hostport, protocol) = match text.rsplit_once('/') {
            Some((hp, proto)) => match proto.to_ascii_lowercase().as_str() {
                "tcp" => (hp, Protocol::Tcp),
                "udp" => (hp, Protocol::Udp),
                _ => {
                    return Err(format!(
                        "invalid protocol \"{proto}\" in address \"{text}\" (use /tcp or /udp)"
                    ));
                }
            },
            None => (text, Protocol::Tcp),
        };
        let (host, port) = hostport
            .rsplit_once(':')
            .ok_or_else(|| format!("address \"{text}\" has no port (expected [host]:port)"))?;
        // As Go's `SplitHostPort`: an IPv6 host must be bracketed.
        let (host, bracketed) = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(inner) => (inner, true),
            None => (host, false),
        };
        if host.contains(':') && (!bracketed || host.parse::<IpAddr>().is_err()) {
            return Err(format!("invalid host \"{host}\" in address \"{text}\""));
        }
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("invalid port \"{port}\" in address \"{text}\""))?;
        Ok(EntryPointAddress {
            host: host.to_owned(),
            port,
            protocol,
        })
    }
}

impl fmt::Display for EntryPointAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)?;
        } else {
            write!(f, "{}:{}", self.host, self.port)?;
        }
        match self.protocol {
            Protocol::Tcp => Ok(()),
            Protocol::Udp => f.write_str("/udp"),
        }
    }
}

impl<'de> Deserialize<'de> for EntryPointAddress {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        EntryPointAddress::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Default for EntryPointAddress {
    /// Never used for a configured entrypoint: `load_static` requires `address`.
    fn default() -> Self {
        EntryPointAddress::any(0)
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct EntryPoint {
    pub address: EntryPointAddress,
    #[serde(rename = "allowACMEByPass")]
    pub allow_acme_by_pass: bool,
    pub reuse_port: bool,
    pub as_default: bool,
    pub transport: EntryPointTransport,
    pub proxy_protocol: Option<ProxyProtocolTrust>,
    pub forwarded_headers: ForwardedHeaders,
    pub http: EntryPointHttp,
    pub http2: Http2,
    pub http3: Option<Http3>,
    pub udp: EntryPointUdp,
    /// Extension: TCP dispatch settings.
    pub tcp: EntryPointTcp,
    pub observability: Option<EntryPointObservability>,
    /// Created by Sallyport itself (the `traefik` entrypoint that `api.insecure`, `ping`
    /// or `metrics` ask for), not written by the user.
    #[serde(skip)]
    pub implicit: bool,
}

impl EntryPoint {
    fn on(address: EntryPointAddress) -> EntryPoint {
        EntryPoint {
            address,
            ..EntryPoint::default()
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct EntryPointTransport {
    pub life_cycle: LifeCycle,
    pub responding_timeouts: RespondingTimeouts,
    pub keep_alive_max_time: Duration,
    pub keep_alive_max_requests: i64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct LifeCycle {
    pub request_accept_grace_timeout: Duration,
    #[serde(rename = "graceTimeOut")]
    pub grace_time_out: Duration,
}

impl Default for LifeCycle {
    fn default() -> Self {
        LifeCycle {
            request_accept_grace_timeout: Duration::ZERO,
            grace_time_out: Duration::from_secs(10),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct RespondingTimeouts {
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Default for RespondingTimeouts {
    fn default() -> Self {
        RespondingTimeouts {
            read_timeout: Duration::from_secs(60),
            write_timeout: Duration::ZERO,
            idle_timeout: Duration::from_secs(180),
        }
    }
}

/// Trusted sources of PROXY protocol headers (IPs or CIDRs).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ProxyProtocolTrust {
    pub insecure: bool,
    #[serde(rename = "trustedIPs")]
    pub trusted_ips: Vec<IpOrNet>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ForwardedHeaders {
    pub insecure: bool,
    #[serde(rename = "trustedIPs")]
    pub trusted_ips: Vec<IpOrNet>,
    pub connection: Vec<String>,
    pub not_append_x_forwarded_for: bool,
    pub add_x_forwarded_scheme_headers: bool,
}

/// An IP address or a CIDR network, as `trustedIPs` lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpOrNet(pub ipnet::IpNet);

impl IpOrNet {
    pub fn parse(text: &str) -> Result<IpOrNet, String> {
        let t = text.trim();
        if let Ok(net) = t.parse::<ipnet::IpNet>() {
            return Ok(IpOrNet(net.trunc()));
        }
        t.parse::<IpAddr>()
            .map(|ip| IpOrNet(ipnet::IpNet::from(ip)))
            .map_err(|_| format!("\"{text}\" is neither an IP address nor a CIDR network"))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip)
    }
}

impl<'de> Deserialize<'de> for IpOrNet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        IpOrNet::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct EntryPointHttp {
    pub redirections: Option<Redirections>,
    pub middlewares: Vec<String>,
    pub tls: Option<EntryPointTls>,
    pub encoded_characters: Option<EncodedCharactersPolicy>,
    pub encode_query_semicolons: bool,
    /// Default true.
    pub sanitize_path: Option<bool>,
    pub max_header_bytes: i64,
    /// `keep` (default), `delete` or `reject`.
    pub underscore_headers_strategy: String,
}

impl Default for EntryPointHttp {
    fn default() -> Self {
        EntryPointHttp {
            redirections: None,
            middlewares: Vec::new(),
            tls: None,
            encoded_characters: None,
            encode_query_semicolons: false,
            sanitize_path: None,
            max_header_bytes: 1 << 20,
            underscore_headers_strategy: String::new(),
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Redirections {
    pub entry_point: Option<RedirectEntryPoint>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct RedirectEntryPoint {
    /// An entrypoint name or `:port`.
    pub to: String,
    pub scheme: String,
    pub permanent: bool,
    pub priority: i64,
}

impl Default for RedirectEntryPoint {
    fn default() -> Self {
        RedirectEntryPoint {
            to: String::new(),
            scheme: "https".to_owned(),
            permanent: true,
            priority: i64::from(i32::MAX) - 1,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct EntryPointTls {
    pub options: String,
    pub cert_resolver: String,
    pub domains: Vec<Domain>,
}

/// Which encoded characters request paths may contain (all allowed by default).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct EncodedCharactersPolicy {
    pub allow_encoded_slash: bool,
    pub allow_encoded_back_slash: bool,
    pub allow_encoded_null_character: bool,
    pub allow_encoded_semicolon: bool,
    pub allow_encoded_percent: bool,
    pub allow_encoded_question_mark: bool,
    pub allow_encoded_hash: bool,
}

impl Default for EncodedCharactersPolicy {
    fn default() -> Self {
        EncodedCharactersPolicy {
            allow_encoded_slash: true,
            allow_encoded_back_slash: true,
            allow_encoded_null_character: true,
            allow_encoded_semicolon: true,
            allow_encoded_percent: true,
            allow_encoded_question_mark: true,
            allow_encoded_hash: true,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Http2 {
    pub max_concurrent_streams: i64,
    pub max_decoder_header_table_size: i64,
    pub max_encoder_header_table_size: i64,
}

impl Default for Http2 {
    fn default() -> Self {
        Http2 {
            max_concurrent_streams: 250,
            max_decoder_header_table_size: 4096,
            max_encoder_header_table_size: 4096,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Http3 {
    /// 0: the entrypoint's own port.
    pub advertised_port: i64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct EntryPointUdp {
    /// Idle session timeout (must be > 0).
    pub timeout: Duration,
    /// Extension: most UDP sessions at once; new clients are refused beyond it.
    pub max_sessions: i64,
}

/// The default of `udp.maxSessions`: each session holds a socket, so this bounds file
/// descriptors too.
pub const DEFAULT_UDP_MAX_SESSIONS: i64 = 16_384;

impl Default for EntryPointUdp {
    fn default() -> Self {
        EntryPointUdp {
            timeout: Duration::from_secs(3),
            max_sessions: DEFAULT_UDP_MAX_SESSIONS,
        }
    }
}

/// `entryPoints.<n>.tcp` (a Sallyport extension).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct EntryPointTcp {
    /// How long a connection may stay silent before it is taken for a server-first
    /// protocol (SMTP, SSH, MySQL banners): it then goes to the entrypoint's server-first
    /// STARTTLS greeting or its non-TLS `HostSNI(`*`)` router, even when TLS or HTTP
    /// routers share the entrypoint. Unset: wait for the client as Traefik does.
    pub server_first_timeout: Option<Duration>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct EntryPointObservability {
    pub access_logs: Option<bool>,
    pub metrics: Option<bool>,
    pub tracing: Option<bool>,
    pub trace_verbosity: String,
}

// ---------------------------------------------------------------------------------------
// Providers

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Providers {
    pub providers_throttle_duration: Duration,
    pub precedence: Vec<String>,
    pub file: Option<FileProvider>,
    // Providers the runtime does not implement: accepted as written.
    pub docker: Option<serde_json::Value>,
    pub swarm: Option<serde_json::Value>,
    pub kubernetes_ingress: Option<serde_json::Value>,
    #[serde(rename = "kubernetesIngressNGINX")]
    pub kubernetes_ingress_nginx: Option<serde_json::Value>,
    #[serde(rename = "kubernetesCRD")]
    pub kubernetes_crd: Option<serde_json::Value>,
    pub kubernetes_gateway: Option<serde_json::Value>,
    pub knative: Option<serde_json::Value>,
    pub rest: Option<serde_json::Value>,
    pub consul_catalog: Option<serde_json::Value>,
    pub nomad: Option<serde_json::Value>,
    pub ecs: Option<serde_json::Value>,
    pub consul: Option<serde_json::Value>,
    pub etcd: Option<EtcdProvider>,
    pub zoo_keeper: Option<serde_json::Value>,
    pub redis: Option<RedisProvider>,
    pub http: Option<HttpProvider>,
    pub plugin: Option<BTreeMap<String, serde_json::Value>>,
}

impl Default for Providers {
    fn default() -> Self {
        Providers {
            providers_throttle_duration: Duration::from_secs(2),
            precedence: Vec::new(),
            file: None,
            docker: None,
            swarm: None,
            kubernetes_ingress: None,
            kubernetes_ingress_nginx: None,
            kubernetes_crd: None,
            kubernetes_gateway: None,
            knative: None,
            rest: None,
            consul_catalog: None,
            nomad: None,
            ecs: None,
            consul: None,
            etcd: None,
            zoo_keeper: None,
            redis: None,
            http: None,
            plugin: None,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct FileProvider {
    pub directory: String,
    pub watch: bool,
    pub filename: String,
    pub debug_log_generated_template: bool,
}

/// `providers.http`: a URL polled for dynamic configuration (JSON, or YAML/TOML by
/// content type).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct HttpProvider {
    pub endpoint: String,
    /// Time between two polls (Traefik's default 5s).
    pub poll_interval: Duration,
    /// Bound on one poll, connection to last body byte (5s).
    pub poll_timeout: Duration,
    /// Sent with every poll (an API token, say).
    pub headers: BTreeMap<String, String>,
    /// TLS to the endpoint; the system's roots when absent.
    pub tls: Option<ClientTls>,
}

impl Default for HttpProvider {
    fn default() -> Self {
        HttpProvider {
            endpoint: String::new(),
            poll_interval: Duration::from_secs(5),
            poll_timeout: Duration::from_secs(5),
            headers: BTreeMap::new(),
            tls: None,
        }
    }
}

/// `providers.redis`: dynamic configuration in Redis keys, Traefik's key-value layout.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct RedisProvider {
    /// `host:port` of the servers, tried in order.
    pub endpoints: Vec<String>,
    /// The key under which the configuration is written (`traefik`).
    pub root_key: String,
    pub username: String,
    pub password: String,
    pub db: i64,
    pub tls: Option<ClientTls>,
    /// Redis Sentinel: accepted as written, not used.
    pub sentinel: Option<serde_json::Value>,
}

impl Default for RedisProvider {
    fn default() -> Self {
        RedisProvider {
            endpoints: vec!["127.0.0.1:6379".to_owned()],
            root_key: "traefik".to_owned(),
            username: String::new(),
            password: String::new(),
            db: 0,
            tls: None,
            sentinel: None,
        }
    }
}

/// `providers.etcd`: dynamic configuration in etcd v3 keys, Traefik's key-value layout.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct EtcdProvider {
    /// `host:port` (or `http(s)://host:port`) of the cluster's members.
    pub endpoints: Vec<String>,
    /// The key under which the configuration is written (`traefik`).
    pub root_key: String,
    pub username: String,
    pub password: String,
    pub tls: Option<ClientTls>,
}

impl Default for EtcdProvider {
    fn default() -> Self {
        EtcdProvider {
            endpoints: vec!["127.0.0.1:2379".to_owned()],
            root_key: "traefik".to_owned(),
            username: String::new(),
            password: String::new(),
            tls: None,
        }
    }
}

/// Traefik's client TLS settings of providers (`ca`, `cert`, `key`,
/// `insecureSkipVerify`): the same shape as the OTLP exporters'.
pub type ClientTls = OtlpTls;

impl Default for FileProvider {
    fn default() -> Self {
        FileProvider {
            directory: String::new(),
            watch: true,
            filename: String::new(),
            debug_log_generated_template: false,
        }
    }
}

// ---------------------------------------------------------------------------------------
// API, ping, logs, metrics

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Api {
    pub base_path: String,
    pub insecure: bool,
    pub dashboard: bool,
    pub debug: bool,
    pub disable_dashboard_ad: bool,
    pub dashboard_name: String,
}

impl Default for Api {
    fn default() -> Self {
        Api {
            base_path: "/".to_owned(),
            insecure: false,
            dashboard: true,
            debug: false,
            disable_dashboard_ad: false,
            dashboard_name: String::new(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Ping {
    pub entry_point: String,
    pub manual_routing: bool,
    pub terminating_status_code: i64,
}

impl Default for Ping {
    fn default() -> Self {
        Ping {
            entry_point: INTERNAL_ENTRYPOINT.to_owned(),
            manual_routing: false,
            terminating_status_code: 503,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "UPPERCASE")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    #[default]
    Error,
    Fatal,
    Panic,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum LogFormat {
    #[default]
    Common,
    Json,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Log {
    pub level: LogLevel,
    pub format: LogFormat,
    pub no_color: bool,
    pub file_path: String,
    pub max_size: i64,
    pub max_age: i64,
    pub max_backups: i64,
    pub compress: bool,
    /// Not implemented by the runtime; accepted as written.
    pub otlp: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct AccessLog {
    pub file_path: String,
    /// `common` (default), `genericCLF` or `json`.
    pub format: String,
    pub filters: Option<AccessLogFilters>,
    pub fields: Option<AccessLogFields>,
    pub buffering_size: i64,
    pub add_internals: bool,
    /// Not implemented by the runtime; accepted as written.
    pub otlp: Option<serde_json::Value>,
}

impl Default for AccessLog {
    fn default() -> Self {
        AccessLog {
            file_path: String::new(),
            format: "common".to_owned(),
            filters: None,
            fields: None,
            buffering_size: 0,
            add_internals: false,
            otlp: None,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct AccessLogFilters {
    pub status_codes: Vec<String>,
    pub retry_attempts: bool,
    pub min_duration: Duration,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct AccessLogFields {
    /// `keep` (default), `drop` or `redact`.
    pub default_mode: String,
    pub names: BTreeMap<String, String>,
    pub headers: Option<AccessLogHeaders>,
}

impl Default for AccessLogFields {
    fn default() -> Self {
        AccessLogFields {
            default_mode: "keep".to_owned(),
            names: BTreeMap::new(),
            headers: None,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct AccessLogHeaders {
    /// `drop` (default), `keep` or `redact`.
    pub default_mode: String,
    pub names: BTreeMap<String, String>,
}

impl Default for AccessLogHeaders {
    fn default() -> Self {
        AccessLogHeaders {
            default_mode: "drop".to_owned(),
            names: BTreeMap::new(),
        }
    }
}

/// `tracing`: W3C trace context propagation for every HTTP request, and span export over
/// OTLP (`otlp.grpc`, else `otlp.http`) when `otlp` is set (docs/tracing.md).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Tracing {
    /// The `service.name` resource attribute; Traefik's default is `traefik`.
    pub service_name: String,
    /// Share of new traces sampled, 0.0 to 1.0; a caller's decision is kept.
    pub sample_rate: f64,
    /// Resource attributes (Traefik deprecated `globalAttributes` for `resourceAttributes`;
    /// both are read, `resourceAttributes` wins).
    pub global_attributes: BTreeMap<String, String>,
    pub resource_attributes: BTreeMap<String, String>,
    /// Whether requests routed to an `@internal` service (api, ping, dashboard...) are
    /// exported too.
    pub add_internals: bool,
    /// Request headers exported as `http.request.header.<name>` span attributes.
    pub captured_request_headers: Vec<String>,
    /// Response headers exported as `http.response.header.<name>` span attributes.
    pub captured_response_headers: Vec<String>,
    /// Query parameters whose values `url.query` shows; the others read `REDACTED`.
    pub safe_query_params: Vec<String>,
    pub otlp: Option<TracingOtlp>,
}

impl Default for Tracing {
    fn default() -> Self {
        Tracing {
            service_name: "sallyport".to_owned(),
            sample_rate: 1.0,
            global_attributes: BTreeMap::new(),
            resource_attributes: BTreeMap::new(),
            add_internals: false,
            captured_request_headers: Vec::new(),
            captured_response_headers: Vec::new(),
            safe_query_params: Vec::new(),
            otlp: None,
        }
    }
}

/// Where spans go; with both set, `grpc` is used (as in Traefik).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct TracingOtlp {
    pub http: Option<OtlpHttp>,
    pub grpc: Option<OtlpGrpc>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct OtlpHttp {
    /// The full URL spans are POSTed to (`/v1/traces` when it has no path).
    pub endpoint: String,
    /// Sent with every export (an `Authorization`, say).
    pub headers: BTreeMap<String, String>,
    /// Trust and client certificate for `https://` endpoints.
    pub tls: Option<OtlpTls>,
}

impl Default for OtlpHttp {
    fn default() -> Self {
        OtlpHttp {
            endpoint: "http://localhost:4318/v1/traces".to_owned(),
            headers: BTreeMap::new(),
            tls: None,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct OtlpGrpc {
    /// `host:port` of the collector.
    pub endpoint: String,
    /// Plaintext HTTP/2 instead of TLS (ignored when `tls` is set, as in Traefik).
    pub insecure: bool,
    /// Sent as request metadata with every export.
    pub headers: BTreeMap<String, String>,
    pub tls: Option<OtlpTls>,
}

impl Default for OtlpGrpc {
    fn default() -> Self {
        OtlpGrpc {
            endpoint: "localhost:4317".to_owned(),
            insecure: false,
            headers: BTreeMap::new(),
            tls: None,
        }
    }
}

/// Traefik's client TLS: `ca`, `cert` and `key` are each a path or the PEM itself.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct OtlpTls {
    /// The CA the collector's certificate must chain to; empty trusts the system's roots.
    pub ca: String,
    /// A client certificate and its key, for collectors that ask (both or neither).
    pub cert: String,
    pub key: String,
    pub insecure_skip_verify: bool,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Metrics {
    pub add_internals: bool,
    pub prometheus: Option<Prometheus>,
    // Backends the runtime does not implement: accepted as written.
    pub datadog: Option<serde_json::Value>,
    #[serde(rename = "statsD")]
    pub statsd: Option<serde_json::Value>,
    #[serde(rename = "influxDB2")]
    pub influxdb2: Option<serde_json::Value>,
    pub otlp: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Prometheus {
    /// The metric name prefix; empty means `sallyport` (Traefik users write `traefik` to keep
    /// their dashboards). Not a Traefik key: Traefik's prefix is fixed.
    pub prefix: String,
    pub buckets: Vec<f64>,
    pub add_entry_points_labels: bool,
    pub add_routers_labels: bool,
    pub add_services_labels: bool,
    pub entry_point: String,
    pub manual_routing: bool,
    pub header_labels: BTreeMap<String, String>,
}

impl Default for Prometheus {
    fn default() -> Self {
        Prometheus {
            prefix: String::new(),
            buckets: vec![0.1, 0.3, 1.2, 5.0],
            add_entry_points_labels: true,
            add_routers_labels: false,
            add_services_labels: true,
            entry_point: INTERNAL_ENTRYPOINT.to_owned(),
            manual_routing: false,
            header_labels: BTreeMap::new(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Transports, resolvers, global, core

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Global {
    pub check_new_version: bool,
    pub send_anonymous_usage: bool,
    pub not_append_x_forwarded_for: bool,
}

/// The `default@internal` HTTP servers transport.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct StaticServersTransport {
    pub insecure_skip_verify: bool,
    #[serde(rename = "rootCAs")]
    pub root_cas: Vec<String>,
    pub max_idle_conns_per_host: i64,
    pub forwarding_timeouts: StaticForwardingTimeouts,
    pub spiffe: Option<super::dynamic::Spiffe>,
}

impl Default for StaticServersTransport {
    fn default() -> Self {
        StaticServersTransport {
            insecure_skip_verify: false,
            root_cas: Vec::new(),
            max_idle_conns_per_host: 200,
            forwarding_timeouts: StaticForwardingTimeouts::default(),
            spiffe: None,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct StaticForwardingTimeouts {
    pub dial_timeout: Duration,
    pub response_header_timeout: Duration,
    pub idle_conn_timeout: Duration,
}

impl Default for StaticForwardingTimeouts {
    fn default() -> Self {
        StaticForwardingTimeouts {
            dial_timeout: Duration::from_secs(30),
            response_header_timeout: Duration::ZERO,
            idle_conn_timeout: Duration::from_secs(90),
        }
    }
}

/// The `default@internal` TCP servers transport.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct StaticTcpServersTransport {
    pub dial_keep_alive: Duration,
    pub dial_timeout: Duration,
    pub termination_delay: Duration,
    pub tls: Option<StaticTcpClientTls>,
}

impl Default for StaticTcpServersTransport {
    fn default() -> Self {
        StaticTcpServersTransport {
            dial_keep_alive: Duration::from_secs(15),
            dial_timeout: Duration::from_secs(30),
            termination_delay: Duration::from_millis(100),
            tls: None,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct StaticTcpClientTls {
    pub insecure_skip_verify: bool,
    #[serde(rename = "rootCAs")]
    pub root_cas: Vec<String>,
    pub spiffe: Option<super::dynamic::Spiffe>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct CertificateResolver {
    pub acme: Option<Acme>,
    pub tailscale: Option<super::dynamic::EmptyHealthCheck>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Acme {
    pub email: String,
    pub ca_server: String,
    pub preferred_chain: String,
    pub profile: String,
    pub email_addresses: Vec<String>,
    pub disable_common_name: bool,
    pub storage: String,
    pub key_type: String,
    pub eab: Option<Eab>,
    pub certificates_duration: i64,
    pub client_timeout: Option<Duration>,
    pub client_response_header_timeout: Option<Duration>,
    #[serde(rename = "caCertificates")]
    pub ca_certificates: Vec<String>,
    pub ca_system_cert_pool: bool,
    pub ca_server_name: String,
    pub dns_challenge: Option<serde_json::Value>,
    pub http_challenge: Option<HttpChallenge>,
    pub tls_challenge: Option<serde_json::Value>,
    /// Sallyport extension: the account and certificates in etcd or Redis instead of the
    /// `storage` file, shared by a fleet.
    pub shared_storage: Option<AcmeSharedStorage>,
}

impl Default for Acme {
    fn default() -> Self {
        Acme {
            email: String::new(),
            ca_server: "https://acme-v02.api.letsencrypt.org/directory".to_owned(),
            preferred_chain: String::new(),
            profile: String::new(),
            email_addresses: Vec::new(),
            disable_common_name: false,
            storage: "acme.json".to_owned(),
            key_type: "RSA4096".to_owned(),
            eab: None,
            certificates_duration: 2160,
            client_timeout: None,
            client_response_header_timeout: None,
            ca_certificates: Vec::new(),
            ca_system_cert_pool: false,
            ca_server_name: String::new(),
            dns_challenge: None,
            http_challenge: None,
            tls_challenge: None,
            shared_storage: None,
        }
    }
}

/// `certificatesResolvers.<n>.acme.sharedStorage` (an extension): one of the stores, with
/// the settings of the provider of the same name; ACME keys live under
/// `<rootKey>/acme/<resolver>/`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct AcmeSharedStorage {
    pub etcd: Option<EtcdProvider>,
    pub redis: Option<RedisProvider>,
    /// How long the ordering lock outlives an instance that stops renewing it (`30s`).
    #[serde(rename = "lockTTL")]
    pub lock_ttl: Option<Duration>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Eab {
    pub kid: String,
    pub hmac_encoded: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct HttpChallenge {
    pub entry_point: String,
    pub delay: Option<Duration>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct HostResolver {
    pub cname_flattening: bool,
    pub resolv_config: String,
    pub resolv_depth: i64,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct SpiffeClient {
    #[serde(rename = "workloadAPIAddr")]
    pub workload_api_addr: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Core {
    /// `v3` (default) or `v2`.
    pub default_rule_syntax: Located<String>,
}

impl Default for Core {
    fn default() -> Self {
        Core {
            default_rule_syntax: Located::new("v3".to_owned()),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Loading

/// Names of the configuration files searched when `--configFile` is not given, in order,
/// in each of [`SEARCH_DIRS`].
pub const FILE_NAMES: &[&str] = &["sallyport.toml", "sallyport.yaml", "sallyport.yml"];
pub const SEARCH_DIRS: &[&str] = &[".", "/etc/sallyport"];
/// Prefix of the environment variables read as configuration.
pub const ENV_PREFIX: &str = "SALLYPORT_";

/// Loads the static configuration from a file, the environment and flags (later sources
/// override earlier ones). `args` are the command-line arguments after the program name
/// (and subcommand); `env` the process environment.
pub fn load_static(
    args: &[String],
    env: &[(String, String)],
) -> Result<LoadedStatic, Vec<ConfigError>> {
    let flags = parse_flags(args)?;
    let env_file = env
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("SALLYPORT_CONFIGFILE"))
        .map(|(_, v)| PathBuf::from(v));
    let file = match flags.config_file.clone().or(env_file) {
        Some(path) => Some(path),
        None => find_config_file(SEARCH_DIRS),
    };

    let mut tree = match &file {
        Some(path) => read_static_file(path)?,
        None => empty_map(Location::whole("defaults")),
    };
    tree.merge(env_tree(env));
    tree.merge(flags.tree);

    let mut config: StaticConfig = from_node(&tree).map_err(|e| vec![e])?;
    let missing: Vec<ConfigError> = config
        .entry_points
        .iter()
        .filter_map(|(name, ep)| {
            let node = entrypoint_node(&tree, name)?;
            let message = if node.get_ci("address").is_none() {
                format!("entryPoint \"{name}\": address is required (e.g. \":443\")")
            } else if ep.udp.timeout.to_std().is_none_or(|t| t.is_zero()) {
                format!("entryPoint \"{name}\": udp.timeout must be greater than zero")
            } else if ep.udp.max_sessions < 1 {
                format!("entryPoint \"{name}\": udp.maxSessions must be at least 1")
            } else if ep
                .tcp
                .server_first_timeout
                .is_some_and(|t| t.to_std().is_none_or(|t| t.is_zero()))
            {
                format!("entryPoint \"{name}\": tcp.serverFirstTimeout must be greater than zero")
            } else {
                return None;
            };
            Some(ConfigError {
                location: Some(node.location.clone()),
                message,
            })
        })
        .collect();
    if !missing.is_empty() {
        return Err(missing);
    }
    config.set_effective();
    Ok(LoadedStatic { config, file })
}

fn find_config_file(dirs: &[&str]) -> Option<PathBuf> {
    dirs.iter()
        .flat_map(|dir| FILE_NAMES.iter().map(move |name| Path::new(dir).join(name)))
        .find(|p| p.is_file())
}

fn read_static_file(path: &Path) -> Result<Node, Vec<ConfigError>> {
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
    Ok(match node.kind {
        NodeKind::Null => empty_map(node.location),
        _ => node,
    })
}

fn empty_map(location: Location) -> Node {
    Node::new(NodeKind::Map(Vec::new()), location)
}

struct Flags {
    config_file: Option<PathBuf>,
    tree: Node,
}

fn parse_flags(args: &[String]) -> Result<Flags, Vec<ConfigError>> {
    let mut config_file = None;
    let mut tree = empty_map(Location::whole("flags"));
    let mut errors = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let Some(flag) = arg.strip_prefix("--") else {
            errors.push(ConfigError::unlocated(format!(
                "unexpected argument \"{arg}\" (flags look like --entryPoints.web.address=:80)"
            )));
            continue;
        };
        let (path, value) = match flag.split_once('=') {
            Some((p, v)) => (p, Some(v.to_owned())),
            None => (flag, None),
        };
        if path.eq_ignore_ascii_case("configFile") || path.eq_ignore_ascii_case("config") {
            // The file flag alone may take its value as the next argument.
            match value.or_else(|| iter.next().cloned()) {
                Some(v) => config_file = Some(PathBuf::from(v)),
                None => errors.push(ConfigError::unlocated(format!("--{path} needs a file"))),
            }
            continue;
        }
        let segments: Vec<&str> = path.split('.').collect();
        if segments.iter().any(|s| s.is_empty()) {
            errors.push(ConfigError::unlocated(format!("invalid flag \"{arg}\"")));
            continue;
        }
        // A bare flag is `true`: a boolean option, or a section enabled with defaults.
        let value = value.unwrap_or_else(|| "true".to_owned());
        let location = Location::whole(format!("flag --{path}"));
        insert_path(&mut tree, &segments, value, &location);
    }
    if errors.is_empty() {
        Ok(Flags { config_file, tree })
    } else {
        Err(errors)
    }
}

/// `SALLYPORT_ENTRYPOINTS_WEB_ADDRESS=:80` → `entrypoints.web.address`. Names are lower-cased:
/// schema keys match case-insensitively anyway, user-chosen names come out lower-case.
fn env_tree(env: &[(String, String)]) -> Node {
    let mut tree = empty_map(Location::whole("environment"));
    for (name, value) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if rest.eq_ignore_ascii_case("CONFIGFILE") || rest.is_empty() {
            continue;
        }
        let lower = rest.to_ascii_lowercase();
        let segments: Vec<&str> = lower.split('_').filter(|s| !s.is_empty()).collect();
        if segments.is_empty() {
            continue;
        }
        let location = Location::whole(format!("env {name}"));
        insert_path(&mut tree, &segments, value.clone(), &location);
    }
    tree
}

fn insert_path(tree: &mut Node, segments: &[&str], value: String, location: &Location) {
    let Some((first, rest)) = segments.split_first() else {
        return;
    };
    let leaf = if rest.is_empty() {
        Node::new(
            NodeKind::Scalar(value.clone(), ScalarKind::Plain),
            location.clone(),
        )
    } else {
        empty_map(location.clone())
    };
    if !matches!(tree.kind, NodeKind::Map(_)) {
        // `--api --api.insecure`: the section given as a value becomes a map.
        tree.kind = NodeKind::Map(Vec::new());
    }
    let NodeKind::Map(entries) = &mut tree.kind else {
        return;
    };
    let index = match entries
        .iter()
        .position(|(k, _)| k.name.eq_ignore_ascii_case(first))
    {
        Some(i) => {
            if rest.is_empty() {
                entries[i].1 = leaf;
            }
            i
        }
        None => {
            entries.push((
                Key {
                    name: (*first).to_owned(),
                    location: location.clone(),
                },
                leaf,
            ));
            entries.len() - 1
        }
    };
    if !rest.is_empty() {
        insert_path(&mut entries[index].1, rest, value, location);
    }
}

/// The node that defines entrypoint `name` in the merged static tree.
fn entrypoint_node<'a>(tree: &'a Node, name: &str) -> Option<&'a Node> {
    let eps = tree.get_ci("entryPoints")?;
    let NodeKind::Map(entries) = &eps.kind else {
        return None;
    };
    entries
        .iter()
        .find(|(k, _)| k.name.eq_ignore_ascii_case(name))
        .map(|(_, n)| n)
}

#[cfg(test)]
mod tests {

    #[test]
    fn an_entrypoint_without_address_is_a_located_error() {
        let dir = std::env::temp_dir().join(format!("sallyport-noaddr-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.yml");
        std::fs::write(&path, "entryPoints:\n  web:\n    reusePort: true\n").unwrap();
        let args = vec![format!("--configFile={}", path.display())];
        let errors = load_static(&args, &[]).expect_err("refused");
        assert!(
            errors[0].message.contains("address is required"),
            "{}",
            errors[0]
        );
        assert_eq!(errors[0].location.as_ref().map(|l| l.line), Some(3));
    }

    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("sallyport-static-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        dir
    }

    #[test]
    fn addresses_parse_host_port_and_protocol() {
        let a = EntryPointAddress::parse(":80").expect("valid");
        assert_eq!(
            (a.host.as_str(), a.port, a.protocol),
            ("", 80, Protocol::Tcp)
        );
        let a = EntryPointAddress::parse("127.0.0.1:53/udp").expect("valid");
        assert_eq!(a.ip(), Some(IpAddr::from([127, 0, 0, 1])));
        assert_eq!(a.protocol, Protocol::Udp);
        let a = EntryPointAddress::parse("[::1]:443/tcp").expect("valid");
        assert_eq!((a.host.as_str(), a.port), ("::1", 443));
        assert_eq!(a.to_string(), "[::1]:443");
        for bad in ["80", ":http", ":80/sctp", ":70000", "::1:80"] {
            assert!(EntryPointAddress::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prometheus_prefix_is_a_key_and_unknown_keys_are_still_refused() {
        let loaded =
            load_static(&args(&["--metrics.prometheus.prefix=traefik"]), &[]).expect("loads");
        let prometheus = loaded
            .config
            .metrics
            .and_then(|m| m.prometheus)
            .expect("set");
        assert_eq!(prometheus.prefix, "traefik");
        assert_eq!(prometheus.buckets, [0.1, 0.3, 1.2, 5.0]);
        assert_eq!(Prometheus::default().prefix, "");
        let errors = load_static(&args(&["--metrics.prometheus.prefixes=traefik"]), &[])
            .expect_err("refused");
        assert!(errors[0].message.contains("prefixes"), "{}", errors[0]);
    }

    #[test]
    fn tracing_keys_are_typed_with_traefiks_defaults() {
        let loaded = load_static(
            &args(&[
                "--tracing.sampleRate=0.25",
                "--tracing.otlp.http.endpoint=http://127.0.0.1:4318/v1/traces",
                "--tracing.otlp.http.headers.authorization=Bearer x",
            ]),
            &[],
        )
        .expect("loads");
        let tracing = loaded.config.tracing.expect("set");
        assert_eq!(tracing.service_name, "sallyport");
        assert_eq!(tracing.sample_rate, 0.25);
        let http = tracing.otlp.and_then(|o| o.http).expect("otlp.http");
        assert_eq!(http.endpoint, "http://127.0.0.1:4318/v1/traces");
        assert_eq!(http.headers["authorization"], "Bearer x");
        let errors =
            load_static(&args(&["--tracing.otlp.http.endpoints=x"]), &[]).expect_err("refused");
        assert!(errors[0].message.contains("endpoints"), "{}", errors[0]);
    }

    #[test]
    fn tracing_grpc_keys_are_typed_with_traefiks_defaults() {
        let loaded = load_static(
            &args(&[
                "--tracing.otlp.grpc",
                "--tracing.capturedRequestHeaders=X-Request-Id",
                "--tracing.addinternals=true",
            ]),
            &[],
        )
        .expect("loads");
        let tracing = loaded.config.tracing.expect("set");
        assert!(tracing.add_internals);
        assert_eq!(tracing.captured_request_headers, ["X-Request-Id"]);
        let grpc = tracing.otlp.and_then(|o| o.grpc).expect("otlp.grpc");
        assert_eq!(grpc.endpoint, "localhost:4317");
        assert!(!grpc.insecure && grpc.tls.is_none());
        let loaded = load_static(
            &args(&[
                "--tracing.otlp.grpc.endpoint=collector:4317",
                "--tracing.otlp.grpc.tls.ca=/ca.pem",
                "--tracing.otlp.grpc.tls.insecureskipverify=true",
            ]),
            &[],
        )
        .expect("loads");
        let grpc = loaded
            .config
            .tracing
            .and_then(|t| t.otlp?.grpc)
            .expect("grpc");
        assert_eq!(grpc.endpoint, "collector:4317");
        let tls = grpc.tls.expect("tls");
        assert_eq!(tls.ca, "/ca.pem");
        assert!(tls.insecure_skip_verify);
    }

    #[test]
    fn no_entrypoint_means_http_on_port_80() {
        let loaded = load_static(&args(&["--log.level=DEBUG"]), &[]).expect("loads");
        let ep = &loaded.config.entry_points["http"];
        assert_eq!(ep.address, EntryPointAddress::any(80));
        assert_eq!(loaded.config.log.level, LogLevel::Debug);
    }

    #[test]
    fn flags_set_entrypoints_with_traefik_defaults() {
        let loaded = load_static(
            &args(&[
                "--entryPoints.web.address=:8081",
                "--entrypoints.web.asdefault",
            ]),
            &[],
        )
        .expect("loads");
        let ep = &loaded.config.entry_points["web"];
        assert_eq!(ep.address.port, 8081);
        assert!(ep.as_default);
        assert_eq!(
            ep.transport.responding_timeouts.read_timeout,
            Duration::from_secs(60)
        );
        assert_eq!(
            ep.transport.responding_timeouts.idle_timeout,
            Duration::from_secs(180)
        );
        assert_eq!(
            ep.transport.life_cycle.grace_time_out,
            Duration::from_secs(10)
        );
        assert_eq!(ep.http2.max_concurrent_streams, 250);
        assert_eq!(ep.udp.timeout, Duration::from_secs(3));
        assert!(!loaded.config.entry_points.contains_key("http"));
    }

    #[test]
    fn bare_api_flag_enables_the_api_and_the_traefik_entrypoint() {
        let loaded = load_static(&args(&["--api", "--api.insecure=true"]), &[]).expect("loads");
        let api = loaded.config.api.as_ref().expect("api enabled");
        assert!(api.dashboard);
        assert!(api.insecure);
        assert_eq!(loaded.config.entry_points["traefik"].address.port, 8080);
        assert_eq!(loaded.config.default_entry_points(), vec!["http"]);
    }

    #[test]
    fn environment_variables_match_keys_case_insensitively() {
        let env = vec![
            (
                "SALLYPORT_ENTRYPOINTS_WEB_ADDRESS".to_owned(),
                ":8082".to_owned(),
            ),
            (
                "SALLYPORT_ENTRYPOINTS_WEB_PROXYPROTOCOL_TRUSTEDIPS".to_owned(),
                "10.0.0.0/8,127.0.0.1".to_owned(),
            ),
            (
                "SALLYPORT_PROVIDERS_FILE_DIRECTORY".to_owned(),
                "/etc/dyn".to_owned(),
            ),
            ("HOME".to_owned(), "/root".to_owned()),
        ];
        let loaded = load_static(&[], &env).expect("loads");
        let ep = &loaded.config.entry_points["web"];
        assert_eq!(ep.address.port, 8082);
        let trusted = &ep
            .proxy_protocol
            .as_ref()
            .expect("proxy protocol")
            .trusted_ips;
        assert!(trusted[0].contains(IpAddr::from([10, 1, 2, 3])));
        assert!(trusted[1].contains(IpAddr::from([127, 0, 0, 1])));
        let file = loaded
            .config
            .providers
            .file
            .as_ref()
            .expect("file provider");
        assert_eq!(file.directory, "/etc/dyn");
        assert!(file.watch);
    }

    #[test]
    fn file_then_environment_then_flags() {
        let dir = temp_dir("layers");
        let path = dir.join("static.yaml");
        std::fs::write(
            &path,
            "entryPoints:\n  web:\n    address: ':1000'\n  websecure:\n    address: ':1001'\nlog:\n  level: INFO\n",
        )
        .expect("write");
        let env = vec![(
            "SALLYPORT_ENTRYPOINTS_WEB_ADDRESS".to_owned(),
            ":2000".to_owned(),
        )];
        let flag = format!("--configFile={}", path.display());
        let loaded = load_static(
            &args(&[&flag, "--entryPoints.websecure.address=:3001"]),
            &env,
        )
        .expect("loads");
        std::fs::remove_dir_all(&dir).expect("cleanup");
        assert_eq!(loaded.file.as_deref(), Some(path.as_path()));
        assert_eq!(loaded.config.entry_points["web"].address.port, 2000);
        assert_eq!(loaded.config.entry_points["websecure"].address.port, 3001);
        assert_eq!(loaded.config.log.level, LogLevel::Info);
    }

    #[test]
    fn config_flag_takes_the_next_argument() {
        let dir = temp_dir("next");
        let path = dir.join("s.toml");
        std::fs::write(&path, "[entryPoints.dns]\naddress = \":53/udp\"\n").expect("write");
        let loaded =
            load_static(&args(&["--configfile", &path.display().to_string()]), &[]).expect("loads");
        std::fs::remove_dir_all(&dir).expect("cleanup");
        assert_eq!(
            loaded.config.entry_points["dns"].address.protocol,
            Protocol::Udp
        );
        assert!(loaded.config.default_entry_points().is_empty());
    }

    #[test]
    fn server_first_timeout_is_an_optional_positive_duration() {
        let loaded = load_static(
            &args(&[
                "--entryPoints.mail.address=:25",
                "--entryPoints.mail.tcp.serverFirstTimeout=500ms",
                "--entryPoints.web.address=:80",
            ]),
            &[],
        )
        .expect("loads");
        let eps = &loaded.config.entry_points;
        assert_eq!(
            eps["mail"].tcp.server_first_timeout,
            Some(Duration::from_millis(500))
        );
        assert_eq!(eps["web"].tcp.server_first_timeout, None);
        let errors = load_static(
            &args(&[
                "--entryPoints.mail.address=:25",
                "--entryPoints.mail.tcp.serverFirstTimeout=0",
            ]),
            &[],
        )
        .expect_err("zero");
        assert!(
            errors[0]
                .to_string()
                .contains("tcp.serverFirstTimeout must be greater than zero"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn unknown_static_keys_are_located_errors() {
        let dir = temp_dir("unknown");
        let path = dir.join("s.yml");
        std::fs::write(
            &path,
            "entryPoints:\n  web:\n    address: ':80'\n    adress: ':81'\n",
        )
        .expect("write");
        let errors = load_static(&args(&["--config", &path.display().to_string()]), &[])
            .expect_err("unknown key");
        std::fs::remove_dir_all(&dir).expect("cleanup");
        assert_eq!(
            errors[0].location.as_ref().map(|l| (l.line, l.column)),
            Some((4, 5))
        );
        let errors =
            load_static(&args(&["--entryPoints.web.bogus=1"]), &[]).expect_err("unknown flag");
        assert!(
            errors[0]
                .to_string()
                .starts_with("flag --entryPoints.web.bogus: "),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn as_default_entrypoints_are_the_defaults() {
        let loaded = load_static(
            &args(&[
                "--entryPoints.a.address=:1",
                "--entryPoints.b.address=:2",
                "--entryPoints.b.asDefault=true",
                "--entryPoints.u.address=:3/udp",
            ]),
            &[],
        )
        .expect("loads");
        assert_eq!(loaded.config.default_entry_points(), vec!["b"]);
    }
}
