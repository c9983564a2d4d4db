//! The observation hook of the HTTP path: an entrypoint with a [`RequestObserver`] reports one
//! [`RequestRecord`] for every request it handles — routed, refused (400, 421) or unrouted
//! (404) — once the response body has been sent in full, failed, or been dropped (the client
//! went away). Metrics and access logs are observers; l7 knows neither.
//!
//! A thread that batches ([`batch_on_workers`]) hands its reports to their observers in runs
//! of up to [`BATCH_REPORTS`], at the latest when it goes idle; [`flush_reports`] delivers
//! every thread's at once, for readers that must see every ended request.
//!
//! Owns the record and the body wrappers that count bytes and time; not what an observer does
//! with a record (that is the binary's), nor requests hyper answers by itself before they
//! reach the entrypoint (a malformed request line, a header section over the limit).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{ACCEPT, CONNECTION, CONTENT_TYPE, HeaderValue, UPGRADE};
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;

use crate::error::ProxyErrorKind;
use crate::handler::{Body, BoxError, ClientInfo, response_error};
use crate::trace_context::RequestTrace;

/// Sees every request of the entrypoints it is installed on ([`crate::server::HttpEntrypoint::set_observer`]).
///
/// Called when the response's body ends, on the thread that sent it, or later with a run of
/// that thread's reports (when it batches them: [`batch_on_workers`]), or on the thread of a
/// [`flush_reports`]: an observer must be quick and must not block (count, or hand the record
/// to a queue).
pub trait RequestObserver: Send + Sync + 'static {
    fn observe(&self, record: &RequestRecord);

    /// Which of the request's headers records should carry (an access log's `User-Agent`,
    /// say). Copying headers costs allocations per request, so records carry only what some
    /// observer asks for.
    fn wanted_headers(&self) -> Option<&WantedHeaders> {
        None
    }

    /// Which of the response's headers records should carry (a span's captured headers), on
    /// the same terms.
    fn wanted_response_headers(&self) -> Option<&WantedHeaders> {
        None
    }

    /// Whether records should carry the request's target ([`RequestRecord::target`]); an
    /// observer that never shows it (metrics) saves the copy.
    fn wants_target(&self) -> bool {
        true
    }

    /// Whether records should carry the authority the request named
    /// ([`RequestRecord::host`]). It shares the connection's read buffer, whose release it
    /// would hold until the report: observers that never show it say so.
    fn wants_host(&self) -> bool {
        true
    }
}

/// An observer, with what it wants records to carry: asked once, when it is installed
/// ([`crate::server::HttpEntrypoint::set_observer`]), not at every request.
pub(crate) struct Installed {
    observer: Arc<dyn RequestObserver>,
    headers: Option<WantedHeaders>,
    response_headers: Option<WantedHeaders>,
    target: bool,
    host: bool,
}

impl Installed {
    pub(crate) fn new(observer: Arc<dyn RequestObserver>) -> Self {
        Installed {
            headers: observer.wanted_headers().cloned(),
            response_headers: observer.wanted_response_headers().cloned(),
            target: observer.wants_target(),
            host: observer.wants_host(),
            observer,
        }
    }
}

/// The request headers an observer needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WantedHeaders {
    All,
    Only(Vec<http::HeaderName>),
}

impl WantedHeaders {
    /// What observers wanting `wishes` need together; `None` when none wants any.
    pub fn union<'a>(wishes: impl IntoIterator<Item = &'a WantedHeaders>) -> Option<Self> {
        let mut names: Vec<http::HeaderName> = Vec::new();
        let mut any = false;
        for wish in wishes {
            any = true;
            match wish {
                WantedHeaders::All => return Some(WantedHeaders::All),
                WantedHeaders::Only(only) => {
                    for name in only {
                        if !names.contains(name) {
                            names.push(name.clone());
                        }
                    }
                }
            }
        }
        any.then_some(WantedHeaders::Only(names))
    }

    /// The wanted headers of `headers`; `None` when there are none (no allocation then).
    fn pick(&self, headers: &http::HeaderMap) -> Option<Box<http::HeaderMap>> {
        if let WantedHeaders::Only(names) = self
            && headers.len() <= 16
            && !headers.keys().any(|name| names.contains(name))
        {
            // Most messages have none of them: a look at each name (a few) settles that
            // without hashing.
            return None;
        }
        self.copy(headers)
    }

    /// The wanted headers of `headers`, which has some; `None` when it turns out to have none.
    fn copy(&self, headers: &http::HeaderMap) -> Option<Box<http::HeaderMap>> {
        let picked = match self {
            WantedHeaders::All => headers.clone(),
            WantedHeaders::Only(names) => {
                let mut picked = http::HeaderMap::new();
                for name in names {
                    for value in headers.get_all(name) {
                        picked.append(name.clone(), value.clone());
                    }
                }
                picked
            }
        };
        (!picked.is_empty()).then(|| Box::new(picked))
    }

    /// The names wanted, or none when all are.
    fn names(&self) -> &[http::HeaderName] {
        match self {
            WantedHeaders::All => &[],
            WantedHeaders::Only(names) => names,
        }
    }
}

/// What kind of exchange a request is, from its headers, as Traefik labels its metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Http,
    Grpc,
    GrpcWeb,
    /// Server-sent events: the client accepts `text/event-stream`.
    Sse,
    WebSocket,
}

impl Protocol {
    /// WebSocket upgrade first, then SSE, then gRPC-Web before gRPC (its content type is a
    /// longer form of gRPC's), else plain HTTP: Traefik's order.
    ///
    /// One pass over the headers, comparing names (cheap for these standard ones), rather
    /// than a hashed lookup for each of the four: most requests have none of them.
    pub fn of(headers: &HeaderMap) -> Self {
        Self::and_names(headers, &[]).0
    }

    /// [`Self::of`], and whether `headers` has any of `names`, in the same pass.
    fn and_names(headers: &HeaderMap, names: &[http::HeaderName]) -> (Self, bool) {
        let (mut connection_upgrade, mut upgrade_websocket, mut sse) = (false, false, false);
        let mut content_type = None;
        let mut named = false;
        for (name, value) in headers {
            named = named || names.contains(name);
            if *name == CONNECTION {
                connection_upgrade |= has_token(value, "upgrade");
            } else if *name == UPGRADE {
                upgrade_websocket |= has_token(value, "websocket");
            } else if *name == ACCEPT {
                sse |= has_token(value, "text/event-stream");
            } else if *name == CONTENT_TYPE && content_type.is_none() {
                content_type = Some(value.as_bytes());
            }
        }
        let protocol = if connection_upgrade && upgrade_websocket {
            Protocol::WebSocket
        } else if sse {
            Protocol::Sse
        } else {
            match content_type {
                Some(ct) if starts_with_ignore_case(ct, b"application/grpc-web") => {
                    Protocol::GrpcWeb
                }
                Some(ct) if starts_with_ignore_case(ct, b"application/grpc") => Protocol::Grpc,
                _ => Protocol::Http,
            }
        };
        (protocol, named)
    }

