//! The traffic middlewares end to end: the real binary on loopback between a hyper client
//! and real backends — `buffering` limits both ways.

mod support;

use ::http::{Method, Request, StatusCode};
use bytes::Bytes;
use http_body_util::Full;
use support::web::{Conn, HttpBackend};
use support::*;

fn post(host: &str, path: &str, body: &'static str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(Method::POST)
        .uri(path)
        .header("host", host)
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffering_refuses_large_requests_and_responses_and_forwards_the_rest() {
    let backend = HttpBackend::start("api").await;
    let dir = temp_dir("mw-traffic-buffering");
    let port = free_port();
    let dynamic = format!(
        r#"
http:
  middlewares:
    buffer:
      buffering:
        maxRequestBodyBytes: 8
        maxResponseBodyBytes: 10
  routers:
    api:
      rule: "Host(`api.test`)"
      service: api
      middlewares: [buffer]
  services:
    api: {{ loadBalancer: {{ servers: [{{ url: "{}" }}] }} }}
"#,
        backend.url()
    );
    let _router = Router::start(
        &dir,
        &static_config(&dir, &[("web", port)], ""),
        &dynamic,
        &[port],
    );
    let mut conn = Conn::h1(port).await;

    let echoed = conn.send(post("api.test", "/echo", "12345678")).await;
    assert_eq!(echoed.status, StatusCode::OK);
    assert_eq!(echoed.body, "12345678");
    assert_eq!(echoed.header("content-length"), "8");

    let too_large = conn.send(post("api.test", "/echo", "123456789")).await;
    assert_eq!(too_large.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(too_large.body, "Request Entity Too Large");
    assert_eq!(
        backend.requests(),
        1,
        "a refused body never reaches the backend"
    );

    // The backend answers `api <path>`: 7 bytes fit in 10, 13 do not.
    let mut conn = Conn::h1(port).await;
    let fits = conn.get("api.test", "/ab").await;
    assert_eq!(fits.status, StatusCode::OK);
    assert_eq!(fits.body, "api /ab");
    let long = conn.get("api.test", "/abcdefgh").await;
    assert_eq!(long.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(long.body, "Internal Server Error");
}
