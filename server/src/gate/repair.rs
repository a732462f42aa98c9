//! What the reconciler reads of Redis and corrects there: holds gone stale,
//! drift between Redis and Postgres, stock returns, and reseeding an event
//! from a Postgres snapshot under a lock.

use std::collections::HashMap;

use redis::{AsyncCommands, RedisResult};
use uuid::Uuid;

use super::{Gate, Hold};

/// How many hash fields one seeding command writes.
const SEED_CHUNK: usize = 1000;
/// How long a seeding lock lives if its holder dies.
const SEED_LOCK_MS: u64 = 10_000;

/// Redis's view of one event, for drift checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    pub stock: Option<i64>,
    pub holds: u64,
    /// Tickets on their way back to stock.
    pub returning: u64,
    pub seq: i64,
}

impl Observation {
    /// Nothing in flight: stock can be compared with Postgres.
    pub fn is_quiet(&self) -> bool {
        self.holds == 0 && self.returning == 0
    }
}

/// Redis's totals for an event's buyers and keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Tickets held, summed over the buyers.
    pub held: i64,
    /// Idempotency entries.
    pub keys: u64,
    pub seq: i64,
}

/// Redis's copy of an event's buyers and keys.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    /// user → tickets held.
    pub buyers: HashMap<String, i64>,
    /// `user\nkey` → the order it names (`None`: an entry that names none).
    pub keys: HashMap<String, Option<Uuid>>,
    pub seq: i64,
}

/// What Postgres says Redis should hold for an event.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub available: i64,
    /// user → tickets held (pending or confirmed).
    pub buyers: Vec<(String, i64)>,
    /// (user, key, order id, fingerprint) of every order.
    pub keys: Vec<(String, String, Uuid, String)>,
    /// Stock returns Postgres still lists: `available` counts them already.
    pub returned: Vec<Uuid>,
}

/// Tickets Postgres gave back (a row of `stock_returns`), to give back in Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockReturn {
    pub order_id: Uuid,
    pub event_id: i64,
    pub user_id: String,
    pub quantity: i32,
}

/// What [`Gate::restock`] did with a stock return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restock {
    Applied,
    /// An earlier call applied it (or a reseed that already counted it).
    AlreadyApplied,
    /// The event has no stock in Redis: keep the return until it is reseeded.
    Unseeded,
}

/// Proof that this process holds an event's seeding lock.
pub struct SeedLock {
    event_id: i64,
    token: String,
}

impl Gate {
    /// Gives back the tickets of an order Postgres released (expired or
    /// cancelled): stock after [`RETURN_DELAY`](super::RETURN_DELAY), and the buyer's count. Applied
    /// once per order however often it is called, and only once the event is
    /// seeded: a reseed reads Postgres first and writes Redis after, so a
    /// return applied in between would be overwritten (the buyer's count) or
    /// lost (the stock).
    pub async fn restock(&self, stock_return: &StockReturn) -> RedisResult<Restock> {
        let event = self.event_keys(stock_return.event_id);
        let applied: i64 = self
            .scripts
            .restock
            .key(&event.stock)
            .key(&event.buyers)
            .key(&event.returning)
            .key(&event.returned)
            .key(&event.seq)
            .arg(stock_return.order_id.to_string())
            .arg(stock_return.quantity)
            .arg(&stock_return.user_id)
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(match applied {
            1 => Restock::Applied,
            0 => Restock::AlreadyApplied,
            _ => Restock::Unseeded,
        })
    }

    /// Holds admitted before `before_ms` and still not confirmed or released.
    pub async fn stale_holds(
        &self,
        event_id: i64,
        before_ms: i64,
        limit: isize,
    ) -> RedisResult<Vec<Hold>> {
        let members: Vec<String> = self
            .redis
            .clone()
            .zrangebyscore_limit(self.event_keys(event_id).holds, "-inf", before_ms, 0, limit)
            .await?;
        Ok(members
            .iter()
            .filter_map(|member| Hold::from_member(event_id, member))
            .collect())
    }

    /// Moves due returns into stock. Returns how many are still on their way.
    pub async fn mature(&self, event_id: i64) -> RedisResult<u64> {
        let event = self.event_keys(event_id);
        self.scripts
            .mature
            .key(&event.stock)
            .key(&event.returning)
            .invoke_async(&mut self.redis.clone())
            .await
    }

    /// The event's state in Redis, after moving due returns into stock.
    pub async fn observe(&self, event_id: i64) -> RedisResult<Observation> {
        let event = self.event_keys(event_id);
        self.mature(event_id).await?;
        let (stock, holds, returning, seq): (Option<i64>, u64, u64, Option<i64>) = redis::pipe()
            .get(&event.stock)
            .zcard(&event.holds)
            .zcard(&event.returning)
            .get(&event.seq)
            .query_async(&mut self.redis.clone())
            .await?;
        Ok(Observation {
            stock,
            holds,
            returning,
            seq: seq.unwrap_or(0),
        })
    }

