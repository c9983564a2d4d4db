//! One certificate order (RFC 8555 §7.4): authorizations answered by HTTP-01 or TLS-ALPN-01,
//! a CSR for a fresh key of the resolver's `keyType`, and the issued chain.

use std::sync::Arc;
use std::time::Duration;

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewOrder, OrderStatus, RetryPolicy,
};

use super::challenge::{Challenges, tls_alpn_certificate};
use super::shared::{Lock, SharedError, SharedStore};

/// How long the CA may take to validate the challenges, and then to issue.
const VALIDATION_TIMEOUT: Duration = Duration::from_secs(120);

/// The challenge types a resolver answers.
#[derive(Clone, Copy, Debug)]
pub struct Answering {
    pub http01: bool,
    pub tls_alpn01: bool,
}

/// `keyType`: the certificate key to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    Ec256,
    Ec384,
    Rsa2048,
    Rsa3072,
    Rsa4096,
}

impl KeyType {
    /// Traefik's names (`RSA8192` is served as RSA-4096: the key generator here stops at
    /// 4096 bits).
    pub fn parse(name: &str) -> Option<(KeyType, bool)> {
        Some(match name {
            "EC256" => (KeyType::Ec256, false),
            "EC384" => (KeyType::Ec384, false),
            "RSA2048" => (KeyType::Rsa2048, false),
            "RSA3072" => (KeyType::Rsa3072, false),
            "" | "RSA4096" => (KeyType::Rsa4096, false),
            "RSA8192" => (KeyType::Rsa4096, true),
            _ => return None,
        })
    }

    fn generate(self) -> Result<rcgen::KeyPair, rcgen::Error> {
        use rcgen::{KeyPair, RsaKeySize};
        match self {
            KeyType::Ec256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            KeyType::Ec384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
            KeyType::Rsa2048 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_2048)
            }
            KeyType::Rsa3072 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_3072)
            }
            KeyType::Rsa4096 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_4096)
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("{0}")]
    Acme(#[from] instant_acme::Error),
    #[error("authorization for {domain} is {status:?}")]
    Authorization {
        domain: String,
        status: AuthorizationStatus,
    },
    #[error(
        "the CA offers no challenge this resolver answers for {domain} (configured: {answering})"
    )]
    NoChallenge { domain: String, answering: String },
    #[error("order is {status:?}{detail}")]
    Order { status: OrderStatus, detail: String },
    #[error("certificate key: {0}")]
    Key(#[from] rcgen::Error),
    #[error("posting the HTTP-01 answer to the shared storage: {0}")]
    Shared(#[from] SharedError),
    #[error("TLS-ALPN-01 certificate for {domain}: {reason}")]
    ChallengeCertificate { domain: String, reason: String },
}

/// The answers an order put up, taken down when it ends however it ends.
struct Posted<'a> {
    challenges: &'a Challenges,
    tokens: Vec<String>,
    domains: Vec<String>,
}

impl Drop for Posted<'_> {
    fn drop(&mut self) {
        for token in &self.tokens {
            self.challenges.remove_http(token);
        }
        for domain in &self.domains {
            self.challenges.remove_tls(domain);
        }
    }
}

/// An issued certificate: the PEM chain (leaf first) and the PEM private key.
pub struct Issued {
    pub chain_pem: String,
    pub key_pem: String,
}

/// Orders a certificate for `names` (the first is the main domain). With `shared` (the
/// fleet's storage and the lock held), HTTP-01 answers are posted there too, so that any
/// instance the CA reaches answers.
pub async fn obtain(
    account: &Account,
    names: &[String],
    challenges: &Arc<Challenges>,
    answering: Answering,
    key_type: KeyType,
    shared: Option<(&SharedStore, &Lock)>,
) -> Result<Issued, OrderError> {
    let identifiers: Vec<Identifier> = names.iter().cloned().map(Identifier::Dns).collect();
    let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
    let mut posted = Posted {
        challenges,
        tokens: Vec::new(),
        domains: Vec::new(),
    };
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization?;
        let domain = authorization.identifier().to_string();
        match authorization.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            status => return Err(OrderError::Authorization { domain, status }),
        }
        // TLS-ALPN-01 first when both are configured: it needs no plaintext port.
        let kind = if answering.tls_alpn01
            && authorization
                .challenges
                .iter()
                .any(|c| c.r#type == ChallengeType::TlsAlpn01)
        {
            ChallengeType::TlsAlpn01
        } else if answering.http01
            && authorization
                .challenges
                .iter()
                .any(|c| c.r#type == ChallengeType::Http01)
        {
            ChallengeType::Http01
        } else {
            return Err(OrderError::NoChallenge {
                domain,
                answering: format!("{answering:?}"),
            });
        };
        let Some(mut challenge) = authorization.challenge(kind.clone()) else {
            return Err(OrderError::NoChallenge {
                domain,
                answering: format!("{answering:?}"),
            });
        };
        let key_authorization = challenge.key_authorization();
        match kind {
            ChallengeType::TlsAlpn01 => {
                let cert = tls_alpn_certificate(&domain, key_authorization.digest().as_ref())
                    .map_err(|reason| OrderError::ChallengeCertificate {
                        domain: domain.clone(),
                        reason,
                    })?;
                challenges.set_tls(&domain, cert);
                posted.domains.push(domain.clone());
            }
            _ => {
                if let Some((store, lock)) = shared {
                    store
                        .put_challenge(lock, &challenge.token, key_authorization.as_str())
                        .await?;
                }
                challenges.set_http(&challenge.token, key_authorization.as_str());
                posted.tokens.push(challenge.token.clone());
            }
        }
        tracing::info!(%domain, challenge = ?kind, "ACME challenge ready");
        challenge.set_ready().await?;
    }
    let retry = RetryPolicy::new().timeout(VALIDATION_TIMEOUT);
    let status = order.poll_ready(&retry).await?;
    if status != OrderStatus::Ready {
        let detail = order
            .state()
            .error
            .as_ref()
            .map(|p| format!(": {p}"))
            .unwrap_or_default();
        return Err(OrderError::Order { status, detail });
    }
    drop(posted);
    let key = key_type.generate()?;
    let params = rcgen::CertificateParams::new(names.to_vec())?;
    let csr = params.serialize_request(&key)?;
    order.finalize_csr(csr.der()).await?;
    let chain_pem = order.poll_certificate(&retry).await?;
    Ok(Issued {
        chain_pem,
        key_pem: key.serialize_pem(),
    })
}
