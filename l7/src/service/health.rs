//! The health of a load balancer's servers: one flag per server, written by the active and
//! passive checkers, read by every strategy, sticky cookies and parents.
//!
//! Servers start up. Each change is logged once, by whoever made it, and reported to the
//! [`HealthObserver`] attached while the registry keeps the state (the metrics).

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Who changed a server's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Checker {
    Active,
    Passive,
}

impl fmt::Display for Checker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Checker::Active => "active health check",
            Checker::Passive => "passive health check",
        })
    }
}

struct Slot {
    url: String,
    up: AtomicBool,
    /// Terminating: still reachable through a sticky cookie, never picked otherwise.
    fenced: bool,
}

/// Told of every change of a load-balancer server's health, e.g. to export it as a metric.
///
/// Reports of one load balancer never run concurrently, and each carries the health the
/// server has when it is made, so the last report of a server is always its current health.
pub trait HealthObserver: Send + Sync + 'static {
    /// Server `url` of load balancer `service` is now `up` (or down).
    fn server_changed(&self, service: &str, url: &str, up: bool);
}

/// The servers of one load balancer, in the order of its spec (without ignored ones).
pub(crate) struct ServerHealth {
    service: String,
    slots: Vec<Slot>,
    up_count: AtomicUsize,
    /// Told of changes while attached; the lock also keeps reports in order.
    observer: Mutex<Option<Arc<dyn HealthObserver>>>,
}

impl ServerHealth {
    /// `servers` are (url, fenced); all start up.
    pub(crate) fn new(service: &str, servers: impl IntoIterator<Item = (String, bool)>) -> Self {
        let slots: Vec<Slot> = servers
            .into_iter()
            .map(|(url, fenced)| Slot {
                url,
                up: AtomicBool::new(true),
                fenced,
            })
            .collect();
        Self {
            service: service.to_owned(),
            up_count: AtomicUsize::new(slots.len()),
            slots,
            observer: Mutex::new(None),
        }
    }

    pub(crate) fn service(&self) -> &str {
        &self.service
    }

    /// The number of servers.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Reports every later change to `observer`.
    pub(crate) fn attach(&self, observer: Arc<dyn HealthObserver>) {
        *self.observer.lock().unwrap_or_else(PoisonError::into_inner) = Some(observer);
    }

    /// Stops reporting changes; once this returns no report is under way either. A state
    /// that a reload replaced calls it, so that it never reports over its successor.
    pub(crate) fn detach(&self) {
        *self.observer.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    pub(crate) fn url(&self, server: usize) -> &str {
        self.slots.get(server).map_or("", |slot| &slot.url)
    }

    pub(crate) fn is_up(&self, server: usize) -> bool {
        self.slots
            .get(server)
            .is_some_and(|slot| slot.up.load(Ordering::Acquire))
    }

    /// Up and not fenced: may be picked by a strategy.
    pub(crate) fn is_available(&self, server: usize) -> bool {
        self.slots
            .get(server)
            .is_some_and(|slot| !slot.fenced && slot.up.load(Ordering::Acquire))
    }

    /// Whether any server is up (the service's own health).
    pub(crate) fn any_up(&self) -> bool {
        self.up_count.load(Ordering::Acquire) > 0
    }

    /// Sets a server's health; logs and returns `true` when it changed. `reason` says why a
    /// server went down.
    pub(crate) fn set(
        &self,
        server: usize,
        up: bool,
        by: Checker,
        reason: Option<&dyn fmt::Display>,
    ) -> bool {
        let Some(slot) = self.slots.get(server) else {
            return false;
        };
        // The swap makes exactly one writer see each change, so the count stays exact.
        if slot.up.swap(up, Ordering::AcqRel) == up {
            return false;
        }
        if up {
            self.up_count.fetch_add(1, Ordering::AcqRel);
            tracing::info!(service = %self.service, server = %slot.url, by = %by, "server is up");
        } else {
            self.up_count.fetch_sub(1, Ordering::AcqRel);
            match reason {
                Some(reason) => tracing::warn!(
                    service = %self.service, server = %slot.url, by = %by, %reason,
                    "server is down"
                ),
                None => {
                    tracing::warn!(service = %self.service, server = %slot.url, by = %by, "server is down")
                }
            }
        }
        self.report(slot);
        true
    }

    /// Tells the observer the health `slot` has now: a concurrent change may have come
    /// after this one, and its report waits for the lock.
    fn report(&self, slot: &Slot) {
        let observer = self.observer.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(observer) = &*observer {
            observer.server_changed(&self.service, &slot.url, slot.up.load(Ordering::Acquire));
        }
    }

    /// Each server URL with whether it is up.
    pub(crate) fn statuses(&self) -> Vec<(String, bool)> {
        self.slots
            .iter()
            .map(|slot| (slot.url.clone(), slot.up.load(Ordering::Acquire)))
            .collect()
    }
}

/// A read-only handle on the server health of one load balancer, for the API: it reads the
/// flags the checkers write, so it always shows the current health.
#[derive(Clone)]
pub struct ServerHealthView(pub(crate) Arc<ServerHealth>);

impl ServerHealthView {
    /// The load balancer's service name.
    pub fn service(&self) -> &str {
        self.0.service()
    }