    /// The metric label: `http`, `grpc`, `grpc-web`, `sse` or `websocket`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Grpc => "grpc",
            Protocol::GrpcWeb => "grpc-web",
            Protocol::Sse => "sse",
            Protocol::WebSocket => "websocket",
        }
    }
}

/// Whether a header value, a comma-separated list, holds `token` (media-type parameters after
/// `;` ignored), case-insensitively.
fn has_token(value: &HeaderValue, token: &str) -> bool {
    value.to_str().is_ok_and(|v| {
        v.split(',').any(|item| {
            let item = item.split(';').next().unwrap_or("");
            item.trim().eq_ignore_ascii_case(token)
        })
    })
}

fn starts_with_ignore_case(value: &[u8], prefix: &[u8]) -> bool {
    value.len() >= prefix.len() && value[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// The negotiated TLS parameters of a connection, named as Traefik's `tls_version` and
/// `tls_cipher` labels name them (`1.3`, `TLS_AES_128_GCM_SHA256`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TlsParams {
    pub version: &'static str,
    /// `None` where the stack does not tell (QUIC: quinn keeps the suite to itself).
    pub cipher: Option<&'static str>,
}

impl TlsParams {
    /// The parameters of an established rustls connection, if its handshake is complete.
    pub fn of(connection: &rustls::ServerConnection) -> Option<Self> {
        let version = match connection.protocol_version()? {
            rustls::ProtocolVersion::TLSv1_2 => "1.2",
            rustls::ProtocolVersion::TLSv1_3 => "1.3",
            _ => "unknown",
        };
        let cipher = connection
            .negotiated_cipher_suite()
            .and_then(|suite| cipher_name(suite.suite()));
        Some(TlsParams { version, cipher })
    }

    /// HTTP/3 runs over QUIC, which is TLS 1.3 only.
    pub const QUIC: TlsParams = TlsParams {
        version: "1.3",
        cipher: None,
    };
}

/// The IANA name of a suite, which Go (hence Traefik) also uses; rustls prefixes its TLS 1.3
/// suites with `TLS13_` where the registry says `TLS_`.
fn cipher_name(suite: rustls::CipherSuite) -> Option<&'static str> {
    Some(match suite {
        rustls::CipherSuite::TLS13_AES_128_GCM_SHA256 => "TLS_AES_128_GCM_SHA256",
        rustls::CipherSuite::TLS13_AES_256_GCM_SHA384 => "TLS_AES_256_GCM_SHA384",
        rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => "TLS_CHACHA20_POLY1305_SHA256",
        other => return other.as_str(),
    })
}

/// One request as its entrypoint saw it, reported when its response ended.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    pub entrypoint: Arc<str>,
    /// The router that handled it; `None` when no router did (404, 421, a refused request).
    pub router: Option<Arc<str>>,
    /// The router's service, qualified (`api@file`); `None` without a router.
    pub service: Option<Arc<str>>,
    pub method: Method,
    pub protocol: Protocol,
    pub version: Version,
    /// The authority the request named (`:authority` or `Host`), as received.
    pub host: Option<HeaderValue>,
    /// The request target as the client sent it (path and query), before path
    /// sanitization; `/` for a target without a path (`CONNECT`), empty when no observer
    /// [wants it](RequestObserver::wants_target). For access logs: never a metric label
    /// (unbounded). A string of the record's own, reused by the next request: no share of
    /// the connection's read buffer to hold and give back.
    pub target: String,
    /// The client (after a trusted PROXY header).
    pub client: SocketAddr,
    /// `None` on a plaintext connection.
    pub tls: Option<TlsParams>,
    pub status: StatusCode,
    /// Set when the response was made by the proxy for an error (no route, upstream down...).
    pub error: Option<ProxyErrorKind>,
    /// Request body bytes the handlers read by the time the response ended.
    pub request_bytes: u64,
    /// Response body bytes handed to the connection.
    pub response_bytes: u64,
    /// `false` when the response body failed or was dropped before its end (the client left).
    pub completed: bool,
    /// From the request's arrival at the entrypoint to the end (or drop) of its response body.
    pub duration: Duration,
    /// When the request arrived, by the wall clock.
    pub started: SystemTime,
    /// The request's headers as received, those the observer [asked
    /// for](RequestObserver::wanted_headers); `None` when it had none of them. Boxed, as is
    /// the next: most records carry none, and a smaller record is cheaper to build and move.
    pub headers: Option<Box<http::HeaderMap>>,
    /// The response's headers as sent, those the observer [asked
    /// for](RequestObserver::wanted_response_headers).
    pub response_headers: Option<Box<http::HeaderMap>>,
    /// The server the load balancer sent it to (as configured: `http://10.0.0.1:80`).
    pub server: Option<Arc<str>>,
    /// The user an authentication middleware admitted.
    pub username: Option<String>,
    /// Retries by the `retry` middleware (0 when it was tried once).
    pub retries: u32,
    /// The request's span in its W3C trace, when the entrypoint [traces
    /// requests](crate::server::HttpEntrypoint::set_tracing).
    pub trace: Option<RequestTrace>,
}

/// What handlers deeper in the chain note about an observed request for its record: the
/// server chosen, the user admitted, the retries. Found in the request's extensions when the
/// request is observed; handlers that see none note nothing.
#[derive(Debug, Default)]
pub struct RequestNotes {
    /// Request body bytes read so far.
    request_bytes: AtomicU64,
    server: std::sync::Mutex<Option<Arc<str>>>,
    username: std::sync::OnceLock<String>,
    retries: std::sync::atomic::AtomicU32,
}

impl RequestNotes {
    /// The notes of an observed request.
    pub fn of<B>(request: &http::Request<B>) -> Option<&RequestNotes> {
        Self::in_extensions(request.extensions())
    }

    /// The notes of an observed request, from its extensions (its parts').
    pub fn in_extensions(extensions: &http::Extensions) -> Option<&RequestNotes> {
        extensions
            .get::<ClientInfo>()
            .and_then(|client| client.notes.as_deref())
    }

