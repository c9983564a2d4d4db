//! The local QUIC endpoint that may share a UDP entrypoint's socket: HTTP/3 terminated by
//! Sallyport itself, next to QUIC passed through by SNI and plain datagrams relayed to UDP
//! routers. The relay owns the socket and reads every datagram; the ones that belong to the
//! local endpoint are handed over through [`LocalQuic`], which the runtime implements on
//! top of its QUIC stack (l4 knows nothing of it).
//!
//! A datagram belongs to the local endpoint when its destination connection ID is one the
//! endpoint issued ([`LocalQuic::owns`], so connections survive a client's address change),
//! or when it starts a QUIC flow that no passthrough router takes.

use std::net::SocketAddr;

use crate::quic::{Classification, classify};

/// A QUIC endpoint fed by the relay.
pub trait LocalQuic: Send + Sync {
    /// The length of the connection IDs the endpoint issues: a short header carries no
    /// length, so this is how many bytes after its first byte are the connection ID.
    fn cid_len(&self) -> usize;

    /// Whether `cid` is one the endpoint issued. A few false positives are harmless (the
    /// endpoint drops what it cannot decrypt); a false negative would cut a connection.
    fn owns(&self, cid: &[u8]) -> bool;

    /// Hands over a datagram from `from`. False when it was dropped (the endpoint's queue
    /// is full), which QUIC recovers from as from any loss.
    fn deliver(&self, from: SocketAddr, datagram: &[u8]) -> bool;

    /// Whether connections are still open: after stop, the relay keeps reading for them
    /// until they have drained.
    fn busy(&self) -> bool;

    /// Takes a QUIC packet (not an Initial) that is for none of the endpoint's connections
    /// and that nothing else takes: after a binary upgrade, the packets of the previous
    /// process's connections, which the runtime forwards there. False when it has nowhere
    /// to send it: the packet is dropped as before.
    fn foreign(&self, _from: SocketAddr, _datagram: &[u8]) -> bool {
        false
    }
}

/// Whether `datagram` may be a QUIC packet of an established flow (any header but an
/// Initial's): what a connection of another endpoint on this socket would send. A short
/// header's fixed bit may be greased, so any header of form 0 counts.
pub fn later_quic_packet(datagram: &[u8]) -> bool {
    match classify(datagram) {
        Classification::OtherLong { .. } => true,
        Classification::Initial { .. } => false,
        Classification::MaybeShort | Classification::NotQuic => {
            datagram.first().is_some_and(|first| first & 0x80 == 0)
        }
    }
}

/// Whether `datagram` is a QUIC packet for a connection of `local` (judged by its
/// destination connection ID, whatever the packet type).
pub fn addressed_to(local: &dyn LocalQuic, datagram: &[u8]) -> bool {
    match classify(datagram) {
        Classification::Initial { dcid, .. } | Classification::OtherLong { dcid, .. } => {
            dcid.len() == local.cid_len() && local.owns(dcid)
        }
        // A short header's fixed bit may be greased (RFC 9287, which quinn offers), so any
        // header of form 0 is checked: the connection ID is the proof, not the bit.
        Classification::MaybeShort | Classification::NotQuic => {
            datagram.first().is_some_and(|first| first & 0x80 == 0)
                && datagram
                    .get(1..1 + local.cid_len())
                    .is_some_and(|cid| local.owns(cid))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Owns the connection IDs that start with 0xAA.
    struct Marked;

    impl LocalQuic for Marked {
        fn cid_len(&self) -> usize {
            4
        }
        fn owns(&self, cid: &[u8]) -> bool {
            cid.first() == Some(&0xAA)
        }
        fn deliver(&self, _: SocketAddr, _: &[u8]) -> bool {
            true
        }
        fn busy(&self) -> bool {
            false
        }
    }

    fn long_header(first: u8, dcid: &[u8]) -> Vec<u8> {
        let mut packet = vec![first, 0, 0, 0, 1, dcid.len() as u8];
        packet.extend_from_slice(dcid);
        packet.extend_from_slice(&[0; 1]); // empty source connection ID
        packet.extend_from_slice(&[0; 40]);
        packet
    }

    #[test]
    fn a_short_header_is_claimed_by_the_connection_id_after_its_first_byte() {
        assert!(addressed_to(&Marked, &[0x41, 0xAA, 1, 2, 3, 9, 9]));
        assert!(!addressed_to(&Marked, &[0x41, 0xAB, 1, 2, 3, 9, 9]));
        // The fixed bit may be greased away (RFC 9287): the connection ID decides.
        assert!(addressed_to(&Marked, &[0x01, 0xAA, 1, 2, 3, 9, 9]));
        assert!(!addressed_to(&Marked, &[0x01, 0xAB, 1, 2, 3, 9, 9]));
        // Too short to hold the connection ID.
        assert!(!addressed_to(&Marked, &[0x41, 0xAA, 1]));
    }

    #[test]
    fn long_headers_are_claimed_only_with_an_issued_id_of_the_issued_length() {
        // Handshake (type 2) and Initial (type 0) of version 1.
        assert!(addressed_to(&Marked, &long_header(0xE0, &[0xAA, 1, 2, 3])));
        assert!(addressed_to(&Marked, &long_header(0xC0, &[0xAA, 1, 2, 3])));
        // The client's own first destination ID (8 bytes here) is never the endpoint's.
        assert!(!addressed_to(
            &Marked,
            &long_header(0xC0, &[0xAA, 1, 2, 3, 4, 5, 6, 7])
        ));
        assert!(!addressed_to(&Marked, &long_header(0xE0, &[0xAB, 1, 2, 3])));
    }

    #[test]
    fn packets_of_established_flows_may_be_forwarded_but_initials_never() {
        assert!(later_quic_packet(&long_header(0xE0, &[0xAB, 1, 2, 3])));
        assert!(later_quic_packet(&[0x41, 0xAB, 1, 2, 3]));
        assert!(
            later_quic_packet(&[0x01, 0xAB, 1, 2, 3]),
            "greased fixed bit"
        );
        assert!(!later_quic_packet(&long_header(0xC0, &[0xAB, 1, 2, 3])));
        assert!(!later_quic_packet(&[]));
    }

    #[test]
    fn empty_and_plain_datagrams_are_not_claimed() {
        assert!(!addressed_to(&Marked, &[]));
        assert!(!addressed_to(&Marked, b"\x00hello"));
    }
}
