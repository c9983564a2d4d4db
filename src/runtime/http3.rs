//! HTTP/3 endpoints: the UDP side of a TCP entrypoint with `http3` (on the TCP listener's
//! port), or of a UDP entrypoint with `http3`. A quinn endpoint on the entrypoint's UDP
//! socket, shared with the datagram relay ([`super::quic_socket`]), serves with the TLS
//! configuration of the current snapshot (swapped in place at each reload, never rebound)
//! and hands each QUIC connection to the entrypoint's HTTP server
//! ([`HttpEntrypoint::serve_h3`]).
//!
//! Hostile clients are bounded: past [`RETRY_ABOVE`] handshakes in progress, new clients
//! must prove their address with a Retry round trip first (so spoofed floods cost no
//! handshake state), and one client IP holds at most [`MAX_CONNECTIONS_PER_IP`] connections.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use l7::server::HttpEntrypoint;
use quinn::crypto::rustls::QuicServerConfig;
use quinn::{IdleTimeout, TransportConfig, VarInt};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::quic_forward::{self, Predecessor};
use super::quic_socket::{self, RelaySide};

use crate::config::static_cfg::EntryPoint as EntryPointConfig;

/// Unidirectional streams a client may open: HTTP/3 needs three (control, QPACK encoder and
/// decoder); a few more leave room for extensions without letting a client pile them up.
const MAX_UNI_STREAMS: u32 = 8;

/// A QUIC connection with no traffic for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a draining endpoint looks whether its connections are gone.
const DRAIN_POLL: Duration = Duration::from_millis(50);

/// Handshakes in progress beyond which a client whose address is not validated yet gets a
/// Retry instead of a handshake.
pub const RETRY_ABOVE: usize = 64;

/// Connections one client IP may hold at once (many users can share one NAT address, so
/// this is generous: it stops one host from holding the endpoint's table, nothing more).
pub const MAX_CONNECTIONS_PER_IP: usize = 1024;

/// The HTTP/3 side of one entrypoint, bound and not yet serving.
pub struct Http3Endpoint {
    name: Arc<str>,
    endpoint: quinn::Endpoint,
    relay: Arc<RelaySide>,
    server: HttpEntrypoint,
    max_streams: u32,
    grace: Duration,
}

