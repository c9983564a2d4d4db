//! `providers.etcd`: the dynamic configuration in etcd v3 keys, in Traefik's key-value
//! layout ([`super::kv`]), names qualified `@etcd`.
//!
//! The provider reads every key under `<rootKey>/` (one range request), then watches that
//! prefix from the revision it read; after each burst of events it reads the prefix again,
//! so that what is published is always one consistent revision. A full read every
//! [`RESYNC_INTERVAL`] is a safety net. When etcd goes away the last configuration stays
//! and the provider reconnects, waiting [`kv::MIN_BACKOFF`] at first and twice as long after
//! each failure, up to [`kv::MAX_BACKOFF`].

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, GetOptions, WatchOptions};
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::{Publisher, kv};
use crate::config::static_cfg::EtcdProvider;

/// The provider's name in `name@etcd`.
pub const PROVIDER: &str = "etcd";

/// Time between two full reads while connected.
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(30);
/// Bound on connecting and on every read.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// Events arriving within this time of each other are read once.
const BURST: Duration = Duration::from_millis(20);

/// Settings that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum EtcdProviderError {
    #[error("providers.etcd.endpoints is empty")]
    NoEndpoint,
    #[error("providers.etcd.rootKey is empty")]
    RootKey,
    #[error("providers.etcd.tls.{option}: {reason}")]
    Tls {
        option: &'static str,
        reason: String,
    },
}

/// Why a session with etcd ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    #[error("{0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the watch ended: {0}")]
    WatchEnded(String),
    #[error("more than {} bytes under the root key", kv::MAX_TOTAL_BYTES)]
    TooLarge,
}

/// The watcher of one etcd cluster.
pub struct EtcdWatcher {
    endpoints: Vec<String>,
    options: ConnectOptions,
    root: String,
}

impl EtcdWatcher {
    pub fn new(cfg: &EtcdProvider) -> Result<EtcdWatcher, EtcdProviderError> {
        let root = cfg.root_key.trim_end_matches('/').to_owned();
        if root.is_empty() {
            return Err(EtcdProviderError::RootKey);
        }
        let (endpoints, options) = connection(cfg)?;
        Ok(EtcdWatcher {
            endpoints,
            options,
            root,
        })
    }

    /// Watches until `stop`, reconnecting with backoff; publishes every configuration read.
    pub async fn run(
        self,
        publisher: Publisher<BTreeMap<String, Vec<u8>>>,
        stop: watch::Receiver<bool>,
    ) {
        kv::reconnecting(self, publisher, stop).await;
    }
}

impl kv::Session for EtcdWatcher {
    type Error = SessionError;
    const STORE: &'static str = "etcd";

    /// One connection: read everything, watch from that revision, read again after each
    /// burst of events and every [`RESYNC_INTERVAL`]. `Ok` when stopped.
    async fn session(
        &self,
        publisher: &mut Publisher<BTreeMap<String, Vec<u8>>>,
        stop: &mut watch::Receiver<bool>,
        synced: &mut bool,
    ) -> Result<(), SessionError> {
        let mut client =
            bounded(Client::connect(&self.endpoints, Some(self.options.clone()))).await?;
        let revision = self.resync(&mut client, publisher).await?;
        *synced = true;
        let prefix = format!("{}/", self.root);
        let mut events = bounded(
            client.watch(
                prefix.as_bytes(),
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(revision + 1),
                ),
            ),
        )
        .await?;
        info!(endpoints = ?self.endpoints, root_key = %self.root, "etcd provider: watching");
        let mut resync = tokio::time::interval(RESYNC_INTERVAL);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        resync.tick().await;
        loop {
            tokio::select! {
                () = super::stopped(stop) => return Ok(()),
                message = events.message() => match message? {
                    None => return Err(SessionError::WatchEnded("the stream closed".to_owned())),
                    Some(response) if response.canceled() => {
                        return Err(SessionError::WatchEnded(response.cancel_reason().to_owned()));
                    }
                    Some(_) => {
                        // Several keys are usually written together: read once for the burst.
                        tokio::time::sleep(BURST).await;
                        self.resync(&mut client, publisher).await?;
                    }
                },
                _ = resync.tick() => {
                    self.resync(&mut client, publisher).await?;
                }
            }
        }
    }
}

