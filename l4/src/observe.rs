//! What the layer-4 proxies tell observers (access logs, metrics) about each TCP connection
//! and each UDP session when it ends: who, where it was routed, how many bytes each way, how
//! long, and why it closed. Observers run on the connection's task after the relay is over,
//! so they must not block (an access log hands the record to a bounded queue).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::tcp::proxy::Outcome;

/// Why a connection or session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// Both sides finished.
    Closed,
    ClientError(io::ErrorKind),
    BackendError(io::ErrorKind),
    /// Nothing moved for the idle timeout (UDP: the session timeout).
    IdleTimeout,
    /// One side finished and the other outlived the termination delay.
    TerminationDelay,
    /// No router took it.
    NoRoute,
    /// A TCP middleware (`ipAllowList`, `inFlightConn`) refused it.
    Refused,
    /// The TLS handshake with the client failed or the router's TLS option is broken.
    HandshakeFailed,
    /// No healthy server, or the server could not be reached.
    BackendUnavailable,
    /// The router stopped (shutdown, or the session table was full).
    Shutdown,
    /// A reload removed or changed the route, and its drain time was over.
    Retired,
}

impl From<Outcome> for CloseReason {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Closed => CloseReason::Closed,
            Outcome::ClientError(kind) => CloseReason::ClientError(kind),
            Outcome::BackendError(kind) => CloseReason::BackendError(kind),
            Outcome::IdleTimeout => CloseReason::IdleTimeout,
            Outcome::TerminationDelay => CloseReason::TerminationDelay,
            Outcome::Retired => CloseReason::Retired,
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Closed => f.write_str("closed"),
            CloseReason::ClientError(kind) => write!(f, "client error ({kind})"),
            CloseReason::BackendError(kind) => write!(f, "backend error ({kind})"),
            CloseReason::IdleTimeout => f.write_str("idle timeout"),
            CloseReason::TerminationDelay => f.write_str("termination delay"),
            CloseReason::Retired => f.write_str("route retired by a reload"),
            CloseReason::NoRoute => f.write_str("no route"),
            CloseReason::Refused => f.write_str("refused by middleware"),
            CloseReason::HandshakeFailed => f.write_str("TLS handshake failed"),
            CloseReason::BackendUnavailable => f.write_str("backend unavailable"),
            CloseReason::Shutdown => f.write_str("shutdown"),
        }
    }
}

/// The transport a record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Udp,
}

/// One TCP connection or UDP session, as it ended.
#[derive(Debug, Clone)]
pub struct ConnRecord {
    pub transport: Transport,
    pub entrypoint: Arc<str>,
    /// The client (after a trusted PROXY header).
    pub client: SocketAddr,
    /// The ClientHello's server name (TLS only).
    pub sni: Option<Arc<str>>,
    /// The ALPN protocols the client offered (TLS only), comma-separated.
    pub alpn: Option<String>,
    pub router: Option<Arc<str>>,
    pub service: Option<Arc<str>>,
    /// The server's address, once one was picked.
    pub backend: Option<String>,
    /// Bytes from the client to the backend (UDP: payload bytes).
    pub bytes_in: u64,
    /// Bytes from the backend to the client.
    pub bytes_out: u64,
    /// UDP datagrams from the client to the backend (0 for TCP).
    pub datagrams_in: u64,
    /// UDP datagrams from the backend to the client (0 for TCP).
    pub datagrams_out: u64,
    /// When the connection was accepted (UDP: the session's first datagram).
    pub started: SystemTime,
    pub duration: Duration,
    pub reason: CloseReason,
}

/// Told about every connection and session.
pub trait ConnObserver: Send + Sync + 'static {
    /// A connection reached its backend (for gauges of open connections). Exactly the
    /// records with a `backend` were announced this way.
    fn opened(&self, _transport: Transport, _entrypoint: &str, _router: &str, _service: &str) {}
    /// A connection or session ended; `record.router` is `None` when none took it.
    fn closed(&self, record: &ConnRecord);
    /// A TCP connection was handed to the entrypoint's HTTP server (`open`), or its HTTP
    /// serving ended (`!open`): HTTP traffic has its own records, but counts as an open
    /// connection of the entrypoint.
    fn http_connection(&self, _entrypoint: &str, _open: bool) {}
}

/// Several observers as one.
pub struct Observers(pub Vec<Arc<dyn ConnObserver>>);

impl ConnObserver for Observers {
    fn opened(&self, transport: Transport, entrypoint: &str, router: &str, service: &str) {
        for o in &self.0 {
            o.opened(transport, entrypoint, router, service);
        }
    }

    fn closed(&self, record: &ConnRecord) {
        for o in &self.0 {
            o.closed(record);
        }
    }

    fn http_connection(&self, entrypoint: &str, open: bool) {
        for o in &self.0 {
            o.http_connection(entrypoint, open);
        }
    }
}

/// An observer in settings that are `Debug` and `Clone`.
#[derive(Clone)]
pub struct Observer(pub Arc<dyn ConnObserver>);

impl fmt::Debug for Observer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Observer")
    }
}
