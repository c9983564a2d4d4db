//! `rateLimit.redis`: the token buckets of a rate limit kept in Redis, so that every router
//! sharing that Redis takes from the same buckets and a fleet enforces one limit
//! ([`BucketStore`]). This module owns the connection, the script and the fail-open policy;
//! the HTTP side (holding, 429 and `Retry-After`) is `l7::middleware::rate_limit`'s.
//!
//! One request costs one round trip: a Lua script ([`SCRIPT`]) refills the bucket and takes
//! a token atomically, with the arithmetic of the in-memory limiter. It is called by its
//! digest (`EVALSHA`) and sent whole (`EVAL`) when Redis does not know it (`NOSCRIPT`: after
//! a restart or a `SCRIPT FLUSH`). Buckets are hashes `sallyport:ratelimit:<middleware>:<source>`
//! that expire once they would be full again, since a missing bucket counts as full. The time
//! is the router's clock, so the routers' clocks should agree (NTP): one ahead by `d` refills
//! `d × rate` tokens early.
//!
//! Redis must never hold a request long: each call is bounded by `readTimeout`. No answer in
//! time, an error or no connection lets the request through (fail open), counted in
//! `<prefix>_ratelimit_redis_errors_total` and logged at most once per [`LOG_EVERY`]. A task
//! per store keeps one multiplexed connection and reconnects with backoff; requests wait for
//! the first connection (within the bound), never for a reconnection.

use std::collections::HashMap;
use std::fmt::Display;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use l7::handler::BoxFuture;
use l7::middleware::rate_limit::{BucketStore, RateLimit};
use prometheus_client::metrics::counter::Counter;
use redis::aio::MultiplexedConnection;
use redis::{Client, ErrorKind, ServerErrorKind};
use sha1::{Digest, Sha1};
use tokio::sync::{Notify, watch};
use tracing::{info, warn};

use crate::config::dynamic;
use crate::providers::redis::{ClientError, ClientSettings, TlsFiles, clients};

/// Prepended to every bucket's key.
pub const KEY_PREFIX: &str = "sallyport:ratelimit:";
/// Bound on one request's call to Redis when `readTimeout` is not set (Traefik's default).
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(3);
/// Bound on connecting when `dialTimeout` is not set (Traefik's default).
pub const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// At most one log line per this long while Redis fails, with the count since the last.
pub const LOG_EVERY: Duration = Duration::from_secs(10);
/// Waits between connection attempts: doubled after each failure, up to the maximum.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The bucket update, atomic in Redis. KEYS[1]: the bucket; ARGV: rate (tokens per
/// second), burst, the longest a request may be held (µs), now (µs since the Unix epoch).
/// Returns {1, wait µs} when a token is taken (the request goes after `wait`), {0, wait µs}
/// when refused. As the in-memory bucket: tokens refill at `rate` up to `burst`, and may go
/// negative for held requests. `last` never goes back, so a router whose clock is behind
/// does not refill a bucket twice.
pub const SCRIPT: &str = r"
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local max_delay = tonumber(ARGV[3])
local now = tonumber(ARGV[4])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'last')
local tokens = tonumber(state[1])
local last = tonumber(state[2])
if tokens == nil or last == nil then
  tokens = burst
  last = now
end
if now > last then
  tokens = math.min(tokens + (now - last) / 1e6 * rate, burst)
  last = now
end
local taken = 1
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = (1 - tokens) / rate * 1e6
  if wait > max_delay then
    taken = 0
  else
    tokens = tokens - 1
  end
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'last', string.format('%.17g', last))
redis.call('PEXPIRE', KEYS[1], math.ceil(math.min((burst - tokens) / rate, 86400) * 1000) + 1000)
return {taken, math.ceil(wait)}
";

