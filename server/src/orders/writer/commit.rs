//! A batch's transaction: under the event's row lock, every ticket decided in
//! turn (stock, the buyer's limit, the key, the places), then one statement
//! that inserts every accepted order, takes the stock and the seats, and
//! announces them in the outbox.

use std::collections::HashSet;

use uuid::Uuid;

use super::buyers::{read_buyers, Buyers};
use super::places::{Bought, Places};
use super::{Ruling, Settler, Ticket};
use crate::catalogue::seating::SEAT_FREE;
use crate::known_bad::{self, Bug};
use crate::saga::messages::ORDER_CREATED;
use flashtix_model::seating::{Choice, Plan};

/// Attempts when a concurrent transaction took an idempotency key first.
const CONFLICT_RETRIES: usize = 3;

/// What Postgres decided for one ticket of the batch.
pub(super) enum Decision {
    Ruled(Ruling),
    /// Fewer tickets were left than it asked for.
    SoldOut,
    /// Same (user, key) as an earlier ticket in the batch: settle it next batch,
    /// when the first one's order is visible.
    Defer,
}

/// A batch's decisions, the seats it saw owned by an order (named seats read
/// owned under the lock, and the seats it bought), and the tickets it left.
pub(super) struct Committed {
    pub(super) decisions: Vec<Decision>,
    pub(super) owned_seats: Vec<String>,
    pub(super) left: i64,
}

pub(super) enum WriteError {
    /// Failed before COMMIT was sent: nothing was written.
    Aborted(sqlx::Error),
    /// COMMIT itself failed: the outcome is unknown.
    Unknown(sqlx::Error),
    /// Another transaction inserted one of our (user, key) pairs first.
    Conflict,
}

impl From<sqlx::Error> for WriteError {
    fn from(error: sqlx::Error) -> Self {
        Self::Aborted(error)
    }
}

impl Committed {
    /// Every ticket refused: the event is gone.
    fn event_not_found(tickets: usize) -> Self {
        Self {
            decisions: (0..tickets)
                .map(|_| Decision::Ruled(Ruling::EventNotFound))
                .collect(),
            owned_seats: Vec::new(),
            left: 0,
        }
    }
}

impl Settler {
    /// Commits a batch, again while a concurrent transaction keeps taking one
    /// of its keys first.
    pub(super) async fn commit_retrying(
        &self,
        event_id: i64,
        batch: &[Ticket],
    ) -> Result<Committed, WriteError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.commit(event_id, batch).await {
                Err(WriteError::Conflict) if attempt < CONFLICT_RETRIES => continue,
                other => return other,
            }
        }
    }

    async fn commit(&self, event_id: i64, batch: &[Ticket]) -> Result<Committed, WriteError> {
        let plan = if batch.iter().any(|t| t.choice != Choice::Count) {
            self.catalogue.plan(event_id).await?
        } else {
            None
        };
        let mut tx = self.pool.begin().await?;
        let available: Option<i32> =
            sqlx::query_scalar("SELECT available_tickets FROM events WHERE id = $1 FOR UPDATE")
                .bind(event_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(available) = available else {
            return Ok(Committed::event_not_found(batch.len()));
        };
        let buyers = read_buyers(&mut tx, event_id, batch).await?;
        let places = match &plan {
            Some(plan) => Some(Places::read(&mut tx, event_id, plan, batch).await?),
            None => None,
        };

        let mut decider = Decider::new(i64::from(available), buyers, places, plan.as_deref());
        let decisions: Vec<Decision> = batch.iter().map(|ticket| decider.decide(ticket)).collect();
        let Decider {
            stock,
            accepted,
            places,
            ..
        } = decider;
        let mut owned_seats = places.map(|p| p.owned).unwrap_or_default();
        if accepted.is_empty() {
            return Ok(Committed {
                decisions,
                owned_seats,
                left: stock,
            });
        }

        let taken = i64::from(available) - stock;
        let inserted = insert_orders(&mut tx, event_id, taken, &accepted).await?;
        if inserted != accepted.len() as i64 {
            return Err(WriteError::Conflict);
        }
        tx.commit().await.map_err(WriteError::Unknown)?;
        owned_seats.extend(
            accepted
                .into_iter()
                .flat_map(|(_, bought)| bought.seats.unwrap_or_default()),
        );
        Ok(Committed {
            decisions,
            owned_seats,
            left: stock,
        })
    }
}