    /// The server a load balancer picked; with retries, the last try's.
    pub fn note_server(&self, url: &Arc<str>) {
        *self.server.lock().unwrap_or_else(|e| e.into_inner()) = Some(url.clone());
    }

    pub fn note_user(&self, user: &str) {
        let _ = self.username.set(user.to_owned());
    }

    pub fn note_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }
}

/// A request being observed, between its arrival and its response, in its box.
///
/// The box is the record's home across the routing's awaits and in the response body: the
/// record (about 450 bytes) is written field by field where it lives, never built elsewhere
/// and moved in. Emptied boxes are kept for the next requests of the thread that delivered
/// them, up to [`SPARE_BOXES`], with their notes when nothing else holds them: with many
/// requests in flight, the allocator's per-thread cache runs out and each new allocation takes
/// its slow paths (measured: about a fifth of what metrics cost a request).
///
/// What the response says (status, router, error) is kept beside the box, not in it: it is
/// written when the response is made, where the memory at hand is the response's, and moved
/// into the record at its delivery, when the box is being read anyway. The box is touched at
/// the start and at the delivery only.
pub(crate) struct Observing {
    observation: Box<Observation>,
    response: Responded,
}

/// The response's part of a record, until the report.
struct Responded {
    /// Whether the observer wants response headers (asked at the start).
    wants_headers: bool,
    status: StatusCode,
    error: Option<ProxyErrorKind>,
    router: Option<Arc<str>>,
    service: Option<Arc<str>>,
    headers: Option<Box<http::HeaderMap>>,
}

struct Observation {
    /// `None` in a spare box: a box keeps nothing of its last request but small values that
    /// the next one overwrites (and its entrypoint's name).
    observer: Option<Arc<Installed>>,
    record: RequestRecord,
    start: Instant,
    /// Reset, and held by nothing else, in a spare box.
    notes: Arc<RequestNotes>,
}

/// Empty observation boxes a thread keeps.
const SPARE_BOXES: usize = 64;

thread_local! {
    #[expect(
        clippy::vec_box,
        reason = "the allocations are what is kept, to be handed out again as they are"
    )]
    static SPARE: std::cell::RefCell<Vec<Box<Observation>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

impl Observing {
    /// Starts observing `request`. `client` (which the routing puts in the request's
    /// extensions) carries the notes handlers make; the request's body is to be wrapped by
    /// [`Self::count`].
    pub(crate) fn begin<B>(
        observer: Arc<Installed>,
        request: &Request<B>,
        client: &mut ClientInfo,
        tls: Option<TlsParams>,
        host: Option<&HeaderValue>,
        trace: Option<RequestTrace>,
    ) -> Self {
        let mut observing = SPARE
            .try_with(|spare| {
                let mut spare = spare.borrow_mut();
                let taken = spare.pop();
                // The next request's box, on its way to the cache meanwhile.
                if let Some(next) = spare.last() {
                    prefetch(next);
                }
                taken
            })
            .ok()
            .flatten()
            .unwrap_or_else(|| Box::new(Observation::blank(&client.entrypoint)));
        let observation = &mut *observing;
        observation.start = Instant::now();
        let record = &mut observation.record;
        if !Arc::ptr_eq(&record.entrypoint, &client.entrypoint) {
            record.entrypoint = client.entrypoint.clone();
        }
        record.method = request.method().clone();
        let wanted = observer.headers.as_ref();
        // One pass over the headers for the protocol and for whether any is wanted (most
        // requests have none of those).
        let (protocol, named) =
            Protocol::and_names(request.headers(), wanted.map_or(&[], |w| w.names()));
        record.protocol = protocol;
        record.version = request.version();
        if observer.host {
            record.host = host.cloned();
        }
        if observer.target {
            let target = request.uri().path_and_query().map_or("/", |p| p.as_str());
            record.target.push_str(target);
        }
        record.client = client.peer;
        record.tls = tls;
        record.headers = match wanted {
            Some(all @ WantedHeaders::All) => all.copy(request.headers()),
            Some(some) if named => some.copy(request.headers()),
            _ => None,
        };
        record.trace = trace;
        let wants_headers = observer.response_headers.is_some();
        observation.observer = Some(observer);
        client.notes = Some(observation.notes.clone());
        Observing {
            observation: observing,
            response: Responded {
                wants_headers,
                status: StatusCode::OK,
                error: None,
                router: None,
                service: None,
                headers: None,
            },
        }
    }

    /// The request's body, counted into the observation's notes (and boxed, once). A body
    /// already at its end (most requests have none) has nothing to count: it is only boxed.
    pub(crate) fn count<B>(&self, body: B) -> Body
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        if body.is_end_stream() {
            return body.map_err(Into::into).boxed_unsync();
        }
        CountedBody {
            body,
            notes: self.observation.notes.clone(),
        }
        .boxed_unsync()
    }

    /// Takes in the response: its status, the router and service that made it, the headers
    /// observers want, kept beside the box until they go into the record at the delivery, once
    /// the body has been sent ([`WatchedBody`], or [`Self::attach`]).
    pub(crate) fn respond(
        &mut self,
        response: &Response<Body>,
        router: Option<(Arc<str>, Option<Arc<str>>)>,
    ) {
        let responded = &mut self.response;
        (responded.router, responded.service) = match router {
            Some((router, service)) => (Some(router), service),
            None => (None, None),
        };
        responded.status = response.status();
        responded.error = response_error(response);
        if responded.wants_headers {
            responded.headers = self
                .observation
                .observer
                .as_deref()
                .and_then(|observer| observer.response_headers.as_ref())
                .and_then(|wanted| wanted.pick(response.headers()));
        }
    }

    /// Attaches the observation to `response`'s body (boxed once more): it is reported when
    /// the body ends or drops. For callers whose response body is not a [`WatchedBody`] already.
    pub(crate) fn attach(self, response: &mut Response<Body>) {
        let body = std::mem::take(response.body_mut());
        *response.body_mut() = WatchedBody::<()>::new(body, None, Some(self)).boxed_unsync();
    }

    /// Hands the observation to its observer with how the response ended: now, or with the
    /// next reports of this thread when it batches them ([`batch_reports_here`]). The box is
    /// not touched here: its lines have gone cold while the request was away, and a batch
    /// fetches them ahead of their turn.
    fn report(self, response_bytes: u64, completed: bool) {
        let ended = Ended {
            observing: self,
            at: Instant::now(),
            response_bytes,
            completed,
        };
        if let Some(ended) = Batch::hold(ended) {
            ended.deliver(&Clock::now());
        }
    }
}

