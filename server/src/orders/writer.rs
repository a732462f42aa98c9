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

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use sqlx::{PgPool, Row};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::{Order, ORDER_COLUMNS};
use crate::events::{Catalogue, Terms};
use crate::gate::{Gate, Hold};
use crate::known_bad::{self, Bug};
use crate::messages::ORDER_CREATED;
use crate::metrics::Metrics;

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
    },
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
    fingerprint: String,
    terms: Terms,
    /// Admitted by Redis: there is a hold to confirm or release afterwards.
    admitted: bool,
    reply: oneshot::Sender<Verdict>,
}

enum Decision {
    Verdict(Verdict),
    /// Same (user, key) as an earlier ticket in the batch: settle it next batch,
    /// when the first one's order is visible.
    Defer,
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
}

impl Writer {
    /// `pool` should be the writer's own ([`crate::db::Purpose::OrderWriter`]).
    pub fn new(pool: PgPool, gate: Gate, catalogue: Arc<Catalogue>, metrics: Arc<Metrics>) -> Self {
        Self {
            settler: Arc::new(Settler {
                pool,
                gate,
                catalogue,
                metrics,
            }),
            lanes: Mutex::default(),
        }
    }

    /// Settles one reservation; returns when Postgres has decided.
    pub async fn submit(
        &self,
        hold: Hold,
        fingerprint: String,
        terms: Terms,
        admitted: bool,
    ) -> Verdict {
        let (reply, answer) = oneshot::channel();
        let ticket = Ticket {
            hold,
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
            Ok(decisions) => {
                for (ticket, decision) in batch.into_iter().zip(decisions) {
                    let verdict = match decision {
                        Decision::Defer => {
                            deferred.push(ticket);
                            continue;
                        }
                        Decision::Verdict(verdict) => verdict,
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
                        // Redis admitted what Postgres did not have: Redis was too
                        // high, so its stock is not given back.
                        Verdict::SoldOut => releases.push((ticket, verdict, false)),
                        other => releases.push((ticket, other, true)),
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
        tokio::spawn(async move {
            if let Err(error) = gate.confirm(event_id, &confirmed).await {
                tracing::warn!(event_id, error = %error, "confirming holds failed; the reconciler will");
            }
            for (ticket, verdict, return_stock) in releases {
                if let Err(error) = gate.release(&ticket.hold, return_stock).await {
                    tracing::warn!(event_id, order_id = %ticket.hold.order_id, error = %error, "releasing a hold failed; the reconciler will");
                }
                let _ = ticket.reply.send(verdict);
            }
        });
        deferred
    }

    fn release_all(
        &self,
        batch: Vec<Ticket>,
        verdict: Verdict,
        releases: &mut Vec<(Ticket, Verdict, bool)>,
    ) {
        for ticket in batch {
            if ticket.admitted {
                releases.push((ticket, verdict.clone(), true));
            } else {
                let _ = ticket.reply.send(verdict.clone());
            }
        }
    }

    async fn commit(&self, event_id: i64, batch: &[Ticket]) -> Result<Vec<Decision>, WriteError> {
        let mut tx = self.pool.begin().await?;
        let available: Option<i32> =
            sqlx::query_scalar("SELECT available_tickets FROM events WHERE id = $1 FOR UPDATE")
                .bind(event_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(available) = available else {
            return Ok(batch
                .iter()
                .map(|_| Decision::Verdict(Verdict::EventNotFound))
                .collect());
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
                if quantity > stock {
                    return Decision::Verdict(Verdict::SoldOut);
                }
                let user_held = held.entry(hold.user_id.clone()).or_default();
                if *user_held + quantity > i64::from(ticket.terms.max_per_user) {
                    return Decision::Verdict(Verdict::LimitExceeded);
                }
                stock -= quantity;
                *user_held += quantity;
                let amount_cents = quantity * ticket.terms.price_cents;
                accepted.push((ticket, amount_cents));
                Decision::Verdict(Verdict::Accepted { amount_cents })
            })
            .collect();
        if accepted.is_empty() {
            return Ok(decisions);
        }

        let taken = i64::from(available) - stock;
        let inserted = insert_orders(&mut tx, event_id, taken, &accepted).await?;
        if inserted != accepted.len() as i64 {
            return Err(WriteError::Conflict);
        }
        tx.commit().await.map_err(WriteError::Unknown)?;
        Ok(decisions)
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
    let rows = sqlx::query(&format!(
        "SELECT 'order' AS kind, {ORDER_COLUMNS}, NULL::int8 AS held
         FROM unnest($2::text[], $3::text[]) AS r(user_id, idempotency_key)
         CROSS JOIN LATERAL (
             SELECT * FROM orders o
             WHERE o.user_id = r.user_id AND o.idempotency_key = r.idempotency_key
         ) AS o
         UNION ALL
         SELECT 'held', NULL, NULL, NULL, b.user_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                (SELECT sum(quantity)::int8 FROM orders o
                 WHERE o.event_id = $1 AND o.user_id = b.user_id
                   AND o.status IN ('PENDING', 'CONFIRMED'))
         FROM (SELECT DISTINCT user_id FROM unnest($2::text[]) AS u(user_id)) AS b
         UNION ALL
         SELECT 'released', r.order_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                NULL, NULL
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

/// Takes the stock and inserts the orders and the `order.created` outbox row
/// naming them all, in one statement. Returns how many orders were inserted
/// (fewer: a key was taken meanwhile, and the caller rolls back).
async fn insert_orders(
    tx: &mut sqlx::PgConnection,
    event_id: i64,
    taken: i64,
    accepted: &[(&Ticket, i64)],
) -> sqlx::Result<i64> {
    let hold_seconds = accepted[0].0.terms.hold_seconds;
    let mut ids = Vec::with_capacity(accepted.len());
    let mut users = Vec::with_capacity(accepted.len());
    let mut keys = Vec::with_capacity(accepted.len());
    let mut fingerprints = Vec::with_capacity(accepted.len());
    let mut quantities = Vec::with_capacity(accepted.len());
    let mut amounts = Vec::with_capacity(accepted.len());
    for (ticket, amount_cents) in accepted {
        ids.push(ticket.hold.order_id);
        users.push(ticket.hold.user_id.as_str());
        keys.push(ticket.hold.idempotency_key.as_str());
        fingerprints.push(ticket.fingerprint.as_str());
        quantities.push(ticket.hold.quantity);
        amounts.push(*amount_cents);
    }
    // A known-bad server's schema has no unique key to name: its only guard
    // is the read before this insert.
    let on_conflict = if known_bad::has(Bug::CheckThenInsert) {
        "ON CONFLICT DO NOTHING"
    } else {
        "ON CONFLICT (user_id, idempotency_key) DO NOTHING"
    };
    sqlx::query_scalar(&format!(
        "WITH placed AS (
            INSERT INTO orders (id, event_id, user_id, idempotency_key, fingerprint, quantity,
                                amount_cents, status, expires_at)
            SELECT o.id, $1, o.user_id, o.idempotency_key, o.fingerprint, o.quantity,
                   o.amount_cents, 'PENDING', now() + $2 * interval '1 second'
            FROM unnest($3::uuid[], $4::text[], $5::text[], $6::text[], $7::int4[], $8::int8[])
                 AS o(id, user_id, idempotency_key, fingerprint, quantity, amount_cents)
            {on_conflict}
            RETURNING id, event_id, user_id, quantity, amount_cents, expires_at
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
         SELECT count(*) FROM placed"
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
    .fetch_one(tx)
    .await
}
