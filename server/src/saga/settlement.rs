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
use crate::saga::messages::{
    OrderSettled, PaymentOutcome, PaymentResult, ORDER_SETTLED, PAYMENT_RESULT,
};
use crate::saga::payments::provider::Provider;
use flashtix_model::names::UnknownName;
use flashtix_model::notices::Ending;
use flashtix_model::OrderStatus;

/// Refunds of one batch asked of the provider at once: each waits the
/// provider's latency, so one at a time a hundred late payments at 1.5 s
/// took 150 s. Bounded, so a flood of them does not take every connection
/// of the pool (each is recorded by a statement of its own).
const REFUNDS_AT_ONCE: usize = 16;

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
    /// batches of several processes cannot deadlock), decides each result,
    /// then writes what was decided.
    async fn settle(&self, results: &[PaymentResult]) -> sqlx::Result<Vec<Settled>> {
        if known_bad::has(Bug::NoticeBeforeCommit) {
            // The buyers told what the payment said, committed on its own
            // before the settlement is decided or committed.
            let told: Vec<OrderSettled> = results
                .iter()
                .map(|result| OrderSettled {
                    order_id: result.order_id,
                    ending: match result.outcome {
                        PaymentOutcome::Succeeded => Ending::Confirmed,
                        PaymentOutcome::Failed => Ending::Cancelled,
                    },
                })
                .collect();
            let mut connection = self.pool.acquire().await?;
            crate::saga::outbox::enqueue(&mut connection, ORDER_SETTLED, &told).await?;
        }
        let mut tx = self.pool.begin().await?;
        let mut orders = lock_orders(&mut tx, results).await?;
        let decided = Decided::of(results, &mut orders);
        decided.write(&mut tx).await?;
        tx.commit().await?;
        for age in &decided.ages {
            self.metrics
                .order_settled(Duration::from_secs_f64(age.max(0.0)));
        }
        Ok(decided.settled)
    }

    /// Refunds the batch's successes that came too late, [`REFUNDS_AT_ONCE`]
    /// at a time (each waits on the provider), each with its place in the
    /// batch.
    async fn refund_all(&self, refunds: Vec<(usize, PaymentResult)>) -> Vec<(usize, Handled)> {
        use futures_util::stream::{self, StreamExt};
        stream::iter(refunds)
            .map(|(index, result)| async move { (index, self.refund(&result).await) })
            .buffer_unordered(REFUNDS_AT_ONCE)
            .collect()
            .await
    }

    /// Refunds a success that came too late, then records the refund (once
    /// per order: a refund recorded before makes this a duplicate) with the
    /// buyer's notice of it.
    async fn refund(&self, result: &PaymentResult) -> Handled {
        if let Err(error) = self
            .provider
            .refund(result.order_id, result.amount_cents)
            .await
        {
            return Handled::Retry(error.into());
        }
        // The refund, and in the same statement the buyer's notice of it.
        let recorded = sqlx::query(
            "WITH refund AS (
                INSERT INTO payments (id, order_id, kind, outcome, amount_cents)
                VALUES ($1, $2, 'REFUND', 'SUCCEEDED', $3) ON CONFLICT DO NOTHING
                RETURNING order_id
             )
             INSERT INTO outbox (message_id, topic, payload)
             SELECT $4, $5, jsonb_build_object('orders', jsonb_build_array(
                 jsonb_build_object('order_id', order_id, 'ending', $6::text)))
             FROM refund",
        )
        .bind(Uuid::now_v7())
        .bind(result.order_id)
        .bind(result.amount_cents)
        .bind(Uuid::now_v7())
        .bind(ORDER_SETTLED)
        .bind(Ending::Refunded.name())
        .execute(&self.pool)
        .await;
        match recorded {
            Ok(done) if done.rows_affected() == 1 => Handled::Done,
            Ok(_) => Handled::Duplicate,
            Err(error) => Handled::Retry(error.into()),
        }
    }
}

/// An order of the batch, as read under its lock.
struct Locked {
    status: OrderStatus,
    event_id: i64,
    quantity: i32,
    /// Seconds since it was placed.
    age: f64,
    /// A refund of it is recorded.
    refunded: bool,
}

/// Locks the batch's orders, in id order. (The refund is looked up as a
/// scalar subquery: see `PaymentWorker::known_orders`.)
async fn lock_orders(
    tx: &mut sqlx::PgConnection,
    results: &[PaymentResult],
) -> sqlx::Result<HashMap<Uuid, Locked>> {
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
        let order = Locked {
            status,
            event_id,
            quantity,
            age,
            refunded,
        };
        orders.insert(id, order);
    }
    Ok(orders)
}

/// What a batch's results come to, decided before anything is written: the
/// orders confirmed and cancelled, the tickets each event moves, and each
/// result's fate.
#[derive(Default)]
struct Decided {
    confirmed: Vec<Uuid>,
    cancelled: Vec<Uuid>,
    moved: BTreeMap<i64, Moved>,
    /// Ages of the orders settled, for the metric.
    ages: Vec<f64>,
    /// What the buyers are told (`order.settled`, in the same transaction).
    told: Vec<OrderSettled>,
    /// One per result, in order.
    settled: Vec<Settled>,
}

impl Decided {
    /// Decides each result in turn; a result settles its order for the
    /// results after it (two results for one order: the second is a
    /// duplicate).
    fn of(results: &[PaymentResult], orders: &mut HashMap<Uuid, Locked>) -> Self {
        let mut decided = Self::default();
        for result in results {
            let settled = match orders.get_mut(&result.order_id) {
                None => Settled::Handled(Handled::Poison(format!(
                    "payment.result for unknown order {}",
                    result.order_id
                ))),
                Some(order) => decided.decide(result, order),
            };
            decided.settled.push(settled);
        }
        decided
    }

