//! The cryptography a TLS option allows: Traefik's `cipherSuites` and `curvePreferences`
//! (Go's names) turned into a rustls crypto provider, and the session-ticket keys every
//! server configuration shares.
//!
//! Go semantics are kept: `cipherSuites` choose among the TLS 1.2 suites only (TLS 1.3's
//! suites are always all enabled, as Go does not let them be configured; TLS 1.3 names in
//! the list are accepted and change nothing), and `curvePreferences` orders the key-exchange
//! groups. Names Go knows but this build cannot provide (CBC, RC4 and 3DES suites, P-521 —
//! rustls implements none of them) are left out and reported, so that a
//! configuration Traefik serves is served here too with what remains; when nothing remains,
//! the option cannot be built and fails closed.

use std::sync::{Arc, OnceLock};

use rustls::SupportedCipherSuite;
use rustls::crypto::aws_lc_rs::{self, cipher_suite, kx_group};
use rustls::crypto::{CryptoProvider, SupportedKxGroup};
use rustls::server::ProducesTickets;

use super::TlsError;

/// A provider for one TLS option, and the configured names it had to leave out.
#[derive(Debug)]
pub struct Crypto {
    pub provider: Arc<CryptoProvider>,
    /// Go names that are valid but not available here, for a warning.
    pub unavailable: Vec<String>,
    /// Whether some TLS 1.2 suite is enabled (none when only unavailable ones were named).
    pub has_tls12: bool,
}

/// What a Go cipher-suite name is here.
enum GoSuite {
    Tls12(SupportedCipherSuite),
    /// A TLS 1.3 suite: always on, as in Go.
    Tls13,
    /// Go knows it; rustls does not implement it (CBC, RC4, 3DES, RSA key exchange).
    Unavailable,
    Unknown,
}

fn go_suite(name: &str) -> GoSuite {
    GoSuite::Tls12(match name {
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => {
            cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        }
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => {
            cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
        }
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305"
        | "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256" => {
            cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => {
            cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        }
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => {
            cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
        }
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305" | "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" => {
            cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "TLS_AES_128_GCM_SHA256" | "TLS_AES_256_GCM_SHA384" | "TLS_CHACHA20_POLY1305_SHA256" => {
            return GoSuite::Tls13;
        }
        "TLS_RSA_WITH_RC4_128_SHA"
        | "TLS_RSA_WITH_3DES_EDE_CBC_SHA"
        | "TLS_RSA_WITH_AES_128_CBC_SHA"
        | "TLS_RSA_WITH_AES_256_CBC_SHA"
        | "TLS_RSA_WITH_AES_128_CBC_SHA256"
        | "TLS_RSA_WITH_AES_128_GCM_SHA256"
        | "TLS_RSA_WITH_AES_256_GCM_SHA384"
        | "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA"
        | "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA"
        | "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA"
        | "TLS_ECDHE_RSA_WITH_RC4_128_SHA"
        | "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA"
        | "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"
        | "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA"
        | "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256"
        | "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256"
        | "TLS_FALLBACK_SCSV" => return GoSuite::Unavailable,
        _ => return GoSuite::Unknown,
    })
}

/// The key-exchange group Go calls `name`: `Some(None)` when rustls has it not; `None` for a
/// name Go does not know.
fn kx(name: &str) -> Option<Option<&'static dyn SupportedKxGroup>> {
    match name {
        "X25519" => Some(Some(kx_group::X25519)),
        "CurveP256" | "secp256r1" => Some(Some(kx_group::SECP256R1)),
        "CurveP384" | "secp384r1" => Some(Some(kx_group::SECP384R1)),
        "X25519MLKEM768" => Some(Some(kx_group::X25519MLKEM768)),
        "SecP256r1MLKEM768" => Some(Some(kx_group::SECP256R1MLKEM768)),
        "CurveP521" | "secp521r1" | "SecP384r1MLKEM1024" => Some(None),
        _ => None,
    }
}

/// The provider for `cipher_suites` and `curves` (Go names; empty lists keep the defaults).
/// Names must have been validated as Go names; an unknown one is an error here too.
pub fn crypto(cipher_suites: &[String], curves: &[String]) -> Result<Crypto, TlsError> {
    let mut provider = aws_lc_rs::default_provider();
    let mut unavailable = Vec::new();
    if !cipher_suites.is_empty() {
        let mut tls12 = Vec::new();
        for name in cipher_suites {
            match go_suite(name) {
                GoSuite::Tls13 => {}
                GoSuite::Tls12(suite) if !tls12.contains(&suite) => tls12.push(suite),
                GoSuite::Tls12(_) => {}
                GoSuite::Unavailable => unavailable.push(name.clone()),
                GoSuite::Unknown => return Err(TlsError::UnknownCipherSuite(name.clone())),
            }
        }
        // Go's list does not touch TLS 1.3; it does replace the TLS 1.2 suites, even by none.
        let only_tls13 = cipher_suites
            .iter()
            .all(|name| matches!(go_suite(name), GoSuite::Tls13));
        if !only_tls13 {
            provider
                .cipher_suites
                .retain(|suite| suite.version() == &rustls::version::TLS13);
            provider.cipher_suites.extend(tls12);
        }
    }
    if !curves.is_empty() {
        let mut groups: Vec<&'static dyn SupportedKxGroup> = Vec::new();
        for name in curves {
            match kx(name) {
                None => return Err(TlsError::UnknownCurve(name.clone())),
                Some(Some(group)) if !groups.iter().any(|g| g.name() == group.name()) => {
                    groups.push(group)
                }
                Some(Some(_)) => {}
                Some(None) => unavailable.push(name.clone()),
            }
        }
        if groups.is_empty() {
            return Err(TlsError::NoCurve(curves.join(", ")));
        }
        provider.kx_groups = groups;
    }
    let has_tls12 = provider
        .cipher_suites
        .iter()
        .any(|suite| suite.version() == &rustls::version::TLS12);
    Ok(Crypto {
        provider: Arc::new(provider),
        unavailable,
        has_tls12,
    })
}

