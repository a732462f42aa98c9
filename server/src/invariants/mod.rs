//! The invariants of a sale (`docs/INVARIANTS.md`), defined once: `flashtix check` prints
//! them and the tests assert them.
//!
//! Each check reads Postgres (and Redis for "Redis agrees") and says PASS, FAIL
//! or UNKNOWN with counts and the first offending ids. FAIL beats UNKNOWN beats PASS.
//! Those judged against a client's history live in [`ledger`].

use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::broker::Topology;
use crate::consumer::Handler;
use crate::gate::Gate;
use crate::history::Attempt;
use crate::messages::OUTBOX_ENTRIES;
use crate::payments::PaymentWorker;
use crate::settlement::OrderWorker;

mod ledger;

pub use ledger::no_lie_to_client;
use ledger::{no_lost_order, seat_taken_was_true};

/// How many offending ids a finding names.
const EXAMPLES: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    Pass,
    Unknown,
    Fail,
}

impl Verdict {
    /// As reports print it: `PASS`, `UNKNOWN`, `FAIL`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pass => "PASS",
            Self::Unknown => "UNKNOWN",
            Self::Fail => "FAIL",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Finding {
    pub invariant: String,
    pub verdict: Verdict,
    /// Things looked at (events, orders, users).
    pub checked: u64,
    /// Things that broke the invariant (or could not be judged).
    pub offending: u64,
    pub detail: String,
    /// The first offenders, each with what is wrong with it.
    pub examples: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub verdict: Verdict,
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn finding(&self, invariant: &str) -> Option<&Finding> {
        self.findings.iter().find(|f| f.invariant == invariant)
    }

    /// Adds a finding; the verdict is the worst of all.
    pub fn add(&mut self, finding: Finding) {
        self.verdict = self.verdict.max(finding.verdict);
        self.findings.push(finding);
    }
}

pub const NO_OVERSELL: &str = "no_oversell";
pub const NO_DUPLICATE_ORDER: &str = "no_duplicate_order";
pub const NO_DOUBLE_CHARGE: &str = "no_double_charge";
pub const NO_LOST_ORDER: &str = "no_lost_order";
pub const NO_LIE_TO_CLIENT: &str = "no_lie_to_client";
pub const SEAT_TAKEN_WAS_TRUE: &str = "seat_taken_was_true";
pub const PER_USER_LIMIT: &str = "per_user_limit";
pub const ONE_OWNER_PER_SEAT: &str = "one_owner_per_seat";
pub const REDIS_AGREES: &str = "redis_agrees";
pub const NOTHING_STUCK: &str = "nothing_stuck";
pub const QUEUES_DRAINED: &str = "queues_drained";
/// Not an invariant of the sale but of a run: every order reached an end
/// within the wait a storm gives it (UNKNOWN otherwise).
pub const SETTLED: &str = "settled";

/// How long past its hold a PENDING order may stay before it counts as stuck:
/// the sweeper runs every second or so.
pub const EXPIRY_GRACE_SECONDS: i64 = 30;

/// How far apart the storm's clock and the database's may be, for
/// `seat_taken_was_true`.
pub const CLOCK_SLACK_MS: i64 = 100;

/// SQL: whether the outbox message `m` names an order of event `$1` (every
/// message is a batch of entries, one per order).
fn about_event() -> String {
    format!(
        "EXISTS (SELECT 1 FROM jsonb_array_elements({OUTBOX_ENTRIES}) AS e(entry)
                 JOIN orders o ON o.id = (e.entry->>'order_id')::uuid
                 WHERE o.event_id = $1)"
    )
}

/// SQL naming the consumer of the outbox message `m` (by its topic), with
/// [`with_consumers`] binding `$2` to `$5`.
const CONSUMER_OF_TOPIC: &str = "CASE m.topic WHEN $2 THEN $3 WHEN $4 THEN $5 END";

/// Binds the topics and their consumers that [`CONSUMER_OF_TOPIC`] reads.
fn with_consumers<'q, O>(
    query: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
    query
        .bind(PaymentWorker::TOPIC)
        .bind(PaymentWorker::NAME)
        .bind(OrderWorker::TOPIC)
        .bind(OrderWorker::NAME)
}

