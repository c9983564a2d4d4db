//! Memory budgets, measured (never timed) against the real binary: the resident memory of a
//! router holding many routers, and what each idle connection or session adds to it —
//! HTTP/1.1 keep-alive, HTTP/2, an HTTP/1.1 connection whose headers trickle in (slowloris),
//! a TCP relay, a UDP session.
//!
//! Each figure is the growth of the router's RSS (`VmRSS`) over a baseline taken once the
//! process is warm, divided by what was opened. The budgets have headroom over what was
//! measured (bench/RESULTS.md, "Memory budgets"), so a regression that makes a connection or a
//! router markedly heavier fails the build, while allocator noise does not.
//!
//! `MEMORY_REPORT=FILE` appends every figure to FILE as `name<TAB>value<TAB>unit` lines, and
//! `MEMORY_CONNS` / `MEMORY_ROUTERS` change the counts: bench/memory.sh runs this file with a
//! release build and larger counts.

mod support;

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;

use support::udp::{UdpEcho, free_udp_port, udp_ask, udp_client};
use support::web::{Conn, HttpBackend};
use support::*;

/// Connections (or sessions) held open for the per-connection figures.
fn conns() -> usize {
    env_count("MEMORY_CONNS").unwrap_or(1000)
}

fn env_count(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// RSS once the process has stopped growing: the tasks that serve what was just opened may
/// still be allocating their buffers when the last client call returns.
async fn settled_rss_kib(pid: u32) -> u64 {
    let mut last = rss_kib(pid);
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = rss_kib(pid);
        if now == last {
            break;
        }
        last = now;
    }
    last
}

/// Checks a figure against its budget, and reports it when asked to.
fn within_budget(name: &str, measured: f64, budget: f64, unit: &str) {
    eprintln!("{name}: {measured:.1} {unit} (budget {budget} {unit})");
    if let Ok(path) = std::env::var("MEMORY_REPORT") {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("open MEMORY_REPORT");
        writeln!(file, "{name}\t{measured:.1}\t{unit}").expect("write MEMORY_REPORT");
    }
    assert!(
        measured <= budget,
        "{name}: {measured:.1} {unit} is over its budget of {budget} {unit}"
    );
}

/// A static configuration with the given entrypoints, the file provider on `dynamic.yml`,
/// and INFO logs (DEBUG would log every connection).
fn static_yaml(dir: &Path, entrypoints: &[(&str, String)]) -> String {
    let mut s = String::from("entryPoints:\n");
    for (name, address) in entrypoints {
        s.push_str(&format!("  {name}:\n    address: \"{address}\"\n"));
    }
    s.push_str(&format!(
        "providers:\n  file:\n    filename: \"{}\"\n    watch: false\nlog:\n  level: INFO\n",
        dir.join("dynamic.yml").display()
    ));
    s
}

/// `count` HTTP routers, each matching its own host and with its own service.
fn many_routers(count: usize, backend: &str) -> String {
    let mut yaml = String::from("http:\n  routers:\n");
    for i in 0..count {
        yaml.push_str(&format!(
            "    r{i}:\n      rule: \"Host(`h{i}.test`)\"\n      service: s{i}\n"
        ));
    }
    yaml.push_str("  services:\n");
    for i in 0..count {
        yaml.push_str(&format!(
            "    s{i}:\n      loadBalancer:\n        servers: [{{url: \"{backend}\"}}]\n"
        ));
    }
    if count == 0 {
        yaml = String::from("http: {}\n");
    }
    yaml
}

