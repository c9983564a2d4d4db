//! `retry{attempts, initialInterval, timeout, maxRequestBodyBytes, status[],
//! disableRetryOnNetworkError, retryNonIdempotentMethod}`: sends a request again through
//! the next handler (so the load balancer picks a server again) when it failed on the
//! network — a proxy error from the upstream side: could not connect, connection closed,
//! timed out — or when the response status is one of `status`.
//!
//! The request body is held in memory up to `maxRequestBodyBytes` so that it can be sent
//! again; a larger body is forwarded once, as it streams. Only idempotent methods are
//! retried unless `retryNonIdempotentMethod`. `attempts` counts every try, the first
//! included, as Traefik's. Between tries the middleware waits `initialInterval`, then twice
//! that for every later try (Traefik's exponential backoff capped at 2x, without its
//! jitter); 0 retries immediately. With a `timeout`, no try starts once it would begin
//! after the timeout has passed since the first; a try in flight is not cut short.

use std::collections::VecDeque;
use std::ops::RangeInclusive;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::time::Instant;

use super::Middleware;
use crate::error::{ProxyErrorKind, Source};
use crate::handler::{
    Body, BoxError, BoxFuture, Handler, SharedHandler, boxed, error_response, response_error,
};

/// A configured `retry`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    /// Tries in all, the first included; 1 never retries.
    pub attempts: u32,
    /// The wait before the first retry; later ones wait twice this.
    pub initial_interval: Duration,
    /// No retry starts later than this after the first try; `None`: no limit.
    pub timeout: Option<Duration>,
    /// The largest request body held for replay; `None`: no limit.
    pub max_request_body_bytes: Option<u64>,
    /// Response statuses that are retried, e.g. `500..=599`.
    pub status: Vec<RangeInclusive<u16>>,
    /// Do not retry network errors (only `status`).
    pub disable_retry_on_network_error: bool,
    /// Retry POST, PATCH and the other non-idempotent methods too.
    pub retry_non_idempotent_method: bool,
}

/// Traefik's default `maxRequestBodyBytes`: 2 MiB.
pub const DEFAULT_MAX_REQUEST_BODY_BYTES: u64 = 2 << 20;

/// A `status` entry that is neither a code nor a `from-to` range of codes.
#[derive(Debug, thiserror::Error)]
#[error("invalid status {0:?}: expected a code (503) or a range (500-599) of codes 100-599")]
pub struct InvalidStatus(pub String);

/// Parses `status` entries: `503` or `500-599`.
pub fn parse_status_ranges(entries: &[String]) -> Result<Vec<RangeInclusive<u16>>, InvalidStatus> {
    entries
        .iter()
        .map(|entry| {
            let code = |text: &str| {
                text.trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|c| (100..=599).contains(c))
            };
            let range = match entry.split_once('-') {
                Some((from, to)) => code(from).zip(code(to)),
                None => code(entry).map(|c| (c, c)),
            };
            match range {
                Some((from, to)) if from <= to => Ok(from..=to),
                _ => Err(InvalidStatus(entry.clone())),
            }
        })
        .collect()
}

impl Middleware for Retry {
    fn wrap(&self, next: SharedHandler) -> SharedHandler {
        Arc::new(Retrying {
            spec: self.clone(),
            next,
        })
    }
}

struct Retrying {
    spec: Retry,
    next: SharedHandler,
}

impl Handler for Retrying {
    fn call(&self, request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
        let may_retry = self.spec.attempts > 1
            && (self.spec.retry_non_idempotent_method || is_idempotent(request.method()));
        if !may_retry {
            return self.next.call(request);
        }
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let held = match hold(body, self.spec.max_request_body_bytes).await {
                Ok(Held::Whole(replay)) => replay,
                Ok(Held::Partial(body)) => {
                    return self.next.call(Request::from_parts(parts, body)).await;
                }
                Err(_) => return error_response(ProxyErrorKind::ClientGone),
            };
            let started = Instant::now();
            let mut tries = 1;
            loop {
                let request = Request::from_parts(parts.clone(), boxed(held.clone()));
                let response = self.next.call(request).await;
                if tries >= self.spec.attempts || !self.should_retry(&response) {
                    return response;
                }
                let wait = self.backoff(tries);
                if self
                    .spec
                    .timeout
                    .is_some_and(|timeout| started.elapsed() + wait > timeout)
                {
                    return response;
                }
                drop(response);
                tokio::time::sleep(wait).await;
                tries += 1;
                if let Some(notes) = crate::observe::RequestNotes::in_extensions(&parts.extensions)
                {
                    notes.note_retry();
                }
            }
        })
    }
}

