//! The outbox relay (role `relay`): publishes to RabbitMQ what transactions wrote
//! to the `outbox` table, so nothing is published unless its transaction
//! committed, and nothing committed goes unpublished.
//!
//! A pass claims up to [`RELAY_BATCH`] unpublished rows (`FOR UPDATE SKIP
//! LOCKED`: several relays share the work) and publishes the rows of each
//! topic as one message: their entries, in order, with every row's message id
//! in the [`MESSAGES_HEADER`] header, so a consumer records each row as
//! processed. One message per pass instead of one per row (a writer batch)
//! cuts the broker's work by the number of rows. It waits for the broker to
//! confirm every message, then marks the rows published and commits. A relay
//! that dies mid-pass leaves its rows unpublished and unlocked: another pass
//! publishes them again, so delivery is at least once and consumers are
//! idempotent per order. While RabbitMQ is away orders are still taken; the
//! rows wait, and the relay reconnects forever with capped backoff.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use lapin::options::ConfirmSelectOptions;
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString};
use lapin::{Channel, Confirmation};
use sqlx::PgPool;
use uuid::Uuid;

use crate::runtime::metrics::Metrics;
use crate::runtime::stop::Stop;
use crate::saga::broker::{Reconnect, Topology};
use crate::saga::messages::OUTBOX_ENTRIES;

/// The most rows one pass publishes.
pub const RELAY_BATCH: i64 = 500;
/// The header naming every outbox row a message carries.
pub const MESSAGES_HEADER: &str = "x-flashtix-messages";
/// A message's body grows to about this size before the next one begins.
const MESSAGE_BYTES: usize = 256 * 1024;

/// Writes, in the caller's transaction, one outbox row of `topic` carrying
/// `entries` (nothing when there are none).
pub async fn enqueue<T: serde::Serialize>(
    tx: &mut sqlx::PgConnection,
    topic: &str,
    entries: &[T],
) -> sqlx::Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let body = serde_json::json!({ "orders": entries });
    sqlx::query("INSERT INTO outbox (message_id, topic, payload) VALUES ($1, $2, $3::jsonb)")
        .bind(Uuid::now_v7())
        .bind(topic)
        .bind(body.to_string())
        .execute(tx)
        .await?;
    Ok(())
}

/// Relays until a stop is requested, reconnecting to RabbitMQ whenever the
/// connection breaks. After a pass that claimed less than a full batch it
/// pauses `every`, so rows gather into fewer, larger messages: a storm's messages
/// cost the broker per message, not per order (20 ms between passes spent
/// four times the broker's CPU per order that 200 ms did).
pub async fn run(
    pool: PgPool,
    amqp_url: String,
    topology: Topology,
    every: Duration,
    metrics: Arc<Metrics>,
    mut stop: Stop,
) {
    let mut reconnect = Reconnect::new("outbox relay");
    loop {
        let Err(error) = relay(
            &pool,
            &amqp_url,
            &topology,
            every,
            &metrics,
            &mut reconnect,
            &mut stop,
        )
        .await
        else {
            return;
        };
        if !reconnect.failed(error, &mut stop).await {
            return;
        }
    }
}

/// Connects and relays until something breaks or a stop is requested; a
/// batch begun is published and marked before the stop is obeyed.
async fn relay(
    pool: &PgPool,
    amqp_url: &str,
    topology: &Topology,
    every: Duration,
    metrics: &Metrics,
    reconnect: &mut Reconnect,
    stop: &mut Stop,
) -> anyhow::Result<()> {
    let (connection, channel) = topology.open(amqp_url).await?;
    crate::saga::broker::within(
        "turning on publisher confirms",
        channel.confirm_select(ConfirmSelectOptions::default()),
    )
    .await?;
    reconnect.connected();
    loop {
        let published = publish_batch(pool, &channel, topology).await?;
        metrics.outbox_published(published);
        let go_on = if published < RELAY_BATCH as u64 {
            stop.pause(every).await
        } else {
            !stop.requested()
        };
        if !go_on {
            crate::saga::broker::close(&connection, &channel).await;
            return Ok(());
        }
    }
}

/// Rows written but not yet confirmed by the broker.
pub async fn depth(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        .fetch_one(pool)
        .await
}

/// Publishes one batch of unpublished rows and marks them published. Returns
/// how many.
pub async fn publish_batch(
    pool: &PgPool,
    channel: &Channel,
    topology: &Topology,
) -> anyhow::Result<u64> {
    let mut tx = pool.begin().await?;
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT m.id, m.message_id, m.topic, ({OUTBOX_ENTRIES})::text
         FROM outbox m
         WHERE m.published_at IS NULL
         ORDER BY m.id
         LIMIT $1
         FOR UPDATE SKIP LOCKED"
    ))
    .bind(RELAY_BATCH)
    .fetch_all(&mut *tx)
    .await
    .context("claiming outbox rows")?;
    if rows.is_empty() {
        return Ok(0);
    }
    if crate::known_bad::has(crate::known_bad::Bug::PublishBeforeCommit) {
        mark_published(&mut tx, &rows).await?;
        tx.commit().await?;
        let exchange = topology.exchange();
        let published = publish_confirmed(channel, &exchange, &rows);
        crate::saga::broker::within("publishing an outbox batch", published).await?;
        return Ok(rows.len() as u64);
    }
    // The rows stay locked until the broker confirms: a broker that stops
    // answering must fail the batch (rolled back, published again later), not
    // hold the locks forever.
    crate::saga::broker::within(
        "publishing an outbox batch",
        publish_confirmed(channel, &topology.exchange(), &rows),
    )
    .await?;
    mark_published(&mut tx, &rows).await?;
    tx.commit().await?;
    Ok(rows.len() as u64)
}

