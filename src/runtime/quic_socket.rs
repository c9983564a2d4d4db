//! One UDP socket shared by the datagram relay and the HTTP/3 endpoint.
//!
//! The relay ([`l4::udp::serve`]) owns the receiving side: it reads every datagram, passes
//! QUIC through by SNI, relays plain datagrams to UDP routers, and hands the rest to quinn
//! through [`RelaySide`] (the relay's [`LocalQuic`]). quinn reads those from a bounded
//! queue through [`QuinnSide`] (its [`AsyncUdpSocket`]) and sends on the socket itself.
//!
//! quinn's connection IDs come from [`KeyedCids`]: a random nonce and a keyed tag, so the
//! relay can tell the packets of local connections from anything else by their connection
//! ID alone, even after a client's address changes.
//!
//! After a binary upgrade the new process's relay side also forwards the packets of the
//! previous process's connections there ([`RelaySide::forward_to_previous`],
//! [`super::quic_forward`]).
//!
//! quinn's packets leave in GSO runs where the kernel offers it ([`Batching`]). The socket
//! keeps the kernel's default of fragmenting what exceeds the path MTU, because plain UDP
//! routers relay datagrams of any size on it. quinn is told so (`may_fragment`), and
//! therefore keeps to QUIC's 1,200-byte packets instead of probing for a larger MTU.

use std::fmt;
use std::future::Future;
use std::hash::BuildHasher;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use l4::udp::LocalQuic;
use l4::udp::batch::Batching;
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, ConnectionId, ConnectionIdGenerator, UdpPoller};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::quic_forward::Predecessor;

/// Datagrams waiting for quinn: beyond this, new ones are dropped (QUIC recovers from the
/// loss) rather than queued without end while quinn is busy.
const QUEUE_DATAGRAMS: usize = 4096;

/// Bytes waiting for quinn, bounding the queue's memory whatever the datagrams' sizes.
const QUEUE_BYTES: usize = 8 << 20;

/// Connection IDs: a random nonce, then a tag over it.
const NONCE_LEN: usize = 8;
const TAG_LEN: usize = 4;
const CID_LEN: usize = NONCE_LEN + TAG_LEN;

/// Connection IDs are retired and replaced after this long, so that a long connection's
/// packets do not carry one identifier for hours.
const CID_LIFETIME: Duration = Duration::from_secs(3600);

type Datagram = (SocketAddr, Box<[u8]>);

/// Signs and checks connection IDs; one key per endpoint, shared by quinn's generators and
/// the relay's check.
#[derive(Clone)]
struct CidKey(std::hash::RandomState);

impl CidKey {
    fn tag(&self, nonce: &[u8]) -> [u8; TAG_LEN] {
        let hash = self.0.hash_one(nonce).to_le_bytes();
        let mut tag = [0; TAG_LEN];
        tag.copy_from_slice(&hash[..TAG_LEN]);
        tag
    }

    fn signed(&self, cid: &[u8]) -> bool {
        cid.len() == CID_LEN && cid[NONCE_LEN..] == self.tag(&cid[..NONCE_LEN])
    }
}

/// quinn's connection ID generator: random nonces signed with the endpoint's key.
pub struct KeyedCids(CidKey);

impl ConnectionIdGenerator for KeyedCids {
    fn generate_cid(&mut self) -> ConnectionId {
        let mut cid = [0u8; CID_LEN];
        // The OS random source does not fail on supported systems; if it ever did, a fresh
        // RandomState's keys (themselves random) still make a nonce nobody can predict.
        if getrandom::fill(&mut cid[..NONCE_LEN]).is_err() {
            let fallback = std::hash::RandomState::new().hash_one(self.0.0.hash_one(0u8));
            cid[..NONCE_LEN].copy_from_slice(&fallback.to_le_bytes());
        }
        let tag = self.0.tag(&cid[..NONCE_LEN]);
        cid[NONCE_LEN..].copy_from_slice(&tag);
        ConnectionId::new(&cid)
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        Some(CID_LIFETIME)
    }
}

