//! Compatibility corpus: real Traefik dynamic configuration files with what Traefik 3.7
//! made of each (`../shared/compat-corpus`, see its README). For every file, the static
//! entrypoints Traefik ran with are rebuilt, the file is loaded and validated, and three
//! things are compared: whether it parses, which routers/services/middlewares exist, and
//! each object's status (enabled / warning / disabled) with the same causes.
//!
//! Rules are checked by the real compilers of `l4` (TCP) and `l7` (HTTP).
//! Skipped, with a message, when `../shared` is absent (the corpus files belong to other
//! people's repositories and are not copied into this one).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use sallyport::config::static_cfg::{Api, EntryPoint, EntryPointAddress, Protocol, StaticConfig};
use sallyport::config::validate::ObjectStatus;
use sallyport::config::{RuleChecker, Status, load_dynamic_file, validate};
use sallyport::runtime::rules::Compilers;
use serde_json::Value;

/// `../shared/compat-corpus` next to the checkout, or `SALLYPORT_COMPAT_CORPUS` (for
/// checkouts elsewhere, such as worktrees).
fn corpus_dir() -> PathBuf {
    match std::env::var_os("SALLYPORT_COMPAT_CORPUS") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/compat-corpus"),
    }
}

/// The cause of a status reason, so that messages need not be byte-identical.
fn cause(reason: &str) -> &'static str {
    let r = reason;
    if r.contains("does not have any type defined") {
        "service without type"
    } else if r.contains("middleware") && r.contains("does not exist") {
        "unknown middleware"
    } else if r.contains("service") && r.contains("does not exist") {
        "unknown service"
    } else if r.contains("unknown TLS options") {
        "unknown TLS options"
    } else if r.contains("CAFiles is required") {
        "client auth without CA files"
    } else if r.contains("invalid certificate(s) content") {
        "invalid certificates"
    } else if r.contains("invalid rule") {
        "invalid rule"
    } else if r.contains("no valid entryPoint") {
        "no valid entrypoint"
    } else if r.contains("entryPoint") && r.contains("doesn't exist") {
        "unknown entrypoint"
    } else if r.contains("servers transport not found") {
        "unknown serversTransport"
    } else if r.contains("parsing server URL") {
        "invalid server URL"
    } else if r.contains("no such file or directory") {
        "unreadable file"
    } else if r.contains("TLSOptions configuration is conflicting") {
        "TLS options conflict"
    } else if r.contains("no service and no child") || r.contains("either a service or child") {
        "router without service"
    } else {
        "other"
    }
}

/// `enabled` | `warning: …` | `disabled: …` → (class, causes).
fn expected_status(text: &str) -> (&'static str, BTreeSet<&'static str>) {
    let (class, reasons) = if text == "enabled" {
        ("enabled", "")
    } else if let Some(r) = text.strip_prefix("warning: ") {
        ("warning", r)
    } else if let Some(r) = text.strip_prefix("disabled: ") {
        ("disabled", r)
    } else {
        ("unknown", text)
    };
    let causes = reasons
        .split("; ")
        .filter(|r| !r.is_empty())
        .map(cause)
        .collect();
    (class, causes)
}

fn actual_status(status: &ObjectStatus) -> (&'static str, BTreeSet<&'static str>) {
    let (class, reasons) = match &status.status {
        Status::Enabled => ("enabled", &[][..]),
        Status::Warning(r) => ("warning", r.as_slice()),
        Status::Disabled(r) => ("disabled", r.as_slice()),
    };
    (class, reasons.iter().map(|r| cause(r)).collect())
}

fn static_config(expected: &Value) -> StaticConfig {
    let mut st = StaticConfig::default();
    if let Some(eps) = expected["static_entrypoints"].as_object() {
        for (name, proto) in eps {
            let protocol = if proto == "udp" {
                Protocol::Udp
            } else {
                Protocol::Tcp
            };
            let address = EntryPointAddress {
                host: "127.0.0.1".to_owned(),
                port: 0,
                protocol,
            };
            st.entry_points.insert(
                name.clone(),
                EntryPoint {
                    address,
                    ..EntryPoint::default()
                },
            );
        }
    }
    // Traefik ran with `api.insecure`, which adds the `traefik` entrypoint.
    st.api = Some(Api {
        insecure: true,
        ..Api::default()
    });
    st.entry_points
        .entry("traefik".to_owned())
        .or_insert_with(|| EntryPoint {
            address: EntryPointAddress::any(8080),
            ..EntryPoint::default()
        });
    st
}

#[derive(Default)]
struct FileResult {
    parse_ok: bool,
    objects_ok: bool,
    statuses_ok: bool,
    mismatches: Vec<String>,
}

