//! The registry that carries load-balancer state from one snapshot to the next: server health,
//! balancing position and running health checks survive a reload when the service's spec did
//! not change. See the module doc of [`crate::service`] for the build protocol.
//!
//! The registry also decides which states report health changes: those it keeps, and only
//! while it keeps them (see [`ServiceStates::with_observer`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::BuildError;
use super::active::Prober;
use super::health::{HealthObserver, ServerHealthView};
use super::load_balancer::{LbState, LoadBalancerSpec};

struct Kept {
    state: Arc<LbState>,
    /// Asked for since the last [`ServiceStates::retain_used`].
    used: bool,
}

/// Load-balancer states by service name.
#[derive(Default)]
pub struct ServiceStates {
    states: Mutex<HashMap<String, Kept>>,
    /// Told of the health changes of the kept states that have a health check.
    observer: Option<Arc<dyn HealthObserver>>,
}

impl ServiceStates {
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry whose states with a health check (active or passive) report every change
    /// of their servers' health to `observer`, from their creation until the registry
    /// replaces them (their spec changed) or forgets them ([`Self::retain_used`]). Servers
    /// start up, which is not reported.
    pub fn with_observer(observer: Arc<dyn HealthObserver>) -> Self {
        Self {
            states: Mutex::default(),
            observer: Some(observer),
        }
    }

    /// The state of load balancer `service` for the snapshot being built: the one kept from
    /// the previous build when `spec` is equal to its spec (with `prober` now used for its
    /// probes), else a new one with every server up (see [`LbState::new`]).
    pub fn reuse_or_create(
        &self,
        service: &str,
        spec: &LoadBalancerSpec,
        prober: Option<Arc<dyn Prober>>,
    ) -> Result<Arc<LbState>, BuildError> {
        let mut states = self.lock();
        if let Some(kept) = states.get_mut(service)
            && kept.state.spec() == spec
        {
            kept.used = true;
            kept.state.replace_prober(prober);
            return Ok(kept.state.clone());
        }
        let state = LbState::new(service, spec.clone(), prober)?;
        if let (Some(observer), true) = (&self.observer, state.is_checked()) {
            state.attach(observer.clone());
        }
        let replaced = states.insert(
            service.to_owned(),
            Kept {
                state: state.clone(),
                used: true,
            },
        );
        if let Some(replaced) = replaced {
            replaced.state.detach();
        }
        Ok(state)
    }

    /// Forgets the states not asked for since the previous call; call it once the new
    /// snapshot is installed. A forgotten state lives on while an old snapshot holds it,
    /// without reporting its health any more.
    pub fn retain_used(&self) {
        self.lock().retain(|_, kept| {
            let used = std::mem::take(&mut kept.used);
            if !used {
                kept.state.detach();
            }
            used
        });
    }

    /// The server health of each kept load balancer that has a health check (active or
    /// passive), sorted by service name; the servers of the others are always up.
    pub fn checked_health(&self) -> Vec<ServerHealthView> {
        let mut views: Vec<ServerHealthView> = self
            .lock()
            .values()
            .filter(|kept| kept.state.is_checked())
            .map(|kept| kept.state.health_view())
            .collect();
        views.sort_by(|a, b| a.service().cmp(b.service()));
        views
    }

    /// The servers of load balancer `service` with whether each is up.
    pub fn server_status(&self, service: &str) -> Option<Vec<(String, bool)>> {
        self.lock()
            .get(service)
            .map(|kept| kept.state.server_status())
    }

