//! The one error type of the HTTP proxy path: what went wrong ([`ProxyErrorKind`]), which side
//! caused it ([`Source`]), whether another server may be tried, and the status and body the
//! client gets, matching what Traefik answers in the same situation.
//!
//! Logging and writing the response are the caller's; this module only classifies.

use std::error::Error as StdError;
use std::fmt;

use http::StatusCode;

/// Traefik's (and nginx's) status for a client that left before the response.
const CLIENT_CLOSED_REQUEST: StatusCode = match StatusCode::from_u16(499) {
    Ok(status) => status,
    Err(_) => panic!("499 is a valid status code"),
};

/// Who caused an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The client: its request or its connection.
    Downstream,
    /// The server the request was proxied to.
    Upstream,
    /// Sallyport itself: its routing table or its view of server health.
    Internal,
}

/// What went wrong while proxying one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyErrorKind {
    #[error("no router matches the request")]
    NoRoute,
    #[error("no available server")]
    NoHealthyServer,
    #[error("cannot connect to the upstream")]
    UpstreamConnect,
    #[error("timed out connecting to the upstream")]
    UpstreamConnectTimeout,
    #[error("the upstream did not respond in time")]
    UpstreamTimeout,
    #[error("the upstream closed the connection before responding")]
    UpstreamClosed,
    #[error("the upstream sent an invalid HTTP response")]
    UpstreamProtocol,
    #[error("the client went away")]
    ClientGone,
    #[error("the request is for a host this connection does not serve")]
    MisdirectedRequest,
    #[error("the request headers are too large")]
    RequestHeaderTooLarge,
    #[error("the request body is too large")]
    RequestBodyTooLarge,
    #[error("the request is malformed")]
    BadRequest,
    #[error("internal error")]
    Internal,
}

impl ProxyErrorKind {
    /// The status the client is answered with.
    pub fn status(self) -> StatusCode {
        match self {
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::NoHealthyServer => StatusCode::SERVICE_UNAVAILABLE,
            Self::UpstreamConnect | Self::UpstreamClosed | Self::UpstreamProtocol => {
                StatusCode::BAD_GATEWAY
            }
            Self::UpstreamConnectTimeout | Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::ClientGone => CLIENT_CLOSED_REQUEST,
            Self::MisdirectedRequest => StatusCode::MISDIRECTED_REQUEST,
            Self::RequestHeaderTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::RequestBodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Whether the request may be sent to another server: only when the connection failed,
    /// so the upstream cannot have seen a byte of it.
    pub fn retryable(self) -> bool {
        matches!(self, Self::UpstreamConnect | Self::UpstreamConnectTimeout)
    }

    /// Which side caused the error.
    pub fn origin(self) -> Source {
        match self {
            Self::UpstreamConnect
            | Self::UpstreamConnectTimeout
            | Self::UpstreamTimeout
            | Self::UpstreamClosed
            | Self::UpstreamProtocol => Source::Upstream,
            Self::NoRoute
            | Self::ClientGone
            | Self::MisdirectedRequest
            | Self::RequestHeaderTooLarge
            | Self::RequestBodyTooLarge
            | Self::BadRequest => Source::Downstream,
            Self::NoHealthyServer | Self::Internal => Source::Internal,
        }
    }
}

/// The plain-text body Traefik sends with the same error, byte for byte (Go's `http.Error`
/// adds the newline; the proxy error handler does not).
pub fn error_response_body(kind: ProxyErrorKind) -> &'static str {
    match kind {
        ProxyErrorKind::NoRoute => "404 page not found\n",
        ProxyErrorKind::NoHealthyServer => "no available server\n",
        ProxyErrorKind::UpstreamConnect
        | ProxyErrorKind::UpstreamClosed
        | ProxyErrorKind::UpstreamProtocol => "Bad Gateway",
        ProxyErrorKind::UpstreamConnectTimeout | ProxyErrorKind::UpstreamTimeout => {
            "Gateway Timeout"
        }
        ProxyErrorKind::ClientGone => "Client Closed Request",
        ProxyErrorKind::MisdirectedRequest => "Misdirected Request\n",
        ProxyErrorKind::RequestHeaderTooLarge => "431 Request Header Fields Too Large",
        ProxyErrorKind::RequestBodyTooLarge => "Request Entity Too Large",
        ProxyErrorKind::BadRequest => "400 Bad Request",
        ProxyErrorKind::Internal => "Internal Server Error",
    }
}

/// An error on the proxy path, with what it concerns (an upstream URL, a host...) and the
/// underlying cause.
#[derive(Debug)]
pub struct ProxyError {
    kind: ProxyErrorKind,
    context: Option<String>,
    cause: Option<Box<dyn StdError + Send + Sync>>,
}

impl ProxyError {
    pub fn new(kind: ProxyErrorKind) -> Self {
        ProxyError {
            kind,
            context: None,
            cause: None,
        }
    }