/// Decides a batch's tickets in turn, from what Postgres holds under the
/// lock and what the tickets before took. No SQL: what it decides is
/// written afterwards in one statement.
struct Decider<'a> {
    /// Tickets left.
    stock: i64,
    buyers: Buyers,
    places: Option<Places>,
    plan: Option<&'a Plan>,
    /// (user, key) pairs decided so far.
    seen: HashSet<(String, String)>,
    accepted: Vec<(&'a Ticket, Bought)>,
}

impl<'a> Decider<'a> {
    fn new(stock: i64, buyers: Buyers, places: Option<Places>, plan: Option<&'a Plan>) -> Self {
        Self {
            stock,
            buyers,
            places,
            plan,
            seen: HashSet::new(),
            accepted: Vec::new(),
        }
    }

    fn decide(&mut self, ticket: &'a Ticket) -> Decision {
        let hold = &ticket.hold;
        if self.buyers.released.contains(&hold.order_id) {
            // Too slow: the reconciler gave this hold back to Redis.
            return Decision::Ruled(Ruling::Unavailable(
                "the reservation lapsed before it was written; send it again".into(),
            ));
        }
        let pair = (hold.user_id.clone(), hold.idempotency_key.clone());
        if let Some(order) = self.buyers.existing.get(&pair) {
            return Decision::Ruled(Ruling::Existing(order.clone()));
        }
        if !self.seen.insert(pair) {
            return Decision::Defer;
        }
        let quantity = i64::from(hold.quantity);
        // Named seats that are gone are named back, whatever else stands in
        // the way: a buyer told "taken" learns which.
        if let (Some(places), Choice::Seats(seats)) = (&self.places, &ticket.choice) {
            let gone = places.gone(seats);
            if !gone.is_empty() {
                return Decision::Ruled(Ruling::SeatTaken(gone));
            }
        }
        if quantity > self.stock {
            return Decision::SoldOut;
        }
        let user_held = self.buyers.held.entry(hold.user_id.clone()).or_default();
        if *user_held + quantity > i64::from(ticket.terms.max_per_user) {
            return Decision::Ruled(Ruling::LimitExceeded);
        }
        let mut bought = match (&mut self.places, self.plan) {
            (Some(places), Some(plan)) => match places.take(plan, ticket) {
                Ok(bought) => bought,
                Err(refusal) => return Decision::Ruled(refusal.into()),
            },
            _ => Bought::counted(ticket),
        };
        if known_bad::has(Bug::AmountOffByOne) {
            bought.amount_cents += 1;
        }
        self.stock -= quantity;
        *user_held += quantity;
        let ruling = Ruling::Accepted {
            amount_cents: bought.amount_cents,
            seats: bought.seats.clone(),
            zone: bought.zone.clone(),
        };
        self.accepted.push((ticket, bought));
        Decision::Ruled(ruling)
    }
}

/// The accepted tickets as the insert's columns, an array each.
struct Columns<'a> {
    ids: Vec<Uuid>,
    users: Vec<&'a str>,
    keys: Vec<&'a str>,
    fingerprints: Vec<&'a str>,
    quantities: Vec<i32>,
    amounts: Vec<i64>,
    seat_lists: Vec<Option<String>>,
    zones: Vec<Option<&'a str>>,
    /// Each seat taken, beside its order (`holders`).
    seats: Vec<&'a str>,
    holders: Vec<Uuid>,
}

impl<'a> Columns<'a> {
    fn of(accepted: &'a [(&'a Ticket, Bought)]) -> Self {
        let mut columns = Self {
            ids: Vec::with_capacity(accepted.len()),
            users: Vec::with_capacity(accepted.len()),
            keys: Vec::with_capacity(accepted.len()),
            fingerprints: Vec::with_capacity(accepted.len()),
            quantities: Vec::with_capacity(accepted.len()),
            amounts: Vec::with_capacity(accepted.len()),
            seat_lists: Vec::with_capacity(accepted.len()),
            zones: Vec::with_capacity(accepted.len()),
            seats: Vec::new(),
            holders: Vec::new(),
        };
        for (ticket, bought) in accepted {
            columns.ids.push(ticket.hold.order_id);
            columns.users.push(ticket.hold.user_id.as_str());
            columns.keys.push(ticket.hold.idempotency_key.as_str());
            columns.fingerprints.push(ticket.fingerprint.as_str());
            columns.quantities.push(ticket.hold.quantity);
            columns.amounts.push(bought.amount_cents);
            columns
                .seat_lists
                .push(bought.seats.as_ref().map(|s| s.join(",")));
            columns.zones.push(bought.zone.as_deref());
            for seat in bought.seats.iter().flatten() {
                columns.seats.push(seat.as_str());
                columns.holders.push(ticket.hold.order_id);
            }
        }
        columns
    }
}

