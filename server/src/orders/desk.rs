//! The desk: takes one buy request through the gate and the writer and answers.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::time::Instant;
use uuid::Uuid;

use super::lookup::KeyLookup;
use super::placed::{PlaceError, Placed, ORDER_LABELS};
use super::request::PlaceOrder;
use super::seat_board::SeatBoard;
use super::sold_out::SoldOutBoard;
use super::writer::{Ruling, Writer};
use super::{Order, Receipt};
use crate::catalogue::events::{Catalogue, Terms};
use crate::gate::reconcile::Reseed;
use crate::gate::{clock_ms, key_field, Admission, Gate, Hold};
use crate::known_bad::{self, Bug};
use crate::runtime::metrics::Metrics;
use flashtix_model::seating::{Choice, Plan};

/// How long a replay waits for the first request with its key to finish.
const REPLAY_WAIT: Duration = Duration::from_secs(2);
/// How long a request waits for another process to reseed the event.
const RESEED_WAIT: Duration = Duration::from_secs(3);
/// Rounds of gate → writer before giving up (a round restarts when the first
/// request of a replay was refused, the event was reseeded, or the tickets it
/// needs are on their way back).
const ROUNDS: usize = 4;

/// An answer, and who gave it: Postgres (the writer, having read the key's
/// orders in the same transaction) or the desk before it (from Redis or
/// memory), whose refusals [`Desk::place`] checks against the key first.
enum Answer {
    Desk(Result<Placed, PlaceError>),
    Postgres(Result<Placed, PlaceError>),
}

/// Where the gate sends a request.
enum Gated {
    /// To the writer: admitted by Redis (a hold to settle afterwards), or
    /// not asked because Redis did not answer.
    Write { hold: Hold, admitted: bool },
    /// The key has this order already.
    Replayed(Placed),
}

/// Takes orders. Cheap to clone.
#[derive(Clone)]
pub struct Desk {
    pool: PgPool,
    gate: Gate,
    catalogue: Arc<Catalogue>,
    writer: Arc<Writer>,
    sold_out: Arc<SoldOutBoard>,
    seat_board: Arc<SeatBoard>,
    lookup: KeyLookup,
    metrics: Arc<Metrics>,
}

impl Desk {
    /// `writer_pool` is for the order writer alone (see [`Writer`]).
    pub fn new(
        pool: PgPool,
        writer_pool: PgPool,
        gate: Gate,
        catalogue: Arc<Catalogue>,
        metrics: Arc<Metrics>,
        lane_idle: Duration,
    ) -> Self {
        metrics.declare_orders(&ORDER_LABELS);
        let seat_board = Arc::new(SeatBoard::default());
        let writer = Writer::new(
            writer_pool,
            gate.clone(),
            Arc::clone(&catalogue),
            Arc::clone(&metrics),
            Arc::clone(&seat_board),
            lane_idle,
        );
        Self {
            lookup: KeyLookup::start(pool.clone()),
            pool,
            gate,
            catalogue,
            writer: Arc::new(writer),
            sold_out: Arc::default(),
            seat_board,
            metrics,
        }
    }

    pub async fn place(&self, request: PlaceOrder) -> Result<Placed, PlaceError> {
        let result = match self.place_unrecorded(&request).await {
            // Postgres refused having read the key's orders in the same
            // transaction: nothing to confirm.
            Answer::Postgres(result) => result,
            Answer::Desk(Err(
                refusal @ (PlaceError::SoldOut
                | PlaceError::SeatTaken(_)
                | PlaceError::LimitExceeded { .. }),
            )) if !known_bad::has(Bug::ReplayAnsweredSoldOut) => {
                self.confirm_refusal(&request, refusal).await
            }
            Answer::Desk(result) => result,
        };
        self.metrics.record_order(match &result {
            Ok(placed) => placed.label(),
            Err(error) => error.label(),
        });
        result
    }

