//! Access logs through the real binary: one line per TCP connection and per UDP session, in
//! the json and common formats, written by the log's own task to `accessLog.filePath`.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::udp::{UdpEcho, free_udp_port, udp_ask, udp_client};
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The lines of the access log once it has at least `n`.
fn lines(path: &Path, n: usize) -> Vec<String> {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            start.elapsed() < WAIT,
            "access log has {lines:?}, wanted {n} lines"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The router with a `tcp` entrypoint (echo for 127.0.0.1, before the client speaks), a
/// `tls` entrypoint (one TLS router for `known.test`) and a `udp` one; returns the ports of
/// the first two.
fn start(
    tag: &str,
    format: &str,
    udp_port: u16,
) -> (Router, (u16, u16), std::path::PathBuf, UdpEchoGuard) {
    let dir = temp_dir(tag);
    let tcp = free_port();
    let tls = free_port();
    let log = dir.join("access.log");
    let runtime = tokio::runtime::Handle::current();
    let echo = runtime.block_on(UdpEcho::start("game"));
    let mut static_yaml = static_config(
        &dir,
        &[("tcp", tcp), ("tls", tls)],
        &format!(
            "accessLog:\n  filePath: \"{}\"\n  format: {format}\n",
            log.display()
        ),
    );
    static_yaml = static_yaml.replacen(
        "providers:",
        &format!(
            "  udp:\n    address: \"127.0.0.1:{udp_port}/udp\"\n    udp:\n      timeout: 300ms\nproviders:"
        ),
        1,
    );
    let dynamic = format!(
        r#"
tcp:
  routers:
    echo:
      rule: "ClientIP(`127.0.0.1`)"
      entryPoints: [tcp]
      service: echo@internal
    known:
      rule: "HostSNI(`known.test`)"
      entryPoints: [tls]
      service: echo@internal
      tls: {{passthrough: true}}
udp:
  routers:
    game:
      entryPoints: [udp]
      service: game
  services:
    game:
      loadBalancer:
        servers: [{{address: "{}"}}]
"#,
        echo.addr
    );
    let router = Router::start(&dir, &static_yaml, &dynamic, &[tcp, tls]);
    (router, (tcp, tls), log, UdpEchoGuard(echo))
}

/// Keeps the UDP backend alive for the test.
struct UdpEchoGuard(#[allow(dead_code)] UdpEcho);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connections_and_udp_sessions_get_json_lines() {
    let udp_port = free_udp_port();
    let (router, (tcp, tls), log, _echo) =
        tokio::task::block_in_place(|| start("access-json", "json", udp_port));
    // A TCP connection through echo@internal: 5 bytes each way.
    let mut stream = TcpStream::connect(("127.0.0.1", tcp)).await.unwrap();
    assert_eq!(echo_roundtrip(&mut stream, "ping").await.unwrap(), "ping");
    stream.shutdown().await.unwrap();
    drop(stream);
    // A TLS connection for a name no router takes is closed and logged as such.
    let nobody = TestCert::new(&["nobody.test"]);
    let refused = tls_connect(
        std::net::SocketAddr::from(([127, 0, 0, 1], tls)),
        "nobody.test",
        &[&nobody],
        &["h2"],
    )
    .await;
    assert!(refused.is_err());
    // A UDP session that idles out after 300 ms.
    let client = udp_client("127.0.0.1", udp_port).await;
    assert_eq!(
        udp_ask(&client, b"hello").await.as_deref(),
        Some(&b"game:hello"[..])
    );
    // The readiness probe on `tcp` (opened and closed) is logged too; the one on `tls` sent
    // nothing and is not.
    let lines = tokio::task::block_in_place(|| lines(&log, 4));
    let records: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let tcp_line = records
        .iter()
        .find(|r| r["Protocol"] == "TCP" && r["RouterName"] == "echo@file" && r["BytesIn"] != 0)
        .unwrap_or_else(|| panic!("no TCP line: {lines:?}\n{}", router.log()));
    assert_eq!(tcp_line["BytesIn"], 5);
    assert_eq!(tcp_line["BytesOut"], 5);
    assert_eq!(tcp_line["ServiceName"], "echo@internal");
    assert_eq!(tcp_line["CloseReason"], "closed");
    assert_eq!(tcp_line["entryPointName"], "tcp");
    let no_route = records
        .iter()
        .find(|r| r["Protocol"] == "TCP" && r["SNI"] == "nobody.test")
        .unwrap_or_else(|| panic!("no line for the unrouted connection: {lines:?}"));
    assert_eq!(no_route["CloseReason"], "no route");
    assert_eq!(no_route["ALPN"], "h2");
    assert_eq!(no_route["RouterName"], "");
    let udp_line = records
        .iter()
        .find(|r| r["Protocol"] == "UDP")
        .unwrap_or_else(|| panic!("no UDP line: {lines:?}"));
    assert_eq!(udp_line["RouterName"], "game@file");
    assert_eq!(udp_line["BytesIn"], 5);
    assert_eq!(udp_line["BytesOut"], 10);
    assert_eq!(udp_line["CloseReason"], "idle timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn common_format_lines_for_tcp() {
    let udp_port = free_udp_port();
    let (_router, (tcp, _), log, _echo) =
        tokio::task::block_in_place(|| start("access-common", "common", udp_port));
    let mut stream = TcpStream::connect(("127.0.0.1", tcp)).await.unwrap();
    assert_eq!(echo_roundtrip(&mut stream, "abc").await.unwrap(), "abc");
    stream.shutdown().await.unwrap();
    drop(stream);
    // The router's readiness probe (a connection opened and closed) comes first.
    let lines = tokio::task::block_in_place(|| lines(&log, 2));
    let line = lines
        .iter()
        .find(|l| l.contains(" 4 4 "))
        .unwrap_or_else(|| panic!("{lines:?}"));
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert!(
        line.contains(r#""TCP - -" "closed" 4 4 "echo@file" "echo@internal""#),
        "{line}"
    );
    assert!(line.ends_with("ms"), "{line}");
}
