//! h3-load's client against a small HTTP/3 server on loopback: what it counts for a response
//! (status, body bytes) is what the server sent, and certificate trust works both ways.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode, Uri};
use quinn::crypto::rustls::QuicServerConfig;
use sallyport_bench_tools::h3::{self, Answer, Connection, Failure, Trust};
use sallyport_bench_tools::{pki, tls};

const NAME: &str = "h3.sallyport.test";
const LIMIT: Duration = Duration::from_secs(5);
const BODY_BYTES: usize = 100_000;

/// An HTTP/3 server answering `/` with a 200 of [`BODY_BYTES`] bytes (in two DATA frames) and
/// anything else with a 404 of 9 bytes; and the file of the CA that issued its certificate.
struct Server {
    addr: SocketAddr,
    ca: PathBuf,
    _endpoint: quinn::Endpoint,
}

impl Server {
    fn start(test: &str) -> Server {
        let identity = pki::generate(&[NAME.to_owned()]).unwrap();
        let ca = ca_file(test, &identity.ca_pem);
        let mut tls = tls::server_config(identity).unwrap();
        tls.alpn_protocols = vec![b"h3".to_vec()];
        let crypto = QuicServerConfig::try_from(tls).unwrap();
        let config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let endpoint =
            quinn::Endpoint::server(config, SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let addr = endpoint.local_addr().unwrap();
        let accepting = endpoint.clone();
        tokio::spawn(async move {
            while let Some(incoming) = accepting.accept().await {
                tokio::spawn(async move {
                    let Ok(quic) = incoming.await else { return };
                    let Ok(mut h3) =
                        ::h3::server::Connection::<_, Bytes>::new(h3_quinn::Connection::new(quic))
                            .await
                    else {
                        return;
                    };
                    while let Ok(Some(resolver)) = h3.accept().await {
                        tokio::spawn(async move {
                            let (request, mut stream) = resolver.resolve_request().await.unwrap();
                            let half = Bytes::from(vec![b'x'; BODY_BYTES / 2]);
                            let (status, chunks) = if request.uri().path() == "/" {
                                (StatusCode::OK, vec![half.clone(), half])
                            } else {
                                (
                                    StatusCode::NOT_FOUND,
                                    vec![Bytes::from_static(b"not found")],
                                )
                            };
                            let head = Response::builder().status(status).body(()).unwrap();
                            stream.send_response(head).await.unwrap();
                            for chunk in chunks {
                                stream.send_data(chunk).await.unwrap();
                            }
                            stream.finish().await.unwrap();
                        });
                    }
                });
            }
        });
        Server {
            addr,
            ca,
            _endpoint: endpoint,
        }
    }

    async fn connect(&self, trust: Trust<'_>) -> Result<Connection, Failure> {
        let config = h3::client_config(trust).unwrap();
        Connection::open(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            self.addr,
            NAME,
            &config,
            LIMIT,
        )
        .await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        std::fs::remove_file(&self.ca).ok();
    }
}

fn ca_file(test: &str, pem: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "sallyport-bench-h3-{}-{test}.pem",
        std::process::id()
    ));
    std::fs::write(&path, pem).unwrap();
    path
}

fn uri(path: &str) -> Uri {
    format!("https://{NAME}{path}").parse().unwrap()
}

#[tokio::test]
async fn a_get_reports_the_status_and_every_body_byte() {
    let server = Server::start("get");
    let connection = server.connect(Trust::Ca(&server.ca)).await.unwrap();
    let mut send = connection.sender();

    let ok = h3::get(&mut send, &uri("/"), LIMIT).await.unwrap();
    assert_eq!((ok.status, ok.body_bytes), (200, BODY_BYTES as u64));
    let missing = h3::get(&mut send, &uri("/missing"), LIMIT).await.unwrap();
    assert_eq!((missing.status, missing.body_bytes), (404, 9));
    // Requests from several tasks share the connection.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let mut send = connection.sender();
        tasks.spawn(async move { h3::get(&mut send, &uri("/"), LIMIT).await });
    }
    while let Some(done) = tasks.join_next().await {
        let Answer { status, .. } = done.unwrap().unwrap();
        assert_eq!(status, 200);
    }
    assert!(!connection.is_closed());
    connection.close().await;
}

#[tokio::test]
async fn a_certificate_from_another_ca_fails_the_connection_unless_any_is_accepted() {
    let server = Server::start("trust");
    let other = pki::generate(&[NAME.to_owned()]).unwrap();
    let other_ca = ca_file("trust-other", &other.ca_pem);

    let refused = server.connect(Trust::Ca(&other_ca)).await;
    std::fs::remove_file(&other_ca).ok();
    assert_eq!(refused.err(), Some(Failure::Connect));

    let connection = server.connect(Trust::AnyCertificate).await.unwrap();
    let answer = h3::get(&mut connection.sender(), &uri("/"), LIMIT)
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
}

#[tokio::test]
async fn a_server_that_never_answers_is_a_timeout() {
    // A bound socket that never answers: the handshake cannot complete.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let config = h3::client_config(Trust::AnyCertificate).unwrap();
    let outcome = Connection::open(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        silent.local_addr().unwrap(),
        NAME,
        &config,
        Duration::from_millis(300),
    )
    .await;
    assert_eq!(outcome.err(), Some(Failure::Timeout));
}
