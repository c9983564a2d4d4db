//! The server span of one request, from its record: name, ids, status and attributes after
//! the OpenTelemetry HTTP semantic conventions, plus what `tracing` asks to capture — request
//! and response headers, and the query with the values of unlisted parameters redacted.
//!
//! Pure: no I/O, no clock. What is done with the span (queueing, export) is the caller's.

use std::borrow::Cow;
use std::sync::Arc;

use http::HeaderName;
use l7::observe::{RequestRecord, WantedHeaders};
use l7::trace_context::RequestTrace;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Array, InstrumentationScope, Key, KeyValue, StringValue, Value};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

use super::TelemetryError;
use crate::config::static_cfg::Tracing;

/// What Traefik puts in place of a query value that `safeQueryParams` does not list.
const REDACTED: &str = "REDACTED";

/// How the spans of requests are shaped, from the static `tracing` section.
pub(super) struct SpanShape {
    scope: InstrumentationScope,
    request_headers: Vec<Captured>,
    response_headers: Vec<Captured>,
    /// Asked of the entrypoints so that records carry the captured headers; `None` when
    /// nothing is captured (no copy per request).
    wanted_request: Option<WantedHeaders>,
    wanted_response: Option<WantedHeaders>,
    safe_query_params: Vec<String>,
    add_internals: bool,
}

/// One captured header and the attribute it becomes.
struct Captured {
    name: HeaderName,
    key: Key,
    /// `user_agent.original` is a string; `http.*.header.*` attributes are string arrays.
    single: bool,
}

impl SpanShape {
    pub(super) fn new(config: &Tracing) -> Result<SpanShape, TelemetryError> {
        let request_headers = captured(
            "capturedRequestHeaders",
            &config.captured_request_headers,
            "http.request.header.",
        )?;
        let response_headers = captured(
            "capturedResponseHeaders",
            &config.captured_response_headers,
            "http.response.header.",
        )?;
        let wanted = |captured: &[Captured]| {
            (!captured.is_empty())
                .then(|| WantedHeaders::Only(captured.iter().map(|c| c.name.clone()).collect()))
        };
        Ok(SpanShape {
            scope: InstrumentationScope::builder("sallyport")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
            wanted_request: wanted(&request_headers),
            wanted_response: wanted(&response_headers),
            request_headers,
            response_headers,
            safe_query_params: config.safe_query_params.clone(),
            add_internals: config.add_internals,
        })
    }

    pub(super) fn wanted_request_headers(&self) -> Option<&WantedHeaders> {
        self.wanted_request.as_ref()
    }

    pub(super) fn wanted_response_headers(&self) -> Option<&WantedHeaders> {
        self.wanted_response.as_ref()
    }

    /// Whether a request is exported: sampled, and not routed to an `@internal` service
    /// unless `addInternals` (Traefik's rule: the router's service decides).
    pub(super) fn exports(&self, record: &RequestRecord) -> Option<RequestTrace> {
        let internal = record
            .service
            .as_deref()
            .is_some_and(|s| s.ends_with("@internal"));
        if internal && !self.add_internals {
            return None;
        }
        record.trace.filter(|t| t.sampled)
    }

