//! Traefik's TCP weighted round robin: the classic interleaved GCD algorithm. Entries are
//! visited round robin; each time the index wraps, the weight threshold drops by the GCD of
//! the weights (back to the largest weight once it reaches zero), and an entry is picked when
//! its weight reaches the threshold. Weights 3:1 give A, A, A, B.
//!
//! The balancer only knows indices and weights: callers say which entries are healthy at
//! pick time, and own what the indices stand for.
//!
//! [`WrrPositions`] keeps a service's round robin across reloads while its entries are
//! unchanged, so that frequent reloads do not send the first connections after each one to
//! the first entry again.

use std::sync::{Arc, Mutex, PoisonError};

use crate::kept::Kept;

/// Round robins by service name, each with the entries (name, weight) it was built over.
pub type WrrPositions = Kept<String, Vec<(String, u32)>, Wrr>;

/// A weighted round robin over `weights.len()` entries.
#[derive(Debug)]
pub struct Wrr {
    weights: Box<[u32]>,
    state: Mutex<Cursor>,
}

/// Where the round robin stands. `index` is `None` before the first pick so that the first
/// step lands on entry 0 and counts as a wrap, as in Traefik.
#[derive(Debug, Default)]
struct Cursor {
    index: Option<usize>,
    threshold: u64,
}

impl Wrr {
    pub fn new(weights: &[u32]) -> Self {
        Self {
            weights: weights.into(),
            state: Mutex::new(Cursor::default()),
        }
    }

    /// The round robin of `service` over `entries` (a name and a weight each, in order): the
    /// one kept in `positions` while the entries are unchanged, else a new one.
    pub fn kept(positions: &WrrPositions, service: &str, entries: Vec<(String, u32)>) -> Arc<Wrr> {
        let weights: Vec<u32> = entries.iter().map(|(_, weight)| *weight).collect();
        positions.get_or_make(service.to_owned(), entries, || Wrr::new(&weights))
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.weights.len()
    }

    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    /// Picks the next entry among those for which `healthy` holds, or `None` when no healthy
    /// entry has a non-zero weight.
    pub fn next(&self, healthy: impl Fn(usize) -> bool) -> Option<usize> {
        let (max, gcd) = self
            .weights
            .iter()
            .enumerate()
            .filter(|&(i, &w)| w > 0 && healthy(i))
            .fold((0u64, 0u64), |(max, gcd), (_, &w)| {
                (max.max(u64::from(w)), gcd_of(gcd, u64::from(w)))
            });
        if max == 0 {
            return None;
        }
        // The lock only guards two integers; a panic elsewhere cannot leave them invalid.
        let mut cursor = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        // Terminates: within two passes the threshold is reset to `max`, which the heaviest
        // healthy entry meets.
        loop {
            let index = cursor.index.map_or(0, |i| (i + 1) % self.weights.len());
            cursor.index = Some(index);
            if index == 0 {
                cursor.threshold = cursor.threshold.saturating_sub(gcd);
                // Health can change between picks, so also reset a threshold above `max`.
                if cursor.threshold == 0 || cursor.threshold > max {
                    cursor.threshold = max;
                }
            }
            let weight = u64::from(self.weights[index]);
            if weight > 0 && weight >= cursor.threshold && healthy(index) {
                return Some(index);
            }
        }
    }
}

fn gcd_of(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picks(wrr: &Wrr, n: usize, healthy: impl Fn(usize) -> bool) -> Vec<Option<usize>> {
        (0..n).map(|_| wrr.next(&healthy)).collect()
    }

    #[test]
    fn three_to_one_gives_three_then_one_like_traefik() {
        let wrr = Wrr::new(&[3, 1]);
        let all = |_| true;
        let expected = [0, 0, 0, 1].map(Some);
        assert_eq!(picks(&wrr, 4, all), expected);
        assert_eq!(picks(&wrr, 4, all), expected);
    }

    #[test]
    fn weights_interleave() {
        // Threshold 4: A; 3: A, B; 2: A, B; 1: A, B, C.
        let wrr = Wrr::new(&[4, 3, 1]);
        assert_eq!(picks(&wrr, 8, |_| true), [0, 0, 1, 0, 1, 0, 1, 2].map(Some));
    }

    #[test]
    fn equal_weights_are_plain_round_robin() {
        let wrr = Wrr::new(&[1, 1, 1]);
        assert_eq!(picks(&wrr, 7, |_| true), [0, 1, 2, 0, 1, 2, 0].map(Some));
        let wrr = Wrr::new(&[5, 5]);
        assert_eq!(picks(&wrr, 4, |_| true), [0, 1, 0, 1].map(Some));
    }

    #[test]
    fn unhealthy_entries_are_skipped() {
        let wrr = Wrr::new(&[1, 1, 1]);
        assert_eq!(picks(&wrr, 4, |i| i != 1), [0, 2, 0, 2].map(Some));
        // Only the light entry left: it gets everything.
        let wrr = Wrr::new(&[3, 1]);
        assert_eq!(picks(&wrr, 3, |i| i == 1), [1, 1, 1].map(Some));
    }

    #[test]
    fn recovers_when_the_heavy_entry_comes_back() {
        let wrr = Wrr::new(&[3, 1]);
        assert_eq!(picks(&wrr, 2, |i| i == 1), [Some(1), Some(1)]);
        let mut counts = [0; 2];
        for pick in picks(&wrr, 8, |_| true) {
            counts[pick.unwrap()] += 1;
        }
        assert_eq!(counts, [6, 2]);
    }

    #[test]
    fn zero_weight_entries_are_never_picked() {
        let wrr = Wrr::new(&[0, 2, 0]);
        assert_eq!(picks(&wrr, 3, |_| true), [1, 1, 1].map(Some));
        assert_eq!(Wrr::new(&[0, 0]).next(|_| true), None);
    }

    #[test]
    fn nothing_healthy_or_nothing_at_all_gives_none() {
        assert_eq!(Wrr::new(&[1, 2]).next(|_| false), None);
        assert_eq!(Wrr::new(&[]).next(|_| true), None);
    }

    #[test]
    fn a_kept_round_robin_goes_on_while_its_entries_are_unchanged() {
        let positions = WrrPositions::new();
        let entries = |second: &str| vec![("a".to_owned(), 1), (second.to_owned(), 1)];
        let first = Wrr::kept(&positions, "s", entries("b"));
        assert_eq!(first.next(|_| true), Some(0));
        positions.retain_used();
        let again = Wrr::kept(&positions, "s", entries("b"));
        assert_eq!(again.next(|_| true), Some(1));
        let changed = Wrr::kept(&positions, "s", entries("c"));
        assert_eq!(changed.next(|_| true), Some(0));
    }

    #[test]
    fn concurrent_picks_keep_the_proportions() {
        let wrr = std::sync::Arc::new(Wrr::new(&[3, 1]));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let wrr = wrr.clone();
                std::thread::spawn(move || {
                    let mut counts = [0u32; 2];
                    for _ in 0..1000 {
                        counts[wrr.next(|_| true).unwrap()] += 1;
                    }
                    counts
                })
            })
            .collect();
        let mut total = [0; 2];
        for t in threads {
            let counts = t.join().unwrap();
            total[0] += counts[0];
            total[1] += counts[1];
        }
        assert_eq!(total, [3000, 1000]);
    }
}
