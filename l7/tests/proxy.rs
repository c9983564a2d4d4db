//! The HTTP path over loopback: a real hyper client talks to an `l7::server::HttpEntrypoint`
//! serving an accepted TCP connection, whose routes forward through `l7::service` load
//! balancers and `l7::transport` leaves to real hyper backends.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body_util::channel::Channel;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use l4::tcp::dispatch::HttpConn;
use l7::balance::Edf;
use l7::handler::SharedHandler;
use l7::router::{Route, Table};
use l7::rule::HttpRule;
use l7::server::{EntrypointConfig, HttpEntrypoint, HttpRoutes, RouteTarget};
use l7::service::{LbState, LoadBalancer, LoadBalancerSpec, ServerSpec};
use l7::transport::{ServerOptions, Transport, TransportSettings};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Aborts a spawned server when the test ends.
struct Task(JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A hyper backend (HTTP/1.1 and h2c) that answers with its name and what it received:
/// `/echo...` streams the request body back, `/hop...` adds hop-by-hop response headers,
/// anything else reports the request in `x-seen-*` headers.
async fn start_backend(name: &'static str) -> (SocketAddr, Task) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = service_fn(move |req| async move {
                    Ok::<_, Infallible>(backend_response(name, req))
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, Task(task))
}

fn backend_response(name: &str, req: Request<Incoming>) -> Response<BoxBody<Bytes, hyper::Error>> {
    let path = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("");
    if path.starts_with("/echo") {
        return Response::new(req.into_body().boxed());
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
    let mut response = Response::builder()
        .header("x-backend", name)
        .header("x-seen-path", path)
        .header("x-seen-host", host)
        .header("x-seen-version", format!("{:?}", req.version()))
        .header("x-seen-xff", seen("x-forwarded-for"))
        .header("x-seen-xfh", seen("x-forwarded-host"))
        .header("x-seen-xfp", seen("x-forwarded-proto"))
        .header("x-seen-private", seen("x-client-private"))
        .header("x-seen-connection", seen("connection"));
    if path.starts_with("/hop") {
        response = response
            .header("connection", "x-upstream-private")
            .header("x-upstream-private", "1")
            .header("keep-alive", "timeout=5")
            .header("x-end-to-end", "1");
    }
    let body = Full::new(Bytes::from(format!("{name} {path}")))
        .map_err(|never| match never {})
        .boxed();
    response.body(body).unwrap()
}

/// The proxy on an ephemeral port, with a count of the connections it accepted.
struct RunningProxy {
    addr: SocketAddr,
    entrypoint: HttpEntrypoint,
    accepted: Arc<AtomicUsize>,
    _task: Task,
}

fn routes(table: Table<RouteTarget>) -> Arc<HttpRoutes> {
    Arc::new(HttpRoutes {
        plain: table,
        tls: Table::new(Vec::new()),
    })
}

async fn start_proxy(table: Table<RouteTarget>, config: EntrypointConfig) -> RunningProxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let entrypoint = HttpEntrypoint::new(config);
    entrypoint.set_routes(routes(table));
    let proxy = entrypoint.clone();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            let proxy = proxy.clone();
            let conn = HttpConn {
                client: peer,
                local: addr,
                sni: None,
                tls_option: None,
                peer_certificates: None,
            };
            tokio::spawn(async move { proxy.serve(stream, conn).await });
        }
    });
    RunningProxy {
        addr,
        entrypoint,
        accepted,
        _task: Task(task),
    }
}

fn service(servers: &[(SocketAddr, i64)], pass_host_header: bool) -> SharedHandler {
    service_urls(
        &servers
            .iter()
            .map(|(addr, weight)| (format!("http://{addr}"), *weight))
            .collect::<Vec<_>>(),
        pass_host_header,
    )
}

fn service_urls(servers: &[(String, i64)], pass_host_header: bool) -> SharedHandler {
    service_with(servers, pass_host_header, TransportSettings::default())
}

fn service_with(
    servers: &[(String, i64)],
    pass_host_header: bool,
    settings: TransportSettings,
) -> SharedHandler {
    let transport = Transport::new(settings).unwrap();
    let options = ServerOptions {
        pass_host_header,
        preserve_path: false,
    };
    let leaves: Vec<SharedHandler> = servers
        .iter()
        .map(|(url, _)| Arc::new(transport.server(url, options).unwrap()) as SharedHandler)
        .collect();
    let spec = LoadBalancerSpec {
        servers: servers
            .iter()
            .map(|(url, weight)| ServerSpec {
                weight: *weight,
                ..ServerSpec::new(url.clone())
            })
            .collect(),
        ..LoadBalancerSpec::default()
    };
    let state = LbState::new("s", spec, None).unwrap();
    Arc::new(LoadBalancer::new(state, leaves).unwrap())
}

