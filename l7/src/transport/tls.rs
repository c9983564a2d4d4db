//! The rustls client configuration of one transport: which server certificates are trusted,
//! which client certificate is offered, which TLS versions and which ALPN protocols.
//!
//! Built once per transport; connecting is [`super::connector`]'s job.

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientConfig, ResolvesClientCert};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme, SupportedProtocolVersion};

use super::settings::{TransportError, TransportSettings};

const ALPN_H2: &[u8] = b"h2";
const ALPN_HTTP11: &[u8] = b"http/1.1";

/// The two client configurations a transport needs: one offering HTTP/2 by ALPN (unless
/// `disableHTTP2`), one that only offers HTTP/1.1 for protocol upgrades.
pub(super) struct ClientConfigs {
    pub(super) default: Arc<ClientConfig>,
    pub(super) http1: Arc<ClientConfig>,
}

pub(super) fn client_configs(
    settings: &TransportSettings,
) -> Result<ClientConfigs, TransportError> {
    let base = base_config(settings)?;
    let mut http1 = base.clone();
    http1.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    let mut default = base;
    default.alpn_protocols = if settings.disable_http2 {
        vec![ALPN_HTTP11.to_vec()]
    } else {
        vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()]
    };
    Ok(ClientConfigs {
        default: Arc::new(default),
        http1: Arc::new(http1),
    })
}

fn base_config(settings: &TransportSettings) -> Result<ClientConfig, TransportError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let versions = protocol_versions(settings)?;
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions)?;

    let builder = if settings.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert {
                provider: Arc::clone(&provider),
            }))
    } else if settings.root_cas.is_empty() {
        builder.with_root_certificates(system_roots())
    } else {
        let mut roots = RootCertStore::empty();
        for (index, ca) in settings.root_cas.iter().enumerate() {
            roots
                .add(ca.clone())
                .map_err(|source| TransportError::RootCa { index, source })?;
        }
        builder.with_root_certificates(roots)
    };

    if settings.client_certificates.is_empty() {
        return Ok(builder.with_no_client_auth());
    }
    let mut keys = Vec::with_capacity(settings.client_certificates.len());
    for (index, (chain, key)) in settings.client_certificates.iter().enumerate() {
        if chain.is_empty() {
            return Err(TransportError::EmptyClientCertificate { index });
        }
        let key = CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider)
            .map_err(|source| TransportError::ClientCertificate { index, source })?;
        keys.push(Arc::new(key));
    }
    Ok(builder.with_client_cert_resolver(Arc::new(ClientCertificates(keys))))
}

/// The rustls versions within `[min_version, max_version]`.
fn protocol_versions(
    settings: &TransportSettings,
) -> Result<Vec<&'static SupportedProtocolVersion>, TransportError> {
    let min = settings.min_version.map(u16::from);
    let max = settings.max_version.map(u16::from);
    let versions: Vec<_> = rustls::ALL_VERSIONS
        .iter()
        .copied()
        .filter(|v| {
            let v = u16::from(v.version);
            min.is_none_or(|min| v >= min) && max.is_none_or(|max| v <= max)
        })
        .collect();
    if versions.is_empty() {
        return Err(TransportError::NoTlsVersion {
            min: settings.min_version,
            max: settings.max_version,
        });
    }
    Ok(versions)
}

/// The system's trusted roots, read once per process: every transport without `rootCAs`
/// shares them.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    Arc::clone(ROOTS.get_or_init(|| {
        let loaded = rustls_native_certs::load_native_certs();
        for error in &loaded.errors {
            tracing::warn!(%error, "cannot read some of the system's root certificates");
        }
        let mut roots = RootCertStore::empty();
        let (_, ignored) = roots.add_parsable_certificates(loaded.certs);
        if ignored > 0 {
            tracing::warn!(ignored, "some system root certificates cannot be parsed");
        }
        if roots.is_empty() {
            tracing::warn!(
                "no system root certificate found: HTTPS servers can only be verified with rootCAs"
            );
        }
        Arc::new(roots)
    }))
}

