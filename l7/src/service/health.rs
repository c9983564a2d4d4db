//! The health of a load balancer's servers: one flag per server, written by the active and
//! passive checkers, read by every strategy, sticky cookies and parents.
//!
//! Servers start up. Each change is logged once, by whoever made it.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

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

/// The servers of one load balancer, in the order of its spec (without ignored ones).
pub(crate) struct ServerHealth {
    service: String,
    slots: Vec<Slot>,
    up_count: AtomicUsize,
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
        }
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
        true
    }

    /// Each server URL with whether it is up.
    pub(crate) fn statuses(&self) -> Vec<(String, bool)> {
        self.slots
            .iter()
            .map(|slot| (slot.url.clone(), slot.up.load(Ordering::Acquire)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
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
}
