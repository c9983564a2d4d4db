//! `compress{encodings, defaultEncoding, minResponseBodyBytes, includedContentTypes,
//! excludedContentTypes}`: compresses response bodies with gzip, brotli or zstd, as the client's
//! `Accept-Encoding` allows.
//!
//! The coding is the client's highest `q` among the configured `encodings` (ties go to the
//! order of `encodings`; `q=0` refuses a coding; `*` stands for the default one, `identity`
//! for none). A request without `Accept-Encoding` gets `defaultEncoding`, if set. As
//! Traefik's, a response going through a chosen coding gets `Vary: Accept-Encoding`, and is
//! sent as is when it is small (`minResponseBodyBytes`, by `Content-Length` or, when unknown,
//! by reading up to that many bytes), already encoded, of an excluded (or not included)
//! content type, or without a body. HEAD requests and gRPC (request or response of type
//! `application/grpc…`, which compresses its own messages and needs its trailers untouched)
//! pass through. A `206` (or any `Content-Range`) is never compressed, since the range
//! counts bytes of the uncompressed representation.
//!
//! Compression streams: the output is sent whenever 16 KiB are ready or the server pauses,
//! so event streams arrive as they are written. When the length is unknown, a server that
//! pauses for [`FLUSH_PAUSE`] before `minResponseBodyBytes` have come starts the compression
//! early, as Traefik's flush does.

use std::io::{self, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{
    ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, HeaderMap,
    HeaderValue, VARY,
};
use http::{Method, Request, Response, StatusCode};
use http_body::{Body as _, Frame};
use http_body_util::BodyExt;

use super::Middleware;
use crate::handler::{Body, BoxError, BoxFuture, Handler, SharedHandler, full_body, prefixed_body};

/// Traefik's `minResponseBodyBytes` default.
pub const DEFAULT_MIN_RESPONSE_BODY_BYTES: usize = 1024;

/// How long a body of unknown length may pause before the bytes held so far are compressed
/// and sent: Traefik's default flush interval.
pub const FLUSH_PAUSE: Duration = Duration::from_millis(100);

/// Compressed output sent as one frame once this much is ready.
const OUTPUT_CHUNK: usize = 16 * 1024;

/// Input read in one go before the body yields to other tasks, however little it produced.
const INPUT_PER_POLL: usize = 64 * 1024;

/// Brotli quality and window: a level for dynamic content, and a 1 MiB window to bound the
/// memory of each compressed response.
const BROTLI_QUALITY: u32 = 5;
const BROTLI_WINDOW_BITS: u32 = 20;

/// zstd's own default level.
const ZSTD_LEVEL: i32 = 3;

/// A content coding the middleware produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Gzip,
    Brotli,
    Zstd,
}

impl Encoding {
    /// The coding of an `encodings` entry or an `Accept-Encoding` token (`gzip`, `br`, `zstd`).
    pub fn from_name(name: &str) -> Option<Encoding> {
        match name.to_ascii_lowercase().as_str() {
            "gzip" => Some(Encoding::Gzip),
            "br" => Some(Encoding::Brotli),
            "zstd" => Some(Encoding::Zstd),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Encoding::Gzip => "gzip",
            Encoding::Brotli => "br",
            Encoding::Zstd => "zstd",
        }
    }
}

/// A media type from the configuration or a `Content-Type`: `type/subtype` and parameters,
/// names lowercased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaType {
    essence: String,
    params: Vec<(String, String)>,
}

impl MediaType {
    /// `text/html; charset=utf-8` → its parts; `None` when there is no `type/subtype`.
    pub fn parse(text: &str) -> Option<MediaType> {
        let mut parts = text.split(';');
        let essence = parts.next()?.trim().to_ascii_lowercase();
        let (kind, sub) = essence.split_once('/')?;
        if kind.is_empty() || sub.is_empty() || essence.contains(char::is_whitespace) {
            return None;
        }
        let params = parts
            .filter_map(|p| {
                let (name, value) = p.split_once('=')?;
                let value = value.trim().trim_matches('"');
                Some((name.trim().to_ascii_lowercase(), value.to_owned()))
            })
            .collect();
        Some(MediaType { essence, params })
    }

