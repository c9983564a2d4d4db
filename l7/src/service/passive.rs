//! Passive health checks (`loadBalancer.passiveHealthCheck`): servers judged by the responses
//! to real traffic. A failure is a response the server's leaf could not get (an upstream or
//! internal [`ProxyErrorKind`](crate::error::ProxyErrorKind): not reached, timed out) or a
//! status of 500 or more; `max_failed_attempts` failures within the sliding `failure_window`
//! mark the server down. It comes back up after `failure_window`, unless an active health
//! check owns its status (then only a passing probe brings it back).
//!
//! The decisions are a pure function of the outcomes and the time they happened; the load
//! balancer applies them to the server health and runs the restore timer.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use http::Response;
use tokio::time::Instant;

use crate::error::Source;
use crate::handler::{Body, response_error};

/// `loadBalancer.passiveHealthCheck`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassiveHealthCheckSpec {
    pub failure_window: Duration,
    /// Values below 1 act as 1, as in Traefik.
    pub max_failed_attempts: u32,
}

impl Default for PassiveHealthCheckSpec {
    /// Traefik's defaults: one failure within 10 s.
    fn default() -> Self {
        Self {
            failure_window: Duration::from_secs(10),
            max_failed_attempts: 1,
        }
    }
}

/// What a response says about the server that produced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Success,
    Failure,
    /// The client's doing (it left, sent a bad request): says nothing about the server.
    Neither,
}

impl Outcome {
    pub(crate) fn of(response: &Response<Body>) -> Self {
        match response_error(response).map(|kind| kind.origin()) {
            Some(Source::Downstream) => Outcome::Neither,
            Some(Source::Upstream | Source::Internal) => Outcome::Failure,
            None if response.status().is_server_error() => Outcome::Failure,
            None => Outcome::Success,
        }
    }
}

/// What the load balancer must do after an outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Nothing,
    /// Mark the server down and leave it so (an active check will bring it back).
    Down,
    /// Mark the server down and up again after this long, then call [`Passive::restored`].
    DownUntil(Duration),
}

struct Window {
    /// Failure times within the window, oldest first, at most `max_failed_attempts`.
    failures: VecDeque<Instant>,
    /// A restore timer is pending: the server is already down.
    restoring: bool,
}

/// The failure windows of one load balancer's servers.
pub(crate) struct Passive {
    window: Duration,
    max_failures: usize,
    active_owns_status: bool,
    servers: Vec<Mutex<Window>>,
}

impl Passive {
    pub(crate) fn new(
        spec: &PassiveHealthCheckSpec,
        servers: usize,
        active_owns_status: bool,
    ) -> Self {
        Self {
            window: spec.failure_window,
            max_failures: spec.max_failed_attempts.max(1) as usize,
            active_owns_status,
            servers: (0..servers)
                .map(|_| {
                    Mutex::new(Window {
                        failures: VecDeque::new(),
                        restoring: false,
                    })
                })
                .collect(),
        }
    }

    pub(crate) fn observe(&self, server: usize, outcome: Outcome, now: Instant) -> Verdict {
        let Some(window) = self.servers.get(server) else {
            return Verdict::Nothing;
        };
        let mut window = window.lock().unwrap_or_else(PoisonError::into_inner);
        match outcome {
            Outcome::Neither => return Verdict::Nothing,
            Outcome::Success => {
                window.failures.clear();
                return Verdict::Nothing;
            }
            Outcome::Failure => {}
        }
        window.failures.push_back(now);
        let start = now.checked_sub(self.window);
        while let Some(&oldest) = window.failures.front() {
            let expired = start.is_some_and(|start| oldest <= start);
            if !expired && window.failures.len() <= self.max_failures {
                break;
            }
            window.failures.pop_front();
        }
        if window.failures.len() < self.max_failures || window.restoring {
            return Verdict::Nothing;
        }
        if self.active_owns_status {
            return Verdict::Down;
        }
        window.restoring = true;
        Verdict::DownUntil(self.window)
    }

