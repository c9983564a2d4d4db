//! Batched datagram I/O for the relay's UDP sockets: what waits on a readable socket is
//! read in one system call (`recvmmsg`; with GRO, several datagrams of one sender share one
//! buffer), and a run of datagrams for one destination leaves in one call (GSO). Built on
//! `quinn-udp`, which knows what each platform offers and falls back to one datagram per call
//! where the kernel has neither.
//!
//! Datagram boundaries are kept: a GRO buffer is split again at its stride, and a GSO send
//! carries equal-sized segments that the receiver sees as separate datagrams. When the kernel
//! refuses a GSO send (a device without checksum offload, a path MTU below the segment), the
//! run goes out one datagram per call, and quinn-udp stops offering GSO on that socket.
//!
//! This module owns the socket options batching needs and nothing else: it turns GRO on and
//! puts back the options quinn-udp sets for QUIC, "do not fragment" above all, so that a
//! relayed datagram larger than the path MTU is fragmented by the kernel as before instead of
//! refused. Once a socket is set up or adopted, read it only through [`Batching`]: with GRO
//! on, a plain `recv_from` would return several datagrams glued together.

use std::io::{self, IoSliceMut};
use std::iter::Peekable;
use std::net::SocketAddr;

use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState};
use socket2::{SockAddr, SockRef};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tracing::debug;

/// Bytes per receive buffer. The largest datagram (65,535 bytes) fits, and so does a GRO
/// buffer, which Linux keeps below 64 KiB (the default `gro_max_size`).
pub const BUFFER_BYTES: usize = 64 * 1024;
const _: () = assert!(BUFFER_BYTES >= super::proxy::MAX_DATAGRAM);

/// The most buffers one receive fills: quinn-udp's batch (32 on Linux, 1 where the platform
/// reads one datagram per call).
pub const MAX_BATCH: usize = quinn_udp::BATCH_SIZE;

/// The largest datagram sent as a GSO segment. The kernel refuses a segment that does not fit
/// the path MTU, and one refusal ends GSO on the socket; 1,232 bytes (the IPv6 minimum MTU,
/// 1,280, less 48 bytes of headers) fit every IPv6 path and every ordinary IPv4 one.
/// Larger datagrams go one per call: per byte carried, the cost of a call matters less.
pub const MAX_GSO_SEGMENT: usize = 1_232;

/// The most payload bytes of one GSO send: all segments travel as one UDP datagram inside
/// the kernel, bounded by IPv4's 65,507 bytes of payload.
const MAX_GSO_BYTES: usize = 65_507;

/// The receive buffers of one reader: `count` buffers of [`BUFFER_BYTES`], and what the last
/// receive put in them. The memory is allocated zeroed, which for allocations this large
/// means fresh pages from the kernel, committed only once a datagram is written to them: a
/// buffer that only ever sees small datagrams costs a page, not 64 KiB.
pub struct RecvBuffers {
    bytes: Box<[u8]>,
    meta: Box<[RecvMeta]>,
    filled: usize,
}

impl RecvBuffers {
    /// `count` buffers, between 1 and [`MAX_BATCH`].
    pub fn new(count: usize) -> Self {
        let count = count.clamp(1, MAX_BATCH);
        Self {
            bytes: vec![0; count * BUFFER_BYTES].into_boxed_slice(),
            meta: vec![RecvMeta::default(); count].into_boxed_slice(),
            filled: 0,
        }
    }

    /// The datagrams of the last receive.
    fn datagrams(&self) -> Datagrams<'_> {
        Datagrams {
            bytes: &self.bytes,
            meta: &self.meta[..self.filled],
            buffer: 0,
            offset: 0,
        }
    }
}

/// The datagrams of one receive, in arrival order: each with its sender's address, GRO
/// buffers split at their stride.
pub struct Datagrams<'a> {
    bytes: &'a [u8],
    meta: &'a [RecvMeta],
    buffer: usize,
    offset: usize,
}