/// Runs every invariant this build can prove, for one event or all.
/// Where the sale's queues are, for the queue invariant; `Err` says why they
/// could not be reached (the finding is then UNKNOWN).
pub type Queues<'a> = Result<(&'a lapin::Connection, &'a Topology), String>;

/// Runs every invariant, for one event or all; with a storm's history (see
/// [`crate::history`]) also "no lost order".
pub async fn check(
    pool: &PgPool,
    gate: &Gate,
    queues: Queues<'_>,
    history: Option<&[Attempt]>,
    event: Option<i64>,
) -> anyhow::Result<Report> {
    let mut findings = vec![
        no_oversell(pool, event).await?,
        no_duplicate_order(pool, event).await?,
        no_double_charge(pool, event).await?,
        per_user_limit(pool, event).await?,
        one_owner_per_seat(pool, event).await?,
        nothing_stuck(pool, event).await?,
        queues_drained(pool, queues, event).await?,
        redis_agrees(pool, gate, event).await?,
    ];
    if let Some(history) = history {
        findings.insert(3, no_lost_order(pool, history, event).await?);
        findings.insert(4, no_lie_to_client(history, event));
        findings.insert(5, seat_taken_was_true(pool, history, event).await?);
    }
    let verdict = findings
        .iter()
        .map(|f| f.verdict)
        .max()
        .unwrap_or(Verdict::Pass);
    Ok(Report { verdict, findings })
}

fn finding(
    invariant: &str,
    checked: u64,
    offenders: Vec<String>,
    ok: &str,
    broken: &str,
) -> Finding {
    let offending = offenders.len() as u64;
    Finding {
        invariant: invariant.into(),
        verdict: if offending == 0 {
            Verdict::Pass
        } else {
            Verdict::Fail
        },
        checked,
        offending,
        detail: if offending == 0 {
            ok.into()
        } else {
            broken.into()
        },
        examples: offenders.into_iter().take(EXAMPLES).collect(),
    }
}

/// Invariant 1: available ≥ 0 and available + pending + sold = total, per
/// event, where pending and sold are summed from the orders themselves (and must
/// also match the event's own counters).
async fn no_oversell(pool: &PgPool, event: Option<i64>) -> anyhow::Result<Finding> {
    let rows: Vec<(i64, i64, i64, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT e.id, e.total_tickets::int8, e.available_tickets::int8,
                e.pending_tickets::int8, e.sold_tickets::int8,
                COALESCE(sum(o.quantity) FILTER (WHERE o.status = 'PENDING'), 0)::int8,
                COALESCE(sum(o.quantity) FILTER (WHERE o.status = 'CONFIRMED'), 0)::int8
         FROM events e LEFT JOIN orders o ON o.event_id = e.id
         WHERE $1::int8 IS NULL OR e.id = $1
         GROUP BY e.id ORDER BY e.id",
    )
    .bind(event)
    .fetch_all(pool)
    .await?;
    let offenders = rows
        .iter()
        .filter_map(
            |&(id, total, available, counted_pending, counted_sold, pending, sold)| {
                let balanced = available >= 0 && available + pending + sold == total;
                let counters_agree = counted_pending == pending && counted_sold == sold;
                (!balanced || !counters_agree).then(|| {
                    format!(
                        "event {id}: available {available} + pending {pending} + sold {sold} = {} \
                     of {total}; the event counts pending {counted_pending}, sold {counted_sold}",
                        available + pending + sold
                    )
                })
            },
        )
        .collect();
    Ok(finding(
        NO_OVERSELL,
        rows.len() as u64,
        offenders,
        "every ticket is available, pending or sold, once",
        "stock and orders disagree",
    ))
}

/// Invariant 2: per settled order, money captured minus refunded equals the
/// amount if CONFIRMED and 0 otherwise; at most one capture; our payments agree with the
/// provider's ledger. (PENDING orders are still on their way.)
///
/// An order whose money is wrong while one of its messages is still unhandled
/// (a late capture whose refund has not run yet, a charge not yet recorded) is
/// in flight: UNKNOWN until the message is handled, FAIL only after.
async fn no_double_charge(pool: &PgPool, event: Option<i64>) -> anyhow::Result<Finding> {
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
            invariant: NO_DOUBLE_CHARGE.into(),
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
        NO_DOUBLE_CHARGE,
        checked as u64,
        wrong,
        "every settled order paid exactly its amount if confirmed, nothing otherwise",
        "money moved wrongly",
    ))
}

