//! `errors{status, statusRewrites, service, query, errorRequestHeaders}`: replaces a response
//! whose status is listed by a page from another service.
//!
//! As Traefik's: the caught response's headers and body are dropped, and a `GET` of `query`
//! (`{status}` the status sent, `{originalStatus}` the server's, `{url}` the request's path and
//! query, form-escaped) goes to the error service with the client's Host and request headers
//! (only `errorRequestHeaders` when listed). The client gets the page's headers and body
//! under the caught status, or its `statusRewrites` replacement. A failing error service is
//! a page like any other (its `502 Bad Gateway` text, under the caught status). Responses
//! not listed, and protocol switches, pass untouched and unbuffered; the page streams too.

use std::ops::RangeInclusive;
use std::sync::Arc;

use http::header::{CONTENT_TYPE, HOST, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{HeaderMap, Method, Request, Response, StatusCode};

use super::Middleware;
use crate::error::ProxyErrorKind;
use crate::handler::{Body, BoxFuture, ClientInfo, Handler, SharedHandler, empty_body, full_body};

/// A configured `errors`.
#[derive(Clone)]
pub struct ErrorPages {
    /// The statuses replaced by a page.
    pub status: Vec<RangeInclusive<u16>>,
    /// Statuses sent instead of the caught one, first matching range wins.
    pub status_rewrites: Vec<(RangeInclusive<u16>, StatusCode)>,
    /// The service serving the pages.
    pub service: SharedHandler,
    /// The page's path and query, with `{status}`, `{originalStatus}` and `{url}`.
    pub query: String,
    /// The request headers the error service gets; `None`: all of them.
    pub forwarded_headers: Option<Vec<HeaderName>>,
}

impl ErrorPages {
    fn caught(&self, status: StatusCode) -> bool {
        status != StatusCode::SWITCHING_PROTOCOLS
            && self.status.iter().any(|r| r.contains(&status.as_u16()))
    }

    fn sent_status(&self, caught: StatusCode) -> StatusCode {
        self.status_rewrites
            .iter()
            .find(|(range, _)| range.contains(&caught.as_u16()))
            .map_or(caught, |&(_, to)| to)
    }

    /// The page's path and query for a request to `url` caught with `original`, sent as `status`.
    pub fn page_path(&self, status: StatusCode, original: StatusCode, url: &str) -> String {
        let query = format!("/{}", self.query.trim_start_matches('/'));
        query
            .replace("{status}", status.as_str())
            .replace("{originalStatus}", original.as_str())
            .replace("{url}", &form_escape(url))
    }
}

/// Go's `url.QueryEscape`: unreserved bytes as they are, space as `+`, the rest `%XX`.
fn form_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b));
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl Middleware for ErrorPages {
    fn wrap(&self, next: SharedHandler) -> SharedHandler {
        Arc::new(Catching {
            spec: self.clone(),
            next,
        })
    }
}

struct Catching {
    spec: ErrorPages,
    next: SharedHandler,
}

/// What the page request needs from the client's request, taken before it goes on.
struct Origin {
    url: String,
    host: Option<HeaderValue>,
    headers: HeaderMap,
    client: Option<ClientInfo>,
}

