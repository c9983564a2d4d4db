//! The UDP relay over real loopback sockets: echo backends that prefix their name, clients
//! on their own ports, and the relay's statistics as the measure of its session table.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use l4::tcp::rule::TcpRule;
use l4::udp::{
    LoadBalancer, Strategy, UdpRoute, UdpRoutes, UdpService, UdpSettings, UdpStats, Weighted,
};
use tokio::net::UdpSocket;
use tokio::sync::watch;

const WAIT: Duration = Duration::from_secs(5);

/// A backend answering every datagram with `<name>:<datagram>`; dropped = stopped.
struct Echo {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn echo(name: &'static str) -> Echo {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 70_000];
        while let Ok((len, from)) = socket.recv_from(&mut buf).await {
            let mut answer = format!("{name}:").into_bytes();
            answer.extend_from_slice(&buf[..len]);
            let _ = socket.send_to(&answer, from).await;
        }
    });
    Echo { addr, task }
}

fn lb(servers: &[&Echo], strategy: Strategy) -> Arc<UdpService> {
    Arc::new(UdpService::LoadBalancer(LoadBalancer::new(
        servers
            .iter()
            .map(|e| Arc::from(e.addr.to_string()))
            .collect(),
        strategy,
    )))
}

fn route(name: &str, rule: Option<&str>, service: Arc<UdpService>) -> UdpRoute {
    UdpRoute {
        name: Arc::from(name),
        rule: rule.map(|r| TcpRule::compile(r, false).unwrap()),
        priority: 0,
        precedence: 0,
        service,
        service_name: Arc::from(name),
        quic: false,
        retirement: Default::default(),
    }
}

/// A QUIC passthrough route: the rule is read on the flow's ClientHello.
fn quic_route(name: &str, rule: &str, service: Arc<UdpService>) -> UdpRoute {
    UdpRoute {
        name: Arc::from(name),
        rule: Some(TcpRule::compile(rule, true).unwrap()),
        priority: 0,
        precedence: 0,
        service,
        service_name: Arc::from(name),
        quic: true,
        retirement: Default::default(),
    }
}

