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

use std::path::Path;

use anyhow::{bail, Context};
use serde::Deserialize;

use super::StormOptions;
use crate::commands::reset::SaleArgs;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// One line saying what the scenario is for.
    pub description: Option<String>,
    /// The sale `--reset` seeds; `reset`'s defaults when absent.
    pub sale: Option<SaleArgs>,
    /// The storm's settings, named like its flags.
    #[serde(default)]
    pub storm: StormOptions,
}

impl Scenario {
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading scenario {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("scenario {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        toml::from_str::<Self>(text)?.checked()
    }

    /// A scenario of a `[sale]` and a `[storm]` table read elsewhere (a
    /// drill's), held to what a scenario file is.
    pub fn of(sale: &toml::Table, storm: &toml::Table) -> anyhow::Result<Self> {
        Self {
            description: None,
            sale: Some(sale.clone().try_into().context("[sale]")?),
            storm: storm.clone().try_into().context("[storm]")?,
        }
        .checked()
    }

    fn checked(self) -> anyhow::Result<Self> {
        if self.storm.models() > 1 {
            bail!("[storm] names more than one of rate, ramp, spike and concurrency; keep one");
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::parse_flags;
    use crate::commands::storm::{StormArgs, StormPlan};

    const FILE: &str = r#"
        description = "a test"
        [sale]
        tickets = 100
        [storm]
        spike = "0s"
        buyers = 500
    "#;

    #[test]
    fn the_sale_takes_resets_defaults_and_the_storm_its_settings() {
        let scenario = Scenario::parse(FILE).unwrap();
        let sale = scenario.sale.unwrap();
        assert_eq!(
            (sale.tickets, sale.max_per_user),
            (100, 4),
            "reset's defaults"
        );
        assert_eq!(scenario.storm.buyers, Some(500));
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
        let late = Scenario::parse("[storm]\nspike = \"soon\"").unwrap_err();
        assert!(format!("{late:#}").contains("not a duration"), "{late:#}");
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
                let args: StormArgs = parse_flags(&[]).unwrap();
                StormPlan::new(&args, scenario.storm)
                    .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
                read += 1;
            }
        }
        assert!(read >= 4, "{read} scenarios in {}", dir.display());
    }
}
