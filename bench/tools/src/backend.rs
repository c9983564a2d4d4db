//! The TLS backend: completes the handshake, writes [`GREETING`] at once, then waits for the
//! client to hang up. [`serve_plain`] does the same without TLS, for proxies that terminate
//! it. It counts nothing; the load generator does the counting.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{sleep, timeout};
use tokio_rustls::TlsAcceptor;

use crate::GREETING;

/// Bounds a handshake that a broken proxy leaves hanging, so such connections cannot pile up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a greeted client may keep the connection before the backend drops it.
const LINGER: Duration = Duration::from_secs(30);
/// Pause after a failed accept (typically EMFILE) instead of spinning on it.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// Accepts and greets connections until the process ends.
pub async fn serve(listener: TcpListener, acceptor: TlsAcceptor) {
    loop {
        match listener.accept().await {
            Ok((tcp, _)) => {
                let acceptor = acceptor.clone();
                // A failed connection is the client's to count; the backend just moves on.
                tokio::spawn(async move { greet(acceptor, tcp).await.ok() });
            }
            Err(e) => {
                eprintln!("tls-backend: accept: {e}");
                sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Accepts plain TCP connections and greets them at once: the origin behind proxies that
/// terminate TLS themselves, so that only their handshakes are measured.
pub async fn serve_plain(listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((tcp, _)) => {
                tokio::spawn(async move { greet_plain(tcp).await.ok() });
            }
            Err(e) => {
                eprintln!("tls-backend: accept: {e}");
                sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

async fn greet_plain(mut tcp: TcpStream) -> io::Result<()> {
    tcp.set_nodelay(true)?;
    tcp.write_all(GREETING).await?;
    linger(&mut tcp).await
}

async fn greet(acceptor: TlsAcceptor, tcp: TcpStream) -> io::Result<()> {
    tcp.set_nodelay(true)?;
    let mut tls = timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
    tls.write_all(GREETING).await?;
    tls.flush().await?;
    linger(&mut tls).await
}

/// Lets the client close first, as a client that got what it came for does; the backend then
/// holds no TIME_WAIT entries and its teardown is the same through every proxy.
async fn linger(stream: &mut (impl AsyncRead + Unpin)) -> io::Result<()> {
    let mut sink = [0u8; 256];
    timeout(LINGER, async {
        while stream.read(&mut sink).await? != 0 {}
        Ok::<_, io::Error>(())
    })
    .await
    .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
}
