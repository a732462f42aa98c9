//! `flashtix storm`: fires a buy storm at the sale, measures it without
//! coordinated omission, waits for the sale to settle and proves it with
//! `check` and the storm's own history.

mod engine;
pub mod html;
mod record;
mod report;
mod scenario;
mod seatmap;
mod seats;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use flashtix_server::config::ConnectionArgs;
use flashtix_server::history::Attempt;
use flashtix_server::invariants::Verdict;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

pub use scenario::{Given, Scenario};

use super::{check, reset, Failure, Outcome, Services};
use crate::output;
use engine::{Model, Plan, Progress, Work};
use report::{Summary, Threshold};
use workload::{parse_duration, Buyers, Quantities, Schedule};

#[derive(clap::Args)]
pub struct StormArgs {
    #[command(flatten)]
    connections: ConnectionArgs,
    /// Read the storm (and the sale --reset seeds) from this TOML file; flags
    /// given here win over it
    #[arg(long, value_name = "FILE")]
    scenario: Option<PathBuf>,
    /// Reset the sale first: the scenario's [sale], or reset's defaults
    #[arg(long)]
    reset: bool,
    /// The sale server's base URL
    #[arg(long, env = "FLASHTIX_TARGET", default_value = "http://127.0.0.1:8080")]
    target: String,

    /// Open model: sends per second, constant
    #[arg(long, group = "model")]
    rate: Option<f64>,
    /// Open model: the rate moves from FROM to TO over DURATION (like 100:5000:10s)
    #[arg(long, group = "model", value_name = "FROM:TO:DURATION")]
    ramp: Option<String>,
    /// Open model: every buyer (--buyers) within this window; 0 fires them all at
    /// once, after the connections are warm
    #[arg(long, group = "model", value_name = "WINDOW")]
    spike: Option<String>,
    /// Closed model: this many requests in flight, each sent when one ends
    /// (measures service time only)
    #[arg(long, group = "model")]
    concurrency: Option<usize>,
    /// Stop sending after this long (like 30s)
    #[arg(long)]
    duration: Option<String>,
    /// Stop after this many purchases
    #[arg(long)]
    buyers: Option<u64>,
    /// Open model: at most this many requests open at once; sends beyond it wait
    /// (and the wait counts in their latency)
    #[arg(long, default_value_t = 1024)]
    max_inflight: usize,

    /// Fixes every buyer, event, quantity and duplicate: the same seed, the same storm
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// An event to buy from (repeatable); without it, every event of the sale
    #[arg(long = "event")]
    events: Vec<i64>,
    /// Buy from every event of the sale (what happens without --event)
    #[arg(long = "events", value_name = "all", value_parser = ["all"], conflicts_with = "events")]
    every_event: Option<String>,
    /// Tickets per purchase: a number, or weights like 1:70,2:20,4:10
    #[arg(long, default_value = "1")]
    quantity: String,
    /// Share of purchases sent twice at once with the same key (double clicks), 0 to 1
    #[arg(long, default_value_t = 0.0)]
    duplicates: f64,
    /// Share of purchases whose buyer asks again, same key and body, a second
    /// after a definite answer (a page refreshed: was I sold a ticket?), 0 to 1
    #[arg(long, default_value_t = 0.0)]
    revisit: f64,
    /// On a seated event: share of buyers who, told their seats were taken,
    /// ask for the zone's best available instead of giving up, 0 to 1
    #[arg(long, default_value_t = 0.5)]
    seat_retry: f64,
    /// Tries again (same key, growing pause) after a timeout, a connection error or a 5xx
    #[arg(long, default_value_t = 0)]
    retries: u32,
    /// How long an attempt may take before it counts as a timeout
    #[arg(long, default_value = "10s")]
    timeout: String,

    /// Calibration: plain requests to this URL with the same engine; no buying, no check
    #[arg(long, value_name = "URL")]
    raw: Option<String>,
    /// The method of --raw requests
    #[arg(long, default_value = "GET")]
    method: String,

