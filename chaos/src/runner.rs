//! The drill runner: seeds the sale, starts its roles, fires the drill's storm
//! through the front proxy, breaks things on the drill's timeline, heals
//! everything, waits for the sale to settle, and proves it with `check` and
//! the storm's history. Every step is a `flashtix` command or a process of the
//! stack, so what a drill proves is what an operator would see.
//!
//! Recovery after each fault is measured twice: the first answer that says
//! something definite about an order sent after the fault ended (buyers served
//! again), and the first moment no order has waited longer than
//! [`DRAINED_AGE`] to settle (the saga caught up). A fault has recovered when
//! both have happened.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use crate::drill::{Action, DrillFile, Fault};
use crate::proxy;
use crate::stack::{Dependencies, Sale, Shared, STOP_GRACE};

/// The saga has caught up when no PENDING order is older than this.
pub const DRAINED_AGE: f64 = 2.0;
/// How often the backlog is looked at.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
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
}

/// What a drill showed.
#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    pub drill: String,
    pub seed: u64,
    pub verdict: String,
    /// Why it failed (empty when it passed).
    pub reasons: Vec<String>,
    pub faults: Vec<FaultReport>,
    /// The storm's outcome counts.
    pub outcomes: BTreeMap<String, u64>,
    pub settle_seconds: Option<f64>,
    /// `flashtix check --json`'s document.
    pub check: Value,
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

/// One fault as it happened.
#[derive(Debug, Clone, Serialize)]
pub struct FaultReport {
    pub fault: String,
    /// Seconds from the storm's start.
    pub from: f64,
    pub to: f64,
    /// Attempts sent inside the window, by outcome.
    pub outcomes: BTreeMap<String, u64>,
    /// Of them, answered 5xx, timed out or not connected.
    pub errors: u64,
    /// Seconds after the window until a definite answer came back.
    pub served: Option<f64>,
    /// Seconds after the window until no order waited over [`DRAINED_AGE`].
    pub drained: Option<f64>,
    /// The later of the two: when the sale had recovered.
    pub recovered: Option<f64>,
}

/// A fault's window on the wall clock.
struct Window {
    label: String,
    from: DateTime<Utc>,
    to: Option<DateTime<Utc>>,
}

