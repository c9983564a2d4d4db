//! Tracing through the real binary: W3C `traceparent` propagation to the backend and the
//! OTLP export of one server span per request — over HTTP (plaintext, and HTTPS with a test
//! CA and a client certificate) and over gRPC (TLS, and h2c) — received by collectors run
//! here on loopback that decode the protobuf as a real collector would (the gRPC one with
//! tonic's server protocol).

mod support;

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use support::web::{Answer, Conn, HttpBackend, tls_server_config};
use support::*;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tonic::server::UnaryService;
use tonic_prost::ProstCodec;

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";
const GRPC_EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// An exported span with its resource's `service.name`.
#[derive(Clone, Debug)]
struct Exported {
    service_name: String,
    span: Span,
}

impl Exported {
    fn value(&self, key: &str) -> Option<&Value> {
        self.span
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.as_ref())
    }

    fn attribute(&self, key: &str) -> String {
        match self.value(key) {
            Some(Value::StringValue(s)) => s.clone(),
            Some(Value::IntValue(i)) => i.to_string(),
            other => format!("{other:?}"),
        }
    }

    /// A string-array attribute (captured headers).
    fn strings(&self, key: &str) -> Vec<String> {
        let Some(Value::ArrayValue(array)) = self.value(key) else {
            panic!("{key} is not an array: {:?}", self.value(key));
        };
        array
            .values
            .iter()
            .map(|v| match &v.value {
                Some(Value::StringValue(s)) => s.clone(),
                other => panic!("{key}: {other:?} is not a string"),
            })
            .collect()
    }
}

/// What a collector received: the spans, and the headers (gRPC metadata) of each export.
#[derive(Clone, Default)]
struct Received {
    spans: Arc<Mutex<Vec<Exported>>>,
    headers: Arc<Mutex<Vec<HeaderMap>>>,
    /// The next exports to answer `503 Service Unavailable` with `Retry-After: 1` (OTLP/HTTP).
    unavailable: Arc<AtomicUsize>,
}

impl Received {
    fn keep(&self, request: ExportTraceServiceRequest) {
        for resource_spans in request.resource_spans {
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
                    self.spans.lock().unwrap().push(Exported {
                        service_name: service_name.clone(),
                        span,
                    });
                }
            }
        }
    }
}

/// How a collector listens.
#[derive(Clone, Copy)]
enum Wire {
    /// OTLP/HTTP: `POST /v1/traces` over HTTP/1.1.
    Http,
    /// OTLP/gRPC: `TraceService/Export` over HTTP/2.
    Grpc,
}

/// An OTLP receiver on loopback, plaintext or TLS.
struct Collector {
    port: u16,
    received: Received,
}

impl Collector {
    async fn start(wire: Wire, tls: Option<Arc<rustls::ServerConfig>>) -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Received::default();
        let kept = received.clone();
        let acceptor = tls.map(TlsAcceptor::from);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (kept, acceptor) = (kept.clone(), acceptor.clone());
                tokio::spawn(async move {
                    match acceptor {
                        None => serve(stream, wire, kept).await,
                        Some(acceptor) => {
                            if let Ok(Ok(stream)) =
                                tokio::time::timeout(WAIT, acceptor.accept(stream)).await
                            {
                                serve(stream, wire, kept).await;
                            }
                        }
                    }
                });
            }
        });
        Collector { port, received }
    }

    /// The exported span whose id is `span_id` (hex), once it arrives.
    async fn span(&self, span_id: &str) -> Exported {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(found) = self
                .received
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
                self.received.spans.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether a span with `parent` (hex) as parent was exported.
    fn has_child_of(&self, parent: &str) -> bool {
        self.received
            .spans
            .lock()
            .unwrap()
            .iter()
            .any(|e| hex(&e.span.parent_span_id) == parent)
    }
}

async fn serve<IO>(io: IO, wire: Wire, kept: Received)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match wire {
        Wire::Http => {
            let service = service_fn(move |request| receive(request, kept.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(io), service)
                .await;
        }
        Wire::Grpc => {
            let service = service_fn(move |request| receive_grpc(request, kept.clone()));
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(io), service)
                .await;
        }
    }
}