impl<'a> Iterator for Datagrams<'a> {
    type Item = (SocketAddr, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let meta = self.meta.get(self.buffer)?;
            let start = self.buffer * BUFFER_BYTES;
            let data = &self.bytes[start..start + meta.len.min(BUFFER_BYTES)];
            // An empty datagram is a datagram too: relayed as such.
            if data.is_empty() {
                self.buffer += 1;
                return Some((meta.addr, data));
            }
            if self.offset >= data.len() {
                self.buffer += 1;
                self.offset = 0;
                continue;
            }
            let stride = if meta.stride == 0 {
                data.len()
            } else {
                meta.stride
            };
            let end = (self.offset + stride).min(data.len());
            let datagram = &data[self.offset..end];
            self.offset = end;
            return Some((meta.addr, datagram));
        }
    }
}

/// What one [`Batching::send_to`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub sent: usize,
    /// Datagrams the kernel did not take: a full send buffer, an unreachable destination.
    pub dropped: usize,
}

/// How sockets are read and written: in batches with what the kernel offers, or one datagram
/// per call ([`Batching::single`]) where the socket could not be set up for it. One per
/// listening socket, shared by its readers and writers; other sockets (the relay's session
/// sockets) are [adopted](Batching::adopt) rather than set up on their own.
#[derive(Debug)]
pub struct Batching {
    state: Option<UdpSocketState>,
}

impl Batching {
    /// Sets `socket` up for batched I/O: GRO on where the kernel has it, every other option
    /// as it was.
    pub fn new(socket: &UdpSocket) -> io::Result<Self> {
        let saved = options::save(socket);
        let state = UdpSocketState::new(UdpSockRef::from(socket));
        options::restore(socket, &saved)?;
        Ok(Self {
            state: Some(state?),
        })
    }

    /// Sets `socket`, another socket, up to be read through this batching: GRO on where the
    /// kernel has it (best effort), nothing else. One system call, where [`Batching::new`]
    /// runs quinn-udp's kernel probe, two throwaway sockets and some 150 µs: too much for
    /// every session of the relay.
    pub fn adopt(&self, socket: &UdpSocket) {
        if self.state.is_some() {
            options::enable_gro(socket);
        }
    }

    /// One datagram per system call, socket options untouched: the fallback when
    /// [`Batching::new`] fails.
    pub fn single() -> Self {
        Self { state: None }
    }

    /// How many datagrams one send may carry now: 1 without GSO, or once the kernel refused it.
    pub fn gso_segments(&self) -> usize {
        self.state
            .as_ref()
            .map_or(1, UdpSocketState::max_gso_segments)
    }

