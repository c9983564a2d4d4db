//! TLS at the router driven by the real Debian clients, `openssl s_client` and `curl`, over
//! loopback: protocol versions per router, certificate selection by SNI (exact, one-label
//! wildcard, default), `sniStrict`, every client-authentication type, TLS options that
//! cannot be built failing closed, and a certificate replaced on disk. The rustls-client
//! versions of these are in `http_mw_tls.rs`, `tls_options.rs` and `tcp_routing.rs`; these
//! show that clients built on OpenSSL see the same. Each test skips (saying which program is
//! missing) when its programs are not installed.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::mtls::{PRESENTED, Pki, Presented};
use support::programs::*;
use support::web::HttpBackend;
use support::*;

/// An HTTP backend named `app` on a runtime of its own (the clients here are blocking
/// programs); the runtime must outlive the backend.
fn app() -> (tokio::runtime::Runtime, HttpBackend) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let backend = runtime.block_on(HttpBackend::start("app"));
    (runtime, backend)
}

/// `curl` for `https://<host>:<port><path>` resolved to loopback, trusting only `ca`, with
/// `args` added: the response head is printed (`-i`), so an HTTP answer shows a status line.
fn curl(port: u16, host: &str, path: &str, ca: &Path, args: &[&str]) -> Ran {
    run_bounded(
        Command::new("curl")
            .args(["-sS", "-i", "--max-time", "5"])
            .args(["--resolve", &format!("{host}:{port}:127.0.0.1")])
            .arg("--cacert")
            .arg(ca)
            .args(args)
            .arg(format!("https://{host}:{port}{path}")),
        b"",
        WAIT,
    )
}

/// `openssl s_client` to the router at `port` with `args`, given `input` and then the end of
/// its input. OpenSSL 3.0 prints `CN = x`, later versions `CN=x`: normalised here.
fn s_client(port: u16, args: &[&str], input: &[u8]) -> Ran {
    let mut ran = run_bounded(
        Command::new("openssl")
            .arg("s_client")
            .args(["-connect", &format!("127.0.0.1:{port}")])
            .args(args),
        input,
        WAIT,
    );
    ran.stdout = ran.stdout.replace(" = ", "=");
    ran
}

/// An `openssl s_client -quiet` session left open (its input stays open), for `sni` at `port`.
fn s_client_session(port: u16, sni: &str, args: &[&str]) -> Running {
    Running::start(
        Command::new("openssl")
            .arg("s_client")
            .args(["-connect", &format!("127.0.0.1:{port}")])
            .args(["-servername", sni, "-quiet"])
            .args(args),
    )
}

/// The SNI arguments of s_client: `-servername <sni>`, or `-noservername` for none at all.
fn sni_args(sni: Option<&str>) -> Vec<&str> {
    match sni {
        Some(name) => vec!["-servername", name],
        None => vec!["-noservername"],
    }
}

/// The base64 body of the first PEM certificate in `text`, on one line.
fn first_pem(text: &str) -> Option<String> {
    let start = text.find("-----BEGIN CERTIFICATE-----")?;
    let body = &text[start + "-----BEGIN CERTIFICATE-----".len()..];
    let end = body.find("-----END CERTIFICATE-----")?;
    Some(body[..end].split_whitespace().collect())
}

/// The certificate the router served to `openssl s_client` for `sni`: its subject and its
/// subject alternative names as `openssl x509` prints them (`CN=a.test`, `DNS:a.test`).
/// `Err` with what s_client printed when the handshake gave no certificate.
fn served(port: u16, sni: Option<&str>) -> Result<(String, String), Ran> {
    let ran = s_client(port, &sni_args(sni), b"");
    if !ran.success() || first_pem(&ran.stdout).is_none() {
        return Err(ran);
    }
    let x509 = run_bounded(
        Command::new("openssl").args(["x509", "-noout", "-subject", "-ext", "subjectAltName"]),
        ran.stdout.as_bytes(),
        WAIT,
    );
    assert!(x509.success(), "openssl x509 failed: {x509:?}");
    let text = x509.stdout.replace(" = ", "=");
    let mut lines = text.lines().map(str::trim);
    let subject = lines
        .next()
        .and_then(|l| l.strip_prefix("subject="))
        .unwrap_or_else(|| panic!("no subject: {x509:?}"))
        .to_owned();
    let sans = lines.nth(1).unwrap_or_default().to_owned();
    Ok((subject, sans))
}

/// Reads the session's output until a line contains `needle` (at most 50 lines).
fn line_containing(session: &mut Running, needle: &str) -> String {
    for _ in 0..50 {
        let line = session.next_line();
        if line.contains(needle) {
            return line;
        }
    }
    panic!("no line with {needle:?}; stderr:\n{}", session.stderr())
}

