//! HTTP/3 endpoints: the UDP side of a TCP entrypoint with `http3`. A quinn endpoint on a
//! socket bound to the TCP listener's address, serving with the TLS configuration of the
//! current snapshot (swapped in place at each reload, never rebound), hands each QUIC
//! connection to the entrypoint's HTTP server ([`HttpEntrypoint::serve_h3`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use l7::server::HttpEntrypoint;
use quinn::crypto::rustls::QuicServerConfig;
use quinn::{IdleTimeout, TransportConfig, VarInt};
use tokio::sync::watch;
use tracing::{debug, warn};

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

/// The HTTP/3 side of one entrypoint, bound and not yet serving.
pub struct Http3Endpoint {
    name: Arc<str>,
    endpoint: quinn::Endpoint,
    server: HttpEntrypoint,
    max_streams: u32,
    grace: Duration,
}

impl Http3Endpoint {
    /// Binds UDP on `addr` (the TCP listener's address, so the port is the same) with the
    /// buffers UDP entrypoints use, serving with `tls` when there is one.
    pub fn bind(
        name: &str,
        cfg: &EntryPointConfig,
        addr: SocketAddr,
        server: HttpEntrypoint,
        max_streams: u32,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> std::io::Result<Http3Endpoint> {
        let socket = super::udp::bind_one(addr, cfg.reuse_port)?.into_std()?;
        let config = tls.and_then(|tls| server_config(name, tls, max_streams));
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            config,
            socket,
            Arc::new(quinn::TokioRuntime),
        )?;
        Ok(Http3Endpoint {
            name: Arc::from(name),
            endpoint,
            server,
            max_streams,
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
            server,
            max_streams,
            grace,
        } = self;
        let local = endpoint
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let accepting = endpoint.clone();
        let ep_name = name.clone();
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
                        let server = server.clone();
                        let ep_name = ep_name.clone();
                        tokio::spawn(async move {
                            let peer = incoming.remote_address();
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming).await {
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
            task,
        }
    }
}

/// The quinn configuration around a snapshot's TLS configuration; `None` (handshakes
/// refused) when rustls' configuration cannot carry QUIC, which a TLS 1.3 configuration
/// with the ring provider always can.
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
    task: tokio::task::JoinHandle<()>,
}

impl Http3Serving {
    /// Waits (at most `graceTimeOut`) for the open connections to finish after their
    /// GOAWAY, then closes the endpoint; true if none had to be cut.
    pub async fn drain(self) -> bool {
        let _ = self.task.await;
        let deadline = tokio::time::Instant::now() + self.grace;
        let idle = loop {
            let open = self.endpoint.open_connections();
            if open == 0 {
                break true;
            }
            if tokio::time::Instant::now() >= deadline {
                break false;
            }
            tokio::time::sleep(DRAIN_POLL).await;
        };
        self.endpoint.close(VarInt::from_u32(0), b"shutdown");
        idle
    }
}
