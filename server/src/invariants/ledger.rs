//! The invariants judged against a client's ledger (`check --history`, see
//! [`flashtix_model::history`]): what each buyer was told, held to the
//! database and to itself. "No lost order" (every answered order exists,
//! every order made meanwhile was asked for) and "no lie to a client" (a
//! key's answers agree); "seat taken was true" is [`super::seat_taken`]'s.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use flashtix_model::history::{Attempt, Outcome};
use flashtix_model::report::{finding, Finding, Invariant, Verdict, EXAMPLES};

use crate::runtime::db::from_row;

/// Invariant 4: every order the API answered for exists (for that buyer and
/// key); every order made while the history was being written was asked for
/// by someone in it. Attempts that got no answer are "unknown": reported as
/// found or not, never as errors.
///
/// A history proves only what it could have seen: an order made before its
/// first send or after its last answer is another client's — a buyer at the
/// sale before the storm began — and is counted apart, not judged. One made
/// within the clock slack of either end, where the database's clock and
/// the client's cannot tell which side it fell, is UNKNOWN.
pub(super) async fn no_lost_order(
    pool: &PgPool,
    history: &[Attempt],
    event: Option<i64>,
    slack: chrono::Duration,
) -> anyhow::Result<Finding> {
    let (history, events) = attempts_judged(history, event, |_| true);
    let orders: Vec<Stored> = sqlx::query_as(
        "SELECT id, user_id, idempotency_key, created_at FROM orders
         WHERE event_id = ANY($1) ORDER BY created_at, id",
    )
    .bind(events)
    .fetch_all(pool)
    .await?;
    let asked: HashSet<(&str, &str)> = history
        .iter()
        .map(|a| (a.user_id.as_str(), a.idempotency_key.as_str()))
        .collect();
    let (mut offenders, answered) = answered_orders_missing(&history, &orders);
    let unasked = Unasked::sort(&orders, &asked, &Span::of(&history, slack));
    offenders.extend(unasked.during);
    let mut result = if offenders.is_empty() && !unasked.at_an_edge.is_empty() {
        Finding {
            invariant: Invariant::NoLostOrder,
            verdict: Verdict::Unknown,
            checked: answered,
            offending: unasked.at_an_edge.len() as u64,
            detail: "orders nobody in the history asked for, made too near its first send \
                     or last answer to tell whether it could have seen them"
                .into(),
            examples: unasked.at_an_edge.into_iter().take(EXAMPLES).collect(),
        }
    } else {
        finding(
            Invariant::NoLostOrder,
            answered,
            offenders,
            "every answered order exists; every order made meanwhile was asked for",
            "orders lost or invented",
        )
    };
    result
        .detail
        .push_str(&unknown_outcomes(&history, &asked, &orders));
    result.detail.push_str(&made_outside(&unasked.outside));
    Ok(result)
}

/// An order as "no lost order" reads it.
struct Stored {
    id: Uuid,
    user_id: String,
    idempotency_key: String,
    /// When it was written, on the database's clock.
    created_at: DateTime<Utc>,
}

from_row!(Stored {
    id,
    user_id,
    idempotency_key,
    created_at
});

impl Stored {
    fn pair(&self) -> (&str, &str) {
        (&self.user_id, &self.idempotency_key)
    }
}

/// Answers that named an order the database does not have, or has for
/// another buyer; and how many orders were answered.
fn answered_orders_missing(history: &[&Attempt], orders: &[Stored]) -> (Vec<String>, u64) {
    let by_id: HashMap<Uuid, (&str, &str)> = orders.iter().map(|o| (o.id, o.pair())).collect();
    let mut offenders = Vec::new();
    let mut answered = HashSet::new();
    for attempt in history {
        let Some(order_id) = attempt.order_id else {
            continue;
        };
        answered.insert(order_id);
        let pair = (attempt.user_id.as_str(), attempt.idempotency_key.as_str());
        match by_id.get(&order_id) {
            None => offenders.push(format!(
                "order {order_id}: answered to user {:?} key {:?}, not in the database",
                pair.0, pair.1
            )),
            Some(owner) if *owner != pair => offenders.push(format!(
                "order {order_id}: answered to user {:?} key {:?}, belongs to user {:?} key {:?}",
                pair.0, pair.1, owner.0, owner.1
            )),
            // What the answer said of it: "answers match orders".
            Some(_) => {}
        }
    }
    (offenders, answered.len() as u64)
}

