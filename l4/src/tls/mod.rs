//! TLS termination building blocks on rustls (aws-lc-rs provider): loading certificates and keys
//! from files or inline PEM, a certificate store that picks a certificate by SNI, client
//! certificate authentication, and server configurations built from Traefik's TLS options.
//!
//! Which routers use which option, and when to terminate at all, is decided elsewhere; this
//! module only turns certificates and options into rustls objects.

mod certificate;
mod client_auth;
mod config;
mod crypto;
mod store;

use std::path::PathBuf;

pub use certificate::{
    DEFAULT_CERT_COMMON_NAME, load_ca_certificates, load_certified_key, self_signed_default,
    validity_problem,
};
pub use client_auth::{ClientAuth, ClientAuthType};
pub use config::{ServerOptions, TlsVersion, TlsVersions, server_config};
pub use crypto::{Crypto, crypto, ticketer};
pub use store::CertStore;

/// Why a certificate, key or TLS configuration cannot be used. `origin` is a file path or
/// "inline PEM", so that the user knows which `certFile`/`keyFile` to fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source}", path = path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}: invalid PEM: {source}")]
    Pem {
        origin: String,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("{origin}: no CERTIFICATE block found")]
    NoCertificate { origin: String },
    #[error("{origin}: certificate is not valid X.509: {reason}")]
    BadCertificate { origin: String, reason: String },
    #[error(
        "{origin}: no private key block found (expected PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)"
    )]
    NoKey { origin: String },
    #[error(
        "{origin}: unsupported private key (RSA, ECDSA P-256/P-384 and Ed25519 are supported): {source}"
    )]
    UnsupportedKey {
        origin: String,
        #[source]
        source: rustls::Error,
    },
    #[error("private key {key} does not belong to certificate {cert}: {source}")]
    KeyMismatch {
        cert: String,
        key: String,
        #[source]
        source: rustls::Error,
    },
    #[error("cannot generate the default certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{0} is not supported: only TLS 1.2 and TLS 1.3 are available")]
    UnsupportedVersion(TlsVersion),
    #[error("minVersion {min} is above maxVersion {max}")]
    VersionRange { min: TlsVersion, max: TlsVersion },
    #[error(
        "unknown TLS version {0:?} (expected VersionTLS10, VersionTLS11, VersionTLS12 or VersionTLS13)"
    )]
    UnknownVersion(String),
    #[error(
        "unknown client auth type {0:?} (expected NoClientCert, RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert)"
    )]
    UnknownClientAuthType(String),
    #[error("clientAuthType {0} verifies client certificates and needs caFiles")]
    ClientAuthNeedsCa(ClientAuthType),
    #[error("a caFiles certificate cannot be used as a trust anchor: {0}")]
    ClientCa(#[source] rustls::Error),
    #[error("cannot build the client certificate verifier: {0}")]
    ClientVerifier(#[source] rustls::server::VerifierBuilderError),
    #[error("invalid CurveID in curvePreferences: {0}")]
    UnknownCurve(String),
    #[error("invalid CipherSuite: {0}")]
    UnknownCipherSuite(String),
    #[error(
        "none of the curvePreferences is available in this build ({0}); X25519MLKEM768, SecP256r1MLKEM768, X25519, CurveP256 and CurveP384 are"
    )]
    NoCurve(String),
    #[error(
        "maxVersion is TLS 1.2 but none of the cipherSuites is available for it ({0}); the ECDHE suites with AES-GCM or ChaCha20-Poly1305 are"
    )]
    NoTls12Suite(String),
    #[error("cannot build the TLS server configuration: {0}")]
    Config(#[source] rustls::Error),
}
