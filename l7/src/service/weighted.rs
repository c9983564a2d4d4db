//! `weighted`: child services chosen by weighted round robin (Traefik's EDF order), optionally
//! pinned by a sticky cookie naming the child service.
//!
//! The balancing position lives in [`WeightedPositions`], by service, so a reload that leaves
//! the children and their weights as they were goes on where the previous snapshot stopped
//! instead of sending its first requests to the first child again.

use std::sync::Arc;

use http::{Request, Response};
use l4::kept::Kept;

use super::sticky::StickyCookie;
use super::{BuildError, Child, Health, SharedHealth};
use crate::balance::Edf;
use crate::balance::sticky::CookieSpec;
use crate::error::ProxyErrorKind;
use crate::handler::{Body, BoxFuture, Handler, error_response};

/// `http.services.<name>.weighted`, without its children.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WeightedSpec {
    /// `sticky.cookie`; see [`CookieSpec::for_service`] for Traefik's defaults.
    pub sticky: Option<CookieSpec>,
    /// `healthCheck: {}`: follow the children's health and report it.
    pub health_check: bool,
}

/// The children a parent balances over with their health, kept for its own health.
pub(crate) struct ChildrenHealth {
    children: Vec<SharedHealth>,
}

impl Health for ChildrenHealth {
    /// Up while any child is up.
    fn is_up(&self) -> bool {
        self.children.iter().any(|child| child.is_up())
    }
}

/// The `health` of a parent over `children` (used ones only), checking every child reports
/// when the parent follows health; `None` when it does not.
pub(crate) fn children_health<'a>(
    parent: &str,
    follows_health: bool,
    declared: impl IntoIterator<Item = &'a Child>,
    used: &[Child],
) -> Result<Option<SharedHealth>, BuildError> {
    if !follows_health {
        return Ok(None);
    }
    for child in declared {
        if child.health.is_none() {
            return Err(BuildError::CannotRegister {
                child: child.name.clone(),
                parent: parent.to_owned(),
            });
        }
    }
    let children = used
        .iter()
        .filter_map(|child| child.health.clone())
        .collect();
    Ok(Some(Arc::new(ChildrenHealth { children })))
}

/// The balancing positions of `weighted` services by service name, kept across reloads
/// while the children (their names and weights, in order) are unchanged.
pub type WeightedPositions = Kept<String, Vec<(String, i64)>, Edf<usize>>;

/// The `weighted` handler.
pub struct Weighted {
    children: Vec<Child>,
    edf: Arc<Edf<usize>>,
    sticky: Option<StickyCookie>,
    health: Option<SharedHealth>,
}

impl Weighted {
    /// `children` are the services with their weights; those of weight ≤ 0 are not used.
    /// The position is `service`'s in `positions` while its children are unchanged.
    pub fn new(
        service: &str,
        spec: WeightedSpec,
        children: Vec<(Child, i64)>,
        positions: &WeightedPositions,
    ) -> Result<Self, BuildError> {
        let declared: Vec<&Child> = children.iter().map(|(child, _)| child).collect();
        let used: Vec<Child> = children
            .iter()
            .filter(|(_, weight)| *weight > 0)
            .map(|(child, _)| child.clone())
            .collect();
        let definition = children
            .iter()
            .map(|(child, weight)| (child.name.clone(), *weight))
            .collect();
        let edf = positions.get_or_make(service.to_owned(), definition, || {
            let edf = Edf::new();
            // Indices into `used`: `add` takes exactly the positive weights kept there.
            let positive = children.iter().map(|(_, w)| *w).filter(|w| *w > 0);
            for (index, weight) in positive.enumerate() {
                edf.add(index, weight);
            }
            edf
        });
        let health = children_health(service, spec.health_check, declared, &used)?;
        let sticky = spec
            .sticky
            .as_ref()
            .map(|cookie| StickyCookie::new(service, cookie, used.iter().map(|c| c.name.as_str())))
            .transpose()?;
        Ok(Self {
            children: used,
            edf,
            sticky,
            health,
        })
    }

    /// The health reported to parents: `Some` with `healthCheck: {}`.
    pub fn health(&self) -> Option<SharedHealth> {
        self.health.clone()
    }

    fn is_up(&self, child: usize) -> bool {
        // Without `healthCheck: {}` the children's health is not followed.
        self.health.is_none() || self.children.get(child).is_some_and(Child::is_up)
    }
}

