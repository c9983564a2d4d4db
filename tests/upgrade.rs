//! Binary upgrade (`sallyport upgrade`, SIGUSR2) with the real binary: the sockets pass to
//! the new process, no connection attempt fails meanwhile, open connections finish in the
//! old process, and a new process that cannot start leaves the old one serving.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream as StdStream;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use support::quic::H3Client;
use support::udp::{UdpEcho, free_udp_port, udp_client};
use support::web::HttpBackend;
use support::*;

/// TCP connections on `web` are answered by `echo@internal`.
const ECHO: &str = r#"
tcp:
  routers:
    echo: {rule: "HostSNI(`*`)", entryPoints: [web], service: echo@internal}
"#;

/// A router with one TCP entrypoint `web` (graceTimeOut `grace`) and `extra` static settings.
fn start(tag: &str, grace: &str, extra: &str, dynamic: &str, tcp_ports: &[u16]) -> Router {
    let dir = temp_dir(tag);
    let port = tcp_ports[0];
    let static_yaml = static_config(&dir, &[("web", port)], "").replace(
        &format!("    address: \"127.0.0.1:{port}\"\n"),
        &format!(
            "    address: \"127.0.0.1:{port}\"\n    transport:\n      lifeCycle:\n        graceTimeOut: {grace}\n{extra}"
        ),
    );
    Router::start(&dir, &static_yaml, dynamic, tcp_ports)
}

/// The process that took over, stopped (by pid) when the test ends.
struct Successor(u32);

impl Drop for Successor {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg(self.0.to_string())
            .status();
    }
}

/// Runs `sallyport upgrade --pid` on `router`; the new process's pid, or the CLI's output.
fn upgrade(router: &Router) -> Result<Successor, String> {
    let pid = router.pid().to_string();
    let (code, out) = run_cli(&["upgrade", "--pid", &pid], &router.dir);
    if code != 0 {
        return Err(format!("exit {code}: {out}"));
    }
    out.split_whitespace()
        .find_map(|w| w.parse::<u32>().ok())
        .map(Successor)
        .ok_or_else(|| format!("no pid in {out:?}"))
}

/// One connection: connect, send a line, read it back.
fn roundtrip(port: u16) -> Result<(), String> {
    let mut s = StdStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    echo(&mut s)
}

fn echo(s: &mut StdStream) -> Result<(), String> {
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"ping\n").map_err(|e| format!("write: {e}"))?;
    let mut answer = [0u8; 5];
    s.read_exact(&mut answer)
        .map_err(|e| format!("read: {e}"))?;
    if &answer != b"ping\n" {
        return Err(format!("answer {answer:?}"));
    }
    Ok(())
}

fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn new_connections_never_fail_across_an_upgrade() {
    let port = free_port();
    let mut router = start("upgrade-loop", "2s", "", ECHO, &[port]);
    let old_pid = router.pid();
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let client = {
        let (stop, ok) = (stop.clone(), ok.clone());
        std::thread::spawn(move || {
            let mut failures = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                match roundtrip(port) {
                    Ok(()) => {
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => failures.push(e),
                }
                std::thread::sleep(Duration::from_millis(3));
            }
            failures
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let before = ok.load(Ordering::SeqCst);
    let successor = upgrade(&router).expect("upgrade");
    assert_ne!(successor.0, old_pid);
    router.wait_log("upgrade: serving; the previous process drains");
    // The old process stops accepting and exits once its connections are done.
    assert!(router.wait_exit(Duration::from_secs(10)).is_some());
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    let failures = client.join().expect("client thread");
    let total = ok.load(Ordering::SeqCst);
    assert!(failures.is_empty(), "failed connections: {failures:?}");
    assert!(
        before > 10 && total > before + 10,
        "too few connections: {before} then {total}"
    );
    assert!(process_exists(successor.0));
    roundtrip(port).expect("served by the new process");
}

#[test]
fn a_connection_opened_before_the_upgrade_works_until_the_drain_ends() {
    let port = free_port();
    let mut router = start("upgrade-long", "3s", "", ECHO, &[port]);
    let mut long = StdStream::connect(("127.0.0.1", port)).expect("connect");
    echo(&mut long).expect("before the upgrade");
    let started = Instant::now();
    let _successor = upgrade(&router).expect("upgrade");
    // Still served by the old process, which drains.
    for _ in 0..3 {
        echo(&mut long).expect("during the drain");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    // At graceTimeOut the old process closes it and exits.
    assert!(std_closed_within(&mut long, Duration::from_secs(6)));
    assert!(router.wait_exit(Duration::from_secs(5)).is_some());
    roundtrip(port).expect("served by the new process");
}

#[test]
fn a_new_binary_that_cannot_start_leaves_the_old_one_serving() {
    let port = free_port();
    let router = start("upgrade-bad", "2s", "", ECHO, &[port]);
    let static_path = router.dir.join("static.yml");
    let good = std::fs::read_to_string(&static_path).expect("static");
    std::fs::write(&static_path, format!("{good}notAKey: true\n")).expect("break static");
    let why = match upgrade(&router) {
        Ok(s) => panic!("upgraded to {} with a broken configuration", s.0),
        Err(why) => why,
    };
    assert!(why.contains("exited before it was ready"), "{why}");
    assert!(router.log().contains("upgrade failed; still serving"));
    assert!(process_exists(router.pid()));
    roundtrip(port).expect("still served by the old process");
    // The next upgrade, with the configuration fixed, goes through.
    std::fs::write(&static_path, good).expect("fix static");
    let successor = upgrade(&router).expect("upgrade");
    assert_ne!(successor.0, router.pid());
}

#[test]
fn an_upgrade_by_bare_signal_hands_over_too() {
    let port = free_port();
    let mut router = start("upgrade-signal", "1s", "", ECHO, &[port]);
    router.signal("USR2");
    router.wait_log("upgrade: serving; the previous process drains");
    let log = router.log();
    let new_pid = log
        .lines()
        .find(|l| l.contains("new_pid="))
        .and_then(|l| l.split("new_pid=").nth(1))
        .and_then(|p| p.trim().parse::<u32>().ok())
        .expect("the new pid is logged");
    let _successor = Successor(new_pid);
    assert!(router.wait_exit(Duration::from_secs(5)).is_some());
    roundtrip(port).expect("served by the new process");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udp_session_goes_on_across_an_upgrade() {
    let backend = UdpEcho::start("b").await;
    let (web, udp) = (free_port(), free_udp_port());
    let dynamic = format!(
        "{ECHO}udp:\n  routers:\n    u: {{entryPoints: [udp], service: s}}\n  services:\n    s: {{loadBalancer: {{servers: [{{address: \"{}\"}}]}}}}\n",
        backend.addr
    );
    let extra = format!("  udp:\n    address: \"127.0.0.1:{udp}/udp\"\n");
    let router =
        tokio::task::spawn_blocking(move || start("upgrade-udp", "1s", &extra, &dynamic, &[web]))
            .await
            .expect("start");
    let client = Arc::new(udp_client("127.0.0.1", udp).await);
    let answered = Arc::new(AtomicUsize::new(0));
    let receiver = {
        let (client, answered) = (client.clone(), answered.clone());
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            while client.recv(&mut buf).await.is_ok() {
                answered.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    // A datagram every 5 ms, through the upgrade.
    let upgrading = tokio::task::spawn_blocking(move || {
        std::thread::sleep(Duration::from_millis(300));
        let outcome = upgrade(&router);
        (router, outcome)
    });
    let mut sent = 0usize;
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        let _ = client.send(format!("{sent}").as_bytes()).await;
        sent += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (router, outcome) = upgrading.await.expect("upgrade thread");
    let _successor = outcome.expect("upgrade");
    // After the hand-over, the new process answers the same client on the same socket.
    let after = answered.load(Ordering::SeqCst);
    for i in 0..20 {
        let _ = client.send(format!("after{i}").as_bytes()).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let total = answered.load(Ordering::SeqCst);
    receiver.abort();
    eprintln!("UDP across an upgrade: {sent} sent, {after} answered");
    assert!(
        total >= after + 18,
        "after the upgrade: {} of 20 answered",
        total - after
    );
    assert!(
        sent - after <= sent / 10,
        "{} of {sent} datagrams lost",
        sent - after
    );
    drop(router);
}

/// Under systemd (`Type=notify`, `NotifyAccess=all`), each process says it is ready and
/// is the main process, so the old one's exit does not end the service.
#[test]
fn systemd_learns_each_new_main_pid() {
    let dir = temp_dir("upgrade-notify");
    let socket_path = dir.join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&socket_path).expect("bind notify socket");
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let port = free_port();
    let static_yaml = static_config(&dir, &[("web", port)], "");
    std::fs::write(dir.join("static.yml"), static_yaml).expect("static");
    std::fs::write(dir.join("dynamic.yml"), ECHO).expect("dynamic");
    let socket_env = socket_path.to_string_lossy().into_owned();
    let router = Router::start_with_env(
        std::path::Path::new("."),
        &dir.join("static.yml"),
        &dir,
        &[port],
        &[("NOTIFY_SOCKET", socket_env.as_str())],
    );
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("first notification");
    assert_eq!(
        String::from_utf8_lossy(&buf[..n]),
        format!("READY=1\nMAINPID={}\n", router.pid())
    );
    let successor = upgrade(&router).expect("upgrade");
    let n = notify
        .recv(&mut buf)
        .expect("notification of the new process");
    assert_eq!(
        String::from_utf8_lossy(&buf[..n]),
        format!("READY=1\nMAINPID={}\n", successor.0)
    );
}

/// One HTTP/1.1 keep-alive client: requests one after another on one connection, a new
/// one only when the router says `Connection: close`. Returns the answers and the failures.
fn keep_alive_client(port: u16, stop: &AtomicBool) -> (usize, Vec<String>) {
    use std::io::BufRead;
    let (mut answered, mut failures) = (0, Vec::new());
    let mut conn: Option<std::io::BufReader<StdStream>> = None;
    while !stop.load(Ordering::SeqCst) {
        let outcome = (|| -> Result<bool, String> {
            if conn.is_none() {
                let s =
                    StdStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
                s.set_read_timeout(Some(Duration::from_secs(5)))
                    .map_err(|e| e.to_string())?;
                conn = Some(std::io::BufReader::new(s));
            }
            let Some(reader) = conn.as_mut() else {
                return Err("no connection".into());
            };
            reader
                .get_mut()
                .write_all(b"GET /k HTTP/1.1\r\nHost: site.test\r\n\r\n")
                .map_err(|e| format!("write: {e}"))?;
            let (mut length, mut close, mut status) = (0usize, false, String::new());
            loop {
                let mut line = String::new();
                if reader
                    .read_line(&mut line)
                    .map_err(|e| format!("read: {e}"))?
                    == 0
                {
                    return Err("closed before the answer".into());
                }
                let line = line.trim_end().to_ascii_lowercase();
                if line.is_empty() {
                    break;
                }
                if status.is_empty() {
                    status = line;
                } else if let Some(v) = line.strip_prefix("content-length:") {
                    length = v.trim().parse().map_err(|_| format!("length {v}"))?;
                } else if line == "connection: close" {
                    close = true;
                }
            }
            let mut body = vec![0u8; length];
            reader
                .read_exact(&mut body)
                .map_err(|e| format!("body: {e}"))?;
            if !status.starts_with("http/1.1 200") {
                return Err(format!("status {status}"));
            }
            Ok(close)
        })();
        match outcome {
            Ok(close) => {
                answered += 1;
                if close {
                    conn = None;
                }
            }
            Err(e) => {
                failures.push(e);
                conn = None;
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    (answered, failures)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_http_requests_never_fail_across_an_upgrade() {
    let backend = support::web::HttpBackend::start("b").await;
    let port = free_port();
    let dynamic = format!(
        "http:\n  routers:\n    r: {{rule: \"Host(`site.test`)\", service: s}}\n  services:\n    s: {{loadBalancer: {{servers: [{{url: \"{}\"}}]}}}}\n",
        backend.url()
    );
    let mut router =
        tokio::task::spawn_blocking(move || start("upgrade-http", "2s", "", &dynamic, &[port]))
            .await
            .expect("start");
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || keep_alive_client(port, &stop))
        })
        .collect();
    let (router, successor) = tokio::task::spawn_blocking(move || {
        std::thread::sleep(Duration::from_millis(300));
        let successor = upgrade(&router).expect("upgrade");
        assert!(
            router.wait_exit(Duration::from_secs(10)).is_some(),
            "the old process exits"
        );
        std::thread::sleep(Duration::from_millis(300));
        (router, successor)
    })
    .await
    .expect("upgrade");
    stop.store(true, Ordering::SeqCst);
    let mut answered = 0;
    for client in clients {
        let (n, failures) = client.join().expect("client thread");
        assert!(failures.is_empty(), "failed requests: {failures:?}");
        answered += n;
    }
    assert!(answered > 100, "only {answered} answers");
    drop((router, successor));
}

/// The router with `websecure` (TLS, `http3`, graceTimeOut 5 s) routing `site.test` to
/// `backend`. The file provider does not watch: a process reads `dynamic.yml` once, at its
/// start, so a new configuration written before an upgrade tells the processes apart.
fn start_h3(dir: &std::path::Path, backend: &HttpBackend, cert: &TestCert) -> (Router, u16) {
    let port = free_port();
    let static_yaml = format!(
        "entryPoints:\n  websecure:\n    address: \"127.0.0.1:{port}\"\n    http3: {{}}\n    transport:\n      lifeCycle:\n        graceTimeOut: 5s\nproviders:\n  file:\n    filename: \"{}\"\n    watch: false\nlog:\n  level: DEBUG\n",
        dir.join("dynamic.yml").display()
    );
    let router = Router::start(dir, &static_yaml, &h3_dynamic(dir, backend, cert), &[port]);
    router.wait_log("listening (HTTP/3)");
    (router, port)
}

/// `site.test` routed to `backend`, with the certificate of `cert`.
fn h3_dynamic(dir: &std::path::Path, backend: &HttpBackend, cert: &TestCert) -> String {
    let (crt, key) = cert.write(dir, "site");
    format!(
        "http:\n  routers:\n    site:\n      rule: \"Host(`site.test`)\"\n      entryPoints: [websecure]\n      service: app\n      tls: {{}}\n  services:\n    app:\n      loadBalancer:\n        servers:\n          - url: \"{}\"\ntls:\n  certificates:\n    - certFile: \"{}\"\n      keyFile: \"{}\"\n",
        backend.url(),
        crt.display(),
        key.display()
    )
}

/// A GET of `https://site.test<path>`: status and body. The server may answer and stop the
/// request stream (H3_NO_ERROR) before the client's end of stream leaves, so a refused end of
/// stream is no failure: the answer decides.
async fn h3_get(client: &mut H3Client, path: &str) -> (u16, Vec<u8>) {
    let request = http::Request::get(format!("https://site.test{path}"))
        .body(())
        .expect("request");
    let mut stream = client.send.send_request(request).await.expect("send");
    let _ = stream.finish().await;
    let response = tokio::time::timeout(WAIT, stream.recv_response())
        .await
        .expect("response in time")
        .expect("response");
    let mut body = Vec::new();
    while let Some(mut chunk) = tokio::time::timeout(WAIT, stream.recv_data())
        .await
        .expect("body in time")
        .expect("body")
    {
        body.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
    }
    (response.status().as_u16(), body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http3_request_in_flight_completes_across_an_upgrade() {
    let dir = temp_dir("upgrade-h3");
    let cert = TestCert::new(&["site.test"]);
    let (old_backend, new_backend) = (
        HttpBackend::start("old").await,
        HttpBackend::start("new").await,
    );
    let (router, port) = start_h3(&dir, &old_backend, &cert);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut client = H3Client::connect(addr, "site.test", &cert, &[])
        .await
        .expect("QUIC handshake");
    assert_eq!(
        h3_get(&mut client, "/before").await,
        (200, b"old /before".to_vec())
    );

    // A request whose body is half sent: the rest can only reach the old process (which
    // holds the connection's keys) through the new one, which receives every datagram.
    let request = http::Request::post("https://site.test/echo")
        .body(())
        .expect("request");
    let mut stream = client.send.send_request(request).await.expect("send");
    stream
        .send_data(Bytes::from_static(b"sent before, "))
        .await
        .expect("first half");
    let response = tokio::time::timeout(WAIT, stream.recv_response())
        .await
        .expect("response head in time")
        .expect("response head");
    assert_eq!(response.status().as_u16(), 200);

    // The new process reads its configuration at start: it routes to the new backend.
    std::fs::write(
        dir.join("dynamic.yml"),
        h3_dynamic(&dir, &new_backend, &cert),
    )
    .expect("write dynamic");
    let (router, successor) = tokio::task::spawn_blocking(move || {
        let outcome = upgrade(&router);
        (router, outcome)
    })
    .await
    .expect("upgrade thread");
    let _successor = successor.expect("upgrade");

    stream
        .send_data(Bytes::from_static(b"sent after"))
        .await
        .expect("second half");
    stream.finish().await.expect("finish");
    let mut echoed = Vec::new();
    loop {
        match tokio::time::timeout(WAIT, stream.recv_data()).await {
            Ok(Ok(Some(mut chunk))) => {
                echoed.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()))
            }
            Ok(Ok(None)) => break,
            Ok(Err(e)) => panic!("the request in flight failed after {echoed:?}: {e}"),
            Err(_) => panic!("the request in flight stalled after {echoed:?}"),
        }
    }
    assert_eq!(echoed, b"sent before, sent after");

    // The next request goes on a new connection, to the new process.
    let mut next = H3Client::connect(addr, "site.test", &cert, &[])
        .await
        .expect("QUIC handshake with the new process");
    assert_eq!(
        h3_get(&mut next, "/after").await,
        (200, b"new /after".to_vec())
    );

    // The old process exits once its connection is done, and says what it was forwarded.
    drop((stream, client));
    let mut router = router;
    assert!(router.wait_exit(Duration::from_secs(10)).is_some());
    router.wait_log("upgrade: HTTP/3 packets the new process forwarded");
}
