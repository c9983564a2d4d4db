//! Sallyport layer 4: everything that works on bytes rather than HTTP messages.

pub mod io;
pub mod proxy_protocol;
pub mod sniff;
pub mod tls;
