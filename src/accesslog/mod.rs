//! Access logs (`accessLog`): one line per HTTP request, and — beyond Traefik — per TCP
//! connection and UDP session, in Traefik's `common`, `genericCLF` or `json` format
//! ([`format`]).
//!
//! Lines are formatted on the connection's task and handed to a bounded queue; one writer
//! thread appends them to `filePath` (or stdout), so a slow disk never holds a request up.
//! When the queue is full the line is dropped and counted ([`AccessLog::dropped`]).
//! `bufferingSize` sets the queue's length (at least [`MIN_QUEUE`]). SIGUSR1 reopens the file,
//! for log rotation.

pub mod format;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use l4::observe::{ConnObserver, ConnRecord};
use l7::observe::{RequestObserver, RequestRecord};

pub use format::{Entry, Formatter, HttpEntry};

use crate::config::static_cfg::AccessLog as AccessLogConfig;

/// The queue holds at least this many lines, whatever `bufferingSize` says: more than
/// [`BATCH_WAIT`] of lines at 100,000 requests a second.
pub const MIN_QUEUE: usize = 16 * 1024;
/// How long the writer lets a small batch grow.
const BATCH_WAIT: std::time::Duration = std::time::Duration::from_millis(20);
/// And at most this many: a bound on memory whatever the configuration.
pub const MAX_QUEUE: usize = 1 << 20;

/// An access log being written.
pub struct AccessLog {
    formatter: Formatter,
    queue: std::sync::mpsc::SyncSender<String>,
    dropped: AtomicU64,
    reopen: Arc<AtomicBool>,
    /// HTTP requests seen so far (CLF's `RequestCount`).
    requests: AtomicU64,
}

impl AccessLog {
    /// Opens `filePath` (or stdout) and starts the writer thread. Errors name the file.
    ///
    /// The writer is a thread of its own, not a task: file writes block, and a blocking
    /// section per batch on the runtime's workers cost more than the formatting itself.
    pub fn start(cfg: &AccessLogConfig) -> Result<Arc<AccessLog>, String> {
        let formatter = Formatter::new(cfg)?;
        let path = (!cfg.file_path.is_empty()).then(|| PathBuf::from(&cfg.file_path));
        let mut sink = Sink::open(path.clone())?;
        let capacity = usize::try_from(cfg.buffering_size)
            .unwrap_or(0)
            .clamp(MIN_QUEUE, MAX_QUEUE);
        let (queue, lines) = std::sync::mpsc::sync_channel::<String>(capacity);
        let reopen = Arc::new(AtomicBool::new(false));
        let reopened = reopen.clone();
        std::thread::Builder::new()
            .name("access-log".to_owned())
            .spawn(move || {
                let mut batch = String::with_capacity(64 * 1024);
                // Ends when the log is dropped (every sender gone).
                while let Ok(line) = lines.recv() {
                    batch.clear();
                    batch.push_str(&line);
                    batch.push('\n');
                    while batch.len() < 64 * 1024 {
                        match lines.try_recv() {
                            Ok(more) => {
                                batch.push_str(&more);
                                batch.push('\n');
                            }
                            Err(_) => break,
                        }
                    }
                    if reopened.swap(false, Ordering::AcqRel) {
                        match Sink::open(path.clone()) {
                            Ok(fresh) => sink = fresh,
                            Err(e) => tracing::error!("cannot reopen the access log: {e}"),
                        }
                    }
                    if let Err(e) = sink.write(batch.as_bytes()) {
                        tracing::error!(error = %e, "cannot write the access log");
                    }
                    // Under load, waking for every line would cost a context switch per
                    // request: let a small batch grow for a moment instead. Lines reach
                    // the file at most this late.
                    if batch.len() < 64 * 1024 {
                        std::thread::sleep(BATCH_WAIT);
                    }
                }
            })
            .map_err(|e| format!("cannot start the access log writer: {e}"))?;
        Ok(Arc::new(AccessLog {
            formatter,
            queue,
            dropped: AtomicU64::new(0),
            reopen,
            requests: AtomicU64::new(0),
        }))
    }

    /// Queues the line for `entry`, unless the filters leave it out; a full queue drops it.
    pub fn log(&self, entry: &Entry) {
        let Some(line) = self.formatter.line(entry) else {
            return;
        };
        if self.queue.try_send(line).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Lines dropped because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Reopens the file (after a rotation moved it), before the next lines are written.
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
    }
}