    /// A refusal stands only if Postgres has no order for the key: Redis (or
    /// this process's sold-out board) may not know an order taken without it.
    async fn confirm_refusal(
        &self,
        request: &PlaceOrder,
        refusal: PlaceError,
    ) -> Result<Placed, PlaceError> {
        match self
            .lookup
            .find(&request.user_id, &request.idempotency_key)
            .await
        {
            Ok(None) => Err(refusal),
            Ok(Some(order)) if order.fingerprint == request.fingerprint() => {
                Ok(Placed::Replayed(order.receipt()))
            }
            Ok(Some(_)) => Err(PlaceError::KeyReused),
            Err(error) => Err(unavailable(anyhow::anyhow!(
                "checking the key before refusing: {error}"
            ))),
        }
    }

    /// Takes the request through the gate and the writer.
    async fn place_unrecorded(&self, request: &PlaceOrder) -> Answer {
        let (terms, seated, choice) = match self.prepare(request).await {
            Ok(prepared) => prepared,
            Err(refusal) => return Answer::Desk(Err(refusal)),
        };
        let fingerprint = request.fingerprint();
        if seated {
            // A seated event's orders are decided by Postgres alone: Redis
            // counts tickets, not seats, and a hold it gave for a seat
            // Postgres then refuses would keep the ticket from a buyer whose
            // seat is free until it came back.
            return Answer::Postgres(
                self.write(request.hold(), &choice, fingerprint, terms, false)
                    .await,
            );
        }
        let field = key_field(&request.user_id, &request.idempotency_key);
        if self.sold_out.answers_sold_out(request.event_id, &field) {
            self.metrics.sold_out_from_memory();
            return Answer::Desk(Err(PlaceError::SoldOut));
        }
        match self.through_gate(request, &fingerprint, terms).await {
            // Whatever the writer answers, Postgres decided it.
            Ok(Gated::Write { hold, admitted }) => Answer::Postgres(
                self.write(hold, &choice, fingerprint, terms, admitted)
                    .await,
            ),
            Ok(Gated::Replayed(placed)) => Answer::Desk(Ok(placed)),
            Err(refusal) => Answer::Desk(Err(refusal)),
        }
    }

    /// What the desk checks before the gate: the event, the quantity, the
    /// choice against the plan, and named seats seen taken a moment ago.
    /// Returns the event's terms, whether it is seated, and the choice.
    async fn prepare(&self, request: &PlaceOrder) -> Result<(Terms, bool, Choice), PlaceError> {
        let terms = self
            .catalogue
            .terms(request.event_id)
            .await
            .map_err(unavailable)?
            .ok_or(PlaceError::EventNotFound(request.event_id))?;
        if request.quantity > terms.max_per_user {
            return Err(PlaceError::AboveLimit {
                quantity: request.quantity,
                max: terms.max_per_user,
            });
        }
        let plan = self
            .catalogue
            .plan(request.event_id)
            .await
            .map_err(unavailable)?;
        let choice = choose(request, plan.as_deref())?;
        #[cfg(feature = "known-bad")]
        if known_bad::has(Bug::SeatCheckOutsideLock) {
            self.check_seats_unlocked(request.event_id, &choice).await?;
        }
        if let Choice::Seats(seats) = &choice {
            // Seats this process saw owned a moment ago: the answer stands
            // (see `seat_board`) once `place` has checked the key.
            if self.seat_board.all_taken(request.event_id, seats) {
                self.metrics.seat_taken_from_memory();
                return Err(PlaceError::SeatTaken(seats.clone()));
            }
        }
        Ok((terms, plan.is_some(), choice))
    }

