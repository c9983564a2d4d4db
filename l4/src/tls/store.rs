//! Choosing the certificate for a handshake by SNI.
//!
//! Names come from each certificate's DNS subject alternative names (its common name when it
//! has none). A handshake gets the certificate of the exact name, else of a one-label wildcard
//! (`*.example.com` covers `a.example.com`, not `b.a.example.com`), else the default one,
//! unless SNI is strict, in which case it gets none and the handshake fails.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use x509_parser::extensions::GeneralName;

#[derive(Debug)]
pub struct CertStore {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the wildcard's parent domain: `*.example.com` is stored as `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
    sni_strict: bool,
}

impl CertStore {
    /// Indexes `certs` by their names. When two certificates claim a name, the first one
    /// listed keeps it. A certificate whose names cannot be read is never chosen by name.
    pub fn new(certs: Vec<Arc<CertifiedKey>>, default: Arc<CertifiedKey>) -> Self {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for cert in certs {
            for name in certificate_names(&cert) {
                let name = normalize(&name);
                match name.strip_prefix("*.") {
                    Some(parent) => wildcard.entry(parent.to_owned()),
                    None => exact.entry(name),
                }
                .or_insert_with(|| Arc::clone(&cert));
            }
        }
        CertStore {
            exact,
            wildcard,
            default,
            sni_strict: false,
        }
    }

    /// With strict SNI, a client without SNI or with a name no certificate covers gets no
    /// certificate (Traefik's `sniStrict`).
    pub fn with_sni_strict(mut self, sni_strict: bool) -> Self {
        self.sni_strict = sni_strict;
        self
    }

    /// Whether a configured certificate (not the default one) covers `name`.
    pub fn has_name(&self, name: &str) -> bool {
        self.by_name(&normalize(name)).is_some()
    }

    /// The certificate for a handshake whose SNI is `sni`.
    pub fn select(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let found = sni.and_then(|name| self.by_name(&normalize(name)));
        match found {
            Some(cert) => Some(Arc::clone(cert)),
            None if self.sni_strict => None,
            None => Some(Arc::clone(&self.default)),
        }
    }

    fn by_name(&self, name: &str) -> Option<&Arc<CertifiedKey>> {
        self.exact.get(name).or_else(|| {
            let (_, parent) = name.split_once('.')?;
            self.wildcard.get(parent)
        })
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.select(client_hello.server_name())
    }
}

