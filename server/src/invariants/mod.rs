//! The invariants of a sale (`docs/INVARIANTS.md`), defined once: `flashtix check` prints
//! them and the tests assert them.
//!
//! Each check reads Postgres (and Redis for "Redis agrees") and says PASS, FAIL
//! or UNKNOWN with counts and the first offending ids. FAIL beats UNKNOWN beats PASS.
//! One file a family: [`orders`] (stock, keys, the limit), [`money`], [`seats`],
//! [`queues`] (nothing stuck, every message processed), [`redis_agrees`], and
//! [`ledger`], those judged against a client's history.

use sqlx::PgPool;

use crate::gate::Gate;
use crate::history::Attempt;

mod answers;
mod ledger;
mod messages;
mod money;
mod orders;
mod queues;
mod redis_agrees;
mod report;
mod seats;

use answers::answers_match_orders;
pub use ledger::no_lie_to_client;
pub use ledger::CLOCK_SLACK_MS;
use ledger::{no_lost_order, seat_taken_was_true};
use money::{charges_match_orders, no_double_charge};
use orders::{no_duplicate_order, no_oversell, per_user_limit};
use queues::{nothing_stuck, queues_drained};
pub use queues::{Queues, EXPIRY_GRACE_SECONDS};
use redis_agrees::redis_agrees;
pub use report::{Finding, Invariant, Report, Verdict};
use seats::one_owner_per_seat;

/// Runs every invariant, for one event or all; with a storm's history (see
/// [`crate::history`]) also "no lost order".
pub async fn check(
    pool: &PgPool,
    gate: &Gate,
    queues: Queues<'_>,
    history: Option<&[Attempt]>,
    event: Option<i64>,
) -> anyhow::Result<Report> {
    let mut findings = vec![
        no_oversell(pool, event).await?,
        no_duplicate_order(pool, event).await?,
        no_double_charge(pool, event).await?,
        charges_match_orders(pool, event).await?,
        per_user_limit(pool, event).await?,
        one_owner_per_seat(pool, event).await?,
        nothing_stuck(pool, event).await?,
        queues_drained(pool, queues, event).await?,
        redis_agrees(pool, gate, event).await?,
    ];
    if let Some(history) = history {
        // After the money, before the limit: what clients were told.
        let told = [
            no_lost_order(pool, history, event).await?,
            no_lie_to_client(history, event),
            answers_match_orders(pool, history, event).await?,
            seat_taken_was_true(pool, history, event).await?,
        ];
        findings.splice(4..4, told);
    }
    Ok(Report::of(findings))
}
