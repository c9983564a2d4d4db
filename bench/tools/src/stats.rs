//! Bookkeeping for a load run: failures counted by kind, latencies kept in full (a few
//! hundred thousand samples at most) and summarised by nearest-rank percentiles.

use crate::client::{Failure, Greeted};

#[derive(Debug, Default)]
pub struct Tally {
    latencies_us: Vec<u64>,
    resumed: u64,
    failures: [u64; Failure::ALL.len()],
}

impl Tally {
    pub fn record(&mut self, outcome: Result<Greeted, Failure>) {
        match outcome {
            Ok(greeted) => {
                self.latencies_us
                    .push(u64::try_from(greeted.first_byte.as_micros()).unwrap_or(u64::MAX));
                self.resumed += u64::from(greeted.resumed);
            }
            Err(failure) => self.failures[failure as usize] += 1,
        }
    }

    pub fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        self.resumed += other.resumed;
        for (mine, theirs) in self.failures.iter_mut().zip(other.failures) {
            *mine += theirs;
        }
    }

    pub fn successes(&self) -> u64 {
        self.latencies_us.len() as u64
    }

    /// Successful connections whose TLS handshake resumed a session.
    pub fn resumed(&self) -> u64 {
        self.resumed
    }

    pub fn errors(&self) -> u64 {
        self.failures.iter().sum()
    }

    pub fn failures(&self) -> impl Iterator<Item = (Failure, u64)> + '_ {
        Failure::ALL.into_iter().zip(self.failures)
    }

    /// Sorts the samples once and reads the given percentiles (in microseconds) from them.
    pub fn percentiles_us<const N: usize>(&mut self, ps: [f64; N]) -> [Option<u64>; N] {
        self.latencies_us.sort_unstable();
        ps.map(|p| nearest_rank(&self.latencies_us, p))
    }
}

/// The smallest sample with at least `p` percent of the samples at or below it.
pub fn nearest_rank(sorted: &[u64], p: f64) -> Option<u64> {
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len().max(1)) - 1).copied()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn greeted(us: u64, resumed: bool) -> Result<Greeted, Failure> {
        Ok(Greeted {
            first_byte: Duration::from_micros(us),
            resumed,
        })
    }

    #[test]
    fn nearest_rank_picks_the_sample_covering_the_percentile() {
        let samples: Vec<u64> = (1..=100).collect();
        assert_eq!(nearest_rank(&samples, 50.0), Some(50));
        assert_eq!(nearest_rank(&samples, 99.0), Some(99));
        assert_eq!(nearest_rank(&samples, 99.5), Some(100));
        assert_eq!(nearest_rank(&samples, 100.0), Some(100));
        assert_eq!(nearest_rank(&samples, 0.0), Some(1));
        assert_eq!(nearest_rank(&[7], 99.0), Some(7));
    }

    #[test]
    fn nearest_rank_of_no_samples_is_none() {
        assert_eq!(nearest_rank(&[], 50.0), None);
    }

    #[test]
    fn tally_counts_failures_by_kind_and_resumptions_and_merges() {
        let mut a = Tally::default();
        a.record(greeted(30, true));
        a.record(Err(Failure::Handshake));
        let mut b = Tally::default();
        b.record(greeted(10, false));
        b.record(greeted(20, true));
        b.record(Err(Failure::Handshake));
        b.record(Err(Failure::Timeout));
        a.merge(b);

        assert_eq!(a.successes(), 3);
        assert_eq!(a.resumed(), 2);
        assert_eq!(a.errors(), 3);
        let counts: Vec<_> = a.failures().filter(|(_, n)| *n > 0).collect();
        assert_eq!(counts, [(Failure::Handshake, 2), (Failure::Timeout, 1)]);
        assert_eq!(a.percentiles_us([0.0, 100.0]), [Some(10), Some(30)]);
    }
}
