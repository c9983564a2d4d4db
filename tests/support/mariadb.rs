//! A real MariaDB server (Debian's `mariadb-server`) as a test backend.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{TestCert, WAIT, free_port, programs, temp_dir};

/// A throwaway MariaDB server on `127.0.0.1:<port>` (Debian's `mariadb-server`), with TLS
/// on `cert`, and the accounts `bob` (mysql_native_password, password `secret`) and
/// `carol` (ed25519, password `secret`). Run as the `mysql` account when the tests run as
/// root. Stopped by its PID, and its directory removed, when dropped.
pub struct MariaDb {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl MariaDb {
    /// `None` (after saying why) when the server is not installed.
    pub fn start(tag: &str, cert: &TestCert) -> Option<MariaDb> {
        if !programs::installed(&["mariadbd", "mariadb-install-db", "mariadb"]) {
            return None;
        }
        let as_root = std::fs::metadata("/proc/self")
            .is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0);
        let dir = temp_dir(tag).join("mariadb");
        let data = dir.join("data");
        std::fs::create_dir_all(&data).expect("data dir");
        let (c, k) = cert.write(&dir, "server");
        let mut common = vec![
            "--no-defaults".to_owned(),
            format!("--datadir={}", data.display()),
            "--innodb-log-file-size=4M".to_owned(),
        ];
        if as_root {
            common.push("--user=mysql".to_owned());
            let ran = programs::run_bounded(
                Command::new("chown").arg("-R").arg("mysql:mysql").arg(&dir),
                b"",
                WAIT,
            );
            assert!(ran.success(), "chown: {ran:?}");
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        let ran = programs::run_bounded(
            Command::new("mariadb-install-db")
                .args(&common)
                .args(["--auth-root-authentication-method=normal", "--skip-test-db"]),
            b"",
            Duration::from_secs(120),
        );
        assert!(ran.success(), "mariadb-install-db: {ran:?}");
        let port = free_port();
        let socket = dir.join("mysqld.sock");
        let log = std::fs::File::create(dir.join("server.log")).expect("log");
        let child = Command::new("mariadbd")
            .args(&common)
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--pid-file={}", dir.join("mysqld.pid").display()))
            .arg(format!("--ssl-cert={}", c.display()))
            .arg(format!("--ssl-key={}", k.display()))
            .args(["--skip-log-bin", "--skip-name-resolve"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("dup log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start mariadbd");
        let server = MariaDb {
            port,
            dir,
            child: Some(child),
        };
        assert!(
            programs::port_open_within(port, Duration::from_secs(30)),
            "mariadbd never listened:\n{}",
            server.log()
        );
        let ran = programs::run_bounded(
            Command::new("mariadb")
                .arg(format!("--socket={}", socket.display()))
                .args(["-u", "root", "-e"])
                .arg(
                    "INSTALL SONAME 'auth_ed25519'; \
                     CREATE USER bob@'%' IDENTIFIED BY 'secret'; \
                     CREATE USER carol@'%' IDENTIFIED VIA ed25519 USING PASSWORD('secret'); \
                     GRANT ALL ON *.* TO bob@'%', carol@'%';",
                ),
            b"",
            // The server listens before InnoDB is done starting; on a loaded machine the
            // first statement can wait for it well past the tests' usual bound.
            Duration::from_secs(60),
        );
        assert!(ran.success(), "create users: {ran:?}\n{}", server.log());
        Some(server)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- mariadb log ---\n{}", self.log());
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(parent) = self.dir.parent() {
            let _ = std::fs::remove_dir_all(parent);
        }
    }
}
