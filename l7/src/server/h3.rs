//! HTTP/3 on one QUIC connection: every request stream becomes an `http::Request` handed to
//! the same [`HttpEntrypoint::handle`] as HTTP/1.1 and HTTP/2, and its response is streamed
//! back (headers, data, trailers). The QUIC endpoint itself (socket, TLS, reloads) belongs to
//! the runtime; this module owns what happens once a connection is established.

mod frames;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use h3::error::Code;
use h3::server::RequestStream;
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderName, Response, Version};
use http_body::Frame;
use http_body_util::BodyExt;
use rustls_pki_types::CertificateDer;

use super::{HttpEntrypoint, TlsInfo};
use crate::error::ProxyErrorKind;
use crate::handler::{Body, BoxError, ClientInfo, error_response};
use crate::observe::TlsParams;
use frames::BoundedConnection;

/// The TLS option HTTP/3 handshakes are made with (QUIC has one server configuration).
const H3_TLS_OPTION: &str = "default";

/// Response headers that name the connection, which HTTP/3 forbids (RFC 9114 §4.2).
static CONNECTION_HEADERS: [HeaderName; 3] = [CONNECTION, TRANSFER_ENCODING, UPGRADE];

/// H3_NO_ERROR (RFC 9114 §8.1): the connection closes with nothing wrong.
const H3_NO_ERROR: quinn::VarInt = quinn::VarInt::from_u32(0x100);

/// After GOAWAY, once its last response is written, a connection is given this long for
/// the client to acknowledge the data and close it itself: closing at once would discard
/// response bytes still in flight (a QUIC close abandons unacknowledged stream data).
const CLOSE_LINGER: std::time::Duration = std::time::Duration::from_secs(1);

/// The longest frame other than DATA, as a multiple of `maxHeaderBytes`: Huffman codes are
/// at most 30 bits a byte, so a header section h3 would accept is never encoded in more than
/// 3.75 times its decoded size (whose 32 bytes a field cover the QPACK prefixes). A longer
/// frame is refused unread (see [`frames`]); a shorter one is decoded, and answered 431 if
/// it is over the limit.
const FRAME_BOUND_FACTOR: u64 = 4;

/// Room past that bound for the small frames a tiny `maxHeaderBytes` would otherwise refuse.
const FRAME_SLACK: u64 = 16 * 1024;

type Stream<S> = RequestStream<S, Bytes>;

