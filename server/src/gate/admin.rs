//! Opening an event, wiping a namespace, and the knobs that make Redis wrong
//! on purpose (for tests and drills).

use redis::{AsyncCommands, RedisResult};

use super::Gate;

impl Gate {
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
