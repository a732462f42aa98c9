//! The reconciler: brings Redis back in line with Postgres, the truth.
//!
//! Every tick, it first gives Redis the tickets Postgres gave back and Redis has
//! not had yet ([`restock_pending`]: after a crash between the two, the sweeper's
//! or anyone's). Then, for each event:
//! 1. **Stale holds.** A hold older than [`HOLD_GRACE`] means its request died
//!    between Redis and Postgres (a crash, a lost connection). If its order is in
//!    Postgres the hold is confirmed, else released (stock, user count and key
//!    given back). Release and confirm are each applied once: only the call whose
//!    `ZREM` removes the hold applies it.
//! 2. **Lost keys.** An event with no stock key in Redis (flushed, restarted
//!    empty) is reseeded from Postgres, whether or not orders are coming in.
//! 3. **Drift.** When nothing is in flight (no hold, no ticket on its way back
//!    to stock, no stock return still to apply), Redis stock must equal Postgres
//!    `available_tickets`. The repair reads Redis's sequence number, then Postgres,
//!    then sets the stock only if the sequence did not move meanwhile, so an order
//!    admitted or committed during the read cannot be overwritten. Buyers' ticket
//!    counts and idempotency entries must add up to Postgres's too (orders written
//!    while Redis was away never reached them); if they do not, the event is
//!    forgotten in Redis under the same sequence guard and reseeded from Postgres.

use flashtix_model::holds_tickets;
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;
use uuid::Uuid;

use crate::gate::{clock_ms, Gate, Hold, Ledger, Observation, Restock, Snapshot, StockReturn};
use crate::runtime::metrics::Metrics;
use crate::runtime::stop::Stop;

/// How old a hold must be before the reconciler decides its fate. Far above a
/// batch commit (milliseconds), so it does not race a live request.
pub const HOLD_GRACE: Duration = Duration::from_secs(5);

/// What a drift repair found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repair {
    InSync,
    Repaired {
        from: i64,
        to: i64,
    },
    /// Buyers or keys did not agree (`reason` says how); the event was
    /// rebuilt from Postgres.
    Rebuilt {
        reason: String,
    },
    /// Orders are in flight; try again when quiet.
    Busy,
    /// Redis has no stock for the event (it is seeded on the next order).
    Unseeded,
    /// No such event in Postgres.
    Gone,
}

/// What a reseed did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reseed {
    Done {
        available: i64,
    },
    /// Another request or process holds the event's seeding lock.
    Busy,
    /// No such event in Postgres.
    Gone,
}

/// Rebuilds an event's Redis keys from Postgres, under the event's seeding lock.
pub async fn reseed(pool: &PgPool, gate: &Gate, event_id: i64) -> anyhow::Result<Reseed> {
    let Some(lock) = gate.lock_seeding(event_id).await? else {
        return Ok(Reseed::Busy);
    };
    // Another process may have seeded it between our look and the lock: a
    // second seed would write its older snapshot over what happened since
    // (a stock return that lowered a buyer's count).
    if let Some(stock) = gate.observe(event_id).await?.stock {
        gate.unlock(lock).await?;
        return Ok(Reseed::Done { available: stock });
    }
    let snapshot = match snapshot(pool, event_id).await {
        Ok(Some(snapshot)) => snapshot,
        other => {
            gate.unlock(lock).await?;
            return match other {
                Ok(_) => Ok(Reseed::Gone),
                Err(error) => Err(error).context("reading the event from Postgres"),
            };
        }
    };
    gate.seed(lock, &snapshot).await?;
    tracing::info!(
        event_id,
        available = snapshot.available,
        "reseeded Redis from Postgres"
    );
    Ok(Reseed::Done {
        available: snapshot.available,
    })
}

/// What Redis should hold for an event, read from Postgres in one snapshot (for
/// reseeding): stock, holdings, keys, and the stock returns not yet given back
/// to Redis, which `available` already counts.
pub async fn snapshot(pool: &PgPool, event_id: i64) -> sqlx::Result<Option<Snapshot>> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut *tx)
        .await?;
    let available: Option<i64> =
        sqlx::query_scalar("SELECT available_tickets::int8 FROM events WHERE id = $1")
            .bind(event_id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(available) = available else {
        return Ok(None);
    };
    let buyers = sqlx::query_as::<_, (String, i64)>(concat!(
        "SELECT user_id, sum(quantity)::int8 FROM orders
         WHERE event_id = $1 AND status IN ",
        holds_tickets!(),
        " GROUP BY user_id"
    ))
    .bind(event_id)
    .fetch_all(&mut *tx)
    .await?;
    let keys = sqlx::query_as::<_, (String, String, Uuid, String)>(
        "SELECT user_id, idempotency_key, id, fingerprint FROM orders WHERE event_id = $1",
    )
    .bind(event_id)
    .fetch_all(&mut *tx)
    .await?;
    let returned = sqlx::query_scalar("SELECT order_id FROM stock_returns WHERE event_id = $1")
        .bind(event_id)
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Some(Snapshot {
        available,
        buyers,
        keys,
        returned,
    }))
}

