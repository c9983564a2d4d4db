//! The scrape endpoint (`prometheus@internal`): the registry in the Prometheus text format,
//! version 0.0.4 — what Traefik's Prometheus handler serves to a scraper (it does not enable
//! OpenMetrics).

use std::sync::Arc;

use http::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use l7::handler::{Body, BoxFuture, Handler, full_body};
use prometheus_client::encoding::prometheus_text;

use super::Metrics;

/// Answers `GET` (and `HEAD`, which HTTP defines as `GET` without the body) with the current
/// value of every metric; any other method gets 405.
#[derive(Debug, Clone)]
pub struct MetricsHandler {
    metrics: Arc<Metrics>,
}

impl MetricsHandler {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        MetricsHandler { metrics }
    }
}

impl Handler for MetricsHandler {
    fn call(&self, request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
        Box::pin(async move {
            if request.method() != Method::GET && request.method() != Method::HEAD {
                let mut response = Response::new(full_body("Method Not Allowed\n"));
                *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
                let headers = response.headers_mut();
                headers.insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
                headers.insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                return response;
            }
            let mut response = Response::new(full_body(self.metrics.encode()));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(prometheus_text::CONTENT_TYPE),
            );
            response
        })
    }
}
