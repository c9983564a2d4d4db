//! UDP parts for the end-to-end tests: echo backends that prefix their name, clients on a
//! port (and loopback address) of their own, and free UDP ports.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;

use super::{WAIT, free_port};

/// A UDP backend answering each datagram with `<name>:<datagram>`; stopped when dropped.
pub struct UdpEcho {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl UdpEcho {
    pub async fn start(name: &'static str) -> UdpEcho {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind echo");
        let addr = socket.local_addr().expect("echo address");
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 70_000];
            while let Ok((len, from)) = socket.recv_from(&mut buf).await {
                let mut answer = format!("{name}:").into_bytes();
                answer.extend_from_slice(&buf[..len]);
                let _ = socket.send_to(&answer, from).await;
            }
        });
        UdpEcho { addr, task }
    }
}

/// A port free for both TCP and UDP on 127.0.0.1.
pub fn free_udp_port() -> u16 {
    loop {
        let port = free_port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A new client (a new source port on `ip`) talking to `port` on 127.0.0.1.
pub async fn udp_client(ip: &str, port: u16) -> UdpSocket {
    let socket = UdpSocket::bind((ip, 0)).await.expect("bind client");
    socket.connect(("127.0.0.1", port)).await.expect("connect");
    socket
}

/// Sends `payload` and waits (bounded) for one answer.
pub async fn udp_ask(client: &UdpSocket, payload: &[u8]) -> Option<Vec<u8>> {
    client.send(payload).await.ok()?;
    let mut buf = vec![0u8; 70_000];
    let len = tokio::time::timeout(Duration::from_millis(500), client.recv(&mut buf))
        .await
        .ok()?
        .ok()?;
    buf.truncate(len);
    Some(buf)
}

/// The name of the backend that answered `client` (resending until the router is up,
/// within the tests' wait).
pub async fn udp_backend(client: &UdpSocket) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(answer) = udp_ask(client, b"who").await {
            let text = String::from_utf8_lossy(&answer).into_owned();
            return text.split(':').next().unwrap_or("").to_owned();
        }
        assert!(tokio::time::Instant::now() < deadline, "no UDP answer");
    }
}

/// A one-client NAT in front of `target`: datagrams from the client leave from an outside
/// socket, and [`UdpNat::rebind`] moves them to a new outside port, as a NAT that rebinds
/// does, without the client knowing. Stopped when dropped.
pub struct UdpNat {
    /// Where the client sends.
    pub addr: SocketAddr,
    outside: std::sync::Arc<std::sync::Mutex<std::sync::Arc<UdpSocket>>>,
    client: std::sync::Arc<std::sync::Mutex<Option<SocketAddr>>>,
    inside: std::sync::Arc<UdpSocket>,
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Drop for UdpNat {
    fn drop(&mut self) {
        for task in self.tasks.lock().expect("tasks").iter() {
            task.abort();
        }
    }
}

impl UdpNat {
    pub async fn start(target: SocketAddr) -> UdpNat {
        use std::sync::{Arc, Mutex};
        let inside = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind inside"));
        let addr = inside.local_addr().expect("inside address");
        let nat = UdpNat {
            addr,
            outside: Arc::new(Mutex::new(Arc::new(Self::outside(target).await))),
            client: Arc::new(Mutex::new(None)),
            inside,
            tasks: Mutex::new(Vec::new()),
        };
        let (inside, outside, client) =
            (nat.inside.clone(), nat.outside.clone(), nat.client.clone());
        let out = tokio::spawn(async move {
            let mut buf = vec![0u8; 70_000];
            while let Ok((len, from)) = inside.recv_from(&mut buf).await {
                *client.lock().expect("client") = Some(from);
                let socket = outside.lock().expect("outside").clone();
                let _ = socket.send(&buf[..len]).await;
            }
        });
        nat.tasks.lock().expect("tasks").push(out);
        nat.answer_from_current();
        nat
    }

    async fn outside(target: SocketAddr) -> UdpSocket {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind outside");
        socket.connect(target).await.expect("connect outside");
        socket
    }

    /// Relays what arrives on the current outside socket back to the client.
    fn answer_from_current(&self) {
        let socket = self.outside.lock().expect("outside").clone();
        let (inside, client) = (self.inside.clone(), self.client.clone());
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 70_000];
            while let Ok(len) = socket.recv(&mut buf).await {
                let to = *client.lock().expect("client");
                if let Some(to) = to {
                    let _ = inside.send_to(&buf[..len], to).await;
                }
            }
        });
        self.tasks.lock().expect("tasks").push(task);
    }

    /// From now on the client's datagrams leave from a new outside port.
    pub async fn rebind(&self) {
        let target = self
            .outside
            .lock()
            .expect("outside")
            .peer_addr()
            .expect("target");
        let fresh = std::sync::Arc::new(Self::outside(target).await);
        *self.outside.lock().expect("outside") = fresh;
        self.answer_from_current();
    }
}
