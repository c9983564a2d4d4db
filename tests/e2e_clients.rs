//! The router driven by real programs as a user would run them: psql against a real
//! PostgreSQL, openssl s_client/s_server, curl, nc, Python's aioquic as an HTTP/3 client
//! (`tests/e2e/h3_client.py`), and the README quick start. Each test skips (saying which
//! program is missing) when its programs are not installed.

mod support;

use std::path::Path;
use std::process::Command;

use support::programs::*;
use support::*;

/// Dynamic configuration with one router for `HostSNI(sni)` to the server at `addr`,
/// in TLS passthrough (`tls: {passthrough: true}`) or terminated with `cert` (`tls: {}`).
fn one_route(sni: &str, addr: &str, passthrough: bool, cert: Option<(&Path, &Path)>) -> String {
    let tls = if passthrough {
        "{passthrough: true}"
    } else {
        "{}"
    };
    let mut yaml = format!(
        r#"
tcp:
  routers:
    only:
      rule: "HostSNI(`{sni}`)"
      service: backend
      tls: {tls}
  services:
    backend: {{loadBalancer: {{servers: [{{address: "{addr}"}}]}}}}
"#
    );
    if let Some((c, k)) = cert {
        yaml.push_str(&format!(
            "tls:\n  certificates: [{{certFile: \"{}\", keyFile: \"{}\"}}]\n",
            c.display(),
            k.display()
        ));
    }
    yaml
}

/// psql to `localhost` (libpq sends it as SNI) at `127.0.0.1:port`, verifying the
/// server certificate against `root`: `\conninfo`, then whether the server itself
/// runs TLS (`SHOW ssl`) and whether this session is TLS on the server's side.
fn psql(port: u16, root: &Path) -> Ran {
    let conn = format!(
        "host=localhost hostaddr=127.0.0.1 port={port} user=postgres dbname=postgres \
         sslmode=verify-full sslrootcert={} connect_timeout=5",
        root.display()
    );
    run_bounded(
        Command::new("psql")
            .args(["-X", "-At", "-v", "ON_ERROR_STOP=1"])
            .arg(conn)
            .args(["-c", "\\conninfo"])
            .args(["-c", "SELECT 1"])
            .args(["-c", "SHOW ssl"])
            .args([
                "-c",
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            ]),
        b"",
        WAIT,
    )
}

/// Passthrough: the SSLRequest and the TLS session reach PostgreSQL itself, so psql
/// verifies PostgreSQL's own certificate and the server reports the session as TLS.
#[test]
fn psql_reaches_tls_postgres_through_sni_passthrough() {
    if !installed(&["psql"]) {
        return;
    }
    let pg_cert = TestCert::new(&["localhost"]);
    let Some(pg) = PgServer::start("pg-pass", Some(&pg_cert)) else {
        return;
    };
    let dir = temp_dir("e2e-psql-pass");
    let (root, _) = pg_cert.write(&dir, "pg-root");
    let dynamic = one_route("localhost", &format!("127.0.0.1:{}", pg.port), true, None);
    let (_r, port) = router("pg", &dir, &dynamic);

    let ran = psql(port, &root);
    assert!(ran.success(), "psql failed: {ran:?}");
    let lines: Vec<&str> = ran.stdout.lines().collect();
    assert!(
        lines.len() == 5 && lines[1].starts_with("SSL connection"),
        "{ran:?}"
    );
    assert_eq!(lines[2..], ["1", "on", "t"], "{ran:?}");
}

/// Termination: the router answers the SSLRequest and the TLS handshake with its own
/// certificate, and speaks plaintext to a PostgreSQL that has TLS off.
#[test]
fn psql_gets_tls_from_the_router_in_front_of_plaintext_postgres() {
    if !installed(&["psql"]) {
        return;
    }
    let Some(pg) = PgServer::start("pg-term", None) else {
        return;
    };
    let dir = temp_dir("e2e-psql-term");
    let front = TestCert::new(&["localhost"]);
    let (c, k) = front.write(&dir, "front");
    let dynamic = one_route(
        "localhost",
        &format!("127.0.0.1:{}", pg.port),
        false,
        Some((&c, &k)),
    );
    let (_r, port) = router("pg", &dir, &dynamic);

    let ran = psql(port, &c);
    assert!(ran.success(), "psql failed: {ran:?}");
    let lines: Vec<&str> = ran.stdout.lines().collect();
    assert!(
        lines.len() == 5 && lines[1].starts_with("SSL connection"),
        "{ran:?}"
    );
    assert_eq!(lines[2..], ["1", "off", "f"], "{ran:?}");
}

