//! `sourceCriterion`: what `rateLimit` and `inFlightReq` count requests by — the source
//! address per an [`IpStrategy`], a request header's value, or the request's host.
//!
//! As Traefik, a request whose criterion yields nothing (no header, no usable address) is
//! counted under the empty source rather than refused.

use std::fmt;
use std::net::IpAddr;

use http::Request;
use http::header::{HOST, HeaderName};

use super::ip_strategy::IpStrategy;
use crate::handler::{Body, ClientInfo};

/// A configured `sourceCriterion`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceCriterion {
    /// `ipStrategy` (the default of `rateLimit`).
    Ip(IpStrategy),
    /// `requestHeaderName`.
    RequestHeader(HeaderName),
    /// `requestHost`.
    RequestHost,
}

/// The source a request is counted under: an address (kept as one, so counting by client
/// address allocates nothing per request) or a text. No address is the empty text, the
/// same source as an absent header.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    Ip(IpAddr),
    Text(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Ip(ip) => ip.fmt(f),
            Source::Text(text) => f.write_str(text),
        }
    }
}

impl SourceCriterion {
    /// The source `request` is counted under.
    pub fn source(&self, request: &Request<Body>) -> Source {
        match self {
            SourceCriterion::Ip(strategy) => request
                .extensions()
                .get::<ClientInfo>()
                .and_then(|info| strategy.client_ip(request.headers(), info.peer.ip()))
                .map_or_else(|| Source::Text(String::new()), Source::Ip),
            SourceCriterion::RequestHeader(name) => header_text(request, name),
            // HTTP/2 carries the host in the URI; HTTP/1.1 in the Host header.
            SourceCriterion::RequestHost => match request.uri().authority() {
                Some(authority) => Source::Text(authority.as_str().to_owned()),
                None => header_text(request, &HOST),
            },
        }
    }
}

fn header_text(request: &Request<Body>, name: &HeaderName) -> Source {
    Source::Text(
        request
            .headers()
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::empty_body;

    fn request() -> Request<Body> {
        let mut request = Request::builder()
            .uri("/x")
            .header(HOST, "site.test:8080")
            .header("x-user", "alice")
            .body(empty_body())
            .unwrap();
        request.extensions_mut().insert(ClientInfo {
            peer: "192.0.2.1:5000".parse().unwrap(),
            local: "127.0.0.1:80".parse().unwrap(),
            tls: false,
            entrypoint: "web".into(),
            notes: None,
        });
        request
    }

    #[test]
    fn each_criterion_names_its_source() {
        let req = request();
        assert_eq!(
            SourceCriterion::Ip(IpStrategy::default())
                .source(&req)
                .to_string(),
            "192.0.2.1"
        );
        assert_eq!(
            SourceCriterion::RequestHeader(HeaderName::from_static("x-user"))
                .source(&req)
                .to_string(),
            "alice"
        );
        assert_eq!(
            SourceCriterion::RequestHost.source(&req).to_string(),
            "site.test:8080"
        );
        let h2 = Request::builder()
            .uri("https://h2.test/x")
            .body(empty_body())
            .unwrap();
        assert_eq!(
            SourceCriterion::RequestHost.source(&h2).to_string(),
            "h2.test"
        );
    }

    #[test]
    fn missing_sources_are_the_empty_source() {
        let bare = Request::new(empty_body());
        assert_eq!(
            SourceCriterion::Ip(IpStrategy::default())
                .source(&bare)
                .to_string(),
            ""
        );
        assert_eq!(
            SourceCriterion::RequestHeader(HeaderName::from_static("x-user"))
                .source(&bare)
                .to_string(),
            ""
        );
    }
}