fn route(name: &str, rule: &str, target: SharedHandler) -> Route<RouteTarget> {
    let rule = HttpRule::compile(rule).unwrap();
    Route {
        name: name.to_owned(),
        priority: rule.default_priority(),
        precedence: 0,
        rule,
        target: RouteTarget {
            router: Arc::from(name),
            service: None,
            handler: target,
            tls_option: None,
            retirement: Default::default(),
        },
    }
}

fn h1_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// One h2c (prior knowledge) connection, so that requests can carry any `:authority`.
async fn h2c_connection(addr: SocketAddr) -> http2::SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}

/// One HTTP/1.1 keep-alive connection.
async fn h1_connection(addr: SocketAddr) -> http1::SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    sender
}

struct Answer {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("-")
    }
}

async fn send(client: &Client<HttpConnector, Full<Bytes>>, req: Request<Full<Bytes>>) -> Answer {
    read(client.request(req).await.unwrap()).await
}

async fn read(response: Response<Incoming>) -> Answer {
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Answer {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

fn get(proxy: SocketAddr, host: &str, path: &str) -> Request<Full<Bytes>> {
    Request::get(format!("http://{proxy}{path}"))
        .header("host", host)
        .body(Full::default())
        .unwrap()
}

#[tokio::test]
async fn routes_by_host_and_path_prefix_and_answers_404_otherwise() {
    let (a, _a) = start_backend("a").await;
    let (b, _b) = start_backend("b").await;
    let table = Table::new(vec![
        route("site", "Host(`site.test`)", service(&[(a, 1)], true)),
        route(
            "api",
            "Host(`site.test`) && PathPrefix(`/api`)",
            service(&[(b, 1)], true),
        ),
    ]);
    let proxy = start_proxy(table, EntrypointConfig::new("web")).await;
    let client = h1_client();

    let home = send(&client, get(proxy.addr, "site.test", "/index")).await;
    assert_eq!(
        (home.status, home.body.as_str()),
        (StatusCode::OK, "a /index")
    );
    let api = send(&client, get(proxy.addr, "site.test", "/api/users")).await;
    assert_eq!(api.body, "b /api/users");
    let other = send(&client, get(proxy.addr, "other.test", "/api/users")).await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
    assert_eq!(other.body, "404 page not found\n");
}

#[tokio::test]
async fn forwards_path_query_and_forwarded_headers_with_client_host() {
    let (a, _a) = start_backend("a").await;
    let table = Table::new(vec![route(
        "site",
        "Host(`site.test`)",
        service(&[(a, 1)], true),
    )]);
    let proxy = start_proxy(table, EntrypointConfig::new("web")).await;

    let answer = send(
        &h1_client(),
        get(proxy.addr, "site.test:8080", "/a/b%20c?x=1&y=two"),
    )
    .await;
    assert_eq!(answer.header("x-seen-path"), "/a/b%20c?x=1&y=two");
    assert_eq!(answer.header("x-seen-host"), "site.test:8080");
    assert_eq!(answer.header("x-seen-xff"), "127.0.0.1");
    assert_eq!(answer.header("x-seen-xfh"), "site.test:8080");
    assert_eq!(answer.header("x-seen-xfp"), "http");
    assert_eq!(answer.header("x-seen-version"), "HTTP/1.1");
}

#[tokio::test]
async fn sends_the_server_authority_as_host_without_pass_host_header() {
    let (a, _a) = start_backend("a").await;
    let table = Table::new(vec![route(
        "site",
        "Host(`site.test`)",
        service(&[(a, 1)], false),
    )]);
    let proxy = start_proxy(table, EntrypointConfig::new("web")).await;

    let answer = send(&h1_client(), get(proxy.addr, "site.test", "/")).await;
    assert_eq!(answer.header("x-seen-host"), a.to_string());
    assert_eq!(answer.header("x-seen-xfh"), "site.test");
}

#[tokio::test]
async fn strips_hop_by_hop_headers_both_ways() {
    let (a, _a) = start_backend("a").await;
    let table = Table::new(vec![route(
        "all",
        "PathPrefix(`/`)",
        service(&[(a, 1)], true),
    )]);
    let proxy = start_proxy(table, EntrypointConfig::new("web")).await;

    let request = Request::get(format!("http://{}/hop", proxy.addr))
        .header("connection", "x-client-private")
        .header("x-client-private", "secret")
        .body(Full::default())
        .unwrap();
    let answer = send(&h1_client(), request).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("x-seen-private"), "-");
    assert_eq!(answer.header("x-seen-connection"), "-");
    assert_eq!(answer.header("x-upstream-private"), "-");
    assert_eq!(answer.header("keep-alive"), "-");
    assert_eq!(answer.header("x-end-to-end"), "1");
}

#[tokio::test]
async fn serves_h2c_clients_and_h2c_upstreams() {
    let (a, _a) = start_backend("a").await;
    let (b, _b) = start_backend("b").await;
    let table = Table::new(vec![
        route("h1", "Host(`h1.test`)", service(&[(a, 1)], true)),
        route(
            "h2c",
            "Host(`h2c.test`)",
            service_urls(&[(format!("h2c://{b}"), 1)], true),
        ),
    ]);
    let proxy = start_proxy(table, EntrypointConfig::new("web")).await;
    let mut client = h2c_connection(proxy.addr).await;

    // An HTTP/2 request carries its host as `:authority`.
    let to_h1 = Request::get("http://h1.test/x?q=1")
        .body(Full::default())
        .unwrap();
    let answer = read(client.send_request(to_h1).await.unwrap()).await;
    assert_eq!(answer.version, Version::HTTP_2);
    assert_eq!(answer.body, "a /x?q=1");
    assert_eq!(answer.header("x-seen-version"), "HTTP/1.1");
    assert_eq!(answer.header("x-seen-host"), "h1.test");
    assert_eq!(answer.header("x-seen-xfh"), "h1.test");

    let to_h2c = Request::get("http://h2c.test/y")
        .body(Full::default())
        .unwrap();
    let answer = read(client.send_request(to_h2c).await.unwrap()).await;
    assert_eq!(answer.body, "b /y");
    assert_eq!(answer.header("x-seen-version"), "HTTP/2.0");

    let nowhere = Request::get("http://none.test/")
        .body(Full::default())
        .unwrap();
    let answer = read(client.send_request(nowhere).await.unwrap()).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.body, "404 page not found\n");
}

