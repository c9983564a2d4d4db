//! Real mail servers as test backends: Dovecot (Debian's `dovecot-imapd` and
//! `dovecot-pop3d`) for IMAP and POP3, and an `aiosmtpd` (PyPI) SMTP server that spools
//! what it receives. Both offer STARTTLS with a test certificate and also accept
//! plaintext sessions (for routers that terminate TLS). Stopped by their PID when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::programs::{self, Running};
use super::{TestCert, WAIT, free_port, temp_dir};

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
}

/// Dovecot serving IMAP and POP3 with STARTTLS on loopback, with one account `bob`
/// (password `secret`) whose mail lives in a temporary directory.
pub struct Dovecot {
    pub imap_port: u16,
    pub pop3_port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Dovecot {
    /// `None` (after saying why) when Dovecot is not installed or cannot run here
    /// (it needs root to switch to its own accounts).
    pub fn start(tag: &str, cert: &TestCert) -> Option<Dovecot> {
        if !programs::installed(&["dovecot"]) {
            return None;
        }
        if !running_as_root() {
            eprintln!("skipped: Dovecot needs to start as root");
            return None;
        }
        let dir = temp_dir(tag).join("dovecot");
        let home = dir.join("home");
        std::fs::create_dir_all(&home).expect("home dir");
        let ran = programs::run_bounded(
            Command::new("chown").args(["-R", "mail:mail"]).arg(&home),
            b"",
            WAIT,
        );
        if !ran.success() {
            eprintln!("skipped: no `mail` account to store mail as: {ran:?}");
            return None;
        }
        let (c, k) = cert.write(&dir, "server");
        std::fs::write(dir.join("passwd"), "bob:{PLAIN}secret:::::\n").expect("passwd");
        let (imap_port, pop3_port) = (free_port(), free_port());
        let d = dir.display();
        let config = format!(
            "base_dir = {d}/run\n\
             state_dir = {d}/state\n\
             instance_name = sallyport-{imap_port}\n\
             log_path = {d}/dovecot.log\n\
             protocols = imap pop3\n\
             listen = 127.0.0.1\n\
             ssl = yes\n\
             ssl_cert = <{}\n\
             ssl_key = <{}\n\
             disable_plaintext_auth = no\n\
             auth_mechanisms = plain login\n\
             first_valid_uid = 1\n\
             first_valid_gid = 1\n\
             mail_location = maildir:{d}/home/%u/Maildir\n\
             service imap-login {{\n  inet_listener imap {{\n    port = {imap_port}\n  }}\n  inet_listener imaps {{\n    port = 0\n  }}\n}}\n\
             service pop3-login {{\n  inet_listener pop3 {{\n    port = {pop3_port}\n  }}\n  inet_listener pop3s {{\n    port = 0\n  }}\n}}\n\
             passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN {d}/passwd\n}}\n\
             userdb {{\n  driver = static\n  args = uid=mail gid=mail home={d}/home/%u\n}}\n",
            c.display(),
            k.display()
        );
        let conf = dir.join("dovecot.conf");
        std::fs::write(&conf, config).expect("dovecot.conf");
        let child = Command::new("dovecot")
            .arg("-F")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dovecot");
        let server = Dovecot {
            imap_port,
            pop3_port,
            dir,
            child: Some(child),
        };
        server.wait_ready();
        Some(server)
    }

    /// Waits until the IMAP greeting is the real one (Dovecot first answers "Waiting for
    /// authentication process" while it starts).
    fn wait_ready(&self) {
        use std::io::Read;
        let start = Instant::now();
        while start.elapsed() < WAIT {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.imap_port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                let mut greeting = [0u8; 512];
                if let Ok(n) = s.read(&mut greeting)
                    && String::from_utf8_lossy(&greeting[..n]).contains("ready.")
                {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("Dovecot never became ready:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dovecot.log")).unwrap_or_default()
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- dovecot log ---\n{}", self.log());
        }
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SIGTERM: the master stops its login, auth and mail processes before exiting.
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < WAIT {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        if let Some(parent) = self.dir.parent() {
            let _ = std::fs::remove_dir_all(parent);
        }
    }
}

/// The aiosmtpd server script: STARTTLS offered, not required; every message is
/// appended to the spool file with its envelope and whether it came over TLS.
const SMTPD: &str = r#"
import ssl, sys
from aiosmtpd.controller import Controller
port, cert, key, spool = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
class Spool:
    async def handle_DATA(self, server, session, envelope):
        with open(spool, "a") as f:
            f.write(f"from={envelope.mail_from} to={','.join(envelope.rcpt_tos)} tls={session.ssl is not None}\n")
            f.write(envelope.content.decode("utf8", "replace") + "\n.\n")
        return "250 OK delivered"
ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(cert, key)
c = Controller(Spool(), hostname="127.0.0.1", port=port, tls_context=ctx,
               require_starttls=False, server_hostname="smtp.backend.test")
c.start()
print("ready", flush=True)
sys.stdin.read()
c.stop()
"#;

/// An SMTP server (Python `aiosmtpd`) on loopback that spools what it receives.
pub struct Smtpd {
    pub port: u16,
    spool: PathBuf,
    _server: Running,
}

impl Smtpd {
    /// `None` (after saying why) when Python or `aiosmtpd` is missing.
    pub fn start(tag: &str, cert: &TestCert) -> Option<Smtpd> {
        if !programs::installed(&["python3"]) {
            return None;
        }
        let probe = programs::run_bounded(
            Command::new("python3").args(["-c", "import aiosmtpd"]),
            b"",
            WAIT,
        );
        if !probe.success() {
            eprintln!("skipped: Python module aiosmtpd not installed (pip install aiosmtpd)");
            return None;
        }
        let dir = temp_dir(tag);
        let (c, k) = cert.write(&dir, "smtpd");
        let script = dir.join("smtpd.py");
        std::fs::write(&script, SMTPD).expect("script");
        let spool = dir.join("spool.txt");
        let port = free_port();
        let mut server = Running::start(
            Command::new("python3")
                .arg(&script)
                .arg(port.to_string())
                .arg(&c)
                .arg(&k)
                .arg(&spool),
        );
        assert_eq!(server.next_line(), "ready");
        Some(Smtpd {
            port,
            spool,
            _server: server,
        })
    }

    /// Everything delivered so far.
    pub fn spool(&self) -> String {
        std::fs::read_to_string(&self.spool).unwrap_or_default()
    }
}
