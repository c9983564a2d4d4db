//! The ACME storage a fleet shares (`certificatesResolvers.<n>.acme.sharedStorage`, an
//! extension): one resolver's account, certificates, HTTP-01 answers and ordering lock in
//! etcd or Redis, under `<rootKey>/acme/<resolver>/`:
//!
//! ```text
//! <rootKey>/acme/<resolver>/account                     the account (JSON, acme.json's `Account`)
//! <rootKey>/acme/<resolver>/certificates/<names>        a certificate (JSON, one `Certificates` entry)
//! <rootKey>/acme/<resolver>/challenges/<token>          an HTTP-01 key authorization
//! <rootKey>/acme/<resolver>/failures/<names>            why the last order failed, until its retry
//! <rootKey>/acme/<resolver>/lock                        the ordering lock: its holder's token
//! ```
//!
//! `<names>` is the certificate's names joined by `,`, main first. The lock is a lease that
//! expires by itself [`SharedStore::lock_ttl`] after its holder stops renewing it: in etcd a
//! lease with that TTL, the key created in a transaction only if absent; in Redis `SET NX
//! PX`, renewed and released by scripts that compare the token first, so that a holder whose
//! lease expired never touches its successor's lock. Every request is bounded by
//! [`COMMAND_TIMEOUT`]; a failed connection is dropped and made again at the next request.

use std::time::Duration;

use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};
use redis::aio::MultiplexedConnection;
use tokio::sync::Mutex;

use crate::config::static_cfg::AcmeSharedStorage;
use crate::providers::kv::{ACME_SEGMENT, MAX_TOTAL_BYTES};
use crate::providers::{etcd, redis as redis_provider};

/// Bound on connecting and on every request.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// The lock's TTL when `lockTTL` is not set.
pub const DEFAULT_LOCK_TTL: Duration = Duration::from_secs(30);
/// HTTP-01 answers outlive the order that posted them by at most this long.
const CHALLENGE_TTL: Duration = Duration::from_secs(600);

/// Renews the lock if its holder still owns it (`KEYS[1]`, `ARGV[1]` token, `ARGV[2]` ms).
const REDIS_RENEW: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end";
/// Deletes the lock if its holder still owns it.
const REDIS_RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

/// Settings that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SharedSettingsError {
    #[error("sharedStorage needs exactly one of etcd and redis")]
    NotOneStore,
    #[error("sharedStorage.redis takes the settings of providers.redis: {0}")]
    Redis(#[from] redis_provider::RedisProviderError),
    #[error("sharedStorage.etcd takes the settings of providers.etcd: {0}")]
    Etcd(#[from] etcd::EtcdProviderError),
    #[error("sharedStorage.{0}.rootKey is empty")]
    RootKey(&'static str),
    #[error("sharedStorage.lockTTL must be at least 2s")]
    LockTtl,
}

/// Why a request to the store failed.
#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("no Redis endpoint answered")]
    NoEndpoint,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("more than {MAX_TOTAL_BYTES} bytes of certificates")]
    TooLarge,
    #[error("the lock expired or was taken by another instance")]
    LockLost,
}

/// The ordering lock, held: the token that proves it, and the etcd lease carrying it.
pub struct Lock {
    token: String,
    lease: Option<i64>,
}

enum Backend {
    Redis(RedisBackend),
    Etcd(Box<EtcdBackend>),
}

/// One resolver's keys in one store.
pub struct SharedStore {
    backend: Backend,
    /// `<rootKey>/acme/<resolver>/`.
    prefix: String,
    lock_ttl: Duration,
}

impl SharedStore {
    /// The store of `cfg` for resolver `resolver`; nothing is connected yet.
    pub fn new(
        cfg: &AcmeSharedStorage,
        resolver: &str,
    ) -> Result<SharedStore, SharedSettingsError> {
        let lock_ttl = match cfg.lock_ttl {
            None => DEFAULT_LOCK_TTL,
            Some(d) => d
                .to_std()
                .filter(|d| *d >= Duration::from_secs(2))
                .ok_or(SharedSettingsError::LockTtl)?,
        };
        let (backend, root, store) = match (&cfg.redis, &cfg.etcd) {
            (Some(r), None) => (
                Backend::Redis(RedisBackend {
                    clients: redis_provider::provider_clients(r)?,
                    conn: Mutex::new(None),
                }),
                &r.root_key,
                "redis",
            ),
            (None, Some(e)) => {
                let (endpoints, options) = etcd::connection(e)?;
                (
                    Backend::Etcd(Box::new(EtcdBackend {
                        endpoints,
                        options,
                        client: Mutex::new(None),
                    })),
                    &e.root_key,
                    "etcd",
                )
            }
            _ => return Err(SharedSettingsError::NotOneStore),
        };
        let root = root.trim_end_matches('/');
        if root.is_empty() {
            return Err(SharedSettingsError::RootKey(store));
        }
        Ok(SharedStore {
            backend,
            prefix: format!("{root}/{ACME_SEGMENT}{resolver}/"),
            lock_ttl,
        })
    }

