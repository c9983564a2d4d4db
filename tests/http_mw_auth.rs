//! `forwardAuth` end to end: the real binary on loopback between a hyper client, a real auth
//! server (plaintext and HTTPS, with a client certificate) and a backend, both recording what
//! they receive.

mod support;

use std::time::{Duration, Instant};

use ::http::{Request, Response, StatusCode};
use bytes::Bytes;
use http_body_util::Full;
use support::auth_server::{RecordingServer, Reply, Seen};
use support::web::{Answer, Conn, get};
use support::*;

/// Allows requests with `X-Token: good` (with user headers and cookies), hangs on
/// `/hang…`, redirects `/private…` to a relative login page, and refuses the rest with 401.
fn auth_rules(seen: &Seen) -> Reply {
    let uri = seen.header("x-forwarded-uri");
    if uri.starts_with("/hang") {
        return Reply::Hang;
    }
    let response = if seen.header("x-token") == "good" {
        Response::builder()
            .header("x-auth-user", "alice")
            .header("x-auth-role", "admin")
            .header("x-secret", "kept-by-auth")
            .header("set-cookie", "session=from-auth; Path=/")
            .header("set-cookie", "tracking=1")
            .body(Full::from("ok"))
    } else if uri.starts_with("/private") {
        Response::builder()
            .status(StatusCode::FOUND)
            .header("location", "/login?rd=private")
            .body(Full::from("go log in"))
    } else {
        Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header("www-authenticate", "Bearer realm=\"test\"")
            .header("x-auth-reason", "no token")
            .body(Full::from("no token\n"))
    };
    Reply::Answer(response.expect("auth response"))
}

/// Answers `backend <target> user=<x-auth-user> role=<x-auth-role> body=<body>`, setting
/// its own `session` and `theme` cookies.
fn backend_rules(seen: &Seen) -> Reply {
    let body = format!(
        "backend {} user={} role={} body={}",
        seen.target,
        seen.header("x-auth-user"),
        seen.header("x-auth-role"),
        String::from_utf8_lossy(&seen.body)
    );
    let response = Response::builder()
        .header("set-cookie", "session=from-backend")
        .header("set-cookie", "theme=dark")
        .body(Full::from(body))
        .expect("backend response");
    Reply::Answer(response)
}

struct Setup {
    auth: RecordingServer,
    auth_tls: RecordingServer,
    backend: RecordingServer,
    router: Router,
    port: u16,
}

