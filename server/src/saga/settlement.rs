//! The order worker (role `orders`): takes `payment.result` and settles the
//! order, exactly once.
//!
//! In one transaction per batch of entries, with their orders locked: a
//! PENDING order whose payment succeeded is CONFIRMED (its tickets move from
//! pending to sold); one whose payment failed is CANCELLED (its tickets go back
//! to available, and a `stock_returns` row makes sure Redis gets them too,
//! once, after the commit). The order's status is what makes this exactly
//! once: a result for an order already settled by it is a duplicate. A payment
//! that succeeded for an order that is no longer PENDING (it expired, or was
//! cancelled, while the payment was on its way) is refunded through the
//! provider, outside the transaction, and the refund recorded, once per order;
//! the refund is idempotent, so a crash in between only means asking the
//! provider again.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use crate::catalogue::events;
use crate::gate::Gate;
use crate::known_bad::{self, Bug};
use crate::runtime::metrics::Metrics;
use crate::saga::consumer::{answers, Handled, Handler};
use crate::saga::messages::{Outcome, PaymentResult, PAYMENT_RESULT};
use crate::saga::payments::provider::Provider;
use flashtix_model::names::UnknownName;
use flashtix_model::OrderStatus;

pub struct OrderWorker {
    pool: PgPool,
    gate: Gate,
    provider: Provider,
    metrics: Arc<Metrics>,
}

/// What the batch transaction decided for one entry.
enum Settled {
    Handled(Handled),
    /// The payment succeeded for an order no longer PENDING: refund, then
    /// record it (on its own, after the batch).
    NeedsRefund,
}

/// Tickets one batch moves between an event's columns.
#[derive(Default)]
struct Moved {
    to_available: i32,
    from_pending: i32,
    to_sold: i32,
}

impl OrderWorker {
    pub fn new(pool: PgPool, gate: Gate, provider: Provider, metrics: Arc<Metrics>) -> Self {
        Self {
            pool,
            gate,
            provider,
            metrics,
        }
    }

