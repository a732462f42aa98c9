//! The order writer: one task per event that commits reservations in batches.
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

use flashtix_model::holds_tickets;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use sqlx::{PgPool, Row};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::seat_board::SeatBoard;
use super::{Order, ORDER_COLUMNS};
use crate::catalogue::events::{Catalogue, Terms};
use crate::catalogue::seating::{best_available, parse_seat, Choice, Plan, ZoneKind, SEAT_FREE};
use crate::gate::{Gate, Hold};
use crate::known_bad::{self, Bug};
use crate::runtime::metrics::Metrics;
use crate::saga::messages::ORDER_CREATED;

/// The most reservations settled in one transaction.
pub const MAX_BATCH: usize = 1024;
/// Reservations waiting per event. When full, request handlers wait: the
/// backpressure reaches the clients instead of growing memory.
const LANE_CAPACITY: usize = 8192;
/// Attempts when a concurrent transaction took an idempotency key first.
const CONFLICT_RETRIES: usize = 3;

/// What Postgres decided for one reservation.
#[derive(Debug, Clone)]
pub enum Verdict {
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
    reply: oneshot::Sender<Verdict>,
}

enum Decision {
    Verdict(Verdict),
    /// Fewer tickets were left than it asked for.
    SoldOut,
    /// Same (user, key) as an earlier ticket in the batch: settle it next batch,
    /// when the first one's order is visible.
    Defer,
}

/// A batch's decisions, the seats it saw owned by an order (named seats read
/// owned under the lock, and the seats it bought), and the tickets it left.
struct Committed {
    decisions: Vec<Decision>,
    owned_seats: Vec<String>,
    left: i64,
}

