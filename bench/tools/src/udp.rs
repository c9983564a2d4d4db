//! The UDP relay benchmark's two ends (`bench/udp_proxy.sh`): an echo backend and a
//! closed-loop load generator.
//!
//! Every datagram the load generator sends starts with its flow's sequence number (8 bytes,
//! little endian); the echo sends it back unchanged. Each flow has a socket of its own (so a
//! source port of its own, which is a session of its own in a proxy) and keeps a fixed number
//! of datagrams outstanding: an answer, or the loss of the oldest one after a timeout, lets the
//! next one go. The bookkeeping of what is outstanding is [`Window`], which holds no socket and
//! no clock; [`run_load`] is the thin async shell around it.

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::task::JoinSet;
use tokio::time::timeout_at;

use crate::Error;
use crate::stats::nearest_rank;

/// Bytes of the sequence number at the start of every datagram: the smallest datagram.
pub const SEQ_LEN: usize = 8;
/// The largest UDP payload over IPv4.
pub const MAX_DATAGRAM: usize = 65_507;
/// Receive buffer of the echo and of each flow: any datagram fits whole.
const BUFFER: usize = 64 * 1024;

/// Answers every datagram with itself, to its sender, forever: the backend behind every proxy.
/// One thread and one buffer; returns only on a receive error that is not the kernel passing
/// on an ICMP error about an earlier send (which says nothing about this socket).
pub fn echo(socket: &StdUdpSocket) -> io::Error {
    let mut buf = vec![0; BUFFER];
    loop {
        match socket.recv_from(&mut buf) {
            // A client that went away makes only its own answer fail: go on.
            Ok((len, peer)) => drop(socket.send_to(&buf[..len], peer)),
            Err(e) if transient(&e) => {}
            Err(e) => return e,
        }
    }
}

fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionRefused | io::ErrorKind::WouldBlock
    )
}

/// The sequence number a datagram starts with, if it is long enough to carry one.
pub fn sequence_of(datagram: &[u8]) -> Option<u64> {
    let bytes = datagram.get(..SEQ_LEN)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

/// The datagrams one flow has sent and not yet had answered, oldest first. Sequence numbers
/// increase, so the oldest is always at the front and is the next to time out.
#[derive(Debug)]
pub struct Window {
    outstanding: VecDeque<(u64, Instant)>,
    next: u64,
}

impl Window {
    pub fn new(capacity: usize) -> Window {
        Window {
            outstanding: VecDeque::with_capacity(capacity),
            next: 0,
        }
    }

    /// Records a datagram sent at `now` and returns the sequence number it must carry.
    pub fn send(&mut self, now: Instant) -> u64 {
        let seq = self.next;
        self.next += 1;
        self.outstanding.push_back((seq, now));
        seq
    }

    /// An answer arrived: when its datagram was sent, or `None` if it is not outstanding
    /// (already answered, or already counted lost: a late answer).
    pub fn answer(&mut self, seq: u64) -> Option<Instant> {
        // Loopback keeps order, so the answer is nearly always the front one.
        let at = self.outstanding.iter().position(|&(s, _)| s == seq)?;
        self.outstanding.remove(at).map(|(_, sent)| sent)
    }

    /// Forgets every datagram sent at least `timeout` before `now` and returns how many:
    /// those are lost.
    pub fn expire(&mut self, now: Instant, timeout: Duration) -> u64 {
        let mut lost = 0;
        while let Some(&(_, sent)) = self.outstanding.front() {
            if now.saturating_duration_since(sent) < timeout {
                break;
            }
            self.outstanding.pop_front();
            lost += 1;
        }
        lost
    }

    /// When the oldest outstanding datagram is to be counted lost, if any is outstanding.
    pub fn deadline(&self, timeout: Duration) -> Option<Instant> {
        self.outstanding.front().map(|&(_, sent)| sent + timeout)
    }

    pub fn len(&self) -> usize {
        self.outstanding.len()
    }

    pub fn is_empty(&self) -> bool {
        self.outstanding.is_empty()
    }
}

/// What `udp-load` is asked to do.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    pub target: SocketAddr,
    pub flows: usize,
    /// Bytes of every datagram, from [`SEQ_LEN`] to [`MAX_DATAGRAM`].
    pub size: usize,
    /// Datagrams each flow keeps outstanding.
    pub window: usize,
    pub duration: Duration,
    /// How long a datagram may go unanswered before it is counted lost.
    pub timeout: Duration,
}