impl HttpEntrypoint {
    /// Serves HTTP/3 on an established QUIC connection until the client closes it or the
    /// process stops (then a GOAWAY lets the requests in flight finish). `local` is the
    /// entrypoint's address. Client errors end the stream or the connection with a debug
    /// log line.
    pub async fn serve_h3(&self, connection: quinn::Connection, local: SocketAddr) {
        let config = &self.inner.config;
        let peer = connection.remote_address();
        let sni = connection
            .handshake_data()
            .and_then(|data| data.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
            .and_then(|data| data.server_name.map(Arc::from));
        let peer_certificates = connection
            .peer_identity()
            .and_then(|identity| identity.downcast::<Vec<CertificateDer<'static>>>().ok())
            .map(|chain| Arc::from(chain.into_iter().collect::<Box<[_]>>()));
        let tls = TlsInfo {
            sni,
            option: Arc::from(H3_TLS_OPTION),
            peer_certificates,
            params: Some(TlsParams::QUIC),
        };
        let client = ClientInfo {
            peer,
            local,
            tls: true,
            entrypoint: config.name.clone(),
            notes: None,
        };
        let quic = connection.clone();
        let max_header_bytes = u64::try_from(config.max_header_bytes).unwrap_or(u64::MAX);
        let bounded = BoundedConnection::new(
            h3_quinn::Connection::new(connection),
            max_header_bytes
                .saturating_mul(FRAME_BOUND_FACTOR)
                .saturating_add(FRAME_SLACK),
        );
        let built = h3::server::builder()
            .max_field_section_size(max_header_bytes)
            .build::<_, Bytes>(bounded)
            .await;
        let mut h3 = match built {
            Ok(h3) => h3,
            Err(error) => {
                tracing::debug!(entrypoint = %config.name, client = %peer, error = %error, "HTTP/3 connection setup failed");
                return;
            }
        };
        let mut requests = tokio::task::JoinSet::new();
        let mut shutdown = self.inner.shutdown.subscribe();
        let mut closing = false;
        loop {
            if !closing && *shutdown.borrow_and_update() {
                closing = true;
                // Requests already accepted run on; the client opens no new ones.
                if let Err(error) = h3.shutdown(0).await {
                    tracing::debug!(entrypoint = %config.name, client = %peer, error = %error, "HTTP/3 GOAWAY failed");
                    break;
                }
            }
            if closing && requests.is_empty() {
                // A client may keep a connection after GOAWAY; it is closed once its
                // requests are answered and the client has had time to receive them, so
                // the endpoint drains.
                let _ = tokio::time::timeout(CLOSE_LINGER, quic.closed()).await;
                quic.close(H3_NO_ERROR, b"");
                break;
            }
            let accepted = tokio::select! {
                accepted = h3.accept() => accepted,
                _ = shutdown.changed(), if !closing => continue,
                Some(_) = requests.join_next(), if !requests.is_empty() => continue,
            };
            match accepted {
                Ok(Some(resolver)) => {
                    let entrypoint = self.clone();
                    let client = client.clone();
                    let tls = tls.clone();
                    requests.spawn(async move {
                        // h3 has already answered what it refuses: 431 for a header
                        // section over `maxHeaderBytes`, a stream error for a malformed one.
                        let (request, stream) = match resolver.resolve_request().await {
                            Ok(resolved) => resolved,
                            Err(error) => {
                                tracing::debug!(entrypoint = %entrypoint.name(), client = %client.peer, error = %error, "HTTP/3 request refused");
                                return;
                            }
                        };
                        let (mut send, mut recv) = stream.split();
                        let (mut parts, ()) = request.into_parts();
                        parts.version = Version::HTTP_3;
                        let peer = client.peer;
                        let response = match declared_length(&parts.headers) {
                            Ok(declared) => {
                                let body = RequestBody::new(recv, declared);
                                let request = http::Request::from_parts(parts, body);
                                entrypoint.handle(request, client, Some(tls)).await
                            }
                            Err(error) => {
                                tracing::debug!(entrypoint = %entrypoint.name(), client = %peer, error = %error, "malformed HTTP/3 request");
                                recv.stop_sending(Code::H3_MESSAGE_ERROR);
                                error_response(ProxyErrorKind::BadRequest)
                            }
                        };
                        if let Err(error) = send_response(&mut send, response).await {
                            // Dropped as it is, the stream would be finished and a truncated
                            // body would look whole to the client: reset it instead.
                            send.stop_stream(Code::H3_INTERNAL_ERROR);
                            tracing::debug!(entrypoint = %entrypoint.name(), client = %peer, error = %error, "HTTP/3 response not delivered");
                        }
                    });
                }
                Ok(None) => break,
                Err(error) => {
                    tracing::debug!(entrypoint = %config.name, client = %peer, error = %error, "HTTP/3 connection ended with an error");
                    break;
                }
            }
        }
        // Responses still being sent finish on their own.
        requests.detach_all();
    }
}

/// Sends the head, streams the body frame by frame (so a large or endless body is never held
/// whole), then the trailers if any, and finishes the stream.
async fn send_response<S>(stream: &mut Stream<S>, response: Response<Body>) -> Result<(), BoxError>
where
    S: h3::quic::SendStream<Bytes>,
{
    let (mut parts, mut body) = response.into_parts();
    for name in &CONNECTION_HEADERS {
        parts.headers.remove(name);
    }
    parts.headers.remove("keep-alive");
    parts.headers.remove("proxy-connection");
    parts.version = Version::HTTP_3;
    stream
        .send_response(Response::from_parts(parts, ()))
        .await?;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        match frame.into_data() {
            Ok(data) => {
                if !data.is_empty() {
                    stream.send_data(data).await?;
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    stream.send_trailers(trailers).await?;
                    break;
                }
            }
        }
    }
    stream.finish().await?;
    Ok(())
}

/// A request whose body length is wrong: malformed by RFC 9114 §4.1.2 (HTTP/2 and HTTP/1.1
/// have their own framing checked by hyper; HTTP/3's DATA frames are counted here).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
enum BodyLengthError {
    #[error("invalid Content-Length")]
    Invalid,
    #[error("the body is longer than its Content-Length of {declared} bytes")]
    Over { declared: u64 },
    #[error("the body ended after {received} of its Content-Length of {declared} bytes")]
    Under { declared: u64, received: u64 },
}

/// The request's Content-Length, if it has one: every value a decimal number, all equal.
fn declared_length(headers: &http::HeaderMap) -> Result<Option<u64>, BodyLengthError> {
    let mut declared = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        let text = value.to_str().map_err(|_| BodyLengthError::Invalid)?;
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BodyLengthError::Invalid);
        }
        let length = text.parse::<u64>().map_err(|_| BodyLengthError::Invalid)?;
        if declared.is_some_and(|d| d != length) {
            return Err(BodyLengthError::Invalid);
        }
        declared = Some(length);
    }
    Ok(declared)
}

