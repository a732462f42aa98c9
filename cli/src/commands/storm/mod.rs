//! `flashtix storm`: fires a buy storm at the sale, measures it without
//! coordinated omission, waits for the sale to settle and proves it with
//! `check` and the storm's own history.

mod document;
mod engine;
mod fairness;
pub mod html;
pub mod merge;
mod options;
mod record;
mod report;
mod scenario;
mod seats;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use flashtix_model::history::Attempt;
use flashtix_server::invariants::Verdict;
use flashtix_server::runtime::config::ConnectionArgs;
use indicatif::{ProgressBar, ProgressStyle};

pub use options::StormOptions;
pub use scenario::Scenario;

use super::{check, reset, Failure, Outcome, Services};
use crate::{output, say};
use document::{Judged, StormDocument};
use engine::{Model, Progress, RawRequest, Shard, Storm, Tls, Work};
use report::{Summary, Threshold};
use workload::{Buyers, Quantities, Schedule};

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
    #[command(flatten)]
    options: StormOptions,
    /// An event to buy from (repeatable); without it, every event of the sale
    #[arg(long = "event")]
    events: Vec<i64>,
    /// Buy from every event of the sale (what happens without --event)
    #[arg(long = "events", value_name = "all", value_parser = ["all"], conflicts_with = "events")]
    every_event: Option<String>,

    /// Calibration: plain requests to this URL with the same engine; no buying, no check
    #[arg(long, value_name = "URL")]
    raw: Option<String>,
    /// The method of --raw requests
    #[arg(long, default_value = "GET")]
    method: String,
    /// A header of every --raw request, like 'Authorization: Bearer x'
    /// (repeatable)
    #[arg(long = "header", value_name = "NAME: VALUE", requires = "raw")]
    headers: Vec<String>,
    /// The body of every --raw request: the text itself, or @FILE for a
    /// file's bytes
    #[arg(long, value_name = "TEXT|@FILE", requires = "raw")]
    body: Option<String>,
    /// Trust this CA (PEM; repeatable) for an https:// --target or --raw,
    /// besides Mozilla's roots
    #[arg(long = "cacert", value_name = "FILE.pem")]
    cacerts: Vec<PathBuf>,
    /// Accept any certificate of an https:// target (a test server's own):
    /// no check of who answers
    #[arg(long)]
    insecure: bool,

    /// Write one JSON line per attempt (the history `check --history` reads)
    #[arg(long)]
    history: Option<PathBuf>,
    #[command(flatten)]
    outputs: Outputs,
    /// Skip the settle wait and the invariants
    #[arg(long)]
    no_check: bool,
    /// Tasks sending in parallel (default: one per core)
    #[arg(long, hide = true)]
    lanes: Option<usize>,
    /// Send only shard I of N of the storm: the purchases whose number is I
    /// modulo N, at the times the whole storm would (run N shards, on as many
    /// machines, with one --seed and one --start-at)
    #[arg(long, value_name = "I/N", value_parser = Shard::parse, requires = "start_at")]
    shard: Option<Shard>,
    /// Begin the schedule at this moment (RFC 3339, like
    /// 2026-12-01T18:00:00Z), so that shards on several machines begin
    /// together
    #[arg(long, value_name = "TIME")]
    start_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The storm, checked once: the flags laid over the scenario, the defaults
/// filled in, every value in range. Everything after reads this.
pub struct StormPlan {
    /// How the engine sends: the model, where, how many, how long, the
    /// shard and its start. `sending.target` is the sale's base URL, or the
    /// `--raw` URL.
    sending: engine::Plan,
    /// The model as the tables name it.
    model_label: String,
    /// The peak rate the schedule asks for, if it asks for one.
    target_rate: Option<f64>,
    settle: Duration,
    thresholds: Vec<Threshold>,
    /// What each send does, before the events are known.
    sends: Sends,
    /// Settle and check after the storm.
    check: bool,
    /// For the requests around the storm (the seat maps).
    client: reqwest::Client,
    /// Where the results go.
    history: Option<PathBuf>,
    outputs: Outputs,
}

/// The files a storm's results can be written to (by `storm` and `merge`).
#[derive(clap::Args, Clone)]
pub struct Outputs {
    /// Write the results as JSON to this file (`-`: stdout); `flashtix
    /// merge` reads them back
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write one self-contained HTML page with the charts and tables
    #[arg(long, value_name = "FILE.html")]
    report: Option<PathBuf>,
    /// Write the latency from the intended send of every attempt as an HDR
    /// percentile distribution (.hgrm, milliseconds)
    #[arg(long, value_name = "FILE.hgrm")]
    hdr: Option<PathBuf>,
    /// Write the per-second series as CSV: each second's sends, answers by
    /// outcome, and p50 and p99 from the intended send
    #[arg(long, value_name = "FILE.csv")]
    csv: Option<PathBuf>,
    /// Shade these time windows on the report's charts: a JSON list of
    /// {label, from, to} in seconds from the start (what `chaos` writes as it
    /// breaks things; read when the report is written)
    #[arg(long, hide = true, value_name = "FILE")]
    shade: Option<PathBuf>,
}