/// Sets Redis stock to Postgres's available tickets if they differ and nothing
/// is in flight; rebuilds the event from Postgres if its buyers' tickets or
/// its number of idempotency entries do not add up. (An order written while
/// Redis was being reseeded after losing its keys, then cancelled, leaves the
/// tickets in balance and one entry short.)
pub async fn repair_drift(pool: &PgPool, gate: &Gate, event_id: i64) -> anyhow::Result<Repair> {
    let seen = gate
        .observe(event_id)
        .await
        .context("reading Redis stock")?;
    let Some(stock) = seen.stock else {
        return Ok(Repair::Unseeded);
    };
    if !seen.is_quiet() {
        return Ok(Repair::Busy);
    }
    // Tickets held are the event row's pending + sold, which every order
    // batch, settlement and expiry keeps equal to its live orders' quantities.
    let in_postgres: Option<(i64, i64, i64)> = sqlx::query_as(
        "SELECT available_tickets::int8,
                (SELECT count(*) FROM stock_returns WHERE event_id = $1),
                (pending_tickets + sold_tickets)::int8
         FROM events WHERE id = $1",
    )
    .bind(event_id)
    .fetch_optional(pool)
    .await
    .context("reading Postgres stock")?;
    let Some((available, returns_on_their_way, held)) = in_postgres else {
        return Ok(Repair::Gone);
    };
    if returns_on_their_way > 0 {
        return Ok(Repair::Busy);
    }
    if stock != available {
        return Ok(
            match gate.correct_stock(event_id, &seen, available).await? {
                Some(from) => Repair::Repaired {
                    from,
                    to: available,
                },
                None => Repair::Busy,
            },
        );
    }
    let tally = gate.tally(event_id).await.context("reading Redis buyers")?;
    if tally.seq != seen.seq {
        return Ok(Repair::Busy);
    }
    if tally.held != held {
        let reason = format!(
            "buyers hold {} ticket(s) in Redis, {held} in Postgres",
            tally.held
        );
        return rebuild(pool, gate, &seen, event_id, reason).await;
    }
    // Every order, whatever its status, has one idempotency entry.
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders WHERE event_id = $1")
        .bind(event_id)
        .fetch_one(pool)
        .await
        .context("counting the event's orders")?;
    if tally.keys == orders as u64 {
        return Ok(Repair::InSync);
    }
    let reason = format!(
        "{} idempotency entries in Redis, {orders} orders in Postgres",
        tally.keys
    );
    rebuild(pool, gate, &seen, event_id, reason).await
}

/// Rebuilds the event from Postgres if any buyer's count or idempotency
/// entry differs, entry by entry (what `check` compares; heavier than the
/// totals the reconciler compares every pass, so run on demand:
/// `flashtix check --repair`).
pub async fn rebuild_drifted_entries(
    pool: &PgPool,
    gate: &Gate,
    event_id: i64,
) -> anyhow::Result<Repair> {
    let seen = gate.observe(event_id).await?;
    if seen.stock.is_none() {
        return Ok(Repair::Unseeded);
    }
    if !seen.is_quiet() {
        return Ok(Repair::Busy);
    }
    let Some(snapshot) = snapshot(pool, event_id).await? else {
        return Ok(Repair::Gone);
    };
    let ledger = gate.ledger(event_id).await?;
    if !snapshot.returned.is_empty() || ledger.seq != seen.seq {
        return Ok(Repair::Busy);
    }
    let drift = ledger_drift(event_id, &snapshot, &ledger);
    match drift.first() {
        None => Ok(Repair::InSync),
        Some(first) => {
            let reason = format!("{} entries differ, first: {first}", drift.len());
            rebuild(pool, gate, &seen, event_id, reason).await
        }
    }
}

/// Forgets the event in Redis if nothing moved since `seen`, and reseeds it.
async fn rebuild(
    pool: &PgPool,
    gate: &Gate,
    seen: &Observation,
    event_id: i64,
    reason: String,
) -> anyhow::Result<Repair> {
    if !gate.unseed(event_id, seen).await? {
        return Ok(Repair::Busy);
    }
    reseed(pool, gate, event_id).await?;
    Ok(Repair::Rebuilt { reason })
}

