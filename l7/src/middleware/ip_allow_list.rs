//! `ipAllowList{sourceRange, ipStrategy, rejectStatusCode}` (and the deprecated `ipWhiteList`):
//! only requests whose source address, as the [`IpStrategy`] finds it, is in one of the
//! ranges pass; others get `rejectStatusCode` (403) with the status text as body, as Traefik.

use std::net::IpAddr;
use std::sync::Arc;

use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Request, Response, StatusCode};
use ipnet::IpNet;

use super::Middleware;
use super::ip_strategy::IpStrategy;
use crate::handler::{Body, BoxFuture, ClientInfo, Handler, SharedHandler, full_body};

/// A configured `ipAllowList`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpAllowList {
    pub source_range: Vec<IpNet>,
    pub ip_strategy: IpStrategy,
    /// Traefik's default is 403.
    pub reject_status: StatusCode,
}

impl Middleware for IpAllowList {
    fn wrap(&self, next: SharedHandler) -> SharedHandler {
        Arc::new(AllowList {
            config: self.clone(),
            next,
        })
    }
}

struct AllowList {
    config: IpAllowList,
    next: SharedHandler,
}

impl Handler for AllowList {
    fn call(&self, request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
        let source = request.extensions().get::<ClientInfo>().and_then(|info| {
            self.config
                .ip_strategy
                .client_ip(request.headers(), info.peer.ip())
        });
        if source.is_some_and(|ip| self.allows(ip)) {
            return self.next.call(request);
        }
        tracing::debug!(source = ?source, "ipAllowList: rejected");
        let status = self.config.reject_status;
        Box::pin(async move { status_response(status) })
    }
}

impl AllowList {
    fn allows(&self, ip: IpAddr) -> bool {
        self.config.source_range.iter().any(|net| net.contains(&ip))
    }
}

/// A response with `status` and its reason phrase as a plain-text body, as Go's `http.Error`.
pub(crate) fn status_response(status: StatusCode) -> Response<Body> {
    let text = status.canonical_reason().unwrap_or("");
    let mut response = Response::new(full_body(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forwarded::X_FORWARDED_FOR;
    use crate::handler::{Noop, empty_body};
    use http_body_util::BodyExt;

    fn allow_list(ranges: &[&str], strategy: IpStrategy, status: StatusCode) -> SharedHandler {
        IpAllowList {
            source_range: ranges.iter().map(|r| r.parse().unwrap()).collect(),
            ip_strategy: strategy,
            reject_status: status,
        }
        .wrap(Arc::new(Noop))
    }

    fn from(peer: &str, xff: Option<&str>) -> Request<Body> {
        let mut request = Request::new(empty_body());
        let peer = format!("{peer}:4000").parse().unwrap();
        request.extensions_mut().insert(ClientInfo {
            peer,
            local: "127.0.0.1:80".parse().unwrap(),
            tls: false,
            entrypoint: "web".into(),
            notes: None,
        });
        if let Some(xff) = xff {
            request
                .headers_mut()
                .insert(X_FORWARDED_FOR, xff.parse().unwrap());
        }
        request
    }

    #[tokio::test]
    async fn peer_in_range_passes_and_others_get_403_forbidden() {
        let handler = allow_list(
            &["192.0.2.0/24"],
            IpStrategy::default(),
            StatusCode::FORBIDDEN,
        );
        let ok = handler.call(from("192.0.2.7", None)).await;
        assert_eq!(ok.status(), StatusCode::OK);
        let denied = handler.call(from("198.51.100.1", None)).await;
        assert_eq!(denied.status(), StatusCode::FORBIDDEN);
        let body = denied.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"Forbidden");
    }

    #[tokio::test]
    async fn depth_reads_forwarded_for_and_status_is_configurable() {
        let strategy = IpStrategy {
            depth: 2,
            ..IpStrategy::default()
        };
        let handler = allow_list(&["10.0.0.0/8"], strategy, StatusCode::NOT_FOUND);
        // The last entry is the peer, appended by the entrypoint.
        let ok = handler
            .call(from("127.0.0.1", Some("10.0.0.5, 172.16.0.1, 127.0.0.1")))
            .await;
        assert_eq!(ok.status(), StatusCode::OK);
        let denied = handler
            .call(from("127.0.0.1", Some("172.16.0.1, 10.0.0.5, 127.0.0.1")))
            .await;
        assert_eq!(denied.status(), StatusCode::NOT_FOUND);
        let too_short = handler.call(from("10.0.0.1", Some("10.0.0.1"))).await;
        assert_eq!(too_short.status(), StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn request_without_client_info_is_rejected() {
        let handler = allow_list(&["0.0.0.0/0"], IpStrategy::default(), StatusCode::FORBIDDEN);
        let response = handler.call(Request::new(empty_body())).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
    }
}
