//! `buffering{maxRequestBodyBytes, memRequestBodyBytes, maxResponseBodyBytes,
//! memResponseBodyBytes}`: reads the whole request body before calling the next handler,
//! and the whole response body before answering, so that a slow client never holds a
//! server connection and a server never sees a partial request.
//!
//! Everything is kept in memory: Traefik spills bodies above `mem*Bytes` to disk; here the
//! `mem*` options are accepted and the `max*` limits bound memory instead (0, no limit, means
//! a body is held whole however large). Over the request limit the client gets 413 (from
//! `Content-Length` before reading, else as soon as the body passes it); over the response
//! limit, 500. A `101 Switching Protocols` response is passed through unbuffered.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, HeaderValue, TRANSFER_ENCODING};
use http::{Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::BodyExt;

use super::Middleware;
use crate::error::ProxyErrorKind;
use crate::handler::{Body, BoxFuture, Handler, SharedHandler, error_response, full_body};

/// A configured `buffering`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Buffering {
    /// The largest request body accepted; 0: no limit.
    pub max_request_body_bytes: u64,
    /// The largest response body accepted; 0: no limit.
    pub max_response_body_bytes: u64,
    /// Forward the request body as it streams in.
    pub disable_request_buffer: bool,
    /// Forward the response body as it streams in.
    pub disable_response_buffer: bool,
}

impl Middleware for Buffering {
    fn wrap(&self, next: SharedHandler) -> SharedHandler {
        Arc::new(Buffer { spec: *self, next })
    }
}

struct Buffer {
    spec: Buffering,
    next: SharedHandler,
}

impl Handler for Buffer {
    fn call(&self, request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
        Box::pin(async move {
            let request = if self.spec.disable_request_buffer {
                request
            } else {
                match self.buffer_request(request).await {
                    Ok(request) => request,
                    Err(kind) => return error_response(kind),
                }
            };
            let response = self.next.call(request).await;
            if self.spec.disable_response_buffer
                || response.status() == StatusCode::SWITCHING_PROTOCOLS
            {
                return response;
            }
            match self.buffer_response(response).await {
                Ok(response) => response,
                Err(kind) => error_response(kind),
            }
        })
    }
}

impl Buffer {
    async fn buffer_request(
        &self,
        request: Request<Body>,
    ) -> Result<Request<Body>, ProxyErrorKind> {
        let max = self.spec.max_request_body_bytes;
        if max > 0 && declared_length(request.headers()).is_some_and(|length| length > max) {
            return Err(ProxyErrorKind::RequestBodyTooLarge);
        }
        let (mut parts, body) = request.into_parts();
        if body.is_end_stream() {
            return Ok(Request::from_parts(parts, body));
        }
        let bytes = read_limited(body, max).await.map_err(|e| match e {
            ReadError::TooLarge => ProxyErrorKind::RequestBodyTooLarge,
            ReadError::Failed => ProxyErrorKind::ClientGone,
        })?;
        parts.headers.remove(TRANSFER_ENCODING);
        parts
            .headers
            .insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        Ok(Request::from_parts(parts, full_body(bytes)))
    }

    async fn buffer_response(
        &self,
        response: Response<Body>,
    ) -> Result<Response<Body>, ProxyErrorKind> {
        let (mut parts, body) = response.into_parts();
        if body.is_end_stream() {
            return Ok(Response::from_parts(parts, body));
        }
        let bytes = read_limited(body, self.spec.max_response_body_bytes)
            .await
            .map_err(|e| match e {
                ReadError::TooLarge => ProxyErrorKind::Internal,
                ReadError::Failed => ProxyErrorKind::UpstreamClosed,
            })?;
        parts.headers.remove(TRANSFER_ENCODING);
        parts
            .headers
            .insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        Ok(Response::from_parts(parts, full_body(bytes)))
    }
}

/// The `Content-Length` a message declares, when it is a number.
fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

enum ReadError {
    TooLarge,
    Failed,
}

