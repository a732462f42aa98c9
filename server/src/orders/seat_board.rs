//! The taken-seat board: seats this process's writer saw owned by an order,
//! so that a buyer naming only such seats hears "taken" from memory instead
//! of queueing for the event's row lock to be told again.
//!
//! It is never wrong, by construction. The writer reads seats and takes them
//! under the event's row lock, and the trigger that frees the seats of an
//! order ending unpaid takes that lock first (migration 7). So a seat the
//! writer saw owned (read under the lock, or bought by a batch that
//! committed) is freed, if ever, after the writer's transaction ended, and is
//! for sale again only [`SEAT_RETURN_DELAY`] after that, by the clock
//! (`seat_return_delay()`). The board trusts what it saw for
//! [`SEAT_TAKEN_TTL`], less than the delay, dated from before the batch's
//! transaction began. `check` proves it on a storm's history
//! (`seat_taken_was_true`).
//!
//! The board says nothing of keys: the desk still checks a refusal's key in
//! Postgres, so the buyer who owns the seat gets their order back.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use tokio::time::Instant;

use crate::known_bad::{self, Bug};

/// How long a seat seen owned is answered "taken" from memory.
pub const SEAT_TAKEN_TTL: Duration = Duration::from_secs(1);
/// How long after its order ends a seat is for sale again: the database's
/// `seat_return_delay()`, which a test compares with this.
pub const SEAT_RETURN_DELAY: Duration = Duration::from_secs(5);

/// A board is pruned of expired seats when it has grown this much since.
const PRUNE_GROWTH: usize = 2;
const PRUNE_FLOOR: usize = 1024;

#[derive(Default)]
pub struct SeatBoard {
    events: RwLock<HashMap<i64, Seats>>,
}

#[derive(Default)]
struct Seats {
    /// Seat → until when it is known taken.
    taken_until: HashMap<String, Instant>,
    /// Its size after the last pruning.
    pruned_at: usize,
}

impl SeatBoard {
    /// Whether every one of `seats` is known taken now: then "taken" is the
    /// answer, and it names them all.
    pub fn all_taken(&self, event_id: i64, seats: &[String]) -> bool {
        if seats.is_empty() {
            return false;
        }
        let now = Instant::now();
        let events = self.events.read().unwrap_or_else(|p| p.into_inner());
        let Some(known) = events.get(&event_id) else {
            return false;
        };
        seats.iter().all(|seat| {
            known
                .taken_until
                .get(seat)
                .is_some_and(|until| now < *until)
        })
    }

    /// Records seats that were owned by an order at `seen_at` or later.
    pub fn learn<'a>(
        &self,
        event_id: i64,
        seats: impl IntoIterator<Item = &'a str>,
        seen_at: Instant,
    ) {
        let until = seen_at + trusted_for();
        let now = Instant::now();
        if until <= now {
            return;
        }
        let mut seats = seats.into_iter().peekable();
        if seats.peek().is_none() {
            return;
        }
        let mut events = self.events.write().unwrap_or_else(|p| p.into_inner());
        let known = events.entry(event_id).or_default();
        for seat in seats {
            match known.taken_until.get_mut(seat) {
                Some(known_until) => *known_until = (*known_until).max(until),
                None => {
                    known.taken_until.insert(seat.to_owned(), until);
                }
            }
        }
        if known.taken_until.len() >= (known.pruned_at * PRUNE_GROWTH).max(PRUNE_FLOOR) {
            known.taken_until.retain(|_, until| now < *until);
            known.pruned_at = known.taken_until.len();
        }
    }
}

/// How long a seat seen owned is trusted. A known-bad server puts freed
/// seats back on sale at once and trusts what it saw as long as the real
/// server keeps them off sale.
fn trusted_for() -> Duration {
    if known_bad::has(Bug::SeatsBackAtOnce) {
        SEAT_RETURN_DELAY
    } else {
        SEAT_TAKEN_TTL
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seats(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn answers_only_when_every_seat_is_known_taken_and_only_while_fresh() {
        let board = SeatBoard::default();
        assert!(!board.all_taken(1, &seats(&["A-1-1"])), "nothing known yet");

        board.learn(1, ["A-1-1", "A-1-2"], Instant::now());
        assert!(board.all_taken(1, &seats(&["A-1-1"])));
        assert!(board.all_taken(1, &seats(&["A-1-2", "A-1-1"])));
        assert!(
            !board.all_taken(1, &seats(&["A-1-1", "A-1-3"])),
            "one seat not known: Postgres names exactly which are gone"
        );
        assert!(
            !board.all_taken(2, &seats(&["A-1-1"])),
            "other events unaffected"
        );
        assert!(!board.all_taken(1, &[]), "no seats, nothing taken");

        tokio::time::advance(SEAT_TAKEN_TTL / 2).await;
        board.learn(1, ["A-1-2"], Instant::now());
        tokio::time::advance(SEAT_TAKEN_TTL / 2).await;
        assert!(!board.all_taken(1, &seats(&["A-1-1"])), "expired");
        assert!(board.all_taken(1, &seats(&["A-1-2"])), "seen again later");
    }

    #[tokio::test(start_paused = true)]
    async fn what_was_seen_too_long_ago_is_not_learned() {
        let board = SeatBoard::default();
        let seen_at = Instant::now();
        tokio::time::advance(SEAT_TAKEN_TTL).await;
        board.learn(1, ["A-1-1"], seen_at);
        assert!(!board.all_taken(1, &seats(&["A-1-1"])));
    }

    #[tokio::test(start_paused = true)]
    async fn expired_seats_are_pruned_as_the_board_grows() {
        let board = SeatBoard::default();
        let old: Vec<String> = (1..PRUNE_FLOOR).map(|n| format!("A-1-{n}")).collect();
        board.learn(1, old.iter().map(String::as_str), Instant::now());
        tokio::time::advance(SEAT_TAKEN_TTL).await;
        board.learn(1, ["B-1-1"], Instant::now());
        let events = board.events.read().unwrap();
        assert_eq!(
            events[&1].taken_until.len(),
            1,
            "only the fresh seat is left"
        );
    }

    #[test]
    fn a_seat_seen_taken_cannot_sell_before_the_board_forgets_it() {
        assert!(SEAT_TAKEN_TTL < SEAT_RETURN_DELAY);
    }
}
