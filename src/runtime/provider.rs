//! The file provider at run time: load, validate, compile and swap; watch the file's
//! directory (not the file: editors and ConfigMaps replace files by rename); SIGHUP
//! forces a re-read. The other providers ([`crate::providers`]) send their configurations
//! here: the reloader keeps the last good configuration of each provider and installs
//! their merge, so that one provider failing never holds back another's update.
//!
//! Events are throttled by `providers.providersThrottleDuration`: after the first file
//! event the reloader waits that long, collapses everything that arrived meanwhile, and
//! reloads once (Traefik applies first and then waits; waiting first means a file
//! caught half-written is never applied). A configuration that fails to load is rejected with located errors and
//! the last good snapshot keeps serving; an unchanged one is skipped.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use l4::tcp::health::HealthHandle;
use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, warn};

use super::compile::{
    Carried, HttpEntrypoints, LastGoodCerts, RouteRetirements, Servers, Snapshot, compile,
};
use super::internal::Internal;
use super::rules::Compilers;
use super::server_health::{ServerUpMetric, watched};
use crate::config::dynamic::DynamicConfig;
use crate::config::{ConfigError, StaticConfig, load_dynamic_dir, load_dynamic_file, validate};
use crate::providers::Update;
use l7::service::ServiceStates;
use l7::transport::TransportCache;

/// What asked for a reload (for the log).
#[derive(Debug, Clone, Copy)]
pub enum Trigger {
    Startup,
    FileChange,
    Signal,
    /// An ACME resolver obtained or renewed a certificate.
    Certificates,
    /// A provider besides the file provider sent a new configuration.
    Provider(&'static str),
}

/// Where the file provider reads from.
#[derive(Debug, Clone)]
pub enum Source {
    File(PathBuf),
    Directory(PathBuf),
}

impl Source {
    pub fn from_static(st: &StaticConfig) -> Option<Source> {
        let f = st.providers.file.as_ref()?;
        // Traefik reads `directory` when both are set.
        if !f.directory.is_empty() {
            Some(Source::Directory(PathBuf::from(&f.directory)))
        } else if !f.filename.is_empty() {
            Some(Source::File(PathBuf::from(&f.filename)))
        } else {
            None
        }
    }

    pub fn load(&self) -> Result<DynamicConfig, Vec<ConfigError>> {
        match self {
            Source::File(p) => load_dynamic_file(p),
            Source::Directory(d) => load_dynamic_dir(d),
        }
    }

    /// The directory to watch.
    fn watch_dir(&self) -> PathBuf {
        match self {
            Source::File(p) => match p.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => PathBuf::from("."),
            },
            Source::Directory(d) => d.clone(),
        }
    }

    /// Whether a change to `path` concerns this provider.
    fn concerns(&self, path: &Path) -> bool {
        match self {
            Source::File(p) => path.file_name() == p.file_name(),
            Source::Directory(_) => true,
        }
    }

    /// A fingerprint of the provider's files, to skip reloads that change nothing.
    fn fingerprint(&self) -> Vec<u8> {
        fn walk(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>, depth: usize) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() && depth < 16 {
                    walk(&p, out, depth + 1);
                } else if let Ok(bytes) = std::fs::read(&p) {
                    out.push((p, bytes));
                }
            }
        }
        let mut files = Vec::new();
        match self {
            Source::File(p) => files.push((p.clone(), std::fs::read(p).unwrap_or_default())),
            Source::Directory(d) => walk(d, &mut files, 0),
        }
        files.sort();
        let mut out = Vec::new();
        for (p, bytes) in files {
            out.extend_from_slice(p.to_string_lossy().as_bytes());
            out.push(0);
            out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            out.extend_from_slice(&bytes);
        }
        out
    }
}