impl Origin {
    fn of(request: &Request<Body>, forwarded: Option<&[HeaderName]>) -> Origin {
        let headers = match forwarded {
            None => request.headers().clone(),
            Some(names) => {
                let mut kept = HeaderMap::new();
                for name in names {
                    for value in request.headers().get_all(name) {
                        kept.append(name.clone(), value.clone());
                    }
                }
                kept
            }
        };
        // HTTP/2 clients send `:authority`, kept in the URI rather than a Host header.
        let host = request.headers().get(HOST).cloned().or_else(|| {
            request
                .uri()
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        Origin {
            url: request.uri().path_and_query().map_or_else(
                || request.uri().path().to_owned(),
                |p| p.as_str().to_owned(),
            ),
            host,
            headers,
            client: request.extensions().get::<ClientInfo>().cloned(),
        }
    }
}

impl Handler for Catching {
    fn call(&self, request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
        let origin = Origin::of(&request, self.spec.forwarded_headers.as_deref());
        Box::pin(async move {
            let response = self.next.call(request).await;
            let original = response.status();
            if !self.spec.caught(original) {
                return response;
            }
            let kind = response.extensions().get::<ProxyErrorKind>().copied();
            drop(response);
            let status = self.spec.sent_status(original);
            let mut answer = self.page(origin, status, original).await;
            *answer.status_mut() = status;
            // An outer retry or breaker still sees that the server could not be reached.
            if let Some(kind) = kind {
                answer.extensions_mut().insert(kind);
            }
            answer
        })
    }
}

impl Catching {
    async fn page(
        &self,
        origin: Origin,
        status: StatusCode,
        original: StatusCode,
    ) -> Response<Body> {
        let path = self.spec.page_path(status, original, &origin.url);
        let Ok(path) = path.parse::<PathAndQuery>() else {
            tracing::warn!(path, "errors: the error page path is not a valid URL");
            return status_text(status);
        };
        let mut request = Request::new(empty_body());
        *request.method_mut() = Method::GET;
        *request.uri_mut() = path.into();
        *request.headers_mut() = origin.headers;
        if let Some(host) = origin.host {
            request.headers_mut().insert(HOST, host);
        }
        if let Some(mut client) = origin.client {
            // The page's server is not the request's: nothing is noted for its observation.
            client.notes = None;
            request.extensions_mut().insert(client);
        }
        let page = self.spec.service.call(request).await;
        let (parts, body) = page.into_parts();
        let mut answer = Response::new(body);
        *answer.headers_mut() = parts.headers;
        answer
    }
}

/// Go's `http.Error` with the status text, when no page can be asked for.
fn status_text(status: StatusCode) -> Response<Body> {
    let text = status.canonical_reason().unwrap_or("");
    let mut response = Response::new(full_body(format!("{text}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use http_body_util::BodyExt;

    use super::*;

    /// Answers every request with `status` and records the requests it saw.
    struct Script {
        status: StatusCode,
        seen: Mutex<Vec<(String, HeaderMap)>>,
    }

    impl Handler for Script {
        fn call(&self, request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
            let path = request.uri().to_string();
            self.seen
                .lock()
                .unwrap()
                .push((path.clone(), request.headers().clone()));
            let status = self.status;
            Box::pin(async move {
                let mut response = Response::new(full_body(format!("page {path}")));
                *response.status_mut() = status;
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("text/html"));
                response
            })
        }
    }

    fn script(status: u16) -> Arc<Script> {
        Arc::new(Script {
            status: StatusCode::from_u16(status).unwrap(),
            seen: Mutex::new(Vec::new()),
        })
    }

    fn spec(pages: Arc<Script>) -> ErrorPages {
        ErrorPages {
            status: vec![500..=599, 404..=404],
            status_rewrites: vec![(502..=504, StatusCode::SERVICE_UNAVAILABLE)],
            service: pages,
            query: "/{status}.html?from={originalStatus}&url={url}".into(),
            forwarded_headers: None,
        }
    }

    fn request(uri: &str) -> Request<Body> {
        Request::builder()
            .uri(uri)
            .header(HOST, "app.test")
            .header("cookie", "a=b")
            .body(empty_body())
            .unwrap()
    }

    async fn body(response: Response<Body>) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_caught_status_gets_the_page_under_its_status() {
        let pages = script(200);
        let handler = spec(pages.clone()).wrap(script(500));
        let response = handler.call(request("/a%20b?x=1")).await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.headers()[CONTENT_TYPE], "text/html");
        assert_eq!(
            body(response).await,
            "page /500.html?from=500&url=%2Fa%2520b%3Fx%3D1"
        );
        let seen = pages.seen.lock().unwrap();
        assert_eq!(seen[0].1[HOST], "app.test");
        assert_eq!(seen[0].1["cookie"], "a=b");
    }

    #[tokio::test]
    async fn rewrites_change_the_status_sent_and_asked_for() {
        let handler = spec(script(200)).wrap(script(502));
        let response = handler.call(request("/")).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body(response).await, "page /503.html?from=502&url=%2F");
    }

    #[tokio::test]
    async fn other_statuses_pass_untouched() {
        let pages = script(200);
        let handler = spec(pages.clone()).wrap(script(403));
        let response = handler.call(request("/x")).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(body(response).await, "page /x");
        assert!(pages.seen.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_failing_error_service_answers_under_the_caught_status() {
        let handler = spec(script(502)).wrap(script(404));
        let response = handler.call(request("/missing")).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn only_listed_headers_reach_the_error_service() {
        let pages = script(200);
        let mut listed = spec(pages.clone());
        listed.forwarded_headers = Some(vec![HeaderName::from_static("accept")]);
        let handler = listed.wrap(script(500));
        let mut req = request("/");
        req.headers_mut()
            .insert("accept", HeaderValue::from_static("text/html"));
        handler.call(req).await;
        let seen = pages.seen.lock().unwrap();
        assert_eq!(seen[0].1["accept"], "text/html");
        assert_eq!(seen[0].1[HOST], "app.test");
        assert!(!seen[0].1.contains_key("cookie"));
    }

    #[test]
    fn an_empty_query_asks_for_the_root() {
        let mut plain = spec(script(200));
        plain.query = String::new();
        assert_eq!(
            plain.page_path(StatusCode::NOT_FOUND, StatusCode::NOT_FOUND, "/x"),
            "/"
        );
        plain.query = "errors/{status}".into();
        assert_eq!(
            plain.page_path(StatusCode::NOT_FOUND, StatusCode::NOT_FOUND, "/x"),
            "/errors/404"
        );
    }

    #[test]
    fn form_escape_matches_go_query_escape() {
        assert_eq!(form_escape("/a b/c?d=é&e"), "%2Fa+b%2Fc%3Fd%3D%C3%A9%26e");
        assert_eq!(form_escape("AZaz09-_.~"), "AZaz09-_.~");
    }
}
