//! A storm's figures as the tables people read.

use comfy_table::Table;
use flashtix_model::history::Outcome;

use super::super::document::{Percentiles, StormDocument, ZoneSales};
use super::super::fairness::EventFairness;
use super::super::record::{millis_at, LATE_AFTER};
use crate::output::table;

use super::Summary;

impl Summary<'_> {
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

    /// Latency per class, from the intended send time and from the actual
    /// send: the figures of the storm's document, as its JSON and report
    /// give them.
    pub fn latency_table(&self, document: &StormDocument) -> Table {
        let mut header = vec!["outcome", "measured from"];
        header.extend(Percentiles::NAMED.iter().map(|(name, _)| *name));
        let mut table = table(&header);
        for outcome in Outcome::ALL {
            let name = outcome.name();
            let measured = [
                ("intended send", document.latency_from_intended_ms.get(name)),
                ("actual send", document.service_time_ms.get(name)),
            ];
            for (from, percentiles) in measured {
                let Some(percentiles) = percentiles.filter(|p| p.count > 0) else {
                    continue;
                };
                let mut row = vec![self.class_name(outcome).to_string(), from.to_string()];
                row.extend(percentiles.values().map(|ms| format!("{ms:.2} ms")));
                table.add_row(row);
            }
        }
        table
    }
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

/// The zones of `seating` as a table.
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
