//! Money: every settled order paid exactly its amount if confirmed, nothing
//! otherwise, and our payments agree with the provider's ledger.

use sqlx::PgPool;

use super::messages::{with_consumers, CONSUMER_OF_TOPIC};
use crate::saga::messages::OUTBOX_ENTRIES;
use flashtix_model::report::{finding, Finding, Invariant, Verdict, EXAMPLES};

/// Invariant 2: per settled order, money captured minus refunded equals the
/// amount if CONFIRMED and 0 otherwise; at most one capture; our payments agree with the
/// provider's ledger. (PENDING orders are still on their way.)
///
/// An order whose money is wrong while one of its messages is still unhandled
/// (a late capture whose refund has not run yet, a charge not yet recorded) is
/// in flight: UNKNOWN until the message is handled, FAIL only after.
pub(super) async fn no_double_charge(pool: &PgPool, event: Option<i64>) -> anyhow::Result<Finding> {
    let checked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM orders WHERE status <> 'PENDING' AND ($1::int8 IS NULL OR event_id = $1)",
    )
    .bind(event)
    .fetch_one(pool)
    .await?;
    let sql = format!(
        "WITH settled AS (
            SELECT id, status, amount_cents FROM orders
            WHERE status <> 'PENDING' AND ($1::int8 IS NULL OR event_id = $1)
         ), ours AS (
            SELECT order_id,
                   count(*) FILTER (WHERE kind = 'CAPTURE' AND outcome = 'SUCCEEDED') AS captures,
                   COALESCE(sum(amount_cents) FILTER (WHERE kind = 'CAPTURE' AND outcome = 'SUCCEEDED'), 0)
                 - COALESCE(sum(amount_cents) FILTER (WHERE kind = 'REFUND' AND outcome = 'SUCCEEDED'), 0)
                   AS net,
                   COALESCE(sum(amount_cents) FILTER (WHERE outcome = 'SUCCEEDED'), 0) AS moved
            FROM payments GROUP BY order_id
         ), books AS (
            SELECT order_id, COALESCE(sum(amount_cents) FILTER (WHERE outcome = 'SUCCEEDED'), 0) AS moved
            FROM provider_ledger GROUP BY order_id
         ), unhandled AS (
            SELECT DISTINCT (e.entry->>'order_id')::uuid AS order_id
            FROM outbox m
            CROSS JOIN jsonb_array_elements({OUTBOX_ENTRIES}) AS e(entry)
            WHERE NOT EXISTS (
                SELECT 1 FROM processed_messages p
                WHERE p.message_id = m.message_id
                  AND p.consumer = {CONSUMER_OF_TOPIC})
         )
         SELECT format('order %s (%s, %s cents): captured %s time(s), net %s cents; provider moved %s, we recorded %s',
                       s.id, s.status, s.amount_cents, COALESCE(o.captures, 0), COALESCE(o.net, 0),
                       COALESCE(b.moved, 0), COALESCE(o.moved, 0)),
                s.id IN (SELECT order_id FROM unhandled)
         FROM settled s LEFT JOIN ours o ON o.order_id = s.id LEFT JOIN books b ON b.order_id = s.id
         WHERE COALESCE(o.captures, 0) > 1
            OR COALESCE(o.net, 0) <> CASE WHEN s.status = 'CONFIRMED' THEN s.amount_cents ELSE 0 END
            OR COALESCE(b.moved, 0) <> COALESCE(o.moved, 0)
         ORDER BY s.id"
    );
    let wrong = sqlx::query_as(&sql).bind(event);
    let wrong: Vec<(String, bool)> = with_consumers(wrong).fetch_all(pool).await?;
    let (in_flight, wrong): (Vec<_>, Vec<_>) =
        wrong.into_iter().partition(|(_, unhandled)| *unhandled);
    let wrong: Vec<String> = wrong.into_iter().map(|(offence, _)| offence).collect();
    if wrong.is_empty() && !in_flight.is_empty() {
        return Ok(Finding {
            invariant: Invariant::NoDoubleCharge,
            verdict: Verdict::Unknown,
            checked: checked as u64,
            offending: in_flight.len() as u64,
            detail: "money still moving: these orders have payment messages not yet handled".into(),
            examples: in_flight
                .into_iter()
                .map(|(offence, _)| offence)
                .take(EXAMPLES)
                .collect(),
        });
    }
    Ok(finding(
        Invariant::NoDoubleCharge,
        checked as u64,
        wrong,
        "every settled order paid exactly its amount if confirmed, nothing otherwise",
        "money moved wrongly",
    ))
}