/// Runs one drill against `dependencies`; errors are the runner's own (a
/// process that would not start), not the sale's.
pub async fn run(run: &Run<'_>, dependencies: &Dependencies) -> io::Result<DrillReport> {
    let started = tokio::time::Instant::now();
    std::fs::create_dir_all(&run.dir)?;
    let direct = dependencies.direct();
    let mut env = direct.env();
    env.push(("FLASHTIX_NAMESPACE".into(), run.namespace.clone()));

    let reset = flashtix(run, &env, "reset", &["reset", "--yes"], &run.drill.sale).await?;
    if !reset.success() {
        return Err(io::Error::other(format!(
            "{}: reset failed (see {})",
            run.name,
            run.dir.join("reset.log").display()
        )));
    }
    let server_flags = flags(&run.drill.server);
    let sale = Sale::start(
        run.flashtix,
        &run.dir,
        &run.namespace,
        &dependencies.proxied(),
        &server_flags,
    )
    .await?;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(1))
        .connect_lazy(&direct.database)
        .map_err(io::Error::other)?;
    let backlog = Backlog::watch(pool.clone(), run.namespace.clone());

    // The storm, through the front proxy; its start is the drill's zero.
    let history = run.dir.join("history.jsonl");
    let shade = run.dir.join("windows.json");
    let storm_json = run.dir.join("storm.json");
    let mut storm_args: Vec<String> = [
        "storm",
        "--no-check",
        "--target",
        &sale.front_url(),
        "--history",
        &history.display().to_string(),
        "--json",
        &storm_json.display().to_string(),
        "--shade",
        &shade.display().to_string(),
        "--seed",
        &run.seed.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(report) = &run.report {
        storm_args.extend(["--report".into(), report.display().to_string()]);
    }
    storm_args.extend(flags(&run.drill.storm));
    let mut storm = Command::new(run.flashtix)
        .args(&storm_args)
        .envs(env.iter().cloned())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(run.dir.join("storm.log"))?)
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let begun = storm_started(
        storm.stderr.take().expect("piped"),
        run.dir.join("storm.err"),
    )
    .await;
    let zero = Utc::now();
    let clock = tokio::time::Instant::now();
    let windows = Windows::new(shade.clone(), zero);
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let (ended, storm_over) = tokio::sync::watch::channel(false);
    let mut faults = Vec::new();
    if begun {
        // Each fault on its own task: faults at the same moment happen
        // together, and a slow one (RabbitMQ restarting) holds up no other.
        for fault in run.drill.timeline(run.seed) {
            let targets = Targets {
                dependencies: dependencies.process_and_proxy(fault.target),
                role: sale.process(fault.target),
                front: sale.front.clone(),
                redis_port: dependencies.ports.redis,
                pool: pool.clone(),
                namespace: run.namespace.clone(),
                command: run
                    .drill
                    .command(fault.target, fault.action)
                    .map(str::to_owned),
                dir: run.dir.clone(),
            };
            faults.push(tokio::spawn(apply(
                fault,
                targets,
                clock,
                storm_over.clone(),
                windows.clone(),
                errors.clone(),
            )));
        }
    }
    let storm_status = storm.wait().await?;
    // Faults not yet begun are skipped, those under way end now.
    let _ = ended.send(true);
    for fault in faults {
        let _ = fault.await;
    }
    // Whatever is still broken is mended: the sale must settle.
    dependencies.heal().await?;
    sale.heal().await?;
    let healed = Utc::now();
    let windows = windows.close(healed)?;

    let settle_limit = limit(&run.drill.limits.settle, DEFAULT_SETTLE);
    let settled = settle(&pool, &run.namespace, settle_limit).await;
    let (check_document, check_verdict) = check(
        run,
        &env,
        &history,
        settle_limit.max(Duration::from_secs(10)),
    )
    .await?;
    backlog.stop();
    sale.stop().await;
    pool.close().await;

    // What the storm saw, inside each window and after it.
    let attempts = read_history(&history);
    let samples = backlog.samples();
    let recover_limit = limit(&run.drill.limits.recover, DEFAULT_RECOVER);
    let mut reasons = std::mem::take(&mut *errors.lock().expect("not poisoned"));
    if !begun || !storm_status.success() {
        reasons.push(format!(
            "the storm did not run to its end ({storm_status}; see {})",
            run.dir.join("storm.err").display()
        ));
    }
    let mut reports = Vec::new();
    for window in &windows {
        let report = measure(window, zero, &attempts, &samples);
        match report.recovered {
            Some(r) if r <= recover_limit.as_secs_f64() => {}
            Some(r) => reasons.push(format!(
                "{}: recovered after {r:.1} s, over the limit of {:.0} s",
                window.label,
                recover_limit.as_secs_f64()
            )),
            None => reasons.push(format!("{}: never recovered", window.label)),
        }
        reports.push(report);
    }
    match settled {
        Some(_) => {}
        None => reasons.push(format!(
            "orders still PENDING {:.0} s after the storm",
            settle_limit.as_secs_f64()
        )),
    }
    match check_verdict.as_str() {
        "PASS" => {}
        verdict => {
            for finding in check_document["findings"].as_array().into_iter().flatten() {
                if finding["verdict"] != "PASS" {
                    reasons.push(format!(
                        "{} {}: {}",
                        finding["invariant"].as_str().unwrap_or("?"),
                        finding["verdict"].as_str().unwrap_or("?"),
                        finding["detail"].as_str().unwrap_or("")
                    ));
                }
            }
            if reasons.is_empty() {
                reasons.push(format!("check: {verdict}"));
            }
        }
    }
    let mut outcomes = BTreeMap::new();
    for attempt in &attempts {
        *outcomes.entry(attempt.outcome.clone()).or_insert(0) += 1;
    }
    Ok(DrillReport {
        drill: run.name.to_owned(),
        seed: run.seed,
        verdict: if reasons.is_empty() { "PASS" } else { "FAIL" }.into(),
        reasons,
        faults: reports,
        outcomes,
        settle_seconds: settled.map(|d| d.as_secs_f64()),
        check: check_document,
        seconds: started.elapsed().as_secs_f64(),
        dir: run.dir.clone(),
    })
}

