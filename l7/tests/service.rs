//! `l7::service` over loopback: active health checks probing real hyper backends (HTTP and
//! gRPC health over h2c) through a hyper-util client [`Prober`], taking servers out and back
//! in, propagating to a parent, and stopping when their state is dropped.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use l7::error::ProxyErrorKind;
use l7::handler::{Body, BoxError, BoxFuture, Handler, SharedHandler, empty_body, error_response};
use l7::service::{
    Child, Failover, FailoverSpec, HealthCheckMode, HealthCheckSpec, LbState, LoadBalancer,
    LoadBalancerSpec, Prober, ServerSpec, ServiceStates,
};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

const LIMIT: Duration = Duration::from_secs(5);

/// Aborts a spawned server when the test ends.
struct Task(JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

type TestBody = BoxBody<Bytes, Infallible>;

/// Serves every accepted connection with `answer` (HTTP/1.1 and h2c).
async fn serve<F>(answer: F) -> (SocketAddr, Task)
where
    F: Fn(Request<Incoming>) -> Response<TestBody> + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answer = Arc::new(answer);
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let answer = answer.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let answer = answer.clone();
                    async move { Ok::<_, Infallible>(answer(req)) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, Task(task))
}

fn text(status: StatusCode, body: &'static str) -> Response<TestBody> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())).boxed());
    *response.status_mut() = status;
    response
}

/// A backend named `name` whose `/health` answers 200 while `healthy`, else 500, and counts
/// its probes.
struct Backend {
    addr: SocketAddr,
    healthy: Arc<AtomicBool>,
    probes: Arc<AtomicUsize>,
    _task: Task,
}

async fn backend(name: &'static str) -> Backend {
    let healthy = Arc::new(AtomicBool::new(true));
    let probes = Arc::new(AtomicUsize::new(0));
    let (flag, count) = (healthy.clone(), probes.clone());
    let (addr, task) = serve(move |req| {
        if req.uri().path() == "/health" {
            count.fetch_add(1, Ordering::SeqCst);
            if flag.load(Ordering::SeqCst) {
                text(StatusCode::OK, "ok")
            } else {
                text(StatusCode::INTERNAL_SERVER_ERROR, "sick")
            }
        } else {
            text(StatusCode::OK, name)
        }
    })
    .await;
    Backend {
        addr,
        healthy,
        probes,
        _task: task,
    }
}

/// Probes with hyper-util clients: HTTP/1.1 for `http`, HTTP/2 prior knowledge for `h2c`.
struct ClientProber {
    http1: Client<HttpConnector, Body>,
    h2c: Client<HttpConnector, Body>,
}

impl ClientProber {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            http1: Client::builder(TokioExecutor::new()).build_http(),
            h2c: Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build_http(),
        })
    }
}

impl Prober for ClientProber {
    fn probe(&self, mut request: Request<Body>) -> BoxFuture<'_, Result<Response<Body>, BoxError>> {
        Box::pin(async move {
            let client = if request.uri().scheme_str() == Some("h2c") {
                let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
                let authority = request.uri().authority().map_or("", |a| a.as_str());
                *request.uri_mut() = format!("http://{authority}{path}").parse()?;
                &self.h2c
            } else {
                &self.http1
            };
            let response = client.request(request).await?;
            Ok(response.map(|body| body.map_err(BoxError::from).boxed_unsync()))
        })
    }
}

/// The leaf of one server: forwards the request's path to it.
struct Forward {
    client: Client<HttpConnector, Body>,
    addr: SocketAddr,
}

impl Handler for Forward {
    fn call(&self, mut request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
        Box::pin(async move {
            let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
            let Ok(uri) = format!("http://{}{path}", self.addr).parse::<Uri>() else {
                return error_response(ProxyErrorKind::BadRequest);
            };
            *request.uri_mut() = uri;
            match self.client.request(request).await {
                Ok(response) => response.map(|body| body.map_err(BoxError::from).boxed_unsync()),
                Err(_) => error_response(ProxyErrorKind::UpstreamConnect),
            }
        })
    }
}

fn leaves(addrs: &[SocketAddr]) -> Vec<SharedHandler> {
    let client = Client::builder(TokioExecutor::new()).build_http();
    addrs
        .iter()
        .map(|&addr| {
            Arc::new(Forward {
                client: client.clone(),
                addr,
            }) as SharedHandler
        })
        .collect()
}

fn fast_check(path: &str) -> HealthCheckSpec {
    HealthCheckSpec {
        path: path.to_owned(),
        interval: Duration::from_millis(30),
        timeout: Duration::from_millis(500),
        ..HealthCheckSpec::default()
    }
}