impl Http3Endpoint {
    /// An endpoint on `socket` (the entrypoint's UDP socket), serving with `tls` when there
    /// is one. The relay reading that socket feeds the endpoint through the returned side.
    pub fn new(
        name: &str,
        cfg: &EntryPointConfig,
        socket: Arc<UdpSocket>,
        server: HttpEntrypoint,
        max_streams: u32,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> std::io::Result<(Http3Endpoint, Arc<RelaySide>)> {
        let (quinn_side, relay_side, endpoint_config) = quic_socket::share(socket);
        let config = tls.and_then(|tls| server_config(name, tls, max_streams));
        let endpoint = quinn::Endpoint::new_with_abstract_socket(
            endpoint_config,
            config,
            quinn_side,
            Arc::new(quinn::TokioRuntime),
        )?;
        relay_side.attach(endpoint.clone());
        let h3 = Http3Endpoint {
            name: Arc::from(name),
            endpoint,
            relay: relay_side.clone(),
            server,
            max_streams,
            grace: cfg
                .transport
                .life_cycle
                .grace_time_out
                .to_std()
                .unwrap_or(Duration::ZERO),
        };
        Ok((h3, relay_side))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// After a binary upgrade: the packets of the previous process's connections go to it
    /// over `socket` (handed over by it) for at most this entrypoint's `graceTimeOut`.
    pub fn forward_to_previous(&self, socket: UnixDatagram) -> std::io::Result<()> {
        self.relay
            .forward_to_previous(Predecessor::new(socket, self.grace)?);
        Ok(())
    }

    /// The port clients are told to use (`Alt-Svc`): `http3.advertisedPort`, or the bound one.
    pub fn advertised_port(&self, cfg: &EntryPointConfig) -> u16 {
        cfg.http3
            .as_ref()
            .and_then(|h3| u16::try_from(h3.advertised_port).ok())
            .filter(|port| *port > 0)
            .or_else(|| self.endpoint.local_addr().ok().map(|a| a.port()))
            .unwrap_or(0)
    }

    pub fn local_addr(&self) -> String {
        self.endpoint
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into())
    }

    /// Accepts connections until `stop`, following `tls` (each new snapshot's TLS
    /// configuration) with `set_server_config`.
    pub fn serve(
        self,
        mut tls: watch::Receiver<Option<Arc<rustls::ServerConfig>>>,
        mut stop: watch::Receiver<bool>,
    ) -> Http3Serving {
        let Http3Endpoint {
            name,
            endpoint,
            relay,
            server,
            max_streams,
            grace,
        } = self;
        let local = endpoint
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let accepting = endpoint.clone();
        let ep_name = name.clone();
        let handshaking = Arc::new(AtomicUsize::new(0));
        let per_ip = Arc::new(PerIp::default());
        let task = tokio::spawn(async move {
            // False once the reloader is gone: the last configuration stays.
            let mut following = true;
            loop {
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    changed = tls.changed(), if following => {
                        if changed.is_err() {
                            following = false;
                            continue;
                        }
                        let config = tls
                            .borrow_and_update()
                            .clone()
                            .and_then(|tls| server_config(&ep_name, tls, max_streams));
                        accepting.set_server_config(config);
                    }
                    incoming = accepting.accept() => {
                        let Some(incoming) = incoming else { break };
                        let peer = incoming.remote_address();
                        if !incoming.remote_address_validated()
                            && handshaking.load(Ordering::Relaxed) >= RETRY_ABOVE
                        {
                            // Stateless: the client comes back with a token proving its address.
                            if incoming.retry().is_err() {
                                debug!(entrypoint = %ep_name, client = %peer, "QUIC Retry not possible; handshake refused");
                            }
                            continue;
                        }
                        let Some(slot) = per_ip.take(peer.ip()) else {
                            debug!(entrypoint = %ep_name, client = %peer, limit = MAX_CONNECTIONS_PER_IP, "QUIC connection refused: too many from this IP");
                            incoming.refuse();
                            continue;
                        };
                        let server = server.clone();
                        let ep_name = ep_name.clone();
                        let started = Handshaking::start(&handshaking);
                        tokio::spawn(async move {
                            let _slot = slot;
                            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming).await;
                            drop(started);
                            match handshake {
                                Ok(Ok(connection)) => server.serve_h3(connection, local).await,
                                Ok(Err(error)) => debug!(entrypoint = %ep_name, client = %peer, error = %error, "QUIC handshake failed"),
                                Err(_) => debug!(entrypoint = %ep_name, client = %peer, "QUIC handshake timed out"),
                            }
                        });
                    }
                }
            }
            // No new connections; the ones open got a GOAWAY from the HTTP server.
            accepting.set_server_config(None);
        });
        Http3Serving {
            name,
            grace,
            endpoint,
            relay,
            task,
        }
    }
}

/// Counts one handshake in progress until dropped.
struct Handshaking(Arc<AtomicUsize>);

impl Handshaking {
    fn start(count: &Arc<AtomicUsize>) -> Handshaking {
        count.fetch_add(1, Ordering::Relaxed);
        Handshaking(count.clone())
    }
}

