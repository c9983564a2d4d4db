//! What HTTP rules look at in a request: the canonical host, the routing path, the query pairs,
//! the method, the headers and the client address, borrowed from the request where possible.
//!
//! The normalisations follow Traefik v3 so that rules written for it match the same requests:
//! the host is lower-cased without port, brackets or trailing dot; the routing path has its
//! unreserved escapes decoded and is cleaned like Go's `path.Clean`; the query is read like
//! Go's `url.ParseQuery`. Rewriting the request itself is not done here.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::net::IpAddr;

use http::HeaderMap;
use http::request::Parts;

/// One request as the HTTP matchers see it.
#[derive(Debug)]
pub struct RequestView<'a> {
    method: &'a str,
    host: Cow<'a, str>,
    path: Cow<'a, str>,
    query: &'a str,
    query_pairs: OnceCell<Vec<(Cow<'a, str>, Cow<'a, str>)>>,
    headers: &'a HeaderMap,
    client_ip: IpAddr,
}

impl<'a> RequestView<'a> {
    /// `raw_host` is the authority as received (port and brackets allowed), `raw_path` the
    /// escaped path and `query` the raw query without `?`. `client_ip` is the connection's
    /// peer (after a trusted PROXY header), never a forwarded header.
    pub fn new(
        method: &'a str,
        raw_host: &'a str,
        raw_path: &'a str,
        query: &'a str,
        headers: &'a HeaderMap,
        client_ip: IpAddr,
    ) -> Self {
        RequestView {
            method,
            host: canonical_host(raw_host),
            path: routing_path(raw_path),
            query,
            query_pairs: OnceCell::new(),
            headers,
            client_ip,
        }
    }

    /// The host of an absolute-form target (and HTTP/2 `:authority`, which `http` puts in
    /// the URI) wins over the `Host` header, as in Go's `net/http`. A `Host` header that is
    /// not visible ASCII counts as no host.
    pub fn from_parts(parts: &'a Parts, client_ip: IpAddr) -> Self {
        // `Uri::host` leaves out user info and port.
        let raw_host = match parts.uri.host() {
            Some(host) => host,
            None => parts
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or(""),
        };
        RequestView::new(
            parts.method.as_str(),
            raw_host,
            parts.uri.path(),
            parts.uri.query().unwrap_or(""),
            &parts.headers,
            client_ip,
        )
    }

    pub fn method(&self) -> &str {
        self.method
    }

    /// Lower-case, without port, IPv6 brackets or trailing dot; empty when the request has
    /// no host.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The routing path ([`routing_path`]).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The raw query, without `?`.
    pub fn query(&self) -> &str {
        self.query
    }

    /// The decoded values given to `key`, in request order; parsed once, on first use.
    pub fn query_values<'s>(&'s self, key: &'s str) -> impl Iterator<Item = &'s str> + 's {
        self.query_pairs
            .get_or_init(|| parse_query(self.query))
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_ref())
    }

    pub fn headers(&self) -> &HeaderMap {
        self.headers
    }

    pub fn client_ip(&self) -> IpAddr {
        self.client_ip
    }
}

