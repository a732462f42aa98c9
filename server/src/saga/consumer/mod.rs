//! Consuming a queue: manual acks, only after the handler's effects committed.
//!
//! A message is a batch of entries, one per order (see [`crate::saga::messages`]).
//! Every entry waiting (the deliveries already here, up to the prefetch count)
//! goes to the handler at once, so it can settle them in one transaction; one
//! per message capped the saga near 1,400 messages/s per worker.
//!
//! A handler answers each entry with [`Handled`]. A message whose entries are
//! all `Done` or `Duplicate` has the outbox rows it carries recorded in
//! `processed_messages` (the proof `check` reads), and is acked. `Retry` (the database, Redis or the provider away)
//! keeps the whole message, unacknowledged, and hands it to the handler again
//! after a pause that doubles from [`RETRY_PAUSE`] to [`RETRY_PAUSE_MAX`]; the
//! entries done meanwhile are duplicates then. Kept, not given back: an outage
//! of any length spends none of the message's deliveries, so it never reaches
//! the queue's delivery limit for a fault that is not its own (the broker
//! counts deliveries only when a consumer dies holding it). `Poison` (it can
//! never succeed: undecodable, unknown order) is published alone to the
//! dead-letter exchange, naming its order, and the rest of its message goes on;
//! a message with no id or no batch body is rejected whole to the same place.
//!
//! Handlers are idempotent per order (a payment is recorded once per order, an
//! order is settled only while PENDING), so a redelivered or republished
//! message changes nothing twice. Deliveries are read from the consumer's
//! stream, in the broker's order, so a batch whose messages were all settled,
//! with none held, is acknowledged by one `multiple` ack: every delivery before
//! it on the channel is settled already.

mod letter;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions,
    ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::Channel;
use serde::de::DeserializeOwned;
use sqlx::PgPool;
use uuid::Uuid;

use crate::known_bad::{self, Bug};
use crate::runtime::metrics::Metrics;
use crate::runtime::stop::Stop;
use crate::saga::broker::{close, within, Reconnect, Topology};
pub use letter::REASON_HEADER;
use letter::{Fate, Letter};

/// The first pause before messages that failed are handled again.
pub const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// The longest pause between two tries.
pub const RETRY_PAUSE_MAX: Duration = Duration::from_secs(2);
/// Messages handled at once per consumer.
const PREFETCH: u16 = 256;
/// Bodies handled at once, at most (past the first message): a message holds
/// up to a writer batch of entries, so the prefetch alone does not bound a
/// handler's transaction.
const BATCH_BYTES: usize = 1 << 20;

pub enum Handled {
    Done,
    /// Handled before (the same order's payment recorded, or its order
    /// settled): nothing done again.
    Duplicate,
    Retry(anyhow::Error),
    Poison(String),
}

impl Handled {
    /// Its label on the `flashtix_messages_total` metric.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::Duplicate => "duplicate",
            Self::Retry(_) => "retry",
            Self::Poison(_) => "poison",
        }
    }
}

pub trait Handler: Send + Sync + 'static {
    /// The consumer's name: for logs, metrics and `processed_messages`.
    const NAME: &'static str;
    /// The topic whose queue it consumes.
    const TOPIC: &'static str;
    /// One order's entry in a message of the topic.
    type Entry: DeserializeOwned + Send + 'static;
    /// Handles the entries of a batch of messages; answers one [`Handled`] per
    /// entry, in order. The same order may come more than once.
    fn handle(&self, entries: Vec<Self::Entry>) -> impl Future<Output = Vec<Handled>> + Send;
}

/// A batch's answers while a handler fills them in, one slot per entry.
pub type Slots = Vec<Option<Handled>>;

/// One answer per entry; a slot a handler left empty is retried, not lost.
pub fn answers(slots: Slots) -> Vec<Handled> {
    slots
        .into_iter()
        .map(|slot| slot.unwrap_or_else(|| Handled::Retry(anyhow::anyhow!("entry left unhandled"))))
        .collect()
}

/// Consumes until a stop is requested, reconnecting to RabbitMQ whenever the
/// connection breaks.
pub async fn run<H: Handler>(
    handler: Arc<H>,
    pool: PgPool,
    amqp_url: String,
    topology: Topology,
    metrics: Arc<Metrics>,
    mut stop: Stop,
) {
    let mut reconnect = Reconnect::new(H::NAME);
    loop {
        let session = consume(
            &handler,
            &pool,
            &amqp_url,
            &topology,
            &metrics,
            &mut reconnect,
            &mut stop,
        );
        let Err(error) = session.await else {
            return;
        };
        if !reconnect.failed(error, &mut stop).await {
            return;
        }
    }
}

