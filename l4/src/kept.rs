//! State that consecutive snapshots share: in-flight counts, balancing positions, circuit
//! breakers. [`Kept`] hands the snapshot being built the state its predecessor used for the
//! same owner when the definition that created it is unchanged, and a fresh one otherwise;
//! once the new snapshot is installed, [`Kept::retain_used`] forgets what it did not ask for,
//! so names that come and go across reloads do not pile up.
//!
//! Only the build of a snapshot touches the registry; traffic holds the `Arc` it was given,
//! so the hot path pays nothing for it. A state the registry forgets lives on while an old
//! snapshot (or a connection or request it started) still holds it.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

/// States of type `S` by key `K` (an owner: a router, a service, a middleware for one of
/// them), each with the definition `D` it was created from.
pub struct Kept<K, D, S> {
    entries: Mutex<HashMap<K, Entry<D, S>>>,
}

struct Entry<D, S> {
    definition: D,
    state: Arc<S>,
    /// Asked for since the last [`Kept::retain_used`].
    used: bool,
}

impl<K, D, S> Default for Kept<K, D, S> {
    fn default() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash, D: PartialEq, S> Kept<K, D, S> {
    pub fn new() -> Self {
        Self::default()
    }

    /// The state of `key` for the snapshot being built: the kept one when it was created from
    /// a definition equal to `definition`, else `make()`, kept from now on in its place.
    pub fn get_or_make(&self, key: K, definition: D, make: impl FnOnce() -> S) -> Arc<S> {
        let mut entries = self.lock();
        if let Some(entry) = entries.get_mut(&key)
            && entry.definition == definition
        {
            entry.used = true;
            return entry.state.clone();
        }
        let state = Arc::new(make());
        entries.insert(
            key,
            Entry {
                definition,
                state: state.clone(),
                used: true,
            },
        );
        state
    }

    /// Forgets the states not asked for since the previous call; call it once the new
    /// snapshot is installed.
    pub fn retain_used(&self) {
        self.lock()
            .retain(|_, entry| std::mem::take(&mut entry.used));
    }

    /// How many states are kept.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Entry<D, S>>> {
        // Only inserts and removals happen under the lock: a poisoned map is still whole.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn an_unchanged_definition_gets_the_same_state() {
        let kept: Kept<&str, u32, AtomicU32> = Kept::new();
        let first = kept.get_or_make("a", 1, || AtomicU32::new(0));
        first.store(7, Ordering::Relaxed);
        kept.retain_used();
        let again = kept.get_or_make("a", 1, || AtomicU32::new(0));
        assert!(Arc::ptr_eq(&first, &again));
    }

    #[test]
    fn a_changed_definition_starts_afresh() {
        let kept: Kept<&str, u32, AtomicU32> = Kept::new();
        let first = kept.get_or_make("a", 1, || AtomicU32::new(7));
        let changed = kept.get_or_make("a", 2, || AtomicU32::new(0));
        assert!(!Arc::ptr_eq(&first, &changed));
        assert_eq!(changed.load(Ordering::Relaxed), 0);
        // The new definition is the one kept.
        let again = kept.get_or_make("a", 2, || AtomicU32::new(9));
        assert!(Arc::ptr_eq(&changed, &again));
    }

    #[test]
    fn states_no_build_asked_for_are_forgotten() {
        let kept: Kept<String, u32, ()> = Kept::new();
        for reload in 0..100 {
            kept.get_or_make("stays".to_owned(), 1, || ());
            kept.get_or_make(format!("router-{reload}"), 1, || ());
            kept.retain_used();
            assert_eq!(kept.len(), 2);
        }
        kept.retain_used();
        assert!(kept.is_empty());
    }
}
