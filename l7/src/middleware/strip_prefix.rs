//! `stripPrefix{prefixes}`: removes the first listed prefix the request path starts with
//! and tells the backend what was removed in `X-Forwarded-Prefix`.
//!
//! Prefixes are matched against the decoded path, as Traefik does, and the same characters
//! are cut from the escaped path the backend receives, so `/api%2Fv1` stays escaped. What
//! remains always starts with `/`; the query is kept.

use std::sync::Arc;

use http::header::HeaderValue;
use http::{HeaderName, Request, Response};

use super::Middleware;
use super::path_rewrite::{raw_path, raw_prefix_len, set_raw_path, with_leading_slash};
use crate::handler::{Body, BoxFuture, Handler, SharedHandler, error_response};

/// The header that carries the stripped prefix to the backend.
pub const X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");

/// A configured `stripPrefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripPrefix {
    /// Tried in order; the first the path starts with is removed.
    pub prefixes: Vec<String>,
}

impl Middleware for StripPrefix {
    fn wrap(&self, next: SharedHandler) -> SharedHandler {
        Arc::new(Strip {
            prefixes: self
                .prefixes
                .iter()
                .map(|p| (p.clone(), HeaderValue::from_str(p.trim()).ok()))
                .collect(),
            next,
        })
    }
}

struct Strip {
    /// Each prefix with its header value (`None` when it cannot be one: no header is sent).
    prefixes: Vec<(String, Option<HeaderValue>)>,
    next: SharedHandler,
}

impl Handler for Strip {
    fn call(&self, mut request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
        let raw = raw_path(&request);
        let found = self.prefixes.iter().find_map(|(prefix, header)| {
            let cut = raw_prefix_len(raw, prefix.as_bytes())?;
            Some((with_leading_slash(&raw[cut..]).into_owned(), header))
        });
        if let Some((stripped, header)) = found {
            if let Err(kind) = set_raw_path(&mut request, &stripped) {
                return Box::pin(async move { error_response(kind) });
            }
            if let Some(value) = header {
                request
                    .headers_mut()
                    .append(X_FORWARDED_PREFIX, value.clone());
            }
        }
        self.next.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::middleware::path_rewrite::test_support::through;
    use http::StatusCode;

    fn strip(prefixes: &[&str]) -> StripPrefix {
        StripPrefix {
            prefixes: prefixes.iter().map(|p| (*p).to_owned()).collect(),
        }
    }

    #[tokio::test]
    async fn first_matching_prefix_is_removed_and_forwarded() {
        let mw = strip(&["/foo", "/api"]);
        let (status, uri, prefix, _) = through(&mw, "/api/users?x=1").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!((uri.as_str(), prefix.as_str()), ("/users?x=1", "/api"));
    }

    #[tokio::test]
    async fn stripped_path_keeps_a_leading_slash() {
        let mw = strip(&["/api/"]);
        assert_eq!(through(&mw, "/api/users").await.1, "/users");
        assert_eq!(through(&mw, "/api/").await.1, "/");
        let mw = strip(&["/api"]);
        assert_eq!(through(&mw, "/api").await.1, "/");
        assert_eq!(through(&mw, "/apiv2").await.1, "/v2");
    }

    #[tokio::test]
    async fn escaped_characters_are_matched_decoded_and_stay_escaped() {
        let mw = strip(&["/a b"]);
        assert_eq!(through(&mw, "/a%20b/c%2Fd").await.1, "/c%2Fd");
        let mw = strip(&["/a/b"]);
        assert_eq!(through(&mw, "/a%2Fb/x").await.1, "/x");
    }

    #[tokio::test]
    async fn path_without_a_listed_prefix_passes_unchanged() {
        let mw = strip(&["/api"]);
        let (_, uri, prefix, _) = through(&mw, "/other?q").await;
        assert_eq!((uri.as_str(), prefix.as_str()), ("/other?q", ""));
    }
}
