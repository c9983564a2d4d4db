//! `l7::transport` over loopback: a `ServerHandler` forwards to real hyper backends (HTTP/1.1,
//! h2c, and TLS with rcgen certificates), and a real hyper front serves it for upgrades.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body_util::channel::Channel;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use l7::error::ProxyErrorKind;
use l7::handler::{Body, Handler, boxed, empty_body, full_body, response_error};
use l7::transport::{ServerHandler, ServerOptions, Transport, TransportSettings};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::RootCertStore;
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Aborts a spawned server when the test ends.
struct Task(JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

// ---- certificates ----

/// A private CA that signs leaves.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate chain and its key.
struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        Self {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    fn cert(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    fn leaf(&self, names: &[&str]) -> Identity {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        Identity {
            chain: vec![cert.der().clone()],
            key: PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        }
    }
}

fn self_signed(names: &[&str]) -> Identity {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let generated = rcgen::generate_simple_self_signed(names).unwrap();
    Identity {
        chain: vec![generated.cert.der().clone()],
        key: PrivatePkcs8KeyDer::from(generated.signing_key.serialize_der()).into(),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A TLS backend's configuration: h2 and http/1.1 by ALPN, a client certificate signed by
/// `client_ca` required when given.
fn tls_server(identity: Identity, client_ca: Option<&Ca>) -> Arc<ServerConfig> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            roots.add(ca.cert()).unwrap();
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(identity.chain, identity.key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

// ---- backends ----

type BackendBody = UnsyncBoxBody<Bytes, hyper::Error>;

/// A running backend and the number of TCP connections it accepted.
struct Backend {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    _task: Task,
}

impl Backend {
    fn url(&self, scheme: &str) -> String {
        format!("{scheme}://{}", self.addr)
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// A hyper backend (HTTP/1.1 and h2, with upgrades), in TLS when `tls` is given. See
/// [`respond`] for what it answers.
async fn start_backend(tls: Option<Arc<ServerConfig>>) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    None => serve_backend(tcp, String::from("-")).await,
                    Some(config) => {
                        let Ok(stream) = tokio_rustls::TlsAcceptor::from(config).accept(tcp).await
                        else {
                            return;
                        };
                        let sni = stream.get_ref().1.server_name().unwrap_or("-").to_owned();
                        serve_backend(stream, sni).await;
                    }
                }
            });
        }
    });
    Backend {
        addr,
        accepted,
        _task: Task(task),
    }
}

async fn serve_backend<I>(io: I, sni: String)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let sni = sni.clone();
        async move { Ok::<_, Infallible>(respond(req, &sni).await) }
    });
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .await;
}

/// `/echo` streams the request body back; `/slow` answers after two seconds; `/trailers`
/// answers a body and gRPC-style trailers; `/ws` accepts a WebSocket upgrade and echoes the
/// raw bytes; anything else reports the request in `x-seen-*` headers.
async fn respond(mut req: Request<Incoming>, sni: &str) -> Response<BackendBody> {
    let path = req.uri().path().to_owned();
    match path.as_str() {
        "/echo" => return Response::new(req.into_body().boxed_unsync()),
        "/slow" => tokio::time::sleep(Duration::from_secs(2)).await,
        "/trailers" => {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().unwrap());
            trailers.insert("grpc-message", "fine".parse().unwrap());
            let body = Frames(
                [
                    Frame::data(Bytes::from_static(b"message")),
                    Frame::trailers(trailers),
                ]
                .into(),
            )
            .boxed_unsync();
            return Response::builder()
                .header("content-type", "application/grpc")
                .header("trailer", "grpc-status, grpc-message")
                .body(body)
                .unwrap();
        }
        "/ws" => {
            let upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let Ok(upgraded) = upgrade.await else { return };
                let mut io = TokioIo::new(upgraded);
                let mut buf = [0u8; 1024];
                loop {
                    match io.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if io.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
            return Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("connection", "Upgrade")
                .header("upgrade", "websocket")
                .body(empty())
                .unwrap();
        }
        _ => {}
    }
    let seen = |name: &str| {
        req.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_else(|| "-".to_owned())
    };
    let host = match req.headers().get("host") {
        Some(host) => host.to_str().unwrap().to_owned(),
        None => req
            .uri()
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_default(),
    };
    let path_and_query = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("");
    Response::builder()
        .header("x-seen-path", path_and_query)
        .header("x-seen-host", host)
        .header("x-seen-host-header", seen("host"))
        .header(
            "x-seen-authority",
            req.uri()
                .authority()
                .map(|a| a.to_string())
                .unwrap_or_else(|| "-".to_owned()),
        )
        .header("x-seen-version", format!("{:?}", req.version()))
        .header("x-seen-te", seen("te"))
        .header("x-seen-connection", seen("connection"))
        .header("x-seen-sni", sni)
        .header("connection", "x-backend-private")
        .header("x-backend-private", "1")
        .header("keep-alive", "timeout=5")
        .body(
            Full::new(Bytes::from_static(b"hello"))
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
        .unwrap()
}

fn empty() -> BackendBody {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A body that yields the given frames one by one, like a gRPC server's response.
struct Frames(std::collections::VecDeque<Frame<Bytes>>);

impl http_body::Body for Frames {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        std::task::Poll::Ready(self.get_mut().0.pop_front().map(Ok))
    }
}

// ---- helpers ----

fn transport(settings: TransportSettings) -> Arc<Transport> {
    Transport::new(settings).unwrap()
}

fn server(transport: &Arc<Transport>, url: &str) -> ServerHandler {
    transport.server(url, ServerOptions::default()).unwrap()
}

fn get(path: &str) -> Request<Body> {
    Request::builder()
        .uri(path)
        .header("host", "app.example.com")
        .body(empty_body())
        .unwrap()
}

fn header<'r>(response: &'r Response<Body>, name: &str) -> &'r str {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or("-")
}

