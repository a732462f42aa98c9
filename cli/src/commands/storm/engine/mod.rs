//! Sends the storm. The sends are split over lanes (purchase `i` to lane
//! `i mod lanes`). A lane is a thread with a runtime of its own; it keeps its
//! own requests in flight, its own HTTP connections and its own
//! [`Recorder`], and sleeps until each send's intended time. Each lane has
//! its share of the `--max-inflight` cap (or of the closed model's
//! concurrency), and opens that many connections before the clock starts:
//! mid-storm, only a double click's second request, or a connection the
//! server closed, opens one. Nothing
//! on the hot path is shared between lanes but the progress counters.
//!
//! Open model: sends follow the schedule whatever the server does; a send that
//! waits for a free slot goes out late, and the wait counts in its latency
//! from the intended time. Closed model: each lane keeps its share of
//! `--concurrency` requests in flight, each sent when the one before it ended
//! (latency is service time only).

mod classify;
mod http;
pub mod journal;
mod lane;
pub mod progress;
mod purchase;
mod shard;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::record::Recorder;
use super::workload::{Buyers, Schedule};
use http::{Endpoint, Transport};
use lane::Lane;
pub use progress::Progress;
use purchase::Sender;
pub use shard::Shard;

#[derive(Debug, Clone)]
pub enum Model {
    Open {
        schedule: Schedule,
        max_inflight: usize,
    },
    Closed {
        concurrency: usize,
    },
}

/// What each send does.
#[derive(Debug, Clone)]
pub enum Work {
    /// `POST /orders` for each purchase, under its idempotency key.
    Buy {
        buyers: Buyers,
        /// Tries again after a timeout, a connection error or a 5xx.
        retries: u32,
    },
    /// A plain request, no buy semantics: 2xx counts as accepted.
    Raw(Arc<RawRequest>),
}

/// What each `--raw` send is, besides its URL.
#[derive(Debug)]
pub struct RawRequest {
    pub method: hyper::Method,
    pub headers: hyper::HeaderMap,
    /// Empty: none. Shared by every send, never copied.
    pub body: bytes::Bytes,
}

/// How the storm sends: when, how many, where, how long it waits. What each
/// send is ([`Work`]) comes apart: it needs the sale's events.
#[derive(Debug, Clone)]
pub struct Sending {
    pub model: Model,
    /// The server's base URL (`Raw`: the whole URL).
    pub target: String,
    /// At most this many purchases.
    pub purchases: Option<u64>,
    /// No send intended after this.
    pub duration: Option<Duration>,
    pub timeout: Duration,
    pub lanes: usize,
    /// This process's share of the purchases.
    pub shard: Shard,
    /// When the storm's schedule begins (every shard's alike); `None`: as
    /// soon as the connections are warm.
    pub start_at: Option<DateTime<Utc>>,
    pub tls: Tls,
}

/// Whom an HTTPS target may be: anyone Mozilla's roots vouch for, anyone
/// the extra roots do, or, `insecure`, anyone at all.
#[derive(Debug, Clone, Default)]
pub struct Tls {
    pub roots: Vec<reqwest::Certificate>,
    pub insecure: bool,
}

impl Tls {
    /// `builder`, trusting what this trusts.
    pub fn apply(&self, builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        self.roots
            .iter()
            .fold(builder, |builder, root| {
                builder.add_root_certificate(root.clone())
            })
            .danger_accept_invalid_certs(self.insecure)
    }
}

impl Sending {
    pub(super) fn in_flight_cap(&self) -> usize {
        match self.model {
            Model::Open { max_inflight, .. } => max_inflight,
            Model::Closed { concurrency } => concurrency,
        }
    }
}

pub struct Storm {
    pub recorder: Recorder,
    pub started_at: DateTime<Utc>,
    pub elapsed: Duration,
    /// The CPU time (user and system, every thread) this process spent from
    /// the start to the last answer; of merged storms, the sum.
    pub cpu: Option<Duration>,
}

/// The CPU time this process has used so far, if the system says.
fn cpu_used() -> Option<Duration> {
    use nix::sys::resource::{getrusage, UsageWho};
    let usage = getrusage(UsageWho::RUSAGE_SELF).ok()?;
    let micros = |time: nix::sys::time::TimeVal| {
        Duration::from_secs(time.tv_sec() as u64) + Duration::from_micros(time.tv_usec() as u64)
    };
    Some(micros(usage.user_time()) + micros(usage.system_time()))
}