impl RequestObserver for AccessLog {
    fn observe(&self, record: &RequestRecord) {
        let count = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        self.log(&Entry::Http(http_entry(record, count)));
    }

    fn wanted_headers(&self) -> Option<&l7::observe::WantedHeaders> {
        self.formatter.wanted_headers()
    }
}

/// The access log's view of a request record.
fn http_entry(r: &RequestRecord, request_count: u64) -> HttpEntry {
    let headers = r
        .headers
        .iter()
        .flatten()
        .filter_map(|(name, value)| {
            value
                .to_str()
                .ok()
                .map(|v| (name.as_str().to_owned(), v.to_owned()))
        })
        .collect();
    HttpEntry {
        entrypoint: r.entrypoint.to_string(),
        client: r.client,
        username: r.username.clone(),
        started: r.started,
        duration: r.duration,
        method: r.method.as_str().to_owned(),
        path: r
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".to_owned()),
        protocol: match r.version {
            http::Version::HTTP_09 => "HTTP/0.9",
            http::Version::HTTP_10 => "HTTP/1.0",
            http::Version::HTTP_2 => "HTTP/2.0",
            http::Version::HTTP_3 => "HTTP/3.0",
            _ => "HTTP/1.1",
        }
        .to_owned(),
        host: r
            .host
            .as_ref()
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
            .to_owned(),
        tls: r.tls.is_some(),
        status: r.status.as_u16(),
        request_bytes: r.request_bytes,
        response_bytes: r.response_bytes,
        router: r.router.as_deref().map(str::to_owned),
        service: r.service.as_deref().map(str::to_owned),
        service_url: r.server.clone(),
        retry_attempts: r.retries,
        request_headers: headers,
        request_count,
    }
}

impl ConnObserver for AccessLog {
    fn closed(&self, record: &ConnRecord) {
        self.log(&Entry::Conn(record.clone()));
    }
}

/// Where lines go.
enum Sink {
    Stdout,
    File(std::fs::File),
}

impl Sink {
    fn open(path: Option<PathBuf>) -> Result<Sink, String> {
        match path {
            None => Ok(Sink::Stdout),
            Some(path) => std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map(Sink::File)
                .map_err(|e| format!("accessLog.filePath {}: {e}", path.display())),
        }
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(bytes)?;
                out.flush()
            }
            Sink::File(file) => file.write_all(bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn record(n: u64) -> ConnRecord {
        ConnRecord {
            transport: l4::observe::Transport::Tcp,
            entrypoint: Arc::from("tcp"),
            client: "127.0.0.1:4000".parse().unwrap(),
            sni: None,
            alpn: None,
            router: Some(Arc::from("r@file")),
            service: Some(Arc::from("s@file")),
            backend: Some("127.0.0.1:9".into()),
            bytes_in: n,
            bytes_out: n,
            datagrams_in: 0,
            datagrams_out: 0,
            started: SystemTime::now(),
            duration: Duration::from_millis(1),
            reason: l4::observe::CloseReason::Closed,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lines_reach_the_file_and_reopen_follows_a_rotation() {
        let dir = std::env::temp_dir().join(format!("sallyport-accesslog-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("access.log");
        let cfg = AccessLogConfig {
            file_path: path.display().to_string(),
            format: "json".into(),
            ..AccessLogConfig::default()
        };
        let log = AccessLog::start(&cfg).unwrap();
        log.closed(&record(1));
        let wait_lines = |path: &std::path::Path, n: usize| {
            let start = std::time::Instant::now();
            loop {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                if text.lines().count() >= n {
                    return text;
                }
                assert!(start.elapsed() < Duration::from_secs(5), "only {text:?}");
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        let first = wait_lines(&path, 1);
        assert!(first.contains("\"BytesIn\":1"), "{first}");
        std::fs::rename(&path, dir.join("access.log.1")).unwrap();
        log.reopen();
        std::thread::sleep(Duration::from_millis(100));
        log.closed(&record(2));
        let second = wait_lines(&path, 1);
        assert!(second.contains("\"BytesIn\":2"), "{second}");
        assert_eq!(log.dropped(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_file_that_cannot_be_opened_is_an_error_naming_it() {
        let cfg = AccessLogConfig {
            file_path: "/nonexistent-dir/access.log".into(),
            ..AccessLogConfig::default()
        };
        let err = tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(async { AccessLog::start(&cfg).err().unwrap() });
        assert!(err.contains("/nonexistent-dir/access.log"), "{err}");
    }
}
