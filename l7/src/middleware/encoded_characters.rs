//! `encodedCharacters{allowEncoded…}`: refuses (400) requests whose path holds an encoded
//! character that backends disagree about (`%2F`, `%5C`, `%00`, `%3B`, `%25`, `%3F`, `%23`,
//! either case), unless that character is allowed. As in Traefik, every option defaults to
//! `false`: the middleware rejects them all until told otherwise. Only the path is checked,
//! not the query.

use std::sync::Arc;

use http::{Request, Response};

use super::Middleware;
use super::path_rewrite::raw_path;
use crate::error::ProxyErrorKind;
use crate::handler::{Body, BoxFuture, Handler, SharedHandler, error_response};

/// A configured `encodedCharacters`: which encoded characters may appear in the path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EncodedCharacters {
    pub allow_encoded_slash: bool,
    pub allow_encoded_back_slash: bool,
    pub allow_encoded_null_character: bool,
    pub allow_encoded_semicolon: bool,
    pub allow_encoded_percent: bool,
    pub allow_encoded_question_mark: bool,
    pub allow_encoded_hash: bool,
}

impl EncodedCharacters {
    /// Whether the decoded byte `byte` may appear encoded in the path.
    fn allows(&self, byte: u8) -> bool {
        match byte {
            b'/' => self.allow_encoded_slash,
            b'\\' => self.allow_encoded_back_slash,
            0 => self.allow_encoded_null_character,
            b';' => self.allow_encoded_semicolon,
            b'%' => self.allow_encoded_percent,
            b'?' => self.allow_encoded_question_mark,
            b'#' => self.allow_encoded_hash,
            _ => true,
        }
    }

    /// Whether `raw` (an escaped path) holds only allowed escapes.
    fn accepts(&self, raw: &str) -> bool {
        raw.as_bytes().windows(3).all(|w| match w {
            [b'%', high, low] => match (hex(*high), hex(*low)) {
                (Some(high), Some(low)) => self.allows(high * 16 + low),
                _ => true,
            },
            _ => true,
        })
    }
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

impl Middleware for EncodedCharacters {
    fn wrap(&self, next: SharedHandler) -> SharedHandler {
        Arc::new(Filter {
            config: *self,
            next,
        })
    }
}

struct Filter {
    config: EncodedCharacters,
    next: SharedHandler,
}

impl Handler for Filter {
    fn call(&self, request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
        if self.config.accepts(raw_path(&request)) {
            self.next.call(request)
        } else {
            Box::pin(async { error_response(ProxyErrorKind::BadRequest) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::middleware::path_rewrite::test_support::through;
    use http::StatusCode;

    #[tokio::test]
    async fn every_listed_escape_is_refused_by_default() {
        let mw = EncodedCharacters::default();
        for path in [
            "/a%2Fb", "/a%2fb", "/a%5cb", "/a%00", "/a%3Bb", "/a%25", "/a%3f", "/a%23",
        ] {
            assert_eq!(
                through(&mw, path).await.0,
                StatusCode::BAD_REQUEST,
                "{path}"
            );
        }
    }

    #[tokio::test]
    async fn other_escapes_and_the_query_are_not_checked() {
        let mw = EncodedCharacters::default();
        let (status, uri, ..) = through(&mw, "/a%20b%41?q=%2F%00").await;
        assert_eq!(
            (status, uri.as_str()),
            (StatusCode::OK, "/a%20b%41?q=%2F%00")
        );
        assert_eq!(through(&mw, "/100%").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn allowed_character_passes_and_others_stay_refused() {
        let mw = EncodedCharacters {
            allow_encoded_slash: true,
            ..EncodedCharacters::default()
        };
        assert_eq!(through(&mw, "/a%2Fb").await.0, StatusCode::OK);
        assert_eq!(through(&mw, "/a%2F%3B").await.0, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn each_option_allows_its_own_character() {
        let all = EncodedCharacters {
            allow_encoded_slash: true,
            allow_encoded_back_slash: true,
            allow_encoded_null_character: true,
            allow_encoded_semicolon: true,
            allow_encoded_percent: true,
            allow_encoded_question_mark: true,
            allow_encoded_hash: true,
        };
        assert!(all.accepts("/%2F%5C%00%3B%25%3F%23"));
    }
}