/// Where Redis's buyers and keys of event `id` differ from what Postgres says
/// they must be (`snapshot`): a buyer's tickets held, a key's order.
pub fn ledger_drift(id: i64, snapshot: &Snapshot, ledger: &Ledger) -> Vec<String> {
    let mut drift = Vec::new();
    let held: HashMap<&str, i64> = snapshot
        .buyers
        .iter()
        .map(|(user, tickets)| (user.as_str(), *tickets))
        .collect();
    let users: BTreeSet<&str> = held
        .keys()
        .copied()
        .chain(ledger.buyers.keys().map(String::as_str))
        .collect();
    for user in users {
        let in_postgres = held.get(user).copied().unwrap_or(0);
        let in_redis = ledger.buyers.get(user).copied().unwrap_or(0);
        if in_postgres != in_redis {
            drift.push(format!(
                "event {id}: buyer {user:?} holds {in_postgres} ticket(s) in Postgres, {in_redis} in Redis"
            ));
        }
    }
    let orders: HashMap<String, Uuid> = snapshot
        .keys
        .iter()
        .map(|(user, key, order_id, _)| (crate::gate::key_field(user, key), *order_id))
        .collect();
    let fields: BTreeSet<&String> = orders.keys().chain(ledger.keys.keys()).collect();
    for field in fields {
        let (user, key) = field.split_once('\n').unwrap_or((field, ""));
        match (orders.get(field), ledger.keys.get(field)) {
            (Some(order), Some(Some(entry))) if order == entry => {}
            (Some(order), None) => drift.push(format!(
                "event {id}: key ({user:?}, {key:?}) has order {order} in Postgres, no entry in Redis"
            )),
            (Some(order), Some(entry)) => drift.push(format!(
                "event {id}: key ({user:?}, {key:?}) has order {order} in Postgres, Redis names {entry:?}"
            )),
            (None, _) => drift.push(format!(
                "event {id}: key ({user:?}, {key:?}) has an entry in Redis and no order in Postgres"
            )),
        }
    }
    drift
}

/// Confirms or releases holds older than the grace period. Returns how many.
///
/// "No order in Postgres" is decided under the event's row lock, which every
/// order batch holds until it commits, and recorded (`released_holds`) before
/// Redis is told: a batch still in flight either committed before (its order
/// is found, the hold confirmed) or finds the record after and refuses to
/// write the order. However slow a batch is, an order never commits after its
/// hold was given back.
pub async fn reclaim_stale_holds(pool: &PgPool, gate: &Gate, event_id: i64) -> anyhow::Result<u64> {
    let before = clock_ms() - HOLD_GRACE.as_millis() as i64;
    let stale = gate.stale_holds(event_id, before, 1000).await?;
    if stale.is_empty() {
        return Ok(0);
    }
    let committed = fence_lost_holds(pool, event_id, &stale)
        .await
        .context("looking up stale holds")?;
    let (found, lost): (Vec<_>, Vec<_>) = stale
        .into_iter()
        .partition(|hold| committed.contains(&hold.order_id));
    gate.confirm(event_id, &found).await?;
    let mut released = Vec::with_capacity(lost.len());
    for hold in &lost {
        gate.release(hold, hold.quantity).await?;
        released.push(hold.order_id);
        tracing::info!(event_id, order_id = %hold.order_id, "released a hold whose order never reached Postgres");
    }
    // Recorded before the release (the fence), dated after it: until now
    // its tickets were spoken for.
    sqlx::query(
        "UPDATE released_holds SET released_at = clock_timestamp() WHERE order_id = ANY($1)",
    )
    .bind(&released)
    .execute(pool)
    .await
    .context("dating released holds")?;
    Ok((found.len() + lost.len()) as u64)
}

/// Under the event's row lock: which of these holds' orders committed; the
/// others are recorded as released, so no batch can commit them later.
async fn fence_lost_holds(pool: &PgPool, event_id: i64, holds: &[Hold]) -> sqlx::Result<Vec<Uuid>> {
    let ids: Vec<Uuid> = holds.iter().map(|hold| hold.order_id).collect();
    let mut tx = pool.begin().await?;
    // A batch stuck for longer fails this pass; the next tick tries again.
    sqlx::query("SET LOCAL lock_timeout = '2s'")
        .execute(&mut *tx)
        .await?;
    sqlx::query("SELECT 1 FROM events WHERE id = $1 FOR UPDATE")
        .bind(event_id)
        .execute(&mut *tx)
        .await?;
    let committed: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM orders WHERE id = ANY($1)")
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
    let lost: Vec<&Hold> = holds
        .iter()
        .filter(|hold| !committed.contains(&hold.order_id))
        .collect();
    record_released(&mut *tx, event_id, &lost).await?;
    tx.commit().await?;
    Ok(committed)
}

