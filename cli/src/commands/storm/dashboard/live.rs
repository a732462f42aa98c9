//! What the page is told each tick: the storm's counters as the lanes keep
//! them (the ones the progress bar reads), and what changed since the last
//! tick: answers a second by outcome, the latency from the intended send.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use flashtix_chaos::windows::Window;
use flashtix_model::history::Outcome;
use serde::Serialize;
use tokio::time::Instant;

use super::super::engine::progress::percentile_of;
use super::super::engine::Progress;

/// How often the page is told: twice a second.
pub const TICK: Duration = Duration::from_millis(500);

/// One tick's message.
#[derive(Debug, Serialize, PartialEq)]
pub struct Tick {
    /// Seconds since the dashboard began, at this tick.
    pub t: f64,
    pub sent: u64,
    pub answered: u64,
    /// Purchases sent and not yet ended.
    pub in_flight: u64,
    /// Sends gone out 10 ms or more after their intended time.
    pub behind: u64,
    /// Answers so far, by outcome.
    pub outcomes: BTreeMap<&'static str, u64>,
    /// Answers a second since the last tick, by outcome (those with any).
    pub rates: BTreeMap<&'static str, f64>,
    /// The latency from the intended send of the answers since the last
    /// tick, in ms (`None`: no answer).
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// A drill's fault windows, when the storm is one's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub windows: Option<Vec<Window>>,
}

/// Reads the counters (and a drill's fault windows) each tick and says
/// what changed.
pub struct Sampler {
    progress: Arc<Progress>,
    /// A drill's fault windows, as its runner rewrites them.
    windows: Option<PathBuf>,
    started: Instant,
    at: Instant,
    outcomes: [u64; Outcome::ALL.len()],
    latency: Vec<u64>,
}

impl Sampler {
    pub fn new(progress: Arc<Progress>, windows: Option<PathBuf>) -> Self {
        let now = Instant::now();
        let latency = progress.latency.counts();
        Self {
            progress,
            windows,
            started: now,
            at: now,
            outcomes: [0; Outcome::ALL.len()],
            latency,
        }
    }

    /// The counters now, and what changed since the last call.
    pub fn tick(&mut self) -> Tick {
        let now = Instant::now();
        // Not less than half a tick: the last tick, taken as the sends end,
        // may come a moment after the one before.
        let seconds = now
            .duration_since(self.at)
            .as_secs_f64()
            .max(TICK.as_secs_f64() / 2.0);
        let progress = &self.progress;
        let outcomes: [u64; Outcome::ALL.len()] =
            std::array::from_fn(|index| progress.outcomes[index].load(Relaxed));
        let latency = progress.latency.counts();
        let window: Vec<u64> = latency
            .iter()
            .zip(&self.latency)
            .map(|(now, before)| now - before)
            .collect();
        let millis = |p: f64| percentile_of(&window, p).map(|d| d.as_secs_f64() * 1000.0);
        let sent = progress.sent.load(Relaxed);
        let tick = Tick {
            t: now.duration_since(self.started).as_secs_f64(),
            sent,
            answered: outcomes.iter().sum(),
            in_flight: sent.saturating_sub(progress.finished.load(Relaxed)),
            behind: progress.behind.load(Relaxed),
            outcomes: Outcome::ALL
                .iter()
                .map(|outcome| (outcome.name(), outcomes[outcome.index()]))
                .collect(),
            rates: Outcome::ALL
                .iter()
                .map(|o| (o.name(), outcomes[o.index()] - self.outcomes[o.index()]))
                .filter(|(_, added)| *added > 0)
                .map(|(name, added)| (name, added as f64 / seconds))
                .collect(),
            p50_ms: millis(50.0),
            p99_ms: millis(99.0),
            windows: self
                .windows
                .as_deref()
                .map(|path| flashtix_chaos::windows::read(path).unwrap_or_default()),
        };
        (self.at, self.outcomes, self.latency) = (now, outcomes, latency);
        tick
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tick_says_what_was_answered_since_the_last_and_how_fast() {
        let progress = Arc::new(Progress::default());
        let mut sampler = Sampler::new(progress.clone(), None);
        progress.sent.store(30, Relaxed);
        progress.finished.store(20, Relaxed);
        progress.outcomes[Outcome::Accepted.index()].store(15, Relaxed);
        progress.outcomes[Outcome::SoldOut.index()].store(5, Relaxed);
        for ms in 1..=20 {
            progress.latency.record(Duration::from_millis(ms));
        }
        let first = sampler.tick();
        assert_eq!((first.sent, first.answered, first.in_flight), (30, 20, 10));
        assert_eq!(first.outcomes["accepted"], 15);
        assert_eq!(
            first.rates.keys().copied().collect::<Vec<_>>(),
            ["accepted", "sold_out"]
        );
        let p99 = first.p99_ms.unwrap();
        assert!((20.0..=22.5).contains(&p99), "{p99}");

        // Nothing answered since: no rates, no latency, the totals kept.
        let second = sampler.tick();
        assert!(
            second.rates.is_empty() && second.p50_ms.is_none(),
            "{second:?}"
        );
        assert_eq!(second.outcomes["accepted"], 15);
        progress.outcomes[Outcome::Accepted.index()].store(16, Relaxed);
        progress.latency.record(Duration::from_millis(200));
        let third = sampler.tick();
        assert_eq!(third.rates.len(), 1);
        assert!(
            third.p50_ms.unwrap() >= 200.0,
            "only the new answer: {third:?}"
        );
    }
}
