//! Tracing through the real binary: W3C `traceparent` propagation to the backend and the
//! OTLP/HTTP export of one server span per request, received by a collector run here on
//! loopback that decodes the protobuf as a real collector would.

mod support;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use support::web::{Answer, Conn, HttpBackend};
use support::*;
use tokio::net::TcpListener;

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// An exported span with its resource's `service.name`.
#[derive(Clone, Debug)]
struct Exported {
    service_name: String,
    span: Span,
}

impl Exported {
    fn attribute(&self, key: &str) -> String {
        let value = self
            .span
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.as_ref());
        match value {
            Some(Value::StringValue(s)) => s.clone(),
            Some(Value::IntValue(i)) => i.to_string(),
            other => format!("{other:?}"),
        }
    }
}

/// An OTLP/HTTP receiver: decodes every `POST /v1/traces` and keeps its spans.
struct Collector {
    port: u16,
    spans: Arc<Mutex<Vec<Exported>>>,
}

impl Collector {
    async fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let kept = spans.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let kept = kept.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| receive(request, kept.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Collector { port, spans }
    }

    /// The exported span whose id is `span_id` (hex), once it arrives.
    async fn span(&self, span_id: &str) -> Exported {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(found) = self
                .spans
                .lock()
                .unwrap()
                .iter()
                .find(|e| hex(&e.span.span_id) == span_id)
            {
                return found.clone();
            }
            assert!(
                Instant::now() < deadline,
                "span {span_id} not exported; got {:?}",
                self.spans.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn receive(
    request: Request<Incoming>,
    spans: Arc<Mutex<Vec<Exported>>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let wrong = request.method() != http::Method::POST
        || request.uri().path() != "/v1/traces"
        || request.headers().get("content-type").map(|v| v.as_bytes())
            != Some(b"application/x-protobuf");
    let body = request.into_body().collect().await.unwrap().to_bytes();
    let decoded = ExportTraceServiceRequest::decode(body);
    let (status, decoded) = match decoded {
        Ok(decoded) if !wrong => (StatusCode::OK, decoded),
        _ => (
            StatusCode::BAD_REQUEST,
            ExportTraceServiceRequest::default(),
        ),
    };
    for resource_spans in decoded.resource_spans {
        let service_name = resource_spans
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| match &v.value {
                Some(Value::StringValue(s)) => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                spans.lock().unwrap().push(Exported {
                    service_name: service_name.clone(),
                    span,
                });
            }
        }
    }
    let response = Response::builder()
        .status(status)
        .header("content-type", "application/x-protobuf")
        .body(Full::new(Bytes::new()))
        .unwrap();
    Ok(response)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `00-<trace>-<span>-<flags>` → (trace, span, flags).
fn parts(traceparent: &str) -> (String, String, String) {
    let fields: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(fields.len(), 4, "{traceparent}");
    assert_eq!(fields[0], "00", "{traceparent}");
    (
        fields[1].to_owned(),
        fields[2].to_owned(),
        fields[3].to_owned(),
    )
}

async fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut conn = Conn::h1(port).await;
    let mut request = Request::builder()
        .uri(path)
        .header("host", format!("site.test:{port}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    conn.send(request.body(Full::new(Bytes::new())).unwrap())
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_traced_to_the_backend_and_exported_over_otlp() {
    let collector = Collector::start().await;
    let backend = HttpBackend::start("site").await;
    let dir = temp_dir("tracing");
    let web = free_port();
    let static_yaml = static_config(
        &dir,
        &[("web", web)],
        &format!(
            "tracing:\n  serviceName: edge-test\n  resourceAttributes:\n    deployment.environment: test\n  otlp:\n    http:\n      endpoint: \"http://127.0.0.1:{}/v1/traces\"\n",
            collector.port
        ),
    );
    let dynamic = format!(
        r#"
http:
  routers:
    site:
      rule: "Host(`site.test`)"
      service: app
  services:
    app:
      loadBalancer:
        servers: [{{url: "{}"}}]
"#,
        backend.url()
    );
    let router = Router::start(&dir, &static_yaml, &dynamic, &[web]);

    // A caller in a trace: the backend joins it under our span, which is exported.
    let client_parent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let answer = get(
        web,
        "/hello?secret=1",
        &[("traceparent", &client_parent), ("tracestate", "vendor=x")],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    let (trace, our_span, flags) = parts(answer.header("x-seen-traceparent"));
    assert_eq!(trace, CLIENT_TRACE);
    assert_ne!(our_span, CLIENT_SPAN);
    assert_eq!(flags, "01");
    assert_eq!(answer.header("x-seen-tracestate"), "vendor=x");
    let exported = collector.span(&our_span).await;
    assert_eq!(hex(&exported.span.trace_id), CLIENT_TRACE);
    assert_eq!(hex(&exported.span.parent_span_id), CLIENT_SPAN);
    assert_eq!(exported.span.name, "GET");
    assert_eq!(exported.span.kind, SpanKind::Server as i32);
    assert!(exported.span.end_time_unix_nano >= exported.span.start_time_unix_nano);
    assert_eq!(exported.service_name, "edge-test");
    for (key, value) in [
        ("http.request.method", "GET"),
        ("url.path", "/hello"),
        ("url.scheme", "http"),
        ("http.response.status_code", "200"),
        ("server.address", "site.test"),
        ("server.port", &web.to_string()),
        ("network.protocol.version", "1.1"),
        ("client.address", "127.0.0.1"),
        ("http.router", "site@file"),
        ("http.service", "app@file"),
    ] {
        assert_eq!(exported.attribute(key), value, "{key}");
    }

    // No trace yet: a new one starts (sampleRate defaults to 1), and no tracestate leaks.
    let answer = get(web, "/fresh", &[("tracestate", "orphan=1")]).await;
    let (trace, our_span, flags) = parts(answer.header("x-seen-traceparent"));
    assert_ne!(trace, CLIENT_TRACE);
    assert_eq!(flags, "01");
    assert_eq!(answer.header("x-seen-tracestate"), "");
    let exported = collector.span(&our_span).await;
    assert_eq!(hex(&exported.span.trace_id), trace);
    assert!(exported.span.parent_span_id.is_empty());
    assert_eq!(exported.attribute("url.path"), "/fresh");

    // A caller that does not sample: propagated as such, never exported.
    let unsampled = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-00");
    let answer = get(web, "/quiet", &[("traceparent", &unsampled)]).await;
    let (_, quiet_span, flags) = parts(answer.header("x-seen-traceparent"));
    assert_eq!(flags, "00");
    // A garbled traceparent is replaced by a new trace.
    let answer = get(web, "/garbled", &[("traceparent", "00-zz-yy-01")]).await;
    let (trace, after, _) = parts(answer.header("x-seen-traceparent"));
    assert_ne!(trace, CLIENT_TRACE);
    collector.span(&after).await;
    assert!(
        !collector
            .spans
            .lock()
            .unwrap()
            .iter()
            .any(|e| hex(&e.span.span_id) == quiet_span),
        "an unsampled request was exported"
    );
    drop(router);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_of_a_request_carry_its_span_fields() {
    let dir = temp_dir("tracing-logs");
    let (router, port) = router("web", &dir, "http: {}\n");
    // Two Host headers: refused with a debug line logged inside the request.
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::io::Write::write_all(
        &mut stream,
        b"GET /twice HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n",
    )
    .unwrap();
    let status = std_read_line(&mut stream);
    assert!(status.starts_with("HTTP/1.1 400"), "{status}");
    router.wait_log("400: missing, repeated or malformed Host header");
    let log = router.log();
    let line = log
        .lines()
        .find(|l| l.contains("400: missing, repeated"))
        .unwrap();
    for field in ["request{", "entrypoint=web", "method=GET", "/twice"] {
        assert!(line.contains(field), "{field} missing in {line}");
    }
}