/// What one run did, summed over its flows.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Datagrams handed to the kernel.
    pub sent: u64,
    /// Answers matched to an outstanding datagram, including those that arrived after the
    /// end of the run while the flows drained.
    pub received: u64,
    /// Answers that arrived before the end of the run: what the rate counts.
    pub received_in_run: u64,
    /// Datagrams not answered within the timeout.
    pub lost: u64,
    /// Answers to datagrams already counted lost.
    pub late: u64,
    /// Answers too short to carry a sequence number, or of the wrong size.
    pub malformed: u64,
    /// Send and receive errors (an ICMP "port unreachable" shows up as one).
    pub errors: u64,
    /// Round-trip times of the answers in the run, in microseconds.
    pub rtt_us: Vec<u64>,
    pub duration: Duration,
    pub size: usize,
}

impl LoadReport {
    fn merge(&mut self, other: LoadReport) {
        self.sent += other.sent;
        self.received += other.received;
        self.received_in_run += other.received_in_run;
        self.lost += other.lost;
        self.late += other.late;
        self.malformed += other.malformed;
        self.errors += other.errors;
        self.rtt_us.extend(other.rtt_us);
    }

    /// The one `key=value` line the harness reads. Throughput counts the payload of the
    /// answers, one way.
    pub fn line(&mut self) -> String {
        let secs = self.duration.as_secs_f64();
        let rate = self.received_in_run as f64 / secs;
        let mbit = rate * self.size as f64 * 8.0 / 1e6;
        self.rtt_us.sort_unstable();
        let pct = |p| nearest_rank(&self.rtt_us, p).map_or("nan".to_owned(), |v| v.to_string());
        format!(
            "sent={} received={} lost={} late={} malformed={} errors={} datagrams_per_s={rate:.0} \
             mbit_s={mbit:.1} p50_us={} p99_us={}",
            self.sent,
            self.received,
            self.lost,
            self.late,
            self.malformed,
            self.errors,
            pct(50.0),
            pct(99.0),
        )
    }
}

/// Runs every flow for the spec's duration, then lets each drain what it still has
/// outstanding (for at most the timeout), and sums what they saw.
pub async fn run_load(spec: &LoadSpec) -> Result<LoadReport, Error> {
    let mut sockets = Vec::with_capacity(spec.flows);
    for _ in 0..spec.flows {
        sockets.push(flow_socket(spec.target).await?);
    }
    let started = Instant::now();
    let end = started + spec.duration;
    let mut flows = JoinSet::new();
    for socket in sockets {
        flows.spawn(run_flow(socket, spec.clone(), end));
    }
    let mut report = LoadReport {
        duration: spec.duration,
        size: spec.size,
        ..LoadReport::default()
    };
    while let Some(flow) = flows.join_next().await {
        let flow = flow.map_err(|e| Error::Io {
            context: "a flow's task".into(),
            source: io::Error::other(e),
        })?;
        report.merge(flow);
    }
    Ok(report)
}

/// A socket of its own for one flow (its own source port), connected to the target so the
/// kernel hands it only the target's answers.
async fn flow_socket(target: SocketAddr) -> Result<UdpSocket, Error> {
    let local: SocketAddr = if target.is_ipv4() {
        ([127, 0, 0, 1], 0).into()
    } else {
        (std::net::Ipv6Addr::LOCALHOST, 0).into()
    };
    let io = |context: String| move |source| Error::Io { context, source };
    let socket = UdpSocket::bind(local)
        .await
        .map_err(io(format!("binding a UDP socket on {local}")))?;
    socket
        .connect(target)
        .await
        .map_err(io(format!("connecting a UDP socket to {target}")))?;
    Ok(socket)
}

