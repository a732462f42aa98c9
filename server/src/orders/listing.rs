//! Orders read back in lists: a buyer's own, an event's (its attendees, a
//! page at a time, for its organizer) and an event's sales in figures.

use serde::Serialize;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::{Order, ORDER_COLUMNS};

/// The most orders one page holds.
pub const MAX_PAGE: i64 = 1000;

/// A buyer's orders, newest first, at most `limit`.
pub async fn of_buyer(pool: &PgPool, user_id: &str, limit: i64) -> sqlx::Result<Vec<Order>> {
    let rows = sqlx::query(&format!(
        "SELECT {ORDER_COLUMNS} FROM orders o WHERE o.user_id = $1
         ORDER BY o.created_at DESC, o.id DESC LIMIT $2"
    ))
    .bind(user_id)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(Order::from_row).collect()
}

/// An event's orders in the order they were admitted (ids are time-ordered),
/// `limit` of them after the order `after`. While a sale runs, an order
/// admitted before `after` may commit after the page was read: a page is
/// what was written when it was read, and a list read after the sale is
/// complete.
pub async fn of_event(
    pool: &PgPool,
    event_id: i64,
    after: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<Order>> {
    let rows = sqlx::query(&format!(
        "SELECT {ORDER_COLUMNS} FROM orders o
         WHERE o.event_id = $1 AND ($2::uuid IS NULL OR o.id > $2)
         ORDER BY o.id LIMIT $3"
    ))
    .bind(event_id)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(Order::from_row).collect()
}

/// An event's sales in figures.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub event_id: i64,
    pub total_tickets: i64,
    pub available_tickets: i64,
    /// Tickets of orders not yet paid for.
    pub held_tickets: i64,
    /// Tickets of paid (confirmed) orders.
    pub sold_tickets: i64,
    pub orders_pending: i64,
    pub orders_confirmed: i64,
    pub orders_cancelled: i64,
    pub orders_expired: i64,
    /// Captured, less refunded.
    pub revenue_cents: i64,
    pub refunds: i64,
    pub refunded_cents: i64,
}

/// The figures of `event_id`, or `None` if there is no such event.
pub async fn summary(pool: &PgPool, event_id: i64) -> sqlx::Result<Option<Summary>> {
    let row = sqlx::query(
        "SELECT e.total_tickets::bigint AS total, e.available_tickets::bigint AS available,
                e.pending_tickets::bigint AS held, e.sold_tickets::bigint AS sold,
                (SELECT count(*) FROM orders o WHERE o.event_id = e.id AND o.status = 'PENDING') AS pending,
                (SELECT count(*) FROM orders o WHERE o.event_id = e.id AND o.status = 'CONFIRMED') AS confirmed,
                (SELECT count(*) FROM orders o WHERE o.event_id = e.id AND o.status = 'CANCELLED') AS cancelled,
                (SELECT count(*) FROM orders o WHERE o.event_id = e.id AND o.status = 'EXPIRED') AS expired,
                m.captured, m.refunds, m.refunded
         FROM events e
         CROSS JOIN LATERAL (
             SELECT coalesce(sum(p.amount_cents) FILTER (WHERE p.kind = 'CAPTURE'), 0)::bigint AS captured,
                    count(*) FILTER (WHERE p.kind = 'REFUND') AS refunds,
                    coalesce(sum(p.amount_cents) FILTER (WHERE p.kind = 'REFUND'), 0)::bigint AS refunded
             FROM payments p JOIN orders o ON o.id = p.order_id
             WHERE o.event_id = e.id AND p.outcome = 'SUCCEEDED'
         ) m
         WHERE e.id = $1",
    )
    .bind(event_id)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let captured: i64 = row.try_get("captured")?;
    let refunded: i64 = row.try_get("refunded")?;
    Ok(Some(Summary {
        event_id,
        total_tickets: row.try_get("total")?,
        available_tickets: row.try_get("available")?,
        held_tickets: row.try_get("held")?,
        sold_tickets: row.try_get("sold")?,
        orders_pending: row.try_get("pending")?,
        orders_confirmed: row.try_get("confirmed")?,
        orders_cancelled: row.try_get("cancelled")?,
        orders_expired: row.try_get("expired")?,
        revenue_cents: captured - refunded,
        refunds: row.try_get("refunds")?,
        refunded_cents: refunded,
    }))
}

/// Whether `organizer` may read `event_id`'s orders: it created the event,
/// or no organizer did (the house's: seeded by `flashtix reset`, or made
/// before events recorded their organizer). `None`: no such event.
pub async fn organizer_may_read(
    pool: &PgPool,
    event_id: i64,
    organizer: &str,
) -> sqlx::Result<Option<bool>> {
    let owner: Option<Option<String>> =
        sqlx::query_scalar("SELECT organizer FROM events WHERE id = $1")
            .bind(event_id)
            .fetch_optional(pool)
            .await?;
    Ok(owner.map(|owner| owner.is_none_or(|owner| owner == organizer)))
}
