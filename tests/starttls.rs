//! Server-first protocols on shared entrypoints (`tcp.serverFirstTimeout`) and STARTTLS
//! routing by SNI for SMTP, IMAP, POP3 and MySQL, over real sockets.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::mail::{Dovecot, Smtpd};
use support::mariadb::MariaDb;
use support::programs::{Ran, Running, installed, run_bounded};
use support::web::HttpBackend;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn ep(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A static configuration with one entrypoint carrying more settings (`settings`: YAML
/// lines indented under the entrypoint).
fn static_with(dir: &std::path::Path, name: &str, port: u16, settings: &str) -> String {
    let base = static_config(dir, &[(name, port)], "");
    base.replacen(
        &format!("    address: \"127.0.0.1:{port}\"\n"),
        &format!("    address: \"127.0.0.1:{port}\"\n{settings}"),
        1,
    )
}

/// Whether nothing at all arrives on `s` within `within` (the connection stays open).
async fn silent_for<S: tokio::io::AsyncRead + Unpin>(s: &mut S, within: Duration) -> bool {
    let mut byte = [0u8; 1];
    tokio::time::timeout(within, s.read(&mut byte))
        .await
        .is_err()
}

/// With `tcp.serverFirstTimeout`, a client that stays silent reaches the non-TLS
/// `HostSNI(`*`)` router (and its backend's banner) although TLS TCP routers and HTTPS
/// routers share the entrypoint; clients that speak first are routed as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_client_gets_the_banner_on_a_shared_entrypoint() {
    let banner = Backend::echo(Some("220 smtp.test ESMTP ready")).await;
    let cert = TestCert::new(&["tcp.test"]);
    let tls_backend = Backend::tls("tcp", &cert).await;
    let web = HttpBackend::start("web").await;
    let web_cert = TestCert::new(&["web.test"]);
    let port = free_port();
    let dir = temp_dir("server-first");
    let (c, k) = web_cert.write(&dir, "web");
    let dynamic = format!(
        r#"
tcp:
  routers:
    banner:
      rule: "HostSNI(`*`)"
      service: banner
    tls:
      rule: "HostSNI(`tcp.test`)"
      service: tls
      tls: {{passthrough: true}}
  services:
    banner: {{loadBalancer: {{servers: [{{address: "{}"}}]}}}}
    tls: {{loadBalancer: {{servers: [{{address: "{}"}}]}}}}
http:
  routers:
    web:
      rule: "Host(`web.test`)"
      service: web
      tls: {{}}
  services:
    web: {{loadBalancer: {{servers: [{{url: "{}"}}]}}}}
tls:
  certificates: [{{certFile: "{}", keyFile: "{}"}}]
"#,
        banner.addr,
        tls_backend.addr,
        web.url(),
        c.display(),
        k.display()
    );
    let _r = Router::start(
        &dir,
        &static_with(
            &dir,
            "shared",
            port,
            "    tcp: {serverFirstTimeout: 300ms}\n",
        ),
        &dynamic,
        &[port],
    );

    let mut silent = TcpStream::connect(ep(port)).await.unwrap();
    assert_eq!(
        read_line(&mut silent).await.unwrap(),
        "220 smtp.test ESMTP ready"
    );
    assert_eq!(
        echo_roundtrip(&mut silent, "EHLO me").await.unwrap(),
        "EHLO me"
    );

    let mut t = tls_connect(ep(port), "tcp.test", &[&cert], &[])
        .await
        .unwrap();
    assert_eq!(read_line(&mut t).await.unwrap(), "hello from tcp alpn=-");

    let mut h = tls_connect(ep(port), "web.test", &[&web_cert], &["http/1.1"])
        .await
        .unwrap();
    h.write_all(b"GET / HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let status = read_line(&mut h).await.unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(
        banner.accepted(),
        1,
        "only the silent client reached the banner"
    );
}

/// Without `tcp.serverFirstTimeout` a shared entrypoint waits for the client's first
/// bytes, as Traefik does: a silent client gets no banner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_server_first_timeout_a_shared_entrypoint_waits_for_the_client() {
    let banner = Backend::echo(Some("220 smtp.test ESMTP ready")).await;
    let cert = TestCert::new(&["tcp.test"]);
    let tls_backend = Backend::tls("tcp", &cert).await;
    let port = free_port();
    let dir = temp_dir("server-first-unset");
    let dynamic = format!(
        r#"
tcp:
  routers:
    banner:
      rule: "HostSNI(`*`)"
      service: banner
    tls:
      rule: "HostSNI(`tcp.test`)"
      service: tls
      tls: {{passthrough: true}}
  services:
    banner: {{loadBalancer: {{servers: [{{address: "{}"}}]}}}}
    tls: {{loadBalancer: {{servers: [{{address: "{}"}}]}}}}
"#,
        banner.addr, tls_backend.addr,
    );
    let _r = Router::start(
        &dir,
        &static_config(&dir, &[("shared", port)], ""),
        &dynamic,
        &[port],
    );
    let mut silent = TcpStream::connect(ep(port)).await.unwrap();
    assert!(silent_for(&mut silent, Duration::from_millis(800)).await);
    assert_eq!(banner.accepted(), 0);
    // Once it speaks, it reaches the non-TLS router: the banner, then the echo.
    silent.write_all(b"hello\n").await.unwrap();
    assert_eq!(
        read_line(&mut silent).await.unwrap(),
        "220 smtp.test ESMTP ready"
    );
    assert_eq!(read_line(&mut silent).await.unwrap(), "hello");
}

/// The mail protocols of these tests, with their client dialogue up to TLS.
#[derive(Clone, Copy, Debug)]
enum Mail {
    Smtp,
    Imap,
    Pop3,
}