/// `openssl s_client` output with its input closed at once (it prints the handshake
/// and leaves). OpenSSL 3.0 prints `CN = x`, later versions `CN=x`: normalised here.
fn s_client(port: u16, sni: &str, alpn: &str, root: &Path) -> Ran {
    let mut ran = run_bounded(
        Command::new("openssl")
            .arg("s_client")
            .args(["-connect", &format!("127.0.0.1:{port}")])
            .args(["-servername", sni, "-alpn", alpn])
            .arg("-CAfile")
            .arg(root)
            .args(["-verify_return_error", "-verify_hostname", sni]),
        b"",
        WAIT,
    );
    ran.stdout = ran.stdout.replace(" = ", "=");
    ran
}

/// Passthrough to `openssl s_server`: the client verifies the backend's certificate
/// and the backend picks the ALPN protocol the client offered.
#[test]
fn s_client_sees_the_backend_certificate_and_alpn_through_passthrough() {
    if !installed(&["openssl"]) {
        return;
    }
    let dir = temp_dir("e2e-sclient-pass");
    let cert = TestCert::new(&["backend.test"]);
    let (_server, backend_port) = openssl_www_server(&dir, &cert, "h2,http/1.1");
    let dynamic = one_route(
        "backend.test",
        &format!("127.0.0.1:{backend_port}"),
        true,
        None,
    );
    let (_r, port) = router("tls", &dir, &dynamic);
    let (root, _) = cert.write(&dir, "root");

    let ran = s_client(port, "backend.test", "h2", &root);
    assert!(ran.success(), "s_client failed: {ran:?}");
    assert!(ran.stdout.contains("subject=CN=backend.test"), "{ran:?}");
    assert!(ran.stdout.contains("ALPN protocol: h2"), "{ran:?}");
    assert!(ran.stdout.contains("Verify return code: 0 (ok)"), "{ran:?}");
}

/// Termination: the router's certificate, and the router negotiates ALPN itself
/// (its default `h2`, `http/1.1`).
#[test]
fn s_client_negotiates_alpn_with_the_terminating_router() {
    if !installed(&["openssl"]) {
        return;
    }
    let dir = temp_dir("e2e-sclient-term");
    let front = TestCert::new(&["front.test"]);
    let (c, k) = front.write(&dir, "front");
    let dynamic = format!(
        r#"
tcp:
  routers:
    term:
      rule: "HostSNI(`front.test`)"
      service: echo@internal
      tls: {{}}
tls:
  certificates: [{{certFile: "{}", keyFile: "{}"}}]
"#,
        c.display(),
        k.display()
    );
    let (_r, port) = router("tls", &dir, &dynamic);

    for alpn in ["h2", "http/1.1"] {
        let ran = s_client(port, "front.test", alpn, &c);
        assert!(ran.success(), "s_client failed: {ran:?}");
        assert!(ran.stdout.contains("subject=CN=front.test"), "{ran:?}");
        assert!(
            ran.stdout.contains(&format!("ALPN protocol: {alpn}")),
            "{ran:?}"
        );
    }
}

/// curl over HTTPS through passthrough to `openssl s_server -www`, trusting only the
/// backend's certificate.
#[test]
fn curl_gets_200_from_an_https_backend_through_passthrough() {
    if !installed(&["openssl", "curl"]) {
        return;
    }
    let dir = temp_dir("e2e-curl");
    let cert = TestCert::new(&["www.test"]);
    let (_server, backend_port) = openssl_www_server(&dir, &cert, "http/1.1");
    let dynamic = one_route("www.test", &format!("127.0.0.1:{backend_port}"), true, None);
    let (_r, port) = router("https", &dir, &dynamic);
    let (root, _) = cert.write(&dir, "root");

    let ran = run_bounded(
        Command::new("curl")
            .args(["-sS", "--max-time", "5", "--http1.1"])
            .args(["--resolve", &format!("www.test:{port}:127.0.0.1")])
            .arg("--cacert")
            .arg(&root)
            .args(["-o", "/dev/null", "-w", "%{http_code}"])
            .arg(format!("https://www.test:{port}/")),
        b"",
        WAIT,
    );
    assert!(ran.success(), "curl failed: {ran:?}");
    assert_eq!(ran.stdout, "200", "{ran:?}");
}