/// Consumes until something breaks or a stop is requested. On a stop the batch
/// being handled is finished and settled; deliveries not yet handled go back
/// to the queue when the connection closes.
async fn consume<H: Handler>(
    handler: &Arc<H>,
    pool: &PgPool,
    amqp_url: &str,
    topology: &Topology,
    metrics: &Arc<Metrics>,
    reconnect: &mut Reconnect,
    stop: &mut Stop,
) -> anyhow::Result<()> {
    let tag = format!("flashtix-{}", H::NAME);
    let (connection, channel, mut consumer) = subscribe(amqp_url, topology, H::TOPIC, &tag).await?;
    reconnect.connected();
    // Messages that failed for a passing reason, waiting to be tried again.
    let mut waiting: Vec<Delivery> = Vec::new();
    let mut pause = RETRY_PAUSE;
    loop {
        let deliveries = if waiting.is_empty() {
            tokio::select! {
                batch = next_batch(&mut consumer) => batch?,
                () = stop.until_requested() => break,
            }
        } else {
            if !stop.pause(pause).await {
                break;
            }
            pause = (pause * 2).min(RETRY_PAUSE_MAX);
            // With whatever arrived meanwhile: one try for all of them.
            let mut batch = std::mem::take(&mut waiting);
            take_arrived(&mut consumer, &mut batch)?;
            batch
        };
        let Some(fates) = handle::<H>(handler, &deliveries, metrics).await? else {
            continue;
        };
        let fates = conclude::<H>(pool, &channel, topology, fates).await?;
        let failure = settle_batch(H::NAME, deliveries, fates, &mut waiting).await?;
        match failure {
            // One line when a streak of failures begins, one when it ends.
            Some(error) if pause == RETRY_PAUSE => tracing::warn!(
                consumer = H::NAME,
                messages = waiting.len(),
                error = format!("{error:#}"),
                "messages failed; holding them and trying again"
            ),
            Some(_) => {}
            None if pause > RETRY_PAUSE => {
                tracing::info!(consumer = H::NAME, "messages flow again");
                pause = RETRY_PAUSE;
            }
            None => {}
        }
    }
    // Answered only once the broker has taken the acknowledgements sent before
    // it; no deliveries after it. What is still held goes back to the queue.
    let cancel = channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default());
    let _ = within("cancelling the consumer", cancel).await;
    close(&connection, &channel).await;
    Ok(())
}