/// The router with one route per middleware variant, all to the recording backend.
async fn setup(tag: &str) -> Setup {
    let auth = RecordingServer::start(auth_rules).await;
    let backend = RecordingServer::start(backend_rules).await;
    let ca = TestCa::new("auth-ca");
    let server_cert = ca.issue(&["127.0.0.1"]);
    let client_cert = ca.issue(&["sallyport-client"]);
    // The HTTPS auth server wants a client certificate from the same CA.
    let auth_tls = RecordingServer::tls(auth_rules, &server_cert, Some(&ca.cert)).await;
    let dir = temp_dir(tag);
    let (ca_path, _) = ca.cert.write(&dir, "ca");
    let (cert_path, key_path) = client_cert.write(&dir, "client");
    let down = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let port = free_port();
    let dynamic = format!(
        r#"
http:
  routers:
    app: {{ rule: "PathPrefix(`/`)", service: app, middlewares: [auth] }}
    filtered: {{ rule: "PathPrefix(`/filtered`)", service: app, middlewares: [filtered] }}
    body: {{ rule: "PathPrefix(`/body`)", service: app, middlewares: [with-body] }}
    down: {{ rule: "PathPrefix(`/down`)", service: app, middlewares: [down] }}
    signin: {{ rule: "PathPrefix(`/signin`)", service: app, middlewares: [signin] }}
    tls: {{ rule: "PathPrefix(`/tls/ok`)", service: app, middlewares: [tls-ca] }}
    tls-insecure: {{ rule: "PathPrefix(`/tls/insecure`)", service: app, middlewares: [tls-insecure] }}
    tls-no-ca: {{ rule: "PathPrefix(`/tls/no-ca`)", service: app, middlewares: [tls-no-ca] }}
    tls-no-cert: {{ rule: "PathPrefix(`/tls/no-cert`)", service: app, middlewares: [tls-no-cert] }}
  middlewares:
    auth:
      forwardAuth:
        address: "{auth}"
        trustForwardHeader: false
        authResponseHeaders: ["X-Auth-User"]
        authResponseHeadersRegex: "^X-Auth-Ro"
        addAuthCookiesToResponse: ["session"]
    filtered:
      forwardAuth:
        address: "{auth}"
        authRequestHeaders: ["X-Token"]
    with-body:
      forwardAuth:
        address: "{auth}"
        forwardBody: true
        maxBodySize: 16
        preserveRequestMethod: true
    signin:
      forwardAuth:
        address: "{auth}"
        authSigninURL: "https://login.example/start?rd=1"
    down:
      forwardAuth:
        address: "http://{down}/verify"
    tls-ca:
      forwardAuth:
        address: "{auth_tls}"
        authResponseHeaders: ["X-Auth-User"]
        tls: {{ ca: "{ca}", cert: "{cert}", key: "{key}" }}
    tls-insecure:
      forwardAuth:
        address: "{auth_tls}"
        tls: {{ insecureSkipVerify: true, cert: "{cert}", key: "{key}" }}
    tls-no-ca:
      forwardAuth:
        address: "{auth_tls}"
        tls: {{ cert: "{cert}", key: "{key}" }}
    tls-no-cert:
      forwardAuth:
        address: "{auth_tls}"
        tls: {{ ca: "{ca}" }}
  services:
    app: {{ loadBalancer: {{ servers: [{{ url: "{backend}" }}] }} }}
"#,
        auth = auth.url("/verify"),
        auth_tls = auth_tls.url("/verify"),
        backend = backend.url(""),
        ca = ca_path.display(),
        cert = cert_path.display(),
        key = key_path.display(),
    );
    let router = Router::start(
        &dir,
        &static_config(&dir, &[("web", port)], ""),
        &dynamic,
        &[port],
    );
    Setup {
        auth,
        auth_tls,
        backend,
        router,
        port,
    }
}

fn with_headers(path: &str, headers: &[(&'static str, &'static str)]) -> Request<Full<Bytes>> {
    let mut request = get("site.test", path, false);
    for (name, value) in headers {
        request
            .headers_mut()
            .append(*name, value.parse().expect("header value"));
    }
    request
}

