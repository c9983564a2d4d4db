//! Sallyport layer 7: HTTP routing, middlewares and services.

pub mod balance;
pub mod rule;
