//! The `sallyport` command: run the router, `check` a configuration, or `explain` which
//! router a connection would reach.
//!
//! Traefik-style configuration flags (`--entryPoints.web.address=:80`) are passed
//! through to the static configuration loader; clap handles the rest.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sallyport::config::{self, LoadedStatic};

#[derive(Parser, Debug)]
#[command(
    name = "sallyport",
    version,
    about = "An edge router configured with Traefik v3 files",
    after_help = "Static configuration keys can also be given as flags in Traefik's style \
                  (--entryPoints.web.address=:80) or environment variables \
                  (SALLYPORT_ENTRYPOINTS_WEB_ADDRESS=:80)."
)]
struct Cli {
    /// The static configuration file (Traefik's --configFile is accepted too).
    /// Without it, sallyport.{toml,yaml,yml} is looked for in . then /etc/sallyport/.
    #[arg(
        long = "config",
        visible_alias = "configFile",
        global = true,
        value_name = "FILE"
    )]
    config: Option<std::path::PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate the static and dynamic configuration; print every error as
    /// file:line:col and exit non-zero if there is any.
    Check,
    /// Tell which router a connection (and its HTTP request) would reach on an entrypoint,
    /// and why; exit 1 when none would.
    Explain(ExplainArgs),
    /// Upgrade a running sallyport to the binary now at its path (SIGUSR2): wait until the
    /// new process serves (exit 0) or say why the old one goes on serving (exit 1).
    Upgrade(UpgradeArgs),
}

#[derive(clap::Args, Debug)]
#[group(required = true, multiple = false)]
struct UpgradeArgs {
    /// The process to upgrade.
    #[arg(long = "pid", value_name = "PID")]
    pid: Option<u32>,
    /// A file holding the process id; rewritten with the new process's id on success.
    #[arg(long = "pidfile", value_name = "FILE")]
    pidfile: Option<std::path::PathBuf>,
}

#[derive(clap::Args, Debug)]
struct ExplainArgs {
    /// The entrypoint the connection arrives on.
    #[arg(long = "entrypoint", value_name = "NAME")]
    entrypoint: String,
    /// The TLS server name (makes the connection a TLS one).
    #[arg(long = "sni", value_name = "S")]
    sni: Option<String>,
    /// A protocol offered in ALPN (makes the connection a TLS one); repeatable.
    #[arg(long = "alpn", value_name = "P")]
    alpn: Vec<String>,
    /// The client address.
    #[arg(long = "client-ip", value_name = "IP", default_value = "127.0.0.1")]
    client_ip: std::net::IpAddr,
    /// The request method.
    #[arg(long = "method", value_name = "M", default_value = "GET")]
    method: String,
    /// The request host (default: the SNI).
    #[arg(long = "host", value_name = "H")]
    host: Option<String>,
    /// The request path, with an optional ?query.
    #[arg(long = "path", value_name = "P", default_value = "/")]
    path: String,
    /// A request header, NAME=VALUE; repeatable.
    #[arg(long = "header", value_name = "K=V", value_parser = sallyport::explain::parse_header_arg)]
    header: Vec<(String, String)>,
}

/// What runs on the static configuration: a subcommand or the router itself.
enum Configured {
    Check,
    Explain(ExplainArgs),
    Run,
}

/// Words that are subcommands, never the value of a preceding flag.
const SUBCOMMANDS: &[&str] = &["check", "explain", "upgrade", "help"];

/// The subcommands' own flags, which are not static configuration keys.
const SUBCOMMAND_FLAGS: &[&str] = &[
    "pid",
    "pidfile",
    "entrypoint",
    "sni",
    "alpn",
    "client-ip",
    "method",
    "host",
    "path",
    "header",
];

