//! Live reload of the dynamic configuration, SIGHUP, and graceful shutdown.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use support::web::websocket_echo;
use support::*;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

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
/// working with its old backend for the drain time (`graceTimeOut`, 10 s here).
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

/// Reloads touch only what they change: connections on a router that a reload leaves as it
/// was live on across any number of reloads; those on a router it changes or removes get
/// the drain time (`graceTimeOut` of its entrypoints) to finish, then are closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_drain_only_the_routers_they_change_or_remove() {
    let kept = Backend::echo(Some("kept")).await;
    let changed = Backend::echo(Some("changed")).await;
    let removed = Backend::echo(Some("removed")).await;
    let other = Backend::echo(Some("other")).await;
    let ports = [free_port(), free_port(), free_port()];
    let dir = temp_dir("reload-drain");
    let mut static_yaml = String::from("entryPoints:\n");
    for (name, port) in ["kept", "changed", "removed"].iter().zip(ports) {
        static_yaml.push_str(&format!(
            "  {name}:\n    address: \"127.0.0.1:{port}\"\n    transport:\n      lifeCycle:\n        graceTimeOut: 1s\n"
        ));
    }
    static_yaml.push_str(&format!(
        "providers:\n  providersThrottleDuration: 100ms\n  file:\n    filename: \"{}\"\n    watch: true\nlog:\n  level: DEBUG\n",
        dir.join("dynamic.yml").display()
    ));
    let dynamic = |changed_to: SocketAddr, with_removed: bool, extra: &str| {
        let mut yaml = format!(
            "tcp:\n  routers:\n    kept: {{entryPoints: [kept], rule: \"HostSNI(`*`)\", service: kept}}\n    changed: {{entryPoints: [changed], rule: \"HostSNI(`*`)\", service: changed}}\n{extra}"
        );
        if with_removed {
            yaml.push_str(
                "    removed: {entryPoints: [removed], rule: \"HostSNI(`*`)\", service: removed}\n",
            );
        }
        yaml.push_str(&format!(
            "  services:\n    kept: {{loadBalancer: {{servers: [{{address: \"{}\"}}]}}}}\n    changed: {{loadBalancer: {{servers: [{{address: \"{changed_to}\"}}]}}}}\n    removed: {{loadBalancer: {{servers: [{{address: \"{}\"}}]}}}}\n",
            kept.addr, removed.addr
        ));
        yaml
    };
    let r = Router::start(&dir, &static_yaml, &dynamic(changed.addr, true, ""), &ports);
    let mut on_kept = TcpStream::connect(ep(ports[0])).await.unwrap();
    assert_eq!(read_line(&mut on_kept).await.unwrap(), "kept");
    let mut on_changed = TcpStream::connect(ep(ports[1])).await.unwrap();
    assert_eq!(read_line(&mut on_changed).await.unwrap(), "changed");
    let mut on_removed = TcpStream::connect(ep(ports[2])).await.unwrap();
    assert_eq!(read_line(&mut on_removed).await.unwrap(), "removed");

    // Unrelated changes only: a router added, then removed again. Nothing is retired.
    for extra in [
        "    added: {entryPoints: [removed], rule: \"ClientIP(`10.0.0.0/8`)\", service: kept}\n",
        "",
    ] {
        let before = r.count_log(APPLIED);
        r.rewrite_dynamic(&dynamic(changed.addr, true, extra));
        wait_until(|| r.count_log(APPLIED) > before, &r);
    }
    // The router `changed` gets another backend, and `removed` goes.
    let before = r.count_log(APPLIED);
    r.rewrite_dynamic(&dynamic(other.addr, false, ""));
    wait_until(|| r.count_log(APPLIED) > before, &r);
    r.wait_log("tcp router changed by a reload");
    r.wait_log("tcp router removed by a reload");
    // Within the drain time, both still work.
    assert_eq!(
        echo_roundtrip(&mut on_changed, "draining").await.unwrap(),
        "draining"
    );
    assert_eq!(
        echo_roundtrip(&mut on_removed, "draining").await.unwrap(),
        "draining"
    );
    // Then they are closed; the untouched router's connection is not.
    for conn in [&mut on_changed, &mut on_removed] {
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(WAIT, conn.read_to_end(&mut rest)).await;
        assert!(
            matches!(closed, Ok(Ok(_))),
            "closed after the drain: {closed:?}"
        );
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        echo_roundtrip(&mut on_kept, "untouched").await.unwrap(),
        "untouched"
    );
    // Three retirements: `added` (removed again), `changed` and `removed`; never `kept`.
    let log = r.log();
    let retired: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("by a reload: its open"))
        .collect();
    assert_eq!(retired.len(), 3, "{retired:#?}");
    assert!(!retired.iter().any(|l| l.contains("kept@")), "{retired:#?}");
    let mut new = TcpStream::connect(ep(ports[1])).await.unwrap();
    assert_eq!(read_line(&mut new).await.unwrap(), "other");
}

