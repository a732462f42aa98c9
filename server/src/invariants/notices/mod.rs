//! Notices, judged by what their receivers hold: the buyers' Maildir and
//! the organizer's webhook receiver's record (see [`received`]). The sale's
//! own tables say what each order ended as; the receivers say what people
//! were told.
//!
//! - `notices_true`: every mail tells its buyer an ending its order had.
//! - `notices_once`: one notice per order and ending; a resend under the
//!   same Message-ID is counted and reported, two ids are a FAIL.
//! - `notices_sent`: every ending was mailed within the grace.
//! - `webhooks_signed`: every delivery received verifies against its
//!   signature, and its body names the delivery it claims to be.
//! - `webhooks_delivered`: every ending of an event with a webhook was
//!   taken by the receiver, telling the truth; a dead-lettered delivery is
//!   a FAIL.
//!
//! A notice missing within the grace is UNKNOWN (it may be on its way), and
//! so is one missing while its receiver does not answer: waiting, not lost.

pub mod received;
mod webhooks;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use crate::notices::mail::buyer_address;
use crate::runtime::notify::SmtpServer;
use flashtix_model::notices::Ending;
use flashtix_model::report::{finding, Finding, Invariant, Verdict, EXAMPLES};
use received::Mail;

/// How long a notice may take, by default, before its absence is a FAIL.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// Where the notices' witnesses are, and how to read them.
#[derive(Clone)]
pub struct Receivers {
    /// The Maildir buyers' mail is delivered to.
    pub maildir: Option<PathBuf>,
    /// The mail server, to tell "not sent yet, the server is down" from lost.
    pub smtp: Option<SmtpServer>,
    /// The webhook receiver's record, and the secret deliveries are signed with.
    pub webhooks: Option<(PathBuf, Arc<[u8]>)>,
    /// The domain buyers are mailed at (as the notifications role was told).
    pub buyer_mail_domain: String,
    /// How long after its order ended a notice may still be missing.
    pub grace: Duration,
}

/// An order of the sale, and what it ended as.
pub(super) struct Order {
    buyer: String,
    /// `None` while PENDING.
    ended: Option<Ending>,
    /// Seconds since it ended.
    ended_ago: f64,
    /// Seconds since it was refunded, if it was.
    refunded_ago: Option<f64>,
    has_webhook: bool,
}

impl Order {
    /// Its endings, with how long ago each happened.
    fn endings(&self) -> Vec<(Ending, f64)> {
        let mut endings: Vec<(Ending, f64)> = self
            .ended
            .map(|e| (e, self.ended_ago))
            .into_iter()
            .collect();
        endings.extend(self.refunded_ago.map(|ago| (Ending::Refunded, ago)));
        endings
    }

    fn ended_so(&self, ending: Ending) -> bool {
        self.endings().iter().any(|(e, _)| *e == ending)
    }

    fn said(&self) -> String {
        let words: Vec<&str> = self.endings().iter().map(|(e, _)| e.name()).collect();
        if words.is_empty() {
            "is still PENDING".into()
        } else {
            format!("ended {}", words.join(" then "))
        }
    }
}

/// The notice invariants the receivers given can judge, in order.
pub async fn check(
    pool: &PgPool,
    receivers: &Receivers,
    event: Option<i64>,
) -> anyhow::Result<Vec<Finding>> {
    let orders = orders(pool, event).await?;
    let mut findings = Vec::new();
    if let Some(maildir) = &receivers.maildir {
        match received::mails(maildir) {
            Ok(mails) => {
                let mails: Vec<Mail> = mails
                    .into_iter()
                    .filter(|m| orders.contains_key(&m.order))
                    .collect();
                findings.push(notices_true(&mails, &orders, &receivers.buyer_mail_domain));
                findings.push(notices_once(&mails));
                let down = match &receivers.smtp {
                    Some(server) => !answers(&format!("{}:{}", server.host, server.port)).await,
                    None => false,
                };
                let recorded = recorded(pool).await?;
                let sent = notices_sent(&mails, &orders, &recorded, receivers.grace, down);
                findings.push(sent);
            }
            Err(error) => {
                let why = format!("the Maildir {} cannot be read: {error}", maildir.display());
                for invariant in [
                    Invariant::NoticesTrue,
                    Invariant::NoticesOnce,
                    Invariant::NoticesSent,
                ] {
                    findings.push(unknown(invariant, why.clone()));
                }
            }
        }
    }
    if let Some((record, secret)) = &receivers.webhooks {
        findings.extend(webhooks::check(pool, record, secret, &orders, receivers.grace).await?);
    }
    Ok(findings)
}

/// A finding that could not be judged, and why.
pub(super) fn unknown(invariant: Invariant, why: String) -> Finding {
    Finding {
        invariant,
        verdict: Verdict::Unknown,
        checked: 0,
        offending: 1,
        detail: why.clone(),
        examples: vec![why],
    }
}

/// UNKNOWN: nothing late, but `waiting` are not there yet, `why`.
pub(super) fn on_their_way(
    invariant: Invariant,
    checked: u64,
    waiting: Vec<String>,
    why: &str,
) -> Finding {
    Finding {
        invariant,
        verdict: Verdict::Unknown,
        checked,
        offending: waiting.len() as u64,
        detail: format!("{} {why}", waiting.len()),
        examples: waiting.into_iter().take(EXAMPLES).collect(),
    }
}

