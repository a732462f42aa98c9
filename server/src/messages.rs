//! The saga's messages: the topics, and the body each carries. Bodies are
//! JSON in the outbox and on the wire; these types are what the consumers
//! read and the payment worker writes.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// An order was taken: the payment worker charges it.
pub const ORDER_CREATED: &str = "order.created";
/// The provider answered for an order: the order worker settles it.
pub const PAYMENT_RESULT: &str = "payment.result";
/// Every topic the sale publishes.
pub const TOPICS: [&str; 2] = [ORDER_CREATED, PAYMENT_RESULT];

/// The body of `order.created`. The order writer builds it in SQL, in the
/// transaction that takes the order, with the order's `event_id`, `user_id`,
/// `quantity` and `expires_at` besides; the payment worker needs only these.
#[derive(Debug, Deserialize)]
pub struct OrderCreated {
    pub order_id: Uuid,
    pub amount_cents: i64,
}

/// The body of `payment.result`.
#[derive(Debug, Serialize, Deserialize)]
pub struct PaymentResult {
    pub order_id: Uuid,
    pub outcome: Outcome,
    pub amount_cents: i64,
}

/// What the provider did with a capture: its word in `payment.result`, in
/// the payments table and in the provider's ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Outcome {
    Succeeded,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Succeeded, Self::Failed]
            .into_iter()
            .find(|outcome| outcome.as_str() == text)
    }
}
