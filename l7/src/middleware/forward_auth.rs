//! `forwardAuth{address, tls, trustForwardHeader, authResponseHeaders,
//! authResponseHeadersRegex, authRequestHeaders, addAuthCookiesToResponse, headerField,
//! forwardBody, maxBodySize, maxResponseBodySize, preserveLocationHeader,
//! preserveRequestMethod, authSigninURL}`: asks an authentication server about every
//! request before it goes on, as Traefik does.
//!
//! The auth request is a GET (the client's method with `preserveRequestMethod`) to `address`
//! with the client's headers (only `authRequestHeaders` when listed; hop-by-hop, `Host` and
//! `Content-Length` never) and `X-Forwarded-{For,Method,Proto,Host,Uri}` describing the
//! client's request ([`ForwardHeaders`] says which client-sent ones are believed). With
//! `forwardBody` it carries the request body, read whole (at most `maxBodySize`, else 401);
//! the backend then gets the same bytes.
//!
//! A 2xx answer lets the request through with `authResponseHeaders` and the headers matching
//! `authResponseHeadersRegex` replaced by the auth server's; the auth server's cookies named
//! in `addAuthCookiesToResponse` replace the backend's of the same names in the response.
//! A 401 is a 302 to `authSigninURL` when it is set. Any other answer goes back to the
//! client (status, headers, body), its relative `Location` made absolute against `address`
//! unless `preserveLocationHeader`.
//!
//! An auth server that cannot be reached, fails, or has not answered in full within
//! [`AUTH_TIMEOUT`] (Traefik's client timeout) gives an empty 500 and a log line; an answer
//! body over `maxResponseBodySize` gives 401. Where Traefik leaves a body unlimited, it is
//! bounded here: [`DEFAULT_MAX_BODY_BYTES`] and [`DEFAULT_MAX_RESPONSE_BODY_BYTES`], with the
//! same 401 past them.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{
    CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST, HeaderMap, HeaderName, HeaderValue, LOCATION,
    SET_COOKIE, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use http::{Method, Request, Response, StatusCode, Uri, request};
use http_body::Body as _;
use http_body_util::BodyExt;
use regex::Regex;

use super::Middleware;
use crate::forwarded::{X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PORT, X_FORWARDED_PROTO};
use crate::handler::{
    Body, BoxError, BoxFuture, ClientInfo, Handler, SharedHandler, empty_body, full_body,
};
use crate::transport::{Transport, TransportError, TransportSettings};

/// Traefik's `http.Client` timeout for the whole auth exchange, answer body included.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(30);
/// The request body sent with `forwardBody` when `maxBodySize` is unset: Traefik reads any
/// size into memory, which one client could use to exhaust it.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 16 * 1024 * 1024;
/// The auth server's answer body when `maxResponseBodySize` is unset; login pages and
/// error documents are far smaller.
pub const DEFAULT_MAX_RESPONSE_BODY_BYTES: u64 = 4 * 1024 * 1024;

const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// The `X-*` headers Traefik manages (its `XHeadersSet`): dropped from the auth request when
/// `trustForwardHeader: false`, and always let through `authRequestHeaders` when it is true.
const MANAGED_X_HEADERS: [&str; 13] = [
    "x-forwarded-proto",
    "x-forwarded-scheme",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-server",
    "x-forwarded-uri",
    "x-forwarded-method",
    "x-forwarded-prefix",
    "x-forwarded-tls-client-cert",
    "x-forwarded-tls-client-cert-info",
    "x-scheme",
    "x-real-ip",
];

/// Which `X-Forwarded-*` headers of the request the auth server is told (`trustForwardHeader`).
///
/// By the time a middleware runs, the entrypoint has already dropped those of an untrusted
/// client and written its own (`X-Forwarded-For` ending with the client's address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardHeaders {
    /// Unset: Traefik's legacy behaviour. `X-Forwarded-{For,Proto,Method,Host,Uri}` are
    /// written from the request; other `X-Forwarded-*` headers pass as they are.
    Legacy,
    /// `false`: every managed `X-*` header is dropped, then all are written from the request.
    Untrusted,
    /// `true`: the request's headers are kept and only missing ones are written.
    Trusted,
}

impl ForwardHeaders {
    pub fn from_option(trust: Option<bool>) -> Self {
        match trust {
            None => Self::Legacy,
            Some(false) => Self::Untrusted,
            Some(true) => Self::Trusted,
        }
    }
}

/// A configured `forwardAuth`, as plain data.
#[derive(Debug, Clone)]
pub struct ForwardAuthSpec {
    /// `address`: an absolute `http` or `https` URL.
    pub address: Uri,
    pub forward_headers: ForwardHeaders,
    /// `authResponseHeaders`.
    pub auth_response_headers: Vec<HeaderName>,
    /// `authResponseHeadersRegex`, matched against names as Go writes them (`X-Auth-User`).
    pub auth_response_headers_regex: Option<Regex>,
    /// `authRequestHeaders`; empty sends all.
    pub auth_request_headers: Vec<HeaderName>,
    /// `addAuthCookiesToResponse`: cookie names.
    pub add_auth_cookies_to_response: HashSet<String>,
    /// `headerField`: the request header that gets the auth server's value of it.
    pub header_field: Option<HeaderName>,
    pub forward_body: bool,
    /// `maxBodySize`; `None` (Traefik's unlimited) is [`DEFAULT_MAX_BODY_BYTES`].
    pub max_body_size: Option<u64>,
    /// `maxResponseBodySize`; `None` is [`DEFAULT_MAX_RESPONSE_BODY_BYTES`].
    pub max_response_body_size: Option<u64>,
    pub preserve_location_header: bool,
    pub preserve_request_method: bool,
    /// `authSigninURL`: where a 401 from the auth server redirects the client.
    pub auth_signin_url: Option<HeaderValue>,
    /// The whole auth exchange; [`AUTH_TIMEOUT`] in configurations.
    pub timeout: Duration,
}

