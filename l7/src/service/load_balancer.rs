//! `loadBalancer`: servers chosen by weighted round robin (`wrr`, Traefik's EDF order), power
//! of two choices (`p2c`) or rendezvous hashing on the client IP (`hrw`), optionally pinned by
//! a sticky cookie, skipping servers that are down.
//!
//! The runtime state (server health, balancing position, checkers) is an [`LbState`], kept
//! across reloads by [`super::ServiceStates`]; a [`LoadBalancer`] pairs it with the leaf
//! handlers of one snapshot. Servers are used in the order of the spec (Traefik shuffles them
//! at each build; ties in EDF order are decided by that order).

use std::sync::{Arc, Mutex, PoisonError, Weak};

use http::{Request, Response};
use http_body_util::BodyExt;

use super::active::{self, CheckerHandle, HealthCheckSpec, ProbeTarget, Prober, ProberSlot};
use super::health::{Checker, HealthObserver, ServerHealth, ServerHealthView};
use super::passive::{Outcome, Passive, PassiveHealthCheckSpec, Verdict};
use super::sticky::StickyCookie;
use super::{BuildError, Health, SharedHealth};
use crate::balance::p2c::{InFlight, P2c, SplitMix64};
use crate::balance::sticky::CookieSpec;
use crate::balance::{Edf, hrw::Hrw};
use crate::error::ProxyErrorKind;
use crate::handler::{
    Body, BoxFuture, ClientInfo, Handler, SharedHandler, error_response, response_error,
};

/// `loadBalancer.strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    #[default]
    Wrr,
    P2c,
    Hrw,
}

/// One of `loadBalancer.servers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSpec {
    /// As configured: names the server in sticky cookies, health checks and the API (shared:
    /// every observed request notes it).
    pub url: Arc<str>,
    /// Zero or less: the server is not used at all.
    pub weight: i64,
    /// Terminating: reached only through a sticky cookie.
    pub fenced: bool,
}

impl ServerSpec {
    /// A server with Traefik's defaults (weight 1).
    pub fn new(url: impl Into<Arc<str>>) -> Self {
        Self {
            url: url.into(),
            weight: 1,
            fenced: false,
        }
    }
}

/// `http.services.<name>.loadBalancer`, minus what the leaf handlers own (transport,
/// `passHostHeader`, `preservePath`, response forwarding).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LoadBalancerSpec {
    pub servers: Vec<ServerSpec>,
    pub strategy: Strategy,
    /// `sticky.cookie`; see [`CookieSpec::for_service`] for Traefik's defaults.
    pub sticky: Option<CookieSpec>,
    pub health_check: Option<HealthCheckSpec>,
    pub passive_health_check: Option<PassiveHealthCheckSpec>,
}

enum Core {
    Wrr(Edf<usize>),
    P2c {
        p2c: P2c<usize>,
        random: Mutex<SplitMix64>,
    },
    Hrw(Hrw<usize>),
}

/// The state of one load balancer that outlives a snapshot: server health, balancing
/// position, sticky table, passive failure windows and the active checker (stopped when the
/// state is dropped). Servers are indexed in spec order, without those of weight ≤ 0.
pub struct LbState {
    service: String,
    spec: LoadBalancerSpec,
    /// Spec index of each balanced server.
    members: Vec<usize>,
    health: Arc<ServerHealth>,
    core: Core,
    sticky: Option<StickyCookie>,
    passive: Option<Arc<Passive>>,
    prober: Option<ProberSlot>,
    _checker: Option<CheckerHandle>,
}