    /// The restore timer of `server` fired.
    pub(crate) fn restored(&self, server: usize) {
        if let Some(window) = self.servers.get(server) {
            window
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .restoring = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ProxyErrorKind;
    use crate::handler::{empty_body, error_response};
    use http::StatusCode;

    fn status(code: u16) -> Response<Body> {
        let mut response = Response::new(empty_body());
        *response.status_mut() = StatusCode::from_u16(code).unwrap();
        response
    }

    #[test]
    fn outcomes_follow_the_error_source_then_the_status() {
        assert_eq!(Outcome::of(&status(200)), Outcome::Success);
        assert_eq!(Outcome::of(&status(404)), Outcome::Success);
        assert_eq!(Outcome::of(&status(500)), Outcome::Failure);
        assert_eq!(Outcome::of(&status(503)), Outcome::Failure);
        let failure = |kind| Outcome::of(&error_response(kind));
        assert_eq!(failure(ProxyErrorKind::UpstreamConnect), Outcome::Failure);
        assert_eq!(failure(ProxyErrorKind::UpstreamTimeout), Outcome::Failure);
        assert_eq!(failure(ProxyErrorKind::ClientGone), Outcome::Neither);
        assert_eq!(failure(ProxyErrorKind::BadRequest), Outcome::Neither);
    }

    fn spec(window: u64, max: u32) -> PassiveHealthCheckSpec {
        PassiveHealthCheckSpec {
            failure_window: Duration::from_secs(window),
            max_failed_attempts: max,
        }
    }

    #[test]
    fn one_failure_is_enough_by_default_and_the_timer_is_armed_once() {
        let passive = Passive::new(&PassiveHealthCheckSpec::default(), 2, false);
        let now = Instant::now();
        assert_eq!(
            passive.observe(0, Outcome::Failure, now),
            Verdict::DownUntil(Duration::from_secs(10))
        );
        assert_eq!(passive.observe(0, Outcome::Failure, now), Verdict::Nothing);
        assert_eq!(passive.observe(1, Outcome::Success, now), Verdict::Nothing);
        passive.restored(0);
        assert_eq!(
            passive.observe(0, Outcome::Failure, now + Duration::from_secs(11)),
            Verdict::DownUntil(Duration::from_secs(10))
        );
    }

    #[test]
    fn failures_count_within_the_sliding_window_only() {
        let passive = Passive::new(&spec(10, 3), 1, false);
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        assert_eq!(
            passive.observe(0, Outcome::Failure, at(0)),
            Verdict::Nothing
        );
        assert_eq!(
            passive.observe(0, Outcome::Failure, at(5)),
            Verdict::Nothing
        );
        // The failure at 0 has left the window by 10.
        assert_eq!(
            passive.observe(0, Outcome::Failure, at(10)),
            Verdict::Nothing
        );
        assert_eq!(
            passive.observe(0, Outcome::Failure, at(12)),
            Verdict::DownUntil(Duration::from_secs(10))
        );
    }

    #[test]
    fn a_success_clears_the_failures_and_client_errors_do_not_count() {
        let passive = Passive::new(&spec(10, 2), 1, false);
        let now = Instant::now();
        assert_eq!(passive.observe(0, Outcome::Failure, now), Verdict::Nothing);
        assert_eq!(passive.observe(0, Outcome::Success, now), Verdict::Nothing);
        assert_eq!(passive.observe(0, Outcome::Failure, now), Verdict::Nothing);
        assert_eq!(passive.observe(0, Outcome::Neither, now), Verdict::Nothing);
        assert_eq!(
            passive.observe(0, Outcome::Failure, now),
            Verdict::DownUntil(Duration::from_secs(10))
        );
    }

    #[test]
    fn with_an_active_check_the_server_stays_down_and_every_threshold_says_so() {
        let passive = Passive::new(&spec(10, 1), 1, true);
        let now = Instant::now();
        assert_eq!(passive.observe(0, Outcome::Failure, now), Verdict::Down);
        assert_eq!(passive.observe(0, Outcome::Failure, now), Verdict::Down);
    }

    #[test]
    fn zero_attempts_act_as_one_and_unknown_servers_are_ignored() {
        let passive = Passive::new(&spec(10, 0), 1, false);
        let now = Instant::now();
        assert_eq!(passive.observe(3, Outcome::Failure, now), Verdict::Nothing);
        assert_eq!(
            passive.observe(0, Outcome::Failure, now),
            Verdict::DownUntil(Duration::from_secs(10))
        );
    }
}
