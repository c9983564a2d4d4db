//! `tls-backend`: the TLS origin behind every proxy in the passthrough benchmark. It makes a
//! throwaway CA and leaf at start-up, writes the CA for clients once it is listening (so the
//! file doubles as a readiness signal), and greets each client after the handshake.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use sallyport_bench_tools::{Error, backend, pki, tls};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

#[derive(Parser)]
#[command(
    about = "TLS backend for the passthrough benchmark: greets each client after the handshake"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:19443")]
    listen: SocketAddr,
    /// DNS name the certificate covers, i.e. the SNI clients send (repeatable).
    #[arg(long = "name", required = true)]
    names: Vec<String>,
    /// Also greet plain TCP clients here: the origin behind proxies that terminate TLS.
    #[arg(long)]
    plain_listen: Option<SocketAddr>,
    /// Where to write the CA certificate (PEM) that clients must trust.
    #[arg(long)]
    ca_out: PathBuf,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tls-backend: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), Error> {
    let identity = pki::generate(&args.names)?;
    let ca_pem = identity.ca_pem.clone();
    let acceptor = TlsAcceptor::from(Arc::new(tls::server_config(identity)?));

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
        if let Some(addr) = args.plain_listen {
            let plain = TcpListener::bind(addr).await.map_err(|source| Error::Io {
                context: format!("listening on {addr}"),
                source,
            })?;
            tokio::spawn(backend::serve_plain(plain));
        }
        write_whole(&args.ca_out, &ca_pem)?;
        backend::serve(listener, acceptor).await;
        Ok(())
    })
}

/// Writes beside the target and renames, so a reader never sees half a certificate.
fn write_whole(path: &Path, contents: &str) -> Result<(), Error> {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, contents)
        .and_then(|()| std::fs::rename(&partial, path))
        .map_err(|source| Error::Io {
            context: path.display().to_string(),
            source,
        })
}
