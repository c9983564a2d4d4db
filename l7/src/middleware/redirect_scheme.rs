//! `redirectScheme{scheme, port, permanent}`: sends the client to the same URL with another
//! scheme (and port), as the entrypoint redirection `http.redirections.entryPoint` does.
//!
//! Status as Traefik's: GET gets 302 (301 when permanent), any other method 307 (308), so
//! that a POST is repeated as a POST. A request already on the target URL passes through.

use std::sync::Arc;

use http::header::{HOST, LOCATION};
use http::{Method, Request, Response, StatusCode};

use super::Middleware;
use crate::forwarded::X_FORWARDED_PROTO;
use crate::handler::{Body, BoxFuture, ClientInfo, Handler, SharedHandler, empty_body};

/// A configured `redirectScheme`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectScheme {
    /// Target scheme, e.g. `https`.
    pub scheme: String,
    /// Target port; empty drops the port, as do 80 for http and 443 for https.
    pub port: String,
    pub permanent: bool,
}

impl Middleware for RedirectScheme {
    fn wrap(&self, next: SharedHandler) -> SharedHandler {
        Arc::new(Redirect {
            config: self.clone(),
            next,
        })
    }
}

struct Redirect {
    config: RedirectScheme,
    next: SharedHandler,
}

impl Handler for Redirect {
    fn call(&self, request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
        match self.location(&request) {
            Some(location) => {
                let status = redirect_status(request.method(), self.config.permanent);
                Box::pin(async move {
                    let mut response = Response::new(empty_body());
                    *response.status_mut() = status;
                    if let Ok(value) = location.parse() {
                        response.headers_mut().insert(LOCATION, value);
                    }
                    response
                })
            }
            None => self.next.call(request),
        }
    }
}

impl Redirect {
    /// The URL to send the client to, or `None` when it is already there.
    fn location(&self, request: &Request<Body>) -> Option<String> {
        let current_scheme = request_scheme(request);
        let raw_host = request
            .uri()
            .authority()
            .map(|a| a.as_str())
            .or_else(|| request.headers().get(HOST).and_then(|h| h.to_str().ok()))
            .unwrap_or("");
        let (host, current_port) = split_host_port(raw_host);
        let scheme = self.config.scheme.to_ascii_lowercase();
        let port = match (scheme.as_str(), self.config.port.as_str()) {
            ("http", "80") | ("https", "443") | (_, "") => None,
            (_, port) => Some(port),
        };
        if scheme == current_scheme && port == current_port {
            return None;
        }
        let path = request
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        Some(match port {
            Some(port) => format!("{scheme}://{host}:{port}{path}"),
            None => format!("{scheme}://{host}{path}"),
        })
    }
}

/// `https` for TLS connections and for requests a trusted proxy marked as HTTPS.
pub(super) fn request_scheme(request: &Request<Body>) -> &'static str {
    let tls = request
        .extensions()
        .get::<ClientInfo>()
        .is_some_and(|info| info.tls);
    let forwarded_https = request
        .headers()
        .get(X_FORWARDED_PROTO)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    if tls || forwarded_https {
        "https"
    } else {
        "http"
    }
}

/// `host[:port]` and `[v6][:port]` into the host as written (brackets kept) and the port.
fn split_host_port(authority: &str) -> (&str, Option<&str>) {
    let port_start = if authority.starts_with('[') {
        authority.find(']').map(|end| end + 1)
    } else {
        authority.find(':')
    };
    match port_start {
        Some(i) if authority[i..].starts_with(':') => (&authority[..i], Some(&authority[i + 1..])),
        _ => (authority, None),
    }
}

pub(super) fn redirect_status(method: &Method, permanent: bool) -> StatusCode {
    match (method == Method::GET, permanent) {
        (true, false) => StatusCode::FOUND,
        (true, true) => StatusCode::MOVED_PERMANENTLY,
        (false, false) => StatusCode::TEMPORARY_REDIRECT,
        (false, true) => StatusCode::PERMANENT_REDIRECT,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::Noop;

    fn redirect(scheme: &str, port: &str, permanent: bool) -> SharedHandler {
        RedirectScheme {
            scheme: scheme.into(),
            port: port.into(),
            permanent,
        }
        .wrap(Arc::new(Noop))
    }

    fn request(method: Method, host: &str, path: &str) -> Request<Body> {
        Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, host)
            .body(empty_body())
            .unwrap()
    }

    async fn answer(handler: &SharedHandler, req: Request<Body>) -> (StatusCode, Option<String>) {
        let response = handler.call(req).await;
        let location = response
            .headers()
            .get(LOCATION)
            .map(|v| v.to_str().unwrap().to_owned());
        (response.status(), location)
    }

    #[tokio::test]
    async fn get_is_sent_to_https_without_the_old_port() {
        let handler = redirect("https", "", true);
        let got = answer(&handler, request(Method::GET, "example.com:8000", "/a?b=c")).await;
        assert_eq!(
            got,
            (
                StatusCode::MOVED_PERMANENTLY,
                Some("https://example.com/a?b=c".into())
            )
        );
    }

    #[tokio::test]
    async fn post_keeps_its_method_with_307_and_308() {
        let temporary = redirect("https", "8443", false);
        let got = answer(&temporary, request(Method::POST, "[::1]:80", "/x")).await;
        assert_eq!(
            got,
            (
                StatusCode::TEMPORARY_REDIRECT,
                Some("https://[::1]:8443/x".into())
            )
        );
        let permanent = redirect("https", "443", true);
        let got = answer(&permanent, request(Method::PUT, "a.test", "/")).await;
        assert_eq!(
            got,
            (
                StatusCode::PERMANENT_REDIRECT,
                Some("https://a.test/".into())
            )
        );
    }

    #[tokio::test]
    async fn request_already_on_the_target_passes_through() {
        let handler = redirect("http", "", false);
        let got = answer(&handler, request(Method::GET, "a.test", "/")).await;
        assert_eq!(got, (StatusCode::OK, None));
    }

    #[test]
    fn host_and_port_split() {
        assert_eq!(split_host_port("a:1"), ("a", Some("1")));
        assert_eq!(split_host_port("a"), ("a", None));
        assert_eq!(split_host_port("[::1]:9"), ("[::1]", Some("9")));
        assert_eq!(split_host_port("[::1]"), ("[::1]", None));
    }
}
