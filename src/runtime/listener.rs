//! TCP entrypoints: binding, the accept loop, connection accounting and draining.
//!
//! Listeners are bound once at start and never rebound by a reload (rebinding drops
//! the half-open connections in the old socket's queue). Each accepted connection
//! takes the snapshot current at that moment and keeps it for its whole life.
//!
//! A failed accept never spins: the loop backs off (5 ms doubling to
//! [`ACCEPT_BACKOFF_MAX`], reset by the next success), logs why at most once per
//! [`ACCEPT_LOG_EVERY`] per entrypoint, and counts the error by reason in
//! `<prefix>_entrypoint_accept_errors_total`. Connections waiting meanwhile stay in the
//! listen queue and are served once resources return.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use l4::tcp::dispatch::{self, Accepted, EntrypointSettings, ProxyProtocolPolicy};
use l4::tcp::handshake::{HANDSHAKE_TIMEOUT, HandshakeGate};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tracing::Instrument;
use tracing::{debug, warn};

use super::ACCEPT_BACKOFF_MAX;
use super::compile::Snapshot;
use crate::config::static_cfg::EntryPoint as EntryPointConfig;

/// The listen backlog: room for bursts of new connections while workers are busy.
const BACKLOG: i32 = 4096;

/// The first pause after a failed accept; it doubles up to [`ACCEPT_BACKOFF_MAX`].
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);

/// At most one log line per entrypoint this often while accepts keep failing.
pub const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(10);

/// A bound TCP entrypoint, not yet accepting.
pub struct Entrypoint {
    name: Arc<str>,
    listener: TcpListener,
    settings: Arc<EntrypointSettings>,
    grace: Duration,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl Entrypoint {
    /// Tells `observer` about every TCP connection this entrypoint routes.
    pub fn with_observer(mut self, observer: Option<l4::observe::Observer>) -> Self {
        Arc::make_mut(&mut self.settings).observer = observer;
        self
    }

    /// Counts failed accepts in `metrics`.
    pub fn with_metrics(mut self, metrics: Option<Arc<crate::metrics::Metrics>>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Binds the entrypoint's address, or takes over `inherited`, the listening socket a
    /// previous process handed over for it (see [`super::upgrade`]).
    pub fn bind(
        name: &str,
        cfg: &EntryPointConfig,
        inherited: Option<std::net::TcpListener>,
    ) -> std::io::Result<Entrypoint> {
        let listener = match inherited {
            Some(l) => {
                l.set_nonblocking(true)?;
                TcpListener::from_std(l)?
            }
            None => bind_tcp(cfg)?,
        };
        let read_timeout = cfg
            .transport
            .responding_timeouts
            .read_timeout
            .to_std()
            .filter(|d| !d.is_zero());
        let proxy_protocol = cfg.proxy_protocol.as_ref().map(|p| ProxyProtocolPolicy {
            trusted: p.trusted_ips.iter().map(|n| n.0).collect(),
            insecure: p.insecure,
        });
        let name: Arc<str> = Arc::from(name);
        Ok(Entrypoint {
            settings: Arc::new(EntrypointSettings {
                name: name.clone(),
                proxy_protocol,
                read_timeout,
                server_first_timeout: cfg
                    .tcp
                    .server_first_timeout
                    .and_then(|t| t.to_std())
                    .filter(|d| !d.is_zero()),
                observer: None,
                handshakes: Arc::new(HandshakeGate::new(handshake_turns(), HANDSHAKE_TIMEOUT)),
            }),
            name,
            listener,
            grace: cfg
                .transport
                .life_cycle
                .grace_time_out
                .to_std()
                .unwrap_or(Duration::ZERO),
            metrics: None,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bound address (the HTTP/3 endpoint binds UDP on the same one).
    pub fn socket_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// A duplicate of the listening socket, to hand to a new process on upgrade.
    pub fn socket_fd(&self) -> std::io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::AsFd;
        self.listener.as_fd().try_clone_to_owned()
    }

    pub fn local_addr(&self) -> String {
        self.listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into())
    }

    /// Starts the accept loop; it stops (and closes the listener) when `stop` turns true.
    pub fn serve(self, store: Arc<ArcSwap<Snapshot>>, mut stop: watch::Receiver<bool>) -> Serving {
        let open = Arc::new(OpenConnections::default());
        let counter = open.clone();
        let Entrypoint {
            name,
            listener,
            settings,
            grace,
            metrics,
        } = self;
        let ep_name = name.clone();
        let task = tokio::spawn(async move {
            let mut failures = AcceptFailures::default();
            loop {
                let accepted = tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    r = listener.accept() => r,
                };
                match accepted {
                    Ok((stream, peer)) => {
                        failures.succeeded();
                        let _ = stream.set_nodelay(true);
                        let local = stream.local_addr().unwrap_or(peer);
                        let routes = store.load().entrypoint(&ep_name);
                        let guard = counter.enter();
                        let settings = settings.clone();
                        // Every log line of the connection carries these fields.
                        let span = tracing::info_span!("connection", entrypoint = %ep_name, client = %peer);
                        tokio::spawn(
                            async move {
                                dispatch::serve(
                                    Accepted {
                                        stream,
                                        peer,
                                        local,
                                    },
                                    routes,
                                    settings,
                                )
                                .await;
                                drop(guard);
                            }
                            .instrument(span),
                        );
                    }
                    Err(e) => {
                        let reason = accept_error_reason(&e);
                        if let Some(m) = &metrics {
                            m.accept_error(&ep_name, reason);
                        }
                        // A per-connection error consumed that connection: go on at once.
                        // Anything else (out of descriptors or memory above all) leaves the
                        // queue as it was, so retrying now would spin.
                        if let Some(pause) = failures.failed(&ep_name, reason, &e) {
                            tokio::select! {
                                _ = stop.wait_for(|s| *s) => break,
                                _ = tokio::time::sleep(pause) => {}
                            }
                        }
                    }
                }
            }
            drop(listener);
        });
        Serving {
            name,
            grace,
            open,
            task,
        }
    }
}

/// TLS handshakes of one entrypoint doing their crypto at once: one per worker thread, so
/// that a flood of handshakes can keep every core busy but never queue on a worker ahead of
/// established connections (see [`l4::tcp::handshake`]).
fn handshake_turns() -> usize {
    tokio::runtime::Handle::try_current().map_or(1, |runtime| runtime.metrics().num_workers())
}

/// The `reason` label of a failed accept: a bounded set of values.
pub(super) fn accept_error_reason(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EMFILE) => "emfile",
        Some(libc::ENFILE) => "enfile",
        Some(libc::ENOBUFS) => "enobufs",
        Some(libc::ENOMEM) => "enomem",
        Some(libc::ECONNABORTED) => "econnaborted",
        Some(libc::EPERM) => "eperm",
        Some(libc::EPROTO) => "eproto",
        _ => "other",
    }
}

