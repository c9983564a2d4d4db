//! The HTTP origin behind every proxy in the reverse-proxy benchmark: HTTP/1.1 with keep-alive,
//! answering every request, whatever its method, path or host, with `200 OK` and one body of a
//! fixed size. The body is built once and shared (cloning `Bytes` bumps a reference count), so
//! a request costs a parse and a write, and the backend stays far from being the bottleneck.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::sleep;

/// Pause after a failed accept (typically EMFILE) instead of spinning on it.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// A body of `size` bytes, all `x`: readable in a capture, and compressible by no proxy here.
pub fn body_of(size: usize) -> Bytes {
    Bytes::from(vec![b'x'; size])
}

/// Accepts connections and answers each request on them with `body`, until the process ends.
pub async fn serve(listener: TcpListener, body: Bytes) {
    loop {
        match listener.accept().await {
            Ok((tcp, _)) => {
                // A broken connection is the client's to count; the backend just moves on.
                tokio::spawn(answer(tcp, body.clone()));
            }
            Err(e) => {
                eprintln!("http-backend: accept: {e}");
                sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

async fn answer(tcp: TcpStream, body: Bytes) {
    // Responses go out in one write; without this a small one could wait on Nagle.
    if tcp.set_nodelay(true).is_err() {
        return;
    }
    let respond = service_fn(move |_: Request<hyper::body::Incoming>| {
        let mut response = Response::new(Full::new(body.clone()));
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        async move { Ok::<_, Infallible>(response) }
    });
    // hyper's header read timeout needs a timer, and panics without one.
    http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(tcp), respond)
        .await
        .ok();
}
