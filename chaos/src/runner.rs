//! The drill runner: seeds the sale, starts its roles, fires the drill's storm
//! at the sale's front door, breaks things on the drill's timeline, heals
//! everything, waits for the sale to settle, and proves it with `check` and
//! the storm's history. Every step is a `flashtix` command or a process of the
//! stack, so what a drill proves is what an operator would see.
//!
//! The jobs live beside it: [`crate::faults`] carries faults out,
//! [`crate::windows`] records when, [`crate::recovery`] measures what followed,
//! [`crate::steps`] runs the operator's commands.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use flashtix_model::history::{self, Attempt};
use flashtix_model::report::{Invariant, Report, Verdict};
use serde::Serialize;
use sqlx::postgres::PgPoolOptions;

use crate::drill::{DrillFile, Fault, Limits, Target};
use crate::driver::{Driver, Stack};
use crate::faults::{self, Faults};
use crate::recovery::{self, Backlog, FaultReport, Sample};
use crate::steps::{self, Operator};
use crate::watched::WatchedSale;
use crate::windows::{Window, WindowLog};

const DEFAULT_RECOVER: Duration = Duration::from_secs(30);
const DEFAULT_SETTLE: Duration = Duration::from_secs(60);

/// One run of one drill.
pub struct Run<'a> {
    pub name: &'a str,
    pub drill: &'a DrillFile,
    pub seed: u64,
    /// Its own namespace (and so schema, keys and queues).
    pub namespace: String,
    /// Its logs, history and reports.
    pub dir: PathBuf,
    /// The `flashtix` binary.
    pub flashtix: &'a Path,
    /// Where the storm writes its HTML report, fault windows shaded.
    pub report: Option<PathBuf>,
    /// Where the storm serves its live dashboard, if anywhere.
    pub dashboard: Option<std::net::SocketAddr>,
}

/// What a drill showed.
#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    pub drill: String,
    pub seed: u64,
    pub verdict: Verdict,
    /// Why it failed (empty when it passed).
    pub reasons: Vec<String>,
    pub faults: Vec<FaultReport>,
    /// The storm's outcome counts.
    pub outcomes: BTreeMap<String, u64>,
    pub settle_seconds: Option<f64>,
    /// `flashtix check`'s report (`None`: it gave none).
    pub check: Option<Report>,
    pub seconds: f64,
    /// Logs, history and reports of the run.
    pub dir: PathBuf,
}

impl DrillReport {
    pub fn passed(&self) -> bool {
        self.reasons.is_empty()
    }

    /// The slowest recovery of its faults, seconds.
    pub fn recovery(&self) -> Option<f64> {
        self.faults
            .iter()
            .map(|f| f.recovered)
            .try_fold(0.0f64, |worst, r| r.map(|r| worst.max(r)))
    }
}

/// What happened while the storm ran.
struct Storm {
    /// It began, and ran to its end.
    ran: Result<(), String>,
    /// Its start, the zero of every window.
    zero: chrono::DateTime<Utc>,
    windows: Vec<Window>,
    /// Faults that could not be done or undone.
    errors: Vec<String>,
}

/// Runs one drill on `stack`; errors are the runner's own (a process that
/// would not start), not the sale's.
pub async fn run(run: &Run<'_>, stack: &Stack) -> io::Result<DrillReport> {
    let started = tokio::time::Instant::now();
    std::fs::create_dir_all(&run.dir)?;
    let (operator, faults) = start(run, stack).await?;
    let pool = faults.pool.clone();
    let backlog = Backlog::watch(pool.clone(), &run.namespace);
    let history = run.dir.join("history.jsonl");
    let storm = storm(run, &operator, &faults, &history).await?;

    // Whatever is still broken is mended: the sale must settle.
    faults.driver.heal().await?;
    let settle_limit = run.drill.limits.settle.unwrap_or(DEFAULT_SETTLE);
    let checked = operator.check(&history, settle_limit).await?;
    let settled = checked.as_ref().and_then(|c| c.settled_seconds);
    let check = checked.map(|c| c.report);
    let samples = backlog.stop();
    faults.driver.stop_sale().await;
    pool.close().await;

    // Without the history nothing about the buyers can be judged: no window
    // may pass for lack of attempts.
    let (attempts, unread) = match history::read(&history) {
        Ok(attempts) => (attempts, None),
        Err(e) => (Vec::new(), Some(format!("the storm's history: {e:#}"))),
    };
    // What the storm saw, inside each window and after it.
    let in_docker = matches!(faults.driver, Driver::Docker(_));
    let (mut reasons, reports) = judge_storm(run, storm, unread, &attempts, &samples, in_docker);
    let verdict = drill_verdict(&reasons, check.as_ref());
    reasons.extend(check_reasons(check.as_ref(), &run.dir));
    let mut outcomes = BTreeMap::new();
    for attempt in &attempts {
        *outcomes
            .entry(attempt.outcome.name().to_owned())
            .or_insert(0) += 1;
    }
    Ok(DrillReport {
        drill: run.name.to_owned(),
        seed: run.seed,
        verdict,
        reasons,
        faults: reports,
        outcomes,
        settle_seconds: settled,
        check,
        seconds: started.elapsed().as_secs_f64(),
        dir: run.dir.clone(),
    })
}

