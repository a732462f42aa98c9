//! `flashtix chaos list | run NAME… | all | proxy`: failure drills. The drill runner
//! lives in the chaos crate; here are the flags, the tables and the exit code
//! (0 when every drill passed, 1 when one broke, 5 when one could not be
//! proven and none broke).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use flashtix_chaos::drill::DrillFile;
use flashtix_chaos::driver::docker;
use flashtix_chaos::driver::{local::Dependencies, Stack};
use flashtix_chaos::faults;
use flashtix_chaos::runner::{self, DrillReport, Run};
use flashtix_chaos::switchboard::{Route, Switchboard};
use flashtix_model::report::Verdict;
use flashtix_server::startup::signalled;

use flashtix_server::runtime::config::ServerArgs;

use super::storm::Scenario;
use super::{parse_flags, Exit, Failure};
use crate::{output, say};

#[derive(clap::Args)]
pub struct ChaosArgs {
    #[command(subcommand)]
    command: ChaosCommand,
}

#[derive(clap::Subcommand)]
enum ChaosCommand {
    /// The drills of the catalogue, with what each breaks
    List(Catalogue),
    /// Run the drills named (a name from the catalogue, or a drill file)
    Run {
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
        #[command(flatten)]
        options: RunOptions,
    },
    /// Run every drill of the catalogue
    All(RunOptions),
    /// Run fault proxies switched from outside (the docker driver's `faults`
    /// container runs this)
    Proxy(ProxyArgs),
}

#[derive(clap::Args)]
struct ProxyArgs {
    /// Where switches are taken
    #[arg(long, default_value = "0.0.0.0:7000")]
    control: std::net::SocketAddr,
    /// A proxy: NAME=LISTEN_PORT=HOST:PORT[,HOST:PORT…] (several upstreams:
    /// balanced)
    #[arg(long, required = true, value_name = "ROUTE")]
    route: Vec<Route>,
    /// The address the proxies listen on
    #[arg(long, default_value = "0.0.0.0")]
    host: std::net::IpAddr,
}

#[derive(clap::Args)]
struct Catalogue {
    /// Where the drill files are
    #[arg(long, env = "FLASHTIX_DRILLS", default_value = "scenarios/chaos")]
    drills: PathBuf,
}

#[derive(clap::Args)]
struct RunOptions {
    #[command(flatten)]
    catalogue: Catalogue,
    /// Run each drill this many times, the seed one higher each time
    #[arg(long, default_value_t = 1)]
    repeat: u32,
    /// Places the faults within their windows (and seeds the storm)
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Who breaks things: `local` starts Postgres, Redis and RabbitMQ of its
    /// own (on free ports, in a temporary directory) and the sale's roles as
    /// processes; `docker` runs the Compose stack (its own project, ports on
    /// 127.0.0.1) and acts on its containers; the commands table of a drill overrides
    /// single actions under either
    #[arg(long, default_value = "local", value_parser = ["local", "docker"])]
    driver: String,
    /// The docker driver's Compose file
    #[arg(long, default_value = "docker-compose.yml", value_name = "FILE")]
    compose_file: PathBuf,
    /// Variables for the Compose file, like the images to run (the docker
    /// driver; `docker/offline.env` names the images scripts/offline-images
    /// builds)
    #[arg(long, value_name = "FILE")]
    env_file: Option<PathBuf>,
    /// Write every drill's report as JSON to this file
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write the storm report of each drill, fault windows shaded (several
    /// drills: FILE is an index linking one page per drill)
    #[arg(long, value_name = "FILE.html")]
    report: Option<PathBuf>,
    /// Keep the logs, histories and reports of drills that passed too
    #[arg(long)]
    keep: bool,
    /// Serve a live web page of each drill's storm at ADDR (127.0.0.1:5665
    /// when no ADDR is given), fault windows opening and closing: one drill
    /// after another, the open page follows the next
    #[arg(long, value_name = "ADDR", num_args = 0..=1,
          default_missing_value = "127.0.0.1:5665")]
    dashboard: Option<std::net::SocketAddr>,
}