/// 3a. One order per (user, idempotency key). The unique constraint
/// `orders_one_per_idempotency_key` is what guarantees it, so the check first
/// proves the constraint is there (and valid): without it, the count below is
/// the only line left, and it is FAIL at once.
async fn no_duplicate_order(pool: &PgPool, event: Option<i64>) -> anyhow::Result<Finding> {
    let guarded: bool = sqlx::query_scalar(
        "SELECT EXISTS (
            SELECT 1 FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid
            WHERE t.oid = 'orders'::regclass AND c.contype = 'u' AND c.convalidated
              AND c.conname = 'orders_one_per_idempotency_key'
              AND (SELECT array_agg(a.attname::text ORDER BY a.attname)
                   FROM pg_attribute a
                   WHERE a.attrelid = t.oid AND a.attnum = ANY(c.conkey))
                  = ARRAY['idempotency_key', 'user_id'])",
    )
    .fetch_one(pool)
    .await?;
    let checked: i64 =
        sqlx::query_scalar("SELECT count(*) FROM orders WHERE $1::int8 IS NULL OR event_id = $1")
            .bind(event)
            .fetch_one(pool)
            .await?;
    let duplicates: Vec<(String, String, i64, String)> = sqlx::query_as(
        "SELECT user_id, idempotency_key, count(*), string_agg(id::text, ', ' ORDER BY id)
         FROM orders WHERE $1::int8 IS NULL OR event_id = $1
         GROUP BY user_id, idempotency_key HAVING count(*) > 1
         ORDER BY user_id, idempotency_key",
    )
    .bind(event)
    .fetch_all(pool)
    .await?;
    let mut offenders: Vec<String> = duplicates
        .into_iter()
        .map(|(user, key, count, ids)| format!("user {user:?} key {key:?}: {count} orders ({ids})"))
        .collect();
    if !guarded {
        offenders.insert(
            0,
            "the unique constraint orders_one_per_idempotency_key (user_id, idempotency_key) \
             is missing: nothing stops a second order for a key"
                .into(),
        );
    }
    Ok(finding(
        NO_DUPLICATE_ORDER,
        checked as u64,
        offenders,
        "one order per (user, idempotency key), guarded by a unique constraint",
        "an idempotency key can buy, or bought, more than once",
    ))
}

/// 3b. No user holds more live tickets than the event's per-user limit.
async fn per_user_limit(pool: &PgPool, event: Option<i64>) -> anyhow::Result<Finding> {
    let checked: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT (event_id, user_id)) FROM orders WHERE $1::int8 IS NULL OR event_id = $1",
    )
    .bind(event)
    .fetch_one(pool)
    .await?;
    let over: Vec<(i64, String, i64, i32, String)> = sqlx::query_as(
        "SELECT o.event_id, o.user_id, sum(o.quantity)::int8, e.max_per_user,
                string_agg(o.id::text, ', ' ORDER BY o.id)
         FROM orders o JOIN events e ON e.id = o.event_id
         WHERE o.status IN ('PENDING', 'CONFIRMED') AND ($1::int8 IS NULL OR o.event_id = $1)
         GROUP BY o.event_id, o.user_id, e.max_per_user
         HAVING sum(o.quantity) > e.max_per_user
         ORDER BY o.event_id, o.user_id",
    )
    .bind(event)
    .fetch_all(pool)
    .await?;
    let offenders = over
        .into_iter()
        .map(|(event_id, user, held, max, ids)| {
            format!("event {event_id} user {user:?}: holds {held} > limit {max} (orders {ids})")
        })
        .collect();
    Ok(finding(
        PER_USER_LIMIT,
        checked as u64,
        offenders,
        "no buyer above the event's per-user limit",
        "a buyer holds more than the limit",
    ))
}