    /// Asks Redis to admit the request, in up to [`ROUNDS`] rounds: a key
    /// whose first request is still being written, tickets on their way
    /// back, or an event to reseed each take another round.
    async fn through_gate(
        &self,
        request: &PlaceOrder,
        fingerprint: &str,
        terms: Terms,
    ) -> Result<Gated, PlaceError> {
        // The answer if the rounds run out: what the last one waited for.
        let mut gave_up = PlaceError::InProgress;
        for round in 1..=ROUNDS {
            let hold = request.hold();
            let admission = self
                .gate
                .reserve(&hold, terms.max_per_user, fingerprint, clock_ms())
                .await;
            match admission {
                Ok(Admission::Reserved) => {
                    return Ok(Gated::Write {
                        hold,
                        admitted: true,
                    });
                }
                Ok(Admission::SoldOut { remaining }) => {
                    #[cfg(feature = "known-bad")]
                    self.give_back_unreserved(&hold).await;
                    if remaining == 0 {
                        self.refresh_sold_out(terms.event_id);
                    }
                    return Err(PlaceError::SoldOut);
                }
                Ok(Admission::LimitExceeded) => {
                    #[cfg(feature = "known-bad")]
                    self.give_back_unreserved(&hold).await;
                    return Err(PlaceError::LimitExceeded {
                        max: terms.max_per_user,
                    });
                }
                Ok(Admission::Replay {
                    order_id,
                    fingerprint: first,
                }) => {
                    if first != fingerprint {
                        return Err(PlaceError::KeyReused);
                    }
                    if let Some(order) = self.await_first(&hold, order_id).await? {
                        return Ok(Gated::Replayed(Placed::Replayed(order.receipt())));
                    }
                    gave_up = PlaceError::InProgress;
                }
                Ok(Admission::Returning { after }) => {
                    // Every ticket it waits for may go to someone quicker:
                    // then none is free for this buyer. (Not "in progress":
                    // nothing works on this request any more.) After the
                    // last round it is not waited for: the answer is what
                    // Redis said then, not a guess once the tickets are back.
                    gave_up = PlaceError::SoldOut;
                    if round < ROUNDS {
                        tokio::time::sleep(after).await;
                    }
                }
                Ok(Admission::Unseeded) => {
                    gave_up = PlaceError::InProgress;
                    self.reseed(terms.event_id).await?;
                }
                Err(error) => {
                    // Redis is only the fast path: Postgres decides alone.
                    self.metrics.redis_bypass();
                    tracing::debug!(error = %error, "redis unavailable; order goes to Postgres directly");
                    return Ok(Gated::Write {
                        hold,
                        admitted: false,
                    });
                }
            }
        }
        Err(gave_up)
    }

    /// A known-bad server's compensation for a reservation the script
    /// refused: it ignored the answer, so it gives back what was never taken.
    #[cfg(feature = "known-bad")]
    async fn give_back_unreserved(&self, hold: &Hold) {
        if known_bad::has(Bug::LuaResultIgnored) {
            let tickets = hold.quantity.into();
            let _ = self.gate.add_stock_unguarded(hold.event_id, tickets).await;
        }
    }

    /// A known-bad desk's look at the named seats when the request comes in,
    /// outside any lock; its writer trusts it.
    #[cfg(feature = "known-bad")]
    async fn check_seats_unlocked(&self, event_id: i64, choice: &Choice) -> Result<(), PlaceError> {
        let Choice::Seats(seats) = choice else {
            return Ok(());
        };
        let taken: Vec<String> = sqlx::query_scalar(
            "SELECT seat_id FROM seats
             WHERE event_id = $1 AND seat_id = ANY($2) AND order_id IS NOT NULL",
        )
        .bind(event_id)
        .bind(seats)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        if taken.is_empty() {
            Ok(())
        } else {
            Err(PlaceError::SeatTaken(taken))
        }
    }

