//! What a storm may be told, on the command line or in a scenario's `[storm]`
//! table: one struct for both, every setting optional, so "not said" is
//! `None` wherever it was not said. [`StormOptions::over`] lays the command
//! line over the file; the defaults come in only when the storm is planned
//! ([`super::StormPlan`]).

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::report::Threshold;
use super::workload::{Quantities, Schedule};

/// The storm's settings: `flashtix storm`'s flags, or a scenario's `[storm]`
/// table under the same names.
#[derive(Debug, Clone, Default, PartialEq, clap::Args, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct StormOptions {
    /// Open model: sends per second, constant (default 1000/s)
    #[arg(long, group = "model")]
    pub rate: Option<f64>,
    /// Open model: the rate moves from FROM to TO over DURATION (like 100:5000:10s)
    #[arg(long, group = "model", value_name = "FROM:TO:DURATION", value_parser = flag::<Schedule>)]
    #[serde(deserialize_with = "parsed")]
    pub ramp: Option<Schedule>,
    /// Open model: every buyer (--buyers) within this window; 0 fires them all at
    /// once, after the connections are warm
    #[arg(long, group = "model", value_name = "WINDOW", value_parser = duration)]
    #[serde(deserialize_with = "flashtix_model::duration::deserialize_option")]
    pub spike: Option<Duration>,
    /// Closed model: this many requests in flight, each sent when one ends
    /// (measures service time only)
    #[arg(long, group = "model")]
    pub concurrency: Option<usize>,
    /// Stop sending after this long (like 30s, 1m30s)
    #[arg(long, value_parser = duration)]
    #[serde(deserialize_with = "flashtix_model::duration::deserialize_option")]
    pub duration: Option<Duration>,
    /// Stop after this many purchases
    #[arg(long)]
    pub buyers: Option<u64>,
    /// Open model: at most this many requests open at once; sends beyond it wait
    /// (and the wait counts in their latency) [default: 1024]
    #[arg(long)]
    pub max_inflight: Option<usize>,

    /// Fixes every buyer, event, quantity and duplicate: the same seed, the
    /// same storm [default: 1]
    #[arg(long)]
    pub seed: Option<u64>,
    /// Tickets per purchase: a number, or weights like 1:70,2:20,4:10 [default: 1]
    #[arg(long, value_parser = flag::<Quantities>)]
    #[serde(deserialize_with = "parsed")]
    pub quantity: Option<Quantities>,
    /// Share of purchases sent twice at once with the same key (double
    /// clicks), 0 to 1 [default: 0]
    #[arg(long)]
    pub duplicates: Option<f64>,
    /// Share of purchases whose buyer asks again, same key and body, a second
    /// after a definite answer (a page refreshed: was I sold a ticket?), 0 to
    /// 1 [default: 0]
    #[arg(long)]
    pub revisit: Option<f64>,
    /// On a seated event: share of buyers who, told their seats were taken,
    /// ask for the zone's best available instead of giving up, 0 to 1
    /// [default: 0.5]
    #[arg(long)]
    pub seat_retry: Option<f64>,
    /// Tries again (same key, growing pause) after a timeout, a connection
    /// error or a 5xx [default: 0]
    #[arg(long)]
    pub retries: Option<u32>,
    /// How long an attempt may take before it counts as a timeout [default: 10s]
    #[arg(long, value_parser = duration)]
    #[serde(deserialize_with = "flashtix_model::duration::deserialize_option")]
    pub timeout: Option<Duration>,
    /// How long to wait, after the storm, for every order to settle [default: 60s]
    #[arg(long, value_parser = duration)]
    #[serde(deserialize_with = "flashtix_model::duration::deserialize_option")]
    pub settle: Option<Duration>,
    /// A service level to meet, like 'p99<50ms', 'accepted_rate>5000',
    /// 'error_rate<0.1%' (repeatable); a miss exits 3
    #[arg(long = "threshold", value_parser = flag::<Threshold>)]
    #[serde(rename = "threshold", deserialize_with = "parsed_list")]
    pub thresholds: Vec<Threshold>,
}

fn duration(text: &str) -> Result<Duration, String> {
    flashtix_model::duration::parse(text)
}

/// A setting written as text and read into its type where it comes in, by
/// the same parser for the flag and the scenario file.
pub trait Parse: Sized {
    fn parse(text: &str) -> anyhow::Result<Self>;
}

impl Parse for Schedule {
    fn parse(text: &str) -> anyhow::Result<Self> {
        Schedule::ramp(text)
    }
}

impl Parse for Quantities {
    fn parse(text: &str) -> anyhow::Result<Self> {
        Quantities::parse(text)
    }
}

impl Parse for Threshold {
    fn parse(text: &str) -> anyhow::Result<Self> {
        Threshold::parse(text)
    }
}

/// For clap: a flag read by its type's parser, the error with every cause
/// (clap prints an error's outermost line only).
pub fn flag<T: Parse>(text: &str) -> Result<T, String> {
    T::parse(text).map_err(|error| format!("{error:#}"))
}

/// For serde: an optional setting written as text.
fn parsed<'de, D: Deserializer<'de>, T: Parse>(from: D) -> Result<Option<T>, D::Error> {
    let text = String::deserialize(from)?;
    T::parse(&text)
        .map(Some)
        .map_err(|error| serde::de::Error::custom(format!("{error:#}")))
}