    /// Waits until `socket` is readable and reads every datagram waiting, up to what
    /// `buffers` hold.
    pub async fn recv<'b>(
        &self,
        socket: &UdpSocket,
        buffers: &'b mut RecvBuffers,
    ) -> io::Result<Datagrams<'b>> {
        match &self.state {
            Some(state) => loop {
                socket.readable().await?;
                match drain(state, socket, buffers) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    result => result?,
                }
                break;
            },
            None => {
                let (len, from) = socket.recv_from(&mut buffers.bytes[..BUFFER_BYTES]).await?;
                buffers.meta[0] = one_datagram(from, len);
                buffers.filled = 1;
            }
        }
        Ok(buffers.datagrams())
    }

    /// Reads every datagram waiting on `socket`, up to what `buffers` hold, without waiting:
    /// [`io::ErrorKind::WouldBlock`] when there is none.
    pub fn try_recv<'b>(
        &self,
        socket: &UdpSocket,
        buffers: &'b mut RecvBuffers,
    ) -> io::Result<Datagrams<'b>> {
        match &self.state {
            Some(state) => drain(state, socket, buffers)?,
            None => {
                let (len, from) = socket.try_recv_from(&mut buffers.bytes[..BUFFER_BYTES])?;
                buffers.meta[0] = one_datagram(from, len);
                buffers.filled = 1;
            }
        }
        Ok(buffers.datagrams())
    }

    /// Sends a QUIC stack's `transmit` (one datagram, or a GSO run of them) from `socket`,
    /// for a QUIC endpoint sharing the socket. Unlike [`Batching::send_to`], a full send
    /// buffer is reported as `WouldBlock` (clearing tokio's write readiness), so that the
    /// stack waits for room instead of losing its packets; other refusals are logged and the
    /// packets left to QUIC's loss recovery.
    pub fn send_transmit(&self, socket: &UdpSocket, transmit: &Transmit<'_>) -> io::Result<()> {
        match &self.state {
            Some(state) => socket.try_io(Interest::WRITABLE, || {
                state.send(UdpSockRef::from(socket), transmit)
            }),
            None => {
                let size = transmit
                    .segment_size
                    .unwrap_or(transmit.contents.len())
                    .max(1);
                for datagram in transmit.contents.chunks(size) {
                    socket.try_send_to(datagram, transmit.destination)?;
                }
                Ok(())
            }
        }
    }

    /// Sends `datagrams` to `to` from `socket` without ever waiting: runs of equal-sized
    /// datagrams (the last may be shorter) in one GSO send laid out in `gso`, the others one
    /// per call. A datagram the kernel does not take at once is dropped and counted.
    pub fn send_to<'d>(
        &self,
        socket: &UdpSocket,
        to: SocketAddr,
        datagrams: impl IntoIterator<Item = &'d [u8]>,
        gso: &mut Vec<u8>,
    ) -> Sent {
        let address = SockAddr::from(to);
        let max_segments = self.gso_segments();
        let mut sent = Sent::default();
        let mut datagrams = datagrams.into_iter().peekable();
        while let Some(first) = datagrams.next() {
            let run = gather(first, &mut datagrams, max_segments, gso);
            match (&self.state, run) {
                (Some(state), Some(run)) => {
                    let transmit = Transmit {
                        destination: to,
                        ecn: None,
                        contents: gso,
                        segment_size: Some(run.segment),
                        src_ip: None,
                    };
                    match state.try_send(UdpSockRef::from(socket), &transmit) {
                        Ok(()) => sent.sent += run.count,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            sent.dropped += run.count
                        }
                        Err(e) => {
                            debug!(%to, error = %e, segments = run.count, "GSO send refused; sending one datagram per call");
                            for datagram in gso.chunks(run.segment) {
                                send_one(socket, &address, datagram, &mut sent);
                            }
                        }
                    }
                }
                _ => send_one(socket, &address, first, &mut sent),
            }
        }
        sent
    }
}

/// One `recvmmsg` (or what the platform has) into `buffers`, telling tokio when it emptied the
/// socket: fewer datagrams than buffers means the kernel's next read found none. That clears
/// the socket's readiness without the extra call that would only return `WouldBlock`; a
/// datagram that arrived meanwhile raised a new readiness event, which the clearing leaves.
/// An error the kernel met after the first datagram is kept by it for the next read, and an
/// ICMP error raises error readiness, which a read does not clear either.
fn drain(state: &UdpSocketState, socket: &UdpSocket, buffers: &mut RecvBuffers) -> io::Result<()> {
    buffers.filled = 0;
    let emptied = socket.try_io(Interest::READABLE, || {
        fill(state, socket, buffers)?;
        if buffers.filled < buffers.meta.len() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(())
    });
    match emptied {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock && buffers.filled > 0 => Ok(()),
        result => result,
    }
}