/// A `forwardAuth` ready to wrap handlers: its spec and the client to the auth server.
#[derive(Debug, Clone)]
pub struct ForwardAuth {
    spec: Arc<ForwardAuthSpec>,
    transport: Arc<Transport>,
}

impl ForwardAuth {
    /// `tls` carries the `tls` option (CA, client certificate, `insecureSkipVerify`); its
    /// other fields keep their defaults.
    pub fn new(spec: ForwardAuthSpec, tls: TransportSettings) -> Result<Self, TransportError> {
        Ok(ForwardAuth {
            spec: Arc::new(spec),
            transport: Transport::new(tls)?,
        })
    }
}

impl Middleware for ForwardAuth {
    fn wrap(&self, next: SharedHandler) -> SharedHandler {
        Arc::new(Auth {
            spec: Arc::clone(&self.spec),
            transport: Arc::clone(&self.transport),
            next,
        })
    }
}

struct Auth {
    spec: Arc<ForwardAuthSpec>,
    transport: Arc<Transport>,
    next: SharedHandler,
}

/// Why the auth server gave no usable answer.
#[derive(Debug, thiserror::Error)]
enum AuthError {
    #[error("{0}")]
    Send(#[source] crate::error::ProxyError),
    #[error("reading the answer: {0}")]
    Read(#[source] BoxError),
    #[error("the answer body is over {0} bytes")]
    TooLarge(u64),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

impl Handler for Auth {
    fn call(&self, request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            // A CONNECT body of unknown length is tunnel data, not a message to show.
            let tunnel =
                parts.method == Method::CONNECT && !parts.headers.contains_key(CONTENT_LENGTH);
            let (body, auth_body) = if self.spec.forward_body && !tunnel {
                let limit = self.spec.max_body_size.unwrap_or(DEFAULT_MAX_BODY_BYTES);
                match read_limited(body, limit).await {
                    Ok(bytes) if bytes.is_empty() => (empty_body(), None),
                    Ok(bytes) => (full_body(bytes.clone()), Some(bytes)),
                    Err(ReadError::TooLarge) => {
                        tracing::debug!(limit, "forwardAuth: request body over maxBodySize");
                        return status_only(StatusCode::UNAUTHORIZED);
                    }
                    Err(ReadError::Body(error)) => {
                        tracing::debug!(%error, "forwardAuth: cannot read the request body");
                        return status_only(StatusCode::INTERNAL_SERVER_ERROR);
                    }
                }
            } else {
                (body, None)
            };

            let auth_request = self.auth_request(&parts, auth_body);
            let (auth, auth_body) = match self.exchange(auth_request).await {
                Ok(answer) => answer,
                Err(AuthError::TooLarge(limit)) => {
                    let address = &self.spec.address;
                    tracing::debug!(%address, limit, "forwardAuth: answer body over the limit");
                    return status_only(StatusCode::UNAUTHORIZED);
                }
                Err(error) => {
                    let address = &self.spec.address;
                    tracing::warn!(%address, %error, "forwardAuth: the auth server gave no answer; 500");
                    return status_only(StatusCode::INTERNAL_SERVER_ERROR);
                }
            };

            if auth.status == StatusCode::UNAUTHORIZED
                && let Some(url) = &self.spec.auth_signin_url
            {
                tracing::debug!("forwardAuth: 401, redirecting to authSigninURL");
                return signin_redirect(url, &parts);
            }
            if !auth.status.is_success() {
                let status = auth.status.as_u16();
                tracing::debug!(status, "forwardAuth: the auth server denied the request");
                return self.denied(auth, auth_body);
            }

            copy_auth_headers(&mut parts.headers, &auth.headers, &self.spec);
            let cookies: Vec<HeaderValue> =
                auth.headers.get_all(SET_COOKIE).iter().cloned().collect();
            let mut response = self.next.call(Request::from_parts(parts, body)).await;
            if !cookies.is_empty() {
                merge_cookies(
                    response.headers_mut(),
                    &cookies,
                    &self.spec.add_auth_cookies_to_response,
                );
            }
            response
        })
    }
}

impl Auth {
    fn auth_request(&self, client: &request::Parts, body: Option<Bytes>) -> Request<Body> {
        let method = if self.spec.preserve_request_method {
            client.method.clone()
        } else {
            Method::GET
        };
        let mut request = Request::new(body.map_or_else(empty_body, full_body));
        *request.method_mut() = method;
        *request.uri_mut() = self.spec.address.clone();
        *request.headers_mut() = auth_request_headers(client, &self.spec);
        request
    }