/// Splits the arguments into what clap parses and the Traefik-style configuration
/// flags (any `--key` with a dot, or a bare section such as `--api`).
fn split_args(args: &[String]) -> (Vec<String>, Vec<String>) {
    let mut ours = Vec::new();
    let mut config_flags = Vec::new();
    let mut it = args.iter().peekable();
    while let Some(a) = it.next() {
        let name = a.trim_start_matches('-').split('=').next().unwrap_or("");
        let is_config_flag = a.starts_with("--")
            && !matches!(
                name.to_ascii_lowercase().as_str(),
                "config" | "configfile" | "help" | "version"
            )
            && !SUBCOMMAND_FLAGS.contains(&name);
        if is_config_flag {
            // `--key value` becomes `--key=value`; a bare section flag (`--api`) stays.
            match it.peek() {
                Some(next)
                    if !a.contains('=')
                        && !next.starts_with("--")
                        && name.contains('.')
                        && !SUBCOMMANDS.contains(&next.as_str()) =>
                {
                    config_flags.push(format!("{a}={next}"));
                    it.next();
                }
                _ => config_flags.push(a.clone()),
            }
        } else {
            ours.push(a.clone());
        }
    }
    (ours, config_flags)
}

fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args().collect();
    let (ours, config_flags) = split_args(raw.get(1..).unwrap_or(&[]));
    let mut clap_args = vec![raw.first().cloned().unwrap_or_else(|| "sallyport".into())];
    clap_args.extend(ours);
    let cli = Cli::parse_from(clap_args);
    // Upgrading another process needs no configuration of its own.
    let configured = match cli.command {
        Some(Command::Upgrade(args)) => return upgrade(&args),
        Some(Command::Check) => Configured::Check,
        Some(Command::Explain(args)) => Configured::Explain(args),
        None => Configured::Run,
    };

    let mut static_args = config_flags;
    if let Some(path) = &cli.config {
        static_args.insert(0, format!("--configFile={}", path.display()));
    }
    // Variables that tune the process, not the configuration.
    let env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| {
            !k.eq_ignore_ascii_case("SALLYPORT_WORKERS")
                && !k.eq_ignore_ascii_case("SALLYPORT_SPLICE")
                && !k.eq_ignore_ascii_case(sallyport::runtime::upgrade::FD_ENV)
        })
        .collect();
    if let Some(path) = &cli.config
        && !path.is_file()
    {
        eprintln!("sallyport: configuration file {} not found", path.display());
        return ExitCode::from(2);
    }
    let loaded = match config::load_static(&static_args, &env) {
        Ok(l) => l,
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            eprintln!(
                "sallyport: invalid static configuration ({} error(s))",
                errors.len()
            );
            return ExitCode::from(2);
        }
    };
    match &loaded.file {
        Some(f) => eprintln!("sallyport: using configuration file {}", f.display()),
        None => eprintln!(
            "sallyport: no configuration file found (looked for sallyport.toml, sallyport.yaml, sallyport.yml in . and /etc/sallyport); using flags, environment and defaults"
        ),
    }

    // `SALLYPORT_SPLICE=0` relays raw TCP through buffers instead of splice(2), to
    // compare the two (bench/).
    if std::env::var("SALLYPORT_SPLICE").is_ok_and(|v| v == "0" || v.eq_ignore_ascii_case("off")) {
        l4::tcp::proxy::set_splice(false);
    }
    let runtime = match build_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sallyport: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match configured {
        Configured::Check => runtime.block_on(check(loaded)),
        Configured::Explain(args) => explain(&loaded, args),
        Configured::Run => {
            let (log_file, problem) = sallyport::logging::init(&loaded.config.log);
            if let Some(p) = problem {
                eprintln!("sallyport: {p}");
            }
            let code = runtime.block_on(sallyport::runtime::run(loaded, log_file));
            // Open connections past graceTimeOut are cut here, with the runtime.
            runtime.shutdown_timeout(std::time::Duration::from_millis(100));
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
    }
}

async fn check(loaded: LoadedStatic) -> ExitCode {
    let found = sallyport::check::check_dynamic(&loaded.config).await;
    for w in &found.warnings {
        println!("warning: {w}");
    }
    if found.errors.is_empty() {
        println!("configuration OK");
        return ExitCode::SUCCESS;
    }
    for e in &found.errors {
        println!("{e}");
    }
    println!("{} error(s)", found.errors.len());
    ExitCode::from(1)
}

