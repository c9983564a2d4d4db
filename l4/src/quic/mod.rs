//! Reading where a QUIC connection wants to go: the SNI and ALPN of the ClientHello carried
//! in a client's Initial packets, so that one UDP port can route QUIC by server name.
//!
//! The module is sans-IO: it owns no socket and reads no clock. [`classify`] sorts a
//! datagram by its first header (client Initial, other long header, maybe a short header,
//! not QUIC); an [`InitialReader`] is then fed the datagrams of one flow (one client
//! address and Destination Connection ID) until it answers with the ClientHello or an error.
//! Inside, each Initial is cut at its Length field (`packet`), its keys derived from the
//! Destination Connection ID and its protection removed (`protection`, using rustls), its
//! frames walked (`frames`) and the CRYPTO data put back in order (`reassembly`); the
//! ClientHello itself is decoded by [`crate::sniff::client_hello_message`].
//!
//! What the caller owns: the flow table, a deadline for flows whose ClientHello never
//! completes (a few seconds; clients retransmit after about 300 ms), buffering the datagrams
//! for replay to the chosen backend, and counting drops. The reader bounds its own memory
//! and work per flow ([`MAX_CRYPTO_STREAM`], [`MAX_FLOW_DATAGRAMS`], [`MAX_FLOW_BYTES`]).
//!
//! Amplification: nothing here ever produces bytes to send. Reading an Initial cannot make
//! Sallyport answer a spoofed address; whatever is sent back comes from the backend the
//! flow is passed to, or from the local QUIC endpoint with its own anti-amplification limit
//! (RFC 9000 §8.1).
//!
//! Versions 1 (RFC 9000/9001) and 2 (RFC 9369) are read. Other versions, Retry, and
//! ClientHellos split across a Retry or a Version Negotiation are out of scope: such flows
//! are classified as [`Classification::OtherLong`] and left to the caller.

mod frames;
mod packet;
mod protection;
mod reader;
mod reassembly;
#[cfg(test)]
mod test_support;

pub use packet::{
    Classification, ConnectionId, MAX_CID_LEN, Version, classify, looks_like_quic_short,
};
pub use reader::{
    InitialHello, InitialReader, MAX_FLOW_BYTES, MAX_FLOW_DATAGRAMS, MIN_INITIAL_DATAGRAM, Outcome,
};
pub use reassembly::MAX_CRYPTO_STREAM;

use crate::sniff::SniffError;

/// Why a datagram or a flow cannot yield a ClientHello. Every case means "drop the flow's
/// Initials"; the variants say why, for logs and counters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuicError {
    #[error("not a QUIC long-header packet")]
    NotLongHeader,
    #[error("truncated QUIC packet: {0}")]
    Truncated(&'static str),
    #[error("QUIC version {0:#010x} is not supported (only 1 and 2 are)")]
    UnsupportedVersion(u32),
    #[error("malformed QUIC packet: {0}")]
    Malformed(&'static str),
    #[error(
        "client Initial in a {0}-byte datagram; RFC 9000 §14.1 requires at least {MIN_INITIAL_DATAGRAM}"
    )]
    ShortDatagram(usize),
    #[error("QUIC Initial packet does not decrypt (tampered, or not a client Initial)")]
    Decrypt,
    #[error("the TLS provider has no QUIC support for TLS_AES_128_GCM_SHA256")]
    CryptoUnavailable,
    #[error("frame type {0:#x} is not allowed in an Initial packet")]
    ForbiddenFrame(u64),
    #[error("the client closed the connection (CONNECTION_CLOSE error code {0:#x})")]
    ConnectionClosed(u64),
    #[error("CRYPTO data beyond the first {MAX_CRYPTO_STREAM} bytes of the stream")]
    CryptoOutOfRange,
    #[error("CRYPTO frames disagree on the byte at stream offset {0}")]
    CryptoMismatch(u64),
    #[error("the Initial CRYPTO stream starts with handshake type {0}, not a ClientHello (1)")]
    NotClientHello(u8),
    #[error("Initial with another version or Destination Connection ID than the flow's first")]
    FlowMismatch,
    #[error("more than {MAX_FLOW_DATAGRAMS} datagrams without a complete ClientHello")]
    TooManyDatagrams,
    #[error("more than {MAX_FLOW_BYTES} bytes without a complete ClientHello")]
    TooManyBytes,
    #[error(transparent)]
    ClientHello(#[from] SniffError),
}
