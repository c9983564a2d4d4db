//! HTTP parts for the end-to-end tests: a real hyper backend (plaintext or TLS, with mTLS)
//! that reports what it received and can be told to fail, a WebSocket echo backend, and
//! real hyper clients (HTTP/1.1, h2c, and HTTP/2 or HTTP/1.1 over rustls).
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::IpAddr;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::Message;

use super::{
    Backend, Router, TestCert, WAIT, client_config, free_port, provider, static_config, temp_dir,
};

/// A hyper backend (HTTP/1.1 and h2c, or HTTP/2 and HTTP/1.1 over TLS) that answers
/// `<name> <path>` and reports the request in `x-seen-*` response headers (host,
/// x-forwarded-*, x-forwarded-prefix, x-replaced-path, x-real-ip, version, traceparent, tracestate, client certificate). `/echo` streams the request body
/// back; `/status/<n>` answers with status n; `/slow/<ms>` waits first; `/health` answers
/// what [`HttpBackend::set_health`] says (200 at start). Every request but `/echo` is read
/// whole and recorded as `<METHOD> <path> <body>` (see [`HttpBackend::seen`]).
pub struct HttpBackend {
    pub addr: SocketAddr,
    pub requests: Arc<AtomicUsize>,
    pub connections: Arc<AtomicUsize>,
    controls: Arc<Controls>,
    tls: bool,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HttpBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a test can change in a running [`HttpBackend`], and what it saw.
struct Controls {
    name: &'static str,
    /// The status `/health` answers.
    health: AtomicU16,
    /// When not 0, the status of every answer (but `/health`).
    forced: AtomicU16,
    seen: Mutex<Vec<String>>,
    /// The heads of the `/health` requests.
    probes: Mutex<Vec<http::request::Parts>>,
}

/// What the backend knows of a connection.
#[derive(Clone, Copy)]
struct ConnFacts {
    /// Over TLS, whether the client presented a certificate.
    client_cert: Option<bool>,
}

impl HttpBackend {
    pub async fn start(name: &'static str) -> HttpBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        HttpBackend::on(listener, name)
    }

    /// Serves on an already bound listener (to restart a backend on the same port).
    pub fn on(listener: TcpListener, name: &'static str) -> HttpBackend {
        HttpBackend::serve(listener, name, None)
    }

    /// HTTPS with `cert`, offering h2 and http/1.1 by ALPN. With `client_ca`, clients must
    /// present a certificate that chains to it (mTLS).
    pub async fn tls(
        name: &'static str,
        cert: &TestCert,
        client_ca: Option<&TestCert>,
    ) -> HttpBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let config = tls_server_config(cert, client_ca, &["h2", "http/1.1"]);
        HttpBackend::serve(listener, name, Some(TlsAcceptor::from(config)))
    }

    fn serve(listener: TcpListener, name: &'static str, tls: Option<TlsAcceptor>) -> HttpBackend {
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let controls = Arc::new(Controls {
            name,
            health: AtomicU16::new(200),
            forced: AtomicU16::new(0),
            seen: Mutex::new(Vec::new()),
            probes: Mutex::new(Vec::new()),
        });
        let is_tls = tls.is_some();
        let (req_count, conn_count, shared) =
            (requests.clone(), connections.clone(), controls.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                conn_count.fetch_add(1, Ordering::SeqCst);
                let (req_count, shared, tls) = (req_count.clone(), shared.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        None => {
                            let facts = ConnFacts { client_cert: None };
                            serve_connection(stream, facts, req_count, shared).await;
                        }
                        Some(acceptor) => {
                            let Ok(Ok(stream)) =
                                tokio::time::timeout(WAIT, acceptor.accept(stream)).await
                            else {
                                return;
                            };
                            let presented = stream.get_ref().1.peer_certificates().is_some();
                            let facts = ConnFacts {
                                client_cert: Some(presented),
                            };
                            serve_connection(stream, facts, req_count, shared).await;
                        }
                    }
                });
            }
        });
        HttpBackend {
            addr,
            requests,
            connections,
            controls,
            tls: is_tls,
            task,
        }
    }

    /// `http://` or `https://` and the address.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Makes `/health` answer `status`.
    pub fn set_health(&self, status: u16) {
        self.controls.health.store(status, Ordering::SeqCst);
    }

    /// Makes every answer but `/health` have `status`; `None` goes back to normal.
    pub fn force_status(&self, status: Option<u16>) {
        self.controls
            .forced
            .store(status.unwrap_or(0), Ordering::SeqCst);
    }

    /// The requests received so far, as `<METHOD> <path> <body>`, in order.
    pub fn seen(&self) -> Vec<String> {
        self.controls
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The heads of the `/health` requests received so far.
    pub fn probes(&self) -> Vec<http::request::Parts> {
        self.controls
            .probes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The requests received so far, health probes left out.
    pub fn traffic(&self) -> Vec<String> {
        self.seen()
            .into_iter()
            .filter(|r| !r.contains(" /health"))
            .collect()
    }
}

/// A rustls server configuration for `cert`; with `client_ca`, client certificates chaining
/// to it are required.
pub fn tls_server_config(
    cert: &TestCert,
    client_ca: Option<&TestCert>,
    alpn: &[&str],
) -> Arc<rustls::ServerConfig> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions");
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.cert_der.clone()).expect("client CA");
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(vec![cert.cert_der.clone()], cert.key_der())
        .expect("server config");
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(config)
}

