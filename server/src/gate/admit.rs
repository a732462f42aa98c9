//! The hot path: a reservation checked and taken in one script, then
//! released or confirmed once Postgres has decided; and a replayed key read
//! back.

use std::time::Duration;

use redis::{AsyncCommands, RedisResult};
use uuid::Uuid;

use super::{key_field, Gate, Hold, RETURN_DELAY};

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

impl Gate {
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
