//! The providers besides the file provider (which [`crate::runtime::provider`] runs): each
//! one yields its own dynamic configuration, its names qualified `name@<provider>`, and
//! publishes it here; the reloader merges the latest configuration of every provider into
//! one snapshot.
//!
//! What every provider gets from this module:
//! - an unchanged input (the same HTTP body, the same keys and values) is not published
//!   again ([`Publisher::publish`]);
//! - an input that does not read is logged and not published: the reloader keeps the
//!   provider's last good configuration while the other providers keep updating;
//! - `providers.providersThrottleDuration`: after a configuration of a provider is passed
//!   on, the next one waits that long, and what arrives meanwhile collapses into the
//!   latest ([`forward`]), as Traefik throttles each provider on its own.

pub mod etcd;
pub mod http;
pub mod kv;
pub mod redis;

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::{error, warn};

use crate::config::dynamic::DynamicConfig;
use crate::config::{ConfigError, StaticConfig};

/// A provider's new configuration, for the reloader.
#[derive(Debug)]
pub struct Update {
    /// The provider's name, as in `name@<provider>`.
    pub provider: &'static str,
    pub config: DynamicConfig,
}

/// Where one provider publishes its configurations: only the latest is kept until the
/// throttle lets it through. `I` is the provider's raw input, compared to skip repeats.
pub struct Publisher<I> {
    provider: &'static str,
    tx: watch::Sender<Option<DynamicConfig>>,
    last_input: Option<I>,
}

/// What [`Publisher::publish`] did with an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// The input is the one last seen: nothing to do.
    Unchanged,
    /// The configuration was handed on.
    Sent,
    /// The input did not read; the errors were logged and the last good configuration
    /// stays.
    Rejected,
}

impl<I: PartialEq> Publisher<I> {
    /// A publisher for `provider` and the receiver [`forward`] reads.
    pub fn new(provider: &'static str) -> (Self, watch::Receiver<Option<DynamicConfig>>) {
        let (tx, rx) = watch::channel(None);
        (
            Publisher {
                provider,
                tx,
                last_input: None,
            },
            rx,
        )
    }

    /// Reads `input` with `build` and publishes the configuration, unless `input` is the
    /// input last seen. A rejected input is remembered too, so that the same bad input is
    /// not logged again at every poll.
    pub fn publish(
        &mut self,
        input: I,
        build: impl FnOnce(&I) -> Result<DynamicConfig, Vec<ConfigError>>,
    ) -> Published {
        if self.last_input.as_ref() == Some(&input) {
            return Published::Unchanged;
        }
        let built = build(&input);
        self.last_input = Some(input);
        match built {
            Ok(config) => {
                for w in &config.warnings {
                    warn!(provider = self.provider, "{w}");
                }
                self.tx.send_replace(Some(config));
                Published::Sent
            }
            Err(errors) => {
                for e in &errors {
                    error!(provider = self.provider, "{e}");
                }
                error!(
                    provider = self.provider,
                    errors = errors.len(),
                    "provider configuration rejected; keeping its last good configuration"
                );
                Published::Rejected
            }
        }
    }
}

/// Passes a provider's configurations on to the reloader, one per `throttle` at most:
/// after each one it waits, and whatever was published meanwhile collapses into the latest.
/// Ends when the provider's publisher is dropped or the reloader is gone.
pub async fn forward(
    provider: &'static str,
    mut rx: watch::Receiver<Option<DynamicConfig>>,
    throttle: Duration,
    tx: mpsc::Sender<Update>,
) {
    while rx.changed().await.is_ok() {
        let Some(config) = rx.borrow_and_update().clone() else {
            continue;
        };
        if tx.send(Update { provider, config }).await.is_err() {
            return;
        }
        tokio::time::sleep(throttle).await;
    }
}

/// Resolves once `stop` says so (or its sender is gone). Holds no borrow of the value, so
/// that the futures selecting on it stay `Send`.
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Whether the static configuration enables a provider besides the file provider.
pub fn any_configured(st: &StaticConfig) -> bool {
    st.providers.http.is_some() || st.providers.redis.is_some() || st.providers.etcd.is_some()
}

/// How long startup waits for the first configuration of every provider before the
/// entrypoints open without the ones still silent (a store that is down, say).
pub const FIRST_CONFIGURATION_WAIT: Duration = Duration::from_secs(5);