/// Per-router versions: an HTTP router on `minVersion: VersionTLS13` takes curl's TLS 1.3
/// and refuses its TLS 1.2 (and the reverse for `maxVersion: VersionTLS12`), and the same
/// options on TCP routers terminating TLS do the same to `openssl s_client -tls1_2/-tls1_3`.
#[test]
fn curl_and_s_client_get_only_the_tls_versions_each_routers_option_allows() {
    if !installed(&["curl", "openssl"]) {
        return;
    }
    let (_runtime, app) = app();
    let dir = temp_dir("e2e-tls-versions");
    let cert = TestCert::new(&[
        "modern.test",
        "legacy.test",
        "tcp-modern.test",
        "tcp-legacy.test",
    ]);
    let (crt, key) = cert.write(&dir, "site");
    let dynamic = format!(
        r#"
http:
  routers:
    modern: {{rule: "Host(`modern.test`)", service: app, tls: {{options: modern}}}}
    legacy: {{rule: "Host(`legacy.test`)", service: app, tls: {{options: legacy}}}}
  services:
    app: {{loadBalancer: {{servers: [{{url: "{url}"}}]}}}}
tcp:
  routers:
    tcp-modern: {{rule: "HostSNI(`tcp-modern.test`)", service: echo@internal, tls: {{options: modern}}}}
    tcp-legacy: {{rule: "HostSNI(`tcp-legacy.test`)", service: echo@internal, tls: {{options: legacy}}}}
tls:
  certificates: [{{certFile: "{crt}", keyFile: "{key}"}}]
  options:
    modern: {{minVersion: VersionTLS13}}
    legacy: {{maxVersion: VersionTLS12}}
"#,
        url = app.url(),
        crt = crt.display(),
        key = key.display(),
    );
    let (_router, port) = router("websecure", &dir, &dynamic);

    const TLS12: &[&str] = &["--tlsv1.2", "--tls-max", "1.2"];
    const TLS13: &[&str] = &["--tlsv1.3"];
    // (host, curl's versions, the version agreed or None when refused)
    let cases: [(&str, &[&str], Option<&str>); 4] = [
        ("modern.test", TLS12, None),
        ("modern.test", TLS13, Some("TLSv1.3")),
        ("legacy.test", TLS12, Some("TLSv1.2")),
        ("legacy.test", TLS13, None),
    ];
    let mut served = Vec::new();
    for (host, versions, agreed) in cases {
        let path = format!("/{host}/{}", versions[0]);
        let mut args = vec!["-v"];
        args.extend_from_slice(versions);
        let ran = curl(port, host, &path, &crt, &args);
        match agreed {
            Some(version) => {
                assert!(ran.success(), "{host} {versions:?}: {ran:?}");
                assert!(
                    ran.stderr
                        .contains(&format!("SSL connection using {version}")),
                    "{host} {versions:?}: {ran:?}"
                );
                assert!(
                    ran.stdout.ends_with(&format!("app {path}")),
                    "{host} {versions:?}: {ran:?}"
                );
                served.push(format!("GET {path} "));
            }
            None => {
                assert!(!ran.success(), "{host} {versions:?} was served: {ran:?}");
                assert!(
                    !ran.stdout.contains("HTTP/"),
                    "{host} {versions:?}: {ran:?}"
                );
            }
        }
    }
    assert_eq!(app.seen(), served);

    let cases = [
        ("tcp-modern.test", "-tls1_2", None),
        ("tcp-modern.test", "-tls1_3", Some("TLSv1.3")),
        ("tcp-legacy.test", "-tls1_2", Some("TLSv1.2")),
        ("tcp-legacy.test", "-tls1_3", None),
    ];
    for (sni, version_flag, agreed) in cases {
        let ran = s_client(port, &["-servername", sni, version_flag], b"");
        match agreed {
            Some(version) => {
                assert!(ran.success(), "{sni} {version_flag}: {ran:?}");
                assert!(
                    ran.stdout.contains(&format!("New, {version}, Cipher is")),
                    "{sni} {version_flag}: {ran:?}"
                );
                // The terminated session carries data to echo@internal and back.
                let mut session = s_client_session(port, sni, &[version_flag]);
                session.send("ping\n");
                assert_eq!(session.next_line(), "ping", "{sni} {version_flag}");
            }
            None => {
                assert!(!ran.success(), "{sni} {version_flag} agreed: {ran:?}");
                assert!(first_pem(&ran.stdout).is_none(), "{ran:?}");
            }
        }
    }
}