/// A fault in a few words: "kill payments", "latency 200ms postgres".
pub fn describe(fault: &Fault) -> String {
    let target = fault.target.name();
    match fault.action {
        Action::Latency => format!("latency {:?} {target}", fault.delay),
        Action::Bandwidth => format!("bandwidth {} B/s {target}", fault.bytes_per_second),
        action => format!("{} {target}", action.name()),
    }
}

/// The network fault an action switches on.
fn network(fault: &Fault) -> Option<proxy::Fault> {
    Some(match fault.action {
        Action::Latency => proxy::Fault::Latency {
            delay: fault.delay,
            jitter: fault.jitter,
        },
        Action::Blackhole => proxy::Fault::Blackhole,
        Action::Reset => proxy::Fault::Reset,
        Action::Bandwidth => proxy::Fault::Bandwidth {
            bytes_per_second: fault.bytes_per_second,
        },
        Action::DropResponses => proxy::Fault::DropResponses,
        _ => return None,
    })
}

/// What one fault acts on.
struct Targets {
    /// A dependency's process and the proxy in front of it.
    dependencies: Option<(Shared, Arc<proxy::Proxy>)>,
    /// A role's process (for `api`, the first of the two).
    role: Option<Shared>,
    /// The proxy the storm buys through.
    front: Arc<proxy::Proxy>,
    redis_port: u16,
    pool: PgPool,
    namespace: String,
    /// The drill's shell command for this action, if it gives one.
    command: Option<String>,
    dir: PathBuf,
}

impl Targets {
    fn process(&self) -> Option<&Shared> {
        self.dependencies
            .as_ref()
            .map(|(p, _)| p)
            .or(self.role.as_ref())
    }

    fn proxy(&self) -> &proxy::Proxy {
        match &self.dependencies {
            Some((_, proxy)) => proxy,
            None => &self.front,
        }
    }
}

/// One fault, start to end: waits for its moment, applies it, records its
/// window, and undoes it when its duration is over (or the storm is).
async fn apply(
    fault: Fault,
    targets: Targets,
    clock: tokio::time::Instant,
    mut storm_over: tokio::sync::watch::Receiver<bool>,
    windows: Windows,
    errors: Arc<Mutex<Vec<String>>>,
) {
    let label = describe(&fault);
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
    let window = windows.open(&label);
    if let Err(e) = begin(&fault, &targets).await {
        failed("", e);
    }
    let Some(until) = fault.until else {
        windows.shut(window, Utc::now());
        return;
    };
    tokio::select! {
        _ = tokio::time::sleep_until(clock + until) => {}
        _ = storm_over.wait_for(|over| *over) => {}
    }
    if let Err(e) = end(&fault, &targets).await {
        failed("ending it: ", e);
    }
    windows.shut(window, Utc::now());
}