enum Sends {
    Raw(Arc<RawRequest>),
    Buy(Buying),
}

/// A buy storm's buyers, before their events are resolved.
struct Buying {
    /// The events named; empty: every event of the sale.
    events: Vec<i64>,
    seed: u64,
    quantities: Quantities,
    duplicates: f64,
    revisits: f64,
    seat_retry: f64,
    retries: u32,
}

impl StormPlan {
    /// Checks the storm `args` ask for, their settings laid over `file`'s.
    pub fn new(args: &StormArgs, file: StormOptions) -> anyhow::Result<Self> {
        let options = args.options.clone().over(file);
        let purchases = options.buyers;
        if purchases == Some(0) {
            bail!("--buyers must be at least 1");
        }
        let (model, model_label, target_rate) = model(&options)?;
        let shard = args.shard.unwrap_or(Shard::WHOLE);
        // A shard asks for its share of the whole storm's rate.
        let target_rate = target_rate.map(|rate| rate / shard.count as f64);
        if let Some(at) = args.start_at {
            if at < chrono::Utc::now() - chrono::TimeDelta::seconds(1) {
                bail!(
                    "--start-at {at} has passed: give a moment ahead, which every shard waits for"
                );
            }
        }
        if purchases.is_none() && options.duration.is_none() {
            bail!("say when the storm ends: --buyers N, --duration D, or both");
        }
        let share = |flag: &str, share: Option<f64>, default: f64| {
            let share = share.unwrap_or(default);
            if (0.0..=1.0).contains(&share) {
                Ok(share)
            } else {
                Err(anyhow::anyhow!(
                    "{flag} is a share from 0 to 1, got {share}"
                ))
            }
        };
        let duplicates = share("--duplicates", options.duplicates, 0.0)?;
        let revisits = share("--revisit", options.revisit, 0.0)?;
        let seat_retry = share("--seat-retry", options.seat_retry, 0.5)?;
        let timeout = options.timeout.unwrap_or(Duration::from_secs(10));
        if timeout.is_zero() {
            bail!("--timeout must be above 0");
        }
        let thresholds = options.thresholds;
        let quantities = options.quantity.unwrap_or_else(Quantities::one);
        let (target, sends) = match &args.raw {
            Some(url) => {
                if args.reset {
                    bail!("--reset seeds a sale to buy from; --raw buys nothing");
                }
                (url.clone(), Sends::Raw(Arc::new(raw_request(args)?)))
            }
            None => (
                args.target.trim_end_matches('/').to_owned(),
                Sends::Buy(Buying {
                    events: args.events.clone(),
                    seed: options.seed.unwrap_or(1),
                    quantities,
                    duplicates,
                    revisits,
                    seat_retry,
                    retries: options.retries.unwrap_or(0),
                }),
            ),
        };
        let tls = Tls {
            roots: args
                .cacerts
                .iter()
                .map(|path| read_roots(path))
                .collect::<anyhow::Result<Vec<_>>>()?
                .concat(),
            insecure: args.insecure,
        };
        let client = tls
            .apply(reqwest::Client::builder())
            .build()
            .context("an HTTP client")?;
        Ok(Self {
            // A shard cannot check the sale alone: the other shards' orders
            // are not in its history.
            check: !args.no_check && matches!(sends, Sends::Buy(_)) && shard == Shard::WHOLE,
            sending: engine::Plan {
                model,
                target,
                purchases,
                duration: options.duration,
                timeout,
                lanes: args
                    .lanes
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
                shard,
                start_at: args.start_at,
                tls,
            },
            model_label,
            target_rate,
            settle: options.settle.unwrap_or(Duration::from_secs(60)),
            thresholds,
            sends,
            client,
            history: args.history.clone(),
            outputs: args.outputs.clone(),
        })
    }

    fn raw(&self) -> bool {
        matches!(self.sends, Sends::Raw(_))
    }

    /// Whether the storm needs the sale's database: to check it, or to list
    /// its events.
    fn needs_services(&self) -> bool {
        self.check || matches!(&self.sends, Sends::Buy(buying) if buying.events.is_empty())
    }

