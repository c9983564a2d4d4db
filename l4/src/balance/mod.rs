//! Load-balancing choices shared by TCP, UDP and HTTP services, as pure cores: no sockets,
//! no clocks. [`wrr`] is Traefik's TCP/UDP weighted round robin, [`hrw`] rendezvous hashing
//! on the client IP (HTTP `highestRandomWeight`, and the UDP `hrw` strategy).

pub mod hrw;
pub mod wrr;

pub use hrw::Hrw;
pub use wrr::Wrr;