/// A request body read from an HTTP/3 stream as the handler polls it: data frames, then the
/// trailers if the client sent any. With a Content-Length, the DATA frames must add up to
/// it: otherwise the body fails (the exchange is then blamed on the client: 400), and a
/// client sending too much is told to stop.
struct RequestBody<S: h3::quic::RecvStream> {
    stream: Stream<S>,
    declared: Option<u64>,
    received: u64,
    data_done: bool,
    done: bool,
}

impl<S: h3::quic::RecvStream> RequestBody<S> {
    fn new(stream: Stream<S>, declared: Option<u64>) -> Self {
        RequestBody {
            stream,
            declared,
            received: 0,
            data_done: false,
            done: false,
        }
    }

    /// Ends the body with `error`, telling the client to stop sending.
    fn malformed(
        &mut self,
        error: BodyLengthError,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.done = true;
        self.stream.stop_sending(Code::H3_MESSAGE_ERROR);
        Poll::Ready(Some(Err(error.into())))
    }
}

impl<S> http_body::Body for RequestBody<S>
where
    S: h3::quic::RecvStream + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if !this.data_done {
            match ready!(this.stream.poll_recv_data(cx)) {
                Ok(Some(mut buf)) => {
                    let bytes = buf.copy_to_bytes(buf.remaining());
                    this.received = this.received.saturating_add(bytes.len() as u64);
                    if let Some(declared) = this.declared
                        && this.received > declared
                    {
                        return this.malformed(BodyLengthError::Over { declared });
                    }
                    return Poll::Ready(Some(Ok(Frame::data(bytes))));
                }
                Ok(None) => {
                    if let Some(declared) = this.declared
                        && this.received < declared
                    {
                        let received = this.received;
                        return this.malformed(BodyLengthError::Under { declared, received });
                    }
                    this.data_done = true;
                }
                Err(error) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(error.into())));
                }
            }
        }
        let trailers = ready!(this.stream.poll_recv_trailers(cx));
        this.done = true;
        match trailers {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(error) => Poll::Ready(Some(Err(error.into()))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

impl<S: h3::quic::RecvStream> Drop for RequestBody<S> {
    /// A body left unread (the response did not need it) is refused with H3_NO_ERROR, the
    /// code RFC 9114 §4.1.1 asks for; quinn's own default would be the undefined code 0.
    fn drop(&mut self) {
        if !self.done {
            self.stream.stop_sending(Code::H3_NO_ERROR);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        for value in values {
            headers.append(
                CONTENT_LENGTH,
                http::HeaderValue::from_str(value).expect("header value"),
            );
        }
        headers
    }

    #[test]
    fn a_content_length_is_one_decimal_number_repeated_at_most_identically() {
        assert_eq!(declared_length(&headers(&[])), Ok(None));
        assert_eq!(declared_length(&headers(&["42"])), Ok(Some(42)));
        assert_eq!(declared_length(&headers(&["7", "7"])), Ok(Some(7)));
        for invalid in [&["7", "8"][..], &["+7"], &["-1"], &[" 7"], &["0x10"], &[""]] {
            assert_eq!(
                declared_length(&headers(invalid)),
                Err(BodyLengthError::Invalid),
                "{invalid:?}"
            );
        }
        assert_eq!(
            declared_length(&headers(&["99999999999999999999999"])),
            Err(BodyLengthError::Invalid)
        );
    }
}
