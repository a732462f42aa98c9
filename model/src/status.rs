//! Where an order is in its life: the vocabulary of the `orders.status`
//! column (its CHECK lists the same four words), of the API's answers and of
//! the saga's decisions.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An order's status. PENDING until it is paid (CONFIRMED), declined
/// (CANCELLED) or past its hold unpaid (EXPIRED); those three are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    Pending,
    Confirmed,
    Cancelled,
    Expired,
}

impl OrderStatus {
    /// Its word in the database and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Confirmed => "CONFIRMED",
            Self::Cancelled => "CANCELLED",
            Self::Expired => "EXPIRED",
        }
    }

    /// Whether the order holds its tickets (pending or sold).
    pub fn holds_tickets(self) -> bool {
        matches!(self, Self::Pending | Self::Confirmed)
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A word that is not an order status.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not an order status")]
pub struct UnknownStatus(String);

impl FromStr for OrderStatus {
    type Err = UnknownStatus;

    fn from_str(word: &str) -> Result<Self, Self::Err> {
        [
            Self::Pending,
            Self::Confirmed,
            Self::Cancelled,
            Self::Expired,
        ]
        .into_iter()
        .find(|status| status.as_str() == word)
        .ok_or_else(|| UnknownStatus(word.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_status_reads_back_from_its_word_and_nothing_else_does() {
        for status in [
            OrderStatus::Pending,
            OrderStatus::Confirmed,
            OrderStatus::Cancelled,
            OrderStatus::Expired,
        ] {
            assert_eq!(status.as_str().parse::<OrderStatus>().unwrap(), status);
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{status}\""));
        }
        assert!("pending".parse::<OrderStatus>().is_err());
        assert!("PAID".parse::<OrderStatus>().is_err());
    }
}
