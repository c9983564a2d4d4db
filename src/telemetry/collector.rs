//! The OpenTelemetry collector spans are sent to: one `ExportTraceServiceRequest` per batch,
//! over OTLP/HTTP (a protobuf `POST`) or OTLP/gRPC (the unary `TraceService/Export`).
//!
//! Both go through l7's client [`Transport`] — hyper, rustls with aws-lc-rs, the TLS
//! settings servers transports use — so tracing adds no HTTP or TLS stack of its own. gRPC
//! is tonic's client protocol (framing, status trailers) over that transport, without
//! tonic's channel. Batching, deadlines and what a failure means are the caller's.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use l7::error::ProxyError;
use l7::transport::{Transport, TransportSettings};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::codec::CompressionEncoding;
use tonic_prost::ProstCodec;

use super::TelemetryError;
use crate::config::static_cfg::{OtlpGrpc, OtlpHttp, OtlpTls};

/// The OTLP/HTTP path when the endpoint has none (the OTLP exporters' default).
const DEFAULT_HTTP_PATH: &str = "/v1/traces";
/// The collector's trace service method.
const GRPC_EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
/// A collector's answer is a small status message; more is not read.
const MAX_ANSWER: usize = 64 * 1024;

/// Why a batch was not accepted.
#[derive(Debug, thiserror::Error)]
pub(super) enum ExportError {
    #[error("{0}")]
    Send(#[from] ProxyError),
    #[error("compressing the batch: {0}")]
    Compress(std::io::Error),
    #[error("reading the answer: {0}")]
    Answer(String),
    #[error("the collector answered {status}")]
    Status {
        status: StatusCode,
        /// The answer's `Retry-After`, in seconds.
        retry_after: Option<Duration>,
    },
    #[error("the collector answered gRPC status {code:?}: {message}")]
    Grpc { code: tonic::Code, message: String },
    #[error("the collector rejected {rejected} spans: {message}")]
    Rejected { rejected: i64, message: String },
}

/// Whether an export that failed may be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Retry {
    No,
    /// After the collector's own delay when it gave one, else after the caller's backoff.
    After(Option<Duration>),
}

impl ExportError {
    /// The OTLP specification's retryable failures: the collector could not be reached, or
    /// answered HTTP 429, 502, 503 or 504, or one of the transient gRPC codes. A rejected
    /// batch (partial success) or any other answer is final.
    pub(super) fn retry(&self) -> Retry {
        use tonic::Code;
        match self {
            ExportError::Send(_) => Retry::After(None),
            ExportError::Status {
                status,
                retry_after,
            } if matches!(status.as_u16(), 429 | 502 | 503 | 504) => Retry::After(*retry_after),
            ExportError::Grpc {
                code:
                    Code::Cancelled
                    | Code::DeadlineExceeded
                    | Code::ResourceExhausted
                    | Code::Aborted
                    | Code::OutOfRange
                    | Code::Unavailable
                    | Code::DataLoss,
                ..
            } => Retry::After(None),
            _ => Retry::No,
        }
    }
}

/// Where and how batches are sent.
pub(super) struct Collector {
    transport: Arc<Transport>,
    protocol: Protocol,
}

enum Protocol {
    /// `POST` to this URL.
    Http { endpoint: Uri, headers: HeaderMap },
    /// `TraceService/Export` at this origin (`https://` or `h2c://` host:port).
    Grpc { origin: Uri, headers: HeaderMap },
}

impl Collector {
    /// `tracing.otlp.http`: an `http://` or `https://` URL (`/v1/traces` when it has no
    /// path); `tls` applies to `https://` only.
    pub(super) fn http(config: &OtlpHttp, deadline: Duration) -> Result<Self, TelemetryError> {
        let endpoint = http_endpoint(&config.endpoint)?;
        Ok(Collector {
            transport: transport(config.tls.as_ref(), "http", deadline)?,
            protocol: Protocol::Http {
                endpoint,
                headers: headers("http", &config.headers)?,
            },
        })
    }