/// Errors about the one connection being accepted, which the failed call removed from
/// the queue: nothing is gained by waiting before the next accept.
fn is_per_connection(reason: &str) -> bool {
    matches!(reason, "econnaborted" | "eperm" | "eproto")
}

/// The state of an accept loop's failures: the pause before the next try and the
/// rate limit of its log lines.
pub(super) struct AcceptFailures {
    backoff: Duration,
    last_log: Option<Instant>,
    unlogged: u64,
}

impl Default for AcceptFailures {
    fn default() -> Self {
        AcceptFailures {
            backoff: ACCEPT_BACKOFF_MIN,
            last_log: None,
            unlogged: 0,
        }
    }
}

impl AcceptFailures {
    pub(super) fn succeeded(&mut self) {
        self.backoff = ACCEPT_BACKOFF_MIN;
    }

    /// Logs the failure unless one was logged within [`ACCEPT_LOG_EVERY`], and returns
    /// how long to wait before accepting again (none after a per-connection error).
    pub(super) fn failed(
        &mut self,
        entrypoint: &str,
        reason: &str,
        e: &std::io::Error,
    ) -> Option<Duration> {
        let per_connection = is_per_connection(reason);
        let pause = (!per_connection).then_some(self.backoff);
        let now = Instant::now();
        if self
            .last_log
            .is_some_and(|at| now.duration_since(at) < ACCEPT_LOG_EVERY)
        {
            self.unlogged += 1;
        } else {
            let also = std::mem::take(&mut self.unlogged);
            self.last_log = Some(now);
            if per_connection {
                debug!(entrypoint = %entrypoint, reason, error = %e, failures_not_logged = also, "accept failed");
            } else {
                warn!(entrypoint = %entrypoint, reason, error = %e, retry_in = ?self.backoff, failures_not_logged = also,
                    "cannot accept new connections (out of file descriptors or memory?); backing off, waiting connections stay queued");
            }
        }
        if pause.is_some() {
            self.backoff = (self.backoff * 2).min(ACCEPT_BACKOFF_MAX);
        }
        pause
    }
}

/// Binds like Go's listener: SO_REUSEADDR always, SO_REUSEPORT on request, and a
/// dual-stack socket for a host-less address (`:443`).
fn bind_tcp(cfg: &EntryPointConfig) -> std::io::Result<TcpListener> {
    let mut last_err = std::io::Error::other("no address to bind");
    for addr in bind_candidates(cfg)? {
        match bind_one(addr, cfg.reuse_port) {
            Ok(l) => return Ok(l),
            Err(e) => last_err = e,
        }
    }
    Err(last_err)
}

/// The addresses an entrypoint may bind, in order: its IP, or for a host-less address
/// (`:443`) the IPv6 wildcard (dual-stack) then the IPv4 one, or its host name's addresses.
pub(super) fn bind_candidates(cfg: &EntryPointConfig) -> std::io::Result<Vec<SocketAddr>> {
    let port = cfg.address.port;
    Ok(match cfg.address.ip() {
        Some(ip) => vec![SocketAddr::new(ip, port)],
        None if cfg.address.host.is_empty() => vec![
            SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)),
            SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, port)),
        ],
        None => {
            use std::net::ToSocketAddrs;
            (cfg.address.host.as_str(), port)
                .to_socket_addrs()?
                .collect()
        }
    })
}

fn bind_one(addr: SocketAddr, reuse_port: bool) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        socket.set_only_v6(false)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&SockAddr::from(addr))?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// An entrypoint that is accepting.
pub struct Serving {
    pub name: Arc<str>,
    pub grace: Duration,
    open: Arc<OpenConnections>,
    task: tokio::task::JoinHandle<()>,
}

impl Serving {
    /// Waits for the accept loop to close its listener, then for open connections to
    /// end, up to `graceTimeOut`. True if everything ended in time.
    pub async fn drain(self) -> bool {
        let _ = self.task.await;
        tokio::time::timeout(self.grace, self.open.wait_idle())
            .await
            .is_ok()
    }
}

/// Counts open connections; an RAII guard per connection.
#[derive(Default)]
struct OpenConnections {
    count: AtomicUsize,
    idle: Notify,
}

impl OpenConnections {
    fn enter(self: &Arc<Self>) -> ConnectionGuard {
        self.count.fetch_add(1, Ordering::SeqCst);
        ConnectionGuard(self.clone())
    }

    async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

struct ConnectionGuard(Arc<OpenConnections>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}
