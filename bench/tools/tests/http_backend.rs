//! The HTTP backend against a raw HTTP/1.1 client on loopback: what wrk and the proxies get
//! back is a 200 with exactly the configured body, on a connection that stays open.

use std::net::SocketAddr;

use sallyport_bench_tools::http_backend;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

async fn start(body_size: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(http_backend::serve(
        listener,
        http_backend::body_of(body_size),
    ));
    addr
}

/// Sends one request and reads one response: the status line, the declared length and the body.
async fn exchange(conn: &mut BufReader<TcpStream>, request: &str) -> (String, usize, Vec<u8>) {
    conn.get_mut().write_all(request.as_bytes()).await.unwrap();
    let mut status = String::new();
    conn.read_line(&mut status).await.unwrap();
    let mut length = None;
    loop {
        let mut line = String::new();
        conn.read_line(&mut line).await.unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = Some(value.trim().parse::<usize>().unwrap());
        }
    }
    let length = length.expect("a content-length header");
    let mut body = vec![0; length];
    conn.read_exact(&mut body).await.unwrap();
    (status.trim_end().to_owned(), length, body)
}

#[tokio::test]
async fn every_request_gets_the_configured_body_on_one_kept_alive_connection() {
    let addr = start(65_536).await;
    let mut conn = BufReader::new(TcpStream::connect(addr).await.unwrap());
    for request in [
        "GET / HTTP/1.1\r\nHost: small.bench.test\r\n\r\n",
        "GET /any/path?q=1 HTTP/1.1\r\nHost: other.example\r\n\r\n",
        "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
    ] {
        let (status, length, body) = exchange(&mut conn, request).await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(length, 65_536);
        assert!(body.iter().all(|&b| b == b'x'));
    }
}

#[tokio::test]
async fn an_empty_body_is_declared_with_length_zero() {
    let addr = start(0).await;
    let mut conn = BufReader::new(TcpStream::connect(addr).await.unwrap());
    let (status, length, body) = exchange(&mut conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!((length, body.len()), (0, 0));
}