impl Drop for Handshaking {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Connections per client IP; an IP leaves the map with its last connection, so the map
/// holds at most one entry per open connection.
#[derive(Default)]
struct PerIp(Mutex<HashMap<IpAddr, usize>>);

/// One connection's place in [`PerIp`], given back when dropped.
struct Slot {
    table: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    fn take(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let count = map.entry(ip).or_default();
        if *count >= MAX_CONNECTIONS_PER_IP {
            return None;
        }
        *count += 1;
        Some(Slot {
            table: self.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self.table.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = map.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// The quinn configuration around a snapshot's TLS configuration; `None` (handshakes
/// refused) when rustls' configuration cannot carry QUIC, which a TLS 1.3 configuration
/// with the aws-lc-rs provider always can.
fn server_config(
    name: &str,
    tls: Arc<rustls::ServerConfig>,
    max_streams: u32,
) -> Option<quinn::ServerConfig> {
    let crypto = match QuicServerConfig::try_from(tls) {
        Ok(crypto) => crypto,
        Err(error) => {
            warn!(entrypoint = %name, error = %error, "HTTP/3 cannot use the TLS configuration; QUIC handshakes refused");
            return None;
        }
    };
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(VarInt::from_u32(max_streams))
        .max_concurrent_uni_streams(VarInt::from_u32(MAX_UNI_STREAMS))
        .max_idle_timeout(IdleTimeout::try_from(IDLE_TIMEOUT).ok());
    config.transport_config(Arc::new(transport));
    Some(config)
}

/// An HTTP/3 endpoint that is serving.
pub struct Http3Serving {
    pub name: Arc<str>,
    pub grace: Duration,
    endpoint: quinn::Endpoint,
    /// Kept while draining: after an upgrade, packets forwarded by the new process reach
    /// quinn through it (the UDP relay no longer reads the socket).
    relay: Arc<RelaySide>,
    task: tokio::task::JoinHandle<()>,
}

impl Http3Serving {
    /// Waits (at most `graceTimeOut`) for the open connections to finish after their
    /// GOAWAY, then closes the endpoint; true if none had to be cut. After an upgrade,
    /// `from_successor` carries the packets of these connections that the new process
    /// receives.
    pub async fn drain(mut self, from_successor: Option<UnixDatagram>) -> bool {
        let _ = (&mut self.task).await;
        let deadline = tokio::time::Instant::now() + self.grace;
        let received = AtomicU64::new(0);
        let forwarded = async {
            match from_successor {
                Some(socket) => quic_forward::receive(socket, &*self.relay, &received).await,
                None => std::future::pending().await,
            }
        };
        // Reading forwarded packets only ends with an unreadable socket: then the
        // connections drain as they can, without them.
        let idle = tokio::select! {
            idle = self.wait_for_connections(deadline) => idle,
            () = forwarded => self.wait_for_connections(deadline).await,
        };
        let received = received.load(Ordering::Relaxed);
        if received > 0 {
            info!(entrypoint = %self.name, packets = received, "upgrade: HTTP/3 packets the new process forwarded to this one's connections");
        }
        self.endpoint.close(VarInt::from_u32(0), b"shutdown");
        idle
    }

    /// Whether the connections are gone by `deadline`.
    async fn wait_for_connections(&self, deadline: tokio::time::Instant) -> bool {
        loop {
            if self.endpoint.open_connections() == 0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(DRAIN_POLL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_ip_holds_at_most_its_share_of_connections_and_gets_slots_back() {
        let table = Arc::new(PerIp::default());
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        let mut slots: Vec<Slot> = (0..MAX_CONNECTIONS_PER_IP)
            .map(|_| table.take(ip).expect("a slot under the cap"))
            .collect();
        assert!(table.take(ip).is_none(), "the cap holds");
        assert!(
            table.take(other).is_some(),
            "other clients are not affected"
        );
        slots.pop();
        assert!(
            table.take(ip).is_some(),
            "a closed connection frees its slot"
        );
        slots.clear();
        // The other IP's slot was dropped at once, the last of `ip` just now: no entries stay.
        assert!(table.0.lock().unwrap().is_empty());
    }

    #[test]
    fn the_handshake_count_follows_the_guards() {
        let count = Arc::new(AtomicUsize::new(0));
        let a = Handshaking::start(&count);
        let b = Handshaking::start(&count);
        assert_eq!(count.load(Ordering::Relaxed), 2);
        drop(a);
        drop(b);
        assert_eq!(count.load(Ordering::Relaxed), 0);
    }
}
