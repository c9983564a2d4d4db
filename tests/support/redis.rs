//! A real `redis-server` for the Redis provider's tests, on a free loopback port, with an
//! append-only file synced on every write so that a stop (SIGKILL, by PID) and a restart
//! keep the keys. `redis-cli` writes the keys.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use super::programs::{Running, installed, run_bounded};
use super::{WAIT, free_port, temp_dir};

pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    server: Option<Running>,
}

impl RedisServer {
    /// Starts a server, or says why not and returns `None` (the test is then skipped).
    pub fn start(tag: &str) -> Option<RedisServer> {
        if !installed(&["redis-server", "redis-cli"]) {
            return None;
        }
        let mut server = RedisServer {
            port: free_port(),
            dir: temp_dir(tag),
            server: None,
        };
        server.restart();
        Some(server)
    }

    /// Stops the server by its PID.
    pub fn stop(&mut self) {
        self.server = None;
    }

    /// Starts the server again on the same port and data directory; returns once it
    /// answers `PING`.
    pub fn restart(&mut self) {
        self.stop();
        let running = Running::start(
            Command::new("redis-server")
                .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
                .arg("--dir")
                .arg(&self.dir)
                .args([
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                    "--save",
                    "",
                ])
                .args(["--protected-mode", "no", "--daemonize", "no"]),
        );
        self.server = Some(running);
        let start = Instant::now();
        while start.elapsed() < WAIT {
            if self.try_cli(&["PING"]).as_deref() == Some("PONG") {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server on port {} never answered", self.port);
    }

    fn try_cli(&self, args: &[&str]) -> Option<String> {
        let ran = run_bounded(
            Command::new("redis-cli")
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .args(args),
            b"",
            WAIT,
        );
        ran.success().then(|| ran.stdout.trim().to_owned())
    }

    /// Runs one command with `redis-cli`; returns its answer.
    pub fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args)
            .unwrap_or_else(|| panic!("redis-cli {args:?} failed on port {}", self.port))
    }

    pub fn set(&self, key: &str, value: &str) {
        assert_eq!(self.cli(&["SET", key, value]), "OK");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
