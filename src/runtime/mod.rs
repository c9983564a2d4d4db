//! The running router: binds the entrypoints, compiles each dynamic configuration into
//! a snapshot, swaps it in atomically, watches the file provider, and shuts down
//! gracefully.
//!
//! - [`compile`] turns a validated configuration into `l4` routing tables and services;
//! - [`listener`] owns the TCP listeners and their accept loops;
//! - [`http3`] owns the QUIC endpoints of entrypoints with `http3`;
//! - [`provider`] watches the file provider and drives reloads;
//! - [`internal`] hosts the built-in services (`echo@internal`);
//! - [`rules`] plugs the real rule compilers into configuration validation;
//! - [`upgrade`] hands the sockets to a new binary on `SIGUSR2` (docs/upgrade.md).

pub mod compile;
pub mod http3;
pub mod internal;
pub mod listener;
pub mod provider;
pub mod quic_forward;
pub mod quic_socket;
pub mod redis_buckets;
pub mod rules;
pub mod server_health;
pub mod udp;
pub mod upgrade;

use std::collections::HashMap;
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tracing::{error, info, warn};

use crate::config::LoadedStatic;
use crate::config::static_cfg::{Protocol, StaticConfig};
use crate::logging::LogFile;
use compile::{HttpEntrypoints, Snapshot};
use l7::forwarded::ForwardedPolicy;
use l7::server::{EntrypointConfig, HttpEntrypoint};
use listener::Entrypoint;

