//! The admission gate: Redis answers "sold out" and "over your limit" before
//! Postgres is asked, and remembers idempotency keys so a replay is recognised.
//!
//! Redis is never the truth. A wrong value here may cost a sale or waste a
//! Postgres round trip, never oversell: the order writer re-checks stock, the
//! per-user limit and the idempotency key under the event's row lock.
//!
//! Keys, per event (hash-tagged `{ev:ID}` so one event lives in one cluster slot):
//! - `stock`: tickets Redis may still admit;
//! - `buyers`: hash user → tickets held;
//! - `keys`: hash `user\nkey` → `order_id\nfingerprint` (idempotency);
//! - `holds`: sorted set of reservations admitted here but not yet known to be
//!   committed in Postgres, scored by admission time (ms). A hold is removed when
//!   its order commits (confirm) or is refused (release), each exactly once because
//!   only the `ZREM` that removes it applies its effects;
//! - `returning`: sorted set of tickets on their way back to `stock`, scored by
//!   when they may be sold again (see below);
//! - `seq`: bumped by every admit, confirm, release and correction, so the drift
//!   repair can tell whether Redis moved while it was reading Postgres;
//! - `returned`: set of the stock returns (order ids) already given back here, so
//!   a return read twice from Postgres's `stock_returns` is applied once;
//! - `seeding`: the lock held while the event is reseeded from Postgres.
//!
//! A hold left behind by a crash between Redis and Postgres is found by the
//! reconciler (`crate::gate::reconcile`) once it is older than the grace period.
//!
//! **Stock only goes up after [`RETURN_DELAY`].** Released tickets, upward
//! corrections and reseeds wait in `returning`; every script first moves the due
//! ones into `stock`. This is what makes the in-process sold-out flag
//! (`crate::orders::sold_out`) exact: a process that saw the event sold out at
//! time t, with the idempotency keys of that moment, trusts it until
//! t + [`SOLD_OUT_TTL`] < t + [`RETURN_DELAY`]; no ticket can be sold (and so no
//! new key can appear) before the flag has expired. A buyer who finds too few
//! tickets in `stock` but enough in `returning` is told when they are due
//! ([`Admission::Returning`]) and waits, rather than hear "sold out" untruly.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::ConnectionManagerConfig;
use redis::{AsyncCommands, RedisResult, Script};
use uuid::Uuid;

use crate::runtime::config::Namespace;

mod link;
pub mod reconcile;

use link::Link;

/// One reservation, as admitted by Redis and then written to Postgres.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub order_id: Uuid,
    pub event_id: i64,
    pub user_id: String,
    pub idempotency_key: String,
    pub quantity: i32,
}

impl Hold {
    /// The sorted-set member; user ids and keys contain no control characters.
    fn member(&self) -> String {
        format!(
            "{}\n{}\n{}\n{}",
            self.order_id, self.quantity, self.user_id, self.idempotency_key
        )
    }

    fn from_member(event_id: i64, member: &str) -> Option<Self> {
        let mut parts = member.splitn(4, '\n');
        Some(Self {
            order_id: parts.next()?.parse().ok()?,
            quantity: parts.next()?.parse().ok()?,
            user_id: parts.next()?.to_owned(),
            idempotency_key: parts.next()?.to_owned(),
            event_id,
        })
    }

    fn key_field(&self) -> String {
        key_field(&self.user_id, &self.idempotency_key)
    }
}

/// The field of (user, key) in an event's `keys` hash.
pub fn key_field(user_id: &str, idempotency_key: &str) -> String {
    format!("{user_id}\n{idempotency_key}")
}

/// How long a ticket given back to Redis waits before it can be sold again.
pub const RETURN_DELAY: Duration = Duration::from_millis(500);
/// How long a process may answer "sold out" from memory; below [`RETURN_DELAY`].
pub const SOLD_OUT_TTL: Duration = Duration::from_millis(250);

