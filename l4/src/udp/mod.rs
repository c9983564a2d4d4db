//! UDP: sessions keyed by client address over one socket per entrypoint, routers chosen
//! once per session (a rule such as `ClientIP`, else the router without a rule), services
//! that pick a backend by weighted round robin or client-IP affinity, and the relay that
//! carries datagrams both ways, boundaries kept.

pub mod batch;
pub mod local;
pub mod migration;
pub mod pending;
pub mod proxy;
pub mod router;
pub mod service;
pub mod session;

pub use local::LocalQuic;
pub use proxy::{UdpSettings, UdpStats, serve};
pub use router::{UdpRoute, UdpRoutes};
pub use service::{LoadBalancer, Strategy, UdpService, Weighted};
pub use session::SessionTable;
