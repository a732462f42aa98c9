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
//! reconciler ([`reconcile`]) once it is older than the grace period.
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
//!
//! - `keys`: the names of an event's keys, and how a hold is written there;
//! - `admit`: the hot path: reserve, release, confirm, replay;
//! - `repair`: what the reconciler reads and corrects, and reseeding;
//! - `admin`: opening an event, wiping a namespace, and the knobs tests and
//!   drills turn on purpose;
//! - [`reconcile`]: the task that repairs Redis from Postgres.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::ConnectionManagerConfig;
use redis::{RedisResult, Script};

use crate::runtime::config::Namespace;

mod admin;
mod admit;
mod keys;
mod link;
pub mod reconcile;
mod repair;

pub use admit::Admission;
use keys::EventKeys;
pub use keys::{key_field, Hold};
use link::Link;
pub use repair::{Ledger, Observation, Restock, SeedLock, Snapshot, StockReturn, Tally};

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

// The scripts, one file each (`gate/*.lua`); each file starts with the keys
// and arguments it takes.
/// Shared by every script that moves stock: matures due returns into stock
/// (`mature`) and schedules a give-back (`give_back`).
const RETURNS: &str = include_str!("returns.lua");
const MATURE: &str = include_str!("mature.lua");
const RESERVE: &str = include_str!("reserve.lua");
const RELEASE: &str = include_str!("release.lua");
const CONFIRM: &str = include_str!("confirm.lua");
const CORRECT: &str = include_str!("correct.lua");
const SEED_STOCK: &str = include_str!("seed_stock.lua");
const RESTOCK: &str = include_str!("restock.lua");
const SOLD_OUT_KEYS: &str = include_str!("sold_out_keys.lua");
const TALLY: &str = include_str!("tally.lua");
const UNSEED: &str = include_str!("unseed.lua");
const UNLOCK: &str = include_str!("unlock.lua");

fn with_returns(body: &str) -> Script {
    let returns = RETURNS.replace("RETURN_DELAY_MS", &RETURN_DELAY.as_millis().to_string());
    Script::new(&format!("{returns}{body}"))
}

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
}