    /// `self` (configured) covers `actual`: same type, and each configured parameter present
    /// with the same value (a type without parameters covers all of them).
    fn covers(&self, actual: &MediaType) -> bool {
        self.essence == actual.essence
            && self.params.iter().all(|(name, value)| {
                actual
                    .params
                    .iter()
                    .any(|(n, v)| n == name && v.eq_ignore_ascii_case(value))
            })
    }

    fn is_grpc(&self) -> bool {
        self.essence.starts_with("application/grpc")
    }
}

/// Which response content types are compressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentTypes {
    /// All but these (`excludedContentTypes`).
    Excluded(Vec<MediaType>),
    /// Only these (`includedContentTypes`).
    Included(Vec<MediaType>),
}

impl ContentTypes {
    fn allows(&self, actual: &MediaType) -> bool {
        match self {
            ContentTypes::Excluded(list) => !list.iter().any(|m| m.covers(actual)),
            ContentTypes::Included(list) => list.iter().any(|m| m.covers(actual)),
        }
    }
}

/// A configured `compress`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compress {
    /// The codings offered, preferred first; never empty.
    pub encodings: Vec<Encoding>,
    /// The coding for requests without `Accept-Encoding`, and for `*`.
    pub default_encoding: Option<Encoding>,
    /// Bodies shorter than this are sent as they are.
    pub min_response_body_bytes: usize,
    pub content_types: ContentTypes,
}

impl Default for Compress {
    fn default() -> Self {
        Compress {
            encodings: vec![Encoding::Gzip, Encoding::Brotli, Encoding::Zstd],
            default_encoding: None,
            min_response_body_bytes: DEFAULT_MIN_RESPONSE_BODY_BYTES,
            content_types: ContentTypes::Excluded(Vec::new()),
        }
    }
}

impl Compress {
    /// The coding for a request with these `Accept-Encoding` fields, `None` for no compression.
    pub fn negotiate<'a>(
        &self,
        accept_encoding: impl IntoIterator<Item = &'a HeaderValue>,
    ) -> Option<Encoding> {
        let fields: Vec<&str> = accept_encoding
            .into_iter()
            .map(|v| v.to_str().unwrap_or(""))
            .collect();
        if fields.is_empty() {
            return self.default_encoding;
        }
        // (weight, rank: lower is preferred at equal weight, token)
        let mut acceptable: Vec<(f32, usize, Option<Encoding>)> = Vec::new();
        let mut refused: Vec<Encoding> = Vec::new();
        let mut wildcard: Option<f32> = None;
        for item in fields.iter().flat_map(|f| f.split(',')) {
            let mut parts = item.split(';');
            let token = parts.next().unwrap_or("").trim();
            if token.is_empty() {
                continue;
            }
            let weight = match parts.find_map(|p| p.trim().strip_prefix("q=")) {
                Some(q) => q
                    .trim()
                    .parse::<f32>()
                    .ok()
                    .filter(|q| q.is_finite() && *q > 0.0),
                None => Some(1.0),
            };
            if token == "*" {
                wildcard = weight;
                continue;
            }
            let coding = Encoding::from_name(token);
            let Some(weight) = weight else {
                refused.extend(coding);
                continue;
            };
            match coding {
                Some(c) => {
                    if let Some(rank) = self.encodings.iter().position(|&e| e == c) {
                        acceptable.push((weight, rank, Some(c)));
                    }
                }
                None if token.eq_ignore_ascii_case("identity") => {
                    acceptable.push((weight, self.encodings.len(), None));
                }
                None => {}
            }
        }
        if let Some(weight) = wildcard {
            // `*`: any coding the client did not name, the default one first.
            let named =
                |c: Encoding| acceptable.iter().any(|a| a.2 == Some(c)) || refused.contains(&c);
            let pick = self
                .default_encoding
                .into_iter()
                .chain(self.encodings.iter().copied())
                .find(|&c| !named(c));
            if let Some(c) = pick {
                acceptable.push((weight, self.encodings.len(), Some(c)));
            }
        }
        acceptable
            .into_iter()
            .min_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)))
            .and_then(|(_, _, coding)| coding)
    }

    /// Whether `response` may be compressed at all (its size aside).
    fn compressible(&self, response: &Response<Body>) -> bool {
        let status = response.status();
        if status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
            || status == StatusCode::PARTIAL_CONTENT
        {
            return false;
        }
        let headers = response.headers();
        if headers.contains_key(CONTENT_ENCODING) || headers.contains_key(CONTENT_RANGE) {
            return false;
        }
        if response.body().is_end_stream() {
            return false;
        }
        match media_type(headers) {
            Some(m) => !m.is_grpc() && self.content_types.allows(&m),
            None => true,
        }
    }
}

