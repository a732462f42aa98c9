//! Waiting for a sale to settle: until no order (of an event, or of the
//! sale) is PENDING, or a limit. `check --settle`, the storm after it sends,
//! and the tests all wait with this.

use std::time::Duration;

use sqlx::PgPool;
use tokio::time::Instant;

/// How often the orders are counted again.
const POLL: Duration = Duration::from_millis(100);

/// How a wait for the sale to settle ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// No order was PENDING any more, this long after the wait began.
    After(Duration),
    /// The limit came first, with this many orders PENDING.
    Pending(i64),
}

/// Orders still PENDING, of `event` or of the whole sale.
pub async fn pending(pool: &PgPool, event: Option<i64>) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "SELECT count(*) FROM orders
         WHERE status = 'PENDING' AND ($1::int8 IS NULL OR event_id = $1)",
    )
    .bind(event)
    .fetch_one(pool)
    .await
}

/// The orders waiting to settle: how many are PENDING, and how long the
/// oldest has waited.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Backlog {
    pub pending: i64,
    /// Seconds since the oldest PENDING order was placed; 0 with none.
    pub oldest_seconds: f64,
}

/// The sale's [`Backlog`] now: one query (PENDING orders have an index of
/// their own).
pub async fn backlog(pool: &PgPool) -> sqlx::Result<Backlog> {
    let (pending, oldest_seconds) = sqlx::query_as(
        "SELECT count(*),
                COALESCE(EXTRACT(EPOCH FROM now() - min(created_at))::float8, 0)
         FROM orders WHERE status = 'PENDING'",
    )
    .fetch_one(pool)
    .await?;
    Ok(Backlog {
        pending,
        oldest_seconds,
    })
}

/// Waits, up to `limit`, until no order (of `event`, or of the sale) is
/// PENDING; `waiting` hears each count that was not zero yet, and how long
/// the wait has gone on. A count Postgres could not give (it may be coming
/// back: a drill has just healed it) is asked again; only the last one, at
/// the limit, is an error.
pub async fn wait_settled(
    pool: &PgPool,
    event: Option<i64>,
    limit: Duration,
    mut waiting: impl FnMut(i64, Duration),
) -> sqlx::Result<Settled> {
    let started = Instant::now();
    loop {
        let over = started.elapsed() >= limit;
        match pending(pool, event).await {
            Ok(0) => return Ok(Settled::After(started.elapsed())),
            Ok(pending) if over => return Ok(Settled::Pending(pending)),
            Ok(pending) => waiting(pending, started.elapsed()),
            Err(error) if over => return Err(error),
            Err(error) => tracing::debug!(%error, "counting PENDING orders, again"),
        }
        tokio::time::sleep(POLL).await;
    }
}
