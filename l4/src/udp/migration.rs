//! Following a passed-through QUIC connection to a client's new address (sans-IO).
//!
//! A UDP session is keyed by the client's address, but a QUIC client's address can change
//! under it: a NAT rebinds it, or a phone moves from Wi-Fi to mobile. The backend never sees
//! the change (it talks to the relay's socket), so the relay must recognize the connection's
//! packets from the new address itself. It does so by connection ID: the backend's own
//! connection ID is read in the clear from the long headers of its handshake packets, and a
//! client keeps sending it as the destination of its short-header packets. A packet from an
//! unknown address whose destination connection ID is learned moves the session there.
//!
//! Limits: a connection ID is learned once per session, from the backend's first long
//! header; a client that switches to a connection ID issued later (inside encrypted frames,
//! as clients do on purpose when they migrate actively) is not followed. Zero-length
//! connection IDs cannot be followed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use crate::quic::{Classification, classify};

/// The address a session currently answers to, shared by the session's relay task and the
/// learned connection IDs that lead to it.
#[derive(Debug)]
pub struct ClientAddr(Mutex<SocketAddr>);

impl ClientAddr {
    pub fn new(addr: SocketAddr) -> Arc<ClientAddr> {
        Arc::new(ClientAddr(Mutex::new(addr)))
    }

    pub fn get(&self) -> SocketAddr {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn set(&self, addr: SocketAddr) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = addr;
    }
}

/// Distinct connection ID lengths looked up in a short header: backends use one length, a
/// few cover a mixed fleet.
const MAX_LENGTHS: usize = 4;

/// Connection IDs learned from backends, each leading to its session's address.
#[derive(Debug)]
pub struct LearnedCids {
    by_cid: HashMap<Box<[u8]>, Arc<ClientAddr>>,
    lengths: Vec<usize>,
    capacity: usize,
}

impl LearnedCids {
    /// At most `capacity` connection IDs (one per session: the session table's capacity).
    pub fn new(capacity: usize) -> Self {
        Self {
            by_cid: HashMap::new(),
            lengths: Vec::new(),
            capacity,
        }
    }

    pub fn len(&self) -> usize {
        self.by_cid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_cid.is_empty()
    }

    /// Reads the backend's connection ID from `answer` (a datagram from the backend) and
    /// remembers that it leads to `client`. True once learned (the caller stops looking);
    /// false for packets without one (short headers) and when the table is full.
    pub fn learn(&mut self, answer: &[u8], client: &Arc<ClientAddr>) -> bool {
        let cid = match classify(answer) {
            Classification::Initial { scid, .. } | Classification::OtherLong { scid, .. } => scid,
            Classification::MaybeShort | Classification::NotQuic => return false,
        };
        if cid.is_empty() {
            // Nothing to follow the connection by: stop looking.
            return true;
        }
        if self.by_cid.len() >= self.capacity
            || (!self.lengths.contains(&cid.len()) && self.lengths.len() >= MAX_LENGTHS)
        {
            return false;
        }
        if !self.lengths.contains(&cid.len()) {
            self.lengths.push(cid.len());
        }
        self.by_cid.insert(cid.into(), client.clone());
        true
    }

    /// The session a client's short-header `datagram` belongs to, by its destination
    /// connection ID.
    pub fn find(&self, datagram: &[u8]) -> Option<&Arc<ClientAddr>> {
        if self.by_cid.is_empty() || datagram.first().is_none_or(|first| first & 0x80 != 0) {
            return None;
        }
        self.lengths
            .iter()
            .find_map(|len| self.by_cid.get(datagram.get(1..1 + len)?))
    }

    /// Forgets the connection IDs of sessions that have ended (no one else holds their
    /// address any more).
    pub fn forget_ended(&mut self) {
        self.by_cid
            .retain(|_, client| Arc::strong_count(client) > 1);
        if self.by_cid.is_empty() {
            self.lengths.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Handshake packet (version 1, type 2) from a server with connection ID `scid`.
    fn server_handshake(scid: &[u8]) -> Vec<u8> {
        let mut packet = vec![0xE0, 0, 0, 0, 1, 4, 9, 9, 9, 9, scid.len() as u8];
        packet.extend_from_slice(scid);
        packet.extend_from_slice(&[0; 30]);
        packet
    }

    fn short(dcid: &[u8]) -> Vec<u8> {
        let mut packet = vec![0x43];
        packet.extend_from_slice(dcid);
        packet.extend_from_slice(&[0x55; 30]);
        packet
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    #[test]
    fn a_short_header_with_a_learned_id_leads_to_its_session_whatever_follows_it() {
        let mut cids = LearnedCids::new(8);
        let session = ClientAddr::new(addr(1000));
        assert!(
            !cids.learn(&short(&[1; 8]), &session),
            "short headers carry no source ID"
        );
        assert!(cids.learn(&server_handshake(&[7; 8]), &session));
        let found = cids.find(&short(&[7; 8])).expect("learned");
        assert_eq!(found.get(), addr(1000));
        found.set(addr(2000));
        assert_eq!(session.get(), addr(2000), "the session follows");
        assert!(cids.find(&short(&[8; 8])).is_none());
        // Long headers are never claimed this way.
        assert!(cids.find(&server_handshake(&[7; 8])).is_none());
    }

    #[test]
    fn ended_sessions_are_forgotten_and_the_table_is_bounded() {
        let mut cids = LearnedCids::new(2);
        let a = ClientAddr::new(addr(1));
        let b = ClientAddr::new(addr(2));
        let c = ClientAddr::new(addr(3));
        assert!(cids.learn(&server_handshake(&[1; 8]), &a));
        assert!(cids.learn(&server_handshake(&[2; 8]), &b));
        assert!(!cids.learn(&server_handshake(&[3; 8]), &c), "full");
        drop(a);
        cids.forget_ended();
        assert_eq!(cids.len(), 1);
        assert!(cids.learn(&server_handshake(&[3; 8]), &c));
        assert!(cids.find(&short(&[1; 8])).is_none());
        assert!(cids.find(&short(&[3; 8])).is_some());
    }

    #[test]
    fn ids_of_several_lengths_are_looked_up_but_not_without_bound() {
        let mut cids = LearnedCids::new(100);
        let session = ClientAddr::new(addr(1));
        for len in 4..4 + MAX_LENGTHS {
            assert!(cids.learn(&server_handshake(&vec![len as u8; len]), &session));
        }
        assert!(!cids.learn(&server_handshake(&[0xEE; 20]), &session));
        for len in 4..4 + MAX_LENGTHS {
            assert!(cids.find(&short(&vec![len as u8; len])).is_some());
        }
        // A zero-length ID ends the search without being kept.
        assert!(cids.learn(&server_handshake(&[]), &session));
        assert_eq!(cids.len(), MAX_LENGTHS);
    }
}
