//! QUIC parts for the end-to-end tests: an HTTP/3 client (quinn + h3) and QUIC servers that
//! answer every stream with their name, to tell which backend a passed-through flow reached.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use h3::client::SendRequest;
use http::{Request, StatusCode};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};

use super::{TestCert, WAIT, client_config};

/// A quinn client endpoint on a port of its own, trusting `ca`, offering `alpn`.
pub fn quic_client(ca: &TestCert, alpn: &[&str]) -> quinn::Endpoint {
    quic_client_with(client_config(&[ca], alpn))
}

/// A quinn client endpoint with a TLS configuration of the test's own (a client
/// certificate, say).
pub fn quic_client_with(tls: Arc<rustls::ClientConfig>) -> quinn::Endpoint {
    let crypto = QuicClientConfig::try_from(tls).expect("QUIC client TLS");
    let mut endpoint =
        quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).expect("client endpoint");
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    endpoint
}

/// ALPN protocols that make a ClientHello too big for one Initial packet (about 2 KB, like
/// a post-quantum hello), followed by `last`, the one the server picks.
pub fn padded_alpn(last: &str) -> Vec<String> {
    let mut protocols: Vec<String> = (0..40)
        .map(|i| format!("pad-{i:02}-{}", "x".repeat(40)))
        .collect();
    protocols.push(last.to_owned());
    protocols
}

/// Connects `endpoint` to `addr` with `sni`, bounded by the tests' wait.
pub async fn quic_connect(
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
    sni: &str,
) -> Result<quinn::Connection, String> {
    let connecting = endpoint.connect(addr, sni).map_err(|e| e.to_string())?;
    match tokio::time::timeout(WAIT, connecting).await {
        Ok(connected) => connected.map_err(|e| e.to_string()),
        Err(_) => Err("handshake timed out".to_owned()),
    }
}

