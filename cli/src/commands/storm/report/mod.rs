//! A storm's results: the summary figures ([`Summary`]), printed as tables
//! (`tables`), written as the JSON document and the files
//! (`export`), and judged against `--threshold`s (`threshold`).

use flashtix_model::history::Outcome;
use hdrhistogram::Histogram;

use super::document::StormDocument;
use super::engine::Storm;
use super::record::{millis_at, BEHIND_AFTER, BEHIND_SHARE};
use crate::say;

mod export;
mod tables;
mod threshold;

pub use export::{hgrm, seating, seconds_csv};
pub use tables::{fairness_cells, fairness_table, seating_table, FAIRNESS_HEADER};
pub use threshold::Threshold;

/// The figures of one storm, as printed, written and judged.
pub struct Summary<'a> {
    pub storm: &'a Storm,
    /// "open (…)" or "closed (service time)".
    pub model: String,
    /// The rate the schedule asked for, if it asked for one.
    pub target_rate: Option<f64>,
    /// Raw requests, no buy semantics.
    pub raw: bool,
    /// Every attempt's latency from its intended send, all classes merged.
    pub all_from_intended: Histogram<u64>,
    /// Every attempt's service time, all classes merged.
    pub all_service: Histogram<u64>,
}

impl<'a> Summary<'a> {
    pub fn new(storm: &'a Storm, model: String, target_rate: Option<f64>, raw: bool) -> Self {
        Self {
            storm,
            model,
            target_rate,
            raw,
            all_from_intended: storm.recorder.all_from_intended(),
            all_service: storm.recorder.all_service(),
        }
    }

    fn seconds(&self) -> f64 {
        self.storm.elapsed.as_secs_f64().max(1e-9)
    }

    /// Sends per second, from the first send to the last.
    pub fn sent_rate(&self) -> f64 {
        let recorder = &self.storm.recorder;
        let span = recorder
            .last_send
            .saturating_sub(recorder.first_send.unwrap_or_default())
            .as_secs_f64();
        if span > 0.0 {
            (recorder.sends.saturating_sub(1)) as f64 / span
        } else {
            recorder.sends as f64
        }
    }

    pub fn completed_rate(&self) -> f64 {
        self.storm.recorder.answers() as f64 / self.seconds()
    }

    pub fn rate_of(&self, outcome: Outcome) -> f64 {
        self.storm.recorder.count(outcome) as f64 / self.seconds()
    }

    /// Errors, unreadable answers, timeouts and connection errors, as a share of all attempts.
    pub fn error_share(&self) -> f64 {
        let recorder = &self.storm.recorder;
        let failed: u64 = Outcome::ALL
            .into_iter()
            .filter(|o| o.is_failure())
            .map(|o| recorder.count(o))
            .sum();
        failed as f64 / recorder.answers().max(1) as f64
    }

    /// How many sends went out [`BEHIND_AFTER`] or more after their
    /// intended time.
    pub fn behind_sends(&self) -> u64 {
        let lateness = &self.storm.recorder.lateness;
        let from = BEHIND_AFTER.as_micros() as u64;
        if lateness.is_empty() || lateness.max() < from {
            return 0;
        }
        lateness.count_between(from, lateness.max())
    }

    /// Whether the sends went out when the schedule said (all but
    /// [`BEHIND_SHARE`] of them within [`BEHIND_AFTER`]).
    pub fn kept_schedule(&self) -> bool {
        self.behind_sends() as f64 <= BEHIND_SHARE * self.storm.recorder.sends as f64
    }

    /// What the storm itself cost this machine while it ran: its CPU time,
    /// and per attempt (the sale, on the same machine, had the rest).
    pub fn generator_cpu(&self) -> Option<String> {
        let cpu = self.storm.cpu?;
        let attempts = self.storm.recorder.answers().max(1);
        Some(format!(
            "storm's own CPU while sending: {:.2} s ({:.1} µs per attempt, {:.0}% of one core)",
            cpu.as_secs_f64(),
            cpu.as_secs_f64() * 1e6 / attempts as f64,
            cpu.as_secs_f64() * 100.0 / self.storm.elapsed.as_secs_f64().max(1e-3),
        ))
    }

