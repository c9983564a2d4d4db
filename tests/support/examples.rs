//! The runnable examples of `examples/<name>/` as the scenario tests run them: copied into a
//! temporary directory laid out like the repository, so that the example's relative paths
//! resolve as they do for a user who starts sallyport from the repository root; its fixed
//! loopback addresses swapped for ones free in this test; its certificates made by
//! `examples/make-certs.sh`, the script its page tells users to run.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::programs::run_bounded;
use super::{Router, TestCert, WAIT, free_port, temp_dir};

/// A copy of `examples/<name>/` (and `examples/make-certs.sh`) under a temporary root.
pub struct Example {
    /// The temporary stand-in for the repository root: the router runs from here.
    pub root: PathBuf,
    name: String,
}

impl Example {
    /// Copies `examples/<name>/` into a fresh temporary root.
    pub fn copy(name: &str) -> Example {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let root = temp_dir(&format!("example-{name}"));
        copy_tree(
            &repo.join("examples").join(name),
            &root.join("examples").join(name),
        );
        std::fs::copy(
            repo.join("examples/make-certs.sh"),
            root.join("examples/make-certs.sh"),
        )
        .expect("copy make-certs.sh");
        Example {
            root,
            name: name.to_owned(),
        }
    }

    /// The path of `file` inside the copied example.
    pub fn path(&self, file: &str) -> PathBuf {
        self.root.join("examples").join(&self.name).join(file)
    }

    /// Replaces the address `from` (such as `127.0.0.1:5433`) with `to` in every file of the
    /// example. `127.0.0.1:543` does not match `127.0.0.1:5433`: the next character must not
    /// be a digit. Panics when no file names `from`, since the example and its test then
    /// disagree.
    pub fn swap(&self, from: &str, to: &str) {
        let mut found = false;
        for file in files(&self.root.join("examples").join(&self.name)) {
            let Ok(text) = std::fs::read_to_string(&file) else {
                continue;
            };
            let swapped = swap_whole(&text, from, to);
            if swapped != text {
                found = true;
                std::fs::write(&file, swapped).expect("write swapped example");
            }
        }
        assert!(found, "examples/{}/ never mentions {from}", self.name);
    }

    /// Moves the example's `127.0.0.1:<port>` to a free port; returns it.
    pub fn move_port(&self, port: u16) -> u16 {
        let free = free_port();
        self.swap(&format!("127.0.0.1:{port}"), &format!("127.0.0.1:{free}"));
        free
    }

    /// Runs `examples/make-certs.sh examples/<name>/certs NAME...` from the root, as the
    /// scenario page says. False (after saying why) when openssl is missing.
    pub fn make_certs(&self, names: &[&str]) -> bool {
        if !super::programs::installed(&["openssl"]) {
            return false;
        }
        let ran = run_bounded(
            // Through bash rather than executed: a copy just written can be "text file busy"
            // while another test thread forks.
            Command::new("bash")
                .arg("examples/make-certs.sh")
                .arg(format!("examples/{}/certs", self.name))
                .args(names)
                .current_dir(&self.root),
            b"",
            WAIT,
        );
        assert!(ran.success(), "make-certs.sh failed: {ran:?}");
        true
    }

    /// The certificate `certs/<stem>.crt` with its key `certs/<stem>.key`, as made by
    /// [`Example::make_certs`] (`ca` is the CA itself).
    pub fn cert(&self, stem: &str) -> TestCert {
        let cert_path = self.path(&format!("certs/{stem}.crt"));
        let key_path = self.path(&format!("certs/{stem}.key"));
        let cert_pem = std::fs::read_to_string(&cert_path).expect("read certificate");
        let key_pem = std::fs::read_to_string(&key_path).expect("read key");
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("PEM cert");
        let key_der = match PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("PEM key") {
            PrivateKeyDer::Pkcs8(key) => key.secret_pkcs8_der().to_vec(),
            other => panic!("make-certs.sh wrote a key that is not PKCS#8: {other:?}"),
        };
        TestCert {
            cert_pem,
            key_pem,
            cert_der,
            key_der,
        }
    }

    /// Starts sallyport from the root on `examples/<name>/sallyport.yml`, logging into the
    /// root; returns once every port of `ports` accepts connections.
    pub fn start(&self, ports: &[u16]) -> Router {
        let config = PathBuf::from(format!("examples/{}/sallyport.yml", self.name));
        Router::start_on(&self.root, &config, &self.root, ports)
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        // A failed test's copy is kept, with the router's log, to look into.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// `text` with every `from` not followed by a digit replaced by `to`.
pub fn swap_whole(text: &str, from: &str, to: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(from) {
        let after = &rest[at + from.len()..];
        out.push_str(&rest[..at]);
        if after.starts_with(|c: char| c.is_ascii_digit()) {
            out.push_str(from);
        } else {
            out.push_str(to);
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read example dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files(&path));
        } else {
            found.push(path);
        }
    }
    found
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create example copy");
    for entry in std::fs::read_dir(from).expect("read example dir").flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy example file");
        }
    }
}
