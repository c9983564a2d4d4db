//! UDP routing through the real binary: echo backends on loopback, clients on ports (and
//! loopback addresses) of their own, Traefik's configuration plus the `rule`, `priority`,
//! `strategy` and `udp.maxSessions` extensions.

mod support;

use support::udp::{UdpEcho, free_udp_port, udp_backend, udp_client};
use support::*;

/// A static configuration with one UDP entrypoint `udp` and, for the readiness wait, a TCP
/// entrypoint `web`; `udp_extra` goes under the UDP entrypoint.
fn udp_static(dir: &std::path::Path, udp_port: u16, web_port: u16, udp_extra: &str) -> String {
    format!(
        "entryPoints:\n  udp:\n    address: \"127.0.0.1:{udp_port}/udp\"\n{udp_extra}  web:\n    address: \"127.0.0.1:{web_port}\"\nproviders:\n  providersThrottleDuration: 100ms\n  file:\n    filename: \"{}\"\n    watch: true\nlog:\n  level: DEBUG\n",
        dir.join("dynamic.yml").display()
    )
}

struct Setup {
    router: Router,
    udp_port: u16,
    dir: std::path::PathBuf,
}

fn start(tag: &str, udp_extra: &str, dynamic: &str) -> Setup {
    let dir = temp_dir(tag);
    let (udp_port, web_port) = (free_udp_port(), free_port());
    let router = Router::start(
        &dir,
        &udp_static(&dir, udp_port, web_port, udp_extra),
        dynamic,
        &[web_port],
    );
    Setup {
        router,
        udp_port,
        dir,
    }
}

