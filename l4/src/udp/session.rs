//! The session table of a UDP entrypoint, as a sans-IO core: no sockets, time passed in.
//!
//! A session is keyed by the client's address (`ip:port`), as in Traefik: its first datagram
//! creates it, every datagram either way keeps it alive, and it ends after `idle_timeout`
//! without traffic. The table is bounded: when it is full, idle sessions are swept first,
//! and if none is idle a new client is refused (its datagram dropped) rather than an active
//! session evicted. A flood of spoofed source addresses therefore costs at most `capacity`
//! sessions (and the sockets they hold) and never disturbs the sessions already in place.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Sessions of one entrypoint, each holding the caller's state `S` (its backend socket).
/// Dropping a session's state is how it ends: the table never hands back expired states
/// except through [`SessionTable::expire`] and [`SessionTable::remove`].
#[derive(Debug)]
pub struct SessionTable<S> {
    sessions: HashMap<SocketAddr, Entry<S>>,
    capacity: usize,
    idle_timeout: Duration,
    next_id: u64,
    /// When [`SessionTable::expire`] last ran: a full table sweeps at most once per
    /// [`SessionTable::sweep_interval`], so a flood costs no scan per datagram.
    last_sweep: Option<Instant>,
}

#[derive(Debug)]
struct Entry<S> {
    state: S,
    id: u64,
    last_active: Instant,
    /// This session's idle timeout: the table's, or longer for QUIC flows.
    idle: Duration,
}

/// The table is full of active sessions: the new client was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableFull;

