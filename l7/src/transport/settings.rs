//! What one `http.serversTransports.<name>` says, as plain data, and the errors of turning it
//! into a [`super::Transport`].
//!
//! Files, PEM and Traefik's option names are the configuration layer's business: it hands
//! over parsed certificates and keys, rustls versions and durations.

use std::time::Duration;

use rustls::ProtocolVersion;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Go's `http.DefaultMaxIdleConnsPerHost`, which Traefik gets for `maxIdleConnsPerHost: 0`.
const GO_DEFAULT_IDLE_PER_HOST: usize = 2;

/// How a transport talks to servers: TLS to the backend, pooling, HTTP/2 and timeouts.
#[derive(Debug)]
pub struct TransportSettings {
    /// `serverName`: the SNI and the name the server certificate is verified against; `None`
    /// uses the host of the server URL.
    pub server_name: Option<String>,
    /// `insecureSkipVerify`: accept any server certificate.
    pub insecure_skip_verify: bool,
    /// `rootCAs`: the CAs server certificates must chain to; empty trusts the system's roots.
    pub root_cas: Vec<CertificateDer<'static>>,
    /// `certificates`: client certificate chains and keys offered to servers that ask (mTLS).
    pub client_certificates: Vec<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    /// `minVersion`; `None` is rustls' lowest (TLS 1.2).
    pub min_version: Option<ProtocolVersion>,
    /// `maxVersion`; `None` is rustls' highest (TLS 1.3).
    pub max_version: Option<ProtocolVersion>,
    /// `maxIdleConnsPerHost`: 0 means Go's default of 2, a negative value disables reuse.
    pub max_idle_conns_per_host: i64,
    /// `disableHTTP2`: `https` servers are spoken to in HTTP/1.1 only.
    pub disable_http2: bool,
    /// `forwardingTimeouts.dialTimeout`: the TCP connection.
    pub dial_timeout: Duration,
    /// `forwardingTimeouts.responseHeaderTimeout`: from the end of the request to the
    /// response headers; `None` waits forever.
    pub response_header_timeout: Option<Duration>,
    /// `forwardingTimeouts.idleConnTimeout`: how long an unused pooled connection is kept.
    pub idle_conn_timeout: Duration,
    /// `forwardingTimeouts.readIdleTimeout`: the HTTP/2 ping interval; `None` sends no pings.
    pub read_idle_timeout: Option<Duration>,
    /// `forwardingTimeouts.pingTimeout`: how long an HTTP/2 ping may go unanswered before
    /// the connection is closed.
    pub ping_timeout: Duration,
}

impl Default for TransportSettings {
    /// Traefik's `default@internal`, built from the static `serversTransport` defaults.
    fn default() -> Self {
        Self {
            server_name: None,
            insecure_skip_verify: false,
            root_cas: Vec::new(),
            client_certificates: Vec::new(),
            min_version: None,
            max_version: None,
            max_idle_conns_per_host: 200,
            disable_http2: false,
            dial_timeout: Duration::from_secs(30),
            response_header_timeout: None,
            idle_conn_timeout: Duration::from_secs(90),
            read_idle_timeout: None,
            ping_timeout: Duration::from_secs(15),
        }
    }
}

impl Clone for TransportSettings {
    fn clone(&self) -> Self {
        Self {
            server_name: self.server_name.clone(),
            root_cas: self.root_cas.clone(),
            // Keys are not `Clone`, so that copies of secrets are deliberate.
            client_certificates: self
                .client_certificates
                .iter()
                .map(|(chain, key)| (chain.clone(), key.clone_key()))
                .collect(),
            ..*self
        }
    }
}

impl TransportSettings {
    /// The number of idle connections kept per server, as Traefik reads `maxIdleConnsPerHost`.
    pub fn idle_per_host(&self) -> usize {
        match self.max_idle_conns_per_host {
            0 => GO_DEFAULT_IDLE_PER_HOST,
            n => usize::try_from(n).unwrap_or(0),
        }
    }
}

/// A transport that cannot be built from its settings.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error(
        "no TLS version between {} and {} is supported (rustls offers TLS 1.2 and TLS 1.3)",
        version_name(*min),
        version_name(*max)
    )]
    NoTlsVersion {
        min: Option<ProtocolVersion>,
        max: Option<ProtocolVersion>,
    },
    #[error("serverName {name:?} is not a valid DNS name or IP address")]
    InvalidServerName { name: String },
    #[error("client certificate #{index} has no certificate in its chain")]
    EmptyClientCertificate { index: usize },
    #[error("client certificate #{index} cannot be used: {source}")]
    ClientCertificate {
        index: usize,
        #[source]
        source: rustls::Error,
    },
    #[error("root CA #{index} cannot be used: {source}")]
    RootCa {
        index: usize,
        #[source]
        source: rustls::Error,
    },
    #[error("cannot build the TLS client configuration: {0}")]
    Tls(#[from] rustls::Error),
}

fn version_name(version: Option<ProtocolVersion>) -> String {
    match version {
        None => "any".to_owned(),
        Some(ProtocolVersion::SSLv3) => "SSL 3.0".to_owned(),
        Some(ProtocolVersion::TLSv1_0) => "TLS 1.0".to_owned(),
        Some(ProtocolVersion::TLSv1_1) => "TLS 1.1".to_owned(),
        Some(ProtocolVersion::TLSv1_2) => "TLS 1.2".to_owned(),
        Some(ProtocolVersion::TLSv1_3) => "TLS 1.3".to_owned(),
        Some(other) => format!("{other:?}"),
    }
}

impl TransportSettings {
    /// A digest of every setting, private keys included, so that a reload can tell whether a
    /// transport changed without keeping a second copy of its keys.
    pub fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        // Fixed keys: the same settings give the same digest for the process's lifetime.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.server_name.hash(&mut h);
        self.insecure_skip_verify.hash(&mut h);
        for ca in &self.root_cas {
            ca.as_ref().hash(&mut h);
        }
        for (chain, key) in &self.client_certificates {
            for cert in chain {
                cert.as_ref().hash(&mut h);
            }
            key.secret_der().hash(&mut h);
        }
        self.min_version.map(u16::from).hash(&mut h);
        self.max_version.map(u16::from).hash(&mut h);
        self.max_idle_conns_per_host.hash(&mut h);
        self.disable_http2.hash(&mut h);
        self.dial_timeout.hash(&mut h);
        self.response_header_timeout.hash(&mut h);
        self.idle_conn_timeout.hash(&mut h);
        self.read_idle_timeout.hash(&mut h);
        self.ping_timeout.hash(&mut h);
        h.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_per_host_follows_traefik() {
        let with = |n| TransportSettings {
            max_idle_conns_per_host: n,
            ..TransportSettings::default()
        };
        assert_eq!(TransportSettings::default().idle_per_host(), 200);
        assert_eq!(with(0).idle_per_host(), 2);
        assert_eq!(with(-1).idle_per_host(), 0);
        assert_eq!(with(7).idle_per_host(), 7);
    }

    #[test]
    fn version_errors_name_the_bounds() {
        let err = TransportError::NoTlsVersion {
            min: None,
            max: Some(ProtocolVersion::TLSv1_1),
        };
        assert_eq!(
            err.to_string(),
            "no TLS version between any and TLS 1.1 is supported (rustls offers TLS 1.2 and TLS 1.3)"
        );
    }
}
