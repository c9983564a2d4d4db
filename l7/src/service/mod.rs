//! Traefik's HTTP services as [`Handler`](crate::handler::Handler)s: `loadBalancer` over servers ([`LoadBalancer`]),
//! and `weighted`, `mirroring`, `failover`, `highestRandomWeight` over other services
//! ([`Weighted`], [`Mirroring`], [`Failover`], [`HighestRandomWeight`]), with the health of
//! servers (active probes, passive observation) and its propagation to parent services.
//!
//! This module owns choosing a child for each request and knowing which children are up. It
//! does not own forwarding to a server (the leaf handler of each server is given, see
//! `l7::transport`), nor the Traefik schema: callers translate the configuration into the plain
//! specs here ([`LoadBalancerSpec`], [`HealthCheckSpec`], [`CookieSpec`]...), whose `Default`s
//! are Traefik's.
//!
//! # Building a snapshot
//! Services are built bottom-up, each child before its parents:
//! - a `loadBalancer` takes its runtime state from the [`ServiceStates`] registry, then the
//!   leaf handler of each server: `LoadBalancer::new(states.reuse_or_create(name, &spec,
//!   prober)?, leaves)?`;
//! - a parent takes its children as [`Child`]ren: the child's handler and, when the child
//!   reports its health, the [`SharedHealth`] its `health()` method returned. A child's service
//!   middlewares wrap its handler but do not change its health:
//!   `Weighted::new(name, spec, vec![(child, weight)], &positions)`,
//!   `HighestRandomWeight::new(name, health_check, vec![(child, weight)])`,
//!   `Mirroring::new(name, spec, main, mirrors)`, `Failover::new(name, spec, main, fallback)`.
//!
//! Where this differs from Traefik on purpose: children and servers keep the order of the
//! configuration (Traefik shuffles them at each build, which only changes the order of ties);
//! a server of weight ≤ 0 is unused under every strategy (Traefik's `p2c` still uses it).
//!
//! # Health propagation
//! A service reports its health to its parents only when it declares a `healthCheck` (a
//! `loadBalancer` with active health checks, a parent with `healthCheck: {}`); `health()`
//! returns `None` otherwise. A parent with `healthCheck: {}` skips the children that are down
//! and is down when all of them are; building it over a child that does not report is the
//! error [`BuildError::CannotRegister`], as in Traefik. A parent without it treats every child
//! as up. Health is read when needed (a pick, a parent's own health), never pushed, so old
//! snapshots never receive updates meant for new ones.
//!
//! # State across reloads
//! The health of a load balancer's servers, its running active checker and its balancing
//! position live in an [`LbState`]. At each snapshot build the caller asks the registry with
//! [`ServiceStates::reuse_or_create`]`(name, &spec, prober)`: when the service's spec equals
//! the one the registry holds, the same state is returned (health and checker kept, the prober
//! replaced so a new serversTransport is used); otherwise a new state starts, every server up.
//! Once the new snapshot is installed, [`ServiceStates::retain_used`] forgets the states no
//! build asked for since the previous call. A state (and its checker) lives as long as the
//! registry or a snapshot holds it: the old snapshot keeps its own until it is dropped.
//!
//! # Observability
//! [`ServiceStates::checked_health`] gives a [`ServerHealthView`] of each load balancer whose
//! servers a health check (active or passive) watches: the API reads it when it shows a
//! service, so it is always current. A registry made [`ServiceStates::with_observer`]
//! reports every change of those servers to a [`HealthObserver`] (the `service_server_up`
//! metric), as long as it keeps their state: a state a reload replaced or forgot stops
//! reporting, even while an old snapshot still uses it. [`LbState::server_status`] and
//! [`ServiceStates::server_status`] list each server URL with whether it is up.

mod active;
mod body;
mod failover;
mod grpc;
mod health;
mod highest_random_weight;
mod load_balancer;
mod mirroring;
mod passive;
mod state;
mod sticky;
mod weighted;

use std::sync::Arc;

pub use crate::balance::sticky::{CookieSpec, SameSite, cookie_name};
pub use active::{HealthCheckMode, HealthCheckSpec, Prober};
pub use failover::{Failover, FailoverErrors, FailoverSpec, StatusRanges};
pub use health::{HealthObserver, ServerHealthView};
pub use highest_random_weight::HighestRandomWeight;
pub use load_balancer::{LbState, LoadBalancer, LoadBalancerSpec, ServerSpec, Strategy};
pub use mirroring::{Mirror, Mirroring, MirroringSpec};
pub use passive::PassiveHealthCheckSpec;
pub use state::ServiceStates;
pub use weighted::{Weighted, WeightedPositions, WeightedSpec};

use crate::handler::SharedHandler;

/// What a service tells its parents: whether it can serve (Traefik's status updater).
pub trait Health: Send + Sync + 'static {
    fn is_up(&self) -> bool;
}

/// The health of a child service, held by its parents.
pub type SharedHealth = Arc<dyn Health>;

/// A child service as its parent sees it.
#[derive(Clone)]
pub struct Child {
    /// The child's service name, as written in the parent (names sticky cookies, errors).
    pub name: String,
    pub handler: SharedHandler,
    /// `Some` when the child reports its health (see the module doc).
    pub health: Option<SharedHealth>,
}

impl Child {
    pub fn new(
        name: impl Into<String>,
        handler: SharedHandler,
        health: Option<SharedHealth>,
    ) -> Self {
        Self {
            name: name.into(),
            handler,
            health,
        }
    }

    /// Whether the child is up as a parent that reports health sees it.
    fn is_up(&self) -> bool {
        self.health.as_ref().is_none_or(|health| health.is_up())
    }
}

impl std::fmt::Debug for Child {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Child")
            .field("name", &self.name)
            .field("reports_health", &self.health.is_some())
            .finish()
    }
}

/// Why a service cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error(
        "cannot register {child} as updater for {parent}: {child} does not report its health \
         (a loadBalancer needs a healthCheck, other services healthCheck: {{}})"
    )]
    CannotRegister { child: String, parent: String },
    #[error("service {service}: server url {url:?} is not an absolute URL with a host")]
    ServerUrl { service: String, url: String },
    #[error("service {service}: health check path {path:?} must be a relative URL")]
    HealthCheckPath { service: String, path: String },
    #[error("service {service}: health check of {url:?} gives the invalid probe URL {probe:?}")]
    ProbeUrl {
        service: String,
        url: String,
        probe: String,
    },
    #[error("service {service}: health check header {name:?} is not a valid header")]
    HealthCheckHeader { service: String, name: String },
    #[error("service {service}: a health check needs a prober (the service's transport)")]
    NoProber { service: String },
    #[error("service {service}: health checks must be started inside the tokio runtime")]
    NoRuntime { service: String },
    #[error("service {service}: the sticky cookie {cookie:?} does not make a valid header")]
    StickyCookie { service: String, cookie: String },
    #[error("service {service}: {given} server handlers for {expected} servers")]
    ServerCount {
        service: String,
        expected: usize,
        given: usize,
    },
    #[error("service {service}: mirror {mirror} percent {percent} is not between 0 and 100")]
    MirrorPercent {
        service: String,
        mirror: String,
        percent: i64,
    },
    #[error("invalid HTTP status range {range:?} (expected a code or low-high, e.g. 500-504)")]
    StatusRange { range: String },
}
