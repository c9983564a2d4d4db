//! The running router: binds the entrypoints, compiles each dynamic configuration into
//! a snapshot, swaps it in atomically, watches the file provider, and shuts down
//! gracefully.
//!
//! - [`compile`] turns a validated configuration into `l4` routing tables and services;
//! - [`listener`] owns the TCP listeners and their accept loops;
//! - [`provider`] watches the file provider and drives reloads;
//! - [`internal`] hosts the built-in services (`echo@internal`);
//! - [`rules`] plugs the real rule compilers into configuration validation.

pub mod compile;
pub mod internal;
pub mod listener;
pub mod provider;
pub mod rules;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tracing::{error, info, warn};

use crate::config::LoadedStatic;
use crate::config::static_cfg::Protocol;
use compile::Snapshot;
use listener::Entrypoint;

/// Runs until SIGTERM/SIGINT, then drains. Returns the process exit code.
pub async fn run(loaded: LoadedStatic) -> i32 {
    let st = Arc::new(loaded.config);
    let internal = match internal::Internal::start().await {
        Ok(i) => Arc::new(i),
        Err(e) => {
            error!(error = %e, "cannot start the internal services");
            return 1;
        }
    };

    // The first dynamic configuration is applied before any entrypoint accepts, so a
    // client that connects as soon as a port opens is routed.
    let store = Arc::new(ArcSwap::from_pointee(Snapshot::empty()));
    let mut reloader = provider::Reloader::new(st.clone(), internal.clone(), store.clone());
    reloader.reload(provider::Trigger::Startup);

    let mut entrypoints = Vec::new();
    for (name, ep) in &st.entry_points {
        if ep.address.protocol == Protocol::Udp {
            warn!(entrypoint = %name, address = %ep.address, "UDP entrypoints are not served yet; skipping");
            continue;
        }
        match Entrypoint::bind(name, ep).await {
            Ok(e) => entrypoints.push(e),
            Err(e) => {
                error!(entrypoint = %name, address = %ep.address, error = %e, "cannot listen");
                return 1;
            }
        }
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut serving = Vec::new();
    for ep in entrypoints {
        info!(entrypoint = %ep.name(), address = %ep.local_addr(), "listening");
        serving.push(ep.serve(store.clone(), stop_rx.clone()));
    }

    let watcher = tokio::spawn(reloader.run(stop_rx.clone()));
    wait_for_shutdown_signal().await;
    info!("shutting down: no new connections; draining open ones");
    let _ = stop_tx.send(true);
    let drains = serving.into_iter().map(|s| async move {
        let grace = s.grace;
        let name = s.name.clone();
        if !s.drain().await {
            warn!(entrypoint = %name, grace = ?grace, "graceTimeOut reached; closing remaining connections");
        }
    });
    futures_join_all(drains).await;
    watcher.abort();
    info!("stopped");
    0
}

/// Awaits every future (a tiny join_all, to avoid a dependency for one call).
async fn futures_join_all<F: std::future::Future<Output = ()> + Send + 'static>(
    futs: impl IntoIterator<Item = F>,
) {
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    for h in handles {
        let _ = h.await;
    }
}

async fn wait_for_shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        error!("cannot install signal handlers; running until killed");
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Bounded waits used by the runtime.
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
