//! The sold-out board: once an event is sold out, this process answers "sold
//! out" from memory instead of asking Redis, for [`SOLD_OUT_TTL`] at a time.
//!
//! A buyer whose request is a replay must still get the first answer, so the
//! board keeps the event's idempotency keys as they were when Redis said "sold
//! out, nothing coming back"; a request with one of those keys takes the normal
//! path. No key can be added while the flag is trusted: selling needs stock, and
//! stock only comes back [`crate::gate::RETURN_DELAY`] after it is given back,
//! longer than the flag lives (it is dated from before Redis was asked).

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

use tokio::time::Instant;

use crate::gate::SOLD_OUT_TTL;
use crate::known_bad::{self, Bug};

enum Entry {
    /// A look at Redis is under way; until it answers, ask Redis.
    Refreshing,
    SoldOut {
        until: Instant,
        keys: HashSet<String>,
    },
}

#[derive(Default)]
pub struct SoldOutBoard {
    events: RwLock<HashMap<i64, Entry>>,
}

impl SoldOutBoard {
    /// Whether this request can be answered "sold out" without asking Redis.
    pub fn answers_sold_out(&self, event_id: i64, key_field: &str) -> bool {
        let events = self.events.read().unwrap_or_else(|p| p.into_inner());
        match events.get(&event_id) {
            Some(Entry::SoldOut { until, keys }) => {
                Instant::now() < *until
                    && (!keys.contains(key_field) || known_bad::has(Bug::ReplayAnsweredSoldOut))
            }
            _ => false,
        }
    }

    /// Claims the refresh of an event Redis just called sold out; false when
    /// another request already has, or the flag is still fresh.
    pub fn begin_refresh(&self, event_id: i64) -> bool {
        let mut events = self.events.write().unwrap_or_else(|p| p.into_inner());
        match events.get(&event_id) {
            Some(Entry::Refreshing) => false,
            Some(Entry::SoldOut { until, .. }) if Instant::now() < *until => false,
            _ => {
                events.insert(event_id, Entry::Refreshing);
                true
            }
        }
    }

    /// Records what Redis said to a refresh sent at `asked_at`: the keys of a
    /// sold-out event, or `None` if it is not sold out after all.
    pub fn finish_refresh(&self, event_id: i64, asked_at: Instant, keys: Option<Vec<String>>) {
        let mut events = self.events.write().unwrap_or_else(|p| p.into_inner());
        match keys {
            Some(keys) => events.insert(
                event_id,
                Entry::SoldOut {
                    until: asked_at + SOLD_OUT_TTL,
                    keys: keys.into_iter().collect(),
                },
            ),
            None => events.remove(&event_id),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn answers_only_unknown_keys_and_only_while_fresh() {
        let board = SoldOutBoard::default();
        assert!(!board.answers_sold_out(1, "u\nk"), "nothing known yet");
        assert!(board.begin_refresh(1));
        assert!(!board.begin_refresh(1), "one refresh at a time");
        assert!(!board.answers_sold_out(1, "u\nk"), "refreshing: ask Redis");

        board.finish_refresh(1, Instant::now(), Some(vec!["buyer\nfirst".into()]));
        assert!(board.answers_sold_out(1, "u\nk"));
        assert!(
            !board.answers_sold_out(1, "buyer\nfirst"),
            "a possible replay"
        );
        assert!(
            !board.answers_sold_out(2, "u\nk"),
            "other events unaffected"
        );
        assert!(!board.begin_refresh(1), "still fresh");

        tokio::time::advance(SOLD_OUT_TTL).await;
        assert!(!board.answers_sold_out(1, "u\nk"), "expired");
        assert!(board.begin_refresh(1));
        board.finish_refresh(1, Instant::now(), None);
        assert!(!board.answers_sold_out(1, "u\nk"), "not sold out after all");
    }

    #[test]
    fn the_flag_dies_before_a_returned_ticket_can_sell() {
        assert!(SOLD_OUT_TTL < crate::gate::RETURN_DELAY);
    }
}
