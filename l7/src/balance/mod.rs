//! Load-balancing choices for HTTP services, as pure cores: no sockets, no clocks.
//!
//! Each strategy only decides *which* handler serves the next request; forwarding,
//! health probing and cookie parsing from requests live in the I/O shells around them.
//! Traefik semantics (reference §5): [`edf`] is the weighted round robin of `loadBalancer`
//! and `weighted`, [`p2c`] and [`hrw`] the other `loadBalancer` strategies, [`sticky`]
//! the affinity cookie that can sit in front of any of them.

pub mod edf;
pub mod p2c;
pub mod sticky;

pub use edf::Edf;
/// Rendezvous hashing lives in l4, shared with the UDP services.
pub use l4::balance::hrw;
