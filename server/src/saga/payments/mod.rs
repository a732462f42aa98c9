//! The payment worker (role `payments`): takes `order.created`, charges each
//! order through the provider, records the payments and announces them in one
//! `payment.result`.
//!
//! The provider is called outside any database transaction (it is slow and may
//! hang); it is idempotent by order, so a redelivery asks again and gets the
//! first answer, never a second charge. Then one statement records the
//! payments and the `payment.result` outbox row naming every order recorded
//! for the first time. An order's payment is recorded once (one row per order
//! and kind, enforced by the database): a payment already there makes its
//! entry a duplicate, announced before. The messages are acked after that
//! commit. A batch of messages makes one round of provider calls and one
//! statement.

pub mod provider;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use sqlx::PgPool;
use uuid::Uuid;

use crate::known_bad::{self, Bug};
use crate::runtime::metrics::Metrics;
use crate::saga::consumer::{answers, Handled, Handler};
use crate::saga::messages::{OrderCreated, ORDER_CREATED, PAYMENT_RESULT};
use provider::{PaymentOutcome, Provider};

pub struct PaymentWorker {
    pool: PgPool,
    provider: Provider,
    metrics: Arc<Metrics>,
}

impl PaymentWorker {
    pub fn new(pool: PgPool, provider: Provider, metrics: Arc<Metrics>) -> Self {
        Self {
            pool,
            provider,
            metrics,
        }
    }

    /// Records the captures of a batch, each order once, and their
    /// `payment.result`, in one statement. Returns the orders recorded now
    /// (the others were recorded before: nothing written for them).
    async fn record(
        &self,
        charged: &[(&OrderCreated, PaymentOutcome)],
    ) -> sqlx::Result<HashSet<Uuid>> {
        if charged.is_empty() {
            return Ok(HashSet::new());
        }
        let payment_ids: Vec<Uuid> = charged.iter().map(|_| Uuid::now_v7()).collect();
        let order_ids: Vec<Uuid> = charged.iter().map(|(order, _)| order.order_id).collect();
        let outcomes: Vec<&str> = charged.iter().map(|(_, outcome)| outcome.name()).collect();
        let amounts: Vec<i64> = charged
            .iter()
            .map(|(order, _)| order.amount_cents)
            .collect();
        let recorded: Vec<Uuid> = sqlx::query_scalar(
            "WITH paid AS (
                INSERT INTO payments (id, order_id, kind, outcome, amount_cents)
                SELECT id, order_id, 'CAPTURE', outcome, amount_cents
                FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::int8[])
                     AS p(id, order_id, outcome, amount_cents)
                ON CONFLICT DO NOTHING
                RETURNING order_id, outcome, amount_cents
             ), announced AS (
                INSERT INTO outbox (message_id, topic, payload)
                SELECT $5, $6, jsonb_build_object('orders', jsonb_agg(jsonb_build_object(
                           'order_id', order_id, 'outcome', outcome, 'amount_cents', amount_cents)))
                FROM paid HAVING count(*) > 0
             )
             SELECT order_id FROM paid",
        )
        .bind(&payment_ids)
        .bind(&order_ids)
        .bind(&outcomes)
        .bind(&amounts)
        .bind(Uuid::now_v7())
        .bind(PAYMENT_RESULT)
        .fetch_all(&self.pool)
        .await?;
        let recorded: HashSet<Uuid> = recorded.into_iter().collect();
        for (order, outcome) in charged {
            if recorded.contains(&order.order_id) {
                self.metrics.payment_recorded(outcome.name());
            }
        }
        Ok(recorded)
    }

    /// Which of these orders exist, and whether each one's capture is
    /// recorded already.
    ///
    /// The capture is looked up as a scalar subquery, one index probe per
    /// order: as `EXISTS`, a plan cached while `payments` was small hashes
    /// every capture instead.
    async fn known_orders(&self, ids: &[Uuid]) -> sqlx::Result<HashMap<Uuid, bool>> {
        let known: Vec<(Uuid, bool)> = sqlx::query_as(
            "SELECT o.id, (SELECT true FROM payments p
                           WHERE p.order_id = o.id AND p.kind = 'CAPTURE') IS NOT NULL
             FROM orders o WHERE o.id = ANY($1)",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        Ok(known.into_iter().collect())
    }
}

impl Handler for PaymentWorker {
    const NAME: &'static str = "payments";
    const TOPIC: &'static str = ORDER_CREATED;
    type Entry = OrderCreated;

    async fn handle(&self, orders: Vec<OrderCreated>) -> Vec<Handled> {
        let mut batch = Batch::sort(&orders);
        // Only orders we have are charged: a message for any other (a queue
        // kept across a reset, a database restored from a backup) can never
        // succeed, and asking the provider would take money we cannot record.
        let ids: Vec<Uuid> = batch
            .valid
            .iter()
            .map(|(_, order)| order.order_id)
            .collect();
        let to_charge = match self.known_orders(&ids).await {
            Ok(known) => batch.unpaid(&known),
            Err(error) => {
                for (index, _) in &batch.valid {
                    batch.handled[*index] = Some(Handled::Retry(anyhow::anyhow!(
                        "looking orders up: {error}"
                    )));
                }
                return answers(batch.handled);
            }
        };
        let charged = self.charge(&mut batch.handled, &to_charge).await;
        self.record_charged(&mut batch.handled, &charged).await;
        batch.answer_copies();
        answers(batch.handled)
    }
}

