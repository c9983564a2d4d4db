//! Built-in services that routers can target without any backend: `echo@internal`
//! (a TCP service that sends back every byte it receives), so that a fresh machine
//! can try the router with nothing else running; the internal HTTP services (`ping@internal`,
//! `api@internal`, …) and the routers Traefik adds for them; and the state every snapshot
//! shares.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use l4::kept::Kept;
use l4::tcp::health::HealthHandle;
use l7::handler::SharedHandler;

use crate::acme::Acme;
use crate::config::dynamic::{TcpServersTransport, TcpService};
use l4::tls::self_signed_default;
use rustls::sign::CertifiedKey;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// The name routers use to reach the echo service.
pub const ECHO_SERVICE: &str = crate::config::validate::INTERNAL_TCP_SERVICES[0];

/// State that outlives every snapshot.
pub struct Internal {
    /// Where the echo service listens (loopback, ephemeral port).
    pub echo_addr: SocketAddr,
    /// The generated self-signed certificate served when no default is configured;
    /// generated once so reloads keep serving the same one.
    pub default_cert: Arc<CertifiedKey>,
    /// The ACME certificate resolvers, whose certificates every snapshot serves.
    pub acme: Arc<Acme>,
    /// The internal HTTP services by name (`ping@internal`…), for routers that name them.
    pub http_services: HashMap<&'static str, SharedHandler>,
    /// The routers Traefik adds for them (unless `manualRouting`).
    pub http_routes: Vec<InternalRoute>,
    /// The Redis stores of `rateLimit.redis`, kept across reloads.
    pub redis_limits: super::redis_buckets::RedisLimitStores,
    /// The in-memory `rateLimit` buckets, kept across reloads while a limit is unchanged.
    pub rate_limits: Arc<l7::middleware::rate_limit::RateLimitStates>,
    /// The other per-router and per-service state kept across reloads.
    pub kept: KeptStates,
}

/// Per-router and per-service state that a reload keeps while the definition that created it
/// is unchanged (see [`l4::kept`]).
#[derive(Default)]
pub struct KeptStates {
    /// `inFlightReq` counts, by middleware and router or service.
    pub in_flight_reqs: Arc<l7::middleware::in_flight_req::InFlightReqStates>,
    /// `circuitBreaker` phases and metrics, by middleware and router or service.
    pub circuit_breakers: Arc<l7::middleware::circuit_breaker::BreakerStates>,
    /// HTTP `weighted` positions, by service.
    pub http_weighted: l7::service::WeightedPositions,
    /// TCP `inFlightConn` counts, by middleware, router and entrypoint.
    pub in_flight_conns: l4::tcp::middleware::InFlightConnStates,
    /// TCP round-robin positions, by service.
    pub tcp_positions: l4::balance::wrr::WrrPositions,
    /// UDP round-robin positions, by service.
    pub udp_positions: l4::balance::wrr::WrrPositions,
    /// Running TCP health checks, by service, with the service's and its named servers
    /// transport's definitions: a check stops once no snapshot holds it.
    pub tcp_health: Kept<String, TcpHealthDefinition, HealthHandle>,
}

/// What a TCP service's health checks depend on: the service (servers, `healthCheck`) and
/// the servers transport it names, if any (the static one changes only with a restart).
pub type TcpHealthDefinition = (TcpService, Option<TcpServersTransport>);

impl KeptStates {
    /// Forgets the states the snapshot just installed did not ask for.
    pub fn retain_used(&self) {
        self.in_flight_reqs.retain_used();
        self.circuit_breakers.retain_used();
        self.http_weighted.retain_used();
        self.in_flight_conns.retain_used();
        self.tcp_positions.retain_used();
        self.udp_positions.retain_used();
        self.tcp_health.retain_used();
    }
}

/// A router Traefik adds on its own: `ping@internal` on the ping entrypoint, and so on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InternalRoute {
    pub entrypoint: String,
    pub name: &'static str,
    pub rule: String,
    pub priority: i64,
    pub service: &'static str,
}

