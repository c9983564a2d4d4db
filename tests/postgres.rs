//! Postgres STARTTLS (SSLRequest) routing by SNI, in termination and passthrough modes.

mod support;

use std::net::SocketAddr;

use rustls::pki_types::ServerName;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends the SSLRequest, expects `S`, then starts TLS with `sni`.
async fn starttls(
    port: u16,
    sni: &str,
    roots: &[&TestCert],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut tcp = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    tcp.write_all(&PG_SSL_REQUEST).await?;
    let mut answer = [0u8; 1];
    tokio::time::timeout(WAIT, tcp.read_exact(&mut answer)).await??;
    assert_eq!(&answer, b"S", "the router answers the SSLRequest itself");
    let connector = tokio_rustls::TlsConnector::from(client_config(roots, &[]));
    let name = ServerName::try_from(sni.to_string()).map_err(std::io::Error::other)?;
    tokio::time::timeout(WAIT, connector.connect(name, tcp)).await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sslrequest_terminated_and_passed_through() {
    let front = TestCert::new(&["db-term.test"]);
    let backend_cert = TestCert::new(&["db-pass.test"]);
    let plain_pg = Backend::echo(Some("plaintext backend")).await;
    let tls_pg = Backend::postgres_tls("pg-tls", &backend_cert).await;
    let port = free_port();
    let dir = temp_dir("postgres");
    let (c, k) = front.write(&dir, "front");
    let dynamic = format!(
        r#"
tcp:
  routers:
    term:
      rule: "HostSNI(`db-term.test`)"
      service: plain
      tls: {{}}
    pass:
      rule: "HostSNI(`db-pass.test`)"
      service: tlspg
      tls: {{passthrough: true}}
  services:
    plain: {{loadBalancer: {{servers: [{{address: "{}"}}]}}}}
    tlspg: {{loadBalancer: {{servers: [{{address: "{}"}}]}}}}
tls:
  certificates: [{{certFile: "{}", keyFile: "{}"}}]
"#,
        plain_pg.addr,
        tls_pg.addr,
        c.display(),
        k.display()
    );
    let _r = Router::start(
        &dir,
        &static_config(&dir, &[("pg", port)], ""),
        &dynamic,
        &[port],
    );

    // Termination: the router's certificate, plaintext to the backend.
    let mut s = starttls(port, "db-term.test", &[&front])
        .await
        .expect("terminated");
    assert_eq!(read_line(&mut s).await.unwrap(), "plaintext backend");
    assert_eq!(echo_roundtrip(&mut s, "startup").await.unwrap(), "startup");

    // Passthrough: the SSLRequest is replayed to the backend, its `S` swallowed, and
    // the client completes TLS with the backend's own certificate.
    let mut s = starttls(port, "db-pass.test", &[&backend_cert])
        .await
        .expect("passthrough");
    assert_eq!(read_line(&mut s).await.unwrap(), "hello from pg-tls");
    assert_eq!(echo_roundtrip(&mut s, "query").await.unwrap(), "query");
    assert_eq!(tls_pg.accepted(), 1);
}
