//! A lane's loop, and answering a batch once Postgres has decided it: the
//! buyers' rulings, and Redis told what became of each hold.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::sync::mpsc;

use super::commit::{Committed, Decision, WriteError};
use super::lanes::Leave;
use super::{Ruling, Settler, Ticket, MAX_BATCH};
use crate::gate::Hold;
use crate::known_bad::{self, Bug};

/// How long the writer keeps trying to record holds it gave back (Postgres
/// may be what failed their batch).
const RECORD_RELEASED_FOR: std::time::Duration = std::time::Duration::from_secs(60);

/// What becomes of a batch's tickets once it is decided.
#[derive(Default)]
struct Answers {
    /// Settled next batch.
    deferred: Vec<Ticket>,
    /// Accepted holds, for Redis to confirm.
    confirmed: Vec<Hold>,
    /// Refused holds, with their ruling and how many tickets Redis gets back;
    /// answered once released.
    releases: Vec<(Ticket, Ruling, i32)>,
}

impl Settler {
    /// Settles `event_id`'s reservations as they come, in batches, until its
    /// senders are gone or it has waited `idle` for one; then it leaves, and
    /// settles what it had been handed.
    pub(super) async fn run_lane(
        self: Arc<Self>,
        event_id: i64,
        mut tickets: mpsc::Receiver<Ticket>,
        idle: Duration,
        leave: Leave<Ticket>,
    ) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut deferred: Vec<Ticket> = Vec::new();
        let mut open = true;
        loop {
            batch.append(&mut deferred);
            if batch.is_empty() {
                let received = if open {
                    // (`recv_many` is cancel-safe: a timeout loses no ticket.)
                    let waited =
                        tokio::time::timeout(idle, tickets.recv_many(&mut batch, MAX_BATCH));
                    match waited.await {
                        Ok(received) => received,
                        Err(_quiet) => {
                            // Out of the map first, so no new reservation
                            // finds this lane; then closed: what was sent
                            // before the close is settled on the next turns,
                            // what is sent after goes back to its sender.
                            leave.leave();
                            tickets.close();
                            open = false;
                            continue;
                        }
                    }
                } else {
                    tickets.recv_many(&mut batch, MAX_BATCH).await
                };
                if received == 0 {
                    return;
                }
            } else {
                while batch.len() < MAX_BATCH {
                    match tickets.try_recv() {
                        Ok(ticket) => batch.push(ticket),
                        Err(_) => break,
                    }
                }
            }
            deferred = self.settle(event_id, std::mem::take(&mut batch)).await;
        }
    }

    /// Commits one batch, answers its tickets and tells Redis. Returns the
    /// tickets deferred to the next batch.
    async fn settle(&self, event_id: i64, batch: Vec<Ticket>) -> Vec<Ticket> {
        let started = Instant::now();
        // Whatever the batch sees owned was owned at this moment or later.
        let seen_at = tokio::time::Instant::now();
        let result = self.commit_retrying(event_id, &batch).await;
        self.metrics.record_batch(batch.len(), started.elapsed());

        let mut answers = Answers::default();
        match result {
            Ok(committed) => self.answer(event_id, batch, committed, seen_at, &mut answers),
            Err(WriteError::Unknown(error)) => {
                tracing::error!(event_id, error = %error, "order batch commit failed; outcome unknown, holds left to the reconciler");
                for ticket in batch {
                    let _ = ticket.reply.send(Ruling::Unavailable(error.to_string()));
                }
            }
            Err(WriteError::Aborted(error)) => {
                tracing::warn!(event_id, error = %error, "order batch failed; releasing its holds");
                release_all(batch, Ruling::Unavailable(error.to_string()), &mut answers);
            }
            Err(WriteError::Conflict) => {
                tracing::warn!(
                    event_id,
                    "order batch kept losing idempotency races; releasing its holds"
                );
                let ruling = Ruling::Unavailable("concurrent duplicate requests".into());
                release_all(batch, ruling, &mut answers);
            }
        }
        self.follow_up(event_id, answers.confirmed, answers.releases);
        answers.deferred
    }

    /// Sorts a committed batch's tickets: answered now, confirmed in Redis,
    /// released first, or deferred.
    fn answer(
        &self,
        event_id: i64,
        batch: Vec<Ticket>,
        committed: Committed,
        seen_at: tokio::time::Instant,
        answers: &mut Answers,
    ) {
        let Committed {
            decisions,
            owned_seats,
            left,
        } = committed;
        self.seat_board
            .learn(event_id, owned_seats.iter().map(String::as_str), seen_at);
        for (ticket, decision) in batch.into_iter().zip(decisions) {
            let quantity = ticket.hold.quantity;
            // How many of its tickets Redis gets back if it was admitted.
            let (ruling, tickets_back) = match decision {
                Decision::Defer => {
                    answers.deferred.push(ticket);
                    continue;
                }
                Decision::Ruled(ruling) => (ruling, quantity),
                // Redis's stock is Postgres's available less the holds it
                // admitted and has not heard the end of (this one among
                // them), plus its drift; it is never below zero, so the drift
                // was at least the quantity less what was left (the batch's
                // acceptances after it only lower that). Keeping that much
                // brings Redis closer; keeping it all could leave Redis below
                // Postgres, turning buyers away from tickets that are there.
                Decision::SoldOut if known_bad::has(Bug::RedisKeepsRefusedStock) => {
                    (Ruling::SoldOut, 0)
                }
                Decision::SoldOut => (Ruling::SoldOut, left.clamp(0, i64::from(quantity)) as i32),
            };
            if matches!(ruling, Ruling::EventNotFound) {
                self.catalogue.forget(event_id);
            }
            if !ticket.admitted {
                let _ = ticket.reply.send(ruling);
                continue;
            }
            match ruling {
                Ruling::Accepted { .. } => {
                    answers.confirmed.push(ticket.hold.clone());
                    let _ = ticket.reply.send(ruling);
                }
                other => answers.releases.push((ticket, other, tickets_back)),
            }
        }
    }

    /// Redis follow-ups, beside the next batch. Refused requests are answered
    /// only once their hold is released, so a retry finds Redis already
    /// updated.
    fn follow_up(&self, event_id: i64, confirmed: Vec<Hold>, releases: Vec<(Ticket, Ruling, i32)>) {
        let gate = self.gate.clone();
        let pool = self.pool.clone();
        tokio::spawn(async move {
            if let Err(error) = gate.confirm(event_id, &confirmed).await {
                tracing::warn!(event_id, error = %error, "confirming holds failed; the reconciler will");
            }
            // Every hold given back, or no longer there to give back (the
            // reconciler's, whose own record wins; or lost with Redis's
            // data), is recorded: its tickets were spoken for until now.
            let mut released = Vec::with_capacity(releases.len());
            for (ticket, ruling, tickets_back) in releases {
                if let Err(error) = gate.release(&ticket.hold, tickets_back).await {
                    tracing::warn!(event_id, order_id = %ticket.hold.order_id, error = %error, "releasing a hold failed; the reconciler will");
                }
                released.push(ticket.hold.clone());
                let _ = ticket.reply.send(ruling);
            }
            record_released(&pool, event_id, &released).await;
        });
    }
}

