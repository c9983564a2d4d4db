//! The TLS settings both ends use. The backend accepts both handshake kinds; the client picks
//! one per run, and every connection of that run costs the endpoints the same.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, Tls12Resumption};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

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

/// `aws-lc-rs` explicitly, as the router uses, so the tools never depend on which provider
/// features the workspace happens to unify; key exchange X25519 (then P-256) only, which every
/// peer has, so that no peer is measured doing a post-quantum exchange the others skip.
pub fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::aws_lc_rs::{self, kx_group};
    Arc::new(CryptoProvider {
        kx_groups: vec![kx_group::X25519, kx_group::SECP256R1],
        ..aws_lc_rs::default_provider()
    })
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

/// Server names the client keeps sessions for. rustls keeps a few TLS 1.3 tickets per name,
/// each used once; servers send one or more with every connection, so the store refills as
/// fast as it drains.
const RESUMPTION_CACHE: usize = 16;

/// Which server certificates a client accepts.
pub enum Trust<'a> {
    /// Those issued by a CA certificate in this PEM file.
    Ca(&'a Path),
    /// Anything, unchecked, and no handshake signature verified either: the load generator
    /// then spends only the key exchange on a full handshake, so the server (which signs)
    /// stays the side that limits the rate, whatever its key type.
    Nothing,
}

/// A client trusting what `trust` says. With `resume`, a `Full` client resumes TLS 1.3
/// sessions from tickets, kept in one in-memory store shared by every connection made with
/// this configuration.
pub fn client_config(
    trust: Trust<'_>,
    handshake: Handshake,
    resume: bool,
) -> Result<ClientConfig, Error> {
    let builder = ClientConfig::builder_with_provider(provider());
    let builder = match handshake {
        Handshake::Full => builder.with_protocol_versions(&[&rustls::version::TLS13]),
        Handshake::Resumed => builder.with_protocol_versions(&[&rustls::version::TLS12]),
    }?;
    let mut config = match trust {
        Trust::Ca(ca_pem) => builder
            .with_root_certificates(roots(ca_pem)?)
            .with_no_client_auth(),
        Trust::Nothing => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate {
                provider: provider(),
                check_signatures: false,
            }))
            .with_no_client_auth(),
    };
    config.resumption = match handshake {
        Handshake::Full if resume => Resumption::in_memory_sessions(RESUMPTION_CACHE),
        Handshake::Full => Resumption::disabled(),
        Handshake::Resumed => {
            Resumption::in_memory_sessions(64).tls12_resumption(Tls12Resumption::SessionIdOnly)
        }
    };
    Ok(config)
}

fn roots(ca_pem: &Path) -> Result<RootCertStore, Error> {
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
    Ok(roots)
}

/// Accepts whatever certificate the server sends. With `check_signatures`, the handshake
/// signature made with its key is still verified (the client does its usual work); without,
/// nothing is looked at, so the load generator spends no CPU on the server's signature.
#[derive(Debug)]
pub(crate) struct AnyCertificate {
    pub provider: Arc<CryptoProvider>,
    pub check_signatures: bool,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if !self.check_signatures {
            return Ok(HandshakeSignatureValid::assertion());
        }
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if !self.check_signatures {
            return Ok(HandshakeSignatureValid::assertion());
        }
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    /// Offered to the server so it can pick any of its key types.
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
