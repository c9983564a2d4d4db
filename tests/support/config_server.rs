//! A dynamic-configuration server for the HTTP provider's tests: hyper on loopback (over
//! TLS if asked), answering its current body with an `ETag` (and `304` to a matching
//! `If-None-Match`), or, when told, garbage or nothing at all.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// What the server answers.
#[derive(Clone, Debug)]
pub enum Answer {
    /// This body, with this content type, tagged by a version number.
    Config { body: String, content_type: String },
    /// A body that is no configuration.
    Garbage,
    /// Accept the request and never answer.
    Hang,
}

struct State {
    answer: Answer,
    version: usize,
}

pub struct ConfigServer {
    pub addr: SocketAddr,
    scheme: &'static str,
    state: Arc<Mutex<State>>,
    /// Requests answered `304 Not Modified`.
    pub not_modified: Arc<AtomicUsize>,
    pub requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ConfigServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ConfigServer {
    pub async fn start(json: &str) -> ConfigServer {
        ConfigServer::serve(json, None).await
    }

    /// Over TLS with `tls` (which may require client certificates): `url` is `https://`.
    pub async fn start_tls(json: &str, tls: Arc<rustls::ServerConfig>) -> ConfigServer {
        ConfigServer::serve(json, Some(tokio_rustls::TlsAcceptor::from(tls))).await
    }

    async fn serve(json: &str, tls: Option<tokio_rustls::TlsAcceptor>) -> ConfigServer {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State {
            answer: Answer::Config {
                body: json.to_owned(),
                content_type: "application/json".to_owned(),
            },
            version: 1,
        }));
        let not_modified = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (st, nm, rq) = (state.clone(), not_modified.clone(), requests.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (st, nm, rq) = (st.clone(), nm.clone(), rq.clone());
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let (st, nm, rq) = (st.clone(), nm.clone(), rq.clone());
                        async move { Ok::<_, Infallible>(answer(request, &st, &nm, &rq).await) }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = http.serve_connection(TokioIo::new(stream), service).await;
                            }
                        }
                    }
                });
            }
        });
        ConfigServer {
            addr,
            scheme,
            state,
            not_modified,
            requests,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("{}://{}/config", self.scheme, self.addr)
    }

    /// Answers `answer` from now on (a new version: a new `ETag`).
    pub fn set(&self, answer: Answer) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.answer = answer;
        state.version += 1;
    }

    pub fn set_json(&self, json: &str) {
        self.set(Answer::Config {
            body: json.to_owned(),
            content_type: "application/json".to_owned(),
        });
    }
}

async fn answer(
    request: Request<Incoming>,
    state: &Mutex<State>,
    not_modified: &AtomicUsize,
    requests: &AtomicUsize,
) -> Response<Full<Bytes>> {
    requests.fetch_add(1, Ordering::SeqCst);
    let (answer, version) = {
        let state = state.lock().unwrap_or_else(PoisonError::into_inner);
        (state.answer.clone(), state.version)
    };
    let etag = format!("\"v{version}\"");
    match answer {
        Answer::Hang => {
            std::future::pending::<()>().await;
            Response::new(Full::new(Bytes::new()))
        }
        Answer::Garbage => Response::builder()
            .header("content-type", "application/json")
            .header("etag", etag)
            .body(Full::new(Bytes::from_static(
                b"{\"http\": {\"routers\": [oops",
            )))
            .expect("response"),
        Answer::Config { body, content_type } => {
            let matches = request
                .headers()
                .get("if-none-match")
                .is_some_and(|v| v.as_bytes() == etag.as_bytes());
            if matches {
                not_modified.fetch_add(1, Ordering::SeqCst);
                return Response::builder()
                    .status(StatusCode::NOT_MODIFIED)
                    .header("etag", etag)
                    .body(Full::new(Bytes::new()))
                    .expect("response");
            }
            Response::builder()
                .header("content-type", content_type)
                .header("etag", etag)
                .body(Full::new(Bytes::from(body)))
                .expect("response")
        }
    }
}