    /// Write one JSON line per attempt (the history `check --history` reads)
    #[arg(long)]
    history: Option<PathBuf>,
    /// Write the results as JSON to this file
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write one self-contained HTML page with the charts and tables
    #[arg(long, value_name = "FILE.html")]
    report: Option<PathBuf>,
    /// Write the latency from the intended send of every attempt as an HDR
    /// percentile distribution (.hgrm, milliseconds)
    #[arg(long, value_name = "FILE.hgrm")]
    hdr: Option<PathBuf>,
    /// How long to wait, after the storm, for every order to settle
    #[arg(long, default_value = "60s")]
    settle: String,
    /// Skip the settle wait and the invariants
    #[arg(long)]
    no_check: bool,
    /// A service level to meet, like 'p99<50ms', 'accepted_rate>5000',
    /// 'error_rate<0.1%' (repeatable); a miss exits 3
    #[arg(long = "threshold")]
    thresholds: Vec<String>,
    /// Shade these time windows on the report's charts: a JSON list of
    /// {label, from, to} in seconds from the start (what `chaos` writes as it
    /// breaks things; read when the report is written)
    #[arg(long, hide = true, value_name = "FILE")]
    shade: Option<PathBuf>,
    /// Tasks sending in parallel (default: one per core)
    #[arg(long, hide = true)]
    lanes: Option<usize>,
}

/// The storm's flags, checked and turned into a plan.
struct Validated {
    model: Model,
    model_label: String,
    target_rate: Option<f64>,
    purchases: Option<u64>,
    duration: Option<Duration>,
    timeout: Duration,
    settle: Duration,
    thresholds: Vec<Threshold>,
    quantities: Quantities,
}

impl StormArgs {
    fn validate(&self) -> anyhow::Result<Validated> {
        let duration = self.duration.as_deref().map(parse_duration).transpose()?;
        let purchases = self.buyers;
        if purchases == Some(0) {
            bail!("--buyers must be at least 1");
        }
        let positive = |name: &str, rate: f64| -> anyhow::Result<f64> {
            if rate > 0.0 && rate.is_finite() {
                Ok(rate)
            } else {
                bail!("{name} must be above 0, got {rate}")
            }
        };
        let (model, model_label, target_rate) = if let Some(concurrency) = self.concurrency {
            if concurrency == 0 {
                bail!("--concurrency must be at least 1");
            }
            let model = Model::Closed { concurrency };
            (
                model,
                format!("closed (service time), {concurrency} in flight"),
                None,
            )
        } else {
            let schedule = if let Some(ramp) = &self.ramp {
                Schedule::ramp(ramp)?
            } else if let Some(window) = &self.spike {
                let buyers =
                    purchases.context("--spike needs --buyers: how many buyers in the window")?;
                Schedule::Spike {
                    within: parse_duration(window).context("--spike")?,
                    buyers,
                }
            } else {
                Schedule::Constant {
                    rate: positive("--rate", self.rate.unwrap_or(1000.0))?,
                }
            };
            if self.max_inflight == 0 {
                bail!("--max-inflight must be at least 1");
            }
            let label = match schedule {
                Schedule::Constant { rate } => format!("open, {rate:.0}/s constant"),
                Schedule::Ramp { from, to, over } => {
                    format!("open, ramp {from:.0}/s to {to:.0}/s over {over:?}")
                }
                Schedule::Spike { within, buyers } if within.is_zero() => {
                    format!("open, spike of {buyers} all at once")
                }
                Schedule::Spike { within, buyers } => {
                    format!("open, spike of {buyers} within {within:?}")
                }
            };
            let target = Some(schedule.peak_rate()).filter(|r| r.is_finite());
            let model = Model::Open {
                schedule,
                max_inflight: self.max_inflight,
            };
            (model, label, target)
        };
        if purchases.is_none() && duration.is_none() {
            bail!("say when the storm ends: --buyers N, --duration D, or both");
        }
        for (flag, share) in [
            ("--duplicates", self.duplicates),
            ("--revisit", self.revisit),
            ("--seat-retry", self.seat_retry),
        ] {
            if !(0.0..=1.0).contains(&share) {
                bail!("{flag} is a share from 0 to 1, got {share}");
            }
        }
        let timeout = parse_duration(&self.timeout).context("--timeout")?;
        if timeout.is_zero() {
            bail!("--timeout must be above 0");
        }
        Ok(Validated {
            model,
            model_label,
            target_rate,
            purchases,
            duration,
            timeout,
            settle: parse_duration(&self.settle).context("--settle")?,
            thresholds: self
                .thresholds
                .iter()
                .map(|t| Threshold::parse(t))
                .collect::<anyhow::Result<_>>()?,
            quantities: Quantities::parse(&self.quantity)?,
        })
    }
}

