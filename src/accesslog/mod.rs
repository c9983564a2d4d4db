//! Access logs (`accessLog`): one line per HTTP request, and — beyond Traefik — per TCP
//! connection and UDP session, in Traefik's `common`, `genericCLF` or `json` format
//! ([`format`]).
//!
//! Lines are formatted on the connection's task straight into a buffer of the worker
//! thread's own (a shard, behind an uncontended lock): no allocation and no channel per
//! line. One writer thread takes the shards' buffers in turn, at most [`BATCH_WAIT`] after a
//! line arrives (sooner when a buffer fills up), and appends them to `filePath` (or stdout),
//! so a slow disk never holds a request up. A shard holds a bounded number of bytes; a line
//! that does not fit is dropped and counted ([`AccessLog::dropped`]). `bufferingSize` (in
//! lines) sets that bound. SIGUSR1 reopens the file, for log rotation; shutdown writes what
//! is buffered ([`AccessLog::close`]).

pub mod format;

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use l4::observe::{ConnObserver, ConnRecord};
use l7::observe::{RequestObserver, RequestRecord};

pub use format::Formatter;

use crate::config::static_cfg::AccessLog as AccessLogConfig;

/// The buffers hold at least this many lines, whatever `bufferingSize` says: more than
/// [`BATCH_WAIT`] of lines at 100,000 requests a second.
pub const MIN_LINES: usize = 16 * 1024;
/// And at most this many: a bound on memory whatever the configuration.
pub const MAX_LINES: usize = 1 << 20;
/// The bytes a line is reckoned at when `bufferingSize` is turned into bytes.
const LINE_BYTES: usize = 512;
/// How long the writer lets a batch grow before writing it.
const BATCH_WAIT: Duration = Duration::from_millis(100);
/// A buffer the writer keeps for the next batch is trimmed to this after a burst.
const SPARE_CAPACITY: usize = 1 << 20;

/// An access log being written.
pub struct AccessLog {
    formatter: Formatter,
    shared: Arc<Shared>,
    /// Bytes a shard may hold before lines are dropped.
    shard_limit: usize,
    /// HTTP requests seen so far (CLF's `RequestCount`).
    requests: AtomicU64,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The metric drops are also counted in, when metrics are on.
    drop_metric: OnceLock<prometheus_client::metrics::counter::Counter>,
}

/// What the request tasks and the writer share.
struct Shared {
    shards: Box<[Mutex<Vec<u8>>]>,
    /// Lines were added since the writer last took the buffers.
    pending: AtomicBool,
    closing: AtomicBool,
    reopen: AtomicBool,
    dropped: AtomicU64,
    writer: OnceLock<std::thread::Thread>,
}

impl Shared {
    fn wake_writer(&self) {
        if let Some(writer) = self.writer.get() {
            writer.unpark();
        }
    }
}

/// The shard of the calling thread: threads take the shards in turn, so each runtime
/// worker has one of its own while there are as many shards as workers.
fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    INDEX.with(|index| *index)
}

impl AccessLog {
    /// Opens `filePath` (or stdout) and starts the writer thread. Errors name the file.
    ///
    /// The writer is a thread of its own, not a task: file writes block, and a blocking
    /// section per batch on the runtime's workers cost more than the formatting itself.
    pub fn start(cfg: &AccessLogConfig) -> Result<Arc<AccessLog>, String> {
        let formatter = Formatter::new(cfg)?;
        let path = (!cfg.file_path.is_empty()).then(|| PathBuf::from(&cfg.file_path));
        let sink = Sink::open(path.clone())?;
        let lines = usize::try_from(cfg.buffering_size)
            .unwrap_or(0)
            .clamp(MIN_LINES, MAX_LINES);
        let shards = std::thread::available_parallelism()
            .map_or(4, |n| n.get())
            .clamp(2, 64);
        let shared = Arc::new(Shared {
            shards: (0..shards).map(|_| Mutex::new(Vec::new())).collect(),
            pending: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            reopen: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            writer: OnceLock::new(),
        });
        let for_writer = shared.clone();
        let writer = std::thread::Builder::new()
            .name("access-log".to_owned())
            .spawn(move || write_batches(&for_writer, sink, path))
            .map_err(|e| format!("cannot start the access log writer: {e}"))?;
        let _ = shared.writer.set(writer.thread().clone());
        Ok(Arc::new(AccessLog {
            formatter,
            shared,
            shard_limit: (lines * LINE_BYTES / shards).max(1 << 20),
            requests: AtomicU64::new(0),
            writer: Mutex::new(Some(writer)),
            drop_metric: OnceLock::new(),
        }))
    }

    /// Appends the line `write` makes to this thread's buffer, unless it makes none (the
    /// filters leave the record out); a full buffer drops it.
    fn log(&self, write: impl FnOnce(&Formatter, &mut Vec<u8>) -> bool) {
        let shards = &self.shared.shards;
        let shard = &shards[shard_index() % shards.len()];
        let mut buffer = shard.lock().unwrap_or_else(|e| e.into_inner());
        let before = buffer.len();
        if !write(&self.formatter, &mut buffer) {
            return;
        }
        if buffer.len() > self.shard_limit {
            buffer.truncate(before);
            drop(buffer);
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            if let Some(metric) = self.drop_metric.get() {
                metric.inc();
            }
            self.shared.wake_writer();
            return;
        }
        buffer.push(b'\n');
        let half_full = buffer.len() > self.shard_limit / 2;
        drop(buffer);
        let shared = &self.shared;
        if half_full
            || (!shared.pending.load(Ordering::Relaxed)
                && !shared.pending.swap(true, Ordering::AcqRel))
        {
            shared.wake_writer();
        }
    }