/// `rateLimit.redis` settings that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RedisLimitError {
    #[error("rateLimit.redis.{0}")]
    Client(#[from] ClientError),
    #[error("rateLimit.redis.{0} must be positive")]
    Timeout(&'static str),
    #[error("rateLimit.redis needs the router's runtime to connect")]
    NoRuntime,
}

/// The Redis bucket stores of the process, shared by successive snapshots so that a reload
/// keeps the connection; a store no snapshot uses any more is closed.
#[derive(Default)]
pub struct RedisLimitStores {
    fail_open: Arc<FailOpen>,
    /// By the `rateLimit.redis` settings, as written.
    stores: Mutex<HashMap<String, Weak<RedisBuckets>>>,
}

impl RedisLimitStores {
    /// Counts the requests let through because Redis did not answer in `counter`.
    pub fn count_errors_in(&self, counter: Counter) {
        // Set once, at startup; a second call would be a programming error with no effect.
        let _ = self.fail_open.counter.set(counter);
    }

    /// The store `cfg` describes: the one already open for the same settings, or a new one
    /// (connecting in the background; needs a tokio runtime).
    pub fn store(&self, cfg: &dynamic::Redis) -> Result<Arc<RedisBuckets>, RedisLimitError> {
        let key = format!("{cfg:?}");
        let mut stores = self.stores.lock().unwrap_or_else(PoisonError::into_inner);
        stores.retain(|_, store| store.strong_count() > 0);
        if let Some(store) = stores.get(&key).and_then(Weak::upgrade) {
            return Ok(store);
        }
        let store = Arc::new(RedisBuckets::open(cfg, self.fail_open.clone())?);
        stores.insert(key, Arc::downgrade(&store));
        Ok(store)
    }
}

/// Pool tuning Traefik's Redis client has and this one does not (one multiplexed
/// connection): accepted, and warned about when set.
pub fn unused_options(cfg: &dynamic::Redis) -> Vec<&'static str> {
    [
        ("poolSize", cfg.pool_size),
        ("minIdleConns", cfg.min_idle_conns),
        ("maxActiveConns", cfg.max_active_conns),
    ]
    .into_iter()
    .filter(|(_, value)| *value != 0)
    .map(|(name, _)| name)
    .collect()
}

/// The state of a store's connection, as its task publishes it.
#[derive(Clone)]
enum Link {
    /// The first attempt is under way: requests wait for it (within their bound).
    Starting,
    /// The connection, and its number (counted from 1) for [`Breakage::report`].
    Up(MultiplexedConnection, u64),
    /// Lost or refused: requests pass unlimited until the task reconnects.
    Down,
}

/// The buckets in one Redis.
pub struct RedisBuckets {
    read_timeout: Duration,
    link: watch::Receiver<Link>,
    broken: Arc<Breakage>,
    /// The script's SHA-1 digest in hex, for `EVALSHA`.
    digest: String,
    fail_open: Arc<FailOpen>,
}

