//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>) at the front door: read a
//! request's `traceparent`, give the request a span of its own in that trace (or in a new
//! one), and tell the backend about it by replacing `traceparent` with ours.
//!
//! Owns the header format and the sampling decision; not the export of spans (an observer
//! reads [`RequestTrace`] from the request's record) nor the `tracing` log spans.

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// `00-` + 32 + `-` + 16 + `-` + 2: the length of a version 00 `traceparent`.
const TRACEPARENT_LEN: usize = 55;
/// The `sampled` bit of the trace flags (§3.2.2.5).
const FLAG_SAMPLED: u8 = 0x01;

/// A 16-byte trace id, never all zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(pub [u8; 16]);

/// An 8-byte span id, never all zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId(pub [u8; 8]);

impl std::fmt::Display for TraceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl std::fmt::Display for SpanId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// A parsed `traceparent`: the trace, the span of the caller, and whether it samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: TraceId,
    pub parent_id: SpanId,
    pub sampled: bool,
}

impl TraceParent {
    /// Parses one header value; `None` for anything the specification says to ignore
    /// (§3.2.2: wrong length or case, version `ff`, zero ids, missing dashes).
    pub fn parse(value: &[u8]) -> Option<TraceParent> {
        if value.len() < TRACEPARENT_LEN {
            return None;
        }
        let version = hex_byte(&value[0..2])?;
        // Version 00 is exactly 55 bytes; a later version may append `-` and more fields,
        // which a version 00 parser reads past (§4.3).
        let well_sized = match version {
            0xff => false,
            0x00 => value.len() == TRACEPARENT_LEN,
            _ => value.len() == TRACEPARENT_LEN || value[TRACEPARENT_LEN] == b'-',
        };
        if !well_sized || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
            return None;
        }
        let mut trace_id = [0u8; 16];
        hex_into(&value[3..35], &mut trace_id)?;
        let mut parent_id = [0u8; 8];
        hex_into(&value[36..52], &mut parent_id)?;
        let flags = hex_byte(&value[53..55])?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(TraceParent {
            trace_id: TraceId(trace_id),
            parent_id: SpanId(parent_id),
            sampled: flags & FLAG_SAMPLED != 0,
        })
    }

    /// The single valid `traceparent` of `headers`; several are as good as none, since we
    /// cannot tell which the caller meant.
    pub fn from_headers(headers: &HeaderMap) -> Option<TraceParent> {
        let mut values = headers.get_all(&TRACEPARENT).iter();
        let first = values.next()?;
        if values.next().is_some() {
            return None;
        }
        TraceParent::parse(first.as_bytes())
    }

    /// The version 00 header value.
    pub fn to_header_value(&self) -> HeaderValue {
        let flags = if self.sampled { FLAG_SAMPLED } else { 0 };
        let text = format!("00-{}-{}-{flags:02x}", self.trace_id, self.parent_id);
        // Hex digits and dashes only: always a valid header value.
        HeaderValue::from_maybe_shared(bytes::Bytes::from(text))
            .unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// Two lowercase hex digits (the specification forbids uppercase).
fn hex_byte(pair: &[u8]) -> Option<u8> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    match pair {
        [hi, lo] => Some(digit(*hi)? << 4 | digit(*lo)?),
        _ => None,
    }
}

fn hex_into(text: &[u8], out: &mut [u8]) -> Option<()> {
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        *byte = hex_byte(pair)?;
    }
    Some(())
}

/// The span a request gets at the entrypoint: what the backend is told in `traceparent`, and
/// what an exporter reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestTrace {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// The caller's span, when the request came with a valid `traceparent`.
    pub parent_id: Option<SpanId>,
    pub sampled: bool,
}

impl RequestTrace {
    /// The `traceparent` naming this span as the parent of the backend's.
    pub fn traceparent(&self) -> TraceParent {
        TraceParent {
            trace_id: self.trace_id,
            parent_id: self.span_id,
            sampled: self.sampled,
        }
    }
}