/// WebSockets live on the HTTP router that switched them: a reload that leaves the router
/// as it was never touches them, one that changes or removes it lets them go on for the
/// drain time (`graceTimeOut`), then closes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_close_the_websockets_of_http_routers_they_change_or_remove() {
    let kept = websocket_echo("kept", None).await;
    let changed = websocket_echo("changed", None).await;
    let removed = websocket_echo("removed", None).await;
    let other = websocket_echo("other", None).await;
    let port = free_port();
    let dir = temp_dir("reload-websockets");
    let static_yaml = format!(
        "entryPoints:\n  web:\n    address: \"127.0.0.1:{port}\"\n    transport:\n      lifeCycle:\n        graceTimeOut: 1s\nproviders:\n  providersThrottleDuration: 100ms\n  file:\n    filename: \"{}\"\n    watch: true\nlog:\n  level: DEBUG\n",
        dir.join("dynamic.yml").display()
    );
    let dynamic = |changed_to: SocketAddr, with_removed: bool, extra: &str| {
        let mut yaml = String::from("http:\n  routers:\n");
        for name in ["kept", "changed"]
            .into_iter()
            .chain(with_removed.then_some("removed"))
        {
            yaml.push_str(&format!(
                "    {name}: {{rule: \"Host(`{name}.test`)\", service: {name}}}\n"
            ));
        }
        yaml.push_str(extra);
        yaml.push_str("  services:\n");
        for (name, addr) in [
            ("kept", kept.addr),
            ("changed", changed_to),
            ("removed", removed.addr),
        ] {
            yaml.push_str(&format!(
                "    {name}: {{loadBalancer: {{servers: [{{url: \"http://{addr}\"}}]}}}}\n"
            ));
        }
        yaml
    };
    let r = Router::start(
        &dir,
        &static_yaml,
        &dynamic(changed.addr, true, ""),
        &[port],
    );
    let mut on_kept = websocket(port, "kept.test").await;
    let mut on_changed = websocket(port, "changed.test").await;
    let mut on_removed = websocket(port, "removed.test").await;
    for (ws, name) in [
        (&mut on_kept, "kept"),
        (&mut on_changed, "changed"),
        (&mut on_removed, "removed"),
    ] {
        assert_eq!(
            ws_roundtrip(ws, "hi").await.as_deref(),
            Some(&*format!("{name}: hi"))
        );
    }

    // An unrelated router added, then removed again: no WebSocket notices.
    for extra in [
        "    added: {rule: \"Host(`added.test`)\", service: kept}\n",
        "",
    ] {
        let before = r.count_log(APPLIED);
        r.rewrite_dynamic(&dynamic(changed.addr, true, extra));
        wait_until(|| r.count_log(APPLIED) > before, &r);
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for (ws, name) in [
        (&mut on_kept, "kept"),
        (&mut on_changed, "changed"),
        (&mut on_removed, "removed"),
    ] {
        assert_eq!(
            ws_roundtrip(ws, "after unrelated reloads").await.as_deref(),
            Some(&*format!("{name}: after unrelated reloads"))
        );
    }

    // `changed` gets another backend and `removed` goes.
    let before = r.count_log(APPLIED);
    r.rewrite_dynamic(&dynamic(other.addr, false, ""));
    wait_until(|| r.count_log(APPLIED) > before, &r);
    r.wait_log("http router changed by a reload");
    r.wait_log("http router removed by a reload");
    // Within the drain time both still work.
    for (ws, name) in [(&mut on_changed, "changed"), (&mut on_removed, "removed")] {
        assert_eq!(
            ws_roundtrip(ws, "draining").await.as_deref(),
            Some(&*format!("{name}: draining"))
        );
    }
    // Then both are closed; the untouched router's WebSocket is not.
    for ws in [&mut on_changed, &mut on_removed] {
        let end = tokio::time::timeout(WAIT, async {
            loop {
                match ws.next().await {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                    Some(Ok(_)) => {}
                }
            }
        })
        .await;
        assert!(
            end.is_ok(),
            "the retired WebSocket is closed after the drain"
        );
    }
    r.wait_log("upgraded connection closed: its router was changed or removed by a reload");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        ws_roundtrip(&mut on_kept, "untouched").await.as_deref(),
        Some("kept: untouched")
    );
    // A new WebSocket follows the new definition.
    let mut new = websocket(port, "changed.test").await;
    assert_eq!(
        ws_roundtrip(&mut new, "new").await.as_deref(),
        Some("other: new")
    );
}

