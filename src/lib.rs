//! Sallyport: an edge router configured with Traefik v3 files.
//!
//! The binary's pieces: [`config`] (the only place that knows Traefik's schema),
//! [`acme`] (certificates from ACME CAs),
//! [`runtime`] (listeners, snapshots, reloads, shutdown), [`check`] (the `check`
//! command), [`metrics`] (Prometheus) and [`logging`].

pub mod acme;
pub mod check;
pub mod config;
pub mod logging;
pub mod metrics;
pub mod runtime;