/// Certificate selection as Traefik does it: the exact name, then a wildcard covering one
/// label only, then `tls.stores.default.defaultCertificate` (for an unknown name, a name two
/// labels under the wildcard, and no SNI at all). The SNI is matched case-insensitively.
#[test]
fn s_client_gets_the_certificate_its_sni_selects_or_the_default_one() {
    if !installed(&["openssl"]) {
        return;
    }
    let dir = temp_dir("e2e-tls-sni");
    let (exact_crt, exact_key) = TestCert::new(&["a.test"]).write(&dir, "exact");
    let (wild_crt, wild_key) = TestCert::new(&["*.wild.test"]).write(&dir, "wild");
    let (default_crt, default_key) = TestCert::new(&["default.test"]).write(&dir, "default");
    let dynamic = format!(
        r#"
tcp:
  routers:
    all:
      rule: "HostSNI(`*`)"
      service: echo@internal
      tls: {{}}
tls:
  certificates:
    - {{certFile: "{}", keyFile: "{}"}}
    - {{certFile: "{}", keyFile: "{}"}}
  stores:
    default:
      defaultCertificate: {{certFile: "{}", keyFile: "{}"}}
"#,
        exact_crt.display(),
        exact_key.display(),
        wild_crt.display(),
        wild_key.display(),
        default_crt.display(),
        default_key.display(),
    );
    let (_router, port) = router("websecure", &dir, &dynamic);

    let exact = ("CN=a.test", "DNS:a.test");
    let wild = ("CN=*.wild.test", "DNS:*.wild.test");
    let default = ("CN=default.test", "DNS:default.test");
    let cases = [
        (Some("a.test"), exact),
        (Some("A.Test"), exact),
        (Some("x.wild.test"), wild),
        (Some("deep.x.wild.test"), default),
        (Some("other.test"), default),
        (None, default),
    ];
    for (sni, (subject, sans)) in cases {
        let got = served(port, sni).unwrap_or_else(|ran| panic!("{sni:?}: {ran:?}"));
        assert_eq!(got, (subject.to_owned(), sans.to_owned()), "SNI {sni:?}");
    }
}

/// `sniStrict: true` on the default option: a name with a certificate is served; an unknown
/// name and a hello without SNI get no certificate and a failed handshake.
#[test]
fn sni_strict_refuses_unknown_and_missing_sni_to_s_client() {
    if !installed(&["openssl"]) {
        return;
    }
    let dir = temp_dir("e2e-tls-sni-strict");
    let (crt, key) = TestCert::new(&["a.test"]).write(&dir, "exact");
    let dynamic = format!(
        r#"
tcp:
  routers:
    all:
      rule: "HostSNI(`*`)"
      service: echo@internal
      tls: {{}}
tls:
  certificates: [{{certFile: "{}", keyFile: "{}"}}]
  options:
    default:
      sniStrict: true
"#,
        crt.display(),
        key.display(),
    );
    let (_router, port) = router("websecure", &dir, &dynamic);

    let known = served(port, Some("a.test")).unwrap_or_else(|ran| panic!("{ran:?}"));
    assert_eq!(known, ("CN=a.test".to_owned(), "DNS:a.test".to_owned()));
    let mut session = s_client_session(port, "a.test", &[]);
    session.send("strict\n");
    assert_eq!(session.next_line(), "strict");
    for sni in [Some("other.test"), None] {
        match served(port, sni) {
            Ok(cert) => panic!("SNI {sni:?} was served {cert:?}"),
            // Refused, not left hanging until the bound.
            Err(ran) => assert!(ran.status.is_some(), "SNI {sni:?}: {ran:?}"),
        }
    }
}

