//! HTTP/3 termination end to end: the real binary with an `http3` entrypoint, a quinn + h3
//! client trusting the test certificate, and an HTTP/1.1 backend behind the router.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use http::{Method, Request, StatusCode};
use support::mtls;
use support::quic::{H3Client, quic_client_with, quic_connect};
use support::web::{Conn, HttpBackend};
use support::*;

/// The router with `websecure` (TLS, `http3: {}`) and `nohttp3` (TLS, no `http3`), both
/// routing `Host(site.test)` to `backend`.
struct H3Site {
    router: Router,
    dir: std::path::PathBuf,
    backend: HttpBackend,
    cert: TestCert,
    websecure: u16,
    nohttp3: u16,
}

/// What a test adds to the common site: lines under `entryPoints.websecure` (4-space
/// indent), at the top of the static configuration, under `http.routers` (4-space indent)
/// and under `tls` (2-space indent); and the names of the router's certificate.
#[derive(Default)]
struct Extra<'a> {
    websecure: &'a str,
    top: &'a str,
    routers: &'a str,
    tls: &'a str,
    names: &'a [&'a str],
}

impl H3Site {
    async fn start(tag: &str) -> H3Site {
        H3Site::start_with(tag, HttpBackend::start("app").await, Extra::default()).await
    }

    /// With an HTTPS backend (spoken to in HTTP/2), its certificate not verified.
    async fn start_tls_backend(tag: &str) -> H3Site {
        let cert = TestCert::new(&["backend.test"]);
        let backend = HttpBackend::tls("app", &cert, None).await;
        let extra = Extra {
            top: "serversTransport:\n  insecureSkipVerify: true\n",
            ..Extra::default()
        };
        H3Site::start_with(tag, backend, extra).await
    }

    async fn start_with(tag: &str, backend: HttpBackend, extra: Extra<'_>) -> H3Site {
        let dir = temp_dir(tag);
        let names = if extra.names.is_empty() {
            &["site.test"][..]
        } else {
            extra.names
        };
        let cert = TestCert::new(names);
        let (crt, key) = cert.write(&dir, "site");
        let dynamic = dynamic_yaml_with(&backend, &crt, &key, extra.routers, extra.tls);
        let (router, websecure, nohttp3) = start_router(&dir, extra.websecure, extra.top, &dynamic);
        H3Site {
            router,
            dir,
            backend,
            cert,
            websecure,
            nohttp3,
        }
    }

    /// An HTTP/3 connection to `websecure` with SNI `site.test`.
    async fn h3(&self) -> H3Client {
        H3Client::connect(self.addr(), "site.test", &self.cert, &[])
            .await
            .expect("QUIC handshake")
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.websecure))
    }
}

/// The router with `websecure` (TLS, `http3: {}`, then `websecure_extra`) and `nohttp3`
/// (TLS, no `http3`), `top` added to the static configuration and `dynamic` as the file
/// provider's; returns once HTTP/3 listens, with both ports.
fn start_router(
    dir: &std::path::Path,
    websecure_extra: &str,
    top: &str,
    dynamic: &str,
) -> (Router, u16, u16) {
    let (websecure, nohttp3) = (free_port(), free_port());
    let static_yaml = format!(
        "entryPoints:\n  websecure:\n    address: \"127.0.0.1:{websecure}\"\n    http3: {{}}\n    transport:\n      lifeCycle:\n        graceTimeOut: 5s\n{websecure_extra}  nohttp3:\n    address: \"127.0.0.1:{nohttp3}\"\n{top}providers:\n  providersThrottleDuration: 100ms\n  file:\n    filename: \"{}\"\n    watch: true\nlog:\n  level: DEBUG\n",
        dir.join("dynamic.yml").display()
    );
    let router = Router::start(dir, &static_yaml, dynamic, &[websecure, nohttp3]);
    router.wait_log("listening (HTTP/3)");
    (router, websecure, nohttp3)
}

/// The router `site` on both entrypoints to `backend`, serving the certificate `crt`/`key`.
fn dynamic_yaml(backend: &HttpBackend, crt: &std::path::Path, key: &std::path::Path) -> String {
    dynamic_yaml_with(backend, crt, key, "", "")
}

