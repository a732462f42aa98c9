//! The notifications worker: takes `order.settled` and tells each buyer by
//! mail, and queues the organizer's webhook delivery.
//!
//! For a batch of entries, in order:
//! 1. one query reads each notice's order, event and whether its mail was
//!    sent before (a `notices` row);
//! 2. one statement queues the organizers' webhook deliveries
//!    (`webhook_deliveries`, once per notice), which go out on their own;
//! 3. the mails not sent before are sent, [`MAILS_AT_ONCE`] at a time;
//! 4. one statement records the mails sent (`notices`);
//! 5. the consumer acknowledges the message only after that commits.
//!
//! A mail the server did not take is retried with its message; those sent
//! are not sent again. One refused for good (a 5xx) is dead-lettered alone. A crash between a mail's sending and its record means
//! one resend, under the same Message-ID, which a receiver can tell.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::stream::{self, StreamExt};
use sqlx::PgPool;
use uuid::Uuid;

use super::mail::{Mailer, NotSent, Notice, MAILS_AT_ONCE};
use crate::known_bad::{self, Bug};
use crate::runtime::metrics::Metrics;
use crate::saga::consumer::{answers, Handled, Handler};
use crate::saga::messages::{OrderSettled, ORDER_SETTLED};
use flashtix_model::notices::{notice_id, Ending};

pub struct NotificationWorker {
    pool: PgPool,
    /// `None`: no mail server is configured; notices are counted, not sent.
    mailer: Option<Arc<Mailer>>,
    metrics: Arc<Metrics>,
}

/// A notice of the batch, as read from Postgres.
#[derive(Clone)]
struct Read {
    notice: Notice,
    /// Its mail was sent and recorded before.
    mailed: bool,
}

/// What became of one notice's mail.
#[derive(Clone, PartialEq, Eq)]
enum Mailed {
    Sent,
    Before,
    Off,
    /// Not taken, and why.
    Failed(NotSent),
}

impl NotificationWorker {
    pub fn new(pool: PgPool, mailer: Option<Mailer>, metrics: Arc<Metrics>) -> Self {
        Self {
            pool,
            mailer: mailer.map(Arc::new),
            metrics,
        }
    }

    /// Sends the mails of the notices not mailed before; one fate each.
    async fn mail_all(
        &self,
        notices: &HashMap<(Uuid, Ending), Read>,
    ) -> HashMap<(Uuid, Ending), Mailed> {
        let Some(mailer) = &self.mailer else {
            return notices.keys().map(|key| (*key, Mailed::Off)).collect();
        };
        let mut fates: HashMap<(Uuid, Ending), Mailed> = HashMap::with_capacity(notices.len());
        let mut unsent = Vec::new();
        for (key, read) in notices {
            if read.mailed {
                fates.insert(*key, Mailed::Before);
            } else {
                unsent.push((*key, read.notice.clone()));
            }
        }
        let sent: Vec<((Uuid, Ending), Mailed)> = stream::iter(unsent)
            .map(|(key, notice)| {
                let mailer = Arc::clone(mailer);
                async move {
                    match mailer.send(&notice).await {
                        Ok(()) => (key, Mailed::Sent),
                        Err(not_sent) => (key, Mailed::Failed(not_sent)),
                    }
                }
            })
            .buffer_unordered(MAILS_AT_ONCE)
            .collect()
            .await;
        fates.extend(sent);
        fates
    }

    /// The known-bad worker: records every notice as mailed, then sends in
    /// the background, after its message is acknowledged.
    fn mail_after_ack(
        &self,
        notices: HashMap<(Uuid, Ending), Read>,
    ) -> HashMap<(Uuid, Ending), Mailed> {
        let fates = notices
            .iter()
            .map(|(key, read)| {
                (
                    *key,
                    if read.mailed {
                        Mailed::Before
                    } else {
                        Mailed::Sent
                    },
                )
            })
            .collect();
        if let Some(mailer) = self.mailer.clone() {
            tokio::spawn(async move {
                for read in notices.values().filter(|read| !read.mailed) {
                    let _ = mailer.send(&read.notice).await;
                }
            });
        }
        fates
    }

    fn count(
        &self,
        notices: &HashMap<(Uuid, Ending), Read>,
        fates: &HashMap<(Uuid, Ending), Mailed>,
    ) {
        let now = Utc::now();
        for (key, fate) in fates {
            let result = match fate {
                Mailed::Sent => "sent",
                Mailed::Before => "sent_before",
                Mailed::Off => "off",
                Mailed::Failed(_) => "failed",
            };
            self.metrics.notice("mail", result);
            if *fate == Mailed::Sent {
                let waited = (now - notices[key].notice.settled_at)
                    .to_std()
                    .unwrap_or_default();
                self.metrics.notice_mailed(waited);
            }
        }
    }
}

impl Handler for NotificationWorker {
    const NAME: &'static str = "notifications";
    const TOPIC: &'static str = ORDER_SETTLED;

    type Entry = OrderSettled;

