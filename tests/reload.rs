//! Live reload of the dynamic configuration, SIGHUP, and graceful shutdown.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::*;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

fn ep(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn route_to(addr: SocketAddr) -> String {
    format!(
        r#"
tcp:
  routers:
    r: {{rule: "HostSNI(`*`)", service: s}}
  services:
    s: {{loadBalancer: {{servers: [{{address: "{addr}"}}]}}}}
"#
    )
}

const APPLIED: &str = "dynamic configuration applied";

/// A reload changes where new connections go; a connection opened before it keeps
/// working with its old backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_changes_route_and_keeps_open_connection() {
    let a = Backend::echo(Some("a")).await;
    let b = Backend::echo(Some("b")).await;
    let port = free_port();
    let dir = temp_dir("reload");
    let r = Router::start(
        &dir,
        &static_config(&dir, &[("tcp", port)], ""),
        &route_to(a.addr),
        &[port],
    );
    let mut old = TcpStream::connect(ep(port)).await.unwrap();
    assert_eq!(read_line(&mut old).await.unwrap(), "a");

    // Atomic rename, as editors and ConfigMaps do it.
    let before = r.count_log(APPLIED);
    r.rewrite_dynamic(&route_to(b.addr));
    wait_until(|| r.count_log(APPLIED) > before, &r);
    let mut new = TcpStream::connect(ep(port)).await.unwrap();
    assert_eq!(read_line(&mut new).await.unwrap(), "b");
    assert_eq!(
        echo_roundtrip(&mut old, "still here").await.unwrap(),
        "still here"
    );

    // In-place edit.
    let before = r.count_log(APPLIED);
    std::fs::write(&r.dynamic_path, route_to(a.addr)).unwrap();
    wait_until(|| r.count_log(APPLIED) > before, &r);
    let mut again = TcpStream::connect(ep(port)).await.unwrap();
    assert_eq!(read_line(&mut again).await.unwrap(), "a");
    assert_eq!(
        echo_roundtrip(&mut new, "b lives").await.unwrap(),
        "b lives"
    );
}

/// An invalid new configuration is rejected with a located error and the last good
/// one keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_reload_keeps_old_routes() {
    let a = Backend::echo(Some("a")).await;
    let port = free_port();
    let dir = temp_dir("badreload");
    let r = Router::start(
        &dir,
        &static_config(&dir, &[("tcp", port)], ""),
        &route_to(a.addr),
        &[port],
    );
    r.rewrite_dynamic("tcp:\n  routers:\n    r: {rule: \"HostSNI(`*`)\", service: s, bogus: 1}\n");
    r.wait_log("dynamic.yml:3:");
    r.wait_log("keeping the last good configuration");
    let mut s = TcpStream::connect(ep(port)).await.unwrap();
    assert_eq!(read_line(&mut s).await.unwrap(), "a");
}

/// SIGHUP re-reads the file provider even when watching is off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_forces_reread() {
    let a = Backend::echo(Some("a")).await;
    let b = Backend::echo(Some("b")).await;
    let port = free_port();
    let dir = temp_dir("sighup");
    let stat = format!(
        "entryPoints:\n  tcp:\n    address: \"127.0.0.1:{port}\"\nproviders:\n  providersThrottleDuration: 50ms\n  file:\n    filename: \"{}\"\n    watch: false\nlog:\n  level: DEBUG\n",
        dir.join("dynamic.yml").display()
    );
    let r = Router::start(&dir, &stat, &route_to(a.addr), &[port]);
    std::fs::write(&r.dynamic_path, route_to(b.addr)).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut s = TcpStream::connect(ep(port)).await.unwrap();
    assert_eq!(
        read_line(&mut s).await.unwrap(),
        "a",
        "not watched: no reload yet"
    );
    let before = r.count_log(APPLIED);
    r.signal("HUP");
    wait_until(|| r.count_log(APPLIED) > before, &r);
    let mut s = TcpStream::connect(ep(port)).await.unwrap();
    assert_eq!(read_line(&mut s).await.unwrap(), "b");
}

