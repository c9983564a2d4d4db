//! `circuitBreaker{expression, checkPeriod, fallbackDuration, recoveryDuration,
//! responseCode}`: stops sending requests to a service that is failing, and lets them back
//! in gradually.
//!
//! The breaker is closed (every request passes) while its expression is false. The metrics
//! cover the last 10 seconds of responses: `NetworkErrorRatio()` (proxy errors from the
//! upstream side over all), `ResponseCodeRatio(a, b, c, d)` (statuses in `[a, b)` over
//! statuses in `[c, d)`, 0 when none), `LatencyAtQuantileMS(q)` (time to the response head;
//! latencies are grouped to two significant digits above 100 ms). Comparisons (`>`, `<`,
//! `>=`, `<=`, `==`, `!=`) combine with `&&`, `||` and parentheses. The expression is
//! evaluated at most every `checkPeriod`; when true, the breaker opens: for
//! `fallbackDuration` every request is answered `responseCode` with its reason phrase, then
//! for `recoveryDuration` a share growing from 0 to all of the requests passes again (the
//! others still get the fallback). The expression true again during recovery reopens it;
//! at the end of recovery the breaker closes with fresh metrics.
//!
//! The state (phase and metrics) lives in [`BreakerStates`], per middleware and per router or
//! service using it, so a reload that leaves the middleware as it was keeps an open breaker
//! open and its metrics window whole.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Request, Response, StatusCode};
use tokio::time::Instant;

use l4::kept::Kept;

use super::Middleware;
use crate::error::Source;
use crate::handler::{Body, BoxFuture, Handler, SharedHandler, full_body, response_error};

mod expression;
pub use expression::{Comparison, Expression, InvalidExpression, Metric};

/// How far back the metrics look, in one-second buckets (as Traefik's).
const WINDOW_SECONDS: u64 = 10;

/// A configured `circuitBreaker`.
#[derive(Debug, Clone, PartialEq)]
pub struct CircuitBreaker {
    pub expression: Expression,
    pub check_period: Duration,
    pub fallback_duration: Duration,
    pub recovery_duration: Duration,
    /// The status of the fallback answer (503).
    pub response_code: StatusCode,
}

impl Middleware for CircuitBreaker {
    fn wrap(&self, next: SharedHandler) -> SharedHandler {
        self.breaker(Arc::new(BreakerState::new()), next)
    }
}

impl CircuitBreaker {
    fn breaker(&self, state: Arc<BreakerState>, next: SharedHandler) -> SharedHandler {
        Arc::new(Breaker {
            spec: self.clone(),
            next,
            state,
        })
    }
}

/// The state of every `circuitBreaker`, by (middleware name, router or service using it),
/// kept across reloads while the middleware's definition is unchanged.
pub type BreakerStates = Kept<(String, String), CircuitBreaker, BreakerState>;

/// A `circuitBreaker` whose state lives in [`BreakerStates`].
pub struct KeptCircuitBreaker {
    /// The middleware's qualified name (`breaker@file`).
    pub name: String,
    pub spec: CircuitBreaker,
    pub states: Arc<BreakerStates>,
}

impl Middleware for KeptCircuitBreaker {
    fn wrap(&self, next: SharedHandler) -> SharedHandler {
        self.wrap_for("", next)
    }

    fn wrap_for(&self, owner: &str, next: SharedHandler) -> SharedHandler {
        let key = (self.name.clone(), owner.to_owned());
        let state = self
            .states
            .get_or_make(key, self.spec.clone(), BreakerState::new);
        self.spec.breaker(state, next)
    }
}

/// One breaker's phase and metrics.
pub struct BreakerState(Mutex<State>);

impl BreakerState {
    fn new() -> Self {
        Self(Mutex::new(State::new(Instant::now())))
    }
}

struct Breaker {
    spec: CircuitBreaker,
    next: SharedHandler,
    state: Arc<BreakerState>,
}

struct State {
    phase: Phase,
    window: Window,
    next_check: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Closed,
    Open {
        until: Instant,
    },
    Recovering {
        since: Instant,
        seen: u64,
        passed: u64,
    },
}

impl State {
    fn new(now: Instant) -> State {
        State {
            phase: Phase::Closed,
            window: Window::new(now),
            next_check: now,
        }
    }
}

impl Breaker {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether this request may go to the service now.
    fn admit(&self, now: Instant) -> bool {
        let mut state = self.lock();
        if let Phase::Open { until } = state.phase {
            if now < until {
                return false;
            }
            // Recovery runs from the end of the fallback, however late the next request.
            state.phase = Phase::Recovering {
                since: until,
                seen: 0,
                passed: 0,
            };
            state.window = Window::new(now);
        }
        if let Phase::Recovering {
            since,
            seen,
            passed,
        } = state.phase
        {
            let elapsed = now.duration_since(since);
            if elapsed >= self.spec.recovery_duration {
                *state = State::new(now);
                return true;
            }
            let share = elapsed.as_secs_f64() / self.spec.recovery_duration.as_secs_f64();
            let admit = (passed as f64) < share * (seen + 1) as f64;
            state.phase = Phase::Recovering {
                since,
                seen: seen + 1,
                passed: passed + u64::from(admit),
            };
            return admit;
        }
        true
    }