    /// `tracing.otlp.grpc`: `host:port`, over TLS unless `insecure` (and no `tls`), as the
    /// Go exporter Traefik uses decides.
    pub(super) fn grpc(config: &OtlpGrpc, deadline: Duration) -> Result<Self, TelemetryError> {
        let bad = || TelemetryError::GrpcEndpoint(config.endpoint.clone());
        let authority: Authority = config.endpoint.parse().map_err(|_| bad())?;
        if authority.port_u16().is_none() || authority.as_str().contains('@') {
            return Err(bad());
        }
        let scheme = if config.insecure && config.tls.is_none() {
            "h2c"
        } else {
            "https"
        };
        let origin = format!("{scheme}://{authority}")
            .parse()
            .map_err(|_| bad())?;
        Ok(Collector {
            transport: transport(config.tls.as_ref(), "grpc", deadline)?,
            protocol: Protocol::Grpc {
                origin,
                headers: headers("grpc", &config.headers)?,
            },
        })
    }

    /// Sends one batch; `Ok` when the collector took every span.
    pub(super) async fn export(
        &self,
        request: ExportTraceServiceRequest,
    ) -> Result<(), ExportError> {
        let answer = match &self.protocol {
            Protocol::Http { endpoint, headers } => self.post(endpoint, headers, request).await?,
            Protocol::Grpc { origin, headers } => {
                grpc_export(
                    self.transport.clone(),
                    origin.clone(),
                    headers.clone(),
                    request,
                )
                .await?
            }
        };
        match answer.partial_success {
            Some(partial) if partial.rejected_spans > 0 => Err(ExportError::Rejected {
                rejected: partial.rejected_spans,
                message: partial.error_message,
            }),
            _ => Ok(()),
        }
    }

    async fn post(
        &self,
        endpoint: &Uri,
        headers: &HeaderMap,
        request: ExportTraceServiceRequest,
    ) -> Result<ExportTraceServiceResponse, ExportError> {
        let compressed = gzip(&request.encode_to_vec()).map_err(ExportError::Compress)?;
        let body = Full::new(Bytes::from(compressed));
        let mut post = Request::new(l7::handler::boxed(body));
        *post.method_mut() = Method::POST;
        *post.uri_mut() = endpoint.clone();
        *post.headers_mut() = headers.clone();
        post.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-protobuf"),
        );
        post.headers_mut()
            .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        let response = self.transport.send(post).await?;
        let status = response.status();
        if !status.is_success() {
            // Only the delay-seconds form: collectors do not send dates.
            let retry_after = response
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            return Err(ExportError::Status {
                status,
                retry_after,
            });
        }
        let mut body = response.into_body();
        let mut answer = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ExportError::Answer(e.to_string()))?;
            if let Ok(data) = frame.into_data() {
                if answer.len() + data.len() > MAX_ANSWER {
                    return Err(ExportError::Answer(format!("more than {MAX_ANSWER} bytes")));
                }
                answer.extend_from_slice(&data);
            }
        }
        // An empty or undecodable success is a success: some collectors answer nothing.
        Ok(ExportTraceServiceResponse::decode(answer.as_slice()).unwrap_or_default())
    }
}

/// A batch compressed as the OTLP exporters Traefik uses send it. Spans are repetitive
/// (attribute names, ids, host names), so this saves most of their bytes on the wire.
fn gzip(message: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(message.len() / 4),
        flate2::Compression::default(),
    );
    encoder.write_all(message)?;
    encoder.finish()
}

/// One `TraceService/Export` call.
async fn grpc_export(
    transport: Arc<Transport>,
    origin: Uri,
    headers: HeaderMap,
    request: ExportTraceServiceRequest,
) -> Result<ExportTraceServiceResponse, ExportError> {
    let channel = Channel { transport, headers };
    let mut grpc = tonic::client::Grpc::with_origin(channel, origin)
        .send_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Gzip);
    let codec = ProstCodec::<ExportTraceServiceRequest, ExportTraceServiceResponse>::default();
    let path = PathAndQuery::from_static(GRPC_EXPORT);
    match grpc.unary(tonic::Request::new(request), path, codec).await {
        Ok(response) => Ok(response.into_inner()),
        Err(status) => Err(ExportError::Grpc {
            code: status.code(),
            message: status.message().to_owned(),
        }),
    }
}