    /// What the engine sends, the events resolved (and the seated ones among
    /// them, for the seat maps after the storm).
    async fn work(&self, services: Option<&Services>) -> Result<(Work, Vec<i64>), Failure> {
        let buying = match &self.sends {
            Sends::Raw(request) => return Ok((Work::Raw(request.clone()), Vec::new())),
            Sends::Buy(buying) => buying,
        };
        let events = if buying.events.is_empty() {
            every_event(services.expect("connected to list the events")).await?
        } else {
            buying.events.clone()
        };
        let seated = seats::fetch(&self.client, &self.sending.target, &events)
            .await
            .map_err(Failure::unreachable)?;
        let seated_events = seated.keys().copied().collect();
        let work = Work::Buy {
            buyers: Buyers {
                seed: buying.seed,
                events,
                quantities: buying.quantities.clone(),
                duplicates: buying.duplicates,
                revisits: buying.revisits,
                seated,
                seat_retry: buying.seat_retry,
            },
            retries: buying.retries,
        };
        Ok((work, seated_events))
    }
}

/// The CA certificates to trust in a PEM file (one or a bundle).
fn read_roots(path: &std::path::Path) -> anyhow::Result<Vec<reqwest::Certificate>> {
    let pem =
        std::fs::read(path).with_context(|| format!("--cacert: reading {}", path.display()))?;
    let roots = reqwest::Certificate::from_pem_bundle(&pem).unwrap_or_default();
    if roots.is_empty() {
        bail!(
            "--cacert {}: not a PEM certificate (no -----BEGIN CERTIFICATE----- in it)",
            path.display()
        );
    }
    Ok(roots)
}

/// The `--raw` request the flags describe: method, headers and body.
fn raw_request(args: &StormArgs) -> anyhow::Result<RawRequest> {
    let method = args
        .method
        .parse()
        .map_err(|_| anyhow::anyhow!("--method {:?} is not an HTTP method", args.method))?;
    let mut headers = reqwest::header::HeaderMap::new();
    for header in &args.headers {
        let bad = || anyhow::anyhow!("--header {header:?} is not 'Name: value'");
        let (name, value) = header.split_once(':').ok_or_else(bad)?;
        let name =
            reqwest::header::HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| bad())?;
        let value = reqwest::header::HeaderValue::from_str(value.trim()).map_err(|_| bad())?;
        headers.append(name, value);
    }
    let body = match args.body.as_deref() {
        Some(text) => match text.strip_prefix('@') {
            Some(path) => std::fs::read(path).with_context(|| format!("--body: reading {path}"))?,
            None => text.as_bytes().to_vec(),
        },
        None => Vec::new(),
    };
    Ok(RawRequest {
        method,
        headers,
        body: body.into(),
    })
}

/// The model the settings name (an open one at 1000/s if none), its label
/// and the peak rate it asks for.
fn model(options: &StormOptions) -> anyhow::Result<(Model, String, Option<f64>)> {
    if let Some(concurrency) = options.concurrency {
        if concurrency == 0 {
            bail!("--concurrency must be at least 1");
        }
        let label = format!("closed (service time), {concurrency} in flight");
        return Ok((Model::Closed { concurrency }, label, None));
    }
    let schedule = if let Some(ramp) = options.ramp {
        ramp
    } else if let Some(within) = options.spike {
        let buyers = options
            .buyers
            .context("--spike needs --buyers: how many buyers in the window")?;
        Schedule::Spike { within, buyers }
    } else {
        let rate = options.rate.unwrap_or(1000.0);
        if !(rate > 0.0 && rate.is_finite()) {
            bail!("--rate must be above 0, got {rate}");
        }
        Schedule::Constant { rate }
    };
    let max_inflight = options.max_inflight.unwrap_or(1024);
    if max_inflight == 0 {
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
        max_inflight,
    };
    Ok((model, label, target))
}

/// `flashtix storm`: the flags, and the scenario file they name.
pub async fn run(args: StormArgs) -> Outcome {
    let scenario = match &args.scenario {
        Some(path) => Scenario::read(path).map_err(Failure::usage)?,
        None => Scenario::default(),
    };
    run_scenario(args, scenario).await
}

