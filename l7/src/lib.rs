//! Sallyport layer 7: HTTP routing, middlewares and services.

pub mod error;
pub mod forwarded;
pub mod request;
pub mod router;
pub mod rule;