/// Gives Redis the tickets Postgres gave back (`stock_returns`), then forgets
/// the rows (but those of events Redis has no stock for: they wait for the
/// reseed). Each return is applied once however many processes run this, or
/// however often it runs after a crash between the two steps. Returns how many
/// rows were handled.
pub async fn restock_pending(pool: &PgPool, gate: &Gate) -> anyhow::Result<u64> {
    let returns: Vec<(Uuid, i64, String, i32)> = sqlx::query_as(
        "SELECT order_id, event_id, user_id, quantity FROM stock_returns
         ORDER BY created_at LIMIT 1000",
    )
    .fetch_all(pool)
    .await
    .context("reading stock returns")?;
    if returns.is_empty() {
        return Ok(0);
    }
    let mut handled = Vec::with_capacity(returns.len());
    for (order_id, event_id, user_id, quantity) in returns {
        let stock_return = StockReturn {
            order_id,
            event_id,
            user_id,
            quantity,
        };
        let restock = gate
            .restock(&stock_return)
            .await
            .context("giving tickets back to Redis")?;
        if restock != Restock::Unseeded {
            handled.push(order_id);
        }
    }
    // When the tickets were back in Redis: `check` judges refusals by it.
    sqlx::query(
        "WITH applied AS (DELETE FROM stock_returns WHERE order_id = ANY($1) RETURNING order_id)
         UPDATE orders SET returned_at = now() WHERE id IN (SELECT order_id FROM applied)",
    )
    .bind(&handled)
    .execute(pool)
    .await
    .context("forgetting applied stock returns")?;
    Ok(handled.len() as u64)
}

/// Records holds given back without an order (`released_holds`: what the
/// order writer refuses to commit, and what `check` counts as spoken for
/// until then). The time of release is the statement's; a hold recorded
/// twice keeps its first record.
pub async fn record_released(
    db: impl sqlx::PgExecutor<'_>,
    event_id: i64,
    holds: &[&Hold],
) -> sqlx::Result<()> {
    if holds.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = holds.iter().map(|h| h.order_id).collect();
    let users: Vec<&str> = holds.iter().map(|h| h.user_id.as_str()).collect();
    let keys: Vec<&str> = holds.iter().map(|h| h.idempotency_key.as_str()).collect();
    let quantities: Vec<i32> = holds.iter().map(|h| h.quantity).collect();
    sqlx::query(
        "INSERT INTO released_holds (order_id, event_id, user_id, idempotency_key, quantity)
         SELECT id, $2, u, k, q FROM unnest($1::uuid[], $3::text[], $4::text[], $5::int4[])
                AS h(id, u, k, q)
         ON CONFLICT DO NOTHING",
    )
    .bind(&ids)
    .bind(event_id)
    .bind(&users)
    .bind(&keys)
    .bind(&quantities)
    .execute(db)
    .await
    .map(drop)
}

/// One pass over every event. One event's failure (its row lock held past
/// the timeout by a slow batch) does not stop the pass for the others; the
/// first error is returned at the end.
pub async fn reconcile_once(pool: &PgPool, gate: &Gate, metrics: &Metrics) -> anyhow::Result<()> {
    metrics.stock_returned(restock_pending(pool, gate).await?);
    let mut failed = None;
    for event_id in crate::catalogue::events::gated_ids(pool).await? {
        if let Err(error) = reconcile_event(pool, gate, metrics, event_id).await {
            failed.get_or_insert(error.context(format!("event {event_id}")));
        }
    }
    failed.map_or(Ok(()), Err)
}

async fn reconcile_event(
    pool: &PgPool,
    gate: &Gate,
    metrics: &Metrics,
    event_id: i64,
) -> anyhow::Result<()> {
    metrics.holds_reclaimed(reclaim_stale_holds(pool, gate, event_id).await?);
    match repair_drift(pool, gate, event_id).await? {
        Repair::Repaired { from, to } => {
            metrics.stock_repaired();
            tracing::warn!(event_id, from, to, "corrected Redis stock drift");
        }
        Repair::Rebuilt { reason } => {
            metrics.reseeded();
            tracing::warn!(
                event_id,
                reason,
                "Redis buyers or keys drifted; rebuilt the event from Postgres"
            );
        }
        Repair::Unseeded => {
            if let Reseed::Done { .. } = reseed(pool, gate, event_id).await? {
                metrics.reseeded();
            }
        }
        Repair::InSync | Repair::Busy | Repair::Gone => {}
    }
    Ok(())
}

/// Runs forever, one pass every `every`; errors are logged once per streak.
pub async fn run(
    pool: PgPool,
    gate: Gate,
    metrics: std::sync::Arc<Metrics>,
    every: Duration,
    mut stop: Stop,
) {
    let mut failing = false;
    while stop.pause(every).await {
        match reconcile_once(&pool, &gate, &metrics).await {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("reconciler recovered");
            }
            Ok(()) => {}
            Err(error) if !failing => {
                failing = true;
                tracing::warn!(
                    error = format!("{error:#}"),
                    "reconciler pass failed; will keep trying"
                );
            }
            Err(_) => {}
        }
    }
}