/// A WebSocket through the router's plaintext entrypoint to `host`.
async fn websocket(port: u16, host: &str) -> WebSocketStream<TcpStream> {
    let tcp = TcpStream::connect(ep(port)).await.expect("connect");
    let (ws, _) = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::client_async(format!("ws://{host}/"), tcp),
    )
    .await
    .expect("handshake in time")
    .expect("handshake");
    ws
}

/// Sends `text` and returns the text that comes back; `None` when the WebSocket ended.
async fn ws_roundtrip(ws: &mut WebSocketStream<TcpStream>, text: &str) -> Option<String> {
    ws.send(Message::text(text)).await.ok()?;
    match tokio::time::timeout(WAIT, ws.next()).await.ok()?? {
        Ok(Message::Text(reply)) => Some(reply.as_str().to_owned()),
        _ => None,
    }
}

/// The answer to `payload` (resent while the router comes up), as text.
async fn ask(client: &tokio::net::UdpSocket, payload: &[u8]) -> String {
    for _ in 0..40 {
        if let Some(answer) = support::udp::udp_ask(client, payload).await {
            return String::from_utf8_lossy(&answer).into_owned();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no answer to {payload:?}");
}

/// A UDP session lives on its backend across a reload that changes its router, for the
/// drain time; then it ends, and the client's next datagram opens a session by the new
/// router. Sessions of a router the reload leaves alone stay on their backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_sessions_of_a_changed_router_drain_then_move() {
    use support::udp::{UdpEcho, free_udp_port, udp_client};
    let old = UdpEcho::start("old").await;
    let new = UdpEcho::start("new").await;
    let steady = UdpEcho::start("steady").await;
    let (changing, kept) = (free_udp_port(), free_udp_port());
    let dir = temp_dir("reload-udp-drain");
    let static_yaml = format!(
        "entryPoints:\n  changing:\n    address: \"127.0.0.1:{changing}/udp\"\n    transport:\n      lifeCycle:\n        graceTimeOut: 1500ms\n  kept:\n    address: \"127.0.0.1:{kept}/udp\"\n    transport:\n      lifeCycle:\n        graceTimeOut: 1500ms\nproviders:\n  providersThrottleDuration: 100ms\n  file:\n    filename: \"{}\"\n    watch: true\nlog:\n  level: DEBUG\n",
        dir.join("dynamic.yml").display()
    );
    let dynamic = |to: SocketAddr| {
        format!(
            "udp:\n  routers:\n    changing: {{entryPoints: [changing], service: changing}}\n    kept: {{entryPoints: [kept], service: kept}}\n  services:\n    changing: {{loadBalancer: {{servers: [{{address: \"{to}\"}}]}}}}\n    kept: {{loadBalancer: {{servers: [{{address: \"{}\"}}]}}}}\n",
            steady.addr
        )
    };
    let r = Router::start(&dir, &static_yaml, &dynamic(old.addr), &[]);
    let on_changing = udp_client("127.0.0.1", changing).await;
    let on_kept = udp_client("127.0.0.1", kept).await;
    assert_eq!(ask(&on_changing, b"a").await, "old:a");
    assert_eq!(ask(&on_kept, b"a").await, "steady:a");

    let before = r.count_log(APPLIED);
    r.rewrite_dynamic(&dynamic(new.addr));
    wait_until(|| r.count_log(APPLIED) > before, &r);
    r.wait_log("udp router changed by a reload");
    // Within the drain time the session keeps its backend.
    assert_eq!(ask(&on_changing, b"b").await, "old:b");
    // After it, the session is over and the next datagram is routed afresh.
    tokio::time::sleep(Duration::from_millis(1700)).await;
    assert_eq!(ask(&on_changing, b"c").await, "new:c");
    assert_eq!(ask(&on_kept, b"c").await, "steady:c");
    assert!(
        !r.log()
            .lines()
            .any(|l| l.contains("by a reload") && l.contains("kept@"))
    );
}

/// A reload that leaves a servers transport as it was keeps its pooled connections: the
/// backend sees no new connection for requests made after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_keep_pooled_backend_connections() {
    use support::web::{Conn, HttpBackend};
    let backend = HttpBackend::start("app").await;
    let web = free_port();
    let dynamic = |other: &str| app_behind(&backend.url(), other, None);
    let r = start_web("reload-pool", web, &dynamic("a.test"));
    let mut client = Conn::h1(web).await;
    for _ in 0..3 {
        assert_eq!(client.get("app.test", "/").await.status, 200);
    }
    for other in ["b.test", "c.test"] {
        let before = r.count_log(APPLIED);
        r.rewrite_dynamic(&dynamic(other));
        wait_until(|| r.count_log(APPLIED) > before, &r);
        for _ in 0..3 {
            assert_eq!(client.get("app.test", "/").await.status, 200);
        }
    }
    assert_eq!(
        backend
            .connections
            .load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one backend connection for all nine requests"
    );
}

