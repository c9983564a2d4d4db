//! htpasswd entries (`user:hash`) and checking a password against them, for `basicAuth`.
//!
//! Hashes as Apache's `htpasswd` writes them: bcrypt (`$2y$`, `$2a$`, `$2b$`), SHA-1
//! (`{SHA}` + base64) and MD5-crypt (`$apr1$`, and the `$1$` of crypt(3)). bcrypt is the
//! `bcrypt` crate; no maintained crate does MD5-crypt, so its 1,000-round loop is written
//! here over the `md-5` crate, following the published algorithm (FreeBSD's `crypt-md5`).
//! Other formats (plain text, crypt DES) are refused when the configuration is read.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use md5::{Digest, Md5};
use sha1::Sha1;
use subtle::ConstantTimeEq;

/// A password hash from an htpasswd line.
#[derive(Clone, PartialEq, Eq)]
pub enum PasswordHash {
    /// The whole `$2y$cost$salthash` string.
    Bcrypt(String),
    /// The SHA-1 digest of the password.
    Sha1([u8; 20]),
    /// `magic` is `$apr1$` or `$1$`; `hash` the 22 characters after the salt.
    Md5Crypt {
        magic: &'static str,
        salt: String,
        hash: String,
    },
}

impl std::fmt::Debug for PasswordHash {
    // Hashes stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            PasswordHash::Bcrypt(_) => "bcrypt",
            PasswordHash::Sha1(_) => "sha1",
            PasswordHash::Md5Crypt { magic, .. } => magic,
        };
        write!(f, "PasswordHash({kind})")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HtpasswdError {
    #[error("\"{0}\" is not a user:hash line")]
    NotUserHash(String),
    #[error("user \"{user}\": unsupported password hash (use bcrypt, {{SHA}} or $apr1$)")]
    UnsupportedHash { user: String },
    #[error("user \"{user}\": malformed {kind} hash")]
    Malformed { user: String, kind: &'static str },
}

/// Parses one `user:hash` line (trimmed by the caller; comments and blank lines skipped).
pub fn parse_line(line: &str) -> Result<(String, PasswordHash), HtpasswdError> {
    let mut parts = line.split(':');
    let (Some(user), Some(hash), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(HtpasswdError::NotUserHash(redact(line)));
    };
    if user.is_empty() {
        return Err(HtpasswdError::NotUserHash(redact(line)));
    }
    let malformed = |kind| HtpasswdError::Malformed {
        user: user.to_owned(),
        kind,
    };
    let parsed = if ["$2y$", "$2a$", "$2b$"].iter().any(|p| hash.starts_with(p)) {
        // `$2x$cc$` + 53 characters of salt and hash.
        if hash.len() != 60 {
            return Err(malformed("bcrypt"));
        }
        PasswordHash::Bcrypt(hash.to_owned())
    } else if let Some(encoded) = hash.strip_prefix("{SHA}") {
        let digest = STANDARD
            .decode(encoded)
            .ok()
            .and_then(|bytes| <[u8; 20]>::try_from(bytes).ok())
            .ok_or_else(|| malformed("{SHA}"))?;
        PasswordHash::Sha1(digest)
    } else if let Some((magic, rest)) = ["$apr1$", "$1$"]
        .iter()
        .find_map(|m| hash.strip_prefix(m).map(|rest| (*m, rest)))
    {
        let (salt, digest) = rest.split_once('$').ok_or_else(|| malformed(magic))?;
        if salt.len() > 8 || digest.len() != 22 {
            return Err(malformed(magic));
        }
        PasswordHash::Md5Crypt {
            magic,
            salt: salt.to_owned(),
            hash: digest.to_owned(),
        }
    } else {
        return Err(HtpasswdError::UnsupportedHash {
            user: user.to_owned(),
        });
    };
    Ok((user.to_owned(), parsed))
}

/// The user part of a bad line, so that a hash (or a password typed by mistake) is not echoed.
fn redact(line: &str) -> String {
    match line.split_once(':') {
        Some((user, _)) => format!("{user}:…"),
        None => "…".to_owned(),
    }
}

impl PasswordHash {
    /// Whether `password` has this hash. Digests are compared in constant time.
    pub fn verify(&self, password: &[u8]) -> bool {
        match self {
            PasswordHash::Bcrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            PasswordHash::Sha1(digest) => {
                let got: [u8; 20] = Sha1::digest(password).into();
                bool::from(got.ct_eq(digest))
            }
            PasswordHash::Md5Crypt { magic, salt, hash } => {
                let got = md5_crypt(password, magic.as_bytes(), salt.as_bytes());
                bool::from(got.as_bytes().ct_eq(hash.as_bytes()))
            }
        }
    }
}

/// The 22-character MD5-crypt digest of `password` with `magic` and `salt`.
fn md5_crypt(password: &[u8], magic: &[u8], salt: &[u8]) -> String {
    let alternate = Md5::new()
        .chain_update(password)
        .chain_update(salt)
        .chain_update(password)
        .finalize();
    let mut ctx = Md5::new()
        .chain_update(password)
        .chain_update(magic)
        .chain_update(salt);
    let mut left = password.len();
    while left > 0 {
        let n = left.min(16);
        ctx.update(&alternate[..n]);
        left -= n;
    }
    // The bits of the length pick a zero byte or the password's first byte.
    let mut bits = password.len();
    while bits != 0 {
        if bits & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(&password[..1]);
        }
        bits >>= 1;
    }
    let mut digest: [u8; 16] = ctx.finalize().into();
    // Rounds that make guessing slow; which parts go in depends on the round number.
    for round in 0..1000 {
        let mut ctx = Md5::new();
        if round % 2 == 1 {
            ctx.update(password);
        } else {
            ctx.update(digest);
        }
        if round % 3 != 0 {
            ctx.update(salt);
        }
        if round % 7 != 0 {
            ctx.update(password);
        }
        if round % 2 == 1 {
            ctx.update(digest);
        } else {
            ctx.update(password);
        }
        digest = ctx.finalize().into();
    }
    let d = digest.map(u32::from);
    let mut out = String::with_capacity(22);
    for (value, chars) in [
        ((d[0] << 16) | (d[6] << 8) | d[12], 4),
        ((d[1] << 16) | (d[7] << 8) | d[13], 4),
        ((d[2] << 16) | (d[8] << 8) | d[14], 4),
        ((d[3] << 16) | (d[9] << 8) | d[15], 4),
        ((d[4] << 16) | (d[10] << 8) | d[5], 4),
        (d[11], 2),
    ] {
        push_crypt64(&mut out, value, chars);
    }
    out
}

