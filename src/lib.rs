//! Sallyport: an edge router configured with Traefik v3 files.
//!
//! The binary's pieces: [`config`] (the only place that knows Traefik's schema),
//! [`acme`] (certificates from ACME CAs), [`api`] (Traefik's API and ping handlers),
//! [`dashboard`], [`accesslog`],
//! [`runtime`] (listeners, snapshots, reloads, shutdown), [`check`] (the `check`
//! command), [`explain`] (the `explain` command), [`metrics`] (Prometheus) and
//! [`logging`].

pub mod accesslog;
pub mod acme;
pub mod api;
pub mod check;
pub mod config;
pub mod dashboard;
pub mod explain;
pub mod logging;
pub mod metrics;
pub mod providers;
pub mod runtime;
pub mod telemetry;
