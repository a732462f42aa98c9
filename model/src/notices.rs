//! What a buyer and an organizer are told when an order ends: the ending,
//! and the names every notice of it carries, the same however often it is
//! sent, so a resend is recognisably the same notice.

crate::named! {
    /// How an order ended, as a notice tells it. An order ends CONFIRMED,
    /// CANCELLED or EXPIRED; one whose payment came after it ended is also
    /// REFUNDED (a second notice, after the first).
    #[derive(PartialOrd, Ord)]
    pub enum Ending("an order's ending") {
        Confirmed = "CONFIRMED",
        Cancelled = "CANCELLED",
        Expired = "EXPIRED",
        Refunded = "REFUNDED",
    }
}

impl Ending {
    /// Its word in lower case, as the mail's subject line and the webhook's
    /// event type use it.
    pub fn word(self) -> &'static str {
        match self {
            Self::Confirmed => "confirmed",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
            Self::Refunded => "refunded",
        }
    }
}

/// The stable name of the notice of `order`'s `ending`: a mail's Message-ID
/// (between angle brackets, at the sender's domain) and a webhook's delivery
/// id are made from it.
pub fn notice_id(order: uuid::Uuid, ending: Ending) -> String {
    format!("{order}.{}", ending.word())
}

/// The order and ending a [`notice_id`] names, if it is one.
pub fn parse_notice_id(id: &str) -> Option<(uuid::Uuid, Ending)> {
    let (order, word) = id.split_once('.')?;
    let ending = Ending::ALL.into_iter().find(|e| e.word() == word)?;
    Some((order.parse().ok()?, ending))
}

/// The headers of a webhook delivery: its stable id, when it was signed
/// (Unix seconds), and the signature, `v1=` and the HMAC-SHA256 in hex of
/// `"{timestamp}.{body}"` under the sale's webhook secret.
pub const DELIVERY_HEADER: &str = "flashtix-delivery";
pub const TIMESTAMP_HEADER: &str = "flashtix-timestamp";
pub const SIGNATURE_HEADER: &str = "flashtix-signature";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_id_names_its_order_and_ending_and_nothing_else_parses() {
        let order = uuid::Uuid::now_v7();
        for ending in Ending::ALL {
            let id = notice_id(order, ending);
            assert_eq!(parse_notice_id(&id), Some((order, ending)));
        }
        assert_eq!(parse_notice_id(&format!("{order}.paid")), None);
        assert_eq!(parse_notice_id("not-a-uuid.confirmed"), None);
        assert_eq!(parse_notice_id("confirmed"), None);
    }
}