/// The host as rules compare it: surrounding spaces trimmed, port and IPv6 brackets stripped,
/// lower-cased, trailing dot trimmed. Borrowed when already in that form.
pub fn canonical_host(raw: &str) -> Cow<'_, str> {
    let raw = raw.trim();
    let host = if let Some(rest) = raw.strip_prefix('[') {
        // `[v6]` or `[v6]:port`; an unclosed bracket is kept as written and will not match.
        match rest.find(']') {
            Some(end) => &rest[..end],
            None => raw,
        }
    } else {
        match raw.rsplit_once(':') {
            // A bare IPv6 address has several colons and no port to strip.
            Some((name, _port)) if !name.contains(':') => name,
            _ => raw,
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

/// Escapes that keep their meaning only while encoded (RFC 3986 §2.2 gen-delims and
/// sub-delims, plus `%` itself): decoding `%2F` would split a segment, `%3F` would start a
/// query. Everything else is decoded before matching.
fn is_reserved(byte: u8) -> bool {
    matches!(
        byte,
        b':' | b'/'
            | b'?'
            | b'#'
            | b'['
            | b']'
            | b'@'
            | b'!'
            | b'$'
            | b'&'
            | b'\''
            | b'('
            | b')'
            | b'*'
            | b'+'
            | b','
            | b';'
            | b'='
            | b'%'
    )
}

/// The path rules match on, from the escaped request path: `%XX` escapes of reserved
/// characters stay encoded (hex upper-cased), the others are decoded, then the path is
/// cleaned like Go's `path.Clean` (no `.`, `..` or empty segments; `..` stops at the root)
/// keeping a trailing slash. Borrowed when nothing changes.
///
/// Decoding happens before cleaning so that `/%2E%2E/admin` is `/admin` to the rules, as it
/// will be to most backends. A decoded byte sequence that is not UTF-8 keeps its non-ASCII
/// escapes encoded; a `%` not followed by two hex digits is kept as written.
pub fn routing_path(raw: &str) -> Cow<'_, str> {
    let decoded = decode_unreserved(raw);
    if let Cow::Owned(cleaned) = clean(&decoded) {
        return Cow::Owned(cleaned);
    }
    decoded
}

fn decode_unreserved(raw: &str) -> Cow<'_, str> {
    if !raw.contains('%') {
        return Cow::Borrowed(raw);
    }
    let decoded = percent_decode_path(raw, true);
    let decoded = match String::from_utf8(decoded) {
        Ok(s) => s,
        // Only ASCII escapes are decoded now, so the result is UTF-8 whenever `raw` is.
        Err(_) => String::from_utf8_lossy(&percent_decode_path(raw, false)).into_owned(),
    };
    if decoded == raw {
        Cow::Borrowed(raw)
    } else {
        Cow::Owned(decoded)
    }
}

fn percent_decode_path(raw: &str, decode_non_ascii: bool) -> Vec<u8> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes.get(i..i + 3) {
            Some([b'%', hi, lo]) => hex(*hi).zip(hex(*lo)).map(|(h, l)| h << 4 | l),
            _ => None,
        };
        match escaped {
            Some(byte) if is_reserved(byte) || (!byte.is_ascii() && !decode_non_ascii) => {
                out.push(b'%');
                out.extend_from_slice(&hex_upper(byte));
                i += 3;
            }
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

fn hex(digit: u8) -> Option<u8> {
    (digit as char)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

fn hex_upper(byte: u8) -> [u8; 2] {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    [
        DIGITS[usize::from(byte >> 4)],
        DIGITS[usize::from(byte & 0xf)],
    ]
}

/// The path sent on when `http.sanitizePath` is on: [`routing_path`]'s cleaning without its
/// decoding (`/a/./b/../c//d` is `/a/c/d`; `/%2E%2E/` is left to the backend, as Traefik does).
pub fn sanitize_path(raw: &str) -> Cow<'_, str> {
    clean(raw)
}

/// Go's `path.Clean` for a rooted path, keeping a trailing slash. A path that is not rooted
/// (`*` of `OPTIONS *`, empty for `CONNECT`) is left alone.
fn clean(path: &str) -> Cow<'_, str> {
    if !path.starts_with('/') || is_clean(path) {
        return Cow::Borrowed(path);
    }
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if segments.is_empty() || path.ends_with('/') {
        out.push('/');
    }
    Cow::Owned(out)
}

/// No empty, `.` or `..` segment, apart from the empty one a trailing slash leaves.
fn is_clean(path: &str) -> bool {
    let inner = path[1..].strip_suffix('/').unwrap_or(&path[1..]);
    path == "/" || inner.split('/').all(|s| !matches!(s, "" | "." | ".."))
}

