//! "Answers match orders": what each buyer was told, held to the database's
//! own record of the order it was about. A `202` (first or replayed) names
//! the order the database holds for that key, as it is: its quantity, its
//! seats or zone as asked, its amount; the order existed by the time the
//! answer came (a first `202` also not before the request left), and a
//! first `202`'s seats were nobody else's when its transaction ran. A refusal
//! for a key is a lie once the key's order existed.
//!
//! The client's clock (`sent_at`, `finished_at`) and the database's
//! (`created_at`, the start of the transaction that wrote the order) are
//! taken to agree within the clock slack.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::ledger::{attempts_judged, sorted};
use crate::runtime::db::from_row;
use flashtix_model::history::{Attempt, Outcome};
use flashtix_model::report::{finding, Finding, Invariant};
use flashtix_model::seating::zone_of;

/// An order as `check` reads it for judging answers.
struct Stored {
    id: Uuid,
    event_id: i64,
    user_id: String,
    idempotency_key: String,
    quantity: i32,
    amount_cents: i64,
    seats: Option<Vec<String>>,
    zone: Option<String>,
    created_at: DateTime<Utc>,
    /// When its seats were back on sale, once it ended unpaid.
    seats_back_at: Option<DateTime<Utc>>,
}

from_row!(Stored {
    id,
    event_id,
    user_id,
    idempotency_key,
    quantity,
    amount_cents,
    seats,
    zone,
    created_at,
    seats_back_at,
});

pub(super) async fn answers_match_orders(
    pool: &PgPool,
    history: &[Attempt],
    event: Option<i64>,
    slack: chrono::Duration,
) -> anyhow::Result<Finding> {
    let (history, events) = attempts_judged(history, event, |_| true);
    let orders: Vec<Stored> = sqlx::query_as(
        "SELECT id, event_id, user_id, idempotency_key, quantity, amount_cents, seats, zone,
                created_at,
                CASE WHEN status IN ('CANCELLED', 'EXPIRED')
                     THEN coalesce(seats_back_at, updated_at + seat_return_delay()) END
                  AS seats_back_at
         FROM orders WHERE event_id = ANY($1)",
    )
    .bind(events)
    .fetch_all(pool)
    .await?;
    let by_key: HashMap<(&str, &str), &Stored> = orders
        .iter()
        .map(|o| ((o.user_id.as_str(), o.idempotency_key.as_str()), o))
        .collect();
    // Each seat's orders, to tell whether a seat was someone else's.
    let mut holders: HashMap<(i64, &str), Vec<&Stored>> = HashMap::new();
    for order in &orders {
        for seat in order.seats.iter().flatten() {
            holders
                .entry((order.event_id, seat))
                .or_default()
                .push(order);
        }
    }

    let mut offenders = Vec::new();
    let mut judged = 0u64;
    for attempt in &history {
        let key = (attempt.user_id.as_str(), attempt.idempotency_key.as_str());
        let Some(order) = by_key.get(&key) else {
            continue;
        };
        let who = format!("user {:?} key {:?}", key.0, key.1);
        if attempt.outcome.is_refusal() {
            judged += 1;
            if let Some(lie) = refused_an_order(attempt, order, slack) {
                offenders.push(format!("{who}: {lie}"));
            }
            continue;
        }
        if attempt.order_id != Some(order.id) {
            continue; // Another order, or none: "no lost order" judges that.
        }
        judged += 1;
        let wrong = told_wrong(attempt, order, slack)
            .into_iter()
            .chain(shared_seats(attempt, order, &holders));
        offenders.extend(wrong.map(|what| format!("{who}: order {}: {what}", order.id)));
    }
    offenders.sort();
    offenders.dedup();
    Ok(finding(
        Invariant::AnswersMatchOrders,
        judged,
        offenders,
        "every answer agrees with the database: each 202 names its order as stored, made \
         while it was in flight, on seats nobody else held; no key was refused once its \
         order existed",
        "buyers were told something the database contradicts",
    ))
}

