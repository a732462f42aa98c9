//! The tasks that keep the [`Board`] current, each on its own pace and none
//! waiting for another: every process's `/metrics` (with `/health` and
//! `/ready`), each event's stock stream, the broker's queues, the list of
//! events, a drill's fault windows. A source that fails is marked so on the
//! board and asked again; the screen goes on drawing what the others say.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flashtix_server::saga::broker::{self, Topology};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::board::{Board, Process, StockNow};
use super::scrape::Scrape;
use crate::commands::stock_stream::{self, Message};

pub type Shared = Arc<Mutex<Board>>;

/// How often `/ready` is asked: each answer opens connections to the
/// process's dependencies, so less often than the scrape.
const READY_EVERY: Duration = Duration::from_secs(5);
/// How long a stream waits for a process to say it serves the API.
const ROLES_AWAITED: Duration = Duration::from_millis(100);
/// How often the list of events is read again.
const EVENTS_EVERY: Duration = Duration::from_secs(5);

/// Where the sale is, and how often to look.
pub struct Sources {
    pub processes: Vec<String>,
    /// Only these events; `None`: every event of the sale.
    pub events: Option<Vec<i64>>,
    pub pool: PgPool,
    pub amqp_url: String,
    pub topology: Topology,
    /// A drill's `windows.json`.
    pub faults: Option<PathBuf>,
    pub every: Duration,
}

/// The running feeds; dropping it stops them.
pub struct Feeds(Vec<JoinHandle<()>>);

impl Drop for Feeds {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Starts every feed of `sources` into `board`.
pub fn start(board: &Shared, sources: Sources) -> Feeds {
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .build()
        .expect("an HTTP client without TLS settings builds");
    lock(board).processes = sources
        .processes
        .iter()
        .cloned()
        .map(Process::new)
        .collect();
    let mut tasks = Vec::new();
    for index in 0..sources.processes.len() {
        let process = watch_process(board.clone(), client.clone(), index, sources.every);
        tasks.push(tokio::spawn(process));
        let ready = watch_readiness(board.clone(), client.clone(), index, sources.every);
        tasks.push(tokio::spawn(ready));
    }
    let events = watch_events(board.clone(), client, sources.pool, sources.events);
    tasks.push(tokio::spawn(events));
    let queues = watch_queues(
        board.clone(),
        sources.amqp_url,
        sources.topology,
        sources.every,
    );
    tasks.push(tokio::spawn(queues));
    if let Some(path) = sources.faults {
        tasks.push(tokio::spawn(watch_faults(
            board.clone(),
            path,
            sources.every,
        )));
    }
    Feeds(tasks)
}

fn lock(board: &Shared) -> std::sync::MutexGuard<'_, Board> {
    board.lock().expect("no feed panics holding the board")
}

fn ticker(every: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tick
}

/// One process: its roles (`/health`) until known, and `/metrics` every tick.
async fn watch_process(board: Shared, client: reqwest::Client, index: usize, every: Duration) {
    let url = lock(&board).processes[index].url.clone();
    let limit = every.max(Duration::from_secs(1));
    let mut tick = ticker(every);
    loop {
        tick.tick().await;
        let roles = async {
            if !lock(&board).processes[index].roles.is_empty() {
                return None;
            }
            let health = get_json(&client, &format!("{url}/health"), limit)
                .await
                .ok()?;
            let roles = health["roles"].as_array()?.iter();
            Some(
                roles
                    .filter_map(|role| role.as_str().map(str::to_owned))
                    .collect(),
            )
        };
        let metrics_url = format!("{url}/metrics");
        let metrics = get_text(&client, &metrics_url, limit);
        let (roles, metrics) = tokio::join!(roles, metrics);
        let mut board = lock(&board);
        let process = &mut board.processes[index];
        if let Some(roles) = roles {
            process.roles = roles;
        }
        match metrics {
            Ok(text) => process.scraped(Instant::now(), Scrape::parse(&text)),
            Err(error) => process.failed(error),
        }
    }
}

/// One process's `/ready`, every [`READY_EVERY`], on its own so that a slow
/// answer holds up no scrape.
async fn watch_readiness(board: Shared, client: reqwest::Client, index: usize, every: Duration) {
    let url = lock(&board).processes[index].url.clone();
    let limit = every.max(Duration::from_secs(1));
    let mut tick = ticker(READY_EVERY);
    loop {
        tick.tick().await;
        let ready = readiness(&client, &url, limit).await;
        lock(&board).processes[index].ready = Some(ready);
    }
}

async fn get_text(client: &reqwest::Client, url: &str, limit: Duration) -> Result<String, String> {
    let response = client.get(url).timeout(limit).send().await;
    let response = response.map_err(|error| short(&error))?;
    if !response.status().is_success() {
        return Err(format!("answered {}", response.status()));
    }
    response.text().await.map_err(|error| short(&error))
}

async fn get_json(
    client: &reqwest::Client,
    url: &str,
    limit: Duration,
) -> Result<serde_json::Value, String> {
    let text = get_text(client, url, limit).await?;
    serde_json::from_str(&text).map_err(|error| error.to_string())
}

/// `Ok`, or the dependencies `/ready` says are not.
async fn readiness(client: &reqwest::Client, url: &str, limit: Duration) -> Result<(), String> {
    let response = client.get(format!("{url}/ready")).timeout(limit * 2).send();
    let response = response.await.map_err(|error| short(&error))?;
    if response.status().is_success() {
        return Ok(());
    }
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    let failing: Vec<&str> = body["checks"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, check)| check.as_str() != Some("ok"))
        .map(|(name, _)| name.as_str())
        .collect();
    Err(format!("{} down", failing.join(", ")))
}