    /// What to tell the operator when the storm fell behind its schedule:
    /// how many sends, how late, and why (a slot, or this machine).
    pub fn schedule_warning(&self) -> Option<String> {
        if self.kept_schedule() {
            return None;
        }
        let recorder = &self.storm.recorder;
        let behind = self.behind_sends();
        let cause = if recorder.slot_waits > 0 {
            format!(
                "{} were late while all --max-inflight requests were open (the answers were \
                 slow; raise it to keep sending), the rest for this machine",
                recorder.slot_waits
            )
        } else {
            "no send waited for a free slot: this machine could not send faster".to_owned()
        };
        Some(format!(
            "BEHIND SCHEDULE: {behind} of {} sends ({:.1}%) went out {} ms or more after \
             their intended time (p99 {:.1} ms, max {:.1} ms); sent {:.0}/s{}. {cause}. \
             Latency from the intended send includes that delay: send from more machines, \
             or ask for a lower rate.",
            recorder.sends,
            behind as f64 * 100.0 / recorder.sends.max(1) as f64,
            BEHIND_AFTER.as_millis(),
            millis_at(&recorder.lateness, 99.0),
            millis_at(&recorder.lateness, 100.0),
            self.sent_rate(),
            self.target_rate
                .map_or(String::new(), |rate| format!(" of {rate:.0}/s asked")),
        ))
    }

    /// The rates, the schedule's warning if any, the outcomes and the
    /// latencies (the `document`'s), for people.
    pub fn print(&self, document: &StormDocument) {
        say!("{}", self.rates_table());
        if let Some(warning) = self.schedule_warning() {
            say!("{warning}");
        }
        if let Some(cpu) = self.generator_cpu() {
            say!("{cpu}");
        }
        say!("{}", self.outcomes_table());
        say!("{}", self.latency_table(document));
    }
}
#[cfg(test)]
mod tests {
    use super::super::record::Recorder;
    use super::*;
    use std::time::Duration;

    /// A storm of 1,000 sends at 1,000/s asked, `late` of them 50 ms late,
    /// `waited` of those after waiting for a slot.
    fn storm_with(late: u64, waited: u64) -> Storm {
        let mut recorder = Recorder::default();
        for n in 0..1000 {
            let at = Duration::from_millis(n);
            let lateness = Duration::from_millis(if n < late { 50 } else { 0 });
            let slot_wait = if n < waited { lateness } else { Duration::ZERO };
            recorder.sent(at, lateness, slot_wait);
        }
        Storm {
            recorder,
            started_at: chrono::Utc::now(),
            elapsed: Duration::from_secs(1),
            cpu: Some(Duration::from_millis(30)),
        }
    }

    #[test]
    fn a_storm_that_fell_behind_its_schedule_says_how_far_and_why() {
        let on_time = storm_with(10, 0);
        let summary = Summary::new(&on_time, "open".into(), Some(1000.0), false);
        assert!(summary.kept_schedule(), "1% late is within the schedule");
        assert_eq!(summary.schedule_warning(), None);

        let behind = storm_with(200, 0);
        let summary = Summary::new(&behind, "open".into(), Some(1000.0), false);
        assert!(!summary.kept_schedule());
        let warning = summary.schedule_warning().unwrap();
        assert!(warning.contains("200 of 1000 sends (20.0%)"), "{warning}");
        assert!(warning.contains("of 1000/s asked"), "{warning}");
        assert!(
            warning.contains("this machine could not send faster"),
            "{warning}"
        );
        assert!(!summary.document().schedule.kept);

        let capped = storm_with(200, 150);
        let summary = Summary::new(&capped, "open".into(), Some(1000.0), false);
        let warning = summary.schedule_warning().unwrap();
        // The 50 late sends after the 150 that waited are of the same
        // stretch: queued behind them, late for the same slots.
        assert!(
            warning.contains("200 were late while all --max-inflight requests were open"),
            "{warning}"
        );
    }
}