/// Plain TCP through `HostSNI(*)` to the built-in echo service; nc half-closes after
/// its input (`-N`) and exits only once the router closes its side after the echo.
#[test]
fn nc_echoes_through_the_catch_all_router_to_echo_internal() {
    if !installed(&["nc"]) {
        return;
    }
    let dir = temp_dir("e2e-nc");
    let dynamic = r#"
tcp:
  routers:
    all:
      rule: "HostSNI(`*`)"
      service: echo@internal
"#;
    let (_r, port) = router("tcp", &dir, dynamic);

    let ran = run_bounded(
        Command::new("nc").args(["-N", "127.0.0.1", &port.to_string()]),
        b"hello\nsallyport\n",
        WAIT,
    );
    assert!(ran.success(), "nc failed: {ran:?}");
    assert_eq!(ran.stdout, "hello\nsallyport\n");
}

/// The README quick start, run as a newcomer does: from the repository root, on
/// `examples/quickstart/sallyport.yml`, with the commands its comments show.
#[test]
fn quickstart_echoes_plain_tcp_and_terminated_tls() {
    if !installed(&["nc", "openssl"]) {
        return;
    }
    if !port_is_free(7000) || !port_is_free(7443) {
        eprintln!("skipped: quick start ports 127.0.0.1:7000/7443 are in use");
        return;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = temp_dir("e2e-quickstart");
    let _r = Router::start_on(
        repo,
        Path::new("examples/quickstart/sallyport.yml"),
        &dir,
        &[7000, 7443],
    );

    let ran = run_bounded(
        Command::new("nc").args(["-q1", "127.0.0.1", "7000"]),
        b"hello\n",
        WAIT,
    );
    assert!(ran.success(), "nc failed: {ran:?}");
    assert_eq!(ran.stdout, "hello\n");

    let mut client = Running::start(Command::new("openssl").args([
        "s_client",
        "-quiet",
        "-connect",
        "127.0.0.1:7443",
        "-servername",
        "echo.localhost",
    ]));
    client.send("hello over tls\n");
    assert_eq!(client.next_line(), "hello over tls");
}

/// `examples/http/`, run from the repository root with curl as the client: plain HTTP is
/// redirected to HTTPS, and HTTPS (HTTP/2 by ALPN, and HTTP/1.1) reaches the backend.
#[test]
fn http_example_redirects_to_https_and_serves_the_backend_with_curl() {
    if !installed(&["curl"]) {
        return;
    }
    if ![8000, 8443, 9000].into_iter().all(port_is_free) {
        eprintln!("skipped: example ports 127.0.0.1:8000/8443/9000 are in use");
        return;
    }
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let _backend = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:9000")
            .await
            .expect("bind 9000");
        web::HttpBackend::on(listener, "app")
    });
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = temp_dir("e2e-http-example");
    let _r = Router::start_on(
        repo,
        Path::new("examples/http/sallyport.yml"),
        &dir,
        &[8000, 8443],
    );
    let curl = |args: &[&str]| {
        let ran = run_bounded(Command::new("curl").args(args), b"", WAIT);
        assert!(ran.success(), "curl {args:?} failed: {ran:?}");
        ran.stdout
    };
    let redirect = curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{redirect_url}",
        "http://127.0.0.1:8000/docs?page=2",
    ]);
    assert_eq!(redirect, "301 https://127.0.0.1:8443/docs?page=2");
    let resolve = "app.localhost:8443:127.0.0.1";
    let h2 = curl(&[
        "-sk",
        "--resolve",
        resolve,
        "-w",
        " %{http_version}",
        "https://app.localhost:8443/hello",
    ]);
    assert_eq!(h2, "app /hello 2");
    let h1 = curl(&[
        "-sk",
        "--http1.1",
        "--resolve",
        resolve,
        "-w",
        " %{http_version}",
        "https://app.localhost:8443/hello",
    ]);
    assert_eq!(h1, "app /hello 1.1");
    let unknown = curl(&[
        "-sk",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--resolve",
        "other.localhost:8443:127.0.0.1",
        "https://other.localhost:8443/",
    ]);
    assert_eq!(unknown, "404");
}

