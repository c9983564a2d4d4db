//! `api@internal`: the HTTP side of Traefik's API, over the current [`ApiState`].
//!
//! Routes, query parsing (`page`, `per_page`, `search`, `status`, `serviceName`,
//! `middlewareName`) and pagination with `X-Next-Page` follow Traefik's handlers. The
//! snapshot is loaded once per request, so a reload never shows half of two states.

use std::borrow::Cow;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::{BufMut, Bytes, BytesMut};
use http::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use l7::handler::{Body, BoxFuture, Handler, empty_body, full_body};
use serde_json::json;

use super::json::to_bytes;
use super::state::{ApiState, Entry, Kind};

/// The header that tells a client which page to ask for next (1 when there is none).
const NEXT_PAGE: &str = "x-next-page";
const DEFAULT_PER_PAGE: u64 = 100;

/// Serves Traefik's API endpoints under `basePath` from a swappable [`ApiState`].
pub struct ApiHandler {
    state: Arc<ArcSwap<ApiState>>,
    /// `basePath` without its trailing slash: empty for `/`.
    base: String,
}

impl ApiHandler {
    /// `base_path` is the static `api.basePath` (`/` by default).
    pub fn new(state: Arc<ArcSwap<ApiState>>, base_path: &str) -> ApiHandler {
        let trimmed = base_path.trim_matches('/');
        let base = if trimmed.is_empty() {
            String::new()
        } else {
            format!("/{trimmed}")
        };
        ApiHandler { state, base }
    }

    fn respond(&self, method: &Method, path: &str, query: Option<&str>) -> Response<Body> {
        let Some(route) = route(&self.base, path) else {
            return error(StatusCode::NOT_FOUND, format!("no API endpoint at {path}"));
        };
        if method != Method::GET && method != Method::HEAD {
            let mut response = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed".into());
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET"));
            return response;
        }
        let state = self.state.load();
        let response = match route {
            Route::RawData => json_response(StatusCode::OK, state.rawdata.render()),
            Route::Overview => json_response(StatusCode::OK, state.overview.clone()),
            Route::Version => json_response(StatusCode::OK, state.version.clone()),
            Route::One(kind, name) => match state.objects(kind).get(&name) {
                Some(entry) => json_response(StatusCode::OK, entry.json.render()),
                None => error(
                    StatusCode::NOT_FOUND,
                    format!("{} not found: {name}", kind.singular()),
                ),
            },
            Route::List(kind) => list(&state, kind, &Query::parse(query.unwrap_or(""))),
        };
        if method == Method::HEAD {
            let (parts, _) = response.into_parts();
            return Response::from_parts(parts, empty_body());
        }
        response
    }
}

impl Handler for ApiHandler {
    fn call(&self, request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
        let uri = request.uri();
        let response = self.respond(request.method(), uri.path(), uri.query());
        Box::pin(async move { response })
    }
}

#[derive(Debug, PartialEq)]
enum Route {
    RawData,
    Overview,
    Version,
    List(Kind),
    One(Kind, String),
}

/// The endpoint `path` names under `base`; `None` for anything else.
fn route(base: &str, path: &str) -> Option<Route> {
    let rest = path.strip_prefix(base)?.strip_prefix("/api/")?;
    let segments: Vec<&str> = rest.split('/').collect();
    let (kind, name) = match segments.as_slice() {
        ["rawdata"] => return Some(Route::RawData),
        ["overview"] => return Some(Route::Overview),
        ["version"] => return Some(Route::Version),
        ["entrypoints"] => (Kind::EntryPoints, None),
        ["entrypoints", name] => (Kind::EntryPoints, Some(*name)),
        [protocol, objects] => (kind(protocol, objects)?, None),
        [protocol, objects, name] => (kind(protocol, objects)?, Some(*name)),
        _ => return None,
    };
    match name {
        None => Some(Route::List(kind)),
        Some("") => None,
        Some(name) => {
            let decoded = String::from_utf8(percent_decode(name, false).into_owned()).ok()?;
            Some(Route::One(kind, decoded))
        }
    }
}