    /// Every load balancer's servers with whether each is up, by service name.
    pub fn all_server_status(&self) -> Vec<(String, Vec<(String, bool)>)> {
        let mut all: Vec<_> = self
            .lock()
            .iter()
            .map(|(name, kept)| (name.clone(), kept.state.server_status()))
            .collect();
        all.sort();
        all
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Kept>> {
        self.states.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for ServiceStates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceStates")
            .field("services", &self.lock().len())
            .field("observed", &self.observer.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::ServerSpec;

    fn spec(urls: &[&str]) -> LoadBalancerSpec {
        LoadBalancerSpec {
            servers: urls.iter().map(|url| ServerSpec::new(*url)).collect(),
            ..LoadBalancerSpec::default()
        }
    }

    fn down(state: &LbState) {
        state
            .health_for_tests()
            .set(0, false, super::super::health::Checker::Active, None);
    }

    #[test]
    fn an_unchanged_spec_keeps_its_state_and_a_changed_one_starts_afresh() {
        let states = ServiceStates::new();
        let first = states
            .reuse_or_create("lb@file", &spec(&["http://a"]), None)
            .unwrap();
        down(&first);
        states.retain_used();
        let same = states
            .reuse_or_create("lb@file", &spec(&["http://a"]), None)
            .unwrap();
        assert!(Arc::ptr_eq(&first, &same));
        assert_eq!(
            states.server_status("lb@file"),
            Some(vec![("http://a".to_owned(), false)])
        );
        states.retain_used();
        let changed = states
            .reuse_or_create("lb@file", &spec(&["http://a", "http://b"]), None)
            .unwrap();
        assert!(!Arc::ptr_eq(&first, &changed));
        assert_eq!(
            changed.server_status(),
            [("http://a".to_owned(), true), ("http://b".to_owned(), true)]
        );
    }

    #[test]
    fn states_no_build_asked_for_are_forgotten() {
        let states = ServiceStates::new();
        let old = states
            .reuse_or_create("old@file", &spec(&["http://a"]), None)
            .unwrap();
        states
            .reuse_or_create("kept@file", &spec(&["http://b"]), None)
            .unwrap();
        states.retain_used();
        states
            .reuse_or_create("kept@file", &spec(&["http://b"]), None)
            .unwrap();
        states.retain_used();
        assert_eq!(states.server_status("old@file"), None);
        assert_eq!(
            states.all_server_status(),
            [("kept@file".to_owned(), vec![("http://b".to_owned(), true)])]
        );
        // The old snapshot still holds its state; asking again starts afresh.
        down(&old);
        let again = states
            .reuse_or_create("old@file", &spec(&["http://a"]), None)
            .unwrap();
        assert!(!Arc::ptr_eq(&old, &again));
        assert_eq!(again.server_status(), [("http://a".to_owned(), true)]);
    }

    fn checked(urls: &[&str]) -> LoadBalancerSpec {
        LoadBalancerSpec {
            passive_health_check: Some(crate::service::PassiveHealthCheckSpec::default()),
            ..spec(urls)
        }
    }

    #[test]
    fn kept_checked_states_report_until_replaced_or_forgotten() {
        let reports = Arc::new(super::super::health::tests::Reports::default());
        let states = ServiceStates::with_observer(reports.clone());
        let first = states
            .reuse_or_create("lb@file", &checked(&["http://a"]), None)
            .unwrap();
        let unchecked = states
            .reuse_or_create("plain@file", &spec(&["http://p"]), None)
            .unwrap();
        down(&first);
        down(&unchecked);
        states.retain_used();
        let replacement = states
            .reuse_or_create("lb@file", &checked(&["http://a", "http://b"]), None)
            .unwrap();
        // The replaced state still serves an old snapshot, silently.
        first
            .health_for_tests()
            .set(0, true, super::super::health::Checker::Passive, None);
        down(&replacement);
        states.retain_used();
        states.retain_used();
        down(
            &states
                .reuse_or_create("again@file", &checked(&["http://c"]), None)
                .unwrap(),
        );
        // Forgotten: no longer reports.
        replacement
            .health_for_tests()
            .set(0, true, super::super::health::Checker::Passive, None);
        let reports = reports.0.lock().unwrap().clone();
        assert_eq!(
            reports,
            [
                ("lb@file".to_owned(), "http://a".to_owned(), false),
                ("lb@file".to_owned(), "http://a".to_owned(), false),
                ("again@file".to_owned(), "http://c".to_owned(), false),
            ]
        );
    }

    #[test]
    fn checked_health_shows_the_current_health_of_checked_load_balancers() {
        let states = ServiceStates::new();
        let b = states
            .reuse_or_create("b@file", &checked(&["http://b1", "http://b2"]), None)
            .unwrap();
        states
            .reuse_or_create("a@file", &checked(&["http://a"]), None)
            .unwrap();
        states
            .reuse_or_create("plain@file", &spec(&["http://p"]), None)
            .unwrap();
        let views = states.checked_health();
        let services: Vec<&str> = views.iter().map(|v| v.service()).collect();
        assert_eq!(services, ["a@file", "b@file"]);
        let view = &views[1];
        assert_eq!((view.len(), view.url(1)), (2, "http://b2"));
        assert!(view.is_up(0));
        down(&b);
        assert!(!view.is_up(0), "the view reads the flags when asked");
        assert!(view.is_up(1) && !view.is_up(2));
    }

    #[test]
    fn a_failed_build_keeps_what_it_touched_for_one_more_round() {
        let states = ServiceStates::new();
        states
            .reuse_or_create("a@file", &spec(&["http://a"]), None)
            .unwrap();
        states.retain_used();
        // A build that fails does not call retain_used; the next successful one does.
        states
            .reuse_or_create("b@file", &spec(&["http://b"]), None)
            .unwrap();
        states
            .reuse_or_create("a@file", &spec(&["http://a"]), None)
            .unwrap();
        states.retain_used();
        assert!(states.server_status("a@file").is_some());
        assert!(states.server_status("b@file").is_some());
        states.retain_used();
        assert!(states.server_status("a@file").is_none());
    }
}