impl Retrying {
    fn should_retry(&self, response: &Response<Body>) -> bool {
        let network =
            response_error(response).is_some_and(|kind| kind.origin() == Source::Upstream);
        if network && !self.spec.disable_retry_on_network_error {
            return true;
        }
        let status = response.status().as_u16();
        self.spec.status.iter().any(|range| range.contains(&status))
    }

    /// The wait after try number `tries`: the initial interval, then twice it.
    fn backoff(&self, tries: u32) -> Duration {
        if tries <= 1 {
            self.spec.initial_interval
        } else {
            self.spec.initial_interval.saturating_mul(2)
        }
    }
}

/// GET, HEAD, OPTIONS, TRACE, PUT and DELETE (RFC 9110 §9.2.2).
fn is_idempotent(method: &Method) -> bool {
    [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::TRACE,
        Method::PUT,
        Method::DELETE,
    ]
    .contains(method)
}

enum Held {
    /// The whole body, to send as many times as needed.
    Whole(Replay),
    /// Over the limit: what was read, then the rest as it streams; sent once.
    Partial(Body),
}

/// Reads `body` into memory while it stays within `max` bytes.
async fn hold(mut body: Body, max: Option<u64>) -> Result<Held, BoxError> {
    let mut replay = Replay::default();
    let mut size: u64 = 0;
    loop {
        if body.is_end_stream() {
            return Ok(Held::Whole(replay));
        }
        let Some(frame) = body.frame().await else {
            return Ok(Held::Whole(replay));
        };
        match frame?.into_data() {
            Ok(data) => {
                size += data.len() as u64;
                replay.chunks.push_back(data);
                if max.is_some_and(|max| size > max) {
                    replay.rest = Some(body);
                    return Ok(Held::Partial(boxed(replay)));
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    replay.trailers = Some(trailers);
                }
            }
        }
    }
}

/// A body made of chunks already read, then trailers, then (once only) the unread rest.
#[derive(Default)]
struct Replay {
    chunks: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
    rest: Option<Body>,
}

impl Clone for Replay {
    /// A copy to send again; only ever called on a body read whole (`rest` is `None`).
    fn clone(&self) -> Self {
        Replay {
            chunks: self.chunks.clone(),
            trailers: self.trailers.clone(),
            rest: None,
        }
    }
}

