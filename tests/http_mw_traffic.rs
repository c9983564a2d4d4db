//! The traffic middlewares end to end: the real binary on loopback between a hyper client
//! and real backends — `buffering` limits both ways and its `retryExpression`, `retry` onto another server of the
//! service (network errors, listed statuses, methods), `circuitBreaker` opening on network
//! errors.

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffering_retry_expression_sends_the_post_again_to_the_live_server() {
    let live = HttpBackend::start("live").await;
    let dead = free_port();
    let dir = temp_dir("mw-traffic-buffering-retry");
    let port = free_port();
    let dynamic = format!(
        r#"
http:
  middlewares:
    buffer:
      buffering:
        retryExpression: "IsNetworkError() && Attempts() < 2"
  routers:
    api:
      rule: "Host(`api.test`)"
      service: api
      middlewares: [buffer]
  services:
    api: {{ loadBalancer: {{ servers: [{{ url: "http://127.0.0.1:{dead}" }}, {{ url: "{}" }}] }} }}
"#,
        live.url()
    );
    let _router = Router::start(
        &dir,
        &static_config(&dir, &[("web", port)], ""),
        &dynamic,
        &[port],
    );
    let mut conn = Conn::h1(port).await;
    for _ in 0..4 {
        let answer = conn.send(post("api.test", "/echo", "payload")).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.body, "payload");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_moves_idempotent_requests_off_a_dead_server_and_posts_only_when_asked() {
    let live = HttpBackend::start("live").await;
    let dead = free_port();
    let dir = temp_dir("mw-traffic-retry");
    let port = free_port();
    let servers = format!(
        r#"{{ loadBalancer: {{ servers: [{{ url: "http://127.0.0.1:{dead}" }}, {{ url: "{}" }}] }} }}"#,
        live.url()
    );
    let dynamic = format!(
        r#"
http:
  middlewares:
    retry:
      retry: {{ attempts: 2, initialInterval: 10ms }}
    retry-all:
      retry: {{ attempts: 2, retryNonIdempotentMethod: true }}
  routers:
    gets:
      rule: "Host(`gets.test`)"
      service: gets
      middlewares: [retry]
    posts:
      rule: "Host(`posts.test`)"
      service: posts
      middlewares: [retry]
    posts-all:
      rule: "Host(`all.test`)"
      service: all
      middlewares: [retry-all]
  services:
    gets: {servers}
    posts: {servers}
    all: {servers}
"#
    );
    let _router = Router::start(
        &dir,
        &static_config(&dir, &[("web", port)], ""),
        &dynamic,
        &[port],
    );
    let mut conn = Conn::h1(port).await;
    for _ in 0..6 {
        let answer = conn.get("gets.test", "/").await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        assert_eq!(answer.body, "live /");
    }
    assert_eq!(live.requests(), 6);

    // Round robin over two servers: of two POSTs, one goes to the dead server.
    let mut statuses = Vec::new();
    for _ in 0..2 {
        statuses.push(conn.send(post("posts.test", "/echo", "once")).await.status);
    }
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::BAD_GATEWAY]);

    for _ in 0..2 {
        let answer = conn.send(post("all.test", "/echo", "payload")).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.body, "payload", "the body is sent again whole");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_on_a_listed_status_reaches_the_healthy_server() {
    let failing = HttpBackend::start("failing").await;
    failing.force_status(Some(503));
    let healthy = HttpBackend::start("healthy").await;
    let dir = temp_dir("mw-traffic-retry-status");
    let port = free_port();
    let servers = format!(
        r#"{{ loadBalancer: {{ servers: [{{ url: "{}" }}, {{ url: "{}" }}] }} }}"#,
        failing.url(),
        healthy.url()
    );
    let dynamic = format!(
        r#"
http:
  middlewares:
    on-5xx:
      retry: {{ attempts: 3, status: ["500-599"] }}
    network-only:
      retry: {{ attempts: 3 }}
  routers:
    listed:
      rule: "Host(`listed.test`)"
      service: listed
      middlewares: [on-5xx]
    unlisted:
      rule: "Host(`unlisted.test`)"
      service: unlisted
      middlewares: [network-only]
  services:
    listed: {servers}
    unlisted: {servers}
"#
    );
    let _router = Router::start(
        &dir,
        &static_config(&dir, &[("web", port)], ""),
        &dynamic,
        &[port],
    );
    let mut conn = Conn::h1(port).await;
    for _ in 0..4 {
        let answer = conn.get("listed.test", "/").await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.body, "healthy /");
    }
    let mut statuses = Vec::new();
    for _ in 0..2 {
        statuses.push(conn.get("unlisted.test", "/").await.status);
    }
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::SERVICE_UNAVAILABLE],
        "a server's 503 is its answer unless listed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breaker_answers_the_fallback_once_network_errors_dominate() {
    let live = HttpBackend::start("live").await;
    let dead = free_port();
    let dir = temp_dir("mw-traffic-breaker");
    let port = free_port();
    let dynamic = format!(
        r#"
http:
  middlewares:
    breaker:
      circuitBreaker:
        expression: "NetworkErrorRatio() > 0.5 || ResponseCodeRatio(500, 600, 0, 600) > 0.5"
        responseCode: 429
  routers:
    dead:
      rule: "Host(`dead.test`)"
      service: dead
      middlewares: [breaker]
    live:
      rule: "Host(`live.test`)"
      service: live
      middlewares: [breaker]
  services:
    dead: {{ loadBalancer: {{ servers: [{{ url: "http://127.0.0.1:{dead}" }}] }} }}
    live: {{ loadBalancer: {{ servers: [{{ url: "{}" }}] }} }}
"#,
        live.url()
    );
    let _router = Router::start(
        &dir,
        &static_config(&dir, &[("web", port)], ""),
        &dynamic,
        &[port],
    );
    let mut conn = Conn::h1(port).await;
    let first = conn.get("dead.test", "/").await;
    assert_eq!(first.status, StatusCode::BAD_GATEWAY);
    for _ in 0..3 {
        let open = conn.get("dead.test", "/").await;
        assert_eq!(open.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(open.body, "Too Many Requests");
    }
    // Each router has its own breaker: the live one stays closed.
    for _ in 0..3 {
        let answer = conn.get("live.test", "/").await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    assert_eq!(live.requests(), 3);
}