pub async fn run(args: ChaosArgs) -> Exit {
    match args.command {
        ChaosCommand::List(catalogue) => list(&catalogue),
        ChaosCommand::Run { names, options } => {
            let drills = names
                .iter()
                .map(|name| load(&options.catalogue.drills, name))
                .collect::<anyhow::Result<Vec<_>>>()
                .map_err(Failure::usage)?;
            run_drills(drills, &options).await
        }
        ChaosCommand::All(options) => {
            let drills = catalogue(&options.catalogue.drills).map_err(Failure::usage)?;
            run_drills(drills, &options).await
        }
        ChaosCommand::Proxy(args) => proxy(args).await,
    }
}

async fn proxy(args: ProxyArgs) -> Exit {
    let board = Switchboard::bind(args.host, &args.route, args.control)
        .await
        .context("starting the fault proxies")
        .map_err(Failure::unreachable)?;
    let names: Vec<&str> = args.route.iter().map(|r| r.name.as_str()).collect();
    eprintln!(
        "fault proxies {} up; switched on {}",
        names.join(", "),
        args.control
    );
    tokio::select! {
        served = board.serve() => served.context("taking switches")?,
        () = signalled() => {}
    }
    Ok(ExitCode::SUCCESS)
}

/// The stack the drills share, as the driver makes it.
async fn stack(options: &RunOptions, work: &Path) -> anyhow::Result<Stack> {
    if options.driver == "docker" {
        if !options.compose_file.exists() {
            bail!(
                "no Compose file at {} (--compose-file)",
                options.compose_file.display()
            );
        }
        eprintln!(
            "chaos: bringing up the Compose stack of {} (docker driver)",
            options.compose_file.display()
        );
        // Unique even where pids repeat (a container's pid 1, say).
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let project = format!("flashtix-chaos-{}-{started}", std::process::id());
        let stack = docker::Dependencies::start(
            &work.join("compose"),
            &project,
            &options.compose_file,
            options.env_file.clone(),
        )
        .await
        .context("bringing up the Compose stack")?;
        return Ok(Stack::Docker(stack));
    }
    eprintln!("chaos: starting Postgres, Redis and RabbitMQ of our own (local driver)");
    let dependencies = Dependencies::start(&work.join("services"))
        .await
        .context("starting the drill's own services")?;
    Ok(Stack::Local(dependencies))
}

fn list(place: &Catalogue) -> Exit {
    let drills = catalogue(&place.drills).map_err(Failure::usage)?;
    let mut table = output::table(&["drill", "faults", "what it proves"]);
    for (name, drill) in &drills {
        let faults: Vec<String> = drill.timeline(1).iter().map(faults::describe).collect();
        table.add_row(vec![
            name.clone(),
            faults.join(", "),
            drill.description.clone(),
        ]);
    }
    say!("{table}");
    Ok(ExitCode::SUCCESS)
}

/// Every drill file of the directory, by name.
fn catalogue(dir: &Path) -> anyhow::Result<Vec<(String, DrillFile)>> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("reading the drills in {}", dir.display()))?;
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.strip_suffix(".toml")?.to_owned();
            Some(name)
        })
        .collect();
    names.sort();
    if names.is_empty() {
        return Err(anyhow!("no drill files (NAME.toml) in {}", dir.display()));
    }
    names.iter().map(|name| load(dir, name)).collect()
}

/// A drill by catalogue name, or by path.
fn load(dir: &Path, name: &str) -> anyhow::Result<(String, DrillFile)> {
    let path = if name.ends_with(".toml") {
        PathBuf::from(name)
    } else {
        dir.join(format!("{name}.toml"))
    };
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "no drill {name:?} ({} does not open; `flashtix chaos list` shows the catalogue)",
            path.display()
        )
    })?;
    let drill = DrillFile::parse(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    typed(&drill).with_context(|| path.display().to_string())?;
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or(name)
        .to_owned();
    Ok((stem, drill))
}

