//! `rateLimit{average, period, burst, sourceCriterion}`: a token bucket per source, as
//! Traefik's (golang.org/x/time/rate reservations). A request that would have to wait at most
//! `max_delay` for its token is held that long and forwarded; a longer wait is answered 429
//! with `Retry-After` (whole seconds, rounded up).
//!
//! The buckets are a pure core ([`Bucket`], [`Buckets`]) with the time passed in; the handler
//! reads tokio's clock, so tests pause it. The table is bounded: it keeps two generations of
//! at most half of [`MAX_SOURCES`] each, so the sources not seen for a generation go first
//! (an approximate least-recently-used), and buckets idle long enough to be full again are
//! dropped, since a fresh bucket is the same.
//!
//! [`SharedRateLimit`] is the same limit with its buckets kept outside this process, in a
//! [`BucketStore`] that a fleet of routers shares (`rateLimit.redis`); the store does the
//! arithmetic of [`Bucket::reserve`] itself, atomically.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::header::{HeaderValue, RETRY_AFTER};
use http::{Request, Response, StatusCode};

use l4::kept::Kept;

use super::Middleware;
use super::ip_allow_list::status_response;
use super::source_criterion::{Source, SourceCriterion};
use crate::handler::{Body, BoxFuture, Handler, SharedHandler};

/// Sources remembered at once; beyond, the least recently seen lose their bucket.
pub const MAX_SOURCES: usize = 65_536;

/// A configured `rateLimit`.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimit {
    /// Tokens added per second (`average / period`); 0 (Traefik's `average: 0`) or anything
    /// not positive and finite limits nothing.
    pub rate: f64,
    /// Bucket size (at least 1).
    pub burst: u32,
    pub source: SourceCriterion,
}

impl RateLimit {
    /// The longest a request is held for its token, as Traefik: half a token's time, and
    /// 500 ms under one token per second.
    pub fn max_delay(&self) -> Duration {
        if self.rate < 1.0 {
            Duration::from_millis(500)
        } else {
            Duration::from_secs_f64(1.0 / (self.rate.floor() * 2.0))
        }
    }

    /// How long an untouched bucket takes to be full again.
    pub fn refill_time(&self) -> Duration {
        Duration::from_secs_f64((f64::from(self.burst) / self.rate).min(86_400.0))
    }
}

impl RateLimit {
    /// Whether anything is limited (see [`RateLimit::rate`]).
    fn limits(&self) -> bool {
        self.rate.is_finite() && self.rate > 0.0
    }
}

impl Middleware for RateLimit {
    fn wrap(&self, next: SharedHandler) -> SharedHandler {
        self.limiter(Arc::new(Mutex::new(self.buckets())), next)
    }
}

impl RateLimit {
    fn buckets(&self) -> Buckets {
        Buckets::new(MAX_SOURCES, self.refill_time())
    }

    fn limiter(&self, buckets: Arc<Mutex<Buckets>>, next: SharedHandler) -> SharedHandler {
        if !self.limits() {
            return next;
        }
        Arc::new(Limiter {
            buckets,
            max_delay: self.max_delay(),
            config: self.clone(),
            next,
        })
    }
}

/// The in-memory buckets of every `rateLimit`, by middleware and by the router or service
/// that uses it, kept across reloads while the limit is unchanged: a reload must not hand
/// every client a full bucket again.
pub type RateLimitStates = Kept<(String, String), RateLimit, Mutex<Buckets>>;

/// A `rateLimit` whose buckets live in [`RateLimitStates`]: each router (or service) that uses
/// middleware `name` keeps its own buckets, as in Traefik, across reloads.
pub struct KeptRateLimit {
    /// The middleware's qualified name (`limit@file`).
    pub name: String,
    pub limit: RateLimit,
    pub states: Arc<RateLimitStates>,
}

impl Middleware for KeptRateLimit {
    fn wrap(&self, next: SharedHandler) -> SharedHandler {
        self.wrap_for("", next)
    }

    fn wrap_for(&self, owner: &str, next: SharedHandler) -> SharedHandler {
        let key = (self.name.clone(), owner.to_owned());
        let buckets = self
            .states
            .get_or_make(key, self.limit.clone(), || Mutex::new(self.limit.buckets()));
        self.limit.limiter(buckets, next)
    }
}