impl<S> SessionTable<S> {
    /// A table of at most `capacity` sessions (at least 1), each ending after
    /// `idle_timeout` without traffic.
    pub fn new(capacity: usize, idle_timeout: Duration) -> Self {
        Self {
            sessions: HashMap::new(),
            capacity: capacity.max(1),
            idle_timeout,
            next_id: 0,
            last_sweep: None,
        }
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// How often [`SessionTable::expire`] should run: a tenth of the idle timeout, as
    /// Traefik checks, but not more often than every 10 ms.
    pub fn sweep_interval(&self) -> Duration {
        (self.idle_timeout / 10).max(Duration::from_millis(10))
    }

    /// The live session of `client` with its id, marked active at `now`. A session idle for
    /// the whole timeout but not swept yet has ended: it is removed and `None` returned.
    pub fn touch(&mut self, client: &SocketAddr, now: Instant) -> Option<(&S, u64)> {
        let expired = match self.sessions.get(client) {
            None => return None,
            Some(entry) => self.is_expired(entry, now),
        };
        if expired {
            self.sessions.remove(client);
            return None;
        }
        let entry = self.sessions.get_mut(client)?;
        entry.last_active = now;
        Some((&entry.state, entry.id))
    }

    /// Marks session `id` of `client` active at `now` (traffic from its backend); false when
    /// that session has ended, possibly replaced by a newer one of the same client.
    pub fn touch_id(&mut self, client: &SocketAddr, id: u64, now: Instant) -> bool {
        match self.sessions.get_mut(client) {
            Some(entry) if entry.id == id => {
                entry.last_active = now;
                true
            }
            _ => false,
        }
    }

    /// Starts a session for `client` (replacing an ended one), returning its id. When the
    /// table is full, idle sessions are swept (unless a sweep ran less than a sweep interval
    /// ago); if it is still full, the client is refused.
    pub fn insert(&mut self, client: SocketAddr, state: S, now: Instant) -> Result<u64, TableFull> {
        self.insert_idle(client, state, now, self.idle_timeout)
    }

    /// As [`SessionTable::insert`], for a session that ends after `idle` without traffic
    /// (at least the table's timeout).
    pub fn insert_idle(
        &mut self,
        client: SocketAddr,
        state: S,
        now: Instant,
        idle: Duration,
    ) -> Result<u64, TableFull> {
        if !self.sessions.contains_key(&client) && self.sessions.len() >= self.capacity {
            self.sweep_if_due(now);
            if self.sessions.len() >= self.capacity {
                return Err(TableFull);
            }
        }
        self.next_id += 1;
        let id = self.next_id;
        self.sessions.insert(
            client,
            Entry {
                state,
                id,
                last_active: now,
                idle: idle.max(self.idle_timeout),
            },
        );
        Ok(id)
    }

    /// Moves the live session of `from` to the address `to` (a client whose NAT rebound it),
    /// marking it active at `now`; returns its id. Nothing moves when `from` has no live
    /// session or `to` has one already.
    pub fn rekey(&mut self, from: &SocketAddr, to: SocketAddr, now: Instant) -> Option<u64> {
        if self.sessions.contains_key(&to) {
            return None;
        }
        let mut entry = self.sessions.remove(from)?;
        if self.is_expired(&entry, now) {
            return None;
        }
        entry.last_active = now;
        let id = entry.id;
        self.sessions.insert(to, entry);
        Some(id)
    }

    /// Ends session `id` of `client` (its backend failed), returning its state; a newer
    /// session of the same client is left alone.
    pub fn remove(&mut self, client: &SocketAddr, id: u64) -> Option<S> {
        match self.sessions.get(client) {
            Some(entry) if entry.id == id => self.sessions.remove(client).map(|e| e.state),
            _ => None,
        }
    }

    /// Sweeps (as [`SessionTable::expire`]) unless the last sweep is less than a sweep
    /// interval old, returning the sessions that ended.
    pub fn sweep_if_due(&mut self, now: Instant) -> Vec<(SocketAddr, S)> {
        match self.last_sweep {
            Some(at) if now.saturating_duration_since(at) < self.sweep_interval() => Vec::new(),
            _ => self.expire(now),
        }
    }

    /// Ends every session idle for the whole timeout at `now`, returning them.
    pub fn expire(&mut self, now: Instant) -> Vec<(SocketAddr, S)> {
        self.last_sweep = Some(now);
        let ended: Vec<SocketAddr> = self
            .sessions
            .iter()
            .filter(|(_, e)| self.is_expired(e, now))
            .map(|(client, _)| *client)
            .collect();
        ended
            .into_iter()
            .filter_map(|client| self.sessions.remove(&client).map(|e| (client, e.state)))
            .collect()
    }

    /// Ends every session, returning them (shutdown).
    pub fn drain(&mut self) -> Vec<(SocketAddr, S)> {
        self.sessions.drain().map(|(c, e)| (c, e.state)).collect()
    }

    fn is_expired(&self, entry: &Entry<S>, now: Instant) -> bool {
        now.saturating_duration_since(entry.last_active) >= entry.idle
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(n: u32) -> SocketAddr {
        let ip = std::net::Ipv4Addr::from(0x0a00_0000 + n / 60_000);
        SocketAddr::from((ip, 1024 + (n % 60_000) as u16))
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn a_session_lives_while_traffic_flows_and_ends_after_the_idle_timeout() {
        let t0 = Instant::now();
        let mut table = SessionTable::new(10, 3 * SECOND);
        let id = table.insert(client(1), "a", t0).unwrap();
        assert_eq!(table.touch(&client(1), t0 + 2 * SECOND), Some((&"a", id)));
        // Active at 2 s, so still alive at 4.9 s.
        assert!(table.touch_id(&client(1), id, t0 + 4 * SECOND));
        assert!(table.expire(t0 + 6 * SECOND).is_empty());
        let ended = table.expire(t0 + 7 * SECOND);
        assert_eq!(ended, vec![(client(1), "a")]);
        assert!(table.is_empty());
    }

    #[test]
    fn a_session_with_a_longer_idle_timeout_outlives_the_others() {
        let t0 = Instant::now();
        let mut table = SessionTable::new(10, SECOND);
        table.insert(client(1), "plain", t0).unwrap();
        let quic = table
            .insert_idle(client(2), "quic", t0, 30 * SECOND)
            .unwrap();
        // Never shorter than the table's.
        table
            .insert_idle(client(3), "short", t0, SECOND / 10)
            .unwrap();
        let ended = table.expire(t0 + 2 * SECOND);
        assert_eq!(ended.len(), 2);
        assert!(table.touch_id(&client(2), quic, t0 + 29 * SECOND));
        assert_eq!(table.expire(t0 + 58 * SECOND).len(), 0);
        assert_eq!(table.expire(t0 + 59 * SECOND).len(), 1);
    }

    #[test]
    fn a_session_idle_past_the_timeout_is_over_even_before_the_sweep() {
        let t0 = Instant::now();
        let mut table = SessionTable::new(10, SECOND);
        let first = table.insert(client(1), 1, t0).unwrap();
        assert_eq!(table.touch(&client(1), t0 + SECOND), None);
        assert!(!table.touch_id(&client(1), first, t0 + SECOND));
        let second = table.insert(client(1), 2, t0 + SECOND).unwrap();
        assert_ne!(first, second);
        assert_eq!(table.touch(&client(1), t0 + SECOND), Some((&2, second)));
    }

    #[test]
    fn removing_by_id_leaves_a_newer_session_of_the_same_client() {
        let t0 = Instant::now();
        let mut table = SessionTable::new(10, SECOND);
        let old = table.insert(client(1), "old", t0).unwrap();
        let new = table.insert(client(1), "new", t0).unwrap();
        assert_eq!(table.remove(&client(1), old), None);
        assert_eq!(table.len(), 1);
        assert_eq!(table.remove(&client(1), new), Some("new"));
    }

    #[test]
    fn a_session_moves_to_a_new_address_with_its_id_unless_that_address_has_one() {
        let t0 = Instant::now();
        let mut table = SessionTable::new(10, SECOND);
        let id = table.insert(client(1), "quic", t0).unwrap();
        table.insert(client(3), "other", t0).unwrap();
        assert_eq!(table.rekey(&client(1), client(2), t0), Some(id));
        assert_eq!(table.touch(&client(2), t0), Some((&"quic", id)));
        assert_eq!(table.touch(&client(1), t0), None);
        assert!(table.touch_id(&client(2), id, t0));
        // An address with a session of its own is never taken over.
        assert_eq!(table.rekey(&client(2), client(3), t0), None);
        assert_eq!(table.touch(&client(3), t0).map(|(s, _)| *s), Some("other"));
        // Nothing to move.
        assert_eq!(table.rekey(&client(7), client(8), t0), None);
        // An expired session does not come back to life elsewhere.
        assert_eq!(table.rekey(&client(2), client(9), t0 + SECOND), None);
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn a_full_table_refuses_new_clients_but_keeps_its_sessions() {
        let t0 = Instant::now();
        let mut table = SessionTable::new(3, SECOND);
        for n in 0..3 {
            table.insert(client(n), n, t0).unwrap();
        }
        assert_eq!(table.insert(client(9), 9, t0), Err(TableFull));
        assert!(table.touch(&client(0), t0).is_some());
        // Once some are idle for the timeout, newcomers take their places.
        table.touch(&client(1), t0 + SECOND / 2);
        assert!(table.insert(client(9), 9, t0 + SECOND).is_ok());
        assert_eq!(table.len(), 2, "sessions 0 and 2 were idle and swept");
    }

    #[test]
    fn a_flood_of_100_000_sources_stays_within_the_capacity() {
        let t0 = Instant::now();
        let mut table = SessionTable::new(4096, 3 * SECOND);
        let regular = table.insert(client(0), 0u32, t0).unwrap();
        let mut refused = 0;
        for n in 1..=100_000u32 {
            // 10 µs apart: the whole flood lasts one second, under the idle timeout.
            let now = t0 + Duration::from_micros(10 * u64::from(n));
            if table.insert(client(n), n, now).is_err() {
                refused += 1;
            }
            if n % 1000 == 0 {
                assert!(table.touch_id(&client(0), regular, now));
            }
        }
        assert_eq!(table.len(), 4096);
        assert_eq!(refused, 100_000 - 4095);
        assert!(
            table.touch(&client(0), t0 + SECOND).is_some(),
            "the regular client kept its session"
        );
    }

    #[test]
    fn the_sweep_runs_ten_times_per_timeout_but_not_more_than_every_10_ms() {
        assert_eq!(
            SessionTable::<()>::new(1, 3 * SECOND).sweep_interval(),
            Duration::from_millis(300)
        );
        assert_eq!(
            SessionTable::<()>::new(1, Duration::from_millis(20)).sweep_interval(),
            Duration::from_millis(10)
        );
    }
}
