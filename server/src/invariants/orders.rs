//! What the orders add up to: no ticket sold twice or lost (stock against
//! orders), one order per idempotency key, no buyer past the per-user limit.

use flashtix_model::holds_tickets;
use sqlx::PgPool;

use flashtix_model::report::{finding, Finding, Invariant};

use crate::runtime::db::from_row;

/// An event's stock as it counts it, and as its orders add up.
struct Stock {
    id: i64,
    total: i64,
    available: i64,
    /// The event's own counters.
    counted_pending: i64,
    counted_sold: i64,
    /// Summed from its orders.
    pending: i64,
    sold: i64,
}

from_row!(Stock {
    id,
    total,
    available,
    counted_pending,
    counted_sold,
    pending,
    sold,
});

impl Stock {
    /// What is wrong with it, if anything.
    fn imbalance(&self) -> Option<String> {
        let (available, pending, sold, total) =
            (self.available, self.pending, self.sold, self.total);
        let (counted_pending, counted_sold) = (self.counted_pending, self.counted_sold);
        let balanced = available >= 0 && available + pending + sold == total;
        let counters_agree = counted_pending == pending && counted_sold == sold;
        (!balanced || !counters_agree).then(|| {
            format!(
                "event {}: available {available} + pending {pending} + sold {sold} = {} \
                 of {total}; the event counts pending {counted_pending}, sold {counted_sold}",
                self.id,
                available + pending + sold
            )
        })
    }
}

/// Invariant 1: available ≥ 0 and available + pending + sold = total, per
/// event, where pending and sold are summed from the orders themselves (and must
/// also match the event's own counters).
pub(super) async fn no_oversell(pool: &PgPool, event: Option<i64>) -> anyhow::Result<Finding> {
    let stocks: Vec<Stock> = sqlx::query_as(
        "SELECT e.id, e.total_tickets::int8 AS total, e.available_tickets::int8 AS available,
                e.pending_tickets::int8 AS counted_pending,
                e.sold_tickets::int8 AS counted_sold,
                COALESCE(sum(o.quantity) FILTER (WHERE o.status = 'PENDING'), 0)::int8
                  AS pending,
                COALESCE(sum(o.quantity) FILTER (WHERE o.status = 'CONFIRMED'), 0)::int8
                  AS sold
         FROM events e LEFT JOIN orders o ON o.event_id = e.id
         WHERE $1::int8 IS NULL OR e.id = $1
         GROUP BY e.id ORDER BY e.id",
    )
    .bind(event)
    .fetch_all(pool)
    .await?;
    let offenders = stocks.iter().filter_map(Stock::imbalance).collect();
    Ok(finding(
        Invariant::NoOversell,
        stocks.len() as u64,
        offenders,
        "every ticket is available, pending or sold, once",
        "stock and orders disagree",
    ))
}

/// 3a. One order per (user, idempotency key). The unique constraint
/// `orders_one_per_idempotency_key` is what guarantees it, so the check first
/// proves the constraint is there (and valid): without it, the count below is
/// the only line left, and it is FAIL at once.
pub(super) async fn no_duplicate_order(
    pool: &PgPool,
    event: Option<i64>,
) -> anyhow::Result<Finding> {
    let guarded: bool = sqlx::query_scalar(
        "SELECT EXISTS (
            SELECT 1 FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid
            WHERE t.oid = 'orders'::regclass AND c.contype = 'u' AND c.convalidated
              AND c.conname = 'orders_one_per_idempotency_key'
              AND (SELECT array_agg(a.attname::text ORDER BY a.attname)
                   FROM pg_attribute a
                   WHERE a.attrelid = t.oid AND a.attnum = ANY(c.conkey))
                  = ARRAY['idempotency_key', 'user_id'])",
    )
    .fetch_one(pool)
    .await?;
    let checked: i64 =
        sqlx::query_scalar("SELECT count(*) FROM orders WHERE $1::int8 IS NULL OR event_id = $1")
            .bind(event)
            .fetch_one(pool)
            .await?;
    let duplicates: Vec<(String, String, i64, String)> = sqlx::query_as(
        "SELECT user_id, idempotency_key, count(*), string_agg(id::text, ', ' ORDER BY id)
         FROM orders WHERE $1::int8 IS NULL OR event_id = $1
         GROUP BY user_id, idempotency_key HAVING count(*) > 1
         ORDER BY user_id, idempotency_key",
    )
    .bind(event)
    .fetch_all(pool)
    .await?;
    let mut offenders: Vec<String> = duplicates
        .into_iter()
        .map(|(user, key, count, ids)| format!("user {user:?} key {key:?}: {count} orders ({ids})"))
        .collect();
    if !guarded {
        offenders.insert(
            0,
            "the unique constraint orders_one_per_idempotency_key (user_id, idempotency_key) \
             is missing: nothing stops a second order for a key"
                .into(),
        );
    }
    Ok(finding(
        Invariant::NoDuplicateOrder,
        checked as u64,
        offenders,
        "one order per (user, idempotency key), guarded by a unique constraint",
        "an idempotency key can buy, or bought, more than once",
    ))
}

/// 3b. No user holds more live tickets than the event's per-user limit.
pub(super) async fn per_user_limit(pool: &PgPool, event: Option<i64>) -> anyhow::Result<Finding> {
    let checked: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT (event_id, user_id)) FROM orders WHERE $1::int8 IS NULL OR event_id = $1",
    )
    .bind(event)
    .fetch_one(pool)
    .await?;
    let over: Vec<(i64, String, i64, i32, String)> = sqlx::query_as(concat!(
        "SELECT o.event_id, o.user_id, sum(o.quantity)::int8, e.max_per_user,
                string_agg(o.id::text, ', ' ORDER BY o.id)
         FROM orders o JOIN events e ON e.id = o.event_id
         WHERE o.status IN ",
        holds_tickets!(),
        " AND ($1::int8 IS NULL OR o.event_id = $1)
         GROUP BY o.event_id, o.user_id, e.max_per_user
         HAVING sum(o.quantity) > e.max_per_user
         ORDER BY o.event_id, o.user_id"
    ))
    .bind(event)
    .fetch_all(pool)
    .await?;
    let offenders = over
        .into_iter()
        .map(|(event_id, user, held, max, ids)| {
            format!("event {event_id} user {user:?}: holds {held} > limit {max} (orders {ids})")
        })
        .collect();
    Ok(finding(
        Invariant::PerUserLimit,
        checked as u64,
        offenders,
        "no buyer above the event's per-user limit",
        "a buyer holds more than the limit",
    ))
}