impl Mail {
    fn name(self) -> &'static str {
        match self {
            Mail::Smtp => "smtp",
            Mail::Imap => "imap",
            Mail::Pop3 => "pop3",
        }
    }
}

/// Reads one CRLF line (without it), bounded by [`WAIT`].
async fn crlf_line<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> String {
    let line = read_line(s).await.expect("a line");
    line.trim_end_matches('\r').to_owned()
}

/// Talks `mail` as a client up to the router's (or server's) go-ahead for TLS, then
/// starts TLS with `sni`.
async fn client_starttls(
    port: u16,
    mail: Mail,
    sni: &str,
    roots: &[&TestCert],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut s = TcpStream::connect(ep(port)).await?;
    let greeting = crlf_line(&mut s).await;
    match mail {
        Mail::Smtp => {
            assert!(greeting.starts_with("220 "), "{greeting}");
            s.write_all(b"EHLO client.test\r\n").await?;
            let mut starttls = false;
            loop {
                let line = crlf_line(&mut s).await;
                starttls |= line[4..].eq_ignore_ascii_case("STARTTLS");
                if line.as_bytes().get(3) == Some(&b' ') {
                    break;
                }
            }
            assert!(starttls, "STARTTLS advertised");
            s.write_all(b"STARTTLS\r\n").await?;
            let ready = crlf_line(&mut s).await;
            assert!(ready.starts_with("220 "), "{ready}");
        }
        Mail::Imap => {
            assert!(greeting.starts_with("* OK"), "{greeting}");
            s.write_all(b"a1 CAPABILITY\r\n").await?;
            let caps = crlf_line(&mut s).await;
            assert!(caps.contains("STARTTLS"), "{caps}");
            assert!(crlf_line(&mut s).await.starts_with("a1 OK"));
            s.write_all(b"a2 STARTTLS\r\n").await?;
            let ok = crlf_line(&mut s).await;
            assert!(ok.starts_with("a2 OK"), "{ok}");
        }
        Mail::Pop3 => {
            assert!(greeting.starts_with("+OK"), "{greeting}");
            s.write_all(b"STLS\r\n").await?;
            let ok = crlf_line(&mut s).await;
            assert!(ok.starts_with("+OK"), "{ok}");
        }
    }
    let connector = tokio_rustls::TlsConnector::from(client_config(roots, &[]));
    let name =
        rustls::pki_types::ServerName::try_from(sni.to_string()).map_err(std::io::Error::other)?;
    tokio::time::timeout(WAIT, connector.connect(name, s)).await?
}

