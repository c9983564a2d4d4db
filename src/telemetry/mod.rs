//! Trace export: the static `tracing` section turned into the entrypoints' trace context
//! policy, and, with `tracing.otlp`, one OpenTelemetry server span per sampled request sent
//! to a collector over OTLP/gRPC or OTLP/HTTP (protobuf).
//!
//! The span is built from the request's record ([`l7::observe::RequestRecord`]) when its
//! response ends ([`span`]), with the very ids l7 sent to the backend in `traceparent`, so
//! the backend's spans hang under ours. Export is batched on a tokio task ([`collector`]);
//! a full queue drops spans rather than slow requests down. Owns neither the `traceparent`
//! format (l7::trace_context) nor the log subscriber.

mod collector;
mod span;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use l7::observe::{RequestObserver, RequestRecord, WantedHeaders};
use l7::trace_context::TracePolicy;
use opentelemetry::KeyValue;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SpanData;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::config::static_cfg::Tracing;
use collector::{Collector, Retry};
use span::SpanShape;

/// Spans waiting for export; beyond this they are dropped (a collector that is down must
/// not make the proxy grow without bound). The OpenTelemetry SDK's default queue size.
const QUEUE: usize = 2048;
/// At most this many spans a request to the collector (the SDK's default batch).
const MAX_BATCH: usize = 512;
/// How long a span may wait for others to share its export request.
const EXPORT_DELAY: Duration = Duration::from_secs(1);
/// One export request's deadline, connecting included (the OTLP exporters' default).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// Retries of a failed export: the OTLP exporters' defaults (Traefik's Go exporter): the
/// first after about 5 s, doubling up to 30 s, none once a minute has gone by.
const RETRY: Backoff = Backoff {
    first: Duration::from_secs(5),
    max: Duration::from_secs(30),
    give_up_after: Duration::from_secs(60),
};
/// How long shutdown waits for the last batch.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// A `tracing` section that cannot be exported as written; export is then disabled.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("tracing.otlp.http.endpoint {0:?}: an http:// or https:// URL with a host is expected")]
    HttpEndpoint(String),
    #[error("tracing.otlp.grpc.endpoint {0:?}: host:port is expected (no scheme, no path)")]
    GrpcEndpoint(String),
    #[error("tracing.otlp.{exporter}.headers: {name:?} is not a valid header name and value")]
    Header {
        exporter: &'static str,
        name: String,
    },
    #[error("tracing.otlp.{exporter}.tls.{option}: {reason}")]
    Tls {
        exporter: &'static str,
        option: &'static str,
        reason: String,
    },
    #[error("tracing.otlp.{exporter}.tls: {source}")]
    Transport {
        exporter: &'static str,
        source: l7::transport::TransportError,
    },
    #[error("tracing.{option}: {name:?} is not a header name")]
    HeaderName { option: &'static str, name: String },
}

/// The trace context policy every HTTP entrypoint applies when `tracing` is configured.
pub fn trace_policy(config: &Tracing) -> TracePolicy {
    TracePolicy::new(config.sample_rate)
}

/// Exports the span of every sampled request it observes.
pub struct SpanExport {
    queue: mpsc::Sender<SpanData>,
    shape: SpanShape,
    /// Taken by [`SpanExport::shutdown`].
    stop: Mutex<Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>>,
}

impl SpanExport {
    /// Starts the export task when `tracing.otlp` names a collector (`grpc` over `http`
    /// when both are set, as in Traefik); `Ok(None)` without one.
    pub fn start(config: &Tracing) -> Result<Option<Arc<SpanExport>>, TelemetryError> {
        let Some(otlp) = &config.otlp else {
            return Ok(None);
        };
        let collector = match (&otlp.grpc, &otlp.http) {
            (Some(grpc), _) => Collector::grpc(grpc, EXPORT_TIMEOUT)?,
            (None, Some(http)) => Collector::http(http, EXPORT_TIMEOUT)?,
            (None, None) => return Ok(None),
        };
        let shape = SpanShape::new(config)?;
        let resource = ResourceAttributesWithSchema::from(&resource(config));
        let (queue, spans) = mpsc::channel(QUEUE);
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(export_loop(collector, resource, spans, stopped));
        Ok(Some(Arc::new(SpanExport {
            queue,
            shape,
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
        let Some(trace) = self.shape.exports(record) else {
            return;
        };
        let span = self.shape.span(record, &trace);
        if self.queue.try_send(span).is_err() {
            debug!("tracing: export queue full, span dropped");
        }
    }

    fn wanted_headers(&self) -> Option<&WantedHeaders> {
        self.shape.wanted_request_headers()
    }

    fn wanted_response_headers(&self) -> Option<&WantedHeaders> {
        self.shape.wanted_response_headers()
    }
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
    collector: Collector,
    resource: ResourceAttributesWithSchema,
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
        send(&collector, &resource, std::mem::take(&mut batch), &RETRY).await;
        if stopping {
            break;
        }
    }
    // Whatever was queued before the stop.
    while let Ok(span) = spans.try_recv() {
        batch.push(span);
        if batch.len() == MAX_BATCH {
            send(&collector, &resource, std::mem::take(&mut batch), &RETRY).await;
        }
    }
    if !batch.is_empty() {
        send(&collector, &resource, batch, &RETRY).await;
    }
}

/// When a failed export is tried again.
struct Backoff {
    /// The first wait (before jitter).
    first: Duration,
    /// The longest wait.
    max: Duration,
    /// No attempt starts later than this after the first.
    give_up_after: Duration,
}

impl Backoff {
    /// `wait` scaled by a random factor in [0.5, 1.5), so that a fleet of routers whose
    /// collector came back does not retry in step.
    fn jittered(wait: Duration) -> Duration {
        let random = getrandom::u32().unwrap_or(u32::MAX / 2);
        wait.mul_f64(0.5 + f64::from(random) / f64::from(u32::MAX))
    }
}

/// Exports one batch: each attempt within [`EXPORT_TIMEOUT`], retried as `retry` says
/// while the failure is one that may pass ([`collector::Retry`]). Once that is over, the
/// batch is dropped with a log line: spans are not worth unbounded memory.
async fn send(
    collector: &Collector,
    resource: &ResourceAttributesWithSchema,
    batch: Vec<SpanData>,
    retry: &Backoff,
) {
    let count = batch.len();
    let request = ExportTraceServiceRequest {
        resource_spans: group_spans_by_resource_and_scope(batch, resource),
    };
    let started = tokio::time::Instant::now();
    let mut backoff = retry.first;
    for attempt in 1u32.. {
        let (error, again) =
            match tokio::time::timeout(EXPORT_TIMEOUT, collector.export(request.clone())).await {
                Ok(Ok(())) => return,
                Ok(Err(e)) => (e.to_string(), e.retry()),
                Err(_) => (
                    format!("the collector did not answer within {EXPORT_TIMEOUT:?}"),
                    Retry::After(None),
                ),
            };
        let wait = match again {
            Retry::No => None,
            Retry::After(asked) => Some(asked.unwrap_or_else(|| Backoff::jittered(backoff))),
        }
        .filter(|wait| started.elapsed() + *wait <= retry.give_up_after);
        let Some(wait) = wait else {
            warn!(spans = count, attempt, %error, "tracing: cannot export spans; dropped");
            return;
        };
        warn!(spans = count, attempt, %error, retry_in = ?wait, "tracing: cannot export spans; retrying");
        tokio::time::sleep(wait).await;
        backoff = (backoff * 2).min(retry.max);
    }
}
