//! The response middlewares end to end: the real binary on loopback between a hyper client
//! and real backends — `compress` (each coding decoded back, negotiation, what stays
//! uncompressed, streamed events) and `errors` (pages from a second backend, rewrites,
//! a failing or unknown error service).

mod support;

use std::io::Write;
use std::time::{Duration, Instant};

use ::http::{Method, Request, StatusCode};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use support::responses::{ShapedBackend, decode, fetch, open, text};
use support::web::{Conn, HttpBackend};
use support::*;

fn request(
    method: Method,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Request<Full<Bytes>> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::default()).unwrap()
}

fn get(host: &str, path: &str, accept_encoding: &str) -> Request<Full<Bytes>> {
    request(
        Method::GET,
        host,
        path,
        &[("accept-encoding", accept_encoding)],
    )
}

/// The router with `middlewares` (YAML lines under `middlewares:`), one router per name in
/// `hosts` (its middleware of the same name) onto `backend`.
fn start_router(tag: &str, backend: &str, hosts: &[&str], middlewares: &str) -> (Router, u16) {
    let dir = temp_dir(tag);
    let port = free_port();
    let mut routers = String::new();
    for host in hosts {
        routers.push_str(&format!(
            "    {host}:\n      rule: \"Host(`{host}`)\"\n      service: app\n      middlewares: [{host}]\n"
        ));
    }
    let dynamic = format!(
        "http:\n  middlewares:\n{middlewares}  routers:\n{routers}  services:\n    app: {{ loadBalancer: {{ servers: [{{ url: \"{backend}\" }}] }} }}\n"
    );
    let router = Router::start(
        &dir,
        &static_config(&dir, &[("web", port)], ""),
        &dynamic,
        &[port],
    );
    (router, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compress_sends_each_encoding_and_the_client_decodes_the_same_bytes() {
    let backend = ShapedBackend::start().await;
    let (_router, port) = start_router(
        "mw-compress-codings",
        &backend.url(),
        &["c.test"],
        "    c.test: { compress: {} }\n",
    );
    for (accept, expected) in [
        ("gzip", "gzip"),
        ("br", "br"),
        ("zstd", "zstd"),
        ("gzip;q=0.5, br;q=0.9", "br"),
        ("zstd, gzip", "gzip"),
        ("*", "gzip"),
    ] {
        let answer = fetch(port, get("c.test", "/page?n=5000&type=text/plain", accept)).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.header("content-encoding"), expected, "{accept}");
        assert_eq!(answer.header("vary"), "Accept-Encoding");
        assert_eq!(answer.header("content-length"), "-");
        assert!(
            answer.body.len() < 1000,
            "{accept}: {} bytes",
            answer.body.len()
        );
        assert_eq!(answer.decoded(), text(5000), "{accept}");
    }
    // A body of unknown length is compressed whole too.
    let chunked = fetch(port, get("c.test", "/page?n=5000&chunked=1", "zstd")).await;
    assert_eq!(chunked.header("content-encoding"), "zstd");
    assert_eq!(chunked.decoded(), text(5000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compress_leaves_refused_small_excluded_grpc_head_and_encoded_responses_alone() {
    let backend = ShapedBackend::start().await;
    let (_router, port) = start_router(
        "mw-compress-skip",
        &backend.url(),
        &["c.test", "png.test"],
        "    c.test: { compress: {} }\n    png.test: { compress: { excludedContentTypes: [\"image/png\"], minResponseBodyBytes: 100 } }\n",
    );
    let plain = |answer: &support::responses::RawAnswer, n: usize| {
        assert_eq!(answer.header("content-encoding"), "-");
        assert_eq!(answer.body, text(n));
    };

    for refused in ["gzip;q=0, br;q=0, zstd;q=0", "identity", "deflate", ""] {
        let answer = fetch(port, get("c.test", "/page?n=5000", refused)).await;
        plain(&answer, 5000);
        assert_eq!(answer.header("vary"), "-", "{refused:?}");
    }
    // Below minResponseBodyBytes, known or unknown length: sent as is, Vary still set.
    let small = fetch(port, get("c.test", "/page?n=1000", "gzip")).await;
    plain(&small, 1000);
    assert_eq!(small.header("content-length"), "1000");
    assert_eq!(small.header("vary"), "Accept-Encoding");
    plain(
        &fetch(port, get("c.test", "/page?n=1000&chunked=1", "gzip")).await,
        1000,
    );
    // minResponseBodyBytes: 100 on the other router.
    let compressed = fetch(port, get("png.test", "/page?n=200&type=text/html", "gzip")).await;
    assert_eq!(compressed.header("content-encoding"), "gzip");
    plain(
        &fetch(
            port,
            get("png.test", "/page?n=5000&type=image%2Fpng", "gzip"),
        )
        .await,
        5000,
    );

    plain(
        &fetch(
            port,
            get("c.test", "/page?n=5000&type=application%2Fgrpc", "gzip"),
        )
        .await,
        5000,
    );
    let grpc_request = request(
        Method::POST,
        "c.test",
        "/page?n=5000",
        &[
            ("accept-encoding", "gzip"),
            ("content-type", "application/grpc"),
        ],
    );
    plain(&fetch(port, grpc_request).await, 5000);

    let encoded = fetch(
        port,
        get("c.test", "/page?n=5000&encoding=x-custom", "gzip"),
    )
    .await;
    assert_eq!(encoded.header("content-encoding"), "x-custom");
    assert_eq!(encoded.body, text(5000));

    let head = fetch(
        port,
        request(
            Method::HEAD,
            "c.test",
            "/page?n=5000",
            &[("accept-encoding", "gzip")],
        ),
    )
    .await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header("content-encoding"), "-");
    assert_eq!(head.header("content-length"), "5000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compress_streams_server_sent_events_as_they_come() {
    let backend = ShapedBackend::start().await;
    let (_router, port) = start_router(
        "mw-compress-stream",
        &backend.url(),
        &["c.test"],
        "    c.test: { compress: {} }\n",
    );
    let started = Instant::now();
    let response = open(port, get("c.test", "/stream?events=3&pause=1500", "gzip")).await;
    assert_eq!(response.headers()["content-encoding"], "gzip");
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(1400),
        "the first event came after {:?}, not before the second",
        started.elapsed()
    );
    let mut partial = Vec::new();
    let mut decoder = flate2::write::GzDecoder::new(&mut partial);
    decoder.write_all(&first).unwrap();
    decoder.flush().unwrap();
    drop(decoder);
    assert_eq!(partial, b"data: event 0\n\n");
    let rest = body.collect().await.unwrap().to_bytes();
    let whole = [first.as_ref(), rest.as_ref()].concat();
    assert_eq!(
        decode("gzip", &whole),
        b"data: event 0\n\ndata: event 1\n\ndata: event 2\n\n"
    );
}

/// The app and pages backends, with `errors` configured by `options` (YAML flow mapping
/// entries) on router `app.test`, and a plain router `plain.test`.
async fn errors_setup(
    tag: &str,
    options: &str,
    extra_services: &str,
) -> (HttpBackend, HttpBackend, Router, u16) {
    let app = HttpBackend::start("app").await;
    let pages = HttpBackend::start("pages").await;
    let dir = temp_dir(tag);
    let port = free_port();
    let dynamic = format!(
        r#"
http:
  middlewares:
    oops:
      errors: {{ {options} }}
  routers:
    app:
      rule: "Host(`app.test`)"
      service: app
      middlewares: [oops]
    plain:
      rule: "Host(`plain.test`)"
      service: app
  services:
    app: {{ loadBalancer: {{ servers: [{{ url: "{}" }}] }} }}
    pages: {{ loadBalancer: {{ servers: [{{ url: "{}" }}] }} }}
{extra_services}"#,
        app.url(),
        pages.url()
    );
    let router = Router::start(
        &dir,
        &static_config(&dir, &[("web", port)], ""),
        &dynamic,
        &[port],
    );
    (app, pages, router, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_replace_listed_statuses_with_the_page_of_the_error_service() {
    let (_app, pages, _router, port) = errors_setup(
        "mw-errors-pages",
        r#"status: ["500-599", "404"], statusRewrites: { "502-504": 500 }, service: pages, query: "/{status}.html?was={originalStatus}&url={url}""#,
        "",
    )
    .await;
    let mut conn = Conn::h1(port).await;

    let rewritten = conn.get("app.test", "/status/503").await;
    assert_eq!(rewritten.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        rewritten.body,
        "pages /500.html?was=503&url=%2Fstatus%2F503"
    );
    assert_eq!(rewritten.header("x-backend"), "pages");
    assert_eq!(
        rewritten.header("x-seen-host"),
        "app.test",
        "the client's Host goes to the error service"
    );

    let missing = conn.get("app.test", "/status/404").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.body, "pages /404.html?was=404&url=%2Fstatus%2F404");

    let teapot = conn.get("app.test", "/status/418").await;
    assert_eq!(teapot.status, StatusCode::IM_A_TEAPOT);
    assert_eq!(teapot.body, "app /status/418");
    let fine = conn.get("app.test", "/ok").await;
    assert_eq!(fine.status, StatusCode::OK);
    assert_eq!(fine.body, "app /ok");

    assert_eq!(
        pages.seen(),
        [
            "GET /500.html?was=503&url=%2Fstatus%2F503 ",
            "GET /404.html?was=404&url=%2Fstatus%2F404 "
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_keep_the_caught_status_when_the_error_service_fails() {
    let closed = free_port();
    let (_app, _pages, _router, port) = errors_setup(
        "mw-errors-down",
        r#"status: ["500"], service: down, query: "/{status}.html""#,
        &format!("    down: {{ loadBalancer: {{ servers: [{{ url: \"http://127.0.0.1:{closed}\" }}] }} }}\n"),
    )
    .await;
    let mut conn = Conn::h1(port).await;
    let answer = conn.get("app.test", "/status/500").await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(answer.body, "Bad Gateway");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_with_an_unknown_service_leave_only_their_router_unserved() {
    let (_app, _pages, router, port) = errors_setup(
        "mw-errors-unknown",
        r#"status: ["500"], service: nowhere"#,
        "",
    )
    .await;
    let mut conn = Conn::h1(port).await;
    assert_eq!(
        conn.get("app.test", "/status/500").await.status,
        StatusCode::NOT_FOUND
    );
    let plain = conn.get("plain.test", "/status/500").await;
    assert_eq!(plain.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(plain.body, "app /status/500");
    router.wait_log("nowhere");
}