    fn decide(&mut self, result: &PaymentResult, order: &mut Locked) -> Settled {
        let event = self.moved.entry(order.event_id).or_default();
        match (order.status, result.outcome) {
            (OrderStatus::Pending, PaymentOutcome::Succeeded) => {
                self.ages.push(order.age);
                order.status = OrderStatus::Confirmed;
                tell(&mut self.told, result.order_id, Ending::Confirmed);
                self.confirmed.push(result.order_id);
                event.from_pending += order.quantity;
                event.to_sold += order.quantity;
            }
            (OrderStatus::Pending, PaymentOutcome::Failed) => {
                self.ages.push(order.age);
                order.status = OrderStatus::Cancelled;
                tell(&mut self.told, result.order_id, Ending::Cancelled);
                self.cancelled.push(result.order_id);
                event.from_pending += order.quantity;
                event.to_available += order.quantity;
            }
            (OrderStatus::Expired | OrderStatus::Cancelled, PaymentOutcome::Succeeded)
                if !known_bad::has(Bug::LatePaymentNotRefunded) && !order.refunded =>
            {
                return Settled::NeedsRefund;
            }
            // Settled (or refunded) by this result before: not asked again,
            // so a held message only ever shrinks.
            (OrderStatus::Expired | OrderStatus::Cancelled, PaymentOutcome::Succeeded)
            | (OrderStatus::Confirmed, PaymentOutcome::Succeeded)
            | (OrderStatus::Cancelled, PaymentOutcome::Failed) => {
                return Settled::Handled(Handled::Duplicate);
            }
            // A failed payment for an order that ended anyway.
            _ => {}
        }
        Settled::Handled(Handled::Done)
    }

    /// Writes the decisions: the orders' new statuses, the stock returns of
    /// the cancelled ones, the tickets each event moves, and what their
    /// buyers are to be told.
    async fn write(&self, tx: &mut sqlx::PgConnection) -> sqlx::Result<()> {
        crate::saga::outbox::enqueue(&mut *tx, ORDER_SETTLED, &self.told).await?;
        if !self.cancelled.is_empty() {
            // A cancelled seated order frees its seats under its event's row
            // lock (migration 7's trigger, row by row). Take every event's
            // lock first, in id order as the loop below does, so that batches
            // of several events cannot deadlock.
            let events: Vec<i64> = self.moved.keys().copied().collect();
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
        .bind(&self.confirmed)
        .bind(&self.cancelled)
        .bind(known_bad::has(Bug::RedisCompensationSkipped))
        .execute(&mut *tx)
        .await?;
        for (event_id, moved) in &self.moved {
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
        Ok(())
    }
}

/// The buyer of `order_id` is to be told it ended so, in the transaction
/// that ends it (a known-bad worker told them before it, see
/// [`OrderWorker::settle`]).
fn tell(told: &mut Vec<OrderSettled>, order_id: Uuid, ending: Ending) {
    if !known_bad::has(Bug::NoticeBeforeCommit) {
        told.push(OrderSettled { order_id, ending });
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
                let mut refunds = Vec::new();
                for (index, (result, settled)) in results.iter().zip(settled).enumerate() {
                    match settled {
                        Settled::Handled(h) => {
                            returned_stock |= matches!(h, Handled::Done)
                                && result.outcome == PaymentOutcome::Failed;
                            handled[index] = Some(h);
                        }
                        Settled::NeedsRefund => refunds.push((index, result.clone())),
                    }
                }
                for (index, refunded) in self.refund_all(refunds).await {
                    handled[index] = Some(refunded);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn result(order_id: Uuid, outcome: PaymentOutcome) -> PaymentResult {
        PaymentResult {
            order_id,
            outcome,
            amount_cents: 100,
        }
    }

    fn pending(event_id: i64, quantity: i32) -> Locked {
        Locked {
            status: OrderStatus::Pending,
            event_id,
            quantity,
            age: 1.0,
            refunded: false,
        }
    }

    fn fate(settled: &Settled) -> &'static str {
        match settled {
            Settled::NeedsRefund => "refund",
            Settled::Handled(handled) => handled.label(),
        }
    }

    #[test]
    fn each_result_settles_its_order_once_and_moves_its_tickets() {
        let (paid, declined, late, unknown) = (
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
        );
        let mut orders = HashMap::from([
            (paid, pending(1, 2)),
            (declined, pending(1, 3)),
            (
                late,
                Locked {
                    status: OrderStatus::Expired,
                    ..pending(2, 1)
                },
            ),
        ]);
        let results = [
            result(paid, PaymentOutcome::Succeeded),
            result(declined, PaymentOutcome::Failed),
            result(late, PaymentOutcome::Succeeded),
            result(paid, PaymentOutcome::Succeeded),
            result(unknown, PaymentOutcome::Succeeded),
        ];
        let decided = Decided::of(&results, &mut orders);
        let fates: Vec<&str> = decided.settled.iter().map(fate).collect();
        let done = Handled::Done.label();
        let duplicate = Handled::Duplicate.label();
        let poison = Handled::Poison(String::new()).label();
        assert_eq!(fates, [done, done, "refund", duplicate, poison]);
        assert_eq!(decided.confirmed, [paid]);
        assert_eq!(decided.cancelled, [declined]);
        let moved = &decided.moved[&1];
        assert_eq!(
            (moved.from_pending, moved.to_sold, moved.to_available),
            (5, 2, 3)
        );
        assert_eq!(orders[&paid].status, OrderStatus::Confirmed);
        assert_eq!(decided.ages.len(), 2);
    }
}