/// An outbox row: id, message id, topic, and its entries as a JSON array
/// ([`OUTBOX_ENTRIES`]).
type Row = (i64, Uuid, String, String);

async fn mark_published(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    rows: &[Row],
) -> sqlx::Result<()> {
    let ids: Vec<i64> = rows.iter().map(|(id, ..)| *id).collect();
    sqlx::query("UPDATE outbox SET published_at = now() WHERE id = ANY($1)")
        .bind(&ids)
        .execute(&mut **tx)
        .await
        .map(drop)
}

/// One message to publish: the entries of consecutive rows of one topic.
struct Message<'a> {
    topic: &'a str,
    message_ids: Vec<Uuid>,
    body: String,
}

/// Puts the rows' entries together, one message per topic (more when one
/// grows past [`MESSAGE_BYTES`]), each keeping its rows' order.
fn messages(rows: &[Row]) -> anyhow::Result<Vec<Message<'_>>> {
    let mut messages: Vec<Message> = Vec::new();
    for (_, message_id, topic, entries) in rows {
        let Some(inner) = entries
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
        else {
            bail!("outbox message {message_id} ({topic}) has no list of orders");
        };
        let open = messages
            .iter_mut()
            .rev()
            .find(|m| m.topic == topic && m.body.len() < MESSAGE_BYTES);
        let message = match open {
            Some(message) => message,
            None => {
                messages.push(Message {
                    topic,
                    message_ids: Vec::new(),
                    body: String::from("{\"orders\":["),
                });
                messages.last_mut().expect("just pushed")
            }
        };
        if !inner.trim().is_empty() {
            if !message.body.ends_with('[') {
                message.body.push(',');
            }
            message.body.push_str(inner);
        }
        message.message_ids.push(*message_id);
    }
    for message in &mut messages {
        message.body.push_str("]}");
    }
    Ok(messages)
}

/// Publishes `rows` as [`messages`] with every confirm in flight at once,
/// then waits for all of them; any nack or unroutable message fails the
/// whole batch. A message goes under its first row's message id.
async fn publish_confirmed(channel: &Channel, exchange: &str, rows: &[Row]) -> anyhow::Result<()> {
    let messages = messages(rows)?;
    let mut confirms = Vec::with_capacity(messages.len());
    for message in &messages {
        let ids: Vec<AMQPValue> = message
            .message_ids
            .iter()
            .map(|id| AMQPValue::LongString(LongString::from(id.to_string().into_bytes())))
            .collect();
        let mut headers = FieldTable::default();
        headers.insert(
            MESSAGES_HEADER.into(),
            AMQPValue::FieldArray(FieldArray::from(ids)),
        );
        let first = message.message_ids[0];
        let body = message.body.as_bytes();
        let confirm =
            crate::saga::broker::publish(channel, exchange, message.topic, first, headers, body)
                .await?;
        confirms.push(confirm);
    }
    for (message, confirm) in messages.iter().zip(confirms) {
        let (first, topic) = (message.message_ids[0], message.topic);
        match confirm.await? {
            Confirmation::Ack(None) => {}
            Confirmation::Ack(Some(_)) => bail!("message {first} ({topic}) was unroutable"),
            other => bail!("broker refused message {first} ({topic}): {other:?}"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, topic: &str, entries: &str) -> Row {
        (id, Uuid::now_v7(), topic.into(), entries.into())
    }

    #[test]
    fn rows_of_a_topic_become_one_message_in_their_order() {
        let rows = vec![
            row(1, "order.created", r#"[{"order_id":"a"},{"order_id":"b"}]"#),
            row(2, "payment.result", r#"[{"order_id":"x"}]"#),
            row(3, "order.created", "[]"),
            row(4, "order.created", r#"[{"order_id":"c"}]"#),
        ];
        let messages = messages(&rows).unwrap();
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0].topic, "order.created");
        assert_eq!(
            messages[0].body,
            r#"{"orders":[{"order_id":"a"},{"order_id":"b"},{"order_id":"c"}]}"#
        );
        assert_eq!(messages[0].message_ids, [rows[0].1, rows[2].1, rows[3].1]);
        assert_eq!(messages[1].body, r#"{"orders":[{"order_id":"x"}]}"#);
        assert_eq!(messages[1].message_ids, [rows[1].1]);
        for message in &messages {
            let body: serde_json::Value = serde_json::from_str(&message.body).unwrap();
            assert!(body["orders"].is_array());
        }
    }

    #[test]
    fn a_message_ends_once_it_is_large_and_the_next_begins() {
        let entry = format!(r#"[{{"order_id":"{}"}}]"#, "x".repeat(MESSAGE_BYTES / 2));
        let rows: Vec<Row> = (0..5).map(|id| row(id, "order.created", &entry)).collect();
        let messages = messages(&rows).unwrap();
        assert_eq!(messages.len(), 3);
        let carried: usize = messages.iter().map(|m| m.message_ids.len()).sum();
        assert_eq!(carried, 5);
    }

    #[test]
    fn a_row_without_a_list_of_orders_fails_the_pass() {
        let rows = vec![row(1, "order.created", r#"{"order_id":"a"}"#)];
        assert!(messages(&rows).is_err());
    }
}