    /// Names what the error concerns, e.g. the upstream `http://10.0.0.1:8080`.
    pub fn with_context(mut self, context: impl Into<String>) -> Self {
        self.context = Some(context.into());
        self
    }

    pub fn with_cause(mut self, cause: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        self.cause = Some(cause.into());
        self
    }

    pub fn kind(&self) -> ProxyErrorKind {
        self.kind
    }

    pub fn status(&self) -> StatusCode {
        self.kind.status()
    }

    pub fn retryable(&self) -> bool {
        self.kind.retryable()
    }

    pub fn origin(&self) -> Source {
        self.kind.origin()
    }
}

impl From<ProxyErrorKind> for ProxyError {
    fn from(kind: ProxyErrorKind) -> Self {
        ProxyError::new(kind)
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)?;
        if let Some(context) = &self.context {
            write!(f, " {context}")?;
        }
        if let Some(cause) = &self.cause {
            write!(f, ": {cause}")?;
        }
        Ok(())
    }
}

impl StdError for ProxyError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.cause
            .as_deref()
            .map(|c| c as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    const ALL: [ProxyErrorKind; 13] = [
        ProxyErrorKind::NoRoute,
        ProxyErrorKind::NoHealthyServer,
        ProxyErrorKind::UpstreamConnect,
        ProxyErrorKind::UpstreamConnectTimeout,
        ProxyErrorKind::UpstreamTimeout,
        ProxyErrorKind::UpstreamClosed,
        ProxyErrorKind::UpstreamProtocol,
        ProxyErrorKind::ClientGone,
        ProxyErrorKind::MisdirectedRequest,
        ProxyErrorKind::RequestHeaderTooLarge,
        ProxyErrorKind::RequestBodyTooLarge,
        ProxyErrorKind::BadRequest,
        ProxyErrorKind::Internal,
    ];

    #[test]
    fn statuses_match_traefik() {
        let statuses: Vec<u16> = ALL.iter().map(|k| k.status().as_u16()).collect();
        assert_eq!(
            statuses,
            [
                404, 503, 502, 504, 504, 502, 502, 499, 421, 431, 413, 400, 500
            ]
        );
    }

    #[test]
    fn only_connection_failures_are_retryable() {
        let retryable: Vec<_> = ALL.into_iter().filter(|k| k.retryable()).collect();
        assert_eq!(
            retryable,
            [
                ProxyErrorKind::UpstreamConnect,
                ProxyErrorKind::UpstreamConnectTimeout
            ]
        );
    }

    #[test]
    fn every_upstream_kind_blames_the_upstream() {
        for kind in ALL {
            let upstream = format!("{kind:?}").starts_with("Upstream");
            assert_eq!(kind.origin() == Source::Upstream, upstream, "{kind:?}");
        }
        assert_eq!(ProxyErrorKind::ClientGone.origin(), Source::Downstream);
        assert_eq!(ProxyErrorKind::NoHealthyServer.origin(), Source::Internal);
    }

    #[test]
    fn bodies_are_traefiks_plain_text() {
        assert_eq!(
            error_response_body(ProxyErrorKind::NoRoute),
            "404 page not found\n"
        );
        assert_eq!(
            error_response_body(ProxyErrorKind::NoHealthyServer),
            "no available server\n"
        );
        assert_eq!(
            error_response_body(ProxyErrorKind::UpstreamConnect),
            "Bad Gateway"
        );
        assert_eq!(
            error_response_body(ProxyErrorKind::UpstreamTimeout),
            "Gateway Timeout"
        );
        for kind in ALL {
            assert!(!error_response_body(kind).is_empty(), "{kind:?}");
        }
    }

    #[test]
    fn display_names_the_upstream_and_the_cause() {
        let err = ProxyError::new(ProxyErrorKind::UpstreamConnect)
            .with_context("http://10.0.0.1:8080")
            .with_cause(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert_eq!(
            err.to_string(),
            "cannot connect to the upstream http://10.0.0.1:8080: connection refused"
        );
        assert!(err.source().is_some());
        assert!(err.retryable());
        assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
    }

    #[test]
    fn display_without_context_is_the_kind() {
        let err = ProxyError::from(ProxyErrorKind::NoHealthyServer);
        assert_eq!(err.to_string(), "no available server");
        assert!(err.source().is_none());
    }
}