/// Every order of the sale (or of `event`), by id.
async fn orders(pool: &PgPool, event: Option<i64>) -> anyhow::Result<HashMap<Uuid, Order>> {
    let rows: Vec<(Uuid, String, String, bool, f64, Option<f64>)> = sqlx::query_as(
        "SELECT o.id, o.status, o.user_id, e.webhook_url IS NOT NULL,
                extract(epoch FROM now() - o.updated_at)::float8,
                (SELECT extract(epoch FROM now() - p.created_at)::float8 FROM payments p
                 WHERE p.order_id = o.id AND p.kind = 'REFUND' AND p.outcome = 'SUCCEEDED'
                 LIMIT 1)
         FROM orders o JOIN events e ON e.id = o.event_id
         WHERE $1::int8 IS NULL OR o.event_id = $1",
    )
    .bind(event)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(id, status, buyer, has_webhook, ended_ago, refunded_ago)| {
                let order = Order {
                    buyer,
                    ended: Ending::named(&status),
                    ended_ago,
                    refunded_ago,
                    has_webhook,
                };
                (id, order)
            },
        )
        .collect())
}

/// The mails the sale recorded as taken by the mail server.
async fn recorded(pool: &PgPool) -> anyhow::Result<HashSet<(Uuid, Ending)>> {
    let rows: Vec<(Uuid, String)> = sqlx::query_as("SELECT order_id, ending FROM notices")
        .fetch_all(pool)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(order, ending)| Some((order, Ending::named(&ending)?)))
        .collect())
}

/// Whether something listens at `address` (`host:port`), within a second.
pub(super) async fn answers(address: &str) -> bool {
    let connect = tokio::net::TcpStream::connect(address);
    matches!(
        tokio::time::timeout(Duration::from_secs(1), connect).await,
        Ok(Ok(_))
    )
}

fn notices_true(mails: &[Mail], orders: &HashMap<Uuid, Order>, domain: &str) -> Finding {
    let mut lies = Vec::new();
    for mail in mails {
        let order = &orders[&mail.order];
        if !order.ended_so(mail.ending) {
            lies.push(format!(
                "order {} {}, but mail {} told its buyer {}",
                mail.order,
                order.said(),
                mail.file,
                mail.ending
            ));
        }
        let buyer = buyer_address(&order.buyer, domain).to_string();
        if mail.to != buyer {
            lies.push(format!(
                "order {}: mail {} went to {}, not to its buyer {buyer}",
                mail.order, mail.file, mail.to
            ));
        }
    }
    finding(
        Invariant::NoticesTrue,
        mails.len() as u64,
        lies,
        "every mail told its buyer how the order really ended",
        "mails told buyers an ending their order did not have, or went to someone else",
    )
}

fn notices_once(mails: &[Mail]) -> Finding {
    let mut ids: BTreeMap<(Uuid, Ending), Vec<&str>> = BTreeMap::new();
    for mail in mails {
        ids.entry((mail.order, mail.ending))
            .or_default()
            .push(&mail.message_id);
    }
    let mut twice = Vec::new();
    let mut resent = 0;
    for ((order, ending), ids) in &ids {
        let distinct: HashSet<&&str> = ids.iter().collect();
        resent += ids.len() - distinct.len();
        if distinct.len() > 1 {
            twice.push(format!(
                "order {order}: {} {ending} notices under {} different Message-IDs",
                ids.len(),
                distinct.len()
            ));
        }
    }
    let mut found = finding(
        Invariant::NoticesOnce,
        ids.len() as u64,
        twice,
        "one notice per order and ending",
        "an order's buyer got two different notices of one ending",
    );
    if resent > 0 {
        found.detail.push_str(&format!(
            "; {resent} sent again under the same Message-ID (after a retry or a crash)"
        ));
    }
    found
}

/// `recorded`: the mails the sale holds as taken by the mail server; one of
/// those missing is lost, not waiting, however the server is now.
fn notices_sent(
    mails: &[Mail],
    orders: &HashMap<Uuid, Order>,
    recorded: &HashSet<(Uuid, Ending)>,
    grace: Duration,
    down: bool,
) -> Finding {
    let mailed: HashSet<(Uuid, Ending)> = mails.iter().map(|m| (m.order, m.ending)).collect();
    let (mut late, mut waiting, mut endings) = (Vec::new(), Vec::new(), 0u64);
    for (id, order) in orders {
        for (ending, ago) in order.endings() {
            endings += 1;
            if mailed.contains(&(*id, ending)) {
                continue;
            }
            let taken = recorded.contains(&(*id, ending));
            let missing = if taken {
                format!("order {id}: no {ending} mail {ago:.0} s after it ended so, though the sale holds it sent")
            } else {
                format!("order {id}: no {ending} mail {ago:.0} s after it ended so")
            };
            if ago > grace.as_secs_f64() && (!down || taken) {
                late.push(missing);
            } else {
                waiting.push(missing);
            }
        }
    }
    late.sort();
    waiting.sort();
    if late.is_empty() && !waiting.is_empty() {
        let why = if down {
            "not mailed yet; the mail server does not answer: notices wait for it"
        } else {
            "not mailed yet; notices on their way (within the grace)"
        };
        return on_their_way(Invariant::NoticesSent, endings, waiting, why);
    }
    finding(
        Invariant::NoticesSent,
        endings,
        late,
        &format!(
            "every ending mailed to its buyer within {} s",
            grace.as_secs()
        ),
        &format!(
            "endings not mailed {} s after they happened",
            grace.as_secs()
        ),
    )
}

#[cfg(test)]
mod tests;
