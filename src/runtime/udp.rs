//! UDP entrypoints: one socket each, bound like Go binds (`SO_REUSEADDR`, `SO_REUSEPORT` on
//! request, dual-stack for a host-less address) with buffers sized for bursts, relaying
//! through [`l4::udp::serve`] with the routes of the snapshot current when each session
//! starts. The UDP side of a TCP entrypoint with `http3` is one too, named like the TCP
//! entrypoint, with the HTTP/3 endpoint as its local QUIC endpoint.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use l4::udp::{LocalQuic, UdpSettings, UdpStats};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tracing::{debug, warn};

use super::compile::Snapshot;
use super::listener::bind_candidates;
use crate::config::static_cfg::EntryPoint as EntryPointConfig;

/// Socket buffers asked for: room for bursts of datagrams (the kernel's default of about
/// 208 KiB holds fewer than 200 full-size packets). The kernel caps the value at
/// `net.core.rmem_max` / `wmem_max`; docs/udp.md says how to raise those.
const SOCKET_BUFFER_BYTES: usize = 4 << 20;

/// A bound UDP entrypoint, not yet relaying.
pub struct UdpEntrypoint {
    socket: Arc<UdpSocket>,
    settings: UdpSettings,
    local: Option<Arc<dyn LocalQuic>>,
}

impl UdpEntrypoint {
    /// Binds the entrypoint's address (a UDP entrypoint's).
    pub fn bind(name: &str, cfg: &EntryPointConfig) -> std::io::Result<UdpEntrypoint> {
        let mut last_err = std::io::Error::other("no address to bind");
        let mut bound = None;
        for addr in bind_candidates(cfg)? {
            match bind_one(addr, cfg.reuse_port) {
                Ok(socket) => {
                    bound = Some(socket);
                    break;
                }
                Err(e) => last_err = e,
            }
        }
        let socket = bound.ok_or(last_err)?;
        Ok(Self::on_socket(name, cfg, Arc::new(socket)))
    }

    /// The relay of entrypoint `name` on a socket bound already.
    pub fn on_socket(name: &str, cfg: &EntryPointConfig, socket: Arc<UdpSocket>) -> UdpEntrypoint {
        UdpEntrypoint {
            socket,
            local: None,
            settings: UdpSettings {
                name: Arc::from(name),
                idle_timeout: cfg
                    .udp
                    .timeout
                    .to_std()
                    .filter(|t| !t.is_zero())
                    .unwrap_or(Duration::from_secs(3)),
                max_sessions: usize::try_from(cfg.udp.max_sessions).unwrap_or(1).max(1),
                grace: cfg
                    .transport
                    .life_cycle
                    .grace_time_out
                    .to_std()
                    .unwrap_or(Duration::ZERO),
                observer: None,
                handed_over: None,
            },
        }
    }

    /// The socket, for an HTTP/3 endpoint to share.
    pub fn socket(&self) -> Arc<UdpSocket> {
        self.socket.clone()
    }

    /// Hands QUIC that is not passed through to `local` (HTTP/3 on the same socket).
    pub fn with_local(mut self, local: Arc<dyn LocalQuic>) -> UdpEntrypoint {
        self.local = Some(local);
        self
    }

    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// Stops reading the socket at stop if `handed_over` is set by then (a binary upgrade:
    /// the new process reads it).
    pub fn with_handed_over(mut self, handed_over: Arc<std::sync::atomic::AtomicBool>) -> Self {
        self.settings.handed_over = Some(handed_over);
        self
    }

    /// Tells `observer` about every UDP session this entrypoint relays.
    pub fn with_observer(mut self, observer: Option<l4::observe::Observer>) -> Self {
        self.settings.observer = observer;
        self
    }

    pub fn local_addr(&self) -> String {
        self.socket
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into())
    }

    /// Starts relaying; on `stop`, open sessions go on (new ones are refused) until they
    /// end or `graceTimeOut` passes.
    pub fn serve(self, store: Arc<ArcSwap<Snapshot>>, stop: watch::Receiver<bool>) -> UdpServing {
        let stats = Arc::new(UdpStats::default());
        let name = self.settings.name.clone();
        let grace = self.settings.grace;
        let routes_of = name.clone();
        let task = tokio::spawn(l4::udp::serve(
            self.socket,
            self.settings,
            move || store.load().udp_entrypoint(&routes_of),
            stats.clone(),
            stop,
            self.local,
        ));
        UdpServing {
            name,
            grace,
            stats,
            task,
        }
    }
}

pub(super) fn bind_one(addr: SocketAddr, reuse_port: bool) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        socket.set_only_v6(false)?;
    }
    // Best effort: a refusal leaves the kernel's default, which still works.
    if let Err(e) = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES) {
        warn!(address = %addr, error = %e, "cannot enlarge the UDP receive buffer");
    }
    if let Err(e) = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES) {
        warn!(address = %addr, error = %e, "cannot enlarge the UDP send buffer");
    }
    debug!(
        address = %addr,
        receive_buffer = socket.recv_buffer_size().unwrap_or(0),
        send_buffer = socket.send_buffer_size().unwrap_or(0),
        "UDP socket buffers"
    );
    socket.set_nonblocking(true)?;
    socket.bind(&SockAddr::from(addr))?;
    UdpSocket::from_std(socket.into())
}

/// A UDP entrypoint that is relaying.
pub struct UdpServing {
    pub name: Arc<str>,
    pub grace: Duration,
    pub stats: Arc<UdpStats>,
    task: tokio::task::JoinHandle<usize>,
}

impl UdpServing {
    /// Waits for the relay to end (it ends by itself at most `graceTimeOut` after stop);
    /// true if no session had to be cut.
    pub async fn drain(self) -> bool {
        matches!(self.task.await, Ok(0))
    }
}
