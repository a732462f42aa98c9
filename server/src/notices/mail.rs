//! A buyer's mail: written from what the notice says, sent over SMTP to the
//! sale's mail server.
//!
//! Its Message-ID is the notice's stable name (`<ORDER.ENDING@DOMAIN>`), so
//! a mail sent again after a crash is recognisably the same mail. Two
//! headers say what it is about for a machine: `X-Flashtix-Order` and
//! `X-Flashtix-Ending`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::Mailbox;
use lettre::transport::smtp::PoolConfig;
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use uuid::Uuid;

use crate::known_bad::{self, Bug};
use crate::runtime::notify::SmtpServer;
use flashtix_model::notices::{notice_id, Ending};

/// The header naming the order a mail is about.
pub const ORDER_HEADER: &str = "X-Flashtix-Order";
/// The header naming how it ended.
pub const ENDING_HEADER: &str = "X-Flashtix-Ending";
/// Mails sent at once, over as many connections.
pub const MAILS_AT_ONCE: usize = 16;
/// How long one SMTP exchange may take before it counts as failed.
const SMTP_TIMEOUT: Duration = Duration::from_secs(10);

/// What a notice tells: the order, how it ended, and what the buyer bought.
#[derive(Debug, Clone)]
pub struct Notice {
    pub order_id: Uuid,
    pub ending: Ending,
    /// Who bought it: the subject of their token.
    pub buyer: String,
    pub event_id: i64,
    pub event_name: String,
    pub quantity: i32,
    pub amount_cents: i64,
    pub seats: Vec<String>,
    /// When the order ended so (for a refund: when it was refunded).
    pub settled_at: DateTime<Utc>,
    /// Where the event's organizer is told, if anywhere.
    pub webhook_url: Option<String>,
}

/// Why a mail was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotSent {
    pub why: String,
    /// The mail server refused it for good (a 5xx), or it could not be
    /// written: trying again changes nothing.
    pub for_good: bool,
}

/// Sends buyers' mails through one mail server.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    buyer_domain: String,
}

impl Mailer {
    pub fn new(server: &SmtpServer, from: &str, buyer_domain: &str) -> anyhow::Result<Self> {
        let from: Address = from
            .parse()
            .map_err(|e| anyhow::anyhow!("--mail-from {from:?}: {e}"))?;
        let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&server.host)
            .port(server.port)
            .timeout(Some(SMTP_TIMEOUT))
            .pool_config(PoolConfig::new().max_size(MAILS_AT_ONCE as u32))
            .build();
        Ok(Self {
            transport,
            from: Mailbox::new(Some("flashtix tickets".into()), from),
            buyer_domain: buyer_domain.to_owned(),
        })
    }

    /// Sends the notice's mail; an error says why it was not taken, and
    /// whether trying again could change that.
    pub async fn send(&self, notice: &Notice) -> Result<(), NotSent> {
        let message = self.compose(notice).map_err(|error| NotSent {
            why: format!("{error:#}"),
            for_good: true,
        })?;
        self.transport
            .send(message)
            .await
            .map_err(|error| NotSent {
                for_good: error.is_permanent(),
                why: error.to_string(),
            })?;
        Ok(())
    }

    /// The mail of a notice.
    pub fn compose(&self, notice: &Notice) -> anyhow::Result<Message> {
        let id = notice_id(notice.order_id, notice.ending);
        let id = if known_bad::has(Bug::NewMessageIdPerSend) {
            format!("{id}.{}", Uuid::now_v7().simple())
        } else {
            id
        };
        let to = Mailbox::new(None, buyer_address(&notice.buyer, &self.buyer_domain));
        let mut message = Message::builder()
            .message_id(Some(format!("<{id}@{}>", self.from.email.domain())))
            .from(self.from.clone())
            .to(to)
            .date_now()
            .subject(subject(notice))
            .body(body(notice))?;
        let headers = message.headers_mut();
        for (name, value) in [
            (ORDER_HEADER, notice.order_id.to_string()),
            (ENDING_HEADER, notice.ending.name().to_owned()),
        ] {
            headers.insert_raw(HeaderValue::new(
                HeaderName::new_from_ascii_str(name),
                value,
            ));
        }
        Ok(message)
    }
}

