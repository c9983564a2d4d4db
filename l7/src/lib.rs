//! Sallyport layer 7: HTTP routing, middlewares and services.
//!
//! Today: the HTTP rule matchers over a request view ([`request`], [`rule`]), the
//! host-indexed router table ([`router`]) and the load-balancing cores ([`balance`]);
//! the HTTP server and proxy arrive with the rest of the L7 work.

pub mod balance;
pub mod request;
pub mod router;
pub mod rule;