/// [`dynamic_yaml`] with `routers` added under `http.routers` and `tls` under `tls`.
fn dynamic_yaml_with(
    backend: &HttpBackend,
    crt: &std::path::Path,
    key: &std::path::Path,
    routers: &str,
    tls: &str,
) -> String {
    format!(
        "http:\n  routers:\n    site:\n      rule: \"Host(`site.test`)\"\n      entryPoints: [websecure, nohttp3]\n      service: app\n      tls: {{}}\n{routers}  services:\n    app:\n      loadBalancer:\n        servers:\n          - url: \"{}\"\ntls:\n  certificates:\n    - certFile: \"{}\"\n      keyFile: \"{}\"\n{tls}",
        backend.url(),
        crt.display(),
        key.display()
    )
}

/// A request stream of the test client.
type ClientStream = h3::client::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;

/// Opens `request`, sends `first` as the start of its body (the stream stays open for more)
/// and waits for the response head.
async fn started(
    client: &mut H3Client,
    request: Request<()>,
    first: &'static [u8],
) -> (ClientStream, http::Response<()>) {
    let mut stream = client
        .send
        .send_request(request)
        .await
        .expect("send request");
    stream
        .send_data(Bytes::from_static(first))
        .await
        .expect("send data");
    let response = tokio::time::timeout(WAIT, stream.recv_response())
        .await
        .expect("response before the body ends")
        .expect("response");
    (stream, response)
}

/// A request without a body for `https://<host><path>`.
fn request(method: Method, host: &str, path: &str) -> Request<()> {
    Request::builder()
        .method(method)
        .uri(format!("https://{host}{path}"))
        .body(())
        .expect("request")
}

fn header<'a>(headers: &'a http::HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
}

#[tokio::test]
async fn a_get_over_http3_reaches_the_http1_backend_as_https() {
    let site = H3Site::start("h3-get").await;
    let mut client = site.h3().await;
    let (status, headers, body) = client
        .send(request(Method::GET, "site.test", "/hello?x=1"), &[])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"app /hello?x=1");
    assert_eq!(header(&headers, "x-seen-proto"), "https");
    assert_eq!(header(&headers, "x-seen-host"), "site.test");
    assert_eq!(header(&headers, "x-seen-version"), "HTTP/1.1");
    assert_eq!(site.backend.seen(), vec!["GET /hello?x=1 ".to_owned()]);
    // Several requests share the connection.
    let (status, _, body) = client
        .send(request(Method::GET, "site.test", "/again"), &[])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"app /again");
}

#[tokio::test]
async fn a_post_body_streams_to_the_backend_and_back() {
    let site = H3Site::start("h3-echo").await;
    let mut client = site.h3().await;
    // The first chunk comes back before the request body is finished: nothing waits for
    // the whole body on either side.
    let (mut stream, response) = started(
        &mut client,
        request(Method::POST, "site.test", "/echo"),
        b"first ",
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    // Neither side knew the length: the request went without Content-Length (chunked to the
    // HTTP/1.1 backend) and the response comes without one, ended by the stream's end.
    assert!(response.headers().get("content-length").is_none());
    let mut chunk = tokio::time::timeout(WAIT, stream.recv_data())
        .await
        .expect("echo before the body ends")
        .expect("data")
        .expect("a chunk");
    assert_eq!(&chunk.copy_to_bytes(chunk.remaining())[..], b"first ");
    stream
        .send_data(Bytes::from_static(b"second"))
        .await
        .expect("send data");
    stream.finish().await.expect("finish");
    let mut rest = BytesMut::new();
    while let Some(mut chunk) = tokio::time::timeout(WAIT, stream.recv_data())
        .await
        .expect("data in time")
        .expect("data")
    {
        rest.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
    }
    assert_eq!(&rest[..], b"second");
    assert_eq!(site.backend.seen(), vec!["POST /echo".to_owned()]);
}

#[tokio::test]
async fn a_one_mebibyte_body_goes_through_whole_both_ways() {
    let site = H3Site::start("h3-large").await;
    let mut client = site.h3().await;
    let payload: Vec<u8> = (0..(1usize << 20)).map(|i| (i % 251) as u8).collect();
    let chunks: Vec<Bytes> = payload
        .chunks(64 << 10)
        .map(Bytes::copy_from_slice)
        .collect();
    let (status, _, body) = client
        .send(request(Method::POST, "site.test", "/echo"), &chunks)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.len(), 1 << 20);
    assert!(body[..] == payload[..], "the echoed body differs");
}

#[tokio::test]
async fn a_host_no_router_matches_gets_404_over_http3() {
    let site = H3Site::start("h3-404").await;
    let mut client = site.h3().await;
    let (status, _, _) = client
        .send(request(Method::GET, "other.test", "/"), &[])
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(site.backend.seen().is_empty());
}

