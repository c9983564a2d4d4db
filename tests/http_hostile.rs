//! Hostile input against the HTTP entrypoints, end to end: the real binary on loopback, raw
//! TCP clients that send malformed HTTP/1.1 and abusive HTTP/2 frames, and backends that
//! misbehave. Every case asserts its outcome (a status, or a closed connection) within a
//! bounded wait, then that the router logged no panic and still serves a normal request.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ::http::StatusCode;
use support::web::{Conn, HttpBackend, get};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long a raw exchange waits for the router to answer and close.
const RAW_WAIT: Duration = Duration::from_secs(5);

/// A router with one `web` entrypoint whose routers send `site.test` and `other.test` to two
/// hyper backends, plus any extra `host → url` routes a test needs.
struct Site {
    router: Router,
    port: u16,
    site: HttpBackend,
    other: HttpBackend,
}

impl Site {
    /// `entrypoint` is YAML for the `web` entrypoint, indented by four spaces.
    async fn start(tag: &str, entrypoint: &str, extra: &[(&str, String)]) -> Site {
        let (site, other) = tokio::join!(HttpBackend::start("site"), HttpBackend::start("other"));
        let dir = temp_dir(tag);
        let port = free_port();
        let static_yaml = format!(
            "entryPoints:\n  web:\n    address: \"127.0.0.1:{port}\"\n{entrypoint}providers:\n  file:\n    filename: \"{}\"\nlog:\n  level: DEBUG\n",
            dir.join("dynamic.yml").display()
        );
        let mut routes = vec![("site.test", site.url()), ("other.test", other.url())];
        routes.extend(extra.iter().cloned());
        let mut routers = String::new();
        let mut services = String::new();
        for (i, (host, url)) in routes.iter().enumerate() {
            routers.push_str(&format!(
                "    r{i}:\n      rule: \"Host(`{host}`)\"\n      service: s{i}\n"
            ));
            services.push_str(&format!(
                "    s{i}: {{ loadBalancer: {{ servers: [{{ url: \"{url}\" }}] }} }}\n"
            ));
        }
        let dynamic = format!("http:\n  routers:\n{routers}  services:\n{services}");
        let router = Router::start(&dir, &static_yaml, &dynamic, &[port]);
        Site {
            router,
            port,
            site,
            other,
        }
    }

    /// The router has not panicked, and answers a normal HTTP/1.1 and h2c request on fresh
    /// connections.
    async fn assert_still_serving(&self) {
        let log = self.router.log();
        assert!(!log.contains("panicked"), "the router panicked:\n{log}");
        let mut h1 = Conn::h1(self.port).await;
        let answer = h1.get("site.test", "/after").await;
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (StatusCode::OK, "site /after")
        );
        let mut h2 = Conn::h2c(self.port).await;
        assert_eq!(h2.get("site.test", "/").await.status, StatusCode::OK);
    }
}

/// What the router sent back on a raw connection, and whether it closed it.
#[derive(Debug)]
struct Reply {
    bytes: Vec<u8>,
    closed: bool,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// The status of every response in the reply, in order.
    fn statuses(&self) -> Vec<u16> {
        let text = self.text();
        text.match_indices("HTTP/1.")
            .filter(|(at, _)| *at == 0 || text[..*at].ends_with('\n'))
            .filter_map(|(at, _)| text.get(at + 9..at + 12)?.parse().ok())
            .collect()
    }
}

/// Sends `request` as raw bytes and reads until the router closes, at most [`RAW_WAIT`]. The
/// write runs beside the read, so a router that answers and closes early is still heard.
async fn raw_exchange(port: u16, request: &[u8]) -> Reply {
    let stream = tokio::time::timeout(WAIT, TcpStream::connect(("127.0.0.1", port)))
        .await
        .expect("connect in time")
        .expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (mut read, mut write) = stream.into_split();
    let request = request.to_vec();
    let writer = tokio::spawn(async move {
        // The router may close before it has read everything: that is an outcome, not an error.
        let _ = write.write_all(&request).await;
        write
    });
    let reply = read_until_closed(&mut read, RAW_WAIT).await;
    writer.abort();
    reply
}

async fn read_until_closed<R: tokio::io::AsyncRead + Unpin>(
    read: &mut R,
    within: Duration,
) -> Reply {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + within;
    let closed = loop {
        match tokio::time::timeout_at(deadline, read.read(&mut chunk)).await {
            Err(_) => break false,
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => bytes.extend_from_slice(&chunk[..n]),
        }
    };
    Reply { bytes, closed }
}

