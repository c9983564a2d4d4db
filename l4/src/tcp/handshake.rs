//! The TLS handshakes an entrypoint terminates take turns for their crypto.
//!
//! A full handshake costs the server one key exchange and one signature, computed inside a
//! single poll of the connection's task (the ClientHello is already read by the dispatch).
//! Under a flood of new connections, hundreds of such polls would queue on the runtime's
//! workers ahead of the requests of established connections. The [`HandshakeGate`] lets at
//! most `limit` handshakes of an entrypoint do their crypto at once (one per worker thread by
//! default), and each admitted handshake first yields, so the runtime looks at the network
//! before spending its slice: established connections are served *between* two handshakes
//! rather than behind all of them. Handshakes beyond the limit wait, cheaply (a semaphore
//! waiter, no task in the run queue), within the handshake timeout; one still waiting then
//! is closed with a log line.
//!
//! The permit is released as soon as the handshake waits on its client (the server's flight
//! is written), so a client that stalls after its ClientHello holds no permit and cannot
//! starve the others. Owns only this turn-taking: routing, and what a failed handshake
//! means for the connection, stay with the dispatch.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a TLS handshake we terminate may take once the ClientHello is in, its wait for
/// a turn included (Go's default TLS handshake timeout, which Traefik inherits, is 10 s).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The handshake never got its turn: other handshakes held every permit until the
    /// timeout.
    #[error("not started within {0:?}: all {1} handshake turns of the entrypoint stayed taken")]
    Busy(Duration, usize),
    #[error("timed out after {0:?}")]
    TimedOut(Duration),
    #[error(transparent)]
    Tls(std::io::Error),
}

/// The turns of one entrypoint's TLS handshakes.
#[derive(Debug)]
pub struct HandshakeGate {
    permits: Semaphore,
    limit: usize,
    timeout: Duration,
}

impl HandshakeGate {
    /// At most `limit` handshakes (at least one) doing their crypto at once; `timeout`
    /// bounds each handshake, its wait for a turn included.
    pub fn new(limit: usize, timeout: Duration) -> Self {
        let limit = limit.max(1);
        HandshakeGate {
            permits: Semaphore::new(limit),
            limit,
            timeout,
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Completes the server side of a TLS handshake on `io` (whose ClientHello is ready to
    /// read), in turn with the entrypoint's other handshakes.
    pub async fn accept<IO>(
        &self,
        acceptor: &TlsAcceptor,
        io: IO,
    ) -> Result<TlsStream<IO>, HandshakeError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let deadline = Instant::now() + self.timeout;
        let permit = match tokio::time::timeout_at(deadline, self.permits.acquire()).await {
            Ok(Ok(permit)) => permit,
            // The semaphore is never closed; a closed one would admit nobody either.
            Ok(Err(_)) | Err(_) => return Err(HandshakeError::Busy(self.timeout, self.limit)),
        };
        // Whatever became ready on the network while this handshake waited runs first.
        tokio::task::yield_now().await;
        let turn = Turn {
            accept: acceptor.accept(io),
            permit: Some(permit),
        };
        match tokio::time::timeout_at(deadline, turn).await {
            Ok(result) => result.map_err(HandshakeError::Tls),
            Err(_) => Err(HandshakeError::TimedOut(self.timeout)),
        }
    }
}

/// A handshake holding its turn until it first waits on the client.
struct Turn<'a, F> {
    accept: F,
    permit: Option<SemaphorePermit<'a>>,
}

impl<F: Future + Unpin> Future for Turn<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let poll = Pin::new(&mut self.accept).poll(cx);
        if poll.is_pending() {
            // The crypto is done and the server's flight written: the rest is the client's.
            self.permit = None;
        }
        poll
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls_pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use tokio_rustls::TlsConnector;

    use crate::tcp::testing::tls_pair;

