//! SQL shared by the checks that read the outbox: which event a message is
//! about, and which consumer should have processed it.

use crate::notices::NotificationWorker;
use crate::saga::consumer::Handler;
use crate::saga::messages::OUTBOX_ENTRIES;
use crate::saga::payments::PaymentWorker;
use crate::saga::settlement::OrderWorker;

/// SQL: whether the outbox message `m` names an order of event `$1` (every
/// message is a batch of entries, one per order).
pub(super) fn about_event() -> String {
    format!(
        "EXISTS (SELECT 1 FROM jsonb_array_elements({OUTBOX_ENTRIES}) AS e(entry)
                 JOIN orders o ON o.id = (e.entry->>'order_id')::uuid
                 WHERE o.event_id = $1)"
    )
}

/// SQL naming the consumer of the outbox message `m` (by its topic), with
/// [`with_consumers`] binding `$2` to `$7`.
pub(super) const CONSUMER_OF_TOPIC: &str =
    "CASE m.topic WHEN $2 THEN $3 WHEN $4 THEN $5 WHEN $6 THEN $7 END";

/// Binds the topics and their consumers that [`CONSUMER_OF_TOPIC`] reads.
pub(super) fn with_consumers<'q, O>(
    query: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
    query
        .bind(PaymentWorker::TOPIC)
        .bind(PaymentWorker::NAME)
        .bind(OrderWorker::TOPIC)
        .bind(OrderWorker::NAME)
        .bind(NotificationWorker::TOPIC)
        .bind(NotificationWorker::NAME)
}