    /// Settles a batch in one transaction: locks its orders (in id order, so
    /// batches of several processes cannot deadlock), then its events (in id
    /// order too), confirms or cancels the orders, and moves the events'
    /// tickets once per event. (The refund is
    /// looked up as a scalar subquery: see `PaymentWorker::known_orders`.)
    async fn settle(&self, results: &[PaymentResult]) -> sqlx::Result<Vec<Settled>> {
        let mut tx = self.pool.begin().await?;
        let mut order_ids: Vec<Uuid> = results.iter().map(|r| r.order_id).collect();
        order_ids.sort();
        order_ids.dedup();
        let rows: Vec<(Uuid, String, i64, i32, f64, bool)> = sqlx::query_as(
            "SELECT id, status, event_id, quantity,
                    extract(epoch FROM now() - created_at)::float8,
                    (SELECT true FROM payments p
                     WHERE p.order_id = orders.id AND p.kind = 'REFUND') IS NOT NULL
             FROM orders WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        )
        .bind(&order_ids)
        .fetch_all(&mut *tx)
        .await?;
        let mut orders = HashMap::with_capacity(rows.len());
        for (id, status, event_id, quantity, age, refunded) in rows {
            let status: OrderStatus = status
                .parse()
                .map_err(|error: UnknownName| sqlx::Error::Decode(error.into()))?;
            orders.insert(id, (status, event_id, quantity, age, refunded));
        }
        let mut ages = Vec::new();

        let mut confirmed = Vec::new();
        let mut cancelled = Vec::new();
        let mut moved: BTreeMap<i64, Moved> = BTreeMap::new();
        let mut settled = Vec::with_capacity(results.len());
        for result in results {
            let Some((status, event_id, quantity, age, refunded)) =
                orders.get_mut(&result.order_id)
            else {
                settled.push(Settled::Handled(Handled::Poison(format!(
                    "payment.result for unknown order {}",
                    result.order_id
                ))));
                continue;
            };
            let event = moved.entry(*event_id).or_default();
            match (*status, result.outcome) {
                (OrderStatus::Pending, Outcome::Succeeded) => {
                    ages.push(*age);
                    *status = OrderStatus::Confirmed;
                    confirmed.push(result.order_id);
                    event.from_pending += *quantity;
                    event.to_sold += *quantity;
                }
                (OrderStatus::Pending, Outcome::Failed) => {
                    ages.push(*age);
                    *status = OrderStatus::Cancelled;
                    cancelled.push(result.order_id);
                    event.from_pending += *quantity;
                    event.to_available += *quantity;
                }
                (OrderStatus::Expired | OrderStatus::Cancelled, Outcome::Succeeded)
                    if !known_bad::has(Bug::LatePaymentNotRefunded) && !*refunded =>
                {
                    settled.push(Settled::NeedsRefund);
                    continue;
                }
                // Settled (or refunded) by this result before: not asked
                // again, so a held message only ever shrinks.
                (OrderStatus::Expired | OrderStatus::Cancelled, Outcome::Succeeded)
                | (OrderStatus::Confirmed, Outcome::Succeeded)
                | (OrderStatus::Cancelled, Outcome::Failed) => {
                    settled.push(Settled::Handled(Handled::Duplicate));
                    continue;
                }
                // A failed payment for an order that ended anyway.
                _ => {}
            }
            settled.push(Settled::Handled(Handled::Done));
        }

        if !cancelled.is_empty() {
            // A cancelled seated order frees its seats under its event's row
            // lock (migration 7's trigger, row by row). Take every event's
            // lock first, in id order as the loop below does, so that batches
            // of several events cannot deadlock.
            let events: Vec<i64> = moved.keys().copied().collect();
            sqlx::query("SELECT 1 FROM events WHERE id = ANY($1) ORDER BY id FOR UPDATE")
                .bind(&events)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(&format!(
            "WITH confirmed AS (
                UPDATE orders SET status = 'CONFIRMED', updated_at = now() WHERE id = ANY($1)
             ), cancelled AS (
                UPDATE orders SET status = 'CANCELLED', updated_at = now() WHERE id = ANY($2)
                RETURNING id, event_id, user_id, quantity
             )
             INSERT INTO stock_returns (order_id, event_id, user_id, quantity)
             SELECT id, event_id, user_id, quantity FROM cancelled c
             WHERE NOT $3 AND {}",
            events::gated("c.event_id")
        ))
        .bind(&confirmed)
        .bind(&cancelled)
        .bind(known_bad::has(Bug::RedisCompensationSkipped))
        .execute(&mut *tx)
        .await?;
        for (event_id, moved) in moved {
            sqlx::query(
                "UPDATE events SET available_tickets = available_tickets + $2,
                                   pending_tickets = pending_tickets - $3,
                                   sold_tickets = sold_tickets + $4
                 WHERE id = $1",
            )
            .bind(event_id)
            .bind(if known_bad::has(Bug::ReleaseStockTwice) {
                moved.to_available * 2
            } else {
                moved.to_available
            })
            .bind(moved.from_pending)
            .bind(moved.to_sold)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        for age in ages {
            self.metrics
                .order_settled(Duration::from_secs_f64(age.max(0.0)));
        }
        Ok(settled)
    }

    /// Refunds a success that came too late, then records the refund (once
    /// per order: a refund recorded before makes this a duplicate).
    async fn refund(&self, result: &PaymentResult) -> Handled {
        if let Err(error) = self
            .provider
            .refund(result.order_id, result.amount_cents)
            .await
        {
            return Handled::Retry(error.into());
        }
        let recorded = sqlx::query(
            "INSERT INTO payments (id, order_id, kind, outcome, amount_cents)
             VALUES ($1, $2, 'REFUND', 'SUCCEEDED', $3) ON CONFLICT DO NOTHING",
        )
        .bind(Uuid::now_v7())
        .bind(result.order_id)
        .bind(result.amount_cents)
        .execute(&self.pool)
        .await;
        match recorded {
            Ok(done) if done.rows_affected() == 1 => Handled::Done,
            Ok(_) => Handled::Duplicate,
            Err(error) => Handled::Retry(error.into()),
        }
    }
}

impl Handler for OrderWorker {
    const NAME: &'static str = "orders";
    const TOPIC: &'static str = PAYMENT_RESULT;

    type Entry = PaymentResult;

    async fn handle(&self, results: Vec<PaymentResult>) -> Vec<Handled> {
        let mut handled: Vec<Option<Handled>> = results.iter().map(|_| None).collect();
        match self.settle(&results).await {
            Ok(settled) => {
                let mut returned_stock = false;
                for ((slot, result), settled) in handled.iter_mut().zip(&results).zip(settled) {
                    *slot = Some(match settled {
                        Settled::Handled(h) => {
                            returned_stock |=
                                matches!(h, Handled::Done) && result.outcome == Outcome::Failed;
                            h
                        }
                        Settled::NeedsRefund => self.refund(result).await,
                    });
                }
                if returned_stock {
                    // The tickets are back in Postgres; give them to Redis now
                    // (the reconciler would, a tick later).
                    if let Err(error) =
                        crate::gate::reconcile::restock_pending(&self.pool, &self.gate).await
                    {
                        tracing::debug!(
                            error = format!("{error:#}"),
                            "restock after cancel deferred"
                        );
                    }
                }
            }
            Err(error) => {
                for slot in &mut handled {
                    *slot = Some(Handled::Retry(anyhow::anyhow!("settling orders: {error}")));
                }
            }
        }
        answers(handled)
    }
}
