//! `ping@internal`: `200 OK` while serving, `terminatingStatusCode` once shutdown began, so
//! that a load balancer in front stops sending new connections during the grace period.

use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Request, Response, StatusCode};
use l7::handler::{Body, BoxFuture, Handler, full_body};
use tokio::sync::watch;

/// Answers any method on `/ping` with the status and its reason phrase as the body, as
/// Traefik does.
pub struct PingHandler {
    terminating: watch::Receiver<bool>,
    terminating_status: StatusCode,
}

impl PingHandler {
    /// `terminating` turns true when shutdown begins; `terminating_status` is
    /// `ping.terminatingStatusCode` (503 when it is not a valid HTTP status).
    pub fn new(terminating: watch::Receiver<bool>, terminating_status: u16) -> PingHandler {
        PingHandler {
            terminating,
            terminating_status: StatusCode::from_u16(terminating_status)
                .unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
        }
    }
}

impl Handler for PingHandler {
    fn call(&self, _request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
        let status = if *self.terminating.borrow() {
            self.terminating_status
        } else {
            StatusCode::OK
        };
        let mut response = Response::new(full_body(status.canonical_reason().unwrap_or("")));
        *response.status_mut() = status;
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        Box::pin(async move { response })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;
    use http_body_util::BodyExt;
    use l7::handler::empty_body;

    async fn ping(handler: &PingHandler, method: Method) -> (StatusCode, String) {
        let mut request = Request::new(empty_body());
        *request.method_mut() = method;
        let response = handler.call(request).await;
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn ping_answers_ok_to_any_method_until_terminating() {
        let (tx, rx) = watch::channel(false);
        let handler = PingHandler::new(rx, 503);
        assert_eq!(
            ping(&handler, Method::GET).await,
            (StatusCode::OK, "OK".into())
        );
        assert_eq!(
            ping(&handler, Method::POST).await,
            (StatusCode::OK, "OK".into())
        );
        tx.send(true).unwrap();
        assert_eq!(
            ping(&handler, Method::HEAD).await,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "Service Unavailable".into()
            )
        );
    }

    #[tokio::test]
    async fn ping_uses_the_configured_terminating_status() {
        let (_tx, rx) = watch::channel(true);
        let handler = PingHandler::new(rx.clone(), 500);
        assert_eq!(
            ping(&handler, Method::GET).await,
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal Server Error".into()
            )
        );
        let invalid = PingHandler::new(rx, 42);
        assert_eq!(
            ping(&invalid, Method::GET).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
