//! `stripPrefixRegex{regex}`: removes the start of the path that the first matching regular
//! expression finds there, and sends it to the backend in `X-Forwarded-Prefix`.
//!
//! As in Traefik, expressions run on the decoded path and a match counts only when it is a
//! non-empty prefix of the path. The same characters are cut from the escaped path the
//! backend receives; the query is kept.

use std::sync::Arc;

use http::header::HeaderValue;
use http::{Request, Response};
use regex::bytes::Regex;

use super::Middleware;
use super::path_rewrite::{decode, raw_path, raw_prefix_len, set_raw_path, with_leading_slash};
use super::strip_prefix::X_FORWARDED_PREFIX;
use crate::handler::{Body, BoxFuture, Handler, SharedHandler, error_response};

/// A configured `stripPrefixRegex`.
#[derive(Debug, Clone)]
pub struct StripPrefixRegex {
    regexes: Vec<Regex>,
}

/// An expression that does not compile.
#[derive(Debug, thiserror::Error)]
#[error("stripPrefixRegex: invalid regex {pattern:?}: {source}")]
pub struct StripPrefixRegexError {
    pattern: String,
    source: regex::Error,
}

impl StripPrefixRegex {
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<StripPrefixRegex, StripPrefixRegexError> {
        let regexes = patterns
            .iter()
            .map(|pattern| {
                // Trimmed as Traefik does.
                let pattern = pattern.as_ref().trim();
                Regex::new(pattern).map_err(|source| StripPrefixRegexError {
                    pattern: pattern.to_owned(),
                    source,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(StripPrefixRegex { regexes })
    }
}

impl Middleware for StripPrefixRegex {
    fn wrap(&self, next: SharedHandler) -> SharedHandler {
        Arc::new(Strip {
            regexes: self.regexes.clone(),
            next,
        })
    }
}

struct Strip {
    regexes: Vec<Regex>,
    next: SharedHandler,
}

impl Strip {
    /// The path after the cut and the header value of what was cut, if a regex matches.
    fn strip(&self, raw: &str) -> Option<(String, Option<HeaderValue>)> {
        let decoded = decode(raw);
        self.regexes.iter().find_map(|regex| {
            let found = regex.find(&decoded)?;
            let prefix = found.as_bytes();
            if prefix.is_empty() || !decoded.starts_with(prefix) {
                return None;
            }
            let cut = raw_prefix_len(raw, prefix)?;
            // A decoded prefix may hold bytes a header cannot (`%0A`): send it escaped then.
            let header = HeaderValue::from_bytes(prefix)
                .or_else(|_| HeaderValue::from_str(&raw[..cut]))
                .ok();
            Some((with_leading_slash(&raw[cut..]).into_owned(), header))
        })
    }
}

impl Handler for Strip {
    fn call(&self, mut request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
        if let Some((stripped, header)) = self.strip(raw_path(&request)) {
            if let Err(kind) = set_raw_path(&mut request, &stripped) {
                return Box::pin(async move { error_response(kind) });
            }
            if let Some(value) = header {
                request.headers_mut().append(X_FORWARDED_PREFIX, value);
            }
        }
        self.next.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::middleware::path_rewrite::test_support::through;

    fn strip(patterns: &[&str]) -> StripPrefixRegex {
        StripPrefixRegex::new(patterns).unwrap()
    }

    #[tokio::test]
    async fn matched_prefix_is_removed_and_forwarded() {
        let mw = strip(&["/nomatch", "/api/v[0-9]+"]);
        let (_, uri, prefix, _) = through(&mw, "/api/v12/users?x=1").await;
        assert_eq!((uri.as_str(), prefix.as_str()), ("/users?x=1", "/api/v12"));
        assert_eq!(through(&mw, "/api/v1").await.1, "/");
    }

    #[tokio::test]
    async fn match_that_is_not_at_the_start_strips_nothing() {
        let mw = strip(&["/v[0-9]"]);
        let (_, uri, prefix, _) = through(&mw, "/api/v1/x").await;
        assert_eq!((uri.as_str(), prefix.as_str()), ("/api/v1/x", ""));
    }

    #[tokio::test]
    async fn regex_runs_on_the_decoded_path_and_the_cut_is_escaped() {
        let mw = strip(&["^/a b/"]);
        let (_, uri, prefix, _) = through(&mw, "/a%20b/c%2Fd").await;
        assert_eq!((uri.as_str(), prefix.as_str()), ("/c%2Fd", "/a b/"));
    }

    #[tokio::test]
    async fn prefix_with_a_newline_is_forwarded_escaped() {
        let mw = strip(&["^/x\\n"]);
        let (_, uri, prefix, _) = through(&mw, "/x%0A/y").await;
        assert_eq!((uri.as_str(), prefix.as_str()), ("/y", "/x%0A"));
    }

    #[test]
    fn invalid_regex_names_the_pattern() {
        let err = StripPrefixRegex::new(&["/(a"]).unwrap_err();
        assert!(err.to_string().contains("\"/(a\""), "{err}");
    }
}
