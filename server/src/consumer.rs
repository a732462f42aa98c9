//! Consuming a queue: manual acks, only after the handler's effects committed.
//!
//! A handler answers each message with [`Handled`]: `Done` acks it; `Retry`
//! (a database or provider hiccup) waits [`RETRY_PAUSE`] and gives it back, and
//! after the queue's delivery limit the broker dead-letters it; `Poison` (it can
//! never succeed: undecodable, no message id, unknown order) rejects it straight
//! to the dead-letter queue, and the rest keep flowing. Handlers are idempotent
//! by message id (they record it in `processed_messages` in the same
//! transaction as their effects), so a redelivery changes nothing twice.
//!
//! Messages are handed over in batches: every delivery waiting (up to the
//! prefetch count) goes to the handler at once, so it can settle them in one
//! transaction instead of one each. One settled message per transaction capped
//! the saga near 1,400 messages/s per worker.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use lapin::message::DeliveryResult;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    BasicRejectOptions,
};
use lapin::types::FieldTable;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::broker::{close, within, Reconnect, Topology};
use crate::metrics::Metrics;
use crate::stop::Stop;

/// How long a message that failed waits before it is given back.
pub const RETRY_PAUSE: Duration = Duration::from_millis(500);
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
    let consumer = within(
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
    // The prefetch count bounds the deliveries in flight, and so this channel.
    let (deliveries, mut incoming) = mpsc::channel::<DeliveryResult>(usize::from(PREFETCH));
    consumer.set_delegate(move |delivery: DeliveryResult| {
        let deliveries = deliveries.clone();
        async move {
            let _ = deliveries.send(delivery).await;
        }
    });
    loop {
        let first = tokio::select! {
            delivery = incoming.recv() => delivery.context("consumer stopped")?,
            () = stop.until_requested() => {
                // Answered only once the broker has taken the acknowledgements
                // sent before it; and no more deliveries after it.
                let cancel = channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default());
                let _ = within("cancelling the consumer", cancel).await;
                close(&connection, &channel).await;
                return Ok(());
            }
        };
        let mut batch = vec![first];
        while batch.len() < usize::from(PREFETCH) {
            match incoming.try_recv() {
                Ok(delivery) => batch.push(delivery),
                Err(_) => break,
            }
        }
        let mut deliveries = Vec::with_capacity(batch.len());
        for delivery in batch {
            deliveries.push(delivery?.context("consumer cancelled by the broker")?);
        }
        let messages = deliveries
            .iter()
            .map(|delivery| Message {
                message_id: delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .and_then(|id| id.as_str().parse().ok()),
                body: delivery.data.clone(),
            })
            .collect();
        let handled = handler.handle(messages).await;
        let mut retry = Vec::new();
        for (delivery, handled) in deliveries.into_iter().zip(handled) {
            metrics.message_handled(H::NAME, &handled);
            let settled = match handled {
                Handled::Done | Handled::Duplicate => {
                    settle("acknowledging", delivery.ack(BasicAckOptions::default())).await
                }
                Handled::Retry(error) => {
                    tracing::warn!(
                        consumer = H::NAME,
                        error = format!("{error:#}"),
                        "message failed; will be redelivered"
                    );
                    retry.push(delivery);
                    continue;
                }
                Handled::Poison(reason) => {
                    tracing::warn!(consumer = H::NAME, reason, "poison message dead-lettered");
                    let dead_letter = BasicRejectOptions { requeue: false };
                    settle("dead-lettering", delivery.reject(dead_letter)).await
                }
            };
            settled?;
        }
        if !retry.is_empty() {
            // Given back after a pause, beside the next batches: no hot loop.
            tokio::spawn(async move {
                tokio::time::sleep(RETRY_PAUSE).await;
                let requeue = BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                };
                for delivery in retry {
                    // If the channel broke meanwhile, the broker redelivers anyway.
                    let _ = delivery.nack(requeue).await;
                }
            });
        }
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