#[tokio::test]
async fn https_responses_advertise_http3_only_on_entrypoints_that_serve_it() {
    let site = H3Site::start("h3-altsvc").await;
    let mut with = Conn::tls(site.websecure, "site.test", &site.cert, &["h2"]).await;
    let answer = with.get("site.test", "/").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.header("alt-svc"),
        format!("h3=\":{}\"; ma=2592000", site.websecure)
    );
    let mut without = Conn::tls(site.nohttp3, "site.test", &site.cert, &["h2"]).await;
    let answer = without.get("site.test", "/").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("alt-svc"), "-");
    assert!(site.router.log().contains("listening (HTTP/3)"));
}

#[test]
fn a_udp_entrypoint_on_the_port_of_an_http3_entrypoint_is_refused_at_start() {
    let dir = temp_dir("h3-clash");
    let port = free_port();
    let config = dir.join("static.yml");
    std::fs::write(
        &config,
        format!(
            "entryPoints:\n  websecure:\n    address: \"127.0.0.1:{port}\"\n    http3: {{}}\n  dns:\n    address: \"127.0.0.1:{port}/udp\"\n"
        ),
    )
    .expect("write static");
    let (code, output) = run_cli(&["--config", &config.display().to_string()], &dir);
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains("udp_entrypoint=dns") && output.contains("http3_entrypoint=websecure"),
        "{output}"
    );
}