fn lb_spec(addrs: &[SocketAddr], check: HealthCheckSpec) -> LoadBalancerSpec {
    LoadBalancerSpec {
        servers: addrs
            .iter()
            .map(|addr| ServerSpec::new(format!("http://{addr}")))
            .collect(),
        health_check: Some(check),
        ..LoadBalancerSpec::default()
    }
}

async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let polled = async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    if tokio::time::timeout(LIMIT, polled).await.is_err() {
        panic!("timed out waiting until {what}");
    }
}

async fn served(handler: &dyn Handler, n: usize) -> String {
    let mut out = String::new();
    for _ in 0..n {
        let response = handler.call(Request::new(empty_body())).await;
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        out.push_str(if status == StatusCode::OK {
            std::str::from_utf8(&body).unwrap()
        } else {
            "-"
        });
    }
    out
}

fn is_up(state: &LbState, server: usize) -> bool {
    state.server_status()[server].1
}

#[tokio::test]
async fn a_failing_health_endpoint_takes_the_server_out_and_a_passing_one_brings_it_back() {
    let (a, b) = (backend("A").await, backend("B").await);
    let addrs = [a.addr, b.addr];
    let state = LbState::new(
        "lb@file",
        lb_spec(&addrs, fast_check("/health")),
        Some(ClientProber::new()),
    )
    .unwrap();
    let lb = LoadBalancer::new(state.clone(), leaves(&addrs)).unwrap();
    assert_eq!(served(&lb, 4).await, "ABAB");

    a.healthy.store(false, Ordering::SeqCst);
    wait_until("A is down", || !is_up(&state, 0)).await;
    assert!(is_up(&state, 1));
    assert_eq!(served(&lb, 4).await, "BBBB");

    a.healthy.store(true, Ordering::SeqCst);
    wait_until("A is up", || is_up(&state, 0)).await;
    assert!(served(&lb, 4).await.contains('A'));
}

#[tokio::test]
async fn the_first_probe_waits_one_interval() {
    let a = backend("A").await;
    let check = HealthCheckSpec {
        interval: Duration::from_millis(300),
        ..fast_check("/health")
    };
    let state = LbState::new(
        "lb@file",
        lb_spec(&[a.addr], check),
        Some(ClientProber::new()),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(a.probes.load(Ordering::SeqCst), 0);
    wait_until("the first probe", || a.probes.load(Ordering::SeqCst) > 0).await;
    drop(state);
}

#[tokio::test]
async fn an_unreachable_or_silent_server_is_marked_down() {
    // A port nothing listens on.
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    // A server that accepts and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let _hold = Task(tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            open.push(stream);
        }
    }));
    let check = HealthCheckSpec {
        timeout: Duration::from_millis(100),
        ..fast_check("/health")
    };
    let state = LbState::new(
        "lb@file",
        lb_spec(&[closed, silent_addr], check),
        Some(ClientProber::new()),
    )
    .unwrap();
    wait_until("both are down", || {
        state.server_status().iter().all(|(_, up)| !up)
    })
    .await;
}

#[tokio::test]
async fn dropping_the_state_stops_its_probes() {
    let a = backend("A").await;
    let check = HealthCheckSpec {
        interval: Duration::from_millis(10),
        ..fast_check("/health")
    };
    let state = LbState::new(
        "lb@file",
        lb_spec(&[a.addr], check),
        Some(ClientProber::new()),
    )
    .unwrap();
    let lb = LoadBalancer::new(state.clone(), leaves(&[a.addr])).unwrap();
    wait_until("a few probes", || a.probes.load(Ordering::SeqCst) >= 3).await;
    drop(lb);
    drop(state);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let stopped_at = a.probes.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(a.probes.load(Ordering::SeqCst), stopped_at);
}

#[tokio::test]
async fn a_reload_with_the_same_spec_keeps_health_and_the_running_checker() {
    let a = backend("A").await;
    let states = ServiceStates::new();
    let prober = ClientProber::new();
    let spec = lb_spec(&[a.addr], fast_check("/health"));
    let first = states
        .reuse_or_create("lb@file", &spec, Some(prober.clone()))
        .unwrap();
    a.healthy.store(false, Ordering::SeqCst);
    wait_until("A is down", || !is_up(&first, 0)).await;
    states.retain_used();

    // The next snapshot: same spec, so the same state, still down.
    let second = states
        .reuse_or_create("lb@file", &spec, Some(prober.clone()))
        .unwrap();
    states.retain_used();
    assert!(Arc::ptr_eq(&first, &second));
    drop(first);
    let lb = LoadBalancer::new(second.clone(), leaves(&[a.addr])).unwrap();
    assert_eq!(served(&lb, 2).await, "--");
    // Its checker still runs and brings A back.
    a.healthy.store(true, Ordering::SeqCst);
    wait_until("A is up", || is_up(&second, 0)).await;
    assert_eq!(served(&lb, 2).await, "AA");
}

