//! One measured connection: TCP connect, TLS handshake with SNI, read the backend's greeting,
//! close. The time reported runs from just before `connect()` to the first greeting byte.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rustls::HandshakeKind;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;

use crate::{Error, GREETING};

/// Why a connection did not deliver the greeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// TCP connect refused or failed.
    Connect,
    /// The TLS handshake failed or the peer closed during it (a proxy without a route does).
    Handshake,
    /// The connection broke, or ended, before the whole greeting arrived.
    Read,
    /// The bytes after the handshake were not the greeting.
    Greeting,
    /// The whole exchange took longer than the per-connection timeout.
    Timeout,
    /// Rate mode only: the connection was not started because too many were still in flight.
    Overload,
}

impl Failure {
    pub const ALL: [Failure; 6] = [
        Failure::Connect,
        Failure::Handshake,
        Failure::Read,
        Failure::Greeting,
        Failure::Timeout,
        Failure::Overload,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Failure::Connect => "connect",
            Failure::Handshake => "handshake",
            Failure::Read => "read",
            Failure::Greeting => "greeting",
            Failure::Timeout => "timeout",
            Failure::Overload => "overload",
        }
    }
}

/// A connection that delivered the greeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Greeted {
    /// From just before `connect()` to the first greeting byte.
    pub first_byte: Duration,
    /// Whether the TLS handshake resumed an earlier session rather than running in full.
    pub resumed: bool,
}

/// Where and how to connect; cheap to share between tasks.
#[derive(Clone)]
pub struct Target {
    addr: SocketAddr,
    sni: ServerName<'static>,
    connector: TlsConnector,
    timeout: Duration,
}

impl Target {
    pub fn new(
        addr: SocketAddr,
        sni: &str,
        connector: TlsConnector,
        timeout: Duration,
    ) -> Result<Self, Error> {
        let sni =
            ServerName::try_from(sni.to_owned()).map_err(|_| Error::ServerName(sni.into()))?;
        Ok(Self {
            addr,
            sni,
            connector,
            timeout,
        })
    }

    /// Runs one connection and returns its connect-to-first-byte time and handshake kind.
    pub async fn connect_to_greeting(&self) -> Result<Greeted, Failure> {
        let start = Instant::now();
        timeout(self.timeout, self.exchange(start))
            .await
            .unwrap_or(Err(Failure::Timeout))
    }

    async fn exchange(&self, start: Instant) -> Result<Greeted, Failure> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .map_err(|_| Failure::Connect)?;
        tcp.set_nodelay(true).map_err(|_| Failure::Connect)?;
        let mut tls = self
            .connector
            .connect(self.sni.clone(), tcp)
            .await
            .map_err(|_| Failure::Handshake)?;
        let resumed = tls.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed);

        let mut greeting = [0u8; GREETING.len()];
        let first = tls.read(&mut greeting).await.map_err(|_| Failure::Read)?;
        if first == 0 {
            return Err(Failure::Read);
        }
        let first_byte = start.elapsed();
        tls.read_exact(&mut greeting[first..])
            .await
            .map_err(|_| Failure::Read)?;
        if greeting != GREETING {
            return Err(Failure::Greeting);
        }
        // close_notify then FIN: the clean close every proxy should pass through. A failure
        // here is not counted; the greeting, which is what was measured, has arrived.
        tls.shutdown().await.ok();
        Ok(Greeted {
            first_byte,
            resumed,
        })
    }
}