/// An HTTP error in a few words: the kind, not the URL again.
fn short(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "no answer in time".into()
    } else if error.is_connect() {
        "refused".into()
    } else {
        "cut off".into()
    }
}

/// Each event's stream task, stopped with the task that started it.
#[derive(Default)]
struct Streams(BTreeMap<i64, JoinHandle<()>>);

impl Drop for Streams {
    fn drop(&mut self) {
        for stream in self.0.values() {
            stream.abort();
        }
    }
}

/// The events to show: `only`, or every event of the sale, read again every
/// [`EVENTS_EVERY`]; each event shown has a stream of its own.
async fn watch_events(
    board: Shared,
    client: reqwest::Client,
    pool: PgPool,
    only: Option<Vec<i64>>,
) {
    let mut streams = Streams::default();
    let mut tick = ticker(EVENTS_EVERY);
    loop {
        tick.tick().await;
        let listed: Result<Vec<(i64, String)>, sqlx::Error> =
            sqlx::query_as("SELECT id, name FROM events ORDER BY id")
                .fetch_all(&pool)
                .await;
        let read = listed.is_ok();
        // Names from Postgres; `None` where it could not say.
        let events: Vec<(i64, Option<String>)> = match (&only, listed) {
            (Some(only), Ok(listed)) => only
                .iter()
                .map(|&id| (id, listed.iter().find(|(seen, _)| *seen == id)))
                .map(|(id, found)| (id, Some(found.map_or("(no such event)", |(_, n)| n))))
                .map(|(id, name)| (id, name.map(str::to_owned)))
                .collect(),
            (None, Ok(listed)) => listed.into_iter().map(|(id, n)| (id, Some(n))).collect(),
            (only, Err(error)) => {
                lock(&board).events_error = Some(format!("Postgres: {error}"));
                let known: Vec<i64> = match only {
                    Some(only) => only.clone(),
                    None => lock(&board).events.keys().copied().collect(),
                };
                known.into_iter().map(|id| (id, None)).collect()
            }
        };
        let mut shown = lock(&board);
        if read {
            shown.events_error = None;
        }
        shown
            .events
            .retain(|id, _| events.iter().any(|(seen, _)| seen == id));
        streams.0.retain(|id, stream| {
            let kept = shown.events.contains_key(id);
            if !kept {
                stream.abort();
            }
            kept
        });
        for (id, name) in events {
            let watch = shown.events.entry(id).or_default();
            if let Some(name) = name {
                watch.name = name;
            }
            streams
                .0
                .entry(id)
                .or_insert_with(|| tokio::spawn(watch_stock(board.clone(), client.clone(), id)));
        }
    }
}

/// One event's stock stream, from whichever API process answers, resumed
/// with `Last-Event-ID` after a cut.
async fn watch_stock(board: Shared, client: reqwest::Client, event: i64) {
    let api = || {
        lock(&board)
            .processes
            .iter()
            .find(|process| process.serves_api() && process.error.is_none())
            .map(|process| process.url.clone())
    };
    let told = |message: Message| {
        let Ok(stock) = serde_json::from_str::<StockNow>(&message.data) else {
            return;
        };
        if let Some(watch) = lock(&board).events.get_mut(&event) {
            watch.stock = Some(stock);
        }
    };
    let open = |streaming: bool| {
        if let Some(watch) = lock(&board).events.get_mut(&event) {
            watch.streaming = streaming;
        }
    };
    // Until a process has said it runs the API (its first /health, a moment
    // away), look again soon.
    stock_stream::follow(client, event, api, told, open, ROLES_AWAITED).await;
}

/// Every queue of the sale's topology: its ready messages, over one
/// connection kept open (and opened again after an error).
async fn watch_queues(board: Shared, amqp_url: String, topology: Topology, every: Duration) {
    let limit = every.max(Duration::from_secs(1));
    // Shown without the namespace: `payment.requested`, not `flashtix.payment.requested`.
    let prefix = topology.queue(""); // the namespace and its dot
    let mut connection: Option<lapin::Connection> = None;
    let mut tick = ticker(every);
    loop {
        tick.tick().await;
        if connection.is_none() {
            match tokio::time::timeout(limit, broker::connect(&amqp_url)).await {
                Ok(Ok(opened)) => connection = Some(opened),
                Ok(Err(error)) => {
                    lock(&board).queues = Some(Err(format!("{error:#}")));
                    continue;
                }
                Err(_) => {
                    lock(&board).queues = Some(Err("no answer in time".into()));
                    continue;
                }
            }
        }
        let Some(open) = &connection else { continue };
        let mut depths = Vec::new();
        let mut failed = None;
        for queue in topology.queues() {
            match tokio::time::timeout(limit, broker::depth(open, &queue)).await {
                Ok(Ok(depth)) => {
                    let name = queue.strip_prefix(&prefix).unwrap_or(&queue).to_owned();
                    depths.push((name, depth));
                }
                Ok(Err(error)) => failed = Some(error.to_string()),
                Err(_) => failed = Some("no answer in time".into()),
            }
            if failed.is_some() {
                break;
            }
        }
        lock(&board).queues = Some(match failed {
            None => Ok(depths),
            Some(error) => {
                connection = None;
                Err(error)
            }
        });
    }
}

/// A drill's fault windows, as its runner rewrites them.
async fn watch_faults(board: Shared, path: PathBuf, every: Duration) {
    let mut tick = ticker(every);
    loop {
        tick.tick().await;
        let read = flashtix_chaos::windows::read(&path).map_err(|error| error.to_string());
        lock(&board).faults = Some(read);
    }
}
