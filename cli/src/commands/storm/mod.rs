//! `flashtix storm`: fires a buy storm at the sale, measures it without
//! coordinated omission, waits for the sale to settle and proves it with
//! `check` and the storm's own history.

mod args;
mod bar;
mod dashboard;
mod document;
mod engine;
mod fairness;
pub mod html;
pub mod merge;
mod options;
mod outputs;
mod plan;
mod record;
mod report;
mod scenario;
mod seats;
mod tokens;
mod workload;

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use flashtix_model::history::Attempt;
use flashtix_server::invariants::Verdict;

pub use args::StormArgs;
pub use options::StormOptions;
pub use outputs::Outputs;
pub use scenario::Scenario;

use super::{check, reset, Exit, Failure, Services};
use crate::say;
use bar::{progress_bar, show_progress, update};
use dashboard::Dashboard;
use document::{Judged, StormDocument, ZoneSales};
use engine::{Progress, Shard, Storm, Work};
use plan::{Sends, StormPlan};
use report::{Summary, Threshold};

/// `flashtix storm`: the flags, and the scenario file they name.
pub async fn run(args: StormArgs) -> Exit {
    let scenario = match &args.scenario {
        Some(path) => Scenario::read(path).map_err(Failure::usage)?,
        None => Scenario::default(),
    };
    run_scenario(args, scenario).await
}

/// A storm from flags and a scenario (what the flags say wins over it): plan,
/// fire, settle and check, write the results.
pub async fn run_scenario(args: StormArgs, scenario: Scenario) -> Exit {
    if let Some(description) = &scenario.description {
        eprintln!("scenario: {description}");
    }
    let plan = StormPlan::new(&args, scenario.storm).map_err(Failure::usage)?;
    if args.reset {
        let sale = scenario.sale.unwrap_or_default();
        let (namespace, events) = reset::seed(&args.connections, &sale, false).await?;
        reset::print_seeded(&namespace, &events);
    }
    let services = services(&args, &plan).await?;
    let (work, seated_events) = plan.work(services.as_ref()).await?;
    let progress = Arc::new(Progress::default());
    let mut dashboard = start_dashboard(&args, &plan, &work, &progress).await?;
    let storm = fire(&plan, work, progress).await?;
    if let Some(dashboard) = &mut dashboard {
        dashboard.sends_over().await;
    }
    let history = match &plan.history {
        Some(path) => Some(flashtix_model::history::read(path).map_err(anyhow::Error::from)?),
        None => None,
    };

    let summary = Summary::new(
        &storm,
        plan.model_label.clone(),
        plan.target_rate,
        plan.raw(),
    );
    let mut document = summary.document();
    summary.print(&document);
    if plan.sending.shard != Shard::WHOLE {
        document.shard = Some(plan.sending.shard);
    }
    let verdict = match (&services, plan.check) {
        (Some(services), true) => {
            Some(settle_and_check(&plan, services, history.as_deref(), &mut document).await?)
        }
        _ => None,
    };
    // Read once the sale has settled (when the storm waits for it): a seat
    // of an order that ended unpaid is drawn on its way back or free, not
    // as the hold it was when the last answer came.
    document.seating = seat_sales(&plan, &storm, &seated_events).await;
    let events = history
        .as_deref()
        .map(|history| fairness::of(history, storm.started_at))
        .unwrap_or_default();
    if !events.is_empty() {
        say!("{}", report::fairness_table(&events));
    }
    document.fairness = events;
    if let Some(report) = &document.check {
        check::print_report(report);
    }
    let missed = judge(&plan.thresholds, &summary, &mut document);
    let title = format!("flashtix storm against {}", plan.sending.target);
    plan.outputs.write(&title, &summary, &document)?;
    if let Some(dashboard) = dashboard {
        dashboard.finish(&document).await;
    }
    // What the sale did first, then how fast: FAIL, UNKNOWN, a missed threshold.
    Ok(match verdict {
        Some(verdict @ (Verdict::Fail | Verdict::Unknown)) => check::exit_code(verdict),
        _ if missed => ExitCode::from(3),
        _ => ExitCode::SUCCESS,
    })
}

/// The sale's Postgres and Redis, when the storm needs them; a sale the
/// storm could not prove is refused before any send.
async fn services(args: &StormArgs, plan: &StormPlan) -> Result<Option<Services>, Failure> {
    if !plan.needs_services() {
        return Ok(None);
    }
    let services = Services::connect(&args.connections).await?;
    if plan.check {
        let named = match &plan.sends {
            Sends::Buy(buying) => buying.events.as_slice(),
            Sends::Raw(_) => &[],
        };
        check::something_to_check(&services, named).await?;
    }
    Ok(Some(services))
}

