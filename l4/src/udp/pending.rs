//! QUIC flows waiting for their ClientHello, as a sans-IO core (time passed in).
//!
//! On an entrypoint with QUIC passthrough routers, a new client whose first datagram is a
//! QUIC Initial is held here until its Initials yield the ClientHello (a post-quantum hello
//! spans two datagrams). Its datagrams are kept to be replayed, untouched and in order, to
//! the backend the server name chooses. Everything is bounded: the number of flows waiting,
//! the datagrams and bytes per flow (by the [`InitialReader`]'s own limits), and the time a
//! flow may wait.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::quic::{InitialHello, InitialReader, Outcome, QuicError};

/// How long a flow may wait for the rest of its ClientHello. Clients resend their Initial
/// after about 300 ms, so this leaves room for a lost datagram or two.
pub const DEFAULT_HELLO_DEADLINE: Duration = Duration::from_secs(2);

/// At most this many flows wait at once; more new QUIC clients are dropped meanwhile.
pub const DEFAULT_MAX_PENDING: usize = 1024;

/// What a datagram from a waiting (or new) QUIC flow led to.
#[derive(Debug)]
pub enum Feed {
    /// Held: the ClientHello is not complete yet.
    Wait,
    /// Complete: the hello, and every datagram of the flow in arrival order (this one last).
    Hello(InitialHello, Vec<Vec<u8>>),
    /// The flow is dropped: its Initials cannot be read, or too many flows wait.
    Dropped(DropReason),
}

/// Why a QUIC flow was dropped before any backend saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DropReason {
    Unreadable(QuicError),
    TooManyWaiting,
}

struct Flow {
    reader: InitialReader,
    datagrams: Vec<Vec<u8>>,
    started: Instant,
}

/// The waiting flows of one entrypoint, by client address.
pub struct PendingFlows {
    flows: HashMap<SocketAddr, Flow>,
    max: usize,
    deadline: Duration,
}

impl PendingFlows {
    pub fn new(max: usize, deadline: Duration) -> Self {
        Self {
            flows: HashMap::new(),
            max: max.max(1),
            deadline,
        }
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Whether `client` has a flow waiting.
    pub fn contains(&self, client: &SocketAddr) -> bool {
        self.flows.contains_key(client)
    }

    /// Feeds a datagram of `client`'s flow (starting the flow if needed).
    pub fn feed(&mut self, client: SocketAddr, datagram: &[u8], now: Instant) -> Feed {
        if !self.flows.contains_key(&client) {
            if self.flows.len() >= self.max {
                self.expire(now);
                if self.flows.len() >= self.max {
                    return Feed::Dropped(DropReason::TooManyWaiting);
                }
            }
            self.flows.insert(
                client,
                Flow {
                    reader: InitialReader::new(),
                    datagrams: Vec::new(),
                    started: now,
                },
            );
        }
        let Some(flow) = self.flows.get_mut(&client) else {
            return Feed::Dropped(DropReason::TooManyWaiting);
        };
        flow.datagrams.push(datagram.to_vec());
        match flow.reader.feed(datagram) {
            Outcome::NeedMore => Feed::Wait,
            Outcome::ClientHello(hello) => {
                let datagrams = self
                    .flows
                    .remove(&client)
                    .map(|f| f.datagrams)
                    .unwrap_or_default();
                Feed::Hello(hello, datagrams)
            }
            Outcome::Error(e) => {
                self.flows.remove(&client);
                Feed::Dropped(DropReason::Unreadable(e))
            }
        }
    }

    /// Drops the flows that waited past the deadline, returning how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let deadline = self.deadline;
        let before = self.flows.len();
        self.flows
            .retain(|_, f| now.saturating_duration_since(f.started) < deadline);
        before - self.flows.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector(name: &str) -> Vec<u8> {
        let path = format!("{}/testdata/quic/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn client(n: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 40_000 + n))
    }

    #[test]
    fn a_hello_over_two_datagrams_waits_then_comes_with_both() {
        let (one, two) = (
            vector("chromium-156-quic-v1-initial-1.bin"),
            vector("chromium-156-quic-v1-initial-2.bin"),
        );
        let t0 = Instant::now();
        let mut pending = PendingFlows::new(8, DEFAULT_HELLO_DEADLINE);
        assert!(matches!(pending.feed(client(1), &one, t0), Feed::Wait));
        assert!(pending.contains(&client(1)));
        match pending.feed(client(1), &two, t0) {
            Feed::Hello(hello, datagrams) => {
                assert_eq!(hello.sni.as_deref(), Some("a.test"));
                assert_eq!(datagrams, vec![one, two]);
            }
            other => panic!("{other:?}"),
        }
        assert!(pending.is_empty());
    }

    #[test]
    fn unreadable_flows_are_dropped_and_late_ones_expire() {
        let t0 = Instant::now();
        let mut pending = PendingFlows::new(8, Duration::from_secs(2));
        let garbage = [0xc0u8; 1200];
        assert!(matches!(
            pending.feed(client(1), &garbage, t0),
            Feed::Dropped(DropReason::Unreadable(_))
        ));
        let one = vector("firefox-esr-153-quic-v1-initial-1.bin");
        assert!(matches!(pending.feed(client(2), &one, t0), Feed::Wait));
        assert_eq!(pending.expire(t0 + Duration::from_secs(1)), 0);
        assert_eq!(pending.expire(t0 + Duration::from_secs(2)), 1);
        assert!(pending.is_empty());
    }

    #[test]
    fn the_number_of_waiting_flows_is_bounded() {
        let t0 = Instant::now();
        let one = vector("chromium-156-quic-v1-initial-1.bin");
        let mut pending = PendingFlows::new(2, Duration::from_secs(2));
        assert!(matches!(pending.feed(client(1), &one, t0), Feed::Wait));
        assert!(matches!(pending.feed(client(2), &one, t0), Feed::Wait));
        assert!(matches!(
            pending.feed(client(3), &one, t0),
            Feed::Dropped(DropReason::TooManyWaiting)
        ));
        // Once the first two are past their deadline, a newcomer may wait.
        let later = t0 + Duration::from_secs(3);
        assert!(matches!(pending.feed(client(3), &one, later), Feed::Wait));
        assert_eq!(pending.len(), 1);
    }
}