/// How an entrypoint traces: Traefik's `tracing.sampleRate`, applied to new traces only (a
/// caller's sampling decision is kept, as OpenTelemetry's parent-based sampler does).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TracePolicy {
    sample_rate: f64,
}

impl TracePolicy {
    /// `sample_rate` is clamped to `0.0..=1.0` (NaN samples nothing).
    pub fn new(sample_rate: f64) -> TracePolicy {
        let sample_rate = if sample_rate.is_nan() {
            0.0
        } else {
            sample_rate.clamp(0.0, 1.0)
        };
        TracePolicy { sample_rate }
    }

    /// The span of a request with these headers, from 24 random bytes (a new span id, and a
    /// trace id and sampling draw should the request start a trace). Pure, for tests.
    pub fn start_with(&self, headers: &HeaderMap, random: [u8; 24]) -> Option<RequestTrace> {
        let mut span_id = [0u8; 8];
        span_id.copy_from_slice(&random[..8]);
        let mut trace_id = [0u8; 16];
        trace_id.copy_from_slice(&random[8..]);
        if span_id == [0; 8] {
            return None;
        }
        Some(match TraceParent::from_headers(headers) {
            Some(parent) => RequestTrace {
                trace_id: parent.trace_id,
                span_id: SpanId(span_id),
                parent_id: Some(parent.parent_id),
                sampled: parent.sampled,
            },
            None => {
                if trace_id == [0; 16] {
                    return None;
                }
                let mut draw = [0u8; 8];
                draw.copy_from_slice(&trace_id[8..]);
                RequestTrace {
                    trace_id: TraceId(trace_id),
                    span_id: SpanId(span_id),
                    parent_id: None,
                    sampled: self.samples(u64::from_be_bytes(draw)),
                }
            }
        })
    }

    /// Whether a new trace whose draw is `draw` (uniform over `u64`) is sampled: as
    /// OpenTelemetry's ratio sampler, the lower `sample_rate` share of draws.
    fn samples(&self, draw: u64) -> bool {
        if self.sample_rate >= 1.0 {
            return true;
        }
        // Exact for every rate below 1.0: the product is below 2^64.
        let bound = (self.sample_rate * u64::MAX as f64) as u64;
        draw < bound
    }