    /// A loopback connection, accepted: (server side, client side).
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (server, client)
    }

    /// Runs a client handshake and one echoed line over it.
    async fn client_roundtrip(connector: TlsConnector, tcp: TcpStream) -> std::io::Result<Vec<u8>> {
        let name = ServerName::try_from("gate.test").unwrap();
        let mut tls = connector.connect(name, tcp).await?;
        tls.write_all(b"ping").await?;
        let mut answer = vec![0u8; 4];
        tls.read_exact(&mut answer).await?;
        Ok(answer)
    }

    async fn serve_echo(gate: Arc<HandshakeGate>, acceptor: TlsAcceptor, tcp: TcpStream) {
        if let Ok(mut tls) = gate.accept(&acceptor, tcp).await {
            let mut buf = [0u8; 4];
            if tls.read_exact(&mut buf).await.is_ok() {
                let _ = tls.write_all(&buf).await;
            }
        }
    }

    #[tokio::test]
    async fn handshakes_beyond_the_limit_wait_for_a_turn_and_then_complete() {
        let gate = Arc::new(HandshakeGate::new(1, Duration::from_secs(10)));
        let (acceptor, connector) = tls_pair("gate.test");
        // Every turn taken: the handshake must not start (the client hears nothing).
        let held = gate.permits.acquire().await.unwrap();
        let (server, client) = pair().await;
        tokio::spawn(serve_echo(gate.clone(), acceptor, server));
        let mut handshake = tokio::spawn(client_roundtrip(connector.clone(), client));
        let early = tokio::time::timeout(Duration::from_millis(300), &mut handshake).await;
        assert!(early.is_err(), "the handshake ran without a turn");
        drop(held);
        let answer = tokio::time::timeout(Duration::from_secs(5), handshake)
            .await
            .expect("the waiting handshake completes once a turn is free")
            .unwrap()
            .unwrap();
        assert_eq!(answer, b"ping");
        assert_eq!(gate.permits.available_permits(), 1);
    }

    #[tokio::test]
    async fn a_handshake_that_never_gets_a_turn_is_refused_at_the_timeout() {
        let gate = HandshakeGate::new(1, Duration::from_millis(200));
        let (acceptor, connector) = tls_pair("gate.test");
        let _held = gate.permits.acquire().await.unwrap();
        let (server, client) = pair().await;
        let _client = tokio::spawn(client_roundtrip(connector.clone(), client));
        let started = std::time::Instant::now();
        let result = gate.accept(&acceptor, server).await;
        assert!(
            matches!(result, Err(HandshakeError::Busy(_, 1))),
            "{result:?}"
        );
        assert!(started.elapsed() >= Duration::from_millis(200));
    }

    #[tokio::test]
    async fn a_client_stalled_after_its_hello_holds_no_turn() {
        let gate = Arc::new(HandshakeGate::new(1, Duration::from_secs(10)));
        let (acceptor, connector) = tls_pair("gate.test");
        // A client that sends its ClientHello and then nothing (it never reads the
        // server's flight, so it never sends its Finished).
        let (stalled_server, mut stalled_client) = pair().await;
        let name = ServerName::try_from("gate.test").unwrap();
        let mut hello = Vec::new();
        rustls::ClientConnection::new(connector.config().clone(), name)
            .unwrap()
            .write_tls(&mut hello)
            .unwrap();
        stalled_client.write_all(&hello).await.unwrap();
        let stalled = tokio::spawn({
            let (gate, acceptor) = (gate.clone(), acceptor.clone());
            async move { gate.accept(&acceptor, stalled_server).await.is_ok() }
        });
        // Its server flight is written once it had its turn; the turn is then free.
        let mut first = [0u8; 1];
        stalled_client.read_exact(&mut first).await.unwrap();
        let (server, client) = pair().await;
        tokio::spawn(serve_echo(gate.clone(), acceptor, server));
        let answer = tokio::time::timeout(
            Duration::from_secs(5),
            client_roundtrip(connector.clone(), client),
        )
        .await
        .expect("a handshake completes while another client stalls")
        .unwrap();
        assert_eq!(answer, b"ping");
        assert!(!stalled.is_finished());
    }
}
