//! Prometheus metrics: the registry of every family Sallyport exports, with Traefik's names and
//! labels for HTTP (`<prefix>_entrypoint_requests_total{code,method,protocol,entrypoint}`...),
//! plus Sallyport's own TCP and UDP families, and the methods the runtime records through.
//!
//! HTTP requests arrive as [`l7::observe::RequestRecord`]s ([`Metrics`] is a request
//! observer); connections, sessions, reloads, server health and certificates are recorded by
//! the runtime calling the methods below. Serving the scrape is [`MetricsHandler`]'s job.
//! Every label value is bounded: no paths, no client addresses, unknown methods folded into
//! one value. Recording touches only the client crate's atomics and its per-family read lock
//! (a write lock only the first time a label set is seen), so a scrape never holds up traffic.
//!
//! The families are in `docs/metrics.md`.

mod scrape;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use foldhash::fast::RandomState;
use http::Method;
use l4::observe::{ConnObserver, ConnRecord, Transport as L4Transport};
use l7::observe::{RequestObserver, RequestRecord, TlsParams};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::config::static_cfg::Prometheus;

pub use scrape::MetricsHandler;

/// The prefix when the configuration leaves it empty.
pub const DEFAULT_PREFIX: &str = "sallyport";

/// Buckets of `<prefix>_tcp_connection_duration_seconds`: connections last from milliseconds
/// (a health probe) to hours (a database pool), far beyond the request buckets.
const TCP_DURATION_BUCKETS: [f64; 8] = [0.1, 1.0, 10.0, 60.0, 300.0, 1800.0, 3600.0, 21600.0];

/// A configuration the metrics cannot be built from.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MetricsError {
    #[error(
        "metrics.prometheus.prefix {0:?}: a metric name prefix is letters, digits and `_`, not starting with a digit"
    )]
    InvalidPrefix(String),
    #[error("metrics.prometheus.buckets {0:?}: bucket bounds must be finite and increasing")]
    InvalidBuckets(Vec<f64>),
    #[error(
        "metrics.prometheus.headerLabels.{0}: a label name is letters, digits and `_`, not starting with a digit or `__`, and not one of the labels Sallyport sets"
    )]
    InvalidHeaderLabel(String),
    #[error("metrics.prometheus.headerLabels.{label}: {header:?} is not a header name")]
    InvalidHeaderName { label: String, header: String },
}

/// Which way bytes or datagrams went, as the `direction` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Received from the client, sent on to the server: `from_client`.
    FromClient,
    /// Received from the server, sent back to the client: `to_client`.
    ToClient,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::FromClient => "from_client",
            Direction::ToClient => "to_client",
        }
    }
}

/// The `protocol` label of `<prefix>_open_connections`: TCP connections routed by TCP
/// routers, and UDP sessions.
fn transport_label(transport: L4Transport) -> &'static str {
    match transport {
        L4Transport::Tcp => "TCP",
        L4Transport::Udp => "UDP",
    }
}

