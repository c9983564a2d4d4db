//! ACME certificates (`certificatesResolvers.<name>.acme`): each resolver obtains the
//! certificates its routers ask for from an ACME CA (RFC 8555, through `instant-acme`),
//! keeps them in its storage file, serves them at once, and renews them before they expire.
//!
//! How it fits the rest: after each configuration is applied, the reloader tells [`Acme`]
//! which domains routers want ([`wanted`]); each resolver's worker orders what is missing or
//! due for renewal, one order at a time, and on success saves the storage file and bumps a
//! generation counter that makes the reloader build a new snapshot, whose certificate store
//! includes [`Acme::certificates`]. Challenges are answered by the running entrypoints:
//! HTTP-01 by the `acme-http@internal` route ([`Acme::http01_handler`]), TLS-ALPN-01 during
//! the handshake ([`Acme::tls_alpn_acceptor`]). Failed orders are retried with exponential
//! backoff; meanwhile everything else keeps serving (the routers with the default
//! certificate). DNS-01 is not supported.
//!
//! A resolver with `sharedStorage` (an extension) keeps its account and certificates in
//! etcd or Redis instead ([`shared`]), so that a fleet serves the same certificates from one
//! account: an instance orders only while it holds the resolver's lock in the store (one
//! order at a time across the fleet); the others wait, reading the store until the
//! certificate appears. While the store is unreachable, loaded certificates keep being
//! served and nothing is ordered.

mod challenge;
mod client;
mod order;
mod shared;
mod storage;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use instant_acme::{Account, AccountCredentials, NewAccount};
use rustls::sign::CertifiedKey;
use tokio::sync::Notify;
use tracing::{error, info, warn};

pub use challenge::{Challenges, HTTP01_PREFIX, Http01Handler};
pub use storage::StoredDomain;

use crate::config::StaticConfig;
use crate::config::dynamic::DynamicConfig;
use crate::config::static_cfg::Acme as AcmeConfig;
use crate::config::validate::Report;
use crate::providers::kv::MAX_VALUE_BYTES;
use client::{AcmeHttp, Timeouts, Trust};
use order::{Answering, KeyType};
use shared::{Lock, SharedError, SharedStore};
use storage::{ResolverData, Storage, StoredAccount, StoredCertificate};

/// The first retry of a failed order waits this long; each further failure doubles it.
const FIRST_RETRY: Duration = Duration::from_secs(30);
const LAST_RETRY: Duration = Duration::from_secs(3600);
/// With shared storage: the first wait after the store failed; it doubles up to
/// [`STORE_LAST_RETRY`].
const STORE_FIRST_RETRY: Duration = Duration::from_secs(1);
const STORE_LAST_RETRY: Duration = Duration::from_secs(30);
/// A failed order is recorded in the shared storage for its retry delay less this.
const FAILURE_MARGIN: Duration = Duration::from_secs(2);
/// How often an instance waiting for another's order reads the store.
const WAIT_POLL: Duration = Duration::from_millis(500);
/// With shared storage: the longest time between two reads of the certificates, so that
/// renewals made by other instances are served.
const SHARED_REFRESH: Duration = Duration::from_secs(60);

/// Every resolver of the static configuration, and the challenges in progress.
pub struct Acme {
    resolvers: BTreeMap<String, Arc<Resolver>>,
    shared: Arc<Shared>,
    /// Why resolvers did not start (for `sallyport check`).
    problems: Vec<String>,
}

/// What resolvers share with the rest of the process.
struct Shared {
    challenges: Arc<Challenges>,
    /// Bumped when a resolver's certificates change; the reloader watches it.
    generation: tokio::sync::watch::Sender<u64>,
}

impl Acme {
    /// The resolvers of `st`. A resolver that cannot start (unreadable storage, bad CA files,
    /// an unknown key type) is reported and left out; the others run.
    pub fn new(st: &StaticConfig) -> Acme {
        let shared = Arc::new(Shared {
            challenges: Arc::new(Challenges::default()),
            generation: tokio::sync::watch::Sender::new(0),
        });
        let mut storages: HashMap<PathBuf, Arc<Storage>> = HashMap::new();
        let mut resolvers = BTreeMap::new();
        let mut problems = Vec::new();
        let mut not_started = |name: &str, why: String| {
            error!(resolver = %name, "certificate resolver not started: {why}");
            problems.push(format!("certificate resolver {name} not started: {why}"));
        };
        for (name, resolver) in &st.certificates_resolvers {
            let Some(cfg) = &resolver.acme else {
                if resolver.tailscale.is_some() {
                    warn!(resolver = %name, "tailscale certificate resolvers are not supported; routers naming it get the default certificate");
                }
                continue;
            };
            if let Some(ep) = cfg.http_challenge.as_ref().map(|h| &h.entry_point)
                && !ep.is_empty()
                && !st
                    .entry_points
                    .get(ep)
                    .is_some_and(|e| e.address.protocol == crate::config::static_cfg::Protocol::Tcp)
            {
                not_started(
                    name,
                    format!(
                        "httpChallenge.entryPoint {ep} is not a TCP entrypoint of this configuration"
                    ),
                );
                continue;
            }
            match Resolver::new(name, cfg, &mut storages, shared.clone()) {
                Ok(r) => {
                    resolvers.insert(name.clone(), Arc::new(r));
                }
                Err(why) => not_started(name, why),
            }
        }
        Acme {
            resolvers,
            shared,
            problems,
        }
    }

