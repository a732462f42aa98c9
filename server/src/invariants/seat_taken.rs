//! "Seat taken was true", judged against a client's ledger: every seat a
//! buyer was told was taken was unavailable at some moment of the request's
//! flight.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use flashtix_model::history::{Attempt, Outcome};
use flashtix_model::report::{finding, Finding, Invariant};

use super::ledger::attempts_judged;

/// Invariant 4, the seats: every seat a `seat_taken` answer named was held,
/// sold, or not yet back on sale at some moment while the request was in
/// flight. A seat is unavailable from the start of the transaction that
/// wrote an order naming it (`created_at`) until the seats of that order are
/// back on sale (`seats_back_at`, once it ended unpaid), or for good. Judged
/// on the client's `sent_at` and `finished_at` against the database's times,
/// which are taken to agree within the clock slack. A seat named that the
/// request did not ask for is a lie; an answer that named no seats is judged
/// on the seats asked for (one of them was gone), or not at all if the
/// history recorded neither.
pub(super) async fn seat_taken_was_true(
    pool: &PgPool,
    history: &[Attempt],
    event: Option<i64>,
    slack: chrono::Duration,
) -> anyhow::Result<Finding> {
    let (refused, events) = attempts_judged(history, event, |o| o == Outcome::SeatTaken);
    let unavailable = Unavailable::read(pool, &events, slack).await?;
    let (mut judged, mut unnamed) = (0u64, 0usize);
    let mut offenders = Vec::new();
    for attempt in &refused {
        match unavailable.judge(attempt) {
            None => unnamed += 1,
            Some(lies) => {
                offenders.extend(lies);
                judged += 1;
            }
        }
    }
    offenders.sort();
    let mut result = finding(
        Invariant::SeatTakenWasTrue,
        judged,
        offenders,
        "every seat a buyer was told was taken was held, sold or on its way back then",
        "buyers were told a seat was taken while it was for sale",
    );
    if unnamed > 0 {
        result.detail.push_str(&format!(
            "; {unnamed} seat_taken answers named no seats and were not judged"
        ));
    }
    Ok(result)
}

/// From when an order held a seat until it was back on sale (never, while
/// the order lives).
type Span = (DateTime<Utc>, Option<DateTime<Utc>>);

/// When each seat was unavailable: from when an order held it until it was
/// back on sale (never, while the order lives).
struct Unavailable {
    /// By event, then seat.
    spans: HashMap<i64, HashMap<String, Vec<Span>>>,
    slack: chrono::Duration,
}

impl Unavailable {
    async fn read(pool: &PgPool, events: &[i64], slack: chrono::Duration) -> sqlx::Result<Self> {
        type SeatSpan = (i64, String, DateTime<Utc>, Option<DateTime<Utc>>);
        let rows: Vec<SeatSpan> = sqlx::query_as(
            "SELECT o.event_id, seat, o.created_at,
                    CASE WHEN o.status IN ('CANCELLED', 'EXPIRED')
                         THEN coalesce(o.seats_back_at, o.updated_at + seat_return_delay()) END
             FROM orders o, unnest(o.seats) AS seat
             WHERE o.event_id = ANY($1) AND o.seats IS NOT NULL",
        )
        .bind(events)
        .fetch_all(pool)
        .await?;
        let mut spans: HashMap<i64, HashMap<String, Vec<Span>>> = HashMap::new();
        for (event_id, seat, from, until) in rows {
            let seats = spans.entry(event_id).or_default();
            seats.entry(seat).or_default().push((from, until));
        }
        Ok(Self { spans, slack })
    }

    /// Whether `seat` was unavailable at some moment of `attempt`'s flight.
    fn taken(&self, attempt: &Attempt, seat: &str) -> bool {
        let slack = self.slack;
        self.spans
            .get(&attempt.event_id)
            .and_then(|seats| seats.get(seat))
            .into_iter()
            .flatten()
            .any(|(from, until)| {
                *from - slack <= attempt.finished_at
                    && until.is_none_or(|until| until + slack >= attempt.sent_at)
            })
    }

    /// What was untrue in one `seat_taken` answer; `None` if it can not be
    /// judged (it named no seats, and the history has not the seats asked).
    fn judge(&self, attempt: &Attempt) -> Option<Vec<String>> {
        let (who, flight) = (attempt.who(), attempt.flight());
        let mut lies = Vec::new();
        match (&attempt.seats, &attempt.asked_seats) {
            (None, None) => return None,
            // Judged on the seats it asked for: one of them was gone.
            (None, Some(asked)) => {
                if !asked.iter().any(|seat| self.taken(attempt, seat)) {
                    lies.push(format!(
                        "{who}: told a seat of {} was taken {flight}, when no order held any \
                         of them and none had just let one go",
                        asked.join(" ")
                    ));
                }
            }
            (Some(named), asked) => {
                for seat in named {
                    if asked.as_ref().is_some_and(|asked| !asked.contains(seat)) {
                        lies.push(format!(
                            "{who}: told seat {seat} was taken, a seat it did not ask for \
                             (it asked for {})",
                            asked.as_deref().unwrap_or_default().join(" ")
                        ));
                    } else if !self.taken(attempt, seat) {
                        lies.push(format!(
                            "{who}: told seat {seat} was taken {flight}, when no order held it \
                             and none had just let it go"
                        ));
                    }
                }
            }
        }
        Some(lies)
    }
}
