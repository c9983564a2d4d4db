//! Sallyport layer 7: HTTP routing, middlewares and services.
//!
//! Today: the HTTP rule matchers over a request view ([`request`], [`rule`]), the
//! host-indexed router table ([`router`]), the load-balancing cores ([`balance`]), the
//! forwarding-header rewrite ([`forwarded`]), the proxy error type ([`error`]) and the
//! reverse proxy serving one accepted connection ([`proxy`]); middlewares and the wiring into
//! the binary arrive with the rest of the L7 work.

pub mod balance;
pub mod error;
pub mod forwarded;
pub mod handler;
pub mod middleware;
pub mod observe;
pub mod request;
pub mod router;
pub mod rule;
pub mod server;
pub mod service;
pub mod trace_context;
pub mod transport;