    /// Why resolvers did not start.
    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    /// No resolver at all.
    pub fn is_empty(&self) -> bool {
        self.resolvers.is_empty()
    }

    /// Starts each resolver's worker (orders and renewals) until `stop`.
    pub fn start(&self, stop: tokio::sync::watch::Receiver<bool>) {
        for resolver in self.resolvers.values() {
            tokio::spawn(resolver.clone().work(stop.clone()));
        }
    }

    /// Every certificate the resolvers hold that has not expired.
    pub fn certificates(&self) -> Vec<Arc<CertifiedKey>> {
        let now = SystemTime::now();
        self.resolvers
            .values()
            .flat_map(|r| r.loaded())
            .filter(|c| c.not_after > now)
            .map(|c| c.key)
            .collect()
    }

    /// Follows certificate changes (a counter): the reloader builds a new snapshot on each.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.generation.subscribe()
    }

    /// Hands each resolver the domains its routers want; missing ones are ordered.
    pub fn want(&self, wanted: &[Wanted]) {
        for (name, resolver) in &self.resolvers {
            let mine: Vec<StoredDomain> = wanted
                .iter()
                .filter(|w| &w.resolver == name)
                .map(|w| w.domain.clone())
                .collect();
            resolver.want(mine);
        }
        for w in wanted {
            if !self.resolvers.contains_key(&w.resolver) {
                warn!(router = %w.router, resolver = %w.resolver, "router uses a nonexistent certificate resolver");
            }
        }
    }

    /// The entrypoints whose plaintext HTTP answers HTTP-01 challenges.
    pub fn http01_entrypoints(&self) -> Vec<String> {
        self.resolvers
            .values()
            .filter_map(|r| r.http01_entrypoint.clone())
            .collect()
    }

    pub fn http01_handler(&self) -> Http01Handler {
        Http01Handler {
            challenges: self.shared.challenges.clone(),
            shared: self
                .resolvers
                .values()
                .filter_map(|r| match &r.keeping {
                    Keeping::Shared(store) => Some(store.clone()),
                    Keeping::File(_) => None,
                })
                .collect(),
        }
    }

    /// The acceptor of TLS-ALPN-01 handshakes, when a resolver uses that challenge.
    pub fn tls_alpn_acceptor(&self) -> Option<tokio_rustls::TlsAcceptor> {
        if !self.resolvers.values().any(|r| r.answering.tls_alpn01) {
            return None;
        }
        match challenge::tls_alpn_acceptor(self.shared.challenges.clone()) {
            Ok(acceptor) => Some(acceptor),
            Err(e) => {
                error!(error = %e, "cannot answer TLS-ALPN-01 challenges");
                None
            }
        }
    }
}

/// A certificate a router asks a resolver for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    pub resolver: String,
    pub domain: StoredDomain,
    /// The router asking (for logs).
    pub router: String,
}

/// The certificates the enabled routers of `dy` ask their resolvers for: each of a router's
/// `tls.domains`, or else one certificate for the domains of its `Host`/`HostSNI` rule.
/// Wildcard names need DNS-01, which is not supported: such a certificate is reported and
/// skipped.
pub fn wanted(dy: &DynamicConfig, report: &Report) -> Vec<Wanted> {
    let mut out: Vec<Wanted> = Vec::new();
    let mut add = |router: &str,
                   resolver: &str,
                   domains: &[crate::config::dynamic::Domain],
                   rule_names: Vec<String>| {
        if resolver.is_empty() {
            return;
        }
        let sets: Vec<Vec<String>> = if domains.is_empty() {
            vec![rule_names]
        } else {
            domains
                .iter()
                .map(|d| {
                    std::iter::once(d.main.clone())
                        .chain(d.sans.iter().cloned())
                        .collect()
                })
                .collect()
        };
        for set in sets {
            let mut names: Vec<String> = Vec::new();
            for n in set {
                let n = n.trim().trim_end_matches('.').to_ascii_lowercase();
                if !n.is_empty() && !names.contains(&n) {
                    names.push(n);
                }
            }
            if names.is_empty() {
                warn!(router = %router, resolver = %resolver, "no domain found in the rule or tls.domains: no certificate to obtain");
                continue;
            }
            if let Some(wild) = names.iter().find(|n| n.starts_with("*.")) {
                error!(router = %router, resolver = %resolver, domain = %wild, "wildcard certificates need the DNS-01 challenge, which is not supported; not obtaining this certificate");
                continue;
            }
            let domain = StoredDomain {
                main: names[0].clone(),
                sans: names[1..].to_vec(),
            };
            if !out
                .iter()
                .any(|w| w.resolver == resolver && w.domain == domain)
            {
                out.push(Wanted {
                    resolver: resolver.to_owned(),
                    domain,
                    router: router.to_owned(),
                });
            }
        }
    };
    for (name, resolved) in &report.resolved_http_routers {
        if !report.http_router_enabled(name) {
            continue;
        }
        let Some(router) = dy.http.routers.get(&resolved.origin) else {
            continue;
        };
        let Some(tls) = &router.value.tls else {
            continue;
        };
        let hosts = l7::rule::HttpRule::compile(&router.value.rule.value)
            .map(|r| r.hosts())
            .unwrap_or_default();
        add(name, &tls.cert_resolver, &tls.domains, hosts);
    }
    for (name, router) in &dy.tcp.routers {
        if !report.tcp_router_enabled(name) {
            continue;
        }
        let Some(tls) = router.value.tls.as_ref().filter(|t| !t.passthrough) else {
            continue;
        };
        let names = l4::tcp::rule::TcpRule::compile(&router.value.rule.value, true)
            .map(|r| r.server_names())
            .unwrap_or_default();
        add(name, &tls.cert_resolver, &tls.domains, names);
    }
    out
}