async fn begin(fault: &Fault, targets: &Targets) -> io::Result<()> {
    if let Some(command) = &targets.command {
        return shell(command, &targets.dir).await;
    }
    if let Some(network) = network(fault) {
        targets.proxy().set(Some(network));
        return Ok(());
    }
    match fault.action {
        Action::Flush => return flush_redis(targets.redis_port).await,
        Action::Republish => return republish(&targets.pool, &targets.namespace).await,
        _ => {}
    }
    let process = targets.process().expect("checked by the drill file");
    let mut process = process.lock().await;
    match fault.action {
        Action::Kill => process.kill().await,
        Action::Stop => process.stop(STOP_GRACE).await.map(drop),
        Action::Start => process.start().await.map(drop),
        Action::Restart => process.restart(STOP_GRACE).await.map(drop),
        Action::Pause => {
            process.pause();
            Ok(())
        }
        Action::Resume => {
            process.resume();
            Ok(())
        }
        _ => unreachable!("network, flush and republish are handled above"),
    }
}

/// Undoes a fault that has a duration.
async fn end(fault: &Fault, targets: &Targets) -> io::Result<()> {
    if network(fault).is_some() {
        targets.proxy().set(None);
        return Ok(());
    }
    let Some(process) = targets.process() else {
        return Ok(());
    };
    let mut process = process.lock().await;
    match fault.action {
        Action::Kill | Action::Stop => process.start().await.map(drop),
        Action::Pause => {
            process.resume();
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The faults' windows as they happen, written for the storm's report each
/// time one opens or shuts.
#[derive(Clone)]
struct Windows {
    windows: Arc<Mutex<Vec<Window>>>,
    shade: PathBuf,
    zero: DateTime<Utc>,
}

impl Windows {
    fn new(shade: PathBuf, zero: DateTime<Utc>) -> Self {
        Self {
            windows: Arc::default(),
            shade,
            zero,
        }
    }

    fn open(&self, label: &str) -> usize {
        let mut windows = self.windows.lock().expect("not poisoned");
        windows.push(Window {
            label: label.to_owned(),
            from: Utc::now(),
            to: None,
        });
        let _ = write_shade(&self.shade, &windows, self.zero);
        windows.len() - 1
    }

    fn shut(&self, window: usize, at: DateTime<Utc>) {
        let mut windows = self.windows.lock().expect("not poisoned");
        windows[window].to = Some(at);
        let _ = write_shade(&self.shade, &windows, self.zero);
    }

    /// Every window, those still open shut at `at`, in the order they opened.
    fn close(&self, at: DateTime<Utc>) -> io::Result<Vec<Window>> {
        let mut windows = std::mem::take(&mut *self.windows.lock().expect("not poisoned"));
        for window in &mut windows {
            window.to.get_or_insert(at);
        }
        write_shade(&self.shade, &windows, self.zero)?;
        Ok(windows)
    }
}

async fn shell(command: &str, dir: &Path) -> io::Result<()> {
    let status = Command::new("sh")
        .args(["-c", command])
        .current_dir(dir)
        .status()
        .await?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("`{command}` exited {status}")))
    }
}

/// Redis loses every key (FLUSHALL, spoken in RESP on its own port).
async fn flush_redis(port: u16) -> io::Result<()> {
    let mut redis = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    redis.write_all(b"*1\r\n$8\r\nFLUSHALL\r\n").await?;
    let mut answer = String::new();
    BufReader::new(redis).read_line(&mut answer).await?;
    if answer.starts_with("+OK") {
        Ok(())
    } else {
        Err(io::Error::other(format!("FLUSHALL answered {answer:?}")))
    }
}

/// Every message already published goes out again (same message id): each
/// consumer sees it twice.
async fn republish(pool: &PgPool, namespace: &str) -> io::Result<()> {
    sqlx::query(&format!(
        "UPDATE {namespace}.outbox SET published_at = NULL WHERE published_at IS NOT NULL"
    ))
    .execute(pool)
    .await
    .map(drop)
    .map_err(io::Error::other)
}

