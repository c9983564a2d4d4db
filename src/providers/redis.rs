//! `providers.redis`: the dynamic configuration in Redis keys, in Traefik's key-value
//! layout ([`super::kv`]), names qualified `@redis`.
//!
//! The provider reads every key under the root key (`SCAN` then `MGET`), then watches
//! keyspace notifications on `<rootKey>/*` and reads again after each burst of changes; a
//! full read every [`RESYNC_INTERVAL`] catches what notifications miss (they are not
//! delivered while disconnected, and a server may drop them). Keyspace notifications are
//! off by default in Redis, and Traefik's key-value library (valkeyrie) needs `KA` set by
//! the user; this provider turns them on itself (`CONFIG SET notify-keyspace-events`, adding
//! `K` and `A` to what is set); where `CONFIG` is refused it says so and relies on the
//! periodic read.
//!
//! When Redis goes away the last configuration stays and the provider reconnects, waiting
//! [`kv::MIN_BACKOFF`] at first and twice as long after each failure, up to [`kv::MAX_BACKOFF`].

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use redis::aio::MultiplexedConnection;
use redis::{Client, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use super::{Publisher, kv};
use crate::config::static_cfg::RedisProvider;

/// The provider's name in `name@redis`.
pub const PROVIDER: &str = "redis";

/// Time between two full reads while connected.
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(30);
/// Bound on connecting and on every command.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// Notifications arriving within this time of each other are read once.
const BURST: Duration = Duration::from_millis(20);
/// Keys read per `MGET`.
const MGET_CHUNK: usize = 500;

/// Settings that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RedisProviderError {
    #[error("providers.redis.rootKey is empty")]
    RootKey,
    #[error("providers.redis.{0}")]
    Client(#[from] ClientError),
}

/// Client settings that cannot be used (`providers.redis` or `rateLimit.redis`; the error
/// names the option under them).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("endpoints is empty")]
    NoEndpoint,
    #[error("endpoints: {0:?} is not host:port")]
    Endpoint(String),
    #[error("tls.{option}: {reason}")]
    Tls {
        option: &'static str,
        reason: String,
    },
    #[error("client: {0}")]
    Redis(#[from] redis::RedisError),
}

/// What connecting to Redis takes, wherever it is configured.
pub(crate) struct ClientSettings<'a> {
    pub endpoints: &'a [String],
    pub username: &'a str,
    pub password: &'a str,
    pub db: i64,
    pub tls: Option<TlsFiles<'a>>,
}

/// Client TLS: PEM text or file paths, as the configuration has them.
pub(crate) struct TlsFiles<'a> {
    pub ca: &'a str,
    pub cert: &'a str,
    pub key: &'a str,
    pub insecure_skip_verify: bool,
}

/// `From` both client TLS sections (the static one of providers, the dynamic one of
/// `rateLimit.redis`): they have the same fields.
macro_rules! tls_files_from {
    ($($tls:ty),*) => {$(
        impl<'a> From<&'a $tls> for TlsFiles<'a> {
            fn from(tls: &'a $tls) -> Self {
                TlsFiles {
                    ca: &tls.ca,
                    cert: &tls.cert,
                    key: &tls.key,
                    insecure_skip_verify: tls.insecure_skip_verify,
                }
            }
        }
    )*};
}
tls_files_from!(
    crate::config::static_cfg::ClientTls,
    crate::config::dynamic::ClientTls
);

/// One client per endpoint, in order, with the endpoint as written (for logs).
pub(crate) fn clients(settings: &ClientSettings<'_>) -> Result<Vec<(String, Client)>, ClientError> {
    if settings.endpoints.is_empty() {
        return Err(ClientError::NoEndpoint);
    }
    let mut info = RedisConnectionInfo::default()
        .set_db(settings.db)
        .set_skip_set_lib_name();
    if !settings.username.is_empty() {
        info = info.set_username(settings.username);
    }
    if !settings.password.is_empty() {
        info = info.set_password(settings.password);
    }
    let mut clients = Vec::new();
    for endpoint in settings.endpoints {
        let (host, port) = endpoint
            .rsplit_once(':')
            .and_then(|(h, p)| {
                Some((
                    h.trim_start_matches('[').trim_end_matches(']'),
                    p.parse::<u16>().ok()?,
                ))
            })
            .filter(|(h, _)| !h.is_empty())
            .ok_or_else(|| ClientError::Endpoint(endpoint.clone()))?;
        let client = match &settings.tls {
            None => Client::open(
                ConnectionAddr::Tcp(host.to_owned(), port)
                    .into_connection_info()?
                    .set_redis_settings(info.clone()),
            )?,
            Some(tls) => {
                let address = ConnectionAddr::TcpTls {
                    host: host.to_owned(),
                    port,
                    insecure: tls.insecure_skip_verify,
                    tls_params: None,
                }
                .into_connection_info()?
                .set_redis_settings(info.clone());
                Client::build_with_tls(address, certificates(tls)?)?
            }
        };
        clients.push((endpoint.clone(), client));
    }
    Ok(clients)
}

