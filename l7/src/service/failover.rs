//! `failover`: the main service while it is up, else the fallback while it is up, else 503.
//! With `errors.status`, a main response whose status is listed is replaced by the fallback's
//! answer to the same request, so the body is read whole first (over
//! `max_request_body_bytes`: 413).
//!
//! As in Traefik, the main service must report its health unless `errors.status` is set, and
//! the fallback's health is followed (and must be reported) only with `healthCheck: {}`.

use std::ops::RangeInclusive;
use std::sync::Arc;

use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Request, Response, StatusCode};

use super::body::{Buffered, buffer, replay};
use super::{BuildError, Child, Health, SharedHealth};
use crate::error::ProxyErrorKind;
use crate::handler::{Body, BoxFuture, Handler, error_response, full_body};

/// HTTP status ranges, as Traefik writes them: `"500-504"`, `"404"`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatusRanges(Vec<RangeInclusive<u16>>);

impl StatusRanges {
    pub fn new(ranges: Vec<RangeInclusive<u16>>) -> Self {
        Self(ranges)
    }

    /// Parses each of `blocks`, a code or `low-high`.
    pub fn parse<S: AsRef<str>>(blocks: &[S]) -> Result<Self, BuildError> {
        blocks
            .iter()
            .map(|block| {
                let block = block.as_ref();
                let error = || BuildError::StatusRange {
                    range: block.to_owned(),
                };
                let (low, high) = block.split_once('-').unwrap_or((block, block));
                let low = low.trim().parse().map_err(|_| error())?;
                let high = high.trim().parse().map_err(|_| error())?;
                Ok(low..=high)
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    pub fn contains(&self, status: StatusCode) -> bool {
        self.0.iter().any(|range| range.contains(&status.as_u16()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `failover.errors`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FailoverErrors {
    pub status: StatusRanges,
    /// `None`: no limit (Traefik's `-1`).
    pub max_request_body_bytes: Option<u64>,
}

/// `http.services.<name>.failover`, without its services.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FailoverSpec {
    /// `healthCheck: {}`: follow the fallback's health and report the failover's.
    pub health_check: bool,
    pub errors: Option<FailoverErrors>,
}

/// The health a failover reports: down only when both of its services are.
struct FailoverHealth {
    main: Option<SharedHealth>,
    fallback: SharedHealth,
}

impl Health for FailoverHealth {
    fn is_up(&self) -> bool {
        self.main.as_ref().is_none_or(|main| main.is_up()) || self.fallback.is_up()
    }
}

/// The `failover` handler.
pub struct Failover {
    main: Child,
    fallback: Child,
    /// Whether the fallback's health is followed.
    follow_fallback: bool,
    errors: Option<FailoverErrors>,
    health: Option<SharedHealth>,
}

impl Failover {
    pub fn new(
        service: &str,
        spec: FailoverSpec,
        main: Child,
        fallback: Child,
    ) -> Result<Self, BuildError> {
        let cannot_register = |child: &Child| BuildError::CannotRegister {
            child: child.name.clone(),
            parent: service.to_owned(),
        };
        let errors = spec.errors.filter(|errors| !errors.status.is_empty());
        if main.health.is_none() && errors.is_none() {
            return Err(cannot_register(&main));
        }
        let health = if spec.health_check {
            let fallback_health = fallback
                .health
                .clone()
                .ok_or_else(|| cannot_register(&fallback))?;
            Some(Arc::new(FailoverHealth {
                main: main.health.clone(),
                fallback: fallback_health,
            }) as SharedHealth)
        } else {
            None
        };
        Ok(Self {
            main,
            fallback,
            follow_fallback: spec.health_check,
            errors,
            health,
        })
    }

    /// The health reported to parents: `Some` with `healthCheck: {}`.
    pub fn health(&self) -> Option<SharedHealth> {
        self.health.clone()
    }

    fn fallback_up(&self) -> bool {
        !self.follow_fallback || self.fallback.is_up()
    }

    async fn to_fallback(&self, request: Request<Body>) -> Response<Body> {
        if self.fallback_up() {
            self.fallback.handler.call(request).await
        } else {
            unavailable()
        }
    }
}

impl Handler for Failover {
    fn call(&self, request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
        Box::pin(async move {
            if !self.main.is_up() {
                return self.to_fallback(request).await;
            }
            let Some(errors) = &self.errors else {
                return self.main.handler.call(request).await;
            };
            let (parts, body) = request.into_parts();
            let bytes = match buffer(body, errors.max_request_body_bytes).await {
                Ok(Buffered::Complete(bytes)) => bytes,
                Ok(Buffered::TooLarge(_)) => return too_large(),
                Err(error) => {
                    tracing::debug!(%error, "reading the request body for failover failed");
                    return error_response(ProxyErrorKind::Internal);
                }
            };
            let response = self.main.handler.call(replay(&parts, &bytes)).await;
            if !errors.status.contains(response.status()) {
                return response;
            }
            self.to_fallback(replay(&parts, &bytes)).await
        })
    }
}

/// Traefik's answer when neither service is up (`http.Error` with the status text).
fn unavailable() -> Response<Body> {
    plain(
        StatusCode::SERVICE_UNAVAILABLE,
        "Service Unavailable\n",
        ProxyErrorKind::NoHealthyServer,
    )
}

fn too_large() -> Response<Body> {
    plain(
        StatusCode::PAYLOAD_TOO_LARGE,
        "Request body too large\n",
        ProxyErrorKind::RequestBodyTooLarge,
    )
}

fn plain(status: StatusCode, text: &'static str, kind: ProxyErrorKind) -> Response<Body> {
    let mut response = Response::new(full_body(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response.extensions_mut().insert(kind);
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::{SharedHandler, response_error};
    use crate::service::weighted::tests::{body_of, child, leaf};
    use http::header::CONTENT_LENGTH;
    use http_body_util::BodyExt;
    use std::sync::Mutex;
    use std::sync::atomic::Ordering;

    #[test]
    fn status_ranges_parse_like_traefik() {
        let ranges = StatusRanges::parse(&["500-504", "404"]).unwrap();
        assert!(ranges.contains(StatusCode::BAD_GATEWAY));
        assert!(ranges.contains(StatusCode::NOT_FOUND));
        assert!(!ranges.contains(StatusCode::from_u16(505).unwrap()));
        assert!(!ranges.contains(StatusCode::OK));
        assert_eq!(
            StatusRanges::parse(&["50x"])
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default(),
            "invalid HTTP status range \"50x\" (expected a code or low-high, e.g. 500-504)"
        );
        assert!(StatusRanges::parse(&["1-2-3"]).is_err());
    }

    #[tokio::test]
    async fn main_while_up_then_fallback_then_503() {
        let (main, fallback) = (leaf("main"), leaf("fallback"));
        let spec = FailoverSpec {
            health_check: true,
            errors: None,
        };
        let failover =
            Failover::new("fo@file", spec, child(&main, true), child(&fallback, true)).unwrap();
        let get = || Request::new(crate::handler::empty_body());
        assert_eq!(body_of(&failover, get()).await.1, "main");
        main.up.store(false, Ordering::SeqCst);
        assert_eq!(body_of(&failover, get()).await.1, "fallback");
        let health = failover.health().unwrap();
        assert!(health.is_up());
        fallback.up.store(false, Ordering::SeqCst);
        assert!(!health.is_up(), "down only when both are");
        let response = failover.call(get()).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response_error(&response),
            Some(ProxyErrorKind::NoHealthyServer)
        );
        main.up.store(true, Ordering::SeqCst);
        assert_eq!(body_of(&failover, get()).await.1, "main");
    }

    #[tokio::test]
    async fn without_health_check_the_fallback_is_always_tried() {
        let (main, fallback) = (leaf("main"), leaf("fallback"));
        let failover = Failover::new(
            "fo@file",
            FailoverSpec::default(),
            child(&main, true),
            child(&fallback, false),
        )
        .unwrap();
        assert!(failover.health().is_none());
        main.up.store(false, Ordering::SeqCst);
        fallback.up.store(false, Ordering::SeqCst);
        let request = Request::new(crate::handler::empty_body());
        assert_eq!(body_of(&failover, request).await.1, "fallback");
    }

    #[test]
    fn unreported_health_is_a_build_error_where_traefik_needs_it() {
        let (main, fallback) = (leaf("main"), leaf("fallback"));
        let build = |spec, main_reports, fallback_reports| {
            Failover::new(
                "fo@file",
                spec,
                child(&main, main_reports),
                child(&fallback, fallback_reports),
            )
            .err()
            .map(|e| e.to_string())
        };
        let error = build(FailoverSpec::default(), false, true).unwrap_or_default();
        assert!(
            error.starts_with("cannot register main as updater for fo@file"),
            "{error}"
        );
        let with_errors = FailoverSpec {
            health_check: false,
            errors: Some(FailoverErrors {
                status: StatusRanges::parse(&["500"]).unwrap(),
                max_request_body_bytes: None,
            }),
        };
        assert_eq!(build(with_errors, false, false), None);
        let following = FailoverSpec {
            health_check: true,
            errors: None,
        };
        let error = build(following, true, false).unwrap_or_default();
        assert!(
            error.starts_with("cannot register fallback as updater for fo@file"),
            "{error}"
        );
    }

    /// Answers `status` and records the bodies it receives.
    struct Answer {
        status: u16,
        bodies: Mutex<Vec<String>>,
    }

    impl Handler for Answer {
        fn call(&self, request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
            Box::pin(async move {
                let body = request.into_body().collect().await.unwrap().to_bytes();
                self.bodies
                    .lock()
                    .unwrap()
                    .push(String::from_utf8(body.to_vec()).unwrap());
                let mut response = Response::new(full_body(format!("status {}", self.status)));
                *response.status_mut() = StatusCode::from_u16(self.status).unwrap();
                response
            })
        }
    }

    fn answering(status: u16) -> Arc<Answer> {
        Arc::new(Answer {
            status,
            bodies: Mutex::new(Vec::new()),
        })
    }

    fn on_errors(main: &Arc<Answer>, fallback: &Arc<Answer>, limit: Option<u64>) -> Failover {
        Failover::new(
            "fo@file",
            FailoverSpec {
                health_check: false,
                errors: Some(FailoverErrors {
                    status: StatusRanges::parse(&["500-504"]).unwrap(),
                    max_request_body_bytes: limit,
                }),
            },
            Child::new("main", main.clone() as SharedHandler, None),
            Child::new("fallback", fallback.clone() as SharedHandler, None),
        )
        .unwrap()
    }

    fn post(body: &'static str) -> Request<Body> {
        Request::builder()
            .method("POST")
            .header(CONTENT_LENGTH, body.len())
            .body(full_body(body))
            .unwrap()
    }

    #[tokio::test]
    async fn a_listed_status_replays_the_request_with_its_body_to_the_fallback() {
        let (main, fallback) = (answering(502), answering(200));
        let failover = on_errors(&main, &fallback, None);
        assert_eq!(
            body_of(&failover, post("payload")).await,
            (StatusCode::OK, "status 200".to_owned())
        );
        assert_eq!(*main.bodies.lock().unwrap(), ["payload"]);
        assert_eq!(*fallback.bodies.lock().unwrap(), ["payload"]);
    }

    #[tokio::test]
    async fn an_unlisted_status_is_the_answer() {
        let (main, fallback) = (answering(505), answering(200));
        let failover = on_errors(&main, &fallback, None);
        assert_eq!(body_of(&failover, post("x")).await.0.as_u16(), 505);
        assert!(fallback.bodies.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused_with_413() {
        let (main, fallback) = (answering(200), answering(200));
        let failover = on_errors(&main, &fallback, Some(4));
        let (status, body) = body_of(&failover, post("too long")).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::PAYLOAD_TOO_LARGE, "Request body too large\n")
        );
        assert!(main.bodies.lock().unwrap().is_empty());
        assert_eq!(body_of(&failover, post("fits")).await.0, StatusCode::OK);
    }
}
