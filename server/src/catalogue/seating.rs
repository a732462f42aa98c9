//! An event's seating plan in Postgres: stored with the event, loaded back,
//! and read as the seat map of `GET /events/{id}/seats`. The plan itself,
//! and how a map is drawn, are `flashtix_model::seating`'s.

use std::collections::{HashMap, HashSet};

use flashtix_model::holds_tickets;
use flashtix_model::seating::{Plan, SeatRow, Standing, Zone, ZoneKind, ZoneMap};
use flashtix_model::OrderStatus;
use sqlx::{PgConnection, PgPool};

/// A seat for sale now, in SQL over `seats`: no owner, not blocked, and back
/// from the order that last held it (migration 7).
pub const SEAT_FREE: &str =
    "(order_id IS NULL AND NOT blocked AND (free_from IS NULL OR free_from <= now()))";

/// Writes the plan's zones and seats for a new event.
pub async fn store(tx: &mut PgConnection, event_id: i64, plan: &Plan) -> sqlx::Result<()> {
    for (position, zone) in plan.zones.iter().enumerate() {
        sqlx::query(
            "INSERT INTO zones (event_id, name, position, kind, price_cents, capacity, row_lengths)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(event_id)
        .bind(&zone.name)
        .bind(position as i32)
        .bind(zone.kind.as_str())
        .bind(zone.price_cents)
        .bind(zone.capacity)
        .bind(&zone.rows)
        .execute(&mut *tx)
        .await?;
    }
    let (mut ids, mut zones, mut rows, mut numbers, mut blocked) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (id, zone, row, number, is_blocked) in plan.seats() {
        ids.push(id);
        zones.push(zone);
        rows.push(row);
        numbers.push(number);
        blocked.push(is_blocked);
    }
    sqlx::query(
        "INSERT INTO seats (event_id, seat_id, zone, row_number, seat_number, blocked)
         SELECT $1, * FROM unnest($2::text[], $3::text[], $4::int4[], $5::int4[], $6::bool[])",
    )
    .bind(event_id)
    .bind(&ids)
    .bind(&zones)
    .bind(&rows)
    .bind(&numbers)
    .bind(&blocked)
    .execute(&mut *tx)
    .await?;
    // Statistics now, not when autovacuum comes by: without them the planner
    // takes the fresh table for a handful of rows, and takes a few seats by
    // scanning every free one rather than by their keys.
    sqlx::query("ANALYZE seats").execute(&mut *tx).await?;
    Ok(())
}

/// The event's plan, or `None` if it is sold by count alone.
pub async fn load(db: &mut PgConnection, event_id: i64) -> sqlx::Result<Option<Plan>> {
    let zones: Vec<(String, String, i64, i32, Vec<i32>)> = sqlx::query_as(
        "SELECT name, kind, price_cents, capacity, row_lengths FROM zones
         WHERE event_id = $1 ORDER BY position",
    )
    .bind(event_id)
    .fetch_all(&mut *db)
    .await?;
    if zones.is_empty() {
        return Ok(None);
    }
    let blocked: Vec<(String, String)> =
        sqlx::query_as("SELECT zone, seat_id FROM seats WHERE event_id = $1 AND blocked")
            .bind(event_id)
            .fetch_all(&mut *db)
            .await?;
    let mut blocked_in: HashMap<String, HashSet<String>> = HashMap::new();
    for (zone, seat) in blocked {
        blocked_in.entry(zone).or_default().insert(seat);
    }
    let zones = zones
        .into_iter()
        .map(|(name, kind, price_cents, capacity, rows)| Zone {
            blocked: blocked_in.remove(&name).unwrap_or_default(),
            kind: if kind == ZoneKind::General.as_str() {
                ZoneKind::General
            } else {
                ZoneKind::Reserved
            },
            name,
            price_cents,
            rows,
            capacity,
        })
        .collect();
    Ok(Some(Plan { zones }))
}

/// The seat map: per zone its counts and, for reserved zones, each seat's
/// state. `None` if the event has no plan.
///
/// Read in one snapshot, so that the seats and the standing counts are of
/// the same moment.
pub async fn seat_map(pool: &PgPool, event_id: i64) -> sqlx::Result<Option<Vec<ZoneMap>>> {
    let mut tx = snapshot(pool).await?;
    seat_map_in(&mut tx, event_id).await
}

/// A read-only transaction that sees one moment of the database throughout.
pub async fn snapshot(pool: &PgPool) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// [`seat_map`], read by `tx` (a [`snapshot`], for the counts to agree).
pub async fn seat_map_in(
    tx: &mut PgConnection,
    event_id: i64,
) -> sqlx::Result<Option<Vec<ZoneMap>>> {
    let Some(plan) = load(&mut *tx, event_id).await? else {
        return Ok(None);
    };
    let seats: Vec<(String, i32, i32, bool, Option<String>, bool)> = sqlx::query_as(
        "SELECT s.zone, s.row_number, s.seat_number, s.blocked, o.status,
                s.order_id IS NULL AND coalesce(s.free_from > now(), false)
         FROM seats s LEFT JOIN orders o ON o.id = s.order_id
         WHERE s.event_id = $1",
    )
    .bind(event_id)
    .fetch_all(&mut *tx)
    .await?;
    let standing: Vec<(String, i64, i64)> = sqlx::query_as(concat!(
        "SELECT zone, COALESCE(sum(quantity) FILTER (WHERE status = 'PENDING'), 0)::int8,
                COALESCE(sum(quantity) FILTER (WHERE status = 'CONFIRMED'), 0)::int8
         FROM orders WHERE event_id = $1 AND zone IS NOT NULL
           AND status IN ",
        holds_tickets!(),
        "
         GROUP BY zone"
    ))
    .bind(event_id)
    .fetch_all(&mut *tx)
    .await?;
    let seats = seats
        .into_iter()
        .map(|(zone, row, number, blocked, status, returning)| SeatRow {
            zone,
            row,
            number,
            blocked,
            status: status.as_deref().and_then(OrderStatus::named),
            returning,
        })
        .collect();
    let standing = standing
        .into_iter()
        .map(|(zone, held, sold)| Standing { zone, held, sold })
        .collect();
    Ok(Some(ZoneMap::of(&plan, seats, standing)))
}
