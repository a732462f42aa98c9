//! Resetting a sale: wipe the namespace's orders, payments, outbox, Redis keys
//! and queues, then seed fresh events. Used by `flashtix reset`.

use anyhow::Context;
use sqlx::PgPool;

use crate::catalogue::events::{self, Event, NewEvent};
use crate::gate::Gate;
use crate::runtime::config::Namespace;
use crate::saga::broker::Topology;

/// What to seed.
#[derive(Debug, Clone)]
pub struct SaleSpec {
    pub events: u32,
    pub event: NewEvent,
}

/// Wipes the namespace and seeds `spec`. Returns the new events.
///
/// Event ids are not restarted: a server still running with cached terms of an
/// old event can never mistake a new event for it.
pub async fn reset(
    pool: &PgPool,
    gate: &Gate,
    broker: &lapin::Connection,
    namespace: &Namespace,
    spec: &SaleSpec,
) -> anyhow::Result<Vec<Event>> {
    crate::runtime::db::migrate(pool, namespace).await?;
    sqlx::query(
        "TRUNCATE released_holds, stock_returns, processed_messages, provider_ledger, payments, outbox, \
         notices, webhook_deliveries, seats, zones, orders, events",
    )
    .execute(pool)
    .await
    .context("wiping the sale's tables")?;
    gate.wipe()
        .await
        .context("wiping the namespace's Redis keys")?;
    crate::saga::broker::within(
        "purging the namespace's queues",
        Topology::new(namespace.clone()).purge(broker),
    )
    .await?;
    let mut created = Vec::with_capacity(spec.events as usize);
    for n in 1..=spec.events {
        let mut event = spec.event.clone();
        if spec.events > 1 {
            event.name = format!("{} #{n}", spec.event.name);
        }
        created.push(open(pool, gate, &event).await?);
    }
    Ok(created)
}

/// Creates one event in Postgres and opens it in Redis.
pub async fn open(pool: &PgPool, gate: &Gate, event: &NewEvent) -> anyhow::Result<Event> {
    let created = events::create(pool, event)
        .await
        .context("creating the event")?;
    if event.plan.is_some() {
        // Postgres alone decides a seated event's orders.
        return Ok(created);
    }
    // If this fails the event still sells: the first order reseeds Redis.
    if let Err(error) = gate.open_event(created.id, created.total_tickets).await {
        tracing::warn!(event_id = created.id, error = %error, "could not seed Redis; first order will");
    }
    Ok(created)
}