/// A faithful mail server on loopback: greets as `mail` does. With `tls`, it expects the
/// router to ask for TLS the way a client would (EHLO client.test + STARTTLS, a tagged
/// STARTTLS, STLS), completes TLS, says `hello from <name>` and echoes; without, it
/// echoes in plaintext after its greeting (a backend behind a terminating router).
async fn mail_server(
    mail: Mail,
    name: &str,
    tls: Option<&TestCert>,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tls.map(|c| tokio_rustls::TlsAcceptor::from(c.server_config(&[])));
    let name = name.to_owned();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let name = name.clone();
            tokio::spawn(async move {
                let greeting: &[u8] = match mail {
                    Mail::Smtp => b"220 backend.test ESMTP test\r\n",
                    Mail::Imap => b"* OK [CAPABILITY IMAP4rev1 STARTTLS] backend ready\r\n",
                    Mail::Pop3 => b"+OK backend ready\r\n",
                };
                if s.write_all(greeting).await.is_err() {
                    return;
                }
                let Some(acceptor) = acceptor else {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    return;
                };
                let asked = match mail {
                    Mail::Smtp => {
                        crlf_line(&mut s).await == "EHLO client.test"
                            && s.write_all(
                                b"250-backend.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n",
                            )
                            .await
                            .is_ok()
                            && crlf_line(&mut s).await == "STARTTLS"
                            && s.write_all(b"220 2.0.0 Ready\r\n").await.is_ok()
                    }
                    Mail::Imap => {
                        crlf_line(&mut s).await == "a2 STARTTLS"
                            && s.write_all(b"a2 OK Begin TLS negotiation now\r\n")
                                .await
                                .is_ok()
                    }
                    Mail::Pop3 => {
                        crlf_line(&mut s).await == "STLS"
                            && s.write_all(b"+OK Begin TLS negotiation\r\n").await.is_ok()
                    }
                };
                if !asked {
                    return;
                }
                let Ok(mut tls) = acceptor.accept(s).await else {
                    return;
                };
                let _ = tls
                    .write_all(format!("hello from {name}\n").as_bytes())
                    .await;
                let (mut r, mut w) = tokio::io::split(tls);
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    (addr, task)
}

/// One entrypoint that only has `mail` STARTTLS routers, so it greets every client at
/// once: `pass.test` passed through to a server that terminates TLS itself, `term.test`
/// terminated by the router in front of a plaintext server.
async fn mail_routing(mail: Mail) {
    let front = TestCert::new(&["term.test"]);
    let backend_cert = TestCert::new(&["pass.test"]);
    let (pass_addr, _pass) = mail_server(mail, "pass", Some(&backend_cert)).await;
    let (term_addr, _term) = mail_server(mail, "term", None).await;
    let port = free_port();
    let dir = temp_dir(&format!("starttls-{}", mail.name()));
    let (c, k) = front.write(&dir, "front");
    let proto = mail.name();
    let dynamic = format!(
        r#"
tcp:
  routers:
    pass:
      rule: "HostSNI(`pass.test`)"
      service: pass
      tls: {{passthrough: true, starttls: {proto}}}
    term:
      rule: "HostSNI(`term.test`)"
      service: term
      tls: {{starttls: {proto}}}
  services:
    pass: {{loadBalancer: {{servers: [{{address: "{pass_addr}"}}]}}}}
    term: {{loadBalancer: {{servers: [{{address: "{term_addr}"}}]}}}}
tls:
  certificates: [{{certFile: "{}", keyFile: "{}"}}]
"#,
        c.display(),
        k.display()
    );
    let _r = Router::start(
        &dir,
        &static_config(&dir, &[("mail", port)], ""),
        &dynamic,
        &[port],
    );

    let mut s = client_starttls(port, mail, "pass.test", &[&backend_cert])
        .await
        .expect("passthrough");
    assert_eq!(read_line(&mut s).await.unwrap(), "hello from pass");
    assert_eq!(
        echo_roundtrip(&mut s, "over TLS").await.unwrap(),
        "over TLS"
    );

    // The backend's greeting is swallowed: the client starts afresh inside TLS.
    let mut s = client_starttls(port, mail, "term.test", &[&front])
        .await
        .expect("termination");
    assert_eq!(
        echo_roundtrip(&mut s, "EHLO again").await.unwrap(),
        "EHLO again"
    );

    // A name no router takes: the router closes after the ClientHello.
    let err = client_starttls(port, mail, "other.test", &[&front]).await;
    assert!(err.is_err(), "no router for other.test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_starttls_is_routed_by_sni_passed_through_and_terminated() {
    mail_routing(Mail::Smtp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_starttls_is_routed_by_sni_passed_through_and_terminated() {
    mail_routing(Mail::Imap).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pop3_stls_is_routed_by_sni_passed_through_and_terminated() {
    mail_routing(Mail::Pop3).await;
}

/// Reads until the peer closes; false if it is still open after `within`.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(s: &mut S, within: Duration) -> bool {
    let mut sink = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match s.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// Reads CRLF lines until one starts with `prefix`; returns the lines read.
async fn lines_until<S: tokio::io::AsyncRead + Unpin>(s: &mut S, prefix: &str) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let line = crlf_line(s).await;
        let done = line.starts_with(prefix);
        lines.push(line);
        if done {
            return lines;
        }
    }
}

/// Clients and backends that misbehave during the SMTP dialogue: each is answered when
/// the protocol has an answer, logged, and closed; none holds the router.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_dialogues_that_go_wrong_are_closed() {
    let rude = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rude_addr = rude.local_addr().unwrap();
    let _rude = tokio::spawn(async move {
        while let Ok((mut s, _)) = rude.accept().await {
            let _ = s.write_all(b"554 5.3.2 go away\r\n").await;
            let mut sink = [0u8; 1024];
            while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
        }
    });
    let port = free_port();
    let dir = temp_dir("starttls-bad");
    let cert = TestCert::new(&["rude.test"]);
    let dynamic = format!(
        r#"
tcp:
  routers:
    rude:
      rule: "HostSNI(`rude.test`)"
      service: rude
      tls: {{passthrough: true, starttls: smtp}}
  services:
    rude: {{loadBalancer: {{servers: [{{address: "{rude_addr}"}}]}}}}
"#
    );
    let r = Router::start(
        &dir,
        &static_with(
            &dir,
            "mail",
            port,
            "    transport: {respondingTimeouts: {readTimeout: 1s}}\n",
        ),
        &dynamic,
        &[port],
    );
    let connect = || async {
        let mut s = TcpStream::connect(ep(port)).await.unwrap();
        assert!(crlf_line(&mut s).await.starts_with("220 "));
        s
    };

    // A client that stops mid-dialogue is closed at readTimeout.
    let mut s = connect().await;
    s.write_all(b"EHLO stalled.test\r\n").await.unwrap();
    lines_until(&mut s, "250 ").await;
    assert!(closed_within(&mut s, Duration::from_secs(3)).await);

    // An oversized command line.
    let mut s = connect().await;
    s.write_all(&[b'A'; 600]).await.unwrap();
    assert_eq!(crlf_line(&mut s).await, "500 5.5.6 Line too long");
    assert!(closed_within(&mut s, WAIT).await);

    // Garbage instead of STARTTLS: answered, then closed after 16 commands.
    let mut s = connect().await;
    s.write_all(&b"\x01\x02garbage\r\n".repeat(20))
        .await
        .unwrap();
    let lines = lines_until(&mut s, "421 ").await;
    assert_eq!(lines.len(), 17, "{lines:?}");
    assert!(closed_within(&mut s, WAIT).await);

    // Commands pipelined behind STARTTLS never reach TLS.
    let mut s = connect().await;
    s.write_all(b"EHLO x\r\nSTARTTLS\r\nMAIL FROM:<a@b.test>\r\n")
        .await
        .unwrap();
    let lines = lines_until(&mut s, "554 ").await;
    assert_eq!(
        lines.last().map(String::as_str),
        Some("554 5.5.0 Commands sent after STARTTLS")
    );
    assert!(closed_within(&mut s, WAIT).await);

    // A backend whose greeting is not 220: the client's TLS never starts.
    let err = client_starttls(port, Mail::Smtp, "rude.test", &[&cert]).await;
    assert!(err.is_err(), "the handshake must fail");
    r.wait_log("expected a 220 greeting");
    r.wait_log("command line longer than 512 bytes");
    r.wait_log("commands without asking for TLS");
    r.wait_log("more data after STARTTLS");
}

/// STARTTLS routers share an entrypoint with a TLS router thanks to
/// `serverFirstTimeout`: silent clients are greeted, TLS clients routed as before.
/// Without it, the router says why its STARTTLS routers cannot be reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_starttls_shares_an_entrypoint_through_server_first_timeout() {
    let cert = TestCert::new(&["tcp.test"]);
    let tls_backend = Backend::tls("tcp", &cert).await;
    let mail_cert = TestCert::new(&["pass.test"]);
    let (mail_addr, _mail) = mail_server(Mail::Smtp, "mail", Some(&mail_cert)).await;
    let port = free_port();
    let dir = temp_dir("starttls-shared");
    let dynamic = format!(
        r#"
tcp:
  routers:
    mail:
      rule: "HostSNI(`pass.test`)"
      service: mail
      tls: {{passthrough: true, starttls: smtp}}
    tls:
      rule: "HostSNI(`tcp.test`)"
      service: tls
      tls: {{passthrough: true}}
  services:
    mail: {{loadBalancer: {{servers: [{{address: "{mail_addr}"}}]}}}}
    tls: {{loadBalancer: {{servers: [{{address: "{}"}}]}}}}
"#,
        tls_backend.addr
    );
    let r = Router::start(
        &dir,
        &static_with(
            &dir,
            "shared",
            port,
            "    tcp: {serverFirstTimeout: 300ms}\n",
        ),
        &dynamic,
        &[port],
    );
    let mut s = client_starttls(port, Mail::Smtp, "pass.test", &[&mail_cert])
        .await
        .expect("greeted after the timeout");
    assert_eq!(read_line(&mut s).await.unwrap(), "hello from mail");
    let mut t = tls_connect(ep(port), "tcp.test", &[&cert], &[])
        .await
        .unwrap();
    assert_eq!(read_line(&mut t).await.unwrap(), "hello from tcp alpn=-");
    // The STARTTLS router is not taken by a direct TLS client.
    assert!(
        tls_connect(ep(port), "pass.test", &[&mail_cert], &[])
            .await
            .is_err()
    );
    drop(r);

    let dir = temp_dir("starttls-shared-unset");
    let port = free_port();
    let r = Router::start(
        &dir,
        &static_config(&dir, &[("shared", port)], ""),
        &dynamic,
        &[port],
    );
    r.wait_log("set entryPoints.shared.tcp.serverFirstTimeout");
}

/// Runs the `mariadb` client against the router on `port` (TCP, TLS asked with `--ssl`,
/// the server certificate checked against `ca`), printing the answers to `sql`.
fn mariadb_client(
    port: u16,
    user: &str,
    ca: &std::path::Path,
    sql: &str,
) -> support::programs::Ran {
    support::programs::run_bounded(
        std::process::Command::new("mariadb")
            .args(["--no-defaults", "-h", "127.0.0.1", "--protocol=tcp"])
            .arg(format!("--port={port}"))
            .args(["-u", user, "-psecret", "--ssl", "--ssl-verify-server-cert"])
            .arg(format!("--ssl-ca={}", ca.display()))
            .args(["--batch", "--skip-column-names", "-e", sql]),
        b"",
        WAIT,
    )
}

/// The `mariadb` client (which sends no SNI, so gets the default certificate) through a terminating and a passthrough
/// MySQL STARTTLS router, for an account with mysql_native_password and one with
/// ed25519: the query answers come from the real server, which sees TLS only in
/// passthrough.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_client_logs_in_through_terminating_and_passthrough_routers() {
    let backend_cert = TestCert::new(&["localhost", "127.0.0.1"]);
    let Some(db) = MariaDb::start("mariadb", &backend_cert) else {
        return;
    };
    let front = TestCert::new(&["127.0.0.1"]);
    let (term_port, pass_port) = (free_port(), free_port());
    let dir = temp_dir("starttls-mysql");
    let (c, k) = front.write(&dir, "front");
    let (backend_ca, _) = backend_cert.write(&dir, "backend");
    let dynamic = format!(
        r#"
tcp:
  routers:
    term:
      entryPoints: [term]
      rule: "HostSNI(`*`)"
      service: db
      tls: {{starttls: mysql}}
    pass:
      entryPoints: [pass]
      rule: "HostSNI(`*`)"
      service: db
      tls: {{starttls: mysql, passthrough: true}}
  services:
    db: {{loadBalancer: {{servers: [{{address: "127.0.0.1:{}"}}]}}}}
tls:
  stores:
    default:
      defaultCertificate: {{certFile: "{c}", keyFile: "{k}"}}
"#,
        db.port,
        c = c.display(),
        k = k.display()
    );
    let r = Router::start(
        &dir,
        &static_config(&dir, &[("term", term_port), ("pass", pass_port)], ""),
        &dynamic,
        &[term_port, pass_port],
    );
    let sql = "SELECT CURRENT_USER(), VARIABLE_VALUE FROM information_schema.SESSION_STATUS \
               WHERE VARIABLE_NAME = 'SSL_VERSION'";
    for user in ["bob", "carol"] {
        // Termination: the router's certificate; plaintext (no TLS version) at the server.
        let ran = mariadb_client(term_port, user, &c, sql);
        assert!(ran.success(), "{ran:?}\n{}", r.log());
        assert_eq!(ran.stdout, format!("{user}@%\t\n"), "{ran:?}");
        // Passthrough: the server's own certificate, and TLS at the server.
        let ran = mariadb_client(pass_port, user, &backend_ca, sql);
        assert!(ran.success(), "{ran:?}\n{}", r.log());
        assert!(
            ran.stdout.trim().starts_with(&format!("{user}@%\tTLSv1.")),
            "{ran:?}"
        );
    }
    // A wrong password is refused by the server, through either router.
    let ran = support::programs::run_bounded(
        std::process::Command::new("mariadb")
            .args(["--no-defaults", "-h", "127.0.0.1", "--protocol=tcp"])
            .arg(format!("--port={term_port}"))
            .args(["-u", "bob", "-pwrong", "--ssl", "-e", "SELECT 1"]),
        b"",
        WAIT,
    );
    assert!(!ran.success());
    assert!(ran.stderr.contains("Access denied"), "{ran:?}");
    // A client that does not ask for TLS is told to.
    let ran = support::programs::run_bounded(
        std::process::Command::new("mariadb")
            .args(["--no-defaults", "-h", "127.0.0.1", "--protocol=tcp"])
            .arg(format!("--port={term_port}"))
            .args(["-u", "bob", "-psecret", "--skip-ssl", "-e", "SELECT 1"]),
        b"",
        WAIT,
    );
    assert!(!ran.success());
    assert!(ran.stderr.contains("must use TLS"), "{ran:?}");
}

/// The 32-byte SSLRequest of the `mariadb` 10.11 client, framed (sequence number 1).
const MYSQL_SSL_REQUEST: &[u8] = b"\x20\x00\x00\x01\x85\xaa\xbf\x00\x00\x00\x10\x00\x21\
    \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";

/// Reads one MySQL packet: (sequence number, payload).
async fn mysql_packet<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
) -> std::io::Result<(u8, Vec<u8>)> {
    let mut header = [0u8; 4];
    tokio::time::timeout(WAIT, s.read_exact(&mut header)).await??;
    let len = u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize;
    let mut payload = vec![0u8; len];
    tokio::time::timeout(WAIT, s.read_exact(&mut payload)).await??;
    Ok((header[3], payload))
}