/// Loads, validates and compiles configurations, and installs them.
pub struct Reloader {
    st: Arc<StaticConfig>,
    internal: Arc<Internal>,
    store: Arc<ArcSwap<Snapshot>>,
    /// The entrypoints' HTTP servers, which get each new snapshot's HTTP routes.
    http: Arc<HttpEntrypoints>,
    /// HTTP load-balancer states (health, positions), kept while a service is unchanged.
    http_states: ServiceStates,
    /// HTTP servers transports (connection pools), kept while their settings are unchanged.
    http_transports: TransportCache,
    source: Option<Source>,
    /// Health checks of the installed snapshot; replaced on every install.
    health: Vec<Arc<HealthHandle>>,
    /// Servers of the installed snapshot, whose health the next one inherits.
    servers: Servers,
    /// The installed snapshot's TCP routers: those the next one does not keep are retired.
    retirements: RouteRetirements,
    last_fingerprint: Option<Vec<u8>>,
    /// The file provider's last good configuration.
    file_config: Option<DynamicConfig>,
    /// The last good configuration of every other provider, by provider name.
    others: BTreeMap<&'static str, DynamicConfig>,
    /// Certificates as last loaded successfully, served on when their files break.
    good_certs: LastGoodCerts,
    /// The certificate, key and CA files the installed configuration names: watched, and
    /// part of the fingerprint, so that replacing one on disk reloads.
    tls_files: Vec<PathBuf>,
    /// The TLS configuration of the installed snapshot's HTTP/3 endpoints, which swap it
    /// into their QUIC endpoints without rebinding.
    quic_tls: QuicTls,
    /// What the API shows and the metrics count about configurations.
    observability: Observability,
    /// Keeps the metrics at the health of the servers that health checks watch.
    server_up: Option<Arc<ServerUpMetric>>,
}

/// Where each applied configuration is published besides the snapshot.
#[derive(Default, Clone)]
pub struct Observability {
    /// The API's view, rebuilt on every applied configuration.
    pub api: Option<Arc<ArcSwap<crate::api::ApiState>>>,
    /// Reload counts and server health.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
}

/// Where HTTP/3 endpoints watch for the TLS configuration of each new snapshot.
pub type QuicTls = tokio::sync::watch::Sender<Option<Arc<rustls::ServerConfig>>>;

impl Reloader {
    pub fn new(
        st: Arc<StaticConfig>,
        internal: Arc<Internal>,
        store: Arc<ArcSwap<Snapshot>>,
        http: Arc<HttpEntrypoints>,
    ) -> Self {
        let source = Source::from_static(&st);
        Reloader {
            st,
            internal,
            store,
            http,
            http_states: ServiceStates::new(),
            http_transports: TransportCache::new(),
            source,
            health: Vec::new(),
            servers: Servers::new(),
            retirements: RouteRetirements::default(),
            last_fingerprint: None,
            file_config: None,
            others: BTreeMap::new(),
            good_certs: LastGoodCerts::default(),
            tls_files: Vec::new(),
            quic_tls: QuicTls::new(None),
            observability: Observability::default(),
            server_up: None,
        }
    }

    /// Publishes every applied configuration to the API and the metrics too, and every
    /// change of a watched server's health to the metrics. Call it before the first reload.
    pub fn with_observability(mut self, observability: Observability) -> Self {
        if let Some(metrics) = &observability.metrics {
            let server_up = ServerUpMetric::new(metrics.clone());
            self.http_states = ServiceStates::with_observer(server_up.clone());
            self.server_up = Some(server_up);
        }
        self.observability = observability;
        self
    }

    /// Follows the HTTP/3 TLS configuration of every snapshot this reloader installs.
    pub fn quic_tls(&self) -> tokio::sync::watch::Receiver<Option<Arc<rustls::ServerConfig>>> {
        self.quic_tls.subscribe()
    }

    /// One reload: re-reads the file provider (unless its files are unchanged) and installs
    /// the merge with the other providers' last configurations. Returns true if a new
    /// snapshot was installed.
    pub fn reload(&mut self, trigger: Trigger) -> bool {
        let Some(source) = self.source.clone() else {
            if matches!(trigger, Trigger::Startup) && !crate::providers::any_configured(&self.st) {
                warn!("no provider configured: no routers");
            }
            // Without files there is nothing to re-read: only new certificates (or SIGHUP)
            // rebuild the other providers' configuration.
            if self.others.is_empty() || !matches!(trigger, Trigger::Certificates | Trigger::Signal)
            {
                return false;
            }
            return self.apply(trigger);
        };
        let fingerprint = self.fingerprint(&source);
        let forced = matches!(
            trigger,
            Trigger::Signal | Trigger::Certificates | Trigger::Provider(_)
        );
        if !forced && self.last_fingerprint.as_ref() == Some(&fingerprint) {
            debug!(?trigger, "dynamic configuration unchanged; nothing to do");
            return false;
        }
        match source.load() {
            Ok(dy) => self.file_config = Some(dy),
            Err(errors) => {
                for e in &errors {
                    error!("{e}");
                }
                error!(
                    ?trigger,
                    errors = errors.len(),
                    "dynamic configuration rejected; keeping the last good configuration"
                );
                if let Some(metrics) = &self.observability.metrics {
                    metrics.config_reload(false);
                }
                return false;
            }
        }
        self.apply(trigger)
    }

