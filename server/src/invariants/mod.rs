//! The invariants of a sale (`docs/INVARIANTS.md`), defined once: `flashtix check` prints
//! them and the tests assert them.
//!
//! Each check reads Postgres (and Redis for "Redis agrees") and says PASS, FAIL
//! or UNKNOWN with counts and the first offending ids. FAIL beats UNKNOWN beats PASS.
//! One file a family: `orders` (stock, keys, the limit), `money`, `seats`,
//! `queues` (nothing stuck, every message processed), `redis_agrees`,
//! `notices` (judged by the receivers' mail and webhook records), and
//! `ledger`, `answers`, `owners`, `refusals` and `seat_taken`, those judged against a
//! client's history.

use sqlx::PgPool;

use crate::gate::Gate;
use flashtix_model::history::Attempt;

mod answers;
mod ledger;
mod messages;
mod money;
pub mod notices;
mod orders;
mod owners;
mod queues;
mod redis_agrees;
mod refusals;

mod seat_taken;
mod seats;

use answers::answers_match_orders;
pub use flashtix_model::report::{Finding, Invariant, Report, Verdict};
pub use ledger::no_lie_to_client;
use ledger::no_lost_order;
use money::{charges_match_orders, no_double_charge};
use orders::{no_duplicate_order, no_oversell, per_user_limit};
use owners::orders_owned_by_askers;
use queues::{nothing_stuck, queues_drained};
pub use queues::{Queues, EXPIRY_GRACE_SECONDS};
use redis_agrees::redis_agrees;
use refusals::refusals_were_true;
use seat_taken::seat_taken_was_true;
use seats::one_owner_per_seat;

/// How far apart a client's clock and the database's are taken to be, by
/// default: the history checks judge no moment closer than this.
pub const DEFAULT_CLOCK_SLACK: std::time::Duration = std::time::Duration::from_millis(100);

/// A client's history (see [`flashtix_model::history`]) and how far its clock and
/// the database's may disagree.
#[derive(Debug, Clone, Copy)]
pub struct History<'a> {
    pub attempts: &'a [Attempt],
    pub clock_slack: std::time::Duration,
}

impl<'a> History<'a> {
    /// The attempts, with [`DEFAULT_CLOCK_SLACK`].
    pub fn new(attempts: &'a [Attempt]) -> Self {
        Self {
            attempts,
            clock_slack: DEFAULT_CLOCK_SLACK,
        }
    }
}

/// Runs every invariant, for one event or all; with a storm's history also
/// those judging what its clients were told.
pub async fn check(
    pool: &PgPool,
    gate: &Gate,
    queues: Queues<'_>,
    history: Option<History<'_>>,
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
    if let Some(History {
        attempts,
        clock_slack,
    }) = history
    {
        let slack = chrono::Duration::from_std(clock_slack)?;
        // After the money, before the limit: what clients were told.
        let told = [
            no_lost_order(pool, attempts, event, slack).await?,
            no_lie_to_client(attempts, event),
            answers_match_orders(pool, attempts, event, slack).await?,
            orders_owned_by_askers(pool, attempts, event).await?,
            refusals_were_true(pool, attempts, event, slack).await?,
            seat_taken_was_true(pool, attempts, event, slack).await?,
        ];
        findings.splice(4..4, told);
    }
    Ok(Report::of(findings))
}
