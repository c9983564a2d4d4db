//! Active health checks of a load balancer's servers (`loadBalancer.healthCheck`), as Traefik
//! runs them: servers start up, the first probe comes one interval after start, healthy
//! servers are probed every `interval` and unhealthy ones every `unhealthy_interval`; one
//! failed probe marks a server down, one passing probe marks it up.
//!
//! An HTTP probe is `method <scheme>://host:port<path>` and passes on 2xx/3xx (or exactly
//! `status`); a gRPC probe calls `grpc.health.v1.Health/Check` over HTTP/2 and passes on
//! `SERVING`. Probes are sent through a [`Prober`] (the service's transport), so they use the
//! same TLS and timeouts as traffic. This module only writes server health flags.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_TYPE, HOST, LOCATION, TE};
use http::uri::{Authority, Scheme};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use tokio::task::{AbortHandle, JoinSet};

use super::BuildError;
use super::grpc;
use super::health::{Checker, ServerHealth};
use crate::handler::{Body, BoxError, BoxFuture, empty_body, full_body};

/// Go's `http.Client` gives up after this many redirects.
const MAX_REDIRECTS: usize = 10;

/// A health response is one tiny message; anything longer is not a health service.
const MAX_GRPC_RESPONSE: usize = 16 * 1024;

/// Sends one probe request and returns the response head (and body, read only by gRPC probes).
///
/// The request's URI is absolute (`<scheme>://host:port<path>`); HTTP probes have the server's
/// scheme (`http`, `https`, `h2c`) or `healthCheck.scheme`, and carry a `Host` header only
/// when `hostname` is configured. gRPC probes are `Version::HTTP_2` requests and their scheme
/// is `h2c` in cleartext (HTTP/2 with prior knowledge) or `https`. The probe's timeout is
/// applied around the call; redirects are followed here, not by the prober.
pub trait Prober: Send + Sync + 'static {
    fn probe(&self, request: Request<Body>) -> BoxFuture<'_, Result<Response<Body>, BoxError>>;
}

/// What a probe asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HealthCheckMode {
    #[default]
    Http,
    Grpc,
}

/// `loadBalancer.healthCheck`.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheckSpec {
    pub mode: HealthCheckMode,
    /// Replaces the server's scheme.
    pub scheme: Option<String>,
    /// Relative URL (path and query) resolved against each server URL; empty probes the
    /// server URL itself.
    pub path: String,
    pub method: Method,
    /// `None`: any 2xx or 3xx passes.
    pub status: Option<StatusCode>,
    /// Replaces the server's port.
    pub port: Option<u16>,
    /// Zero means Traefik's default (30 s), as Traefik does for non-positive values.
    pub interval: Duration,
    /// `None`: `interval`.
    pub unhealthy_interval: Option<Duration>,
    /// Limit for one whole probe, redirects included; zero means the default (5 s).
    pub timeout: Duration,
    /// `Host` header of HTTP probes.
    pub hostname: Option<String>,
    pub follow_redirects: bool,
    /// Set on HTTP probes, replacing any header of the same name.
    pub headers: HeaderMap,
}

impl Default for HealthCheckSpec {
    /// Traefik's defaults: `GET`, every 30 s, 5 s per probe, redirects followed.
    fn default() -> Self {
        Self {
            mode: HealthCheckMode::Http,
            scheme: None,
            path: String::new(),
            method: Method::GET,
            status: None,
            port: None,
            interval: DEFAULT_INTERVAL,
            unhealthy_interval: None,
            timeout: DEFAULT_TIMEOUT,
            hostname: None,
            follow_redirects: true,
            headers: HeaderMap::new(),
        }
    }
}

const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

impl HealthCheckSpec {
    fn interval(&self) -> Duration {
        nonzero_or(self.interval, DEFAULT_INTERVAL)
    }

    fn unhealthy_interval(&self) -> Duration {
        self.unhealthy_interval
            .map_or_else(|| self.interval(), |d| nonzero_or(d, DEFAULT_INTERVAL))
    }

    fn timeout(&self) -> Duration {
        nonzero_or(self.timeout, DEFAULT_TIMEOUT)
    }
}

