//! rustls server configurations from Traefik TLS options (versions, cipher suites and
//! curves, ALPN, client authentication, session tickets).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use rustls::{ServerConfig, SupportedProtocolVersion, version};

use super::{CertStore, ClientAuth, ClientAuthType, Crypto, TlsError};

static TLS12_ONLY: [&SupportedProtocolVersion; 1] = [&version::TLS12];
static TLS12_AND_13: [&SupportedProtocolVersion; 2] = [&version::TLS13, &version::TLS12];
static TLS13_ONLY: [&SupportedProtocolVersion; 1] = [&version::TLS13];

/// A TLS protocol version as Traefik names it (`VersionTLS12`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls10,
    Tls11,
    Tls12,
    Tls13,
}

impl FromStr for TlsVersion {
    type Err = TlsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "VersionTLS10" => Ok(TlsVersion::Tls10),
            "VersionTLS11" => Ok(TlsVersion::Tls11),
            "VersionTLS12" => Ok(TlsVersion::Tls12),
            "VersionTLS13" => Ok(TlsVersion::Tls13),
            other => Err(TlsError::UnknownVersion(other.to_owned())),
        }
    }
}

impl fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsVersion::Tls10 => "VersionTLS10",
            TlsVersion::Tls11 => "VersionTLS11",
            TlsVersion::Tls12 => "VersionTLS12",
            TlsVersion::Tls13 => "VersionTLS13",
        })
    }
}

/// The versions a TLS option allows. The default is Traefik's `default` option: TLS 1.2
/// and up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsVersions {
    pub min: TlsVersion,
    pub max: TlsVersion,
}

impl Default for TlsVersions {
    fn default() -> Self {
        TlsVersions {
            min: TlsVersion::Tls12,
            max: TlsVersion::Tls13,
        }
    }
}

impl TlsVersions {
    /// The rustls versions to enable. rustls has no TLS 1.0/1.1, so naming either is an error
    /// rather than a silent upgrade of the user's minimum.
    fn protocol_versions(self) -> Result<&'static [&'static SupportedProtocolVersion], TlsError> {
        for v in [self.min, self.max] {
            if v < TlsVersion::Tls12 {
                return Err(TlsError::UnsupportedVersion(v));
            }
        }
        match (self.min, self.max) {
            (TlsVersion::Tls12, TlsVersion::Tls12) => Ok(&TLS12_ONLY),
            (TlsVersion::Tls12, TlsVersion::Tls13) => Ok(&TLS12_AND_13),
            (TlsVersion::Tls13, TlsVersion::Tls13) => Ok(&TLS13_ONLY),
            (min, max) => Err(TlsError::VersionRange { min, max }),
        }
    }
}

/// What a server configuration is built from, besides its certificates.
#[derive(Debug)]
pub struct ServerOptions<'a> {
    pub versions: TlsVersions,
    /// ALPN protocols in order of preference; empty means no ALPN.
    pub alpn: Vec<Vec<u8>>,
    pub client_auth: &'a ClientAuth,
    /// Cipher suites and key-exchange groups ([`super::crypto`]).
    pub crypto: &'a Crypto,
    /// `disableSessionTickets`: no resumption at all (Go resumes only with tickets).
    pub disable_session_tickets: bool,
}

/// A server configuration serving certificates from `store` as `options` say. Session
/// tickets come from the process's one ticket key set, so that they resume across reloads.
pub fn server_config(
    store: Arc<CertStore>,
    options: ServerOptions<'_>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = options.crypto.provider.clone();
    let verifier = options.client_auth.verifier(&provider)?;
    let mut versions = options.versions;
    if !options.crypto.has_tls12 && versions.min == TlsVersion::Tls12 {
        // The configured TLS 1.2 suites are all unavailable: TLS 1.3 only, as long as the
        // option allows it.
        if versions.max == TlsVersion::Tls12 {
            return Err(TlsError::NoTls12Suite(
                options.crypto.unavailable.join(", "),
            ));
        }
        versions.min = TlsVersion::Tls13;
    }
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions.protocol_versions()?)
        .map_err(TlsError::Config)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(store);
    config.alpn_protocols = options.alpn;
    if options.disable_session_tickets {
        config.send_tls13_tickets = 0;
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    } else if options.client_auth.kind != ClientAuthType::NoClientCert {
        // rustls does not check client authentication when a session resumes. With the
        // process-wide tickets, a session from before a reload (no clientAuth then, or other
        // CAs) would resume past the client authentication configured now. Such options keep
        // rustls' per-configuration session cache: sessions resume until the next reload,
        // then the client is verified again by a full handshake.
    } else if let Some(ticketer) = super::ticketer() {
        config.ticketer = ticketer;
    }
    Ok(Arc::new(config))
}

/// A server configuration with the `default` option's settings, for tests.
#[cfg(test)]
pub(crate) fn default_server_config(
    store: Arc<CertStore>,
    alpn: Vec<Vec<u8>>,
    client_auth: &ClientAuth,
) -> Arc<ServerConfig> {
    let crypto = super::crypto(&[], &[]).expect("the default crypto");
    let options = ServerOptions {
        versions: TlsVersions::default(),
        alpn,
        client_auth,
        crypto: &crypto,
        disable_session_tickets: false,
    };
    server_config(store, options).expect("a default server configuration")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traefik_version_names_parse() {
        assert_eq!(
            "VersionTLS12".parse::<TlsVersion>().unwrap(),
            TlsVersion::Tls12
        );
        assert_eq!(
            "VersionTLS13".parse::<TlsVersion>().unwrap(),
            TlsVersion::Tls13
        );
        assert!(matches!(
            "TLS1.2".parse::<TlsVersion>(),
            Err(TlsError::UnknownVersion(_))
        ));
    }

    #[test]
    fn default_versions_are_tls12_and_tls13() {
        let versions = TlsVersions::default().protocol_versions().unwrap();
        assert_eq!(versions.len(), 2);
    }

    #[test]
    fn tls10_and_tls11_are_refused_clearly() {
        let versions = TlsVersions {
            min: TlsVersion::Tls10,
            max: TlsVersion::Tls13,
        };
        let err = versions.protocol_versions().unwrap_err();
        assert_eq!(
            err.to_string(),
            "VersionTLS10 is not supported: only TLS 1.2 and TLS 1.3 are available"
        );
    }

    #[test]
    fn inverted_range_is_refused() {
        let versions = TlsVersions {
            min: TlsVersion::Tls13,
            max: TlsVersion::Tls12,
        };
        assert!(matches!(
            versions.protocol_versions(),
            Err(TlsError::VersionRange { .. })
        ));
    }
}