fn kind(protocol: &str, objects: &str) -> Option<Kind> {
    Some(match (protocol, objects) {
        ("http", "routers") => Kind::HttpRouters,
        ("http", "services") => Kind::HttpServices,
        ("http", "middlewares") => Kind::HttpMiddlewares,
        ("tcp", "routers") => Kind::TcpRouters,
        ("tcp", "services") => Kind::TcpServices,
        ("tcp", "middlewares") => Kind::TcpMiddlewares,
        ("udp", "routers") => Kind::UdpRouters,
        ("udp", "services") => Kind::UdpServices,
        _ => return None,
    })
}

/// The query parameters lists read; the first value of each wins, as Go's `Query().Get`.
#[derive(Default)]
struct Query {
    page: Option<String>,
    per_page: Option<String>,
    search: String,
    status: String,
    service_name: String,
    middleware_name: String,
}

impl Query {
    fn parse(query: &str) -> Query {
        let mut q = Query::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = percent_decode(key, true);
            let value = String::from_utf8_lossy(&percent_decode(value, true)).into_owned();
            let slot = match key.as_ref() {
                b"page" => {
                    q.page.get_or_insert(value);
                    continue;
                }
                b"per_page" => {
                    q.per_page.get_or_insert(value);
                    continue;
                }
                b"search" => &mut q.search,
                b"status" => &mut q.status,
                b"serviceName" => &mut q.service_name,
                b"middlewareName" => &mut q.middleware_name,
                _ => continue,
            };
            if slot.is_empty() {
                *slot = value;
            }
        }
        q
    }

    /// Whether `entry` passes the filters Traefik applies to objects of `kind`.
    fn keeps(&self, kind: Kind, entry: &Entry) -> bool {
        if kind == Kind::EntryPoints {
            return true;
        }
        let status = self.status.is_empty() || self.status.eq_ignore_ascii_case(entry.status);
        let search = self.search.to_lowercase();
        let found = search.is_empty() || entry.searchable.iter().any(|s| s.contains(&search));
        let routers = matches!(
            kind,
            Kind::HttpRouters | Kind::TcpRouters | Kind::UdpRouters
        );
        let service = !routers
            || self.service_name.is_empty()
            || entry
                .service
                .as_deref()
                .is_some_and(|s| names_match(&self.service_name, s));
        let middleware = !routers
            || self.middleware_name.is_empty()
            || entry
                .middlewares
                .iter()
                .any(|m| names_match(&self.middleware_name, m));
        status && found && service && middleware
    }
}

/// Whether the name a client asked for designates `qualified`: the same name, or the same
/// name without its provider.
fn names_match(asked: &str, qualified: &str) -> bool {
    asked == qualified
        || (!asked.contains('@') && qualified.split_once('@').is_some_and(|(n, _)| n == asked))
}

/// Which slice of `total` items a request asks for: Traefik's `pagination`.
#[derive(Debug, PartialEq)]
struct Page {
    start: usize,
    end: usize,
    next: u64,
}

fn page(query: &Query, total: usize) -> Result<Page, String> {
    let per_page = positive(query.per_page.as_deref(), "per_page", DEFAULT_PER_PAGE)?;
    let page = positive(query.page.as_deref(), "page", 1)?;
    let total_u64 = total as u64;
    let start = (page - 1).saturating_mul(per_page);
    if start != 0 && start >= total_u64 {
        return Err(format!(
            "invalid request: page: {page}, per_page: {per_page}"
        ));
    }
    let end = start.saturating_add(per_page).min(total_u64);
    let next = if page.saturating_mul(per_page) < total_u64 {
        page + 1
    } else {
        1
    };
    // Both bounds are at most `total`, a `usize`.
    Ok(Page {
        start: usize::try_from(start).unwrap_or(total),
        end: usize::try_from(end).unwrap_or(total),
        next,
    })
}

/// A positive integer parameter; absent or empty gives `default`.
fn positive(raw: Option<&str>, key: &str, default: u64) -> Result<u64, String> {
    match raw {
        None | Some("") => Ok(default),
        Some(raw) => match raw.parse::<i64>() {
            Ok(value) if value > 0 => Ok(value.unsigned_abs()),
            // Go's `Atoi` gives 0 on a parse error, which Traefik's message shows.
            Ok(value) => Err(format!("invalid request: {key}: {value}")),
            Err(_) => Err(format!("invalid request: {key}: 0")),
        },
    }
}