    /// Gives the request its span and tells the backend: our `traceparent` replaces the
    /// client's, and a `tracestate` without a valid parent is dropped (§3.3.1: it cannot be
    /// trusted alone). `None` when the system has no randomness to give (the request then
    /// goes untraced, with its headers as received).
    pub fn propagate(&self, headers: &mut HeaderMap) -> Option<RequestTrace> {
        let mut random = [0u8; 24];
        getrandom::fill(&mut random).ok()?;
        let trace = self.start_with(headers, random)?;
        if trace.parent_id.is_none() {
            headers.remove(&TRACESTATE);
        }
        headers.insert(TRACEPARENT.clone(), trace.traceparent().to_header_value());
        Some(trace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn a_version_00_traceparent_parses_and_formats_back() {
        let parsed = TraceParent::parse(VALID.as_bytes()).unwrap();
        assert_eq!(
            parsed.trace_id.to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(parsed.parent_id.to_string(), "00f067aa0ba902b7");
        assert!(parsed.sampled);
        assert_eq!(parsed.to_header_value(), VALID);
        let unsampled = TraceParent::parse(VALID.replace("-01", "-00").as_bytes()).unwrap();
        assert!(!unsampled.sampled);
        assert!(
            unsampled
                .to_header_value()
                .to_str()
                .unwrap()
                .ends_with("-00")
        );
    }

    #[test]
    fn invalid_traceparents_are_ignored() {
        let invalid = [
            "",
            "00",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01é",
        ];
        for value in invalid {
            assert_eq!(TraceParent::parse(value.as_bytes()), None, "{value:?}");
        }
    }

    #[test]
    fn a_later_version_is_read_as_version_00() {
        let future = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes";
        let parsed = TraceParent::parse(future.as_bytes()).unwrap();
        assert_eq!(parsed, TraceParent::parse(VALID.as_bytes()).unwrap());
        let glued = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x";
        assert_eq!(TraceParent::parse(glued.as_bytes()), None);
    }

    #[test]
    fn repeated_traceparent_headers_count_as_none() {
        let one = headers(&[("traceparent", VALID)]);
        assert!(TraceParent::from_headers(&one).is_some());
        let two = headers(&[("traceparent", VALID), ("traceparent", VALID)]);
        assert_eq!(TraceParent::from_headers(&two), None);
    }

    fn random(span: u8, trace: u8, draw: u64) -> [u8; 24] {
        let mut bytes = [span; 24];
        bytes[8..16].fill(trace);
        bytes[16..].copy_from_slice(&draw.to_be_bytes());
        bytes
    }

    #[test]
    fn a_request_with_a_parent_joins_its_trace_and_keeps_its_decision() {
        let policy = TracePolicy::new(0.0);
        let trace = policy
            .start_with(&headers(&[("traceparent", VALID)]), random(7, 9, 0))
            .unwrap();
        let parent = TraceParent::parse(VALID.as_bytes()).unwrap();
        assert_eq!(trace.trace_id, parent.trace_id);
        assert_eq!(trace.parent_id, Some(parent.parent_id));
        assert_eq!(trace.span_id, SpanId([7; 8]));
        assert!(trace.sampled, "the caller sampled, whatever our rate");
        assert_eq!(
            trace.traceparent().to_header_value(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0707070707070707-01"
        );
    }

    #[test]
    fn a_request_without_a_parent_starts_a_trace_sampled_at_the_rate() {
        let half = TracePolicy::new(0.5);
        let low = half.start_with(&HeaderMap::new(), random(1, 2, 3)).unwrap();
        assert_eq!(low.parent_id, None);
        assert_eq!(low.span_id, SpanId([1; 8]));
        assert_eq!(&low.trace_id.0[..8], &[2; 8]);
        assert!(low.sampled);
        let high = half
            .start_with(&HeaderMap::new(), random(1, 2, u64::MAX - 3))
            .unwrap();
        assert!(!high.sampled);
        let all = TracePolicy::new(1.0);
        assert!(
            all.start_with(&HeaderMap::new(), random(1, 2, u64::MAX))
                .unwrap()
                .sampled
        );
        let none = TracePolicy::new(0.0);
        assert!(
            !none
                .start_with(&HeaderMap::new(), random(1, 2, 0))
                .unwrap()
                .sampled
        );
        assert!(!TracePolicy::new(f64::NAN).samples(0));
        assert!(TracePolicy::new(7.0).samples(u64::MAX));
    }

    #[test]
    fn zero_random_ids_are_never_used() {
        let policy = TracePolicy::new(1.0);
        assert_eq!(policy.start_with(&HeaderMap::new(), [0; 24]), None);
        assert_eq!(
            policy.start_with(&HeaderMap::new(), random(0, 1, 1)),
            None,
            "a zero span id"
        );
    }

    #[test]
    fn propagation_replaces_the_clients_traceparent_and_keeps_its_tracestate() {
        let policy = TracePolicy::new(1.0);
        let mut map = headers(&[("traceparent", VALID), ("tracestate", "vendor=x")]);
        let trace = policy.propagate(&mut map).unwrap();
        let sent = TraceParent::from_headers(&map).unwrap();
        assert_eq!(sent.trace_id, trace.trace_id);
        assert_eq!(sent.parent_id, trace.span_id);
        assert_ne!(Some(sent.parent_id), trace.parent_id);
        assert_eq!(map.get(&TRACESTATE).unwrap(), "vendor=x");

        let mut orphan = headers(&[("traceparent", "garbage"), ("tracestate", "vendor=x")]);
        let trace = policy.propagate(&mut orphan).unwrap();
        assert_eq!(trace.parent_id, None);
        assert_eq!(orphan.get_all(&TRACEPARENT).iter().count(), 1);
        assert_eq!(orphan.get(&TRACESTATE), None);
    }
}