/// A refusal sent after the key's order existed, by more than the clocks
/// may disagree.
fn refused_an_order(attempt: &Attempt, order: &Stored, slack: chrono::Duration) -> Option<String> {
    (attempt.sent_at > order.created_at + slack).then(|| {
        format!(
            "told {} at {} though its order {} had existed since {}",
            attempt.outcome.name(),
            time(attempt.sent_at),
            order.id,
            time(order.created_at)
        )
    })
}

/// What a `202` said that the stored order contradicts.
fn told_wrong(attempt: &Attempt, order: &Stored, slack: chrono::Duration) -> Vec<String> {
    let mut wrong = Vec::new();
    if let Some(told) = &attempt.seats {
        if order.seats.as_deref().map(sorted) != Some(sorted(told)) {
            wrong.push(format!(
                "the answer named seats {}, the order holds {}",
                told.join(" "),
                order.seats.as_ref().map_or("none".into(), |s| s.join(" "))
            ));
        }
    }
    if let Some(amount) = attempt.amount_cents {
        if amount != order.amount_cents {
            wrong.push(format!(
                "the answer said {amount} cents, the order costs {}",
                order.amount_cents
            ));
        }
    }
    if order.created_at > attempt.finished_at + slack {
        wrong.push(format!(
            "answered {} at {}, before the order was made at {}",
            attempt.outcome.name(),
            time(attempt.finished_at),
            time(order.created_at)
        ));
    }
    if attempt.outcome != Outcome::Accepted {
        return wrong; // A replay answers for an order made earlier, as asked then.
    }
    if order.created_at < attempt.sent_at - slack {
        wrong.push(format!(
            "answered as new, though the order was made at {}, before the request left at {}",
            time(order.created_at),
            time(attempt.sent_at)
        ));
    }
    match (&attempt.asked_seats, &attempt.asked_zone) {
        (Some(asked), _) => {
            if order.seats.as_deref().map(sorted) != Some(sorted(asked)) {
                wrong.push(format!(
                    "asked for seats {}, the order holds {}",
                    asked.join(" "),
                    order.seats.as_ref().map_or("none".into(), |s| s.join(" "))
                ));
            }
        }
        (None, asked_zone) => {
            if i64::from(order.quantity) != attempt.quantity {
                wrong.push(format!(
                    "asked for {} tickets, the order has {}",
                    attempt.quantity, order.quantity
                ));
            }
            if let Some(asked) = asked_zone {
                let in_zone = order.zone.as_deref() == Some(asked.as_str())
                    || order.seats.as_ref().is_some_and(|seats| {
                        seats
                            .iter()
                            .all(|seat| zone_of(seat) == Some(asked.as_str()))
                    });
                if !in_zone {
                    wrong.push(format!(
                        "asked for zone {asked}, the order is for {}",
                        order
                            .zone
                            .clone()
                            .or_else(|| order.seats.as_ref().map(|s| s.join(" ")))
                            .unwrap_or_else(|| "no zone".into())
                    ));
                }
            }
        }
    }
    wrong
}

/// The seats of a first `202`'s order that another order held when its
/// transaction ran. A freed seat is for sale only from `seats_back_at`, and
/// an order takes a seat only if that moment has passed at its transaction's
/// start, so of two orders on one seat the later one began at or after the
/// earlier one's seats were back, or they overlapped.
fn shared_seats(
    attempt: &Attempt,
    order: &Stored,
    holders: &HashMap<(i64, &str), Vec<&Stored>>,
) -> Vec<String> {
    if attempt.outcome != Outcome::Accepted {
        return Vec::new();
    }
    let after = |later: &Stored, earlier: &Stored| {
        earlier
            .seats_back_at
            .is_some_and(|back| later.created_at >= back)
    };
    let mut shared = Vec::new();
    for seat in order.seats.iter().flatten() {
        for other in holders
            .get(&(order.event_id, seat.as_str()))
            .into_iter()
            .flatten()
        {
            if other.id != order.id && !after(order, other) && !after(other, order) {
                shared.push(format!(
                    "seat {seat} was also held by order {} (made at {}) when this one was made \
                     at {}",
                    other.id,
                    time(other.created_at),
                    time(order.created_at)
                ));
            }
        }
    }
    shared
}

fn time(moment: DateTime<Utc>) -> String {
    moment.format("%H:%M:%S%.3f").to_string()
}