/// Seating: no seat named by two live (PENDING or CONFIRMED) orders; each
/// live order's seats held by it and by nothing else in the seat rows, each
/// held seat's owner live and naming it; an order's quantity its number of
/// seats; no general-admission zone holding more than its capacity.
async fn one_owner_per_seat(pool: &PgPool, event: Option<i64>) -> anyhow::Result<Finding> {
    let checked: i64 =
        sqlx::query_scalar("SELECT count(*) FROM seats WHERE $1::int8 IS NULL OR event_id = $1")
            .bind(event)
            .fetch_one(pool)
            .await?;
    let offenders: Vec<String> = sqlx::query_scalar(
        "WITH live AS (
            SELECT o.id, o.event_id, o.quantity, o.seats, o.zone FROM orders o
            WHERE o.status IN ('PENDING', 'CONFIRMED') AND ($1::int8 IS NULL OR o.event_id = $1)
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
           AND (o.id IS NULL OR s.blocked OR o.status NOT IN ('PENDING', 'CONFIRMED')
                OR NOT s.seat_id = ANY(coalesce(o.seats, '{}')))
         UNION ALL
         SELECT format('order %s: quantity %s for %s seats', id, quantity, cardinality(seats))
         FROM live WHERE seats IS NOT NULL AND cardinality(seats) <> quantity
         UNION ALL
         SELECT format('event %s zone %s: %s live tickets over its capacity of %s',
                       z.event_id, z.name, sum(l.quantity), z.capacity)
         FROM live l JOIN zones z ON z.event_id = l.event_id AND z.name = l.zone
         GROUP BY z.event_id, z.name, z.capacity HAVING sum(l.quantity) > z.capacity
         LIMIT 1000",
    )
    .bind(event)
    .fetch_all(pool)
    .await?;
    Ok(finding(
        ONE_OWNER_PER_SEAT,
        checked as u64,
        offenders,
        "every seat has at most one live order, the one that names it; no zone over capacity",
        "a seat has two owners, or the seat rows disagree with the orders",
    ))
}

/// 5 (the part without the saga's consumers). No PENDING order past its hold
/// plus a grace period, and no stock return or outbox message left waiting that
/// long.
async fn nothing_stuck(pool: &PgPool, event: Option<i64>) -> anyhow::Result<Finding> {
    let checked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM orders
         WHERE status = 'PENDING' AND ($1::int8 IS NULL OR event_id = $1)",
    )
    .bind(event)
    .fetch_one(pool)
    .await?;
    let about_event = about_event();
    let stuck: Vec<String> = sqlx::query_scalar(&format!(
        "SELECT format('order %s: PENDING %s s past its hold', id,
                       floor(extract(epoch FROM now() - expires_at)))
         FROM orders
         WHERE status = 'PENDING' AND expires_at < now() - make_interval(secs => $2)
           AND ($1::int8 IS NULL OR event_id = $1)
         UNION ALL
         SELECT format('order %s: its %s tickets not given back to Redis after %s s',
                       order_id, quantity, floor(extract(epoch FROM now() - created_at)))
         FROM stock_returns
         WHERE created_at < now() - make_interval(secs => $2)
           AND ($1::int8 IS NULL OR event_id = $1)
         UNION ALL
         SELECT format('outbox message %s (%s): unpublished after %s s', m.message_id, m.topic,
                       floor(extract(epoch FROM now() - m.created_at)))
         FROM outbox m
         WHERE m.published_at IS NULL AND m.created_at < now() - make_interval(secs => $2)
           AND ($1::int8 IS NULL OR {about_event})"
    ))
    .bind(event)
    .bind(EXPIRY_GRACE_SECONDS as f64)
    .fetch_all(pool)
    .await?;
    Ok(finding(
        NOTHING_STUCK,
        checked as u64,
        stuck,
        "no order held past its hold, no ticket or message waiting",
        "orders, tickets or messages stuck (are a sweeper and a relay running?)",
    ))
}