    /// Waits, at most `within`, for the first configuration of every started provider,
    /// installing each as it arrives, so that the entrypoints open with them.
    pub async fn first_configurations(
        &mut self,
        started: &mut crate::providers::Started,
        within: Duration,
    ) {
        let deadline = tokio::time::Instant::now() + within;
        let mut waiting = started.providers.clone();
        while !waiting.is_empty() {
            match tokio::time::timeout_at(deadline, started.updates.recv()).await {
                Ok(Some(update)) => {
                    waiting.retain(|p| *p != update.provider);
                    tokio::task::block_in_place(|| self.update(update.provider, update.config));
                }
                Ok(None) => return,
                Err(_) => {
                    warn!(providers = ?waiting, waited = ?within, "no configuration yet from these providers; starting without them");
                    return;
                }
            }
        }
    }

    /// Installs `provider`'s new configuration, merged with the others' last good ones.
    pub fn update(&mut self, provider: &'static str, config: DynamicConfig) -> bool {
        self.others.insert(provider, config);
        self.apply(Trigger::Provider(provider))
    }

    /// Merges the providers' configurations, then validates, compiles and installs them.
    fn apply(&mut self, trigger: Trigger) -> bool {
        let file = self
            .file_config
            .as_ref()
            .map(|c| (crate::config::file_provider::PROVIDER, c));
        let others = self.others.iter().map(|(name, c)| (*name, c));
        let mut dy = crate::config::merge::merge(file.into_iter().chain(others));
        for w in &dy.warnings {
            warn!("{w}");
        }
        crate::config::models::apply(&self.st, &mut dy);
        let report = validate::validate(&self.st, &dy, &Compilers);
        for w in report.all_warnings() {
            warn!("{w}");
        }
        for e in report.errors() {
            error!("{e}");
        }
        let compiled = compile(
            &self.st,
            &dy,
            &report,
            &self.internal,
            &self.http,
            Carried {
                servers: &self.servers,
                states: &self.http_states,
                transports: &self.http_transports,
                certs: &mut self.good_certs,
                server_up: self.server_up.as_ref(),
                retirements: &self.retirements,
            },
        );
        self.good_certs.retain_used();
        compiled.snapshot.install_http(&self.http);
        self.quic_tls.send_replace(compiled.snapshot.quic_tls());
        self.store.store(Arc::new(compiled.snapshot));
        // New connections now route by the new snapshot; the routers it dropped or changed
        // let theirs drain.
        self.retirements.retire_replaced(&compiled.retirements);
        self.retirements = compiled.retirements;
        self.http_states.retain_used();
        self.http_transports.retain_used();
        self.internal.rate_limits.retain_used();
        self.internal.kept.retain_used();
        // The old snapshot's health checks that the new one did not keep stop now;
        // connections that still hold the old snapshot keep their servers, which simply
        // stop being probed.
        self.health = compiled.health;
        self.servers = compiled.servers;
        self.tls_files = tls_files(&dy);
        self.publish(&dy, &report, &compiled.certificates);
        self.internal.acme.want(&crate::acme::wanted(&dy, &report));
        if let Some(source) = self.source.clone() {
            self.last_fingerprint = Some(self.fingerprint(&source));
        }
        let served = dy
            .tcp
            .routers
            .keys()
            .filter(|name| report.tcp_router_enabled(name))
            .count();
        let http_served = report
            .resolved_http_routers
            .keys()
            .filter(|name| report.http_router_enabled(name))
            .count();
        info!(
            ?trigger,
            tcp_routers = served,
            http_routers = http_served,
            "dynamic configuration applied"
        );
        true
    }

