//! `grpcWeb{allowOrigins}`: lets browsers call gRPC services. A gRPC-Web request (a POST
//! whose `Content-Type` is `application/grpc-web[+proto]`, binary, or
//! `application/grpc-web-text[+proto]`, base64) goes on as gRPC (`application/grpc[+proto]`,
//! `TE: trailers`, the text body decoded as it streams, `Content-Length` dropped when the
//! length changes), and the gRPC response comes back as gRPC-Web: `Content-Type` mapped
//! back, trailers turned into a last frame flagged `0x80`, everything base64 encoded in
//! text mode, nothing buffered. A response that is not gRPC (a proxy error...) is left as
//! it is, so that the client can read it.
//!
//! HTTP/2 to the server comes from the server's URL, as in Traefik: `h2c://`, or `https://`
//! when the server offers h2 by ALPN. An `http://` server is spoken to in HTTP/1.1, which
//! gRPC servers refuse.
//!
//! CORS, as Traefik's (rs/cors under the gRPC-Web wrapper): an `OPTIONS` preflight whose
//! `Access-Control-Request-Headers` name `x-grpc-web` is answered here, 200 with the request
//! headers asked for allowed when the origin is in `allowOrigins` (`*`: any) and the method is
//! GET, POST or HEAD, and with only `Vary` otherwise. gRPC-Web responses get
//! `Access-Control-Allow-Origin` and `-Credentials` for allowed origins only, and
//! `Access-Control-Expose-Headers` (their header names, `grpc-status`, `grpc-message`) for
//! all. Other requests pass through untouched.

mod body;

use std::sync::Arc;

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, CONTENT_LENGTH, CONTENT_TYPE,
    ORIGIN, TE, TRAILER, VARY,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response};

use super::Middleware;
use crate::handler::{Body, BoxFuture, Handler, SharedHandler, boxed, empty_body};
use body::{TextRequestBody, WebResponseBody};

pub use body::TextBodyError;

const GRPC: &[u8] = b"application/grpc";
const GRPC_WEB: &[u8] = b"application/grpc-web";
const GRPC_WEB_TEXT: &[u8] = b"application/grpc-web-text";

/// How long a browser may keep a preflight's answer: Traefik's 10 minutes.
const PREFLIGHT_MAX_AGE: &str = "600";

/// A configured `grpcWeb`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GrpcWeb {
    /// Origins allowed to call (compared as written); `*` allows any. Empty: none.
    pub allow_origins: Vec<String>,
}

impl GrpcWeb {
    fn allows(&self, origin: &[u8]) -> bool {
        self.allow_origins
            .iter()
            .any(|allowed| allowed == "*" || allowed.as_bytes() == origin)
    }
}

impl Middleware for GrpcWeb {
    fn wrap(&self, next: SharedHandler) -> SharedHandler {
        Arc::new(Translate {
            spec: self.clone(),
            next,
        })
    }
}

struct Translate {
    spec: GrpcWeb,
    next: SharedHandler,
}

/// How a gRPC-Web body is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Binary,
    /// Base64.
    Text,
}

impl Encoding {
    /// The request's encoding if it is a gRPC-Web call.
    fn of(request: &Request<Body>) -> Option<Self> {
        if request.method() != Method::POST {
            return None;
        }
        let content_type = request.headers().get(CONTENT_TYPE)?.as_bytes();
        if starts_with_ignore_case(content_type, GRPC_WEB_TEXT) {
            Some(Self::Text)
        } else if starts_with_ignore_case(content_type, GRPC_WEB) {
            Some(Self::Binary)
        } else {
            None
        }
    }

    fn content_type(self) -> &'static [u8] {
        match self {
            Self::Binary => GRPC_WEB,
            Self::Text => GRPC_WEB_TEXT,
        }
    }
}