/// 5 (the queues). PASS needs proof from the database that every message the
/// relay published was processed by its consumer (`outbox` against
/// `processed_messages`): the broker's counts see only ready messages, not
/// those delivered and held unacknowledged. A message not processed yet is
/// UNKNOWN, however old: a worker may be holding it through an outage (which
/// dead-letters nothing, by design), and the broker cannot tell held from
/// lost. Dead letters are FAIL, with the count per queue. A broker that cannot
/// be asked makes the finding UNKNOWN, never PASS.
async fn queues_drained(
    pool: &PgPool,
    queues: Queues<'_>,
    event: Option<i64>,
) -> anyhow::Result<Finding> {
    let (checked, mut unjudged) = unprocessed_messages(pool, event).await?;
    let mut dead: Vec<String> = Vec::new();
    match queues {
        Err(why) => unjudged.insert(0, format!("RabbitMQ not reachable: {why}")),
        Ok((connection, topology)) => {
            for queue in topology.queues() {
                let read =
                    crate::broker::within("reading a queue's depth", depth(connection, &queue));
                match read.await {
                    Ok(0) => {}
                    Ok(messages) if queue.ends_with(".dead") => {
                        let peek = crate::broker::within(
                            "reading dead letters",
                            peek(connection, &queue, EXAMPLES),
                        );
                        let which = match peek.await {
                            Ok(letters) if !letters.is_empty() => {
                                format!(": {}", letters.join(", "))
                            }
                            _ => String::new(),
                        };
                        dead.insert(0, format!("{queue}: {messages} dead letter(s){which}"))
                    }
                    Ok(messages) => unjudged.push(format!("{queue}: {messages} message(s) queued")),
                    Err(error) => unjudged.insert(0, format!("could not read {queue}: {error:#}")),
                }
            }
        }
    }
    if dead.is_empty() && !unjudged.is_empty() {
        return Ok(Finding {
            invariant: QUEUES_DRAINED.into(),
            verdict: Verdict::Unknown,
            checked,
            offending: unjudged.len() as u64,
            detail: "messages not processed yet (in flight, held for retry, or lost), \
                     or the broker could not be asked"
                .into(),
            examples: unjudged.into_iter().take(EXAMPLES).collect(),
        });
    }
    Ok(finding(
        QUEUES_DRAINED,
        checked,
        dead,
        "every published message processed by its consumer, nothing dead-lettered",
        "messages were dead-lettered (see the .dead queues)",
    ))
}

/// Published messages (of the event) their consumer has not processed, oldest
/// first; and how many published messages there are.
async fn unprocessed_messages(
    pool: &PgPool,
    event: Option<i64>,
) -> anyhow::Result<(u64, Vec<String>)> {
    let about_event = about_event();
    let sql = format!(
        "WITH published AS (
            SELECT m.message_id, m.topic, m.published_at
            FROM outbox m
            WHERE m.published_at IS NOT NULL AND ($1::int8 IS NULL OR {about_event})
         )
         SELECT format('message %s (%s): published %s s ago, not processed by %s',
                       m.message_id, m.topic, floor(extract(epoch FROM now() - m.published_at)),
                       {CONSUMER_OF_TOPIC}),
                (SELECT count(*) FROM published)
         FROM published m
         WHERE NOT EXISTS (
             SELECT 1 FROM processed_messages p
             WHERE p.message_id = m.message_id
               AND p.consumer = {CONSUMER_OF_TOPIC})
         ORDER BY m.published_at"
    );
    let messages = sqlx::query_as(&sql).bind(event);
    let messages: Vec<(String, i64)> = with_consumers(messages).fetch_all(pool).await?;
    let checked = match messages.first() {
        Some((_, published)) => *published as u64,
        None => {
            sqlx::query_scalar::<_, i64>(&format!(
                "SELECT count(*) FROM outbox m
                     WHERE m.published_at IS NOT NULL AND ($1::int8 IS NULL OR {about_event})"
            ))
            .bind(event)
            .fetch_one(pool)
            .await? as u64
        }
    };
    Ok((
        checked,
        messages.into_iter().map(|(offence, _)| offence).collect(),
    ))
}

