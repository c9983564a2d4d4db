//! The client side of the HTTP/3 benchmark (`h3-load`): QUIC connections made with quinn, GET
//! requests sent over them with h3, and what a run counts. A request is timed from opening its
//! stream to the last byte of the response body; the body is counted, not kept.
//!
//! Each [`Connection`] has a quinn endpoint (a UDP socket) of its own, as separate clients
//! would: a shared endpoint would put every connection's datagrams through one socket and one
//! driver task, which is the load generator's bottleneck, not the proxy's.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use h3::client::SendRequest;
use http::{Request, Uri};
use quinn::crypto::rustls::QuicClientConfig;
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::time::timeout;

use crate::Error;
use crate::stats::nearest_rank;
use crate::tls::AnyCertificate;

/// Which server certificates the client accepts.
pub enum Trust<'a> {
    /// Those issued by a CA certificate in this PEM file.
    Ca(&'a Path),
    /// Any certificate (the benchmark's is self-signed); handshake signatures are still
    /// checked, so the server must hold the key of the certificate it sends.
    AnyCertificate,
}

/// A QUIC client configuration offering ALPN `h3`, TLS 1.3 with the tools' provider (X25519).
pub fn client_config(trust: Trust<'_>) -> Result<quinn::ClientConfig, Error> {
    let provider = crate::tls::provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let mut tls = match trust {
        Trust::Ca(path) => {
            let mut roots = RootCertStore::empty();
            let pem_error = |source| Error::Pem {
                path: path.to_owned(),
                source,
            };
            for cert in CertificateDer::pem_file_iter(path).map_err(pem_error)? {
                roots.add(cert.map_err(pem_error)?)?;
            }
            if roots.is_empty() {
                return Err(Error::NoCertificate {
                    path: path.to_owned(),
                });
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::AnyCertificate => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate {
                provider,
                check_signatures: true,
            }))
            .with_no_client_auth(),
    };
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let quic = QuicClientConfig::try_from(tls).map_err(|e| Error::Quic(e.to_string()))?;
    Ok(quinn::ClientConfig::new(Arc::new(quic)))
}

/// Why a request, or the connection it needed, did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The QUIC handshake or the HTTP/3 setup failed (refused, bad certificate, no `h3`).
    Connect,
    /// The request stream was reset or the connection broke before the body ended.
    Stream,
    /// A 2xx response whose body was not of the expected size.
    Body,
    /// The request, or the connection attempt, took longer than the time-out.
    Timeout,
    /// Not a failure: the connection had received the server's GOAWAY, or the server
    /// rejected the request unprocessed (H3_REQUEST_REJECTED), so the request goes on a new
    /// connection, as a browser would send it. Counted apart from the errors.
    GoingAway,
    /// Not answered, but not lost in the server either: the server closed the connection
    /// gracefully (H3_NO_ERROR), which a server does after its GOAWAY once every request it
    /// accepted is answered; so this one, sent before the GOAWAY arrived, was not processed
    /// and a browser sends it again on a new connection. Counted apart from the errors.
    Unprocessed,
}

impl Failure {
    pub const ALL: [Failure; 6] = [
        Failure::Connect,
        Failure::Stream,
        Failure::Body,
        Failure::Timeout,
        Failure::GoingAway,
        Failure::Unprocessed,
    ];

    /// Whether a browser would send the request again on a new connection: the server
    /// did not process it.
    pub fn resent(self) -> bool {
        matches!(self, Failure::GoingAway | Failure::Unprocessed)
    }

    pub fn label(self) -> &'static str {
        match self {
            Failure::Connect => "connect",
            Failure::Stream => "stream",
            Failure::Body => "body",
            Failure::Timeout => "timeout",
            Failure::GoingAway => "goaway",
            Failure::Unprocessed => "unprocessed",
        }
    }
}

/// A response read to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body_bytes: u64,
    pub latency: Duration,
}

/// One HTTP/3 connection, ready for requests from any number of tasks.
pub struct Connection {
    endpoint: quinn::Endpoint,
    quic: quinn::Connection,
    send: SendRequest<h3_quinn::OpenStreams, Bytes>,
}