#[tokio::test]
async fn a_failover_parent_follows_its_main_balancers_health() {
    let (a, b) = (backend("A").await, backend("B").await);
    let prober = ClientProber::new();
    let main_state = LbState::new(
        "main@file",
        lb_spec(&[a.addr], fast_check("/health")),
        Some(prober.clone()),
    )
    .unwrap();
    let main = LoadBalancer::new(main_state.clone(), leaves(&[a.addr])).unwrap();
    let fallback_state = LbState::new(
        "fallback@file",
        lb_spec(&[b.addr], fast_check("/health")),
        Some(prober),
    )
    .unwrap();
    let fallback = LoadBalancer::new(fallback_state.clone(), leaves(&[b.addr])).unwrap();
    let (main_health, fallback_health) = (main.health(), fallback.health());
    let failover = Failover::new(
        "fo@file",
        FailoverSpec {
            health_check: true,
            errors: None,
        },
        Child::new("main", Arc::new(main), main_health),
        Child::new("fallback", Arc::new(fallback), fallback_health),
    )
    .unwrap();
    let health = failover.health().unwrap();
    assert_eq!(served(&failover, 2).await, "AA");

    a.healthy.store(false, Ordering::SeqCst);
    wait_until("main is down", || !is_up(&main_state, 0)).await;
    assert_eq!(served(&failover, 2).await, "BB");
    assert!(health.is_up());

    b.healthy.store(false, Ordering::SeqCst);
    wait_until("fallback is down", || !is_up(&fallback_state, 0)).await;
    assert!(!health.is_up());
    assert_eq!(served(&failover, 1).await, "-");

    a.healthy.store(true, Ordering::SeqCst);
    wait_until("main is up", || is_up(&main_state, 0)).await;
    assert!(health.is_up());
    assert_eq!(served(&failover, 1).await, "A");
}

/// gRPC health answers: 1 SERVING, 2 NOT_SERVING, 12 means "answer grpc-status 12".
const SERVING: u8 = 1;
const NOT_SERVING: u8 = 2;
const UNIMPLEMENTED: u8 = 12;

/// An h2c gRPC health server answering with the status in `answer`; checks the request.
async fn grpc_backend(answer: Arc<AtomicU8>, bad_requests: Arc<AtomicUsize>) -> (SocketAddr, Task) {
    serve(move |req| {
        let valid = req.version() == http::Version::HTTP_2
            && req.method() == http::Method::POST
            && req.uri().path() == "/grpc.health.v1.Health/Check"
            && req
                .headers()
                .get(CONTENT_TYPE)
                .is_some_and(|v| v == "application/grpc")
            && req.headers().get("te").is_some_and(|v| v == "trailers");
        if !valid {
            bad_requests.fetch_add(1, Ordering::SeqCst);
        }
        let status = answer.load(Ordering::SeqCst);
        let mut trailers = HeaderMap::new();
        let body = if status == UNIMPLEMENTED {
            trailers.insert("grpc-status", HeaderValue::from_static("12"));
            Bytes::new()
        } else {
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            // Frame header (uncompressed, 2 bytes) then field 1 = status.
            Bytes::from(vec![0, 0, 0, 0, 2, 0x08, status])
        };
        let body = Full::new(body)
            .with_trailers(async move { Some(Ok(trailers)) })
            .boxed();
        let mut response = Response::new(body);
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        response
    })
    .await
}

#[tokio::test]
async fn grpc_health_serving_keeps_the_server_and_not_serving_takes_it_out() {
    let answer = Arc::new(AtomicU8::new(SERVING));
    let bad_requests = Arc::new(AtomicUsize::new(0));
    let (addr, _task) = grpc_backend(answer.clone(), bad_requests.clone()).await;
    let check = HealthCheckSpec {
        mode: HealthCheckMode::Grpc,
        ..fast_check("/")
    };
    let spec = LoadBalancerSpec {
        servers: vec![ServerSpec::new(format!("h2c://{addr}"))],
        health_check: Some(check),
        ..LoadBalancerSpec::default()
    };
    let state = LbState::new("grpc@file", spec, Some(ClientProber::new())).unwrap();

    answer.store(NOT_SERVING, Ordering::SeqCst);
    wait_until("NOT_SERVING takes it out", || !is_up(&state, 0)).await;
    answer.store(SERVING, Ordering::SeqCst);
    wait_until("SERVING brings it back", || is_up(&state, 0)).await;
    answer.store(UNIMPLEMENTED, Ordering::SeqCst);
    wait_until("a gRPC error takes it out", || !is_up(&state, 0)).await;
    assert_eq!(
        bad_requests.load(Ordering::SeqCst),
        0,
        "probes are well-formed gRPC calls"
    );
}