/// The statuses of three requests for `app.test` on `client`.
async fn three_statuses(client: &mut support::web::Conn) -> Vec<u16> {
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(client.get("app.test", "/").await.status.as_u16());
    }
    got
}

/// A reload that leaves a `rateLimit` as it was keeps its buckets: a client that used its
/// burst is still limited after it. A reload that changes the limit starts afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_keep_rate_limit_buckets_while_the_limit_is_unchanged() {
    use support::web::{Conn, HttpBackend};
    let backend = HttpBackend::start("app").await;
    let web = free_port();
    let dynamic = |other: &str, burst: u32| {
        let limit = format!("{{rateLimit: {{average: 1, period: 1h, burst: {burst}}}}}");
        app_behind(&backend.url(), other, Some(&limit))
    };
    let r = start_web("reload-ratelimit", web, &dynamic("a.test", 2));
    let mut client = Conn::h1(web).await;
    assert_eq!(three_statuses(&mut client).await, [200, 200, 429]);
    let reload = |yaml: String| {
        let before = r.count_log(APPLIED);
        r.rewrite_dynamic(&yaml);
        wait_until(|| r.count_log(APPLIED) > before, &r);
    };
    // Another router changes: the bucket is still empty.
    reload(dynamic("b.test", 2));
    assert_eq!(three_statuses(&mut client).await, [429, 429, 429]);
    // The limit itself changes: a new bucket, full.
    reload(dynamic("b.test", 3));
    assert_eq!(three_statuses(&mut client).await, [200, 200, 200]);
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

/// Rewrites the dynamic file and waits until the router applied it.
/// HTTP router `app` (Host `app.test`, with middleware `limit` when given) and router
/// `other` (Host `other`: what reloads change), both to service `app` at `url`.
fn app_behind(url: &str, other: &str, limit: Option<&str>) -> String {
    let (uses, defined) = match limit {
        Some(limit) => (
            ", middlewares: [limit]".to_owned(),
            format!("  middlewares:\n    limit: {limit}\n"),
        ),
        None => (String::new(), String::new()),
    };
    format!(
        "http:\n  routers:\n    app: {{rule: \"Host(`app.test`)\", service: app{uses}}}\n    other: {{rule: \"Host(`{other}`)\", service: app}}\n{defined}  services:\n    app: {{loadBalancer: {{servers: [{{url: \"{url}\"}}]}}}}\n"
    )
}

/// The router with one HTTP entrypoint `web` on `port`, serving `dynamic`.
fn start_web(name: &str, port: u16, dynamic: &str) -> Router {
    let dir = temp_dir(name);
    Router::start(
        &dir,
        &static_config(&dir, &[("web", port)], ""),
        dynamic,
        &[port],
    )
}

fn reload_to(r: &Router, yaml: &str) {
    let before = r.count_log(APPLIED);
    r.rewrite_dynamic(yaml);
    wait_until(|| r.count_log(APPLIED) > before, r);
}