impl LbState {
    /// A fresh state, every server up; starts the active health check if the spec has one
    /// (then `prober` is required and this must run inside the tokio runtime).
    pub fn new(
        service: &str,
        spec: LoadBalancerSpec,
        prober: Option<Arc<dyn Prober>>,
    ) -> Result<Arc<Self>, BuildError> {
        let members: Vec<usize> = spec
            .servers
            .iter()
            .enumerate()
            .filter(|(_, server)| server.weight > 0)
            .map(|(index, _)| index)
            .collect();
        let servers: Vec<&ServerSpec> = members.iter().map(|&i| &spec.servers[i]).collect();
        let health = Arc::new(ServerHealth::new(
            service,
            servers.iter().map(|s| (s.url.to_string(), s.fenced)),
        ));
        let core = match spec.strategy {
            Strategy::Wrr => {
                let edf = Edf::new();
                for (slot, server) in servers.iter().enumerate() {
                    edf.add(slot, server.weight);
                }
                Core::Wrr(edf)
            }
            Strategy::P2c => Core::P2c {
                p2c: P2c::new(0..servers.len()),
                random: Mutex::new(SplitMix64::from_entropy()),
            },
            Strategy::Hrw => {
                let mut hrw = Hrw::new();
                for (slot, server) in servers.iter().enumerate() {
                    hrw.add(slot, &*server.url, server.weight);
                }
                Core::Hrw(hrw)
            }
        };
        // Traefik's `hrw` balancer has no sticky cookie: the client IP already pins clients.
        let sticky = spec
            .sticky
            .as_ref()
            .filter(|_| spec.strategy != Strategy::Hrw)
            .map(|cookie| StickyCookie::new(service, cookie, servers.iter().map(|s| &*s.url)))
            .transpose()?;
        let passive = spec.passive_health_check.as_ref().map(|passive| {
            Arc::new(Passive::new(
                passive,
                servers.len(),
                spec.health_check.is_some(),
            ))
        });
        let (prober, checker) = match &spec.health_check {
            None => (None, None),
            Some(check) => {
                let prober = prober.ok_or_else(|| BuildError::NoProber {
                    service: service.to_owned(),
                })?;
                let targets = servers
                    .iter()
                    .map(|server| ProbeTarget::new(service, &server.url, check))
                    .collect::<Result<Vec<_>, _>>()?;
                let slot: ProberSlot = Arc::new(Mutex::new(prober));
                let handle = active::spawn(health.clone(), targets, check.clone(), slot.clone())
                    .map_err(|_| BuildError::NoRuntime {
                        service: service.to_owned(),
                    })?;
                (Some(slot), Some(handle))
            }
        };
        Ok(Arc::new(Self {
            service: service.to_owned(),
            spec,
            members,
            health,
            core,
            sticky,
            passive,
            prober,
            _checker: checker,
        }))
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    pub fn spec(&self) -> &LoadBalancerSpec {
        &self.spec
    }

    /// Each used server's URL with whether it is up, in spec order.
    pub fn server_status(&self) -> Vec<(String, bool)> {
        self.health.statuses()
    }

    /// A handle that reads the servers' health when asked.
    pub fn health_view(&self) -> ServerHealthView {
        ServerHealthView(self.health.clone())
    }

    /// Whether a health check (active or passive) can take its servers down; without one
    /// they are always up.
    pub fn is_checked(&self) -> bool {
        self.spec.health_check.is_some() || self.spec.passive_health_check.is_some()
    }

    /// Reports every later change of the servers' health to `observer`.
    pub(crate) fn attach(&self, observer: Arc<dyn HealthObserver>) {
        self.health.attach(observer);
    }

    /// Stops reporting changes (see [`ServerHealth::detach`]).
    pub(crate) fn detach(&self) {
        self.health.detach();
    }

    #[cfg(test)]
    pub(crate) fn health_for_tests(&self) -> &ServerHealth {
        &self.health
    }

    /// Sends the next probes through `prober` (a reload kept this state with a new transport).
    pub(crate) fn replace_prober(&self, prober: Option<Arc<dyn Prober>>) {
        if let (Some(slot), Some(prober)) = (&self.prober, prober) {
            *slot.lock().unwrap_or_else(PoisonError::into_inner) = prober;
        }
    }

    /// The server for a request without a (usable) sticky cookie, and its in-flight guard.
    fn pick(&self, request: &Request<Body>) -> Option<(usize, Option<InFlight<usize>>)> {
        let available = |&server: &usize| self.health.is_available(server);
        match &self.core {
            Core::Wrr(edf) => edf.next_with(available).map(|server| (server, None)),
            Core::P2c { p2c, random } => {
                let mut random = random.lock().unwrap_or_else(PoisonError::into_inner);
                let picked = p2c.pick_where(&mut *random, available)?;
                Some((*picked.handler(), Some(picked)))
            }
            Core::Hrw(hrw) => {
                let client_ip = request
                    .extensions()
                    .get::<ClientInfo>()
                    .map(|client| client.peer.ip().to_string())
                    .unwrap_or_default();
                hrw.pick_where(&client_ip, available)
                    .map(|&server| (server, None))
            }
        }
    }

    /// Counts a sticky request in flight for `p2c`.
    fn enter(&self, server: usize) -> Option<InFlight<usize>> {
        match &self.core {
            Core::P2c { p2c, .. } => p2c.enter(&server),
            Core::Wrr(_) | Core::Hrw(_) => None,
        }
    }

    /// Feeds the passive health check with a server's response.
    fn observe(&self, server: usize, response: &Response<Body>) {
        let Some(passive) = &self.passive else {
            return;
        };
        let verdict = passive.observe(server, Outcome::of(response), tokio::time::Instant::now());
        let restore_after = match verdict {
            Verdict::Nothing => return,
            Verdict::Down => None,
            Verdict::DownUntil(after) => Some(after),
        };
        let reason = match response_error(response) {
            Some(kind) => kind.to_string(),
            None => format!("status {}", response.status()),
        };
        self.health
            .set(server, false, Checker::Passive, Some(&reason));
        let Some(after) = restore_after else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // Without a runtime there is no timer; the next failure arms it again.
            passive.restored(server);
            return;
        };
        // Weak: a state dropped by a reload does not wait for its timers.
        let (health, passive) = (Arc::downgrade(&self.health), Arc::downgrade(passive));
        runtime.spawn(restore(health, passive, server, after));
    }
}