async fn body_text(response: Response<Body>) -> String {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn trusting(ca: &Ca) -> TransportSettings {
    TransportSettings {
        root_cas: vec![ca.cert()],
        ..TransportSettings::default()
    }
}

// ---- forwarding ----

#[tokio::test]
async fn http_servers_get_http1_with_the_request_path_and_hop_by_hop_headers_stripped() {
    let backend = start_backend(None).await;
    let handler = server(
        &transport(TransportSettings::default()),
        &backend.url("http"),
    );
    let request = Request::builder()
        .uri("/api/items?id=1")
        .header("host", "app.example.com")
        .header("connection", "x-client-private")
        .header("x-client-private", "1")
        .body(empty_body())
        .unwrap();
    let response = handler.call(request).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "x-seen-version"), "HTTP/1.1");
    assert_eq!(header(&response, "x-seen-path"), "/api/items?id=1");
    assert_eq!(header(&response, "x-seen-connection"), "-");
    // The backend's own hop-by-hop headers stay with it.
    for gone in ["connection", "x-backend-private", "keep-alive"] {
        assert_eq!(header(&response, gone), "-", "{gone}");
    }
    assert_eq!(body_text(response).await, "hello");
}

#[tokio::test]
async fn h2c_servers_get_http2_with_prior_knowledge() {
    let backend = start_backend(None).await;
    let handler = server(
        &transport(TransportSettings::default()),
        &backend.url("h2c"),
    );
    let response = handler.call(get("/x")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "x-seen-version"), "HTTP/2.0");
    assert_eq!(header(&response, "x-seen-host"), "app.example.com");
}

#[tokio::test]
async fn http2_servers_see_the_passed_host_as_authority_over_one_connection() {
    let backend = start_backend(None).await;
    let transport = transport(TransportSettings::default());
    let passing = server(&transport, &backend.url("h2c"));
    let response = passing.call(get("/x")).await;
    assert_eq!(header(&response, "x-seen-authority"), "app.example.com");
    assert_eq!(header(&response, "x-seen-host-header"), "-");

    let own = transport
        .server(
            &backend.url("h2c"),
            ServerOptions {
                pass_host_header: false,
                preserve_path: false,
            },
        )
        .unwrap();
    let response = own.call(get("/x")).await;
    assert_eq!(
        header(&response, "x-seen-authority"),
        backend.addr.to_string()
    );
    // Both handlers of the server share its pool, and HTTP/2 one connection per authority.
    let again = server(&transport, &backend.url("h2c"));
    let response = again.call(get("/x")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(backend.accepted(), 2);
}

#[tokio::test]
async fn https_http2_servers_see_the_passed_host_as_authority() {
    let ca = Ca::new("backend CA");
    let backend = start_backend(Some(tls_server(ca.leaf(&["localhost"]), None))).await;
    let url = format!("https://localhost:{}", backend.addr.port());
    let handler = server(&transport(trusting(&ca)), &url);
    let response = handler.call(get("/x")).await;
    assert_eq!(header(&response, "x-seen-version"), "HTTP/2.0");
    assert_eq!(header(&response, "x-seen-authority"), "app.example.com");
    // The SNI stays the server's: the passed Host is not who we connect to.
    assert_eq!(header(&response, "x-seen-sni"), "localhost");
}

#[tokio::test]
async fn https_servers_get_http2_by_alpn() {
    let ca = Ca::new("backend CA");
    let backend = start_backend(Some(tls_server(ca.leaf(&["127.0.0.1"]), None))).await;
    let handler = server(&transport(trusting(&ca)), &backend.url("https"));
    let response = handler.call(get("/x")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "x-seen-version"), "HTTP/2.0");
}