    /// Records one response and opens the breaker when the expression says so.
    fn record(&self, now: Instant, status: StatusCode, network_error: bool, latency: Duration) {
        let mut state = self.lock();
        if matches!(state.phase, Phase::Open { .. }) {
            return;
        }
        state.window.record(now, status, network_error, latency);
        if now < state.next_check {
            return;
        }
        state.next_check = now + self.spec.check_period;
        if self
            .spec
            .expression
            .eval(&|metric| state.window.value(metric))
        {
            state.phase = Phase::Open {
                until: now + self.spec.fallback_duration,
            };
        }
    }

    fn fallback(&self) -> Response<Body> {
        let code = self.spec.response_code;
        let mut response = Response::new(full_body(code.canonical_reason().unwrap_or("")));
        *response.status_mut() = code;
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    }
}

impl Handler for Breaker {
    fn call(&self, request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
        Box::pin(async move {
            let started = Instant::now();
            if !self.admit(started) {
                return self.fallback();
            }
            let response = self.next.call(request).await;
            let network_error =
                response_error(&response).is_some_and(|kind| kind.origin() == Source::Upstream);
            let now = Instant::now();
            self.record(
                now,
                response.status(),
                network_error,
                now.duration_since(started),
            );
            response
        })
    }
}

/// Response metrics over the last [`WINDOW_SECONDS`], one bucket a second.
struct Window {
    start: Instant,
    buckets: VecDeque<(u64, Bucket)>,
}

#[derive(Default)]
struct Bucket {
    total: u64,
    network_errors: u64,
    statuses: BTreeMap<u16, u64>,
    /// Latencies in ms, grouped (see [`latency_group`]), with their counts.
    latencies: BTreeMap<u64, u64>,
}

/// Latency in ms, exact below 100 ms, to two significant digits above: bounds the number
/// of distinct values a bucket keeps.
fn latency_group(latency: Duration) -> u64 {
    let ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
    let mut scale = 1;
    while ms / scale >= 100 {
        scale *= 10;
    }
    ms / scale * scale
}

impl Window {
    fn new(start: Instant) -> Window {
        Window {
            start,
            buckets: VecDeque::new(),
        }
    }

    fn record(&mut self, now: Instant, status: StatusCode, network_error: bool, latency: Duration) {
        let second = now.duration_since(self.start).as_secs();
        while self
            .buckets
            .front()
            .is_some_and(|(s, _)| s + WINDOW_SECONDS <= second)
        {
            self.buckets.pop_front();
        }
        if self.buckets.back().is_none_or(|(s, _)| *s != second) {
            self.buckets.push_back((second, Bucket::default()));
        }
        if let Some((_, bucket)) = self.buckets.back_mut() {
            bucket.total += 1;
            bucket.network_errors += u64::from(network_error);
            *bucket.statuses.entry(status.as_u16()).or_default() += 1;
            *bucket.latencies.entry(latency_group(latency)).or_default() += 1;
        }
    }

    fn value(&self, metric: Metric) -> f64 {
        let buckets = || self.buckets.iter().map(|(_, b)| b);
        match metric {
            Metric::NetworkErrorRatio => {
                let total: u64 = buckets().map(|b| b.total).sum();
                let errors: u64 = buckets().map(|b| b.network_errors).sum();
                ratio(errors, total)
            }
            Metric::ResponseCodeRatio(a, b, c, d) => {
                let count = |from: u16, to: u16| -> u64 {
                    buckets()
                        .flat_map(|b| b.statuses.range(from..to.max(from)))
                        .map(|(_, n)| n)
                        .sum()
                };
                ratio(count(a, b), count(c, d))
            }
            Metric::LatencyAtQuantileMs(q) => {
                let mut merged = BTreeMap::<u64, u64>::new();
                for bucket in buckets() {
                    for (ms, n) in &bucket.latencies {
                        *merged.entry(*ms).or_default() += n;
                    }
                }
                let total: u64 = merged.values().sum();
                if total == 0 {
                    return 0.0;
                }
                let rank = ((q / 100.0) * total as f64).ceil().max(1.0) as u64;
                let mut seen = 0;
                for (ms, n) in merged {
                    seen += n;
                    if seen >= rank {
                        return ms as f64;
                    }
                }
                0.0
            }
        }
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ProxyErrorKind;
    use crate::handler::{empty_body, error_response};
    use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};

    /// Answers with the status it is set to (0: a connection failure), counting calls.
    struct Upstream {
        status: AtomicU16,
        calls: AtomicUsize,
    }

    impl Handler for Upstream {
        fn call(&self, _request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let status = self.status.load(Ordering::SeqCst);
            Box::pin(async move {
                if status == 0 {
                    return error_response(ProxyErrorKind::UpstreamConnect);
                }
                let mut response = Response::new(empty_body());
                *response.status_mut() = StatusCode::from_u16(status).unwrap();
                response
            })
        }
    }

