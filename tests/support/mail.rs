//! Real mail servers as test backends: Dovecot (Debian's `dovecot-imapd` and
//! `dovecot-pop3d`) for IMAP and POP3, Postfix (Debian's `postfix`) and an `aiosmtpd`
//! (PyPI) SMTP server that spools what it receives. All offer STARTTLS with a test
//! certificate and also accept plaintext sessions (for routers that terminate TLS).
//! Stopped by their PID when dropped.

use std::path::{Path, PathBuf};
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

    /// The directory holding each user's home (`<home>/<user>/Maildir` is the mailbox),
    /// owned by the `mail` account: where a local delivery agent drops mail for Dovecot.
    pub fn homes(&self) -> PathBuf {
        self.dir.join("home")
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
        programs::reap_within(&mut child, WAIT);
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

/// The services of Postfix's `master.cf` that a local submission server needs, after the
/// `smtpd` listener (no chroot: the queue lives in a temporary directory).
const POSTFIX_SERVICES: &str = "\
pickup    unix  n  -  n  60    1  pickup
cleanup   unix  n  -  n  -     0  cleanup
qmgr      unix  n  -  n  300   1  qmgr
rewrite   unix  -  -  n  -     -  trivial-rewrite
bounce    unix  -  -  n  -     0  bounce
defer     unix  -  -  n  -     0  bounce
trace     unix  -  -  n  -     0  bounce
verify    unix  -  -  n  -     1  verify
flush     unix  n  -  n  1000? 0  flush
proxymap  unix  -  -  n  -     -  proxymap
error     unix  -  -  n  -     -  error
retry     unix  -  -  n  -     -  error
discard   unix  -  -  n  -     -  discard
virtual   unix  -  n  n  -     -  virtual
anvil     unix  -  -  n  -     1  anvil
scache    unix  -  -  n  -     1  scache
postlog   unix-dgram n - n -   1  postlogd
tlsmgr    unix  -  -  n  1000? 1  tlsmgr
";

/// Postfix accepting mail on `127.0.0.1:<port>` (STARTTLS offered with a test certificate,
/// plaintext accepted from loopback) for `bob@<domain>`, delivered by its `virtual` agent
/// as the `mail` account into `<homes>/bob/Maildir/`. A throwaway configuration directory
/// (`postfix -c`), queue and log; the master runs in the foreground (`start-fg`) and is
/// stopped with `postfix stop` when dropped. Needs root, as Postfix always does.
pub struct Postfix {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Postfix {
    /// `None` (after saying why) when Postfix is not installed or the tests are not root.
    pub fn start(tag: &str, cert: &TestCert, domain: &str, homes: &Path) -> Option<Postfix> {
        if !programs::installed(&["postfix"]) {
            return None;
        }
        if !running_as_root() {
            eprintln!("skipped: Postfix needs to start as root");
            return None;
        }
        let dir = temp_dir(tag).join("postfix");
        let (conf, data) = (dir.join("conf"), dir.join("data"));
        std::fs::create_dir_all(&conf).expect("conf dir");
        std::fs::create_dir_all(dir.join("queue")).expect("queue dir");
        std::fs::create_dir_all(&data).expect("data dir");
        // The master's lock file lives in data_directory, which must belong to Postfix.
        let ran = programs::run_bounded(Command::new("chown").arg("postfix").arg(&data), b"", WAIT);
        if !ran.success() {
            eprintln!("skipped: no `postfix` account: {ran:?}");
            return None;
        }
        let (c, k) = cert.write(&conf, "server");
        let port = free_port();
        let d = dir.display();
        let main = format!(
            "compatibility_level = 3.6\n\
             queue_directory = {d}/queue\n\
             data_directory = {d}/data\n\
             maillog_file = {d}/maillog\n\
             maillog_file_prefixes = {d}\n\
             syslog_name = sallyport-test-postfix\n\
             myhostname = smtp.{domain}\n\
             myorigin = {domain}\n\
             mydestination =\n\
             inet_interfaces = 127.0.0.1\n\
             inet_protocols = ipv4\n\
             mynetworks = 127.0.0.0/8\n\
             alias_maps =\n\
             alias_database =\n\
             smtpd_tls_cert_file = {}\n\
             smtpd_tls_key_file = {}\n\
             smtpd_tls_security_level = may\n\
             smtpd_tls_received_header = yes\n\
             virtual_mailbox_domains = {domain}\n\
             virtual_mailbox_base = {}\n\
             virtual_mailbox_maps = texthash:{d}/conf/mailboxes\n\
             virtual_uid_maps = static:{uid}\n\
             virtual_gid_maps = static:{gid}\n\
             virtual_minimum_uid = 1\n",
            c.display(),
            k.display(),
            homes.display(),
            uid = mail_id("-u")?,
            gid = mail_id("-g")?,
        );
        std::fs::write(conf.join("main.cf"), main).expect("main.cf");
        std::fs::write(
            conf.join("master.cf"),
            format!("127.0.0.1:{port} inet n - n - - smtpd\n{POSTFIX_SERVICES}"),
        )
        .expect("master.cf");
        std::fs::write(
            conf.join("mailboxes"),
            format!("bob@{domain} bob/Maildir/\n"),
        )
        .expect("mailboxes");
        let child = Command::new("postfix")
            .arg("-c")
            .arg(&conf)
            .arg("start-fg")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start postfix");
        let server = Postfix {
            port,
            dir,
            child: Some(child),
        };
        assert!(
            programs::port_open_within(port, WAIT),
            "Postfix never listened:\n{}",
            server.log()
        );
        Some(server)
    }

    /// The mail log (connections, TLS, deliveries).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("maillog")).unwrap_or_default()
    }
}

/// The user or group id (`id -u mail` / `id -g mail`) of the `mail` account.
fn mail_id(flag: &str) -> Option<String> {
    let ran = programs::run_bounded(Command::new("id").args([flag, "mail"]), b"", WAIT);
    if !ran.success() {
        eprintln!("skipped: no `mail` account to deliver mail as: {ran:?}");
        return None;
    }
    Some(ran.stdout.trim().to_owned())
}

impl Drop for Postfix {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- postfix log ---\n{}", self.log());
        }
        let Some(mut child) = self.child.take() else {
            return;
        };
        // `postfix stop` has the master stop its services and exit; start-fg then returns.
        let _ = programs::run_bounded(
            Command::new("postfix")
                .arg("-c")
                .arg(self.dir.join("conf"))
                .arg("stop"),
            b"",
            WAIT,
        );
        programs::reap_within(&mut child, WAIT);
        if let Some(parent) = self.dir.parent() {
            let _ = std::fs::remove_dir_all(parent);
        }
    }
}
