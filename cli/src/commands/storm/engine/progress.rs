//! What the progress bar and the live dashboard read while the storm runs:
//! counters and a coarse latency histogram the lanes add to without a lock.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use flashtix_model::history::Outcome;

/// Counters read while the storm runs.
pub struct Progress {
    /// Purchases sent (a double click or a retry is one purchase).
    pub sent: AtomicU64,
    /// Purchases whose every request has ended.
    pub finished: AtomicU64,
    /// Sends that went out [`super::super::record::BEHIND_AFTER`] or more
    /// after their intended time (the document's `behind_sends`).
    pub behind: AtomicU64,
    /// Answers (every request of a purchase), by outcome, in the order of
    /// [`Outcome::ALL`].
    pub outcomes: [AtomicU64; Outcome::ALL.len()],
    pub latency: LiveLatency,
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            sent: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            behind: AtomicU64::new(0),
            outcomes: std::array::from_fn(|_| AtomicU64::new(0)),
            latency: LiveLatency::default(),
        }
    }
}

impl Progress {
    /// Answers so far with `outcome`.
    pub fn count(&self, outcome: Outcome) -> u64 {
        self.outcomes[outcome.index()].load(Relaxed)
    }

    /// Answers so far that were failures (errors, timeouts, …).
    pub fn failed(&self) -> u64 {
        Outcome::ALL
            .into_iter()
            .filter(|outcome| outcome.is_failure())
            .map(|outcome| self.count(outcome))
            .sum()
    }
}

/// Sub-buckets per power of two: values are told apart to within 1/8.
const SUB_BUCKETS: usize = 8;

/// Latency from the intended send, coarsely, in atomic buckets that the lanes
/// add to and the progress bar reads at the same time: no lock. The exact
/// figures are the lanes' HDR histograms, merged at the end.
pub struct LiveLatency {
    buckets: [AtomicU64; 64 * SUB_BUCKETS],
}

impl Default for LiveLatency {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl LiveLatency {
    pub fn record(&self, waited: Duration) {
        // Below 8 µs nothing is told apart (an HTTP answer takes longer).
        let micros = (waited.as_micros() as u64).max(8);
        self.buckets[bucket(micros)].fetch_add(1, Relaxed);
    }

    /// The upper edge of the bucket holding the percentile; `None` before any answer.
    pub fn percentile(&self, percentile: f64) -> Option<Duration> {
        percentile_of(&self.counts(), percentile)
    }

    /// Every bucket's count now: two readings apart, their difference is
    /// what was recorded in between (for [`percentile_of`]).
    pub fn counts(&self) -> Vec<u64> {
        self.buckets.iter().map(|b| b.load(Relaxed)).collect()
    }
}

/// The upper edge of the bucket of `counts` (a [`LiveLatency::counts`], or
/// the difference of two) holding the percentile; `None` with no count.
pub fn percentile_of(counts: &[u64], percentile: f64) -> Option<Duration> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let wanted = ((percentile / 100.0 * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    counts.iter().enumerate().find_map(|(index, &count)| {
        seen += count;
        (seen >= wanted).then(|| Duration::from_micros(upper_edge(index)))
    })
}

/// The bucket of a value of at least 8: its power of two, then which eighth of it.
fn bucket(micros: u64) -> usize {
    let power = 63 - micros.leading_zeros() as usize;
    let eighth = (micros >> (power - 3)) & 7;
    power * SUB_BUCKETS + eighth as usize
}

fn upper_edge(index: usize) -> u64 {
    let (power, eighth) = (index / SUB_BUCKETS, (index % SUB_BUCKETS) as u64);
    ((9 + eighth) << power) >> 3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_percentiles_are_within_an_eighth() {
        let live = LiveLatency::default();
        assert_eq!(live.percentile(99.0), None);
        for ms in 1..=1000 {
            live.record(Duration::from_millis(ms));
        }
        for (percentile, exact) in [(50.0, 500.0), (99.0, 990.0), (100.0, 1000.0)] {
            let shown = live.percentile(percentile).unwrap().as_secs_f64() * 1000.0;
            assert!(
                shown >= exact && shown <= exact * 1.125 + 1.0,
                "p{percentile}: {shown} for {exact}"
            );
        }
        for micros in [8, 9, 15, 16, 1000, 123_456_789] {
            let edge = upper_edge(bucket(micros));
            assert!(
                edge > micros && edge as f64 <= micros as f64 * 1.25 + 1.0,
                "{micros}: {edge}"
            );
        }
    }
}
