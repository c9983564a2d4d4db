//! Answers to ACME challenges while an order is in progress: HTTP-01 tokens served at
//! `/.well-known/acme-challenge/<token>` on the challenge entrypoint ahead of every user
//! router, and TLS-ALPN-01 certificates (RFC 8737) given to handshakes that offer ALPN
//! `acme-tls/1`. Entries exist only while their order runs (orders of one resolver run one at
//! a time), so the tables stay small.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use http::{Request, Response, StatusCode};
use l7::handler::{Body, BoxFuture, Handler, empty_body, full_body};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Where HTTP-01 answers live (RFC 8555 §8.3).
pub const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";

/// The ALPN protocol of TLS-ALPN-01.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The answers of the challenges in progress.
#[derive(Default)]
pub struct Challenges {
    /// HTTP-01: token → key authorization.
    http: RwLock<HashMap<String, String>>,
    /// TLS-ALPN-01: lower-case domain → the challenge certificate.
    tls: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl Challenges {
    pub fn http_answer(&self, token: &str) -> Option<String> {
        read(&self.http).get(token).cloned()
    }

    pub fn tls_certificate(&self, domain: &str) -> Option<Arc<CertifiedKey>> {
        read(&self.tls)
            .get(&domain.trim_end_matches('.').to_ascii_lowercase())
            .cloned()
    }

    pub(super) fn set_http(&self, token: &str, key_authorization: &str) {
        write(&self.http).insert(token.to_owned(), key_authorization.to_owned());
    }

    pub(super) fn remove_http(&self, token: &str) {
        write(&self.http).remove(token);
    }

    pub(super) fn set_tls(&self, domain: &str, cert: Arc<CertifiedKey>) {
        write(&self.tls).insert(domain.to_ascii_lowercase(), cert);
    }

    pub(super) fn remove_tls(&self, domain: &str) {
        write(&self.tls).remove(&domain.to_ascii_lowercase());
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

/// The `acme-http@internal` router's handler: the key authorization of a known token as
/// `text/plain`, 404 for anything else. Tokens this instance did not post are looked up in
/// the resolvers' shared storages: in a fleet, the CA may ask any instance.
pub struct Http01Handler {
    pub(super) challenges: Arc<Challenges>,
    pub(super) shared: Vec<Arc<super::shared::SharedStore>>,
}

impl Http01Handler {
    /// The answer posted by another instance of the fleet, if any.
    async fn shared_answer(&self, token: &str) -> Option<String> {
        if !super::shared::is_token(token) {
            return None;
        }
        for store in &self.shared {
            match store.get(&format!("challenges/{token}")).await {
                Ok(Some(value)) => return String::from_utf8(value).ok(),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "ACME HTTP-01 answer not looked up in the shared storage")
                }
            }
        }
        None
    }
}

impl Handler for Http01Handler {
    fn call(&self, request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
        let token = request
            .uri()
            .path()
            .strip_prefix(HTTP01_PREFIX)
            .map(str::to_owned);
        Box::pin(async move {
            let answer = match token {
                None => None,
                Some(token) => match self.challenges.http_answer(&token) {
                    Some(answer) => Some(answer),
                    None => self.shared_answer(&token).await,
                },
            };
            let mut response = match answer {
                Some(key_authorization) => {
                    tracing::info!("answered an ACME HTTP-01 challenge");
                    Response::new(full_body(key_authorization))
                }
                None => {
                    let mut r = Response::new(empty_body());
                    *r.status_mut() = StatusCode::NOT_FOUND;
                    r
                }
            };
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain"),
            );
            response
        })
    }
}

/// Gives a TLS-ALPN-01 handshake the challenge certificate of its server name; none (the
/// handshake fails) when no challenge for that name is in progress.
#[derive(Debug)]
struct TlsAlpn01Resolver(Arc<Challenges>);

impl std::fmt::Debug for Challenges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Challenges")
            .field("http", &read(&self.http).len())
            .field("tls", &read(&self.tls).len())
            .finish()
    }
}

impl ResolvesServerCert for TlsAlpn01Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let cert = self.0.tls_certificate(hello.server_name()?);
        if cert.is_some() {
            tracing::info!(
                domain = hello.server_name().unwrap_or(""),
                "answering an ACME TLS-ALPN-01 challenge"
            );
        }
        cert
    }
}

/// The acceptor for handshakes offering `acme-tls/1`: ALPN `acme-tls/1` only, the challenge
/// certificates of `challenges`.
pub fn tls_alpn_acceptor(
    challenges: Arc<Challenges>,
) -> Result<tokio_rustls::TlsAcceptor, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(TlsAlpn01Resolver(challenges)));
    config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The self-signed certificate of a TLS-ALPN-01 answer for `domain`: its only name, and the
/// critical `acmeIdentifier` extension carrying the SHA-256 of the key authorization.
pub fn tls_alpn_certificate(
    domain: &str,
    key_authorization_digest: &[u8],
) -> Result<Arc<CertifiedKey>, String> {
    let mut params =
        rcgen::CertificateParams::new(vec![domain.to_owned()]).map_err(|e| e.to_string())?;
    params
        .custom_extensions
        .push(rcgen::CustomExtension::new_acme_identifier(
            key_authorization_digest,
        ));
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    // Built directly: rustls' own key check parses the certificate with webpki, which
    // refuses the critical acmeIdentifier extension that the validator requires.
    let signing_key = rustls::crypto::aws_lc_rs::default_provider()
        .key_provider
        .load_private_key(rustls::pki_types::PrivateKeyDer::Pkcs8(
            key.serialize_der().into(),
        ))
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signing_key,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn get(handler: &Http01Handler, path: &str) -> (StatusCode, String) {
        let request = Request::get(path).body(empty_body()).unwrap();
        let response = handler.call(request).await;
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn known_tokens_get_their_key_authorization_and_others_404() {
        let challenges = Arc::new(Challenges::default());
        challenges.set_http("tok-1", "tok-1.thumb");
        let handler = Http01Handler {
            challenges: challenges.clone(),
            shared: Vec::new(),
        };
        assert_eq!(
            get(&handler, "/.well-known/acme-challenge/tok-1").await,
            (StatusCode::OK, "tok-1.thumb".to_owned())
        );
        assert_eq!(
            get(&handler, "/.well-known/acme-challenge/tok-2").await.0,
            StatusCode::NOT_FOUND
        );
        challenges.remove_http("tok-1");
        assert_eq!(
            get(&handler, "/.well-known/acme-challenge/tok-1").await.0,
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn the_challenge_certificate_names_the_domain_and_carries_the_critical_identifier() {
        let digest = [7u8; 32];
        let cert = tls_alpn_certificate("a.example", &digest).unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(&cert.cert[0]).unwrap();
        let names: Vec<String> = parsed
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(names, ["DNSName(a.example)"]);
        // id-pe-acmeIdentifier, 1.3.6.1.5.5.7.1.31, critical, an OCTET STRING of the digest.
        let ext = parsed
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("acmeIdentifier");
        assert!(ext.critical);
        assert_eq!(&ext.value[2..], &digest);
        let challenges = Challenges::default();
        challenges.set_tls("A.example", cert);
        assert!(challenges.tls_certificate("a.example.").is_some());
        assert!(challenges.tls_certificate("b.example").is_none());
    }
}