    /// Counts drops in `metric` too (`<prefix>_accesslog_dropped_lines_total`).
    pub fn count_drops_in(&self, metric: prometheus_client::metrics::counter::Counter) {
        let _ = self.drop_metric.set(metric);
    }

    /// Lines dropped because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Reopens the file (after a rotation moved it), before the next lines are written.
    pub fn reopen(&self) {
        self.shared.reopen.store(true, Ordering::Release);
    }

    /// Writes what is buffered and stops the writer; lines logged afterwards are kept in the
    /// buffers and never written. Blocks until the last batch is written.
    pub fn close(&self) {
        self.shared.closing.store(true, Ordering::Release);
        self.shared.wake_writer();
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(writer) = writer
            && writer.join().is_err()
        {
            tracing::error!("the access log writer panicked");
        }
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        // The writer writes what is left and ends.
        self.shared.closing.store(true, Ordering::Release);
        self.shared.wake_writer();
    }
}

/// The writer thread: waits for lines, lets them gather, takes every shard's buffer and
/// writes it; ends after writing the last lines once the log closes.
fn write_batches(shared: &Shared, mut sink: Sink, path: Option<PathBuf>) {
    let mut spare = Vec::new();
    loop {
        while !shared.pending.load(Ordering::Acquire) && !shared.closing.load(Ordering::Acquire) {
            std::thread::park();
        }
        let closing = shared.closing.load(Ordering::Acquire);
        if !closing {
            // Waking for every line would cost a context switch per request: let the batch
            // grow for a moment. A buffer half full, or the log closing, cuts this short.
            std::thread::park_timeout(BATCH_WAIT);
        }
        // Cleared before the buffers are taken: a line added after a buffer was taken sets it
        // again, so it is written by the next round.
        shared.pending.store(false, Ordering::Release);
        if shared.reopen.swap(false, Ordering::AcqRel) {
            match Sink::open(path.clone()) {
                Ok(fresh) => sink = fresh,
                Err(e) => tracing::error!("cannot reopen the access log: {e}"),
            }
        }
        for shard in &shared.shards {
            {
                let mut buffer = shard.lock().unwrap_or_else(|e| e.into_inner());
                if buffer.is_empty() {
                    // Keeps its capacity, and the spare keeps its own: an idle shard handed
                    // an empty spare would leave the busy one regrowing its buffer from
                    // nothing at every batch.
                    continue;
                }
                std::mem::swap(&mut *buffer, &mut spare);
            }
            if let Err(e) = sink.write(&spare) {
                tracing::error!(error = %e, "cannot write the access log");
            }
            spare.clear();
            spare.shrink_to(SPARE_CAPACITY);
        }
        if closing {
            return;
        }
    }
}

impl RequestObserver for AccessLog {
    fn observe(&self, record: &RequestRecord) {
        let count = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        self.log(|formatter, line| formatter.http_line(record, count, line));
    }

    fn wanted_headers(&self) -> Option<&l7::observe::WantedHeaders> {
        self.formatter.wanted_headers()
    }

    fn wants_host(&self) -> bool {
        self.formatter.shows_host()
    }
}

impl ConnObserver for AccessLog {
    fn closed(&self, record: &ConnRecord) {
        self.log(|formatter, line| formatter.conn_line(record, line));
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

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("sallyport-accesslog-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn close_writes_every_buffered_line() {
        let dir = temp_dir("close");
        let path = dir.join("access.log");
        let cfg = AccessLogConfig {
            file_path: path.display().to_string(),
            format: "common".into(),
            ..AccessLogConfig::default()
        };
        let log = AccessLog::start(&cfg).unwrap();
        for n in 0..1000 {
            log.closed(&record(n));
        }
        // No wait: the lines are still in the buffer when close is called.
        log.close();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1000);
        assert!(text.lines().last().unwrap().contains(" 999 999 "), "{text}");
        assert_eq!(log.dropped(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_stuck_writer_costs_counted_drops_and_nothing_else() {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        let dir = temp_dir("stuck");
        let fifo = dir.join("access.fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.unwrap().success());
        // A reader that reads nothing yet: the writer blocks once the pipe is full.
        let mut reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        let cfg = AccessLogConfig {
            file_path: fifo.display().to_string(),
            format: "json".into(),
            ..AccessLogConfig::default()
        };
        let log = AccessLog::start(&cfg).unwrap();
        let metric = prometheus_client::metrics::counter::Counter::<u64>::default();
        log.count_drops_in(metric.clone());
        let sent = 20_000;
        let started = std::time::Instant::now();
        for n in 0..sent {
            log.closed(&record(n));
        }
        // Logging never waited for the writer.
        assert!(started.elapsed() < Duration::from_secs(5));
        let dropped = log.dropped();
        assert!(dropped > 0, "the buffer should have filled up");
        assert_eq!(metric.get(), dropped, "the metric counts every drop");
        let closer = {
            let log = log.clone();
            std::thread::spawn(move || log.close())
        };
        let mut text = Vec::new();
        let mut chunk = [0u8; 64 * 1024];
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            assert!(
                std::time::Instant::now() < deadline,
                "the writer never closed"
            );
            match reader.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => text.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("{e}"),
            }
        }
        closer.join().unwrap();
        let text = String::from_utf8(text).unwrap();
        let written = text.lines().count() as u64;
        assert_eq!(
            written + log.dropped(),
            sent,
            "every line written or counted"
        );
        for line in text.lines() {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
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
