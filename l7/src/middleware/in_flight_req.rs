//! `inFlightReq{amount, sourceCriterion}`: at most `amount` requests of one source are
//! being answered at once; more get 429. A request counts until its response body has been
//! sent (or dropped, when the client goes away), not merely until its headers are, as
//! Traefik's handler holds its slot until it has written the whole response.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Request, Response, StatusCode};

use super::Middleware;
use super::source_criterion::{Source, SourceCriterion};
use crate::handler::HeldBody;
use crate::handler::{Body, BoxFuture, Handler, SharedHandler, boxed, full_body};

/// A configured `inFlightReq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFlightReq {
    /// Concurrent requests allowed per source (at least 1).
    pub amount: usize,
    /// Traefik's default is `requestHost`.
    pub source: SourceCriterion,
}

impl Middleware for InFlightReq {
    fn wrap(&self, next: SharedHandler) -> SharedHandler {
        Arc::new(Limiter {
            config: self.clone(),
            counts: Arc::new(Counts::default()),
            next,
        })
    }
}

struct Limiter {
    config: InFlightReq,
    counts: Arc<Counts>,
    next: SharedHandler,
}

/// Requests in flight per source; a source leaves the table when its count falls to 0,
/// so the table is never larger than the number of requests being answered.
#[derive(Default)]
struct Counts(Mutex<HashMap<Source, usize>>);

impl Counts {
    fn try_acquire(self: &Arc<Self>, source: Source, limit: usize) -> Option<Permit> {
        let mut counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(source.clone()).or_insert(0);
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(Permit {
            counts: Arc::clone(self),
            source,
        })
    }
}

/// One request's place in the count, given back when dropped.
struct Permit {
    counts: Arc<Counts>,
    source: Source,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = self.counts.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.source) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.source);
            }
        }
    }
}

impl Handler for Limiter {
    fn call(&self, request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
        let source = self.config.source.source(&request);
        let amount = self.config.amount;
        let Some(permit) = self.counts.try_acquire(source, amount) else {
            return Box::pin(async move { too_many_requests(amount) });
        };
        Box::pin(async move {
            let response = self.next.call(request).await;
            response.map(|body| boxed(HeldBody::new(body, permit)))
        })
    }
}

/// 429 with the message of Traefik's limiter (oxy `connlimit`).
fn too_many_requests(amount: usize) -> Response<Body> {
    let mut response = Response::new(full_body(format!("max connections reached: {amount}")));
    *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::{ClientInfo, empty_body};
    use http_body_util::BodyExt;

    fn from(peer: &str) -> Request<Body> {
        let mut request = Request::new(empty_body());
        request.extensions_mut().insert(ClientInfo {
            peer: format!("{peer}:1000").parse().unwrap(),
            local: "127.0.0.1:80".parse().unwrap(),
            tls: false,
            entrypoint: "web".into(),
        });
        request
    }

    struct Fixed;
    impl Handler for Fixed {
        fn call(&self, _request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
            Box::pin(async { Response::new(full_body("hello")) })
        }
    }

    fn limiter(amount: usize) -> SharedHandler {
        InFlightReq {
            amount,
            source: SourceCriterion::Ip(Default::default()),
        }
        .wrap(Arc::new(Fixed))
    }

    #[tokio::test]
    async fn requests_count_until_their_body_is_read_or_dropped() {
        let handler = limiter(2);
        let first = handler.call(from("192.0.2.1")).await;
        let second = handler.call(from("192.0.2.1")).await;
        let third = handler.call(from("192.0.2.1")).await;
        assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
        let body = third.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"max connections reached: 2");
        // Another source has its own count.
        let other = handler.call(from("192.0.2.2")).await;
        assert_eq!(other.status(), StatusCode::OK);

        let body = first.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"hello");
        let fourth = handler.call(from("192.0.2.1")).await;
        assert_eq!(fourth.status(), StatusCode::OK);
        assert_eq!(
            handler.call(from("192.0.2.1")).await.status(),
            StatusCode::TOO_MANY_REQUESTS
        );
        drop(second);
        assert_eq!(
            handler.call(from("192.0.2.1")).await.status(),
            StatusCode::OK
        );
    }
}
