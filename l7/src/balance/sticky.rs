//! Traefik's sticky cookie: its default name, the value that names a handler, and the
//! `Set-Cookie` header value, and the legacy values older Traefik versions wrote (accepted, then
//! rewritten). Reading the cookie from a request is the HTTP shell's job.
//!
//! Checked against Traefik 3.7.15: service `lb@file` gets cookie `_05410`; its server
//! `http://127.0.0.1:18081` has value `b528746506c397e7`; the children of a `weighted`
//! service are named as written in the file (`a`, not `a@file`); a configured name
//! `my cookie/é;x` is sent as `my_cookie___x`.

use sha1::{Digest, Sha1};
use sha2::Sha256;

/// `SameSite` attribute values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    None,
    Lax,
    Strict,
}

/// The `sticky.cookie` options of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieSpec {
    /// Already sanitized by [`cookie_name`].
    pub name: String,
    pub secure: bool,
    pub http_only: bool,
    pub same_site: Option<SameSite>,
    /// Seconds; 0 is a session cookie, negative expires the cookie at once.
    pub max_age: i64,
    pub path: String,
    pub domain: Option<String>,
}

impl CookieSpec {
    /// Traefik's defaults for the service named `service` (qualified, e.g. `api@file`).
    pub fn for_service(service: &str) -> Self {
        Self {
            name: cookie_name(None, service),
            secure: false,
            http_only: false,
            same_site: None,
            max_age: 0,
            path: "/".to_owned(),
            domain: None,
        }
    }

    /// The `Set-Cookie` header value pinning the client to `value`, attributes in the
    /// order Go's `http.Cookie` writes them (as Traefik sends them).
    pub fn set_cookie(&self, value: &str) -> String {
        let mut header = format!("{}={}; Path={}", self.name, value, self.path);
        if let Some(domain) = &self.domain {
            // Go drops one leading dot; browsers ignore it anyway.
            let domain = domain.strip_prefix('.').unwrap_or(domain);
            header.push_str("; Domain=");
            header.push_str(domain);
        }
        if self.max_age > 0 {
            header.push_str(&format!("; Max-Age={}", self.max_age));
        } else if self.max_age < 0 {
            header.push_str("; Max-Age=0");
        }
        if self.http_only {
            header.push_str("; HttpOnly");
        }
        if self.secure {
            header.push_str("; Secure");
        }
        match self.same_site {
            Some(SameSite::None) => header.push_str("; SameSite=None"),
            Some(SameSite::Lax) => header.push_str("; SameSite=Lax"),
            Some(SameSite::Strict) => header.push_str("; SameSite=Strict"),
            None => {}
        }
        header
    }
}

/// The cookie name: the configured one with every character outside the RFC 6265 token
/// set replaced by `_`, or `_` + the first 5 hex digits of sha1("_TRAEFIK_BACKEND_" + service).
pub fn cookie_name(configured: Option<&str>, service: &str) -> String {
    match configured.filter(|name| !name.is_empty()) {
        Some(name) => name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "!#$%&'*+-.^`|~".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect(),
        None => {
            let digest = Sha1::digest(format!("_TRAEFIK_BACKEND_{service}").as_bytes());
            format!("_{}", &hex(&digest)[..5])
        }
    }
}

/// The cookie value naming a handler: the first 16 hex digits of sha256(name), where the
/// name is the server URL (`loadBalancer`) or the child service name (`weighted`).
pub fn cookie_value(handler_name: &str) -> String {
    let digest = Sha256::digest(handler_name.as_bytes());
    hex(&digest[..8])
}

/// The values older Traefik versions wrote for a handler, still accepted (and then rewritten):
/// the bare name, its FNV-1 64 hash in hex, and the hash of that hash (server URLs used to be
/// hashed once before being hashed again).
fn legacy_values(handler_name: &str) -> [String; 3] {
    let once = format!("{:x}", fnv1_64(handler_name.as_bytes()));
    let twice = format!("{:x}", fnv1_64(once.as_bytes()));
    [handler_name.to_owned(), once, twice]
}

/// FNV-1 (multiply, then xor), 64 bits: Go's `hash/fnv.New64`, which legacy cookies used.
fn fnv1_64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, &byte| {
        hash.wrapping_mul(PRIME) ^ u64::from(byte)
    })
}

struct Pinned<T> {
    value: String,
    legacy: [String; 3],
    item: T,
}

/// A handler a cookie pins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found<'a, T> {
    pub item: &'a T,
    /// The cookie had a legacy value: send the current one with the response.
    pub rewrite: bool,
}

/// Maps cookie values back to handlers.
pub struct Sticky<T> {
    handlers: Vec<Pinned<T>>,
}