/// Resets the drill's sale and starts its roles: the operator who runs the
/// commands, and the faults that break what was started.
async fn start<'a>(run: &'a Run<'_>, stack: &Stack) -> io::Result<(Operator<'a>, Faults)> {
    // Without receivers a drill on notices would judge nothing of them,
    // and pass for that: refused, not run.
    let on_notices = run.drill.faults.iter().any(|fault| {
        matches!(
            fault.target,
            Target::Receiver(_) | Target::Role(flashtix_model::Role::Notifications)
        )
    });
    if on_notices && matches!(stack, Stack::Docker(_)) {
        return Err(io::Error::other(format!(
            "{}: the docker driver has no notices' receivers yet, so this drill could \
             judge nothing of what it breaks; run it with --driver local",
            run.name
        )));
    }
    let direct = stack.direct();
    let mut env = direct.env();
    env.push(("FLASHTIX_NAMESPACE".into(), run.namespace.clone()));
    let mut operator = Operator {
        flashtix: run.flashtix,
        env,
        dir: &run.dir,
        notices: toml::Table::new(),
    };
    let failed = |e: io::Error| io::Error::other(format!("{}: {e}", run.name));
    let public_keys = operator
        .make_keys(&run.dir.join("keys"))
        .await
        .map_err(failed)?;
    let receivers = stack.start_receivers(&run.dir).await.map_err(failed)?;
    let mut sale = run.drill.sale.clone();
    if let Some(receivers) = &receivers {
        sale.extend(receivers.reset_flags());
        operator.notices = receivers.check_flags();
    }
    operator.reset(&sale).await.map_err(failed)?;
    let driver = stack
        .start_sale(
            run.flashtix,
            &run.dir,
            &run.namespace,
            &steps::flags(&run.drill.server),
            &public_keys,
            receivers,
        )
        .await?;
    let watched = WatchedSale {
        servers: driver.watched_urls(),
        namespace: run.namespace.clone(),
        database_url: direct.database.clone(),
        amqp_url: direct.amqp.clone(),
    };
    watched.write(&run.dir).map_err(failed)?;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(1))
        .connect_lazy(&direct.database)
        .map_err(io::Error::other)?;
    let faults = Faults {
        driver,
        pool,
        namespace: run.namespace.clone(),
        dir: run.dir.clone(),
    };
    Ok((operator, faults))
}

/// What the storm says against the drill: faults not done or undone, a
/// history that could not be read (`unread`), a storm that did not run to
/// its end, and each window's recovery.
fn judge_storm(
    run: &Run<'_>,
    storm: Storm,
    unread: Option<String>,
    attempts: &[Attempt],
    samples: &[Sample],
    in_docker: bool,
) -> (Vec<String>, Vec<FaultReport>) {
    let recover_limit = recover_limit(&run.drill.limits, in_docker);
    let mut reasons = storm.errors;
    reasons.extend(unread);
    if let Err(why) = storm.ran {
        reasons.push(why);
    }
    // Faults that last to the storm's end on purpose: nothing to recover
    // from. Windows are known by their labels: a label counts as declared
    // only if every fault under it is.
    let timeline = run.drill.timeline(run.seed);
    let to_the_end: Vec<String> = timeline
        .iter()
        .map(faults::describe)
        .filter(|label| {
            timeline
                .iter()
                .filter(|fault| faults::describe(fault) == *label)
                .all(|fault| fault.until_storm_ends)
        })
        .collect();
    let reports: Vec<FaultReport> = storm
        .windows
        .iter()
        .map(|window| recovery::measure(window, storm.zero, attempts, samples))
        .collect();
    reasons.extend(
        reports
            .iter()
            .filter_map(|report| recovery_fault(report, &to_the_end, recover_limit)),
    );
    (reasons, reports)
}