async fn run_flow(socket: UdpSocket, spec: LoadSpec, end: Instant) -> LoadReport {
    let mut report = LoadReport::default();
    let mut window = Window::new(spec.window);
    let mut out = vec![0; spec.size];
    let mut buf = vec![0; BUFFER.max(spec.size + 1)];
    for _ in 0..spec.window {
        send_next(&socket, &mut window, &mut out, &mut report).await;
    }
    loop {
        let now = Instant::now();
        let lost = window.expire(now, spec.timeout);
        report.lost += lost;
        if now < end {
            for _ in 0..lost {
                send_next(&socket, &mut window, &mut out, &mut report).await;
            }
        }
        let Some(deadline) = window.deadline(spec.timeout) else {
            break;
        };
        let len = match timeout_at(deadline.into(), socket.recv(&mut buf)).await {
            Err(_) => continue,
            Ok(Err(_)) => {
                report.errors += 1;
                continue;
            }
            Ok(Ok(len)) => len,
        };
        let Some(sent) = sequence_of(&buf[..len]).filter(|_| len == spec.size) else {
            report.malformed += 1;
            continue;
        };
        let Some(sent_at) = window.answer(sent) else {
            report.late += 1;
            continue;
        };
        report.received += 1;
        let now = Instant::now();
        if now < end {
            report.received_in_run += 1;
            let rtt = now.saturating_duration_since(sent_at).as_micros();
            report.rtt_us.push(u64::try_from(rtt).unwrap_or(u64::MAX));
            send_next(&socket, &mut window, &mut out, &mut report).await;
        }
    }
    report
}

/// Sends the flow's next datagram. One that cannot be sent still takes its place in the
/// window and times out as lost, so a failing path slows the flow instead of emptying it.
async fn send_next(
    socket: &UdpSocket,
    window: &mut Window,
    out: &mut [u8],
    report: &mut LoadReport,
) {
    let seq = window.send(Instant::now());
    out[..SEQ_LEN].copy_from_slice(&seq.to_le_bytes());
    match socket.send(out).await {
        Ok(_) => report.sent += 1,
        Err(_) => report.errors += 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sequence_number_is_the_first_eight_bytes_little_endian() {
        let mut datagram = vec![0; 64];
        datagram[..8].copy_from_slice(&0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(sequence_of(&datagram), Some(0x0102_0304_0506_0708));
        assert_eq!(sequence_of(&datagram[..8]), Some(0x0102_0304_0506_0708));
        assert_eq!(sequence_of(&datagram[..7]), None);
    }

    #[test]
    fn an_answer_frees_its_datagram_once_and_a_second_one_is_late() {
        let t0 = Instant::now();
        let mut window = Window::new(2);
        let a = window.send(t0);
        let b = window.send(t0 + Duration::from_millis(1));
        assert_ne!(a, b);
        assert_eq!(window.answer(b), Some(t0 + Duration::from_millis(1)));
        assert_eq!(window.answer(b), None);
        assert_eq!(window.len(), 1);
        assert_eq!(window.answer(a), Some(t0));
        assert!(window.is_empty());
    }

    #[test]
    fn only_datagrams_older_than_the_timeout_are_lost_and_their_answers_are_then_late() {
        let t0 = Instant::now();
        let timeout = Duration::from_millis(100);
        let mut window = Window::new(3);
        let old = window.send(t0);
        window.send(t0 + Duration::from_millis(10));
        window.send(t0 + Duration::from_millis(150));
        assert_eq!(window.deadline(timeout), Some(t0 + timeout));
        assert_eq!(window.expire(t0 + Duration::from_millis(99), timeout), 0);
        assert_eq!(window.expire(t0 + Duration::from_millis(120), timeout), 2);
        assert_eq!(window.len(), 1);
        assert_eq!(window.answer(old), None);
        assert_eq!(
            window.deadline(timeout),
            Some(t0 + Duration::from_millis(150) + timeout)
        );
    }
}