#[tokio::test]
async fn a_reload_swaps_the_certificate_without_dropping_open_connections() {
    let site = H3Site::start("h3-reload").await;
    let addr = SocketAddr::from(([127, 0, 0, 1], site.websecure));
    let mut open = site.h3().await;
    let renewed = TestCert::new(&["site.test"]);
    let (crt, key) = renewed.write(&site.dir, "renewed");
    site.router
        .rewrite_dynamic(&dynamic_yaml(&site.backend, &crt, &key));
    let deadline = std::time::Instant::now() + WAIT;
    let mut fresh = loop {
        match H3Client::connect(addr, "site.test", &renewed, &[]).await {
            Ok(client) => break client,
            Err(error) => assert!(
                std::time::Instant::now() < deadline,
                "the renewed certificate was never served: {error}\n{}",
                site.router.log()
            ),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let (status, _, _) = fresh
        .send(request(Method::GET, "site.test", "/fresh"), &[])
        .await;
    assert_eq!(status, StatusCode::OK);
    // The old certificate is no longer served to new clients...
    assert!(
        H3Client::connect(addr, "site.test", &site.cert, &[])
            .await
            .is_err()
    );
    // ...and the connection opened before the reload lives on (the socket was not rebound).
    let (status, _, body) = open
        .send(request(Method::GET, "site.test", "/old"), &[])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"app /old");
}

#[tokio::test]
async fn on_shutdown_a_request_in_flight_finishes_then_the_connection_closes_before_the_grace() {
    let mut site = H3Site::start("h3-shutdown").await;
    let mut client = site.h3().await;
    let mut stream = client
        .send
        .send_request(request(Method::GET, "site.test", "/slow/800"))
        .await
        .expect("send request");
    stream.finish().await.expect("finish");
    let deadline = std::time::Instant::now() + WAIT;
    while site.backend.seen().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the backend never saw the request"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    site.router.signal("TERM");
    site.router.wait_log("shutting down");
    let response = tokio::time::timeout(WAIT, stream.recv_response())
        .await
        .expect("response in time")
        .expect("the request in flight is answered");
    assert_eq!(response.status(), StatusCode::OK);
    let mut chunk = tokio::time::timeout(WAIT, stream.recv_data())
        .await
        .expect("data in time")
        .expect("data")
        .expect("a chunk");
    assert_eq!(
        &chunk.copy_to_bytes(chunk.remaining())[..],
        b"app /slow/800"
    );
    let status = site
        .router
        .wait_exit(std::time::Duration::from_secs(3))
        .unwrap_or_else(|| {
            panic!(
                "the answered connection was not closed:\n{}",
                site.router.log()
            )
        });
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn request_trailers_reach_the_backend_and_response_trailers_come_back() {
    // HTTP/1.1 to the backend would need chunked trailers on both hops; HTTP/2 carries them.
    let site = H3Site::start_tls_backend("h3-trailers").await;
    let mut client = site.h3().await;
    let mut request = request(Method::POST, "site.test", "/echo");
    request
        .headers_mut()
        .insert("te", http::HeaderValue::from_static("trailers"));
    let mut stream = client
        .send
        .send_request(request)
        .await
        .expect("send request");
    stream
        .send_data(Bytes::from_static(b"body"))
        .await
        .expect("send data");
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-checksum", http::HeaderValue::from_static("abc"));
    stream.send_trailers(trailers).await.expect("send trailers");
    stream.finish().await.expect("finish");
    let response = tokio::time::timeout(WAIT, stream.recv_response())
        .await
        .expect("response in time")
        .expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = BytesMut::new();
    while let Some(mut chunk) = tokio::time::timeout(WAIT, stream.recv_data())
        .await
        .expect("data in time")
        .expect("data")
    {
        body.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
    }
    assert_eq!(&body[..], b"body");
    let trailers = tokio::time::timeout(WAIT, stream.recv_trailers())
        .await
        .expect("trailers in time")
        .expect("trailers")
        .expect("the echoed trailers");
    assert_eq!(header(&trailers, "x-checksum"), "abc");
}

#[tokio::test]
async fn a_header_section_over_max_header_bytes_gets_431_and_the_connection_serves_on() {
    let extra = Extra {
        websecure: "    http:\n      maxHeaderBytes: 4096\n",
        ..Extra::default()
    };
    let site = H3Site::start_with("h3-431", HttpBackend::start("app").await, extra).await;
    let tls = client_config(&[&site.cert], &["h3"]);
    let (mut client, mut driver) = H3Client::undriven(site.addr(), "site.test", tls)
        .await
        .expect("QUIC handshake");
    let mut oversized = request(Method::GET, "site.test", "/big");
    oversized.headers_mut().insert(
        "x-big",
        http::HeaderValue::from_str(&"a".repeat(8192)).expect("header value"),
    );
    let (status, _, _) = client.send(oversized, &[]).await;
    assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    // The refusal ends that stream only: the connection takes the next request.
    tokio::spawn(async move { driver.wait_idle().await });
    let (status, _, body) = client
        .send(request(Method::GET, "site.test", "/after"), &[])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"app /after");
    assert_eq!(site.backend.seen(), vec!["GET /after ".to_owned()]);
}

#[tokio::test]
async fn a_router_with_another_tls_option_answers_421_over_http3_but_serves_over_tcp() {
    // HTTP/3 handshakes all use the `default` option, so `strict.test` cannot get the
    // handshake its router asks for.
    let extra = Extra {
        names: &["site.test", "strict.test"],
        routers: "    strict:\n      rule: \"Host(`strict.test`)\"\n      service: app\n      tls: {options: strict}\n",
        tls: "  options:\n    strict:\n      minVersion: VersionTLS13\n",
        ..Extra::default()
    };
    let site = H3Site::start_with("h3-421", HttpBackend::start("app").await, extra).await;
    let tls = client_config(&[&site.cert], &["h3"]);
    let mut client = H3Client::connect_with(site.addr(), "strict.test", tls)
        .await
        .expect("QUIC handshake");
    let (status, _, _) = client
        .send(request(Method::GET, "strict.test", "/"), &[])
        .await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
    // A router on the default option is served on the same connection.
    let (status, _, body) = client
        .send(request(Method::GET, "site.test", "/default"), &[])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"app /default");
    // Over TCP the handshake for `strict.test` uses its option, and the router serves.
    let mut tcp = Conn::tls(site.websecure, "strict.test", &site.cert, &["h2"]).await;
    let answer = tcp.get("strict.test", "/tcp").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(site.backend.seen(), vec!["GET /default ", "GET /tcp "]);
}

/// A client TLS configuration for HTTP/3 trusting `server` and presenting `client`.
fn client_cert_config(server: &TestCert, client: Option<&TestCert>) -> Arc<rustls::ClientConfig> {
    let mut config = (*mtls::client_config(server, client, &[])).clone();
    config.alpn_protocols = vec![b"h3".to_vec()];
    Arc::new(config)
}

/// GET `/` for `site.test` on a new HTTP/3 connection with `tls`: the status and the
/// certificate the backend was told about, or why there was no answer.
async fn get_with_client_cert(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
) -> Result<(StatusCode, String), String> {
    let mut client = H3Client::connect_with(addr, "site.test", tls).await?;
    let (status, headers, _) = client
        .try_send(request(Method::GET, "site.test", "/"), &[])
        .await?;
    Ok((
        status,
        header(&headers, "x-seen-tls-client-cert").to_owned(),
    ))
}