fn compare(
    kind: &str,
    expected: &Value,
    actual: &BTreeMap<String, ObjectStatus>,
    result: &mut FileResult,
) {
    let empty = serde_json::Map::new();
    let want = expected.as_object().unwrap_or(&empty);
    let want_names: BTreeSet<&str> = want.keys().map(String::as_str).collect();
    let got_names: BTreeSet<&str> = actual.keys().map(String::as_str).collect();
    if want_names != got_names {
        result.objects_ok = false;
        result.mismatches.push(format!(
            "{kind}: expected objects {want_names:?}, got {got_names:?}"
        ));
    }
    for (name, text) in want {
        let Some(got) = actual.get(name) else {
            continue;
        };
        let (want_class, want_causes) = expected_status(text.as_str().unwrap_or(""));
        let (got_class, got_causes) = actual_status(got);
        if want_class != got_class || want_causes != got_causes {
            result.statuses_ok = false;
            result.mismatches.push(format!(
                "{kind} {name}: expected {want_class} {want_causes:?}, got {got_class} {got_causes:?} ({:?})",
                got.status
            ));
        }
    }
}

/// Runs the corpus with `rules`; returns per-file results.
fn check_corpus(dir: &Path, rules: &dyn RuleChecker) -> BTreeMap<String, FileResult> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("files"))
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    let mut results = BTreeMap::new();
    for file in files {
        let Some(stem) = file.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else {
            continue;
        };
        let expected_path = dir.join("expected").join(format!("{stem}.json"));
        let expected: Value = match std::fs::read_to_string(&expected_path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
        {
            Some(v) => v,
            None => panic!("missing or invalid {}", expected_path.display()),
        };
        let mut result = FileResult {
            parse_ok: true,
            objects_ok: true,
            statuses_ok: true,
            mismatches: Vec::new(),
        };
        let parsed = expected["parsed"].as_bool().unwrap_or(false);
        match load_dynamic_file(&file) {
            Err(errors) => {
                if parsed {
                    result.parse_ok = false;
                    result.mismatches.push(format!("rejected: {}", errors[0]));
                } else {
                    let reason = expected["parse_error"].as_str().unwrap_or("");
                    // Traefik's only rejections in the corpus are unknown fields.
                    if reason.contains("field not found")
                        && !errors.iter().any(|e| e.message.contains("unknown field"))
                    {
                        result.parse_ok = false;
                        result
                            .mismatches
                            .push(format!("rejected for another reason: {}", errors[0]));
                    }
                }
            }
            Ok(dynamic) => {
                if !parsed {
                    result.parse_ok = false;
                    result
                        .mismatches
                        .push("accepted a file Traefik rejected".to_owned());
                } else {
                    let st = static_config(&expected);
                    let report = validate(&st, &dynamic, rules);
                    let pairs = [
                        (
                            "http router",
                            &expected["routers"]["http"],
                            &report.http_routers,
                        ),
                        (
                            "tcp router",
                            &expected["routers"]["tcp"],
                            &report.tcp_routers,
                        ),
                        (
                            "udp router",
                            &expected["routers"]["udp"],
                            &report.udp_routers,
                        ),
                        (
                            "http service",
                            &expected["services"]["http"],
                            &report.http_services,
                        ),
                        (
                            "tcp service",
                            &expected["services"]["tcp"],
                            &report.tcp_services,
                        ),
                        (
                            "udp service",
                            &expected["services"]["udp"],
                            &report.udp_services,
                        ),
                        (
                            "http middleware",
                            &expected["middlewares"]["http"],
                            &report.http_middlewares,
                        ),
                        (
                            "tcp middleware",
                            &expected["middlewares"]["tcp"],
                            &report.tcp_middlewares,
                        ),
                    ];
                    for (kind, want, got) in pairs {
                        compare(kind, want, got, &mut result);
                    }
                }
            }
        }
        results.insert(stem, result);
    }
    results
}

#[test]
fn corpus_matches_traefik() {
    let dir = corpus_dir();
    if !dir.join("files").is_dir() {
        println!("compat corpus not found at {}: skipped", dir.display());
        return;
    }
    let results = check_corpus(&dir, &Compilers);
    assert!(!results.is_empty(), "no corpus files found");

    println!(
        "{:<58} {:^6} {:^8} {:^9}",
        "file", "parse", "objects", "statuses"
    );
    let mark = |ok: bool| if ok { "ok" } else { "FAIL" };
    let mut failures = Vec::new();
    for (name, r) in &results {
        println!(
            "{name:<58} {:^6} {:^8} {:^9}",
            mark(r.parse_ok),
            mark(r.objects_ok),
            mark(r.statuses_ok)
        );
        for m in &r.mismatches {
            println!("    {m}");
        }
        if !(r.parse_ok && r.objects_ok && r.statuses_ok) {
            failures.push(name.clone());
        }
    }
    let total = results.len();
    let count = |f: fn(&FileResult) -> bool| results.values().filter(|r| f(r)).count();
    println!(
        "parse parity {}/{total}, object parity {}/{total}, status parity {}/{total}",
        count(|r| r.parse_ok),
        count(|r| r.objects_ok),
        count(|r| r.statuses_ok)
    );
    assert!(failures.is_empty(), "corpus mismatches in {failures:?}");
}
