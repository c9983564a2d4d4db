//! The `headers` middleware end to end: the real binary on loopback between a hyper client
//! and real backends — custom headers both ways, CORS preflight answered at the edge, STS on
//! TLS only, `allowedHosts`, and a value with CR/LF refused at load time.

mod support;

use ::http::{Method, Request, StatusCode};
use bytes::Bytes;
use http_body_util::Full;
use support::web::{Conn, HttpBackend, get};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A bare HTTP/1.1 backend that answers every request with its head (lowercased) as the
/// body, so that a test sees every header the router sent, plus an `x-backend-note`
/// response header for the router to remove.
struct HeadEcho {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HeadEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HeadEcho {
    async fn start() -> HeadEcho {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut pending = Vec::new();
                    let mut buf = [0u8; 4096];
                    loop {
                        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head: Vec<u8> = pending.drain(..end + 4).collect();
                            let body = String::from_utf8_lossy(&head).to_lowercase();
                            let answer = format!(
                                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-backend-note: internal\r\n\r\n{body}",
                                body.len()
                            );
                            if stream.write_all(answer.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => pending.extend_from_slice(&buf[..n]),
                        }
                    }
                });
            }
        });
        HeadEcho { port, task }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

fn request(method: Method, host: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut builder = Request::builder()
        .method(method)
        .uri("/r")
        .header("host", host);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::default()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_headers_are_set_and_deleted_both_ways_error_responses_included() {
    let backend = HeadEcho::start().await;
    let dead = free_port();
    let dir = temp_dir("mw-headers-custom");
    let port = free_port();
    let dynamic = format!(
        r#"
http:
  middlewares:
    custom:
      headers:
        customRequestHeaders: {{ X-Custom: hello, X-Remove: "" }}
        customResponseHeaders: {{ X-Edge: sallyport, X-Backend-Note: "" }}
  routers:
    live:
      rule: "Host(`live.test`)"
      service: live
      middlewares: [custom]
    dead:
      rule: "Host(`dead.test`)"
      service: dead
      middlewares: [custom]
  services:
    live: {{ loadBalancer: {{ servers: [{{ url: "{}" }}] }} }}
    dead: {{ loadBalancer: {{ servers: [{{ url: "http://127.0.0.1:{dead}" }}] }} }}
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
    let answer = conn
        .send(request(
            Method::GET,
            "live.test",
            &[("x-remove", "secret"), ("x-custom", "client")],
        ))
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(
        answer.body.contains("x-custom: hello\r\n"),
        "{}",
        answer.body
    );
    assert!(!answer.body.contains("client"), "{}", answer.body);
    assert!(!answer.body.contains("x-remove"), "{}", answer.body);
    assert_eq!(answer.header("x-edge"), "sallyport");
    assert_eq!(answer.header("x-backend-note"), "-");

    let failed = conn.get("dead.test", "/").await;
    assert_eq!(failed.status, StatusCode::BAD_GATEWAY);
    assert_eq!(failed.header("x-edge"), "sallyport");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_is_answered_at_the_edge_and_simple_requests_get_their_origin() {
    let backend = HttpBackend::start("api").await;
    let dir = temp_dir("mw-headers-cors");
    let port = free_port();
    let dynamic = format!(
        r#"
http:
  middlewares:
    cors:
      headers:
        accessControlAllowMethods: [GET, PUT]
        accessControlAllowHeaders: [X-Token]
        accessControlAllowOriginList: ["https://app.test"]
        accessControlAllowOriginListRegex: ["^https://[a-z]+\\.partner\\.test$"]
        accessControlMaxAge: 100
        accessControlExposeHeaders: [X-Backend]
        addVaryHeader: true
  routers:
    api:
      rule: "Host(`api.test`)"
      service: api
      middlewares: [cors]
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
    let preflight = conn
        .send(request(
            Method::OPTIONS,
            "api.test",
            &[
                ("origin", "https://app.test"),
                ("access-control-request-method", "PUT"),
            ],
        ))
        .await;
    assert_eq!(preflight.status, StatusCode::OK);
    assert_eq!(preflight.body, "");
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        "https://app.test"
    );
    assert_eq!(preflight.header("access-control-allow-methods"), "GET,PUT");
    assert_eq!(preflight.header("access-control-allow-headers"), "X-Token");
    assert_eq!(preflight.header("access-control-max-age"), "100");
    assert_eq!(
        backend.requests(),
        0,
        "a preflight never reaches the backend"
    );

    let simple = conn
        .send(request(
            Method::GET,
            "api.test",
            &[("origin", "https://eu.partner.test")],
        ))
        .await;
    assert_eq!(simple.body, "api /r");
    assert_eq!(
        simple.header("access-control-allow-origin"),
        "https://eu.partner.test"
    );
    assert_eq!(simple.header("access-control-expose-headers"), "X-Backend");
    assert_eq!(simple.header("vary"), "Origin");
    let stranger = conn
        .send(request(
            Method::GET,
            "api.test",
            &[("origin", "https://evil.test")],
        ))
        .await;
    assert_eq!(stranger.header("access-control-allow-origin"), "-");
    assert_eq!(backend.requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sts_is_sent_over_tls_only_and_unlisted_hosts_get_bad_host() {
    let backend = HttpBackend::start("site").await;
    let dir = temp_dir("mw-headers-secure");
    let cert = TestCert::new(&["a.test", "b.test"]);
    let (crt, key) = cert.write(&dir, "ab");
    let (web, secure) = (free_port(), free_port());
    let dynamic = format!(
        r#"
http:
  middlewares:
    secure:
      headers:
        stsSeconds: 3600
        stsIncludeSubdomains: true
        frameDeny: true
        contentTypeNosniff: true
        allowedHosts: [a.test]
  routers:
    plain:
      rule: "Host(`a.test`) || Host(`b.test`)"
      entryPoints: [web]
      service: site
      middlewares: [secure]
    tls:
      rule: "Host(`a.test`) || Host(`b.test`)"
      entryPoints: [websecure]
      service: site
      middlewares: [secure]
      tls: {{}}
  services:
    site: {{ loadBalancer: {{ servers: [{{ url: "{}" }}] }} }}
tls:
  certificates:
    - certFile: "{}"
      keyFile: "{}"
"#,
        backend.url(),
        crt.display(),
        key.display()
    );
    let _router = Router::start(
        &dir,
        &static_config(&dir, &[("web", web), ("websecure", secure)], ""),
        &dynamic,
        &[web, secure],
    );
    let plain = Conn::h1(web).await.get("a.test", "/").await;
    assert_eq!(plain.status, StatusCode::OK);
    assert_eq!(plain.header("strict-transport-security"), "-");
    assert_eq!(plain.header("x-frame-options"), "DENY");
    assert_eq!(plain.header("x-content-type-options"), "nosniff");

    let mut tls = Conn::tls(secure, "a.test", &cert, &["h2", "http/1.1"]).await;
    let answer = tls.get("a.test", "/").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.header("strict-transport-security"),
        "max-age=3600; includeSubDomains"
    );

    let before = backend.requests();
    let mut conn = Conn::h1(web).await;
    let bad = conn.send(get("b.test", "/", false)).await;
    assert_eq!(
        (bad.status, bad.body.as_str()),
        (StatusCode::BAD_REQUEST, "Bad Host\n")
    );
    assert_eq!(backend.requests(), before, "a bad host is not forwarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_value_with_crlf_is_refused_and_only_its_router_is_not_served() {
    let backend = HttpBackend::start("ok").await;
    let dir = temp_dir("mw-headers-invalid");
    let port = free_port();
    let dynamic = format!(
        r#"
http:
  middlewares:
    injected:
      headers:
        customResponseHeaders: {{ X-A: "v\r\nSet-Cookie: stolen=1" }}
  routers:
    broken:
      rule: "Host(`broken.test`)"
      service: ok
      middlewares: [injected]
    fine:
      rule: "Host(`fine.test`)"
      service: ok
  services:
    ok: {{ loadBalancer: {{ servers: [{{ url: "{}" }}] }} }}
"#,
        backend.url()
    );
    let router = Router::start(
        &dir,
        &static_config(&dir, &[("web", port)], ""),
        &dynamic,
        &[port],
    );
    let mut conn = Conn::h1(port).await;
    let broken = conn.get("broken.test", "/").await;
    assert_eq!(broken.status, StatusCode::NOT_FOUND);
    assert!(broken.headers.get("set-cookie").is_none());
    assert_eq!(conn.get("fine.test", "/").await.body, "ok /");
    router.wait_log("customResponseHeaders");
}
