//! The outbox relay (role `relay`): publishes to RabbitMQ what transactions wrote
//! to the `outbox` table, so nothing is published unless its transaction
//! committed, and nothing committed goes unpublished.
//!
//! A pass claims up to [`RELAY_BATCH`] unpublished rows (`FOR UPDATE SKIP
//! LOCKED`: several relays share the work), publishes them all with publisher
//! confirms in flight, waits for the broker to confirm every one, then marks
//! them published and commits. A relay that dies mid-pass leaves its rows
//! unpublished and unlocked: another pass publishes them again, so delivery is
//! at least once and consumers dedupe by `message_id`. While RabbitMQ is away
//! orders are still taken; the rows wait, and the relay reconnects forever with
//! capped backoff.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation};
use sqlx::PgPool;
use uuid::Uuid;

use crate::broker::{Reconnect, Topology};
use crate::metrics::Metrics;
use crate::stop::Stop;

/// The most rows one pass publishes.
pub const RELAY_BATCH: i64 = 500;
/// How long an idle relay waits before looking again.
const IDLE_POLL: Duration = Duration::from_millis(20);

/// Relays until a stop is requested, reconnecting to RabbitMQ whenever the
/// connection breaks.
pub async fn run(
    pool: PgPool,
    amqp_url: String,
    topology: Topology,
    metrics: Arc<Metrics>,
    mut stop: Stop,
) {
    let mut reconnect = Reconnect::new("outbox relay");
    loop {
        let Err(error) = relay(
            &pool,
            &amqp_url,
            &topology,
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
    metrics: &Metrics,
    reconnect: &mut Reconnect,
    stop: &mut Stop,
) -> anyhow::Result<()> {
    let (connection, channel) = topology.open(amqp_url).await?;
    crate::broker::within(
        "turning on publisher confirms",
        channel.confirm_select(ConfirmSelectOptions::default()),
    )
    .await?;
    reconnect.connected();
    loop {
        let published = publish_batch(pool, &channel, topology).await?;
        metrics.outbox_published(published);
        let go_on = if published < RELAY_BATCH as u64 {
            stop.pause(IDLE_POLL).await
        } else {
            !stop.requested()
        };
        if !go_on {
            crate::broker::close(&connection, &channel).await;
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
    let rows: Vec<(i64, Uuid, String, String)> = sqlx::query_as(
        "SELECT id, message_id, topic, payload::text FROM outbox
         WHERE published_at IS NULL
         ORDER BY id
         LIMIT $1
         FOR UPDATE SKIP LOCKED",
    )
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
        crate::broker::within("publishing an outbox batch", published).await?;
        return Ok(rows.len() as u64);
    }
    // The rows stay locked until the broker confirms: a broker that stops
    // answering must fail the batch (rolled back, published again later), not
    // hold the locks forever.
    crate::broker::within(
        "publishing an outbox batch",
        publish_confirmed(channel, &topology.exchange(), &rows),
    )
    .await?;
    mark_published(&mut tx, &rows).await?;
    tx.commit().await?;
    Ok(rows.len() as u64)
}

async fn mark_published(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    rows: &[(i64, Uuid, String, String)],
) -> sqlx::Result<()> {
    let ids: Vec<i64> = rows.iter().map(|(id, ..)| *id).collect();
    sqlx::query("UPDATE outbox SET published_at = now() WHERE id = ANY($1)")
        .bind(&ids)
        .execute(&mut **tx)
        .await
        .map(drop)
}

/// Publishes `rows` with every confirm in flight at once, then waits for all of
/// them; any nack or unroutable message fails the whole batch.
async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    rows: &[(i64, Uuid, String, String)],
) -> anyhow::Result<()> {
    let mut confirms = Vec::with_capacity(rows.len());
    for (_, message_id, topic, payload) in rows {
        let properties = BasicProperties::default()
            .with_message_id(message_id.to_string().into())
            .with_content_type("application/json".into())
            .with_type(topic.as_str().into())
            // Persistent: the broker writes it to disk before confirming.
            .with_delivery_mode(2);
        let options = BasicPublishOptions {
            // Unroutable is an error, not a silent drop.
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        let confirm = channel
            .basic_publish(
                exchange.into(),
                topic.as_str().into(),
                options,
                payload.as_bytes(),
                properties,
            )
            .await?;
        confirms.push(confirm);
    }
    for ((_, message_id, topic, _), confirm) in rows.iter().zip(confirms) {
        match confirm.await? {
            Confirmation::Ack(None) => {}
            Confirmation::Ack(Some(_)) => bail!("message {message_id} ({topic}) was unroutable"),
            other => bail!("broker refused message {message_id} ({topic}): {other:?}"),
        }
    }
    Ok(())
}
