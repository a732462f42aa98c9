//! The figures a flash sale is judged by, per event, from the storm's
//! history: when it sold out, how fast it sold while stock lasted, and how
//! fair it was to the buyers who came first.
//!
//! A purchase is one buyer (the storm gives each purchase a buyer of its
//! own): its arrival is its first send, and it won if any of its attempts,
//! a fallback to the best seat left included, was told `accepted` (or
//! `replayed`). Every other end counts as a loss, whatever its cause. Of the
//! first W purchases to arrive, W being the number that won, a sale that
//! served strictly first come, first served lets every one win. The rank
//! correlation (rank-biserial) between arrival and winning is 1 for first
//! come, first served, 0 for a lottery, and negative when later buyers won.
//!
//! Read from the history file, so the storm's memory stays independent of
//! its size when no history is asked for.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use flashtix_model::history::{Attempt, Outcome};
use serde::{Deserialize, Serialize};

/// One event's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventFairness {
    pub event_id: i64,
    pub purchases: u64,
    pub winners: u64,
    /// Of the first `winners` purchases to arrive, how many won.
    pub first_arrivals_won: u64,
    /// 1: first come, first served; 0: a lottery; below 0: later buyers
    /// won. `None` when every purchase won, or none did.
    pub rank_correlation: Option<f64>,
    /// Seconds from the storm's start to the last acceptance, if the event
    /// was sold out (a buyer was told so).
    pub sold_out_seconds: Option<f64>,
    /// Purchases won per second until then.
    pub accepted_per_second_while_stock_lasted: Option<f64>,
}

#[derive(Default)]
struct Purchase {
    arrived: Option<DateTime<Utc>>,
    won: bool,
}

#[derive(Default)]
struct Event {
    purchases: HashMap<String, Purchase>,
    last_acceptance: Option<DateTime<Utc>>,
    sold_out: bool,
}

/// Each event's figures, by event id, from a storm that began at `started`.
pub fn of(history: &[Attempt], started: DateTime<Utc>) -> Vec<EventFairness> {
    let mut events: BTreeMap<i64, Event> = BTreeMap::new();
    for attempt in history {
        let event = events.entry(attempt.event_id).or_default();
        let purchase = event.purchases.entry(attempt.user_id.clone()).or_default();
        purchase.arrived = Some(match purchase.arrived {
            Some(first) => first.min(attempt.sent_at),
            None => attempt.sent_at,
        });
        match attempt.outcome {
            Outcome::Accepted | Outcome::Replayed => {
                purchase.won = true;
                if attempt.outcome == Outcome::Accepted {
                    event.last_acceptance = event.last_acceptance.max(Some(attempt.finished_at));
                }
            }
            Outcome::SoldOut => event.sold_out = true,
            _ => {}
        }
    }
    events
        .into_iter()
        .map(|(event_id, event)| figures(event_id, event, started))
        .collect()
}

fn figures(event_id: i64, event: Event, started: DateTime<Utc>) -> EventFairness {
    let mut arrivals: Vec<(DateTime<Utc>, bool)> = event
        .purchases
        .values()
        .filter_map(|p| p.arrived.map(|at| (at, p.won)))
        .collect();
    arrivals.sort_by_key(|(at, _)| *at);
    let won: Vec<bool> = arrivals.iter().map(|(_, won)| *won).collect();
    let winners = won.iter().filter(|w| **w).count();
    let sold_out_seconds = event
        .last_acceptance
        .filter(|_| event.sold_out)
        .map(|last| seconds_between(started, last));
    EventFairness {
        event_id,
        purchases: won.len() as u64,
        winners: winners as u64,
        first_arrivals_won: won[..winners].iter().filter(|w| **w).count() as u64,
        rank_correlation: rank_biserial(&won),
        sold_out_seconds,
        accepted_per_second_while_stock_lasted: sold_out_seconds
            .filter(|seconds| *seconds > 0.0)
            .map(|seconds| winners as f64 / seconds),
    }
}

fn seconds_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    let micros = (to - from).num_microseconds().unwrap_or(i64::MAX);
    micros.max(0) as f64 / 1e6
}

