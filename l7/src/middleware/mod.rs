//! The middleware mechanism: a [`Middleware`] wraps the handler after it, and a chain wraps a
//! handler in several, first listed outermost. Chains are composed once per configuration
//! snapshot, never per request.
//!
//! Entrypoint middlewares (`entryPoints.<n>.http.middlewares`) come before a router's own,
//! and a service's after the router's. The catalogue of middleware types lives in submodules.

pub mod buffering;
pub mod circuit_breaker;
pub mod headers;
pub mod redirect_scheme;
pub mod retry;

use crate::handler::SharedHandler;

/// Something that wraps the handler after it.
pub trait Middleware: Send + Sync + 'static {
    fn wrap(&self, next: SharedHandler) -> SharedHandler;
}

/// Wraps `handler` in `chain`, the first middleware of the list seeing the request first.
pub fn apply_chain<M>(chain: &[M], handler: SharedHandler) -> SharedHandler
where
    M: std::ops::Deref,
    M::Target: Middleware,
{
    chain
        .iter()
        .rev()
        .fold(handler, |next, middleware| middleware.wrap(next))
}
