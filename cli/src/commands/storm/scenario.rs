//! Scenario files: a storm (and the sale it runs against) written down once, in
//! TOML, with the flags' own names. Flags given on the command line win.
//!
//! ```toml
//! description = "10,000 tickets, 200,000 buyers within 2 s"
//! [sale]                      # what `--reset` seeds; `flashtix reset`'s flags
//! tickets = 10000
//! [storm]                     # `flashtix storm`'s flags
//! spike = "2s"
//! buyers = 200000
//! quantity = "1:70,2:20,4:10"
//! threshold = ["error_rate<0.1%"]
//! ```

use std::collections::HashSet;
use std::path::Path;

use anyhow::{bail, Context};
use clap::parser::ValueSource;
use clap::ArgMatches;
use serde::Deserialize;

use super::StormArgs;
use crate::commands::reset::SaleArgs;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// One line saying what the scenario is for.
    pub description: Option<String>,
    /// The sale `--reset` seeds; `reset`'s defaults when absent.
    pub sale: Option<SaleArgs>,
    #[serde(default)]
    pub storm: StormFile,
}

/// The `[storm]` table: every key is optional and named like its flag.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StormFile {
    rate: Option<f64>,
    ramp: Option<String>,
    spike: Option<String>,
    concurrency: Option<usize>,
    duration: Option<String>,
    buyers: Option<u64>,
    max_inflight: Option<usize>,
    seed: Option<u64>,
    quantity: Option<String>,
    duplicates: Option<f64>,
    revisit: Option<f64>,
    seat_retry: Option<f64>,
    retries: Option<u32>,
    timeout: Option<String>,
    settle: Option<String>,
    threshold: Option<Vec<String>>,
}

impl StormFile {
    /// How many of rate, ramp, spike and concurrency it names.
    fn models(&self) -> usize {
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
}

impl Scenario {
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading scenario {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("scenario {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let scenario: Self = toml::from_str(text)?;
        if scenario.storm.models() > 1 {
            bail!("[storm] names more than one of rate, ramp, spike and concurrency; keep one");
        }
        Ok(scenario)
    }
}

/// The storm flags given on the command line or in the environment: those win
/// over the scenario file.
#[derive(Debug, Default)]
pub struct Given(HashSet<String>);

impl Given {
    pub fn from_matches(matches: &ArgMatches) -> Self {
        Self(
            matches
                .ids()
                .filter(|id| {
                    matches!(
                        matches.value_source(id.as_str()),
                        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
                    )
                })
                .map(|id| id.to_string())
                .collect(),
        )
    }

    /// Flags by their argument ids (the field names of [`StormArgs`]).
    pub fn of(ids: &[&str]) -> Self {
        Self(ids.iter().map(|id| id.to_string()).collect())
    }

    pub fn has(&self, id: &str) -> bool {
        self.0.contains(id)
    }
}

impl StormArgs {
    /// Fills in from the file whatever the command line did not say. The model
    /// (rate, ramp, spike or concurrency) is taken whole from one side.
    pub fn apply(&mut self, file: StormFile, given: &Given) {
        fn take<T>(given: &Given, id: &str, field: &mut T, value: Option<T>) {
            if let Some(value) = value.filter(|_| !given.has(id)) {
                *field = value;
            }
        }
        let model_given = ["rate", "ramp", "spike", "concurrency"]
            .iter()
            .any(|id| given.has(id));
        if file.models() > 0 && !model_given {
            self.rate = file.rate;
            self.ramp = file.ramp;
            self.spike = file.spike;
            self.concurrency = file.concurrency;
        }
        take(
            given,
            "duration",
            &mut self.duration,
            file.duration.map(Some),
        );
        take(given, "buyers", &mut self.buyers, file.buyers.map(Some));
        take(
            given,
            "max_inflight",
            &mut self.max_inflight,
            file.max_inflight,
        );
        take(given, "seed", &mut self.seed, file.seed);
        take(given, "quantity", &mut self.quantity, file.quantity);
        take(given, "duplicates", &mut self.duplicates, file.duplicates);
        take(given, "revisit", &mut self.revisit, file.revisit);
        take(given, "seat_retry", &mut self.seat_retry, file.seat_retry);
        take(given, "retries", &mut self.retries, file.retries);
        take(given, "timeout", &mut self.timeout, file.timeout);
        take(given, "settle", &mut self.settle, file.settle);
        take(given, "thresholds", &mut self.thresholds, file.threshold);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::parse_flags;

    const FILE: &str = r#"
        description = "a test"
        [sale]
        tickets = 100
        [storm]
        spike = "0s"
        buyers = 500
        duplicates = 0.3
        threshold = ["p99<1s"]
    "#;

    #[test]
    fn the_file_fills_what_the_flags_left_out() {
        let scenario = Scenario::parse(FILE).unwrap();
        let sale = scenario.sale.clone().unwrap();
        assert_eq!(
            (sale.tickets, sale.max_per_user),
            (100, 4),
            "reset's defaults"
        );
        let mut args: StormArgs = parse_flags(&["--buyers", "7"]).unwrap();
        args.apply(scenario.storm, &Given::of(&["buyers"]));
        assert_eq!(args.spike.as_deref(), Some("0s"));
        assert_eq!(args.buyers, Some(7), "the flag wins");
        assert_eq!(args.duplicates, 0.3);
        assert_eq!(args.thresholds, ["p99<1s"]);
        assert_eq!(args.quantity, "1", "the flag's default stays");
    }

    #[test]
    fn a_model_flag_replaces_the_files_model() {
        let scenario = Scenario::parse(FILE).unwrap();
        let mut args: StormArgs = parse_flags(&["--rate", "50"]).unwrap();
        args.apply(scenario.storm, &Given::of(&["rate"]));
        assert_eq!((args.rate, args.spike), (Some(50.0), None));
        assert_eq!(args.buyers, Some(500));
    }

    #[test]
    fn mistakes_in_the_file_are_named() {
        let unknown = Scenario::parse("[storm]\nbuyer = 5").unwrap_err();
        assert!(
            format!("{unknown:#}").contains("unknown field `buyer`"),
            "{unknown:#}"
        );
        let two = Scenario::parse("[storm]\nrate = 5.0\nspike = \"1s\"").unwrap_err();
        assert!(two.to_string().contains("more than one"), "{two}");
        let typed = Scenario::parse("[sale]\ntickets = \"many\"").unwrap_err();
        assert!(format!("{typed:#}").contains("tickets"), "{typed:#}");
    }

    #[test]
    fn the_shipped_scenarios_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
        let mut read = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let scenario = Scenario::read(&path).unwrap();
                assert!(scenario.description.is_some(), "{}", path.display());
                let mut args: StormArgs = parse_flags(&[]).unwrap();
                args.apply(scenario.storm, &Given::default());
                args.validate()
                    .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
                read += 1;
            }
        }
        assert!(read >= 4, "{read} scenarios in {}", dir.display());
    }
}
