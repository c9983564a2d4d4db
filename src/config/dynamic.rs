//! The routing (dynamic) configuration schema of Traefik v3's file provider: `http`, `tcp`,
//! `udp` and `tls`, with Traefik's key names, strict (unknown keys are errors, as in
//! Traefik's decoder).
//!
//! Values that Traefik only checks when it builds an object (strategies, TLS versions,
//! cookie `sameSite`, status ranges…) are kept as text here and checked by
//! [`super::validate`] or the compiler, so that a bad value disables one router, as in
//! Traefik, rather than rejecting the whole file. Defaults that Traefik applies when a
//! section is present are applied by `serde(default)`; where Traefik distinguishes "unset"
//! from a value, the field is an `Option` and an accessor gives the effective value.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::de::{Duration, Located};

/// A complete, qualified dynamic configuration: every name is `name@provider` and every
/// reference inside it is qualified too (except TLS option/store `default`).
#[derive(Clone, Debug, Default)]
pub struct DynamicConfig {
    pub http: HttpConfig,
    pub tcp: TcpConfig,
    pub udp: UdpConfig,
    pub tls: TlsConfig,
    /// Problems that do not stop loading (e.g. the same name defined in two files).
    pub warnings: Vec<ConfigError>,
}

#[derive(Clone, Debug, Default)]
pub struct HttpConfig {
    pub routers: BTreeMap<String, Located<HttpRouter>>,
    pub services: BTreeMap<String, Located<HttpService>>,
    pub middlewares: BTreeMap<String, Located<HttpMiddleware>>,
    pub servers_transports: BTreeMap<String, Located<ServersTransport>>,
}

#[derive(Clone, Debug, Default)]
pub struct TcpConfig {
    pub routers: BTreeMap<String, Located<TcpRouter>>,
    pub services: BTreeMap<String, Located<TcpService>>,
    pub middlewares: BTreeMap<String, Located<TcpMiddleware>>,
    pub servers_transports: BTreeMap<String, Located<TcpServersTransport>>,
}

#[derive(Clone, Debug, Default)]
pub struct UdpConfig {
    pub routers: BTreeMap<String, Located<UdpRouter>>,
    pub services: BTreeMap<String, Located<UdpService>>,
}

#[derive(Clone, Debug, Default)]
pub struct TlsConfig {
    pub certificates: Vec<Located<CertAndStores>>,
    pub options: BTreeMap<String, Located<TlsOptions>>,
    pub stores: BTreeMap<String, Located<TlsStore>>,
}

/// The name of the TLS option and store that are never qualified with a provider.
pub const DEFAULT_TLS_NAME: &str = "default";

