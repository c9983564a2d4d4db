//! `udp-echo`: the UDP backend behind every proxy in the UDP relay benchmark. It sends every
//! datagram back to its sender unchanged, from one thread with one 64 KiB buffer.

use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;

use clap::Parser;
use sallyport_bench_tools::udp;

#[derive(Parser)]
#[command(
    about = "UDP echo backend for the relay benchmark: every datagram goes back to its sender"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:19090")]
    listen: SocketAddr,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let socket = match UdpSocket::bind(args.listen) {
        Ok(socket) => socket,
        Err(e) => {
            eprintln!("udp-echo: listening on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let e = udp::echo(&socket);
    eprintln!("udp-echo: receiving on {}: {e}", args.listen);
    ExitCode::FAILURE
}