impl Handler for Translate {
    fn call(&self, request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
        if is_preflight(&request) {
            let response = self.preflight(request.headers());
            return Box::pin(async move { response });
        }
        let Some(encoding) = Encoding::of(&request) else {
            return self.next.call(request);
        };
        let allowed_origin = request
            .headers()
            .get(ORIGIN)
            .filter(|origin| self.spec.allows(origin.as_bytes()))
            .cloned();
        let request = grpc_request(request, encoding);
        Box::pin(async move {
            let response = self.next.call(request).await;
            grpc_web_response(response, encoding, allowed_origin)
        })
    }
}

impl Translate {
    /// The answer to a gRPC-Web preflight, as rs/cors gives it.
    fn preflight(&self, headers: &HeaderMap) -> Response<Body> {
        let mut response = Response::new(empty_body());
        let out = response.headers_mut();
        for varies in [
            "Origin",
            "Access-Control-Request-Method",
            "Access-Control-Request-Headers",
        ] {
            out.append(VARY, HeaderValue::from_static(varies));
        }
        let Some(origin) = headers
            .get(ORIGIN)
            .filter(|origin| self.spec.allows(origin.as_bytes()))
        else {
            return response;
        };
        let method = headers
            .get(ACCESS_CONTROL_REQUEST_METHOD)
            .map(|m| m.as_bytes().to_ascii_uppercase())
            .unwrap_or_default();
        if !matches!(&method[..], b"GET" | b"POST" | b"HEAD" | b"OPTIONS") {
            return response;
        }
        out.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        if let Ok(method) = HeaderValue::from_bytes(&method) {
            out.insert(ACCESS_CONTROL_ALLOW_METHODS, method);
        }
        let asked = requested_headers(headers);
        if !asked.is_empty()
            && let Ok(allowed) = HeaderValue::from_str(&asked.join(", "))
        {
            out.insert(ACCESS_CONTROL_ALLOW_HEADERS, allowed);
        }
        out.insert(
            ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        out.insert(
            ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static(PREFLIGHT_MAX_AGE),
        );
        response
    }
}

/// A preflight of a gRPC-Web call: an `OPTIONS` asking to send `x-grpc-web`.
fn is_preflight(request: &Request<Body>) -> bool {
    request.method() == Method::OPTIONS
        && request
            .headers()
            .get_all(ACCESS_CONTROL_REQUEST_HEADERS)
            .iter()
            .any(|asked| {
                asked
                    .as_bytes()
                    .to_ascii_lowercase()
                    .windows(b"x-grpc-web".len())
                    .any(|w| w == b"x-grpc-web")
            })
}

/// The header names a preflight asks for, in Go's canonical case as rs/cors echoes them.
fn requested_headers(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(ACCESS_CONTROL_REQUEST_HEADERS)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(canonical_header_name)
        .collect()
}

/// `x-grpc-web` → `X-Grpc-Web`.
fn canonical_header_name(name: &str) -> String {
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

/// The gRPC request a gRPC-Web one stands for.
fn grpc_request(request: Request<Body>, encoding: Encoding) -> Request<Body> {
    let (mut parts, body) = request.into_parts();
    if let Some(content_type) = parts.headers.get(CONTENT_TYPE)
        && let Some(grpc) = replace_prefix(content_type, encoding.content_type().len(), GRPC)
    {
        parts.headers.insert(CONTENT_TYPE, grpc);
    }
    // gRPC servers refuse requests without it.
    parts
        .headers
        .insert(TE, HeaderValue::from_static("trailers"));
    let body = match encoding {
        Encoding::Binary => body,
        Encoding::Text => {
            parts.headers.remove(CONTENT_LENGTH);
            boxed(TextRequestBody::new(body))
        }
    };
    Request::from_parts(parts, body)
}

/// The gRPC-Web response a gRPC one stands for, with its CORS headers.
fn grpc_web_response(
    response: Response<Body>,
    encoding: Encoding,
    allowed_origin: Option<HeaderValue>,
) -> Response<Body> {
    let (mut parts, mut body) = response.into_parts();
    let grpc_content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .filter(|ct| starts_with_ignore_case(ct.as_bytes(), GRPC))
        .cloned();
    if let Some(content_type) = grpc_content_type {
        if let Some(web) = replace_prefix(&content_type, GRPC.len(), encoding.content_type()) {
            parts.headers.insert(CONTENT_TYPE, web);
        }
        // The trailer frame (and base64) changes the length; trailers go in the body.
        parts.headers.remove(CONTENT_LENGTH);
        parts.headers.remove(TRAILER);
        body = boxed(WebResponseBody::new(body, encoding == Encoding::Text));
    }
    let exposed = exposed_headers(&parts.headers);
    if let Ok(exposed) = HeaderValue::from_str(&exposed) {
        parts.headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, exposed);
    }
    parts
        .headers
        .append(VARY, HeaderValue::from_static("Origin"));
    if let Some(origin) = allowed_origin {
        parts.headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        parts.headers.insert(
            ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    Response::from_parts(parts, body)
}

/// The response's header names then `grpc-status` and `grpc-message`, which a browser lets
/// scripts read only when listed.
fn exposed_headers(headers: &HeaderMap) -> String {
    let mut names: Vec<&str> = headers.keys().map(|name| name.as_str()).collect();
    for status in ["grpc-status", "grpc-message"] {
        if !names.contains(&status) {
            names.push(status);
        }
    }
    names.join(", ")
}

/// `value` with its first `len` bytes (a media type prefix) replaced by `by`.
fn replace_prefix(value: &HeaderValue, len: usize, by: &[u8]) -> Option<HeaderValue> {
    let rest = value.as_bytes().get(len..)?;
    HeaderValue::from_bytes(&[by, rest].concat()).ok()
}

fn starts_with_ignore_case(value: &[u8], prefix: &[u8]) -> bool {
    value
        .get(..prefix.len())
        .is_some_and(|start| start.eq_ignore_ascii_case(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::full_body;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use bytes::Bytes;
    use http::StatusCode;
    use http_body_util::BodyExt;
    use std::sync::Mutex;

    /// A gRPC server stand-in: records what it got (headers, and the body as read) and
    /// answers `reply`.
    struct Backend {
        seen: Mutex<Option<(http::request::Parts, Result<Bytes, String>)>>,
        reply: fn() -> Response<Body>,
    }

    impl Handler for Backend {
        fn call(&self, request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
            Box::pin(async move {
                let (parts, body) = request.into_parts();
                let read = body
                    .collect()
                    .await
                    .map(|c| c.to_bytes())
                    .map_err(|e| e.to_string());
                *self.seen.lock().unwrap() = Some((parts, read));
                (self.reply)()
            })
        }
    }

    fn grpc_ok() -> Response<Body> {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let body = full_body(&b"\0\0\0\0\x02hi"[..])
            .with_trailers(async move { Some(Ok(trailers)) })
            .boxed_unsync();
        let mut response = Response::new(body);
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/grpc+proto"),
        );
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("7"));
        headers.insert("x-custom", HeaderValue::from_static("y"));
        response
    }

    fn plain_error() -> Response<Body> {
        let mut response = Response::new(full_body("Bad Gateway"));
        *response.status_mut() = StatusCode::BAD_GATEWAY;
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        response
    }

    fn setup(origins: &[&str], reply: fn() -> Response<Body>) -> (Arc<Backend>, SharedHandler) {
        let backend = Arc::new(Backend {
            seen: Mutex::new(None),
            reply,
        });
        let spec = GrpcWeb {
            allow_origins: origins.iter().map(|o| o.to_string()).collect(),
        };
        let handler = spec.wrap(backend.clone());
        (backend, handler)
    }

    fn call(content_type: &str, origin: &str, body: &'static [u8]) -> Request<Body> {
        Request::post("/test.Greeter/Say")
            .header(CONTENT_TYPE, content_type)
            .header(ORIGIN, origin)
            .header(CONTENT_LENGTH, body.len())
            .body(full_body(body))
            .unwrap()
    }

    fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
        headers.get(name).map_or("", |v| v.to_str().unwrap())
    }

    #[tokio::test]
    async fn a_binary_call_goes_on_as_grpc_and_comes_back_with_a_trailer_frame() {
        let (backend, handler) = setup(&["https://app.test"], grpc_ok);
        let request = call(
            "application/grpc-web+proto",
            "https://app.test",
            b"\0\0\0\0\x01a",
        );
        let response = handler.call(request).await;
        let (parts, body) = backend.seen.lock().unwrap().take().unwrap();
        assert_eq!(
            header(&parts.headers, "content-type"),
            "application/grpc+proto"
        );
        assert_eq!(header(&parts.headers, "te"), "trailers");
        assert_eq!(header(&parts.headers, "content-length"), "6");
        assert_eq!(body.unwrap(), &b"\0\0\0\0\x01a"[..]);

        let h = response.headers();
        assert_eq!(header(h, "content-type"), "application/grpc-web+proto");
        assert_eq!(header(h, "content-length"), "");
        assert_eq!(header(h, "access-control-allow-origin"), "https://app.test");
        assert_eq!(header(h, "access-control-allow-credentials"), "true");
        assert_eq!(
            header(h, "access-control-expose-headers"),
            "content-type, x-custom, grpc-status, grpc-message"
        );
        assert_eq!(header(h, "vary"), "Origin");
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            &bytes[..],
            &b"\0\0\0\0\x02hi\x80\0\0\0\x10grpc-status: 0\r\n"[..]
        );
    }

    #[tokio::test]
    async fn a_text_call_is_decoded_and_its_answer_encoded() {
        let (backend, handler) = setup(&["*"], grpc_ok);
        let request = call("application/grpc-web-text", "https://any.test", b"AAAAAAFh");
        let response = handler.call(request).await;
        let (parts, body) = backend.seen.lock().unwrap().take().unwrap();
        assert_eq!(header(&parts.headers, "content-type"), "application/grpc");
        assert_eq!(header(&parts.headers, "content-length"), "");
        assert_eq!(body.unwrap(), &b"\0\0\0\0\x01a"[..]);

        assert_eq!(
            header(response.headers(), "content-type"),
            "application/grpc-web-text+proto"
        );
        assert_eq!(
            header(response.headers(), "access-control-allow-origin"),
            "https://any.test"
        );
        let text = response.into_body().collect().await.unwrap().to_bytes();
        let expected = format!(
            "{}{}",
            STANDARD.encode(b"\0\0\0\0\x02hi"),
            STANDARD.encode(b"\x80\0\0\0\x10grpc-status: 0\r\n")
        );
        assert_eq!(text, expected);
    }

    #[tokio::test]
    async fn bad_base64_fails_the_request_body() {
        let (backend, handler) = setup(&[], grpc_ok);
        handler
            .call(call("application/grpc-web-text", "", b"AAAA*AAA"))
            .await;
        let (_, body) = backend.seen.lock().unwrap().take().unwrap();
        assert_eq!(
            body.unwrap_err(),
            TextBodyError::InvalidBase64 { at: 4 }.to_string()
        );
    }

    #[tokio::test]
    async fn an_origin_not_allowed_gets_no_cors_grant() {
        let (_, handler) = setup(&["https://app.test"], grpc_ok);
        let request = call("application/grpc-web", "https://evil.test", b"");
        let response = handler.call(request).await;
        let h = response.headers();
        assert_eq!(header(h, "content-type"), "application/grpc-web+proto");
        assert_eq!(header(h, "access-control-allow-origin"), "");
        assert_eq!(header(h, "access-control-allow-credentials"), "");
        assert_eq!(header(h, "vary"), "Origin");
    }

    #[tokio::test]
    async fn a_response_that_is_not_grpc_is_left_readable() {
        let (_, handler) = setup(&["https://app.test"], plain_error);
        let request = call("application/grpc-web", "https://app.test", b"");
        let response = handler.call(request).await;
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(header(response.headers(), "content-type"), "text/plain");
        assert_eq!(
            header(response.headers(), "access-control-allow-origin"),
            "https://app.test"
        );
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "Bad Gateway");
    }