enum WriteError {
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

/// Hands reservations to their event's lane. Dropping it closes the lanes.
pub struct Writer {
    settler: Arc<Settler>,
    lanes: Mutex<HashMap<i64, mpsc::Sender<Ticket>>>,
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
    /// `pool` should be the writer's own ([`crate::runtime::db::Purpose::OrderWriter`]).
    pub fn new(
        pool: PgPool,
        gate: Gate,
        catalogue: Arc<Catalogue>,
        metrics: Arc<Metrics>,
        seat_board: Arc<SeatBoard>,
    ) -> Self {
        Self {
            settler: Arc::new(Settler {
                pool,
                gate,
                catalogue,
                metrics,
                seat_board,
            }),
            lanes: Mutex::default(),
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
    ) -> Verdict {
        let (reply, answer) = oneshot::channel();
        let ticket = Ticket {
            hold,
            choice,
            fingerprint,
            terms,
            admitted,
            reply,
        };
        if self.lane(terms.event_id).send(ticket).await.is_err() {
            return Verdict::Unavailable("order writer stopped".into());
        }
        answer
            .await
            .unwrap_or_else(|_| Verdict::Unavailable("order writer stopped".into()))
    }

    fn lane(&self, event_id: i64) -> mpsc::Sender<Ticket> {
        let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        lanes
            .entry(event_id)
            .or_insert_with(|| {
                let (sender, receiver) = mpsc::channel(LANE_CAPACITY);
                tokio::spawn(Arc::clone(&self.settler).run_lane(event_id, receiver));
                sender
            })
            .clone()
    }
}

impl Settler {
    async fn run_lane(self: Arc<Self>, event_id: i64, mut tickets: mpsc::Receiver<Ticket>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut deferred: Vec<Ticket> = Vec::new();
        loop {
            batch.append(&mut deferred);
            if batch.is_empty() {
                if tickets.recv_many(&mut batch, MAX_BATCH).await == 0 {
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
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            match self.commit(event_id, &batch).await {
                Err(WriteError::Conflict) if attempt < CONFLICT_RETRIES => continue,
                other => break other,
            }
        };
        self.metrics.record_batch(batch.len(), started.elapsed());

        let mut deferred = Vec::new();
        let mut confirmed = Vec::new();
        let mut releases = Vec::new();
        match result {
            Ok(Committed {
                decisions,
                owned_seats,
                left,
            }) => {
                self.seat_board
                    .learn(event_id, owned_seats.iter().map(String::as_str), seen_at);
                for (ticket, decision) in batch.into_iter().zip(decisions) {
                    let quantity = ticket.hold.quantity;
                    // How many of its tickets Redis gets back if it was admitted.
                    let (verdict, tickets_back) = match decision {
                        Decision::Defer => {
                            deferred.push(ticket);
                            continue;
                        }
                        Decision::Verdict(verdict) => (verdict, quantity),
                        // Redis's stock is Postgres's available less the
                        // holds it admitted and has not heard the end of (this
                        // one among them), plus its drift; it is never below
                        // zero, so the drift was at least the quantity less
                        // what was left (the batch's acceptances after it
                        // only lower that). Keeping that much brings Redis
                        // closer; keeping it all could leave Redis below
                        // Postgres, turning buyers away from tickets that are
                        // there.
                        Decision::SoldOut if known_bad::has(Bug::RedisKeepsRefusedStock) => {
                            (Verdict::SoldOut, 0)
                        }
                        Decision::SoldOut => {
                            (Verdict::SoldOut, left.clamp(0, i64::from(quantity)) as i32)
                        }
                    };
                    if matches!(verdict, Verdict::EventNotFound) {
                        self.catalogue.forget(event_id);
                    }
                    if !ticket.admitted {
                        let _ = ticket.reply.send(verdict);
                        continue;
                    }
                    match verdict {
                        Verdict::Accepted { .. } => {
                            confirmed.push(ticket.hold.clone());
                            let _ = ticket.reply.send(verdict);
                        }
                        other => releases.push((ticket, other, tickets_back)),
                    }
                }
            }
            Err(WriteError::Unknown(error)) => {
                tracing::error!(event_id, error = %error, "order batch commit failed; outcome unknown, holds left to the reconciler");
                for ticket in batch {
                    let _ = ticket.reply.send(Verdict::Unavailable(error.to_string()));
                }
            }
            Err(WriteError::Aborted(error)) => {
                tracing::warn!(event_id, error = %error, "order batch failed; releasing its holds");
                self.release_all(
                    batch,
                    Verdict::Unavailable(error.to_string()),
                    &mut releases,
                );
            }
            Err(WriteError::Conflict) => {
                tracing::warn!(
                    event_id,
                    "order batch kept losing idempotency races; releasing its holds"
                );
                self.release_all(
                    batch,
                    Verdict::Unavailable("concurrent duplicate requests".into()),
                    &mut releases,
                );
            }
        }

        // Redis follow-ups run beside the next batch. Refused requests are answered
        // only once their hold is released, so a retry finds Redis already updated.
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
            for (ticket, verdict, tickets_back) in releases {
                if let Err(error) = gate.release(&ticket.hold, tickets_back).await {
                    tracing::warn!(event_id, order_id = %ticket.hold.order_id, error = %error, "releasing a hold failed; the reconciler will");
                }
                released.push(ticket.hold.clone());
                let _ = ticket.reply.send(verdict);
            }
            record_released(&pool, event_id, &released).await;
        });
        deferred
    }

