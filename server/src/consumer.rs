//! Consuming a queue: manual acks, only after the handler's effects committed.
//!
//! A handler answers each message with [`Handled`]: `Done` acks it; `Retry`
//! (the database, Redis or the provider away) keeps it, unacknowledged, and
//! hands it to the handler again after a pause that doubles from
//! [`RETRY_PAUSE`] to [`RETRY_PAUSE_MAX`]. Kept, not given back: an outage of
//! any length spends none of the message's deliveries, so it never reaches the
//! queue's delivery limit for a fault that is not its own (the broker counts
//! deliveries only when a consumer dies holding it). `Poison` (it can never
//! succeed: undecodable, no message id, unknown order) rejects it straight to
//! the dead-letter queue, and the rest keep flowing. Handlers are idempotent
//! by message id (they record it in `processed_messages` in the same
//! transaction as their effects), so a redelivery changes nothing twice.
//!
//! Messages are handed over in batches: every delivery waiting (up to the
//! prefetch count) goes to the handler at once, so it can settle them in one
//! transaction instead of one each. One settled message per transaction capped
//! the saga near 1,400 messages/s per worker. Deliveries are read from the
//! consumer's stream, in the broker's order, so a batch whose messages were all
//! done, with none held, is acknowledged by one `multiple` ack: every delivery
//! before it on the channel is settled already.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions,
};
use lapin::types::FieldTable;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::broker::{close, within, Reconnect, Topology};
use crate::known_bad::{self, Bug};
use crate::metrics::Metrics;
use crate::stop::Stop;

/// The first pause before messages that failed are handled again.
pub const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// The longest pause between two tries.
pub const RETRY_PAUSE_MAX: Duration = Duration::from_secs(2);
/// Messages handled at once per consumer.
const PREFETCH: u16 = 256;

/// One message, as a handler sees it.
pub struct Message {
    pub message_id: Option<Uuid>,
    pub body: Vec<u8>,
}

pub enum Handled {
    Done,
    /// Processed before (same message id): nothing done again.
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
    /// Handles a batch; answers one [`Handled`] per message, in order.
    fn handle(&self, messages: Vec<Message>) -> impl Future<Output = Vec<Handled>> + Send;
}

/// A batch's answers while a handler fills them in, one slot per message.
pub type Slots = Vec<Option<Handled>>;

/// Sorts a batch for a handler: a message without an id, or whose body is not
/// a `T`, is poison (its slot is filled); the others come back decoded, with
/// their place in the batch (their slot left empty for the handler).
pub fn decode<T: DeserializeOwned>(
    messages: &[Message],
    topic: &str,
) -> (Slots, Vec<(usize, Uuid, T)>) {
    let mut handled = Vec::with_capacity(messages.len());
    let mut decoded = Vec::new();
    for (index, message) in messages.iter().enumerate() {
        let Some(message_id) = message.message_id else {
            handled.push(Some(Handled::Poison("no message id".into())));
            continue;
        };
        match serde_json::from_slice(&message.body) {
            Ok(body) => {
                handled.push(None);
                decoded.push((index, message_id, body));
            }
            Err(error) => handled.push(Some(Handled::Poison(format!(
                "undecodable {topic}: {error}"
            )))),
        }
    }
    (handled, decoded)
}

/// The messages of a batch this consumer sees for the first time.
///
/// The contract of every handler's dedupe: [`FirstTimes::claim`] records the
/// batch's message ids in `processed_messages` inside the handler's
/// transaction, so the record commits with the effects or not at all; then
/// [`FirstTimes::take`] answers `true` once per id. A message processed by an
/// earlier transaction, and every copy after the first of a message that came
/// twice in this batch (a republish, a redelivery joining held messages), are
/// duplicates: acknowledged, with no effect.
pub struct FirstTimes(HashSet<Uuid>);

impl FirstTimes {
    /// Records that `consumer` processed `message_ids`, in the caller's
    /// transaction.
    pub async fn claim(
        tx: &mut sqlx::PgConnection,
        consumer: &str,
        message_ids: &[Uuid],
    ) -> sqlx::Result<Self> {
        let fresh: Vec<Uuid> = sqlx::query_scalar(
            "INSERT INTO processed_messages (consumer, message_id)
             SELECT $1, id FROM unnest($2::uuid[]) AS m(id)
             ON CONFLICT DO NOTHING RETURNING message_id",
        )
        .bind(consumer)
        .bind(message_ids)
        .fetch_all(tx)
        .await?;
        Ok(Self(fresh.into_iter().collect()))
    }

