//! `addPrefix{prefix}`: puts a prefix in front of the request path before it goes on. The
//! query is kept and the result starts with `/`.

use std::sync::Arc;

use http::{Request, Response};

use super::Middleware;
use super::path_rewrite::{escape_decoded, raw_path, set_raw_path, with_leading_slash};
use crate::handler::{Body, BoxFuture, Handler, SharedHandler, error_response};

/// Errors in an `addPrefix` configuration.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddPrefixError {
    #[error("addPrefix needs a non-empty prefix")]
    EmptyPrefix,
}

/// A configured `addPrefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddPrefix {
    /// The prefix in escaped form, ready to put before the escaped request path.
    escaped: String,
}

impl AddPrefix {
    /// `prefix` is a plain path, as written in the configuration: characters a URI path
    /// cannot hold (a space, `%`...) are escaped once here.
    pub fn new(prefix: &str) -> Result<AddPrefix, AddPrefixError> {
        if prefix.is_empty() {
            return Err(AddPrefixError::EmptyPrefix);
        }
        Ok(AddPrefix {
            escaped: escape_decoded(prefix),
        })
    }
}

impl Middleware for AddPrefix {
    fn wrap(&self, next: SharedHandler) -> SharedHandler {
        Arc::new(Add {
            escaped: self.escaped.clone(),
            next,
        })
    }
}

struct Add {
    escaped: String,
    next: SharedHandler,
}

impl Handler for Add {
    fn call(&self, mut request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
        let joined = format!("{}{}", self.escaped, raw_path(&request));
        if let Err(kind) = set_raw_path(&mut request, &with_leading_slash(&joined)) {
            return Box::pin(async move { error_response(kind) });
        }
        self.next.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::middleware::path_rewrite::test_support::through;

    #[tokio::test]
    async fn prefix_goes_before_the_path_and_the_query_stays() {
        let mw = AddPrefix::new("/api").unwrap();
        assert_eq!(through(&mw, "/users?x=1").await.1, "/api/users?x=1");
        assert_eq!(through(&mw, "/").await.1, "/api/");
    }

    #[tokio::test]
    async fn prefix_without_a_slash_still_gives_an_absolute_path() {
        let mw = AddPrefix::new("v2").unwrap();
        assert_eq!(through(&mw, "/users").await.1, "/v2/users");
    }

    #[tokio::test]
    async fn prefix_characters_are_escaped_and_the_request_path_is_not_reescaped() {
        let mw = AddPrefix::new("/my app").unwrap();
        assert_eq!(through(&mw, "/a%2Fb").await.1, "/my%20app/a%2Fb");
    }

    #[test]
    fn empty_prefix_is_refused() {
        assert_eq!(AddPrefix::new(""), Err(AddPrefixError::EmptyPrefix));
    }
}