fn media_type(headers: &HeaderMap) -> Option<MediaType> {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(MediaType::parse)
}

impl Middleware for Compress {
    fn wrap(&self, next: SharedHandler) -> SharedHandler {
        Arc::new(Compressing {
            spec: self.clone(),
            next,
        })
    }
}

struct Compressing {
    spec: Compress,
    next: SharedHandler,
}

impl Handler for Compressing {
    fn call(&self, request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
        if request.method() == Method::HEAD {
            return self.next.call(request);
        }
        // Traefik looks at the request type too: a gRPC (or excluded) request means a client
        // that does not expect its answer re-encoded.
        if let Some(m) = media_type(request.headers())
            && (m.is_grpc()
                || matches!(&self.spec.content_types, ContentTypes::Excluded(list)
                    if list.iter().any(|e| e.essence == m.essence)))
        {
            return self.next.call(request);
        }
        let Some(encoding) = self
            .spec
            .negotiate(request.headers().get_all(ACCEPT_ENCODING))
        else {
            return self.next.call(request);
        };
        Box::pin(async move {
            let mut response = self.next.call(request).await;
            add_vary(response.headers_mut());
            if !self.spec.compressible(&response) {
                return response;
            }
            let min = self.spec.min_response_body_bytes;
            let known_length = response
                .headers()
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let (mut parts, body) = response.into_parts();
            let body = match known_length {
                Some(length) if length < min as u64 => return Response::from_parts(parts, body),
                Some(_) => body,
                None => match read_start(body, min).await {
                    Start::Compress(held, rest) if held.is_empty() => rest,
                    Start::Compress(held, rest) => prefixed_body(Ok(Frame::data(held)), rest),
                    Start::AsIs(body) => return Response::from_parts(parts, body),
                },
            };
            let encoder = match Encoder::new(encoding) {
                Ok(encoder) => encoder,
                Err(e) => {
                    tracing::warn!(error = %e, "compress: cannot start the encoder, sending as is");
                    return Response::from_parts(parts, body);
                }
            };
            parts.headers.remove(CONTENT_LENGTH);
            parts
                .headers
                .insert(CONTENT_ENCODING, HeaderValue::from_static(encoding.name()));
            let compressed = CompressedBody {
                inner: body,
                encoder: Some(encoder),
                trailers: None,
                unflushed: false,
            };
            Response::from_parts(parts, compressed.boxed_unsync())
        })
    }
}

/// Adds `Accept-Encoding` to `Vary` unless it is listed already.
fn add_vary(headers: &mut HeaderMap) {
    let listed = headers.get_all(VARY).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim() == "*" || t.trim().eq_ignore_ascii_case("accept-encoding"))
        })
    });
    if !listed {
        headers.append(VARY, HeaderValue::from_static("Accept-Encoding"));
    }
}

/// What the first bytes of a body of unknown length decided.
enum Start {
    /// Compress: the bytes read so far, then the rest.
    Compress(Bytes, Body),
    /// Send as is (ended short, has trailers, or failed): the whole body again.
    AsIs(Body),
}

