//! One lane: its own share of the purchases, its own connections and its
//! own recorder, sending each at its intended time.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use flashtix_model::history::Outcome;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::super::record::{Recorder, BEHIND_AFTER};
use super::http::Endpoint;
use super::journal::Batch;
use super::purchase::{Context, Done, Sender, REVISIT_AFTER};
use super::{Model, Progress, Sending, Work};

pub(super) struct Lane {
    /// The next purchase this lane sends, and how far apart its purchases are.
    pub(super) number: u64,
    pub(super) step: u64,
    /// This lane's share of the requests in flight (of `--max-inflight`,
    /// or of a closed model's concurrency).
    pub(super) share: usize,
    pub(super) plan: Arc<Sending>,
    pub(super) work: Arc<Work>,
    pub(super) sender: Arc<Sender>,
    pub(super) slots: Arc<Semaphore>,
    pub(super) progress: Arc<Progress>,
    pub(super) history: Option<Batch>,
    pub(super) recorder: Recorder,
}

impl Lane {
    /// Opens the lane's share of keep-alive connections before the clock
    /// starts, so a spike measures the sale, not TCP handshakes.
    pub(super) async fn warm(&self) {
        let probe = match *self.work {
            Work::Buy { .. } => Endpoint::parse(&format!("{}/health", self.plan.target)),
            Work::Raw(_) => Endpoint::parse(&self.plan.target),
        };
        if let Ok(probe) = probe {
            self.sender.transport.warm(self.share, &probe).await;
        }
    }

    pub(super) async fn storm(mut self, start: Instant) -> Recorder {
        let mut inflight = FuturesUnordered::new();
        let mut number = self.number;
        let pause = tokio::time::sleep_until(start);
        tokio::pin!(pause);
        while let Some(due) = self.due(number, start, inflight.len()) {
            let due = match due {
                Some(due) => due,
                // Closed model, lane full: wait for one to end.
                None => {
                    let done = inflight.next().await.expect("the lane is full");
                    self.record(done);
                    continue;
                }
            };
            // Answers are recorded while waiting for the send's time and a
            // slot. Sends already due go at once, together; one timer serves
            // every wait.
            if Instant::now() < due {
                pause.as_mut().reset(due);
                loop {
                    tokio::select! {
                        biased;
                        Some(done) = inflight.next() => self.record(done),
                        () = &mut pause => break,
                    }
                }
            }
            let ready = Instant::now();
            let slot = match self.slots.clone().try_acquire_owned() {
                Ok(slot) => slot,
                Err(_) => loop {
                    tokio::select! {
                        biased;
                        slot = self.slots.clone().acquire_owned() => break slot.expect("never closed"),
                        Some(done) = inflight.next() => self.record(done),
                    }
                },
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
            if matches!(self.plan.model, Model::Open { .. }) && sent - due >= BEHIND_AFTER {
                self.progress.behind.fetch_add(1, Relaxed);
            }
            inflight.push(self.job(number, start, due, slot));
            number += self.step;
        }
        while let Some(done) = inflight.next().await {
            self.record(done);
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
            Model::Closed { .. } => {
                if inflight >= self.share {
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

    fn record(&mut self, done: Vec<Done>) {
        self.progress.finished.fetch_add(1, Relaxed);
        for done in done {
            let outcome = done.measured.outcome;
            self.recorder.answered(&done.measured);
            let measured = &done.measured;
            let waited = measured.finished.saturating_sub(measured.intended);
            self.progress.latency.record(waited);
            self.progress.outcomes[outcome.index()].fetch_add(1, Relaxed);
            if let (Some(history), Some(attempt)) = (&mut self.history, done.attempt) {
                history.push(attempt);
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
        let sender = self.sender.clone();
        let work = self.work.clone();
        let slots = self.slots.clone();
        async move {
            let mut slot = slot;
            let context = Context { sender, start, due };
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