/// Every ticket refused with `ruling`: the admitted ones once their hold is
/// released, the others now.
fn release_all(batch: Vec<Ticket>, ruling: Ruling, answers: &mut Answers) {
    for ticket in batch {
        if ticket.admitted {
            let tickets_back = ticket.hold.quantity;
            answers
                .releases
                .push((ticket, ruling.clone(), tickets_back));
        } else {
            let _ = ticket.reply.send(ruling.clone());
        }
    }
}

/// Records the holds a batch gave back without an order, for `check` to know
/// their tickets were spoken for until then; tries again while Postgres is
/// away, for [`RECORD_RELEASED_FOR`]. Nothing waits on it: it only informs
/// the timeline.
async fn record_released(pool: &PgPool, event_id: i64, holds: &[Hold]) {
    if holds.is_empty() {
        return;
    }
    let holds: Vec<&Hold> = holds.iter().collect();
    let deadline = Instant::now() + RECORD_RELEASED_FOR;
    let mut pause = std::time::Duration::from_millis(100);
    loop {
        match crate::gate::reconcile::record_released(pool, event_id, &holds).await {
            Ok(()) => return,
            Err(error) if Instant::now() + pause > deadline => {
                tracing::warn!(event_id, holds = holds.len(), error = %error, "could not record released holds; check may call refusals of their time untrue");
                return;
            }
            Err(_) => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(5));
            }
        }
    }
}