    /// The request's server span: named after the method (no route template is known at
    /// the entrypoint), with the ids sent to the backend in `traceparent`.
    pub(super) fn span(&self, record: &RequestRecord, trace: &RequestTrace) -> SpanData {
        let mut attributes = vec![
            KeyValue::new("http.request.method", record.method.to_string()),
            KeyValue::new("url.path", record.path().to_owned()),
            KeyValue::new(
                "url.scheme",
                if record.tls.is_some() {
                    "https"
                } else {
                    "http"
                },
            ),
            KeyValue::new(
                "http.response.status_code",
                i64::from(record.status.as_u16()),
            ),
            KeyValue::new("network.protocol.version", protocol_version(record.version)),
            KeyValue::new("client.address", record.client.ip().to_string()),
            KeyValue::new("client.port", i64::from(record.client.port())),
            KeyValue::new("entry_point", record.entrypoint.to_string()),
        ];
        if let Some(query) = record.query() {
            attributes.push(KeyValue::new(
                "url.query",
                redacted_query(query, &self.safe_query_params),
            ));
        }
        if let Some(host) = record.host.as_ref().and_then(|h| h.to_str().ok()) {
            let (name, port) = split_host_port(host);
            attributes.push(KeyValue::new("server.address", name.to_owned()));
            if let Some(port) = port {
                attributes.push(KeyValue::new("server.port", i64::from(port)));
            }
        }
        if let Some(router) = &record.router {
            attributes.push(KeyValue::new("http.router", router.to_string()));
        }
        if let Some(service) = &record.service {
            attributes.push(KeyValue::new("http.service", service.to_string()));
        }
        push_headers(
            &mut attributes,
            &self.request_headers,
            record.headers.as_deref(),
        );
        push_headers(
            &mut attributes,
            &self.response_headers,
            record.response_headers.as_deref(),
        );
        // Server spans: only 5xx are errors (the client's 4xx are not the server's failure).
        let status = if record.status.is_server_error() {
            Status::error(record.status.to_string())
        } else {
            Status::Unset
        };
        let parent_span_id = trace
            .parent_id
            .map_or(SpanId::INVALID, |p| SpanId::from_bytes(p.0));
        SpanData {
            span_context: SpanContext::new(
                TraceId::from_bytes(trace.trace_id.0),
                SpanId::from_bytes(trace.span_id.0),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id,
            parent_span_is_remote: trace.parent_id.is_some(),
            span_kind: SpanKind::Server,
            name: Cow::Owned(record.method.to_string()),
            start_time: record.started,
            end_time: record.started + record.duration,
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: self.scope.clone(),
        }
    }
}

/// The captured headers of `option`, each named once; `User-Agent` becomes
/// `user_agent.original`, where Traefik always reports it.
fn captured(
    option: &'static str,
    names: &[String],
    prefix: &str,
) -> Result<Vec<Captured>, TelemetryError> {
    let mut captured: Vec<Captured> = Vec::with_capacity(names.len());
    for text in names {
        let name =
            HeaderName::from_bytes(text.as_bytes()).map_err(|_| TelemetryError::HeaderName {
                option,
                name: text.clone(),
            })?;
        if captured.iter().any(|c| c.name == name) {
            continue;
        }
        let user_agent = prefix.starts_with("http.request.") && name == http::header::USER_AGENT;
        let key = if user_agent {
            Key::from_static_str("user_agent.original")
        } else {
            Key::from(Arc::<str>::from(format!("{prefix}{}", name.as_str())))
        };
        captured.push(Captured {
            name,
            key,
            single: user_agent,
        });
    }
    Ok(captured)
}

/// An attribute per captured header present in `headers`: its values, one per field line.
fn push_headers(
    attributes: &mut Vec<KeyValue>,
    captured: &[Captured],
    headers: Option<&http::HeaderMap>,
) {
    let Some(headers) = headers else { return };
    for capture in captured {
        let mut values = headers
            .get_all(&capture.name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .peekable();
        if values.peek().is_none() {
            continue;
        }
        let value = if capture.single {
            Value::from(values.next().unwrap_or_default())
        } else {
            Value::Array(Array::String(values.map(StringValue::from).collect()))
        };
        attributes.push(KeyValue::new(capture.key.clone(), value));
    }
}

/// The query as Traefik reports it: parsed as Go's `url.ParseQuery` does (pairs split on
/// `&`, pairs with `;` or a bad escape dropped), every value of a parameter not in `safe`
/// replaced by one `REDACTED`, and encoded again with the parameters sorted by name.
pub(super) fn redacted_query(raw: &str, safe: &[String]) -> String {
    let mut params: Vec<(Vec<u8>, Vec<Vec<u8>>)> = Vec::new();
    for pair in raw.split('&') {
        if pair.is_empty() || pair.contains(';') {
            continue;
        }
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (Some(key), Some(value)) = (unescape(key), unescape(value)) else {
            continue;
        };
        match params.iter_mut().find(|(k, _)| *k == key) {
            Some((_, values)) => values.push(value),
            None => params.push((key, vec![value])),
        }
    }
    params.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = String::with_capacity(raw.len());
    for (key, values) in &mut params {
        if !safe.iter().any(|s| s.as_bytes() == key.as_slice()) {
            *values = vec![REDACTED.as_bytes().to_vec()];
        }
        for value in values.iter() {
            if !out.is_empty() {
                out.push('&');
            }
            escape_into(&mut out, key);
            out.push('=');
            escape_into(&mut out, value);
        }
    }
    out
}

/// Go's `url.QueryUnescape`: `+` is a space, `%XX` a byte; `None` on a bad escape.
fn unescape(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    Some(out)
}

/// Go's `url.QueryEscape`: letters, digits and `-_.~` kept, space as `+`, the rest `%XX`.
fn escape_into(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b));
            }
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xf)]));
            }
        }
    }
}