/// A storm from flags and a scenario (what the flags say wins over it): plan,
/// fire, settle and check, write the results.
pub async fn run_scenario(args: StormArgs, scenario: Scenario) -> Outcome {
    if let Some(description) = &scenario.description {
        eprintln!("scenario: {description}");
    }
    let plan = StormPlan::new(&args, scenario.storm).map_err(Failure::usage)?;
    if args.reset {
        let sale = scenario.sale.unwrap_or_default();
        let (namespace, events) = reset::seed(&args.connections, &sale, false).await?;
        reset::print_seeded(&namespace, &events);
    }
    let services = if plan.needs_services() {
        let services = Services::connect(&args.connections).await?;
        if plan.check {
            // A sale the storm could not prove is refused before any send.
            let named = match &plan.sends {
                Sends::Buy(buying) => buying.events.as_slice(),
                Sends::Raw(_) => &[],
            };
            check::something_to_check(&services, named).await?;
        }
        Some(services)
    } else {
        None
    };
    let (work, seated_events) = plan.work(services.as_ref()).await?;
    let storm = fire(&plan, work).await?;
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
    summary.print();
    let mut document = summary.document();
    if plan.sending.shard != Shard::WHOLE {
        document.shard = Some(plan.sending.shard);
    }
    if !seated_events.is_empty() {
        // The zones' figures are the report's, not the verdict's: a sale that
        // cannot show its seat maps right now is still checked.
        let zones = seats::maps_after_storm(&plan.client, &plan.sending.target, &seated_events)
            .await
            .and_then(|maps| report::seating(&storm.recorder, &maps));
        match zones {
            Ok(zones) => {
                if !zones.is_empty() {
                    say!("{}", report::seating_table(&zones));
                }
                document.seating = zones;
            }
            Err(error) => eprintln!("storm: no seat maps after the storm: {error:#}"),
        }
    }
    let events = history
        .as_deref()
        .map(|history| fairness::of(history, storm.started_at))
        .unwrap_or_default();
    if !events.is_empty() {
        say!("{}", report::fairness_table(&events));
    }
    document.fairness = events;
    let verdict = match (&services, plan.check) {
        (Some(services), true) => {
            Some(settle_and_check(&plan, services, history.as_deref(), &mut document).await?)
        }
        _ => None,
    };
    let missed = judge(&plan.thresholds, &summary, &mut document);
    let title = format!("flashtix storm against {}", plan.sending.target);
    plan.outputs.write(&title, &summary, &document)?;
    // What the sale did first, then how fast: FAIL, UNKNOWN, a missed threshold.
    Ok(match verdict {
        Some(verdict @ (Verdict::Fail | Verdict::Unknown)) => check::exit_code(verdict),
        _ if missed => ExitCode::from(3),
        _ => ExitCode::SUCCESS,
    })
}

/// Sends the storm with a live progress bar, the history written as it goes.
async fn fire(plan: &StormPlan, work: Work) -> Result<Storm, Failure> {
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
    let progress = Arc::new(Progress::default());
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
/// both go into the document.
async fn settle_and_check(
    plan: &StormPlan,
    services: &Services,
    history: Option<&[Attempt]>,
    document: &mut StormDocument,
) -> Result<Verdict, Failure> {
    let history = history.map(flashtix_server::invariants::History::new);
    let (settled, report) =
        check::settle_and_prove(services, history, None, plan.settle, Some("the storm")).await?;
    document.settle_seconds = Some(match settled {
        check::Settled::After(took) => Some(took.as_secs_f64()),
        check::Settled::Pending(_) => None,
    });
    check::print_report(&report);
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

impl Outputs {
    /// Writes the files asked for: JSON, HDR distribution, CSV, HTML report.
    fn write(
        &self,
        title: &str,
        summary: &Summary,
        document: &StormDocument,
    ) -> Result<(), Failure> {
        if let Some(path) = &self.json {
            output::write_json(path, document)?;
        }
        if let Some(path) = &self.hdr {
            let text = report::hgrm(&summary.all_from_intended);
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        if let Some(path) = &self.csv {
            let text = report::seconds_csv(&document.seconds);
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        if let Some(path) = &self.report {
            let windows = match &self.shade {
                Some(shade) => flashtix_chaos::windows::read(shade).map_err(anyhow::Error::new)?,
                None => Vec::new(),
            };
            let page = html::Page {
                title: title.to_owned(),
                document,
                from_intended: &summary.all_from_intended,
                service: &summary.all_service,
                windows: &windows,
            };
            std::fs::write(path, page.render())
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }
}

/// Every event of the sale, for a storm that names none.
async fn every_event(services: &Services) -> Result<Vec<i64>, Failure> {
    let ids = flashtix_server::catalogue::events::ids(&services.pool)
        .await
        .context("listing the sale's events")?;
    if ids.is_empty() {
        return Err(Failure::usage(anyhow::anyhow!(
            "the sale has no events: run `flashtix reset` first, or name one with --event"
        )));
    }
    Ok(ids)
}

/// The live bar on a terminal (indicatif hides it elsewhere): purchases sent
/// of all (or seconds of the duration), the send rate over the last moment,
/// outcomes so far and the p99 from the intended send so far.
fn progress_bar(plan: &StormPlan) -> ProgressBar {
    let (length, unit) = match (plan.sending.purchases, plan.sending.duration) {
        (Some(purchases), _) => (plan.sending.shard.share_of(purchases), "purchases"),
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
