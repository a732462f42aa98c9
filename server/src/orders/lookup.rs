//! Asking Postgres whether a (user, idempotency key) already has an order,
//! for many requests at once.
//!
//! Every refusal (`sold_out`, `limit_exceeded`) is checked here before it is
//! sent: Redis may not know a key whose order Postgres has (an order taken
//! while this or another process could not reach Redis, a hold released while
//! its order was still being written), and telling that buyer "no ticket"
//! while their order stands is the one lie a sale must never tell. One task
//! gathers the lookups waiting and answers them with one query, so a herd of
//! refusals costs a query per batch, not one each. Before it asks, it lets the
//! requests that are ready to run add theirs (`gather_ready`): the query's
//! fixed cost, not its keys, is what a herd of refusals pays for.

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
        gather_ready(&mut queue, &mut batch).await;
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

/// The most yields one gathering takes: under a steady trickle of lookups,
/// the first one waits no longer than this many turns of the runtime.
const GATHER_YIELDS: usize = 8;

/// Adds to `batch` the lookups of requests that can run now: each yield lets
/// the runtime run them (and read the requests waiting on their sockets), and
/// it goes on while a yield brings more, up to [`GATHER_YIELDS`]. Idle, this
/// costs one yield; under a herd of refusals one query answers several times
/// as many.
async fn gather_ready(queue: &mut mpsc::Receiver<Lookup>, batch: &mut Vec<Lookup>) {
    for _ in 0..GATHER_YIELDS {
        if batch.len() >= MAX_BATCH {
            return;
        }
        tokio::task::yield_now().await;
        let before = batch.len();
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(lookup) => batch.push(lookup),
                Err(_) => break,
            }
        }
        if batch.len() == before {
            return;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(n: usize) -> Lookup {
        Lookup {
            user_id: format!("buyer-{n}"),
            idempotency_key: format!("key-{n}"),
            reply: oneshot::channel().0,
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_batch_takes_in_the_lookups_of_requests_ready_to_run() {
        let (lookups, mut queue) = mpsc::channel(QUEUE);
        lookups.send(lookup(0)).await.unwrap();
        // Requests that can run but have not yet: their lookups are not queued.
        for n in 1..=20 {
            let lookups = lookups.clone();
            tokio::spawn(async move { lookups.send(lookup(n)).await.unwrap() });
        }
        let mut batch = Vec::new();
        assert_eq!(queue.recv_many(&mut batch, MAX_BATCH).await, 1);
        gather_ready(&mut queue, &mut batch).await;
        assert_eq!(batch.len(), 21, "one query for all of them");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn gathering_ends_under_a_trickle_that_never_stops() {
        let (lookups, mut queue) = mpsc::channel(QUEUE);
        let trickle = tokio::spawn(async move {
            for n in 0.. {
                if lookups.send(lookup(n)).await.is_err() {
                    return;
                }
                tokio::task::yield_now().await;
            }
        });
        let mut batch = Vec::new();
        queue.recv_many(&mut batch, MAX_BATCH).await;
        let gathering = gather_ready(&mut queue, &mut batch);
        tokio::time::timeout(std::time::Duration::from_secs(5), gathering)
            .await
            .expect("the gathering ends");
        assert!(batch.len() <= 1 + GATHER_YIELDS, "{} gathered", batch.len());
        trickle.abort();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn gathering_stops_at_a_full_batch() {
        let (lookups, mut queue) = mpsc::channel(QUEUE);
        for n in 0..MAX_BATCH + 10 {
            lookups.send(lookup(n)).await.unwrap();
        }
        let mut batch = Vec::new();
        queue.recv_many(&mut batch, 1).await;
        gather_ready(&mut queue, &mut batch).await;
        assert_eq!(batch.len(), MAX_BATCH);
        assert_eq!(queue.len(), 10, "the rest wait for the next query");
    }
}
