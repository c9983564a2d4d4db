//! `redirectRegex{regex, replacement, permanent}`: sends the client elsewhere when a regular
//! expression matches the full request URL, `scheme://host[:port]/path?query`.
//!
//! The scheme is `https` on TLS connections and when a trusted proxy said so in
//! `X-Forwarded-Proto`, `http` otherwise; the host is the request's authority (or `Host`)
//! with its port. Statuses are those of `redirectScheme`: 302/307, 301/308 when permanent.
//! A replacement that gives back the same URL lets the request through; one that is not a
//! valid `Location` value (a CR or LF from the request, say) is answered 500.

use std::sync::Arc;

use http::header::{HOST, HeaderValue, LOCATION};
use http::{Request, Response};
use regex::Regex;

use super::Middleware;
use super::redirect_scheme::{redirect_status, request_scheme};
use crate::error::ProxyErrorKind;
use crate::handler::{Body, BoxFuture, Handler, SharedHandler, empty_body, error_response};

/// A configured `redirectRegex`.
#[derive(Debug, Clone)]
pub struct RedirectRegex {
    regex: Regex,
    replacement: String,
    permanent: bool,
}

/// An expression that does not compile.
#[derive(Debug, thiserror::Error)]
#[error("redirectRegex: invalid regex {pattern:?}: {source}")]
pub struct RedirectRegexError {
    pattern: String,
    source: regex::Error,
}

impl RedirectRegex {
    pub fn new(
        pattern: &str,
        replacement: &str,
        permanent: bool,
    ) -> Result<RedirectRegex, RedirectRegexError> {
        let regex = Regex::new(pattern).map_err(|source| RedirectRegexError {
            pattern: pattern.to_owned(),
            source,
        })?;
        Ok(RedirectRegex {
            regex,
            replacement: replacement.to_owned(),
            permanent,
        })
    }
}

impl Middleware for RedirectRegex {
    fn wrap(&self, next: SharedHandler) -> SharedHandler {
        Arc::new(Redirect {
            config: self.clone(),
            next,
        })
    }
}

struct Redirect {
    config: RedirectRegex,
    next: SharedHandler,
}

/// Where to send the client.
enum Target {
    Stay,
    Location(HeaderValue),
    Invalid,
}

impl Redirect {
    fn target(&self, request: &Request<Body>) -> Target {
        let url = full_url(request);
        if !self.config.regex.is_match(&url) {
            return Target::Stay;
        }
        let replaced = self
            .config
            .regex
            .replace_all(&url, &self.config.replacement);
        if replaced == url {
            return Target::Stay;
        }
        match HeaderValue::from_str(&replaced) {
            Ok(value) => Target::Location(value),
            Err(_) => Target::Invalid,
        }
    }
}

impl Handler for Redirect {
    fn call(&self, request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
        match self.target(&request) {
            Target::Stay => self.next.call(request),
            Target::Invalid => Box::pin(async { error_response(ProxyErrorKind::Internal) }),
            Target::Location(location) => {
                let status = redirect_status(request.method(), self.config.permanent);
                Box::pin(async move {
                    let mut response = Response::new(empty_body());
                    *response.status_mut() = status;
                    response.headers_mut().insert(LOCATION, location);
                    response
                })
            }
        }
    }
}

/// `scheme://host[:port]/path?query` as the client asked for it.
fn full_url(request: &Request<Body>) -> String {
    let host = request
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| request.headers().get(HOST).and_then(|h| h.to_str().ok()))
        .unwrap_or("");
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    format!("{}://{host}{path}", request_scheme(request))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forwarded::X_FORWARDED_PROTO;
    use crate::handler::{ClientInfo, Noop};
    use http::{Method, StatusCode};

    fn redirect(pattern: &str, replacement: &str, permanent: bool) -> SharedHandler {
        RedirectRegex::new(pattern, replacement, permanent)
            .unwrap()
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
    async fn full_url_is_rewritten_with_groups() {
        let handler = redirect(
            "^http://localhost:8080/(.*)",
            "https://example.com/${1}",
            false,
        );
        let got = answer(&handler, request(Method::GET, "localhost:8080", "/a/b?c=d")).await;
        assert_eq!(
            got,
            (
                StatusCode::FOUND,
                Some("https://example.com/a/b?c=d".into())
            )
        );
    }

    #[tokio::test]
    async fn statuses_follow_method_and_permanence() {
        let temporary = redirect("^http://a.test/old", "http://a.test/new", false);
        let permanent = redirect("^http://a.test/old", "http://a.test/new", true);
        let post = || request(Method::POST, "a.test", "/old");
        let get = || request(Method::GET, "a.test", "/old");
        assert_eq!(
            answer(&temporary, post()).await.0,
            StatusCode::TEMPORARY_REDIRECT
        );
        assert_eq!(
            answer(&permanent, get()).await.0,
            StatusCode::MOVED_PERMANENTLY
        );
        assert_eq!(
            answer(&permanent, post()).await.0,
            StatusCode::PERMANENT_REDIRECT
        );
    }

    #[tokio::test]
    async fn scheme_comes_from_tls_or_forwarded_proto() {
        let handler = redirect("^https://(.*)", "http://$1", false);
        let mut forwarded = request(Method::GET, "a.test", "/x");
        forwarded
            .headers_mut()
            .insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        assert_eq!(
            answer(&handler, forwarded).await.1.as_deref(),
            Some("http://a.test/x")
        );
        let mut tls = request(Method::GET, "a.test", "/y");
        tls.extensions_mut().insert(ClientInfo {
            peer: "127.0.0.1:1".parse().unwrap(),
            local: "127.0.0.1:2".parse().unwrap(),
            tls: true,
            entrypoint: "websecure".into(),
            notes: None,
        });
        assert_eq!(
            answer(&handler, tls).await.1.as_deref(),
            Some("http://a.test/y")
        );
        let plain = request(Method::GET, "a.test", "/z");
        assert_eq!(answer(&handler, plain).await, (StatusCode::OK, None));
    }

    #[tokio::test]
    async fn same_url_after_replacement_passes_through() {
        let handler = redirect("^(http://.*)$", "$1", false);
        let got = answer(&handler, request(Method::GET, "a.test", "/")).await;
        assert_eq!(got, (StatusCode::OK, None));
    }

    #[tokio::test]
    async fn replacement_that_is_no_header_value_is_an_internal_error() {
        let handler = redirect("^http://a.test/(.*)", "http://b.test/\n$1", false);
        let got = answer(&handler, request(Method::GET, "a.test", "/x")).await;
        assert_eq!(got, (StatusCode::INTERNAL_SERVER_ERROR, None));
    }

    #[test]
    fn invalid_regex_names_the_pattern() {
        let err = RedirectRegex::new("^(a", "/", false).unwrap_err();
        assert!(err.to_string().contains("\"^(a\""), "{err}");
    }
}