#[tokio::test]
async fn answers_502_when_the_upstream_refuses_connections() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = closed.local_addr().unwrap();
    drop(closed);
    let table = Table::new(vec![route(
        "all",
        "PathPrefix(`/`)",
        service(&[(dead, 1)], true),
    )]);
    let proxy = start_proxy(table, EntrypointConfig::new("web")).await;

    let answer = send(&h1_client(), get(proxy.addr, "site.test", "/")).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(answer.body, "Bad Gateway");
}

#[tokio::test]
async fn answers_504_when_the_upstream_sends_no_headers_in_time() {
    // Accepts connections and never answers on them.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let _silent = Task(tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    }));
    let config = TransportSettings {
        response_header_timeout: Some(Duration::from_millis(200)),
        ..TransportSettings::default()
    };
    let table = Table::new(vec![route(
        "all",
        "PathPrefix(`/`)",
        service_with(&[(format!("http://{addr}"), 1)], true, config),
    )]);
    let proxy = start_proxy(table, EntrypointConfig::new("web")).await;

    let answer = tokio::time::timeout(
        Duration::from_secs(5),
        send(&h1_client(), get(proxy.addr, "site.test", "/")),
    )
    .await
    .unwrap();
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(answer.body, "Gateway Timeout");
}

#[tokio::test]
async fn balances_3_to_1_in_edf_order() {
    let (a, _a) = start_backend("A").await;
    let (b, _b) = start_backend("B").await;
    let table = Table::new(vec![route(
        "all",
        "PathPrefix(`/`)",
        service(&[(a, 3), (b, 1)], true),
    )]);
    let proxy = start_proxy(table, EntrypointConfig::new("web")).await;
    let client = h1_client();

    let mut order = String::new();
    for _ in 0..8 {
        let answer = send(&client, get(proxy.addr, "site.test", "/")).await;
        order.push_str(answer.header("x-backend"));
    }
    let edf = Edf::new();
    edf.add("A", 3);
    edf.add("B", 1);
    let expected: String = (0..8).filter_map(|_| edf.next()).collect();
    assert_eq!(order, expected);
    assert_eq!(order.matches('B').count(), 2);
}

#[tokio::test]
async fn streams_request_and_response_bodies() {
    let (a, _a) = start_backend("a").await;
    let table = Table::new(vec![route(
        "all",
        "PathPrefix(`/`)",
        service(&[(a, 1)], true),
    )]);
    let proxy = start_proxy(table, EntrypointConfig::new("web")).await;

    // 1 MiB in one go comes back intact.
    let payload: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    let request = Request::post(format!("http://{}/echo", proxy.addr))
        .body(Full::new(Bytes::from(payload.clone())))
        .unwrap();
    let response = h1_client().request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let echoed = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(echoed.len(), payload.len());
    assert!(echoed == payload);

    // The first chunk comes back while the request body is still open: nothing is buffered.
    let (mut feed, body) = Channel::<Bytes, Infallible>::new(1);
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await.unwrap();
    let _connection = Task(tokio::spawn(async move {
        let _ = connection.await;
    }));
    let request = Request::post("/echo")
        .header("host", "site.test")
        .body(body)
        .unwrap();
    let pending = tokio::spawn(sender.send_request(request));
    feed.send_data(Bytes::from_static(b"first")).await.unwrap();
    let mut response = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), response.body_mut().frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), Bytes::from_static(b"first"));
    feed.send_data(Bytes::from_static(b"second")).await.unwrap();
    drop(feed);
    let rest = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(rest, Bytes::from_static(b"second"));
}

