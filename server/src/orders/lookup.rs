//! Asking Postgres whether a (user, idempotency key) already has an order,
//! for many requests at once.
//!
//! Every refusal (`sold_out`, `limit_exceeded`) is checked here before it is
//! sent: Redis may not know a key whose order Postgres has (an order taken
//! while this or another process could not reach Redis, a hold released while
//! its order was still being written), and telling that buyer "no ticket"
//! while their order stands is the one lie a sale must never tell. One task
//! gathers the lookups waiting and answers them with one query, so a herd of
//! refusals costs a query per batch, not one each.

use std::collections::HashMap;

use sqlx::{PgPool, Row};
use tokio::sync::{mpsc, oneshot};

use super::{Order, ORDER_COLUMNS};

/// The most lookups one query answers.
const MAX_BATCH: usize = 1024;
/// Lookups waiting; when full, requests wait (backpressure, not memory).
const QUEUE: usize = 8192;

type Reply = oneshot::Sender<Result<Option<Order>, String>>;

struct Lookup {
    user_id: String,
    idempotency_key: String,
    reply: Reply,
}

/// Finds the order of a (user, key). Cheap to clone.
#[derive(Clone)]
pub struct KeyLookup {
    lookups: mpsc::Sender<Lookup>,
}

impl KeyLookup {
    /// Starts the task that answers lookups; it ends when every handle is gone.
    pub fn start(pool: PgPool) -> Self {
        let (lookups, queue) = mpsc::channel(QUEUE);
        tokio::spawn(answer(pool, queue));
        Self { lookups }
    }

    /// The order of this user's key, if there is one (on any event).
    pub async fn find(
        &self,
        user_id: &str,
        idempotency_key: &str,
    ) -> Result<Option<Order>, String> {
        let (reply, answer) = oneshot::channel();
        let lookup = Lookup {
            user_id: user_id.to_owned(),
            idempotency_key: idempotency_key.to_owned(),
            reply,
        };
        if self.lookups.send(lookup).await.is_err() {
            return Err("key lookups stopped".into());
        }
        answer
            .await
            .unwrap_or_else(|_| Err("key lookups stopped".into()))
    }
}

async fn answer(pool: PgPool, mut queue: mpsc::Receiver<Lookup>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        match find_all(&pool, &batch).await {
            Ok(found) => {
                for lookup in batch.drain(..) {
                    // Not `remove`: the same key may be asked twice in a batch.
                    let order = found.get(&(lookup.user_id, lookup.idempotency_key));
                    let _ = lookup.reply.send(Ok(order.cloned()));
                }
            }
            Err(error) => {
                for lookup in batch.drain(..) {
                    let _ = lookup.reply.send(Err(error.to_string()));
                }
            }
        }
    }
}

async fn find_all(
    pool: &PgPool,
    batch: &[Lookup],
) -> sqlx::Result<HashMap<(String, String), Order>> {
    let users: Vec<&str> = batch.iter().map(|l| l.user_id.as_str()).collect();
    let keys: Vec<&str> = batch.iter().map(|l| l.idempotency_key.as_str()).collect();
    let rows = sqlx::query(&format!(
        "SELECT {ORDER_COLUMNS}
         FROM unnest($1::text[], $2::text[]) AS r(user_id, idempotency_key)
         CROSS JOIN LATERAL (
             SELECT * FROM orders o
             WHERE o.user_id = r.user_id AND o.idempotency_key = r.idempotency_key
         ) AS o"
    ))
    .bind(&users)
    .bind(&keys)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            let order = Order::from_row(row)?;
            let key: String = row.try_get("idempotency_key")?;
            Ok(((order.user_id.clone(), key), order))
        })
        .collect()
}