/// Asserts the router answered exactly one `status` and closed the connection.
fn assert_rejected(reply: &Reply, status: u16) {
    assert_eq!(reply.statuses(), vec![status], "reply: {}", reply.text());
    assert!(reply.closed, "the connection stayed open: {}", reply.text());
}

// ---------------------------------------------------------------------------------------
// HTTP/1.1 request smuggling and malformed framing

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_is_read_as_chunked_then_closed() {
    let site = Site::start("hostile-cl-te", "", &[]).await;
    // Read by Content-Length (6 bytes: "3\r\nabc"), the rest would be a second request; read
    // as chunked (RFC 9112 §6.3: Transfer-Encoding wins), the body is "abc" and what follows
    // is a smuggled request, which must never reach a backend.
    let reply = raw_exchange(
        site.port,
        b"POST /echo HTTP/1.1\r\nHost: site.test\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: site.test\r\n\r\n",
    )
    .await;
    assert_eq!(reply.statuses(), vec![200], "reply: {}", reply.text());
    assert!(reply.text().contains("abc"), "reply: {}", reply.text());
    assert!(
        reply.closed,
        "a message with both framings must close the connection"
    );
    assert_eq!(
        site.site.requests(),
        1,
        "the smuggled request reached the backend"
    );
    site.assert_still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_different_content_lengths_get_400() {
    let site = Site::start("hostile-two-cl", "", &[]).await;
    let reply = raw_exchange(
        site.port,
        b"POST /echo HTTP/1.1\r\nHost: site.test\r\nContent-Length: 3\r\nContent-Length: 10\r\n\r\nabcGET /smuggled HTTP/1.1\r\nHost: site.test\r\n\r\n",
    )
    .await;
    assert_rejected(&reply, 400);
    assert_eq!(site.site.requests(), 0);
    site.assert_still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn obs_fold_and_bare_cr_in_headers_get_400() {
    let site = Site::start("hostile-fold", "", &[]).await;
    // obs-fold (RFC 9112 §5.2): a header line continued on the next one.
    let folded = raw_exchange(
        site.port,
        b"GET / HTTP/1.1\r\nHost: site.test\r\nX-Long: a\r\n b\r\n\r\n",
    )
    .await;
    assert_rejected(&folded, 400);
    // A fold that would turn `Host` into something else for a lenient parser.
    let folded_host = raw_exchange(
        site.port,
        b"GET / HTTP/1.1\r\nHost: other.test\r\n\tsite.test\r\n\r\n",
    )
    .await;
    assert_rejected(&folded_host, 400);
    // A bare CR inside a header (RFC 9112 §2.2).
    let bare_cr = raw_exchange(
        site.port,
        b"GET / HTTP/1.1\r\nHost: site.test\r\nX-A: a\rX-B: b\r\n\r\n",
    )
    .await;
    assert_rejected(&bare_cr, 400);
    assert_eq!(site.site.requests() + site.other.requests(), 0);
    site.assert_still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_lf_ends_a_header_line_as_in_go() {
    let site = Site::start("hostile-bare-lf", "", &[]).await;
    // RFC 9112 §2.2 lets a recipient take a bare LF as a line end, as Go's reader does. The
    // backend only ever gets the request re-serialized with CRLF, so both read it alike.
    let reply = raw_exchange(
        site.port,
        b"GET /lf HTTP/1.1\nHost: other.test\nConnection: close\n\n",
    )
    .await;
    assert_eq!(reply.statuses(), vec![200], "reply: {}", reply.text());
    assert!(
        reply.text().ends_with("other /lf"),
        "reply: {}",
        reply.text()
    );
    assert!(reply.closed);
    site.assert_still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_chunk_sizes_never_reach_the_backend_whole() {
    let site = Site::start("hostile-chunks", "", &[]).await;
    for size in ["zz", "-1", "fffffffffffffffffffff", "3 3"] {
        let request = format!(
            "POST /echo HTTP/1.1\r\nHost: site.test\r\nTransfer-Encoding: chunked\r\n\r\n{size}\r\nabc\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: site.test\r\n\r\n"
        );
        let reply = raw_exchange(site.port, request.as_bytes()).await;
        assert!(
            reply.closed,
            "chunk size {size:?}: still open: {}",
            reply.text()
        );
        // The head was valid, so the request was already on its way when its body broke:
        // the answer is 400 (the client's body is at fault, not the server), never the
        // echoed body or a second response.
        let statuses = reply.statuses();
        assert!(
            matches!(statuses.as_slice(), [400]),
            "chunk size {size:?}: {}",
            reply.text()
        );
        assert!(
            !reply.text().contains("abc"),
            "chunk size {size:?}: the body was echoed: {}",
            reply.text()
        );
    }
    // One aborted POST per attempt at most, never the request smuggled behind it.
    assert!(
        site.site.requests() <= 4,
        "a smuggled request reached the backend"
    );
    site.assert_still_serving().await;
}

// ---------------------------------------------------------------------------------------
// Host and request target

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_or_repeated_host_gets_400_as_in_go() {
    let site = Site::start("hostile-host", "", &[]).await;
    for (case, request) in [
        (
            "space",
            &b"GET / HTTP/1.1\r\nHost: site.test evil.test\r\n\r\n"[..],
        ),
        (
            "two hosts",
            b"GET / HTTP/1.1\r\nHost: site.test\r\nHost: other.test\r\n\r\n",
        ),
        ("no host", b"GET / HTTP/1.1\r\n\r\n"),
        (
            "control byte",
            b"GET / HTTP/1.1\r\nHost: site.test\x01\r\n\r\n",
        ),
    ] {
        let reply = raw_exchange(site.port, request).await;
        assert_eq!(reply.statuses(), vec![400], "{case}: {}", reply.text());
        assert!(reply.closed, "{case}: still open");
    }
    assert_eq!(site.site.requests() + site.other.requests(), 0);
    // HTTP/1.0 needs no Host.
    let old = raw_exchange(site.port, b"GET / HTTP/1.0\r\n\r\n").await;
    assert_eq!(old.statuses(), vec![404], "{}", old.text());
    site.assert_still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_target_is_routed_and_forwarded_by_its_own_host() {
    let site = Site::start("hostile-absolute", "", &[]).await;
    // Go takes the host of an absolute-form target over the Host header; the backend must
    // see the host the request was routed by, or routing and serving disagree.
    let reply = raw_exchange(
        site.port,
        b"GET http://other.test/abs?q=1 HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(reply.statuses(), vec![200], "{}", reply.text());
    let text = reply.text().to_ascii_lowercase();
    assert!(text.contains("x-backend: other"), "{text}");
    assert!(text.contains("x-seen-host: other.test\r\n"), "{text}");
    assert!(text.ends_with("other /abs?q=1"), "{text}");
    assert_eq!(site.site.requests(), 0);
    site.assert_still_serving().await;
}

// ---------------------------------------------------------------------------------------
// Header size limits

/// A GET for site.test carrying `filler` bytes in one header.
fn request_with_header_bytes(filler: usize) -> Vec<u8> {
    let mut request =
        b"GET / HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\nX-Filler: ".to_vec();
    request.resize(request.len() + filler, b'a');
    request.extend_from_slice(b"\r\n\r\n");
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_get_431_with_a_small_max_header_bytes() {
    let site = Site::start(
        "hostile-431-small",
        "    http:\n      maxHeaderBytes: 4096\n",
        &[],
    )
    .await;
    let fits = raw_exchange(site.port, &request_with_header_bytes(2_000)).await;
    assert_eq!(fits.statuses(), vec![200], "{}", fits.text());
    let reply = raw_exchange(site.port, &request_with_header_bytes(32 * 1024)).await;
    assert_rejected(&reply, 431);
    // HTTP/2: the header list is bounded by the same setting; the stream gets 431 and the
    // connection goes on.
    let with_filler = |bytes: usize| {
        let mut request = get("site.test", "/", true);
        request
            .headers_mut()
            .insert("x-filler", "a".repeat(bytes).parse().unwrap());
        request
    };
    let mut h2 = Conn::h2c(site.port).await;
    let big = h2.send(with_filler(6_000)).await;
    assert_eq!(big.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(h2.get("site.test", "/").await.status, StatusCode::OK);
    // Far past the limit (h2 allows 4 times it before calling it abuse) the whole
    // connection is refused with GOAWAY.
    let Conn::H2(mut sender) = Conn::h2c(site.port).await else {
        unreachable!("h2c gives an HTTP/2 connection")
    };
    let huge = tokio::time::timeout(WAIT, sender.send_request(with_filler(32 * 1024)))
        .await
        .expect("an answer in time");
    let error = huge.expect_err("a connection error");
    assert!(
        format!("{error:?}").contains("ENHANCE_YOUR_CALM"),
        "{error:?}"
    );
    assert_eq!(site.site.requests(), 2);
    site.assert_still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_get_431_past_the_default_one_mebibyte() {
    let site = Site::start("hostile-431-default", "", &[]).await;
    // Under the backend's own limit (hyper's ~400 KiB), which would answer 431 itself.
    let fits = raw_exchange(site.port, &request_with_header_bytes(300 * 1024)).await;
    assert_eq!(fits.statuses(), vec![200], "{}", fits.text());
    let reply = raw_exchange(site.port, &request_with_header_bytes(2 << 20)).await;
    assert_rejected(&reply, 431);
    // HTTP/2: as large a header list comes in a HEADERS frame and CONTINUATION frames, which
    // the CONTINUATION flood defence must let through.
    let mut request = get("site.test", "/", true);
    request
        .headers_mut()
        .insert("x-filler", "a".repeat(300 * 1024).parse().unwrap());
    let mut h2 = Conn::h2c(site.port).await;
    assert_eq!(h2.send(request).await.status, StatusCode::OK);
    site.assert_still_serving().await;
}

// ---------------------------------------------------------------------------------------
// Slow and idle clients

const SHORT_TIMEOUTS: &str =
    "    transport:\n      respondingTimeouts:\n        readTimeout: 1s\n        idleTimeout: 1s\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_sent_slower_than_the_read_timeout_close_the_connection() {
    let site = Site::start("hostile-slowloris", SHORT_TIMEOUTS, &[]).await;
    let stream = TcpStream::connect(("127.0.0.1", site.port))
        .await
        .expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (mut read, mut write) = stream.into_split();
    // 60 bytes at 100 ms each would take 6 s; the router allows 1 s.
    let writer = tokio::spawn(async move {
        for byte in b"GET / HTTP/1.1\r\nHost: site.test\r\nX-Slow: aaaaaaaaaaaaaaaaa\r\n\r\n" {
            if write.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        write
    });
    let started = Instant::now();
    let reply = read_until_closed(&mut read, Duration::from_secs(4)).await;
    let elapsed = started.elapsed();
    writer.abort();
    assert!(
        reply.closed,
        "still open after {elapsed:?}: {}",
        reply.text()
    );
    assert!(
        (Duration::from_millis(800)..Duration::from_secs(3)).contains(&elapsed),
        "closed after {elapsed:?}"
    );
    // Closed without an answer, or with 408.
    assert!(
        reply.statuses().iter().all(|s| *s == 408),
        "{}",
        reply.text()
    );
    assert_eq!(site.site.requests(), 0);
    site.assert_still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_close_after_the_idle_timeout() {
    let site = Site::start("hostile-idle", SHORT_TIMEOUTS, &[]).await;
    // HTTP/1.1: one request, then nothing.
    let mut h1 = TcpStream::connect(("127.0.0.1", site.port))
        .await
        .expect("connect");
    h1.write_all(b"GET /idle HTTP/1.1\r\nHost: site.test\r\n\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    let reply = read_until_closed(&mut h1, Duration::from_secs(4)).await;
    let elapsed = started.elapsed();
    assert_eq!(reply.statuses(), vec![200], "{}", reply.text());
    assert!(
        reply.closed,
        "HTTP/1.1 connection still open after {elapsed:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(800),
        "closed after {elapsed:?}"
    );

    // HTTP/2: one request, then only PINGs, which are no request: GOAWAY, then close.
    let h2 = TcpStream::connect(("127.0.0.1", site.port))
        .await
        .expect("connect");
    let (mut read, mut write) = h2.into_split();
    let mut opening = h2frame::start();
    opening.extend(h2frame::frame(
        h2frame::HEADERS,
        h2frame::END_HEADERS | h2frame::END_STREAM,
        1,
        &h2frame::get_block("site.test"),
    ));
    write.write_all(&opening).await.expect("write");
    let pinger = tokio::spawn(async move {
        for n in 0u64..50 {
            let ping = h2frame::frame(h2frame::PING, 0, 0, &n.to_be_bytes());
            if write.write_all(&ping).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        write
    });
    let started = Instant::now();
    let reply = h2frame::read_frames(&mut read, Duration::from_secs(5)).await;
    let elapsed = started.elapsed();
    pinger.abort();
    assert!(reply.ended_stream(1), "no response: {reply:?}");
    assert_eq!(reply.goaway, Some(h2frame::NO_ERROR), "{reply:?}");
    // The client never acknowledges the GOAWAY's PING: the router drops the connection one
    // second after the idle timeout.
    assert!(
        reply.closed,
        "HTTP/2 connection still open after {elapsed:?}"
    );
    assert!(
        (Duration::from_millis(1800)..Duration::from_millis(3500)).contains(&elapsed),
        "closed after {elapsed:?}"
    );
    site.assert_still_serving().await;
}

// ---------------------------------------------------------------------------------------
// Backends that misbehave

/// What a [`BadBackend`] does once it has read a request head.
#[derive(Debug, Clone, Copy)]
enum Misbehaviour {
    /// Never answers (and keeps the connection open).
    Hang,
    /// Announces a 100 000-byte body, sends 1 000 bytes of it, then resets the connection.
    ResetMidBody,
    /// Answers with bytes that are not HTTP.
    Garbage,
}

/// A TCP backend that reads one request head per connection, then misbehaves.
struct BadBackend {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for BadBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl BadBackend {
    async fn start(how: Misbehaviour) -> BadBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut stream, _)) = listener.accept().await {
                if read_head(&mut stream).await.is_none() {
                    continue;
                }
                match how {
                    Misbehaviour::Hang => held.push(stream),
                    Misbehaviour::ResetMidBody => {
                        let mut response =
                            b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n".to_vec();
                        response.resize(response.len() + 1000, b'x');
                        let _ = stream.write_all(&response).await;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        // SO_LINGER 0: close with RST instead of FIN.
                        let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                        drop(stream);
                    }
                    Misbehaviour::Garbage => {
                        let _ = stream
                            .write_all(b"SSH-2.0-OpenSSH_9.6\r\n\x00\x01\x02garbage\r\n\r\n")
                            .await;
                    }
                }
            }
        });
        BadBackend { addr, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Reads up to the end of a request head; `None` if the peer left first.
async fn read_head(stream: &mut TcpStream) -> Option<()> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, stream.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 || head.len() > 64 * 1024 {
            return None;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    Some(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_backend_gets_504_after_the_entrypoint_write_timeout() {
    let hang = BadBackend::start(Misbehaviour::Hang).await;
    let site = Site::start(
        "hostile-hang",
        "    transport:\n      respondingTimeouts:\n        writeTimeout: 1s\n",
        &[("hang.test", hang.url())],
    )
    .await;
    let started = Instant::now();
    let mut conn = Conn::h1(site.port).await;
    let answer = conn.get("hang.test", "/").await;
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        (Duration::from_millis(900)..Duration::from_secs(3)).contains(&started.elapsed()),
        "answered after {:?}",
        started.elapsed()
    );
    // HTTP/2 alike, and the connection goes on.
    let mut h2 = Conn::h2c(site.port).await;
    assert_eq!(
        h2.get("hang.test", "/").await.status,
        StatusCode::GATEWAY_TIMEOUT
    );
    assert_eq!(h2.get("site.test", "/").await.status, StatusCode::OK);
    site.assert_still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_timeouts_a_hanging_backend_holds_only_its_own_request() {
    // Traefik's defaults have no responseHeaderTimeout and no writeTimeout: the request
    // waits for as long as the client does, and nothing else is held up.
    let hang = BadBackend::start(Misbehaviour::Hang).await;
    let site = Site::start("hostile-hang-forever", "", &[("hang.test", hang.url())]).await;
    let mut h2 = Conn::h2c(site.port).await;
    let Conn::H2(mut sender) = Conn::h2c(site.port).await else {
        unreachable!("h2c gives an HTTP/2 connection")
    };
    let waiting = sender.send_request(get("hang.test", "/", true));
    tokio::pin!(waiting);
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), &mut waiting)
            .await
            .is_err(),
        "the hanging backend's request was answered"
    );
    assert_eq!(h2.get("site.test", "/").await.status, StatusCode::OK);
    site.assert_still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_reset_mid_body_truncates_only_that_response() {
    let reset = BadBackend::start(Misbehaviour::ResetMidBody).await;
    let site = Site::start("hostile-reset", "", &[("reset.test", reset.url())]).await;
    // HTTP/1.1: the head went out, so the client sees a 200 whose body stops short, and the
    // connection is closed, which is how HTTP/1.1 says "aborted".
    let reply = raw_exchange(site.port, b"GET / HTTP/1.1\r\nHost: reset.test\r\n\r\n").await;
    assert_eq!(reply.statuses(), vec![200], "{}", reply.text());
    assert!(reply.closed, "the connection stayed open");
    let body = reply
        .text()
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.len())
        .unwrap_or(0);
    assert!(body < 100_000, "a whole body from a reset backend");
    // HTTP/2: the stream is reset, the connection serves on.
    let Conn::H2(mut sender) = Conn::h2c(site.port).await else {
        unreachable!("h2c gives an HTTP/2 connection")
    };
    let response = tokio::time::timeout(WAIT, sender.send_request(get("reset.test", "/", true)))
        .await
        .expect("a response in time")
        .expect("a response head");
    assert_eq!(response.status(), StatusCode::OK);
    let body = tokio::time::timeout(WAIT, http_body_util::BodyExt::collect(response.into_body()))
        .await
        .expect("the body ends in time");
    assert!(
        body.is_err(),
        "the truncated body was delivered as complete"
    );
    let mut h2 = Conn::H2(sender);
    assert_eq!(h2.get("site.test", "/").await.status, StatusCode::OK);
    site.assert_still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_answering_garbage_gets_502() {
    let garbage = BadBackend::start(Misbehaviour::Garbage).await;
    let site = Site::start("hostile-garbage", "", &[("garbage.test", garbage.url())]).await;
    let mut h1 = Conn::h1(site.port).await;
    assert_eq!(
        h1.get("garbage.test", "/").await.status,
        StatusCode::BAD_GATEWAY
    );
    // The client's connection is not the backend's: it goes on.
    assert_eq!(h1.get("site.test", "/").await.status, StatusCode::OK);
    let mut h2 = Conn::h2c(site.port).await;
    assert_eq!(
        h2.get("garbage.test", "/").await.status,
        StatusCode::BAD_GATEWAY
    );
    site.assert_still_serving().await;
}

// ---------------------------------------------------------------------------------------
// HTTP/2 floods

/// Another client (for `other.test`), on its own connection, asking every 50 ms while a flood runs: each answer
/// must come within a second. Returns how many it got once `stop` is sent.
fn bystander(
    port: u16,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<usize>,
) {
    let (stop, mut stopped) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut conn = Conn::h1(port).await;
        let mut answered = 0;
        while stopped.try_recv().is_err() {
            let answer = tokio::time::timeout(Duration::from_secs(1), conn.get("other.test", "/"))
                .await
                .expect("the bystander was answered within a second");
            assert_eq!(answer.status, StatusCode::OK);
            answered += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        answered
    });
    (stop, task)
}

/// Opens a raw HTTP/2 connection and writes `flood` beside the reads (errors ignored: the
/// router may close first); returns what the router answered within `within`.
async fn flood_h2(port: u16, flood: Vec<u8>, within: Duration) -> h2frame::Frames {
    let stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        let _ = write.write_all(&flood).await;
        write
    });
    let frames = h2frame::read_frames(&mut read, within).await;
    writer.abort();
    frames
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_gets_goaway_before_the_backend_sees_the_streams() {
    let site = Site::start("hostile-rapid-reset", "", &[]).await;
    let (stop, bystander) = bystander(site.port);
    // CVE-2023-44487: open a stream, cancel it at once, a thousand times.
    let mut flood = h2frame::start();
    for n in 0..1000u32 {
        let id = 2 * n + 1;
        flood.extend(h2frame::frame(
            h2frame::HEADERS,
            h2frame::END_HEADERS | h2frame::END_STREAM,
            id,
            &h2frame::get_block("site.test"),
        ));
        flood.extend(h2frame::frame(
            h2frame::RST_STREAM,
            0,
            id,
            &h2frame::CANCEL.to_be_bytes(),
        ));
    }
    let frames = flood_h2(site.port, flood, RAW_WAIT).await;
    assert_eq!(
        frames.goaway,
        Some(h2frame::ENHANCE_YOUR_CALM),
        "{frames:?}"
    );
    assert!(frames.closed, "the connection stayed open");
    assert!(
        site.site.requests() < 100,
        "{} reset streams reached the backend",
        site.site.requests()
    );
    let _ = stop.send(());
    assert!(bystander.await.expect("bystander") > 0);
    site.assert_still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provoked_stream_errors_get_goaway() {
    let site = Site::start("hostile-made-you-reset", "", &[]).await;
    // The server-side twin of rapid reset (MadeYouReset, CVE-2025-8671): each stream is
    // malformed (a connection-specific field, RFC 9113 §8.2.2), so the router resets it.
    let mut block = h2frame::get_block("site.test");
    block.extend(h2frame::literal("connection", b"close"));
    let mut flood = h2frame::start();
    for n in 0..2000u32 {
        flood.extend(h2frame::frame(
            h2frame::HEADERS,
            h2frame::END_HEADERS | h2frame::END_STREAM,
            2 * n + 1,
            &block,
        ));
    }
    let frames = flood_h2(site.port, flood, RAW_WAIT).await;
    assert_eq!(
        frames.goaway,
        Some(h2frame::ENHANCE_YOUR_CALM),
        "{frames:?}"
    );
    assert!(frames.closed, "the connection stayed open");
    assert_eq!(site.site.requests(), 0);
    site.assert_still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_flood_is_cut_off_with_bounded_memory() {
    let site = Site::start("hostile-continuation", "", &[]).await;
    let before = rss_kib(site.router.pid());
    let (stop, bystander) = bystander(site.port);
    // A header block that never ends: 10 MiB of CONTINUATION frames, none with END_HEADERS.
    let headers = h2frame::frame(h2frame::HEADERS, 0, 1, &h2frame::get_block("site.test"));
    let filler = h2frame::literal("x-flood", &[b'a'; 16_000]);
    let mut big = h2frame::start();
    big.extend_from_slice(&headers);
    for _ in 0..640 {
        big.extend(h2frame::frame(h2frame::CONTINUATION, 0, 1, &filler));
    }
    let frames = flood_h2(site.port, big, RAW_WAIT).await;
    assert_eq!(
        frames.goaway,
        Some(h2frame::ENHANCE_YOUR_CALM),
        "{frames:?}"
    );
    assert!(frames.closed, "the connection stayed open");
    // The same with empty frames: their number is bounded too.
    let mut many = h2frame::start();
    many.extend_from_slice(&headers);
    for _ in 0..100_000 {
        many.extend(h2frame::frame(h2frame::CONTINUATION, 0, 1, &[]));
    }
    let frames = flood_h2(site.port, many, RAW_WAIT).await;
    assert_eq!(
        frames.goaway,
        Some(h2frame::ENHANCE_YOUR_CALM),
        "{frames:?}"
    );
    assert!(frames.closed, "the connection stayed open");
    let after = rss_kib(site.router.pid());
    assert!(
        after < before + 16 * 1024,
        "the router grew from {before} KiB to {after} KiB"
    );
    assert_eq!(site.site.requests(), 0);
    let _ = stop.send(());
    assert!(bystander.await.expect("bystander") > 0);
    site.assert_still_serving().await;
}

/// Floods one connection with `frame` without reading the answers, while a bystander is
/// served: the router must stop reading (it answers each frame before it reads the next, so
/// its unread answers throttle the flood) or close, and its memory must stay flat.
async fn control_frame_flood_is_throttled(tag: &str, frame: Vec<u8>) {
    let site = Site::start(tag, "", &[]).await;
    let before = rss_kib(site.router.pid());
    let (stop, bystander) = bystander(site.port);
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    // A small receive window, so the router's unread answers back up quickly.
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let addr = SocketAddr::from(([127, 0, 0, 1], site.port));
    let stream = socket.connect(addr).await.expect("connect");
    let (mut read, mut write) = stream.into_split();
    write.write_all(&h2frame::start()).await.expect("preface");
    let chunk: Vec<u8> = frame.repeat(64 * 1024 / frame.len());
    let mut sent = 0usize;
    let flood = tokio::time::timeout(Duration::from_secs(3), async {
        // 256 MiB would take the router far longer than 3 s to answer even unthrottled.
        while sent < 256 << 20 {
            write.write_all(&chunk).await?;
            sent += chunk.len();
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
    let outcome = match flood {
        Err(_) => "throttled",
        Ok(Err(_)) => "closed",
        Ok(Ok(())) => panic!("the router read {sent} bytes of {tag} without pushing back"),
    };
    let after = rss_kib(site.router.pid());
    eprintln!("{tag}: {outcome} after {sent} bytes; router memory {before} -> {after} KiB");
    assert!(
        after < before + 32 * 1024,
        "the router grew from {before} KiB to {after} KiB"
    );
    let _ = stop.send(());
    assert!(bystander.await.expect("bystander") > 0);
    // Reading again lets the throttled router answer: never more answers than frames.
    let frames = h2frame::read_frames(&mut read, Duration::from_millis(500)).await;
    assert!(
        frames.heads.len() <= sent / frame.len() + 8,
        "{} answers",
        frames.heads.len()
    );
    drop(write);
    site.assert_still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_flood_is_throttled() {
    let ping = h2frame::frame(h2frame::PING, 0, 0, b"hostile!");
    control_frame_flood_is_throttled("hostile-ping-flood", ping).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_flood_is_throttled() {
    // SETTINGS_INITIAL_WINDOW_SIZE (0x4) = 65535: valid, and acknowledged every time.
    let settings = h2frame::frame(h2frame::SETTINGS, 0, 0, &[0, 4, 0, 0, 0xff, 0xff]);
    control_frame_flood_is_throttled("hostile-settings-flood", settings).await;
}

/// Hand-made HTTP/2 frames (RFC 9113 §4.1, §6) for what a well-behaved client library
/// refuses to send, and a reader that notes what the router answers.
mod h2frame {
    use std::time::Duration;

    use tokio::io::{AsyncRead, AsyncReadExt};

    pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const CONTINUATION: u8 = 0x9;

    pub const END_STREAM: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;

    pub const NO_ERROR: u32 = 0x0;
    pub const CANCEL: u32 = 0x8;
    pub const ENHANCE_YOUR_CALM: u32 = 0xb;

    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(payload.len()).expect("frame size");
        let mut out = Vec::with_capacity(9 + payload.len());
        out.extend_from_slice(&len.to_be_bytes()[1..]);
        out.push(kind);
        out.push(flags);
        out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// The client's connection preface and an empty SETTINGS frame.
    pub fn start() -> Vec<u8> {
        let mut out = PREFACE.to_vec();
        out.extend(frame(SETTINGS, 0, 0, &[]));
        out
    }

    /// An HPACK integer with an `prefix`-bit prefix whose high bits are `flags` (RFC 7541 §5.1).
    fn integer(out: &mut Vec<u8>, flags: u8, prefix: u32, value: usize) {
        let max = (1usize << prefix) - 1;
        if value < max {
            out.push(flags | value as u8);
            return;
        }
        out.push(flags | max as u8);
        let mut rest = value - max;
        while rest >= 128 {
            out.push((rest % 128) as u8 | 0x80);
            rest /= 128;
        }
        out.push(rest as u8);
    }

    /// A header field as a literal without indexing, with a literal name (RFC 7541 §6.2.2).
    pub fn literal(name: &str, value: &[u8]) -> Vec<u8> {
        let mut out = vec![0x00];
        integer(&mut out, 0, 7, name.len());
        out.extend_from_slice(name.as_bytes());
        integer(&mut out, 0, 7, value.len());
        out.extend_from_slice(value);
        out
    }

    /// The header block of `GET /` over http for `authority`: static-table entries for the
    /// method, scheme and path (RFC 7541 Appendix A), the authority as a literal.
    pub fn get_block(authority: &str) -> Vec<u8> {
        let mut out = vec![0x82, 0x86, 0x84];
        integer(&mut out, 0x00, 4, 1);
        integer(&mut out, 0, 7, authority.len());
        out.extend_from_slice(authority.as_bytes());
        out
    }

    /// What the router sent on a raw HTTP/2 connection.
    #[derive(Debug, Default)]
    pub struct Frames {
        /// (type, flags, stream) of every frame, in order.
        pub heads: Vec<(u8, u8, u32)>,
        /// The error code of the first GOAWAY.
        pub goaway: Option<u32>,
        pub closed: bool,
    }

    impl Frames {
        /// Whether `stream`'s response ended (END_STREAM on its HEADERS or DATA).
        pub fn ended_stream(&self, stream: u32) -> bool {
            self.heads.iter().any(|(kind, flags, id)| {
                *id == stream && (*kind == HEADERS || *kind == DATA) && flags & END_STREAM != 0
            })
        }
    }

    /// Reads frames until the router closes, at most `within`.
    pub async fn read_frames<R: AsyncRead + Unpin>(read: &mut R, within: Duration) -> Frames {
        let mut frames = Frames::default();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        let deadline = tokio::time::Instant::now() + within;
        // The server's preface is a SETTINGS frame: nothing to skip.
        loop {
            match tokio::time::timeout_at(deadline, read.read(&mut chunk)).await {
                Err(_) => break,
                Ok(Ok(0)) | Ok(Err(_)) => {
                    frames.closed = true;
                    break;
                }
                Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            }
            let mut at = 0;
            while buf.len() - at >= 9 {
                let len = u32::from_be_bytes([0, buf[at], buf[at + 1], buf[at + 2]]) as usize;
                if buf.len() - at < 9 + len {
                    break;
                }
                let (kind, flags) = (buf[at + 3], buf[at + 4]);
                let stream =
                    u32::from_be_bytes([buf[at + 5], buf[at + 6], buf[at + 7], buf[at + 8]])
                        & 0x7fff_ffff;
                let payload = &buf[at + 9..at + 9 + len];
                if kind == GOAWAY && frames.goaway.is_none() && payload.len() >= 8 {
                    frames.goaway = Some(u32::from_be_bytes([
                        payload[4], payload[5], payload[6], payload[7],
                    ]));
                }
                frames.heads.push((kind, flags, stream));
                at += 9 + len;
            }
            buf.drain(..at);
        }
        frames
    }
}