/// Up to `limit` messages of `queue`, named by their order and message ids,
/// left in the queue: they are taken unacknowledged and go back when the
/// channel closes.
async fn peek(
    connection: &lapin::Connection,
    queue: &str,
    limit: usize,
) -> lapin::Result<Vec<String>> {
    let channel = connection.create_channel().await?;
    let mut letters = Vec::new();
    while letters.len() < limit {
        let options = lapin::options::BasicGetOptions { no_ack: false };
        let Some(message) = channel.basic_get(queue.into(), options).await? else {
            break;
        };
        let delivery = &message.delivery;
        let orders: Vec<String> = serde_json::from_slice::<serde_json::Value>(&delivery.data)
            .ok()
            .and_then(|body| {
                let entries = body["orders"].as_array()?.iter();
                entries
                    .map(|entry| entry["order_id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let order = match orders.as_slice() {
            [] => "?".to_owned(),
            [one] => one.clone(),
            [first, rest @ ..] => format!("{first} and {} more", rest.len()),
        };
        let id = delivery
            .properties
            .message_id()
            .as_ref()
            .map_or("?".into(), |id| id.to_string());
        letters.push(format!("order {order} (message {id})"));
    }
    channel.close(200, "peeked".into()).await?;
    Ok(letters)
}

/// Messages ready in a queue; 0 for a queue never declared (nothing was
/// published to it). Any other answer of the broker's is an error.
async fn depth(connection: &lapin::Connection, queue: &str) -> lapin::Result<u32> {
    use lapin::options::QueueDeclareOptions;
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
    // A passive declare of a missing queue closes the channel: one per queue.
    let channel = connection.create_channel().await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    match channel
        .queue_declare(queue.into(), passive, lapin::types::FieldTable::default())
        .await
    {
        Ok(declared) => Ok(declared.message_count()),
        Err(error) => match error.kind() {
            lapin::ErrorKind::ProtocolError(amqp)
                if *amqp.kind() == AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND) =>
            {
                Ok(0)
            }
            _ => Err(error),
        },
    }
}

/// 6. Redis agrees with Postgres once quiet: stock, each buyer's tickets held,
///    each idempotency entry.
async fn redis_agrees(pool: &PgPool, gate: &Gate, event: Option<i64>) -> anyhow::Result<Finding> {
    let events = crate::events::gated_ids(pool).await?;
    let events: Vec<i64> = events
        .into_iter()
        .filter(|id| event.is_none_or(|only| only == *id))
        .collect();
    let mut drifted = Vec::new();
    let mut unjudged = Vec::new();
    for &id in &events {
        // Redis, then Postgres, then Redis again: if Redis moved meanwhile (an
        // order, a confirmation, a return), the two reads are not comparable.
        // Postgres is read in one snapshot: stock, buyers, keys and returns.
        let before = gate.observe(id).await?;
        let snapshot = crate::reconcile::snapshot(pool, id)
            .await?
            .unwrap_or_default();
        let (available, returns) = (snapshot.available, snapshot.returned.len());
        let ledger = gate.ledger(id).await?;
        let after = gate.observe(id).await?;
        let quiet = before.is_quiet()
            && returns == 0
            && before.seq == after.seq
            && ledger.seq == before.seq;
        match before.stock {
            None => unjudged.push(format!(
                "event {id}: Redis has no stock key (seeded on next order)"
            )),
            Some(_) if !quiet => unjudged.push(format!(
                "event {id}: not quiet ({} holds in flight, {} returns pending in Redis, {returns} in Postgres)",
                before.holds, before.returning
            )),
            Some(stock) => {
                if stock != available {
                    drifted.push(format!(
                        "event {id}: Redis stock {stock}, Postgres available {available} (drift {:+})",
                        stock - available
                    ));
                }
                drifted.extend(crate::reconcile::ledger_drift(id, &snapshot, &ledger));
            }
        }
    }
    if drifted.is_empty() && !unjudged.is_empty() {
        return Ok(Finding {
            invariant: REDIS_AGREES.into(),
            verdict: Verdict::Unknown,
            checked: events.len() as u64,
            offending: unjudged.len() as u64,
            detail: "Redis cannot be compared yet".into(),
            examples: unjudged.into_iter().take(EXAMPLES).collect(),
        });
    }
    Ok(finding(
        REDIS_AGREES,
        events.len() as u64,
        drifted,
        "Redis stock, buyers' ticket counts and idempotency entries equal Postgres's",
        "Redis drifted from Postgres (repair with `flashtix check --repair`)",
    ))
}