impl<T> Sticky<T> {
    /// `handlers` pairs each handler with its name (see [`cookie_value`]).
    pub fn new<'a>(handlers: impl IntoIterator<Item = (&'a str, T)>) -> Self {
        let handlers = handlers
            .into_iter()
            .map(|(name, item)| Pinned {
                value: cookie_value(name),
                legacy: legacy_values(name),
                item,
            })
            .collect();
        Self { handlers }
    }

    /// The handler a cookie value pins, if it is known and `is_up` says it is healthy;
    /// otherwise the caller picks normally and sends [`CookieSpec::set_cookie`]. Current
    /// values win over legacy ones, as in Traefik.
    pub fn lookup(&self, value: &str, is_up: impl Fn(&T) -> bool) -> Option<Found<'_, T>> {
        let current = self.handlers.iter().find(|pinned| pinned.value == value);
        let (pinned, rewrite) = match current {
            Some(pinned) => (pinned, false),
            None => (
                self.handlers
                    .iter()
                    .find(|pinned| pinned.legacy.iter().any(|legacy| legacy == value))?,
                true,
            ),
        };
        is_up(&pinned.item).then_some(Found {
            item: &pinned.item,
            rewrite,
        })
    }

    /// The cookie value of the first handler equal to `item`.
    pub fn value(&self, item: &T) -> Option<&str>
    where
        T: PartialEq,
    {
        self.handlers
            .iter()
            .find(|pinned| pinned.item == *item)
            .map(|pinned| pinned.value.as_str())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_name_hashes_the_qualified_service_name_like_traefik() {
        assert_eq!(cookie_name(None, "lb@file"), "_05410");
        assert_eq!(cookie_name(None, "wt@file"), "_040b6");
        assert_eq!(cookie_name(Some(""), "lb@file"), "_05410");
    }

    #[test]
    fn configured_name_is_sanitized_per_character_like_traefik() {
        assert_eq!(
            cookie_name(Some("my cookie/é;x"), "lb@file"),
            "my_cookie___x"
        );
        assert_eq!(cookie_name(Some("ok-Name.1~"), "lb@file"), "ok-Name.1~");
    }

    #[test]
    fn value_is_the_sha256_prefix_of_the_handler_name_like_traefik() {
        assert_eq!(cookie_value("http://127.0.0.1:18081"), "b528746506c397e7");
        assert_eq!(cookie_value("http://127.0.0.1:18082"), "238e99ca93e11d58");
        assert_eq!(cookie_value("a"), "ca978112ca1bbdca");
        assert_eq!(cookie_value("b"), "3e23e8160039594a");
    }

    #[test]
    fn default_set_cookie_is_name_value_and_root_path() {
        let spec = CookieSpec::for_service("lb@file");
        assert_eq!(
            spec.set_cookie("b528746506c397e7"),
            "_05410=b528746506c397e7; Path=/"
        );
    }

    #[test]
    fn all_attributes_render_in_traefiks_order() {
        let spec = CookieSpec {
            name: cookie_name(Some("my cookie/é;x"), "named@file"),
            secure: true,
            http_only: true,
            same_site: Some(SameSite::Lax),
            max_age: 60,
            path: "/p".to_owned(),
            domain: Some("example.com".to_owned()),
        };
        // Byte for byte what Traefik 3.7.15 sent for the same options.
        assert_eq!(
            spec.set_cookie("b528746506c397e7"),
            "my_cookie___x=b528746506c397e7; Path=/p; Domain=example.com; Max-Age=60; \
             HttpOnly; Secure; SameSite=Lax"
        );
    }

    #[test]
    fn negative_max_age_expires_and_same_site_variants_render() {
        let mut spec = CookieSpec::for_service("s");
        spec.max_age = -1;
        spec.same_site = Some(SameSite::None);
        spec.domain = Some(".example.com".to_owned());
        assert_eq!(
            spec.set_cookie("v"),
            format!(
                "{}=v; Path=/; Domain=example.com; Max-Age=0; SameSite=None",
                spec.name
            )
        );
        spec.same_site = Some(SameSite::Strict);
        assert!(spec.set_cookie("v").ends_with("; SameSite=Strict"));
    }

    fn pinned(sticky: &Sticky<i32>, value: &str) -> Option<(i32, bool)> {
        sticky
            .lookup(value, |_| true)
            .map(|found| (*found.item, found.rewrite))
    }

    #[test]
    fn lookup_finds_healthy_handlers_only() {
        let sticky = Sticky::new([("http://127.0.0.1:18081", 1), ("http://127.0.0.1:18082", 2)]);
        assert_eq!(pinned(&sticky, "238e99ca93e11d58"), Some((2, false)));
        assert!(sticky.lookup("238e99ca93e11d58", |&h| h != 2).is_none());
        assert_eq!(pinned(&sticky, "0000000000000000"), None);
        assert_eq!(sticky.value(&1), Some("b528746506c397e7"));
        assert_eq!(sticky.value(&3), None);
    }

    #[test]
    fn fnv1_64_matches_the_published_vectors() {
        // FNV-1 (not 1a) reference values (isthe.com/chongo/tech/comp/fnv).
        assert_eq!(fnv1_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1_64(b"a"), 0xaf63_bd4c_8601_b7be);
        assert_eq!(fnv1_64(b"foobar"), 0x340d_8765_a4dd_a9c2);
    }

    #[test]
    fn legacy_values_are_accepted_and_marked_for_rewrite() {
        let sticky = Sticky::new([("a", 1), ("http://127.0.0.1:18081", 2)]);
        let once = format!("{:x}", fnv1_64(b"http://127.0.0.1:18081"));
        let twice = format!("{:x}", fnv1_64(once.as_bytes()));
        assert_eq!(pinned(&sticky, "http://127.0.0.1:18081"), Some((2, true)));
        assert_eq!(pinned(&sticky, &once), Some((2, true)));
        assert_eq!(pinned(&sticky, &twice), Some((2, true)));
        assert_eq!(pinned(&sticky, "a"), Some((1, true)));
        assert_eq!(pinned(&sticky, "ca978112ca1bbdca"), Some((1, false)));
    }
}