/// The orders nobody in the history asked for, by when they were made.
struct Unasked {
    /// While the history was written: invented, or another client's.
    during: Vec<String>,
    /// Within the clock slack of its first send or last answer.
    at_an_edge: Vec<String>,
    /// Before or after it: not judged.
    outside: Vec<String>,
}

impl Unasked {
    fn sort(orders: &[Stored], asked: &HashSet<(&str, &str)>, span: &Span) -> Self {
        let mut unasked = Self {
            during: Vec::new(),
            at_an_edge: Vec::new(),
            outside: Vec::new(),
        };
        for order in orders {
            if asked.contains(&order.pair()) {
                continue;
            }
            let (id, user, key) = (order.id, &order.user_id, &order.idempotency_key);
            match span.place(order.created_at) {
                Place::During => unasked.during.push(format!(
                    "order {id}: user {user:?} key {key:?} made at {}, while the history was \
                     written, and nobody in it asked for it (another client buying from the same \
                     sale? give every client's history)",
                    order.created_at.format("%H:%M:%S%.3f")
                )),
                Place::Edge { from, edge } => unasked.at_an_edge.push(format!(
                    "order {id}: user {user:?} key {key:?} made {} {edge}, nobody in the history \
                     asked for it, and the clocks may disagree by {} ms",
                    from_edge(from),
                    span.slack.num_milliseconds()
                )),
                Place::Before(by) => unasked.outside.push(format!(
                    "order {id} (user {user:?} key {key:?}, {} before the first send)",
                    seconds(by)
                )),
                Place::After(by) => unasked.outside.push(format!(
                    "order {id} (user {user:?} key {key:?}, {} after the last answer)",
                    seconds(by)
                )),
            }
        }
        unasked
    }
}

/// The keys that never got a definite answer, and how many of them became
/// orders: `; 12 attempts; unknown outcomes: 2 became orders, 1 did not`.
fn unknown_outcomes(
    history: &[&Attempt],
    asked: &HashSet<(&str, &str)>,
    orders: &[Stored],
) -> String {
    let existing: HashSet<(&str, &str)> = orders.iter().map(Stored::pair).collect();
    let definite: HashSet<(&str, &str)> = history
        .iter()
        .filter(|a| a.outcome.is_definite())
        .map(|a| (a.user_id.as_str(), a.idempotency_key.as_str()))
        .collect();
    let unknown: Vec<&(&str, &str)> = asked
        .iter()
        .filter(|pair| !definite.contains(*pair))
        .collect();
    let found = unknown
        .iter()
        .filter(|pair| existing.contains(**pair))
        .count();
    format!(
        "; {} attempts; unknown outcomes: {found} became orders, {} did not",
        history.len(),
        unknown.len() - found
    )
}

/// The orders made outside the history, a few by name.
fn made_outside(outside: &[String]) -> String {
    if outside.is_empty() {
        return String::new();
    }
    let mut text = format!(
        "; {} made outside the history (not judged: it could not have seen them): {}",
        match outside.len() {
            1 => "1 order".to_owned(),
            n => format!("{n} orders"),
        },
        outside[..outside.len().min(OUTSIDE_EXAMPLES)].join(", ")
    );
    if outside.len() > OUTSIDE_EXAMPLES {
        text.push_str(", …");
    }
    text
}

/// How many orders made outside a history "no lost order" names.
const OUTSIDE_EXAMPLES: usize = 3;

/// When a history was written: from its first send to its last answer.
struct Span {
    first_send: Option<DateTime<Utc>>,
    last_answer: Option<DateTime<Utc>>,
    /// How far apart the client's clock and the database's may be.
    slack: chrono::Duration,
}

/// Where a moment of the database's clock falls against a [`Span`] of the
/// client's, the two taken to agree within the clock slack.
enum Place {
    /// Before the first send, by this much and more than the slack.
    Before(chrono::Duration),
    /// Within the slack of an edge: the clocks cannot tell which side.
    Edge {
        /// From the edge to the moment (negative: before it).
        from: chrono::Duration,
        edge: &'static str,
    },
    During,
    /// After the last answer, by this much and more than the slack.
    After(chrono::Duration),
}

impl Span {
    fn of(history: &[&Attempt], slack: chrono::Duration) -> Self {
        Self {
            first_send: history.iter().map(|a| a.sent_at).min(),
            last_answer: history.iter().map(|a| a.finished_at).max(),
            slack,
        }
    }