/// Milliseconds since the Unix epoch: the clock holds are stamped with.
pub fn clock_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Redis's answer to a reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Reserved,
    /// Not enough stock; `remaining` is what is left (0: sold out entirely).
    SoldOut {
        remaining: i64,
    },
    LimitExceeded,
    /// This user used this key before, for this order and request fingerprint.
    Replay {
        order_id: Uuid,
        fingerprint: String,
    },
    /// Not enough stock now, but enough on its way back (released, corrected
    /// or reseeded tickets wait [`RETURN_DELAY`]): ask again after this long.
    Returning {
        after: Duration,
    },
    /// Redis has no stock for the event (never seeded, flushed, or reset).
    Unseeded,
}

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

// The scripts, one file each (`gate/*.lua`); each file starts with the keys
// and arguments it takes.
/// Shared by every script that moves stock: matures due returns into stock
/// (`mature`) and schedules a give-back (`give_back`).
const RETURNS: &str = include_str!("gate/returns.lua");
const MATURE: &str = include_str!("gate/mature.lua");
const RESERVE: &str = include_str!("gate/reserve.lua");
const RELEASE: &str = include_str!("gate/release.lua");
const CONFIRM: &str = include_str!("gate/confirm.lua");
const CORRECT: &str = include_str!("gate/correct.lua");
const SEED_STOCK: &str = include_str!("gate/seed_stock.lua");
const RESTOCK: &str = include_str!("gate/restock.lua");
const SOLD_OUT_KEYS: &str = include_str!("gate/sold_out_keys.lua");
const TALLY: &str = include_str!("gate/tally.lua");
const UNSEED: &str = include_str!("gate/unseed.lua");
const UNLOCK: &str = include_str!("gate/unlock.lua");

fn with_returns(body: &str) -> Script {
    let returns = RETURNS.replace("RETURN_DELAY_MS", &RETURN_DELAY.as_millis().to_string());
    Script::new(&format!("{returns}{body}"))
}

/// How many hash fields one seeding command writes.
const SEED_CHUNK: usize = 1000;
/// How long a seeding lock lives if its holder dies.
const SEED_LOCK_MS: u64 = 10_000;

/// The Redis side of the sale, for one namespace.
#[derive(Clone)]
pub struct Gate {
    redis: Link,
    namespace: Namespace,
    scripts: Arc<Scripts>,
}

/// The gate's Lua scripts, made once and shared by every clone of the gate:
/// a `Script` owns its source, and the gate is cloned for every request.
struct Scripts {
    mature: Script,
    reserve: Script,
    release: Script,
    confirm: Script,
    correct: Script,
    seed_stock: Script,
    restock: Script,
    sold_out_keys: Script,
    tally: Script,
    unseed: Script,
    unlock: Script,
}

/// The names of one event's Redis keys (the module docs say what each holds).
struct EventKeys {
    stock: String,
    buyers: String,
    keys: String,
    holds: String,
    seq: String,
    returning: String,
    returned: String,
    seeding: String,
}

impl EventKeys {
    fn new(namespace: &Namespace, event_id: i64) -> Self {
        let name = |what: &str| format!("{namespace}:{{ev:{event_id}}}:{what}");
        Self {
            stock: name("stock"),
            buyers: name("buyers"),
            keys: name("keys"),
            holds: name("holds"),
            seq: name("seq"),
            returning: name("returning"),
            returned: name("returned"),
            seeding: name("seeding"),
        }
    }

    /// The keys the hold scripts (reserve, release) take, in their order.
    fn of_holds(self) -> [String; 6] {
        [
            self.stock,
            self.buyers,
            self.keys,
            self.holds,
            self.seq,
            self.returning,
        ]
    }
}

/// Proof that this process holds an event's seeding lock.
pub struct SeedLock {
    event_id: i64,
    token: String,
}