/// Sends `message` on a new stream and returns the whole answer.
pub async fn quic_ask(connection: &quinn::Connection, message: &[u8]) -> Result<Vec<u8>, String> {
    let exchange = async {
        let (mut send, mut recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
        send.write_all(message).await.map_err(|e| e.to_string())?;
        send.finish().map_err(|e| e.to_string())?;
        recv.read_to_end(64 * 1024).await.map_err(|e| e.to_string())
    };
    tokio::time::timeout(WAIT, exchange)
        .await
        .map_err(|_| "no answer in time".to_owned())?
}

/// A QUIC server (ALPN `sp-test`) answering each stream with `<name>:<what it read>`;
/// stopped when dropped.
pub struct QuicNamed {
    pub addr: SocketAddr,
    endpoint: quinn::Endpoint,
}

impl Drop for QuicNamed {
    fn drop(&mut self) {
        self.endpoint.close(0u32.into(), b"test over");
    }
}

impl QuicNamed {
    pub fn start(name: &'static str, cert: &TestCert) -> QuicNamed {
        let tls = cert.server_config(&["sp-test"]);
        let crypto = QuicServerConfig::try_from(tls).expect("QUIC server TLS");
        let config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let endpoint = quinn::Endpoint::server(config, SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("QUIC server");
        let addr = endpoint.local_addr().expect("QUIC server address");
        let accepting = endpoint.clone();
        tokio::spawn(async move {
            while let Some(incoming) = accepting.accept().await {
                tokio::spawn(async move {
                    let Ok(connection) = incoming.await else {
                        return;
                    };
                    while let Ok((mut send, mut recv)) = connection.accept_bi().await {
                        let Ok(read) = recv.read_to_end(64 * 1024).await else {
                            return;
                        };
                        let mut answer = format!("{name}:").into_bytes();
                        answer.extend_from_slice(&read);
                        let _ = send.write_all(&answer).await;
                        let _ = send.finish();
                    }
                });
            }
        });
        QuicNamed { addr, endpoint }
    }
}

/// An HTTP/3 connection, on an endpoint of its own.
pub struct H3Client {
    pub endpoint: quinn::Endpoint,
    pub send: SendRequest<h3_quinn::OpenStreams, Bytes>,
}

/// The h3 client's connection driver: until it is polled, the client has not read the
/// server's SETTINGS.
pub type H3Driver = h3::client::Connection<h3_quinn::Connection, Bytes>;

/// What one request gave: status, headers and the whole body.
pub type Answered = (StatusCode, http::HeaderMap, Bytes);

impl H3Client {
    /// Connects with SNI `sni` and ALPN `h3` (or the `alpn` given), trusting `ca`.
    pub async fn connect(
        addr: SocketAddr,
        sni: &str,
        ca: &TestCert,
        alpn: &[&str],
    ) -> Result<H3Client, String> {
        let alpn = if alpn.is_empty() { &["h3"] } else { alpn };
        H3Client::connect_with(addr, sni, client_config(&[ca], alpn)).await
    }

    /// With a TLS configuration of the test's own (a client certificate, say).
    pub async fn connect_with(
        addr: SocketAddr,
        sni: &str,
        tls: Arc<rustls::ClientConfig>,
    ) -> Result<H3Client, String> {
        let (client, mut driver) = H3Client::undriven(addr, sni, tls).await?;
        tokio::spawn(async move { driver.wait_idle().await });
        Ok(client)
    }

    /// The client with its driver not yet polled: its requests are not held to the limits
    /// the server's SETTINGS announce, so the server's own enforcement can be seen.
    pub async fn undriven(
        addr: SocketAddr,
        sni: &str,
        tls: Arc<rustls::ClientConfig>,
    ) -> Result<(H3Client, H3Driver), String> {
        let endpoint = quic_client_with(tls);
        let connection = quic_connect(&endpoint, addr, sni).await?;
        let (driver, send) = h3::client::new(h3_quinn::Connection::new(connection))
            .await
            .map_err(|e| e.to_string())?;
        Ok((H3Client { endpoint, send }, driver))
    }

    /// Sends `request` with `body` (in the chunks given), returns status, headers and the
    /// whole response body.
    pub async fn send(&mut self, request: Request<()>, body: &[Bytes]) -> Answered {
        self.try_send(request, body).await.expect("an answer")
    }

    /// [`H3Client::send`], with the failure (connection closed, stream reset) as a value.
    pub async fn try_send(
        &mut self,
        request: Request<()>,
        body: &[Bytes],
    ) -> Result<Answered, String> {
        let failed = |what: &str| {
            let what = what.to_owned();
            move |e: h3::error::StreamError| format!("{what}: {e}")
        };
        let mut stream = self
            .send
            .send_request(request)
            .await
            .map_err(failed("send request"))?;
        for chunk in body {
            stream
                .send_data(chunk.clone())
                .await
                .map_err(failed("send data"))?;
        }
        stream.finish().await.map_err(failed("finish"))?;
        let response = tokio::time::timeout(WAIT, stream.recv_response())
            .await
            .map_err(|_| "no response in time".to_owned())?
            .map_err(failed("response"))?;
        let mut received = BytesMut::new();
        while let Some(mut chunk) = tokio::time::timeout(WAIT, stream.recv_data())
            .await
            .map_err(|_| "no data in time".to_owned())?
            .map_err(failed("data"))?
        {
            received.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
        }
        let (parts, ()) = response.into_parts();
        Ok((parts.status, parts.headers, received.freeze()))
    }

    /// A GET of `https://<host><path>`: status and whole body.
    pub async fn get(&mut self, host: &str, path: &str) -> Result<(StatusCode, Bytes), String> {
        let request = Request::get(format!("https://{host}{path}"))
            .body(())
            .map_err(|e| e.to_string())?;
        let (status, _, body) = self.try_send(request, &[]).await?;
        Ok((status, body))
    }

    /// Moves the client to a new local port, as a NAT rebinding does: the connection goes
    /// on from the new address.
    pub fn rebind(&self) {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("new client socket");
        socket.set_nonblocking(true).expect("non-blocking");
        self.endpoint.rebind(socket).expect("rebind");
    }
}