/// Fires the drill's storm and, once it has begun, each fault on its own task
/// at its moment: faults at the same moment happen together, and a slow one
/// (RabbitMQ restarting) holds up no other. Faults not begun when the storm
/// ends are skipped; those under way end then.
async fn storm(
    run: &Run<'_>,
    operator: &Operator<'_>,
    faults: &Faults,
    history: &Path,
) -> io::Result<Storm> {
    let shade = run.dir.join("windows.json");
    let path = |p: &Path| p.display().to_string();
    let mut args: Vec<String> = vec![
        "storm".into(),
        "--no-check".into(),
        "--target".into(),
        faults.driver.front_url(),
        "--history".into(),
        path(history),
        "--json".into(),
        path(&run.dir.join("storm.json")),
        "--shade".into(),
        path(&shade),
        "--seed".into(),
        run.seed.to_string(),
    ];
    if let Some(report) = &run.report {
        args.extend(["--report".into(), path(report)]);
    }
    if let Some(dashboard) = run.dashboard {
        args.extend(["--dashboard".into(), dashboard.to_string()]);
    }
    args.extend(steps::flags(&run.drill.storm));
    let (mut storm, begun) = operator.storm(&args).await?;
    let zero = Utc::now();
    let clock = tokio::time::Instant::now();
    let recorder = WindowLog::new(shade, zero);
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let (ended, storm_over) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    if begun {
        for fault in run.drill.timeline(run.seed) {
            let command = run
                .drill
                .command(fault.target, fault.action)
                .map(str::to_owned);
            tasks.push(tokio::spawn(apply(
                fault,
                command,
                faults.clone(),
                clock,
                storm_over.clone(),
                recorder.clone(),
                errors.clone(),
            )));
        }
    }
    let status = storm.wait().await?;
    let _ = ended.send(true);
    for task in tasks {
        let _ = task.await;
    }
    let ran = if begun && status.success() {
        Ok(())
    } else {
        Err(format!(
            "the storm did not run to its end ({status}; see {})",
            run.dir.join("storm.err").display()
        ))
    };
    let errors = std::mem::take(&mut *errors.lock().expect("not poisoned"));
    Ok(Storm {
        ran,
        zero,
        windows: recorder.close()?,
        errors,
    })
}

/// One fault, start to end: waits for its moment, does it, records its
/// window, and undoes it when its duration is over (or the storm is).
async fn apply(
    fault: Fault,
    command: Option<String>,
    faults: Faults,
    clock: tokio::time::Instant,
    mut storm_over: tokio::sync::watch::Receiver<bool>,
    recorder: WindowLog,
    errors: Arc<Mutex<Vec<String>>>,
) {
    let label = faults::describe(&fault);
    let failed = |what: &str, e: io::Error| {
        errors
            .lock()
            .expect("not poisoned")
            .push(format!("{label}: {what}{e}"));
    };
    tokio::select! {
        _ = tokio::time::sleep_until(clock + fault.at) => {}
        _ = storm_over.wait_for(|over| *over) => return,
    }
    let window = recorder.open(&label);
    if let Err(e) = faults.begin(&fault, command.as_deref()).await {
        failed("", e);
    }
    let Some(until) = fault.until else {
        // A lasting fault without a duration is undone only by the heal
        // after the storm: its window runs to the storm's end.
        if fault.lasts() {
            let _ = storm_over.wait_for(|over| *over).await;
        }
        recorder.shut(window);
        return;
    };
    tokio::select! {
        _ = tokio::time::sleep_until(clock + until) => {}
        _ = storm_over.wait_for(|over| *over) => {}
    }
    if let Err(e) = faults.end(&fault).await {
        failed("ending it: ", e);
    }
    recorder.shut(window);
}

/// What is wrong with how the sale came back from one fault, if anything:
/// too slowly, never, or never measured (no request after it, and the drill
/// did not say the fault was to last to the storm's end).
fn recovery_fault(report: &FaultReport, to_the_end: &[String], limit: Duration) -> Option<String> {
    let label = &report.fault;
    match report.recovered {
        None if report.requests_after == 0 && to_the_end.contains(label) => None,
        None if report.requests_after == 0 => Some(format!(
            "{label}: lasted to the storm's end, so no request came after it and its \
             recovery was never measured (give it a duration, or declare \
             until-storm-ends = true if that is the point)"
        )),
        None => Some(format!("{label}: never recovered")),
        Some(r) if r <= limit.as_secs_f64() => None,
        Some(r) => Some(format!(
            "{label}: recovered after {r:.1} s, over the limit of {:.0} s",
            limit.as_secs_f64()
        )),
    }
}

/// A drill FAILs on what its storm saw (a fault not done, no recovery within
/// its limit), on a FAIL of `check`, and on orders left unsettled past its
/// settle limit (its own criterion, which `check` can only call UNKNOWN).
/// Otherwise a `check` that could not prove the sale (UNKNOWN, or no report)
/// leaves the drill UNKNOWN: not proven, and not shown broken either.
fn drill_verdict(storm_reasons: &[String], check: Option<&Report>) -> Verdict {
    if !storm_reasons.is_empty() {
        return Verdict::Fail;
    }
    let Some(check) = check else {
        return Verdict::Unknown;
    };
    let unsettled = check
        .finding(Invariant::Settled)
        .is_some_and(|f| f.verdict != Verdict::Pass);
    if unsettled {
        return Verdict::Fail;
    }
    check.verdict
}

