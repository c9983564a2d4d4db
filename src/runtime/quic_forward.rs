//! HTTP/3 connections across a binary upgrade. After the hand-over every datagram of the
//! shared UDP socket reaches the new process, but the QUIC connections the old process
//! serves live on there (their keys are there, not here). So the new process forwards their
//! packets to its predecessor ([`Predecessor`]): QUIC packets that are not Initials, whose
//! connection ID is not one of its own and that no UDP router or passed-through flow takes.
//! The predecessor feeds them to its quinn endpoint ([`receive`]), which answers on its copy
//! of the shared socket, so clients hear back from the same address.
//!
//! The two processes talk over a Unix datagram socket pair made for each HTTP/3 entrypoint at
//! the hand-over. Both sides are bounded: a full socket buffer drops the packet (QUIC recovers
//! from it as from any loss), and forwarding ends once the predecessor has exited or at the
//! entrypoint's `graceTimeOut`, after which the predecessor is gone anyway.
//!
//! A message is the client's address, then the packet: `4` and 4 address bytes, or `6` and
//! 16, then the port (big-endian), then the packet's bytes.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use l4::udp::LocalQuic;
use tracing::info;

/// The longest header: the family byte, an IPv6 address and a port.
const MAX_HEADER: usize = 1 + 16 + 2;

/// The largest UDP payload, so any packet the relay read fits in a message.
const MAX_PACKET: usize = 65_535;

/// The new process's end: forwards packets of the previous process's connections.
pub struct Predecessor {
    socket: UnixDatagram,
    until: Instant,
    ended: AtomicBool,
    forwarded: AtomicU64,
    dropped: AtomicU64,
}

impl Predecessor {
    /// Forwards over `socket` (the end handed over by the previous process) for at most
    /// `grace`.
    pub fn new(socket: UnixDatagram, grace: Duration) -> io::Result<Predecessor> {
        socket.set_nonblocking(true)?;
        Ok(Predecessor {
            socket,
            until: Instant::now() + grace,
            ended: AtomicBool::new(false),
            forwarded: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        })
    }

    /// Sends `packet` from `from` to the previous process. False once forwarding has ended
    /// (the previous process exited, or the grace time is over): the packet is then the
    /// caller's to drop. A full buffer drops it here (true: it was taken care of).
    pub fn forward(&self, from: SocketAddr, packet: &[u8]) -> bool {
        if self.ended.load(Ordering::Relaxed) {
            return false;
        }
        if Instant::now() >= self.until {
            self.end("the grace time is over");
            return false;
        }
        match self.socket.send(&encode(from, packet)) {
            Ok(_) => {
                self.forwarded.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                true
            }
            // ECONNREFUSED: the other end is closed, so the previous process has exited.
            Err(_) => {
                self.end("the previous process has exited");
                false
            }
        }
    }

    fn end(&self, why: &str) {
        if !self.ended.swap(true, Ordering::Relaxed) {
            info!(
                forwarded = self.forwarded.load(Ordering::Relaxed),
                dropped = self.dropped.load(Ordering::Relaxed),
                why,
                "upgrade: no more HTTP/3 packets forwarded to the previous process"
            );
        }
    }
}

/// The previous process's end: hands every packet the new process forwards over `socket` to
/// `local` (its quinn endpoint's queue) until the caller stops awaiting; counts them in
/// `received`. Malformed messages are skipped.
pub async fn receive(socket: UnixDatagram, local: &dyn LocalQuic, received: &AtomicU64) {
    let socket = match socket
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UnixDatagram::from_std(socket))
    {
        Ok(socket) => socket,
        Err(e) => {
            tracing::warn!(error = %e, "upgrade: cannot read the packets the new process forwards");
            return;
        }
    };
    let mut buf = vec![0u8; MAX_HEADER + MAX_PACKET];
    loop {
        match socket.recv(&mut buf).await {
            Ok(n) => {
                if let Some((from, packet)) = decode(&buf[..n])
                    && local.deliver(from, packet)
                {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::warn!(error = %e, "upgrade: cannot read the packets the new process forwards");
                return;
            }
        }
    }
}

fn encode(from: SocketAddr, packet: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(MAX_HEADER + packet.len());
    match from.ip() {
        IpAddr::V4(ip) => {
            message.push(4);
            message.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            message.push(6);
            message.extend_from_slice(&ip.octets());
        }
    }
    message.extend_from_slice(&from.port().to_be_bytes());
    message.extend_from_slice(packet);
    message
}

fn decode(message: &[u8]) -> Option<(SocketAddr, &[u8])> {
    let (family, rest) = message.split_first()?;
    let (ip, rest) = match family {
        4 => {
            let (ip, rest) = rest.split_first_chunk::<4>()?;
            (IpAddr::V4(Ipv4Addr::from(*ip)), rest)
        }
        6 => {
            let (ip, rest) = rest.split_first_chunk::<16>()?;
            (IpAddr::V6(Ipv6Addr::from(*ip)), rest)
        }
        _ => return None,
    };
    let (port, packet) = rest.split_first_chunk::<2>()?;
    Some((SocketAddr::new(ip, u16::from_be_bytes(*port)), packet))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_packets_cross_intact_and_garbage_is_refused() {
        for from in ["192.0.2.7:443", "[2001:db8::1]:65535"] {
            let from: SocketAddr = from.parse().unwrap();
            let message = encode(from, b"packet");
            assert_eq!(decode(&message), Some((from, &b"packet"[..])));
        }
        for garbage in [
            &b""[..],
            b"\x04\x01\x02",
            b"\x06\x01",
            b"\x05abcdefg",
            b"\x04\x01\x02\x03\x04\x00",
        ] {
            assert_eq!(decode(garbage), None, "{garbage:?}");
        }
    }

    #[test]
    fn forwarding_stops_when_the_previous_process_is_gone_or_the_grace_is_over() {
        let from: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let (ours, theirs) = UnixDatagram::pair().unwrap();
        let forwarder = Predecessor::new(ours, Duration::from_secs(60)).unwrap();
        assert!(forwarder.forward(from, b"one"));
        let mut buf = [0u8; 64];
        let n = theirs.recv(&mut buf).unwrap();
        assert_eq!(decode(&buf[..n]), Some((from, &b"one"[..])));
        drop(theirs);
        assert!(!forwarder.forward(from, b"two"), "the other end is closed");
        assert!(!forwarder.forward(from, b"three"), "and stays ended");

        let (ours, _theirs) = UnixDatagram::pair().unwrap();
        let late = Predecessor::new(ours, Duration::ZERO).unwrap();
        assert!(!late.forward(from, b"one"));
    }

    #[test]
    fn a_full_buffer_drops_packets_instead_of_blocking() {
        let from: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let (ours, _theirs) = UnixDatagram::pair().unwrap();
        let forwarder = Predecessor::new(ours, Duration::from_secs(60)).unwrap();
        let packet = vec![0u8; 1200];
        // Far more than a socket buffer holds; nothing reads the other end.
        for _ in 0..10_000 {
            assert!(forwarder.forward(from, &packet));
        }
        assert!(forwarder.dropped.load(Ordering::Relaxed) > 0);
    }
}
