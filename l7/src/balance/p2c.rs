//! Power of two choices: two distinct random healthy handlers, the one with fewer requests
//! in flight wins (ties go to the first drawn). Weights play no part, as in Traefik.
//!
//! Randomness is injected through [`Random`] so the choice is a deterministic function of
//! the draws in tests; [`SplitMix64`] is the production source.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// A source of uniform indexes.
pub trait Random {
    /// A uniform value in `0..n`; `n` is at least 1.
    fn below(&mut self, n: usize) -> usize;
}

/// A small, fast, non-cryptographic generator (SplitMix64); balancing needs no more.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// Seeded from the per-process random keys of the standard library's `RandomState`.
    pub fn from_entropy() -> Self {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u8(0);
        Self(hasher.finish())
    }
}

impl Random for SplitMix64 {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        // Multiply-shift maps 64 random bits onto 0..n without a division.
        ((u128::from(z) * n as u128) >> 64) as usize
    }
}

struct Server<T> {
    item: T,
    up: AtomicBool,
    in_flight: AtomicUsize,
}

/// The handlers of one service; picking is lock-free.
pub struct P2c<T> {
    servers: Vec<Arc<Server<T>>>,
}

/// A picked handler; counts as in flight until dropped (hold it for the whole request).
pub struct InFlight<T> {
    server: Arc<Server<T>>,
}

impl<T> InFlight<T> {
    pub fn handler(&self) -> &T {
        &self.server.item
    }
}

impl<T> Drop for InFlight<T> {
    fn drop(&mut self) {
        self.server.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<T> P2c<T> {
    /// All handlers start up with nothing in flight.
    pub fn new(handlers: impl IntoIterator<Item = T>) -> Self {
        let servers = handlers
            .into_iter()
            .map(|item| {
                Arc::new(Server {
                    item,
                    up: AtomicBool::new(true),
                    in_flight: AtomicUsize::new(0),
                })
            })
            .collect();
        Self { servers }
    }

    /// Marks every handler equal to `item` up or down; returns whether one was found.
    pub fn set_up(&self, item: &T, up: bool) -> bool
    where
        T: PartialEq,
    {
        let mut found = false;
        for server in self.servers.iter().filter(|server| server.item == *item) {
            server.up.store(up, Ordering::Relaxed);
            found = true;
        }
        found
    }

    /// The handler for the next request, or `None` when none is up.
    pub fn pick(&self, random: &mut impl Random) -> Option<InFlight<T>> {
        self.pick_where(random, |_| true)
    }

    /// As [`P2c::pick`], drawing only among handlers that are up and pass `is_up` (health
    /// kept outside the balancer).
    pub fn pick_where(
        &self,
        random: &mut impl Random,
        is_up: impl Fn(&T) -> bool,
    ) -> Option<InFlight<T>> {
        let healthy: Vec<&Arc<Server<T>>> = self
            .servers
            .iter()
            .filter(|server| server.up.load(Ordering::Relaxed) && is_up(&server.item))
            .collect();
        let chosen = match healthy.len() {
            0 => return None,
            1 => healthy[0],
            n => {
                // Drawing the second index from n-1 values and skipping the first keeps
                // the pair distinct without retrying.
                let first = random.below(n);
                let mut second = random.below(n - 1);
                if second >= first {
                    second += 1;
                }
                let (a, b) = (healthy[first], healthy[second]);
                if b.in_flight.load(Ordering::Relaxed) < a.in_flight.load(Ordering::Relaxed) {
                    b
                } else {
                    a
                }
            }
        };
        Some(Self::enter_server(chosen))
    }

    /// Counts a request in flight on the first handler equal to `item`, chosen by other means
    /// (a sticky cookie); `None` if there is no such handler.
    pub fn enter(&self, item: &T) -> Option<InFlight<T>>
    where
        T: PartialEq,
    {
        self.servers
            .iter()
            .find(|server| server.item == *item)
            .map(Self::enter_server)
    }

    fn enter_server(server: &Arc<Server<T>>) -> InFlight<T> {
        server.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            server: Arc::clone(server),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replays scripted draws, checking each is in range.
    struct Script(Vec<usize>);

    impl Random for Script {
        fn below(&mut self, n: usize) -> usize {
            let value = self.0.remove(0);
            assert!(value < n, "draw {value} out of 0..{n}");
            value
        }
    }

    #[test]
    fn fewer_in_flight_wins() {
        let p2c = P2c::new(["A", "B", "C"]);
        let busy = p2c.pick(&mut Script(vec![0, 0]));
        assert_eq!(busy.as_ref().map(|h| *h.handler()), Some("A"));
        // Draws A then C (index 1 of the others, shifted past A): C has nothing in flight.
        let next = p2c.pick(&mut Script(vec![0, 1]));
        assert_eq!(next.as_ref().map(|h| *h.handler()), Some("C"));
    }

    #[test]
    fn ties_go_to_the_first_draw_and_the_pair_is_distinct() {
        let p2c = P2c::new(["A", "B", "C"]);
        // Draws C then B (below the first, kept as is): both idle, C was drawn first.
        let pick = p2c.pick(&mut Script(vec![2, 1]));
        assert_eq!(pick.as_ref().map(|h| *h.handler()), Some("C"));
        drop(pick);
        // Draws B then index 1 of the others, shifted past B to C: B was drawn first.
        let pick = p2c.pick(&mut Script(vec![1, 1]));
        assert_eq!(pick.as_ref().map(|h| *h.handler()), Some("B"));
    }

    #[test]
    fn dropping_the_guard_ends_the_request() {
        let p2c = P2c::new(["A", "B"]);
        drop(p2c.pick(&mut Script(vec![0, 0])));
        // A is idle again, so a tie: the first draw (A) wins.
        let pick = p2c.pick(&mut Script(vec![0, 0]));
        assert_eq!(pick.as_ref().map(|h| *h.handler()), Some("A"));
    }

    #[test]
    fn down_servers_are_never_drawn() {
        let p2c = P2c::new(["A", "B", "C"]);
        assert!(p2c.set_up(&"B", false));
        // Healthy = [A, C]: index 1 is C.
        let pick = p2c.pick(&mut Script(vec![1, 0]));
        assert_eq!(pick.as_ref().map(|h| *h.handler()), Some("C"));
        p2c.set_up(&"A", false);
        // One healthy server: no draw at all.
        let pick = p2c.pick(&mut Script(vec![]));
        assert_eq!(pick.as_ref().map(|h| *h.handler()), Some("C"));
        p2c.set_up(&"C", false);
        assert!(p2c.pick(&mut Script(vec![])).is_none());
    }

    #[test]
    fn pick_where_skips_handlers_down_outside_and_enter_counts_in_flight() {
        let p2c = P2c::new(["A", "B", "C"]);
        // Only C passes: no draw at all.
        let pick = p2c.pick_where(&mut Script(vec![]), |&h| h == "C");
        assert_eq!(pick.as_ref().map(|h| *h.handler()), Some("C"));
        assert!(p2c.pick_where(&mut Script(vec![]), |_| false).is_none());
        // A request pinned to A (sticky) makes B win the A/B draw.
        let pinned = p2c.enter(&"A");
        assert!(pinned.is_some());
        let pick = p2c.pick(&mut Script(vec![0, 0]));
        assert_eq!(pick.as_ref().map(|h| *h.handler()), Some("B"));
        assert!(p2c.enter(&"Z").is_none());
    }

    #[test]
    fn split_mix_stays_in_range_and_spreads() {
        let mut random = SplitMix64::new(7);
        let mut counts = [0usize; 3];
        for _ in 0..3000 {
            counts[random.below(3)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }
}
