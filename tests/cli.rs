//! The command line: `check`, `--version`, and configuration discovery.

mod support;

use support::*;

#[test]
fn version_prints_the_package_version() {
    let (code, out) = run_cli(&["--version"], &std::env::temp_dir());
    assert_eq!(code, 0);
    assert!(out.contains(env!("CARGO_PKG_VERSION")), "{out}");
}

#[test]
fn check_accepts_a_valid_configuration() {
    let dir = temp_dir("check-ok");
    std::fs::write(
        dir.join("dynamic.yml"),
        "tcp:\n  routers:\n    r: {rule: \"HostSNI(`*`)\", service: s}\n  services:\n    s: {loadBalancer: {servers: [{address: \"127.0.0.1:9\"}]}}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("static.yml"),
        static_config(&dir, &[("tcp", 18000)], ""),
    )
    .unwrap();
    let (code, out) = run_cli(&["check", "--config", "static.yml"], &dir);
    assert_eq!(code, 0, "{out}");
}

/// ACME resolvers that cannot start are errors of `check`: an unreadable storage file (left
/// untouched) and an HTTP-01 entrypoint that does not exist.
#[test]
fn check_reports_acme_resolvers_that_cannot_start() {
    let dir = temp_dir("check-acme");
    std::fs::write(dir.join("dynamic.yml"), "").unwrap();
    std::fs::write(dir.join("acme.json"), "{not json").unwrap();
    let resolvers = r#"certificatesResolvers:
  garbled:
    acme:
      storage: acme.json
      tlsChallenge: {}
  lost:
    acme:
      storage: other.json
      httpChallenge: {entryPoint: nowhere}
"#;
    std::fs::write(
        dir.join("static.yml"),
        static_config(&dir, &[("web", 18000)], resolvers),
    )
    .unwrap();
    let (code, out) = run_cli(&["check", "--config", "static.yml"], &dir);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("certificate resolver garbled not started") && out.contains("acme.json"),
        "{out}"
    );
    assert!(
        out.contains("certificate resolver lost not started") && out.contains("nowhere"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("acme.json")).unwrap(),
        "{not json"
    );
}

/// Every error at once, each as file:line:col, and a non-zero exit: syntax-level
/// (unknown key) errors and router-level ones (unknown service, bad rule).
#[test]
fn check_reports_every_error_with_its_location() {
    let dir = temp_dir("check-bad");
    std::fs::write(
        dir.join("dynamic.yml"),
        r#"tcp:
  routers:
    one:
      rule: "HostSNI(`*`)"
      service: missing
    two:
      rule: "HostSNI(`a.test`) &&"
      service: s
      tls: {passthrough: true}
  services:
    s:
      loadBalancer:
        servers: [{address: "127.0.0.1:9"}]
"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("static.yml"),
        static_config(&dir, &[("tcp", 18001)], ""),
    )
    .unwrap();
    let (code, out) = run_cli(&["check", "--config", "static.yml"], &dir);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("dynamic.yml:5:16"),
        "unknown service located: {out}"
    );
    assert!(out.contains("missing"), "{out}");
    assert!(out.contains("dynamic.yml:7:"), "bad rule located: {out}");

    std::fs::write(
        dir.join("dynamic.yml"),
        "tcp:\n  routers:\n    r:\n      rule: \"HostSNI(`*`)\"\n      servce: s\n",
    )
    .unwrap();
    let (code, out) = run_cli(&["check", "--config", "static.yml"], &dir);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("dynamic.yml:5:7"),
        "unknown key located: {out}"
    );
}

#[test]
fn check_reports_a_syntax_error() {
    let dir = temp_dir("check-syntax");
    std::fs::write(
        dir.join("dynamic.toml"),
        "[tcp.routers.r]\nrule = \"HostSNI(`*`)\n",
    )
    .unwrap();
    let stat = format!(
        "[entryPoints.tcp]\naddress = \"127.0.0.1:18002\"\n[providers.file]\nfilename = \"{}\"\n",
        dir.join("dynamic.toml").display()
    );
    std::fs::write(dir.join("sallyport.toml"), stat).unwrap();
    // Found by discovery in the working directory.
    let (code, out) = run_cli(&["check"], &dir);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("dynamic.toml:2:"), "{out}");
}

#[test]
fn missing_configuration_is_said_clearly() {
    let dir = temp_dir("noconfig");
    let (code, out) = run_cli(&["check", "--config", "nope.yml"], &dir);
    assert_ne!(code, 0);
    assert!(out.contains("nope.yml"), "{out}");
}

/// Traefik-style flags and SALLYPORT_* variables configure the static side without a
/// file; the dynamic side comes from a directory provider.
#[test]
fn flags_and_env_configure_entrypoints_without_a_file() {
    use std::io::Read;
    let dir = temp_dir("flags");
    let dyn_dir = dir.join("dynamic");
    std::fs::create_dir_all(dyn_dir.join("nested")).unwrap();
    std::fs::write(
        dyn_dir.join("nested/echo.toml"),
        "[tcp.routers.r]\nrule = \"HostSNI(`*`)\"\nservice = \"echo@internal\"\nentryPoints = [\"tcp\"]\n",
    )
    .unwrap();
    let port = free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sallyport"))
        .arg(format!("--entryPoints.tcp.address=127.0.0.1:{port}"))
        .env("SALLYPORT_PROVIDERS_FILE_DIRECTORY", &dyn_dir)
        .current_dir(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let mut stream = loop {
        if let Ok(s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            break s;
        }
        assert!(start.elapsed() < WAIT, "port never opened");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    use std::io::Write;
    stream.write_all(b"echo me\n").unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 8];
    stream.read_exact(&mut buf).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(&buf, b"echo me\n");
}

/// Problems Traefik only logs are printed as warnings and do not fail the check;
/// `default@internal` names the static TCP transport.
#[test]
fn check_prints_warnings_without_failing() {
    let dir = temp_dir("check-warn");
    std::fs::write(
        dir.join("dynamic.yml"),
        r#"tcp:
  routers:
    r:
      entryPoints: [tcp, nowhere]
      rule: "HostSNI(`*`)"
      service: s
  services:
    s:
      loadBalancer:
        servers: [{address: "127.0.0.1:9"}]
        serversTransport: default@internal
"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("static.yml"),
        static_config(&dir, &[("tcp", 18003)], ""),
    )
    .unwrap();
    let (code, out) = run_cli(&["check", "--config", "static.yml"], &dir);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("warning:") && out.contains("nowhere"), "{out}");
    assert!(out.contains("configuration OK"), "{out}");
}
