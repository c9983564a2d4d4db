//! `tls-load`: opens TLS connections with SNI to an address (a proxy, or the backend itself),
//! reads the backend's greeting and closes, for a fixed time. Closed loop (a fixed number of
//! connections in flight) measures connections per second; open loop (`--rate`) starts
//! connections on a fixed schedule, which is what latency percentiles should be read from.
//! Prints one `key=value` line: successes, errors by kind, rate and connect-to-first-byte
//! percentiles in microseconds.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use sallyport_bench_tools::Error;
use sallyport_bench_tools::client::{Failure, Target};
use sallyport_bench_tools::stats::Tally;
use sallyport_bench_tools::tls::{self, Handshake, Trust};
use tokio::task::JoinSet;
use tokio::time::{MissedTickBehavior, interval};
use tokio_rustls::TlsConnector;

#[derive(Parser)]
#[command(about = "TLS connection load generator for the passthrough benchmark")]
struct Args {
    /// Address to connect to: a proxy's TLS entry point, or the backend for the baseline.
    #[arg(long)]
    connect: SocketAddr,
    /// SNI to send; the backend certificate must cover it.
    #[arg(long)]
    sni: String,
    /// CA certificate (PEM) written by tls-backend, or any that issued the server's.
    #[arg(long, required_unless_present = "insecure")]
    ca: Option<PathBuf>,
    /// Verify neither the certificate nor the handshake signature: a full handshake then costs
    /// this client only its key exchange, and the server stays the side being measured.
    #[arg(long, conflicts_with = "ca")]
    insecure: bool,
    /// How long to run, in seconds.
    #[arg(long, default_value = "5", value_parser = parse_seconds)]
    duration: Duration,
    /// Connections in flight (closed loop); with --rate, the most allowed in flight.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Open loop: start this many connections per second, however earlier ones fare.
    #[arg(long)]
    rate: Option<NonZeroU32>,
    /// Full TLS 1.3 handshakes, or TLS 1.2 resumed ones that leave the proxy as the bottleneck.
    #[arg(long, value_enum, default_value = "resumed")]
    handshake: Handshake,
    /// With `--handshake full`: resume TLS 1.3 sessions from the tickets servers send; in the
    /// closed loop each of the --concurrency workers keeps its own session store. `resumed=` in the output counts the handshakes
    /// that actually resumed.
    #[arg(long)]
    resume: bool,
    /// Per-connection limit in milliseconds, from connect() to the whole greeting.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    /// Make one connection and exit 0 if it got the greeting: a readiness probe.
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
            eprintln!("tls-load: {e}");
            ExitCode::from(2)
        }
    }
}

/// Returns whether the run went as asked: for `--once`, whether the greeting arrived.
fn run(args: Args) -> Result<bool, Error> {
    if args.resume && args.handshake != Handshake::Full {
        return Err(Error::Usage(
            "--resume goes with --handshake full (TLS 1.3 tickets)".into(),
        ));
    }
    let make_target = || {
        let config = tls::client_config(
            match &args.ca {
                Some(ca) => Trust::Ca(ca),
                None => Trust::Nothing,
            },
            args.handshake,
            args.resume,
        )?;
        Target::new(
            args.connect,
            &args.sni,
            TlsConnector::from(Arc::new(config)),
            Duration::from_millis(args.timeout_ms),
        )
    };
    let target = make_target()?;
    // One thread: the generator shares its pinned core with the backend.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Io {
            context: "starting the async runtime".into(),
            source,
        })?;

    if args.once {
        let outcome = runtime.block_on(target.connect_to_greeting());
        match outcome {
            Ok(greeted) => println!(
                "ok first_byte_us={} resumed={}",
                greeted.first_byte.as_micros(),
                u8::from(greeted.resumed)
            ),
            Err(failure) => println!("failed: {}", failure.label()),
        }
        return Ok(outcome.is_ok());
    }

    // Closed loop: every worker is a client of its own, with its own session store. A store
    // shared by many connections in flight runs dry (rustls keeps a few single-use tickets per
    // server name), and resumed runs would then mix in full handshakes.
    let workers = if args.rate.is_none() {
        (0..args.concurrency)
            .map(|_| make_target())
            .collect::<Result<Vec<_>, _>>()?
    } else {
        Vec::new()
    };
    let started = Instant::now();
    let mut tally = runtime.block_on(async {
        match args.rate {
            Some(rate) => open_loop(target, args.duration, rate, args.concurrency).await,
            None => closed_loop(workers, args.duration).await,
        }
    });
    report(&mut tally, started.elapsed());
    Ok(true)
}

async fn closed_loop(targets: Vec<Target>, duration: Duration) -> Tally {
    let deadline = Instant::now() + duration;
    let mut workers = JoinSet::new();
    for target in targets {
        workers.spawn(async move {
            let mut tally = Tally::default();
            while Instant::now() < deadline {
                tally.record(target.connect_to_greeting().await);
            }
            tally
        });
    }
    let mut total = Tally::default();
    while let Some(done) = workers.join_next().await {
        if let Ok(tally) = done {
            total.merge(tally);
        }
    }
    total
}

async fn open_loop(
    target: Target,
    duration: Duration,
    rate: NonZeroU32,
    max_in_flight: usize,
) -> Tally {
    let mut tally = Tally::default();
    let mut in_flight = JoinSet::new();
    let mut schedule = interval(Duration::from_secs_f64(1.0 / f64::from(rate.get())));
    // A late tick still starts its connection: the schedule, not the replies, sets the pace.
    schedule.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let end = tokio::time::Instant::now() + duration;
    while schedule.tick().await < end {
        while let Some(done) = in_flight.try_join_next() {
            if let Ok(outcome) = done {
                tally.record(outcome);
            }
        }
        if in_flight.len() >= max_in_flight {
            tally.record(Err(Failure::Overload));
            continue;
        }
        let target = target.clone();
        in_flight.spawn(async move { target.connect_to_greeting().await });
    }
    while let Some(done) = in_flight.join_next().await {
        if let Ok(outcome) = done {
            tally.record(outcome);
        }
    }
    tally
}

fn report(tally: &mut Tally, elapsed: Duration) {
    let mut line = format!(
        "ok={} errors={} resumed={}",
        tally.successes(),
        tally.errors(),
        tally.resumed()
    );
    for (failure, count) in tally.failures() {
        line += &format!(" {}={count}", failure.label());
    }
    let secs = elapsed.as_secs_f64();
    line += &format!(
        " elapsed_s={secs:.3} conn_per_s={:.1}",
        tally.successes() as f64 / secs
    );
    let [p50, p90, p99, max] = tally.percentiles_us([50.0, 90.0, 99.0, 100.0]);
    for (name, value) in [("p50", p50), ("p90", p90), ("p99", p99), ("max", max)] {
        match value {
            Some(us) => line += &format!(" {name}_us={us}"),
            None => line += &format!(" {name}_us=nan"),
        }
    }
    println!("{line}");
}
