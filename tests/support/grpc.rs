//! gRPC parts for the end-to-end tests: a real gRPC backend (tonic's server-side protocol
//! handling, served by hyper over h2c or TLS) and a real tonic client over one hyper HTTP/2
//! connection (h2c, or TLS with h2 by ALPN).
//!
//! No `.proto` file nor protoc: the message types are written by hand with prost's derive,
//! and the methods are tonic services called through `tonic::server::Grpc` and
//! `tonic::client::Grpc` with `tonic_prost::ProstCodec`.
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use http::uri::PathAndQuery;
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::server::{Grpc, ServerStreamingService, StreamingService, UnaryService};
use tonic::{Status, Streaming};
use tonic_prost::ProstCodec;

use super::web::tls_server_config;
use super::{TestCert, WAIT, client_config};

/// `test.Greeter/Say` takes a `Greeting` and answers one; `test.Greeter/Count` answers
/// `count` greetings in a stream; `test.Greeter/Chat` answers each greeting of a stream as it
/// arrives; `grpc.health.v1.Health/Check` is the standard health service, answering what
/// [`GrpcBackend::set_serving`] says.
const SAY: &str = "/test.Greeter/Say";
const COUNT: &str = "/test.Greeter/Count";
const CHAT: &str = "/test.Greeter/Chat";
const HEALTH: &str = "/grpc.health.v1.Health/Check";

/// The text that makes the backend fail: `Say` answers NOT_FOUND at once (a trailers-only
/// response), `Count` sends its greetings and then RESOURCE_EXHAUSTED in the trailers.
pub const FAIL: &str = "fail";

/// The one message of the test service.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Greeting {
    #[prost(string, tag = "1")]
    pub text: String,
    #[prost(uint32, tag = "2")]
    pub count: u32,
}

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    pub service: String,
}

/// `grpc.health.v1.HealthCheckResponse`; `status` is the `ServingStatus` enum.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    pub status: i32,
}

const SERVING: i32 = 1;
const NOT_SERVING: i32 = 2;