impl Handler for Weighted {
    fn call(&self, request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
        Box::pin(async move {
            let pinned = self.sticky.as_ref().and_then(|sticky| {
                sticky
                    .pinned(&request, |child| self.is_up(child))
                    .map(|found| (*found.item, found.rewrite))
            });
            let (child, set_cookie) = match pinned {
                Some((child, rewrite)) => (child, rewrite),
                None => match self.edf.next_with(|&child| self.is_up(child)) {
                    Some(child) => (child, self.sticky.is_some()),
                    None => return error_response(ProxyErrorKind::NoHealthyServer),
                },
            };
            let Some(handler) = self.children.get(child).map(|c| c.handler.clone()) else {
                return error_response(ProxyErrorKind::Internal);
            };
            let mut response = handler.call(request).await;
            if let (true, Some(sticky)) = (set_cookie, &self.sticky) {
                sticky.pin(&mut response, child);
            }
            response
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::handler::{SharedHandler, empty_body, full_body};
    use http::StatusCode;
    use http::header::{COOKIE, SET_COOKIE};
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A child service answering with its name, with a health switch.
    pub(crate) struct Leaf {
        name: &'static str,
        pub(crate) up: AtomicBool,
    }

    impl Handler for Leaf {
        fn call(&self, _request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
            let name = self.name;
            Box::pin(async move { Response::new(full_body(name)) })
        }
    }

    impl Health for Leaf {
        fn is_up(&self) -> bool {
            self.up.load(Ordering::SeqCst)
        }
    }

    pub(crate) fn leaf(name: &'static str) -> Arc<Leaf> {
        Arc::new(Leaf {
            name,
            up: AtomicBool::new(true),
        })
    }

    /// The child `leaf`, reporting its health or not.
    pub(crate) fn child(leaf: &Arc<Leaf>, reports: bool) -> Child {
        Child::new(
            leaf.name,
            leaf.clone() as SharedHandler,
            reports.then(|| leaf.clone() as SharedHealth),
        )
    }

    pub(crate) async fn body_of(
        handler: &dyn Handler,
        request: Request<Body>,
    ) -> (StatusCode, String) {
        let response = handler.call(request).await;
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    async fn sequence(handler: &dyn Handler, n: usize) -> String {
        let mut out = String::new();
        for _ in 0..n {
            let (status, body) = body_of(handler, Request::new(empty_body())).await;
            out.push_str(if status == StatusCode::OK { &body } else { "-" });
        }
        out
    }

    #[tokio::test]
    async fn three_to_one_serves_in_traefiks_order_and_ignores_zero_weights() {
        let (a, b, z) = (leaf("a"), leaf("b"), leaf("z"));
        let weighted = Weighted::new(
            "wt@file",
            WeightedSpec::default(),
            vec![
                (child(&a, false), 3),
                (child(&b, false), 1),
                (child(&z, false), 0),
            ],
            &WeightedPositions::new(),
        )
        .unwrap();
        assert_eq!(sequence(&weighted, 12).await, "aabaaaabaaba");
    }

    fn positions() -> WeightedPositions {
        WeightedPositions::new()
    }

    #[tokio::test]
    async fn a_rebuild_with_the_same_children_goes_on_where_the_last_stopped() {
        let (a, b) = (leaf("a"), leaf("b"));
        let positions = positions();
        let build = |weights: [i64; 2], positions: &WeightedPositions| {
            let children = vec![
                (child(&a, false), weights[0]),
                (child(&b, false), weights[1]),
            ];
            Weighted::new("wt@file", WeightedSpec::default(), children, positions).unwrap()
        };
        assert_eq!(sequence(&build([1, 1], &positions), 1).await, "a");
        assert_eq!(sequence(&build([1, 1], &positions), 1).await, "b");
        assert_eq!(sequence(&build([1, 1], &positions), 3).await, "aba");
        // New weights: a new round, as a first build would start it.
        let fresh = sequence(&build([1, 3], &WeightedPositions::new()), 4).await;
        assert_eq!(sequence(&build([1, 3], &positions), 4).await, fresh);
        assert_eq!(fresh, "bbab");
    }

    #[tokio::test]
    async fn children_health_is_followed_only_with_a_health_check() {
        let (a, b) = (leaf("a"), leaf("b"));
        let children = || vec![(child(&a, true), 1), (child(&b, true), 1)];
        let blind =
            Weighted::new("wt@file", WeightedSpec::default(), children(), &positions()).unwrap();
        let following = WeightedSpec {
            health_check: true,
            ..WeightedSpec::default()
        };
        let watching = Weighted::new("wt@file", following, children(), &positions()).unwrap();
        assert!(blind.health().is_none());
        let health = watching.health().unwrap();
        a.up.store(false, Ordering::SeqCst);
        assert_eq!(sequence(&blind, 2).await, "ab");
        assert_eq!(sequence(&watching, 3).await, "bbb");
        assert!(health.is_up());
        b.up.store(false, Ordering::SeqCst);
        assert!(!health.is_up(), "down when every child is down");
        let (status, body) = body_of(&watching, Request::new(empty_body())).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "no available server\n")
        );
        a.up.store(true, Ordering::SeqCst);
        assert!(health.is_up());
    }

    #[test]
    fn following_a_child_that_does_not_report_is_a_build_error() {
        let (a, b) = (leaf("a"), leaf("b"));
        let spec = WeightedSpec {
            health_check: true,
            ..WeightedSpec::default()
        };
        let error = Weighted::new(
            "wt@file",
            spec,
            vec![(child(&a, true), 1), (child(&b, false), 1)],
            &positions(),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            error.starts_with("cannot register b as updater for wt@file"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn sticky_cookie_names_the_child_service() {
        let (a, b) = (leaf("a"), leaf("b"));
        let spec = WeightedSpec {
            sticky: Some(CookieSpec::for_service("wt@file")),
            health_check: true,
        };
        let weighted = Weighted::new(
            "wt@file",
            spec,
            vec![(child(&a, true), 1), (child(&b, true), 1)],
            &positions(),
        )
        .unwrap();
        let response = weighted.call(Request::new(empty_body())).await;
        assert_eq!(
            response.headers()[SET_COOKIE],
            "_040b6=ca978112ca1bbdca; Path=/"
        );
        let pinned = || {
            let mut request = Request::new(empty_body());
            request
                .headers_mut()
                .insert(COOKIE, "_040b6=ca978112ca1bbdca".parse().unwrap());
            request
        };
        for _ in 0..3 {
            assert_eq!(body_of(&weighted, pinned()).await.1, "a");
        }
        a.up.store(false, Ordering::SeqCst);
        let response = weighted.call(pinned()).await;
        assert_eq!(
            response.headers()[SET_COOKIE],
            "_040b6=3e23e8160039594a; Path=/"
        );
    }
}