fn cookies(answer: &Answer) -> Vec<&str> {
    answer
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap_or("?"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_requests_reach_the_backend_with_the_auth_servers_headers_and_cookies() {
    let s = setup("mw-fwdauth-allow").await;
    let answer = Conn::h1(s.port)
        .await
        .send(with_headers(
            "/app/page?x=1",
            &[
                ("x-token", "good"),
                ("x-auth-user", "mallory"),
                ("x-auth-role", "root"),
                ("x-forwarded-uri", "/forged"),
            ],
        ))
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    // The client's values were replaced by the auth server's; unlisted ones are not copied.
    assert_eq!(
        answer.body,
        "backend /app/page?x=1 user=alice role=admin body="
    );
    assert_eq!(s.backend.last().header("x-secret"), "-");
    // The listed cookie replaces the backend's; the unlisted auth cookie is not added.
    assert_eq!(
        cookies(&answer),
        ["theme=dark", "session=from-auth; Path=/"]
    );

    let auth = s.auth.last();
    assert_eq!(auth.method, "GET");
    assert_eq!(auth.target, "/verify");
    assert_eq!(auth.header("host"), s.auth.addr.to_string());
    assert_eq!(auth.header("x-token"), "good");
    assert_eq!(auth.header("x-forwarded-method"), "GET");
    assert_eq!(auth.header("x-forwarded-proto"), "http");
    assert_eq!(auth.header("x-forwarded-host"), "site.test");
    assert_eq!(auth.header("x-forwarded-uri"), "/app/page?x=1");
    assert_eq!(auth.header("x-forwarded-for"), "127.0.0.1");
    assert_eq!(auth.header("x-forwarded-port"), "80");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_requests_get_the_auth_servers_status_headers_and_body() {
    let s = setup("mw-fwdauth-deny").await;
    let mut conn = Conn::h1(s.port).await;
    let answer = conn.get("site.test", "/app").await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.body, "no token\n");
    assert_eq!(answer.header("www-authenticate"), "Bearer realm=\"test\"");
    assert_eq!(answer.header("x-auth-reason"), "no token");

    // A relative Location is made absolute against the auth server's address.
    let answer = conn.get("site.test", "/private/page").await;
    assert_eq!(answer.status, StatusCode::FOUND);
    assert_eq!(answer.body, "go log in");
    let login = format!("http://{}/login?rd=private", s.auth.addr);
    assert_eq!(answer.header("location"), login);
    assert!(
        s.backend.seen().is_empty(),
        "denied requests never reach the backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_request_headers_and_forward_body_shape_the_auth_request() {
    let s = setup("mw-fwdauth-shape").await;
    let mut conn = Conn::h1(s.port).await;
    let answer = conn
        .send(with_headers(
            "/filtered",
            &[("x-token", "good"), ("cookie", "c=1"), ("x-other", "1")],
        ))
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    let auth = s.auth.last();
    assert_eq!(auth.header("x-token"), "good");
    assert_eq!(
        (auth.header("cookie"), auth.header("x-other")),
        ("-".into(), "-".into())
    );
    assert_eq!(auth.header("x-forwarded-uri"), "/filtered");
    // Without authResponseHeaders nothing is copied, and the client keeps its cookies.
    assert_eq!(answer.body, "backend /filtered user=- role=- body=");

    let post = |body: &'static str| {
        Request::post("/body/upload")
            .header("host", "site.test")
            .header("x-token", "good")
            .body(Full::from(body))
            .expect("request")
    };
    let answer = conn.send(post("hello auth")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.body,
        "backend /body/upload user=- role=- body=hello auth"
    );
    let auth = s.auth.last();
    assert_eq!(auth.method, "POST");
    assert_eq!(auth.body, "hello auth");

    let before = s.backend.seen().len();
    let answer = conn.send(post("seventeen bytes!!")).await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::UNAUTHORIZED, "")
    );
    assert_eq!(s.backend.seen().len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_or_hanging_auth_server_is_a_500() {
    let s = setup("mw-fwdauth-down").await;
    let answer = Conn::h1(s.port).await.get("site.test", "/down").await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::INTERNAL_SERVER_ERROR, "")
    );
    assert!(s.router.log().contains("the auth server gave no answer"));

    // Traefik's 30 s client timeout bounds a silent auth server.
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", s.port))
        .await
        .expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("h1");
    tokio::spawn(conn);
    let started = Instant::now();
    let response = tokio::time::timeout(
        Duration::from_secs(45),
        sender.send_request(get("site.test", "/hang", false)),
    )
    .await
    .expect("an answer before 45 s")
    .expect("response");
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(29), "{waited:?}");
    assert!(s.backend.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_auth_server_is_verified_with_the_tls_options() {
    let s = setup("mw-fwdauth-tls").await;
    let mut conn = Conn::h1(s.port).await;
    let good = [("x-token", "good")];
    let answer = conn.send(with_headers("/tls/ok", &good)).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, "backend /tls/ok user=alice role=- body=");
    let answer = conn.send(with_headers("/tls/insecure", &good)).await;
    assert_eq!(answer.status, StatusCode::OK);
    let asked = s.auth_tls.seen().len();
    assert_eq!(asked, 2);

    // The system roots do not know the test CA; the server requires a client certificate.
    for path in ["/tls/no-ca", "/tls/no-cert"] {
        let answer = conn.send(with_headers(path, &good)).await;
        assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR, "{path}");
    }
    assert_eq!(s.auth_tls.seen().len(), asked);
}
