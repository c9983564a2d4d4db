//! The servers of an HTTP load-balancer service (`services.<n>.loadBalancer.servers`) and the
//! choice among them for each request.
//!
//! Parsing a server URL and picking a server are here; sending the request is
//! [`super::Proxy`]'s job.

use http::uri::{Authority, Uri};

use crate::balance::Edf;

/// How a server is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// `http://`: HTTP/1.1.
    Http1,
    /// `h2c://`: HTTP/2 over cleartext TCP with prior knowledge.
    H2c,
}

/// A server URL that cannot be proxied to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    #[error("server url {url:?} is not a valid URL")]
    InvalidUrl { url: String },
    #[error("server url {url:?}: scheme {scheme:?} is not supported (use http or h2c)")]
    UnsupportedScheme { url: String, scheme: String },
    #[error("server url {url:?} has no host")]
    MissingHost { url: String },
}

/// One server of a service. Only the scheme and authority of its URL are used: like Traefik,
/// the request keeps its own path and query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    url: String,
    protocol: UpstreamProtocol,
    authority: Authority,
}

impl Upstream {
    pub fn parse(url: &str) -> Result<Self, UpstreamError> {
        let uri: Uri = url.parse().map_err(|_| UpstreamError::InvalidUrl {
            url: url.to_owned(),
        })?;
        let protocol = match uri.scheme_str() {
            Some("http") => UpstreamProtocol::Http1,
            Some("h2c") => UpstreamProtocol::H2c,
            other => {
                return Err(UpstreamError::UnsupportedScheme {
                    url: url.to_owned(),
                    scheme: other.unwrap_or("").to_owned(),
                });
            }
        };
        let authority = uri
            .authority()
            .filter(|a| !a.host().is_empty())
            .cloned()
            .ok_or_else(|| UpstreamError::MissingHost {
                url: url.to_owned(),
            })?;
        Ok(Self {
            url: url.to_owned(),
            protocol,
            authority,
        })
    }

    /// The URL as configured, for logs.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn protocol(&self) -> UpstreamProtocol {
        self.protocol
    }

    pub fn authority(&self) -> &Authority {
        &self.authority
    }
}

/// A weighted round-robin service over its servers, in Traefik's EDF order.
pub struct HttpService {
    servers: Vec<Upstream>,
    edf: Edf<usize>,
    pass_host_header: bool,
}

impl HttpService {
    /// Servers with their weights; a weight of zero or less takes the server out of the
    /// rotation, as in Traefik.
    pub fn new(servers: Vec<(Upstream, i64)>, pass_host_header: bool) -> Self {
        let edf = Edf::new();
        for (index, (_, weight)) in servers.iter().enumerate() {
            edf.add(index, *weight);
        }
        Self {
            servers: servers.into_iter().map(|(server, _)| server).collect(),
            edf,
            pass_host_header,
        }
    }

    /// The server for the next request, or `None` when none is in the rotation.
    pub fn pick(&self) -> Option<&Upstream> {
        self.edf.next().and_then(|index| self.servers.get(index))
    }

    /// `passHostHeader`: the upstream sees the client's Host rather than its own authority.
    pub fn pass_host_header(&self) -> bool {
        self.pass_host_header
    }

    pub fn servers(&self) -> &[Upstream] {
        &self.servers
    }
}

impl std::fmt::Debug for HttpService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpService")
            .field("servers", &self.servers)
            .field("pass_host_header", &self.pass_host_header)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_keeps_scheme_and_authority_only() {
        let up = Upstream::parse("h2c://10.0.0.1:8080/ignored?x=1").unwrap();
        assert_eq!(up.protocol(), UpstreamProtocol::H2c);
        assert_eq!(up.authority().as_str(), "10.0.0.1:8080");
        assert_eq!(up.url(), "h2c://10.0.0.1:8080/ignored?x=1");
    }

    #[test]
    fn upstream_rejects_other_schemes_and_missing_hosts() {
        assert!(matches!(
            Upstream::parse("https://a:1"),
            Err(UpstreamError::UnsupportedScheme { .. })
        ));
        assert!(matches!(
            Upstream::parse("/path"),
            Err(UpstreamError::UnsupportedScheme { .. })
        ));
        assert!(Upstream::parse("http://").is_err());
    }

    #[test]
    fn service_picks_in_edf_order_and_skips_zero_weights() {
        let a = Upstream::parse("http://a:1").unwrap();
        let b = Upstream::parse("http://b:1").unwrap();
        let c = Upstream::parse("http://c:1").unwrap();
        let service = HttpService::new(vec![(a, 3), (b, 1), (c, 0)], true);
        let expected = Edf::new();
        expected.add("a", 3);
        expected.add("b", 1);
        for _ in 0..8 {
            let picked = service.pick().unwrap().authority().host().to_owned();
            assert_eq!(picked, expected.next().unwrap());
        }
    }

    #[test]
    fn service_without_servers_picks_none() {
        assert!(HttpService::new(vec![], false).pick().is_none());
    }
}
