//! `flashtix merge`: the `--json` documents of several storms (the shards of
//! one, run on as many machines) as one storm. Their histograms are added,
//! not their percentiles: the merged p99 is the p99 of every attempt.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::document::{StormDocument, ZoneSales};
use super::engine::{Shard, Storm};
use super::fairness;
use super::options::flag;
use super::record::Recorder;
use super::report::{self, Summary, Threshold};
use super::Outputs;
use crate::commands::{Exit, Failure};
use crate::say;

#[derive(clap::Args)]
pub struct MergeArgs {
    /// The storms' `--json` documents, one per shard
    #[arg(required = true, value_name = "STORM.json")]
    documents: Vec<PathBuf>,
    #[command(flatten)]
    outputs: Outputs,
    /// Every shard's `--history`: sell-out and fairness over all the
    /// purchases, not one shard's share of them
    #[arg(long = "history", value_name = "FILE", num_args = 1..)]
    histories: Vec<PathBuf>,
    /// A service level the merged storm must meet, as `storm --threshold`
    /// takes it (repeatable); exit 3 if one is missed
    #[arg(long = "threshold", value_name = "EXPR", value_parser = flag::<Threshold>)]
    thresholds: Vec<Threshold>,
}

pub fn run(args: MergeArgs) -> Exit {
    let thresholds = args.thresholds;
    let mut documents = Vec::new();
    for path in &args.documents {
        let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()));
        let document = text.and_then(|text| {
            serde_json::from_slice::<StormDocument>(&text)
                .with_context(|| format!("{} is not a storm's --json document", path.display()))
        });
        documents.push(document.map_err(Failure::usage)?);
    }
    if let Some(warning) = shards_missing(&documents).map_err(Failure::usage)? {
        eprintln!("merge: {warning}");
    }
    let merged = merge(documents).map_err(Failure::usage)?;
    let summary = Summary::new(&merged.storm, merged.model, merged.target_rate, merged.raw);
    let mut document = summary.document();
    summary.print(&document);
    document.merged_from = Some(args.documents.len());
    if !merged.seating.is_empty() {
        say!("{}", report::seating_table(&merged.seating));
    }
    document.seating = merged.seating;
    if !args.histories.is_empty() {
        let history = flashtix_model::history::read_all(&args.histories)
            .map_err(|e| Failure::usage(e.into()))?;
        document.fairness = fairness::of(&history, merged.storm.started_at);
        if !document.fairness.is_empty() {
            say!("{}", report::fairness_table(&document.fairness));
        }
    }
    let missed = super::judge(&thresholds, &summary, &mut document);
    let title = format!("flashtix storm, {} merged", args.documents.len());
    args.outputs.write(&title, &summary, &document)?;
    Ok(if missed {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}

/// Refuses a shard given twice or shards of storms of different sizes, and
/// says which shards are missing, if any.
fn shards_missing(documents: &[StormDocument]) -> anyhow::Result<Option<String>> {
    let shards: Vec<Shard> = documents.iter().filter_map(|d| d.shard).collect();
    let Some(first) = shards.first() else {
        // Whole storms: one given twice is the same start.
        let mut starts: Vec<_> = documents.iter().map(|d| d.started_at).collect();
        starts.sort();
        if let Some(twice) = starts.windows(2).find(|pair| pair[0] == pair[1]) {
            bail!(
                "two documents of the storm that began at {}: it is given twice",
                twice[0]
            );
        }
        return Ok(None);
    };
    if shards.len() != documents.len() {
        bail!("some documents are shards and some are not: merge the shards of one storm");
    }
    if let Some(other) = shards.iter().find(|s| s.count != first.count) {
        bail!(
            "shard {}/{} and shard {}/{} are of different storms",
            first.index,
            first.count,
            other.index,
            other.count
        );
    }
    let began = documents[0].started_at;
    if let Some(other) = documents.iter().find(|d| d.started_at != began) {
        bail!(
            "the shards began at {began} and at {}: shards of one storm share its --start-at \
             (a shard of an earlier run?)",
            other.started_at
        );
    }
    let mut seen = vec![false; first.count as usize];
    for shard in &shards {
        if std::mem::replace(&mut seen[shard.index as usize], true) {
            bail!(
                "shard {}/{} is given twice: its attempts would count twice",
                shard.index,
                shard.count
            );
        }
    }
    let missing: Vec<String> = (0..first.count)
        .filter(|i| !seen[*i as usize])
        .map(|i| format!("{i}/{}", first.count))
        .collect();
    Ok((!missing.is_empty()).then(|| {
        format!(
            "shards {} are missing: the figures are of the others only",
            missing.join(", ")
        )
    }))
}

/// The documents as one storm.
struct Merged {
    storm: Storm,
    model: String,
    target_rate: Option<f64>,
    raw: bool,
    seating: Vec<ZoneSales>,
}

/// Adds the documents' measures, each moved to the earliest start: the
/// storm began with the first to begin and ended with the last to end.
fn merge(documents: Vec<StormDocument>) -> anyhow::Result<Merged> {
    let started_at = documents
        .iter()
        .map(|d| d.started_at)
        .min()
        .context("no document")?;
    let mut models: Vec<String> = Vec::new();
    for document in &documents {
        if !models.contains(&document.model) {
            models.push(document.model.clone());
        }
    }
    // How long each ran, and when it ended.
    let spans = documents
        .iter()
        .map(|d| {
            // A storm's answers fill its seconds: it ran no longer.
            let answered = d.measures.seconds.len() as f64 + 2.0;
            let took = Duration::try_from_secs_f64(d.elapsed_seconds)
                .ok()
                .filter(|_| d.elapsed_seconds <= answered);
            let ended = took
                .and_then(|took| chrono::TimeDelta::from_std(took).ok())
                .and_then(|took| d.started_at.checked_add_signed(took));
            took.zip(ended).with_context(|| {
                format!(
                    "elapsed_seconds {} is no duration, or longer than its {} seconds",
                    d.elapsed_seconds,
                    d.measures.seconds.len()
                )
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    // One storm: each began before the first to end had ended.
    let first_end = spans
        .iter()
        .map(|(_, ended)| *ended)
        .min()
        .context("no document")?;
    if let Some(late) = documents.iter().find(|d| d.started_at > first_end) {
        bail!(
            "a storm began at {} after another had ended at {first_end}: not one storm",
            late.started_at
        );
    }
    // Each shard asked for its share; together they asked for the sum.
    let target_rate = documents.iter().map(|d| d.rates.target).sum();
    let raw = documents.iter().all(|d| d.raw);
    let ends: Vec<_> = spans.iter().map(|(_, ended)| *ended).collect();
    let seating = seating(&documents, &ends, started_at);
    let mut recorder = Recorder::default();
    let mut elapsed = Duration::ZERO;
    let cpu = documents
        .iter()
        .map(|d| d.generator_cpu_seconds.map(Duration::from_secs_f64))
        .sum::<Option<Duration>>();
    for (document, (took, _)) in documents.into_iter().zip(spans) {
        let later = (document.started_at - started_at)
            .to_std()
            .unwrap_or_default();
        elapsed = elapsed.max(later + took);
        recorder.merge(&Recorder::from_recorded(document.measures, later)?);
    }
    Ok(Merged {
        storm: Storm {
            recorder,
            started_at,
            elapsed,
            cpu,
        },
        model: models.join("; "),
        target_rate,
        raw,
        seating,
    })
}

/// The zones after the storm: the seat maps of the document that ended
/// last among those that read them (the sale's latest state), with every
/// document's sales in them,
/// their times moved to the common start. A zone sold out when its last
/// sale that any document saw was accepted.
fn seating(
    documents: &[StormDocument],
    ends: &[DateTime<Utc>],
    started_at: DateTime<Utc>,
) -> Vec<ZoneSales> {
    let Some(last) = (0..documents.len())
        .filter(|i| !documents[*i].seating.is_empty())
        .max_by_key(|i| ends[*i])
    else {
        return Vec::new();
    };
    let mut zones: Vec<ZoneSales> = documents[last]
        .seating
        .iter()
        .map(|zone| ZoneSales {
            event_id: zone.event_id,
            zone: zone.zone.clone(),
            orders_in_storm: 0,
            tickets_in_storm: 0,
            sold_out_seconds: None,
            sold_at_seconds: BTreeMap::new(),
        })
        .collect();
    for document in documents {
        let later = (document.started_at - started_at)
            .to_std()
            .unwrap_or_default()
            .as_secs_f64();
        for theirs in &document.seating {
            let Some(zone) = zones
                .iter_mut()
                .find(|z| z.event_id == theirs.event_id && z.zone.name == theirs.zone.name)
            else {
                continue;
            };
            zone.orders_in_storm += theirs.orders_in_storm;
            zone.tickets_in_storm += theirs.tickets_in_storm;
            let sold_at = theirs
                .sold_at_seconds
                .iter()
                .map(|(seat, at)| (seat.clone(), at + later));
            zone.sold_at_seconds.extend(sold_at);
            zone.sold_out_seconds = theirs
                .sold_out_seconds
                .into_iter()
                .chain(theirs.sold_at_seconds.values().copied())
                .map(|at| at + later)
                .chain(zone.sold_out_seconds)
                .reduce(f64::max);
        }
    }
    for zone in &mut zones {
        if zone.zone.available > 0 || zone.orders_in_storm == 0 {
            zone.sold_out_seconds = None;
        }
    }
    zones
}

#[cfg(test)]
mod tests {
    use super::*;
    use flashtix_model::history::Outcome as Answer;

    /// A shard's document, written and read back as JSON text: `answers`
    /// as (outcome, send ms, service ms) after a start `late_ms` after
    /// 2026-12-01T18:00:00Z.
    fn document(
        shard: Option<Shard>,
        late_ms: i64,
        answers: &[(Answer, u64, u64)],
    ) -> StormDocument {
        let mut recorder = Recorder::default();
        for &(outcome, at_ms, service_ms) in answers {
            record(&mut recorder, outcome, at_ms, service_ms);
        }
        let storm = Storm {
            recorder,
            started_at: "2026-12-01T18:00:00Z"
                .parse::<chrono::DateTime<chrono::Utc>>()
                .unwrap()
                + chrono::TimeDelta::milliseconds(late_ms),
            elapsed: Duration::from_secs(3),
            cpu: None,
        };
        let mut document = Summary::new(&storm, "open".into(), Some(100.0), false).document();
        document.shard = shard;
        serde_json::from_str(&serde_json::to_string(&document).unwrap()).unwrap()
    }

    fn shard(index: u64, count: u64) -> Option<Shard> {
        Some(Shard { index, count })
    }

    #[test]
    fn merged_shards_are_one_histogram_of_every_attempt() {
        let zero: Vec<_> = (0..500)
            .map(|n| (Answer::Accepted, n * 4, 1 + n % 7))
            .collect();
        let one: Vec<_> = (0..300)
            .map(|n| (Answer::SoldOut, n * 4 + 2, 40 + n % 90))
            .collect();
        // Storms begun a second apart (shards would share their start).
        let merged = merge(vec![document(None, 0, &zero), document(None, 1000, &one)]).unwrap();

        // The same attempts recorded by one recorder, the second shard's a
        // second later (it began a second after the first).
        let mut whole = Recorder::default();
        for &(outcome, at, service) in &zero {
            record(&mut whole, outcome, at, service);
        }
        for &(outcome, at, service) in &one {
            record(&mut whole, outcome, at + 1000, service);
        }
        let recorder = &merged.storm.recorder;
        assert_eq!((recorder.sends, recorder.answers()), (800, 800));
        assert_eq!(recorder.count(Answer::SoldOut), 300);
        for percentile in [50.0, 90.0, 99.0, 99.9, 100.0] {
            assert_eq!(
                recorder.all_service().value_at_percentile(percentile),
                whole.all_service().value_at_percentile(percentile),
                "p{percentile}"
            );
        }
        assert_eq!(recorder.all_service(), whole.all_service());
        assert_eq!(recorder.seconds.len(), whole.seconds.len());
        for (merged, one) in recorder.seconds.iter().zip(&whole.seconds) {
            assert_eq!((merged.sent, merged.outcomes), (one.sent, one.outcomes));
            assert_eq!(merged.from_intended, one.from_intended);
        }
        assert_eq!(
            merged.storm.elapsed,
            Duration::from_secs(4),
            "to the last end"
        );
        assert_eq!(merged.target_rate, Some(200.0), "the shares add up");
    }

    fn record(recorder: &mut Recorder, outcome: Answer, at_ms: u64, service_ms: u64) {
        let (at, took) = (
            Duration::from_millis(at_ms),
            Duration::from_millis(service_ms),
        );
        recorder.sent_on_time(outcome, at, took);
    }

    #[test]
    fn a_shard_twice_or_of_another_storm_is_refused_and_a_missing_one_named() {
        let some = [(Answer::Accepted, 0, 1)];
        let twice = [
            document(shard(0, 2), 0, &some),
            document(shard(0, 2), 0, &some),
        ];
        let error = shards_missing(&twice).unwrap_err().to_string();
        assert!(error.contains("given twice"), "{error}");
        let other = [
            document(shard(0, 2), 0, &some),
            document(shard(1, 3), 0, &some),
        ];
        let error = shards_missing(&other).unwrap_err().to_string();
        assert!(error.contains("different storms"), "{error}");
        let mixed = [document(shard(0, 2), 0, &some), document(None, 0, &some)];
        assert!(shards_missing(&mixed).is_err());
        let partial = [
            document(shard(0, 3), 0, &some),
            document(shard(2, 3), 0, &some),
        ];
        let warning = shards_missing(&partial).unwrap().unwrap();
        assert!(warning.contains("shards 1/3 are missing"), "{warning}");
        let whole = [
            document(shard(0, 2), 0, &some),
            document(shard(1, 2), 0, &some),
        ];
        assert_eq!(shards_missing(&whole).unwrap(), None);

        let stale = [
            document(shard(0, 2), 0, &some),
            document(shard(1, 2), 60_000, &some),
        ];
        let error = shards_missing(&stale).unwrap_err().to_string();
        assert!(error.contains("share its --start-at"), "{error}");
        let again = [document(None, 0, &some), document(None, 0, &some)];
        let error = shards_missing(&again).unwrap_err().to_string();
        assert!(error.contains("given twice"), "{error}");
        let apart = vec![document(None, 0, &some), document(None, 5_000, &some)];
        let error = merge(apart).err().unwrap().to_string();
        assert!(error.contains("not one storm"), "{error}");
        // Ages long, a second of answers: no storm ran so, and a gap that
        // long would be a second of memory each.
        let mut endless = document(None, 0, &some);
        endless.elapsed_seconds = 1e12;
        let error = merge(vec![endless]).err().unwrap().to_string();
        assert!(error.contains("longer than its 1 seconds"), "{error}");
    }

    fn zone(available: i64, sold_at: &[(&str, f64)], sold_out: Option<f64>) -> ZoneSales {
        ZoneSales {
            event_id: 1,
            zone: flashtix_model::seating::ZoneMap {
                name: "A".into(),
                kind: "reserved".into(),
                price_cents: 100,
                capacity: 3,
                available,
                held: 0,
                sold: 3 - available,
                returning: 0,
                rows: vec!["s".repeat((3 - available) as usize) + &".".repeat(available as usize)],
            },
            orders_in_storm: sold_at.len() as u64,
            tickets_in_storm: sold_at.len() as u64,
            sold_out_seconds: sold_out,
            sold_at_seconds: sold_at.iter().map(|(s, at)| (s.to_string(), *at)).collect(),
        }
    }

    #[test]
    fn the_seat_maps_are_the_last_to_end_with_every_shards_sales_on_one_clock() {
        let some = [(Answer::Accepted, 0, 1)];
        // The first saw two seats go; the second, half a second later on,
        // the last, and the zone sold out.
        let mut early = document(None, 0, &some);
        early.seating = vec![zone(1, &[("A-1-1", 0.5), ("A-1-2", 1.0)], None)];
        let mut late = document(None, 500, &some);
        late.seating = vec![zone(0, &[("A-1-3", 2.0)], Some(2.0))];
        let merged = merge(vec![early, late]).unwrap();
        let [zone] = &merged.seating[..] else {
            panic!("one zone: {:?}", merged.seating);
        };
        assert_eq!(zone.zone.available, 0, "the sale as the last to end saw it");
        assert_eq!((zone.orders_in_storm, zone.tickets_in_storm), (3, 3));
        let sold_at: Vec<(&str, f64)> = zone
            .sold_at_seconds
            .iter()
            .map(|(seat, at)| (seat.as_str(), *at))
            .collect();
        assert_eq!(sold_at, [("A-1-1", 0.5), ("A-1-2", 1.0), ("A-1-3", 2.5)]);
        assert_eq!(zone.sold_out_seconds, Some(2.5));
    }

    #[test]
    fn a_document_naming_an_impossible_shard_is_refused_when_read() {
        let mut text = serde_json::to_value(document(shard(0, 2), 0, &[])).unwrap();
        text["shard"] = serde_json::json!({"index": 2, "count": 2});
        assert!(serde_json::from_value::<StormDocument>(text.clone()).is_err());
        text["shard"] = serde_json::json!({"index": 0, "count": u64::MAX});
        assert!(serde_json::from_value::<StormDocument>(text.clone()).is_err());
        text["shard"] = serde_json::json!({"index": 1, "count": 2});
        assert!(serde_json::from_value::<StormDocument>(text).is_ok());
    }
}