/// A batch of `order.created` entries, sorted: the first entry of each order
/// is charged; a later copy (a republished message beside the first) gets
/// the first one's answer, as a duplicate, or held with it.
struct Batch<'a> {
    /// Each entry's answer, once known.
    handled: Vec<Option<Handled>>,
    /// (copy, original) entry indexes.
    copies: Vec<(usize, usize)>,
    /// The first entry of each order, with its index.
    valid: Vec<(usize, &'a OrderCreated)>,
}

impl<'a> Batch<'a> {
    fn sort(orders: &'a [OrderCreated]) -> Self {
        let mut batch = Self {
            handled: Vec::with_capacity(orders.len()),
            copies: Vec::new(),
            valid: Vec::new(),
        };
        let mut first = HashMap::new();
        for (index, order) in orders.iter().enumerate() {
            if order.amount_cents < 0 {
                batch.handled.push(Some(Handled::Poison(format!(
                    "negative amount for order {}",
                    order.order_id
                ))));
            } else if let Some(&original) = first.get(&order.order_id) {
                batch.handled.push(None);
                batch.copies.push((index, original));
            } else {
                first.insert(order.order_id, index);
                batch.handled.push(None);
                batch.valid.push((index, order));
            }
        }
        batch
    }

    /// The entries to charge, given which orders exist and whether each has
    /// its capture recorded; the others are answered.
    fn unpaid(&mut self, known: &HashMap<Uuid, bool>) -> Vec<(usize, &'a OrderCreated)> {
        let mut to_charge = Vec::with_capacity(self.valid.len());
        for (index, order) in std::mem::take(&mut self.valid) {
            match known.get(&order.order_id) {
                // Recorded by an earlier try of this message, or by a copy of
                // it: not asked again, so a held message only ever shrinks.
                Some(true) => self.handled[index] = Some(Handled::Duplicate),
                Some(false) => to_charge.push((index, order)),
                None if known_bad::has(Bug::PoisonWedge) => to_charge.push((index, order)),
                None => {
                    self.handled[index] = Some(Handled::Poison(format!(
                        "order.created for unknown order {}",
                        order.order_id
                    )))
                }
            }
        }
        to_charge
    }

    /// Each copy answered as its original was.
    fn answer_copies(&mut self) {
        for &(copy, original) in &self.copies {
            self.handled[copy] = Some(match &self.handled[original] {
                Some(Handled::Retry(error)) => Handled::Retry(anyhow::anyhow!("{error:#}")),
                Some(Handled::Poison(reason)) => Handled::Poison(reason.clone()),
                _ => Handled::Duplicate,
            });
        }
    }
}

impl PaymentWorker {
    /// Asks the provider to capture each order; those it could not answer for
    /// are retried.
    async fn charge<'a>(
        &self,
        handled: &mut [Option<Handled>],
        to_charge: &[(usize, &'a OrderCreated)],
    ) -> Vec<(usize, &'a OrderCreated, PaymentOutcome)> {
        let asked: Vec<(Uuid, i64)> = to_charge
            .iter()
            .map(|(_, order)| (order.order_id, order.amount_cents))
            .collect();
        let mut charged = Vec::new();
        match self.provider.capture(&asked).await {
            Ok(outcomes) => {
                for ((index, order), outcome) in to_charge.iter().zip(outcomes) {
                    match outcome {
                        Ok(outcome) => charged.push((*index, *order, outcome)),
                        Err(error) => handled[*index] = Some(Handled::Retry(error.into())),
                    }
                }
            }
            Err(error) => {
                for (index, _) in to_charge {
                    handled[*index] =
                        Some(Handled::Retry(anyhow::anyhow!("payment provider: {error}")));
                }
            }
        }
        charged
    }

    /// Records the captures: done if this try recorded it, a duplicate if
    /// another had.
    async fn record_charged(
        &self,
        handled: &mut [Option<Handled>],
        charged: &[(usize, &OrderCreated, PaymentOutcome)],
    ) {
        let entries: Vec<(&OrderCreated, PaymentOutcome)> = charged
            .iter()
            .map(|(_, order, outcome)| (*order, *outcome))
            .collect();
        match self.record(&entries).await {
            Ok(recorded) => {
                for (index, order, _) in charged {
                    handled[*index] = Some(if recorded.contains(&order.order_id) {
                        Handled::Done
                    } else {
                        Handled::Duplicate
                    });
                }
            }
            Err(error) => {
                for (index, ..) in charged {
                    handled[*index] = Some(Handled::Retry(anyhow::anyhow!(
                        "recording payments: {error}"
                    )));
                }
            }
        }
    }
}