/// `http://` or `https://` with a host; no path means the default one.
fn http_endpoint(text: &str) -> Result<Uri, TelemetryError> {
    let bad = || TelemetryError::HttpEndpoint(text.to_owned());
    let uri: Uri = text.parse().map_err(|_| bad())?;
    let scheme_ok = uri
        .scheme_str()
        .is_some_and(|s| s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https"));
    if !scheme_ok || uri.host().is_none_or(str::is_empty) {
        return Err(bad());
    }
    // The parsed URI says `/` for no path at all: the text tells them apart.
    let has_path = text
        .split_once("://")
        .is_some_and(|(_, rest)| rest.contains('/'));
    if has_path {
        return Ok(uri);
    }
    let path = match uri.query() {
        Some(query) => format!("{DEFAULT_HTTP_PATH}?{query}"),
        None => DEFAULT_HTTP_PATH.to_owned(),
    };
    let mut parts = uri.into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(path).map_err(|_| bad())?);
    Uri::from_parts(parts).map_err(|_| bad())
}

/// The `headers` option as request headers (gRPC metadata for `grpc`).
fn headers(
    exporter: &'static str,
    configured: &std::collections::BTreeMap<String, String>,
) -> Result<HeaderMap, TelemetryError> {
    let mut map = HeaderMap::new();
    for (name, value) in configured {
        let invalid = || TelemetryError::Header {
            exporter,
            name: name.clone(),
        };
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid())?;
        let value = HeaderValue::from_str(value).map_err(|_| invalid())?;
        map.append(name, value);
    }
    Ok(map)
}

/// The client transport for one exporter: its TLS from `tls`, the system's roots without;
/// connecting is bounded by the export deadline.
fn transport(
    tls: Option<&OtlpTls>,
    exporter: &'static str,
    deadline: Duration,
) -> Result<Arc<Transport>, TelemetryError> {
    let mut settings = TransportSettings {
        dial_timeout: deadline,
        ..TransportSettings::default()
    };
    if let Some(tls) = tls {
        let error = |option: &'static str, reason: String| TelemetryError::Tls {
            exporter,
            option,
            reason,
        };
        settings.insecure_skip_verify = tls.insecure_skip_verify;
        if !tls.ca.is_empty() {
            settings.root_cas =
                l4::tls::load_ca_certificates(&tls.ca).map_err(|e| error("ca", e.to_string()))?;
        }
        match (tls.cert.is_empty(), tls.key.is_empty()) {
            (true, true) => {}
            (false, false) => {
                let cert = crate::runtime::compile::read_pem_or_path(&tls.cert)
                    .map_err(|e| error("cert", e))?;
                let key = crate::runtime::compile::read_pem_or_path(&tls.key)
                    .map_err(|e| error("key", e))?;
                let chain = CertificateDer::pem_slice_iter(&cert)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| error("cert", e.to_string()))?;
                let key =
                    PrivateKeyDer::from_pem_slice(&key).map_err(|e| error("key", e.to_string()))?;
                settings.client_certificates.push((chain, key));
            }
            _ => return Err(error("cert", "cert and key go together".to_owned())),
        }
    }
    Transport::new(settings).map_err(|source| TelemetryError::Transport { exporter, source })
}

/// tonic's client over the transport: the gRPC request as an HTTP/2 request, the
/// configured metadata added.
struct Channel {
    transport: Arc<Transport>,
    headers: HeaderMap,
}

