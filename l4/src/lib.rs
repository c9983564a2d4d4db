//! Sallyport layer 4: everything that works on bytes rather than HTTP messages:
//! first-bytes sniffing, the rule language, TCP routing and proxying, TLS termination.

pub mod balance;
pub mod io;
pub mod kept;
pub mod observe;
pub mod proxy_protocol;
pub mod quic;
pub mod retire;
pub mod rule;
pub mod sniff;
pub mod tcp;
pub mod tls;
pub mod udp;