    fn release_all(
        &self,
        batch: Vec<Ticket>,
        verdict: Verdict,
        releases: &mut Vec<(Ticket, Verdict, i32)>,
    ) {
        for ticket in batch {
            if ticket.admitted {
                let tickets_back = ticket.hold.quantity;
                releases.push((ticket, verdict.clone(), tickets_back));
            } else {
                let _ = ticket.reply.send(verdict.clone());
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
            return Ok(Committed {
                decisions: batch
                    .iter()
                    .map(|_| Decision::Verdict(Verdict::EventNotFound))
                    .collect(),
                owned_seats: Vec::new(),
                left: 0,
            });
        };

        let users: Vec<&str> = batch.iter().map(|t| t.hold.user_id.as_str()).collect();
        let keys: Vec<&str> = batch
            .iter()
            .map(|t| t.hold.idempotency_key.as_str())
            .collect();
        let ids: Vec<Uuid> = batch.iter().map(|t| t.hold.order_id).collect();
        let Buyers {
            existing,
            mut held,
            released,
        } = read_buyers(&mut tx, event_id, &users, &keys, &ids).await?;

        let mut places = match &plan {
            Some(plan) => Some(Places::read(&mut tx, event_id, plan, batch).await?),
            None => None,
        };

        let mut stock = i64::from(available);
        let mut seen = HashSet::new();
        let mut accepted = Vec::new();
        let decisions: Vec<Decision> = batch
            .iter()
            .map(|ticket| {
                let hold = &ticket.hold;
                if released.contains(&hold.order_id) {
                    // Too slow: the reconciler gave this hold back to Redis.
                    return Decision::Verdict(Verdict::Unavailable(
                        "the reservation lapsed before it was written; send it again".into(),
                    ));
                }
                let pair = (hold.user_id.clone(), hold.idempotency_key.clone());
                if let Some(order) = existing.get(&pair) {
                    return Decision::Verdict(Verdict::Existing(order.clone()));
                }
                if !seen.insert(pair) {
                    return Decision::Defer;
                }
                let quantity = i64::from(hold.quantity);
                // Named seats that are gone are named back, whatever else
                // stands in the way: a buyer told "taken" learns which.
                if let (Some(places), Choice::Seats(seats)) = (&places, &ticket.choice) {
                    let gone = places.gone(seats);
                    if !gone.is_empty() {
                        return Decision::Verdict(Verdict::SeatTaken(gone));
                    }
                }
                if quantity > stock {
                    return Decision::SoldOut;
                }
                let user_held = held.entry(hold.user_id.clone()).or_default();
                if *user_held + quantity > i64::from(ticket.terms.max_per_user) {
                    return Decision::Verdict(Verdict::LimitExceeded);
                }
                let mut bought = match (&mut places, &plan) {
                    (Some(places), Some(plan)) => match places.take(plan, ticket) {
                        Ok(bought) => bought,
                        Err(refusal) => return Decision::Verdict(refusal.into()),
                    },
                    _ => Bought::counted(ticket),
                };
                if known_bad::has(Bug::AmountOffByOne) {
                    bought.amount_cents += 1;
                }
                stock -= quantity;
                *user_held += quantity;
                let verdict = Verdict::Accepted {
                    amount_cents: bought.amount_cents,
                    seats: bought.seats.clone(),
                    zone: bought.zone.clone(),
                };
                accepted.push((ticket, bought));
                Decision::Verdict(verdict)
            })
            .collect();
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

/// How long the writer keeps trying to record holds it gave back (Postgres
/// may be what failed their batch).
const RECORD_RELEASED_FOR: std::time::Duration = std::time::Duration::from_secs(60);

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

/// What the batch's buyers already have, read under the event's row lock.
struct Buyers {
    /// Orders under the batch's (user, key) pairs.
    existing: HashMap<(String, String), Order>,
    /// Each user's live tickets for this event.
    held: HashMap<String, i64>,
    /// Holds of the batch the reconciler released (see `released_holds`).
    released: HashSet<Uuid>,
}

/// One round trip for what the batch's buyers already have: orders under their
/// (user, key) pairs, each user's live tickets for this event, and which of
/// the batch's holds were released meanwhile.
///
/// Both lookups are correlated on one buyer at a time, so that with sequential
/// scans priced out (see `db::Purpose::OrderWriter`) the plan is an index probe
/// per buyer on both columns. As plain filters over the batch's arrays, a plan
/// could probe the index on the event alone and filter every order of the event.
async fn read_buyers(
    tx: &mut sqlx::PgConnection,
    event_id: i64,
    users: &[&str],
    keys: &[&str],
    ids: &[Uuid],
) -> sqlx::Result<Buyers> {
    // A known-bad server counts what the buyer's cancelled orders held too.
    let holding = if known_bad::has(Bug::LimitCountsCancelled) {
        "('PENDING', 'CONFIRMED', 'CANCELLED')"
    } else {
        holds_tickets!()
    };
    let rows = sqlx::query(&format!(
        "SELECT 'order' AS kind, {ORDER_COLUMNS}, NULL::int8 AS held
         FROM unnest($2::text[], $3::text[]) AS r(user_id, idempotency_key)
         CROSS JOIN LATERAL (
             SELECT * FROM orders o
             WHERE o.user_id = r.user_id AND o.idempotency_key = r.idempotency_key
         ) AS o
         UNION ALL
         SELECT 'held', NULL, NULL, NULL, b.user_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                NULL, NULL, (SELECT sum(quantity)::int8 FROM orders o
                 WHERE o.event_id = $1 AND o.user_id = b.user_id
                   AND o.status IN {holding})
         FROM (SELECT DISTINCT user_id FROM unnest($2::text[]) AS u(user_id)) AS b
         UNION ALL
         SELECT 'released', r.order_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                NULL, NULL, NULL, NULL
         FROM released_holds r WHERE r.order_id = ANY($4)"
    ))
    .bind(event_id)
    .bind(users)
    .bind(keys)
    .bind(ids)
    .fetch_all(tx)
    .await?;
    let mut existing = HashMap::new();
    let mut held = HashMap::new();
    let mut released = HashSet::new();
    for row in &rows {
        let kind: &str = row.try_get("kind")?;
        if kind == "released" {
            released.insert(row.try_get("id")?);
        } else if kind == "order" {
            let order = Order::from_row(row)?;
            existing.insert(
                (order.user_id.clone(), row.try_get("idempotency_key")?),
                order,
            );
        } else if let Some(quantity) = row.try_get::<Option<i64>, _>("held")? {
            held.insert(row.try_get("user_id")?, quantity);
        }
    }
    Ok(Buyers {
        existing,
        held,
        released,
    })
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
    let mut ids = Vec::with_capacity(accepted.len());
    let mut users = Vec::with_capacity(accepted.len());
    let mut keys = Vec::with_capacity(accepted.len());
    let mut fingerprints = Vec::with_capacity(accepted.len());
    let mut quantities = Vec::with_capacity(accepted.len());
    let mut amounts = Vec::with_capacity(accepted.len());
    let mut seat_lists = Vec::with_capacity(accepted.len());
    let mut zones = Vec::with_capacity(accepted.len());
    // Each seat taken, beside its order.
    let (mut seats, mut holders) = (Vec::new(), Vec::new());
    for (ticket, bought) in accepted {
        ids.push(ticket.hold.order_id);
        users.push(ticket.hold.user_id.as_str());
        keys.push(ticket.hold.idempotency_key.as_str());
        fingerprints.push(ticket.fingerprint.as_str());
        quantities.push(ticket.hold.quantity);
        amounts.push(bought.amount_cents);
        seat_lists.push(bought.seats.as_ref().map(|s| s.join(",")));
        zones.push(bought.zone.as_deref());
        for seat in bought.seats.iter().flatten() {
            seats.push(seat.as_str());
            holders.push(ticket.hold.order_id);
        }
    }
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
    .bind(&ids)
    .bind(&users)
    .bind(&keys)
    .bind(&fingerprints)
    .bind(&quantities)
    .bind(&amounts)
    .bind(taken as i32)
    .bind(ORDER_CREATED)
    .bind(&seat_lists)
    .bind(&zones)
    .bind(&seats)
    .bind(&holders)
    .bind(seats.len() as i64)
    .fetch_one(tx)
    .await
}

/// What an accepted ticket bought.
#[derive(Debug, Clone)]
struct Bought {
    amount_cents: i64,
    seats: Option<Vec<String>>,
    zone: Option<String>,
}

impl Bought {
    /// Tickets by count, at the event's price.
    fn counted(ticket: &Ticket) -> Self {
        Self {
            amount_cents: i64::from(ticket.hold.quantity) * ticket.terms.price_cents,
            seats: None,
            zone: None,
        }
    }
}

/// Why a ticket's places could not be taken.
enum Refusal {
    SeatTaken(Vec<String>),
    ZoneSoldOut,
}

impl From<Refusal> for Verdict {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::SeatTaken(seats) => Self::SeatTaken(seats),
            Refusal::ZoneSoldOut => Self::ZoneSoldOut,
        }
    }
}

/// The places a batch on an event with a plan asks for, as Postgres has
/// them under the event's row lock, less what earlier tickets of the batch
/// took.
struct Places {
    /// Named seats that are free.
    free: HashSet<String>,
    /// Named seats an order holds or bought.
    owned: Vec<String>,
    /// Reserved zones asked for by count: their free seats by row and number.
    free_in_zone: HashMap<String, Vec<(i32, i32, String)>>,
    /// General-admission zones asked for: places left.
    left_in_zone: HashMap<String, i64>,
}

impl Places {
    async fn read(
        tx: &mut sqlx::PgConnection,
        event_id: i64,
        plan: &Plan,
        batch: &[Ticket],
    ) -> sqlx::Result<Self> {
        let mut named: Vec<&str> = Vec::new();
        // Reserved zones asked for by count, with how many seats the batch wants there.
        let mut reserved: HashMap<&str, i64> = HashMap::new();
        // Per zone, how many seats the batch names there.
        let mut named_in: HashMap<&str, i64> = HashMap::new();
        let mut general: Vec<&str> = Vec::new();
        for ticket in batch {
            match &ticket.choice {
                Choice::Seats(seats) => {
                    named.extend(seats.iter().map(String::as_str));
                    for seat in seats {
                        if let Some((zone, _, _)) = parse_seat(seat) {
                            *named_in.entry(zone).or_default() += 1;
                        }
                    }
                }
                Choice::Zone(zone) => match plan.zone(zone) {
                    Some((_, z)) if z.kind == ZoneKind::General => general.push(zone),
                    Some(_) => {
                        *reserved.entry(zone).or_default() += i64::from(ticket.hold.quantity)
                    }
                    None => {}
                },
                Choice::Count => {}
            }
        }
        let (mut free, mut owned) = (HashSet::new(), Vec::new());
        if !named.is_empty() {
            let states: Vec<(String, bool, bool)> = sqlx::query_as(&format!(
                "SELECT seat_id, order_id IS NOT NULL, {SEAT_FREE} FROM seats
                 WHERE event_id = $1 AND seat_id = ANY($2)"
            ))
            .bind(event_id)
            .bind(&named)
            .fetch_all(&mut *tx)
            .await?;
            for (seat, is_owned, is_free) in states {
                if is_owned {
                    owned.push(seat);
                } else if is_free {
                    free.insert(seat);
                }
            }
        }
        let mut free_in_zone: HashMap<String, Vec<(i32, i32, String)>> = HashMap::new();
        if !reserved.is_empty() {
            // The best free seats of each zone, front rows first: a few times
            // what the batch wants there, so that groups find room side by
            // side, and never the whole zone; and as many again as the batch
            // names there, which earlier tickets may take from the list.
            let (zones, limits): (Vec<&str>, Vec<i64>) = reserved
                .iter()
                .map(|(zone, wanted)| {
                    let named = named_in.get(zone).copied().unwrap_or_default();
                    (*zone, wanted * 4 + 64 + named)
                })
                .unzip();
            let rows: Vec<(String, i32, i32, String)> = sqlx::query_as(&format!(
                "SELECT z.zone, s.row_number, s.seat_number, s.seat_id
                 FROM unnest($2::text[], $3::int8[]) AS z(zone, wanted)
                 CROSS JOIN LATERAL (
                     SELECT row_number, seat_number, seat_id FROM seats
                     WHERE event_id = $1 AND zone = z.zone AND {SEAT_FREE}
                     ORDER BY row_number, seat_number
                     LIMIT z.wanted
                 ) AS s
                 ORDER BY z.zone, s.row_number, s.seat_number"
            ))
            .bind(event_id)
            .bind(&zones)
            .bind(&limits)
            .fetch_all(&mut *tx)
            .await?;
            for (zone, row, number, seat) in rows {
                free_in_zone
                    .entry(zone)
                    .or_default()
                    .push((row, number, seat));
            }
        }
        let mut left_in_zone = HashMap::new();
        if !general.is_empty() {
            let live: Vec<(String, i64)> = sqlx::query_as(concat!(
                "SELECT zone, sum(quantity)::int8 FROM orders
                 WHERE event_id = $1 AND zone = ANY($2) AND status IN ",
                holds_tickets!(),
                "
                 GROUP BY zone"
            ))
            .bind(event_id)
            .bind(&general)
            .fetch_all(&mut *tx)
            .await?;
            let live: HashMap<String, i64> = live.into_iter().collect();
            for zone in general {
                if let Some((_, z)) = plan.zone(zone) {
                    let taken = live.get(zone).copied().unwrap_or_default();
                    left_in_zone.insert(zone.to_owned(), i64::from(z.capacity) - taken);
                }
            }
        }
        Ok(Self {
            free,
            owned,
            free_in_zone,
            left_in_zone,
        })
    }