/// Go's `url.ParseQuery`: pairs split on `&`, key and value on the first `=` (`k` alone has
/// an empty value), `+` is a space and `%XX` is decoded. Like Go, a pair containing `;` or a
/// malformed escape is skipped. Bytes that are not UTF-8 after decoding become U+FFFD.
pub fn parse_query(query: &str) -> Vec<(Cow<'_, str>, Cow<'_, str>)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty() && !pair.contains(';'))
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            Some((query_unescape(key)?, query_unescape(value)?))
        })
        .collect()
}

fn query_unescape(s: &str) -> Option<Cow<'_, str>> {
    if !s.contains(['%', '+']) {
        return Some(Cow::Borrowed(s));
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let (hi, lo) = bytes.get(i + 1).zip(bytes.get(i + 2))?;
                out.push(hex(*hi)? << 4 | hex(*lo)?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(Cow::Owned(String::from_utf8_lossy(&out).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_is_lower_cased_without_port_brackets_or_trailing_dot() {
        assert_eq!(canonical_host("Example.COM:8080"), "example.com");
        assert_eq!(canonical_host("example.com."), "example.com");
        assert_eq!(canonical_host("example.com.:443"), "example.com");
        assert_eq!(canonical_host("[::1]:8080"), "::1");
        assert_eq!(canonical_host("[2001:DB8::1]"), "2001:db8::1");
        assert_eq!(canonical_host("2001:db8::1"), "2001:db8::1");
        assert_eq!(canonical_host(" a.com "), "a.com");
        assert_eq!(canonical_host(""), "");
    }

    #[test]
    fn canonical_host_borrows_when_already_canonical() {
        assert!(matches!(canonical_host("a.com:80"), Cow::Borrowed("a.com")));
        assert!(matches!(canonical_host("A.com"), Cow::Owned(_)));
    }

    #[test]
    fn routing_path_decodes_unreserved_escapes() {
        assert_eq!(routing_path("/%41"), "/A");
        assert_eq!(routing_path("/caf%C3%A9"), "/café");
        assert_eq!(routing_path("/a%2db%7E"), "/a-b~");
        assert_eq!(routing_path("/a%20b"), "/a b");
    }

    #[test]
    fn routing_path_keeps_reserved_escapes_in_upper_case() {
        assert_eq!(routing_path("/a%2Fb"), "/a%2Fb");
        assert_eq!(routing_path("/a%2fb"), "/a%2Fb");
        for kept in [
            "%3F", "%23", "%25", "%3A", "%40", "%5B", "%5D", "%21", "%24", "%26", "%27", "%28",
            "%29", "%2A", "%2B", "%2C", "%3B", "%3D",
        ] {
            let raw = format!("/x{kept}y");
            assert_eq!(routing_path(&raw), raw, "{kept}");
        }
        // `%25` stays encoded so `%2541` is not read as `%41` and then `A`.
        assert_eq!(routing_path("/%2541"), "/%2541");
    }

    #[test]
    fn routing_path_is_cleaned_keeping_the_trailing_slash() {
        assert_eq!(routing_path("/a/../b"), "/b");
        assert_eq!(routing_path("/a/./b"), "/a/b");
        assert_eq!(routing_path("//a//b//"), "/a/b/");
        assert_eq!(routing_path("/../../x"), "/x");
        assert_eq!(routing_path("/a/.."), "/");
        assert_eq!(routing_path("/a/../"), "/");
        assert_eq!(routing_path("/a/b/."), "/a/b");
        assert_eq!(routing_path("/a/"), "/a/");
        assert_eq!(routing_path("/"), "/");
        assert_eq!(routing_path("/..."), "/...");
    }

    #[test]
    fn routing_path_cleans_after_decoding_dots() {
        assert_eq!(routing_path("/%2E%2E/admin"), "/admin");
        assert_eq!(routing_path("/a/%2e/b"), "/a/b");
        // An encoded slash is no separator, so `..` only removes the whole `a%2Fb` segment.
        assert_eq!(routing_path("/a%2Fb/../c"), "/c");
    }

    #[test]
    fn routing_path_borrows_when_unchanged() {
        assert!(matches!(routing_path("/api/v1/users"), Cow::Borrowed(_)));
        assert!(matches!(routing_path("/a%2Fb/"), Cow::Borrowed(_)));
        assert!(matches!(routing_path("/a//b"), Cow::Owned(_)));
    }

    #[test]
    fn routing_path_keeps_what_it_cannot_decode() {
        assert_eq!(routing_path("/a%zz"), "/a%zz");
        assert_eq!(routing_path("/a%4"), "/a%4");
        // Not UTF-8 once decoded: the non-ASCII escape stays, the ASCII one is decoded.
        assert_eq!(routing_path("/%FF%41"), "/%FFA");
        assert_eq!(routing_path("*"), "*");
        assert_eq!(routing_path(""), "");
    }

    fn pairs(q: &str) -> Vec<(String, String)> {
        parse_query(q)
            .into_iter()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    fn p(k: &str, v: &str) -> (String, String) {
        (k.to_owned(), v.to_owned())
    }

    #[test]
    fn query_reads_bare_keys_empty_and_repeated_values() {
        assert_eq!(
            pairs("a&b=&c=1&c=2"),
            [p("a", ""), p("b", ""), p("c", "1"), p("c", "2")]
        );
        assert_eq!(pairs("k=v=w"), [p("k", "v=w")]);
        assert_eq!(pairs("&&a=1&"), [p("a", "1")]);
        assert_eq!(pairs(""), []);
    }

    #[test]
    fn query_decodes_plus_and_escapes() {
        assert_eq!(pairs("q=a+b%20c&%6B=%2F"), [p("q", "a b c"), p("k", "/")]);
    }

    #[test]
    fn query_skips_pairs_go_rejects() {
        assert_eq!(pairs("a=1;b=2&c=3"), [p("c", "3")]);
        assert_eq!(pairs("a=%zz&b=%4&c=ok"), [p("c", "ok")]);
    }

    fn parts(req: http::Request<()>) -> Parts {
        req.into_parts().0
    }

    #[test]
    fn view_takes_host_header_path_and_query() {
        let parts = parts(
            http::Request::get("/a/../B%41?x=1&y")
                .header("host", "Example.com:8443")
                .body(())
                .unwrap(),
        );
        let r = RequestView::from_parts(&parts, "10.0.0.1".parse().unwrap());
        assert_eq!(r.method(), "GET");
        assert_eq!(r.host(), "example.com");
        assert_eq!(r.path(), "/BA");
        assert_eq!(r.query(), "x=1&y");
        assert_eq!(r.query_values("x").collect::<Vec<_>>(), ["1"]);
        assert_eq!(r.query_values("y").collect::<Vec<_>>(), [""]);
        assert_eq!(r.query_values("z").count(), 0);
        assert_eq!(r.client_ip(), "10.0.0.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn absolute_form_host_wins_over_host_header() {
        let parts = parts(
            http::Request::get("http://user@Real.example:80/x")
                .header("host", "other.example")
                .body(())
                .unwrap(),
        );
        let r = RequestView::from_parts(&parts, "::1".parse().unwrap());
        assert_eq!(r.host(), "real.example");
        assert_eq!(r.path(), "/x");
    }

    #[test]
    fn missing_or_unreadable_host_is_empty() {
        let none = parts(http::Request::get("/").body(()).unwrap());
        assert_eq!(
            RequestView::from_parts(&none, "::1".parse().unwrap()).host(),
            ""
        );
        let bad = parts(
            http::Request::get("/")
                .header("host", http::HeaderValue::from_bytes(b"caf\xe9").unwrap())
                .body(())
                .unwrap(),
        );
        assert_eq!(
            RequestView::from_parts(&bad, "::1".parse().unwrap()).host(),
            ""
        );
    }
}