    pub fn lock_ttl(&self) -> Duration {
        self.lock_ttl
    }

    /// The full key of `rest` (for log lines too).
    pub fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    /// The full key prefix of the certificates.
    pub fn certificates_prefix(&self) -> String {
        self.key("certificates/")
    }

    pub async fn get(&self, rest: &str) -> Result<Option<Vec<u8>>, SharedError> {
        let key = self.key(rest);
        match &self.backend {
            Backend::Redis(redis) => redis.query(redis::cmd("GET").arg(&key)).await,
            Backend::Etcd(etcd) => {
                let response = etcd
                    .run(|mut c| async move { c.get(key, None).await })
                    .await?;
                Ok(response.kvs().first().map(|kv| kv.value().to_vec()))
            }
        }
    }

    pub async fn put(&self, rest: &str, value: &[u8]) -> Result<(), SharedError> {
        let key = self.key(rest);
        match &self.backend {
            Backend::Redis(redis) => redis.query(redis::cmd("SET").arg(&key).arg(value)).await,
            Backend::Etcd(etcd) => {
                let value = value.to_vec();
                etcd.run(|mut c| async move { c.put(key, value, None).await })
                    .await
                    .map(drop)
            }
        }
    }

    /// Posts an HTTP-01 answer that every instance serves; it goes away with `lock` (etcd)
    /// or after [`CHALLENGE_TTL`] (Redis).
    pub async fn put_challenge(
        &self,
        lock: &Lock,
        token: &str,
        key_authorization: &str,
    ) -> Result<(), SharedError> {
        let key = self.key(&format!("challenges/{token}"));
        match &self.backend {
            Backend::Redis(redis) => {
                redis
                    .query(
                        redis::cmd("SET")
                            .arg(&key)
                            .arg(key_authorization)
                            .arg("PX")
                            .arg(millis(CHALLENGE_TTL)),
                    )
                    .await
            }
            Backend::Etcd(etcd) => {
                let options = lock.lease.map(|id| PutOptions::new().with_lease(id));
                let value = key_authorization.to_owned();
                etcd.run(|mut c| async move { c.put(key, value, options).await })
                    .await
                    .map(drop)
            }
        }
    }

    /// Writes `value` at `rest` for `ttl` (whole seconds in etcd, at least one), after which
    /// the store deletes it.
    pub async fn put_expiring(
        &self,
        rest: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<(), SharedError> {
        let key = self.key(rest);
        match &self.backend {
            Backend::Redis(redis) => {
                redis
                    .query(
                        redis::cmd("SET")
                            .arg(&key)
                            .arg(value)
                            .arg("PX")
                            .arg(millis(ttl).max(1)),
                    )
                    .await
            }
            Backend::Etcd(etcd) => {
                let seconds = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX).max(1);
                let lease = etcd
                    .run(|mut c| async move { c.lease_grant(seconds, None).await })
                    .await?
                    .id();
                let value = value.to_vec();
                let options = Some(PutOptions::new().with_lease(lease));
                etcd.run(|mut c| async move { c.put(key, value, options).await })
                    .await
                    .map(drop)
            }
        }
    }

    /// Every certificate key and value.
    pub async fn certificates(&self) -> Result<Vec<(String, Vec<u8>)>, SharedError> {
        let prefix = self.certificates_prefix();
        let pairs: Vec<(String, Vec<u8>)> = match &self.backend {
            Backend::Redis(redis) => redis.scan(&prefix).await?,
            Backend::Etcd(etcd) => {
                etcd.run(|mut c| async move {
                    c.get(prefix, Some(GetOptions::new().with_prefix())).await
                })
                .await?
                .kvs()
                .iter()
                .map(|kv| {
                    (
                        String::from_utf8_lossy(kv.key()).into_owned(),
                        kv.value().to_vec(),
                    )
                })
                .collect()
            }
        };
        let total: usize = pairs.iter().map(|(k, v)| k.len() + v.len()).sum();
        if total > MAX_TOTAL_BYTES {
            return Err(SharedError::TooLarge);
        }
        Ok(pairs)
    }

