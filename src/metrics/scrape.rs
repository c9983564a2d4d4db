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
            // Requests that have ended are counted before the scrape shows them.
            l7::observe::flush_reports();
            let mut response = Response::new(full_body(self.metrics.encode()));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(prometheus_text::CONTENT_TYPE),
            );
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use bytes::Bytes;
    use http::header::HOST;
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::TokioExecutor;
    use l4::tcp::dispatch::HttpConn;
    use l7::handler::{Noop, SharedHandler, empty_body};
    use l7::router::{Route, Table};
    use l7::rule::HttpRule;
    use l7::server::{EntrypointConfig, HttpEntrypoint, HttpRoutes, RouteTarget};
    use tokio::net::TcpListener;

    use super::*;
    use crate::config::static_cfg::Prometheus;
    use crate::metrics::tests::{parse, value};

    fn handler() -> MetricsHandler {
        MetricsHandler::new(Arc::new(Metrics::new(&Prometheus::default()).unwrap()))
    }

    async fn body_text(response: Response<Body>) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn get_answers_the_prometheus_text_format() {
        let handler = handler();
        handler.metrics.config_reload(true);
        let response = handler.call(Request::new(empty_body())).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[CONTENT_TYPE],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        let text = body_text(response).await;
        assert!(
            text.contains("# TYPE sallyport_config_reloads_total counter\n"),
            "{text}"
        );
        assert_eq!(
            value(&parse(&text), "sallyport_config_reloads_total"),
            Some(1.0)
        );
    }

    #[tokio::test]
    async fn other_methods_than_get_and_head_get_405() {
        let handler = handler();
        for method in [Method::POST, Method::PUT, Method::DELETE] {
            let mut request = Request::new(empty_body());
            *request.method_mut() = method;
            let response = handler.call(request).await;
            assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
            assert_eq!(response.headers()[ALLOW], "GET, HEAD");
        }
        let mut head = Request::new(empty_body());
        *head.method_mut() = Method::HEAD;
        assert_eq!(handler.call(head).await.status(), StatusCode::OK);
    }

    fn route(name: &str, service: &str, rule: &str, handler: SharedHandler) -> Route<RouteTarget> {
        let rule = HttpRule::compile(rule).unwrap();
        Route {
            name: name.to_owned(),
            priority: rule.default_priority(),
            precedence: 0,
            rule,
            target: RouteTarget {
                router: Arc::from(name),
                service: Some(Arc::from(service)),
                handler,
                tls_option: None,
                retirement: Default::default(),
            },
        }
    }

    /// The whole path: an entrypoint observed by the metrics serves a request over loopback,
    /// and a scrape through the same entrypoint shows it.
    #[tokio::test]
    async fn a_request_served_by_an_observed_entrypoint_shows_in_the_scrape() {
        let metrics = Arc::new(Metrics::new(&Prometheus::default()).unwrap());
        let entrypoint = HttpEntrypoint::new(EntrypointConfig::new("traefik"));
        entrypoint.set_routes(Arc::new(HttpRoutes {
            plain: Table::new(vec![
                route("app@file", "app@file", "Host(`app.test`)", Arc::new(Noop)),
                route(
                    "prometheus@internal",
                    "prometheus@internal",
                    "PathPrefix(`/metrics`)",
                    Arc::new(MetricsHandler::new(metrics.clone())),
                ),
            ]),
            tls: Table::new(Vec::new()),
        }));
        entrypoint.set_observer(Some(metrics.clone()));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let server = entrypoint.clone();
        let accept = tokio::spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                let conn = HttpConn {
                    client: peer,
                    local: addr,
                    sni: None,
                    tls_option: None,
                    peer_certificates: None,
                };
                let server = server.clone();
                tokio::spawn(async move { server.serve(stream, conn).await });
            }
        });
        let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let get = |host: &'static str, path: &'static str| {
            Request::get(format!("http://{addr}{path}"))
                .header(HOST, host)
                .body(Empty::<Bytes>::new())
                .unwrap()
        };
        for _ in 0..3 {
            let response = client.request(get("app.test", "/x")).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            response.into_body().collect().await.unwrap();
        }
        let series = r#"sallyport_service_requests_total{code="200",method="GET",protocol="http",service="app@file"}"#;
        // A record lands when the server has finished with the response, just after the
        // client has it: scrape until the third shows.
        let mut seen = None;
        for _ in 0..100 {
            let response = client.request(get("any.test", "/metrics")).await.unwrap();
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            seen = value(&parse(std::str::from_utf8(&bytes).unwrap()), series);
            if seen == Some(3.0) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(seen, Some(3.0));
        accept.abort();
    }
}
