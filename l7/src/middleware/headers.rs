//! `headers{…}`: custom request and response headers, CORS, security headers and the
//! `allowedHosts` check, as Traefik's `headers` middleware.
//!
//! Layers in Traefik's order, outermost first: CORS preflight (answered here with 200, never
//! forwarded), then custom request headers, then the host check (400 "Bad Host"), then the
//! next handler. On the way back the security headers are set first, then the custom
//! response headers (so that they win), then the CORS headers. Every response from the next
//! handler passes back through, error responses included.
//!
//! Everything from configuration is checked once in [`HeadersSpec::build`]: a header name or
//! value that HTTP cannot carry (a CR/LF above all) is an error, never sent.

use std::sync::Arc;

use http::header::{
    CONTENT_TYPE, HOST, HeaderName, HeaderValue, ORIGIN, VARY, X_CONTENT_TYPE_OPTIONS,
};
use http::uri::Authority;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use regex::Regex;

use super::Middleware;
use crate::handler::{Body, BoxFuture, ClientInfo, Handler, SharedHandler, empty_body, full_body};

const ALLOW_ORIGIN: HeaderName = HeaderName::from_static("access-control-allow-origin");
const ALLOW_CREDENTIALS: HeaderName = HeaderName::from_static("access-control-allow-credentials");
const ALLOW_HEADERS: HeaderName = HeaderName::from_static("access-control-allow-headers");
const ALLOW_METHODS: HeaderName = HeaderName::from_static("access-control-allow-methods");
const EXPOSE_HEADERS: HeaderName = HeaderName::from_static("access-control-expose-headers");
const MAX_AGE: HeaderName = HeaderName::from_static("access-control-max-age");
const REQUEST_METHOD: HeaderName = HeaderName::from_static("access-control-request-method");

/// A `headers` middleware as configured; every field is Traefik's option of the same name.
/// Empty strings and lists mean "not set".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeadersSpec {
    /// Set on the request; an empty value deletes the header.
    pub custom_request_headers: Vec<(String, String)>,
    /// Set on the response; an empty value deletes the header.
    pub custom_response_headers: Vec<(String, String)>,
    pub access_control_allow_credentials: bool,
    pub access_control_allow_headers: Vec<String>,
    pub access_control_allow_methods: Vec<String>,
    /// Origins answered as themselves; `*` allows any (and is answered as `*`).
    pub access_control_allow_origin_list: Vec<String>,
    pub access_control_allow_origin_list_regex: Vec<String>,
    pub access_control_expose_headers: Vec<String>,
    /// Seconds, sent as `Access-Control-Max-Age` on preflight answers.
    pub access_control_max_age: i64,
    /// Adds `Origin` to the response's `Vary`.
    pub add_vary_header: bool,
    /// Hosts the request may name; empty allows any.
    pub allowed_hosts: Vec<String>,
    /// Headers holding the host for `allowed_hosts`, first present wins.
    pub hosts_proxy_headers: Vec<String>,
    /// Header/value pairs that mark a request as HTTPS.
    pub ssl_proxy_headers: Vec<(String, String)>,
    /// 0: no `Strict-Transport-Security`.
    pub sts_seconds: i64,
    pub sts_include_subdomains: bool,
    pub sts_preload: bool,
    /// Sends STS on plain HTTP requests too.
    pub force_sts_header: bool,
    pub frame_deny: bool,
    pub custom_frame_options_value: String,
    pub content_type_nosniff: bool,
    pub browser_xss_filter: bool,
    pub custom_browser_xss_value: String,
    pub content_security_policy: String,
    pub content_security_policy_report_only: String,
    pub public_key: String,
    pub referrer_policy: String,
    pub permissions_policy: String,
    /// Deprecated `featurePolicy`.
    pub feature_policy: String,
    /// Turns off the host check and STS, as on a developer's machine.
    pub is_development: bool,
}

/// Why a [`HeadersSpec`] cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum HeadersError {
    #[error("{option}: {name:?} is not a valid header name")]
    Name { option: &'static str, name: String },
    #[error(
        "{option}: the value for {name} is not a valid header value (control characters such as CR or LF are not allowed)"
    )]
    Value { option: &'static str, name: String },
    #[error("accessControlAllowOriginListRegex {pattern:?}: {source}")]
    Regex {
        pattern: String,
        source: regex::Error,
    },
    #[error("stsSeconds {0} is negative")]
    NegativeSts(i64),
}