#[tokio::test]
async fn disable_http2_speaks_http1_to_https_servers() {
    let ca = Ca::new("backend CA");
    let backend = start_backend(Some(tls_server(ca.leaf(&["127.0.0.1"]), None))).await;
    let settings = TransportSettings {
        disable_http2: true,
        ..trusting(&ca)
    };
    let handler = server(&transport(settings), &backend.url("https"));
    let response = handler.call(get("/x")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "x-seen-version"), "HTTP/1.1");
}

#[tokio::test]
async fn server_name_is_the_sni_and_the_verified_name() {
    let ca = Ca::new("backend CA");
    let backend = start_backend(Some(tls_server(ca.leaf(&["backend.internal"]), None))).await;
    let settings = TransportSettings {
        server_name: Some("backend.internal".to_owned()),
        ..trusting(&ca)
    };
    let handler = server(&transport(settings), &backend.url("https"));
    let response = handler.call(get("/x")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "x-seen-sni"), "backend.internal");

    // Without it the certificate (for backend.internal only) does not match 127.0.0.1.
    let handler = server(&transport(trusting(&ca)), &backend.url("https"));
    let response = handler.call(get("/x")).await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(
        response_error(&response),
        Some(ProxyErrorKind::UpstreamConnect)
    );
}

#[tokio::test]
async fn the_url_host_is_the_sni_by_default() {
    let ca = Ca::new("backend CA");
    let backend = start_backend(Some(tls_server(ca.leaf(&["localhost"]), None))).await;
    let url = format!("https://localhost:{}", backend.addr.port());
    let handler = server(&transport(trusting(&ca)), &url);
    let response = handler.call(get("/x")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "x-seen-sni"), "localhost");
}

