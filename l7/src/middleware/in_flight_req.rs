//! `inFlightReq{amount, sourceCriterion}`: at most `amount` requests of one source are
//! being answered at once; more get 429. A request counts until its response body has been
//! sent (or dropped, when the client goes away), not merely until its headers are, as
//! Traefik's handler holds its slot until it has written the whole response.
//!
//! The counts live in [`InFlightReqStates`], per middleware and per router or service using
//! it (as Traefik builds a middleware per router), so a reload that leaves the middleware as
//! it was keeps them: requests still in flight on the old snapshot count against the same
//! limit as new ones, and give their slot back to it when they end.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Request, Response, StatusCode};

use l4::kept::Kept;

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
        self.limiter(Arc::new(Counts::default()), next)
    }
}

impl InFlightReq {
    fn limiter(&self, counts: Arc<Counts>, next: SharedHandler) -> SharedHandler {
        Arc::new(Limiter {
            config: self.clone(),
            counts,
            next,
        })
    }
}

/// The counts of every `inFlightReq`, by (middleware name, router or service using it),
/// kept across reloads while the middleware's definition is unchanged.
pub type InFlightReqStates = Kept<(String, String), InFlightReq, Counts>;

/// An `inFlightReq` whose counts live in [`InFlightReqStates`].
pub struct KeptInFlightReq {
    /// The middleware's qualified name (`limit@file`).
    pub name: String,
    pub limit: InFlightReq,
    pub states: Arc<InFlightReqStates>,
}

impl Middleware for KeptInFlightReq {
    fn wrap(&self, next: SharedHandler) -> SharedHandler {
        self.wrap_for("", next)
    }

    fn wrap_for(&self, owner: &str, next: SharedHandler) -> SharedHandler {
        let key = (self.name.clone(), owner.to_owned());
        let counts = self
            .states
            .get_or_make(key, self.limit.clone(), Counts::default);
        self.limit.limiter(counts, next)
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
pub struct Counts(Mutex<HashMap<Source, usize>>);

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
            notes: None,
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

    #[tokio::test]
    async fn a_rebuilt_chain_shares_the_counts_of_an_unchanged_middleware_per_owner() {
        let states = Arc::new(InFlightReqStates::new());
        let kept = |amount| KeptInFlightReq {
            name: "limit@file".into(),
            limit: InFlightReq {
                amount,
                source: SourceCriterion::Ip(Default::default()),
            },
            states: states.clone(),
        };
        let old = kept(1).wrap_for("router a", Arc::new(Fixed));
        let held = old.call(from("192.0.2.1")).await;
        assert_eq!(held.status(), StatusCode::OK);
        let rebuilt = kept(1).wrap_for("router a", Arc::new(Fixed));
        let refused = rebuilt.call(from("192.0.2.1")).await.status();
        assert_eq!(refused, StatusCode::TOO_MANY_REQUESTS);
        // Another router using the middleware has its own counts.
        let other = kept(1).wrap_for("router b", Arc::new(Fixed));
        assert_eq!(other.call(from("192.0.2.1")).await.status(), StatusCode::OK);
        // The request of the old chain gives its slot back to the shared count.
        drop(held);
        let held_again = rebuilt.call(from("192.0.2.1")).await;
        assert_eq!(held_again.status(), StatusCode::OK);
        // A changed amount starts afresh: two new requests pass beside the held one.
        let changed = kept(2).wrap_for("router a", Arc::new(Fixed));
        let _first = changed.call(from("192.0.2.1")).await;
        assert_eq!(
            changed.call(from("192.0.2.1")).await.status(),
            StatusCode::OK
        );
    }
}