    #[tokio::test]
    async fn other_requests_pass_untouched() {
        let (backend, handler) = setup(&["*"], plain_error);
        let request = call("application/grpc", "https://app.test", b"x");
        let response = handler.call(request).await;
        let (parts, _) = backend.seen.lock().unwrap().take().unwrap();
        assert_eq!(header(&parts.headers, "content-type"), "application/grpc");
        assert_eq!(header(&parts.headers, "te"), "");
        assert!(
            response
                .headers()
                .get(ACCESS_CONTROL_ALLOW_ORIGIN)
                .is_none()
        );
        assert!(response.headers().get(VARY).is_none());

        let mut get = call("application/grpc-web", "https://app.test", b"");
        *get.method_mut() = Method::GET;
        handler.call(get).await;
        let (parts, _) = backend.seen.lock().unwrap().take().unwrap();
        assert_eq!(
            header(&parts.headers, "content-type"),
            "application/grpc-web"
        );
    }

    fn preflight(origin: &str, method: &str, headers: &str) -> Request<Body> {
        Request::options("/test.Greeter/Say")
            .header(ORIGIN, origin)
            .header(ACCESS_CONTROL_REQUEST_METHOD, method)
            .header(ACCESS_CONTROL_REQUEST_HEADERS, headers)
            .body(empty_body())
            .unwrap()
    }