#[tokio::test]
async fn insecure_skip_verify_accepts_a_self_signed_server_and_verification_refuses_it() {
    let backend = start_backend(Some(tls_server(self_signed(&["127.0.0.1"]), None))).await;
    let insecure = TransportSettings {
        insecure_skip_verify: true,
        ..TransportSettings::default()
    };
    let response = server(&transport(insecure), &backend.url("https"))
        .call(get("/x"))
        .await;
    assert_eq!(response.status(), StatusCode::OK);

    let response = server(
        &transport(TransportSettings::default()),
        &backend.url("https"),
    )
    .call(get("/x"))
    .await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn root_cas_trust_a_private_ca_and_only_it() {
    let ca = Ca::new("backend CA");
    let backend = start_backend(Some(tls_server(ca.leaf(&["127.0.0.1"]), None))).await;
    let response = server(&transport(trusting(&ca)), &backend.url("https"))
        .call(get("/x"))
        .await;
    assert_eq!(response.status(), StatusCode::OK);

    let other = Ca::new("another CA");
    let response = server(&transport(trusting(&other)), &backend.url("https"))
        .call(get("/x"))
        .await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn a_server_requiring_a_client_certificate_gets_the_configured_one() {
    let server_ca = Ca::new("backend CA");
    let client_ca = Ca::new("client CA");
    let config = tls_server(server_ca.leaf(&["127.0.0.1"]), Some(&client_ca));
    let backend = start_backend(Some(config)).await;

    let client = client_ca.leaf(&["sallyport"]);
    let with_cert = TransportSettings {
        client_certificates: vec![(client.chain, client.key)],
        ..trusting(&server_ca)
    };
    let response = server(&transport(with_cert), &backend.url("https"))
        .call(get("/x"))
        .await;
    assert_eq!(response.status(), StatusCode::OK);

    let response = server(&transport(trusting(&server_ca)), &backend.url("https"))
        .call(get("/x"))
        .await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn pass_host_header_chooses_between_the_client_host_and_the_server_authority() {
    let backend = start_backend(None).await;
    let transport = transport(TransportSettings::default());
    let passing = server(&transport, &backend.url("http"));
    let response = passing.call(get("/")).await;
    assert_eq!(header(&response, "x-seen-host"), "app.example.com");

    let own = transport
        .server(
            &backend.url("http"),
            ServerOptions {
                pass_host_header: false,
                preserve_path: false,
            },
        )
        .unwrap();
    let response = own.call(get("/")).await;
    assert_eq!(header(&response, "x-seen-host"), backend.addr.to_string());
}

#[tokio::test]
async fn preserve_path_prefixes_the_url_path() {
    let backend = start_backend(None).await;
    let transport = transport(TransportSettings::default());
    let url = format!("{}/base", backend.url("http"));
    let preserving = transport
        .server(
            &url,
            ServerOptions {
                pass_host_header: true,
                preserve_path: true,
            },
        )
        .unwrap();
    let response = preserving.call(get("/items?x=1")).await;
    assert_eq!(header(&response, "x-seen-path"), "/base/items?x=1");

    let ignoring = server(&transport, &url);
    let response = ignoring.call(get("/items?x=1")).await;
    assert_eq!(header(&response, "x-seen-path"), "/items?x=1");
}

// ---- failures ----

#[tokio::test]
async fn a_slow_server_is_a_504_after_the_response_header_timeout() {
    let backend = start_backend(None).await;
    let settings = TransportSettings {
        response_header_timeout: Some(Duration::from_millis(200)),
        ..TransportSettings::default()
    };
    let handler = server(&transport(settings), &backend.url("http"));
    let started = std::time::Instant::now();
    let response = handler.call(get("/slow")).await;
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        response_error(&response),
        Some(ProxyErrorKind::UpstreamTimeout)
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_refused_connection_is_a_502() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let handler = server(
        &transport(TransportSettings::default()),
        &format!("http://{addr}"),
    );
    let response = handler.call(get("/")).await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(
        response_error(&response),
        Some(ProxyErrorKind::UpstreamConnect)
    );
    assert_eq!(body_text(response).await, "Bad Gateway");
}

#[tokio::test]
async fn a_server_that_does_not_accept_in_time_is_a_504() {
    // A listener that never accepts: once its queue is full, connection attempts get no
    // answer, as from a server that is down behind a firewall.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut queued = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(tcp)) =
            tokio::time::timeout(Duration::from_millis(100), TcpStream::connect(addr)).await
        {
            queued.push(tcp);
        }
    }
    let settings = TransportSettings {
        dial_timeout: Duration::from_millis(300),
        ..TransportSettings::default()
    };
    let response = server(&transport(settings), &format!("http://{addr}"))
        .call(get("/"))
        .await;
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        response_error(&response),
        Some(ProxyErrorKind::UpstreamConnectTimeout)
    );
}

#[tokio::test]
async fn a_server_answering_garbage_is_a_502() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _task = Task(tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = tcp.read(&mut buf).await;
            let _ = tcp.write_all(b"this is not HTTP\r\n\r\n").await;
        }
    }));
    let handler = server(
        &transport(TransportSettings::default()),
        &format!("http://{addr}"),
    );
    let response = handler.call(get("/")).await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(
        response_error(&response),
        Some(ProxyErrorKind::UpstreamProtocol)
    );
}

// ---- gRPC: trailers and streaming ----

async fn assert_trailers_pass(handler: &ServerHandler) {
    let request = Request::builder()
        .method("POST")
        .uri("/trailers")
        .header("te", "trailers")
        .header("content-type", "application/grpc")
        .body(full_body("request"))
        .unwrap();
    let response = handler.call(request).await;
    assert_eq!(response.status(), StatusCode::OK);
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap();
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "fine");
    assert_eq!(collected.to_bytes(), "message");
}

#[tokio::test]
async fn trailers_pass_from_h2c_servers() {
    let backend = start_backend(None).await;
    let handler = server(
        &transport(TransportSettings::default()),
        &backend.url("h2c"),
    );
    assert_trailers_pass(&handler).await;
}

#[tokio::test]
async fn trailers_pass_from_https_h2_servers() {
    let ca = Ca::new("backend CA");
    let backend = start_backend(Some(tls_server(ca.leaf(&["127.0.0.1"]), None))).await;
    let handler = server(&transport(trusting(&ca)), &backend.url("https"));
    assert_trailers_pass(&handler).await;
}