    /// Sends the auth request and reads the answer whole, all within the timeout.
    async fn exchange(
        &self,
        request: Request<Body>,
    ) -> Result<(http::response::Parts, Bytes), AuthError> {
        let limit = self
            .spec
            .max_response_body_size
            .unwrap_or(DEFAULT_MAX_RESPONSE_BODY_BYTES);
        let exchange = async {
            let response = self
                .transport
                .send(request)
                .await
                .map_err(AuthError::Send)?;
            let (parts, body) = response.into_parts();
            match read_limited(body, limit).await {
                Ok(bytes) => Ok((parts, bytes)),
                Err(ReadError::TooLarge) => Err(AuthError::TooLarge(limit)),
                Err(ReadError::Body(error)) => Err(AuthError::Read(error)),
            }
        };
        tokio::time::timeout(self.spec.timeout, exchange)
            .await
            .unwrap_or(Err(AuthError::Timeout(self.spec.timeout)))
    }

    /// The auth server's answer for the client: its status, headers and body.
    fn denied(&self, auth: http::response::Parts, body: Bytes) -> Response<Body> {
        let mut headers = auth.headers;
        strip_auth_hop_by_hop(&mut headers);
        // The body is whole: hyper writes its length.
        headers.remove(CONTENT_LENGTH);
        if !self.spec.preserve_location_header
            && let Some(location) = headers.get(LOCATION)
            && !location.is_empty()
        {
            let resolved = location
                .to_str()
                .ok()
                .map(|location| resolve_reference(&self.spec.address, location))
                .and_then(|resolved| HeaderValue::from_str(&resolved).ok());
            let Some(resolved) = resolved else {
                tracing::debug!(
                    ?location,
                    "forwardAuth: the auth server's Location is not a URL"
                );
                return status_only(StatusCode::INTERNAL_SERVER_ERROR);
            };
            headers.insert(LOCATION, resolved);
        }
        let mut response = Response::new(full_body(body));
        *response.status_mut() = auth.status;
        *response.headers_mut() = headers;
        response
    }
}

/// A 302 to `url` as Go's `http.Redirect` writes it: a path is cleaned (a relative one taken
/// from the request path's directory), and GET gets a small HTML body.
fn signin_redirect(url: &HeaderValue, client: &request::Parts) -> Response<Body> {
    let text = url.to_str().unwrap_or_default();
    let location = if has_scheme(text) || text.starts_with("//") {
        url.clone()
    } else {
        let (path, query) = split_query(text);
        let path = if path.starts_with('/') {
            path.to_owned()
        } else {
            let request_path = client.uri.path();
            let directory = &request_path[..request_path.rfind('/').map_or(0, |i| i + 1)];
            format!("{directory}{path}")
        };
        let mut cleaned = remove_dot_segments(&path);
        if let Some(query) = query {
            cleaned.push('?');
            cleaned.push_str(query);
        }
        HeaderValue::from_str(&cleaned).unwrap_or_else(|_| url.clone())
    };
    let get = client.method == Method::GET;
    let body = if get {
        let escaped = location
            .to_str()
            .unwrap_or_default()
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&#34;")
            .replace('\'', "&#39;");
        full_body(format!("<a href=\"{escaped}\">Found</a>.\n\n"))
    } else {
        empty_body()
    };
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::FOUND;
    let headers = response.headers_mut();
    headers.insert(LOCATION, location);
    if get || client.method == Method::HEAD {
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
    }
    response
}

/// An empty answer with `status`, as Traefik writes its own forwardAuth errors.
fn status_only(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(empty_body());
    *response.status_mut() = status;
    response
}

enum ReadError {
    TooLarge,
    Body(BoxError),
}

/// The whole body, refused past `limit` bytes (a declared length over it is refused unread).
async fn read_limited(mut body: Body, limit: u64) -> Result<Bytes, ReadError> {
    if body.size_hint().lower() > limit {
        return Err(ReadError::TooLarge);
    }
    let mut whole = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(ReadError::Body)?;
        if let Ok(data) = frame.into_data() {
            if (whole.len() + data.len()) as u64 > limit {
                return Err(ReadError::TooLarge);
            }
            whole.extend_from_slice(&data);
        }
    }
    Ok(whole.freeze())
}