/// Reads up to `min` bytes of `body`, waiting at most [`FLUSH_PAUSE`] for each frame.
async fn read_start(mut body: Body, min: usize) -> Start {
    let mut held = BytesMut::new();
    loop {
        if held.len() >= min {
            return Start::Compress(held.freeze(), body);
        }
        let frame = match tokio::time::timeout(FLUSH_PAUSE, body.frame()).await {
            // A pause: what came so far is sent compressed now, not held.
            Err(_) => return Start::Compress(held.freeze(), body),
            Ok(None) => return Start::AsIs(full_body(held.freeze())),
            Ok(Some(Err(e))) => return Start::AsIs(replay(held.freeze(), Err(e), body)),
            Ok(Some(Ok(frame))) => frame,
        };
        match frame.into_data() {
            Ok(data) => held.extend_from_slice(&data),
            Err(other) => return Start::AsIs(replay(held.freeze(), Ok(other), body)),
        }
    }
}

/// `held`, then `next` (a frame or error already read from `rest`), then `rest`.
fn replay(held: Bytes, next: Result<Frame<Bytes>, BoxError>, rest: Body) -> Body {
    prefixed_body(Ok(Frame::data(held)), prefixed_body(next, rest))
}

/// A streaming encoder writing into a buffer the body drains.
enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Encoder {
    fn new(encoding: Encoding) -> io::Result<Encoder> {
        Ok(match encoding {
            Encoding::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::default(),
            )),
            Encoding::Brotli => Encoder::Brotli(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                4096,
                BROTLI_QUALITY,
                BROTLI_WINDOW_BITS,
            ))),
            Encoding::Zstd => {
                Encoder::Zstd(zstd::stream::write::Encoder::new(Vec::new(), ZSTD_LEVEL)?)
            }
        })
    }

    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.write_all(data),
            Encoder::Brotli(e) => e.write_all(data),
            Encoder::Zstd(e) => e.write_all(data),
        }
    }

    /// Pushes everything written so far to the output, decodable by the client now.
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.flush(),
            Encoder::Brotli(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }

    fn output(&mut self) -> &mut Vec<u8> {
        match self {
            Encoder::Gzip(e) => e.get_mut(),
            Encoder::Brotli(e) => e.get_mut(),
            Encoder::Zstd(e) => e.get_mut(),
        }
    }

    fn take_output(&mut self) -> Bytes {
        Bytes::from(std::mem::take(self.output()))
    }

    /// Ends the stream and returns the last output.
    fn finish(self) -> io::Result<Bytes> {
        let out = match self {
            Encoder::Gzip(e) => e.finish()?,
            Encoder::Brotli(e) => e.into_inner(),
            Encoder::Zstd(e) => e.finish()?,
        };
        Ok(Bytes::from(out))
    }
}

/// The compressed form of a body, produced as the body is read.
struct CompressedBody {
    inner: Body,
    /// `None` once the stream is finished.
    encoder: Option<Encoder>,
    /// Trailers read from `inner`, sent after the last compressed bytes.
    trailers: Option<HeaderMap>,
    /// Input written since the last flush.
    unflushed: bool,
}

impl CompressedBody {
    fn finish(&mut self) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.encoder.take().map(Encoder::finish) {
            Some(Ok(last)) => Poll::Ready(Some(Ok(Frame::data(last)))),
            Some(Err(e)) => Poll::Ready(Some(Err(e.into()))),
            None => Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t)))),
        }
    }
}