/// Reads `body` whole, failing as soon as it passes `max` bytes (0: no limit). Trailers are
/// dropped: the buffered message is sent with a `Content-Length`.
async fn read_limited(mut body: Body, max: u64) -> Result<Bytes, ReadError> {
    let mut buffer = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| ReadError::Failed)?;
        if let Ok(data) = frame.into_data() {
            if max > 0 && (buffer.len() + data.len()) as u64 > max {
                return Err(ReadError::TooLarge);
            }
            buffer.extend_from_slice(&data);
        }
    }
    Ok(buffer.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::{empty_body, response_error};
    use std::sync::Mutex;

    /// Records the body and `Content-Length` it received; answers with `answer`.
    struct Recorder {
        seen: Mutex<Option<(Bytes, Option<String>)>>,
        answer: &'static str,
    }

    impl Handler for Recorder {
        fn call(&self, request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
            Box::pin(async move {
                let length = request
                    .headers()
                    .get(CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let body = request.into_body().collect().await.unwrap().to_bytes();
                *self.seen.lock().unwrap() = Some((body, length));
                Response::new(full_body(self.answer))
            })
        }
    }

    fn setup(spec: Buffering, answer: &'static str) -> (Arc<Recorder>, SharedHandler) {
        let recorder = Arc::new(Recorder {
            seen: Mutex::new(None),
            answer,
        });
        let handler = spec.wrap(recorder.clone());
        (recorder, handler)
    }

    /// A body streamed in two pieces with no declared length.
    fn streamed(a: &'static str, b: &'static str) -> Body {
        let (mut tx, body) = http_body_util::channel::Channel::<Bytes, BoxError>::new(2);
        tokio::spawn(async move {
            let _ = tx.send_data(Bytes::from_static(a.as_bytes())).await;
            let _ = tx.send_data(Bytes::from_static(b.as_bytes())).await;
        });
        crate::handler::boxed(body)
    }

    use crate::handler::BoxError;

    #[tokio::test]
    async fn the_request_body_arrives_whole_with_its_length() {
        let (recorder, handler) = setup(Buffering::default(), "ok");
        let response = handler.call(Request::new(streamed("hel", "lo"))).await;
        assert_eq!(response.status(), StatusCode::OK);
        let seen = recorder.seen.lock().unwrap().clone().unwrap();
        assert_eq!(seen, (Bytes::from("hello"), Some("5".to_owned())));
    }

    #[tokio::test]
    async fn a_declared_length_over_the_limit_is_refused_before_reading() {
        let spec = Buffering {
            max_request_body_bytes: 4,
            ..Default::default()
        };
        let (recorder, handler) = setup(spec, "ok");
        let request = Request::builder()
            .header(CONTENT_LENGTH, "10")
            .body(empty_body())
            .unwrap();
        let response = handler.call(request).await;
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(recorder.seen.lock().unwrap().is_none());
    }

    #[tokio::test]
    async fn a_streamed_body_over_the_limit_gets_413() {
        let spec = Buffering {
            max_request_body_bytes: 4,
            ..Default::default()
        };
        let (recorder, handler) = setup(spec, "ok");
        let response = handler.call(Request::new(streamed("hel", "lo"))).await;
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "Request Entity Too Large");
        assert!(recorder.seen.lock().unwrap().is_none());
    }

    #[tokio::test]
    async fn a_body_at_the_limit_passes() {
        let spec = Buffering {
            max_request_body_bytes: 5,
            ..Default::default()
        };
        let (recorder, handler) = setup(spec, "ok");
        let response = handler.call(Request::new(streamed("hel", "lo"))).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(recorder.seen.lock().unwrap().is_some());
    }

    #[tokio::test]
    async fn a_response_over_the_limit_becomes_500() {
        let spec = Buffering {
            max_response_body_bytes: 3,
            ..Default::default()
        };
        let (_, handler) = setup(spec, "too long");
        let response = handler.call(Request::new(empty_body())).await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response_error(&response), Some(ProxyErrorKind::Internal));
    }

    #[tokio::test]
    async fn a_response_within_the_limit_gets_its_length() {
        let spec = Buffering {
            max_response_body_bytes: 8,
            ..Default::default()
        };
        let (_, handler) = setup(spec, "fits");
        let response = handler.call(Request::new(empty_body())).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[CONTENT_LENGTH], "4");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "fits");
    }
}