    /// Asks Redis, once at a time per event and off the request's path, for the
    /// keys of an event it called sold out.
    fn refresh_sold_out(&self, event_id: i64) {
        if !self.sold_out.begin_refresh(event_id) {
            return;
        }
        let (gate, board) = (self.gate.clone(), Arc::clone(&self.sold_out));
        tokio::spawn(async move {
            let asked_at = Instant::now();
            let keys = match gate.sold_out_keys(event_id).await {
                Ok(keys) => keys,
                Err(error) => {
                    tracing::debug!(event_id, error = %error, "sold-out refresh failed");
                    None
                }
            };
            board.finish_refresh(event_id, asked_at, keys);
        });
    }

    /// The writer's ruling, as the desk answers it.
    async fn write(
        &self,
        hold: Hold,
        choice: &Choice,
        fingerprint: String,
        terms: Terms,
        admitted: bool,
    ) -> Result<Placed, PlaceError> {
        let (order_id, user_id, quantity) = (hold.order_id, hold.user_id.clone(), hold.quantity);
        match self
            .writer
            .submit(hold, choice.clone(), fingerprint.clone(), terms, admitted)
            .await
        {
            Ruling::Accepted {
                amount_cents,
                mut seats,
                zone,
            } => Ok(Placed::Accepted({
                if known_bad::has(Bug::WrongSeatInAnswer) {
                    misname_first_seat(&mut seats);
                }
                Receipt::pending(
                    order_id,
                    terms.event_id,
                    user_id,
                    quantity.into(),
                    amount_cents,
                )
                .with_places(seats, zone)
            })),
            Ruling::SeatTaken(seats) => Err(PlaceError::SeatTaken(seats)),
            Ruling::Existing(order) if order.fingerprint == fingerprint => {
                Ok(Placed::Replayed(order.receipt()))
            }
            Ruling::Existing(_) => Err(PlaceError::KeyReused),
            Ruling::SoldOut => Err(PlaceError::SoldOut),
            Ruling::ZoneSoldOut => Err(match choice {
                Choice::Zone(zone) => PlaceError::ZoneSoldOut(zone.clone()),
                _ => PlaceError::SoldOut,
            }),
            Ruling::LimitExceeded => Err(PlaceError::LimitExceeded {
                max: terms.max_per_user,
            }),
            Ruling::EventNotFound => Err(PlaceError::EventNotFound(terms.event_id)),
            Ruling::Unavailable(reason) => Err(unavailable(anyhow::anyhow!(reason))),
        }
    }