/// A MySQL client up to TLS: reads the greeting, sends the SSLRequest, starts TLS.
async fn mysql_starttls(
    port: u16,
    sni: &str,
    roots: &[&TestCert],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut s = TcpStream::connect(ep(port)).await?;
    let (seq, greeting) = mysql_packet(&mut s).await?;
    assert_eq!((seq, greeting[0]), (0, 10), "a HandshakeV10 greeting");
    s.write_all(MYSQL_SSL_REQUEST).await?;
    let connector = tokio_rustls::TlsConnector::from(client_config(roots, &[]));
    let name =
        rustls::pki_types::ServerName::try_from(sni.to_string()).map_err(std::io::Error::other)?;
    tokio::time::timeout(WAIT, connector.connect(name, s)).await?
}

/// A MySQL-like server: greets with `greeting` (a payload), then, if an SSLRequest
/// follows, completes TLS, says `hello from <name>` and echoes.
async fn mysql_like_server(
    greeting: Vec<u8>,
    name: &str,
    cert: &TestCert,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(cert.server_config(&[]));
    let name = name.to_owned();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (acceptor, name, greeting) = (acceptor.clone(), name.clone(), greeting.clone());
            tokio::spawn(async move {
                let mut framed = (greeting.len() as u32).to_le_bytes();
                framed[3] = 0;
                if s.write_all(&framed).await.is_err() || s.write_all(&greeting).await.is_err() {
                    return;
                }
                let mut request = [0u8; 36];
                if s.read_exact(&mut request).await.is_err() || request != MYSQL_SSL_REQUEST {
                    return;
                }
                let Ok(mut tls) = acceptor.accept(s).await else {
                    return;
                };
                let _ = tls
                    .write_all(format!("hello from {name}\n").as_bytes())
                    .await;
                let (mut r, mut w) = tokio::io::split(tls);
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    (addr, task)
}

/// A MariaDB 10.11 greeting payload with capabilities `caps`.
fn mariadb_greeting(caps: u32) -> Vec<u8> {
    let mut p = b"\x0a5.5.5-10.11.19-MariaDB\x00\x04\x00\x00\x001C;=bWk4\x00".to_vec();
    p.extend_from_slice(&(caps as u16).to_le_bytes());
    p.extend_from_slice(&[45, 2, 0]);
    p.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
    p.extend_from_slice(
        b"\x15\x00\x00\x00\x00\x00\x00\x1d\x00\x00\x00aku*pv~74>|x\x00mysql_native_password\x00",
    );
    p
}

/// MySQL STARTTLS by SNI in passthrough, and backends that cannot take the client:
/// one without TLS, one that is not MySQL at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_starttls_is_routed_by_sni_and_bad_backends_are_refused() {
    let cert = TestCert::new(&["a.db.test", "b.db.test", "c.db.test"]);
    let (a, _a) = mysql_like_server(mariadb_greeting(0x81ff_fffe), "a", &cert).await;
    let (b, _b) = mysql_like_server(mariadb_greeting(0x81ff_fffe & !0x800), "b", &cert).await;
    let (c, _c) = mysql_like_server(b"220 smtp.test ESMTP".to_vec(), "c", &cert).await;
    let port = free_port();
    let dir = temp_dir("starttls-mysql-sni");
    let dynamic = format!(
        r#"
tcp:
  routers:
    a: {{rule: "HostSNI(`a.db.test`)", service: a, tls: {{starttls: mysql, passthrough: true}}}}
    b: {{rule: "HostSNI(`b.db.test`)", service: b, tls: {{starttls: mysql, passthrough: true}}}}
    c: {{rule: "HostSNI(`c.db.test`)", service: c, tls: {{starttls: mysql, passthrough: true}}}}
  services:
    a: {{loadBalancer: {{servers: [{{address: "{a}"}}]}}}}
    b: {{loadBalancer: {{servers: [{{address: "{b}"}}]}}}}
    c: {{loadBalancer: {{servers: [{{address: "{c}"}}]}}}}
"#
    );
    let r = Router::start(
        &dir,
        &static_config(&dir, &[("db", port)], ""),
        &dynamic,
        &[port],
    );
    let mut s = mysql_starttls(port, "a.db.test", &[&cert])
        .await
        .expect("a");
    assert_eq!(read_line(&mut s).await.unwrap(), "hello from a");
    assert_eq!(
        echo_roundtrip(&mut s, "COM_QUERY").await.unwrap(),
        "COM_QUERY"
    );
    assert!(mysql_starttls(port, "b.db.test", &[&cert]).await.is_err());
    r.wait_log("the MySQL server does not offer TLS");
    assert!(mysql_starttls(port, "c.db.test", &[&cert]).await.is_err());
    r.wait_log("expected a MySQL protocol 10 greeting");
    assert!(
        mysql_starttls(port, "other.db.test", &[&cert])
            .await
            .is_err()
    );
    r.wait_log("no STARTTLS router matches");

    // A client that sends garbage instead of an SSLRequest, and one that stops after
    // the greeting, are closed.
    let mut s = TcpStream::connect(ep(port)).await.unwrap();
    mysql_packet(&mut s).await.unwrap();
    s.write_all(&[0xff; 64]).await.unwrap();
    assert!(closed_within(&mut s, WAIT).await);
    r.wait_log("malformed MySQL packet (too long)");
}

/// A client that sends SNI (PyMySQL names the host it connects to) is routed by it to
/// a real MariaDB server in passthrough; the same entrypoint's catch-all terminates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymysql_is_routed_by_sni_to_a_real_mariadb() {
    let python_ok = support::programs::installed(&["python3"])
        && support::programs::run_bounded(
            std::process::Command::new("python3").args(["-c", "import pymysql"]),
            b"",
            WAIT,
        )
        .success();
    if !python_ok {
        eprintln!("skipped: Python module pymysql not installed (pip install pymysql)");
        return;
    }
    let backend_cert = TestCert::new(&["localhost"]);
    let Some(db) = MariaDb::start("mariadb-sni", &backend_cert) else {
        return;
    };
    let front = TestCert::new(&["router.test"]);
    let port = free_port();
    let dir = temp_dir("starttls-pymysql");
    let (c, k) = front.write(&dir, "front");
    let (backend_ca, _) = backend_cert.write(&dir, "backend");
    let dynamic = format!(
        r#"
tcp:
  routers:
    by-name:
      rule: "HostSNI(`localhost`)"
      service: db
      tls: {{starttls: mysql, passthrough: true}}
    others:
      rule: "HostSNI(`*`)"
      service: db
      tls: {{starttls: mysql}}
  services:
    db: {{loadBalancer: {{servers: [{{address: "127.0.0.1:{}"}}]}}}}
tls:
  stores:
    default:
      defaultCertificate: {{certFile: "{}", keyFile: "{}"}}
"#,
        db.port,
        c.display(),
        k.display()
    );
    let _r = Router::start(
        &dir,
        &static_config(&dir, &[("db", port)], ""),
        &dynamic,
        &[port],
    );
    let script = format!(
        r#"
import pymysql, ssl
ctx = ssl.create_default_context(cafile="{}")
conn = pymysql.connect(host="localhost", port={port}, user="bob", password="secret", ssl=ctx)
with conn.cursor() as cur:
    cur.execute("SELECT CURRENT_USER(), VARIABLE_VALUE FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'SSL_VERSION'")
    print(*cur.fetchone())
"#,
        backend_ca.display()
    );
    let ran = support::programs::run_bounded(
        std::process::Command::new("python3").args(["-c", &script]),
        b"",
        WAIT,
    );
    assert!(ran.success(), "{ran:?}");
    assert!(ran.stdout.starts_with("bob@% TLSv1."), "{ran:?}");
}

