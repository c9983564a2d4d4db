//! `http-backend`: the HTTP/1.1 origin behind every proxy in the reverse-proxy benchmark. It
//! answers every request with `200 OK` and a body of `--body-size` bytes.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use sallyport_bench_tools::{Error, http_backend};
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(
    about = "HTTP/1.1 backend for the reverse-proxy benchmark: a fixed body for every request"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:19080")]
    listen: SocketAddr,
    /// Size of the body of every response, in bytes.
    #[arg(long, default_value_t = 64)]
    body_size: usize,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("http-backend: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), Error> {
    let body = http_backend::body_of(args.body_size);
    // One thread: the benchmark pins the backend and the load generator to one shared core.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Io {
            context: "starting the async runtime".into(),
            source,
        })?;
    runtime.block_on(async {
        let listener = TcpListener::bind(args.listen)
            .await
            .map_err(|source| Error::Io {
                context: format!("listening on {}", args.listen),
                source,
            })?;
        http_backend::serve(listener, body).await;
        Ok(())
    })
}
