//! Process logs: `log{level, format, filePath, noColor}` from the static configuration,
//! on top of `tracing`. `RUST_LOG` overrides the level for debugging. A log file is
//! reopened on SIGUSR1, so that log rotation works as with Traefik.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::static_cfg::{Log, LogFormat, LogLevel};

/// The log file, shared by the subscriber and the SIGUSR1 handler.
#[derive(Clone)]
pub struct LogFile {
    path: PathBuf,
    file: Arc<Mutex<File>>,
}

impl LogFile {
    fn open(path: PathBuf) -> std::io::Result<LogFile> {
        let file = open_append(&path)?;
        Ok(LogFile {
            path,
            file: Arc::new(Mutex::new(file)),
        })
    }

    /// Reopens the file at its path (after a rotation moved the old one away).
    pub fn reopen(&self) -> std::io::Result<()> {
        let fresh = open_append(&self.path)?;
        *self.file.lock().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

fn open_append(path: &std::path::Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// One write to the log file, under its lock.
pub struct LogFileWriter(Arc<Mutex<File>>);

impl Write for LogFileWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).flush()
    }
}

impl<'a> MakeWriter<'a> for LogFile {
    type Writer = LogFileWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LogFileWriter(self.file.clone())
    }
}

/// Installs the global subscriber. Returns the log file when one is configured, and a
/// message when something went wrong (logs then go to stderr).
pub fn init(log: &Log) -> (Option<LogFile>, Option<String>) {
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
        match LogFile::open(PathBuf::from(&log.file_path)) {
            Ok(f) => Some(f),
            Err(e) => {
                problem = Some(format!("cannot open log file {}: {e}", log.file_path));
                None
            }
        }
    };
    let ansi =
        !log.no_color && file.is_none() && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    let result = match (log.format, file.clone()) {
        (LogFormat::Json, Some(f)) => builder.json().with_writer(f).try_init(),
        (LogFormat::Json, None) => builder.json().with_writer(std::io::stderr).try_init(),
        (LogFormat::Common, Some(f)) => builder.with_writer(f).try_init(),
        (LogFormat::Common, None) => builder.with_writer(std::io::stderr).try_init(),
    };
    if let Err(e) = result {
        problem = Some(format!("cannot install the logger: {e}"));
    }
    (file, problem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reopen_follows_a_rotation() {
        let dir = std::env::temp_dir().join(format!("sallyport-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sallyport.log");
        let log = LogFile::open(path.clone()).unwrap();
        log.make_writer().write_all(b"before\n").unwrap();
        std::fs::rename(&path, dir.join("sallyport.log.1")).unwrap();
        log.reopen().unwrap();
        log.make_writer().write_all(b"after\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "after\n");
        assert_eq!(
            std::fs::read_to_string(dir.join("sallyport.log.1")).unwrap(),
            "before\n"
        );
    }
}
