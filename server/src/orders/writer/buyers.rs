//! What a batch's buyers already have, read in one round trip under the
//! event's row lock: orders under their keys, tickets they hold, holds the
//! reconciler released.

use std::collections::{HashMap, HashSet};

use flashtix_model::holds_tickets;
use sqlx::Row;
use uuid::Uuid;

use super::Ticket;
use crate::known_bad::{self, Bug};
use crate::orders::{Order, ORDER_COLUMNS};

/// What the batch's buyers already have, read under the event's row lock.
pub(super) struct Buyers {
    /// Orders under the batch's (user, key) pairs.
    pub(super) existing: HashMap<(String, String), Order>,
    /// Each user's live tickets for this event.
    pub(super) held: HashMap<String, i64>,
    /// Holds of the batch the reconciler released (see `released_holds`).
    pub(super) released: HashSet<Uuid>,
}

/// One round trip for what the batch's buyers already have: orders under their
/// (user, key) pairs, each user's live tickets for this event, and which of
/// the batch's holds were released meanwhile.
///
/// Both lookups are correlated on one buyer at a time, so that with sequential
/// scans priced out (see `db::Purpose::OrderWriter`) the plan is an index probe
/// per buyer on both columns. As plain filters over the batch's arrays, a plan
/// could probe the index on the event alone and filter every order of the event.
pub(super) async fn read_buyers(
    tx: &mut sqlx::PgConnection,
    event_id: i64,
    batch: &[Ticket],
) -> sqlx::Result<Buyers> {
    let users: Vec<&str> = batch.iter().map(|t| t.hold.user_id.as_str()).collect();
    let keys: Vec<&str> = batch
        .iter()
        .map(|t| t.hold.idempotency_key.as_str())
        .collect();
    let ids: Vec<Uuid> = batch.iter().map(|t| t.hold.order_id).collect();
    // A known-bad server counts what the buyer's cancelled orders held too.
    let holding = if known_bad::has(Bug::LimitCountsCancelled) {
        "('PENDING', 'CONFIRMED', 'CANCELLED')"
    } else {
        holds_tickets!()
    };
    let rows = sqlx::query(&format!(
        "SELECT 'order' AS kind, {ORDER_COLUMNS}, NULL::int8 AS held
         FROM unnest($2::text[], $3::text[]) AS r(user_id, idempotency_key)
         CROSS JOIN LATERAL (
             SELECT * FROM orders o
             WHERE o.user_id = r.user_id AND o.idempotency_key = r.idempotency_key
         ) AS o
         UNION ALL
         SELECT 'held', NULL, NULL, NULL, b.user_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                NULL, NULL, (SELECT sum(quantity)::int8 FROM orders o
                 WHERE o.event_id = $1 AND o.user_id = b.user_id
                   AND o.status IN {holding})
         FROM (SELECT DISTINCT user_id FROM unnest($2::text[]) AS u(user_id)) AS b
         UNION ALL
         SELECT 'released', r.order_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                NULL, NULL, NULL, NULL
         FROM released_holds r WHERE r.order_id = ANY($4)"
    ))
    .bind(event_id)
    .bind(&users)
    .bind(&keys)
    .bind(&ids)
    .fetch_all(tx)
    .await?;
    let mut existing = HashMap::new();
    let mut held = HashMap::new();
    let mut released = HashSet::new();
    for row in &rows {
        let kind: &str = row.try_get("kind")?;
        if kind == "released" {
            released.insert(row.try_get("id")?);
        } else if kind == "order" {
            let order = Order::from_row(row)?;
            existing.insert(
                (order.user_id.clone(), row.try_get("idempotency_key")?),
                order,
            );
        } else if let Some(quantity) = row.try_get::<Option<i64>, _>("held")? {
            held.insert(row.try_get("user_id")?, quantity);
        }
    }
    Ok(Buyers {
        existing,
        held,
        released,
    })
}
