//! HTTP/3 termination end to end: the real binary with an `http3` entrypoint, a quinn + h3
//! client trusting the test certificate, and an HTTP/1.1 backend behind the router.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use h3::client::SendRequest;
use http::{Method, Request, StatusCode};
use quinn::crypto::rustls::QuicClientConfig;
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

impl H3Site {
    async fn start(tag: &str) -> H3Site {
        H3Site::start_with(tag, HttpBackend::start("app").await, "").await
    }

    /// With an HTTPS backend (spoken to in HTTP/2), its certificate not verified.
    async fn start_tls_backend(tag: &str) -> H3Site {
        let cert = TestCert::new(&["backend.test"]);
        let backend = HttpBackend::tls("app", &cert, None).await;
        H3Site::start_with(
            tag,
            backend,
            "serversTransport:\n  insecureSkipVerify: true\n",
        )
        .await
    }

    async fn start_with(tag: &str, backend: HttpBackend, extra_static: &str) -> H3Site {
        let dir = temp_dir(tag);
        let cert = TestCert::new(&["site.test"]);
        let (crt, key) = cert.write(&dir, "site");
        let (websecure, nohttp3) = (free_port(), free_port());
        let static_yaml = format!(
            "entryPoints:\n  websecure:\n    address: \"127.0.0.1:{websecure}\"\n    http3: {{}}\n    transport:\n      lifeCycle:\n        graceTimeOut: 5s\n  nohttp3:\n    address: \"127.0.0.1:{nohttp3}\"\n{extra_static}providers:\n  providersThrottleDuration: 100ms\n  file:\n    filename: \"{}\"\n    watch: true\nlog:\n  level: DEBUG\n",
            dir.join("dynamic.yml").display()
        );
        let dynamic = dynamic_yaml(&backend, &crt, &key);
        let router = Router::start(&dir, &static_yaml, &dynamic, &[websecure, nohttp3]);
        router.wait_log("listening (HTTP/3)");
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
        H3Client::connect(
            SocketAddr::from(([127, 0, 0, 1], self.websecure)),
            &self.cert,
        )
        .await
    }
}

/// The router `site` on both entrypoints to `backend`, serving the certificate `crt`/`key`.
fn dynamic_yaml(backend: &HttpBackend, crt: &std::path::Path, key: &std::path::Path) -> String {
    format!(
        "http:\n  routers:\n    site:\n      rule: \"Host(`site.test`)\"\n      entryPoints: [websecure, nohttp3]\n      service: app\n      tls: {{}}\n  services:\n    app:\n      loadBalancer:\n        servers:\n          - url: \"{}\"\ntls:\n  certificates:\n    - certFile: \"{}\"\n      keyFile: \"{}\"\n",
        backend.url(),
        crt.display(),
        key.display()
    )
}

/// A quinn endpoint and one h3 connection on it.
struct H3Client {
    _endpoint: quinn::Endpoint,
    send: SendRequest<h3_quinn::OpenStreams, Bytes>,
}

impl H3Client {
    async fn connect(addr: SocketAddr, ca: &TestCert) -> H3Client {
        H3Client::try_connect(addr, ca)
            .await
            .expect("QUIC handshake")
    }

    /// The handshake's error when it fails (a certificate the client does not trust).
    async fn try_connect(addr: SocketAddr, ca: &TestCert) -> Result<H3Client, String> {
        let tls = client_config(&[ca], &["h3"]);
        let crypto = QuicClientConfig::try_from(tls).expect("QUIC client TLS");
        let mut endpoint =
            quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).expect("endpoint");
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
        let connection =
            tokio::time::timeout(WAIT, endpoint.connect(addr, "site.test").expect("connect"))
                .await
                .expect("handshake in time")
                .map_err(|e| e.to_string())?;
        let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(connection))
            .await
            .expect("h3 client");
        tokio::spawn(async move { driver.wait_idle().await });
        Ok(H3Client {
            _endpoint: endpoint,
            send,
        })
    }

    /// Sends `request` with `body` (in the chunks given), returns status, headers and the
    /// whole response body.
    async fn send(
        &mut self,
        request: Request<()>,
        body: &[Bytes],
    ) -> (StatusCode, http::HeaderMap, Bytes) {
        let mut stream = self.send.send_request(request).await.expect("send request");
        for chunk in body {
            stream.send_data(chunk.clone()).await.expect("send data");
        }
        stream.finish().await.expect("finish");
        let response = tokio::time::timeout(WAIT, stream.recv_response())
            .await
            .expect("response in time")
            .expect("response");
        let mut received = BytesMut::new();
        while let Some(mut chunk) = tokio::time::timeout(WAIT, stream.recv_data())
            .await
            .expect("data in time")
            .expect("data")
        {
            received.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
        }
        let (parts, ()) = response.into_parts();
        (parts.status, parts.headers, received.freeze())
    }
}

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
    let mut stream = client
        .send
        .send_request(request(Method::POST, "site.test", "/echo"))
        .await
        .expect("send request");
    // The first chunk comes back before the request body is finished: nothing waits for
    // the whole body on either side.
    stream
        .send_data(Bytes::from_static(b"first "))
        .await
        .expect("send data");
    let response = tokio::time::timeout(WAIT, stream.recv_response())
        .await
        .expect("response before the body ends")
        .expect("response");
    assert_eq!(response.status(), StatusCode::OK);
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
        match H3Client::try_connect(addr, &renewed).await {
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
    assert!(H3Client::try_connect(addr, &site.cert).await.is_err());
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