struct Limiter {
    config: RateLimit,
    max_delay: Duration,
    buckets: Arc<Mutex<Buckets>>,
    next: SharedHandler,
}

impl Handler for Limiter {
    fn call(&self, request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
        let source = self.config.source.source(&request);
        let now = tokio::time::Instant::now().into_std();
        let reserved = self
            .buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .reserve(source, now, &self.config, self.max_delay);
        match reserved {
            // The common case costs no future of its own.
            Ok(wait) if wait.is_zero() => self.next.call(request),
            Ok(wait) => Box::pin(async move {
                tokio::time::sleep(wait).await;
                self.next.call(request).await
            }),
            Err(wait) => Box::pin(async move { too_many_requests(wait) }),
        }
    }
}

/// Buckets kept outside this process and shared by several routers.
pub trait BucketStore: Send + Sync + 'static {
    /// Takes a token from the bucket named `bucket`, as [`Bucket::reserve`] does: `Ok(wait)`
    /// before the request may go, `Err(wait)` when refused. A store that cannot answer
    /// within its bound lets the request go (`Ok(Duration::ZERO)`): the limit fails open.
    fn reserve<'a>(
        &'a self,
        bucket: String,
        limit: &'a RateLimit,
        max_delay: Duration,
    ) -> BoxFuture<'a, Result<Duration, Duration>>;
}

/// A `rateLimit` whose buckets are in a [`BucketStore`], named `<name>:<source>` so that
/// the routers sharing the store and the middleware's name share its buckets.
pub struct SharedRateLimit {
    /// The middleware's qualified name (`limit@file`).
    pub name: String,
    pub limit: RateLimit,
    pub store: Arc<dyn BucketStore>,
}

impl Middleware for SharedRateLimit {
    fn wrap(&self, next: SharedHandler) -> SharedHandler {
        if !self.limit.limits() {
            return next;
        }
        Arc::new(SharedLimiter {
            name: self.name.clone(),
            max_delay: self.limit.max_delay(),
            limit: self.limit.clone(),
            store: self.store.clone(),
            next,
        })
    }
}

struct SharedLimiter {
    name: String,
    limit: RateLimit,
    max_delay: Duration,
    store: Arc<dyn BucketStore>,
    next: SharedHandler,
}

impl Handler for SharedLimiter {
    fn call(&self, request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
        let bucket = format!("{}:{}", self.name, self.limit.source.source(&request));
        Box::pin(async move {
            match self
                .store
                .reserve(bucket, &self.limit, self.max_delay)
                .await
            {
                Ok(wait) => {
                    if !wait.is_zero() {
                        tokio::time::sleep(wait).await;
                    }
                    self.next.call(request).await
                }
                Err(wait) => too_many_requests(wait),
            }
        })
    }
}

fn too_many_requests(wait: Duration) -> Response<Body> {
    let mut response = status_response(StatusCode::TOO_MANY_REQUESTS);
    let seconds = wait
        .as_secs()
        .saturating_add(u64::from(wait.subsec_nanos() > 0));
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// One source's tokens. May go negative: those are tokens promised to held requests.
/// Public as the reference a [`BucketStore`]'s arithmetic is tested against.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub fn full(limit: &RateLimit, now: Instant) -> Bucket {
        Bucket {
            tokens: f64::from(limit.burst),
            last: now,
        }
    }

    /// The tokens left (negative: promised to held requests).
    pub fn tokens(&self) -> f64 {
        self.tokens
    }

    /// Takes a token: `Ok(wait)` before the request may go, or `Err(wait)` when that wait
    /// is over `max_delay` (then nothing is taken).
    pub fn reserve(
        &mut self,
        now: Instant,
        limit: &RateLimit,
        max_delay: Duration,
    ) -> Result<Duration, Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * limit.rate).min(f64::from(limit.burst));
        self.last = now;
        let left = self.tokens - 1.0;
        if left >= 0.0 {
            self.tokens = left;
            return Ok(Duration::ZERO);
        }
        // A period of centuries makes a wait too long for a Duration.
        let wait = Duration::try_from_secs_f64(-left / limit.rate).unwrap_or(Duration::MAX);
        if wait > max_delay {
            return Err(wait);
        }
        self.tokens = left;
        Ok(wait)
    }
}

