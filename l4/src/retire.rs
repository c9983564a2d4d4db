//! Retirement: how a reload tells the open connections of a route it removed or changed
//! that they must end.
//!
//! Every compiled route carries a [`Retirement`]. A reload that keeps a route exactly as it
//! was hands the new snapshot the same one, so the route's connections never notice the
//! reload. A reload that removes or changes a route retires the old one: its connections go
//! on for the drain time given, then are closed ([`crate::tcp::proxy::Outcome::Retired`]).
//! New connections are routed by the new snapshot, so they never see a retired route.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// One route's retirement, shared by its snapshots and its connections.
#[derive(Clone, Debug)]
pub struct Retirement(Arc<watch::Sender<Option<Instant>>>);

impl Default for Retirement {
    fn default() -> Self {
        Retirement(Arc::new(watch::channel(None).0))
    }
}

impl Retirement {
    pub fn new() -> Self {
        Self::default()
    }

    /// Closes the route's connections `drain` from now. Retiring twice keeps the first
    /// deadline.
    pub fn retire(&self, drain: Duration) {
        let at = Instant::now() + drain;
        self.0.send_if_modified(|deadline| {
            if deadline.is_some() {
                return false;
            }
            *deadline = Some(at);
            true
        });
    }

    /// Whether both are the same route's (clones of one retirement).
    pub fn is(&self, other: &Retirement) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    pub fn is_retired(&self) -> bool {
        self.0.borrow().is_some()
    }

    /// Resolves when the route's connections must be closed: the drain time after the
    /// retirement. Never resolves for a route that stays.
    pub fn closing(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut retired = self.0.subscribe();
        async move {
            // The sender lives as long as `self`'s clones; without it nothing can retire.
            let deadline = match retired.wait_for(Option::is_some).await {
                Ok(deadline) => *deadline,
                Err(_) => None,
            };
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn connections_close_after_the_drain_time_of_the_first_retirement() {
        let route = Retirement::new();
        let closing = route.closing();
        let other = route.clone();
        let started = Instant::now();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            other.retire(Duration::from_secs(5));
            other.retire(Duration::from_secs(60));
        });
        closing.await;
        assert_eq!(started.elapsed().as_secs(), 6);
        assert!(route.is_retired());
        // A connection that asks after the retirement gets the same deadline.
        let late = Instant::now();
        route.closing().await;
        assert_eq!(late.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_route_that_stays_never_closes() {
        let route = Retirement::new();
        let closing = route.closing();
        let waited = tokio::time::timeout(Duration::from_secs(3600), closing).await;
        assert!(waited.is_err());
        assert!(!route.is_retired());
    }
}
