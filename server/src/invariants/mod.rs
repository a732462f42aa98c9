//! The invariants of a sale (`docs/INVARIANTS.md`), defined once: `flashtix check` prints
//! them and the tests assert them.
//!
//! Each check reads Postgres (and Redis for "Redis agrees") and says PASS, FAIL
//! or UNKNOWN with counts and the first offending ids. FAIL beats UNKNOWN beats PASS.
//! One file a family: [`orders`] (stock, keys, the limit), [`money`], [`seats`],
//! [`queues`] (nothing stuck, every message processed), [`redis_agrees`], and
//! [`ledger`], those judged against a client's history.

use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::broker::Topology;
use crate::consumer::Handler;
use crate::gate::Gate;
use crate::history::Attempt;
use crate::messages::OUTBOX_ENTRIES;
use crate::payments::PaymentWorker;
use crate::settlement::OrderWorker;

mod ledger;
mod money;
mod orders;
mod queues;
mod redis_agrees;
mod seats;

pub use ledger::no_lie_to_client;
use ledger::{no_lost_order, seat_taken_was_true};
use money::no_double_charge;
use orders::{no_duplicate_order, no_oversell, per_user_limit};
use queues::{nothing_stuck, queues_drained};
use redis_agrees::redis_agrees;
use seats::one_owner_per_seat;

/// How many offending ids a finding names.
const EXAMPLES: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    Pass,
    Unknown,
    Fail,
}

impl Verdict {
    /// As reports print it: `PASS`, `UNKNOWN`, `FAIL`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pass => "PASS",
            Self::Unknown => "UNKNOWN",
            Self::Fail => "FAIL",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Finding {
    pub invariant: String,
    pub verdict: Verdict,
    /// Things looked at (events, orders, users).
    pub checked: u64,
    /// Things that broke the invariant (or could not be judged).
    pub offending: u64,
    pub detail: String,
    /// The first offenders, each with what is wrong with it.
    pub examples: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub verdict: Verdict,
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn finding(&self, invariant: &str) -> Option<&Finding> {
        self.findings.iter().find(|f| f.invariant == invariant)
    }

    /// Adds a finding; the verdict is the worst of all.
    pub fn add(&mut self, finding: Finding) {
        self.verdict = self.verdict.max(finding.verdict);
        self.findings.push(finding);
    }
}

pub const NO_OVERSELL: &str = "no_oversell";
pub const NO_DUPLICATE_ORDER: &str = "no_duplicate_order";
pub const NO_DOUBLE_CHARGE: &str = "no_double_charge";
pub const NO_LOST_ORDER: &str = "no_lost_order";
pub const NO_LIE_TO_CLIENT: &str = "no_lie_to_client";
pub const SEAT_TAKEN_WAS_TRUE: &str = "seat_taken_was_true";
pub const PER_USER_LIMIT: &str = "per_user_limit";
pub const ONE_OWNER_PER_SEAT: &str = "one_owner_per_seat";
pub const REDIS_AGREES: &str = "redis_agrees";
pub const NOTHING_STUCK: &str = "nothing_stuck";
pub const QUEUES_DRAINED: &str = "queues_drained";
/// Not an invariant of the sale but of a run: every order reached an end
/// within the wait a storm gives it (UNKNOWN otherwise).
pub const SETTLED: &str = "settled";

/// How long past its hold a PENDING order may stay before it counts as stuck:
/// the sweeper runs every second or so.
pub const EXPIRY_GRACE_SECONDS: i64 = 30;

/// How far apart the storm's clock and the database's may be, for
/// `seat_taken_was_true`.
pub const CLOCK_SLACK_MS: i64 = 100;

/// SQL: whether the outbox message `m` names an order of event `$1` (every
/// message is a batch of entries, one per order).
fn about_event() -> String {
    format!(
        "EXISTS (SELECT 1 FROM jsonb_array_elements({OUTBOX_ENTRIES}) AS e(entry)
                 JOIN orders o ON o.id = (e.entry->>'order_id')::uuid
                 WHERE o.event_id = $1)"
    )
}

/// SQL naming the consumer of the outbox message `m` (by its topic), with
/// [`with_consumers`] binding `$2` to `$5`.
const CONSUMER_OF_TOPIC: &str = "CASE m.topic WHEN $2 THEN $3 WHEN $4 THEN $5 END";

/// Binds the topics and their consumers that [`CONSUMER_OF_TOPIC`] reads.
fn with_consumers<'q, O>(
    query: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
    query
        .bind(PaymentWorker::TOPIC)
        .bind(PaymentWorker::NAME)
        .bind(OrderWorker::TOPIC)
        .bind(OrderWorker::NAME)
}

/// Runs every invariant this build can prove, for one event or all.
/// Where the sale's queues are, for the queue invariant; `Err` says why they
/// could not be reached (the finding is then UNKNOWN).
pub type Queues<'a> = Result<(&'a lapin::Connection, &'a Topology), String>;

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
        per_user_limit(pool, event).await?,
        one_owner_per_seat(pool, event).await?,
        nothing_stuck(pool, event).await?,
        queues_drained(pool, queues, event).await?,
        redis_agrees(pool, gate, event).await?,
    ];
    if let Some(history) = history {
        findings.insert(3, no_lost_order(pool, history, event).await?);
        findings.insert(4, no_lie_to_client(history, event));
        findings.insert(5, seat_taken_was_true(pool, history, event).await?);
    }
    let verdict = findings
        .iter()
        .map(|f| f.verdict)
        .max()
        .unwrap_or(Verdict::Pass);
    Ok(Report { verdict, findings })
}

fn finding(
    invariant: &str,
    checked: u64,
    offenders: Vec<String>,
    ok: &str,
    broken: &str,
) -> Finding {
    let offending = offenders.len() as u64;
    Finding {
        invariant: invariant.into(),
        verdict: if offending == 0 {
            Verdict::Pass
        } else {
            Verdict::Fail
        },
        checked,
        offending,
        detail: if offending == 0 {
            ok.into()
        } else {
            broken.into()
        },
        examples: offenders.into_iter().take(EXAMPLES).collect(),
    }
}