    /// Takes the ordering lock if no instance holds it; `None` when one does.
    pub async fn try_lock(&self) -> Result<Option<Lock>, SharedError> {
        let key = self.key("lock");
        let token = new_token();
        match &self.backend {
            Backend::Redis(redis) => {
                let set: Option<String> = redis
                    .query(
                        redis::cmd("SET")
                            .arg(&key)
                            .arg(&token)
                            .arg("NX")
                            .arg("PX")
                            .arg(millis(self.lock_ttl)),
                    )
                    .await?;
                Ok(set.map(|_| Lock { token, lease: None }))
            }
            Backend::Etcd(etcd) => {
                // Most attempts find the lock held: no lease is granted for those.
                let held = key.clone();
                let now = etcd
                    .run(|mut c| async move { c.get(held, None).await })
                    .await?;
                if !now.kvs().is_empty() {
                    return Ok(None);
                }
                let ttl = i64::try_from(self.lock_ttl.as_secs()).unwrap_or(i64::MAX);
                let lease = etcd
                    .run(|mut c| async move { c.lease_grant(ttl, None).await })
                    .await?
                    .id();
                let txn = Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(
                        key,
                        token.clone(),
                        Some(PutOptions::new().with_lease(lease)),
                    )]);
                let created = etcd.run(|mut c| async move { c.txn(txn).await }).await?;
                if created.succeeded() {
                    Ok(Some(Lock {
                        token,
                        lease: Some(lease),
                    }))
                } else {
                    // Taken meanwhile; the unused lease would only expire later.
                    let _ = etcd
                        .run(|mut c| async move { c.lease_revoke(lease).await })
                        .await;
                    Ok(None)
                }
            }
        }
    }

    /// Renews `lock` every third of its TTL; returns only when that fails (the store is
    /// unreachable, or the lock expired and may be another instance's now).
    pub async fn hold(&self, lock: &Lock) -> SharedError {
        let every = self.lock_ttl / 3;
        loop {
            tokio::time::sleep(every).await;
            if let Err(e) = self.renew(lock).await {
                return e;
            }
        }
    }

    async fn renew(&self, lock: &Lock) -> Result<(), SharedError> {
        let renewed = match &self.backend {
            Backend::Etcd(etcd) => {
                let lease = lock.lease.ok_or(SharedError::LockLost)?;
                // Opening a keep-alive stream renews the lease once, and fails when the
                // lease is gone (expired or revoked).
                etcd.run(|mut c| async move { c.lease_keep_alive(lease).await })
                    .await?;
                true
            }
            Backend::Redis(redis) => {
                let renewed: i64 = redis
                    .query(
                        redis::cmd("EVAL")
                            .arg(REDIS_RENEW)
                            .arg(1)
                            .arg(self.key("lock"))
                            .arg(&lock.token)
                            .arg(millis(self.lock_ttl)),
                    )
                    .await?;
                renewed == 1
            }
        };
        if renewed {
            Ok(())
        } else {
            Err(SharedError::LockLost)
        }
    }

    /// Gives `lock` back (it also expires by itself if this fails).
    pub async fn release(&self, lock: Lock) -> Result<(), SharedError> {
        match &self.backend {
            Backend::Etcd(etcd) => {
                let lease = lock.lease.ok_or(SharedError::LockLost)?;
                etcd.run(|mut c| async move { c.lease_revoke(lease).await })
                    .await
                    .map(drop)
            }
            Backend::Redis(redis) => {
                let _released: i64 = redis
                    .query(
                        redis::cmd("EVAL")
                            .arg(REDIS_RELEASE)
                            .arg(1)
                            .arg(self.key("lock"))
                            .arg(&lock.token),
                    )
                    .await?;
                Ok(())
            }
        }
    }
}

/// Redis: a client per endpoint, and the connection in use.
struct RedisBackend {
    clients: Vec<(String, redis::Client)>,
    conn: Mutex<Option<MultiplexedConnection>>,
}

impl RedisBackend {
    /// Runs `command`; a failure drops the connection, so that the next command reconnects.
    async fn query<T: redis::FromRedisValue>(
        &self,
        command: &redis::Cmd,
    ) -> Result<T, SharedError> {
        let mut conn = self.connection().await?;
        let result = bounded(command.query_async(&mut conn)).await;
        if result.is_err() {
            *self.conn.lock().await = None;
        }
        result
    }