fn upgrade(args: &UpgradeArgs) -> ExitCode {
    use sallyport::runtime::upgrade;
    let pid = match (args.pid, &args.pidfile) {
        (Some(pid), _) => Ok(pid),
        (None, Some(path)) => upgrade::read_pid_file(path),
        (None, None) => Err(upgrade::RequestError::NoProcess),
    };
    let outcome = pid.and_then(|pid| {
        let new_pid = upgrade::request(pid)?;
        if let Some(path) = &args.pidfile {
            upgrade::write_pid_file(path, new_pid).map_err(|source| {
                upgrade::RequestError::PidFileUpdate {
                    pid: new_pid,
                    path: path.clone(),
                    source,
                }
            })?;
        }
        Ok(new_pid)
    });
    match outcome {
        Ok(new_pid) => {
            println!("upgraded: new process {new_pid} serves; the old one drains");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sallyport upgrade: {e}");
            ExitCode::from(1)
        }
    }
}

fn explain(loaded: &LoadedStatic, args: ExplainArgs) -> ExitCode {
    let st = &loaded.config;
    let (dy, report) = match sallyport::check::load_validated(st) {
        Ok(Some(loaded)) => loaded,
        Ok(None) => (Default::default(), Default::default()),
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            eprintln!(
                "sallyport: invalid dynamic configuration ({} error(s)); run `sallyport check`",
                errors.len()
            );
            return ExitCode::from(2);
        }
    };
    let question = sallyport::explain::Question {
        entrypoint: args.entrypoint,
        sni: args.sni,
        alpn: args.alpn,
        client_ip: args.client_ip,
        method: args.method,
        host: args.host,
        path: args.path,
        headers: args.header,
    };
    match sallyport::explain::explain(st, &dy, &report, &question) {
        Ok(answer) => {
            print!("{answer}");
            if answer.router.is_some() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("sallyport: {e}");
            ExitCode::from(2)
        }
    }
}

/// Worker threads: `SALLYPORT_WORKERS`, else one per CPU.
fn build_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.enable_all();
    // Workers hand their requests' reports to the access log and metrics in runs, at the
    // latest when they go idle.
    l7::observe::batch_on_workers(&mut b);
    if let Some(n) = std::env::var("SALLYPORT_WORKERS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
    {
        b.worker_threads(n);
    }
    b.build()
}

#[cfg(test)]
mod tests {
    use super::split_args;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn traefik_flags_are_set_aside() {
        let (ours, flags) = split_args(&s(&[
            "check",
            "--config",
            "a.yml",
            "--entryPoints.web.address=:80",
            "--log.level",
            "DEBUG",
            "--api",
        ]));
        assert_eq!(ours, s(&["check", "--config", "a.yml"]));
        assert_eq!(
            flags,
            s(&[
                "--entryPoints.web.address=:80",
                "--log.level=DEBUG",
                "--api"
            ])
        );
    }

    #[test]
    fn a_subcommand_is_never_a_flag_value() {
        let (ours, flags) = split_args(&s(&["--entryPoints.web.reusePort", "check"]));
        assert_eq!(ours, s(&["check"]));
        assert_eq!(flags, s(&["--entryPoints.web.reusePort"]));
    }

    #[test]
    fn explain_flags_are_not_configuration_keys() {
        let (ours, flags) = split_args(&s(&[
            "explain",
            "--entrypoint",
            "web",
            "--host",
            "a.test",
            "--header=X-A=b",
            "--log.level=DEBUG",
        ]));
        assert_eq!(
            ours,
            s(&[
                "explain",
                "--entrypoint",
                "web",
                "--host",
                "a.test",
                "--header=X-A=b"
            ])
        );
        assert_eq!(flags, s(&["--log.level=DEBUG"]));
    }
}
