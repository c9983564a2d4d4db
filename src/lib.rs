//! Sallyport

pub mod config;
