//! `replacePath{path}`: replaces the whole request path, keeping the query, and tells the
//! backend the original (escaped) path in `X-Replaced-Path`.

use std::sync::Arc;

use http::header::HeaderValue;
use http::{HeaderName, Request, Response};

use super::Middleware;
use super::path_rewrite::{PathError, escape_path, raw_path, set_raw_path};
use crate::handler::{Body, BoxFuture, Handler, SharedHandler, error_response};

/// The header that carries the path before a replacement.
pub const X_REPLACED_PATH: HeaderName = HeaderName::from_static("x-replaced-path");

/// A configured `replacePath`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplacePath {
    escaped: String,
}

impl ReplacePath {
    /// `path` is taken as an escaped path, as Traefik takes it (`/a%20b` is `/a b`);
    /// characters a URI path cannot hold are escaped, and a broken `%` escape is an error.
    pub fn new(path: &str) -> Result<ReplacePath, PathError> {
        Ok(ReplacePath {
            escaped: escape_path(path)?,
        })
    }
}

impl Middleware for ReplacePath {
    fn wrap(&self, next: SharedHandler) -> SharedHandler {
        Arc::new(Replace {
            escaped: self.escaped.clone(),
            next,
        })
    }
}

struct Replace {
    escaped: String,
    next: SharedHandler,
}

impl Handler for Replace {
    fn call(&self, mut request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
        // The path came from a parsed URI: it is always a valid header value.
        let original = HeaderValue::from_str(raw_path(&request));
        if let Err(kind) = set_raw_path(&mut request, &self.escaped) {
            return Box::pin(async move { error_response(kind) });
        }
        if let Ok(original) = original {
            request.headers_mut().append(X_REPLACED_PATH, original);
        }
        self.next.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::middleware::path_rewrite::test_support::through;

    #[tokio::test]
    async fn path_is_replaced_and_the_original_forwarded() {
        let mw = ReplacePath::new("/new/place").unwrap();
        let (_, uri, _, replaced) = through(&mw, "/old%2Fone?x=1").await;
        assert_eq!(
            (uri.as_str(), replaced.as_str()),
            ("/new/place?x=1", "/old%2Fone")
        );
    }

    #[tokio::test]
    async fn configured_escapes_are_kept_and_other_characters_escaped() {
        let mw = ReplacePath::new("/a%2Fb c").unwrap();
        assert_eq!(through(&mw, "/").await.1, "/a%2Fb%20c");
    }

    #[test]
    fn broken_escape_is_refused() {
        assert!(ReplacePath::new("/50%").is_err());
    }
}