impl http_body::Body for CompressedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let mut read = 0;
        loop {
            let Some(encoder) = this.encoder.as_mut() else {
                return this.finish();
            };
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        encoder.write(&data)?;
                        this.unflushed |= !data.is_empty();
                        read += data.len();
                        if encoder.output().len() >= OUTPUT_CHUNK {
                            return Poll::Ready(Some(Ok(Frame::data(encoder.take_output()))));
                        }
                        if read >= INPUT_PER_POLL {
                            cx.waker().wake_by_ref();
                            return Poll::Pending;
                        }
                    }
                    Err(frame) => {
                        this.trailers = frame.into_trailers().ok();
                        return this.finish();
                    }
                },
                Poll::Ready(Some(Err(e))) => {
                    this.encoder = None;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => return this.finish(),
                Poll::Pending => {
                    // The server paused: send what it wrote so far, decodable as is.
                    if this.unflushed {
                        encoder.flush()?;
                        this.unflushed = false;
                    }
                    if !encoder.output().is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(encoder.take_output()))));
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.encoder.is_none() && self.trailers.is_none()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use http_body_util::channel::Channel;

    use super::*;
    use crate::handler::empty_body;

    fn negotiate(spec: &Compress, accept: &[&str]) -> Option<Encoding> {
        let values: Vec<HeaderValue> = accept
            .iter()
            .map(|a| HeaderValue::from_str(a).unwrap())
            .collect();
        spec.negotiate(&values)
    }

    #[test]
    fn negotiation_follows_q_values_then_the_configured_order() {
        let spec = Compress::default();
        assert_eq!(negotiate(&spec, &["gzip, br, zstd"]), Some(Encoding::Gzip));
        assert_eq!(negotiate(&spec, &["zstd, br"]), Some(Encoding::Brotli));
        assert_eq!(
            negotiate(&spec, &["gzip;q=0.5, zstd;q=0.8"]),
            Some(Encoding::Zstd)
        );
        assert_eq!(
            negotiate(&spec, &["gzip;q=0", "br"]),
            Some(Encoding::Brotli)
        );
        assert_eq!(negotiate(&spec, &["gzip;q=0"]), None);
        assert_eq!(negotiate(&spec, &["deflate, compress"]), None);
        assert_eq!(negotiate(&spec, &[""]), None);
        assert_eq!(negotiate(&spec, &["identity, gzip;q=0.5"]), None);
        assert_eq!(negotiate(&spec, &["gzip, identity"]), Some(Encoding::Gzip));
        assert_eq!(negotiate(&spec, &["GZIP"]), Some(Encoding::Gzip));
    }

    #[test]
    fn wildcard_picks_the_default_then_an_unrefused_coding() {
        let mut spec = Compress::default();
        assert_eq!(negotiate(&spec, &["*"]), Some(Encoding::Gzip));
        assert_eq!(negotiate(&spec, &["gzip;q=0, *"]), Some(Encoding::Brotli));
        spec.default_encoding = Some(Encoding::Zstd);
        assert_eq!(negotiate(&spec, &["*"]), Some(Encoding::Zstd));
        assert_eq!(
            negotiate(&spec, &["br;q=0.9, *;q=0.1"]),
            Some(Encoding::Brotli)
        );
    }

    #[test]
    fn no_accept_encoding_means_the_default_encoding() {
        let mut spec = Compress::default();
        assert_eq!(negotiate(&spec, &[]), None);
        spec.default_encoding = Some(Encoding::Brotli);
        assert_eq!(negotiate(&spec, &[]), Some(Encoding::Brotli));
    }

    #[test]
    fn only_configured_encodings_are_chosen() {
        let spec = Compress {
            encodings: vec![Encoding::Zstd],
            ..Compress::default()
        };
        assert_eq!(negotiate(&spec, &["gzip, br"]), None);
        assert_eq!(
            negotiate(&spec, &["gzip, zstd;q=0.1"]),
            Some(Encoding::Zstd)
        );
    }

    #[test]
    fn media_types_match_with_optional_parameters() {
        let html = MediaType::parse("text/html").unwrap();
        let utf8 = MediaType::parse("text/html; charset=utf-8").unwrap();
        let actual = MediaType::parse("Text/HTML; Charset=\"UTF-8\"").unwrap();
        assert!(html.covers(&actual));
        assert!(utf8.covers(&actual));
        assert!(!utf8.covers(&html));
        assert!(MediaType::parse("html").is_none());
        assert!(MediaType::parse("/x").is_none());
    }

    fn decode(encoding: Encoding, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match encoding {
            Encoding::Gzip => {
                flate2::read::GzDecoder::new(bytes)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Encoding::Brotli => {
                brotli::Decompressor::new(bytes, 4096)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Encoding::Zstd => out = zstd::decode_all(bytes).unwrap(),
        }
        out
    }

    struct Fixed(fn() -> Response<Body>);

    impl Handler for Fixed {
        fn call(&self, _request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
            let response = (self.0)();
            Box::pin(async move { response })
        }
    }

    fn page() -> Response<Body> {
        let mut response = Response::new(full_body("hello compress ".repeat(200)));
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        response
    }

    fn request(accept: &str) -> Request<Body> {
        Request::builder()
            .header(ACCEPT_ENCODING, accept)
            .body(empty_body())
            .unwrap()
    }

    #[tokio::test]
    async fn each_encoding_round_trips() {
        let handler = Compress::default().wrap(Arc::new(Fixed(page)));
        for encoding in [Encoding::Gzip, Encoding::Brotli, Encoding::Zstd] {
            let response = handler.call(request(encoding.name())).await;
            assert_eq!(response.headers()[CONTENT_ENCODING], encoding.name());
            assert_eq!(response.headers()[VARY], "Accept-Encoding");
            assert!(!response.headers().contains_key(CONTENT_LENGTH));
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert!(body.len() < 3000);
            assert_eq!(
                decode(encoding, &body),
                "hello compress ".repeat(200).as_bytes()
            );
        }
    }

    #[tokio::test]
    async fn small_and_encoded_bodies_pass_as_they_are() {
        let small = Compress::default().wrap(Arc::new(Fixed(|| Response::new(full_body("tiny")))));
        let response = small.call(request("gzip")).await;
        assert!(!response.headers().contains_key(CONTENT_ENCODING));
        assert_eq!(response.headers()[VARY], "Accept-Encoding");
        assert_eq!(
            response.into_body().collect().await.unwrap().to_bytes(),
            "tiny"
        );

        let encoded = Compress::default().wrap(Arc::new(Fixed(|| {
            let mut response = page();
            response
                .headers_mut()
                .insert(CONTENT_ENCODING, HeaderValue::from_static("br"));
            response
        })));
        let response = encoded.call(request("gzip")).await;
        assert_eq!(response.headers()[CONTENT_ENCODING], "br");
    }

    #[tokio::test]
    async fn excluded_and_not_included_types_pass_as_they_are() {
        let excluded = Compress {
            content_types: ContentTypes::Excluded(vec![MediaType::parse("text/plain").unwrap()]),
            ..Compress::default()
        };
        let response = excluded
            .wrap(Arc::new(Fixed(page)))
            .call(request("gzip"))
            .await;
        assert!(!response.headers().contains_key(CONTENT_ENCODING));
        let included = Compress {
            content_types: ContentTypes::Included(vec![MediaType::parse("text/html").unwrap()]),
            ..Compress::default()
        };
        let response = included
            .wrap(Arc::new(Fixed(page)))
            .call(request("gzip"))
            .await;
        assert!(!response.headers().contains_key(CONTENT_ENCODING));
    }

    #[tokio::test]
    async fn a_paused_stream_is_flushed_before_it_ends() {
        let (mut sender, body) = Channel::<Bytes, BoxError>::new(4);
        let slot = std::sync::Mutex::new(Some(body.boxed_unsync()));
        struct Streaming(std::sync::Mutex<Option<Body>>);
        impl Handler for Streaming {
            fn call(&self, _request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
                let body = self.0.lock().unwrap().take().unwrap();
                Box::pin(async move { Response::new(body) })
            }
        }
        let handler = Compress::default().wrap(Arc::new(Streaming(slot)));
        sender
            .send_data(Bytes::from("data: one\n\n"))
            .await
            .unwrap();
        let response = handler.call(request("gzip")).await;
        assert_eq!(response.headers()[CONTENT_ENCODING], "gzip");
        let mut body = response.into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        let mut partial = Vec::new();
        let mut decoder = flate2::write::GzDecoder::new(&mut partial);
        decoder.write_all(&first).unwrap();
        decoder.flush().unwrap();
        drop(decoder);
        assert_eq!(
            partial, b"data: one\n\n",
            "the first event is decodable at once"
        );
        sender
            .send_data(Bytes::from("data: two\n\n"))
            .await
            .unwrap();
        drop(sender);
        let rest = body.collect().await.unwrap().to_bytes();
        let whole = [first.as_ref(), rest.as_ref()].concat();
        assert_eq!(
            decode(Encoding::Gzip, &whole),
            b"data: one\n\ndata: two\n\n"
        );
    }
}