/// A CA file that trusts each of `certs` (self-signed: each is its own root).
fn ca_file(dir: &std::path::Path, certs: &[&TestCert]) -> std::path::PathBuf {
    let path = dir.join("ca.pem");
    let pem: String = certs.iter().map(|c| c.cert_pem.as_str()).collect();
    std::fs::write(&path, pem).expect("write CA file");
    path
}

/// Runs a Python script to completion (bounded).
fn python(script: &str) -> Ran {
    run_bounded(
        std::process::Command::new("python3").args(["-c", script]),
        b"",
        WAIT,
    )
}

/// `openssl s_client -starttls <proto> -servername <sni>` through the router, checking
/// the certificate chain against `ca`; after the handshake, sends `command` (CRLF) and
/// returns the first line that starts with `expect`.
fn s_client(
    port: u16,
    proto: &str,
    sni: &str,
    ca: &std::path::Path,
    command: &str,
    expect: &str,
) -> String {
    let mut client = Running::start(
        std::process::Command::new("openssl")
            .args(["s_client", "-connect"])
            .arg(format!("127.0.0.1:{port}"))
            .args([
                "-starttls",
                proto,
                "-servername",
                sni,
                "-verify_return_error",
                "-crlf",
            ])
            .arg("-verify_hostname")
            .arg(sni)
            .arg("-CAfile")
            .arg(ca),
    );
    loop {
        let line = client.next_line();
        if line.contains("Verify return code:") {
            assert!(line.contains("0 (ok)"), "{line}");
            break;
        }
    }
    client.send(&format!("{command}\n"));
    loop {
        let line = client.next_line();
        if line.starts_with(expect) {
            return line;
        }
    }
}