async fn restore(
    health: Weak<ServerHealth>,
    passive: Weak<Passive>,
    server: usize,
    after: std::time::Duration,
) {
    tokio::time::sleep(after).await;
    if let (Some(health), Some(passive)) = (health.upgrade(), passive.upgrade()) {
        passive.restored(server);
        health.set(server, true, Checker::Passive, None);
    }
}

impl Health for LbState {
    fn is_up(&self) -> bool {
        self.health.any_up()
    }
}

impl std::fmt::Debug for LbState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LbState")
            .field("service", &self.service)
            .field("servers", &self.health.statuses())
            .finish()
    }
}

/// The `loadBalancer` handler of one snapshot.
pub struct LoadBalancer {
    state: Arc<LbState>,
    /// Leaf handler of each balanced server, indexed like the state's servers.
    servers: Vec<SharedHandler>,
}

impl LoadBalancer {
    /// `servers` holds one leaf handler per server of the state's spec, in spec order
    /// (those of weight ≤ 0 included, and ignored).
    pub fn new(state: Arc<LbState>, servers: Vec<SharedHandler>) -> Result<Self, BuildError> {
        if servers.len() != state.spec.servers.len() {
            return Err(BuildError::ServerCount {
                service: state.service.clone(),
                expected: state.spec.servers.len(),
                given: servers.len(),
            });
        }
        let servers = state
            .members
            .iter()
            .filter_map(|&index| servers.get(index).cloned())
            .collect();
        Ok(Self { state, servers })
    }

    /// The health this service reports to its parents: only with an active health check, as
    /// in Traefik.
    pub fn health(&self) -> Option<SharedHealth> {
        self.state
            .spec
            .health_check
            .is_some()
            .then(|| self.state.clone() as SharedHealth)
    }

    pub fn state(&self) -> &Arc<LbState> {
        &self.state
    }

    pub fn server_status(&self) -> Vec<(String, bool)> {
        self.state.server_status()
    }
}