    fn varies(headers: &HeaderMap) -> Vec<&str> {
        headers
            .get_all(VARY)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    #[tokio::test]
    async fn a_preflight_from_an_allowed_origin_is_answered_here() {
        let (backend, handler) = setup(&["https://app.test"], plain_error);
        let response = handler
            .call(preflight(
                "https://app.test",
                "post",
                "x-grpc-web,content-type, x-user-agent,grpc-timeout",
            ))
            .await;
        assert!(backend.seen.lock().unwrap().is_none());
        assert_eq!(response.status(), StatusCode::OK);
        let h = response.headers();
        assert_eq!(header(h, "access-control-allow-origin"), "https://app.test");
        assert_eq!(header(h, "access-control-allow-methods"), "POST");
        assert_eq!(
            header(h, "access-control-allow-headers"),
            "X-Grpc-Web, Content-Type, X-User-Agent, Grpc-Timeout"
        );
        assert_eq!(header(h, "access-control-allow-credentials"), "true");
        assert_eq!(header(h, "access-control-max-age"), "600");
        assert_eq!(
            varies(h),
            [
                "Origin",
                "Access-Control-Request-Method",
                "Access-Control-Request-Headers"
            ]
        );
    }

    #[tokio::test]
    async fn a_preflight_from_another_origin_or_for_another_method_gets_no_grant() {
        let (backend, handler) = setup(&["https://app.test"], plain_error);
        for request in [
            preflight("https://evil.test", "POST", "x-grpc-web"),
            preflight("https://app.test", "PUT", "x-grpc-web"),
        ] {
            let response = handler.call(request).await;
            assert_eq!(response.status(), StatusCode::OK);
            assert!(
                response
                    .headers()
                    .get(ACCESS_CONTROL_ALLOW_ORIGIN)
                    .is_none()
            );
            assert!(
                response
                    .headers()
                    .get(ACCESS_CONTROL_ALLOW_HEADERS)
                    .is_none()
            );
            assert_eq!(varies(response.headers()).len(), 3);
        }
        assert!(backend.seen.lock().unwrap().is_none());
    }

    #[tokio::test]
    async fn an_options_request_without_x_grpc_web_goes_to_the_server() {
        let (backend, handler) = setup(&["*"], plain_error);
        let response = handler
            .call(preflight("https://app.test", "POST", "content-type"))
            .await;
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        assert!(backend.seen.lock().unwrap().is_some());
    }
}