async fn receive(
    request: Request<Incoming>,
    received: Received,
) -> Result<Response<Full<Bytes>>, Infallible> {
    received
        .headers
        .lock()
        .unwrap()
        .push(request.headers().clone());
    let wrong = request.method() != http::Method::POST
        || request.uri().path() != "/v1/traces"
        || request.headers().get("content-type").map(|v| v.as_bytes())
            != Some(b"application/x-protobuf");
    // Exports are gzip-compressed, as Traefik's are.
    let gzipped = request
        .headers()
        .get("content-encoding")
        .map(|v| v.as_bytes())
        == Some(b"gzip");
    let body = request.into_body().collect().await.unwrap().to_bytes();
    let mut plain = Vec::new();
    let body = if gzipped
        && flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut plain)
            .is_ok()
    {
        Bytes::from(plain)
    } else {
        Bytes::new()
    };
    let unavailable = received
        .unavailable
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if unavailable {
        let response = Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .header("retry-after", "1")
            .body(Full::new(Bytes::new()))
            .unwrap();
        return Ok(response);
    }
    let status = match ExportTraceServiceRequest::decode(body) {
        Ok(decoded) if !wrong => {
            received.keep(decoded);
            StatusCode::OK
        }
        _ => StatusCode::BAD_REQUEST,
    };
    let response = Response::builder()
        .status(status)
        .header("content-type", "application/x-protobuf")
        .body(Full::new(Bytes::new()))
        .unwrap();
    Ok(response)
}

async fn receive_grpc(
    request: Request<Incoming>,
    received: Received,
) -> Result<Response<tonic::body::Body>, Infallible> {
    received
        .headers
        .lock()
        .unwrap()
        .push(request.headers().clone());
    if request.uri().path() != GRPC_EXPORT {
        return Ok(tonic::Status::unimplemented("no such method").into_http());
    }
    // Only gzip-compressed exports are accepted (tonic refuses others with UNIMPLEMENTED).
    if request.headers().get("grpc-encoding").map(|v| v.as_bytes()) != Some(b"gzip") {
        return Ok(
            tonic::Status::unimplemented("exports are expected gzip-compressed").into_http(),
        );
    }
    let mut grpc = tonic::server::Grpc::new(ProstCodec::<
        ExportTraceServiceResponse,
        ExportTraceServiceRequest,
    >::default())
    .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    Ok(grpc.unary(TraceService(received), request).await)
}

/// The collector's `TraceService`: keeps what it is sent, accepts it all.
struct TraceService(Received);

impl UnaryService<ExportTraceServiceRequest> for TraceService {
    type Response = ExportTraceServiceResponse;
    type Future = Ready<Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<ExportTraceServiceRequest>) -> Self::Future {
        self.0.keep(request.into_inner());
        ready(Ok(tonic::Response::new(
            ExportTraceServiceResponse::default(),
        )))
    }
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
    let collector = Collector::start(Wire::Http, None).await;
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
            .received
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

/// The dynamic configuration routing `site.test` to `backend`.
fn site(backend: &HttpBackend) -> String {
    format!(
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
    )
}