// ---------------------------------------------------------------------------------------
// HTTP routers

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct HttpRouter {
    pub entry_points: Vec<String>,
    pub middlewares: Vec<Located<String>>,
    pub service: Located<String>,
    pub rule: Located<String>,
    pub parent_refs: Vec<Located<String>>,
    /// Deprecated in v3 (`v2`/`v3`); kept so v2-era files load.
    pub rule_syntax: String,
    /// 0 means "length of the rule".
    pub priority: i64,
    pub tls: Option<RouterTls>,
    pub observability: Option<RouterObservability>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct RouterTls {
    /// TLS option name; empty means `default`.
    pub options: Located<String>,
    pub cert_resolver: String,
    pub domains: Vec<Domain>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Domain {
    pub main: String,
    pub sans: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct RouterObservability {
    pub access_logs: Option<bool>,
    pub metrics: Option<bool>,
    pub tracing: Option<bool>,
    /// `minimal` (default) or `detailed`.
    pub trace_verbosity: String,
}

// ---------------------------------------------------------------------------------------
// HTTP services

/// Exactly one of the service types must be set (checked by validation, as Traefik does
/// when it builds the service).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct HttpService {
    /// Service-level middlewares (applied before the service).
    pub middlewares: Vec<Located<String>>,
    pub load_balancer: Option<ServersLoadBalancer>,
    pub weighted: Option<WeightedRoundRobin>,
    pub mirroring: Option<Mirroring>,
    pub failover: Option<Failover>,
    pub highest_random_weight: Option<HighestRandomWeight>,
}

impl HttpService {
    /// The names of the types that are set, in schema order.
    pub fn kinds(&self) -> Vec<&'static str> {
        let mut kinds = Vec::new();
        if self.load_balancer.is_some() {
            kinds.push("loadBalancer");
        }
        if self.weighted.is_some() {
            kinds.push("weighted");
        }
        if self.mirroring.is_some() {
            kinds.push("mirroring");
        }
        if self.failover.is_some() {
            kinds.push("failover");
        }
        if self.highest_random_weight.is_some() {
            kinds.push("highestRandomWeight");
        }
        kinds
    }
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ServersLoadBalancer {
    pub sticky: Option<Sticky>,
    pub servers: Vec<Server>,
    /// `wrr` (default), `p2c`, `hrw`, `leasttime`.
    pub strategy: Located<String>,
    pub health_check: Option<ServerHealthCheck>,
    pub passive_health_check: Option<PassiveHealthCheck>,
    /// Default true.
    pub pass_host_header: Option<bool>,
    pub response_forwarding: Option<ResponseForwarding>,
    /// Empty means the static `serversTransport` (`default@internal`).
    pub servers_transport: Located<String>,
}

impl ServersLoadBalancer {
    pub fn pass_host_header(&self) -> bool {
        self.pass_host_header.unwrap_or(true)
    }
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Server {
    pub url: Located<String>,
    /// Default 1; ≤ 0 means the server is not used.
    pub weight: Option<i64>,
    pub preserve_path: bool,
    pub fenced: bool,
}

impl Server {
    pub fn weight(&self) -> i64 {
        self.weight.unwrap_or(1)
    }
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Sticky {
    pub cookie: Option<Cookie>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Cookie {
    /// Empty: derived from the service name, as Traefik does.
    pub name: String,
    pub secure: bool,
    pub http_only: bool,
    /// `none`, `lax`, `strict` or empty.
    pub same_site: String,
    pub max_age: i64,
    /// Default `/`.
    pub path: Option<String>,
    pub domain: String,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ServerHealthCheck {
    pub scheme: String,
    /// `http` (default) or `grpc`.
    pub mode: String,
    pub path: String,
    pub method: String,
    /// 0 means any 2xx/3xx.
    pub status: i64,
    pub port: i64,
    pub interval: Duration,
    /// Defaults to `interval`.
    pub unhealthy_interval: Option<Duration>,
    pub timeout: Duration,
    pub hostname: String,
    /// Default true.
    pub follow_redirects: Option<bool>,
    pub headers: BTreeMap<String, String>,
}

impl Default for ServerHealthCheck {
    fn default() -> Self {
        ServerHealthCheck {
            scheme: String::new(),
            mode: "http".to_owned(),
            path: String::new(),
            method: String::new(),
            status: 0,
            port: 0,
            interval: Duration::from_secs(30),
            unhealthy_interval: None,
            timeout: Duration::from_secs(5),
            hostname: String::new(),
            follow_redirects: None,
            headers: BTreeMap::new(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct PassiveHealthCheck {
    pub failure_window: Duration,
    pub max_failed_attempts: i64,
}

impl Default for PassiveHealthCheck {
    fn default() -> Self {
        PassiveHealthCheck {
            failure_window: Duration::from_secs(10),
            max_failed_attempts: 1,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ResponseForwarding {
    /// Negative: flush after every write.
    pub flush_interval: Duration,
}

impl Default for ResponseForwarding {
    fn default() -> Self {
        ResponseForwarding {
            flush_interval: Duration::from_millis(100),
        }
    }
}

/// `healthCheck: {}` on weighted/mirroring/failover/hrw services: turns on status
/// propagation from the children. It has no options.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EmptyHealthCheck {}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct WeightedRoundRobin {
    pub services: Vec<WeightedService>,
    pub sticky: Option<Sticky>,
    pub health_check: Option<EmptyHealthCheck>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct WeightedService {
    pub name: Located<String>,
    /// Default 1.
    pub weight: Option<i64>,
}

impl WeightedService {
    pub fn weight(&self) -> i64 {
        self.weight.unwrap_or(1)
    }
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Mirroring {
    pub service: Located<String>,
    /// Default true.
    pub mirror_body: Option<bool>,
    /// Default -1 (unlimited).
    pub max_body_size: Option<i64>,
    pub mirrors: Vec<MirrorService>,
    pub health_check: Option<EmptyHealthCheck>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct MirrorService {
    pub name: Located<String>,
    pub percent: i64,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Failover {
    pub service: Located<String>,
    pub fallback: Located<String>,
    pub health_check: Option<EmptyHealthCheck>,
    pub errors: Option<FailoverErrors>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct FailoverErrors {
    /// Default -1 (unlimited).
    pub max_request_body_bytes: Option<i64>,
    pub status: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct HighestRandomWeight {
    pub services: Vec<WeightedService>,
    pub health_check: Option<EmptyHealthCheck>,
}

// ---------------------------------------------------------------------------------------
// HTTP servers transports

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ServersTransport {
    pub server_name: String,
    pub insecure_skip_verify: bool,
    /// File paths or inline PEM.
    #[serde(rename = "rootCAs")]
    pub root_cas: Vec<String>,
    pub certificates: Vec<Certificate>,
    pub cipher_suites: Vec<String>,
    pub min_version: String,
    pub max_version: String,
    /// 0: default (2); negative disables reuse.
    pub max_idle_conns_per_host: i64,
    pub forwarding_timeouts: Option<ForwardingTimeouts>,
    #[serde(rename = "disableHTTP2")]
    pub disable_http2: bool,
    #[serde(rename = "peerCertURI")]
    pub peer_cert_uri: String,
    #[serde(rename = "peerCertSANs")]
    pub peer_cert_sans: Vec<PeerCertSan>,
    pub spiffe: Option<Spiffe>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Certificate {
    pub cert_file: String,
    pub key_file: String,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct PeerCertSan {
    /// `URI` or `DNSName`.
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Spiffe {
    pub ids: Vec<String>,
    pub trust_domain: String,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ForwardingTimeouts {
    pub dial_timeout: Duration,
    pub response_header_timeout: Duration,
    pub idle_conn_timeout: Duration,
    pub read_idle_timeout: Duration,
    pub ping_timeout: Duration,
}

impl Default for ForwardingTimeouts {
    fn default() -> Self {
        ForwardingTimeouts {
            dial_timeout: Duration::from_secs(30),
            response_header_timeout: Duration::ZERO,
            idle_conn_timeout: Duration::from_secs(90),
            read_idle_timeout: Duration::ZERO,
            ping_timeout: Duration::from_secs(15),
        }
    }
}

// ---------------------------------------------------------------------------------------
// HTTP middlewares

/// One middleware: exactly one type must be set (checked when a router uses it).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct HttpMiddleware {
    pub add_prefix: Option<AddPrefix>,
    pub strip_prefix: Option<StripPrefix>,
    pub strip_prefix_regex: Option<StripPrefixRegex>,
    pub replace_path: Option<ReplacePath>,
    pub replace_path_regex: Option<ReplacePathRegex>,
    pub chain: Option<Chain>,
    /// Deprecated alias of `ipAllowList` (no `rejectStatusCode`).
    #[serde(rename = "ipWhiteList")]
    pub ip_white_list: Option<IpWhiteList>,
    #[serde(rename = "ipAllowList")]
    pub ip_allow_list: Option<IpAllowList>,
    pub headers: Option<Headers>,
    pub encoded_characters: Option<EncodedCharacters>,
    pub errors: Option<ErrorPage>,
    pub rate_limit: Option<RateLimit>,
    pub redirect_regex: Option<RedirectRegex>,
    pub redirect_scheme: Option<RedirectScheme>,
    pub basic_auth: Option<BasicAuth>,
    pub digest_auth: Option<DigestAuth>,
    pub forward_auth: Option<ForwardAuth>,
    pub in_flight_req: Option<InFlightReq>,
    pub buffering: Option<Buffering>,
    pub circuit_breaker: Option<CircuitBreaker>,
    pub compress: Option<Compress>,
    #[serde(rename = "passTLSClientCert")]
    pub pass_tls_client_cert: Option<PassTlsClientCert>,
    pub retry: Option<Retry>,
    pub content_type: Option<ContentType>,
    pub grpc_web: Option<GrpcWeb>,
    /// Plugin name → free-form configuration.
    pub plugin: Option<BTreeMap<String, serde_json::Value>>,
}

impl HttpMiddleware {
    /// The names of the types that are set, in schema order.
    pub fn kinds(&self) -> Vec<&'static str> {
        let set = [
            ("addPrefix", self.add_prefix.is_some()),
            ("stripPrefix", self.strip_prefix.is_some()),
            ("stripPrefixRegex", self.strip_prefix_regex.is_some()),
            ("replacePath", self.replace_path.is_some()),
            ("replacePathRegex", self.replace_path_regex.is_some()),
            ("chain", self.chain.is_some()),
            ("ipWhiteList", self.ip_white_list.is_some()),
            ("ipAllowList", self.ip_allow_list.is_some()),
            ("headers", self.headers.is_some()),
            ("encodedCharacters", self.encoded_characters.is_some()),
            ("errors", self.errors.is_some()),
            ("rateLimit", self.rate_limit.is_some()),
            ("redirectRegex", self.redirect_regex.is_some()),
            ("redirectScheme", self.redirect_scheme.is_some()),
            ("basicAuth", self.basic_auth.is_some()),
            ("digestAuth", self.digest_auth.is_some()),
            ("forwardAuth", self.forward_auth.is_some()),
            ("inFlightReq", self.in_flight_req.is_some()),
            ("buffering", self.buffering.is_some()),
            ("circuitBreaker", self.circuit_breaker.is_some()),
            ("compress", self.compress.is_some()),
            ("passTLSClientCert", self.pass_tls_client_cert.is_some()),
            ("retry", self.retry.is_some()),
            ("contentType", self.content_type.is_some()),
            ("grpcWeb", self.grpc_web.is_some()),
            ("plugin", self.plugin.is_some()),
        ];
        set.into_iter()
            .filter(|(_, on)| *on)
            .map(|(name, _)| name)
            .collect()
    }
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct AddPrefix {
    pub prefix: String,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct StripPrefix {
    pub prefixes: Vec<String>,
    /// Deprecated.
    pub force_slash: Option<bool>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct StripPrefixRegex {
    pub regex: Vec<Located<String>>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ReplacePath {
    pub path: String,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ReplacePathRegex {
    pub regex: Located<String>,
    pub replacement: String,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Chain {
    pub middlewares: Vec<Located<String>>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct IpStrategy {
    /// N-th `X-Forwarded-For` entry from the right; 0 = not used.
    pub depth: i64,
    #[serde(rename = "excludedIPs")]
    pub excluded_ips: Vec<String>,
    pub ipv6_subnet: Option<i64>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct IpWhiteList {
    pub source_range: Vec<Located<String>>,
    pub ip_strategy: Option<IpStrategy>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct IpAllowList {
    pub source_range: Vec<Located<String>>,
    pub ip_strategy: Option<IpStrategy>,
    /// 0 means 403.
    pub reject_status_code: i64,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Headers {
    pub custom_request_headers: BTreeMap<String, String>,
    pub custom_response_headers: BTreeMap<String, String>,
    pub access_control_allow_credentials: bool,
    pub access_control_allow_headers: Vec<String>,
    pub access_control_allow_methods: Vec<String>,
    pub access_control_allow_origin_list: Vec<String>,
    pub access_control_allow_origin_list_regex: Vec<Located<String>>,
    pub access_control_expose_headers: Vec<String>,
    pub access_control_max_age: Option<i64>,
    pub add_vary_header: bool,
    pub allowed_hosts: Vec<String>,
    pub hosts_proxy_headers: Vec<String>,
    pub ssl_proxy_headers: BTreeMap<String, String>,
    pub sts_seconds: Option<i64>,
    pub sts_include_subdomains: bool,
    pub sts_preload: bool,
    #[serde(rename = "forceSTSHeader")]
    pub force_sts_header: bool,
    pub frame_deny: bool,
    pub custom_frame_options_value: String,
    pub content_type_nosniff: bool,
    pub browser_xss_filter: bool,
    #[serde(rename = "customBrowserXSSValue")]
    pub custom_browser_xss_value: String,
    pub content_security_policy: String,
    pub content_security_policy_report_only: String,
    pub public_key: String,
    pub referrer_policy: String,
    pub permissions_policy: String,
    pub is_development: bool,
    /// Deprecated (use `permissionsPolicy`).
    pub feature_policy: Option<String>,
    /// Deprecated (use a `redirectScheme` middleware).
    pub ssl_redirect: Option<bool>,
    /// Deprecated.
    pub ssl_temporary_redirect: Option<bool>,
    /// Deprecated.
    pub ssl_host: Option<String>,
    /// Deprecated.
    pub ssl_force_host: Option<bool>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct EncodedCharacters {
    pub allow_encoded_slash: bool,
    pub allow_encoded_back_slash: bool,
    pub allow_encoded_null_character: bool,
    pub allow_encoded_semicolon: bool,
    pub allow_encoded_percent: bool,
    pub allow_encoded_question_mark: bool,
    pub allow_encoded_hash: bool,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ErrorPage {
    /// Status codes or ranges (`500-599`).
    pub status: Vec<String>,
    pub status_rewrites: BTreeMap<String, i64>,
    pub service: Located<String>,
    pub query: String,
    pub error_request_headers: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct SourceCriterion {
    pub ip_strategy: Option<IpStrategy>,
    pub request_header_name: String,
    pub request_host: bool,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct RateLimit {
    /// Requests per `period`; 0 = no limit.
    pub average: i64,
    pub period: Duration,
    pub burst: i64,
    pub source_criterion: Option<SourceCriterion>,
    pub redis: Option<Redis>,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            average: 0,
            period: Duration::from_secs(1),
            burst: 1,
            source_criterion: None,
            redis: None,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Redis {
    pub endpoints: Vec<String>,
    pub tls: Option<ClientTls>,
    pub username: String,
    pub password: String,
    pub db: i64,
    pub pool_size: i64,
    pub min_idle_conns: i64,
    pub max_active_conns: i64,
    pub read_timeout: Option<Duration>,
    pub write_timeout: Option<Duration>,
    pub dial_timeout: Option<Duration>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ClientTls {
    pub ca: String,
    pub cert: String,
    pub key: String,
    pub insecure_skip_verify: bool,
    pub ca_optional: Option<bool>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct RedirectRegex {
    pub regex: Located<String>,
    pub replacement: String,
    pub permanent: bool,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct RedirectScheme {
    pub scheme: String,
    pub port: String,
    pub permanent: bool,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct BasicAuth {
    /// `user:hash` (htpasswd).
    pub users: Vec<String>,
    pub users_file: Located<String>,
    /// Default `traefik`.
    pub realm: String,
    pub remove_header: bool,
    pub header_field: String,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct DigestAuth {
    /// `user:realm:hash`.
    pub users: Vec<String>,
    pub users_file: Located<String>,
    pub remove_header: bool,
    pub realm: String,
    pub header_field: String,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ForwardAuth {
    pub address: Located<String>,
    pub tls: Option<ClientTls>,
    pub trust_forward_header: Option<bool>,
    pub auth_response_headers: Vec<String>,
    pub auth_response_headers_regex: Located<String>,
    pub auth_request_headers: Vec<String>,
    pub add_auth_cookies_to_response: Vec<String>,
    pub header_field: String,
    pub forward_body: bool,
    /// Default -1 (unlimited).
    pub max_body_size: Option<i64>,
    pub max_response_body_size: Option<i64>,
    pub preserve_location_header: bool,
    pub preserve_request_method: bool,
    /// Where a 401 from the auth server sends the client instead.
    #[serde(rename = "authSigninURL")]
    pub auth_signin_url: String,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct InFlightReq {
    pub amount: i64,
    pub source_criterion: Option<SourceCriterion>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Buffering {
    /// 0: no limit.
    pub max_request_body_bytes: i64,
    pub mem_request_body_bytes: i64,
    /// 0: no limit.
    pub max_response_body_bytes: i64,
    pub mem_response_body_bytes: i64,
    pub retry_expression: String,
    pub disable_request_buffer: bool,
    pub disable_response_buffer: bool,
}

impl Default for Buffering {
    fn default() -> Self {
        Buffering {
            max_request_body_bytes: 0,
            mem_request_body_bytes: 1 << 20,
            max_response_body_bytes: 0,
            mem_response_body_bytes: 1 << 20,
            retry_expression: String::new(),
            disable_request_buffer: false,
            disable_response_buffer: false,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct CircuitBreaker {
    pub expression: Located<String>,
    pub check_period: Duration,
    pub fallback_duration: Duration,
    pub recovery_duration: Duration,
    pub response_code: i64,
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        CircuitBreaker {
            expression: Located::default(),
            check_period: Duration::from_millis(100),
            fallback_duration: Duration::from_secs(10),
            recovery_duration: Duration::from_secs(10),
            response_code: 503,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Compress {
    pub excluded_content_types: Vec<String>,
    pub included_content_types: Vec<String>,
    pub min_response_body_bytes: i64,
    pub encodings: Vec<String>,
    pub default_encoding: String,
}

impl Default for Compress {
    fn default() -> Self {
        Compress {
            excluded_content_types: Vec::new(),
            included_content_types: Vec::new(),
            min_response_body_bytes: 1024,
            encodings: vec!["gzip".to_owned(), "br".to_owned(), "zstd".to_owned()],
            default_encoding: String::new(),
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct PassTlsClientCert {
    pub pem: bool,
    pub info: Option<TlsClientCertInfo>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct TlsClientCertInfo {
    pub not_after: bool,
    pub not_before: bool,
    pub sans: bool,
    pub serial_number: bool,
    pub subject: Option<DistinguishedNameInfo>,
    pub issuer: Option<DistinguishedNameInfo>,
}

/// Subject or issuer fields to forward (`organizationalUnit` exists for subjects only in
/// Traefik; accepted for both here).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct DistinguishedNameInfo {
    pub country: bool,
    pub province: bool,
    pub locality: bool,
    pub organization: bool,
    pub organizational_unit: bool,
    pub common_name: bool,
    pub serial_number: bool,
    pub domain_component: bool,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Retry {
    pub attempts: i64,
    pub timeout: Duration,
    pub initial_interval: Duration,
    /// Default 2 MiB.
    pub max_request_body_bytes: Option<i64>,
    pub status: Vec<String>,
    pub disable_retry_on_network_error: bool,
    pub retry_non_idempotent_method: bool,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ContentType {
    pub auto_detect: Option<bool>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct GrpcWeb {
    pub allow_origins: Vec<String>,
}

// ---------------------------------------------------------------------------------------
// TCP

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct TcpRouter {
    pub entry_points: Vec<String>,
    pub middlewares: Vec<Located<String>>,
    pub service: Located<String>,
    pub rule: Located<String>,
    pub rule_syntax: String,
    /// 0 means "length of the rule" (`HostSNI(`*`)` alone: -1).
    pub priority: i64,
    pub tls: Option<TcpRouterTls>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct TcpRouterTls {
    pub passthrough: bool,
    pub options: Located<String>,
    pub cert_resolver: String,
    pub domains: Vec<Domain>,
    /// Extension: the router takes only connections that asked for TLS inside this
    /// protocol (STARTTLS), and speaks it to the backend in passthrough mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub starttls: Option<Starttls>,
}

/// `tls.starttls` of a TCP router: the protocol in which the client asks for TLS.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Starttls {
    Postgres,
    Smtp,
    Imap,
    Pop3,
    Mysql,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct TcpService {
    pub load_balancer: Option<TcpLoadBalancer>,
    pub weighted: Option<TcpWeighted>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct TcpLoadBalancer {
    pub servers: Vec<TcpServer>,
    pub servers_transport: Located<String>,
    /// Deprecated: use a `serversTransport` with `proxyProtocol`.
    pub proxy_protocol: Option<ProxyProtocol>,
    /// Deprecated, in milliseconds: use a `serversTransport` with `terminationDelay`.
    pub termination_delay: Option<i64>,
    pub health_check: Option<TcpHealthCheck>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct TcpServer {
    /// `host:port`.
    pub address: Located<String>,
    pub tls: bool,
}

/// The PROXY protocol header sent to backends.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ProxyProtocol {
    /// 1 or 2; an empty section means 2.
    pub version: i64,
}

impl Default for ProxyProtocol {
    fn default() -> Self {
        ProxyProtocol { version: 2 }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct TcpHealthCheck {
    pub port: i64,
    pub send: String,
    pub expect: String,
    pub interval: Duration,
    /// Defaults to `interval`.
    pub unhealthy_interval: Option<Duration>,
    pub timeout: Duration,
}

impl Default for TcpHealthCheck {
    fn default() -> Self {
        TcpHealthCheck {
            port: 0,
            send: String::new(),
            expect: String::new(),
            interval: Duration::from_secs(30),
            unhealthy_interval: None,
            timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct TcpWeighted {
    pub services: Vec<WeightedService>,
    pub health_check: Option<EmptyHealthCheck>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct TcpMiddleware {
    pub in_flight_conn: Option<TcpInFlightConn>,
    #[serde(rename = "ipWhiteList")]
    pub ip_white_list: Option<TcpIpAllowList>,
    #[serde(rename = "ipAllowList")]
    pub ip_allow_list: Option<TcpIpAllowList>,
}

impl TcpMiddleware {
    pub fn kinds(&self) -> Vec<&'static str> {
        let set = [
            ("inFlightConn", self.in_flight_conn.is_some()),
            ("ipWhiteList", self.ip_white_list.is_some()),
            ("ipAllowList", self.ip_allow_list.is_some()),
        ];
        set.into_iter()
            .filter(|(_, on)| *on)
            .map(|(name, _)| name)
            .collect()
    }
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct TcpInFlightConn {
    pub amount: i64,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct TcpIpAllowList {
    pub source_range: Vec<Located<String>>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct TcpServersTransport {
    /// Negative disables keep-alive probes.
    pub dial_keep_alive: Duration,
    pub dial_timeout: Duration,
    pub proxy_protocol: Option<ProxyProtocol>,
    /// Negative: never close the other side after a half-close.
    pub termination_delay: Duration,
    /// How to speak TLS to servers that have `tls: true` (the server's flag turns TLS
    /// on, as in Traefik; this section only configures it).
    pub tls: Option<TcpClientTls>,
}

impl Default for TcpServersTransport {
    fn default() -> Self {
        TcpServersTransport {
            dial_keep_alive: Duration::from_secs(15),
            dial_timeout: Duration::from_secs(30),
            proxy_protocol: None,
            termination_delay: Duration::from_millis(100),
            tls: None,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct TcpClientTls {
    pub server_name: String,
    pub insecure_skip_verify: bool,
    #[serde(rename = "rootCAs")]
    pub root_cas: Vec<String>,
    pub certificates: Vec<Certificate>,
    #[serde(rename = "peerCertURI")]
    pub peer_cert_uri: String,
    #[serde(rename = "peerCertSANs")]
    pub peer_cert_sans: Vec<PeerCertSan>,
    pub spiffe: Option<Spiffe>,
}

// ---------------------------------------------------------------------------------------
// UDP

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct UdpRouter {
    pub entry_points: Vec<String>,
    pub service: Located<String>,
    /// Extension: `ClientIP` matchers (Traefik's UDP routers have no rule). A router with
    /// a rule is tried before the entrypoint's router without one.
    pub rule: Located<String>,
    /// Extension: the order among routers with a rule (0: the rule's length).
    pub priority: i64,
    /// Extension: `tls: {passthrough: true}` makes a QUIC passthrough router, whose rule
    /// (`HostSNI`, `HostSNIRegexp`, `ALPN`, `ClientIP`) is read on the ClientHello of a
    /// QUIC flow's Initial packets.
    pub tls: Option<UdpRouterTls>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct UdpRouterTls {
    pub passthrough: bool,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct UdpService {
    pub load_balancer: Option<UdpLoadBalancer>,
    pub weighted: Option<UdpWeighted>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct UdpLoadBalancer {
    pub servers: Vec<UdpServer>,
    /// Extension: `wrr` (the default, Traefik's behaviour) or `hrw` (client-IP affinity).
    pub strategy: Located<String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct UdpServer {
    pub address: Located<String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct UdpWeighted {
    pub services: Vec<WeightedService>,
}

// ---------------------------------------------------------------------------------------
// TLS

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct CertAndStores {
    /// File path or inline PEM.
    pub cert_file: Located<String>,
    pub key_file: Located<String>,
    pub stores: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct TlsOptions {
    /// `VersionTLS10` … `VersionTLS13`; empty: TLS 1.2 for `default`.
    pub min_version: Located<String>,
    pub max_version: Located<String>,
    pub cipher_suites: Vec<Located<String>>,
    pub curve_preferences: Vec<Located<String>>,
    pub client_auth: ClientAuth,
    pub sni_strict: bool,
    /// Empty: `h2`, `http/1.1`, `acme-tls/1`.
    pub alpn_protocols: Vec<String>,
    pub disable_session_tickets: bool,
    /// Deprecated and ignored (Go ignores it since 1.18).
    pub prefer_server_cipher_suites: Option<bool>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ClientAuth {
    /// File paths or inline PEM.
    pub ca_files: Vec<Located<String>>,
    /// `NoClientCert`, `RequestClientCert`, `RequireAnyClientCert`,
    /// `VerifyClientCertIfGiven`, `RequireAndVerifyClientCert`; empty: derived from
    /// `caFiles`.
    pub client_auth_type: Located<String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct TlsStore {
    pub default_certificate: Option<Certificate>,
    pub default_generated_cert: Option<GeneratedCert>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct GeneratedCert {
    pub resolver: String,
    pub domain: Option<Domain>,
}
