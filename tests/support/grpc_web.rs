//! A gRPC-Web client as a browser library speaks it: calls of the test service
//! (`support::grpc`) over one HTTP/1.1 connection, in binary or text (base64) mode, and the
//! decoding of what comes back into messages and the trailer frame.
#![allow(dead_code)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use prost::Message as _;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::WAIT;
use super::grpc::Greeting;

pub const SAY: &str = "/test.Greeter/Say";
pub const COUNT: &str = "/test.Greeter/Count";
pub const CHAT: &str = "/test.Greeter/Chat";

type ClientBody = UnsyncBoxBody<Bytes, std::convert::Infallible>;

/// How the call's bodies are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `application/grpc-web+proto`.
    Binary,
    /// `application/grpc-web-text`: base64.
    Text,
}

/// A gRPC-Web answer, its body decoded.
#[derive(Debug)]
pub struct WebAnswer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The body as received (base64 in text mode).
    pub raw: Bytes,
    /// The messages, in order.
    pub messages: Vec<Greeting>,
    /// The `name: value` lines of the trailer frame, which must come last.
    pub trailers: Vec<(String, String)>,
}

impl WebAnswer {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
    }

    pub fn trailer(&self, name: &str) -> Option<&str> {
        self.trailers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 connection to the router.
pub struct GrpcWebClient(http1::SendRequest<ClientBody>);

impl GrpcWebClient {
    pub async fn connect(port: u16) -> GrpcWebClient {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.expect("h1");
        tokio::spawn(conn);
        GrpcWebClient(sender)
    }

    /// Calls `method` (e.g. [`SAY`]) on `host` with `greeting`, as from `origin`.
    pub async fn call(
        &mut self,
        host: &str,
        method: &str,
        mode: Mode,
        origin: &str,
        greeting: Greeting,
    ) -> WebAnswer {
        let frame = message_frame(&greeting.encode_to_vec());
        let (content_type, body) = match mode {
            Mode::Binary => ("application/grpc-web+proto", Bytes::from(frame)),
            Mode::Text => (
                "application/grpc-web-text",
                Bytes::from(STANDARD.encode(&frame)),
            ),
        };
        let request = Request::post(method)
            .header("host", host)
            .header("origin", origin)
            .header("content-type", content_type)
            .header("x-grpc-web", "1")
            .header("x-user-agent", "grpc-web-javascript/0.1")
            .body(Full::new(body))
            .expect("request");
        let (status, headers, raw) = self.send(request).await;
        let bytes = match mode {
            Mode::Binary => raw.to_vec(),
            Mode::Text => decode_padded_chunks(&raw),
        };
        let (messages, trailers) = if status == StatusCode::OK {
            decode_frames(&bytes)
        } else {
            (Vec::new(), Vec::new())
        };
        WebAnswer {
            status,
            headers,
            raw,
            messages,
            trailers,
        }
    }

    /// A preflight for a gRPC-Web call from `origin`.
    pub async fn preflight(&mut self, host: &str, origin: &str) -> (StatusCode, HeaderMap) {
        let request = Request::builder()
            .method(Method::OPTIONS)
            .uri(SAY)
            .header("host", host)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type,x-grpc-web,x-user-agent,grpc-timeout",
            )
            .body(Full::new(Bytes::new()))
            .expect("request");
        let (status, headers, _) = self.send(request).await;
        (status, headers)
    }

    /// Sends `request` and reads the whole answer.
    pub async fn send(&mut self, request: Request<Full<Bytes>>) -> (StatusCode, HeaderMap, Bytes) {
        let exchange = async {
            self.0.ready().await.expect("connection ready");
            let request = request.map(|body| body.boxed_unsync());
            let response = self.0.send_request(request).await.expect("response");
            let (parts, body) = response.into_parts();
            let body = body.collect().await.expect("body").to_bytes();
            (parts.status, parts.headers, body)
        };
        tokio::time::timeout(WAIT, exchange)
            .await
            .expect("answer in time")
    }
}

