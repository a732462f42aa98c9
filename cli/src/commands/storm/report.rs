//! A storm's results: the summary figures, the tables, the JSON document and
//! the `--threshold` verdicts.

use anyhow::{bail, Context};
use comfy_table::Table;
use flashtix_model::history::Outcome;
use flashtix_model::seating::zone_of;
use flashtix_model::seating::ZoneMap;
use hdrhistogram::Histogram;
use serde_json::Value;

use std::collections::BTreeMap;

use super::document::{Percentiles, Rates, ScheduleKept, SecondRow, StormDocument, ZoneSales};
use super::engine::Storm;
use super::fairness::EventFairness;
use super::record::{
    millis_at, ClassStats, Recorded, Recorder, BEHIND_AFTER, BEHIND_SHARE, LATE_AFTER,
};
use crate::output::table;
use crate::say;

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
    /// latencies, for people.
    pub fn print(&self) {
        say!("{}", self.rates_table());
        if let Some(warning) = self.schedule_warning() {
            say!("{warning}");
        }
        if let Some(cpu) = self.generator_cpu() {
            say!("{cpu}");
        }
        say!("{}", self.outcomes_table());
        say!("{}", self.latency_table());
    }

    fn class_name(&self, outcome: Outcome) -> &'static str {
        match outcome {
            Outcome::Accepted if self.raw => "ok (2xx)",
            other => other.name(),
        }
    }

    pub fn outcomes_table(&self) -> Table {
        let recorder = &self.storm.recorder;
        let mut table = table(&["outcome", "attempts", "share", "per second"]);
        let total = recorder.answers().max(1) as f64;
        for outcome in Outcome::ALL {
            let count = recorder.count(outcome);
            if count == 0 {
                continue;
            }
            table.add_row(vec![
                self.class_name(outcome).to_string(),
                count.to_string(),
                format!("{:.1}%", count as f64 * 100.0 / total),
                format!("{:.0}", self.rate_of(outcome)),
            ]);
        }
        table.add_row(vec![
            "all".to_string(),
            recorder.answers().to_string(),
            "100%".into(),
            format!("{:.0}", self.completed_rate()),
        ]);
        table
    }

    pub fn rates_table(&self) -> Table {
        let recorder = &self.storm.recorder;
        let mut table = table(&[
            "model",
            "target/s",
            "sent/s",
            "completed/s",
            "late sends",
            "lateness p50 / p99 / max",
        ]);
        table.add_row(vec![
            self.model.clone(),
            self.target_rate
                .map_or("-".into(), |rate| format!("{rate:.0}")),
            format!("{:.0}", self.sent_rate()),
            format!("{:.0}", self.completed_rate()),
            format!(
                "{} of {} (> {} ms)",
                recorder.late_sends,
                recorder.sends,
                LATE_AFTER.as_millis()
            ),
            format!(
                "{:.2} / {:.2} / {:.2} ms",
                millis_at(&recorder.lateness, 50.0),
                millis_at(&recorder.lateness, 99.0),
                millis_at(&recorder.lateness, 100.0)
            ),
        ]);
        table
    }

    /// Latency per class, from the intended send time and from the actual send.
    pub fn latency_table(&self) -> Table {
        let mut header = vec!["outcome", "measured from"];
        header.extend(Percentiles::NAMED.iter().map(|(name, _)| *name));
        let mut table = table(&header);
        for outcome in Outcome::ALL {
            let class = &self.storm.recorder.classes[outcome.index()];
            if class.count == 0 {
                continue;
            }
            for (from, histogram) in [
                ("intended send", &class.from_intended),
                ("actual send", &class.service),
            ] {
                let mut row = vec![self.class_name(outcome).to_string(), from.to_string()];
                row.extend(
                    Percentiles::NAMED
                        .iter()
                        .map(|(_, p)| format!("{:.2} ms", millis_at(histogram, *p))),
                );
                table.add_row(row);
            }
        }
        table
    }

    /// The storm's document: every figure above, and the measures behind
    /// them. What only the caller knows (shard, seating, fairness, check,
    /// thresholds) it fills in after.
    pub fn document(&self) -> StormDocument {
        let recorder = &self.storm.recorder;
        let named = |counts: &dyn Fn(Outcome) -> u64| -> BTreeMap<String, u64> {
            Outcome::ALL
                .iter()
                .map(|o| (o.name().to_owned(), counts(*o)))
                .collect()
        };
        let per_class = |histogram: fn(&ClassStats) -> &Histogram<u64>| {
            Outcome::ALL
                .iter()
                .filter(|o| recorder.count(**o) > 0)
                .map(|o| {
                    let class = &recorder.classes[o.index()];
                    (o.name().to_owned(), Percentiles::of(histogram(class)))
                })
                .collect()
        };
        StormDocument {
            model: self.model.clone(),
            raw: self.raw,
            started_at: self.storm.started_at,
            elapsed_seconds: self.storm.elapsed.as_secs_f64(),
            shard: None,
            merged_from: None,
            rates: Rates {
                target: self.target_rate,
                sent: self.sent_rate(),
                completed: self.completed_rate(),
                accepted: self.rate_of(Outcome::Accepted),
            },
            sends: recorder.sends,
            late_sends: recorder.late_sends,
            lateness_ms: Percentiles::of(&recorder.lateness),
            schedule: ScheduleKept {
                kept: self.kept_schedule(),
                behind_sends: self.behind_sends(),
                behind_after_ms: BEHIND_AFTER.as_millis() as u64,
                slot_waits: recorder.slot_waits,
                warning: self.schedule_warning(),
            },
            attempts: recorder.answers(),
            generator_cpu_seconds: self.storm.cpu.map(|cpu| cpu.as_secs_f64()),
            outcomes: named(&|o| recorder.count(o)),
            latency_from_intended_ms: per_class(|class| &class.from_intended),
            service_time_ms: per_class(|class| &class.service),
            latency_from_intended_all_ms: Percentiles::of(&self.all_from_intended),
            seconds: recorder
                .seconds
                .iter()
                .enumerate()
                .map(|(second, s)| SecondRow {
                    second,
                    sent: s.sent,
                    outcomes: named(&|o| s.outcomes[o.index()]),
                    p50_ms: millis_at(&s.from_intended, 50.0),
                    p99_ms: millis_at(&s.from_intended, 99.0),
                })
                .collect(),
            seating: Vec::new(),
            fairness: Vec::new(),
            settle_seconds: None,
            check: None,
            thresholds: Vec::new(),
            measures: Recorded::from(recorder),
        }
    }
}