    fn place(&self, moment: DateTime<Utc>) -> Place {
        let slack = self.slack;
        let (Some(first), Some(last)) = (self.first_send, self.last_answer) else {
            return Place::During;
        };
        if moment < first - slack {
            Place::Before(first - moment)
        } else if moment > last + slack {
            Place::After(moment - last)
        } else if moment < first + slack {
            Place::Edge {
                from: moment - first,
                edge: "the first send",
            }
        } else if moment > last - slack {
            Place::Edge {
                from: moment - last,
                edge: "the last answer",
            }
        } else {
            Place::During
        }
    }
}

/// A duration as people read it: `0.250 s`, `12.3 s`, `95 s`.
fn seconds(duration: chrono::Duration) -> String {
    let seconds = duration.num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6;
    match seconds {
        s if s < 1.0 => format!("{s:.3} s"),
        s if s < 60.0 => format!("{s:.1} s"),
        s => format!("{s:.0} s"),
    }
}

/// `0.040 s after` or `0.040 s before`, of a signed duration.
fn from_edge(from: chrono::Duration) -> String {
    if from < chrono::Duration::zero() {
        format!("{} before", seconds(-from))
    } else {
        format!("{} after", seconds(from))
    }
}

/// The attempts a history invariant judges: those on `event` (every
/// event's, with `None`) whose outcome `judged` picks; and the events they
/// were made on, each once.
pub(super) fn attempts_judged(
    history: &[Attempt],
    event: Option<i64>,
    judged: impl Fn(Outcome) -> bool,
) -> (Vec<&Attempt>, Vec<i64>) {
    let attempts: Vec<&Attempt> = history
        .iter()
        .filter(|a| a.on(event) && judged(a.outcome))
        .collect();
    let events = events_of(&attempts);
    (attempts, events)
}

/// The events the attempts were made on, each once.
fn events_of(attempts: &[&Attempt]) -> Vec<i64> {
    let mut events: Vec<i64> = attempts.iter().map(|a| a.event_id).collect();
    events.sort_unstable();
    events.dedup();
    events
}

pub(super) fn sorted(seats: &[String]) -> Vec<&str> {
    let mut sorted: Vec<&str> = seats.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    sorted
}

/// Invariant 4, the answers: every definite answer a client got for a key
/// agrees with every other, judged on the client's own clock alone (the
/// history's `sent_at` and `finished_at`), so no clock of the server's is
/// trusted:
/// - every `202` for a key (first or replayed) names one and the same order;
/// - a refusal (`sold_out`, `seat_taken`, `limit_exceeded`) for a key sent after a `202`
///   for that key had arrived is a lie: the order provably existed when the
///   refused request left the client. (A refusal sent before, or while, the
///   accepted one was in flight is not: that order may not have been
///   committed yet.)
///
/// Unknown outcomes (`in_progress`, timeouts, errors) are resolved against the
/// database by "no lost order".
pub fn no_lie_to_client(history: &[Attempt], event: Option<i64>) -> Finding {
    let mut keys: HashMap<(&str, &str), Vec<&Attempt>> = HashMap::new();
    for attempt in history {
        if attempt.on(event) {
            keys.entry((&attempt.user_id, &attempt.idempotency_key))
                .or_default()
                .push(attempt);
        }
    }
    let mut offenders = Vec::new();
    for ((user, key), attempts) in &keys {
        let accepted: Vec<&&Attempt> = attempts.iter().filter(|a| a.order_id.is_some()).collect();
        let mut named: Vec<Uuid> = accepted.iter().filter_map(|a| a.order_id).collect();
        named.sort_unstable();
        named.dedup();
        if named.len() > 1 {
            offenders.push(format!(
                "user {user:?} key {key:?}: told of {} different orders ({})",
                named.len(),
                named
                    .iter()
                    .map(Uuid::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let Some(first_known) = accepted.iter().map(|a| a.finished_at).min() else {
            continue;
        };
        for refused in attempts.iter().filter(|a| a.outcome.is_refusal()) {
            if refused.sent_at > first_known {
                offenders.push(format!(
                    "user {user:?} key {key:?}: told {} at {} though its order {} had been \
                     confirmed to it at {}",
                    refused.outcome.name(),
                    refused.sent_at.format("%H:%M:%S%.3f"),
                    named.first().map(Uuid::to_string).unwrap_or_default(),
                    first_known.format("%H:%M:%S%.3f"),
                ));
            }
        }
    }
    offenders.sort();
    finding(
        Invariant::NoLieToClient,
        keys.len() as u64,
        offenders,
        "every key's answers agree: one order per key, no refusal after its order was confirmed",
        "clients were told things that contradict each other",
    )
}
