//! `mirroring`: every request goes to the main service; a share of them is also sent to each
//! mirror, once the main response has been sent, in the background, answers discarded.
//!
//! Which requests are mirrored is deterministic, as in Traefik: a mirror takes the request
//! when `mirrored * 100 < total * percent` (10% mirrors requests 1, 11, 21...). With
//! `mirror_body` the body is read whole first so it can be sent again; a body over
//! `max_body_size` goes to the main service only. Mirror work is bounded: when
//! [`MAX_MIRRORING`] requests are already being mirrored, new ones are not (never queued).

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::Semaphore;

use super::body::{Buffered, buffer, replay, without_body};
use super::{BuildError, Child, SharedHealth};
use crate::error::ProxyErrorKind;
use crate::handler::{Body, BoxError, BoxFuture, Handler, SharedHandler, boxed, error_response};

/// Requests of one mirroring service being sent to its mirrors at once, at most.
pub(crate) const MAX_MIRRORING: usize = 64;

/// `http.services.<name>.mirroring`, without its services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirroringSpec {
    pub mirror_body: bool,
    /// `None`: no limit (Traefik's `-1`, and any negative value).
    pub max_body_size: Option<u64>,
    /// `healthCheck: {}`: report the main service's health.
    pub health_check: bool,
}

impl Default for MirroringSpec {
    fn default() -> Self {
        Self {
            mirror_body: true,
            max_body_size: None,
            health_check: false,
        }
    }
}

/// One of `mirroring.mirrors`.
#[derive(Clone)]
pub struct Mirror {
    pub name: String,
    pub handler: SharedHandler,
    /// 0 to 100.
    pub percent: i64,
}

struct Counters {
    total: u64,
    mirrored: Vec<u64>,
}

/// The `mirroring` handler.
pub struct Mirroring {
    service: Arc<str>,
    spec: MirroringSpec,
    main: Child,
    mirrors: Vec<(SharedHandler, u64)>,
    counters: Mutex<Counters>,
    running: Arc<Semaphore>,
    health: Option<SharedHealth>,
}