/// curl against each `clientAuthType` with no certificate, one from a CA the option does not
/// trust, and one from the CA it trusts: the same admissions as Traefik's (Go's) and as the
/// rustls test `each_client_auth_type_admits_the_clients_traefik_admits`. A refusal may come
/// after a TLS 1.3 handshake, on the first read: curl then fails, and no request reaches the
/// backend.
#[test]
fn curl_is_admitted_by_each_client_auth_type_as_traefik_admits_it() {
    if !installed(&["curl"]) {
        return;
    }
    let (_runtime, app) = app();
    let pki = Pki::new();
    let dir = temp_dir("e2e-tls-client-auth");
    let (server_ca, _) = pki.server_ca.cert.write(&dir, "server-ca");
    let dynamic = pki.client_auth_site(
        &dir,
        "",
        &format!(
            "  services:\n    s: {{ loadBalancer: {{ servers: [{{ url: \"{}\" }}] }} }}\n",
            app.url()
        ),
    );
    let (_router, port) = router("websecure", &dir, &dynamic);
    let files = |which: Presented| {
        pki.presented(which)
            .map(|cert| cert.write(&dir, &format!("{which:?}-client")))
    };

    // (type, admitted with [no certificate, the untrusted CA's, the trusted CA's])
    let expected: [(&str, [bool; 3]); 6] = [
        ("none", [true, true, true]),
        ("request", [true, true, true]),
        ("requireany", [false, true, true]),
        ("ifgiven", [true, false, true]),
        ("verify", [false, false, true]),
        ("cafilesonly", [false, false, true]),
    ];
    let mut served = Vec::new();
    for (kind, admitted) in expected {
        for (presented, admitted) in PRESENTED.into_iter().zip(admitted) {
            let path = format!("/{kind}/{presented:?}");
            let mut args = Vec::new();
            let written = files(presented);
            if let Some((crt, key)) = &written {
                args.extend(["--cert", path_str(crt), "--key", path_str(key)]);
            }
            let ran = curl(port, &format!("{kind}.test"), &path, &server_ca, &args);
            if admitted {
                assert!(ran.success(), "{kind} refused {presented:?}: {ran:?}");
                assert!(ran.stdout.contains(" 200"), "{kind} {presented:?}: {ran:?}");
                assert!(
                    ran.stdout.ends_with(&format!("app {path}")),
                    "{kind} {presented:?}: {ran:?}"
                );
                served.push(format!("GET {path} "));
            } else {
                assert!(!ran.success(), "{kind} admitted {presented:?}: {ran:?}");
                assert!(
                    !ran.stdout.contains("HTTP/"),
                    "{kind} {presented:?}: {ran:?}"
                );
                assert!(
                    !ran.stdout.contains("app "),
                    "{kind} {presented:?}: {ran:?}"
                );
            }
        }
    }
    assert_eq!(app.seen(), served);
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

/// A TLS option that cannot be built, `broken` (YAML under its name), fails closed: curl
/// (with no client certificate, and with one from the trusted CA) and s_client asking for
/// `broken.test` get a failed handshake and never an HTTP answer, though a catch-all router
/// on the default option would take the request; `good.test` on the same entrypoint keeps
/// serving; the log says `log_needle` and that handshakes are refused.
fn broken_option_refuses_curl_and_s_client_while_a_good_host_serves(
    tag: &str,
    broken: impl Fn(&Path) -> String,
    log_needle: &str,
) {
    let (_runtime, app) = app();
    let pki = Pki::new();
    let dir = temp_dir(tag);
    let (server_ca, _) = pki.server_ca.cert.write(&dir, "server-ca");
    let (client_crt, client_key) = pki.good.write(&dir, "client");
    let dynamic = format!(
        r#"
http:
  routers:
    broken: {{rule: "Host(`broken.test`)", service: app, tls: {{options: broken}}}}
    good: {{rule: "Host(`good.test`)", service: app, tls: {{}}}}
    open: {{rule: "PathPrefix(`/`)", service: app, tls: {{}}}}
  services:
    app: {{loadBalancer: {{servers: [{{url: "{url}"}}]}}}}
tls:
{certificates}  options:
    broken:
{broken}"#,
        url = app.url(),
        certificates = pki.certificates(&dir, &["broken.test", "good.test"]),
        broken = broken(&dir),
    );
    let (router, port) = router("websecure", &dir, &dynamic);
    let request =
        |host: &str| format!("GET /s_client HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let with_cert = [
        "--cert",
        path_str(&client_crt),
        "--key",
        path_str(&client_key),
    ];

    for args in [&[][..], &with_cert[..]] {
        let ran = curl(port, "broken.test", "/curl", &server_ca, args);
        assert!(!ran.success(), "{args:?}: served: {ran:?}");
        assert!(!ran.stdout.contains("HTTP/"), "{args:?}: {ran:?}");
    }
    let ran = s_client(
        port,
        &[
            "-servername",
            "broken.test",
            "-CAfile",
            path_str(&server_ca),
        ],
        request("broken.test").as_bytes(),
    );
    assert!(!ran.success(), "the handshake succeeded: {ran:?}");
    assert!(!ran.stdout.contains("HTTP/"), "{ran:?}");
    assert!(first_pem(&ran.stdout).is_none(), "{ran:?}");
    assert_eq!(app.seen(), Vec::<String>::new());

    let ran = curl(port, "good.test", "/curl", &server_ca, &[]);
    assert!(ran.success(), "{ran:?}");
    assert!(ran.stdout.ends_with("app /curl"), "{ran:?}");
    // `-ign_eof`: s_client waits for the answer, and the router closes after it.
    let ran = s_client(
        port,
        &["-servername", "good.test", "-quiet", "-ign_eof"],
        request("good.test").as_bytes(),
    );
    assert!(ran.stdout.starts_with("HTTP/1.1 200"), "{ran:?}");
    assert!(ran.stdout.ends_with("app /s_client"), "{ran:?}");
    assert_eq!(app.seen(), ["GET /curl ", "GET /s_client "]);

    router.wait_log(log_needle);
    router.wait_log("refusing TLS handshake");
}

#[test]
fn a_missing_client_ca_file_refuses_curl_and_s_client_while_a_good_host_serves() {
    if !installed(&["curl", "openssl"]) {
        return;
    }
    broken_option_refuses_curl_and_s_client_while_a_good_host_serves(
        "e2e-tls-missing-ca",
        |dir| {
            format!(
                "      clientAuth: {{caFiles: [\"{}\"], clientAuthType: RequireAndVerifyClientCert}}\n",
                dir.join("gone-ca.pem").display()
            )
        },
        "gone-ca.pem",
    );
}

#[test]
fn an_unknown_cipher_suite_refuses_curl_and_s_client_while_a_good_host_serves() {
    if !installed(&["curl", "openssl"]) {
        return;
    }
    broken_option_refuses_curl_and_s_client_while_a_good_host_serves(
        "e2e-tls-unknown-cipher",
        |_| "      cipherSuites: [TLS_NOT_A_SUITE]\n".to_owned(),
        "invalid CipherSuite: TLS_NOT_A_SUITE",
    );
}

/// A certificate renewed in place on disk: curl trusting only the first certificate gets
/// through before, curl trusting only the renewed one within seconds after (and s_client sees
/// the renewed one, byte for byte), while an s_client connection opened before the change
/// keeps carrying HTTP requests.
#[test]
fn a_certificate_replaced_on_disk_is_served_next_and_open_sessions_live_on() {
    if !installed(&["curl", "openssl"]) {
        return;
    }
    let (_runtime, app) = app();
    let dir = temp_dir("e2e-tls-cert-watch");
    // Certificates in a directory of their own, which only the TLS file watch covers.
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).expect("certs dir");
    let first = TestCert::new(&["site.test"]);
    let renewed = TestCert::new(&["site.test"]);
    let (crt, key) = first.write(&certs, "site");
    let (trust_first, _) = first.write(&dir, "trust-first");
    let (trust_renewed, _) = renewed.write(&dir, "trust-renewed");
    let dynamic = format!(
        r#"
http:
  routers:
    site: {{rule: "Host(`site.test`)", service: app, tls: {{}}}}
  services:
    app: {{loadBalancer: {{servers: [{{url: "{}"}}]}}}}
tls:
  certificates: [{{certFile: "{}", keyFile: "{}"}}]
"#,
        app.url(),
        crt.display(),
        key.display()
    );
    let (router, port) = router("websecure", &dir, &dynamic);
    let served_pem = || {
        let ran = s_client(port, &["-servername", "site.test"], b"");
        first_pem(&ran.stdout).unwrap_or_else(|| panic!("no certificate: {ran:?}"))
    };
    let pem = |cert: &TestCert| first_pem(&cert.cert_pem).expect("PEM");

    let before = curl(port, "site.test", "/before", &trust_first, &[]);
    assert!(before.success(), "{before:?}");
    assert!(before.stdout.ends_with("app /before"), "{before:?}");
    assert_eq!(served_pem(), pem(&first));
    let mut open = s_client_session(port, "site.test", &[]);
    open.send("GET /open/1 HTTP/1.1\r\nHost: site.test\r\n\r\n");
    line_containing(&mut open, "HTTP/1.1 200");

    renewed.write(&certs, "site");
    let deadline = Instant::now() + WAIT;
    loop {
        let after = curl(port, "site.test", "/after", &trust_renewed, &[]);
        if after.success() {
            assert!(after.stdout.ends_with("app /after"), "{after:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was never served: {after:?}\n{}",
            router.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(served_pem(), pem(&renewed));
    let stale = curl(port, "site.test", "/stale", &trust_first, &[]);
    assert!(
        !stale.success(),
        "the first certificate still served: {stale:?}"
    );

    open.send("GET /open/2 HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n");
    line_containing(&mut open, "app /open/2");
    assert_eq!(
        app.seen(),
        [
            "GET /before ",
            "GET /open/1 ",
            "GET /after ",
            "GET /open/2 "
        ]
    );
}