/// SIGTERM stops accepting, lets open connections finish within graceTimeOut, then
/// closes what is left and exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_drains_then_closes() {
    let a = Backend::echo(Some("a")).await;
    let port = free_port();
    let dir = temp_dir("shutdown");
    let stat = format!(
        "entryPoints:\n  tcp:\n    address: \"127.0.0.1:{port}\"\n    transport:\n      lifeCycle:\n        graceTimeOut: 1s\nproviders:\n  file:\n    filename: \"{}\"\nlog:\n  level: DEBUG\n",
        dir.join("dynamic.yml").display()
    );
    let mut r = Router::start(&dir, &stat, &route_to(a.addr), &[port]);
    let mut open = TcpStream::connect(ep(port)).await.unwrap();
    assert_eq!(read_line(&mut open).await.unwrap(), "a");
    r.signal("TERM");
    r.wait_log("shutting down");
    // New connections are refused while the open one still works.
    wait_until(|| std::net::TcpStream::connect(ep(port)).is_err(), &r);
    assert_eq!(
        echo_roundtrip(&mut open, "draining").await.unwrap(),
        "draining"
    );
    // After graceTimeOut the leftover connection is closed and the process exits.
    let status = r
        .wait_exit(Duration::from_secs(5))
        .expect("exited after graceTimeOut");
    assert!(status.success(), "{status}");
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(WAIT, open.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0);
}

/// `requestAcceptGraceTimeout`: after SIGTERM, new connections are still accepted and
/// served for that long, then refused, and the process exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_accept_grace_timeout_keeps_accepting_after_sigterm() {
    let a = Backend::echo(Some("a")).await;
    let port = free_port();
    let dir = temp_dir("shutdown-accept-grace");
    let stat = format!(
        "entryPoints:\n  tcp:\n    address: \"127.0.0.1:{port}\"\n    transport:\n      lifeCycle:\n        requestAcceptGraceTimeout: 1500ms\n        graceTimeOut: 1s\nproviders:\n  file:\n    filename: \"{}\"\nlog:\n  level: DEBUG\n",
        dir.join("dynamic.yml").display()
    );
    let mut r = Router::start(&dir, &stat, &route_to(a.addr), &[port]);
    r.signal("TERM");
    r.wait_log("still accepting for requestAcceptGraceTimeout");
    let signalled = std::time::Instant::now();
    // Within the grace period a new client is still served.
    let mut late = TcpStream::connect(ep(port)).await.unwrap();
    assert_eq!(read_line(&mut late).await.unwrap(), "a");
    assert!(signalled.elapsed() < Duration::from_millis(1500));
    drop(late);
    // Then the port closes and the process exits.
    wait_until(|| std::net::TcpStream::connect(ep(port)).is_err(), &r);
    assert!(
        signalled.elapsed() >= Duration::from_millis(1000),
        "closed before the grace period"
    );
    let status = r.wait_exit(Duration::from_secs(5)).expect("exits");
    assert!(status.success(), "{status}");
}

/// SIGTERM with nothing open exits at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_without_connections_is_immediate() {
    let a = Backend::echo(Some("a")).await;
    let port = free_port();
    let dir = temp_dir("shutdown-idle");
    let mut r = Router::start(
        &dir,
        &static_config(&dir, &[("tcp", port)], ""),
        &route_to(a.addr),
        &[port],
    );
    r.signal("INT");
    let status = r.wait_exit(Duration::from_secs(2)).expect("exits quickly");
    assert!(status.success());
}

fn wait_until(cond: impl Fn() -> bool, r: &Router) {
    let start = std::time::Instant::now();
    while start.elapsed() < WAIT {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("condition never met; log:\n{}", r.log());
}

fn health_checked(
    good: SocketAddr,
    flaky: SocketAddr,
    interval: &str,
    extra_router: bool,
) -> String {
    let extra = if extra_router {
        "    other: {rule: \"HostSNI(`*`)\", service: s, entryPoints: [nowhere]}\n"
    } else {
        ""
    };
    format!(
        r#"
tcp:
  routers:
    r: {{rule: "HostSNI(`*`)", service: s, entryPoints: [tcp]}}
{extra}  services:
    s:
      loadBalancer:
        servers: [{{address: "{good}"}}, {{address: "{flaky}"}}]
        healthCheck: {{interval: {interval}, timeout: 200ms}}
"#
    )
}

/// A reload that keeps a server in its service keeps the server's health: a server
/// known to be down is not tried again until a probe says it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_keeps_server_health() {
    let good = Backend::echo(Some("good")).await;
    let flaky = Backend::echo(Some("flaky")).await;
    let flaky_addr = flaky.addr;
    let port = free_port();
    let dir = temp_dir("reload-health");
    let r = Router::start(
        &dir,
        &static_config(&dir, &[("tcp", port)], ""),
        &health_checked(good.addr, flaky_addr, "200ms", false),
        &[port],
    );
    drop(flaky);
    r.wait_log("is down");
    // Same service and servers, slower probes, and an extra router: a different file.
    let before = r.count_log(APPLIED);
    r.rewrite_dynamic(&health_checked(good.addr, flaky_addr, "30s", true));
    wait_until(|| r.count_log(APPLIED) > before, &r);
    for _ in 0..4 {
        let mut s = TcpStream::connect(ep(port)).await.unwrap();
        assert_eq!(read_line(&mut s).await.unwrap(), "good");
    }
}