async fn serve_connection<I>(
    io: I,
    facts: ConnFacts,
    requests: Arc<AtomicUsize>,
    controls: Arc<Controls>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        requests.fetch_add(1, Ordering::SeqCst);
        let controls = controls.clone();
        async move { Ok::<_, Infallible>(answer(&controls, facts, req).await) }
    });
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .await;
}

type TestBody = BoxBody<Bytes, hyper::Error>;

async fn answer(
    controls: &Controls,
    facts: ConnFacts,
    req: Request<Incoming>,
) -> Response<TestBody> {
    let name = controls.name;
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let forced = match controls.forced.load(Ordering::SeqCst) {
        0 => None,
        n => StatusCode::from_u16(n).ok(),
    };
    if path.starts_with("/echo") && forced.is_none() {
        controls
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(format!("{} {path}", req.method()));
        return Response::new(req.into_body().boxed());
    }
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .unwrap_or_else(|e| format!("<body error: {e}>"));
    controls
        .seen
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(format!("{} {path} {body}", parts.method));
    if let Some(ms) = path.strip_prefix("/slow/") {
        let ms: u64 = ms.parse().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if path == "/health" {
        controls
            .probes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(parts.clone());
    }
    let status = if path == "/health" {
        StatusCode::from_u16(controls.health.load(Ordering::SeqCst)).unwrap_or(StatusCode::OK)
    } else if let Some(forced) = forced {
        forced
    } else {
        path.strip_prefix("/status/")
            .and_then(|s| s.parse::<u16>().ok())
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::OK)
    };
    let mut response = Response::builder().status(status);
    let headers = &parts.headers;
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
        None => parts
            .uri
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_default(),
    };
    let client_cert = match facts.client_cert {
        None => "-",
        Some(true) => "present",
        Some(false) => "none",
    };
    for (out, value) in [
        ("x-seen-host", host),
        ("x-seen-xff", seen("x-forwarded-for")),
        ("x-seen-proto", seen("x-forwarded-proto")),
        ("x-seen-xfhost", seen("x-forwarded-host")),
        ("x-seen-port", seen("x-forwarded-port")),
        ("x-seen-real-ip", seen("x-real-ip")),
        ("x-seen-server", seen("x-forwarded-server")),
        ("x-seen-version", format!("{:?}", parts.version)),
        ("x-seen-traceparent", seen("traceparent")),
        ("x-seen-tracestate", seen("tracestate")),
        ("x-seen-client-cert", client_cert.to_owned()),
        ("x-seen-prefix", seen("x-forwarded-prefix")),
        ("x-seen-replaced", seen("x-replaced-path")),
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

/// The router in front of one [`HttpBackend`] named `app`, for tests that vary only the HTTP
/// routers and middlewares: `http_yaml` is the dynamic file's `http:` block without its
/// `services` (indented by two spaces); a service `app` to the backend is added, and the
/// router listens on one entry point `web`.
pub struct Site {
    pub backend: HttpBackend,
    pub router: Router,
    pub port: u16,
}

impl Site {
    pub async fn start(tag: &str, http_yaml: &str) -> Site {
        let backend = HttpBackend::start("app").await;
        let dir = temp_dir(tag);
        let port = free_port();
        let dynamic = format!(
            "http:\n{http_yaml}  services:\n    app: {{ loadBalancer: {{ servers: [{{ url: \"{}\" }}] }} }}\n",
            backend.url()
        );
        let router = Router::start(
            &dir,
            &static_config(&dir, &[("web", port)], ""),
            &dynamic,
            &[port],
        );
        Site {
            backend,
            router,
            port,
        }
    }
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

    /// HTTP/1.1 keep-alive over plaintext from the local address `ip` (any of 127.0.0.0/8),
    /// so the router sees another client IP.
    pub async fn h1_from(ip: IpAddr, port: u16) -> Conn {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.bind((ip, 0).into()).expect("bind client address");
        let stream = tokio::time::timeout(WAIT, socket.connect(([127, 0, 0, 1], port).into()))
            .await
            .expect("connect in time")
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

/// A WebSocket server (tungstenite) that answers every text or binary message with
/// `<name>: ` and the message, and answers the client's close. Plain TCP, or TLS with `cert`
/// offering h2 and http/1.1 as web servers do (a WebSocket client must get http/1.1).
pub async fn websocket_echo(name: &'static str, cert: Option<&TestCert>) -> Backend {
    let acceptor = cert.map(|c| TlsAcceptor::from(tls_server_config(c, None, &["h2", "http/1.1"])));
    Backend::spawn(move |stream, _| {
        let acceptor = acceptor.clone();
        async move {
            match acceptor {
                None => websocket_session(name, stream).await,
                Some(acceptor) => {
                    if let Ok(Ok(tls)) = tokio::time::timeout(WAIT, acceptor.accept(stream)).await {
                        websocket_session(name, tls).await;
                    }
                }
            }
        }
    })
    .await
}

async fn websocket_session<S>(name: &'static str, stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let Ok(Ok(mut ws)) = tokio::time::timeout(WAIT, tokio_tungstenite::accept_async(stream)).await
    else {
        return;
    };
    while let Some(Ok(message)) = ws.next().await {
        let reply = match message {
            Message::Text(text) => Message::text(format!("{name}: {}", text.as_str())),
            Message::Binary(bytes) => {
                let mut out = format!("{name}: ").into_bytes();
                out.extend_from_slice(&bytes);
                Message::binary(out)
            }
            // Reading on sends tungstenite's answer to a close, then ends the stream.
            _ => continue,
        };
        if ws.send(reply).await.is_err() {
            break;
        }
    }
}
