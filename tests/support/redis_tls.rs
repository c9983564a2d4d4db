//! A real `redis-server` for the scenarios (tests/scenarios.rs): started on a loopback port
//! (plain, or TLS-only with a certificate), its data in a temporary directory, stopped by its
//! PID when dropped; and `redis-cli` runs against it. Tests skip (with a message) when Redis
//! is not installed. The provider tests have their own, restartable one in `redis.rs`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::programs::{Ran, installed, run_bounded};
use super::{WAIT, free_port, temp_dir};

/// A throwaway `redis-server` with persistence off. With TLS it listens for TLS only (no
/// plaintext port) and asks no client certificate.
pub struct RedisServer {
    pub port: u16,
    pub tls: bool,
    child: Option<Child>,
    dir: PathBuf,
    log_path: PathBuf,
}

impl RedisServer {
    /// Starts a server on `127.0.0.1:port`, with TLS when `tls` names a certificate and key.
    /// `None` (after saying why) if `redis-server` is not installed.
    pub fn start_on(tag: &str, port: u16, tls: Option<(&Path, &Path)>) -> Option<RedisServer> {
        if !installed(&["redis-server", "redis-cli"]) {
            return None;
        }
        let dir = temp_dir(tag);
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir);
        match tls {
            Some((cert, key)) => {
                cmd.args(["--port", "0", "--tls-port", &port.to_string()])
                    .arg("--tls-cert-file")
                    .arg(cert)
                    .arg("--tls-key-file")
                    .arg(key)
                    .args(["--tls-auth-clients", "no"]);
            }
            None => {
                cmd.args(["--port", &port.to_string()]);
            }
        }
        let log_path = dir.join("redis.log");
        let log = std::fs::File::create(&log_path).expect("redis log");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("dup log")))
            .stderr(Stdio::from(log));
        let child = cmd.spawn().expect("start redis-server");
        let server = RedisServer {
            port,
            tls: tls.is_some(),
            child: Some(child),
            dir,
            log_path,
        };
        server.wait_ready();
        Some(server)
    }

    /// [`RedisServer::start_on`] a free port.
    pub fn start(tag: &str, tls: Option<(&Path, &Path)>) -> Option<RedisServer> {
        RedisServer::start_on(tag, free_port(), tls)
    }

    fn wait_ready(&self) {
        let start = Instant::now();
        while start.elapsed() < WAIT {
            if self.log().contains("Ready to accept connections") {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server never became ready:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// `redis-cli` straight to this server (TLS with `ca` when it runs TLS): `args` as one
    /// command, raw output.
    pub fn cli(&self, ca: Option<&Path>, args: &[&str]) -> Ran {
        let mut cmd = Command::new("redis-cli");
        if self.tls {
            cmd.arg("--tls");
            if let Some(ca) = ca {
                cmd.arg("--cacert").arg(ca);
            }
        }
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "--raw"])
            .args(args);
        run_bounded(&mut cmd, b"", WAIT)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- redis log ---\n{}", self.log());
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