/// Runs until SIGTERM/SIGINT, or until a new binary started on SIGUSR2 serves; then drains.
/// Returns the process exit code.
pub async fn run(loaded: LoadedStatic, log_file: Option<LogFile>) -> i32 {
    let st = Arc::new(loaded.config);
    // Installed first: SIGUSR2's default action would end the process, and SIGTERM's would
    // skip the graceful shutdown of a signal sent as soon as the ports are open.
    let upgrade_signal = UpgradeSignal::install();
    let mut shutdown = ShutdownSignals::install();
    let mut inherited = match upgrade::Inherited::from_env() {
        Ok(i) => i,
        Err(e) => {
            error!(error = %e, "upgrade: cannot take over from the previous process");
            return 1;
        }
    };
    // Traefik goes on without an access log it cannot open; so does Sallyport, loudly.
    let access_log = st.access_log.as_ref().and_then(|cfg| {
        crate::accesslog::AccessLog::start(cfg)
            .map_err(|e| error!("access log disabled: {e}"))
            .ok()
    });
    spawn_log_reopener(log_file, access_log.clone());
    let metrics = st
        .metrics
        .as_ref()
        .and_then(|m| m.prometheus.as_ref())
        .and_then(|p| {
            crate::metrics::Metrics::new(p)
                .map(Arc::new)
                .map_err(|e| error!("metrics disabled: {e}"))
                .ok()
        });
    if let (Some(log), Some(metrics)) = (&access_log, &metrics) {
        log.count_drops_in(metrics.access_log_dropped());
    }
    let span_export = st.tracing.as_ref().and_then(start_span_export);
    let conn_observer = conn_observer(access_log.as_ref(), metrics.as_ref());
    let request_observer =
        request_observer(access_log.as_ref(), metrics.as_ref(), span_export.as_ref());
    if request_observer.is_some() {
        spawn_report_flusher();
    }
    // Flips when shutdown begins: `/ping` answers `terminatingStatusCode` from then on.
    let (terminating, _) = tokio::sync::watch::channel(false);
    let api_state = Arc::new(ArcSwap::from_pointee(crate::api::ApiState::build(
        &st,
        &Default::default(),
        &Default::default(),
        &Default::default(),
    )));
    let services = internal_http_services(&st, &api_state, metrics.as_ref(), &terminating);
    let internal = match internal::Internal::start(&st, crate::acme::Acme::new(&st), services).await
    {
        Ok(i) => {
            if let Some(metrics) = &metrics {
                i.redis_limits
                    .count_errors_in(metrics.ratelimit_redis_errors());
            }
            Arc::new(i)
        }
        Err(e) => {
            error!(error = %e, "cannot start the internal services");
            return 1;
        }
    };

    // The first dynamic configuration is applied before any entrypoint accepts, so a
    // client that connects as soon as a port opens is routed.
    let store = Arc::new(ArcSwap::from_pointee(Snapshot::empty()));
    let http = Arc::new(http_entrypoints(&st, &internal));
    for server in http.values() {
        server.set_observer(request_observer.clone());
        server.set_tracing(st.tracing.as_ref().map(crate::telemetry::trace_policy));
    }
    let mut reloader =
        provider::Reloader::new(st.clone(), internal.clone(), store.clone(), http.clone())
            .with_observability(provider::Observability {
                api: st.api.is_some().then(|| api_state.clone()),
                metrics: metrics.clone(),
            });
    reloader.reload(provider::Trigger::Startup);
    let quic_tls = reloader.quic_tls();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Watching starts before any entrypoint accepts.
    // The other providers' first configurations are applied before any entrypoint accepts
    // too (within a bound: a store that is down must not keep the router from starting).
    let mut started = crate::providers::spawn(&st, stop_rx.clone());
    if let Some(started) = started.as_mut() {
        reloader
            .first_configurations(started, crate::providers::FIRST_CONFIGURATION_WAIT)
            .await;
        // The file watcher starts in `run`: a file changed while waiting is read now.
        reloader.reload(provider::Trigger::FileChange);
    }
    let watcher = tokio::spawn(reloader.run(stop_rx.clone(), started.map(|s| s.updates)));
    if let Some((udp, tcp)) = http3_port_clash(&st) {
        error!(udp_entrypoint = %udp, http3_entrypoint = %tcp, "a UDP entrypoint has the port of an entrypoint with http3; both would receive its QUIC datagrams");
        return 1;
    }

    let mut entrypoints = Vec::new();
    let mut udp_entrypoints = Vec::new();
    let mut http3_endpoints = Vec::new();
    for (name, ep) in &st.entry_points {
        if ep.implicit && !serves_internal(&internal, name) {
            info!(entrypoint = %name, "nothing this build serves is routed to the api/ping/metrics entrypoint; not listening on it");
            continue;
        }
        // The HTTP/3 side of this entrypoint, if it has one: its HTTP server, and the port
        // Alt-Svc advertises (a TCP entrypoint's only).
        let h3_server = ep.http3.as_ref().and_then(|_| http.get(name));
        let address = ep.address.to_string();
        if ep.address.protocol == Protocol::Udp {
            let handed_over = inherited.as_mut().and_then(|i| i.udp(name, &address));
            let bound = match handed_over {
                Some(socket) => inherited_udp(socket)
                    .map(|socket| udp::UdpEntrypoint::on_socket(name, ep, Arc::new(socket))),
                None => udp::UdpEntrypoint::bind(name, ep),
            };
            let bound = bound
                .map(|udp_ep| udp_ep.with_observer(conn_observer.clone()))
                .and_then(|udp_ep| match h3_server {
                    None => Ok(udp_ep),
                    Some(server) => {
                        let (h3, udp_ep) = with_http3(udp_ep, name, ep, server, &quic_tls)?;
                        http3_endpoints.push(h3);
                        Ok(udp_ep)
                    }
                });
            match bound {
                Ok(e) => udp_entrypoints.push(e),
                Err(e) => {
                    error!(entrypoint = %name, address = %ep.address, error = %e, "cannot listen");
                    return 1;
                }
            }
            continue;
        }
        let handed_over = inherited.as_mut().and_then(|i| i.tcp(name, &address));
        let tcp = match Entrypoint::bind(name, ep, handed_over) {
            Ok(e) => e
                .with_observer(conn_observer.clone())
                .with_metrics(metrics.clone()),
            Err(e) => {
                error!(entrypoint = %name, address = %ep.address, error = %e, "cannot listen");
                return 1;
            }
        };
        if let Some(server) = h3_server {
            // UDP on the TCP listener's address: the same port, shared by HTTP/3, QUIC
            // passthrough and UDP routers that name this entrypoint.
            let handed_over = inherited.as_mut().and_then(|i| i.udp(name, &address));
            let bound = tcp.socket_addr().and_then(|addr| {
                let socket = Arc::new(match handed_over {
                    Some(socket) => inherited_udp(socket)?,
                    None => udp::bind_one(addr, ep.reuse_port)?,
                });
                with_http3(
                    udp::UdpEntrypoint::on_socket(name, ep, socket)
                        .with_observer(conn_observer.clone()),
                    name,
                    ep,
                    server,
                    &quic_tls,
                )
            });
            match bound {
                Ok((h3, udp_ep)) => {
                    server.advertise_http3(h3.advertised_port(ep));
                    http3_endpoints.push(h3);
                    udp_entrypoints.push(udp_ep);
                }
                Err(e) => {
                    error!(entrypoint = %name, address = %ep.address, error = %e, "cannot listen for HTTP/3 (UDP)");
                    return 1;
                }
            }
        }
        entrypoints.push(tcp);
    }

    if let Some(inherited) = inherited.as_mut() {
        for h3 in &http3_endpoints {
            let Some(socket) = inherited.quic_forward(h3.name()) else {
                continue;
            };
            match h3.forward_to_previous(socket) {
                Ok(()) => {
                    info!(entrypoint = %h3.name(), "upgrade: packets of the previous process's HTTP/3 connections are forwarded to it while it drains")
                }
                Err(e) => {
                    warn!(entrypoint = %h3.name(), error = %e, "upgrade: cannot forward packets to the previous process; its HTTP/3 connections are cut")
                }
            }
        }
    }
    // Duplicates of every socket, for the process a later upgrade starts.
    let handover = match handover_sockets(&st, &entrypoints, &udp_entrypoints) {
        Ok(h) => h,
        Err(e) => {
            error!(error = %e, "cannot keep the sockets for a later upgrade");
            return 1;
        }
    };
    let mut serving = Vec::new();
    for ep in entrypoints {
        info!(entrypoint = %ep.name(), address = %ep.local_addr(), "listening");
        serving.push(ep.serve(store.clone(), stop_rx.clone()));
    }
    // Set when a new process took the sockets over: the UDP relays stop reading them.
    let handed_over = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut udp_serving = Vec::new();
    for ep in udp_entrypoints {
        info!(entrypoint = %ep.name(), address = %ep.local_addr(), "listening (UDP)");
        udp_serving.push(
            ep.with_handed_over(handed_over.clone())
                .serve(store.clone(), stop_rx.clone()),
        );
    }

    // The entrypoints whose HTTP/3 connections a successor forwards packets to, with their
    // configured addresses.
    let quic_forwarded: Vec<(String, String)> = http3_endpoints
        .iter()
        .map(|h3| {
            let address = st
                .entry_points
                .get(h3.name())
                .map(|ep| ep.address.to_string())
                .unwrap_or_default();
            (h3.name().to_owned(), address)
        })
        .collect();
    let mut http3_serving = Vec::new();
    for ep in http3_endpoints {
        info!(entrypoint = %ep.name(), address = %ep.local_addr(), "listening (HTTP/3)");
        http3_serving.push(ep.serve(quic_tls.clone(), stop_rx.clone()));
    }

    // Orders start once the entrypoints that answer their challenges listen.
    internal.acme.start(stop_rx.clone());
    // systemd learns the new main pid before the previous process may exit.
    upgrade::notify_ready();
    if let Some(inherited) = inherited.take() {
        match inherited.ready() {
            Ok(()) => info!("upgrade: serving; the previous process drains"),
            Err(e) => {
                // The previous process takes this as a failed upgrade and keeps serving;
                // two processes on the same sockets would serve twice as long as needed.
                error!(error = %e, "upgrade: cannot tell the previous process; exiting");
                return 1;
            }
        }
    }
    let successor = wait_for_stop(upgrade_signal, &mut shutdown, &handover, &quic_forwarded).await;
    drop(handover);
    let upgraded = successor.is_some();
    let mut from_successor = successor.unwrap_or_default();
    if upgraded {
        handed_over.store(true, std::sync::atomic::Ordering::SeqCst);
    } else {
        terminating.send_replace(true);
    }
    // `requestAcceptGraceTimeout`: keep accepting (and answering `/ping` with its
    // terminating status, so a load balancer takes this instance out) before closing.
    let accept_grace = st
        .entry_points
        .values()
        .filter_map(|ep| {
            ep.transport
                .life_cycle
                .request_accept_grace_timeout
                .to_std()
        })
        .max()
        .unwrap_or_default();
    // After an upgrade the new process accepts already: no reason to keep on.
    if !accept_grace.is_zero() && !upgraded {
        info!(grace = ?accept_grace, "shutting down: still accepting for requestAcceptGraceTimeout");
        tokio::select! {
            _ = tokio::time::sleep(accept_grace) => {}
            // A second signal skips the rest of the wait.
            _ = shutdown.recv() => {}
        }
    }
    info!("shutting down: no new connections; draining open ones");
    let _ = stop_tx.send(true);
    // Keep-alive HTTP connections finish their request in flight and close; after an
    // upgrade, without racing a request already on its way (the new process serves).
    for server in http.values() {
        if upgraded {
            server.hand_over();
        } else {
            server.shutdown();
        }
    }
    let mut drains = tokio::task::JoinSet::new();
    for s in serving {
        drains.spawn(async move {
            let (name, grace) = (s.name.clone(), s.grace);
            if !s.drain().await {
                warn!(entrypoint = %name, grace = ?grace, "graceTimeOut reached; closing remaining connections");
            }
        });
    }
    for s in udp_serving {
        drains.spawn(async move {
            let (name, grace) = (s.name.clone(), s.grace);
            if !s.drain().await {
                warn!(entrypoint = %name, grace = ?grace, "graceTimeOut reached; closing remaining UDP sessions");
            }
        });
    }
    for s in http3_serving {
        let forwarded = from_successor.remove(&*s.name);
        drains.spawn(async move {
            let (name, grace) = (s.name.clone(), s.grace);
            if !s.drain(forwarded).await {
                warn!(entrypoint = %name, grace = ?grace, "graceTimeOut reached; closing remaining HTTP/3 connections");
            }
        });
    }
    drains.join_all().await;
    // The last requests' reports, which the workers may hold, reach the observers first.
    l7::observe::flush_reports();
    if let Some(export) = &span_export {
        export.shutdown().await;
    }
    if let Some(log) = access_log {
        // The last lines are still in the buffers: written before the process ends.
        let closed = tokio::task::spawn_blocking(move || log.close());
        if tokio::time::timeout(std::time::Duration::from_secs(5), closed)
            .await
            .is_err()
        {
            warn!("the access log's last lines were not written within 5 s");
        }
    }
    watcher.abort();
    info!("stopped");
    0
}