/// Dovecot (IMAP and POP3) behind the router, passed through and terminated by SNI,
/// reached with Python's imaplib and poplib, `openssl s_client` and curl: the answers
/// (a stored and found message, a mailbox listing, a login) come from Dovecot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dovecot_imap_and_pop3_behind_the_router() {
    if !installed(&["python3", "openssl", "curl"]) {
        return;
    }
    let backend_cert = TestCert::new(&["imap-pass.test", "pop-pass.test"]);
    let Some(dovecot) = Dovecot::start("dovecot", &backend_cert) else {
        return;
    };
    let front = TestCert::new(&["imap-term.test", "pop-term.test"]);
    let (imap, pop3) = (free_port(), free_port());
    let dir = temp_dir("starttls-dovecot");
    let (c, k) = front.write(&dir, "front");
    let ca = ca_file(&dir, &[&front, &backend_cert]);
    let dynamic = format!(
        r#"
tcp:
  routers:
    imap-pass:
      entryPoints: [imap]
      rule: "HostSNI(`imap-pass.test`)"
      service: imap
      tls: {{starttls: imap, passthrough: true}}
    imap-term:
      entryPoints: [imap]
      rule: "HostSNI(`imap-term.test`)"
      service: imap
      tls: {{starttls: imap}}
    pop-pass:
      entryPoints: [pop3]
      rule: "HostSNI(`pop-pass.test`)"
      service: pop3
      tls: {{starttls: pop3, passthrough: true}}
    pop-term:
      entryPoints: [pop3]
      rule: "HostSNI(`pop-term.test`)"
      service: pop3
      tls: {{starttls: pop3}}
  services:
    imap: {{loadBalancer: {{servers: [{{address: "127.0.0.1:{}"}}]}}}}
    pop3: {{loadBalancer: {{servers: [{{address: "127.0.0.1:{}"}}]}}}}
tls:
  certificates: [{{certFile: "{}", keyFile: "{}"}}]
"#,
        dovecot.imap_port,
        dovecot.pop3_port,
        c.display(),
        k.display()
    );
    let r = Router::start(
        &dir,
        &static_config(&dir, &[("imap", imap), ("pop3", pop3)], ""),
        &dynamic,
        &[imap, pop3],
    );

    for (mode, sni) in [("pass", "imap-pass.test"), ("term", "imap-term.test")] {
        let script = format!(
            r#"
import imaplib, ssl
ctx = ssl.create_default_context(cafile="{ca}")
m = imaplib.IMAP4("127.0.0.1", {imap})
m.host = "{sni}"  # the name imaplib gives TLS (SNI and verification)
m.starttls(ssl_context=ctx)
m.login("bob", "secret")
m.append("INBOX", None, None, b"Subject: via {mode}\r\n\r\nhello\r\n")
m.select("INBOX")
typ, found = m.search(None, 'SUBJECT', '"via {mode}"')
print(typ, len(found[0].split()))
m.logout()
"#,
            ca = ca.display()
        );
        let ran = python(&script);
        assert!(ran.success(), "{mode}: {ran:?}\n{}", r.log());
        assert_eq!(ran.stdout.trim(), "OK 1", "{mode}: {ran:?}");

        let pop = format!(
            r#"
import poplib, ssl
ctx = ssl.create_default_context(cafile="{ca}")
p = poplib.POP3("127.0.0.1", {pop3})
p.host = "{}"
p.stls(context=ctx)
p.user("bob")
p.pass_("secret")
print(p.stat()[0] >= 1)
p.quit()
"#,
            sni.replace("imap", "pop"),
            ca = ca.display()
        );
        let ran = python(&pop);
        assert!(ran.success(), "{mode}: {ran:?}\n{}", r.log());
        assert_eq!(ran.stdout.trim(), "True", "{mode}: {ran:?}");

        let listed = run_bounded(
            std::process::Command::new("curl")
                .args(["-sS", "--ssl-reqd", "-u", "bob:secret", "--cacert"])
                .arg(&ca)
                .arg("--resolve")
                .arg(format!("{sni}:{imap}:127.0.0.1"))
                .arg(format!("imap://{sni}:{imap}/")),
            b"",
            WAIT,
        );
        assert!(listed.success(), "{mode}: {listed:?}");
        assert!(listed.stdout.contains("INBOX"), "{mode}: {listed:?}");

        let line = s_client(imap, "imap", sni, &ca, "a LOGIN bob secret", "a ");
        assert!(line.starts_with("a OK"), "{mode}: {line}");
        let line = s_client(
            pop3,
            "pop3",
            &sni.replace("imap", "pop"),
            &ca,
            "USER bob",
            "+OK",
        );
        assert!(line.starts_with("+OK"), "{mode}: {line}");
    }
}

