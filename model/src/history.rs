//! The client's ledger of a storm: one JSON object a line, one line per attempt
//! (a buy request sent, retried or duplicated). `flashtix storm --history FILE`
//! writes it; `flashtix check --history FILE` proves from it that no accepted
//! order was lost and no order appeared, while it was written, that nobody
//! asked for.
//!
//! ```json
//! {"attempt": 17, "event_id": 1, "user_id": "u-17", "idempotency_key": "k-17",
//!  "quantity": 1, "sent_at": "2026-11-21T14:00:00.000Z",
//!  "finished_at": "2026-11-21T14:00:00.004Z", "outcome": "accepted",
//!  "status": 202, "order_id": "01a1fe6a-3f05-75e4-b3f8-ae968f7db7b5"}
//! ```
//!
//! `outcome` is one of `accepted`, `replayed`, `sold_out` (also a zone's,
//! `zone_sold_out`), `seat_taken`, `limit_exceeded`,
//! `rejected` (other 4xx), `in_progress` (`409 request_in_progress`), `error`
//! (5xx), `unreadable` (a 2xx whose body could not be read as an order),
//! `timeout`, `connect_error`; `status` is absent when no answer came,
//! `order_id` present for `accepted` and `replayed`, and `seats` when the
//! answer named seats (the order's, or the ones `seat_taken` said were gone).
//! What the request asked for, past a count, is there too: `asked_seats`
//! (the seats it named) or `asked_zone`; and what a `202` said it costs,
//! `amount_cents`. An attempt without a
//! definite answer (`in_progress`, `error`, `unreadable`, `timeout`,
//! `connect_error`) is "unknown": its order may or may not exist, and `check`
//! says which, without calling it an error.

use std::io::BufRead;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

crate::named! {
    /// What one attempt came to, as the client saw it.
    pub enum Outcome("an attempt's outcome") {
        Accepted = "accepted",
        Replayed = "replayed",
        SoldOut = "sold_out",
        /// `409 seat_taken`: a seat it named was gone.
        SeatTaken = "seat_taken",
        LimitExceeded = "limit_exceeded",
        Rejected = "rejected",
        /// `409 request_in_progress`: another request with the key was still
        /// being worked on. Says nothing about the order.
        InProgress = "in_progress",
        Error = "error",
        /// A 2xx whose body could not be read as an order: it may be one, or not.
        Unreadable = "unreadable",
        Timeout = "timeout",
        ConnectError = "connect_error",
    }
}

impl Outcome {
    /// The server answered, and the answer says whether an order exists.
    pub fn is_definite(self) -> bool {
        !matches!(
            self,
            Self::InProgress | Self::Error | Self::Unreadable | Self::Timeout | Self::ConnectError
        )
    }

    /// No answer the client could use: an error, a timeout, a body it could
    /// not read. (`in_progress` is an answer: try later.)
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Self::Error | Self::Unreadable | Self::Timeout | Self::ConnectError
        )
    }

    /// The answer says the key has no order: it was refused for stock, a
    /// seat or the limit.
    pub fn is_refusal(self) -> bool {
        matches!(self, Self::SoldOut | Self::SeatTaken | Self::LimitExceeded)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub attempt: u64,
    pub event_id: i64,
    pub user_id: String,
    pub idempotency_key: String,
    pub quantity: i64,
    pub sent_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<Uuid>,
    /// The seats an `accepted` or `replayed` answer named, or those a
    /// `seat_taken` answer said were gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seats: Option<Vec<String>>,
    /// The seats the request named, if it named seats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asked_seats: Option<Vec<String>>,
    /// The zone the request asked for (the server picking the places), if it
    /// named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asked_zone: Option<String>,
    /// What an `accepted` or `replayed` answer said the order costs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_cents: Option<i64>,
}

impl Attempt {
    /// Whether it was made on `event` (every event: `None`).
    pub fn on(&self, event: Option<i64>) -> bool {
        event.is_none_or(|only| only == self.event_id)
    }

    /// Whose it was, as reports name it: `event 1 user "ann" key "k-1"`.
    pub fn who(&self) -> String {
        format!(
            "event {} user {:?} key {:?}",
            self.event_id, self.user_id, self.idempotency_key
        )
    }

    /// When it was in flight, on the client's clock: `between 14:00:00.000
    /// and 14:00:00.004`.
    pub fn flight(&self) -> String {
        format!(
            "between {} and {}",
            self.sent_at.format("%H:%M:%S%.3f"),
            self.finished_at.format("%H:%M:%S%.3f")
        )
    }
}

/// A history file that could not be read, naming the file (and the line).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: not a history line: {source}")]
    NotALine {
        path: String,
        line: usize,
        source: serde_json::Error,
    },
}

/// Reads several history files as one (the shards of one storm).
pub fn read_all(paths: &[impl AsRef<Path>]) -> Result<Vec<Attempt>, ReadError> {
    let mut attempts = Vec::new();
    for path in paths {
        attempts.extend(read(path.as_ref())?);
    }
    Ok(attempts)
}

/// Reads a history file; a line that is not an attempt is an error naming it.
pub fn read(path: &Path) -> Result<Vec<Attempt>, ReadError> {
    let io = |source| ReadError::Io {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut attempts = Vec::new();
    for (number, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        let attempt = serde_json::from_str(&line).map_err(|source| ReadError::NotALine {
            path: path.display().to_string(),
            line: number + 1,
            source,
        })?;
        attempts.push(attempt);
    }
    Ok(attempts)
}