/// An HTTP/3 endpoint for `server` on the socket of `udp_ep`, which hands it the QUIC
/// traffic that is not passed through.
fn with_http3(
    udp_ep: udp::UdpEntrypoint,
    name: &str,
    ep: &crate::config::static_cfg::EntryPoint,
    server: &HttpEntrypoint,
    quic_tls: &tokio::sync::watch::Receiver<Option<Arc<rustls::ServerConfig>>>,
) -> std::io::Result<(http3::Http3Endpoint, udp::UdpEntrypoint)> {
    let (h3, local) = http3::Http3Endpoint::new(
        name,
        ep,
        udp_ep.socket(),
        server.clone(),
        max_concurrent_streams(ep),
        quic_tls.borrow().clone(),
    )?;
    Ok((h3, udp_ep.with_local(local)))
}

/// The HTTP server of every TCP entrypoint Sallyport listens on, and of every UDP
/// entrypoint with `http3`, set up from its static configuration.
fn http_entrypoints(st: &StaticConfig, internal: &internal::Internal) -> HttpEntrypoints {
    let host = hostname();
    st.entry_points
        .iter()
        .filter(|(name, ep)| {
            (!ep.implicit || serves_internal(internal, name))
                && (ep.address.protocol == Protocol::Tcp || ep.http3.is_some())
        })
        .map(|(name, ep)| {
            let timeouts = &ep.transport.responding_timeouts;
            let positive = |d: crate::config::Duration| d.to_std().filter(|v| !v.is_zero());
            let config = EntrypointConfig {
                max_concurrent_streams: max_concurrent_streams(ep),
                max_header_bytes: usize::try_from(ep.http.max_header_bytes)
                    .ok()
                    .filter(|n| *n > 0)
                    .unwrap_or(1 << 20),
                read_timeout: positive(timeouts.read_timeout),
                write_timeout: positive(timeouts.write_timeout),
                idle_timeout: positive(timeouts.idle_timeout),
                forwarded: ForwardedPolicy {
                    trusted: ep
                        .forwarded_headers
                        .trusted_ips
                        .iter()
                        .map(|n| n.0)
                        .collect(),
                    insecure: ep.forwarded_headers.insecure,
                },
                sanitize_path: ep.http.sanitize_path.unwrap_or(true),
                server_name: http::HeaderValue::from_str(&host)
                    .ok()
                    .filter(|name| !name.is_empty()),
                ..EntrypointConfig::new(name)
            };
            (name.clone(), HttpEntrypoint::new(config))
        })
        .collect()
}