#[tokio::test]
async fn trailers_reach_an_http1_client_through_an_http1_front() {
    let backend = start_backend(None).await;
    let handler = Arc::new(server(
        &transport(TransportSettings::default()),
        &backend.url("h2c"),
    ));
    let (front, _front) = start_front(handler).await;
    let tcp = TcpStream::connect(front).await.unwrap();
    let (mut client, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    let _conn = Task(tokio::spawn(async move {
        let _ = conn.await;
    }));
    let request = Request::builder()
        .method("POST")
        .uri("/trailers")
        .header("host", "app.example.com")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"request")))
        .unwrap();
    let response = client.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap();
    assert_eq!(trailers["grpc-status"], "0");
}

#[tokio::test]
async fn te_trailers_reaches_http2_servers() {
    let backend = start_backend(None).await;
    let handler = server(
        &transport(TransportSettings::default()),
        &backend.url("h2c"),
    );
    let request = Request::builder()
        .uri("/x")
        .header("te", "trailers")
        .body(empty_body())
        .unwrap();
    let response = handler.call(request).await;
    assert_eq!(header(&response, "x-seen-te"), "trailers");
}

#[tokio::test]
async fn bodies_stream_both_ways_without_buffering() {
    let backend = start_backend(None).await;
    let handler = server(
        &transport(TransportSettings::default()),
        &backend.url("h2c"),
    );
    let (mut sender, body) = Channel::<Bytes, l7::handler::BoxError>::new(4);
    let request = Request::builder()
        .method("POST")
        .uri("/echo")
        .body(boxed(body))
        .unwrap();
    sender.send_data(Bytes::from_static(b"one")).await.unwrap();
    let response = tokio::time::timeout(Duration::from_secs(5), handler.call(request))
        .await
        .unwrap();
    let mut body = response.into_body();
    // The echo of the first message arrives while the request is still open.
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), "one");
    sender.send_data(Bytes::from_static(b"two")).await.unwrap();
    let second = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(second.into_data().unwrap(), "two");
    drop(sender);
    assert!(body.collect().await.unwrap().to_bytes().is_empty());
}

// ---- upgrades ----

/// A hyper front (HTTP/1.1 with upgrades) serving `handler`, as an entrypoint would.
async fn start_front(handler: Arc<ServerHandler>) -> (SocketAddr, Task) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let handler = Arc::clone(&handler);
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let handler = Arc::clone(&handler);
                    async move { Ok::<_, Infallible>(handler.call(req.map(boxed)).await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (addr, Task(task))
}

async fn websocket_echo(front: SocketAddr) {
    let mut tcp = TcpStream::connect(front).await.unwrap();
    tcp.write_all(
        b"GET /ws HTTP/1.1\r\nHost: app.example.com\r\nConnection: Upgrade\r\n\
          Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tcp.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");

    for message in [&b"ping"[..], b"second message"] {
        tcp.write_all(message).await.unwrap();
        let mut echoed = vec![0u8; message.len()];
        tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut echoed))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(echoed, message);
    }
}

#[tokio::test]
async fn a_websocket_upgrade_joins_client_and_server() {
    let backend = start_backend(None).await;
    let handler = Arc::new(server(
        &transport(TransportSettings::default()),
        &backend.url("http"),
    ));
    let (front, _front) = start_front(handler).await;
    websocket_echo(front).await;
}

#[tokio::test]
async fn a_websocket_upgrade_to_an_https_server_uses_http1() {
    let ca = Ca::new("backend CA");
    let backend = start_backend(Some(tls_server(ca.leaf(&["127.0.0.1"]), None))).await;
    let handler = Arc::new(server(&transport(trusting(&ca)), &backend.url("https")));
    let (front, _front) = start_front(handler).await;
    websocket_echo(front).await;
}

// ---- pooling ----