/// A request with a traceparent naming `parent` as the caller's span: the span the router
/// sent to the backend (hex), read from the backend's echo.
async fn traced_get(port: u16, path: &str, parent: &str, headers: &[(&str, &str)]) -> String {
    let traceparent = format!("00-{CLIENT_TRACE}-{parent}-01");
    let mut all = vec![("traceparent", traceparent.as_str())];
    all.extend_from_slice(headers);
    let answer = get(port, path, &all).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    parts(answer.header("x-seen-traceparent")).1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_go_over_grpc_with_tls_metadata_captured_headers_and_a_redacted_query() {
    let ca = TestCa::new("collector-ca");
    let cert = ca.issue(&["127.0.0.1"]);
    let collector =
        Collector::start(Wire::Grpc, Some(tls_server_config(&cert, None, &["h2"]))).await;
    let backend = HttpBackend::start("site").await;
    let dir = temp_dir("tracing-grpc");
    let (ca_path, _) = ca.cert.write(&dir, "collector-ca");
    let web = free_port();
    let tracing = format!(
        r#"ping:
  entryPoint: web
tracing:
  serviceName: edge-grpc
  capturedRequestHeaders: [X-Request-Id, Accept]
  capturedResponseHeaders: [X-Backend]
  safeQueryParams: [page]
  otlp:
    grpc:
      endpoint: "127.0.0.1:{}"
      headers:
        Authorization: Bearer sesame
      tls:
        ca: "{}"
"#,
        collector.port,
        ca_path.display()
    );
    let static_yaml = static_config(&dir, &[("web", web)], &tracing);
    let router = Router::start(&dir, &static_yaml, &site(&backend), &[web]);

    // ping@internal is not exported (addInternals is false)...
    let internal_parent = "1111111111111111";
    let answer = get(
        web,
        "/ping",
        &[(
            "traceparent",
            &format!("00-{CLIENT_TRACE}-{internal_parent}-01"),
        )],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    // ...while a routed request is, with what tracing captures.
    let span_id = traced_get(
        web,
        "/items?token=s3cret&page=2&page=3",
        CLIENT_SPAN,
        &[("x-request-id", "r-42")],
    )
    .await;
    let exported = collector.span(&span_id).await;
    assert_eq!(exported.service_name, "edge-grpc");
    assert_eq!(hex(&exported.span.parent_span_id), CLIENT_SPAN);
    assert_eq!(exported.span.kind, SpanKind::Server as i32);
    assert_eq!(exported.attribute("url.path"), "/items");
    assert_eq!(
        exported.attribute("url.query"),
        "page=2&page=3&token=REDACTED"
    );
    assert_eq!(
        exported.strings("http.request.header.x-request-id"),
        ["r-42"]
    );
    assert_eq!(exported.strings("http.response.header.x-backend"), ["site"]);
    // Not sent by the client: no attribute.
    assert!(exported.value("http.request.header.accept").is_none());
    let metadata = collector.received.headers.lock().unwrap().clone();
    assert!(
        metadata
            .iter()
            .all(|h| h.get("authorization").is_some_and(|v| v == "Bearer sesame")),
        "{metadata:?}"
    );
    assert!(
        !collector.has_child_of(internal_parent),
        "ping was exported"
    );
    drop(router);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_go_over_grpc_in_plaintext_when_insecure() {
    let collector = Collector::start(Wire::Grpc, None).await;
    let backend = HttpBackend::start("site").await;
    let dir = temp_dir("tracing-h2c");
    let web = free_port();
    let tracing = format!(
        "tracing:\n  otlp:\n    grpc:\n      endpoint: \"127.0.0.1:{}\"\n      insecure: true\n",
        collector.port
    );
    let static_yaml = static_config(&dir, &[("web", web)], &tracing);
    let router = Router::start(&dir, &static_yaml, &site(&backend), &[web]);
    let span_id = traced_get(web, "/plain", CLIENT_SPAN, &[]).await;
    let exported = collector.span(&span_id).await;
    assert_eq!(exported.service_name, "sallyport");
    assert_eq!(exported.attribute("http.router"), "site@file");
    drop(router);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_export_trusts_the_configured_ca_and_offers_the_client_certificate() {
    let ca = TestCa::new("collector-ca");
    let server = ca.issue(&["127.0.0.1"]);
    let client = ca.issue(&["sallyport"]);
    // The collector requires a client certificate from the same CA.
    let collector = Collector::start(
        Wire::Http,
        Some(tls_server_config(&server, Some(&ca.cert), &["http/1.1"])),
    )
    .await;
    let backend = HttpBackend::start("site").await;
    let dir = temp_dir("tracing-https");
    let (ca_path, _) = ca.cert.write(&dir, "collector-ca");
    let (cert_path, key_path) = client.write(&dir, "client");
    let web = free_port();
    // No path: the default /v1/traces, which the collector insists on.
    let tracing = format!(
        r#"tracing:
  otlp:
    http:
      endpoint: "https://127.0.0.1:{}"
      tls:
        ca: "{}"
        cert: "{}"
        key: "{}"
"#,
        collector.port,
        ca_path.display(),
        cert_path.display(),
        key_path.display()
    );
    let static_yaml = static_config(&dir, &[("web", web)], &tracing);
    let router = Router::start(&dir, &static_yaml, &site(&backend), &[web]);
    let span_id = traced_get(web, "/secure", CLIENT_SPAN, &[]).await;
    let exported = collector.span(&span_id).await;
    assert_eq!(exported.attribute("url.path"), "/secure");
    drop(router);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unavailable_collector_gets_the_batch_again_after_its_retry_after() {
    let collector = Collector::start(Wire::Http, None).await;
    collector.received.unavailable.store(2, Ordering::SeqCst);
    let backend = HttpBackend::start("site").await;
    let dir = temp_dir("tracing-retry");
    let web = free_port();
    let static_yaml = static_config(
        &dir,
        &[("web", web)],
        &format!(
            "tracing:\n  otlp:\n    http:\n      endpoint: \"http://127.0.0.1:{}/v1/traces\"\n",
            collector.port
        ),
    );
    let router = Router::start(&dir, &static_yaml, &site(&backend), &[web]);
    let answer = get(web, "/retried", &[]).await;
    assert_eq!(answer.status, StatusCode::OK);
    let (_, span, _) = parts(answer.header("x-seen-traceparent"));
    // Two refusals, each followed by the one-second wait the collector asked for.
    let exported = collector.span(&span).await;
    assert_eq!(exported.attribute("url.path"), "/retried");
    assert_eq!(collector.received.unavailable.load(Ordering::SeqCst), 0);
    router.wait_log("tracing: cannot export spans; retrying");
    assert_eq!(
        collector.received.spans.lock().unwrap().len(),
        1,
        "the batch is delivered once"
    );
    drop(router);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_or_hangs_does_not_slow_requests() {
    let backend = HttpBackend::start("site").await;
    // Down: nothing listens on its port.
    let down = free_port();
    // Hanging: accepts connections, never answers.
    let hanging = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hanging_port = hanging.local_addr().unwrap().port();
    let held = Arc::new(Mutex::new(Vec::new()));
    let holder = held.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = hanging.accept().await {
            holder.lock().unwrap().push(stream);
        }
    });
    let collectors = [
        format!("    http:\n      endpoint: \"http://127.0.0.1:{down}/v1/traces\"\n"),
        format!("    grpc:\n      endpoint: \"127.0.0.1:{hanging_port}\"\n      insecure: true\n"),
    ];
    for (index, collector) in collectors.iter().enumerate() {
        let dir = temp_dir(&format!("tracing-stuck-{index}"));
        let web = free_port();
        let static_yaml = static_config(
            &dir,
            &[("web", web)],
            &format!("tracing:\n  otlp:\n{collector}"),
        );
        let router = Router::start(&dir, &static_yaml, &site(&backend), &[web]);
        // More spans than the export queue holds, on four connections, while the first
        // batch's export fails or hangs.
        let mut clients = Vec::new();
        for _ in 0..4 {
            clients.push(tokio::spawn(async move {
                let mut conn = Conn::h1(web).await;
                let mut slowest = Duration::ZERO;
                for _ in 0..700 {
                    let sent = Instant::now();
                    let answer = conn
                        .send(
                            Request::get("/load")
                                .header("host", "site.test")
                                .body(Full::new(Bytes::new()))
                                .unwrap(),
                        )
                        .await;
                    assert_eq!(answer.status, StatusCode::OK);
                    slowest = slowest.max(sent.elapsed());
                }
                slowest
            }));
        }
        for client in clients {
            let slowest = client.await.unwrap();
            // An export waits up to 10 s for the collector; requests never wait for it.
            assert!(
                slowest < Duration::from_secs(2),
                "a request took {slowest:?}"
            );
        }
        if index == 0 {
            router.wait_log("tracing: cannot export spans");
        } else {
            router.wait_log("tracing: export queue full, span dropped");
        }
        drop(router);
    }
}
