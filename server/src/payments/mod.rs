//! The payment worker (role `payments`): takes `order.created`, charges the
//! order through the provider, records the payment and announces
//! `payment.result`.
//!
//! The provider is called outside any database transaction (it is slow and may
//! hang); it is idempotent by order, so a redelivery asks again and gets the
//! first answer, never a second charge. Then one transaction records the
//! messages as processed, the payments and the `payment.result` outbox rows;
//! the messages are acked after that commit. A batch of messages makes one
//! round of provider calls and one transaction.

pub mod provider;

use std::collections::HashSet;
use std::sync::Arc;

use sqlx::PgPool;
use uuid::Uuid;

use crate::consumer::{answers, decode, FirstTimes, Handled, Handler, Message};
use crate::known_bad::{self, Bug};
use crate::messages::{OrderCreated, PaymentResult, ORDER_CREATED, PAYMENT_RESULT};
use crate::metrics::Metrics;
use provider::{Outcome, Provider};

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

    /// Records the payments of a batch in one transaction: each message as
    /// processed, its payment, its `payment.result`. Returns, per entry,
    /// whether it was new (false: a duplicate, nothing written for it).
    async fn record(&self, charged: &[(Uuid, &OrderCreated, Outcome)]) -> sqlx::Result<Vec<bool>> {
        let mut tx = self.pool.begin().await?;
        let message_ids: Vec<Uuid> = charged.iter().map(|(id, ..)| *id).collect();
        let mut fresh = FirstTimes::claim(&mut tx, Self::NAME, &message_ids).await?;
        let is_new: Vec<bool> = message_ids.iter().map(|id| fresh.take(*id)).collect();
        let new: Vec<&(Uuid, &OrderCreated, Outcome)> = charged
            .iter()
            .zip(&is_new)
            .filter_map(|(entry, new)| new.then_some(entry))
            .collect();
        let payment_ids: Vec<Uuid> = new.iter().map(|_| Uuid::now_v7()).collect();
        let result_ids: Vec<Uuid> = new.iter().map(|_| Uuid::now_v7()).collect();
        let order_ids: Vec<Uuid> = new.iter().map(|(_, order, _)| order.order_id).collect();
        let outcomes: Vec<&str> = new.iter().map(|(.., outcome)| outcome.as_str()).collect();
        let amounts: Vec<i64> = new.iter().map(|(_, order, _)| order.amount_cents).collect();
        let results: Vec<String> = new
            .iter()
            .map(|(_, order, outcome)| {
                serde_json::to_string(&PaymentResult {
                    order_id: order.order_id,
                    outcome: *outcome,
                    amount_cents: order.amount_cents,
                })
                .unwrap_or_default()
            })
            .collect();
        sqlx::query(
            "WITH paid AS (
                INSERT INTO payments (id, order_id, kind, outcome, amount_cents)
                SELECT id, order_id, 'CAPTURE', outcome, amount_cents
                FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::int8[])
                     AS p(id, order_id, outcome, amount_cents)
                ON CONFLICT DO NOTHING
             )
             INSERT INTO outbox (message_id, topic, payload)
             SELECT id, $7, body::jsonb
             FROM unnest($5::uuid[], $6::text[]) AS r(id, body)",
        )
        .bind(&payment_ids)
        .bind(&order_ids)
        .bind(&outcomes)
        .bind(&amounts)
        .bind(&result_ids)
        .bind(&results)
        .bind(PAYMENT_RESULT)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        for outcome in outcomes {
            self.metrics.payment_recorded(outcome);
        }
        Ok(is_new)
    }
}

impl PaymentWorker {
    /// Which of these orders exist.
    async fn known_orders(&self, ids: &[Uuid]) -> sqlx::Result<HashSet<Uuid>> {
        let known: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM orders WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(&self.pool)
            .await?;
        Ok(known.into_iter().collect())
    }
}

impl Handler for PaymentWorker {
    const NAME: &'static str = "payments";
    const TOPIC: &'static str = ORDER_CREATED;

    async fn handle(&self, messages: Vec<Message>) -> Vec<Handled> {
        let (mut handled, decoded) = decode::<OrderCreated>(&messages, Self::TOPIC);
        let mut valid = Vec::new();
        for (index, message_id, order) in decoded {
            if order.amount_cents < 0 {
                handled[index] = Some(Handled::Poison(format!(
                    "negative amount for order {}",
                    order.order_id
                )));
            } else {
                valid.push((index, message_id, order));
            }
        }
        // Only orders we have are charged: a message for any other (a queue
        // kept across a reset, a database restored from a backup) can never
        // succeed, and asking the provider would take money we cannot record.
        let ids: Vec<Uuid> = valid.iter().map(|(_, _, order)| order.order_id).collect();
        let known = match self.known_orders(&ids).await {
            Ok(known) => known,
            Err(error) => {
                for (index, ..) in &valid {
                    handled[*index] = Some(Handled::Retry(anyhow::anyhow!(
                        "looking orders up: {error}"
                    )));
                }
                return answers(handled);
            }
        };
        let (valid, unknown): (Vec<_>, Vec<_>) = valid.into_iter().partition(|(_, _, order)| {
            known.contains(&order.order_id) || known_bad::has(Bug::PoisonWedge)
        });
        for (index, _, order) in unknown {
            handled[index] = Some(Handled::Poison(format!(
                "order.created for unknown order {}",
                order.order_id
            )));
        }
        let asked: Vec<(Uuid, i64)> = valid
            .iter()
            .map(|(_, _, order)| (order.order_id, order.amount_cents))
            .collect();
        let mut charged = Vec::new();
        match self.provider.capture(&asked).await {
            Ok(answers) => {
                for ((index, message_id, order), answer) in valid.iter().zip(answers) {
                    match answer {
                        Ok(outcome) => charged.push((*index, (*message_id, order, outcome))),
                        Err(error) => handled[*index] = Some(Handled::Retry(error.into())),
                    }
                }
            }
            Err(error) => {
                for (index, ..) in &valid {
                    handled[*index] =
                        Some(Handled::Retry(anyhow::anyhow!("payment provider: {error}")));
                }
            }
        }
        let entries: Vec<(Uuid, &OrderCreated, Outcome)> =
            charged.iter().map(|(_, entry)| *entry).collect();
        match self.record(&entries).await {
            Ok(fresh) => {
                for ((index, _), fresh) in charged.iter().zip(fresh) {
                    handled[*index] = Some(if fresh {
                        Handled::Done
                    } else {
                        Handled::Duplicate
                    });
                }
            }
            Err(error) => {
                for (index, _) in &charged {
                    handled[*index] = Some(Handled::Retry(anyhow::anyhow!(
                        "recording payments: {error}"
                    )));
                }
            }
        }
        answers(handled)
    }
}