impl RedisBuckets {
    fn open(
        cfg: &dynamic::Redis,
        fail_open: Arc<FailOpen>,
    ) -> Result<RedisBuckets, RedisLimitError> {
        let clients = clients(&ClientSettings {
            endpoints: &cfg.endpoints,
            username: &cfg.username,
            password: &cfg.password,
            db: cfg.db,
            tls: cfg.tls.as_ref().map(TlsFiles::from),
        })?;
        let read_timeout = positive("readTimeout", cfg.read_timeout, DEFAULT_READ_TIMEOUT)?;
        // Writing the command is part of the same round trip: bounded by `readTimeout` too.
        positive("writeTimeout", cfg.write_timeout, DEFAULT_READ_TIMEOUT)?;
        let dial_timeout = positive("dialTimeout", cfg.dial_timeout, DEFAULT_DIAL_TIMEOUT)?;
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| RedisLimitError::NoRuntime)?;
        let (publish, link) = watch::channel(Link::Starting);
        let broken = Arc::new(Breakage::default());
        runtime.spawn(keep_connected(
            clients,
            dial_timeout,
            publish,
            broken.clone(),
        ));
        Ok(RedisBuckets {
            read_timeout,
            link,
            broken,
            digest: hex(&Sha1::digest(SCRIPT.as_bytes())),
            fail_open,
        })
    }

    /// Takes a token from `bucket` at `now` (time since the Unix epoch), as
    /// [`BucketStore::reserve`]; failing open when Redis does not answer within the bound.
    pub async fn reserve_at(
        &self,
        bucket: &str,
        limit: &RateLimit,
        max_delay: Duration,
        now: Duration,
    ) -> Result<Duration, Duration> {
        let called =
            tokio::time::timeout(self.read_timeout, self.call(bucket, limit, max_delay, now)).await;
        match called {
            Ok(Ok(reserved)) => reserved,
            Ok(Err(e)) => {
                if let CallError::Redis(e, connection) = &e
                    && (e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error())
                {
                    self.broken.report(*connection);
                }
                self.fail_open.record(&e);
                Ok(Duration::ZERO)
            }
            Err(_) => {
                // A connection that stalls is replaced rather than waited on again.
                if let Link::Up(_, connection) = &*self.link.borrow() {
                    self.broken.report(*connection);
                }
                self.fail_open
                    .record(&format_args!("no answer within {:?}", self.read_timeout));
                Ok(Duration::ZERO)
            }
        }
    }

    async fn call(
        &self,
        bucket: &str,
        limit: &RateLimit,
        max_delay: Duration,
        now: Duration,
    ) -> Result<Result<Duration, Duration>, CallError> {
        let mut link = self.link.clone();
        let (mut conn, connection) = match &*link
            .wait_for(|l| !matches!(l, Link::Starting))
            .await
            .map_err(|_| CallError::NotConnected)?
        {
            Link::Up(conn, connection) => (conn.clone(), *connection),
            Link::Starting | Link::Down => return Err(CallError::NotConnected),
        };
        let key = format!("{KEY_PREFIX}{bucket}");
        let with_args = |mut command: redis::Cmd| {
            command
                .arg(1)
                .arg(&key)
                .arg(limit.rate)
                .arg(limit.burst)
                .arg(u64::try_from(max_delay.as_micros()).unwrap_or(u64::MAX))
                .arg(u64::try_from(now.as_micros()).unwrap_or(u64::MAX));
            command
        };
        let mut evalsha = redis::cmd("EVALSHA");
        evalsha.arg(&self.digest);
        let failed = |e| CallError::Redis(e, connection);
        let reply: (i64, i64) = match with_args(evalsha).query_async(&mut conn).await {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                let mut eval = redis::cmd("EVAL");
                eval.arg(SCRIPT);
                with_args(eval)
                    .query_async(&mut conn)
                    .await
                    .map_err(failed)?
            }
            reply => reply.map_err(failed)?,
        };
        let wait = Duration::from_micros(u64::try_from(reply.1).unwrap_or(0));
        Ok(if reply.0 == 1 { Ok(wait) } else { Err(wait) })
    }
}

impl BucketStore for RedisBuckets {
    fn reserve<'a>(
        &'a self,
        bucket: String,
        limit: &'a RateLimit,
        max_delay: Duration,
    ) -> BoxFuture<'a, Result<Duration, Duration>> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Box::pin(async move { self.reserve_at(&bucket, limit, max_delay, now).await })
    }
}

/// Why a call to Redis gave no answer.
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("not connected")]
    NotConnected,
    /// The error, and the number of the connection that gave it.
    #[error("{0}")]
    Redis(redis::RedisError, u64),
}

/// Failures of connections, reported by requests to the task that keeps the connection.
/// Reports name the connection so that late ones, about a connection already replaced,
/// do not close its successor.
#[derive(Default)]
struct Breakage {
    /// The highest connection number reported broken.
    highest: AtomicU64,
    notify: Notify,
}

impl Breakage {
    fn report(&self, connection: u64) {
        self.highest.fetch_max(connection, Ordering::Relaxed);
        self.notify.notify_one();
    }

    /// Returns once `connection` is reported broken.
    async fn wait(&self, connection: u64) {
        while self.highest.load(Ordering::Relaxed) < connection {
            self.notify.notified().await;
        }
    }
}

/// Counts and logs the requests let through because Redis did not answer.
#[derive(Default)]
struct FailOpen {
    counter: OnceLock<Counter>,
    /// When a line was last logged, and the failures since.
    log: Mutex<(Option<Instant>, u64)>,
}

