//! Certificates and private keys: from PEM files or inline PEM (Traefik accepts either in
//! `certFile`/`keyFile`), and the self-signed default certificate.

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::aws_lc_rs;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::TlsError;

/// The subject of the certificate served when nothing else matches (Traefik's is
/// `TRAEFIK DEFAULT CERT`).
pub const DEFAULT_CERT_COMMON_NAME: &str = "SALLYPORT DEFAULT CERT";

/// Where PEM text comes from: Traefik treats a value starting with `-----BEGIN` as the PEM
/// itself, anything else as a path.
enum PemSource<'a> {
    Inline(&'a str),
    File(&'a Path),
}

impl<'a> PemSource<'a> {
    fn new(value: &'a str) -> Self {
        if value.trim_start().starts_with("-----BEGIN") {
            PemSource::Inline(value)
        } else {
            PemSource::File(Path::new(value))
        }
    }

    /// Names the source in errors.
    fn origin(&self, what: &str) -> String {
        match self {
            PemSource::Inline(_) => format!("inline PEM {what}"),
            PemSource::File(path) => format!("{what} {}", path.display()),
        }
    }

    fn read(&self, what: &'static str) -> Result<Cow<'a, [u8]>, TlsError> {
        match self {
            PemSource::Inline(text) => Ok(Cow::Borrowed(text.as_bytes())),
            PemSource::File(path) => {
                std::fs::read(path)
                    .map(Cow::Owned)
                    .map_err(|source| TlsError::Read {
                        what,
                        path: path.to_path_buf(),
                        source,
                    })
            }
        }
    }
}

/// Loads a certificate chain (leaf first) and its private key, each given as a path or as
/// inline PEM, and checks that they belong together.
pub fn load_certified_key(cert: &str, key: &str) -> Result<Arc<CertifiedKey>, TlsError> {
    let cert_source = PemSource::new(cert);
    let cert_origin = cert_source.origin("certificate file");
    let cert_pem = cert_source.read("certificate file")?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            origin: cert_origin.clone(),
            source,
        })?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::NoCertificate {
            origin: cert_origin,
        });
    };
    // Parsed now so that a broken certificate is reported with its file, not later by
    // the store as a certificate without names.
    if let Err(e) = x509_parser::parse_x509_certificate(leaf) {
        return Err(TlsError::BadCertificate {
            origin: cert_origin,
            reason: e.to_string(),
        });
    }

    let key_source = PemSource::new(key);
    let key_origin = key_source.origin("key file");
    let key_pem = key_source.read("key file")?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|source| match source {
        pem::Error::NoItemsFound => TlsError::NoKey {
            origin: key_origin.clone(),
        },
        source => TlsError::Pem {
            origin: key_origin.clone(),
            source,
        },
    })?;
    certified_key(chain, key, cert_origin, key_origin)
}

/// Loads the certificates of one `caFiles` entry (a path or inline PEM); an entry without
/// any certificate is an error, as in Traefik.
pub fn load_ca_certificates(value: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let source = PemSource::new(value);
    let origin = source.origin("CA file");
    let pem = source.read("CA file")?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            origin: origin.clone(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { origin });
    }
    Ok(certs)
}

fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    cert_origin: String,
    key_origin: String,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let signing_key = aws_lc_rs::default_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|source| TlsError::UnsupportedKey {
            origin: key_origin.clone(),
            source,
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified
        .keys_match()
        .map_err(|source| TlsError::KeyMismatch {
            cert: cert_origin,
            key: key_origin,
            source,
        })?;
    Ok(Arc::new(certified))
}

/// Why a loaded certificate would be refused by clients for its dates: `Some("expired on
/// …")` or `Some("not valid before …")`; `None` when it is valid now (or its dates cannot be
/// read, which loading already reported).
pub fn validity_problem(key: &CertifiedKey) -> Option<String> {
    let leaf = key.cert.first()?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf).ok()?;
    let validity = parsed.validity();
    let now = x509_parser::time::ASN1Time::now();
    if validity.not_after < now {
        Some(format!("expired on {}", validity.not_after))
    } else if validity.not_before > now {
        Some(format!("not valid before {}", validity.not_before))
    } else {
        None
    }
}