/// Runs the plan to its end: every purchase sent and answered (or timed out).
pub async fn run(
    plan: &Sending,
    work: Work,
    progress: Arc<Progress>,
    history: Option<journal::Sink>,
) -> anyhow::Result<Storm> {
    // Every lane is made before any starts: nothing is left waiting for a
    // lane that could not be made.
    let made = make_lanes(plan, &work, &progress, &history)?;
    let lanes = made.len();
    // Each lane says when it is warm; a lane that dies first closes it.
    let (warm_tx, mut warm_rx) = tokio::sync::mpsc::channel::<()>(lanes);
    let (start_tx, start_rx) = tokio::sync::watch::channel(None::<Instant>);
    let mut handles = Vec::new();
    for (number, lane) in made.into_iter().enumerate() {
        handles.push(spawn_lane(number, lane, warm_tx.clone(), start_rx.clone())?);
    }
    drop((history, warm_tx));
    for _ in 0..lanes {
        warm_rx
            .recv()
            .await
            .context("a storm lane stopped before the start")?;
    }
    let (start, started_at) = start_of(plan.start_at);
    let cpu_before = cpu_used();
    start_tx.send_replace(Some(start));
    let mut recorder = Recorder::default();
    for handle in handles {
        let lane = handle
            .await
            .context("a storm lane stopped before its end")?;
        recorder.merge(&lane);
    }
    let cpu = cpu_used()
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    Ok(Storm {
        recorder,
        started_at,
        elapsed: start.elapsed(),
        cpu,
    })
}

/// The storm's lanes, the in-flight cap split over them exactly (no lane
/// without a share), each with its own connections.
fn make_lanes(
    plan: &Sending,
    work: &Work,
    progress: &Arc<Progress>,
    history: &Option<journal::Sink>,
) -> anyhow::Result<Vec<Lane>> {
    let cap = plan.in_flight_cap().max(1);
    let lanes = plan.lanes.clamp(1, cap);
    let share = |lane: usize| cap / lanes + usize::from(lane < cap % lanes);
    let attempts = Arc::new(AtomicU64::new(0));
    let endpoint = match work {
        Work::Buy { .. } => format!("{}/orders", plan.target),
        Work::Raw(_) => plan.target.clone(),
    };
    let mut made = Vec::new();
    for lane in 0..lanes {
        let endpoint = Endpoint::parse(&endpoint)?;
        let sender = Arc::new(Sender {
            // Room for a double click's second connection too.
            transport: Transport::new(&endpoint, &plan.tls, plan.timeout, 2 * share(lane))?,
            endpoint,
            attempts: attempts.clone(),
            keep_history: history.is_some(),
        });
        made.push(Lane {
            number: plan.shard.index + lane as u64 * plan.shard.count,
            step: lanes as u64 * plan.shard.count,
            share: share(lane),
            // Each lane its own: nothing on the hot path is shared but the
            // counters.
            plan: Arc::new(plan.clone()),
            work: Arc::new(work.clone()),
            sender,
            slots: Arc::new(Semaphore::new(share(lane))),
            progress: progress.clone(),
            history: history.clone().map(journal::Batch::new),
            recorder: Recorder::default(),
        });
    }
    Ok(made)
}

/// Starts a lane on a thread with a runtime of its own (its connections'
/// tasks run beside it, and a send wakes nothing on another core): it warms
/// up, says so, waits for the start and storms. Its recorder comes back
/// through the receiver, unless the storm was called off.
fn spawn_lane(
    number: usize,
    lane: Lane,
    warm_tx: tokio::sync::mpsc::Sender<()>,
    mut start_rx: tokio::sync::watch::Receiver<Option<Instant>>,
) -> anyhow::Result<tokio::sync::oneshot::Receiver<Recorder>> {
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name(format!("storm-lane-{number}"))
        .spawn(move || {
            let recorder = runtime.block_on(async move {
                lane.warm().await;
                let _ = warm_tx.send(()).await;
                drop(warm_tx);
                // No start: the storm was called off (another lane died).
                let start = start_rx
                    .wait_for(Option::is_some)
                    .await
                    .ok()?
                    .as_ref()?
                    .to_owned();
                tokio::time::sleep_until(start).await;
                Some(lane.storm(start).await)
            });
            if let Some(recorder) = recorder {
                let _ = done_tx.send(recorder);
            }
        })?;
    Ok(done_rx)
}

/// When the schedule begins, on the clock the lanes keep and on the wall.
/// Anchored to `--start-at` if given: a shard that comes late sends late,
/// and its latency from the intended send says so.
fn start_of(start_at: Option<chrono::DateTime<Utc>>) -> (Instant, chrono::DateTime<Utc>) {
    match start_at {
        Some(at) => {
            let (now, wall) = (Instant::now(), Utc::now());
            let start = match (at - wall).to_std() {
                Ok(ahead) => now + ahead,
                Err(_) => now - (wall - at).to_std().unwrap_or_default(),
            };
            (start, at)
        }
        None => (Instant::now(), Utc::now()),
    }
}
