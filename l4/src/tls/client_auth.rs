//! Client certificate authentication on terminating TLS (Traefik's
//! `tls.options.<n>.clientAuth`): the five client authentication types of Go's `crypto/tls`,
//! turned into rustls client certificate verifiers.
//!
//! The two verifying types chain the client's certificate to the option's CAs (and require
//! the client-auth extended key usage, as Go does). The two that only ask for a certificate
//! accept any certificate, but the handshake still has to prove that the client holds its
//! private key: a copied certificate alone does not get through. Reading `caFiles` from
//! disk is the caller's job ([`super::load_ca_certificates`]).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{NoClientAuth, ParsedCertificate, WebPkiClientVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};

use super::TlsError;

/// What a TLS option asks of clients, named as in Traefik (and Go's `tls.ClientAuthType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuthType {
    /// No certificate is asked for.
    #[default]
    NoClientCert,
    /// A certificate is asked for; none, or any, is accepted.
    RequestClientCert,
    /// A certificate is required; any is accepted.
    RequireAnyClientCert,
    /// A certificate is optional; one that is sent must chain to the CAs.
    VerifyClientCertIfGiven,
    /// A certificate that chains to the CAs is required.
    RequireAndVerifyClientCert,
}

impl FromStr for ClientAuthType {
    type Err = TlsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "NoClientCert" => Ok(ClientAuthType::NoClientCert),
            "RequestClientCert" => Ok(ClientAuthType::RequestClientCert),
            "RequireAnyClientCert" => Ok(ClientAuthType::RequireAnyClientCert),
            "VerifyClientCertIfGiven" => Ok(ClientAuthType::VerifyClientCertIfGiven),
            "RequireAndVerifyClientCert" => Ok(ClientAuthType::RequireAndVerifyClientCert),
            other => Err(TlsError::UnknownClientAuthType(other.to_owned())),
        }
    }
}

impl fmt::Display for ClientAuthType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClientAuthType::NoClientCert => "NoClientCert",
            ClientAuthType::RequestClientCert => "RequestClientCert",
            ClientAuthType::RequireAnyClientCert => "RequireAnyClientCert",
            ClientAuthType::VerifyClientCertIfGiven => "VerifyClientCertIfGiven",
            ClientAuthType::RequireAndVerifyClientCert => "RequireAndVerifyClientCert",
        })
    }
}

/// The client authentication of one TLS option. The default asks for no certificate.
#[derive(Debug, Clone, Default)]
pub struct ClientAuth {
    pub kind: ClientAuthType,
    /// The certificates of `caFiles`: trust anchors for the verifying types, and the names
    /// suggested to clients (as Go does) for the others.
    pub cas: Vec<CertificateDer<'static>>,
}

impl ClientAuth {
    /// Traefik's reading of `clientAuth`: the named type wins; with none named, CAs alone
    /// mean [`ClientAuthType::RequireAndVerifyClientCert`], and no CAs mean no certificate.
    pub fn new(kind: Option<ClientAuthType>, cas: Vec<CertificateDer<'static>>) -> ClientAuth {
        let kind = kind.unwrap_or(if cas.is_empty() {
            ClientAuthType::NoClientCert
        } else {
            ClientAuthType::RequireAndVerifyClientCert
        });
        ClientAuth { kind, cas }
    }

    /// The rustls verifier for this setting. A verifying type without CAs is an error, never
    /// a verifier that lets everyone in.
    pub(super) fn verifier(
        &self,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
        let roots = self.roots()?;
        match self.kind {
            ClientAuthType::NoClientCert => Ok(Arc::new(NoClientAuth)),
            ClientAuthType::RequestClientCert | ClientAuthType::RequireAnyClientCert => {
                Ok(Arc::new(AnyClientCert {
                    mandatory: self.kind == ClientAuthType::RequireAnyClientCert,
                    hints: roots.subjects(),
                    algorithms: provider.signature_verification_algorithms,
                }))
            }
            ClientAuthType::VerifyClientCertIfGiven
            | ClientAuthType::RequireAndVerifyClientCert => {
                if roots.is_empty() {
                    return Err(TlsError::ClientAuthNeedsCa(self.kind));
                }
                let builder =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
                let builder = if self.kind == ClientAuthType::VerifyClientCertIfGiven {
                    builder.allow_unauthenticated()
                } else {
                    builder
                };
                builder.build().map_err(TlsError::ClientVerifier)
            }
        }
    }