/// `network.protocol.version`: `1.1`, `2`, `3`...
fn protocol_version(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// `example.com:8443` → (`example.com`, 8443); `[::1]:80` → (`::1`, 80); no port → `None`.
fn split_host_port(host: &str) -> (&str, Option<u16>) {
    if let Some(rest) = host.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((ip, tail)) => (ip, tail.strip_prefix(':').and_then(|p| p.parse().ok())),
            None => (host, None),
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') => match port.parse() {
            Ok(port) => (name, Some(port)),
            Err(_) => (host, None),
        },
        _ => (host, None),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use http::{HeaderMap, HeaderValue, Method, StatusCode, Version};
    use l7::observe::Protocol;
    use l7::trace_context::{SpanId as L7SpanId, TraceId as L7TraceId};

    use super::*;

    fn shape(configure: impl FnOnce(&mut Tracing)) -> SpanShape {
        let mut config = Tracing::default();
        configure(&mut config);
        SpanShape::new(&config).expect("valid")
    }

    fn record(uri: &str, service: Option<&str>) -> RequestRecord {
        RequestRecord {
            entrypoint: Arc::from("web"),
            router: service.map(|_| Arc::from("r@file")),
            service: service.map(Arc::from),
            method: Method::GET,
            protocol: Protocol::Http,
            version: Version::HTTP_11,
            host: Some(HeaderValue::from_static("a.test:8443")),
            target: uri.to_owned(),
            client: "192.0.2.7:40000".parse().expect("addr"),
            tls: None,
            status: StatusCode::OK,
            error: None,
            request_bytes: 0,
            response_bytes: 0,
            completed: true,
            duration: Duration::from_millis(3),
            started: SystemTime::now(),
            headers: None,
            response_headers: None,
            server: None,
            username: None,
            retries: 0,
            trace: Some(RequestTrace {
                trace_id: L7TraceId([1; 16]),
                span_id: L7SpanId([2; 8]),
                parent_id: None,
                sampled: true,
            }),
        }
    }

    fn attribute<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| &kv.value)
    }

    fn strings(values: &[&str]) -> Value {
        Value::Array(Array::String(
            values
                .iter()
                .map(|v| StringValue::from(v.to_string()))
                .collect(),
        ))
    }

    #[test]
    fn hosts_split_into_address_and_port() {
        assert_eq!(split_host_port("a.test"), ("a.test", None));
        assert_eq!(split_host_port("a.test:8443"), ("a.test", Some(8443)));
        assert_eq!(split_host_port("[::1]:80"), ("::1", Some(80)));
        assert_eq!(split_host_port("[::1]"), ("::1", None));
        assert_eq!(split_host_port("::1"), ("::1", None));
        assert_eq!(split_host_port("a.test:x"), ("a.test:x", None));
    }

    #[test]
    fn query_values_are_redacted_unless_safe_as_traefik_encodes_them() {
        let safe = ["page".to_owned(), "q s".to_owned()];
        assert_eq!(
            redacted_query("token=abc&page=2&page=3&b=&q+s=a%20b", &safe),
            "b=REDACTED&page=2&page=3&q+s=a+b&token=REDACTED"
        );
        // Repeated unsafe parameters become one; Go drops pairs with `;` or a bad escape.
        assert_eq!(
            redacted_query("k=1&k=2&bad=%zz&semi=1;2&&flag", &[]),
            "flag=REDACTED&k=REDACTED"
        );
        assert_eq!(redacted_query("é=ü~", &["é".to_owned()]), "%C3%A9=%C3%BC~");
        assert_eq!(redacted_query("", &[]), "");
    }

    #[test]
    fn spans_carry_the_http_attributes_and_the_redacted_query() {
        let shape = shape(|c| c.safe_query_params = vec!["page".to_owned()]);
        let routed = record("/items?page=2&secret=x", Some("app@file"));
        let trace = shape.exports(&routed).expect("sampled");
        let span = shape.span(&routed, &trace);
        assert_eq!(span.name, "GET");
        assert_eq!(span.span_kind, SpanKind::Server);
        assert_eq!(span.parent_span_id, SpanId::INVALID);
        for (key, value) in [
            ("url.path", Value::from("/items")),
            ("url.query", Value::from("page=2&secret=REDACTED")),
            ("server.address", Value::from("a.test")),
            ("server.port", Value::I64(8443)),
            ("http.service", Value::from("app@file")),
        ] {
            assert_eq!(attribute(&span, key), Some(&value), "{key}");
        }
        let without_query = shape.span(&record("/items", None), &trace);
        assert_eq!(attribute(&without_query, "url.query"), None);
        assert_eq!(attribute(&without_query, "http.router"), None);
    }

    #[test]
    fn captured_headers_become_string_array_attributes() {
        let shape = shape(|c| {
            c.captured_request_headers =
                vec!["X-Request-Id".into(), "Accept".into(), "User-Agent".into()];
            c.captured_response_headers = vec!["Set-Cookie".into(), "x-request-id".into()];
        });
        assert_eq!(
            shape.wanted_request_headers(),
            Some(&WantedHeaders::Only(vec![
                HeaderName::from_static("x-request-id"),
                http::header::ACCEPT,
                http::header::USER_AGENT,
            ]))
        );
        let mut record = record("/", None);
        let mut headers = HeaderMap::new();
        headers.append("x-request-id", HeaderValue::from_static("r-1"));
        headers.append("user-agent", HeaderValue::from_static("curl/8"));
        record.headers = Some(Box::new(headers));
        let mut response = HeaderMap::new();
        response.append("set-cookie", HeaderValue::from_static("a=1"));
        response.append("set-cookie", HeaderValue::from_static("b=2"));
        record.response_headers = Some(Box::new(response));
        let trace = shape.exports(&record).expect("sampled");
        let span = shape.span(&record, &trace);
        assert_eq!(
            attribute(&span, "http.request.header.x-request-id"),
            Some(&strings(&["r-1"]))
        );
        assert_eq!(
            attribute(&span, "user_agent.original"),
            Some(&Value::from("curl/8"))
        );
        // Absent headers make no attribute.
        assert_eq!(attribute(&span, "http.request.header.accept"), None);
        assert_eq!(attribute(&span, "http.response.header.x-request-id"), None);
        assert_eq!(
            attribute(&span, "http.response.header.set-cookie"),
            Some(&strings(&["a=1", "b=2"]))
        );
    }

    #[test]
    fn nothing_is_copied_when_no_header_is_captured() {
        let shape = shape(|_| {});
        assert_eq!(shape.wanted_request_headers(), None);
        assert_eq!(shape.wanted_response_headers(), None);
    }

    #[test]
    fn an_invalid_captured_header_name_is_refused_with_its_option() {
        let config = Tracing {
            captured_response_headers: vec!["bad header".into()],
            ..Tracing::default()
        };
        let Err(error) = SpanShape::new(&config) else {
            panic!("accepted");
        };
        let text = error.to_string();
        assert!(
            text.contains("capturedResponseHeaders") && text.contains("bad header"),
            "{text}"
        );
    }

    #[test]
    fn internal_services_are_exported_only_with_add_internals() {
        let api = record("/api/rawdata", Some("api@internal"));
        assert!(shape(|_| {}).exports(&api).is_none());
        assert!(shape(|c| c.add_internals = true).exports(&api).is_some());
        assert!(
            shape(|_| {})
                .exports(&record("/", Some("app@file")))
                .is_some()
        );
        assert!(shape(|_| {}).exports(&record("/", None)).is_some());
        let mut unsampled = record("/", None);
        unsampled.trace = unsampled.trace.map(|t| RequestTrace {
            sampled: false,
            ..t
        });
        assert!(shape(|_| {}).exports(&unsampled).is_none());
    }
}
