//! Highest random weight (rendezvous hashing) on the client IP, as Traefik's
//! `highestRandomWeight` service: each healthy handler scores
//! `weight / -ln(fnv1a64(client_ip + name) / 2^64)` and the highest score wins, so a
//! client stays on its handler and only the clients of a removed handler move.
//!
//! FNV-1a barely stirs its high bits with the last bytes of a key, so handlers whose names
//! differ only at the end (`game-1`, `game-2`, `game-3`, or ports 27016–27018) get
//! correlated scores and split clients about 2:1:1. HTTP keeps Traefik's hashing (a fleet
//! mixing Traefik and Sallyport then picks alike); UDP `hrw`, an extension, mixes the hash
//! first ([`Hashing::Mixed`]).

use std::sync::atomic::{AtomicBool, Ordering};

/// FNV-1a, 64 bits (the hash Traefik uses here).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}

/// MurmurHash3's 64-bit finalizer: every input bit flips each output bit with probability
/// about one half.
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

/// How a client IP and a handler name become a score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Hashing {
    /// Traefik's: FNV-1a of `client_ip + name` as is.
    #[default]
    Traefik,
    /// FNV-1a then [`fmix64`], so names that differ in one last character spread evenly.
    Mixed,
}

/// The rendezvous score of handler `name` for `client_ip` (Traefik's hashing).
pub fn score(client_ip: &str, name: &str, weight: f64) -> f64 {
    score_with(Hashing::Traefik, client_ip, name, weight)
}

/// The rendezvous score of handler `name` for `client_ip` with `hashing`.
pub fn score_with(hashing: Hashing, client_ip: &str, name: &str, weight: f64) -> f64 {
    let mut key = Vec::with_capacity(client_ip.len() + name.len());
    key.extend_from_slice(client_ip.as_bytes());
    key.extend_from_slice(name.as_bytes());
    let hash = match hashing {
        Hashing::Traefik => fnv1a64(&key),
        Hashing::Mixed => fmix64(fnv1a64(&key)),
    };
    let unit = hash as f64 / 2f64.powi(64);
    weight / -unit.ln()
}

struct Entry<T> {
    item: T,
    name: String,
    weight: f64,
    up: AtomicBool,
}

/// The handlers of one `highestRandomWeight` service.
pub struct Hrw<T> {
    entries: Vec<Entry<T>>,
    hashing: Hashing,
}

impl<T> Default for Hrw<T> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            hashing: Hashing::default(),
        }
    }
}

impl<T> Hrw<T> {
    /// An empty service with Traefik's hashing.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty service scoring with `hashing`.
    pub fn with_hashing(hashing: Hashing) -> Self {
        Self {
            entries: Vec::new(),
            hashing,
        }
    }

    /// Adds a handler, up, hashed by `name` (the child service name). A weight of zero or
    /// less is ignored; returns whether the handler was added.
    pub fn add(&mut self, item: T, name: impl Into<String>, weight: i64) -> bool {
        if weight <= 0 {
            return false;
        }
        self.entries.push(Entry {
            item,
            name: name.into(),
            weight: weight as f64,
            up: AtomicBool::new(true),
        });
        true
    }

    /// Marks the handler named `name` up or down; returns whether it was found.
    pub fn set_up(&self, name: &str, up: bool) -> bool {
        let mut found = false;
        for entry in self.entries.iter().filter(|entry| entry.name == name) {
            entry.up.store(up, Ordering::Relaxed);
            found = true;
        }
        found
    }

    /// The healthy handler with the highest score for `client_ip` (the first on equal
    /// scores), or `None` when none is up.
    pub fn pick(&self, client_ip: &str) -> Option<&T> {
        self.pick_where(client_ip, |_| true)
    }

