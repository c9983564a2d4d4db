//! Built-in services that routers can target without any backend: `echo@internal`
//! (a TCP service that sends back every byte it receives), so that a fresh machine
//! can try the router with nothing else running; and the state every snapshot shares.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::acme::Acme;
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
}

impl Internal {
    pub async fn start(acme: Acme) -> std::io::Result<Internal> {
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let echo_addr = listener.local_addr()?;
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = stream.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                });
            }
        });
        let default_cert = self_signed_default().map_err(std::io::Error::other)?;
        Ok(Internal {
            echo_addr,
            default_cert,
            acme: Arc::new(acme),
        })
    }
}