/// One `recvmmsg` (or what the platform has) into `buffers`.
fn fill(state: &UdpSocketState, socket: &UdpSocket, buffers: &mut RecvBuffers) -> io::Result<()> {
    let count = buffers.meta.len();
    let mut chunks = buffers.bytes.chunks_mut(BUFFER_BYTES);
    let mut slices: [IoSliceMut<'_>; MAX_BATCH] =
        std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
    let filled = state.recv(
        UdpSockRef::from(socket),
        &mut slices[..count],
        &mut buffers.meta,
    )?;
    buffers.filled = filled;
    Ok(())
}

/// The metadata of a datagram read on its own.
fn one_datagram(from: SocketAddr, len: usize) -> RecvMeta {
    RecvMeta {
        addr: from,
        len,
        stride: len,
        ..RecvMeta::default()
    }
}

/// A plain non-blocking send of one datagram.
fn send_one(socket: &UdpSocket, to: &SockAddr, datagram: &[u8], sent: &mut Sent) {
    match SockRef::from(socket).send_to(datagram, to) {
        Ok(_) => sent.sent += 1,
        Err(_) => sent.dropped += 1,
    }
}

/// Takes from `rest` the datagrams that can share one GSO send with `first` and lays them out
/// end to end in `gso`. `None` when `first` goes alone (then `gso` is left untouched).
fn gather<'d>(
    first: &'d [u8],
    rest: &mut Peekable<impl Iterator<Item = &'d [u8]>>,
    max_segments: usize,
    gso: &mut Vec<u8>,
) -> Option<Run> {
    let mut run = Run::start(first.len());
    while let Some(next) = rest.next_if(|next| run.admits(next.len(), max_segments)) {
        if run.count == 1 {
            gso.clear();
            gso.extend_from_slice(first);
        }
        gso.extend_from_slice(next);
        run.push(next.len());
    }
    (run.count > 1).then_some(run)
}

/// Datagrams that can share one GSO send: every one the size of the first, except the last,
/// which may be shorter (the kernel cuts segments at a fixed size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    segment: usize,
    count: usize,
    bytes: usize,
    /// A shorter datagram joined: it must be the last.
    closed: bool,
}

impl Run {
    fn start(segment: usize) -> Self {
        Self {
            segment,
            count: 1,
            bytes: segment,
            closed: false,
        }
    }

    /// Whether a datagram of `len` bytes can join, on a socket that sends `max_segments` at
    /// most at once. Empty datagrams never do: as a segment it would vanish.
    fn admits(&self, len: usize, max_segments: usize) -> bool {
        !self.closed
            && self.count < max_segments
            && (1..=MAX_GSO_SEGMENT).contains(&self.segment)
            && (1..=self.segment).contains(&len)
            && self.bytes + len <= MAX_GSO_BYTES
    }

    fn push(&mut self, len: usize) {
        self.count += 1;
        self.bytes += len;
        self.closed = len < self.segment;
    }
}

/// The socket options quinn-udp sets for QUIC that a relay must not keep, read before and
/// written back after: "do not fragment" (QUIC sizes its own packets; a relay carries what it
/// is given), and the per-datagram destination address and TOS the relay never reads (each
/// costs the kernel a control message per datagram).
#[cfg(unix)]
mod options {
    use std::io;
    use std::mem::size_of;
    use std::os::fd::{AsFd, AsRawFd};