/// The router with one entrypoint serving HTTPS and HTTP/3 (`http3: {}`) for `site.test`,
/// routed to an HTTP/1.1 backend (`web::HttpBackend`), which runs on its own runtime.
struct H3Front {
    _runtime: tokio::runtime::Runtime,
    _router: Router,
    backend: web::HttpBackend,
    dir: std::path::PathBuf,
    ca: std::path::PathBuf,
    port: u16,
}

impl H3Front {
    fn start(tag: &str) -> H3Front {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let backend = runtime.block_on(web::HttpBackend::start("app"));
        let dir = temp_dir(tag);
        let cert = TestCert::new(&["site.test"]);
        let (crt, key) = cert.write(&dir, "site");
        let port = free_port();
        let static_yaml = format!(
            "entryPoints:\n  websecure:\n    address: \"127.0.0.1:{port}\"\n    http3: {{}}\nproviders:\n  file:\n    filename: \"{}\"\nlog:\n  level: DEBUG\n",
            dir.join("dynamic.yml").display()
        );
        let dynamic = format!(
            "http:\n  routers:\n    site:\n      rule: \"Host(`site.test`)\"\n      service: app\n      tls: {{}}\n  services:\n    app:\n      loadBalancer:\n        servers: [{{url: \"{}\"}}]\ntls:\n  certificates: [{{certFile: \"{}\", keyFile: \"{}\"}}]\n",
            backend.url(),
            crt.display(),
            key.display()
        );
        let router = Router::start(&dir, &static_yaml, &dynamic, &[port]);
        router.wait_log("listening (HTTP/3)");
        H3Front {
            _runtime: runtime,
            _router: router,
            backend,
            dir,
            ca: crt,
            port,
        }
    }

    /// `tests/e2e/h3_client.py` for `https://site.test<path>` (GET, or POST of `body`): its
    /// JSON answer.
    fn aioquic(&self, path: &str, body: Option<&[u8]>) -> serde_json::Value {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/h3_client.py");
        let mut command = Command::new("python3");
        command
            .arg(script)
            .arg(format!("https://127.0.0.1:{}{path}", self.port))
            .args(["--sni", "site.test", "--ca"])
            .arg(&self.ca);
        if let Some(body) = body {
            let file = self.dir.join("request-body");
            std::fs::write(&file, body).expect("write request body");
            command.arg("--data-file").arg(file);
        }
        let ran = run_bounded(&mut command, b"", WAIT);
        assert!(ran.success(), "h3_client.py failed: {ran:?}");
        serde_json::from_str(&ran.stdout).unwrap_or_else(|e| panic!("{e}: {ran:?}"))
    }
}

/// The value of response header `name` in the client's JSON answer, `-` when absent.
fn json_header<'a>(answer: &'a serde_json::Value, name: &str) -> &'a str {
    answer["headers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|pair| pair[0] == name)
        .and_then(|pair| pair[1].as_str())
        .unwrap_or("-")
}

/// True if `python3` can import aioquic; otherwise says why the calling test is skipped.
fn aioquic_installed() -> bool {
    if !installed(&["python3"]) {
        return false;
    }
    let ran = run_bounded(
        Command::new("python3").args(["-c", "import aioquic"]),
        b"",
        WAIT,
    );
    if !ran.success() {
        eprintln!(
            "skipped: python3 cannot import aioquic (pip install aioquic): {}",
            ran.stderr.trim().lines().last().unwrap_or("")
        );
    }
    ran.success()
}