#[tokio::test]
async fn the_default_option_client_auth_is_required_over_quic_and_the_cert_is_forwarded() {
    let backend = mtls::CertHeadersBackend::start().await;
    let dir = temp_dir("h3-mtls");
    let server = TestCert::new(&["site.test"]);
    let (crt, key) = server.write(&dir, "site");
    let client_ca = TestCa::new("Client CA");
    let (ca_file, _) = client_ca.cert.write(&dir, "client-ca");
    let good = client_ca.issue(&["client.test"]);
    let wrong = TestCa::new("Other CA").issue(&["client.test"]);
    let dynamic = format!(
        "http:\n  routers:\n    site:\n      rule: \"Host(`site.test`)\"\n      service: certs\n      middlewares: [pem]\n      tls: {{}}\n  middlewares:\n    pem:\n      passTLSClientCert: {{pem: true}}\n  services:\n    certs:\n      loadBalancer:\n        servers: [{{url: \"{}\"}}]\ntls:\n  certificates: [{{certFile: \"{}\", keyFile: \"{}\"}}]\n  options:\n    default:\n      clientAuth:\n        caFiles: [\"{}\"]\n        clientAuthType: RequireAndVerifyClientCert\n",
        backend.url(),
        crt.display(),
        key.display(),
        ca_file.display()
    );
    let (router, websecure, _) = start_router(&dir, "", "", &dynamic);
    let addr = SocketAddr::from(([127, 0, 0, 1], websecure));

    let (status, forwarded) = get_with_client_cert(addr, client_cert_config(&server, Some(&good)))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "a trusted client certificate was refused: {e}\n{}",
                router.log()
            )
        });
    assert_eq!(status, StatusCode::OK);
    let good_pem: String = good
        .cert_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert_eq!(forwarded, good_pem);
    for (what, presented) in [("no certificate", None), ("another CA's", Some(&wrong))] {
        // The client's side of the handshake ends before the server has checked its
        // certificate: the refusal (a TLS alert) shows on its first request.
        let refused = get_with_client_cert(addr, client_cert_config(&server, presented)).await;
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.contains("cryptographic handshake failed")),
            "{what}: {refused:?}"
        );
    }
}

/// An HTTP/1.1 backend that announces 100 bytes, sends 5, and closes.
async fn truncating_backend() -> (String, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match stream.read(&mut byte).await {
                    Ok(1) => head.push(byte[0]),
                    _ => break,
                }
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort")
                .await;
        }
    });
    (url, task)
}

#[tokio::test]
async fn a_response_body_cut_by_the_backend_resets_the_stream_instead_of_ending_it() {
    let (url, backend) = truncating_backend().await;
    let dir = temp_dir("h3-truncated");
    let cert = TestCert::new(&["site.test"]);
    let (crt, key) = cert.write(&dir, "site");
    let dynamic = format!(
        "http:\n  routers:\n    site:\n      rule: \"Host(`site.test`)\"\n      service: cut\n      tls: {{}}\n  services:\n    cut:\n      loadBalancer:\n        servers: [{{url: \"{url}\"}}]\ntls:\n  certificates: [{{certFile: \"{}\", keyFile: \"{}\"}}]\n",
        crt.display(),
        key.display()
    );
    let (_router, websecure, _) = start_router(&dir, "", "", &dynamic);
    let mut client = H3Client::connect(
        SocketAddr::from(([127, 0, 0, 1], websecure)),
        "site.test",
        &cert,
        &[],
    )
    .await
    .expect("QUIC handshake");
    let answered = client
        .try_send(request(Method::GET, "site.test", "/"), &[])
        .await;
    // A clean end would pass 5 bytes off as the whole body.
    assert!(answered.is_err(), "the cut body looked whole: {answered:?}");
    backend.abort();
}

