//! The backend and the client against each other on loopback: what the benchmark counts as a
//! success, and as each kind of failure, is what really happens on the wire.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::HandshakeKind;
use rustls_pki_types::ServerName;
use sallyport_bench_tools::client::{Failure, Target};
use sallyport_bench_tools::tls::{self, Handshake, Trust};
use sallyport_bench_tools::{backend, pki};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const NAME: &str = "bench.sallyport.test";

/// A running backend and the CA file a client needs to trust it.
struct Backend {
    addr: SocketAddr,
    ca: PathBuf,
}

impl Backend {
    async fn start(test: &str) -> Backend {
        let identity = pki::generate(&[NAME.to_owned()]).unwrap();
        let ca =
            std::env::temp_dir().join(format!("sallyport-bench-{}-{test}.pem", std::process::id()));
        std::fs::write(&ca, &identity.ca_pem).unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(tls::server_config(identity).unwrap()));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(backend::serve(listener, acceptor));
        Backend { addr, ca }
    }

    fn connector(&self, handshake: Handshake) -> TlsConnector {
        TlsConnector::from(Arc::new(
            tls::client_config(Trust::Ca(&self.ca), handshake, false).unwrap(),
        ))
    }

    fn target(&self, addr: SocketAddr, sni: &str, handshake: Handshake) -> Target {
        Target::new(addr, sni, self.connector(handshake), Duration::from_secs(5)).unwrap()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        std::fs::remove_file(&self.ca).ok();
    }
}

#[tokio::test]
async fn both_handshake_kinds_deliver_the_greeting() {
    let backend = Backend::start("greeting").await;
    for handshake in [Handshake::Full, Handshake::Resumed] {
        let target = backend.target(backend.addr, NAME, handshake);
        for _ in 0..3 {
            assert!(target.connect_to_greeting().await.is_ok(), "{handshake:?}");
        }
    }
}

#[tokio::test]
async fn a_greeted_connection_says_whether_it_resumed() {
    let backend = Backend::start("greeted-kind").await;
    let target = backend.target(backend.addr, NAME, Handshake::Resumed);
    let first = target.connect_to_greeting().await.unwrap();
    let second = target.connect_to_greeting().await.unwrap();
    assert!(!first.resumed);
    assert!(second.resumed);
}

#[tokio::test]
async fn a_client_that_verifies_nothing_still_gets_the_greeting() {
    let backend = Backend::start("insecure").await;
    let config = tls::client_config(Trust::Nothing, Handshake::Full, false).unwrap();
    let target = Target::new(
        backend.addr,
        NAME,
        TlsConnector::from(Arc::new(config)),
        Duration::from_secs(5),
    )
    .unwrap();
    assert!(!target.connect_to_greeting().await.unwrap().resumed);
}

#[tokio::test]
async fn resumed_mode_really_resumes_and_full_mode_never_does() {
    let backend = Backend::start("resumption").await;
    let mut kinds = Vec::new();
    for handshake in [Handshake::Resumed, Handshake::Full] {
        let connector = backend.connector(handshake);
        for _ in 0..2 {
            let tcp = TcpStream::connect(backend.addr).await.unwrap();
            let name = ServerName::try_from(NAME).unwrap();
            let tls = connector.connect(name, tcp).await.unwrap();
            kinds.push(tls.get_ref().1.handshake_kind());
        }
    }
    let (full, resumed) = (Some(HandshakeKind::Full), Some(HandshakeKind::Resumed));
    assert_eq!(kinds, [full, resumed, full, full]);
}

#[tokio::test]
async fn a_name_the_certificate_does_not_cover_fails_the_handshake() {
    let backend = Backend::start("wrong-name").await;
    let target = backend.target(backend.addr, "other.sallyport.test", Handshake::Full);
    assert_eq!(target.connect_to_greeting().await, Err(Failure::Handshake));
}

#[tokio::test]
async fn a_peer_that_closes_before_the_handshake_is_a_handshake_failure() {
    // What a proxy with no route for the SNI does.
    let backend = Backend::start("closing-peer").await;
    let closer = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closer.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = closer.accept().await {
            drop(tcp);
        }
    });
    let target = backend.target(addr, NAME, Handshake::Resumed);
    assert_eq!(target.connect_to_greeting().await, Err(Failure::Handshake));
}

#[tokio::test]
async fn nothing_listening_is_a_connect_failure() {
    let backend = Backend::start("no-listener").await;
    let unused = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = unused.local_addr().unwrap();
    drop(unused);
    let target = backend.target(addr, NAME, Handshake::Resumed);
    assert_eq!(target.connect_to_greeting().await, Err(Failure::Connect));
}