/// Runs `flashtix COMMAND` with the drill's table as flags; its output goes
/// to `NAME.log` in the run's directory.
async fn flashtix(
    run: &Run<'_>,
    env: &[(String, String)],
    name: &str,
    args: &[&str],
    table: &toml::Table,
) -> io::Result<std::process::ExitStatus> {
    let log = std::fs::File::create(run.dir.join(format!("{name}.log")))?;
    Command::new(run.flashtix)
        .args(args)
        .args(flags(table))
        .envs(env.iter().cloned())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .await
}

/// A TOML table as command-line flags: `rate = 300.0` → `--rate 300`,
/// `yes = true` → `--yes`, a list → the flag once per item.
pub fn flags(table: &toml::Table) -> Vec<String> {
    let mut flags = Vec::new();
    for (key, value) in table {
        let values = match value {
            toml::Value::Array(items) => items.clone(),
            other => vec![other.clone()],
        };
        for value in values {
            match value {
                toml::Value::Boolean(true) => flags.push(format!("--{key}")),
                toml::Value::Boolean(false) => {}
                toml::Value::String(text) => flags.extend([format!("--{key}"), text]),
                toml::Value::Integer(n) => flags.extend([format!("--{key}"), n.to_string()]),
                toml::Value::Float(x) => flags.extend([format!("--{key}"), x.to_string()]),
                // Tables and dates are no flag: passed as written, the command
                // names the mistake.
                other => flags.extend([format!("--{key}"), format!("{other:?}")]),
            }
        }
    }
    flags
}

/// Copies the storm's stderr to `log`; true once it says it began sending.
async fn storm_started(stderr: tokio::process::ChildStderr, log: PathBuf) -> bool {
    let (began, said) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        let mut out = tokio::fs::File::create(&log).await.ok();
        let mut began = Some(began);
        while let Ok(Some(line)) = lines.next_line().await {
            if line.starts_with("storm: ") {
                if let Some(began) = began.take() {
                    let _ = began.send(());
                }
            }
            if let Some(out) = &mut out {
                let _ = out.write_all(format!("{line}\n").as_bytes()).await;
            }
        }
    });
    said.await.is_ok()
}

/// The windows as the storm's report shades them: seconds from its start.
fn write_shade(path: &Path, windows: &[Window], zero: DateTime<Utc>) -> io::Result<()> {
    let seconds = |t: DateTime<Utc>| (t - zero).num_milliseconds() as f64 / 1000.0;
    let document: Vec<Value> = windows
        .iter()
        .map(|w| {
            serde_json::json!({
                "label": w.label,
                "from": seconds(w.from),
                "to": w.to.map(seconds),
            })
        })
        .collect();
    let next = path.with_extension("json.new");
    std::fs::write(
        &next,
        serde_json::to_vec(&document).map_err(io::Error::other)?,
    )?;
    std::fs::rename(next, path)
}

fn limit(text: &Option<String>, default: Duration) -> Duration {
    text.as_deref()
        .and_then(|t| crate::drill::duration(t).ok())
        .unwrap_or(default)
}