fn nonzero_or(duration: Duration, default: Duration) -> Duration {
    if duration.is_zero() {
        default
    } else {
        duration
    }
}

/// The URL a server is probed at, computed once at build time.
#[derive(Debug, Clone)]
pub(crate) struct ProbeTarget {
    uri: Uri,
}

impl ProbeTarget {
    /// The probe URL for server `url` of `service`.
    pub(crate) fn new(
        service: &str,
        url: &str,
        spec: &HealthCheckSpec,
    ) -> Result<Self, BuildError> {
        let server_error = || BuildError::ServerUrl {
            service: service.to_owned(),
            url: url.to_owned(),
        };
        let server: Uri = url.parse().map_err(|_| server_error())?;
        let (Some(server_scheme), Some(authority)) = (server.scheme_str(), server.authority())
        else {
            return Err(server_error());
        };
        let host = authority.host();
        if host.is_empty() {
            return Err(server_error());
        }
        let (scheme, path) = match spec.mode {
            HealthCheckMode::Http => {
                let scheme = spec.scheme.as_deref().unwrap_or(server_scheme);
                (scheme, resolve_path(service, server.path(), &spec.path)?)
            }
            HealthCheckMode::Grpc => {
                // Traefik dials gRPC in cleartext for these schemes and with TLS otherwise.
                let scheme = match spec.scheme.as_deref().unwrap_or(server_scheme) {
                    "" | "http" | "h2c" => "h2c",
                    _ => "https",
                };
                (scheme, grpc::CHECK_PATH.to_owned())
            }
        };
        let port = spec.port.or_else(|| authority.port_u16());
        let authority = match port {
            Some(port) => format!("{}:{port}", bracketed(host)),
            None => bracketed(host),
        };
        let probe = format!("{scheme}://{authority}{path}");
        let uri = probe.parse().map_err(|_| BuildError::ProbeUrl {
            service: service.to_owned(),
            url: url.to_owned(),
            probe,
        })?;
        Ok(Self { uri })
    }

    #[cfg(test)]
    pub(crate) fn uri(&self) -> &Uri {
        &self.uri
    }
}

/// `http::Uri` gives IPv6 hosts with their brackets; this keeps them exactly once.
fn bracketed(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// Resolves the configured path against the server's, as a relative URL reference: an
/// absolute path replaces it, a relative one replaces its last segment.
fn resolve_path(service: &str, base: &str, path: &str) -> Result<String, BuildError> {
    let is_absolute_url = path.contains("://") || path.starts_with("//");
    if is_absolute_url {
        return Err(BuildError::HealthCheckPath {
            service: service.to_owned(),
            path: path.to_owned(),
        });
    }
    Ok(if path.is_empty() {
        if base.is_empty() { "/" } else { base }.to_owned()
    } else if path.starts_with('/') {
        path.to_owned()
    } else if path.starts_with('?') {
        format!("{base}{path}")
    } else {
        let directory = base.rfind('/').map_or("/", |slash| &base[..=slash]);
        format!("{directory}{path}")
    })
}

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProbeError {
    #[error("request failed: {0}")]
    Request(BoxError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("received status {0}")]
    Status(StatusCode),
    #[error("received status {got}, expected {expected}")]
    UnexpectedStatus {
        got: StatusCode,
        expected: StatusCode,
    },
    #[error("stopped after {MAX_REDIRECTS} redirects")]
    TooManyRedirects,
    #[error("redirect to an invalid location {0:?}")]
    BadRedirect(String),
    #[error("reading the gRPC response failed: {0}")]
    GrpcBody(BoxError),
    #[error("gRPC status {0}")]
    GrpcStatus(String),
    #[error("the gRPC response is longer than {MAX_GRPC_RESPONSE} bytes")]
    GrpcTooLong,
    #[error("the gRPC response has no grpc-status")]
    GrpcNoStatus,
    #[error(transparent)]
    GrpcDecode(#[from] grpc::DecodeError),
    #[error("gRPC health status {0} (not SERVING)")]
    NotServing(u64),
}

/// The prober in use; replaced when a reload reuses the state with a new transport.
pub(crate) type ProberSlot = Arc<Mutex<Arc<dyn Prober>>>;

/// Keeps a load balancer's active health checks running; dropping it stops them.
pub(crate) struct CheckerHandle {
    task: AbortHandle,
}

impl Drop for CheckerHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl fmt::Debug for CheckerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CheckerHandle")
    }
}

