//! "Refusals were true": every `sold_out` (an event's or a zone's) and every
//! `limit_exceeded` a buyer was told was true at some moment while the
//! request was in flight, judged against the sale's timeline in Postgres.
//!
//! A ticket is spoken for from the moment Redis admitted its hold (an
//! order's id, or a released hold's, is a UUIDv7 stamped then) until it is
//! for sale again:
//! - an order that ended unpaid: once its stock return reached Redis
//!   (`orders.returned_at`); on a seated event, which Redis does not gate,
//!   once its status changed and its seats were back on sale
//!   (`seats_back_at`);
//! - a hold given back without an order (`released_holds`: Postgres refused
//!   it, its batch failed, or the reconciler found it lost): once it was
//!   given back;
//! - a live order: not yet.
//!
//! Given-back tickets count a further [`RETURN_DELAY`]: Redis holds them that
//! long before it sells them again (a buyer short of tickets on their way is
//! told to wait for them, or, after the desk's last round, `sold_out`), and
//! a process that saw the event sold out may say so from memory for less.
//!
//! Each end leans late, so what is caught is a refusal while enough was for
//! sale for the whole flight: the request's own holds aside, at every moment
//! from `sent_at` to `finished_at` (widened by the clock slack) more than
//! the quantity asked for was free (in the event, or in the zone asked for),
//! or the buyer held few enough that the quantity was within the limit.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::ledger::attempts_judged;
use crate::gate::RETURN_DELAY;
use crate::runtime::db::from_row;
use flashtix_model::history::{Attempt, Outcome};
use flashtix_model::report::{finding, Finding, Invariant};
use flashtix_model::seating::zone_of;

/// Tickets spoken for over a stretch of time: from `from` until `until`
/// (`None`: still).
#[derive(Debug, Clone)]
struct Hold {
    user_id: String,
    key: String,
    /// Its zone (general admission) or its seats' zone, on a seated event
    /// (an order on seats of several zones is a hold in each).
    zone: Option<String>,
    tickets: i64,
    from: DateTime<Utc>,
    until: Option<DateTime<Utc>>,
}

impl Hold {
    fn live_at(&self, t: DateTime<Utc>) -> bool {
        self.from <= t && self.until.is_none_or(|until| t < until)
    }
}

/// How many tickets a set of holds speaks for, moment by moment: the level
/// after each change, in time order.
#[derive(Debug, Default)]
struct Timeline {
    steps: Vec<(DateTime<Utc>, i64)>,
}

impl Timeline {
    fn of<'a>(holds: impl Iterator<Item = &'a Hold>) -> Self {
        let mut changes: Vec<(DateTime<Utc>, i64)> = Vec::new();
        for hold in holds {
            changes.push((hold.from, hold.tickets));
            if let Some(until) = hold.until {
                changes.push((until, -hold.tickets));
            }
        }
        changes.sort_by_key(|(at, _)| *at);
        let mut level = 0;
        let steps = changes
            .into_iter()
            .map(|(at, change)| {
                level += change;
                (at, level)
            })
            .collect();
        Self { steps }
    }

    /// The most spoken for at any moment of `[from, to]`, less what `own`
    /// held at that moment.
    fn peak(&self, from: DateTime<Utc>, to: DateTime<Utc>, own: &[&Hold]) -> i64 {
        let first_after = self.steps.partition_point(|(at, _)| *at <= from);
        let level_at_start = first_after.checked_sub(1).map_or(0, |i| self.steps[i].1);
        let others = |t: DateTime<Utc>, level: i64| {
            level
                - own
                    .iter()
                    .filter(|hold| hold.live_at(t))
                    .map(|hold| hold.tickets)
                    .sum::<i64>()
        };
        let mut peak = others(from, level_at_start);
        for (at, level) in self.steps[first_after..]
            .iter()
            .take_while(|(at, _)| *at <= to)
        {
            peak = peak.max(others(*at, *level));
        }
        peak
    }
}

/// What one event sells and to whom.
struct Event {
    total: i64,
    max_per_user: i64,
    /// Places per zone (seated events).
    zones: HashMap<String, i64>,
    holds: Vec<Hold>,
}

pub(super) async fn refusals_were_true(
    pool: &PgPool,
    history: &[Attempt],
    event: Option<i64>,
    slack: chrono::Duration,
) -> anyhow::Result<Finding> {
    let (refused, events) = attempts_judged(history, event, |outcome| {
        matches!(outcome, Outcome::SoldOut | Outcome::LimitExceeded)
    });
    let events = read_events(pool, &events).await?;
    let timelines = Timelines::of(&events);
    let mut offenders = Vec::new();
    let mut judged = 0u64;
    for attempt in &refused {
        // An event the database does not have: "no lost order" says so.
        let Some(sale) = events.get(&attempt.event_id) else {
            continue;
        };
        judged += 1;
        offenders.extend(timelines.judge(attempt, sale, slack));
    }
    offenders.sort();
    let mut result = finding(
        Invariant::RefusalsWereTrue,
        judged,
        offenders,
        "every sold_out and limit_exceeded was true at some moment while it was in flight",
        "buyers were refused while what they asked for was there for them",
    );
    result.detail.push_str(&format!(
        "; clocks taken to agree within {} ms",
        slack.num_milliseconds()
    ));
    Ok(result)
}

