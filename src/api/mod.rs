//! Traefik's API and ping, as library handlers.
//!
//! [`ApiState`] is an immutable snapshot of what Traefik's API shows for one dynamic
//! configuration (routers, services, middlewares with their status and errors, entrypoints,
//! overview, raw data, version), with every JSON object serialized once when it is built,
//! except the health of servers that health checks watch, read at each request.
//! [`ApiHandler`] answers `GET <basePath>api/...` from the current snapshot, only filtering
//! and paginating; [`PingHandler`] answers `/ping`. Wiring them to the `traefik` entrypoint,
//! `api@internal` / `ping@internal` and rebuilding the snapshot on reload belongs to the
//! runtime, not to this module.

mod handler;
mod json;
mod live;
mod ping;
mod state;

pub use handler::ApiHandler;
pub use live::ServerUp;
pub use ping::PingHandler;
pub use state::{ApiState, ServerHealth};

#[cfg(test)]
mod tests;