impl http_body::Body for Replay {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(chunk) = this.chunks.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if let Some(rest) = &mut this.rest {
            return Pin::new(rest).poll_frame(cx);
        }
        Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
            && self.trailers.is_none()
            && self.rest.as_ref().is_none_or(|rest| rest.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let held: u64 = self.chunks.iter().map(|c| c.len() as u64).sum();
        match &self.rest {
            None => SizeHint::with_exact(held),
            Some(rest) => {
                let rest = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(held + rest.lower());
                if let Some(upper) = rest.upper() {
                    hint.set_upper(held + upper);
                }
                hint
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::{error_response, full_body};
    use http::StatusCode;
    use std::sync::Mutex;

    /// Answers from a script, one entry per call, and records the bodies it received.
    struct Script {
        answers: Mutex<VecDeque<Response<Body>>>,
        bodies: Mutex<Vec<Bytes>>,
    }

    impl Handler for Script {
        fn call(&self, request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
            Box::pin(async move {
                let body = request.into_body().collect().await.unwrap().to_bytes();
                self.bodies.lock().unwrap().push(body);
                self.answers
                    .lock()
                    .unwrap()
                    .pop_front()
                    .unwrap_or_else(|| Response::new(full_body("last")))
            })
        }
    }

    fn status(code: u16) -> Response<Body> {
        let mut response = Response::new(full_body(code.to_string()));
        *response.status_mut() = StatusCode::from_u16(code).unwrap();
        response
    }

    fn spec(attempts: u32) -> Retry {
        Retry {
            attempts,
            initial_interval: Duration::ZERO,
            timeout: None,
            max_request_body_bytes: Some(DEFAULT_MAX_REQUEST_BODY_BYTES),
            status: Vec::new(),
            disable_retry_on_network_error: false,
            retry_non_idempotent_method: false,
        }
    }

    fn setup(spec: Retry, answers: Vec<Response<Body>>) -> (Arc<Script>, SharedHandler) {
        let script = Arc::new(Script {
            answers: Mutex::new(answers.into()),
            bodies: Mutex::new(Vec::new()),
        });
        let handler = spec.wrap(script.clone());
        (script, handler)
    }

    fn request(method: Method, body: &'static str) -> Request<Body> {
        Request::builder()
            .method(method)
            .body(full_body(body))
            .unwrap()
    }

    #[tokio::test]
    async fn a_connection_failure_is_retried_with_the_same_body() {
        let (script, handler) = setup(
            spec(3),
            vec![error_response(ProxyErrorKind::UpstreamConnect)],
        );
        let response = handler.call(request(Method::PUT, "payload")).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(*script.bodies.lock().unwrap(), ["payload", "payload"]);
    }

    #[tokio::test]
    async fn attempts_count_the_first_try() {
        let failures = (0..5)
            .map(|_| error_response(ProxyErrorKind::UpstreamConnect))
            .collect();
        let (script, handler) = setup(spec(3), failures);
        let response = handler.call(request(Method::GET, "")).await;
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(script.bodies.lock().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn post_is_not_retried_unless_asked() {
        let (script, handler) = setup(
            spec(3),
            vec![error_response(ProxyErrorKind::UpstreamConnect)],
        );
        let response = handler.call(request(Method::POST, "x")).await;
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(script.bodies.lock().unwrap().len(), 1);

        let mut allowed = spec(3);
        allowed.retry_non_idempotent_method = true;
        let (script, handler) = setup(
            allowed,
            vec![error_response(ProxyErrorKind::UpstreamConnect)],
        );
        let response = handler.call(request(Method::POST, "x")).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(script.bodies.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_server_answer_is_retried_only_when_its_status_is_listed() {
        let (script, handler) = setup(spec(3), vec![status(503)]);
        assert_eq!(
            handler.call(request(Method::GET, "")).await.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(script.bodies.lock().unwrap().len(), 1);

        let mut listed = spec(3);
        listed.status = parse_status_ranges(&["500-599".into()]).unwrap();
        let (script, handler) = setup(listed, vec![status(503), status(500)]);
        assert_eq!(
            handler.call(request(Method::GET, "")).await.status(),
            StatusCode::OK
        );
        assert_eq!(script.bodies.lock().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn network_errors_are_kept_when_disabled() {
        let mut disabled = spec(3);
        disabled.disable_retry_on_network_error = true;
        let (script, handler) = setup(
            disabled,
            vec![error_response(ProxyErrorKind::UpstreamConnect)],
        );
        let response = handler.call(request(Method::GET, "")).await;
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(script.bodies.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_forwarded_once_whole() {
        let mut small = spec(3);
        small.max_request_body_bytes = Some(3);
        let (script, handler) = setup(small, vec![error_response(ProxyErrorKind::UpstreamConnect)]);
        let response = handler.call(request(Method::PUT, "longer")).await;
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(*script.bodies.lock().unwrap(), ["longer"]);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_wait_the_interval_then_twice_it() {
        let mut slow = spec(4);
        slow.initial_interval = Duration::from_millis(100);
        let failures = (0..3)
            .map(|_| error_response(ProxyErrorKind::UpstreamConnect))
            .collect();
        let (_, handler) = setup(slow, failures);
        let started = Instant::now();
        handler.call(request(Method::GET, "")).await;
        assert_eq!(started.elapsed(), Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn no_retry_starts_after_the_timeout() {
        let mut bounded = spec(10);
        bounded.initial_interval = Duration::from_millis(100);
        bounded.timeout = Some(Duration::from_millis(350));
        let failures = (0..10)
            .map(|_| error_response(ProxyErrorKind::UpstreamConnect))
            .collect();
        let (script, handler) = setup(bounded, failures);
        handler.call(request(Method::GET, "")).await;
        // Tries at 0, 100 and 300 ms; the next would start at 500.
        assert_eq!(script.bodies.lock().unwrap().len(), 3);
    }

    #[test]
    fn status_entries_are_codes_or_ranges() {
        assert_eq!(
            parse_status_ranges(&["503".into(), "500-502".into()]).unwrap(),
            [503..=503, 500..=502]
        );
        for bad in ["5xx", "600", "502-500", ""] {
            assert!(parse_status_ranges(&[bad.into()]).is_err(), "{bad}");
        }
    }
}
