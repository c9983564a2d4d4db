//! `h3-load`: HTTP/3 load generator for the HTTP/3 benchmark. Opens `--connections` QUIC
//! connections (each from a UDP socket of its own) and keeps `--streams` GET requests in flight
//! on each for a fixed time (closed loop), then prints one `key=value` line: responses, non-2xx,
//! errors by kind, requests per second, body throughput and latency percentiles in
//! microseconds. A connection that breaks, or that the server closes, is opened again (counted
//! as `reconnects`), so one failure does not silence a whole connection's share of the load. A
//! request refused because the server sent GOAWAY is not an error: as a browser would, the
//! client sends it on a new connection (counted as `goaway`, or `unprocessed` when the server
//! closed the connection gracefully before answering it).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use http::Uri;
use sallyport_bench_tools::Error;
use sallyport_bench_tools::h3::{self, Connection, Counts, Trust};
use tokio::task::JoinSet;

#[derive(Parser)]
#[command(about = "HTTP/3 (quinn + h3) load generator for the HTTP/3 benchmark")]
struct Args {
    /// UDP address to connect to: a proxy's HTTP/3 entry point.
    #[arg(long)]
    connect: SocketAddr,
    /// SNI, and the request's :authority.
    #[arg(long)]
    sni: String,
    /// Path of every request.
    #[arg(long, default_value = "/")]
    path: String,
    /// CA certificate (PEM) the server's certificate must chain to.
    #[arg(long, conflicts_with = "insecure")]
    ca: Option<PathBuf>,
    /// Accept any server certificate (handshake signatures are still checked).
    #[arg(long)]
    insecure: bool,
    /// How long to run, in seconds.
    #[arg(long, default_value = "5", value_parser = parse_seconds)]
    duration: Duration,
    /// QUIC connections, each from its own UDP socket.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
    connections: u32,
    /// Requests in flight on each connection (concurrent streams).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    streams: u32,
    /// Threads of the async runtime.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    threads: u32,
    /// A 2xx response whose body has another size is counted as a `body` error.
    #[arg(long)]
    expect_bytes: Option<u64>,
    /// Limit per request, and per connection attempt, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    /// Send one request and exit 0 if it got a 2xx (of --expect-bytes if given): a probe.
    #[arg(long)]
    once: bool,
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    text.parse::<f64>()
        .ok()
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{text:?} is not a positive number of seconds"))
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("h3-load: {e}");
            ExitCode::from(2)
        }
    }
}

/// What every connection task needs; shared read-only.
struct Plan {
    server: SocketAddr,
    local: SocketAddr,
    sni: String,
    uri: Uri,
    config: quinn::ClientConfig,
    streams: u32,
    limit: Duration,
    expect_bytes: Option<u64>,
    deadline: Instant,
}

/// Returns whether the run went as asked: for `--once`, whether the probe got its answer.
fn run(args: Args) -> Result<bool, Error> {
    let trust = match (&args.ca, args.insecure) {
        (Some(ca), _) => Trust::Ca(ca),
        (None, true) => Trust::AnyCertificate,
        (None, false) => return Err(Error::Usage("give --ca FILE or --insecure".into())),
    };
    let config = h3::client_config(trust)?;
    let uri: Uri = format!("https://{}{}", args.sni, args.path)
        .parse()
        .map_err(|_| Error::Usage(format!("{:?} is not a valid request path", args.path)))?;
    let local = match args.connect {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads as usize)
        .enable_all()
        .build()
        .map_err(|source| Error::Io {
            context: "starting the async runtime".into(),
            source,
        })?;
    let limit = Duration::from_millis(args.timeout_ms);

    if args.once {
        let outcome = runtime.block_on(async {
            let connection =
                Connection::open(local, args.connect, &args.sni, &config, limit).await?;
            let answer = h3::get(&mut connection.sender(), &uri, limit).await;
            connection.close().await;
            answer
        });
        return Ok(match outcome {
            Ok(answer) => {
                println!("status={} bytes={}", answer.status, answer.body_bytes);
                (200..300).contains(&answer.status)
                    && args
                        .expect_bytes
                        .is_none_or(|want| want == answer.body_bytes)
            }
            Err(failure) => {
                println!("failed={}", failure.label());
                false
            }
        });
    }

    let plan = Arc::new(Plan {
        server: args.connect,
        local,
        sni: args.sni,
        uri,
        config,
        streams: args.streams,
        limit,
        expect_bytes: args.expect_bytes,
        deadline: Instant::now() + args.duration,
    });
    let started = Instant::now();
    let mut counts = runtime.block_on(async {
        let mut connections = JoinSet::new();
        for _ in 0..args.connections {
            connections.spawn(one_connection(plan.clone()));
        }
        let mut total = Counts::default();
        while let Some(done) = connections.join_next().await {
            if let Ok(counts) = done {
                total.merge(counts);
            }
        }
        total
    });
    report(&mut counts, started.elapsed());
    Ok(true)
}

/// One connection's share of the load until the deadline: `streams` request loops on it,
/// and a new connection whenever it breaks.
async fn one_connection(plan: Arc<Plan>) -> Counts {
    let mut counts = Counts::default();
    let mut first = true;
    while Instant::now() < plan.deadline {
        if !std::mem::take(&mut first) {
            counts.reconnected();
        }
        let connection =
            match Connection::open(plan.local, plan.server, &plan.sni, &plan.config, plan.limit)
                .await
            {
                Ok(connection) => Arc::new(connection),
                Err(failure) => {
                    counts.record(Err(failure), plan.expect_bytes);
                    // Not a busy loop against a proxy that refuses.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
        let mut loops = JoinSet::new();
        for _ in 0..plan.streams {
            let plan = plan.clone();
            let connection = connection.clone();
            loops.spawn(async move {
                let mut counts = Counts::default();
                let mut send = connection.sender();
                while Instant::now() < plan.deadline && !connection.is_closed() {
                    let outcome = h3::get(&mut send, &plan.uri, plan.limit).await;
                    let going_away = matches!(outcome, Err(failure) if failure.resent());
                    counts.record(outcome, plan.expect_bytes);
                    if going_away {
                        // The next request goes on a new connection; the requests in flight
                        // on this one finish first.
                        break;
                    }
                }
                counts
            });
        }
        while let Some(done) = loops.join_next().await {
            if let Ok(loop_counts) = done {
                counts.merge(loop_counts);
            }
        }
        if let Some(connection) = Arc::into_inner(connection) {
            connection.close().await;
        }
    }
    counts
}

fn report(counts: &mut Counts, elapsed: Duration) {
    let secs = elapsed.as_secs_f64();
    let mut line = format!(
        "responses={} non2xx={} errors={} reconnects={}",
        counts.responses(),
        counts.non2xx(),
        counts.errors(),
        counts.reconnects()
    );
    for (failure, count) in counts.failures() {
        line += &format!(" {}={count}", failure.label());
    }
    line += &format!(
        " elapsed_s={secs:.3} rps={:.1} mbit_s={:.1}",
        counts.responses() as f64 / secs,
        counts.body_bytes() as f64 * 8.0 / 1e6 / secs
    );
    let [p50, p90, p99, max] = counts.percentiles_us([50.0, 90.0, 99.0, 100.0]);
    for (name, value) in [("p50", p50), ("p90", p90), ("p99", p99), ("max", max)] {
        match value {
            Some(us) => line += &format!(" {name}_us={us}"),
            None => line += &format!(" {name}_us=nan"),
        }
    }
    println!("{line}");
}