    use libc::c_int;
    use tokio::net::UdpSocket;

    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub(super) const OPTIONS: &[(c_int, c_int)] = &[
        (libc::IPPROTO_IP, libc::IP_MTU_DISCOVER),
        (libc::IPPROTO_IP, libc::IP_PKTINFO),
        (libc::IPPROTO_IP, libc::IP_RECVTOS),
        (libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER),
        (libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG),
        (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO),
        (libc::IPPROTO_IPV6, libc::IPV6_RECVTCLASS),
    ];
    #[cfg(any(target_os = "freebsd", target_os = "macos", target_os = "ios"))]
    pub(super) const OPTIONS: &[(c_int, c_int)] = &[(libc::IPPROTO_IP, libc::IP_DONTFRAG)];
    #[cfg(not(any(
        target_os = "linux",
        target_os = "android",
        target_os = "freebsd",
        target_os = "macos",
        target_os = "ios"
    )))]
    pub(super) const OPTIONS: &[(c_int, c_int)] = &[];

    /// The values of [`OPTIONS`] the socket has (an IPv4 socket has no IPv6 options).
    pub(super) struct Saved(Vec<(c_int, c_int, c_int)>);

    pub(super) fn save(socket: &UdpSocket) -> Saved {
        let fd = socket.as_fd().as_raw_fd();
        Saved(
            OPTIONS
                .iter()
                .filter_map(|&(level, name)| get(fd, level, name).map(|v| (level, name, v)))
                .collect(),
        )
    }

    pub(super) fn restore(socket: &UdpSocket, saved: &Saved) -> io::Result<()> {
        let fd = socket.as_fd().as_raw_fd();
        for &(level, name, value) in &saved.0 {
            // SAFETY: `fd` is an open socket borrowed for the call; the value is one c_int.
            let rc = unsafe {
                libc::setsockopt(
                    fd,
                    level,
                    name,
                    (&raw const value).cast(),
                    size_of::<c_int>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// Best effort: without GRO, datagrams are still read in batches, one per buffer.
    pub(super) fn enable_gro(socket: &UdpSocket) {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            let on: c_int = 1;
            // SAFETY: an open socket borrowed for the call, and one c_int.
            unsafe {
                libc::setsockopt(
                    socket.as_fd().as_raw_fd(),
                    libc::SOL_UDP,
                    libc::UDP_GRO,
                    (&raw const on).cast(),
                    size_of::<c_int>() as libc::socklen_t,
                )
            };
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let _ = socket;
    }

    pub(super) fn get(fd: c_int, level: c_int, name: c_int) -> Option<c_int> {
        let mut value: c_int = 0;
        let mut len = size_of::<c_int>() as libc::socklen_t;
        // SAFETY: `fd` is an open socket borrowed for the call; `value` and `len` describe one
        // writable c_int.
        let rc = unsafe { libc::getsockopt(fd, level, name, (&raw mut value).cast(), &mut len) };
        (rc == 0).then_some(value)
    }
}

/// Nothing to put back where quinn-udp is not built on socket options.
#[cfg(not(unix))]
mod options {
    use std::io;

    use tokio::net::UdpSocket;

    pub(super) struct Saved;

    pub(super) fn save(_: &UdpSocket) -> Saved {
        Saved
    }

    pub(super) fn restore(_: &UdpSocket, _: &Saved) -> io::Result<()> {
        Ok(())
    }

    pub(super) fn enable_gro(_: &UdpSocket) {}
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn pair() -> (UdpSocket, UdpSocket) {
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        (a, b)
    }

    /// The next `want` datagrams, by as many receives as it takes.
    async fn receive(
        batching: &Batching,
        socket: &UdpSocket,
        buffers: &mut RecvBuffers,
        want: usize,
    ) -> (Vec<(SocketAddr, Vec<u8>)>, Counts) {
        let mut got = Vec::new();
        let mut counts = Counts::default();
        while got.len() < want {
            let datagrams =
                tokio::time::timeout(Duration::from_secs(5), batching.recv(socket, buffers))
                    .await
                    .expect("datagrams arrive")
                    .unwrap();
            got.extend(datagrams.map(|(from, d)| (from, d.to_vec())));
            counts.calls += 1;
            counts.buffers += buffers.filled;
        }
        (got, counts)
    }

    /// How many receives it took, and how many buffers they filled.
    #[derive(Debug, Default)]
    struct Counts {
        calls: usize,
        buffers: usize,
    }

    /// Waits until `socket` has something to read, so that one receive finds all of it.
    async fn readable(socket: &UdpSocket) {
        socket.readable().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    fn payload(len: usize, tag: u8) -> Vec<u8> {
        (0..len).map(|i| tag.wrapping_add(i as u8)).collect()
    }

    #[tokio::test]
    async fn one_receive_returns_every_waiting_datagram_with_its_boundaries() {
        let (receiver, sender) = pair().await;
        let batching = Batching::new(&receiver).unwrap();
        let sent: Vec<Vec<u8>> = [1, 100, 0, 1400, 9000, 3]
            .iter()
            .enumerate()
            .map(|(i, &len)| payload(len, i as u8))
            .collect();
        for datagram in &sent {
            sender
                .send_to(datagram, receiver.local_addr().unwrap())
                .await
                .unwrap();
        }
        readable(&receiver).await;
        let mut buffers = RecvBuffers::new(MAX_BATCH);
        let (got, counts) = receive(&batching, &receiver, &mut buffers, sent.len()).await;
        let from = sender.local_addr().unwrap();
        assert_eq!(got, sent.into_iter().map(|d| (from, d)).collect::<Vec<_>>());
        if MAX_BATCH > 1 {
            assert_eq!(counts.calls, 1, "one receive for every waiting datagram");
        }
    }

    #[tokio::test]
    async fn a_batch_takes_no_more_than_its_buffers_and_the_rest_waits() {
        let (receiver, sender) = pair().await;
        let batching = Batching::new(&receiver).unwrap();
        for i in 0..5u8 {
            sender
                .send_to(&[i], receiver.local_addr().unwrap())
                .await
                .unwrap();
        }
        readable(&receiver).await;
        let mut buffers = RecvBuffers::new(2);
        let first: Vec<Vec<u8>> = batching
            .try_recv(&receiver, &mut buffers)
            .unwrap()
            .map(|(_, d)| d.to_vec())
            .collect();
        assert_eq!(first, [vec![0], vec![1]][..2.min(MAX_BATCH)]);
        let (rest, _) = receive(&batching, &receiver, &mut buffers, 5 - first.len()).await;
        let all: Vec<Vec<u8>> = first
            .into_iter()
            .chain(rest.into_iter().map(|(_, d)| d))
            .collect();
        assert_eq!(all, (0..5u8).map(|i| vec![i]).collect::<Vec<_>>());
        let drained = batching.try_recv(&receiver, &mut buffers).err();
        assert_eq!(drained.map(|e| e.kind()), Some(io::ErrorKind::WouldBlock));
    }

    #[tokio::test]
    async fn a_datagram_after_a_read_that_emptied_the_socket_still_wakes_the_reader() {
        let (receiver, sender) = pair().await;
        let batching = Batching::new(&receiver).unwrap();
        let mut buffers = RecvBuffers::new(MAX_BATCH);
        for round in 0..3u8 {
            sender
                .send_to(&[round], receiver.local_addr().unwrap())
                .await
                .unwrap();
            let (got, _) = receive(&batching, &receiver, &mut buffers, 1).await;
            assert_eq!(got[0].1, [round]);
        }
        let drained = batching.try_recv(&receiver, &mut buffers).err();
        assert_eq!(drained.map(|e| e.kind()), Some(io::ErrorKind::WouldBlock));
    }

    #[tokio::test]
    async fn the_largest_ipv4_datagram_arrives_whole() {
        // 65,535 bytes less the IPv4 and UDP headers: the most one IPv4 datagram carries.
        let (receiver, sender) = pair().await;
        let batching = Batching::new(&receiver).unwrap();
        let big = payload(65_507, 7);
        sender
            .send_to(&big, receiver.local_addr().unwrap())
            .await
            .unwrap();
        sender
            .send_to(b"after", receiver.local_addr().unwrap())
            .await
            .unwrap();
        let mut buffers = RecvBuffers::new(MAX_BATCH);
        let (got, _) = receive(&batching, &receiver, &mut buffers, 2).await;
        assert_eq!(got[0].1, big);
        assert_eq!(got[1].1, b"after");
    }

    #[tokio::test]
    async fn equal_datagrams_leave_in_one_gso_send_and_arrive_separate() {
        let (receiver, sender) = pair().await;
        let receiving = Batching::new(&receiver).unwrap();
        let sending = Batching::new(&sender).unwrap();
        // Ten of 1,000 bytes and a shorter last one: one GSO send; then one too large for a
        // segment, which goes alone.
        let mut sent: Vec<Vec<u8>> = (0..10).map(|i| payload(1000, i)).collect();
        sent.push(payload(500, 10));
        sent.push(payload(4000, 11));
        let mut gso = Vec::new();
        let outcome = sending.send_to(
            &sender,
            receiver.local_addr().unwrap(),
            sent.iter().map(Vec::as_slice),
            &mut gso,
        );
        assert_eq!(
            outcome,
            Sent {
                sent: sent.len(),
                dropped: 0
            }
        );
        // A receiver with GRO may get the run in one buffer: split again at its stride.
        let mut buffers = RecvBuffers::new(MAX_BATCH);
        let (got, counts) = receive(&receiving, &receiver, &mut buffers, sent.len()).await;
        let got: Vec<Vec<u8>> = got.into_iter().map(|(_, d)| d).collect();
        assert_eq!(got, sent);
        let gro = gro_on(&receiving);
        if gro && sending.gso_segments() > 1 {
            assert_eq!(counts.buffers, 2, "the run shares one buffer");
        }
    }

    /// Whether the kernel gave `batching`'s socket GRO.
    fn gro_on(batching: &Batching) -> bool {
        batching
            .state
            .as_ref()
            .is_some_and(|state| state.gro_segments() > 1)
    }

    #[tokio::test]
    async fn an_adopted_socket_is_read_in_batches_with_gro() {
        let (listener, sender) = pair().await;
        let session = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let batching = Batching::new(&listener).unwrap();
        batching.adopt(&session);
        let sent: Vec<Vec<u8>> = (0..6).map(|i| payload(300, i)).collect();
        let mut gso = Vec::new();
        let outcome = batching.send_to(
            &sender,
            session.local_addr().unwrap(),
            sent.iter().map(Vec::as_slice),
            &mut gso,
        );
        assert_eq!(outcome.sent, 6);
        readable(&session).await;
        let mut buffers = RecvBuffers::new(MAX_BATCH);
        let (got, counts) = receive(&batching, &session, &mut buffers, sent.len()).await;
        assert_eq!(got.into_iter().map(|(_, d)| d).collect::<Vec<_>>(), sent);
        let gro = gro_on(&batching);
        if gro && batching.gso_segments() > 1 {
            assert_eq!(counts.buffers, 1, "the run shares one buffer");
        }
    }

    #[tokio::test]
    async fn a_receiver_without_gro_gets_a_gso_run_as_separate_datagrams() {
        let (receiver, sender) = pair().await;
        let sending = Batching::new(&sender).unwrap();
        let sent: Vec<Vec<u8>> = (0..4).map(|i| payload(64, i)).collect();
        let mut gso = Vec::new();
        let outcome = sending.send_to(
            &sender,
            receiver.local_addr().unwrap(),
            sent.iter().map(Vec::as_slice),
            &mut gso,
        );
        assert_eq!(outcome.sent, 4);
        let mut buf = vec![0; BUFFER_BYTES];
        for datagram in &sent {
            let (len, _) = receiver.recv_from(&mut buf).await.unwrap();
            assert_eq!(&buf[..len], datagram.as_slice());
        }
    }

    /// Linux refuses GSO on a socket that does not checksum what it sends.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn gso_refused_by_the_kernel_falls_back_to_one_datagram_per_send() {
        use std::os::fd::{AsFd, AsRawFd};

        let (receiver, sender) = pair().await;
        let sending = Batching::new(&sender).unwrap();
        let one: libc::c_int = 1;
        // SAFETY: an open socket and one c_int.
        let rc = unsafe {
            libc::setsockopt(
                sender.as_fd().as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_NO_CHECK,
                (&raw const one).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
        let gso_before = sending.gso_segments();
        let sent: Vec<Vec<u8>> = (0..4).map(|i| payload(100, i)).collect();
        let mut gso = Vec::new();
        let outcome = sending.send_to(
            &sender,
            receiver.local_addr().unwrap(),
            sent.iter().map(Vec::as_slice),
            &mut gso,
        );
        assert_eq!(
            outcome,
            Sent {
                sent: 4,
                dropped: 0
            }
        );
        if gso_before > 1 {
            assert_eq!(sending.gso_segments(), 1, "GSO is off after a refusal");
        }
        let mut buf = vec![0; BUFFER_BYTES];
        for datagram in &sent {
            let (len, _) = receiver.recv_from(&mut buf).await.unwrap();
            assert_eq!(&buf[..len], datagram.as_slice());
        }
    }

    #[tokio::test]
    async fn without_batching_each_call_moves_one_datagram() {
        let (receiver, sender) = pair().await;
        let batching = Batching::single();
        let sent: Vec<Vec<u8>> = vec![payload(10, 0), Vec::new(), payload(65_507, 2)];
        let mut gso = Vec::new();
        let outcome = batching.send_to(
            &sender,
            receiver.local_addr().unwrap(),
            sent.iter().map(Vec::as_slice),
            &mut gso,
        );
        assert_eq!(outcome.sent, 3);
        readable(&receiver).await;
        let mut buffers = RecvBuffers::new(MAX_BATCH);
        let (got, counts) = receive(&batching, &receiver, &mut buffers, 3).await;
        assert_eq!(counts.calls, 3);
        assert_eq!(got.into_iter().map(|(_, d)| d).collect::<Vec<_>>(), sent);
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[tokio::test]
    async fn batching_leaves_fragmentation_and_control_messages_as_they_were() {
        use std::os::fd::{AsFd, AsRawFd};

        for address in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(socket) = UdpSocket::bind(address).await else {
                continue; // no IPv6 here
            };
            let fd = socket.as_fd().as_raw_fd();
            let before: Vec<_> = options::OPTIONS
                .iter()
                .map(|&(level, name)| options::get(fd, level, name))
                .collect();
            let _batching = Batching::new(&socket).unwrap();
            let after: Vec<_> = options::OPTIONS
                .iter()
                .map(|&(level, name)| options::get(fd, level, name))
                .collect();
            assert_eq!(before, after, "{address}");
        }
    }

    #[test]
    fn a_gso_run_takes_equal_sizes_and_one_shorter_last() {
        let mut run = Run::start(100);
        assert!(run.admits(100, 64));
        run.push(100);
        assert!(run.admits(40, 64));
        run.push(40);
        assert!(!run.admits(40, 64), "nothing after the shorter one");
        assert!(!run.admits(100, 64));
        assert_eq!(run.count, 3);
    }

    #[test]
    fn a_gso_run_refuses_larger_empty_oversized_and_too_many() {
        let run = Run::start(100);
        assert!(!run.admits(101, 64), "larger");
        assert!(!run.admits(0, 64), "empty");
        assert!(!run.admits(100, 1), "the socket has no GSO");
        assert!(!Run::start(0).admits(0, 64), "empty first");
        assert!(!Run::start(MAX_GSO_SEGMENT + 1).admits(MAX_GSO_SEGMENT + 1, 64));
        let mut full = Run::start(100);
        for _ in 1..64 {
            full.push(100);
        }
        assert!(!full.admits(100, 64), "64 segments at most");
        let mut heavy = Run::start(MAX_GSO_SEGMENT);
        while heavy.bytes + MAX_GSO_SEGMENT <= MAX_GSO_BYTES {
            heavy.push(MAX_GSO_SEGMENT);
        }
        assert!(
            !heavy.admits(MAX_GSO_SEGMENT, 1000),
            "one UDP datagram's payload at most"
        );
    }

    #[test]
    fn gather_lays_out_a_run_and_leaves_the_rest() {
        let datagrams: [&[u8]; 5] = [b"aaaa", b"bbbb", b"cc", b"dddd", b"eeee"];
        let mut rest = datagrams[1..].iter().copied().peekable();
        let mut gso = Vec::new();
        let run = gather(datagrams[0], &mut rest, 64, &mut gso).unwrap();
        assert_eq!((run.segment, run.count), (4, 3));
        assert_eq!(gso, b"aaaabbbbcc");
        assert_eq!(rest.next(), Some(&b"dddd"[..]));
        let mut alone = [&b"xx"[..]].into_iter().peekable();
        assert_eq!(gather(b"y", &mut alone, 64, &mut gso), None);
        assert_eq!(gso, b"aaaabbbbcc", "untouched when a datagram goes alone");
    }
}
