//! TCP entrypoints: binding, the accept loop, connection accounting and draining.
//!
//! Listeners are bound once at start and never rebound by a reload (rebinding drops
//! the half-open connections in the old socket's queue). Each accepted connection
//! takes the snapshot current at that moment and keeps it for its whole life.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use l4::tcp::dispatch::{self, Accepted, EntrypointSettings, ProxyProtocolPolicy};
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

/// A bound TCP entrypoint, not yet accepting.
pub struct Entrypoint {
    name: Arc<str>,
    listener: TcpListener,
    settings: Arc<EntrypointSettings>,
    grace: Duration,
}

impl Entrypoint {
    /// Tells `observer` about every TCP connection this entrypoint routes.
    pub fn with_observer(mut self, observer: Option<l4::observe::Observer>) -> Self {
        Arc::make_mut(&mut self.settings).observer = observer;
        self
    }

    pub async fn bind(name: &str, cfg: &EntryPointConfig) -> std::io::Result<Entrypoint> {
        let listener = bind_tcp(cfg)?;
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
            }),
            name,
            listener,
            grace: cfg
                .transport
                .life_cycle
                .grace_time_out
                .to_std()
                .unwrap_or(Duration::ZERO),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bound address (the HTTP/3 endpoint binds UDP on the same one).
    pub fn socket_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
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
        } = self;
        let ep_name = name.clone();
        let task = tokio::spawn(async move {
            let mut backoff = Duration::from_millis(5);
            loop {
                let accepted = tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    r = listener.accept() => r,
                };
                match accepted {
                    Ok((stream, peer)) => {
                        backoff = Duration::from_millis(5);
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
                    Err(e) if is_resource_exhaustion(&e) => {
                        // Out of file descriptors or memory: back off instead of spinning;
                        // accepting resumes by itself when resources come back.
                        warn!(entrypoint = %ep_name, error = %e, retry_in = ?backoff, "cannot accept: resources exhausted");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    }
                    Err(e) => debug!(entrypoint = %ep_name, error = %e, "accept failed"),
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

fn is_resource_exhaustion(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
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
