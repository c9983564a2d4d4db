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