    fn upstream() -> Arc<Upstream> {
        Arc::new(Upstream {
            status: AtomicU16::new(200),
            calls: AtomicUsize::new(0),
        })
    }

    fn spec(expression: &str) -> CircuitBreaker {
        CircuitBreaker {
            expression: Expression::parse(expression).unwrap(),
            check_period: Duration::from_millis(100),
            fallback_duration: Duration::from_secs(10),
            recovery_duration: Duration::from_secs(10),
            response_code: StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn breaker(expression: &str) -> (Arc<Upstream>, SharedHandler) {
        let upstream = upstream();
        let handler = spec(expression).wrap(upstream.clone());
        (upstream, handler)
    }

    async fn status(handler: &SharedHandler) -> u16 {
        handler
            .call(Request::new(empty_body()))
            .await
            .status()
            .as_u16()
    }

    #[tokio::test(start_paused = true)]
    async fn network_errors_open_the_breaker_then_it_recovers_gradually() {
        let (upstream, handler) = breaker("NetworkErrorRatio() > 0.5");
        upstream.status.store(0, Ordering::SeqCst);
        assert_eq!(status(&handler).await, 502);
        assert_eq!(status(&handler).await, 503, "open after the first check");
        let calls = upstream.calls.load(Ordering::SeqCst);

        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(status(&handler).await, 503);
        assert_eq!(
            upstream.calls.load(Ordering::SeqCst),
            calls,
            "no request passes"
        );

        upstream.status.store(200, Ordering::SeqCst);
        tokio::time::advance(Duration::from_secs(6)).await;
        // Half way through recovery: about half the requests pass.
        let mut passed = 0;
        for _ in 0..10 {
            if status(&handler).await == 200 {
                passed += 1;
            }
        }
        assert!((4..=6).contains(&passed), "{passed}");

        tokio::time::advance(Duration::from_secs(5)).await;
        for _ in 0..5 {
            assert_eq!(status(&handler).await, 200);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn response_code_ratio_counts_server_errors_over_all() {
        let (upstream, handler) = breaker("ResponseCodeRatio(500, 600, 0, 600) > 0.25");
        for _ in 0..3 {
            tokio::time::advance(Duration::from_millis(200)).await;
            assert_eq!(status(&handler).await, 200);
        }
        upstream.status.store(500, Ordering::SeqCst);
        tokio::time::advance(Duration::from_millis(200)).await;
        // 1 of 4: not over 0.25.
        assert_eq!(status(&handler).await, 500);
        tokio::time::advance(Duration::from_millis(200)).await;
        assert_eq!(status(&handler).await, 500);
        assert_eq!(status(&handler).await, 503);
    }

    #[tokio::test(start_paused = true)]
    async fn old_responses_leave_the_window() {
        let (upstream, handler) = breaker("NetworkErrorRatio() > 0.5");
        for _ in 0..5 {
            assert_eq!(status(&handler).await, 200);
        }
        tokio::time::advance(Duration::from_secs(11)).await;
        upstream.status.store(0, Ordering::SeqCst);
        assert_eq!(status(&handler).await, 502);
        assert_eq!(
            status(&handler).await,
            503,
            "the old successes no longer count"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_rebuilt_chain_keeps_the_breaker_of_an_unchanged_middleware_per_owner() {
        let upstream = upstream();
        let states = Arc::new(BreakerStates::new());
        let kept = |spec: CircuitBreaker, owner: &str| {
            KeptCircuitBreaker {
                name: "breaker@file".into(),
                spec,
                states: states.clone(),
            }
            .wrap_for(owner, upstream.clone())
        };
        let unchanged = spec("NetworkErrorRatio() > 0.5");
        let old = kept(unchanged.clone(), "router a");
        upstream.status.store(0, Ordering::SeqCst);
        assert_eq!(status(&old).await, 502);
        assert_eq!(status(&old).await, 503);
        let rebuilt = kept(unchanged.clone(), "router a");
        assert_eq!(status(&rebuilt).await, 503, "still open");
        // Another router using the middleware has its own breaker.
        assert_eq!(status(&kept(unchanged, "router b")).await, 502);
        // A changed definition starts closed, with empty metrics.
        let mut changed = spec("NetworkErrorRatio() > 0.5");
        changed.fallback_duration = Duration::from_secs(5);
        assert_eq!(status(&kept(changed, "router a")).await, 502);
    }

    #[test]
    fn latencies_are_grouped_to_two_digits() {
        assert_eq!(latency_group(Duration::from_millis(57)), 57);
        assert_eq!(latency_group(Duration::from_millis(1234)), 1200);
        let mut window = Window::new(Instant::now());
        let now = Instant::now();
        for ms in [10, 20, 30, 400] {
            window.record(now, StatusCode::OK, false, Duration::from_millis(ms));
        }
        assert_eq!(window.value(Metric::LatencyAtQuantileMs(50.0)), 20.0);
        assert_eq!(window.value(Metric::LatencyAtQuantileMs(100.0)), 400.0);
    }
}