/// Starts probing each server of `health` at its target (same order). Fails outside a tokio
/// runtime.
pub(crate) fn spawn(
    health: Arc<ServerHealth>,
    targets: Vec<ProbeTarget>,
    spec: HealthCheckSpec,
    prober: ProberSlot,
) -> Result<CheckerHandle, tokio::runtime::TryCurrentError> {
    let runtime = tokio::runtime::Handle::try_current()?;
    let spec = Arc::new(spec);
    let task = runtime.spawn(async move {
        // Aborting this task drops the set, which aborts every probe loop in it.
        let mut loops = JoinSet::new();
        for (server, target) in targets.into_iter().enumerate() {
            loops.spawn(watch(
                health.clone(),
                server,
                target,
                spec.clone(),
                prober.clone(),
            ));
        }
        while loops.join_next().await.is_some() {}
    });
    Ok(CheckerHandle {
        task: task.abort_handle(),
    })
}

/// Probes one server forever.
async fn watch(
    health: Arc<ServerHealth>,
    server: usize,
    target: ProbeTarget,
    spec: Arc<HealthCheckSpec>,
    prober: ProberSlot,
) {
    loop {
        let wait = if health.is_up(server) {
            spec.interval()
        } else {
            spec.unhealthy_interval()
        };
        tokio::time::sleep(wait).await;
        let prober = prober
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let timeout = spec.timeout();
        let result = tokio::time::timeout(timeout, check(&*prober, &target, &spec))
            .await
            .unwrap_or(Err(ProbeError::Timeout(timeout)));
        match result {
            Ok(()) => {
                health.set(server, true, Checker::Active, None);
            }
            Err(reason) => {
                tracing::debug!(server = health.url(server), %reason, "health check failed");
                health.set(server, false, Checker::Active, Some(&reason));
            }
        }
    }
}

/// One probe of `target`.
pub(crate) async fn check(
    prober: &dyn Prober,
    target: &ProbeTarget,
    spec: &HealthCheckSpec,
) -> Result<(), ProbeError> {
    match spec.mode {
        HealthCheckMode::Http => check_http(prober, target, spec).await,
        HealthCheckMode::Grpc => check_grpc(prober, target).await,
    }
}

async fn check_http(
    prober: &dyn Prober,
    target: &ProbeTarget,
    spec: &HealthCheckSpec,
) -> Result<(), ProbeError> {
    let mut uri = target.uri.clone();
    let mut method = spec.method.clone();
    let mut hostname = spec.hostname.as_deref();
    // Each request but the last may be redirected: Go stops at the tenth redirect.
    for _ in 0..MAX_REDIRECTS {
        let request = http_probe(&method, &uri, hostname, &spec.headers);
        let response = prober.probe(request).await.map_err(ProbeError::Request)?;
        let status = response.status();
        let location = response.headers().get(LOCATION);
        if let (true, true, Some(location)) = (spec.follow_redirects, is_redirect(status), location)
        {
            let next = follow(&uri, location)?;
            // Go keeps a configured Host only while the redirects stay on the same host.
            if next.authority() != uri.authority() {
                hostname = None;
            }
            uri = next;
            if redirect_drops_method(status, &method) {
                method = Method::GET;
            }
            continue;
        }
        return match spec.status {
            None if status.is_success() || status.is_redirection() => Ok(()),
            None => Err(ProbeError::Status(status)),
            Some(expected) if expected == status => Ok(()),
            Some(expected) => Err(ProbeError::UnexpectedStatus {
                got: status,
                expected,
            }),
        };
    }
    Err(ProbeError::TooManyRedirects)
}