/// Names are compared the way SNI is: lower case, without a trailing dot.
fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// The DNS names a certificate's leaf is valid for: its DNS SANs, or its CN without SANs.
fn certificate_names(cert: &CertifiedKey) -> Vec<String> {
    let Some(leaf) = cert.cert.first() else {
        return Vec::new();
    };
    let parsed = match x509_parser::parse_x509_certificate(leaf) {
        Ok((_, parsed)) => parsed,
        Err(e) => {
            tracing::warn!(error = %e, "certificate does not parse; it will only be served as a default");
            return Vec::new();
        }
    };
    let sans: Vec<String> = match parsed.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => {
            tracing::warn!(error = %e, "certificate has an unreadable subjectAltName extension");
            Vec::new()
        }
    };
    if !sans.is_empty() {
        return sans;
    }
    parsed
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_owned))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::Mutex;

    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::aws_lc_rs;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    use super::*;
    use crate::tls::{ClientAuth, load_certified_key, self_signed_default};

    fn cert_for(names: &[&str]) -> Arc<CertifiedKey> {
        let key_pair = rcgen::KeyPair::generate().unwrap();
        let names = names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        let cert = rcgen::CertificateParams::new(names)
            .unwrap()
            .self_signed(&key_pair)
            .unwrap();
        load_certified_key(&cert.pem(), &key_pair.serialize_pem()).unwrap()
    }

    fn testdata(name: &str) -> String {
        format!("{}/testdata/certs/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    struct Certs {
        exact: Arc<CertifiedKey>,
        wildcard: Arc<CertifiedKey>,
        default: Arc<CertifiedKey>,
    }

    impl Certs {
        fn new() -> Self {
            Certs {
                exact: cert_for(&["a.example.com", "Upper.Example.COM"]),
                wildcard: cert_for(&["*.wild.example.com"]),
                default: self_signed_default().unwrap(),
            }
        }

        fn store(&self) -> CertStore {
            let certs = vec![Arc::clone(&self.exact), Arc::clone(&self.wildcard)];
            CertStore::new(certs, Arc::clone(&self.default))
        }
    }

    fn same(a: &Option<Arc<CertifiedKey>>, b: &Arc<CertifiedKey>) -> bool {
        a.as_ref().is_some_and(|a| Arc::ptr_eq(a, b))
    }

    #[test]
    fn exact_name_wins_and_is_case_insensitive() {
        let certs = Certs::new();
        let store = certs.store();
        assert!(same(&store.select(Some("a.example.com")), &certs.exact));
        assert!(same(&store.select(Some("A.EXAMPLE.COM.")), &certs.exact));
        assert!(same(&store.select(Some("upper.example.com")), &certs.exact));
    }

    #[test]
    fn wildcard_covers_exactly_one_label() {
        let certs = Certs::new();
        let store = certs.store();
        assert!(same(
            &store.select(Some("x.wild.example.com")),
            &certs.wildcard
        ));
        assert!(same(
            &store.select(Some("y.x.wild.example.com")),
            &certs.default
        ));
        assert!(same(
            &store.select(Some("wild.example.com")),
            &certs.default
        ));
        assert!(store.has_name("x.wild.example.com"));
        assert!(!store.has_name("wild.example.com"));
    }

    #[test]
    fn exact_name_beats_wildcard() {
        let default = self_signed_default().unwrap();
        let wildcard = cert_for(&["*.example.com"]);
        let exact = cert_for(&["a.example.com"]);
        let store = CertStore::new(vec![Arc::clone(&wildcard), Arc::clone(&exact)], default);
        assert!(same(&store.select(Some("a.example.com")), &exact));
        assert!(same(&store.select(Some("b.example.com")), &wildcard));
    }

    #[test]
    fn first_certificate_keeps_a_shared_name() {
        let default = self_signed_default().unwrap();
        let first = cert_for(&["a.example.com"]);
        let second = cert_for(&["a.example.com", "b.example.com"]);
        let store = CertStore::new(vec![Arc::clone(&first), Arc::clone(&second)], default);
        assert!(same(&store.select(Some("a.example.com")), &first));
        assert!(same(&store.select(Some("b.example.com")), &second));
    }

    #[test]
    fn common_name_is_used_without_subject_alt_names() {
        let cn_only = load_certified_key(&testdata("ec-cn-only.crt"), &testdata("ec-sec1.key"));
        let store = CertStore::new(vec![cn_only.unwrap()], self_signed_default().unwrap());
        assert!(store.has_name("cn-only.example.com"));
    }

    #[test]
    fn unknown_or_missing_sni_gets_the_default_unless_strict() {
        let certs = Certs::new();
        let store = certs.store();
        assert!(same(
            &store.select(Some("other.example.com")),
            &certs.default
        ));
        assert!(same(&store.select(None), &certs.default));
        let strict = certs.store().with_sni_strict(true);
        assert!(strict.select(Some("other.example.com")).is_none());
        assert!(strict.select(None).is_none());
        assert!(same(&strict.select(Some("a.example.com")), &certs.exact));
    }

    /// Verifies like a normal client, trusting the given certificates, and remembers which
    /// certificate the server presented.
    #[derive(Debug)]
    struct RecordingVerifier {
        inner: Arc<WebPkiServerVerifier>,
        presented: Mutex<Option<CertificateDer<'static>>>,
    }

    impl ServerCertVerifier for RecordingVerifier {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            server_name: &ServerName<'_>,
            ocsp_response: &[u8],
            now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            *self.presented.lock().unwrap() = Some(end_entity.clone().into_owned());
            self.inner.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            )
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.inner.supported_verify_schemes()
        }
    }

    struct Outcome {
        presented: Option<CertificateDer<'static>>,
        client: std::io::Result<Option<Vec<u8>>>,
    }

    /// Runs one TLS handshake over loopback and, when it succeeds, one echoed message.
    async fn handshake(
        store: CertStore,
        trusted: &[&Arc<CertifiedKey>],
        server_name: ServerName<'static>,
        alpn: Vec<Vec<u8>>,
    ) -> Outcome {
        let provider = Arc::new(aws_lc_rs::default_provider());
        let server = crate::tls::config::default_server_config(
            Arc::new(store),
            alpn.clone(),
            &ClientAuth::default(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server_task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let Ok(mut tls) = TlsAcceptor::from(server).accept(tcp).await else {
                return;
            };
            let mut buf = [0; 4];
            if tls.read_exact(&mut buf).await.is_ok() {
                let _ = tls.write_all(&buf).await;
                let _ = tls.shutdown().await;
            }
        });

        let mut roots = RootCertStore::empty();
        for cert in trusted {
            roots.add(cert.cert[0].clone()).unwrap();
        }
        let verifier = Arc::new(RecordingVerifier {
            inner: WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .unwrap(),
            presented: Mutex::new(None),
        });
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_no_client_auth();
        client.alpn_protocols = alpn;
        let tcp = TcpStream::connect(addr).await.unwrap();
        let result = async {
            let mut tls = TlsConnector::from(Arc::new(client))
                .connect(server_name, tcp)
                .await?;
            tls.write_all(b"ping").await?;
            let mut echo = [0; 4];
            tls.read_exact(&mut echo).await?;
            assert_eq!(&echo, b"ping");
            Ok(tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec))
        }
        .await;
        server_task.await.unwrap();
        let presented = verifier.presented.lock().unwrap().take();
        Outcome {
            presented,
            client: result,
        }
    }

    fn dns(name: &str) -> ServerName<'static> {
        ServerName::try_from(name.to_owned()).unwrap()
    }

    #[tokio::test]
    async fn handshake_serves_the_certificate_named_by_sni() {
        let certs = Certs::new();
        let outcome = handshake(certs.store(), &[&certs.exact], dns("a.example.com"), vec![]).await;
        assert_eq!(outcome.presented.as_ref(), Some(&certs.exact.cert[0]));
        assert_eq!(outcome.client.unwrap(), None);
    }

    #[tokio::test]
    async fn handshake_serves_the_wildcard_certificate() {
        let certs = Certs::new();
        let name = dns("x.wild.example.com");
        let outcome = handshake(certs.store(), &[&certs.wildcard], name, vec![]).await;
        assert_eq!(outcome.presented.as_ref(), Some(&certs.wildcard.cert[0]));
        assert!(outcome.client.is_ok());
    }

    #[tokio::test]
    async fn handshake_negotiates_alpn() {
        let certs = Certs::new();
        let alpn = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let outcome = handshake(certs.store(), &[&certs.exact], dns("a.example.com"), alpn).await;
        assert_eq!(outcome.client.unwrap(), Some(b"h2".to_vec()));
    }

    #[tokio::test]
    async fn unknown_sni_gets_the_default_certificate() {
        let certs = Certs::new();
        let trusted = [&certs.exact, &certs.default];
        let outcome = handshake(certs.store(), &trusted, dns("other.example.com"), vec![]).await;
        assert_eq!(outcome.presented.as_ref(), Some(&certs.default.cert[0]));
        // The default certificate names no host, so a verifying client refuses it.
        assert!(outcome.client.is_err());
    }

    #[tokio::test]
    async fn client_without_sni_gets_the_default_certificate() {
        let certs = Certs::new();
        let no_sni = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
        let outcome = handshake(certs.store(), &[&certs.default], no_sni, vec![]).await;
        assert_eq!(outcome.presented.as_ref(), Some(&certs.default.cert[0]));
    }

    #[tokio::test]
    async fn strict_sni_fails_the_handshake_for_unknown_names() {
        let certs = Certs::new();
        let store = certs.store().with_sni_strict(true);
        let outcome = handshake(store, &[&certs.default], dns("other.example.com"), vec![]).await;
        assert_eq!(outcome.presented, None);
        assert!(outcome.client.is_err());
    }
}