/// Each event's timeline, its zones' and its buyers'.
#[derive(Default)]
struct Timelines<'a> {
    stock: HashMap<i64, Timeline>,
    zones: HashMap<(i64, &'a str), Timeline>,
    buyers: HashMap<(i64, &'a str), Timeline>,
}

impl<'a> Timelines<'a> {
    fn of(events: &'a HashMap<i64, Event>) -> Self {
        let mut timelines = Self::default();
        for (id, sale) in events {
            timelines.stock.insert(*id, Timeline::of(sale.holds.iter()));
            for zone in sale.zones.keys() {
                let holds = sale.holds.iter().filter(|h| h.zone.as_ref() == Some(zone));
                timelines
                    .zones
                    .insert((*id, zone.as_str()), Timeline::of(holds));
            }
            let mut by_user: HashMap<&str, Vec<&Hold>> = HashMap::new();
            for hold in &sale.holds {
                by_user.entry(&hold.user_id).or_default().push(hold);
            }
            for (user, holds) in by_user {
                timelines
                    .buyers
                    .insert((*id, user), Timeline::of(holds.into_iter()));
            }
        }
        timelines
    }

    /// What was untrue in one refusal, if anything.
    fn judge(&self, attempt: &Attempt, sale: &Event, slack: chrono::Duration) -> Option<String> {
        let (from, to) = (attempt.sent_at - slack, attempt.finished_at + slack);
        let own: Vec<&Hold> = sale
            .holds
            .iter()
            .filter(|h| h.user_id == attempt.user_id && h.key == attempt.idempotency_key)
            .collect();
        let asked = attempt.quantity;
        let (who, flight) = (attempt.who(), attempt.flight());
        match attempt.outcome {
            Outcome::SoldOut => {
                let free = sale.total - self.stock[&attempt.event_id].peak(from, to, &own);
                let zone_free = asked_zone(attempt).and_then(|zone| {
                    let places = sale.zones.get(zone)?;
                    Some(places - self.zones[&(attempt.event_id, zone)].peak(from, to, &own))
                });
                let least_free = zone_free.map_or(free, |zone_free| zone_free.min(free));
                (least_free >= asked).then(|| {
                    format!(
                        "{who}: told sold_out for {asked} {flight}, when at least {least_free} \
                         {} for sale the whole time",
                        if least_free == 1 { "was" } else { "were" }
                    )
                })
            }
            Outcome::LimitExceeded => {
                let held = self
                    .buyers
                    .get(&(attempt.event_id, attempt.user_id.as_str()))
                    .map_or(0, |timeline| timeline.peak(from, to, &own));
                (held + asked <= sale.max_per_user).then(|| {
                    format!(
                        "{who}: told limit_exceeded for {asked} {flight}, holding at most {held} \
                         of the {} allowed",
                        sale.max_per_user
                    )
                })
            }
            _ => None,
        }
    }
}

/// The zone a refusal's request asked for: named, or its seats'.
fn asked_zone(attempt: &Attempt) -> Option<&str> {
    attempt
        .asked_zone
        .as_deref()
        .or_else(|| zone_of(attempt.asked_seats.as_ref()?.first()?))
}

/// When Redis admitted a hold, from its UUIDv7 id (the desk stamps it then);
/// `fallback` for an id of another kind.
fn admitted_at(id: Uuid, fallback: DateTime<Utc>) -> DateTime<Utc> {
    id.get_timestamp()
        .and_then(|stamp| {
            let (seconds, nanos) = stamp.to_unix();
            DateTime::from_timestamp(seconds as i64, nanos)
        })
        .map_or(fallback, |at| at.min(fallback))
}

/// The events' sizes, limits, zones and every hold on them.
async fn read_events(pool: &PgPool, ids: &[i64]) -> anyhow::Result<HashMap<i64, Event>> {
    let mut events: HashMap<i64, Event> =
        sqlx::query("SELECT id, total_tickets, max_per_user FROM events WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(pool)
            .await?
            .iter()
            .map(|row| {
                Ok((
                    row.try_get("id")?,
                    Event {
                        total: i64::from(row.try_get::<i32, _>("total_tickets")?),
                        max_per_user: i64::from(row.try_get::<i32, _>("max_per_user")?),
                        zones: HashMap::new(),
                        holds: Vec::new(),
                    },
                ))
            })
            .collect::<sqlx::Result<_>>()?;
    for row in sqlx::query("SELECT event_id, name, capacity FROM zones WHERE event_id = ANY($1)")
        .bind(ids)
        .fetch_all(pool)
        .await?
    {
        if let Some(event) = events.get_mut(&row.try_get("event_id")?) {
            let capacity: i32 = row.try_get("capacity")?;
            event
                .zones
                .insert(row.try_get("name")?, i64::from(capacity));
        }
    }
    let return_delay = chrono::Duration::from_std(RETURN_DELAY)?;
    read_order_holds(pool, ids, return_delay, &mut events).await?;
    read_released_holds(pool, ids, return_delay, &mut events).await?;
    Ok(events)
}

/// The holds of every order: from when Redis admitted it until its tickets
/// were back on sale (never, while the order lives), one a zone it took
/// places in.
async fn read_order_holds(
    pool: &PgPool,
    ids: &[i64],
    return_delay: chrono::Duration,
    events: &mut HashMap<i64, Event>,
) -> anyhow::Result<()> {
    let orders: Vec<OrderRow> = sqlx::query_as(
        "SELECT id, event_id, user_id, idempotency_key, quantity, zone, seats, created_at,
                CASE WHEN status IN ('CANCELLED', 'EXPIRED') THEN
                     CASE WHEN seats IS NOT NULL OR zone IS NOT NULL
                               OR EXISTS (SELECT 1 FROM zones z WHERE z.event_id = o.event_id)
                          THEN greatest(updated_at, seats_back_at)
                          ELSE returned_at + $2 END
                END AS until
         FROM orders o WHERE event_id = ANY($1)",
    )
    .bind(ids)
    .bind(return_delay)
    .fetch_all(pool)
    .await?;
    for order in orders {
        let from = admitted_at(order.id, order.created_at);
        let places = places_by_zone(order.zone, order.seats, order.quantity.into());
        let holds = places.into_iter().map(|(zone, tickets)| Hold {
            user_id: order.user_id.clone(),
            key: order.idempotency_key.clone(),
            zone,
            tickets,
            from,
            until: order.until,
        });
        add_holds(events, order.event_id, holds);
    }
    Ok(())
}

/// An order as its holds are read.
struct OrderRow {
    id: Uuid,
    event_id: i64,
    user_id: String,
    idempotency_key: String,
    quantity: i32,
    zone: Option<String>,
    seats: Option<Vec<String>>,
    created_at: DateTime<Utc>,
    /// When its tickets were back on sale, once it ended unpaid.
    until: Option<DateTime<Utc>>,
}

from_row!(OrderRow {
    id,
    event_id,
    user_id,
    idempotency_key,
    quantity,
    zone,
    seats,
    created_at,
    until,
});

/// A hold Redis admitted that never became an order, as it is read.
struct ReleasedRow {
    order_id: Uuid,
    event_id: i64,
    user_id: String,
    idempotency_key: String,
    quantity: i32,
    released_at: DateTime<Utc>,
}

from_row!(ReleasedRow {
    order_id,
    event_id,
    user_id,
    idempotency_key,
    quantity,
    released_at,
});

/// Adds `holds` to `event_id`'s, if it is one of the events judged.
fn add_holds(events: &mut HashMap<i64, Event>, event_id: i64, holds: impl Iterator<Item = Hold>) {
    if let Some(event) = events.get_mut(&event_id) {
        event.holds.extend(holds);
    }
}

/// An order's places by zone: a standing zone, its seats' zones, or none.
fn places_by_zone(
    zone: Option<String>,
    seats: Option<Vec<String>>,
    quantity: i64,
) -> Vec<(Option<String>, i64)> {
    let Some(seats) = seats else {
        return vec![(zone, quantity)];
    };
    let mut places: Vec<(Option<String>, i64)> = Vec::new();
    for seat in &seats {
        let zone = zone_of(seat).map(str::to_owned);
        match places.iter_mut().find(|(z, _)| *z == zone) {
            Some((_, count)) => *count += 1,
            None => places.push((zone, 1)),
        }
    }
    places
}

/// Holds Redis admitted that never became orders, until they were released
/// (and their tickets back on sale).
async fn read_released_holds(
    pool: &PgPool,
    ids: &[i64],
    return_delay: chrono::Duration,
    events: &mut HashMap<i64, Event>,
) -> anyhow::Result<()> {
    let released: Vec<ReleasedRow> = sqlx::query_as(
        "SELECT order_id, event_id, user_id, idempotency_key, quantity, released_at
         FROM released_holds WHERE event_id = ANY($1) AND quantity IS NOT NULL",
    )
    .bind(ids)
    .fetch_all(pool)
    .await?;
    for hold in released {
        let released = Hold {
            from: admitted_at(hold.order_id, hold.released_at),
            until: Some(hold.released_at + return_delay),
            user_id: hold.user_id,
            key: hold.idempotency_key,
            zone: None,
            tickets: hold.quantity.into(),
        };
        add_holds(events, hold.event_id, std::iter::once(released));
    }
    Ok(())
}
