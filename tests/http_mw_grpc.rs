//! The gRPC middleware end to end (`grpcWeb`): the real binary on loopback between a
//! hand-written gRPC-Web client over HTTP/1.1 and a real tonic gRPC server over h2c.

mod support;

use ::http::StatusCode;
use support::grpc::{FAIL, Greeting, GrpcBackend, GrpcClient};
use support::grpc_web::{COUNT, GrpcWebClient, Mode, SAY};
use support::*;

const APP: &str = "https://app.test";

/// A router for `grpc.test` through `grpcWeb` (allowing [`APP`]) to a tonic server over h2c.
async fn start(tag: &str) -> (GrpcBackend, Router, u16) {
    let backend = GrpcBackend::h2c("a").await;
    let dir = temp_dir(tag);
    let port = free_port();
    let dynamic = format!(
        r#"
http:
  routers:
    grpc:
      rule: "Host(`grpc.test`)"
      service: greeter
      middlewares: [web]
  middlewares:
    web:
      grpcWeb:
        allowOrigins: ["{APP}"]
  services:
    greeter:
      loadBalancer:
        servers: [{{ url: "h2c://{}" }}]
"#,
        backend.addr
    );
    let router = Router::start(
        &dir,
        &static_config(&dir, &[("web", port)], ""),
        &dynamic,
        &[port],
    );
    (backend, router, port)
}

fn greeting(text: &str, count: u32) -> Greeting {
    Greeting {
        text: text.to_owned(),
        count,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_calls_in_binary_and_text_mode_reach_the_grpc_server() {
    let (_backend, _router, port) = start("mw-grpc-web-unary").await;
    let mut client = GrpcWebClient::connect(port).await;

    // tonic answers `application/grpc`, which becomes the gRPC-Web type of the call's mode.
    for (mode, content_type) in [
        (Mode::Binary, "application/grpc-web"),
        (Mode::Text, "application/grpc-web-text"),
    ] {
        let answer = client
            .call("grpc.test", SAY, mode, APP, greeting("web", 0))
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{mode:?}");
        assert_eq!(answer.header("content-type"), content_type);
        assert_eq!(answer.header("access-control-allow-origin"), APP);
        assert_eq!(answer.header("access-control-allow-credentials"), "true");
        let exposed = answer.header("access-control-expose-headers");
        assert!(
            exposed.contains("grpc-status") && exposed.contains("grpc-message"),
            "{exposed}"
        );
        assert_eq!(
            answer.messages,
            [Greeting {
                text: "a greets web".into(),
                count: 1
            }]
        );
        assert_eq!(answer.trailer("grpc-status"), Some("0"), "{mode:?}");
    }

    // Plain gRPC over HTTP/2 through the same router is left alone.
    let mut grpc = GrpcClient::h2c(port, "grpc.test").await;
    let reply = grpc.say("plain").await.expect("gRPC call");
    assert_eq!(reply.text, "a greets plain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_come_back_as_grpc_status_and_message() {
    let (_backend, _router, port) = start("mw-grpc-web-fail").await;
    let mut client = GrpcWebClient::connect(port).await;

    // Trailers-Only: the status is in the headers, the body only an empty trailer frame.
    for mode in [Mode::Binary, Mode::Text] {
        let answer = client
            .call("grpc.test", SAY, mode, APP, greeting(FAIL, 0))
            .await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.header("grpc-status"), "5");
        // gRPC percent-encodes messages.
        assert_eq!(
            answer.header("grpc-message"),
            "a%20has%20no%20greeting%20for%20fail"
        );
        assert!(answer.messages.is_empty());
        assert!(answer.trailers.is_empty(), "{:?}", answer.trailers);
    }

    // A status after messages comes in the trailer frame.
    let answer = client
        .call("grpc.test", COUNT, Mode::Binary, APP, greeting(FAIL, 2))
        .await;
    assert_eq!(answer.messages.len(), 2);
    assert_eq!(answer.header("grpc-status"), "-");
    assert_eq!(answer.trailer("grpc-status"), Some("8"));
    assert_eq!(answer.trailer("grpc-message"), Some("a%20counted%20enough"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_streaming_messages_arrive_in_order_before_the_trailer_frame() {
    let (_backend, _router, port) = start("mw-grpc-web-stream").await;
    let mut client = GrpcWebClient::connect(port).await;
    for mode in [Mode::Binary, Mode::Text] {
        let answer = client
            .call("grpc.test", COUNT, mode, APP, greeting("sheep", 3))
            .await;
        let counted: Vec<(u32, &str)> = answer
            .messages
            .iter()
            .map(|g| (g.count, g.text.as_str()))
            .collect();
        assert_eq!(
            counted,
            [
                (1, "a counts 1 for sheep"),
                (2, "a counts 2 for sheep"),
                (3, "a counts 3 for sheep"),
            ]
        );
        assert_eq!(answer.trailer("grpc-status"), Some("0"), "{mode:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_bodies_stream_through_the_translation() {
    let (_backend, _router, port) = start("mw-grpc-web-chat").await;
    for mode in [Mode::Binary, Mode::Text] {
        let mut client = GrpcWebClient::connect(port).await;
        let (replies, trailers) = client
            .chat("grpc.test", mode, &["one", "two", "three"])
            .await;
        assert_eq!(
            replies,
            ["a answers one", "a answers two", "a answers three"],
            "{mode:?}"
        );
        assert_eq!(trailers, [("grpc-status".to_owned(), "0".to_owned())]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflights_are_answered_at_the_edge_and_granted_to_allowed_origins_only() {
    let (_backend, _router, port) = start("mw-grpc-web-cors").await;
    let mut client = GrpcWebClient::connect(port).await;

    let (status, headers) = client.preflight("grpc.test", APP).await;
    assert_eq!(status, StatusCode::OK);
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    assert_eq!(header("access-control-allow-origin"), Some(APP));
    assert_eq!(header("access-control-allow-methods"), Some("POST"));
    assert_eq!(
        header("access-control-allow-headers"),
        Some("Content-Type, X-Grpc-Web, X-User-Agent, Grpc-Timeout")
    );
    assert_eq!(header("access-control-max-age"), Some("600"));

    let (status, headers) = client.preflight("grpc.test", "https://evil.test").await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers.get("access-control-allow-origin").is_none());
    assert!(headers.get("access-control-allow-headers").is_none());

    // A call from that origin is still translated, without a grant the browser would honour.
    let answer = client
        .call(
            "grpc.test",
            SAY,
            Mode::Binary,
            "https://evil.test",
            greeting("x", 0),
        )
        .await;
    assert_eq!(answer.trailer("grpc-status"), Some("0"));
    assert_eq!(answer.header("access-control-allow-origin"), "-");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_body_that_is_not_base64_is_refused_with_400() {
    let (_backend, _router, port) = start("mw-grpc-web-bad").await;
    let mut client = GrpcWebClient::connect(port).await;
    let request = ::http::Request::post(SAY)
        .header("host", "grpc.test")
        .header("content-type", "application/grpc-web-text")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"AAAAAA*=",
        )))
        .expect("request");
    let (status, _, _) = client.send(request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