/// A channel with publisher confirms (for dead letters) and the prefetch,
/// consuming `topic`'s queue as `tag`.
async fn subscribe(
    amqp_url: &str,
    topology: &Topology,
    topic: &str,
    tag: &str,
) -> anyhow::Result<(lapin::Connection, Channel, lapin::Consumer)> {
    let (connection, channel) = topology.open(amqp_url).await?;
    within(
        "turning on publisher confirms (for dead letters)",
        channel.confirm_select(ConfirmSelectOptions::default()),
    )
    .await?;
    within(
        "setting the prefetch",
        channel.basic_qos(PREFETCH, BasicQosOptions::default()),
    )
    .await?;
    let consumer = within(
        "starting to consume",
        channel.basic_consume(
            topology.queue(topic).as_str().into(),
            tag.into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;
    Ok((connection, channel, consumer))
}

/// Hands a batch's entries to the handler and works out each message's fate
/// from its answers; `None` when a known-bad consumer has acknowledged
/// them already, or never will.
async fn handle<H: Handler>(
    handler: &Arc<H>,
    deliveries: &[Delivery],
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Option<Vec<Fate>>> {
    let mut letters: Vec<Letter<H::Entry>> = deliveries
        .iter()
        .map(|delivery| Letter::read(delivery, H::TOPIC))
        .collect();
    let entries = letters.iter_mut().flat_map(Letter::take_entries).collect();
    if known_bad::has(Bug::AckBeforeCommit) {
        for delivery in deliveries {
            settle("acknowledging", delivery.ack(BasicAckOptions::default())).await?;
        }
        handler.handle(entries).await;
        return Ok(None);
    }
    let mut answers = handler.handle(entries).await.into_iter();
    let fates: Vec<Fate> = letters
        .into_iter()
        .map(|letter| {
            let (fate, labels) = letter::fate(letter, &mut answers);
            for label in labels {
                metrics.message_handled(H::NAME, label);
            }
            fate
        })
        .collect();
    if known_bad::has(Bug::NeverAck) {
        return Ok(None);
    }
    Ok(Some(fates))
}

/// Dead-letters the settled messages' poison entries, then records the
/// messages as processed, so `check` never reads one as processed before its
/// dead letters are in their queue. A broker that fails ends the session (the
/// messages come again, and their entries are duplicates or the same poison
/// then: a dead letter may be published twice); a database that fails turns
/// them into retries.
async fn conclude<H: Handler>(
    pool: &PgPool,
    channel: &Channel,
    topology: &Topology,
    fates: Vec<Fate>,
) -> anyhow::Result<Vec<Fate>> {
    let settled: Vec<Uuid> = fates
        .iter()
        .flat_map(|fate| match fate {
            Fate::Settled { message_ids, .. } => message_ids.as_slice(),
            _ => &[],
        })
        .copied()
        .collect();
    if settled.is_empty() {
        return Ok(fates);
    }
    let exchange = topology.dead_letter_exchange();
    for fate in &fates {
        if let Fate::Settled {
            message_id, poison, ..
        } = fate
        {
            for (_, reason) in poison {
                tracing::warn!(consumer = H::NAME, %message_id, reason, "poison entry dead-lettered");
            }
            if !poison.is_empty() {
                let sent = letter::dead_letter(channel, &exchange, H::TOPIC, *message_id, poison);
                within("dead-lettering entries", sent).await?;
            }
        }
    }
    if let Err(error) = record_processed(pool, H::NAME, &settled).await {
        let error = anyhow::Error::new(error).context("recording messages as processed");
        return Ok(fates
            .into_iter()
            .map(|fate| match fate {
                Fate::Settled { .. } => Fate::Retry(anyhow::anyhow!("{error:#}")),
                other => other,
            })
            .collect());
    }
    Ok(fates)
}

/// Records that `consumer` processed `message_ids`.
async fn record_processed(pool: &PgPool, consumer: &str, message_ids: &[Uuid]) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO processed_messages (consumer, message_id)
         SELECT $1, id FROM unnest($2::uuid[]) AS m(id)
         ON CONFLICT DO NOTHING",
    )
    .bind(consumer)
    .bind(message_ids)
    .execute(pool)
    .await
    .map(drop)
}

/// Acknowledges what was settled, rejects what is unreadable to the
/// dead-letter queue, and moves what failed for now to `waiting`. Returns the
/// first such failure.
///
/// `waiting` is empty on entry (a retried batch took it), and every delivery
/// older than the batch was settled or is in the batch. So when nothing in the
/// batch failed, the newest one settled is acknowledged with `multiple`, which
/// settles it and every older unsettled delivery, all of them settled;
/// otherwise each is acknowledged alone, so a held message is never
/// acknowledged.
async fn settle_batch(
    consumer: &str,
    deliveries: Vec<Delivery>,
    fates: Vec<Fate>,
    waiting: &mut Vec<Delivery>,
) -> anyhow::Result<Option<anyhow::Error>> {
    let all_settled = !fates.iter().any(|fate| matches!(fate, Fate::Retry(_)));
    let mut failure = None;
    let mut newest_done = None;
    for (delivery, fate) in deliveries.into_iter().zip(fates) {
        match fate {
            Fate::Settled { .. } if all_settled => {
                if newest_done
                    .as_ref()
                    .is_none_or(|newest: &Delivery| newest.delivery_tag < delivery.delivery_tag)
                {
                    newest_done = Some(delivery);
                }
            }
            Fate::Settled { .. } => {
                settle("acknowledging", delivery.ack(BasicAckOptions::default())).await?
            }
            Fate::Retry(_) if known_bad::has(Bug::AckOnFailure) => {
                settle("acknowledging", delivery.ack(BasicAckOptions::default())).await?
            }
            Fate::Retry(error) => {
                failure.get_or_insert(error);
                waiting.push(delivery);
            }
            Fate::Reject(reason) => {
                tracing::warn!(consumer, reason, "poison message dead-lettered");
                let dead_letter = BasicRejectOptions { requeue: false };
                settle("dead-lettering", delivery.reject(dead_letter)).await?
            }
        }
    }
    if let Some(newest) = newest_done {
        let through_newest = BasicAckOptions { multiple: true };
        settle("acknowledging", newest.ack(through_newest)).await?;
    }
    Ok(failure)
}

/// Waits for a delivery, then takes every other one already here (up to the
/// prefetch count).
async fn next_batch(consumer: &mut lapin::Consumer) -> anyhow::Result<Vec<Delivery>> {
    let first = consumer.next().await;
    let mut batch = vec![first.context("consumer cancelled by the broker")??];
    take_arrived(consumer, &mut batch)?;
    Ok(batch)
}

/// Adds the deliveries already here to `batch`, up to the prefetch count and
/// [`BATCH_BYTES`], without waiting for more.
fn take_arrived(consumer: &mut lapin::Consumer, batch: &mut Vec<Delivery>) -> anyhow::Result<()> {
    let mut bytes: usize = batch.iter().map(|delivery| delivery.data.len()).sum();
    while batch.len() < usize::from(PREFETCH) && bytes < BATCH_BYTES {
        match consumer.next().now_or_never() {
            Some(Some(delivery)) => {
                let delivery = delivery?;
                bytes += delivery.data.len();
                batch.push(delivery);
            }
            Some(None) => anyhow::bail!("consumer cancelled by the broker"),
            None => break,
        }
    }
    Ok(())
}

/// Acknowledges or rejects a delivery. lapin answers `false` when the channel
/// closed first: the broker will deliver the message again, so the session is
/// over.
async fn settle(what: &str, call: impl Future<Output = lapin::Result<bool>>) -> anyhow::Result<()> {
    match within(what, call).await? {
        true => Ok(()),
        false => anyhow::bail!("{what} a delivery: its channel had closed"),
    }
}