/// Whether an internal router (ping, API, metrics) is routed on entrypoint `name`: the
/// `traefik` entrypoint that Traefik creates for them is only bound then.
fn serves_internal(internal: &internal::Internal, name: &str) -> bool {
    internal.http_routes.iter().any(|r| r.entrypoint == name)
}

/// `http2.maxConcurrentStreams`, which also bounds the requests open at once on one HTTP/3
/// connection.
fn max_concurrent_streams(ep: &crate::config::static_cfg::EntryPoint) -> u32 {
    u32::try_from(ep.http2.max_concurrent_streams)
        .ok()
        .filter(|n| *n > 0)
        .unwrap_or(250)
}

/// A UDP entrypoint on the port of a TCP entrypoint with `http3`: (UDP name, TCP name).
fn http3_port_clash(st: &StaticConfig) -> Option<(&str, &str)> {
    let http3 = st
        .entry_points
        .iter()
        .filter(|(_, ep)| ep.http3.is_some() && ep.address.protocol == Protocol::Tcp);
    for (tcp_name, tcp) in http3 {
        for (udp_name, udp) in &st.entry_points {
            if udp.address.protocol == Protocol::Udp && udp.address.port == tcp.address.port {
                return Some((udp_name, tcp_name));
            }
        }
    }
    None
}