/// A shared socket, split into the side quinn uses and the side the relay feeds.
pub fn share(socket: Arc<UdpSocket>) -> (Arc<QuinnSide>, Arc<RelaySide>, quinn::EndpointConfig) {
    let (sender, receiver) = mpsc::channel(QUEUE_DATAGRAMS);
    let queued = Arc::new(AtomicUsize::new(0));
    let key = CidKey(std::hash::RandomState::new());
    let mut config = quinn::EndpointConfig::default();
    let generator_key = key.clone();
    config.cid_generator(move || Box::new(KeyedCids(generator_key.clone())));
    let batching = Batching::new(&socket).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "HTTP/3 sends without GSO: one packet per system call");
        Batching::single()
    });
    let quinn_side = Arc::new(QuinnSide {
        socket,
        batching,
        inbox: Mutex::new(receiver),
        queued: queued.clone(),
    });
    let relay_side = Arc::new(RelaySide {
        sender,
        queued,
        key,
        endpoint: OnceLock::new(),
        previous: OnceLock::new(),
    });
    (quinn_side, relay_side, config)
}

/// What the relay calls: quinn's connection IDs, and its queue.
pub struct RelaySide {
    sender: mpsc::Sender<Datagram>,
    queued: Arc<AtomicUsize>,
    key: CidKey,
    /// Set once the endpoint exists, to tell whether it still has connections.
    endpoint: OnceLock<quinn::Endpoint>,
    /// Set when this process took over from one whose HTTP/3 connections still drain.
    previous: OnceLock<Predecessor>,
}

impl RelaySide {
    pub fn attach(&self, endpoint: quinn::Endpoint) {
        let _ = self.endpoint.set(endpoint);
    }

    /// From now on, QUIC packets for none of this endpoint's connections that nothing else
    /// takes go to `previous`, the process this one took over from.
    pub fn forward_to_previous(&self, previous: Predecessor) {
        let _ = self.previous.set(previous);
    }
}

impl LocalQuic for RelaySide {
    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn owns(&self, cid: &[u8]) -> bool {
        self.key.signed(cid)
    }

    fn deliver(&self, from: SocketAddr, datagram: &[u8]) -> bool {
        let size = datagram.len();
        if self.queued.fetch_add(size, Ordering::Relaxed) + size > QUEUE_BYTES {
            self.queued.fetch_sub(size, Ordering::Relaxed);
            return false;
        }
        if self.sender.try_send((from, datagram.into())).is_err() {
            self.queued.fetch_sub(size, Ordering::Relaxed);
            return false;
        }
        true
    }

    fn busy(&self) -> bool {
        self.endpoint
            .get()
            .is_some_and(|endpoint| endpoint.open_connections() > 0)
    }

    fn foreign(&self, from: SocketAddr, datagram: &[u8]) -> bool {
        self.previous
            .get()
            .is_some_and(|previous| previous.forward(from, datagram))
    }
}

/// What quinn calls: datagrams from the relay's queue; sends straight on the socket.
pub struct QuinnSide {
    socket: Arc<UdpSocket>,
    batching: Batching,
    inbox: Mutex<mpsc::Receiver<Datagram>>,
    queued: Arc<AtomicUsize>,
}