/// An SMTP server (aiosmtpd) behind the router: mail sent with Python's smtplib and curl
/// through a passthrough and a terminating router is delivered, over TLS end to end in
/// the first case and over plaintext from the router in the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_mail_is_delivered_through_the_router() {
    if !installed(&["python3", "openssl", "curl"]) {
        return;
    }
    let backend_cert = TestCert::new(&["mail-pass.test"]);
    let Some(smtpd) = Smtpd::start("smtpd", &backend_cert) else {
        return;
    };
    let front = TestCert::new(&["mail-term.test"]);
    let port = free_port();
    let dir = temp_dir("starttls-smtpd");
    let (c, k) = front.write(&dir, "front");
    let ca = ca_file(&dir, &[&front, &backend_cert]);
    let dynamic = format!(
        r#"
tcp:
  routers:
    pass:
      rule: "HostSNI(`mail-pass.test`)"
      service: smtp
      tls: {{starttls: smtp, passthrough: true}}
    term:
      rule: "HostSNI(`mail-term.test`)"
      service: smtp
      tls: {{starttls: smtp}}
  services:
    smtp: {{loadBalancer: {{servers: [{{address: "127.0.0.1:{}"}}]}}}}
tls:
  certificates: [{{certFile: "{}", keyFile: "{}"}}]
"#,
        smtpd.port,
        c.display(),
        k.display()
    );
    let r = Router::start(
        &dir,
        &static_config(&dir, &[("smtp", port)], ""),
        &dynamic,
        &[port],
    );

    for (mode, sni) in [("pass", "mail-pass.test"), ("term", "mail-term.test")] {
        let script = format!(
            r#"
import smtplib, ssl
ctx = ssl.create_default_context(cafile="{ca}")
s = smtplib.SMTP("127.0.0.1", {port})
s._host = "{sni}"  # the name smtplib gives TLS (SNI and verification)
s.starttls(context=ctx)
s.sendmail("alice@{mode}.test", ["bob@example.test"], "Subject: smtplib via {mode}\r\n\r\nhello\r\n")
s.quit()
"#,
            ca = ca.display()
        );
        let ran = python(&script);
        assert!(ran.success(), "{mode}: {ran:?}\n{}", r.log());

        let message = dir.join(format!("{mode}.eml"));
        std::fs::write(
            &message,
            format!("Subject: curl via {mode}\r\n\r\nhello\r\n"),
        )
        .unwrap();
        let sent = run_bounded(
            std::process::Command::new("curl")
                .args(["-sS", "--ssl-reqd", "--cacert"])
                .arg(&ca)
                .arg("--resolve")
                .arg(format!("{sni}:{port}:127.0.0.1"))
                .arg(format!("smtp://{sni}:{port}"))
                .args([
                    "--mail-from",
                    &format!("carol@{mode}.test"),
                    "--mail-rcpt",
                    "bob@example.test",
                ])
                .arg("--upload-file")
                .arg(&message),
            b"",
            WAIT,
        );
        assert!(sent.success(), "{mode}: {sent:?}");

        let line = s_client(port, "smtp", sni, &ca, "EHLO again.test", "250 ");
        assert!(line.starts_with("250 "), "{mode}: {line}");
    }
    let spool = smtpd.spool();
    for expected in [
        "from=alice@pass.test to=bob@example.test tls=True",
        "from=carol@pass.test to=bob@example.test tls=True",
        "from=alice@term.test to=bob@example.test tls=False",
        "from=carol@term.test to=bob@example.test tls=False",
        "Subject: smtplib via pass",
        "Subject: curl via term",
    ] {
        assert!(spool.contains(expected), "{expected} not in:\n{spool}");
    }
}