impl GrpcWebClient {
    /// Calls `Chat` on `host` with one greeting per text, in a request body streamed over
    /// HTTP/1.1, each sent only once the reply to the one before has come back: a proxy
    /// holding either body back stalls the call. Returns the replies and the trailer lines.
    pub async fn chat(
        &mut self,
        host: &str,
        mode: Mode,
        texts: &[&str],
    ) -> (Vec<String>, Vec<(String, String)>) {
        let exchange = async {
            let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::convert::Infallible>>(1);
            let content_type = match mode {
                Mode::Binary => "application/grpc-web",
                Mode::Text => "application/grpc-web-text",
            };
            let request = Request::post(CHAT)
                .header("host", host)
                .header("content-type", content_type)
                .header("x-grpc-web", "1")
                .body(StreamBody::new(ReceiverStream::new(rx)).boxed_unsync())
                .expect("request");
            let send = |text: &str| {
                let frame = message_frame(&greeting_of(text).encode_to_vec());
                let chunk = match mode {
                    Mode::Binary => Bytes::from(frame),
                    // Each message its own padded chunk, as some clients write them.
                    Mode::Text => Bytes::from(STANDARD.encode(&frame)),
                };
                tx.try_send(Ok(Frame::data(chunk)))
                    .expect("body channel open");
            };
            let mut texts = texts.iter();
            if let Some(first) = texts.next() {
                send(first);
            }
            self.0.ready().await.expect("connection ready");
            let response = self.0.send_request(request).await.expect("response");
            assert_eq!(response.status(), StatusCode::OK);
            let mut body = response.into_body();
            let mut reader = FrameReader::new(mode);
            let mut replies = Vec::new();
            for text in texts {
                replies.push(reader.next_message(&mut body).await.expect("a reply").text);
                send(text);
            }
            drop(tx);
            while let Some(reply) = reader.next_message(&mut body).await {
                replies.push(reply.text);
            }
            (replies, reader.trailers)
        };
        tokio::time::timeout(WAIT, exchange)
            .await
            .expect("chat in time")
    }
}

fn greeting_of(text: &str) -> Greeting {
    Greeting {
        text: text.to_owned(),
        count: 0,
    }
}

/// Reads gRPC-Web frames off a response body as they arrive.
struct FrameReader {
    mode: Mode,
    /// Base64 text not yet decoded (less than a quantum).
    text: Vec<u8>,
    /// Decoded bytes not yet made into frames.
    bytes: Vec<u8>,
    trailers: Vec<(String, String)>,
}

impl FrameReader {
    fn new(mode: Mode) -> Self {
        Self {
            mode,
            text: Vec::new(),
            bytes: Vec::new(),
            trailers: Vec::new(),
        }
    }

    /// The next message; `None` once the trailer frame (kept in `trailers`) has come.
    async fn next_message(&mut self, body: &mut hyper::body::Incoming) -> Option<Greeting> {
        loop {
            if self.bytes.len() >= 5 {
                let len = u32::from_be_bytes(self.bytes[1..5].try_into().expect("4")) as usize;
                if self.bytes.len() >= 5 + len {
                    let frame: Vec<u8> = self.bytes.drain(..5 + len).collect();
                    if frame[0] == 0x80 {
                        let (_, trailers) = decode_frames(&frame);
                        self.trailers = trailers;
                        return None;
                    }
                    return Some(Greeting::decode(&frame[5..]).expect("a Greeting"));
                }
            }
            let frame = body.frame().await?.expect("body frame");
            let Ok(data) = frame.into_data() else {
                continue;
            };
            match self.mode {
                Mode::Binary => self.bytes.extend_from_slice(&data),
                Mode::Text => {
                    self.text.extend_from_slice(&data);
                    let whole = self.text.len() - self.text.len() % 4;
                    let quanta: Vec<u8> = self.text.drain(..whole).collect();
                    self.bytes.extend(decode_padded_chunks(&quanta));
                }
            }
        }
    }
}

/// A gRPC message frame: flag 0, 4-byte big-endian length, the message.
pub fn message_frame(message: &[u8]) -> Vec<u8> {
    let mut frame = vec![0];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(message);
    frame
}

/// Base64 text that may be several padded chunks one after the other.
fn decode_padded_chunks(text: &[u8]) -> Vec<u8> {
    assert_eq!(text.len() % 4, 0, "base64 text in whole quanta");
    let mut out = Vec::new();
    let mut chunk_start = 0;
    for (i, quantum) in text.chunks(4).enumerate() {
        if quantum.contains(&b'=') || (i + 1) * 4 == text.len() {
            let chunk = &text[chunk_start..(i + 1) * 4];
            out.extend(STANDARD.decode(chunk).expect("valid base64 chunk"));
            chunk_start = (i + 1) * 4;
        }
    }
    out
}

/// The messages then the trailer lines of a gRPC-Web body; panics unless the trailer frame
/// comes once, last.
fn decode_frames(mut bytes: &[u8]) -> (Vec<Greeting>, Vec<(String, String)>) {
    let mut messages = Vec::new();
    loop {
        assert!(bytes.len() >= 5, "a frame header, then the trailer frame");
        let flag = bytes[0];
        let len = u32::from_be_bytes(bytes[1..5].try_into().expect("4 bytes")) as usize;
        let payload = &bytes[5..5 + len];
        bytes = &bytes[5 + len..];
        if flag == 0x80 {
            assert!(bytes.is_empty(), "nothing after the trailer frame");
            let text = std::str::from_utf8(payload).expect("trailers are text");
            let trailers = text
                .split_terminator("\r\n")
                .map(|line| {
                    let (name, value) = line.split_once(": ").expect("name: value");
                    (name.to_owned(), value.to_owned())
                })
                .collect();
            return (messages, trailers);
        }
        assert_eq!(flag, 0, "an uncompressed message");
        messages.push(Greeting::decode(payload).expect("a Greeting"));
    }
}