/// This machine's name, for `X-Forwarded-Server` (as Traefik sends `os.Hostname()`).
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its whole length, and gethostname writes at most that.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// SIGUSR1 reopens the log file (log rotation); without a file it is ignored rather
/// than ending the process.
/// The internal HTTP services this configuration asks for: the API and dashboard with
/// `api`, `/ping` with `ping`, `/metrics` with `metrics.prometheus`.
fn internal_http_services(
    st: &StaticConfig,
    api_state: &Arc<ArcSwap<crate::api::ApiState>>,
    metrics: Option<&Arc<crate::metrics::Metrics>>,
    terminating: &tokio::sync::watch::Sender<bool>,
) -> std::collections::HashMap<&'static str, l7::handler::SharedHandler> {
    let mut services: std::collections::HashMap<&'static str, l7::handler::SharedHandler> =
        std::collections::HashMap::new();
    if let Some(api) = &st.api {
        services.insert(
            "api@internal",
            Arc::new(crate::api::ApiHandler::new(
                api_state.clone(),
                &api.base_path,
            )),
        );
        if api.dashboard {
            services.insert(
                "dashboard@internal",
                Arc::new(crate::dashboard::DashboardHandler::new(&api.base_path)),
            );
        }
    }
    if let Some(ping) = &st.ping {
        let status = u16::try_from(ping.terminating_status_code)
            .ok()
            .filter(|s| (100..=599).contains(s))
            .unwrap_or(503);
        services.insert(
            "ping@internal",
            Arc::new(crate::api::PingHandler::new(
                terminating.subscribe(),
                status,
            )),
        );
    }
    if let Some(metrics) = metrics {
        services.insert(
            "prometheus@internal",
            Arc::new(crate::metrics::MetricsHandler::new(metrics.clone())),
        );
    }
    services
}

/// The OTLP span exporter, when `tracing.otlp` is configured (an error disables it).
fn start_span_export(
    tracing: &crate::config::static_cfg::Tracing,
) -> Option<Arc<crate::telemetry::SpanExport>> {
    crate::telemetry::SpanExport::start(tracing)
        .map_err(|e| error!("tracing export disabled: {e}"))
        .ok()
        .flatten()
}

/// What every HTTP request is reported to: the access log, the metrics and the span
/// exporter, if any.
fn request_observer(
    access_log: Option<&Arc<crate::accesslog::AccessLog>>,
    metrics: Option<&Arc<crate::metrics::Metrics>>,
    span_export: Option<&Arc<crate::telemetry::SpanExport>>,
) -> Option<Arc<dyn l7::observe::RequestObserver>> {
    let mut observers: Vec<Arc<dyn l7::observe::RequestObserver>> = Vec::new();
    if let Some(export) = span_export {
        observers.push(export.clone());
    }
    if let Some(log) = access_log {
        observers.push(log.clone());
    }
    if let Some(metrics) = metrics {
        observers.push(metrics.clone());
    }
    match observers.len() {
        0 => None,
        1 => observers.pop(),
        _ => {
            let wanted = l7::observe::WantedHeaders::union(
                observers.iter().filter_map(|o| o.wanted_headers()),
            );
            let wanted_response = l7::observe::WantedHeaders::union(
                observers.iter().filter_map(|o| o.wanted_response_headers()),
            );
            Some(Arc::new(RequestObservers {
                observers,
                wanted,
                wanted_response,
            }))
        }
    }
}

