//! Sends the storm. The sends are split over lanes (one task each, purchase
//! `i` to lane `i mod lanes`); a lane keeps its own requests in flight, its
//! own HTTP connections and its own [`Recorder`], and sleeps until each send's
//! intended time. Nothing on the hot path is shared but a semaphore (the
//! `--max-inflight` cap) and the progress counters.
//!
//! Open model: sends follow the schedule whatever the server does; a send that
//! waits for a free slot goes out late, and the wait counts in its latency
//! from the intended time. Closed model: each lane keeps its share of
//! `--concurrency` requests in flight, each sent when the one before it ended
//! (latency is service time only).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use flashtix_server::history::{Attempt, Outcome};
use flashtix_server::seating::zone_of;
use futures_util::stream::{FuturesUnordered, StreamExt};
use reqwest::{Client, StatusCode};
use serde_json::Value;
use tokio::sync::{mpsc, Barrier, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use uuid::Uuid;

use super::record::{Measured, Recorder, Sold};
use super::workload::{Buyers, Purchase, Schedule};

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
    pub method: reqwest::Method,
    pub headers: reqwest::header::HeaderMap,
    pub body: Option<Vec<u8>>,
}

/// How the storm sends: when, how many, where, how long it waits. What each
/// send is ([`Work`]) comes apart: it needs the sale's events.
#[derive(Debug, Clone)]
pub struct Plan {
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

/// Shard `index` of `count` sends the purchases whose number is `index`
/// modulo `count`, at the times the whole storm's schedule gives them: the
/// shards of one seeded storm send, between them, exactly its purchases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "ShardFields")]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

/// The most shards one storm is sent in.
const MAX_SHARDS: u64 = 10_000;

/// A shard as a document writes it, checked as `--shard` is.
#[derive(serde::Deserialize)]
struct ShardFields {
    index: u64,
    count: u64,
}

impl TryFrom<ShardFields> for Shard {
    type Error = String;

    fn try_from(fields: ShardFields) -> Result<Self, String> {
        Self::parse(&format!("{}/{}", fields.index, fields.count))
    }
}

impl Shard {
    pub const WHOLE: Self = Self { index: 0, count: 1 };

    /// How many of `purchases` are this shard's.
    pub fn share_of(&self, purchases: u64) -> u64 {
        (purchases + self.count - 1 - self.index) / self.count
    }

    /// Parses `I/N`, 0 ≤ I < N.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad =
            || format!("--shard {text:?}: give I/N with 0 <= I < N <= {MAX_SHARDS}, like 0/2");
        let (index, count) = text.split_once('/').ok_or_else(bad)?;
        let index: u64 = index.trim().parse().map_err(|_| bad())?;
        let count: u64 = count.trim().parse().map_err(|_| bad())?;
        if index >= count || count > MAX_SHARDS {
            return Err(bad());
        }
        Ok(Self { index, count })
    }
}

impl Plan {
    fn in_flight_cap(&self) -> usize {
        match self.model {
            Model::Open { max_inflight, .. } => max_inflight,
            Model::Closed { concurrency } => concurrency,
        }
    }
}

/// Counters the progress bar reads while the storm runs.
#[derive(Default)]
pub struct Progress {
    /// Purchases sent (a double click or a retry is one purchase).
    pub sent: AtomicU64,
    pub answered: AtomicU64,
    pub accepted: AtomicU64,
    pub sold_out: AtomicU64,
    pub failed: AtomicU64,
    pub latency: LiveLatency,
}

/// Sub-buckets per power of two: values are told apart to within 1/8.
const SUB_BUCKETS: usize = 8;

/// Latency from the intended send, coarsely, in atomic buckets that the lanes
/// add to and the progress bar reads at the same time: no lock. The exact
/// figures are the lanes' HDR histograms, merged at the end.
pub struct LiveLatency {
    buckets: [AtomicU64; 64 * SUB_BUCKETS],
}