/// Where a buyer is mailed: their subject, when it is an address itself;
/// else SUBJECT@DOMAIN; a subject no address can hold is spelled in hex.
pub fn buyer_address(subject: &str, domain: &str) -> Address {
    if let Ok(address) = subject.parse::<Address>() {
        return address;
    }
    Address::new(subject, domain).unwrap_or_else(|_| {
        let hex: String = subject.bytes().map(|b| format!("{b:02x}")).collect();
        Address::new_dangerous(format!("x{hex}"), domain)
    })
}

fn subject(notice: &Notice) -> String {
    let what = match notice.ending {
        Ending::Confirmed => "your tickets are confirmed",
        Ending::Cancelled => "your order was cancelled",
        Ending::Expired => "your hold ran out",
        Ending::Refunded => "your payment was refunded",
    };
    format!("{}: {what}", notice.event_name)
}

fn body(notice: &Notice) -> String {
    let tickets = match notice.quantity {
        1 => "1 ticket".to_owned(),
        n => format!("{n} tickets"),
    };
    let price = format!(
        "{}.{:02}",
        notice.amount_cents / 100,
        notice.amount_cents % 100
    );
    let what = match notice.ending {
        Ending::Confirmed => format!("Your order of {tickets} is paid ({price}) and yours."),
        Ending::Cancelled => format!(
            "Your payment of {price} was declined, so your order of {tickets} is cancelled. \
             Nothing was charged."
        ),
        Ending::Expired => format!(
            "Your order of {tickets} was not paid in time, so its hold ran out and the tickets \
             went back on sale. Nothing was charged."
        ),
        Ending::Refunded => format!(
            "Your payment of {price} came after your order's hold ran out. It has been \
             refunded in full."
        ),
    };
    let mut text = format!("{what}\n\nOrder: {}\n", notice.order_id);
    if !notice.seats.is_empty() && notice.ending == Ending::Confirmed {
        text.push_str(&format!("Seats: {}\n", notice.seats.join(", ")));
    }
    text.push_str(&format!(
        "Event: {} (#{})\nSettled: {}\n",
        notice.event_name,
        notice.event_id,
        notice.settled_at.to_rfc3339()
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(ending: Ending) -> Notice {
        Notice {
            order_id: Uuid::now_v7(),
            ending,
            buyer: "buyer-17".into(),
            event_id: 3,
            event_name: "Ninth Symphony".into(),
            quantity: 2,
            amount_cents: 5050,
            seats: vec!["A-1-1".into(), "A-1-2".into()],
            settled_at: Utc::now(),
            webhook_url: None,
        }
    }

    fn mailer() -> Mailer {
        let server = SmtpServer {
            host: "127.0.0.1".into(),
            port: 25,
        };
        Mailer::new(&server, "tickets@flashtix.test", "buyers.test").unwrap()
    }

    // The transport's pool needs a runtime, though nothing is sent.
    #[tokio::test]
    async fn a_mail_names_its_notice_the_same_each_time_and_says_what_happened() {
        let notice = notice(Ending::Confirmed);
        let first = String::from_utf8(mailer().compose(&notice).unwrap().formatted()).unwrap();
        let again = String::from_utf8(mailer().compose(&notice).unwrap().formatted()).unwrap();
        let id = format!("Message-ID: <{}.confirmed@flashtix.test>", notice.order_id);
        assert!(first.contains(&id), "{first}");
        assert!(again.contains(&id), "{again}");
        assert!(first.contains("To: buyer-17@buyers.test"), "{first}");
        assert!(first.contains(&format!("X-Flashtix-Order: {}", notice.order_id)));
        assert!(first.contains("X-Flashtix-Ending: CONFIRMED"));
        assert!(first.contains("Seats: A-1-1, A-1-2"), "{first}");
        assert!(first.contains("50.50"), "{first}");
        let refunded = mailer().compose(&self::notice(Ending::Refunded)).unwrap();
        let refunded = String::from_utf8(refunded.formatted()).unwrap();
        assert!(refunded.contains("refunded"), "{refunded}");
        assert!(!refunded.contains("Seats:"), "{refunded}");
    }

    #[test]
    fn a_buyer_is_mailed_at_their_subject_and_an_odd_subject_still_gets_an_address() {
        assert_eq!(
            buyer_address("buyer-1", "b.test").to_string(),
            "buyer-1@b.test"
        );
        assert_eq!(
            buyer_address("ann@example.org", "b.test").to_string(),
            "ann@example.org"
        );
        assert_eq!(buyer_address("a b", "b.test").to_string(), "x612062@b.test");
    }
}
