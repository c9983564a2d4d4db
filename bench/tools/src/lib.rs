//! Tools for Sallyport's side-by-side benchmarks.
//!
//! For the TCP passthrough benchmark (`bench/tcp_passthrough.sh`): `tls-backend` terminates
//! TLS and greets every client as soon as the handshake completes; `tls-load` opens TLS
//! connections by SNI (through a proxy, or straight to the backend for the baseline) and times
//! connect-to-greeting. This library holds what both sides agree on (the greeting, the TLS
//! settings, the throwaway certificates) and the result bookkeeping. It knows nothing about any
//! proxy: the proxies only ever see opaque TLS bytes.
//!
//! For the HTTP reverse-proxy benchmark (`bench/http_proxy.sh`): `http-backend`, the origin
//! behind every proxy ([`http_backend`]); the load comes from wrk and h2load.
//!
//! For the UDP relay benchmark (`bench/udp_proxy.sh`): `udp-echo` and `udp-load` ([`udp`]).
//!
//! For the HTTP/3 benchmark (`bench/http3.sh`): `h3-load` ([`h3`]), behind the same
//! `http-backend`.

pub mod backend;
pub mod client;
pub mod h3;
pub mod http_backend;
pub mod pki;
pub mod stats;
pub mod tls;
pub mod udp;

use std::path::PathBuf;

/// What the backend writes right after the handshake; the client checks every byte.
pub const GREETING: &[u8] = b"sallyport-bench greeting\n";

/// Everything that can stop a tool from starting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("generating the benchmark certificates: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("building the TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("{}: not a PEM certificate file: {source}", path.display())]
    Pem {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("{}: no certificate in the file", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{0}")]
    Usage(String),
    #[error("the TLS configuration cannot carry QUIC: {0}")]
    Quic(String),
    #[error("{0:?} is not a valid TLS server name (SNI)")]
    ServerName(String),
}