/// The rank-biserial correlation between earliness and winning, for
/// purchases in order of arrival: twice the difference between the losers'
/// and the winners' mean arrival position, over their number.
fn rank_biserial(won: &[bool]) -> Option<f64> {
    let n = won.len() as f64;
    let (mut winners, mut winners_sum, mut losers_sum) = (0.0, 0.0, 0.0);
    for (position, &won) in won.iter().enumerate() {
        if won {
            winners += 1.0;
            winners_sum += position as f64;
        } else {
            losers_sum += position as f64;
        }
    }
    let losers = n - winners;
    if winners == 0.0 || losers == 0.0 {
        return None;
    }
    Some(2.0 * (losers_sum / losers - winners_sum / winners) / n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn attempt(key: usize, ms: i64, outcome: Outcome) -> Attempt {
        let start = DateTime::UNIX_EPOCH;
        Attempt {
            attempt: key as u64,
            event_id: 1,
            user_id: format!("buyer-{key}"),
            idempotency_key: format!("key-{key}"),
            quantity: 1,
            sent_at: start + TimeDelta::milliseconds(ms),
            finished_at: start + TimeDelta::milliseconds(ms + 5),
            outcome,
            status: None,
            order_id: None,
            seats: None,
            asked_seats: None,
            asked_zone: None,
            amount_cents: None,
        }
    }

    /// Ten buyers a millisecond apart; `winners` are the ones who won.
    fn sale(winners: &[usize]) -> EventFairness {
        let history: Vec<Attempt> = (0..10)
            .map(|key| {
                let outcome = if winners.contains(&key) {
                    Outcome::Accepted
                } else {
                    Outcome::SoldOut
                };
                attempt(key, key as i64, outcome)
            })
            .collect();
        of(&history, DateTime::UNIX_EPOCH).remove(0)
    }

    #[test]
    fn first_come_first_served_scores_one_and_its_reverse_minus_one() {
        let fifo = sale(&[0, 1, 2, 3]);
        assert_eq!((fifo.winners, fifo.first_arrivals_won), (4, 4));
        assert_eq!(fifo.rank_correlation, Some(1.0));
        let last_first = sale(&[6, 7, 8, 9]);
        assert_eq!(last_first.first_arrivals_won, 0);
        assert_eq!(last_first.rank_correlation, Some(-1.0));
        let mixed = sale(&[0, 2, 5, 9]);
        assert_eq!(mixed.first_arrivals_won, 2);
        let r = mixed.rank_correlation.unwrap();
        assert!(r.abs() < 0.3, "about a lottery: {r}");
        assert_eq!(sale(&[]).rank_correlation, None, "nobody won");
    }

    #[test]
    fn the_sell_out_is_the_last_acceptance_of_an_event_that_refused_someone() {
        let fifo = sale(&[0, 1, 2, 3]);
        assert_eq!(
            fifo.sold_out_seconds,
            Some(0.008),
            "buyer 3: sent at 3 ms, answered at 8"
        );
        let rate = fifo.accepted_per_second_while_stock_lasted.unwrap();
        assert!((rate - 500.0).abs() < 1e-6, "4 won in 8 ms: {rate}");
        let everyone = sale(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(everyone.sold_out_seconds, None, "never sold out");
    }

    #[test]
    fn a_purchase_is_its_buyer_arriving_with_its_first_send() {
        // Buyer 1 sends first and times out, then wins on a retry after
        // buyer 0 lost: an early arrival that won.
        let history = vec![
            attempt(1, 0, Outcome::Timeout),
            attempt(0, 1, Outcome::SoldOut),
            attempt(1, 10, Outcome::Accepted),
        ];
        let mut fallback = attempt(0, 12, Outcome::Accepted);
        fallback.idempotency_key = "key-0-best".into();
        let figures = of(&history, DateTime::UNIX_EPOCH).remove(0);
        assert_eq!((figures.purchases, figures.winners), (2, 1));
        assert_eq!(figures.first_arrivals_won, 1);
        assert_eq!(figures.rank_correlation, Some(1.0));
        let mut with_fallback = history.clone();
        with_fallback.push(fallback);
        let figures = of(&with_fallback, DateTime::UNIX_EPOCH).remove(0);
        assert_eq!(
            (figures.purchases, figures.winners),
            (2, 2),
            "buyer 0 won with its fallback: one purchase"
        );
    }
}