    /// Tells the API and the metrics about the configuration just installed: both get the
    /// servers that health checks watch, whose health they read when they show it.
    fn publish(
        &mut self,
        dy: &DynamicConfig,
        report: &crate::config::validate::Report,
        certificates: &[Arc<rustls::sign::CertifiedKey>],
    ) {
        let health = watched(&self.http_states, &self.servers, dy);
        if let Some(api) = &self.observability.api {
            api.store(Arc::new(crate::api::ApiState::build(
                &self.st, dy, report, &health,
            )));
        }
        if let Some(server_up) = &self.server_up {
            server_up.publish(&health);
        }
        if let Some(metrics) = &self.observability.metrics {
            metrics.config_reload(true);
            metrics.retain_routes(
                &dy.http.routers.keys().cloned().collect(),
                &dy.http.services.keys().cloned().collect(),
            );
            metrics.clear_certs();
            for cert in certificates {
                if let Some((cn, serial, sans, not_after)) = certificate_facts(cert) {
                    metrics.set_cert_not_after(&cn, &serial, &sans, not_after);
                }
            }
        }
    }

    /// The provider's files and the TLS files the installed configuration names.
    fn fingerprint(&self, source: &Source) -> Vec<u8> {
        let mut out = source.fingerprint();
        for path in &self.tls_files {
            out.extend_from_slice(path.to_string_lossy().as_bytes());
            out.push(0);
            let bytes = std::fs::read(path).unwrap_or_default();
            out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            out.extend_from_slice(&bytes);
        }
        out
    }

    /// Watches the provider, the TLS files its configuration names, and SIGHUP until `stop`.
    /// Starts watching now (so that a change made as soon as the entrypoints accept is not
    /// missed), and returns the loop that reloads until `stop`.
    pub fn run(
        mut self,
        mut stop: watch::Receiver<bool>,
        mut updates: Option<mpsc::Receiver<Update>>,
    ) -> impl std::future::Future<Output = ()> + Send {
        let (tx, mut rx) = mpsc::channel::<Trigger>(64);
        let watch_enabled = self.st.providers.file.as_ref().is_some_and(|f| f.watch);
        let tls_watched: TlsWatch = Arc::default();
        let mut watcher = match (&self.source, watch_enabled) {
            (Some(source), true) => start_watcher(source.clone(), tx.clone(), tls_watched.clone()),
            _ => None,
        };
        let mut watched_dirs = HashSet::new();
        if let Some(watcher) = watcher.as_mut() {
            watch_tls_files(watcher, &tls_watched, &mut watched_dirs, &self.tls_files);
        }
        spawn_sighup(tx);
        let mut certificates = self.internal.acme.subscribe();
        let throttle = self
            .st
            .providers
            .providers_throttle_duration
            .to_std()
            .unwrap_or(Duration::from_secs(2));
        async move {
            loop {
                let trigger = tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    t = rx.recv() => match t { Some(t) => t, None => return },
                    Ok(()) = certificates.changed() => Trigger::Certificates,
                    update = next_update(&mut updates) => match update {
                        Some(update) => {
                            // Providers are throttled where they publish (`providers::forward`).
                            tokio::task::block_in_place(|| self.update(update.provider, update.config));
                            if let Some(watcher) = watcher.as_mut() {
                                watch_tls_files(watcher, &tls_watched, &mut watched_dirs, &self.tls_files);
                            }
                            continue;
                        }
                        None => {
                            updates = None;
                            continue;
                        }
                    },
                };
                // File events wait one throttle period before the files are read, so a
                // file being written (truncated, then filled) is read once it is whole;
                // everything that arrives meanwhile collapses into this reload. SIGHUP
                // applies at once.
                let mut trigger = trigger;
                if matches!(trigger, Trigger::FileChange) {
                    tokio::time::sleep(throttle).await;
                }
                // A SIGHUP that arrived meanwhile still forces the re-read.
                while let Ok(t) = rx.try_recv() {
                    if !matches!(t, Trigger::FileChange) {
                        trigger = t;
                    }
                }
                // Reading files and building TLS configurations is blocking work: let the
                // runtime move other tasks off this worker while it runs.
                tokio::task::block_in_place(|| self.reload(trigger));
                if let Some(watcher) = watcher.as_mut() {
                    watch_tls_files(watcher, &tls_watched, &mut watched_dirs, &self.tls_files);
                }
            }
        }
    }
}

