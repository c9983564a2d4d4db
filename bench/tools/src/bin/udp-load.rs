//! `udp-load`: closed-loop UDP load through a relay (or straight to the echo backend for the
//! baseline). Each of `--flows` flows has a socket, so a source port, of its own and keeps
//! `--window` datagrams outstanding; an answer lets the next one go, and a datagram not
//! answered within `--timeout-ms` is counted lost and replaced, so a loss never stalls a flow.
//! Prints one `key=value` line: sent, received, lost, late (answers after the loss was
//! counted), malformed, errors, datagrams_per_s and mbit_s (answers in the run, payload one
//! way) and the round-trip p50_us and p99_us.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use sallyport_bench_tools::Error;
use sallyport_bench_tools::udp::{self, LoadSpec};

#[derive(Parser)]
#[command(about = "Closed-loop UDP load generator for the relay benchmark")]
struct Args {
    /// Address to send to: a proxy's UDP entry point, or the echo backend for the baseline.
    #[arg(long)]
    target: SocketAddr,
    /// Flows, each on its own socket (its own source port).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
    flows: u32,
    /// Bytes of every datagram (at least 8: the sequence number).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(8..=65_507))]
    size: u32,
    /// Datagrams each flow keeps outstanding.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    window: u32,
    /// How long to run, in seconds.
    #[arg(long, default_value = "5", value_parser = parse_seconds)]
    duration: Duration,
    /// How long a datagram may go unanswered before it is counted lost, in milliseconds.
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u64).range(1..))]
    timeout_ms: u64,
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
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("udp-load: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<String, Error> {
    let spec = LoadSpec {
        target: args.target,
        flows: args.flows as usize,
        size: args.size as usize,
        window: args.window as usize,
        duration: args.duration,
        timeout: Duration::from_millis(args.timeout_ms),
    };
    // One thread: the benchmark pins the load generator and the backend to one shared core.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Io {
            context: "starting the async runtime".into(),
            source,
        })?;
    let mut report = runtime.block_on(udp::run_load(&spec))?;
    Ok(report.line())
}
