//! TCP: rules over what a connection shows before any byte is forwarded (SNI, ALPN,
//! backend servers, dialing backends (serversTransport) and active health checks.

pub mod balance;
pub mod health;
pub mod proxy;
pub mod router;
pub mod rule;
pub mod service;
#[cfg(test)]
mod testing;
pub mod transport;