/// Several request observers as one.
struct RequestObservers {
    observers: Vec<Arc<dyn l7::observe::RequestObserver>>,
    /// The headers any of them wants.
    wanted: Option<l7::observe::WantedHeaders>,
    wanted_response: Option<l7::observe::WantedHeaders>,
}

impl l7::observe::RequestObserver for RequestObservers {
    fn observe(&self, record: &l7::observe::RequestRecord) {
        for o in &self.observers {
            o.observe(record);
        }
    }

    fn wanted_headers(&self) -> Option<&l7::observe::WantedHeaders> {
        self.wanted.as_ref()
    }

    fn wanted_response_headers(&self) -> Option<&l7::observe::WantedHeaders> {
        self.wanted_response.as_ref()
    }

    /// Asked once, when the entrypoint installs the observer: no need to keep the answer.
    fn wants_target(&self) -> bool {
        self.observers.iter().any(|o| o.wants_target())
    }

    fn wants_host(&self) -> bool {
        self.observers.iter().any(|o| o.wants_host())
    }
}

/// What TCP connections and UDP sessions are reported to: the access log and the metrics,
/// if any.
fn conn_observer(
    access_log: Option<&Arc<crate::accesslog::AccessLog>>,
    metrics: Option<&Arc<crate::metrics::Metrics>>,
) -> Option<l4::observe::Observer> {
    let mut observers: Vec<Arc<dyn l4::observe::ConnObserver>> = Vec::new();
    if let Some(log) = access_log {
        observers.push(log.clone());
    }
    if let Some(metrics) = metrics {
        observers.push(metrics.clone());
    }
    match observers.len() {
        0 => None,
        1 => observers.into_iter().next().map(l4::observe::Observer),
        _ => Some(l4::observe::Observer(Arc::new(l4::observe::Observers(
            observers,
        )))),
    }
}

/// How long a request's report may wait in a worker's run at most.
const REPORT_FLUSH: std::time::Duration = std::time::Duration::from_millis(100);

/// Delivers the reports the workers hold ([`l7::observe::batch_on_workers`]) every
/// [`REPORT_FLUSH`]: a worker kept busy by other work (TCP relays, say) may not go idle for a
/// long time, and its last requests' lines and counts would wait for it.
fn spawn_report_flusher() {
    tokio::spawn(async {
        let mut tick = tokio::time::interval(REPORT_FLUSH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            l7::observe::flush_reports();
        }
    });
}

fn spawn_log_reopener(
    log_file: Option<LogFile>,
    access_log: Option<Arc<crate::accesslog::AccessLog>>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut usr1) = signal(SignalKind::user_defined1()) else {
        warn!("cannot install the SIGUSR1 handler");
        return;
    };
    tokio::spawn(async move {
        while usr1.recv().await.is_some() {
            match &log_file {
                Some(f) => match f.reopen() {
                    Ok(()) => info!(path = %f.path().display(), "SIGUSR1: log file reopened"),
                    Err(e) => {
                        error!(path = %f.path().display(), error = %e, "SIGUSR1: cannot reopen the log file")
                    }
                },
                None => info!("SIGUSR1: no log file to reopen"),
            }
            if let Some(access_log) = &access_log {
                access_log.reopen();
            }
        }
    });
}

/// A UDP socket handed over by the previous process, ready for tokio.
fn inherited_udp(socket: std::net::UdpSocket) -> std::io::Result<tokio::net::UdpSocket> {
    socket.set_nonblocking(true)?;
    tokio::net::UdpSocket::from_std(socket)
}