/// crypt(3)'s base64: its own alphabet, least significant six bits first.
fn push_crypt64(out: &mut String, mut value: u32, chars: usize) {
    const ALPHABET: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    for _ in 0..chars {
        out.push(char::from(ALPHABET[(value & 0x3f) as usize]));
        value >>= 6;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verify(line: &str, password: &str) -> bool {
        parse_line(line).unwrap().1.verify(password.as_bytes())
    }

    // Reference hashes made with `openssl passwd -apr1` / `-1` and `openssl dgst -sha1`.
    #[test]
    fn apr1_and_md5_crypt_match_openssl() {
        assert!(verify("test:$apr1$H6uskkkW$IgXLP6ewTrSuBkTrqE8wj/", "test"));
        assert!(!verify(
            "test:$apr1$H6uskkkW$IgXLP6ewTrSuBkTrqE8wj/",
            "tesT"
        ));
        assert!(verify("u:$1$abcdefgh$cHJi5PXp/ki/ktXzqlk6I1", "secret"));
        assert!(!verify("u:$1$abcdefgh$cHJi5PXp/ki/ktXzqlk6I1", ""));
    }

    #[test]
    fn sha1_matches() {
        assert!(verify("u:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=", "secret"));
        assert!(!verify("u:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=", "secret "));
    }

    #[test]
    fn bcrypt_variants_match() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        for prefix in ["$2y$", "$2a$", "$2b$"] {
            let line = format!("u:{prefix}{}", &hash[4..]);
            assert!(verify(&line, "pw"), "{prefix}");
            assert!(!verify(&line, "pW"), "{prefix}");
        }
    }

    #[test]
    fn bad_lines_are_refused_without_echoing_the_hash() {
        assert_eq!(
            parse_line("u:plain"),
            Err(HtpasswdError::UnsupportedHash { user: "u".into() })
        );
        assert_eq!(
            parse_line("u:a:b"),
            Err(HtpasswdError::NotUserHash("u:…".into()))
        );
        assert_eq!(
            parse_line("nocolon"),
            Err(HtpasswdError::NotUserHash("…".into()))
        );
        assert!(matches!(
            parse_line("u:{SHA}short"),
            Err(HtpasswdError::Malformed { .. })
        ));
        assert!(matches!(
            parse_line("u:$apr1$toolongsalt$IgXLP6ewTrSuBkTrqE8wj/"),
            Err(HtpasswdError::Malformed { .. })
        ));
        assert!(matches!(
            parse_line("u:$2y$05$short"),
            Err(HtpasswdError::Malformed { .. })
        ));
    }
}