/// `insecureSkipVerify`: any certificate for any name is accepted. The handshake signature
/// is still checked, so the peer must hold the key of the certificate it sent.
#[derive(Debug)]
struct AcceptAnyServerCert {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyServerCert {
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
        verify_tls12_signature(
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
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// `certificates`: the first one whose key can sign with a scheme the server accepts is sent.
#[derive(Debug)]
struct ClientCertificates(Vec<Arc<CertifiedKey>>);

impl ResolvesClientCert for ClientCertificates {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.0
            .iter()
            .find(|key| key.key.choose_scheme(sigschemes).is_some())
            .cloned()
    }

    fn has_certs(&self) -> bool {
        !self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::ProtocolVersion;
    use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

    fn versions(min: Option<ProtocolVersion>, max: Option<ProtocolVersion>) -> Vec<u16> {
        let settings = TransportSettings {
            min_version: min,
            max_version: max,
            ..TransportSettings::default()
        };
        protocol_versions(&settings)
            .map(|v| v.iter().map(|v| u16::from(v.version)).collect())
            .unwrap_or_default()
    }

    #[test]
    fn versions_are_bounded_by_min_and_max() {
        let (tls12, tls13) = (
            u16::from(ProtocolVersion::TLSv1_2),
            u16::from(ProtocolVersion::TLSv1_3),
        );
        assert_eq!(versions(None, None), [tls13, tls12]);
        assert_eq!(
            versions(Some(ProtocolVersion::TLSv1_0), None),
            [tls13, tls12]
        );
        assert_eq!(versions(Some(ProtocolVersion::TLSv1_3), None), [tls13]);
        assert_eq!(versions(None, Some(ProtocolVersion::TLSv1_2)), [tls12]);
    }

    #[test]
    fn no_version_in_range_is_an_error() {
        let settings = TransportSettings {
            max_version: Some(ProtocolVersion::TLSv1_1),
            ..TransportSettings::default()
        };
        assert!(matches!(
            client_configs(&settings),
            Err(TransportError::NoTlsVersion { .. })
        ));
    }

    #[test]
    fn alpn_offers_h2_unless_disabled() {
        let configs = client_configs(&TransportSettings {
            insecure_skip_verify: true,
            ..TransportSettings::default()
        })
        .unwrap();
        assert_eq!(
            configs.default.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert_eq!(configs.http1.alpn_protocols, [b"http/1.1".to_vec()]);

        let configs = client_configs(&TransportSettings {
            insecure_skip_verify: true,
            disable_http2: true,
            ..TransportSettings::default()
        })
        .unwrap();
        assert_eq!(configs.default.alpn_protocols, [b"http/1.1".to_vec()]);
    }

    #[test]
    fn a_key_that_does_not_match_its_certificate_is_refused() {
        let cert = rcgen::generate_simple_self_signed(vec!["a.example".to_owned()]).unwrap();
        let other = rcgen::KeyPair::generate().unwrap();
        let settings = TransportSettings {
            client_certificates: vec![(
                vec![cert.cert.der().clone()],
                PrivateKeyDer::from(PrivatePkcs8KeyDer::from(other.serialize_der())),
            )],
            ..TransportSettings::default()
        };
        let err = client_configs(&settings).err().unwrap();
        assert!(
            matches!(err, TransportError::ClientCertificate { index: 0, .. }),
            "{err}"
        );
    }

    #[test]
    fn garbage_keys_and_empty_chains_are_refused() {
        let cert = rcgen::generate_simple_self_signed(vec!["a.example".to_owned()]).unwrap();
        let garbage = PrivateKeyDer::from(PrivatePkcs8KeyDer::from(vec![1, 2, 3]));
        let settings = TransportSettings {
            client_certificates: vec![(vec![cert.cert.der().clone()], garbage.clone_key())],
            ..TransportSettings::default()
        };
        assert!(matches!(
            client_configs(&settings),
            Err(TransportError::ClientCertificate { index: 0, .. })
        ));
        let settings = TransportSettings {
            client_certificates: vec![(Vec::new(), garbage)],
            ..TransportSettings::default()
        };
        assert!(matches!(
            client_configs(&settings),
            Err(TransportError::EmptyClientCertificate { index: 0 })
        ));
    }
}
