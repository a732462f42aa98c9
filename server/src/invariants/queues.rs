//! The saga's flow: nothing stuck (holds, stock returns, the outbox), and
//! every published message proved processed by its consumer.

use sqlx::PgPool;

use super::messages::{about_event, with_consumers, CONSUMER_OF_TOPIC};
use crate::saga::broker::Topology;
use flashtix_model::report::{finding, Finding, Invariant, Verdict, EXAMPLES};

/// How long past its hold a PENDING order may stay before it counts as stuck:
/// the sweeper runs every second or so.
pub const EXPIRY_GRACE_SECONDS: i64 = 30;

/// Where the sale's queues are, for the queue invariant; `Err` says why they
/// could not be reached (the finding is then UNKNOWN).
pub type Queues<'a> = Result<(&'a lapin::Connection, &'a Topology), String>;

/// 5 (the part without the saga's consumers). No PENDING order past its hold
/// plus a grace period, and no stock return or outbox message left waiting that
/// long.
pub(super) async fn nothing_stuck(pool: &PgPool, event: Option<i64>) -> anyhow::Result<Finding> {
    let checked = crate::orders::settled::pending(pool, event).await?;
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
        Invariant::NothingStuck,
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
/// be asked, or that lacks a queue of a sale that published messages (not the
/// sale's broker, or one that lost its queues), makes the finding UNKNOWN,
/// never PASS: "no dead letters" there would be a count of nothing.
pub(super) async fn queues_drained(
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
                let read = crate::saga::broker::within(
                    "reading a queue's depth",
                    crate::saga::broker::depth(connection, &queue),
                );
                match read.await {
                    // Nothing published, nothing to deliver: a queue never
                    // declared has missed nothing.
                    Ok(None) if checked == 0 => {}
                    Ok(None) => unjudged.insert(
                        0,
                        format!(
                            "{queue} does not exist, though the sale published {checked} \
                             message(s): not the sale's broker, or its queues were lost"
                        ),
                    ),
                    Ok(Some(0)) => {}
                    Ok(Some(messages)) if queue.ends_with(".dead") => {
                        let peek = crate::saga::broker::within(
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
                    Ok(Some(messages)) => {
                        unjudged.push(format!("{queue}: {messages} message(s) queued"))
                    }
                    Err(error) => unjudged.insert(0, format!("could not read {queue}: {error:#}")),
                }
            }
        }
    }
    if dead.is_empty() && !unjudged.is_empty() {
        return Ok(Finding {
            invariant: Invariant::QueuesDrained,
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
        Invariant::QueuesDrained,
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