/// The next provider update; never, without providers.
async fn next_update(updates: &mut Option<mpsc::Receiver<Update>>) -> Option<Update> {
    match updates {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// A certificate's subject common name, serial (hex), DNS names and expiry.
fn certificate_facts(
    cert: &rustls::sign::CertifiedKey,
) -> Option<(String, String, Vec<String>, std::time::SystemTime)> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.cert.first()?).ok()?;
    let cn = parsed
        .subject()
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())
        .unwrap_or("")
        .to_owned();
    let serial = parsed
        .tbs_certificate
        .raw_serial_as_string()
        .replace(':', "");
    let sans = parsed
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some((*d).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let secs = u64::try_from(parsed.validity().not_after.timestamp()).ok()?;
    Some((
        cn,
        serial,
        sans,
        std::time::UNIX_EPOCH + Duration::from_secs(secs),
    ))
}

/// The TLS files whose changes reload, shared with the watcher's event handler.
type TlsWatch = Arc<std::sync::Mutex<HashSet<PathBuf>>>;

/// The certificate, key and CA files `dy` names (not inline PEM), as absolute paths whose
/// directory is resolved, the way file events name them.
fn tls_files(dy: &DynamicConfig) -> Vec<PathBuf> {
    let mut named: Vec<&str> = Vec::new();
    for c in &dy.tls.certificates {
        named.extend([
            c.value.cert_file.value.as_str(),
            c.value.key_file.value.as_str(),
        ]);
    }
    for store in dy.tls.stores.values() {
        if let Some(c) = &store.value.default_certificate {
            named.extend([c.cert_file.as_str(), c.key_file.as_str()]);
        }
    }
    for option in dy.tls.options.values() {
        named.extend(
            option
                .value
                .client_auth
                .ca_files
                .iter()
                .map(|f| f.value.as_str()),
        );
    }
    let mut files: Vec<PathBuf> = named
        .into_iter()
        .filter(|f| !f.is_empty() && !f.contains("-----BEGIN"))
        .filter_map(|f| {
            let path = Path::new(f);
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            Some(dir.canonicalize().ok()?.join(path.file_name()?))
        })
        .collect();
    files.sort();
    files.dedup();
    files
}

/// Watches the directories of `files` not in `dirs` yet, and makes `files` the set whose
/// changes reload. The handler's lock is not held while the watcher is called: the watcher
/// may wait for its event thread, which may be waiting for that lock.
fn watch_tls_files(
    watcher: &mut notify::RecommendedWatcher,
    watched: &TlsWatch,
    dirs: &mut HashSet<PathBuf>,
    files: &[PathBuf],
) {
    *watched
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = files.iter().cloned().collect();
    for dir in files.iter().filter_map(|f| f.parent()) {
        if dirs.contains(dir) {
            continue;
        }
        match watcher.watch(dir, RecursiveMode::NonRecursive) {
            Ok(()) => {
                debug!(dir = %dir.display(), "watching TLS files");
                dirs.insert(dir.to_path_buf());
            }
            Err(e) => {
                warn!(dir = %dir.display(), error = %e, "cannot watch TLS files; use SIGHUP after replacing them")
            }
        }
    }
}

fn start_watcher(
    source: Source,
    tx: mpsc::Sender<Trigger>,
    tls: TlsWatch,
) -> Option<notify::RecommendedWatcher> {
    let dir = source.watch_dir();
    let watched = source.clone();
    let handler = move |res: notify::Result<notify::Event>| match res {
        Ok(event) => {
            if event.kind.is_access() {
                return;
            }
            let tls_file = |p: &PathBuf| {
                tls.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .contains(p)
            };
            if event
                .paths
                .iter()
                .any(|p| watched.concerns(p) || tls_file(p))
            {
                // A full channel already holds a pending reload: dropping is fine.
                let _ = tx.try_send(Trigger::FileChange);
            }
        }
        Err(e) => warn!(error = %e, "file watcher error"),
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            error!(error = %e, "cannot watch the file provider; use SIGHUP to reload");
            return None;
        }
    };
    let mode = match source {
        Source::File(_) => RecursiveMode::NonRecursive,
        Source::Directory(_) => RecursiveMode::Recursive,
    };
    if let Err(e) = watcher.watch(&dir, mode) {
        error!(dir = %dir.display(), error = %e, "cannot watch the file provider; use SIGHUP to reload");
        return None;
    }
    debug!(dir = %dir.display(), "watching the file provider");
    Some(watcher)
}