/// aioquic, an HTTP/3 stack independent of the router's, gets the HTTP/1.1 backend's answer
/// and the forwarded headers say the request came over HTTPS.
#[test]
fn aioquic_gets_an_http1_backend_over_http3() {
    if !aioquic_installed() {
        return;
    }
    let front = H3Front::start("e2e-aioquic-get");
    let answer = front.aioquic("/hello?x=1", None);
    assert_eq!(answer["status"], 200, "{answer}");
    assert_eq!(answer["body"], "app /hello?x=1", "{answer}");
    assert_eq!(json_header(&answer, "x-seen-proto"), "https", "{answer}");
    assert_eq!(json_header(&answer, "x-seen-host"), "site.test", "{answer}");
    assert_eq!(
        json_header(&answer, "x-seen-version"),
        "HTTP/1.1",
        "{answer}"
    );
    assert_eq!(front.backend.seen(), vec!["GET /hello?x=1 ".to_owned()]);
}

/// A POST body from aioquic (DATA frames, no content-length) reaches the backend and its
/// echo comes back.
#[test]
fn aioquic_posts_a_body_that_the_backend_echoes() {
    if !aioquic_installed() {
        return;
    }
    let front = H3Front::start("e2e-aioquic-post");
    let answer = front.aioquic("/echo", Some(b"hello from aioquic"));
    assert_eq!(answer["status"], 200, "{answer}");
    assert_eq!(answer["body"], "hello from aioquic", "{answer}");
    assert_eq!(front.backend.seen(), vec!["POST /echo".to_owned()]);
}

/// One mebibyte each way: aioquic's request body is echoed back whole, checked by length
/// and SHA-256.
#[test]
fn aioquic_gets_a_one_mebibyte_response_whole() {
    if !aioquic_installed() {
        return;
    }
    use sha2::Digest;
    let front = H3Front::start("e2e-aioquic-large");
    let payload: Vec<u8> = (0..(1usize << 20)).map(|i| (i % 251) as u8).collect();
    let answer = front.aioquic("/echo", Some(&payload));
    assert_eq!(answer["status"], 200, "{answer}");
    assert_eq!(answer["body_length"], 1 << 20, "{answer}");
    let expected: String = sha2::Sha256::digest(&payload)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(answer["body_sha256"], expected.as_str(), "{answer}");
}

/// `openssl s_client` against TLS options: a TLS 1.2 cipher the option leaves out is
/// refused, the one it names is agreed, and `curvePreferences` picks the group.
#[test]
fn s_client_meets_the_cipher_suites_and_curves_of_a_tls_option() {
    if !installed(&["openssl"]) {
        return;
    }
    let dir = temp_dir("e2e-sclient-ciphers");
    let cert = TestCert::new(&["strict.test"]);
    let (c, k) = cert.write(&dir, "strict");
    let dynamic = format!(
        r#"
tcp:
  routers:
    strict:
      rule: "HostSNI(`strict.test`)"
      service: echo@internal
      tls: {{options: strict}}
tls:
  certificates: [{{certFile: "{}", keyFile: "{}"}}]
  options:
    strict:
      cipherSuites: [TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384]
      curvePreferences: [CurveP384]
"#,
        c.display(),
        k.display()
    );
    let (_r, port) = router("tls", &dir, &dynamic);
    let connect = |args: &[&str]| {
        run_bounded(
            Command::new("openssl")
                .arg("s_client")
                .args(["-connect", &format!("127.0.0.1:{port}")])
                .args(["-servername", "strict.test"])
                .args(args),
            b"",
            WAIT,
        )
    };
    let refused = connect(&["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"]);
    assert!(
        !refused.success(),
        "a cipher left out was agreed: {refused:?}"
    );
    let agreed = connect(&["-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-GCM-SHA384"]);
    assert!(agreed.success(), "{agreed:?}");
    assert!(
        agreed.stdout.contains("ECDHE-ECDSA-AES256-GCM-SHA384"),
        "{agreed:?}"
    );
    let tls13 = connect(&["-tls1_3", "-groups", "X25519:P-384"]);
    assert!(tls13.success(), "{tls13:?}");
    let all = format!("{}{}", tls13.stdout, tls13.stderr);
    assert!(
        all.contains("P-384") || all.contains("secp384r1"),
        "{tls13:?}"
    );
    let no_group = connect(&["-tls1_3", "-groups", "X25519"]);
    assert!(
        !no_group.success(),
        "a group left out was agreed: {no_group:?}"
    );
}