/// A fresh self-signed ECDSA P-256 certificate with CN [`DEFAULT_CERT_COMMON_NAME`] and no
/// DNS names, served when no configured certificate matches (and SNI is not strict).
pub fn self_signed_default() -> Result<Arc<CertifiedKey>, TlsError> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, DEFAULT_CERT_COMMON_NAME);
    let key_pair = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key_pair)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pair.serialize_der()));
    let origin = "generated default certificate".to_owned();
    certified_key(vec![cert.der().clone()], key, origin.clone(), origin)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn testdata(name: &str) -> String {
        let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "testdata", "certs", name]
            .iter()
            .collect();
        path.to_string_lossy().into_owned()
    }

    fn generated(alg: &'static rcgen::SignatureAlgorithm) -> (String, String) {
        let key_pair = rcgen::KeyPair::generate_for(alg).unwrap();
        let params = rcgen::CertificateParams::new(vec!["gen.example.com".to_owned()]).unwrap();
        let cert = params.self_signed(&key_pair).unwrap();
        (cert.pem(), key_pair.serialize_pem())
    }

    #[test]
    fn loads_inline_pkcs8_ecdsa_and_ed25519_keys() {
        for alg in [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_ED25519,
        ] {
            let (cert, key) = generated(alg);
            let loaded = load_certified_key(&cert, &key).unwrap();
            assert_eq!(loaded.cert.len(), 1);
        }
    }

    #[test]
    fn loads_rsa_pkcs1_and_ec_sec1_keys_from_files() {
        load_certified_key(&testdata("rsa.crt"), &testdata("rsa-pkcs1.key")).unwrap();
        load_certified_key(&testdata("ec-cn-only.crt"), &testdata("ec-sec1.key")).unwrap();
    }

    #[test]
    fn loads_files_written_from_generated_pem() {
        let dir = std::env::temp_dir().join(format!("l4-tls-load-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = generated(&rcgen::PKCS_ED25519);
        let (cert_path, key_path) = (dir.join("a.crt"), dir.join("a.key"));
        std::fs::write(&cert_path, cert).unwrap();
        std::fs::write(&key_path, key).unwrap();
        let loaded = load_certified_key(cert_path.to_str().unwrap(), key_path.to_str().unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
        loaded.unwrap();
    }

    #[test]
    fn missing_file_error_names_the_file() {
        let err = load_certified_key("/nonexistent/a.crt", &testdata("rsa-pkcs1.key"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("certificate file /nonexistent/a.crt"), "{err}");
    }

    #[test]
    fn key_file_without_a_key_is_reported() {
        let err = load_certified_key(&testdata("rsa.crt"), &testdata("rsa.crt")).unwrap_err();
        assert!(
            matches!(&err, TlsError::NoKey { origin } if origin.ends_with("rsa.crt")),
            "{err}"
        );
    }

    #[test]
    fn cert_file_without_a_certificate_is_reported() {
        let err =
            load_certified_key(&testdata("rsa-pkcs1.key"), &testdata("rsa-pkcs1.key")).unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
    }

    #[test]
    fn broken_pem_is_reported() {
        let broken = "-----BEGIN CERTIFICATE-----\nMIIB\n";
        let err = load_certified_key(broken, &testdata("rsa-pkcs1.key")).unwrap_err();
        assert!(
            matches!(&err, TlsError::Pem { origin, .. } if origin.starts_with("inline")),
            "{err}"
        );
    }

    #[test]
    fn ca_certificates_load_from_a_file_or_inline_and_must_exist() {
        assert_eq!(load_ca_certificates(&testdata("rsa.crt")).unwrap().len(), 1);
        let (cert, _) = generated(&rcgen::PKCS_ED25519);
        assert_eq!(load_ca_certificates(&cert).unwrap().len(), 1);
        let err = load_ca_certificates("/nonexistent/ca.pem").unwrap_err();
        assert!(
            err.to_string().contains("CA file /nonexistent/ca.pem"),
            "{err}"
        );
        let err = load_ca_certificates(&testdata("rsa-pkcs1.key")).unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
    }

    #[test]
    fn key_of_another_certificate_is_a_mismatch() {
        let err = load_certified_key(&testdata("rsa.crt"), &testdata("ec-sec1.key")).unwrap_err();
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
    }

    #[test]
    fn default_certificate_is_self_signed_with_our_common_name() {
        let default = self_signed_default().unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&default.cert[0]).unwrap();
        let cn = cert.subject().iter_common_name().next().unwrap();
        assert_eq!(cn.as_str().unwrap(), DEFAULT_CERT_COMMON_NAME);
        assert_eq!(cert.subject(), cert.issuer());
    }
}
