//! The saga's messages: the topics, and the body each carries. Bodies are
//! JSON in the outbox and on the wire; these types are what the consumers
//! read and the payment worker writes.
//!
//! A message carries a whole batch: every order one writer transaction took,
//! every payment one payment transaction recorded. The broker then moves one
//! message per batch instead of one per order (a persistent message through a
//! quorum queue cost RabbitMQ about 60 µs of CPU here). Consumers act on each
//! entry on its own and are idempotent per order, so a redelivered or
//! republished batch changes nothing twice, and an entry that can never be
//! handled is dead-lettered alone, naming its order.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Orders were taken: the payment worker charges them.
pub const ORDER_CREATED: &str = "order.created";
/// The provider answered for orders: the order worker settles them.
pub const PAYMENT_RESULT: &str = "payment.result";
/// Orders ended (or were refunded): the notifications role tells their
/// buyers and organizers. Written in the transaction that ends them.
pub const ORDER_SETTLED: &str = "order.settled";
/// Every topic the sale publishes.
pub const TOPICS: [&str; 3] = [ORDER_CREATED, PAYMENT_RESULT, ORDER_SETTLED];

/// SQL: the entries of the outbox row `m`, as a JSON array. A row written
/// before messages were batches (`{"order_id": ...}`) is its own one entry,
/// as consumers read such a body.
pub const OUTBOX_ENTRIES: &str = "COALESCE(m.payload->'orders', jsonb_build_array(m.payload))";

/// Every message's body: one entry per order it is about.
#[derive(Debug, Serialize, Deserialize)]
pub struct Batch<T> {
    pub orders: Vec<T>,
}

/// An entry of `order.created`. The order writer builds it in SQL, in the
/// transaction that takes the orders, with each order's `event_id`,
/// `user_id`, `quantity` and `expires_at` besides; the payment worker needs
/// only these.
#[derive(Debug, Serialize, Deserialize)]
pub struct OrderCreated {
    pub order_id: Uuid,
    pub amount_cents: i64,
}

/// An entry of `payment.result`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PaymentResult {
    pub order_id: Uuid,
    pub outcome: PaymentOutcome,
    pub amount_cents: i64,
}

/// An entry of `order.settled`: the order, and how it ended. The
/// notifications role reads the rest (buyer, event, seats) from Postgres.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderSettled {
    pub order_id: Uuid,
    pub ending: flashtix_model::notices::Ending,
}

flashtix_model::named! {
    /// What the provider did with a capture or a refund: its word in
    /// `payment.result`, in the payments table and in the provider's ledger.
    pub enum PaymentOutcome("a payment outcome") {
        Succeeded = "SUCCEEDED",
        Failed = "FAILED",
    }
}
