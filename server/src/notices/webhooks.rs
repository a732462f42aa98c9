//! Organizers' webhooks: every order outcome of an event with a
//! `webhook_url` is POSTed there, signed (see [`super::signature`]).
//!
//! The deliveries wait in `webhook_deliveries`, queued by the notifications
//! worker once per notice. A pass claims the due ones (`FOR UPDATE SKIP
//! LOCKED`, and a lease: a claimed delivery is not due again for
//! [`LEASE`], so several dispatchers share the work and one that dies
//! only delays its deliveries) and POSTs them all at once, each try recorded
//! as it ends (only while the delivery is still undelivered and alive, so a
//! late answer never undoes another's record). Redirects are not followed: a
//! delivery is taken only by a 2xx from its own URL.
//! A 2xx answer delivers it. Anything else, or no answer within
//! [`POST_TIMEOUT`], is tried again after a pause that doubles from the
//! configured backoff up to [`BACKOFF_MAX`]; after the last try it is
//! dead-lettered (`dead_at`), which `/metrics` and `check` show.
//!
//! Every try carries the same body and the same delivery id (the notice's),
//! with a fresh timestamp and signature; a receiver deduplicates by the id.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::PgPool;

use super::mail::Notice;
use super::signature::sign;
use crate::runtime::metrics::Metrics;
use crate::runtime::notify::NoticeSettings;
use crate::runtime::stop::Stop;
use flashtix_model::notices::{notice_id, DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};

/// Deliveries one pass claims, and POSTs at once.
pub const POSTS_AT_ONCE: usize = 16;
/// How long a receiver has to answer.
pub const POST_TIMEOUT: Duration = Duration::from_secs(5);
/// A claimed delivery is not due again for this long: twice what its POST
/// may take (all of a pass's are in flight at once), and well within the
/// grace `check` gives a notice, so a dispatcher that dies only delays it.
pub const LEASE: Duration = Duration::from_secs(10);
/// The longest pause between two tries.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// The pause after a pass that found nothing due.
const IDLE: Duration = Duration::from_millis(200);

/// The JSON a delivery carries.
pub fn body(notice: &Notice) -> String {
    serde_json::json!({
        "id": notice_id(notice.order_id, notice.ending),
        "type": format!("order.{}", notice.ending.word()),
        "ended_at": notice.settled_at,
        "order": {
            "id": notice.order_id,
            "event_id": notice.event_id,
            "buyer": notice.buyer,
            "quantity": notice.quantity,
            "amount_cents": notice.amount_cents,
            "seats": notice.seats,
        },
    })
    .to_string()
}

/// A delivery claimed for a try.
struct Due {
    id: String,
    url: String,
    body: String,
    /// Tries before this one.
    attempts: i32,
}

/// Delivers until a stop is requested. Without a secret nothing is sent
/// (an unsigned delivery would be one no receiver can trust).
pub async fn run(pool: PgPool, settings: NoticeSettings, metrics: Arc<Metrics>, mut stop: Stop) {
    let Some(secret) = settings.webhook_secret.clone() else {
        tracing::warn!(
            "no webhook secret (--webhook-secret-file): organizers' webhook deliveries wait unsent"
        );
        return;
    };
    let client = reqwest::Client::builder()
        .timeout(POST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build();
    let client = match client {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "no HTTP client for webhooks");
            return;
        }
    };
    let mut failing = false;
    while !stop.requested() {
        match pass(&pool, &client, &secret, &settings, &metrics).await {
            Ok(claimed) => {
                if std::mem::take(&mut failing) {
                    tracing::info!("webhook deliveries flow again");
                }
                if claimed < POSTS_AT_ONCE && !stop.pause(IDLE).await {
                    return;
                }
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "webhook pass failed; will keep trying"
                    );
                    failing = true;
                }
                if !stop.pause(IDLE * 5).await {
                    return;
                }
            }
        }
    }
}