impl Default for LiveLatency {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl LiveLatency {
    pub fn record(&self, waited: Duration) {
        // Below 8 µs nothing is told apart (an HTTP answer takes longer).
        let micros = (waited.as_micros() as u64).max(8);
        self.buckets[bucket(micros)].fetch_add(1, Relaxed);
    }

    /// The upper edge of the bucket holding the percentile; `None` before any answer.
    pub fn percentile(&self, percentile: f64) -> Option<Duration> {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        let wanted = ((percentile / 100.0 * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        counts.iter().enumerate().find_map(|(index, &count)| {
            seen += count;
            (seen >= wanted).then(|| Duration::from_micros(upper_edge(index)))
        })
    }
}

/// The bucket of a value of at least 8: its power of two, then which eighth of it.
fn bucket(micros: u64) -> usize {
    let power = 63 - micros.leading_zeros() as usize;
    let eighth = (micros >> (power - 3)) & 7;
    power * SUB_BUCKETS + eighth as usize
}

fn upper_edge(index: usize) -> u64 {
    let (power, eighth) = (index / SUB_BUCKETS, (index % SUB_BUCKETS) as u64);
    ((9 + eighth) << power) >> 3
}

/// Where the history lines go, if anywhere.
pub type HistorySink = Option<mpsc::Sender<Attempt>>;

pub struct Storm {
    pub recorder: Recorder,
    pub started_at: DateTime<Utc>,
    pub elapsed: Duration,
}

/// Runs the plan to its end: every purchase sent and answered (or timed out).
pub async fn run(
    plan: &Plan,
    work: Work,
    progress: Arc<Progress>,
    history: HistorySink,
) -> anyhow::Result<Storm> {
    let lanes = plan.lanes.max(1);
    let per_lane = plan.in_flight_cap().div_ceil(lanes).max(1);
    let barrier = Arc::new(Barrier::new(lanes + 1));
    let slots = Arc::new(Semaphore::new(plan.in_flight_cap().max(1)));
    let attempts = Arc::new(AtomicU64::new(0));
    let (start_tx, start_rx) = tokio::sync::watch::channel(None::<Instant>);
    let mut handles = Vec::new();
    for lane in 0..lanes {
        let client = plan
            .tls
            .apply(Client::builder())
            .http1_only()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(per_lane)
            .timeout(plan.timeout)
            .build()?;
        let lane = Lane {
            number: plan.shard.index + lane as u64 * plan.shard.count,
            step: lanes as u64 * plan.shard.count,
            lanes: lanes as u64,
            // Each lane its own: nothing on the hot path is shared but the
            // slots and the counters.
            plan: Arc::new(plan.clone()),
            work: Arc::new(work.clone()),
            client,
            slots: slots.clone(),
            progress: progress.clone(),
            history: history.clone(),
            attempts: attempts.clone(),
            recorder: Recorder::default(),
        };
        let barrier = barrier.clone();
        let mut start_rx = start_rx.clone();
        handles.push(tokio::spawn(async move {
            lane.warm(per_lane).await;
            barrier.wait().await;
            let start = start_rx
                .wait_for(Option::is_some)
                .await
                .ok()
                .and_then(|start| *start)
                .expect("the start is sent once every lane is warm");
            tokio::time::sleep_until(start).await;
            lane.storm(start).await
        }));
    }
    drop(history);
    barrier.wait().await;
    let (start, started_at) = match plan.start_at {
        // Anchored to the common moment: a shard that comes late sends late,
        // and its latency from the intended send says so.
        Some(at) => {
            let (now, wall) = (Instant::now(), Utc::now());
            let start = match (at - wall).to_std() {
                Ok(ahead) => now + ahead,
                Err(_) => now - (wall - at).to_std().unwrap_or_default(),
            };
            (start, at)
        }
        None => (Instant::now(), Utc::now()),
    };
    start_tx.send_replace(Some(start));
    let mut recorder = Recorder::default();
    for handle in handles {
        recorder.merge(&handle.await?);
    }
    Ok(Storm {
        recorder,
        started_at,
        elapsed: start.elapsed(),
    })
}

struct Lane {
    /// The next purchase this lane sends, and how far apart its purchases are.
    number: u64,
    step: u64,
    /// Lanes of this process (a closed model's share of the concurrency).
    lanes: u64,
    plan: Arc<Plan>,
    work: Arc<Work>,
    client: Client,
    slots: Arc<Semaphore>,
    progress: Arc<Progress>,
    history: HistorySink,
    attempts: Arc<AtomicU64>,
    recorder: Recorder,
}

/// One attempt's result, for the recorder and the history.
struct Done {
    measured: Measured,
    attempt: Option<Attempt>,
}

impl Lane {
    /// Opens up to `connections` keep-alive connections before the clock
    /// starts, so a spike measures the sale, not TCP handshakes.
    async fn warm(&self, connections: usize) {
        let url = match *self.work {
            Work::Buy { .. } => format!("{}/health", self.plan.target),
            Work::Raw(_) => self.plan.target.clone(),
        };
        let connections = connections.min(256);
        let warming: FuturesUnordered<_> = (0..connections)
            .map(|_| self.client.get(&url).send())
            .collect();
        warming.for_each(|_| async {}).await;
    }

    async fn storm(mut self, start: Instant) -> Recorder {
        let mut inflight = FuturesUnordered::new();
        let mut number = self.number;
        while let Some(due) = self.due(number, start, inflight.len()) {
            let due = match due {
                Some(due) => due,
                // Closed model, lane full: wait for one to end.
                None => {
                    let done = inflight.next().await.expect("the lane is full");
                    self.record(done).await;
                    continue;
                }
            };
            // Answers are recorded while waiting for the send's time and a slot.
            while Instant::now() < due {
                tokio::select! {
                    biased;
                    Some(done) = inflight.next() => self.record(done).await,
                    () = tokio::time::sleep_until(due) => {}
                }
            }
            let ready = Instant::now();
            let slot = loop {
                tokio::select! {
                    biased;
                    slot = self.slots.clone().acquire_owned() => break slot.expect("never closed"),
                    Some(done) = inflight.next() => self.record(done).await,
                }
            };
            let sent = Instant::now();
            match self.plan.model {
                Model::Open { .. } => self.recorder.sent(sent - start, sent - due, sent - ready),
                // No schedule to be late for: each send waits for an answer.
                Model::Closed { .. } => {
                    self.recorder
                        .sent(sent - start, Duration::ZERO, Duration::ZERO)
                }
            }
            self.progress.sent.fetch_add(1, Relaxed);
            inflight.push(self.job(number, start, due, slot));
            number += self.step;
        }
        while let Some(done) = inflight.next().await {
            self.record(done).await;
        }
        self.recorder
    }

    /// When send `number` is due: `None` when the storm is over for this lane;
    /// `Some(None)` when a closed lane is full and must wait for an answer.
    fn due(&self, number: u64, start: Instant, inflight: usize) -> Option<Option<Instant>> {
        if self.plan.purchases.is_some_and(|limit| number >= limit) {
            return None;
        }
        let (due, offset) = match &self.plan.model {
            Model::Open { schedule, .. } => {
                let offset = schedule.intended(number);
                (start + offset, offset)
            }
            Model::Closed { concurrency } => {
                let share = concurrency.div_ceil(self.lanes as usize);
                if inflight >= share {
                    return Some(None);
                }
                let now = Instant::now();
                (now, now - start)
            }
        };
        if self.plan.duration.is_some_and(|limit| offset >= limit) {
            return None;
        }
        Some(Some(due))
    }

    async fn record(&mut self, done: Vec<Done>) {
        for done in done {
            let outcome = done.measured.outcome;
            self.recorder.answered(&done.measured);
            self.progress.answered.fetch_add(1, Relaxed);
            let measured = &done.measured;
            let waited = measured.finished.saturating_sub(measured.intended);
            self.progress.latency.record(waited);
            let counter = match outcome {
                Outcome::Accepted => Some(&self.progress.accepted),
                Outcome::SoldOut => Some(&self.progress.sold_out),
                failure if failure.is_failure() => Some(&self.progress.failed),
                _ => None,
            };
            if let Some(counter) = counter {
                counter.fetch_add(1, Relaxed);
            }
            if let (Some(sink), Some(attempt)) = (&self.history, done.attempt) {
                // The writer only stops when the storm is over.
                let _ = sink.send(attempt).await;
            }
        }
    }

    /// One purchase (or one raw request), with its duplicate and retries.
    fn job(
        &self,
        number: u64,
        start: Instant,
        due: Instant,
        slot: OwnedSemaphorePermit,
    ) -> impl std::future::Future<Output = Vec<Done>> + use<> {
        let client = self.client.clone();
        let target = self.plan.target.clone();
        let work = self.work.clone();
        let attempts = self.attempts.clone();
        let keep_history = self.history.is_some();
        let slots = self.slots.clone();
        async move {
            let mut slot = slot;
            let context = Context {
                client,
                target,
                start,
                due,
                attempts,
                keep_history,
            };
            match &*work {
                Work::Raw(request) => vec![context.raw(request).await],
                Work::Buy { buyers, retries } => {
                    let retries = *retries;
                    let purchase = buyers.purchase(number);
                    let mut done = if purchase.duplicated {
                        let (first, second) = tokio::join!(
                            context.buy(&purchase, retries),
                            context.buy(&purchase, retries)
                        );
                        first.into_iter().chain(second).collect()
                    } else {
                        context.buy(&purchase, retries).await
                    };
                    let lost_seats = done
                        .iter()
                        .any(|d| d.measured.outcome == Outcome::SeatTaken)
                        && !done.iter().any(|d| {
                            matches!(d.measured.outcome, Outcome::Accepted | Outcome::Replayed)
                        });
                    if let Some(fallback) = purchase
                        .fallback()
                        .filter(|_| lost_seats && purchase.falls_back)
                    {
                        done.extend(context.buy(&fallback, retries).await);
                    }
                    let answered = done.iter().any(|d| d.measured.outcome.is_definite());
                    if purchase.revisits && answered {
                        // The buyer is away meanwhile: the slot is free for others.
                        drop(slot);
                        tokio::time::sleep(REVISIT_AFTER).await;
                        slot = slots.acquire_owned().await.expect("never closed");
                        done.extend(context.revisit(&purchase, retries).await);
                    }
                    drop(slot);
                    done
                }
            }
        }
    }
}

/// What one job needs to send and time its attempts.
struct Context {
    client: Client,
    target: String,
    start: Instant,
    due: Instant,
    attempts: Arc<AtomicU64>,
    keep_history: bool,
}

/// The first pause before a retry; it doubles up to [`RETRY_PAUSE_MAX`].
const RETRY_PAUSE: Duration = Duration::from_millis(50);
const RETRY_PAUSE_MAX: Duration = Duration::from_secs(2);
/// How long after its answer a revisiting buyer asks again.
const REVISIT_AFTER: Duration = Duration::from_secs(1);

impl Context {
    async fn raw(&self, request: &RawRequest) -> Done {
        let mut builder = self
            .client
            .request(request.method.clone(), &self.target)
            .headers(request.headers.clone());
        if let Some(body) = &request.body {
            builder = builder.body(body.clone());
        }
        let sent = Instant::now();
        let answer = builder.send().await;
        let outcome = match answer {
            Ok(response) => {
                let status = response.status();
                let _ = response.bytes().await;
                classify_status(status, None)
            }
            Err(error) => classify_error(&error),
        };
        Done {
            measured: self.measured(outcome, sent),
            attempt: None,
        }
    }

    /// Asks again for a purchase already answered (the caller waited
    /// [`REVISIT_AFTER`]); measured from now, as a send of its own.
    async fn revisit(&self, purchase: &Purchase, retries: u32) -> Vec<Done> {
        let again = Context {
            client: self.client.clone(),
            target: self.target.clone(),
            start: self.start,
            due: Instant::now(),
            attempts: self.attempts.clone(),
            keep_history: self.keep_history,
        };
        again.buy(purchase, retries).await
    }

    /// Buys, trying again with the same key after an answer that says nothing.
    async fn buy(&self, purchase: &Purchase, retries: u32) -> Vec<Done> {
        let mut done = Vec::new();
        let mut pause = RETRY_PAUSE;
        for try_number in 0..=retries {
            if try_number > 0 {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(RETRY_PAUSE_MAX);
            }
            let sent = Instant::now();
            let sent_at = Utc::now();
            let Answer {
                outcome,
                status,
                order_id,
                retry_after,
                seats,
                zone,
                amount_cents,
            } = self.place(purchase).await;
            let attempt = self.keep_history.then(|| Attempt {
                attempt: self.attempts.fetch_add(1, Relaxed),
                event_id: purchase.event_id,
                user_id: purchase.user_id.clone(),
                idempotency_key: purchase.idempotency_key.clone(),
                quantity: purchase.quantity,
                sent_at,
                finished_at: Utc::now(),
                outcome,
                status,
                order_id,
                seats: seats.clone(),
                asked_seats: purchase.want.seats().map(<[String]>::to_vec),
                asked_zone: purchase.want.asked_zone().map(str::to_owned),
                amount_cents,
            });
            let mut measured = self.measured(outcome, sent);
            // Places on a seated event: its seats' zone, or its standing zone.
            let zone = zone.or_else(|| Some(zone_of(seats.as_ref()?.first()?)?.to_owned()));
            if let (Outcome::Accepted, Some(zone)) = (outcome, zone) {
                measured.sold = Some(Sold {
                    event_id: purchase.event_id,
                    zone,
                    tickets: purchase.quantity as u64,
                    seats: seats.unwrap_or_default(),
                });
            }
            done.push(Done { measured, attempt });
            if outcome.is_definite() {
                break;
            }
            // A polite client waits as long as the server asked.
            pause = pause.max(retry_after.unwrap_or_default());
        }
        done
    }

    async fn place(&self, purchase: &Purchase) -> Answer {
        let mut body = purchase.want.fields(purchase.quantity);
        body.insert("event_id".into(), purchase.event_id.into());
        body.insert("user_id".into(), purchase.user_id.clone().into());
        let answer = self
            .client
            .post(format!("{}/orders", self.target))
            .header("Idempotency-Key", &purchase.idempotency_key)
            .json(&body)
            .send()
            .await;
        let unanswered = |outcome, status| Answer {
            outcome,
            status,
            order_id: None,
            retry_after: None,
            seats: None,
            zone: None,
            amount_cents: None,
        };
        let response = match answer {
            Ok(response) => response,
            Err(error) => return unanswered(classify_error(&error), None),
        };
        let status = response.status();
        let replayed = response.headers().contains_key("idempotent-replayed");
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok()?.parse().ok())
            .map(Duration::from_secs);
        let mut body: Value = match response.json().await {
            Ok(body) => body,
            // The status came, the body did not: the answer is unknown.
            Err(error) if error.is_timeout() => {
                return unanswered(Outcome::Timeout, Some(status.as_u16()))
            }
            Err(_) => Value::Null,
        };
        let outcome = if status == StatusCode::ACCEPTED && replayed {
            Outcome::Replayed
        } else {
            classify_status(status, body["error"]["code"].as_str())
        };
        let order_id = body["order_id"].as_str().and_then(|id| id.parse().ok());
        // A success that names no order says nothing about it.
        if matches!(outcome, Outcome::Accepted | Outcome::Replayed) && order_id.is_none() {
            return unanswered(Outcome::Unreadable, Some(status.as_u16()));
        }
        // The seats an order holds, or the seats a refusal said were gone.
        let seats = match outcome {
            Outcome::SeatTaken => body["error"]["seats"].take(),
            _ => body["seats"].take(),
        };
        Answer {
            outcome,
            status: Some(status.as_u16()),
            order_id,
            retry_after,
            seats: serde_json::from_value(seats).ok(),
            zone: body["zone"].as_str().map(str::to_owned),
            amount_cents: body["amount_cents"].as_i64(),
        }
    }

    fn measured(&self, outcome: Outcome, sent: Instant) -> Measured {
        Measured {
            outcome,
            intended: self.due - self.start,
            sent: sent - self.start,
            finished: self.start.elapsed().max(sent - self.start),
            sold: None,
        }
    }
}

/// What one buy request was told.
struct Answer {
    outcome: Outcome,
    status: Option<u16>,
    order_id: Option<Uuid>,
    /// The server's `Retry-After`, if it sent one.
    retry_after: Option<Duration>,
    /// The seats an accepted order holds, or a `seat_taken` said were gone.
    seats: Option<Vec<String>>,
    /// The general-admission zone of an accepted order on a seated event.
    zone: Option<String>,
    /// What an accepted order costs, as the answer said.
    amount_cents: Option<i64>,
}

fn classify_status(status: StatusCode, code: Option<&str>) -> Outcome {
    match (status.as_u16(), code) {
        (200..=299, _) => Outcome::Accepted,
        (409, Some("sold_out" | "zone_sold_out")) => Outcome::SoldOut,
        (409, Some("seat_taken")) => Outcome::SeatTaken,
        (409, Some("limit_exceeded")) => Outcome::LimitExceeded,
        (409, Some("request_in_progress")) => Outcome::InProgress,
        (500..=599, _) => Outcome::Error,
        _ => Outcome::Rejected,
    }
}

fn classify_error(error: &reqwest::Error) -> Outcome {
    if error.is_timeout() {
        Outcome::Timeout
    } else if error.is_connect() {
        Outcome::ConnectError
    } else {
        // The request may have reached the server: its outcome is unknown.
        Outcome::Error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified_by_status_and_code() {
        let conflict = StatusCode::CONFLICT;
        for (status, code, outcome) in [
            (StatusCode::ACCEPTED, None, Outcome::Accepted),
            (conflict, Some("sold_out"), Outcome::SoldOut),
            (conflict, Some("zone_sold_out"), Outcome::SoldOut),
            (conflict, Some("seat_taken"), Outcome::SeatTaken),
            (conflict, Some("limit_exceeded"), Outcome::LimitExceeded),
            (conflict, Some("request_in_progress"), Outcome::InProgress),
            (conflict, Some("idempotency_key_reused"), Outcome::Rejected),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Some("unavailable"),
                Outcome::Error,
            ),
        ] {
            assert_eq!(classify_status(status, code), outcome, "{status} {code:?}");
        }
    }

    #[test]
    fn live_percentiles_are_within_an_eighth() {
        let live = LiveLatency::default();
        assert_eq!(live.percentile(99.0), None);
        for ms in 1..=1000 {
            live.record(Duration::from_millis(ms));
        }
        for (percentile, exact) in [(50.0, 500.0), (99.0, 990.0), (100.0, 1000.0)] {
            let shown = live.percentile(percentile).unwrap().as_secs_f64() * 1000.0;
            assert!(
                shown >= exact && shown <= exact * 1.125 + 1.0,
                "p{percentile}: {shown} for {exact}"
            );
        }
        for micros in [8, 9, 15, 16, 1000, 123_456_789] {
            let edge = upper_edge(bucket(micros));
            assert!(
                edge > micros && edge as f64 <= micros as f64 * 1.25 + 1.0,
                "{micros}: {edge}"
            );
        }
    }
}