/// The headers of the auth request, from the client's request head.
fn auth_request_headers(client: &request::Parts, spec: &ForwardAuthSpec) -> HeaderMap {
    let mut headers = client.headers.clone();
    strip_auth_hop_by_hop(&mut headers);
    // The auth request has its own target and framing.
    headers.remove(HOST);
    headers.remove(CONTENT_LENGTH);
    if spec.forward_headers == ForwardHeaders::Untrusted {
        remove_where(&mut headers, is_managed_x_header);
    }
    if !spec.auth_request_headers.is_empty() {
        let trusted = spec.forward_headers == ForwardHeaders::Trusted;
        remove_where(&mut headers, |name| {
            let allowed = spec.auth_request_headers.contains(name);
            !(allowed || trusted && is_managed_x_header(name))
        });
    }

    let info = client.extensions.get::<ClientInfo>();
    let peer = info.map(|info| info.peer.ip().to_canonical().to_string());
    let proto = if info.is_some_and(|info| info.tls) {
        "https"
    } else {
        "http"
    };
    let host = request_host(client);
    let uri = client.uri.path_and_query().map_or("/", |p| p.as_str());
    let uri = if uri.is_empty() { "/" } else { uri };
    let legacy = spec.forward_headers == ForwardHeaders::Legacy;
    // Legacy overwrites what it writes; the others only fill in what is missing.
    let write = |headers: &mut HeaderMap, name: HeaderName, value: Option<HeaderValue>| {
        if legacy || !headers.contains_key(&name) {
            match value {
                Some(value) => headers.insert(name, value),
                None => headers.remove(name),
            };
        }
    };

    let forwarded_for = match (spec.forward_headers, &peer) {
        (_, None) => None,
        (ForwardHeaders::Trusted, Some(peer)) => Some(trusted_forwarded_for(&client.headers, peer)),
        (_, Some(peer)) => Some(peer.clone()),
    };
    if let Some(chain) = forwarded_for.and_then(|chain| HeaderValue::from_str(&chain).ok()) {
        headers.insert(X_FORWARDED_FOR, chain);
    }
    let method = HeaderValue::from_str(client.method.as_str()).ok();
    write(&mut headers, X_FORWARDED_METHOD, method);
    write(
        &mut headers,
        X_FORWARDED_PROTO,
        Some(HeaderValue::from_static(proto)),
    );
    if !legacy {
        let secure = proto == "https"
            || headers
                .get(X_FORWARDED_PROTO)
                .is_some_and(|p| p == "https" || p == "wss");
        let port = host
            .as_deref()
            .and_then(host_port)
            .and_then(|port| HeaderValue::from_str(port).ok())
            .unwrap_or(HeaderValue::from_static(if secure { "443" } else { "80" }));
        write(&mut headers, X_FORWARDED_PORT, Some(port));
    }
    let host = host.and_then(|h| HeaderValue::from_str(&h).ok());
    write(&mut headers, X_FORWARDED_HOST, host);
    write(
        &mut headers,
        X_FORWARDED_URI,
        HeaderValue::from_str(uri).ok(),
    );
    headers
}

/// Traefik's chain for a trusted request: what came before, then the client. The entrypoint
/// has already appended the client, so it is added only when missing from the end.
fn trusted_forwarded_for(headers: &HeaderMap, peer: &str) -> String {
    let prior: Vec<&str> = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if prior.is_empty() {
        return peer.to_owned();
    }
    let prior = prior.join(", ");
    let last = prior.rsplit(',').next().map(str::trim);
    if last == Some(peer) {
        prior
    } else {
        format!("{prior}, {peer}")
    }
}

/// The request's host as Go's `Request.Host`: the `Host` header, else the URI authority.
fn request_host(client: &request::Parts) -> Option<String> {
    match client.headers.get(HOST) {
        Some(host) => host.to_str().ok().map(str::to_owned),
        None => client.uri.authority().map(|a| a.as_str().to_owned()),
    }
}

/// The port of `name:port` or `[v6]:port`.
fn host_port(host: &str) -> Option<&str> {
    let port = if host.starts_with('[') {
        host.split_once("]:")?.1
    } else {
        let (name, port) = host.rsplit_once(':')?;
        if name.contains(':') {
            return None;
        }
        port
    };
    (!port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())).then_some(port)
}

fn is_managed_x_header(name: &HeaderName) -> bool {
    let name = name.as_str();
    if !name.starts_with('x') {
        return false;
    }
    if MANAGED_X_HEADERS.contains(&name) {
        return true;
    }
    // Go's server keeps `X_Forwarded_Proto` spellings; they are the same header to a backend.
    name.contains('_') && MANAGED_X_HEADERS.contains(&name.replace('_', "-").as_str())
}

fn remove_where(headers: &mut HeaderMap, mut remove: impl FnMut(&HeaderName) -> bool) {
    let names: Vec<HeaderName> = headers.keys().filter(|n| remove(n)).cloned().collect();
    for name in names {
        headers.remove(name);
    }
}

/// Traefik's hop-by-hop list for forwardAuth (`Proxy-Authorization` is meant for the auth
/// server), plus the headers `Connection` names.
fn strip_auth_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in listed.iter().chain(&[
        CONNECTION,
        KEEP_ALIVE,
        TE,
        TRAILER,
        TRANSFER_ENCODING,
        UPGRADE,
    ]) {
        headers.remove(name);
    }
}

/// Headers an auth answer never puts on the request: they frame or route the message, and
/// Go's client ignores them in a header map too.
fn is_framing(name: &HeaderName) -> bool {
    [
        CONTENT_LENGTH,
        TRANSFER_ENCODING,
        HOST,
        CONNECTION,
        KEEP_ALIVE,
        TE,
        TRAILER,
        UPGRADE,
    ]
    .contains(name)
}

/// Puts the auth server's `authResponseHeaders`, regex matches and `headerField` on the
/// request, replacing what the client sent under those names.
fn copy_auth_headers(request: &mut HeaderMap, auth: &HeaderMap, spec: &ForwardAuthSpec) {
    let copy = |request: &mut HeaderMap, name: &HeaderName| {
        for value in auth.get_all(name) {
            request.append(name.clone(), value.clone());
        }
    };
    for name in spec.auth_response_headers.iter().filter(|n| !is_framing(n)) {
        request.remove(name);
        copy(request, name);
    }
    if let Some(regex) = &spec.auth_response_headers_regex {
        let matches =
            |name: &HeaderName| !is_framing(name) && regex.is_match(&canonical_name(name.as_str()));
        remove_where(request, matches);
        let names: Vec<&HeaderName> = auth.keys().filter(|n| matches(n)).collect();
        for name in names {
            copy(request, name);
        }
    }
    if let Some(field) = &spec.header_field {
        request.remove(field);
        if let Some(value) = auth.get(field) {
            request.insert(field.clone(), value.clone());
        }
    }
}

