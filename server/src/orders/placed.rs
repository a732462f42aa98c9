//! What the desk answers a buy request: an order placed (or replayed), or
//! why not, with its `error.code` and its label on the orders metric.

use flashtix_model::ErrorCode;

use super::Receipt;

#[derive(Debug)]
pub enum Placed {
    Accepted(Receipt),
    Replayed(Receipt),
}

#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    #[error("event {0} does not exist")]
    EventNotFound(i64),
    #[error("quantity {quantity} is above this event's limit of {max} per buyer")]
    AboveLimit { quantity: i32, max: i32 },
    #[error("sold out: not enough tickets left for this order")]
    SoldOut,
    #[error("zone {0} has fewer places left than asked for (other zones may have more)")]
    ZoneSoldOut(String),
    #[error("this buyer already holds the most tickets this event allows ({max})")]
    LimitExceeded { max: i32 },
    #[error("this Idempotency-Key was already used for a different request")]
    KeyReused,
    #[error("a request with this Idempotency-Key is still being processed; retry shortly")]
    InProgress,
    #[error("the sale is temporarily unavailable; retry shortly")]
    Unavailable(#[source] anyhow::Error),
    #[error("already taken: {}", .0.join(", "))]
    SeatTaken(Vec<String>),
    #[error("this event has no such seat: {}", .0.join(", "))]
    UnknownSeats(Vec<String>),
    #[error("not for sale: {}", .0.join(", "))]
    BlockedSeats(Vec<String>),
    #[error("{0}")]
    WrongChoice(String),
}

/// Every label [`Placed::label`] and [`PlaceError::label`] give, exported
/// at zero from the start (a series that appears late loses its first rise).
pub const ORDER_LABELS: [&str; 7] = [
    "accepted",
    "replayed",
    "sold_out",
    "seat_taken",
    "limit_exceeded",
    "rejected",
    "unavailable",
];

impl Placed {
    /// Its label on the `flashtix_orders_total` metric.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Accepted(_) => "accepted",
            Self::Replayed(_) => "replayed",
        }
    }
}

impl PlaceError {
    /// Its `error.code` in the answer.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::EventNotFound(_) => ErrorCode::EventNotFound,
            Self::AboveLimit { .. } | Self::WrongChoice(_) => ErrorCode::InvalidRequest,
            Self::SoldOut => ErrorCode::SoldOut,
            Self::ZoneSoldOut(_) => ErrorCode::ZoneSoldOut,
            Self::SeatTaken(_) => ErrorCode::SeatTaken,
            Self::UnknownSeats(_) => ErrorCode::UnknownSeat,
            Self::BlockedSeats(_) => ErrorCode::SeatBlocked,
            Self::LimitExceeded { .. } => ErrorCode::LimitExceeded,
            Self::KeyReused => ErrorCode::IdempotencyKeyReused,
            Self::InProgress => ErrorCode::RequestInProgress,
            Self::Unavailable(_) => ErrorCode::Unavailable,
        }
    }

    /// Seconds a client should wait before asking again, when asking again
    /// can change the answer.
    pub fn retry_after(&self) -> Option<u32> {
        matches!(self, Self::InProgress | Self::Unavailable(_)).then_some(1)
    }

    /// Its label on the `flashtix_orders_total` metric: the refusals an
    /// operator watches by name, the other mistakes of a request together.
    pub fn label(&self) -> &'static str {
        match self {
            Self::SoldOut
            | Self::SeatTaken(_)
            | Self::LimitExceeded { .. }
            | Self::Unavailable(_) => self.code().name(),
            // Counted with the event's own: both say "no places for this".
            Self::ZoneSoldOut(_) => "sold_out",
            Self::EventNotFound(_)
            | Self::AboveLimit { .. }
            | Self::UnknownSeats(_)
            | Self::BlockedSeats(_)
            | Self::WrongChoice(_)
            | Self::KeyReused
            | Self::InProgress => "rejected",
        }
    }

    /// The zone the refusal is about.
    pub fn zone(&self) -> Option<&str> {
        match self {
            Self::ZoneSoldOut(zone) => Some(zone),
            _ => None,
        }
    }

    /// The seats the refusal is about.
    pub fn seats(&self) -> &[String] {
        match self {
            Self::SeatTaken(seats) | Self::UnknownSeats(seats) | Self::BlockedSeats(seats) => seats,
            _ => &[],
        }
    }
}