impl tower_service::Service<Request<tonic::body::Body>> for Channel {
    type Response = Response<l7::handler::Body>;
    type Error = ProxyError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ProxyError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        // The transport's pools take any number of requests.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<tonic::body::Body>) -> Self::Future {
        let mut request = request.map(l7::handler::boxed);
        for (name, value) in &self.headers {
            request.headers_mut().append(name.clone(), value.clone());
        }
        let transport = self.transport.clone();
        Box::pin(async move { transport.send(request).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEADLINE: Duration = Duration::from_secs(1);

    #[test]
    fn only_transient_failures_are_retried() {
        let status = |code: u16, retry_after: Option<u64>| ExportError::Status {
            status: StatusCode::from_u16(code).unwrap(),
            retry_after: retry_after.map(Duration::from_secs),
        };
        let grpc = |code| ExportError::Grpc {
            code,
            message: String::new(),
        };
        assert_eq!(
            status(503, Some(7)).retry(),
            Retry::After(Some(Duration::from_secs(7)))
        );
        for code in [429, 502, 504] {
            assert_eq!(status(code, None).retry(), Retry::After(None), "{code}");
        }
        for code in [400, 401, 404, 413, 500] {
            assert_eq!(status(code, Some(1)).retry(), Retry::No, "{code}");
        }
        assert_eq!(grpc(tonic::Code::Unavailable).retry(), Retry::After(None));
        assert_eq!(
            grpc(tonic::Code::ResourceExhausted).retry(),
            Retry::After(None)
        );
        assert_eq!(grpc(tonic::Code::InvalidArgument).retry(), Retry::No);
        assert_eq!(grpc(tonic::Code::Unauthenticated).retry(), Retry::No);
        let rejected = ExportError::Rejected {
            rejected: 3,
            message: "bad spans".into(),
        };
        assert_eq!(rejected.retry(), Retry::No);
    }

    #[test]
    fn http_endpoints_without_a_path_get_the_default_one() {
        let uri = |text: &str| http_endpoint(text).map(|u| u.to_string());
        assert_eq!(
            uri("http://collector:4318").unwrap(),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            uri("https://collector/custom/traces").unwrap(),
            "https://collector/custom/traces"
        );
        assert_eq!(uri("http://collector/").unwrap(), "http://collector/");
        for bad in [
            "collector:4318",
            "ftp://collector/x",
            "/v1/traces",
            "http://",
        ] {
            assert!(uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn grpc_endpoints_are_host_and_port() {
        let grpc = |endpoint: &str, insecure: bool| {
            Collector::grpc(
                &OtlpGrpc {
                    endpoint: endpoint.to_owned(),
                    insecure,
                    ..OtlpGrpc::default()
                },
                DEADLINE,
            )
        };
        let origin = |collector: Collector| match collector.protocol {
            Protocol::Grpc { origin, .. } => origin.to_string(),
            Protocol::Http { .. } => unreachable!("a grpc collector"),
        };
        assert_eq!(
            origin(grpc("c.test:4317", false).unwrap()),
            "https://c.test:4317/"
        );
        assert_eq!(
            origin(grpc("127.0.0.1:4317", true).unwrap()),
            "h2c://127.0.0.1:4317/"
        );
        for bad in [
            "c.test",
            "http://c.test:4317",
            "c.test:4317/x",
            "u@c.test:1",
        ] {
            let Err(error) = grpc(bad, false) else {
                panic!("{bad} accepted");
            };
            assert!(
                error.to_string().contains("tracing.otlp.grpc.endpoint"),
                "{error}"
            );
        }
    }

    #[test]
    fn tls_options_are_checked_and_named() {
        let collector = |tls: OtlpTls| {
            Collector::http(
                &OtlpHttp {
                    endpoint: "https://c.test".to_owned(),
                    tls: Some(tls),
                    ..OtlpHttp::default()
                },
                DEADLINE,
            )
        };
        let Err(error) = collector(OtlpTls {
            cert: "client.crt".to_owned(),
            ..OtlpTls::default()
        }) else {
            panic!("a cert without key accepted");
        };
        assert!(
            error.to_string().contains("tracing.otlp.http.tls.cert"),
            "{error}"
        );
        let Err(error) = collector(OtlpTls {
            ca: "/nonexistent/ca.pem".to_owned(),
            ..OtlpTls::default()
        }) else {
            panic!("a missing CA accepted");
        };
        assert!(
            error.to_string().contains("tracing.otlp.http.tls.ca"),
            "{error}"
        );
        assert!(
            collector(OtlpTls {
                insecure_skip_verify: true,
                ..OtlpTls::default()
            })
            .is_ok()
        );
    }

    #[test]
    fn invalid_headers_are_refused_with_their_name() {
        let mut config = OtlpGrpc::default();
        config.headers.insert("bad name".to_owned(), "x".to_owned());
        let Err(error) = Collector::grpc(&config, DEADLINE) else {
            panic!("accepted");
        };
        assert!(error.to_string().contains("\"bad name\""), "{error}");
    }
}