/// An observation whose response has ended, waiting for its delivery.
struct Ended {
    observing: Observing,
    at: Instant,
    response_bytes: u64,
    completed: bool,
}

impl Ended {
    /// Completes the record, hands it to its observer, then empties the box (in place) and
    /// keeps it for the next request of this thread, with its notes when no body or request
    /// holds them any more.
    fn deliver(self, clock: &Clock) {
        let Ended {
            observing:
                Observing {
                    mut observation,
                    response,
                },
            at,
            response_bytes,
            completed,
        } = self;
        let Some(observer) = observation.observer.take() else {
            return;
        };
        let notes = &observation.notes;
        let record = &mut observation.record;
        record.router = response.router;
        record.service = response.service;
        record.status = response.status;
        record.error = response.error;
        record.response_headers = response.headers;
        record.request_bytes = notes.request_bytes.load(Ordering::Relaxed);
        record.response_bytes = response_bytes;
        record.completed = completed;
        record.duration = at.saturating_duration_since(observation.start);
        record.started = clock.wall_at(observation.start);
        record.server = notes
            .server
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        record.username = notes.username.get().cloned();
        record.retries = notes.retries.load(Ordering::Relaxed);
        observer.observer.observe(record);
        drop(observer);
        record.release();
        match Arc::get_mut(&mut observation.notes) {
            Some(unshared) => *unshared = RequestNotes::default(),
            // A request body someone still holds counts into these: the next gets new ones.
            None => observation.notes = Arc::default(),
        }
        let _ = SPARE.try_with(|spare| {
            let mut spare = spare.borrow_mut();
            if spare.len() < SPARE_BOXES {
                spare.push(observation);
            }
        });
    }
}

/// Asks the CPU for `observation`'s cache lines, and its notes', ahead of their use.
fn prefetch(observation: &Observation) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let start = std::ptr::from_ref(observation).cast::<i8>();
        let notes = Arc::as_ptr(&observation.notes).cast::<i8>();
        // SAFETY: a prefetch is a hint that never faults and reads nothing into the
        // program; the feature it needs (SSE) is part of every x86_64 CPU.
        unsafe {
            for line in (0..size_of::<Observation>()).step_by(64) {
                _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(line));
            }
            _mm_prefetch::<_MM_HINT_T0>(notes);
        }
    }
}

/// The wall clock and the monotonic clock read together, once for a batch of reports: a
/// request's wall-clock start is worked out from its monotonic one.
struct Clock {
    wall: SystemTime,
    mono: Instant,
}

impl Clock {
    fn now() -> Self {
        Clock {
            wall: SystemTime::now(),
            mono: Instant::now(),
        }
    }

    /// The wall-clock time of `instant`, an earlier monotonic one.
    fn wall_at(&self, instant: Instant) -> SystemTime {
        self.wall
            .checked_sub(self.mono.saturating_duration_since(instant))
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }
}

/// Reports a thread holds before it hands them to their observers together.
const BATCH_REPORTS: usize = 16;

/// The reports a worker thread holds ([`batch_reports_here`]), handed to their observers
/// [`BATCH_REPORTS`] at a time, when the thread is about to go idle, or when anyone asks
/// ([`flush_reports`]).
///
/// Why: an observer's code and data (the access log's formatter, the metric series) are
/// evicted from the CPU's caches by the rest of a request's path, and cost cache misses for
/// every request they see one at a time; a run of reports pays them once. Measured with
/// callgrind's cache simulation: the misses of the access log and metrics per request.
struct Batch {
    /// Locked by its thread to add a report, and by [`flush_reports`] from any thread.
    held: std::sync::Mutex<Vec<Ended>>,
}

/// Every thread's [`Batch`], for [`flush_reports`].
static BATCHES: std::sync::Mutex<Vec<Arc<Batch>>> = std::sync::Mutex::new(Vec::new());

thread_local! {
    static BATCH: std::cell::RefCell<Option<Arc<Batch>>> = const { std::cell::RefCell::new(None) };
}

impl Batch {
    /// Delivers what the batch holds, waiting for its lock.
    fn flush(&self) {
        deliver_all(&mut self.held.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Keeps `ended` in this thread's batch, delivering the batch when it is full; hands it
    /// back when the thread does not batch (or [`flush_reports`] has the batch).
    fn hold(ended: Ended) -> Option<Ended> {
        let mut ended = Some(ended);
        let _ = BATCH.try_with(|batch| {
            let batch = batch.borrow();
            let Some(batch) = batch.as_ref() else {
                return;
            };
            let Ok(mut held) = batch.held.try_lock() else {
                return;
            };
            held.extend(ended.take());
            if held.len() >= BATCH_REPORTS {
                deliver_all(&mut held);
            }
        });
        ended
    }
}

/// Hands every report in `held` to its observer, in order, each box fetched while the one
/// before is delivered.
fn deliver_all(held: &mut Vec<Ended>) {
    if held.is_empty() {
        return;
    }
    let clock = Clock::now();
    let mut reports = held.drain(..).peekable();
    while let Some(ended) = reports.next() {
        if let Some(next) = reports.peek() {
            prefetch(&next.observing.observation);
        }
        ended.deliver(&clock);
    }
}

/// Makes the calling thread batch the reports of the requests it serves: for a runtime's
/// worker threads, whose runtime calls [`flush_reports_here`] before each goes idle
/// (`tokio::runtime::Builder::on_thread_park`) and when it stops. A thread that never calls
/// this reports each request as its response ends.
pub fn batch_reports_here() {
    let _ = BATCH.try_with(|batch| {
        let mut batch = batch.borrow_mut();
        if batch.is_none() {
            let fresh = Arc::new(Batch {
                held: std::sync::Mutex::new(Vec::with_capacity(BATCH_REPORTS)),
            });
            BATCHES
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(fresh.clone());
            *batch = Some(fresh);
        }
    });
}

/// Sets `runtime`'s worker threads to batch their reports: each batches from its first idle
/// moment on ([`batch_reports_here`]), delivers what it holds whenever it goes idle again
/// ([`flush_reports_here`]), and when it stops ([`stop_batching_here`]). The park hook runs
/// on workers only: the blocking pool's threads never batch. A worker kept busy may not go
/// idle for long: the runtime should also call [`flush_reports`] now and then (the binary
/// does, every 100 ms).
pub fn batch_on_workers(runtime: &mut tokio::runtime::Builder) -> &mut tokio::runtime::Builder {
    runtime
        .on_thread_park(|| {
            batch_reports_here();
            flush_reports_here();
        })
        .on_thread_stop(stop_batching_here)
}

/// Delivers the reports the calling thread holds.
pub fn flush_reports_here() {
    let _ = BATCH.try_with(|batch| {
        if let Some(batch) = batch.borrow().as_ref() {
            batch.flush();
        }
    });
}

/// Delivers the reports the calling thread holds and stops batching on it: for a thread
/// that is about to end (`tokio::runtime::Builder::on_thread_stop`).
pub fn stop_batching_here() {
    flush_reports_here();
    let _ = BATCH.try_with(|batch| {
        if let Some(batch) = batch.borrow_mut().take() {
            BATCHES
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|other| !Arc::ptr_eq(other, &batch));
        }
    });
}

/// Delivers the reports every thread holds: before what reads the observers' results must
/// see every request that has ended (a metrics scrape, the access log's close).
pub fn flush_reports() {
    let batches = BATCHES.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for batch in batches {
        batch.flush();
    }
}

impl Observation {
    /// An observation of nothing yet, for a new box.
    fn blank(entrypoint: &Arc<str>) -> Self {
        Observation {
            observer: None,
            record: RequestRecord {
                entrypoint: entrypoint.clone(),
                router: None,
                service: None,
                method: Method::GET,
                protocol: Protocol::Http,
                version: Version::HTTP_11,
                host: None,
                target: String::new(),
                client: SocketAddr::from(([0, 0, 0, 0], 0)),
                tls: None,
                status: StatusCode::OK,
                error: None,
                request_bytes: 0,
                response_bytes: 0,
                completed: false,
                duration: Duration::ZERO,
                started: SystemTime::UNIX_EPOCH,
                headers: None,
                response_headers: None,
                server: None,
                username: None,
                retries: 0,
                trace: None,
            },
            start: Instant::now(),
            notes: Arc::default(),
        }
    }
}

/// A record's target keeps its capacity for the next request up to this.
const TARGET_KEPT: usize = 1024;

impl RequestRecord {
    /// The target's path (`/` when it has none).
    pub fn path(&self) -> &str {
        match self.target.split_once('?') {
            Some(("", _)) => "/",
            Some((path, _)) => path,
            None if self.target.is_empty() => "/",
            None => &self.target,
        }
    }

