//! Sallyport layer 7: HTTP routing, middlewares and services.

pub mod request;
pub mod router;
pub mod rule;
