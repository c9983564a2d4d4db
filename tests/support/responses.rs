//! Parts for the response-middleware tests (`compress`, `errors`): a backend whose answers
//! are shaped by the query (size, type, encoding, streaming), a client that keeps the raw
//! body bytes, and the decoders of the three content codings.
#![allow(dead_code)]

use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};

use super::WAIT;

/// A backend answering `/page?n=<bytes>&type=<content type>&encoding=<coding>&chunked=1`
/// with `n` bytes of text (with `Content-Length` unless chunked), and
/// `/stream?events=<k>&pause=<ms>` with k server-sent events, pausing between them.
pub struct ShapedBackend {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ShapedBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ShapedBackend {
    pub async fn start() -> ShapedBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let service = service_fn(|req| async move { Ok::<_, Infallible>(shaped(req)) });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        ShapedBackend { addr, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// `n` bytes of compressible text.
pub fn text(n: usize) -> Vec<u8> {
    b"sallyport compresses text. "
        .iter()
        .copied()
        .cycle()
        .take(n)
        .collect()
}

type ShapedBody = BoxBody<Bytes, Infallible>;

fn shaped(req: Request<Incoming>) -> Response<ShapedBody> {
    let query = req.uri().query().unwrap_or("").to_owned();
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.replace("%2F", "/").replace("%2B", "+"))
    };
    let number = |name: &str| param(name).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let mut response = Response::builder();
    if req.uri().path() == "/stream" {
        let events = number("events");
        let pause = Duration::from_millis(number("pause"));
        let frames = stream::unfold(0, move |i| async move {
            if i == events {
                return None;
            }
            if i > 0 {
                tokio::time::sleep(pause).await;
            }
            let event = Bytes::from(format!("data: event {i}\n\n"));
            Some((Ok::<_, Infallible>(Frame::data(event)), i + 1))
        });
        return response
            .header("content-type", "text/event-stream")
            .body(StreamBody::new(frames).boxed())
            .expect("response");
    }
    if let Some(t) = param("type") {
        response = response.header("content-type", t);
    }
    if let Some(e) = param("encoding") {
        response = response.header("content-encoding", e);
    }
    let body = text(number("n") as usize);
    let body = if param("chunked").is_some() {
        let half = body.len() / 2;
        let parts = [
            Bytes::copy_from_slice(&body[..half]),
            Bytes::copy_from_slice(&body[half..]),
        ];
        let frames = stream::iter(parts.map(|p| Ok::<_, Infallible>(Frame::data(p))));
        StreamBody::new(frames).boxed()
    } else {
        Full::new(Bytes::from(body)).boxed()
    };
    response.body(body).expect("response")
}

/// Sends `req` on a new HTTP/1.1 connection to `port` and gives the response head.
pub async fn open(port: u16, req: Request<Full<Bytes>>) -> Response<Incoming> {
    let stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("h1");
    tokio::spawn(conn);
    tokio::time::timeout(WAIT, sender.send_request(req))
        .await
        .expect("response in time")
        .expect("response")
}

/// A whole response with its body bytes as sent (still encoded).
pub struct RawAnswer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl RawAnswer {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
    }

    /// The body decoded per its `Content-Encoding`.
    pub fn decoded(&self) -> Vec<u8> {
        decode(self.header("content-encoding"), &self.body)
    }
}

pub async fn fetch(port: u16, req: Request<Full<Bytes>>) -> RawAnswer {
    let (parts, body) = open(port, req).await.into_parts();
    let body = tokio::time::timeout(WAIT, body.collect())
        .await
        .expect("body in time")
        .expect("body")
        .to_bytes()
        .to_vec();
    RawAnswer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// `bytes` decoded from `encoding` (`-`: as they are).
pub fn decode(encoding: &str, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match encoding {
        "gzip" => {
            flate2::read::GzDecoder::new(bytes)
                .read_to_end(&mut out)
                .expect("gzip");
        }
        "br" => {
            brotli::Decompressor::new(bytes, 4096)
                .read_to_end(&mut out)
                .expect("brotli");
        }
        "zstd" => out = zstd::decode_all(bytes).expect("zstd"),
        "-" => out = bytes.to_vec(),
        other => panic!("unexpected content-encoding {other}"),
    }
    out
}