    /// The number of balanced servers (those of weight > 0, in spec order).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.len() == 0
    }

    /// The URL of server `server`; empty when there is no such server.
    pub fn url(&self, server: usize) -> &str {
        self.0.url(server)
    }

    /// Whether server `server` is up now.
    pub fn is_up(&self, server: usize) -> bool {
        self.0.is_up(server)
    }
}

impl fmt::Debug for ServerHealthView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHealthView")
            .field("service", &self.0.service)
            .field("servers", &self.0.statuses())
            .finish()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    fn health() -> ServerHealth {
        ServerHealth::new(
            "svc@file",
            [
                ("http://a".to_owned(), false),
                ("http://b".to_owned(), true),
            ],
        )
    }

    #[test]
    fn servers_start_up_and_fenced_ones_are_not_available() {
        let health = health();
        assert!(health.is_up(0) && health.is_up(1) && health.any_up());
        assert!(health.is_available(0));
        assert!(!health.is_available(1));
        assert!(!health.is_up(2), "unknown servers are never up");
    }

    #[test]
    fn only_changes_are_reported_and_counted() {
        let health = health();
        assert!(health.set(0, false, Checker::Active, None));
        assert!(!health.set(0, false, Checker::Passive, None));
        assert!(health.any_up());
        assert!(health.set(1, false, Checker::Active, Some(&"refused")));
        assert!(!health.any_up());
        assert_eq!(
            health.statuses(),
            [
                ("http://a".to_owned(), false),
                ("http://b".to_owned(), false)
            ]
        );
        assert!(health.set(1, true, Checker::Active, None));
        assert!(health.any_up());
        assert!(!health.set(7, true, Checker::Active, None));
    }

    /// Records the reports it gets.
    #[derive(Default)]
    pub(crate) struct Reports(pub(crate) Mutex<Vec<(String, String, bool)>>);

    impl HealthObserver for Reports {
        fn server_changed(&self, service: &str, url: &str, up: bool) {
            self.0
                .lock()
                .unwrap()
                .push((service.to_owned(), url.to_owned(), up));
        }
    }

    #[test]
    fn changes_are_reported_while_attached_only() {
        let health = health();
        let reports = Arc::new(Reports::default());
        health.set(0, false, Checker::Active, None);
        health.attach(reports.clone());
        health.set(0, false, Checker::Passive, None);
        health.set(0, true, Checker::Active, None);
        health.set(1, false, Checker::Passive, Some(&"status 502"));
        health.detach();
        health.set(1, true, Checker::Passive, None);
        assert_eq!(
            *reports.0.lock().unwrap(),
            [
                ("svc@file".to_owned(), "http://a".to_owned(), true),
                ("svc@file".to_owned(), "http://b".to_owned(), false),
            ]
        );
    }

    #[test]
    fn the_last_report_of_concurrent_changes_is_the_current_health() {
        let health = Arc::new(health());
        let reports = Arc::new(Reports::default());
        health.attach(reports.clone());
        let flippers: Vec<_> = (0..4)
            .map(|n| {
                let health = health.clone();
                std::thread::spawn(move || {
                    for i in 0..500 {
                        let by = if n % 2 == 0 {
                            Checker::Active
                        } else {
                            Checker::Passive
                        };
                        health.set(0, (i + n) % 3 != 0, by, None);
                    }
                })
            })
            .collect();
        for flipper in flippers {
            flipper.join().unwrap();
        }
        let last = reports.0.lock().unwrap().last().map(|(_, _, up)| *up);
        assert_eq!(last, Some(health.is_up(0)));
    }
}