    /// The target's query, after its `?`.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, query)| query)
    }

    /// Lets go of what the record holds of its request and connection (the host shares the
    /// connection's read buffer), for its box to wait for the next request holding nothing.
    fn release(&mut self) {
        self.router = None;
        self.service = None;
        self.host = None;
        self.target.clear();
        if self.target.capacity() > TARGET_KEPT {
            self.target = String::new();
        }
        self.headers = None;
        self.response_headers = None;
        self.server = None;
        self.username = None;
        self.trace = None;
    }
}

pin_project_lite::pin_project! {
    /// A request body that counts the data bytes read from it (boxed once, with it).
    struct CountedBody<B> {
        #[pin]
        body: B,
        notes: Arc<RequestNotes>,
    }
}

impl<B> http_body::Body for CountedBody<B>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.body.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.notes
                        .request_bytes
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The observation's part in a response body, for the body that carries it: counts the data
/// bytes the body yields and reports once, at its end, at an error, or when dropped unfinished.
struct BodyWatch {
    /// Taken when reported; `None` for a request not observed.
    pending: Option<Observing>,
    response_bytes: u64,
}

impl BodyWatch {
    fn new(observing: Option<Observing>) -> Self {
        BodyWatch {
            pending: observing,
            response_bytes: 0,
        }
    }

    /// Takes in what the body's `poll_frame` returned.
    fn saw(&mut self, polled: &Poll<Option<Result<Frame<Bytes>, BoxError>>>) {
        if self.pending.is_none() {
            return;
        }
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.response_bytes += data.len() as u64;
                }
            }
            Poll::Ready(None) => self.report(true),
            Poll::Ready(Some(Err(_))) => self.report(false),
            Poll::Pending => {}
        }
    }

    /// `body`, which carries this, is being dropped: reported now if not yet, as complete
    /// when the body had said it had no more to send (hyper does not poll a body that says it
    /// is empty: dropping it is its end).
    fn body_dropped(&mut self, body: &Body) {
        if self.pending.is_some() {
            self.report(http_body::Body::is_end_stream(body));
        }
    }

    fn report(&mut self, completed: bool) {
        if let Some(observation) = self.pending.take() {
            observation.report(self.response_bytes, completed);
        }
    }
}

/// A response body that carries its request's observation ([`BodyWatch`]) and, optionally,
/// a `guard` (the connection's in-flight count) held until its last frame or an error has
/// been read, or until it is dropped unread.
pub(crate) struct WatchedBody<G> {
    body: Body,
    guard: Option<G>,
    watch: BodyWatch,
}

impl<G> WatchedBody<G> {
    pub(crate) fn new(body: Body, guard: Option<G>, observing: Option<Observing>) -> Self {
        WatchedBody {
            body,
            guard,
            watch: BodyWatch::new(observing),
        }
    }
}