/// Per zone of each seated event: its seat map after the storm (`maps`, by
/// event, as the API gives them), what the storm's buyers were sold there,
/// when the zone sold out (the last acceptance in it, if nothing was left
/// after the storm) and when each seat was sold, in seconds from the start.
pub fn seating(recorder: &Recorder, maps: &BTreeMap<i64, Value>) -> anyhow::Result<Vec<ZoneSales>> {
    let mut zones = Vec::new();
    for (&event_id, map) in maps {
        let map: Vec<ZoneMap> = serde_json::from_value(map["zones"].clone())
            .with_context(|| format!("the seat map of event {event_id}"))?;
        for zone in map {
            let sales = recorder
                .zones
                .get(&(event_id, zone.name.clone()))
                .copied()
                .unwrap_or_default();
            let sold_out =
                (zone.available == 0 && sales.orders > 0).then_some(sales.last.as_secs_f64());
            let sold_at_seconds = recorder
                .seats_sold
                .iter()
                .filter(|((event, seat), _)| {
                    *event == event_id && zone_of(seat) == Some(zone.name.as_str())
                })
                .map(|((_, seat), at)| (seat.clone(), at.as_secs_f64()))
                .collect();
            zones.push(ZoneSales {
                event_id,
                zone,
                orders_in_storm: sales.orders,
                tickets_in_storm: sales.tickets,
                sold_out_seconds: sold_out,
                sold_at_seconds,
            });
        }
    }
    Ok(zones)
}

/// The document's per-second series as CSV: one row a second of the storm
/// (by when answers came): sends, answers per outcome, p50 and p99 (ms) from
/// the intended send.
pub fn seconds_csv(seconds: &[SecondRow]) -> String {
    let mut text = String::from("second,sent");
    for outcome in Outcome::ALL {
        text += ",";
        text += outcome.name();
    }
    text += ",p50_ms,p99_ms\n";
    for row in seconds {
        text += &format!("{},{}", row.second, row.sent);
        for outcome in Outcome::ALL {
            text += &format!(",{}", row.count(outcome));
        }
        text += &format!(",{:.3},{:.3}\n", row.p50_ms, row.p99_ms);
    }
    text
}

