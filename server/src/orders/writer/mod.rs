//! The order writer: a task per event (a lane) that commits reservations in
//! batches.
//!
//! One `UPDATE events` per order caps out near 2k orders/s here (the row lock and
//! one commit per order). The writer takes every reservation waiting for its
//! event (up to [`MAX_BATCH`]) and settles them in one transaction: one row lock,
//! one stock update, one insert of all orders and of one outbox row announcing
//! them all, one commit.
//! While a batch commits, the next one gathers, so the batch grows with the load.
//!
//! Everything is decided under the event's row lock, which every writer of every
//! process takes first: stock, the per-user limit (summed over the user's live
//! orders) and the idempotency key (a unique constraint; the insert's
//! `ON CONFLICT DO NOTHING` count proves no other transaction won a race).
//!
//! - `lanes`: a lane per event with reservations, gone once it is quiet;
//! - `settle`: a lane's loop, and answering a batch once it is decided;
//! - `commit`: the batch's transaction: deciding each ticket under the lock,
//!   then one insert of everything;
//! - `buyers`: what the batch's buyers already have;
//! - `places`: the seats and zone places a batch on a seated event takes.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::oneshot;

use super::seat_board::SeatBoard;
use super::Order;
use crate::catalogue::events::{Catalogue, Terms};
use crate::gate::{Gate, Hold};
use crate::runtime::metrics::Metrics;
use flashtix_model::seating::Choice;

mod buyers;
mod commit;
mod lanes;
mod places;
mod settle;

use lanes::Lanes;

/// The most reservations settled in one transaction.
pub const MAX_BATCH: usize = 1024;

/// What Postgres decided for one reservation.
#[derive(Debug, Clone)]
pub enum Ruling {
    Accepted {
        amount_cents: i64,
        /// The seats it holds (named, or picked here for a zone).
        seats: Option<Vec<String>>,
        /// Its general-admission zone, on an event with a plan.
        zone: Option<String>,
    },
    /// Named seats another order holds or bought.
    SeatTaken(Vec<String>),
    /// Not enough left in the zone asked for (the event may have more).
    ZoneSoldOut,
    /// The (user, key) already has an order: this one.
    Existing(Order),
    SoldOut,
    LimitExceeded,
    EventNotFound,
    /// The database failed; nothing was written (or it is unknown and the
    /// reconciler will find out).
    Unavailable(String),
}

struct Ticket {
    hold: Hold,
    /// What it buys, checked against the plan (if the event has one).
    choice: Choice,
    fingerprint: String,
    terms: Terms,
    /// Admitted by Redis: there is a hold to confirm or release afterwards.
    admitted: bool,
    reply: oneshot::Sender<Ruling>,
}

/// Hands reservations to their event's lane. Dropping it closes the lanes.
pub struct Writer {
    settler: Arc<Settler>,
    lanes: Arc<Lanes<Ticket>>,
}

/// What a lane needs to settle a batch.
struct Settler {
    pool: PgPool,
    gate: Gate,
    catalogue: Arc<Catalogue>,
    metrics: Arc<Metrics>,
    /// Learns the seats each batch saw owned.
    seat_board: Arc<SeatBoard>,
}

impl Writer {
    /// `pool` should be the writer's own ([`crate::runtime::db::Purpose::OrderWriter`]);
    /// an event's lane ends once it has waited `lane_idle` for a reservation.
    pub fn new(
        pool: PgPool,
        gate: Gate,
        catalogue: Arc<Catalogue>,
        metrics: Arc<Metrics>,
        seat_board: Arc<SeatBoard>,
        lane_idle: Duration,
    ) -> Self {
        Self {
            lanes: Lanes::new(lane_idle, Arc::clone(&metrics)),
            settler: Arc::new(Settler {
                pool,
                gate,
                catalogue,
                metrics,
                seat_board,
            }),
        }
    }

    /// Settles one reservation; returns when Postgres has decided.
    pub async fn submit(
        &self,
        hold: Hold,
        choice: Choice,
        fingerprint: String,
        terms: Terms,
        admitted: bool,
    ) -> Ruling {
        let stopped = || Ruling::Unavailable("order writer stopped".into());
        let (reply, answer) = oneshot::channel();
        let ticket = Ticket {
            hold,
            choice,
            fingerprint,
            terms,
            admitted,
            reply,
        };
        let event_id = terms.event_id;
        let idle = self.lanes.idle;
        let start = |tickets, leave| {
            let settler = Arc::clone(&self.settler);
            tokio::spawn(settler.run_lane(event_id, tickets, idle, leave));
        };
        match self.lanes.deliver(event_id, ticket, start).await {
            Ok(()) => answer.await.unwrap_or_else(|_| stopped()),
            Err(_) => stopped(),
        }
    }
}