/// Waits until no order is PENDING; how long that took, or `None`.
async fn settle(pool: &PgPool, namespace: &str, limit: Duration) -> Option<Duration> {
    let started = tokio::time::Instant::now();
    let query = format!("SELECT count(*) FROM {namespace}.orders WHERE status = 'PENDING'");
    loop {
        let pending: Result<i64, _> = sqlx::query_scalar(&query).fetch_one(pool).await;
        if let Ok(0) = pending {
            return Some(started.elapsed());
        }
        if started.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `flashtix check --history`, again while it says UNKNOWN (messages still
/// moving), until `limit`. Returns its JSON document and verdict.
async fn check(
    run: &Run<'_>,
    env: &[(String, String)],
    history: &Path,
    limit: Duration,
) -> io::Result<(Value, String)> {
    let started = tokio::time::Instant::now();
    let json = run.dir.join("check.json");
    loop {
        let args = [
            "check",
            "--history",
            &history.display().to_string(),
            "--json",
            &json.display().to_string(),
        ];
        let _ = std::fs::remove_file(&json);
        flashtix(run, env, "check", &args, &toml::Table::new()).await?;
        let document: Value = std::fs::read(&json)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or(Value::Null);
        let verdict = document["verdict"].as_str().unwrap_or("ERROR").to_owned();
        if verdict != "UNKNOWN" || started.elapsed() > limit {
            return Ok((document, verdict));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One line of the storm's history, as far as the runner needs it.
#[derive(serde::Deserialize)]
struct Attempt {
    sent_at: DateTime<Utc>,
    finished_at: DateTime<Utc>,
    outcome: String,
}

impl Attempt {
    /// The server said something definite about the order.
    fn definite(&self) -> bool {
        !matches!(
            self.outcome.as_str(),
            "in_progress" | "error" | "timeout" | "connect_error"
        )
    }
}

fn read_history(path: &Path) -> Vec<Attempt> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

fn measure(
    window: &Window,
    zero: DateTime<Utc>,
    attempts: &[Attempt],
    samples: &[Sample],
) -> FaultReport {
    let to = window.to.unwrap_or(window.from);
    let seconds = |t: DateTime<Utc>| (t - zero).num_milliseconds() as f64 / 1000.0;
    let after = |t: DateTime<Utc>| ((t - to).num_milliseconds() as f64 / 1000.0).max(0.0);
    let mut outcomes = BTreeMap::new();
    let mut errors = 0;
    for attempt in attempts {
        if attempt.sent_at >= window.from && attempt.sent_at <= to {
            *outcomes.entry(attempt.outcome.clone()).or_insert(0) += 1;
            errors += u64::from(!attempt.definite());
        }
    }
    // Buyers served again: the first definite answer to a request sent after
    // the window. No request after it (the storm had ended): nothing to wait for.
    let sent_after: Vec<&Attempt> = attempts.iter().filter(|a| a.sent_at >= to).collect();
    let served = if sent_after.is_empty() {
        Some(0.0)
    } else {
        sent_after
            .iter()
            .filter(|a| a.definite())
            .map(|a| a.finished_at)
            .min()
            .map(after)
    };
    let drained = samples
        .iter()
        .find(|(at, age)| *at >= to && matches!(age, Some(age) if *age <= DRAINED_AGE))
        .map(|(at, _)| after(*at));
    let recovered = match (served, drained) {
        (Some(s), Some(d)) => Some(s.max(d)),
        _ => None,
    };
    FaultReport {
        fault: window.label.clone(),
        from: seconds(window.from),
        to: seconds(to),
        outcomes,
        errors,
        served,
        drained,
        recovered,
    }
}

/// When the backlog was looked at, and the age of its oldest PENDING order
/// in seconds (`None`: Postgres did not answer).
type Sample = (DateTime<Utc>, Option<f64>);

/// Looks at the age of the oldest PENDING order every [`SAMPLE_EVERY`], from
/// the storm's start until stopped (`None` when Postgres did not answer).
struct Backlog {
    samples: Arc<Mutex<Vec<Sample>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Backlog {
    fn watch(pool: PgPool, namespace: String) -> Self {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let into = samples.clone();
        let query = format!(
            "SELECT COALESCE(EXTRACT(EPOCH FROM now() - min(created_at))::float8, 0)
             FROM {namespace}.orders WHERE status = 'PENDING'"
        );
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            loop {
                tick.tick().await;
                let age = tokio::time::timeout(
                    SAMPLE_EVERY * 4,
                    sqlx::query_scalar::<_, f64>(&query).fetch_one(&pool),
                )
                .await
                .ok()
                .and_then(Result::ok);
                into.lock().expect("not poisoned").push((Utc::now(), age));
            }
        });
        Self { samples, task }
    }

    fn stop(&self) {
        self.task.abort();
    }

    fn samples(&self) -> Vec<Sample> {
        self.samples.lock().expect("not poisoned").clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Buyers are served again at the first *definite* answer after the
    /// fault: a `request_in_progress` says nothing about the order, so it
    /// neither ends the outage nor counts as served.
    #[test]
    fn an_answer_in_progress_is_not_service_again() {
        let zero = Utc::now();
        let at = |ms: i64| zero + chrono::Duration::milliseconds(ms);
        let window = Window {
            label: "kill payments".into(),
            from: at(1_000),
            to: Some(at(2_000)),
        };
        let attempt = |sent: i64, finished: i64, outcome: &str| Attempt {
            sent_at: at(sent),
            finished_at: at(finished),
            outcome: outcome.into(),
        };
        let attempts = [
            attempt(1_500, 1_600, "in_progress"),
            attempt(1_600, 1_700, "accepted"),
            attempt(2_100, 2_200, "in_progress"),
            attempt(2_300, 3_500, "replayed"),
        ];
        let report = measure(&window, zero, &attempts, &[]);
        assert_eq!(report.errors, 1, "in the window, in_progress is unknown");
        assert_eq!(
            report.served,
            Some(1.5),
            "served at the replay, not at 2.2 s"
        );
    }

    #[test]
    fn a_table_becomes_the_flags_a_command_reads() {
        let table: toml::Table = toml::from_str(
            r#"
            rate = 300.0
            buyers = 4500
            quantity = "1:80,2:20"
            yes = true
            no-check = false
            threshold = ["p99<50ms", "error_rate<1%"]
            "#,
        )
        .unwrap();
        let flags = flags(&table);
        let pairs: Vec<String> = flags.chunks(2).map(|pair| pair.join(" ")).collect();
        for expected in [
            "--rate 300",
            "--buyers 4500",
            "--quantity 1:80,2:20",
            "--threshold p99<50ms",
            "--threshold error_rate<1%",
        ] {
            assert!(
                flags.join(" ").contains(expected),
                "{expected} in {pairs:?}"
            );
        }
        assert!(flags.contains(&"--yes".to_owned()));
        assert!(!flags.iter().any(|f| f == "--no-check"), "false is no flag");
    }

    fn at(seconds: f64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_700_000_000_000 + (seconds * 1000.0) as i64).unwrap()
    }

    fn attempt(sent: f64, finished: f64, outcome: &str) -> Attempt {
        Attempt {
            sent_at: at(sent),
            finished_at: at(finished),
            outcome: outcome.into(),
        }
    }

    #[test]
    fn recovery_is_the_later_of_buyers_served_and_the_backlog_drained() {
        let window = Window {
            label: "kill payments".into(),
            from: at(2.0),
            to: Some(at(5.0)),
        };
        let attempts = [
            attempt(1.0, 1.1, "accepted"),
            attempt(2.5, 5.5, "timeout"),
            attempt(3.0, 3.1, "error"),
            attempt(4.0, 4.1, "accepted"),
            // After the window: the first one still fails, the next is served.
            attempt(5.1, 5.2, "error"),
            attempt(5.3, 6.0, "sold_out"),
        ];
        let samples = [
            (at(4.0), Some(3.0)),
            (at(5.5), None),
            (at(6.5), Some(2.5)),
            (at(7.5), Some(1.0)),
        ];
        let report = measure(&window, at(0.0), &attempts, &samples);
        assert_eq!((report.from, report.to), (2.0, 5.0));
        assert_eq!(report.errors, 2, "the timeout and the 5xx sent inside");
        assert_eq!(report.outcomes["accepted"], 1);
        assert_eq!(report.served, Some(1.0), "the sold-out answer at 6.0");
        assert_eq!(report.drained, Some(2.5), "oldest PENDING 1 s old at 7.5");
        assert_eq!(report.recovered, Some(2.5));

        let never_drained = measure(&window, at(0.0), &attempts, &samples[..3]);
        assert_eq!(never_drained.recovered, None);
    }
}