impl FailOpen {
    fn record(&self, why: &dyn Display) {
        if let Some(counter) = self.counter.get() {
            counter.inc();
        }
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        log.1 += 1;
        let now = Instant::now();
        if log
            .0
            .is_none_or(|last| now.duration_since(last) >= LOG_EVERY)
        {
            warn!(error = %why, failures = log.1, "rateLimit.redis: Redis did not answer; the request passes unlimited (fail open)");
            *log = (Some(now), 0);
        }
    }
}

/// Keeps one connection to the first endpoint that answers, until the store is dropped.
async fn keep_connected(
    clients: Vec<(String, Client)>,
    dial_timeout: Duration,
    link: watch::Sender<Link>,
    broken: Arc<Breakage>,
) {
    let mut backoff = MIN_BACKOFF;
    let mut connections = 0;
    loop {
        match connect(&clients, dial_timeout).await {
            Ok((endpoint, conn)) => {
                info!(%endpoint, "rateLimit.redis: connected");
                backoff = MIN_BACKOFF;
                connections += 1;
                link.send_replace(Link::Up(conn, connections));
                tokio::select! {
                    () = broken.wait(connections) => {
                        link.send_replace(Link::Down);
                    }
                    () = link.closed() => return,
                }
            }
            Err(e) => {
                link.send_replace(Link::Down);
                warn!(error = %e, retry_in = ?backoff, "rateLimit.redis: cannot connect; requests pass unlimited until it does");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = link.closed() => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

async fn connect(
    clients: &[(String, Client)],
    dial_timeout: Duration,
) -> Result<(String, MultiplexedConnection), String> {
    let mut failures = Vec::new();
    for (endpoint, client) in clients {
        match tokio::time::timeout(dial_timeout, client.get_multiplexed_async_connection()).await {
            Ok(Ok(conn)) => return Ok((endpoint.clone(), conn)),
            Ok(Err(e)) => failures.push(format!("{endpoint}: {e}")),
            Err(_) => failures.push(format!("{endpoint}: no answer within {dial_timeout:?}")),
        }
    }
    Err(failures.join("; "))
}

/// A configured timeout, or `default` when not set; zero and negative are refused.
fn positive(
    option: &'static str,
    value: Option<crate::config::Duration>,
    default: Duration,
) -> Result<Duration, RedisLimitError> {
    match value {
        None => Ok(default),
        Some(d) => d
            .to_std()
            .filter(|d| !d.is_zero())
            .ok_or(RedisLimitError::Timeout(option)),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_digest_is_its_sha1_in_hex() {
        // `redis-cli SCRIPT LOAD` of the same text answers this digest; pinning the length
        // and alphabet catches a digest taken of something else (the hex of a hex...).
        let digest = hex(&Sha1::digest(SCRIPT.as_bytes()));
        assert_eq!(digest.len(), 40);
        assert!(
            digest
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(
            hex(&Sha1::digest(b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
    }

    #[tokio::test]
    async fn a_late_report_about_an_old_connection_spares_the_new_one() {
        let breakage = Breakage::default();
        breakage.report(1);
        let waited = tokio::time::timeout(Duration::from_millis(50), breakage.wait(2)).await;
        assert!(
            waited.is_err(),
            "connection 2 was closed for a failure of 1"
        );
        breakage.report(2);
        tokio::time::timeout(Duration::from_millis(50), breakage.wait(2))
            .await
            .expect("connection 2 reported broken");
    }

    #[test]
    fn pool_tuning_is_named_when_set() {
        let cfg = dynamic::Redis {
            pool_size: 10,
            max_active_conns: 5,
            ..dynamic::Redis::default()
        };
        assert_eq!(unused_options(&cfg), ["poolSize", "maxActiveConns"]);
        assert!(unused_options(&dynamic::Redis::default()).is_empty());
    }

    #[test]
    fn bad_timeouts_are_refused() {
        let zero = Some(crate::config::Duration::from_secs(0));
        assert!(matches!(
            positive("readTimeout", zero, DEFAULT_READ_TIMEOUT),
            Err(RedisLimitError::Timeout("readTimeout"))
        ));
        assert_eq!(
            positive("readTimeout", None, DEFAULT_READ_TIMEOUT).unwrap(),
            DEFAULT_READ_TIMEOUT
        );
    }
}
