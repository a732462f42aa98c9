//! A seated event on the stream: its seat map read once a tick for every
//! client, and the seats that changed since the last message.
//!
//! A seat's state can change with no change to the event's counters: a seat
//! an unpaid order freed is `returning` for a few seconds, then on sale
//! again by the clock alone. So while any seat is returning, the map is
//! read every tick even if the version stood still, and the message that
//! tells it carries the same version with the seats that moved.

use flashtix_model::seating::{seat_id, ZoneMap};
use serde::Serialize;
use sqlx::PgPool;

use super::Stock;
use crate::catalogue::seating;

/// One seat that changed, and its state now (a glyph of the seat map: `.`
/// free, `h` held, `s` sold, `r` returning, `x` blocked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SeatChange {
    pub seat: String,
    pub state: char,
}

/// The event's counters and, if it is seated, its zones as
/// `GET /events/{id}/seats` draws them (`None`: sold by count), read in one
/// snapshot of the database so that the two agree; `None`: no such event.
pub async fn read(
    pool: &PgPool,
    event_id: i64,
) -> sqlx::Result<Option<(Stock, Option<Vec<ZoneMap>>)>> {
    let mut tx = seating::snapshot(pool).await?;
    let Some(stock) = Stock::read(&mut *tx, &[event_id]).await?.pop() else {
        return Ok(None);
    };
    let zones = seating::seat_map_in(&mut tx, event_id).await?;
    Ok(Some((stock, zones)))
}

/// Whether the clock alone will change the map (a seat on its way back).
pub fn moves_by_itself(zones: &[ZoneMap]) -> bool {
    zones.iter().any(|zone| zone.returning > 0)
}

/// Every seat whose state differs from `before` to `after`, zone by zone,
/// row by row.
pub fn changes(before: &[ZoneMap], after: &[ZoneMap]) -> Vec<SeatChange> {
    let mut changed = Vec::new();
    for (old, new) in before.iter().zip(after) {
        for (row, (was, is)) in old.rows.iter().zip(&new.rows).enumerate() {
            if was == is {
                continue;
            }
            for (seat, (a, b)) in was.chars().zip(is.chars()).enumerate() {
                if a != b {
                    changed.push(SeatChange {
                        seat: seat_id(&new.name, row as i32 + 1, seat as i32 + 1),
                        state: b,
                    });
                }
            }
        }
    }
    changed
}

/// The zones with their counts alone (a change message's): the seats that
/// moved are listed apart.
pub fn counts(zones: &[ZoneMap]) -> Vec<ZoneMap> {
    zones
        .iter()
        .map(|zone| ZoneMap {
            rows: Vec::new(),
            ..zone.clone()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(name: &str, rows: &[&str]) -> ZoneMap {
        ZoneMap {
            name: name.into(),
            kind: "reserved".into(),
            price_cents: 100,
            capacity: 6,
            available: 6,
            held: 0,
            sold: 0,
            returning: rows.iter().map(|r| r.matches('r').count() as i64).sum(),
            rows: rows.iter().map(|r| r.to_string()).collect(),
        }
    }

    #[test]
    fn the_seats_that_moved_are_named_with_their_state_now() {
        let before = [zone("A", &["...", "..."]), zone("B", &["s.."])];
        let after = [zone("A", &["..h", "..."]), zone("B", &["r.s"])];
        assert_eq!(
            changes(&before, &after),
            [
                SeatChange {
                    seat: "A-1-3".into(),
                    state: 'h'
                },
                SeatChange {
                    seat: "B-1-1".into(),
                    state: 'r'
                },
                SeatChange {
                    seat: "B-1-3".into(),
                    state: 's'
                },
            ]
        );
        assert!(changes(&after, &after).is_empty());
        assert!(moves_by_itself(&after));
        assert!(!moves_by_itself(&before));
        assert!(counts(&after).iter().all(|zone| zone.rows.is_empty()));
    }
}
