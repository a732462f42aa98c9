//! A storm's figures as files: the JSON document, the seat sales, the
//! per-second CSV and the HDR percentile distribution.

use anyhow::Context;
use flashtix_model::history::Outcome;
use flashtix_model::seating::zone_of;
use flashtix_model::seating::ZoneMap;
use hdrhistogram::Histogram;
use serde_json::Value;

use std::collections::BTreeMap;

use super::super::document::{
    Percentiles, Rates, ScheduleKept, SecondRow, StormDocument, ZoneSales,
};
use super::super::record::{millis_at, ClassStats, Recorded, Recorder, BEHIND_AFTER};

use super::Summary;

impl Summary<'_> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
