//! A recording hyper server for the `forwardAuth` tests: it keeps every request it gets
//! (method, target, headers, body) and answers what a test's `decide` function says, or
//! never answers ([`Reply::Hang`]). Plaintext (HTTP/1.1 and h2c) or TLS (h2 and http/1.1 by
//! ALPN, optionally requiring a client certificate). Serves as auth server and as backend.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::web::tls_server_config;
use super::{TestCert, WAIT};

/// One request the server received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    /// Path and query.
    pub target: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Seen {
    /// The values of `name` joined with `,`; `-` when absent.
    pub fn header(&self, name: &str) -> String {
        let values: Vec<&str> = self
            .headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or("?"))
            .collect();
        if values.is_empty() {
            "-".to_owned()
        } else {
            values.join(",")
        }
    }
}

/// What the server does with a request.
pub enum Reply {
    Answer(Response<Full<Bytes>>),
    /// Keeps the request waiting until the connection goes.
    Hang,
}

pub type Decide = fn(&Seen) -> Reply;

pub struct RecordingServer {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    tls: bool,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RecordingServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RecordingServer {
    pub async fn start(decide: Decide) -> RecordingServer {
        RecordingServer::serve(decide, None).await
    }

    /// HTTPS with `cert`; with `client_ca`, a client certificate chaining to it is required.
    pub async fn tls(
        decide: Decide,
        cert: &TestCert,
        client_ca: Option<&TestCert>,
    ) -> RecordingServer {
        let config = tls_server_config(cert, client_ca, &["h2", "http/1.1"]);
        RecordingServer::serve(decide, Some(TlsAcceptor::from(config))).await
    }

    async fn serve(decide: Decide, tls: Option<TlsAcceptor>) -> RecordingServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        let is_tls = tls.is_some();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (record, tls) = (Arc::clone(&record), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        None => serve_connection(stream, decide, record).await,
                        Some(acceptor) => {
                            if let Ok(Ok(stream)) =
                                tokio::time::timeout(WAIT, acceptor.accept(stream)).await
                            {
                                serve_connection(stream, decide, record).await;
                            }
                        }
                    }
                });
            }
        });
        RecordingServer {
            addr,
            seen,
            tls: is_tls,
            task,
        }
    }

    /// `http://addr` or `https://addr`, then `path`.
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The last request received.
    pub fn last(&self) -> Seen {
        self.seen().pop().expect("a request was received")
    }
}

async fn serve_connection<I>(io: I, decide: Decide, record: Arc<Mutex<Vec<Seen>>>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request: Request<Incoming>| {
        let record = Arc::clone(&record);
        async move {
            let (parts, body) = request.into_parts();
            let body = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let seen = Seen {
                method: parts.method,
                target: parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str().to_owned())
                    .unwrap_or_default(),
                headers: parts.headers,
                body,
            };
            let reply = decide(&seen);
            record
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(seen);
            match reply {
                Reply::Answer(response) => Ok::<_, Infallible>(response),
                Reply::Hang => std::future::pending().await,
            }
        }
    });
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(io), service)
        .await;
}