impl Gate {
    /// Connects lazily: the manager dials on first use and reconnects by itself.
    pub fn connect(redis_url: &str, namespace: Namespace) -> RedisResult<Self> {
        let client = redis::Client::open(redis_url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            // Bounded so a hung Redis turns into an error (and the Postgres-only
            // path), not into requests that wait forever.
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        let redis = Link::new(client, config)?;
        let scripts = Scripts {
            mature: with_returns(MATURE),
            reserve: with_returns(RESERVE),
            release: with_returns(RELEASE),
            confirm: Script::new(CONFIRM),
            correct: with_returns(CORRECT),
            seed_stock: with_returns(SEED_STOCK),
            restock: with_returns(RESTOCK),
            sold_out_keys: with_returns(SOLD_OUT_KEYS),
            tally: Script::new(TALLY),
            unseed: Script::new(UNSEED),
            unlock: Script::new(UNLOCK),
        };
        Ok(Self {
            redis,
            namespace,
            scripts: Arc::new(scripts),
        })
    }

    fn event_keys(&self, event_id: i64) -> EventKeys {
        EventKeys::new(&self.namespace, event_id)
    }

    pub async fn ping(&self) -> RedisResult<()> {
        let mut redis = self.redis.clone();
        redis::cmd("PING").query_async::<()>(&mut redis).await
    }

    /// Checks stock, the per-user limit and the idempotency key, and takes the
    /// tickets, in one atomic step.
    pub async fn reserve(
        &self,
        hold: &Hold,
        max_per_user: i32,
        fingerprint: &str,
        now_ms: i64,
    ) -> RedisResult<Admission> {
        let mut invocation = self.scripts.reserve.prepare_invoke();
        for key in self.event_keys(hold.event_id).of_holds() {
            invocation.key(key);
        }
        invocation
            .arg(hold.quantity)
            .arg(max_per_user)
            .arg(&hold.user_id)
            .arg(hold.key_field())
            .arg(format!("{}\n{fingerprint}", hold.order_id))
            .arg(hold.member())
            .arg(now_ms);
        let (code, detail): (i64, String) =
            invocation.invoke_async(&mut self.redis.clone()).await?;
        Ok(match code {
            0 => Admission::Reserved,
            1 => Admission::SoldOut {
                remaining: detail.parse().unwrap_or_default(),
            },
            2 => Admission::LimitExceeded,
            3 => parse_key_entry(&detail),
            5 => Admission::Returning {
                after: Duration::from_millis(detail.parse::<u64>().unwrap_or(0).max(1))
                    .min(RETURN_DELAY),
            },
            _ => Admission::Unseeded,
        })
    }

    /// Gives a hold back: the user's count and the idempotency key always, and
    /// `tickets` of its quantity to the stock (after [`RETURN_DELAY`]): all of
    /// them, but for a hold Postgres refused for want of stock (see
    /// `orders::writer`). Returns whether this call released it (false:
    /// already gone).
    pub async fn release(&self, hold: &Hold, tickets: i32) -> RedisResult<bool> {
        let mut invocation = self.scripts.release.prepare_invoke();
        for key in self.event_keys(hold.event_id).of_holds() {
            invocation.key(key);
        }
        invocation
            .arg(hold.member())
            .arg(hold.quantity)
            .arg(&hold.user_id)
            .arg(hold.key_field())
            .arg(hold.order_id.to_string())
            .arg(tickets.min(hold.quantity).max(0));
        let released: i64 = invocation.invoke_async(&mut self.redis.clone()).await?;
        Ok(released == 1)
    }

    /// Marks holds whose orders committed in Postgres: they stop being in flight.
    pub async fn confirm(&self, event_id: i64, holds: &[Hold]) -> RedisResult<()> {
        let event = self.event_keys(event_id);
        if holds.is_empty() {
            return Ok(());
        }
        let mut invocation = self.scripts.confirm.prepare_invoke();
        invocation.key(&event.holds).key(&event.seq);
        for hold in holds {
            invocation.arg(hold.member());
        }
        invocation
            .invoke_async::<i64>(&mut self.redis.clone())
            .await
            .map(drop)
    }

    /// Gives back the tickets of an order Postgres released (expired or
    /// cancelled): stock after [`RETURN_DELAY`], and the buyer's count. Applied
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

    /// The idempotency entry for (user, key) on this event, if Redis has one.
    pub async fn key_entry(
        &self,
        event_id: i64,
        user_id: &str,
        idempotency_key: &str,
    ) -> RedisResult<Option<Uuid>> {
        let entry: Option<String> = self
            .redis
            .clone()
            .hget(
                self.event_keys(event_id).keys,
                key_field(user_id, idempotency_key),
            )
            .await?;
        Ok(entry.and_then(|entry| match parse_key_entry(&entry) {
            Admission::Replay { order_id, .. } => Some(order_id),
            _ => None,
        }))
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
    /// is in flight (down at once, up after [`RETURN_DELAY`]). Returns the stock
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

    /// Overwrites the stock, whatever is in flight. For tests and drills that need
    /// Redis to be wrong on purpose.
    pub async fn force_stock(&self, event_id: i64, stock: i64) -> RedisResult<()> {
        self.redis
            .clone()
            .set(self.event_keys(event_id).stock, stock)
            .await
    }

    /// Adds to the event's stock with no hold, order or sequence behind it:
    /// what a known-bad server does when it ignores the reservation's answer.
    #[cfg(feature = "known-bad")]
    pub async fn add_stock_unguarded(&self, event_id: i64, tickets: i64) -> RedisResult<()> {
        self.redis
            .clone()
            .incr(self.event_keys(event_id).stock, tickets)
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
    /// [`RETURN_DELAY`], like any other increase), then lets go of the lock.
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

    /// Seeds a fresh event: nothing sold, nothing held.
    pub async fn open_event(&self, event_id: i64, tickets: i64) -> RedisResult<()> {
        let mut redis = self.redis.clone();
        let event = self.event_keys(event_id);
        let stale = [
            event.buyers,
            event.keys,
            event.holds,
            event.returning,
            event.returned,
            event.seeding,
        ];
        redis.del::<_, ()>(&stale).await?;
        redis.set(event.stock, tickets).await
    }

    /// Deletes every key of the namespace.
    pub async fn wipe(&self) -> RedisResult<u64> {
        let mut redis = self.redis.clone();
        let pattern = format!("{}:*", self.namespace);
        let mut cursor: u64 = 0;
        let mut deleted = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut redis)
                .await?;
            if !keys.is_empty() {
                deleted += redis.unlink::<_, u64>(&keys).await?;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }
}

fn parse_key_entry(entry: &str) -> Admission {
    let (order_id, fingerprint) = entry.split_once('\n').unwrap_or((entry, ""));
    match order_id.parse() {
        Ok(order_id) => Admission::Replay {
            order_id,
            fingerprint: fingerprint.to_owned(),
        },
        // An entry we did not write: treat the event as needing a reseed.
        Err(_) => Admission::Unseeded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hold_members_round_trip() {
        let hold = Hold {
            order_id: Uuid::now_v7(),
            event_id: 7,
            user_id: "user with spaces:and:colons".into(),
            idempotency_key: "key\u{e9}-1".into(),
            quantity: 3,
        };
        assert_eq!(Hold::from_member(7, &hold.member()), Some(hold));
        assert_eq!(Hold::from_member(7, "not a member"), None);
    }

    #[test]
    fn key_entries_parse() {
        let order_id = Uuid::now_v7();
        assert_eq!(
            parse_key_entry(&format!("{order_id}\ne1q2")),
            Admission::Replay {
                order_id,
                fingerprint: "e1q2".into()
            }
        );
        assert_eq!(parse_key_entry("garbage"), Admission::Unseeded);
    }
}
