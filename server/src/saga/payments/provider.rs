//! The simulated payment provider, with books of its own (`provider_ledger`).
//!
//! Like a real provider it is idempotent by key: a capture or refund is keyed by
//! (order, kind), and asking again returns the first answer instead of moving
//! money again. Whether a capture succeeds is decided by the order id and the
//! seed alone, so a redelivered message asks the same question and gets the same
//! answer. A timeout is the worst case: the provider did the work and the caller
//! never heard back; the retry finds the answer in the ledger.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

pub use crate::saga::messages::PaymentOutcome;
use flashtix_model::rng;

use crate::runtime::config::ProviderSettings;
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("the payment provider did not answer in time")]
    Timeout,
    #[error("the payment provider is unavailable")]
    Unavailable(#[from] sqlx::Error),
}

pub struct Provider {
    ledger: PgPool,
    settings: ProviderSettings,
    /// Varies the timeouts between attempts (outcomes never vary).
    attempts: AtomicU64,
}

impl Provider {
    pub fn new(ledger: PgPool, settings: ProviderSettings) -> Self {
        Self {
            ledger,
            settings,
            attempts: AtomicU64::new(0),
        }
    }

    /// Takes each order's money, once; the calls run side by side. Each answer
    /// is the first answer the provider ever gave for that order, or a timeout.
    pub async fn capture(
        &self,
        orders: &[(Uuid, i64)],
    ) -> Result<Vec<Result<PaymentOutcome, ProviderError>>, ProviderError> {
        tokio::time::sleep(self.settings.latency).await;
        let ids: Vec<Uuid> = orders.iter().map(|(id, _)| *id).collect();
        let amounts: Vec<i64> = orders.iter().map(|(_, amount)| *amount).collect();
        let outcomes: Vec<&str> = ids
            .iter()
            .map(|id| {
                let declined = unit(self.settings.seed, *id, 1) < self.settings.failure_rate;
                if declined {
                    PaymentOutcome::Failed
                } else {
                    PaymentOutcome::Succeeded
                }
                .name()
            })
            .collect();
        let booked: Vec<(Uuid, String)> = sqlx::query_as(
            "WITH asked AS (
                SELECT * FROM unnest($1::uuid[], $2::text[], $3::int8[])
                       AS a(order_id, outcome, amount_cents)
             ), fresh AS (
                INSERT INTO provider_ledger (order_id, kind, outcome, amount_cents)
                SELECT order_id, 'CAPTURE', outcome, amount_cents FROM asked
                ON CONFLICT (order_id, kind) DO NOTHING
                RETURNING order_id, outcome
             )
             SELECT order_id, outcome FROM fresh
             UNION ALL
             SELECT l.order_id, l.outcome FROM provider_ledger l
             WHERE l.kind = 'CAPTURE' AND l.order_id = ANY($1)
               AND NOT EXISTS (SELECT 1 FROM fresh f WHERE f.order_id = l.order_id)",
        )
        .bind(&ids)
        .bind(&outcomes)
        .bind(&amounts)
        .fetch_all(&self.ledger)
        .await?;
        let mut booked: HashMap<Uuid, String> = booked.into_iter().collect();
        // An order another call was booking at the same moment: our insert
        // waited for it and stood back, but the statement's snapshot predates
        // its commit. A fresh statement sees it.
        let unseen: Vec<Uuid> = ids
            .iter()
            .filter(|id| !booked.contains_key(id))
            .copied()
            .collect();
        if !unseen.is_empty() {
            let late: Vec<(Uuid, String)> = sqlx::query_as(
                "SELECT order_id, outcome FROM provider_ledger
                 WHERE kind = 'CAPTURE' AND order_id = ANY($1)",
            )
            .bind(&unseen)
            .fetch_all(&self.ledger)
            .await?;
            booked.extend(late);
        }
        Ok(ids
            .iter()
            .map(|id| {
                if self.lost_answer(*id) {
                    return Err(ProviderError::Timeout);
                }
                // Never "declined" for want of an answer: money may have moved.
                booked
                    .get(id)
                    .and_then(|outcome| PaymentOutcome::named(outcome))
                    .ok_or(ProviderError::Timeout)
            })
            .collect())
    }

    /// Whether this call's answer is lost on the way back (the work is done).
    fn lost_answer(&self, order_id: Uuid) -> bool {
        let attempt = self.attempts.fetch_add(1, Ordering::Relaxed);
        unit(self.settings.seed ^ attempt.rotate_left(17), order_id, 2) < self.settings.timeout_rate
    }

    /// Gives a captured order's money back, once.
    pub async fn refund(
        &self,
        order_id: Uuid,
        amount_cents: i64,
    ) -> Result<PaymentOutcome, ProviderError> {
        self.book(order_id, "REFUND", PaymentOutcome::Succeeded, amount_cents)
            .await
    }

    async fn book(
        &self,
        order_id: Uuid,
        kind: &str,
        outcome: PaymentOutcome,
        amount_cents: i64,
    ) -> Result<PaymentOutcome, ProviderError> {
        tokio::time::sleep(self.settings.latency).await;
        sqlx::query(
            "INSERT INTO provider_ledger (order_id, kind, outcome, amount_cents)
             VALUES ($1, $2, $3, $4) ON CONFLICT (order_id, kind) DO NOTHING",
        )
        .bind(order_id)
        .bind(kind)
        .bind(outcome.name())
        .bind(amount_cents)
        .execute(&self.ledger)
        .await?;
        let first: String = sqlx::query_scalar(
            "SELECT outcome FROM provider_ledger WHERE order_id = $1 AND kind = $2",
        )
        .bind(order_id)
        .bind(kind)
        .fetch_one(&self.ledger)
        .await?;
        if self.lost_answer(order_id) {
            return Err(ProviderError::Timeout);
        }
        PaymentOutcome::named(&first).ok_or(ProviderError::Timeout)
    }
}

/// A number in [0, 1) fixed by (seed, order, purpose): splitmix64 over them.
fn unit(seed: u64, order_id: Uuid, purpose: u64) -> f64 {
    let (high, low) = order_id.as_u64_pair();
    let mixed = seed ^ high ^ low.rotate_left(32) ^ purpose.wrapping_mul(rng::GOLDEN);
    rng::unit(rng::finalize(mixed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_fixed_by_order_and_seed_and_follow_the_rate() {
        let orders: Vec<Uuid> = (0..10_000).map(|_| Uuid::now_v7()).collect();
        let declined = |seed| orders.iter().filter(|o| unit(seed, **o, 1) < 0.2).count();
        assert_eq!(declined(7), declined(7));
        let share = declined(7) as f64 / orders.len() as f64;
        assert!((0.18..0.22).contains(&share), "{share}");
        assert_ne!(
            orders
                .iter()
                .map(|o| unit(7, *o, 1) < 0.2)
                .collect::<Vec<_>>(),
            orders
                .iter()
                .map(|o| unit(8, *o, 1) < 0.2)
                .collect::<Vec<_>>(),
            "the seed changes which orders are declined"
        );
    }
}