/// The columns of the sell-out and fairness table.
pub const FAIRNESS_HEADER: [&str; 7] = [
    "event",
    "purchases",
    "won",
    "first arrivals that won",
    "arrival→win rank correlation",
    "sold out at",
    "won/s while stock lasted",
];

/// One event's row of the sell-out and fairness table, as the terminal and
/// the report show it.
pub fn fairness_cells(event: &EventFairness) -> [String; 7] {
    [
        event.event_id.to_string(),
        event.purchases.to_string(),
        event.winners.to_string(),
        format!(
            "{} of the first {}",
            event.first_arrivals_won, event.winners
        ),
        event
            .rank_correlation
            .map_or("-".into(), |r| format!("{r:+.2}")),
        event
            .sold_out_seconds
            .map_or("-".into(), |s| format!("{s:.2} s")),
        event
            .accepted_per_second_while_stock_lasted
            .map_or("-".into(), |r| format!("{r:.0}")),
    ]
}

/// Each event's sell-out and fairness figures as a table.
pub fn fairness_table(events: &[EventFairness]) -> Table {
    let mut table = table(&FAIRNESS_HEADER);
    for event in events {
        table.add_row(fairness_cells(event));
    }
    table
}

/// The zones of [`seating`] as a table.
pub fn seating_table(zones: &[ZoneSales]) -> Table {
    let mut table = table(&[
        "event",
        "zone",
        "kind",
        "places",
        "held",
        "sold",
        "returning",
        "left",
        "storm orders",
        "sold out at",
    ]);
    for sales in zones {
        let zone = &sales.zone;
        table.add_row(vec![
            sales.event_id.to_string(),
            zone.name.clone(),
            zone.kind.clone(),
            zone.capacity.to_string(),
            zone.held.to_string(),
            zone.sold.to_string(),
            zone.returning.to_string(),
            zone.available.to_string(),
            sales.orders_in_storm.to_string(),
            sales
                .sold_out_seconds
                .map_or("-".to_owned(), |s| format!("{s:.2} s")),
        ]);
    }
    table
}

/// A histogram of microseconds as a `.hgrm` percentile distribution in
/// milliseconds (HdrHistogram's text format, five steps per halving), the
/// format HdrHistogram's plotter reads.
pub fn hgrm(histogram: &Histogram<u64>) -> String {
    let ms = |micros: f64| micros / 1000.0;
    let mut text = format!(
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0;
    for step in histogram.iter_quantiles(5) {
        total += step.count_since_last_iteration();
        let quantile = step.quantile_iterated_to();
        let value = ms(step.value_iterated_to() as f64);
        if quantile < 1.0 {
            text += &format!(
                "{value:12.3} {quantile:2.12} {total:10} {:14.2}\n",
                1.0 / (1.0 - quantile)
            );
        } else {
            text += &format!("{value:12.3} {quantile:2.12} {total:10}\n");
        }
    }
    text += &format!(
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]\n\
         #[Max     = {:12.3}, Total count    = {:12}]\n",
        ms(histogram.mean()),
        ms(histogram.stdev()),
        ms(histogram.max() as f64),
        histogram.len(),
    );
    text
}

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

    #[test]
    fn hgrm_lists_the_percentiles_up_to_the_max_in_milliseconds() {
        let mut histogram = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for ms in 1..=1000 {
            histogram.record(ms * 1000).unwrap();
        }
        let text = hgrm(&histogram);
        let rows: Vec<(f64, f64, u64)> = text
            .lines()
            .filter(|line| !line.is_empty() && !line.starts_with('#') && !line.contains("Value"))
            .map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                (
                    fields[0].parse().unwrap(),
                    fields[1].parse().unwrap(),
                    fields[2].parse().unwrap(),
                )
            })
            .collect();
        assert!(rows
            .windows(2)
            .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1 && w[0].2 <= w[1].2));
        let median = rows.iter().find(|r| r.1 >= 0.5).unwrap();
        assert!((499.0..=501.0).contains(&median.0), "{median:?}");
        let last = rows.last().unwrap();
        assert_eq!((last.1, last.2), (1.0, 1000));
        assert!((999.0..=1001.0).contains(&last.0), "{last:?}");
        assert!(text.contains("Total count    =         1000"), "{text}");
    }

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