/// For serde: a list of settings written as text.
fn parsed_list<'de, D: Deserializer<'de>, T: Parse>(from: D) -> Result<Vec<T>, D::Error> {
    Vec::<String>::deserialize(from)?
        .iter()
        .map(|text| T::parse(text).map_err(|error| serde::de::Error::custom(format!("{error:#}"))))
        .collect()
}

impl StormOptions {
    /// How many of rate, ramp, spike and concurrency it names.
    pub fn models(&self) -> usize {
        [
            self.rate.is_some(),
            self.ramp.is_some(),
            self.spike.is_some(),
            self.concurrency.is_some(),
        ]
        .into_iter()
        .filter(|&named| named)
        .count()
    }

    /// How long a storm of these settings sends, as far as they tell: its
    /// duration, or its buyers at its constant rate, or its spike window (the
    /// shortest, when they say more than one). `None` when they cannot tell
    /// (a ramp, or a closed model with no duration).
    pub fn sending_for(&self) -> Option<Duration> {
        let by_buyers = match (self.buyers, self.rate, self.spike) {
            (Some(buyers), Some(rate), _) if rate > 0.0 => {
                Some(Duration::from_secs_f64(buyers as f64 / rate))
            }
            (Some(_), _, Some(spike)) => Some(spike),
            _ => None,
        };
        match (self.duration, by_buyers) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// These settings laid over `under` (a scenario's): what these say wins,
    /// the rest comes from `under`. The model (rate, ramp, spike or
    /// concurrency) is taken whole from one side.
    pub fn over(self, under: Self) -> Self {
        let model = if self.models() > 0 { &self } else { &under };
        Self {
            rate: model.rate,
            ramp: model.ramp,
            spike: model.spike,
            concurrency: model.concurrency,
            duration: self.duration.or(under.duration),
            buyers: self.buyers.or(under.buyers),
            max_inflight: self.max_inflight.or(under.max_inflight),
            seed: self.seed.or(under.seed),
            quantity: self.quantity.or(under.quantity),
            duplicates: self.duplicates.or(under.duplicates),
            revisit: self.revisit.or(under.revisit),
            seat_retry: self.seat_retry.or(under.seat_retry),
            retries: self.retries.or(under.retries),
            timeout: self.timeout.or(under.timeout),
            settle: self.settle.or(under.settle),
            thresholds: if self.thresholds.is_empty() {
                under.thresholds
            } else {
                self.thresholds
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::parse_flags;

    const FILE: &str = r#"
        spike = "0s"
        buyers = 500
        duplicates = 0.3
        timeout = "1m30s"
        threshold = ["p99<1s"]
    "#;

    #[test]
    fn how_long_a_storm_sends_is_told_by_what_ends_it_first() {
        let sending = |text: &str| toml::from_str::<StormOptions>(text).unwrap().sending_for();
        let s = Duration::from_secs;
        assert_eq!(sending("rate = 100.0\nbuyers = 500"), Some(s(5)));
        assert_eq!(
            sending("rate = 100.0\nbuyers = 500\nduration = \"2s\""),
            Some(s(2))
        );
        assert_eq!(sending("spike = \"3s\"\nbuyers = 500"), Some(s(3)));
        assert_eq!(sending("concurrency = 8\nduration = \"1m\""), Some(s(60)));
        assert_eq!(sending("concurrency = 8\nbuyers = 500"), None);
        assert_eq!(sending("ramp = \"1:100:10s\""), None);
    }

    #[test]
    fn the_file_fills_what_the_flags_left_out() {
        let file: StormOptions = toml::from_str(FILE).unwrap();
        let flags: StormOptions = parse_flags(&["--buyers", "7", "--settle", "1h"]).unwrap();
        let options = flags.over(file);
        assert_eq!(options.spike, Some(Duration::ZERO));
        assert_eq!(options.buyers, Some(7), "the flag wins");
        assert_eq!(options.duplicates, Some(0.3));
        assert_eq!(options.timeout, Some(Duration::from_secs(90)));
        assert_eq!(options.settle, Some(Duration::from_secs(3600)));
        assert_eq!(options.thresholds, [Threshold::parse("p99<1s").unwrap()]);
        assert_eq!(
            options.quantity, None,
            "said by neither: the default, later"
        );
    }

    #[test]
    fn a_model_flag_replaces_the_files_model() {
        let file: StormOptions = toml::from_str(FILE).unwrap();
        let flags: StormOptions = parse_flags(&["--rate", "50"]).unwrap();
        let options = flags.over(file);
        assert_eq!((options.rate, options.spike), (Some(50.0), None));
        assert_eq!(options.buyers, Some(500));
    }

    #[test]
    fn flags_and_file_take_the_same_durations() {
        let flags: StormOptions = parse_flags(&["--spike", "1m30s"]).unwrap();
        let file: StormOptions = toml::from_str("spike = \"1m30s\"").unwrap();
        assert_eq!(flags, file);
        let error = parse_flags::<StormOptions>(&["--timeout", "soon"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("not a duration"), "{error}");
    }
}