/// A reload that leaves an `inFlightReq` as it was keeps its counts: a request in flight
/// on the old snapshot still holds its slot against new requests, and gives it back when
/// it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_keep_in_flight_req_counts_while_the_limit_is_unchanged() {
    use support::web::{Conn, HttpBackend};
    let backend = HttpBackend::start("app").await;
    let web = free_port();
    let dynamic =
        |other: &str| app_behind(&backend.url(), other, Some("{inFlightReq: {amount: 1}}"));
    let r = start_web("reload-inflightreq", web, &dynamic("a.test"));
    let held = tokio::spawn(async move {
        let mut conn = Conn::h1(web).await;
        conn.get("app.test", "/slow/4000").await.status.as_u16()
    });
    wait_until(|| backend.seen().iter().any(|s| s.contains("/slow/")), &r);
    reload_to(&r, &dynamic("b.test"));
    let mut client = Conn::h1(web).await;
    assert_eq!(client.get("app.test", "/").await.status, 429);
    assert_eq!(held.await.unwrap(), 200);
    assert_eq!(client.get("app.test", "/").await.status, 200);
}

/// A reload that leaves a TCP `inFlightConn` as it was keeps its counts: connections
/// opened before it still count, and their slots come back when they close. A new
/// amount starts afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_keep_in_flight_conn_counts_while_the_limit_is_unchanged() {
    let echo = Backend::echo(Some("in")).await;
    let port = free_port();
    let dir = temp_dir("reload-inflightconn");
    let dynamic = |priority: u32, amount: u32| {
        format!(
            "tcp:\n  routers:\n    r: {{rule: \"HostSNI(`*`)\", service: s, entryPoints: [tcp], middlewares: [limit]}}\n    other: {{rule: \"HostSNI(`*`)\", service: s, entryPoints: [nowhere], priority: {priority}}}\n  middlewares:\n    limit: {{inFlightConn: {{amount: {amount}}}}}\n  services:\n    s: {{loadBalancer: {{servers: [{{address: \"{}\"}}]}}}}\n",
            echo.addr
        )
    };
    let r = Router::start(
        &dir,
        &static_config(&dir, &[("tcp", port)], ""),
        &dynamic(1, 1),
        &[port],
    );
    // `Router::start`'s own probe connection holds a slot until its relay ends.
    r.wait_log("connection closed");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut first = TcpStream::connect(ep(port)).await.unwrap();
    assert_eq!(read_line(&mut first).await.unwrap(), "in");
    reload_to(&r, &dynamic(2, 1));
    let mut refused = TcpStream::connect(ep(port)).await.unwrap();
    assert!(read_line(&mut refused).await.unwrap().is_empty());
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut second = TcpStream::connect(ep(port)).await.unwrap();
    assert_eq!(read_line(&mut second).await.unwrap(), "in");
    // Amount 2, counted afresh: two more besides `second`.
    reload_to(&r, &dynamic(2, 2));
    let mut more = Vec::new();
    for _ in 0..2 {
        let mut conn = TcpStream::connect(ep(port)).await.unwrap();
        assert_eq!(read_line(&mut conn).await.unwrap(), "in");
        more.push(conn);
    }
    drop(second);
}

/// A reload that leaves a `circuitBreaker` as it was keeps it open; a changed breaker
/// starts closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_keep_an_open_circuit_breaker_while_it_is_unchanged() {
    use support::web::{Conn, HttpBackend};
    let backend = HttpBackend::start("app").await;
    let (web, nobody) = (free_port(), free_port());
    let dir = temp_dir("reload-breaker");
    let dynamic = |other: &str, fallback: &str| {
        format!(
            "http:\n  routers:\n    down: {{rule: \"Host(`down.test`)\", service: down, middlewares: [breaker]}}\n    other: {{rule: \"Host(`{other}`)\", service: app}}\n  middlewares:\n    breaker: {{circuitBreaker: {{expression: \"NetworkErrorRatio() > 0.5\", fallbackDuration: {fallback}}}}}\n  services:\n    down: {{loadBalancer: {{servers: [{{url: \"http://127.0.0.1:{nobody}\"}}]}}}}\n    app: {{loadBalancer: {{servers: [{{url: \"{}\"}}]}}}}\n",
            backend.url()
        )
    };
    let r = Router::start(
        &dir,
        &static_config(&dir, &[("web", web)], ""),
        &dynamic("a.test", "1m"),
        &[web],
    );
    let mut client = Conn::h1(web).await;
    assert_eq!(client.get("down.test", "/").await.status, 502);
    assert_eq!(client.get("down.test", "/").await.status, 503, "open");
    reload_to(&r, &dynamic("b.test", "1m"));
    assert_eq!(client.get("down.test", "/").await.status, 503, "still open");
    reload_to(&r, &dynamic("b.test", "2m"));
    assert_eq!(
        client.get("down.test", "/").await.status,
        502,
        "a new breaker"
    );
}