    /// Which of `seats` are not free (held, sold, or taken earlier in the
    /// batch).
    fn gone(&self, seats: &[String]) -> Vec<String> {
        // A known-bad writer trusts the check the desk made when the request
        // came in.
        if known_bad::has(Bug::SeatCheckOutsideLock) {
            return Vec::new();
        }
        seats
            .iter()
            .filter(|seat| !self.free.contains(*seat))
            .cloned()
            .collect()
    }

    /// Seats a ticket of the batch took: gone for the tickets after it,
    /// whether they name them or ask for their zone.
    fn taken(&mut self, seats: &[String]) {
        for seat in seats {
            self.free.remove(seat);
        }
        for free in self.free_in_zone.values_mut() {
            free.retain(|(_, _, seat)| !seats.contains(seat));
        }
    }

    /// Takes what `ticket` asks for, or says why not.
    fn take(&mut self, plan: &Plan, ticket: &Ticket) -> Result<Bought, Refusal> {
        let quantity = i64::from(ticket.hold.quantity);
        match &ticket.choice {
            Choice::Seats(seats) => {
                let gone = self.gone(seats);
                if !gone.is_empty() {
                    return Err(Refusal::SeatTaken(gone));
                }
                self.taken(seats);
                Ok(Bought {
                    amount_cents: price_of_seats(plan, seats),
                    seats: Some(seats.clone()),
                    zone: None,
                })
            }
            Choice::Zone(zone) => {
                let Some((_, z)) = plan.zone(zone) else {
                    return Err(Refusal::ZoneSoldOut);
                };
                let amount_cents = quantity * z.price_cents;
                if z.kind == ZoneKind::General {
                    let left = self.left_in_zone.entry(zone.clone()).or_default();
                    if *left < quantity {
                        return Err(Refusal::ZoneSoldOut);
                    }
                    *left -= quantity;
                    return Ok(Bought {
                        amount_cents,
                        seats: None,
                        zone: Some(zone.clone()),
                    });
                }
                let free = self.free_in_zone.entry(zone.clone()).or_default();
                let picked = best_available(free, quantity as usize).ok_or(Refusal::ZoneSoldOut)?;
                self.taken(&picked);
                Ok(Bought {
                    amount_cents,
                    seats: Some(picked),
                    zone: None,
                })
            }
            Choice::Count => Ok(Bought::counted(ticket)),
        }
    }
}

/// What the seats cost, each at its zone's price.
fn price_of_seats(plan: &Plan, seats: &[String]) -> i64 {
    seats
        .iter()
        .filter_map(|seat| plan.locate(seat))
        .map(|at| plan.zones[at.zone].price_cents)
        .sum()
}