/// A captured QUIC Initial datagram (copied from the shared vectors into l4/testdata).
fn initial(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/testdata/quic/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// A running relay on 127.0.0.1.
struct Relay {
    addr: SocketAddr,
    stats: Arc<UdpStats>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<usize>,
}

async fn relay(routes: UdpRoutes, idle: Duration, max_sessions: usize) -> Relay {
    let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let addr = socket.local_addr().unwrap();
    let stats = Arc::new(UdpStats::default());
    let (stop, stopped) = watch::channel(false);
    let routes = Arc::new(routes);
    let settings = UdpSettings {
        name: Arc::from("udp"),
        idle_timeout: idle,
        max_sessions,
        grace: Duration::from_millis(200),
        observer: None,
        handed_over: None,
    };
    let task = tokio::spawn(l4::udp::serve(
        socket,
        settings,
        move || routes.clone(),
        stats.clone(),
        stopped,
        None,
    ));
    Relay {
        addr,
        stats,
        stop,
        task,
    }
}

/// A client on its own port (on `ip`), talking to the relay.
async fn client_on(ip: &str, relay: &Relay) -> UdpSocket {
    let socket = UdpSocket::bind((ip, 0)).await.unwrap();
    socket.connect(relay.addr).await.unwrap();
    socket
}

async fn ask(client: &UdpSocket, payload: &[u8]) -> Vec<u8> {
    client.send(payload).await.unwrap();
    let mut buf = vec![0u8; 70_000];
    let len = tokio::time::timeout(WAIT, client.recv(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    buf.truncate(len);
    buf
}

async fn backend_of(client: &UdpSocket) -> String {
    let answer = ask(client, b"hi").await;
    let text = String::from_utf8(answer).unwrap();
    text.split(':').next().unwrap().to_owned()
}

#[tokio::test]
async fn each_session_keeps_its_backend_and_new_sessions_take_turns() {
    let (a, b, c) = (echo("a").await, echo("b").await, echo("c").await);
    let relay = relay(
        UdpRoutes::new(
            vec![],
            Some(route("all", None, lb(&[&a, &b, &c], Strategy::Wrr))),
        ),
        Duration::from_secs(3),
        100,
    )
    .await;
    let mut firsts = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..6 {
        let client = client_on("127.0.0.1", &relay).await;
        firsts.push(backend_of(&client).await);
        clients.push(client);
    }
    assert_eq!(firsts.join(","), "a,b,c,a,b,c");
    for (client, first) in clients.iter().zip(&firsts) {
        for _ in 0..3 {
            assert_eq!(&backend_of(client).await, first);
        }
    }
    assert_eq!(relay.stats.sessions.load(Ordering::Relaxed), 6);
}

#[tokio::test]
async fn datagram_boundaries_and_sizes_up_to_the_udp_limit_are_kept() {
    let a = echo("a").await;
    let relay = relay(
        UdpRoutes::new(vec![], Some(route("all", None, lb(&[&a], Strategy::Wrr)))),
        Duration::from_secs(3),
        10,
    )
    .await;
    let client = client_on("127.0.0.1", &relay).await;
    // The echo answer adds two bytes, so the largest request is two under the limit the
    // relay must carry either way on IPv4 (65,507 bytes of payload).
    for size in [0usize, 1, 1400, 9000, 65_505] {
        let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let answer = ask(&client, &payload).await;
        assert_eq!(answer.len(), size + 2, "size {size}");
        assert_eq!(&answer[2..], &payload[..]);
    }
}

#[tokio::test]
async fn weighted_children_share_new_sessions_by_weight() {
    let (a, b, c) = (echo("a").await, echo("b").await, echo("c").await);
    let service = Arc::new(UdpService::Weighted(Weighted::new(vec![
        (lb(&[&a, &b], Strategy::Wrr), 3),
        (lb(&[&c], Strategy::Wrr), 1),
    ])));
    let relay = relay(
        UdpRoutes::new(vec![], Some(route("all", None, service))),
        Duration::from_secs(3),
        100,
    )
    .await;
    let mut seen = Vec::new();
    for _ in 0..8 {
        let client = client_on("127.0.0.1", &relay).await;
        seen.push(backend_of(&client).await);
    }
    assert_eq!(seen.join(","), "a,b,a,c,b,a,b,c");
}

#[tokio::test]
async fn hrw_sends_every_session_of_a_client_ip_to_one_server() {
    let (a, b, c) = (echo("a").await, echo("b").await, echo("c").await);
    let relay = relay(
        UdpRoutes::new(
            vec![],
            Some(route("all", None, lb(&[&a, &b, &c], Strategy::Hrw))),
        ),
        Duration::from_secs(3),
        1000,
    )
    .await;
    let mut servers = std::collections::HashSet::new();
    for n in 1..=30 {
        let ip = format!("127.0.3.{n}");
        eprintln!("ip {ip}");
        let first = backend_of(&client_on(&ip, &relay).await).await;
        for _ in 0..3 {
            // A new port: a new session, and the same server.
            assert_eq!(
                backend_of(&client_on(&ip, &relay).await).await,
                first,
                "{ip}"
            );
        }
        servers.insert(first);
    }
    assert_eq!(servers.len(), 3, "30 client IPs reach all three servers");
}

#[tokio::test]
async fn a_router_with_a_client_ip_rule_comes_before_the_fallback() {
    let (lan, rest) = (echo("lan").await, echo("rest").await);
    let relay = relay(
        UdpRoutes::new(
            vec![route(
                "lan",
                Some("ClientIP(`127.0.2.0/24`)"),
                lb(&[&lan], Strategy::Wrr),
            )],
            Some(route("rest", None, lb(&[&rest], Strategy::Wrr))),
        ),
        Duration::from_secs(3),
        10,
    )
    .await;
    assert_eq!(
        backend_of(&client_on("127.0.2.7", &relay).await).await,
        "lan"
    );
    assert_eq!(
        backend_of(&client_on("127.0.0.1", &relay).await).await,
        "rest"
    );
}

#[tokio::test]
async fn an_idle_session_ends_and_the_next_datagram_starts_a_new_one() {
    let (a, b) = (echo("a").await, echo("b").await);
    let relay = relay(
        UdpRoutes::new(
            vec![],
            Some(route("all", None, lb(&[&a, &b], Strategy::Wrr))),
        ),
        Duration::from_millis(200),
        10,
    )
    .await;
    let client = client_on("127.0.0.1", &relay).await;
    assert_eq!(backend_of(&client).await, "a");
    // Traffic within the timeout keeps it.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(backend_of(&client).await, "a");
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while relay.stats.sessions.load(Ordering::Relaxed) != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the idle session was never swept"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        backend_of(&client).await,
        "b",
        "a new session, the next server"
    );
    assert_eq!(relay.stats.sessions_opened.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn a_full_table_refuses_newcomers_and_keeps_serving_its_sessions() {
    let a = echo("a").await;
    let relay = relay(
        UdpRoutes::new(vec![], Some(route("all", None, lb(&[&a], Strategy::Wrr)))),
        Duration::from_secs(30),
        5,
    )
    .await;
    let mut members = Vec::new();
    for _ in 0..5 {
        let client = client_on("127.0.0.1", &relay).await;
        assert_eq!(backend_of(&client).await, "a");
        members.push(client);
    }
    for n in 0..200 {
        let newcomer = client_on(&format!("127.0.4.{}", n % 250 + 1), &relay).await;
        newcomer.send(b"knock").await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while relay.stats.sessions_refused.load(Ordering::Relaxed) < 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "newcomers were not all refused"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(relay.stats.sessions.load(Ordering::Relaxed), 5);
    for member in &members {
        assert_eq!(backend_of(member).await, "a");
    }
}

#[tokio::test]
async fn a_backend_that_went_away_ends_the_session_and_the_next_server_is_tried() {
    let b = echo("b").await;
    // A port that was just bound and closed: nothing listens there.
    let gone_addr = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let service = Arc::new(UdpService::LoadBalancer(LoadBalancer::new(
        vec![
            Arc::from(gone_addr.to_string()),
            Arc::from(b.addr.to_string()),
        ],
        Strategy::Wrr,
    )));
    let relay = relay(
        UdpRoutes::new(vec![], Some(route("all", None, service))),
        Duration::from_secs(30),
        10,
    )
    .await;
    let client = client_on("127.0.0.1", &relay).await;
    // The first session goes to the dead port; the kernel's "port unreachable" ends it.
    client.send(b"hello?").await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while relay.stats.sessions.load(Ordering::Relaxed) != 0
        || relay.stats.sessions_opened.load(Ordering::Relaxed) == 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the failed session did not end"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(backend_of(&client).await, "b");
}

#[tokio::test]
async fn shutdown_refuses_new_sessions_and_ends_after_the_grace() {
    let a = echo("a").await;
    let relay = relay(
        UdpRoutes::new(vec![], Some(route("all", None, lb(&[&a], Strategy::Wrr)))),
        Duration::from_secs(30),
        10,
    )
    .await;
    let member = client_on("127.0.0.1", &relay).await;
    assert_eq!(backend_of(&member).await, "a");
    relay.stop.send(true).unwrap();
    // Within the grace, the open session is still served.
    assert_eq!(backend_of(&member).await, "a");
    let late = client_on("127.0.0.1", &relay).await;
    late.send(b"late").await.unwrap();
    tokio::time::timeout(WAIT, relay.task)
        .await
        .expect("the relay stops after the grace")
        .unwrap();
    assert_eq!(relay.stats.sessions.load(Ordering::Relaxed), 0);
    assert_eq!(relay.stats.sessions_opened.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn quic_flows_go_by_server_name_with_every_initial_replayed_untouched() {
    let (a, b, plain) = (echo("a").await, echo("b").await, echo("plain").await);
    let relay = relay(
        UdpRoutes::new(
            vec![
                quic_route("a", "HostSNI(`a.test`)", lb(&[&a], Strategy::Wrr)),
                quic_route("b", "HostSNI(`b.test`)", lb(&[&b], Strategy::Wrr)),
            ],
            Some(route("plain", None, lb(&[&plain], Strategy::Wrr))),
        ),
        Duration::from_secs(3),
        100,
    )
    .await;
    // Chromium's post-quantum ClientHello spans two Initials: nothing goes anywhere until
    // the second arrives, then both go, in order and byte for byte, to a.test's backend.
    for (v, client_ip) in [("v1", "127.0.5.1"), ("v2", "127.0.5.2")] {
        let first = initial(&format!("chromium-156-quic-{v}-initial-1.bin"));
        let second = initial(&format!("chromium-156-quic-{v}-initial-2.bin"));
        let client = client_on(client_ip, &relay).await;
        client.send(&first).await.unwrap();
        let mut buf = vec![0u8; 70_000];
        assert!(
            tokio::time::timeout(Duration::from_millis(200), client.recv(&mut buf))
                .await
                .is_err(),
            "{v}: held until the ClientHello is complete"
        );
        client.send(&second).await.unwrap();
        for sent in [&first, &second] {
            let len = tokio::time::timeout(WAIT, client.recv(&mut buf))
                .await
                .expect("an answer")
                .unwrap();
            assert_eq!(&buf[..2], b"a:", "{v}");
            assert_eq!(&buf[2..len], &sent[..], "{v}: replayed untouched");
        }
    }
    // A datagram that is not QUIC goes to the router without a rule.
    let other = client_on("127.0.5.9", &relay).await;
    assert_eq!(backend_of(&other).await, "plain");
    // An Initial that cannot be read is dropped and counted; nobody answers.
    let forged = client_on("127.0.5.10", &relay).await;
    // A v1 Initial header (8-byte DCID, no SCID, no token, 1,024 bytes of "packet") over
    // bytes that are no ciphertext.
    let mut garbage = vec![
        0xc3, 0, 0, 0, 1, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0x44, 0x00,
    ];
    garbage.resize(1200, 0x5a);
    forged.send(&garbage).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while relay.stats.quic_flows_dropped.load(Ordering::Relaxed) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the forged Initial was not dropped"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(relay.stats.sessions_opened.load(Ordering::Relaxed), 3);
}