fn http_probe(
    method: &Method,
    uri: &Uri,
    hostname: Option<&str>,
    headers: &HeaderMap,
) -> Request<Body> {
    let mut request = Request::new(empty_body());
    *request.method_mut() = method.clone();
    *request.uri_mut() = uri.clone();
    for (name, value) in headers {
        request.headers_mut().insert(name, value.clone());
    }
    if let Some(host) = hostname.and_then(|host| HeaderValue::from_str(host).ok()) {
        request.headers_mut().insert(HOST, host);
    }
    request
}

/// The statuses Go's client follows.
fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// 301, 302 and 303 turn a request into a `GET` (HEAD stays HEAD), as Go's client does.
fn redirect_drops_method(status: StatusCode, method: &Method) -> bool {
    match status.as_u16() {
        301 | 302 => *method != Method::GET && *method != Method::HEAD,
        303 => *method != Method::HEAD,
        _ => false,
    }
}

/// The absolute URL a `Location` points to from `from`.
fn follow(from: &Uri, location: &HeaderValue) -> Result<Uri, ProbeError> {
    let text = location.to_str().unwrap_or_default();
    let bad = || ProbeError::BadRedirect(String::from_utf8_lossy(location.as_bytes()).into());
    let scheme = from.scheme().cloned().unwrap_or(Scheme::HTTP);
    let authority = from.authority().map(Authority::as_str).unwrap_or_default();
    let absolute = if text.contains("://") {
        text.to_owned()
    } else if let Some(rest) = text.strip_prefix("//") {
        format!("{scheme}://{rest}")
    } else if text.starts_with('/') {
        format!("{scheme}://{authority}{text}")
    } else {
        let path = from.path();
        let directory = path.rfind('/').map_or("/", |slash| &path[..=slash]);
        format!("{scheme}://{authority}{directory}{text}")
    };
    let uri: Uri = absolute.parse().map_err(|_| bad())?;
    if uri.authority().is_none() {
        return Err(bad());
    }
    Ok(uri)
}

async fn check_grpc(prober: &dyn Prober, target: &ProbeTarget) -> Result<(), ProbeError> {
    let mut request = Request::new(full_body(Bytes::from_static(&grpc::CHECK_REQUEST)));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = target.uri.clone();
    *request.version_mut() = Version::HTTP_2;
    let headers = request.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(TE, HeaderValue::from_static("trailers"));
    let response = prober.probe(request).await.map_err(ProbeError::Request)?;
    if response.status() != StatusCode::OK {
        return Err(ProbeError::Status(response.status()));
    }
    // A trailers-only response carries its grpc-status in the headers.
    if let Some(status) = response.headers().get("grpc-status") {
        grpc_ok(status)?;
    }
    let mut body = response.into_body();
    let mut message = BytesMut::new();
    let mut status = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(ProbeError::GrpcBody)?;
        if let Some(data) = frame.data_ref() {
            if message.len() + data.len() > MAX_GRPC_RESPONSE {
                return Err(ProbeError::GrpcTooLong);
            }
            message.extend_from_slice(data);
        } else if let Some(trailers) = frame.trailers_ref() {
            status = trailers.get("grpc-status").cloned();
        }
    }
    match status {
        Some(status) => grpc_ok(&status)?,
        None => return Err(ProbeError::GrpcNoStatus),
    }
    match grpc::serving_status(&message)? {
        grpc::SERVING => Ok(()),
        other => Err(ProbeError::NotServing(other)),
    }
}

