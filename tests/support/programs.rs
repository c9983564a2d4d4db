//! Real programs as test peers (psql, openssl, curl, nc, a PostgreSQL server): finding
//! them on the machine, running a client to completion within a bound, keeping a
//! server or an interactive client running, and stopping each by its PID. Tests skip
//! (with a message) when a program is missing; CI installs them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener as StdListener, TcpStream as StdStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{TestCert, WAIT, free_port};

/// The path of `name` on `PATH`, if it is installed there.
pub fn program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
        })
}

/// True if every program in `names` is installed; otherwise says which one is not,
/// so the calling test can return early as skipped.
pub fn installed(names: &[&str]) -> bool {
    for name in names {
        if program(name).is_none() {
            eprintln!("skipped: {name} not installed");
            return false;
        }
    }
    true
}

/// True once something accepts TCP connections on `127.0.0.1:port`, false after `within`.
pub fn port_open_within(port: u16, within: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < within {
        if StdStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// True if nothing listens on `127.0.0.1:port` right now (it can be bound).
pub fn port_is_free(port: u16) -> bool {
    StdListener::bind(("127.0.0.1", port)).is_ok()
}

/// What a program printed, and how it ended.
#[derive(Debug)]
pub struct Ran {
    /// `None` if the program was killed because it ran past its bound.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }
}

/// Runs `cmd` to completion with `input` on its stdin, killing it (by PID) if it is
/// still running after `within`.
/// Waits up to `within` for `child` (already asked to stop) to exit, then kills and reaps it.
pub fn reap_within(child: &mut Child, within: Duration) {
    let start = Instant::now();
    while start.elapsed() < within && !matches!(child.try_wait(), Ok(Some(_))) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

pub fn run_bounded(cmd: &mut Command, input: &[u8], within: Duration) -> Ran {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    if let Some(mut stdin) = child.stdin.take() {
        // A client that exits before reading its input is not an error here.
        let _ = stdin.write_all(input);
    }
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if start.elapsed() < within => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    Ran {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// Reads a pipe to its end on a thread, so a chatty program never blocks on a full pipe.
fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// A program left running (a server, or an interactive client), stopped by its PID
/// when dropped. Its stdout arrives line by line; stderr is kept for failure messages.
pub struct Running {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Running {
    pub fn start(cmd: &mut Command) -> Running {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
        let (tx, lines) = channel();
        if let Some(out) = child.stdout.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let stderr = Arc::new(Mutex::new(String::new()));
        if let Some(mut err) = child.stderr.take() {
            let sink = stderr.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n) = err.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut s) = sink.lock() {
                        s.push_str(&String::from_utf8_lossy(&buf[..n]));
                    }
                }
            });
        }
        Running {
            stdin: child.stdin.take(),
            child,
            lines,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Writes `text` to the program's stdin.
    pub fn send(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin.write_all(text.as_bytes()).expect("write to stdin");
        stdin.flush().expect("flush stdin");
    }

    /// The next stdout line, waiting at most [`WAIT`]; panics with stderr otherwise.
    pub fn next_line(&mut self) -> String {
        match self.lines.recv_timeout(WAIT) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                panic!("no output line within {WAIT:?}; stderr:\n{}", self.stderr())
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.try_wait().ok().flatten();
                panic!("stdout closed ({status:?}); stderr:\n{}", self.stderr())
            }
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `openssl s_server -www` on an ephemeral port, serving `cert` and selecting from
/// `alpn` (comma-separated). It answers `GET /` with `HTTP/1.0 200 ok` and a page
/// describing the TLS session. Ready once its port accepts connections.
pub fn openssl_www_server(dir: &Path, cert: &TestCert, alpn: &str) -> (Running, u16) {
    let (c, k) = cert.write(dir, "s_server");
    let port = free_port();
    let server = Running::start(
        Command::new("openssl")
            .arg("s_server")
            .arg("-accept")
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(&c)
            .arg("-key")
            .arg(&k)
            .args(["-alpn", alpn, "-www"]),
    );
    assert!(
        port_open_within(port, WAIT),
        "openssl s_server never listened on {port}:\n{}",
        server.stderr()
    );
    (server, port)
}

/// A throwaway PostgreSQL cluster on `127.0.0.1:<port>` with `trust` authentication
/// for the `postgres` role, its data and unix socket in a temporary directory.
/// Stopped (fast shutdown, by the postmaster's PID) when dropped.
pub struct PgServer {
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
    log_path: PathBuf,
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The uid and gid of the `postgres` account (`initdb` and `postgres` refuse to run
/// as root).
fn postgres_account() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != "postgres" {
            return None;
        }
        let uid = fields.nth(1)?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some((uid, gid))
    })
}

/// The `bin` directory of the newest PostgreSQL server installed the Debian way.
fn pg_bin_dir() -> Option<PathBuf> {
    let mut best: Option<(u32, PathBuf)> = None;
    for entry in std::fs::read_dir("/usr/lib/postgresql").ok()?.flatten() {
        let bin = entry.path().join("bin");
        let Some(version) = entry
            .file_name()
            .to_str()
            .and_then(|v| v.parse::<u32>().ok())
        else {
            continue;
        };
        if bin.join("postgres").is_file()
            && bin.join("initdb").is_file()
            && best.as_ref().is_none_or(|(v, _)| version > *v)
        {
            best = Some((version, bin));
        }
    }
    best.map(|(_, bin)| bin)
}

impl PgServer {
    /// Initialises and starts a cluster; with `tls`, `ssl=on` with that certificate.
    /// `None` (after saying why) if no PostgreSQL server is installed, or if running
    /// as root without a `postgres` account to run it as.
    pub fn start(tag: &str, tls: Option<&TestCert>) -> Option<PgServer> {
        let Some(bin) = pg_bin_dir() else {
            eprintln!(
                "skipped: PostgreSQL server (/usr/lib/postgresql/*/bin/postgres) not installed"
            );
            return None;
        };
        // As root, PostgreSQL runs as the `postgres` account; otherwise as ourselves.
        let owner = if running_as_root() {
            let Some(account) = postgres_account() else {
                eprintln!("skipped: running as root and no postgres account to run PostgreSQL as");
                return None;
            };
            Some(account)
        } else {
            None
        };
        let dir = super::temp_dir(tag).join("pg");
        std::fs::create_dir(&dir).expect("pg dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let as_owner = |cmd: &mut Command| {
            if let Some((uid, gid)) = owner {
                use std::os::unix::process::CommandExt;
                cmd.uid(uid).gid(gid);
            }
        };
        let chown = |p: &Path| {
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(p, Some(uid), Some(gid)).expect("chown");
            }
        };
        chown(&dir);

        let data = dir.join("data");
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .current_dir(&dir);
        as_owner(&mut initdb);
        let ran = run_bounded(&mut initdb, b"", Duration::from_secs(30));
        assert!(ran.success(), "initdb failed: {ran:?}");

        let port = free_port();
        let mut postgres = Command::new(bin.join("postgres"));
        postgres
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", dir.display()))
            .args(["-c", "fsync=off"]);
        match tls {
            Some(cert) => {
                let (c, k) = cert.write(&dir, "server");
                // PostgreSQL refuses a key that others can read.
                std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o600))
                    .expect("chmod key");
                chown(&c);
                chown(&k);
                postgres
                    .args(["-c", "ssl=on"])
                    .arg("-c")
                    .arg(format!("ssl_cert_file={}", c.display()))
                    .arg("-c")
                    .arg(format!("ssl_key_file={}", k.display()));
            }
            None => {
                postgres.args(["-c", "ssl=off"]);
            }
        }
        let log_path = dir.join("postgres.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        postgres
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("dup log")))
            .stderr(Stdio::from(log));
        as_owner(&mut postgres);
        let child = postgres.spawn().expect("start postgres");
        let server = PgServer {
            port,
            dir,
            child: Some(child),
            log_path,
        };
        server.wait_ready(&bin);
        Some(server)
    }

    /// Waits until `pg_isready` says the server accepts connections.
    fn wait_ready(&self, bin: &Path) {
        let start = Instant::now();
        while start.elapsed() < WAIT {
            let ran = run_bounded(
                Command::new(bin.join("pg_isready")).args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-t",
                    "1",
                ]),
                b"",
                Duration::from_secs(3),
            );
            if ran.success() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("PostgreSQL never became ready:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- postgres log ({}) ---\n{}",
                self.log_path.display(),
                self.log()
            );
        }
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SIGINT is PostgreSQL's fast shutdown: backends end, the postmaster exits.
        let _ = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        reap_within(&mut child, WAIT);
        // A cluster takes about 40 MB; a failed test's is kept for its log.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
            if let Some(parent) = self.dir.parent() {
                let _ = std::fs::remove_dir(parent);
            }
        }
    }
}
