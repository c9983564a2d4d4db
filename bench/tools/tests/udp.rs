//! The UDP echo and load generator against each other (and against misbehaving backends) on
//! loopback: what the benchmark counts as received, lost and late is what happened on the wire.

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use sallyport_bench_tools::udp::{self, LoadReport, LoadSpec};

fn bind() -> (UdpSocket, SocketAddr) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    (socket, addr)
}

fn start_echo() -> SocketAddr {
    let (socket, addr) = bind();
    thread::spawn(move || udp::echo(&socket));
    addr
}

fn spec(target: SocketAddr, flows: usize, window: usize, millis: u64) -> LoadSpec {
    LoadSpec {
        target,
        flows,
        size: 64,
        window,
        duration: Duration::from_millis(millis),
        timeout: Duration::from_millis(100),
    }
}

async fn load(spec: &LoadSpec) -> LoadReport {
    udp::run_load(spec).await.unwrap()
}

fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .unwrap()
}

#[tokio::test]
async fn through_the_echo_every_datagram_comes_back_and_none_is_lost() {
    let echo = start_echo();
    let mut report = load(&spec(echo, 4, 8, 300)).await;

    assert!(report.sent > 100, "sent only {}", report.sent);
    assert_eq!(report.received, report.sent);
    assert!(report.received_in_run > 0 && report.received_in_run <= report.received);
    assert_eq!(
        (report.lost, report.late, report.malformed, report.errors),
        (0, 0, 0, 0)
    );
    let line = report.line();
    assert_eq!(field(&line, "lost"), "0");
    assert!(field(&line, "datagrams_per_s").parse::<f64>().unwrap() > 0.0);
    assert!(field(&line, "mbit_s").parse::<f64>().unwrap() > 0.0);
    let (p50, p99): (u64, u64) = (
        field(&line, "p50_us").parse().unwrap(),
        field(&line, "p99_us").parse().unwrap(),
    );
    assert!(p50 <= p99);
}

#[tokio::test]
async fn each_flow_sends_from_a_source_port_of_its_own_and_keeps_its_window() {
    let (socket, addr) = bind();
    let (peers_tx, peers_rx) = mpsc::channel();
    thread::spawn(move || {
        // Holds every datagram until it has seen 3 flows × 2 outstanding, then echoes all.
        let mut held = Vec::new();
        let mut buf = [0; 2048];
        while held.len() < 6 {
            let (len, peer) = socket.recv_from(&mut buf).unwrap();
            held.push((buf[..len].to_vec(), peer));
        }
        let peers: HashSet<SocketAddr> = held.iter().map(|&(_, peer)| peer).collect();
        peers_tx.send(peers).unwrap();
        for (datagram, peer) in &held {
            socket.send_to(datagram, peer).unwrap();
        }
        udp::echo(&socket)
    });
    let report = load(&spec(addr, 3, 2, 200)).await;

    let peers = peers_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(peers.len(), 3);
    assert!(peers.iter().all(|peer| peer.ip().is_loopback()));
    assert_eq!(report.received, report.sent);
    assert_eq!(report.lost, 0);
}

#[tokio::test]
async fn a_backend_that_never_answers_loses_every_datagram_without_stalling_the_run() {
    let (silent, addr) = bind();
    let started = Instant::now();
    let report = load(&spec(addr, 2, 4, 250)).await;
    drop(silent);

    // Each flow's whole window times out every 100 ms and is sent again until the end
    // (about 3 times 4 datagrams per flow in 250 ms).
    assert_eq!(report.received, 0);
    assert_eq!(report.lost, report.sent);
    assert!(report.sent >= 2 * 4 * 2, "sent only {}", report.sent);
    assert_eq!(report.sent % 4, 0);
    assert!(started.elapsed() < Duration::from_millis(1000));
    let mut report = report;
    assert_eq!(field(&report.line(), "p50_us"), "nan");
}

#[tokio::test]
async fn an_answer_after_the_timeout_counts_as_lost_then_late() {
    let (socket, addr) = bind();
    thread::spawn(move || {
        // The first datagram is answered after the load generator's 100 ms timeout.
        let mut buf = [0; 2048];
        let (len, peer) = socket.recv_from(&mut buf).unwrap();
        let first = buf[..len].to_vec();
        thread::sleep(Duration::from_millis(150));
        socket.send_to(&first, peer).unwrap();
        udp::echo(&socket)
    });
    let report = load(&spec(addr, 1, 1, 400)).await;

    assert_eq!(report.lost, 1);
    assert_eq!(report.late, 1);
    assert!(report.received > 10, "received only {}", report.received);
    assert_eq!(report.received + report.lost, report.sent);
}

#[tokio::test]
async fn an_answer_of_the_wrong_size_is_malformed_not_received() {
    let (socket, addr) = bind();
    thread::spawn(move || {
        let mut buf = [0; 2048];
        loop {
            let (len, peer) = socket.recv_from(&mut buf).unwrap();
            socket.send_to(&buf[..len / 2], peer).unwrap();
        }
    });
    let report = load(&spec(addr, 1, 1, 150)).await;

    assert_eq!(report.received, 0);
    assert!(report.malformed >= 1);
    assert_eq!(report.lost, report.sent);
}