impl Mirroring {
    pub fn new(
        service: &str,
        spec: MirroringSpec,
        main: Child,
        mirrors: Vec<Mirror>,
    ) -> Result<Self, BuildError> {
        let mirrors = mirrors
            .into_iter()
            .map(|mirror| match u64::try_from(mirror.percent) {
                Ok(percent) if percent <= 100 => Ok((mirror.handler, percent)),
                _ => Err(BuildError::MirrorPercent {
                    service: service.to_owned(),
                    mirror: mirror.name,
                    percent: mirror.percent,
                }),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let health = match (spec.health_check, &main.health) {
            (false, _) => None,
            (true, Some(health)) => Some(health.clone()),
            (true, None) => {
                return Err(BuildError::CannotRegister {
                    child: main.name.clone(),
                    parent: service.to_owned(),
                });
            }
        };
        Ok(Self {
            service: service.into(),
            counters: Mutex::new(Counters {
                total: 0,
                mirrored: vec![0; mirrors.len()],
            }),
            spec,
            main,
            mirrors,
            running: Arc::new(Semaphore::new(MAX_MIRRORING)),
            health,
        })
    }

    /// The health reported to parents (the main service's): `Some` with `healthCheck: {}`.
    pub fn health(&self) -> Option<SharedHealth> {
        self.health.clone()
    }

    /// The mirrors that take this request; counts it.
    fn chosen(&self) -> Vec<SharedHandler> {
        let mut counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        counters.total += 1;
        let total = counters.total;
        let mut chosen = Vec::new();
        for ((handler, percent), mirrored) in self.mirrors.iter().zip(&mut counters.mirrored) {
            if *mirrored * 100 < total * percent {
                *mirrored += 1;
                chosen.push(handler.clone());
            }
        }
        chosen
    }
}

impl Handler for Mirroring {
    fn call(&self, request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
        Box::pin(async move {
            let mirrors = self.chosen();
            if mirrors.is_empty() {
                return self.main.handler.call(request).await;
            }
            let (parts, body) = request.into_parts();
            let (main_request, copies) = if self.spec.mirror_body {
                match buffer(body, self.spec.max_body_size).await {
                    Ok(Buffered::Complete(bytes)) => {
                        (replay(&parts, &bytes), Copies::Body(parts, bytes))
                    }
                    Ok(Buffered::TooLarge(body)) => {
                        tracing::debug!(service = %self.service, "no mirroring, request body larger than allowed");
                        return self
                            .main
                            .handler
                            .call(Request::from_parts(parts, body))
                            .await;
                    }
                    Err(error) => {
                        tracing::debug!(service = %self.service, %error, "reading the request body to mirror failed");
                        return error_response(ProxyErrorKind::Internal);
                    }
                }
            } else {
                (
                    Request::from_parts(parts.clone(), body),
                    Copies::Bare(parts),
                )
            };
            let response = self.main.handler.call(main_request).await;
            let launch = Launch {
                service: self.service.clone(),
                copies,
                mirrors,
                running: self.running.clone(),
            };
            response.map(|body| {
                boxed(ThenMirror {
                    inner: body,
                    ended: false,
                    launch: Some(launch),
                })
            })
        })
    }
}

/// What the mirrors are sent.
enum Copies {
    Body(Parts, Bytes),
    Bare(Parts),
}

impl Copies {
    fn request(&self) -> Request<Body> {
        let mut copy = match self {
            Copies::Body(parts, bytes) => replay(parts, bytes),
            Copies::Bare(parts) => without_body(parts),
        };
        // A mirror's server is not the request's: nothing is noted for its observation.
        if let Some(client) = copy
            .extensions_mut()
            .get_mut::<crate::handler::ClientInfo>()
        {
            client.notes = None;
        }
        copy
    }
}

/// The mirroring of one request, started once its main response is sent.
struct Launch {
    service: Arc<str>,
    copies: Copies,
    mirrors: Vec<SharedHandler>,
    running: Arc<Semaphore>,
}

impl Launch {
    fn start(self) {
        let Ok(permit) = self.running.clone().try_acquire_owned() else {
            tracing::debug!(service = %self.service, "no mirroring, too many requests being mirrored");
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // Detached from the client: mirrors finish even though the main exchange is over.
        runtime.spawn(async move {
            for mirror in &self.mirrors {
                let mut body = mirror.call(self.copies.request()).await.into_body();
                // Read the answer to its end so the mirror's connection can be reused.
                while let Some(frame) = body.frame().await {
                    if frame.is_err() {
                        break;
                    }
                }
            }
            drop(permit);
        });
    }
}

/// The main response body; when it is dropped after being sent whole, the mirrors go. A
/// body dropped early (client gone, stream broken) mirrors nothing, as Traefik skips
/// mirroring for cancelled requests.
struct ThenMirror {
    inner: Body,
    ended: bool,
    launch: Option<Launch>,
}

impl HttpBody for ThenMirror {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ThenMirror {
    fn drop(&mut self) {
        // Servers may stop polling a body that says it is over, so ask it too.
        if (self.ended || self.inner.is_end_stream())
            && let Some(launch) = self.launch.take()
        {
            launch.start();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::{empty_body, full_body};
    use crate::service::weighted::tests::{child, leaf};
    use http::header::CONTENT_LENGTH;
    use http_body_util::channel::Channel;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// A mirror's copy keeps the client but not the notes of the request's observation: the
    /// mirror's server must not show as the request's.
    #[test]
    fn copies_for_mirrors_note_nothing_for_the_request() {
        let mut request = Request::new(empty_body());
        request.extensions_mut().insert(crate::handler::ClientInfo {
            peer: "192.0.2.1:5000".parse().unwrap(),
            local: "127.0.0.1:80".parse().unwrap(),
            tls: false,
            entrypoint: "web".into(),
            notes: Some(Arc::default()),
        });
        let (parts, _) = request.into_parts();
        let copies = [
            Copies::Bare(parts.clone()),
            Copies::Body(parts, Bytes::from_static(b"x")),
        ];
        for copy in copies {
            let copy = copy.request();
            let client = copy
                .extensions()
                .get::<crate::handler::ClientInfo>()
                .unwrap();
            assert_eq!(client.peer, "192.0.2.1:5000".parse().unwrap());
            assert!(client.notes.is_none());
            assert!(crate::observe::RequestNotes::of(&copy).is_none());
        }
    }

    /// Records the bodies it receives; answers "ok".
    #[derive(Default)]
    struct Recorder {
        bodies: Mutex<Vec<String>>,
        lengths: Mutex<Vec<Option<String>>>,
        calls: AtomicUsize,
    }

    impl Handler for Recorder {
        fn call(&self, request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
            Box::pin(async move {
                let length = request
                    .headers()
                    .get(CONTENT_LENGTH)
                    .map(|v| v.to_str().unwrap().to_owned());
                let body = request.into_body().collect().await.unwrap().to_bytes();
                self.lengths.lock().unwrap().push(length);
                self.bodies
                    .lock()
                    .unwrap()
                    .push(String::from_utf8(body.to_vec()).unwrap());
                self.calls.fetch_add(1, Ordering::SeqCst);
                Response::new(full_body("ok"))
            })
        }
    }

    fn mirroring(spec: MirroringSpec, percent: i64) -> (Mirroring, Arc<Recorder>, Arc<Recorder>) {
        let main = Arc::new(Recorder::default());
        let mirror = Arc::new(Recorder::default());
        let mirroring = Mirroring::new(
            "mirror@file",
            spec,
            Child::new("main", main.clone() as SharedHandler, None),
            vec![Mirror {
                name: "shadow".to_owned(),
                handler: mirror.clone() as SharedHandler,
                percent,
            }],
        )
        .unwrap();
        (mirroring, main, mirror)
    }

    fn post(body: &'static str) -> Request<Body> {
        Request::builder()
            .method("POST")
            .header(CONTENT_LENGTH, body.len())
            .body(full_body(body))
            .unwrap()
    }

    /// Sends the request and reads the response whole, as a server would.
    async fn serve(handler: &dyn Handler, request: Request<Body>) -> String {
        let body = handler
            .call(request)
            .await
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    }

    async fn settle(recorder: &Recorder, calls: usize) {
        for _ in 0..200 {
            if recorder.calls.load(Ordering::SeqCst) >= calls {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Room for an unexpected extra call to show up.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    #[tokio::test]
    async fn ten_percent_mirrors_one_request_in_ten_starting_with_the_first() {
        let (mirroring, main, mirror) = mirroring(MirroringSpec::default(), 10);
        for i in 0..10 {
            let body: &'static str = ["first", "b", "c", "d", "e", "f", "g", "h", "i", "j"][i];
            assert_eq!(serve(&mirroring, post(body)).await, "ok");
        }
        settle(&mirror, 1).await;
        assert_eq!(main.calls.load(Ordering::SeqCst), 10);
        assert_eq!(*mirror.bodies.lock().unwrap(), ["first"]);
        serve(&mirroring, post("eleventh")).await;
        settle(&mirror, 2).await;
        assert_eq!(*mirror.bodies.lock().unwrap(), ["first", "eleventh"]);
    }

    #[tokio::test]
    async fn the_body_reaches_main_and_mirror_alike() {
        let (mirroring, main, mirror) = mirroring(MirroringSpec::default(), 100);
        serve(&mirroring, post("payload")).await;
        settle(&mirror, 1).await;
        assert_eq!(*main.bodies.lock().unwrap(), ["payload"]);
        assert_eq!(*mirror.bodies.lock().unwrap(), ["payload"]);
        assert_eq!(*mirror.lengths.lock().unwrap(), [Some("7".to_owned())]);
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_not_mirrored_but_reaches_main() {
        let spec = MirroringSpec {
            max_body_size: Some(3),
            ..MirroringSpec::default()
        };
        let (mirroring, main, mirror) = mirroring(spec, 100);
        serve(&mirroring, post("too long")).await;
        serve(&mirroring, post("ok")).await;
        settle(&mirror, 1).await;
        assert_eq!(*main.bodies.lock().unwrap(), ["too long", "ok"]);
        assert_eq!(*mirror.bodies.lock().unwrap(), ["ok"]);
    }

    #[tokio::test]
    async fn without_mirror_body_mirrors_get_an_empty_consistent_request() {
        let spec = MirroringSpec {
            mirror_body: false,
            ..MirroringSpec::default()
        };
        let (mirroring, main, mirror) = mirroring(spec, 100);
        serve(&mirroring, post("payload")).await;
        settle(&mirror, 1).await;
        assert_eq!(*main.bodies.lock().unwrap(), ["payload"]);
        assert_eq!(*mirror.bodies.lock().unwrap(), [""]);
        assert_eq!(*mirror.lengths.lock().unwrap(), [None]);
    }

    /// Main answers with a body the test streams by hand.
    struct Streaming(Mutex<Option<Body>>);

    impl Handler for Streaming {
        fn call(&self, _request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
            let body = self.0.lock().unwrap().take().unwrap_or_else(empty_body);
            Box::pin(async move { Response::new(body) })
        }
    }

    fn streaming_main() -> (
        Mirroring,
        Arc<Recorder>,
        http_body_util::channel::Sender<Bytes, BoxError>,
    ) {
        let (tx, body) = Channel::<Bytes, BoxError>::new(1);
        let mirror = Arc::new(Recorder::default());
        let mirroring = Mirroring::new(
            "mirror@file",
            MirroringSpec::default(),
            Child::new(
                "main",
                Arc::new(Streaming(Mutex::new(Some(boxed(body))))) as SharedHandler,
                None,
            ),
            vec![Mirror {
                name: "shadow".to_owned(),
                handler: mirror.clone() as SharedHandler,
                percent: 100,
            }],
        )
        .unwrap();
        (mirroring, mirror, tx)
    }

    #[tokio::test]
    async fn mirrors_go_once_the_main_response_is_sent_whole() {
        let (mirroring, mirror, mut tx) = streaming_main();
        let mut body = mirroring.call(post("x")).await.into_body();
        tx.send_data(Bytes::from_static(b"part")).await.unwrap();
        assert!(body.frame().await.is_some());
        settle(&mirror, 1).await;
        assert_eq!(mirror.calls.load(Ordering::SeqCst), 0, "not before the end");
        drop(tx);
        assert!(body.frame().await.is_none());
        drop(body);
        settle(&mirror, 1).await;
        assert_eq!(mirror.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_response_abandoned_midway_is_not_mirrored() {
        let (mirroring, mirror, mut tx) = streaming_main();
        let mut body = mirroring.call(post("x")).await.into_body();
        tx.send_data(Bytes::from_static(b"part")).await.unwrap();
        assert!(body.frame().await.is_some());
        drop(body);
        settle(&mirror, 1).await;
        assert_eq!(mirror.calls.load(Ordering::SeqCst), 0);
    }

    /// A mirror that never answers.
    struct Stuck(AtomicUsize);

    impl Handler for Stuck {
        fn call(&self, _request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Box::pin(std::future::pending())
        }
    }

    #[tokio::test]
    async fn mirroring_work_is_bounded_not_queued() {
        let stuck = Arc::new(Stuck(AtomicUsize::new(0)));
        let mirroring = Mirroring::new(
            "mirror@file",
            MirroringSpec::default(),
            Child::new("main", Arc::new(Recorder::default()) as SharedHandler, None),
            vec![Mirror {
                name: "stuck".to_owned(),
                handler: stuck.clone() as SharedHandler,
                percent: 100,
            }],
        )
        .unwrap();
        for _ in 0..MAX_MIRRORING + 10 {
            assert_eq!(serve(&mirroring, post("x")).await, "ok");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(stuck.0.load(Ordering::SeqCst), MAX_MIRRORING);
    }

    #[test]
    fn percent_out_of_range_and_unreported_main_health_are_build_errors() {
        let (_, _, _) = mirroring(MirroringSpec::default(), 0);
        let main = leaf("main");
        let bad = Mirroring::new(
            "mirror@file",
            MirroringSpec::default(),
            child(&main, false),
            vec![Mirror {
                name: "m".to_owned(),
                handler: main.clone() as SharedHandler,
                percent: 101,
            }],
        );
        assert_eq!(
            bad.err().map(|e| e.to_string()).unwrap_or_default(),
            "service mirror@file: mirror m percent 101 is not between 0 and 100"
        );
        let follows = MirroringSpec {
            health_check: true,
            ..MirroringSpec::default()
        };
        assert!(matches!(
            Mirroring::new("mirror@file", follows.clone(), child(&main, false), vec![]),
            Err(BuildError::CannotRegister { .. })
        ));
        let reporting = Mirroring::new("mirror@file", follows, child(&main, true), vec![]).unwrap();
        main.up.store(false, Ordering::SeqCst);
        assert!(!reporting.health().unwrap().is_up());
    }
}