/// The session-ticket keys of the process: one rotating set shared by every server
/// configuration, so that tickets issued before a reload still resume after it. `None`
/// when the system's random source cannot give keys (then resumption uses each
/// configuration's session cache only).
pub fn ticketer() -> Option<Arc<dyn ProducesTickets>> {
    static TICKETER: OnceLock<Option<Arc<dyn ProducesTickets>>> = OnceLock::new();
    TICKETER
        .get_or_init(|| aws_lc_rs::Ticketer::new().ok())
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn suites(crypto: &Crypto) -> Vec<&'static str> {
        crypto
            .provider
            .cipher_suites
            .iter()
            .filter_map(|s| s.suite().as_str())
            .collect()
    }

    #[test]
    fn empty_lists_keep_rustls_defaults() {
        let c = crypto(&[], &[]).unwrap();
        assert_eq!(
            c.provider.cipher_suites.len(),
            aws_lc_rs::ALL_CIPHER_SUITES.len()
        );
        assert!(c.unavailable.is_empty() && c.has_tls12);
    }

    #[test]
    fn tls12_suites_are_replaced_in_order_and_tls13_ones_stay() {
        let c = crypto(
            &names(&[
                "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
            ]),
            &[],
        )
        .unwrap();
        assert_eq!(
            suites(&c),
            [
                "TLS13_AES_256_GCM_SHA384",
                "TLS13_AES_128_GCM_SHA256",
                "TLS13_CHACHA20_POLY1305_SHA256",
                "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            ]
        );
        assert_eq!(c.unavailable, ["TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"]);
    }

    #[test]
    fn only_tls13_names_change_nothing_and_only_unavailable_ones_leave_no_tls12() {
        let c = crypto(&names(&["TLS_AES_128_GCM_SHA256"]), &[]).unwrap();
        assert!(c.has_tls12);
        let c = crypto(&names(&["TLS_RSA_WITH_AES_128_CBC_SHA"]), &[]).unwrap();
        assert!(!c.has_tls12);
        assert_eq!(suites(&c).len(), 3, "TLS 1.3 only");
    }

    #[test]
    fn curves_are_ordered_and_unavailable_ones_reported_or_fatal_when_alone() {
        let c = crypto(&[], &names(&["CurveP521", "CurveP384", "X25519"])).unwrap();
        let groups: Vec<_> = c.provider.kx_groups.iter().map(|g| g.name()).collect();
        assert_eq!(
            groups,
            [rustls::NamedGroup::secp384r1, rustls::NamedGroup::X25519]
        );
        assert_eq!(c.unavailable, ["CurveP521"]);
        assert!(matches!(
            crypto(&[], &names(&["CurveP521"])),
            Err(TlsError::NoCurve(_))
        ));
        assert!(matches!(
            crypto(&[], &names(&["foobar"])),
            Err(TlsError::UnknownCurve(_))
        ));
    }

    #[test]
    fn a_name_go_does_not_know_breaks_the_option() {
        let err = crypto(
            &names(&["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_NOT_A_SUITE"]),
            &[],
        )
        .unwrap_err();
        assert!(matches!(err, TlsError::UnknownCipherSuite(ref n) if n == "TLS_NOT_A_SUITE"));
        // Known to Go but not implemented: left out, not fatal.
        assert!(
            crypto(
                &names(&[
                    "TLS_RSA_WITH_AES_128_CBC_SHA",
                    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
                ]),
                &[]
            )
            .is_ok()
        );
    }

    #[test]
    fn post_quantum_hybrids_are_provided() {
        let c = crypto(
            &[],
            &names(&["X25519MLKEM768", "SecP256r1MLKEM768", "X25519"]),
        )
        .unwrap();
        let groups: Vec<_> = c.provider.kx_groups.iter().map(|g| g.name()).collect();
        assert_eq!(
            groups,
            [
                rustls::NamedGroup::X25519MLKEM768,
                rustls::NamedGroup::secp256r1MLKEM768,
                rustls::NamedGroup::X25519
            ]
        );
        assert!(c.unavailable.is_empty());
        let defaults = crypto(&[], &[]).unwrap();
        assert_eq!(
            defaults.provider.kx_groups[0].name(),
            rustls::NamedGroup::X25519MLKEM768,
            "post-quantum first by default, as Go offers it"
        );
    }

    #[test]
    fn one_ticketer_serves_every_configuration() {
        let a = ticketer().expect("ticket keys");
        let b = ticketer().expect("ticket keys");
        assert!(Arc::ptr_eq(&a, &b));
        let ticket = a.encrypt(b"session").expect("encrypt");
        assert_eq!(b.decrypt(&ticket).as_deref(), Some(&b"session"[..]));
    }
}
