//! Throwaway certificates for one benchmark run: a CA that the load generator trusts, and a
//! leaf for the backend's names signed by it. Both live only as long as the backend process;
//! the CA certificate is the one thing written to disk, for the client to read.

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::Error;

/// The backend's certificate chain and key, plus the CA certificate clients should trust.
pub struct Identity {
    pub ca_pem: String,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// Makes a fresh CA and a leaf valid for `names`.
pub fn generate(names: &[String]) -> Result<Identity, Error> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "sallyport bench CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

    let leaf_key = KeyPair::generate()?;
    let leaf = CertificateParams::new(names.to_vec())?.signed_by(&leaf_key, &ca)?;
    Ok(Identity {
        ca_pem: ca.pem(),
        // The leaf alone: clients hold the CA, so sending it would only grow every handshake.
        chain: vec![leaf.der().clone()],
        key: PrivatePkcs8KeyDer::from(leaf_key.serialize_der()).into(),
    })
}
