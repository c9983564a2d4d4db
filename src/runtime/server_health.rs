//! Load-balancer server health as the API and the `service_server_up` metric show it: live,
//! not as of the last reload.
//!
//! Health checks flip flags inside the load balancers (`l7` for HTTP, `l4` for TCP). After
//! each reload, [`watched`] gathers a handle on the flag of every server a health check
//! watches (HTTP load balancers with an active or passive check, TCP load balancers with a
//! health check; the servers of the others are always up). The API reads those handles at
//! each request; [`ServerUpMetric`] sets each server's series at each reload and again at
//! each change the checkers report, and removes the series of servers a reload dropped.

use std::sync::{Arc, Mutex, PoisonError};

use l4::tcp::health::OnChange;
use l4::tcp::service::Server;
use l7::service::{HealthObserver, ServiceStates};

use super::compile::Servers;
use crate::api::{ServerHealth, ServerUp};
use crate::config::dynamic::DynamicConfig;
use crate::metrics::Metrics;

/// The servers a health check watches, by service, then URL (HTTP) or address (TCP). A
/// server listed twice in one service is up when both are.
pub(super) fn watched(http: &ServiceStates, tcp: &Servers, dy: &DynamicConfig) -> ServerHealth {
    let mut health = ServerHealth::new();
    for view in http.checked_health() {
        for server in 0..view.len() {
            let url = view.url(server).to_owned();
            let view = view.clone();
            add(
                &mut health,
                view.service().to_owned(),
                url,
                Arc::new(move || view.is_up(server)),
            );
        }
    }
    for ((service, address, _), server) in tcp {
        let checked = dy
            .tcp
            .services
            .get(service)
            .and_then(|s| s.value.load_balancer.as_ref())
            .is_some_and(|lb| lb.health_check.is_some());
        if checked {
            let server = server.clone();
            let up = Arc::new(move || server.is_healthy());
            add(&mut health, service.clone(), address.clone(), up);
        }
    }
    health
}

fn add(health: &mut ServerHealth, service: String, server: String, up: ServerUp) {
    let servers = health.entry(service).or_default();
    let up = match servers.remove(&server) {
        Some(other) => Arc::new(move || other() && up()),
        None => up,
    };
    servers.insert(server, up);
}

/// Keeps `<prefix>_service_server_up` at the health of each watched server.
///
/// Every write reads the server's flag under one lock, so the last write of a series is
/// always its current health, whichever order reports and reloads come in.
pub struct ServerUpMetric {
    metrics: Arc<Metrics>,
    /// The servers exported, with their flags.
    exported: Mutex<ServerHealth>,
}

impl ServerUpMetric {
    pub fn new(metrics: Arc<Metrics>) -> Arc<ServerUpMetric> {
        Arc::new(ServerUpMetric {
            metrics,
            exported: Mutex::default(),
        })
    }

    /// Exports the servers `watched` after a reload, and forgets those no longer watched.
    pub(super) fn publish(&self, watched: &ServerHealth) {
        let mut exported = self.lock();
        for (service, servers) in watched {
            for (server, up) in servers {
                self.metrics.set_server_up(service, server, up());
            }
        }
        for (service, servers) in exported.iter() {
            for server in servers.keys() {
                let kept = watched.get(service).is_some_and(|s| s.contains_key(server));
                if !kept {
                    self.metrics.remove_server(service, server);
                }
            }
        }
        *exported = watched.clone();
    }

    /// What the health checks of TCP service `service` call after a change.
    pub(super) fn tcp_hook(self: &Arc<Self>, service: &str) -> OnChange {
        let metric = self.clone();
        let service = service.to_owned();
        Arc::new(move |server: &Server| metric.refresh(&service, &server.address))
    }

    /// Sets the series of an exported server to its health now; a server a reload is about
    /// to export (or just dropped) waits for (or is left to) [`Self::publish`].
    fn refresh(&self, service: &str, server: &str) {
        let exported = self.lock();
        if let Some(up) = exported.get(service).and_then(|s| s.get(server)) {
            self.metrics.set_server_up(service, server, up());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ServerHealth> {
        self.exported.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl HealthObserver for ServerUpMetric {
    fn server_changed(&self, service: &str, url: &str, _up: bool) {
        // The exported flag is read instead: a URL listed twice is up only when both are.
        self.refresh(service, url);
    }
}

impl std::fmt::Debug for ServerUpMetric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerUpMetric").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::static_cfg::Prometheus;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn metrics() -> Arc<Metrics> {
        Arc::new(Metrics::new(&Prometheus::default()).unwrap())
    }

    fn series(metrics: &Metrics, service: &str, server: &str) -> Option<String> {
        let wanted = format!("service_server_up{{service=\"{service}\",url=\"{server}\"}} ");
        metrics
            .encode()
            .lines()
            .find_map(|line| line.split_once(&wanted).map(|(_, v)| v.to_owned()))
    }

    fn flag(up: bool) -> (Arc<AtomicBool>, ServerUp) {
        let flag = Arc::new(AtomicBool::new(up));
        let read = flag.clone();
        (flag, Arc::new(move || read.load(Ordering::Relaxed)))
    }

    #[test]
    fn changes_set_exported_series_and_reloads_drop_vanished_ones() {
        let metrics = metrics();
        let sink = ServerUpMetric::new(metrics.clone());
        let (a, a_up) = flag(true);
        let (_, b_up) = flag(false);
        let mut watched = ServerHealth::new();
        add(&mut watched, "x@file".into(), "http://a".into(), a_up);
        add(&mut watched, "y@file".into(), "10.0.0.1:5432".into(), b_up);
        sink.publish(&watched);
        assert_eq!(series(&metrics, "x@file", "http://a").as_deref(), Some("1"));
        assert_eq!(
            series(&metrics, "y@file", "10.0.0.1:5432").as_deref(),
            Some("0")
        );

        a.store(false, Ordering::Relaxed);
        sink.server_changed("x@file", "http://a", false);
        assert_eq!(series(&metrics, "x@file", "http://a").as_deref(), Some("0"));
        // Not exported: nothing to set.
        sink.server_changed("x@file", "http://other", false);
        assert_eq!(series(&metrics, "x@file", "http://other"), None);

        watched.remove("y@file");
        sink.publish(&watched);
        assert_eq!(series(&metrics, "y@file", "10.0.0.1:5432"), None);
        assert_eq!(series(&metrics, "x@file", "http://a").as_deref(), Some("0"));
    }

    #[test]
    fn a_server_listed_twice_is_up_when_both_are() {
        let metrics = metrics();
        let sink = ServerUpMetric::new(metrics.clone());
        let (first, first_up) = flag(true);
        let (_, second_up) = flag(true);
        let mut watched = ServerHealth::new();
        add(&mut watched, "x@file".into(), "http://a".into(), first_up);
        add(&mut watched, "x@file".into(), "http://a".into(), second_up);
        sink.publish(&watched);
        assert_eq!(series(&metrics, "x@file", "http://a").as_deref(), Some("1"));
        first.store(false, Ordering::Relaxed);
        sink.server_changed("x@file", "http://a", true);
        assert_eq!(series(&metrics, "x@file", "http://a").as_deref(), Some("0"));
    }
}