/// When a certificate is renewed and how often that is checked, from
/// `certificatesDuration` (hours), as Traefik documents it.
fn renewal(certificates_duration_hours: i64) -> (Duration, Duration) {
    const HOUR: u64 = 3600;
    const DAY: u64 = 24 * HOUR;
    let (period, interval) = match certificates_duration_hours {
        h if h >= 365 * 24 => (4 * 30 * DAY, 7 * DAY),
        h if h >= 90 * 24 => (30 * DAY, DAY),
        h if h >= 7 * 24 => (DAY, HOUR),
        h if h >= 24 => (6 * HOUR, 10 * 60),
        _ => (20 * 60, 60),
    };
    (Duration::from_secs(period), Duration::from_secs(interval))
}

/// A stored certificate, loaded.
#[derive(Clone)]
struct Loaded {
    domain: StoredDomain,
    key: Arc<CertifiedKey>,
    not_after: SystemTime,
}

impl Loaded {
    fn from_stored(stored: &StoredCertificate) -> Result<Loaded, String> {
        let (chain, key) = stored.pem()?;
        let certified = l4::tls::load_certified_key(&chain, &key).map_err(|e| e.to_string())?;
        let not_after = certified
            .cert
            .first()
            .and_then(|leaf| x509_parser::parse_x509_certificate(leaf).ok())
            .map(|(_, parsed)| parsed.validity().not_after.timestamp())
            .and_then(|secs| u64::try_from(secs).ok())
            .map(|secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
            .ok_or("the certificate's expiry cannot be read")?;
        Ok(Loaded {
            domain: stored.domain.clone(),
            key: certified,
            not_after,
        })
    }

    fn covers(&self, domain: &StoredDomain) -> bool {
        domain
            .names()
            .all(|n| self.domain.names().any(|m| m.eq_ignore_ascii_case(n)))
    }
}

/// A failed domain set: when it may be tried again, and the wait after the next failure.
struct Backoff {
    next_try: Instant,
    delay: Duration,
}

struct State {
    data: ResolverData,
    loaded: Vec<Loaded>,
    wanted: Vec<StoredDomain>,
    failures: HashMap<Vec<String>, Backoff>,
    /// Shared storage: the malformed values already reported, by key (reported again only
    /// when they change).
    reported: HashMap<String, Vec<u8>>,
}

/// Where a resolver keeps its account and certificates.
enum Keeping {
    File(Arc<Storage>),
    Shared(Arc<SharedStore>),
}

struct Resolver {
    name: String,
    cfg: AcmeConfig,
    keeping: Keeping,
    http: AcmeHttp,
    key_type: KeyType,
    answering: Answering,
    http01_entrypoint: Option<String>,
    renew_period: Duration,
    check_interval: Duration,
    state: Mutex<State>,
    account: tokio::sync::Mutex<Option<Account>>,
    wake: Notify,
    shared: Arc<Shared>,
}

impl Resolver {
    fn new(
        name: &str,
        cfg: &AcmeConfig,
        storages: &mut HashMap<PathBuf, Arc<Storage>>,
        shared: Arc<Shared>,
    ) -> Result<Resolver, String> {
        if cfg.dns_challenge.is_some() {
            warn!(resolver = %name, "dnsChallenge is not supported (HTTP-01 and TLS-ALPN-01 are)");
        }
        let http01_entrypoint = cfg
            .http_challenge
            .as_ref()
            .map(|h| h.entry_point.clone())
            .filter(|ep| !ep.is_empty());
        let answering = Answering {
            http01: http01_entrypoint.is_some(),
            tls_alpn01: cfg.tls_challenge.is_some(),
        };
        if !answering.http01 && !answering.tls_alpn01 {
            return Err("no httpChallenge (with an entryPoint) or tlsChallenge: this resolver could not answer any challenge".into());
        }
        let (key_type, widened) = KeyType::parse(&cfg.key_type).ok_or_else(|| {
            format!(
                "unknown keyType {:?} (EC256, EC384, RSA2048, RSA3072, RSA4096, RSA8192)",
                cfg.key_type
            )
        })?;
        if widened {
            warn!(resolver = %name, "keyType RSA8192 is not available: RSA4096 keys are generated");
        }
        if cfg.shared_storage.is_some() && !answering.http01 {
            warn!(resolver = %name, "with sharedStorage, TLS-ALPN-01 answers are not shared: the CA must reach the instance that orders (use httpChallenge for a fleet)");
        }
        let (keeping, data) = match &cfg.shared_storage {
            // Read by the worker: connecting must not hold up the start.
            Some(shared) => (
                Keeping::Shared(Arc::new(
                    SharedStore::new(shared, name).map_err(|e| e.to_string())?,
                )),
                ResolverData::default(),
            ),
            None => {
                let path = PathBuf::from(if cfg.storage.is_empty() {
                    "acme.json"
                } else {
                    &cfg.storage
                });
                let storage = match storages.get(&path) {
                    Some(s) => s.clone(),
                    None => {
                        let s = Arc::new(Storage::open(&path).map_err(|e| e.to_string())?);
                        storages.insert(path, s.clone());
                        s
                    }
                };
                let data = storage.resolver(name).map_err(|e| e.to_string())?;
                (Keeping::File(storage), data)
            }
        };
        let mut loaded = Vec::new();
        for stored in &data.certificates {
            match Loaded::from_stored(stored) {
                Ok(l) => loaded.push(l),
                Err(why) => {
                    error!(resolver = %name, domain = %stored.domain.main, "stored certificate not served: {why}")
                }
            }
        }
        if let (false, Keeping::File(storage)) = (loaded.is_empty(), &keeping) {
            info!(resolver = %name, storage = %storage.path().display(), certificates = loaded.len(), "ACME certificates loaded from storage");
        }
        let roots = client::roots(&Trust {
            ca_certificates: &cfg.ca_certificates,
            system_pool: cfg.ca_system_cert_pool,
        })
        .map_err(|e| e.to_string())?;
        let positive = |d: Option<crate::config::Duration>, default: u64| {
            d.and_then(|d| d.to_std())
                .filter(|d| !d.is_zero())
                .unwrap_or(Duration::from_secs(default))
        };
        let timeouts = Timeouts {
            total: positive(cfg.client_timeout, 120),
            response_header: positive(cfg.client_response_header_timeout, 30),
        };
        let http = AcmeHttp::new(roots, timeouts).map_err(|e| e.to_string())?;
        let (renew_period, check_interval) = renewal(cfg.certificates_duration);
        Ok(Resolver {
            name: name.to_owned(),
            cfg: cfg.clone(),
            keeping,
            http,
            key_type,
            answering,
            http01_entrypoint,
            renew_period,
            check_interval,
            state: Mutex::new(State {
                data,
                loaded,
                wanted: Vec::new(),
                failures: HashMap::new(),
                reported: HashMap::new(),
            }),
            account: tokio::sync::Mutex::new(None),
            wake: Notify::new(),
            shared,
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn loaded(&self) -> Vec<Loaded> {
        self.state().loaded.clone()
    }

    fn want(&self, wanted: Vec<StoredDomain>) {
        let mut state = self.state();
        if state.wanted != wanted {
            state.wanted = wanted;
            drop(state);
            self.wake.notify_one();
        }
    }

    /// The wanted domain sets with no certificate, or whose certificate is due for renewal,
    /// that are not waiting out a failure; and when the earliest waiting one may go.
    fn due(&self) -> (Vec<StoredDomain>, Option<Instant>) {
        let state = self.state();
        let renew_before = SystemTime::now() + self.renew_period;
        let now = Instant::now();
        let mut due = Vec::new();
        let mut next = None::<Instant>;
        for domain in &state.wanted {
            if fresh(&state.loaded, domain, renew_before) {
                continue;
            }
            let key: Vec<String> = domain.names().map(str::to_owned).collect();
            match state.failures.get(&key) {
                Some(b) if b.next_try > now => {
                    next = Some(next.map_or(b.next_try, |n| n.min(b.next_try)));
                }
                _ => due.push(domain.clone()),
            }
        }
        (due, next)
    }

    /// Orders what is due, one at a time, then sleeps until the next retry, the next
    /// renewal check, or new wants.
    async fn work(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut check_interval = self.check_interval;
        if let Keeping::Shared(store) = &self.keeping {
            check_interval = check_interval.min(SHARED_REFRESH);
            info!(resolver = %self.name, keys = %store.key(""), "ACME storage shared in the store");
        }
        loop {
            if let Keeping::Shared(store) = &self.keeping
                && let Err(e) = self.sync(store).await
            {
                warn!(resolver = %self.name, error = %e, "shared ACME storage unreachable: serving the certificates already loaded");
            }
            let (due, next_retry) = self.due();
            if let Some(domain) = due.first() {
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    _ = self.obtain(domain) => {}
                }
                continue;
            }
            let wait = next_retry
                .map(|at| at.saturating_duration_since(Instant::now()))
                .unwrap_or(check_interval)
                .min(check_interval);
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One attempt at `domain`, through the fleet's lock when the storage is shared.
    async fn obtain(&self, domain: &StoredDomain) {
        match &self.keeping {
            Keeping::File(_) => {
                // A failure is logged and backed off by `order`; no one else is told.
                let _failure = self.order(domain, None).await;
            }
            Keeping::Shared(store) => self.obtain_shared(store, domain).await,
        }
    }

    /// With shared storage: orders `domain` while holding the lock, or waits for the instance
    /// that holds it to store the certificate. Nothing is ordered while the store cannot be
    /// read: the order's outcome could not be shared, and the certificate may be there.
    async fn obtain_shared(&self, store: &SharedStore, domain: &StoredDomain) {
        let names: Vec<String> = domain.names().map(str::to_owned).collect();
        let before = self.newest_covering(domain);
        let mut waiting = false;
        loop {
            if let Err(e) = self.sync(store).await {
                return self.store_failed(&names, &e);
            }
            let newest = self.newest_covering(domain);
            if self.is_fresh(domain) || newest > before {
                if waiting {
                    info!(resolver = %self.name, domains = %names.join(","), "ACME certificate ordered by another instance loaded from the shared storage");
                }
                if let Some(not_after) = newest.filter(|_| !self.is_fresh(domain)) {
                    self.short_lived(&names, not_after);
                }
                return;
            }
            match store.get(&failure_key(domain)).await {
                Err(e) => return self.store_failed(&names, &e),
                Ok(Some(why)) => {
                    let why = String::from_utf8_lossy(&why);
                    self.failed(
                        &names,
                        &format!("another instance's order failed, not ordering again yet: {why}"),
                        FIRST_RETRY,
                        LAST_RETRY,
                    );
                    return;
                }
                Ok(None) => {}
            }
            match store.try_lock().await {
                Err(e) => return self.store_failed(&names, &e),
                Ok(None) => {
                    if !self.state().wanted.contains(domain) {
                        // No router asks for it any more.
                        return;
                    }
                    if !waiting {
                        info!(resolver = %self.name, domains = %names.join(","), lock = %store.key("lock"), "ACME lock held by another instance: waiting for the certificate it orders");
                        waiting = true;
                    }
                    tokio::time::sleep(WAIT_POLL).await;
                }
                Ok(Some(lock)) => {
                    info!(resolver = %self.name, domains = %names.join(","), lock = %store.key("lock"), ttl = ?store.lock_ttl(), "ACME lock acquired");
                    self.order_locked(store, &lock, domain, &names, before)
                        .await;
                    match store.release(lock).await {
                        Ok(()) => {
                            info!(resolver = %self.name, lock = %store.key("lock"), "ACME lock released")
                        }
                        Err(e) => {
                            warn!(resolver = %self.name, lock = %store.key("lock"), error = %e, "ACME lock not released; it expires by itself after lockTTL")
                        }
                    }
                    return;
                }
            }
        }
    }

    /// Holding the lock: orders `domain` unless the previous holder stored it meanwhile,
    /// renewing the lock until the order ends, and abandoning the order if it is lost.
    async fn order_locked(
        &self,
        store: &SharedStore,
        lock: &Lock,
        domain: &StoredDomain,
        names: &[String],
        before: Option<SystemTime>,
    ) {
        if let Err(e) = self.sync(store).await {
            return self.store_failed(names, &e);
        }
        if self.is_fresh(domain) || self.newest_covering(domain) > before {
            return;
        }
        let failure = tokio::select! {
            failure = self.order(domain, Some((store, lock))) => failure,
            lost = store.hold(lock) => {
                let why = format!("order abandoned: the ACME lock could not be kept ({lost})");
                Some((self.failed(names, &why, FIRST_RETRY, LAST_RETRY), why))
            }
        };
        // The fleet waits out the failure with this instance, rather than each instance
        // trying in turn (the CA's limits count failed validations). The record goes a
        // little before this instance's own retry, which must not find it (etcd expires
        // leases up to a second late).
        if let Some((retry_in, why)) = failure
            && let Err(e) = store
                .put_expiring(
                    &failure_key(domain),
                    why.as_bytes(),
                    retry_in.saturating_sub(FAILURE_MARGIN),
                )
                .await
        {
            warn!(resolver = %self.name, error = %e, "the failed order is not recorded in the shared storage; other instances may try at once");
        }
    }

    /// Reads the stored certificates and serves the new or changed ones. A value that is not
    /// a usable certificate is reported (once per value) by its key and skipped.
    async fn sync(&self, store: &SharedStore) -> Result<(), SharedError> {
        let pairs = store.certificates().await?;
        let mut changed = 0usize;
        {
            let mut state = self.state();
            for (key, value) in pairs {
                let read = if value.len() > MAX_VALUE_BYTES {
                    Err(format!("larger than {MAX_VALUE_BYTES} bytes"))
                } else {
                    serde_json::from_slice::<StoredCertificate>(&value)
                        .map_err(|e| format!("not a stored certificate (JSON): {e}"))
                };
                let stored = match read {
                    Ok(stored)
                        if state.data.certificates.iter().any(|c| {
                            c.domain == stored.domain
                                && c.certificate == stored.certificate
                                && c.key == stored.key
                        }) =>
                    {
                        continue;
                    }
                    Ok(stored) => stored,
                    Err(why) => {
                        report_bad(&self.name, &mut state, key, value, &why);
                        continue;
                    }
                };
                match Loaded::from_stored(&stored) {
                    Ok(loaded) => {
                        state
                            .data
                            .certificates
                            .retain(|c| c.domain != stored.domain);
                        state.data.certificates.push(stored);
                        state.loaded.retain(|c| c.domain != loaded.domain);
                        state.loaded.push(loaded);
                        state.reported.remove(&key);
                        changed += 1;
                    }
                    Err(why) => report_bad(&self.name, &mut state, key, value, &why),
                }
            }
        }
        if changed > 0 {
            info!(resolver = %self.name, certificates = changed, "ACME certificates loaded from the shared storage");
            self.shared.generation.send_modify(|g| *g += 1);
        }
        Ok(())
    }

    fn is_fresh(&self, domain: &StoredDomain) -> bool {
        fresh(
            &self.state().loaded,
            domain,
            SystemTime::now() + self.renew_period,
        )
    }

    /// The latest expiry of the loaded certificates covering `domain`.
    fn newest_covering(&self, domain: &StoredDomain) -> Option<SystemTime> {
        self.state()
            .loaded
            .iter()
            .filter(|c| c.covers(domain))
            .map(|c| c.not_after)
            .max()
    }

    fn store_failed(&self, names: &[String], e: &SharedError) {
        self.failed(
            names,
            &format!("shared ACME storage unreachable, not ordering: {e}"),
            STORE_FIRST_RETRY,
            STORE_LAST_RETRY,
        );
    }

    /// Logs why `names` failed and backs them off: `first` at first, doubling up to `last`.
    /// Returns the wait before the next try.
    fn failed(&self, names: &[String], why: &str, first: Duration, last: Duration) -> Duration {
        let mut state = self.state();
        let backoff = state.failures.entry(names.to_vec()).or_insert(Backoff {
            next_try: Instant::now(),
            delay: first,
        });
        backoff.next_try = Instant::now() + backoff.delay;
        let retry_in = backoff.delay;
        backoff.delay = (backoff.delay * 2).min(last);
        error!(resolver = %self.name, domains = %names.join(","), retry_in = ?retry_in, "unable to obtain ACME certificate: {why}");
        retry_in
    }

    /// A certificate due for renewal as soon as it is issued: wait a check interval rather
    /// than order in a loop.
    fn short_lived(&self, names: &[String], not_after: SystemTime) {
        if not_after > SystemTime::now() + self.renew_period {
            return;
        }
        warn!(resolver = %self.name, "the CA issues certificates shorter than the renewal period of certificatesDuration; renewing once per check interval");
        self.state().failures.insert(
            names.to_vec(),
            Backoff {
                next_try: Instant::now() + self.check_interval,
                delay: FIRST_RETRY,
            },
        );
    }

    /// One order for `domain`; the outcome is stored, logged, and on failure backed off.
    /// Returns a failure: the wait before the next try, and why.
    async fn order(
        &self,
        domain: &StoredDomain,
        shared: Option<(&SharedStore, &Lock)>,
    ) -> Option<(Duration, String)> {
        let names: Vec<String> = domain.names().map(str::to_owned).collect();
        let renewing = self.state().loaded.iter().any(|c| c.covers(domain));
        info!(resolver = %self.name, domains = %names.join(","), renewing, "obtaining an ACME certificate");
        let result = async {
            let account = self.account().await?;
            order::obtain(
                &account,
                &names,
                &self.shared.challenges,
                self.answering,
                self.key_type,
                shared,
            )
            .await
            .map_err(|e| e.to_string())
        }
        .await;
        let issued = match result.and_then(|issued| {
            let stored = StoredCertificate::new(domain.clone(), &issued.chain_pem, &issued.key_pem);
            Loaded::from_stored(&stored)
                .map(|loaded| (stored, loaded))
                .map_err(|why| format!("the CA issued an unusable certificate: {why}"))
        }) {
            Ok(issued) => issued,
            Err(why) => {
                return Some((self.failed(&names, &why, FIRST_RETRY, LAST_RETRY), why));
            }
        };
        let (stored, loaded) = issued;
        let not_after = loaded.not_after;
        let saved = {
            let mut state = self.state();
            state.failures.remove(&names);
            state.data.certificates.retain(|c| c.domain != *domain);
            state.data.certificates.push(stored.clone());
            state.loaded.retain(|c| c.domain != *domain);
            state.loaded.push(loaded);
            match &self.keeping {
                Keeping::File(storage) => Some(
                    storage
                        .save(&self.name, &state.data)
                        .map_err(|e| e.to_string()),
                ),
                Keeping::Shared(_) => None,
            }
        };
        self.short_lived(&names, not_after);
        let saved = match (saved, &self.keeping) {
            (Some(saved), _) => saved,
            (None, Keeping::Shared(store)) => {
                self.put_shared(store, &certificate_key(domain), &stored)
                    .await
            }
            (None, Keeping::File(_)) => Ok(()),
        };
        if let Err(e) = saved {
            error!(resolver = %self.name, "certificate obtained but not stored (it is served until restart): {e}");
        }
        info!(resolver = %self.name, domains = %names.join(","), "ACME certificate obtained");
        self.shared.generation.send_modify(|g| *g += 1);
        None
    }

    /// Writes `value` as JSON at `rest` in the shared store.
    async fn put_shared<T: serde::Serialize>(
        &self,
        store: &SharedStore,
        rest: &str,
        value: &T,
    ) -> Result<(), String> {
        let json = serde_json::to_vec(value).map_err(|e| e.to_string())?;
        store
            .put(rest, &json)
            .await
            .map_err(|e| format!("{}: {e}", store.key(rest)))
    }

    /// The stored account: the file's, or the shared store's (a malformed one is reported
    /// and replaced by a new registration).
    async fn stored_account(&self) -> Result<Option<StoredAccount>, String> {
        let store = match &self.keeping {
            Keeping::File(_) => return Ok(self.state().data.account.clone()),
            Keeping::Shared(store) => store,
        };
        let value = store
            .get("account")
            .await
            .map_err(|e| format!("shared ACME storage: {e}"))?;
        Ok(value.and_then(|value| match serde_json::from_slice(&value) {
            Ok(account) => Some(account),
            Err(e) => {
                error!(resolver = %self.name, key = %store.key("account"), "stored ACME account ignored (a new one is registered): not an account (JSON): {e}");
                None
            }
        }))
    }

    /// The ACME account: the stored one when it belongs to this CA and email, else a new
    /// registration, which is stored.
    async fn account(&self) -> Result<Account, String> {
        let mut slot = self.account.lock().await;
        if let Some(account) = slot.as_ref() {
            return Ok(account.clone());
        }
        let stored = self.stored_account().await?;
        let reusable = stored.as_ref().and_then(|a| {
            (a.key_type == "P256" && a.ca_server == self.cfg.ca_server && a.email == self.cfg.email)
                .then(|| credentials(a))
                .flatten()
        });
        let account = match reusable {
            Some(credentials) => Account::builder_with_http(Box::new(self.http.clone()))
                .from_credentials(credentials)
                .await
                .map_err(|e| format!("stored ACME account: {e}"))?,
            None => {
                let contact = format!("mailto:{}", self.cfg.email);
                let contacts: Vec<&str> = if self.cfg.email.is_empty() {
                    Vec::new()
                } else {
                    vec![contact.as_str()]
                };
                let (account, credentials) =
                    Account::builder_with_http(Box::new(self.http.clone()))
                        .create(
                            &NewAccount {
                                contact: &contacts,
                                terms_of_service_agreed: true,
                                only_return_existing: false,
                            },
                            self.cfg.ca_server.clone(),
                            None,
                        )
                        .await
                        .map_err(|e| {
                            format!("registering an ACME account at {}: {e}", self.cfg.ca_server)
                        })?;
                let record = stored_account(&self.cfg, &credentials)
                    .ok_or("the new ACME account's credentials cannot be stored")?;
                info!(resolver = %self.name, account = %record.registration.as_ref().map(|r| r.uri.as_str()).unwrap_or(""), "ACME account registered");
                let saved = match &self.keeping {
                    Keeping::File(storage) => {
                        let mut state = self.state();
                        state.data.account = Some(record);
                        storage
                            .save(&self.name, &state.data)
                            .map_err(|e| e.to_string())
                    }
                    Keeping::Shared(store) => self.put_shared(store, "account", &record).await,
                };
                if let Err(e) = saved {
                    error!(resolver = %self.name, "ACME account not stored: {e}");
                }
                account
            }
        };
        *slot = Some(account.clone());
        Ok(account)
    }
}

/// Whether a loaded certificate covers `domain` and is not due for renewal before
/// `renew_before`.
fn fresh(loaded: &[Loaded], domain: &StoredDomain, renew_before: SystemTime) -> bool {
    loaded
        .iter()
        .any(|c| c.covers(domain) && c.not_after > renew_before)
}

/// The shared-storage key of the certificate for `domain`: its names, main first.
fn certificate_key(domain: &StoredDomain) -> String {
    format!(
        "certificates/{}",
        domain.names().collect::<Vec<_>>().join(",")
    )
}

/// The shared-storage key saying why the last order for `domain` failed, until its retry.
fn failure_key(domain: &StoredDomain) -> String {
    format!("failures/{}", domain.names().collect::<Vec<_>>().join(","))
}

/// Logs a stored value that cannot be served, naming its key, unless that value was
/// reported already.
fn report_bad(resolver: &str, state: &mut State, key: String, value: Vec<u8>, why: &str) {
    if state.reported.get(&key) != Some(&value) {
        error!(resolver = %resolver, key = %key, "stored certificate not served: {why}");
        state.reported.insert(key, value);
    }
}

/// instant-acme's credentials from a stored account (P-256 keys written by Sallyport).
fn credentials(stored: &StoredAccount) -> Option<AccountCredentials> {
    let key = STANDARD.decode(stored.private_key.trim()).ok()?;
    let uri = &stored.registration.as_ref()?.uri;
    serde_json::from_value(serde_json::json!({
        "id": uri,
        "key_pkcs8": URL_SAFE_NO_PAD.encode(key),
        "directory": stored.ca_server,
    }))
    .ok()
}

/// The stored form of new credentials, in Traefik's `Account` shape.
fn stored_account(cfg: &AcmeConfig, credentials: &AccountCredentials) -> Option<StoredAccount> {
    let json = serde_json::to_value(credentials).ok()?;
    let id = json.get("id")?.as_str()?.to_owned();
    let key = URL_SAFE_NO_PAD
        .decode(json.get("key_pkcs8")?.as_str()?)
        .ok()?;
    Some(StoredAccount {
        email: cfg.email.clone(),
        registration: Some(storage::Registration {
            uri: id,
            body: None,
        }),
        private_key: STANDARD.encode(key),
        key_type: "P256".to_owned(),
        ca_server: cfg.ca_server.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_follows_traefiks_table() {
        let h = |n: u64| Duration::from_secs(n * 3600);
        assert_eq!(renewal(2160), (h(30 * 24), h(24)));
        assert_eq!(renewal(24 * 365), (h(120 * 24), h(7 * 24)));
        assert_eq!(renewal(24 * 7), (h(24), h(1)));
        assert_eq!(renewal(24), (h(6), Duration::from_secs(600)));
        assert_eq!(
            renewal(1),
            (Duration::from_secs(1200), Duration::from_secs(60))
        );
    }

    #[test]
    fn key_types_are_traefiks_names() {
        assert_eq!(KeyType::parse("EC256"), Some((KeyType::Ec256, false)));
        assert_eq!(KeyType::parse(""), Some((KeyType::Rsa4096, false)));
        assert_eq!(KeyType::parse("RSA8192"), Some((KeyType::Rsa4096, true)));
        assert_eq!(KeyType::parse("P256"), None);
    }

    #[test]
    fn a_certificate_covers_the_names_it_carries_only() {
        let stored = |main: &str, sans: &[&str]| StoredDomain {
            main: main.into(),
            sans: sans.iter().map(|s| (*s).to_owned()).collect(),
        };
        let cert =
            rcgen::generate_simple_self_signed(vec!["a.test".into(), "b.test".into()]).unwrap();
        let loaded = Loaded::from_stored(&StoredCertificate::new(
            stored("a.test", &["b.test"]),
            &cert.cert.pem(),
            &cert.signing_key.serialize_pem(),
        ))
        .unwrap();
        assert!(loaded.covers(&stored("b.test", &[])));
        assert!(loaded.covers(&stored("B.test", &["a.test"])));
        assert!(!loaded.covers(&stored("a.test", &["c.test"])));
        assert!(loaded.not_after > SystemTime::now());
    }

    #[test]
    fn stored_credentials_round_trip() {
        let cfg = AcmeConfig {
            email: "ops@example.com".into(),
            ca_server: "https://ca.test/dir".into(),
            ..AcmeConfig::default()
        };
        let (_, key) = instant_acme::Key::generate_pkcs8().unwrap();
        let creds: AccountCredentials = serde_json::from_value(serde_json::json!({
            "id": "https://ca.test/acct/7",
            "key_pkcs8": URL_SAFE_NO_PAD.encode(key.secret_pkcs8_der()),
            "directory": "https://ca.test/dir",
        }))
        .unwrap();
        let stored = stored_account(&cfg, &creds).unwrap();
        assert_eq!(
            stored.registration.as_ref().unwrap().uri,
            "https://ca.test/acct/7"
        );
        let back = credentials_json(&credentials(&stored).unwrap());
        assert_eq!(back, credentials_json(&creds));
    }

    fn credentials_json(c: &AccountCredentials) -> serde_json::Value {
        serde_json::to_value(c).unwrap()
    }
}