/// RSS of a router serving `count` routers, after one request routed by the last of them.
async fn rss_with_routers(count: usize, backend: &HttpBackend) -> u64 {
    let dir = temp_dir(&format!("memory-routers-{count}"));
    let web = free_port();
    let router = Router::start(
        &dir,
        &static_yaml(&dir, &[("web", format!("127.0.0.1:{web}"))]),
        &many_routers(count, &backend.url()),
        &[web],
    );
    if count > 0 {
        let mut conn = Conn::h1(web).await;
        let host = format!("h{}.test", count - 1);
        assert_eq!(conn.get(&host, "/").await.status, 200);
    }
    settled_rss_kib(router.pid()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routers_cost_little_memory_each() {
    let backend = HttpBackend::start("app").await;
    let base = rss_with_routers(0, &backend).await;
    within_budget("rss_0_routers", base as f64 / 1024.0, 48.0, "MiB");
    let mut counts = vec![1_000, 10_000];
    counts.extend(env_count("MEMORY_ROUTERS"));
    for count in counts {
        let rss = rss_with_routers(count, &backend).await;
        within_budget(
            &format!("rss_{count}_routers"),
            rss as f64 / 1024.0,
            48.0 + 20.0 * count as f64 / 1024.0,
            "MiB",
        );
        within_budget(
            &format!("per_router_at_{count}"),
            rss.saturating_sub(base) as f64 / count as f64,
            20.0,
            "KiB",
        );
    }
}

/// Opens [`conns`] connections with `open`, which must leave each one idle after a first
/// exchange; returns the router's growth per connection in KiB.
async fn growth_per_conn<T, F, Fut>(pid: u32, open: F) -> f64
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    // A few connections first, so that one-off allocations (pools, buffers, thread-local
    // caches) are in the baseline.
    let mut held = Vec::new();
    for _ in 0..16 {
        held.push(open().await);
    }
    let before = settled_rss_kib(pid).await;
    let count = conns();
    for _ in 0..count {
        held.push(open().await);
    }
    let after = settled_rss_kib(pid).await;
    let growth = after.saturating_sub(before) as f64 / count as f64;
    drop(held);
    growth
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http_connections_stay_within_budget() {
    let backend = HttpBackend::start("app").await;
    let dir = temp_dir("memory-http");
    let web = free_port();
    let router = Router::start(
        &dir,
        &static_yaml(&dir, &[("web", format!("127.0.0.1:{web}"))]),
        &many_routers(1, &backend.url()),
        &[web],
    );
    let h1 = growth_per_conn(router.pid(), || async move {
        let mut conn = Conn::h1(web).await;
        assert_eq!(conn.get("h0.test", "/").await.status, 200);
        conn
    })
    .await;
    within_budget("per_idle_http1_conn", h1, 40.0, "KiB");
    let h2 = growth_per_conn(router.pid(), || async move {
        let mut conn = Conn::h2c(web).await;
        assert_eq!(conn.get("h0.test", "/").await.status, 200);
        conn
    })
    .await;
    within_budget("per_idle_http2_conn", h2, 32.0, "KiB");
    let slow = growth_per_conn(router.pid(), || async move {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", web))
            .await
            .expect("connect");
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: h0.test\r\nX-Slow: 1\r\n")
            .await
            .expect("send half a head");
        stream
    })
    .await;
    within_budget("per_http1_conn_mid_headers", slow, 8.0, "KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_relays_and_udp_sessions_stay_within_budget() {
    let echo = Backend::echo(None).await;
    let udp_echo = UdpEcho::start("udp").await;
    let dir = temp_dir("memory-l4");
    let (tcp, udp) = (free_port(), free_udp_port());
    let dynamic = format!(
        "tcp:\n  routers:\n    relay:\n      entryPoints: [tcp]\n      rule: \"HostSNI(`*`)\"\n      service: echo\n  services:\n    echo:\n      loadBalancer:\n        servers: [{{address: \"{}\"}}]\nudp:\n  routers:\n    game:\n      entryPoints: [udp]\n      service: echo\n  services:\n    echo:\n      loadBalancer:\n        servers: [{{address: \"{}\"}}]\n",
        echo.addr, udp_echo.addr
    );
    let router = Router::start(
        &dir,
        &static_yaml(
            &dir,
            &[
                ("tcp", format!("127.0.0.1:{tcp}")),
                ("udp", format!("127.0.0.1:{udp}/udp")),
            ],
        ),
        &dynamic,
        &[tcp],
    );
    let relay = growth_per_conn(router.pid(), || async move {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", tcp))
            .await
            .expect("connect");
        let answer = tokio::time::timeout(WAIT, echo_roundtrip(&mut stream, "ping"))
            .await
            .expect("echo in time")
            .expect("echo");
        assert_eq!(answer, "ping");
        stream
    })
    .await;
    within_budget("per_tcp_relay", relay, 16.0, "KiB");
    let session = growth_per_conn(router.pid(), || async move {
        let client = udp_client("127.0.0.1", udp).await;
        let mut answer = None;
        for _ in 0..20 {
            answer = udp_ask(&client, b"hello").await;
            if answer.is_some() {
                break;
            }
        }
        assert_eq!(answer.as_deref(), Some(&b"udp:hello"[..]));
        client
    })
    .await;
    within_budget("per_udp_session", session, 4.0, "KiB");
}