impl Connection {
    /// Binds a UDP socket of its own on `local` (port 0), makes the QUIC handshake with `sni`
    /// and sets up HTTP/3, all within `limit`.
    pub async fn open(
        local: SocketAddr,
        server: SocketAddr,
        sni: &str,
        config: &quinn::ClientConfig,
        limit: Duration,
    ) -> Result<Connection, Failure> {
        let endpoint = quinn::Endpoint::client(local).map_err(|_| Failure::Connect)?;
        let connecting = endpoint
            .connect_with(config.clone(), server, sni)
            .map_err(|_| Failure::Connect)?;
        let setup = async {
            let quic = connecting.await.map_err(|_| Failure::Connect)?;
            let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(quic.clone()))
                .await
                .map_err(|_| Failure::Connect)?;
            // The driver reads the server's control stream (SETTINGS, GOAWAY); it ends with
            // the connection.
            tokio::spawn(async move { driver.wait_idle().await });
            Ok((quic, send))
        };
        let (quic, send) = timeout(limit, setup)
            .await
            .unwrap_or(Err(Failure::Timeout))?;
        Ok(Connection {
            endpoint,
            quic,
            send,
        })
    }

    /// A handle to send requests on this connection from another task.
    pub fn sender(&self) -> SendRequest<h3_quinn::OpenStreams, Bytes> {
        self.send.clone()
    }

    /// Whether the connection has closed (by either side, or by a transport error).
    pub fn is_closed(&self) -> bool {
        self.quic.close_reason().is_some()
    }

    /// Closes with H3_NO_ERROR and waits (briefly) for the server to hear it, so it frees
    /// the connection now rather than after its idle time-out.
    pub async fn close(self) {
        self.quic.close(quinn::VarInt::from_u32(0x100), b"");
        timeout(Duration::from_secs(1), self.endpoint.wait_idle())
            .await
            .ok();
    }
}

/// Sends `GET uri` on `send` and reads the whole response within `limit`.
pub async fn get(
    send: &mut SendRequest<h3_quinn::OpenStreams, Bytes>,
    uri: &Uri,
    limit: Duration,
) -> Result<Answer, Failure> {
    let start = Instant::now();
    let exchange = async {
        let request = Request::get(uri.clone())
            .body(())
            .map_err(|_| Failure::Stream)?;
        let mut stream = send.send_request(request).await.map_err(stream_failure)?;
        stream.finish().await.map_err(stream_failure)?;
        let response = stream.recv_response().await.map_err(stream_failure)?;
        let mut body_bytes = 0u64;
        while let Some(chunk) = stream.recv_data().await.map_err(|_| Failure::Stream)? {
            body_bytes += chunk.remaining() as u64;
        }
        Ok(Answer {
            status: response.status().as_u16(),
            body_bytes,
            latency: start.elapsed(),
        })
    };
    timeout(limit, exchange)
        .await
        .unwrap_or(Err(Failure::Timeout))
}

/// A request that did not complete, told apart from one the server did not take because it
/// is going away (which a client sends again on a new connection).
fn stream_failure(error: h3::error::StreamError) -> Failure {
    match error {
        h3::error::StreamError::RemoteClosing { .. } => Failure::GoingAway,
        h3::error::StreamError::RemoteTerminate { code, .. }
            if code == h3::error::Code::H3_REQUEST_REJECTED =>
        {
            Failure::GoingAway
        }
        _ if error.is_h3_no_error() => Failure::Unprocessed,
        _ => Failure::Stream,
    }
}

/// What a run (or one task of it) counted.
#[derive(Debug, Default)]
pub struct Counts {
    /// Latency of every response received, 2xx or not.
    latencies_us: Vec<u64>,
    non2xx: u64,
    body_bytes: u64,
    failures: [u64; Failure::ALL.len()],
    /// Connections opened again after one closed or broke (the first of each is not one).
    reconnects: u64,
}