impl EtcdWatcher {
    /// Reads every key under the root, publishes the configuration if it changed, and
    /// returns the revision read.
    async fn resync(
        &self,
        client: &mut Client,
        publisher: &mut Publisher<BTreeMap<String, Vec<u8>>>,
    ) -> Result<i64, SessionError> {
        let prefix = format!("{}/", self.root);
        let response =
            bounded(client.get(prefix.as_bytes(), Some(GetOptions::new().with_prefix()))).await?;
        let revision = response.header().map_or(0, |h| h.revision());
        let mut pairs = BTreeMap::new();
        let mut total = 0usize;
        for pair in response.kvs() {
            total += pair.key().len() + pair.value().len();
            if total > kv::MAX_TOTAL_BYTES {
                return Err(SessionError::TooLarge);
            }
            match std::str::from_utf8(pair.key()) {
                Ok(key) => {
                    pairs.insert(key.to_owned(), pair.value().to_vec());
                }
                Err(_) => {
                    warn!(key = %String::from_utf8_lossy(pair.key()), "etcd provider: key is not UTF-8; skipped")
                }
            }
        }
        let root = self.root.clone();
        publisher.publish(pairs, |pairs| {
            let (config, errors) = kv::read(pairs, &root, PROVIDER, "etcd");
            // Bad keys cost their own objects only: they are logged, the rest is applied.
            for e in &errors {
                error!(provider = PROVIDER, "{e}");
            }
            Ok(config)
        });
        Ok(revision)
    }
}

/// The endpoint URLs (`http(s)://` added where missing) and connection options of `cfg`.
/// The ACME shared storage connects with these too.
pub(crate) fn connection(
    cfg: &EtcdProvider,
) -> Result<(Vec<String>, ConnectOptions), EtcdProviderError> {
    if cfg.endpoints.is_empty() {
        return Err(EtcdProviderError::NoEndpoint);
    }
    let mut options = ConnectOptions::new()
        .with_connect_timeout(COMMAND_TIMEOUT)
        .with_keep_alive(Duration::from_secs(10), COMMAND_TIMEOUT);
    if !cfg.username.is_empty() {
        options = options.with_user(&cfg.username, &cfg.password);
    }
    let scheme = if cfg.tls.is_some() { "https" } else { "http" };
    if let Some(tls) = &cfg.tls {
        options = options.with_tls(tls_options(tls)?);
    }
    let endpoints = cfg
        .endpoints
        .iter()
        .map(|e| {
            if e.contains("://") {
                e.clone()
            } else {
                format!("{scheme}://{e}")
            }
        })
        .collect();
    Ok((endpoints, options))
}

/// The tonic TLS settings: the CA and the client identity (each a path or PEM).
fn tls_options(
    tls: &crate::config::static_cfg::ClientTls,
) -> Result<etcd_client::TlsOptions, EtcdProviderError> {
    let read = |option: &'static str, value: &str| {
        crate::runtime::compile::read_pem_or_path(value)
            .map_err(|reason| EtcdProviderError::Tls { option, reason })
    };
    if tls.insecure_skip_verify {
        return Err(EtcdProviderError::Tls {
            option: "insecureSkipVerify",
            reason: "not supported by the etcd client; give the CA in `ca`".to_owned(),
        });
    }
    let mut options = etcd_client::TlsOptions::new();
    if !tls.ca.is_empty() {
        options = options.ca_certificate(etcd_client::Certificate::from_pem(read("ca", &tls.ca)?));
    }
    match (tls.cert.is_empty(), tls.key.is_empty()) {
        (true, true) => Ok(options),
        (false, false) => Ok(options.identity(etcd_client::Identity::from_pem(
            read("cert", &tls.cert)?,
            read("key", &tls.key)?,
        ))),
        _ => Err(EtcdProviderError::Tls {
            option: "cert",
            reason: "cert and key go together".to_owned(),
        }),
    }
}

/// A request bounded by [`COMMAND_TIMEOUT`].
async fn bounded<T>(
    request: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, SessionError> {
    match tokio::time::timeout(COMMAND_TIMEOUT, request).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(SessionError::Timeout(COMMAND_TIMEOUT)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_settings_are_refused_and_endpoints_get_a_scheme() {
        let cfg = |endpoints: &[&str], root: &str| EtcdProvider {
            endpoints: endpoints.iter().map(|e| (*e).to_owned()).collect(),
            root_key: root.to_owned(),
            ..EtcdProvider::default()
        };
        assert!(matches!(
            EtcdWatcher::new(&cfg(&[], "traefik")),
            Err(EtcdProviderError::NoEndpoint)
        ));
        assert!(matches!(
            EtcdWatcher::new(&cfg(&["127.0.0.1:2379"], "")),
            Err(EtcdProviderError::RootKey)
        ));
        let watcher = EtcdWatcher::new(&cfg(
            &["127.0.0.1:2379", "http://10.0.0.1:2379"],
            "traefik/",
        ))
        .expect("valid");
        assert_eq!(
            watcher.endpoints,
            ["http://127.0.0.1:2379", "http://10.0.0.1:2379"]
        );
        assert_eq!(watcher.root, "traefik");
        let mut insecure = cfg(&["127.0.0.1:2379"], "traefik");
        insecure.tls = Some(crate::config::static_cfg::ClientTls {
            insecure_skip_verify: true,
            ..Default::default()
        });
        assert!(matches!(
            EtcdWatcher::new(&insecure),
            Err(EtcdProviderError::Tls { .. })
        ));
    }
}