// Label sets, in Traefik's label order.

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EntrypointLabels {
    code: u16,
    method: &'static str,
    protocol: &'static str,
    entrypoint: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouterLabels {
    code: u16,
    method: &'static str,
    protocol: &'static str,
    router: Arc<str>,
    service: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    code: u16,
    method: &'static str,
    protocol: &'static str,
    service: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EntrypointTlsLabels {
    tls_version: &'static str,
    tls_cipher: &'static str,
    entrypoint: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouterTlsLabels {
    tls_version: &'static str,
    tls_cipher: &'static str,
    router: Arc<str>,
    service: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceTlsLabels {
    tls_version: &'static str,
    tls_cipher: &'static str,
    service: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpenConnectionLabels {
    entrypoint: Arc<str>,
    protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceOnlyLabels {
    service: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerLabels {
    service: Arc<str>,
    url: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertLabels {
    cn: String,
    serial: String,
    sans: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EntrypointOnlyLabels {
    entrypoint: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AcceptErrorLabels {
    entrypoint: Arc<str>,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct L4RouteLabels {
    entrypoint: Arc<str>,
    router: Arc<str>,
    service: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct L4DirectionLabels {
    entrypoint: Arc<str>,
    router: Arc<str>,
    service: Arc<str>,
    direction: &'static str,
}

/// Makes the histograms of a family with the configured bounds.
#[derive(Clone, Debug)]
struct Buckets(Arc<[f64]>);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
}

/// The label values `headerLabels` takes from a request's headers, in the order of
/// [`HeaderLabels::names`]; empty without `headerLabels`.
#[derive(Clone, Debug, Default)]
struct HeaderValues {
    names: Arc<[String]>,
    values: Box<[String]>,
}

// The names are the same for every value set of a registry: only the values tell sets apart.
impl PartialEq for HeaderValues {
    fn eq(&self, other: &Self) -> bool {
        self.values == other.values
    }
}

impl Eq for HeaderValues {}

impl std::hash::Hash for HeaderValues {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.values.hash(state);
    }
}

/// A scope's labels and, on `*_requests_total`, the `headerLabels`.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct WithHeaders<L> {
    labels: L,
    headers: HeaderValues,
}

impl<L: EncodeLabelSet> EncodeLabelSet for WithHeaders<L> {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelSetEncoder,
    ) -> Result<(), std::fmt::Error> {
        self.labels.encode(encoder)?;
        for (name, value) in self.headers.names.iter().zip(self.headers.values.iter()) {
            prometheus_client::encoding::EncodeLabel::encode(
                &(name.as_str(), value.as_str()),
                encoder.encode_label(),
            )?;
        }
        Ok(())
    }
}

/// `metrics.prometheus.headerLabels`: label name → request header.
#[derive(Debug, Default)]
struct HeaderLabels {
    names: Arc<[String]>,
    headers: Vec<http::HeaderName>,
    /// The headers records must carry for them (`Host` is carried anyway).
    wanted: Option<l7::observe::WantedHeaders>,
}

impl HeaderLabels {
    /// The label values of a request: a header's first value, `Host` the request's
    /// authority; empty when absent (or not text).
    fn values(&self, record: &RequestRecord) -> HeaderValues {
        if self.headers.is_empty() {
            // No allocation: an empty name list is shared and an empty box allocates nothing.
            return HeaderValues {
                names: self.names.clone(),
                values: Box::default(),
            };
        }
        let values = self
            .headers
            .iter()
            .map(|name| {
                let value = if name == http::header::HOST {
                    record.host.as_ref()
                } else {
                    record.headers.as_ref().and_then(|h| h.get(name))
                };
                value.and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
            })
            .collect();
        HeaderValues {
            names: self.names.clone(),
            values,
        }
    }
}

/// The series of one label set in a scope's four request families, shared with them.
#[derive(Clone, Debug)]
struct Handles {
    requests: Counter,
    duration: Histogram,
    request_bytes: Counter,
    response_bytes: Counter,
}

/// The value `seen` holds for `key`, found under the read lock (the common case), or made
/// by `make` and added under the write lock.
fn seen_or_made<K, V>(
    seen: &std::sync::RwLock<HashMap<K, V, RandomState>>,
    key: K,
    make: impl FnOnce(&K) -> V,
) -> V
where
    K: std::hash::Hash + Eq,
    V: Clone,
{
    if let Some(value) = seen.read().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return value.clone();
    }
    let value = make(&key);
    seen.write()
        .unwrap_or_else(|e| e.into_inner())
        .entry(key)
        .or_insert(value)
        .clone()
}

/// The series one request is counted in, in one scope.
#[derive(Clone, Debug)]
struct CountedIn {
    handles: Handles,
    tls: Option<Counter>,
}

impl CountedIn {
    fn count(&self, record: &RequestRecord) {
        self.handles.requests.inc();
        self.handles.duration.observe(record.duration.as_secs_f64());
        self.handles.request_bytes.inc_by(record.request_bytes);
        self.handles.response_bytes.inc_by(record.response_bytes);
        if let Some(tls) = &self.tls {
            tls.inc();
        }
    }
}

/// What the last request a thread counted was counted in, with the identity of its labels.
/// Under load most requests are like the one before them (same entrypoint, router, status,
/// method): those are counted without a label set being built, hashed or compared.
///
/// Names are compared by address: a record's names are the snapshot's own `Arc`s, shared by
/// all its requests, and holding them here keeps an address from being reused for another
/// name. A reload makes new ones, so its requests miss once and are looked up afresh.
struct LastSeries {
    /// [`Metrics::id`]: which registry the series belong to.
    owner: u64,
    entrypoint: Arc<str>,
    router: Option<Arc<str>>,
    service: Option<Arc<str>>,
    code: u16,
    method: &'static str,
    protocol: &'static str,
    tls: Option<(&'static str, &'static str)>,
    counted: Vec<CountedIn>,
}

impl LastSeries {
    fn same_as(&self, owner: u64, record: &RequestRecord, method: &'static str) -> bool {
        fn same(a: &Option<Arc<str>>, b: &Option<Arc<str>>) -> bool {
            match (a, b) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
        }
        self.owner == owner
            && Arc::ptr_eq(&self.entrypoint, &record.entrypoint)
            && same(&self.router, &record.router)
            && same(&self.service, &record.service)
            && self.code == record.status.as_u16()
            && std::ptr::eq(self.method, method)
            && std::ptr::eq(self.protocol, record.protocol.as_str())
            && self.tls == record.tls.map(tls_labels)
    }
}

thread_local! {
    static LAST_SERIES: std::cell::RefCell<Option<LastSeries>> =
        const { std::cell::RefCell::new(None) };
}

/// The four request families of one scope (`entrypoint`, `router` or `service`) and its TLS
/// counter.
#[derive(Debug)]
struct RequestFamilies<L, T> {
    requests: Family<WithHeaders<L>, Counter>,
    duration: Family<L, Histogram, Buckets>,
    request_bytes: Family<L, Counter>,
    response_bytes: Family<L, Counter>,
    tls: Family<T, Counter>,
    /// Every label set recorded so far, with its series: one lookup a request instead of
    /// four, and the list [`RequestFamilies::retain`] goes through.
    /// foldhash, seeded per map: several times faster than SipHash on these short keys, and
    /// header-label values (which clients choose) still cannot be aimed at one bucket.
    seen: std::sync::RwLock<HashMap<WithHeaders<L>, Handles, RandomState>>,
    seen_tls: std::sync::RwLock<HashMap<T, Counter, RandomState>>,
}

impl<L, T> RequestFamilies<L, T>
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
    T: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    /// Registers `<scope>_requests_total`, `<scope>_request_duration_seconds`,
    /// `<scope>_requests_bytes_total`, `<scope>_responses_bytes_total` and
    /// `<scope>_requests_tls_total`.
    fn register(registry: &mut Registry, scope: &str, what: &str, buckets: &Buckets) -> Self {
        let families = RequestFamilies {
            requests: Family::default(),
            duration: Family::new_with_constructor(buckets.clone()),
            request_bytes: Family::default(),
            response_bytes: Family::default(),
            tls: Family::default(),
            seen: Default::default(),
            seen_tls: Default::default(),
        };
        // The client appends `_total` to counters.
        registry.register(
            format!("{scope}_requests"),
            format!("How many HTTP requests {what} processed, by status code, method and protocol"),
            families.requests.clone(),
        );
        registry.register(
            format!("{scope}_request_duration_seconds"),
            format!("How long HTTP requests {what} processed took, to the end of their response"),
            families.duration.clone(),
        );
        registry.register(
            format!("{scope}_requests_bytes"),
            format!("The size of the request bodies {what} processed"),
            families.request_bytes.clone(),
        );
        registry.register(
            format!("{scope}_responses_bytes"),
            format!("The size of the response bodies {what} sent"),
            families.response_bytes.clone(),
        );
        registry.register(
            format!("{scope}_requests_tls"),
            format!("How many HTTPS requests {what} processed, by TLS version and cipher suite"),
            families.tls.clone(),
        );
        families
    }

    /// Counts `record` in the series of `labels`; returns those series, which
    /// [`LastSeries`] keeps for the next request like it.
    fn record(
        &self,
        labels: L,
        headers: &HeaderValues,
        tls: Option<T>,
        record: &RequestRecord,
    ) -> CountedIn {
        let key = WithHeaders {
            labels,
            headers: headers.clone(),
        };
        let handles = seen_or_made(&self.seen, key, |key| Handles {
            requests: self.requests.get_or_create(key).clone(),
            duration: self.duration.get_or_create(&key.labels).clone(),
            request_bytes: self.request_bytes.get_or_create(&key.labels).clone(),
            response_bytes: self.response_bytes.get_or_create(&key.labels).clone(),
        });
        let tls = tls.map(|tls| {
            seen_or_made(&self.seen_tls, tls, |tls| {
                self.tls.get_or_create(tls).clone()
            })
        });
        let counted = CountedIn { handles, tls };
        counted.count(record);
        counted
    }

    /// Drops the series of the label sets `keep` refuses (routers and services a reload
    /// removed), so they stop being exported.
    fn retain(&self, keep: impl Fn(&L) -> bool, keep_tls: impl Fn(&T) -> bool) {
        let mut seen = self.seen.write().unwrap_or_else(|e| e.into_inner());
        seen.retain(|key, _| {
            let kept = keep(&key.labels);
            if !kept {
                self.requests.remove(key);
                self.duration.remove(&key.labels);
                self.request_bytes.remove(&key.labels);
                self.response_bytes.remove(&key.labels);
            }
            kept
        });
        let mut seen_tls = self.seen_tls.write().unwrap_or_else(|e| e.into_inner());
        seen_tls.retain(|key, _| {
            let kept = keep_tls(key);
            if !kept {
                self.tls.remove(key);
            }
            kept
        });
    }
}

/// Every metric Sallyport exports, and its registry. Built once from the static
/// configuration; shared (`Arc`) by the runtime, the HTTP entrypoints (as their observer) and
/// the scrape handler.
#[derive(Debug)]
pub struct Metrics {
    /// Tells this registry's series apart from another's in [`LastSeries`] (tests and
    /// restarts make several).
    id: u64,
    registry: Registry,
    prefix: String,
    header_labels: HeaderLabels,
    /// `None` where `addEntryPointsLabels`, `addRoutersLabels` or `addServicesLabels` is off.
    entrypoint: Option<RequestFamilies<EntrypointLabels, EntrypointTlsLabels>>,
    router: Option<RequestFamilies<RouterLabels, RouterTlsLabels>>,
    service: Option<RequestFamilies<ServiceLabels, ServiceTlsLabels>>,
    config_reloads: Counter,
    config_last_reload_success: Gauge<f64, std::sync::atomic::AtomicU64>,
    config_reloads_failure: Counter,
    config_last_reload_failure: Gauge<f64, std::sync::atomic::AtomicU64>,
    open_connections: Family<OpenConnectionLabels, Gauge>,
    server_up: Family<ServerLabels, Gauge>,
    service_retries: Family<ServiceOnlyLabels, Counter>,
    certs_not_after: Family<CertLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    tcp_connections: Family<L4RouteLabels, Counter>,
    tcp_open_connections: Family<EntrypointOnlyLabels, Gauge>,
    tcp_bytes: Family<L4DirectionLabels, Counter>,
    tcp_duration: Family<L4RouteLabels, Histogram, Buckets>,
    udp_sessions: Family<L4RouteLabels, Counter>,
    udp_open_sessions: Family<EntrypointOnlyLabels, Gauge>,
    udp_datagrams: Family<L4DirectionLabels, Counter>,
    accept_errors: Family<AcceptErrorLabels, Counter>,
    access_log_dropped: Counter,
    ratelimit_redis_errors: Counter,
}

impl Metrics {
    /// The registry `config` describes: prefix (empty: `sallyport`), request duration buckets,
    /// and which of the entrypoint, router and service request families exist.
    /// `headerLabels` adds labels to the `*_requests_total` families.
    pub fn new(config: &Prometheus) -> Result<Self, MetricsError> {
        let prefix = if config.prefix.is_empty() {
            DEFAULT_PREFIX.to_owned()
        } else {
            config.prefix.clone()
        };
        if !is_metric_name(&prefix) {
            return Err(MetricsError::InvalidPrefix(prefix));
        }
        let buckets = request_buckets(&config.buckets)?;
        let header_labels = header_labels(&config.header_labels)?;
        let mut registry = Registry::with_prefix(prefix.clone());
        let entrypoint = config.add_entry_points_labels.then(|| {
            RequestFamilies::register(&mut registry, "entrypoint", "entrypoints", &buckets)
        });
        let router = config
            .add_routers_labels
            .then(|| RequestFamilies::register(&mut registry, "router", "routers", &buckets));
        let service = config
            .add_services_labels
            .then(|| RequestFamilies::register(&mut registry, "service", "services", &buckets));

        let config_reloads = Counter::default();
        registry.register(
            "config_reloads",
            "How many dynamic configurations were applied",
            config_reloads.clone(),
        );
        let config_last_reload_success = Gauge::default();
        registry.register(
            "config_last_reload_success",
            "When the last dynamic configuration was applied (Unix seconds)",
            config_last_reload_success.clone(),
        );
        let config_reloads_failure = Counter::default();
        registry.register(
            "config_reloads_failure",
            "How many dynamic configurations were rejected",
            config_reloads_failure.clone(),
        );
        let config_last_reload_failure = Gauge::default();
        registry.register(
            "config_last_reload_failure",
            "When a dynamic configuration was last rejected (Unix seconds)",
            config_last_reload_failure.clone(),
        );
        let open_connections = Family::default();
        registry.register(
            "open_connections",
            "Connections (TCP) and sessions (UDP) open on each entrypoint",
            open_connections.clone(),
        );
        let service_retries = Family::default();
        registry.register(
            "service_retries",
            "Retries of requests by the retry middleware, by service",
            service_retries.clone(),
        );
        let server_up = Family::default();
        registry.register(
            "service_server_up",
            "Whether a server of a service is up (1) or down (0) by its health check",
            server_up.clone(),
        );
        let certs_not_after = Family::default();
        registry.register(
            "tls_certs_not_after",
            "When each certificate expires (Unix seconds)",
            certs_not_after.clone(),
        );

        let tcp_connections = Family::default();
        registry.register(
            "tcp_connections",
            "TCP connections routed by TCP routers",
            tcp_connections.clone(),
        );
        let tcp_open_connections = Family::default();
        registry.register(
            "tcp_open_connections",
            "TCP connections open through TCP routers, by entrypoint",
            tcp_open_connections.clone(),
        );
        let tcp_bytes = Family::default();
        registry.register(
            "tcp_bytes",
            "Bytes relayed by TCP routers, by direction",
            tcp_bytes.clone(),
        );
        let tcp_duration = Family::new_with_constructor(Buckets(Arc::from(TCP_DURATION_BUCKETS)));
        registry.register(
            "tcp_connection_duration_seconds",
            "How long TCP connections routed by TCP routers lasted",
            tcp_duration.clone(),
        );
        let udp_sessions = Family::default();
        registry.register(
            "udp_sessions",
            "UDP sessions routed by UDP routers",
            udp_sessions.clone(),
        );
        let udp_open_sessions = Family::default();
        registry.register(
            "udp_open_sessions",
            "UDP sessions open through UDP routers, by entrypoint",
            udp_open_sessions.clone(),
        );
        let udp_datagrams = Family::default();
        registry.register(
            "udp_datagrams",
            "Datagrams relayed by UDP routers, by direction",
            udp_datagrams.clone(),
        );
        let accept_errors = Family::default();
        registry.register(
            "entrypoint_accept_errors",
            "Failed accepts of TCP connections, by entrypoint and reason (emfile, enfile, enobufs, enomem, econnaborted, eperm, eproto, other)",
            accept_errors.clone(),
        );
        let access_log_dropped = Counter::default();
        registry.register(
            "accesslog_dropped_lines",
            "Access log lines dropped because the writer could not keep up",
            access_log_dropped.clone(),
        );
        let ratelimit_redis_errors = Counter::default();
        registry.register(
            "ratelimit_redis_errors",
            "Requests let through unlimited because the rateLimit.redis store did not answer",
            ratelimit_redis_errors.clone(),
        );
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Ok(Metrics {
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            accept_errors,
            access_log_dropped,
            ratelimit_redis_errors,
            registry,
            prefix,
            header_labels,
            entrypoint,
            router,
            service,
            config_reloads,
            config_last_reload_success,
            config_reloads_failure,
            config_last_reload_failure,
            open_connections,
            server_up,
            service_retries,
            certs_not_after,
            tcp_connections,
            tcp_open_connections,
            tcp_bytes,
            tcp_duration,
            udp_sessions,
            udp_open_sessions,
            udp_datagrams,
        })
    }

    /// Counts a failed accept on `entrypoint`; `reason` is one of a fixed set of words.
    pub fn accept_error(&self, entrypoint: &str, reason: &'static str) {
        self.accept_errors
            .get_or_create(&AcceptErrorLabels {
                entrypoint: Arc::from(entrypoint),
                reason,
            })
            .inc();
    }

    /// The counter of access log lines dropped, for the access log to count its drops in.
    pub fn access_log_dropped(&self) -> Counter {
        self.access_log_dropped.clone()
    }

    /// The counter of requests `rateLimit.redis` let through because Redis did not answer.
    pub fn ratelimit_redis_errors(&self) -> Counter {
        self.ratelimit_redis_errors.clone()
    }

    /// The metric name prefix in use (`sallyport`, or the configured one).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The registry in the Prometheus text format (version 0.0.4).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail, and every label value is a plain string.
        if let Err(error) =
            prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
        {
            tracing::error!(%error, "encoding the metrics failed");
        }
        text
    }

    /// A dynamic configuration was applied (`success`) or rejected.
    pub fn config_reload(&self, success: bool) {
        self.config_reload_at(success, SystemTime::now());
    }

    fn config_reload_at(&self, success: bool, at: SystemTime) {
        let seconds = unix_seconds(at);
        if success {
            self.config_reloads.inc();
            self.config_last_reload_success.set(seconds);
        } else {
            self.config_reloads_failure.inc();
            self.config_last_reload_failure.set(seconds);
        }
    }

    /// Stops exporting the request series of routers and services that are not in
    /// `routers` and `services` (qualified names) any more: a reload removed them. Traefik
    /// does the same, so that a long-lived process does not export every router it ever had.
    pub fn retain_routes(
        &self,
        routers: &std::collections::HashSet<String>,
        services: &std::collections::HashSet<String>,
    ) {
        // Internal routers and services (`ping@internal`...) come and go with the static
        // configuration, not with reloads.
        let router = |name: &str| name.ends_with("@internal") || routers.contains(name);
        let service = |name: &str| name.ends_with("@internal") || services.contains(name);
        if let Some(families) = &self.router {
            families.retain(
                |l| router(&l.router) && service(&l.service),
                |t| router(&t.router) && service(&t.service),
            );
        }
        if let Some(families) = &self.service {
            families.retain(|l| service(&l.service), |t| service(&t.service));
        }
    }

    /// The health of server `url` of `service` (a qualified name: `api@file`).
    pub fn set_server_up(&self, service: &str, url: &str, up: bool) {
        self.server_up
            .get_or_create(&ServerLabels {
                service: Arc::from(service),
                url: Arc::from(url),
            })
            .set(i64::from(up));
    }

    /// Forgets a server that a reload removed, so it stops being exported.
    pub fn remove_server(&self, service: &str, url: &str) {
        self.server_up.remove(&ServerLabels {
            service: Arc::from(service),
            url: Arc::from(url),
        });
    }

    /// Forgets every certificate; a reload then sets the current ones again.
    pub fn clear_certs(&self) {
        self.certs_not_after.clear();
    }

    /// The expiry of a certificate: its subject common name, serial number (hex, as Traefik
    /// prints it) and DNS names.
    pub fn set_cert_not_after(
        &self,
        cn: &str,
        serial: &str,
        sans: &[String],
        not_after: SystemTime,
    ) {
        self.certs_not_after
            .get_or_create(&CertLabels {
                cn: cn.to_owned(),
                serial: serial.to_owned(),
                sans: sans.join(","),
            })
            .set(unix_seconds(not_after));
    }
}

impl ConnObserver for Metrics {
    fn opened(&self, transport: L4Transport, entrypoint: &str, router: &str, service: &str) {
        let entrypoint: Arc<str> = Arc::from(entrypoint);
        let route = L4RouteLabels {
            entrypoint: entrypoint.clone(),
            router: Arc::from(router),
            service: Arc::from(service),
        };
        let only = EntrypointOnlyLabels {
            entrypoint: entrypoint.clone(),
        };
        self.open_connections
            .get_or_create(&OpenConnectionLabels {
                entrypoint,
                protocol: transport_label(transport),
            })
            .inc();
        match transport {
            L4Transport::Tcp => {
                self.tcp_connections.get_or_create(&route).inc();
                self.tcp_open_connections.get_or_create(&only).inc();
            }
            L4Transport::Udp => {
                self.udp_sessions.get_or_create(&route).inc();
                self.udp_open_sessions.get_or_create(&only).inc();
            }
        }
    }

    fn http_connection(&self, entrypoint: &str, open: bool) {
        let gauge = self.open_connections.get_or_create(&OpenConnectionLabels {
            entrypoint: Arc::from(entrypoint),
            protocol: transport_label(L4Transport::Tcp),
        });
        if open {
            gauge.inc();
        } else {
            gauge.dec();
        }
    }

    fn closed(&self, record: &ConnRecord) {
        // Only connections that reached a backend were announced (and counted as open).
        let (Some(_), Some(router), Some(service)) =
            (&record.backend, &record.router, &record.service)
        else {
            return;
        };
        let route = L4RouteLabels {
            entrypoint: record.entrypoint.clone(),
            router: router.clone(),
            service: service.clone(),
        };
        let only = EntrypointOnlyLabels {
            entrypoint: record.entrypoint.clone(),
        };
        let direction = |direction: Direction| L4DirectionLabels {
            entrypoint: record.entrypoint.clone(),
            router: router.clone(),
            service: service.clone(),
            direction: direction.as_str(),
        };
        self.open_connections
            .get_or_create(&OpenConnectionLabels {
                entrypoint: record.entrypoint.clone(),
                protocol: transport_label(record.transport),
            })
            .dec();
        match record.transport {
            L4Transport::Tcp => {
                self.tcp_open_connections.get_or_create(&only).dec();
                self.tcp_bytes
                    .get_or_create(&direction(Direction::FromClient))
                    .inc_by(record.bytes_in);
                self.tcp_bytes
                    .get_or_create(&direction(Direction::ToClient))
                    .inc_by(record.bytes_out);
                self.tcp_duration
                    .get_or_create(&route)
                    .observe(record.duration.as_secs_f64());
            }
            L4Transport::Udp => {
                self.udp_open_sessions.get_or_create(&only).dec();
                self.udp_datagrams
                    .get_or_create(&direction(Direction::FromClient))
                    .inc_by(record.datagrams_in);
                self.udp_datagrams
                    .get_or_create(&direction(Direction::ToClient))
                    .inc_by(record.datagrams_out);
            }
        }
    }
}

impl RequestObserver for Metrics {
    fn wanted_headers(&self) -> Option<&l7::observe::WantedHeaders> {
        self.header_labels.wanted.as_ref()
    }

    /// Paths and hosts are never labels (unbounded).
    fn wants_target(&self) -> bool {
        false
    }

    fn wants_host(&self) -> bool {
        false
    }

    fn observe(&self, record: &RequestRecord) {
        if record.retries > 0
            && let Some(service) = &record.service
        {
            self.service_retries
                .get_or_create(&ServiceOnlyLabels {
                    service: service.clone(),
                })
                .inc_by(u64::from(record.retries));
        }
        let method = method_label(&record.method);
        // Header labels take values from each request: no two requests are known alike.
        let cacheable = self.header_labels.headers.is_empty();
        if cacheable {
            let counted = LAST_SERIES.with_borrow(|last| match last {
                Some(last) if last.same_as(self.id, record, method) => {
                    last.counted.iter().for_each(|c| c.count(record));
                    true
                }
                _ => false,
            });
            if counted {
                return;
            }
        }
        let counted = self.count_by_labels(record, method);
        if cacheable {
            LAST_SERIES.set(Some(LastSeries {
                owner: self.id,
                entrypoint: record.entrypoint.clone(),
                router: record.router.clone(),
                service: record.service.clone(),
                code: record.status.as_u16(),
                method,
                protocol: record.protocol.as_str(),
                tls: record.tls.map(tls_labels),
                counted,
            }));
        }
    }
}

impl Metrics {
    /// Counts `record` in the series its labels name, found by label set; returns them.
    fn count_by_labels(&self, record: &RequestRecord, method: &'static str) -> Vec<CountedIn> {
        let mut counted = Vec::with_capacity(3);
        let code = record.status.as_u16();
        let protocol = record.protocol.as_str();
        let tls = record.tls.map(tls_labels);
        let headers = self.header_labels.values(record);
        if let Some(families) = &self.entrypoint {
            let labels = EntrypointLabels {
                code,
                method,
                protocol,
                entrypoint: record.entrypoint.clone(),
            };
            let tls = tls.map(|(tls_version, tls_cipher)| EntrypointTlsLabels {
                tls_version,
                tls_cipher,
                entrypoint: record.entrypoint.clone(),
            });
            counted.push(families.record(labels, &headers, tls, record));
        }
        let Some(service) = &record.service else {
            return counted;
        };
        if let (Some(families), Some(router)) = (&self.router, &record.router) {
            let labels = RouterLabels {
                code,
                method,
                protocol,
                router: router.clone(),
                service: service.clone(),
            };
            let tls = tls.map(|(tls_version, tls_cipher)| RouterTlsLabels {
                tls_version,
                tls_cipher,
                router: router.clone(),
                service: service.clone(),
            });
            counted.push(families.record(labels, &headers, tls, record));
        }
        if let Some(families) = &self.service {
            let labels = ServiceLabels {
                code,
                method,
                protocol,
                service: service.clone(),
            };
            let tls = tls.map(|(tls_version, tls_cipher)| ServiceTlsLabels {
                tls_version,
                tls_cipher,
                service: service.clone(),
            });
            counted.push(families.record(labels, &headers, tls, record));
        }
        counted
    }
}

/// The method label: the standard methods by name, anything else as `EXTENSION_METHOD`, so a
/// client cannot create series at will (Traefik exports any method as sent).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::CONNECT => "CONNECT",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::PATCH => "PATCH",
        _ => "EXTENSION_METHOD",
    }
}

fn tls_labels(params: TlsParams) -> (&'static str, &'static str) {
    (params.version, params.cipher.unwrap_or("unknown"))
}

/// `headerLabels` checked: valid label names that do not clash with the labels the request
/// families already have, and valid header names.
fn header_labels(
    config: &std::collections::BTreeMap<String, String>,
) -> Result<HeaderLabels, MetricsError> {
    const TAKEN: [&str; 6] = [
        "code",
        "method",
        "protocol",
        "entrypoint",
        "router",
        "service",
    ];
    let mut names = Vec::new();
    let mut headers = Vec::new();
    for (label, header) in config {
        if !is_metric_name(label) || label.starts_with("__") || TAKEN.contains(&label.as_str()) {
            return Err(MetricsError::InvalidHeaderLabel(label.clone()));
        }
        let name = http::HeaderName::from_bytes(header.as_bytes()).map_err(|_| {
            MetricsError::InvalidHeaderName {
                label: label.clone(),
                header: header.clone(),
            }
        })?;
        names.push(label.clone());
        headers.push(name);
    }
    let carried: Vec<http::HeaderName> = headers
        .iter()
        .filter(|name| **name != http::header::HOST)
        .cloned()
        .collect();
    Ok(HeaderLabels {
        names: names.into(),
        headers,
        wanted: (!carried.is_empty()).then_some(l7::observe::WantedHeaders::Only(carried)),
    })
}

/// A Prometheus metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*` (no `:` here: colons are reserved
/// for recording rules).
fn is_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The request duration buckets: Traefik's defaults when none are configured.
fn request_buckets(configured: &[f64]) -> Result<Buckets, MetricsError> {
    if configured.is_empty() {
        return Ok(Buckets(Arc::from([0.1, 0.3, 1.2, 5.0])));
    }
    let finite = configured.iter().all(|b| b.is_finite());
    let increasing = configured.windows(2).all(|pair| pair[0] < pair[1]);
    if !finite || !increasing {
        return Err(MetricsError::InvalidBuckets(configured.to_vec()));
    }
    Ok(Buckets(Arc::from(configured)))
}

fn unix_seconds(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use http::{StatusCode, Version};
    use l7::observe::Protocol;

    use super::*;

    /// One scrape, as `name{label="value",...}` (labels sorted) → value.
    pub(crate) fn parse(text: &str) -> BTreeMap<String, f64> {
        let mut samples = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let value: f64 = value.parse().unwrap();
            let key = match series.split_once('{') {
                None => series.to_owned(),
                Some((name, labels)) => {
                    let labels = labels.strip_suffix('}').unwrap();
                    let mut pairs: Vec<&str> = split_labels(labels);
                    pairs.sort_unstable();
                    format!("{name}{{{}}}", pairs.join(","))
                }
            };
            assert!(samples.insert(key, value).is_none(), "{line} twice");
        }
        samples
    }

    /// `a="x",b="y,z"` → [`a="x"`, `b="y,z"`]: commas inside quotes stay.
    fn split_labels(labels: &str) -> Vec<&str> {
        let mut pairs = Vec::new();
        let (mut start, mut quoted, mut escaped) = (0, false, false);
        for (i, c) in labels.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => quoted = !quoted,
                ',' if !quoted => {
                    pairs.push(&labels[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        if start < labels.len() {
            pairs.push(&labels[start..]);
        }
        pairs
    }

    /// The series of the `web` entrypoint's GETs answered 200.
    const WEB_GETS_OK: &str = r#"sallyport_entrypoint_requests_total{code="200",method="GET",protocol="http",entrypoint="web"}"#;

    /// The value of `series` (labels in any order), or `None` if the scrape lacks it.
    pub(crate) fn value(samples: &BTreeMap<String, f64>, series: &str) -> Option<f64> {
        let key = parse(&format!("{series} 0")).into_keys().next().unwrap();
        samples.get(&key).copied()
    }

    fn record(
        method: Method,
        status: u16,
        route: Option<(&str, &str)>,
        millis: u64,
        bytes: (u64, u64),
    ) -> RequestRecord {
        RequestRecord {
            entrypoint: Arc::from("web"),
            router: route.map(|(router, _)| Arc::from(router)),
            service: route.map(|(_, service)| Arc::from(service)),
            method,
            protocol: Protocol::Http,
            version: Version::HTTP_11,
            host: None,
            target: "/a/path/never/a/label".to_owned(),
            client: "192.0.2.7:40000".parse().unwrap(),
            tls: None,
            status: StatusCode::from_u16(status).unwrap(),
            error: None,
            request_bytes: bytes.0,
            response_bytes: bytes.1,
            completed: true,
            duration: Duration::from_millis(millis),
            started: SystemTime::now(),
            headers: None,
            response_headers: None,
            server: None,
            username: None,
            retries: 0,
            trace: None,
        }
    }

    fn metrics(configure: impl FnOnce(&mut Prometheus)) -> Metrics {
        let mut config = Prometheus::default();
        configure(&mut config);
        Metrics::new(&config).unwrap()
    }

    #[test]
    fn requests_like_the_one_before_are_counted_in_the_same_series() {
        // Records sharing their names' `Arc`s, as a snapshot's requests do: the thread's last
        // series are reused, and must count exactly what a lookup would.
        let other = metrics(|_| {});
        let metrics = metrics(|c| c.add_routers_labels = true);
        let api = record(
            Method::GET,
            200,
            Some(("api@file", "api-svc@file")),
            50,
            (1, 10),
        );
        let mut missing = api.clone();
        missing.status = StatusCode::NOT_FOUND;
        let mut posted = api.clone();
        posted.method = Method::POST;
        let mut elsewhere = api.clone();
        elsewhere.service = Some(Arc::from("other-svc@file"));
        for r in [
            &api, &api, &missing, &api, &posted, &posted, &elsewhere, &api,
        ] {
            metrics.observe(r);
        }
        // Another registry on the same thread, with the same record: its own series.
        other.observe(&api);
        other.observe(&api);
        let samples = parse(&metrics.encode());
        let count = |series: &str| value(&samples, series);
        let svc = |code: u16, method: &str, service: &str| {
            count(&format!(
                r#"sallyport_service_requests_total{{code="{code}",method="{method}",protocol="http",service="{service}"}}"#
            ))
        };
        assert_eq!(svc(200, "GET", "api-svc@file"), Some(4.0));
        assert_eq!(svc(404, "GET", "api-svc@file"), Some(1.0));
        assert_eq!(svc(200, "POST", "api-svc@file"), Some(2.0));
        assert_eq!(svc(200, "GET", "other-svc@file"), Some(1.0));
        assert_eq!(
            count(
                r#"sallyport_router_requests_total{code="200",method="GET",protocol="http",router="api@file",service="api-svc@file"}"#
            ),
            Some(4.0)
        );
        assert_eq!(
            count(
                r#"sallyport_entrypoint_requests_bytes_total{code="200",method="GET",protocol="http",entrypoint="web"}"#
            ),
            Some(5.0),
            "four GETs to api-svc and one to other-svc, 1 byte each"
        );
        let theirs = parse(&other.encode());
        assert_eq!(value(&theirs, WEB_GETS_OK), Some(2.0));
    }

    #[test]
    fn requests_are_counted_by_code_method_protocol_entrypoint_and_service() {
        let metrics = metrics(|_| {});
        let api = Some(("api@file", "api-svc@file"));
        metrics.observe(&record(Method::GET, 200, api, 50, (0, 100)));
        metrics.observe(&record(Method::GET, 200, api, 2000, (10, 200)));
        metrics.observe(&record(Method::GET, 404, None, 1, (0, 19)));
        let purge = Method::from_bytes(b"PURGE").unwrap();
        metrics.observe(&record(purge, 405, api, 1, (0, 0)));
        let samples = parse(&metrics.encode());
        let ep = |family: &str, code: u16, method: &str| {
            let series = format!(
                r#"sallyport_entrypoint_{family}{{code="{code}",method="{method}",protocol="http",entrypoint="web"}}"#
            );
            value(&samples, &series)
        };
        assert_eq!(ep("requests_total", 200, "GET"), Some(2.0));
        assert_eq!(ep("requests_total", 404, "GET"), Some(1.0));
        assert_eq!(ep("requests_total", 405, "EXTENSION_METHOD"), Some(1.0));
        assert_eq!(ep("requests_bytes_total", 200, "GET"), Some(10.0));
        assert_eq!(ep("responses_bytes_total", 200, "GET"), Some(300.0));
        assert_eq!(ep("responses_bytes_total", 404, "GET"), Some(19.0));
        // 50 ms and 2 s against the default buckets 0.1, 0.3, 1.2, 5.
        let bucket = |le: &str| {
            value(
                &samples,
                &format!(
                    r#"sallyport_entrypoint_request_duration_seconds_bucket{{code="200",method="GET",protocol="http",entrypoint="web",le="{le}"}}"#
                ),
            )
        };
        assert_eq!(bucket("0.1"), Some(1.0));
        assert_eq!(bucket("1.2"), Some(1.0));
        assert_eq!(bucket("5"), Some(2.0));
        assert_eq!(bucket("+Inf"), Some(2.0));
        let histogram = |part: &str| {
            value(
                &samples,
                &format!(
                    r#"sallyport_entrypoint_request_duration_seconds_{part}{{code="200",method="GET",protocol="http",entrypoint="web"}}"#
                ),
            )
        };
        assert_eq!(histogram("count"), Some(2.0));
        assert_eq!(histogram("sum"), Some(2.05));

        let service = |code: u16, method: &str| {
            value(
                &samples,
                &format!(
                    r#"sallyport_service_requests_total{{code="{code}",method="{method}",protocol="http",service="api-svc@file"}}"#
                ),
            )
        };
        assert_eq!(service(200, "GET"), Some(2.0));
        assert_eq!(service(405, "EXTENSION_METHOD"), Some(1.0));
        // The unrouted 404 has no service; routers are off by default.
        assert!(
            !samples
                .keys()
                .any(|k| k.starts_with("sallyport_service_") && k.contains("404"))
        );
        assert!(!samples.keys().any(|k| k.starts_with("sallyport_router_")));
        // Bounded labels: neither the path nor the client shows.
        let text = metrics.encode();
        assert!(!text.contains("/a/path") && !text.contains("192.0.2.7"));
    }

    #[test]
    fn header_labels_label_the_request_counters_only() {
        let metrics = metrics(|c| {
            c.add_routers_labels = true;
            c.header_labels = [
                ("tenant".to_owned(), "X-Tenant".to_owned()),
                ("site".to_owned(), "Host".to_owned()),
            ]
            .into();
        });
        assert_eq!(
            metrics.wanted_headers(),
            Some(&l7::observe::WantedHeaders::Only(vec![
                http::HeaderName::from_static("x-tenant")
            ]))
        );
        let api = Some(("api@file", "api-svc@file"));
        let mut acme = record(Method::GET, 200, api, 1, (0, 1));
        let mut headers = http::HeaderMap::new();
        headers.insert("x-tenant", http::HeaderValue::from_static("acme"));
        acme.headers = Some(Box::new(headers));
        acme.host = Some(http::HeaderValue::from_static("shop.test"));
        metrics.observe(&acme);
        metrics.observe(&acme);
        // Absent headers give empty values.
        metrics.observe(&record(Method::GET, 200, api, 1, (0, 1)));
        let samples = parse(&metrics.encode());
        for scope in [
            r#"entrypoint_requests_total{code="200",method="GET",protocol="http",entrypoint="web""#,
            r#"router_requests_total{code="200",method="GET",protocol="http",router="api@file",service="api-svc@file""#,
            r#"service_requests_total{code="200",method="GET",protocol="http",service="api-svc@file""#,
        ] {
            let acme = format!(r#"sallyport_{scope},site="shop.test",tenant="acme"}}"#);
            let none = format!(r#"sallyport_{scope},site="",tenant=""}}"#);
            assert_eq!(value(&samples, &acme), Some(2.0), "{acme}");
            assert_eq!(value(&samples, &none), Some(1.0), "{none}");
        }
        // The other families keep Traefik's labels.
        assert_eq!(
            value(
                &samples,
                r#"sallyport_service_responses_bytes_total{code="200",method="GET",protocol="http",service="api-svc@file"}"#
            ),
            Some(3.0)
        );
    }

    #[test]
    fn bad_header_labels_are_refused() {
        for (label, header) in [
            ("code", "X-A"),
            ("9x", "X-A"),
            ("__x", "X-A"),
            ("ok", "bad header"),
        ] {
            let config = Prometheus {
                header_labels: [(label.to_owned(), header.to_owned())].into(),
                ..Prometheus::default()
            };
            let error = Metrics::new(&config).unwrap_err().to_string();
            assert!(error.contains(label), "{error}");
        }
    }

    #[test]
    fn series_of_routers_and_services_a_reload_removed_stop_being_exported() {
        let metrics = metrics(|c| c.add_routers_labels = true);
        metrics.observe(&record(
            Method::GET,
            200,
            Some(("old@file", "old-svc@file")),
            1,
            (0, 1),
        ));
        metrics.observe(&record(
            Method::GET,
            200,
            Some(("new@file", "new-svc@file")),
            1,
            (0, 1),
        ));
        metrics.observe(&record(
            Method::GET,
            200,
            Some(("ping@internal", "ping@internal")),
            1,
            (0, 1),
        ));
        let keep = |names: &[&str]| names.iter().map(|n| n.to_string()).collect();
        metrics.retain_routes(&keep(&["new@file"]), &keep(&["new-svc@file"]));
        let text = metrics.encode();
        assert!(
            !text.contains("old@file") && !text.contains("old-svc@file"),
            "{text}"
        );
        assert!(text.contains(r#"router="new@file""#), "{text}");
        assert!(text.contains(r#"service="ping@internal""#), "{text}");
        // The entrypoint's counts are not touched, and a removed router that comes back
        // starts again from zero.
        metrics.observe(&record(
            Method::GET,
            200,
            Some(("old@file", "old-svc@file")),
            1,
            (0, 1),
        ));
        let samples = parse(&metrics.encode());
        assert_eq!(value(&samples, WEB_GETS_OK), Some(4.0));
        assert_eq!(
            value(
                &samples,
                r#"sallyport_router_requests_total{code="200",method="GET",protocol="http",router="old@file",service="old-svc@file"}"#
            ),
            Some(1.0)
        );
    }

    #[test]
    fn the_prefix_is_sallyport_unless_configured() {
        let default = metrics(|_| {});
        default.config_reload(true);
        let traefik = metrics(|c| c.prefix = "traefik".to_owned());
        traefik.config_reload(true);
        for (metrics, prefix) in [(&default, "sallyport_"), (&traefik, "traefik_")] {
            let samples = parse(&metrics.encode());
            assert!(!samples.is_empty());
            assert!(samples.keys().all(|k| k.starts_with(prefix)), "{samples:?}");
            assert_eq!(
                value(&samples, &format!("{prefix}config_reloads_total")),
                Some(1.0)
            );
        }
        assert_eq!(traefik.prefix(), "traefik");
    }

    #[test]
    fn the_add_labels_flags_choose_the_request_families() {
        let metrics = metrics(|c| {
            c.add_entry_points_labels = false;
            c.add_routers_labels = true;
            c.add_services_labels = false;
        });
        metrics.observe(&record(
            Method::POST,
            201,
            Some(("r@file", "s@file")),
            5,
            (3, 4),
        ));
        let text = metrics.encode();
        let samples = parse(&text);
        assert_eq!(
            value(
                &samples,
                r#"sallyport_router_requests_total{code="201",method="POST",protocol="http",router="r@file",service="s@file"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &samples,
                r#"sallyport_router_requests_bytes_total{code="201",method="POST",protocol="http",router="r@file",service="s@file"}"#
            ),
            Some(3.0)
        );
        // Families turned off are not even described.
        assert!(!text.contains("sallyport_entrypoint_"));
        assert!(!text.contains("sallyport_service_requests"));
    }

    #[test]
    fn tls_requests_are_counted_by_version_and_cipher() {
        let metrics = metrics(|_| {});
        let mut https = record(Method::GET, 200, Some(("r@file", "s@file")), 5, (0, 0));
        https.tls = Some(TlsParams {
            version: "1.3",
            cipher: Some("TLS_AES_128_GCM_SHA256"),
        });
        metrics.observe(&https);
        https.tls = Some(TlsParams::QUIC);
        metrics.observe(&https);
        metrics.observe(&record(Method::GET, 200, None, 5, (0, 0)));
        let samples = parse(&metrics.encode());
        assert_eq!(
            value(
                &samples,
                r#"sallyport_entrypoint_requests_tls_total{tls_version="1.3",tls_cipher="TLS_AES_128_GCM_SHA256",entrypoint="web"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &samples,
                r#"sallyport_service_requests_tls_total{tls_version="1.3",tls_cipher="unknown",service="s@file"}"#
            ),
            Some(1.0)
        );
        let tls_total: f64 = samples
            .iter()
            .filter(|(k, _)| k.starts_with("sallyport_entrypoint_requests_tls_total"))
            .map(|(_, v)| v)
            .sum();
        assert_eq!(tls_total, 2.0);
    }

    /// A connection record as the l4 proxies report it.
    fn conn(
        transport: L4Transport,
        ep: &str,
        route: (&str, &str),
        counts: (u64, u64, u64, u64),
    ) -> ConnRecord {
        ConnRecord {
            transport,
            entrypoint: Arc::from(ep),
            client: "127.0.0.1:4000".parse().unwrap(),
            sni: None,
            alpn: None,
            router: Some(Arc::from(route.0)),
            service: Some(Arc::from(route.1)),
            backend: Some("10.0.0.1:5432".into()),
            bytes_in: counts.0,
            bytes_out: counts.1,
            datagrams_in: counts.2,
            datagrams_out: counts.3,
            started: SystemTime::now(),
            duration: Duration::from_millis(250),
            reason: l4::observe::CloseReason::Closed,
        }
    }

    #[test]
    fn tcp_connections_count_while_open_and_bytes_and_durations_when_closed() {
        let metrics = metrics(|_| {});
        let route = r#"entrypoint="db",router="pg@file",service="pg@file""#;
        metrics.opened(L4Transport::Tcp, "db", "pg@file", "pg@file");
        metrics.opened(L4Transport::Tcp, "db", "pg@file", "pg@file");
        let samples = parse(&metrics.encode());
        let get = |series: String| value(&samples, &series);
        assert_eq!(
            get(format!("sallyport_tcp_connections_total{{{route}}}")),
            Some(2.0)
        );
        assert_eq!(
            get(r#"sallyport_tcp_open_connections{entrypoint="db"}"#.to_owned()),
            Some(2.0)
        );
        assert_eq!(
            get(r#"sallyport_open_connections{entrypoint="db",protocol="TCP"}"#.to_owned()),
            Some(2.0)
        );
        metrics.closed(&conn(
            L4Transport::Tcp,
            "db",
            ("pg@file", "pg@file"),
            (100, 7, 0, 0),
        ));
        // A connection no router took was never open: it changes nothing.
        let mut unrouted = conn(L4Transport::Tcp, "db", ("pg@file", "pg@file"), (1, 1, 0, 0));
        unrouted.router = None;
        unrouted.backend = None;
        metrics.closed(&unrouted);
        let samples = parse(&metrics.encode());
        let get = |series: String| value(&samples, &series);
        assert_eq!(
            get(r#"sallyport_tcp_open_connections{entrypoint="db"}"#.to_owned()),
            Some(1.0)
        );
        assert_eq!(
            get(format!(
                r#"sallyport_tcp_bytes_total{{{route},direction="from_client"}}"#
            )),
            Some(100.0)
        );
        assert_eq!(
            get(format!(
                r#"sallyport_tcp_bytes_total{{{route},direction="to_client"}}"#
            )),
            Some(7.0)
        );
        assert_eq!(
            get(format!(
                "sallyport_tcp_connection_duration_seconds_count{{{route}}}"
            )),
            Some(1.0)
        );
        assert_eq!(
            get(format!(
                "sallyport_tcp_connection_duration_seconds_sum{{{route}}}"
            )),
            Some(0.25)
        );
    }

    #[test]
    fn udp_sessions_count_while_open_and_datagrams_when_closed() {
        let metrics = metrics(|_| {});
        metrics.opened(L4Transport::Udp, "dns", "dns@file", "resolvers@file");
        let route = r#"entrypoint="dns",router="dns@file",service="resolvers@file""#;
        let samples = parse(&metrics.encode());
        assert_eq!(
            value(
                &samples,
                &format!("sallyport_udp_sessions_total{{{route}}}")
            ),
            Some(1.0)
        );
        assert_eq!(
            value(&samples, r#"sallyport_udp_open_sessions{entrypoint="dns"}"#),
            Some(1.0)
        );
        metrics.closed(&conn(
            L4Transport::Udp,
            "dns",
            ("dns@file", "resolvers@file"),
            (300, 200, 3, 2),
        ));
        let samples = parse(&metrics.encode());
        let get = |series: String| value(&samples, &series);
        assert_eq!(
            get(format!(
                r#"sallyport_udp_datagrams_total{{{route},direction="from_client"}}"#
            )),
            Some(3.0)
        );
        assert_eq!(
            get(format!(
                r#"sallyport_udp_datagrams_total{{{route},direction="to_client"}}"#
            )),
            Some(2.0)
        );
        assert_eq!(
            get(r#"sallyport_udp_open_sessions{entrypoint="dns"}"#.to_owned()),
            Some(0.0)
        );
        assert_eq!(
            get(r#"sallyport_open_connections{entrypoint="dns",protocol="UDP"}"#.to_owned()),
            Some(0.0)
        );
    }

    #[test]
    fn reloads_servers_and_certificates_are_gauges_and_counters() {
        let metrics = metrics(|_| {});
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        metrics.config_reload_at(true, at);
        metrics.config_reload_at(true, at + Duration::from_secs(10));
        metrics.config_reload_at(false, at + Duration::from_secs(20));
        metrics.set_server_up("api@file", "http://10.0.0.1:80", true);
        metrics.set_server_up("api@file", "http://10.0.0.2:80", true);
        metrics.set_server_up("api@file", "http://10.0.0.2:80", false);
        metrics.set_server_up("old@file", "http://10.0.0.3:80", true);
        metrics.remove_server("old@file", "http://10.0.0.3:80");
        let sans = ["a.test".to_owned(), "b.test".to_owned()];
        metrics.set_cert_not_after("a.test", "1f", &sans, at);
        let samples = parse(&metrics.encode());
        let get = |series: &str| value(&samples, series);
        assert_eq!(get("sallyport_config_reloads_total"), Some(2.0));
        assert_eq!(
            get("sallyport_config_last_reload_success"),
            Some(1_700_000_010.0)
        );
        assert_eq!(get("sallyport_config_reloads_failure_total"), Some(1.0));
        assert_eq!(
            get("sallyport_config_last_reload_failure"),
            Some(1_700_000_020.0)
        );
        assert_eq!(
            get(r#"sallyport_service_server_up{service="api@file",url="http://10.0.0.1:80"}"#),
            Some(1.0)
        );
        assert_eq!(
            get(r#"sallyport_service_server_up{service="api@file",url="http://10.0.0.2:80"}"#),
            Some(0.0)
        );
        assert!(!samples.keys().any(|k| k.contains("old@file")));
        assert_eq!(
            get(r#"sallyport_tls_certs_not_after{cn="a.test",serial="1f",sans="a.test,b.test"}"#),
            Some(1_700_000_000.0)
        );
        metrics.clear_certs();
        assert!(!metrics.encode().contains("sallyport_tls_certs_not_after{"));
    }

    #[test]
    fn a_bad_prefix_or_bad_buckets_are_refused() {
        let build = |configure: fn(&mut Prometheus)| {
            let mut config = Prometheus::default();
            configure(&mut config);
            Metrics::new(&config).map(|_| ())
        };
        assert_eq!(
            build(|c| c.prefix = "my-app".to_owned()),
            Err(MetricsError::InvalidPrefix("my-app".to_owned()))
        );
        assert!(matches!(
            build(|c| c.prefix = "1x".to_owned()),
            Err(MetricsError::InvalidPrefix(_))
        ));
        assert!(matches!(
            build(|c| c.buckets = vec![1.0, 0.5]),
            Err(MetricsError::InvalidBuckets(_))
        ));
        assert!(matches!(
            build(|c| c.buckets = vec![f64::NAN]),
            Err(MetricsError::InvalidBuckets(_))
        ));
        assert_eq!(build(|c| c.buckets = vec![0.5, 2.5]), Ok(()));
    }
}