    /// As [`Hrw::pick`], among handlers that are up and pass `is_up` (health kept outside).
    pub fn pick_where(&self, client_ip: &str, is_up: impl Fn(&T) -> bool) -> Option<&T> {
        let mut best: Option<(f64, &T)> = None;
        let healthy = self
            .entries
            .iter()
            .filter(|e| e.up.load(Ordering::Relaxed) && is_up(&e.item));
        for entry in healthy {
            let s = score_with(self.hashing, client_ip, &entry.name, entry.weight);
            if best.is_none_or(|(top, _)| s > top) {
                best = Some((s, &entry.item));
            }
        }
        best.map(|(_, item)| item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_the_published_vectors() {
        // From the FNV reference test suite (isthe.com/chongo/tech/comp/fnv).
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    fn service(names: &[&'static str]) -> Hrw<&'static str> {
        let mut hrw = Hrw::new();
        for &name in names {
            hrw.add(name, name, 1);
        }
        hrw
    }

    fn clients() -> Vec<String> {
        (0..200)
            .map(|i| format!("10.0.{}.{}", i / 250, i % 250))
            .collect()
    }

    #[test]
    fn removing_a_server_moves_only_its_clients() {
        let before = service(&["a", "b", "c", "d"]);
        let after = service(&["a", "b", "d"]);
        for client in clients() {
            let was = before.pick(&client);
            if was != Some(&"c") {
                assert_eq!(after.pick(&client), was, "client {client}");
            }
        }
    }

    #[test]
    fn adding_a_server_moves_clients_only_to_it() {
        let before = service(&["a", "b", "c"]);
        let after = service(&["a", "b", "c", "e"]);
        let mut moved = 0;
        for client in clients() {
            let now = after.pick(&client);
            if now != before.pick(&client) {
                assert_eq!(now, Some(&"e"), "client {client}");
                moved += 1;
            }
        }
        assert!(moved > 20, "the new server takes a share, moved {moved}");
    }

    #[test]
    fn a_down_server_behaves_as_removed_and_none_when_all_down() {
        let all = service(&["a", "b", "c"]);
        let without_b = service(&["a", "c"]);
        assert!(all.set_up("b", false));
        for client in clients() {
            assert_eq!(all.pick(&client), without_b.pick(&client));
        }
        all.set_up("a", false);
        all.set_up("c", false);
        assert_eq!(all.pick("10.0.0.1"), None);
    }

    #[test]
    fn pick_where_behaves_as_if_the_rejected_were_down() {
        let all = service(&["a", "b", "c"]);
        let without_b = service(&["a", "c"]);
        for client in clients() {
            assert_eq!(
                all.pick_where(&client, |&h| h != "b"),
                without_b.pick(&client)
            );
        }
        assert_eq!(all.pick_where("10.0.0.1", |_| false), None);
    }

    #[test]
    fn weight_scales_the_share_and_non_positive_weights_are_ignored() {
        let mut hrw = Hrw::new();
        assert!(hrw.add("heavy", "heavy", 3));
        assert!(hrw.add("light", "light", 1));
        assert!(!hrw.add("zero", "zero", 0));
        assert!(!hrw.add("negative", "negative", -1));
        let heavy = clients()
            .iter()
            .filter(|client| hrw.pick(client) == Some(&"heavy"))
            .count();
        // Expected share 3/4 of 200.
        assert!((120..=180).contains(&heavy), "heavy got {heavy}");
    }

    /// Shares of 3,000 clients over `names`, per name.
    fn shares(hrw: &Hrw<&'static str>, names: &[&'static str]) -> Vec<usize> {
        let clients: Vec<String> = (0..3000)
            .map(|i| format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256))
            .collect();
        names
            .iter()
            .map(|name| {
                clients
                    .iter()
                    .filter(|client| hrw.pick(client) == Some(name))
                    .count()
            })
            .collect()
    }

    #[test]
    fn mixed_hashing_spreads_names_that_differ_in_their_last_character() {
        let names = ["127.0.0.1:27016", "127.0.0.1:27017", "127.0.0.1:27018"];
        let mut mixed = Hrw::with_hashing(Hashing::Mixed);
        let mut traefik = Hrw::new();
        for name in names {
            mixed.add(name, name, 1);
            traefik.add(name, name, 1);
        }
        // Even is 1,000 each; binomial noise over 3,000 clients is about ±26.
        let even = shares(&mixed, &names);
        assert!(even.iter().all(|n| (900..=1100).contains(n)), "{even:?}");
        // Traefik's unmixed FNV-1a gives the last name about half (why UDP mixes).
        let skewed = shares(&traefik, &names);
        assert!(skewed.iter().any(|n| *n > 1300), "{skewed:?}");
    }

    #[test]
    fn mixed_hashing_keeps_affinity_and_moves_only_a_removed_handlers_clients() {
        let mut before = Hrw::with_hashing(Hashing::Mixed);
        let mut after = Hrw::with_hashing(Hashing::Mixed);
        for name in ["game-1", "game-2", "game-3"] {
            before.add(name, name, 1);
            if name != "game-2" {
                after.add(name, name, 1);
            }
        }
        for client in clients() {
            let was = before.pick(&client);
            assert_eq!(before.pick(&client), was, "client {client}");
            if was != Some(&"game-2") {
                assert_eq!(after.pick(&client), was, "client {client}");
            }
        }
    }

    #[test]
    fn score_is_the_weighted_inverse_log_of_the_hash() {
        let unit = fnv1a64(b"10.0.0.1a") as f64 / 2f64.powi(64);
        assert_eq!(score("10.0.0.1", "a", 2.0), 2.0 / -unit.ln());
    }
}
