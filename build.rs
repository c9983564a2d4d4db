//! Lays out the release binary's hot code together.
//!
//! A request runs a few hundred functions, which the linker scatters over 16 MiB of code:
//! each one it reaches first costs instruction-cache and TLB misses. `src/hot-functions.txt`
//! lists the functions a request runs (from callgrind, `bench/hot_functions.sh`), hottest
//! first. In a release build with rust-lld, they are linked together at the start of the
//! code: a plain proxied request took about 3% less CPU, and what access logs with metrics
//! add to it fell by about a point, to 6–7% (bench/RESULTS.md, observability run 13).
//!
//! Only the order of the code changes; a function missing from the list (renamed, new) is
//! linked where it would have been. Skipped, with a warning, where the linker may not be
//! rust-lld (another linker configured, a toolchain before 1.90), and when
//! `SALLYPORT_FUNCTION_ORDER=0`.

use std::env;
use std::path::Path;
use std::process::Command;

/// Environment variables that name a linker other than the target's default.
const LINKER_VARS: [&str; 2] = [
    "RUSTC_LINKER",
    "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER",
];

fn main() {
    const LIST: &str = "src/hot-functions.txt";
    println!("cargo::rerun-if-changed={LIST}");
    println!("cargo::rerun-if-env-changed=SALLYPORT_FUNCTION_ORDER");
    for linker in LINKER_VARS {
        println!("cargo::rerun-if-env-changed={linker}");
    }
    // Release builds only: elsewhere nothing is laid out, and nothing is said.
    if env::var("PROFILE").as_deref() != Ok("release") {
        return;
    }
    if let Err(skipped) = order_functions(LIST) {
        println!("cargo::warning=hot functions not laid out together: {skipped}");
    }
}

fn order_functions(list: &str) -> Result<(), String> {
    if env::var("SALLYPORT_FUNCTION_ORDER").as_deref() == Ok("0") {
        return Err("SALLYPORT_FUNCTION_ORDER=0".into());
    }
    // rust-lld is the default linker of this target since Rust 1.90; the option is lld's.
    if env::var("TARGET").as_deref() != Ok("x86_64-unknown-linux-gnu") {
        return Err("the target's default linker is not rust-lld".into());
    }
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if flags.contains("linker")
        || flags.contains("link-self-contained")
        || LINKER_VARS.iter().any(|var| env::var_os(var).is_some())
    {
        return Err("a linker is configured, which may not be rust-lld".into());
    }
    let minor = rustc_minor().ok_or("the compiler's version is unknown")?;
    if minor < 90 {
        return Err(format!("Rust 1.{minor} links with cc, not rust-lld"));
    }
    let dir = env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?;
    let path = Path::new(&dir).join(list);
    if !path.is_file() {
        return Err(format!("{} is missing", path.display()));
    }
    for arg in [
        format!("-Wl,--symbol-ordering-file={}", path.display()),
        // A listed function this build does not have is not worth a warning each.
        "-Wl,--no-warn-symbol-ordering".to_owned(),
    ] {
        println!("cargo::rustc-link-arg-bin=sallyport={arg}");
    }
    Ok(())
}

/// The minor version of the compiler building this (`rustc 1.95.0 (…)` → 95).
fn rustc_minor() -> Option<u32> {
    let rustc = env::var_os("RUSTC")?;
    let output = Command::new(rustc).arg("--version").output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let version = text.split_whitespace().nth(1)?;
    let mut parts = version.split('.');
    (parts.next()? == "1").then_some(())?;
    parts.next()?.parse().ok()
}