    async fn handle(&self, entries: Vec<OrderSettled>) -> Vec<Handled> {
        let keys: Vec<(Uuid, Ending)> = entries.iter().map(|e| (e.order_id, e.ending)).collect();
        let notices = match read(&self.pool, &keys).await {
            Ok(notices) => notices,
            Err(error) => return retry_all(entries.len(), &error),
        };
        // The organizers' deliveries first: they go out on their own, and
        // need not wait for the mail server.
        if let Err(error) = queue_webhooks(&self.pool, &notices).await {
            return retry_all(entries.len(), &error);
        }
        let fates = if known_bad::has(Bug::AckBeforeSend) {
            let fates = self.mail_after_ack(notices.iter().map(|(k, r)| (*k, r.clone())).collect());
            self.count(&notices, &fates);
            fates
        } else {
            let fates = self.mail_all(&notices).await;
            self.count(&notices, &fates);
            fates
        };
        if let Err(error) = record(&self.pool, &fates).await {
            return retry_all(entries.len(), &error);
        }
        let mut slots = Vec::with_capacity(keys.len());
        let mut seen = std::collections::HashSet::new();
        for key in &keys {
            let handled = match fates.get(key) {
                None => Handled::Poison(format!("order.settled for unknown order {}", key.0)),
                Some(_) if !seen.insert(*key) => Handled::Duplicate,
                Some(Mailed::Sent | Mailed::Off) => Handled::Done,
                Some(Mailed::Before) => Handled::Duplicate,
                // Refused for good: dead-lettered alone, naming its order,
                // so the rest of its message goes on.
                Some(Mailed::Failed(not_sent)) if not_sent.for_good => Handled::Poison(format!(
                    "the mail of {} {} was refused for good: {}",
                    key.0, key.1, not_sent.why
                )),
                Some(Mailed::Failed(not_sent)) => Handled::Retry(anyhow::anyhow!(
                    "the mail server did not take the mail: {}",
                    not_sent.why
                )),
            };
            slots.push(Some(handled));
        }
        answers(slots)
    }
}

fn retry_all(entries: usize, error: &sqlx::Error) -> Vec<Handled> {
    (0..entries)
        .map(|_| Handled::Retry(anyhow::anyhow!("reading or recording notices: {error}")))
        .collect()
}

/// Reads the batch's notices in one query: each order with its event, when
/// it ended so, and whether its mail was recorded sent.
async fn read(
    pool: &PgPool,
    keys: &[(Uuid, Ending)],
) -> sqlx::Result<HashMap<(Uuid, Ending), Read>> {
    let orders: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
    let endings: Vec<&str> = keys.iter().map(|k| k.1.name()).collect();
    type Row = (
        Uuid,
        String,
        String,
        i64,
        String,
        i32,
        i64,
        Vec<String>,
        Option<String>,
        DateTime<Utc>,
        bool,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT DISTINCT ON (n.order_id, n.ending)
                n.order_id, n.ending, o.user_id, o.event_id, e.name, o.quantity, o.amount_cents,
                coalesce(o.seats, '{}'), e.webhook_url,
                CASE n.ending
                    WHEN 'REFUNDED' THEN coalesce(
                        (SELECT p.created_at FROM payments p
                         WHERE p.order_id = o.id AND p.kind = 'REFUND'), o.updated_at)
                    ELSE o.updated_at END,
                EXISTS (SELECT 1 FROM notices s
                        WHERE s.order_id = n.order_id AND s.ending = n.ending)
         FROM unnest($1::uuid[], $2::text[]) AS n(order_id, ending)
         JOIN orders o ON o.id = n.order_id
         JOIN events e ON e.id = o.event_id",
    )
    .bind(&orders)
    .bind(&endings)
    .fetch_all(pool)
    .await?;
    let mut read = HashMap::with_capacity(rows.len());
    for row in rows {
        let (order_id, ending, buyer, event_id, event_name, quantity, amount_cents) =
            (row.0, row.1, row.2, row.3, row.4, row.5, row.6);
        let ending = Ending::named(&ending)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown ending {ending}").into()))?;
        let notice = Notice {
            order_id,
            ending,
            buyer,
            event_id,
            event_name,
            quantity,
            amount_cents,
            seats: row.7,
            webhook_url: row.8,
            settled_at: row.9,
        };
        read.insert(
            (order_id, ending),
            Read {
                notice,
                mailed: row.10,
            },
        );
    }
    Ok(read)
}

/// Queues the webhook delivery of every notice of an event with a webhook
/// (once per notice: its id is the notice's).
async fn queue_webhooks(
    pool: &PgPool,
    notices: &HashMap<(Uuid, Ending), Read>,
) -> sqlx::Result<()> {
    let mut hooks: (Vec<String>, Vec<Uuid>, Vec<String>, Vec<String>) = Default::default();
    for read in notices.values() {
        let notice = &read.notice;
        if let Some(url) = &notice.webhook_url {
            hooks.0.push(notice_id(notice.order_id, notice.ending));
            hooks.1.push(notice.order_id);
            hooks.2.push(url.clone());
            hooks.3.push(super::webhooks::body(notice));
        }
    }
    if hooks.0.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, order_id, url, body)
         SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[])
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&hooks.0)
    .bind(&hooks.1)
    .bind(&hooks.2)
    .bind(&hooks.3)
    .execute(pool)
    .await?;
    Ok(())
}

/// Records the mails sent, in one statement.
async fn record(pool: &PgPool, fates: &HashMap<(Uuid, Ending), Mailed>) -> sqlx::Result<()> {
    let mut mailed: (Vec<Uuid>, Vec<&str>) = (Vec::new(), Vec::new());
    for (key, fate) in fates {
        if *fate == Mailed::Sent {
            mailed.0.push(key.0);
            mailed.1.push(key.1.name());
        }
    }
    if mailed.0.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO notices (order_id, ending)
         SELECT * FROM unnest($1::uuid[], $2::text[])
         ON CONFLICT DO NOTHING",
    )
    .bind(&mailed.0)
    .bind(&mailed.1)
    .execute(pool)
    .await?;
    Ok(())
}
