//! TCP: rules over what a connection shows before any byte is forwarded (SNI, ALPN,
//! client address), the priority-ordered tables that pick a router, the dispatch of
//! one accepted connection, TCP middlewares, the byte relay, load balancing over
//! backend servers, dialing backends (serversTransport) and active health checks, STARTTLS
//! dialogues, and the hand-off of connections that belong to HTTP routers.

pub mod dispatch;
pub mod handshake;
pub mod health;
pub mod middleware;
pub mod proxy;
pub mod router;
pub mod rule;
pub mod service;
pub mod sni;
pub mod starttls;
#[cfg(test)]
mod testing;
pub mod transport;