fn list(state: &ApiState, kind: Kind, query: &Query) -> Response<Body> {
    let kept: Vec<&Entry> = state
        .objects(kind)
        .all()
        .iter()
        .filter(|e| query.keeps(kind, e))
        .collect();
    let page = match page(query, kept.len()) {
        Ok(page) => page,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let shown = kept.get(page.start..page.end).unwrap_or_default();
    let size = shown.iter().map(|e| e.json.len_hint() + 1).sum::<usize>() + 2;
    let mut body = BytesMut::with_capacity(size);
    body.put_u8(b'[');
    for (i, entry) in shown.iter().enumerate() {
        if i > 0 {
            body.put_u8(b',');
        }
        entry.json.write(&mut body);
    }
    body.put_u8(b']');
    let mut response = json_response(StatusCode::OK, body.freeze());
    response
        .headers_mut()
        .insert(NEXT_PAGE, HeaderValue::from(page.next));
    response
}

fn json_response(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut response = Response::new(full_body(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Traefik's error body: `{"message": ...}`.
fn error(status: StatusCode, message: String) -> Response<Body> {
    json_response(status, to_bytes(&json!({ "message": message })))
}

/// Decodes `%XX` escapes (and `+` as a space in a query); a malformed escape stays as
/// written.
fn percent_decode(text: &str, plus_is_space: bool) -> Cow<'_, [u8]> {
    let bytes = text.as_bytes();
    let plus = plus_is_space && bytes.contains(&b'+');
    if !plus && !bytes.contains(&b'%') {
        return Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let escaped = match (b, bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&hi), Some(&lo)) => hex(hi).zip(hex(lo)).map(|(h, l)| h << 4 | l),
            _ => None,
        };
        match escaped {
            Some(decoded) => {
                out.push(decoded);
                i += 3;
            }
            None => {
                out.push(if plus_is_space && b == b'+' { b' ' } else { b });
                i += 1;
            }
        }
    }
    Cow::Owned(out)
}

fn hex(digit: u8) -> Option<u8> {
    (digit as char)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_live_under_the_base_path() {
        assert_eq!(route("", "/api/rawdata"), Some(Route::RawData));
        assert_eq!(
            route("/traefik", "/traefik/api/overview"),
            Some(Route::Overview)
        );
        assert_eq!(route("/traefik", "/api/overview"), None);
        assert_eq!(
            route("", "/api/http/routers/web%40file"),
            Some(Route::One(Kind::HttpRouters, "web@file".into()))
        );
        assert_eq!(route("", "/api/udp/middlewares"), None);
        assert_eq!(route("", "/api/http/routers/"), None);
        assert_eq!(route("", "/api/http/routers/a/b"), None);
        assert_eq!(route("", "/api/http/routers/%ff"), None);
        assert_eq!(
            route("", "/api/entrypoints/web"),
            Some(Route::One(Kind::EntryPoints, "web".into()))
        );
    }

    #[test]
    fn pages_follow_traefik() {
        let q = |page: &str, per_page: &str| Query {
            page: Some(page.into()),
            per_page: Some(per_page.into()),
            ..Query::default()
        };
        assert_eq!(
            page(&q("1", "2"), 5),
            Ok(Page {
                start: 0,
                end: 2,
                next: 2
            })
        );
        assert_eq!(
            page(&q("3", "2"), 5),
            Ok(Page {
                start: 4,
                end: 5,
                next: 1
            })
        );
        assert_eq!(
            page(&q("1", ""), 0),
            Ok(Page {
                start: 0,
                end: 0,
                next: 1
            })
        );
        assert!(page(&q("4", "2"), 5).is_err());
        assert!(page(&q("0", "2"), 5).is_err());
        assert!(page(&q("1", "x"), 5).is_err());
        assert!(page(&q("9223372036854775807", "9223372036854775807"), 5).is_err());
    }

    #[test]
    fn query_values_are_decoded_and_the_first_wins() {
        let q = Query::parse("search=a%20b+c&search=zz&status=&page=2&serviceName=s%40file&x");
        assert_eq!(q.search, "a b c");
        assert_eq!(q.page.as_deref(), Some("2"));
        assert_eq!(q.service_name, "s@file");
        assert!(q.status.is_empty());
        assert_eq!(&*percent_decode("%zz%4", false), b"%zz%4");
    }
}