impl Counts {
    /// Counts one request's outcome. With `expect_bytes`, a 2xx response with a body of
    /// another size is a [`Failure::Body`] (its latency is still recorded: it was answered).
    pub fn record(&mut self, outcome: Result<Answer, Failure>, expect_bytes: Option<u64>) {
        match outcome {
            Ok(answer) => {
                self.latencies_us
                    .push(u64::try_from(answer.latency.as_micros()).unwrap_or(u64::MAX));
                self.body_bytes += answer.body_bytes;
                if !(200..300).contains(&answer.status) {
                    self.non2xx += 1;
                } else if expect_bytes.is_some_and(|want| want != answer.body_bytes) {
                    self.failures[Failure::Body as usize] += 1;
                }
            }
            Err(failure) => self.failures[failure as usize] += 1,
        }
    }

    pub fn merge(&mut self, other: Counts) {
        self.latencies_us.extend(other.latencies_us);
        self.non2xx += other.non2xx;
        self.body_bytes += other.body_bytes;
        for (mine, theirs) in self.failures.iter_mut().zip(other.failures) {
            *mine += theirs;
        }
        self.reconnects += other.reconnects;
    }

    /// Counts a connection opened to replace one that closed or broke.
    pub fn reconnected(&mut self) {
        self.reconnects += 1;
    }

    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }

    /// Responses received, whatever their status.
    pub fn responses(&self) -> u64 {
        self.latencies_us.len() as u64
    }

    pub fn non2xx(&self) -> u64 {
        self.non2xx
    }

    pub fn body_bytes(&self) -> u64 {
        self.body_bytes
    }

    /// Requests that failed: every [`Failure`] but those a browser sends again.
    pub fn errors(&self) -> u64 {
        self.failures()
            .filter(|(f, _)| !f.resent())
            .map(|(_, n)| n)
            .sum()
    }

    pub fn failures(&self) -> impl Iterator<Item = (Failure, u64)> + '_ {
        Failure::ALL.into_iter().zip(self.failures)
    }

    /// Sorts the samples once and reads the given percentiles (in microseconds) from them.
    pub fn percentiles_us<const N: usize>(&mut self, ps: [f64; N]) -> [Option<u64>; N] {
        self.latencies_us.sort_unstable();
        ps.map(|p| nearest_rank(&self.latencies_us, p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body_bytes: u64, micros: u64) -> Result<Answer, Failure> {
        Ok(Answer {
            status,
            body_bytes,
            latency: Duration::from_micros(micros),
        })
    }

    #[test]
    fn counts_non_2xx_and_wrong_sizes_apart_from_failures() {
        let mut a = Counts::default();
        a.record(answer(200, 64, 10), Some(64));
        a.record(answer(404, 19, 20), Some(64));
        a.record(answer(200, 10, 30), Some(64));
        let mut b = Counts::default();
        b.record(Err(Failure::Stream), Some(64));
        b.record(answer(200, 64, 40), Some(64));
        a.merge(b);

        assert_eq!(a.responses(), 4);
        assert_eq!(a.non2xx(), 1);
        assert_eq!(a.body_bytes(), 64 + 19 + 10 + 64);
        let failures: Vec<_> = a.failures().filter(|(_, n)| *n > 0).collect();
        assert_eq!(failures, [(Failure::Stream, 1), (Failure::Body, 1)]);
        assert_eq!(a.errors(), 2);
        assert_eq!(a.percentiles_us([50.0, 100.0]), [Some(20), Some(40)]);
    }

    #[test]
    fn requests_refused_by_a_server_going_away_are_not_errors() {
        let mut counts = Counts::default();
        counts.record(Err(Failure::GoingAway), None);
        counts.record(Err(Failure::Unprocessed), None);
        counts.record(Err(Failure::Timeout), None);
        counts.reconnected();
        let mut other = Counts::default();
        other.reconnected();
        counts.merge(other);
        assert_eq!(counts.errors(), 1);
        assert_eq!(counts.reconnects(), 2);
    }

    #[test]
    fn any_body_size_passes_without_an_expected_size() {
        let mut counts = Counts::default();
        counts.record(answer(200, 1, 5), None);
        assert_eq!(counts.errors(), 0);
    }
}