/// Money's books: every order's `amount_cents` is its price (quantity × the
/// event's price, quantity × its zone's, or the sum of its seats' zones'
/// prices); every charge or refund the provider recorded is for an order we
/// have; no refund, ours or the provider's, without a successful capture
/// in the same books. A provider entry for an order we do not have names no event,
/// so it is judged whatever `--event` says.
pub(super) async fn charges_match_orders(
    pool: &PgPool,
    event: Option<i64>,
) -> anyhow::Result<Finding> {
    let checked: i64 =
        sqlx::query_scalar("SELECT count(*) FROM orders WHERE $1::int8 IS NULL OR event_id = $1")
            .bind(event)
            .fetch_one(pool)
            .await?;
    let wrong: Vec<String> = sqlx::query_scalar(
        "WITH mine AS (
            SELECT o.* FROM orders o WHERE $1::int8 IS NULL OR o.event_id = $1
         ), priced AS (
            SELECT o.id, o.amount_cents, o.quantity,
                   CASE WHEN o.seats IS NOT NULL THEN
                            (SELECT sum(z.price_cents) FROM unnest(o.seats) AS seat
                             JOIN seats s ON s.event_id = o.event_id AND s.seat_id = seat
                             JOIN zones z ON z.event_id = s.event_id AND z.name = s.zone)
                        WHEN o.zone IS NOT NULL THEN
                            o.quantity * (SELECT z.price_cents FROM zones z
                                          WHERE z.event_id = o.event_id AND z.name = o.zone)
                        ELSE o.quantity * e.price_cents
                   END AS price
            FROM mine o JOIN events e ON e.id = o.event_id
         )
         SELECT format('order %s: %s cents for %s ticket(s) priced %s cents', id, amount_cents,
                       quantity, coalesce(price::text, 'at no known price'))
         FROM priced WHERE amount_cents IS DISTINCT FROM price
         UNION ALL
         SELECT format('provider %s of %s cents (%s) for order %s, which we do not have',
                       lower(p.kind), p.amount_cents, lower(p.outcome), p.order_id)
         FROM provider_ledger p WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = p.order_id)
         UNION ALL
         SELECT format('order %s: %s refunded %s cents without a capture', r.order_id, r.book,
                       r.amount_cents)
         FROM (SELECT 'the provider' AS book, order_id, kind, outcome, amount_cents
               FROM provider_ledger
               UNION ALL
               SELECT 'we', order_id, kind, outcome, amount_cents FROM payments) AS r
         WHERE r.kind = 'REFUND' AND r.outcome = 'SUCCEEDED'
           AND ($1::int8 IS NULL OR r.order_id IN (SELECT id FROM mine))
           AND NOT EXISTS (
               SELECT 1 FROM provider_ledger c
               WHERE c.order_id = r.order_id AND c.kind = 'CAPTURE' AND c.outcome = 'SUCCEEDED'
                 AND r.book = 'the provider'
               UNION ALL
               SELECT 1 FROM payments c
               WHERE c.order_id = r.order_id AND c.kind = 'CAPTURE' AND c.outcome = 'SUCCEEDED'
                 AND r.book = 'we')
         ORDER BY 1",
    )
    .bind(event)
    .fetch_all(pool)
    .await?;
    Ok(finding(
        Invariant::ChargesMatchOrders,
        checked as u64,
        wrong,
        "every order costs its price; every charge is for an order we have; no refund \
         without a capture",
        "money was asked for the wrong amount or for no order",
    ))
}
