//! `--threshold`: a service level the storm must meet, read and judged.

use anyhow::{bail, Context};
use flashtix_model::history::Outcome;

use super::super::record::millis_at;

use super::Summary;

/// A service level the storm must meet: `p99<50ms`, `accepted_rate>5000`,
/// `error_rate<0.1%`.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub text: String,
    metric: Metric,
    above: bool,
    inclusive: bool,
    limit: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Metric {
    /// Latency from the intended send time over every attempt, in ms.
    Latency(f64),
    Rate(Rate),
    /// A share of all attempts, 0 to 1.
    ErrorShare,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Rate {
    Sent,
    Completed,
    Outcome(Outcome),
}

impl Threshold {
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let at = text
            .find(['<', '>'])
            .with_context(|| format!("threshold {text:?}: expected NAME<VALUE or NAME>VALUE"))?;
        let (name, rest) = text.split_at(at);
        let above = rest.starts_with('>');
        let inclusive = rest[1..].starts_with('=');
        let value = rest[if inclusive { 2 } else { 1 }..].trim();
        let name = name.trim();
        let metric = match name {
            "p50" => Metric::Latency(50.0),
            "p90" => Metric::Latency(90.0),
            "p99" => Metric::Latency(99.0),
            "p99.9" => Metric::Latency(99.9),
            "max" => Metric::Latency(100.0),
            "error_rate" => Metric::ErrorShare,
            "sent_rate" => Metric::Rate(Rate::Sent),
            "completed_rate" => Metric::Rate(Rate::Completed),
            other => match other
                .strip_suffix("_rate")
                .and_then(Outcome::named)
            {
                Some(outcome) => Metric::Rate(Rate::Outcome(outcome)),
                None => bail!(
                    "threshold {text:?}: unknown measure {name:?} (p50, p90, p99, p99.9, max, \
                     error_rate, sent_rate, completed_rate, or an outcome's rate like accepted_rate)"
                ),
            },
        };
        let limit = match metric {
            Metric::Latency(_) => latency_millis(value),
            Metric::ErrorShare => share(value),
            Metric::Rate(_) => value.parse::<f64>().ok(),
        }
        .filter(|v| v.is_finite() && *v >= 0.0)
        .with_context(|| format!("threshold {text:?}: {value:?} is not a valid limit"))?;
        Ok(Self {
            text: text.to_string(),
            metric,
            above,
            inclusive,
            limit,
        })
    }

    /// The measured value, and whether it meets the threshold.
    pub fn judge(&self, summary: &Summary) -> (f64, bool) {
        let value = match self.metric {
            Metric::Latency(p) => millis_at(&summary.all_from_intended, p),
            Metric::ErrorShare => summary.error_share(),
            Metric::Rate(Rate::Sent) => summary.sent_rate(),
            Metric::Rate(Rate::Completed) => summary.completed_rate(),
            Metric::Rate(Rate::Outcome(outcome)) => summary.rate_of(outcome),
        };
        let met = match (self.above, self.inclusive) {
            (true, true) => value >= self.limit,
            (true, false) => value > self.limit,
            (false, true) => value <= self.limit,
            (false, false) => value < self.limit,
        };
        (value, met)
    }

    /// The measured value as the threshold's own unit shows it.
    pub fn show(&self, value: f64) -> String {
        match self.metric {
            Metric::Latency(_) => format!("{value:.2}ms"),
            Metric::ErrorShare => format!("{:.3}%", value * 100.0),
            Metric::Rate(_) => format!("{value:.0}/s"),
        }
    }
}

fn latency_millis(text: &str) -> Option<f64> {
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (text, 1.0)
    };
    number.trim().parse::<f64>().ok().map(|n| n * scale)
}

fn share(text: &str) -> Option<f64> {
    match text.strip_suffix('%') {
        Some(percent) => percent.trim().parse::<f64>().ok().map(|p| p / 100.0),
        None => text.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_read_their_units() {
        let p99 = Threshold::parse("p99<50ms").unwrap();
        assert_eq!(
            (p99.metric, p99.above, p99.limit),
            (Metric::Latency(99.0), false, 50.0)
        );
        assert_eq!(Threshold::parse("max<=1.5s").unwrap().limit, 1500.0);
        let errors = Threshold::parse("error_rate<0.1%").unwrap();
        assert!((errors.limit - 0.001).abs() < 1e-12);
        let accepted = Threshold::parse("accepted_rate>5000").unwrap();
        assert_eq!(
            accepted.metric,
            Metric::Rate(Rate::Outcome(Outcome::Accepted))
        );
        assert!(accepted.above);
        assert!(Threshold::parse("p98<5ms").is_err());
        assert!(Threshold::parse("p99=5ms").is_err());
        assert!(Threshold::parse("p99<fast").is_err());
        assert!(Threshold::parse("sold_out_rate>-1").is_err());
    }
}
