//! An event's stock as the stream tells it, read from Postgres, and the
//! Server-Sent Events messages that carry it.

use axum::body::Bytes;
use chrono::{DateTime, Utc};
use flashtix_model::seating::ZoneMap;
use serde::Serialize;
use sqlx::PgExecutor;

use super::seated::SeatChange;
use crate::runtime::db::from_row;

/// The counters of an event's stock: what Postgres had committed at `version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stock {
    pub event_id: i64,
    /// Counts every committed change of the counters, in commit order (the
    /// message's `id:`).
    pub version: i64,
    pub total: i64,
    pub available: i64,
    /// Tickets of orders waiting for their payment.
    pub held: i64,
    pub sold: i64,
    /// When the change was made, by the clock of the transaction that
    /// committed it (its commit follows within the same batch).
    pub changed_at: DateTime<Utc>,
    /// When the event sold out; `None` while tickets are for sale (the
    /// database keeps when it last did: see [`super::as_sold`]).
    pub sold_out_at: Option<DateTime<Utc>>,
}

from_row!(Stock {
    event_id,
    version,
    total,
    available,
    held,
    sold,
    changed_at,
    sold_out_at,
});

const STOCK_COLUMNS: &str = "id AS event_id, stock_version AS version, \
     total_tickets::int8 AS total, available_tickets::int8 AS available, \
     pending_tickets::int8 AS held, sold_tickets::int8 AS sold, \
     stock_changed_at AS changed_at, sold_out_at";

impl Stock {
    /// The stock of each of `events` that exists: one query, whatever the
    /// number of clients watching them.
    pub async fn read<'e>(db: impl PgExecutor<'e>, events: &[i64]) -> sqlx::Result<Vec<Stock>> {
        sqlx::query_as(&format!(
            "SELECT {STOCK_COLUMNS} FROM events WHERE id = ANY($1)"
        ))
        .bind(events)
        .fetch_all(db)
        .await
    }
}

/// The `event:` of a message. Every one carries the whole stock, so any
/// single message tells the truth on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The first message of a connection: the stock as it stands (on a
    /// seated event, with every seat).
    Snapshot,
    /// The stock changed.
    Stock,
    /// The last ticket went: `sold_out_at` says when.
    SoldOut,
    /// Tickets came back (an unpaid order's) after a sell-out.
    BackOnSale,
}

impl Kind {
    /// What a change did, from `was` tickets for sale to `is`.
    pub fn between(was: i64, is: i64) -> Kind {
        match (was > 0, is > 0) {
            (true, false) => Kind::SoldOut,
            (false, true) => Kind::BackOnSale,
            _ => Kind::Stock,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Snapshot => "snapshot",
            Kind::Stock => "stock",
            Kind::SoldOut => "sold_out",
            Kind::BackOnSale => "back_on_sale",
        }
    }
}

/// A message's `data:`: the stock, and on a seated event its zones (each
/// seat's state in a snapshot, the counts alone after it) and the seats
/// that changed since the last message.
#[derive(Serialize)]
struct Data<'a> {
    #[serde(flatten)]
    stock: &'a Stock,
    /// A seated event's seats on their way back to sale.
    #[serde(skip_serializing_if = "Option::is_none")]
    returning: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    zones: Option<&'a [ZoneMap]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seats: Option<&'a [SeatChange]>,
}

/// A message, formatted once for every client it goes to.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Its place among its event's messages in this process: a client is
    /// sent each once, in this order.
    pub order: u64,
    /// The stock version it carries.
    pub version: i64,
    pub bytes: Bytes,
}

/// How long a client waits before reconnecting, the stream's `retry:` hint.
pub const RETRY_MS: u64 = 2000;

impl Frame {
    /// The message telling `stock` as `kind`, with a seated event's `zones`
    /// and changed `seats`.
    pub fn of(
        order: u64,
        kind: Kind,
        stock: &Stock,
        zones: Option<&[ZoneMap]>,
        seats: Option<&[SeatChange]>,
    ) -> Frame {
        let data = serde_json::to_string(&Data {
            stock,
            returning: zones.map(|zones| zones.iter().map(|zone| zone.returning).sum()),
            zones,
            seats,
        })
        .expect("a stock serializes");
        Frame {
            order,
            version: stock.version,
            bytes: Bytes::from(format!(
                "id: {}\nevent: {}\ndata: {data}\n\n",
                stock.version,
                kind.name()
            )),
        }
    }

    /// A comment, which keeps proxies from closing a quiet connection.
    pub fn heartbeat() -> Bytes {
        Bytes::from_static(b": heartbeat\n\n")
    }

    /// The first bytes of a connection: the reconnection hint.
    pub fn retry() -> Bytes {
        Bytes::from(format!("retry: {RETRY_MS}\n\n"))
    }

    /// The last words to a client dropped for reading too slowly.
    pub fn dropped() -> Bytes {
        Bytes::from_static(
            b": dropped: this client read too slowly; reconnect with Last-Event-ID\n\n",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stock(version: i64, available: i64) -> Stock {
        Stock {
            event_id: 7,
            version,
            total: 10,
            available,
            held: 10 - available,
            sold: 0,
            changed_at: DateTime::UNIX_EPOCH,
            sold_out_at: None,
        }
    }

    fn change(before: &Stock, after: &Stock) -> String {
        let kind = Kind::between(before.available, after.available);
        let frame = Frame::of(1, kind, after, None, None);
        String::from_utf8(frame.bytes.to_vec()).unwrap()
    }

    #[test]
    fn a_change_is_named_by_what_it_did_to_the_stock() {
        let sold_out = change(&stock(1, 2), &stock(2, 0));
        assert!(
            sold_out.starts_with("id: 2\nevent: sold_out\ndata: {"),
            "{sold_out}"
        );
        assert!(sold_out.ends_with("}\n\n"), "{sold_out}");
        assert!(sold_out.contains("\"available\":0"), "{sold_out}");
        assert!(!sold_out.contains("zones"), "{sold_out}");
        let back = change(&stock(2, 0), &stock(3, 1));
        assert!(back.starts_with("id: 3\nevent: back_on_sale\n"), "{back}");
        let less = change(&stock(3, 5), &stock(4, 4));
        assert!(less.starts_with("id: 4\nevent: stock\n"), "{less}");
        assert_eq!(&Frame::heartbeat()[..], b": heartbeat\n\n");
    }
}