/// A drill's `[sale]`, `[storm]` and `[server]` read into the types `reset`,
/// `storm` and `serve` read (a scenario file's `[sale]` and `[storm]` are
/// read into the same), so a mistake is named as the drill loads, not once
/// its sale runs; and no fault may fall after its storm stops sending.
fn typed(drill: &DrillFile) -> anyhow::Result<()> {
    let scenario = Scenario::of(&drill.sale, &drill.storm)?;
    let flags = flashtix_chaos::steps::flags(&drill.server);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    if let Err(wrong) = parse_flags::<ServerArgs>(&flags) {
        let said = wrong.to_string();
        let first = said.lines().next().unwrap_or_default();
        bail!("[server]: {}", first.trim_start_matches("error: "));
    }
    if let Some(sending) = scenario.storm.sending_for() {
        drill.faults_before(sending).map_err(|e| anyhow!(e))?;
    }
    Ok(())
}

async fn run_drills(drills: Vec<(String, DrillFile)>, options: &RunOptions) -> Exit {
    if options.repeat == 0 {
        return Err(Failure::usage(anyhow!("--repeat must be at least 1")));
    }
    let flashtix = std::env::current_exe().context("finding the flashtix binary")?;
    let work = std::env::temp_dir().join(format!("flashtix-chaos-{}", std::process::id()));
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let stack = stack(options, &work).await.map_err(Failure::unreachable)?;
    // Interrupted, the stack still comes down: no container or process of
    // ours is left behind.
    let reports = tokio::select! {
        reports = each_drill(&drills, options, &stack, &work, &flashtix) => reports,
        () = signalled() => Err(anyhow!("interrupted")),
    };
    stack.stop().await;
    let reports = reports?;

    print_summary(&reports);
    if let Some(path) = &options.json {
        output::write_json(path, &reports)?;
    }
    if let (Some(path), true) = (&options.report, reports.len() > 1) {
        std::fs::write(path, index(&reports, path))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let passed = reports.iter().all(DrillReport::passed);
    if passed && !options.keep {
        let _ = std::fs::remove_dir_all(&work);
    } else {
        say!("logs, histories and reports: {}", work.display());
    }
    Ok(super::check::exit_code(worst(&reports)))
}

/// The worst verdict of the runs: one drill broken makes the whole FAIL, one
/// not proven (and none broken) UNKNOWN.
fn worst(reports: &[DrillReport]) -> Verdict {
    reports
        .iter()
        .map(|r| r.verdict)
        .max()
        .unwrap_or(Verdict::Pass)
}

/// Runs every drill `--repeat` times on `stack`, printing each report.
async fn each_drill(
    drills: &[(String, DrillFile)],
    options: &RunOptions,
    stack: &Stack,
    work: &Path,
    flashtix: &Path,
) -> anyhow::Result<Vec<DrillReport>> {
    let runs = drills.len() * options.repeat as usize;
    if let Some(address) = options.dashboard {
        eprintln!("chaos: each drill's storm live at http://{address}/");
    }
    let mut reports = Vec::new();
    let mut number = 0;
    for (name, drill) in drills {
        for repeat in 0..options.repeat {
            number += 1;
            let seed = options.seed + u64::from(repeat);
            eprintln!(
                "chaos: [{number}/{runs}] {name} (seed {seed}): {}",
                drill.description
            );
            let dir = work.join(format!("{name}-{seed}"));
            eprintln!(
                "chaos:   watch it live: flashtix watch --drill {}",
                dir.display()
            );
            let run = Run {
                name,
                drill,
                seed,
                namespace: format!("drill_{number}"),
                dir,
                flashtix,
                report: options
                    .report
                    .as_deref()
                    .map(|path| page_path(path, runs, name, seed)),
                dashboard: options.dashboard,
            };
            let report = runner::run(&run, stack)
                .await
                .with_context(|| format!("running {name}"))?;
            print_drill(&report);
            reports.push(report);
        }
    }
    Ok(reports)
}

/// Where one drill's page goes: FILE itself for a single run, else beside it.
fn page_path(path: &Path, runs: usize, name: &str, seed: u64) -> PathBuf {
    if runs == 1 {
        return path.to_path_buf();
    }
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("chaos");
    path.with_file_name(format!("{stem}-{name}-{seed}.html"))
}

fn seconds(value: Option<f64>) -> String {
    value.map_or("never".into(), |s| format!("{s:.1} s"))
}

fn print_drill(report: &DrillReport) {
    let mut faults = output::table(&[
        "fault",
        "window",
        "in the window",
        "errors",
        "served again",
        "drained",
        "recovered",
    ]);
    for fault in &report.faults {
        let outcomes: Vec<String> = fault
            .outcomes
            .iter()
            .map(|(outcome, n)| format!("{outcome} {n}"))
            .collect();
        faults.add_row(vec![
            fault.fault.clone(),
            format!("{:.1}–{:.1} s", fault.from, fault.to),
            outcomes.join(", "),
            fault.errors.to_string(),
            seconds(fault.served),
            seconds(fault.drained),
            seconds(fault.recovered),
        ]);
    }
    say!("{faults}");
    if let Some(check) = &report.check {
        say!("{}", output::report_table(check));
    }
    let outcomes: Vec<String> = report
        .outcomes
        .iter()
        .map(|(outcome, n)| format!("{outcome} {n}"))
        .collect();
    say!(
        "{} (seed {}): {} in {:.0} s; storm: {}; settled {}",
        report.drill,
        report.seed,
        report.verdict,
        report.seconds,
        outcomes.join(", "),
        match (report.settle_seconds, &report.check) {
            (Some(s), _) => format!("{s:.1} s after the storm"),
            (None, Some(_)) => "never".into(),
            (None, None) => "unknown (check gave no report)".into(),
        },
    );
    for reason in &report.reasons {
        say!("  - {reason}");
    }
}

fn print_summary(reports: &[DrillReport]) {
    let mut table = output::table(&["drill", "seed", "recovered", "settled", "verdict"]);
    for report in reports {
        table.add_row(vec![
            report.drill.clone(),
            report.seed.to_string(),
            seconds(report.recovery()),
            seconds(report.settle_seconds),
            report.verdict.to_string(),
        ]);
    }
    say!("{table}");
    let runs = reports.len();
    let count = |verdict| reports.iter().filter(|r| r.verdict == verdict).count();
    match worst(reports) {
        Verdict::Pass => say!("PASS: every drill held ({runs} runs)"),
        Verdict::Unknown => say!(
            "UNKNOWN: {} of {runs} runs could not be proven (none broke)",
            count(Verdict::Unknown)
        ),
        Verdict::Fail => say!("FAIL: {} of {runs} runs broke", count(Verdict::Fail)),
    }
}

/// The index page of several drills' reports.
fn index(reports: &[DrillReport], path: &Path) -> String {
    let runs = reports.len();
    let mut rows = String::new();
    for report in reports {
        let page = page_path(path, runs, &report.drill, report.seed);
        let link = page.file_name().and_then(|n| n.to_str()).unwrap_or("");
        rows.push_str(&format!(
            "<tr><td><a href=\"{link}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td>\
             <td class=\"{v}\">{v}</td><td>{}</td></tr>",
            report.drill,
            report.seed,
            seconds(report.recovery()),
            seconds(report.settle_seconds),
            report.reasons.join("; ").replace('<', "&lt;"),
            v = report.verdict,
        ));
    }
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>flashtix chaos</title>\
         <style>body{{font:14px/1.4 system-ui,sans-serif;margin:2em auto;max-width:960px}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.2em .6em}}\
         .PASS{{color:#2e7d32;font-weight:bold}}.FAIL{{color:#c62828;font-weight:bold}}\
         .UNKNOWN{{color:#b26a00;font-weight:bold}}</style>\
         </head><body><h1>flashtix chaos</h1><table><tr><th>drill</th><th>seed</th>\
         <th>recovered</th><th>settled</th><th>verdict</th><th>why</th></tr>{rows}</table>\
         </body></html>"
    )
}