/// The internal routers of `st` whose service is in `services`, as Traefik adds them:
/// `/ping` and `/metrics` at the highest priority on their entrypoints (unless
/// `manualRouting`), and with `api.insecure` the API (`<basePath>api`, one below) and the
/// dashboard (`<basePath>`, two below) on the `traefik` entrypoint.
pub fn internal_routes(
    st: &crate::config::StaticConfig,
    services: &HashMap<&'static str, SharedHandler>,
) -> Vec<InternalRoute> {
    const TRAEFIK: &str = "traefik";
    let entrypoint = |configured: &str| {
        if configured.is_empty() {
            TRAEFIK.to_owned()
        } else {
            configured.to_owned()
        }
    };
    let mut routes = Vec::new();
    if let Some(ping) = st.ping.as_ref().filter(|p| !p.manual_routing) {
        routes.push(InternalRoute {
            entrypoint: entrypoint(&ping.entry_point),
            name: "ping@internal",
            rule: "PathPrefix(`/ping`)".to_owned(),
            priority: i64::MAX,
            service: "ping@internal",
        });
    }
    if let Some(prometheus) = st
        .metrics
        .as_ref()
        .and_then(|m| m.prometheus.as_ref())
        .filter(|p| !p.manual_routing)
    {
        routes.push(InternalRoute {
            entrypoint: entrypoint(&prometheus.entry_point),
            name: "prometheus@internal",
            rule: "PathPrefix(`/metrics`)".to_owned(),
            priority: i64::MAX,
            service: "prometheus@internal",
        });
    }
    if let Some(api) = st.api.as_ref().filter(|a| a.insecure) {
        let base = if api.base_path.is_empty() {
            "/".to_owned()
        } else if api.base_path.ends_with('/') {
            api.base_path.clone()
        } else {
            format!("{}/", api.base_path)
        };
        routes.push(InternalRoute {
            entrypoint: TRAEFIK.to_owned(),
            name: "api@internal",
            rule: format!("PathPrefix(`{base}api`)"),
            priority: i64::MAX - 1,
            service: "api@internal",
        });
        if api.dashboard {
            routes.push(InternalRoute {
                entrypoint: TRAEFIK.to_owned(),
                name: "dashboard@internal",
                rule: format!("PathPrefix(`{base}`)"),
                priority: i64::MAX - 2,
                service: "dashboard@internal",
            });
        }
    }
    routes.retain(|r| services.contains_key(r.service));
    routes
}

impl Internal {
    /// Starts the echo service; `http_services` are the internal HTTP services this process
    /// serves, routed on their entrypoints as `st` says.
    pub async fn start(
        st: &crate::config::StaticConfig,
        acme: Acme,
        http_services: HashMap<&'static str, SharedHandler>,
    ) -> std::io::Result<Internal> {
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let echo_addr = listener.local_addr()?;
        tokio::spawn(async move {
            let mut failures = super::listener::AcceptFailures::default();
            loop {
                match listener.accept().await {
                    Ok((mut stream, _)) => {
                        failures.succeeded();
                        tokio::spawn(async move {
                            let (mut r, mut w) = stream.split();
                            let _ = tokio::io::copy(&mut r, &mut w).await;
                            let _ = w.shutdown().await;
                        });
                    }
                    // Out of descriptors, like the entrypoints: wait, never give up.
                    Err(e) => {
                        let reason = super::listener::accept_error_reason(&e);
                        if let Some(pause) = failures.failed("echo@internal", reason, &e) {
                            tokio::time::sleep(pause).await;
                        }
                    }
                }
            }
        });
        let default_cert = self_signed_default().map_err(std::io::Error::other)?;
        let http_routes = internal_routes(st, &http_services);
        Ok(Internal {
            echo_addr,
            default_cert,
            acme: Arc::new(acme),
            http_services,
            http_routes,
            redis_limits: Default::default(),
            rate_limits: Default::default(),
            kept: KeptStates::default(),
        })
    }
}
