//! What a check says: each invariant's [`Finding`] and the [`Report`] of them
//! all, worst verdict first in importance (FAIL beats UNKNOWN beats PASS).

use serde::{Deserialize, Serialize};

/// How many offending ids a finding names.
pub const EXAMPLES: usize = 5;

/// Every invariant `check` proves, by the name reports print
/// (`docs/INVARIANTS.md` says what each one means).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Invariant {
    NoOversell,
    NoDuplicateOrder,
    NoDoubleCharge,
    ChargesMatchOrders,
    NoLostOrder,
    NoLieToClient,
    AnswersMatchOrders,
    RefusalsWereTrue,
    SeatTakenWasTrue,
    PerUserLimit,
    OneOwnerPerSeat,
    RedisAgrees,
    NothingStuck,
    QueuesDrained,
    /// Not an invariant of the sale but of a run: every order reached an end
    /// within the wait a storm gives it (UNKNOWN otherwise).
    Settled,
}

impl Invariant {
    /// As reports and the JSON name it: `no_oversell`, `redis_agrees`, …
    pub fn name(self) -> &'static str {
        match self {
            Self::NoOversell => "no_oversell",
            Self::NoDuplicateOrder => "no_duplicate_order",
            Self::NoDoubleCharge => "no_double_charge",
            Self::ChargesMatchOrders => "charges_match_orders",
            Self::NoLostOrder => "no_lost_order",
            Self::NoLieToClient => "no_lie_to_client",
            Self::AnswersMatchOrders => "answers_match_orders",
            Self::RefusalsWereTrue => "refusals_were_true",
            Self::SeatTakenWasTrue => "seat_taken_was_true",
            Self::PerUserLimit => "per_user_limit",
            Self::OneOwnerPerSeat => "one_owner_per_seat",
            Self::RedisAgrees => "redis_agrees",
            Self::NothingStuck => "nothing_stuck",
            Self::QueuesDrained => "queues_drained",
            Self::Settled => "settled",
        }
    }
}

impl std::fmt::Display for Invariant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

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