/// The live dashboard, if `--dashboard` asks for one: the storm's counters,
/// the stock of the events it buys from, a drill's fault windows.
async fn start_dashboard(
    args: &StormArgs,
    plan: &StormPlan,
    work: &Work,
    progress: &Arc<Progress>,
) -> Result<Option<Dashboard>, Failure> {
    let feeds = dashboard::Feeds {
        target: plan.sending.target.clone(),
        events: match work {
            Work::Buy { buyers, .. } => buyers.events.clone(),
            Work::Raw(_) => Vec::new(),
        },
        windows: plan.outputs.shade().map(Path::to_path_buf),
    };
    Dashboard::start(&args.dashboard, progress.clone(), feeds)
        .await
        .map_err(Failure::usage)
}

/// What the storm's buyers were sold in each zone of the seated events,
/// printed. The zones' figures are the report's, not the verdict's: a sale
/// that cannot show its seat maps right now is still checked.
async fn seat_sales(plan: &StormPlan, storm: &Storm, seated_events: &[i64]) -> Vec<ZoneSales> {
    if seated_events.is_empty() {
        return Vec::new();
    }
    let zones = seats::maps_after_storm(&plan.client, &plan.sending.target, seated_events)
        .await
        .and_then(|maps| report::seating(&storm.recorder, &maps));
    match zones {
        Ok(zones) => {
            if !zones.is_empty() {
                say!("{}", report::seating_table(&zones));
            }
            zones
        }
        Err(error) => {
            eprintln!("storm: no seat maps after the storm: {error:#}");
            Vec::new()
        }
    }
}

/// Sends the storm with a live progress bar, the history written as it goes.
async fn fire(plan: &StormPlan, work: Work, progress: Arc<Progress>) -> Result<Storm, Failure> {
    let (history, writer) = match &plan.history {
        Some(path) => {
            let (sink, writer) = engine::journal::create(path).map_err(Failure::usage)?;
            (Some(sink), Some(writer))
        }
        None => (None, None),
    };
    match plan.sending.shard {
        Shard::WHOLE => eprintln!(
            "storm: {} against {}",
            plan.model_label, plan.sending.target
        ),
        Shard { index, count } => eprintln!(
            "storm: shard {index}/{count} of {} against {}; no settle or check here (they \
             need every shard's history: `flashtix check --history` with them all)",
            plan.model_label, plan.sending.target
        ),
    }
    if let Some(at) = plan.sending.start_at.filter(|at| *at > chrono::Utc::now()) {
        eprintln!("storm: the schedule begins at {at}");
    }
    let bar = progress_bar(plan);
    let ticker = tokio::spawn(show_progress(
        bar.clone(),
        progress.clone(),
        plan.sending.purchases.is_some(),
    ));
    let storm = engine::run(&plan.sending, work, progress.clone(), history).await?;
    ticker.abort();
    let end = if plan.sending.purchases.is_some() {
        progress.sent.load(Relaxed)
    } else {
        storm.elapsed.as_secs()
    };
    update(&bar, &progress, end, "");
    bar.abandon();
    if let Some(writer) = writer {
        writer.finish().await?;
    }
    Ok(storm)
}

/// Waits for the sale to settle, then proves it with the storm's history;
/// both go into the document (the report is printed by the caller, last).
async fn settle_and_check(
    plan: &StormPlan,
    services: &Services,
    history: Option<&[Attempt]>,
    document: &mut StormDocument,
) -> Result<Verdict, Failure> {
    let history = history.map(flashtix_server::invariants::History::new);
    let (settled, report) = check::settle_and_prove(
        services,
        history,
        None,
        None,
        plan.settle,
        Some("the storm"),
    )
    .await?;
    document.settle_seconds = Some(match settled {
        check::Settled::After(took) => Some(took.as_secs_f64()),
        check::Settled::Pending(_) => None,
    });
    let verdict = report.verdict;
    document.check = Some(report);
    Ok(verdict)
}

/// Judges each `--threshold`, prints and records the verdicts; true if one
/// was missed.
fn judge(thresholds: &[Threshold], summary: &Summary, document: &mut StormDocument) -> bool {
    let mut missed = false;
    for threshold in thresholds {
        let (value, met) = threshold.judge(summary);
        say!(
            "threshold {}: {} ({})",
            threshold.text,
            if met { "met" } else { "MISSED" },
            threshold.show(value)
        );
        missed |= !met;
        document.thresholds.push(Judged {
            threshold: threshold.text.clone(),
            value,
            met,
        });
    }
    missed
}