#[tokio::test]
async fn a_keep_alive_connection_follows_a_table_swap() {
    let (a, _a) = start_backend("a").await;
    let (b, _b) = start_backend("b").await;
    let table = Table::new(vec![route(
        "site",
        "Host(`site.test`)",
        service(&[(a, 1)], true),
    )]);
    let proxy = start_proxy(table, EntrypointConfig::new("web")).await;
    let mut connection = h1_connection(proxy.addr).await;

    let before = read(
        connection
            .send_request(get_origin("site.test", "/"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(before.body, "a /");
    proxy.entrypoint.set_routes(routes(Table::new(vec![route(
        "site",
        "Host(`site.test`)",
        service(&[(b, 1)], true),
    )])));
    connection.ready().await.unwrap();
    let after = read(
        connection
            .send_request(get_origin("site.test", "/"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(after.body, "b /");
    assert_eq!(proxy.accepted.load(Ordering::SeqCst), 1);
}

fn get_origin(host: &str, path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", host)
        .body(Full::default())
        .unwrap()
}

#[tokio::test]
async fn refuses_request_headers_over_the_configured_size() {
    let (a, _a) = start_backend("a").await;
    let table = Table::new(vec![route(
        "all",
        "PathPrefix(`/`)",
        service(&[(a, 1)], true),
    )]);
    let config = EntrypointConfig {
        max_header_bytes: 16 << 10,
        ..EntrypointConfig::new("web")
    };
    let proxy = start_proxy(table, config).await;
    let client = h1_client();

    let mut small = get(proxy.addr, "site.test", "/");
    small
        .headers_mut()
        .insert("x-big", "b".repeat(4 << 10).parse().unwrap());
    assert_eq!(send(&client, small).await.status, StatusCode::OK);

    let mut large = get(proxy.addr, "site.test", "/");
    large
        .headers_mut()
        .insert("x-big", "b".repeat(32 << 10).parse().unwrap());
    let answer = send(&client, large).await;
    assert_eq!(answer.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
}

/// Whether the client's connection ends within `limit`.
async fn closed_within(sender: &http1::SendRequest<Full<Bytes>>, limit: Duration) -> bool {
    let start = tokio::time::Instant::now();
    while start.elapsed() < limit {
        if sender.is_closed() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// After a hand-over to another process, an idle keep-alive HTTP/1.1 connection is not cut
/// under a request on its way: the request is answered with `Connection: close`, then the
/// connection ends.
#[tokio::test]
async fn a_handed_over_http1_connection_answers_its_next_request_then_closes() {
    let (a, _a) = start_backend("a").await;
    let table = Table::new(vec![route(
        "site",
        "Host(`site.test`)",
        service(&[(a, 1)], true),
    )]);
    let proxy = start_proxy(table, EntrypointConfig::new("web")).await;
    let mut sender = h1_connection(proxy.addr).await;
    let first = read(
        sender
            .send_request(get_origin("site.test", "/one"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (first.status, first.header("connection")),
        (StatusCode::OK, "-")
    );

    proxy.entrypoint.hand_over();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = read(
        sender
            .send_request(get_origin("site.test", "/two"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (second.status, second.body.as_str()),
        (StatusCode::OK, "a /two")
    );
    assert_eq!(second.header("connection"), "close");
    assert!(
        closed_within(&sender, Duration::from_secs(2)).await,
        "the connection closes after the answer"
    );
}

/// Shut down instead (nothing else serves), the same idle connection closes at once.
#[tokio::test]
async fn a_shut_down_idle_http1_connection_closes_at_once() {
    let (a, _a) = start_backend("a").await;
    let table = Table::new(vec![route(
        "site",
        "Host(`site.test`)",
        service(&[(a, 1)], true),
    )]);
    let proxy = start_proxy(table, EntrypointConfig::new("web")).await;
    let mut sender = h1_connection(proxy.addr).await;
    read(
        sender
            .send_request(get_origin("site.test", "/one"))
            .await
            .unwrap(),
    )
    .await;
    proxy.entrypoint.shutdown();
    assert!(
        closed_within(&sender, Duration::from_millis(500)).await,
        "closed without waiting for a request"
    );
}