    fn roots(&self) -> Result<RootCertStore, TlsError> {
        let mut roots = RootCertStore::empty();
        for ca in &self.cas {
            roots.add(ca.clone()).map_err(TlsError::ClientCa)?;
        }
        Ok(roots)
    }
}

/// `RequestClientCert` and `RequireAnyClientCert`: any well-formed certificate is accepted
/// without chain, date or usage checks, as Go does; the handshake signature is still
/// verified with the certificate's key.
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    hints: Vec<DistinguishedName>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Go refuses a chain it cannot parse, whatever the authentication type; what is
        // passed on to the servers (`passTLSClientCert`) is then always certificates.
        for cert in std::iter::once(end_entity).chain(intermediates) {
            ParsedCertificate::try_from(cert)?;
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use rustls::client::ResolvesClientCert;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::sign::CertifiedKey;
    use rustls::{ClientConfig, ClientConnection, ServerConnection};
    use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

    use super::*;
    use crate::tls::{CertStore, self_signed_default};

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::aws_lc_rs::default_provider())
    }

    /// The client side of these tests is about the client's certificate: it takes any
    /// server certificate, but checks the server's handshake signature.
    #[derive(Debug)]
    struct AnyServer(WebPkiSupportedAlgorithms);

    impl ServerCertVerifier for AnyServer {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.supported_schemes()
        }
    }

    /// Presents a certificate with whatever key it is given, matching or not.
    #[derive(Debug)]
    struct Presents(Arc<CertifiedKey>);

    impl ResolvesClientCert for Presents {
        fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
            Some(self.0.clone())
        }

        fn has_certs(&self) -> bool {
            true
        }
    }

    fn client_key(cert: CertificateDer<'static>, key: &rcgen::KeyPair) -> Arc<CertifiedKey> {
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signer = provider().key_provider.load_private_key(der).unwrap();
        Arc::new(CertifiedKey::new(vec![cert], signer))
    }

    /// Runs a whole handshake in memory; the server's peer certificates when it succeeds.
    fn handshake(
        auth: &ClientAuth,
        presented: Option<Arc<CertifiedKey>>,
    ) -> Result<Vec<CertificateDer<'static>>, rustls::Error> {
        let store = Arc::new(CertStore::new(Vec::new(), self_signed_default().unwrap()));
        let server_cfg = crate::tls::config::default_server_config(store, Vec::new(), auth);
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServer(
                provider().signature_verification_algorithms,
            )));
        let client_cfg = match presented {
            Some(key) => builder.with_client_cert_resolver(Arc::new(Presents(key))),
            None => builder.with_no_client_auth(),
        };
        let name = ServerName::try_from("unit.test").unwrap();
        let mut client = ClientConnection::new(Arc::new(client_cfg), name).unwrap();
        let mut server = ServerConnection::new(server_cfg).unwrap();
        for _ in 0..16 {
            transfer(&mut client, &mut server)?;
            transfer(&mut server, &mut client)?;
            if !client.is_handshaking() && !server.is_handshaking() {
                // TLS 1.3: the server judges the client's certificate after the client is done.
                transfer(&mut client, &mut server)?;
                let peer = server.peer_certificates().unwrap_or_default();
                return Ok(peer.to_vec());
            }
        }
        panic!("handshake did not finish");
    }

    fn transfer(
        from: &mut impl std::ops::DerefMut<Target = rustls::ConnectionCommon<impl Sized>>,
        to: &mut impl std::ops::DerefMut<Target = rustls::ConnectionCommon<impl Sized>>,
    ) -> Result<(), rustls::Error> {
        let mut bytes = Vec::new();
        while from.wants_write() {
            from.write_tls(&mut bytes).unwrap();
        }
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            to.read_tls(&mut rest).unwrap();
            to.process_new_packets()?;
        }
        Ok(())
    }

    fn self_signed_client() -> (CertificateDer<'static>, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["client.test".to_owned()]).unwrap();
        (params.self_signed(&key).unwrap().der().clone(), key)
    }

    #[test]
    fn any_certificate_is_accepted_only_with_its_private_key() {
        let auth = ClientAuth::new(Some(ClientAuthType::RequestClientCert), Vec::new());
        let (cert, key) = self_signed_client();
        let peer = handshake(&auth, Some(client_key(cert.clone(), &key))).unwrap();
        assert_eq!(peer, vec![cert.clone()]);
        let other_key = rcgen::KeyPair::generate().unwrap();
        assert!(handshake(&auth, Some(client_key(cert, &other_key))).is_err());
    }

    #[test]
    fn request_accepts_no_certificate_and_require_any_does_not() {
        let request = ClientAuth::new(Some(ClientAuthType::RequestClientCert), Vec::new());
        assert_eq!(handshake(&request, None).unwrap(), Vec::new());
        let require = ClientAuth::new(Some(ClientAuthType::RequireAnyClientCert), Vec::new());
        assert!(handshake(&require, None).is_err());
        let (cert, key) = self_signed_client();
        assert!(handshake(&require, Some(client_key(cert, &key))).is_ok());
    }

    #[test]
    fn verifying_types_refuse_a_certificate_of_another_ca() {
        let (cert, key) = self_signed_client();
        for kind in [
            ClientAuthType::VerifyClientCertIfGiven,
            ClientAuthType::RequireAndVerifyClientCert,
        ] {
            let auth = ClientAuth::new(Some(kind), vec![ca()]);
            assert!(
                handshake(&auth, Some(client_key(cert.clone(), &key))).is_err(),
                "{kind}"
            );
        }
        let if_given = ClientAuth::new(Some(ClientAuthType::VerifyClientCertIfGiven), vec![ca()]);
        assert!(handshake(&if_given, None).is_ok());
    }

    fn ca() -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "unit CA");
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn traefik_type_names_parse_and_print_back() {
        for name in [
            "NoClientCert",
            "RequestClientCert",
            "RequireAnyClientCert",
            "VerifyClientCertIfGiven",
            "RequireAndVerifyClientCert",
        ] {
            assert_eq!(name.parse::<ClientAuthType>().unwrap().to_string(), name);
        }
        assert!(matches!(
            "RequireClientCert".parse::<ClientAuthType>(),
            Err(TlsError::UnknownClientAuthType(_))
        ));
    }

    #[test]
    fn ca_files_alone_mean_require_and_verify() {
        assert_eq!(
            ClientAuth::new(None, vec![ca()]).kind,
            ClientAuthType::RequireAndVerifyClientCert
        );
        assert_eq!(
            ClientAuth::new(None, Vec::new()).kind,
            ClientAuthType::NoClientCert
        );
        let named = ClientAuth::new(Some(ClientAuthType::RequestClientCert), vec![ca()]);
        assert_eq!(named.kind, ClientAuthType::RequestClientCert);
    }

    #[test]
    fn verifying_types_without_cas_are_refused() {
        for kind in [
            ClientAuthType::VerifyClientCertIfGiven,
            ClientAuthType::RequireAndVerifyClientCert,
        ] {
            let auth = ClientAuth {
                kind,
                cas: Vec::new(),
            };
            assert!(matches!(
                auth.verifier(&provider()),
                Err(TlsError::ClientAuthNeedsCa(k)) if k == kind
            ));
        }
    }

    #[test]
    fn each_type_offers_and_requires_as_go_does() {
        let expected = [
            (ClientAuthType::NoClientCert, false, false),
            (ClientAuthType::RequestClientCert, true, false),
            (ClientAuthType::RequireAnyClientCert, true, true),
            (ClientAuthType::VerifyClientCertIfGiven, true, false),
            (ClientAuthType::RequireAndVerifyClientCert, true, true),
        ];
        for (kind, offers, requires) in expected {
            let verifier = ClientAuth {
                kind,
                cas: vec![ca()],
            }
            .verifier(&provider())
            .unwrap();
            assert_eq!(verifier.offer_client_auth(), offers, "{kind}");
            if offers {
                assert_eq!(verifier.client_auth_mandatory(), requires, "{kind}");
                assert_eq!(verifier.root_hint_subjects().len(), 1, "{kind}");
            }
        }
    }

    #[test]
    fn any_certificate_verifier_refuses_what_is_not_a_certificate() {
        let verifier = ClientAuth {
            kind: ClientAuthType::RequireAnyClientCert,
            cas: Vec::new(),
        }
        .verifier(&provider())
        .unwrap();
        let garbage = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x01]);
        assert!(
            verifier
                .verify_client_cert(&garbage, &[], UnixTime::now())
                .is_err()
        );
        assert!(
            verifier
                .verify_client_cert(&ca(), &[], UnixTime::now())
                .is_ok()
        );
    }
}