impl<G: Unpin> http_body::Body for WatchedBody<G> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        this.watch.saw(&polled);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            this.guard = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl<G> Drop for WatchedBody<G> {
    fn drop(&mut self) {
        self.watch.body_dropped(&self.body);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use http::header::HOST;
    use http_body_util::Full;
    use hyper_util::client::legacy::Client;
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use l4::tcp::dispatch::HttpConn;
    use tokio::net::TcpListener;

    use super::*;
    use crate::handler::{BoxFuture, Handler, full_body};
    use crate::router::{Route, Table};
    use crate::rule::HttpRule;
    use crate::server::{EntrypointConfig, HttpEntrypoint, HttpRoutes, RouteTarget};

    /// Keeps every record it is shown.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<RequestRecord>>);

    impl RequestObserver for Recorder {
        fn observe(&self, record: &RequestRecord) {
            self.0.lock().unwrap().push(record.clone());
        }
    }

    impl Recorder {
        /// The records, once there are `n` (a record lands when the server is done with the
        /// body, which may be just after the client has read it).
        async fn wait_for(&self, n: usize) -> Vec<RequestRecord> {
            for _ in 0..500 {
                let records = self.0.lock().unwrap().clone();
                if records.len() >= n {
                    return records;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("fewer than {n} records: {:?}", self.0.lock().unwrap());
        }
    }

    /// Reads the whole request body, then answers `hello` (5 bytes).
    struct Hello;

    impl Handler for Hello {
        fn call(&self, request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
            Box::pin(async move {
                let _ = request.into_body().collect().await;
                Response::new(full_body("hello"))
            })
        }
    }

    /// Answers `abc`, then never ends its body.
    struct Endless;

    impl Handler for Endless {
        fn call(&self, _request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
            Box::pin(async { Response::new(crate::handler::boxed(OnceThenPending(true))) })
        }
    }

    struct OnceThenPending(bool);

    impl http_body::Body for OnceThenPending {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            if std::mem::take(&mut self.0) {
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"abc")))));
            }
            Poll::Pending
        }
    }

    fn route(
        name: &str,
        service: &str,
        rule: &str,
        handler: Arc<dyn Handler>,
    ) -> Route<RouteTarget> {
        let rule = HttpRule::compile(rule).unwrap();
        Route {
            name: name.to_owned(),
            priority: rule.default_priority(),
            precedence: 0,
            rule,
            target: RouteTarget {
                router: Arc::from(name),
                service: Some(Arc::from(service)),
                handler,
                tls_option: None,
                retirement: Default::default(),
            },
        }
    }

    /// An entrypoint `web` on a loopback port with the routes `a.test` (Hello) and
    /// `endless.test` (Endless), observed by the returned recorder.
    async fn observed_entrypoint() -> (SocketAddr, HttpEntrypoint, Arc<Recorder>) {
        let entrypoint = HttpEntrypoint::new(EntrypointConfig::new("web"));
        entrypoint.set_routes(Arc::new(HttpRoutes {
            plain: Table::new(vec![
                route(
                    "api@file",
                    "api-svc@file",
                    "Host(`a.test`)",
                    Arc::new(Hello),
                ),
                route(
                    "feed@file",
                    "feed-svc@file",
                    "Host(`endless.test`)",
                    Arc::new(Endless),
                ),
            ]),
            tls: Table::new(Vec::new()),
        }));
        let recorder = Arc::new(Recorder::default());
        entrypoint.set_observer(Some(recorder.clone()));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = entrypoint.clone();
        tokio::spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                let conn = HttpConn {
                    client: peer,
                    local: addr,
                    sni: None,
                    tls_option: None,
                    peer_certificates: None,
                };
                let server = server.clone();
                tokio::spawn(async move { server.serve(stream, conn).await });
            }
        });
        (addr, entrypoint, recorder)
    }

    fn request(
        addr: SocketAddr,
        method: Method,
        host: &str,
        body: &'static str,
    ) -> Request<Full<Bytes>> {
        Request::builder()
            .method(method)
            .uri(format!("http://{addr}/some/path?q=1"))
            .header(HOST, host)
            .header(CONTENT_TYPE, "application/grpc")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap()
    }

    /// Sends `request` and reads its whole response; the record `recorder` gets for it, its
    /// `n`th.
    async fn exchange(
        client: &Client<HttpConnector, Full<Bytes>>,
        request: Request<Full<Bytes>>,
        recorder: &Recorder,
        n: usize,
    ) -> RequestRecord {
        let response = client.request(request).await.unwrap();
        response.into_body().collect().await.unwrap();
        recorder.wait_for(n).await.remove(n - 1)
    }

    /// Notes a user, a server and a retry for requests with `x-note`, nothing for others;
    /// reads the body either way.
    struct Noting;

    impl Handler for Noting {
        fn call(&self, request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
            Box::pin(async move {
                if request.headers().contains_key("x-note") {
                    let notes = RequestNotes::of(&request).expect("observed requests have notes");
                    notes.note_user("ann");
                    notes.note_server(&Arc::from("http://10.0.0.1:80"));
                    notes.note_retry();
                }
                let _ = request.into_body().collect().await;
                Response::new(full_body("ok"))
            })
        }
    }

    /// Observation boxes and notes are kept for the thread's next requests: nothing of a
    /// request's notes shows in the next one's record.
    #[tokio::test]
    async fn a_request_s_notes_never_show_in_the_next_one_s_record() {
        let (addr, entrypoint, recorder) = observed_entrypoint().await;
        entrypoint.set_routes(Arc::new(HttpRoutes {
            plain: Table::new(vec![route(
                "notes@file",
                "notes-svc@file",
                "Host(`notes.test`)",
                Arc::new(Noting),
            )]),
            tls: Table::new(Vec::new()),
        }));
        let h1 = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let noted = [true, false, false, true, false];
        for (i, note) in noted.into_iter().enumerate() {
            let body = if note { "abc" } else { "" };
            let mut request = request(addr, Method::POST, "notes.test", body);
            if note {
                request
                    .headers_mut()
                    .insert("x-note", HeaderValue::from_static("1"));
            }
            let response = h1.request(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            response.into_body().collect().await.unwrap();
            // One at a time: each request's box and notes are back before the next begins.
            recorder.wait_for(i + 1).await;
        }
        let records = recorder.wait_for(noted.len()).await;
        let seen: Vec<_> = records
            .iter()
            .map(|r| {
                (
                    r.username.as_deref(),
                    r.server.as_deref(),
                    r.retries,
                    r.request_bytes,
                )
            })
            .collect();
        let with = (Some("ann"), Some("http://10.0.0.1:80"), 1, 3);
        let without = (None, None, 0, 0);
        assert_eq!(seen, [with, without, without, with, without]);
    }

    #[tokio::test]
    async fn every_request_is_reported_once_with_its_route_status_and_bytes() {
        let (addr, entrypoint, recorder) = observed_entrypoint().await;
        let h1 = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let requests = [
            (Method::GET, "a.test", "", StatusCode::OK),
            (Method::POST, "a.test", "abcd", StatusCode::OK),
            (Method::GET, "nowhere.test", "", StatusCode::NOT_FOUND),
        ];
        for (method, host, body, status) in requests {
            let response = h1.request(request(addr, method, host, body)).await.unwrap();
            assert_eq!(response.status(), status);
            response.into_body().collect().await.unwrap();
        }
        // HTTP/2 names its host in `:authority`.
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut h2, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        let mut put = request(addr, Method::PUT, "a.test", "xy");
        *put.uri_mut() = "http://a.test/some/path?q=1".parse().unwrap();
        put.headers_mut().remove(HOST);
        let response = h2.send_request(put).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.into_body().collect().await.unwrap();
        let records = recorder.wait_for(4).await;
        assert_eq!(records.len(), 4, "{records:?}");
        let summary: Vec<_> = records
            .iter()
            .map(|r| {
                (
                    r.router.as_deref(),
                    r.service.as_deref(),
                    r.method.as_str(),
                    r.version,
                    r.status.as_u16(),
                    r.request_bytes,
                    r.response_bytes,
                    r.completed,
                )
            })
            .collect();
        let not_found =
            u64::try_from(crate::error::error_response_body(ProxyErrorKind::NoRoute).len())
                .unwrap();
        assert_eq!(
            summary,
            [
                (
                    Some("api@file"),
                    Some("api-svc@file"),
                    "GET",
                    Version::HTTP_11,
                    200,
                    0,
                    5,
                    true
                ),
                (
                    Some("api@file"),
                    Some("api-svc@file"),
                    "POST",
                    Version::HTTP_11,
                    200,
                    4,
                    5,
                    true
                ),
                (None, None, "GET", Version::HTTP_11, 404, 0, not_found, true),
                (
                    Some("api@file"),
                    Some("api-svc@file"),
                    "PUT",
                    Version::HTTP_2,
                    200,
                    2,
                    5,
                    true
                ),
            ]
        );
        for record in &records {
            assert_eq!(&*record.entrypoint, "web");
            assert_eq!(record.protocol, Protocol::Grpc);
            assert_eq!(record.client.ip(), addr.ip());
            assert_eq!(record.path(), "/some/path");
            assert!(record.tls.is_none());
        }
        assert_eq!(records[2].error, Some(ProxyErrorKind::NoRoute));
        assert_eq!(records[0].error, None);
        assert_eq!(records[0].host.as_ref().unwrap(), "a.test");

        // Without an observer nothing more is reported.
        entrypoint.set_observer(None);
        let response = h1
            .request(request(addr, Method::GET, "a.test", ""))
            .await
            .unwrap();
        response.into_body().collect().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(recorder.0.lock().unwrap().len(), 4);
    }

    /// A recorder that asks for some request and response headers.
    struct Picky {
        request: WantedHeaders,
        response: WantedHeaders,
        recorder: Arc<Recorder>,
    }

    impl RequestObserver for Picky {
        fn observe(&self, record: &RequestRecord) {
            self.recorder.observe(record);
        }

        fn wanted_headers(&self) -> Option<&WantedHeaders> {
            Some(&self.request)
        }

        fn wanted_response_headers(&self) -> Option<&WantedHeaders> {
            Some(&self.response)
        }
    }

    #[tokio::test]
    async fn records_carry_only_the_headers_their_observer_asks_for() {
        let (addr, entrypoint, plain) = observed_entrypoint().await;
        let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        // Not asked for: no copies.
        let record = exchange(
            &client,
            request(addr, Method::GET, "nowhere.test", ""),
            &plain,
            1,
        )
        .await;
        assert!(record.headers.is_none() && record.response_headers.is_none());

        let recorder = Arc::new(Recorder::default());
        entrypoint.set_observer(Some(Arc::new(Picky {
            request: WantedHeaders::Only(vec![HOST]),
            response: WantedHeaders::Only(vec![CONTENT_TYPE]),
            recorder: recorder.clone(),
        })));
        let record = exchange(
            &client,
            request(addr, Method::GET, "nowhere.test", ""),
            &recorder,
            1,
        )
        .await;
        let headers = record.headers.expect("request headers");
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert_eq!(headers[HOST], "nowhere.test");
        let response_headers = record.response_headers.expect("response headers");
        assert_eq!(response_headers.len(), 1, "{response_headers:?}");
        assert_eq!(response_headers[CONTENT_TYPE], "text/plain; charset=utf-8");
    }

    /// Shows records nothing of the request's target or host.
    struct Blind(Arc<Recorder>);

    impl RequestObserver for Blind {
        fn observe(&self, record: &RequestRecord) {
            self.0.observe(record);
        }

        fn wants_target(&self) -> bool {
            false
        }

        fn wants_host(&self) -> bool {
            false
        }
    }

    #[tokio::test]
    async fn records_carry_the_target_and_host_only_for_observers_that_show_them() {
        let (addr, entrypoint, recorder) = observed_entrypoint().await;
        let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let before = SystemTime::now();
        let record = exchange(
            &client,
            request(addr, Method::GET, "a.test", ""),
            &recorder,
            1,
        )
        .await;
        let after = SystemTime::now();
        assert_eq!(record.target, "/some/path?q=1");
        assert_eq!((record.path(), record.query()), ("/some/path", Some("q=1")));
        assert_eq!(record.host.as_ref().unwrap(), "a.test");
        // Worked out from the monotonic clock at delivery: within the exchange.
        let slack = Duration::from_millis(50);
        assert!(
            record.started + slack >= before && record.started <= after + slack,
            "{before:?} <= {:?} <= {after:?}",
            record.started
        );

        let blind = Arc::new(Recorder::default());
        entrypoint.set_observer(Some(Arc::new(Blind(blind.clone()))));
        let record = exchange(&client, request(addr, Method::GET, "a.test", ""), &blind, 1).await;
        assert_eq!((record.target.as_str(), &record.host), ("", &None));
        assert_eq!((record.path(), record.query()), ("/", None));
    }

    #[test]
    fn a_target_s_path_and_query() {
        let record = |target: &str| {
            let mut record = Observation::blank(&Arc::from("web")).record;
            record.target = target.to_owned();
            record
        };
        let split = |target: &str| {
            let record = record(target);
            (record.path().to_owned(), record.query().map(str::to_owned))
        };
        assert_eq!(split("/a/b"), ("/a/b".to_owned(), None));
        assert_eq!(
            split("/a?x=1&y"),
            ("/a".to_owned(), Some("x=1&y".to_owned()))
        );
        assert_eq!(split("/?"), ("/".to_owned(), Some(String::new())));
        assert_eq!(split("?q"), ("/".to_owned(), Some("q".to_owned())));
        assert_eq!(split("/a?b?c"), ("/a".to_owned(), Some("b?c".to_owned())));
        assert_eq!(split(""), ("/".to_owned(), None));
    }

    /// Stops the test thread's batching however the test ends: the thread may serve the
    /// next test.
    struct Batching;

    impl Batching {
        fn here() -> Self {
            batch_reports_here();
            Batching
        }
    }

    impl Drop for Batching {
        fn drop(&mut self) {
            stop_batching_here();
        }
    }

    /// The test's runtime runs the server on the test's own thread, which batches: its
    /// reports wait for a flush or a full batch.
    #[tokio::test]
    async fn a_batching_thread_holds_reports_until_a_flush_or_a_full_batch() {
        let (addr, _entrypoint, recorder) = observed_entrypoint().await;
        let _batching = Batching::here();
        let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let exchange = |path: &'static str| {
            let client = client.clone();
            async move {
                let request = Request::builder()
                    .uri(format!("http://{addr}{path}"))
                    .header(HOST, "a.test")
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                let response = client.request(request).await.unwrap();
                assert_eq!(response.status(), StatusCode::OK);
                response.into_body().collect().await.unwrap();
            }
        };
        for path in ["/1", "/2", "/3"] {
            exchange(path).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(recorder.0.lock().unwrap().is_empty(), "held until a flush");
        flush_reports();
        let records = recorder.wait_for(3).await;
        let targets: Vec<_> = records.iter().map(|r| r.target.as_str()).collect();
        assert_eq!(targets, ["/1", "/2", "/3"]);

        // A full batch is delivered at once, in order, and the next waits again.
        for _ in 0..=BATCH_REPORTS {
            exchange("/more").await;
        }
        let records = recorder.wait_for(3 + BATCH_REPORTS).await;
        assert!(records.iter().skip(3).all(|r| r.target == "/more"));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(recorder.0.lock().unwrap().len(), 3 + BATCH_REPORTS);
        flush_reports_here();
        recorder.wait_for(4 + BATCH_REPORTS).await;
    }

    /// As the binary runs them: workers batch, and deliver as soon as they go idle, so a
    /// report lands about when it would without batching.
    #[test]
    fn workers_deliver_their_reports_when_they_go_idle() {
        let runtime = batch_on_workers(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all(),
        )
        .build()
        .unwrap();
        runtime.block_on(async {
            let (addr, _entrypoint, recorder) = observed_entrypoint().await;
            let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
            for n in 1..=3 {
                // Well before the recorder's patience ends, with no flush asked for.
                exchange(
                    &client,
                    request(addr, Method::GET, "a.test", ""),
                    &recorder,
                    n,
                )
                .await;
            }
        });
    }

    #[tokio::test]
    async fn a_response_the_client_abandons_is_reported_unfinished_when_dropped() {
        let (addr, _entrypoint, recorder) = observed_entrypoint().await;
        let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let response = client
            .request(request(addr, Method::GET, "endless.test", ""))
            .await
            .unwrap();
        let mut body = response.into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, "abc");
        assert!(
            recorder.0.lock().unwrap().is_empty(),
            "reported before its end"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(body);
        drop(client);
        let records = recorder.wait_for(1).await;
        let record = &records[0];
        assert_eq!(record.router.as_deref(), Some("feed@file"));
        assert_eq!(record.response_bytes, 3);
        assert!(!record.completed);
        assert!(
            record.duration >= Duration::from_millis(100),
            "{:?}",
            record.duration
        );
    }

    #[test]
    fn protocol_comes_from_the_headers_in_traefiks_order() {
        let of = |pairs: &[(&'static str, &'static str)]| {
            let mut headers = HeaderMap::new();
            for (name, value) in pairs {
                headers.append(*name, HeaderValue::from_static(value));
            }
            Protocol::of(&headers).as_str()
        };
        assert_eq!(of(&[]), "http");
        assert_eq!(
            of(&[
                ("connection", "keep-alive, Upgrade"),
                ("upgrade", "WebSocket")
            ]),
            "websocket"
        );
        assert_eq!(of(&[("upgrade", "websocket")]), "http");
        assert_eq!(
            of(&[("accept", "text/html, text/event-stream;q=0.9")]),
            "sse"
        );
        assert_eq!(of(&[("content-type", "application/grpc+proto")]), "grpc");
        assert_eq!(
            of(&[("content-type", "application/grpc-web-text")]),
            "grpc-web"
        );
        assert_eq!(of(&[("content-type", "Application/GRPC")]), "grpc");
        assert_eq!(of(&[("content-type", "application/json")]), "http");
        // Tokens in any of several lines, in any order of the headers.
        assert_eq!(
            of(&[
                ("upgrade", "websocket"),
                ("connection", "keep-alive"),
                ("connection", "upgrade")
            ]),
            "websocket"
        );
        // SSE outranks gRPC; the first content type counts.
        assert_eq!(
            of(&[
                ("content-type", "application/grpc"),
                ("accept", "text/event-stream")
            ]),
            "sse"
        );
        assert_eq!(
            of(&[
                ("content-type", "application/json"),
                ("content-type", "application/grpc")
            ]),
            "http"
        );
    }

    /// A rustls server connection after an in-memory handshake with a client limited to
    /// `version`.
    fn handshake(version: &'static rustls::SupportedProtocolVersion) -> rustls::ServerConnection {
        use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let generated = rcgen::generate_simple_self_signed(vec!["a.test".to_owned()]).unwrap();
        let cert = generated.cert.der().clone();
        let key = PrivateKeyDer::from(PrivatePkcs8KeyDer::from(
            generated.signing_key.serialize_der(),
        ));
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut server = rustls::ServerConnection::new(Arc::new(server)).unwrap();
        let name = ServerName::try_from("a.test").unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(client), name).unwrap();
        assert_eq!(
            TlsParams::of(&server),
            None,
            "no parameters before the handshake"
        );
        while server.is_handshaking() || client.is_handshaking() {
            let mut wire = Vec::new();
            client.write_tls(&mut wire).unwrap();
            server.read_tls(&mut wire.as_slice()).unwrap();
            server.process_new_packets().unwrap();
            let mut wire = Vec::new();
            server.write_tls(&mut wire).unwrap();
            client.read_tls(&mut wire.as_slice()).unwrap();
            client.process_new_packets().unwrap();
        }
        server
    }

    #[test]
    fn tls_parameters_are_read_from_the_handshake() {
        let tls13 = TlsParams::of(&handshake(&rustls::version::TLS13)).unwrap();
        assert_eq!(tls13.version, "1.3");
        assert!(
            tls13
                .cipher
                .is_some_and(|c| c.starts_with("TLS_") && !c.starts_with("TLS13")),
            "{tls13:?}"
        );
        let tls12 = TlsParams::of(&handshake(&rustls::version::TLS12)).unwrap();
        assert_eq!(tls12.version, "1.2");
        assert!(
            tls12.cipher.is_some_and(|c| c.starts_with("TLS_ECDHE_")),
            "{tls12:?}"
        );
    }

    #[test]
    fn tls_1_3_suites_carry_their_iana_names() {
        assert_eq!(
            cipher_name(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256),
            Some("TLS_AES_128_GCM_SHA256")
        );
        assert_eq!(
            cipher_name(rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256),
            Some("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256")
        );
    }
}