/// Every socket this process serves, labelled for a successor.
fn handover_sockets(
    st: &StaticConfig,
    tcp: &[Entrypoint],
    udp: &[udp::UdpEntrypoint],
) -> std::io::Result<Vec<upgrade::Labelled>> {
    use std::os::fd::AsFd;
    let address = |name: &str| {
        st.entry_points
            .get(name)
            .map(|ep| ep.address.to_string())
            .unwrap_or_default()
    };
    let mut sockets = Vec::new();
    for ep in tcp {
        sockets.push(upgrade::Labelled {
            kind: upgrade::Kind::Tcp,
            entrypoint: ep.name().to_owned(),
            address: address(ep.name()),
            fd: ep.socket_fd()?,
        });
    }
    for ep in udp {
        sockets.push(upgrade::Labelled {
            kind: upgrade::Kind::Udp,
            entrypoint: ep.name().to_owned(),
            address: address(ep.name()),
            fd: ep.socket().as_fd().try_clone_to_owned()?,
        });
    }
    Ok(sockets)
}

/// SIGUSR2, the request for a binary upgrade, with the binary and arguments to start.
struct UpgradeSignal {
    signal: Option<tokio::signal::unix::Signal>,
    /// Resolved at start: once the file is replaced, `/proc/self/exe` no longer names it.
    binary: std::io::Result<std::path::PathBuf>,
    args: Vec<std::ffi::OsString>,
}

impl UpgradeSignal {
    fn install() -> UpgradeSignal {
        use tokio::signal::unix::{SignalKind, signal};
        let signal = signal(SignalKind::user_defined2())
            .map_err(
                |e| warn!(error = %e, "cannot install the SIGUSR2 handler: no binary upgrades"),
            )
            .ok();
        UpgradeSignal {
            signal,
            binary: std::env::current_exe(),
            args: std::env::args_os().skip(1).collect(),
        }
    }
}

/// Waits for SIGTERM/SIGINT (`None`) or for a successful upgrade: then the sockets over
/// which the new process forwards the packets of this one's HTTP/3 connections, by
/// entrypoint (those of `quic_forwarded`, named with their configured addresses). A failed
/// upgrade is logged and the process goes on as if nothing happened.
async fn wait_for_stop(
    mut upgrade_signal: UpgradeSignal,
    shutdown: &mut ShutdownSignals,
    handover: &[upgrade::Labelled],
    quic_forwarded: &[(String, String)],
) -> Option<HashMap<String, UnixDatagram>> {
    loop {
        let requested = async {
            match upgrade_signal.signal.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.recv() => return None,
            _ = requested => {}
        }
        // Made afresh for each attempt: a failed one leaves nothing behind.
        let mut forward_labels = Vec::new();
        let mut forwards = HashMap::new();
        for (entrypoint, address) in quic_forwarded {
            match upgrade::quic_forward_pair(entrypoint, address) {
                Ok((label, ours)) => {
                    forward_labels.push(label);
                    forwards.insert(entrypoint.clone(), ours);
                }
                Err(e) => {
                    warn!(entrypoint = %entrypoint, error = %e, "upgrade: no socket pair to forward HTTP/3 packets; the connections will be cut")
                }
            }
        }
        let sockets: Vec<&upgrade::Labelled> = handover.iter().chain(&forward_labels).collect();
        let outcome = match &upgrade_signal.binary {
            Ok(binary) => {
                info!(binary = %binary.display(), sockets = handover.len(), "SIGUSR2: upgrading: starting the new binary");
                // The hand-over blocks on the new process; the workers keep serving.
                tokio::task::block_in_place(|| {
                    upgrade::start_successor(binary, &upgrade_signal.args, &sockets)
                })
            }
            Err(e) => Err(upgrade::UpgradeError::Binary(std::io::Error::new(
                e.kind(),
                e.to_string(),
            ))),
        };
        upgrade::report_status(&outcome);
        match outcome {
            Ok(pid) => {
                info!(
                    new_pid = pid,
                    "upgrade: the new process serves; no new connections here, draining open ones"
                );
                return Some(forwards);
            }
            Err(e) => error!(error = %e, "upgrade failed; still serving"),
        }
    }
}

/// SIGTERM and SIGINT, registered when the process starts (see [`run`]). Once registered
/// they stay so: a second one during the drain is ignored rather than fatal.
struct ShutdownSignals(Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>);

impl ShutdownSignals {
    fn install() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => ShutdownSignals(Some((term, int))),
            _ => {
                error!("cannot install signal handlers; running until killed");
                ShutdownSignals(None)
            }
        }
    }

    /// The next SIGTERM or SIGINT.
    async fn recv(&mut self) {
        match &mut self.0 {
            Some((term, int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            None => std::future::pending().await,
        }
    }
}

/// Bounded waits used by the runtime.
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
