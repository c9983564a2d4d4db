//! HTTP parts for the end-to-end tests: a real hyper backend that reports what it received,
//! and real hyper clients (HTTP/1.1, h2c, and HTTP/2 or HTTP/1.1 over rustls).
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};

use super::{TestCert, client_config};

/// A hyper backend (HTTP/1.1 and h2c) that answers `<name> <path>` and reports the request
/// in `x-seen-*` response headers (host, x-forwarded-*, x-real-ip, version). `/echo` streams
/// the request body back; `/status/<n>` answers with status n; `/slow/<ms>` waits first.
pub struct HttpBackend {
    pub addr: SocketAddr,
    pub requests: Arc<AtomicUsize>,
    pub connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HttpBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HttpBackend {
    pub async fn start(name: &'static str) -> HttpBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        HttpBackend::on(listener, name)
    }

    /// Serves on an already bound listener (to restart a backend on the same port).
    pub fn on(listener: TcpListener, name: &'static str) -> HttpBackend {
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let (req_count, conn_count) = (requests.clone(), connections.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                conn_count.fetch_add(1, Ordering::SeqCst);
                let req_count = req_count.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        req_count.fetch_add(1, Ordering::SeqCst);
                        async move { Ok::<_, Infallible>(answer(name, req).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        HttpBackend {
            addr,
            requests,
            connections,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

type TestBody = BoxBody<Bytes, hyper::Error>;

async fn answer(name: &str, req: Request<Incoming>) -> Response<TestBody> {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    if path.starts_with("/echo") {
        return Response::new(req.into_body().boxed());
    }
    if let Some(ms) = path.strip_prefix("/slow/") {
        let ms: u64 = ms.parse().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let status = path
        .strip_prefix("/status/")
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let mut response = Response::builder().status(status);
    let headers = req.headers();
    let seen = |h: &str| {
        headers
            .get_all(h)
            .iter()
            .map(|v| v.to_str().unwrap_or("?").to_owned())
            .collect::<Vec<_>>()
            .join(",")
    };
    let host = match headers.get("host") {
        Some(h) => h.to_str().unwrap_or("?").to_owned(),
        None => req
            .uri()
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_default(),
    };
    for (out, value) in [
        ("x-seen-host", host),
        ("x-seen-xff", seen("x-forwarded-for")),
        ("x-seen-proto", seen("x-forwarded-proto")),
        ("x-seen-xfhost", seen("x-forwarded-host")),
        ("x-seen-port", seen("x-forwarded-port")),
        ("x-seen-real-ip", seen("x-real-ip")),
        ("x-seen-server", seen("x-forwarded-server")),
        ("x-seen-version", format!("{:?}", req.version())),
        ("x-backend", name.to_owned()),
    ] {
        if let Ok(v) = value.parse::<http::HeaderValue>() {
            response = response.header(out, v);
        }
    }
    let body = Full::new(Bytes::from(format!("{name} {path}")))
        .map_err(|never| match never {})
        .boxed();
    response.body(body).expect("response")
}

/// A response, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
    }

    pub async fn read(response: Response<Incoming>) -> Answer {
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Answer {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }
}

/// One client connection, HTTP/1.1 or HTTP/2, plaintext or TLS.
pub enum Conn {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

impl Conn {
    /// HTTP/1.1 keep-alive over plaintext.
    pub async fn h1(port: u16) -> Conn {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.expect("h1");
        tokio::spawn(conn);
        Conn::H1(sender)
    }

    /// HTTP/2 with prior knowledge over plaintext.
    pub async fn h2c(port: u16) -> Conn {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2c");
        tokio::spawn(conn);
        Conn::H2(sender)
    }

    /// TLS with `sni`, trusting `ca`, offering `alpn`; HTTP/2 if the server picked h2.
    pub async fn tls(port: u16, sni: &str, ca: &TestCert, alpn: &[&str]) -> Conn {
        Conn::try_tls(port, sni, ca, alpn).await.expect("tls")
    }

    pub async fn try_tls(
        port: u16,
        sni: &str,
        ca: &TestCert,
        alpn: &[&str],
    ) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        let connector = tokio_rustls::TlsConnector::from(client_config(&[ca], alpn));
        let name = rustls_pki_types::ServerName::try_from(sni.to_owned())
            .map_err(std::io::Error::other)?;
        let tls = connector.connect(name, stream).await?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        Ok(if h2 {
            let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(conn);
            Conn::H2(sender)
        } else {
            let (sender, conn) = http1::handshake(TokioIo::new(tls))
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(conn);
            Conn::H1(sender)
        })
    }

    /// Sends a GET for `path` to `host` and reads the whole answer.
    pub async fn get(&mut self, host: &str, path: &str) -> Answer {
        self.send(get(host, path, self.is_h2())).await
    }

    pub fn is_h2(&self) -> bool {
        matches!(self, Conn::H2(_))
    }

    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Answer {
        let sent = async {
            match self {
                Conn::H1(s) => {
                    s.ready().await?;
                    s.send_request(req).await
                }
                Conn::H2(s) => {
                    s.ready().await?;
                    s.send_request(req).await
                }
            }
        };
        let response = tokio::time::timeout(Duration::from_secs(10), sent)
            .await
            .expect("response in time")
            .expect("response");
        Answer::read(response).await
    }
}

/// A GET request: origin-form with a Host header for HTTP/1.1, `:authority` for HTTP/2.
pub fn get(host: &str, path: &str, h2: bool) -> Request<Full<Bytes>> {
    let builder = if h2 {
        Request::get(format!("https://{host}{path}"))
    } else {
        Request::get(path).header("host", host)
    };
    builder.body(Full::default()).expect("request")
}
