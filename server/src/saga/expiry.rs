//! The expiry sweeper (role `sweeper`): a PENDING order past its `expires_at`
//! becomes EXPIRED and its tickets go back on sale.
//!
//! One transaction per pass expires up to [`SWEEP_BATCH`] due orders: the
//! orders change status, their events get the tickets back (`available` up,
//! `pending` down), a seated order's seats are freed (a trigger on the status),
//! and a `stock_returns` row per order of an event sold by count records that
//! Redis must get them back too, and an `order.settled` message tells their
//! buyers. `FOR UPDATE SKIP LOCKED` lets several sweepers share the
//! work without waiting on each other or expiring an order twice; the status
//! check (`PENDING` only) makes a second expiry impossible anyway. Redis gets the
//! tickets after the commit ([`crate::gate::reconcile::restock_pending`]), once.

use flashtix_model::holds_tickets;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;

use crate::catalogue::events;
use crate::gate::Gate;
use crate::known_bad::{self, Bug};
use crate::runtime::metrics::Metrics;
use crate::runtime::stop::Stop;
use crate::saga::messages::ORDER_SETTLED;
use flashtix_model::notices::Ending;

/// The most orders one pass expires.
pub const SWEEP_BATCH: i64 = 500;

/// Expires due orders. Returns how many.
pub async fn expire_due(pool: &PgPool) -> sqlx::Result<u64> {
    // The real sweeper takes PENDING orders only; a known-bad one takes paid
    // ones too (their tickets move from sold back to available).
    let swept = if known_bad::has(Bug::ExpiryGivesBackPaid) {
        concat!("status IN ", holds_tickets!(), "")
    } else {
        "status = 'PENDING'"
    };
    let gated = events::gated("x.event_id");
    let expired: i64 = sqlx::query_scalar(&format!(
        "WITH due AS (
            SELECT id, event_id, status AS was FROM orders
            WHERE {swept} AND expires_at < now()
            ORDER BY expires_at
            LIMIT $1
            FOR UPDATE SKIP LOCKED
         ), locked AS (
            -- The events' row locks, in id order, before any order changes: an
            -- expiring seated order frees its seats under its event's lock
            -- (migration 7's trigger), and sweeps and settlements take event
            -- locks in one order, so none waits for another in a circle.
            SELECT id FROM events WHERE id IN (SELECT event_id FROM due)
            ORDER BY id FOR UPDATE
         ), expired AS (
            UPDATE orders o SET status = 'EXPIRED', updated_at = now()
            FROM due WHERE o.id = due.id AND o.status = due.was
              AND (SELECT count(*) FROM locked) >= 0
            RETURNING o.id, o.event_id, o.user_id, o.quantity, due.was
         ), per_event AS (
            SELECT event_id,
                   (sum(quantity) FILTER (WHERE was = 'PENDING'))::int4 AS pending,
                   (sum(quantity) FILTER (WHERE was = 'CONFIRMED'))::int4 AS sold
            FROM expired GROUP BY event_id
         ), restocked AS (
            UPDATE events e
            SET available_tickets = available_tickets + coalesce(p.pending, 0) + coalesce(p.sold, 0),
                pending_tickets = pending_tickets - coalesce(p.pending, 0),
                sold_tickets = sold_tickets - coalesce(p.sold, 0)
            FROM per_event p WHERE e.id = p.event_id
         ), returned AS (
            -- Tickets go back to Redis for events it admits for.
            INSERT INTO stock_returns (order_id, event_id, user_id, quantity)
            SELECT id, event_id, user_id, quantity FROM expired x WHERE {gated}
         ), told AS (
            -- The buyers' notices, one message for the pass.
            INSERT INTO outbox (message_id, topic, payload)
            SELECT $2, $3, jsonb_build_object('orders', jsonb_agg(
                jsonb_build_object('order_id', id, 'ending', $4::text)))
            FROM expired HAVING count(*) > 0
         )
         SELECT count(*) FROM expired"
    ))
    .bind(SWEEP_BATCH)
    .bind(uuid::Uuid::now_v7())
    .bind(ORDER_SETTLED)
    .bind(Ending::Expired.name())
    .fetch_one(pool)
    .await?;
    Ok(expired as u64)
}

/// Runs forever: expire what is due, give the tickets back to Redis, every `every`
/// (at once again while a pass finds a full batch).
pub async fn run(pool: PgPool, gate: Gate, metrics: Arc<Metrics>, every: Duration, mut stop: Stop) {
    let mut failing = false;
    while !stop.requested() {
        let pass = async {
            let expired = expire_due(&pool).await?;
            metrics.orders_expired(expired);
            let restocked = crate::gate::reconcile::restock_pending(&pool, &gate).await?;
            metrics.stock_returned(restocked);
            anyhow::Ok(expired)
        };
        let expired = match pass.await {
            Ok(expired) => {
                if failing {
                    tracing::info!("expiry sweeper recovered");
                    failing = false;
                }
                if expired > 0 {
                    tracing::info!(expired, "expired unpaid orders");
                }
                expired
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "expiry pass failed; will keep trying"
                    );
                    failing = true;
                }
                0
            }
        };
        if expired < SWEEP_BATCH as u64 && !stop.pause(every).await {
            return;
        }
    }
}