    /// Waits for the order of the first request with this key. `None`: that
    /// request was refused (its key entry is gone), so this one starts afresh.
    async fn await_first(&self, hold: &Hold, order_id: Uuid) -> Result<Option<Order>, PlaceError> {
        let deadline = Instant::now() + REPLAY_WAIT;
        let mut pause = Duration::from_millis(2);
        loop {
            if let Some(order) = super::fetch(&self.pool, order_id)
                .await
                .map_err(unavailable)?
            {
                return Ok(Some(order));
            }
            let entry = self
                .gate
                .key_entry(hold.event_id, &hold.user_id, &hold.idempotency_key)
                .await
                .map_err(unavailable)?;
            if entry != Some(order_id) {
                return Ok(None);
            }
            if Instant::now() + pause > deadline {
                if known_bad::has(Bug::RefusalAfterTimeout) {
                    return Err(PlaceError::SoldOut);
                }
                return Err(PlaceError::InProgress);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// Rebuilds the event's Redis keys from Postgres, or waits while another
    /// request or process does.
    async fn reseed(&self, event_id: i64) -> Result<(), PlaceError> {
        match crate::gate::reconcile::reseed(&self.pool, &self.gate, event_id)
            .await
            .map_err(unavailable)?
        {
            Reseed::Done { .. } => {
                self.metrics.reseeded();
                return Ok(());
            }
            Reseed::Gone => {
                self.catalogue.forget(event_id);
                return Err(PlaceError::EventNotFound(event_id));
            }
            Reseed::Busy => {}
        }
        let deadline = Instant::now() + RESEED_WAIT;
        while Instant::now() < deadline {
            let seen = self.gate.observe(event_id).await.map_err(unavailable)?;
            if seen.stock.is_some() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Err(unavailable(anyhow::anyhow!(
            "event {event_id} is being reseeded"
        )))
    }
}

/// What the order buys, checked against the event's plan: seats that exist
/// and are for sale, a zone the plan has, or (a count alone) the plan's one
/// general-admission zone.
fn choose(request: &PlaceOrder, plan: Option<&Plan>) -> Result<Choice, PlaceError> {
    let event_id = request.event_id;
    let Some(plan) = plan else {
        return match request.choice {
            Choice::Count => Ok(Choice::Count),
            _ => Err(PlaceError::WrongChoice(format!(
                "event {event_id} has no seating plan: order a quantity alone"
            ))),
        };
    };
    match &request.choice {
        Choice::Count => match plan.only_general() {
            Some(zone) => Ok(Choice::Zone(zone.name.clone())),
            None => Err(PlaceError::WrongChoice(format!(
                "event {event_id} sells seats by zone: name the seats or a zone"
            ))),
        },
        Choice::Zone(name) => match plan.zone(name) {
            Some(_) => Ok(Choice::Zone(name.clone())),
            None => Err(PlaceError::WrongChoice(format!(
                "event {event_id} has no zone {name:?}; its zones: {}",
                plan.zones
                    .iter()
                    .map(|z| z.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        },
        Choice::Seats(seats) => {
            let unknown: Vec<String> = seats
                .iter()
                .filter(|seat| plan.locate(seat).is_none())
                .cloned()
                .collect();
            if !unknown.is_empty() {
                return Err(PlaceError::UnknownSeats(unknown));
            }
            let blocked: Vec<String> = seats
                .iter()
                .filter(|seat| plan.is_blocked(seat))
                .cloned()
                .collect();
            if !blocked.is_empty() {
                return Err(PlaceError::BlockedSeats(blocked));
            }
            Ok(Choice::Seats(seats.clone()))
        }
    }
}

fn unavailable(error: impl Into<anyhow::Error>) -> PlaceError {
    PlaceError::Unavailable(error.into())
}

/// The known-bad `wrong-seat-in-answer`: the first seat named is the one
/// beside it.
fn misname_first_seat(seats: &mut Option<Vec<String>>) {
    if let Some(first) = seats.as_mut().and_then(|seats| seats.first_mut()) {
        if let Some((zone, row, number)) = flashtix_model::seating::parse_seat(first) {
            *first = flashtix_model::seating::seat_id(zone, row, number + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_answer_has_a_declared_label() {
        let receipt = Receipt::pending(Uuid::now_v7(), 1, "ann".into(), 1, 100);
        let placed = [Placed::Accepted(receipt.clone()), Placed::Replayed(receipt)];
        let refused = [
            PlaceError::EventNotFound(1),
            PlaceError::AboveLimit {
                quantity: 5,
                max: 4,
            },
            PlaceError::SoldOut,
            PlaceError::ZoneSoldOut("GA".into()),
            PlaceError::LimitExceeded { max: 4 },
            PlaceError::KeyReused,
            PlaceError::InProgress,
            PlaceError::Unavailable(anyhow::anyhow!("down")),
            PlaceError::SeatTaken(vec!["A-1-1".into()]),
            PlaceError::UnknownSeats(vec!["Z-1-1".into()]),
            PlaceError::BlockedSeats(vec!["A-1-2".into()]),
            PlaceError::WrongChoice("no plan".into()),
        ];
        let labels: Vec<&str> = placed
            .iter()
            .map(Placed::label)
            .chain(refused.iter().map(PlaceError::label))
            .collect();
        for label in &labels {
            assert!(ORDER_LABELS.contains(label), "{label} is not declared");
        }
        for declared in ORDER_LABELS {
            assert!(labels.contains(&declared), "{declared} is never given");
        }
    }
}