/// A gRPC backend that runs until dropped. Its answers name it.
pub struct GrpcBackend {
    pub addr: SocketAddr,
    serving: Arc<AtomicBool>,
    health_checks: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GrpcBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GrpcBackend {
    /// HTTP/2 with prior knowledge: the router reaches it as `h2c://`.
    pub async fn h2c(name: &'static str) -> GrpcBackend {
        GrpcBackend::serve(name, None).await
    }

    /// HTTP/2 over TLS with `cert` (ALPN h2): the router reaches it as `https://`.
    pub async fn tls(name: &'static str, cert: &TestCert) -> GrpcBackend {
        let acceptor = TlsAcceptor::from(tls_server_config(cert, None, &["h2"]));
        GrpcBackend::serve(name, Some(acceptor)).await
    }

    async fn serve(name: &'static str, tls: Option<TlsAcceptor>) -> GrpcBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let serving = Arc::new(AtomicBool::new(true));
        let health_checks = Arc::new(AtomicUsize::new(0));
        let health = Health {
            serving: serving.clone(),
            checks: health_checks.clone(),
        };
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (tls, health) = (tls.clone(), health.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let health = health.clone();
                        async move { Ok::<_, Infallible>(route(name, health, req).await) }
                    });
                    let builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                    match tls {
                        None => {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                        Some(acceptor) => {
                            let Ok(Ok(stream)) =
                                tokio::time::timeout(WAIT, acceptor.accept(stream)).await
                            else {
                                return;
                            };
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        GrpcBackend {
            addr,
            serving,
            health_checks,
            task,
        }
    }

    /// What the health service answers: SERVING or NOT_SERVING.
    pub fn set_serving(&self, serving: bool) {
        self.serving.store(serving, Ordering::SeqCst);
    }

    /// How many health checks it answered.
    pub fn health_checks(&self) -> usize {
        self.health_checks.load(Ordering::SeqCst)
    }
}

async fn route(
    name: &'static str,
    health: Health,
    req: Request<Incoming>,
) -> Response<tonic::body::Body> {
    let mut grpc = Grpc::new(ProstCodec::<Greeting, Greeting>::default());
    match req.uri().path() {
        SAY => grpc.unary(Say(name), req).await,
        COUNT => grpc.server_streaming(Count(name), req).await,
        CHAT => grpc.streaming(Chat(name), req).await,
        HEALTH => {
            let mut grpc =
                Grpc::new(ProstCodec::<HealthCheckResponse, HealthCheckRequest>::default());
            grpc.unary(health, req).await
        }
        _ => Status::unimplemented("no such method").into_http(),
    }
}

#[derive(Clone)]
struct Health {
    serving: Arc<AtomicBool>,
    checks: Arc<AtomicUsize>,
}

impl UnaryService<HealthCheckRequest> for Health {
    type Response = HealthCheckResponse;
    type Future = Ready<Result<tonic::Response<HealthCheckResponse>, Status>>;

    fn call(&mut self, _: tonic::Request<HealthCheckRequest>) -> Self::Future {
        self.checks.fetch_add(1, Ordering::SeqCst);
        let status = if self.serving.load(Ordering::SeqCst) {
            SERVING
        } else {
            NOT_SERVING
        };
        ready(Ok(tonic::Response::new(HealthCheckResponse { status })))
    }
}

struct Say(&'static str);

impl UnaryService<Greeting> for Say {
    type Response = Greeting;
    type Future = Ready<Result<tonic::Response<Greeting>, Status>>;

    fn call(&mut self, request: tonic::Request<Greeting>) -> Self::Future {
        let greeting = request.into_inner();
        ready(if greeting.text == FAIL {
            Err(Status::not_found(format!(
                "{} has no greeting for {FAIL}",
                self.0
            )))
        } else {
            Ok(tonic::Response::new(Greeting {
                text: format!("{} greets {}", self.0, greeting.text),
                count: 1,
            }))
        })
    }
}

struct Count(&'static str);

type Greetings = tokio_stream::Iter<std::vec::IntoIter<Result<Greeting, Status>>>;

impl ServerStreamingService<Greeting> for Count {
    type Response = Greeting;
    type ResponseStream = Greetings;
    type Future = Ready<Result<tonic::Response<Greetings>, Status>>;

    fn call(&mut self, request: tonic::Request<Greeting>) -> Self::Future {
        let greeting = request.into_inner();
        let mut items: Vec<Result<Greeting, Status>> = (1..=greeting.count)
            .map(|n| {
                Ok(Greeting {
                    text: format!("{} counts {n} for {}", self.0, greeting.text),
                    count: n,
                })
            })
            .collect();
        if greeting.text == FAIL {
            items.push(Err(Status::resource_exhausted(format!(
                "{} counted enough",
                self.0
            ))));
        }
        ready(Ok(tonic::Response::new(tokio_stream::iter(items))))
    }
}

struct Chat(&'static str);

type Replies = Pin<Box<dyn Stream<Item = Result<Greeting, Status>> + Send>>;

impl StreamingService<Greeting> for Chat {
    type Response = Greeting;
    type ResponseStream = Replies;
    type Future = Ready<Result<tonic::Response<Replies>, Status>>;

    fn call(&mut self, request: tonic::Request<Streaming<Greeting>>) -> Self::Future {
        let name = self.0;
        let replies = request.into_inner().map(move |greeting| {
            greeting.map(|g| Greeting {
                text: format!("{name} answers {}", g.text),
                count: g.count,
            })
        });
        ready(Ok(tonic::Response::new(Box::pin(replies) as Replies)))
    }
}

/// One HTTP/2 connection as the tower service tonic's client sends its requests through.
#[derive(Clone)]
pub struct H2Channel(http2::SendRequest<tonic::body::Body>);

impl tower_service::Service<Request<tonic::body::Body>> for H2Channel {
    type Response = Response<Incoming>;
    type Error = hyper::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Incoming>, hyper::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), hyper::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.0.send_request(request))
    }
}

/// A tonic client of `test.Greeter` over one HTTP/2 connection to the router.
pub struct GrpcClient {
    grpc: tonic::client::Grpc<H2Channel>,
}

impl GrpcClient {
    /// h2c (prior knowledge) to `port`, calling `http://<authority>`.
    pub async fn h2c(port: u16, authority: &str) -> GrpcClient {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        GrpcClient::over(TokioIo::new(stream), &format!("http://{authority}")).await
    }

    /// TLS with SNI `authority`, trusting `ca`, h2 by ALPN, calling `https://<authority>`.
    pub async fn tls(port: u16, authority: &str, ca: &TestCert) -> GrpcClient {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let connector = tokio_rustls::TlsConnector::from(client_config(&[ca], &["h2"]));
        let name = rustls_pki_types::ServerName::try_from(authority.to_owned()).expect("name");
        let tls = tokio::time::timeout(WAIT, connector.connect(name, stream))
            .await
            .expect("handshake in time")
            .expect("handshake");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        GrpcClient::over(TokioIo::new(tls), &format!("https://{authority}")).await
    }

    async fn over<I>(io: I, origin: &str) -> GrpcClient
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (sender, conn) = http2::handshake(TokioExecutor::new(), io)
            .await
            .expect("h2 handshake");
        tokio::spawn(conn);
        let origin: Uri = origin.parse().expect("origin");
        GrpcClient {
            grpc: tonic::client::Grpc::with_origin(H2Channel(sender), origin),
        }
    }

    /// Calls `Say(text)`.
    pub async fn say(&mut self, text: &str) -> Result<Greeting, Status> {
        let call = async {
            self.grpc
                .ready()
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            let request = tonic::Request::new(Greeting {
                text: text.to_owned(),
                count: 0,
            });
            let path = PathAndQuery::from_static(SAY);
            self.grpc
                .unary(request, path, ProstCodec::default())
                .await
                .map(tonic::Response::into_inner)
        };
        tokio::time::timeout(WAIT, call)
            .await
            .unwrap_or_else(|_| Err(Status::deadline_exceeded("no answer in time")))
    }

    /// Calls `Chat` and sends `texts` one at a time, each only once the answer to the one
    /// before has come back (so a proxy that holds the request stream back stalls it); then
    /// ends the request stream. Returns the answers and how the response stream ended.
    pub async fn chat(&mut self, texts: &[&str]) -> (Vec<String>, Result<(), Status>) {
        let mut answers = Vec::new();
        let call = async {
            self.grpc
                .ready()
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            let (tx, rx) = mpsc::channel(1);
            let send = |text: &str| {
                tx.try_send(Greeting {
                    text: text.to_owned(),
                    count: 0,
                })
                .map_err(|e| Status::internal(e.to_string()))
            };
            let mut texts = texts.iter();
            if let Some(first) = texts.next() {
                send(first)?;
            }
            let request = tonic::Request::new(ReceiverStream::new(rx));
            let path = PathAndQuery::from_static(CHAT);
            let mut replies: Streaming<Greeting> = self
                .grpc
                .streaming(request, path, ProstCodec::default())
                .await?
                .into_inner();
            for text in texts {
                match replies.message().await? {
                    Some(reply) => answers.push(reply.text),
                    None => return Ok(()),
                }
                send(text)?;
            }
            drop(tx);
            while let Some(reply) = replies.message().await? {
                answers.push(reply.text);
            }
            Ok(())
        };
        let end = tokio::time::timeout(WAIT, call)
            .await
            .unwrap_or_else(|_| Err(Status::deadline_exceeded("no end in time")));
        (answers, end)
    }

    /// Calls `Count(text, count)`: the greetings streamed back, then how the stream ended.
    pub async fn count(&mut self, text: &str, count: u32) -> (Vec<Greeting>, Result<(), Status>) {
        let mut received = Vec::new();
        let call = async {
            self.grpc
                .ready()
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            let request = tonic::Request::new(Greeting {
                text: text.to_owned(),
                count,
            });
            let path = PathAndQuery::from_static(COUNT);
            let mut stream = self
                .grpc
                .server_streaming(request, path, ProstCodec::default())
                .await?
                .into_inner();
            while let Some(greeting) = stream.message().await? {
                received.push(greeting);
            }
            Ok(())
        };
        let end = tokio::time::timeout(WAIT, call)
            .await
            .unwrap_or_else(|_| Err(Status::deadline_exceeded("no end in time")));
        (received, end)
    }
}