impl HeadersSpec {
    /// Checks every name, value and pattern and prepares the headers to send.
    pub fn build(&self) -> Result<Headers, HeadersError> {
        let cors = self.cors()?;
        let security = self.security()?;
        Ok(Headers(Arc::new(Compiled {
            request_headers: custom(&self.custom_request_headers, "customRequestHeaders")?,
            response_headers: custom(&self.custom_response_headers, "customResponseHeaders")?,
            cors,
            security,
        })))
    }

    fn has_cors(&self) -> bool {
        self.access_control_allow_credentials
            || !self.access_control_allow_headers.is_empty()
            || !self.access_control_allow_methods.is_empty()
            || !self.access_control_allow_origin_list.is_empty()
            || !self.access_control_allow_origin_list_regex.is_empty()
            || !self.access_control_expose_headers.is_empty()
            || self.access_control_max_age != 0
            || self.add_vary_header
    }

    fn cors(&self) -> Result<Option<Cors>, HeadersError> {
        if !self.has_cors() {
            return Ok(None);
        }
        let origin_regexes = self
            .access_control_allow_origin_list_regex
            .iter()
            .map(|pattern| {
                Regex::new(pattern).map_err(|source| HeadersError::Regex {
                    pattern: pattern.clone(),
                    source,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Some(Cors {
            allow_credentials: self.access_control_allow_credentials,
            allow_headers: joined(
                &self.access_control_allow_headers,
                "accessControlAllowHeaders",
            )?,
            allow_methods: joined(
                &self.access_control_allow_methods,
                "accessControlAllowMethods",
            )?,
            origin_list: self.access_control_allow_origin_list.clone(),
            origin_regexes,
            expose_headers: joined(
                &self.access_control_expose_headers,
                "accessControlExposeHeaders",
            )?,
            max_age: HeaderValue::from(self.access_control_max_age),
            add_vary: self.add_vary_header,
        }))
    }

    fn security(&self) -> Result<Security, HeadersError> {
        if self.sts_seconds < 0 {
            return Err(HeadersError::NegativeSts(self.sts_seconds));
        }
        let sts = if self.sts_seconds != 0 && !self.is_development {
            let mut sts = format!("max-age={}", self.sts_seconds);
            if self.sts_include_subdomains {
                sts.push_str("; includeSubDomains");
            }
            if self.sts_preload {
                sts.push_str("; preload");
            }
            Some(HeaderValue::try_from(sts).map_err(|_| HeadersError::Value {
                option: "stsSeconds",
                name: "Strict-Transport-Security".into(),
            })?)
        } else {
            None
        };
        let frame_options = match (self.custom_frame_options_value.as_str(), self.frame_deny) {
            ("", true) => "DENY",
            (custom, _) => custom,
        };
        let xss = match (
            self.custom_browser_xss_value.as_str(),
            self.browser_xss_filter,
        ) {
            ("", true) => "1; mode=block",
            (custom, _) => custom,
        };
        let nosniff = if self.content_type_nosniff {
            "nosniff"
        } else {
            ""
        };
        let candidates = [
            ("x-frame-options", frame_options, "customFrameOptionsValue"),
            ("x-content-type-options", nosniff, "contentTypeNosniff"),
            ("x-xss-protection", xss, "customBrowserXSSValue"),
            (
                "content-security-policy",
                self.content_security_policy.as_str(),
                "contentSecurityPolicy",
            ),
            (
                "content-security-policy-report-only",
                self.content_security_policy_report_only.as_str(),
                "contentSecurityPolicyReportOnly",
            ),
            ("public-key-pins", self.public_key.as_str(), "publicKey"),
            (
                "referrer-policy",
                self.referrer_policy.as_str(),
                "referrerPolicy",
            ),
            (
                "permissions-policy",
                self.permissions_policy.as_str(),
                "permissionsPolicy",
            ),
            (
                "feature-policy",
                self.feature_policy.as_str(),
                "featurePolicy",
            ),
        ];
        let mut fixed = Vec::new();
        for (name, value, option) in candidates {
            if value.is_empty() {
                continue;
            }
            let value = HeaderValue::from_str(value).map_err(|_| HeadersError::Value {
                option,
                name: name.to_owned(),
            })?;
            fixed.push((HeaderName::from_static(name), value));
        }
        let allowed_hosts = if self.is_development {
            Vec::new()
        } else {
            self.allowed_hosts.clone()
        };
        let hosts_proxy_headers = self
            .hosts_proxy_headers
            .iter()
            .map(|name| header_name(name, "hostsProxyHeaders"))
            .collect::<Result<_, _>>()?;
        let ssl_proxy_headers = custom(&self.ssl_proxy_headers, "sslProxyHeaders")?
            .into_iter()
            .map(|(name, value)| (name, value.unwrap_or_else(|| HeaderValue::from_static(""))))
            .collect();
        Ok(Security {
            allowed_hosts,
            hosts_proxy_headers,
            ssl_proxy_headers,
            sts,
            force_sts: self.force_sts_header,
            fixed,
        })
    }
}

fn header_name(name: &str, option: &'static str) -> Result<HeaderName, HeadersError> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| HeadersError::Name {
        option,
        name: name.to_owned(),
    })
}

/// Name/value pairs; an empty value becomes `None` (delete).
fn custom(
    pairs: &[(String, String)],
    option: &'static str,
) -> Result<Vec<(HeaderName, Option<HeaderValue>)>, HeadersError> {
    pairs
        .iter()
        .map(|(name, value)| {
            let header = header_name(name, option)?;
            if value.is_empty() {
                return Ok((header, None));
            }
            let value = HeaderValue::from_str(value).map_err(|_| HeadersError::Value {
                option,
                name: name.clone(),
            })?;
            Ok((header, Some(value)))
        })
        .collect()
}

/// A list sent as one comma-separated header value; `None` when empty.
fn joined(items: &[String], option: &'static str) -> Result<Option<HeaderValue>, HeadersError> {
    if items.is_empty() {
        return Ok(None);
    }
    HeaderValue::try_from(items.join(","))
        .map(Some)
        .map_err(|_| HeadersError::Value {
            option,
            name: items.join(","),
        })
}

/// A built `headers` middleware; cheap to clone.
#[derive(Clone)]
pub struct Headers(Arc<Compiled>);

impl Middleware for Headers {
    fn wrap(&self, next: SharedHandler) -> SharedHandler {
        Arc::new(HeadersHandler {
            compiled: self.0.clone(),
            next,
        })
    }
}

struct Compiled {
    request_headers: Vec<(HeaderName, Option<HeaderValue>)>,
    response_headers: Vec<(HeaderName, Option<HeaderValue>)>,
    /// `None` when no CORS option is set: responses keep the backend's CORS headers.
    cors: Option<Cors>,
    security: Security,
}

struct Cors {
    allow_credentials: bool,
    allow_headers: Option<HeaderValue>,
    allow_methods: Option<HeaderValue>,
    origin_list: Vec<String>,
    origin_regexes: Vec<Regex>,
    expose_headers: Option<HeaderValue>,
    max_age: HeaderValue,
    add_vary: bool,
}

struct Security {
    /// Empty: any host (also in development).
    allowed_hosts: Vec<String>,
    hosts_proxy_headers: Vec<HeaderName>,
    ssl_proxy_headers: Vec<(HeaderName, HeaderValue)>,
    /// `None`: no STS (unset, or development).
    sts: Option<HeaderValue>,
    force_sts: bool,
    /// Headers every response gets.
    fixed: Vec<(HeaderName, HeaderValue)>,
}

struct HeadersHandler {
    compiled: Arc<Compiled>,
    next: SharedHandler,
}

impl Handler for HeadersHandler {
    fn call(&self, mut request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
        let compiled = &*self.compiled;
        let origin = request.headers().get(ORIGIN).cloned();
        if let Some(cors) = &compiled.cors
            && let Some(origin) = &origin
            && is_preflight(&request)
        {
            let response = cors.preflight(origin);
            return Box::pin(async move { response });
        }
        compiled.rewrite_request(&mut request);
        let security = &compiled.security;
        let response_security = if security.host_allowed(&request) {
            Some(security.is_https(&request))
        } else {
            None
        };
        Box::pin(async move {
            let mut response = match response_security {
                Some(https) => {
                    let mut response = self.next.call(request).await;
                    security.decorate(response.headers_mut(), https);
                    response
                }
                None => bad_host(),
            };
            compiled.finish_response(response.headers_mut(), origin.as_ref());
            response
        })
    }
}

/// An OPTIONS request naming the method it wants to use, from a page of some origin.
fn is_preflight(request: &Request<Body>) -> bool {
    request.method() == Method::OPTIONS
        && request
            .headers()
            .get(REQUEST_METHOD)
            .is_some_and(|m| !m.is_empty())
        && request.headers().get(ORIGIN).is_some_and(|o| !o.is_empty())
}

fn bad_host() -> Response<Body> {
    let mut response = Response::new(full_body("Bad Host\n"));
    *response.status_mut() = StatusCode::BAD_REQUEST;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

impl Compiled {
    fn rewrite_request(&self, request: &mut Request<Body>) {
        for (name, value) in &self.request_headers {
            match value {
                None => {
                    request.headers_mut().remove(name);
                }
                Some(value) => {
                    if name == HOST {
                        set_authority(request, value);
                    }
                    request.headers_mut().insert(name.clone(), value.clone());
                }
            }
        }
    }

    /// Custom response headers, then CORS, over whatever the response already has.
    fn finish_response(&self, headers: &mut HeaderMap, origin: Option<&HeaderValue>) {
        for (name, value) in &self.response_headers {
            match value {
                None => {
                    headers.remove(name);
                }
                Some(value) => {
                    headers.insert(name.clone(), value.clone());
                }
            }
        }
        if let Some(cors) = &self.cors {
            cors.decorate(headers, origin);
        }
    }
}

/// A custom `Host` also changes the authority of an absolute (HTTP/2) request URI, which
/// would otherwise name the old host upstream.
fn set_authority(request: &mut Request<Body>, host: &HeaderValue) {
    if request.uri().authority().is_none() {
        return;
    }
    let Ok(authority) = Authority::try_from(host.as_bytes()) else {
        return;
    };
    let mut parts = request.uri().clone().into_parts();
    parts.authority = Some(authority);
    if let Ok(uri) = Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
}

impl Cors {
    /// The `Access-Control-Allow-Origin` for a request from `origin`: `*` when the list
    /// allows any, the origin itself when listed or matched, else none.
    fn allow_origin(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        let origin_text = origin.and_then(|o| o.to_str().ok()).unwrap_or("");
        for item in &self.origin_list {
            if item == "*" {
                return Some(HeaderValue::from_static("*"));
            }
            if !origin_text.is_empty() && item == origin_text {
                return origin.cloned();
            }
        }
        if !origin_text.is_empty()
            && self
                .origin_regexes
                .iter()
                .any(|re| re.is_match(origin_text))
        {
            return origin.cloned();
        }
        None
    }

    fn preflight(&self, origin: &HeaderValue) -> Response<Body> {
        let mut response = Response::new(empty_body());
        let headers = response.headers_mut();
        if self.allow_credentials {
            headers.insert(ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        }
        if let Some(allowed) = &self.allow_headers {
            headers.insert(ALLOW_HEADERS, allowed.clone());
        }
        if let Some(allowed) = &self.allow_methods {
            headers.insert(ALLOW_METHODS, allowed.clone());
        }
        if let Some(allowed) = self.allow_origin(Some(origin)) {
            headers.insert(ALLOW_ORIGIN, allowed);
        }
        headers.insert(MAX_AGE, self.max_age.clone());
        response
    }

    /// The CORS headers of an actual (non-preflight) response; the backend's own
    /// `Access-Control-Allow-Origin` is replaced, so that only configured origins get one.
    fn decorate(&self, headers: &mut HeaderMap, origin: Option<&HeaderValue>) {
        headers.remove(ALLOW_ORIGIN);
        if let Some(allowed) = self.allow_origin(origin) {
            headers.insert(ALLOW_ORIGIN, allowed);
        }
        if self.add_vary && !varies_on_origin(headers) {
            headers.append(VARY, HeaderValue::from_static("Origin"));
        }
        if self.allow_credentials {
            headers.insert(ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        }
        if let Some(exposed) = &self.expose_headers {
            headers.insert(EXPOSE_HEADERS, exposed.clone());
        }
    }
}

fn varies_on_origin(headers: &HeaderMap) -> bool {
    headers
        .get_all(VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("origin"))
}

impl Security {
    /// The host the request names: the first present `hostsProxyHeaders` header, else the
    /// URI authority (HTTP/2) or `Host`.
    fn host_allowed(&self, request: &Request<Body>) -> bool {
        if self.allowed_hosts.is_empty() {
            return true;
        }
        let proxied = self
            .hosts_proxy_headers
            .iter()
            .filter_map(|name| request.headers().get(name))
            .find(|value| !value.is_empty());
        let host = match proxied {
            Some(value) => value.to_str().ok(),
            None => request
                .uri()
                .authority()
                .map(Authority::as_str)
                .or_else(|| request.headers().get(HOST).and_then(|h| h.to_str().ok())),
        };
        host.is_some_and(|host| {
            self.allowed_hosts
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(host))
        })
    }

    /// A TLS connection, an `https` URI, or one of the configured proxy headers with its
    /// value (`X-Forwarded-Proto` alone does not count, as in Traefik).
    fn is_https(&self, request: &Request<Body>) -> bool {
        let tls = request
            .extensions()
            .get::<ClientInfo>()
            .is_some_and(|info| info.tls);
        tls || request.uri().scheme_str() == Some("https")
            || self
                .ssl_proxy_headers
                .iter()
                .any(|(name, value)| request.headers().get(name) == Some(value))
    }

    fn decorate(&self, headers: &mut HeaderMap, https: bool) {
        if let Some(sts) = &self.sts
            && (https || self.force_sts)
        {
            headers.insert(http::header::STRICT_TRANSPORT_SECURITY, sts.clone());
        }
        for (name, value) in &self.fixed {
            headers.insert(name.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::{BoxFuture, Handler};
    use http_body_util::BodyExt;
    use std::net::SocketAddr;
    use std::sync::Mutex;

    /// A next handler that records the requests it gets and answers with `status` and a
    /// header set by "the backend".
    struct Backend {
        status: StatusCode,
        seen: Mutex<Vec<http::request::Parts>>,
    }

    impl Handler for Backend {
        fn call(&self, request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
            let (parts, _) = request.into_parts();
            self.seen.lock().unwrap().push(parts);
            let status = self.status;
            Box::pin(async move {
                let mut response = Response::new(full_body("backend"));
                *response.status_mut() = status;
                let headers = response.headers_mut();
                headers.insert("x-backend", HeaderValue::from_static("yes"));
                headers.insert(ALLOW_ORIGIN, HeaderValue::from_static("https://evil.test"));
                headers.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
                response
            })
        }
    }

    fn backend(status: StatusCode) -> Arc<Backend> {
        Arc::new(Backend {
            status,
            seen: Mutex::new(Vec::new()),
        })
    }

    fn handler(spec: HeadersSpec, next: &Arc<Backend>) -> SharedHandler {
        spec.build().unwrap().wrap(next.clone())
    }

    fn request(method: Method, host: &str, headers: &[(&str, &str)]) -> Request<Body> {
        let mut builder = Request::builder()
            .method(method)
            .uri("/x")
            .header(HOST, host);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(empty_body()).unwrap()
    }

    fn over_tls(mut request: Request<Body>) -> Request<Body> {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        request.extensions_mut().insert(ClientInfo {
            peer: addr,
            local: addr,
            tls: true,
            entrypoint: "websecure".into(),
            notes: None,
        });
        request
    }

    fn header<'a>(response: &'a Response<Body>, name: &str) -> Option<&'a str> {
        response.headers().get(name).map(|v| v.to_str().unwrap())
    }

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[tokio::test]
    async fn custom_request_headers_are_set_and_empty_values_delete() {
        let next = backend(StatusCode::OK);
        let h = handler(
            HeadersSpec {
                custom_request_headers: pairs(&[("X-Added", "1"), ("X-Secret", "")]),
                ..Default::default()
            },
            &next,
        );
        h.call(request(
            Method::GET,
            "a.test",
            &[("x-secret", "s"), ("x-added", "old")],
        ))
        .await;
        let seen = next.seen.lock().unwrap();
        let headers = &seen[0].headers;
        assert_eq!(headers.get_all("x-added").iter().count(), 1);
        assert_eq!(headers["x-added"], "1");
        assert!(headers.get("x-secret").is_none());
    }

    #[tokio::test]
    async fn custom_host_replaces_the_absolute_uri_authority_too() {
        let next = backend(StatusCode::OK);
        let h = handler(
            HeadersSpec {
                custom_request_headers: pairs(&[("Host", "inner.test")]),
                ..Default::default()
            },
            &next,
        );
        let req = Request::builder()
            .uri("https://outer.test/p?q")
            .body(empty_body())
            .unwrap();
        h.call(req).await;
        let seen = next.seen.lock().unwrap();
        assert_eq!(seen[0].uri, "https://inner.test/p?q");
        assert_eq!(seen[0].headers[HOST], "inner.test");
    }

    #[tokio::test]
    async fn custom_response_headers_are_set_and_deleted_on_error_responses_too() {
        let next = backend(StatusCode::BAD_GATEWAY);
        let h = handler(
            HeadersSpec {
                custom_response_headers: pairs(&[("X-Served-By", "edge"), ("X-Backend", "")]),
                ..Default::default()
            },
            &next,
        );
        let response = h.call(request(Method::GET, "a.test", &[])).await;
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(header(&response, "x-served-by"), Some("edge"));
        assert_eq!(header(&response, "x-backend"), None);
    }

    fn cors_spec() -> HeadersSpec {
        HeadersSpec {
            access_control_allow_credentials: true,
            access_control_allow_headers: vec!["X-A".into(), "X-B".into()],
            access_control_allow_methods: vec!["GET".into(), "PUT".into()],
            access_control_allow_origin_list: vec!["https://app.test".into()],
            access_control_allow_origin_list_regex: vec![r"^https://[a-z]+\.other\.test$".into()],
            access_control_expose_headers: vec!["X-E".into()],
            access_control_max_age: 600,
            add_vary_header: true,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn preflight_is_answered_here_with_the_cors_headers() {
        let next = backend(StatusCode::OK);
        let h = handler(cors_spec(), &next);
        let response = h
            .call(request(
                Method::OPTIONS,
                "a.test",
                &[
                    ("origin", "https://app.test"),
                    ("access-control-request-method", "PUT"),
                ],
            ))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(next.seen.lock().unwrap().is_empty(), "never forwarded");
        assert_eq!(
            header(&response, "access-control-allow-origin"),
            Some("https://app.test")
        );
        assert_eq!(
            header(&response, "access-control-allow-methods"),
            Some("GET,PUT")
        );
        assert_eq!(
            header(&response, "access-control-allow-headers"),
            Some("X-A,X-B")
        );
        assert_eq!(
            header(&response, "access-control-allow-credentials"),
            Some("true")
        );
        assert_eq!(header(&response, "access-control-max-age"), Some("600"));
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(body.is_empty());
    }

    #[tokio::test]
    async fn preflight_from_an_unknown_origin_gets_no_allow_origin() {
        let next = backend(StatusCode::OK);
        let h = handler(cors_spec(), &next);
        let response = h
            .call(request(
                Method::OPTIONS,
                "a.test",
                &[
                    ("origin", "https://evil.test"),
                    ("access-control-request-method", "PUT"),
                ],
            ))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header(&response, "access-control-allow-origin"), None);
    }

    #[tokio::test]
    async fn options_without_request_method_is_forwarded() {
        let next = backend(StatusCode::OK);
        let h = handler(cors_spec(), &next);
        h.call(request(
            Method::OPTIONS,
            "a.test",
            &[("origin", "https://app.test")],
        ))
        .await;
        assert_eq!(next.seen.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn simple_request_gets_the_matching_origin_vary_and_exposed_headers() {
        let next = backend(StatusCode::OK);
        let h = handler(cors_spec(), &next);
        let response = h
            .call(request(
                Method::GET,
                "a.test",
                &[("origin", "https://x.other.test")],
            ))
            .await;
        assert_eq!(
            header(&response, "access-control-allow-origin"),
            Some("https://x.other.test")
        );
        assert_eq!(
            header(&response, "access-control-expose-headers"),
            Some("X-E")
        );
        assert_eq!(
            header(&response, "access-control-allow-credentials"),
            Some("true")
        );
        let vary: Vec<_> = response.headers().get_all(VARY).iter().collect();
        assert_eq!(vary, ["Accept-Encoding", "Origin"]);
    }

    #[tokio::test]
    async fn backend_allow_origin_is_dropped_for_unlisted_origins() {
        let next = backend(StatusCode::OK);
        let h = handler(cors_spec(), &next);
        let response = h
            .call(request(
                Method::GET,
                "a.test",
                &[("origin", "https://evil.test")],
            ))
            .await;
        assert_eq!(header(&response, "access-control-allow-origin"), None);
    }

    #[tokio::test]
    async fn wildcard_origin_list_answers_star() {
        let next = backend(StatusCode::OK);
        let h = handler(
            HeadersSpec {
                access_control_allow_origin_list: vec!["*".into()],
                ..Default::default()
            },
            &next,
        );
        let response = h
            .call(request(
                Method::GET,
                "a.test",
                &[("origin", "https://any.test")],
            ))
            .await;
        assert_eq!(header(&response, "access-control-allow-origin"), Some("*"));
    }

    fn sts_spec() -> HeadersSpec {
        HeadersSpec {
            sts_seconds: 31536000,
            sts_include_subdomains: true,
            sts_preload: true,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn sts_is_sent_on_https_only() {
        let next = backend(StatusCode::OK);
        let h = handler(sts_spec(), &next);
        let plain = h.call(request(Method::GET, "a.test", &[])).await;
        assert_eq!(header(&plain, "strict-transport-security"), None);
        let secure = h.call(over_tls(request(Method::GET, "a.test", &[]))).await;
        assert_eq!(
            header(&secure, "strict-transport-security"),
            Some("max-age=31536000; includeSubDomains; preload")
        );
    }

    #[tokio::test]
    async fn forced_sts_is_sent_on_plain_http() {
        let next = backend(StatusCode::OK);
        let h = handler(
            HeadersSpec {
                sts_seconds: 60,
                force_sts_header: true,
                ..Default::default()
            },
            &next,
        );
        let plain = h.call(request(Method::GET, "a.test", &[])).await;
        assert_eq!(
            header(&plain, "strict-transport-security"),
            Some("max-age=60")
        );
    }

    #[tokio::test]
    async fn ssl_proxy_headers_mark_a_request_as_https() {
        let next = backend(StatusCode::OK);
        let h = handler(
            HeadersSpec {
                ssl_proxy_headers: pairs(&[("X-Forwarded-Proto", "https")]),
                ..sts_spec()
            },
            &next,
        );
        let marked = h
            .call(request(
                Method::GET,
                "a.test",
                &[("x-forwarded-proto", "https")],
            ))
            .await;
        assert!(header(&marked, "strict-transport-security").is_some());
        let other = h
            .call(request(
                Method::GET,
                "a.test",
                &[("x-forwarded-proto", "http")],
            ))
            .await;
        assert_eq!(header(&other, "strict-transport-security"), None);
    }

    #[tokio::test]
    async fn development_turns_off_sts_and_the_host_check() {
        let next = backend(StatusCode::OK);
        let h = handler(
            HeadersSpec {
                is_development: true,
                allowed_hosts: vec!["a.test".into()],
                ..sts_spec()
            },
            &next,
        );
        let response = h.call(over_tls(request(Method::GET, "b.test", &[]))).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header(&response, "strict-transport-security"), None);
    }

    #[tokio::test]
    async fn security_headers_are_set_over_the_backend_ones() {
        let next = backend(StatusCode::INTERNAL_SERVER_ERROR);
        let h = handler(
            HeadersSpec {
                frame_deny: true,
                content_type_nosniff: true,
                browser_xss_filter: true,
                content_security_policy: "default-src 'self'".into(),
                content_security_policy_report_only: "script-src 'none'".into(),
                referrer_policy: "no-referrer".into(),
                permissions_policy: "camera=()".into(),
                ..Default::default()
            },
            &next,
        );
        let response = h.call(request(Method::GET, "a.test", &[])).await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        for (name, value) in [
            ("x-frame-options", "DENY"),
            ("x-content-type-options", "nosniff"),
            ("x-xss-protection", "1; mode=block"),
            ("content-security-policy", "default-src 'self'"),
            ("content-security-policy-report-only", "script-src 'none'"),
            ("referrer-policy", "no-referrer"),
            ("permissions-policy", "camera=()"),
        ] {
            assert_eq!(header(&response, name), Some(value), "{name}");
        }
    }

    #[tokio::test]
    async fn custom_frame_and_xss_values_win_over_the_flags() {
        let next = backend(StatusCode::OK);
        let h = handler(
            HeadersSpec {
                frame_deny: true,
                custom_frame_options_value: "SAMEORIGIN".into(),
                browser_xss_filter: true,
                custom_browser_xss_value: "0".into(),
                ..Default::default()
            },
            &next,
        );
        let response = h.call(request(Method::GET, "a.test", &[])).await;
        assert_eq!(header(&response, "x-frame-options"), Some("SAMEORIGIN"));
        assert_eq!(header(&response, "x-xss-protection"), Some("0"));
    }

    #[tokio::test]
    async fn unlisted_host_gets_400_bad_host_and_is_not_forwarded() {
        let next = backend(StatusCode::OK);
        let h = handler(
            HeadersSpec {
                allowed_hosts: vec!["a.test".into()],
                custom_response_headers: pairs(&[("X-Edge", "1")]),
                ..Default::default()
            },
            &next,
        );
        let ok = h.call(request(Method::GET, "A.test", &[])).await;
        assert_eq!(ok.status(), StatusCode::OK);
        let bad = h.call(request(Method::GET, "b.test", &[])).await;
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
        assert_eq!(header(&bad, "x-edge"), Some("1"));
        let body = bad.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"Bad Host\n");
        assert_eq!(next.seen.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn hosts_proxy_headers_name_the_host_to_check() {
        let next = backend(StatusCode::OK);
        let h = handler(
            HeadersSpec {
                allowed_hosts: vec!["public.test".into()],
                hosts_proxy_headers: vec!["X-Forwarded-Host".into()],
                ..Default::default()
            },
            &next,
        );
        let proxied = h
            .call(request(
                Method::GET,
                "internal",
                &[("x-forwarded-host", "public.test")],
            ))
            .await;
        assert_eq!(proxied.status(), StatusCode::OK);
        let spoofed = h
            .call(request(
                Method::GET,
                "public.test",
                &[("x-forwarded-host", "other.test")],
            ))
            .await;
        assert_eq!(spoofed.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn header_injection_in_configuration_is_refused() {
        let value = HeadersSpec {
            custom_response_headers: pairs(&[("X-A", "ok\r\nSet-Cookie: a=b")]),
            ..Default::default()
        };
        assert!(matches!(value.build(), Err(HeadersError::Value { .. })));
        let name = HeadersSpec {
            custom_request_headers: pairs(&[("X A\r\n", "v")]),
            ..Default::default()
        };
        assert!(matches!(name.build(), Err(HeadersError::Name { .. })));
        let csp = HeadersSpec {
            content_security_policy: "a\nb".into(),
            ..Default::default()
        };
        assert!(matches!(csp.build(), Err(HeadersError::Value { .. })));
        let methods = HeadersSpec {
            access_control_allow_methods: vec!["GET\r\n".into()],
            ..Default::default()
        };
        assert!(matches!(methods.build(), Err(HeadersError::Value { .. })));
    }

    #[test]
    fn bad_origin_regex_and_negative_sts_are_refused() {
        let regex = HeadersSpec {
            access_control_allow_origin_list_regex: vec!["(".into()],
            ..Default::default()
        };
        assert!(matches!(regex.build(), Err(HeadersError::Regex { .. })));
        let sts = HeadersSpec {
            sts_seconds: -1,
            ..Default::default()
        };
        assert!(matches!(sts.build(), Err(HeadersError::NegativeSts(-1))));
    }
}