impl Handler for LoadBalancer {
    fn call(&self, request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
        Box::pin(async move {
            let state = &*self.state;
            let pinned = state.sticky.as_ref().and_then(|sticky| {
                sticky
                    .pinned(&request, |server| state.health.is_up(server))
                    .map(|found| (*found.item, found.rewrite))
            });
            let (server, in_flight, set_cookie) = match pinned {
                Some((server, rewrite)) => (server, state.enter(server), rewrite),
                None => match state.pick(&request) {
                    Some((server, in_flight)) => (server, in_flight, state.sticky.is_some()),
                    None => return error_response(ProxyErrorKind::NoHealthyServer),
                },
            };
            let Some(handler) = self.servers.get(server) else {
                return error_response(ProxyErrorKind::Internal);
            };
            if let Some(notes) = crate::observe::RequestNotes::of(&request)
                && let Some(spec) = state
                    .members
                    .get(server)
                    .and_then(|&index| state.spec.servers.get(index))
            {
                notes.note_server(&spec.url);
            }
            let mut response = handler.call(request).await;
            state.observe(server, &response);
            if let (true, Some(sticky)) = (set_cookie, &state.sticky) {
                sticky.pin(&mut response, server);
            }
            match in_flight {
                // The request stays in flight until its response body is done.
                Some(in_flight) => response.map(|body| {
                    body.map_frame(move |frame| {
                        let _held = &in_flight;
                        frame
                    })
                    .boxed_unsync()
                }),
                None => response,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::{empty_body, full_body};
    use http::StatusCode;
    use http::header::{COOKIE, SET_COOKIE};
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Answers with its name, or with `status` when set.
    pub(crate) struct Named {
        name: &'static str,
        status: Mutex<Option<Response<Body>>>,
        calls: AtomicUsize,
    }

    impl Named {
        fn new(name: &'static str) -> Arc<Self> {
            Arc::new(Self {
                name,
                status: Mutex::new(None),
                calls: AtomicUsize::new(0),
            })
        }

        fn answer_once(&self, response: Response<Body>) {
            *self.status.lock().unwrap() = Some(response);
        }
    }

    impl Handler for Named {
        fn call(&self, _request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let scripted = self.status.lock().unwrap().take();
            let name = self.name;
            Box::pin(async move { scripted.unwrap_or_else(|| Response::new(full_body(name))) })
        }
    }

    fn spec(servers: &[(&str, i64)]) -> LoadBalancerSpec {
        LoadBalancerSpec {
            servers: servers
                .iter()
                .map(|&(url, weight)| ServerSpec {
                    weight,
                    ..ServerSpec::new(format!("http://{url}"))
                })
                .collect(),
            ..LoadBalancerSpec::default()
        }
    }

    fn balancer(spec: LoadBalancerSpec) -> (LoadBalancer, Vec<Arc<Named>>) {
        let names = ["A", "B", "C", "D"];
        let leaves: Vec<Arc<Named>> = names[..spec.servers.len()]
            .iter()
            .map(|n| Named::new(n))
            .collect();
        let state = LbState::new("lb@file", spec, None).unwrap();
        let handlers = leaves.iter().map(|l| l.clone() as SharedHandler).collect();
        (LoadBalancer::new(state, handlers).unwrap(), leaves)
    }

    async fn send(
        lb: &LoadBalancer,
        request: Request<Body>,
    ) -> (StatusCode, String, Option<String>) {
        let response = lb.call(request).await;
        let status = response.status();
        let cookie = response
            .headers()
            .get(SET_COOKIE)
            .map(|v| v.to_str().unwrap().to_owned());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap(), cookie)
    }

    async fn names(lb: &LoadBalancer, n: usize) -> String {
        let mut out = String::new();
        for _ in 0..n {
            let (status, body, _) = send(lb, Request::new(empty_body())).await;
            out.push_str(if status == StatusCode::OK { &body } else { "-" });
        }
        out
    }

    fn from(ip: &str) -> Request<Body> {
        let mut request = Request::new(empty_body());
        request.extensions_mut().insert(ClientInfo {
            peer: SocketAddr::new(ip.parse().unwrap(), 40000),
            local: "127.0.0.1:80".parse().unwrap(),
            tls: false,
            entrypoint: "web".into(),
            notes: None,
        });
        request
    }

    fn with_cookie(cookie: &str) -> Request<Body> {
        let mut request = Request::new(empty_body());
        request
            .headers_mut()
            .insert(COOKIE, cookie.parse().unwrap());
        request
    }

    #[tokio::test]
    async fn wrr_three_to_one_serves_in_traefiks_order() {
        let (lb, _) = balancer(spec(&[("a", 3), ("b", 1)]));
        assert_eq!(names(&lb, 12).await, "AABAAAABAABA");
    }

    #[tokio::test]
    async fn servers_of_weight_zero_or_less_are_never_used_nor_listed() {
        let (lb, leaves) = balancer(spec(&[("a", 1), ("b", 0), ("c", -1)]));
        assert_eq!(names(&lb, 4).await, "AAAA");
        assert_eq!(leaves[1].calls.load(Ordering::SeqCst), 0);
        assert_eq!(lb.server_status(), [("http://a".to_owned(), true)]);
    }

    #[tokio::test]
    async fn no_server_up_answers_503_no_available_server() {
        let (lb, _) = balancer(spec(&[("a", 1), ("b", 1)]));
        lb.state.health.set(0, false, Checker::Active, None);
        lb.state.health.set(1, false, Checker::Active, None);
        let (status, body, _) = send(&lb, Request::new(empty_body())).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, "no available server\n");
        let (empty, _) = balancer(spec(&[]));
        assert_eq!(names(&empty, 1).await, "-");
    }

    #[tokio::test]
    async fn every_strategy_skips_down_servers() {
        for strategy in [Strategy::Wrr, Strategy::P2c, Strategy::Hrw] {
            let (lb, _) = balancer(LoadBalancerSpec {
                strategy,
                ..spec(&[("a", 1), ("b", 1), ("c", 1)])
            });
            lb.state.health.set(1, false, Checker::Active, None);
            for ip in ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"] {
                let (_, body, _) = send(&lb, from(ip)).await;
                assert_ne!(body, "B", "{strategy:?}");
            }
        }
    }

    #[tokio::test]
    async fn sticky_cookie_round_trip_pins_the_client() {
        let (lb, _) = balancer(LoadBalancerSpec {
            sticky: Some(CookieSpec::for_service("lb@file")),
            ..spec(&[("127.0.0.1:18081", 1), ("127.0.0.1:18082", 1)])
        });
        let (_, first, cookie) = send(&lb, Request::new(empty_body())).await;
        assert_eq!(first, "A");
        let cookie = cookie.unwrap();
        assert_eq!(cookie, "_05410=b528746506c397e7; Path=/");
        let pair = cookie.split(';').next().unwrap();
        // Without the cookie round robin would now give B.
        for _ in 0..3 {
            let (_, body, set) = send(&lb, with_cookie(pair)).await;
            assert_eq!((body.as_str(), set), ("A", None));
        }
        // A down: the cookie is ignored, another server is picked and pinned.
        lb.state.health.set(0, false, Checker::Active, None);
        let (_, body, set) = send(&lb, with_cookie(pair)).await;
        assert_eq!(body, "B");
        assert_eq!(set.unwrap(), "_05410=238e99ca93e11d58; Path=/");
    }

    #[tokio::test]
    async fn a_legacy_cookie_is_honoured_and_rewritten() {
        let (lb, _) = balancer(LoadBalancerSpec {
            sticky: Some(CookieSpec::for_service("lb@file")),
            ..spec(&[("127.0.0.1:18081", 1), ("127.0.0.1:18082", 1)])
        });
        let (_, body, set) = send(&lb, with_cookie("_05410=http://127.0.0.1:18082")).await;
        assert_eq!(body, "B");
        assert_eq!(set.unwrap(), "_05410=238e99ca93e11d58; Path=/");
    }

    #[tokio::test]
    async fn fenced_servers_serve_only_their_sticky_clients() {
        let mut lb_spec = spec(&[("127.0.0.1:18081", 1), ("127.0.0.1:18082", 1)]);
        lb_spec.servers[0].fenced = true;
        lb_spec.sticky = Some(CookieSpec::for_service("lb@file"));
        let (lb, _) = balancer(lb_spec);
        for _ in 0..3 {
            assert_eq!(send(&lb, Request::new(empty_body())).await.1, "B");
        }
        assert_eq!(
            send(&lb, with_cookie("_05410=b528746506c397e7")).await.1,
            "A"
        );
    }

    #[tokio::test]
    async fn hrw_ignores_the_sticky_cookie_as_traefik_does() {
        let (lb, _) = balancer(LoadBalancerSpec {
            strategy: Strategy::Hrw,
            sticky: Some(CookieSpec::for_service("lb@file")),
            ..spec(&[("127.0.0.1:18081", 1), ("127.0.0.1:18082", 1)])
        });
        let (_, served, set) = send(&lb, from("10.9.0.1")).await;
        assert_eq!(set, None);
        let other = if served == "A" {
            "238e99ca93e11d58"
        } else {
            "b528746506c397e7"
        };
        let mut pinned = from("10.9.0.1");
        pinned
            .headers_mut()
            .insert(COOKIE, format!("_05410={other}").parse().unwrap());
        assert_eq!(send(&lb, pinned).await.1, served);
    }

    #[tokio::test]
    async fn hrw_keeps_each_client_ip_on_one_server() {
        let (lb, _) = balancer(LoadBalancerSpec {
            strategy: Strategy::Hrw,
            ..spec(&[("a", 1), ("b", 1), ("c", 1)])
        });
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..30 {
            let ip = format!("10.1.0.{i}");
            let (_, first, _) = send(&lb, from(&ip)).await;
            for _ in 0..3 {
                assert_eq!(send(&lb, from(&ip)).await.1, first, "client {ip}");
            }
            seen.insert(first);
        }
        assert_eq!(seen.len(), 3, "clients spread over every server: {seen:?}");
    }

    /// Answers only when released, to keep a request in flight.
    struct Held(tokio::sync::Semaphore);

    impl Handler for Held {
        fn call(&self, _request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
            Box::pin(async move {
                let _permit = self.0.acquire().await;
                Response::new(full_body("held"))
            })
        }
    }

    #[tokio::test]
    async fn p2c_prefers_the_server_with_fewer_requests_in_flight() {
        let state = LbState::new(
            "lb@file",
            LoadBalancerSpec {
                strategy: Strategy::P2c,
                ..spec(&[("a", 1), ("b", 1)])
            },
            None,
        )
        .unwrap();
        let held = Arc::new(Held(tokio::sync::Semaphore::new(0)));
        let fast = Named::new("fast");
        let lb = Arc::new(
            LoadBalancer::new(
                state,
                vec![held.clone() as SharedHandler, fast.clone() as SharedHandler],
            )
            .unwrap(),
        );
        // Requests go to both until one is stuck on the held server.
        let mut stuck = Vec::new();
        while stuck.is_empty() {
            let lb = lb.clone();
            let task = tokio::spawn(async move { lb.call(Request::new(empty_body())).await });
            tokio::time::sleep(Duration::from_millis(5)).await;
            if task.is_finished() {
                continue;
            }
            stuck.push(task);
        }
        // Two servers: p2c always draws both, so the idle one wins every time.
        for _ in 0..20 {
            let (_, body, _) = send(&lb, Request::new(empty_body())).await;
            assert_eq!(body, "fast");
        }
        held.0.add_permits(1);
        for task in stuck {
            let response = task.await.unwrap();
            // Still in flight until the body is consumed.
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, "held");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn passive_check_takes_a_failing_server_out_for_the_failure_window() {
        let state = LbState::new(
            "lb@file",
            LoadBalancerSpec {
                passive_health_check: Some(PassiveHealthCheckSpec::default()),
                ..spec(&[("a", 1)])
            },
            None,
        )
        .unwrap();
        let leaf = Named::new("A");
        let lb = LoadBalancer::new(state, vec![leaf.clone() as SharedHandler]).unwrap();
        leaf.answer_once(error_response(ProxyErrorKind::UpstreamConnect));
        assert_eq!(
            send(&lb, Request::new(empty_body())).await.0,
            StatusCode::BAD_GATEWAY
        );
        assert_eq!(lb.server_status(), [("http://a".to_owned(), false)]);
        assert_eq!(names(&lb, 1).await, "-");
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert_eq!(names(&lb, 1).await, "-");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(names(&lb, 1).await, "A");
        assert_eq!(leaf.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn passive_check_counts_server_errors_but_not_client_errors() {
        let state = LbState::new(
            "lb@file",
            LoadBalancerSpec {
                passive_health_check: Some(PassiveHealthCheckSpec {
                    failure_window: Duration::from_secs(10),
                    max_failed_attempts: 2,
                }),
                ..spec(&[("a", 1)])
            },
            None,
        )
        .unwrap();
        let leaf = Named::new("A");
        let lb = LoadBalancer::new(state, vec![leaf.clone() as SharedHandler]).unwrap();
        let status = |code| {
            let mut response = Response::new(empty_body());
            *response.status_mut() = StatusCode::from_u16(code).unwrap();
            response
        };
        leaf.answer_once(status(500));
        names(&lb, 1).await;
        leaf.answer_once(error_response(ProxyErrorKind::ClientGone));
        names(&lb, 1).await;
        assert!(lb.server_status()[0].1);
        leaf.answer_once(status(503));
        names(&lb, 1).await;
        assert!(!lb.server_status()[0].1);
    }

    #[test]
    fn a_health_check_without_a_prober_or_a_wrong_handler_count_is_a_build_error() {
        let spec_with_check = LoadBalancerSpec {
            health_check: Some(HealthCheckSpec::default()),
            ..spec(&[("a", 1)])
        };
        assert!(matches!(
            LbState::new("lb@file", spec_with_check, None),
            Err(BuildError::NoProber { .. })
        ));
        let state = LbState::new("lb@file", spec(&[("a", 1), ("b", 1)]), None).unwrap();
        let error = LoadBalancer::new(state, vec![Named::new("A") as SharedHandler]).err();
        assert_eq!(
            error.map(|e| e.to_string()).unwrap_or_default(),
            "service lb@file: 1 server handlers for 2 servers"
        );
    }

    #[test]
    fn only_a_balancer_with_an_active_check_reports_its_health() {
        let (lb, _) = balancer(spec(&[("a", 1)]));
        assert!(lb.health().is_none());
    }
}