/// The providers started, and where their throttled configurations arrive.
pub struct Started {
    pub updates: mpsc::Receiver<Update>,
    /// Their names, to know when each one has sent its first configuration.
    pub providers: Vec<&'static str>,
}

/// Starts every configured provider besides the file provider; they run until `stop`.
/// `None` when there is none (or none could start).
pub fn spawn(st: &StaticConfig, stop: watch::Receiver<bool>) -> Option<Started> {
    if !any_configured(st) {
        return None;
    }
    let mut providers = Vec::new();
    let throttle = st
        .providers
        .providers_throttle_duration
        .to_std()
        .unwrap_or(Duration::from_secs(2));
    let (tx, rx) = mpsc::channel(8);
    if let Some(cfg) = &st.providers.http {
        match http::Poller::new(cfg) {
            Ok(poller) => {
                let (publisher, published) = Publisher::new(http::PROVIDER);
                tokio::spawn(poller.run(publisher, stop.clone()));
                tokio::spawn(forward(http::PROVIDER, published, throttle, tx.clone()));
                providers.push(http::PROVIDER);
            }
            Err(e) => error!(error = %e, "the HTTP provider cannot start"),
        }
    }
    if let Some(cfg) = &st.providers.redis {
        match redis::RedisWatcher::new(cfg) {
            Ok(watcher) => {
                let (publisher, published) = Publisher::new(redis::PROVIDER);
                tokio::spawn(watcher.run(publisher, stop.clone()));
                tokio::spawn(forward(redis::PROVIDER, published, throttle, tx.clone()));
                providers.push(redis::PROVIDER);
            }
            Err(e) => error!(error = %e, "the Redis provider cannot start"),
        }
    }
    if let Some(cfg) = &st.providers.etcd {
        match etcd::EtcdWatcher::new(cfg) {
            Ok(watcher) => {
                let (publisher, published) = Publisher::new(etcd::PROVIDER);
                tokio::spawn(watcher.run(publisher, stop.clone()));
                tokio::spawn(forward(etcd::PROVIDER, published, throttle, tx.clone()));
                providers.push(etcd::PROVIDER);
            }
            Err(e) => error!(error = %e, "the etcd provider cannot start"),
        }
    }
    (!providers.is_empty()).then_some(Started {
        updates: rx,
        providers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(router: &str) -> Result<DynamicConfig, Vec<ConfigError>> {
        crate::config::file_provider::parse_dynamic_as(
            &format!("http:\n  routers:\n    {router}: {{rule: 'Host(`a`)', service: s}}\n"),
            crate::config::source::Format::Yaml,
            "test",
            "test",
        )
    }

    #[test]
    fn an_unchanged_input_is_not_published_again_and_a_bad_one_keeps_the_last_good() {
        let (mut publisher, mut rx) = Publisher::new("test");
        assert_eq!(publisher.publish(1, |_| config("a")), Published::Sent);
        assert!(rx.has_changed().expect("open"));
        rx.mark_unchanged();
        assert_eq!(publisher.publish(1, |_| config("b")), Published::Unchanged);
        assert_eq!(
            publisher.publish(2, |_| Err(vec![ConfigError::unlocated("bad")])),
            Published::Rejected
        );
        assert!(!rx.has_changed().expect("open"));
        let kept = rx.borrow().clone().expect("published");
        assert!(kept.http.routers.contains_key("a@test"));
        // The same bad input is not read (nor logged) again; a good one is published.
        assert_eq!(publisher.publish(2, |_| config("b")), Published::Unchanged);
        assert_eq!(publisher.publish(3, |_| config("c")), Published::Sent);
    }

    #[tokio::test]
    async fn the_throttle_passes_the_first_configuration_and_collapses_the_ones_after() {
        let (mut publisher, published) = Publisher::new("test");
        let (tx, mut rx) = mpsc::channel(8);
        tokio::spawn(forward("test", published, Duration::from_millis(300), tx));
        publisher.publish(1, |_| config("a"));
        let first = rx.recv().await.expect("first");
        assert!(first.config.http.routers.contains_key("a@test"));
        publisher.publish(2, |_| config("b"));
        publisher.publish(3, |_| config("c"));
        let started = std::time::Instant::now();
        let next = rx.recv().await.expect("second");
        assert!(started.elapsed() >= Duration::from_millis(250));
        assert!(next.config.http.routers.contains_key("c@test"));
        assert!(rx.try_recv().is_err(), "b was collapsed into c");
    }
}