/// Claims the due deliveries and tries each once. Returns how many it
/// claimed.
async fn pass(
    pool: &PgPool,
    client: &reqwest::Client,
    secret: &[u8],
    settings: &NoticeSettings,
    metrics: &Metrics,
) -> sqlx::Result<usize> {
    let due: Vec<(String, String, String, i32)> = sqlx::query_as(
        "UPDATE webhook_deliveries SET next_attempt_at = now() + make_interval(secs => $2)
         WHERE id IN (
             SELECT id FROM webhook_deliveries
             WHERE delivered_at IS NULL AND dead_at IS NULL AND next_attempt_at <= now()
             ORDER BY next_attempt_at LIMIT $1
             FOR UPDATE SKIP LOCKED)
         RETURNING id, url, body, attempts",
    )
    .bind(POSTS_AT_ONCE as i64)
    .bind(LEASE.as_secs_f64())
    .fetch_all(pool)
    .await?;
    let claimed = due.len();
    let tries = due.into_iter().map(|(id, url, body, attempts)| async move {
        let due = Due {
            id,
            url,
            body,
            attempts,
        };
        let tried = post(client, secret, &due).await;
        let result: sqlx::Result<&'static str> = record(pool, settings, &due, tried).await;
        result.map(|result| metrics.notice("webhook", result))
    });
    for recorded in futures_util::future::join_all(tries).await {
        recorded?;
    }
    Ok(claimed)
}

/// One try: POSTs the body, signed now.
async fn post(client: &reqwest::Client, secret: &[u8], due: &Due) -> Result<(), String> {
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let answer = client
        .post(&due.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(DELIVERY_HEADER, &due.id)
        .header(TIMESTAMP_HEADER, timestamp.to_string())
        .header(
            SIGNATURE_HEADER,
            sign(secret, timestamp, due.body.as_bytes()),
        )
        .body(due.body.clone())
        .send()
        .await;
    match answer {
        Ok(answer) if answer.status().is_success() => Ok(()),
        Ok(answer) => Err(format!("answered {}", answer.status())),
        Err(error) => Err(format!("{error}")),
    }
}

/// Records a try: delivered, to be tried again after its pause, or dead.
/// Returns its label on the notices metric.
async fn record(
    pool: &PgPool,
    settings: &NoticeSettings,
    due: &Due,
    tried: Result<(), String>,
) -> sqlx::Result<&'static str> {
    let attempts = due.attempts + 1;
    let (sql, result, error) = match tried {
        Ok(()) => (
            "UPDATE webhook_deliveries SET attempts = $2, delivered_at = now()
             WHERE id = $1 AND delivered_at IS NULL AND dead_at IS NULL",
            "sent",
            None,
        ),
        Err(error) if attempts as u32 >= settings.webhook_attempts => (
            "UPDATE webhook_deliveries SET attempts = $2, dead_at = now(), last_error = $3
             WHERE id = $1 AND delivered_at IS NULL AND dead_at IS NULL",
            "dead",
            Some(error),
        ),
        Err(error) => (
            "UPDATE webhook_deliveries SET attempts = $2, last_error = $3,
                    next_attempt_at = now() + make_interval(secs => $4)
             WHERE id = $1 AND delivered_at IS NULL AND dead_at IS NULL",
            "failed",
            Some(error),
        ),
    };
    let pause = backoff(settings.webhook_backoff, attempts as u32);
    sqlx::query(sql)
        .bind(&due.id)
        .bind(attempts)
        .bind(error)
        .bind(pause.as_secs_f64())
        .execute(pool)
        .await?;
    Ok(result)
}

/// The pause after the `attempts`th failed try: the first backoff, doubled
/// after each, at most [`BACKOFF_MAX`].
fn backoff(first: Duration, attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(16);
    (first * 2u32.pow(doublings)).min(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_doubles_after_each_failure_up_to_its_cap() {
        let first = Duration::from_millis(500);
        let pauses: Vec<u64> = (1..=8)
            .map(|n| backoff(first, n).as_millis() as u64)
            .collect();
        assert_eq!(pauses, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]);
        assert_eq!(backoff(first, 1000), BACKOFF_MAX);
    }
}
