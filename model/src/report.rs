//! What a check says: each invariant's [`Finding`] and the [`Report`] of them
//! all, worst verdict first in importance (FAIL beats UNKNOWN beats PASS).

use serde::{Deserialize, Serialize};

/// How many offending ids a finding names.
pub const EXAMPLES: usize = 5;

crate::named! {
    /// Every invariant `check` proves, by the name reports print
    /// (`docs/INVARIANTS.md` says what each one means).
    pub enum Invariant("an invariant") {
        NoOversell = "no_oversell",
        NoDuplicateOrder = "no_duplicate_order",
        NoDoubleCharge = "no_double_charge",
        ChargesMatchOrders = "charges_match_orders",
        NoLostOrder = "no_lost_order",
        NoLieToClient = "no_lie_to_client",
        AnswersMatchOrders = "answers_match_orders",
        OrdersOwnedByAskers = "orders_owned_by_askers",
        RefusalsWereTrue = "refusals_were_true",
        SeatTakenWasTrue = "seat_taken_was_true",
        PerUserLimit = "per_user_limit",
        OneOwnerPerSeat = "one_owner_per_seat",
        RedisAgrees = "redis_agrees",
        NothingStuck = "nothing_stuck",
        QueuesDrained = "queues_drained",
        NoticesTrue = "notices_true",
        NoticesOnce = "notices_once",
        NoticesSent = "notices_sent",
        WebhooksSigned = "webhooks_signed",
        WebhooksDelivered = "webhooks_delivered",
        /// Not an invariant of the sale but of a run: every order reached an end
        /// within the wait a storm gives it (UNKNOWN otherwise).
        Settled = "settled",
    }
}

crate::named! {
    /// A check's answer, worst last: FAIL beats UNKNOWN beats PASS.
    #[derive(PartialOrd, Ord)]
    pub enum Verdict("a verdict") {
        Pass = "PASS",
        Unknown = "UNKNOWN",
        Fail = "FAIL",
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Finding {
    pub invariant: Invariant,
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

/// What `check --json` writes: the report, and with `--settle`, how long
/// the sale took to settle.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checked {
    #[serde(flatten)]
    pub report: Report,
    /// With `--settle`: seconds until no order was PENDING; absent without
    /// it, or when the limit came first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settled_seconds: Option<f64>,
}

impl Report {
    /// A report of these findings; its verdict is the worst of them.
    pub fn of(findings: Vec<Finding>) -> Self {
        let verdict = findings
            .iter()
            .map(|f| f.verdict)
            .max()
            .unwrap_or(Verdict::Pass);
        Self { verdict, findings }
    }

    pub fn finding(&self, invariant: Invariant) -> Option<&Finding> {
        self.findings.iter().find(|f| f.invariant == invariant)
    }

    /// Adds a finding; the verdict is the worst of all.
    pub fn add(&mut self, finding: Finding) {
        self.verdict = self.verdict.max(finding.verdict);
        self.findings.push(finding);
    }
}

/// PASS when nobody offended, FAIL naming the first [`EXAMPLES`] otherwise.
pub fn finding(
    invariant: Invariant,
    checked: u64,
    offenders: Vec<String>,
    ok: &str,
    broken: &str,
) -> Finding {
    let offending = offenders.len() as u64;
    Finding {
        invariant,
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