/// Round robins go on across reloads that leave their service as it was: with two servers
/// and a reload of an unrelated router before every connection, request or session, TCP
/// and UDP load balancers and HTTP `weighted` services still alternate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_keep_round_robin_positions_of_unchanged_services() {
    use support::udp::{UdpEcho, free_udp_port, udp_client};
    use support::web::{Conn, HttpBackend};
    let (tcp_a, tcp_b) = (
        Backend::echo(Some("a")).await,
        Backend::echo(Some("b")).await,
    );
    let (web_a, web_b) = (HttpBackend::start("a").await, HttpBackend::start("b").await);
    let (udp_a, udp_b) = (UdpEcho::start("a").await, UdpEcho::start("b").await);
    let (tcp, web, udp) = (free_port(), free_port(), free_udp_port());
    let dir = temp_dir("reload-positions");
    let static_yaml = format!(
        "entryPoints:\n  tcp:\n    address: \"127.0.0.1:{tcp}\"\n  web:\n    address: \"127.0.0.1:{web}\"\n  udp:\n    address: \"127.0.0.1:{udp}/udp\"\nproviders:\n  providersThrottleDuration: 100ms\n  file:\n    filename: \"{}\"\n    watch: true\nlog:\n  level: DEBUG\n",
        dir.join("dynamic.yml").display()
    );
    let dynamic = |other: usize| {
        format!(
            "tcp:\n  routers:\n    r: {{rule: \"HostSNI(`*`)\", service: pair, entryPoints: [tcp]}}\n  services:\n    pair: {{loadBalancer: {{servers: [{{address: \"{}\"}}, {{address: \"{}\"}}]}}}}\nhttp:\n  routers:\n    app: {{rule: \"Host(`app.test`)\", service: split, entryPoints: [web]}}\n    other: {{rule: \"Host(`{other}.test`)\", service: a, entryPoints: [web]}}\n  services:\n    split: {{weighted: {{services: [{{name: a, weight: 1}}, {{name: b, weight: 1}}]}}}}\n    a: {{loadBalancer: {{servers: [{{url: \"{}\"}}]}}}}\n    b: {{loadBalancer: {{servers: [{{url: \"{}\"}}]}}}}\nudp:\n  routers:\n    u: {{entryPoints: [udp], service: upair}}\n  services:\n    upair: {{loadBalancer: {{servers: [{{address: \"{}\"}}, {{address: \"{}\"}}]}}}}\n",
            tcp_a.addr,
            tcp_b.addr,
            web_a.url(),
            web_b.url(),
            udp_a.addr,
            udp_b.addr
        )
    };
    let r = Router::start(&dir, &static_yaml, &dynamic(0), &[tcp, web]);
    let (mut tcp_seen, mut web_seen, mut udp_seen) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=4 {
        reload_to(&r, &dynamic(round));
        let mut s = TcpStream::connect(ep(tcp)).await.unwrap();
        tcp_seen.push(read_line(&mut s).await.unwrap());
        let answer = Conn::h1(web).await.get("app.test", "/").await;
        web_seen.push(answer.header("x-backend").to_owned());
        let session = udp_client("127.0.0.1", udp).await;
        udp_seen.push(ask(&session, b"x").await);
    }
    let alternates = |seen: &[String]| seen.windows(2).all(|pair| pair[0] != pair[1]);
    assert!(
        alternates(&tcp_seen) && alternates(&web_seen) && alternates(&udp_seen),
        "tcp: {tcp_seen:?}, http: {web_seen:?}, udp: {udp_seen:?}"
    );
}

/// A reload that leaves a TCP service as it was keeps its health checks running: with
/// reloads more frequent than the probe interval, a server that went down is still found
/// out by the next probe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frequent_reloads_do_not_postpone_tcp_health_probes() {
    let good = Backend::echo(Some("good")).await;
    let flaky = Backend::echo(Some("flaky")).await;
    let flaky_addr = flaky.addr;
    let port = free_port();
    let dir = temp_dir("reload-probes");
    let r = Router::start(
        &dir,
        &static_config(&dir, &[("tcp", port)], ""),
        &health_checked(good.addr, flaky_addr, "1500ms", false),
        &[port],
    );
    drop(flaky);
    // Eight reloads 400 ms apart: past one interval, and each well within it.
    for round in 0..8 {
        let yaml = health_checked(good.addr, flaky_addr, "1500ms", round % 2 == 0);
        reload_to(&r, &yaml);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert!(r.count_log("is down") > 0, "never probed:\n{}", r.log());
}
