//! Shared test support: the real `sallyport` binary on ephemeral ports, and real
//! backends (TLS servers with their own certificates, plain echo and banner servers,
//! a PROXY-protocol recorder). Written once; every integration test uses these.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ppp::PartialResult;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub mod auth_server;
pub mod config_server;
pub mod etcd;
pub mod examples;
pub mod grpc;
pub mod grpc_web;
pub mod mail;
pub mod mariadb;
pub mod mtls;
pub mod pebble;
pub mod programs;
pub mod quic;
pub mod redis;
pub mod redis_tls;
pub mod responses;
pub mod udp;
pub mod web;

/// How long a test waits for anything before it fails instead of hanging.
pub const WAIT: Duration = Duration::from_secs(10);

/// A certificate and key generated for the test, in PEM and DER.
#[derive(Clone)]
pub struct TestCert {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl TestCert {
    /// A self-signed certificate for `names` (the first is the common name).
    pub fn new(names: &[&str]) -> TestCert {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let key = rcgen::KeyPair::generate().expect("key generation");
        let mut params = rcgen::CertificateParams::new(names.clone()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0].clone());
        let cert = params.self_signed(&key).expect("self-signed certificate");
        TestCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }

    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }

    /// Writes `<stem>.crt` and `<stem>.key` into `dir`, returns their paths.
    pub fn write(&self, dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
        let c = dir.join(format!("{stem}.crt"));
        let k = dir.join(format!("{stem}.key"));
        std::fs::write(&c, &self.cert_pem).expect("write cert");
        std::fs::write(&k, &self.key_pem).expect("write key");
        (c, k)
    }

    pub fn server_config(&self, alpn: &[&str]) -> Arc<rustls::ServerConfig> {
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![self.cert_der.clone()], self.key_der())
            .expect("server config");
        cfg.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        Arc::new(cfg)
    }
}

/// A private certificate authority for the test, issuing [`TestCert`]s that chain to it.
pub struct TestCa {
    /// The CA's own certificate: what a client or server trusts.
    pub cert: TestCert,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let key = rcgen::KeyPair::generate().expect("key generation");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("CA certificate");
        let cert = TestCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
        };
        TestCa {
            cert,
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A certificate for `names` (the first is the common name) signed by this CA, usable
    /// by servers and by clients.
    pub fn issue(&self, names: &[&str]) -> TestCert {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let key = rcgen::KeyPair::generate().expect("key generation");
        let mut params = rcgen::CertificateParams::new(names.clone()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0].clone());
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("issued certificate");
        TestCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }
}

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A TLS client config trusting exactly `roots`, offering `alpn`.
pub fn client_config(roots: &[&TestCert], alpn: &[&str]) -> Arc<rustls::ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r.cert_der.clone()).expect("root");
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(store)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(cfg)
}

/// Connects over TLS with `sni`, trusting `roots`.
pub async fn tls_connect(
    addr: SocketAddr,
    sni: &str,
    roots: &[&TestCert],
    alpn: &[&str],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = tokio::time::timeout(WAIT, TcpStream::connect(addr)).await??;
    let connector = tokio_rustls::TlsConnector::from(client_config(roots, alpn));
    let name = ServerName::try_from(sni.to_string()).map_err(std::io::Error::other)?;
    tokio::time::timeout(WAIT, connector.connect(name, tcp)).await?
}

/// Reads one `\n`-terminated line (without the newline), bounded by [`WAIT`].
pub async fn read_line<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> std::io::Result<String> {
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    tokio::time::timeout(WAIT, async {
        loop {
            let n = s.read(&mut byte).await?;
            if n == 0 || byte[0] == b'\n' {
                break;
            }
            out.push(byte[0]);
        }
        Ok::<_, std::io::Error>(())
    })
    .await??;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Writes `msg` and reads the echoed line back.
pub async fn echo_roundtrip<S>(s: &mut S, msg: &str) -> std::io::Result<String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    s.write_all(format!("{msg}\n").as_bytes()).await?;
    s.flush().await?;
    read_line(s).await
}

