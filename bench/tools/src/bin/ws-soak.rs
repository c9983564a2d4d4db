//! `ws-soak`: WebSocket connections held open through a proxy while something else happens
//! to it (reloads, upgrades), to tell whether any of them was cut.
//!
//! `ws-soak serve --listen ADDR` is the backend: it echoes every message.
//! `ws-soak hold --url ws://HOST:PORT/PATH --connections N --duration S` opens N connections
//! (with `--host` as the Host header when given), sends a message on each every
//! `--interval-ms` and expects its echo within `--timeout-ms`. It prints one `key=value`
//! line: opened, cut (connections that ended or failed before the end), echoes, late
//! (echoes that missed their timeout), errors (connections that could not open), and exits
//! with 1 when any connection was cut or could not open.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

#[derive(Parser)]
#[command(about = "WebSocket connections held open through a proxy, counting the ones cut")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// An echo backend.
    Serve {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Connections held open, each echoing a message every interval.
    Hold {
        /// `ws://host:port/path`: where to connect (the proxy).
        #[arg(long)]
        url: String,
        /// The Host header to send instead of the URL's.
        #[arg(long)]
        host: Option<String>,
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        connections: u32,
        /// How long to hold them, in seconds.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        #[arg(long, default_value_t = 100)]
        interval_ms: u64,
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
    },
}

#[derive(Default)]
struct Counts {
    opened: AtomicU64,
    cut: AtomicU64,
    echoes: AtomicU64,
    late: AtomicU64,
    errors: AtomicU64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    match Args::parse().command {
        Command::Serve { listen } => serve(listen).await,
        Command::Hold {
            url,
            host,
            connections,
            duration,
            interval_ms,
            timeout_ms,
        } => {
            let counts = Arc::new(Counts::default());
            let duration = Duration::from_secs(duration);
            let mut tasks = Vec::new();
            for id in 0..connections {
                let (url, host, counts) = (url.clone(), host.clone(), counts.clone());
                tasks.push(tokio::spawn(async move {
                    hold(
                        id,
                        &url,
                        host.as_deref(),
                        duration,
                        interval_ms,
                        timeout_ms,
                        &counts,
                    )
                    .await
                }));
            }
            for task in tasks {
                let _ = task.await;
            }
            let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
            println!(
                "opened={} cut={} echoes={} late={} errors={}",
                get(&counts.opened),
                get(&counts.cut),
                get(&counts.echoes),
                get(&counts.late),
                get(&counts.errors)
            );
            if get(&counts.cut) + get(&counts.errors) > 0 {
                std::process::ExitCode::FAILURE
            } else {
                std::process::ExitCode::SUCCESS
            }
        }
    }
}

async fn serve(listen: SocketAddr) -> std::process::ExitCode {
    let listener = match TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("ws-soak: cannot listen on {listen}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                return;
            };
            while let Some(Ok(message)) = ws.next().await {
                if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
                    return;
                }
            }
        });
    }
    std::process::ExitCode::SUCCESS
}

/// One connection: opens, then echoes every `interval_ms` until `duration` is over.
async fn hold(
    id: u32,
    url: &str,
    host: Option<&str>,
    duration: Duration,
    interval_ms: u64,
    timeout_ms: u64,
    counts: &Counts,
) {
    let fail = |what: &str| {
        eprintln!("ws-soak: connection {id}: {what}");
    };
    let Ok(mut request) = url.into_client_request() else {
        fail("bad URL");
        counts.errors.fetch_add(1, Ordering::Relaxed);
        return;
    };
    if let Some(host) = host.and_then(|h| HeaderValue::from_str(h).ok()) {
        request.headers_mut().insert("host", host);
    }
    let authority = request.uri().authority().map(|a| a.as_str().to_owned());
    let Some(stream) = (match authority {
        Some(authority) => TcpStream::connect(authority).await.ok(),
        None => None,
    }) else {
        fail("cannot connect");
        counts.errors.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let mut ws = match tokio_tungstenite::client_async(request, stream).await {
        Ok((ws, _)) => ws,
        Err(e) => {
            fail(&format!("handshake: {e}"));
            counts.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    counts.opened.fetch_add(1, Ordering::Relaxed);
    let end = tokio::time::Instant::now() + duration;
    let mut tick = tokio::time::interval(Duration::from_millis(interval_ms));
    let mut sequence = 0u64;
    while tokio::time::Instant::now() < end {
        tick.tick().await;
        sequence += 1;
        let text = format!("{id}:{sequence}");
        if ws.send(Message::text(text.clone())).await.is_err() {
            fail("send failed");
            counts.cut.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let deadline = Duration::from_millis(timeout_ms);
        match tokio::time::timeout(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Text(echo)))) if echo.as_str() == text => {
                counts.echoes.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Some(Ok(other))) => {
                fail(&format!("unexpected message {other:?}"));
                counts.cut.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(Some(Err(e))) => {
                fail(&format!("closed: {e}"));
                counts.cut.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(None) => {
                fail("closed by the peer");
                counts.cut.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(_) => {
                counts.late.fetch_add(1, Ordering::Relaxed);
                // The echo may still come: the next read takes it before the next one.
                match tokio::time::timeout(deadline, ws.next()).await {
                    Ok(Some(Ok(_))) => {}
                    _ => {
                        fail("no echo");
                        counts.cut.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            }
        }
    }
    let _ = ws.close(None).await;
}