/// Go's canonical form of a header name (`x-auth-user` → `X-Auth-User`), which is what
/// Traefik's regexes are written against.
fn canonical_name(name: &str) -> String {
    let mut upper = true;
    name.chars()
        .map(|c| {
            let out = if upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            upper = c == '-';
            out
        })
        .collect()
}

/// The backend's `Set-Cookie` headers for the cookies named in `names` are replaced by the
/// auth server's (`auth`) cookies of those names.
fn merge_cookies(response: &mut HeaderMap, auth: &[HeaderValue], names: &HashSet<String>) {
    let listed = |value: &HeaderValue| cookie_name(value).is_some_and(|name| names.contains(name));
    let kept: Vec<HeaderValue> = response
        .get_all(SET_COOKIE)
        .iter()
        .filter(|value| !listed(value))
        .cloned()
        .collect();
    response.remove(SET_COOKIE);
    for value in kept
        .into_iter()
        .chain(auth.iter().filter(|v| listed(v)).cloned())
    {
        response.append(SET_COOKIE, value);
    }
}

/// The name of a `Set-Cookie` value: what comes before the first `=`, trimmed.
fn cookie_name(value: &HeaderValue) -> Option<&str> {
    let (name, _) = value.to_str().ok()?.split_once('=')?;
    let name = name.trim();
    (!name.is_empty()).then_some(name)
}

/// `reference` resolved against `base` (RFC 3986 §5.2), as Go's `Response.Location` does
/// with the auth request's URL.
fn resolve_reference(base: &Uri, reference: &str) -> String {
    let (reference, fragment) = match reference.split_once('#') {
        Some((rest, fragment)) => (rest, Some(fragment)),
        None => (reference, None),
    };
    let scheme = base.scheme_str().unwrap_or("http");
    let authority = base.authority().map_or("", |a| a.as_str());
    let mut out = if has_scheme(reference) {
        reference.to_owned()
    } else if let Some(rest) = reference.strip_prefix("//") {
        let (authority, path_and_query) = match rest.find(['/', '?']) {
            Some(at) => rest.split_at(at),
            None => (rest, ""),
        };
        let (path, query) = split_query(path_and_query);
        let path = if path.is_empty() {
            String::new()
        } else {
            remove_dot_segments(path)
        };
        join_url(scheme, authority, &path, query)
    } else {
        let (path, query) = split_query(reference);
        let path = if path.is_empty() {
            base.path().to_owned()
        } else if path.starts_with('/') {
            remove_dot_segments(path)
        } else {
            let base_path = base.path();
            let directory = &base_path[..base_path.rfind('/').map_or(0, |i| i + 1)];
            remove_dot_segments(&format!("{directory}{path}"))
        };
        // Only an empty reference (or a bare fragment) keeps the base's query.
        let query = match query {
            Some(query) => Some(query),
            None if reference.is_empty() => base.query(),
            None => None,
        };
        join_url(scheme, authority, &path, query)
    };
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

fn join_url(scheme: &str, authority: &str, path: &str, query: Option<&str>) -> String {
    match query {
        Some(query) => format!("{scheme}://{authority}{path}?{query}"),
        None => format!("{scheme}://{authority}{path}"),
    }
}

/// Whether a URL reference starts with a scheme (`https:`, `mailto:`).
fn has_scheme(reference: &str) -> bool {
    reference.split_once(':').is_some_and(|(scheme, _)| {
        scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    })
}

fn split_query(reference: &str) -> (&str, Option<&str>) {
    match reference.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (reference, None),
    }
}