/// Why a session with Redis ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the connection closed")]
    Closed,
    #[error("more than {} bytes under the root key", kv::MAX_TOTAL_BYTES)]
    TooLarge,
}

/// The watcher of one Redis (the first endpoint that answers).
pub struct RedisWatcher {
    clients: Vec<(String, Client)>,
    root: String,
    db: i64,
}

impl RedisWatcher {
    pub fn new(cfg: &RedisProvider) -> Result<RedisWatcher, RedisProviderError> {
        let root = cfg.root_key.trim_end_matches('/').to_owned();
        if root.is_empty() {
            return Err(RedisProviderError::RootKey);
        }
        Ok(RedisWatcher {
            clients: provider_clients(cfg)?,
            root,
            db: cfg.db,
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

impl kv::Session for RedisWatcher {
    type Error = SessionError;
    const STORE: &'static str = "Redis";

    /// One connection: read everything, then again on notifications and every
    /// [`RESYNC_INTERVAL`]. `Ok` when stopped.
    async fn session(
        &self,
        publisher: &mut Publisher<BTreeMap<String, Vec<u8>>>,
        stop: &mut watch::Receiver<bool>,
        synced: &mut bool,
    ) -> Result<(), SessionError> {
        let (endpoint, client, mut conn) = self.connect().await?;
        enable_notifications(&mut conn, endpoint).await;
        let mut pubsub = bounded(client.get_async_pubsub()).await?;
        let pattern = format!("__keyspace@{}__:{}/*", self.db, glob_escape(&self.root));
        bounded(pubsub.psubscribe(&pattern)).await?;
        let mut notifications = pubsub.into_on_message();
        self.resync(&mut conn, publisher).await?;
        *synced = true;
        info!(%endpoint, root_key = %self.root, "Redis provider: watching");
        let mut resync = tokio::time::interval(RESYNC_INTERVAL);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        resync.tick().await;
        loop {
            tokio::select! {
                () = super::stopped(stop) => return Ok(()),
                message = notifications.next() => {
                    if message.is_none() {
                        return Err(SessionError::Closed);
                    }
                    // Several keys are usually written together: read once for the burst.
                    tokio::time::sleep(BURST).await;
                    while let Some(Some(_)) = notifications.next().now_or_never() {}
                    self.resync(&mut conn, publisher).await?;
                }
                _ = resync.tick() => self.resync(&mut conn, publisher).await?,
            }
        }
    }
}

impl RedisWatcher {
    /// The first endpoint that answers, and a connection to it.
    async fn connect(&self) -> Result<(&str, &Client, MultiplexedConnection), SessionError> {
        let mut last = SessionError::Closed;
        for (endpoint, client) in &self.clients {
            match bounded(client.get_multiplexed_async_connection()).await {
                Ok(conn) => return Ok((endpoint, client, conn)),
                Err(e) => {
                    debug!(%endpoint, error = %e, "Redis provider: cannot connect");
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// Reads every key under the root and publishes the configuration if it changed.
    async fn resync(
        &self,
        conn: &mut MultiplexedConnection,
        publisher: &mut Publisher<BTreeMap<String, Vec<u8>>>,
    ) -> Result<(), SessionError> {
        let pairs = read_all(conn, &self.root).await?;
        let root = self.root.clone();
        publisher.publish(pairs, |pairs| {
            let (config, errors) = kv::read(pairs, &root, PROVIDER, "redis");
            // Bad keys cost their own objects only: they are logged, the rest is applied.
            for e in &errors {
                error!(provider = PROVIDER, "{e}");
            }
            Ok(config)
        });
        Ok(())
    }
}

/// A client per endpoint of `cfg`, in order (nothing is connected yet): the provider's and
/// the ACME shared storage's.
pub(crate) fn provider_clients(
    cfg: &RedisProvider,
) -> Result<Vec<(String, Client)>, RedisProviderError> {
    Ok(clients(&ClientSettings {
        endpoints: &cfg.endpoints,
        username: &cfg.username,
        password: &cfg.password,
        db: cfg.db,
        tls: cfg.tls.as_ref().map(TlsFiles::from),
    })?)
}

/// Every key under `root` and its value; keys that are not strings (or not UTF-8) are
/// skipped with a warning.
async fn read_all(
    conn: &mut MultiplexedConnection,
    root: &str,
) -> Result<BTreeMap<String, Vec<u8>>, SessionError> {
    let pattern = format!("{}/*", glob_escape(root));
    let mut keys = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<Vec<u8>>) = bounded(
            redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(conn),
        )
        .await?;
        for key in batch {
            match String::from_utf8(key) {
                Ok(key) => keys.push(key),
                Err(e) => {
                    warn!(key = %String::from_utf8_lossy(e.as_bytes()), "Redis provider: key is not UTF-8; skipped")
                }
            }
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    keys.sort();
    keys.dedup();
    let mut pairs = BTreeMap::new();
    let mut total = 0usize;
    for chunk in keys.chunks(MGET_CHUNK) {
        let values: Vec<Option<Vec<u8>>> =
            bounded(redis::cmd("MGET").arg(chunk).query_async(conn)).await?;
        for (key, value) in chunk.iter().zip(values) {
            // Gone since the SCAN, or not a string key.
            let Some(value) = value else { continue };
            total += key.len() + value.len();
            if total > kv::MAX_TOTAL_BYTES {
                return Err(SessionError::TooLarge);
            }
            pairs.insert(key.clone(), value);
        }
    }
    Ok(pairs)
}

/// Turns keyspace notifications on (`K`: keyspace channel, `A`: all commands), keeping
/// whatever else is configured.
async fn enable_notifications(conn: &mut MultiplexedConnection, endpoint: &str) {
    let current: Result<Vec<String>, _> = bounded(
        redis::cmd("CONFIG")
            .arg("GET")
            .arg("notify-keyspace-events")
            .query_async(conn),
    )
    .await;
    let current = match current {
        Ok(pair) => pair.get(1).cloned().unwrap_or_default(),
        Err(e) => {
            warn!(%endpoint, error = %e, "Redis provider: cannot read notify-keyspace-events; changes are seen at the periodic read");
            return;
        }
    };
    if current.contains('K') && current.contains('A') {
        return;
    }
    let mut wanted: String = current.chars().filter(|c| *c != 'K' && *c != 'A').collect();
    wanted.push_str("KA");
    let set: Result<(), _> = bounded(
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("notify-keyspace-events")
            .arg(&wanted)
            .query_async(conn),
    )
    .await;
    match set {
        Ok(()) => debug!(%endpoint, events = %wanted, "Redis provider: keyspace notifications on"),
        Err(e) => {
            warn!(%endpoint, error = %e, "Redis provider: cannot turn keyspace notifications on; changes are seen at the periodic read")
        }
    }
}

/// The client TLS material for the redis client: PEM bytes.
fn certificates(tls: &TlsFiles<'_>) -> Result<redis::TlsCertificates, ClientError> {
    let read = |option: &'static str, value: &str| {
        crate::runtime::compile::read_pem_or_path(value)
            .map_err(|reason| ClientError::Tls { option, reason })
    };
    let root_cert = if tls.ca.is_empty() {
        None
    } else {
        Some(read("ca", tls.ca)?)
    };
    let client_tls = match (tls.cert.is_empty(), tls.key.is_empty()) {
        (true, true) => None,
        (false, false) => Some(redis::ClientTlsConfig {
            client_cert: read("cert", tls.cert)?,
            client_key: read("key", tls.key)?,
        }),
        _ => {
            return Err(ClientError::Tls {
                option: "cert",
                reason: "cert and key go together".to_owned(),
            });
        }
    };
    Ok(redis::TlsCertificates {
        client_tls,
        root_cert,
    })
}

/// A command bounded by [`COMMAND_TIMEOUT`].
async fn bounded<T>(
    command: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, SessionError> {
    match tokio::time::timeout(COMMAND_TIMEOUT, command).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(SessionError::Timeout(COMMAND_TIMEOUT)),
    }
}

/// `text` with Redis glob characters escaped, to match it literally.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_keys_are_matched_literally() {
        assert_eq!(glob_escape("traefik"), "traefik");
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }

    #[test]
    fn bad_settings_are_refused_before_connecting() {
        let cfg = |endpoints: &[&str], root: &str| RedisProvider {
            endpoints: endpoints.iter().map(|e| (*e).to_owned()).collect(),
            root_key: root.to_owned(),
            ..RedisProvider::default()
        };
        assert!(matches!(
            RedisWatcher::new(&cfg(&[], "traefik")),
            Err(RedisProviderError::Client(ClientError::NoEndpoint))
        ));
        assert!(matches!(
            RedisWatcher::new(&cfg(&["localhost"], "traefik")),
            Err(RedisProviderError::Client(ClientError::Endpoint(_)))
        ));
        assert!(matches!(
            RedisWatcher::new(&cfg(&["127.0.0.1:6379"], "/")),
            Err(RedisProviderError::RootKey)
        ));
        assert!(RedisWatcher::new(&cfg(&["127.0.0.1:6379", "[::1]:6380"], "traefik")).is_ok());
    }
}