/// The buckets of the sources seen lately, in two generations (see the module docs).
pub struct Buckets {
    current: HashMap<Source, Bucket>,
    previous: HashMap<Source, Bucket>,
    /// Entries per generation.
    generation: usize,
    /// A bucket untouched this long is full again.
    idle: Duration,
    last_sweep: Option<Instant>,
}

impl Buckets {
    fn new(max_sources: usize, idle: Duration) -> Buckets {
        Buckets {
            current: HashMap::new(),
            previous: HashMap::new(),
            generation: (max_sources / 2).max(1),
            idle,
            last_sweep: None,
        }
    }

    fn reserve(
        &mut self,
        source: Source,
        now: Instant,
        limit: &RateLimit,
        max_delay: Duration,
    ) -> Result<Duration, Duration> {
        self.sweep(now);
        let bucket = match self.current.get_mut(&source) {
            Some(bucket) => bucket,
            None => {
                let bucket = self
                    .previous
                    .remove(&source)
                    .unwrap_or_else(|| Bucket::full(limit, now));
                if self.current.len() >= self.generation {
                    self.previous = std::mem::take(&mut self.current);
                }
                self.current.entry(source).or_insert(bucket)
            }
        };
        bucket.reserve(now, limit, max_delay)
    }

    /// Drops the buckets that are full again, at most once per refill time (or second).
    fn sweep(&mut self, now: Instant) {
        // Fast rates refill in milliseconds; sweeping the table that often would cost more
        // than the memory it frees.
        let every = self.idle.max(Duration::from_secs(1));
        let due = self
            .last_sweep
            .is_none_or(|last| now.saturating_duration_since(last) >= every);
        if !due {
            return;
        }
        self.last_sweep = Some(now);
        let idle = self.idle;
        let active = |bucket: &mut Bucket| now.saturating_duration_since(bucket.last) < idle;
        self.current.retain(|_, b| active(b));
        self.previous.retain(|_, b| active(b));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::{ClientInfo, Noop, empty_body};
    use crate::middleware::ip_strategy::IpStrategy;

    fn limit(average: f64, period: Duration, burst: u32) -> RateLimit {
        RateLimit {
            rate: average / period.as_secs_f64(),
            burst,
            source: SourceCriterion::Ip(IpStrategy::default()),
        }
    }

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_the_rate() {
        let limit = limit(10.0, Duration::from_secs(1), 3);
        let max_delay = limit.max_delay();
        assert_eq!(max_delay, Duration::from_millis(50));
        let start = Instant::now();
        let mut bucket = Bucket::full(&limit, start);
        for _ in 0..3 {
            assert_eq!(bucket.reserve(start, &limit, max_delay), Ok(Duration::ZERO));
        }
        // The next token is 100 ms away: over the 50 ms a request may be held.
        assert_eq!(
            bucket.reserve(start, &limit, max_delay),
            Err(Duration::from_millis(100))
        );
        // 60 ms later it is 40 ms away: held, not refused.
        let later = start + Duration::from_millis(60);
        let held = bucket.reserve(later, &limit, max_delay).unwrap();
        assert!(held > Duration::from_millis(39) && held < Duration::from_millis(41));
        // A second later the bucket is full again, never fuller.
        let much_later = later + Duration::from_secs(5);
        for _ in 0..3 {
            assert_eq!(
                bucket.reserve(much_later, &limit, max_delay),
                Ok(Duration::ZERO)
            );
        }
        assert!(bucket.reserve(much_later, &limit, max_delay).is_err());
    }

    #[test]
    fn slow_rates_hold_at_most_half_a_second() {
        let limit = limit(1.0, Duration::from_secs(60), 1);
        assert_eq!(limit.max_delay(), Duration::from_millis(500));
        let now = Instant::now();
        let mut bucket = Bucket::full(&limit, now);
        assert_eq!(
            bucket.reserve(now, &limit, limit.max_delay()),
            Ok(Duration::ZERO)
        );
        assert_eq!(
            bucket.reserve(now, &limit, limit.max_delay()),
            Err(Duration::from_secs(60))
        );
    }

    #[test]
    fn the_table_stays_bounded_and_keeps_recent_sources() {
        let limit = limit(1.0, Duration::from_secs(1), 1);
        let now = Instant::now();
        let mut buckets = Buckets::new(8, limit.refill_time());
        assert!(
            buckets
                .reserve(Source::Text("keep".into()), now, &limit, Duration::ZERO)
                .is_ok()
        );
        for i in 0..100 {
            let _ = buckets.reserve(Source::Text(format!("s{i}")), now, &limit, Duration::ZERO);
            // "keep" is seen often, so it stays with its bucket empty.
            assert!(
                buckets
                    .reserve(Source::Text("keep".into()), now, &limit, Duration::ZERO)
                    .is_err()
            );
            assert!(buckets.len() <= 8);
        }
    }

    #[test]
    fn idle_buckets_are_dropped() {
        let limit = limit(1.0, Duration::from_secs(1), 1);
        let now = Instant::now();
        let mut buckets = Buckets::new(MAX_SOURCES, limit.refill_time());
        for i in 0..10 {
            let _ = buckets.reserve(Source::Text(format!("s{i}")), now, &limit, Duration::ZERO);
        }
        assert_eq!(buckets.len(), 10);
        let later = now + Duration::from_secs(2);
        let _ = buckets.reserve(Source::Text("new".into()), later, &limit, Duration::ZERO);
        assert_eq!(buckets.len(), 1);
    }

    fn from(peer: &str) -> Request<Body> {
        let mut request = Request::new(empty_body());
        request.extensions_mut().insert(ClientInfo {
            peer: format!("{peer}:1000").parse().unwrap(),
            local: "127.0.0.1:80".parse().unwrap(),
            tls: false,
            entrypoint: "web".into(),
            notes: None,
        });
        request
    }

    #[tokio::test(start_paused = true)]
    async fn average_zero_limits_nothing() {
        let handler = limit(0.0, Duration::from_secs(1), 1).wrap(Arc::new(Noop));
        for _ in 0..100 {
            assert_eq!(
                handler.call(from("192.0.2.1")).await.status(),
                StatusCode::OK
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn over_the_limit_is_429_with_retry_after_per_source() {
        let handler = limit(1.0, Duration::from_secs(3), 2).wrap(Arc::new(Noop));
        for _ in 0..2 {
            assert_eq!(
                handler.call(from("192.0.2.1")).await.status(),
                StatusCode::OK
            );
        }
        let refused = handler.call(from("192.0.2.1")).await;
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.headers()[RETRY_AFTER], "3");
        assert_eq!(
            handler.call(from("192.0.2.2")).await.status(),
            StatusCode::OK
        );
        tokio::time::advance(Duration::from_millis(2_600)).await;
        // 400 ms from a token: under the 500 ms a slow rate may hold a request.
        let started = tokio::time::Instant::now();
        assert_eq!(
            handler.call(from("192.0.2.1")).await.status(),
            StatusCode::OK
        );
        assert!(started.elapsed() >= Duration::from_millis(399));
    }

    /// A store answering from one in-process bucket per name, remembering the names.
    struct OneProcessStore(Mutex<HashMap<String, Bucket>>);

    impl BucketStore for OneProcessStore {
        fn reserve<'a>(
            &'a self,
            bucket: String,
            limit: &'a RateLimit,
            max_delay: Duration,
        ) -> BoxFuture<'a, Result<Duration, Duration>> {
            let now = tokio::time::Instant::now().into_std();
            let mut buckets = self.0.lock().unwrap();
            let reserved = buckets
                .entry(bucket)
                .or_insert_with(|| Bucket::full(limit, now))
                .reserve(now, limit, max_delay);
            Box::pin(async move { reserved })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_shared_limit_keeps_its_buckets_in_the_store_by_name_and_source() {
        let store = Arc::new(OneProcessStore(Mutex::new(HashMap::new())));
        let handler = SharedRateLimit {
            name: "limit@file".into(),
            limit: limit(1.0, Duration::from_secs(3), 1),
            store: store.clone(),
        }
        .wrap(Arc::new(Noop));
        assert_eq!(
            handler.call(from("192.0.2.1")).await.status(),
            StatusCode::OK
        );
        let refused = handler.call(from("192.0.2.1")).await;
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.headers()[RETRY_AFTER], "3");
        let mut names: Vec<String> = store.0.lock().unwrap().keys().cloned().collect();
        names.sort();
        assert_eq!(names, ["limit@file:192.0.2.1"]);
    }
}
