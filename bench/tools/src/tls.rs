//! The TLS settings both ends use. The backend accepts both handshake kinds; the client picks
//! one per run, and every connection of that run costs the endpoints the same.

use std::path::Path;
use std::sync::Arc;

use rustls::client::{Resumption, Tls12Resumption};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::Error;
use crate::pki::Identity;

/// How each connection of a run is established.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Handshake {
    /// A full TLS 1.3 handshake every time: key exchange plus certificate signature and
    /// verification, the work a first visit costs.
    Full,
    /// TLS 1.2 session-ID resumption: after the first connection, an abbreviated handshake
    /// with no public-key operations. The endpoints then spend little CPU per connection,
    /// so a proxy's own per-connection cost is what limits the rate.
    Resumed,
}

/// `ring` explicitly, so the tools never depend on which provider features the workspace
/// happens to unify.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn server_config(identity: Identity) -> Result<ServerConfig, Error> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(identity.chain, identity.key)?;
    // TLS 1.3 clients here never resume, so tickets would be work and bytes for nothing;
    // TLS 1.2 resumption uses the default session-ID cache.
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// A client trusting only the CA certificate(s) in `ca_pem`.
pub fn client_config(ca_pem: &Path, handshake: Handshake) -> Result<ClientConfig, Error> {
    let mut roots = RootCertStore::empty();
    let pem_error = |source| Error::Pem {
        path: ca_pem.to_owned(),
        source,
    };
    for cert in CertificateDer::pem_file_iter(ca_pem).map_err(pem_error)? {
        roots.add(cert.map_err(pem_error)?)?;
    }
    if roots.is_empty() {
        return Err(Error::NoCertificate {
            path: ca_pem.to_owned(),
        });
    }
    let builder = ClientConfig::builder_with_provider(provider());
    let mut config = match handshake {
        Handshake::Full => builder.with_protocol_versions(&[&rustls::version::TLS13]),
        Handshake::Resumed => builder.with_protocol_versions(&[&rustls::version::TLS12]),
    }?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.resumption = match handshake {
        Handshake::Full => Resumption::disabled(),
        Handshake::Resumed => {
            Resumption::in_memory_sessions(64).tls12_resumption(Tls12Resumption::SessionIdOnly)
        }
    };
    Ok(config)
}
