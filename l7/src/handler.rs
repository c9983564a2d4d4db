//! The one interface of the HTTP path: a [`Handler`] takes a request and gives a response.
//!
//! Routers, middlewares, services (load balancers, weighted, mirroring, failover) and the
//! leaf that forwards to one server are all handlers, composed once per configuration
//! snapshot into a graph of [`SharedHandler`]s. A handler never fails: errors are already
//! responses, marked with the [`ProxyErrorKind`] that produced them (see
//! [`error_response`]) so that a parent (passive health checks, failover) can tell "the
//! server answered 502" from "the server could not be reached".
//!
//! Per-connection facts a handler may need (client address, TLS, entrypoint) travel in the
//! request's extensions as a [`ClientInfo`].

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Request, Response};
use http_body::{Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};

use crate::error::{ProxyErrorKind, error_response_body};

/// The error type of bodies on the HTTP path.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request or response body: streamed from a peer, buffered, or generated.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Anything that answers an HTTP request.
pub trait Handler: Send + Sync + 'static {
    fn call(&self, request: Request<Body>) -> BoxFuture<'_, Response<Body>>;
}

/// A handler in the graph of one snapshot; parents hold their children this way.
pub type SharedHandler = Arc<dyn Handler>;

/// The connection a request arrived on. Set by the entrypoint in every request's extensions.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// The client (after a trusted PROXY header); `ClientIP` rules and `X-Forwarded-For` use it.
    pub peer: SocketAddr,
    /// The entrypoint's local address.
    pub local: SocketAddr,
    /// The connection is TLS (HTTPS).
    pub tls: bool,
    /// The entrypoint's name.
    pub entrypoint: Arc<str>,
    /// What handlers note for the request's observation; `None` when it is not observed.
    /// Carried here rather than as an extension of its own, which would cost an allocation.
    pub notes: Option<Arc<crate::observe::RequestNotes>>,
}

/// Turns any body into a [`Body`].
pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

pub fn empty_body() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

pub fn full_body(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A body that holds `guard` (a permit, an in-flight count) until its last frame or an error
/// has been read, or until it is dropped unread.
pub struct HeldBody<G> {
    body: Body,
    guard: Option<G>,
}

impl<G> HeldBody<G> {
    pub fn new(body: Body, guard: G) -> Self {
        HeldBody {
            body,
            guard: Some(guard),
        }
    }
}

impl<G: Unpin> http_body::Body for HeldBody<G> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            this.guard = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// `first` (a frame already read from `rest`, or its error), then the rest of the body.
pub fn prefixed_body(first: Result<Frame<Bytes>, BoxError>, rest: Body) -> Body {
    PrefixedBody {
        first: Some(first),
        rest,
    }
    .boxed_unsync()
}

struct PrefixedBody {
    first: Option<Result<Frame<Bytes>, BoxError>>,
    rest: Body,
}

impl http_body::Body for PrefixedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(first));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let rest = self.rest.size_hint();
        let held = match &self.first {
            Some(Ok(frame)) => frame.data_ref().map_or(0, |d| d.len() as u64),
            _ => 0,
        };
        // Upper first: `SizeHint` refuses a lower bound above the current upper one.
        let mut hint = SizeHint::new();
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(held));
        }
        hint.set_lower(rest.lower().saturating_add(held));
        hint
    }
}

/// The response Traefik gives for `kind`, with `kind` in its extensions.
pub fn error_response(kind: ProxyErrorKind) -> Response<Body> {
    let mut response = Response::new(full_body(error_response_body(kind)));
    *response.status_mut() = kind.status();
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response.extensions_mut().insert(kind);
    response
}

/// The proxy error a response stands for, if it was made by [`error_response`].
pub fn response_error(response: &Response<Body>) -> Option<ProxyErrorKind> {
    response.extensions().get::<ProxyErrorKind>().copied()
}

/// `noop@internal`: answers 200 with an empty body, as Traefik's handler that writes nothing.
/// Routers use it behind a middleware that answers by itself (redirections).
#[derive(Debug, Clone, Copy)]
pub struct Noop;

impl Handler for Noop {
    fn call(&self, _request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
        Box::pin(async { Response::new(empty_body()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    #[test]
    fn error_responses_carry_their_kind() {
        let response = error_response(ProxyErrorKind::UpstreamConnect);
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(
            response_error(&response),
            Some(ProxyErrorKind::UpstreamConnect)
        );
        assert_eq!(response_error(&Response::new(empty_body())), None);
    }

    #[tokio::test]
    async fn noop_answers_200_with_no_body() {
        let response = Noop.call(Request::new(empty_body())).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(body.is_empty());
    }
}
