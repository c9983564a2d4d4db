//! What the path-rewriting middlewares share: the request URI holds only the escaped
//! (raw) path, while Traefik matches prefixes against the decoded path. These helpers
//! decode, match a decoded prefix against the raw path, escape configured paths and put a
//! new raw path into the request with its query kept.

use std::borrow::Cow;

use http::Request;
use http::uri::{PathAndQuery, Uri};

use crate::error::ProxyErrorKind;

/// The request's escaped path (`/` when the URI has none, as for `*` or CONNECT).
pub(crate) fn raw_path<B>(request: &Request<B>) -> &str {
    request.uri().path()
}

/// `raw` with every `%XX` decoded (Go's `URL.Path`); a `%` not followed by two hex digits
/// stays as it is rather than failing the request.
pub(crate) fn decode(raw: &str) -> Cow<'_, [u8]> {
    if !raw.contains('%') {
        return Cow::Borrowed(raw.as_bytes());
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut rest = raw.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        match escaped_byte(rest) {
            Some(decoded) => {
                out.push(decoded);
                rest = &rest[3..];
            }
            None => {
                out.push(byte);
                rest = tail;
            }
        }
    }
    Cow::Owned(out)
}

/// The byte a `%XX` at the start of `bytes` stands for.
fn escaped_byte(bytes: &[u8]) -> Option<u8> {
    match bytes {
        [b'%', high, low, ..] => {
            let digit = |c: u8| (c as char).to_digit(16);
            Some((digit(*high)? * 16 + digit(*low)?) as u8)
        }
        _ => None,
    }
}

/// How many bytes of `raw` decode to exactly `prefix`, if `raw` decoded starts with it.
/// Cutting the raw path there strips the same characters from both forms.
pub(crate) fn raw_prefix_len(raw: &str, prefix: &[u8]) -> Option<usize> {
    let bytes = raw.as_bytes();
    let mut at = 0;
    for &wanted in prefix {
        let (got, width) = match escaped_byte(&bytes[at..]) {
            Some(decoded) => (decoded, 3),
            None => (*bytes.get(at)?, 1),
        };
        if got != wanted {
            return None;
        }
        at += width;
    }
    Some(at)
}

/// `path` with a leading `/` (an empty path becomes `/`), as Traefik's `ensureLeadingSlash`.
pub(crate) fn with_leading_slash(path: &str) -> Cow<'_, str> {
    if path.starts_with('/') {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(format!("/{path}"))
    }
}

/// Errors in a configured path.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("path {0:?} has a '%' that is not followed by two hex digits")]
    BadEscape(String),
}

/// A configured path in escaped form: characters a URI path cannot hold (space, `"`,
/// non-ASCII...) are percent-encoded, existing `%XX` escapes are kept, and `?` and `#`
/// are encoded so that they stay part of the path.
pub fn escape_path(path: &str) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    for (i, &byte) in bytes.iter().enumerate() {
        if byte == b'%' {
            if escaped_byte(&bytes[i..]).is_none() {
                return Err(PathError::BadEscape(path.to_owned()));
            }
            out.push('%');
        } else if is_path_char(byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    Ok(out)
}

/// A decoded path (as Go's `URL.Path`) in escaped form: every character a URI path cannot
/// hold, `%` included, is percent-encoded.
pub fn escape_decoded(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for &byte in path.as_bytes() {
        if is_path_char(byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// RFC 3986 `pchar` and `/`, the characters an escaped path keeps as they are.
fn is_path_char(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&byte)
}

/// Replaces the request's path by the escaped `raw_path`, keeping the query.
pub(crate) fn set_raw_path<B>(
    request: &mut Request<B>,
    raw_path: &str,
) -> Result<(), ProxyErrorKind> {
    let uri = request.uri_mut();
    let rebuilt = match uri.query() {
        Some(query) => format!("{raw_path}?{query}"),
        None => raw_path.to_owned(),
    };
    let mut parts = std::mem::take(uri).into_parts();
    parts.path_and_query =
        Some(PathAndQuery::try_from(rebuilt).map_err(|_| ProxyErrorKind::BadRequest)?);
    *uri = Uri::from_parts(parts).map_err(|_| ProxyErrorKind::BadRequest)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::empty_body;

    #[test]
    fn decoding_keeps_lone_percent_signs() {
        assert_eq!(&*decode("/a%2Fb%zz%4"), b"/a/b%zz%4");
        assert_eq!(&*decode("/plain"), b"/plain");
    }

    #[test]
    fn decoded_prefix_is_found_through_escapes() {
        assert_eq!(raw_prefix_len("/a%20b/c", b"/a b"), Some(6));
        assert_eq!(raw_prefix_len("/a%2fb/c", b"/a/b"), Some(6));
        assert_eq!(raw_prefix_len("/ab", b"/abc"), None);
        assert_eq!(raw_prefix_len("/xb", b"/a"), None);
        assert_eq!(raw_prefix_len("/", b""), Some(0));
    }

    #[test]
    fn configured_paths_are_escaped_once() {
        assert_eq!(
            escape_path("/a b/%41?#é").unwrap(),
            "/a%20b/%41%3F%23%C3%A9"
        );
        assert_eq!(
            escape_path("/100%"),
            Err(PathError::BadEscape("/100%".into()))
        );
    }

    #[test]
    fn decoded_paths_have_their_percent_signs_escaped() {
        assert_eq!(escape_decoded("/a b/100%?"), "/a%20b/100%25%3F");
    }

    #[test]
    fn new_path_keeps_the_query_and_authority() {
        let mut request = Request::builder()
            .uri("http://h.test/old?x=1")
            .body(empty_body())
            .unwrap();
        set_raw_path(&mut request, "/new").unwrap();
        assert_eq!(request.uri().to_string(), "http://h.test/new?x=1");
    }
}

/// Drives a middleware in unit tests and reports what the handler after it received.
#[cfg(test)]
pub(crate) mod test_support {
    use std::sync::Arc;

    use http::{Request, Response, StatusCode};

    use crate::handler::{Body, BoxFuture, Handler, empty_body};
    use crate::middleware::Middleware;

    /// A handler that answers with the path and query it received and its
    /// `X-Forwarded-Prefix` and `X-Replaced-Path` headers.
    pub(crate) struct Seen;

    impl Handler for Seen {
        fn call(&self, request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
            let header = |name: &str| {
                request
                    .headers()
                    .get_all(name)
                    .iter()
                    .map(|v| v.to_str().unwrap_or("?").to_owned())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let mut response = Response::new(empty_body());
            let headers = response.headers_mut();
            let uri = request
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("");
            headers.insert("seen-uri", uri.parse().unwrap());
            headers.insert("seen-prefix", header("x-forwarded-prefix").parse().unwrap());
            headers.insert("seen-replaced", header("x-replaced-path").parse().unwrap());
            Box::pin(async move { response })
        }
    }

    /// Sends `uri` through `middleware` to [`Seen`]: (status, uri, prefix, replaced path).
    pub(crate) async fn through(
        middleware: &dyn Middleware,
        uri: &str,
    ) -> (StatusCode, String, String, String) {
        let handler = middleware.wrap(Arc::new(Seen));
        let request = Request::builder().uri(uri).body(empty_body()).unwrap();
        let response = handler.call(request).await;
        let get = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        (
            response.status(),
            get("seen-uri"),
            get("seen-prefix"),
            get("seen-replaced"),
        )
    }
}
