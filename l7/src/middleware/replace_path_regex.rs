//! `replacePathRegex{regex, replacement}`: rewrites the escaped request path with a regular
//! expression when it matches, keeping the query, and sends the original path in
//! `X-Replaced-Path`.
//!
//! The replacement expands `$1`, `$name` and `${name}` as Go's `ReplaceAllString` does
//! (same rules in the `regex` crate: `$name` takes the longest name, `$$` is a `$`). Every
//! match in the path is replaced. A result with a broken `%` escape is answered 500, as
//! Traefik does; characters a path cannot hold are escaped.

use std::sync::Arc;

use http::header::HeaderValue;
use http::{Request, Response};
use regex::Regex;

use super::Middleware;
use super::path_rewrite::{escape_path, raw_path, set_raw_path, with_leading_slash};
use super::replace_path::X_REPLACED_PATH;
use crate::error::ProxyErrorKind;
use crate::handler::{Body, BoxFuture, Handler, SharedHandler, error_response};

/// A configured `replacePathRegex`.
#[derive(Debug, Clone)]
pub struct ReplacePathRegex {
    regex: Regex,
    replacement: String,
}

/// An expression that does not compile.
#[derive(Debug, thiserror::Error)]
#[error("replacePathRegex: invalid regex {pattern:?}: {source}")]
pub struct ReplacePathRegexError {
    pattern: String,
    source: regex::Error,
}

impl ReplacePathRegex {
    /// Both are trimmed of surrounding spaces, as Traefik does.
    pub fn new(
        pattern: &str,
        replacement: &str,
    ) -> Result<ReplacePathRegex, ReplacePathRegexError> {
        let pattern = pattern.trim();
        let regex = Regex::new(pattern).map_err(|source| ReplacePathRegexError {
            pattern: pattern.to_owned(),
            source,
        })?;
        Ok(ReplacePathRegex {
            regex,
            replacement: replacement.trim().to_owned(),
        })
    }
}

impl Middleware for ReplacePathRegex {
    fn wrap(&self, next: SharedHandler) -> SharedHandler {
        Arc::new(Replace {
            config: self.clone(),
            next,
        })
    }
}

struct Replace {
    config: ReplacePathRegex,
    next: SharedHandler,
}

impl Replace {
    /// The new escaped path, `Ok(None)` when the path does not match.
    fn rewrite(&self, raw: &str) -> Result<Option<String>, ProxyErrorKind> {
        // An empty replacement disables the middleware in Traefik.
        if self.config.replacement.is_empty() || !self.config.regex.is_match(raw) {
            return Ok(None);
        }
        let replaced = self.config.regex.replace_all(raw, &self.config.replacement);
        let escaped = escape_path(&replaced).map_err(|_| ProxyErrorKind::Internal)?;
        Ok(Some(with_leading_slash(&escaped).into_owned()))
    }
}

impl Handler for Replace {
    fn call(&self, mut request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
        let raw = raw_path(&request);
        let rewritten = match self.rewrite(raw) {
            Ok(Some(path)) => path,
            Ok(None) => return self.next.call(request),
            Err(kind) => return Box::pin(async move { error_response(kind) }),
        };
        let original = HeaderValue::from_str(raw);
        if let Err(kind) = set_raw_path(&mut request, &rewritten) {
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
    use http::StatusCode;

    fn replace(pattern: &str, replacement: &str) -> ReplacePathRegex {
        ReplacePathRegex::new(pattern, replacement).unwrap()
    }

    #[tokio::test]
    async fn groups_are_expanded_and_the_original_forwarded() {
        let mw = replace("^/foo/(.*)", "/bar/$1");
        let (_, uri, _, replaced) = through(&mw, "/foo/a%2Fb?x=1").await;
        assert_eq!(
            (uri.as_str(), replaced.as_str()),
            ("/bar/a%2Fb?x=1", "/foo/a%2Fb")
        );
    }

    #[tokio::test]
    async fn named_groups_expand_like_go() {
        let mw = replace("^/(?P<ver>v[0-9])/(?P<rest>.*)", "/${rest}/$ver");
        assert_eq!(through(&mw, "/v1/users").await.1, "/users/v1");
        // `$verx` is the (missing) group `verx`, not `$ver` followed by `x`.
        let mw = replace("^/(?P<ver>v[0-9])", "/$verx");
        assert_eq!(through(&mw, "/v1").await.1, "/");
    }

    #[tokio::test]
    async fn every_match_is_replaced() {
        let mw = replace("a", "b");
        assert_eq!(through(&mw, "/aa/a").await.1, "/bb/b");
    }

    #[tokio::test]
    async fn path_that_does_not_match_passes_without_header() {
        let mw = replace("^/foo", "/bar");
        let (_, uri, _, replaced) = through(&mw, "/other").await;
        assert_eq!((uri.as_str(), replaced.as_str()), ("/other", ""));
    }

    #[tokio::test]
    async fn replacement_with_a_broken_escape_is_an_internal_error() {
        let mw = replace("^/(.*)", "/100%");
        assert_eq!(
            through(&mw, "/x").await.0,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[tokio::test]
    async fn result_characters_a_path_cannot_hold_are_escaped() {
        let mw = replace("^/x", "/a b?");
        assert_eq!(through(&mw, "/x?q=1").await.1, "/a%20b%3F?q=1");
    }

    #[test]
    fn invalid_regex_names_the_pattern() {
        let err = ReplacePathRegex::new("/(a", "/").unwrap_err();
        assert!(err.to_string().contains("\"/(a\""), "{err}");
    }
}