/// `starttls: postgres` makes a router take Postgres SSLRequest connections only; a TLS
/// router without `starttls` takes both (as in Traefik).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_starttls_router_takes_only_sslrequest_connections() {
    let cert = TestCert::new(&["pg.test", "any.test"]);
    let pg = Backend::postgres_tls("pg", &cert).await;
    let port = free_port();
    let dir = temp_dir("starttls-postgres");
    let dynamic = format!(
        r#"
tcp:
  routers:
    pg:
      rule: "HostSNI(`pg.test`)"
      service: pg
      tls: {{passthrough: true, starttls: postgres}}
    any:
      rule: "HostSNI(`any.test`)"
      service: pg
      tls: {{passthrough: true}}
  services:
    pg: {{loadBalancer: {{servers: [{{address: "{}"}}]}}}}
"#,
        pg.addr
    );
    let _r = Router::start(
        &dir,
        &static_config(&dir, &[("pg", port)], ""),
        &dynamic,
        &[port],
    );
    let sslrequest = |sni: &'static str| {
        let cert = cert.clone();
        async move {
            let mut tcp = TcpStream::connect(ep(port)).await?;
            tcp.write_all(&PG_SSL_REQUEST).await?;
            let mut answer = [0u8; 1];
            tokio::time::timeout(WAIT, tcp.read_exact(&mut answer)).await??;
            let connector = tokio_rustls::TlsConnector::from(client_config(&[&cert], &[]));
            let name =
                rustls::pki_types::ServerName::try_from(sni).map_err(std::io::Error::other)?;
            let mut tls = tokio::time::timeout(WAIT, connector.connect(name, tcp)).await??;
            read_line(&mut tls).await
        }
    };
    assert_eq!(sslrequest("pg.test").await.unwrap(), "hello from pg");
    assert_eq!(sslrequest("any.test").await.unwrap(), "hello from pg");
    // Direct TLS reaches the router without `starttls` only.
    assert!(
        tls_connect(ep(port), "pg.test", &[&cert], &[])
            .await
            .is_err()
    );
}

/// An entrypoint greets in one protocol: a router declaring another server-first
/// protocol there is left out, with an error naming both; the first one keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_entrypoint_greets_in_one_protocol() {
    let cert = TestCert::new(&["a.test"]);
    let (smtp, _smtp) = mail_server(Mail::Smtp, "smtp", Some(&cert)).await;
    let port = free_port();
    let dir = temp_dir("starttls-conflict");
    let dynamic = format!(
        r#"
tcp:
  routers:
    a-smtp:
      rule: "HostSNI(`a.test`)"
      service: smtp
      tls: {{passthrough: true, starttls: smtp}}
    b-imap:
      rule: "HostSNI(`b.test`)"
      service: smtp
      tls: {{passthrough: true, starttls: imap}}
  services:
    smtp: {{loadBalancer: {{servers: [{{address: "{smtp}"}}]}}}}
"#
    );
    let r = Router::start(
        &dir,
        &static_config(&dir, &[("mail", port)], ""),
        &dynamic,
        &[port],
    );
    r.wait_log("tcp router b-imap@file: starttls imap on entryPoint \"mail\", which already greets STARTTLS clients with smtp (router a-smtp@file)");
    let mut s = client_starttls(port, Mail::Smtp, "a.test", &[&cert])
        .await
        .expect("smtp");
    assert_eq!(read_line(&mut s).await.unwrap(), "hello from smtp");
}
