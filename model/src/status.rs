//! Where an order is in its life: the vocabulary of the `orders.status`
//! column (its CHECK lists the same four words), of the API's answers and of
//! the saga's decisions.

crate::named! {
    /// An order's status. PENDING until it is paid (CONFIRMED), declined
    /// (CANCELLED) or past its hold unpaid (EXPIRED); those three are final.
    pub enum OrderStatus("an order status") {
        Pending = "PENDING",
        Confirmed = "CONFIRMED",
        Cancelled = "CANCELLED",
        Expired = "EXPIRED",
    }
}

/// The statuses that hold tickets, as SQL writes the list, for
/// `status IN holds_tickets!()`; built into queries with `concat!`. A test
/// holds it to [`OrderStatus::holds_tickets`].
#[macro_export]
macro_rules! holds_tickets {
    () => {
        "('PENDING', 'CONFIRMED')"
    };
}

impl OrderStatus {
    /// Its word in the database and the API.
    pub const fn as_str(self) -> &'static str {
        self.name()
    }

    /// Whether the order holds its tickets (pending or sold).
    pub fn holds_tickets(self) -> bool {
        matches!(self, Self::Pending | Self::Confirmed)
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

    #[test]
    fn the_sql_list_of_holding_statuses_is_the_one_the_type_gives() {
        let holding: Vec<String> = OrderStatus::ALL
            .iter()
            .filter(|status| status.holds_tickets())
            .map(|status| format!("'{status}'"))
            .collect();
        assert_eq!(crate::holds_tickets!(), format!("({})", holding.join(", ")));
    }
}
