//! TCP routing and proxying: the byte relay, load balancing over backend servers,
//! dialing backends (serversTransport) and active health checks.

pub mod balance;
pub mod health;
pub mod proxy;
pub mod service;
#[cfg(test)]
mod testing;
pub mod transport;
