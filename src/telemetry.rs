//! Trace export: the static `tracing` section turned into the entrypoints' trace context
//! policy, and, with `tracing.otlp.http`, one OpenTelemetry server span per sampled request
//! sent over OTLP/HTTP (protobuf).
//!
//! The span is built from the request's record ([`l7::observe::RequestRecord`]) when its
//! response ends, with the very ids l7 sent to the backend in `traceparent`, so the
//! backend's spans hang under ours. Export is batched on a tokio task through hyper (no
//! second HTTP or TLS stack); a full queue drops spans rather than slow requests down.
//! Owns neither the `traceparent` format (l7::trace_context) nor the log subscriber.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use l7::observe::{RequestObserver, RequestRecord};
use l7::trace_context::{RequestTrace, TracePolicy};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter, SpanLinks};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::config::static_cfg::{OtlpHttp, Tracing};

/// Spans waiting for export; beyond this they are dropped (a collector that is down must
/// not make the proxy grow without bound). The OpenTelemetry SDK's default queue size.
const QUEUE: usize = 2048;
/// At most this many spans a request to the collector (the SDK's default batch).
const MAX_BATCH: usize = 512;
/// How long a span may wait for others to share its export request.
const EXPORT_DELAY: Duration = Duration::from_secs(1);
/// One export request's deadline (the OTLP exporters' default).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for the last batch.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error(
        "tracing.otlp.http.endpoint {0:?}: only http:// endpoints are supported (https is not yet)"
    )]
    UnsupportedScheme(String),
    #[error("tracing.otlp.http: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// The trace context policy every HTTP entrypoint applies when `tracing` is configured.
pub fn trace_policy(config: &Tracing) -> TracePolicy {
    TracePolicy::new(config.sample_rate)
}

/// Exports the span of every sampled request it observes.
pub struct SpanExport {
    queue: mpsc::Sender<SpanData>,
    scope: InstrumentationScope,
    /// Taken by [`SpanExport::shutdown`].
    stop: Mutex<Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>>,
}

impl SpanExport {
    /// Starts the export task when `tracing.otlp.http` is set; `Ok(None)` without it (a
    /// `grpc` exporter is warned about by the caller, see docs/tracing.md).
    pub fn start(config: &Tracing) -> Result<Option<Arc<SpanExport>>, TelemetryError> {
        let Some(http) = config.otlp.as_ref().and_then(|o| o.http.as_ref()) else {
            return Ok(None);
        };
        let mut exporter = exporter(http)?;
        exporter.set_resource(&resource(config));
        let (queue, spans) = mpsc::channel(QUEUE);
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(export_loop(exporter, spans, stopped));
        let scope = InstrumentationScope::builder("sallyport")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        Ok(Some(Arc::new(SpanExport {
            queue,
            scope,
            stop: Mutex::new(Some((stop, task))),
        })))
    }

    /// Sends what is queued and stops exporting (at process exit).
    pub async fn shutdown(&self) {
        let stop = self.stop.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some((stop, task)) = stop {
            let _ = stop.send(());
            if tokio::time::timeout(FLUSH_TIMEOUT, task).await.is_err() {
                warn!("tracing: the last spans were not exported in time");
            }
        }
    }
}

impl RequestObserver for SpanExport {
    fn observe(&self, record: &RequestRecord) {
        let Some(trace) = record.trace.filter(|t| t.sampled) else {
            return;
        };
        let span = server_span(record, &trace, self.scope.clone());
        if self.queue.try_send(span).is_err() {
            debug!("tracing: export queue full, span dropped");
        }
    }
}

fn exporter(http: &OtlpHttp) -> Result<opentelemetry_otlp::SpanExporter, TelemetryError> {
    if !http.endpoint.starts_with("http://") {
        return Err(TelemetryError::UnsupportedScheme(http.endpoint.clone()));
    }
    let client =
        opentelemetry_http::hyper::HyperClient::with_default_connector(EXPORT_TIMEOUT, None);
    let headers: HashMap<String, String> = http
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(http.endpoint.clone())
        .with_timeout(EXPORT_TIMEOUT)
        .with_headers(headers)
        .with_http_client(client)
        .build()?)
}

/// `service.name`, then the configured attributes (`resourceAttributes` over the
/// deprecated `globalAttributes`).
fn resource(config: &Tracing) -> Resource {
    let mut attributes = config.global_attributes.clone();
    attributes.extend(config.resource_attributes.clone());
    Resource::builder_empty()
        .with_service_name(config.service_name.clone())
        .with_attributes(attributes.into_iter().map(|(k, v)| KeyValue::new(k, v)))
        .build()
}

/// Batches spans: an export when [`MAX_BATCH`] are waiting or the first has waited
/// [`EXPORT_DELAY`]; what is queued is sent when `stop` fires.
async fn export_loop(
    exporter: opentelemetry_otlp::SpanExporter,
    mut spans: mpsc::Receiver<SpanData>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let first = tokio::select! {
            span = spans.recv() => span,
            _ = &mut stop => None,
        };
        let Some(first) = first else { break };
        batch.push(first);
        let flush_at = tokio::time::Instant::now() + EXPORT_DELAY;
        let mut stopping = false;
        while batch.len() < MAX_BATCH {
            tokio::select! {
                span = spans.recv() => match span {
                    Some(span) => batch.push(span),
                    None => { stopping = true; break }
                },
                _ = tokio::time::sleep_until(flush_at) => break,
                _ = &mut stop => { stopping = true; break }
            }
        }
        send(&exporter, std::mem::take(&mut batch)).await;
        if stopping {
            break;
        }
    }
    // Whatever was queued before the stop.
    while let Ok(span) = spans.try_recv() {
        batch.push(span);
        if batch.len() == MAX_BATCH {
            send(&exporter, std::mem::take(&mut batch)).await;
        }
    }
    if !batch.is_empty() {
        send(&exporter, batch).await;
    }
}

async fn send(exporter: &opentelemetry_otlp::SpanExporter, batch: Vec<SpanData>) {
    let count = batch.len();
    if let Err(e) = exporter.export(batch).await {
        warn!(spans = count, error = %e, "tracing: cannot export spans");
    }
}

/// The request's server span, named and attributed after the OpenTelemetry HTTP semantic
/// conventions: the name is the method (no route template is known at the entrypoint).
fn server_span(
    record: &RequestRecord,
    trace: &RequestTrace,
    scope: InstrumentationScope,
) -> SpanData {
    let mut attributes = vec![
        KeyValue::new("http.request.method", record.method.to_string()),
        KeyValue::new("url.path", record.uri.path().to_owned()),
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
        instrumentation_scope: scope,
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
    use super::*;

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
    fn an_https_endpoint_is_refused_with_its_name() {
        let http = OtlpHttp {
            endpoint: "https://collector:4318/v1/traces".to_owned(),
            ..OtlpHttp::default()
        };
        let error = exporter(&http).expect_err("refused");
        assert!(error.to_string().contains("https://collector"), "{error}");
    }
}