async fn backends_of_new_sessions(port: u16, ip: &str, n: usize) -> Vec<String> {
    let mut seen = Vec::new();
    for _ in 0..n {
        seen.push(udp_backend(&udp_client(ip, port).await).await);
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_services_share_sessions_as_in_traefiks_wrr_test() {
    // Traefik's integration/fixtures/udp/wrr.toml: weighted 3:1 over a two-server service
    // (a, c) and a one-server service (b); eight new sockets give a:3, b:2, c:3.
    let (a, b, c) = (
        UdpEcho::start("a").await,
        UdpEcho::start("b").await,
        UdpEcho::start("c").await,
    );
    let setup = start(
        "udp-wrr",
        "",
        &format!(
            r#"
udp:
  routers:
    to-whoami-a:
      service: whoami
      entryPoints: [udp]
  services:
    whoami:
      weighted:
        services:
          - {{ name: whoami-a, weight: 3 }}
          - {{ name: whoami-b, weight: 1 }}
    whoami-a:
      loadBalancer:
        servers: [{{ address: "{}" }}, {{ address: "{}" }}]
    whoami-b:
      loadBalancer:
        servers: [{{ address: "{}" }}]
"#,
            a.addr, c.addr, b.addr
        ),
    );
    let seen = backends_of_new_sessions(setup.udp_port, "127.0.0.1", 8).await;
    let count = |name: &str| seen.iter().filter(|s| *s == name).count();
    assert_eq!((count("a"), count("b"), count("c")), (3, 2, 3), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_keeps_its_server_and_ends_after_udp_timeout() {
    let (a, b) = (UdpEcho::start("a").await, UdpEcho::start("b").await);
    let setup = start(
        "udp-timeout",
        "    udp:\n      timeout: 300ms\n",
        &format!(
            "udp:\n  routers:\n    r:\n      service: s\n  services:\n    s:\n      loadBalancer:\n        servers: [{{ address: \"{}\" }}, {{ address: \"{}\" }}]\n",
            a.addr, b.addr
        ),
    );
    let client = udp_client("127.0.0.1", setup.udp_port).await;
    let first = udp_backend(&client).await;
    for _ in 0..5 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert_eq!(
            udp_backend(&client).await,
            first,
            "traffic keeps the session"
        );
    }
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let second = udp_backend(&client).await;
    assert_ne!(
        second, first,
        "after 300 ms idle, a new session takes the next server"
    );
    setup.router.wait_log("UDP session opened");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_choose_among_routers_and_hrw_keeps_a_client_on_one_server() {
    let (lan, x, y, z) = (
        UdpEcho::start("lan").await,
        UdpEcho::start("x").await,
        UdpEcho::start("y").await,
        UdpEcho::start("z").await,
    );
    let setup = start(
        "udp-rules",
        "",
        &format!(
            r#"
udp:
  routers:
    lan:
      rule: "ClientIP(`127.0.9.0/24`)"
      service: lan
    game:
      service: game
  services:
    lan:
      loadBalancer:
        servers: [{{ address: "{}" }}]
    game:
      loadBalancer:
        strategy: hrw
        servers: [{{ address: "{}" }}, {{ address: "{}" }}, {{ address: "{}" }}]
"#,
            lan.addr, x.addr, y.addr, z.addr
        ),
    );
    let port = setup.udp_port;
    assert_eq!(
        backends_of_new_sessions(port, "127.0.9.5", 3).await,
        ["lan", "lan", "lan"]
    );
    let mut used = std::collections::HashSet::new();
    for n in 1..=12 {
        let ip = format!("127.0.8.{n}");
        let seen = backends_of_new_sessions(port, &ip, 3).await;
        assert!(seen.iter().all(|s| *s == seen[0]), "{ip}: {seen:?}");
        assert_ne!(seen[0], "lan");
        used.insert(seen[0].clone());
    }
    assert!(
        used.len() >= 2,
        "12 client addresses spread over the servers: {used:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_routes_new_sessions_and_leaves_open_ones_alone() {
    let (old, new) = (UdpEcho::start("old").await, UdpEcho::start("new").await);
    let dynamic = |addr: std::net::SocketAddr| {
        format!(
            "udp:\n  routers:\n    r:\n      service: s\n  services:\n    s:\n      loadBalancer:\n        servers: [{{ address: \"{addr}\" }}]\n"
        )
    };
    let setup = start("udp-reload", "", &dynamic(old.addr));
    let open = udp_client("127.0.0.1", setup.udp_port).await;
    assert_eq!(udp_backend(&open).await, "old");
    std::fs::write(setup.dir.join("dynamic.yml"), dynamic(new.addr)).unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let fresh = udp_client("127.0.0.1", setup.udp_port).await;
        if udp_backend(&fresh).await == "new" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the reload never applied"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        udp_backend(&open).await,
        "old",
        "the open session kept its server"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_session_table_refuses_new_clients_and_logs_it() {
    let a = UdpEcho::start("a").await;
    let setup = start(
        "udp-full",
        "    udp:\n      maxSessions: 2\n      timeout: 30s\n",
        &format!(
            "udp:\n  routers:\n    r:\n      service: s\n  services:\n    s:\n      loadBalancer:\n        servers: [{{ address: \"{}\" }}]\n",
            a.addr
        ),
    );
    let port = setup.udp_port;
    let first = udp_client("127.0.0.1", port).await;
    let second = udp_client("127.0.0.1", port).await;
    assert_eq!(udp_backend(&first).await, "a");
    assert_eq!(udp_backend(&second).await, "a");
    let third = udp_client("127.0.0.1", port).await;
    assert_eq!(support::udp::udp_ask(&third, b"hello").await, None);
    setup.router.wait_log("UDP session table full");
    assert_eq!(udp_backend(&first).await, "a", "members are still served");
}

#[test]
fn udp_configuration_errors_are_located() {
    let dir = temp_dir("udp-check");
    let (udp_port, web_port) = (free_udp_port(), free_port());
    std::fs::write(
        dir.join("static.yml"),
        udp_static(&dir, udp_port, web_port, "    udp:\n      timeout: 0s\n"),
    )
    .unwrap();
    std::fs::write(dir.join("dynamic.yml"), "").unwrap();
    let (code, out) = run_cli(&["check", "--config", "static.yml"], &dir);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("udp.timeout must be greater than zero"),
        "{out}"
    );

    std::fs::write(
        dir.join("static.yml"),
        udp_static(&dir, udp_port, web_port, ""),
    )
    .unwrap();
    std::fs::write(
        dir.join("dynamic.yml"),
        "udp:\n  routers:\n    bad-rule:\n      rule: \"HostSNI(`a.test`)\"\n      service: s\n  services:\n    s:\n      loadBalancer:\n        strategy: fastest\n        servers: [{ address: \"127.0.0.1:9\" }]\n",
    )
    .unwrap();
    let (code, out) = run_cli(&["check", "--config", "static.yml"], &dir);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("dynamic.yml:4"), "the rule's line: {out}");
    assert!(out.contains("needs TLS"), "{out}");

    std::fs::write(
        dir.join("dynamic.yml"),
        "udp:\n  routers:\n    terminate:\n      rule: \"HostSNI(`a.test`)\"\n      tls: {}\n      service: s\n    no-rule:\n      tls: { passthrough: true }\n      service: s\n  services:\n    s:\n      loadBalancer:\n        servers: [{ address: \"127.0.0.1:9\" }]\n",
    )
    .unwrap();
    let (code, out) = run_cli(&["check", "--config", "static.yml"], &dir);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("only passes QUIC through"), "{out}");
    assert!(
        out.contains("QUIC passthrough router needs a rule"),
        "{out}"
    );
}

/// Open file descriptors of process `pid`.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_source_addresses_is_bounded_by_max_sessions() {
    let a = UdpEcho::start("a").await;
    let setup = start(
        "udp-flood",
        "    udp:\n      maxSessions: 50\n      timeout: 30s\n",
        &format!(
            "udp:\n  routers:\n    r:\n      service: s\n  services:\n    s:\n      loadBalancer:\n        servers: [{{ address: \"{}\" }}]\n",
            a.addr
        ),
    );
    let port = setup.udp_port;
    let member = udp_client("127.0.0.1", port).await;
    assert_eq!(udp_backend(&member).await, "a");
    let before = open_fds(setup.router.pid());
    // 2,000 sources: 250 loopback addresses × 8 ports, one datagram each.
    let mut senders = Vec::new();
    for n in 0..2000u32 {
        let ip = format!("127.1.{}.{}", n / 250, n % 250 + 1);
        let socket = udp_client(&ip, port).await;
        socket.send(b"flood").await.unwrap();
        senders.push(socket);
        if senders.len() == 64 {
            senders.clear();
        }
    }
    setup.router.wait_log("UDP session table full");
    let after = open_fds(setup.router.pid());
    assert!(
        after <= before + 50,
        "one socket per session at most: {before} descriptors before, {after} after"
    );
    assert_eq!(
        udp_backend(&member).await,
        "a",
        "the member keeps its session"
    );
}

/// A captured QUIC Initial datagram (l4/testdata/quic, from the shared vectors).
fn quic_initial(name: &str) -> Vec<u8> {
    let path = format!("{}/l4/testdata/quic/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_is_passed_through_by_server_name_and_plain_udp_shares_the_port() {
    let (a, b, plain) = (
        UdpEcho::start("a").await,
        UdpEcho::start("b").await,
        UdpEcho::start("plain").await,
    );
    let setup = start(
        "udp-quic-sni",
        "",
        &format!(
            r#"
udp:
  routers:
    quic-a:
      rule: "HostSNI(`a.test`)"
      tls: {{ passthrough: true }}
      service: a
    quic-b:
      rule: "HostSNI(`b.test`) && ALPN(`h3`)"
      tls: {{ passthrough: true }}
      service: b
    everything-else:
      service: plain
  services:
    a: {{ loadBalancer: {{ servers: [{{ address: "{}" }}] }} }}
    b: {{ loadBalancer: {{ servers: [{{ address: "{}" }}] }} }}
    plain: {{ loadBalancer: {{ servers: [{{ address: "{}" }}] }} }}
"#,
            a.addr, b.addr, plain.addr
        ),
    );
    let port = setup.udp_port;
    // Plain UDP first: it also shows the router is up.
    assert_eq!(
        udp_backend(&udp_client("127.0.0.1", port).await).await,
        "plain"
    );
    // Firefox splits even the host name across its two Initials.
    for client_name in [
        "chromium-156-quic-v1",
        "firefox-esr-153-quic-v1",
        "chromium-156-quic-v2",
    ] {
        let first = quic_initial(&format!("{client_name}-initial-1.bin"));
        let second = quic_initial(&format!("{client_name}-initial-2.bin"));
        let client = udp_client("127.0.0.1", port).await;
        client.send(&first).await.unwrap();
        client.send(&second).await.unwrap();
        let mut buf = vec![0u8; 70_000];
        for sent in [&first, &second] {
            let len = tokio::time::timeout(WAIT, client.recv(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("{client_name}: no answer"))
                .unwrap();
            assert_eq!(&buf[..2], b"a:", "{client_name}: routed by SNI a.test");
            assert_eq!(
                &buf[2..len],
                &sent[..],
                "{client_name}: passed through untouched"
            );
        }
    }
    setup.router.wait_log("sni=\"a.test\"");
}
