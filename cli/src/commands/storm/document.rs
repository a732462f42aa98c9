//! The storm's results as one typed document: what `--json` writes, what the
//! HTML report draws, and what `flashtix merge` reads back. Every figure a
//! person reads is here by name; `measures` carries the histograms and counts
//! they came from, losslessly, so that documents can be merged.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use flashtix_model::history::Outcome;
use flashtix_model::seating::ZoneMap;
use flashtix_server::invariants::Report;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::engine::Shard;
use super::fairness::EventFairness;
use super::record::{millis_at, Recorded};

#[derive(Debug, Serialize, Deserialize)]
pub struct StormDocument {
    /// "open (…)" or "closed (service time)", or what merged documents said.
    pub model: String,
    /// Plain requests (`--raw`): "accepted" then means any 2xx.
    #[serde(default)]
    pub raw: bool,
    pub started_at: DateTime<Utc>,
    /// From the start to the last answer.
    pub elapsed_seconds: f64,
    /// The shard this storm was, if it was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<Shard>,
    /// How many documents `flashtix merge` made this one of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_from: Option<usize>,
    pub rates: Rates,
    pub sends: u64,
    /// Sends more than 1 ms behind their intended time.
    pub late_sends: u64,
    pub lateness_ms: Percentiles,
    pub schedule: ScheduleKept,
    pub attempts: u64,
    /// The storm process's CPU time (user and system) from the start to the
    /// last answer; of merged documents, the sum (absent if one lacks it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator_cpu_seconds: Option<f64>,
    /// Attempts by outcome, every outcome named.
    pub outcomes: BTreeMap<String, u64>,
    /// Per outcome that happened.
    pub latency_from_intended_ms: BTreeMap<String, Percentiles>,
    pub service_time_ms: BTreeMap<String, Percentiles>,
    pub latency_from_intended_all_ms: Percentiles,
    /// One row a second, by when answers came.
    pub seconds: Vec<SecondRow>,
    /// Each zone of each seated event after the storm.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seating: Vec<ZoneSales>,
    /// Each event's sell-out and fairness (needs `--history`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fairness: Vec<EventFairness>,
    /// When the storm checked the sale: how long it took to settle (null:
    /// it did not within the limit).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub settle_seconds: Option<Option<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<Report>,
    pub thresholds: Vec<Judged>,
    /// The histograms and counts, losslessly (for `flashtix merge`).
    pub measures: Recorded,
}

/// A key that is there is `Some`, even as null (here: not settled).
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

impl StormDocument {
    /// Attempts that ended so.
    pub fn count(&self, outcome: Outcome) -> u64 {
        self.outcomes.get(outcome.name()).copied().unwrap_or(0)
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Rates {
    /// What the schedule asked for at its peak, if it asked.
    pub target: Option<f64>,
    pub sent: f64,
    pub completed: f64,
    pub accepted: f64,
}

/// Whether the sends went out when the schedule said.
#[derive(Debug, Serialize, Deserialize)]
pub struct ScheduleKept {
    pub kept: bool,
    /// Sends `behind_after_ms` or more late.
    pub behind_sends: u64,
    pub behind_after_ms: u64,
    /// Of those, sends in a stretch of late sends in which one had waited
    /// for a `--max-inflight` slot: late because the answers were slow.
    pub slot_waits: u64,
    /// What the tables said, when the schedule was not kept.
    pub warning: Option<String>,
}

/// A histogram's figures, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    #[serde(rename = "p99.9")]
    pub p99_9: f64,
    pub max: f64,
    pub count: u64,
}

impl Percentiles {
    /// The percentiles every latency table gives, with their names.
    pub const NAMED: [(&str, f64); 5] = [
        ("p50", 50.0),
        ("p90", 90.0),
        ("p99", 99.0),
        ("p99.9", 99.9),
        ("max", 100.0),
    ];

    pub fn of(histogram: &Histogram<u64>) -> Self {
        Self {
            p50: millis_at(histogram, 50.0),
            p90: millis_at(histogram, 90.0),
            p99: millis_at(histogram, 99.0),
            p99_9: millis_at(histogram, 99.9),
            max: millis_at(histogram, 100.0),
            count: histogram.len(),
        }
    }

    /// The figures in the order of [`Self::NAMED`].
    pub fn values(&self) -> [f64; 5] {
        [self.p50, self.p90, self.p99, self.p99_9, self.max]
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SecondRow {
    pub second: usize,
    pub sent: u64,
    /// Answers by outcome, every outcome named.
    pub outcomes: BTreeMap<String, u64>,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl SecondRow {
    pub fn count(&self, outcome: Outcome) -> u64 {
        self.outcomes.get(outcome.name()).copied().unwrap_or(0)
    }

    pub fn answers(&self) -> u64 {
        self.outcomes.values().sum()
    }
}

/// One zone after the storm: its seat map, and what the storm sold in it.
#[derive(Debug, Serialize, Deserialize)]
pub struct ZoneSales {
    pub event_id: i64,
    #[serde(flatten)]
    pub zone: ZoneMap,
    pub orders_in_storm: u64,
    pub tickets_in_storm: u64,
    /// When its last seat sold, if none was left after the storm.
    pub sold_out_seconds: Option<f64>,
    /// Each seat the storm sold: when its acceptance came, from the start.
    pub sold_at_seconds: BTreeMap<String, f64>,
}

/// One `--threshold`, judged.
#[derive(Debug, Serialize, Deserialize)]
pub struct Judged {
    pub threshold: String,
    pub value: f64,
    pub met: bool,
}