/// Why `check` failed the sale: each finding that did not pass.
fn check_reasons(check: Option<&Report>, dir: &Path) -> Vec<String> {
    let Some(check) = check else {
        return vec![format!(
            "check gave no report (see {})",
            dir.join("check.log").display()
        )];
    };
    if check.verdict == Verdict::Pass {
        return Vec::new();
    }
    let mut reasons: Vec<String> = check
        .findings
        .iter()
        .filter(|f| f.verdict != Verdict::Pass)
        .map(|f| format!("{} {}: {}", f.invariant, f.verdict, f.detail))
        .collect();
    if reasons.is_empty() {
        reasons.push(format!("check: {}", check.verdict));
    }
    reasons
}

/// How soon a fault must be recovered from, by the driver.
fn recover_limit(limits: &Limits, in_docker: bool) -> Duration {
    let limit_here = limits.recover.unwrap_or(DEFAULT_RECOVER);
    match limits.recover_in_docker {
        Some(limit) if in_docker => limit,
        _ => limit_here,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_docker_driver_has_its_own_recovery_limit_when_a_drill_gives_one() {
        let limits = Limits {
            recover: Some(Duration::from_secs(20)),
            recover_in_docker: Some(Duration::from_secs(60)),
            settle: None,
        };
        assert_eq!(recover_limit(&limits, false), Duration::from_secs(20));
        assert_eq!(recover_limit(&limits, true), Duration::from_secs(60));
        let one_limit = Limits {
            recover_in_docker: None,
            ..limits
        };
        assert_eq!(recover_limit(&one_limit, true), Duration::from_secs(20));
        assert_eq!(recover_limit(&Limits::default(), true), DEFAULT_RECOVER);
    }

    fn report(fault: &str, requests_after: u64, recovered: Option<f64>) -> FaultReport {
        FaultReport {
            fault: fault.into(),
            from: 1.0,
            to: 4.0,
            outcomes: BTreeMap::new(),
            errors: 0,
            requests_after,
            served: recovered,
            drained: recovered,
            recovered,
        }
    }

    #[test]
    fn a_fault_without_a_recovery_figure_fails_the_drill_unless_it_was_meant_to_last() {
        let limit = Duration::from_secs(10);
        let declared = ["latency 200ms postgres".to_owned()];
        let verdict = |r: FaultReport| recovery_fault(&r, &declared, limit);
        assert_eq!(verdict(report("kill api", 50, Some(2.0))), None);
        assert!(verdict(report("kill api", 50, Some(12.0)))
            .is_some_and(|why| why.contains("recovered after 12.0 s, over the limit of 10 s")));
        assert!(verdict(report("kill api", 50, None))
            .is_some_and(|why| why.contains("kill api: never recovered")));
        assert!(verdict(report("blackhole redis", 0, None))
            .is_some_and(|why| why.contains("lasted to the storm's end")));
        assert_eq!(verdict(report("latency 200ms postgres", 0, None)), None);
    }

    fn checked(findings: &[(Invariant, Verdict)]) -> Report {
        Report::of(
            findings
                .iter()
                .map(|&(invariant, verdict)| flashtix_model::report::Finding {
                    invariant,
                    verdict,
                    checked: 1,
                    offending: u64::from(verdict != Verdict::Pass),
                    detail: String::new(),
                    examples: Vec::new(),
                })
                .collect(),
        )
    }

    #[test]
    fn a_drill_check_could_not_prove_is_unknown_and_one_that_broke_fails() {
        let fine = checked(&[(Invariant::NoOversell, Verdict::Pass)]);
        let moving = checked(&[
            (Invariant::NoOversell, Verdict::Pass),
            (Invariant::QueuesDrained, Verdict::Unknown),
        ]);
        let broken = checked(&[
            (Invariant::NoOversell, Verdict::Fail),
            (Invariant::QueuesDrained, Verdict::Unknown),
        ]);
        let unsettled = checked(&[
            (Invariant::Settled, Verdict::Unknown),
            (Invariant::QueuesDrained, Verdict::Unknown),
        ]);
        let none: [String; 0] = [];
        let storm_broke = ["kill api: never recovered".to_owned()];
        assert_eq!(drill_verdict(&none, Some(&fine)), Verdict::Pass);
        assert_eq!(drill_verdict(&none, Some(&moving)), Verdict::Unknown);
        assert_eq!(drill_verdict(&none, None), Verdict::Unknown);
        assert_eq!(drill_verdict(&none, Some(&broken)), Verdict::Fail);
        assert_eq!(drill_verdict(&none, Some(&unsettled)), Verdict::Fail);
        assert_eq!(drill_verdict(&storm_broke, Some(&fine)), Verdict::Fail);
        assert_eq!(drill_verdict(&storm_broke, Some(&moving)), Verdict::Fail);
    }
}
