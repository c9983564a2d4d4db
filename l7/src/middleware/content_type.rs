//! `contentType{autoDetect}`: gives a `Content-Type` to responses whose backend sent none,
//! detected from the first bytes of the body ([`super::content_sniff`]), as Go's server
//! does for Traefik when this middleware re-enables detection. Without the middleware the
//! proxy adds no `Content-Type`.
//!
//! In Traefik v3 `autoDetect` is deprecated: the middleware's presence enables detection,
//! `autoDetect: false` makes it do nothing. Detection looks at the first data frame only,
//! so a streamed response is never held back waiting for more; an empty body, and statuses
//! that carry none (1xx, 204, 304), get no type.

use std::sync::Arc;

use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;

use super::Middleware;
use super::content_sniff::detect;
use crate::handler::prefixed_body;
use crate::handler::{Body, BoxFuture, Handler, SharedHandler};

/// A configured `contentType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentType {
    /// `false` turns detection off (Traefik's deprecated `autoDetect: false`).
    pub auto_detect: bool,
}

impl Middleware for ContentType {
    fn wrap(&self, next: SharedHandler) -> SharedHandler {
        if !self.auto_detect {
            return next;
        }
        Arc::new(Detect { next })
    }
}

struct Detect {
    next: SharedHandler,
}

impl Handler for Detect {
    fn call(&self, request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
        Box::pin(async move {
            let response = self.next.call(request).await;
            if response.headers().contains_key(CONTENT_TYPE) || !carries_body(response.status()) {
                return response;
            }
            let (mut parts, mut body) = response.into_parts();
            let first = loop {
                match body.frame().await {
                    Some(Ok(frame)) => match frame.data_ref() {
                        Some(data) if data.is_empty() => continue,
                        _ => break Some(Ok(frame)),
                    },
                    other => break other,
                }
            };
            if let Some(data) = first
                .as_ref()
                .and_then(|f| f.as_ref().ok())
                .and_then(Frame::data_ref)
            {
                parts
                    .headers
                    .insert(CONTENT_TYPE, HeaderValue::from_static(detect(data)));
            }
            let body = match first {
                Some(first) => prefixed_body(first, body),
                None => body,
            };
            Response::from_parts(parts, body)
        })
    }
}

fn carries_body(status: StatusCode) -> bool {
    !(status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::{empty_body, full_body};
    use bytes::Bytes;

    /// A backend answering `status` with `body` and, when given, a Content-Type.
    struct Backend {
        status: StatusCode,
        content_type: Option<&'static str>,
        body: &'static [u8],
    }

    impl Handler for Backend {
        fn call(&self, _request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
            let mut response = Response::new(full_body(self.body));
            *response.status_mut() = self.status;
            if let Some(ct) = self.content_type {
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static(ct));
            }
            Box::pin(async move { response })
        }
    }

    async fn answer(auto_detect: bool, backend: Backend) -> (Option<String>, Bytes) {
        let handler = ContentType { auto_detect }.wrap(Arc::new(backend));
        let request = Request::new(empty_body());
        let response = handler.call(request).await;
        let ct = response
            .headers()
            .get(CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (ct, body)
    }

    fn ok(content_type: Option<&'static str>, body: &'static [u8]) -> Backend {
        Backend {
            status: StatusCode::OK,
            content_type,
            body,
        }
    }

    #[tokio::test]
    async fn missing_type_is_detected_and_the_body_kept_whole() {
        let got = answer(true, ok(None, b"<html><body>hi")).await;
        assert_eq!(
            got,
            (
                Some("text/html; charset=utf-8".into()),
                Bytes::from_static(b"<html><body>hi")
            )
        );
    }

    #[tokio::test]
    async fn type_from_the_backend_is_kept() {
        let got = answer(true, ok(Some("application/json"), b"<html>")).await;
        assert_eq!(got.0.as_deref(), Some("application/json"));
    }

    #[tokio::test]
    async fn empty_body_and_no_content_get_no_type() {
        assert_eq!(answer(true, ok(None, b"")).await.0, None);
        let no_content = Backend {
            status: StatusCode::NO_CONTENT,
            content_type: None,
            body: b"",
        };
        assert_eq!(answer(true, no_content).await.0, None);
    }

    #[tokio::test]
    async fn replayed_body_announces_its_full_length() {
        let handler = ContentType { auto_detect: true }.wrap(Arc::new(ok(None, b"hello")));
        let response = handler.call(Request::new(empty_body())).await;
        assert_eq!(http_body::Body::size_hint(response.body()).exact(), Some(5));
    }

    #[tokio::test]
    async fn auto_detect_false_leaves_the_response_alone() {
        assert_eq!(answer(false, ok(None, b"<html>")).await.0, None);
    }
}