/// Takes the stock and the seats, and inserts the orders and the
/// `order.created` outbox row naming them all, in one statement. Returns how
/// many orders were inserted (fewer, or -1 if a seat was not free: a key or a
/// seat was taken meanwhile, and the caller rolls back).
async fn insert_orders(
    tx: &mut sqlx::PgConnection,
    event_id: i64,
    taken: i64,
    accepted: &[(&Ticket, Bought)],
) -> sqlx::Result<i64> {
    let hold_seconds = accepted[0].0.terms.hold_seconds;
    let columns = Columns::of(accepted);
    // A known-bad server's schema has no unique key to name: its only guard
    // is the read before this insert.
    let on_conflict = if known_bad::has(Bug::CheckThenInsert) {
        "ON CONFLICT DO NOTHING"
    } else {
        "ON CONFLICT (user_id, idempotency_key) DO NOTHING"
    };
    // A known-bad writer takes the seats the desk saw free, whoever took them
    // since, and does not count what it took.
    let (still_free, all_seated) = if known_bad::has(Bug::SeatCheckOutsideLock) {
        (String::new(), "true")
    } else {
        (
            format!("AND {SEAT_FREE}"),
            "(SELECT count(*) FROM seated) = $15",
        )
    };
    sqlx::query_scalar(&format!(
        "WITH placed AS (
            INSERT INTO orders (id, event_id, user_id, idempotency_key, fingerprint, quantity,
                                amount_cents, status, expires_at, seats, zone)
            SELECT o.id, $1, o.user_id, o.idempotency_key, o.fingerprint, o.quantity,
                   o.amount_cents, 'PENDING', now() + $2 * interval '1 second',
                   string_to_array(o.seats, ','), o.zone
            FROM unnest($3::uuid[], $4::text[], $5::text[], $6::text[], $7::int4[], $8::int8[],
                        $11::text[], $12::text[])
                 AS o(id, user_id, idempotency_key, fingerprint, quantity, amount_cents, seats, zone)
            {on_conflict}
            RETURNING id, event_id, user_id, quantity, amount_cents, expires_at
         ), seated AS (
            UPDATE seats SET order_id = t.holder
            FROM unnest($13::text[], $14::uuid[]) AS t(seat, holder)
            WHERE event_id = $1 AND seat_id = t.seat {still_free}
            RETURNING 1
         ), taken AS (
            UPDATE events
            SET available_tickets = available_tickets - $9, pending_tickets = pending_tickets + $9
            WHERE id = $1
         ), announced AS (
            INSERT INTO outbox (message_id, topic, payload)
            SELECT gen_random_uuid(), $10,
                   jsonb_build_object('orders', jsonb_agg(jsonb_build_object(
                       'order_id', id, 'event_id', event_id, 'user_id', user_id,
                       'quantity', quantity, 'amount_cents', amount_cents,
                       'expires_at', expires_at)))
            FROM placed HAVING count(*) > 0
         )
         SELECT CASE WHEN {all_seated} THEN (SELECT count(*) FROM placed)
                     ELSE -1 END"
    ))
    .bind(event_id)
    .bind(hold_seconds)
    .bind(&columns.ids)
    .bind(&columns.users)
    .bind(&columns.keys)
    .bind(&columns.fingerprints)
    .bind(&columns.quantities)
    .bind(&columns.amounts)
    .bind(taken as i32)
    .bind(ORDER_CREATED)
    .bind(&columns.seat_lists)
    .bind(&columns.zones)
    .bind(&columns.seats)
    .bind(&columns.holders)
    .bind(columns.seats.len() as i64)
    .fetch_one(tx)
    .await
}
