//! Orders: taking them ([`Desk`]), writing them in batches ([`writer`]),
//! reading them back, and waiting for them to settle ([`settled`]).
//!
//! How a buy flows, and why it cannot oversell:
//! 1. [`request`] checks the body and the `Idempotency-Key` header.
//! 2. The Redis gate ([`crate::gate`]) admits or refuses in one Lua step: a replayed
//!    key, stock, the per-user limit. Most refusals end here, without Postgres;
//!    once an event is sold out, [`sold_out`] answers from memory. A seated
//!    event skips Redis; seats its writer saw owned a moment ago are answered
//!    "taken" from memory ([`seat_board`]).
//! 3. An admitted reservation (a *hold*) goes to its event's writer, which commits
//!    many orders in one transaction under the event's row lock, re-checking stock,
//!    limit and key there: Postgres alone decides. Stock never goes below zero
//!    (`CHECK`), and one order per (user, key) is a unique constraint.
//! 4. After the commit Redis learns the outcome: committed holds are confirmed,
//!    refused ones released (compensation). If Redis is unreachable, orders go
//!    straight to the writer; if Redis lost the event's keys, they are reseeded
//!    from Postgres first.
//!
//! 5. A refusal is checked against Postgres before it is sent ([`lookup`]): a
//!    key that has an order gets its order back, whatever Redis said.
//!
//! A crash between steps 2 and 3 leaves a hold in Redis with no order; the
//! reconciler ([`crate::gate::reconcile`]) finds holds older than a few seconds, looks
//! each order up in Postgres, and confirms or releases it.

mod desk;
pub mod listing;
pub mod lookup;
mod placed;
pub mod request;
pub mod seat_board;
pub mod settled;
pub mod sold_out;

pub mod writer;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use uuid::Uuid;

pub use desk::Desk;
use flashtix_model::names::UnknownName;
pub use flashtix_model::OrderStatus;
pub use placed::{PlaceError, Placed};

/// An order as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Order {
    pub order_id: Uuid,
    pub status: OrderStatus,
    pub event_id: i64,
    pub user_id: String,
    pub quantity: i64,
    pub amount_cents: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Reserved seats it holds or bought.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seats: Option<Vec<String>>,
    /// The general-admission zone it bought in, on an event with a plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    #[serde(skip)]
    pub fingerprint: String,
}

/// The answer to an accepted `POST /orders`; a replay answers the same again.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Receipt {
    pub order_id: Uuid,
    pub status: OrderStatus,
    pub event_id: i64,
    pub user_id: String,
    pub quantity: i64,
    pub amount_cents: i64,
    /// The seats the order holds, by id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seats: Option<Vec<String>>,
    /// The general-admission zone of an event with a plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
}

impl Receipt {
    /// The answer to the request that created an order: PENDING, whatever
    /// became of the order since, so a replay answers exactly as the first.
    pub fn pending(
        order_id: Uuid,
        event_id: i64,
        user_id: String,
        quantity: i64,
        amount_cents: i64,
    ) -> Self {
        Self {
            order_id,
            status: OrderStatus::Pending,
            event_id,
            user_id,
            quantity,
            amount_cents,
            seats: None,
            zone: None,
        }
    }

    /// The same receipt, naming what was bought on an event with a plan.
    pub fn with_places(mut self, seats: Option<Vec<String>>, zone: Option<String>) -> Self {
        self.seats = seats;
        self.zone = zone;
        self
    }
}

impl Order {
    /// The first answer to the request that created this order.
    pub fn receipt(&self) -> Receipt {
        Receipt::pending(
            self.order_id,
            self.event_id,
            self.user_id.clone(),
            self.quantity,
            self.amount_cents,
        )
        .with_places(self.seats.clone(), self.zone.clone())
    }

    pub(crate) fn from_row(row: &PgRow) -> sqlx::Result<Self> {
        Ok(Self {
            order_id: row.try_get("id")?,
            status: row
                .try_get::<&str, _>("status")?
                .parse()
                .map_err(|error: UnknownName| sqlx::Error::ColumnDecode {
                    index: "status".into(),
                    source: error.into(),
                })?,
            event_id: row.try_get("event_id")?,
            user_id: row.try_get("user_id")?,
            quantity: row.try_get::<i32, _>("quantity")?.into(),
            amount_cents: row.try_get("amount_cents")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            expires_at: row.try_get("expires_at")?,
            seats: row.try_get("seats")?,
            zone: row.try_get("zone")?,
            fingerprint: row.try_get("fingerprint")?,
        })
    }
}

pub(crate) const ORDER_COLUMNS: &str = "o.id, o.status, o.event_id, o.user_id, o.quantity, \
    o.amount_cents, o.created_at, o.updated_at, o.expires_at, o.seats, o.zone, o.fingerprint, \
    o.idempotency_key";

pub async fn fetch(pool: &PgPool, order_id: Uuid) -> sqlx::Result<Option<Order>> {
    let row = sqlx::query(&format!(
        "SELECT {ORDER_COLUMNS} FROM orders o WHERE o.id = $1"
    ))
    .bind(order_id)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(Order::from_row).transpose()
}
