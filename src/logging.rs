//! Process logs: `log{level, format, filePath}` from the static configuration, on top
//! of `tracing`. `RUST_LOG` overrides the level for debugging.

use std::sync::Mutex;

use tracing_subscriber::EnvFilter;

use crate::config::static_cfg::{Log, LogFormat, LogLevel};

/// Installs the global subscriber. Returns an error message when the log file
/// cannot be opened (logs then go to stderr).
pub fn init(log: &Log) -> Result<(), String> {
    let level = match log.level {
        LogLevel::Trace => "trace",
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warn",
        LogLevel::Error | LogLevel::Fatal | LogLevel::Panic => "error",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let mut problem = None;
    let file = if log.file_path.is_empty() {
        None
    } else {
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log.file_path)
        {
            Ok(f) => Some(f),
            Err(e) => {
                problem = Some(format!("cannot open log file {}: {e}", log.file_path));
                None
            }
        }
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(
        !log.no_color && file.is_none() && std::io::IsTerminal::is_terminal(&std::io::stderr()),
    );
    let result = match (log.format, file) {
        (LogFormat::Json, Some(f)) => builder.json().with_writer(Mutex::new(f)).try_init(),
        (LogFormat::Json, None) => builder.json().with_writer(std::io::stderr).try_init(),
        (LogFormat::Common, Some(f)) => builder.with_writer(Mutex::new(f)).try_init(),
        (LogFormat::Common, None) => builder.with_writer(std::io::stderr).try_init(),
    };
    if let Err(e) = result {
        return Err(format!("cannot install the logger: {e}"));
    }
    match problem {
        Some(p) => Err(p),
        None => Ok(()),
    }
}