fn grpc_ok(status: &HeaderValue) -> Result<(), ProbeError> {
    if status.as_bytes() == b"0" {
        Ok(())
    } else {
        Err(ProbeError::GrpcStatus(
            String::from_utf8_lossy(status.as_bytes()).into_owned(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::full_body;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn target(url: &str, spec: &HealthCheckSpec) -> String {
        match ProbeTarget::new("svc", url, spec) {
            Ok(target) => target.uri().to_string(),
            Err(error) => format!("error: {error}"),
        }
    }

    fn http(path: &str) -> HealthCheckSpec {
        HealthCheckSpec {
            path: path.to_owned(),
            ..HealthCheckSpec::default()
        }
    }

    #[test]
    fn probe_urls_resolve_the_path_against_the_server_url() {
        assert_eq!(
            target("http://10.0.0.1:81", &http("/health")),
            "http://10.0.0.1:81/health"
        );
        assert_eq!(
            target("http://10.0.0.1:81/api/v1", &http("/health?full=1")),
            "http://10.0.0.1:81/health?full=1"
        );
        assert_eq!(
            target("http://10.0.0.1:81/api/v1", &http("health")),
            "http://10.0.0.1:81/api/health"
        );
        assert_eq!(target("http://a.example", &http("")), "http://a.example/");
        assert_eq!(target("http://[::1]:81", &http("/h")), "http://[::1]:81/h");
    }

    #[test]
    fn scheme_and_port_replace_the_servers() {
        let spec = HealthCheckSpec {
            scheme: Some("https".to_owned()),
            port: Some(8443),
            ..http("/health")
        };
        assert_eq!(
            target("http://10.0.0.1:81", &spec),
            "https://10.0.0.1:8443/health"
        );
        assert_eq!(target("h2c://[::1]", &spec), "https://[::1]:8443/health");
    }

    #[test]
    fn grpc_probes_go_to_the_health_method_over_h2c_or_https() {
        let grpc = HealthCheckSpec {
            mode: HealthCheckMode::Grpc,
            ..http("/ignored")
        };
        assert_eq!(
            target("http://10.0.0.1:50051", &grpc),
            "h2c://10.0.0.1:50051/grpc.health.v1.Health/Check"
        );
        let tls = HealthCheckSpec {
            scheme: Some("https".to_owned()),
            ..grpc
        };
        assert_eq!(
            target("h2c://10.0.0.1:50051", &tls),
            "https://10.0.0.1:50051/grpc.health.v1.Health/Check"
        );
    }

    #[test]
    fn bad_urls_and_absolute_paths_are_build_errors() {
        assert!(target("not a url", &http("/h")).starts_with("error: service svc: server url"));
        assert!(target("/relative", &http("/h")).starts_with("error: service svc: server url"));
        assert_eq!(
            target("http://a", &http("http://b/health")),
            "error: service svc: health check path \"http://b/health\" must be a relative URL"
        );
    }

    #[test]
    fn zero_durations_fall_back_to_traefiks_defaults() {
        let spec = HealthCheckSpec {
            interval: Duration::ZERO,
            timeout: Duration::ZERO,
            ..HealthCheckSpec::default()
        };
        assert_eq!(spec.interval(), Duration::from_secs(30));
        assert_eq!(spec.unhealthy_interval(), Duration::from_secs(30));
        assert_eq!(spec.timeout(), Duration::from_secs(5));
        let spec = HealthCheckSpec {
            interval: Duration::from_secs(2),
            unhealthy_interval: Some(Duration::from_secs(1)),
            ..spec
        };
        assert_eq!(spec.unhealthy_interval(), Duration::from_secs(1));
    }

    /// Answers each probe with the next scripted status (and Location), recording requests.
    struct Script {
        answers: Mutex<Vec<(u16, Option<&'static str>)>>,
        seen: Mutex<Vec<(Method, String, Option<String>)>>,
        calls: AtomicUsize,
    }

    impl Script {
        fn new(answers: &[(u16, Option<&'static str>)]) -> Self {
            Self {
                answers: Mutex::new(answers.iter().rev().copied().collect()),
                seen: Mutex::new(Vec::new()),
                calls: AtomicUsize::new(0),
            }
        }
    }

    impl Prober for Script {
        fn probe(&self, request: Request<Body>) -> BoxFuture<'_, Result<Response<Body>, BoxError>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let host = request
                .headers()
                .get(HOST)
                .map(|h| h.to_str().unwrap_or("?").to_owned());
            self.seen.lock().unwrap().push((
                request.method().clone(),
                request.uri().to_string(),
                host,
            ));
            let answer = self.answers.lock().unwrap().pop();
            Box::pin(async move {
                let (status, location) = answer.ok_or("no more answers")?;
                let mut response = Response::new(full_body(""));
                *response.status_mut() = StatusCode::from_u16(status)?;
                if let Some(location) = location {
                    response
                        .headers_mut()
                        .insert(LOCATION, HeaderValue::from_static(location));
                }
                Ok(response)
            })
        }
    }

    async fn run(
        spec: &HealthCheckSpec,
        answers: &[(u16, Option<&'static str>)],
    ) -> (Result<(), ProbeError>, Script) {
        let script = Script::new(answers);
        let target = ProbeTarget::new("svc", "http://10.0.0.1:81", spec).unwrap();
        let result = check(&script, &target, spec).await;
        (result, script)
    }

    #[tokio::test]
    async fn two_and_three_hundreds_pass_by_default_and_status_must_match_when_set() {
        assert!(run(&http("/h"), &[(204, None)]).await.0.is_ok());
        assert!(run(&http("/h"), &[(304, None)]).await.0.is_ok());
        let (result, _) = run(&http("/h"), &[(500, None)]).await;
        assert_eq!(
            result.unwrap_err().to_string(),
            "received status 500 Internal Server Error"
        );
        assert!(run(&http("/h"), &[(199, None)]).await.0.is_err());
        let exact = HealthCheckSpec {
            status: Some(StatusCode::IM_A_TEAPOT),
            ..http("/h")
        };
        assert!(run(&exact, &[(418, None)]).await.0.is_ok());
        assert!(run(&exact, &[(200, None)]).await.0.is_err());
    }

    #[tokio::test]
    async fn redirects_are_followed_with_method_and_host_rules_of_go() {
        let spec = HealthCheckSpec {
            method: Method::POST,
            hostname: Some("health.example".to_owned()),
            ..http("/h")
        };
        let (result, script) = run(
            &spec,
            &[
                (307, Some("/again")),
                (302, Some("next")),
                (301, Some("http://10.0.0.2:82/far")),
                (200, None),
            ],
        )
        .await;
        assert!(result.is_ok(), "{result:?}");
        let seen = script.seen.lock().unwrap().clone();
        let host = Some("health.example".to_owned());
        assert_eq!(
            seen,
            [
                (
                    Method::POST,
                    "http://10.0.0.1:81/h".to_owned(),
                    host.clone()
                ),
                (
                    Method::POST,
                    "http://10.0.0.1:81/again".to_owned(),
                    host.clone()
                ),
                (Method::GET, "http://10.0.0.1:81/next".to_owned(), host),
                (Method::GET, "http://10.0.0.2:82/far".to_owned(), None),
            ]
        );
    }

    #[tokio::test]
    async fn redirects_are_judged_as_is_when_not_followed_and_bounded_when_followed() {
        let no_follow = HealthCheckSpec {
            follow_redirects: false,
            ..http("/h")
        };
        let (result, script) = run(&no_follow, &[(302, Some("/x")), (500, None)]).await;
        assert!(result.is_ok());
        assert_eq!(script.calls.load(Ordering::SeqCst), 1);
        let looping = [(302, Some("/loop")); 12];
        let (result, script) = run(&http("/h"), &looping).await;
        assert!(matches!(result, Err(ProbeError::TooManyRedirects)));
        assert_eq!(script.calls.load(Ordering::SeqCst), MAX_REDIRECTS);
    }

    #[tokio::test]
    async fn configured_headers_and_host_are_sent() {
        let mut headers = HeaderMap::new();
        headers.insert("x-probe", HeaderValue::from_static("1"));
        let spec = HealthCheckSpec {
            headers,
            ..http("/h")
        };
        struct Capture(Mutex<Option<HeaderMap>>);
        impl Prober for Capture {
            fn probe(
                &self,
                request: Request<Body>,
            ) -> BoxFuture<'_, Result<Response<Body>, BoxError>> {
                *self.0.lock().unwrap() = Some(request.headers().clone());
                Box::pin(async { Ok(Response::new(empty_body())) })
            }
        }
        let capture = Capture(Mutex::new(None));
        let target = ProbeTarget::new("svc", "http://10.0.0.1:81", &spec).unwrap();
        assert!(check(&capture, &target, &spec).await.is_ok());
        let headers = capture.0.lock().unwrap().take().unwrap();
        assert_eq!(headers.get("x-probe").unwrap(), "1");
        assert!(
            headers.get(HOST).is_none(),
            "no Host unless hostname is set"
        );
    }
}
