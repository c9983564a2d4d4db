//! The middleware mechanism: a [`Middleware`] wraps the handler after it, and a chain wraps a
//! handler in several, first listed outermost. Chains are composed once per configuration
//! snapshot, never per request.
//!
//! Entrypoint middlewares (`entryPoints.<n>.http.middlewares`) come before a router's own,
//! and a service's after the router's. The catalogue of middleware types lives in submodules.

pub mod add_prefix;
pub mod basic_auth;
pub mod buffering;
pub mod circuit_breaker;
pub mod compress;
pub mod content_sniff;
pub mod content_type;
pub mod digest_auth;
pub mod encoded_characters;
pub mod errors;
pub mod expression_text;
pub mod forward_auth;
pub mod grpc_web;
pub mod headers;
pub mod htpasswd;
pub mod in_flight_req;
pub mod ip_allow_list;
pub mod ip_strategy;
pub mod pass_tls_client_cert;
pub mod path_rewrite;
pub mod rate_limit;
pub mod redirect_regex;
pub mod redirect_scheme;
pub mod replace_path;
pub mod replace_path_regex;
pub mod retry;
pub mod source_criterion;
pub mod strip_prefix;
pub mod strip_prefix_regex;

use crate::handler::SharedHandler;

/// Something that wraps the handler after it.
pub trait Middleware: Send + Sync + 'static {
    fn wrap(&self, next: SharedHandler) -> SharedHandler;

    /// [`Middleware::wrap`] for the router or service named `owner`: middlewares that keep
    /// state per user across reloads (rate-limit buckets) key it by `owner`.
    fn wrap_for(&self, owner: &str, next: SharedHandler) -> SharedHandler {
        let _ = owner;
        self.wrap(next)
    }
}

/// [`apply_chain`] for the router or service named `owner` ([`Middleware::wrap_for`]).
pub fn apply_chain_for<M>(owner: &str, chain: &[M], handler: SharedHandler) -> SharedHandler
where
    M: std::ops::Deref,
    M::Target: Middleware,
{
    chain
        .iter()
        .rev()
        .fold(handler, |next, middleware| middleware.wrap_for(owner, next))
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