    /// The connection in use, or a new one to the first endpoint that answers.
    async fn connection(&self) -> Result<MultiplexedConnection, SharedError> {
        let mut cached = self.conn.lock().await;
        if let Some(c) = cached.as_ref() {
            return Ok(c.clone());
        }
        let mut last = SharedError::NoEndpoint;
        for (endpoint, client) in &self.clients {
            match bounded(client.get_multiplexed_async_connection()).await {
                Ok(c) => {
                    *cached = Some(c.clone());
                    return Ok(c);
                }
                Err(e) => {
                    tracing::debug!(%endpoint, error = %e, "ACME shared storage: cannot connect");
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// Every key under `prefix` (`SCAN`, then `GET` each: certificates are few) and its
    /// value; keys gone since the scan are skipped.
    async fn scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, SharedError> {
        let pattern = format!("{}*", glob_escape(prefix));
        let mut keys: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = self
                .query(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000),
                )
                .await?;
            keys.extend(batch);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        keys.sort();
        keys.dedup();
        let mut pairs = Vec::new();
        let mut total = 0usize;
        for key in keys {
            let value: Option<Vec<u8>> = self.query(redis::cmd("GET").arg(&key)).await?;
            if let Some(value) = value {
                total += key.len() + value.len();
                if total > MAX_TOTAL_BYTES {
                    return Err(SharedError::TooLarge);
                }
                pairs.push((key, value));
            }
        }
        Ok(pairs)
    }
}

/// etcd: the cluster, and the client in use.
struct EtcdBackend {
    endpoints: Vec<String>,
    options: etcd_client::ConnectOptions,
    client: Mutex<Option<etcd_client::Client>>,
}

impl EtcdBackend {
    /// Runs `request` with the client (connecting first if needed); a failure drops the
    /// client, so that the next request connects again.
    async fn run<T, F, Fut>(&self, request: F) -> Result<T, SharedError>
    where
        F: FnOnce(etcd_client::Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let client = {
            let mut cached = self.client.lock().await;
            match cached.as_ref() {
                Some(c) => c.clone(),
                None => {
                    let c = bounded(etcd_client::Client::connect(
                        &self.endpoints,
                        Some(self.options.clone()),
                    ))
                    .await?;
                    *cached = Some(c.clone());
                    c
                }
            }
        };
        let result = bounded(request(client)).await;
        if result.is_err() {
            *self.client.lock().await = None;
        }
        result
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

/// 128 random bits, hex: who holds the lock.
fn new_token() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // No system randomness: the time and PID still tell instances apart.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        bytes[..8].copy_from_slice(&now.as_nanos().to_le_bytes()[..8]);
        bytes[8..12].copy_from_slice(&std::process::id().to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A request bounded by [`COMMAND_TIMEOUT`].
async fn bounded<T, E: Into<SharedError>>(
    request: impl Future<Output = Result<T, E>>,
) -> Result<T, SharedError> {
    match tokio::time::timeout(COMMAND_TIMEOUT, request).await {
        Ok(result) => result.map_err(Into::into),
        Err(_) => Err(SharedError::Timeout(COMMAND_TIMEOUT)),
    }
}

/// Whether `token` can be an ACME token (RFC 8555 §8.1: base64url), so that a request path
/// never names another key.
pub fn is_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 256
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::static_cfg::{EtcdProvider, RedisProvider};

    #[test]
    fn keys_live_under_the_root_keys_acme_subtree_per_resolver() {
        let cfg = AcmeSharedStorage {
            redis: Some(RedisProvider {
                root_key: "fleet/".into(),
                ..RedisProvider::default()
            }),
            ..AcmeSharedStorage::default()
        };
        let store = SharedStore::new(&cfg, "le").expect("valid");
        assert_eq!(store.key("lock"), "fleet/acme/le/lock");
        assert_eq!(store.certificates_prefix(), "fleet/acme/le/certificates/");
        assert_eq!(store.lock_ttl(), DEFAULT_LOCK_TTL);
    }

    #[test]
    fn one_store_and_a_usable_ttl_are_required() {
        let both = AcmeSharedStorage {
            redis: Some(RedisProvider::default()),
            etcd: Some(EtcdProvider::default()),
            lock_ttl: None,
        };
        assert!(matches!(
            SharedStore::new(&both, "le"),
            Err(SharedSettingsError::NotOneStore)
        ));
        assert!(matches!(
            SharedStore::new(&AcmeSharedStorage::default(), "le"),
            Err(SharedSettingsError::NotOneStore)
        ));
        let short = AcmeSharedStorage {
            etcd: Some(EtcdProvider::default()),
            lock_ttl: Some(crate::config::Duration::from_secs(1)),
            ..AcmeSharedStorage::default()
        };
        assert!(matches!(
            SharedStore::new(&short, "le"),
            Err(SharedSettingsError::LockTtl)
        ));
        let no_root = AcmeSharedStorage {
            etcd: Some(EtcdProvider {
                root_key: "/".into(),
                ..EtcdProvider::default()
            }),
            ..AcmeSharedStorage::default()
        };
        assert!(matches!(
            SharedStore::new(&no_root, "le"),
            Err(SharedSettingsError::RootKey("etcd"))
        ));
    }

    #[test]
    fn tokens_are_base64url_only() {
        assert!(is_token("LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"));
        assert!(!is_token("../account"));
        assert!(!is_token("a/b"));
        assert!(!is_token(""));
        assert!(!is_token(&"a".repeat(300)));
        assert_ne!(new_token(), new_token());
    }
}