    /// Brings the stock to `available` if nothing moved since `seen` and nothing
    /// is in flight (down at once, up after [`RETURN_DELAY`](super::RETURN_DELAY)). Returns the stock
    /// it corrected, or `None` if it did not apply.
    pub async fn correct_stock(
        &self,
        event_id: i64,
        seen: &Observation,
        available: i64,
    ) -> RedisResult<Option<i64>> {
        let event = self.event_keys(event_id);
        let (applied, previous): (i64, String) = self
            .scripts
            .correct
            .key(&event.stock)
            .key(&event.holds)
            .key(&event.seq)
            .key(&event.returning)
            .arg(seen.seq)
            .arg(available)
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok((applied == 1).then(|| previous.parse().unwrap_or_default()))
    }

    /// Redis's totals of an event's buyers and keys, in one step.
    pub async fn tally(&self, event_id: i64) -> RedisResult<Tally> {
        let event = self.event_keys(event_id);
        let (held, keys, seq): (i64, u64, i64) = self
            .scripts
            .tally
            .key(&event.buyers)
            .key(&event.keys)
            .key(&event.seq)
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(Tally { held, keys, seq })
    }

    /// Redis's copy of an event's buyers and keys, in one step.
    pub async fn ledger(&self, event_id: i64) -> RedisResult<Ledger> {
        let event = self.event_keys(event_id);
        let (buyers, keys, seq): (HashMap<String, i64>, HashMap<String, String>, Option<i64>) =
            redis::pipe()
                .atomic()
                .hgetall(&event.buyers)
                .hgetall(&event.keys)
                .get(&event.seq)
                .query_async(&mut self.redis.clone())
                .await?;
        let keys = keys
            .into_iter()
            .map(|(field, entry)| {
                let order = entry.split('\n').next().and_then(|id| id.parse().ok());
                (field, order)
            })
            .collect();
        Ok(Ledger {
            buyers,
            keys,
            seq: seq.unwrap_or(0),
        })
    }

    /// Forgets the event's Redis state if nothing moved since `seen` and
    /// nothing is in flight, so it is rebuilt from Postgres. Returns whether it did.
    pub async fn unseed(&self, event_id: i64, seen: &Observation) -> RedisResult<bool> {
        let event = self.event_keys(event_id);
        let applied: i64 = self
            .scripts
            .unseed
            .key(&event.stock)
            .key(&event.holds)
            .key(&event.returning)
            .key(&event.seq)
            .key(&event.buyers)
            .key(&event.keys)
            .arg(seen.seq)
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(applied == 1)
    }

    /// The idempotency keys (`user\nkey`) of an event that is sold out with no
    /// ticket on its way back; `None` if it is not.
    pub async fn sold_out_keys(&self, event_id: i64) -> RedisResult<Option<Vec<String>>> {
        let event = self.event_keys(event_id);
        self.scripts
            .sold_out_keys
            .key(&event.stock)
            .key(&event.keys)
            .key(&event.returning)
            .invoke_async(&mut self.redis.clone())
            .await
    }

    /// Takes the event's seeding lock, if free.
    pub async fn lock_seeding(&self, event_id: i64) -> RedisResult<Option<SeedLock>> {
        let token = Uuid::now_v7().to_string();
        let taken: Option<String> = redis::cmd("SET")
            .arg(self.event_keys(event_id).seeding)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(SEED_LOCK_MS)
            .query_async(&mut self.redis.clone())
            .await?;
        Ok(taken.map(|_| SeedLock { event_id, token }))
    }

    /// Writes what Postgres says, then the stock (last: its presence means
    /// "seeded"; it starts at zero and the tickets arrive after
    /// [`RETURN_DELAY`](super::RETURN_DELAY), like any other increase), then lets go of the lock.
    pub async fn seed(&self, lock: SeedLock, snapshot: &Snapshot) -> RedisResult<()> {
        let event_id = lock.event_id;
        let event = self.event_keys(event_id);
        let mut redis = self.redis.clone();
        for chunk in snapshot.buyers.chunks(SEED_CHUNK) {
            redis
                .hset_multiple::<_, _, _, ()>(&event.buyers, chunk)
                .await?;
        }
        for chunk in snapshot.keys.chunks(SEED_CHUNK) {
            let fields: Vec<(String, String)> = chunk
                .iter()
                .map(|(user, key, order_id, fingerprint)| {
                    (
                        format!("{user}\n{key}"),
                        format!("{order_id}\n{fingerprint}"),
                    )
                })
                .collect();
            redis
                .hset_multiple::<_, _, _, ()>(&event.keys, &fields)
                .await?;
        }
        for chunk in snapshot.returned.chunks(SEED_CHUNK) {
            let ids: Vec<String> = chunk.iter().map(Uuid::to_string).collect();
            redis.sadd::<_, _, ()>(&event.returned, ids).await?;
        }
        self.scripts
            .seed_stock
            .key(&event.stock)
            .key(&event.returning)
            .key(&event.seq)
            .arg(snapshot.available)
            .arg(format!("seed-{}", lock.token))
            .invoke_async::<i64>(&mut redis)
            .await?;
        self.unlock(lock).await
    }

    /// Lets go of a seeding lock, only if it is still ours.
    pub async fn unlock(&self, lock: SeedLock) -> RedisResult<()> {
        self.scripts
            .unlock
            .key(self.event_keys(lock.event_id).seeding)
            .arg(&lock.token)
            .invoke_async::<i64>(&mut self.redis.clone())
            .await
            .map(drop)
    }
}