#[tokio::test]
async fn a_frame_announcing_more_than_the_header_bound_is_refused_unread() {
    let extra = Extra {
        websecure: "    http:\n      maxHeaderBytes: 4096\n",
        ..Extra::default()
    };
    let site = H3Site::start_with("h3-frame-bound", HttpBackend::start("app").await, extra).await;
    let tls = client_config(&[&site.cert], &["h3"]);
    let endpoint = quic_client_with(tls);
    let connection = quic_connect(&endpoint, site.addr(), "site.test")
        .await
        .expect("QUIC handshake");
    // A HEADERS frame (type 0x01) announcing 1 GiB (an 8-byte QUIC integer), then a little
    // of it: the router would otherwise buffer until the whole frame has come.
    let (mut send, mut recv) = connection.open_bi().await.expect("open a request stream");
    let mut frame = vec![0x01];
    frame.extend((0xc000_0000_4000_0000_u64).to_be_bytes());
    frame.extend([b'a'; 1000]);
    send.write_all(&frame).await.expect("write");
    let ended = tokio::time::timeout(WAIT, recv.read_to_end(1 << 20))
        .await
        .expect("the stream is ended in time");
    let excessive_load = quinn::VarInt::from_u32(0x107);
    assert!(
        matches!(ended, Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(code))) if code == excessive_load),
        "{ended:?}"
    );
    // Only that stream: h3 runs on over the same connection.
    let (mut driver, mut h3) = h3::client::new(h3_quinn::Connection::new(connection))
        .await
        .expect("h3 client");
    tokio::spawn(async move { driver.wait_idle().await });
    let mut stream = h3
        .send_request(request(Method::GET, "site.test", "/after"))
        .await
        .expect("send request");
    stream.finish().await.expect("finish");
    let response = tokio::time::timeout(WAIT, stream.recv_response())
        .await
        .expect("response in time")
        .expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(site.backend.seen(), vec!["GET /after ".to_owned()]);
}

#[tokio::test]
async fn a_frame_over_the_bound_on_the_control_stream_closes_the_connection() {
    let site = H3Site::start("h3-control-bound").await;
    let tls = client_config(&[&site.cert], &["h3"]);
    let endpoint = quic_client_with(tls);
    let connection = quic_connect(&endpoint, site.addr(), "site.test")
        .await
        .expect("QUIC handshake");
    // The control stream (type 0x00), its SETTINGS (0x04, empty), then a reserved frame type
    // (0x21) announcing 1 GiB: with the default 1 MiB `maxHeaderBytes`, over the bound.
    let mut control = connection
        .open_uni()
        .await
        .expect("open the control stream");
    let mut bytes = vec![0x00, 0x04, 0x00, 0x21];
    bytes.extend((0xc000_0000_4000_0000_u64).to_be_bytes());
    bytes.extend([0u8; 1000]);
    control.write_all(&bytes).await.expect("write");
    let closed = tokio::time::timeout(WAIT, connection.closed())
        .await
        .expect("the connection is closed in time");
    assert!(
        matches!(closed, quinn::ConnectionError::ApplicationClosed(_)),
        "{closed:?}"
    );
}

#[tokio::test]
async fn a_request_body_the_response_did_not_need_is_stopped_with_h3_no_error() {
    let site = H3Site::start("h3-stop-sending").await;
    let mut client = site.h3().await;
    // No router for `other.test`: the 404 is answered without reading the body.
    let (mut stream, response) = started(
        &mut client,
        request(Method::POST, "other.test", "/upload"),
        b"first",
    )
    .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let deadline = std::time::Instant::now() + WAIT;
    let stopped = loop {
        if let Err(error) = stream.send_data(Bytes::from(vec![0; 16 << 10])).await {
            break error.to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the body was never stopped"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert!(stopped.contains("H3_NO_ERROR"), "{stopped}");
}

#[tokio::test]
async fn a_body_that_does_not_add_up_to_its_content_length_gets_400() {
    let site = H3Site::start("h3-content-length").await;
    let mut client = site.h3().await;
    // DATA frames adding up to another length than declared make the request malformed
    // (RFC 9114 §4.1.2): neither a short body (the backend would wait for the rest) nor a
    // long one (cut at the declared length) is passed off as the request.
    for (declared, body) in [("10", "abc"), ("2", "abcdef"), ("x1", "a")] {
        let mut post = request(Method::POST, "site.test", "/echo");
        post.headers_mut()
            .insert("content-length", http::HeaderValue::from_static(declared));
        let answered = client.try_send(post, &[Bytes::from(body)]).await;
        match answered {
            Ok((status, _, _)) => assert_eq!(status, StatusCode::BAD_REQUEST, "{declared}"),
            // The client may see the stop for its body before the answer.
            Err(error) => assert!(error.contains("H3_MESSAGE_ERROR"), "{declared}: {error}"),
        }
    }
    // A body that matches goes through, on the same connection.
    let mut post = request(Method::POST, "site.test", "/echo");
    post.headers_mut()
        .insert("content-length", http::HeaderValue::from_static("5"));
    let (status, _, body) = client
        .send(
            post,
            &[Bytes::from_static(b"ab"), Bytes::from_static(b"cde")],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"abcde");
}
