//! Seats: one live owner per seat, and no zone past its capacity.

use flashtix_model::holds_tickets;
use sqlx::PgPool;

use flashtix_model::report::{finding, Finding, Invariant};

/// Seating: no seat named by two live (PENDING or CONFIRMED) orders; each
/// live order's seats held by it and by nothing else in the seat rows, each
/// held seat's owner live and naming it; an order's quantity its number of
/// seats; no general-admission zone holding more than its capacity.
pub(super) async fn one_owner_per_seat(
    pool: &PgPool,
    event: Option<i64>,
) -> anyhow::Result<Finding> {
    let checked: i64 =
        sqlx::query_scalar("SELECT count(*) FROM seats WHERE $1::int8 IS NULL OR event_id = $1")
            .bind(event)
            .fetch_one(pool)
            .await?;
    let offenders: Vec<String> = sqlx::query_scalar(concat!(
        "WITH live AS (
            SELECT o.id, o.event_id, o.quantity, o.seats, o.zone FROM orders o
            WHERE o.status IN ",
        holds_tickets!(),
        " AND ($1::int8 IS NULL OR o.event_id = $1)
         ), named AS (
            SELECT l.id, l.event_id, seat FROM live l, unnest(l.seats) AS seat
         )
         SELECT format('event %s seat %s: named by %s live orders (%s)', event_id, seat,
                       count(*), string_agg(id::text, ', ' ORDER BY id))
         FROM named GROUP BY event_id, seat HAVING count(*) > 1
         UNION ALL
         SELECT format('order %s: names seat %s, %s', n.id, n.seat,
                       CASE WHEN s.seat_id IS NULL THEN 'which the event does not have'
                            WHEN s.order_id IS NULL THEN 'which the seat rows show free'
                            ELSE 'which the seat rows give to order ' || s.order_id END)
         FROM named n
         LEFT JOIN seats s ON s.event_id = n.event_id AND s.seat_id = n.seat
         WHERE s.order_id IS DISTINCT FROM n.id
         UNION ALL
         SELECT format('event %s seat %s: held by order %s, %s', s.event_id, s.seat_id,
                       s.order_id, CASE WHEN o.id IS NULL THEN 'which does not exist'
                                        WHEN s.blocked THEN 'but the seat is not for sale'
                                        ELSE 'a ' || o.status || ' order naming '
                                             || coalesce(array_to_string(o.seats, ' '), 'no seats')
                                   END)
         FROM seats s LEFT JOIN orders o ON o.id = s.order_id
         WHERE s.order_id IS NOT NULL AND ($1::int8 IS NULL OR s.event_id = $1)
           AND (o.id IS NULL OR s.blocked OR o.status NOT IN ",
        holds_tickets!(),
        "
                OR NOT s.seat_id = ANY(coalesce(o.seats, '{}')))
         UNION ALL
         SELECT format('order %s: quantity %s for %s seats', id, quantity, cardinality(seats))
         FROM live WHERE seats IS NOT NULL AND cardinality(seats) <> quantity
         UNION ALL
         SELECT format('event %s zone %s: %s live tickets over its capacity of %s',
                       z.event_id, z.name, sum(l.quantity), z.capacity)
         FROM live l JOIN zones z ON z.event_id = l.event_id AND z.name = l.zone
         GROUP BY z.event_id, z.name, z.capacity HAVING sum(l.quantity) > z.capacity
         LIMIT 1000"
    ))
    .bind(event)
    .fetch_all(pool)
    .await?;
    Ok(finding(
        Invariant::OneOwnerPerSeat,
        checked as u64,
        offenders,
        "every seat has at most one live order, the one that names it; no zone over capacity",
        "a seat has two owners, or the seat rows disagree with the orders",
    ))
}