fn spawn_sighup(tx: mpsc::Sender<Trigger>) {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    info!("SIGHUP: re-reading the dynamic configuration");
                    let _ = tx.try_send(Trigger::Signal);
                }
            });
        }
        Err(e) => warn!(error = %e, "cannot install the SIGHUP handler"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::file_provider::parse_dynamic;
    use crate::config::source::Format;

    /// Reload `n`: every router, service and middleware has a name no earlier reload used.
    fn renamed(n: usize) -> DynamicConfig {
        let yaml = format!(
            r#"
http:
  routers:
    r{n}: {{rule: "Host(`a.test`)", service: w{n}, middlewares: [f{n}, b{n}]}}
  middlewares:
    f{n}: {{inFlightReq: {{amount: 1}}}}
    b{n}: {{circuitBreaker: {{expression: "NetworkErrorRatio() > 0.5"}}}}
  services:
    w{n}: {{weighted: {{services: [{{name: s{n}, weight: 1}}]}}}}
    s{n}: {{loadBalancer: {{servers: [{{url: "http://127.0.0.1:1"}}]}}}}
tcp:
  routers:
    t{n}: {{rule: "HostSNI(`*`)", service: tw{n}, middlewares: [c{n}]}}
  middlewares:
    c{n}: {{inFlightConn: {{amount: 1}}}}
  services:
    tw{n}: {{weighted: {{services: [{{name: ts{n}, weight: 1}}]}}}}
    ts{n}: {{loadBalancer: {{servers: [{{address: "127.0.0.1:1"}}], healthCheck: {{interval: 1h}}}}}}
udp:
  routers:
    u{n}: {{service: uw{n}}}
  services:
    uw{n}: {{weighted: {{services: [{{name: us{n}, weight: 1}}]}}}}
    us{n}: {{loadBalancer: {{servers: [{{address: "127.0.0.1:1"}}]}}}}
"#
        );
        parse_dynamic(&yaml, Format::Yaml, "dynamic.yml").expect("valid configuration")
    }

    /// The states of one snapshot's routers and services, by registry.
    fn kept_counts(internal: &Internal) -> [usize; 7] {
        let kept = &internal.kept;
        [
            kept.in_flight_reqs.len(),
            kept.circuit_breakers.len(),
            kept.http_weighted.len(),
            kept.in_flight_conns.len(),
            kept.tcp_positions.len(),
            kept.udp_positions.len(),
            kept.tcp_health.len(),
        ]
    }

    #[tokio::test]
    async fn reloads_with_ever_new_names_keep_only_the_installed_snapshots_state() {
        let args: Vec<String> = [
            "--entryPoints.web.address=127.0.0.1:0",
            "--entryPoints.dns.address=127.0.0.1:0/udp",
        ]
        .map(String::from)
        .to_vec();
        let st = crate::config::static_cfg::load_static(&args, &[])
            .expect("static configuration")
            .config;
        let st = Arc::new(st);
        let internal = Internal::start(&st, crate::acme::Acme::new(&st), Default::default())
            .await
            .expect("internal services");
        let internal = Arc::new(internal);
        let store = Arc::new(ArcSwap::from_pointee(Snapshot::empty()));
        let mut reloader = Reloader::new(st, internal.clone(), store, Default::default());
        for n in 0..20 {
            assert!(reloader.update("test", renamed(n)));
            // The HTTP and TCP balancers are the weighted service and its load balancer;
            // UDP the same; one of each middleware; one TCP health check.
            assert_eq!(kept_counts(&internal), [1, 1, 1, 1, 2, 2, 1], "reload {n}");
        }
    }
}