/// `flashtix storm`: the flags, and the scenario file they name.
pub async fn run(args: StormArgs, given: &Given) -> Outcome {
    let scenario = match &args.scenario {
        Some(path) => Scenario::read(path).map_err(Failure::usage)?,
        None => Scenario::default(),
    };
    run_scenario(args, scenario, given).await
}

/// A storm from flags and a scenario (the flags in `given` win over it).
pub async fn run_scenario(mut args: StormArgs, scenario: Scenario, given: &Given) -> Outcome {
    if let Some(description) = &scenario.description {
        eprintln!("scenario: {description}");
    }
    args.apply(scenario.storm, given);
    let plan = args.validate().map_err(Failure::usage)?;
    let raw = args.raw.is_some();
    if args.reset {
        if raw {
            return Err(Failure::usage(anyhow::anyhow!(
                "--reset seeds a sale to buy from; --raw buys nothing"
            )));
        }
        let sale = scenario.sale.unwrap_or_default();
        let (namespace, events) = reset::seed(&args.connections, &sale, false).await?;
        reset::print_seeded(&namespace, &events);
    }
    let checking = !args.no_check && !raw;
    let services = if checking || args.events.is_empty() && !raw {
        Some(Services::connect(&args.connections).await?)
    } else {
        None
    };
    // The seated events bought from, for the seat maps after the storm.
    let mut seated_events: Option<Vec<i64>> = None;
    let work = match &args.raw {
        Some(_) => Work::Raw {
            method: args.method.parse().map_err(|_| {
                Failure::usage(anyhow::anyhow!(
                    "--method {:?} is not an HTTP method",
                    args.method
                ))
            })?,
        },
        None => {
            let events = events(&args, services.as_ref()).await?;
            let seated = seats::fetch(args.target.trim_end_matches('/'), &events)
                .await
                .map_err(Failure::unreachable)?;
            seated_events = Some(seated.keys().copied().collect::<Vec<_>>());
            Work::Buy {
                buyers: Buyers {
                    seed: args.seed,
                    events,
                    quantities: plan.quantities.clone(),
                    duplicates: args.duplicates,
                    revisits: args.revisit,
                    seated,
                    seat_retry: args.seat_retry,
                },
                retries: args.retries,
            }
        }
    };
    let lanes = args
        .lanes
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let engine_plan = Plan {
        model: plan.model.clone(),
        work,
        target: args
            .raw
            .clone()
            .unwrap_or_else(|| args.target.trim_end_matches('/').to_string()),
        purchases: plan.purchases,
        duration: plan.duration,
        timeout: plan.timeout,
        lanes,
    };
    let (history, writer) = match &args.history {
        Some(path) => {
            let (sink, writer) = history_writer(path.clone()).await.map_err(Failure::usage)?;
            (Some(sink), Some(writer))
        }
        None => (None, None),
    };

    let target = engine_plan.target.clone();
    eprintln!("storm: {} against {target}", plan.model_label);
    let progress = Arc::new(Progress::default());
    let bar = progress_bar(&plan);
    let ticker = tokio::spawn(show_progress(
        bar.clone(),
        progress.clone(),
        plan.purchases.is_some(),
    ));
    let storm = engine::run(engine_plan, progress.clone(), history).await?;
    ticker.abort();
    let end = if plan.purchases.is_some() {
        progress.sent.load(Relaxed)
    } else {
        storm.elapsed.as_secs()
    };
    update(&bar, &progress, end, "");
    bar.abandon();
    if let Some(writer) = writer {
        writer.await.context("the history writer stopped")??;
    }

    let summary = Summary::new(&storm, plan.model_label.clone(), plan.target_rate, raw);
    println!("{}", summary.rates_table());
    println!("{}", summary.outcomes_table());
    println!("{}", summary.latency_table());
    let mut document = summary.json();
    if let Some(events) = seated_events {
        // The zones' figures are the report's, not the verdict's: a sale that
        // cannot show its seat maps right now is still checked.
        match seats::maps_after_storm(&target, &events).await {
            Ok(maps) => {
                let zones = report::seating(&storm.recorder, &maps);
                if !zones.is_empty() {
                    println!("{}", report::seating_table(&zones));
                    document["seating"] = serde_json::Value::Array(zones);
                }
            }
            Err(error) => eprintln!("storm: no seat maps after the storm: {error:#}"),
        }
    }

    let mut verdict = None;
    if let (true, Some(services)) = (checking, &services) {
        let settled_in = settle(services, plan.settle).await?;
        match settled_in {
            Some(took) => println!(
                "settled: every order terminal {:.2} s after the storm",
                took.as_secs_f64()
            ),
            None => println!("not settled: orders still PENDING after {:?}", plan.settle),
        }
        document["settle_seconds"] = serde_json::json!(settled_in.map(|d| d.as_secs_f64()));
        let history = match &args.history {
            Some(path) => Some(flashtix_server::history::read(path)?),
            None => None,
        };
        let report = check::prove(services, history.as_deref(), None).await?;
        check::print_report(&report);
        verdict = Some(report.verdict);
        document["check"] = serde_json::to_value(&report).context("the report as JSON")?;
    }

    let mut missed = false;
    let mut judged = Vec::new();
    for threshold in &plan.thresholds {
        let (value, met) = threshold.judge(&summary);
        println!(
            "threshold {}: {} ({})",
            threshold.text,
            if met { "met" } else { "MISSED" },
            threshold.show(value)
        );
        missed |= !met;
        judged.push(serde_json::json!({"threshold": threshold.text, "value": value, "met": met}));
    }
    document["thresholds"] = serde_json::Value::Array(judged);
    if let Some(path) = &args.json {
        output::write_json(path, &document)?;
    }
    if let Some(path) = &args.hdr {
        let text = report::hgrm(&summary.all_from_intended);
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.report {
        let windows = match &args.shade {
            Some(shade) => flashtix_chaos::windows::read(shade).map_err(anyhow::Error::new)?,
            None => Vec::new(),
        };
        let page = html::Page {
            title: format!("flashtix storm against {}", target),
            document: &document,
            from_intended: &summary.all_from_intended,
            service: &summary.all_service,
            windows: &windows,
        };
        std::fs::write(path, page.render())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(match verdict {
        Some(Verdict::Fail) => ExitCode::from(1),
        _ if missed => ExitCode::from(3),
        _ => ExitCode::SUCCESS,
    })
}

/// The events to buy from: the ones named, or every event of the sale.
async fn events(args: &StormArgs, services: Option<&Services>) -> Result<Vec<i64>, Failure> {
    if !args.events.is_empty() {
        return Ok(args.events.clone());
    }
    let services = services.expect("connected when no event is named");
    let ids = flashtix_server::events::ids(&services.pool)
        .await
        .context("listing the sale's events")?;
    if ids.is_empty() {
        return Err(Failure::usage(anyhow::anyhow!(
            "the sale has no events: run `flashtix reset` first, or name one with --event"
        )));
    }
    Ok(ids)
}

/// Writes history lines as the lanes send them; ends when every lane has.
async fn history_writer(
    path: PathBuf,
) -> anyhow::Result<(
    mpsc::Sender<Attempt>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
)> {
    let file = tokio::fs::File::create(&path)
        .await
        .with_context(|| format!("creating {}", path.display()))?;
    let (sink, mut lines) = mpsc::channel::<Attempt>(65_536);
    let writer = tokio::spawn(async move {
        let mut out = tokio::io::BufWriter::new(file);
        while let Some(attempt) = lines.recv().await {
            let mut line = serde_json::to_vec(&attempt)?;
            line.push(b'\n');
            out.write_all(&line).await?;
        }
        out.flush().await?;
        Ok(())
    });
    Ok((sink, writer))
}

/// Waits until no order is PENDING; returns how long that took, or `None`
/// when the limit came first.
async fn settle(services: &Services, limit: Duration) -> anyhow::Result<Option<Duration>> {
    let started = tokio::time::Instant::now();
    let spinner = ProgressBar::new_spinner();
    loop {
        let pending: i64 =
            sqlx::query_scalar("SELECT count(*) FROM orders WHERE status = 'PENDING'")
                .fetch_one(&services.pool)
                .await
                .context("counting pending orders")?;
        if pending == 0 {
            spinner.finish_and_clear();
            return Ok(Some(started.elapsed()));
        }
        if started.elapsed() >= limit {
            spinner.finish_and_clear();
            return Ok(None);
        }
        spinner.set_message(format!(
            "settling: {pending} orders PENDING after {:.1} s (limit {limit:?})",
            started.elapsed().as_secs_f64()
        ));
        spinner.tick();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The live bar on a terminal (indicatif hides it elsewhere): purchases sent
/// of all (or seconds of the duration), the send rate over the last moment,
/// outcomes so far and the p99 from the intended send so far.
fn progress_bar(plan: &Validated) -> ProgressBar {
    let (length, unit) = match (plan.purchases, plan.duration) {
        (Some(purchases), _) => (purchases, "purchases"),
        (None, Some(duration)) => (duration.as_secs().max(1), "s"),
        (None, None) => (0, ""),
    };
    let bar = ProgressBar::new(length);
    let style = ProgressStyle::with_template(&format!(
        "{{elapsed_precise}} [{{bar:30}}] {{pos}}/{{len}} {unit}  {{msg}}"
    ))
    .expect("a valid template")
    .progress_chars("=> ");
    bar.set_style(style);
    bar
}

/// Redraws the bar four times a second until aborted.
async fn show_progress(bar: ProgressBar, progress: Arc<Progress>, by_purchases: bool) {
    let started = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut last_sent = 0;
    loop {
        tick.tick().await;
        let sent = progress.sent.load(Relaxed);
        let rate = (sent - last_sent) as f64 * 4.0;
        last_sent = sent;
        let position = if by_purchases {
            sent
        } else {
            started.elapsed().as_secs()
        };
        update(&bar, &progress, position, &format!("{rate:.0} sent/s  "));
    }
}

fn update(bar: &ProgressBar, progress: &Progress, position: u64, rate: &str) {
    bar.set_position(position);
    let p99 = progress.latency.percentile(99.0).map_or("-".into(), |p| {
        format!("{:.1} ms", p.as_secs_f64() * 1000.0)
    });
    bar.set_message(format!(
        "{rate}accepted {}  sold out {}  errors {}  p99 {p99}",
        progress.accepted.load(Relaxed),
        progress.sold_out.load(Relaxed),
        progress.failed.load(Relaxed),
    ));
}
