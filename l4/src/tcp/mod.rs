//! TCP routing: rules over what a connection shows before any byte is forwarded (SNI, ALPN,
//! client address) and the priority-ordered tables that pick a router.

pub mod router;
pub mod rule;