    /// Whether this copy of `message_id` is the one to act on: true once.
    pub fn take(&mut self, message_id: Uuid) -> bool {
        self.0.remove(&message_id)
    }
}

/// One answer per message; a slot a handler left empty is retried, not lost.
pub fn answers(handled: Slots) -> Vec<Handled> {
    handled
        .into_iter()
        .map(|slot| {
            slot.unwrap_or_else(|| Handled::Retry(anyhow::anyhow!("message left unhandled")))
        })
        .collect()
}

/// Consumes until a stop is requested, reconnecting to RabbitMQ whenever the
/// connection breaks.
pub async fn run<H: Handler>(
    handler: Arc<H>,
    amqp_url: String,
    topology: Topology,
    metrics: Arc<Metrics>,
    mut stop: Stop,
) {
    let mut reconnect = Reconnect::new(H::NAME);
    loop {
        let session = consume(
            &handler,
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
    amqp_url: &str,
    topology: &Topology,
    metrics: &Arc<Metrics>,
    reconnect: &mut Reconnect,
    stop: &mut Stop,
) -> anyhow::Result<()> {
    let (connection, channel) = topology.open(amqp_url).await?;
    within(
        "setting the prefetch",
        channel.basic_qos(PREFETCH, BasicQosOptions::default()),
    )
    .await?;
    let tag = format!("flashtix-{}", H::NAME);
    let mut consumer = within(
        "starting to consume",
        channel.basic_consume(
            topology.queue(H::TOPIC).as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;
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
        let messages = deliveries.iter().map(message).collect();
        if known_bad::has(Bug::AckBeforeCommit) {
            for delivery in &deliveries {
                settle("acknowledging", delivery.ack(BasicAckOptions::default())).await?;
            }
            handler.handle(messages).await;
            continue;
        }
        let handled = handler.handle(messages).await;
        for handled in &handled {
            metrics.message_handled(H::NAME, handled.label());
        }
        if known_bad::has(Bug::NeverAck) {
            continue;
        }
        let failure = settle_batch(H::NAME, deliveries, handled, &mut waiting).await?;
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

/// Acknowledges what was done, dead-letters what never can be, and moves
/// what failed for now to `waiting`. Returns the first such failure.
///
/// `waiting` is empty on entry (a retried batch took it), and every delivery
/// older than the batch was settled or is in the batch. So when nothing in the
/// batch failed, the newest one done is acknowledged with `multiple`, which
/// settles it and every older unsettled delivery, all of them done; otherwise
/// each is acknowledged alone, so a held message is never acknowledged.
async fn settle_batch(
    consumer: &str,
    deliveries: Vec<Delivery>,
    handled: Vec<Handled>,
    waiting: &mut Vec<Delivery>,
) -> anyhow::Result<Option<anyhow::Error>> {
    let all_done = !handled.iter().any(|h| matches!(h, Handled::Retry(_)));
    let mut failure = None;
    let mut newest_done = None;
    for (delivery, handled) in deliveries.into_iter().zip(handled) {
        match handled {
            Handled::Done | Handled::Duplicate if all_done => {
                if newest_done
                    .as_ref()
                    .is_none_or(|newest: &Delivery| newest.delivery_tag < delivery.delivery_tag)
                {
                    newest_done = Some(delivery);
                }
            }
            Handled::Done | Handled::Duplicate => {
                settle("acknowledging", delivery.ack(BasicAckOptions::default())).await?
            }
            Handled::Retry(_) if known_bad::has(Bug::AckOnFailure) => {
                settle("acknowledging", delivery.ack(BasicAckOptions::default())).await?
            }
            Handled::Retry(error) => {
                failure.get_or_insert(error);
                waiting.push(delivery);
            }
            Handled::Poison(reason) => {
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

/// Adds the deliveries already here to `batch`, up to the prefetch count,
/// without waiting for more.
fn take_arrived(consumer: &mut lapin::Consumer, batch: &mut Vec<Delivery>) -> anyhow::Result<()> {
    while batch.len() < usize::from(PREFETCH) {
        match consumer.next().now_or_never() {
            Some(Some(delivery)) => batch.push(delivery?),
            Some(None) => anyhow::bail!("consumer cancelled by the broker"),
            None => break,
        }
    }
    Ok(())
}

fn message(delivery: &Delivery) -> Message {
    Message {
        message_id: delivery
            .properties
            .message_id()
            .as_ref()
            .and_then(|id| id.as_str().parse().ok()),
        body: delivery.data.clone(),
    }
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