async fn accepts_after_three_requests(settings: TransportSettings) -> usize {
    let backend = start_backend(None).await;
    let handler = server(&transport(settings), &backend.url("http"));
    for _ in 0..3 {
        let response = handler.call(get("/")).await;
        assert_eq!(body_text(response).await, "hello");
        // Let the pool take the connection back before the next request.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    backend.accepted()
}

#[tokio::test]
async fn connections_are_reused_by_default() {
    assert_eq!(
        accepts_after_three_requests(TransportSettings::default()).await,
        1
    );
}

#[tokio::test]
async fn negative_max_idle_conns_per_host_opens_a_connection_per_request() {
    let settings = TransportSettings {
        max_idle_conns_per_host: -1,
        ..TransportSettings::default()
    };
    assert_eq!(accepts_after_three_requests(settings).await, 3);
}

// ---- send (health checks) ----

#[tokio::test]
async fn send_takes_absolute_http_h2c_and_https_uris() {
    let plain = start_backend(None).await;
    let ca = Ca::new("backend CA");
    let secure = start_backend(Some(tls_server(ca.leaf(&["127.0.0.1"]), None))).await;
    let transport = transport(trusting(&ca));
    for (url, version) in [
        (format!("{}/health", plain.url("http")), "HTTP/1.1"),
        (format!("{}/health", plain.url("h2c")), "HTTP/2.0"),
        (format!("{}/health", secure.url("https")), "HTTP/2.0"),
    ] {
        let request = Request::builder().uri(&url).body(empty_body()).unwrap();
        let response = transport.send(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{url}");
        assert_eq!(header(&response, "x-seen-version"), version, "{url}");
        assert_eq!(header(&response, "x-seen-path"), "/health", "{url}");
    }
}

#[tokio::test]
async fn send_announces_a_host_header_as_the_http2_authority() {
    let backend = start_backend(None).await;
    let transport = transport(TransportSettings::default());
    for scheme in ["h2c", "http"] {
        let request = Request::builder()
            .uri(format!("{}/health", backend.url(scheme)))
            .header("host", "health.example.com")
            .body(empty_body())
            .unwrap();
        let response = transport.send(request).await.unwrap();
        assert_eq!(
            header(&response, "x-seen-host"),
            "health.example.com",
            "{scheme}"
        );
    }
}

#[tokio::test]
async fn send_reports_failures_as_proxy_errors() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let transport = transport(TransportSettings::default());
    let request = Request::builder()
        .uri(format!("http://{addr}/health"))
        .body(empty_body())
        .unwrap();
    let error = transport.send(request).await.unwrap_err();
    assert_eq!(error.kind(), ProxyErrorKind::UpstreamConnect);
    assert!(error.to_string().contains(&addr.to_string()), "{error}");

    let relative = Request::builder()
        .uri("/health")
        .body(empty_body())
        .unwrap();
    let error = transport.send(relative).await.unwrap_err();
    assert_eq!(error.kind(), ProxyErrorKind::Internal);
}

// ---- client gone ----

/// Collects what is logged, to see the 499 line.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    /// Captures what this thread logs until the guard is dropped (tests run on a
    /// current-thread runtime, so the handler logs on this thread).
    fn capture() -> (Self, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

#[tokio::test]
async fn a_failure_is_logged_once_with_the_server_and_the_cause() {
    let (logs, _guard) = Logs::capture();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let url = format!("http://{addr}");
    let response = server(&transport(TransportSettings::default()), &url)
        .call(get("/"))
        .await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let text = logs.text();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(lines[0].contains(&url), "{text}");
    assert!(lines[0].to_lowercase().contains("refused"), "{text}");
}

#[tokio::test]
async fn a_client_leaving_before_the_response_is_logged_as_499() {
    let (logs, _guard) = Logs::capture();

    let backend = start_backend(None).await;
    let handler = server(
        &transport(TransportSettings::default()),
        &backend.url("http"),
    );
    let call = handler.call(get("/slow"));
    assert!(
        tokio::time::timeout(Duration::from_millis(100), call)
            .await
            .is_err()
    );
    let text = logs.text();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("499")).collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(lines[0].contains(&backend.url("http")), "{text}");
    assert!(lines[0].contains("elapsed"), "{text}");
}

#[tokio::test]
async fn answered_requests_log_no_499() {
    let (logs, _guard) = Logs::capture();

    let backend = start_backend(None).await;
    let handler = server(
        &transport(TransportSettings::default()),
        &backend.url("http"),
    );
    let response = handler.call(get("/")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let text = logs.text();
    assert!(!text.contains("499"), "{text}");
}

#[tokio::test]
async fn responses_go_back_in_the_clients_version() {
    let backend = start_backend(None).await;
    let handler = server(
        &transport(TransportSettings::default()),
        &backend.url("h2c"),
    );
    let response = handler.call(get("/")).await;
    assert_eq!(response.version(), Version::HTTP_11);
}