impl fmt::Debug for QuinnSide {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuinnSide")
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

impl AsyncUdpSocket for QuinnSide {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(Writable {
            socket: self.socket.clone(),
            waiting: None,
        })
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        self.batching.send_transmit(&self.socket, transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut inbox = self.inbox.lock().unwrap_or_else(PoisonError::into_inner);
        let mut filled = 0;
        while filled < bufs.len().min(meta.len()) {
            let next = if filled == 0 {
                match inbox.poll_recv(cx) {
                    Poll::Ready(next) => next,
                    Poll::Pending => return Poll::Pending,
                }
            } else {
                inbox.try_recv().ok()
            };
            // The relay has stopped: nothing more will come, and that is no error of the
            // socket's (an error would end quinn's endpoint before its connections drain).
            let Some((from, datagram)) = next else {
                break;
            };
            self.queued.fetch_sub(datagram.len(), Ordering::Relaxed);
            let buf = &mut bufs[filled];
            // quinn's buffers hold its largest accepted payload; anything bigger would be
            // dropped by quinn too.
            if datagram.len() > buf.len() {
                continue;
            }
            buf[..datagram.len()].copy_from_slice(&datagram);
            meta[filled] = RecvMeta {
                addr: from,
                len: datagram.len(),
                stride: datagram.len(),
                ecn: None,
                dst_ip: None,
            };
            filled += 1;
        }
        if filled == 0 {
            return Poll::Pending;
        }
        Poll::Ready(Ok(filled))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    fn may_fragment(&self) -> bool {
        true
    }

    fn max_transmit_segments(&self) -> usize {
        self.batching.gso_segments()
    }
}

/// Waits for the socket to take sends again; one per quinn task that sends.
struct Writable {
    socket: Arc<UdpSocket>,
    waiting: Option<Pin<Box<dyn Future<Output = io::Result<()>> + Send + Sync>>>,
}

impl fmt::Debug for Writable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writable").finish_non_exhaustive()
    }
}

impl UdpPoller for Writable {
    fn poll_writable(mut self: Pin<&mut Self>, cx: &mut Context) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let waiting = this.waiting.get_or_insert_with(|| {
            let socket = this.socket.clone();
            Box::pin(async move { socket.writable().await })
        });
        let ready = waiting.as_mut().poll(cx);
        if ready.is_ready() {
            // A future that has completed must not be polled again: the next wait builds a
            // new one.
            this.waiting = None;
        }
        ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_recognized_and_others_are_not() {
        let key = CidKey(std::hash::RandomState::new());
        let mut generator = KeyedCids(key.clone());
        let a = generator.generate_cid();
        let b = generator.generate_cid();
        assert_eq!(a.len(), CID_LEN);
        assert_ne!(a[..], b[..], "nonces are random");
        assert!(key.signed(&a) && key.signed(&b));
        let mut forged = a[..].to_vec();
        forged[0] ^= 1;
        assert!(!key.signed(&forged));
        assert!(!key.signed(&a[..CID_LEN - 1]));
        // Another endpoint's key does not recognize them.
        let other = CidKey(std::hash::RandomState::new());
        assert!(!other.signed(&a));
    }

    #[test]
    fn the_queue_is_bounded_in_bytes_and_drains_into_quinns_buffers() {
        // Outside any task, so tokio's cooperative budget does not cut the polls short.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        let socket = runtime.block_on(UdpSocket::bind("127.0.0.1:0")).unwrap();
        let _entered = runtime.enter();
        let socket = Arc::new(socket);
        let (quinn_side, relay_side, _) = share(socket);
        let from: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let big = vec![7u8; 60_000];
        let mut accepted = 0;
        while relay_side.deliver(from, &big) {
            accepted += 1;
            assert!(accepted <= QUEUE_BYTES / big.len(), "the byte bound holds");
        }
        assert_eq!(accepted, QUEUE_BYTES / big.len());
        // quinn's buffers are smaller than these datagrams: they are skipped, not truncated,
        // and their bytes leave the budget.
        let mut small = [[0u8; 1500]; 4];
        let mut bufs: Vec<IoSliceMut<'_>> = small.iter_mut().map(|b| IoSliceMut::new(b)).collect();
        let mut meta = [RecvMeta::default(); 4];
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(
            quinn_side
                .poll_recv(&mut cx, &mut bufs, &mut meta)
                .is_pending()
        );
        assert!(relay_side.deliver(from, b"hello"));
        assert!(relay_side.deliver(from, b"world!"));
        let Poll::Ready(Ok(n)) = quinn_side.poll_recv(&mut cx, &mut bufs, &mut meta) else {
            panic!("two datagrams are ready");
        };
        assert_eq!(n, 2);
        assert_eq!((meta[0].len, meta[1].len), (5, 6));
        assert_eq!(&bufs[1][..6], b"world!");
        assert_eq!(quinn_side.queued.load(Ordering::Relaxed), 0);
    }
}