/// A backend that runs until dropped.
pub struct Backend {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    async fn spawn<F, Fut>(handler: F) -> Backend
    where
        F: Fn(TcpStream, SocketAddr) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let handler = Arc::new(handler);
        let task = tokio::spawn(async move {
            while let Ok((s, peer)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let h = handler.clone();
                tokio::spawn(async move { h(s, peer).await });
            }
        });
        Backend {
            addr,
            accepted,
            task,
        }
    }

    /// Plain TCP: sends `greeting\n` if given, then echoes everything.
    pub async fn echo(greeting: Option<&str>) -> Backend {
        let greeting = greeting.map(|g| format!("{g}\n"));
        Backend::spawn(move |mut s, _| {
            let greeting = greeting.clone();
            async move {
                if let Some(g) = greeting {
                    let _ = s.write_all(g.as_bytes()).await;
                }
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            }
        })
        .await
    }

    /// TLS: after the handshake sends `hello from <name> alpn=<proto>\n`, then echoes.
    pub async fn tls(name: &str, cert: &TestCert) -> Backend {
        let acceptor = tokio_rustls::TlsAcceptor::from(cert.server_config(&["h2", "http/1.1"]));
        let name = name.to_string();
        Backend::spawn(move |s, _| {
            let acceptor = acceptor.clone();
            let name = name.clone();
            async move {
                let Ok(mut tls) = acceptor.accept(s).await else {
                    return;
                };
                let alpn = tls
                    .get_ref()
                    .1
                    .alpn_protocol()
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .unwrap_or_else(|| "-".into());
                let _ = tls
                    .write_all(format!("hello from {name} alpn={alpn}\n").as_bytes())
                    .await;
                let mut buf = [0u8; 4096];
                loop {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if tls.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = tls.shutdown().await;
            }
        })
        .await
    }

    /// A Postgres-like server: answers an SSLRequest with `S`, then behaves like
    /// [`Backend::tls`]. Anything else than an SSLRequest first is refused with `N`.
    pub async fn postgres_tls(name: &str, cert: &TestCert) -> Backend {
        let acceptor = tokio_rustls::TlsAcceptor::from(cert.server_config(&[]));
        let name = name.to_string();
        Backend::spawn(move |mut s, _| {
            let acceptor = acceptor.clone();
            let name = name.clone();
            async move {
                let mut req = [0u8; 8];
                if s.read_exact(&mut req).await.is_err() || req != PG_SSL_REQUEST {
                    let _ = s.write_all(b"N").await;
                    return;
                }
                if s.write_all(b"S").await.is_err() {
                    return;
                }
                let Ok(mut tls) = acceptor.accept(s).await else {
                    return;
                };
                let _ = tls
                    .write_all(format!("hello from {name}\n").as_bytes())
                    .await;
                let mut buf = [0u8; 4096];
                while let Ok(n) = tls.read(&mut buf).await {
                    if n == 0 || tls.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        })
        .await
    }

    /// Reads a PROXY protocol header (v1 or v2), answers with the source address it
    /// names (`source=<addr>\n`), then echoes.
    pub async fn proxy_recorder() -> Backend {
        Backend::spawn(|mut s, _| async move {
            let mut buf = vec![0u8; 0];
            let mut chunk = [0u8; 512];
            let header = loop {
                match ppp::HeaderResult::parse(&buf) {
                    ppp::HeaderResult::V1(Ok(h)) => {
                        let src = match h.addresses {
                            ppp::v1::Addresses::Tcp4(a) => {
                                SocketAddr::from((a.source_address, a.source_port)).to_string()
                            }
                            ppp::v1::Addresses::Tcp6(a) => {
                                SocketAddr::from((a.source_address, a.source_port)).to_string()
                            }
                            ppp::v1::Addresses::Unknown => "unknown".to_string(),
                        };
                        break Some((format!("v1 {src}"), h.header.len()));
                    }
                    ppp::HeaderResult::V2(Ok(h)) => {
                        let src = match h.addresses {
                            ppp::v2::Addresses::IPv4(a) => {
                                SocketAddr::from((a.source_address, a.source_port)).to_string()
                            }
                            ppp::v2::Addresses::IPv6(a) => {
                                SocketAddr::from((a.source_address, a.source_port)).to_string()
                            }
                            _ => "unknown".to_string(),
                        };
                        break Some((format!("v2 {src}"), h.len()));
                    }
                    r if r.is_incomplete() => {
                        let n = match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => break None,
                            Ok(n) => n,
                        };
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    _ => break None,
                }
            };
            let Some((desc, used)) = header else {
                let _ = s.write_all(b"no proxy header\n").await;
                return;
            };
            let rest = buf[used..].to_vec();
            let _ = s.write_all(format!("source={desc}\n").as_bytes()).await;
            let _ = s.write_all(&rest).await;
            let (mut r, mut w) = s.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
        })
        .await
    }
}

/// The Postgres SSLRequest message: length 8, code 80877103.
pub const PG_SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xD2, 0x16, 0x2F];

/// A free TCP port on 127.0.0.1 (bound then released: the router binds it next).
///
/// Ports come from 20000–31999, below the kernel's ephemeral range (32768+), so a
/// backend that binds port 0 in a parallel test can never take the port between this
/// check and the router's bind; a per-process counter keeps parallel tests apart.
pub fn free_port() -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let base = 20_000 + (std::process::id() as usize * 7919) % 12_000;
    for _ in 0..12_000 {
        let port = 20_000 + (base - 20_000 + NEXT.fetch_add(1, Ordering::SeqCst)) % 12_000;
        let port = port as u16;
        if StdListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000-31999");
}

/// A fresh, empty temporary directory for one test.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "sallyport-test-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The real `sallyport` binary, running on a static and dynamic configuration
/// written to a temporary directory. Stopped (by PID) when dropped.
pub struct Router {
    pub dir: PathBuf,
    pub dynamic_path: PathBuf,
    pub child: Option<Child>,
    pub log_path: PathBuf,
}

impl Router {
    /// Starts the router. `static_yaml` should point its file provider at
    /// `dynamic.yml` in the same directory (see [`static_config`]); the call returns
    /// once every port in `ports` accepts connections.
    pub fn start(dir: &Path, static_yaml: &str, dynamic_yaml: &str, ports: &[u16]) -> Router {
        let static_path = dir.join("static.yml");
        std::fs::write(&static_path, static_yaml).expect("write static");
        std::fs::write(dir.join("dynamic.yml"), dynamic_yaml).expect("write dynamic");
        Router::start_on(Path::new("."), &static_path, dir, ports)
    }

    /// Starts the router on an existing static configuration `config`, from `cwd`
    /// (relative paths in the file resolve there, as for a user), logging into
    /// `dir/router.log`. `dynamic_path` is then `dir/dynamic.yml`, whatever `config`
    /// names. Returns once every port in `ports` accepts connections.
    pub fn start_on(cwd: &Path, config: &Path, dir: &Path, ports: &[u16]) -> Router {
        Router::start_with_env(cwd, config, dir, ports, &[])
    }

    /// [`Router::start_on`] with extra environment variables.
    pub fn start_with_env(
        cwd: &Path,
        config: &Path,
        dir: &Path,
        ports: &[u16],
        env: &[(&str, &str)],
    ) -> Router {
        let log_path = dir.join("router.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_sallyport"))
            .arg("--config")
            .arg(config)
            .current_dir(cwd)
            .envs(env.iter().copied())
            .env("SALLYPORT_WORKERS", "2")
            .stdout(Stdio::from(log.try_clone().expect("dup log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start sallyport");
        let mut router = Router {
            dir: dir.to_path_buf(),
            dynamic_path: dir.join("dynamic.yml"),
            child: Some(child),
            log_path,
        };
        for p in ports {
            router.wait_port(*p);
        }
        router
    }

    fn wait_port(&mut self, port: u16) {
        let start = Instant::now();
        while start.elapsed() < WAIT {
            if StdStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("sallyport exited early ({status}):\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("port {port} never opened:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits until the router's log contains `needle` (e.g. a reload message).
    pub fn wait_log(&self, needle: &str) {
        self.wait_log_for(&format!("{needle:?}"), |log| log.contains(needle));
    }

    /// Waits until the router's log contains `needle` somewhere after the first `marker`
    /// (e.g. the reload that follows a compile warning).
    pub fn wait_log_after(&self, marker: &str, needle: &str) {
        self.wait_log_for(&format!("{needle:?} after {marker:?}"), |log| {
            log.find(marker)
                .is_some_and(|at| log[at + marker.len()..].contains(needle))
        });
    }

    /// Waits until `found` says yes of the router's log; `what` names it in the panic.
    fn wait_log_for(&self, what: &str, found: impl Fn(&str) -> bool) {
        let start = Instant::now();
        while start.elapsed() < WAIT {
            if found(&self.log()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("log never contained {what}:\n{}", self.log());
    }

    pub fn count_log(&self, needle: &str) -> usize {
        self.log().matches(needle).count()
    }

    /// Replaces the dynamic configuration the way editors do: write a temporary
    /// file, then rename it over the watched one.
    pub fn rewrite_dynamic(&self, dynamic_yaml: &str) {
        let tmp = self.dir.join(".dynamic.yml.tmp");
        std::fs::write(&tmp, dynamic_yaml).expect("write tmp");
        std::fs::rename(&tmp, &self.dynamic_path).expect("rename");
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Sends `signal` to the router process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to exit; returns its exit status.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        let child = self.child.as_mut()?;
        while start.elapsed() < within {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- sallyport log ({}) ---\n{}",
                self.log_path.display(),
                self.log()
            );
        } else {
            // Debug logs of flood tests run to 100 MB; a passing test's log is not kept.
            let _ = std::fs::remove_file(&self.log_path);
        }
    }
}

/// A static configuration with the given `name → port` TCP entrypoints, the file
/// provider on `dynamic.yml` (watched, fast throttle) and debug logs.
pub fn static_config(dir: &Path, entrypoints: &[(&str, u16)], extra: &str) -> String {
    let mut s = String::from("entryPoints:\n");
    for (name, port) in entrypoints {
        s.push_str(&format!("  {name}:\n    address: \"127.0.0.1:{port}\"\n"));
    }
    s.push_str(&format!(
        "providers:\n  providersThrottleDuration: 100ms\n  file:\n    filename: \"{}\"\n    watch: true\nlog:\n  level: DEBUG\n{extra}",
        dir.join("dynamic.yml").display()
    ));
    s
}

/// Starts the router with one entrypoint named `tag` on a free port, carrying `dynamic`;
/// returns it and its port.
pub fn router(tag: &str, dir: &Path, dynamic: &str) -> (Router, u16) {
    let port = free_port();
    let r = Router::start(
        dir,
        &static_config(dir, &[(tag, port)], ""),
        dynamic,
        &[port],
    );
    (r, port)
}

/// Runs `sallyport` with `args` to completion, returning (exit code, stdout+stderr).
pub fn run_cli(args: &[&str], cwd: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sallyport"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run sallyport");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// A blocking line read from a std stream, for the few tests that use std sockets.
pub fn std_read_line(s: &mut StdStream) -> String {
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    let mut line = String::new();
    let _ = r.read_line(&mut line);
    line.trim_end().to_string()
}

/// Writes all of `bytes` to a std stream one byte at a time, with a pause, to
/// force the router to reassemble across many reads.
pub fn write_slowly(s: &mut StdStream, bytes: &[u8], pause: Duration) {
    s.set_nodelay(true).expect("nodelay");
    for b in bytes {
        s.write_all(std::slice::from_ref(b)).expect("write byte");
        std::thread::sleep(pause);
    }
}

/// True if the peer closes (EOF or reset) within `within` without sending data
/// beyond what it had sent; false if the connection is still open then.
pub fn std_closed_within(s: &mut StdStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).expect("timeout");
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// The resident memory of process `pid` (`VmRSS`), in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}