/// RFC 3986 §5.2.4 on an absolute path: `.` and `..` segments go, a trailing one leaving
/// a trailing slash.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // `split` yields at least one segment, even for an empty path.
    let last = segments.len() - 1;
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            "." => {
                if i == last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if i == last {
                    out.push("");
                }
            }
            segment => out.push(segment),
        }
    }
    format!("/{}", out.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn spec(address: &str) -> ForwardAuthSpec {
        ForwardAuthSpec {
            address: address.parse().unwrap(),
            forward_headers: ForwardHeaders::Legacy,
            auth_response_headers: Vec::new(),
            auth_response_headers_regex: None,
            auth_request_headers: Vec::new(),
            add_auth_cookies_to_response: HashSet::new(),
            header_field: None,
            forward_body: false,
            max_body_size: None,
            max_response_body_size: None,
            preserve_location_header: false,
            preserve_request_method: false,
            auth_signin_url: None,
            timeout: AUTH_TIMEOUT,
        }
    }

    fn client_request(tls: bool) -> Request<Body> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri("/app/items?id=1")
            .header("host", "app.example.com:8443")
            .header("content-length", "0")
            .header("connection", "keep-alive, x-hop")
            .header("x-hop", "1")
            .header("proxy-authorization", "Basic eA==")
            .header("cookie", "session=s1")
            .header("x-forwarded-for", "198.51.100.1, 127.0.0.9")
            .header("x-forwarded-proto", "wss")
            .header("x-forwarded-prefix", "/app")
            .header("x-forwarded-uri", "/forged")
            .body(empty_body())
            .unwrap();
        request.extensions_mut().insert(ClientInfo {
            peer: "127.0.0.9:50000".parse().unwrap(),
            local: "127.0.0.1:8443".parse().unwrap(),
            tls,
            entrypoint: "web".into(),
            notes: None,
        });
        request
    }

    fn headers_for(spec: &ForwardAuthSpec, tls: bool) -> HeaderMap {
        let (parts, _) = client_request(tls).into_parts();
        auth_request_headers(&parts, spec)
    }

    fn get<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
        headers.get(name).map(|v| v.to_str().unwrap())
    }

    #[test]
    fn legacy_mode_writes_the_five_headers_and_passes_the_others() {
        let h = headers_for(&spec("http://auth:9000/verify"), false);
        assert_eq!(get(&h, "x-forwarded-for"), Some("127.0.0.9"));
        assert_eq!(get(&h, "x-forwarded-method"), Some("POST"));
        assert_eq!(get(&h, "x-forwarded-proto"), Some("http"));
        assert_eq!(get(&h, "x-forwarded-host"), Some("app.example.com:8443"));
        assert_eq!(get(&h, "x-forwarded-uri"), Some("/app/items?id=1"));
        assert_eq!(get(&h, "x-forwarded-prefix"), Some("/app"));
        assert_eq!(get(&h, "proxy-authorization"), Some("Basic eA=="));
        assert_eq!(get(&h, "cookie"), Some("session=s1"));
        for gone in [
            "host",
            "content-length",
            "connection",
            "x-hop",
            "x-forwarded-port",
        ] {
            assert_eq!(get(&h, gone), None, "{gone}");
        }
    }

    #[test]
    fn untrusted_mode_drops_every_managed_header_then_writes_them() {
        let mut spec = spec("http://auth:9000/verify");
        spec.forward_headers = ForwardHeaders::Untrusted;
        let h = headers_for(&spec, true);
        assert_eq!(get(&h, "x-forwarded-for"), Some("127.0.0.9"));
        assert_eq!(get(&h, "x-forwarded-proto"), Some("https"));
        assert_eq!(get(&h, "x-forwarded-port"), Some("8443"));
        assert_eq!(get(&h, "x-forwarded-uri"), Some("/app/items?id=1"));
        assert_eq!(get(&h, "x-forwarded-prefix"), None);
    }

    #[test]
    fn trusted_mode_keeps_the_requests_headers_and_fills_in_the_rest() {
        let mut spec = spec("http://auth:9000/verify");
        spec.forward_headers = ForwardHeaders::Trusted;
        let h = headers_for(&spec, false);
        // The entrypoint already ended the chain with the client.
        assert_eq!(get(&h, "x-forwarded-for"), Some("198.51.100.1, 127.0.0.9"));
        assert_eq!(get(&h, "x-forwarded-proto"), Some("wss"));
        assert_eq!(get(&h, "x-forwarded-uri"), Some("/forged"));
        assert_eq!(get(&h, "x-forwarded-method"), Some("POST"));
        assert_eq!(get(&h, "x-forwarded-port"), Some("8443"));
    }

    #[test]
    fn a_chain_not_ending_with_the_client_gets_it_appended() {
        let mut headers = HeaderMap::new();
        headers.insert(X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.1"));
        assert_eq!(
            trusted_forwarded_for(&headers, "10.0.0.2"),
            "10.0.0.1, 10.0.0.2"
        );
        assert_eq!(
            trusted_forwarded_for(&HeaderMap::new(), "10.0.0.2"),
            "10.0.0.2"
        );
    }

    #[test]
    fn auth_request_headers_filter_what_the_client_sent() {
        let mut spec = spec("http://auth:9000/verify");
        spec.auth_request_headers = vec![HeaderName::from_static("cookie")];
        let h = headers_for(&spec, false);
        let mut names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "cookie",
                "x-forwarded-for",
                "x-forwarded-host",
                "x-forwarded-method",
                "x-forwarded-proto",
                "x-forwarded-uri"
            ]
        );
        // Trusted, the managed headers pass the filter too.
        spec.forward_headers = ForwardHeaders::Trusted;
        let h = headers_for(&spec, false);
        assert_eq!(get(&h, "x-forwarded-prefix"), Some("/app"));
        assert_eq!(get(&h, "proxy-authorization"), None);
    }

    #[test]
    fn auth_headers_replace_the_clients_by_name_regex_and_header_field() {
        let mut spec = spec("http://auth:9000/verify");
        spec.auth_response_headers = vec![HeaderName::from_static("x-user")];
        spec.auth_response_headers_regex = Some(Regex::new("^X-Auth-").unwrap());
        spec.header_field = Some(HeaderName::from_static("x-who"));
        let mut request = HeaderMap::new();
        for (name, value) in [
            ("x-user", "forged"),
            ("x-auth-role", "forged"),
            ("x-who", "forged"),
            ("x-kept", "1"),
        ] {
            request.insert(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        let mut auth = HeaderMap::new();
        auth.append("x-user", HeaderValue::from_static("alice"));
        auth.append("x-auth-group", HeaderValue::from_static("a"));
        auth.append("x-auth-group", HeaderValue::from_static("b"));
        auth.append("content-length", HeaderValue::from_static("9"));
        auth.append("x-other", HeaderValue::from_static("no"));
        copy_auth_headers(&mut request, &auth, &spec);
        assert_eq!(get(&request, "x-user"), Some("alice"));
        assert_eq!(get(&request, "x-auth-role"), None);
        let groups: Vec<_> = request.get_all("x-auth-group").iter().collect();
        assert_eq!(groups, ["a", "b"]);
        assert_eq!(get(&request, "x-who"), None);
        assert_eq!(get(&request, "x-kept"), Some("1"));
        assert_eq!(get(&request, "x-other"), None);
        assert_eq!(get(&request, "content-length"), None);
    }

    #[test]
    fn header_names_are_matched_in_gos_canonical_form() {
        assert_eq!(canonical_name("x-auth-user"), "X-Auth-User");
        assert_eq!(canonical_name("www-authenticate"), "Www-Authenticate");
    }

    #[test]
    fn listed_auth_cookies_replace_the_backends() {
        let names: HashSet<String> = ["session".to_owned()].into();
        let mut response = HeaderMap::new();
        response.append(SET_COOKIE, HeaderValue::from_static("session=backend"));
        response.append(SET_COOKIE, HeaderValue::from_static("theme=dark"));
        let auth = [
            HeaderValue::from_static("session=auth; Path=/; HttpOnly"),
            HeaderValue::from_static("tracking=1"),
        ];
        merge_cookies(&mut response, &auth, &names);
        let cookies: Vec<_> = response.get_all(SET_COOKIE).iter().collect();
        assert_eq!(cookies, ["theme=dark", "session=auth; Path=/; HttpOnly"]);
    }

    #[test]
    fn locations_resolve_against_the_auth_address() {
        let base: Uri = "http://auth:9000/oauth/verify?rd=1".parse().unwrap();
        for (location, expected) in [
            ("https://idp.example/login", "https://idp.example/login"),
            ("/login?next=%2F", "http://auth:9000/login?next=%2F"),
            ("login", "http://auth:9000/oauth/login"),
            ("../login/./x", "http://auth:9000/login/x"),
            ("//idp.example/a/../b", "http://idp.example/b"),
            ("?q=2", "http://auth:9000/oauth/verify?q=2"),
            ("#top", "http://auth:9000/oauth/verify?rd=1#top"),
            ("sub/", "http://auth:9000/oauth/sub/"),
            ("..", "http://auth:9000/"),
        ] {
            assert_eq!(resolve_reference(&base, location), expected, "{location}");
        }
    }

    /// A one-shot HTTP/1.1 auth server on loopback: records each request (head and body as
    /// text) and answers what `answer` gives for it, or nothing when it gives `None`.
    struct RawAuthServer {
        addr: SocketAddr,
        seen: Arc<Mutex<Vec<String>>>,
    }

    impl RawAuthServer {
        async fn start(answer: fn(&str) -> Option<String>) -> RawAuthServer {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let seen = Arc::new(Mutex::new(Vec::new()));
            let record = Arc::clone(&seen);
            tokio::spawn(async move {
                while let Ok((mut stream, _)) = listener.accept().await {
                    let record = Arc::clone(&record);
                    tokio::spawn(async move {
                        let request = read_request(&mut stream).await;
                        record.lock().unwrap().push(request.clone());
                        match answer(&request) {
                            Some(response) => {
                                let _ = stream.write_all(response.as_bytes()).await;
                            }
                            None => std::future::pending::<()>().await,
                        }
                    });
                }
            });
            RawAuthServer { addr, seen }
        }

        fn url(&self) -> String {
            format!("http://{}/verify", self.addr)
        }

        fn last(&self) -> String {
            self.seen
                .lock()
                .unwrap()
                .last()
                .cloned()
                .unwrap_or_default()
        }
    }

    async fn read_request(stream: &mut tokio::net::TcpStream) -> String {
        let mut buffer = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&buffer).into_owned();
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(str::to_owned)
                    })
                    .and_then(|l| l.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if buffer.len() >= end + 4 + length {
                    return text.to_ascii_lowercase();
                }
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return String::from_utf8_lossy(&buffer).to_ascii_lowercase(),
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn allow_or_deny(request: &str) -> Option<String> {
        if request.contains("x-token: good") {
            Some("HTTP/1.1 200 OK\r\nx-user: alice\r\nset-cookie: session=auth\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_owned())
        } else if request.contains("x-token: hang") {
            None
        } else if request.contains("x-token: none") {
            Some(
                "HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    .to_owned(),
            )
        } else {
            Some("HTTP/1.1 302 Found\r\nlocation: /login\r\nwww-authenticate: Bearer\r\ncontent-length: 6\r\nconnection: close\r\n\r\ndenied".to_owned())
        }
    }

    /// Answers 200 with the request's headers `x-user` and `x-token` and its body, and sets
    /// a `session` cookie of its own.
    struct Backend;
    impl Handler for Backend {
        fn call(&self, request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
            Box::pin(async move {
                let (parts, body) = request.into_parts();
                let body = body.collect().await.unwrap().to_bytes();
                let user = get(&parts.headers, "x-user").unwrap_or("-").to_owned();
                let mut response = Response::new(full_body(format!(
                    "user={user} body={}",
                    String::from_utf8_lossy(&body)
                )));
                response
                    .headers_mut()
                    .append(SET_COOKIE, HeaderValue::from_static("session=backend"));
                response
            })
        }
    }

    fn middleware(spec: ForwardAuthSpec) -> SharedHandler {
        ForwardAuth::new(spec, TransportSettings::default())
            .unwrap()
            .wrap(Arc::new(Backend))
    }

    fn request(token: &str, body: &'static str) -> Request<Body> {
        let mut request = client_request(false);
        request
            .headers_mut()
            .insert("x-token", HeaderValue::from_str(token).unwrap());
        request
            .headers_mut()
            .insert("x-user", HeaderValue::from_static("forged"));
        request.headers_mut().remove(CONTENT_LENGTH);
        *request.body_mut() = full_body(body);
        request
    }

    async fn read(response: Response<Body>) -> (StatusCode, HeaderMap, String) {
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (
            parts.status,
            parts.headers,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    #[tokio::test]
    async fn an_allowed_request_goes_on_with_the_auth_headers_and_cookies() {
        let auth = RawAuthServer::start(allow_or_deny).await;
        let mut spec = spec(&auth.url());
        spec.auth_response_headers = vec![HeaderName::from_static("x-user")];
        spec.add_auth_cookies_to_response = ["session".to_owned()].into();
        let (status, headers, body) = read(middleware(spec).call(request("good", "")).await).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "user=alice body=");
        let cookies: Vec<_> = headers.get_all(SET_COOKIE).iter().collect();
        assert_eq!(cookies, ["session=auth"]);
        let seen = auth.last();
        assert!(seen.starts_with("get /verify http/1.1\r\n"), "{seen}");
        assert!(seen.contains("x-forwarded-method: post\r\n"), "{seen}");
    }

    #[tokio::test]
    async fn a_denial_is_the_auth_servers_answer_with_an_absolute_location() {
        let auth = RawAuthServer::start(allow_or_deny).await;
        let handler = middleware(spec(&auth.url()));
        let (status, headers, body) = read(handler.call(request("bad", "")).await).await;
        assert_eq!(status, StatusCode::FOUND);
        assert_eq!(body, "denied");
        assert_eq!(get(&headers, "www-authenticate"), Some("Bearer"));
        assert_eq!(get(&headers, "connection"), None);
        let expected = format!("http://{}/login", auth.addr);
        assert_eq!(get(&headers, "location"), Some(expected.as_str()));

        let mut preserving = spec(&auth.url());
        preserving.preserve_location_header = true;
        let handler = middleware(preserving);
        let (_, headers, _) = read(handler.call(request("bad", "")).await).await;
        assert_eq!(get(&headers, "location"), Some("/login"));
    }

    #[tokio::test]
    async fn forward_body_sends_the_body_to_both_and_refuses_it_over_the_limit() {
        let auth = RawAuthServer::start(allow_or_deny).await;
        let mut spec = spec(&auth.url());
        spec.forward_body = true;
        spec.preserve_request_method = true;
        spec.max_body_size = Some(8);
        let handler = middleware(spec);
        let (status, _, body) = read(handler.call(request("good", "payload")).await).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "user=forged body=payload");
        let seen = auth.last();
        assert!(seen.starts_with("post /verify "), "{seen}");
        assert!(seen.ends_with("\r\n\r\npayload"), "{seen}");

        let (status, _, body) = read(handler.call(request("good", "too long!")).await).await;
        assert_eq!((status, body.as_str()), (StatusCode::UNAUTHORIZED, ""));
    }

    #[tokio::test]
    async fn an_unreachable_auth_server_is_a_500() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let handler = middleware(spec(&format!("http://{addr}/verify")));
        let (status, _, body) = read(handler.call(request("good", "")).await).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::INTERNAL_SERVER_ERROR, "")
        );
    }

    #[tokio::test]
    async fn a_hanging_auth_server_is_a_500_after_the_timeout() {
        let auth = RawAuthServer::start(allow_or_deny).await;
        let mut spec = spec(&auth.url());
        spec.timeout = Duration::from_millis(200);
        let handler = middleware(spec);
        let started = std::time::Instant::now();
        let (status, _, _) = read(handler.call(request("hang", "")).await).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_401_redirects_to_the_signin_url_when_there_is_one() {
        let auth = RawAuthServer::start(allow_or_deny).await;
        let mut spec = spec(&auth.url());
        spec.auth_signin_url = Some(HeaderValue::from_static("https://login.example/?rd=a&b"));
        let handler = middleware(spec);
        let mut denied = request("none", "");
        *denied.method_mut() = Method::GET;
        let (status, headers, body) = read(handler.call(denied).await).await;
        assert_eq!(status, StatusCode::FOUND);
        assert_eq!(
            get(&headers, "location"),
            Some("https://login.example/?rd=a&b")
        );
        assert_eq!(
            body,
            "<a href=\"https://login.example/?rd=a&amp;b\">Found</a>.\n\n"
        );
        // Other refusals are passed on as they are.
        let (status, _, _) = read(handler.call(request("bad", "")).await).await;
        assert_eq!(status, StatusCode::FOUND);
        let (status, _, body) = read(handler.call(request("good", "")).await).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "user=forged body=")
        );
    }

    #[test]
    fn a_relative_signin_url_is_relative_to_the_request_path() {
        let (parts, _) = Request::post("/app/items/1").body(()).unwrap().into_parts();
        let response = signin_redirect(&HeaderValue::from_static("../login"), &parts);
        assert_eq!(get(response.headers(), "location"), Some("/app/login"));
        assert_eq!(get(response.headers(), "content-type"), None);
    }

    #[tokio::test]
    async fn an_answer_body_over_the_limit_is_a_401() {
        let auth = RawAuthServer::start(allow_or_deny).await;
        let mut spec = spec(&auth.url());
        spec.max_response_body_size = Some(3);
        let (status, _, _) = read(middleware(spec).call(request("bad", "")).await).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
}
